//! `GET /v1/projects/:id/logs`: a project's runtime logs (production's, or one preview's
//! with `preview`) by time window and filters, or followed live over Server-Sent Events
//! (resumable with `Last-Event-ID`).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    clock,
    error::Error,
    logs::{self, FollowFrom, LineFilter, LogQuery, RuntimeLine},
};

use super::{
    auth::{Auth, ReadScope},
    error::{ApiResult, Json, Path, Query},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(read))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Lines at or after this time: RFC 3339 (`2026-01-02T15:04:05Z`) or a window before
    /// now (`30s`, `10m`, `2h`, `1d`).
    pub since: Option<String>,
    /// Lines before this time, in the same forms. Not with `follow`.
    pub until: Option<String>,
    /// The most lines returned (the newest of the window); default 500, at most 5000
    /// unless configured otherwise.
    #[param(minimum = 1, maximum = 5000)]
    pub limit: Option<u32>,
    /// Only this instance's lines (its id), or `edge` for the edge's access lines.
    pub instance: Option<String>,
    /// Only `stdout`, `stderr` or `edge` lines.
    pub stream: Option<String>,
    /// Only lines containing this text (case-sensitive).
    pub q: Option<String>,
    /// Stream the window, then new lines as they come, as Server-Sent Events (the same as
    /// `Accept: text/event-stream`).
    pub follow: Option<bool>,
    /// A preview of the project (`prv_...`): its lines instead of production's.
    pub preview: Option<String>,
    /// Only this service's lines (`GET /v1/projects/{id}/services`).
    pub service: Option<String>,
}

/// One runtime log line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLineView {
    /// The line's position in the log; the SSE event id, for `Last-Event-ID`.
    #[schema(example = 1042)]
    pub id: i64,
    /// When the line was written: RFC 3339 UTC with nanoseconds.
    #[schema(example = "2026-01-02T15:04:05.123456789Z")]
    pub at: String,
    /// The instance that wrote it, or `edge`.
    #[schema(example = "k3j9xq")]
    pub instance: String,
    /// The process type: `web`, `edge`, or `service` for a service's line.
    #[schema(example = "web")]
    pub process: String,
    /// The service that wrote it; null for the app's lines.
    #[schema(example = "redis")]
    pub service: Option<String>,
    /// `stdout`, `stderr` or `edge`.
    #[schema(example = "stdout")]
    pub stream: String,
    #[schema(example = "listening on :8080")]
    pub line: String,
}

impl From<&RuntimeLine> for LogLineView {
    fn from(line: &RuntimeLine) -> Self {
        Self {
            id: line.seq,
            at: clock::format_nanos(line.at_ns),
            instance: line.instance.clone(),
            process: line.process.clone(),
            service: line.service.clone(),
            stream: line.stream.as_str().to_owned(),
            line: line.text.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogList {
    /// Oldest first.
    pub lines: Vec<LogLineView>,
    /// True when older lines of the window were left out by `limit`.
    pub truncated: bool,
}

impl LogParams {
    fn query(&self, app: &ApiState) -> Result<LogQuery, Error> {
        let now = clock::now_nanos();
        let since_ns = self
            .since
            .as_deref()
            .map(|value| logs::parse_time_bound("since", value, now))
            .transpose()?;
        let until_ns = self
            .until
            .as_deref()
            .map(|value| logs::parse_time_bound("until", value, now))
            .transpose()?;
        let max = app.config.logs.max_limit;
        let limit = self.limit.unwrap_or(app.config.logs.default_limit);
        if limit == 0 || limit > max {
            return Err(Error::BadRequest(format!(
                "`limit` must be between 1 and {max}, got {limit}"
            )));
        }
        Ok(LogQuery {
            since_ns,
            until_ns,
            limit,
            filter: LineFilter {
                preview_id: self.preview.clone(),
                instance: self
                    .instance
                    .as_deref()
                    .map(logs::parse_instance)
                    .transpose()?,
                stream: self.stream.as_deref().map(logs::parse_stream).transpose()?,
                contains: self.q.as_deref().map(logs::parse_contains).transpose()?,
                service: self
                    .service
                    .as_deref()
                    .map(|name| {
                        crate::names::ServiceName::parse(name)
                            .map(|name| name.to_string())
                            .map_err(|err| Error::BadRequest(format!("`service`: {err}")))
                    })
                    .transpose()?,
            },
        })
    }
}

/// Whether the client asked for an event stream.
fn wants_stream(headers: &HeaderMap, follow: Option<bool>) -> bool {
    follow.unwrap_or(false)
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"))
}

/// Stream or page the project's runtime logs: what its instances write to stdout and
/// stderr, and the edge's access lines (`stream=edge`); production's, or with `preview`
/// only that preview's. Without `follow`, the newest
/// `limit` lines of the window, oldest first. With `follow=true` or
/// `Accept: text/event-stream`, the same lines and then new ones as `log` events, each with
/// an `id`; a reconnect with `Last-Event-ID` resumes after that line.
#[utoipa::path(get, path = "/v1/projects/{id}/logs", tag = "logs",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "project id"), LogParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "with a stream: resume after this line")),
    responses(
        (status = 200, description = "the newest lines of the window; with `follow` or `Accept: text/event-stream`, an SSE stream of `log` events (data: one line as in `lines`)",
            content((LogList = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "a bad `since`, `until`, `limit`, `instance`, `stream` or `q`", body = super::error::ErrorBody)))]
async fn read(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let query = params.query(&app)?;
    if !wants_stream(&headers, params.follow) {
        let page = app.logs.read(&auth.actor, id, query).await?;
        return Ok(Json(LogList {
            lines: page.lines.iter().map(LogLineView::from).collect(),
            truncated: page.truncated,
        })
        .into_response());
    }
    if params.until.is_some() {
        return Err(Error::BadRequest(
            "`until` cannot be combined with a live stream; drop `until`, or read without `follow`"
                .to_owned(),
        )
        .into());
    }
    let from = match headers.get("last-event-id") {
        None => FollowFrom::Window,
        Some(value) => FollowFrom::After(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    Error::BadRequest(
                        "`Last-Event-ID` must be the id of a log event (a whole number)".to_owned(),
                    )
                })?,
        ),
    };
    let lines = app.logs.follow(&auth.actor, id, query, from).await?;
    let events = ReceiverStream::new(lines).map(|line| Ok::<_, Infallible>(event_of(&line)));
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(10))
                .text("heartbeat"),
        )
        .into_response())
}

fn event_of(line: &Arc<RuntimeLine>) -> Event {
    Event::default()
        .id(line.seq.to_string())
        .event("log")
        .json_data(LogLineView::from(line.as_ref()))
        .unwrap_or_else(|_| Event::default().comment("unserializable line"))
}
