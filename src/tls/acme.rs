//! ACME with instant-acme: the account key (made once), one order per hostname (HTTP-01
//! through the edge's challenge map or TLS-ALPN-01 through the resolver), the CSR, and the
//! recorded state of each hostname's issuance with its backoff.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus, Problem,
    RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    crypto_provider,
    resolver::SniResolver,
    self_signed::IssuedPair,
    store::{create_private_dir, write_atomically},
    AcmeChallenge, ChallengeResponder, TlsConfig, TlsError,
};

const ACCOUNT_KEY_FILE: &str = "account.key";

/// An order that has not completed by then is abandoned and recorded as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The first wait after a failure; each further failure doubles it up to the cap.
const FIRST_BACKOFF_MINUTES: i64 = 5;
const MAX_BACKOFF_MINUTES: i64 = 24 * 60;

/// Where obtaining a hostname's certificate stands, as the API's domain listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CertificateState {
    /// An order is in flight (or was, when the daemon stopped; it is retried).
    Pending,
    /// The last order succeeded at `at` (RFC 3339).
    Issued { at: String },
    /// The last order failed; no new attempt is made before `retry_at` (RFC 3339).
    Failed {
        reason: String,
        failures: u32,
        retry_at: String,
    },
}

/// The wait before the next attempt after `failures` failures in a row: 5 minutes,
/// doubling, at most a day.
pub(crate) fn backoff(failures: u32) -> time::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let minutes = FIRST_BACKOFF_MINUTES.saturating_mul(1 << doublings);
    time::Duration::minutes(minutes.min(MAX_BACKOFF_MINUTES))
}

pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The HTTP-01 key authorizations of pending orders, by token.
#[derive(Default)]
pub(crate) struct Http01Challenges {
    by_token: RwLock<HashMap<String, String>>,
}

impl ChallengeResponder for Http01Challenges {
    fn key_authorization(&self, token: &str) -> Option<String> {
        self.by_token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }
}

impl Http01Challenges {
    fn insert(&self, token: &str, key_authorization: &str) {
        self.by_token
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    fn remove(&self, token: &str) {
        self.by_token
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }
}

/// Challenge answers published for one order, withdrawn when it ends however it ends.
struct PublishedChallenges {
    http01: Arc<Http01Challenges>,
    resolver: Arc<SniResolver>,
    tokens: Vec<String>,
    alpn_hosts: Vec<String>,
}

impl PublishedChallenges {
    fn publish_token(&mut self, token: &str, key_authorization: &str) {
        self.http01.insert(token, key_authorization);
        self.tokens.push(token.to_owned());
    }

    fn publish_alpn(&mut self, host: &str, certificate: Arc<CertifiedKey>) {
        self.resolver.set_alpn_challenge(host, certificate);
        self.alpn_hosts.push(host.to_owned());
    }
}

impl Drop for PublishedChallenges {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.http01.remove(token);
        }
        for host in &self.alpn_hosts {
            self.resolver.remove_alpn_challenge(host);
        }
    }
}

/// Obtains certificates from one ACME directory with one account.
pub(crate) struct AcmeIssuer {
    directory_url: String,
    email: Option<String>,
    challenge: AcmeChallenge,
    account_key: PrivatePkcs8KeyDer<'static>,
    /// Trusts the system's roots plus the configured extra ones, for the directory's HTTPS.
    client_config: Arc<rustls::ClientConfig>,
    /// Made on first use (it needs the network), then reused.
    account: tokio::sync::Mutex<Option<Account>>,
    http01: Arc<Http01Challenges>,
    resolver: Arc<SniResolver>,
}

impl AcmeIssuer {
    /// Loads or makes the account key in `dir` and reads the trusted roots. Contacts
    /// nobody.
    pub(crate) fn new(
        dir: &Path,
        config: &TlsConfig,
        extra_roots: Option<&Path>,
        http01: Arc<Http01Challenges>,
        resolver: Arc<SniResolver>,
    ) -> Result<Self, TlsError> {
        create_private_dir(dir)?;
        let directory_url = super::directory_url(config).map_err(TlsError::Config)?;
        Ok(Self {
            directory_url,
            email: config.acme_email.clone(),
            challenge: config.acme_challenge,
            account_key: load_or_create_account_key(&dir.join(ACCOUNT_KEY_FILE))?,
            client_config: Arc::new(directory_client_config(extra_roots)?),
            account: tokio::sync::Mutex::new(None),
            http01,
            resolver,
        })
    }

    /// Runs one order for `host` to the end. The error is the reason, in words.
    pub(crate) async fn issue(&self, host: &str) -> Result<IssuedPair, String> {
        if host == "localhost" || host.ends_with(".localhost") {
            return Err("ACME CAs do not issue certificates for localhost names; \
                        use tls.mode = \"self-signed\" for local use"
                .to_owned());
        }
        let account = self.account().await?;
        tokio::time::timeout(ORDER_TIMEOUT, self.order(&account, host))
            .await
            .map_err(|_| {
                format!(
                    "the order did not complete within {} minutes",
                    ORDER_TIMEOUT.as_secs() / 60
                )
            })?
    }

    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let key = instant_acme::Key::from_pkcs8_der(self.account_key.clone_key())
            .map_err(|err| format!("the ACME account key is unusable: {err}"))?;
        // The same key finds the existing account, or registers it on a new directory.
        let (account, _credentials) = Account::builder_with_http(self.http_client())
            .create_from_key(
                (key, PrivateKeyDer::Pkcs8(self.account_key.clone_key())),
                self.directory_url.clone(),
            )
            .await
            .map_err(|err| {
                format!(
                    "cannot use the ACME account at {}: {}",
                    self.directory_url,
                    describe(err)
                )
            })?;
        if let Some(email) = &self.email {
            let contact = format!("mailto:{email}");
            if let Err(err) = account.update_contacts(&[contact.as_str()]).await {
                tracing::warn!(%email, error = %describe(err), "the ACME CA refused the contact email");
            }
        }
        *slot = Some(account.clone());
        Ok(account)
    }

    fn http_client(&self) -> Box<dyn instant_acme::HttpClient> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.client_config.as_ref().clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, instant_acme::BodyWrapper<bytes::Bytes>>(connector);
        Box::new(client)
    }

    async fn order(&self, account: &Account, host: &str) -> Result<IssuedPair, String> {
        let identifiers = [Identifier::Dns(host.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(describe)?;
        let mut published = PublishedChallenges {
            http01: self.http01.clone(),
            resolver: self.resolver.clone(),
            tokens: Vec::new(),
            alpn_hosts: Vec::new(),
        };
        let (challenge_type, challenge_name) = match self.challenge {
            AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
            AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(describe)?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                // Proven recently for this account; the CA reuses it.
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the CA's authorization for {host} is {other:?}")),
            }
            let mut challenge = authorization
                .challenge(challenge_type.clone())
                .ok_or_else(|| format!("the CA offers no {challenge_name} challenge for {host}"))?;
            let key_authorization = challenge.key_authorization();
            match self.challenge {
                AcmeChallenge::Http01 => {
                    published.publish_token(&challenge.token, key_authorization.as_str())
                }
                AcmeChallenge::TlsAlpn01 => published.publish_alpn(
                    host,
                    alpn_challenge_certificate(host, key_authorization.digest().as_ref())?,
                ),
            }
            challenge.set_ready().await.map_err(describe)?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(2.0)
            .timeout(Duration::from_secs(120));
        match order.poll_ready(&retries).await {
            Ok(OrderStatus::Ready) => {}
            Ok(status) => {
                return Err(why_invalid(&mut order, format!("the order became {status:?}")).await)
            }
            Err(err) => return Err(why_invalid(&mut order, describe(err)).await),
        }
        drop(published);

        let key = KeyPair::generate().map_err(|err| err.to_string())?;
        let mut params =
            CertificateParams::new(vec![host.to_owned()]).map_err(|err| err.to_string())?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|err| err.to_string())?;
        order.finalize_csr(csr.der()).await.map_err(describe)?;
        let chain_pem = order.poll_certificate(&retries).await.map_err(describe)?;
        Ok(IssuedPair {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// The validators' own words when an order fails: each challenge's error, else `fallback`.
async fn why_invalid(order: &mut Order, fallback: String) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            reasons.extend(
                state
                    .challenges
                    .iter()
                    .filter_map(|challenge| challenge.error.as_ref())
                    .map(describe_problem),
            );
        }
    }
    if reasons.is_empty() {
        fallback
    } else {
        reasons.join("; ")
    }
}

fn describe(err: instant_acme::Error) -> String {
    match err {
        instant_acme::Error::Api(problem) => describe_problem(&problem),
        other => error_chain(&other),
    }
}

/// `detail (type)`, e.g. `Connection refused (connection)`, with any subproblems.
fn describe_problem(problem: &Problem) -> String {
    let detail = problem.detail.as_deref().unwrap_or("no detail given");
    let kind = problem
        .r#type
        .as_deref()
        .and_then(|kind| kind.rsplit(':').next());
    let mut text = match kind {
        Some(kind) => format!("{detail} ({kind})"),
        None => detail.to_owned(),
    };
    for subproblem in &problem.subproblems {
        if let Some(detail) = &subproblem.detail {
            text.push_str("; ");
            text.push_str(detail);
        }
    }
    text
}

/// An error with its causes, since connection errors hide the useful part in a source.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The self-signed certificate a TLS-ALPN-01 validator expects: the hostname and the
/// SHA-256 of the key authorization in the critical acmeIdentifier extension (RFC 8737).
fn alpn_challenge_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = KeyPair::generate().map_err(|err| err.to_string())?;
    let mut params =
        CertificateParams::new(vec![host.to_owned()]).map_err(|err| err.to_string())?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let certificate = params.self_signed(&key).map_err(|err| err.to_string())?;
    let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension. The key was made just above
    // for this certificate, so there is nothing to check.
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|err| err.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![certificate.der().clone()],
        signing_key,
    )))
}

/// Reads the account key, or makes one (ECDSA P-256, PKCS#8, 0600) on first use.
fn load_or_create_account_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, TlsError> {
    match fs::read(path) {
        Ok(pem) => {
            PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|err| TlsError::BadCertificate {
                path: path.to_owned(),
                reason: format!("not a PKCS#8 PEM private key ({err}); restore it from a backup"),
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(|err| TlsError::Generate(err.to_string()))?;
            write_atomically(path, key.serialize_pem().as_bytes(), 0o600)?;
            Ok(PrivatePkcs8KeyDer::from(key.serialize_der()))
        }
        Err(err) => Err(TlsError::io(path, err)),
    }
}

/// The client configuration for the ACME directory: the system's roots, plus the extra
/// ones configured for a CA that serves its directory with its own certificate.
fn directory_client_config(extra_roots: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    // Like browsers, skip system roots this library cannot parse rather than fail.
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_roots {
        let bad = |reason: String| TlsError::BadCertificate {
            path: PathBuf::from(path),
            reason,
        };
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|err| bad(format!("tls.acme_extra_roots: {err}")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad(format!("tls.acme_extra_roots: {err}")))?;
        if certificates.is_empty() {
            return Err(bad(
                "tls.acme_extra_roots holds no PEM certificate".to_owned()
            ));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|err| bad(format!("tls.acme_extra_roots: {err}")))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Config(
            "no trusted root certificates: the system has none and tls.acme_extra_roots \
             is not set"
                .to_owned(),
        ));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Rustls(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_minutes_up_to_a_day() {
        let minutes: Vec<i64> = [0, 1, 2, 3, 4, 8, 9, 50, u32::MAX]
            .into_iter()
            .map(|failures| backoff(failures).whole_minutes())
            .collect();
        assert_eq!(minutes, [5, 5, 10, 20, 40, 640, 1280, 1440, 1440]);
    }

    #[test]
    fn states_serialize_as_tagged_json() {
        let failed = CertificateState::Failed {
            reason: "Connection refused (connection)".to_owned(),
            failures: 2,
            retry_at: "2026-01-02T03:04:05.000Z".to_owned(),
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["failures"], 2);
        let back: CertificateState = serde_json::from_value(json).unwrap();
        assert_eq!(back, failed);
        assert_eq!(
            serde_json::to_value(CertificateState::Pending).unwrap()["state"],
            "pending"
        );
        assert!(parse_time("2026-01-02T03:04:05.000Z").is_some());
    }

    #[test]
    fn the_account_key_is_made_once_and_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCOUNT_KEY_FILE);
        let first = load_or_create_account_key(&path).unwrap();
        let again = load_or_create_account_key(&path).unwrap();
        assert_eq!(first.secret_pkcs8_der(), again.secret_pkcs8_der());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        instant_acme::Key::from_pkcs8_der(first).unwrap();
    }

    #[test]
    fn http01_answers_only_published_tokens_until_withdrawn() {
        let http01 = Arc::new(Http01Challenges::default());
        {
            let mut published = PublishedChallenges {
                http01: http01.clone(),
                resolver: Arc::new(SniResolver::new(None)),
                tokens: Vec::new(),
                alpn_hosts: Vec::new(),
            };
            published.publish_token("tok", "tok.thumbprint");
            assert_eq!(
                http01.key_authorization("tok").as_deref(),
                Some("tok.thumbprint")
            );
            assert_eq!(http01.key_authorization("other"), None);
        }
        assert_eq!(http01.key_authorization("tok"), None);
    }

    #[test]
    fn the_tls_alpn_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let certificate = alpn_challenge_certificate("alpn.example.com", &digest).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&certificate.cert[0]).unwrap();
        let acme_identifier = parsed
            .extensions()
            .iter()
            .find(|extension| extension.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(acme_identifier.critical);
        // DER: an OCTET STRING (0x04) of 32 bytes holding the digest.
        assert_eq!(acme_identifier.value[..2], [0x04, 32]);
        assert_eq!(acme_identifier.value[2..], digest);
        let names = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1);
        assert_eq!(
            names.value.general_names[0].to_string(),
            "DNSName(alpn.example.com)"
        );
    }

    #[test]
    fn extra_roots_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = directory_client_config(Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(missing.to_string().contains("missing.pem"), "{missing}");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "nothing here").unwrap();
        let err = directory_client_config(Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[tokio::test]
    async fn localhost_names_fail_without_contacting_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::Tls::start(dir.path(), TlsConfig::default()).unwrap();
        let err = tls.ensure_certificate("app.localhost").await.unwrap_err();
        assert!(err.to_string().contains("self-signed"), "{err}");
        let Some(CertificateState::Failed { failures: 1, .. }) = tls.state("app.localhost") else {
            panic!("the failure is recorded: {:?}", tls.state("app.localhost"));
        };
        // Within the backoff, the recorded failure is returned without a new attempt.
        let err = tls.ensure_certificate("app.localhost").await.unwrap_err();
        assert!(matches!(err, TlsError::BackingOff { .. }), "{err}");
        assert!(matches!(
            tls.state("app.localhost"),
            Some(CertificateState::Failed { failures: 1, .. })
        ));
    }
}
