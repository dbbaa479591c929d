//! A full disk under the data directory: the daemon runs on a small tmpfs, the disk is
//! filled, and writes must answer 507 `insufficient_storage` (never a 500 or a panic)
//! while reads keep working; once space returns, writes work again and SQLite's
//! integrity check passes. Mounting needs root, which CI has: without it the test fails.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;

use crate::{deploys::Repo, support::TestDaemon};

/// A tmpfs of a fixed size, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "cannot mount a {size} tmpfs at {}: {} (this test needs root, as CI runs it)",
            dir.path().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file the stopped daemon's runtime still holds cannot keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `path` until the disk refuses, and checks that it refused for space.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("the disk accepted nothing but reported no error"),
            Ok(n) => written += n as u64,
            Err(err) => {
                assert!(cantila::error::is_storage_full(&err), "filling: {err}");
                return written;
            }
        }
        if let Err(err) = file.sync_data() {
            assert!(cantila::error::is_storage_full(&err), "filling: {err}");
            return written;
        }
    }
}

#[tokio::test]
async fn a_full_data_disk_refuses_writes_with_507_and_recovers() {
    let tmpfs = Tmpfs::mount("16m");
    let data_dir: PathBuf = tmpfs.path().join("data");
    let daemon = TestDaemon::start_with(|config| config.data_dir = data_dir.clone()).await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("before-full").await;
    let id = project["id"].as_str().unwrap().to_owned();
    daemon
        .post(
            &format!("/v1/projects/{id}/env"),
            &token,
            json!({"vars": {"KEPT": "from before the disk filled"}}),
        )
        .await
        .expect(200);
    // A repository outside the full disk, to connect while it is full.
    let repo = Repo::busybox("hello");

    let filler = tmpfs.path().join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);

    // Eight env values of 30 KiB a request grow the write-ahead log by ~240 KiB, so a
    // write that needs new space comes within a few tries; every answer before it must
    // be a success.
    let big = "x".repeat(30 * 1024);
    let mut refused = None;
    for n in 0..200 {
        let vars: serde_json::Map<String, serde_json::Value> = (0..8)
            .map(|k| (format!("BIG_{n}_{k}"), json!(big)))
            .collect();
        let res = daemon
            .post(
                &format!("/v1/projects/{id}/env"),
                &token,
                json!({ "vars": vars }),
            )
            .await;
        match res.status {
            200 => continue,
            507 => {
                refused = Some(res);
                break;
            }
            other => panic!("env set on a full disk answered {other}: {}", res.text),
        }
    }
    let refused = refused.expect("a full disk never refused a write");
    assert_eq!(
        refused.error_code(),
        "insufficient_storage",
        "{}",
        refused.text
    );
    assert!(refused.error_message().contains("full"), "{}", refused.text);

    // Other writes are refused the same way: a row in the store, a git mirror on disk.
    let res = daemon
        .post("/v1/projects", &token, json!({"name": "while-full"}))
        .await
        .expect(507);
    assert_eq!(res.error_code(), "insufficient_storage");
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/git"),
            &token,
            json!({"repo": repo.path().to_str().unwrap(), "branch": "main"}),
        )
        .await;
    assert_eq!(res.status, 507, "git connect on a full disk: {}", res.text);

    // Reads keep working and show only what was saved.
    let listed = daemon.get("/v1/projects", &token).await.expect(200).body;
    let names: Vec<&str> = listed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before-full"]);
    let env = daemon
        .get(&format!("/v1/projects/{id}/env"), &token)
        .await
        .expect(200);
    assert!(env.text.contains("KEPT"), "{}", env.text);

    // Space returns: writes work again, and the database is intact.
    std::fs::remove_file(&filler).unwrap();
    daemon
        .post("/v1/projects", &token, json!({"name": "after-full"}))
        .await
        .expect(201);
    daemon
        .post(
            &format!("/v1/projects/{id}/env"),
            &token,
            json!({"vars": {"AFTER": "space returned"}}),
        )
        .await
        .expect(200);
    daemon
        .post(
            &format!("/v1/projects/{id}/git"),
            &token,
            json!({"repo": repo.path().to_str().unwrap(), "branch": "main"}),
        )
        .await
        .expect(200);
    cantila::store::Store::open(daemon.data_dir())
        .expect("open the store beside the daemon")
        .integrity_check()
        .expect("PRAGMA integrity_check after a full disk");
    let env = daemon
        .get(&format!("/v1/projects/{id}/env"), &token)
        .await
        .expect(200);
    assert!(
        env.text.contains("KEPT") && env.text.contains("AFTER"),
        "{}",
        env.text
    );

    // The same after a restart: nothing half-written was left behind.
    let daemon = daemon.restart().await;
    let listed = daemon
        .get("/v1/projects", &daemon.admin_token)
        .await
        .expect(200);
    assert!(listed.text.contains("after-full"), "{}", listed.text);
    drop(daemon);
}
