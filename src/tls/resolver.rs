//! The SNI resolver rustls asks for a certificate during each handshake: a lock-free read
//! of an atomically swapped snapshot (exact names, then one-level wildcards, operator
//! certificates first), TLS-ALPN-01 challenge certificates while an order is pending, and
//! in `self-signed` mode certificates made on the fly for unknown names.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use time::OffsetDateTime;

use super::{
    parse_hostname, self_signed::LocalCa, store::LoadedCertificate, ACME_TLS_ALPN_PROTOCOL,
};

/// Certificates made on the fly are cached up to this many names; past it the cache
/// starts over, so random SNI names cannot grow memory without bound.
const MAX_ON_THE_FLY_CERTIFICATES: usize = 1024;

/// Every certificate the store holds, by name, as one immutable value.
#[derive(Default)]
pub(crate) struct CertificateSnapshot {
    /// The operator's certificates, by each DNS name they carry (`*.example.com` too).
    operator: HashMap<String, Arc<LoadedCertificate>>,
    /// Obtained certificates, by the hostname they were obtained for.
    managed: HashMap<String, Arc<LoadedCertificate>>,
}

impl CertificateSnapshot {
    pub(crate) fn insert_managed(&mut self, host: &str, certificate: Arc<LoadedCertificate>) {
        self.managed.insert(host.to_owned(), certificate);
    }

    /// Adds an operator certificate under each of its names; when two claim a name the
    /// one valid longest wins, so a renewed file dropped beside the old one takes over.
    pub(crate) fn insert_operator(&mut self, certificate: Arc<LoadedCertificate>) {
        for name in &certificate.names {
            let replace = self
                .operator
                .get(name)
                .is_none_or(|current| current.not_after < certificate.not_after);
            if replace {
                self.operator.insert(name.clone(), certificate.clone());
            }
        }
    }

    /// The certificate served for `host`: a valid operator certificate, else an obtained
    /// one, else an expired operator certificate (so the client at least sees why).
    pub(crate) fn lookup(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Option<&Arc<LoadedCertificate>> {
        self.lookup_operator(host, now)
            .or_else(|| candidate_names(host).find_map(|name| self.managed.get(&name)))
            .or_else(|| candidate_names(host).find_map(|name| self.operator.get(&name)))
    }

    /// A valid operator certificate covering `host`, exact name first.
    pub(crate) fn lookup_operator(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Option<&Arc<LoadedCertificate>> {
        candidate_names(host).find_map(|name| {
            self.operator
                .get(&name)
                .filter(|certificate| certificate.is_valid_at(now))
        })
    }
}

/// The names a certificate for `host` may carry: `host` itself, then the wildcard one
/// level up (`*.example.com` covers `a.example.com`, not `a.b.example.com`).
fn candidate_names(host: &str) -> impl Iterator<Item = String> + '_ {
    let wildcard = host
        .split_once('.')
        .filter(|(_, parent)| !parent.is_empty())
        .map(|(_, parent)| format!("*.{parent}"));
    std::iter::once(host.to_owned()).chain(wildcard)
}

pub(crate) struct SniResolver {
    snapshot: ArcSwap<CertificateSnapshot>,
    /// In `self-signed` mode: the CA that signs certificates for unknown names.
    local_ca: Option<Arc<LocalCa>>,
    made_on_the_fly: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 certificates of pending orders, by hostname.
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("self_signed", &self.local_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    pub(crate) fn new(local_ca: Option<Arc<LocalCa>>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(CertificateSnapshot::default()),
            local_ca,
            made_on_the_fly: Mutex::new(HashMap::new()),
            alpn_challenges: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces every certificate at once: a handshake sees the old set or the new one.
    pub(crate) fn publish(&self, snapshot: CertificateSnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    pub(crate) fn snapshot(&self) -> Arc<CertificateSnapshot> {
        self.snapshot.load_full()
    }

    pub(crate) fn has_valid_certificate(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let now = OffsetDateTime::now_utc();
        self.snapshot
            .load()
            .lookup(&host, now)
            .is_some_and(|certificate| certificate.is_valid_at(now))
    }

    pub(crate) fn set_alpn_challenge(&self, host: &str, certificate: Arc<CertifiedKey>) {
        self.alpn_challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_owned(), certificate);
    }

    pub(crate) fn remove_alpn_challenge(&self, host: &str) {
        self.alpn_challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(host);
    }

    /// The certificate for a handshake naming `server_name`. A client offering
    /// `acme-tls/1` is an ACME validator and gets only a challenge certificate (RFC 8737).
    pub(crate) fn certificate_for(
        &self,
        server_name: Option<&str>,
        offers_acme_tls: bool,
    ) -> Option<Arc<CertifiedKey>> {
        let host = server_name?.trim_end_matches('.').to_ascii_lowercase();
        if offers_acme_tls {
            return self
                .alpn_challenges
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&host)
                .cloned();
        }
        if let Some(certificate) = self
            .snapshot
            .load()
            .lookup(&host, OffsetDateTime::now_utc())
        {
            return Some(certificate.certified_key.clone());
        }
        let local_ca = self.local_ca.as_ref()?;
        self.made_on_the_fly(local_ca, &host)
    }

    fn made_on_the_fly(&self, local_ca: &LocalCa, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = parse_hostname(host).ok()?;
        let mut cache = self
            .made_on_the_fly
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(certificate) = cache.get(&host) {
            return Some(certificate.clone());
        }
        match local_ca.certified_leaf(&host) {
            Ok(certificate) => {
                if cache.len() >= MAX_ON_THE_FLY_CERTIFICATES {
                    cache.clear();
                }
                cache.insert(host, certificate.clone());
                Some(certificate)
            }
            Err(err) => {
                tracing::warn!(%host, error = %err, "cannot make a local certificate");
                None
            }
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offers_acme_tls = client_hello.alpn().is_some_and(|mut protocols| {
            protocols.any(|protocol| protocol == ACME_TLS_ALPN_PROTOCOL)
        });
        self.certificate_for(client_hello.server_name(), offers_acme_tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::store::{tests::pair, CertSource};

    fn loaded(names: &[&str], days: i64, source: CertSource) -> Arc<LoadedCertificate> {
        let (chain, key) = pair(names, days);
        Arc::new(LoadedCertificate::from_pem(chain.as_bytes(), key.as_bytes(), source).unwrap())
    }

    fn served_names(resolver: &SniResolver, host: &str) -> Option<Vec<String>> {
        let served = resolver.certificate_for(Some(host), false)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&served.cert[0]).unwrap();
        let names = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect();
        Some(names)
    }

    #[test]
    fn exact_names_then_one_level_wildcards() {
        let resolver = SniResolver::new(None);
        let mut snapshot = CertificateSnapshot::default();
        snapshot.insert_operator(loaded(&["*.example.com"], 30, CertSource::Manual));
        snapshot.insert_operator(loaded(&["exact.example.com"], 30, CertSource::Manual));
        snapshot.insert_managed(
            "app.example.net",
            loaded(&["app.example.net"], 30, CertSource::Acme),
        );
        resolver.publish(snapshot);

        let cases: &[(&str, Option<&str>)] = &[
            ("exact.example.com", Some("DNSName(exact.example.com)")),
            ("EXACT.example.com.", Some("DNSName(exact.example.com)")),
            ("other.example.com", Some("DNSName(*.example.com)")),
            ("a.b.example.com", None),
            ("example.com", None),
            ("app.example.net", Some("DNSName(app.example.net)")),
            ("www.app.example.net", None),
            ("unknown.test", None),
        ];
        for (host, expected) in cases {
            let names = served_names(&resolver, host);
            assert_eq!(
                names
                    .as_ref()
                    .and_then(|names| names.first().map(String::as_str)),
                *expected,
                "{host}"
            );
            assert_eq!(
                resolver.has_valid_certificate(host),
                expected.is_some(),
                "{host}"
            );
        }
        assert!(resolver.certificate_for(None, false).is_none());
    }

    #[test]
    fn a_valid_operator_wildcard_wins_over_an_obtained_exact_certificate() {
        let mut snapshot = CertificateSnapshot::default();
        snapshot.insert_managed(
            "a.example.com",
            loaded(&["a.example.com"], 30, CertSource::Acme),
        );
        snapshot.insert_operator(loaded(&["*.example.com"], 30, CertSource::Manual));
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            snapshot.lookup("a.example.com", now).unwrap().source,
            CertSource::Manual
        );

        // Two operator files for one name: the one valid longest is served.
        let longer = loaded(&["*.example.com"], 300, CertSource::Manual);
        snapshot.insert_operator(longer.clone());
        snapshot.insert_operator(loaded(&["*.example.com"], 100, CertSource::Manual));
        assert!(Arc::ptr_eq(
            snapshot.lookup("b.example.com", now).unwrap(),
            &longer
        ));
    }

    #[test]
    fn unknown_names_fail_without_a_local_ca_and_are_made_once_with_one() {
        let without = SniResolver::new(None);
        assert!(without
            .certificate_for(Some("unknown.test"), false)
            .is_none());

        let dir = tempfile::tempdir().unwrap();
        let local_ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
        let with = SniResolver::new(Some(local_ca));
        let first = with.certificate_for(Some("printer.lan"), false).unwrap();
        let again = with.certificate_for(Some("printer.lan"), false).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "made once, then cached");
        assert_eq!(
            served_names(&with, "printer.lan").unwrap(),
            vec!["DNSName(printer.lan)".to_owned()]
        );
        // On-the-fly certificates are no reason to redirect to HTTPS.
        assert!(!with.has_valid_certificate("printer.lan"));
    }

    #[test]
    fn acme_validators_get_only_challenge_certificates() {
        let resolver = SniResolver::new(None);
        let mut snapshot = CertificateSnapshot::default();
        let served = loaded(&["app.example.com"], 30, CertSource::Acme);
        snapshot.insert_managed("app.example.com", served.clone());
        resolver.publish(snapshot);
        assert!(resolver
            .certificate_for(Some("app.example.com"), true)
            .is_none());

        let challenge = loaded(&["app.example.com"], 1, CertSource::Acme)
            .certified_key
            .clone();
        resolver.set_alpn_challenge("app.example.com", challenge.clone());
        let answered = resolver
            .certificate_for(Some("app.example.com"), true)
            .unwrap();
        assert!(Arc::ptr_eq(&answered, &challenge));
        let normal = resolver
            .certificate_for(Some("app.example.com"), false)
            .unwrap();
        assert!(Arc::ptr_eq(&normal, &served.certified_key));
        resolver.remove_alpn_challenge("app.example.com");
        assert!(resolver
            .certificate_for(Some("app.example.com"), true)
            .is_none());
    }
}
