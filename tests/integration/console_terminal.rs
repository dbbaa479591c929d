//! The console's Runs, Console (terminal) and Jobs sections in a real browser (headless
//! Chromium over WebDriver, see `console`) against a real daemon, real Docker and a real
//! git repository: a run started from the page streams its output and shows its exit
//! code; the xterm.js terminal drives an interactive run and an exec through the attach
//! WebSocket (typed keys in, output and the exit code out, the window's size followed);
//! the jobs list shows a job, runs it now and disables it. Every test ends with
//! `Browser::close`, which fails on any script error or Content-Security-Policy refusal,
//! so the terminal's way around inline styles is held to the policy too.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    console::Browser,
    deploys::{cleanup, Repo},
    support::TestDaemon,
};

/// A project serving busybox from a real repository, deployed; returns its id.
async fn deployed_busybox(daemon: &TestDaemon, name: &str) -> String {
    let repo = Repo::busybox("runs from the console\n");
    let (project_id, _) = daemon.connected_project(name, &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    project_id
}

/// Signs in with the admin token and opens `path`.
async fn open_signed_in(browser: &Browser, daemon: &TestDaemon, path: &str) {
    browser.sign_in(&daemon.admin_token).await;
    browser
        .wait_text("h1", "Projects", Duration::from_secs(15))
        .await;
    browser.goto(path).await;
}

/// The run id in a run page's path `/projects/<id>/runs/<run>`.
fn run_id_of(path: &str) -> String {
    let id = path.rsplit('/').next().unwrap().to_owned();
    assert!(id.starts_with("run_"), "{path} is not a run's page");
    id
}

async fn run_json(daemon: &TestDaemon, run_id: &str) -> Value {
    daemon
        .get(&format!("/v1/runs/{run_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body
}

impl Browser {
    /// Types `text` into the xterm.js terminal (its hidden input takes the keys).
    async fn type_in_terminal(&self, text: &str) {
        let input = self
            .find("[data-testid=terminal] .xterm-helper-textarea")
            .await;
        input.send_keys(text).await.unwrap();
    }

    /// The terminal's size as `stty size` prints it ("rows cols"), as the page last sent it.
    async fn terminal_size(&self) -> String {
        let got = self
            .js(
                "const f = document.querySelector('[data-testid=terminal]'); return `${f.dataset.rows} ${f.dataset.cols}`",
                vec![],
            )
            .await;
        got.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the terminal's screen shows `wanted`.
    async fn wait_terminal(&self, wanted: &str, timeout: Duration) {
        let script = format!(
            "return [...document.querySelectorAll('[data-testid=terminal] .xterm-rows > div')]
               .some(r => r.textContent.includes({}))",
            serde_json::to_string(wanted).unwrap()
        );
        self.wait_js(&format!("the terminal shows {wanted:?}"), &script, timeout)
            .await;
    }
}

#[tokio::test]
async fn console_runs_start_from_the_page_stream_their_output_and_are_listed_with_the_exit_code() {
    let daemon = TestDaemon::start().await;
    let project_id = deployed_busybox(&daemon, "errands").await;
    let browser = Browser::start(&daemon).await;
    open_signed_in(&browser, &daemon, &format!("/projects/{project_id}/runs")).await;
    let long = Duration::from_secs(120);

    // A command typed as a person would; the console splits it into words, no shell does.
    browser.find("[data-testid=run-form]").await;
    browser
        .fill(
            "[data-testid=run-form] input[name=command]",
            "sh -c 'echo \"hello from a run\"; echo oops >&2; exit 3'",
        )
        .await;
    browser.click("Run").await;
    browser
        .wait_js(
            "the run's page opens",
            "return /\\/runs\\/run_[^/]+$/.test(location.pathname)",
            Duration::from_secs(30),
        )
        .await;
    let run_id = run_id_of(&browser.path().await);
    browser
        .wait_text("[data-testid=run-output]", "hello from a run", long)
        .await;
    browser
        .wait_text("[data-testid=run-status]", "failed", long)
        .await;
    browser
        .wait_text("[data-testid=run-exit-code]", "3", Duration::from_secs(15))
        .await;
    browser
        .wait_js(
            "stderr is marked as such",
            "return [...document.querySelectorAll('[data-testid=run-output] li[data-stream=stderr]')]
               .some(l => l.textContent.includes('oops'))",
            Duration::from_secs(15),
        )
        .await;
    let run = run_json(&daemon, &run_id).await;
    assert_eq!(
        run["command"],
        json!([
            "sh",
            "-c",
            "echo \"hello from a run\"; echo oops >&2; exit 3"
        ]),
        "{run}"
    );
    assert_eq!(run["exitCode"], 3, "{run}");
    browser.screenshot("run").await;

    // The list: the command as typed, the status, the exit code and who started it.
    browser.goto(&format!("/projects/{project_id}/runs")).await;
    let row = format!("[data-testid=run-history] tr[data-run='{run_id}']");
    browser
        .wait_text(&row, "failed", Duration::from_secs(15))
        .await;
    let text = browser.find(&row).await.text().await.unwrap();
    assert!(text.contains("echo \"hello from a run\""), "{text}");
    assert!(text.contains(run["startedBy"].as_str().unwrap()), "{text}");
    assert_eq!(
        browser
            .find(&format!("{row} [data-testid=run-exit-code]"))
            .await
            .text()
            .await
            .unwrap(),
        "3"
    );

    // Output arrives while the run runs, and the page cancels it.
    browser
        .fill(
            "[data-testid=run-form] input[name=command]",
            "sh -c 'echo waiting-for-cancel; exec sleep 600'",
        )
        .await;
    browser.click("Run").await;
    browser
        .wait_js(
            "the second run's page opens",
            &format!(
                "return /\\/runs\\/run_[^/]+$/.test(location.pathname) && !location.pathname.endsWith('{run_id}')"
            ),
            Duration::from_secs(30),
        )
        .await;
    let waiting = run_id_of(&browser.path().await);
    browser
        .wait_text("[data-testid=run-output]", "waiting-for-cancel", long)
        .await;
    assert_eq!(run_json(&daemon, &waiting).await["status"], "running");
    browser
        .wait_text(
            "[data-testid=run-status]",
            "running",
            Duration::from_secs(5),
        )
        .await;
    browser.click("Cancel run").await;
    browser.click("Cancel this run").await;
    browser
        .wait_text("[data-testid=run-status]", "canceled", long)
        .await;
    assert_eq!(run_json(&daemon, &waiting).await["status"], "canceled");

    // A command the console cannot split is refused before it reaches the API.
    browser.goto(&format!("/projects/{project_id}/runs")).await;
    browser
        .fill(
            "[data-testid=run-form] input[name=command]",
            "echo 'unclosed",
        )
        .await;
    browser.click("Run").await;
    browser
        .wait_text(
            "[data-testid=run-form] [role=alert]",
            "quote is not closed",
            Duration::from_secs(15),
        )
        .await;
    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_terminal_execs_into_an_instance_follows_its_size_and_shows_the_exit_code() {
    let daemon = TestDaemon::start().await;
    let project_id = deployed_busybox(&daemon, "inside").await;
    let browser = Browser::start(&daemon).await;
    open_signed_in(
        &browser,
        &daemon,
        &format!("/projects/{project_id}/console"),
    )
    .await;
    let long = Duration::from_secs(120);

    // `sh` (the default command) in the running web instance, picked from the list.
    browser
        .find("[data-testid=console-exec-form] select[name=instance] option")
        .await;
    browser.click("Exec in instance").await;
    browser
        .wait_js(
            "the terminal connects",
            "return document.querySelector('[data-testid=terminal-status]')?.dataset.state === 'open'",
            long,
        )
        .await;

    // Keys reach the shell and its output comes back (the shell computes 42, so this is
    // the process's answer, not the terminal echoing what was typed), from inside the
    // instance (its page is there).
    browser
        .type_in_terminal("echo hello-$((6*7)); cat /www/index.html\n")
        .await;
    browser.wait_terminal("hello-42", long).await;
    browser.wait_terminal("runs from the console", long).await;

    // The TTY has the terminal's size, and follows the window.
    let before = browser.terminal_size().await;
    browser.type_in_terminal("stty size\n").await;
    browser.wait_terminal(&before, long).await;
    browser.client().set_window_size(900, 1000).await.unwrap();
    browser
        .wait_js(
            "the terminal narrows with the window",
            &format!(
                "const f = document.querySelector('[data-testid=terminal]'); return `${{f.dataset.rows}} ${{f.dataset.cols}}` !== '{before}'"
            ),
            Duration::from_secs(15),
        )
        .await;
    let after = browser.terminal_size().await;
    browser.type_in_terminal("clear; stty size\n").await;
    browser.wait_terminal(&after, long).await;

    // 24-bit colour is drawn (through the CSSOM: the policy refuses style attributes).
    browser
        .type_in_terminal("printf '\\033[38;2;10;200;30mtrue-colour\\033[0m\\n'\n")
        .await;
    browser
        .wait_js(
            "the 24-bit colour is applied",
            "return [...document.querySelectorAll('[data-testid=terminal] .xterm-rows span')]
               .some(s => s.textContent === 'true-colour' && getComputedStyle(s).color === 'rgb(10, 200, 30)')",
            Duration::from_secs(15),
        )
        .await;
    browser.screenshot("terminal").await;

    // The exit code ends the session.
    browser.type_in_terminal("exit 3\n").await;
    browser
        .wait_text("[data-testid=terminal-status]", "exited with code 3", long)
        .await;
    browser.wait_terminal("[exited with code 3]", long).await;
    assert_eq!(browser.count("[data-testid=terminal-disconnect]").await, 0);
    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_terminal_runs_echo_in_an_interactive_run_and_records_its_exit_code() {
    let daemon = TestDaemon::start().await;
    let project_id = deployed_busybox(&daemon, "shell").await;
    let browser = Browser::start(&daemon).await;
    open_signed_in(
        &browser,
        &daemon,
        &format!("/projects/{project_id}/console"),
    )
    .await;
    let long = Duration::from_secs(120);

    // An interactive run of `sh` (the default command) in a new container.
    browser.find("[data-testid=console-run-form]").await;
    browser.click("Open console").await;
    browser
        .wait_js(
            "the terminal connects",
            "return document.querySelector('[data-testid=terminal-status]')?.dataset.state === 'open'",
            long,
        )
        .await;
    let run_id = browser
        .find("[data-testid=terminal-about] a")
        .await
        .text()
        .await
        .unwrap();
    assert!(run_id.starts_with("run_"), "{run_id}");
    browser.type_in_terminal("echo hello-$((6*7))\n").await;
    browser.wait_terminal("hello-42", long).await;
    browser.type_in_terminal("exit 3\n").await;
    browser
        .wait_text("[data-testid=terminal-status]", "exited with code 3", long)
        .await;

    // The run is recorded with its command and exit code, and listed.
    let run = run_json(&daemon, &run_id).await;
    assert_eq!(run["interactive"], true, "{run}");
    assert_eq!(run["command"], json!(["sh"]), "{run}");
    crate::support::wait_until(long, "the interactive run records its exit", || async {
        run_json(&daemon, &run_id).await["exitCode"] == 3
    })
    .await;
    browser.goto(&format!("/projects/{project_id}/runs")).await;
    browser
        .wait_text(
            &format!("[data-testid=run-history] tr[data-run='{run_id}']"),
            "interactive",
            Duration::from_secs(30),
        )
        .await;

    // An interactive run started elsewhere waits for its terminal; its page attaches one.
    let start_pending = |command: Value| {
        let daemon = &daemon;
        let project_id = &project_id;
        async move {
            let run = daemon
                .post(
                    &format!("/v1/projects/{project_id}/runs"),
                    &daemon.admin_token,
                    json!({ "command": command, "interactive": true }),
                )
                .await
                .expect(201)
                .body;
            assert_eq!(run["status"], "pending", "{run}");
            run["runId"].as_str().unwrap().to_owned()
        }
    };
    let waiting = start_pending(json!(["sh", "-c", "echo attached-from-its-page; exit 5"])).await;
    browser
        .goto(&format!("/projects/{project_id}/runs/{waiting}"))
        .await;
    browser.click("Attach a terminal").await;
    browser.wait_terminal("attached-from-its-page", long).await;
    browser
        .wait_text("[data-testid=terminal-status]", "exited with code 5", long)
        .await;

    // A waiting run canceled elsewhere: its page follows, and offers no terminal any more.
    let gone = start_pending(json!(["sh"])).await;
    browser
        .goto(&format!("/projects/{project_id}/runs/{gone}"))
        .await;
    browser.control("Attach a terminal").await;
    daemon
        .post(
            &format!("/v1/runs/{gone}/cancel"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(200);
    browser
        .wait_text("[data-testid=run-status]", "canceled", long)
        .await;
    browser
        .wait_js(
            "the attach button leaves",
            "return ![...document.querySelectorAll('main button')].some(b => b.textContent === 'Attach a terminal')",
            Duration::from_secs(15),
        )
        .await;
    browser.close().await;
    cleanup(&project_id).await;
}

#[tokio::test]
async fn console_jobs_list_shows_a_job_runs_it_now_and_disables_it() {
    let daemon = TestDaemon::start().await;
    let project_id = deployed_busybox(&daemon, "nightly").await;
    daemon
        .post(
            &format!("/v1/projects/{project_id}/jobs"),
            &daemon.admin_token,
            json!({
                "name": "digest",
                "schedule": "0 3 * * *",
                "command": ["sh", "-c", "echo digest sent"],
                "timeoutSecs": 600,
            }),
        )
        .await
        .expect(201);
    let browser = Browser::start(&daemon).await;
    open_signed_in(&browser, &daemon, &format!("/projects/{project_id}/jobs")).await;
    let long = Duration::from_secs(120);

    let row = "[data-testid=job-list] tr[data-job=digest]";
    browser
        .wait_text(row, "0 3 * * *", Duration::from_secs(30))
        .await;
    let text = browser.find(row).await.text().await.unwrap();
    assert!(text.contains("enabled"), "{text}");
    assert!(text.contains("never ran"), "{text}");

    // Run now: the run's page shows the job's output.
    browser.click("Run now").await;
    browser
        .wait_js(
            "the run's page opens",
            "return /\\/runs\\/run_[^/]+$/.test(location.pathname)",
            Duration::from_secs(30),
        )
        .await;
    let run_id = run_id_of(&browser.path().await);
    browser
        .wait_text("[data-testid=run-output]", "digest sent", long)
        .await;
    browser
        .wait_text("[data-testid=run-status]", "succeeded", long)
        .await;

    // Back on the list: the last run, linked; then disable, which the API records.
    browser.goto(&format!("/projects/{project_id}/jobs")).await;
    browser
        .wait_text(&format!("{row} [data-testid=job-last-run]"), &run_id, long)
        .await;
    browser
        .wait_text(
            &format!("{row} [data-testid=job-last-run]"),
            "succeeded",
            long,
        )
        .await;
    browser.click("Disable").await;
    browser
        .wait_js(
            "the job shows disabled",
            "return document.querySelector('[data-testid=job-list] tr[data-job=digest]')?.dataset.enabled === 'false'",
            Duration::from_secs(15),
        )
        .await;
    let job = daemon
        .get(
            &format!("/v1/projects/{project_id}/jobs/digest"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(job["enabled"], false, "{job}");
    browser.close().await;
    cleanup(&project_id).await;
}
