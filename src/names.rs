//! Validated names parsed once at the boundary: project names, account handles, scopes,
//! runtime hints, token names. After parsing, the type is the proof; nothing re-checks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Checks the rules shared by project names and handles: a lowercase DNS label. The
/// OpenAPI document states the same rule as `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
fn check_dns_label(what: &str, value: &str) -> Result<(), Error> {
    let invalid = |why: &str| {
        Error::Invalid(format!(
            "{what} `{value}` is invalid: {why}; use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit"
        ))
    };
    if value.is_empty() {
        return Err(Error::Invalid(format!(
            "{what} must not be empty; use 1-63 lowercase letters, digits and hyphens"
        )));
    }
    if value.len() > 63 {
        return Err(invalid("it is longer than 63 characters"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(&format!("`{bad}` is not allowed")));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid("it starts or ends with a hyphen"));
    }
    Ok(())
}

/// A project's name. Invariant: a lowercase DNS label (1-63 of `a-z0-9-`, no leading or
/// trailing hyphen), so `<name>.<handle>.<base_domain>` is always a valid hostname.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(value: &str) -> Result<Self, Error> {
        check_dns_label("project name", value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account's handle. Invariant: a lowercase DNS label, like a project name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Handle(String);

impl Handle {
    pub fn parse(value: &str) -> Result<Self, Error> {
        check_dns_label("handle", value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token may do. The derive order is the privilege order: `Read < Deploy < Admin`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Deploy,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Deploy, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == value)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "scope `{value}` is unknown; use one of: read, deploy, admin"
                ))
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runtime hint on a project. Invariant: one of the runtimes detection knows, so a hint
/// can always be honoured by the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Dockerfile,
    Static,
    Node,
    Python,
    Go,
    Rust,
    Ruby,
    Php,
}

impl Runtime {
    pub const ALL: [Runtime; 8] = [
        Runtime::Dockerfile,
        Runtime::Static,
        Runtime::Node,
        Runtime::Python,
        Runtime::Go,
        Runtime::Rust,
        Runtime::Ruby,
        Runtime::Php,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Dockerfile => "dockerfile",
            Runtime::Static => "static",
            Runtime::Node => "node",
            Runtime::Python => "python",
            Runtime::Go => "go",
            Runtime::Rust => "rust",
            Runtime::Ruby => "ruby",
            Runtime::Php => "php",
        }
    }

    pub fn parse(value: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|runtime| runtime.as_str() == value)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                Error::Invalid(format!(
                    "runtime `{value}` is unknown; use one of: {}",
                    known.join(", ")
                ))
            })
    }
}

/// A token's human label. Invariant: 1-64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let length = value.chars().count();
        if length == 0 || length > 64 || value.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "token name {value:?} is invalid; use 1-64 characters without control characters"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Procfile process type (`web`, `worker`, `clock`). Invariant: 1-63 ASCII letters,
/// digits, `_` or `-`, so it can sit in a container name and a label as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessType(String);

impl ProcessType {
    /// The process type the edge routes HTTP traffic to.
    pub const WEB: &'static str = "web";

    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid = !value.is_empty()
            && value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Error::Invalid(format!(
                "process type {value:?} is invalid; use 1-63 letters, digits, '_' and '-'"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_web(&self) -> bool {
        self.0 == Self::WEB
    }
}

impl std::fmt::Display for ProcessType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_types_are_plain_words() {
        for good in ["web", "worker", "clock_2", "low-priority"] {
            assert!(ProcessType::parse(good).is_ok(), "{good}");
        }
        let long = "w".repeat(64);
        for bad in ["", "we b", "a;b", "$(id)", "../x", "wörker", long.as_str()] {
            assert!(ProcessType::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn check(input: &str, ok: bool) {
        assert_eq!(
            ProjectName::parse(input).is_ok(),
            ok,
            "project name {input:?}"
        );
        assert_eq!(Handle::parse(input).is_ok(), ok, "handle {input:?}");
    }

    #[test]
    fn dns_label_rules() {
        check("blog", true);
        check("a", true);
        check("marketing-site-2", true);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
        check("", false);
        check("Blog", false);
        check("-blog", false);
        check("blog-", false);
        check("my_blog", false);
        check("my.blog", false);
        check("blög", false);
        check("a b", false);
    }

    #[test]
    fn scopes_are_ordered_by_privilege() {
        assert!(Scope::Read < Scope::Deploy && Scope::Deploy < Scope::Admin);
        assert_eq!(Scope::parse("deploy").unwrap(), Scope::Deploy);
        let message = Scope::parse("root").unwrap_err().to_string();
        assert!(message.contains("read, deploy, admin"), "{message}");
    }

    #[test]
    fn runtimes_are_validated() {
        assert_eq!(Runtime::parse("node").unwrap(), Runtime::Node);
        assert!(Runtime::parse("cobol")
            .unwrap_err()
            .to_string()
            .contains("python"));
    }

    #[test]
    fn token_names() {
        assert!(TokenName::parse("ci").is_ok());
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse("a\nb").is_err());
        assert!(TokenName::parse(&"x".repeat(65)).is_err());
    }
}

/// An environment variable name. Invariant: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes,
/// and not one Cantila sets itself (`PORT`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvKey(String);

/// Keys Cantila sets in every container; a project may not override them.
pub const RESERVED_ENV_KEYS: &[&str] = &["PORT"];

impl EnvKey {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid_start = value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_start
            || value.len() > 128
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Invalid(format!(
                "env key {value:?} is invalid; use letters, digits and underscores, not starting with a digit, at most 128 characters"
            )));
        }
        if RESERVED_ENV_KEYS.contains(&value) {
            return Err(Error::Invalid(format!(
                "env key `{value}` is set by Cantila itself and cannot be overridden"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name suggests a secret (`API_KEY`, `DB_PASSWORD`, ...), so its value is
    /// masked unless the caller says otherwise.
    pub fn looks_secret(&self) -> bool {
        let upper = self.0.to_ascii_uppercase();
        [
            "SECRET",
            "TOKEN",
            "PASSWORD",
            "PASSWD",
            "KEY",
            "CREDENTIAL",
            "PRIVATE",
            "DATABASE_URL",
            "DSN",
        ]
        .iter()
        .any(|marker| upper.contains(marker))
    }
}

#[cfg(test)]
mod env_key_tests {
    use super::*;

    #[test]
    fn env_keys() {
        for good in ["API_BASE", "_x", "a1"] {
            assert!(EnvKey::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "PORT", "É"] {
            assert!(EnvKey::parse(bad).is_err(), "{bad}");
        }
        assert!(EnvKey::parse("STRIPE_API_KEY").unwrap().looks_secret());
        assert!(!EnvKey::parse("API_BASE").unwrap().looks_secret());
    }
}

/// A public hostname a project can be reached at. Invariant: lowercase ASCII (IDNA names
/// converted to punycode), no trailing dot, at least two labels, each a DNS label of 1-63
/// characters, 253 characters at most, not an IP address, no wildcard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "hostname {value:?} is invalid: {why}; use a DNS name such as www.example.com"
            ))
        };
        let trimmed = value.trim().trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if trimmed.contains('*') {
            return Err(invalid(
                "wildcards need DNS-01 validation, which is not configured",
            ));
        }
        if trimmed.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid("an IP address is not a hostname"));
        }
        let ascii = idna::domain_to_ascii(trimmed)
            .map_err(|_| invalid("it is not a valid international domain name"))?;
        if ascii.len() > 253 {
            return Err(invalid("it is longer than 253 characters"));
        }
        // IDNA maps full-width digits and dots to ASCII, so `１０.0.0.1` only shows itself
        // as an address after conversion; an all-digit top-level label is never a name.
        let top_label_is_numeric = ascii
            .rsplit('.')
            .next()
            .is_some_and(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()));
        if ascii.parse::<std::net::IpAddr>().is_ok() || top_label_is_numeric {
            return Err(invalid("an IP address is not a hostname"));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("it needs at least two labels"));
        }
        for label in &labels {
            let valid = !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(invalid(&format!("the label {label:?} is not a DNS label")));
            }
        }
        Ok(Self(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name is `domain` itself or inside it.
    pub fn is_within(&self, domain: &str) -> bool {
        self.0 == domain || self.0.ends_with(&format!(".{domain}"))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod hostname_tests {
    use super::*;

    #[test]
    fn hostnames_are_normalised_and_validated() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(
                Hostname::parse(input).ok().map(|h| h.0),
                expected.map(str::to_owned),
                "{input}"
            );
        };
        check("www.Example.com", Some("www.example.com"));
        check("example.com.", Some("example.com"));
        check("bücher.example", Some("xn--bcher-kva.example"));
        check("a-b.c-d.io", Some("a-b.c-d.io"));
        check("localhost", None);
        check("*.example.com", None);
        check("10.0.0.1", None);
        // IDNA maps full-width digits and the ideographic full stop to ASCII, so the IP
        // check must look at the converted name too.
        check("\u{ff11}\u{ff10}.0.0.1", None);
        check("127\u{3002}0\u{3002}0\u{3002}1", None);
        check("example.123", None);
        check("123.example", Some("123.example"));
        check("-bad.example.com", None);
        check("bad_.example.com", None);
        check("a..b", None);
        check("", None);
        check(&format!("{}.com", "a".repeat(64)), None);
        assert!(Hostname::parse("x.apps.example.com")
            .unwrap()
            .is_within("apps.example.com"));
        assert!(!Hostname::parse("xapps.example.com")
            .unwrap()
            .is_within("apps.example.com"));
    }
}

/// The name of a project's persistent volume. Invariant: a lowercase DNS label of at most
/// 32 characters, so `cantila_<project id>_<name>` is a valid Docker volume name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

impl TryFrom<String> for VolumeName {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<VolumeName> for String {
    fn from(value: VolumeName) -> String {
        value.0
    }
}

impl VolumeName {
    pub fn parse(value: &str) -> Result<Self, Error> {
        check_dns_label("volume name", value)?;
        if value.len() > 32 {
            return Err(Error::Invalid(format!(
                "volume name `{value}` is longer than 32 characters"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a project's scheduled job. Invariant: a lowercase DNS label (1-63 of
/// `a-z0-9-`, no leading or trailing hyphen), unique within its project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobName(String);

impl JobName {
    pub fn parse(value: &str) -> Result<Self, Error> {
        check_dns_label("job name", value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a project's service (`redis`, `db`). Invariant: a DNS label of 1-40
/// lowercase letters, digits and hyphens, starting with a letter and not ending with a
/// hyphen, so it is the host name other containers of the project reach the service at,
/// and it fits in a container name and a label as it is. `web` and the project's process
/// types are refused by the services API (they name the app's own containers); the
/// type itself accepts them, so compose can map its public service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    /// The longest name, in characters.
    pub const MAX_LEN: usize = 40;

    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "service name `{value}` is invalid: {why}; use 1-40 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen"
            ))
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(invalid("it is longer than 40 characters"));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(&format!("`{bad}` is not allowed")));
        }
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid("it does not start with a letter"));
        }
        if value.ends_with('-') {
            return Err(invalid("it ends with a hyphen"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<ServiceName> for String {
    fn from(name: ServiceName) -> String {
        name.0
    }
}

#[cfg(test)]
mod service_name_tests {
    use super::ServiceName;

    #[test]
    fn service_names() {
        for (input, valid) in [
            ("redis", true),
            ("db", true),
            ("cache-2", true),
            ("a", true),
            ("web", true),
            (&"a".repeat(40), true),
            (&"a".repeat(41), false),
            ("", false),
            ("2db", false),
            ("-db", false),
            ("db-", false),
            ("Redis", false),
            ("my_db", false),
            ("db.local", false),
        ] {
            assert_eq!(ServiceName::parse(input).is_ok(), valid, "{input:?}");
        }
    }
}

/// Directories a volume may not be mounted on or under: the kernel's and the image's own.
const SYSTEM_DIRS: &[&str] = &[
    "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/usr", "/boot", "/run", "/var/run",
];

/// Where a volume is mounted inside a container. Invariant: absolute and normalised (no
/// `.` or `..` components, no repeated or trailing slash), not `/`, not on or under a
/// system directory (`/proc`, `/sys`, `/dev`, `/etc`, `/usr`, ...), made of letters,
/// digits, `.`, `_`, `-` and `/`, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MountPath(String);

impl TryFrom<String> for MountPath {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<MountPath> for String {
    fn from(value: MountPath) -> String {
        value.0
    }
}

impl MountPath {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "mount path {value:?} is invalid: {why}; use an absolute path such as `/data` or `/app/uploads`"
            ))
        };
        if !value.starts_with('/') {
            return Err(invalid("it is not absolute"));
        }
        if value.len() > 255 {
            return Err(invalid("it is longer than 255 bytes"));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
        {
            return Err(invalid(&format!("`{bad}` is not allowed")));
        }
        let components: Vec<&str> = value.split('/').filter(|c| !c.is_empty()).collect();
        if components.iter().any(|c| *c == "." || *c == "..") {
            return Err(invalid("`.` and `..` are not allowed"));
        }
        if components.is_empty() {
            return Err(invalid("a volume cannot replace the root directory"));
        }
        let normalised = format!("/{}", components.join("/"));
        if let Some(system) = SYSTEM_DIRS
            .iter()
            .find(|dir| normalised == **dir || normalised.starts_with(&format!("{dir}/")))
        {
            return Err(invalid(&format!(
                "it is on or under the system directory `{system}`"
            )));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether one path is the other or lies under it (two such mounts would shadow each
    /// other).
    pub fn overlaps(&self, other: &MountPath) -> bool {
        let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        under(&self.0, &other.0) || under(&other.0, &self.0)
    }
}

impl fmt::Display for MountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    #[test]
    fn mount_paths() {
        for (input, expected) in [
            ("/data", Some("/data")),
            ("/app/uploads/", Some("/app/uploads")),
            ("//srv//files", Some("/srv/files")),
            ("/var/lib/app", Some("/var/lib/app")),
            ("/", None),
            ("///", None),
            ("data", None),
            ("/app/../etc", None),
            ("/./data", None),
            ("/proc", None),
            ("/proc/self", None),
            ("/sys/fs", None),
            ("/etc/app", None),
            ("/usr/local/data", None),
            ("/var/run/x", None),
            ("/processes", Some("/processes")),
            ("/data dir", None),
            ("/data$x", None),
        ] {
            let parsed = MountPath::parse(input).ok();
            assert_eq!(
                parsed.as_ref().map(MountPath::as_str),
                expected,
                "mount path {input:?}"
            );
        }
        let data = MountPath::parse("/data").unwrap();
        assert!(data.overlaps(&MountPath::parse("/data/x").unwrap()));
        assert!(!data.overlaps(&MountPath::parse("/database").unwrap()));
    }

    #[test]
    fn volume_names() {
        assert!(VolumeName::parse("uploads").is_ok());
        assert!(VolumeName::parse(&"a".repeat(33)).is_err());
        assert!(VolumeName::parse("Uploads").is_err());
        assert!(VolumeName::parse("a_b").is_err());
    }
}

/// A `previews.branches` pattern: a branch name where `*` matches within one path
/// segment and `**` across segments (`feature/*`, `release-*`, `**`).
#[derive(Debug, Clone)]
pub struct BranchPattern {
    text: String,
    matcher: globset::GlobMatcher,
}

impl BranchPattern {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "branch pattern {value:?} is invalid: {why}; use a branch name with `*` wildcards such as `feature/*`"
            ))
        };
        if value.is_empty() || value.len() > 200 {
            return Err(invalid("it must be 1 to 200 characters"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '*'))
        {
            return Err(invalid(
                "only letters, digits, `-`, `_`, `.`, `/` and `*` are allowed",
            ));
        }
        let matcher = globset::GlobBuilder::new(value)
            .literal_separator(true)
            .build()
            .map_err(|err| invalid(&err.kind().to_string()))?
            .compile_matcher();
        Ok(Self {
            text: value.to_owned(),
            matcher,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, branch: &str) -> bool {
        self.matcher.is_match(branch)
    }
}

#[cfg(test)]
mod branch_pattern_tests {
    use super::*;

    #[test]
    fn branch_patterns() {
        let cases: [(&str, &str, bool); 8] = [
            ("feature/*", "feature/login", true),
            ("feature/*", "feature/a/b", false),
            ("feature/**", "feature/a/b", true),
            ("release-*", "release-1.2", true),
            ("release-*", "main", false),
            ("**", "anything/at/all", true),
            ("main", "main", true),
            ("main", "mainline", false),
        ];
        for (pattern, branch, expected) in cases {
            assert_eq!(
                BranchPattern::parse(pattern).unwrap().matches(branch),
                expected,
                "{pattern} vs {branch}"
            );
        }
        for bad in ["", "feat ure", "a;b", "$(x)", &"a".repeat(201)] {
            let err = BranchPattern::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad:?}");
        }
    }
}
