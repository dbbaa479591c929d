//! `/v1/projects/:id/metrics` (series and a current summary as JSON, or the Prometheus
//! text format with `Accept: text/plain`) and `/metrics` (Prometheus, every project of the
//! token's account; or, on the optional `metrics_listen` listener, of every account).

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Router,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    clock, duration,
    metrics::{
        self, prometheus::CONTENT_TYPE, InstanceNow, InstancePoint, Report, SeriesPoint, Window,
    },
};

use super::{
    auth::{AdminScope, Auth, ReadScope},
    error::{ApiResult, Json, Path, Query},
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(project_metrics))
        .routes(routes!(scrape))
}

/// The router of the `metrics_listen` listener: `GET /metrics` for every project, no
/// token (the config only allows a loopback address for it).
pub fn unauthenticated_router(app: ApiState) -> Router {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(scrape_installation))
        .split_for_parts();
    router.with_state(app)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// How far back: a duration (`30s`, `10m`, `1h`, `1d`, `1w`) or an RFC 3339 time.
    /// Default `1h`; at most the one-minute retention (`metrics.coarse_retention_days`).
    pub since: Option<String>,
    /// Width of each point: a multiple of the sampling interval (`10s`) within the fine
    /// retention (1 h), or a multiple of `1m`. Default: the finest that gives ≤ 360 points.
    pub step: Option<String>,
    /// A preview of the project (`prv_...`): its instances and hostname instead of
    /// production's. JSON only.
    pub preview: Option<String>,
}

/// Request and latency figures of the edge over a point (or the window).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointView {
    pub at: String,
    /// CPU used, percent of one core, summed over instances (200 = two cores).
    pub cpu_percent: Option<f64>,
    /// CPU used, percent of the instances' size limit.
    pub cpu_limit_percent: Option<f64>,
    /// Working set without page cache, summed over instances.
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub restarts: u64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<&SeriesPoint> for PointView {
    fn from(point: &SeriesPoint) -> Self {
        Self {
            at: timestamp(point.at),
            cpu_percent: point.cpu_percent.map(round),
            cpu_limit_percent: point.cpu_limit_percent.map(round),
            memory_bytes: point.memory_bytes,
            memory_limit_bytes: point.memory_limit_bytes,
            network_rx_bytes: point.net_rx_bytes,
            network_tx_bytes: point.net_tx_bytes,
            block_read_bytes: point.block_read_bytes,
            block_write_bytes: point.block_write_bytes,
            restarts: point.restarts,
            requests: point.edge.requests,
            requests_per_second: round(point.requests_per_second),
            status_1xx: point.edge.status[0],
            status_2xx: point.edge.status[1],
            status_3xx: point.edge.status[2],
            status_4xx: point.edge.status[3],
            status_5xx: point.edge.status[4],
            bytes_in: point.edge.bytes_in,
            bytes_out: point.edge.bytes_out,
            p50_ms: point.p50_ms.map(round),
            p95_ms: point.p95_ms.map(round),
            p99_ms: point.p99_ms.map(round),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancePointView {
    pub at: String,
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub restarts: u64,
}

impl From<&InstancePoint> for InstancePointView {
    fn from(point: &InstancePoint) -> Self {
        Self {
            at: timestamp(point.at),
            cpu_percent: point.cpu_percent.map(round),
            cpu_limit_percent: point.cpu_limit_percent.map(round),
            memory_bytes: point.memory_bytes,
            memory_limit_bytes: point.memory_limit_bytes,
            network_rx_bytes: point.net_rx_bytes,
            network_tx_bytes: point.net_tx_bytes,
            block_read_bytes: point.block_read_bytes,
            block_write_bytes: point.block_write_bytes,
            restarts: point.restarts,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSeriesView {
    /// The instance id, as `GET /v1/projects/:id/instances` lists it (a service's container
    /// id for a service).
    pub id: String,
    /// The service the container runs; null for the app's instances.
    #[schema(example = "redis")]
    pub service: Option<String>,
    pub series: Vec<InstancePointView>,
}

/// One instance's latest sample.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceNowView {
    pub id: String,
    /// The service the container runs; null for the app's instances.
    pub service: Option<String>,
    pub sampled_at: String,
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Totals since the instance started.
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub restart_count: u64,
}

impl From<&InstanceNow> for InstanceNowView {
    fn from(now: &InstanceNow) -> Self {
        Self {
            id: now.instance_id.clone(),
            service: now.service.clone(),
            sampled_at: timestamp(now.sampled_at),
            cpu_percent: now.cpu_percent.map(round),
            cpu_limit_percent: now.cpu_limit_percent.map(round),
            cpu_limit_cores: now.cpu_limit_cores,
            memory_bytes: now.memory_bytes,
            memory_limit_bytes: now.memory_limit_bytes,
            network_rx_bytes: now.net_rx_bytes_total,
            network_tx_bytes: now.net_tx_bytes_total,
            block_read_bytes: now.block_read_bytes_total,
            block_write_bytes: now.block_write_bytes_total,
            restart_count: now.restart_count,
        }
    }
}

/// The instances' latest sample, and the edge's totals over the window.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummaryView {
    /// When the instances were last sampled; null when none runs.
    pub sampled_at: Option<String>,
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// Over the last minute.
    pub requests_per_second: f64,
    /// The rest are totals over the window.
    pub requests: u64,
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub restarts: u64,
    pub instances: Vec<InstanceNowView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsView {
    pub project_id: String,
    /// The preview reported on, when `preview` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_id: Option<String>,
    /// The window and step, normalised (`1h`, `1m`).
    pub since: String,
    pub step: String,
    /// Start of the first and of the last point.
    pub from: String,
    pub to: String,
    pub summary: SummaryView,
    /// The project's figures, one point per step, oldest first; gaps have null gauges
    /// and zero counters.
    pub series: Vec<PointView>,
    /// Each instance's figures over the window.
    pub instances: Vec<InstanceSeriesView>,
}

impl From<Report> for MetricsView {
    fn from(report: Report) -> Self {
        let summary = &report.summary;
        Self {
            project_id: report.project_id.clone(),
            preview_id: report.preview_id.clone(),
            since: duration::format_secs(report.window.since_secs as u64),
            step: duration::format_secs(report.window.step_secs as u64),
            from: timestamp(report.from),
            to: timestamp(report.to),
            summary: SummaryView {
                sampled_at: summary.sampled_at.map(timestamp),
                cpu_percent: summary.cpu_percent.map(round),
                cpu_limit_percent: summary.cpu_limit_percent.map(round),
                memory_bytes: summary.memory_bytes,
                memory_limit_bytes: summary.memory_limit_bytes,
                requests_per_second: round(summary.requests_per_second),
                requests: summary.edge.requests,
                status_1xx: summary.edge.status[0],
                status_2xx: summary.edge.status[1],
                status_3xx: summary.edge.status[2],
                status_4xx: summary.edge.status[3],
                status_5xx: summary.edge.status[4],
                bytes_in: summary.edge.bytes_in,
                bytes_out: summary.edge.bytes_out,
                p50_ms: summary.p50_ms.map(round),
                p95_ms: summary.p95_ms.map(round),
                p99_ms: summary.p99_ms.map(round),
                restarts: summary.restarts,
                instances: summary
                    .instances
                    .iter()
                    .map(InstanceNowView::from)
                    .collect(),
            },
            series: report.series.iter().map(PointView::from).collect(),
            instances: report
                .instances
                .iter()
                .map(|instance| InstanceSeriesView {
                    id: instance.instance_id.clone(),
                    service: instance.service.clone(),
                    series: instance
                        .points
                        .iter()
                        .map(InstancePointView::from)
                        .collect(),
                })
                .collect(),
        }
    }
}

/// CPU, memory, network, block I/O and restarts of the project's instances, and
/// requests, status classes, bytes and latency percentiles from the edge: a series over
/// `since` in steps of `step`, and a current summary; production's, or with `preview`
/// only that preview's. With `Accept: text/plain` the live figures of production in the
/// Prometheus text format instead.
#[utoipa::path(get, path = "/v1/projects/{id}/metrics", tag = "metrics",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "project id"), MetricsQuery),
    responses(
        (status = 200, description = "the series and summary as JSON, or the Prometheus text format with `Accept: text/plain`",
            content((MetricsView = "application/json"), (String = "text/plain"))),
        (status = 400, description = "a bad `since` or `step` (the message lists the accepted forms), or `preview` with `Accept: text/plain`", body = super::error::ErrorBody)))]
async fn project_metrics(
    auth: Auth<ReadScope>,
    State(app): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<MetricsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if wants_text(&headers) {
        if query.preview.is_some() {
            // Ownership first, so another account's preview answers 404 as everywhere.
            app.metrics
                .check_preview(&auth.actor, id, query.preview)
                .await?;
            return Err(crate::error::Error::BadRequest(
                "the Prometheus text format covers production only; drop `preview`, or ask for JSON (`Accept: application/json`) to see a preview's figures".to_owned(),
            )
            .into());
        }
        let text = app.metrics.project_exposition(&auth.actor, id).await?;
        return Ok(prometheus_response(text));
    }
    let window = Window::parse(
        query.since.as_deref(),
        query.step.as_deref(),
        &app.config.metrics,
        metrics::unix_now(),
    )?;
    let report = app
        .metrics
        .report(&auth.actor, id, query.preview, window)
        .await?;
    Ok(Json(MetricsView::from(report)).into_response())
}

/// Every project of the token's account in the Prometheus text format, for a scraper
/// (`authorization: credentials` with an admin token).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn scrape(auth: Auth<AdminScope>, State(app): State<ApiState>) -> ApiResult<Response> {
    let text = app.metrics.account_exposition(&auth.actor).await?;
    Ok(prometheus_response(text))
}

/// Every project of every account in the Prometheus text format (the `metrics_listen`
/// listener only).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn scrape_installation(State(app): State<ApiState>) -> ApiResult<Response> {
    let text = app.metrics.installation_exposition().await?;
    Ok(prometheus_response(text))
}

fn prometheus_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// True when the client asks for a text format (Prometheus sends `text/plain` or
/// `application/openmetrics-text`) and not for JSON.
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    (accept.contains("text/plain") || accept.contains("application/openmetrics-text"))
        && !accept.contains("application/json")
}

fn timestamp(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .map(clock::format)
        .unwrap_or_default()
}

/// Two decimals are plenty for percentages, rates and milliseconds.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_chosen_only_when_asked_for_without_json() {
        for (accept, text) in [
            ("text/plain", true),
            ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", true),
            ("application/openmetrics-text;version=1.0.0", true),
            ("application/json", false),
            ("application/json, text/plain, */*", false),
            ("*/*", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, accept.parse().unwrap());
            assert_eq!(wants_text(&headers), text, "{accept}");
        }
    }
}
