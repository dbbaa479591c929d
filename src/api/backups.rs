//! `/v1/projects/:id/backups` and `/v1/backups/:id`: taking, listing, downloading and
//! restoring backups, and the project's backup schedule.

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    backup::{
        latest::{LatestRestore, LatestRun},
        remote::RemoteCopy,
        Backup, Schedule, Target,
    },
    error::Error,
    names::ServiceName,
};

use super::{
    auth::{AdminScope, Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, OptionalJson, Path, Query},
    projects::ListQuery,
    volumes::Confirm,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_schedule, set_schedule, delete_schedule))
        .routes(routes!(get))
        .routes(routes!(download))
        .routes(routes!(restore))
        .routes(routes!(restore_latest))
        .routes(routes!(restore_latest_progress))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    #[schema(example = "bak_9f2c")]
    pub id: String,
    pub project_id: String,
    /// `database`, `volume` or `service` (an add-on, dumped with its engine's tools).
    pub kind: String,
    /// The database's or the volume's name, or the add-on's service name.
    pub subject: String,
    /// `postgres` or `sqlite` for database backups; `redis`, `postgres` or `mariadb` for
    /// service backups.
    pub engine: Option<String>,
    /// `manual`, `scheduled`, `safety` (before a restore) or `final` (before a delete).
    pub trigger: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// When it was last restored.
    pub restored_at: Option<String>,
    /// Its copy in S3-compatible storage (`[backups.s3]`); null when none was asked for.
    pub remote: Option<RemoteView>,
}

/// The copy of a backup in S3-compatible storage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteView {
    /// `pending` (not yet tried, or interrupted), `uploaded` (and verified: size,
    /// SHA-256, ETag) or `failed` (retried on a timer; the local backup is unaffected).
    pub status: String,
    /// The object's key in the bucket.
    #[schema(example = "cantila/prj_a1b2/bak_9f2c.dump")]
    pub key: String,
    /// When the verified upload finished.
    pub uploaded_at: Option<String>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub attempts: u32,
    pub last_attempt_at: Option<String>,
}

impl From<RemoteCopy> for RemoteView {
    fn from(remote: RemoteCopy) -> Self {
        Self {
            status: remote.status.as_str().to_owned(),
            key: remote.key,
            uploaded_at: remote.uploaded_at,
            error: remote.error,
            attempts: remote.attempts,
            last_attempt_at: remote.attempted_at,
        }
    }
}

impl From<Backup> for BackupView {
    fn from(backup: Backup) -> Self {
        Self {
            id: backup.id,
            project_id: backup.project_id,
            kind: backup.kind.as_str().to_owned(),
            subject: backup.subject,
            engine: backup.engine,
            trigger: backup.trigger,
            status: backup.status.as_str().to_owned(),
            error: backup.error,
            size_bytes: backup.size_bytes,
            sha256: backup.sha256,
            started_at: backup.started_at,
            finished_at: backup.finished_at,
            restored_at: backup.restored_at,
            remote: backup.remote.map(RemoteView::from),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupList {
    pub backups: Vec<BackupView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// `database`, `volume` or `service`; omitted: the database, every volume and every
    /// add-on with data.
    pub kind: Option<String>,
    /// The volume's name, with `kind: volume`.
    pub volume: Option<String>,
    /// The add-on's service name, with `kind: service`.
    pub service: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupsStarted {
    /// The id of the (first) backup started.
    pub id: String,
    /// Every backup started, one per database or volume.
    pub backups: Vec<BackupView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreView {
    /// The backup restored.
    pub restored: BackupView,
    /// The backup of the data as it was just before the restore.
    pub safety_backup: BackupView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// `daily at HH:MM` (UTC) or a five-field cron expression; null: no schedule.
    pub schedule: Option<String>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    /// `project` (set through the API), `config` (the operator's default) or `none`.
    pub source: String,
    pub last_run_at: Option<String>,
    /// `completed` or `failed`.
    pub last_status: Option<String>,
    /// Why the last scheduled run failed.
    pub last_error: Option<String>,
}

impl From<Option<Schedule>> for ScheduleView {
    fn from(schedule: Option<Schedule>) -> Self {
        match schedule {
            Some(schedule) => Self {
                source: if schedule.explicit {
                    "project"
                } else {
                    "config"
                }
                .to_owned(),
                schedule: Some(schedule.schedule),
                keep_daily: Some(schedule.keep_daily),
                keep_weekly: Some(schedule.keep_weekly),
                last_run_at: schedule.last_run_at,
                last_status: schedule.last_status,
                last_error: schedule.last_error,
            },
            None => Self {
                schedule: None,
                keep_daily: None,
                keep_weekly: None,
                source: "none".to_owned(),
                last_run_at: None,
                last_status: None,
                last_error: None,
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetSchedule {
    #[schema(example = "daily at 03:00")]
    pub schedule: String,
    /// Keep the newest scheduled backup of each of this many days (default from config).
    #[schema(minimum = 0, maximum = 366)] // backup::MAX_KEEP_DAILY
    pub keep_daily: Option<u32>,
    /// Keep the newest scheduled backup of each of this many weeks (default from config).
    #[schema(minimum = 0, maximum = 520)] // backup::MAX_KEEP_WEEKLY
    pub keep_weekly: Option<u32>,
}

fn target_of(request: CreateBackup) -> Result<Option<Target>, Error> {
    match (request.kind.as_deref(), request.volume, request.service) {
        (None, None, None) => Ok(None),
        (Some("database"), None, None) => Ok(Some(Target::Database)),
        (Some("volume"), Some(volume), None) => Ok(Some(Target::Volume(volume))),
        (Some("service"), None, Some(service)) => {
            ServiceName::parse(&service)
                .map_err(|err| Error::Invalid(format!("`service`: {err}")))?;
            Ok(Some(Target::Service(service)))
        }
        (Some("volume"), None, _) => Err(Error::Invalid(
            "`kind: volume` needs `volume`, the volume's name".to_owned(),
        )),
        (Some("service"), _, None) => Err(Error::Invalid(
            "`kind: service` needs `service`, the add-on's service name".to_owned(),
        )),
        (Some("database" | "service") | None, Some(_), _) => Err(Error::Invalid(
            "`volume` goes with `kind: volume` only".to_owned(),
        )),
        (Some("database" | "volume") | None, _, Some(_)) => Err(Error::Invalid(
            "`service` goes with `kind: service` only".to_owned(),
        )),
        (Some(other), _, _) => Err(Error::Invalid(format!(
            "kind `{other}` is unknown; use `database`, `volume` or `service`"
        ))),
    }
}

/// List backups taken for the project, newest first.
#[utoipa::path(get, path = "/v1/projects/{id}/backups", tag = "backups",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id"), ListQuery),
    responses((status = 200, body = BackupList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<BackupList>> {
    let page = app.backups.list(&auth.actor, id, query.page(&app)?).await?;
    Ok(Json(BackupList {
        backups: page.items.into_iter().map(BackupView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Trigger a new backup of the database and volumes (or of one of them); it runs in the
/// background: poll `GET /v1/backups/{id}`.
#[utoipa::path(post, path = "/v1/projects/{id}/backups", tag = "backups",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body(content = Option<CreateBackup>, description = "optional: what to back up"),
    responses((status = 202, body = BackupsStarted), (status = 422, description = "nothing to back up", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CreateBackup>,
) -> ApiResult<(StatusCode, Json<BackupsStarted>)> {
    let target = target_of(body.unwrap_or_default())?;
    let started = app.backups.create(&auth.actor, id, target).await?;
    let backups: Vec<BackupView> = started.into_iter().map(BackupView::from).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(BackupsStarted {
            id: backups.first().map(|b| b.id.clone()).unwrap_or_default(),
            backups,
        }),
    ))
}

/// Fetch one backup: status, size, SHA-256, times, and why it failed.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "backup id")),
    responses((status = 200, body = BackupView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackupView>> {
    let (backup, _) = app.backups.get(&auth.actor, id).await?;
    Ok(Json(backup.into()))
}

/// Download a completed backup's file (streamed; `ETag` is its SHA-256).
#[utoipa::path(get, path = "/v1/backups/{id}/download", tag = "backups",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "backup id")),
    responses((status = 200, description = "the file", content_type = "application/octet-stream"),
              (status = 409, description = "the backup has no file", body = super::error::ErrorBody)))]
async fn download(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (backup, project, path) = app.backups.file_of(&auth.actor, id).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| Error::Conflict(format!("the file of backup `{}` is missing", backup.id)))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("bin")
        .to_owned();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // Names and ids are `[A-Za-z0-9_-]`, so the header value is always valid.
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}-{}.{extension}\"",
        project.name, backup.id
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(size) = backup.size_bytes {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Some(sha) = backup.sha256.as_deref() {
        if let Ok(value) = HeaderValue::from_str(&format!("\"{sha}\"")) {
            headers.insert(header::ETAG, value);
        }
    }
    Ok(response)
}

/// Restore a completed backup over the project's current data, after a safety backup of
/// that data. Needs `confirm` equal to the project's name.
#[utoipa::path(post, path = "/v1/backups/{id}/restore", tag = "backups",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "backup id")),
    request_body = Confirm,
    responses((status = 200, body = RestoreView), (status = 409, description = "the backup cannot be restored", body = super::error::ErrorBody)))]
async fn restore(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Confirm>,
) -> ApiResult<Json<RestoreView>> {
    let confirm = body.unwrap_or_default().confirm;
    let restored = app.backups.restore(&auth.actor, id, confirm).await?;
    Ok(Json(RestoreView {
        restored: restored.backup.into(),
        safety_backup: restored.safety_backup.into(),
    }))
}

/// Read the project's backup schedule, retention, and the outcome of its last run.
#[utoipa::path(get, path = "/v1/projects/{id}/backups/schedule", tag = "backups",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = ScheduleView)))]
async fn get_schedule(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(
        app.backups.get_schedule(&auth.actor, id).await?.into(),
    ))
}

/// Set the project's backup schedule and retention.
#[utoipa::path(put, path = "/v1/projects/{id}/backups/schedule", tag = "backups",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = SetSchedule,
    responses((status = 200, body = ScheduleView)))]
async fn set_schedule(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<SetSchedule>,
) -> ApiResult<Json<ScheduleView>> {
    let schedule = app
        .backups
        .set_schedule(
            &auth.actor,
            id,
            request.schedule,
            request.keep_daily,
            request.keep_weekly,
        )
        .await?;
    Ok(Json(Some(schedule).into()))
}

/// Remove the project's own schedule; the operator's default (if any) applies again.
#[utoipa::path(delete, path = "/v1/projects/{id}/backups/schedule", tag = "backups",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    responses((status = 204, description = "removed")))]
async fn delete_schedule(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.backups.delete_schedule(&auth.actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreLatest {
    /// The project ids to restore; omitted: every project of the account.
    pub projects: Option<Vec<String>>,
}

/// One target of a project and the backup restored onto it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatestRestoreView {
    pub project_id: String,
    /// `database`, `volume:<name>` or `service:<name>`; null for a project that holds
    /// nothing to back up.
    #[schema(example = "volume:uploads")]
    pub target: Option<String>,
    /// The newest completed backup of the target (safety backups left out); null when
    /// there is none.
    pub backup_id: Option<String>,
    /// `queued`, `restoring`, `restored`, `failed` or `nothing-to-restore`.
    pub status: String,
    /// Why the restore failed.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatestRunView {
    /// The run's id, for `GET /v1/backups/restore-latest/{id}`.
    #[schema(example = "rst_4c1d")]
    pub id: String,
    /// Whether every row has reached `restored`, `failed` or `nothing-to-restore`.
    pub done: bool,
    pub restores: Vec<LatestRestoreView>,
}

fn target_name(target: &Target) -> String {
    match target {
        Target::Database => "database".to_owned(),
        Target::Volume(name) => format!("volume:{name}"),
        Target::Service(name) => format!("service:{name}"),
    }
}

impl From<LatestRestore> for LatestRestoreView {
    fn from(row: LatestRestore) -> Self {
        Self {
            project_id: row.project_id,
            target: row.target.as_ref().map(target_name),
            backup_id: row.backup_id,
            status: row.status.as_str().to_owned(),
            error: row.error,
        }
    }
}

impl From<LatestRun> for LatestRunView {
    fn from(run: LatestRun) -> Self {
        Self {
            done: run.done(),
            id: run.id,
            restores: run
                .restores
                .into_iter()
                .map(LatestRestoreView::from)
                .collect(),
        }
    }
}

/// Restore the newest completed backup of every database, volume and add-on of the
/// named projects (default: all of the account's), each through the restore path of
/// `POST /v1/backups/{id}/restore` (a copy only in S3 is fetched and checked first; a
/// safety backup is taken). For bringing the data back after an installation was moved
/// to a new server. Runs in the background: follow it with
/// `GET /v1/backups/restore-latest/{id}`.
#[utoipa::path(post, path = "/v1/backups/restore-latest", tag = "backups",
    security(("bearer" = ["admin"])),
    request_body(content = Option<RestoreLatest>, description = "optional: which projects"),
    responses((status = 202, body = LatestRunView),
              (status = 404, description = "a named project is not found", body = super::error::ErrorBody),
              (status = 422, description = "`projects` is empty", body = super::error::ErrorBody)))]
async fn restore_latest(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    OptionalJson(body): OptionalJson<RestoreLatest>,
) -> ApiResult<(StatusCode, Json<LatestRunView>)> {
    let projects = body.unwrap_or_default().projects;
    let run = app.backups.restore_latest(&auth.actor, projects).await?;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

/// Where a `restore-latest` run stands, row by row. Runs are kept in memory by the
/// daemon that runs them.
#[utoipa::path(get, path = "/v1/backups/restore-latest/{id}", tag = "backups",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = LatestRunView)))]
async fn restore_latest_progress(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<LatestRunView>> {
    Ok(Json(app.backups.latest_run(&auth.actor, &id)?.into()))
}
