//! `/v1/projects/:id/aliases` and `/v1/projects/:id/domains`: alias hostnames, and every
//! hostname of a project with its certificate and DNS state.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    domains::{Alias, Domain, DomainKind},
    names::Hostname,
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_aliases, add_alias))
        .routes(routes!(remove_alias))
        .routes(routes!(list_domains))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasView {
    #[schema(example = "www.example.com")]
    pub hostname: String,
    pub created_at: String,
}

impl From<Alias> for AliasView {
    fn from(alias: Alias) -> Self {
        Self {
            hostname: alias.hostname,
            created_at: alias.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AliasList {
    pub aliases: Vec<AliasView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddAlias {
    /// The alias to attach; international names are stored in punycode.
    #[schema(example = "www.example.com")]
    pub hostname: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    /// `pending`, `issued`/`acme`, `failed`, `self-signed`, `manual`, or `none`.
    pub status: String,
    pub issuer: Option<String>,
    pub expires_at: Option<String>,
    /// Why the last request failed.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainView {
    pub hostname: String,
    /// `default` or `alias`.
    pub kind: String,
    pub certificate: CertificateView,
    /// The addresses the name resolves to from this server; null when the lookup timed out.
    pub resolves_to: Option<Vec<String>>,
}

impl From<Domain> for DomainView {
    fn from(domain: Domain) -> Self {
        Self {
            hostname: domain.hostname,
            kind: match domain.kind {
                DomainKind::Default => "default",
                DomainKind::Alias => "alias",
            }
            .to_owned(),
            certificate: CertificateView {
                status: domain.certificate_status,
                issuer: domain.certificate_issuer,
                expires_at: domain.certificate_expires_at,
                error: domain.certificate_error,
            },
            resolves_to: domain.resolves_to,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<DomainView>,
}

/// List the project's alias hostnames.
#[utoipa::path(get, path = "/v1/projects/{id}/aliases", tag = "domains",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = AliasList)))]
async fn list_aliases(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<AliasList>> {
    let aliases = app.domains.list_aliases(&auth.actor, id).await?;
    Ok(Json(AliasList {
        aliases: aliases.into_iter().map(AliasView::from).collect(),
    }))
}

/// Add an alias hostname to the project; it routes at once.
#[utoipa::path(post, path = "/v1/projects/{id}/aliases", tag = "domains",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = AddAlias,
    responses((status = 201, body = AliasView), (status = 409, description = "the hostname is taken, or the project has `domains.max_aliases_per_project` aliases already", body = super::error::ErrorBody)))]
async fn add_alias(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<AddAlias>,
) -> ApiResult<(StatusCode, Json<AliasView>)> {
    let hostname = Hostname::parse(&request.hostname)?;
    let alias = app.domains.add_alias(&auth.actor, id, hostname).await?;
    app.routing.refresh().await?;
    Ok((StatusCode::CREATED, Json(alias.into())))
}

/// Remove an alias hostname from the project.
#[utoipa::path(delete, path = "/v1/projects/{id}/aliases/{hostname}", tag = "domains",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("hostname" = String, Path, description = "the alias")),
    responses((status = 204, description = "removed"),
        (status = 422, description = "the hostname is not a valid DNS name", body = super::error::ErrorBody)))]
async fn remove_alias(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path((id, hostname)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let hostname = Hostname::parse(&hostname)?;
    let hostname = hostname.as_str().to_owned();
    app.domains
        .remove_alias(&auth.actor, id, hostname.clone())
        .await?;
    app.routing.refresh().await?;
    app.domains.forget_certificate(hostname);
    Ok(StatusCode::NO_CONTENT)
}

/// List every hostname that reaches the project (default and aliases) with its
/// certificate and DNS state.
#[utoipa::path(get, path = "/v1/projects/{id}/domains", tag = "domains",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = DomainList)))]
async fn list_domains(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DomainList>> {
    let domains = app.domains.list_domains(&auth.actor, id).await?;
    Ok(Json(DomainList {
        domains: domains.into_iter().map(DomainView::from).collect(),
    }))
}
