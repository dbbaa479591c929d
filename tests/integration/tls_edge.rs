//! TLS through the daemon's own edge: operator certificates dropped into
//! `<data_dir>/certs/manual/` while the daemon runs are served for their names (replaced
//! and removed alike) without a restart; and a certificate obtained over TLS-ALPN-01 from
//! pebble, whose validator handshakes with the daemon's HTTPS listener (its HTTP-01 port
//! has nothing listening, so only TLS-ALPN-01 can succeed), then served.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;

use crate::{
    deploys::Repo,
    support::{test_config, wait_for, wait_until, TestDaemon, TestDir},
    tls_acme::{free_tcp_port, Pebble},
};

/// A CA of the test's own: its certificate (PEM) and what signs with it.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `host` and its key, both PEM.
    fn leaf(&self, host: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        (
            params.signed_by(&key, &self.issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

/// The leaf the edge presents for `host` in a handshake verified against `root_pem`, or
/// why the handshake failed.
async fn served_leaf(
    address: SocketAddr,
    host: &str,
    root_pem: &str,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = TcpStream::connect(address)
        .await
        .map_err(|err| err.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), stream)
        .await
        .map_err(|err| err.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned())
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// GET `https://<host>/` through the edge, trusting only `root_pem`.
async fn https_get(daemon: &TestDaemon, host: &str, root_pem: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(host, daemon.https)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .get(format!("https://{host}:{}/", daemon.https.port()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn operator_certificates_dropped_into_the_manual_dir_are_served_without_a_restart() {
    // No certificate is obtained (`tls.mode = off`): only the operator's are served.
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[("index.html", "over the operator's tls\n")]);
    let (project_id, _) = daemon.connected_project("shop", &repo).await;
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");
    let host = "shop.admin.test.local";
    let manual = daemon.data_dir().join("certs/manual");
    let ca = TestCa::new("operator test CA");
    let refused = served_leaf(daemon.https, host, &ca.pem).await;
    assert!(refused.is_err(), "no certificate yet: {refused:?}");

    // Dropped in: served for its name, the daemon still the same process.
    let (chain, key) = ca.leaf(host);
    std::fs::write(manual.join("shop.key"), &key).unwrap();
    std::fs::write(manual.join("shop.pem"), &chain).unwrap();
    let leaf = wait_for(
        Duration::from_secs(30),
        "the dropped-in certificate is served",
        || async { served_leaf(daemon.https, host, &ca.pem).await.ok() },
    )
    .await;
    assert_eq!(leaf, der_of(&chain));
    assert_eq!(
        https_get(&daemon, host, &ca.pem).await,
        (200, "over the operator's tls\n".to_owned())
    );
    // A name it does not cover still has none.
    assert!(served_leaf(daemon.https, "other.admin.test.local", &ca.pem)
        .await
        .is_err());

    // Replaced in place: the new pair is served.
    let (renewed_chain, renewed_key) = ca.leaf(host);
    std::fs::write(manual.join("shop.key"), &renewed_key).unwrap();
    std::fs::write(manual.join("shop.pem"), &renewed_chain).unwrap();
    let renewed = der_of(&renewed_chain);
    wait_until(
        Duration::from_secs(30),
        "the replaced certificate is served",
        || async { served_leaf(daemon.https, host, &ca.pem).await.ok().as_ref() == Some(&renewed) },
    )
    .await;

    // Removed: no longer served.
    std::fs::remove_file(manual.join("shop.pem")).unwrap();
    std::fs::remove_file(manual.join("shop.key")).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the removed certificate is no longer served",
        || async { served_leaf(daemon.https, host, &ca.pem).await.is_err() },
    )
    .await;
}

#[tokio::test]
async fn a_certificate_is_obtained_over_tls_alpn_01_through_the_daemons_edge() {
    // Pebble validates TLS-ALPN-01 on the daemon's HTTPS port, bound first; its HTTP-01
    // port is one nothing listens on.
    let https = crate::support::listener("127.0.0.1:0");
    let pebble = Pebble::start(free_tcp_port(), https.local_addr().unwrap().port()).await;
    let dir = TestDir::new();
    let mut config = test_config(dir.path());
    config.tls = cantila::tls::TlsConfig {
        mode: cantila::tls::TlsMode::Acme,
        acme_directory: pebble.directory_url.clone(),
        acme_email: Some("ops@example.com".to_owned()),
        acme_challenge: cantila::tls::AcmeChallenge::TlsAlpn01,
        acme_extra_roots: Some(pebble.https_ca_path.clone()),
        ..cantila::tls::TlsConfig::default()
    };
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = cantila::Listeners {
        api: crate::support::listener(any),
        http: crate::support::listener(any),
        https,
        metrics: None,
    };
    let daemon = TestDaemon::start_on(dir, config, listeners).await;

    let repo = Repo::new(&[("index.html", "over tls-alpn-01\n")]);
    let (project_id, _) = daemon.connected_project("alpn", &repo).await;
    let host = "alpn.example.test";
    daemon
        .post(
            &format!("/v1/projects/{project_id}/aliases"),
            &daemon.admin_token,
            json!({ "hostname": host }),
        )
        .await
        .expect(201);
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");

    let certificate = wait_for(
        Duration::from_secs(60),
        "the alias's certificate is issued or failed",
        || async {
            let domains = daemon
                .get(
                    &format!("/v1/projects/{project_id}/domains"),
                    &daemon.admin_token,
                )
                .await
                .expect(200)
                .body;
            let alias = domains["domains"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["hostname"] == host)
                .cloned()
                .unwrap();
            let status = alias["certificate"]["status"].clone();
            (status == "acme" || status == "failed").then_some(alias["certificate"].clone())
        },
    )
    .await;
    assert_eq!(certificate["status"], "acme", "{certificate}");
    let root = pebble.issuing_root_pem().await;
    let leaf = served_leaf(daemon.https, host, &root).await.unwrap();
    let stored = std::fs::read(
        daemon
            .data_dir()
            .join(format!("certs/hosts/{host}/fullchain.pem")),
    )
    .unwrap();
    assert_eq!(leaf, CertificateDer::from_pem_slice(&stored).unwrap());
    assert_eq!(
        https_get(&daemon, host, &root).await,
        (200, "over tls-alpn-01\n".to_owned())
    );
}
