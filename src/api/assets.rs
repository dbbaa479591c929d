//! `/v1/projects/:id/assets`: the static assets of the project's live release.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{api::ApiState, assets, pagination::PageRequest};

use super::{
    auth::{Auth, ReadScope},
    error::{ApiResult, Json, Path, Query},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AssetQuery {
    /// Only paths starting with this (a leading `/` is ignored), e.g. `css/`.
    pub prefix: Option<String>,
    /// Items per page (default 50, at most 200 unless configured otherwise).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetView {
    /// The URL path below the site's root.
    #[schema(example = "css/site.css")]
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: String,
    /// The strong `ETag` the file is served with (its SHA-256, quoted).
    pub etag: String,
    /// The `Cache-Control` the edge serves it with.
    pub cache_control: String,
}

impl From<assets::Asset> for AssetView {
    fn from(asset: assets::Asset) -> Self {
        Self {
            etag: asset.etag(),
            cache_control: asset.cache_policy().to_owned(),
            path: asset.path,
            size_bytes: asset.size_bytes,
            content_type: asset.content_type,
            sha256: asset.sha256,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetList {
    /// The live deploy the assets belong to; null when nothing is live.
    pub deploy_id: Option<String>,
    pub assets: Vec<AssetView>,
    pub next_cursor: Option<String>,
}

/// List the static assets of the project's live release (a static site's files, or a
/// container app's assets directory), in path order.
#[utoipa::path(get, path = "/v1/projects/{id}/assets", tag = "assets",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id"), AssetQuery),
    responses((status = 200, body = AssetList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<AssetQuery>,
) -> ApiResult<Json<AssetList>> {
    let page = PageRequest::parse(
        query.limit,
        query.cursor.as_deref(),
        app.config.api.default_page_size,
        app.config.api.max_page_size,
    )?;
    let listed = app.assets.list(&auth.actor, id, query.prefix, page).await?;
    Ok(Json(AssetList {
        deploy_id: listed.deploy_id,
        assets: listed.page.items.into_iter().map(AssetView::from).collect(),
        next_cursor: listed.page.next_cursor,
    }))
}
