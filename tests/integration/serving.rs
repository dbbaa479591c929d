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

use reqwest::Method;
use serde_json::json;

use crate::{
    deploys::{cleanup, Repo},
    support::{wait_until, TestDaemon},
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn apps_and_static_sites_answer_on_their_hostnames() {
    let daemon = TestDaemon::start().await;
    let (status, body) = daemon.edge_get("nobody.example.com", "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("nobody.example.com"), "{body}");

    // A project that was never deployed answers 503 naming its state.
    daemon.create_project("idle").await;
    let (status, body) = daemon.edge_get("idle.admin.test.local", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("created"), "{body}");

    let repo = Repo::busybox("served by the edge\n");
    let (project_id, _) = daemon.connected_project("web", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let (status, body) = daemon.edge_get("WEB.admin.test.local:80", "/").await;
    assert_eq!((status, body.as_str()), (200, "served by the edge\n"));

    // An alias routes at once, is unique across accounts, and is listed with the domains.
    let aliases = format!("/v1/projects/{project_id}/aliases");
    daemon
        .post(
            &aliases,
            &daemon.admin_token,
            json!({ "hostname": "WWW.Example.test." }),
        )
        .await
        .expect(201);
    let (status, body) = daemon.edge_get("www.example.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "served by the edge\n"));
    let other = daemon.other_account_token("rival", cantila::names::Scope::Admin);
    let rival = daemon
        .post("/v1/projects", &other, json!({ "name": "rival" }))
        .await
        .expect(201)
        .body;
    let taken = daemon
        .post(
            &format!("/v1/projects/{}/aliases", rival["id"].as_str().unwrap()),
            &other,
            json!({ "hostname": "www.example.test" }),
        )
        .await
        .expect(409);
    assert!(
        taken.error_message().contains("www.example.test"),
        "{}",
        taken.text
    );
    let res = daemon
        .post(
            &aliases,
            &daemon.admin_token,
            json!({ "hostname": "x.admin.test.local" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("base domain"), "{}", res.text);
    daemon
        .post(
            &aliases,
            &daemon.admin_token,
            json!({ "hostname": "*.example.test" }),
        )
        .await
        .expect(422);
    let listed = daemon
        .get(&aliases, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(listed["aliases"][0]["hostname"], "www.example.test");
    let domains = daemon
        .get(
            &format!("/v1/projects/{project_id}/domains"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let names: Vec<(&str, &str)> = domains["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["hostname"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("web.admin.test.local", "default"),
            ("www.example.test", "alias")
        ]
    );
    assert_eq!(
        domains["domains"][1]["certificate"]["status"], "none",
        "TLS is off in this test"
    );
    daemon
        .delete(&format!("{aliases}/www.example.test"), &daemon.admin_token)
        .await
        .expect(204);
    assert_eq!(daemon.edge_get("www.example.test", "/").await.0, 404);
    daemon
        .delete(&format!("{aliases}/www.example.test"), &daemon.admin_token)
        .await
        .expect(404);

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
        daemon.edge_get("handbook.admin.test.local", "/").await.0,
        200
    );
    assert_eq!(daemon.edge_get("docs.admin.test.local", "/").await.0, 404);
    daemon
        .delete(&format!("/v1/projects/{site_id}"), &daemon.admin_token)
        .await
        .expect(204);
    assert_eq!(
        daemon.edge_get("handbook.admin.test.local", "/").await.0,
        404
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn https_serves_the_app_with_a_certificate_from_the_local_ca() {
    let daemon = TestDaemon::start_with(|c| c.tls.mode = cantila::tls::TlsMode::SelfSigned).await;
    let repo = Repo::busybox("over tls\n");
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
    let repo = Repo::busybox("version 1\n");
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
                // Paces the load (about 20 requests a second per task).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    let mut last = String::new();
    for version in 2..=3 {
        repo.commit(
            &[("www/index.html", &format!("version {version}\n"))],
            "bump",
        );
        let deploy = daemon.deploy(&project_id, None).await;
        assert_eq!(deploy["status"], "running", "{deploy}");
        let (_, body) = daemon.edge_get("steady.admin.test.local", "/").await;
        assert_eq!(body, format!("version {version}\n"));
        last = deploy["id"].as_str().unwrap().to_owned();
    }
    // Past the drain of the last release too: the one before it has drained and stopped,
    // and traffic went on after that.
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the previous release drained and stopped",
        || async {
            engine
                .containers(&[("cantila.project", project_id.as_str())])
                .await
                .unwrap()
                .iter()
                .all(|c| c.labels.get("cantila.deploy") == Some(&last))
        },
    )
    .await;
    let sent_at_the_end_of_the_drain = sent.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(60),
        "requests flow after the drain",
        || async { sent.load(Ordering::Relaxed) >= sent_at_the_end_of_the_drain + 20 },
    )
    .await;
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

#[tokio::test]
async fn an_alias_gets_a_certificate_from_an_acme_ca_and_serves_https() {
    use crate::tls_acme::{free_tcp_port, Pebble};
    // Pebble validates HTTP-01 on a fixed port: the edge's HTTP listener is bound there.
    let http_port = free_tcp_port();
    let pebble = Pebble::start(http_port, free_tcp_port()).await;
    let dir = crate::support::TestDir::new();
    let mut config = crate::support::test_config(dir.path());
    config.tls = cantila::tls::TlsConfig {
        mode: cantila::tls::TlsMode::Acme,
        acme_directory: pebble.directory_url.clone(),
        acme_email: Some("ops@example.com".to_owned()),
        acme_challenge: cantila::tls::AcmeChallenge::Http01,
        acme_extra_roots: Some(pebble.https_ca_path.clone()),
        ..cantila::tls::TlsConfig::default()
    };
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = cantila::Listeners {
        api: crate::support::listener(any),
        http: crate::support::listener(("127.0.0.1", http_port)),
        https: crate::support::listener(any),
        metrics: None,
    };
    let daemon = TestDaemon::start_on(dir, config, listeners).await;

    let repo = Repo::busybox("over acme tls\n");
    let (project_id, _) = daemon.connected_project("shop", &repo).await;
    let host = "shop.example.test";
    daemon
        .post(
            &format!("/v1/projects/{project_id}/aliases"),
            &daemon.admin_token,
            json!({ "hostname": host }),
        )
        .await
        .expect(201);
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");

    // The certificate is requested in the background; the domains listing shows it.
    let mut issued = serde_json::Value::Null;
    for _ in 0..300 {
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
        if alias["certificate"]["status"] == "acme" || alias["certificate"]["status"] == "failed" {
            issued = alias;
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(issued["certificate"]["status"], "acme", "{issued}");
    assert!(issued["certificate"]["expiresAt"].is_string(), "{issued}");

    let root = pebble.issuing_root_pem().await;
    let tls_client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
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
    assert_eq!(res.text().await.unwrap(), "over acme tls\n");

    // Plain HTTP now redirects to HTTPS, except the ACME challenge path.
    let mut redirected = false;
    for _ in 0..100 {
        let (status, _) = daemon.edge_get(host, "/").await;
        if status == 308 {
            redirected = true;
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(redirected, "http redirects once the certificate exists");
    cleanup(&project_id).await;
}

async fn instances(daemon: &TestDaemon, project_id: &str) -> Vec<serde_json::Value> {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["instances"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn scaling_out_in_to_zero_and_resizing_needs_no_rebuild() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    let repo = Repo::busybox("scaled\n");
    let (project_id, _) = daemon.connected_project("scaled", &repo).await;
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");
    let host = "scaled.admin.test.local";
    let scale = format!("/v1/projects/{project_id}/scale");
    let listed = instances(&daemon, &project_id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "healthy", "{listed:?}");
    assert_eq!(listed[0]["size"], "small");

    let project = daemon
        .post(&scale, &daemon.admin_token, json!({ "instances": 2 }))
        .await
        .expect(200)
        .body;
    assert_eq!(project["instances"], 2);
    let listed = instances(&daemon, &project_id).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|i| i["state"] == "healthy"), "{listed:?}");
    for _ in 0..10 {
        assert_eq!(
            daemon.edge_get(host, "/").await,
            (200, "scaled\n".to_owned())
        );
    }

    let project = daemon
        .post(&scale, &daemon.admin_token, json!({ "size": "nano" }))
        .await
        .expect(200)
        .body;
    assert_eq!(project["size"], "nano");
    let listed = instances(&daemon, &project_id).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|i| i["size"] == "nano"),
        "every instance was replaced: {listed:?}"
    );

    let res = daemon
        .post(&scale, &daemon.admin_token, json!({ "instances": 11 }))
        .await
        .expect(422);
    assert!(
        res.error_message().contains("between 0 and 10"),
        "{}",
        res.text
    );
    let res = daemon
        .post(&scale, &daemon.admin_token, json!({ "size": "huge" }))
        .await
        .expect(422);
    assert!(res.error_message().contains("nano"), "{}", res.text);

    let project = daemon
        .post(&scale, &daemon.admin_token, json!({ "instances": 0 }))
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "stopped");
    let (status, body) = daemon.edge_get(host, "/").await;
    assert_eq!(status, 503);
    assert!(body.contains("stopped"), "{body}");
    assert!(instances(&daemon, &project_id).await.is_empty());

    let project = daemon
        .post(&scale, &daemon.admin_token, json!({ "instances": 1 }))
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "scaled\n".to_owned())
    );
    let deploys = daemon
        .get(
            &format!("/v1/projects/{project_id}/deploys"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        deploys["deploys"].as_array().unwrap().len(),
        1,
        "scaling never rebuilds"
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_removed_instance_is_replaced_and_service_returns() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::busybox("resilient\n");
    let (project_id, _) = daemon.connected_project("resilient", &repo).await;
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let before = engine
        .containers(&[("cantila.project", &project_id)])
        .await
        .unwrap();
    assert_eq!(before.len(), 1);
    engine
        .stop_and_remove(&before[0].id, Duration::from_secs(0))
        .await
        .unwrap();

    let host = "resilient.admin.test.local";
    let mut back = false;
    for _ in 0..300 {
        if daemon.edge_get(host, "/").await == (200, "resilient\n".to_owned()) {
            back = true;
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the reconciler started a replacement and the edge routes to it"
    );
    let after = engine
        .containers(&[("cantila.project", &project_id)])
        .await
        .unwrap();
    assert_eq!(after.len(), 1, "exactly one replacement");
    assert_ne!(after[0].id, before[0].id);
    cleanup(&project_id).await;
}

#[tokio::test]
async fn rollback_re_releases_an_earlier_deploy_without_a_rebuild() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    let repo = Repo::busybox("release one\n");
    let (project_id, _) = daemon.connected_project("undo", &repo).await;
    let rollback = format!("/v1/projects/{project_id}/rollback");
    let res = daemon
        .post(&rollback, &daemon.admin_token, json!({}))
        .await
        .expect(422);
    assert!(res.error_message().contains("no earlier"), "{}", res.text);

    let first = daemon.deploy(&project_id, None).await;
    daemon
        .post(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
            json!({ "vars": { "GREETING": "second" } }),
        )
        .await
        .expect(200);
    repo.commit(&[("www/index.html", "release two\n")], "two");
    let second = daemon.deploy(&project_id, None).await;
    assert_eq!(second["status"], "running");
    let host = "undo.admin.test.local";
    assert_eq!(daemon.edge_get(host, "/").await.1, "release two\n");

    let queued = daemon
        .post(&rollback, &daemon.admin_token, json!({}))
        .await
        .expect(202)
        .body;
    let rolled = daemon
        .wait_deploy(queued["deployId"].as_str().unwrap())
        .await;
    assert_eq!(rolled["status"], "running", "{rolled}");
    assert_eq!(rolled["trigger"], "rollback");
    assert_eq!(rolled["rollbackOf"], first["id"]);
    assert_eq!(
        rolled["image"], first["image"],
        "the earlier image, not a new one"
    );
    assert_eq!(rolled["commitSha"], first["commitSha"]);
    assert_eq!(daemon.edge_get(host, "/").await.1, "release one\n");
    // The env snapshot of the first release came back with it (GREETING was unset then).
    assert_eq!(daemon.edge_get(host, "/env.txt").await.1, "\n");
    let log = crate::deploys::events_text(&daemon, rolled["id"].as_str().unwrap()).await;
    assert!(
        log.contains("no rebuild") && !log.contains("FROM "),
        "{log}"
    );

    // Rolling forward again to a named deploy works the same way.
    let forward = daemon
        .post(
            &rollback,
            &daemon.admin_token,
            json!({ "deployId": second["id"] }),
        )
        .await
        .expect(202)
        .body;
    let forward = daemon
        .wait_deploy(forward["deployId"].as_str().unwrap())
        .await;
    assert_eq!(forward["status"], "running", "{forward}");
    assert_eq!(daemon.edge_get(host, "/").await.1, "release two\n");
    assert_eq!(daemon.edge_get(host, "/env.txt").await.1, "second\n");
    let res = daemon
        .post(
            &rollback,
            &daemon.admin_token,
            json!({ "deployId": "dep_unknown" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("dep_unknown"), "{}", res.text);
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_crash_during_a_release_keeps_the_previous_release_serving() {
    let dir = crate::support::TestDir::new();
    let config = crate::support::test_config(dir.path());
    let repo = Repo::busybox("the stable release\n");
    let binary = crate::support::BinaryDaemon::start(&config).await;
    let project_id = binary.connected_project("sturdy", repo.path()).await;
    let first = binary.deploy(&project_id).await;
    binary.wait_status(&first, "running").await;

    // The next release listens only after a long pause: the daemon dies while it is checked.
    repo.commit(
        &[(
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"sleep 120; httpd -f -p 8080 -h /www\"]\n",
        )],
        "slow start",
    );
    let second_id = binary.deploy(&project_id).await;
    binary.wait_status(&second_id, "releasing").await;
    // The crash comes while the new release's instance runs and is being health-checked.
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the new release's instance runs",
        || async {
            engine
                .containers(&[("cantila.deploy", second_id.as_str())])
                .await
                .unwrap()
                .iter()
                .any(|container| container.state == "running")
        },
    )
    .await;
    binary.kill9();

    let daemon = TestDaemon::start_in(dir, config).await;
    let deploy = daemon.wait_deploy(&second_id).await;
    assert_eq!(deploy["status"], "failed", "{deploy}");
    assert!(
        deploy["error"].as_str().unwrap().contains("interrupted"),
        "{deploy}"
    );
    assert!(
        engine
            .containers(&[("cantila.deploy", &second_id)])
            .await
            .unwrap()
            .is_empty(),
        "the half-released instance is gone"
    );
    let (status, body) = daemon.edge_get("sturdy.admin.test.local", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "the stable release\n"),
        "the previous release still serves"
    );
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn old_images_are_pruned_beyond_the_kept_releases() {
    let daemon = TestDaemon::start_with(|c| {
        c.deploy.keep_images = 1;
        c.deploy.drain_secs = 0;
    })
    .await;
    let repo = Repo::busybox("image one\n");
    let (project_id, _) = daemon.connected_project("pruned", &repo).await;
    let first = daemon.deploy(&project_id, None).await;
    for n in 2..=3 {
        repo.commit(&[("www/index.html", &format!("image {n}\n"))], "next");
        assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");
    }
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let first_image = first["image"].as_str().unwrap();
    assert_eq!(
        engine.image_id(first_image).await.unwrap(),
        None,
        "the oldest image was pruned"
    );
    let queued = daemon
        .post(
            &format!("/v1/projects/{project_id}/rollback"),
            &daemon.admin_token,
            json!({ "deployId": first["id"] }),
        )
        .await
        .expect(202)
        .body;
    let rolled = daemon
        .wait_deploy(queued["deployId"].as_str().unwrap())
        .await;
    assert_eq!(rolled["status"], "failed");
    assert!(
        rolled["error"].as_str().unwrap().contains("pruned"),
        "{rolled}"
    );
    assert_eq!(
        daemon.edge_get("pruned.admin.test.local", "/").await.1,
        "image 3\n"
    );
    cleanup(&project_id).await;
}

/// The instances of one process type, as the API lists them.
async fn of_process(
    daemon: &TestDaemon,
    project_id: &str,
    process: &str,
) -> Vec<serde_json::Value> {
    instances(daemon, project_id)
        .await
        .into_iter()
        .filter(|i| i["process"] == process)
        .collect()
}

#[tokio::test]
async fn procfile_workers_run_beside_web_with_their_own_counts_and_are_never_routed() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    let mut files = crate::deploys::busybox_app("web answers\n");
    files.push((
        "Procfile",
        "web: httpd -f -p 8080 -h /www\nworker: echo worker $WORKER_NOTE started; while true; do sleep 1; done\n"
            .to_owned(),
    ));
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project("chores", &repo).await;
    daemon
        .post(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
            json!({ "vars": { "WORKER_NOTE": "from-env" } }),
        )
        .await
        .expect(200);
    let first = daemon.deploy(&project_id, None).await;
    assert_eq!(first["status"], "running", "{first}");
    let host = "chores.admin.test.local";

    // One web and one worker by default; the worker runs its Procfile command with the
    // project's env, and only web takes traffic.
    let workers = of_process(&daemon, &project_id, "worker").await;
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["state"], "healthy");
    assert_eq!(of_process(&daemon, &project_id, "web").await.len(), 1);
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let worker_containers = engine
        .containers(&[
            ("cantila.project", &project_id),
            ("cantila.process", "worker"),
        ])
        .await
        .unwrap();
    assert_eq!(worker_containers.len(), 1);
    let said = engine.tail_logs(&worker_containers[0].id, 5).await.unwrap();
    assert!(
        said.iter().any(|l| l.contains("worker from-env started")),
        "{said:?}"
    );
    for _ in 0..10 {
        assert_eq!(
            daemon.edge_get(host, "/").await,
            (200, "web answers\n".to_owned())
        );
    }

    // Per-process scale: workers only; the web instance is untouched.
    let scale = format!("/v1/projects/{project_id}/scale");
    let web_before = of_process(&daemon, &project_id, "web").await[0]["id"].clone();
    let project = daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "worker": 2 } }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(project["processes"], json!({ "web": 1, "worker": 2 }));
    assert_eq!(of_process(&daemon, &project_id, "worker").await.len(), 2);
    let web_after = of_process(&daemon, &project_id, "web").await;
    assert_eq!(web_after.len(), 1);
    assert_eq!(web_after[0]["id"], web_before, "web was not replaced");

    let res = daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "mailer": 1 } }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("web, worker"), "{}", res.text);
    let res = daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "a;b": 1 } }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("process type"), "{}", res.text);
    let res = daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "worker": 99 } }),
        )
        .await
        .expect(422);
    assert!(
        res.error_message().contains("between 0 and 10"),
        "{}",
        res.text
    );

    // A worker that disappears is replaced by the reconciler.
    let victim = engine
        .containers(&[
            ("cantila.project", &project_id),
            ("cantila.process", "worker"),
        ])
        .await
        .unwrap()
        .remove(0);
    engine
        .stop_and_remove(&victim.id, Duration::from_secs(0))
        .await
        .unwrap();
    let mut replaced = false;
    for _ in 0..60 {
        let workers = of_process(&daemon, &project_id, "worker").await;
        if workers.len() == 2 && workers.iter().all(|w| w["state"] == "healthy") {
            replaced = true;
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        replaced,
        "the reconciler brought the worker count back to 2"
    );

    // A redeploy replaces every process type with the new release's, keeping the counts.
    repo.commit(&[("www/index.html", "web answers again\n")], "second");
    let second = daemon.deploy(&project_id, None).await;
    assert_eq!(second["status"], "running", "{second}");
    // The previous release's workers stop after the switch (they ignore SIGTERM, so
    // they take the stop grace period).
    let mut workers = Vec::new();
    for _ in 0..60 {
        workers = of_process(&daemon, &project_id, "worker").await;
        if workers.len() == 2 && workers.iter().all(|w| w["deployId"] == second["id"]) {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(
        workers.iter().all(|w| w["deployId"] == second["id"]),
        "{workers:?}"
    );
    assert!(workers
        .iter()
        .all(|w| w["address"].as_str().is_some_and(|a| !a.contains(':'))));
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "web answers again\n".to_owned())
    );

    // `instances: 0` stops the whole project; scaling web up brings the workers back.
    let project = daemon
        .post(&scale, &daemon.admin_token, json!({ "instances": 0 }))
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "stopped");
    assert!(instances(&daemon, &project_id).await.is_empty());
    let project = daemon
        .post(&scale, &daemon.admin_token, json!({ "instances": 1 }))
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");
    assert_eq!(of_process(&daemon, &project_id, "worker").await.len(), 2);

    // Workers can run with no web instance: the edge says the site is stopped.
    let project = daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "web": 0, "worker": 1 } }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");
    assert_eq!(project["instances"], 0);
    assert!(of_process(&daemon, &project_id, "web").await.is_empty());
    assert_eq!(of_process(&daemon, &project_id, "worker").await.len(), 1);
    let (status, body) = daemon.edge_get(host, "/").await;
    assert_eq!(status, 503, "{body}");
    cleanup(&project_id).await;
}

async fn edge_response(daemon: &TestDaemon, host: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://{}{path}", daemon.http))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

fn borrowed(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(path, text)| (path.as_str(), text.as_str()))
        .collect()
}

/// A repository of `app_with_assets`' files.
fn repo_of(files: &[(String, String)]) -> Repo {
    Repo::new(&borrowed(files))
}

/// A container app whose image answers every path itself (from `/srv/app`), beside an
/// assets directory whose copies of the same names differ, so each answer shows who gave it.
fn app_with_assets(dir: &str, version: &str) -> Vec<(String, String)> {
    vec![
        (
            "Dockerfile".to_owned(),
            format!(
                "FROM busybox:latest\nWORKDIR /srv\nCOPY {dir} /srv/{dir}\nCOPY app /srv/app\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv/app\"]\n"
            ),
        ),
        ("app/index.html".to_owned(), "from the app".to_owned()),
        ("app/site.css".to_owned(), "the app's css".to_owned()),
        (
            "app/static/site.css".to_owned(),
            "the app's static css".to_owned(),
        ),
        (format!("{dir}/site.css"), format!("edge css {version}")),
        (format!("{dir}/img/logo.svg"), "<svg/>".to_owned()),
    ]
}

#[tokio::test]
async fn a_container_apps_asset_files_are_answered_by_the_edge_and_everything_else_by_the_app() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    let repo = repo_of(&app_with_assets("public", "one"));
    let (project_id, _) = daemon.connected_project("shelf", &repo).await;
    let first = daemon.deploy(&project_id, None).await;
    assert_eq!(first["status"], "running", "{first}");
    assert_eq!(first["plan"]["assetsDir"], "public", "{first}");
    let host = "shelf.admin.test.local";

    // `public/` is served at the site's root by the edge, with the static-site rules.
    let css = edge_response(&daemon, host, "/site.css").await;
    assert_eq!(css.status(), 200);
    let headers = css.headers().clone();
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(css.text().await.unwrap(), "edge css one");
    let revalidated = client()
        .get(format!("http://{}/site.css", daemon.http))
        .header("host", host)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(daemon.edge_get(host, "/img/logo.svg").await.1, "<svg/>");

    // Everything the edge does not hold goes to the app: its root, its own files, paths
    // that only look like assets, directories, and methods other than GET and HEAD.
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "from the app".to_owned())
    );
    assert_eq!(
        daemon.edge_get(host, "/static/site.css").await,
        (200, "the app's static css".to_owned())
    );
    assert_eq!(daemon.edge_get(host, "/missing.css").await.0, 404);
    assert_eq!(daemon.edge_get(host, "/img/").await.0, 404);
    let posted = client()
        .post(format!("http://{}/site.css", daemon.http))
        .header("host", host)
        .send()
        .await
        .unwrap();
    assert_ne!(posted.text().await.unwrap(), "edge css one");

    // A redeploy serves its own files; a rollback serves the earlier release's again.
    repo.commit(&borrowed(&app_with_assets("public", "two")), "restyle");
    let second = daemon.deploy(&project_id, None).await;
    assert_eq!(second["status"], "running", "{second}");
    assert_eq!(daemon.edge_get(host, "/site.css").await.1, "edge css two");
    let queued = daemon
        .post(
            &format!("/v1/projects/{project_id}/rollback"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    let rolled = daemon
        .wait_deploy(queued["deployId"].as_str().unwrap())
        .await;
    assert_eq!(rolled["status"], "running", "{rolled}");
    assert_eq!(daemon.edge_get(host, "/site.css").await.1, "edge css one");

    // `static/` is served under `/static/`, and listed by that URL path.
    let flask_like = repo_of(&app_with_assets("static", "three"));
    let (flask_id, _) = daemon.connected_project("flaskish", &flask_like).await;
    let deploy = daemon.deploy(&flask_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "flaskish.admin.test.local";
    assert_eq!(
        daemon.edge_get(host, "/static/site.css").await.1,
        "edge css three"
    );
    assert_eq!(daemon.edge_get(host, "/site.css").await.1, "the app's css");
    let listed = daemon
        .get(
            &format!("/v1/projects/{flask_id}/assets"),
            &daemon.admin_token,
        )
        .await
        .expect(200);
    let paths: Vec<&str> = listed.body["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|asset| asset["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["static/img/logo.svg", "static/site.css"]);
    cleanup(&project_id).await;
    cleanup(&flask_id).await;
}

/// A busybox app whose `/cgi-bin/headers` answers with the HTTP headers it received, one
/// `HTTP_NAME=value` line each, as CGI hands them over.
fn header_echo_app() -> Repo {
    Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nRUN chmod +x /www/cgi-bin/headers\nEXPOSE 8080\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        ),
        (
            "www/cgi-bin/headers",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv | grep '^HTTP_' | sort\n",
        ),
        ("www/index.html", "echo\n"),
    ])
}

/// The `HTTP_*` lines of a header-echo answer whose names start with `prefix`.
fn echoed<'a>(answer: &'a str, prefix: &str) -> Vec<&'a str> {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn the_app_sees_only_the_host_and_client_address_the_edge_vouches_for() {
    let daemon = TestDaemon::start().await;
    let repo = header_echo_app();
    let (project_id, _) = daemon.connected_project("echo", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "echo.admin.test.local";
    let (status, body) = daemon.edge_get(host, "/cgi-bin/headers").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("HTTP_HOST={host}")), "{body}");

    // An absolute-form target routes by its authority, and that authority is the Host the
    // app receives; the client's X-Real-IP and Forwarded never reach it.
    let (status, answer) = crate::edge::raw_exchange(
        daemon.http,
        format!(
            "GET http://{host}/cgi-bin/headers HTTP/1.1\r\nHost: evil.example\r\n\
             X-Real-IP: 203.0.113.66\r\nForwarded: for=203.0.113.66;host=evil.example\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(echoed(&answer, "HTTP_HOST="), [format!("HTTP_HOST={host}")]);
    assert_eq!(
        echoed(&answer, "HTTP_X_REAL_IP="),
        ["HTTP_X_REAL_IP=127.0.0.1"]
    );
    assert_eq!(
        echoed(&answer, "HTTP_FORWARDED="),
        [format!(
            "HTTP_FORWARDED=for=127.0.0.1;proto=http;host=\"{host}\""
        )]
    );
    assert!(
        !answer.contains("evil.example") && !answer.contains("203.0.113.66"),
        "{answer}"
    );

    // Requests that name their host twice or not at all, or whose body is malformed, are
    // the client's errors: 400, never a guess and never a 502.
    for (request, why) in [
        (
            format!("GET /cgi-bin/headers HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
            "two Host headers",
        ),
        (
            "GET /cgi-bin/headers HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
            "HTTP/1.1 without Host",
        ),
        (
            format!(
                "POST /cgi-bin/headers HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\nnot-hex\r\nhello\r\n0\r\n\r\n"
            ),
            "a malformed chunked body",
        ),
    ] {
        let (status, answer) = crate::edge::raw_exchange(daemon.http, request.as_bytes()).await;
        assert_eq!(status, 400, "{why}: {answer}");
    }

    // HTTP/2 (prior knowledge on the plain listener): :authority is the Host the app gets,
    // and a Host header naming another host is refused.
    let stream = tokio::net::TcpStream::connect(daemon.http).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for (extra_host, expected) in [(None, 200), (Some("evil.example"), 400)] {
        let mut request = hyper::Request::get(format!("http://{host}/cgi-bin/headers"));
        if let Some(extra_host) = extra_host {
            request = request.header("host", extra_host);
        }
        let response = sender
            .send_request(
                request
                    .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "Host {extra_host:?}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = format!("\r\n\r\n{}", String::from_utf8_lossy(&body));
        if expected == 200 {
            assert_eq!(echoed(&text, "HTTP_HOST="), [format!("HTTP_HOST={host}")]);
        }
    }
    cleanup(&project_id).await;
}

/// Per hostname (the `host=` field of a line): how many lines say a certificate request
/// failed (routing's line, at whatever level), and how many are warnings.
fn certificate_lines(log: &str) -> std::collections::HashMap<String, (usize, usize)> {
    let mut counts = std::collections::HashMap::<String, (usize, usize)>::new();
    for line in log.lines() {
        let Some(host) = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("host="))
        else {
            continue;
        };
        let entry = counts.entry(host.to_owned()).or_default();
        if line.contains("certificate request failed") {
            entry.0 += 1;
        }
        if line.contains(" WARN ") {
            entry.1 += 1;
        }
    }
    counts
}

#[tokio::test]
async fn failing_certificates_of_many_aliases_are_logged_once_each_and_aliases_are_capped() {
    const ALIASES: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config_file = dir.path().join("cantila.toml");
    let log_path = dir.path().join("daemon.log");
    // An ACME directory nothing listens on: every certificate request fails at once.
    std::fs::write(
        &config_file,
        format!(
            "data_dir = \"{}\"\nbase_domain = \"test.local\"\napi_listen = \"127.0.0.1:0\"\n\
             http_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n\
             [tls]\nmode = \"acme\"\nacme_directory = \"https://127.0.0.1:1/directory\"\n\
             [domains]\nmax_aliases_per_project = {ALIASES}\n",
            data_dir.display()
        ),
    )
    .unwrap();
    // Routing's per-refresh line is at debug: it shows each refresh asked again.
    let daemon = crate::support::BinaryDaemon::start_from_file(
        &config_file,
        &data_dir,
        &log_path,
        "info,cantila::routing=debug",
    )
    .await;
    let site = Repo::from_fixture("static-root");
    let project_id = daemon.connected_project("site", site.path()).await;
    let deploy_id = daemon.deploy(&project_id).await;
    daemon.wait_status(&deploy_id, "running").await;

    // Every alias add refreshes the route table, and each refresh asks for a certificate
    // for every served hostname that has none.
    let hosts: Vec<String> = (1..=ALIASES)
        .map(|n| format!("h{n:03}.flood.example"))
        .collect();
    for host in &hosts {
        let (status, body) = daemon
            .call(
                Method::POST,
                &format!("/v1/projects/{project_id}/aliases"),
                json!({ "hostname": host }),
            )
            .await;
        assert_eq!(status, 201, "{host}: {body}");
    }
    // One past the cap is refused, naming the limit.
    let (status, body) = daemon
        .call(
            Method::POST,
            &format!("/v1/projects/{project_id}/aliases"),
            json!({ "hostname": "one-too-many.flood.example" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("domains.max_aliases_per_project = {ALIASES}")),
        "{body}"
    );

    // Wait until every hostname's request has failed, then make three more refreshes (an
    // alias on another, idle project refreshes the whole table) and wait until each
    // hostname was asked about at least three more times.
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let asked_at_least = |log: &str, times: usize| {
        let counts = certificate_lines(log);
        hosts
            .iter()
            .all(|host| counts.get(host).is_some_and(|(asked, _)| *asked >= times))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !asked_at_least(&log(), 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "not every certificate request failed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = log().len();
    let (status, idle) = daemon
        .call(Method::POST, "/v1/projects", json!({ "name": "idle" }))
        .await;
    assert_eq!(status, 201, "{idle}");
    for n in 1..=3 {
        let (status, body) = daemon
            .call(
                Method::POST,
                &format!("/v1/projects/{}/aliases", idle["id"].as_str().unwrap()),
                json!({ "hostname": format!("idle{n}.example") }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !asked_at_least(&log()[before..], 3) {
        assert!(
            std::time::Instant::now() < deadline,
            "the refreshes did not ask for every certificate again within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each hostname's failure is a warning once, however many refreshes asked again.
    let log = log();
    let counts = certificate_lines(&log);
    let mut warnings = 0;
    for host in &hosts {
        let count = counts.get(host).map_or(0, |(_, warned)| *warned);
        assert_eq!(count, 1, "{host} was warned about {count} times");
        warnings += count;
    }
    let all_warnings = log.lines().filter(|line| line.contains(" WARN ")).count();
    assert!(
        all_warnings <= warnings + 5,
        "{all_warnings} warnings for {ALIASES} failing aliases"
    );
}
