//! Planning: turns a source tree into a deploy plan (runtime detection, generated
//! Dockerfiles). It reads files and executes nothing: no build, no shell, no network.

mod compose;
mod dockerfile;
mod golang;
mod health;
mod node;
mod php;
mod procfile;
mod python;
mod ruby;
mod rust;
mod settings;
mod tree;

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{error::Error, names::Runtime};

pub use crate::config::BuildImages;

use dockerfile::DockerfileWriter;
// Public for the fuzz targets in `fuzz/`: both read files straight from a repository.
pub use dockerfile::{inspect as inspect_dockerfile, DockerfileFacts};
pub use procfile::{parse as parse_procfile, Procfile};
pub use settings::{
    parse_file_settings, plan_repository, plan_with_settings, read_file_settings, BuildPlan,
    BuildSources, FileSettings, CONFIG_FILE,
};
use tree::{SourceTree, MANIFEST_LIMIT};

pub use compose::shell_line;
pub use health::HealthCheckSource;

/// The port generated images listen on (`ENV PORT`), and the port assumed for a
/// Dockerfile without `EXPOSE`.
pub const DEFAULT_PORT: u16 = 8080;

/// What the caller knows beyond the tree: the project's runtime hint and the base images.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions<'a> {
    pub runtime_hint: Option<Runtime>,
    pub images: &'a BuildImages,
}

/// The Dockerfile a project's build settings name, if any: its path inside the tree and
/// the stage to build. Without a path, detection looks for `Dockerfile` at the tree's root.
#[derive(Debug, Clone, Copy, Default)]
pub struct DockerfileChoice<'a> {
    pub path: Option<&'a str>,
    pub target: Option<&'a str>,
}

/// How the image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// The repository's own Dockerfile.
    Dockerfile,
    /// A Dockerfile the planner wrote for the detected runtime.
    Generated,
    /// No image: the edge serves `static_root` from disk.
    Static,
    /// No build: the image is pulled from a registry (a project whose source is an image).
    Image,
}

/// How a release decides that its containers are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// An HTTP request to `path` on the port answers with a status in the range (by
    /// default, below 500).
    Http,
    /// The port accepts TCP connections (for web processes that do not speak HTTP; chosen
    /// by the project's settings, never by detection).
    Tcp,
    /// Nothing listens (workers only, or a static site served by the edge): the
    /// containers only have to keep running for the start period.
    None,
}

/// The health check of a release's web process. Detection fills the first fields; the
/// deploy plan resolves the rest from the project's settings and the defaults
/// (`HealthCheck::resolve`, in `health.rs`), so a plan shows every value the release will
/// use. Plans stored before those fields existed read them as `None`: the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    /// The HTTP path, for `http` only.
    pub path: Option<String>,
    /// The pause between probes rounded up to whole seconds (`intervalMs` is the one used).
    pub interval_secs: u32,
    /// Each probe's own timeout.
    pub timeout_secs: u32,
    /// Unused: a release waits `overallTimeoutSecs` rather than counting probes.
    pub retries: u32,
    /// The port probed inside the instance; `None`: the app's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `http`: the statuses that pass (`None`: 200 and 499, any answer below 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_max: Option<u16>,
    /// Grace after the start before failures count (`None`: 0, or 3 s for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_secs: Option<u32>,
    /// How long after the start period an instance may take to pass (`None`: the server's
    /// `[deploy] health_timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall_timeout_secs: Option<u32>,
    /// The pause between probes (`None`: 500 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u32>,
    /// Where the check came from: `detection`, `file` (`[health]` in `cantila.toml`) or
    /// `api` (the project's settings, which win over the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<HealthCheckSource>,
}

impl HealthCheck {
    fn http() -> Self {
        Self {
            kind: HealthCheckKind::Http,
            path: Some("/".to_owned()),
            ..Self::none()
        }
    }

    /// No probe: the process only has to stay up (workers, and apps that serve nothing).
    pub(crate) fn none() -> Self {
        Self {
            kind: HealthCheckKind::None,
            path: None,
            interval_secs: 2,
            timeout_secs: 2,
            retries: 30,
            port: None,
            status_min: None,
            status_max: None,
            start_period_secs: None,
            overall_timeout_secs: None,
            interval_ms: None,
            source: None,
        }
    }
}

/// What a source tree needs to become running containers. The same value answers
/// `POST /v1/deploy/plan` and drives the deploy, so the two can never disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourcePlan {
    pub runtime: Runtime,
    pub builder: Builder,
    /// The full Dockerfile: the repository's for `dockerfile`, the generated one for
    /// `generated`, none for `static`.
    pub dockerfile: Option<String>,
    /// The port the web process listens on; the deploy sets `PORT` to it.
    pub port: u16,
    /// The web process's command (run with `sh -c` when it comes from the Procfile); none
    /// when the image's own `CMD` is the web process, or for static sites.
    pub start_command: Option<String>,
    /// The process types (`web`, `worker`, ...) and their commands: the Procfile's
    /// (without `release`), plus `web` for a generated image's own start command. Each
    /// runs in the same image as `sh -c <command>`; `web` may equally run the image's
    /// `CMD`, which is the same command. Empty means one `web` process running the image's
    /// `CMD` (a Dockerfile without Procfile), or nothing to run (a static site).
    pub processes: BTreeMap<String, String>,
    /// The Procfile's `release` command, run once per deploy before the new release.
    pub release_command: Option<String>,
    pub health_check: HealthCheck,
    /// For `static`: the directory to serve, relative to the tree (".", "public", "dist").
    pub static_root: Option<String>,
    /// For images: the tree's directory of static assets (`public` or `static`), copied
    /// out of the image after the build and listed by `GET /v1/projects/:id/assets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets_dir: Option<String>,
    pub warnings: Vec<String>,
    /// For a project whose source is an image: what is pulled and how it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePlan>,
}

/// What a pulled image is and says about running it (its config, read from the registry
/// or the local image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePlan {
    /// The reference pulled: the connected one, or the tag or digest a deploy named.
    pub reference: String,
    /// The digest it resolved to (`sha256:...`), once known.
    pub digest: Option<String>,
    /// The TCP ports its `EXPOSE` lines name; the first is the one traffic goes to.
    pub exposed_ports: Vec<u16>,
    /// Its `HEALTHCHECK` test, when it sets one (Cantila's own HTTP check gates the
    /// release either way).
    pub healthcheck: Option<Vec<String>>,
    /// The user its processes run as (empty: root).
    pub user: String,
    pub workdir: String,
}

/// The plan of a pulled image: its first exposed port (or `DEFAULT_PORT`, said in a
/// warning), its own `CMD` as the web process, and an HTTP health check.
pub fn plan_image(image: ImagePlan) -> SourcePlan {
    let mut warnings = Vec::new();
    let port = match image.exposed_ports.as_slice() {
        [] => {
            warnings.push(format!(
                "the image has no EXPOSE; Cantila sets PORT={DEFAULT_PORT} and expects the app to listen on it"
            ));
            DEFAULT_PORT
        }
        [only] => *only,
        [first, ..] => {
            let listed: Vec<String> = image.exposed_ports.iter().map(u16::to_string).collect();
            warnings.push(format!(
                "the image exposes several ports ({}); Cantila routes traffic to the first, {first}",
                listed.join(", ")
            ));
            *first
        }
    };
    if image.user.is_empty() || image.user == "root" || image.user == "0" {
        warnings.push("the image runs as root (it sets no USER)".to_owned());
    }
    SourcePlan {
        runtime: Runtime::Dockerfile,
        builder: Builder::Image,
        dockerfile: None,
        port,
        start_command: None,
        processes: BTreeMap::new(),
        release_command: None,
        health_check: HealthCheck::http(),
        static_root: None,
        assets_dir: None,
        warnings,
        image: Some(image),
    }
}

/// Plans a source tree. Reads only files inside `tree` (symlinks leading out read as
/// absent), executes nothing, and fails with `Error::Invalid` (422) when the tree cannot
/// be planned, saying what to add.
pub fn plan_tree(tree: &Path, options: &PlanOptions<'_>) -> Result<SourcePlan, Error> {
    plan_tree_with(tree, options, DockerfileChoice::default())
}

/// `plan_tree` with the Dockerfile and target the build settings chose.
pub fn plan_tree_with(
    tree: &Path,
    options: &PlanOptions<'_>,
    choice: DockerfileChoice<'_>,
) -> Result<SourcePlan, Error> {
    options.images.validate()?;
    let mut planner = Planner {
        tree: SourceTree::open(tree)?,
        images: options.images,
        warnings: Vec::new(),
        has_procfile_web: false,
    };
    let procfile = planner.read_procfile()?;
    planner.has_procfile_web = procfile.as_ref().is_some_and(|p| p.web().is_some());
    let runtime = match choice.path {
        Some(path) => {
            if !planner.tree.is_file(path) {
                return Err(Error::Invalid(format!(
                    "the build settings name the Dockerfile `{path}`, but the root directory has no such file; fix build.dockerfile"
                )));
            }
            if let Some(hint) = options.runtime_hint.filter(|h| *h != Runtime::Dockerfile) {
                planner.warn(format!(
                    "the build settings name a Dockerfile, which overrides the project's runtime hint `{}`",
                    hint.as_str()
                ));
            }
            Runtime::Dockerfile
        }
        None => choose_runtime(&mut planner, options.runtime_hint)?,
    };
    if let (Some(target), false) = (choice.target, runtime == Runtime::Dockerfile) {
        planner.warn(format!(
            "the build target `{target}` was ignored: the image is built from a generated Dockerfile, which has no stages to choose"
        ));
    }
    let mut plan = match runtime {
        Runtime::Dockerfile => plan_user_dockerfile(&mut planner, procfile, choice)?,
        Runtime::Static => plan_static(&mut planner, procfile)?,
        Runtime::Node => plan_generated(&mut planner, runtime, node::plan, procfile)?,
        Runtime::Python => plan_generated(&mut planner, runtime, python::plan, procfile)?,
        Runtime::Go => plan_generated(&mut planner, runtime, golang::plan, procfile)?,
        Runtime::Rust => plan_generated(&mut planner, runtime, rust::plan, procfile)?,
        Runtime::Ruby => plan_generated(&mut planner, runtime, ruby::plan, procfile)?,
        Runtime::Php => plan_generated(&mut planner, runtime, php::plan, procfile)?,
    };
    if plan.builder != Builder::Static {
        plan.assets_dir = ["public", "static"]
            .into_iter()
            .find(|dir| !planner.tree.list_dir(dir).is_empty())
            .map(str::to_owned);
    }
    plan.warnings = std::mem::take(&mut planner.warnings);
    plan.warnings.extend(planner.tree.take_warnings());
    Ok(plan)
}

/// The state shared by the runtime planners: the tree, the images, the warnings so far.
pub(crate) struct Planner<'a> {
    tree: SourceTree,
    images: &'a BuildImages,
    warnings: Vec<String>,
    /// A Procfile `web:` line replaces the runtime's own start command.
    has_procfile_web: bool,
}

impl Planner<'_> {
    fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// Reads a manifest the plan depends on; one that is too large or not text is a 422.
    fn read_manifest(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.tree.read_text(name, MANIFEST_LIMIT)? {
            None => Ok(None),
            Some(Ok(text)) => Ok(Some(text)),
            Some(Err(failure)) => {
                let advice = if name == "Dockerfile" {
                    "fix it"
                } else {
                    "fix it or add a Dockerfile"
                };
                Err(Error::Invalid(format!(
                    "{}; {advice}",
                    failure.describe(name)
                )))
            }
        }
    }

    fn read_json(&mut self, name: &str) -> Result<Option<serde_json::Value>, Error> {
        let Some(text) = self.read_manifest(name)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| Error::Invalid(format!("{name} is not valid JSON: {err}")))
    }

    fn read_toml(&mut self, name: &str) -> Result<Option<toml::Table>, Error> {
        let Some(text) = self.read_manifest(name)? else {
            return Ok(None);
        };
        text.parse::<toml::Table>().map(Some).map_err(|err| {
            let line = err
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.matches('\n').count() + 1);
            let at = line
                .map(|line| format!(" (line {line})"))
                .unwrap_or_default();
            Error::Invalid(format!(
                "{name} is not valid TOML{at}: {}",
                err.message().trim_end()
            ))
        })
    }

    fn read_procfile(&mut self) -> Result<Option<Procfile>, Error> {
        let Some(text) = self.read_manifest("Procfile")? else {
            return Ok(None);
        };
        let mut procfile = procfile::parse(&text)?;
        self.warnings.append(&mut procfile.warnings);
        Ok(Some(procfile))
    }
}

/// The files that make a tree look like each runtime, in detection order. A Dockerfile
/// wins; code runtimes come next; a static site is only a site when nothing else matched.
const MARKERS: [(Runtime, &[&str]); 8] = [
    (Runtime::Dockerfile, &["Dockerfile"]),
    (Runtime::Node, &["package.json"]),
    (Runtime::Python, &["requirements.txt", "pyproject.toml"]),
    (Runtime::Go, &["go.mod"]),
    (Runtime::Rust, &["Cargo.toml"]),
    (Runtime::Ruby, &["Gemfile"]),
    (Runtime::Php, &["composer.json", "index.php"]),
    (
        Runtime::Static,
        &["index.html", "public/index.html", "dist/index.html"],
    ),
];

fn markers_of(runtime: Runtime) -> &'static [&'static str] {
    MARKERS
        .iter()
        .find(|(candidate, _)| *candidate == runtime)
        .map_or(&[], |(_, files)| *files)
}

fn marker_found(planner: &mut Planner<'_>, runtime: Runtime) -> Option<&'static str> {
    markers_of(runtime)
        .iter()
        .copied()
        .find(|file| planner.tree.is_file(file))
}

fn choose_runtime(planner: &mut Planner<'_>, hint: Option<Runtime>) -> Result<Runtime, Error> {
    let dockerfile = marker_found(planner, Runtime::Dockerfile).is_some();
    if let Some(hint) = hint {
        // The hint is the user's explicit choice, so it even overrides a Dockerfile (kept
        // for local development, say); it only has to fit the tree.
        if marker_found(planner, hint).is_none() {
            let files = markers_of(hint).join(" or ");
            return Err(Error::Invalid(format!(
                "the project's runtime hint is `{hint}`, but the repository has no {files}; \
                 add it, or change or remove the hint",
                hint = hint.as_str()
            )));
        }
        if dockerfile && hint != Runtime::Dockerfile {
            planner.warn(format!(
                "the repository has a Dockerfile, but the project's runtime hint `{}` overrides it",
                hint.as_str()
            ));
        }
        return Ok(hint);
    }
    if dockerfile {
        return Ok(Runtime::Dockerfile);
    }

    let code_runtimes = [
        Runtime::Node,
        Runtime::Python,
        Runtime::Go,
        Runtime::Rust,
        Runtime::Ruby,
        Runtime::Php,
    ];
    let mut found: Vec<(Runtime, &'static str)> = Vec::new();
    for runtime in code_runtimes {
        if let Some(file) = marker_found(planner, runtime) {
            found.push((runtime, file));
        }
    }
    // A package.json without a way to start is usually front-end tooling beside the real
    // app (Laravel, Rails), so another runtime goes first when there is one.
    if found.len() > 1 && found[0].0 == Runtime::Node && !node::can_start(planner) {
        found.rotate_left(1);
    }
    if let Some(&(chosen, chosen_file)) = found.first() {
        if found.len() > 1 {
            let others: Vec<String> = found[1..]
                .iter()
                .map(|(runtime, file)| format!("{} ({file})", runtime.as_str()))
                .collect();
            planner.warn(format!(
                "planned as {} ({chosen_file}); the repository also looks like {}: set the project's runtime hint to choose",
                chosen.as_str(),
                others.join(", ")
            ));
        }
        return Ok(chosen);
    }
    if marker_found(planner, Runtime::Static).is_some() {
        return Ok(Runtime::Static);
    }
    let looked_for: Vec<&str> = MARKERS
        .iter()
        .flat_map(|(_, files)| files.iter().copied())
        .collect();
    Err(Error::Invalid(format!(
        "cannot tell how to build this repository: it has none of {}; add a Dockerfile, or set the project's runtime hint",
        looked_for.join(", ")
    )))
}

fn plan_user_dockerfile(
    planner: &mut Planner<'_>,
    procfile: Option<Procfile>,
    choice: DockerfileChoice<'_>,
) -> Result<SourcePlan, Error> {
    let path = choice.path.unwrap_or("Dockerfile");
    let text = planner.read_manifest(path)?.unwrap_or_default();
    let mut facts = dockerfile::inspect(&text);
    planner.warnings.append(&mut facts.warnings);
    // The image is the target stage when there is one, so its ports are that stage's.
    let ports = match choice.target {
        Some(target) => match facts.stage(target) {
            Some(stage) => stage.ports.clone(),
            None => {
                let named: Vec<&str> = facts
                    .stages
                    .iter()
                    .filter_map(|stage| stage.name.as_deref())
                    .collect();
                let known = if named.is_empty() {
                    "it names no stages (`FROM image AS name`)".to_owned()
                } else {
                    format!("its stages are {}", named.join(", "))
                };
                return Err(Error::Invalid(format!(
                    "the build target `{target}` is not a stage of {path}: {known}; fix build.target"
                )));
            }
        },
        None => facts.ports,
    };
    let port = match ports.as_slice() {
        [] => {
            planner.warn(format!(
                "the Dockerfile has no EXPOSE; Cantila sets PORT={DEFAULT_PORT} and expects the app to listen on it"
            ));
            DEFAULT_PORT
        }
        [only] => *only,
        [first, ..] => {
            let listed: Vec<String> = ports.iter().map(u16::to_string).collect();
            planner.warn(format!(
                "the Dockerfile exposes several ports ({}); Cantila routes traffic to the first, {first}",
                listed.join(", ")
            ));
            *first
        }
    };
    // Without a Procfile, the image's own CMD is the web process.
    let (start_command, processes, release_command) = match procfile {
        Some(procfile) => (
            procfile.web().map(str::to_owned),
            procfile.processes,
            procfile.release,
        ),
        None => (None, BTreeMap::new(), None),
    };
    let serves_http = processes.is_empty() || processes.contains_key(procfile::WEB);
    Ok(SourcePlan {
        runtime: Runtime::Dockerfile,
        builder: Builder::Dockerfile,
        dockerfile: Some(text),
        port,
        start_command,
        health_check: web_or_worker_health(planner, serves_http),
        processes,
        release_command,
        static_root: None,
        assets_dir: None,
        warnings: Vec::new(),
        image: None,
    })
}

fn plan_static(planner: &mut Planner<'_>, procfile: Option<Procfile>) -> Result<SourcePlan, Error> {
    let root = [
        (".", "index.html"),
        ("public", "public/index.html"),
        ("dist", "dist/index.html"),
    ]
    .into_iter()
    .find(|(_, index)| planner.tree.is_file(index))
    .map(|(root, _)| root.to_owned());
    if procfile.is_some() {
        planner.warn("a static site runs no processes; the Procfile was ignored");
    }
    Ok(SourcePlan {
        runtime: Runtime::Static,
        builder: Builder::Static,
        dockerfile: None,
        port: DEFAULT_PORT,
        start_command: None,
        processes: BTreeMap::new(),
        release_command: None,
        health_check: HealthCheck::none(),
        static_root: root,
        assets_dir: None,
        warnings: Vec::new(),
        image: None,
    })
}

fn web_or_worker_health(planner: &mut Planner<'_>, serves_http: bool) -> HealthCheck {
    if serves_http {
        HealthCheck::http()
    } else {
        planner.warn(
            "the Procfile has no `web` process: nothing answers HTTP, so the project gets no traffic and its containers are only checked to keep running",
        );
        HealthCheck::none()
    }
}

/// How a generated image starts its web process.
pub(crate) enum Start {
    /// Exec form, no shell: for commands that need no `$PORT`.
    Exec(Vec<String>),
    /// A command of the planner's that reads `$PORT`: `sh -c "exec ..."`, so the server
    /// replaces the shell and receives signals itself.
    Shell(String),
}

/// A runtime planner's result, before the Procfile and the port are applied.
pub(crate) struct Recipe {
    /// Everything up to (not including) `ENV PORT`, `EXPOSE` and `CMD`.
    dockerfile: DockerfileWriter,
    start: Option<Start>,
    /// What to add when there is no start command, for the 422.
    missing_start: &'static str,
}

/// Runs a runtime's planner, then applies the Procfile, the port and the start command.
fn plan_generated(
    planner: &mut Planner<'_>,
    runtime: Runtime,
    runtime_planner: fn(&mut Planner<'_>) -> Result<Recipe, Error>,
    procfile: Option<Procfile>,
) -> Result<SourcePlan, Error> {
    let Recipe {
        mut dockerfile,
        start,
        missing_start,
    } = runtime_planner(planner)?;
    let (mut processes, release_command) = match procfile {
        Some(procfile) => (procfile.processes, procfile.release),
        None => (BTreeMap::new(), None),
    };
    let web_from_procfile = processes.get(procfile::WEB).cloned();
    dockerfile.line(format!("ENV PORT={DEFAULT_PORT}"));
    dockerfile.line(format!("EXPOSE {DEFAULT_PORT}"));
    let start_command = match (web_from_procfile, start) {
        (Some(web), _) => {
            dockerfile.exec("CMD", &["sh", "-c", &web]);
            Some(web)
        }
        (None, Some(Start::Exec(args))) => {
            let borrowed: Vec<&str> = args.iter().map(String::as_str).collect();
            dockerfile.exec("CMD", &borrowed);
            Some(args.join(" "))
        }
        (None, Some(Start::Shell(command))) => {
            dockerfile.exec("CMD", &["sh", "-c", &format!("exec {command}")]);
            Some(command)
        }
        (None, None) if processes.is_empty() => {
            return Err(Error::Invalid(format!(
                "cannot tell how to start this {} app: {missing_start}, or a Procfile with a `web:` line, or a Dockerfile",
                runtime.as_str()
            )));
        }
        // Workers only: each process gets its command from the deploy, the image has none.
        (None, None) => None,
    };
    // Like Heroku, the runtime's own start command is the web process when the Procfile
    // names only other types.
    if let Some(command) = &start_command {
        processes
            .entry(procfile::WEB.to_owned())
            .or_insert_with(|| command.clone());
    }
    let serves_http = processes.contains_key(procfile::WEB);
    Ok(SourcePlan {
        runtime,
        builder: Builder::Generated,
        dockerfile: Some(dockerfile.finish()?),
        port: DEFAULT_PORT,
        start_command,
        health_check: web_or_worker_health(planner, serves_http),
        processes,
        release_command,
        static_root: None,
        assets_dir: None,
        warnings: Vec::new(),
        image: None,
    })
}

#[cfg(test)]
mod tests;
