//! Configuration: built-in defaults, overridden by the TOML file, overridden by flags and
//! `CANTILA_*` environment variables. Unknown keys are errors, so a typo never passes silently.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod address_pool;
mod allowed_network;
mod build_images;
mod tls;

pub use address_pool::AddressPool;
pub use allowed_network::AllowedNetwork;
pub use build_images::BuildImages;
pub use tls::{AcmeChallenge, AcmeDirectory, TlsConfig, TlsMode};

use crate::names::{Handle, Hostname};

/// The daemon's whole configuration. Every path the daemon touches derives from `data_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the admin token and (later) repositories and certificates live.
    pub data_dir: PathBuf,
    /// The `/v1` API listener. Loopback by default: the API is for the CLI and console on
    /// the server, or behind the operator's own tunnel.
    pub api_listen: SocketAddr,
    /// The public HTTP listener of the edge.
    pub http_listen: SocketAddr,
    /// The public HTTPS listener of the edge.
    pub https_listen: SocketAddr,
    /// Projects are served at `<name>.<handle>.<base_domain>`.
    pub base_domain: String,
    /// The account created on first start with an admin token in `<data_dir>/admin-token`.
    pub default_handle: String,
    /// Logging output.
    pub log: LogConfig,
    /// API limits.
    pub api: ApiConfig,
    /// Builds and releases.
    pub deploy: DeployConfig,
    /// Which repositories accounts may fetch: local paths, internal networks.
    pub git: GitConfig,
    /// What generated Dockerfiles build from.
    pub build: BuildConfig,
    /// Where the edge's certificates come from.
    pub tls: TlsConfig,
    /// The public edge's limits.
    pub edge: EdgeSettings,
    /// Instance counts and size tiers.
    pub scale: ScaleConfig,
    /// Preview deployments of branches and pull requests.
    pub previews: PreviewsConfig,
    /// Alias hostnames of projects.
    pub domains: DomainsConfig,
    /// An optional listener serving `GET /metrics` (Prometheus) for every project without
    /// a token. Off by default; only loopback addresses are accepted, because it has no auth.
    pub metrics_listen: Option<SocketAddr>,
    /// Sampling and retention of metrics.
    pub metrics: MetricsConfig,
    /// Runtime logs of instances and the edge: how much is kept and how much a read returns.
    pub logs: LogsConfig,
    /// The servers project databases live on.
    pub database: DatabaseConfig,
    /// Backups: tools, helper image, the default schedule and retention.
    pub backups: BackupConfig,
    /// The web console on the public edge.
    pub console: ConsoleConfig,
    /// One-off runs: how many at once, how much output and history is kept.
    pub runs: RunsConfig,
    /// Start even when a restored data directory's installation already has containers on
    /// the engine (`--take-over`, `CANTILA_TAKE_OVER=1`): a choice for this start only,
    /// never read from the file.
    #[serde(skip)]
    pub take_over: bool,
    /// Backups of Cantila's own state (`cantila admin backup`, and on a schedule).
    pub state_backup: StateBackupConfig,
    /// The file this configuration was read from, if any: a state backup carries its text
    /// so a new server can start from the same settings. Never read from the file itself.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Backups of Cantila's own state: the store, the installation id and, when a passphrase
/// is set, the sealing key, the certificates and this file, in one archive under
/// `<data_dir>/state-backups/` (copied to `[backups.s3]` when that is on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateBackupConfig {
    /// Scheduled state backups; `cantila admin backup` works either way.
    pub enabled: bool,
    /// When they run: `daily at HH:MM` (UTC), `hourly`, `every 6h` or five cron fields.
    pub schedule: String,
    /// The newest this many completed state backups are kept, here and in S3; older ones
    /// are deleted (1 to 1000).
    pub keep: u32,
    /// A file holding the passphrase the archive is encrypted with (its first line);
    /// `CANTILA_STATE_BACKUP_PASSPHRASE` wins over it. Without either, archives are
    /// unencrypted and leave out `secret.key`, the certificates and this config file.
    pub passphrase_file: Option<PathBuf>,
}

impl Default for StateBackupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: "daily at 03:30".to_owned(),
            keep: 7,
            passphrase_file: None,
        }
    }
}

/// One-off runs (`POST /v1/projects/{id}/runs`, `cantila run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// The most runs of one project that may be pending or running at once; one more
    /// answers 409. Each run is a container with its size tier's memory and CPUs.
    pub max_concurrent_per_project: u32,
    /// Finished runs kept per project (with their output); older ones are pruned.
    pub history_per_project: u32,
    /// Output lines kept per run: the newest, older ones dropped first.
    pub output_max_lines: u32,
    /// Output bytes kept per run, likewise.
    pub output_max_bytes: u64,
    /// Seconds between SIGTERM and SIGKILL when a run is canceled or times out.
    pub stop_grace_secs: u64,
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_per_project: 3,
            history_per_project: 200,
            output_max_lines: 10_000,
            output_max_bytes: 4 * 1024 * 1024,
            stop_grace_secs: 10,
        }
    }
}

/// Serving the web console (and the `/v1` API it talks to) on a hostname of the public
/// edge, over HTTPS with a certificate like any served hostname. Off by default: the
/// console is always on the API listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// Defaults to `console.<base_domain>`.
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewsConfig {
    /// The most previews one project may have at once; one more answers 409.
    pub max_per_project: u32,
    /// How long a preview lives without a new deploy (push, synchronize or API update)
    /// before the sweep removes it, in seconds, unless its `ttl` says otherwise.
    pub default_ttl_secs: u64,
    /// The longest `ttl` a preview may ask for, in seconds.
    pub max_ttl_secs: u64,
    /// Seconds between passes of the expiry sweep.
    pub sweep_interval_secs: u64,
}

impl Default for PreviewsConfig {
    fn default() -> Self {
        Self {
            max_per_project: 5,
            default_ttl_secs: 7 * 24 * 60 * 60,
            max_ttl_secs: 90 * 24 * 60 * 60,
            sweep_interval_secs: 60,
        }
    }
}

/// Alias hostnames: how many one project may have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainsConfig {
    /// The most alias hostnames one project may have; one more answers 409. Each alias
    /// is a route, a certificate order and its renewals, so a tenant must not add them
    /// without bound. 0 turns aliases off.
    pub max_aliases_per_project: u32,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        Self {
            max_aliases_per_project: 100,
        }
    }
}

/// How often instances and the edge are sampled and how long the points are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Sample container stats and the edge's counters; off keeps the edge counting (for
    /// Prometheus) but stores no series.
    pub enabled: bool,
    /// Seconds between samples: the fine resolution. Must divide 60, so fine points roll
    /// up into whole minutes.
    pub interval_secs: u64,
    /// Minutes the fine points are kept.
    pub fine_retention_mins: u64,
    /// Days the one-minute points are kept.
    pub coarse_retention_days: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 10,
            fine_retention_mins: 60,
            coarse_retention_days: 7,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The PostgreSQL server `postgres` databases are created on.
    pub postgres: PostgresConfig,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A connection URL of a role with CREATEROLE and CREATEDB (a superuser is not
    /// needed), e.g. `postgres://cantila_admin:PASSWORD@127.0.0.1:5432/postgres`. Unset:
    /// only `sqlite` databases can be created.
    pub admin_url: Option<String>,
    /// The host name or address apps' containers reach the server at. Unset: the gateway
    /// address of the deploy network (the Docker host, as seen from its containers).
    pub container_host: Option<String>,
}

// The admin URL carries a password: never printed.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("admin_url", &self.admin_url.as_ref().map(|_| "<set>"))
            .field("container_host", &self.container_host)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// The most runtime log bytes kept per project (line text plus 32 bytes of tags per
    /// line); past it the oldest lines are dropped.
    pub max_bytes_per_project: u64,
    /// The most runtime log bytes kept for all projects together, in MiB (counted like
    /// `max_bytes_per_project`); past it the oldest lines of any project are dropped and
    /// `logs.db` gives the freed space back.
    pub max_total_mb: u64,
    /// Lines older than this are dropped: a window such as `12h` or `7d`.
    pub max_age: String,
    /// Lines a read returns when it names no `limit`.
    pub default_limit: u32,
    /// The largest `limit` a read may ask for.
    pub max_limit: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_project: 64 * 1024 * 1024,
            max_total_mb: 1024,
            max_age: "7d".to_owned(),
            default_limit: 500,
            max_limit: 5000,
        }
    }
}

impl LogsConfig {
    /// `max_age` as a duration (validated at load; a week if it were somehow unreadable).
    pub fn max_age(&self) -> std::time::Duration {
        crate::duration::parse(&self.max_age).unwrap_or(std::time::Duration::from_secs(7 * 86_400))
    }

    /// `max_total_mb` in bytes.
    pub fn max_total_bytes(&self) -> u64 {
        self.max_total_mb.saturating_mul(1024 * 1024)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The `pg_dump` and `pg_restore` programs (at least the server's major version).
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    /// The image of the helper containers that reach volumes' files (never run for
    /// backups; run with `find ... -exec rm` to empty a volume before a restore).
    pub helper_image: String,
    /// The schedule of projects holding data that set none: `daily at HH:MM` (UTC) or a
    /// five-field cron expression. Unset: no automatic backups unless a project sets one.
    pub schedule: Option<String>,
    /// Retention of scheduled backups: the newest backup of each of the last `keep_daily`
    /// days and of each of the last `keep_weekly` ISO weeks is kept. Manual, safety and
    /// final backups are never pruned.
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// Backups that may run at once across all projects.
    pub concurrent: usize,
    /// A copy of every completed backup in S3-compatible storage; off by default.
    pub s3: S3Config,
}

/// Where completed backups are copied to: an S3-compatible bucket. Each completed backup
/// is uploaded (multipart above `part_size_mb`), then checked with a HEAD request against
/// its size, its SHA-256 (kept in the object's metadata) and its MD5-based ETag.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub enabled: bool,
    /// The service's URL, such as `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:9000`; no credentials or query in it.
    pub endpoint: String,
    /// The region the requests are signed for (`us-east-1` where the service has none).
    pub region: String,
    pub bucket: String,
    /// Objects are named `<prefix><project id>/<backup id>.<ext>`.
    pub prefix: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (MinIO, and
    /// most self-hosted services, need it).
    pub path_style: bool,
    pub access_key_id: String,
    /// Better left out of the file: `CANTILA_BACKUP_S3_SECRET_ACCESS_KEY` in the daemon's
    /// environment wins over it.
    pub secret_access_key: Option<String>,
    /// Files up to this size go in one PUT; larger ones in parts of this size (5 to 5120).
    pub part_size_mb: u64,
    /// Seconds between passes that retry failed and interrupted uploads.
    pub retry_interval_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            bucket: String::new(),
            prefix: "cantila/".to_owned(),
            path_style: false,
            access_key_id: String::new(),
            secret_access_key: None,
            part_size_mb: 64,
            retry_interval_secs: 300,
        }
    }
}

// The secret access key is never printed.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("enabled", &self.enabled)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<set>"),
            )
            .field("part_size_mb", &self.part_size_mb)
            .field("retry_interval_secs", &self.retry_interval_secs)
            .finish()
    }
}

impl S3Config {
    /// Checks the settings when uploads are on; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let endpoint = url::Url::parse(&self.endpoint).map_err(|err| {
            format!(
                "backups.s3.endpoint `{}` is not a URL ({err}); use e.g. https://s3.eu-west-1.amazonaws.com",
                self.endpoint
            )
        })?;
        if !matches!(endpoint.scheme(), "http" | "https")
            || endpoint.host_str().is_none()
            || !endpoint.username().is_empty()
            || endpoint.password().is_some()
            || endpoint.query().is_some()
            || endpoint.fragment().is_some()
        {
            return Err(
                "backups.s3.endpoint must be an http:// or https:// URL with a host and no credentials, query or fragment"
                    .to_owned(),
            );
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !self.bucket.starts_with(['-', '.'])
            && !self.bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(format!(
                "backups.s3.bucket `{}` is not a bucket name (3 to 63 lowercase letters, digits, `-` and `.`)",
                self.bucket
            ));
        }
        if self.region.trim().is_empty() {
            return Err(
                "backups.s3.region must be set (us-east-1 where the service has none)".to_owned(),
            );
        }
        if self.prefix.starts_with('/')
            || self.prefix.len() > 512
            || self.prefix.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(
                "backups.s3.prefix must not start with `/`, and holds at most 512 printable characters"
                    .to_owned(),
            );
        }
        if self.access_key_id.trim().is_empty() {
            return Err("backups.s3.access_key_id must be set".to_owned());
        }
        if self
            .secret_access_key
            .as_deref()
            .is_none_or(|secret| secret.is_empty())
        {
            return Err(
                "backups.s3.secret_access_key is not set: put it in CANTILA_BACKUP_S3_SECRET_ACCESS_KEY (or the file)"
                    .to_owned(),
            );
        }
        if !(5..=5120).contains(&self.part_size_mb) {
            return Err(
                "backups.s3.part_size_mb must be between 5 and 5120 (S3's part limits)".to_owned(),
            );
        }
        if self.retry_interval_secs == 0 {
            return Err("backups.s3.retry_interval_secs must be at least 1".to_owned());
        }
        Ok(())
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            pg_dump: PathBuf::from("pg_dump"),
            pg_restore: PathBuf::from("pg_restore"),
            helper_image: "busybox:latest".to_owned(),
            schedule: None,
            keep_daily: 7,
            keep_weekly: 4,
            concurrent: 1,
            s3: S3Config::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleConfig {
    /// The most instances one process type of a project may run.
    pub max_instances: u32,
    /// The tier of projects that never chose one.
    pub default_size: String,
    /// Size tiers: CPU and memory limits of each instance.
    pub sizes: std::collections::BTreeMap<String, SizeTier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeTier {
    pub memory_mb: u32,
    pub cpus: f64,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        let tier = |memory_mb, cpus| SizeTier { memory_mb, cpus };
        Self {
            max_instances: 10,
            default_size: "small".to_owned(),
            sizes: [
                ("nano".to_owned(), tier(256, 0.25)),
                ("small".to_owned(), tier(512, 0.5)),
                ("medium".to_owned(), tier(1024, 1.0)),
                ("large".to_owned(), tier(2048, 2.0)),
            ]
            .into_iter()
            .collect(),
        }
    }
}

impl ScaleConfig {
    /// The name of the tier with the least memory (then the fewest CPUs): what previews
    /// run on.
    pub fn smallest_size(&self) -> String {
        self.sizes
            .iter()
            .min_by(|(_, a), (_, b)| {
                a.memory_mb
                    .cmp(&b.memory_mb)
                    .then(a.cpus.total_cmp(&b.cpus))
            })
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| self.default_size.clone())
    }

    /// The tier named `size`, or the default tier.
    pub fn tier(&self, size: Option<&str>) -> SizeTier {
        let name = size.unwrap_or(&self.default_size);
        self.sizes
            .get(name)
            .or_else(|| self.sizes.get(&self.default_size))
            .copied()
            .unwrap_or(SizeTier {
                memory_mb: 512,
                cpus: 0.5,
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSettings {
    /// Seconds from a request's arrival to the instance's response head before 504.
    pub request_timeout_secs: u64,
    /// The largest request body passed to an instance, in MiB (413 above it).
    pub max_body_mb: u64,
    /// On shutdown, seconds in-flight requests get before their connections are closed.
    pub drain_timeout_secs: u64,
    /// `Strict-Transport-Security: max-age=<this>` on HTTPS responses of hostnames that
    /// have a certificate (and so redirect plain HTTP); 0 sends none.
    pub hsts_max_age_secs: u64,
    /// MiB of static sites' files (and their compressed forms) the edge holds in memory,
    /// all sites together, smallest files first; the rest are read from disk.
    pub static_memory_mb: u64,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            request_timeout_secs: 60,
            max_body_mb: 100,
            drain_timeout_secs: 10,
            hsts_max_age_secs: 365 * 24 * 60 * 60,
            static_memory_mb: 64,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// Which builder images are built with: `auto` (BuildKit through the engine's API,
    /// the classic builder where the engine cannot give BuildKit) or `classic`.
    pub builder: BuilderKind,
    /// Base images of generated Dockerfiles, per runtime.
    pub images: BuildImages,
}

/// `[build] builder`: which builder images are built with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderKind {
    /// BuildKit (cache and secret mounts, build cache kept between deploys), falling back
    /// to the classic builder, with a line in the build log saying why, where the engine
    /// cannot give it.
    #[default]
    Auto,
    /// Always the classic builder: its RUN steps join the project's network; no
    /// `RUN --mount`.
    Classic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// The Docker engine's Unix socket; unset means `DOCKER_HOST` or the default
    /// `/var/run/docker.sock` (set it for rootless Docker or a second engine).
    pub docker_socket: Option<PathBuf>,
    /// Replaced by `git.local_repo_accounts`; still read so older files keep working:
    /// `false` turns local repositories off for every account, `true` (the old default)
    /// leaves `git.local_repo_accounts` in charge. A warning names the new key.
    pub allow_local_repos: Option<bool>,
    /// The name prefix of the Docker networks Cantila makes: production of a project joins
    /// `<network>-<project id>`, a preview `<network>-<preview id>`. A network of exactly
    /// this name is the one every instance shared before (0.1); instances still on it are
    /// moved to their project's network and it is removed once nothing uses it.
    pub network: String,
    /// The IPv4 range the subnets of those networks come from (CIDR).
    pub network_pool: String,
    /// The size of each network's subnet, as a prefix length (24: 254 addresses).
    pub network_prefix_len: u8,
    /// Builds that may run at once across all projects.
    pub concurrent_builds: usize,
    /// Memory limit of a build, in MiB (at most 2047: the build API takes a 32-bit size).
    pub build_memory_mb: u32,
    /// CPU limit of a build, in cores.
    pub build_cpus: f64,
    /// The largest build context accepted, in MiB.
    pub max_context_mb: u64,
    /// How long a git fetch may take, in seconds.
    pub fetch_timeout_secs: u64,
    /// How long a new instance has to pass its health check, in seconds.
    pub health_timeout_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when an old instance is stopped.
    pub stop_grace_secs: u64,
    /// Seconds old instances keep serving requests already sent to them after traffic
    /// has switched to a new release.
    pub drain_secs: u64,
    /// Images of this many of a project's most recent releases are kept for rollbacks;
    /// older ones are removed.
    pub keep_images: usize,
}

impl DeployConfig {
    /// Where network subnets come from (`network_pool` cut by `network_prefix_len`).
    pub fn address_pool(&self) -> Result<AddressPool, String> {
        AddressPool::new(&self.network_pool, self.network_prefix_len)
            .map_err(|err| format!("deploy.network_pool: {err}"))
    }

    fn validate(&self) -> Result<(), String> {
        // Docker's own rule for network names, kept short so the id suffix fits.
        let name_ok = (1..=40).contains(&self.network.len())
            && self
                .network
                .starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .network
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(format!(
                "deploy.network `{}` must be 1 to 40 letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                self.network
            ));
        }
        self.address_pool().map(|_| ())
    }
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            docker_socket: None,
            allow_local_repos: None,
            network: "cantila".to_owned(),
            network_pool: "172.16.0.0/12".to_owned(),
            network_prefix_len: 24,
            concurrent_builds: 1,
            build_memory_mb: 1536,
            build_cpus: 1.0,
            max_context_mb: 512,
            fetch_timeout_secs: 120,
            health_timeout_secs: 60,
            stop_grace_secs: 10,
            drain_secs: 2,
            keep_images: 5,
        }
    }
}

/// What accounts may make the server fetch. Local paths reach anything the daemon can
/// read, and remote URLs anything the server can connect to, so both are the operator's
/// to hand out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitConfig {
    /// Handles of the accounts that may connect repositories on this server's disk
    /// (absolute paths, `file://`). Unset: only the default account (`default_handle`);
    /// `[]`: none. A path another account's project uses is refused whatever this says.
    pub local_repo_accounts: Option<Vec<String>>,
    /// Networks (CIDR) remote repositories may be fetched from although they are
    /// loopback, private, link-local or this server's own addresses, for a git server on
    /// the operator's LAN. Empty: public internet addresses only.
    pub allowed_networks: Vec<AllowedNetwork>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `cantila=debug,tower_http=info`; `RUST_LOG` wins.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Failed token checks one client address may make per minute before getting 429.
    pub auth_failures_per_minute: u32,
    /// The largest request body the API accepts, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// A request taking longer than this is answered 503 and abandoned.
    pub request_timeout_secs: u64,
    /// Page size when a list request names no `limit`.
    pub default_page_size: u32,
    /// The largest `limit` a list request may ask for.
    pub max_page_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cantila-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            base_domain: "localhost".to_owned(),
            default_handle: "admin".to_owned(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            deploy: DeployConfig::default(),
            git: GitConfig::default(),
            build: BuildConfig::default(),
            tls: TlsConfig::default(),
            edge: EdgeSettings::default(),
            scale: ScaleConfig::default(),
            previews: PreviewsConfig::default(),
            domains: DomainsConfig::default(),
            metrics_listen: None,
            metrics: MetricsConfig::default(),
            logs: LogsConfig::default(),
            database: DatabaseConfig::default(),
            backups: BackupConfig::default(),
            console: ConsoleConfig::default(),
            runs: RunsConfig::default(),
            take_over: false,
            state_backup: StateBackupConfig::default(),
            file: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: 10,
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            default_page_size: 50,
            max_page_size: 200,
        }
    }
}

/// Values given on the command line or in the environment; each wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub api_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub https_listen: Option<SocketAddr>,
    pub base_domain: Option<String>,
    /// `CANTILA_BACKUP_S3_SECRET_ACCESS_KEY`: the secret need not sit in the file.
    pub s3_secret_access_key: Option<String>,
    /// `--take-over` / `CANTILA_TAKE_OVER`: see `Config::take_over`.
    pub take_over: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file at `path` if given, then `overrides`; validated.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => Self::default(),
        };
        config.file = path.map(Path::to_owned);
        if let Some(data_dir) = overrides.data_dir {
            config.data_dir = data_dir;
        }
        if let Some(addr) = overrides.api_listen {
            config.api_listen = addr;
        }
        if let Some(addr) = overrides.http_listen {
            config.http_listen = addr;
        }
        if let Some(addr) = overrides.https_listen {
            config.https_listen = addr;
        }
        if let Some(domain) = overrides.base_domain {
            config.base_domain = domain;
        }
        config.take_over = overrides.take_over;
        if let Some(secret) = overrides.s3_secret_access_key.filter(|s| !s.is_empty()) {
            config.backups.s3.secret_access_key = Some(secret);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error names the offending key and its line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| err.to_string().trim_end().to_owned())
    }

    /// Checks the values serde cannot: names and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Handle::parse(&self.default_handle)
            .map_err(|err| ConfigError::Invalid(format!("default_handle: {err}")))?;
        for handle in self.git.local_repo_accounts.iter().flatten() {
            Handle::parse(handle)
                .map_err(|err| ConfigError::Invalid(format!("git.local_repo_accounts: {err}")))?;
        }
        let listed = self
            .git
            .local_repo_accounts
            .as_ref()
            .is_some_and(|handles| !handles.is_empty());
        if self.deploy.allow_local_repos == Some(false) && listed {
            return Err(ConfigError::Invalid(
                "deploy.allow_local_repos = false contradicts git.local_repo_accounts; remove deploy.allow_local_repos (replaced by git.local_repo_accounts)".to_owned(),
            ));
        }
        validate_base_domain(&self.base_domain)?;
        if self.api.default_page_size == 0 || self.api.default_page_size > self.api.max_page_size {
            return Err(ConfigError::Invalid(format!(
                "api.default_page_size must be between 1 and api.max_page_size ({})",
                self.api.max_page_size
            )));
        }
        self.tls
            .validate()
            .map_err(|err| ConfigError::Invalid(format!("tls: {err}")))?;
        self.build
            .images
            .validate()
            .map_err(|err| ConfigError::Invalid(err.to_string()))?;
        self.deploy.validate().map_err(ConfigError::Invalid)?;
        if self.deploy.build_memory_mb == 0 || self.deploy.build_memory_mb > 2047 {
            return Err(ConfigError::Invalid(
                "deploy.build_memory_mb must be between 1 and 2047".to_owned(),
            ));
        }
        if !self.scale.sizes.contains_key(&self.scale.default_size) {
            return Err(ConfigError::Invalid(format!(
                "scale.default_size `{}` is not one of the tiers in [scale.sizes]",
                self.scale.default_size
            )));
        }
        if let Some((name, _)) = self
            .scale
            .sizes
            .iter()
            .find(|(_, tier)| tier.memory_mb < 6 || tier.cpus <= 0.0)
        {
            return Err(ConfigError::Invalid(format!(
                "scale.sizes.{name} needs memory_mb of at least 6 and cpus above 0"
            )));
        }
        if self.deploy.keep_images == 0 {
            return Err(ConfigError::Invalid(
                "deploy.keep_images must be at least 1 (the running release's image)".to_owned(),
            ));
        }
        if self.deploy.concurrent_builds == 0 {
            return Err(ConfigError::Invalid(
                "deploy.concurrent_builds must be at least 1".to_owned(),
            ));
        }
        if self.previews.default_ttl_secs == 0
            || self.previews.default_ttl_secs > self.previews.max_ttl_secs
        {
            return Err(ConfigError::Invalid(format!(
                "previews.default_ttl_secs must be between 1 and previews.max_ttl_secs ({})",
                self.previews.max_ttl_secs
            )));
        }
        if self.runs.max_concurrent_per_project == 0
            || self.runs.history_per_project == 0
            || self.runs.output_max_lines == 0
            || self.runs.output_max_bytes == 0
        {
            return Err(ConfigError::Invalid(
                "runs.max_concurrent_per_project, runs.history_per_project, runs.output_max_lines and runs.output_max_bytes must be at least 1".to_owned(),
            ));
        }
        if self.runs.stop_grace_secs > 3600 {
            return Err(ConfigError::Invalid(
                "runs.stop_grace_secs must be at most 3600".to_owned(),
            ));
        }
        if self.previews.sweep_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "previews.sweep_interval_secs must be at least 1".to_owned(),
            ));
        }
        if self.metrics.interval_secs == 0 || 60 % self.metrics.interval_secs != 0 {
            return Err(ConfigError::Invalid(
                "metrics.interval_secs must divide 60 (1, 2, 5, 10, 15, 20, 30 or 60)".to_owned(),
            ));
        }
        if self.metrics.fine_retention_mins == 0 || self.metrics.coarse_retention_days == 0 {
            return Err(ConfigError::Invalid(
                "metrics.fine_retention_mins and metrics.coarse_retention_days must be at least 1"
                    .to_owned(),
            ));
        }
        if self.metrics.coarse_retention_days > 366 {
            return Err(ConfigError::Invalid(
                "metrics.coarse_retention_days must be at most 366".to_owned(),
            ));
        }
        if let Some(addr) = self.metrics_listen {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "metrics_listen {addr} is not a loopback address; it serves without a token, \
                     so bind it to 127.0.0.1 or ::1, or scrape GET /metrics on the API with an admin token"
                )));
            }
        }
        if crate::duration::parse(&self.logs.max_age).is_err() {
            return Err(ConfigError::Invalid(format!(
                "logs.max_age `{}` must be a window such as 12h or 7d (a whole number and s, m, h, d or w)",
                self.logs.max_age
            )));
        }
        if self.logs.max_total_mb == 0 || self.logs.max_total_mb > 1 << 30 {
            return Err(ConfigError::Invalid(
                "logs.max_total_mb must be between 1 and 1073741824".to_owned(),
            ));
        }
        if self.logs.max_bytes_per_project < 4096 {
            return Err(ConfigError::Invalid(
                "logs.max_bytes_per_project must be at least 4096".to_owned(),
            ));
        }
        if self.logs.default_limit == 0 || self.logs.default_limit > self.logs.max_limit {
            return Err(ConfigError::Invalid(format!(
                "logs.default_limit must be between 1 and logs.max_limit ({})",
                self.logs.max_limit
            )));
        }
        crate::model::schedule::Spec::parse_job(&self.state_backup.schedule)
            .map_err(|err| ConfigError::Invalid(format!("state_backup.schedule: {err}")))?;
        if !(1..=1000).contains(&self.state_backup.keep) {
            return Err(ConfigError::Invalid(
                "state_backup.keep must be between 1 and 1000".to_owned(),
            ));
        }
        if let Some(schedule) = &self.backups.schedule {
            crate::model::schedule::Spec::parse(schedule)
                .map_err(|err| ConfigError::Invalid(format!("backups.schedule: {err}")))?;
        }
        if self.backups.concurrent == 0 {
            return Err(ConfigError::Invalid(
                "backups.concurrent must be at least 1".to_owned(),
            ));
        }
        self.backups.s3.validate().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.database.postgres.admin_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(
                    "database.postgres.admin_url must be a postgres:// URL".to_owned(),
                ));
            }
        }
        if self.console.enabled {
            self.validate_console_hostname()?;
        }
        if self.api.auth_failures_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "api.auth_failures_per_minute must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// The hostname the edge serves the console on: `[console] hostname`, by default
    /// `console.<base_domain>`; `None` when the console is not on the edge.
    pub fn console_hostname(&self) -> Option<String> {
        if !self.console.enabled {
            return None;
        }
        let name = match &self.console.hostname {
            Some(name) => name.clone(),
            None => format!("console.{}", self.base_domain),
        };
        // Validated at load; a config built in code that fails it serves no console.
        Hostname::parse(&name).ok().map(|h| h.as_str().to_owned())
    }

    fn validate_console_hostname(&self) -> Result<(), ConfigError> {
        let name = self
            .console
            .hostname
            .clone()
            .unwrap_or_else(|| format!("console.{}", self.base_domain));
        let hostname = Hostname::parse(&name)
            .map_err(|err| ConfigError::Invalid(format!("console.hostname: {err}")))?;
        // Projects are `<name>.<handle>.<base_domain>`: a console name two or more labels
        // under the base domain could be a project's, so only one label is allowed there.
        if let Some(prefix) = hostname
            .as_str()
            .strip_suffix(&format!(".{}", self.base_domain))
        {
            if prefix.contains('.') {
                return Err(ConfigError::Invalid(format!(
                    "console.hostname `{hostname}` could be a project's hostname                      (<name>.<handle>.{}); use one label under the base domain, such as                      console.{}, or a name outside it",
                    self.base_domain, self.base_domain
                )));
            }
        }
        if hostname.as_str() == self.base_domain {
            return Err(ConfigError::Invalid(
                "console.hostname must not be the base domain itself; use console.<base_domain>"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Whether the account with this handle may connect repositories on the server's disk.
    pub fn local_repos_allowed(&self, handle: &str) -> bool {
        if self.deploy.allow_local_repos == Some(false) {
            return false;
        }
        match &self.git.local_repo_accounts {
            Some(handles) => handles.iter().any(|allowed| allowed == handle),
            None => handle == self.default_handle,
        }
    }

    /// Keys an older config file may still hold, with what replaces them; the daemon
    /// logs each as a warning at start.
    pub fn deprecations(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(value) = self.deploy.allow_local_repos {
            notes.push(format!(
                "deploy.allow_local_repos = {value} is deprecated: git.local_repo_accounts lists the accounts that may connect repositories on this server's disk (unset: only the default account `{}`; [] for none){}",
                self.default_handle,
                if value { "; other accounts can no longer use local paths unless listed there" } else { "" }
            ));
        }
        notes
    }

    /// The SQLite file holding all desired state.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("cantila.db")
    }

    /// Bare git mirrors, one per project.
    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }

    /// Scratch space of running builds (exported source trees).
    pub fn builds_dir(&self) -> PathBuf {
        self.data_dir.join("builds")
    }

    /// Static sites, served by the edge from disk.
    pub fn sites_dir(&self) -> PathBuf {
        self.data_dir.join("sites")
    }

    /// Backup files, one directory per project.
    pub fn backups_dir(&self) -> PathBuf {
        self.data_dir.join("backups")
    }

    /// Archives of Cantila's own state (`<id>.cstate`).
    pub fn state_backups_dir(&self) -> PathBuf {
        self.data_dir.join("state-backups")
    }

    /// Static assets extracted from container apps' images, one directory per deploy.
    pub fn assets_dir(&self) -> PathBuf {
        self.data_dir.join("assets")
    }

    /// The file the first start writes the bootstrap admin token to.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }
}

fn validate_base_domain(domain: &str) -> Result<(), ConfigError> {
    let valid = !domain.is_empty()
        && domain.len() <= 200
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "base_domain `{domain}` is not a lowercase DNS name such as `apps.example.com`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let text = include_str!("../../config.example.toml");
        let parsed = Config::parse(text).expect("config.example.toml parses");
        parsed.validate().expect("config.example.toml is valid");
        let defaults = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn the_console_hostname_defaults_under_the_base_domain() {
        let mut config = Config {
            base_domain: "apps.example.com".into(),
            ..Config::default()
        };
        assert_eq!(config.console_hostname(), None, "off by default");
        config.console.enabled = true;
        config.validate().unwrap();
        assert_eq!(
            config.console_hostname().as_deref(),
            Some("console.apps.example.com")
        );
        config.console.hostname = Some("Panel.Example.NET.".into());
        config.validate().unwrap();
        assert_eq!(
            config.console_hostname().as_deref(),
            Some("panel.example.net")
        );
    }

    #[test]
    fn run_limits_are_validated() {
        let check = |toml: &str, error: Option<&str>| {
            let result = Config::parse(toml).and_then(|c| c.validate().map_err(|e| e.to_string()));
            match (result, error) {
                (Ok(()), None) => {}
                (Err(err), Some(wanted)) => assert!(err.contains(wanted), "{toml}: {err}"),
                (result, wanted) => panic!("{toml}: got {result:?}, wanted {wanted:?}"),
            }
        };
        check(
            "[runs]
max_concurrent_per_project = 1
stop_grace_secs = 0
",
            None,
        );
        check(
            "[runs]
max_concurrent_per_project = 0
",
            Some("runs.max_concurrent_per_project"),
        );
        check(
            "[runs]
output_max_bytes = 0
",
            Some("runs.output_max_bytes"),
        );
        check(
            "[runs]
stop_grace_secs = 3601
",
            Some("runs.stop_grace_secs"),
        );
        check(
            "[runs]
max_parallel = 2
",
            Some("max_parallel"),
        );
    }

    #[test]
    fn network_keys_are_validated() {
        let check = |toml: &str, error: Option<&str>| {
            let result = Config::parse(toml).and_then(|c| c.validate().map_err(|e| e.to_string()));
            match (result, error) {
                (Ok(()), None) => {}
                (Err(err), Some(wanted)) => assert!(err.contains(wanted), "{toml}: {err}"),
                (result, wanted) => panic!("{toml}: got {result:?}, wanted {wanted:?}"),
            }
        };
        // A 0.1 file with only the shared network's name still loads.
        check("[deploy]\nnetwork = \"cantila\"\n", None);
        check(
            "[deploy]\nnetwork_pool = \"10.40.0.0/16\"\nnetwork_prefix_len = 26\n",
            None,
        );
        check(
            "[deploy]\nnetwork = \"bad name\"\n",
            Some("deploy.network `bad name`"),
        );
        check(
            "[deploy]\nnetwork_pool = \"10.40.0.0\"\n",
            Some("deploy.network_pool: `10.40.0.0` is not an IPv4 range"),
        );
        check(
            "[deploy]\nnetwork_pool = \"10.40.0.0/16\"\nnetwork_prefix_len = 12\n",
            Some("between the range's own (16) and 28"),
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name_and_line() {
        let err = Config::parse("data_dir = \"/tmp/x\"\n\n[api]\nmax_body_byte = 5\n").unwrap_err();
        assert!(err.contains("max_body_byte"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "base_domain = \"file.example\"\ndata_dir = \"/from/file\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            Overrides {
                data_dir: Some("/from/flag".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.base_domain, "file.example");
        // The S3 secret may come from the environment instead of the file.
        std::fs::write(
            &path,
            "[backups.s3]\nenabled = true\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"b-1\"\naccess_key_id = \"k\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("CANTILA_BACKUP_S3_SECRET_ACCESS_KEY"),
            "{err}"
        );
        let config = Config::load(
            Some(&path),
            Overrides {
                s3_secret_access_key: Some("from-env".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(
            config.backups.s3.secret_access_key.as_deref(),
            Some("from-env")
        );
    }

    #[test]
    fn local_repositories_are_for_the_accounts_the_operator_lists() {
        let config = Config::parse("").unwrap();
        assert!(config.local_repos_allowed("admin"), "the default account");
        assert!(!config.local_repos_allowed("bob"));
        assert!(config.deprecations().is_empty());

        let config = Config::parse("default_handle = \"ops\"\n").unwrap();
        assert!(config.local_repos_allowed("ops"));
        assert!(!config.local_repos_allowed("admin"));

        let config = Config::parse("[git]\nlocal_repo_accounts = [\"alice\", \"bob\"]\n").unwrap();
        config.validate().unwrap();
        assert!(config.local_repos_allowed("bob"));
        assert!(
            !config.local_repos_allowed("admin"),
            "a list replaces the default"
        );
        let config = Config::parse("[git]\nlocal_repo_accounts = []\n").unwrap();
        assert!(!config.local_repos_allowed("admin"));

        let config = Config::parse("[git]\nlocal_repo_accounts = [\"Not A Handle\"]\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("git.local_repo_accounts"), "{err}");
    }

    /// Files written for older versions keep parsing; the daemon warns with the new key.
    #[test]
    fn the_old_allow_local_repos_key_still_parses_and_names_its_replacement() {
        let config = Config::parse("[deploy]\nallow_local_repos = false\n").unwrap();
        config.validate().unwrap();
        assert!(!config.local_repos_allowed("admin"));
        let notes = config.deprecations();
        assert!(notes[0].contains("git.local_repo_accounts"), "{notes:?}");

        let config = Config::parse("[deploy]\nallow_local_repos = true\n").unwrap();
        config.validate().unwrap();
        assert!(config.local_repos_allowed("admin"));
        assert!(
            !config.local_repos_allowed("bob"),
            "no longer every account"
        );
        let notes = config.deprecations();
        assert!(notes[0].contains("git.local_repo_accounts"), "{notes:?}");
        assert!(notes[0].contains("unless listed"), "{notes:?}");

        let config = Config::parse(
            "[deploy]\nallow_local_repos = false\n[git]\nlocal_repo_accounts = [\"admin\"]\n",
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("deploy.allow_local_repos"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let config = Config {
            base_domain: "Bad_Domain".into(),
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("base_domain"));
        let config = Config {
            default_handle: "Admin".into(),
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("default_handle"));
        let config = Config {
            metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        let mut config = Config::default();
        config.console.enabled = true;
        config.console.hostname = Some("a.b.localhost".into());
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("could be a project's hostname"));
        config.console.hostname = Some("not a name".into());
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("console.hostname"));
        let mut config = Config::default();
        config.backups.s3.enabled = true;
        for (tweak, named) in [
            (
                (|s3: &mut S3Config| s3.endpoint = "ftp://host".into()) as fn(&mut S3Config),
                "backups.s3.endpoint",
            ),
            (
                |s3| s3.endpoint = "https://key:secret@host".into(),
                "no credentials",
            ),
            (|s3| s3.bucket = "Bad_Bucket".into(), "backups.s3.bucket"),
            (|s3| s3.prefix = "/abs".into(), "backups.s3.prefix"),
            (|s3| s3.access_key_id.clear(), "backups.s3.access_key_id"),
            (
                |s3| s3.secret_access_key = None,
                "CANTILA_BACKUP_S3_SECRET_ACCESS_KEY",
            ),
            (|s3| s3.part_size_mb = 4, "backups.s3.part_size_mb"),
        ] {
            let mut s3 = S3Config {
                enabled: true,
                endpoint: "https://s3.example.com".into(),
                bucket: "backups".into(),
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Some("s3cr3t".into()),
                ..S3Config::default()
            };
            s3.validate().unwrap();
            tweak(&mut s3);
            let err = s3.validate().unwrap_err();
            assert!(err.contains(named), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
            config.backups.s3 = s3;
            assert!(config.validate().is_err());
        }
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let mut config = Config::default();
        config.metrics.interval_secs = 7;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("metrics.interval_secs"));
    }
}
