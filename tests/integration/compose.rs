//! Compose files on the real engine: a repository whose `compose.yaml` holds a web, a
//! worker, Redis and PostgreSQL is planned (services, order, ignored keys), deploys with
//! each service started after those it depends on are ready, and its web answers through
//! the edge with what the worker wrote into Redis; a file with refused keys is answered
//! 422 naming each key and why, and its deploy fails before anything starts.

use serde_json::{json, Value};

use crate::{
    deploys::{events_text, parse_sse, Repo},
    support::{docker, TestDaemon},
};

/// The web: busybox's httpd, with a CGI script that reads the key the worker set in Redis.
const WEB_DOCKERFILE: &str = "FROM busybox:latest\nCOPY www /www\nRUN chmod +x /www/cgi-bin/*\n\
EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

const VALUE_CGI: &str = "#!/bin/sh\necho 'Content-Type: text/plain'\necho ''\n\
printf 'GET compose-worker\\r\\n' | nc -w 1 redis 6379 | tr -d '\\r' | tail -n 1\n";

/// The worker's image records its build arg, to show the build's args reach the build.
const WORKER_DOCKERFILE: &str =
    "FROM busybox:latest\nARG MARK=unset\nRUN echo \"$MARK\" > /mark\nCMD [\"sleep\", \"1000000\"]\n";

/// The worker writes into Redis once, at its start: the value is there only if Redis was
/// up when the worker started, which `depends_on` promises.
const COMPOSE: &str = r#"
x-cantila:
  public: web
services:
  web:
    build: ./web
    ports: ["8080"]
    environment:
      GREETING: hello
    depends_on:
      redis: {condition: service_healthy}
      db: {condition: service_healthy}
      worker: {condition: service_started}
  worker:
    build:
      context: ./worker
      args: {MARK: "built-by-compose"}
    environment:
      VALUE: ${WORKER_VALUE:-unset}
    command: ["sh", "-c", "printf 'SET compose-worker %s\\r\\n' \"$$VALUE\" | nc -w 1 redis 6379; exec sleep 1000000"]
    depends_on: [redis, db]
    container_name: ignored-name
  redis:
    image: redis:7
    command: ["redis-server", "--appendonly", "yes", "--protected-mode", "no"]
    volumes: ["redis_data:/data"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 1s
      timeout: 2s
      retries: 60
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: ${DB_PASSWORD:-devpass}
    volumes: ["pg_data:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres -h 127.0.0.1"]
      interval: 1s
      timeout: 2s
      retries: 100
    shm_size: 256m
volumes:
  redis_data:
  pg_data:
"#;

fn stack_repo() -> Repo {
    Repo::new(&[
        ("compose.yaml", COMPOSE),
        ("web/Dockerfile", WEB_DOCKERFILE),
        ("web/www/index.html", "compose web\n"),
        ("web/www/cgi-bin/value", VALUE_CGI),
        ("worker/Dockerfile", WORKER_DOCKERFILE),
        ("README.md", "a compose stack\n"),
    ])
}

/// Where in the deploy's log a line containing `needle` first appears.
fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no log line contains {needle:?}:\n{}", lines.join("\n")))
}

async fn log_lines(daemon: &TestDaemon, deploy_id: &str) -> Vec<String> {
    parse_sse(&events_text(daemon, deploy_id).await)
        .into_iter()
        .filter(|(kind, _, _)| kind == "log")
        .filter_map(|(_, _, data)| data["line"].as_str().map(str::to_owned))
        .collect()
}

/// The engine's objects of a project: containers and volumes carrying its label.
fn project_objects(project_id: &str) -> Vec<String> {
    let filter = format!("label=cantila.project={project_id}");
    let mut found = Vec::new();
    for args in [
        vec!["ps", "-aq", "--filter", filter.as_str()],
        vec!["volume", "ls", "-q", "--filter", filter.as_str()],
    ] {
        found.extend(
            docker(None, &args)
                .unwrap()
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    found
}

#[tokio::test]
async fn a_compose_stack_is_planned_deploys_in_dependency_order_and_answers_through_the_edge() {
    let daemon = TestDaemon::start().await;
    let repo = stack_repo();
    let (project, _) = daemon.connected_project("stack", &repo).await;
    daemon
        .post(
            &format!("/v1/projects/{project}/env"),
            &daemon.admin_token,
            json!({ "vars": { "WORKER_VALUE": "hello-from-worker" } }),
        )
        .await
        .expect(200);

    // The plan: services in the order they start, the public one last, what each is made
    // from, and the keys that have no effect here; nothing runs.
    let plan = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "projectId": project }),
        )
        .await
        .expect(200)
        .body;
    let compose = &plan["compose"];
    assert_eq!(compose["file"], "compose.yaml", "{plan}");
    assert_eq!(compose["public"], json!({ "service": "web", "port": 8080 }));
    assert_eq!(compose["order"], json!(["db", "redis", "worker", "web"]));
    assert_eq!(compose["volumes"], json!(["pg-data", "redis-data"]));
    let service = |name: &str| -> Value {
        compose["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(service("redis")["image"], "redis:7");
    assert_eq!(service("worker")["build"]["context"], "worker");
    assert_eq!(
        service("worker")["build"]["args"]["MARK"],
        "built-by-compose"
    );
    assert_eq!(service("worker")["envKeys"], json!(["VALUE"]));
    assert_eq!(
        service("db")["volumes"],
        json!([{ "volume": "pg-data", "path": "/var/lib/postgresql/data", "readOnly": false }])
    );
    assert_eq!(service("web")["public"], true);
    let ignored: Vec<&str> = compose["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert!(
        ignored.contains(&"services.worker.container_name"),
        "{ignored:?}"
    );
    assert!(ignored.contains(&"services.db.shm_size"), "{ignored:?}");
    assert_eq!(compose["refused"], json!([]));
    assert_eq!(plan["build"]["rootDir"], "web");
    assert!(
        plan["envKeys"]
            .as_array()
            .unwrap()
            .contains(&json!("GREETING")),
        "{plan}"
    );
    assert!(
        !plan.to_string().contains("hello-from-worker"),
        "env values stay out of the plan"
    );
    assert!(
        project_objects(&project).is_empty(),
        "the plan started nothing"
    );

    let deploy = daemon.deploy(&project, None).await;
    let deploy_id = deploy["id"].as_str().unwrap();
    let lines = log_lines(&daemon, deploy_id).await;
    assert_eq!(
        deploy["status"],
        "running",
        "{deploy}\n{}",
        lines.join("\n")
    );

    // depends_on: the worker starts only after Redis and PostgreSQL are ready, and the web
    // is released after every service.
    let worker_starts = position(&lines, "starting service worker");
    assert!(position(&lines, "service redis is ready") < worker_starts);
    assert!(position(&lines, "service db is ready") < worker_starts);
    let released = lines
        .iter()
        .rposition(|line| line.contains("service worker is ready"))
        .unwrap();
    let web_started = position(&lines, "starting web instance");
    assert!(
        released < web_started,
        "the public release starts after the services:\n{}",
        lines.join("\n")
    );

    // The web answers through the edge with what the worker wrote into Redis at its start.
    let host = "stack.admin.test.local";
    let (status, body) = daemon.edge_get(host, "/").await;
    assert_eq!((status, body.as_str()), (200, "compose web\n"));
    let (status, body) = daemon.edge_get(host, "/cgi-bin/value").await;
    assert_eq!(
        (status, body.trim()),
        (200, "hello-from-worker"),
        "the worker reached Redis at its start"
    );

    // The services run with their labels, and the worker's image was built with its args.
    let services = daemon
        .get(
            &format!("/v1/projects/{project}/services"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let listed: Vec<(&str, &str)> = services["services"]
        .as_array()
        .or_else(|| services.as_array())
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    for name in ["db", "redis", "worker"] {
        assert!(listed.contains(&(name, "compose")), "{services}");
    }
    let worker = docker(
        None,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=cantila.project={project}"),
            "--filter",
            "label=cantila.service=worker",
        ],
    )
    .unwrap();
    let worker = worker
        .split_whitespace()
        .next()
        .expect("a worker container");
    assert_eq!(
        docker(None, &["exec", worker, "cat", "/mark"])
            .unwrap()
            .trim(),
        "built-by-compose"
    );

    // A redeploy of the same commit keeps the services running (same image ids, same
    // settings): only the web is released again.
    let started_before = docker(None, &["inspect", "-f", "{{.State.StartedAt}}", worker]).unwrap();
    let again = daemon.deploy(&project, None).await;
    assert_eq!(again["status"], "running", "{again}");
    let started_after = docker(None, &["inspect", "-f", "{{.State.StartedAt}}", worker]).unwrap();
    assert_eq!(
        started_before, started_after,
        "the worker was not restarted"
    );
}

#[tokio::test]
async fn refused_compose_keys_are_named_in_a_422_and_nothing_starts() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[
        (
            "compose.yaml",
            "services:\n  web:\n    image: busybox:latest\n    ports: [\"8080:80\"]\n    privileged: true\n    volumes: [\"/etc:/host-etc\", \"data:/data\"]\n  helper:\n    image: busybox:latest\n    network_mode: host\n    cap_add: [SYS_ADMIN]\nvolumes:\n  data:\n",
        ),
        ("README.md", "refused\n"),
    ]);
    let (project, _) = daemon.connected_project("refused", &repo).await;
    let res = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "projectId": project }),
        )
        .await
        .expect(422);
    let message = res.error_message().to_owned();
    for key in [
        "`services.web.ports[0]`: binds `8080` on the host",
        "`services.web.privileged`",
        "`services.web.volumes[0]`: `/etc` is a path of the host",
        "`services.helper.network_mode`",
        "`services.helper.cap_add`",
    ] {
        assert!(message.contains(key), "{key} missing from {message}");
    }
    assert!(!message.contains("volumes[1]"), "{message}");

    let deploy = daemon.deploy(&project, None).await;
    assert_eq!(deploy["status"], "failed", "{deploy}");
    assert_eq!(deploy["failedStep"], "plan", "{deploy}");
    assert!(
        deploy["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`services.web.privileged`"),
        "{deploy}"
    );
    assert_eq!(
        project_objects(&project),
        Vec::<String>::new(),
        "no container and no volume of the project"
    );
    let services = daemon
        .get(
            &format!("/v1/projects/{project}/services"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert!(
        services["services"]
            .as_array()
            .or_else(|| services.as_array())
            .is_some_and(|list| list.is_empty()),
        "{services}"
    );
}
