//! Scheduled jobs on the real engine and the real clock: a job every minute fires twice in a
//! row while a `forbid` job whose run outlasts the minute skips the overlap; a firing missed
//! while the daemon was down runs once at the next start and the older one is recorded
//! skipped; run-now, the CLI, the 422s that name what is accepted, another account's jobs
//! (404); and `cantila.toml` jobs shown in the plan and applied by production releases only.
//!
//! The schedules are real cron minutes (`* * * * *`), the finest grain a schedule has, so
//! the firing tests wait for minute boundaries of the wall clock: there is no test clock
//! and no shortened interval, so what is tested is what runs in production.

use std::time::Duration;

use cantila::names::Scope;
use reqwest::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::{
    deploys::{busybox_app, Repo},
    support::{wait_for, TestDaemon},
};

/// A minute's turn plus a deploy-loaded machine's slack.
const MINUTE_AND_SLACK: Duration = Duration::from_secs(150);

fn parse_time(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| panic!("not a time: {text}"))
}

/// A deployed busybox project (optionally with more files, such as a `cantila.toml`).
async fn deployed(daemon: &TestDaemon, name: &str, extra: &[(&str, &str)]) -> (String, Repo) {
    let mut files: Vec<(&str, String)> = busybox_app("jobs\n");
    files.extend(extra.iter().map(|(path, text)| (*path, (*text).to_owned())));
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project(name, &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    (project_id, repo)
}

async fn create_job(daemon: &TestDaemon, project_id: &str, body: Value) -> Value {
    daemon
        .post(
            &format!("/v1/projects/{project_id}/jobs"),
            &daemon.admin_token,
            body,
        )
        .await
        .expect(201)
        .body
}

async fn job(daemon: &TestDaemon, project_id: &str, name: &str) -> Value {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/jobs/{name}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body
}

/// The runs a job started, oldest first.
async fn runs_of(daemon: &TestDaemon, project_id: &str, job_id: &str) -> Vec<Value> {
    let list = daemon
        .get(
            &format!("/v1/projects/{project_id}/runs?limit=100"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let mut runs: Vec<Value> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["jobId"] == job_id)
        .cloned()
        .collect();
    runs.reverse();
    runs
}

/// Waits until the job has started `count` runs, and returns them.
async fn wait_runs(
    daemon: &TestDaemon,
    project_id: &str,
    job_id: &str,
    count: usize,
) -> Vec<Value> {
    wait_for(
        MINUTE_AND_SLACK,
        &format!("run {count} of job {job_id}"),
        || async {
            let runs = runs_of(daemon, project_id, job_id).await;
            (runs.len() >= count).then_some(runs)
        },
    )
    .await
}

/// The job's `lastFiredAt` once it is recorded and later than `after` (the run appears a
/// moment before its firing is recorded on the job).
async fn fired_after(
    daemon: &TestDaemon,
    project_id: &str,
    name: &str,
    after: Option<OffsetDateTime>,
) -> OffsetDateTime {
    wait_for(
        MINUTE_AND_SLACK,
        &format!("job {name}'s firing recorded"),
        || async {
            let fired = job(daemon, project_id, name).await["lastFiredAt"]
                .as_str()
                .map(parse_time)?;
            after.is_none_or(|after| fired > after).then_some(fired)
        },
    )
    .await
}

#[tokio::test]
async fn a_job_every_minute_fires_twice_in_a_row_and_forbid_skips_an_overlap() {
    let daemon = TestDaemon::start().await;
    let (project_id, _repo) = deployed(&daemon, "ticker", &[]).await;
    let tick = create_job(
        &daemon,
        &project_id,
        json!({ "name": "tick", "schedule": "* * * * *", "command": ["sh", "-c", "echo tick"], "timeoutSecs": 60 }),
    )
    .await;
    // Its run lasts longer than the minute to the next firing.
    let slow = create_job(
        &daemon,
        &project_id,
        json!({ "name": "slow", "schedule": "every 1m", "command": ["sleep", "100"], "timeoutSecs": 150, "concurrency": "forbid" }),
    )
    .await;
    assert_eq!(tick["source"], "api");
    assert_eq!(tick["lastRun"], Value::Null);
    let tick_id = tick["id"].as_str().unwrap();
    let slow_id = slow["id"].as_str().unwrap();

    // Two firings of `tick`, one after the other, each a succeeded run with its output.
    let first = wait_runs(&daemon, &project_id, tick_id, 1).await.remove(0);
    let first_fired = fired_after(&daemon, &project_id, "tick", None).await;
    let runs = wait_runs(&daemon, &project_id, tick_id, 2).await;
    let second = &runs[1];
    assert_ne!(first["id"], second["id"]);
    for run in [&first, second] {
        assert_eq!(run["trigger"], "job", "{run}");
        assert_eq!(run["startedBy"], "scheduler", "{run}");
        let followed = crate::runs::follow(&daemon, run["id"].as_str().unwrap(), None).await;
        assert_eq!(followed.ended["status"], "succeeded", "{}", followed.ended);
        let lines: Vec<&str> = followed
            .lines
            .iter()
            .map(|(_, _, line)| line.as_str())
            .collect();
        assert_eq!(lines, ["tick"]);
    }
    // In a row: the second run is the firing one minute after the first, none skipped.
    let second_fired = fired_after(&daemon, &project_id, "tick", Some(first_fired)).await;
    assert_eq!(second_fired - first_fired, time::Duration::minutes(1));
    let ticked = job(&daemon, &project_id, "tick").await;
    assert_eq!(ticked["skippedCount"], 0, "{ticked}");
    assert_eq!(ticked["lastRun"]["id"], second["id"], "{ticked}");

    // `slow`'s first run was still running at the next minute: that firing was skipped,
    // naming the run, and no second run started beside it.
    let slow_first = wait_runs(&daemon, &project_id, slow_id, 1).await.remove(0);
    let skipped = wait_for(
        MINUTE_AND_SLACK,
        "slow's overlapping firing skipped",
        || async {
            let slow = job(&daemon, &project_id, "slow").await;
            (slow["skippedCount"].as_u64() >= Some(1)).then_some(slow)
        },
    )
    .await;
    let reason = skipped["lastSkipped"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(slow_first["id"].as_str().unwrap()) && reason.contains("forbid"),
        "{skipped}"
    );
    let overlapping = runs_of(&daemon, &project_id, slow_id).await;
    assert_eq!(overlapping.len(), 1, "{overlapping:?}");
    assert_eq!(overlapping[0]["status"], "running", "{overlapping:?}");
    // The skip is in the audit log too.
    let audit = daemon
        .get("/v1/audit", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert!(
        audit.to_string().contains("job.skip"),
        "no job.skip in the audit log: {audit}"
    );
    crate::deploys::cleanup(&project_id).await;
}

#[tokio::test]
async fn a_firing_missed_while_the_daemon_was_down_runs_once_at_start() {
    let daemon = TestDaemon::start().await;
    let (project_id, _repo) = deployed(&daemon, "catchup", &[]).await;
    // Away from a minute's end, so the daemon is stopped before the job's first firing.
    wait_for(MINUTE_AND_SLACK, "the first 40 s of a minute", || async {
        (OffsetDateTime::now_utc().second() < 40).then_some(())
    })
    .await;
    let created = create_job(
        &daemon,
        &project_id,
        json!({ "name": "catchup", "schedule": "* * * * *", "command": ["echo", "caught up"] }),
    )
    .await;
    let job_id = created["id"].as_str().unwrap().to_owned();
    let first_due = parse_time(created["nextRunAt"].as_str().unwrap());
    let (dir, config) = daemon.stop().await;
    // Down across two firings: the first becomes more than one interval late once the
    // second has passed. This waits for the wall clock itself, the one thing to wait on.
    let second_due = first_due + time::Duration::minutes(1);
    let until = second_due - OffsetDateTime::now_utc() + time::Duration::seconds(2);
    tokio::time::sleep(Duration::try_from(until).unwrap_or_default()).await;
    let daemon = TestDaemon::start_in(dir, config).await;

    let runs = wait_runs(&daemon, &project_id, &job_id, 1).await;
    let ran = crate::runs::wait_run(&daemon, runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(ran["status"], "succeeded", "{ran}");
    let after = job(&daemon, &project_id, "catchup").await;
    // The firing that ran is a later one than the one recorded skipped, which was the
    // first and was missed while the daemon was down.
    let skip = &after["lastSkipped"];
    assert!(
        skip["reason"]
            .as_str()
            .unwrap()
            .contains("missed while the daemon was down"),
        "{after}"
    );
    let skipped_at = parse_time(skip["scheduledAt"].as_str().unwrap());
    assert!(after["skippedCount"].as_u64() >= Some(1), "{after}");
    let fired = parse_time(after["lastFiredAt"].as_str().unwrap());
    assert!(
        first_due <= skipped_at && skipped_at < fired && fired >= second_due,
        "{after}"
    );
    // One run for the firings it missed, started after the restart.
    assert!(parse_time(runs[0]["createdAt"].as_str().unwrap()) >= second_due);
    assert_eq!(runs_of(&daemon, &project_id, &job_id).await.len(), 1);
    crate::deploys::cleanup(&project_id).await;
}

#[tokio::test]
async fn jobs_are_checked_run_now_works_and_another_account_sees_nothing() {
    let daemon = TestDaemon::start().await;
    let (project_id, _repo) = deployed(&daemon, "nightly", &[]).await;
    let jobs = format!("/v1/projects/{project_id}/jobs");
    let token = daemon.admin_token.clone();

    // Bad input: a 422 naming the field and what it accepts.
    let base = json!({ "name": "digest", "schedule": "0 3 * * *", "command": ["true"] });
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    for (body, expected) in [
        (
            with("schedule", json!("every 30s")),
            vec![
                "`schedule`",
                "every 15m",
                "daily at HH:MM",
                "hourly",
                "0 3 * * *",
            ],
        ),
        (
            with("schedule", json!("at noon")),
            vec!["`schedule`", "every 15m", "daily at HH:MM"],
        ),
        (
            with("schedule", json!("0 0 30 2 *")),
            vec!["`schedule`", "never fires"],
        ),
        (with("command", json!([])), vec!["`command`", "empty"]),
        (
            with("timeZone", json!("Mars/Olympus")),
            vec!["`timeZone`", "IANA"],
        ),
        (
            with("timeoutSecs", json!(0)),
            vec!["`timeoutSecs`", "86400"],
        ),
        (with("size", json!("huge")), vec!["`size`", "nano"]),
        (with("concurrency", json!("sometimes")), vec!["concurrency"]),
        (with("name", json!("Digest!")), vec!["`name`"]),
    ] {
        let res = daemon.post(&jobs, &token, body.clone()).await;
        assert_eq!(res.status, 422, "{body}: {}", res.text);
        for part in expected {
            assert!(res.text.contains(part), "{body}: {} lacks {part}", res.text);
        }
    }

    // A job with a time zone; its next run is 03:00 in that zone.
    let created = daemon
        .post(
            &jobs,
            &token,
            json!({ "name": "digest", "schedule": "daily at 03:00", "timeZone": "Asia/Tokyo", "command": ["sh", "-c", "echo digest; exit 4"], "timeoutSecs": 600, "size": "nano" }),
        )
        .await
        .expect(201)
        .body;
    let next = parse_time(created["nextRunAt"].as_str().unwrap());
    // 03:00 in Tokyo (UTC+9, no DST) is 18:00 UTC.
    assert_eq!((next.hour(), next.minute()), (18, 0), "{created}");
    assert_eq!(created["concurrency"], "forbid");
    assert_eq!(created["timeoutSecs"], 600);
    let taken = daemon.post(&jobs, &token, created_body()).await;
    assert_eq!(taken.status, 409, "{}", taken.text);

    // Run now: a run of the job, with its exit code.
    let started = daemon
        .post(&format!("{jobs}/digest/run"), &token, json!({}))
        .await
        .expect(201)
        .body;
    assert_eq!(started["trigger"], "job", "{started}");
    assert_eq!(started["jobId"], created["id"], "{started}");
    assert_eq!(started["size"], "nano", "{started}");
    let ended = crate::runs::wait_run(&daemon, started["runId"].as_str().unwrap()).await;
    assert_eq!(
        (ended["status"].clone(), ended["exitCode"].clone()),
        (json!("failed"), json!(4))
    );
    let shown = job(&daemon, &project_id, "digest").await;
    assert_eq!(shown["lastRun"]["id"], started["runId"], "{shown}");

    // PATCH: disabled, no next run; the schedule changes; null zone is UTC again.
    let patched = daemon
        .call(
            Method::PATCH,
            &format!("{jobs}/digest"),
            Some(&token),
            Some(json!({ "enabled": false })),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["nextRunAt"], Value::Null, "{patched}");
    let patched = daemon
        .call(
            Method::PATCH,
            &format!("{jobs}/digest"),
            Some(&token),
            Some(json!({ "enabled": true, "schedule": "every 2h", "timeZone": null })),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["schedule"], "every 2h");
    assert_eq!(patched["timeZone"], Value::Null);
    let bad_patch = daemon
        .call(
            Method::PATCH,
            &format!("{jobs}/digest"),
            Some(&token),
            Some(json!({ "command": [] })),
        )
        .await;
    assert_eq!(bad_patch.status, 422, "{}", bad_patch.text);

    // Scopes: a read token reads, and cannot write.
    let reader = daemon.token("read").await;
    daemon.get(&jobs, &reader).await.expect(200);
    let refused = daemon
        .post(&format!("{jobs}/digest/run"), &reader, json!({}))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);

    // Another account: every job endpoint answers as for a project that does not exist.
    let intruder = daemon.other_account_token("mallory", Scope::Admin);
    for (method, path, body) in [
        (Method::GET, jobs.clone(), None),
        (Method::POST, jobs.clone(), Some(base.clone())),
        (Method::GET, format!("{jobs}/digest"), None),
        (
            Method::PATCH,
            format!("{jobs}/digest"),
            Some(json!({ "enabled": false })),
        ),
        (Method::DELETE, format!("{jobs}/digest"), None),
        (Method::POST, format!("{jobs}/digest/run"), Some(json!({}))),
    ] {
        let res = daemon
            .call(method.clone(), &path, Some(&intruder), body)
            .await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.text);
    }
    assert_eq!(job(&daemon, &project_id, "digest").await["enabled"], true);

    // The CLI: add, list, run-now, remove.
    let url = format!("http://{}", daemon.api);
    let cli = |list: &[&str]| {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let env = vec![
            ("CANTILA_URL", url.clone()),
            ("CANTILA_TOKEN", token.clone()),
        ];
        async move {
            let out = crate::cli::cantila(args.clone(), env).await;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), stdout, stderr)
        }
    };
    let (ok, out, err) = cli(&[
        "jobs",
        "add",
        "nightly",
        "sweep",
        "--schedule",
        "every 15m",
        "--concurrency",
        "replace",
        "--",
        "echo",
        "swept",
    ])
    .await;
    assert!(ok && out.contains("sweep"), "{out} {err}");
    let (ok, out, err) = cli(&[
        "jobs",
        "add",
        "nightly",
        "bad",
        "--schedule",
        "weekly",
        "--",
        "true",
    ])
    .await;
    assert!(!ok && err.contains("every 15m"), "{out} {err}");
    let (ok, out, err) = cli(&["jobs", "list", "nightly"]).await;
    assert!(
        ok && out.contains("sweep") && out.contains("every 15m") && out.contains("digest"),
        "{out} {err}"
    );
    let (ok, out, err) = cli(&["jobs", "run-now", "nightly", "sweep"]).await;
    assert!(ok && out.contains("run_"), "{out} {err}");
    let run_id = out.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(
        crate::runs::wait_run(&daemon, &run_id).await["status"],
        "succeeded"
    );
    // `--follow` prints the run's output and exits with the command's exit code.
    let (ok, out, err) = cli(&["jobs", "run-now", "--follow", "nightly", "sweep"]).await;
    assert!(ok && out.contains("swept"), "{out} {err}");
    let (ok, out, err) = cli(&[
        "jobs",
        "add",
        "nightly",
        "broken",
        "--schedule",
        "daily at 04:00",
        "--disabled",
        "--",
        "sh",
        "-c",
        "echo broke; exit 6",
    ])
    .await;
    assert!(ok, "{out} {err}");
    let failed = crate::cli::cantila(
        ["jobs", "run-now", "-f", "nightly", "broken"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        vec![
            ("CANTILA_URL", url.clone()),
            ("CANTILA_TOKEN", token.clone()),
        ],
    )
    .await;
    let out = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(6), "{out}");
    assert!(out.contains("broke"), "{out}");
    let (ok, out, err) = cli(&["jobs", "remove", "nightly", "broken"]).await;
    assert!(ok, "{out} {err}");
    let (ok, out, err) = cli(&["jobs", "remove", "nightly", "sweep"]).await;
    assert!(ok, "{out} {err}");
    daemon
        .get(&format!("{jobs}/sweep"), &token)
        .await
        .expect(404);
    crate::deploys::cleanup(&project_id).await;
}

fn created_body() -> Value {
    json!({ "name": "digest", "schedule": "hourly", "command": ["true"] })
}

const JOBS_TOML: &str = r#"
[[jobs]]
name = "report"
schedule = "daily at 06:30"
time_zone = "Europe/Paris"
command = ["echo", "report"]
timeout_secs = 300

[[jobs]]
name = "digest"
schedule = "hourly"
command = ["echo", "from the file"]
"#;

#[tokio::test]
async fn cantila_toml_jobs_are_planned_applied_by_releases_and_left_alone_by_previews() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let repo = {
        let mut files: Vec<(&str, String)> = busybox_app("jobs\n");
        files.push(("cantila.toml", JOBS_TOML.to_owned()));
        let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        Repo::new(&borrowed)
    };
    let (project_id, _) = daemon.connected_project("reports", &repo).await;
    let jobs = format!("/v1/projects/{project_id}/jobs");
    // An API job holds one of the file's names: it stays the API's.
    daemon
        .post(&jobs, &token, json!({ "name": "digest", "schedule": "every 2h", "command": ["echo", "from the api"] }))
        .await
        .expect(201);

    // The plan shows the file's jobs, and warns about the name it cannot take.
    let plan = daemon
        .post(
            "/v1/deploy/plan",
            &token,
            json!({ "projectId": project_id }),
        )
        .await
        .expect(200)
        .body;
    let planned: Vec<&str> = plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["report", "digest"], "{plan}");
    assert_eq!(plan["jobs"][0]["timeZone"], "Europe/Paris", "{plan}");
    assert_eq!(plan["jobs"][0]["timeoutSecs"], 300, "{plan}");
    assert!(
        plan["warnings"].to_string().contains("job `digest`"),
        "{}",
        plan["warnings"]
    );

    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let listed = daemon.get(&jobs, &token).await.expect(200).body;
    let by_name = |list: &Value, name: &str| {
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["name"] == name)
            .cloned()
    };
    let report = by_name(&listed, "report").expect("the file's job applied");
    assert_eq!(report["source"], "cantila.toml", "{report}");
    assert_eq!(report["schedule"], "daily at 06:30", "{report}");
    let digest = by_name(&listed, "digest").unwrap();
    assert_eq!(digest["source"], "api", "{digest}");
    assert_eq!(
        digest["command"],
        json!(["echo", "from the api"]),
        "{digest}"
    );
    // The file's jobs are the file's: the API does not change or delete them.
    let refused = daemon
        .call(
            Method::DELETE,
            &format!("{jobs}/report"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("cantila.toml"), "{}", refused.text);
    // Run-now works on it.
    let started = daemon
        .post(&format!("{jobs}/report/run"), &token, json!({}))
        .await
        .expect(201)
        .body;
    let followed = crate::runs::follow(&daemon, started["runId"].as_str().unwrap(), None).await;
    assert_eq!(followed.ended["status"], "succeeded", "{}", followed.ended);

    // A new file: `report` gone, `weekly` new. A preview of it runs no jobs and changes
    // none; the production release applies it.
    repo.commit(
        &[(
            "cantila.toml",
            "[[jobs]]\nname = \"weekly\"\nschedule = \"0 4 * * 1\"\ncommand = [\"echo\", \"weekly\"]\n",
        )],
        "jobs: weekly instead of report",
    );
    let preview = daemon
        .post(
            &format!("/v1/projects/{project_id}/previews"),
            &token,
            json!({ "branch": "main" }),
        )
        .await
        .expect(201)
        .body;
    let preview_deploy = daemon
        .wait_deploy(preview["deployId"].as_str().unwrap())
        .await;
    assert_eq!(preview_deploy["status"], "running", "{preview_deploy}");
    let after_preview = daemon.get(&jobs, &token).await.expect(200).body;
    assert!(
        by_name(&after_preview, "report").is_some(),
        "{after_preview}"
    );
    assert!(
        by_name(&after_preview, "weekly").is_none(),
        "{after_preview}"
    );

    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let after = daemon.get(&jobs, &token).await.expect(200).body;
    assert!(by_name(&after, "report").is_none(), "{after}");
    let weekly = by_name(&after, "weekly").expect("the new file's job applied");
    assert_eq!(weekly["source"], "cantila.toml");
    assert_eq!(
        by_name(&after, "digest").unwrap()["source"],
        "api",
        "{after}"
    );
    // The release said so in its log.
    let logs = crate::deploys::events_text(&daemon, deploy["id"].as_str().unwrap()).await;
    assert!(logs.contains("cantila.toml jobs created: weekly"), "{logs}");
    assert!(logs.contains("removed: report"), "{logs}");

    // A file whose job is wrong fails the deploy at planning, naming the job and key.
    repo.commit(
        &[(
            "cantila.toml",
            "[[jobs]]\nname = \"weekly\"\nschedule = \"every 5s\"\ncommand = [\"true\"]\n",
        )],
        "a bad schedule",
    );
    let failed = daemon.deploy(&project_id, None).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed.to_string().contains("jobs[1].schedule"), "{failed}");
    crate::deploys::cleanup(&project_id).await;
}
