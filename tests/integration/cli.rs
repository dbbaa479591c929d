//! The real `cantila` binary: admin commands on the data dir while the daemon runs, and the
//! API client commands against the daemon.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::TestDaemon;

/// Runs the binary off the async threads (the daemon shares this runtime).
pub async fn cantila(args: Vec<String>, envs: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cantila"))
            .args(&args)
            .env_remove("CANTILA_TOKEN")
            .env_remove("CANTILA_URL")
            .env_remove("CANTILA_DATA_DIR")
            .env_remove("CANTILA_CONFIG")
            .envs(envs)
            .output()
            .expect("run cantila")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[tokio::test]
async fn admin_commands_work_while_the_daemon_runs() {
    let daemon = TestDaemon::start().await;
    let data_dir = daemon.data_dir().display().to_string();

    let out = cantila(
        args(&["admin", "account", "create", "bob", "--data-dir", &data_dir]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("acc_"));
    let out = cantila(
        args(&["admin", "account", "create", "bob", "--data-dir", &data_dir]),
        vec![],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("taken"), "{}", stderr(&out));

    let out = cantila(
        args(&[
            "admin",
            "token",
            "create",
            "--account",
            "bob",
            "--scope",
            "deploy",
            "--name",
            "laptop",
            "--data-dir",
            &data_dir,
        ]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out);
    assert!(
        token.starts_with("sk_live_") && !token.contains(char::is_whitespace),
        "only the token: {token}"
    );

    // The running daemon accepts it at once.
    let me = daemon.get("/v1/account", &token).await.expect(200).body;
    assert_eq!(
        (me["handle"].as_str(), me["scope"].as_str()),
        (Some("bob"), Some("deploy"))
    );

    let out = cantila(
        args(&[
            "admin",
            "token",
            "list",
            "--account",
            "bob",
            "--json",
            "--data-dir",
            &data_dir,
        ]),
        vec![],
    )
    .await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert!(!stdout(&out).contains(&token));
    let out = cantila(
        args(&[
            "admin",
            "token",
            "revoke",
            "--account",
            "bob",
            &id,
            "--data-dir",
            &data_dir,
        ]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The daemon keeps checked tokens in memory and reads each again every 5 s, so a token
    // revoked beside it (not through its API) is refused within that: wait for the 401.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let status = daemon.get("/v1/account", &token).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(
            status, 200,
            "a revoked token answers 200 until refused, then 401"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "a token revoked with `cantila admin token revoke` is still accepted after 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let out = cantila(
        args(&[
            "admin",
            "token",
            "create",
            "--account",
            "nobody",
            "--scope",
            "read",
            "--data-dir",
            &data_dir,
        ]),
        vec![],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
}

#[tokio::test]
async fn client_commands_drive_the_api() {
    let daemon = TestDaemon::start().await;
    let url = format!("http://{}", daemon.api);
    let env = || {
        vec![
            ("CANTILA_URL", url.clone()),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ]
    };

    let out = cantila(
        args(&["projects", "create", "site", "--runtime", "static"]),
        env(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("site.admin.test.local"),
        "{}",
        stdout(&out)
    );

    let out = cantila(args(&["projects", "list", "--json"]), env()).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["projects"][0]["name"], "site");
    let out = cantila(args(&["projects", "list"]), env()).await;
    let table = stdout(&out);
    assert!(
        table.starts_with("ID") && table.contains("site") && table.contains("created"),
        "{table}"
    );

    let out = cantila(args(&["projects", "get", "site", "--json"]), env()).await;
    let project: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(project["runtime"], "static");

    // An API error: non-zero exit and the API's message.
    let out = cantila(args(&["projects", "create", "site"]), env()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already exists") && stderr(&out).contains("409"),
        "{}",
        stderr(&out)
    );
    let out = cantila(args(&["projects", "create", "Bad_Name"]), env()).await;
    assert!(stderr(&out).contains("invalid"), "{}", stderr(&out));

    let out = cantila(args(&["tokens", "create", "--scope", "read"]), env()).await;
    let read_token = stdout(&out);
    assert!(read_token.starts_with("sk_live_"));
    let out = cantila(
        args(&["whoami", "--token", &read_token, "--url", &url]),
        vec![],
    )
    .await;
    assert!(stdout(&out).contains("scope read"), "{}", stdout(&out));
    let out = cantila(args(&["tokens", "list", "--json"]), env()).await;
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 2);

    let out = cantila(args(&["projects", "delete", "site"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cantila(args(&["projects", "get", "site"]), env()).await;
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_client_falls_back_to_the_admin_token_file_and_explains_failures() {
    let daemon = TestDaemon::start().await;
    let url = format!("http://{}", daemon.api);
    let data_dir = daemon.data_dir().display().to_string();
    let out = cantila(
        args(&["whoami", "--url", &url, "--data-dir", &data_dir]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("admin"), "{}", stdout(&out));

    let out = cantila(
        args(&["whoami", "--url", &url, "--data-dir", "/nonexistent"]),
        vec![],
    )
    .await;
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));

    let out = cantila(
        args(&[
            "whoami",
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "sk_live_x",
        ]),
        vec![],
    )
    .await;
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[tokio::test]
async fn deploy_commands_connect_deploy_follow_and_list() {
    let daemon = TestDaemon::start().await;
    let url = format!("http://{}", daemon.api);
    let env = || {
        vec![
            ("CANTILA_URL", url.clone()),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ]
    };
    let files = crate::deploys::busybox_app("from the cli\n");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = crate::deploys::Repo::new(&borrowed);
    let repo_path = repo.path().display().to_string();

    let out = cantila(args(&["projects", "create", "clidemo"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cantila(
        args(&["git", "connect", "clidemo", &repo_path, "--branch", "main"]),
        env(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("whsec_"),
        "the secret is shown once: {}",
        stdout(&out)
    );

    let out = cantila(args(&["plan", "clidemo", "--json"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["builder"], "dockerfile");

    let out = cantila(args(&["env", "set", "clidemo", "GREETING=hej"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("next deploy"), "{}", stdout(&out));

    let out = cantila(args(&["deploy", "clidemo", "--follow"]), env()).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("FROM "),
        "the build log is shown: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("==> running"),
        "progress is shown: {}",
        stderr(&out)
    );

    let out = cantila(args(&["deploys", "clidemo"]), env()).await;
    let table = stdout(&out);
    assert!(
        table.starts_with("ID") && table.contains("running"),
        "{table}"
    );
    let out = cantila(args(&["env", "list", "clidemo"]), env()).await;
    assert!(
        stdout(&out).contains("GREETING") && !stdout(&out).contains("next deploy"),
        "{}",
        stdout(&out)
    );

    // A second release, then a rollback to the first, followed live.
    repo.commit(&[("www/index.html", "second release\n")], "second");
    let out = cantila(args(&["deploy", "clidemo", "--follow"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cantila(args(&["rollback", "clidemo", "--follow"]), env()).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("no rebuild"), "{}", stdout(&out));

    let out = cantila(args(&["scale", "clidemo", "--instances", "2"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("web=2"), "{}", stdout(&out));
    let out = cantila(args(&["instances", "clidemo"]), env()).await;
    let table = stdout(&out);
    assert_eq!(
        table.lines().filter(|l| l.contains("healthy")).count(),
        2,
        "{table}"
    );
    let out = cantila(args(&["scale", "clidemo", "--size", "giant"]), env()).await;
    assert!(
        !out.status.success() && stderr(&out).contains("nano"),
        "{}",
        stderr(&out)
    );

    let out = cantila(args(&["domains", "add", "clidemo", "www.cli.test"]), env()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cantila(args(&["domains", "list", "clidemo"]), env()).await;
    assert!(
        stdout(&out).contains("www.cli.test") && stdout(&out).contains("alias"),
        "{}",
        stdout(&out)
    );
    let out = cantila(
        args(&["domains", "remove", "clidemo", "www.cli.test"]),
        env(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // A failing deploy exits non-zero with the outcome.
    repo.commit(
        &[("Dockerfile", "FROM busybox:latest\nRUN exit 9\n")],
        "broken",
    );
    let out = cantila(args(&["deploy", "clidemo", "--follow"]), env()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("failed"), "{}", stderr(&out));
    let project = daemon
        .get("/v1/projects/by-handle/admin/clidemo", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    crate::deploys::cleanup(project["id"].as_str().unwrap()).await;
}
