//! Containers as the runtime starts, lists and inspects them: what to start (instances,
//! workers, release commands), the volumes they mount, and what the runtime reports back.

use std::{collections::HashMap, net::IpAddr};

/// The container to start for an instance or a one-off command.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Overrides the image's CMD when set.
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    /// The network it joins (its release target's; see `networks::ensure`).
    pub network: String,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    /// Restart on crash (instances) or never (one-off commands).
    pub restart: bool,
    /// Named volumes to mount (the project's volumes; see `volumes::attach`).
    pub mounts: Vec<VolumeMount>,
    /// Gives the process a terminal (an interactive run); its output is then one stream.
    pub tty: bool,
    /// Keeps the process's stdin open for the one client that attaches
    /// (`ContainerRuntime::attach_and_start`); it closes when that client leaves.
    pub stdin: bool,
}

/// A named volume mounted at a path inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The runtime's name of the volume.
    pub volume: String,
    /// The absolute path inside the container.
    pub target: String,
}

/// A container as listed: id, name, labels, state.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// The runtime's state word: `created`, `running`, `exited`, `dead`, ...
    pub state: String,
    /// The container's address on each network it is attached to.
    pub addresses: HashMap<String, IpAddr>,
}

/// What `inspect` tells about one container.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub restart_count: i64,
    pub started_at: Option<String>,
    /// The container's address on each network it is attached to.
    pub addresses: HashMap<String, IpAddr>,
}
