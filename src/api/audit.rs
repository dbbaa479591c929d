//! `/v1/audit`: the account's audit log, newest first (admin scope).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{api::ApiState, audit};

use super::{
    auth::{AdminScope, Auth},
    error::{ApiResult, Json, Query},
    projects::ListQuery,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    /// The token id that acted, or `admin-cli` for the operator on the server.
    pub actor: String,
    #[schema(example = "project.create")]
    pub action: String,
    pub target: Option<String>,
    pub client_addr: Option<String>,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// Every mutation made in the account: who, what, target, when, from where.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    security(("bearer" = ["admin"])), params(ListQuery),
    responses((status = 200, body = AuditList)))]
async fn list(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<AuditList>> {
    let page = audit::list(&app.store, &auth.actor, query.page(&app)?).await?;
    Ok(Json(AuditList {
        entries: page
            .items
            .into_iter()
            .map(|entry| AuditView {
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                client_addr: entry.client_addr,
                at: entry.at,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
