//! `/v1/projects/:id/git`: the git connection, its webhook secret, and the inbound webhook.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    git_connection::{ConnectRequest, ConnectionView, Delivery, DeliveryOutcome},
    source::{GitRef, RepoLocation},
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get, connect))
        .routes(routes!(rotate_secret))
        .routes(routes!(webhook))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitView {
    pub repo: String,
    pub branch: String,
    /// Whether a webhook signing secret is set (the secret itself is never shown again).
    pub secret_set: bool,
    pub access_token_set: bool,
    /// The webhook URL path to configure at the git provider.
    pub webhook_path: String,
    pub last_delivery: Option<DeliveryView>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub at: String,
    pub event: Option<String>,
    pub result: Option<String>,
}

impl GitView {
    fn new(project_id: &str, view: ConnectionView) -> Self {
        Self {
            repo: view.repo,
            branch: view.branch,
            secret_set: view.secret_set,
            access_token_set: view.access_token_set,
            webhook_path: format!("/v1/projects/{project_id}/git/webhook"),
            last_delivery: view.last_delivery_at.map(|at| DeliveryView {
                at,
                event: view.last_delivery_event,
                result: view.last_delivery_result,
            }),
            created_at: view.created_at,
            updated_at: view.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectGit {
    /// An https URL, `owner/name` (GitHub), a local path or a `file://` URL. A local path
    /// needs the operator's allowance for the account and must not lead into a repository
    /// another account uses; an https host must resolve to a public address.
    #[schema(example = "owner/name")]
    pub repo: String,
    /// The branch to deploy from (default `main`).
    pub branch: Option<String>,
    /// An access token for a private https repository; stored encrypted.
    pub access_token: Option<String>,
}

/// A newly set webhook secret: shown in this response only.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitConnected {
    #[serde(flatten)]
    pub connection: GitView,
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAnswer {
    /// `pong`, `duplicate` (a redelivery or a replay), `ignored`, `stale` (the delivery
    /// names a commit that is not the branch's head as fetched now), `queued` or
    /// `removed` (a preview). `reason` says why for `duplicate`, `ignored` and `stale`.
    pub status: String,
    pub reason: Option<String>,
    pub deploy_id: Option<String>,
    /// The preview the delivery created, updated or removed.
    pub preview_id: Option<String>,
}

/// Read the project's git connection: repository, branch, webhook status.
#[utoipa::path(get, path = "/v1/projects/{id}/git", tag = "git",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = GitView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<GitView>> {
    let view = app.git_connections.get(&auth.actor, id.clone()).await?;
    Ok(Json(GitView::new(&id, view)))
}

/// Connect or update the git repository. The repository is fetched once to check it;
/// the response carries the webhook signing secret, shown only here.
#[utoipa::path(post, path = "/v1/projects/{id}/git", tag = "git",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = ConnectGit, responses((status = 200, body = GitConnected),
        (status = 403, description = "the token lacks the scope, or the operator has not allowed this account repositories on the server's disk", body = super::error::ErrorBody),
        (status = 409, description = "the local path leads into a repository another account's project uses", body = super::error::ErrorBody)))]
async fn connect(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<ConnectGit>,
) -> ApiResult<Json<GitConnected>> {
    let request = ConnectRequest {
        repo: RepoLocation::parse(&request.repo)?,
        branch: GitRef::parse(request.branch.as_deref().unwrap_or("main"))?,
        access_token: request.access_token.filter(|token| !token.is_empty()),
    };
    let (view, secret) = app
        .git_connections
        .connect(&auth.actor, id.clone(), request)
        .await?;
    Ok(Json(GitConnected {
        connection: GitView::new(&id, view),
        webhook_secret: secret,
    }))
}

/// Rotate the webhook signing secret; the new secret is shown only here.
#[utoipa::path(post, path = "/v1/projects/{id}/git/rotate-secret", tag = "git",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = RotatedSecret),
        (status = 409, description = "the project has no git connection", body = super::error::ErrorBody)))]
async fn rotate_secret(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedSecret>> {
    let secret = app.git_connections.rotate_secret(&auth.actor, id).await?;
    Ok(Json(RotatedSecret {
        webhook_secret: secret,
    }))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The inbound webhook git providers call. Verified by the project's signing secret
/// (`X-Hub-Signature-256`, `X-Gitea-Signature`/`X-Forgejo-Signature`, or
/// `X-Gitlab-Token`), not an API token. A push to the connected branch queues a deploy of
/// the pushed commit once a fetch confirms it is the branch's head (otherwise the delivery
/// is `stale`); pull request events (`opened`, `reopened`, `synchronize`, `closed`) and
/// pushes to other branches create, update or remove previews the same way. A delivery
/// whose id or body was received in the last 30 days is a `duplicate`.
#[utoipa::path(post, path = "/v1/projects/{id}/git/webhook", tag = "git",
    params(("id" = String, Path, description = "project id")),
    request_body(content = Object, description = "the provider's push or ping payload"),
    responses((status = 202, description = "a deploy was queued", body = WebhookAnswer),
        (status = 200, description = "acknowledged: ping, duplicate, ignored or stale", body = WebhookAnswer),
        (status = 401, description = "missing or wrong signature", body = super::error::ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes`", body = super::error::ErrorBody),
        (status = 415, description = "the body is not JSON", body = super::error::ErrorBody)))]
async fn webhook(
    State(app): State<ApiState>,
    Path(id): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<WebhookAnswer>)> {
    let body = body?;
    // The body limit has already refused oversized deliveries before any HMAC work; a form
    // encoded delivery is refused here rather than parsed as something it is not.
    let json = header(&headers, "content-type").is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(super::error::ApiError::Http {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "webhook deliveries must be JSON: set the webhook's content type to application/json".to_owned(),
        });
    }
    let delivery = Delivery {
        event: header(&headers, "x-github-event")
            .or_else(|| header(&headers, "x-gitea-event"))
            .or_else(|| header(&headers, "x-forgejo-event"))
            .or_else(|| header(&headers, "x-gitlab-event")),
        delivery_id: header(&headers, "x-github-delivery")
            .or_else(|| header(&headers, "x-gitea-delivery"))
            .or_else(|| header(&headers, "x-forgejo-delivery"))
            .or_else(|| header(&headers, "x-gitlab-event-uuid")),
        github_signature: header(&headers, "x-hub-signature-256"),
        gitea_signature: header(&headers, "x-gitea-signature")
            .or_else(|| header(&headers, "x-forgejo-signature")),
        gitlab_token: header(&headers, "x-gitlab-token"),
        client_addr: Some(client.ip()),
    };
    let outcome = app
        .git_connections
        .handle_delivery(id, delivery, body)
        .await?;
    let answer = |status: &str, reason: Option<String>, deploy_id: Option<String>| WebhookAnswer {
        status: status.to_owned(),
        reason,
        deploy_id,
        preview_id: None,
    };
    Ok(match outcome {
        DeliveryOutcome::Pong => (StatusCode::OK, Json(answer("pong", None, None))),
        DeliveryOutcome::Duplicate(reason) => (
            StatusCode::OK,
            Json(answer("duplicate", Some(reason), None)),
        ),
        DeliveryOutcome::Ignored(reason) => {
            (StatusCode::OK, Json(answer("ignored", Some(reason), None)))
        }
        DeliveryOutcome::Stale(reason) => {
            (StatusCode::OK, Json(answer("stale", Some(reason), None)))
        }
        DeliveryOutcome::Queued {
            deploy_id,
            preview_id,
        } => (
            StatusCode::ACCEPTED,
            Json(WebhookAnswer {
                preview_id,
                ..answer("queued", None, Some(deploy_id))
            }),
        ),
        DeliveryOutcome::PreviewRemoved { preview_id } => (
            StatusCode::OK,
            Json(WebhookAnswer {
                preview_id: Some(preview_id),
                ..answer("removed", None, None)
            }),
        ),
    })
}
