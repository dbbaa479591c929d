//! Read-only access to a source tree for the planner: bounded reads, bounded listings, and
//! paths that never resolve outside the tree, whatever symlinks the repository holds.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use crate::error::Error;

/// The most the planner reads of a manifest (package.json, Cargo.toml, a Dockerfile...).
/// Real manifests are a few kilobytes; a bigger one is a mistake or an attack.
pub const MANIFEST_LIMIT: u64 = 1024 * 1024;

/// The most directory entries the planner looks at in one directory, so a tree with a
/// huge directory cannot make planning slow.
const LISTING_LIMIT: usize = 10_000;

/// Why a file could not be read as text.
#[derive(Debug)]
pub enum ReadFailure {
    /// The file is larger than the limit the caller gave.
    TooLarge { limit: u64 },
    /// The file is not UTF-8 text.
    NotText,
}

impl ReadFailure {
    /// A sentence naming the file, for a warning or a 422.
    pub fn describe(&self, name: &str) -> String {
        match self {
            ReadFailure::TooLarge { limit } => {
                format!("{name} is larger than {} KiB", limit / 1024)
            }
            ReadFailure::NotText => format!("{name} is not UTF-8 text"),
        }
    }
}

/// A source tree on disk. Invariant: every path it hands out or reads lies inside the
/// canonical root; a symlink pointing elsewhere reads as absent and is reported.
pub struct SourceTree {
    root: PathBuf,
    warnings: Vec<String>,
}

/// Where a relative path ends up once symlinks are resolved.
enum Resolved {
    Inside(PathBuf),
    Missing,
    Outside,
}

impl SourceTree {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let root = fs::canonicalize(path).map_err(|err| {
            Error::Internal(format!(
                "source tree {} is unreadable: {err}",
                path.display()
            ))
        })?;
        if !root.is_dir() {
            return Err(Error::Internal(format!(
                "source tree {} is not a directory",
                root.display()
            )));
        }
        Ok(Self {
            root,
            warnings: Vec::new(),
        })
    }

    /// Warnings about paths that were refused (symlinks leaving the tree), each once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn resolve(&mut self, relative: &str) -> Resolved {
        let joined = self.root.join(relative);
        match fs::canonicalize(&joined) {
            Ok(real) if real.starts_with(&self.root) => Resolved::Inside(real),
            Ok(_) => {
                let warning = format!(
                    "{relative} is a symlink that points outside the repository; it was ignored"
                );
                if !self.warnings.contains(&warning) {
                    self.warnings.push(warning);
                }
                Resolved::Outside
            }
            Err(_) => Resolved::Missing,
        }
    }

    pub fn is_file(&mut self, relative: &str) -> bool {
        matches!(self.resolve(relative), Resolved::Inside(path) if path.is_file())
    }

    /// Reads a file as text: `Ok(None)` when it is absent (or leaves the tree), an error
    /// when it is too large or not UTF-8. I/O failures on a file that exists are internal.
    pub fn read_text(
        &mut self,
        relative: &str,
        limit: u64,
    ) -> Result<Option<Result<String, ReadFailure>>, Error> {
        let Resolved::Inside(path) = self.resolve(relative) else {
            return Ok(None);
        };
        if !path.is_file() {
            return Ok(None);
        }
        let io_error =
            |err: std::io::Error| Error::Internal(format!("reading {}: {err}", path.display()));
        let file = fs::File::open(&path).map_err(io_error)?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() as u64 > limit {
            return Ok(Some(Err(ReadFailure::TooLarge { limit })));
        }
        Ok(Some(
            String::from_utf8(bytes).map_err(|_| ReadFailure::NotText),
        ))
    }

    /// Reads a file that only refines a guess: anything unreadable counts as absent.
    pub fn read_hint(&mut self, relative: &str, limit: u64) -> Option<String> {
        match self.read_text(relative, limit) {
            Ok(Some(Ok(text))) => Some(text),
            _ => None,
        }
    }

    /// The names of the entries of a directory inside the tree, sorted, at most
    /// `LISTING_LIMIT` of them; empty when the directory is absent.
    pub fn list_dir(&mut self, relative: &str) -> Vec<String> {
        let Resolved::Inside(path) = self.resolve(relative) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(path) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .take(LISTING_LIMIT)
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("small.txt"), "hello").unwrap();
        fs::write(dir.path().join("big.txt"), "x".repeat(2048)).unwrap();
        fs::write(dir.path().join("binary"), [0xff, 0xfe, 0x00]).unwrap();
        let mut tree = SourceTree::open(dir.path()).unwrap();
        assert_eq!(tree.read_hint("small.txt", 1024).as_deref(), Some("hello"));
        assert!(matches!(
            tree.read_text("big.txt", 1024),
            Ok(Some(Err(ReadFailure::TooLarge { limit: 1024 })))
        ));
        assert!(matches!(
            tree.read_text("binary", 1024),
            Ok(Some(Err(ReadFailure::NotText)))
        ));
        assert!(matches!(tree.read_text("missing", 1024), Ok(None)));
        assert!(tree.take_warnings().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_never_leave_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "top secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("elsewhere")).unwrap();
        fs::write(dir.path().join("real"), "inside").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("alias")).unwrap();

        let mut tree = SourceTree::open(dir.path()).unwrap();
        assert!(matches!(tree.read_text("leak", 1024), Ok(None)));
        assert!(!tree.is_file("leak"));
        assert!(tree.list_dir("elsewhere").is_empty());
        assert!(matches!(tree.read_text("../", 1024), Ok(None)));
        assert_eq!(tree.read_hint("alias", 1024).as_deref(), Some("inside"));
        let warnings = tree.take_warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("leak"));
    }
}
