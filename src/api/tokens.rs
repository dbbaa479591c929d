//! `/v1/tokens`: list, mint and revoke the account's API tokens (admin scope).

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    accounts::{self, TokenRecord},
    api::ApiState,
    names::{Scope, TokenName},
};

use super::{
    auth::{AdminScope, Auth},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    #[schema(example = "tok_8Hc2LwQ0pZr5TnYv1sXe")]
    pub id: String,
    pub name: Option<String>,
    pub scope: Scope,
    /// The first characters of the token, to recognise it.
    #[schema(example = "sk_live_Ab3d")]
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(token: &TokenRecord) -> Self {
        Self {
            id: token.id.clone(),
            name: token.name.clone(),
            scope: token.scope,
            prefix: token.prefix.clone(),
            created_at: token.created_at.clone(),
            last_used_at: token.last_used_at.clone(),
            revoked_at: token.revoked_at.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `read`, `deploy` or `admin`; never above the calling token's own scope.
    #[schema(value_type = Scope)]
    pub scope: String,
    /// An optional label, 1-64 characters without control characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
}

/// A new token: the secret is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    /// The secret. Store it now: only its hash is kept.
    #[schema(example = "sk_live_Ab3dXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")]
    pub token: String,
    #[serde(flatten)]
    pub details: TokenView,
}

/// List the account's tokens, revoked ones included.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    security(("bearer" = ["admin"])), responses((status = 200, body = TokenList)))]
async fn list(auth: Auth<AdminScope>, State(app): State<ApiState>) -> ApiResult<Json<TokenList>> {
    let tokens = app.tokens.list(&app.store, &auth.actor).await?;
    Ok(Json(TokenList {
        tokens: tokens.iter().map(TokenView::from).collect(),
    }))
}

/// Mint a token for the account. Its secret is in this response only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    security(("bearer" = ["admin"])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken)))]
async fn create(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    Json(request): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let scope = Scope::parse(&request.scope)?;
    let name = request.name.as_deref().map(TokenName::parse).transpose()?;
    let token = accounts::create_token(&app.store, &auth.actor, scope, name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            details: TokenView::from(&token.record),
            token: token.secret,
        }),
    ))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "token id")),
    responses((status = 200, body = TokenView)))]
async fn revoke(
    auth: Auth<AdminScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    let token = app.tokens.revoke(&app.store, &auth.actor, id).await?;
    Ok(Json(TokenView::from(&token)))
}
