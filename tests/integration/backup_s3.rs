//! Backup copies in S3-compatible storage, against a real S3-compatible server on loopback
//! (moto's server, started by `scripts/ensure-s3.sh`; these tests fail without it): volume
//! backups of a real project are uploaded (one PUT and multipart), verified, byte-equal in
//! the bucket, fetched back when the local file is gone; an unreachable endpoint or a
//! missing bucket leaves the local backup completed and restorable, with the reason on the
//! backup and in the audit log, and the upload is retried until it succeeds.

use std::{io::Read, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{
    data::{remove_installation_volumes, wait_backup},
    support::TestDaemon,
};

const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "cantila-test-secret-value";
const SIGNATURE_TTL: Duration = Duration::from_secs(600);

/// The endpoint `scripts/ensure-s3.sh` started.
pub(crate) fn s3_endpoint() -> String {
    std::env::var("CANTILA_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5931".to_owned())
}

/// A fresh bucket on the test server, and a client of its own (not the daemon's) to read it.
pub(crate) struct TestBucket {
    bucket: Bucket,
    credentials: Credentials,
    client: reqwest::Client,
}

impl TestBucket {
    pub(crate) async fn create() -> Self {
        let endpoint = s3_endpoint();
        let name = format!(
            "cantila-test-{}",
            cantila::ids::random_base62(10).to_ascii_lowercase()
        );
        let bucket =
            Bucket::new(endpoint.parse().unwrap(), UrlStyle::Path, name, "us-east-1").unwrap();
        let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY);
        let client = reqwest::Client::new();
        // Fail loudly, not skip, when the server is missing.
        let created = client
            .put(bucket.create_bucket(&credentials).sign(SIGNATURE_TTL))
            .header("content-length", "0")
            .send()
            .await
            .unwrap_or_else(|err| {
                panic!("no S3-compatible server at {endpoint} ({err}); run scripts/ensure-s3.sh")
            });
        assert!(
            created.status().is_success(),
            "creating the test bucket: {}",
            created.status()
        );
        Self {
            bucket,
            credentials,
            client,
        }
    }

    pub(crate) fn name(&self) -> String {
        self.bucket.name().to_owned()
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        let response = self.client.get(url).send().await.unwrap();
        if response.status() == 404 {
            return None;
        }
        assert!(
            response.status().is_success(),
            "GET {key}: {}",
            response.status()
        );
        Some(response.bytes().await.unwrap().to_vec())
    }

    async fn etag(&self, key: &str) -> String {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        let response = self.client.head(url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "HEAD {key}: {}",
            response.status()
        );
        response.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .to_owned()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic bytes that do not compress, so a tar of them stays as large.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub(crate) fn s3_config(config: &mut cantila::config::Config, endpoint: String, bucket: String) {
    let s3 = &mut config.backups.s3;
    s3.enabled = true;
    s3.endpoint = endpoint;
    s3.bucket = bucket;
    s3.path_style = true;
    s3.access_key_id = ACCESS_KEY.to_owned();
    s3.secret_access_key = Some(SECRET_KEY.to_owned());
    // The smallest part S3 allows, so a 12 MiB volume goes up in three parts.
    s3.part_size_mb = 5;
}

/// A project with a volume holding `files` (name, bytes); returns the project id and the
/// Docker volume's name.
pub(crate) async fn project_with_volume(
    daemon: &TestDaemon,
    name: &str,
    volume: &str,
    files: &[(&str, &[u8])],
) -> (String, String) {
    let project = daemon.create_project(name).await;
    let id = project["id"].as_str().unwrap().to_owned();
    let created = daemon
        .post(
            &format!("/v1/projects/{id}/volumes"),
            &daemon.admin_token,
            json!({ "name": volume, "mountPath": "/srv/files" }),
        )
        .await
        .expect(201)
        .body;
    let docker_volume = created["dockerVolume"].as_str().unwrap().to_owned();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, *bytes).unwrap();
    }
    let tar = Bytes::from(tar.into_inner().unwrap());
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let helper = helper_on(&engine, &docker_volume).await;
    engine
        .upload_tar(
            &helper,
            "/volume",
            futures_util::stream::once(async move { tar }),
        )
        .await
        .unwrap();
    engine
        .stop_and_remove(&helper, Duration::from_secs(1))
        .await
        .unwrap();
    (id, docker_volume)
}

async fn helper_on(engine: &cantila::runtime::docker::Engine, volume: &str) -> String {
    engine
        .create_helper(
            &format!(
                "cantila-s3-test-{}",
                cantila::ids::random_base62(8).to_ascii_lowercase()
            ),
            "busybox:latest",
            &[cantila::runtime::VolumeMount {
                volume: volume.to_owned(),
                target: "/volume".to_owned(),
            }],
            Default::default(),
            None,
        )
        .await
        .unwrap()
}

/// The bytes of `path` in the volume, read through the engine.
async fn volume_file(volume: &str, path: &str) -> Vec<u8> {
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let helper = helper_on(&engine, volume).await;
    let mut tar = Vec::new();
    let mut stream = Box::pin(engine.download_tar(&helper, &format!("/volume/{path}")));
    while let Some(chunk) = stream.next().await {
        tar.extend_from_slice(&chunk.unwrap());
    }
    engine
        .stop_and_remove(&helper, Duration::from_secs(1))
        .await
        .unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).unwrap();
    bytes
}

/// Polls a completed backup until its copy leaves `pending` (and, with `wanted`, reaches it).
pub(crate) async fn wait_remote(daemon: &TestDaemon, id: &str, wanted: &str) -> Value {
    let mut backup = Value::Null;
    for _ in 0..300 {
        backup = daemon
            .get(&format!("/v1/backups/{id}"), &daemon.admin_token)
            .await
            .expect(200)
            .body;
        if backup["remote"]["status"] == wanted {
            return backup;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the copy of backup {id} never became {wanted}: {backup}");
}

pub(crate) async fn audit_actions(daemon: &TestDaemon, target: &str) -> Vec<String> {
    let audit = daemon
        .get("/v1/audit?limit=200", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == target)
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) async fn backups_of(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
    let started = daemon
        .post(
            &format!("/v1/projects/{project_id}/backups"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    let mut done = Vec::new();
    for backup in started["backups"].as_array().unwrap() {
        let finished = wait_backup(daemon, backup["id"].as_str().unwrap()).await;
        assert_eq!(finished["status"], "completed", "{finished}");
        done.push(finished);
    }
    done
}

#[tokio::test]
async fn backups_are_uploaded_verified_byte_equal_and_fetched_back_for_a_restore() {
    let bucket = TestBucket::create().await;
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, s3_endpoint(), bucket.name());
    })
    .await;
    let big = noise(12 * 1024 * 1024 + 12_345, 7);
    let (id, volume) = project_with_volume(
        &daemon,
        "s3-data",
        "files",
        &[("blob", &big), ("note.txt", b"hello")],
    )
    .await;
    let small_project =
        project_with_volume(&daemon, "s3-small", "notes", &[("a.txt", b"tiny")]).await;

    let mut backups = backups_of(&daemon, &id).await;
    backups.extend(backups_of(&daemon, &small_project.0).await);
    for (backup, parts) in backups.iter().zip(["-3", ""]) {
        let backup_id = backup["id"].as_str().unwrap();
        let project_id = backup["projectId"].as_str().unwrap();
        let uploaded = wait_remote(&daemon, backup_id, "uploaded").await;
        let key = format!("cantila/{project_id}/{backup_id}.tar");
        assert_eq!(uploaded["remote"]["key"], key.as_str(), "{uploaded}");
        assert_eq!(uploaded["remote"]["attempts"], 1, "{uploaded}");
        assert!(uploaded["remote"]["uploadedAt"].is_string(), "{uploaded}");
        assert!(uploaded["remote"]["error"].is_null(), "{uploaded}");
        assert_eq!(uploaded["status"], "completed");
        // The object holds the same bytes as the backup: read back with our own client.
        let object = bucket.get(&key).await.expect("the object is in the bucket");
        assert_eq!(object.len() as i64, uploaded["sizeBytes"].as_i64().unwrap());
        assert_eq!(sha256_hex(&object), uploaded["sha256"].as_str().unwrap());
        // The big volume went up in parts of 5 MiB, the small one in one PUT.
        let etag = bucket.etag(&key).await;
        if parts.is_empty() {
            assert!(!etag.contains('-'), "{etag}");
        } else {
            assert!(etag.ends_with(parts), "{etag}");
        }
        assert!(audit_actions(&daemon, backup_id)
            .await
            .contains(&"backup.upload".to_owned()));
    }
    // The secret never shows in an answer.
    let listed = daemon
        .get(&format!("/v1/projects/{id}/backups"), &daemon.admin_token)
        .await
        .expect(200);
    assert!(!listed.text.contains(SECRET_KEY));
    assert!(listed.body["backups"][0]["remote"]["status"] == "uploaded");

    // The local file is lost: a restore fetches the copy, checks it, and restores from it.
    let backup_id = backups[0]["id"].as_str().unwrap();
    let local = daemon
        .data_dir()
        .join("backups")
        .join(&id)
        .join(format!("{backup_id}.tar"));
    std::fs::remove_file(&local).unwrap();
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let helper = helper_on(&engine, &volume).await;
    engine
        .upload_tar(
            &helper,
            "/volume",
            futures_util::stream::once(async {
                let mut tar = tar::Builder::new(Vec::new());
                let mut header = tar::Header::new_gnu();
                header.set_size(7);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, "blob", &b"changed"[..])
                    .unwrap();
                Bytes::from(tar.into_inner().unwrap())
            }),
        )
        .await
        .unwrap();
    engine
        .stop_and_remove(&helper, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(volume_file(&volume, "blob").await, b"changed");
    let restored = daemon
        .post(
            &format!("/v1/backups/{backup_id}/restore"),
            &daemon.admin_token,
            json!({ "confirm": "s3-data" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(restored["restored"]["id"], backup_id);
    assert_eq!(
        sha256_hex(&std::fs::read(&local).unwrap()),
        backups[0]["sha256"].as_str().unwrap()
    );
    assert_eq!(
        sha256_hex(&volume_file(&volume, "blob").await),
        sha256_hex(&big)
    );
    assert_eq!(volume_file(&volume, "note.txt").await, b"hello");
    // The safety backup taken before the restore is copied too.
    let safety = restored["safetyBackup"]["id"].as_str().unwrap();
    wait_remote(&daemon, safety, "uploaded").await;

    daemon.stop().await;
    for volume in [volume, small_project.1] {
        let _ = engine.remove_volume(&volume).await;
    }
}

#[tokio::test]
async fn a_failed_upload_keeps_the_backup_restorable_shows_why_and_is_retried_until_it_succeeds() {
    let bucket = TestBucket::create().await;
    // A port nothing listens on: the endpoint is unreachable.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = format!("http://127.0.0.1:{closed}");
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, unreachable.clone(), bucket.name());
        config.backups.s3.retry_interval_secs = 1;
    })
    .await;
    let (id, volume) =
        project_with_volume(&daemon, "s3-down", "files", &[("data.txt", b"keep me")]).await;
    let backup = backups_of(&daemon, &id).await.remove(0);
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let failed = wait_remote(&daemon, &backup_id, "failed").await;
    assert_eq!(
        failed["status"], "completed",
        "the local backup stays completed: {failed}"
    );
    let reason = failed["remote"]["error"].as_str().unwrap();
    assert!(
        reason.contains(&format!("cannot reach the S3 endpoint {unreachable}")),
        "{reason}"
    );
    assert!(
        !reason.contains("X-Amz-Signature") && !reason.contains(ACCESS_KEY),
        "{reason}"
    );
    // Retried on the timer; the audit log has the failure once, not once per retry.
    let mut retried = failed.clone();
    for _ in 0..100 {
        if retried["remote"]["attempts"].as_u64().unwrap() >= 3 {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        retried = daemon
            .get(&format!("/v1/backups/{backup_id}"), &daemon.admin_token)
            .await
            .expect(200)
            .body;
    }
    assert!(
        retried["remote"]["attempts"].as_u64().unwrap() >= 3,
        "{retried}"
    );
    let actions = audit_actions(&daemon, &backup_id).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "backup.upload.failed")
            .count(),
        1,
        "{actions:?}"
    );
    // The local backup downloads and restores as ever.
    let download = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/backups/{backup_id}/download"),
        )
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(
        sha256_hex(&download.bytes().await.unwrap()),
        backup["sha256"].as_str().unwrap()
    );
    daemon
        .post(
            &format!("/v1/backups/{backup_id}/restore"),
            &daemon.admin_token,
            json!({ "confirm": "s3-down" }),
        )
        .await
        .expect(200);
    assert_eq!(volume_file(&volume, "data.txt").await, b"keep me");

    // The server answers, but the bucket does not exist: its own reason is shown.
    let (dir, mut config) = daemon.stop().await;
    config.backups.s3.endpoint = s3_endpoint();
    config.backups.s3.bucket = format!("{}-missing", bucket.name());
    let daemon = TestDaemon::start_in(dir, config).await;
    let mut missing = Value::Null;
    for _ in 0..100 {
        missing = daemon
            .get(&format!("/v1/backups/{backup_id}"), &daemon.admin_token)
            .await
            .expect(200)
            .body;
        if missing["remote"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("NoSuchBucket"))
        {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(missing["remote"]["status"], "failed", "{missing}");
    assert!(
        missing["remote"]["error"].as_str().unwrap().contains("404"),
        "{missing}"
    );

    // Set right, the retry at start uploads it, verified and byte-equal.
    let (dir, mut config) = daemon.stop().await;
    config.backups.s3.bucket = bucket.name();
    let daemon = TestDaemon::start_in(dir, config).await;
    let uploaded = wait_remote(&daemon, &backup_id, "uploaded").await;
    assert!(uploaded["remote"]["error"].is_null(), "{uploaded}");
    let key = uploaded["remote"]["key"].as_str().unwrap();
    let object = bucket.get(key).await.expect("the object is in the bucket");
    assert_eq!(sha256_hex(&object), backup["sha256"].as_str().unwrap());
    let actions = audit_actions(&daemon, &backup_id).await;
    assert!(actions.contains(&"backup.upload".to_owned()), "{actions:?}");

    remove_installation_volumes(&daemon).await;
    daemon.stop().await;
}
