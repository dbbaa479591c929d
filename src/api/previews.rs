//! `/v1/projects/:id/previews`: preview deployments of branches, pull requests and refs;
//! create (or update in place), list, fetch and delete.

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    error::Error,
    names::EnvKey,
    previews::{PreviewInfo, PreviewRequest, PreviewSource},
    source::GitRef,
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, Path},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
}

/// A preview as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    #[schema(example = "prv_3kTq9ZbW1xYpLm0aVc7D")]
    pub id: String,
    pub project_id: String,
    /// `building` (nothing serves yet), `updating` (the previous deploy serves while a
    /// new one builds), `running` or `failed`.
    #[schema(example = "running")]
    pub status: String,
    /// `<branch-slug>--<name>-<handle>.<base_domain>`.
    #[schema(example = "feature-login--blog-ann.apps.example.com")]
    pub hostname: String,
    #[schema(example = "https://feature-login--blog-ann.apps.example.com")]
    pub url: String,
    /// The branch it follows; null for a preview of a tag or a commit.
    pub branch: Option<String>,
    /// The branch, tag or commit asked for.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub pull_request: Option<u32>,
    /// The commit that serves (or, before the first release, the one being built).
    pub commit_sha: Option<String>,
    /// The newest deploy of the preview and its status.
    pub deploy_id: Option<String>,
    pub deploy_status: Option<String>,
    /// `api` or `webhook`.
    pub trigger: String,
    /// The keys of the preview's env overrides; values are never shown.
    pub env_keys: Vec<String>,
    /// Idle seconds (no new deploy) before the preview is removed.
    pub ttl_secs: u64,
    pub created_at: String,
    /// The last create or update of the preview.
    pub updated_at: String,
    pub expires_at: String,
}

impl From<PreviewInfo> for PreviewView {
    fn from(info: PreviewInfo) -> Self {
        Self {
            commit_sha: info.commit_sha().map(str::to_owned),
            deploy_id: info.latest.as_ref().map(|d| d.id.clone()),
            deploy_status: info.latest.as_ref().map(|d| d.status.as_str().to_owned()),
            id: info.preview.id,
            project_id: info.preview.project_id,
            status: info.status.to_owned(),
            hostname: info.preview.hostname,
            url: info.url,
            branch: info.preview.branch,
            git_ref: info.preview.git_ref,
            pull_request: info.preview.pull_request,
            trigger: info.preview.trigger,
            env_keys: info.env_keys,
            ttl_secs: info.preview.ttl_secs,
            created_at: info.preview.created_at,
            updated_at: info.preview.updated_at,
            expires_at: info.preview.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewList {
    pub previews: Vec<PreviewView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"branch": "feature/login", "ttl": "3d"}))]
pub struct CreatePreview {
    /// The branch to preview (give `branch` or `ref`).
    #[schema(example = "feature/login")]
    pub branch: Option<String>,
    /// A branch, tag or commit to preview (give `branch` or `ref`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The pull request the preview belongs to; its `closed` event removes the preview.
    /// Pull request numbers start at 1; the server keeps them as unsigned 32-bit numbers.
    #[schema(minimum = 1, maximum = 4294967295_u32, format = Int64)]
    pub pull_request: Option<u32>,
    /// Env overrides on top of the project's env (production-only keys such as
    /// `DATABASE_URL` are never inherited); replaces earlier overrides when given.
    pub env: Option<BTreeMap<String, String>>,
    /// Idle time before the preview is removed: seconds, or a number with `s`, `m`, `h`
    /// or `d` (`"12h"`, `"7d"`); default `previews.default_ttl_secs`.
    #[schema(value_type = Option<String>, example = "3d")]
    pub ttl: Option<serde_json::Value>,
}

/// `3600`, `"3600"`, `"90s"`, `"30m"`, `"12h"` or `"7d"` as seconds.
fn parse_ttl(value: &serde_json::Value) -> Result<u64, Error> {
    let invalid = || {
        Error::Invalid(format!(
            "ttl {value} is invalid; give seconds or a number with s, m, h or d, such as \"12h\" or \"7d\""
        ))
    };
    match value {
        serde_json::Value::Number(number) => number.as_u64().ok_or_else(invalid),
        serde_json::Value::String(text) => {
            let text = text.trim();
            let (digits, unit) = match text.char_indices().last() {
                Some((at, unit)) if unit.is_ascii_alphabetic() => (&text[..at], unit),
                _ => (text, 's'),
            };
            let multiplier = match unit {
                's' => 1,
                'm' => 60,
                'h' => 60 * 60,
                'd' => 24 * 60 * 60,
                _ => return Err(invalid()),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            digits
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(multiplier))
                .ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

impl TryFrom<CreatePreview> for PreviewRequest {
    type Error = Error;

    fn try_from(request: CreatePreview) -> Result<Self, Error> {
        let source = match (&request.branch, &request.git_ref) {
            (Some(branch), None) => PreviewSource::Branch(GitRef::parse(branch)?),
            (None, Some(git_ref)) => PreviewSource::from_ref(GitRef::parse(git_ref)?)?,
            (Some(_), Some(_)) | (None, None) => return Err(Error::Invalid(
                "give exactly one of `branch` (a branch name) or `ref` (a branch, tag or commit)"
                    .to_owned(),
            )),
        };
        if request.pull_request == Some(0) {
            return Err(Error::Invalid(
                "pullRequest must be a pull request number (1 or more)".to_owned(),
            ));
        }
        let env = request
            .env
            .map(|vars| {
                vars.into_iter()
                    .map(|(key, value)| Ok((EnvKey::parse(&key)?, value)))
                    .collect::<Result<BTreeMap<_, _>, Error>>()
            })
            .transpose()?;
        Ok(PreviewRequest {
            source,
            pull_request: request.pull_request,
            env,
            ttl_secs: request.ttl.as_ref().map(parse_ttl).transpose()?,
            commit: None,
        })
    }
}

/// List the project's preview deployments.
#[utoipa::path(get, path = "/v1/projects/{id}/previews", tag = "previews",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id")),
    responses((status = 200, body = PreviewList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PreviewList>> {
    let found = app.previews.list(&auth.actor, id).await?;
    Ok(Json(PreviewList {
        previews: found.into_iter().map(PreviewView::from).collect(),
    }))
}

/// Create a preview deployment of a branch, pull request or ref: built and released as its
/// own containers at its own hostname. A preview of the same pull request, branch or ref
/// is updated in place instead (200). Beyond `previews.max_per_project`: 409.
#[utoipa::path(post, path = "/v1/projects/{id}/previews", tag = "previews",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body = CreatePreview,
    responses((status = 201, description = "created; its deploy is queued", body = PreviewView),
        (status = 200, description = "an existing preview is redeployed in place", body = PreviewView),
        (status = 409, description = "the project has as many previews as allowed", body = super::error::ErrorBody)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Json(request): Json<CreatePreview>,
) -> ApiResult<(StatusCode, Json<PreviewView>)> {
    let queued = app
        .previews
        .create_or_update(&auth.actor, id, request.try_into()?, "api")
        .await?;
    let status = if queued.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PreviewView::from(queued.info))))
}

/// Fetch one preview.
#[utoipa::path(get, path = "/v1/projects/{id}/previews/{previewId}", tag = "previews",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "project id"), ("previewId" = String, Path, description = "preview id")),
    responses((status = 200, body = PreviewView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path((id, preview_id)): Path<(String, String)>,
) -> ApiResult<Json<PreviewView>> {
    let found = app
        .previews
        .list(&auth.actor, id)
        .await?
        .into_iter()
        .find(|info| info.preview.id == preview_id)
        .ok_or_else(|| Error::NotFound(format!("preview `{preview_id}` not found")))?;
    Ok(Json(PreviewView::from(found)))
}

/// Tear a preview down: its containers, route, images, site files and certificate record.
#[utoipa::path(delete, path = "/v1/projects/{id}/previews/{previewId}", tag = "previews",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"), ("previewId" = String, Path, description = "preview id")),
    responses((status = 204, description = "removed")))]
async fn delete(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path((id, preview_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    app.previews.delete(&auth.actor, id, preview_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ttls() {
        let cases = [
            (json!(3600), Some(3600)),
            (json!("3600"), Some(3600)),
            (json!("90s"), Some(90)),
            (json!("30m"), Some(1800)),
            (json!("12h"), Some(43_200)),
            (json!("7d"), Some(604_800)),
            (json!("7w"), None),
            (json!("d"), None),
            (json!("-5"), None),
            (json!(-5), None),
            (json!(1.5), None),
            (json!("1.5h"), None),
            (json!(true), None),
            (json!("99999999999999999999d"), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_ttl(&value).ok(), expected, "{value}");
        }
    }
}
