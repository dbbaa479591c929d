//! Compose projects in planning: which root directories deploy their compose file, and the
//! plan of one: its public service planned as the project's web (built from its context,
//! or run from its image), the other services kept in the stack for the deploy to run.
//! Invariant: every build context and Dockerfile of the stack is a real path inside the
//! checkout (no symlink on the way), checked before anything is built.

use std::{collections::BTreeMap, path::Path};

use crate::{
    error::Error,
    model::{
        build::{BuildName, BuildTarget, DockerfilePath, RootDir, SettingSource},
        health::HealthCheckSettings,
        job::JobSpec,
    },
    names::Runtime,
    stack::{self, Files, Stack, StackService, COMPOSE_FILES},
};

use super::{
    plan_tree_with,
    settings::{checked_path, BuildPlan, BuildSources},
    tree::{SourceTree, MANIFEST_LIMIT},
    Builder, DockerfileChoice, DockerfileWriter, HealthCheck, PlanOptions, SourcePlan, MARKERS,
};

/// The compose file a root directory deploys, if any: the one `cantila.toml` names
/// (`compose = "..."` under `[build]`), else the first of `COMPOSE_FILES` when nothing
/// else would be built there (no Dockerfile, no runtime's files, no runtime hint, no
/// Dockerfile setting). A compose file left unused beside a Dockerfile or a runtime's
/// files is said in `warnings`, with how to use it.
pub(super) fn choose(
    root: &Path,
    root_dir: &RootDir,
    named: Option<&str>,
    hint: Option<Runtime>,
    dockerfile_set: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, Error> {
    let mut tree = SourceTree::open(root)?;
    if let Some(named) = named {
        if !tree.is_file(named) {
            return Err(Error::Invalid(format!(
                "`compose = \"{named}\"` in cantila.toml names a file the root directory `{root_dir}` does not have; fix it"
            )));
        }
        return Ok(Some(named.to_owned()));
    }
    let Some(found) = COMPOSE_FILES.iter().find(|name| tree.is_file(name)) else {
        return Ok(None);
    };
    let other = MARKERS
        .iter()
        .flat_map(|(_, files)| files.iter())
        .find(|file| tree.is_file(file));
    let reason = match (other, hint, dockerfile_set) {
        (_, _, true) => Some("the build settings name a Dockerfile".to_owned()),
        (_, Some(hint), _) => Some(format!("the project's runtime hint is `{}`", hint.as_str())),
        (Some(file), _, _) => Some(format!("the root directory has {file}")),
        (None, None, false) => None,
    };
    match reason {
        Some(reason) => {
            warnings.push(format!(
                "{} is not deployed: {reason}; set `compose = \"{found}\"` under [build] in cantila.toml to deploy it",
                root_dir.join(found)
            ));
            Ok(None)
        }
        None => Ok(Some((*found).to_owned())),
    }
}

/// The repository's files, as the stack asks for them (paths of the repository).
struct RepoFiles<'a> {
    repo: &'a Path,
}

impl Files for RepoFiles<'_> {
    fn read(&mut self, path: &str) -> Result<Option<String>, String> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir_path = if dir.is_empty() {
            self.repo.to_owned()
        } else {
            match checked_path(self.repo, dir, true) {
                Ok(dir_path) => dir_path,
                Err(_) => return Ok(None),
            }
        };
        if std::fs::symlink_metadata(dir_path.join(name)).is_err() {
            return Ok(None);
        }
        checked_path(&dir_path, name, false)?;
        let mut tree = SourceTree::open(&dir_path).map_err(|err| err.to_string())?;
        match tree.read_text(name, MANIFEST_LIMIT) {
            Ok(Some(Ok(text))) => Ok(Some(text)),
            Ok(Some(Err(failure))) => Err(failure.describe(path)),
            Ok(None) => Ok(None),
            Err(err) => Err(err.to_string()),
        }
    }

    fn directory(&mut self, path: &str) -> Result<(), String> {
        checked_path(self.repo, path, true).map(|_| ())
    }
}

/// What the settings file and the API contribute to a compose plan.
pub(super) struct ComposeInputs<'a> {
    pub repo_tree: &'a Path,
    pub root_dir: &'a RootDir,
    /// The compose file's name in the root directory.
    pub file: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub watch_paths: Vec<String>,
    pub config_file: Option<String>,
    pub file_health: Option<HealthCheckSettings>,
    pub file_jobs: Vec<JobSpec>,
    pub warnings: Vec<String>,
}

/// Plans a compose project: loads and checks the stack, checks every build's context and
/// Dockerfile, and plans the public service as the project's web.
pub(super) fn plan(
    inputs: ComposeInputs<'_>,
    options: &PlanOptions<'_>,
) -> Result<(SourcePlan, BuildPlan), Error> {
    let shown = inputs.root_dir.join(inputs.file);
    let root_path = inputs.repo_tree.join(inputs.root_dir.as_str());
    let mut root = SourceTree::open(&root_path)?;
    let text = match root.read_text(inputs.file, stack::parse::COMPOSE_LIMIT)? {
        Some(Ok(text)) => text,
        Some(Err(failure)) => return Err(Error::Invalid(failure.describe(&shown))),
        None => {
            return Err(Error::Invalid(format!(
                "{shown} is not a file of the repository"
            )))
        }
    };
    let mut files = RepoFiles {
        repo: inputs.repo_tree,
    };
    let stack = stack::load(&shown, &text, inputs.env, &mut files)?;
    for service in stack.services.iter().chain(std::iter::once(&stack.public)) {
        if let Some(build) = &service.build {
            check_build(inputs.repo_tree, &service.name, build)?;
        }
    }
    let public = &stack.public;
    let (mut source, build) = match &public.build {
        Some(build) => {
            let context = inputs.repo_tree.join(&build.context);
            let dockerfile = build.dockerfile.as_deref().unwrap_or("Dockerfile");
            let source = plan_tree_with(
                &context,
                options,
                DockerfileChoice {
                    path: Some(dockerfile),
                    target: build.target.as_deref(),
                },
            )
            .map_err(|err| match err {
                Error::Invalid(message) => Error::Invalid(format!(
                    "{shown}: the public service `{}`: {}",
                    public.name,
                    message
                        .replace("fix build.target", "fix its `build.target`")
                        .replace("fix build.dockerfile", "fix its `build.dockerfile`")
                )),
                other => other,
            })?;
            (source, Some(build.clone()))
        }
        None => (image_plan(public)?, None),
    };
    apply_public(&mut source, &stack)?;
    source.warnings.extend(inputs.warnings);
    source.warnings.extend(stack.warnings.iter().cloned());
    let from_file = SettingSource::File;
    let build_plan = BuildPlan {
        root_dir: build.as_ref().map_or_else(
            || inputs.root_dir.as_str().to_owned(),
            |b| b.context.clone(),
        ),
        dockerfile: build.as_ref().map(|b| {
            b.dockerfile
                .clone()
                .unwrap_or_else(|| "Dockerfile".to_owned())
        }),
        target: build.as_ref().and_then(|b| b.target.clone()),
        build_args: build.as_ref().map(|b| b.args.clone()).unwrap_or_default(),
        watch_paths: inputs.watch_paths,
        secrets: Vec::new(),
        config_file: inputs.config_file,
        sources: BuildSources {
            root_dir: from_file,
            dockerfile: from_file,
            target: from_file,
            build_args: from_file,
            watch_paths: SettingSource::Detection,
        },
        file_health: inputs.file_health,
        file_jobs: inputs.file_jobs,
        stack: Some(stack),
    };
    Ok((source, build_plan))
}

/// A build's context is a real directory of the checkout and its Dockerfile a real file
/// in it; the target and the args' names are ones a build accepts.
fn check_build(repo: &Path, service: &str, build: &stack::Build) -> Result<(), Error> {
    let key = |field: &str| format!("`services.{service}.build.{field}`");
    let context = checked_path(repo, &build.context, true).map_err(|why| {
        Error::Invalid(format!(
            "{} `{}` cannot be used: {why}",
            key("context"),
            build.context
        ))
    })?;
    let dockerfile = build.dockerfile.as_deref().unwrap_or("Dockerfile");
    DockerfilePath::parse(dockerfile)
        .map_err(|err| Error::Invalid(format!("{}: {err}", key("dockerfile"))))?;
    checked_path(&context, dockerfile, false).map_err(|why| {
        Error::Invalid(format!(
            "{} `{dockerfile}` in the context `{}` cannot be used: {why}",
            key("dockerfile"),
            build.context
        ))
    })?;
    if let Some(target) = &build.target {
        BuildTarget::parse(target)
            .map_err(|err| Error::Invalid(format!("{}: {err}", key("target"))))?;
    }
    for name in build.args.keys() {
        BuildName::parse(name).map_err(|err| Error::Invalid(format!("{}: {err}", key("args"))))?;
    }
    Ok(())
}

/// The public service from an image: a one-line Dockerfile on it (so its release goes the
/// build path, with the account's registry credentials for a private image), with the
/// file's entrypoint and command as exec-form instructions.
fn image_plan(public: &StackService) -> Result<SourcePlan, Error> {
    let image = public.image.as_deref().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if image.is_empty() || !image.chars().all(allowed) || image.starts_with('-') {
        return Err(Error::Invalid(format!(
            "`services.{}.image` `{image}` is not an image reference such as `nginx:1.27` or `ghcr.io/owner/app:1`",
            public.name
        )));
    }
    let mut dockerfile = DockerfileWriter::new();
    dockerfile.line(format!("FROM {image}"));
    if let Some(entrypoint) = &public.entrypoint {
        let args: Vec<&str> = entrypoint.iter().map(String::as_str).collect();
        dockerfile.exec("ENTRYPOINT", &args);
    }
    if let Some(command) = &public.command {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        dockerfile.exec("CMD", &args);
    }
    Ok(SourcePlan {
        runtime: Runtime::Dockerfile,
        builder: Builder::Generated,
        dockerfile: Some(dockerfile.finish()?),
        port: 0,
        start_command: public.command.as_ref().map(|c| c.join(" ")),
        processes: BTreeMap::new(),
        release_command: None,
        health_check: HealthCheck::http(),
        static_root: None,
        assets_dir: None,
        warnings: Vec::new(),
        image: None,
    })
}

/// The compose file's settings of the public service over its planned source: its port,
/// and for a built service its command (as the web process) and entrypoint.
fn apply_public(source: &mut SourcePlan, stack: &Stack) -> Result<(), Error> {
    let public = &stack.public;
    source.port = stack.public_port;
    // The Dockerfile's EXPOSE does not choose the port here: the compose file did.
    source.warnings.retain(|w| {
        !w.starts_with("the Dockerfile has no EXPOSE")
            && !w.starts_with("the Dockerfile exposes several ports")
    });
    if source.health_check.kind == super::HealthCheckKind::None && source.builder != Builder::Static
    {
        source.health_check = HealthCheck::http();
    }
    if public.build.is_some() {
        if public.entrypoint.is_some() {
            source.warnings.push(format!(
                "`services.{}.entrypoint` is not applied to a built public service: set ENTRYPOINT in its Dockerfile",
                public.name
            ));
        }
        if let Some(command) = &public.command {
            let line = shell_line(command);
            source.start_command = Some(line.clone());
            source.processes.insert("web".to_owned(), line);
        }
    }
    Ok(())
}

/// An argument list as one `sh -c` line that runs exactly those arguments (each single-
/// quoted), with `exec` so the process receives the container's signals.
pub fn shell_line(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect();
    format!("exec {}", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::BuildImages, model::build::BuildSettings};

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
    }

    fn plan_dir(root: &Path) -> Result<(SourcePlan, BuildPlan), Error> {
        let images = BuildImages::default();
        super::super::plan_repository(
            root,
            &BuildSettings::default(),
            &PlanOptions {
                runtime_hint: None,
                images: &images,
            },
            &BTreeMap::new(),
        )
    }

    const COMPOSE: &str = "services:\n  web:\n    build: ./app\n    command: [\"node\", \"it's.js\"]\n    ports: [\"3000\"]\n    depends_on: [cache]\n  cache:\n    image: redis:7\n";

    #[test]
    fn a_root_without_a_dockerfile_deploys_its_compose_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("compose.yaml", COMPOSE),
                ("app/Dockerfile", "FROM busybox\nEXPOSE 8080\n"),
            ],
        );
        let (source, build) = plan_dir(dir.path()).unwrap();
        assert_eq!(source.port, 3000);
        assert_eq!(source.processes["web"], r#"exec 'node' 'it'\''s.js'"#);
        assert_eq!(build.root_dir, "app");
        assert_eq!(build.dockerfile.as_deref(), Some("Dockerfile"));
        let stack = build.stack.unwrap();
        assert_eq!(stack.services[0].name, "cache");
        assert!(
            source.warnings.iter().all(|w| !w.contains("EXPOSE")),
            "{:?}",
            source.warnings
        );
    }

    #[test]
    fn a_dockerfile_or_a_runtime_keeps_the_compose_file_for_development() {
        for other in [
            ("Dockerfile", "FROM busybox\n"),
            ("package.json", "{\"scripts\":{\"start\":\"node a.js\"}}"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &[("docker-compose.yml", COMPOSE), other]);
            let (source, build) = plan_dir(dir.path()).unwrap();
            assert!(build.stack.is_none());
            assert!(
                source
                    .warnings
                    .iter()
                    .any(|w| w.contains("docker-compose.yml is not deployed")
                        && w.contains("compose = \"docker-compose.yml\"")),
                "{:?}",
                source.warnings
            );
        }
        // Named in cantila.toml, it is deployed even beside a Dockerfile.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("docker-compose.yml", COMPOSE),
                ("Dockerfile", "FROM busybox\n"),
                ("app/Dockerfile", "FROM busybox\n"),
                (
                    "cantila.toml",
                    "[build]\ncompose = \"docker-compose.yml\"\n",
                ),
            ],
        );
        let (_, build) = plan_dir(dir.path()).unwrap();
        assert_eq!(build.stack.unwrap().file, "docker-compose.yml");
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("cantila.toml", "[build]\ncompose = \"prod.yaml\"\n"),
                ("Dockerfile", "FROM busybox\n"),
            ],
        );
        let err = plan_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`compose = \"prod.yaml\"`"), "{err}");
    }

    #[test]
    fn an_image_public_service_runs_from_a_generated_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[(
                "compose.yaml",
                "services:\n  site:\n    image: nginx:1.27\n    entrypoint: [\"/docker-entrypoint.sh\"]\n    command: nginx -g 'daemon off;'\n    ports: [\"80\"]\n",
            )],
        );
        let (source, build) = plan_dir(dir.path()).unwrap();
        assert_eq!(source.builder, Builder::Generated);
        assert_eq!(
            source.dockerfile.as_deref().unwrap(),
            "FROM nginx:1.27\nENTRYPOINT [\"/docker-entrypoint.sh\"]\nCMD [\"nginx\", \"-g\", \"daemon off;\"]\n"
        );
        assert_eq!(source.port, 80);
        assert_eq!(build.dockerfile, None);
        write(
            dir.path(),
            &[(
                "compose.yaml",
                "services:\n  site:\n    image: \"nginx\\nRUN rm -rf /\"\n    ports: [\"80\"]\n",
            )],
        );
        assert!(plan_dir(dir.path()).is_err());
    }

    #[test]
    fn build_contexts_and_dockerfiles_must_be_real_paths_of_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), &[("Dockerfile", "FROM busybox\n")]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        write(
            dir.path(),
            &[(
                "compose.yaml",
                "services:\n  web: {image: busybox, ports: ['80']}\n  worker: {build: escape}\n",
            )],
        );
        let err = plan_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("services.worker.build.context") && err.contains("symlink"),
            "{err}"
        );
        write(
            dir.path(),
            &[
                ("worker/Dockerfile.dev", "FROM busybox\n"),
                (
                    "compose.yaml",
                    "services:\n  web: {image: busybox, ports: ['80']}\n  worker: {build: {context: worker, dockerfile: Dockerfile}}\n",
                ),
            ],
        );
        let err = plan_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("services.worker.build.dockerfile") && err.contains("does not exist"),
            "{err}"
        );
    }
}
