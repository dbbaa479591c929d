//! The account page's "State backups" section in a real browser (headless Chromium over
//! WebDriver, see `console`) against a real daemon and a real S3-compatible server (moto,
//! `scripts/ensure-s3.sh`): the installation's own admin sees the list, backs up now and
//! follows the backup until it is completed, encrypted and its copy uploaded under the key
//! the API reports; an admin of another account, for whom the API answers 404, sees no
//! such section at all. `Browser::close` fails on any script error or CSP refusal.

use std::time::Duration;

use cantila::names::Scope;
use serde_json::Value;

use crate::{
    backup_s3::{s3_config, s3_endpoint, TestBucket},
    console::Browser,
    support::TestDaemon,
};

/// Long enough for a state backup and its upload on a loaded 2-core machine.
const DONE: Duration = Duration::from_secs(120);

async fn state_backups(daemon: &TestDaemon) -> Vec<Value> {
    let listed = daemon
        .get("/v1/admin/state-backups", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    listed["stateBackups"].as_array().cloned().unwrap()
}

#[tokio::test]
async fn console_account_page_lists_state_backups_backs_up_now_and_hides_them_from_other_accounts()
{
    let bucket = TestBucket::create().await;
    let passphrase_dir = tempfile::tempdir().unwrap();
    let passphrase_file = passphrase_dir.path().join("passphrase");
    std::fs::write(&passphrase_file, "correct horse battery staple\n").unwrap();
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, s3_endpoint(), bucket.name());
        config.state_backup.passphrase_file = Some(passphrase_file.clone());
    })
    .await;
    assert!(state_backups(&daemon).await.is_empty());

    let browser = Browser::start(&daemon).await;
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser.goto("/account").await;
    browser
        .wait_text(
            "[data-testid=state-backup-list]",
            "No state backups yet",
            Duration::from_secs(60),
        )
        .await;

    // "Back up now": the row appears and is followed until the copy is uploaded.
    browser.click("Back up now").await;
    browser
        .wait_text(
            "[data-testid=state-backups-outcome]",
            "Started sb_",
            Duration::from_secs(60),
        )
        .await;
    let listed = state_backups(&daemon).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["trigger"], "manual");
    let remote = browser
        .wait_text(
            &format!("[data-state-backup='{id}'] [data-testid=state-backup-remote]"),
            "uploaded",
            DONE,
        )
        .await;
    let row = browser
        .wait_text(&format!("[data-state-backup='{id}']"), "completed", DONE)
        .await;
    let record = state_backups(&daemon).await.remove(0);
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["remote"]["status"], "uploaded", "{record}");
    let key = record["remote"]["key"].as_str().unwrap();
    assert!(remote.contains(key), "the copy's key is shown: {remote}");
    assert!(
        bucket.get(key).await.is_some(),
        "the key shown is in the bucket"
    );
    let sha = record["sha256"].as_str().unwrap();
    assert!(row.contains(&sha[..12]), "the SHA-256 is shown: {row}");
    assert!(row.contains("encrypted"), "{row}");
    assert!(!row.contains("unencrypted"), "{row}");
    browser
        .js(
            "document.querySelector('[data-testid=state-backups]').scrollIntoView()",
            vec![],
        )
        .await;
    browser.screenshot("account-state-backups").await;
    browser.close().await;

    // Another account's admin: the API answers 404, and the page has no such section.
    let other = daemon.other_account_token("elsewhere", Scope::Admin);
    daemon
        .get("/v1/admin/state-backups", &other)
        .await
        .expect(404);
    let browser = Browser::start(&daemon).await;
    browser.sign_in(&other).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(60))
        .await;
    browser.goto("/account").await;
    // The page is drawn whole: once the audit log is there, every section is.
    browser.find("#audit-title").await;
    assert_eq!(browser.count("[data-testid=state-backups]").await, 0);
    let text = browser
        .js("return document.querySelector('main').textContent", vec![])
        .await;
    assert!(
        !text.as_str().unwrap_or_default().contains("State backups"),
        "{text}"
    );
    browser.close().await;
}
