//! PHP apps (composer.json or index.php): Composer dependencies installed in a build
//! stage, served by PHP's built-in server from public/ or the root.

use crate::error::Error;

use super::{dockerfile::DockerfileWriter, Planner, Recipe, Start};

/// Whether composer.json requires packages (beyond the PHP version and extensions, which
/// Composer does not install).
fn requires_packages(composer: &serde_json::Value) -> bool {
    ["require", "require-dev"].iter().any(|section| {
        composer
            .get(section)
            .and_then(serde_json::Value::as_object)
            .is_some_and(|requirements| {
                requirements
                    .keys()
                    .any(|name| name != "php" && !name.starts_with("ext-"))
            })
    })
}

pub fn plan(planner: &mut Planner<'_>) -> Result<Recipe, Error> {
    let composer = planner.read_json("composer.json")?;
    if composer.as_ref().is_some_and(|value| !value.is_object()) {
        return Err(Error::Invalid(
            "composer.json is not a JSON object; fix it or add a Dockerfile".to_owned(),
        ));
    }
    let installs = composer.as_ref().is_some_and(requires_packages);
    let document_root = if planner.tree.is_file("public/index.php") {
        "public"
    } else {
        "."
    };

    let mut dockerfile = DockerfileWriter::new();
    if installs {
        if !planner.tree.is_file("composer.lock") {
            planner.warn("no composer.lock: package versions are resolved at build time; commit composer.lock for repeatable builds");
        }
        dockerfile.line(format!("FROM {} AS vendor", planner.images.composer));
        dockerfile.line("WORKDIR /app");
        dockerfile.line("COPY . .");
        // The PHP runtime image is not the Composer image, so platform checks would test
        // the wrong PHP; scripts are skipped since they could need that runtime too.
        dockerfile.line(
            "RUN composer install --no-dev --no-interaction --no-progress --prefer-dist --optimize-autoloader --ignore-platform-reqs --no-scripts",
        );
        dockerfile.blank();
    }
    dockerfile.line(format!("FROM {}", planner.images.php));
    dockerfile.line("WORKDIR /app");
    if installs {
        dockerfile.line("COPY --from=vendor /app /app");
    } else {
        dockerfile.line("COPY . .");
    }
    // The built-in server handles one request at a time unless it forks workers.
    dockerfile.line("ENV PHP_CLI_SERVER_WORKERS=4");
    Ok(Recipe {
        dockerfile,
        start: Some(Start::Shell(format!(
            "php -S 0.0.0.0:$PORT -t {document_root}"
        ))),
        missing_start: "",
    })
}
