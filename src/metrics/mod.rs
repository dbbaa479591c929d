//! Metrics: what a running project is doing. The collector (`collector`) samples every
//! instance's container stats and every project's edge counters each interval and stores
//! them as points; `report` reads them back as series over a window with a current
//! summary; `prometheus` renders the live figures in the Prometheus text format.
//! A preview's instances and edge traffic are sampled like production's but kept under the
//! preview: a report is production's or one preview's, never a mix.
//! `Metrics` is the service's handle: the store, the runtime, the latest samples, the
//! edge's counters and the `[metrics]` section.
//! Invariant: points are only read for a project (and preview) the caller may see, and the
//! series of a window is computed from stored points alone, so it survives daemon restarts.

pub mod collector;
pub mod prometheus;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use crate::{
    config::MetricsConfig,
    duration,
    edge::{
        metrics::{percentile_ms, LATENCY_BUCKETS},
        EdgeMetrics,
    },
    error::{Error, Result},
    model::{account::Actor, project::Project},
    runtime::Runtime,
    store::{self, metrics::MINUTE, Db, Store},
};

pub use crate::model::metrics::{EdgePoint, InstancePoint};

/// Percentiles need the edge's latency bucket bounds, so they are computed here rather
/// than with the point's data in `model`.
impl EdgePoint {
    fn percentile_ms(&self, quantile: f64) -> Option<f64> {
        let mut counts = [0u64; LATENCY_BUCKETS];
        for (slot, count) in counts.iter_mut().zip(&self.latency) {
            *slot = *count;
        }
        percentile_ms(&counts, quantile)
    }
}

/// An instance's latest sample: cumulative counters for Prometheus and the gauges of the
/// last interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceNow {
    pub project_id: String,
    pub instance_id: String,
    /// When it was sampled, in Unix seconds.
    pub sampled_at: i64,
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub cpu_seconds_total: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub net_rx_bytes_total: u64,
    pub net_tx_bytes_total: u64,
    pub block_read_bytes_total: u64,
    pub block_write_bytes_total: u64,
    pub restart_count: u64,
    /// The preview the instance runs; `None` for production.
    pub preview_id: Option<String>,
    /// The project's service the container runs; `None` for the app's instances.
    pub service: Option<String>,
}

/// The metrics service: a cheap-clone handle to what sampling, reports and Prometheus
/// text use. The collector task holds a clone of it.
#[derive(Clone)]
pub struct Metrics {
    /// All desired state: the projects and previews the points belong to.
    store: Store,
    /// `logs.db`, where the points are kept (`Store::open_logs`).
    points: Store,
    /// Where instances are sampled; it connects on first use.
    runtime: Runtime,
    /// This installation's id: only its own instances are sampled.
    installation: Arc<str>,
    /// The `[metrics]` section: the interval and the retention.
    config: MetricsConfig,
    /// The collector's latest instance samples.
    hub: Arc<MetricsHub>,
    /// The edge's per-project request counters (the edge counts; this service reads).
    edge: Arc<EdgeMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("installation", &self.installation)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The service with fresh edge counters and no samples yet.
    pub fn new(
        store: Store,
        points: Store,
        runtime: Runtime,
        installation: &str,
        config: MetricsConfig,
    ) -> Self {
        Self {
            store,
            points,
            runtime,
            installation: Arc::from(installation),
            config,
            hub: Arc::new(MetricsHub::default()),
            edge: Arc::new(EdgeMetrics::new()),
        }
    }

    /// The counters the edge keeps per project and preview, for the composition root to
    /// hand to the edge.
    pub fn edge_counters(&self) -> Arc<EdgeMetrics> {
        self.edge.clone()
    }

    /// The collector's latest sample of every instance.
    pub fn latest(&self) -> Arc<Vec<InstanceNow>> {
        self.hub.latest()
    }
}

/// The collector's latest samples, read by reports and Prometheus scrapes without
/// touching Docker. A std mutex: it is held only to swap or clone an `Arc`.
#[derive(Debug, Default)]
struct MetricsHub {
    latest: Mutex<Arc<Vec<InstanceNow>>>,
}

impl MetricsHub {
    fn latest(&self) -> Arc<Vec<InstanceNow>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace(&self, samples: Vec<InstanceNow>) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(samples);
    }
}

/// The window of a report: how far back, in steps of what width, read from which
/// resolution of stored points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since_secs: i64,
    pub step_secs: i64,
    /// The stored resolution the series is computed from: the fine interval or a minute.
    pub resolution: i64,
}

/// The most points one series may have, so a response stays small.
pub const MAX_POINTS: i64 = 1500;

impl Window {
    /// Validates `since` (a relative duration or an RFC 3339 time; default `1h`) and
    /// `step` (a duration; default: the finest step that keeps the series at 360 points
    /// or fewer) against what is stored. Every refusal says what is accepted.
    pub fn parse(
        since: Option<&str>,
        step: Option<&str>,
        config: &MetricsConfig,
        now: i64,
    ) -> Result<Self> {
        let interval = config.interval_secs as i64;
        let fine_keep = config.fine_retention_mins as i64 * 60;
        let coarse_keep = config.coarse_retention_days as i64 * 86_400;
        let since_secs = match since {
            None => 3600,
            Some(text) => parse_since(text, now)?,
        };
        if since_secs > coarse_keep {
            return Err(Error::BadRequest(format!(
                "`since` reaches back {}, but points are kept for {}; ask for {} or less",
                duration::format_secs(since_secs as u64),
                duration::format_secs(coarse_keep as u64),
                duration::format_secs(coarse_keep as u64),
            )));
        }
        let step_secs = match step {
            Some(text) => {
                let secs = duration::parse(text)
                    .map_err(|err| Error::BadRequest(format!("step: {err}")))?
                    .as_secs() as i64;
                if secs % interval != 0 {
                    return Err(Error::BadRequest(format!(
                        "step `{text}` is not a multiple of the sampling interval ({}); use {} or a multiple of it, or a multiple of 1m",
                        duration::format_secs(interval as u64),
                        duration::format_secs(interval as u64),
                    )));
                }
                secs
            }
            None => default_step(since_secs, interval, fine_keep),
        };
        if step_secs % MINUTE != 0 && since_secs > fine_keep {
            return Err(Error::BadRequest(format!(
                "steps finer than 1m are kept for {} only; use a step that is a multiple of 1m, or `since` of {} or less",
                duration::format_secs(fine_keep as u64),
                duration::format_secs(fine_keep as u64),
            )));
        }
        if step_secs > since_secs {
            return Err(Error::BadRequest(format!(
                "step ({}) is longer than the window ({}); use a shorter step",
                duration::format_secs(step_secs as u64),
                duration::format_secs(since_secs as u64),
            )));
        }
        if since_secs / step_secs > MAX_POINTS {
            return Err(Error::BadRequest(format!(
                "{} in steps of {} is more than {MAX_POINTS} points; use a larger step",
                duration::format_secs(since_secs as u64),
                duration::format_secs(step_secs as u64),
            )));
        }
        let resolution = if step_secs % MINUTE == 0 {
            MINUTE
        } else {
            interval
        };
        Ok(Self {
            since_secs,
            step_secs,
            resolution,
        })
    }
}

fn parse_since(text: &str, now: i64) -> Result<i64> {
    if let Ok(relative) = duration::parse(text) {
        return Ok(relative.as_secs() as i64);
    }
    let absolute = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            Error::BadRequest(format!(
                "since: `{}` is neither a duration nor an RFC 3339 time; use {}, or a time such as `2026-01-02T15:04:05Z`",
                text.chars().take(40).collect::<String>().escape_default(),
                duration::ACCEPTED_FORMS
            ))
        })?;
    let secs = now - absolute.unix_timestamp();
    if secs <= 0 {
        return Err(Error::BadRequest(
            "since: the time is in the future; give a time in the past".to_owned(),
        ));
    }
    Ok(secs)
}

/// The finest step (a multiple of the interval, or of a minute past the fine retention)
/// that keeps the series at 360 points or fewer.
fn default_step(since_secs: i64, interval: i64, fine_keep: i64) -> i64 {
    let unit = if since_secs <= fine_keep {
        interval
    } else {
        MINUTE
    };
    let wanted = (since_secs + 359) / 360;
    let step = ((wanted + unit - 1) / unit).max(1) * unit;
    // Past a minute, keep whole minutes so the coarse points line up.
    if step > MINUTE && step % MINUTE != 0 {
        (step + MINUTE - 1) / MINUTE * MINUTE
    } else {
        step
    }
}

/// A project's metrics over a window: production's, or one preview's.
#[derive(Debug, Clone)]
pub struct Report {
    pub project_id: String,
    pub preview_id: Option<String>,
    pub window: Window,
    /// Start of the first point and of the last, in Unix seconds.
    pub from: i64,
    pub to: i64,
    pub series: Vec<SeriesPoint>,
    pub instances: Vec<InstanceSeries>,
    pub summary: Summary,
}

/// The project's figures over one step: instance gauges summed across instances and
/// averaged over the step, counters summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesPoint {
    pub at: i64,
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub restarts: u64,
    pub edge: EdgePoint,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One instance's series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceSeries {
    pub instance_id: String,
    /// The service the container runs; `None` for the app's instances.
    pub service: Option<String>,
    pub points: Vec<InstancePoint>,
}

/// The current figures and the window's totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// When the instances were last sampled.
    pub sampled_at: Option<i64>,
    pub instances: Vec<InstanceNow>,
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// Requests per second over the last minute.
    pub requests_per_second: f64,
    /// Edge totals over the whole window.
    pub edge: EdgePoint,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub restarts: u64,
}

impl Metrics {
    /// The metrics of one project of the caller's account over `window`: its production
    /// instances and hostnames, or with `preview` only that preview's (another project's or
    /// account's preview answers 404).
    pub async fn report(
        &self,
        actor: &Actor,
        project_id: String,
        preview: Option<String>,
        window: Window,
    ) -> Result<Report> {
        let (project_id, preview_id) = target(&self.store, actor, project_id, preview).await?;
        let now = unix_now();
        let first = (now - window.since_secs).div_euclid(window.step_secs) * window.step_secs;
        let last = now.div_euclid(window.step_secs) * window.step_secs;
        let interval = self.config.interval_secs as i64;
        let id = project_id.clone();
        let preview = preview_id.clone();
        let (instance_points, edge_points, recent_edges) = self
            .points
            .call(move |c| {
                let preview = preview.as_deref();
                Ok((
                    store::metrics::instance_points(c, &id, preview, window.resolution, first)?,
                    store::metrics::edge_points(c, &id, preview, window.resolution, first)?,
                    store::metrics::edge_points(c, &id, preview, interval, now - MINUTE)?,
                ))
            })
            .await?;
        let (series, instances) = build_series(
            &instance_points,
            &edge_points,
            first,
            last,
            window.step_secs,
        );
        let live: Vec<InstanceNow> = self
            .latest()
            .iter()
            .filter(|sample| sample.project_id == project_id && sample.preview_id == preview_id)
            .cloned()
            .collect();
        let summary = summarize(live, &series, &recent_edges);
        Ok(Report {
            project_id,
            preview_id,
            window,
            from: first,
            to: last,
            series,
            instances,
            summary,
        })
    }

    /// Checks that `preview` (when given) is a preview of the actor's project, for callers
    /// that refuse a preview after that check (Prometheus text covers production only).
    pub async fn check_preview(
        &self,
        actor: &Actor,
        project_id: String,
        preview: Option<String>,
    ) -> Result<()> {
        target(&self.store, actor, project_id, preview)
            .await
            .map(|_| ())
    }
}

/// The account's project `id`; another account's answers exactly like a missing one, in
/// the words `projects` uses.
fn owned_project(db: &Db, account_id: &str, id: &str) -> Result<Project> {
    store::projects::by_id(db, account_id, id)?
        .ok_or_else(|| Error::NotFound(format!("project `{id}` not found")))
}

/// The project's id and, when `preview` is given, the preview's, once both are known to
/// be the actor's (another's answers exactly like a missing one, with the words
/// `projects` and `previews` use). The preview row is read from the store: metrics sit
/// below the previews service.
async fn target(
    store: &Store,
    actor: &Actor,
    project_id: String,
    preview: Option<String>,
) -> Result<(String, Option<String>)> {
    let account_id = actor.account_id.clone();
    store
        .call(move |c| {
            let project = owned_project(c, &account_id, &project_id)?;
            let Some(preview_id) = preview else {
                return Ok((project.id, None));
            };
            let preview = store::previews::by_id(c, &project.id, &preview_id)?
                .ok_or_else(|| Error::NotFound(format!("preview `{preview_id}` not found")))?;
            Ok((preview.project_id, Some(preview.id)))
        })
        .await
}

/// Folds stored points into one series point per step from `first` to `last`.
fn build_series(
    instance_points: &[InstancePoint],
    edge_points: &[EdgePoint],
    first: i64,
    last: i64,
    step: i64,
) -> (Vec<SeriesPoint>, Vec<InstanceSeries>) {
    let mut steps = Steps::gather(instance_points, edge_points, first, last, step);
    let series = (0..)
        .map(|n| first + n * step)
        .take_while(|bucket| *bucket <= last)
        .map(|bucket| steps.point(bucket, step))
        .collect();
    (series, instance_series(steps.per_instance))
}

/// Gauges summed across instances at one sample time (then averaged over the step).
#[derive(Default)]
struct AtSum {
    cpu: Option<f64>,
    cpu_limit: Vec<f64>,
    memory: Option<u64>,
    memory_limit: Option<u64>,
}

/// Stored points sorted into the steps (buckets) of a window; points outside it are left
/// out.
#[derive(Default)]
struct Steps<'a> {
    /// Gauges by bucket, then by sample time.
    by_time: BTreeMap<i64, BTreeMap<i64, AtSum>>,
    /// Counters summed across instances, by bucket.
    counters: BTreeMap<i64, InstancePoint>,
    /// Each instance's points, by bucket.
    per_instance: BTreeMap<&'a str, BTreeMap<i64, Vec<&'a InstancePoint>>>,
    /// Edge figures summed, by bucket.
    edges: BTreeMap<i64, EdgePoint>,
}

impl<'a> Steps<'a> {
    fn gather(
        instance_points: &'a [InstancePoint],
        edge_points: &[EdgePoint],
        first: i64,
        last: i64,
        step: i64,
    ) -> Self {
        let bucket_of = |at: i64| {
            let bucket = at.div_euclid(step) * step;
            (first..=last).contains(&bucket).then_some(bucket)
        };
        let mut steps = Self::default();
        for point in instance_points {
            if let Some(bucket) = bucket_of(point.at) {
                steps.add_instance(bucket, point);
            }
        }
        for point in edge_points {
            if let Some(bucket) = bucket_of(point.at) {
                steps.edges.entry(bucket).or_default().add(point);
            }
        }
        steps
    }

    fn add_instance(&mut self, bucket: i64, point: &'a InstancePoint) {
        let sum = self
            .by_time
            .entry(bucket)
            .or_default()
            .entry(point.at)
            .or_default();
        if let Some(cpu) = point.cpu_percent {
            *sum.cpu.get_or_insert(0.0) += cpu;
        }
        if let Some(limit) = point.cpu_limit_percent {
            sum.cpu_limit.push(limit);
        }
        if let Some(memory) = point.memory_bytes {
            *sum.memory.get_or_insert(0) += memory;
        }
        if let Some(limit) = point.memory_limit_bytes {
            *sum.memory_limit.get_or_insert(0) += limit;
        }
        let total = self.counters.entry(bucket).or_default();
        total.net_rx_bytes += point.net_rx_bytes;
        total.net_tx_bytes += point.net_tx_bytes;
        total.block_read_bytes += point.block_read_bytes;
        total.block_write_bytes += point.block_write_bytes;
        total.restarts += point.restarts;
        self.per_instance
            .entry(&point.instance_id)
            .or_default()
            .entry(bucket)
            .or_default()
            .push(point);
    }

    /// The series point of the step starting at `bucket` (a gap reads as no figure, not a
    /// zero).
    fn point(&mut self, bucket: i64, step: i64) -> SeriesPoint {
        let mut point = SeriesPoint {
            at: bucket,
            ..SeriesPoint::default()
        };
        if let Some(times) = self.by_time.get(&bucket) {
            point.cpu_percent = mean(times.values().filter_map(|s| s.cpu));
            point.cpu_limit_percent = mean(
                times
                    .values()
                    .filter_map(|s| mean(s.cpu_limit.iter().copied())),
            );
            point.memory_bytes =
                mean(times.values().filter_map(|s| s.memory.map(|m| m as f64))).map(|m| m as u64);
            point.memory_limit_bytes = mean(
                times
                    .values()
                    .filter_map(|s| s.memory_limit.map(|m| m as f64)),
            )
            .map(|m| m as u64);
        }
        if let Some(total) = self.counters.get(&bucket) {
            point.net_rx_bytes = total.net_rx_bytes;
            point.net_tx_bytes = total.net_tx_bytes;
            point.block_read_bytes = total.block_read_bytes;
            point.block_write_bytes = total.block_write_bytes;
            point.restarts = total.restarts;
        }
        if let Some(edge) = self.edges.remove(&bucket) {
            point.p50_ms = edge.percentile_ms(0.50);
            point.p95_ms = edge.percentile_ms(0.95);
            point.p99_ms = edge.percentile_ms(0.99);
            point.requests_per_second = edge.requests as f64 / step as f64;
            point.edge = edge;
        }
        point.edge.at = bucket;
        point
    }
}

/// Each instance's series: its points of a step averaged (gauges) or summed (counters).
fn instance_series(
    per_instance: BTreeMap<&str, BTreeMap<i64, Vec<&InstancePoint>>>,
) -> Vec<InstanceSeries> {
    per_instance
        .into_iter()
        .map(|(instance_id, buckets)| InstanceSeries {
            instance_id: instance_id.to_owned(),
            service: buckets
                .values()
                .flatten()
                .find_map(|point| point.service.clone()),
            points: buckets
                .into_iter()
                .map(|(at, points)| InstancePoint {
                    project_id: points[0].project_id.clone(),
                    instance_id: instance_id.to_owned(),
                    at,
                    cpu_percent: mean(points.iter().filter_map(|p| p.cpu_percent)),
                    cpu_limit_percent: mean(points.iter().filter_map(|p| p.cpu_limit_percent)),
                    memory_bytes: mean(
                        points
                            .iter()
                            .filter_map(|p| p.memory_bytes.map(|m| m as f64)),
                    )
                    .map(|m| m as u64),
                    memory_limit_bytes: points.iter().filter_map(|p| p.memory_limit_bytes).max(),
                    net_rx_bytes: points.iter().map(|p| p.net_rx_bytes).sum(),
                    net_tx_bytes: points.iter().map(|p| p.net_tx_bytes).sum(),
                    block_read_bytes: points.iter().map(|p| p.block_read_bytes).sum(),
                    block_write_bytes: points.iter().map(|p| p.block_write_bytes).sum(),
                    restarts: points.iter().map(|p| p.restarts).sum(),
                    preview_id: points[0].preview_id.clone(),
                    service: points[0].service.clone(),
                })
                .collect(),
        })
        .collect()
}

fn summarize(
    live: Vec<InstanceNow>,
    series: &[SeriesPoint],
    recent_edges: &[EdgePoint],
) -> Summary {
    let mut edge = EdgePoint::default();
    let mut restarts = 0;
    for point in series {
        edge.add(&point.edge);
        restarts += point.restarts;
    }
    let recent_requests: u64 = recent_edges.iter().map(|p| p.requests).sum();
    let has_live = !live.is_empty();
    Summary {
        sampled_at: live.iter().map(|s| s.sampled_at).max(),
        cpu_percent: live
            .iter()
            .filter_map(|s| s.cpu_percent)
            .fold(None, |sum, cpu| Some(sum.unwrap_or(0.0) + cpu)),
        cpu_limit_percent: mean(live.iter().filter_map(|s| s.cpu_limit_percent)),
        memory_bytes: has_live.then(|| live.iter().map(|s| s.memory_bytes).sum()),
        memory_limit_bytes: has_live.then(|| live.iter().map(|s| s.memory_limit_bytes).sum()),
        requests_per_second: recent_requests as f64 / MINUTE as f64,
        p50_ms: edge.percentile_ms(0.50),
        p95_ms: edge.percentile_ms(0.95),
        p99_ms: edge.percentile_ms(0.99),
        edge,
        restarts,
        instances: live,
    }
}

impl Metrics {
    /// Prometheus text of one project of the caller's account.
    pub async fn project_exposition(&self, actor: &Actor, project_id: String) -> Result<String> {
        let account_id = actor.account_id.clone();
        let project = self
            .store
            .call(move |c| owned_project(c, &account_id, &project_id))
            .await?;
        Ok(self.exposition(&[project]))
    }

    /// Prometheus text of every project of the caller's account.
    pub async fn account_exposition(&self, actor: &Actor) -> Result<String> {
        let account_id = actor.account_id.clone();
        let projects = self
            .store
            .call(move |c| {
                let mut all = store::projects::all(c)?;
                all.retain(|p| p.account_id == account_id);
                Ok(all)
            })
            .await?;
        Ok(self.exposition(&projects))
    }

    /// Prometheus text of every project of every account, for the operator's own listener.
    pub async fn installation_exposition(&self) -> Result<String> {
        let projects = self.store.call(|c| store::projects::all(c)).await?;
        Ok(self.exposition(&projects))
    }

    fn exposition(&self, projects: &[Project]) -> String {
        let labels: Vec<prometheus::ProjectLabels> = projects
            .iter()
            .map(|p| prometheus::ProjectLabels {
                id: p.id.clone(),
                handle: p.handle.to_string(),
                name: p.name.to_string(),
            })
            .collect();
        prometheus::render(&labels, &self.edge, &self.latest())
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0u32), |(sum, count), v| (sum + v, count + 1));
    (count > 0).then(|| sum / f64::from(count))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MetricsConfig {
        MetricsConfig::default()
    }

    fn window(since: Option<&str>, step: Option<&str>) -> Result<Window> {
        Window::parse(since, step, &config(), 1_000_000_000)
    }

    #[test]
    fn windows_pick_a_resolution_and_refuse_what_is_not_kept() {
        let ok = |since, step, expected: (i64, i64, i64)| {
            let w = window(since, step).unwrap();
            assert_eq!(
                (w.since_secs, w.step_secs, w.resolution),
                expected,
                "{since:?} {step:?}"
            );
        };
        ok(None, None, (3600, 10, 10));
        ok(Some("1h"), Some("1m"), (3600, 60, 60));
        ok(Some("10m"), Some("30s"), (600, 30, 10));
        ok(Some("1d"), None, (86_400, 240, 60));
        ok(Some("7d"), Some("1h"), (604_800, 3600, 60));
        ok(Some("2001-09-09T01:36:40Z"), Some("1m"), (600, 60, 60));
        for (since, step, needle) in [
            (Some("8d"), None, "kept for 1w"),
            (Some("2h"), Some("10s"), "multiple of 1m"),
            (Some("1h"), Some("15s"), "multiple of the sampling interval"),
            (Some("1h"), Some("2h"), "longer than the window"),
            (Some("7d"), Some("1m"), "more than 1500 points"),
            (Some("yesterday"), None, "RFC 3339"),
            (Some("1h"), Some("1.5m"), "not a duration"),
            (Some("2031-01-01T00:00:00Z"), None, "future"),
        ] {
            let err = window(since, step).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{err}");
            assert!(
                err.to_string().contains(needle),
                "{since:?} {step:?}: {err}"
            );
        }
    }

    fn instance(at: i64, id: &str, cpu: Option<f64>, memory: u64, rx: u64) -> InstancePoint {
        InstancePoint {
            project_id: "prj".into(),
            instance_id: id.into(),
            at,
            cpu_percent: cpu,
            cpu_limit_percent: cpu.map(|c| c * 2.0),
            memory_bytes: Some(memory),
            memory_limit_bytes: Some(1000),
            net_rx_bytes: rx,
            ..InstancePoint::default()
        }
    }

    #[test]
    fn series_sum_instances_average_over_steps_and_fill_gaps() {
        let points = [
            instance(0, "a", Some(10.0), 100, 1),
            instance(0, "b", Some(30.0), 300, 1),
            instance(10, "a", Some(20.0), 200, 1),
            instance(10, "b", None, 400, 1),
            instance(40, "a", Some(50.0), 500, 1),
        ];
        let edges = [
            EdgePoint {
                at: 10,
                requests: 4,
                status: [0, 3, 0, 1, 0],
                latency: vec![0, 4],
                ..EdgePoint::default()
            },
            EdgePoint {
                at: 20,
                requests: 2,
                status: [0, 2, 0, 0, 0],
                latency: vec![2],
                ..EdgePoint::default()
            },
        ];
        let (series, instances) = build_series(&points, &edges, 0, 60, 30);
        assert_eq!(series.len(), 3);
        // At 0: a+b = 40 %; at 10: only a reports CPU = 20 %; the step's mean is 30 %.
        assert_eq!(series[0].cpu_percent, Some(30.0));
        assert_eq!(series[0].memory_bytes, Some(500));
        assert_eq!(series[0].memory_limit_bytes, Some(2000));
        assert_eq!(series[0].net_rx_bytes, 4);
        assert_eq!(series[0].edge.requests, 6);
        assert_eq!(series[0].edge.status, [0, 5, 0, 1, 0]);
        assert_eq!(series[0].requests_per_second, 0.2);
        assert!(series[0].p50_ms.unwrap() <= 0.25);
        assert_eq!(series[1].cpu_percent, Some(50.0));
        assert_eq!(series[2].cpu_percent, None, "no samples: a gap, not a zero");
        assert_eq!(series[2].edge.requests, 0);
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].points[0].cpu_percent, Some(15.0));
        let summary = summarize(Vec::new(), &series, &edges);
        assert_eq!(summary.edge.requests, 6);
        assert_eq!(summary.requests_per_second, 0.1);
        assert_eq!(summary.memory_bytes, None);
    }

    /// The handle end to end on a real store and a fake runtime: a collector tick stores
    /// the edge's figures of production and of a preview apart, a report shows one or the
    /// other, and another account's project or preview answers 404.
    #[tokio::test]
    async fn a_tick_keeps_production_and_a_preview_apart_and_reports_only_the_callers() {
        let dir = tempfile::tempdir().unwrap();
        let (store, alice, bob) = crate::logs::fixtures::two_accounts(dir.path());
        let runtime: Runtime = Arc::new(crate::runtime::fake::FakeRuntime::default());
        let points = store.open_logs().unwrap();
        let metrics = Metrics::new(store, points, runtime, "inst", config());
        let edge = metrics.edge_counters();
        for _ in 0..3 {
            edge.project("prj_a")
                .record_response(200, std::time::Duration::from_millis(2));
        }
        edge.preview("prj_a", "prv_a")
            .record_response(503, std::time::Duration::from_millis(2));
        let interval = config().interval_secs as i64;
        let at = unix_now().div_euclid(interval) * interval - interval;
        collector::Collector::default()
            .tick(&metrics, at)
            .await
            .unwrap();

        let window = Window::parse(Some("10m"), None, &config(), unix_now()).unwrap();
        let production = metrics
            .report(&alice, "prj_a".into(), None, window)
            .await
            .unwrap();
        assert_eq!(production.summary.edge.requests, 3);
        assert_eq!(production.summary.edge.status, [0, 3, 0, 0, 0]);
        let preview = metrics
            .report(&alice, "prj_a".into(), Some("prv_a".into()), window)
            .await
            .unwrap();
        assert_eq!(preview.preview_id.as_deref(), Some("prv_a"));
        assert_eq!(preview.summary.edge.requests, 1);
        assert_eq!(preview.summary.edge.status, [0, 0, 0, 0, 1]);

        for (project, preview) in [
            ("prj_a", None),
            ("prj_a", Some("prv_a")),
            ("prj_b", Some("prv_a")),
        ] {
            let err = metrics
                .report(&bob, project.into(), preview.map(Into::into), window)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::NotFound(_)),
                "{project} {preview:?}: {err}"
            );
        }
        let err = metrics
            .check_preview(&alice, "prj_a".into(), Some("prv_b".into()))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::NotFound("preview `prv_b` not found".into()).to_string()
        );
        let text = metrics.account_exposition(&alice).await.unwrap();
        assert!(
            text.contains(r#"cantila_http_requests_total{project="prj_a",class="2xx"} 3"#),
            "{text}"
        );
        assert!(!text.contains("prj_b"), "{text}");
    }

    #[test]
    fn default_steps_keep_series_short() {
        for (since, expected) in [
            (600, 10),
            (3600, 10),
            (7200, 60),
            (86_400, 240),
            (604_800, 1680),
        ] {
            assert_eq!(default_step(since, 10, 3600), expected, "{since}");
        }
    }
}
