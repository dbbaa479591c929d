//! The collector: every `metrics.interval_secs`, on wall-clock multiples of it, samples
//! each instance of this installation (Docker stats, one-shot) and each project's and
//! preview's edge counters, turns them into one point per instance and per project (rates and deltas
//! against the previous sample), and stores them in one transaction that also refreshes
//! the current minute's rolled-up point and, once a minute, prunes what is past retention.
//! Invariant: it never blocks the edge (it reads the edge's atomics) and never runs two
//! ticks at once; a tick that fails is logged and the next one starts afresh.

use std::{collections::HashMap, future::Future, time::Duration};

use futures_util::StreamExt;

use crate::{
    edge::ProjectMetrics,
    labels::{Filter, Kind, Labels},
    runtime::ContainerSample,
    store::{self, metrics::MINUTE},
};

use super::{unix_now, EdgePoint, InstanceNow, InstancePoint, Metrics};

/// Containers sampled at once: enough to hide the engine's latency, few enough not to
/// flood it.
const CONCURRENT_SAMPLES: usize = 8;

/// What the previous tick saw, to turn cumulative counters into per-interval figures.
#[derive(Debug, Default)]
pub struct Collector {
    containers: HashMap<String, ContainerSample>,
    edge: HashMap<String, ProjectMetrics>,
}

/// Runs the collector until `stopped` completes. Does nothing when metrics are disabled.
/// It gets only the metrics service's handle.
pub async fn run(metrics: Metrics, stopped: impl Future<Output = ()>) {
    if !metrics.config.enabled {
        return;
    }
    let interval = metrics.config.interval_secs as i64;
    let mut collector = Collector::default();
    tokio::pin!(stopped);
    loop {
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let interval_ms = i128::from(interval) * 1000;
        let next_ms = (now_ms / interval_ms + 1) * interval_ms;
        let wait = Duration::from_millis(u64::try_from(next_ms - now_ms).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stopped => break,
        }
        // The point covers the interval that just ended and is named by its start.
        let at = i64::try_from(next_ms / 1000).unwrap_or(0) - interval;
        if let Err(err) = collector.tick(&metrics, at).await {
            tracing::warn!(error = %err, "collecting metrics");
        }
    }
}

impl Collector {
    /// Samples everything once and stores the points of the interval starting at `at`.
    pub async fn tick(&mut self, metrics: &Metrics, at: i64) -> crate::error::Result<()> {
        let interval = metrics.config.interval_secs as i64;
        let edges = self.edge_points(metrics, at);
        let instances = match metrics.runtime.ready().await {
            Ok(()) => self.instance_points(metrics, at).await,
            // No engine (yet): the edge's figures still count.
            Err(_) => Vec::new(),
        };
        let fine_keep = metrics.config.fine_retention_mins as i64 * 60;
        let coarse_keep = metrics.config.coarse_retention_days as i64 * 86_400;
        metrics
            .points
            .write(move |tx| {
                store::metrics::insert(tx, interval, &instances, &edges)?;
                if interval < MINUTE {
                    store::metrics::roll_up_minute(tx, interval, at.div_euclid(MINUTE) * MINUTE)?;
                }
                if (at + interval) % MINUTE == 0 {
                    let now = at + interval;
                    let fine_before = if interval < MINUTE {
                        now - fine_keep
                    } else {
                        now - coarse_keep
                    };
                    store::metrics::prune(tx, interval, fine_before, now - coarse_keep)?;
                }
                Ok(())
            })
            .await
    }

    /// Each project's (and each preview's, on its own) edge figures since the previous
    /// tick; those without traffic store nothing (a missing point reads as zero requests).
    fn edge_points(&mut self, metrics: &Metrics, at: i64) -> Vec<EdgePoint> {
        let mut points = Vec::new();
        // Counters are kept by project id, or by preview id for a preview's hostname.
        let owners = metrics
            .edge
            .project_ids()
            .into_iter()
            .map(|project_id| (project_id.clone(), project_id, None))
            .chain(
                metrics
                    .edge
                    .previews()
                    .into_iter()
                    .map(|(preview_id, project_id)| {
                        (preview_id.clone(), project_id, Some(preview_id))
                    }),
            );
        for (key, project_id, preview_id) in owners {
            let now = metrics.edge.snapshot(&key);
            let delta = match self.edge.get(&key) {
                Some(before) => now.since(before),
                None => now.clone(),
            };
            self.edge.insert(key, now);
            if delta.requests == 0 && delta.bytes_in == 0 && delta.bytes_out == 0 {
                continue;
            }
            points.push(EdgePoint {
                project_id,
                preview_id,
                at,
                requests: delta.requests,
                status: [
                    delta.status_1xx,
                    delta.status_2xx,
                    delta.status_3xx,
                    delta.status_4xx,
                    delta.status_5xx,
                ],
                bytes_in: delta.bytes_in,
                bytes_out: delta.bytes_out,
                latency: delta.latency_counts.to_vec(),
            });
        }
        points
    }

    /// One point per running instance of this installation; also publishes the latest
    /// samples to the hub for reports and Prometheus.
    async fn instance_points(&mut self, metrics: &Metrics, at: i64) -> Vec<InstancePoint> {
        let engine = &metrics.runtime;
        let containers = match engine
            .containers_matching(&Filter::new().installation(&metrics.installation))
            .await
        {
            Ok(containers) => containers,
            Err(err) => {
                tracing::warn!(error = %err, "listing instances to sample");
                return Vec::new();
            }
        };
        // Each running instance with its owner: the project, the preview it runs, and the
        // service for a service's container.
        type Owner = (String, Option<String>, Option<String>);
        let running: Vec<(String, Owner)> = containers
            .into_iter()
            .filter(|c| c.state == "running")
            .filter_map(|c| {
                let labels = Labels::parse(&c.labels);
                // Instances of every process type (web and workers) and services' containers,
                // not one-off containers.
                if !matches!(labels.kind, Some(Kind::Web | Kind::Worker | Kind::Service)) {
                    return None;
                }
                Some((c.id, (labels.project?, labels.preview, labels.service)))
            })
            .collect();
        let samples: Vec<(String, Owner, ContainerSample)> = futures_util::stream::iter(running)
            .map(|(id, owner)| async move {
                match engine.sample(&id).await {
                    Ok(sample) => Some((id, owner, sample)),
                    // Stopped between the listing and the sample: nothing to report.
                    Err(err) => {
                        tracing::debug!(container = %id, error = %err, "sampling an instance");
                        None
                    }
                }
            })
            .buffer_unordered(CONCURRENT_SAMPLES)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let sampled_at = unix_now();
        let mut points = Vec::with_capacity(samples.len());
        let mut latest = Vec::with_capacity(samples.len());
        let mut seen = HashMap::with_capacity(samples.len());
        for (id, (project_id, preview_id, service), sample) in samples {
            let previous = self.containers.get(&id);
            let (mut point, mut now) = figures(&id, project_id, at, sampled_at, &sample, previous);
            point.preview_id.clone_from(&preview_id);
            now.preview_id = preview_id;
            point.service.clone_from(&service);
            now.service = service;
            points.push(point);
            latest.push(now);
            seen.insert(id, sample);
        }
        // Containers that are gone are forgotten, so the map stays as large as what runs.
        self.containers = seen;
        latest
            .sort_by(|a, b| (&a.project_id, &a.instance_id).cmp(&(&b.project_id, &b.instance_id)));
        metrics.hub.replace(latest);
        points
    }
}

/// The point and the latest figures of one container from its sample and the previous
/// one (`None` on its first tick).
fn figures(
    container_id: &str,
    project_id: String,
    at: i64,
    sampled_at: i64,
    sample: &ContainerSample,
    previous: Option<&ContainerSample>,
) -> (InstancePoint, InstanceNow) {
    let instance_id: String = container_id.chars().take(12).collect();
    let cpu_percent = previous.and_then(|before| {
        let used = sample.cpu_total_ns.checked_sub(before.cpu_total_ns)?;
        let host = sample.system_cpu_ns.checked_sub(before.system_cpu_ns)?;
        // `docker stats`'s formula: the share of the host's CPU time, scaled to cores.
        (host > 0).then(|| used as f64 / host as f64 * f64::from(sample.online_cpus) * 100.0)
    });
    let limit_cores = sample
        .cpu_limit_cores
        .unwrap_or_else(|| f64::from(sample.online_cpus.max(1)));
    let cpu_limit_percent = cpu_percent.map(|cpu| cpu / limit_cores);
    let grown = |now: u64, before: Option<u64>| match before {
        Some(before) if now >= before => now - before,
        // The counter restarted with the container: all of it is new.
        Some(_) => now,
        None => 0,
    };
    let point = InstancePoint {
        project_id: project_id.clone(),
        instance_id: instance_id.clone(),
        at,
        cpu_percent,
        cpu_limit_percent,
        memory_bytes: Some(sample.memory_working_set_bytes),
        memory_limit_bytes: Some(sample.memory_limit_bytes),
        net_rx_bytes: grown(sample.net_rx_bytes, previous.map(|p| p.net_rx_bytes)),
        net_tx_bytes: grown(sample.net_tx_bytes, previous.map(|p| p.net_tx_bytes)),
        block_read_bytes: grown(
            sample.block_read_bytes,
            previous.map(|p| p.block_read_bytes),
        ),
        block_write_bytes: grown(
            sample.block_write_bytes,
            previous.map(|p| p.block_write_bytes),
        ),
        restarts: grown(sample.restart_count, previous.map(|p| p.restart_count)),
        preview_id: None,
        service: None,
    };
    let now = InstanceNow {
        project_id,
        instance_id,
        sampled_at,
        cpu_percent,
        cpu_limit_percent,
        cpu_limit_cores: sample.cpu_limit_cores,
        cpu_seconds_total: sample.cpu_total_ns as f64 / 1e9,
        memory_bytes: sample.memory_working_set_bytes,
        memory_limit_bytes: sample.memory_limit_bytes,
        net_rx_bytes_total: sample.net_rx_bytes,
        net_tx_bytes_total: sample.net_tx_bytes,
        block_read_bytes_total: sample.block_read_bytes,
        block_write_bytes_total: sample.block_write_bytes,
        restart_count: sample.restart_count,
        preview_id: None,
        service: None,
    };
    (point, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu_ns: u64, system_ns: u64, rx: u64, restarts: u64) -> ContainerSample {
        ContainerSample {
            cpu_total_ns: cpu_ns,
            system_cpu_ns: system_ns,
            online_cpus: 2,
            cpu_limit_cores: Some(0.5),
            memory_working_set_bytes: 1000,
            memory_limit_bytes: 4000,
            net_rx_bytes: rx,
            restart_count: restarts,
            ..ContainerSample::default()
        }
    }

    #[test]
    fn cpu_is_a_share_of_the_host_scaled_to_cores_and_to_the_limit() {
        // Over 10 s of a 2-core host (20 s of host CPU time), the container used 2.5 s:
        // a quarter of one core, half of its 0.5-core limit.
        let before = sample(1_000_000_000, 100_000_000_000, 100, 0);
        let after = sample(3_500_000_000, 120_000_000_000, 350, 0);
        let (point, now) = figures(
            "0123456789abcdef",
            "prj".into(),
            50,
            60,
            &after,
            Some(&before),
        );
        assert_eq!(point.instance_id, "0123456789ab");
        assert_eq!(point.cpu_percent, Some(25.0));
        assert_eq!(point.cpu_limit_percent, Some(50.0));
        assert_eq!(point.net_rx_bytes, 250);
        assert_eq!(
            (point.memory_bytes, point.memory_limit_bytes),
            (Some(1000), Some(4000))
        );
        assert_eq!(now.cpu_seconds_total, 3.5);
    }

    #[test]
    fn a_first_sample_has_no_rate_and_a_restart_counts_from_zero() {
        let first = sample(5, 5, 700, 0);
        let (point, _) = figures("c", "prj".into(), 0, 0, &first, None);
        assert_eq!(
            (point.cpu_percent, point.net_rx_bytes, point.restarts),
            (None, 0, 0)
        );
        let restarted = sample(1, 10, 40, 1);
        let (point, _) = figures("c", "prj".into(), 10, 10, &restarted, Some(&first));
        assert_eq!(
            point.cpu_percent, None,
            "CPU time went backwards: no figure"
        );
        assert_eq!((point.net_rx_bytes, point.restarts), (40, 1));
    }
}
