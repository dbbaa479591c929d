//! `/v1/projects/:id/volumes`: persistent volumes, mounted into every container of the
//! project.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    names::{MountPath, VolumeName},
    volumes::Volume,
};

use super::{
    auth::{AdminScope, Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, OptionalJson, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(delete))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    #[schema(example = "uploads")]
    pub name: String,
    #[schema(example = "/app/uploads")]
    pub mount_path: String,
    /// The Docker named volume holding the files.
    pub docker_volume: String,
    /// The service that owns and alone mounts it (`/v1/projects/{id}/services`); null for
    /// the app's volumes, which every app container mounts.
    #[schema(example = "redis")]
    pub service: Option<String>,
    pub created_at: String,
}

impl From<Volume> for VolumeView {
    fn from(volume: Volume) -> Self {
        Self {
            name: volume.name,
            mount_path: volume.mount_path,
            docker_volume: volume.docker_name,
            service: volume.service,
            created_at: volume.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeList {
    pub volumes: Vec<VolumeView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateVolume {
    /// A lowercase DNS label of at most 32 characters, unique within the project.
    #[schema(example = "uploads")]
    pub name: String,
    /// An absolute path inside the containers; not `/` and not under a system directory.
    #[schema(example = "/app/uploads")]
    pub mount_path: String,
}

/// The confirmation destructive operations need.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// The project's name.
    #[schema(example = "marketing-site")]
    pub confirm: Option<String>,
}

/// List the project's persistent volumes.
#[utoipa::path(get, path = "/v1/projects/{id}/volumes", tag = "volumes",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = VolumeList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<VolumeList>> {
    let volumes = app.volumes.list(&auth.actor, id).await?;
    Ok(Json(VolumeList {
        volumes: volumes.into_iter().map(VolumeView::from).collect(),
    }))
}

/// Declare a persistent volume; containers started from now on mount it, and it survives
/// redeploys, rollbacks, scaling and restarts.
#[utoipa::path(post, path = "/v1/projects/{id}/volumes", tag = "volumes",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = CreateVolume,
    responses((status = 201, body = VolumeView), (status = 409, description = "the name or mount path is taken", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<CreateVolume>,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    let name = VolumeName::parse(&request.name)?;
    let mount_path = MountPath::parse(&request.mount_path)?;
    let volume = app
        .volumes
        .create(&auth.actor, id, name, mount_path)
        .await?;
    Ok((StatusCode::CREATED, Json(volume.into())))
}

/// Delete a volume and its files for good. Needs `confirm` equal to the project's name,
/// and no container of the project may be mounting it.
#[utoipa::path(delete, path = "/v1/projects/{id}/volumes/{name}", tag = "volumes",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "project id"), ("name" = String, Path, description = "volume name")),
    request_body = Confirm,
    responses((status = 204, description = "deleted"), (status = 409, description = "mounted, or holds the database", body = super::error::ErrorBody)))]
async fn delete(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    Path((id, name)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<Confirm>,
) -> ApiResult<StatusCode> {
    let name = VolumeName::parse(&name)?;
    let confirm = body.unwrap_or_default().confirm;
    app.volumes.delete(&auth.actor, id, name, confirm).await?;
    Ok(StatusCode::NO_CONTENT)
}
