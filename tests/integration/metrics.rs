//! Metrics against the real daemon, Docker and edge: a busybox app made busy on request
//! moves CPU and memory; requests sent through the edge are counted exactly, by status
//! class; the series survive a restart; Prometheus output parses; another account's
//! project is a 404; bad windows are 400s that name the accepted forms.

use std::time::Duration;

use cantila::names::Scope;
use serde_json::Value;

use crate::{
    deploys::{cleanup, Repo},
    support::TestDaemon,
};

/// A busybox httpd app: `/` (200), `/dir` (302 to `/dir/`), anything missing (404),
/// `/cgi-bin/fail` (503), and `/cgi-bin/busy`, which starts a CPU-burning loop and puts
/// 48 MiB in the container's tmpfs, then answers 200.
fn busy_app() -> Repo {
    let repo = Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        ),
        ("www/index.html", "ok\n"),
        ("www/dir/index.html", "dir\n"),
        (
            "www/cgi-bin/fail",
            "#!/bin/sh\necho 'Status: 503 Busy'\necho 'Content-Type: text/plain'\necho\necho down\n",
        ),
        (
            "www/cgi-bin/busy",
            "#!/bin/sh\n(while :; do :; done) </dev/null >/dev/null 2>&1 &\nhead -c 48m /dev/zero > /dev/shm/hog\necho 'Content-Type: text/plain'\necho\necho busy\n",
        ),
    ]);
    // CGI scripts must be executable; git keeps the mode, and so does the build context.
    for script in ["www/cgi-bin/fail", "www/cgi-bin/busy"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            repo.path().join(script),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    repo.commit(&[], "make the CGI scripts executable");
    repo
}

async fn edge_status(daemon: &TestDaemon, host: &str, path: &str) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("http://{}{path}", daemon.http))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    res.bytes().await.unwrap();
    status
}

async fn metrics(daemon: &TestDaemon, project_id: &str, query: &str) -> Value {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/metrics?{query}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body
}

/// Polls the metrics until `done` holds; panics with the last answer after 90 s.
async fn wait_metrics(
    daemon: &TestDaemon,
    project_id: &str,
    query: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..180 {
        last = metrics(daemon, project_id, query).await;
        if done(&last) {
            return last;
        }
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("metrics never showed {what}: {}", last["summary"]);
}

fn series_sum(report: &Value, field: &str) -> u64 {
    report["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_u64().unwrap())
        .sum()
}

/// Parses Prometheus text with a real parser, refusing any line it cannot read and any
/// sample whose family was not declared (HELP and TYPE) before it.
fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    let mut declared = std::collections::HashSet::new();
    for line in text.lines() {
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Ignored => panic!("unparseable line: {line:?}"),
            prometheus_parse::LineInfo::Type { metric_name, .. } => {
                declared.insert(metric_name.trim_end_matches("_bucket").to_owned());
            }
            prometheus_parse::LineInfo::Sample { metric_name, .. } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        metric_name
                            .strip_suffix(suffix)
                            .filter(|f| declared.contains(*f))
                    })
                    .unwrap_or(metric_name);
                assert!(
                    declared.contains(family),
                    "{metric_name} has no TYPE line before it"
                );
            }
            prometheus_parse::LineInfo::Doc { .. } | prometheus_parse::LineInfo::Empty => {}
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn counter(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn busy_instances_move_cpu_and_memory_and_edge_requests_are_counted_exactly() {
    let metrics_listener = crate::support::listener("127.0.0.1:0");
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let dir = crate::support::TestDir::new();
    let mut config = crate::support::test_config(dir.path());
    config.metrics.interval_secs = 1;
    let mut listeners = cantila::Listeners::ephemeral().await.unwrap();
    listeners.metrics = Some(metrics_listener);
    let daemon = TestDaemon::start_on(dir, config, listeners).await;

    let repo = busy_app();
    let (project_id, _) = daemon.connected_project("busy", &repo).await;
    let burner = RemoveContainersOnDrop(project_id.clone());
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "busy.admin.test.local";

    // An idle baseline: one instance sampled twice, so it has a CPU figure.
    let idle = wait_metrics(
        &daemon,
        &project_id,
        "since=5m&step=1m",
        "an idle sample",
        |r| r["summary"]["instances"][0]["cpuPercent"].is_number(),
    )
    .await;
    let idle_cpu = idle["summary"]["cpuPercent"].as_f64().unwrap();
    let idle_memory = idle["summary"]["memoryBytes"].as_u64().unwrap();
    assert_eq!(
        idle["summary"]["memoryLimitBytes"],
        512 * 1024 * 1024,
        "the small size's limit"
    );
    assert_eq!(
        idle["summary"]["requests"], 0,
        "health checks do not pass the edge"
    );

    // Exactly 30 requests through the edge: 21 2xx, 3 3xx, 4 4xx, 2 5xx.
    let mut sent = [0u64; 5];
    for (path, times, status) in [
        ("/", 20, 200),
        ("/dir", 3, 302),
        ("/missing", 4, 404),
        ("/cgi-bin/fail", 2, 503),
        ("/cgi-bin/busy", 1, 200),
    ] {
        for _ in 0..times {
            assert_eq!(edge_status(&daemon, host, path).await, status, "{path}");
            sent[usize::from(status / 100) - 1] += 1;
        }
    }
    assert_eq!(sent, [0, 21, 3, 4, 2]);

    let busy = wait_metrics(
        &daemon,
        &project_id,
        "since=5m&step=1m",
        "the busy app and 30 requests",
        |r| {
            let s = &r["summary"];
            s["requests"] == 30
                && s["cpuPercent"]
                    .as_f64()
                    .is_some_and(|cpu| cpu > idle_cpu + 20.0)
                && s["memoryBytes"]
                    .as_u64()
                    .is_some_and(|m| m > idle_memory + 32 * 1024 * 1024)
        },
    )
    .await;
    let summary = &busy["summary"];
    assert_eq!(
        [
            &summary["status1xx"],
            &summary["status2xx"],
            &summary["status3xx"],
            &summary["status4xx"],
            &summary["status5xx"]
        ],
        [0, 21, 3, 4, 2]
    );
    assert!(summary["p50Ms"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["bytesOut"].as_u64().unwrap() > 0);
    let instance = &summary["instances"][0];
    let cpu = instance["cpuPercent"].as_f64().unwrap();
    // The small size is half a core: the share of the limit is twice the share of a core.
    let of_limit = instance["cpuLimitPercent"].as_f64().unwrap();
    assert!((of_limit - cpu * 2.0).abs() < 0.1, "{instance}");
    assert_eq!(instance["cpuLimitCores"], 0.5);
    assert!(
        instance["networkRxBytes"].as_u64().unwrap() > 0,
        "{instance}"
    );
    assert_eq!(instance["restartCount"], 0);
    assert_eq!(series_sum(&busy, "requests"), 30);
    assert_eq!(series_sum(&busy, "status5xx"), 2);

    // The fine series (1 s samples here) adds up to the same count, and no tick counts a
    // request twice: checked once two more samples have been taken.
    let samples = |report: &Value| {
        report["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|point| point["cpuPercent"].is_number())
            .count()
    };
    let sampled_so_far = samples(&metrics(&daemon, &project_id, "since=5m&step=1s").await);
    let fine = wait_metrics(
        &daemon,
        &project_id,
        "since=5m&step=1s",
        "two more samples",
        |r| samples(r) >= sampled_so_far + 2,
    )
    .await;
    assert_eq!(series_sum(&fine, "requests"), 30);
    assert_eq!(fine["step"], "1s");
    // One point per sample here, so the busy sample the summary showed is in the series.
    let busiest_cpu = fine["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["cpuPercent"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        busiest_cpu > idle_cpu + 20.0,
        "busiest {busiest_cpu}, idle {idle_cpu}"
    );
    let coarse_steps = metrics(&daemon, &project_id, "since=5m&step=10s").await;
    assert_eq!(series_sum(&coarse_steps, "requests"), 30);
    assert_eq!(fine["instances"][0]["id"], instance["id"]);

    // Prometheus: the project alone (Accept: text/plain), the account (admin token), the
    // whole installation (the token-less loopback listener).
    let text = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/projects/{project_id}/metrics"),
        )
        .bearer_auth(daemon.token("read").await)
        .header("accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        .send()
        .await
        .unwrap();
    assert!(text.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let scrape = parse_prometheus(&text.text().await.unwrap());
    let project = [("project", project_id.as_str())];
    for (class, count) in [("2xx", 21.0), ("3xx", 3.0), ("4xx", 4.0), ("5xx", 2.0)] {
        assert_eq!(
            counter(
                &scrape,
                "cantila_http_requests_total",
                &[("project", &project_id), ("class", class)]
            ),
            Some(count),
            "{class}"
        );
    }
    assert_eq!(
        counter(&scrape, "cantila_http_request_duration_seconds", &project),
        Some(30.0)
    );
    assert!(counter(&scrape, "cantila_instance_cpu_seconds_total", &project).unwrap() > 0.0);
    assert!(
        counter(
            &scrape,
            "cantila_instance_memory_working_set_bytes",
            &project
        )
        .unwrap()
            > 32.0 * 1024.0 * 1024.0
    );
    assert!(scrape.docs.contains_key("cantila_instance_restarts_total"));

    let admin_scrape = daemon
        .request(reqwest::Method::GET, "/metrics")
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin_scrape.status(), 200);
    let scrape = parse_prometheus(&admin_scrape.text().await.unwrap());
    assert_eq!(
        counter(
            &scrape,
            "cantila_project_info",
            &[("project", &project_id), ("name", "busy")]
        ),
        Some(1.0)
    );
    let read_scrape = daemon.get("/metrics", &daemon.token("read").await).await;
    assert_eq!(read_scrape.status, 403);

    let other = daemon.other_account_token("outsider", Scope::Admin);
    daemon
        .post(
            "/v1/projects",
            &other,
            serde_json::json!({ "name": "theirs" }),
        )
        .await
        .expect(201);
    let theirs = daemon.get("/metrics", &other).await.expect(200);
    assert!(
        theirs.text.contains("name=\"theirs\"") && !theirs.text.contains(&project_id),
        "{}",
        theirs.text
    );
    let hidden = daemon
        .get(&format!("/v1/projects/{project_id}/metrics"), &other)
        .await
        .expect(404);
    let missing = daemon
        .get("/v1/projects/prj_doesnotexist/metrics", &other)
        .await
        .expect(404);
    assert_eq!(
        hidden.text.replace(&project_id, "ID"),
        missing.text.replace("prj_doesnotexist", "ID"),
        "another account's project looks exactly like a missing one"
    );
    let hidden_text = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/projects/{project_id}/metrics"),
        )
        .bearer_auth(&other)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(hidden_text.status(), 404);

    let open = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let scrape = parse_prometheus(&open.text().await.unwrap());
    assert!(counter(&scrape, "cantila_project_info", &[("name", "busy")]).is_some());
    assert!(counter(&scrape, "cantila_project_info", &[("name", "theirs")]).is_some());

    // The points are in the store: a restart keeps the one-minute and the fine ones.
    let daemon = daemon.restart().await;
    let after = metrics(&daemon, &project_id, "since=1h&step=1m").await;
    assert_eq!(series_sum(&after, "requests"), 30, "{}", after["summary"]);
    assert_eq!(after["summary"]["status4xx"], 4);
    let fine = metrics(&daemon, &project_id, "since=5m&step=1s").await;
    assert_eq!(series_sum(&fine, "requests"), 30);
    let busiest_memory = fine["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["memoryBytes"].as_u64())
        .max();
    assert!(
        busiest_memory.is_some_and(|m| m > idle_memory + 32 * 1024 * 1024),
        "busiest {busiest_memory:?}, idle {idle_memory}"
    );
    drop(daemon);
    cleanup(&project_id).await;
    drop(burner);
}

/// Removes a project's containers when a test ends, even by a failed assertion, so a
/// CPU-burning fixture never outlives its test.
struct RemoveContainersOnDrop(String);

impl Drop for RemoveContainersOnDrop {
    fn drop(&mut self) {
        let label = format!("label=cantila.project={}", self.0);
        let Ok(listed) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

#[tokio::test]
async fn bad_windows_are_refused_with_the_accepted_forms() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("quiet").await;
    let id = project["id"].as_str().unwrap();
    for (query, needle) in [
        ("since=yesterday", "`10m`"),
        ("since=-1h", "RFC 3339"),
        ("since=30d", "kept for 1w"),
        ("step=1.5m", "`30s`"),
        ("step=0s", "`30s`"),
        ("since=2h&step=10s", "multiple of 1m"),
        ("since=1h&step=7s", "multiple of the sampling interval"),
        ("since=7d&step=1m", "larger step"),
        ("since=1m&step=1h", "longer than the window"),
        ("window=1h", "unknown field"),
    ] {
        let res = daemon
            .get(
                &format!("/v1/projects/{id}/metrics?{query}"),
                &daemon.admin_token,
            )
            .await
            .expect(400);
        assert!(
            res.error_message().contains(needle),
            "{query}: {}",
            res.text
        );
    }
    // A project that never ran answers with an empty but complete window.
    let report = daemon
        .get(
            &format!("/v1/projects/{id}/metrics?since=10m&step=1m"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(report["series"].as_array().unwrap().len(), 11, "{report}");
    assert_eq!(report["summary"]["requests"], 0);
    assert_eq!(report["summary"]["cpuPercent"], Value::Null);
}
