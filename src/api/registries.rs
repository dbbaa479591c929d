//! `/v1/registries`: the account's registry credentials, used for image pulls. The
//! password (or token) is sealed at rest and never shown after the request that set it.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    registries::{NewCredential, Registries, RegistryView},
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(remove))
}

/// Credentials as shown: never the password.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentialView {
    #[schema(example = "reg_8Hc2LwQ0pZr5TnYv1sXe")]
    pub id: String,
    /// The registry's `host[:port]` (`docker.io` for Docker Hub).
    #[schema(example = "ghcr.io")]
    pub server: String,
    pub username: String,
    pub created_at: String,
}

impl From<RegistryView> for RegistryCredentialView {
    fn from(view: RegistryView) -> Self {
        Self {
            id: view.id,
            server: view.server,
            username: view.username,
            created_at: view.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryList {
    pub registries: Vec<RegistryCredentialView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRegistry {
    /// The registry's `host[:port]`; an `https://` prefix is accepted and dropped. No path,
    /// query or credentials.
    #[schema(example = "registry.example.com", min_length = 1, max_length = 261)]
    pub server: String,
    #[schema(min_length = 1, max_length = 255)]
    pub username: String,
    /// The password or an access token; stored encrypted and never shown again.
    #[schema(min_length = 1, max_length = 8192)]
    pub password: String,
}

/// List the account's registry credentials (never their passwords).
#[utoipa::path(get, path = "/v1/registries", tag = "registries",
    security(("bearer" = ["read"])), responses((status = 200, body = RegistryList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(registries): State<Registries>,
) -> ApiResult<Json<RegistryList>> {
    let listed = registries.list(&auth.actor).await?;
    Ok(Json(RegistryList {
        registries: listed.into_iter().map(Into::into).collect(),
    }))
}

/// Add credentials for a registry; they replace the account's earlier ones for the same
/// server. Image pulls from that server use them.
#[utoipa::path(post, path = "/v1/registries", tag = "registries",
    security(("bearer" = ["deploy"])), request_body = AddRegistry,
    responses((status = 201, body = RegistryCredentialView),
        (status = 422, description = "a server with a path, scheme or credentials in it, or an empty username or password", body = super::error::ErrorBody)))]
async fn add(
    auth: Auth<DeployScope>,
    State(registries): State<Registries>,
    Json(request): Json<AddRegistry>,
) -> ApiResult<(StatusCode, Json<RegistryCredentialView>)> {
    let request = NewCredential::parse(&request.server, &request.username, request.password)?;
    let view = registries.add(&auth.actor, request).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Remove registry credentials; later pulls from that server go without them.
#[utoipa::path(delete, path = "/v1/registries/{id}", tag = "registries",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "registry credentials id")),
    responses((status = 200, body = RegistryCredentialView),
        (status = 404, description = "no such credentials in the account", body = super::error::ErrorBody)))]
async fn remove(
    auth: Auth<DeployScope>,
    State(registries): State<Registries>,
    Path(id): Path<String>,
) -> ApiResult<Json<RegistryCredentialView>> {
    Ok(Json(registries.remove(&auth.actor, id).await?.into()))
}
