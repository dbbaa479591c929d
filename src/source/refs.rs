//! `GitRef`: a branch, tag or commit sha as a user names it, parsed once at the boundary.

use std::fmt;

use serde::Serialize;

use crate::error::Error;

/// The longest ref name accepted, in bytes; longer names are almost certainly mistakes
/// and would not fit in the file names git stores refs under on common file systems.
const MAX_REF_BYTES: usize = 255;

/// What every rejection message ends with, so a user always learns what is accepted.
const ACCEPTED: &str = "use a branch or tag name (e.g. `main`, `v1.2.0`, `refs/heads/main`, `refs/tags/v1.2.0`) or a commit sha of 7-40 hex digits";

/// A branch name, a tag name, a full `refs/heads/...` or `refs/tags/...` name, or a
/// commit sha (7-40 hex digits). Invariant: the text passes git's `check-ref-format`
/// rules, so it can be handed to git as is and never names something outside
/// `refs/heads/` or `refs/tags/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(value: &str) -> Result<Self, Error> {
        check_ref(value).map_err(|why| {
            Error::Invalid(format!("git ref {value:?} is invalid: {why}; {ACCEPTED}"))
        })?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The branch name when the ref was given in full as `refs/heads/<branch>`.
    pub fn full_branch(&self) -> Option<&str> {
        self.0.strip_prefix("refs/heads/")
    }

    /// The tag name when the ref was given in full as `refs/tags/<tag>`.
    pub fn full_tag(&self) -> Option<&str> {
        self.0.strip_prefix("refs/tags/")
    }

    /// True when the text could be an abbreviated or full commit sha. Such text is also
    /// a valid branch name, which is why resolution tries branches and tags first.
    pub fn could_be_sha(&self) -> bool {
        is_sha_like(&self.0)
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True for 7 to 40 hex digits, the lengths git accepts as a commit sha or its prefix.
pub(crate) fn is_sha_like(value: &str) -> bool {
    (7..=40).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Applies git's `check-ref-format` rules, returning why the value fails them.
fn check_ref(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".into());
    }
    if value.len() > MAX_REF_BYTES {
        return Err(format!("it is longer than {MAX_REF_BYTES} bytes"));
    }
    // A full name must be under `refs/heads/` or `refs/tags/`: a deploy builds a branch,
    // a tag or a commit, never a remote-tracking ref or a note.
    let short = if let Some(rest) = value.strip_prefix("refs/") {
        match rest
            .strip_prefix("heads/")
            .or_else(|| rest.strip_prefix("tags/"))
        {
            Some(short) if !short.is_empty() => short,
            Some(_) => return Err("the name after `refs/heads/` or `refs/tags/` is empty".into()),
            None => {
                return Err(
                    "only `refs/heads/...` and `refs/tags/...` full names are accepted".into(),
                )
            }
        }
    } else {
        value
    };
    if short == "HEAD" || short == "@" {
        return Err(format!("`{short}` is not a branch or tag name"));
    }
    if let Some(bad) = short
        .chars()
        .find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c))
    {
        return Err(format!("{bad:?} is not allowed"));
    }
    if short.starts_with('-') {
        return Err("it starts with `-`".into());
    }
    if short.starts_with('/') {
        return Err("it starts with `/`".into());
    }
    if short.ends_with('/') {
        return Err("it ends with `/`".into());
    }
    if short.ends_with('.') {
        return Err("it ends with `.`".into());
    }
    if short.contains("..") {
        return Err("it contains `..`".into());
    }
    if short.contains("//") {
        return Err("it contains `//`".into());
    }
    if short.contains("@{") {
        return Err("it contains `@{`".into());
    }
    for component in short.split('/') {
        if component.starts_with('.') {
            return Err(format!("the part `{component}` starts with `.`"));
        }
        if component.ends_with(".lock") {
            return Err(format!("the part `{component}` ends with `.lock`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_refs() {
        let cases = [
            "main",
            "feature/login-form",
            "release/2024.06",
            "v1.2.0",
            "a",
            "refs/heads/main",
            "refs/tags/v1.2.0",
            "refs/heads/feature/x",
            "deadbee",
            "0123456789abcdef0123456789abcdef01234567",
            "ABCDEF1",
            "user@host",
            "caf\u{e9}",
            "x.lockfile",
            "a.b",
            "name-with-dash-",
        ];
        for case in cases {
            assert!(GitRef::parse(case).is_ok(), "{case:?} should be accepted");
        }
        let longest = "a".repeat(MAX_REF_BYTES);
        assert!(GitRef::parse(&longest).is_ok());
    }

    #[test]
    fn rejected_refs() {
        let too_long = "a".repeat(MAX_REF_BYTES + 1);
        let cases = [
            "",
            too_long.as_str(),
            "a..b",
            "..",
            "a b",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "-flag",
            "/abs",
            "trailing/",
            "trailing.",
            "branch.lock",
            "dir/x.lock",
            "a//b",
            "a@{1}",
            "@",
            "HEAD",
            ".hidden",
            "dir/.hidden",
            "refs/heads/",
            "refs/tags/",
            "refs/remotes/origin/main",
            "refs/notes/commits",
            "refs/heads/a..b",
            "refs/heads/-x",
        ];
        for case in cases {
            assert!(GitRef::parse(case).is_err(), "{case:?} should be rejected");
        }
    }

    #[test]
    fn rejection_says_what_is_accepted() {
        let Err(Error::Invalid(message)) = GitRef::parse("a..b") else {
            panic!("expected Error::Invalid");
        };
        assert!(message.contains("`..`"), "{message}");
        assert!(message.contains("branch or tag name"), "{message}");
        assert!(message.contains("7-40 hex digits"), "{message}");
    }

    #[test]
    fn full_names_and_sha_shapes() {
        let cases: [(&str, Option<&str>, Option<&str>, bool); 6] = [
            ("refs/heads/main", Some("main"), None, false),
            ("refs/tags/v1", None, Some("v1"), false),
            ("main", None, None, false),
            ("abc1234", None, None, true),
            ("abc123", None, None, false),
            (
                "0123456789abcdef0123456789abcdef012345678",
                None,
                None,
                false,
            ),
        ];
        for (input, branch, tag, sha) in cases {
            let git_ref = GitRef::parse(input).unwrap();
            assert_eq!(git_ref.full_branch(), branch, "{input}");
            assert_eq!(git_ref.full_tag(), tag, "{input}");
            assert_eq!(git_ref.could_be_sha(), sha, "{input}");
            assert_eq!(git_ref.to_string(), input);
        }
    }
}
