//! One resource sample of a container from the engine's stats API (one-shot, so the engine
//! answers at once instead of waiting a second for a second reading) plus the restart
//! count and CPU limit from inspect. Raw cumulative counters only: rates are computed by
//! the caller from two samples, over its own interval.

use bollard::{
    models::{ContainerBlkioStats, ContainerMemoryStats, ContainerStatsResponse},
    query_parameters::StatsOptions,
};
use futures_util::StreamExt;

use super::Engine;
use crate::runtime::{ContainerSample, RuntimeError};

impl Engine {
    /// Samples one running container: its stats (one-shot) and, concurrently, its
    /// restart count and CPU limit.
    pub async fn sample(&self, id: &str) -> Result<ContainerSample, RuntimeError> {
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
        sample.restart_count = details
            .restart_count
            .and_then(|count| u64::try_from(count).ok())
            .unwrap_or(0);
        sample.cpu_limit_cores = details
            .host_config
            .and_then(|host| host.nano_cpus)
            .filter(|&nano| nano > 0)
            .map(|nano| nano as f64 / 1e9);
        Ok(sample)
    }
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
