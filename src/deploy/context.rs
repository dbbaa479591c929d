//! The build context: the exported source tree as a tar for the Docker build API, minus
//! what `.dockerignore` excludes, plus a generated Dockerfile when the plan has one.
//! Invariant: symlinks are archived as links, never followed, so nothing outside the tree
//! reaches the build.

use std::{
    fs,
    path::{Path, PathBuf},
};

use globset::{Glob, GlobMatcher};

use crate::error::{Error, Result};

/// Where a generated Dockerfile is placed in the context, so it never clobbers a file of
/// the repository.
pub const GENERATED_DOCKERFILE: &str = ".cantila.Dockerfile";

/// `.dockerignore` rules, with Docker's semantics: a rule matches a path or any of its
/// parent directories, `!` re-includes, and the last matching rule wins.
#[derive(Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<(GlobMatcher, bool)>,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
            let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
            if pattern.is_empty() {
                continue;
            }
            // An invalid pattern is skipped, as Docker skips what it cannot match.
            if let Ok(glob) = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
            {
                rules.push((glob.compile_matcher(), negated));
            } else if let Ok(glob) = Glob::new(&globset::escape(pattern)) {
                rules.push((glob.compile_matcher(), negated));
            }
        }
        Self { rules }
    }

    /// Whether `relative` (slash-separated, no leading slash) is excluded.
    pub fn excludes(&self, relative: &str) -> bool {
        let mut excluded = false;
        for (matcher, negated) in &self.rules {
            let mut candidate = relative;
            let mut matched = matcher.is_match(candidate);
            while !matched {
                match candidate.rfind('/') {
                    Some(slash) => {
                        candidate = &candidate[..slash];
                        matched = matcher.is_match(candidate);
                    }
                    None => break,
                }
            }
            if matched {
                excluded = !negated;
            }
        }
        excluded
    }
}

/// What went into the context.
#[derive(Debug)]
pub struct Context {
    pub tar: Vec<u8>,
    pub files: usize,
    pub excluded: usize,
}

/// Archives `root` for the build. `generated_dockerfile` is added as
/// `GENERATED_DOCKERFILE`; `dockerfile` (the path the build reads, relative to `root`) is
/// kept whatever `.dockerignore` says, like Docker keeps it. Fails when the context would
/// exceed `max_bytes`.
pub fn build_context(
    root: &Path,
    generated_dockerfile: Option<&str>,
    dockerfile: &str,
    max_bytes: u64,
) -> Result<Context> {
    let rules = match fs::read_to_string(root.join(".dockerignore")) {
        Ok(text) => IgnoreRules::parse(&text),
        Err(_) => IgnoreRules::default(),
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut files = 0;
    let mut excluded = 0;
    let mut total: u64 = 0;
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    let io = |err: std::io::Error| Error::Internal(format!("archiving the build context: {err}"));
    while let Some(relative_dir) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(root.join(&relative_dir))
            .map_err(io)?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io)?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let relative = relative_dir.join(entry.file_name());
            let Some(relative_text) = relative.to_str().map(str::to_owned) else {
                excluded += 1;
                continue;
            };
            // The Dockerfile and the directories leading to it are kept, or the build could
            // not read it.
            let always_kept = relative_text == dockerfile
                || relative_text == ".dockerignore"
                || dockerfile
                    .strip_prefix(relative_text.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            if !always_kept && rules.excludes(&relative_text) {
                excluded += 1;
                continue;
            }
            let metadata = entry.path().symlink_metadata().map_err(io)?;
            if metadata.is_dir() {
                builder.append_dir(&relative, entry.path()).map_err(io)?;
                pending.push(relative);
            } else {
                total += metadata.len();
                if total > max_bytes {
                    return Err(Error::Invalid(format!(
                        "the build context is larger than {} MiB; exclude large files with .dockerignore",
                        max_bytes / (1024 * 1024)
                    )));
                }
                builder
                    .append_path_with_name(entry.path(), &relative)
                    .map_err(io)?;
                files += 1;
            }
        }
    }
    if let Some(dockerfile) = generated_dockerfile {
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, GENERATED_DOCKERFILE, dockerfile.as_bytes())
            .map_err(io)?;
    }
    let tar = builder.into_inner().map_err(io)?;
    Ok(Context {
        tar,
        files,
        excluded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_semantics() {
        let rules = IgnoreRules::parse(
            "# comment\nnode_modules\n*.log\n!keep.log\n/build/\ndocs/**/*.md\n.git\n",
        );
        let check = |path: &str, expected: bool| {
            assert_eq!(rules.excludes(path), expected, "{path}");
        };
        check("node_modules", true);
        check("node_modules/a/b.js", true);
        check("src/node_modules", false);
        check("error.log", true);
        check("keep.log", false);
        check("logs/error.log", false);
        check("build/out.js", true);
        check("docs/a/b/c.md", true);
        check("docs/c.txt", false);
        check(".git/HEAD", true);
        check("src/main.rs", false);
    }

    #[test]
    fn archives_the_tree_with_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("src")).unwrap();
        fs::write(root.join("src/app.js"), "console.log(1)").unwrap();
        fs::write(root.join("debug.log"), "x").unwrap();
        fs::write(root.join(".dockerignore"), "*.log\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let context = build_context(root, Some("FROM scratch\n"), "Dockerfile", 1 << 20).unwrap();
        assert_eq!(context.excluded, 1);
        let mut archive = tar::Archive::new(context.tar.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "link" {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
                assert!(
                    entry.size() == 0,
                    "the link target's content is not archived"
                );
            }
            names.push(name);
        }
        names.sort();
        assert!(names.contains(&"src/app.js".to_owned()));
        assert!(names.contains(&GENERATED_DOCKERFILE.to_owned()));
        assert!(!names.contains(&"debug.log".to_owned()));
        let err = build_context(root, None, "Dockerfile", 5).unwrap_err();
        assert!(err.to_string().contains(".dockerignore"), "{err}");
    }
}
