//! `/v1/admin/state-backups`: backups of Cantila's own state, for the operator's account
//! only (admin scope, and the account is the installation's default account; to any
//! other account the routes do not exist, 404).

use axum::{extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{api::ApiState, error::Error, state_backup::StateBackup};

use super::{
    auth::{AdminScope, Auth},
    error::{ApiResult, Json},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list, create))
}

/// The copy of a state backup in S3.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateBackupRemoteView {
    /// `none` (no copy wanted: `[backups.s3]` is off, or the backup failed), `pending`,
    /// `uploaded` (verified) or `failed`.
    #[schema(example = "uploaded")]
    pub status: String,
    /// The object key, `<prefix>state/<id>.cstate`.
    pub key: Option<String>,
    pub error: Option<String>,
}

/// One backup of Cantila's own state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateBackupView {
    #[schema(example = "sb_20261207T033000Z_4kTq9mZx2aBc")]
    pub id: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// `running`, `completed` or `failed`.
    #[schema(example = "completed")]
    pub status: String,
    /// `manual` or `scheduled`.
    #[schema(example = "scheduled")]
    pub trigger: String,
    #[schema(minimum = 0)]
    pub size_bytes: Option<i64>,
    /// SHA-256 (hex) of the archive file.
    pub sha256: Option<String>,
    /// Encrypted with the state backup passphrase; an unencrypted archive leaves out
    /// `secret.key` and the certificates (see `note`).
    pub encrypted: bool,
    /// What the operator should know about this archive (what an unencrypted one lacks).
    pub note: Option<String>,
    pub error: Option<String>,
    pub remote: StateBackupRemoteView,
}

impl StateBackupView {
    pub fn new(backup: StateBackup, unencrypted_note: &str) -> Self {
        Self {
            note: (!backup.encrypted).then(|| unencrypted_note.to_owned()),
            id: backup.id,
            created_at: backup.created_at,
            finished_at: backup.finished_at,
            status: backup.status.as_str().to_owned(),
            trigger: backup.trigger.as_str().to_owned(),
            size_bytes: backup.size_bytes,
            sha256: backup.sha256,
            encrypted: backup.encrypted,
            error: backup.error,
            remote: StateBackupRemoteView {
                status: backup.remote_status.as_str().to_owned(),
                key: backup.remote_key,
                error: backup.remote_error,
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateBackupList {
    /// Newest first.
    pub state_backups: Vec<StateBackupView>,
}

/// Only the installation's default account (the operator's) sees state backups; to any
/// other account they do not exist.
fn operator_only(auth: &Auth<AdminScope>, app: &ApiState) -> Result<(), Error> {
    if auth.actor.handle.as_str() == app.config.default_handle {
        Ok(())
    } else {
        Err(Error::NotFound("not found".to_owned()))
    }
}

/// The state backups kept (the newest `[state_backup] keep` completed ones, and recent
/// failures), newest first.
#[utoipa::path(get, path = "/v1/admin/state-backups", tag = "admin",
    security(("bearer" = ["admin"])),
    responses((status = 200, body = StateBackupList),
        (status = 404, description = "not the installation's default account")))]
async fn list(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
) -> ApiResult<Json<StateBackupList>> {
    operator_only(&auth, &app)?;
    let note = app.state_backups.unencrypted_note();
    let backups = app.state_backups.list().await?;
    Ok(Json(StateBackupList {
        state_backups: backups
            .into_iter()
            .map(|backup| StateBackupView::new(backup, &note))
            .collect(),
    }))
}

/// Takes a state backup now, in the background; answers with its `running` record.
#[utoipa::path(post, path = "/v1/admin/state-backups", tag = "admin",
    security(("bearer" = ["admin"])),
    responses((status = 202, body = StateBackupView),
        (status = 404, description = "not the installation's default account"),
        (status = 409, description = "a state backup is already running, or the passphrase file is unusable")))]
async fn create(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
) -> ApiResult<(StatusCode, Json<StateBackupView>)> {
    operator_only(&auth, &app)?;
    let backup = app.state_backups.start(&auth.actor).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StateBackupView::new(
            backup,
            &app.state_backups.unencrypted_note(),
        )),
    ))
}
