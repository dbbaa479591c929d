//! Go apps (go.mod): a static binary built in the Go image, run from the runtime image
//! beside a copy of the source (templates and assets often live there).

use crate::error::Error;

use super::{
    dockerfile::{checked_token, DockerfileWriter},
    Planner, Recipe, Start,
};

/// The most read of a .go file when looking for its package clause.
const SOURCE_SCAN_LIMIT: u64 = 256 * 1024;

/// The most .go files read in one directory; a main package is found long before.
const GO_FILES_SCANNED: usize = 200;

/// Whether a directory holds a Go file of `package main`.
fn has_main_package(planner: &mut Planner<'_>, directory: &str) -> bool {
    let files: Vec<String> = planner
        .tree
        .list_dir(directory)
        .into_iter()
        .filter(|name| name.ends_with(".go") && !name.ends_with("_test.go"))
        .take(GO_FILES_SCANNED)
        .collect();
    files.iter().any(|file| {
        let path = if directory == "." {
            file.clone()
        } else {
            format!("{directory}/{file}")
        };
        planner
            .tree
            .read_hint(&path, SOURCE_SCAN_LIMIT)
            .is_some_and(|source| package_clause(&source) == Some("main"))
    })
}

/// The package name of a Go file: the first `package` line outside comments.
fn package_clause(source: &str) -> Option<&str> {
    let mut in_block_comment = false;
    for line in source.lines() {
        let line = line.trim();
        if in_block_comment {
            in_block_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("/*") {
            in_block_comment = !line.contains("*/");
            continue;
        }
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        return line
            .strip_prefix("package")
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .and_then(|rest| rest.split_whitespace().next());
    }
    None
}

/// The last path element of the `module` line of go.mod.
fn module_basename(go_mod: &str) -> Option<&str> {
    go_mod.lines().find_map(|line| {
        let path = line.trim().strip_prefix("module")?.trim();
        path.trim_matches('"').rsplit('/').next()
    })
}

pub fn plan(planner: &mut Planner<'_>) -> Result<Recipe, Error> {
    let go_mod = planner.read_manifest("go.mod")?.unwrap_or_default();
    let package = if has_main_package(planner, ".") {
        ".".to_owned()
    } else {
        let commands: Vec<String> = planner
            .tree
            .list_dir("cmd")
            .into_iter()
            .filter(|name| has_main_package(planner, &format!("cmd/{name}")))
            .collect();
        let preferred = module_basename(&go_mod)
            .and_then(|base| commands.iter().find(|name| name.as_str() == base));
        let chosen = match (preferred, commands.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(first)) => {
                if commands.len() > 1 {
                    planner.warn(format!(
                        "several commands in cmd/ ({}); building cmd/{first}: add a Dockerfile to choose another",
                        commands.join(", ")
                    ));
                }
                first.clone()
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "go.mod found, but no `package main` at the root of the repository or in cmd/<name>/; \
                     add one, or add a Dockerfile"
                        .to_owned(),
                ))
            }
        };
        format!("./cmd/{}", checked_token("Go command directory", &chosen)?)
    };

    let mut dockerfile = DockerfileWriter::new();
    dockerfile.line(format!("FROM {} AS build", planner.images.go));
    dockerfile.line("WORKDIR /src");
    if planner.tree.is_file("go.sum") {
        // Modules first: the download layer is reused while go.mod and go.sum are unchanged.
        dockerfile.line("COPY go.mod go.sum ./");
        dockerfile.line("RUN go mod download");
    }
    dockerfile.line("COPY . .");
    // A static binary runs on any runtime image, glibc or not.
    dockerfile.line("ENV CGO_ENABLED=0");
    dockerfile.exec(
        "RUN",
        &[
            "go",
            "build",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            "/out/app",
            &package,
        ],
    );
    dockerfile.blank();
    dockerfile.line(format!("FROM {}", planner.images.go_runtime));
    // Slim runtime images have no CA bundle, and most apps make HTTPS calls.
    dockerfile.line(
        "COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
    );
    dockerfile.line("WORKDIR /app");
    dockerfile.line("COPY . .");
    dockerfile.line("COPY --from=build /out/app /usr/local/bin/app");
    Ok(Recipe {
        dockerfile,
        start: Some(Start::Exec(vec!["/usr/local/bin/app".to_owned()])),
        missing_start: "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_clauses() {
        assert_eq!(package_clause("package main\n"), Some("main"));
        assert_eq!(
            package_clause("// +build linux\n\n/* doc\n package lib */\npackage main // x\n"),
            Some("main")
        );
        assert_eq!(
            package_clause("//go:build ignore\npackage tools\n"),
            Some("tools")
        );
        assert_eq!(package_clause("packagemain\n"), None);
        assert_eq!(package_clause(""), None);
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_basename("module github.com/a/server\n\ngo 1.22\n"),
            Some("server")
        );
        assert_eq!(module_basename("module example\n"), Some("example"));
        assert_eq!(module_basename("go 1.22\n"), None);
    }
}
