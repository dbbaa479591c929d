//! A container runtime held in memory, for unit tests of what a service decides: it lists
//! the containers it was given (selected by the filter, as the engine selects them) and
//! records which ones it was asked to stop; every other call fails, as a runtime that
//! refuses would, so a test sees at once when a service asks for more than it expected.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Duration};

use bytes::Bytes;
use futures_util::{stream::BoxStream, StreamExt};

use super::{
    BuildRequest, ContainerLogLine, ContainerRuntime, ContainerSample, ContainerSpec,
    ContainerStatus, ContainerSummary, ImageDetails, NetworkRemoval, NetworkSpec, NetworkSummary,
    RegistryCredential, RuntimeError, VolumeMount,
};
use crate::{config::AddressPool, labels::Filter};

#[derive(Debug, Default)]
pub(crate) struct FakeRuntime {
    /// What the runtime has, running or not.
    containers: Mutex<Vec<ContainerSummary>>,
    /// The ids `stop_and_remove` was called with, in order.
    removed: Mutex<Vec<String>>,
}

impl FakeRuntime {
    pub(crate) fn with_containers(containers: Vec<ContainerSummary>) -> Self {
        Self {
            containers: Mutex::new(containers),
            removed: Mutex::default(),
        }
    }

    /// The ids of the containers the code under test stopped and removed, in order.
    pub(crate) fn removed(&self) -> Vec<String> {
        self.removed.lock().unwrap().clone()
    }
}

fn unsupported<T>(call: &str) -> Result<T, RuntimeError> {
    Err(RuntimeError::Engine(format!(
        "the fake runtime does not do `{call}`"
    )))
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ready(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn containers_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let containers = self.containers.lock().unwrap();
        Ok(containers
            .iter()
            .filter(|container| filter.matches(&container.labels))
            .cloned()
            .collect())
    }

    async fn stop_and_remove(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.containers.lock().unwrap().retain(|c| c.id != id);
        self.removed.lock().unwrap().push(id.to_owned());
        Ok(())
    }

    async fn build(
        &self,
        _request: BuildRequest,
        _on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<String, RuntimeError> {
        unsupported("build")
    }

    async fn image_id(&self, _reference: &str) -> Result<Option<String>, RuntimeError> {
        unsupported("image_id")
    }

    async fn image_workdir(&self, _reference: &str) -> Result<String, RuntimeError> {
        unsupported("image_workdir")
    }

    async fn remove_image(&self, _reference: &str) -> Result<(), RuntimeError> {
        unsupported("remove_image")
    }

    async fn pull(
        &self,
        _reference: &str,
        _auth: Option<&RegistryCredential>,
        _on_line: &mut (dyn for<'line> FnMut(&'line str) + Send),
    ) -> Result<(), RuntimeError> {
        unsupported("pull")
    }

    async fn image_details(&self, _reference: &str) -> Result<Option<ImageDetails>, RuntimeError> {
        unsupported("image_details")
    }

    async fn tag_image(&self, _reference: &str, _tag: &str) -> Result<(), RuntimeError> {
        unsupported("tag_image")
    }

    async fn start(&self, _spec: &ContainerSpec) -> Result<ContainerStatus, RuntimeError> {
        unsupported("start")
    }

    async fn create(&self, _spec: &ContainerSpec) -> Result<String, RuntimeError> {
        unsupported("create")
    }

    async fn inspect(&self, _id: &str) -> Result<ContainerStatus, RuntimeError> {
        unsupported("inspect")
    }

    async fn wait(&self, _id: &str) -> Result<i64, RuntimeError> {
        unsupported("wait")
    }

    async fn tail_logs(&self, _id: &str, _lines: usize) -> Result<Vec<String>, RuntimeError> {
        unsupported("tail_logs")
    }

    fn follow_logs(
        &self,
        _id: &str,
        _since_secs: i64,
    ) -> BoxStream<'static, Result<ContainerLogLine, RuntimeError>> {
        futures_util::stream::once(async { unsupported("follow_logs") }).boxed()
    }

    async fn sample(&self, _id: &str) -> Result<ContainerSample, RuntimeError> {
        unsupported("sample")
    }

    async fn pause(&self, _id: &str) -> Result<(), RuntimeError> {
        unsupported("pause")
    }

    async fn unpause(&self, _id: &str) -> Result<(), RuntimeError> {
        unsupported("unpause")
    }

    async fn stop(&self, _id: &str, _grace_secs: u64) -> Result<(), RuntimeError> {
        unsupported("stop")
    }

    async fn start_again(&self, _id: &str) -> Result<(), RuntimeError> {
        unsupported("start_again")
    }

    async fn create_helper(
        &self,
        _name: &str,
        _image: &str,
        _mounts: &[VolumeMount],
        _labels: HashMap<String, String>,
        _command: Option<Vec<String>>,
    ) -> Result<String, RuntimeError> {
        unsupported("create_helper")
    }

    fn download_tar(
        &self,
        _id: &str,
        _path: &str,
    ) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
        futures_util::stream::once(async { unsupported("download_tar") }).boxed()
    }

    async fn upload_tar(
        &self,
        _id: &str,
        _path: &str,
        _tar: BoxStream<'static, Bytes>,
    ) -> Result<(), RuntimeError> {
        unsupported("upload_tar")
    }

    async fn ensure_network(
        &self,
        _spec: &NetworkSpec,
        _pool: &AddressPool,
    ) -> Result<(), RuntimeError> {
        unsupported("ensure_network")
    }

    async fn networks_matching(
        &self,
        _filter: &Filter<'_>,
    ) -> Result<Vec<NetworkSummary>, RuntimeError> {
        unsupported("networks_matching")
    }

    async fn remove_network(&self, _name: &str) -> Result<NetworkRemoval, RuntimeError> {
        unsupported("remove_network")
    }

    async fn network_gateway(&self, _network: &str) -> Result<Option<IpAddr>, RuntimeError> {
        unsupported("network_gateway")
    }

    async fn ensure_volume(
        &self,
        _name: &str,
        _labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        unsupported("ensure_volume")
    }

    async fn volume_exists(&self, _name: &str) -> Result<bool, RuntimeError> {
        unsupported("volume_exists")
    }

    async fn volumes_matching(&self, _filter: &Filter<'_>) -> Result<Vec<String>, RuntimeError> {
        unsupported("volumes_matching")
    }

    async fn remove_volume(&self, _name: &str) -> Result<(), RuntimeError> {
        unsupported("remove_volume")
    }
}
