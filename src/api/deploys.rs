//! Deploys: trigger (plain or streamed over SSE), list, fetch, cancel, replay events, and
//! plan without deploying.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures_util::{stream, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    deploy::{self, planning, Deploy, LogLine},
    source::{GitRef, RepoLocation},
};

use super::{
    auth::{Auth, DeployScope, ReadScope},
    error::{ApiResult, Json, OptionalJson, Path, Query},
    projects::ListQuery,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(create_streamed))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(events))
        .routes(routes!(plan))
        .routes(routes!(rollback))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollback {
    /// The deploy to re-release; default the one that served before the current release.
    pub deploy_id: Option<String>,
}

/// Re-release an earlier deploy's image and env snapshot, without a rebuild, through the
/// same zero-downtime path; recorded as a new deploy.
#[utoipa::path(post, path = "/v1/projects/{id}/rollback", tag = "deploys",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body(content = Option<Rollback>, description = "optional"),
    responses((status = 202, body = DeployCreated)))]
async fn rollback(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Rollback>,
) -> ApiResult<(StatusCode, Json<DeployCreated>)> {
    let request = body.unwrap_or_default();
    let deploy = app
        .deploys
        .rollback(&auth.actor, id, request.deploy_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(DeployCreated::from(&deploy))))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeploy {
    /// A branch, tag or commit; default the connected branch's head.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// For a project whose source is an image: a tag or `sha256:` digest of the connected
    /// repository (or a full reference of it) to deploy instead of the connected tag.
    #[schema(example = "1.5", max_length = 512)]
    pub image: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployCreated {
    #[schema(example = "dep_77c1")]
    pub deploy_id: String,
    #[schema(example = "queued")]
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployView {
    pub id: String,
    pub project_id: String,
    /// queued, building, releasing, running, failed, canceled or superseded.
    pub status: String,
    /// What queued it: `api`, `cli`, `webhook`, `rollback`, or `restore` (the daemon
    /// rebuilding the live release after the engine lost its image or the disk its site:
    /// a state restored onto a new server).
    #[schema(example = "api")]
    pub trigger: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit_sha: Option<String>,
    pub commit_message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub plan: Option<serde_json::Value>,
    pub image: Option<String>,
    /// The step that failed: fetch, plan, build or release.
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub building_at: Option<String>,
    pub releasing_at: Option<String>,
    pub finished_at: Option<String>,
    /// For a rollback: the deploy it re-released.
    pub rollback_of: Option<String>,
    /// The preview this deploy releases; null for the project's production release.
    pub preview_id: Option<String>,
    /// For an image source: the digest the deploy pulled and released (`sha256:...`).
    pub image_digest: Option<String>,
    /// How the deploy ended besides its status: `unchanged` (status `canceled`) when the
    /// image it pulled is what already serves, so nothing was deployed.
    pub outcome: Option<String>,
}

impl From<&Deploy> for DeployCreated {
    fn from(deploy: &Deploy) -> Self {
        Self {
            deploy_id: deploy.id.clone(),
            status: deploy.status.as_str().to_owned(),
        }
    }
}

impl From<Deploy> for DeployView {
    fn from(deploy: Deploy) -> Self {
        Self {
            id: deploy.id,
            project_id: deploy.project_id,
            status: deploy.status.as_str().to_owned(),
            trigger: deploy.trigger,
            git_ref: deploy.git_ref,
            commit_sha: deploy.commit_sha,
            commit_message: deploy.commit_message,
            plan: deploy.plan,
            image: deploy.image,
            failed_step: deploy.failed_step,
            error: deploy.error,
            created_at: deploy.created_at,
            building_at: deploy.building_at,
            releasing_at: deploy.releasing_at,
            finished_at: deploy.finished_at,
            rollback_of: deploy.rollback_of,
            preview_id: deploy.preview_id,
            image_digest: deploy.image_digest,
            outcome: deploy.outcome,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployList {
    pub deploys: Vec<DeployView>,
    pub next_cursor: Option<String>,
}

/// The ref (a git project) or image tag or digest (an image project) the deploy asks for.
async fn requested_ref(
    app: &ApiState,
    actor: &crate::accounts::Actor,
    project_id: &str,
    request: &CreateDeploy,
) -> Result<Option<String>, crate::error::Error> {
    match (&request.git_ref, &request.image) {
        (Some(_), Some(_)) => Err(crate::error::Error::Invalid(
            "send `ref` (a git project) or `image` (an image project), not both".to_owned(),
        )),
        (None, Some(image)) => app
            .image_sources
            .selector(actor, project_id.to_owned(), image)
            .await
            .map(Some),
        (git_ref, None) => git_ref
            .as_deref()
            .map(|r| GitRef::parse(r).map(|r| r.as_str().to_owned()))
            .transpose(),
    }
}

/// Trigger a deploy of the project's current source.
#[utoipa::path(post, path = "/v1/projects/{id}/deploy", tag = "deploys",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body(content = Option<CreateDeploy>, description = "optional"),
    responses((status = 202, body = DeployCreated)))]
async fn create(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CreateDeploy>,
) -> ApiResult<(StatusCode, Json<DeployCreated>)> {
    let request = body.unwrap_or_default();
    let git_ref = requested_ref(&app, &auth.actor, &id, &request).await?;
    let deploy = app.deploys.enqueue(&auth.actor, id, git_ref, "api").await?;
    Ok((StatusCode::ACCEPTED, Json(DeployCreated::from(&deploy))))
}

/// Trigger a deploy and stream its build and release log as Server-Sent Events:
/// `status`, `log` and a final `done`, each with an `id`. Disconnecting does not cancel.
/// `Content-Location` names the deploy's events URL, where a client that lost the stream
/// resumes with `Last-Event-ID`.
#[utoipa::path(post, path = "/v1/projects/{id}/deploy/stream", tag = "deploys",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "project id")),
    request_body(content = Option<CreateDeploy>, description = "optional"),
    responses((status = 200, description = "an SSE stream of the deploy", content_type = "text/event-stream",
        headers(("Content-Location" = String, description = "`/v1/deploys/{deployId}/events`: the same events, resumable with `Last-Event-ID`")))))]
async fn create_streamed(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CreateDeploy>,
) -> ApiResult<Response> {
    let request = body.unwrap_or_default();
    let git_ref = requested_ref(&app, &auth.actor, &id, &request).await?;
    let deploy = app.deploys.enqueue(&auth.actor, id, git_ref, "api").await?;
    let events_url = format!("/v1/deploys/{}/events", deploy.id);
    let mut response = sse(&app, deploy.id, 0).into_response();
    if let Ok(value) = HeaderValue::from_str(&events_url) {
        response
            .headers_mut()
            .insert(header::CONTENT_LOCATION, value);
    }
    Ok(response)
}

/// List the project's deploys, newest first.
#[utoipa::path(get, path = "/v1/projects/{id}/deploys", tag = "deploys",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "project id"), ListQuery),
    responses((status = 200, body = DeployList)))]
async fn list(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<DeployList>> {
    let page = deploy::list(&app.store, &auth.actor, id, query.page(&app)?).await?;
    Ok(Json(DeployList {
        deploys: page.items.into_iter().map(DeployView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Fetch one deploy: status, ref, commit, plan, image, timings, error.
#[utoipa::path(get, path = "/v1/deploys/{id}", tag = "deploys",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "deploy id")),
    responses((status = 200, body = DeployView)))]
async fn get(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeployView>> {
    Ok(Json(deploy::get(&app.store, &auth.actor, id).await?.into()))
}

/// Cancel a queued or running deploy; the previous release keeps serving.
#[utoipa::path(post, path = "/v1/deploys/{id}/cancel", tag = "deploys",
    security(("bearer" = ["deploy"])), params(("id" = String, Path, description = "deploy id")),
    responses((status = 200, body = DeployView), (status = 409, description = "already finished", body = super::error::ErrorBody)))]
async fn cancel(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeployView>> {
    Ok(Json(app.deploys.cancel(&auth.actor, id).await?.into()))
}

/// Replay a deploy's events from the start, or from `Last-Event-ID`, then follow it live.
#[utoipa::path(get, path = "/v1/deploys/{id}/events", tag = "deploys",
    security(("bearer" = ["read"])), params(("id" = String, Path, description = "deploy id")),
    responses((status = 200, description = "an SSE stream of the deploy", content_type = "text/event-stream")))]
async fn events(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let deploy = deploy::get(&app.store, &auth.actor, id).await?;
    let after = resume_after(headers.get("last-event-id").map(|v| v.as_bytes()));
    Ok(sse(&app, deploy.id, after).into_response())
}

/// The sequence number a client's `Last-Event-ID` resumes after: the ids this stream
/// sends are non-negative integers, so anything else (absent, not UTF-8, not a number,
/// negative) replays from the start rather than failing the reconnect.
pub fn resume_after(last_event_id: Option<&[u8]>) -> i64 {
    last_event_id
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .unwrap_or(0)
}

fn event_of(line: &LogLine) -> Event {
    let event = Event::default().id(line.seq.to_string());
    match line.kind.as_str() {
        "status" => {
            let mut words = line.text.splitn(2, ' ');
            let status = words.next().unwrap_or_default();
            let detail = words.next();
            event.event("status").json_data(serde_json::json!({
                "status": status,
                "detail": detail,
                "at": line.at,
            }))
        }
        _ => event
            .event("log")
            .json_data(serde_json::json!({ "line": line.text, "at": line.at })),
    }
    .unwrap_or_else(|_| Event::default().comment("unserializable line"))
}

/// The SSE stream of a deploy: replay, live lines, then `done` with the final status.
fn sse(
    app: &ApiState,
    deploy_id: String,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let lines = ReceiverStream::new(app.deploys.follow(deploy_id.clone(), after));
    let app = app.clone();
    let events = lines
        .map(|line| Ok(event_of(&line)))
        .chain(stream::once(async move {
            let (final_status, outcome) = deploy::get_unscoped(&app.store, deploy_id)
                .await
                .map(|d| (d.status.as_str().to_owned(), d.outcome))
                .unwrap_or_else(|_| ("unknown".to_owned(), None));
            Ok(Event::default()
                .event("done")
                .json_data(serde_json::json!({ "status": final_status, "outcome": outcome }))
                .unwrap_or_default())
        }));
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(10))
            .text("heartbeat"),
    )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanRequest {
    /// Plan this project's connected repository (with its runtime hint, env and hostnames).
    pub project_id: Option<String>,
    /// Or plan any repository: https URL, `owner/name`, local path or `file://` URL
    /// (under the same rules as connecting one: `POST /v1/projects/{id}/git`).
    pub repo: Option<String>,
    /// A branch, tag or commit; default the connected branch (or `main`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// Compute the deploy plan for a source without executing it: what would be built, how it
/// would be wired, and the resources it would need.
#[utoipa::path(post, path = "/v1/deploy/plan", tag = "deploys",
    security(("bearer" = ["deploy"])), request_body = PlanRequest,
    responses((status = 200, body = planning::DeployPlan),
        (status = 403, description = "the token lacks the scope, or the operator has not allowed this account repositories on the server's disk", body = super::error::ErrorBody),
        (status = 409, description = "the local path leads into a repository another account's project uses", body = super::error::ErrorBody)))]
async fn plan(
    auth: Auth<DeployScope>,
    State(app): State<ApiState>,
    Json(request): Json<PlanRequest>,
) -> ApiResult<Json<planning::DeployPlan>> {
    let target = planning::PlanTarget {
        project_id: request.project_id,
        repo: request
            .repo
            .as_deref()
            .map(RepoLocation::parse)
            .transpose()?,
        git_ref: request.git_ref.as_deref().map(GitRef::parse).transpose()?,
    };
    Ok(Json(app.deploys.plan(&auth.actor, target).await?))
}

#[cfg(test)]
mod tests {
    use super::resume_after;

    #[test]
    fn last_event_id_resumes_after_a_non_negative_sequence_number_only() {
        let check = |header: Option<&[u8]>, expected: i64| {
            assert_eq!(resume_after(header), expected, "{header:?}");
        };
        check(None, 0);
        check(Some(b"17"), 17);
        check(Some(b" 17 "), 17);
        check(Some(b"-3"), 0);
        check(Some(b"abc"), 0);
        check(Some(b""), 0);
        check(Some(b"\xff\xfe"), 0);
        check(Some(b"99999999999999999999"), 0);
    }
}
