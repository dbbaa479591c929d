//! `/v1/projects/:id/build-secrets`: set, list (names only) and remove a project's build
//! secrets. A value goes in once and never comes back out: no response carries it.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    env::{BuildSecretEntry, Env},
    model::build::BuildName,
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set, remove))
}

/// A build secret as the API shows it: its name and dates, never its value.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSecretView {
    #[schema(example = "NPM_TOKEN")]
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<BuildSecretEntry> for BuildSecretView {
    fn from(entry: BuildSecretEntry) -> Self {
        Self {
            name: entry.name,
            created_at: entry.created_at,
            updated_at: entry.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BuildSecretList {
    pub secrets: Vec<BuildSecretView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBuildSecret {
    /// The secret's value, 1 byte to 64 KiB. A build reads it as a BuildKit secret
    /// (`RUN --mount=type=secret,id=NAME`); it never enters the image, the plan or a log.
    #[schema(min_length = 1, max_length = 65536)]
    pub value: String,
}

// Written by hand so a value never reaches a log through `{:?}`.
impl std::fmt::Debug for SetBuildSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetBuildSecret { value: <redacted> }")
    }
}

fn secret_name(name: &str) -> Result<BuildName, crate::error::Error> {
    BuildName::parse(name).map_err(|err| crate::error::Error::Invalid(format!("name: {err}")))
}

/// List the project's build secrets (names only).
#[utoipa::path(get, path = "/v1/projects/{id}/build-secrets", tag = "build",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = BuildSecretList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(env): State<Env>,
    Path(id): Path<String>,
) -> ApiResult<Json<BuildSecretList>> {
    let secrets = env.build_secrets(&auth.actor, id).await?;
    Ok(Json(BuildSecretList {
        secrets: secrets.into_iter().map(BuildSecretView::from).collect(),
    }))
}

/// Set a build secret (create or replace). The value is sealed and never shown again;
/// the next deploy's build gets it.
#[utoipa::path(put, path = "/v1/projects/{id}/build-secrets/{name}", tag = "build",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"),
        ("name" = String, Path, description = "secret name: letters, digits and `_`, not starting with a digit")),
    request_body = SetBuildSecret,
    responses((status = 200, body = BuildSecretView)))]
async fn set(
    auth: Auth<DeployScope>,
    State(env): State<Env>,
    Path((id, name)): Path<(String, String)>,
    Json(request): Json<SetBuildSecret>,
) -> ApiResult<Json<BuildSecretView>> {
    let name = secret_name(&name)?;
    let entry = env
        .set_build_secret(&auth.actor, id, name, request.value)
        .await?;
    Ok(Json(entry.into()))
}

/// Remove a build secret.
#[utoipa::path(delete, path = "/v1/projects/{id}/build-secrets/{name}", tag = "build",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"),
        ("name" = String, Path, description = "secret name")),
    responses((status = 204, description = "removed"),
        (status = 422, description = "the name is not a valid build secret name")))]
async fn remove(
    auth: Auth<DeployScope>,
    State(env): State<Env>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let name = secret_name(&name)?;
    env.remove_build_secret(&auth.actor, id, name).await?;
    Ok(StatusCode::NO_CONTENT)
}
