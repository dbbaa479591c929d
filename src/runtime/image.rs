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
    /// Logins for the registries base images are pulled from (private base images):
    /// BuildKit asks for them through the build session, the classic builder takes them
    /// with the request. Passwords are masked in the build's output like secrets.
    pub registry_credentials: Vec<RegistryCredential>,
    /// Which builder the runtime should use.
    pub builder: BuilderKind,
}

/// A login for one registry (`server`: its host, and port when not 443, e.g.
/// `registry.example.com` or `127.0.0.1:5000`; `docker.io` for Docker Hub).
/// Invariant: `Debug` never shows the password.
#[derive(Clone)]
pub struct RegistryCredential {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RegistryCredential {
    /// The registry host a reference to it names, as BuildKit and Docker's auth configs
    /// spell it in various ways (`https://index.docker.io/v1/`, `registry-1.docker.io`),
    /// reduced to one: host and port, lowercase, Docker Hub as `docker.io`.
    pub fn normalized_host(server: &str) -> String {
        let host = server
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
        match host.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                "docker.io".to_owned()
            }
            _ => host,
        }
    }

    /// Whether this login is for `host` (as BuildKit asks for it).
    pub fn is_for(&self, host: &str) -> bool {
        Self::normalized_host(&self.server) == Self::normalized_host(host)
    }
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
    fn registry_hosts_match_however_they_are_spelled() {
        let login = |server: &str| RegistryCredential {
            server: server.into(),
            username: "me".into(),
            password: "hunter2-pass".into(),
        };
        assert!(login("docker.io").is_for("registry-1.docker.io"));
        assert!(login("https://index.docker.io/v1/").is_for("docker.io"));
        assert!(login("127.0.0.1:5000").is_for("127.0.0.1:5000"));
        assert!(login("Registry.Example.com").is_for("registry.example.com"));
        assert!(!login("127.0.0.1:5000").is_for("127.0.0.1:5001"));
        assert!(!login("registry.example.com").is_for("docker.io"));
        let shown = format!("{:?}", login("docker.io"));
        assert!(
            shown.contains("docker.io") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

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
