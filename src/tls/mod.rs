//! TLS for the edge: certificates from ACME, from the operator's directory or from a local
//! CA, served through one SNI resolver, as the `[tls]` section (`config::TlsConfig`)
//! chooses. Also the check of git servers' certificates for fetches ([`OriginVerifier`]).
//!
//! Sole user of rustls, tokio-rustls, rcgen, instant-acme, hyper-rustls, notify and
//! x509-parser. None of their types appear in this module's public API with one
//! exception: [`Tls::server_config`] returns the `Arc<rustls::ServerConfig>` the edge hands
//! to `tokio_rustls::TlsAcceptor`, because that is the one value the edge cannot do
//! without.
//!
//! Layout in the data dir, all owner-only:
//! - `certs/hosts/<host>/fullchain.pem`, `privkey.pem` (0600), `status.json`: certificates
//!   this module obtained (ACME or the local CA) and the state of their issuance;
//! - `certs/manual/`: the operator's certificates (`<name>.pem` + `<name>.key`, or one
//!   combined PEM), watched and reloaded live; they win over obtained ones for their names;
//! - `certs/local-ca/ca.pem`, `ca.key`: the local CA of `mode = "self-signed"`;
//! - `certs/acme/account.key`: the ACME account key, created once.
//!
//! The edge's side of the contract: serve HTTPS with [`Tls::server_config`]; after a
//! handshake whose ALPN is [`ACME_TLS_ALPN_PROTOCOL`] close the connection without
//! serving HTTP (it was a TLS-ALPN-01 validation); answer
//! `GET /.well-known/acme-challenge/<token>` on the HTTP listener from
//! [`Tls::challenges`]; redirect HTTP to HTTPS only when [`Tls::has_certificate`].

mod acme;
mod origin;
mod resolver;
mod self_signed;
mod store;

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::Duration,
};

use time::OffsetDateTime;

use crate::config::AcmeDirectory;
pub use crate::config::{AcmeChallenge, TlsConfig, TlsMode};
pub use acme::CertificateState;
#[cfg(test)]
pub(crate) use origin::tests::{
    ca_and_leaf as test_ca_and_leaf, leaf_der as test_leaf_der, tls_client as test_tls_client,
    tls_server as test_tls_server,
};
pub use origin::{ClientStream, OriginVerifier, ServerChain};
pub use store::{CertSource, CertStatus, ManualProblem};

use acme::{AcmeIssuer, Http01Challenges};
use resolver::SniResolver;
use self_signed::LocalCa;
use store::CertStore;

/// The ALPN protocol of TLS-ALPN-01 validations (RFC 8737). A connection that negotiated
/// it carries no HTTP: the edge closes it after the handshake.
pub const ACME_TLS_ALPN_PROTOCOL: &[u8] = b"acme-tls/1";

/// Answers ACME HTTP-01 challenges: the edge serves the returned key authorization as the
/// body (`text/plain`) of `GET /.well-known/acme-challenge/<token>`, and 404 for `None`.
pub trait ChallengeResponder: Send + Sync + 'static {
    fn key_authorization(&self, token: &str) -> Option<String>;
}

/// The URL of the ACME directory the `[tls]` section names (instant-acme knows Let's
/// Encrypt's).
pub fn directory_url(config: &TlsConfig) -> Result<String, String> {
    Ok(match config.directory()? {
        AcmeDirectory::LetsEncrypt => instant_acme::LetsEncrypt::Production.url().to_owned(),
        AcmeDirectory::LetsEncryptStaging => instant_acme::LetsEncrypt::Staging.url().to_owned(),
        AcmeDirectory::Url(url) => url.to_owned(),
    })
}

/// What can go wrong in this module. Messages name the file or hostname involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is not a hostname a certificate can be issued for")]
    InvalidHostname(String),
    #[error("certificates are not obtained automatically (tls.mode = \"off\")")]
    Disabled,
    #[error("{path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("tls config: {0}")]
    Config(String),
    #[error("rustls: {0}")]
    Rustls(String),
    #[error("certificate generation: {0}")]
    Generate(String),
    #[error("issuing a certificate for {host} failed: {reason}")]
    IssueFailed { host: String, reason: String },
    #[error("issuing a certificate for {host} failed ({reason}); next attempt at {retry_at}")]
    BackingOff {
        host: String,
        reason: String,
        retry_at: String,
    },
}

impl TlsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The one crypto provider of the module, so no process-wide default is needed.
static CRYPTO_PROVIDER: LazyLock<Arc<rustls::crypto::CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::clone(&CRYPTO_PROVIDER)
}

/// The longest a name may be, in characters (RFC 1035).
const MAX_HOSTNAME_LENGTH: usize = 253;

/// Parses a hostname a certificate can be obtained for: lowercase DNS labels, no
/// wildcard, no IP address. Hostnames become directory names, so anything else is refused.
pub(crate) fn parse_hostname(input: &str) -> Result<String, TlsError> {
    let host = input.trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if host.is_empty()
        || host.len() > MAX_HOSTNAME_LENGTH
        || !labels_ok
        || host.parse::<IpAddr>().is_ok()
    {
        return Err(TlsError::InvalidHostname(input.to_owned()));
    }
    Ok(host)
}

/// Resolves a configured path: absolute as given, relative under the data dir.
fn under_data_dir(data_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        data_dir.join(path)
    }
}

/// TLS for the edge. Cheap to clone; every clone serves the same certificates.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<TlsInner>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.inner.config.mode)
            .finish_non_exhaustive()
    }
}

struct TlsInner {
    config: TlsConfig,
    store: CertStore,
    resolver: Arc<SniResolver>,
    server_config: Arc<rustls::ServerConfig>,
    local_ca: Option<Arc<LocalCa>>,
    acme: Option<AcmeIssuer>,
    challenges: Arc<Http01Challenges>,
    /// One issuance per hostname at a time: a second caller waits and then finds the
    /// certificate the first one obtained.
    issuing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The failure last logged for each hostname, so a failure is logged when it starts
    /// or changes, never again for every caller that finds it still there (the route
    /// table asks for every served hostname every few seconds, and a tenant can add
    /// many hostnames).
    reported_failures: Mutex<HashMap<String, String>>,
}

impl Tls {
    /// Loads the certificates in `<data_dir>/certs`, starts watching the operator's
    /// directory, and in `self-signed` mode makes the local CA on first start. Blocking
    /// (file I/O); call it before serving or from a blocking task. Nothing is contacted
    /// over the network until a certificate is requested.
    pub fn start(data_dir: &Path, config: TlsConfig) -> Result<Tls, TlsError> {
        config.validate().map_err(TlsError::Config)?;
        let certs_dir = data_dir.join("certs");
        store::create_private_dir(&certs_dir)?;
        let local_ca = match config.mode {
            TlsMode::SelfSigned => Some(Arc::new(LocalCa::load_or_create(
                &certs_dir.join("local-ca"),
            )?)),
            TlsMode::Acme | TlsMode::Off => None,
        };
        let resolver = Arc::new(SniResolver::new(local_ca.clone()));
        let manual_dir = config
            .manual_dir
            .as_deref()
            .map(|dir| under_data_dir(data_dir, dir))
            .unwrap_or_else(|| certs_dir.join("manual"));
        let store = CertStore::open(&certs_dir.join("hosts"), &manual_dir, resolver.clone())?;
        let challenges = Arc::new(Http01Challenges::default());
        let acme = match config.mode {
            TlsMode::Acme => Some(AcmeIssuer::new(
                &certs_dir.join("acme"),
                &config,
                config
                    .acme_extra_roots
                    .as_deref()
                    .map(|path| under_data_dir(data_dir, path))
                    .as_deref(),
                challenges.clone(),
                resolver.clone(),
            )?),
            TlsMode::SelfSigned | TlsMode::Off => None,
        };
        let mut server_config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Rustls(err.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server_config.alpn_protocols = vec![
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
            ACME_TLS_ALPN_PROTOCOL.to_vec(),
        ];
        Ok(Tls {
            inner: Arc::new(TlsInner {
                config,
                store,
                resolver,
                server_config: Arc::new(server_config),
                local_ca,
                acme,
                challenges,
                issuing: Mutex::new(HashMap::new()),
                reported_failures: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The rustls configuration of the HTTPS listener: SNI resolution over the store,
    /// ALPN `h2`, `http/1.1` and `acme-tls/1`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.inner.server_config.clone()
    }

    /// Completes the TLS handshake of an HTTPS connection. `Ok(None)` for an ACME
    /// TLS-ALPN-01 validation, which ends with the handshake.
    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<
        Option<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>,
    > {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.server_config.clone());
        let stream = acceptor.accept(stream).await?;
        let (_, connection) = stream.get_ref();
        if connection.alpn_protocol() == Some(ACME_TLS_ALPN_PROTOCOL) {
            return Ok(None);
        }
        Ok(Some(stream))
    }

    /// HTTP-01 key authorizations of the orders in flight, for the edge's HTTP listener.
    pub fn challenges(&self) -> Arc<dyn ChallengeResponder> {
        self.inner.challenges.clone()
    }

    pub fn mode(&self) -> TlsMode {
        self.inner.config.mode
    }

    /// Whether a certificate valid now covers `host` (obtained or the operator's), so the
    /// edge may redirect HTTP to HTTPS. Certificates made on the fly for unknown names in
    /// `self-signed` mode do not count: only hostnames passed to `ensure_certificate` do.
    pub fn has_certificate(&self, host: &str) -> bool {
        self.inner.resolver.has_valid_certificate(host)
    }

    /// The certificate served for `host` now, if any: where it came from, its issuer and
    /// expiry.
    pub fn status(&self, host: &str) -> Option<CertStatus> {
        self.inner.store.status(host)
    }

    /// The state of obtaining a certificate for `host` (pending, issued, or failed with the
    /// reason and the next attempt), if one was ever requested.
    pub fn state(&self, host: &str) -> Option<CertificateState> {
        let host = parse_hostname(host).ok()?;
        self.inner.store.state(&host)
    }

    /// The operator's files that could not be loaded, and why.
    pub fn manual_problems(&self) -> Vec<ManualProblem> {
        self.inner.store.manual_problems()
    }

    /// The local CA's certificate (PEM) in `self-signed` mode, for clients to trust.
    pub fn local_ca_pem(&self) -> Option<String> {
        self.inner
            .local_ca
            .as_ref()
            .map(|ca| ca.certificate_pem().to_owned())
    }

    /// Makes sure `host` has a certificate, obtaining or renewing one when it has none or
    /// it expires within `renew_before_days`. An operator certificate for the name is
    /// enough. After a failure, further attempts wait out an exponential backoff and
    /// return `TlsError::BackingOff` meanwhile, so calling this often never floods the CA.
    ///
    /// The outcome is logged here, once per change for each hostname (a new failure, a
    /// failure with another reason, a recovery), so callers log nothing of their own and
    /// calling this every few seconds never floods the log either.
    pub async fn ensure_certificate(&self, host: &str) -> Result<CertStatus, TlsError> {
        let outcome = self.ensure_certificate_unreported(host).await;
        self.report(host, &outcome);
        outcome
    }

    /// Logs `outcome` for `host` if it differs from what was last logged for it.
    fn report(&self, host: &str, outcome: &Result<CertStatus, TlsError>) {
        let key = parse_hostname(host).unwrap_or_else(|_| host.to_owned());
        let mut reported = self
            .inner
            .reported_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let failure = match outcome {
            // Still waiting out a failure already logged: nothing changed.
            Err(TlsError::BackingOff { .. }) => return,
            Ok(_) => {
                if let Some(reason) = reported.remove(&key) {
                    tracing::info!(host = %key, earlier_failure = %reason, "certificate obtained after failing");
                }
                return;
            }
            Err(TlsError::IssueFailed { reason, .. }) => reason.clone(),
            Err(other) => other.to_string(),
        };
        if reported.get(&key) == Some(&failure) {
            tracing::debug!(host = %key, reason = %failure, "certificate request failed again");
            return;
        }
        tracing::warn!(host = %key, reason = %failure, "obtaining a certificate failed; retrying with backoff");
        reported.insert(key, failure);
    }

    async fn ensure_certificate_unreported(&self, host: &str) -> Result<CertStatus, TlsError> {
        let host = parse_hostname(host)?;
        if self.inner.config.mode == TlsMode::Off {
            return Err(TlsError::Disabled);
        }
        let lock = self.issuing_lock(&host);
        let _issuing = lock.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(status) = self.inner.store.operator_certificate(&host, now) {
            return Ok(status);
        }
        if !self.needs_issuance(&host, now) {
            if let Some(status) = self.inner.store.status(&host) {
                return Ok(status);
            }
        }
        if let Some(CertificateState::Failed {
            reason, retry_at, ..
        }) = self.inner.store.state(&host)
        {
            if acme::parse_time(&retry_at).is_some_and(|retry_at| retry_at > now) {
                return Err(TlsError::BackingOff {
                    host,
                    reason,
                    retry_at,
                });
            }
        }
        let result = self.issue(&host).await;
        let store = self.inner.store.clone();
        let recorded_host = host.clone();
        match result {
            Ok(()) => {
                blocking(move || store.record_issued(&recorded_host)).await?;
                self.inner
                    .store
                    .status(&host)
                    .ok_or_else(|| TlsError::IssueFailed {
                        host,
                        reason: "the new certificate did not load".to_owned(),
                    })
            }
            Err(reason) => {
                let failure_reason = reason.clone();
                blocking(move || store.record_failure(&recorded_host, &failure_reason)).await?;
                Err(TlsError::IssueFailed { host, reason })
            }
        }
    }

    /// Stops managing `host`: its obtained certificate and state are deleted (the
    /// operator's files are never touched). For a hostname no project uses any more.
    pub async fn forget(&self, host: &str) -> Result<(), TlsError> {
        let host = parse_hostname(host)?;
        let lock = self.issuing_lock(&host);
        let _issuing = lock.lock().await;
        self.inner
            .reported_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&host);
        let store = self.inner.store.clone();
        blocking(move || store.remove_host(&host)).await
    }

    /// One renewal pass: every managed hostname whose certificate is missing, expiring or
    /// of the wrong kind for the mode, and whose backoff has passed, is (re)issued.
    /// Returns the hostnames attempted with their outcome.
    pub async fn renew_due(&self) -> Vec<(String, Result<CertStatus, TlsError>)> {
        let now = OffsetDateTime::now_utc();
        let mut outcomes = Vec::new();
        if self.inner.config.mode == TlsMode::Off {
            return outcomes;
        }
        for host in self.inner.store.managed_hosts() {
            if self.inner.store.operator_certificate(&host, now).is_some()
                || !self.needs_issuance(&host, now)
                || self.backing_off(&host, now)
            {
                continue;
            }
            let outcome = self.ensure_certificate(&host).await;
            outcomes.push((host, outcome));
        }
        outcomes
    }

    /// When the renewal scheduler should look again: at the earliest backoff deadline,
    /// at most `RENEWAL_CHECK_INTERVAL` from now.
    fn next_renewal_check(&self) -> Duration {
        let now = OffsetDateTime::now_utc();
        let earliest_retry = self
            .inner
            .store
            .managed_hosts()
            .into_iter()
            .filter_map(|host| match self.inner.store.state(&host) {
                Some(CertificateState::Failed { retry_at, .. }) => acme::parse_time(&retry_at),
                _ => None,
            })
            .min();
        let until_retry = earliest_retry
            .map(|at| Duration::try_from(at - now).unwrap_or(Duration::ZERO))
            .unwrap_or(RENEWAL_CHECK_INTERVAL);
        until_retry.clamp(MIN_RENEWAL_WAIT, RENEWAL_CHECK_INTERVAL)
    }

    fn backing_off(&self, host: &str, now: OffsetDateTime) -> bool {
        matches!(
            self.inner.store.state(host),
            Some(CertificateState::Failed { retry_at, .. })
                if acme::parse_time(&retry_at).is_some_and(|at| at > now)
        )
    }

    /// Whether `host` needs a certificate from this module's source: none yet, one
    /// expiring within `renew_before_days`, an order interrupted by a restart, or (in
    /// `acme` mode) one from the local CA that ACME should replace.
    fn needs_issuance(&self, host: &str, now: OffsetDateTime) -> bool {
        if matches!(
            self.inner.store.state(host),
            Some(CertificateState::Pending)
        ) {
            return true;
        }
        let Some(current) = self.inner.store.managed_certificate(host) else {
            return true;
        };
        let renew_at = current.not_after
            - time::Duration::days(i64::from(self.inner.config.renew_before_days));
        let wrong_kind =
            self.inner.config.mode == TlsMode::Acme && current.source != CertSource::Acme;
        now >= renew_at || wrong_kind
    }

    /// Obtains a certificate for `host` from the mode's source and stores it. The error
    /// is the reason, recorded on the hostname by the caller.
    async fn issue(&self, host: &str) -> Result<(), String> {
        match (&self.inner.acme, &self.inner.local_ca) {
            (Some(acme), _) => {
                let store = self.inner.store.clone();
                let pending_host = host.to_owned();
                blocking(move || store.record_pending(&pending_host))
                    .await
                    .map_err(|err| err.to_string())?;
                let issued = acme.issue(host).await?;
                let store = self.inner.store.clone();
                let host = host.to_owned();
                blocking(move || {
                    store.write_managed(
                        &host,
                        issued.chain_pem.as_bytes(),
                        issued.key_pem.as_bytes(),
                        CertSource::Acme,
                    )
                })
                .await
                .map_err(|err| err.to_string())
            }
            (None, Some(local_ca)) => {
                let local_ca = local_ca.clone();
                let store = self.inner.store.clone();
                let host = host.to_owned();
                blocking(move || {
                    let leaf = local_ca.issue_leaf(&host)?;
                    store.write_managed(
                        &host,
                        leaf.chain_pem.as_bytes(),
                        leaf.key_pem.as_bytes(),
                        CertSource::SelfSigned,
                    )
                })
                .await
                .map_err(|err| err.to_string())
            }
            (None, None) => Err(TlsError::Disabled.to_string()),
        }
    }

    fn issuing_lock(&self, host: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .issuing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Drop locks nobody holds, so the map does not grow with every name ever seen.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(host.to_owned()).or_default().clone()
    }
}

/// How often the renewal scheduler looks at expiry dates when no backoff ends sooner.
const RENEWAL_CHECK_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The shortest pause between renewal passes, so a clock jump cannot make it spin.
const MIN_RENEWAL_WAIT: Duration = Duration::from_secs(30);

/// The certificate renewal scheduler the daemon spawns: renews what `Tls::renew_due`
/// finds, hourly and when a backoff ends, until `shutdown` completes.
pub async fn run_renewals(tls: Tls, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    loop {
        for (host, outcome) in tls.renew_due().await {
            match outcome {
                Ok(status) => {
                    tracing::info!(%host, not_after = %status.not_after, "certificate renewed")
                }
                // `ensure_certificate` logged the failure, once per change.
                Err(err) => tracing::debug!(%host, error = %err, "certificate renewal failed"),
            }
        }
        let wait = tls.next_renewal_check();
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TlsError> + Send + 'static,
) -> Result<T, TlsError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| TlsError::Generate(format!("a blocking task failed: {err}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_parsed_once_and_strictly() {
        assert_eq!(
            parse_hostname("App.Example.COM.").unwrap(),
            "app.example.com"
        );
        assert_eq!(parse_hostname("localhost").unwrap(), "localhost");
        for bad in [
            "",
            ".",
            "*.example.com",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "../etc",
            "a/b",
            "127.0.0.1",
            "::1",
            "é.com",
        ] {
            assert!(parse_hostname(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_hostname(&"a.".repeat(128)).is_err());
    }

    #[test]
    fn config_defaults_parse_and_validate() {
        let parsed: TlsConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, TlsConfig::default());
        parsed.validate().unwrap();
        assert_eq!(
            directory_url(&parsed).unwrap(),
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        let staging: TlsConfig =
            toml::from_str("acme_directory = \"letsencrypt-staging\"").unwrap();
        assert!(directory_url(&staging).unwrap().contains("staging"));
        let full: TlsConfig = toml::from_str(
            "mode = \"self-signed\"\nacme_directory = \"https://127.0.0.1:14000/dir\"\n\
             acme_email = \"ops@example.com\"\nacme_challenge = \"tls-alpn-01\"\n\
             acme_extra_roots = \"pebble.pem\"\nmanual_dir = \"/etc/cantila/certs\"\n\
             renew_before_days = 20\n",
        )
        .unwrap();
        full.validate().unwrap();
        assert_eq!(full.mode, TlsMode::SelfSigned);
        assert_eq!(full.acme_challenge, AcmeChallenge::TlsAlpn01);
    }
}
