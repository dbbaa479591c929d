//! `/v1/projects/:id/jobs`: scheduled jobs, each firing a one-off run, and run-now.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    jobs::{Concurrency, JobFields, JobPatch, JobState, Jobs, Skip},
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
    runs::{RunCreated, RunView},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(run_now))
}

/// A job, its schedule's next firing, its newest run and its latest skipped firing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    #[schema(example = "job_3kT9")]
    pub id: String,
    #[schema(example = "digest")]
    pub name: String,
    /// As accepted: five cron fields, `daily at HH:MM`, `hourly` or `every N(m|h)`.
    #[schema(example = "0 3 * * *")]
    pub schedule: String,
    /// The IANA zone the schedule reads; null is UTC.
    #[schema(example = "Europe/Paris")]
    pub time_zone: Option<String>,
    #[schema(example = json!(["python", "manage.py", "send_digest"]))]
    pub command: Vec<String>,
    #[schema(example = 600)]
    pub timeout_secs: u64,
    pub concurrency: Concurrency,
    /// The size tier of its runs; null is the project's size.
    #[schema(example = "nano")]
    pub size: Option<String>,
    pub enabled: bool,
    /// `api`, or `cantila.toml` for a job the repository declares (changed by deploying).
    #[schema(value_type = String, example = "api")]
    pub source: crate::jobs::JobSource,
    /// When it fires next (UTC); null while disabled.
    pub next_run_at: Option<String>,
    /// The scheduled time of the latest firing that started a run.
    pub last_fired_at: Option<String>,
    /// The newest run the job started (kept as long as the project's run history keeps it).
    pub last_run: Option<RunView>,
    /// The latest firing that started no run, and why (overlap under `forbid`, missed while
    /// the daemon was down, no release to run); each skip is also in the audit log
    /// (`job.skip`).
    pub last_skipped: Option<SkipView>,
    /// How many firings were skipped since the job was made.
    pub skipped_count: u64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkipView {
    /// The firing's scheduled time.
    pub scheduled_at: String,
    /// When the scheduler recorded it.
    pub recorded_at: String,
    #[schema(example = "run run_8fK2 was still running, and the job's concurrency is forbid")]
    pub reason: String,
}

impl From<Skip> for SkipView {
    fn from(skip: Skip) -> Self {
        Self {
            scheduled_at: skip.scheduled_at,
            recorded_at: skip.recorded_at,
            reason: skip.reason,
        }
    }
}

impl From<JobState> for JobView {
    fn from(state: JobState) -> Self {
        let JobState { job, last_run } = state;
        let fields = job.spec.to_fields();
        Self {
            id: job.id,
            name: fields.name,
            schedule: fields.schedule,
            time_zone: fields.time_zone,
            command: fields.command,
            timeout_secs: job.spec.timeout_secs,
            concurrency: job.spec.concurrency,
            size: fields.size,
            enabled: job.spec.enabled,
            source: job.source,
            next_run_at: job.next_fire_at,
            last_fired_at: job.last_fire_at,
            last_run: last_run.map(RunView::from),
            last_skipped: job.last_skip.map(SkipView::from),
            skipped_count: job.skipped_count,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// `PATCH /v1/projects/:id/jobs/:name`: each field present replaces the job's; `timeZone`
/// and `size` may be null (UTC, the project's size). The name cannot change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateJob {
    #[schema(example = "every 15m")]
    pub schedule: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "Europe/Paris")]
    pub time_zone: Option<Option<String>>,
    #[schema(example = json!(["python", "manage.py", "send_digest"]), min_items = 1, max_items = 1024)]
    pub command: Option<Vec<String>>,
    #[schema(minimum = 1, maximum = 86400, example = 600)]
    pub timeout_secs: Option<u64>,
    pub concurrency: Option<Concurrency>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "nano")]
    pub size: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// A field that is present (even as null) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// List the project's scheduled jobs, each with its newest run.
#[utoipa::path(get, path = "/v1/projects/{id}/jobs", tag = "jobs",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = JobList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(jobs): State<Jobs>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobList>> {
    let listed = jobs.list(&auth.actor, id).await?;
    Ok(Json(JobList {
        jobs: listed.into_iter().map(JobView::from).collect(),
    }))
}

/// Declare a scheduled job. Each firing is a one-off run of the project's serving release
/// (trigger `job`); times are UTC unless `timeZone` names one. A bad schedule, time zone,
/// command or size is a 422 naming the field and what it accepts.
#[utoipa::path(post, path = "/v1/projects/{id}/jobs", tag = "jobs",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = JobFields,
    responses((status = 201, body = JobView), (status = 409, description = "the name is taken, or the project has 100 jobs", body = super::error::ErrorBody), (status = 422, description = "a field is invalid", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(jobs): State<Jobs>,
    Path(id): Path<String>,
    Json(request): Json<JobFields>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let created = jobs.create(&auth.actor, id, request).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// One job, with its newest run and latest skipped firing.
#[utoipa::path(get, path = "/v1/projects/{id}/jobs/{name}", tag = "jobs",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "job name")),
    responses((status = 200, body = JobView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(jobs): State<Jobs>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(jobs.get(&auth.actor, id, &name).await?.into()))
}

/// Change a job made through the API (a `cantila.toml` job answers 409: change the file
/// and deploy). A new schedule, time zone or re-enabling counts from now.
#[utoipa::path(patch, path = "/v1/projects/{id}/jobs/{name}", tag = "jobs",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "job name")),
    request_body = UpdateJob,
    responses((status = 200, body = JobView), (status = 409, description = "the job is declared in cantila.toml", body = super::error::ErrorBody), (status = 422, description = "a field is invalid", body = super::error::ErrorBody)))]
async fn update(
    auth: Auth<DeployScope>,
    State(jobs): State<Jobs>,
    Path((id, name)): Path<(String, String)>,
    Json(request): Json<UpdateJob>,
) -> ApiResult<Json<JobView>> {
    let patch = JobPatch {
        schedule: request.schedule,
        time_zone: request.time_zone,
        command: request.command,
        timeout_secs: request.timeout_secs,
        concurrency: request.concurrency,
        size: request.size,
        enabled: request.enabled,
    };
    Ok(Json(
        jobs.update(&auth.actor, id, &name, patch).await?.into(),
    ))
}

/// Delete a job made through the API; its runs stay in the project's run history.
#[utoipa::path(delete, path = "/v1/projects/{id}/jobs/{name}", tag = "jobs",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "job name")),
    responses((status = 204, description = "deleted"), (status = 409, description = "the job is declared in cantila.toml", body = super::error::ErrorBody)))]
async fn delete(
    auth: Auth<DeployScope>,
    State(jobs): State<Jobs>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    jobs.delete(&auth.actor, id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run the job now, whatever its schedule or `enabled`, and beside any run of it still
/// going: a run asked for by name is always started. Answers the run like
/// `POST /v1/projects/{id}/runs`; follow it with `GET /v1/runs/{id}/events`.
#[utoipa::path(post, path = "/v1/projects/{id}/jobs/{name}/run", tag = "jobs",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "job name")),
    responses((status = 201, body = RunCreated), (status = 409, description = "the project has no release to run", body = super::error::ErrorBody)))]
async fn run_now(
    auth: Auth<DeployScope>,
    State(jobs): State<Jobs>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<RunCreated>)> {
    let run = jobs.run_now(&auth.actor, id, &name).await?;
    Ok((
        StatusCode::CREATED,
        Json(RunCreated {
            run_id: run.id.clone(),
            run: run.into(),
        }),
    ))
}
