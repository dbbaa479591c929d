//! Named volumes and the container operations backups need: pause and resume, stop and
//! start again, helper containers that mount a volume without running anything, and tar
//! archives read from and written into a container's file system through the engine.
//! Invariant: Cantila removes a named volume only through `remove_volume`, which only the
//! explicit, confirmed volume and database deletes call.

use std::{collections::HashMap, net::IpAddr};

use bollard::{
    models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum, VolumeCreateOptions},
    query_parameters::{
        CreateContainerOptions, DownloadFromContainerOptions, RemoveVolumeOptions,
        StartContainerOptions, StopContainerOptions, UploadToContainerOptions,
    },
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Engine;
use crate::{
    labels::Filter,
    runtime::{RuntimeError, VolumeMount},
};

pub(super) fn to_mounts(mounts: &[VolumeMount]) -> Option<Vec<Mount>> {
    if mounts.is_empty() {
        return None;
    }
    Some(
        mounts
            .iter()
            .map(|mount| Mount {
                target: Some(mount.target.clone()),
                source: Some(mount.volume.clone()),
                typ: Some(MountTypeEnum::VOLUME),
                read_only: Some(false),
                ..Default::default()
            })
            .collect(),
    )
}

impl Engine {
    /// Creates a named volume with labels; an existing volume of that name is kept as is
    /// (its data is never touched).
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if self.volume_exists(name).await? {
            return Ok(());
        }
        self.client
            .create_volume(VolumeCreateOptions {
                name: Some(name.to_owned()),
                driver: Some("local".to_owned()),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Names of the volumes the label filter selects: listed by its pairs, then checked
    /// for the labels it wants absent.
    pub async fn volumes_matching(&self, filter: &Filter<'_>) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .labelled_volumes(&filter.pairs())
            .await?
            .into_iter()
            .filter(|(_, labels)| filter.matches(labels))
            .map(|(name, _)| name)
            .collect())
    }

    /// Names of the volumes whose labels match every `key=value` given.
    pub async fn volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .labelled_volumes(labels)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Names and labels of the volumes whose labels match every `key=value` given.
    async fn labelled_volumes(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<(String, HashMap<String, String>)>, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>(),
        );
        let listed = self
            .client
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|volume| (volume.name, volume.labels))
            .collect())
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.client.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Removes a named volume and its data. A volume still mounted by a container is an
    /// error (`Engine`), never forced.
    pub async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// The gateway address of a network: how its containers reach services on the host.
    pub async fn network_gateway(&self, network: &str) -> Result<Option<IpAddr>, RuntimeError> {
        let details = self
            .client
            .inspect_network(
                network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await?;
        Ok(details
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|config| config.gateway?.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4))
    }

    /// The working directory an image's containers start in (`/` when it sets none).
    pub async fn image_workdir(&self, image: &str) -> Result<String, RuntimeError> {
        let details = self.client.inspect_image(image).await?;
        Ok(details
            .config
            .and_then(|config| config.working_dir)
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_owned()))
    }

    /// Freezes every process of a running container (cgroup freezer), so its files hold
    /// still while they are archived.
    pub async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.client.pause_container(id).await?;
        Ok(())
    }

    pub async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.client.unpause_container(id).await?;
        Ok(())
    }

    /// Stops a container without removing it (SIGTERM, then SIGKILL after `grace_secs`).
    pub async fn stop(&self, id: &str, grace_secs: u64) -> Result<(), RuntimeError> {
        match self
            .client
            .stop_container(
                id,
                Some(StopContainerOptions {
                    signal: None,
                    t: Some(i32::try_from(grace_secs).unwrap_or(i32::MAX)),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Starts an existing, stopped container again.
    pub async fn start_again(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates (does not start) a container of `image` with `mounts`, so the engine's
    /// archive API can read and write the volumes' files; `command` runs only if the caller
    /// starts it.
    pub async fn create_helper(
        &self,
        name: &str,
        image: &str,
        mounts: &[VolumeMount],
        labels: HashMap<String, String>,
        command: Option<Vec<String>>,
    ) -> Result<String, RuntimeError> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(command.unwrap_or_else(|| vec!["true".to_owned()])),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: to_mounts(mounts),
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .client
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    platform: String::new(),
                }),
                body,
            )
            .await?;
        Ok(created.id)
    }

    /// A tar stream of `path` inside the container (the directory itself is the archive's
    /// top entry, as `docker cp` makes it).
    pub fn download_tar(
        &self,
        id: &str,
        path: &str,
    ) -> impl Stream<Item = Result<Bytes, RuntimeError>> + Send + 'static {
        self.client
            .download_from_container(
                id,
                Some(DownloadFromContainerOptions {
                    path: path.to_owned(),
                }),
            )
            .map(|chunk| chunk.map_err(RuntimeError::from))
    }

    /// Extracts a tar stream into `path` inside the container.
    pub async fn upload_tar(
        &self,
        id: &str,
        path: &str,
        tar: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<(), RuntimeError> {
        let body = bollard::body_stream(tar);
        self.client
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: path.to_owned(),
                    ..Default::default()
                }),
                body,
            )
            .await?;
        Ok(())
    }
}
