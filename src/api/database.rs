//! `/v1/projects/:id/database`: the database wired to a project, its metadata (never the
//! password) and its credentials (deploy scope only).

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    database::{DatabaseEngine, DatabaseInfo},
};

use super::{
    auth::{AdminScope, Auth, DeployScope, ReadScope},
    backups::BackupView,
    error::{ApiResult, Json, OptionalJson, Path},
    volumes::Confirm,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get, create, delete))
        .routes(routes!(credentials))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseView {
    /// `postgres` or `sqlite`.
    pub engine: String,
    /// The host the project's containers connect to (postgres).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The database name (postgres) or the file inside the containers (sqlite).
    pub database: String,
    pub user: Option<String>,
    /// `available`, `missing` (gone from the server) or `unreachable`.
    pub status: String,
    /// Size on disk (postgres).
    pub size_bytes: Option<i64>,
    /// The volume holding the file (sqlite).
    pub volume: Option<String>,
    pub created_at: String,
}

impl From<DatabaseInfo> for DatabaseView {
    fn from(info: DatabaseInfo) -> Self {
        Self {
            engine: info.engine.as_str().to_owned(),
            host: info.host,
            port: info.port,
            database: info.database,
            user: info.user,
            status: info.status,
            size_bytes: info.size_bytes,
            volume: info.volume,
            created_at: info.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabase {
    /// `postgres` (on the operator's server) or `sqlite` (a file on a volume at /data).
    #[schema(example = "postgres")]
    pub engine: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Credentials {
    /// `DATABASE_URL`, and for postgres `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`,
    /// `PGPASSWORD`: the env the project's containers get.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseDeleted {
    /// The backup taken just before the deletion (none when the database was already gone).
    pub final_backup: Option<BackupView>,
}

/// Read the database wired to the project (connection metadata; the password is
/// delivered separately).
#[utoipa::path(get, path = "/v1/projects/{id}/database", tag = "database",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = DatabaseView), (status = 404, description = "no database", body = super::error::ErrorBody)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DatabaseView>> {
    Ok(Json(app.databases.get(&auth.actor, id).await?.into()))
}

/// Wire a database to the project; its containers get `DATABASE_URL` from their next
/// start on.
#[utoipa::path(post, path = "/v1/projects/{id}/database", tag = "database",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = CreateDatabase,
    responses((status = 201, body = DatabaseView), (status = 409, description = "the project has a database", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<CreateDatabase>,
) -> ApiResult<(StatusCode, Json<DatabaseView>)> {
    let engine = DatabaseEngine::parse(&request.engine)?;
    let info = app.databases.create(&auth.actor, id, engine).await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// Delete the database for good, after a final backup. Needs `confirm` equal to the
/// project's name.
#[utoipa::path(delete, path = "/v1/projects/{id}/database", tag = "database",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "project id")),
    request_body = Confirm,
    responses((status = 200, body = DatabaseDeleted), (status = 409, description = "the final backup failed", body = super::error::ErrorBody)))]
async fn delete(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Confirm>,
) -> ApiResult<Json<DatabaseDeleted>> {
    let confirm = body.unwrap_or_default().confirm;
    let final_backup = app
        .backups
        .delete_database(&auth.actor, id, confirm)
        .await?;
    Ok(Json(DatabaseDeleted {
        final_backup: final_backup.map(BackupView::from),
    }))
}

/// The database's connection env, password included.
#[utoipa::path(get, path = "/v1/projects/{id}/database/credentials", tag = "database",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = Credentials)))]
async fn credentials(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Credentials>> {
    let env = app.databases.credentials(&auth.actor, id).await?;
    Ok(Json(Credentials { env }))
}
