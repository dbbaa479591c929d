//! `DockerRuntime`: the `ContainerRuntime` over one Docker engine, connected (and the API
//! version negotiated) on first use, so the daemon starts and its API answers without an
//! engine; each call is the `Engine` call of the same name.
//! Invariant: a failed connection is never kept, so the next call tries again; a made one
//! is kept for good (bollard opens a socket per request, so an engine restart needs no
//! new connection).

use std::{collections::HashMap, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{stream::BoxStream, StreamExt};
use tokio::sync::OnceCell;

use super::Engine;
use crate::{
    config::AddressPool,
    labels::Filter,
    runtime::{
        BuildRequest, ContainerLogLine, ContainerRuntime, ContainerSample, ContainerSpec,
        ContainerStatus, ContainerSummary, ImageDetails, NetworkRemoval, NetworkSpec,
        NetworkSummary, RegistryCredential, RuntimeError, VolumeMount,
    },
};

/// The local Docker engine as the runtime services hold. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct DockerRuntime {
    /// The engine's Unix socket; `None` means `DOCKER_HOST` or the default socket.
    socket: Option<PathBuf>,
    /// The connected engine, set by the first call that reached it.
    engine: Arc<OnceCell<Engine>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("socket", &self.socket)
            .field("connected", &self.engine.initialized())
            .finish()
    }
}

impl DockerRuntime {
    /// A runtime that connects to the engine on `socket` (or the local default) when it is
    /// first asked for something.
    pub fn new(socket: Option<PathBuf>) -> Self {
        Self {
            socket,
            engine: Arc::default(),
        }
    }

    /// The engine, connecting on first use; callers wait while another connects.
    async fn engine(&self) -> Result<&Engine, RuntimeError> {
        self.engine
            .get_or_try_init(|| async {
                Engine::connect_at(self.socket.as_deref())
                    .await
                    .map_err(|err| {
                        RuntimeError::NotConnected(format!(
                            "{err}; is Docker installed and running, and may Cantila use its socket?"
                        ))
                    })
            })
            .await
    }

    /// A stream from the engine, connecting first when no call has yet: a failed
    /// connection is the stream's one item.
    fn connected_stream<T: Send + 'static>(
        &self,
        open: impl FnOnce(&Engine) -> BoxStream<'static, Result<T, RuntimeError>> + Send + 'static,
    ) -> BoxStream<'static, Result<T, RuntimeError>> {
        if let Some(engine) = self.engine.get() {
            return open(engine);
        }
        let this = self.clone();
        futures_util::stream::once(async move {
            match this.engine().await {
                Ok(engine) => open(engine),
                Err(err) => futures_util::stream::once(async move { Err(err) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ready(&self) -> Result<(), RuntimeError> {
        self.engine().await.map(drop)
    }

    async fn build(
        &self,
        request: BuildRequest,
        on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<String, RuntimeError> {
        self.engine().await?.build(request, on_line).await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        self.engine().await?.image_id(reference).await
    }

    async fn image_workdir(&self, reference: &str) -> Result<String, RuntimeError> {
        self.engine().await?.image_workdir(reference).await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.engine().await?.remove_image(reference).await
    }

    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryCredential>,
        on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), RuntimeError> {
        self.engine().await?.pull(reference, auth, on_line).await
    }

    async fn image_details(&self, reference: &str) -> Result<Option<ImageDetails>, RuntimeError> {
        self.engine().await?.image_details(reference).await
    }

    async fn tag_image(&self, reference: &str, tag: &str) -> Result<(), RuntimeError> {
        self.engine().await?.tag_image(reference, tag).await
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus, RuntimeError> {
        self.engine().await?.start(spec).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.engine().await?.create(spec).await
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.engine().await?.inspect(id).await
    }

    async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.engine().await?.stop_and_remove(id, grace).await
    }

    async fn containers_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        self.engine().await?.containers_matching(filter).await
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        self.engine().await?.wait(id).await
    }

    async fn tail_logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        self.engine().await?.tail_logs(id, lines).await
    }

    fn follow_logs(
        &self,
        id: &str,
        since_secs: i64,
    ) -> BoxStream<'static, Result<ContainerLogLine, RuntimeError>> {
        let id = id.to_owned();
        self.connected_stream(move |engine| engine.follow_logs(&id, since_secs))
    }

    async fn sample(&self, id: &str) -> Result<ContainerSample, RuntimeError> {
        self.engine().await?.sample(id).await
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.engine().await?.pause(id).await
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.engine().await?.unpause(id).await
    }

    async fn stop(&self, id: &str, grace_secs: u64) -> Result<(), RuntimeError> {
        self.engine().await?.stop(id, grace_secs).await
    }

    async fn start_again(&self, id: &str) -> Result<(), RuntimeError> {
        self.engine().await?.start_again(id).await
    }

    async fn create_helper(
        &self,
        name: &str,
        image: &str,
        mounts: &[VolumeMount],
        labels: HashMap<String, String>,
        command: Option<Vec<String>>,
    ) -> Result<String, RuntimeError> {
        self.engine()
            .await?
            .create_helper(name, image, mounts, labels, command)
            .await
    }

    fn download_tar(
        &self,
        id: &str,
        path: &str,
    ) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
        let (id, path) = (id.to_owned(), path.to_owned());
        self.connected_stream(move |engine| engine.download_tar(&id, &path).boxed())
    }

    async fn upload_tar(
        &self,
        id: &str,
        path: &str,
        tar: BoxStream<'static, Bytes>,
    ) -> Result<(), RuntimeError> {
        self.engine().await?.upload_tar(id, path, tar).await
    }

    async fn ensure_network(
        &self,
        spec: &NetworkSpec,
        pool: &AddressPool,
    ) -> Result<(), RuntimeError> {
        self.engine().await?.ensure_network(spec, pool).await
    }

    async fn networks_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<NetworkSummary>, RuntimeError> {
        self.engine().await?.networks_matching(filter).await
    }

    async fn remove_network(&self, name: &str) -> Result<NetworkRemoval, RuntimeError> {
        self.engine().await?.remove_network(name).await
    }

    async fn network_gateway(&self, network: &str) -> Result<Option<IpAddr>, RuntimeError> {
        self.engine().await?.network_gateway(network).await
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.engine().await?.ensure_volume(name, labels).await
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        self.engine().await?.volume_exists(name).await
    }

    async fn volumes_matching(&self, filter: &Filter<'_>) -> Result<Vec<String>, RuntimeError> {
        self.engine().await?.volumes_matching(filter).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.engine().await?.remove_volume(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an engine the runtime still exists; asking it for something is a 503 that
    /// says what to check, and every call tries to connect again.
    #[tokio::test]
    async fn without_an_engine_each_call_is_unavailable_and_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = DockerRuntime::new(Some(dir.path().join("docker.sock")));
        for _ in 0..2 {
            let err = runtime.ready().await.unwrap_err();
            assert!(matches!(err, RuntimeError::NotConnected(_)), "{err:?}");
            match crate::error::Error::from(err) {
                crate::error::Error::Unavailable(message) => assert!(
                    message.starts_with("cannot reach the Docker engine: ")
                        && message.ends_with(
                            "; is Docker installed and running, and may Cantila use its socket?"
                        ),
                    "{message}"
                ),
                other => panic!("{other:?}"),
            }
            assert!(!runtime.engine.initialized());
        }
        let lines: Vec<_> = runtime.follow_logs("abc", 0).collect().await;
        assert!(
            matches!(lines.as_slice(), [Err(RuntimeError::NotConnected(_))]),
            "{lines:?}"
        );
    }
}
