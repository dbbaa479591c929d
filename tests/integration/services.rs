//! Services beside the app, on the real engine: a service from an image is reached by its
//! name from the project's own containers (a one-off run, a web instance) and from no
//! other project's container, by name or by address; it survives an app redeploy and a
//! daemon restart untouched; a change to one service replaces only its containers; a
//! service's volume keeps its data and is deleted only on purpose; another account's
//! services answer 404; bad input is a 4xx naming the field.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    deploys::Repo,
    networks::{reaches_port, web_instances},
    runs::follow,
    support::{docker, wait_for, TestDaemon},
};

/// A service serving HTTP on 6379 with busybox's httpd: `pong` at `/`, and what a file on
/// its volume says at `/note.txt` when it has one.
fn pong_service(name: &str) -> Value {
    json!({
        "name": name,
        "image": "busybox",
        "command": ["sh", "-c", format!("echo {name} is up; mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 6379 -h /www")],
        "env": { "SECRET_TOKEN": "s3cr3t-value" },
        "health": { "type": "tcp" },
        "port": 6379
    })
}

/// Fetches `/` from the host `cache` on 6379 inside a container and prints the body's last
/// line. (nc rather than wget: Debian's busybox wget crashes on exit.)
const FETCH_CACHE: &str =
    "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc cache 6379 | tail -n 1";

/// Waits until the service reads `ready`; returns its view.
async fn ready(daemon: &TestDaemon, token: &str, project_id: &str, name: &str) -> Value {
    wait_for(
        Duration::from_secs(90),
        "the service to be ready",
        || async {
            let view = daemon
                .get(&format!("/v1/projects/{project_id}/services/{name}"), token)
                .await
                .expect(200)
                .body;
            (view["state"] == "ready").then_some(view)
        },
    )
    .await
}

/// The ids of the service's containers (any state), sorted.
fn containers_of(project_id: &str, name: &str) -> Vec<String> {
    let out = docker(
        None,
        &[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=cantila.project={project_id}"),
            "--filter",
            &format!("label=cantila.service={name}"),
        ],
    )
    .unwrap();
    let mut ids: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    ids.sort();
    ids
}

/// Runs `script` as a one-off run of the project's release; returns its stdout lines and
/// exit code.
async fn run(daemon: &TestDaemon, project_id: &str, script: &str) -> (Vec<String>, i64) {
    let created = daemon
        .post(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
            json!({ "command": ["sh", "-c", script], "timeoutSecs": 60 }),
        )
        .await
        .expect(201)
        .body;
    let run_id = created["runId"].as_str().unwrap().to_owned();
    let followed = follow(daemon, &run_id, None).await;
    let lines = followed
        .lines
        .into_iter()
        .filter(|(_, stream, _)| stream == "stdout")
        .map(|(_, _, line)| line)
        .collect();
    let ended = followed.ended;
    (lines, ended["exitCode"].as_i64().unwrap_or(-1))
}

#[tokio::test]
async fn a_service_is_reached_by_name_from_its_project_only_and_outlives_releases_and_restarts() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let repo = Repo::busybox("app\n");
    let (project_id, _) = daemon.connected_project("shop", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let (other_id, _) = daemon.connected_project("neighbour", &repo).await;
    let deploy = daemon.deploy(&other_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");

    let created = daemon
        .post(
            &format!("/v1/projects/{project_id}/services"),
            &token,
            pong_service("cache"),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["name"], "cache");
    assert_eq!(created["source"], "api");
    assert_eq!(created["envKeys"], json!(["SECRET_TOKEN"]));
    assert!(
        !created.to_string().contains("s3cr3t-value"),
        "env values are never returned: {created}"
    );
    let view = ready(&daemon, &token, &project_id, "cache").await;
    assert_eq!(view["instances"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["instances"][0]["health"], "healthy", "{view}");
    let first = containers_of(&project_id, "cache");
    assert_eq!(first.len(), 1);

    // Its output is in the project's logs, tagged with its name.
    let logged = wait_for(
        Duration::from_secs(30),
        "the service's log line",
        || async {
            let logs = daemon
                .get(
                    &format!("/v1/projects/{project_id}/logs?service=cache&since=1h"),
                    &token,
                )
                .await
                .expect(200)
                .body;
            let lines = logs["lines"].as_array().cloned().unwrap_or_default();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await;
    assert_eq!(logged[0]["line"], "cache is up", "{logged:?}");
    assert_eq!(logged[0]["service"], "cache", "{logged:?}");
    assert_eq!(logged[0]["process"], "service", "{logged:?}");
    daemon
        .get(
            &format!("/v1/projects/{project_id}/logs?service=Bad_Name"),
            &token,
        )
        .await
        .expect(400);

    // A one-off run of the project reaches it by name.
    let (lines, code) = run(&daemon, &project_id, FETCH_CACHE).await;
    assert_eq!((lines, code), (vec!["pong".to_owned()], 0));
    // So does the project's web instance.
    let own_web = web_instances(&project_id, None).await;
    assert!(reaches_port(&own_web[0], "cache".to_owned(), 6379).await);
    // Another project's container reaches it neither by name nor by address.
    let address = docker(
        None,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &first[0],
        ],
    )
    .unwrap()
    .trim()
    .to_owned();
    let neighbour = web_instances(&other_id, None).await;
    assert!(!reaches_port(&neighbour[0], "cache".to_owned(), 6379).await);
    assert!(!reaches_port(&neighbour[0], address, 6379).await);

    // A second service, to see that a change to one restarts only it.
    daemon
        .post(
            &format!("/v1/projects/{project_id}/services"),
            &token,
            pong_service("queue"),
        )
        .await
        .expect(201);
    ready(&daemon, &token, &project_id, "queue").await;
    let queue = containers_of(&project_id, "queue");

    // An app redeploy leaves both untouched.
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(containers_of(&project_id, "cache"), first);
    assert_eq!(containers_of(&project_id, "queue"), queue);
    let (lines, _) = run(&daemon, &project_id, FETCH_CACHE).await;
    assert_eq!(lines, ["pong"]);

    // A PATCH of one service replaces its container and only its.
    let patched = daemon
        .patch(
            &format!("/v1/projects/{project_id}/services/cache"),
            &token,
            json!({ "env": { "MAXMEMORY": "10mb" } }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["envKeys"], json!(["MAXMEMORY", "SECRET_TOKEN"]));
    let replaced = wait_for(
        Duration::from_secs(60),
        "the cache's replacement",
        || async {
            let now = containers_of(&project_id, "cache");
            (now.len() == 1 && now != first).then_some(now)
        },
    )
    .await;
    ready(&daemon, &token, &project_id, "cache").await;
    assert_eq!(containers_of(&project_id, "queue"), queue);

    // A daemon restart adopts the running containers as they are.
    let daemon = daemon.restart().await;
    let view = ready(&daemon, &token, &project_id, "cache").await;
    assert_eq!(view["instances"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(containers_of(&project_id, "cache"), replaced);
    assert_eq!(containers_of(&project_id, "queue"), queue);
    let (lines, _) = run(&daemon, &project_id, FETCH_CACHE).await;
    assert_eq!(lines, ["pong"]);

    // Deleted, its container goes.
    daemon
        .delete(&format!("/v1/projects/{project_id}/services/queue"), &token)
        .await
        .expect(204);
    assert!(containers_of(&project_id, "queue").is_empty());
    let listed = daemon
        .get(&format!("/v1/projects/{project_id}/services"), &token)
        .await
        .expect(200)
        .body;
    let names: Vec<&str> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cache"]);
}

#[tokio::test]
async fn a_service_volume_keeps_its_data_and_goes_only_on_purpose() {
    let daemon = TestDaemon::start_with(|config| config.metrics.interval_secs = 1).await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("keeper").await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let mut spec = pong_service("store");
    spec["command"] = json!(["sh", "-c", "mkdir -p /data/www && echo pong > /data/www/index.html && date +%s%N >> /data/starts && exec httpd -f -p 6379 -h /data/www"]);
    spec["volumes"] = json!([{ "name": "store-data", "path": "/data" }]);
    daemon
        .post(&format!("/v1/projects/{project_id}/services"), &token, spec)
        .await
        .expect(201);
    ready(&daemon, &token, &project_id, "store").await;
    let volumes = daemon
        .get(&format!("/v1/projects/{project_id}/volumes"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(volumes["volumes"][0]["name"], "store-data", "{volumes}");
    assert_eq!(volumes["volumes"][0]["service"], "store", "{volumes}");

    // Its container is sampled beside the app's instances, tagged with its name.
    let sampled = wait_for(Duration::from_secs(30), "the service's metrics", || async {
        let metrics = daemon
            .get(
                &format!("/v1/projects/{project_id}/metrics?since=5m&step=1m"),
                &token,
            )
            .await
            .expect(200)
            .body;
        let series = metrics["instances"].as_array().cloned().unwrap_or_default();
        let now = metrics["summary"]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!series.is_empty() && !now.is_empty()).then_some((series, now))
    })
    .await;
    assert_eq!(sampled.0[0]["service"], "store", "{sampled:?}");
    assert_eq!(sampled.1[0]["service"], "store", "{sampled:?}");

    // A change restarts it on the same volume: the first start's line is still there.
    let first = containers_of(&project_id, "store");
    daemon
        .patch(
            &format!("/v1/projects/{project_id}/services/store"),
            &token,
            json!({ "env": { "ROUND": "2" } }),
        )
        .await
        .expect(200);
    let second = wait_for(Duration::from_secs(60), "the replacement", || async {
        let now = containers_of(&project_id, "store");
        (now.len() == 1 && now != first).then_some(now)
    })
    .await;
    ready(&daemon, &token, &project_id, "store").await;
    let starts = docker(None, &["exec", &second[0], "cat", "/data/starts"]).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");

    // Its volume is not deleted by the volumes API, nor with the service unless asked.
    let refused = daemon
        .delete(
            &format!("/v1/projects/{project_id}/volumes/store-data"),
            &token,
        )
        .await;
    assert!(
        refused.status == 409 || refused.status == 422,
        "{}",
        refused.text
    );
    let refused = daemon
        .delete(&format!("/v1/projects/{project_id}/services/store"), &token)
        .await
        .expect(409);
    assert!(
        refused.error_message().contains("deleteData"),
        "{}",
        refused.text
    );
    // The project keeps its data from deletion as any volume does.
    daemon
        .delete(&format!("/v1/projects/{project_id}"), &token)
        .await
        .expect(409);
    daemon
        .delete(
            &format!("/v1/projects/{project_id}/services/store?deleteData=true"),
            &token,
        )
        .await
        .expect(204);
    assert!(containers_of(&project_id, "store").is_empty());
    let volume = crate::support::docker(
        None,
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=cantila.volume=store-data",
        ],
    )
    .unwrap();
    assert!(volume.trim().is_empty(), "{volume}");
    let volumes = daemon
        .get(&format!("/v1/projects/{project_id}/volumes"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(volumes["volumes"], json!([]));
}

#[tokio::test]
async fn bad_service_input_is_a_4xx_naming_the_field_and_other_accounts_see_404() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("checked").await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/projects/{project_id}/services");
    let cases = [
        (json!({ "name": "Bad_Name", "image": "busybox" }), "name"),
        (json!({ "name": "web", "image": "busybox" }), "web"),
        (json!({ "name": "cache" }), "image"),
        (
            json!({ "name": "cache", "image": "busybox", "addon": "redis" }),
            "addon",
        ),
        (json!({ "name": "cache", "image": "bad image!" }), "image"),
        (
            json!({ "name": "cache", "image": "busybox", "count": 11 }),
            "count",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "port": 70000 }),
            "port",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "health": { "type": "command" } }),
            "health.command",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "health": { "type": "tcp" } }),
            "health.port",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "env": { "1BAD": "x" } }),
            "env",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "volumes": [{ "name": "d", "path": "/proc/x" }] }),
            "volumes",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "dependsOn": ["cache"] }),
            "itself",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "size": "gigantic" }),
            "size",
        ),
        (
            json!({ "name": "cache", "image": "busybox", "privileged": true }),
            "privileged",
        ),
    ];
    for (body, needle) in cases {
        let res = daemon.post(&path, &token, body.clone()).await;
        assert!(
            (400..500).contains(&res.status) && res.status != 404,
            "{body}: {} {}",
            res.status,
            res.text
        );
        assert!(res.text.contains(needle), "{body}: {}", res.text);
    }
    // Nothing was made.
    let listed = daemon.get(&path, &token).await.expect(200).body;
    assert_eq!(listed["services"], json!([]));

    daemon
        .post(
            &path,
            &token,
            json!({ "name": "cache", "image": "busybox", "count": 0 }),
        )
        .await
        .expect(201);
    let stopped = daemon
        .get(&format!("{path}/cache"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    daemon
        .post(
            &path,
            &token,
            json!({ "name": "cache", "image": "busybox" }),
        )
        .await
        .expect(409);
    // An image that is not here and cannot be pulled: the service reads failed, with why.
    daemon
        .post(
            &path,
            &token,
            json!({ "name": "ghost", "image": "registry.invalid/cantila/no-such-image:1" }),
        )
        .await
        .expect(201);
    let failed = wait_for(Duration::from_secs(60), "the service to fail", || async {
        let view = daemon
            .get(&format!("{path}/ghost"), &token)
            .await
            .expect(200)
            .body;
        (view["state"] == "failed").then_some(view)
    })
    .await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("registry.invalid"),
        "{failed}"
    );
    daemon
        .delete(&format!("{path}/ghost"), &token)
        .await
        .expect(204);
    daemon
        .patch(&format!("{path}/cache"), &token, json!({ "count": 11 }))
        .await
        .expect(422);
    daemon
        .get(&format!("{path}/nope"), &token)
        .await
        .expect(404);
    daemon
        .get(&format!("{path}/NOPE"), &token)
        .await
        .expect(404);

    // A read token reads and does not change.
    let read = daemon.token("read").await;
    daemon.get(&path, &read).await.expect(200);
    daemon
        .post(&path, &read, json!({ "name": "other", "image": "busybox" }))
        .await
        .expect(403);

    // Another account's token sees none of it.
    let stranger = daemon.other_account_token("stranger", cantila::names::Scope::Admin);
    daemon.get(&path, &stranger).await.expect(404);
    daemon
        .get(&format!("{path}/cache"), &stranger)
        .await
        .expect(404);
    daemon
        .patch(&format!("{path}/cache"), &stranger, json!({ "count": 1 }))
        .await
        .expect(404);
    daemon
        .delete(&format!("{path}/cache"), &stranger)
        .await
        .expect(404);
    daemon
        .post(
            &path,
            &stranger,
            json!({ "name": "mine", "image": "busybox" }),
        )
        .await
        .expect(404);
}

#[tokio::test]
async fn the_cli_adds_lists_shows_the_logs_of_and_removes_a_service() {
    use crate::cli::cantila;
    let daemon = TestDaemon::start().await;
    daemon.create_project("clied").await;
    let env = || {
        vec![
            ("CANTILA_URL", format!("http://{}", daemon.api)),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ]
    };
    let run = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = cantila(
        run(&[
            "services",
            "add",
            "clied",
            "--image",
            "busybox",
            "--name",
            "echo",
            "--env",
            "GREETING=hello",
            "--port",
            "7000",
            "--health",
            "tcp",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING from echo\"; exec httpd -f -p 7000",
        ]),
        env(),
    )
    .await;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("service echo is ready"), "{said}");

    let out = cantila(run(&["services", "list", "clied"]), env()).await;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("echo") && table.contains("ready") && table.contains("1/1"),
        "{table}"
    );

    let logged = wait_for(Duration::from_secs(30), "the service's line", || async {
        let out = cantila(run(&["services", "logs", "clied", "echo"]), env()).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("hello from echo").then_some(text)
    })
    .await;
    assert!(!logged.contains("error"), "{logged}");

    // A bad flag is refused before anything is sent; an API refusal exits non-zero.
    let out = cantila(
        run(&[
            "services", "add", "clied", "--image", "busybox", "--name", "x", "--env", "NOEQUALS",
        ]),
        env(),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cantila(
        run(&[
            "services", "add", "clied", "--image", "busybox", "--name", "web",
        ]),
        env(),
    )
    .await;
    assert!(!out.status.success());

    let out = cantila(run(&["services", "rm", "clied", "echo"]), env()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cantila(run(&["services", "list", "clied", "--json"]), env()).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["services"], json!([]));
}

#[tokio::test]
async fn a_missing_image_is_pulled_with_the_accounts_registry_credentials() {
    let registry = crate::registry_support::TestRegistry::from_env();
    // The test registry listens on loopback, which these daemons allow.
    let daemon = TestDaemon::start_with(|config| {
        config.git.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let token = daemon.admin_token.clone();
    let installation = daemon.dir.as_ref().unwrap().installation().to_owned();
    let repository = registry.unique_repository("service");
    registry.push_app(&repository, "1", "from the registry\n", &installation);
    let project = daemon.create_project("pulled").await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/projects/{project_id}/services");
    daemon
        .post(
            &path,
            &token,
            json!({
                "name": "app",
                "image": format!("{repository}:1"),
                "health": { "type": "http", "port": 8080, "path": "/" }
            }),
        )
        .await
        .expect(201);
    // Without credentials the registry refuses the pull.
    let failed = wait_for(Duration::from_secs(60), "the refused pull", || async {
        let view = daemon
            .get(&format!("{path}/app"), &token)
            .await
            .expect(200)
            .body;
        (view["state"] == "failed").then_some(view)
    })
    .await;
    assert!(
        failed["error"].as_str().unwrap().contains(&repository),
        "{failed}"
    );
    // With the account's credentials stored, the reconciler's next pass pulls and starts it.
    daemon
        .post(
            "/v1/registries",
            &token,
            json!({ "server": registry.address, "username": registry.user, "password": registry.password }),
        )
        .await
        .expect(201);
    let view = ready(&daemon, &token, &project_id, "app").await;
    assert_eq!(view["instances"][0]["health"], "healthy", "{view}");
}
