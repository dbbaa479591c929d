//! One-off runs: start one in a project, list a project's runs, fetch one, follow its
//! output (SSE, resumable with `Last-Event-ID`), cancel it.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures_util::{stream, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    runs::{Run, RunCommand, RunLine, RunRequest, RunTrigger, DEFAULT_TIMEOUT_SECS},
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    deploys::resume_after,
    error::{ApiResult, Json, Path, Query},
    projects::ListQuery,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(events))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRun {
    /// The program and its arguments, handed to the container as they are (no shell:
    /// use `["sh", "-c", "..."]` for one). Not empty; at most 1024 arguments.
    #[schema(example = json!(["python", "manage.py", "migrate"]), min_items = 1, max_items = 1024)]
    pub command: Vec<String>,
    /// A size tier of the server's `[scale.sizes]`; default the project's size.
    #[schema(example = "small")]
    pub size: Option<String>,
    /// Seconds before the run is stopped (SIGTERM, then SIGKILL) and ends `timed_out`.
    #[schema(minimum = 1, maximum = 86400, default = 3600)] // runs::MAX_TIMEOUT_SECS
    pub timeout_secs: Option<u64>,
    /// Extra environment for this run only, over the release's; never stored or logged.
    #[schema(example = json!({"DEBUG": "1"}))]
    pub env: Option<BTreeMap<String, String>>,
    /// A deploy of this project that was running (its image and env snapshot); default
    /// the serving one.
    pub deploy_id: Option<String>,
    /// Created with a TTY and open stdin, `pending` until a terminal attaches
    /// (`GET /v1/runs/{id}/attach`), `canceled` if none does within 60 s.
    #[serde(default)]
    pub interactive: bool,
}

/// One run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    #[schema(example = "run_8fK2")]
    pub id: String,
    pub project_id: String,
    /// The deploy whose image and env the run uses.
    pub deploy_id: String,
    pub command: Vec<String>,
    /// pending, running, succeeded, failed, canceled, timed_out or interrupted.
    #[schema(example = "running")]
    pub status: String,
    pub exit_code: Option<i64>,
    /// Why a run failed without an exit code (it could not start) or what stopped it.
    pub error: Option<String>,
    /// manual or job.
    pub trigger: String,
    /// The job whose firing this run is.
    pub job_id: Option<String>,
    /// Who started it, as the audit log names actors: a token id, `admin-cli`, a job.
    pub started_by: String,
    pub size: String,
    pub timeout_secs: u64,
    pub interactive: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        Self {
            id: run.id,
            project_id: run.project_id,
            deploy_id: run.deploy_id,
            status: run.status.as_str().to_owned(),
            exit_code: run.exit_code,
            error: run.error,
            trigger: run.trigger.as_str().to_owned(),
            job_id: run.trigger.job_id().map(str::to_owned),
            command: run.command.into_args(),
            started_by: run.started_by,
            size: run.size,
            timeout_secs: run.timeout_secs,
            interactive: run.interactive,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: run.duration_ms,
        }
    }
}

/// A started run: its id as `runId`, and the run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCreated {
    #[schema(example = "run_8fK2")]
    pub run_id: String,
    #[serde(flatten)]
    pub run: RunView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub runs: Vec<RunView>,
    pub next_cursor: Option<String>,
}

/// Start a one-off run of a command in a container of the serving release's image (or
/// `deployId`'s), with the project's env, database and volumes, on its network, never
/// routed. Answers at once with the run `running` (or `pending` when interactive; `failed`
/// with its error when the container could not start); follow its output with
/// `GET /v1/runs/{id}/events`. 409 when the project has no serving release or has
/// `runs.max_concurrent_per_project` runs going.
#[utoipa::path(post, path = "/v1/projects/{id}/runs", tag = "runs",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = CreateRun,
    responses((status = 201, body = RunCreated),
        (status = 409, description = "no serving release, or too many runs going", body = super::error::ErrorBody),
        (status = 422, description = "a field is invalid; the message names it", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(body): Json<CreateRun>,
) -> ApiResult<(StatusCode, Json<RunCreated>)> {
    // The range (1..=runs::MAX_TIMEOUT_SECS) is the service's to check.
    let request = RunRequest {
        command: RunCommand::parse("command", body.command)?,
        size: body.size,
        timeout: Duration::from_secs(body.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS)),
        env: body.env.unwrap_or_default(),
        deploy_id: body.deploy_id,
        trigger: RunTrigger::Manual,
        interactive: body.interactive,
    };
    let run = app
        .runs
        .start(&auth.actor.account_id, &auth.actor.label(), &id, request)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RunCreated {
            run_id: run.id.clone(),
            run: run.into(),
        }),
    ))
}

/// List the project's runs, newest first.
#[utoipa::path(get, path = "/v1/projects/{id}/runs", tag = "runs",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id"), ListQuery),
    responses((status = 200, body = RunList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let page = app
        .runs
        .list(&auth.actor.account_id, &id, query.page(&app)?)
        .await?;
    Ok(Json(RunList {
        runs: page.items.into_iter().map(RunView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Fetch one run: command, status, exit code, who started it, times.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = RunView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(
        app.runs.get(&auth.actor.account_id, &id).await?.into(),
    ))
}

/// Cancel a pending or running run: SIGTERM, then SIGKILL after the grace period
/// (`runs.stop_grace_secs`). Answers the run as it ended (`canceled`).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 409, description = "already over", body = super::error::ErrorBody)))]
async fn cancel(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = app
        .runs
        .cancel_by(&auth.actor.account_id, &auth.actor.label(), &id)
        .await?;
    Ok(Json(run.into()))
}

/// The run's output as Server-Sent Events: `output` events (`{stream, line, at}`, each
/// with its sequence number as `id`) from the start, or after `Last-Event-ID`, then live
/// until the run ends, then one `status` event with the run.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "run id")),
    responses((status = 200, description = "an SSE stream of the run's output", content_type = "text/event-stream")))]
async fn events(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = app.runs.get(&auth.actor.account_id, &id).await?;
    let after = resume_after(headers.get("last-event-id").map(|v| v.as_bytes()));
    Ok(sse(&app, run, after).into_response())
}

fn event_of(line: &RunLine) -> Event {
    Event::default()
        .id(line.seq.to_string())
        .event("output")
        .json_data(serde_json::json!({
            "stream": line.stream.as_str(),
            "line": line.line,
            "at": line.at,
        }))
        .unwrap_or_else(|_| Event::default().comment("unserializable line"))
}

/// Replay, live lines, then `status` with the run as it ended.
fn sse(app: &ApiState, run: Run, after: i64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let lines = ReceiverStream::new(app.runs.follow(&run.id, after));
    let runs = app.runs.clone();
    let events = lines
        .map(|line| Ok(event_of(&line)))
        .chain(stream::once(async move {
            let view = match runs.get(&run.account_id, &run.id).await {
                Ok(ended) => RunView::from(ended),
                Err(_) => RunView::from(run),
            };
            Ok(Event::default()
                .event("status")
                .json_data(view)
                .unwrap_or_default())
        }));
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(10))
            .text("heartbeat"),
    )
}
