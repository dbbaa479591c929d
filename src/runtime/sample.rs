//! One resource sample of a container: raw cumulative counters and current gauges. Rates
//! are computed by the caller from two samples, over its own interval.

/// A container's cumulative counters and current gauges at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    /// CPU time the container has used, in nanoseconds, since it started.
    pub cpu_total_ns: u64,
    /// CPU time of the whole host, in nanoseconds, read at the same moment (the
    /// denominator `docker stats` uses).
    pub system_cpu_ns: u64,
    /// CPUs the host has online.
    pub online_cpus: u32,
    /// The CPU limit, in cores, when one is set.
    pub cpu_limit_cores: Option<f64>,
    /// Memory in use without the reclaimable page cache, as `docker stats` shows it.
    pub memory_working_set_bytes: u64,
    /// The memory limit (the host's memory when none is set).
    pub memory_limit_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// How often the runtime restarted the container after it exited.
    pub restart_count: u64,
}
