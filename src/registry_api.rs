//! The registry HTTP API (distribution v2), read-only: what an image reference resolves to
//! (its digest) and what its config says about running it (exposed ports, healthcheck,
//! user, working directory), without pulling or starting anything. Basic auth, and the
//! bearer token flow when the registry asks for it (`WWW-Authenticate: Bearer`).
//! Invariants: credentials go only to the registry's own host and the token realm it
//! names (redirects across hosts drop them, as reqwest does); every body read is capped.
//!
//! Egress: a tenant names the registry, so every connection this module opens goes only
//! to an address the git egress policy (`source::EgressPolicy`, `[git] allowed_networks`)
//! permits: names are resolved by `PolicyResolver`, which hands reqwest only permitted
//! addresses (so a DNS answer that changes between checks cannot lead inside), and a URL
//! whose host is a literal address (the registry's, a redirect's, a token realm's) is
//! checked before it is requested. `check_host` is the same check for the Docker engine's
//! pulls, which resolve the name again themselves (see README).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::source::EgressPolicy;
use crate::{
    error::Error,
    model::image::{ImageReference, RegistryServer},
};

/// The one answer to a registry host the egress policy refuses, whether the image is
/// connected, planned or deployed: it says nothing about what listens there.
pub const HOST_REFUSED: &str = "the registry's host is not allowed: images are read and pulled only from public internet addresses, and this host does not resolve to one (loopback, private, link-local and this server's own addresses are refused unless the operator allows them with git.allowed_networks)";

fn host_refused() -> Error {
    Error::Invalid(HOST_REFUSED.to_owned())
}

/// The host and port a registry's API listens on: the port it names, else HTTPS's (or
/// HTTP's on loopback, where Docker speaks plain HTTP).
fn api_host_port(registry: &RegistryServer) -> (String, u16) {
    let host = registry.api_host();
    let default = if registry.is_loopback() { 80 } else { 443 };
    if let Some(inner) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        if let Some((address, rest)) = inner.split_once(']') {
            let port = rest
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (address.to_owned(), port);
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => {
            (name.to_owned(), port.parse().unwrap_or(default))
        }
        _ => (host.to_owned(), default),
    }
}

/// How strictly `check_host` judges a name that does not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// Refused: before a pull, nothing may be asked of the engine unchecked.
    Refuse,
    /// Let through: when an image is connected or a deploy names its tag, a name that does
    /// not resolve yet (DNS down, a registry not set up yet) is not known to lead inside;
    /// the plan and the pull check it again.
    Allow,
}

/// Refuses (with `HOST_REFUSED`) a registry whose API host resolves only to addresses the
/// policy refuses (or to none, per `unresolved`). Checked when an image is connected, when
/// a deploy names a tag or digest, and before every pull: the engine resolves the name
/// again itself, so this narrows but does not close the gap a DNS server that changes its
/// answer could use (README).
pub async fn check_host(
    registry: &RegistryServer,
    egress: &EgressPolicy,
    unresolved: Unresolved,
) -> Result<(), Error> {
    let (host, port) = api_host_port(registry);
    let resolved = crate::source::resolve_host(&host, port).await;
    if resolved.is_empty() && unresolved == Unresolved::Allow {
        return Ok(());
    }
    if !resolved.iter().any(|address| egress.permits(address.ip())) {
        tracing::debug!(registry = %registry, "refused a registry: the host has no permitted address");
        return Err(host_refused());
    }
    Ok(())
}

/// reqwest's resolver for registry requests: the system resolver's answer, less every
/// address the policy refuses; a name left with none fails, and `refused` records it so
/// the request reports `HOST_REFUSED` instead of a connection error.
struct PolicyResolver {
    egress: EgressPolicy,
    refused: Arc<AtomicBool>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        let refused = Arc::clone(&self.refused);
        Box::pin(async move {
            let permitted = egress.permitted_addresses_of(name.as_str(), 0).await;
            if permitted.is_empty() {
                refused.store(true, Ordering::SeqCst);
                return Err("the host resolves to no permitted address".into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addresses)
        })
    }
}

/// Whether `url` may be requested: its host, when a literal address, must be permitted
/// (a name goes through `PolicyResolver` instead, which reqwest skips for literals).
fn literal_host_permitted(url: &Url, egress: &EgressPolicy) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => egress.permits(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => egress.permits(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// An HTTP client that connects only where `egress` permits (names through the resolver,
/// literal addresses of redirects checked by the redirect policy), never through a proxy
/// from the environment (which would resolve the names itself).
fn egress_client(
    egress: &EgressPolicy,
    refused: &Arc<AtomicBool>,
) -> Result<reqwest::Client, Error> {
    let redirect_egress = egress.clone();
    let redirect_refused = Arc::clone(refused);
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver {
            egress: egress.clone(),
            refused: Arc::clone(refused),
        }))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if literal_host_permitted(attempt.url(), &redirect_egress) {
                attempt.follow()
            } else {
                redirect_refused.store(true, Ordering::SeqCst);
                attempt.error("a redirect to a refused address")
            }
        }))
        .build()
        .map_err(|err| Error::Internal(err.to_string()))
}

/// Manifest kinds asked for, single-platform and multi-platform, Docker's and OCI's.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json";

/// The largest manifest or config read.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the registry says an image is and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// The digest the reference resolves to (what a pull records).
    pub digest: String,
    pub exposed_ports: Vec<u16>,
    pub healthcheck: Option<Vec<String>>,
    pub user: String,
    pub workdir: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
    /// The `Authorization` value that worked, reused for the next requests.
    authorization: Option<String>,
    egress: EgressPolicy,
    /// Set when the resolver or the redirect policy refused a host.
    refused: Arc<AtomicBool>,
}

fn refused(reference: &ImageReference, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "the registry {} did not describe {reference}: {why}",
        reference.registry()
    ))
}

/// Reads the manifest and config of `reference` from its registry, with `credentials`
/// (username, password) when given, connecting only where `egress` permits.
pub async fn inspect(
    reference: &ImageReference,
    credentials: Option<(String, String)>,
    egress: &EgressPolicy,
) -> Result<RemoteImage, Error> {
    let registry = reference.registry();
    let scheme = if registry.is_loopback() {
        "http"
    } else {
        "https"
    };
    let refused_host = Arc::new(AtomicBool::new(false));
    let mut client = Client {
        http: egress_client(egress, &refused_host)?,
        base: format!(
            "{scheme}://{}/v2/{}",
            registry.api_host(),
            reference.remote_path()
        ),
        credentials,
        authorization: None,
        egress: egress.clone(),
        refused: refused_host,
    };
    let (manifest, header_digest) = client
        .get(
            reference,
            &format!("manifests/{}", reference.pull_selector()),
        )
        .await?;
    let digest = header_digest
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&manifest))));
    let mut manifest: Value =
        serde_json::from_slice(&manifest).map_err(|err| refused(reference, err))?;
    if let Some(list) = manifest.get("manifests").and_then(Value::as_array) {
        // A multi-platform image: the entry for this machine's platform (or the first).
        let wanted = std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64");
        let chosen = list
            .iter()
            .find(|m| {
                m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                    && m.pointer("/platform/architecture").and_then(Value::as_str)
                        == Some(wanted.as_str())
            })
            .or_else(|| list.first())
            .and_then(|m| m.get("digest"))
            .and_then(Value::as_str)
            .ok_or_else(|| refused(reference, "its manifest list is empty"))?
            .to_owned();
        let (body, _) = client
            .get(reference, &format!("manifests/{chosen}"))
            .await?;
        manifest = serde_json::from_slice(&body).map_err(|err| refused(reference, err))?;
    }
    let config_digest = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .ok_or_else(|| refused(reference, "its manifest names no config"))?
        .to_owned();
    let (config, _) = client
        .get(reference, &format!("blobs/{config_digest}"))
        .await?;
    let config: Value = serde_json::from_slice(&config).map_err(|err| refused(reference, err))?;
    Ok(read_config(digest, &config))
}

/// The run settings of an image config (`config.ExposedPorts`, `Healthcheck`, `User`,
/// `WorkingDir`).
fn read_config(digest: String, config: &Value) -> RemoteImage {
    let run = config.get("config").cloned().unwrap_or(Value::Null);
    let mut exposed_ports: Vec<u16> = run
        .get("ExposedPorts")
        .and_then(Value::as_object)
        .map(|ports| {
            ports
                .keys()
                .filter_map(|port| {
                    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
                    (protocol == "tcp").then(|| number.parse().ok()).flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    let text = |key: &str| {
        run.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let workdir = text("WorkingDir");
    RemoteImage {
        digest,
        exposed_ports,
        healthcheck: run
            .pointer("/Healthcheck/Test")
            .and_then(Value::as_array)
            .map(|test| {
                test.iter()
                    .filter_map(|part| part.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .filter(|test| !test.is_empty() && test[0] != "NONE"),
        user: text("User"),
        workdir: if workdir.is_empty() {
            "/".to_owned()
        } else {
            workdir
        },
    }
}

impl Client {
    /// GETs `path` under the repository, authenticating as the registry asks; the body and
    /// the `Docker-Content-Digest` header.
    async fn get(
        &mut self,
        reference: &ImageReference,
        path: &str,
    ) -> Result<(Vec<u8>, Option<String>), Error> {
        let url = format!("{}/{path}", self.base);
        let mut response = self.send(reference, &url).await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.authorization.is_none() {
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.authorization = Some(self.authorize(reference, &challenge).await?);
            response = self.send(reference, &url).await?;
        }
        let status = response.status();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(reference, response).await?;
        if !status.is_success() {
            return Err(refused(
                reference,
                format!("HTTP {status}: {}", registry_errors(&body)),
            ));
        }
        Ok((body, digest))
    }

    async fn send(
        &self,
        reference: &ImageReference,
        url: &str,
    ) -> Result<reqwest::Response, Error> {
        self.check_literal(url)?;
        let mut request = self.http.get(url).header(header::ACCEPT, MANIFEST_TYPES);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request
            .send()
            .await
            .map_err(|err| self.failure(refused(reference, format!("cannot reach it ({err})"))))
    }

    /// Refuses a URL whose host is a literal address the policy refuses (reqwest does not
    /// resolve those, so `PolicyResolver` never sees them). A URL that does not parse is
    /// left to reqwest, which refuses it.
    fn check_literal(&self, url: &str) -> Result<(), Error> {
        match Url::parse(url) {
            Ok(parsed) if !literal_host_permitted(&parsed, &self.egress) => Err(host_refused()),
            _ => Ok(()),
        }
    }

    /// A request's error, or `HOST_REFUSED` when the policy stopped it.
    fn failure(&self, error: Error) -> Error {
        if self.refused.load(Ordering::SeqCst) {
            host_refused()
        } else {
            error
        }
    }

    /// The `Authorization` value the challenge asks for: basic auth, or a bearer token from
    /// the realm it names.
    async fn authorize(
        &self,
        reference: &ImageReference,
        challenge: &str,
    ) -> Result<String, Error> {
        let missing = || {
            refused(
                reference,
                format!(
                    "it asks for credentials; add them with POST /v1/registries for {}",
                    reference.registry()
                ),
            )
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = self.credentials.as_ref().ok_or_else(missing)?;
            return Ok(basic(user, password));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refused(
                reference,
                format!("unknown auth challenge `{scheme}`"),
            ));
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| refused(reference, "its bearer challenge names no realm"))?;
        let query: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| k == "service" || k == "scope")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.check_literal(&realm)?;
        let mut request = self.http.get(&realm).query(&query);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|err| {
            self.failure(refused(
                reference,
                format!("its token service failed ({err})"),
            ))
        })?;
        let status = response.status();
        let body = read_capped(reference, response).await?;
        if !status.is_success() {
            return Err(refused(
                reference,
                format!(
                    "its token service answered HTTP {status}: {}",
                    registry_errors(&body)
                ),
            ));
        }
        let token: Value = serde_json::from_slice(&body).map_err(|err| refused(reference, err))?;
        token
            .get("token")
            .or_else(|| token.get("access_token"))
            .and_then(Value::as_str)
            .map(|token| format!("Bearer {token}"))
            .ok_or_else(|| refused(reference, "its token service gave no token"))
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `realm="https://auth",service="registry",scope="repository:a:pull"` as pairs.
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, remaining)) => (value.to_owned(), remaining),
                None => (quoted.to_owned(), ""),
            },
            None => match after.split_once(',') {
                Some((value, remaining)) => (value.trim().to_owned(), remaining),
                None => (after.trim().to_owned(), ""),
            },
        };
        pairs.push((key, value));
        rest = remaining.trim_start_matches(',').trim();
    }
    pairs
}

/// The messages of a registry's error body (`{"errors":[{"code","message"}]}`), or the
/// start of the body.
fn registry_errors(body: &[u8]) -> String {
    let parsed: Option<Vec<String>> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("errors")?.as_array().map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
    });
    match parsed {
        Some(messages) if !messages.is_empty() => messages.join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    }
}

async fn read_capped(
    reference: &ImageReference,
    response: reqwest::Response,
) -> Result<Vec<u8>, Error> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        return Err(refused(reference, "its answer is larger than 4 MiB"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|err| refused(reference, format!("reading its answer failed ({err})")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(refused(reference, "its answer is larger than 4 MiB"));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_and_literal_urls_are_judged_by_the_egress_policy() {
        let server = |text: &str| RegistryServer::parse(text).unwrap();
        assert_eq!(
            api_host_port(&server("docker.io")),
            ("registry-1.docker.io".to_owned(), 443)
        );
        assert_eq!(
            api_host_port(&server("127.0.0.1:5000")),
            ("127.0.0.1".to_owned(), 5000)
        );
        assert_eq!(
            api_host_port(&server("localhost")),
            ("localhost".to_owned(), 80)
        );
        assert_eq!(
            api_host_port(&server("ghcr.io")),
            ("ghcr.io".to_owned(), 443)
        );
        let policy = EgressPolicy::default();
        let url = |text: &str| Url::parse(text).unwrap();
        for refused in [
            "http://127.0.0.1:5000/v2/",
            "https://169.254.169.254/token",
            "https://[::1]/token",
            "https://[::ffff:10.0.0.1]/token",
        ] {
            assert!(!literal_host_permitted(&url(refused), &policy), "{refused}");
        }
        for passed in ["https://1.1.1.1/token", "https://auth.docker.io/token"] {
            assert!(literal_host_permitted(&url(passed), &policy), "{passed}");
        }
        let loopback = EgressPolicy::new(&["127.0.0.1/32".parse().unwrap()]);
        assert!(literal_host_permitted(
            &url("http://127.0.0.1:5000/v2/"),
            &loopback
        ));
    }

    #[test]
    fn bearer_challenges_and_configs_are_read() {
        assert_eq!(
            challenge_params(
                r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            ),
            vec![
                (
                    "realm".to_owned(),
                    "https://auth.docker.io/token".to_owned()
                ),
                ("service".to_owned(), "registry.docker.io".to_owned()),
                (
                    "scope".to_owned(),
                    "repository:library/nginx:pull".to_owned()
                ),
            ]
        );
        let config = serde_json::json!({"config": {
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "80/tcp": {}},
            "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- localhost:8080"]},
            "User": "65534",
        }});
        let image = read_config("sha256:ab".to_owned(), &config);
        assert_eq!(image.exposed_ports, [80, 8080]);
        assert_eq!(image.healthcheck.unwrap()[0], "CMD-SHELL");
        assert_eq!(image.user, "65534");
        assert_eq!(image.workdir, "/");
        assert_eq!(
            registry_errors(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            ),
            "authentication required"
        );
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
