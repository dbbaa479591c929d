//! A project's build settings (root directory, Dockerfile path, target, build args, watch
//! paths) and the validated types each is made of.
//! Invariant: a value of these types was parsed once at the boundary (the API, the
//! repository's `cantila.toml`, the store) and cannot name a path outside the repository
//! or a word that could become an extra instruction or argument.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The longest path accepted for a root directory or a Dockerfile, in bytes.
const MAX_PATH_BYTES: usize = 255;
/// The most build args and watch paths a project may have.
pub const MAX_BUILD_ARGS: usize = 100;
pub const MAX_WATCH_PATHS: usize = 50;
/// The longest build arg value, in bytes.
const MAX_ARG_VALUE_BYTES: usize = 32 * 1024;

/// Normalises a relative path: `.` and empty components go, and anything that could
/// leave the directory it is relative to (`..`, an absolute path, a backslash, control
/// characters) is refused with the reason.
fn normalise_relative(value: &str) -> Result<String, &'static str> {
    if value.len() > MAX_PATH_BYTES {
        return Err("it must be at most 255 bytes");
    }
    if value.chars().any(|c| c.is_control() || c == '\\') {
        return Err("it must not contain control characters or backslashes");
    }
    if value.starts_with('/') {
        return Err("it must be relative, not absolute");
    }
    let mut parts = Vec::new();
    for part in value.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("it must not contain `..`"),
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// The directory of the repository a project builds from (a monorepo's app): relative,
/// normalised (`apps/web`, never `./apps//web/`), with no `..`. The empty path is the
/// repository's root. Symlinks are checked when the source is checked out
/// (`plan::checked_dir`), since only the tree can say what is a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RootDir(String);

impl RootDir {
    pub fn parse(value: &str) -> Result<Self, Error> {
        normalise_relative(value).map(Self).map_err(|why| {
            Error::Invalid(format!(
                "root directory {value:?} is invalid: {why}; give a directory of the repository such as `apps/web`"
            ))
        })
    }

    /// The repository's root.
    pub fn repository() -> Self {
        Self(String::new())
    }

    pub fn is_repository(&self) -> bool {
        self.0.is_empty()
    }

    /// The path relative to the repository, `.` for its root.
    pub fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "."
        } else {
            &self.0
        }
    }

    /// `relative` (a path inside this directory) as a path of the repository.
    pub fn join(&self, relative: &str) -> String {
        if self.0.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.0)
        }
    }
}

impl TryFrom<String> for RootDir {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<RootDir> for String {
    fn from(value: RootDir) -> String {
        value.as_str().to_owned()
    }
}

impl fmt::Display for RootDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Dockerfile's path relative to the root directory, so it always lies inside the
/// build context: normalised, no `..`, not absolute, naming a file (not empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DockerfilePath(String);

impl DockerfilePath {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "Dockerfile path {value:?} is invalid: {why}; give a file inside the root directory such as `docker/Dockerfile`"
            ))
        };
        let normal = normalise_relative(value).map_err(invalid)?;
        if normal.is_empty() || value.ends_with('/') {
            return Err(invalid("it must name a file"));
        }
        Ok(Self(normal))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DockerfilePath {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<DockerfilePath> for String {
    fn from(value: DockerfilePath) -> String {
        value.0
    }
}

impl fmt::Display for DockerfilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A multi-stage build's target: a stage name as Docker accepts it (a letter, then
/// letters, digits, `-`, `_`, `.`; at most 128), compared case-insensitively like Docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildTarget(String);

impl BuildTarget {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid = value.len() <= 128
            && value.starts_with(|c: char| c.is_ascii_alphabetic())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::Invalid(format!(
                "build target {value:?} is not a stage name: start with a letter, then letters, digits, `-`, `_` or `.` (at most 128)"
            )));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BuildTarget {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<BuildTarget> for String {
    fn from(value: BuildTarget) -> String {
        value.0
    }
}

impl fmt::Display for BuildTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a build arg or a build secret: an identifier (`[A-Za-z_][A-Za-z0-9_]*`,
/// at most 128), so it is one word wherever the builder puts it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildName(String);

impl BuildName {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid = !value.is_empty()
            && value.len() <= 128
            && value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::Invalid(format!(
                "{value:?} is not a valid name: use letters, digits and `_`, not starting with a digit (at most 128)"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BuildName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<BuildName> for String {
    fn from(value: BuildName) -> String {
        value.0
    }
}

impl fmt::Display for BuildName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A build arg's value: at most 32 KiB, no NUL byte.
pub fn check_arg_value(name: &BuildName, value: &str) -> Result<(), Error> {
    if value.len() > MAX_ARG_VALUE_BYTES || value.contains('\0') {
        return Err(Error::Invalid(format!(
            "the value of `{name}` must be at most 32 KiB and contain no NUL byte"
        )));
    }
    Ok(())
}

/// A watch path: a glob over the repository's paths (relative to the repository's root,
/// not the root directory; `*` stays within a segment, `**` crosses them). A push whose
/// changed files match none of a project's watch paths does not deploy.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WatchPath {
    text: String,
    matcher: globset::GlobMatcher,
}

impl WatchPath {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "watch path {value:?} is invalid: {why}; give a glob of repository paths such as `apps/web/**`"
            ))
        };
        if value.is_empty() || value.len() > 200 {
            return Err(invalid("it must be 1 to 200 characters"));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid("it must not contain control characters"));
        }
        if value.starts_with('/') {
            return Err(invalid("it must be relative to the repository's root"));
        }
        if value.split('/').any(|part| part == "..") {
            return Err(invalid("it must not contain `..`"));
        }
        let matcher = globset::GlobBuilder::new(value)
            .literal_separator(true)
            .build()
            .map_err(|err| invalid(&err.kind().to_string()))?
            .compile_matcher();
        Ok(Self {
            text: value.to_owned(),
            matcher,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the repository path `path` (slash-separated, no leading slash) is watched.
    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }
}

impl fmt::Debug for WatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WatchPath({:?})", self.text)
    }
}

impl PartialEq for WatchPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for WatchPath {}

impl TryFrom<String> for WatchPath {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<WatchPath> for String {
    fn from(value: WatchPath) -> String {
        value.text
    }
}

/// Build settings from one place (the API, or the repository's `cantila.toml`). `None`
/// and empty collections mean "not set here": the next place decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_dir: Option<RootDir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<DockerfilePath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BuildTarget>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<BuildName, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_paths: Vec<WatchPath>,
}

impl BuildSettings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the limits a collection's items cannot check alone.
    pub fn check_limits(&self) -> Result<(), Error> {
        if self.build_args.len() > MAX_BUILD_ARGS {
            return Err(Error::Invalid(format!(
                "at most {MAX_BUILD_ARGS} build args are accepted"
            )));
        }
        if self.watch_paths.len() > MAX_WATCH_PATHS {
            return Err(Error::Invalid(format!(
                "at most {MAX_WATCH_PATHS} watch paths are accepted"
            )));
        }
        for (name, value) in &self.build_args {
            check_arg_value(name, value)?;
        }
        Ok(())
    }
}

/// Where a build setting's value came from, as the plan shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SettingSource {
    /// The project's settings (`PATCH /v1/projects/:id`).
    Api,
    /// The repository's `cantila.toml`.
    File,
    /// Neither set it: detection or the default decided.
    Detection,
}

impl SettingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingSource::Api => "api",
            SettingSource::File => "file",
            SettingSource::Detection => "detection",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_dirs_are_normalised_and_never_leave_the_repository() {
        for (input, expected) in [
            ("apps/web", "apps/web"),
            ("./apps//web/", "apps/web"),
            ("", "."),
            (".", "."),
            ("a/./b", "a/b"),
        ] {
            assert_eq!(RootDir::parse(input).unwrap().as_str(), expected, "{input}");
        }
        for bad in [
            "..",
            "../x",
            "a/../../b",
            "/etc",
            "a\\b",
            "a\nb",
            &"a".repeat(256),
        ] {
            let err = RootDir::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn dockerfile_paths_name_a_file_inside_the_root() {
        assert_eq!(
            DockerfilePath::parse("./docker/Dockerfile")
                .unwrap()
                .as_str(),
            "docker/Dockerfile"
        );
        for bad in [
            "",
            ".",
            "docker/",
            "../Dockerfile",
            "/Dockerfile",
            "a/../../D",
        ] {
            assert!(DockerfilePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_and_names_are_single_words() {
        assert_eq!(
            BuildTarget::parse("Prod-1.a_b").unwrap().as_str(),
            "prod-1.a_b"
        );
        for bad in ["", "1prod", "pr od", "a;b", "$(x)", "-x", &"a".repeat(129)] {
            assert!(BuildTarget::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["NODE_ENV", "_x", "a1"] {
            assert!(BuildName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "é"] {
            assert!(BuildName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn watch_paths_are_globs_of_repository_paths() {
        let web = WatchPath::parse("apps/web/**").unwrap();
        assert!(web.matches("apps/web/src/index.js"));
        assert!(!web.matches("apps/api/src/index.js"));
        let top = WatchPath::parse("*.json").unwrap();
        assert!(top.matches("package.json"));
        assert!(!top.matches("apps/web/package.json"));
        for bad in ["", "/abs/**", "../x/**", "a/[b", "a\nb"] {
            assert!(WatchPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_round_trip_through_json_and_refuse_bad_values() {
        let settings: BuildSettings = serde_json::from_str(
            r#"{"rootDir":"apps/web","dockerfile":"Dockerfile.prod","target":"prod","buildArgs":{"K":"V"},"watchPaths":["apps/web/**"]}"#,
        )
        .unwrap();
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            serde_json::from_str::<BuildSettings>(&text).unwrap(),
            settings
        );
        assert!(serde_json::from_str::<BuildSettings>(r#"{"rootDir":"../x"}"#).is_err());
        assert!(serde_json::from_str::<BuildSettings>(r#"{"other":1}"#).is_err());
    }
}
