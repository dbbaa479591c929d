//! One resource sample of a container: from its cgroup files when this process can read
//! them (`cgroup`; the restart count and CPU limit from one inspect, repeated only when
//! the container restarts), otherwise from the engine's stats API (one-shot, so the
//! engine answers at once instead of waiting a second for a second reading) plus inspect.
//! Raw cumulative counters only: rates are computed by the caller from two samples, over
//! its own interval.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use bollard::{
    models::{
        ContainerBlkioStats, ContainerInspectResponse, ContainerMemoryStats, ContainerStatsResponse,
    },
    query_parameters::StatsOptions,
};
use futures_util::StreamExt;

use super::{
    cgroup::{KernelFiles, Located},
    Engine,
};
use crate::runtime::{ContainerSample, RuntimeError};

/// What the kernel's files cannot tell about a container, from the engine's inspect; read
/// again only when the container's init process changes (a restart).
#[derive(Debug, Clone)]
struct Known {
    /// `None` when the kernel's files do not show the container: ask the engine.
    located: Option<Located>,
    restart_count: u64,
    cpu_limit_cores: Option<f64>,
    /// When a sample last used it, so entries of removed containers are dropped.
    used: Instant,
}

/// Entries unused this long belong to removed containers (samples come every 60 s at most).
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// The kernel's files and what inspect told about each container sampled from them.
#[derive(Debug, Default)]
pub(super) struct KernelSampler {
    files: KernelFiles,
    known: Mutex<HashMap<String, Known>>,
}

enum FromKernel {
    Sampled(ContainerSample),
    /// The container's init process changed: inspect it again.
    Restarted,
    /// The kernel's files do not show it: ask the engine.
    NotVisible,
}

impl Engine {
    /// Samples one running container: from its cgroup and `/proc` when this process can
    /// read them (see `cgroup`), otherwise from the engine's stats API.
    pub async fn sample(&self, id: &str) -> Result<ContainerSample, RuntimeError> {
        for _ in 0..2 {
            match self.sample_from_kernel(id).await? {
                FromKernel::Sampled(sample) => return Ok(sample),
                FromKernel::Restarted => continue,
                FromKernel::NotVisible => break,
            }
        }
        self.sample_from_engine(id).await
    }

    /// The kernel's files for a container, inspecting it first when it is new or was
    /// restarted since the last sample.
    async fn sample_from_kernel(&self, id: &str) -> Result<FromKernel, RuntimeError> {
        let sampler = &self.kernel;
        let cached = {
            let mut known = sampler.known.lock().unwrap_or_else(|p| p.into_inner());
            known.get_mut(id).map(|entry| {
                entry.used = Instant::now();
                entry.clone()
            })
        };
        let (known, fresh) = match cached {
            Some(known) => (known, false),
            None => {
                let details = self.client.inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                );
                let details = details.await?;
                let pid = details
                    .state
                    .as_ref()
                    .and_then(|state| state.pid)
                    .and_then(|pid| u32::try_from(pid).ok())
                    .unwrap_or(0);
                let (restart_count, cpu_limit_cores) = inspected(&details);
                let full_id = details.id.unwrap_or_else(|| id.to_owned());
                let files = sampler.files.clone();
                let located = tokio::task::spawn_blocking(move || files.locate(&full_id, pid))
                    .await
                    .ok()
                    .flatten();
                let known = Known {
                    located,
                    restart_count,
                    cpu_limit_cores,
                    used: Instant::now(),
                };
                let mut all = sampler.known.lock().unwrap_or_else(|p| p.into_inner());
                all.retain(|_, entry| entry.used.elapsed() < FORGET_AFTER);
                all.insert(id.to_owned(), known.clone());
                (known, true)
            }
        };
        let Some(located) = known.located.clone() else {
            return Ok(FromKernel::NotVisible);
        };
        let files = sampler.files.clone();
        let id_owned = id.to_owned();
        let read = tokio::task::spawn_blocking(move || {
            // A fresh location was just checked; a cached one may be a previous run's.
            if !fresh && !files.still_runs(&id_owned, &located) {
                return None;
            }
            Some(files.read(&located))
        })
        .await
        .map_err(|err| RuntimeError::Engine(format!("sampling container {id}: {err}")))?;
        match read {
            Some(Ok(mut sample)) => {
                sample.restart_count = known.restart_count;
                sample.cpu_limit_cores = known.cpu_limit_cores;
                Ok(FromKernel::Sampled(sample))
            }
            Some(Err(err)) => {
                // Unreadable files stay unreadable: this container is sampled through the
                // engine from now on.
                tracing::debug!(container = %id, error = %err, "reading a container's cgroup; asking the engine");
                if let Some(entry) = self
                    .kernel
                    .known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(id)
                {
                    entry.located = None;
                }
                Ok(FromKernel::NotVisible)
            }
            None => {
                self.forget_sampled(id);
                Ok(FromKernel::Restarted)
            }
        }
    }

    fn forget_sampled(&self, id: &str) {
        self.kernel
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Samples one running container through the engine's API: its stats (one-shot) and,
    /// concurrently, its restart count and CPU limit.
    pub async fn sample_from_engine(&self, id: &str) -> Result<ContainerSample, RuntimeError> {
        let stats = async {
            let mut stream = self.client.stats(
                id,
                Some(StatsOptions {
                    stream: false,
                    one_shot: true,
                }),
            );
            match stream.next().await {
                Some(Ok(stats)) => Ok(stats),
                Some(Err(err)) => Err(RuntimeError::from(err)),
                None => Err(RuntimeError::Engine(format!(
                    "the engine sent no stats for container {id}"
                ))),
            }
        };
        let inspect = self.client.inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        );
        let (stats, details) = tokio::join!(stats, inspect);
        let details = details?;
        let mut sample = sample_of(&stats?);
        (sample.restart_count, sample.cpu_limit_cores) = inspected(&details);
        Ok(sample)
    }

    /// Whether the last sample of container `id` came from the kernel's files; for tests.
    pub fn sampled_from_kernel(&self, id: &str) -> bool {
        self.kernel
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|known| known.located.is_some())
    }
}

/// The restart count and the CPU limit (in cores) of an inspected container.
fn inspected(details: &ContainerInspectResponse) -> (u64, Option<f64>) {
    (
        details
            .restart_count
            .and_then(|count| u64::try_from(count).ok())
            .unwrap_or(0),
        details
            .host_config
            .as_ref()
            .and_then(|host| host.nano_cpus)
            .filter(|&nano| nano > 0)
            .map(|nano| nano as f64 / 1e9),
    )
}

/// The counters of one stats answer.
fn sample_of(stats: &ContainerStatsResponse) -> ContainerSample {
    let cpu = stats.cpu_stats.as_ref();
    let memory = stats.memory_stats.as_ref();
    let (net_rx_bytes, net_tx_bytes) = stats
        .networks
        .as_ref()
        .map(|networks| {
            networks.values().fold((0u64, 0u64), |(rx, tx), network| {
                (
                    rx.saturating_add(network.rx_bytes.unwrap_or(0)),
                    tx.saturating_add(network.tx_bytes.unwrap_or(0)),
                )
            })
        })
        .unwrap_or_default();
    let (block_read_bytes, block_write_bytes) = block_io(stats.blkio_stats.as_ref());
    ContainerSample {
        cpu_total_ns: cpu
            .and_then(|cpu| cpu.cpu_usage.as_ref())
            .and_then(|usage| usage.total_usage)
            .unwrap_or(0),
        system_cpu_ns: cpu.and_then(|cpu| cpu.system_cpu_usage).unwrap_or(0),
        online_cpus: online_cpus(stats),
        cpu_limit_cores: None,
        memory_working_set_bytes: memory.map(working_set).unwrap_or(0),
        memory_limit_bytes: memory.and_then(|memory| memory.limit).unwrap_or(0),
        net_rx_bytes,
        net_tx_bytes,
        block_read_bytes,
        block_write_bytes,
        restart_count: 0,
    }
}

/// Online CPUs as `docker stats` finds them: the reported count, else the length of the
/// per-CPU list (older engines), else one.
fn online_cpus(stats: &ContainerStatsResponse) -> u32 {
    let cpu = stats.cpu_stats.as_ref();
    cpu.and_then(|cpu| cpu.online_cpus)
        .filter(|&n| n > 0)
        .or_else(|| {
            cpu.and_then(|cpu| cpu.cpu_usage.as_ref())
                .and_then(|usage| usage.percpu_usage.as_ref())
                .and_then(|per_cpu| u32::try_from(per_cpu.len()).ok())
                .filter(|&n| n > 0)
        })
        .unwrap_or(1)
}

/// Memory usage without the page cache, exactly as the docker CLI computes it
/// (`calculateMemUsageUnixNoCache`): on cgroup v1 subtract `total_inactive_file`, on
/// cgroup v2 `inactive_file`, each only when smaller than the usage.
pub(crate) fn working_set(memory: &ContainerMemoryStats) -> u64 {
    let usage = memory.usage.unwrap_or(0);
    let stats = memory.stats.as_ref();
    if let Some(&inactive) = stats.and_then(|stats| stats.get("total_inactive_file")) {
        if inactive < usage {
            return usage - inactive;
        }
    }
    if let Some(&inactive) = stats.and_then(|stats| stats.get("inactive_file")) {
        if inactive < usage {
            return usage - inactive;
        }
    }
    usage
}

/// Bytes read and written, summed over devices, as `docker stats` shows them (the op is
/// `Read`/`Write` on cgroup v1 and `read`/`write` on cgroup v2).
fn block_io(blkio: Option<&ContainerBlkioStats>) -> (u64, u64) {
    let Some(entries) = blkio.and_then(|blkio| blkio.io_service_bytes_recursive.as_ref()) else {
        return (0, 0);
    };
    entries.iter().fold((0u64, 0u64), |(read, write), entry| {
        let value = entry.value.unwrap_or(0);
        match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => (read.saturating_add(value), write),
            Some("write") => (read, write.saturating_add(value)),
            _ => (read, write),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ContainerSample {
        sample_of(&serde_json::from_str(json).unwrap())
    }

    /// Trimmed from a real answer of Docker 20.10 on cgroup v1.
    const CGROUP_V1: &str = r#"{
        "read": "2026-11-29T11:39:34.987365476Z", "preread": "0001-01-01T00:00:00Z",
        "blkio_stats": { "io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 4096},
            {"major": 8, "minor": 0, "op": "Write", "value": 8192},
            {"major": 8, "minor": 0, "op": "Sync", "value": 12288},
            {"major": 8, "minor": 0, "op": "Total", "value": 12288},
            {"major": 8, "minor": 16, "op": "Read", "value": 1}
        ]},
        "cpu_stats": { "cpu_usage": { "total_usage": 979324225, "percpu_usage": [559552571, 419771654] },
                       "system_cpu_usage": 19229600000000, "online_cpus": 2 },
        "precpu_stats": { "cpu_usage": { "total_usage": 0 } },
        "memory_stats": { "usage": 46264320, "limit": 536870912,
            "stats": { "cache": 4096, "inactive_file": 4096, "total_inactive_file": 1000000, "rss": 42692608 } },
        "networks": { "eth0": { "rx_bytes": 1500, "tx_bytes": 700 }, "eth1": { "rx_bytes": 10, "tx_bytes": 20 } }
    }"#;

    #[test]
    fn cgroup_v1_subtracts_total_inactive_file_and_sums_devices_and_networks() {
        let sample = parse(CGROUP_V1);
        assert_eq!(sample.memory_working_set_bytes, 46264320 - 1000000);
        assert_eq!(sample.memory_limit_bytes, 536870912);
        assert_eq!(
            (sample.block_read_bytes, sample.block_write_bytes),
            (4097, 8192)
        );
        assert_eq!((sample.net_rx_bytes, sample.net_tx_bytes), (1510, 720));
        assert_eq!(
            (
                sample.cpu_total_ns,
                sample.system_cpu_ns,
                sample.online_cpus
            ),
            (979324225, 19229600000000, 2)
        );
    }

    #[test]
    fn cgroup_v2_subtracts_inactive_file() {
        let sample = parse(
            r#"{ "memory_stats": { "usage": 5000, "limit": 9000,
                    "stats": { "inactive_file": 1200, "anon": 3000 } },
                 "blkio_stats": { "io_service_bytes_recursive": [
                    {"major": 254, "minor": 0, "op": "read", "value": 10},
                    {"major": 254, "minor": 0, "op": "write", "value": 20} ] },
                 "cpu_stats": { "cpu_usage": { "total_usage": 5, "percpu_usage": [1, 2, 2] } } }"#,
        );
        assert_eq!(sample.memory_working_set_bytes, 3800);
        assert_eq!(
            (sample.block_read_bytes, sample.block_write_bytes),
            (10, 20)
        );
        assert_eq!(sample.online_cpus, 3, "falls back to the per-CPU list");
    }

    #[test]
    fn inactive_file_at_or_above_usage_is_not_subtracted() {
        for (usage, stats, expected) in [
            (100, r#"{"total_inactive_file": 100}"#, 100),
            (
                100,
                r#"{"total_inactive_file": 150, "inactive_file": 30}"#,
                70,
            ),
            (100, r#"{"inactive_file": 100}"#, 100),
            (100, r#"{}"#, 100),
        ] {
            let memory: ContainerMemoryStats =
                serde_json::from_str(&format!(r#"{{"usage": {usage}, "stats": {stats}}}"#))
                    .unwrap();
            assert_eq!(working_set(&memory), expected, "{stats}");
        }
    }

    #[test]
    fn a_container_without_networks_or_io_samples_zero() {
        let sample = parse("{}");
        assert_eq!(
            sample,
            ContainerSample {
                online_cpus: 1,
                ..ContainerSample::default()
            }
        );
    }
}
