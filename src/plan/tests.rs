//! Tests of the planner: golden plans of the fixture apps, detection, hints, and attempts
//! to smuggle Dockerfile instructions in through repository files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::Invalid(_) => "invalid",
        Error::Internal(_) => "internal",
        _ => "other",
    }
}

/// Plans every app under tests/fixtures/apps and compares the pretty JSON with
/// tests/fixtures/plans/<app>.json; `UPDATE_GOLDEN=1` rewrites the files instead.
#[test]
fn fixtures_match_golden_plans() {
    let images = BuildImages::default();
    let options = PlanOptions {
        runtime_hint: None,
        images: &images,
    };
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|value| value == "1");
    let plans_dir = fixtures().join("plans");
    let mut apps: Vec<String> = fs::read_dir(fixtures().join("apps"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    apps.sort();
    assert!(apps.len() >= 13, "fixture apps: {apps:?}");

    let mut mismatches = Vec::new();
    for app in &apps {
        let result = plan_tree(&fixtures().join("apps").join(app), &options);
        // Serialized from the struct, so the file keeps the fields in declaration order.
        let actual = match &result {
            Ok(plan) => serde_json::to_string_pretty(plan).unwrap(),
            Err(err) => serde_json::to_string_pretty(&serde_json::json!({
                "error": { "kind": error_kind(err), "message": err.to_string() }
            }))
            .unwrap(),
        };
        let text = format!("{actual}\n");
        let golden_path = plans_dir.join(format!("{app}.json"));
        if update {
            fs::create_dir_all(&plans_dir).unwrap();
            fs::write(&golden_path, &text).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&golden_path).unwrap_or_default();
        if expected != text {
            mismatches.push(format!(
                "--- {app}: expected\n{expected}\n--- actual\n{text}"
            ));
            continue;
        }
        // The wire form reads back to the same plan.
        if let Ok(plan) = result {
            let parsed: SourcePlan = serde_json::from_str(&expected).unwrap();
            assert_eq!(parsed, plan, "{app}");
        }
    }
    let stale: Vec<String> = fs::read_dir(&plans_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !apps.iter().any(|app| format!("{app}.json") == *name))
        .collect();
    assert!(
        stale.is_empty(),
        "golden plans without a fixture app: {stale:?}"
    );
    assert!(
        mismatches.is_empty(),
        "plans differ from the golden files (rerun with UPDATE_GOLDEN=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

/// A temporary tree with the given files.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    dir
}

fn plan_with(dir: &Path, hint: Option<Runtime>) -> Result<SourcePlan, Error> {
    let images = BuildImages::default();
    plan_tree(
        dir,
        &PlanOptions {
            runtime_hint: hint,
            images: &images,
        },
    )
}

fn plan(files: &[(&str, &str)]) -> SourcePlan {
    let dir = tree(files);
    plan_with(dir.path(), None).unwrap()
}

fn invalid(files: &[(&str, &str)], hint: Option<Runtime>) -> String {
    let dir = tree(files);
    match plan_with(dir.path(), hint) {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn dockerfile(plan: &SourcePlan) -> &str {
    plan.dockerfile.as_deref().unwrap()
}

/// The arguments of the generated Dockerfile's CMD, read back as Docker reads them.
fn cmd_args(plan: &SourcePlan) -> Vec<String> {
    let line = dockerfile(plan)
        .lines()
        .find_map(|line| line.strip_prefix("CMD "))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

const NODE_START: &str = r#"{"scripts": {"start": "node server.js"}}"#;

#[test]
fn hint_overrides_detection_and_must_fit() {
    let message = invalid(&[("package.json", NODE_START)], Some(Runtime::Python));
    assert!(message.contains("runtime hint is `python`"), "{message}");
    assert!(
        message.contains("requirements.txt or pyproject.toml"),
        "{message}"
    );

    let message = invalid(&[("index.html", "hi")], Some(Runtime::Node));
    assert!(message.contains("no package.json"), "{message}");
    let message = invalid(&[("package.json", NODE_START)], Some(Runtime::Dockerfile));
    assert!(message.contains("no Dockerfile"), "{message}");

    // A front-end project planned as a static site on request.
    let dir = tree(&[("package.json", NODE_START), ("public/index.html", "hi")]);
    let planned = plan_with(dir.path(), Some(Runtime::Static)).unwrap();
    assert_eq!(planned.builder, Builder::Static);
    assert_eq!(planned.static_root.as_deref(), Some("public"));

    // The hint wins even over a Dockerfile, and says so.
    let dir = tree(&[
        ("Dockerfile", "FROM busybox\nEXPOSE 9000\n"),
        ("package.json", NODE_START),
    ]);
    assert_eq!(
        plan_with(dir.path(), None).unwrap().runtime,
        Runtime::Dockerfile
    );
    let planned = plan_with(dir.path(), Some(Runtime::Node)).unwrap();
    assert_eq!(planned.runtime, Runtime::Node);
    assert_eq!(planned.port, DEFAULT_PORT);
    assert!(
        planned.warnings[0].contains("overrides it"),
        "{:?}",
        planned.warnings
    );
}

#[test]
fn nothing_recognisable_says_what_was_looked_for() {
    let message = invalid(&[("README.md", "hi"), ("Procfile", "web: ./run")], None);
    for expected in [
        "Dockerfile",
        "package.json",
        "go.mod",
        "Cargo.toml",
        "index.html",
        "runtime hint",
    ] {
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn several_runtimes_pick_one_and_warn() {
    let both = plan(&[
        ("package.json", NODE_START),
        ("requirements.txt", ""),
        ("app.py", ""),
    ]);
    assert_eq!(both.runtime, Runtime::Node);
    assert!(
        both.warnings[0].contains("python (requirements.txt)"),
        "{:?}",
        both.warnings
    );

    // Front-end tooling beside a PHP app: the package.json cannot start anything.
    let laravel = plan(&[
        ("package.json", r#"{"scripts": {"build": "vite build"}}"#),
        ("composer.json", "{}"),
        ("public/index.php", "<?php"),
    ]);
    assert_eq!(laravel.runtime, Runtime::Php);
    assert_eq!(
        laravel.start_command.as_deref(),
        Some("php -S 0.0.0.0:$PORT -t public")
    );
}

#[test]
fn start_script_with_a_newline_cannot_add_instructions() {
    let planned = plan(&[(
        "package.json",
        r#"{"scripts": {"start": "node server.js\nRUN echo pwned > /etc/motd"}}"#,
    )]);
    // npm reads the script itself; the Dockerfile only says `npm start`.
    assert_eq!(cmd_args(&planned), ["npm", "start"]);
    assert!(!dockerfile(&planned).contains("pwned"));

    let message = invalid(
        &[("package.json", r#"{"main": "index.js\nRUN echo pwned"}"#)],
        None,
    );
    assert!(
        message.contains("`main`") && message.contains("newline"),
        "{message}"
    );
    for main in ["../../etc/x.js", "/etc/x.js", "--require=/x"] {
        let package = format!("{{\"main\": {main:?}}}");
        let message = invalid(&[("package.json", &package)], None);
        assert!(
            message.contains("inside the repository"),
            "{main}: {message}"
        );
    }

    let planned = plan(&[("package.json", r#"{"main": "lib/my app \"v2\".js"}"#)]);
    assert_eq!(cmd_args(&planned), ["node", "lib/my app \"v2\".js"]);
}

#[test]
fn procfile_commands_stay_one_json_string() {
    let web = r#"node a.js "] RUN evil ["  \ $PORT"#;
    let planned = plan(&[
        ("package.json", NODE_START),
        ("Procfile", &format!("web: {web}\n")),
    ]);
    assert_eq!(cmd_args(&planned), ["sh", "-c", web]);
    assert!(!dockerfile(&planned)
        .lines()
        .any(|line| line.starts_with("RUN evil")));

    let message = invalid(
        &[
            ("package.json", NODE_START),
            ("Procfile", "web: node a.js\rRUN evil\n"),
        ],
        None,
    );
    assert!(message.contains("Procfile line 1"), "{message}");
}

#[test]
fn weird_names_never_reach_the_dockerfile() {
    // A Django project whose package is not a Python identifier is not used as a module.
    let planned = plan(&[
        ("requirements.txt", "django\ngunicorn\n"),
        ("manage.py", ""),
        ("my-site/wsgi.py", "application = 1\n"),
        ("site$(id)/wsgi.py", "application = 1\n"),
        ("app.py", "app = 1\n"),
    ]);
    assert_eq!(
        planned.start_command.as_deref(),
        Some("gunicorn --bind 0.0.0.0:$PORT app:app")
    );
    assert!(!dockerfile(&planned).contains("my-site"));
    assert!(!dockerfile(&planned).contains("$(id)"));
    assert_eq!(
        planned
            .warnings
            .iter()
            .filter(|w| w.contains("not a Python module name"))
            .count(),
        2,
        "{:?}",
        planned.warnings
    );

    let planned = plan(&[
        ("requirements.txt", "Django>=5\ngunicorn\n"),
        ("manage.py", ""),
        ("mysite/wsgi.py", "application = 1\n"),
    ]);
    assert_eq!(
        planned.start_command.as_deref(),
        Some("gunicorn --bind 0.0.0.0:$PORT mysite.wsgi:application")
    );

    for name in ["x\nRUN evil", "a b", "../../x"] {
        let cargo = format!(
            "[package]\nname = \"ok\"\nversion = \"0.1.0\"\n\n[[bin]]\nname = {}\npath = \"src/main.rs\"\n",
            serde_json::to_string(name).unwrap()
        );
        let message = invalid(&[("Cargo.toml", &cargo), ("src/main.rs", "")], None);
        assert!(message.contains("Cargo binary name"), "{name:?}: {message}");
    }

    let message = invalid(
        &[
            ("go.mod", "module x\n"),
            ("cmd/evil dir/main.go", "package main\n"),
        ],
        None,
    );
    assert!(message.contains("Go command directory"), "{message}");
}

#[test]
fn python_servers_are_guessed() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("requirements.txt", "fastapi\nuvicorn[standard]\n"),
                ("main.py", "app = FastAPI()\n"),
            ],
            "uvicorn main:app --host 0.0.0.0 --port $PORT",
        ),
        (
            &[
                ("requirements.txt", "fastapi\ngunicorn\nuvicorn\n"),
                ("app.py", "app = FastAPI()\n"),
            ],
            "uvicorn app:app --host 0.0.0.0 --port $PORT",
        ),
        (
            &[
                ("requirements.txt", "gunicorn\n"),
                ("wsgi.py", "application = make()\n"),
                ("app.py", ""),
            ],
            "gunicorn --bind 0.0.0.0:$PORT wsgi:application",
        ),
        (
            &[
                (
                    "pyproject.toml",
                    "[project]\nname = \"x\"\ndependencies = [\"gunicorn>=22\"]\n",
                ),
                ("main.py", "app = Flask(__name__)\n"),
            ],
            "gunicorn --bind 0.0.0.0:$PORT main:app",
        ),
        (
            &[
                (
                    "pyproject.toml",
                    "[tool.poetry.dependencies]\npython = \"^3.12\"\nUvicorn = \"*\"\n",
                ),
                ("asgi.py", "app = 1\n"),
            ],
            "uvicorn asgi:app --host 0.0.0.0 --port $PORT",
        ),
        (
            &[("requirements.txt", ""), ("main.py", "")],
            "python main.py",
        ),
    ];
    for (files, expected) in cases {
        let planned = plan(files);
        assert_eq!(
            planned.start_command.as_deref(),
            Some(*expected),
            "{files:?}"
        );
    }
    let planned = plan(&[
        ("requirements.txt", "gunicorn\n"),
        ("app.py", "def create():\n    pass\n"),
    ]);
    assert!(
        planned.warnings[0].contains("no `app = ...` found in app.py"),
        "{:?}",
        planned.warnings
    );

    let message = invalid(
        &[("requirements.txt", "requests\n"), ("server.py", "")],
        None,
    );
    assert!(
        message.contains("cannot tell how to start this python app"),
        "{message}"
    );
}

#[test]
fn node_lockfiles_choose_the_install() {
    let deps = r#"{"scripts": {"start": "node a.js"}, "dependencies": {"x": "1"}, "devDependencies": {"y": "1"}}"#;
    let planned = plan(&[("package.json", deps), ("package-lock.json", "{}")]);
    let text = dockerfile(&planned);
    assert!(
        text.contains("COPY package.json package-lock.json ./\nRUN npm ci\nCOPY . .\n"),
        "{text}"
    );
    assert!(text.contains("RUN npm prune --omit=dev"), "{text}");
    assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);

    let planned = plan(&[("package.json", deps), ("yarn.lock", "")]);
    assert!(dockerfile(&planned).contains("RUN npm install\n"));
    assert_eq!(planned.warnings.len(), 1);
    assert!(
        planned.warnings[0].contains("yarn.lock"),
        "{:?}",
        planned.warnings
    );

    // A postinstall script may need the source, so install after copying it.
    let with_hook = r#"{"scripts": {"start": "node a.js", "postinstall": "node setup.js"}, "dependencies": {"x": "1"}}"#;
    let planned = plan(&[("package.json", with_hook), ("package-lock.json", "{}")]);
    assert!(
        dockerfile(&planned).contains("COPY . .\nRUN npm ci\n"),
        "{}",
        dockerfile(&planned)
    );

    let local = r#"{"scripts": {"start": "node a.js"}, "dependencies": {"lib": "file:./lib"}}"#;
    let planned = plan(&[("package.json", local), ("package-lock.json", "{}")]);
    assert!(
        dockerfile(&planned).contains("COPY . .\nRUN npm ci\n"),
        "{}",
        dockerfile(&planned)
    );

    let message = invalid(&[("package.json", r#"{"scripts": {"test": "x"}}"#)], None);
    assert!(message.contains("`start` script or `main`"), "{message}");
}

#[test]
fn broken_manifests_are_clear_422s() {
    let message = invalid(&[("package.json", "{ \"name\": ")], None);
    assert!(
        message.starts_with("package.json is not valid JSON"),
        "{message}"
    );
    let message = invalid(&[("package.json", "[1, 2]")], None);
    assert!(message.contains("not a JSON object"), "{message}");
    let message = invalid(
        &[("Cargo.toml", "[package]\nname = \"x\"\nversion = \n")],
        None,
    );
    assert!(
        message.starts_with("Cargo.toml is not valid TOML (line 3)"),
        "{message}"
    );
    let message = invalid(&[("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n")], None);
    assert!(message.contains("workspace"), "{message}");
    let big = format!("{{\"description\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let message = invalid(&[("package.json", &big)], None);
    assert!(message.contains("larger than 1024 KiB"), "{message}");

    // With requirements.txt to install from, a broken pyproject.toml only warns.
    let planned = plan(&[
        ("requirements.txt", ""),
        ("pyproject.toml", "[project"),
        ("app.py", ""),
    ]);
    assert!(
        planned.warnings[0].contains("pyproject.toml is not valid TOML"),
        "{:?}",
        planned.warnings
    );
    let message = invalid(&[("pyproject.toml", "[project"), ("app.py", "")], None);
    assert!(
        message.contains("pyproject.toml is not valid TOML"),
        "{message}"
    );
}

#[test]
fn user_dockerfile_port_and_procfile() {
    let planned = plan(&[("Dockerfile", "FROM busybox\nCMD [\"httpd\"]\n")]);
    assert_eq!(planned.port, DEFAULT_PORT);
    assert!(
        planned.warnings[0].contains("no EXPOSE"),
        "{:?}",
        planned.warnings
    );
    assert_eq!(planned.health_check.kind, HealthCheckKind::Http);

    let planned = plan(&[("Dockerfile", "FROM busybox\nEXPOSE 3000 3001\n")]);
    assert_eq!(planned.port, 3000);
    assert!(
        planned.warnings[0].contains("several ports"),
        "{:?}",
        planned.warnings
    );

    let planned = plan(&[
        ("Dockerfile", "FROM busybox\nEXPOSE 5000\n"),
        ("Procfile", "worker: ./work\nrelease: ./migrate\n"),
    ]);
    assert_eq!(planned.start_command, None);
    assert_eq!(planned.release_command.as_deref(), Some("./migrate"));
    assert_eq!(planned.health_check.kind, HealthCheckKind::None);
    assert_eq!(planned.processes.keys().collect::<Vec<_>>(), ["worker"]);
}

#[test]
fn workers_only_have_no_web_process() {
    let planned = plan(&[
        ("requirements.txt", ""),
        ("worker.py", ""),
        ("Procfile", "worker: python worker.py\n"),
    ]);
    assert_eq!(planned.start_command, None);
    assert_eq!(planned.health_check.kind, HealthCheckKind::None);
    assert!(!dockerfile(&planned).contains("CMD"));
    assert!(
        planned.warnings[0].contains("no `web` process"),
        "{:?}",
        planned.warnings
    );

    // Like Heroku, the runtime's own start command fills in a missing `web`.
    let planned = plan(&[
        ("requirements.txt", ""),
        ("app.py", ""),
        ("Procfile", "worker: python worker.py\n"),
    ]);
    assert_eq!(
        planned.processes.get("web").map(String::as_str),
        Some("python app.py")
    );
    assert_eq!(planned.health_check.kind, HealthCheckKind::Http);
}

#[test]
fn generated_dockerfiles_use_the_configured_images() {
    let images = BuildImages {
        node: "registry.local/node:22".to_owned(),
        static_server: "registry.local/busybox:1".to_owned(),
        ..BuildImages::default()
    };
    let options = PlanOptions {
        runtime_hint: None,
        images: &images,
    };
    let spa = fixtures().join("apps/node-spa");
    let text = plan_tree(&spa, &options).unwrap().dockerfile.unwrap();
    assert!(
        text.starts_with("FROM registry.local/node:22 AS build\n"),
        "{text}"
    );
    assert!(text.contains("\nFROM registry.local/busybox:1\n"), "{text}");

    let bad = BuildImages {
        go: "golang:1.23\nRUN evil".to_owned(),
        ..BuildImages::default()
    };
    let result = plan_tree(
        &spa,
        &PlanOptions {
            runtime_hint: None,
            images: &bad,
        },
    );
    assert!(matches!(result, Err(Error::Invalid(message)) if message.contains("build.images.go")));
}

#[test]
fn generated_dockerfiles_avoid_buildkit_only_syntax() {
    let golden = fs::read_dir(fixtures().join("plans")).unwrap();
    for entry in golden {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if value["builder"] != "generated" {
            continue;
        }
        let dockerfile = value["dockerfile"].as_str().unwrap();
        assert!(!dockerfile.contains("--mount"), "{dockerfile}");
        assert!(!dockerfile.contains("<<"), "{dockerfile}");
        assert!(!dockerfile.starts_with("# syntax"), "{dockerfile}");
        assert!(
            dockerfile.contains("ENV PORT=8080\nEXPOSE 8080\n"),
            "{dockerfile}"
        );
        assert!(
            dockerfile::inspect(dockerfile).warnings.is_empty(),
            "{dockerfile}"
        );
    }
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_tree_are_not_followed() {
    let outside = tree(&[("package.json", NODE_START)]);
    let dir = tree(&[("index.html", "hi")]);
    std::os::unix::fs::symlink(
        outside.path().join("package.json"),
        dir.path().join("package.json"),
    )
    .unwrap();
    let planned = plan_with(dir.path(), None).unwrap();
    assert_eq!(planned.runtime, Runtime::Static);
    assert!(
        planned
            .warnings
            .iter()
            .any(|w| w.contains("package.json is a symlink")),
        "{:?}",
        planned.warnings
    );
}
