//! `/v1/projects/:id/env`: list (masked) and set env vars; changes apply on the next deploy.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    env::{Env, EnvChange, EnvListing},
    names::EnvKey,
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list, set))
}

/// The value shown in place of a masked one.
const MASK: &str = "********";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvView {
    /// KEY → value; secret values (and all values for read-scope tokens) are masked.
    pub vars: BTreeMap<String, String>,
    pub details: Vec<EnvVarDetail>,
    /// Keys whose change (set, changed or removed) applies on the next deploy.
    pub pending: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarDetail {
    pub key: String,
    pub secret: bool,
    pub masked: bool,
    pub pending: bool,
    pub updated_at: String,
}

impl From<EnvListing> for EnvView {
    fn from(listing: EnvListing) -> Self {
        let mut pending: Vec<String> = listing
            .vars
            .iter()
            .filter(|v| v.pending)
            .map(|v| v.key.clone())
            .chain(listing.pending_removals.iter().cloned())
            .collect();
        pending.sort();
        Self {
            vars: listing
                .vars
                .iter()
                .map(|v| {
                    (
                        v.key.clone(),
                        v.value.clone().unwrap_or_else(|| MASK.to_owned()),
                    )
                })
                .collect(),
            details: listing
                .vars
                .into_iter()
                .map(|v| EnvVarDetail {
                    masked: v.value.is_none(),
                    key: v.key,
                    secret: v.secret,
                    pending: v.pending,
                    updated_at: v.updated_at,
                })
                .collect(),
            pending,
        }
    }
}

/// A value to set: a string, `null` to delete, or `{"value": "...", "secret": true}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(Option<String>),
    Detailed { value: String, secret: Option<bool> },
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEnv {
    /// KEY → value (string), null (delete), or `{"value", "secret"}`.
    #[schema(value_type = Object)]
    pub vars: BTreeMap<String, EnvValue>,
}

/// List the project's environment variables (secret values masked).
#[utoipa::path(get, path = "/v1/projects/{id}/env", tag = "env",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = EnvView)))]
async fn list(
    auth: Auth<ReadScope>,
    State(env): State<Env>,
    Path(id): Path<String>,
) -> ApiResult<Json<EnvView>> {
    Ok(Json(env.list(&auth.actor, id).await?.into()))
}

/// Set, update or delete environment variables. Changes apply on the next deploy.
#[utoipa::path(post, path = "/v1/projects/{id}/env", tag = "env",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = SetEnv, responses((status = 200, body = EnvView)))]
async fn set(
    auth: Auth<DeployScope>,
    State(env): State<Env>,
    Path(id): Path<String>,
    Json(request): Json<SetEnv>,
) -> ApiResult<Json<EnvView>> {
    if request.vars.is_empty() {
        return Err(crate::error::Error::Invalid(
            "`vars` is empty; pass at least one KEY".to_owned(),
        )
        .into());
    }
    let mut changes = BTreeMap::new();
    for (key, value) in request.vars {
        let key = EnvKey::parse(&key)?;
        let change = match value {
            EnvValue::Plain(None) => EnvChange::Remove,
            EnvValue::Plain(Some(value)) => EnvChange::Set {
                value,
                secret: None,
            },
            EnvValue::Detailed { value, secret } => EnvChange::Set { value, secret },
        };
        changes.insert(key, change);
    }
    Ok(Json(env.set(&auth.actor, id, changes).await?.into()))
}
