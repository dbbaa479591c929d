//! Rust apps (Cargo.toml): `cargo build --release` in the Rust image, the binary run from
//! the runtime image beside a copy of the source.

use crate::error::Error;

use super::{
    dockerfile::{checked_token, DockerfileWriter},
    Planner, Recipe, Start,
};

/// The binary targets of a package, in the order Cargo would list them.
fn binary_targets(
    planner: &mut Planner<'_>,
    manifest: &toml::Table,
    package_name: &str,
) -> Vec<String> {
    let explicit: Vec<&toml::Value> = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut names: Vec<String> = explicit
        .iter()
        .filter_map(|bin| bin.get("name")?.as_str().map(str::to_owned))
        .collect();
    // A file an explicit [[bin]] already points at is not inferred again.
    let claimed = |file: &str| {
        explicit
            .iter()
            .any(|bin| bin.get("path").and_then(toml::Value::as_str) == Some(file))
    };
    let autobins = manifest
        .get("package")
        .and_then(|package| package.get("autobins"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(true);
    if autobins {
        if planner.tree.is_file("src/main.rs")
            && !claimed("src/main.rs")
            && !names.iter().any(|name| name == package_name)
        {
            names.push(package_name.to_owned());
        }
        for file in planner.tree.list_dir("src/bin") {
            if let Some(stem) = file.strip_suffix(".rs") {
                if !claimed(&format!("src/bin/{file}")) && !names.iter().any(|name| name == stem) {
                    names.push(stem.to_owned());
                }
            }
        }
    }
    names
}

pub fn plan(planner: &mut Planner<'_>) -> Result<Recipe, Error> {
    let manifest = planner.read_toml("Cargo.toml")?.unwrap_or_default();
    let Some(package) = manifest.get("package").and_then(toml::Value::as_table) else {
        let what = if manifest.contains_key("workspace") {
            "is a workspace without a root package"
        } else {
            "has no [package]"
        };
        return Err(Error::Invalid(format!(
            "Cargo.toml {what}, so there is no binary to build; add a Dockerfile that builds the right member"
        )));
    };
    let Some(package_name) = package.get("name").and_then(toml::Value::as_str) else {
        return Err(Error::Invalid(
            "Cargo.toml [package] has no name; fix it or add a Dockerfile".to_owned(),
        ));
    };
    let package_name = package_name.to_owned();
    let default_run = package
        .get("default-run")
        .and_then(toml::Value::as_str)
        .map(str::to_owned);
    let binaries = binary_targets(planner, &manifest, &package_name);
    let binary = match (&default_run, binaries.as_slice()) {
        (_, []) => {
            return Err(Error::Invalid(
                "Cargo.toml describes no binary (no src/main.rs, src/bin/ or [[bin]]); add one, or add a Dockerfile"
                    .to_owned(),
            ))
        }
        (Some(default_run), _) if binaries.contains(default_run) => default_run.clone(),
        (_, [only]) => only.clone(),
        (_, several) => {
            let chosen = several
                .iter()
                .find(|name| **name == package_name)
                .unwrap_or(&several[0])
                .clone();
            planner.warn(format!(
                "Cargo.toml has several binaries ({}); building {chosen}: set `default-run` to choose another",
                several.join(", ")
            ));
            chosen
        }
    };
    // Cargo allows only these characters in target names; checking keeps the name from
    // doing anything but naming a file in the Dockerfile.
    let binary = checked_token("Cargo binary name", &binary)?.to_owned();
    if binary.contains('/') {
        return Err(Error::Invalid(format!(
            "Cargo binary name {binary:?} cannot contain '/'"
        )));
    }

    let mut dockerfile = DockerfileWriter::new();
    dockerfile.line(format!("FROM {} AS build", planner.images.rust));
    dockerfile.line("WORKDIR /src");
    dockerfile.line("COPY . .");
    let mut build = vec!["cargo", "build", "--release", "--bin", binary.as_str()];
    if planner.tree.is_file("Cargo.lock") {
        build.push("--locked");
    } else {
        planner.warn("no Cargo.lock: dependency versions are resolved at build time; commit Cargo.lock for repeatable builds");
    }
    dockerfile.exec("RUN", &build);
    dockerfile.blank();
    dockerfile.line(format!("FROM {}", planner.images.rust_runtime));
    // Slim runtime images have no CA bundle, and most apps make HTTPS calls.
    dockerfile.line(
        "COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
    );
    dockerfile.line("WORKDIR /app");
    dockerfile.line("COPY . .");
    dockerfile.line(format!(
        "COPY --from=build /src/target/release/{binary} /usr/local/bin/{binary}"
    ));
    Ok(Recipe {
        dockerfile,
        start: Some(Start::Exec(vec![format!("/usr/local/bin/{binary}")])),
        missing_start: "",
    })
}
