//! Image references and registry servers, parsed once at the boundary: `ImageReference`
//! (Docker's reference grammar: `[host[:port]/]path[:tag][@sha256:<hex>]`) and
//! `RegistryServer` (`host[:port]`, the key registry credentials are stored under).
//! Invariant: a value of either type is well-formed and lowercase where Docker requires
//! it, so it can go to the engine or into a URL as is; no shell ever sees it.

use std::fmt;

use serde::Serialize;

use crate::error::Error;

/// The registry an image without a host comes from, and the server its credentials are
/// stored under.
pub const DOCKER_HUB: &str = "docker.io";

/// Docker Hub's other names, all normalised to `docker.io`.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// The longest repository name Docker accepts (host and path).
const MAX_NAME_LEN: usize = 255;

/// The longest tag Docker accepts.
const MAX_TAG_LEN: usize = 128;

/// A parsed image reference. Invariant: `domain` (when present) is a valid lowercase
/// `host[:port]`, `path` is one or more lowercase path components, `tag` matches
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, and `digest` is `sha256:` and 64 lowercase hex
/// digits; at least the path is there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    domain: Option<String>,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn invalid_reference(value: &str, why: &str) -> Error {
    Error::Invalid(format!(
        "image `{value}` is invalid: {why}; use [registry[:port]/]name[:tag][@sha256:<64 hex digits>], e.g. registry.example.com/team/app:1.4"
    ))
}

impl ImageReference {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(Error::Invalid(
                "image must not be empty; use [registry[:port]/]name[:tag][@sha256:<digest>]"
                    .to_owned(),
            ));
        }
        if trimmed.contains("://") {
            return Err(invalid_reference(
                value,
                "a reference has no scheme (drop `https://`)",
            ));
        }
        let (rest, digest) = match trimmed.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(value, digest)?)),
            None => (trimmed, None),
        };
        // A tag follows the last colon after the last slash (a colon before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(parse_tag(value, &rest[at + 1..])?))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid_reference(value, "the name is missing"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid_reference(
                value,
                "the name is longer than 255 characters",
            ));
        }
        // The first component is a registry when it looks like a host: a dot, a port, or
        // `localhost` (Docker's own rule), and something follows it.
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                let host = parse_host_port(first).map_err(|why| invalid_reference(value, &why))?;
                (Some(host), path)
            }
            _ => (None, name),
        };
        check_path(path).map_err(|why| invalid_reference(value, &why))?;
        Ok(Self {
            domain,
            path: path.to_owned(),
            tag,
            digest,
        })
    }

    /// The registry that holds the image: its host, or `docker.io` when the reference
    /// names none (credentials are looked up under this).
    pub fn registry(&self) -> RegistryServer {
        RegistryServer(
            match &self.domain {
                Some(domain) if DOCKER_HUB_ALIASES.contains(&domain.as_str()) => DOCKER_HUB,
                Some(domain) => domain,
                None => DOCKER_HUB,
            }
            .to_owned(),
        )
    }

    /// The repository as written: `[host[:port]/]path`, without tag or digest.
    pub fn repository(&self) -> String {
        match &self.domain {
            Some(domain) => format!("{domain}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The repository's path inside its registry, as the registry's HTTP API names it
    /// (Docker Hub's official images sit under `library/`).
    pub fn remote_path(&self) -> String {
        if self.registry().as_str() == DOCKER_HUB && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The tag a pull without a digest asks for: the reference's, or `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What a pull asks the registry for: the digest when there is one, else the tag.
    pub fn pull_selector(&self) -> String {
        match &self.digest {
            Some(digest) => digest.clone(),
            None => self.tag_or_latest().to_owned(),
        }
    }

    /// The same repository pinned to `digest`: `repository@sha256:...`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// The same repository with `selector` (a tag, or a `sha256:` digest) in place of
    /// this reference's tag and digest: a deploy's override of the connected image.
    pub fn with_selector(&self, selector: &str) -> Result<Self, Error> {
        let selector = selector.trim();
        let mut other = Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        };
        if let Some(digest) = selector.strip_prefix('@') {
            other.digest = Some(parse_digest(selector, digest)?);
        } else if selector.starts_with("sha256:") {
            other.digest = Some(parse_digest(selector, selector)?);
        } else if !selector.contains(['/', ':', '@']) {
            other.tag = Some(parse_tag(selector, selector)?);
        } else {
            // A full reference must name the connected repository.
            let reference = Self::parse(selector)?;
            if reference.repository() != self.repository() {
                return Err(Error::Invalid(format!(
                    "image `{selector}` is not of the connected repository {}; give a tag or digest of it, or connect the other image first",
                    self.repository()
                )));
            }
            other.tag = reference.tag;
            other.digest = reference.digest;
        }
        Ok(other)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl Serialize for ImageReference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn parse_digest(value: &str, digest: &str) -> Result<String, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| invalid_reference(value, "the digest must start with `sha256:`"))?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid_reference(
            value,
            "the digest must be `sha256:` and 64 hex digits",
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

fn parse_tag(value: &str, tag: &str) -> Result<String, Error> {
    let valid_first = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = |c: char| valid_first(c) || c == '.' || c == '-';
    let mut chars = tag.chars();
    let ok = match chars.next() {
        Some(first) => valid_first(first) && chars.all(valid) && tag.len() <= MAX_TAG_LEN,
        None => false,
    };
    if !ok {
        return Err(invalid_reference(
            value,
            &format!(
                "tag `{tag}` must be 1-128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
            ),
        ));
    }
    Ok(tag.to_owned())
}

/// Path components: lowercase alphanumerics joined by one `.`, one or two `_`, or any
/// number of `-`.
fn check_path(path: &str) -> Result<(), String> {
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".to_owned());
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err("a path component is empty (`//` or a trailing `/`)".to_owned());
        }
        if let Some(bad) = component
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
        {
            return Err(format!("`{bad}` is not allowed in a repository name"));
        }
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let bytes: Vec<char> = component.chars().collect();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "path component `{component}` must start and end with a letter or digit"
            ));
        }
        // Separators between alphanumeric runs: `.`, `_`, `__`, or `-`+.
        let mut run = String::new();
        for c in bytes {
            if alnum(c) {
                let separator_ok = run.is_empty()
                    || run == "."
                    || run == "_"
                    || run == "__"
                    || run.chars().all(|c| c == '-');
                if !separator_ok {
                    return Err(format!(
                        "path component `{component}` has the separator `{run}`; use one `.`, one or two `_`, or hyphens"
                    ));
                }
                run.clear();
            } else {
                run.push(c);
            }
        }
    }
    Ok(())
}

/// `host[:port]` lowercased, the host a DNS name, an IPv4 address or a bracketed IPv6
/// address, the port 1-65535.
fn parse_host_port(value: &str) -> Result<String, String> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_owned())?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("`{after}` after the address is not a port"))?,
            ),
        };
        (format!("[{v6}]"), port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (value.to_owned(), None),
        }
    };
    if !host.starts_with('[') {
        if host.is_empty() || host.len() > 253 {
            return Err("the registry host must be 1-253 characters".to_owned());
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "registry host `{host}` is not a DNS name or an IPv4 address"
                ));
            }
        }
    }
    let host = host.to_ascii_lowercase();
    match port {
        None => Ok(host),
        Some(port) => match port.parse::<u16>() {
            Ok(n) if n > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(format!("{host}:{n}")),
            _ => Err(format!(
                "registry port `{port}` must be a number from 1 to 65535"
            )),
        },
    }
}

/// A registry server as credentials name it. Invariant: a lowercase `host[:port]`, Docker
/// Hub's names normalised to `docker.io`; never a scheme, path, query or credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RegistryServer(String);

impl RegistryServer {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "server `{value}` is invalid: {why}; give the registry's host[:port] only, e.g. registry.example.com or ghcr.io"
            ))
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(Error::Invalid(
                "server must not be empty; give the registry's host[:port], e.g. ghcr.io"
                    .to_owned(),
            ));
        }
        let rest = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "the scheme `{scheme}` is not accepted (registries are reached over HTTPS, or plain HTTP on loopback)"
                )))
            }
            None => trimmed,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(invalid(
                "it holds credentials; send them as username and password instead",
            ));
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(invalid("it has a query or fragment"));
        }
        if rest.contains('/') {
            return Err(invalid("it has a path"));
        }
        let host = parse_host_port(rest).map_err(|why| invalid(&why))?;
        Ok(Self(if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
            DOCKER_HUB.to_owned()
        } else {
            host
        }))
    }

    /// A value read back from the store, which only ever holds parsed ones.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host of the registry's HTTP API: Docker Hub's API is not at `docker.io`.
    pub fn api_host(&self) -> &str {
        if self.0 == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.0
        }
    }

    /// Whether the registry is on loopback, where Docker speaks plain HTTP to it.
    pub fn is_loopback(&self) -> bool {
        let host = match self.0.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(']') || port.chars().all(|c| c.is_ascii_digit()) =>
            {
                host
            }
            _ => &self.0,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for RegistryServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (input, repository, tag, digest, registry)
    #[test]
    fn references_parse_per_dockers_grammar() {
        let digest = format!("sha256:{HEX}");
        type Case<'a> = (String, &'a str, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: Vec<Case> = vec![
            ("nginx".into(), "nginx", None, None, "docker.io"),
            (
                "nginx:1.27".into(),
                "nginx",
                Some("1.27"),
                None,
                "docker.io",
            ),
            (
                "louislam/uptime-kuma:1".into(),
                "louislam/uptime-kuma",
                Some("1"),
                None,
                "docker.io",
            ),
            (
                "registry.example.com/team/app:1.4".into(),
                "registry.example.com/team/app",
                Some("1.4"),
                None,
                "registry.example.com",
            ),
            (
                "127.0.0.1:5932/t/app".into(),
                "127.0.0.1:5932/t/app",
                None,
                None,
                "127.0.0.1:5932",
            ),
            (
                "localhost/app:v_1-x.y".into(),
                "localhost/app",
                Some("v_1-x.y"),
                None,
                "localhost",
            ),
            (
                "Registry.Example.COM:443/a/b".into(),
                "registry.example.com:443/a/b",
                None,
                None,
                "registry.example.com:443",
            ),
            (
                "index.docker.io/library/redis".into(),
                "index.docker.io/library/redis",
                None,
                None,
                "docker.io",
            ),
            (
                format!("ghcr.io/o/a@{digest}"),
                "ghcr.io/o/a",
                None,
                Some(digest.as_str()),
                "ghcr.io",
            ),
            (
                format!("ghcr.io/o/a:2@{digest}"),
                "ghcr.io/o/a",
                Some("2"),
                Some(digest.as_str()),
                "ghcr.io",
            ),
            (
                "a__b/c-----d/e.f_g".into(),
                "a__b/c-----d/e.f_g",
                None,
                None,
                "docker.io",
            ),
            (
                "[::1]:5000/app:x".into(),
                "[::1]:5000/app",
                Some("x"),
                None,
                "[::1]:5000",
            ),
        ];
        for (input, repository, tag, digest, registry) in cases {
            let parsed = ImageReference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.repository(), repository, "{input}");
            assert_eq!(parsed.tag(), tag, "{input}");
            assert_eq!(parsed.digest(), digest, "{input}");
            assert_eq!(parsed.registry().as_str(), registry, "{input}");
        }
    }

    #[test]
    fn malformed_references_are_refused_saying_why() {
        for (input, why) in [
            ("", "must not be empty"),
            ("Nginx", "lowercase"),
            ("team/App:1", "lowercase"),
            ("https://ghcr.io/a/b", "scheme"),
            ("app:", "tag ``"),
            ("app:.x", "must be 1-128"),
            ("app:a b", "must be 1-128"),
            ("app@sha256:abc", "64 hex digits"),
            ("app@md5:0123", "start with `sha256:`"),
            ("a//b", "empty"),
            ("a/b/", "empty"),
            ("-a/b", "start and end"),
            ("a..b", "separator"),
            ("a___b", "separator"),
            ("host.com:99999/a", "port"),
            ("host.com:x1/a", "port"),
            ("ho_st.com/a", "not a DNS name"),
            ("a;rm -rf/b", "not allowed"),
            (":tag", "name is missing"),
        ] {
            let err = ImageReference::parse(input).expect_err(input).to_string();
            assert!(err.contains(why), "{input}: {err}");
            assert!(err.starts_with("image"), "{input}: {err}");
        }
        let long = format!("a/{}", "b".repeat(260));
        assert!(ImageReference::parse(&long).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(ImageReference::parse(&long_tag).is_err());
    }

    #[test]
    fn pinning_and_overrides_keep_the_repository() {
        let reference = ImageReference::parse("127.0.0.1:5932/t/app:1").unwrap();
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            reference.pinned(&digest),
            format!("127.0.0.1:5932/t/app@{digest}")
        );
        assert_eq!(reference.pull_selector(), "1");
        let moved = reference.with_selector("2").unwrap();
        assert_eq!(moved.to_string(), "127.0.0.1:5932/t/app:2");
        let pinned = reference.with_selector(&digest).unwrap();
        assert_eq!(pinned.pull_selector(), digest);
        assert_eq!(
            reference
                .with_selector(&format!("@{digest}"))
                .unwrap()
                .digest(),
            Some(digest.as_str())
        );
        let full = reference.with_selector("127.0.0.1:5932/t/app:3").unwrap();
        assert_eq!(full.tag(), Some("3"));
        let other = reference
            .with_selector("127.0.0.1:5932/t/other:3")
            .unwrap_err();
        assert!(other
            .to_string()
            .contains("not of the connected repository"));
        assert!(reference.with_selector("bad tag").is_err());
        assert_eq!(
            ImageReference::parse("nginx").unwrap().remote_path(),
            "library/nginx"
        );
        assert_eq!(ImageReference::parse("a/b").unwrap().remote_path(), "a/b");
    }

    #[test]
    fn registry_servers_are_host_and_port_only() {
        for (input, expected) in [
            ("ghcr.io", "ghcr.io"),
            ("https://ghcr.io", "ghcr.io"),
            ("https://ghcr.io/", "ghcr.io"),
            ("Registry.Example.com:5000", "registry.example.com:5000"),
            ("127.0.0.1:5932", "127.0.0.1:5932"),
            ("index.docker.io", "docker.io"),
            ("https://registry-1.docker.io", "docker.io"),
            ("[::1]:5000", "[::1]:5000"),
        ] {
            assert_eq!(
                RegistryServer::parse(input).unwrap().as_str(),
                expected,
                "{input}"
            );
        }
        for (input, why) in [
            ("", "must not be empty"),
            ("https://ghcr.io/team", "has a path"),
            ("ghcr.io/team", "has a path"),
            ("https://user:pw@ghcr.io", "credentials"),
            ("user@ghcr.io", "credentials"),
            ("ghcr.io?x=1", "query"),
            ("http://ghcr.io", "scheme `http`"),
            ("ftp://ghcr.io", "scheme `ftp`"),
            ("ghcr.io:0", "port"),
            ("ghcr.io:70000", "port"),
            ("gh cr.io", "not a DNS name"),
        ] {
            let err = RegistryServer::parse(input).expect_err(input).to_string();
            assert!(err.contains(why), "{input}: {err}");
            assert!(err.starts_with("server"), "{input}: {err}");
        }
        assert!(RegistryServer::parse("127.0.0.1:5932")
            .unwrap()
            .is_loopback());
        assert!(RegistryServer::parse("localhost:5000")
            .unwrap()
            .is_loopback());
        assert!(RegistryServer::parse("[::1]:5000").unwrap().is_loopback());
        assert!(!RegistryServer::parse("ghcr.io").unwrap().is_loopback());
        assert_eq!(
            RegistryServer::parse("docker.io").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }
}
