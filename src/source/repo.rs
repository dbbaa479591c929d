//! `RepoLocation`: where a project's repository lives, parsed once from what a user types.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::Error;

/// What every rejection message lists, so a user always learns the accepted forms.
const ACCEPTED: &str = "use an https URL (https://host/path.git), `owner/name` for a GitHub repository, an absolute path on the server, or a file:// URL";

/// The longest `repo` value accepted; real URLs and paths are far shorter.
const MAX_LOCATION_BYTES: usize = 2048;

/// A repository's location. Invariant: an https URL holds no credentials (tokens travel
/// separately, so they never end up in logs or the API), and a local path is absolute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RepoLocation {
    /// An https URL, also what `owner/name` expands to.
    Https(HttpsUrl),
    /// A repository on this machine, from an absolute path or a `file://` URL.
    Local(LocalPath),
}

/// An https URL without credentials, query or fragment, with a lowercase host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpsUrl {
    url: String,
}

impl HttpsUrl {
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// An absolute path with no `.` or `..` parts and no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPath {
    path: PathBuf,
}

impl LocalPath {
    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

impl LocalPath {
    /// What the repository at this path is, for telling whether two paths lead to the same
    /// one: the path with symlinks resolved, and the git directory its worktrees share.
    /// Reads the disk, so it is checked each time a path is used, never stored.
    pub fn identity(&self) -> RepoIdentity {
        let resolved = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        // `open` reads `.git` files and `commondir`, so a linked worktree and its main
        // repository share one common directory.
        let common_dir = git2::Repository::open(&resolved)
            .ok()
            .and_then(|repo| std::fs::canonicalize(repo.commondir()).ok());
        RepoIdentity {
            resolved,
            common_dir,
        }
    }
}

/// A local repository's place on disk, compared by `overlaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoIdentity {
    resolved: PathBuf,
    common_dir: Option<PathBuf>,
}

impl RepoIdentity {
    /// True when the two paths lead into the same repository: one lies inside the other
    /// (a checkout and its `.git`, a repository and a directory of it), or both open the
    /// same git directory (a worktree of the other).
    pub fn overlaps(&self, other: &RepoIdentity) -> bool {
        let inside = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
        inside(&self.resolved, &other.resolved)
            || [&self.common_dir, &other.common_dir]
                .iter()
                .zip([&other.resolved, &self.resolved])
                .any(|(common, path)| common.as_deref().is_some_and(|c| inside(c, path)))
            || matches!((&self.common_dir, &other.common_dir), (Some(a), Some(b)) if a == b)
    }
}

impl RepoLocation {
    /// Refuses a local repository inside Cantila's data directory (other accounts'
    /// mirrors, the store, the keys), symlinks resolved. Which accounts may use local
    /// repositories at all is the caller's question (`Deploys::permit_repo`).
    pub fn check_permitted(&self, data_dir: &Path) -> Result<(), Error> {
        let RepoLocation::Local(local) = self else {
            return Ok(());
        };
        let resolved = std::fs::canonicalize(&local.path).unwrap_or_else(|_| local.path.clone());
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        if resolved.starts_with(&data_dir) || local.path.starts_with(&data_dir) {
            return Err(Error::Invalid(format!(
                "repo {} is inside Cantila's data directory, which is never a source",
                local.path.display()
            )));
        }
        Ok(())
    }

    pub fn parse(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        let shown = without_userinfo(value);
        let invalid =
            |why: &str| Error::Invalid(format!("repo {shown:?} is invalid: {why}; {ACCEPTED}"));
        if value.is_empty() {
            return Err(Error::Invalid(format!(
                "repo must not be empty; {ACCEPTED}"
            )));
        }
        if value.len() > MAX_LOCATION_BYTES {
            return Err(invalid(&format!(
                "it is longer than {MAX_LOCATION_BYTES} bytes"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid("it contains control characters"));
        }
        if let Some(rest) = strip_prefix_ignore_case(value, "https://") {
            return parse_https(rest)
                .map(RepoLocation::Https)
                .map_err(|why| invalid(&why));
        }
        if let Some(rest) = strip_prefix_ignore_case(value, "file://") {
            return parse_file_url(rest)
                .map(RepoLocation::Local)
                .map_err(|why| invalid(&why));
        }
        if value.starts_with('/') {
            return parse_local_path(value)
                .map(RepoLocation::Local)
                .map_err(|why| invalid(&why));
        }
        if let Some((scheme, _)) = value.split_once("://") {
            let why = format!(
                "the `{}://` scheme is not supported",
                scheme.to_ascii_lowercase()
            );
            return Err(invalid(&why));
        }
        if looks_like_scp(value) {
            return Err(invalid(
                "SSH addresses like `git@host:owner/name` are not supported",
            ));
        }
        parse_github_shorthand(value)
            .map(RepoLocation::Https)
            .map_err(|why| invalid(&why))
    }

    /// The URL or path handed to git. It never holds credentials, so it may be logged.
    pub(crate) fn fetch_url(&self) -> String {
        match self {
            RepoLocation::Https(https) => https.url.clone(),
            RepoLocation::Local(local) => local.path.to_string_lossy().into_owned(),
        }
    }
}

/// The canonical form, what the API shows and what is stored.
impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Https(https) => f.write_str(&https.url),
            RepoLocation::Local(local) => write!(f, "{}", local.path.display()),
        }
    }
}

/// The value with any `user:password@` part of a URL masked, so a rejected URL that
/// carried a secret can be echoed back (and logged) without leaking it.
fn without_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => value.to_owned(),
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// `user@host:path` with no scheme: the scp-like syntax git uses for SSH.
fn looks_like_scp(value: &str) -> bool {
    match value.split_once(':') {
        Some((before, _)) => !before.contains('/'),
        None => false,
    }
}

/// Parses what follows `https://`: `host[:port]/path`.
fn parse_https(rest: &str) -> Result<HttpsUrl, String> {
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials must not be part of the URL; put the access token in the `token` field instead".into());
    }
    let (host, port) = split_host_port(authority)?;
    check_host(host)?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("the port `{port}` is not a number from 1 to 65535")),
        }
    }
    check_url_path(path)?;
    let host = host.to_ascii_lowercase();
    let url = match port {
        Some(port) if port != "443" => format!("https://{host}:{port}{path}"),
        _ => format!("https://{host}{path}"),
    };
    Ok(HttpsUrl { url })
}

/// Splits `host:port` and `[v6]:port`, leaving the brackets on an IPv6 host.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or_else(|| "the IPv6 address is missing its closing `]`".to_string())?;
        let (host, after) = authority.split_at(close + 1);
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected `{after}` after the host")),
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Accepts a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("`{host}` is not an IPv6 address"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{host}` is not a valid host name"));
    }
    Ok(())
}

/// A repository path: `/` followed by URL-safe characters, without `.`/`..` segments.
fn check_url_path(path: &str) -> Result<(), String> {
    if path.trim_matches('/').is_empty() {
        return Err("the URL has no repository path".into());
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~%+".contains(*c)))
    {
        let why = match bad {
            '?' | '#' => "the URL must not have a query or fragment".to_string(),
            _ => format!("{bad:?} is not allowed in the URL path"),
        };
        return Err(why);
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("the URL path must not contain `.` or `..` segments".into());
    }
    Ok(())
}

/// Parses what follows `file://`: an empty host or `localhost`, then an absolute path.
fn parse_file_url(rest: &str) -> Result<LocalPath, String> {
    let path = if rest.starts_with('/') {
        rest
    } else if let Some(after_host) = strip_prefix_ignore_case(rest, "localhost/") {
        &rest[rest.len() - after_host.len() - 1..]
    } else {
        return Err("a file:// URL must name an absolute path on this machine, like file:///srv/git/app.git".into());
    };
    if path.contains(['?', '#']) {
        return Err("the URL must not have a query or fragment".into());
    }
    parse_local_path(&percent_decode(path)?)
}

/// Decodes `%XX` escapes, as a file URL may carry them for spaces and other characters.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let byte = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| "a `%` in the URL is not followed by two hex digits".to_string())?;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the decoded path is not UTF-8".to_string())
}

fn parse_local_path(value: &str) -> Result<LocalPath, String> {
    if value.contains('\0') || value.chars().any(char::is_control) {
        return Err("the path contains control characters".into());
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err("a local path must be absolute".into());
    }
    let mut canonical = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => {
                // Whitespace at the end of the whole value is trimmed, so a part ending
                // in it (`/srv/a /`) would print as a path that parses to another one.
                let text = part.to_string_lossy();
                if text.trim() != text {
                    return Err("a part of the path starts or ends with whitespace".into());
                }
                canonical.push(part)
            }
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err("the path must not contain `..` parts".into());
            }
        }
    }
    if canonical == Path::new("/") {
        return Err("the path must name a directory below `/`".into());
    }
    Ok(LocalPath { path: canonical })
}

/// Expands `owner/name` to `https://github.com/owner/name.git`, checking GitHub's rules
/// for account and repository names so a typo fails here rather than at fetch time.
fn parse_github_shorthand(value: &str) -> Result<HttpsUrl, String> {
    let Some((owner, name)) = value.split_once('/') else {
        return Err("it is not a URL, a path or `owner/name`".into());
    };
    if name.contains('/') {
        return Err(
            "`owner/name` has exactly one `/`; for other hosts give the full https URL".into(),
        );
    }
    let owner_ok = (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !owner.starts_with('-')
        && !owner.ends_with('-');
    if !owner_ok {
        return Err(format!(
            "the owner `{owner}` must be 1-39 letters, digits or hyphens, not starting or ending with a hyphen"
        ));
    }
    let name = name.strip_suffix(".git").unwrap_or(name);
    let name_ok = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && name != "."
        && name != "..";
    if !name_ok {
        return Err(format!(
            "the repository name `{name}` must be 1-100 letters, digits, `-`, `.` or `_`"
        ));
    }
    Ok(HttpsUrl {
        url: format!("https://github.com/{owner}/{name}.git"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(input: &str) -> String {
        match RepoLocation::parse(input) {
            Ok(location) => location.to_string(),
            Err(error) => panic!("{input:?} should be accepted: {error}"),
        }
    }

    fn rejection(input: &str) -> String {
        match RepoLocation::parse(input) {
            Ok(location) => panic!("{input:?} should be rejected, parsed as {location}"),
            Err(Error::Invalid(message)) => message,
            Err(other) => panic!("{input:?}: expected Error::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn accepted_forms_and_their_canonical_text() {
        let cases = [
            (
                "https://github.com/acme/app.git",
                "https://github.com/acme/app.git",
            ),
            ("https://GitHub.com/acme/app", "https://github.com/acme/app"),
            (
                "HTTPS://gitea.example.org:3000/acme/app.git",
                "https://gitea.example.org:3000/acme/app.git",
            ),
            (
                "https://example.org:443/a/b.git",
                "https://example.org/a/b.git",
            ),
            ("https://127.0.0.1:1/x.git", "https://127.0.0.1:1/x.git"),
            ("https://[::1]:8443/x.git", "https://[::1]:8443/x.git"),
            (
                "https://gitlab.com/group/sub/project.git",
                "https://gitlab.com/group/sub/project.git",
            ),
            ("  https://example.org/a  ", "https://example.org/a"),
            ("acme/app", "https://github.com/acme/app.git"),
            ("acme/app.git", "https://github.com/acme/app.git"),
            (
                "Acme-Inc/my_app.v2",
                "https://github.com/Acme-Inc/my_app.v2.git",
            ),
            ("/srv/git/app.git", "/srv/git/app.git"),
            ("/srv/git/app/", "/srv/git/app"),
            ("/srv//git/app", "/srv/git/app"),
            ("/srv/./git/app", "/srv/git/app"),
            ("file:///srv/git/app.git", "/srv/git/app.git"),
            ("file://localhost/srv/git/app", "/srv/git/app"),
            ("file:///srv/my%20repo", "/srv/my repo"),
        ];
        for (input, expected) in cases {
            assert_eq!(canonical(input), expected, "{input:?}");
        }
    }

    /// Found by `fuzz/fuzz_targets/git_source.rs`: `/.lock   {   /` was stored as
    /// `/.lock   {   ` (the trailing `/` dropped), which parses back to `/.lock   {`.
    #[test]
    fn a_canonical_path_parses_back_to_itself() {
        for input in [
            " /.lock          {      /",
            "/srv/app /",
            "/srv/ app",
            "file:///srv/a%20/",
        ] {
            let message = rejection(input);
            assert!(message.contains("whitespace"), "{input:?}: {message}");
        }
        for input in ["/srv/my app/x", "file:///srv/my%20repo", "/srv/git/app/"] {
            let printed = canonical(input);
            assert_eq!(canonical(&printed), printed, "{input:?}");
        }
    }

    #[test]
    fn variants() {
        assert!(matches!(
            RepoLocation::parse("acme/app").unwrap(),
            RepoLocation::Https(_)
        ));
        let RepoLocation::Local(local) = RepoLocation::parse("file:///tmp/x").unwrap() else {
            panic!("expected a local location");
        };
        assert_eq!(local.as_path(), Path::new("/tmp/x"));
    }

    #[test]
    fn rejected_forms_say_why_and_list_the_accepted_ones() {
        let cases = [
            ("", "must not be empty"),
            (
                "http://github.com/acme/app.git",
                "`http://` scheme is not supported",
            ),
            (
                "git://github.com/acme/app.git",
                "`git://` scheme is not supported",
            ),
            (
                "ssh://git@github.com/acme/app.git",
                "`ssh://` scheme is not supported",
            ),
            ("git@github.com:acme/app.git", "SSH addresses"),
            ("github.com:acme/app", "SSH addresses"),
            (
                "https://user:secret@github.com/acme/app.git",
                "`token` field",
            ),
            ("https://ghp_abc@github.com/acme/app.git", "`token` field"),
            ("https://github.com", "no repository path"),
            ("https://github.com/", "no repository path"),
            ("https:///acme/app", "no host"),
            ("https://exa_mple.org/a", "not a valid host name"),
            ("https://-bad.org/a", "not a valid host name"),
            ("https://example.org:0/a", "port"),
            ("https://example.org:99999/a", "port"),
            ("https://example.org:/a", "port"),
            ("https://[::1/a", "closing `]`"),
            ("https://[zz]/a", "IPv6"),
            ("https://example.org/a b", "not allowed"),
            ("https://example.org/a?x=1", "query or fragment"),
            ("https://example.org/a#frag", "query or fragment"),
            ("https://example.org/../etc", "`..`"),
            ("relative/path/here", "exactly one `/`"),
            ("app", "not a URL, a path or `owner/name`"),
            ("-acme/app", "owner"),
            ("acme/", "repository name"),
            ("acme/..", "repository name"),
            ("ac me/app", "owner"),
            ("acme/a$p", "repository name"),
            ("/srv/../etc", "`..`"),
            ("/", "below `/`"),
            ("file://server/share/repo", "absolute path on this machine"),
            ("file:///srv/x%zz", "two hex digits"),
            ("/srv/a\nb", "control characters"),
        ];
        for (input, expected) in cases {
            let message = rejection(input);
            assert!(message.contains(expected), "{input:?}: {message}");
            assert!(
                message.contains("owner/name"),
                "{input:?} lists the accepted forms: {message}"
            );
        }
    }

    #[test]
    fn credentials_never_echo_into_the_message() {
        for input in [
            "https://user:hunter2@example.org/a.git",
            "https://hunter2@example.org/a.git",
            "http://user:hunter2@example.org/a.git",
        ] {
            let message = rejection(input);
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("***@example.org"), "{message}");
        }
    }

    #[test]
    fn the_data_directory_is_refused() {
        let data_dir = tempfile::tempdir().unwrap();
        let mirror = data_dir.path().join("repos");
        std::fs::create_dir_all(&mirror).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let link = outside.path().join("sneaky");
        std::os::unix::fs::symlink(&mirror, &link).unwrap();
        for inside in [&mirror, &link] {
            let location = RepoLocation::parse(inside.to_str().unwrap()).unwrap();
            let err = location
                .check_permitted(data_dir.path())
                .unwrap_err()
                .to_string();
            assert!(err.contains("data directory"), "{err}");
        }
        let elsewhere = RepoLocation::parse(outside.path().to_str().unwrap()).unwrap();
        assert!(elsewhere.check_permitted(data_dir.path()).is_ok());
        let remote = RepoLocation::parse("https://example.com/a.git").unwrap();
        assert!(remote.check_permitted(data_dir.path()).is_ok());
    }

    fn identity_of(path: &Path) -> RepoIdentity {
        match RepoLocation::parse(path.to_str().unwrap()).unwrap() {
            RepoLocation::Local(local) => local.identity(),
            RepoLocation::Https(_) => unreachable!(),
        }
    }

    /// A checkout, its `.git`, a symlink to it, a linked worktree of it and a directory
    /// inside it all lead to the same repository; a sibling repository does not.
    #[test]
    fn paths_into_one_repository_overlap() {
        let root = tempfile::tempdir().unwrap();
        let checkout = root.path().join("app");
        let repo = git2::Repository::init(&checkout).unwrap();
        std::fs::write(checkout.join("f"), "x").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("f")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("T", "t@example.org").unwrap();
        repo.commit(Some("HEAD"), &signature, &signature, "one", &tree, &[])
            .unwrap();
        let worktree = root.path().join("wt");
        repo.worktree("wt", &worktree, None).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&checkout, &link).unwrap();
        let sibling = root.path().join("other");
        git2::Repository::init(&sibling).unwrap();

        let original = identity_of(&checkout);
        for same in [
            checkout.join(".git"),
            link.clone(),
            link.join(".git"),
            worktree.clone(),
            checkout.join("sub"),
        ] {
            assert!(original.overlaps(&identity_of(&same)), "{}", same.display());
            assert!(identity_of(&same).overlaps(&original), "{}", same.display());
        }
        assert!(!original.overlaps(&identity_of(&sibling)));
        assert!(!identity_of(&sibling).overlaps(&original));
    }
}
