//! Compose files read, refused, ignored and ordered.

use std::collections::BTreeMap;

use super::*;

/// Files of a pretend repository.
struct Tree(BTreeMap<&'static str, &'static str>, Vec<&'static str>);

impl Files for Tree {
    fn read(&mut self, path: &str) -> Result<Option<String>, String> {
        Ok(self.0.get(path).map(|text| (*text).to_owned()))
    }

    fn directory(&mut self, path: &str) -> Result<(), String> {
        if self.1.contains(&path) {
            Ok(())
        } else {
            Err("does not exist at this commit".to_owned())
        }
    }
}

fn tree() -> Tree {
    Tree(
        BTreeMap::from([
            (".env", "PG_TAG=16\nAPP_PORT=3000\n"),
            ("worker.env", "QUEUE=jobs\nLEVEL=from-file\n"),
        ]),
        vec![".", "web", "worker"],
    )
}

fn load_text(text: &str) -> Result<Stack, Error> {
    let vars = BTreeMap::from([("SECRET".to_owned(), "s3cret".to_owned())]);
    load("compose.yaml", text, &vars, &mut tree())
}

fn message(result: Result<Stack, Error>) -> String {
    match result {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected a 422, got {other:?}"),
    }
}

const STACK: &str = r#"
name: shop
x-common: &common
  restart: unless-stopped
services:
  web:
    build:
      context: ./web
      target: prod
      args:
        NODE_ENV: production
    command: node server.js --port "${APP_PORT}"
    environment:
      - REDIS_URL=redis://redis:6379
      - SECRET
    ports: ["${APP_PORT}"]
    depends_on:
      db: {condition: service_healthy}
      redis: {condition: service_started}
    healthcheck:
      test: curl -f http://localhost:3000/
  worker:
    <<: *common
    build: worker
    env_file: worker.env
    environment:
      LEVEL: 2
    depends_on: [redis, db]
    deploy:
      replicas: 2
      resources: {limits: {memory: 300m, cpus: "0.5"}}
  redis:
    image: redis:7
    command: ["redis-server", "--appendonly", "yes"]
    volumes: [redis_data:/data]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 1s
      timeout: 1500ms
      retries: 20
    container_name: my-redis
  db:
    image: postgres:${PG_TAG}
    environment:
      POSTGRES_PASSWORD: ${SECRET:?set SECRET}
    volumes:
      - type: volume
        source: pg.data
        target: /var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
      start_period: 1m30s
    frobnicate: true
volumes:
  redis_data:
  pg.data: {}
networks:
  default: {}
"#;

#[test]
fn a_stack_is_read_in_dependency_order_with_the_public_service_last() {
    let stack = load_text(STACK).unwrap();
    assert_eq!(stack.public.name, "web");
    assert_eq!(stack.public_port, 3000);
    let order: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["db", "redis", "worker"]);
    let web = &stack.public;
    let build = web.build.as_ref().unwrap();
    assert_eq!(build.context, "web");
    assert_eq!(build.target.as_deref(), Some("prod"));
    assert_eq!(build.args["NODE_ENV"], "production");
    assert_eq!(
        web.command.as_deref().unwrap(),
        ["node", "server.js", "--port", "3000"]
    );
    assert_eq!(web.env["SECRET"], "s3cret");
    assert_eq!(web.depends_on[0].condition, Condition::Healthy);
    let worker = &stack.services[2];
    assert_eq!(worker.build.as_ref().unwrap().context, "worker");
    assert_eq!(worker.env["QUEUE"], "jobs");
    assert_eq!(worker.env["LEVEL"], "2", "environment wins over env_file");
    assert_eq!(worker.restart, Restart::Always);
    assert_eq!(worker.replicas, 2);
    assert_eq!(worker.limits.memory_bytes, Some(300 * 1024 * 1024));
    let redis = &stack.services[1];
    assert_eq!(
        redis.command.as_deref().unwrap(),
        ["redis-server", "--appendonly", "yes"]
    );
    assert_eq!(redis.volumes[0].volume, "redis-data");
    assert_eq!(
        redis.health,
        Some(Health::Command {
            test: vec!["redis-cli".into(), "ping".into()],
            interval_secs: Some(1),
            timeout_secs: Some(2),
            start_period_secs: None,
            retries: Some(20),
        })
    );
    let db = &stack.services[0];
    assert_eq!(db.image.as_deref(), Some("postgres:16"));
    assert_eq!(db.volumes[0].volume, "pg-data");
    match &db.health {
        Some(Health::Command {
            test,
            start_period_secs,
            ..
        }) => {
            assert_eq!(test, &["/bin/sh", "-c", "pg_isready -U postgres"]);
            assert_eq!(*start_period_secs, Some(90));
        }
        other => panic!("{other:?}"),
    }
    let ignored: Vec<&str> = stack.ignored.iter().map(|i| i.key.as_str()).collect();
    for key in [
        "name",
        "networks.default",
        "services.redis.container_name",
        "services.db.frobnicate",
    ] {
        assert!(ignored.contains(&key), "{key} not in {ignored:?}");
    }
    assert!(
        stack.warnings.iter().any(|w| w.contains("healthcheck")),
        "{:?}",
        stack.warnings
    );

    let scale = ScaleConfig::default();
    let plan = stack.plan(&scale);
    assert_eq!(plan.order, ["db", "redis", "worker", "web"]);
    assert_eq!(plan.services[3].env_keys, ["REDIS_URL", "SECRET"]);
    assert_eq!(plan.services[2].size.as_deref(), Some("small"));
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json["public"],
        serde_json::json!({"service": "web", "port": 3000})
    );
    assert_eq!(json["services"][0]["dependsOn"], serde_json::json!([]));
    assert_eq!(
        json["services"][3]["dependsOn"][0]["condition"],
        "service_healthy"
    );
    assert_eq!(json["services"][1]["health"]["type"], "command");
    assert!(
        !json.to_string().contains("s3cret"),
        "env values stay out of the plan"
    );
}

#[test]
fn each_refused_key_is_named_with_why() {
    let err = message(load_text(
        r#"
services:
  web:
    image: app
    ports: ["8080:3000", "3001"]
    privileged: true
    network_mode: host
    pid: host
    ipc: host
    devices: ["/dev/kvm"]
    cap_add: [NET_ADMIN]
    security_opt: ["seccomp:unconfined"]
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
      - ./data:/data
      - type: bind
        source: /srv
        target: /srv
      - ok:/ok
    env_file: ../../etc/secrets.env
  ok:
    image: busybox
    cap_add: []
    privileged: false
volumes:
  ok:
  outside: {external: true}
  sneaky: {driver_opts: {type: none, o: bind, device: /etc}}
networks:
  shared: {external: true}
"#,
    ));
    for key in [
        "`services.web.ports[0]`: binds `8080` on the host",
        "`services.web.privileged`",
        "`services.web.network_mode`",
        "`services.web.pid`",
        "`services.web.ipc`",
        "`services.web.devices`",
        "`services.web.cap_add`",
        "`services.web.security_opt`",
        "`services.web.volumes[0]`: `/var/run/docker.sock` is a path of the host",
        "`services.web.volumes[1]`: `./data`",
        "`services.web.volumes[2]`",
        "`volumes.outside.external`",
        "`volumes.sneaky.driver_opts`",
        "`networks.shared.external`",
    ] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
    assert!(err.starts_with("compose.yaml cannot be deployed"), "{err}");
    assert!(!err.contains("services.web.volumes[3]"), "{err}");
    assert!(!err.contains("services.ok"), "{err}");
    // An env file outside the repository is refused once the rest is clean.
    let err = message(load_text(
        "services:\n  web:\n    image: app\n    ports: [\"80\"]\n    env_file: ../../etc/secrets.env\n",
    ));
    assert!(
        err.contains("`services.web.env_file[0]`") && err.contains("outside the repository"),
        "{err}"
    );
    let err = message(load_text(
        "services:\n  web:\n    build: {context: 'https://github.com/x/y.git', network: host}\n    ports: [\"80\"]\n",
    ));
    assert!(err.contains("`services.web.build.network`"), "{err}");
    assert!(err.contains("`services.web.build.context`"), "{err}");
}

#[test]
fn the_public_service_is_chosen_or_the_file_says_why_not() {
    let check = |text: &str, expected: &str| {
        let err = message(load_text(text));
        assert!(err.contains(expected), "{expected} missing from {err}");
    };
    check(
        "services:\n  a: {image: x}\n  b: {image: y}\n",
        "no service is public",
    );
    check(
        "services:\n  a: {image: x, ports: ['1']}\n  b: {image: y, ports: ['2']}\n",
        "several services publish ports (a, b)",
    );
    check(
        "x-cantila: {public: c}\nservices:\n  a: {image: x}\n",
        "`x-cantila.public` names `c`",
    );
    check(
        "x-cantila: {public: a}\nservices:\n  a: {image: x}\n",
        "names no port",
    );
    check(
        "x-cantila: {public: a, port: 3000, domain: x}\nservices:\n  a: {image: x}\n",
        "`x-cantila.domain`",
    );
    let stack = load_text(
        "x-cantila: {public: app, port: 8000}\nservices:\n  app: {image: x, expose: ['9000']}\n  web2: {image: y, ports: ['5000']}\n",
    )
    .unwrap();
    assert_eq!(
        (stack.public.name.as_str(), stack.public_port),
        ("app", 8000)
    );
    assert!(stack
        .ignored
        .iter()
        .any(|i| i.key == "services.web2.ports" && i.reason.contains("only the public service")));
    let stack =
        load_text("x-cantila: {public: app}\nservices:\n  app: {image: x, expose: [9000]}\n")
            .unwrap();
    assert_eq!(stack.public_port, 9000);
}

#[test]
fn names_dependencies_and_values_are_checked() {
    let check = |text: &str, expected: &str| {
        let err = message(load_text(text));
        assert!(err.contains(expected), "{expected} missing from {err}");
    };
    let web = "  web: {image: app, ports: ['80']}\n";
    check(
        &format!("services:\n{web}  My_DB: {{image: x}}\n"),
        "service name `My_DB` is invalid",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, depends_on: [ghost]}}\n"),
        "`services.a.depends_on` names `ghost`",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, depends_on: [b]}}\n  b: {{image: x, depends_on: [a]}}\n"),
        "a → b → a",
    );
    check(
        &format!("services:\n{web}  a: {{command: x}}\n"),
        "neither `image` nor `build`",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, volumes: ['undeclared:/data']}}\n"),
        "does not declare",
    );
    check(
        &format!(
            "services:\n{web}  a: {{image: x, volumes: ['v:/proc/x']}}\nvolumes: {{v: {{}}}}\n"
        ),
        "system directory",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, healthcheck: {{test: [CMD], interval: 5 seconds}}}}\n"),
        "`services.a.healthcheck.interval`",
    );
    check(
        &format!(
            "services:\n{web}  a: {{image: x, healthcheck: {{test: [CMD, ok], retries: 120}}}}\n"
        ),
        "`services.a`: `health.retries` is 120",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, deploy: {{replicas: 11}}}}\n"),
        "`services.a`: `count` is 11",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, restart: sometimes}}\n"),
        "`services.a.restart`",
    );
    check(
        &format!("services:\n{web}  a: {{build: ../..}}\n"),
        "climbs out of the repository",
    );
    check(
        &format!("services:\n{web}  a: {{build: missing}}\n"),
        "does not exist at this commit",
    );
    check(
        &format!("services:\n{web}  a: {{image: x, environment: {{PORT: 1}}}}\n"),
        "`PORT` is set by Cantila",
    );
    check(
        "services:\n  web: {image: app, ports: ['80'], environment: {A: '${MISSING:?needs MISSING}'}}\n",
        "needs MISSING",
    );
    check(
        "x-cantila: {public: app, port: 80}\nservices:\n  app: {image: x}\n  web: {image: y}\n",
        "cannot be named `web`",
    );
    // A dependency on the public service is dropped with a warning (it starts last).
    let stack = load_text(&format!(
        "services:\n{web}  a: {{image: x, depends_on: [web]}}\n"
    ))
    .unwrap();
    assert!(stack.services[0].depends_on.is_empty());
    assert!(stack
        .warnings
        .iter()
        .any(|w| w.contains("`a` depends on the public service")));
    // A read-only mount is mounted read-write, and said; the public service's volumes are
    // the project's own.
    let stack = load_text(
        "services:\n  web: {image: app, ports: ['80'], volumes: ['v:/v']}\n  a: {image: x, volumes: ['v:/data:ro']}\nvolumes: {v: {}}\n",
    )
    .unwrap();
    assert!(!stack.services[0].volumes[0].read_only);
    assert!(stack.public.volumes.is_empty());
    let keys: Vec<&str> = stack.ignored.iter().map(|i| i.key.as_str()).collect();
    assert!(
        keys.contains(&"services.a.volumes (v)") && keys.contains(&"services.web.volumes"),
        "{keys:?}"
    );
    // Profiles keep a service out, named in the ignored keys.
    let stack = load_text(&format!(
        "services:\n{web}  debug: {{image: x, profiles: [dev]}}\n"
    ))
    .unwrap();
    assert!(stack.services.is_empty());
    assert!(stack.ignored.iter().any(|i| i.key == "services.debug"));
}

#[test]
fn sizes_words_durations_and_paths() {
    assert_eq!(memory_bytes("512m").unwrap(), 512 << 20);
    assert_eq!(memory_bytes("1g").unwrap(), 1 << 30);
    assert_eq!(memory_bytes("1048576").unwrap(), 1 << 20);
    assert!(memory_bytes("lots").is_err());
    assert_eq!(duration_secs("1m30s").unwrap(), 90);
    assert_eq!(duration_secs("500ms").unwrap(), 1);
    assert_eq!(duration_secs("2h").unwrap(), 7200);
    assert!(duration_secs("10").is_err());
    assert_eq!(
        split_words(r#"sh -c 'echo "hi there"' a\ b "x\"y""#).unwrap(),
        ["sh", "-c", "echo \"hi there\"", "a b", "x\"y"]
    );
    assert!(split_words("echo 'open").is_err());
    assert_eq!(join_inside("", "./web").as_deref(), Some("web"));
    assert_eq!(join_inside("deploy", "../web").as_deref(), Some("web"));
    assert_eq!(join_inside("deploy", "..").as_deref(), Some("."));
    assert_eq!(join_inside("", ".."), None);
    let scale = ScaleConfig::default();
    let mut warned = Vec::new();
    let limits = |memory_mb: u64, cpus: f64| Limits {
        memory_bytes: Some(memory_mb << 20),
        cpus: Some(cpus),
    };
    assert_eq!(
        fit_size(&Limits::default(), &scale, &mut |w| warned.push(w)),
        None
    );
    assert_eq!(
        fit_size(&limits(200, 0.1), &scale, &mut |w| warned.push(w)).as_deref(),
        Some("nano")
    );
    assert!(warned.is_empty());
    let huge = fit_size(&limits(1 << 20, 64.0), &scale, &mut |w| warned.push(w));
    assert!(huge.is_some() && warned.len() == 1, "{warned:?}");
}

#[test]
fn the_compose_plan_is_in_the_served_document() {
    let document = serde_json::to_value(crate::api::openapi_document()).unwrap();
    let schemas = &document["components"]["schemas"];
    for name in [
        "ComposePlan",
        "ComposeServicePlan",
        "IgnoredKey",
        "RefusedKey",
        "ComposeHealth",
        "ComposeBuild",
        "ComposeMount",
    ] {
        assert!(schemas.get(name).is_some(), "{name} is not in the document");
    }
    assert!(
        schemas["DeployPlan"]
            .to_string()
            .contains("#/components/schemas/ComposePlan"),
        "{}",
        schemas["DeployPlan"]
    );
}
