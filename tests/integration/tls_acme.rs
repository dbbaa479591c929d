//! ACME against a real CA: Debian's `pebble` (Let's Encrypt's test CA) and
//! `pebble-challtestsrv` (its DNS, resolving every name to 127.0.0.1) run as child
//! processes on free ports; certificates are issued over HTTP-01 and TLS-ALPN-01, renewed
//! by the scheduler, failures recorded, and the results served in real TLS handshakes
//! trusting pebble's root. `scripts/test.sh` installs pebble; this test never skips.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{extract::Path as UrlPath, http::StatusCode, routing::get, Router};
use cantila::tls::{
    AcmeChallenge, CertSource, CertificateState, ChallengeResponder, Tls, TlsConfig, TlsError,
    TlsMode, ACME_TLS_ALPN_PROTOCOL,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The two pebble processes, killed when dropped.
pub(crate) struct Pebble {
    pebble: Child,
    challtestsrv: Child,
    pub(crate) directory_url: String,
    management_url: String,
    challtestsrv_url: String,
    /// The CA of pebble's own HTTPS listeners (not the CA that signs issued certificates).
    pub(crate) https_ca_path: PathBuf,
    https_ca_pem: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    pub(crate) async fn start(http_port: u16, tls_port: u16) -> Pebble {
        for binary in ["pebble", "pebble-challtestsrv"] {
            assert!(
                Path::new("/usr/bin").join(binary).exists() || which(binary),
                "{binary} is not installed: `apt-get install -y pebble` (scripts/test.sh does it)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (https_ca_pem, certificate_pem, key_pem) = pebble_https_certificate();
        let https_ca_path = dir.path().join("https-ca.pem");
        std::fs::write(&https_ca_path, &https_ca_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), certificate_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();

        let dns_port = free_tcp_and_udp_port();
        let challtestsrv_port = free_tcp_port();
        let listen_port = free_tcp_port();
        let management_port = free_tcp_port();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let log_path = dir.path().join("pebble.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{challtestsrv_port}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Deterministic runs: no random nonce rejections, no reused authorizations.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble starts");
        let pebble = Pebble {
            pebble,
            challtestsrv,
            directory_url: format!("https://127.0.0.1:{listen_port}/dir"),
            management_url: format!("https://127.0.0.1:{management_port}"),
            challtestsrv_url: format!("http://127.0.0.1:{challtestsrv_port}"),
            https_ca_path,
            https_ca_pem,
            log_path,
            _dir: dir,
        };
        pebble.wait_until_ready().await;
        pebble
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.https_ca_pem.as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn wait_until_ready(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let directory = client.get(&self.directory_url).send().await;
            let dns = client.get(&self.challtestsrv_url).send().await;
            if directory.is_ok_and(|response| response.status().is_success()) && dns.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                self.logs()
            );
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The root that signs the certificates pebble issues.
    pub(crate) async fn issuing_root_pem(&self) -> String {
        let response = self
            .client()
            .get(format!("{}/roots/0", self.management_url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }

    /// Makes `host` resolve to `address` in pebble's DNS.
    async fn resolve(&self, host: &str, address: &str) {
        let response = self
            .client()
            .post(format!("{}/add-a", self.challtestsrv_url))
            .json(&serde_json::json!({ "host": format!("{host}."), "addresses": [address] }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

fn which(binary: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A CA and a certificate for 127.0.0.1/localhost signed by it, for pebble's own HTTPS.
fn pebble_https_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pebble https test CA");
    let ca_certificate = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let certificate = params.signed_by(&key, &issuer).unwrap();
    (ca_certificate.pem(), certificate.pem(), key.serialize_pem())
}

pub(crate) fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free for both TCP and UDP, as a DNS server needs.
fn free_tcp_and_udp_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The edge's HTTP-01 side: answers `/.well-known/acme-challenge/<token>` from whichever
/// `ChallengeResponder` is current (the test restarts `Tls`).
type CurrentResponder = Arc<RwLock<Option<Arc<dyn ChallengeResponder>>>>;

fn serve_challenges(listener: TcpListener, responder: CurrentResponder) {
    let router = Router::new().route(
        "/.well-known/acme-challenge/{token}",
        get(move |UrlPath(token): UrlPath<String>| {
            let responder = responder.read().unwrap().clone();
            async move {
                match responder.and_then(|responder| responder.key_authorization(&token)) {
                    Some(key_authorization) => (StatusCode::OK, key_authorization),
                    None => (StatusCode::NOT_FOUND, String::new()),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// The edge's HTTPS side: TLS with `server_config`; ACME validation connections are
/// closed after the handshake, others get one line and are closed.
fn serve_tls(listener: TcpListener, server_config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN_PROTOCOL) {
                    return;
                }
                let _ = tls.write_all(b"hello over tls\n").await;
                let _ = tls.shutdown().await;
            });
        }
    });
}

/// A TLS client trusting only `root_pem`: the leaf the server presented for `host`, after
/// a verified handshake.
async fn fetch_leaf(address: SocketAddr, host: &str, root_pem: &str) -> CertificateDer<'static> {
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
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(address).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(host.to_owned()).unwrap(), stream)
        .await
        .unwrap_or_else(|err| panic!("TLS handshake for {host}: {err}"));
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let mut body = String::new();
    tls.read_to_string(&mut body).await.unwrap();
    assert_eq!(body, "hello over tls\n");
    leaf
}

async fn tls_server(tls: &Tls) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    serve_tls(listener, tls.server_config());
    address
}

fn acme_config(pebble: &Pebble, challenge: AcmeChallenge) -> TlsConfig {
    TlsConfig {
        mode: TlsMode::Acme,
        acme_directory: pebble.directory_url.clone(),
        acme_email: Some("ops@example.com".to_owned()),
        acme_challenge: challenge,
        acme_extra_roots: Some(pebble.https_ca_path.clone()),
        ..TlsConfig::default()
    }
}

fn stored_leaf(data_dir: &Path, host: &str) -> CertificateDer<'static> {
    let pem = std::fs::read(data_dir.join(format!("certs/hosts/{host}/fullchain.pem"))).unwrap();
    CertificateDer::from_pem_slice(&pem).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_pebble_over_http01_and_tls_alpn01_renewed_and_failures_recorded() {
    // The edge's listeners are bound first: pebble's validation ports are fixed in its
    // config, so they must be known before it starts.
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = Pebble::start(
        http_listener.local_addr().unwrap().port(),
        https_listener.local_addr().unwrap().port(),
    )
    .await;
    let responder: CurrentResponder = Arc::default();
    serve_challenges(http_listener, responder.clone());
    let issuing_root = pebble.issuing_root_pem().await;

    // HTTP-01: the edge answers the challenge from `Tls::challenges`.
    let data_dir = tempfile::tempdir().unwrap();
    let tls = Tls::start(data_dir.path(), acme_config(&pebble, AcmeChallenge::Http01)).unwrap();
    *responder.write().unwrap() = Some(tls.challenges());
    assert!(!tls.has_certificate("app.test"));
    let status = tls
        .ensure_certificate("app.test")
        .await
        .unwrap_or_else(|err| panic!("{err}\npebble log:\n{}", pebble.logs()));
    assert_eq!(status.source, CertSource::Acme);
    assert!(
        status.issuer.contains("Pebble Intermediate"),
        "{}",
        status.issuer
    );
    assert_eq!(status.names, ["app.test"]);
    assert!(matches!(
        tls.state("app.test"),
        Some(CertificateState::Issued { .. })
    ));
    assert!(tls.has_certificate("app.test"));
    let key_mode = std::fs::metadata(data_dir.path().join("certs/hosts/app.test/privkey.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let account_key = std::fs::read(data_dir.path().join("certs/acme/account.key")).unwrap();

    let address = tls_server(&tls).await;
    let leaf = fetch_leaf(address, "app.test", &issuing_root).await;
    assert_eq!(leaf, stored_leaf(data_dir.path(), "app.test"));
    // Asking again changes nothing: the certificate is far from expiry.
    assert_eq!(tls.ensure_certificate("app.test").await.unwrap(), status);

    // TLS-ALPN-01: pebble's validator handshakes with the HTTPS listener, whose resolver
    // presents the challenge certificate while the order is pending.
    let alpn_dir = tempfile::tempdir().unwrap();
    let alpn_tls = Tls::start(
        alpn_dir.path(),
        acme_config(&pebble, AcmeChallenge::TlsAlpn01),
    )
    .unwrap();
    serve_tls(https_listener, alpn_tls.server_config());
    let alpn_status = alpn_tls
        .ensure_certificate("alpn.test")
        .await
        .unwrap_or_else(|err| panic!("{err}\npebble log:\n{}", pebble.logs()));
    assert!(alpn_status.issuer.contains("Pebble Intermediate"));
    let alpn_address = tls_server(&alpn_tls).await;
    let leaf = fetch_leaf(alpn_address, "alpn.test", &issuing_root).await;
    assert_eq!(leaf, stored_leaf(alpn_dir.path(), "alpn.test"));

    // A failed validation is recorded with the validator's reason and backs off.
    pebble.resolve("fail.test", "127.0.0.2").await;
    let err = tls.ensure_certificate("fail.test").await.unwrap_err();
    let TlsError::IssueFailed { reason, .. } = &err else {
        panic!("expected a failed issuance, got {err}");
    };
    assert!(reason.contains("127.0.0.2"), "{reason}");
    let Some(CertificateState::Failed {
        reason: recorded,
        failures: 1,
        ..
    }) = tls.state("fail.test")
    else {
        panic!("failure not recorded: {:?}", tls.state("fail.test"));
    };
    assert_eq!(&recorded, reason);
    assert!(!tls.has_certificate("fail.test"));
    assert!(matches!(
        tls.ensure_certificate("fail.test").await,
        Err(TlsError::BackingOff { .. })
    ));

    // Renewal after a restart: a certificate expiring in 10 days (inside the 30-day
    // window) is replaced by the scheduler; the fresh one and the backed-off failure are
    // left alone, and the account key is reused.
    let renew_dir = data_dir.path().join("certs/hosts/renew.test");
    std::fs::create_dir_all(&renew_dir).unwrap();
    let (chain, key) = expiring_pair("renew.test", 10);
    std::fs::write(renew_dir.join("fullchain.pem"), chain).unwrap();
    std::fs::write(renew_dir.join("privkey.pem"), key).unwrap();
    drop(tls);
    let tls = Tls::start(data_dir.path(), acme_config(&pebble, AcmeChallenge::Http01)).unwrap();
    *responder.write().unwrap() = Some(tls.challenges());
    assert_eq!(tls.status("app.test").unwrap(), status);
    let expiring = tls.status("renew.test").unwrap();
    assert_eq!(expiring.issuer, "CN=About to expire");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(cantila::tls::run_renewals(tls.clone(), async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while tls.status("renew.test").unwrap().issuer == expiring.issuer {
        assert!(
            Instant::now() < deadline,
            "not renewed: {:?}\npebble log:\n{}",
            tls.state("renew.test"),
            pebble.logs()
        );
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = tls.status("renew.test").unwrap();
    assert!(renewed.issuer.contains("Pebble Intermediate"));
    assert!(renewed.not_after > expiring.not_after);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("the scheduler stops on shutdown")
        .unwrap();
    assert_eq!(tls.status("app.test").unwrap(), status);
    assert!(matches!(
        tls.state("fail.test"),
        Some(CertificateState::Failed { failures: 1, .. })
    ));
    assert_eq!(
        std::fs::read(data_dir.path().join("certs/acme/account.key")).unwrap(),
        account_key
    );
    let address = tls_server(&tls).await;
    let leaf = fetch_leaf(address, "renew.test", &issuing_root).await;
    assert_eq!(leaf, stored_leaf(data_dir.path(), "renew.test"));

    // A forgotten hostname is no longer served.
    tls.forget("renew.test").await.unwrap();
    assert!(tls.status("renew.test").is_none());
    assert!(!renew_dir.exists());
}

/// A pair for `host` from a throwaway issuer, expiring in `days`.
fn expiring_pair(host: &str, days: i64) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "About to expire");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    (
        params.signed_by(&key, &issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}
