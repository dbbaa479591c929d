//! Ruby apps (Gemfile): bundle install without development and test gems, then Rails,
//! a Rack app (config.ru) or app.rb.

use std::collections::BTreeSet;

use crate::error::Error;

use super::{dockerfile::DockerfileWriter, Planner, Recipe, Start};

/// The gem names a Gemfile declares with `gem "name"`, and whether it pulls in files
/// beyond itself (`gemspec`, `path:`), which bundle install then needs.
fn gemfile_facts(gemfile: &str) -> (BTreeSet<String>, bool) {
    let mut gems = BTreeSet::new();
    let mut needs_source = false;
    for line in gemfile.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with("gemspec") || line.contains("path:") || line.contains(":path") {
            needs_source = true;
        }
        let Some(rest) = line
            .strip_prefix("gem ")
            .or_else(|| line.strip_prefix("gem("))
        else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        if let Some(name) = rest[1..].split(quote).next() {
            gems.insert(name.to_owned());
        }
    }
    (gems, needs_source)
}

pub fn plan(planner: &mut Planner<'_>) -> Result<Recipe, Error> {
    let gemfile = planner.read_manifest("Gemfile")?.unwrap_or_default();
    let (gems, needs_source) = gemfile_facts(&gemfile);
    let has_lock = planner.tree.is_file("Gemfile.lock");
    let rails = gems.contains("rails") || gems.contains("railties");

    let mut dockerfile = DockerfileWriter::new();
    dockerfile.line(format!("FROM {}", planner.images.ruby));
    dockerfile.line("WORKDIR /app");
    if has_lock {
        // Deployment mode installs exactly the locked versions and fails if the lock is stale.
        dockerfile.line("ENV BUNDLE_WITHOUT=development:test BUNDLE_DEPLOYMENT=1");
    } else {
        dockerfile.line("ENV BUNDLE_WITHOUT=development:test");
        planner.warn("no Gemfile.lock: gem versions are resolved at build time; commit Gemfile.lock for repeatable builds");
    }
    if needs_source {
        dockerfile.line("COPY . .");
        dockerfile.line("RUN bundle install");
    } else {
        // Gemfile first: the gem layer is reused while it is unchanged.
        dockerfile.line(if has_lock {
            "COPY Gemfile Gemfile.lock ./"
        } else {
            "COPY Gemfile ./"
        });
        dockerfile.line("RUN bundle install");
        dockerfile.line("COPY . .");
    }
    dockerfile.line("ENV RACK_ENV=production");

    let start = if rails {
        dockerfile
            .line("ENV RAILS_ENV=production RAILS_LOG_TO_STDOUT=1 RAILS_SERVE_STATIC_FILES=1");
        planner.warn(
            "Rails needs SECRET_KEY_BASE in the project's environment, and assets are not precompiled; add a Dockerfile for more",
        );
        Some(Start::Shell(
            "bundle exec rails server -b 0.0.0.0 -p $PORT".to_owned(),
        ))
    } else if planner.tree.is_file("config.ru") {
        Some(Start::Shell(
            "bundle exec rackup -p $PORT -o 0.0.0.0".to_owned(),
        ))
    } else if planner.tree.is_file("app.rb") {
        Some(Start::Exec(vec![
            "bundle".to_owned(),
            "exec".to_owned(),
            "ruby".to_owned(),
            "app.rb".to_owned(),
        ]))
    } else {
        None
    };
    Ok(Recipe {
        dockerfile,
        start,
        missing_start: "add config.ru (Rack) or app.rb",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemfile_lines() {
        let (gems, needs_source) = gemfile_facts(
            "source \"https://rubygems.org\"\ngem \"rack\", \"~> 3.0\"\ngem 'rackup'\n# gem \"rails\"\ngem(\"puma\")\n",
        );
        assert_eq!(
            gems.iter().map(String::as_str).collect::<Vec<_>>(),
            ["puma", "rack", "rackup"]
        );
        assert!(!needs_source);
        assert!(gemfile_facts("gemspec\n").1);
        assert!(gemfile_facts("gem \"mine\", path: \"vendor/mine\"\n").1);
    }
}
