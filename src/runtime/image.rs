//! What an image build is asked to make.

use std::collections::HashMap;

/// What to build: a tar of the context, the Dockerfile's path inside it, the tag.
#[derive(Debug)]
pub struct BuildRequest {
    pub context_tar: Vec<u8>,
    pub dockerfile: String,
    pub tag: String,
    pub labels: HashMap<String, String>,
    /// Memory limit of the build's containers, so a build cannot take the host down.
    pub memory_bytes: Option<i64>,
    /// CPU limit of the build's containers, in CPUs (1.5 = one and a half cores).
    pub cpus: Option<f64>,
    /// The network the build's RUN steps join (the release target's); `None` leaves them
    /// on the runtime's default network.
    pub network: Option<String>,
    /// The stage of a multi-stage Dockerfile to build; `None` builds the last one.
    pub target: Option<String>,
    /// Build-time variables for the Dockerfile's `ARG`s (not secrets: they are visible in
    /// the image's history).
    pub build_args: HashMap<String, String>,
}

/// Credentials a pull presents to a registry. `Debug` never shows the password.
#[derive(Clone)]
pub struct RegistryAuth {
    /// The registry's `host[:port]` (`docker.io` for Docker Hub).
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// What an image says about how to run it, read from the local image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDetails {
    pub id: String,
    /// `repository@sha256:...` for each registry the image was pulled from or pushed to.
    pub repo_digests: Vec<String>,
    /// The TCP ports its `EXPOSE` lines name, lowest first.
    pub exposed_ports: Vec<u16>,
    /// Its `HEALTHCHECK` test (`["CMD-SHELL", "..."]`), when it sets one.
    pub healthcheck: Option<Vec<String>>,
    /// The user its processes run as (empty: root).
    pub user: String,
    /// The working directory its containers start in (`/` when it sets none).
    pub workdir: String,
}

impl ImageDetails {
    /// The digest the image has in `repository`, from its repo digests.
    pub fn digest_in(&self, repository: &str) -> Option<String> {
        self.repo_digests.iter().find_map(|entry| {
            let (repo, digest) = entry.split_once('@')?;
            (repo == repository).then(|| digest.to_owned())
        })
    }
}
