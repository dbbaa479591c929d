//! `/v1/account`: who the calling token is (account, handle, scope).

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{api::ApiState, names::Scope};

use super::{
    auth::{Auth, ReadScope},
    error::Json,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(whoami))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: String,
    pub handle: String,
    /// The calling token's id and scope.
    pub token_id: Option<String>,
    pub scope: Scope,
}

/// The account and scope of the calling token.
#[utoipa::path(get, path = "/v1/account", tag = "account",
    security(("bearer" = ["read"])), responses((status = 200, body = AccountView)))]
async fn whoami(auth: Auth<ReadScope>) -> Json<AccountView> {
    Json(AccountView {
        id: auth.actor.account_id,
        handle: auth.actor.handle.to_string(),
        token_id: auth.actor.token_id,
        scope: auth.actor.scope,
    })
}
