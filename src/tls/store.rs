//! The certificate store on disk: obtained certificates under `certs/hosts/<host>/` and the
//! operator's directory, watched with notify and reloaded live; every change is published
//! to the SNI resolver as one new snapshot.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use notify::Watcher;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    acme::{self, CertificateState},
    crypto_provider, parse_hostname,
    resolver::{CertificateSnapshot, SniResolver},
    TlsError,
};

const CHAIN_FILE: &str = "fullchain.pem";
const KEY_FILE: &str = "privkey.pem";
const RECORD_FILE: &str = "status.json";

/// How long the operator's directory must be quiet before it is reloaded, so a certificate
/// and its key copied one after the other load together.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertSource {
    Acme,
    Manual,
    SelfSigned,
}

impl CertSource {
    /// The name the API shows: `acme`, `manual`, `self-signed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Acme => "acme",
            CertSource::Manual => "manual",
            CertSource::SelfSigned => "self-signed",
        }
    }
}

/// The certificate served for a hostname, as the API's domain listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    pub source: CertSource,
    /// The issuer's distinguished name, e.g. `C=US, O=Let's Encrypt, CN=R11`.
    pub issuer: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// The DNS names the certificate covers (`*.example.com` for a wildcard).
    pub names: Vec<String>,
}

/// An operator's file that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualProblem {
    pub file: PathBuf,
    pub reason: String,
}

/// A certificate chain with its key, ready for rustls, and what the API shows about it.
pub(crate) struct LoadedCertificate {
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) source: CertSource,
    pub(crate) names: Vec<String>,
    pub(crate) issuer: String,
    pub(crate) not_after: OffsetDateTime,
}

impl LoadedCertificate {
    /// Parses a PEM chain (leaf first) and a PEM private key, checking that they match.
    pub(crate) fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        source: CertSource,
    ) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("unreadable PEM certificate: {err}"))?;
        if chain.is_empty() {
            return Err("no certificate found".to_owned());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| match err {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key found".to_owned(),
            other => format!("unreadable PEM private key: {other}"),
        })?;
        Self::from_der(chain, key, source)
    }

    pub(crate) fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: CertSource,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("no certificate found")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|err| format!("the certificate does not parse: {err}"))?;
        let mut names = Vec::new();
        if let Ok(Some(alt_names)) = parsed.subject_alternative_name() {
            for name in &alt_names.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns.trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            return Err("the certificate names no DNS name (subjectAltName)".to_owned());
        }
        let issuer = parsed.issuer().to_string();
        let not_after = parsed.validity().not_after.to_datetime();
        let certified_key =
            CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate".to_owned()
                }
                other => format!("the private key is not usable: {other}"),
            })?;
        Ok(Self {
            certified_key: Arc::new(certified_key),
            source,
            names,
            issuer,
            not_after,
        })
    }

    pub(crate) fn status(&self) -> CertStatus {
        CertStatus {
            source: self.source,
            issuer: self.issuer.clone(),
            not_after: crate::clock::format(self.not_after),
            names: self.names.clone(),
        }
    }

    pub(crate) fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_after > now
    }
}

/// What `status.json` in a host's directory keeps across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HostRecord {
    /// Where the certificate in the directory came from.
    source: Option<CertSource>,
    state: Option<CertificateState>,
    /// Failed attempts since the last success, for the backoff.
    #[serde(default)]
    failures: u32,
}

#[derive(Default)]
struct HostEntry {
    certificate: Option<Arc<LoadedCertificate>>,
    record: HostRecord,
}

#[derive(Default)]
struct StoreState {
    hosts: BTreeMap<String, HostEntry>,
    manual: Vec<Arc<LoadedCertificate>>,
    manual_problems: Vec<ManualProblem>,
}

/// The certificates on disk. Cheap to clone. Blocking: async callers use it from blocking
/// tasks.
#[derive(Clone)]
pub(crate) struct CertStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    hosts_dir: PathBuf,
    manual_dir: PathBuf,
    resolver: Arc<SniResolver>,
    state: Mutex<StoreState>,
    /// Kept alive for as long as the store: dropping it stops the reload thread.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl CertStore {
    /// Loads every certificate, publishes them to `resolver`, and starts watching
    /// `manual_dir` (created when missing).
    pub(crate) fn open(
        hosts_dir: &Path,
        manual_dir: &Path,
        resolver: Arc<SniResolver>,
    ) -> Result<Self, TlsError> {
        create_private_dir(hosts_dir)?;
        create_private_dir(manual_dir)?;
        let hosts = load_hosts(hosts_dir)?;
        let inner = Arc::new(StoreInner {
            hosts_dir: hosts_dir.to_owned(),
            manual_dir: manual_dir.to_owned(),
            resolver,
            state: Mutex::new(StoreState {
                hosts,
                ..StoreState::default()
            }),
            watcher: Mutex::new(None),
        });
        inner.reload_manual();
        match watch_manual_dir(Arc::downgrade(&inner), manual_dir) {
            Ok(watcher) => {
                *inner.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher)
            }
            Err(reason) => {
                // Serving the certificates already loaded beats refusing to start; the
                // problem is shown where the operator looks for manual certificates.
                tracing::error!(dir = %manual_dir.display(), %reason, "cannot watch the certificate directory");
                inner.lock().manual_problems.push(ManualProblem {
                    file: manual_dir.to_owned(),
                    reason: format!("not watched, changes need a restart: {reason}"),
                });
            }
        }
        Ok(Self { inner })
    }

    /// The certificate served for `host`, as the resolver would pick it.
    pub(crate) fn status(&self, host: &str) -> Option<CertStatus> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.inner
            .resolver
            .snapshot()
            .lookup(&host, OffsetDateTime::now_utc())
            .map(|certificate| certificate.status())
    }

    /// An operator certificate valid now that covers `host`.
    pub(crate) fn operator_certificate(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Option<CertStatus> {
        self.inner
            .resolver
            .snapshot()
            .lookup_operator(host, now)
            .map(|certificate| certificate.status())
    }

    pub(crate) fn managed_certificate(&self, host: &str) -> Option<Arc<LoadedCertificate>> {
        self.inner
            .lock()
            .hosts
            .get(host)
            .and_then(|entry| entry.certificate.clone())
    }

    pub(crate) fn state(&self, host: &str) -> Option<CertificateState> {
        self.inner
            .lock()
            .hosts
            .get(host)
            .and_then(|entry| entry.record.state.clone())
    }

    /// Every hostname this module manages (a certificate or a recorded state).
    pub(crate) fn managed_hosts(&self) -> Vec<String> {
        self.inner.lock().hosts.keys().cloned().collect()
    }

    pub(crate) fn manual_problems(&self) -> Vec<ManualProblem> {
        self.inner.lock().manual_problems.clone()
    }

    /// Stores an obtained certificate for `host` and serves it at once. The key is written
    /// first (0600), the chain second, each atomically: a crash between them leaves a pair
    /// that fails its match check and is obtained again, never a wrong key served.
    pub(crate) fn write_managed(
        &self,
        host: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
        source: CertSource,
    ) -> Result<(), TlsError> {
        let dir = self.inner.hosts_dir.join(host);
        let certificate =
            LoadedCertificate::from_pem(chain_pem, key_pem, source).map_err(|reason| {
                TlsError::BadCertificate {
                    path: dir.clone(),
                    reason,
                }
            })?;
        create_private_dir(&dir)?;
        write_atomically(&dir.join(KEY_FILE), key_pem, 0o600)?;
        write_atomically(&dir.join(CHAIN_FILE), chain_pem, 0o644)?;
        let mut state = self.inner.lock();
        let entry = state.hosts.entry(host.to_owned()).or_default();
        entry.certificate = Some(Arc::new(certificate));
        entry.record.source = Some(source);
        write_record(&dir, &entry.record)?;
        self.inner.publish(&state);
        Ok(())
    }

    /// Records that an order for `host` started.
    pub(crate) fn record_pending(&self, host: &str) -> Result<(), TlsError> {
        self.update_record(host, |record| {
            record.state = Some(CertificateState::Pending)
        })
    }

    pub(crate) fn record_issued(&self, host: &str) -> Result<(), TlsError> {
        self.update_record(host, |record| {
            record.failures = 0;
            record.state = Some(CertificateState::Issued {
                at: crate::clock::now(),
            });
        })
    }

    /// Records a failure with its reason and when the next attempt may be made.
    pub(crate) fn record_failure(&self, host: &str, reason: &str) -> Result<(), TlsError> {
        self.update_record(host, |record| {
            record.failures = record.failures.saturating_add(1);
            let retry_at = OffsetDateTime::now_utc() + acme::backoff(record.failures);
            record.state = Some(CertificateState::Failed {
                reason: reason.to_owned(),
                failures: record.failures,
                retry_at: crate::clock::format(retry_at),
            });
        })
    }

    /// Deletes everything obtained for `host` and stops serving it.
    pub(crate) fn remove_host(&self, host: &str) -> Result<(), TlsError> {
        let dir = self.inner.hosts_dir.join(host);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(TlsError::io(&dir, err)),
        }
        let mut state = self.inner.lock();
        state.hosts.remove(host);
        self.inner.publish(&state);
        Ok(())
    }

    fn update_record(
        &self,
        host: &str,
        change: impl FnOnce(&mut HostRecord),
    ) -> Result<(), TlsError> {
        let dir = self.inner.hosts_dir.join(host);
        create_private_dir(&dir)?;
        let mut state = self.inner.lock();
        let entry = state.hosts.entry(host.to_owned()).or_default();
        change(&mut entry.record);
        write_record(&dir, &entry.record)
    }

    #[cfg(test)]
    pub(crate) fn reload_manual_now(&self) {
        self.inner.reload_manual();
    }
}

impl StoreInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the operator's directory again and serves what it holds now.
    fn reload_manual(&self) {
        let (certificates, problems) = scan_manual_dir(&self.manual_dir);
        for problem in &problems {
            tracing::warn!(file = %problem.file.display(), reason = %problem.reason, "operator certificate not loaded");
        }
        tracing::info!(
            dir = %self.manual_dir.display(),
            loaded = certificates.len(),
            "operator certificates loaded"
        );
        let mut state = self.lock();
        state.manual = certificates;
        // A watch failure recorded at start stays visible next to the file problems.
        let watch_problems = state
            .manual_problems
            .iter()
            .filter(|problem| problem.file == self.manual_dir)
            .cloned()
            .collect::<Vec<_>>();
        state.manual_problems = watch_problems.into_iter().chain(problems).collect();
        self.publish(&state);
    }

    /// Builds the resolver's snapshot from the state and swaps it in.
    fn publish(&self, state: &StoreState) {
        let mut snapshot = CertificateSnapshot::default();
        for (host, entry) in &state.hosts {
            if let Some(certificate) = &entry.certificate {
                snapshot.insert_managed(host, certificate.clone());
            }
        }
        for certificate in &state.manual {
            snapshot.insert_operator(certificate.clone());
        }
        self.resolver.publish(snapshot);
    }
}

/// Loads `<hosts_dir>/<host>/`: the certificate pair when present and `status.json`. A
/// pair that fails to load is logged and left to be obtained again.
fn load_hosts(hosts_dir: &Path) -> Result<BTreeMap<String, HostEntry>, TlsError> {
    let mut hosts = BTreeMap::new();
    let entries = fs::read_dir(hosts_dir).map_err(|err| TlsError::io(hosts_dir, err))?;
    for entry in entries {
        let entry = entry.map_err(|err| TlsError::io(hosts_dir, err))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if parse_hostname(&name).ok().as_deref() != Some(name.as_str()) || !entry.path().is_dir() {
            continue;
        }
        let dir = entry.path();
        let record = match fs::read(dir.join(RECORD_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(dir = %dir.display(), error = %err, "unreadable status.json; starting afresh");
                HostRecord::default()
            }),
            Err(_) => HostRecord::default(),
        };
        let certificate = match (fs::read(dir.join(CHAIN_FILE)), fs::read(dir.join(KEY_FILE))) {
            (Ok(chain), Ok(key)) => {
                let source = record.source.unwrap_or(CertSource::Acme);
                match LoadedCertificate::from_pem(&chain, &key, source) {
                    Ok(certificate) => Some(Arc::new(certificate)),
                    Err(reason) => {
                        tracing::warn!(dir = %dir.display(), %reason, "stored certificate not loaded; it will be obtained again");
                        None
                    }
                }
            }
            _ => None,
        };
        hosts.insert(
            name,
            HostEntry {
                certificate,
                record,
            },
        );
    }
    Ok(hosts)
}

#[derive(Default)]
struct ManualFiles {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Reads the operator's directory: `<name>.pem` / `.crt` / `.cer` with `<name>.key`, or a
/// PEM holding both. Hidden and editor temporary files are ignored; symlinks are followed
/// so a link into another tool's directory works.
fn scan_manual_dir(dir: &Path) -> (Vec<Arc<LoadedCertificate>>, Vec<ManualProblem>) {
    let mut problems = Vec::new();
    let mut groups: BTreeMap<String, ManualFiles> = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            problems.push(ManualProblem {
                file: dir.to_owned(),
                reason: err.to_string(),
            });
            return (Vec::new(), problems);
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') || file_name.ends_with('~') || !path.is_file() {
            continue;
        }
        let (Some(stem), Some(extension)) = (
            path.file_stem().and_then(|stem| stem.to_str()),
            path.extension().and_then(|ext| ext.to_str()),
        ) else {
            continue;
        };
        let files = groups.entry(stem.to_owned()).or_default();
        match extension {
            "pem" | "crt" | "cer" => {
                if let Some(previous) = files.certificate.replace(path.clone()) {
                    problems.push(ManualProblem {
                        file: previous,
                        reason: format!("ignored: {} has the same name", path.display()),
                    });
                }
            }
            "key" => files.key = Some(path.clone()),
            _ => {}
        }
    }
    let mut certificates = Vec::new();
    for (stem, files) in groups {
        let Some(certificate_path) = files.certificate else {
            if let Some(key) = files.key {
                problems.push(ManualProblem {
                    file: key,
                    reason: format!(
                        "a key without a certificate (expected {stem}.pem or {stem}.crt)"
                    ),
                });
            }
            continue;
        };
        let loaded = fs::read(&certificate_path)
            .map_err(|err| err.to_string())
            .and_then(|chain| {
                let key = match &files.key {
                    Some(key_path) => fs::read(key_path)
                        .map_err(|err| format!("{}: {err}", key_path.display()))?,
                    None => chain.clone(),
                };
                LoadedCertificate::from_pem(&chain, &key, CertSource::Manual).map_err(|reason| {
                    if files.key.is_none() && reason == "no private key found" {
                        format!("no private key: put it in {stem}.key or in this file")
                    } else {
                        reason
                    }
                })
            });
        match loaded {
            Ok(certificate) => certificates.push(Arc::new(certificate)),
            Err(reason) => problems.push(ManualProblem {
                file: certificate_path,
                reason,
            }),
        }
    }
    (certificates, problems)
}

/// Watches the operator's directory; a thread reloads it once changes settle. The thread
/// holds the store weakly and ends when the watcher is dropped with the store.
fn watch_manual_dir(
    store: Weak<StoreInner>,
    dir: &Path,
) -> Result<notify::RecommendedWatcher, String> {
    let (changed_tx, changed_rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files (our own reloads included) is no change; a write finishing is.
        let is_change = match &event {
            Ok(event) => match event.kind {
                notify::EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write,
                )) => true,
                notify::EventKind::Access(_) => false,
                _ => true,
            },
            Err(_) => true,
        };
        if is_change {
            let _ = changed_tx.send(());
        }
    })
    .map_err(|err| err.to_string())?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|err| err.to_string())?;
    std::thread::Builder::new()
        .name("cantila-certs-watch".to_owned())
        .spawn(move || {
            while changed_rx.recv().is_ok() {
                while changed_rx.recv_timeout(RELOAD_DEBOUNCE).is_ok() {}
                let Some(store) = store.upgrade() else {
                    return;
                };
                store.reload_manual();
            }
        })
        .map_err(|err| err.to_string())?;
    Ok(watcher)
}

/// Creates `dir` (and its parents) owner-only, and tightens it if it already existed.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| TlsError::io(dir, err))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|err| TlsError::io(dir, err))
}

/// Writes `path` through a temporary file and a rename, so a reader never sees half a
/// file, with `mode` from the first byte on.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("file");
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    result.map_err(|err| {
        let _ = fs::remove_file(&temporary);
        TlsError::io(path, err)
    })
}

fn write_record(dir: &Path, record: &HostRecord) -> Result<(), TlsError> {
    let json = serde_json::to_vec_pretty(record).map_err(|err| TlsError::Io {
        path: dir.join(RECORD_FILE),
        source: std::io::Error::other(err),
    })?;
    write_atomically(&dir.join(RECORD_FILE), &json, 0o600)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tls::self_signed::LocalCa;

    /// A certificate pair for `names` from a throwaway CA, valid until `days` from now.
    pub(crate) fn pair(names: &[&str], days: i64) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Issuer");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn open(dir: &Path) -> (CertStore, Arc<SniResolver>) {
        let resolver = Arc::new(SniResolver::new(None::<Arc<LocalCa>>));
        let store =
            CertStore::open(&dir.join("hosts"), &dir.join("manual"), resolver.clone()).unwrap();
        (store, resolver)
    }

    /// Polls `check` for up to ten seconds: notify delivers events asynchronously.
    fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn obtained_certificates_survive_a_restart_with_owner_only_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (chain, key) = pair(&["app.example.com"], 60);
        {
            let (store, resolver) = open(dir.path());
            store
                .write_managed(
                    "app.example.com",
                    chain.as_bytes(),
                    key.as_bytes(),
                    CertSource::Acme,
                )
                .unwrap();
            store.record_issued("app.example.com").unwrap();
            assert!(resolver.has_valid_certificate("app.example.com"));
        }
        let (store, resolver) = open(dir.path());
        let status = store.status("app.example.com").unwrap();
        assert_eq!(status.source, CertSource::Acme);
        assert_eq!(status.issuer, "CN=Test Issuer");
        assert_eq!(status.names, vec!["app.example.com".to_owned()]);
        assert!(status.not_after.ends_with('Z'));
        assert!(matches!(
            store.state("app.example.com"),
            Some(CertificateState::Issued { .. })
        ));
        assert!(resolver.has_valid_certificate("APP.example.com"));

        let host_dir = dir.path().join("hosts/app.example.com");
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&host_dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&host_dir.join(RECORD_FILE)), 0o600);
        assert_eq!(mode(&host_dir), 0o700);
        assert_eq!(mode(&dir.path().join("hosts")), 0o700);
        let leftovers: Vec<_> = fs::read_dir(&host_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_mismatched_key_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let (chain, _) = pair(&["a.example.com"], 60);
        let (_, other_key) = pair(&["a.example.com"], 60);
        let err = store
            .write_managed(
                "a.example.com",
                chain.as_bytes(),
                other_key.as_bytes(),
                CertSource::Acme,
            )
            .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(!dir.path().join("hosts/a.example.com").exists());
    }

    #[test]
    fn operator_files_load_live_win_over_obtained_ones_and_unload_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, resolver) = open(dir.path());
        let (chain, key) = pair(&["www.example.com"], 60);
        store
            .write_managed(
                "www.example.com",
                chain.as_bytes(),
                key.as_bytes(),
                CertSource::Acme,
            )
            .unwrap();
        assert_eq!(
            store.status("www.example.com").unwrap().source,
            CertSource::Acme
        );

        // A separate key file, written after the certificate, as an operator would copy.
        let manual = dir.path().join("manual");
        let (chain, key) = pair(&["www.example.com", "*.example.com"], 90);
        fs::write(manual.join("site.pem"), &chain).unwrap();
        fs::write(manual.join("site.key"), &key).unwrap();
        eventually("the operator certificate to load", || {
            store
                .status("www.example.com")
                .is_some_and(|status| status.source == CertSource::Manual)
        });
        assert_eq!(
            store.status("other.example.com").unwrap().source,
            CertSource::Manual
        );
        assert!(store.status("a.b.example.com").is_none());
        assert!(store
            .operator_certificate("www.example.com", OffsetDateTime::now_utc())
            .is_some());

        // A combined PEM (chain then key) in one file.
        let (chain, key) = pair(&["api.example.org"], 30);
        fs::write(manual.join("api.pem"), format!("{chain}{key}")).unwrap();
        eventually("the combined PEM to load", || {
            store.status("api.example.org").is_some()
        });

        fs::remove_file(manual.join("site.pem")).unwrap();
        fs::remove_file(manual.join("site.key")).unwrap();
        eventually("the removed certificate to unload", || {
            store
                .status("www.example.com")
                .is_some_and(|status| status.source == CertSource::Acme)
        });
        assert!(store.status("other.example.com").is_none());
        assert!(resolver.has_valid_certificate("api.example.org"));
    }

    #[test]
    fn expired_operator_certificates_yield_to_obtained_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let (chain, key) = pair(&["old.example.com"], -1);
        fs::write(dir.path().join("manual/old.pem"), format!("{chain}{key}")).unwrap();
        store.reload_manual_now();
        // Served when there is nothing else, so the client sees why it fails.
        assert_eq!(
            store.status("old.example.com").unwrap().source,
            CertSource::Manual
        );
        assert!(store
            .operator_certificate("old.example.com", OffsetDateTime::now_utc())
            .is_none());
        let (chain, key) = pair(&["old.example.com"], 60);
        store
            .write_managed(
                "old.example.com",
                chain.as_bytes(),
                key.as_bytes(),
                CertSource::Acme,
            )
            .unwrap();
        assert_eq!(
            store.status("old.example.com").unwrap().source,
            CertSource::Acme
        );
    }

    #[test]
    fn broken_operator_files_are_reported_without_hiding_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let manual = dir.path().join("manual");
        fs::create_dir_all(&manual).unwrap();
        let (chain, key) = pair(&["good.example.com"], 60);
        fs::write(manual.join("good.crt"), &chain).unwrap();
        fs::write(manual.join("good.key"), &key).unwrap();
        fs::write(manual.join("nokey.pem"), &chain).unwrap();
        fs::write(manual.join("garbage.pem"), "not a certificate").unwrap();
        let (_, other_key) = pair(&["x.example.com"], 60);
        fs::write(manual.join("wrong.pem"), &chain).unwrap();
        fs::write(manual.join("wrong.key"), &other_key).unwrap();
        fs::write(manual.join("orphan.key"), &key).unwrap();
        fs::write(manual.join(".hidden.pem"), "ignored").unwrap();
        fs::write(manual.join("README.txt"), "ignored").unwrap();

        let (store, _) = open(dir.path());
        assert_eq!(
            store.status("good.example.com").unwrap().source,
            CertSource::Manual
        );
        let problems = store.manual_problems();
        let reason_for = |file: &str| {
            problems
                .iter()
                .find(|problem| problem.file.ends_with(file))
                .map(|problem| problem.reason.clone())
                .unwrap_or_else(|| panic!("no problem for {file}: {problems:?}"))
        };
        assert!(reason_for("nokey.pem").contains("nokey.key"));
        assert!(reason_for("garbage.pem").contains("no certificate"));
        assert!(reason_for("wrong.pem").contains("does not belong"));
        assert!(reason_for("orphan.key").contains("orphan.pem"));
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn failures_back_off_and_success_resets_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        store.record_pending("b.example.com").unwrap();
        store
            .record_failure("b.example.com", "connection refused")
            .unwrap();
        store.record_pending("b.example.com").unwrap();
        store
            .record_failure("b.example.com", "connection refused again")
            .unwrap();
        let Some(CertificateState::Failed {
            reason,
            failures,
            retry_at,
        }) = store.state("b.example.com")
        else {
            panic!("expected a failure: {:?}", store.state("b.example.com"));
        };
        assert_eq!(reason, "connection refused again");
        assert_eq!(failures, 2);
        let wait = acme::parse_time(&retry_at).unwrap() - OffsetDateTime::now_utc();
        assert!(
            wait > time::Duration::minutes(9) && wait <= time::Duration::minutes(10),
            "{wait}"
        );
        // Recorded states survive a restart.
        let (reopened, _) = open(dir.path());
        assert_eq!(
            reopened.state("b.example.com"),
            store.state("b.example.com")
        );
        assert_eq!(reopened.managed_hosts(), vec!["b.example.com".to_owned()]);
        reopened.record_issued("b.example.com").unwrap();
        reopened
            .record_failure("b.example.com", "once more")
            .unwrap();
        assert!(matches!(
            reopened.state("b.example.com"),
            Some(CertificateState::Failed { failures: 1, .. })
        ));
        reopened.remove_host("b.example.com").unwrap();
        assert!(reopened.managed_hosts().is_empty());
        assert!(!dir.path().join("hosts/b.example.com").exists());
    }
}
