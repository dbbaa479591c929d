//! Git servers' certificates, checked for `source`'s fetches: a TLS handshake of our own
//! verifies a server's chain and name against the system's roots (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` when set, as OpenSSL reads them, else the platform's store), and the
//! leaf libgit2 later receives over its own connection is verified again with the
//! intermediates that handshake was sent (`source::egress` says why libgit2's own check
//! cannot be the one that refuses).
//! Invariant: a certificate passes only when rustls's WebPKI verifier accepts it for the
//! host, now; no rustls type leaves this file.

use std::{
    io,
    net::TcpStream,
    sync::{Arc, LazyLock},
};

use rustls::{
    client::{danger::ServerCertVerifier, WebPkiServerVerifier},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    ClientConfig, ClientConnection, RootCertStore,
};

use super::crypto_provider;

/// A TLS client connection as its users read and write it (no rustls type in sight).
pub trait ClientStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ClientStream for T {}

/// Verifies git servers' certificates against one set of roots. Cheap to clone.
#[derive(Clone)]
pub struct OriginVerifier {
    /// The client configuration of our handshakes, or why there is none (no roots).
    config: Result<Arc<ClientConfig>, String>,
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl std::fmt::Debug for OriginVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginVerifier(..)")
    }
}

/// What a verified handshake showed of a server's chain: its intermediates, with which
/// the leaf another connection to the same host presents is verified.
#[derive(Debug, Clone)]
pub struct ServerChain {
    intermediates: Vec<CertificateDer<'static>>,
}

impl OriginVerifier {
    /// The system's roots, loaded once per process.
    pub fn system() -> OriginVerifier {
        static SYSTEM: LazyLock<OriginVerifier> = LazyLock::new(|| {
            let mut roots = RootCertStore::empty();
            // Like browsers, skip system roots rustls cannot parse rather than fail.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            OriginVerifier::with_roots(roots)
        });
        SYSTEM.clone()
    }

    /// Trusting only the PEM certificates of `pem` (a test's own CA).
    pub fn trusting_pem(pem: &[u8]) -> Result<OriginVerifier, String> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|err| err.to_string())?;
            roots.add(certificate).map_err(|err| err.to_string())?;
        }
        Ok(OriginVerifier::with_roots(roots))
    }

    fn with_roots(roots: RootCertStore) -> OriginVerifier {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .map_err(|err| format!("no trusted root certificates on this server ({err})"));
        let config = verifier.clone().and_then(|verifier| {
            ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_webpki_verifier(verifier).with_no_client_auth())
                })
                .map_err(|err| err.to_string())
        });
        OriginVerifier {
            config,
            verifier: verifier.ok(),
        }
    }

    /// A TLS client connection to `host` over `stream`, its certificate verified against
    /// these roots: the CLI's `wss://` WebSockets to an API behind HTTPS.
    pub async fn connect(
        &self,
        stream: tokio::net::TcpStream,
        host: &str,
    ) -> io::Result<Box<dyn ClientStream>> {
        let config = self.config.clone().map_err(io::Error::other)?;
        let name = server_name(host).map_err(io::Error::other)?;
        let connection = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|err| io::Error::other(describe(host, &err)))?;
        Ok(Box::new(connection))
    }

    /// Shakes hands as a TLS client with the server on `stream` for `host` (a DNS name or
    /// an IP address, IPv6 in brackets or not) and verifies its certificate; returns the
    /// chain it was sent, or why it is not trusted. Blocks within the stream's timeouts.
    pub fn handshake(&self, mut stream: TcpStream, host: &str) -> Result<ServerChain, String> {
        let config = self.config.clone()?;
        let mut connection =
            ClientConnection::new(config, server_name(host)?).map_err(|err| err.to_string())?;
        while connection.is_handshaking() {
            connection
                .complete_io(&mut stream)
                .map_err(|err| describe(host, &err))?;
        }
        let intermediates = connection
            .peer_certificates()
            .map(|chain| chain.iter().skip(1).cloned().collect())
            .unwrap_or_default();
        connection.send_close_notify();
        let _ = connection.complete_io(&mut stream);
        Ok(ServerChain { intermediates })
    }

    /// Verifies `leaf` (DER), presented for `host` on another connection, with the
    /// intermediates of `chain`.
    pub fn verify_leaf(&self, leaf: &[u8], chain: &ServerChain, host: &str) -> Result<(), String> {
        let verifier = self
            .verifier
            .as_ref()
            .ok_or_else(|| "no trusted root certificates on this server".to_owned())?;
        verifier
            .verify_server_cert(
                &CertificateDer::from(leaf.to_vec()),
                &chain.intermediates,
                &server_name(host)?,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|err| format!("the certificate of {host} is not trusted ({err})"))
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("`{host}` is not a name a certificate can be issued for"))
}

/// Says whether the handshake failed on the certificate or otherwise.
fn describe(host: &str, err: &io::Error) -> String {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType,
        ) => format!("the certificate of {host} is not trusted ({err})"),
        _ => format!("the TLS handshake with {host} failed ({err})"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{io::Write, net::TcpListener, time::Duration};

    use super::*;

    /// A CA, and a server certificate it signed for `names`: (CA PEM, chain PEM, key PEM).
    pub(crate) fn ca_and_leaf(names: &[&str]) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_pem, leaf.pem(), key.serialize_pem())
    }

    /// A TLS server on loopback whose n-th connection presents `identities[n]` (chain
    /// and key, PEM), then echoes what it reads until the client closes. For each
    /// connection whose handshake completed it sends (n, the bytes it received).
    pub(crate) fn tls_server(
        identities: Vec<(String, String)>,
    ) -> (u16, std::sync::mpsc::Receiver<(usize, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (index, (chain, key)) in identities.into_iter().enumerate() {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let certificates = CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                let config = Arc::new(
                    rustls::ServerConfig::builder_with_provider(crypto_provider())
                        .with_safe_default_protocol_versions()
                        .unwrap()
                        .with_no_client_auth()
                        .with_single_cert(certificates, key)
                        .unwrap(),
                );
                let sender = sender.clone();
                std::thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let connection = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(connection, stream);
                    while tls.conn.is_handshaking() {
                        if tls.conn.complete_io(&mut tls.sock).is_err() {
                            return;
                        }
                    }
                    let mut received = Vec::new();
                    let mut buffer = [0u8; 4096];
                    loop {
                        match std::io::Read::read(&mut tls, &mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(read) => {
                                received.extend_from_slice(&buffer[..read]);
                                if tls.write_all(&buffer[..read]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = sender.send((index, received));
                });
            }
        });
        (port, received)
    }

    /// A TLS client over `stream` for `host`, trusting only `ca_pem`.
    pub(crate) fn tls_client(
        stream: TcpStream,
        ca_pem: &str,
        host: &str,
    ) -> impl std::io::Read + std::io::Write {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(certificate.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connection =
            ClientConnection::new(Arc::new(config), server_name(host).unwrap()).unwrap();
        rustls::StreamOwned::new(connection, stream)
    }

    /// The first certificate of a PEM chain, as DER.
    pub(crate) fn leaf_der(chain_pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(chain_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn serve_once(chain: &str, key: &str) -> u16 {
        tls_server(vec![(chain.to_owned(), key.to_owned())]).0
    }

    fn connect(port: u16) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    #[test]
    fn a_trusted_server_passes_and_its_leaf_verifies_again() {
        let (ca, chain, key) = ca_and_leaf(&["127.0.0.1", "git.test"]);
        let verifier = OriginVerifier::trusting_pem(ca.as_bytes()).unwrap();
        let port = serve_once(&chain, &key);
        let verified = verifier.handshake(connect(port), "127.0.0.1").unwrap();
        let leaf = CertificateDer::from_pem_slice(chain.as_bytes()).unwrap();
        assert_eq!(verifier.verify_leaf(&leaf, &verified, "127.0.0.1"), Ok(()));
        assert_eq!(verifier.verify_leaf(&leaf, &verified, "git.test"), Ok(()));
        // The same leaf does not pass for a name it does not carry.
        let wrong = verifier
            .verify_leaf(&leaf, &verified, "other.test")
            .unwrap_err();
        assert!(wrong.contains("not trusted"), "{wrong}");
    }

    #[test]
    fn untrusted_and_misnamed_certificates_are_refused_with_the_reason() {
        let (_, chain, key) = ca_and_leaf(&["127.0.0.1"]);
        let (other_ca, _, _) = ca_and_leaf(&["127.0.0.1"]);
        let verifier = OriginVerifier::trusting_pem(other_ca.as_bytes()).unwrap();
        let port = serve_once(&chain, &key);
        let refused = verifier.handshake(connect(port), "127.0.0.1").unwrap_err();
        assert!(
            refused.contains("certificate of 127.0.0.1 is not trusted"),
            "{refused}"
        );
        // A leaf from an untrusted issuer fails the second check too, whatever chain
        // the first handshake verified.
        let (ca, good_chain, good_key) = ca_and_leaf(&["127.0.0.1"]);
        let verifier = OriginVerifier::trusting_pem(ca.as_bytes()).unwrap();
        let port = serve_once(&good_chain, &good_key);
        let verified = verifier.handshake(connect(port), "127.0.0.1").unwrap();
        let stranger = CertificateDer::from_pem_slice(chain.as_bytes()).unwrap();
        assert!(verifier
            .verify_leaf(&stranger, &verified, "127.0.0.1")
            .is_err());

        let (ca, chain, key) = ca_and_leaf(&["elsewhere.test"]);
        let verifier = OriginVerifier::trusting_pem(ca.as_bytes()).unwrap();
        let port = serve_once(&chain, &key);
        let misnamed = verifier.handshake(connect(port), "127.0.0.1").unwrap_err();
        assert!(misnamed.contains("not trusted"), "{misnamed}");
    }

    #[test]
    fn without_roots_nothing_is_trusted() {
        let verifier = OriginVerifier::with_roots(RootCertStore::empty());
        let (_, chain, key) = ca_and_leaf(&["127.0.0.1"]);
        let port = serve_once(&chain, &key);
        let refused = verifier.handshake(connect(port), "127.0.0.1").unwrap_err();
        assert!(refused.contains("no trusted root"), "{refused}");
    }
}
