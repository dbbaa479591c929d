//! `[build.images]`: the base images generated Dockerfiles build on, with the defaults
//! users expect and a check that each name is a plain image reference.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The images named in `FROM` lines of generated Dockerfiles. Operators point these at
/// their own mirrors or pinned tags; nothing in the planner hard-wires an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildImages {
    /// Installs, builds and runs Node apps (needs `node` and `npm`).
    pub node: String,
    /// Installs and runs Python apps (needs `python` and `pip`).
    pub python: String,
    /// Compiles Go apps (needs `go` and `/etc/ssl/certs/ca-certificates.crt`).
    pub go: String,
    /// Runs the compiled Go binary.
    pub go_runtime: String,
    /// Compiles Rust apps (needs `cargo` and `/etc/ssl/certs/ca-certificates.crt`).
    pub rust: String,
    /// Runs the compiled Rust binary.
    pub rust_runtime: String,
    /// Installs and runs Ruby apps (needs `ruby` and `bundle`).
    pub ruby: String,
    /// Runs PHP apps with the built-in server (needs `php`).
    pub php: String,
    /// Installs Composer dependencies in a build stage (needs `composer`).
    pub composer: String,
    /// Serves the output of a Node build that has no start command (needs `sh` and
    /// busybox `httpd`).
    pub static_server: String,
}

impl Default for BuildImages {
    fn default() -> Self {
        Self {
            node: "node:22-slim".to_owned(),
            python: "python:3.12-slim".to_owned(),
            go: "golang:1.23-bookworm".to_owned(),
            go_runtime: "debian:bookworm-slim".to_owned(),
            rust: "rust:1-slim-bookworm".to_owned(),
            rust_runtime: "debian:bookworm-slim".to_owned(),
            ruby: "ruby:3.3-slim".to_owned(),
            php: "php:8.3-cli".to_owned(),
            composer: "composer:2".to_owned(),
            static_server: "busybox:latest".to_owned(),
        }
    }
}

impl BuildImages {
    /// Every key with its value, in the order of the config file.
    fn entries(&self) -> [(&'static str, &str); 10] {
        [
            ("node", &self.node),
            ("python", &self.python),
            ("go", &self.go),
            ("go_runtime", &self.go_runtime),
            ("rust", &self.rust),
            ("rust_runtime", &self.rust_runtime),
            ("ruby", &self.ruby),
            ("php", &self.php),
            ("composer", &self.composer),
            ("static_server", &self.static_server),
        ]
    }

    /// Checks that every image is a plain reference (`name[:tag][@digest]`). The names go
    /// verbatim into `FROM` lines, so anything else could break or extend the Dockerfile.
    pub fn validate(&self) -> Result<(), Error> {
        for (key, image) in self.entries() {
            check_image_reference(key, image)?;
        }
        Ok(())
    }
}

fn check_image_reference(key: &str, image: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    let first_is_alphanumeric = image
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if image.is_empty()
        || image.len() > 255
        || !first_is_alphanumeric
        || !image.chars().all(allowed)
    {
        return Err(Error::Invalid(format!(
            "build.images.{key} {image:?} is not an image reference; use name[:tag][@digest] \
             with letters, digits and . _ - / : @, such as \"node:22-slim\""
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BuildImages::default().validate().unwrap();
    }

    #[test]
    fn rejects_what_could_extend_a_dockerfile() {
        for bad in [
            "",
            "node:22\nRUN rm -rf /",
            "node 22",
            "-node",
            "node;rm",
            "$IMAGE",
        ] {
            let images = BuildImages {
                node: bad.to_owned(),
                ..BuildImages::default()
            };
            let message = images.validate().unwrap_err().to_string();
            assert!(message.contains("build.images.node"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn unknown_keys_never_parse() {
        let parsed: Result<BuildImages, _> = toml::from_str("nodejs = \"node:20\"");
        assert!(parsed.is_err());
        let parsed: BuildImages = toml::from_str("node = \"registry.local/node:20\"").unwrap();
        assert_eq!(parsed.node, "registry.local/node:20");
        assert_eq!(parsed.python, "python:3.12-slim");
    }
}
