//! Runtime logs end to end on the real engine: an app that prints lines at start and on
//! request (a CGI script writing to the container's stdout and stderr), its lines collected
//! with their tags, filtered by time, instance, stream and text, followed over SSE and
//! resumed with `Last-Event-ID`, kept exactly once across daemon restarts, capped (per
//! project, and all projects together in `logs.db`, which shrinks), and dropped once older
//! than `[logs] max_age`.

use std::time::Duration;

use futures_util::StreamExt;

use cantila::names::Scope;
use serde_json::{json, Value};

use crate::{
    deploys::{app_answer, cleanup, Repo},
    support::{wait_until, TestDaemon},
};

/// An app that writes two lines at start (`boot one` on stdout, `boot two` on stderr) and,
/// for each request to `/cgi-bin/say?WORD`, `said: WORD` on stdout and `warned: WORD` on
/// stderr (through PID 1's descriptors, which are the container's output).
fn talking_app() -> Repo {
    Repo::new(&[
        (
            "Dockerfile",
            // No RUN step: the script is made executable at start, so the build needs no
            // build container.
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\n\
             CMD [\"sh\", \"-c\", \"chmod +x /www/cgi-bin/say; echo boot one; echo boot two >&2; exec httpd -f -p 8080 -h /www\"]\n",
        ),
        ("www/index.html", "talking\n"),
        (
            "www/cgi-bin/say",
            "#!/bin/sh\necho \"said: $QUERY_STRING\" > /proc/1/fd/1\necho \"warned: $QUERY_STRING\" > /proc/1/fd/2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
        ),
    ])
}

/// A request through the edge, so the edge writes an access line too.
async fn say(daemon: &TestDaemon, host: &str, word: &str) {
    let res = reqwest::Client::new()
        .get(format!("http://{}/cgi-bin/say?{word}", daemon.http))
        .header("host", host)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the app answered through the edge");
}

async fn logs(daemon: &TestDaemon, project_id: &str, query: &str) -> Value {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/logs?{query}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body
}

fn texts(body: &Value) -> Vec<String> {
    body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["line"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until a read with `query` has a line containing `needle`; returns that read.
async fn wait_for_line(daemon: &TestDaemon, project_id: &str, query: &str, needle: &str) -> Value {
    for _ in 0..200 {
        let body = logs(daemon, project_id, query).await;
        if texts(&body).iter().any(|text| text.contains(needle)) {
            return body;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no line containing `{needle}` within 20 s; last read: {}",
        logs(daemon, project_id, query).await
    );
}

/// An SSE response read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(daemon: &TestDaemon, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = daemon
            .request(reqwest::Method::GET, path)
            .bearer_auth(&daemon.admin_token)
            .timeout(Duration::from_secs(120));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next `log` event as (id, data), waiting up to 20 s.
    async fn next(&mut self) -> (i64, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix("id:") {
                        id = rest.trim().parse().ok();
                    } else if let Some(rest) = line.strip_prefix("event:") {
                        event = rest.trim().to_owned();
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push_str(rest.trim_start());
                    }
                }
                if event == "log" {
                    let id = id.expect("every log event has an id");
                    return (id, serde_json::from_str(&data).unwrap());
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within 20 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn runtime_logs_are_tagged_filtered_by_time_and_followed_live() {
    let daemon = TestDaemon::start().await;
    let repo = talking_app();
    let (project_id, _) = daemon.connected_project("talker", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "talker.admin.test.local";

    // Lines written at start are there, tagged with the instance, process and stream.
    let body = wait_for_line(&daemon, &project_id, "", "boot two").await;
    let instances = daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let instance = instances["instances"][0]["id"].as_str().unwrap().to_owned();
    let line = |body: &Value, text: &str| -> Value {
        body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["line"] == text)
            .cloned()
            .unwrap_or_else(|| panic!("no line `{text}` in {body}"))
    };
    let boot_one = line(&body, "boot one");
    assert_eq!(boot_one["instance"], instance.as_str());
    assert_eq!(boot_one["process"], "web");
    assert_eq!(boot_one["stream"], "stdout");
    assert_eq!(line(&body, "boot two")["stream"], "stderr");
    let at = boot_one["at"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && at.len() == 30,
        "RFC 3339 with nanoseconds: {at}"
    );

    // Lines written on request, and the edge's access line for the request.
    say(&daemon, host, "first").await;
    let body = wait_for_line(&daemon, &project_id, "", "warned: first").await;
    let body = if texts(&body).iter().any(|t| t.contains("/cgi-bin/say")) {
        body
    } else {
        wait_for_line(&daemon, &project_id, "", "/cgi-bin/say").await
    };
    assert_eq!(line(&body, "said: first")["stream"], "stdout");
    assert_eq!(line(&body, "warned: first")["stream"], "stderr");
    let edge = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["stream"] == "edge")
        .unwrap_or_else(|| panic!("an edge line in {body}"));
    let edge_text = edge["line"].as_str().unwrap();
    assert!(
        edge_text.starts_with("GET /cgi-bin/say 200 ")
            && edge_text.contains("host=talker.admin.test.local"),
        "{edge_text}"
    );
    assert!(
        !edge_text.contains("first"),
        "the query string stays out of the access log"
    );
    assert_eq!(edge["instance"], "edge");
    assert_eq!(edge["process"], "edge");

    // Filters: stream, instance, substring; ids are increasing.
    let stderr = logs(&daemon, &project_id, "stream=stderr").await;
    assert_eq!(texts(&stderr), vec!["boot two", "warned: first"]);
    let edge_only = logs(&daemon, &project_id, "instance=edge").await;
    assert!(
        texts(&edge_only).iter().all(|t| t.starts_with("GET ")),
        "{edge_only}"
    );
    let mine = logs(&daemon, &project_id, &format!("instance={instance}")).await;
    let mut mine = texts(&mine);
    mine.sort();
    assert_eq!(
        mine,
        ["boot one", "boot two", "said: first", "warned: first"]
    );
    let said = logs(&daemon, &project_id, "q=said").await;
    assert_eq!(texts(&said), vec!["said: first"]);
    let all = logs(&daemon, &project_id, "").await;
    let ids: Vec<i64> = all["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(all["truncated"], false);

    // Time windows: RFC 3339 (since inclusive, until exclusive) and relative.
    let first_at = line(&all, "said: first")["at"].as_str().unwrap().to_owned();
    let encoded = first_at.replace(':', "%3A");
    let since = logs(&daemon, &project_id, &format!("since={encoded}")).await;
    assert!(texts(&since).contains(&"said: first".to_owned()), "{since}");
    assert!(!texts(&since).contains(&"boot one".to_owned()), "{since}");
    let until = logs(&daemon, &project_id, &format!("until={encoded}")).await;
    assert!(texts(&until).contains(&"boot one".to_owned()), "{until}");
    assert!(
        !texts(&until).contains(&"said: first".to_owned()),
        "{until}"
    );
    assert_eq!(
        texts(&logs(&daemon, &project_id, "since=1h").await),
        texts(&all)
    );
    assert_eq!(
        texts(&logs(&daemon, &project_id, "since=0s").await),
        Vec::<String>::new()
    );
    assert_eq!(
        texts(&logs(&daemon, &project_id, "until=1d").await),
        Vec::<String>::new()
    );

    // The limit keeps the newest lines and says the page is cut.
    let newest = logs(&daemon, &project_id, "limit=1").await;
    assert_eq!(newest["truncated"], true);
    assert_eq!(newest["lines"][0]["id"], *ids.last().unwrap());

    // Bad parameters are 400s that say what is accepted.
    for (query, named) in [
        ("since=yesterday", "RFC 3339"),
        ("until=5y", "30s, 10m, 2h, 1d or 1w"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("stream=stdin", "stdout, stderr, edge"),
        ("instance=a%20b", "instance"),
        ("bogus=1", "bogus"),
    ] {
        let res = daemon
            .get(
                &format!("/v1/projects/{project_id}/logs?{query}"),
                &daemon.admin_token,
            )
            .await;
        assert_eq!(res.status, 400, "{query}: {}", res.text);
        assert!(res.error_message().contains(named), "{query}: {}", res.text);
    }
    let res = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/projects/{project_id}/logs?follow=true&until=1m"),
        )
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Another account's project answers exactly like a missing one.
    let other = daemon.other_account_token("mallory", Scope::Read);
    let theirs = daemon
        .get(&format!("/v1/projects/{project_id}/logs"), &other)
        .await
        .expect(404);
    let missing = daemon
        .get("/v1/projects/prj_doesnotexist/logs", &other)
        .await
        .expect(404);
    assert_eq!(
        theirs.text.replace(&project_id, "X"),
        missing.text.replace("prj_doesnotexist", "X")
    );
    let res = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/projects/{project_id}/logs?follow=true"),
        )
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "a stream of another account's project is 404 too"
    );

    // Following: the window first, then new lines live, each with an id.
    let mut events = Events::open(
        &daemon,
        &format!("/v1/projects/{project_id}/logs?q=said"),
        &[("accept", "text/event-stream")],
    )
    .await;
    let (first_id, first) = events.next().await;
    assert_eq!(first["line"], "said: first");
    say(&daemon, host, "second").await;
    let (second_id, second) = events.next().await;
    assert_eq!(second["line"], "said: second");
    assert_eq!(second["instance"], instance.as_str());
    assert!(second_id > first_id);
    drop(events);

    // Resuming after an id gives what came after it, then new lines; nothing twice.
    let mut resumed = Events::open(
        &daemon,
        &format!("/v1/projects/{project_id}/logs?follow=true&q=said"),
        &[("last-event-id", &first_id.to_string())],
    )
    .await;
    let (id, line_after) = resumed.next().await;
    assert_eq!(
        (id, line_after["line"].as_str()),
        (second_id, Some("said: second"))
    );
    say(&daemon, host, "third").await;
    let (third_id, third) = resumed.next().await;
    assert_eq!(third["line"], "said: third");
    assert!(third_id > second_id);
    drop(resumed);

    // An unfiltered follow sees the stderr and edge lines of a request too.
    let mut everything = Events::open(
        &daemon,
        &format!("/v1/projects/{project_id}/logs?follow=true&since=0s"),
        &[],
    )
    .await;
    say(&daemon, host, "fourth").await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (_, event) = everything.next().await;
        seen.push(event["stream"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, vec!["edge", "stderr", "stdout"]);
    cleanup(&project_id).await;
}

#[tokio::test]
async fn daemon_restarts_neither_lose_nor_repeat_a_line() {
    let daemon = TestDaemon::start().await;
    let repo = talking_app();
    let (project_id, _) = daemon.connected_project("steadfast", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let deploy_id = deploy["id"].as_str().unwrap().to_owned();
    let host = "steadfast.admin.test.local";
    wait_for_line(&daemon, &project_id, "", "boot two").await;
    say(&daemon, host, "a1").await;
    say(&daemon, host, "a2").await;
    wait_for_line(&daemon, &project_id, "q=said", "said: a2").await;

    // A plain restart re-reads the container from the last stored line: nothing repeats.
    let daemon = daemon.restart().await;
    say(&daemon, host, "b1").await;
    wait_for_line(&daemon, &project_id, "q=said", "said: b1").await;

    // Lines written while the daemon is down are collected after it starts again.
    let (dir, config) = daemon.stop().await;
    for word in ["down1", "down2", "down3"] {
        assert_eq!(
            app_answer(&deploy_id, &format!("/cgi-bin/say?{word}"))
                .await
                .as_deref(),
            Some("ok\n"),
            "the instance keeps running while the daemon is down"
        );
    }
    let daemon = TestDaemon::start_in(dir, config).await;
    say(&daemon, host, "c1").await;
    let said = wait_for_line(&daemon, &project_id, "q=said", "said: c1").await;
    assert_eq!(
        texts(&said),
        vec![
            "said: a1",
            "said: a2",
            "said: b1",
            "said: down1",
            "said: down2",
            "said: down3",
            "said: c1"
        ]
    );
    let warned = wait_for_line(&daemon, &project_id, "stream=stderr", "warned: c1").await;
    assert_eq!(
        texts(&warned),
        vec![
            "boot two",
            "warned: a1",
            "warned: a2",
            "warned: b1",
            "warned: down1",
            "warned: down2",
            "warned: down3",
            "warned: c1"
        ]
    );
    // One line on stdout and one on stderr at the same moment: the two streams have no
    // order between them, only each line exactly once.
    let boot = logs(&daemon, &project_id, "q=boot").await;
    let mut boot = texts(&boot);
    boot.sort();
    assert_eq!(boot, vec!["boot one", "boot two"]);
    cleanup(&project_id).await;
}

#[tokio::test]
async fn the_size_cap_drops_the_oldest_lines_first() {
    let daemon = TestDaemon::start_with(|c| c.logs.max_bytes_per_project = 65_536).await;
    let repo = talking_app();
    let (project_id, _) = daemon.connected_project("chatty", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "chatty.admin.test.local";
    wait_for_line(&daemon, &project_id, "", "boot two").await;
    // About 2 x 43 bytes of app lines and 130 of edge line per request: 600 requests are
    // well over the 64 KiB cap. The edge hands its access lines over in batches (up to 256
    // records, or 200 ms), stored after the app lines of the same moment; the cap is large
    // beside one batch (at most about 33 KB) so the newest app lines survive the last one.
    for n in 0..600 {
        say(&daemon, host, &format!("n{n:03}")).await;
    }
    wait_for_line(&daemon, &project_id, "q=said", "said: n599").await;
    // Pruning follows each stored batch; wait until the last one is pruned.
    let within_cap = |body: &Value| {
        let lines = texts(body);
        let bytes: usize = lines.iter().map(|l| l.len() + 32).sum();
        !lines.contains(&"boot one".to_owned()) && bytes <= 65_536
    };
    let mut kept = json!(null);
    for _ in 0..100 {
        kept = logs(&daemon, &project_id, "limit=5000").await;
        if within_cap(&kept) {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = texts(&kept);
    assert!(
        !lines.contains(&"boot one".to_owned()),
        "the oldest line went first: {kept}"
    );
    let bytes: usize = lines.iter().map(|l| l.len() + 32).sum();
    assert!(bytes <= 65_536, "kept {bytes} bytes: {kept}");
    assert!(
        bytes >= 32_768,
        "pruning keeps most of the cap ({bytes} bytes)"
    );
    // What is kept is the newest, without holes: the `said` lines are nXXX..n599 in order.
    let said: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("said: "))
        .cloned()
        .collect();
    let first: usize = said[0].trim_start_matches("said: n").parse().unwrap();
    let expected: Vec<String> = (first..600).map(|n| format!("said: n{n:03}")).collect();
    assert_eq!(said, expected);
    assert!(first > 0, "some request lines were dropped too");
    cleanup(&project_id).await;
}

/// How many of the project's stored lines contain `needle`, read from `logs.db` beside
/// the running daemon: what pruning left, whatever a read would show.
fn stored_lines(daemon: &TestDaemon, project_id: &str, needle: &str) -> i64 {
    let connection = rusqlite::Connection::open_with_flags(
        daemon.data_dir().join("logs.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    connection
        .query_row(
            "SELECT count(*) FROM runtime_logs WHERE project_id = ?1 AND instr(line, ?2) > 0",
            [project_id, needle],
            |row| row.get(0),
        )
        .unwrap()
}

/// `[logs] max_age`: a line older than the window is dropped while the daemon runs (from
/// the store, not only from reads; by a later pass than the one at start), and collection
/// goes on with the lines after it.
#[tokio::test]
async fn lines_older_than_max_age_are_pruned_while_newer_ones_are_collected() {
    let daemon = TestDaemon::start_with(|c| c.logs.max_age = "10s".to_owned()).await;
    let repo = talking_app();
    let (project_id, _) = daemon.connected_project("aging", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "aging.admin.test.local";
    wait_for_line(&daemon, &project_id, "", "boot one").await;
    wait_for_line(&daemon, &project_id, "", "boot two").await;
    assert_eq!(stored_lines(&daemon, &project_id, "boot "), 2);

    let pruned = || async {
        let read = logs(&daemon, &project_id, "since=1h").await;
        stored_lines(&daemon, &project_id, "boot ") == 0
            && !texts(&read).iter().any(|line| line.starts_with("boot "))
    };
    wait_until(Duration::from_secs(60), "the boot lines age out", pruned).await;

    // Lines after them are collected, stored and read as before.
    say(&daemon, host, "after-pruning").await;
    wait_for_line(&daemon, &project_id, "since=1h", "said: after-pruning").await;
    wait_for_line(&daemon, &project_id, "since=1h", "warned: after-pruning").await;
    assert_eq!(stored_lines(&daemon, &project_id, "after-pruning"), 2);
    assert_eq!(stored_lines(&daemon, &project_id, "boot "), 0);
}

#[tokio::test]
async fn the_cli_prints_filters_and_follows_until_interrupted() {
    let daemon = TestDaemon::start().await;
    let repo = talking_app();
    let (project_id, _) = daemon.connected_project("chatter", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "chatter.admin.test.local";
    wait_for_line(&daemon, &project_id, "", "boot two").await;
    let env = vec![
        ("CANTILA_URL", format!("http://{}", daemon.api)),
        ("CANTILA_TOKEN", daemon.admin_token.clone()),
    ];
    let run = |list: &[&str]| {
        crate::cli::cantila(list.iter().map(|s| s.to_string()).collect(), env.clone())
    };

    let out = run(&["logs", "chatter"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("web["), "{text}");
    assert!(text.contains("] boot one"), "{text}");
    assert!(text.contains("] (stderr) boot two"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal: {text:?}"
    );

    let out = run(&["logs", "chatter", "--stream", "stderr", "--json"]).await;
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(texts(&page), vec!["boot two"]);
    let out = run(&["logs", "chatter", "--grep", "boot one", "--since", "1h"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    let out = run(&["logs", "chatter", "--since", "yesterday"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RFC 3339"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Following prints the window, then new lines; Ctrl-C (SIGINT) ends it cleanly.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
        .args(["logs", "chatter", "--follow", "--grep", ":"])
        .env_remove("CANTILA_DATA_DIR")
        .env_remove("CANTILA_CONFIG")
        .envs(env.clone())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    say(&daemon, host, "early").await;
    wait_line(&mut lines_rx, "said: early").await;
    say(&daemon, host, "live").await;
    let line = wait_line(&mut lines_rx, "said: live").await;
    assert!(line.contains("web["), "{line}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.status.success(),
        "Ctrl-C exits cleanly: {:?} {}",
        exit.status,
        String::from_utf8_lossy(&exit.stderr)
    );
    cleanup(&project_id).await;
}

/// The next line from a child's output containing `needle`, within 20 s.
async fn wait_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.recv().await {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the follow ended before `{needle}`");
    })
    .await
    .unwrap_or_else(|_| panic!("no `{needle}` within 20 s"))
}

/// Requests `count` paths of about 900 bytes (`/ppp…/tag-NNNN`) on `host` through the edge,
/// eight at a time. A created project's hostname answers (its status page) through the
/// edge, which writes an access line of about 1 KB for each.
async fn long_requests(daemon: &TestDaemon, host: &str, tag: &str, count: usize) {
    let client = reqwest::Client::new();
    let long = "p".repeat(900);
    let mut requests = futures_util::stream::iter(0..count)
        .map(|n| {
            let request = client
                .get(format!("http://{}/{long}/{tag}-{n:04}", daemon.http))
                .header("host", host)
                .timeout(Duration::from_secs(10))
                .send();
            async move { request.await.expect("the edge answers") }
        })
        .buffer_unordered(8);
    while requests.next().await.is_some() {}
}

/// `logs.db` beside the running daemon, read-only: the lines of `project_id` (their
/// paths' tags, oldest first) and the bytes counted for all projects.
fn stored_tags(daemon: &TestDaemon, project_id: &str, tag: &str) -> (Vec<usize>, i64) {
    let connection = rusqlite::Connection::open_with_flags(
        daemon.data_dir().join("logs.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = connection
        .prepare("SELECT line FROM runtime_logs WHERE project_id = ?1 ORDER BY seq")
        .unwrap();
    let marker = format!("/{tag}-");
    let tags = statement
        .query_map([project_id], |row| row.get::<_, String>(0))
        .unwrap()
        .filter_map(|line| {
            let line = line.unwrap();
            let at = line.find(&marker)?;
            Some(
                line[at + marker.len()..at + marker.len() + 4]
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    let total = connection
        .query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM runtime_log_usage",
            [],
            |row| row.get(0),
        )
        .unwrap();
    (tags, total)
}

/// `[logs] max_total_mb`: every access line the edge sends is stored, once; past the total
/// cap the oldest lines of any project go first (here only the older project's, though it
/// is far under its own cap), and `logs.db` gives the space back: the file shrinks.
#[tokio::test]
async fn the_total_cap_drops_the_oldest_lines_of_all_projects_and_logs_db_shrinks() {
    // First with room for everything: about 1.7 MB of lines are kept.
    let daemon = TestDaemon::start_with(|c| c.logs.max_total_mb = 4).await;
    let older = daemon.create_project("older").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let newer = daemon.create_project("newer").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    long_requests(&daemon, "older.admin.test.local", "old", 900).await;
    wait_until(
        Duration::from_secs(30),
        "the 900 access lines of `older` are stored",
        || async { stored_tags(&daemon, &older, "old").0.len() >= 900 },
    )
    .await;
    long_requests(&daemon, "newer.admin.test.local", "new", 800).await;
    wait_until(
        Duration::from_secs(30),
        "the 800 access lines of `newer` are stored",
        || async { stored_tags(&daemon, &newer, "new").0.len() >= 800 },
    )
    .await;
    let (tags, _) = stored_tags(&daemon, &older, "old");
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(sorted, (0..900).collect::<Vec<_>>(), "each line once");
    let (_, written) = stored_tags(&daemon, &newer, "new");
    assert!(written > 1_600_000, "{written} bytes of lines");
    // A clean stop leaves logs.db whole (no WAL): its size is what the lines take.
    let (dir, mut config) = daemon.stop().await;
    let logs_db = config.data_dir.join("logs.db");
    let before = std::fs::metadata(&logs_db).unwrap().len();

    // Then with a total cap of 1 MiB: the next batch finds the total over it.
    config.logs.max_total_mb = 1;
    let daemon = TestDaemon::start_in(dir, config).await;
    long_requests(&daemon, "newer.admin.test.local", "last", 1).await;
    // The vacuum's cut reaches the file at the checkpoint after it.
    wait_until(
        Duration::from_secs(90),
        "logs.db shrinks to the lines it keeps",
        || async { std::fs::metadata(&logs_db).unwrap().len() < before * 3 / 4 },
    )
    .await;
    let (old_kept, total) = stored_tags(&daemon, &older, "old");
    let (new_kept, _) = stored_tags(&daemon, &newer, "new");
    let after = std::fs::metadata(&logs_db).unwrap().len();
    eprintln!(
        "kept {total} of {written} bytes of lines ({} + {} lines); logs.db {before} -> {after} bytes",
        old_kept.len(),
        new_kept.len()
    );
    assert!(total <= 1 << 20, "all projects within 1 MiB: {total}");
    assert_eq!(
        new_kept.len(),
        800,
        "the newer project's lines are all kept"
    );
    assert!(
        !old_kept.is_empty() && old_kept.len() < 900,
        "the older project lost lines: {}",
        old_kept.len()
    );
    // What the older project keeps is its newest lines: the oldest went first. Requests ran
    // eight at a time and the edge hands access lines over in batches of up to 256 records
    // per edge thread, so arrival order is request order give or take eight requests and
    // a batch of each edge thread (one per core): kept lines start no earlier than that slack allows
    // (dropping the newest first would keep tags from 0 and fail here).
    let oldest_kept = *old_kept.iter().min().unwrap();
    let edge_threads = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        oldest_kept + old_kept.len() + 8 + edge_threads * 256 >= 900,
        "kept {} lines from tag {oldest_kept} on",
        old_kept.len()
    );
}
