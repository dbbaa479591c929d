//! Apps served through the real edge: by Host over HTTP and HTTPS, static sites from disk,
//! 404 for unknown hosts, 503 naming the project's state, and a redeploy under a steady
//! stream of requests without a single failure.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::json;

use crate::{
    deploys::{busybox_app, cleanup, Repo},
    support::TestDaemon,
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn edge_get(daemon: &TestDaemon, host: &str, path: &str) -> (u16, String) {
    let res = client()
        .get(format!("http://{}{path}", daemon.http))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn apps_and_static_sites_answer_on_their_hostnames() {
    let daemon = TestDaemon::start().await;
    let (status, body) = edge_get(&daemon, "nobody.example.com", "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("nobody.example.com"), "{body}");

    // A project that was never deployed answers 503 naming its state.
    daemon.create_project("idle").await;
    let (status, body) = edge_get(&daemon, "idle.admin.test.local", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("created"), "{body}");

    let files = busybox_app("served by the edge\n");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project("web", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let (status, body) = edge_get(&daemon, "WEB.admin.test.local:80", "/").await;
    assert_eq!((status, body.as_str()), (200, "served by the edge\n"));

    let site = Repo::from_fixture("static-public");
    let (site_id, _) = daemon.connected_project("docs", &site).await;
    let deploy = daemon.deploy(&site_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let res = client()
        .get(format!("http://{}/", daemon.http))
        .header("host", "docs.admin.test.local")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        res.text().await.unwrap().contains("<"),
        "the site's index.html"
    );
    let res = client()
        .get(format!("http://{}/", daemon.http))
        .header("host", "docs.admin.test.local")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // Renaming moves the hostname; deleting stops the routing.
    daemon
        .patch(
            &format!("/v1/projects/{site_id}"),
            &daemon.admin_token,
            json!({ "name": "handbook" }),
        )
        .await
        .expect(200);
    assert_eq!(
        edge_get(&daemon, "handbook.admin.test.local", "/").await.0,
        200
    );
    assert_eq!(edge_get(&daemon, "docs.admin.test.local", "/").await.0, 404);
    daemon
        .delete(&format!("/v1/projects/{site_id}"), &daemon.admin_token)
        .await
        .expect(204);
    assert_eq!(
        edge_get(&daemon, "handbook.admin.test.local", "/").await.0,
        404
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn https_serves_the_app_with_a_certificate_from_the_local_ca() {
    let daemon = TestDaemon::start_with(|c| c.tls.mode = cantila::tls::TlsMode::SelfSigned).await;
    let files = busybox_app("over tls\n");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project("secure", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");

    let ca_path = daemon.data_dir().join("certs/local-ca/ca.pem");
    let ca = std::fs::read(&ca_path).unwrap_or_else(|_| panic!("{} exists", ca_path.display()));
    let host = "secure.admin.test.local";
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(host, daemon.https)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = tls_client
        .get(format!("https://{host}:{}/", daemon.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "over tls\n");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_redeploy_under_steady_traffic_fails_no_request() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 1).await;
    let files = busybox_app("version 1\n");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project("steady", &repo).await;
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let edge = daemon.http;
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            // Bounded: at most 20,000 requests per task, at most ~20 per second each.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let res = client
                    .get(format!("http://{edge}/"))
                    .header("host", "steady.admin.test.local")
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                match res {
                    Ok(res) if res.status().is_success() => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for version in 2..=3 {
        repo.commit(
            &[("www/index.html", &format!("version {version}\n"))],
            "bump",
        );
        let deploy = daemon.deploy(&project_id, None).await;
        assert_eq!(deploy["status"], "running", "{deploy}");
        let (_, body) = edge_get(&daemon, "steady.admin.test.local", "/").await;
        assert_eq!(body, format!("version {version}\n"));
    }
    // Past the drain of the last release too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 50, "traffic flowed: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across two redeploys"
    );
    cleanup(&project_id).await;
}
