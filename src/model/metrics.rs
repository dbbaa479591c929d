//! Metric points as stored: one instance's or one project's edge figures over one
//! point's interval.

/// One instance's figures over one point's interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstancePoint {
    pub project_id: String,
    /// The container id's first 12 characters, as the instances listing shows it.
    pub instance_id: String,
    /// Start of the point, in Unix seconds.
    pub at: i64,
    /// CPU used, in percent of one core (200 = two cores busy); `None` for an instance's
    /// first sample, which has nothing to compare with.
    pub cpu_percent: Option<f64>,
    /// CPU used, in percent of the instance's CPU limit (its size).
    pub cpu_limit_percent: Option<f64>,
    /// Working set without page cache, in bytes.
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Restarts of the instance during the point.
    pub restarts: u64,
    /// The preview the instance runs; `None` for production.
    pub preview_id: Option<String>,
    /// The project's service the container runs; `None` for the app's instances.
    pub service: Option<String>,
}

/// One project's edge figures over one point's interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgePoint {
    pub project_id: String,
    pub at: i64,
    pub requests: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Latency histogram counts, bucket by bucket (`edge::metrics` bounds).
    pub latency: Vec<u64>,
    /// Set for a preview's hostname's figures; `None` for production's hostnames.
    pub preview_id: Option<String>,
}

impl EdgePoint {
    /// Adds `other`'s counts to this point's.
    pub fn add(&mut self, other: &EdgePoint) {
        self.requests += other.requests;
        for (mine, theirs) in self.status.iter_mut().zip(other.status) {
            *mine += theirs;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }
}
