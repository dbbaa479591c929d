//! Python apps (requirements.txt or pyproject.toml): pip install, then gunicorn, uvicorn,
//! Django or a plain `python app.py`, guessed from the dependencies and the files.

use std::collections::BTreeSet;

use crate::error::Error;

use super::{dockerfile::DockerfileWriter, Planner, Recipe, Start};

/// The most read of a Python file when looking for its `app = ...`.
const SOURCE_SCAN_LIMIT: u64 = 256 * 1024;

/// Frameworks that are ASGI, so uvicorn serves them even when gunicorn is also listed.
const ASGI_FRAMEWORKS: [&str; 4] = ["fastapi", "starlette", "quart", "litestar"];

/// What requirements.txt says, as far as planning cares.
#[derive(Debug, Default, PartialEq)]
struct Requirements {
    /// Normalized distribution names (lowercase, `-` for `_` and `.`).
    names: BTreeSet<String>,
    /// Whether any line asks for something, so `pip install` has work to do.
    has_entries: bool,
    /// Whether a line refers to other files (`-r`, `-c`, `-e`, local paths), so pip needs
    /// the whole source, not just requirements.txt.
    needs_source: bool,
}

fn parse_requirements(text: &str) -> Requirements {
    let mut requirements = Requirements::default();
    for raw in text.lines() {
        // pip treats `#` at the start or after whitespace as a comment.
        let line = match raw.find(" #").or_else(|| raw.find("\t#")) {
            Some(index) => &raw[..index],
            None => raw,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        requirements.has_entries = true;
        if let Some(option) = line.strip_prefix('-') {
            let refers_to_files = ["r", "c", "e", "-requirement", "-constraint", "-editable"]
                .iter()
                .any(|flag| option.starts_with(flag));
            if refers_to_files {
                requirements.needs_source = true;
            }
            continue;
        }
        if line.starts_with(['.', '/']) || line.contains("file:") {
            requirements.needs_source = true;
            continue;
        }
        if let Some(name) = distribution_name(line) {
            requirements.names.insert(name);
        }
    }
    requirements
}

/// The normalized name at the start of a PEP 508 requirement (`Flask[async]>=2 ; ...`).
fn distribution_name(requirement: &str) -> Option<String> {
    let name: String = requirement
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    if name.is_empty() {
        return None;
    }
    Some(name.to_ascii_lowercase().replace(['_', '.'], "-"))
}

/// Dependency names from `[project].dependencies` and `[tool.poetry.dependencies]`.
fn pyproject_names(pyproject: &toml::Table) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let project_dependencies = pyproject
        .get("project")
        .and_then(|project| project.get("dependencies"))
        .and_then(toml::Value::as_array);
    for requirement in project_dependencies.into_iter().flatten() {
        if let Some(name) = requirement.as_str().and_then(distribution_name) {
            names.insert(name);
        }
    }
    let poetry_dependencies = pyproject
        .get("tool")
        .and_then(|tool| tool.get("poetry"))
        .and_then(|poetry| poetry.get("dependencies"))
        .and_then(toml::Value::as_table);
    for name in poetry_dependencies
        .into_iter()
        .flat_map(|table| table.keys())
    {
        if let Some(name) = distribution_name(name).filter(|name| name != "python") {
            names.insert(name);
        }
    }
    names
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn plan(planner: &mut Planner<'_>) -> Result<Recipe, Error> {
    let requirements = planner
        .read_manifest("requirements.txt")?
        .map(|text| parse_requirements(&text));
    let pyproject = if planner.tree.is_file("pyproject.toml") {
        match planner.read_toml("pyproject.toml") {
            Ok(table) => table,
            // requirements.txt is what gets installed, so a broken pyproject.toml only
            // costs its hints.
            Err(err) if requirements.is_some() => {
                planner.warn(format!("{err}; it was not used"));
                None
            }
            Err(err) => return Err(err),
        }
    } else {
        None
    };
    let mut names = requirements
        .as_ref()
        .map(|requirements| requirements.names.clone())
        .unwrap_or_default();
    if let Some(pyproject) = &pyproject {
        names.extend(pyproject_names(pyproject));
    }

    let mut dockerfile = DockerfileWriter::new();
    dockerfile.line(format!("FROM {}", planner.images.python));
    dockerfile.line("WORKDIR /app");
    // Logs reach the deploy's log at once instead of sitting in a buffer, and the image
    // carries no bytecode files written at build time.
    dockerfile
        .line("ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1");
    match (&requirements, &pyproject) {
        (Some(requirements), _) if requirements.has_entries && !requirements.needs_source => {
            // requirements.txt first: the dependency layer is reused while it is unchanged.
            dockerfile.line("COPY requirements.txt ./");
            dockerfile.line("RUN pip install --no-cache-dir -r requirements.txt");
            dockerfile.line("COPY . .");
        }
        (Some(requirements), _) if requirements.has_entries => {
            dockerfile.line("COPY . .");
            dockerfile.line("RUN pip install --no-cache-dir -r requirements.txt");
        }
        (Some(_), _) => dockerfile.line("COPY . ."),
        (None, _) => {
            dockerfile.line("COPY . .");
            dockerfile.line("RUN pip install --no-cache-dir .");
            for lockfile in ["poetry.lock", "uv.lock", "pdm.lock"] {
                if planner.tree.is_file(lockfile) {
                    planner.warn(format!(
                        "{lockfile} is not used: Cantila installs the project with pip from pyproject.toml, \
                         so versions may differ; export a requirements.txt or add a Dockerfile"
                    ));
                }
            }
        }
    }

    let start = start_command(planner, &names)?;
    Ok(Recipe {
        dockerfile,
        start,
        missing_start: "add app.py or main.py (or gunicorn or uvicorn to the dependencies with wsgi.py, app.py, main.py or asgi.py)",
    })
}

fn start_command(
    planner: &mut Planner<'_>,
    names: &BTreeSet<String>,
) -> Result<Option<Start>, Error> {
    let gunicorn = names.contains("gunicorn");
    let asgi_framework = ASGI_FRAMEWORKS.iter().any(|name| names.contains(*name));
    let uvicorn = names.contains("uvicorn") && (!gunicorn || asgi_framework);

    if names.contains("django") && planner.tree.is_file("manage.py") {
        if let Some(project) = django_project(planner) {
            return Ok(Some(
                if uvicorn && planner.tree.is_file(&format!("{project}/asgi.py")) {
                    Start::Shell(format!(
                        "uvicorn {project}.asgi:application --host 0.0.0.0 --port $PORT"
                    ))
                } else if gunicorn {
                    Start::Shell(format!(
                        "gunicorn --bind 0.0.0.0:$PORT {project}.wsgi:application"
                    ))
                } else {
                    planner.warn(
                    "Django runs with `manage.py runserver`, which is meant for development; add gunicorn to the requirements",
                );
                    Start::Shell("python manage.py runserver 0.0.0.0:$PORT".to_owned())
                },
            ));
        }
    }

    if uvicorn {
        if let Some((module, attribute)) = app_module(planner, &["main", "app", "asgi"], "uvicorn")
        {
            return Ok(Some(Start::Shell(format!(
                "uvicorn {module}:{attribute} --host 0.0.0.0 --port $PORT"
            ))));
        }
    } else if gunicorn {
        if let Some((module, attribute)) = app_module(planner, &["wsgi", "app", "main"], "gunicorn")
        {
            return Ok(Some(Start::Shell(format!(
                "gunicorn --bind 0.0.0.0:$PORT {module}:{attribute}"
            ))));
        }
    }

    for script in ["app.py", "main.py"] {
        if planner.tree.is_file(script) {
            return Ok(Some(Start::Exec(vec![
                "python".to_owned(),
                script.to_owned(),
            ])));
        }
    }
    Ok(None)
}

/// The Django project package: a top-level directory with a wsgi.py. Directory names are
/// repository values, so only Python identifiers are used.
fn django_project(planner: &mut Planner<'_>) -> Option<String> {
    for entry in planner.tree.list_dir(".") {
        if !planner.tree.is_file(&format!("{entry}/wsgi.py")) {
            continue;
        }
        if is_identifier(&entry) {
            return Some(entry);
        }
        planner.warn(format!(
            "{entry:?} has a wsgi.py but is not a Python module name; it was not used"
        ));
    }
    None
}

/// The first of the candidate modules that exists, and the name its application object
/// probably has (`application` when the file defines it and no `app`).
fn app_module(
    planner: &mut Planner<'_>,
    candidates: &[&'static str],
    server: &str,
) -> Option<(&'static str, &'static str)> {
    let module = candidates
        .iter()
        .copied()
        .find(|module| planner.tree.is_file(&format!("{module}.py")))?;
    let source = planner
        .tree
        .read_hint(&format!("{module}.py"), SOURCE_SCAN_LIMIT)
        .unwrap_or_default();
    let defines = |name: &str| {
        source.lines().any(|line| {
            line.strip_prefix(name).is_some_and(|rest| {
                rest.trim_start().starts_with('=') && !rest.trim_start().starts_with("==")
            })
        })
    };
    let attribute = if defines("app") {
        "app"
    } else if defines("application") {
        "application"
    } else {
        planner.warn(format!(
            "no `app = ...` found in {module}.py; {server} will look for {module}:app"
        ));
        "app"
    };
    Some((module, attribute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_lines() {
        let parsed = parse_requirements(
            "# web\nFlask[async]>=2.0 ; python_version > '3.8'\ngunicorn==22.0.0  # server\n\
             zope.interface\n--index-url https://pypi.example/simple\n",
        );
        assert_eq!(
            parsed.names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["flask", "gunicorn", "zope-interface"]
        );
        assert!(parsed.has_entries && !parsed.needs_source);

        for line in [
            "-r base.txt",
            "-e .",
            "./libs/thing",
            "--requirement=x.txt",
            "pkg @ file:///x",
        ] {
            assert!(parse_requirements(line).needs_source, "{line}");
        }
        let empty = parse_requirements("# nothing but the standard library\n\n");
        assert!(!empty.has_entries);
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("mysite"));
        assert!(is_identifier("_site2"));
        for bad in ["", "2site", "my-site", "a.b", "x;y", "site$(id)"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
