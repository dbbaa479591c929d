//! `/v1/projects/:id/image`: a project's image source (instead of a git repository), and
//! the registry webhook that redeploys it when the connected tag moves.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    image_source::{ImageDelivery, ImageSourceView, ImageSources},
    model::image::ImageReference,
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path, Query},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get, connect, disconnect))
        .routes(routes!(webhook))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    /// The connected image reference.
    #[schema(example = "registry.example.com/team/app:1.4")]
    pub image: String,
    /// The registry webhook's URL path (the secret goes in `Authorization: Bearer`, or in
    /// `?token=` for Docker Hub).
    pub webhook_path: String,
    pub last_delivery_at: Option<String>,
    /// What the last registry delivery led to: `queued <deploy id>` or `ignored: <why>`.
    pub last_delivery_result: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl ImageView {
    fn new(project_id: &str, view: ImageSourceView) -> Self {
        Self {
            image: view.reference,
            webhook_path: format!("/v1/projects/{project_id}/image/webhook"),
            last_delivery_at: view.last_delivery_at,
            last_delivery_result: view.last_delivery_result,
            created_at: view.created_at,
            updated_at: view.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectImage {
    /// `[registry[:port]/]name[:tag][@sha256:<digest>]`; without a tag, `latest`.
    #[schema(
        example = "registry.example.com/team/app:1.4",
        min_length = 1,
        max_length = 512
    )]
    pub image: String,
    /// Switch a git-connected project to this image (its git connection is removed);
    /// without it such a project answers 409.
    #[serde(default)]
    pub replace: bool,
}

/// The image source as connected: the webhook secret is shown here once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageConnected {
    #[serde(flatten)]
    pub source: ImageView,
    /// The registry webhook's secret; only its hash is kept.
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageWebhookAnswer {
    /// `queued` or `ignored`.
    pub status: String,
    pub reason: Option<String>,
    pub deploy_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    /// The webhook secret, for registries that cannot send headers (Docker Hub).
    pub token: Option<String>,
}

/// Read the project's image source.
#[utoipa::path(get, path = "/v1/projects/{id}/image", tag = "images",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = ImageView),
        (status = 404, description = "no such project, or it has no image source", body = super::error::ErrorBody)))]
async fn get(
    auth: Auth<ReadScope>,
    State(images): State<ImageSources>,
    Path(id): Path<String>,
) -> ApiResult<Json<ImageView>> {
    let view = images.get(&auth.actor, id.clone()).await?;
    Ok(Json(ImageView::new(&id, view)))
}

/// Take the project's releases from an image. A project has one source at a time: a
/// git-connected project answers 409 unless `replace` is true. The response carries the
/// registry webhook's secret, shown only here.
#[utoipa::path(post, path = "/v1/projects/{id}/image", tag = "images",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = ConnectImage,
    responses((status = 200, body = ImageConnected),
        (status = 409, description = "the project is connected to a git repository", body = super::error::ErrorBody),
        (status = 422, description = "a malformed image reference", body = super::error::ErrorBody)))]
async fn connect(
    auth: Auth<DeployScope>,
    State(images): State<ImageSources>,
    Path(id): Path<String>,
    Json(request): Json<ConnectImage>,
) -> ApiResult<Json<ImageConnected>> {
    let reference = ImageReference::parse(&request.image)?;
    let (view, secret) = images
        .connect(&auth.actor, id.clone(), reference, request.replace)
        .await?;
    Ok(Json(ImageConnected {
        source: ImageView::new(&id, view),
        webhook_secret: secret,
    }))
}

/// Disconnect the image source (the running release keeps serving).
#[utoipa::path(delete, path = "/v1/projects/{id}/image", tag = "images",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = ImageView),
        (status = 404, description = "no such project, or it has no image source", body = super::error::ErrorBody)))]
async fn disconnect(
    auth: Auth<DeployScope>,
    State(images): State<ImageSources>,
    Path(id): Path<String>,
) -> ApiResult<Json<ImageView>> {
    let view = images.disconnect(&auth.actor, id.clone()).await?;
    Ok(Json(ImageView::new(&id, view)))
}

/// The registry webhook: the distribution registry's notification envelope, or Docker
/// Hub's push payload. Authenticated by the project's image webhook secret (not an API
/// token) in `Authorization: Bearer <secret>` or `?token=<secret>`. A push of the
/// connected tag of the connected repository queues a deploy (which releases nothing when
/// the digest did not change); anything else is recorded as ignored with the reason.
#[utoipa::path(post, path = "/v1/projects/{id}/image/webhook", tag = "images",
    params(("id" = String, Path, description = "project id"), WebhookQuery),
    request_body(content = Object, description = "the registry's notification"),
    responses((status = 202, description = "a deploy was queued", body = ImageWebhookAnswer),
        (status = 200, description = "ignored, with the reason", body = ImageWebhookAnswer),
        (status = 401, description = "missing or wrong secret", body = super::error::ErrorBody),
        (status = 413, description = "the body is over `api.max_body_bytes`", body = super::error::ErrorBody)))]
async fn webhook(
    State(images): State<ImageSources>,
    Path(id): Path<String>,
    Query(query): Query<WebhookQuery>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<ImageWebhookAnswer>)> {
    let body = body?;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_owned());
    let outcome = images
        .handle_delivery(id, bearer.or(query.token), &body, Some(client.ip()))
        .await?;
    Ok(match outcome {
        ImageDelivery::Queued { deploy_id } => (
            StatusCode::ACCEPTED,
            Json(ImageWebhookAnswer {
                status: "queued".to_owned(),
                reason: None,
                deploy_id: Some(deploy_id),
            }),
        ),
        ImageDelivery::Ignored { reason } => (
            StatusCode::OK,
            Json(ImageWebhookAnswer {
                status: "ignored".to_owned(),
                reason: Some(reason),
                deploy_id: None,
            }),
        ),
    })
}
