//! The container runtime seam: everything Cantila asks of the container engine, as one
//! trait (`ContainerRuntime`), with the neutral types it speaks. Today's implementation is
//! the single-node Docker engine (`docker`, connected on first use).
//! Invariant: nothing above this module names bollard or a Docker concept the trait does
//! not expose; callers hold a `Runtime` and never know which implementation it is.
//!
//! Shaped for a multi-node implementation (Docker Swarm, issue 22) to plug in without a
//! change above the seam: a container here is what an instance runs in, a task there,
//! found by its labels and reached at its address on its release target's network (never
//! a virtual IP); `start` then `stop_and_remove` is Cantila's own start-first update;
//! `build` returns the reference instances start from, which a swarm makes a pushed,
//! digest-pinned image; a network is created by name and labels, its addresses the
//! implementation's business; a named volume belongs to where the containers mounting it
//! run.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::{config::AddressPool, labels::Filter};

mod container;
pub mod docker;
mod error;
#[cfg(test)]
pub(crate) mod fake;
mod image;
mod network;
mod output;
mod sample;
mod terminal;

pub use container::{
    ContainerSpec, ContainerStatus, ContainerSummary, HealthCheck, RestartPolicy, VolumeMount,
};
pub use error::RuntimeError;
pub use image::{BuildRequest, BuildSecret, ImageDetails, RegistryCredential};
pub use network::{NetworkRemoval, NetworkSpec, NetworkSummary};
pub use output::{ContainerLogLine, OutputStream};
pub use sample::ContainerSample;
pub use terminal::{ExecSpec, TerminalOutput, TerminalSession, TerminalSize, TerminalTarget};

/// The runtime as services hold it: cheap to clone, shared by every task.
pub type Runtime = Arc<dyn ContainerRuntime>;

/// Everything Cantila asks of the container engine. Every container, network and volume
/// Cantila makes carries its labels (`labels`), and listing is always by a
/// `labels::Filter`, so an implementation never touches what another installation made.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// Succeeds once the runtime answers: the first call connects, later ones return at
    /// once. A failure is `NotConnected`, with what to check.
    async fn ready(&self) -> Result<(), RuntimeError>;

    // Images.

    /// Builds an image, handing every output line to `on_line` as it arrives. Returns the
    /// image's id. (`for<'line>` is spelled out: async-trait would otherwise name the
    /// elided lifetime, and the callback would take lines of that one lifetime only.)
    async fn build(
        &self,
        request: BuildRequest,
        on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<String, RuntimeError>;

    /// The id of an image by reference, or `None` when there is no such image.
    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError>;

    /// The working directory an image's containers start in (`/` when it sets none).
    async fn image_workdir(&self, reference: &str) -> Result<String, RuntimeError>;

    /// Pulls `reference` (`repository:tag` or `repository@sha256:...`) with `auth` when
    /// given, handing progress lines to `on_line`: one per layer and state change (with
    /// the layer's size), download progress at most every few seconds per layer. A
    /// refusal by the registry is `PullFailed` with its reason.
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryCredential>,
        on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), RuntimeError>;

    /// What the local image `reference` says about running it, or `None` when there is no
    /// such image.
    async fn image_details(&self, reference: &str) -> Result<Option<ImageDetails>, RuntimeError>;

    /// Tags the local image `reference` as `tag` (`repository:tag`).
    async fn tag_image(&self, reference: &str, tag: &str) -> Result<(), RuntimeError>;

    /// Removes an image (pruning); an absent one is not an error, one a container still
    /// uses is.
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError>;

    // Containers.

    /// Creates and starts a container; returns its status (with its address).
    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus, RuntimeError>;

    /// Creates a container without starting it; returns its id. A one-off run's container
    /// is made first, so its id is recorded before anything runs in it; a plain run is
    /// then started with `start_again`, an interactive one by `attach_and_start` once its
    /// terminal is there.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// The state and addresses of one container.
    async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;

    /// Stops a container (SIGTERM, then SIGKILL after `grace`) and removes it. A container
    /// that is already gone is not an error.
    async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// The containers `filter` selects, running or not.
    async fn containers_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError>;

    /// Waits for a one-off container to exit; returns its exit code.
    async fn wait(&self, id: &str) -> Result<i64, RuntimeError>;

    /// The last `lines` lines a container wrote (stdout and stderr).
    async fn tail_logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError>;

    /// Follows a container's stdout and stderr from `since_secs` (0: from its first line)
    /// until it stops: every line with the runtime's timestamp. Reading from the log the
    /// runtime keeps means nothing written before the call is missed, however late it
    /// comes.
    fn follow_logs(
        &self,
        id: &str,
        since_secs: i64,
    ) -> BoxStream<'static, Result<ContainerLogLine, RuntimeError>>;

    /// One resource sample of a running container.
    async fn sample(&self, id: &str) -> Result<ContainerSample, RuntimeError>;

    // Holding a container still while its files are copied (backups, restores).

    /// Freezes every process of a running container, so its files hold still.
    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError>;

    /// Stops a container without removing it (SIGTERM, then SIGKILL after `grace_secs`).
    async fn stop(&self, id: &str, grace_secs: u64) -> Result<(), RuntimeError>;

    /// Starts an existing, stopped container again.
    async fn start_again(&self, id: &str) -> Result<(), RuntimeError>;

    /// Creates (does not start) a container of `image` with `mounts` and no network, so
    /// the archive calls can read and write the volumes' files; `command` runs only if
    /// the caller starts it (`start_again`).
    async fn create_helper(
        &self,
        name: &str,
        image: &str,
        mounts: &[VolumeMount],
        labels: HashMap<String, String>,
        command: Option<Vec<String>>,
    ) -> Result<String, RuntimeError>;

    /// A tar stream of `path` inside the container (the directory itself is the archive's
    /// top entry, as `docker cp` makes it).
    fn download_tar(&self, id: &str, path: &str)
        -> BoxStream<'static, Result<Bytes, RuntimeError>>;

    /// Extracts a tar stream into `path` inside the container.
    async fn upload_tar(
        &self,
        id: &str,
        path: &str,
        tar: BoxStream<'static, Bytes>,
    ) -> Result<(), RuntimeError>;

    // Interactive sessions: exec into an instance, attach to an interactive run.

    /// Attaches to the created container `id` (its stdin when the spec asked for one, and
    /// its output) and then starts it, so nothing it writes is missed. The session's exit
    /// code is the container's; `size` is its terminal's first size (with `tty`).
    async fn attach_and_start(
        &self,
        id: &str,
        size: Option<TerminalSize>,
    ) -> Result<TerminalSession, RuntimeError>;

    /// Runs `spec.command` inside the running container `id`, attached to its stdin and
    /// output. The session's exit code is the command's.
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<TerminalSession, RuntimeError>;

    /// Resizes a session's terminal; the process gets SIGWINCH.
    async fn resize_terminal(
        &self,
        target: &TerminalTarget,
        size: TerminalSize,
    ) -> Result<(), RuntimeError>;

    /// Hangs up a session's terminal whose client went away: its processes get SIGHUP, as
    /// a closed terminal's would (the engine itself leaves them running). A process that
    /// already ended is not an error.
    async fn hang_up(&self, target: &TerminalTarget) -> Result<(), RuntimeError>;

    // Networks.

    /// Creates the network `spec` names, with a free subnet of `pool`, unless a network of
    /// that name exists.
    async fn ensure_network(
        &self,
        spec: &NetworkSpec,
        pool: &AddressPool,
    ) -> Result<(), RuntimeError>;

    /// The networks `filter` selects.
    async fn networks_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<NetworkSummary>, RuntimeError>;

    /// Removes a network unless a container is attached to it.
    async fn remove_network(&self, name: &str) -> Result<NetworkRemoval, RuntimeError>;

    /// The gateway address of a network: how its containers reach services on the host.
    async fn network_gateway(&self, network: &str) -> Result<Option<IpAddr>, RuntimeError>;

    // Named volumes.

    /// Creates a named volume with labels; an existing volume of that name is kept as is
    /// (its data is never touched).
    async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError>;

    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError>;

    /// Names of the volumes `filter` selects.
    async fn volumes_matching(&self, filter: &Filter<'_>) -> Result<Vec<String>, RuntimeError>;

    /// Removes a named volume and its data; one still mounted is an error, never forced.
    /// Only the confirmed volume and database deletes call it.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
}
