//! Build settings meet the tree: the repository's `cantila.toml` is read, merged under the
//! API's settings (the API wins, the file beats detection), the root directory and the
//! Dockerfile are checked to be real paths inside the checkout, and the root directory is
//! planned. The result says where each setting came from.
//! Invariant: the directory planned and archived is a real directory of the checkout, and
//! the Dockerfile a real file inside it; no symlink on the way is followed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    model::{
        build::{
            BuildName, BuildSettings, BuildTarget, DockerfilePath, RootDir, SettingSource,
            WatchPath,
        },
        health::{HealthCheckFields, HealthCheckSettings},
        job::{JobFields, JobSpec, MAX_JOBS_PER_PROJECT},
    },
};

use super::{plan_tree_with, tree::SourceTree, Builder, DockerfileChoice, PlanOptions, SourcePlan};

/// The settings file's name, read at the root directory.
pub const CONFIG_FILE: &str = "cantila.toml";

/// The most of `cantila.toml` that is read; a settings file is a few lines.
const CONFIG_LIMIT: u64 = 64 * 1024;

/// `cantila.toml` as read: its `[build]` settings, its `[health]` check settings and its
/// `[[jobs]]` (scheduled jobs, in the file's order).
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    pub build: BuildSettings,
    /// `compose = "..."` under `[build]`: the compose file of the root directory to deploy.
    pub compose: Option<String>,
    pub health: Option<HealthCheckSettings>,
    pub jobs: Vec<JobSpec>,
}

/// The file's shape: keys are snake_case, and anything else is an error naming it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDocument {
    #[serde(default)]
    build: Option<FileBuild>,
    #[serde(default)]
    health: Option<HealthCheckFields>,
    #[serde(default)]
    jobs: Vec<JobFields>,
}

/// The `[health]` table's keys with their places in the file, read again only to say
/// where a value that parsed but is out of bounds was written.
#[derive(Deserialize)]
struct HealthKeys {
    #[serde(default)]
    health: BTreeMap<toml::Spanned<String>, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBuild {
    #[serde(default)]
    root_dir: Option<RootDir>,
    #[serde(default)]
    dockerfile: Option<DockerfilePath>,
    #[serde(default)]
    target: Option<BuildTarget>,
    #[serde(default)]
    build_args: BTreeMap<BuildName, String>,
    #[serde(default)]
    watch_paths: Vec<WatchPath>,
    #[serde(default)]
    compose: Option<DockerfilePath>,
}

/// Parses `cantila.toml`; `shown` is its path in the repository, for messages. An unknown
/// key or a bad value is a 422 naming the file, the line and the key or value.
pub fn parse_file_settings(text: &str, shown: &str) -> Result<FileSettings, Error> {
    let line_of = |at: usize| {
        text.get(..at)
            .map(|before| before.matches('\n').count() + 1)
    };
    let document: FileDocument = toml::from_str(text).map_err(|err| {
        let line = err.span().and_then(|span| line_of(span.start));
        let at = line.map(|line| format!(" line {line}")).unwrap_or_default();
        Error::Invalid(format!(
            "{shown}{at}: {}",
            err.message().trim_end().replace('\n', " ")
        ))
    })?;
    let health = document
        .health
        .map(HealthCheckSettings::try_from)
        .transpose()
        .map_err(|err| health_error(err, text, shown, &line_of))?;
    let compose = document
        .build
        .as_ref()
        .and_then(|file| file.compose.as_ref())
        .map(|path| path.as_str().to_owned());
    let build = match document.build {
        Some(file) => BuildSettings {
            root_dir: file.root_dir.filter(|root| !root.is_repository()),
            dockerfile: file.dockerfile,
            target: file.target,
            build_args: file.build_args,
            watch_paths: file.watch_paths,
        },
        None => BuildSettings::default(),
    };
    build
        .check_limits()
        .map_err(|err| Error::Invalid(format!("{shown}: {err}")))?;
    let jobs = check_jobs(document.jobs, shown)?;
    Ok(FileSettings {
        build,
        compose,
        health,
        jobs,
    })
}

/// Checks the file's `[[jobs]]`: each as the API checks a job (messages name the table by
/// its place, `jobs[2].schedule`), names unique, at most `MAX_JOBS_PER_PROJECT`.
fn check_jobs(declared: Vec<JobFields>, shown: &str) -> Result<Vec<JobSpec>, Error> {
    if declared.len() > MAX_JOBS_PER_PROJECT {
        return Err(Error::Invalid(format!(
            "{shown}: {} [[jobs]] are declared; a project may have at most {MAX_JOBS_PER_PROJECT}",
            declared.len()
        )));
    }
    let mut jobs: Vec<JobSpec> = Vec::with_capacity(declared.len());
    for (index, fields) in declared.into_iter().enumerate() {
        let place = format!("jobs[{}].", index + 1);
        let job = JobSpec::check(fields, &place).map_err(|err| match err {
            Error::Invalid(message) => Error::Invalid(format!("{shown}: {message}")),
            other => other,
        })?;
        if jobs.iter().any(|other| other.name == job.name) {
            return Err(Error::Invalid(format!(
                "{shown}: `{place}name` `{}` is declared twice; job names are unique within a project",
                job.name
            )));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// A `[health]` value out of bounds, said with the key as the file writes it and its line:
/// the check's messages start with the field's API name (`statusMin`), which the file may
/// spell `status_min`.
fn health_error(
    err: Error,
    text: &str,
    shown: &str,
    line_of: &dyn Fn(usize) -> Option<usize>,
) -> Error {
    let message = match err {
        Error::Invalid(message) => message,
        other => return other,
    };
    let field = message
        .strip_prefix('`')
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_owned());
    let written = field.as_deref().and_then(|field| {
        toml::from_str::<HealthKeys>(text)
            .ok()?
            .health
            .into_keys()
            .find(|key| camel_case(key.get_ref()) == field)
    });
    match (field, written) {
        (Some(field), Some(key)) => {
            let at = line_of(key.span().start)
                .map(|line| format!(" line {line}"))
                .unwrap_or_default();
            let rest = &message[field.len() + 2..];
            Error::Invalid(format!(
                "{shown}{at}: `{}`{rest} (in [health])",
                key.get_ref()
            ))
        }
        _ => Error::Invalid(format!("{shown} [health]: {message}")),
    }
}

/// `status_min` as the API spells it: `statusMin`.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `cantila.toml` in `dir` (a checked directory of the checkout): `None` when there
/// is none. `shown` is the file's path in the repository.
pub fn read_file_settings(dir: &Path, shown: &str) -> Result<Option<FileSettings>, Error> {
    let mut tree = SourceTree::open(dir)?;
    match tree.read_text(CONFIG_FILE, CONFIG_LIMIT)? {
        None => Ok(None),
        Some(Ok(text)) => parse_file_settings(&text, shown).map(Some),
        Some(Err(failure)) => Err(Error::Invalid(failure.describe(shown))),
    }
}

/// The build as planned: what applies, and where each setting came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildPlan {
    /// The build context: a directory of the repository (`.` = its root).
    #[schema(example = "apps/web")]
    pub root_dir: String,
    /// The Dockerfile built, relative to the root directory; null for a generated one or
    /// a static site.
    #[schema(example = "docker/Dockerfile")]
    pub dockerfile: Option<String>,
    /// The stage built; null = the Dockerfile's last stage.
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Globs of repository paths a push must touch to deploy; empty = every push deploys.
    pub watch_paths: Vec<String>,
    /// Names of the build secrets the build gets (their values are never in a plan).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The settings file read, as a path of the repository; null when there is none.
    pub config_file: Option<String>,
    pub sources: BuildSources,
    /// The settings file's `[health]` table: the deploy plan applies it to the health
    /// check (unless the project's own settings win) and shows it there, not here.
    #[serde(skip)]
    pub file_health: Option<HealthCheckSettings>,
    /// The settings file's `[[jobs]]`: the deploy plan shows them (`jobs`), and a
    /// production release makes the project's `cantila.toml` jobs match them.
    #[serde(skip)]
    pub file_jobs: Vec<JobSpec>,
    /// For a compose project: the checked stack. The public service is what this plan
    /// builds; the deploy builds and runs the others (the deploy plan shows them all
    /// under `compose`).
    #[serde(skip)]
    pub stack: Option<crate::stack::Stack>,
}

/// Where each build setting came from: `api`, `file` (`cantila.toml`) or `detection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSources {
    pub root_dir: SettingSource,
    pub dockerfile: SettingSource,
    pub target: SettingSource,
    pub build_args: SettingSource,
    pub watch_paths: SettingSource,
}

/// The API's value when it has one, else the file's, else none (detection decides).
fn pick<T>(api: Option<T>, file: Option<T>) -> (Option<T>, SettingSource) {
    match (api, file) {
        (Some(value), _) => (Some(value), SettingSource::Api),
        (None, Some(value)) => (Some(value), SettingSource::File),
        (None, None) => (None, SettingSource::Detection),
    }
}

/// How a message names a setting: the API's field or the file's key.
fn setting(source: SettingSource, api: &str, file: &str, config_file: Option<&str>) -> String {
    match (source, config_file) {
        (SettingSource::File, Some(path)) => format!("`{file}` in {path}"),
        _ => format!("build.{api}"),
    }
}

/// Checks that `relative` leads from `base` through real directories (no symlink, which
/// could lead outside the checkout) to a directory (`want_dir`) or a regular file.
pub(super) fn checked_path(base: &Path, relative: &str, want_dir: bool) -> Result<PathBuf, String> {
    let mut path = base.to_owned();
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    for (index, part) in parts.iter().enumerate() {
        path.push(part);
        let walked = parts[..=index].join("/");
        let metadata = std::fs::symlink_metadata(&path)
            .map_err(|_| format!("`{walked}` does not exist at this commit"))?;
        let last = index + 1 == parts.len();
        if metadata.file_type().is_symlink() {
            return Err(format!(
                "`{walked}` is a symlink; it must be a real path of the repository, since a link could lead outside it"
            ));
        }
        let fits = if last && !want_dir {
            metadata.is_file()
        } else {
            metadata.is_dir()
        };
        if !fits {
            let kind = if last && !want_dir {
                "a file"
            } else {
                "a directory"
            };
            return Err(format!("`{walked}` is not {kind}"));
        }
    }
    Ok(path)
}

/// Plans the checkout at `repo_tree` with the project's API settings: reads the root
/// directory's `cantila.toml`, merges (API over file over detection), checks the root
/// directory and the Dockerfile are real paths inside the checkout, and plans the root
/// directory. Fails with a 422 naming the setting and where it came from.
pub fn plan_with_settings(
    repo_tree: &Path,
    api: &BuildSettings,
    options: &PlanOptions<'_>,
) -> Result<(SourcePlan, BuildPlan), Error> {
    plan_repository(repo_tree, api, options, &BTreeMap::new())
}

/// `plan_with_settings`, with the project's env for a compose file's `${VAR}`s. A root
/// directory whose compose file is deployed (`compose::choose`) is planned as a stack.
pub fn plan_repository(
    repo_tree: &Path,
    api: &BuildSettings,
    options: &PlanOptions<'_>,
    env: &BTreeMap<String, String>,
) -> Result<(SourcePlan, BuildPlan), Error> {
    let mut warnings = Vec::new();
    // The file is read where the API puts the root, or at the repository's root.
    let api_root = api.root_dir.clone().unwrap_or_else(RootDir::repository);
    let api_root_path = checked_path(repo_tree, api_root.as_str(), true).map_err(|why| {
        Error::Invalid(format!(
            "build.rootDir `{api_root}` cannot be used: {why}; fix build.rootDir"
        ))
    })?;
    let shown = api_root.join(CONFIG_FILE);
    let file = read_file_settings(&api_root_path, &shown)?;
    let config_file = file.as_ref().map(|_| shown.clone());
    let (file_build, file_health, file_jobs, file_compose) = file
        .map(|f| (f.build, f.health, f.jobs, f.compose))
        .unwrap_or_default();

    if api.root_dir.is_some() {
        if let Some(ignored) = &file_build.root_dir {
            warnings.push(format!(
                "`root_dir = \"{ignored}\"` in {shown} was ignored: the project's build.rootDir is set"
            ));
        }
    }
    let (root_dir, root_source) = pick(api.root_dir.clone(), file_build.root_dir.clone());
    let root_dir = root_dir.unwrap_or_else(RootDir::repository);
    let root_path = if root_source == SettingSource::File {
        checked_path(repo_tree, root_dir.as_str(), true).map_err(|why| {
            Error::Invalid(format!(
                "`root_dir` in {shown} cannot be used: {why}; fix it"
            ))
        })?
    } else {
        api_root_path
    };
    let compose_file = super::compose::choose(
        &root_path,
        &root_dir,
        file_compose.as_deref(),
        options.runtime_hint,
        api.dockerfile.is_some() || file_build.dockerfile.is_some(),
        &mut warnings,
    )?;
    if let Some(compose_file) = compose_file {
        let watch_paths = api
            .watch_paths
            .iter()
            .chain(
                file_build
                    .watch_paths
                    .iter()
                    .filter(|_| api.watch_paths.is_empty()),
            )
            .map(|path| path.as_str().to_owned())
            .collect();
        return super::compose::plan(
            super::compose::ComposeInputs {
                repo_tree,
                root_dir: &root_dir,
                file: &compose_file,
                env,
                watch_paths,
                config_file,
                file_health,
                file_jobs,
                warnings,
            },
            options,
        );
    }
    let named =
        |source, api_key, file_key| setting(source, api_key, file_key, config_file.as_deref());

    let (dockerfile, dockerfile_source) =
        pick(api.dockerfile.clone(), file_build.dockerfile.clone());
    if let Some(path) = &dockerfile {
        checked_path(&root_path, path.as_str(), false).map_err(|why| {
            Error::Invalid(format!(
                "{} names the Dockerfile `{path}` in the root directory `{root_dir}`, which cannot be used: {why}",
                named(dockerfile_source, "dockerfile", "dockerfile")
            ))
        })?;
    }
    let (target, target_source) = pick(api.target.clone(), file_build.target.clone());
    let (build_args, args_source) = pick(
        Some(api.build_args.clone()).filter(|args| !args.is_empty()),
        Some(file_build.build_args.clone()).filter(|args| !args.is_empty()),
    );
    let (watch_paths, watch_source) = pick(
        Some(api.watch_paths.clone()).filter(|paths| !paths.is_empty()),
        Some(file_build.watch_paths.clone()).filter(|paths| !paths.is_empty()),
    );

    let choice = DockerfileChoice {
        path: dockerfile.as_ref().map(DockerfilePath::as_str),
        target: target.as_ref().map(BuildTarget::as_str),
    };
    let mut source_plan = plan_tree_with(&root_path, options, choice).map_err(|err| match err {
        // A build target's stage is named by the setting that chose it.
        Error::Invalid(message) if message.ends_with("fix build.target") => {
            Error::Invalid(message.replace(
                "fix build.target",
                &format!("fix {}", named(target_source, "target", "target")),
            ))
        }
        other => other,
    })?;
    source_plan.warnings.extend(warnings);
    let planned_dockerfile = match source_plan.builder {
        Builder::Dockerfile => Some(
            dockerfile
                .as_ref()
                .map_or_else(|| "Dockerfile".to_owned(), |path| path.to_string()),
        ),
        Builder::Generated | Builder::Static | Builder::Image => None,
    };
    let build = BuildPlan {
        root_dir: root_dir.to_string(),
        dockerfile: planned_dockerfile,
        target: target
            .filter(|_| source_plan.builder == Builder::Dockerfile)
            .map(|target| target.to_string()),
        build_args: build_args
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
        watch_paths: watch_paths
            .unwrap_or_default()
            .iter()
            .map(|path| path.as_str().to_owned())
            .collect(),
        secrets: Vec::new(),
        config_file,
        sources: BuildSources {
            root_dir: root_source,
            dockerfile: dockerfile_source,
            target: target_source,
            build_args: args_source,
            watch_paths: watch_source,
        },
        file_health,
        file_jobs,
        stack: None,
    };
    Ok((source_plan, build))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BuildImages;

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
    }

    fn plan(root: &Path, api: &BuildSettings) -> Result<(SourcePlan, BuildPlan), Error> {
        let images = BuildImages::default();
        plan_with_settings(
            root,
            api,
            &PlanOptions {
                runtime_hint: None,
                images: &images,
            },
        )
    }

    fn message(err: Error) -> String {
        match err {
            Error::Invalid(message) => message,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn jobs_tables_are_read_and_each_fault_names_the_table_and_key() {
        let file = parse_file_settings(
            r#"
[[jobs]]
name = "digest"
schedule = "daily at 03:00"
time_zone = "Europe/Paris"
command = ["python", "manage.py", "send_digest"]
timeout_secs = 600

[[jobs]]
name = "sweep"
schedule = "every 15m"
command = ["sh", "-c", "echo sweep"]
concurrency = "allow"
"#,
            "cantila.toml",
        )
        .unwrap();
        let names: Vec<&str> = file.jobs.iter().map(|job| job.name.as_str()).collect();
        assert_eq!(names, ["digest", "sweep"]);
        assert_eq!(file.jobs[0].timeout_secs, 600);
        assert_eq!(file.jobs[0].zone.as_ref().unwrap().as_str(), "Europe/Paris");
        let check = |text: &str, expected: &[&str]| {
            let shown = message(parse_file_settings(text, "apps/cantila.toml").unwrap_err());
            for part in expected {
                assert!(shown.contains(part), "{shown} lacks {part}");
            }
        };
        let job = |extra: &str| {
            format!("[[jobs]]\nname = \"a\"\nschedule = \"hourly\"\ncommand = [\"true\"]\n{extra}")
        };
        check(
            &job("[[jobs]]\nname = \"b\"\nschedule = \"every 5s\"\ncommand = [\"true\"]\n"),
            &[
                "apps/cantila.toml",
                "`jobs[2].schedule`",
                "every 15m",
                "daily at HH:MM",
            ],
        );
        check(
            &job("[[jobs]]\nname = \"b\"\nschedule = \"hourly\"\ncommand = []\n"),
            &["apps/cantila.toml", "`jobs[2].command`", "empty"],
        );
        check(
            &job("[[jobs]]\nname = \"a\"\nschedule = \"hourly\"\ncommand = [\"true\"]\n"),
            &["`jobs[2].name`", "declared twice"],
        );
        check(
            &job("shell = \"bash\"\n"),
            &["apps/cantila.toml line 5", "`shell`"],
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let err = parse_file_settings(
            "[build]\ntarget = \"prod\"\nwatch = [\"a/**\"]\n",
            "cantila.toml",
        )
        .unwrap_err();
        let text = message(err);
        assert!(
            text.contains("line 3") && text.contains("`watch`"),
            "{text}"
        );
        let err = parse_file_settings("[deploy]\nx = 1\n", "apps/web/cantila.toml").unwrap_err();
        let text = message(err);
        assert!(
            text.contains("apps/web/cantila.toml line 1") && text.contains("`deploy`"),
            "{text}"
        );
        let err =
            parse_file_settings("[build]\n\nroot_dir = \"../up\"\n", "cantila.toml").unwrap_err();
        let text = message(err);
        assert!(text.contains("line 3") && text.contains(".."), "{text}");
        let parsed = parse_file_settings(
            "[build]\nroot_dir = \"apps/web\"\nbuild_args = { K = \"V\" }\nwatch_paths = [\"apps/web/**\"]\n[health]\npath = \"/up\"\n",
            "cantila.toml",
        )
        .unwrap();
        assert_eq!(parsed.build.root_dir.unwrap().as_str(), "apps/web");
        assert_eq!(parsed.build.build_args.len(), 1);
        assert_eq!(
            parsed.health.unwrap().path.map(|p| p.as_str().to_owned()),
            Some("/up".to_owned())
        );
    }

    #[test]
    fn the_health_table_is_checked_naming_the_key_and_line() {
        let parsed = parse_file_settings(
            "[health]\ntype = \"http\"\npath = \"/healthz\"\nstatus_max = 399\nstartPeriodSecs = 5\n",
            "cantila.toml",
        )
        .unwrap()
        .health
        .unwrap();
        assert_eq!(parsed.status_range(), (200, 399));
        assert_eq!(parsed.start_period_secs, Some(5));
        for (text, names) in [
            (
                "[health]\npath = \"/\"\n\npaht = \"/x\"\n",
                ["line 4", "`paht`"],
            ),
            (
                "[build]\n[health]\n\nstatus_min = 50\n",
                ["line 4", "`status_min` 50"],
            ),
            ("[health]\nstatusMax = 600\n", ["line 2", "`statusMax` 600"]),
            ("[health]\npath = \"healthz\"\n", ["line 2", "`path`"]),
            (
                "[health]\ntype = \"tcp\"\n\npath = \"/\"\n",
                ["line 4", "`path` does not apply"],
            ),
            ("[health]\nport = \"80\"\n", ["line 2", "string"]),
        ] {
            let text_shown = message(parse_file_settings(text, "apps/cantila.toml").unwrap_err());
            assert!(
                text_shown.starts_with("apps/cantila.toml line"),
                "{text_shown}"
            );
            for name in names {
                assert!(text_shown.contains(name), "{text}: {text_shown}");
            }
        }
    }

    #[test]
    fn the_api_wins_over_the_file_and_the_file_over_detection() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("cantila.toml", "[build]\nroot_dir = \"apps/web\"\n"),
                ("apps/web/cantila.toml", "[build]\ntarget = \"prod\"\n"),
                (
                    "apps/web/Dockerfile",
                    "FROM busybox AS prod\nEXPOSE 3000\nFROM busybox\nEXPOSE 4000\n",
                ),
                (
                    "apps/web/docker/Dockerfile.dev",
                    "FROM busybox\nEXPOSE 5000\n",
                ),
            ],
        );
        // The repository's file moves the root; the file there is not read again.
        let (source, build) = plan(dir.path(), &BuildSettings::default()).unwrap();
        assert_eq!(build.root_dir, "apps/web");
        assert_eq!(build.sources.root_dir, SettingSource::File);
        assert_eq!(build.sources.dockerfile, SettingSource::Detection);
        assert_eq!(build.target, None);
        assert_eq!(source.port, 4000);
        // With the API's root, that directory's file applies: its target picks the stage.
        let api = BuildSettings {
            root_dir: Some(RootDir::parse("apps/web").unwrap()),
            ..Default::default()
        };
        let (source, build) = plan(dir.path(), &api).unwrap();
        assert_eq!(build.sources.root_dir, SettingSource::Api);
        assert_eq!(build.target.as_deref(), Some("prod"));
        assert_eq!(build.sources.target, SettingSource::File);
        assert_eq!(build.config_file.as_deref(), Some("apps/web/cantila.toml"));
        assert_eq!(source.port, 3000);
        // The API's Dockerfile and target beat the file's.
        let api = BuildSettings {
            root_dir: Some(RootDir::parse("apps/web").unwrap()),
            dockerfile: Some(DockerfilePath::parse("docker/Dockerfile.dev").unwrap()),
            ..Default::default()
        };
        let err = message(plan(dir.path(), &api).unwrap_err());
        assert!(
            err.contains("`prod` is not a stage")
                && err.contains("`target` in apps/web/cantila.toml"),
            "{err}"
        );
    }

    #[test]
    fn roots_and_dockerfiles_must_be_real_paths_inside_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), &[("Dockerfile", "FROM busybox\n")]);
        write(dir.path(), &[("apps/web/index.html", "hi")]);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("Dockerfile"),
            dir.path().join("apps/web/Dockerfile.link"),
        )
        .unwrap();
        let with = |root: &str, dockerfile: Option<&str>| BuildSettings {
            root_dir: Some(RootDir::parse(root).unwrap()),
            dockerfile: dockerfile.map(|d| DockerfilePath::parse(d).unwrap()),
            ..Default::default()
        };
        let err = message(plan(dir.path(), &with("escape", None)).unwrap_err());
        assert!(
            err.contains("build.rootDir") && err.contains("symlink"),
            "{err}"
        );
        let err = message(plan(dir.path(), &with("apps/api", None)).unwrap_err());
        assert!(
            err.contains("build.rootDir") && err.contains("does not exist"),
            "{err}"
        );
        let err =
            message(plan(dir.path(), &with("apps/web", Some("Dockerfile.link"))).unwrap_err());
        assert!(
            err.contains("build.dockerfile") && err.contains("symlink"),
            "{err}"
        );
        let err = message(plan(dir.path(), &with("apps/web", Some("Missing"))).unwrap_err());
        assert!(
            err.contains("build.dockerfile") && err.contains("does not exist"),
            "{err}"
        );
        let (source, build) = plan(dir.path(), &with("apps/web", None)).unwrap();
        assert_eq!(source.builder, Builder::Static);
        assert_eq!(build.dockerfile, None);
    }
}
