//! Scheduled backups on the real daemon, engine and S3-compatible server (moto, as in
//! `backup_s3.rs`): a project's schedule fires on its own, the backup completes and its
//! copy is uploaded; at the next run, retention (one day kept) deletes the older scheduled
//! backup's file, its record and its S3 copy, and leaves a manual backup alone. The
//! schedule fires once a minute (its finest grain), so this test waits for two minutes'
//! turns; nothing in it sleeps for a fixed time.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    backup_s3::{
        audit_actions, backups_of, project_with_volume, s3_config, s3_endpoint, TestBucket,
    },
    data::wait_backup,
    support::{wait_for, TestDaemon},
};

/// The project's backups, newest first.
async fn listed(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/backups"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["backups"]
        .as_array()
        .unwrap()
        .clone()
}

/// The files under `dir` (recursively) whose name starts with `backup_id`.
fn files_of(dir: &Path, backup_id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_of(&path, backup_id));
        } else if entry.file_name().to_string_lossy().starts_with(backup_id) {
            found.push(path);
        }
    }
    found
}

/// Waits for a completed scheduled backup other than `except`, and returns it once its
/// copy is uploaded.
async fn next_scheduled(daemon: &TestDaemon, project_id: &str, except: Option<&str>) -> Value {
    // A minute's turn plus the scheduler's 20 s tick, with room for a busy machine.
    let backup = wait_for(Duration::from_secs(180), "a scheduled backup", || async {
        listed(daemon, project_id)
            .await
            .into_iter()
            .find(|b| b["trigger"] == "scheduled" && Some(b["id"].as_str().unwrap()) != except)
    })
    .await;
    let id = backup["id"].as_str().unwrap().to_owned();
    let finished = wait_backup(daemon, &id).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    crate::backup_s3::wait_remote(daemon, &id, "uploaded").await
}

#[tokio::test]
async fn a_schedule_backs_up_on_its_own_and_retention_deletes_pruned_files_and_copies() {
    let bucket = TestBucket::create().await;
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, s3_endpoint(), bucket.name());
    })
    .await;
    let (project_id, _) =
        project_with_volume(&daemon, "scheduled", "files", &[("a.txt", b"kept safe")]).await;
    let manual_id = backups_of(&daemon, &project_id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let manual = crate::backup_s3::wait_remote(&daemon, &manual_id, "uploaded").await;

    // Every minute, keeping the newest scheduled backup of one day.
    let schedule = format!("/v1/projects/{project_id}/backups/schedule");
    daemon
        .call(
            reqwest::Method::PUT,
            &schedule,
            Some(&daemon.admin_token),
            Some(json!({ "schedule": "* * * * *", "keepDaily": 1, "keepWeekly": 0 })),
        )
        .await
        .expect(200);

    let first = next_scheduled(&daemon, &project_id, None).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let first_key = first["remote"]["key"].as_str().unwrap().to_owned();
    let backups_dir = daemon.data_dir().join("backups");
    assert_eq!(files_of(&backups_dir, &first_id).len(), 1);
    assert!(bucket.get(&first_key).await.is_some(), "{first}");
    let recorded = wait_for(
        Duration::from_secs(30),
        "the run recorded on the schedule",
        || async {
            let view = daemon
                .get(&schedule, &daemon.admin_token)
                .await
                .expect(200)
                .body;
            view["lastRunAt"].is_string().then_some(view)
        },
    )
    .await;
    assert_eq!(recorded["lastStatus"], "completed", "{recorded}");
    assert!(recorded["lastError"].is_null(), "{recorded}");

    // The next run keeps only its own backup of today: the first one's file, record and
    // copy go; the manual backup stays.
    let second = next_scheduled(&daemon, &project_id, Some(&first_id)).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let remaining = wait_for(
        Duration::from_secs(60),
        "the first scheduled backup pruned",
        || async {
            let backups = listed(&daemon, &project_id).await;
            (!backups.iter().any(|b| b["id"] == first_id.as_str())).then_some(backups)
        },
    )
    .await;
    let ids: Vec<&str> = remaining
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&second_id.as_str()), "{ids:?}");
    assert!(ids.contains(&manual_id.as_str()), "{ids:?}");
    daemon
        .get(&format!("/v1/backups/{first_id}"), &daemon.admin_token)
        .await
        .expect(404);
    assert_eq!(files_of(&backups_dir, &first_id), Vec::<PathBuf>::new());
    assert!(
        bucket.get(&first_key).await.is_none(),
        "the pruned backup's copy is deleted"
    );
    assert!(audit_actions(&daemon, &first_id)
        .await
        .contains(&"backup.prune".to_owned()));
    // What retention keeps is still whole, here and in the bucket.
    assert_eq!(files_of(&backups_dir, &second_id).len(), 1);
    assert!(bucket
        .get(second["remote"]["key"].as_str().unwrap())
        .await
        .is_some());
    assert_eq!(files_of(&backups_dir, &manual_id).len(), 1);
    assert!(bucket
        .get(manual["remote"]["key"].as_str().unwrap())
        .await
        .is_some());
}
