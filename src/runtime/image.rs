//! What an image build is asked to make.

use std::collections::HashMap;

use crate::config::BuilderKind;

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
    /// on the runtime's default network. Only the classic builder can join one: BuildKit
    /// steps always run on the default network.
    pub network: Option<String>,
    /// The stage of a multi-stage Dockerfile to build; `None` builds the last one.
    pub target: Option<String>,
    /// `ARG` values.
    pub build_args: HashMap<String, String>,
    /// Secrets `RUN --mount=type=secret,id=<id>` steps may read; BuildKit only. Their
    /// values never reach the build's output lines (masked) nor the image.
    pub secrets: Vec<BuildSecret>,
    /// Which builder the runtime should use.
    pub builder: BuilderKind,
}

/// A build secret: the id a Dockerfile mounts it by, and its value.
/// Invariant: `Debug` never shows the value.
#[derive(Clone)]
pub struct BuildSecret {
    pub id: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for BuildSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildSecret")
            .field("id", &self.id)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secrets_debug_shows_its_id_and_never_its_value() {
        let secret = BuildSecret {
            id: "npm-token".into(),
            value: b"s3cr3t-value".to_vec(),
        };
        let shown = format!("{secret:?}");
        assert!(shown.contains("npm-token"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
