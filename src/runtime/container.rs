//! Containers as the runtime starts, lists and inspects them: what to start (instances,
//! workers, release commands, services), the volumes they mount, and what the runtime
//! reports back.

use std::{collections::HashMap, net::IpAddr, time::Duration};

pub use crate::model::service::RestartPolicy;

/// The container to start for an instance or a one-off command.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Overrides the image's CMD when set.
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT when set (services).
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    /// The network it joins (its release target's; see `networks::ensure`).
    pub network: String,
    /// Names other containers of the network reach it by (a service's name; a production
    /// instance's process type).
    pub aliases: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    /// Restart on exit (instances: always), never (one-off commands), or as a service asks.
    pub restart: RestartPolicy,
    /// A check the runtime itself runs inside the container (a service's `command` check);
    /// its result is `ContainerStatus::health`.
    pub health: Option<HealthCheck>,
    /// Named volumes to mount (the project's volumes; see `volumes::attach`).
    pub mounts: Vec<VolumeMount>,
    /// Gives the process a terminal (an interactive run); its output is then one stream.
    pub tty: bool,
    /// Keeps the process's stdin open for the one client that attaches
    /// (`ContainerRuntime::attach_and_start`); it closes when that client leaves.
    pub stdin: bool,
}

/// A health check the runtime runs inside a container: `command` (an argument array, never
/// a shell line) must exit 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
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
    /// The runtime's health check result (`starting`, `healthy`, `unhealthy`) when the
    /// container has a check; `None` without one.
    pub health: Option<String>,
    /// Whether the runtime is restarting it after an exit.
    pub restarting: bool,
    /// The container's address on each network it is attached to.
    pub addresses: HashMap<String, IpAddr>,
}
