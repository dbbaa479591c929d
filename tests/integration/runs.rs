//! One-off runs on the real engine: a run's exit code, output (stored, streamed over SSE,
//! resumed with `Last-Event-ID`), database wiring and volumes; timeouts and cancels that
//! leave no container; the checks on what a run may ask for; another account's runs; a
//! daemon that stops (gracefully, or with `kill -9`) mid-run; and `cantila run`'s exit code.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    deploys::Repo,
    support::{docker, within, TestDaemon, TestDir},
};

/// A run's SSE stream read to its end: the output events (id, stream, line) and the run
/// of the final `status` event.
pub struct Followed {
    pub lines: Vec<(i64, String, String)>,
    pub ended: Value,
}

/// Follows a run's events (after `last_event_id`) until the `status` event.
pub async fn follow(daemon: &TestDaemon, run_id: &str, last_event_id: Option<i64>) -> Followed {
    let mut request = daemon
        .request(Method::GET, &format!("/v1/runs/{run_id}/events"))
        .bearer_auth(&daemon.admin_token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    // No overall timeout on the stream itself: `within` bounds the whole read.
    let mut response = within(Duration::from_secs(30), "the events answer", request.send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut buffer = String::new();
    let mut lines = Vec::new();
    loop {
        let chunk = within(
            Duration::from_secs(180),
            "the next piece of the run's events",
            response.chunk(),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the stream ended before the run's status: {lines:?}"));
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = ("", None, String::new());
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = if rest.trim() == "status" {
                        "status"
                    } else {
                        "output"
                    };
                } else if let Some(rest) = line.strip_prefix("id:") {
                    id = rest.trim().parse::<i64>().ok();
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                }
            }
            let Ok(value) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if event == "status" {
                return Followed {
                    lines,
                    ended: value,
                };
            }
            lines.push((
                id.expect("an output event has an id"),
                value["stream"].as_str().unwrap().to_owned(),
                value["line"].as_str().unwrap().to_owned(),
            ));
        }
    }
}

/// The run once it has ended (its `status` event).
pub async fn wait_run(daemon: &TestDaemon, run_id: &str) -> Value {
    follow(daemon, run_id, None).await.ended
}

/// Starts a run; returns the created run.
async fn start(daemon: &TestDaemon, project_id: &str, body: Value) -> Value {
    daemon
        .post(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
            body,
        )
        .await
        .expect(201)
        .body
}

/// The containers (any state) labelled as the run's.
fn containers_of(run_id: &str) -> Vec<String> {
    docker(
        None,
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=cantila.run={run_id}"),
        ],
    )
    .unwrap()
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// A deployed busybox project: its id.
async fn deployed(daemon: &TestDaemon, name: &str) -> String {
    let repo = Repo::busybox("runs\n");
    let (project_id, _) = daemon.connected_project(name, &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    project_id
}

#[tokio::test]
async fn a_run_exits_with_its_code_with_the_database_and_volumes_and_its_output_kept() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::busybox("runs\n");
    let (project_id, _) = daemon.connected_project("migrations", &repo).await;
    let token = daemon.admin_token.clone();
    daemon
        .post(
            &format!("/v1/projects/{project_id}/database"),
            &token,
            json!({ "engine": "sqlite" }),
        )
        .await
        .expect(201);
    daemon
        .post(
            &format!("/v1/projects/{project_id}/volumes"),
            &token,
            json!({ "name": "files", "mountPath": "/srv/files" }),
        )
        .await
        .expect(201);
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let database_url = daemon
        .get(
            &format!("/v1/projects/{project_id}/database/credentials"),
            &token,
        )
        .await
        .expect(200)
        .body["env"]["DATABASE_URL"]
        .as_str()
        .unwrap()
        .to_owned();

    let script = "echo $DATABASE_URL; echo \"extra=$EXTRA\"; echo oops >&2; echo kept > /srv/files/note; exit 3";
    let created = start(
        &daemon,
        &project_id,
        json!({
            "command": ["sh", "-c", script],
            "env": { "EXTRA": "only-for-this-run" },
            "timeoutSecs": 120
        }),
    )
    .await;
    let run_id = created["runId"].as_str().unwrap().to_owned();
    assert_eq!(created["id"], run_id);
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["deployId"], deploy["id"]);
    assert_eq!(created["trigger"], "manual");
    assert_eq!(created["command"], json!(["sh", "-c", script]));

    let streamed = follow(&daemon, &run_id, None).await;
    // The engine keeps each stream's order; how the two interleave is its copiers' race.
    let of = |wanted: &str| -> Vec<&str> {
        streamed
            .lines
            .iter()
            .filter(|(_, stream, _)| stream == wanted)
            .map(|(_, _, line)| line.as_str())
            .collect()
    };
    assert_eq!(
        of("stdout"),
        [database_url.as_str(), "extra=only-for-this-run"]
    );
    assert_eq!(of("stderr"), ["oops"]);
    let ids: Vec<i64> = streamed.lines.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(streamed.ended["status"], "failed", "{}", streamed.ended);
    assert_eq!(streamed.ended["exitCode"], 3);

    // Kept with the run, and replayed after the last id a client saw.
    let stored = daemon
        .get(&format!("/v1/runs/{run_id}"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["exitCode"], 3);
    assert!(stored["error"].is_null(), "{stored}");
    assert!(stored["durationMs"].as_i64().unwrap() >= 0, "{stored}");
    assert!(stored["finishedAt"].is_string() && stored["startedAt"].is_string());
    assert!(stored["startedBy"].as_str().unwrap().len() > 3, "{stored}");
    let resumed = follow(&daemon, &run_id, Some(1)).await;
    assert_eq!(resumed.lines, streamed.lines[1..]);
    assert_eq!(resumed.ended["exitCode"], 3);
    assert!(
        containers_of(&run_id).is_empty(),
        "the run's container is removed"
    );

    // The next run sees what the first wrote on the project's volume.
    let reader = start(
        &daemon,
        &project_id,
        json!({ "command": ["cat", "/srv/files/note"] }),
    )
    .await;
    let read = follow(&daemon, reader["runId"].as_str().unwrap(), None).await;
    assert_eq!(read.lines, [(1, "stdout".to_owned(), "kept".to_owned())]);
    assert_eq!(read.ended["status"], "succeeded");
    assert_eq!(read.ended["exitCode"], 0);

    let listed = daemon
        .get(&format!("/v1/projects/{project_id}/runs"), &token)
        .await
        .expect(200)
        .body;
    let listed: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [reader["runId"].as_str().unwrap(), run_id.as_str()]);

    // The audit log names the command, never the env given with it.
    let audit = daemon.get("/v1/audit", &token).await.expect(200);
    assert!(audit.text.contains("run.start"), "{}", audit.text);
    assert!(audit.text.contains("echo oops"), "{}", audit.text);
    assert!(!audit.text.contains("only-for-this-run"), "{}", audit.text);
}

#[tokio::test]
async fn timeouts_and_cancels_stop_the_run_and_leave_no_container() {
    let daemon = TestDaemon::start_with(|config| {
        config.runs.max_concurrent_per_project = 2;
        config.runs.stop_grace_secs = 2;
    })
    .await;
    let project_id = deployed(&daemon, "sleepy").await;
    let token = daemon.admin_token.clone();

    // The timeout: TERM is ignored, so the run is killed after the grace period.
    let slow = start(
        &daemon,
        &project_id,
        json!({
            "command": ["sh", "-c", "trap '' TERM; echo started; sleep 600"],
            "timeoutSecs": 2
        }),
    )
    .await;
    let slow_id = slow["runId"].as_str().unwrap();
    let timed = follow(&daemon, slow_id, None).await;
    assert_eq!(timed.lines[0].2, "started");
    assert_eq!(timed.ended["status"], "timed_out", "{}", timed.ended);
    assert!(
        timed.ended["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 2 s"),
        "{}",
        timed.ended
    );
    assert!(containers_of(slow_id).is_empty());

    // A cancel answers the run as it ended.
    let first = start(&daemon, &project_id, json!({ "command": ["sleep", "600"] })).await;
    let second = start(&daemon, &project_id, json!({ "command": ["sleep", "600"] })).await;
    let first_id = first["runId"].as_str().unwrap();
    assert_eq!(containers_of(first_id).len(), 1);
    // At the limit of concurrent runs, one more is refused with the limit named.
    let refused = daemon
        .post(
            &format!("/v1/projects/{project_id}/runs"),
            &token,
            json!({ "command": ["true"] }),
        )
        .await
        .expect(409);
    assert!(
        refused
            .error_message()
            .contains("max_concurrent_per_project"),
        "{}",
        refused.text
    );
    let canceled = daemon
        .post(&format!("/v1/runs/{first_id}/cancel"), &token, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert!(containers_of(first_id).is_empty());
    let again = daemon
        .post(&format!("/v1/runs/{first_id}/cancel"), &token, json!({}))
        .await
        .expect(409);
    assert!(again.error_message().contains("already canceled"));
    let second_id = second["runId"].as_str().unwrap();
    daemon
        .post(&format!("/v1/runs/{second_id}/cancel"), &token, json!({}))
        .await
        .expect(200);
    assert!(containers_of(second_id).is_empty());
    let audit = daemon.get("/v1/audit", &token).await.expect(200);
    assert!(audit.text.contains("run.cancel"), "{}", audit.text);
}

#[tokio::test]
async fn bad_requests_name_their_field_and_other_accounts_see_nothing() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::busybox("runs\n");
    let (project_id, _) = daemon.connected_project("guarded", &repo).await;
    let token = daemon.admin_token.clone();
    let path = format!("/v1/projects/{project_id}/runs");

    // No release yet: nothing to run in.
    let refused = daemon
        .post(&path, &token, json!({ "command": ["true"] }))
        .await
        .expect(409);
    assert!(
        refused.error_message().contains("no serving release"),
        "{}",
        refused.text
    );
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");

    for (body, field) in [
        (json!({ "command": [] }), "command"),
        (json!({ "command": [""] }), "command"),
        (json!({ "command": "echo hi" }), "command"),
        (json!({ "command": ["sh", 3] }), "command"),
        (json!({ "command": ["true"], "size": "gigantic" }), "size"),
        (
            json!({ "command": ["true"], "timeoutSecs": 0 }),
            "timeoutSecs",
        ),
        (
            json!({ "command": ["true"], "timeoutSecs": 86401 }),
            "timeoutSecs",
        ),
        (
            json!({ "command": ["true"], "timeoutSecs": -1 }),
            "timeoutSecs",
        ),
        (
            json!({ "command": ["true"], "env": { "1BAD": "x" } }),
            "env",
        ),
        (
            json!({ "command": ["true"], "env": { "PORT": "1" } }),
            "env",
        ),
        (
            json!({ "command": ["true"], "deployId": "dep_nope" }),
            "deployId",
        ),
        (json!({ "command": ["true"], "nonsense": true }), "nonsense"),
    ] {
        let res = daemon.post(&path, &token, body.clone()).await;
        assert_eq!(res.status, 422, "{body}: {}", res.text);
        assert!(
            res.error_message().contains(field),
            "{body}: the message names `{field}`: {}",
            res.error_message()
        );
    }
    // A read token may look, not start.
    let read = daemon.token("read").await;
    daemon
        .post(&path, &read, json!({ "command": ["true"] }))
        .await
        .expect(403);

    let run = start(
        &daemon,
        &project_id,
        json!({ "command": ["sh", "-c", "echo private; sleep 600"] }),
    )
    .await;
    let run_id = run["runId"].as_str().unwrap();
    let intruder = daemon.other_account_token("mallory", cantila::names::Scope::Admin);
    for (method, path) in [
        (Method::GET, format!("/v1/runs/{run_id}")),
        (Method::GET, format!("/v1/runs/{run_id}/events")),
        (Method::POST, format!("/v1/runs/{run_id}/cancel")),
        (Method::GET, format!("/v1/projects/{project_id}/runs")),
        (Method::POST, format!("/v1/projects/{project_id}/runs")),
    ] {
        let body = (method == Method::POST).then(|| json!({ "command": ["true"] }));
        let res = daemon
            .call(method.clone(), &path, Some(&intruder), body)
            .await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.text);
        assert!(!res.text.contains("private"));
    }
    // The intruder's cancel changed nothing, and a new release does not stop a run of
    // the one it replaces: once the old release's instance is gone, the run goes on.
    repo.commit(&[("www/index.html", "runs, again\n")], "a new release");
    let redeployed = daemon.deploy(&project_id, None).await;
    assert_eq!(redeployed["status"], "running", "{redeployed}");
    let old_instance = format!("label=cantila.deploy={}", deploy["id"].as_str().unwrap());
    crate::support::wait_until(
        Duration::from_secs(60),
        "the previous release's instance is stopped",
        || async {
            docker(
                None,
                &[
                    "ps",
                    "-aq",
                    "--filter",
                    &old_instance,
                    "--filter",
                    "label=cantila.kind=web",
                ],
            )
            .unwrap()
            .trim()
            .is_empty()
        },
    )
    .await;
    assert_eq!(
        containers_of(run_id).len(),
        1,
        "the run's container is kept"
    );
    let still = daemon
        .get(&format!("/v1/runs/{run_id}"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(still["status"], "running", "{still}");
    daemon
        .post(&format!("/v1/runs/{run_id}/cancel"), &token, json!({}))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_daemon_stopped_mid_run_leaves_an_interrupted_run_and_no_container() {
    // Gracefully: the daemon ends the run and removes its container as it stops.
    let daemon = TestDaemon::start().await;
    let project_id = deployed(&daemon, "stopping").await;
    let run = start(&daemon, &project_id, json!({ "command": ["sleep", "600"] })).await;
    let run_id = run["runId"].as_str().unwrap().to_owned();
    assert_eq!(containers_of(&run_id).len(), 1);
    let (dir, config) = daemon.stop().await;
    assert!(
        containers_of(&run_id).is_empty(),
        "no container outlives the daemon"
    );
    let daemon = TestDaemon::start_in(dir, config).await;
    let ended = daemon
        .get(&format!("/v1/runs/{run_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(ended["status"], "interrupted", "{ended}");
    assert!(ended["finishedAt"].is_string());
    drop(daemon);

    // Killed: the next start records the run and removes the container it left.
    let dir = TestDir::new();
    let config = crate::support::test_config(dir.path());
    let binary = crate::support::BinaryDaemon::start(&config).await;
    let repo = Repo::busybox("crash\n");
    let project_id = binary.connected_project("crashing", repo.path()).await;
    let deploy_id = binary.deploy(&project_id).await;
    binary.wait_status(&deploy_id, "running").await;
    let (status, run) = binary
        .call(
            Method::POST,
            &format!("/v1/projects/{project_id}/runs"),
            json!({ "command": ["sleep", "600"] }),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["runId"].as_str().unwrap().to_owned();
    assert_eq!(containers_of(&run_id).len(), 1);
    binary.kill9();
    assert_eq!(
        containers_of(&run_id).len(),
        1,
        "a crash leaves the container running"
    );
    let daemon = TestDaemon::start_in(dir, config).await;
    assert!(
        containers_of(&run_id).is_empty(),
        "the start removed the crashed daemon's run container"
    );
    let ended = daemon
        .get(&format!("/v1/runs/{run_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(ended["status"], "interrupted", "{ended}");
    assert!(ended["error"].as_str().unwrap().contains("interrupted"));
    // A stream of an interrupted run ends with its status.
    assert_eq!(wait_run(&daemon, &run_id).await["status"], "interrupted");
}

#[tokio::test]
async fn cantila_run_prints_the_output_and_exits_with_the_commands_code() {
    let daemon = TestDaemon::start().await;
    let project_id = deployed(&daemon, "cli-runs").await;
    let url = format!("http://{}", daemon.api);
    let out = crate::cli::cantila(
        [
            "run",
            "cli-runs",
            "--url",
            &url,
            "-e",
            "WHO=cli",
            "--",
            "sh",
            "-c",
            "echo hello $WHO; echo warn >&2; exit 7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        vec![("CANTILA_TOKEN", daemon.admin_token.clone())],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello cli\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warn"));

    let out = crate::cli::cantila(
        ["run", &project_id, "--url", &url, "--", "true"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        vec![("CANTILA_TOKEN", daemon.admin_token.clone())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));

    let out = crate::cli::cantila(
        ["runs", "list", "cli-runs", "--url", &url]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        vec![("CANTILA_TOKEN", daemon.admin_token.clone())],
    )
    .await;
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("failed") && listed.contains("succeeded"),
        "{listed}"
    );
}
