//! Add-ons on the real engine, from the local stand-ins of the official images
//! (`scripts/base-images.sh`): a Redis that keeps an app's visit count across an app
//! redeploy and a daemon restart, its password sealed at rest; a PostgreSQL add-on backed
//! up with its own tools, changed, restored and compared; a MariaDB add-on whose
//! DATABASE_URL works from a one-off run, beside a memcached; and the refusals (a second
//! add-on setting the same variables, a database beside a SQL add-on, bad engines).

use std::time::Duration;

use serde_json::{json, Value};

use sha2::{Digest, Sha256};

use crate::{
    backup_s3::{s3_config, s3_endpoint, TestBucket},
    data::{remove_installation_volumes, wait_backup},
    deploys::{app_answer, Repo},
    runs::follow,
    support::{wait_for, TestDaemon},
};

/// The test app: Python's standard library only (Redis spoken over a socket) plus
/// Debian's PyMySQL for the MariaDB check a run makes.
const APP: &str = r#"
import os, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, unquote


def redis(*args):
    url = urlparse(os.environ["REDIS_URL"])
    with socket.create_connection((url.hostname, url.port or 6379), timeout=5) as s:
        reader = s.makefile("rb")

        def call(*words):
            words = [str(w).encode() for w in words]
            s.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
            line = reader.readline()
            kind, rest = line[:1], line[1:].strip()
            if kind == b"-":
                raise RuntimeError(rest.decode())
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else reader.read(n + 2)[:-2].decode()
            return rest.decode()

        if url.password:
            call("AUTH", unquote(url.password))
        return call(*args)


def mariadb():
    import pymysql
    url = urlparse(os.environ["DATABASE_URL"])
    assert url.scheme == "mysql", url.scheme
    connection = pymysql.connect(host=url.hostname, port=url.port or 3306, user=unquote(url.username),
                                 password=unquote(url.password), database=url.path.lstrip("/"))
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT)")
        cursor.execute("INSERT INTO notes (body) VALUES (%s)", ("from a run",))
        connection.commit()
        cursor.execute("SELECT body FROM notes")
        print("mariadb says", [row[0] for row in cursor.fetchall()])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            if self.path == "/visits":
                body = str(redis("INCR", "visits"))
            elif self.path == "/redis-url":
                body = os.environ.get("REDIS_URL", "")
            else:
                body = "ok"
        except Exception as err:
            body = "error: %r" % (err,)
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if sys.argv[1:] == ["mariadb"]:
        mariadb()
    else:
        ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"#;

const DOCKERFILE: &str = "FROM python:3.12-slim\n\
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pymysql && rm -rf /var/lib/apt/lists/*\n\
COPY app.py /app/app.py\n\
EXPOSE 8080\n\
CMD [\"python3\", \"/app/app.py\"]\n";

fn app_repo() -> Repo {
    Repo::new(&[("Dockerfile", DOCKERFILE), ("app.py", APP)])
}

/// Asks the deploy's app for `path` until it answers without an error (it may be
/// starting, or its add-on restarting).
async fn ask(deploy_id: &str, path: &str) -> String {
    wait_for(
        Duration::from_secs(60),
        &format!("the app of {deploy_id} answering {path}"),
        || async {
            app_answer(deploy_id, path)
                .await
                .filter(|answer| !answer.starts_with("error"))
        },
    )
    .await
}

/// Adds an add-on and waits until it is ready; returns its view.
async fn add_ready(daemon: &TestDaemon, project_id: &str, body: Value) -> Value {
    let created = daemon
        .post(
            &format!("/v1/projects/{project_id}/services"),
            &daemon.admin_token,
            body.clone(),
        )
        .await
        .expect(201)
        .body;
    let name = created["name"].as_str().unwrap().to_owned();
    wait_for(
        Duration::from_secs(180),
        &format!("add-on {name} ready"),
        || async {
            let view = daemon
                .get(
                    &format!("/v1/projects/{project_id}/services/{name}"),
                    &daemon.admin_token,
                )
                .await
                .expect(200)
                .body;
            assert_ne!(view["state"], "failed", "{view}");
            (view["state"] == "ready").then_some(view)
        },
    )
    .await
}

/// Deletes the project's add-ons with their data (so nothing is left on the engine).
async fn delete_addons(daemon: &TestDaemon, project_id: &str, names: &[&str]) {
    for name in names {
        daemon
            .delete(
                &format!("/v1/projects/{project_id}/services/{name}?deleteData=true"),
                &daemon.admin_token,
            )
            .await
            .expect(204);
    }
}

fn store_contains(daemon: &TestDaemon, needle: &str) -> bool {
    let mut bytes = std::fs::read(daemon.data_dir().join("cantila.db")).unwrap();
    if let Ok(wal) = std::fs::read(daemon.data_dir().join("cantila.db-wal")) {
        bytes.extend(wal);
    }
    bytes
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_redis_addon_keeps_the_visit_count_across_a_redeploy_and_a_daemon_restart() {
    let daemon = TestDaemon::start().await;
    let repo = app_repo();
    let (id, _) = daemon.connected_project("counter", &repo).await;
    let token = daemon.admin_token.clone();
    let services = format!("/v1/projects/{id}/services");

    let redis = add_ready(&daemon, &id, json!({ "addon": "redis" })).await;
    assert_eq!(redis["name"], "redis", "{redis}");
    assert_eq!(redis["source"], "addon");
    assert_eq!(redis["image"], "redis:7");
    assert_eq!(redis["addon"], json!({ "engine": "redis", "version": "7" }));
    assert_eq!(redis["connection"], json!({ "envKeys": ["REDIS_URL"] }));
    assert_eq!(
        redis["volumes"],
        json!([{ "name": "redis-data", "path": "/data" }])
    );
    assert_eq!(redis["health"]["type"], "command");

    // A second Redis would overwrite REDIS_URL; bad engines and versions name the field.
    let second = daemon
        .post(
            &services,
            &token,
            json!({ "addon": "redis", "name": "cache" }),
        )
        .await
        .expect(409);
    assert!(
        second.error_message().contains("REDIS_URL"),
        "{}",
        second.text
    );
    for (body, field) in [
        (json!({ "addon": "mongodb" }), "addon `mongodb`"),
        (
            json!({ "addon": { "engine": "postgres", "version": "16 rm" } }),
            "addon.version",
        ),
        (
            json!({ "addon": { "engine": "redis", "version": "6.2" } }),
            "too old",
        ),
        (
            json!({ "addon": "postgres", "command": ["sh"] }),
            "`command`",
        ),
        (json!({ "addon": "redis", "image": "redis:7" }), "not both"),
    ] {
        let res = daemon
            .post(&services, &token, body.clone())
            .await
            .expect(422);
        assert!(res.error_message().contains(field), "{body}: {}", res.text);
    }

    let deploy = daemon.deploy(&id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let deploy_id = deploy["id"].as_str().unwrap().to_owned();
    assert_eq!(ask(&deploy_id, "/visits").await, "1");
    assert_eq!(ask(&deploy_id, "/visits").await, "2");

    // The password is in the app's env, and sealed in the store.
    let url = ask(&deploy_id, "/redis-url").await;
    let password = url
        .strip_prefix("redis://:")
        .and_then(|rest| rest.strip_suffix("@redis:6379"))
        .unwrap_or_else(|| panic!("REDIS_URL {url}"));
    assert_eq!(password.len(), 32, "{url}");
    assert!(
        !store_contains(&daemon, password),
        "the password is in the store in clear"
    );
    let listed = daemon.get(&services, &token).await.expect(200);
    assert!(!listed.text.contains(password), "{}", listed.text);

    // A new release of the app gets the same add-on; the count goes on.
    repo.commit(&[("README", "second release\n")], "second");
    let redeploy = daemon.deploy(&id, None).await;
    assert_eq!(redeploy["status"], "running", "{redeploy}");
    let deploy_id = redeploy["id"].as_str().unwrap().to_owned();
    assert_eq!(ask(&deploy_id, "/visits").await, "3");

    let daemon = daemon.restart().await;
    assert_eq!(ask(&deploy_id, "/visits").await, "4");
    let after = daemon
        .get(
            &format!("/v1/projects/{id}/services/redis"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(after["state"], "ready", "{after}");

    // Backed up as an RDB snapshot; restored with Redis stopped, as the base of its
    // append-only files (which win over a dump.rdb at start).
    let backups = backed_up(&daemon, &id, json!({})).await;
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["engine"], "redis");
    assert_eq!(ask(&deploy_id, "/visits").await, "5");
    daemon
        .post(
            &format!("/v1/backups/{}/restore", backups[0]["id"].as_str().unwrap()),
            &daemon.admin_token,
            json!({ "confirm": "counter" }),
        )
        .await
        .expect(200);
    assert_eq!(
        ask(&deploy_id, "/visits").await,
        "5",
        "the count as backed up, plus one"
    );

    delete_addons(&daemon, &id, &["redis"]).await;
    remove_installation_volumes(&daemon).await;
}

async fn rows(deploy_id: &str) -> Vec<(i64, String)> {
    serde_json::from_str(&ask(deploy_id, "/rows").await).expect("rows as JSON")
}

/// Starts the project's backups (`body` says which) and waits for each; returns them.
async fn backed_up(daemon: &TestDaemon, project_id: &str, body: Value) -> Vec<Value> {
    let started = daemon
        .post(
            &format!("/v1/projects/{project_id}/backups"),
            &daemon.admin_token,
            body,
        )
        .await
        .expect(202)
        .body;
    let mut finished = Vec::new();
    for backup in started["backups"].as_array().unwrap() {
        let backup = wait_backup(daemon, backup["id"].as_str().unwrap()).await;
        assert_eq!(backup["status"], "completed", "{backup}");
        finished.push(backup);
    }
    finished
}

#[tokio::test]
async fn a_postgres_addon_is_backed_up_changed_restored_and_compared() {
    let bucket = TestBucket::create().await;
    let bucket_name = bucket.name();
    let daemon =
        TestDaemon::start_with(|config| s3_config(config, s3_endpoint(), bucket_name)).await;
    let repo = Repo::from_fixture("data-app");
    let (id, _) = daemon.connected_project("pgaddon", &repo).await;
    let token = daemon.admin_token.clone();

    let db = add_ready(
        &daemon,
        &id,
        json!({ "addon": { "engine": "postgres", "version": "16" }, "name": "db" }),
    )
    .await;
    assert_eq!(db["image"], "postgres:16");
    assert_eq!(
        db["connection"]["envKeys"],
        json!([
            "DATABASE_URL",
            "PGHOST",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "PGPASSWORD"
        ])
    );
    // One DATABASE_URL per project: neither a database nor a MariaDB add-on beside it.
    let database = daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &token,
            json!({ "engine": "sqlite" }),
        )
        .await
        .expect(409);
    assert!(
        database.error_message().contains("`db`"),
        "{}",
        database.text
    );
    let mariadb = daemon
        .post(
            &format!("/v1/projects/{id}/services"),
            &token,
            json!({ "addon": "mysql" }),
        )
        .await
        .expect(409);
    assert!(
        mariadb.error_message().contains("DATABASE_URL"),
        "{}",
        mariadb.text
    );

    let deploy = daemon.deploy(&id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let deploy_id = deploy["id"].as_str().unwrap().to_owned();
    for value in ["one", "two"] {
        assert_eq!(
            ask(&deploy_id, &format!("/rows/add?value={value}")).await,
            "added"
        );
    }
    let before = rows(&deploy_id).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // Backed up with pg_dump inside the add-on; its volume is not archived beside it.
    let everything = backed_up(&daemon, &id, json!({})).await;
    assert_eq!(everything.len(), 1, "{everything:?}");
    let backup = &everything[0];
    assert_eq!(backup["kind"], "service", "{backup}");
    assert_eq!(backup["subject"], "db");
    assert_eq!(backup["engine"], "postgres");
    assert!(backup["sizeBytes"].as_i64().unwrap() > 0, "{backup}");
    assert_eq!(backup["sha256"].as_str().unwrap().len(), 64);
    // Copied to S3 like the others, byte for byte.
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let uploaded = wait_for(Duration::from_secs(60), "the dump's copy in S3", || async {
        let seen = wait_backup(&daemon, &backup_id).await;
        (seen["remote"]["status"] == "uploaded").then_some(seen)
    })
    .await;
    let copy = bucket
        .get(uploaded["remote"]["key"].as_str().unwrap())
        .await
        .expect("the object");
    assert_eq!(
        hex::encode(Sha256::digest(&copy)),
        backup["sha256"].as_str().unwrap()
    );
    let by_name = backed_up(&daemon, &id, json!({ "kind": "service", "service": "db" })).await;
    assert_eq!(by_name[0]["subject"], "db");
    let volume = daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &token,
            json!({ "kind": "volume", "volume": "db-data" }),
        )
        .await
        .expect(422);
    assert!(
        volume.error_message().contains("kind: service"),
        "{}",
        volume.text
    );

    // Changed, restored, compared row by row.
    ask(&deploy_id, "/rows/add?value=three").await;
    assert_eq!(rows(&deploy_id).await.len(), 3);
    let restored = daemon
        .post(
            &format!("/v1/backups/{}/restore", backup["id"].as_str().unwrap()),
            &token,
            json!({ "confirm": "pgaddon" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(restored["safetyBackup"]["kind"], "service", "{restored}");
    assert_eq!(
        restored["safetyBackup"]["status"], "completed",
        "{restored}"
    );
    assert_eq!(rows(&deploy_id).await, before, "row by row as backed up");

    // Its data goes only on request, after a final backup.
    let kept = daemon
        .delete(&format!("/v1/projects/{id}/services/db"), &token)
        .await
        .expect(409);
    assert!(kept.error_message().contains("db-data"), "{}", kept.text);
    delete_addons(&daemon, &id, &["db"]).await;
    let listed = daemon
        .get(&format!("/v1/projects/{id}/backups"), &token)
        .await
        .expect(200)
        .body;
    let last = &listed["backups"][0];
    assert_eq!(
        (&last["trigger"], &last["kind"], &last["status"]),
        (&json!("final"), &json!("service"), &json!("completed")),
        "{listed}"
    );
    remove_installation_volumes(&daemon).await;
}

#[tokio::test]
async fn a_mariadb_addon_becomes_ready_and_its_database_url_works_from_a_run() {
    let daemon = TestDaemon::start().await;
    let repo = app_repo();
    let (id, _) = daemon.connected_project("shop", &repo).await;
    let token = daemon.admin_token.clone();

    let mariadb = add_ready(&daemon, &id, json!({ "addon": "mysql" })).await;
    assert_eq!(mariadb["name"], "mariadb", "{mariadb}");
    assert_eq!(mariadb["image"], "mariadb:11");
    assert_eq!(
        mariadb["connection"]["envKeys"],
        json!([
            "DATABASE_URL",
            "MYSQL_HOST",
            "MYSQL_PORT",
            "MYSQL_DATABASE",
            "MYSQL_USER",
            "MYSQL_PASSWORD"
        ])
    );
    // A cache beside it: no password, no volume, ready when its port answers.
    let memcached = add_ready(&daemon, &id, json!({ "addon": "memcached" })).await;
    assert_eq!(memcached["volumes"], json!([]));
    assert_eq!(memcached["health"]["type"], "tcp");

    let deploy = daemon.deploy(&id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let script =
        "python3 /app/app.py mariadb && echo \"${DATABASE_URL#*@}\" && echo \"$MEMCACHE_SERVERS\"";
    let created = daemon
        .post(
            &format!("/v1/projects/{id}/runs"),
            &token,
            json!({ "command": ["sh", "-c", script], "timeoutSecs": 120 }),
        )
        .await
        .expect(201)
        .body;
    let followed = follow(&daemon, created["runId"].as_str().unwrap(), None).await;
    let stdout: Vec<&str> = followed
        .lines
        .iter()
        .filter(|(_, stream, _)| stream == "stdout")
        .map(|(_, _, line)| line.as_str())
        .collect();
    assert_eq!(
        stdout,
        [
            "mariadb says ['from a run']",
            "mariadb:3306/app",
            "memcached:11211"
        ],
        "{:?}",
        followed.lines
    );
    assert_eq!(followed.ended["exitCode"], 0, "{}", followed.ended);

    // Backed up with mariadb-dump; the cache is not backed up.
    let backups = backed_up(&daemon, &id, json!({})).await;
    let kinds: Vec<(&str, &str)> = backups
        .iter()
        .map(|b| {
            (
                b["subject"].as_str().unwrap(),
                b["engine"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("mariadb", "mariadb")], "{backups:?}");
    let cache = daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &token,
            json!({ "kind": "service", "service": "memcached" }),
        )
        .await
        .expect(422);
    assert!(cache.error_message().contains("cache"), "{}", cache.text);

    delete_addons(&daemon, &id, &["mariadb", "memcached"]).await;
    remove_installation_volumes(&daemon).await;
}

#[tokio::test]
async fn the_cli_adds_an_addon_waits_until_ready_backs_it_up_and_removes_it() {
    use crate::cli::cantila;
    let daemon = TestDaemon::start().await;
    daemon.create_project("clia").await;
    let env = || {
        vec![
            ("CANTILA_URL", format!("http://{}", daemon.api)),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ]
    };
    let run = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    let started = std::time::Instant::now();
    let out = cantila(run(&["services", "add", "clia", "redis"]), env()).await;
    // The closing note's figure: `cantila services add APP redis` until ready.
    eprintln!(
        "cantila services add clia redis: ready after {:?}",
        started.elapsed()
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("service redis is ready"), "{said}");
    assert!(said.contains("REDIS_URL"), "{said}");

    let out = cantila(run(&["services", "add", "clia", "mysql"]), env()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("service mariadb is ready"),
        "{}",
        text(&out.stdout)
    );
    let out = cantila(run(&["services", "add", "clia", "mongodb"]), env()).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("mongodb"),
        "{}",
        text(&out.stderr)
    );

    let out = cantila(
        run(&["backups", "create", "clia", "--service", "mariadb"]),
        env(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("completed"),
        "{}",
        text(&out.stdout)
    );

    for name in ["mariadb", "redis"] {
        let out = cantila(
            run(&["services", "rm", "clia", name, "--delete-data"]),
            env(),
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = cantila(run(&["backups", "list", "clia", "--json"]), env()).await;
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let finals: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["trigger"] == "final")
        .map(|b| b["subject"].as_str().unwrap())
        .collect();
    assert_eq!(finals, ["redis", "mariadb"], "{listed}");
    remove_installation_volumes(&daemon).await;
}
