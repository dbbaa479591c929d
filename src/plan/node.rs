//! Node apps (package.json): npm install or `npm ci` by lockfile, the `build` script,
//! dev dependencies pruned, started by `npm start`, `main` or server.js; a build without a
//! start command is served as a static site.

use serde_json::Value;

use crate::error::Error;

use super::{
    dockerfile::{check_command, DockerfileWriter},
    Planner, Recipe, Start,
};

/// npm runs these during install, and they may need the whole source, so their presence
/// means the source is copied before installing (giving up the dependency layer cache),
/// as do local dependencies and workspaces.
const INSTALL_LIFECYCLE_SCRIPTS: [&str; 4] = ["preinstall", "install", "postinstall", "prepare"];

/// Where a front-end build usually writes its site, in the order they are tried.
const BUILD_OUTPUT_DIRS: &str = "dist build out public";

struct PackageJson {
    scripts: serde_json::Map<String, Value>,
    main: Option<String>,
    dependency_count: usize,
    dev_dependency_count: usize,
    /// Local dependencies (`file:`, `link:`) or workspaces: the install reads files
    /// beyond the manifests.
    installs_from_source: bool,
}

impl PackageJson {
    fn parse(value: Value) -> Result<Self, Error> {
        let Value::Object(mut object) = value else {
            return Err(Error::Invalid(
                "package.json is not a JSON object; fix it or add a Dockerfile".to_owned(),
            ));
        };
        let count =
            |value: Option<&Value>| value.and_then(Value::as_object).map_or(0, |map| map.len());
        let dependency_count = count(object.get("dependencies"));
        let dev_dependency_count = count(object.get("devDependencies"));
        let local_dependency = ["dependencies", "devDependencies", "optionalDependencies"]
            .iter()
            .filter_map(|section| object.get(*section)?.as_object())
            .flat_map(|dependencies| dependencies.values())
            .filter_map(Value::as_str)
            .any(|spec| spec.starts_with("file:") || spec.starts_with("link:"));
        let installs_from_source = local_dependency || object.contains_key("workspaces");
        let scripts = match object.remove("scripts") {
            Some(Value::Object(scripts)) => scripts,
            _ => serde_json::Map::new(),
        };
        let main = match object.remove("main") {
            Some(Value::String(main)) if !main.trim().is_empty() => Some(main),
            _ => None,
        };
        Ok(Self {
            scripts,
            main,
            dependency_count,
            dev_dependency_count,
            installs_from_source,
        })
    }

    fn has_script(&self, name: &str) -> bool {
        self.scripts
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|script| !script.trim().is_empty())
    }
}

/// Whether the app has its own way to start (detection prefers another runtime when the
/// package.json is only front-end tooling). An unreadable package.json counts as
/// startable, so planning reports the real problem.
pub fn can_start(planner: &mut Planner<'_>) -> bool {
    let Ok(Some(value)) = planner.read_json("package.json") else {
        return true;
    };
    let Ok(package) = PackageJson::parse(value) else {
        return true;
    };
    package.has_script("start") || package.main.is_some() || planner.tree.is_file("server.js")
}

pub fn plan(planner: &mut Planner<'_>) -> Result<Recipe, Error> {
    let value = planner
        .read_json("package.json")?
        .ok_or_else(|| Error::Invalid("package.json is missing".to_owned()))?;
    let package = PackageJson::parse(value)?;

    let lockfile = ["package-lock.json", "npm-shrinkwrap.json"]
        .into_iter()
        .find(|name| planner.tree.is_file(name));
    let mut foreign_lockfile = false;
    for (foreign, tool) in [
        ("yarn.lock", "yarn"),
        ("pnpm-lock.yaml", "pnpm"),
        ("bun.lockb", "bun"),
    ] {
        if lockfile.is_none() && planner.tree.is_file(foreign) {
            foreign_lockfile = true;
            planner.warn(format!(
                "{foreign} found, but Cantila installs with npm: `npm install` resolves versions anew, \
                 so they may differ from {tool}'s; commit a package-lock.json or add a Dockerfile"
            ));
        }
    }
    let installs = package.dependency_count + package.dev_dependency_count > 0;
    if installs && lockfile.is_none() && !foreign_lockfile {
        planner.warn(
            "no package-lock.json: `npm install` resolves dependency versions at build time; commit the lockfile for repeatable builds",
        );
    }
    let install_command = if lockfile.is_some() {
        "RUN npm ci"
    } else {
        "RUN npm install"
    };
    let has_build = package.has_script("build");

    let start = if package.has_script("start") {
        Some(Start::Exec(vec!["npm".to_owned(), "start".to_owned()]))
    } else if let Some(main) = &package.main {
        check_command("package.json `main`", main)?;
        // A leading '-' would make the entry point an option of node's.
        if main.starts_with(['/', '-']) || main.split(['/', '\\']).any(|part| part == "..") {
            return Err(Error::Invalid(format!(
                "package.json `main` {main:?} must be a path inside the repository"
            )));
        }
        Some(Start::Exec(vec!["node".to_owned(), main.clone()]))
    } else if planner.tree.is_file("server.js") {
        Some(Start::Exec(vec!["node".to_owned(), "server.js".to_owned()]))
    } else {
        None
    };
    let serve_build_output = start.is_none() && has_build && !planner.has_procfile_web;

    let mut dockerfile = DockerfileWriter::new();
    if serve_build_output {
        dockerfile.line(format!("FROM {} AS build", planner.images.node));
    } else {
        dockerfile.line(format!("FROM {}", planner.images.node));
    }
    dockerfile.line("WORKDIR /app");
    // Builds have no use for npm's update check, funding notes or audit, and without
    // network access those would only slow them down.
    dockerfile
        .line("ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false");
    let install_first = installs
        && !package.installs_from_source
        && !INSTALL_LIFECYCLE_SCRIPTS
            .iter()
            .any(|script| package.has_script(script));
    if install_first {
        // Manifests first: the dependency layer is reused while they do not change.
        dockerfile.line(match lockfile {
            Some(lockfile) => format!("COPY package.json {lockfile} ./"),
            None => "COPY package.json ./".to_owned(),
        });
        dockerfile.line(install_command);
        dockerfile.line("COPY . .");
    } else {
        dockerfile.line("COPY . .");
        if installs {
            dockerfile.line(install_command);
        }
    }
    if has_build {
        dockerfile.line("RUN npm run build");
    }

    if serve_build_output {
        planner.warn(format!(
            "package.json has a build script but no start script, `main` or server.js: \
             the build's output (the first of {BUILD_OUTPUT_DIRS} with an index.html) is served as a static site"
        ));
        dockerfile.line(format!(
            "RUN for dir in {BUILD_OUTPUT_DIRS}; do if [ -f \"$dir/index.html\" ]; then cp -R \"$dir\" /site; exit 0; fi; done; \
             echo \"npm run build made no index.html in any of: {BUILD_OUTPUT_DIRS}\" >&2; exit 1"
        ));
        dockerfile.blank();
        dockerfile.line(format!("FROM {}", planner.images.static_server));
        dockerfile.line("COPY --from=build /site /www");
        return Ok(Recipe {
            dockerfile,
            start: Some(Start::Shell("httpd -f -p $PORT -h /www".to_owned())),
            missing_start: "",
        });
    }

    if installs && package.dev_dependency_count > 0 {
        dockerfile.line("RUN npm prune --omit=dev");
    }
    // Set only now: with NODE_ENV=production, npm would skip the dev dependencies the
    // build needs.
    dockerfile.line("ENV NODE_ENV=production");
    Ok(Recipe {
        dockerfile,
        start,
        missing_start: "add a `start` script or `main` to package.json",
    })
}
