//! The local CA of `tls.mode = "self-signed"`: made once into `certs/local-ca/`, it signs
//! a leaf certificate per hostname, for LAN use by clients that trust it.

use std::{fs, path::Path, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::CertifiedKey,
};
use time::OffsetDateTime;

use super::{
    crypto_provider,
    store::{create_private_dir, write_atomically},
    TlsError,
};

const CA_CERTIFICATE_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";

/// The CA outlives any install it is made for; clients trust it once.
const CA_VALIDITY_DAYS: i64 = 3650;

/// Leaves are renewed by the scheduler like obtained certificates.
const LEAF_VALIDITY_DAYS: i64 = 365;

/// A certificate chain and its key, both PEM.
pub(crate) struct IssuedPair {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

pub(crate) struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl LocalCa {
    /// Loads the CA from `dir`, or makes it when neither file exists. One file without
    /// the other is an error, never overwritten: clients may already trust that CA.
    pub(crate) fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let certificate_path = dir.join(CA_CERTIFICATE_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (certificate_path.exists(), key_path.exists()) {
            (true, true) => {
                let certificate_pem = fs::read_to_string(&certificate_path)
                    .map_err(|err| TlsError::io(&certificate_path, err))?;
                let key_pem =
                    fs::read_to_string(&key_path).map_err(|err| TlsError::io(&key_path, err))?;
                let bad = |reason: String| TlsError::BadCertificate {
                    path: dir.to_owned(),
                    reason,
                };
                let key = KeyPair::from_pem(&key_pem)
                    .map_err(|err| bad(format!("{CA_KEY_FILE}: {err}")))?;
                let issuer = Issuer::from_ca_cert_pem(&certificate_pem, key)
                    .map_err(|err| bad(format!("{CA_CERTIFICATE_FILE}: {err}")))?;
                Ok(Self {
                    issuer,
                    certificate_pem,
                })
            }
            (false, false) => Self::create(dir),
            _ => Err(TlsError::BadCertificate {
                path: dir.to_owned(),
                reason: format!(
                    "{CA_CERTIFICATE_FILE} and {CA_KEY_FILE} must both exist; restore the \
                     missing one from a backup, or delete both to make a new CA"
                ),
            }),
        }
    }

    fn create(dir: &Path) -> Result<Self, TlsError> {
        create_private_dir(dir)?;
        let key = KeyPair::generate().map_err(generate_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
        // A per-install suffix keeps two installs' CAs apart in a client's trust store.
        let suffix = hex::encode(rand::random::<[u8; 4]>());
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Cantila local CA {suffix}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Cantila");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        let certificate = params.self_signed(&key).map_err(generate_error)?;
        let certificate_pem = certificate.pem();
        write_atomically(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomically(
            &dir.join(CA_CERTIFICATE_FILE),
            certificate_pem.as_bytes(),
            0o644,
        )?;
        tracing::info!(path = %dir.join(CA_CERTIFICATE_FILE).display(), "made the local CA; clients must trust it");
        Ok(Self {
            issuer: Issuer::new(params, key),
            certificate_pem,
        })
    }

    pub(crate) fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A new leaf certificate and key for `host`, signed by this CA.
    pub(crate) fn issue_leaf(&self, host: &str) -> Result<IssuedPair, TlsError> {
        let (certificate, key) = self.sign_leaf(host)?;
        Ok(IssuedPair {
            chain_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A leaf for `host` ready for rustls, for names nobody asked for in advance.
    pub(crate) fn certified_leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let (certificate, key) = self.sign_leaf(host)?;
        let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        CertifiedKey::from_der(
            vec![certificate.der().clone()],
            private_key,
            &crypto_provider(),
        )
        .map(Arc::new)
        .map_err(|err| TlsError::Rustls(err.to_string()))
    }

    fn sign_leaf(&self, host: &str) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
        let key = KeyPair::generate().map_err(generate_error)?;
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(generate_error)?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // An hour of slack for clients whose clocks run behind.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error)?;
        Ok((certificate, key))
    }
}

fn generate_error(err: rcgen::Error) -> TlsError {
    TlsError::Generate(err.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{os::unix::fs::PermissionsExt, path::PathBuf};

    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::tls::{CertSource, Tls, TlsConfig, TlsMode};

    /// Serves TLS with `server_config` on 127.0.0.1:0: each connection gets the negotiated
    /// ALPN protocol written back, then is closed.
    pub(crate) async fn serve_tls(
        server_config: Arc<rustls::ServerConfig>,
    ) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let alpn = tls.get_ref().1.alpn_protocol().unwrap_or(b"none").to_vec();
                        let _ = tls.write_all(&alpn).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        address
    }

    /// Connects trusting only `roots_pem`, asks for `server_name` and ALPN `h2`; returns
    /// the ALPN the server wrote back and the leaf certificate it presented.
    pub(crate) async fn handshake(
        address: std::net::SocketAddr,
        server_name: &str,
        roots_pem: &str,
    ) -> Result<(String, CertificateDer<'static>), String> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
            roots.add(certificate.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut tls = connector
            .connect(name, stream)
            .await
            .map_err(|err| err.to_string())?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        let mut alpn = String::new();
        tls.read_to_string(&mut alpn)
            .await
            .map_err(|err| err.to_string())?;
        Ok((alpn, leaf))
    }

    fn self_signed_config() -> TlsConfig {
        TlsConfig {
            mode: TlsMode::SelfSigned,
            ..TlsConfig::default()
        }
    }

    #[test]
    fn the_ca_is_made_once_with_an_owner_only_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::load_or_create(dir.path()).unwrap();
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.certificate_pem(), again.certificate_pem());
        let key_mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = LocalCa::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("must both exist"), "{err}");
    }

    #[tokio::test]
    async fn a_client_trusting_the_local_ca_completes_handshakes() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::start(dir.path(), self_signed_config()).unwrap();
        let status = tls.ensure_certificate("app.lan").await.unwrap();
        assert_eq!(status.source, CertSource::SelfSigned);
        assert!(
            status.issuer.contains("Cantila local CA"),
            "{}",
            status.issuer
        );
        assert!(tls.has_certificate("app.lan"));
        let ca_pem = tls.local_ca_pem().unwrap();
        let address = serve_tls(tls.server_config()).await;

        let (alpn, leaf) = handshake(address, "app.lan", &ca_pem).await.unwrap();
        assert_eq!(alpn, "h2");
        let stored = fs::read(dir.path().join("certs/hosts/app.lan/fullchain.pem")).unwrap();
        let stored = CertificateDer::from_pem_slice(&stored).unwrap();
        assert_eq!(leaf, stored, "the ensured certificate is the one served");

        // A name nobody asked for gets a certificate made on the fly.
        let (alpn, _) = handshake(address, "nas.lan", &ca_pem).await.unwrap();
        assert_eq!(alpn, "h2");

        // A client trusting another CA refuses the certificate.
        let other = tempfile::tempdir().unwrap();
        let other_ca = LocalCa::load_or_create(other.path()).unwrap();
        let err = handshake(address, "app.lan", other_ca.certificate_pem())
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");

        // The CA and the leaf survive a restart: same CA, no new leaf.
        let before = tls.status("app.lan").unwrap();
        drop(tls);
        let restarted = Tls::start(dir.path(), self_signed_config()).unwrap();
        assert_eq!(restarted.local_ca_pem().unwrap(), ca_pem);
        assert_eq!(
            restarted.ensure_certificate("app.lan").await.unwrap(),
            before
        );
    }

    #[tokio::test]
    async fn without_a_certificate_the_handshake_fails_in_acme_mode() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::start(dir.path(), TlsConfig::default()).unwrap();
        let address = serve_tls(tls.server_config()).await;
        let err = handshake(address, "unknown.example.com", "")
            .await
            .unwrap_err();
        assert!(!err.is_empty());
        assert!(!tls.has_certificate("unknown.example.com"));
    }

    #[tokio::test]
    async fn the_renewal_pass_replaces_expiring_leaves_only() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::start(dir.path(), self_signed_config()).unwrap();
        tls.ensure_certificate("fresh.lan").await.unwrap();
        let fresh = tls.status("fresh.lan").unwrap();

        // A leaf expiring in ten days, inside the 30-day renewal window.
        let (chain, key) = crate::tls::store::tests::pair(&["old.lan"], 10);
        let host_dir: PathBuf = dir.path().join("certs/hosts/old.lan");
        fs::create_dir_all(&host_dir).unwrap();
        fs::write(host_dir.join("fullchain.pem"), chain).unwrap();
        fs::write(host_dir.join("privkey.pem"), key).unwrap();
        drop(tls);
        let tls = Tls::start(dir.path(), self_signed_config()).unwrap();
        let expiring = tls.status("old.lan").unwrap();

        let renewed = tls.renew_due().await;
        let hosts: Vec<_> = renewed.iter().map(|(host, _)| host.as_str()).collect();
        assert_eq!(hosts, ["old.lan"]);
        let after = tls.status("old.lan").unwrap();
        assert_eq!(after.source, CertSource::SelfSigned);
        assert!(after.not_after > expiring.not_after);
        assert_eq!(tls.status("fresh.lan").unwrap(), fresh);
        assert!(tls.renew_due().await.is_empty(), "nothing is due any more");
    }

    #[tokio::test]
    async fn off_mode_obtains_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::start(
            dir.path(),
            TlsConfig {
                mode: TlsMode::Off,
                ..TlsConfig::default()
            },
        )
        .unwrap();
        assert!(matches!(
            tls.ensure_certificate("a.example.com").await,
            Err(TlsError::Disabled)
        ));
        assert!(tls.renew_due().await.is_empty());
        assert!(tls.local_ca_pem().is_none());
    }
}
