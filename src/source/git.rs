//! Git through git2: a bare mirror per project, fetch with a deadline, ref resolution and
//! export of a commit's tree as a plain directory.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, ErrorClass, ErrorCode, FetchOptions, FetchPrune,
    ObjectType, Oid, ProxyOptions, RemoteCallbacks, Repository, Tree,
};

use crate::error::Error;
use crate::source::egress::{ConnectProxy, EgressPolicy, ProxyRefusal};
use crate::source::refs::{is_sha_like, GitRef};
use crate::source::repo::RepoLocation;
use crate::tls::OriginVerifier;

/// The user name GitHub, Gitea and GitLab accept alongside an access token as password.
const TOKEN_USER: &str = "x-access-token";

/// What a fetch mirrors: every branch and tag, forced, so the mirror equals the remote.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// A failure of a git operation. Messages are lowercase and never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the repository cannot be reached: {0}")]
    Unreachable(String),
    /// The host has no address a fetch may reach. One message whatever the host is, and
    /// nothing was contacted, so it tells nothing about what listens there.
    #[error("the repository's host is not allowed: repositories are fetched only from public internet addresses, and this host does not resolve to one (loopback, private, link-local and this server's own addresses are refused unless the operator allows them with git.allowed_networks)")]
    HostRefused,
    #[error("fetching the repository timed out after {secs} s")]
    TimedOut { secs: u64 },
    #[error("`{0}` is not a branch, tag or commit of the repository")]
    RefNotFound(String),
    #[error("`{0}` matches more than one commit; give more hex digits")]
    AmbiguousRef(String),
    #[error("the repository refused access: check that it exists and that the token can read it")]
    AuthFailed,
    #[error("the repository contains an unsafe path: {0}")]
    UnsafePath(String),
    #[error("git: {0}")]
    Git(String),
    /// The disk under the mirror or export is full (ENOSPC): nothing the user did wrong.
    #[error("no space left on the disk: {0}")]
    StorageFull(String),
    #[error("export: {0}")]
    Io(String),
}

/// Failures a user can fix (a wrong URL, branch or token, a server that is down, a
/// crafted tree) are validation errors of the git connection; the rest are our bugs.
impl From<SourceError> for Error {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Unreachable(_)
            | SourceError::HostRefused
            | SourceError::TimedOut { .. }
            | SourceError::RefNotFound(_)
            | SourceError::AmbiguousRef(_)
            | SourceError::AuthFailed
            | SourceError::UnsafePath(_) => Error::Invalid(error.to_string()),
            SourceError::StorageFull(_) => Error::storage_full(),
            SourceError::Git(_) | SourceError::Io(_) => Error::Internal(error.to_string()),
        }
    }
}

/// Wraps an unexpected git2 failure. A function rather than a `From` impl, so no git2
/// type shows in this module's public API.
fn git_failure(error: git2::Error) -> SourceError {
    // libgit2 reports a failed write with the OS's words and no errno to match on.
    if error.class() == git2::ErrorClass::Os && error.message().contains("No space left on device")
    {
        return SourceError::StorageFull(error.message().to_owned());
    }
    SourceError::Git(error.message().to_owned())
}

/// Wraps a file-system failure, telling a full disk apart from everything else.
fn io_failure(context: String, error: std::io::Error) -> SourceError {
    if crate::error::is_storage_full(&error) {
        SourceError::StorageFull(format!("{context}: {error}"))
    } else {
        SourceError::Io(format!("{context}: {error}"))
    }
}

/// What a fetch found on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Branch names (without `refs/heads/`), sorted.
    pub branches: Vec<String>,
    /// Tag names (without `refs/tags/`), sorted.
    pub tags: Vec<String>,
    /// The branch the remote's HEAD points to, when the remote says.
    pub default_branch: Option<String>,
}

/// A commit as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The full sha, 40 lowercase hex digits.
    pub sha: String,
    /// The first line of the commit message.
    pub message: String,
    /// The author's name.
    pub author: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Total size of the regular files written, in bytes.
    pub bytes: u64,
    /// Paths of submodules, which are not exported: their content lives elsewhere.
    pub skipped_submodules: Vec<String>,
    /// Human-readable remarks for the deploy log, one per skipped submodule.
    pub notes: Vec<String>,
}

/// A bare repository on disk holding a copy of one project's remote branches and tags.
/// Invariant: its `refs/heads` and `refs/tags` are exactly what the last successful fetch
/// saw on the remote; nothing else writes to it.
pub struct Mirror {
    path: PathBuf,
    repo: Repository,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("path", &self.path).finish()
    }
}

impl Mirror {
    /// Opens the bare repository at `path`, creating it (and its parents) when missing.
    pub fn open_or_init(path: &Path) -> Result<Mirror, SourceError> {
        let repo = if path.join("HEAD").is_file() {
            Repository::open_bare(path).map_err(git_failure)?
        } else {
            fs::create_dir_all(path)
                .map_err(|error| io_failure(format!("cannot create {}", path.display()), error))?;
            Repository::init_bare(path).map_err(git_failure)?
        };
        Ok(Mirror {
            path: path.to_owned(),
            repo,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the mirror's branches and tags equal to the remote's. Returns within about
    /// `timeout` whatever the remote does: the fetch runs on its own thread, which stops
    /// itself at the deadline whenever git2 hands it control, and is abandoned (it ends
    /// when the connection does) if the remote stalls inside a single read. An https
    /// fetch connects only where `egress` permits, checked at each connection.
    /// Certificates are verified against the system's roots (`tls::OriginVerifier`).
    pub fn fetch(
        &self,
        location: &RepoLocation,
        token: Option<&str>,
        timeout: Duration,
        egress: &EgressPolicy,
    ) -> Result<FetchOutcome, SourceError> {
        self.fetch_trusting(location, token, timeout, egress, OriginVerifier::system())
    }

    /// `fetch`, verifying https servers' certificates with `verifier`.
    pub(crate) fn fetch_trusting(
        &self,
        location: &RepoLocation,
        token: Option<&str>,
        timeout: Duration,
        egress: &EgressPolicy,
        verifier: OriginVerifier,
    ) -> Result<FetchOutcome, SourceError> {
        if let RepoLocation::Local(local) = location {
            check_local_repository(local.as_path())?;
        }
        let job = FetchJob {
            mirror_path: self.path.clone(),
            url: location.fetch_url(),
            token: match location {
                // A token is only ever sent over https; a local repository needs none.
                RepoLocation::Https(_) => token.map(str::to_owned),
                RepoLocation::Local(_) => None,
            },
            // Every https connection goes through the checking proxy; a local path makes
            // no network connection at all.
            egress: match location {
                RepoLocation::Https(_) => Some(egress.clone()),
                RepoLocation::Local(_) => None,
            },
            deadline: Instant::now() + timeout,
            timeout,
            abandoned: Arc::new(AtomicBool::new(false)),
            verifier,
        };
        let abandoned = Arc::clone(&job.abandoned);
        let (sender, receiver) = mpsc::sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("cantila-git-fetch".into())
            .spawn(move || {
                // The receiver may be gone after a timeout; the result is then moot.
                let _ = sender.send(job.run());
            })
            .map_err(|error| SourceError::Io(format!("cannot start the fetch thread: {error}")))?;
        match receiver.recv_timeout(timeout) {
            Ok(outcome) => {
                // The worker has sent its result and is about to return, so this is quick.
                let _ = worker.join();
                outcome
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                abandoned.store(true, Ordering::SeqCst);
                Err(SourceError::TimedOut {
                    secs: timeout_secs(timeout),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SourceError::Git(
                "the fetch thread stopped without a result".into(),
            )),
        }
    }

    /// Finds the commit `git_ref` names: a branch, then a tag, then a sha (or prefix).
    /// A full `refs/heads/x` or `refs/tags/x` only matches that branch or tag.
    pub fn resolve(&self, git_ref: &GitRef) -> Result<Commit, SourceError> {
        let not_found = || SourceError::RefNotFound(git_ref.to_string());
        let candidates: Vec<String> = if let Some(branch) = git_ref.full_branch() {
            vec![format!("refs/heads/{branch}")]
        } else if let Some(tag) = git_ref.full_tag() {
            vec![format!("refs/tags/{tag}")]
        } else {
            vec![
                format!("refs/heads/{git_ref}"),
                format!("refs/tags/{git_ref}"),
            ]
        };
        for name in &candidates {
            match self.repo.find_reference(name) {
                Ok(reference) => {
                    let commit = reference
                        .peel_to_commit()
                        .map_err(|_| SourceError::RefNotFound(git_ref.to_string()))?;
                    return Ok(describe(&commit));
                }
                Err(error) if error.code() == ErrorCode::NotFound => {}
                Err(error) => return Err(git_failure(error)),
            }
        }
        let is_full_name = git_ref.full_branch().is_some() || git_ref.full_tag().is_some();
        if is_full_name || !git_ref.could_be_sha() {
            return Err(not_found());
        }
        let prefix = git_ref.as_str().to_ascii_lowercase();
        let object = match self.repo.find_object_by_prefix(&prefix, None) {
            Ok(object) => object,
            Err(error) if error.code() == ErrorCode::NotFound => return Err(not_found()),
            Err(error) if error.code() == ErrorCode::Ambiguous => {
                return Err(SourceError::AmbiguousRef(git_ref.to_string()))
            }
            Err(error) => return Err(git_failure(error)),
        };
        // A sha may name an annotated tag object; anything that does not lead to a commit
        // (a blob, a tree) is not something a deploy can build.
        let commit = object
            .peel_to_commit()
            .map_err(|_| SourceError::RefNotFound(git_ref.to_string()))?;
        Ok(describe(&commit))
    }

    /// Writes the tree of commit `sha` into `dest`, which must be missing or empty, with
    /// no `.git`. Keeps the executable bit; writes symlinks as links and never follows
    /// one; refuses entry names that could escape `dest`; skips submodules with a note.
    pub fn export(&self, sha: &str, dest: &Path) -> Result<ExportSummary, SourceError> {
        let oid = Oid::from_str(sha)
            .ok()
            .filter(|_| sha.len() == 40 && is_sha_like(sha))
            .ok_or_else(|| SourceError::RefNotFound(sha.to_owned()))?;
        let commit = match self.repo.find_commit(oid) {
            Ok(commit) => commit,
            Err(error) if error.code() == ErrorCode::NotFound => {
                return Err(SourceError::RefNotFound(sha.to_owned()))
            }
            Err(error) => return Err(git_failure(error)),
        };
        prepare_empty_directory(dest)?;
        let mut summary = ExportSummary::default();
        self.export_tree(&commit.tree().map_err(git_failure)?, dest, "", &mut summary)?;
        Ok(summary)
    }

    fn export_tree(
        &self,
        tree: &Tree<'_>,
        dir: &Path,
        prefix: &str,
        summary: &mut ExportSummary,
    ) -> Result<(), SourceError> {
        for entry in tree.iter() {
            let name = entry.name_bytes();
            let shown = format!("{prefix}{}", String::from_utf8_lossy(name));
            check_entry_name(name, &shown)?;
            let target = dir.join(std::ffi::OsStr::from_bytes(name));
            let io_error = |error: std::io::Error| {
                // Only a crafted tree can name one path twice, since the directory started
                // empty; that is the repository's fault, not ours.
                if error.kind() == std::io::ErrorKind::AlreadyExists {
                    return SourceError::UnsafePath(format!("`{shown}` appears twice in a tree"));
                }
                io_failure(format!("cannot write {}", target.display()), error)
            };
            match entry.filemode() {
                0o040000 => {
                    // `create_dir` (not `create_dir_all`) fails on anything already there,
                    // including a symlink, so a crafted tree cannot redirect writes.
                    fs::create_dir(&target).map_err(io_error)?;
                    summary.directories += 1;
                    let subtree = self.repo.find_tree(entry.id()).map_err(git_failure)?;
                    self.export_tree(&subtree, &target, &format!("{shown}/"), summary)?;
                }
                0o160000 => {
                    summary.notes.push(format!(
                        "submodule `{shown}` was skipped: submodules are not fetched, so vendor its files or build them in the Dockerfile"
                    ));
                    summary.skipped_submodules.push(shown);
                }
                0o120000 => {
                    let blob = self.repo.find_blob(entry.id()).map_err(git_failure)?;
                    if blob.content().is_empty() || blob.content().contains(&0) {
                        return Err(SourceError::UnsafePath(format!(
                            "the symlink `{shown}` has an empty or binary target"
                        )));
                    }
                    let link_target = std::ffi::OsStr::from_bytes(blob.content());
                    std::os::unix::fs::symlink(link_target, &target).map_err(io_error)?;
                    summary.symlinks += 1;
                }
                mode => {
                    if entry.kind() != Some(ObjectType::Blob) {
                        return Err(SourceError::Git(format!(
                            "`{shown}` has unexpected mode {mode:o}"
                        )));
                    }
                    let blob = self.repo.find_blob(entry.id()).map_err(git_failure)?;
                    // `create_new` refuses an existing path, so a name listed twice in a
                    // crafted tree cannot overwrite a file or write through a symlink.
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&target)
                        .map_err(io_error)?;
                    file.write_all(blob.content()).map_err(io_error)?;
                    let permissions = if mode == 0o100755 { 0o755 } else { 0o644 };
                    // Set explicitly so the process umask does not change what the build sees.
                    file.set_permissions(fs::Permissions::from_mode(permissions))
                        .map_err(io_error)?;
                    summary.files += 1;
                    summary.bytes += blob.content().len() as u64;
                }
            }
        }
        Ok(())
    }
}

impl Mirror {
    /// The commit `sha` (40 hex digits) of the mirror.
    fn commit_of(&self, sha: &str) -> Result<git2::Commit<'_>, SourceError> {
        let oid = Oid::from_str(sha)
            .ok()
            .filter(|_| sha.len() == 40 && is_sha_like(sha))
            .ok_or_else(|| SourceError::RefNotFound(sha.to_owned()))?;
        match self.repo.find_commit(oid) {
            Ok(commit) => Ok(commit),
            Err(error) if error.code() == ErrorCode::NotFound => {
                Err(SourceError::RefNotFound(sha.to_owned()))
            }
            Err(error) => Err(git_failure(error)),
        }
    }

    /// The repository paths a change from commit `from` to commit `to` adds, removes or
    /// modifies (both sides of a move), sorted and without duplicates. Submodules count as
    /// their path.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>, SourceError> {
        let old = self.commit_of(from)?.tree().map_err(git_failure)?;
        let new = self.commit_of(to)?.tree().map_err(git_failure)?;
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&old), Some(&new), None)
            .map_err(git_failure)?;
        let mut paths = std::collections::BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path_bytes() {
                    paths.insert(String::from_utf8_lossy(path).into_owned());
                }
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// The content of the regular file at `path` (a repository path) in commit `sha`:
    /// `None` when there is none, or when it is larger than `limit` bytes.
    pub fn read_file(
        &self,
        sha: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let tree = self.commit_of(sha)?.tree().map_err(git_failure)?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(entry) => entry,
            Err(error) if error.code() == ErrorCode::NotFound => return Ok(None),
            Err(error) => return Err(git_failure(error)),
        };
        // Only a regular file: a symlink's blob is its target, not the file's content.
        if !matches!(entry.filemode(), 0o100644 | 0o100755) {
            return Ok(None);
        }
        let blob = self.repo.find_blob(entry.id()).map_err(git_failure)?;
        if blob.size() > limit {
            return Ok(None);
        }
        Ok(Some(blob.content().to_vec()))
    }
}

/// One lock per mirror directory, so fetches of the same mirror (a deploy, a webhook's
/// check of the head, a plan) run one after another: concurrent ref updates in one
/// repository fail on each other's lock files.
fn mirror_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Entries nobody holds are dropped, so the map stays as small as the fetches in flight.
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    Arc::clone(locks.entry(path.to_owned()).or_default())
}

/// Everything a fetch thread needs, owned, so the thread can outlive the caller's wait.
struct FetchJob {
    mirror_path: PathBuf,
    url: String,
    token: Option<String>,
    /// Where https connections may go; `None` for a local path, which opens none.
    egress: Option<EgressPolicy>,
    deadline: Instant,
    timeout: Duration,
    /// Set by the caller when it stopped waiting; the callbacks then abort at once.
    abandoned: Arc<AtomicBool>,
    /// What https servers' certificates are verified with (by the proxy).
    verifier: OriginVerifier,
}

impl FetchJob {
    fn run(self) -> Result<FetchOutcome, SourceError> {
        let lock = mirror_lock(&self.mirror_path);
        let _serialized = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The wait for another fetch of this mirror counts against the deadline.
        if Instant::now() >= self.deadline || self.abandoned.load(Ordering::SeqCst) {
            return Err(SourceError::TimedOut {
                secs: timeout_secs(self.timeout),
            });
        }
        // libgit2 sends https connections through the proxy with CONNECT, but opens
        // plain http ones directly (`httpclient.c`: only the request line changes), so
        // only https may get here; its redirects stay https (`git_net_url_apply_redirect`
        // refuses a change of scheme to anything else).
        if self.egress.is_some() && !self.url.starts_with("https://") {
            return Err(SourceError::HostRefused);
        }
        let repo = Repository::open_bare(&self.mirror_path).map_err(git_failure)?;
        let proxy = match &self.egress {
            Some(policy) => Some(
                ConnectProxy::start(policy.clone(), self.deadline, self.verifier.clone()).map_err(
                    |error| SourceError::Io(format!("cannot start the fetch proxy: {error}")),
                )?,
            ),
            None => None,
        };
        let timed_out = AtomicBool::new(false);
        let auth_rejected = AtomicBool::new(false);
        self.fetch_into(&repo, proxy.as_ref(), &timed_out, &auth_rejected)
            .map_err(
                |error| match proxy.as_ref().and_then(ConnectProxy::refusal) {
                    Some(ProxyRefusal::NotPermitted) => SourceError::HostRefused,
                    Some(ProxyRefusal::ConnectFailed(why)) => SourceError::Unreachable(format!(
                        "cannot connect to the repository's host: {why}"
                    )),
                    Some(ProxyRefusal::Untrusted(why)) => {
                        SourceError::Unreachable(format!("the TLS connection failed: {why}"))
                    }
                    None => self.classify(&error, &timed_out, &auth_rejected),
                },
            )
    }

    fn fetch_into(
        &self,
        repo: &Repository,
        proxy: Option<&ConnectProxy>,
        timed_out: &AtomicBool,
        auth_rejected: &AtomicBool,
    ) -> Result<FetchOutcome, git2::Error> {
        let still_in_time = || {
            let late = Instant::now() >= self.deadline || self.abandoned.load(Ordering::SeqCst);
            if late {
                timed_out.store(true, Ordering::SeqCst);
            }
            !late
        };
        let mut callbacks = RemoteCallbacks::new();
        let mut credential_attempts = 0u32;
        callbacks.credentials(|_url, _username, _allowed| {
            credential_attempts += 1;
            // git2 asks again after the server rejects a credential; a second request means
            // the token was refused, and answering again would loop.
            match self.token.as_deref() {
                Some(token) if credential_attempts == 1 && still_in_time() => {
                    Cred::userpass_plaintext(TOKEN_USER, token)
                }
                _ => {
                    auth_rejected.store(true, Ordering::SeqCst);
                    Err(git2::Error::from_str("authentication required"))
                }
            }
        });
        if let Some(proxy) = proxy {
            // Never refused here, whatever libgit2's own check found: its error path after
            // a refused certificate uses the proxy's stream after freeing it (see
            // `source::egress`). The proxy verified the origin already; a leaf that fails
            // its second check has had every tunnel cut by now, so the fetch fails on the
            // closed connection, with the proxy's reason.
            callbacks.certificate_check(move |certificate, host| {
                let leaf = certificate.as_x509().map(|x509| x509.data().to_vec());
                if !leaf.is_some_and(|leaf| proxy.accept_certificate(&leaf, host)) {
                    tracing::debug!(%host, "a git server's certificate did not verify; its tunnels are cut");
                }
                Ok(CertificateCheckStatus::CertificateOk)
            });
        }
        callbacks.transfer_progress(|_progress| still_in_time());
        callbacks.sideband_progress(|_text| still_in_time());
        callbacks.update_tips(|_name, _old, _new| still_in_time());

        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        if let Some(proxy) = proxy {
            // A specified proxy also overrides `http.proxy` and the `*_proxy` variables.
            let mut proxy_options = ProxyOptions::new();
            proxy_options.url(&proxy.url());
            options.proxy_options(proxy_options);
        }
        let mut remote = repo.remote_anonymous(&self.url)?;
        remote.fetch(&MIRROR_REFSPECS, Some(&mut options), Some("cantila fetch"))?;
        // The ref list from the fetch is kept after it disconnects, so this asks nothing
        // of the network; a remote that does not advertise HEAD just has no default.
        let default_branch = remote
            .default_branch()
            .ok()
            .and_then(|name| name.as_str().map(str::to_owned))
            .and_then(|name| name.strip_prefix("refs/heads/").map(str::to_owned));
        if let Some(branch) = &default_branch {
            // HEAD follows the remote's default so the mirror reads like the original.
            let head = format!("refs/heads/{branch}");
            if repo.find_reference(&head).is_ok() {
                repo.set_head(&head)?;
            }
        }
        Ok(FetchOutcome {
            branches: short_ref_names(repo, "refs/heads/")?,
            tags: short_ref_names(repo, "refs/tags/")?,
            default_branch,
        })
    }

    /// Turns a git2 failure into what a user can act on. libgit2's messages may echo the
    /// URL (which holds no credentials) but are scrubbed of the token regardless.
    fn classify(
        &self,
        error: &git2::Error,
        timed_out: &AtomicBool,
        auth_rejected: &AtomicBool,
    ) -> SourceError {
        if timed_out.load(Ordering::SeqCst) || Instant::now() >= self.deadline {
            return SourceError::TimedOut {
                secs: timeout_secs(self.timeout),
            };
        }
        if auth_rejected.load(Ordering::SeqCst) || error.code() == ErrorCode::Auth {
            return SourceError::AuthFailed;
        }
        let message = match self.token.as_deref() {
            Some(token) if !token.is_empty() => error.message().replace(token, "***"),
            _ => error.message().to_owned(),
        };
        if error.code() == ErrorCode::Certificate || error.class() == ErrorClass::Ssl {
            return SourceError::Unreachable(format!("the TLS connection failed ({message})"));
        }
        let reaching_failed = matches!(
            error.class(),
            ErrorClass::Net
                | ErrorClass::Http
                | ErrorClass::Os
                | ErrorClass::Repository
                | ErrorClass::Invalid
        ) || error.code() == ErrorCode::NotFound;
        if reaching_failed {
            SourceError::Unreachable(message)
        } else {
            SourceError::Git(message)
        }
    }
}

fn timeout_secs(timeout: Duration) -> u64 {
    timeout.as_secs_f64().ceil() as u64
}

/// Fails early, with a clear message, for a local path that cannot be a repository.
fn check_local_repository(path: &Path) -> Result<(), SourceError> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(SourceError::Unreachable(format!(
            "{} is not a directory",
            path.display()
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(
            SourceError::Unreachable(format!("{} does not exist", path.display())),
        ),
        Err(error) => Err(SourceError::Unreachable(format!(
            "{} cannot be read: {error}",
            path.display()
        ))),
    }
}

/// The names under `prefix` (e.g. `refs/heads/`), without it, sorted.
fn short_ref_names(repo: &Repository, prefix: &str) -> Result<Vec<String>, git2::Error> {
    let mut names = Vec::new();
    for reference in repo.references_glob(&format!("{prefix}*"))? {
        if let Some(name) = reference?.name().and_then(|name| name.strip_prefix(prefix)) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn describe(commit: &git2::Commit<'_>) -> Commit {
    let author = commit.author();
    let name = String::from_utf8_lossy(author.name_bytes()).into_owned();
    Commit {
        sha: commit.id().to_string(),
        message: commit.summary().unwrap_or_default().to_owned(),
        author: if name.is_empty() {
            String::from_utf8_lossy(author.email_bytes()).into_owned()
        } else {
            name
        },
    }
}

/// Creates `dest` when missing; refuses it when it holds anything, since an export into
/// a used directory would mix trees.
fn prepare_empty_directory(dest: &Path) -> Result<(), SourceError> {
    let io_error =
        |error: std::io::Error| io_failure(format!("cannot prepare {}", dest.display()), error);
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SourceError::Io(format!("{} is not empty", dest.display())));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_error)
        }
        Err(error) => Err(io_error(error)),
    }
}

/// A tree entry's name must be one plain path component. Git never writes anything else,
/// but a crafted tree object could, and a name like `..` or `a/../../x` would escape the
/// export directory. `.git` is refused too: the export must never carry a repository.
fn check_entry_name(name: &[u8], shown: &str) -> Result<(), SourceError> {
    let unsafe_path = |why: &str| SourceError::UnsafePath(format!("`{shown}` {why}"));
    if name.is_empty() || name == b"." || name == b".." {
        return Err(unsafe_path("is not a file name"));
    }
    if name.contains(&b'/') || name.contains(&b'\\') || name.contains(&0) {
        return Err(unsafe_path("contains a path separator"));
    }
    if name.eq_ignore_ascii_case(b".git") {
        return Err(unsafe_path("is a `.git` entry"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use git2::{RepositoryInitOptions, Signature};
    use tempfile::TempDir;

    use super::*;

    const GENEROUS: Duration = Duration::from_secs(30);

    /// A source repository built with git2's object API, so no working tree or git CLI
    /// is involved: `main` (README, an executable script, a symlink, a nested file and a
    /// submodule), `feature` one commit ahead, an annotated tag `v1` and a light tag.
    struct Source {
        dir: TempDir,
        repo: Repository,
        main: Oid,
        feature: Oid,
    }

    impl Source {
        fn new() -> Source {
            let dir = TempDir::new().unwrap();
            let mut options = RepositoryInitOptions::new();
            options.initial_head("main");
            let repo = Repository::init_opts(dir.path(), &options).unwrap();
            let elsewhere = commit_tree(&repo, None, &[], &[("x", 0o100644, b"x")], "elsewhere");
            let app = tree_of(&repo, &[("app.js", 0o100644, b"console.log('hi')\n")]);
            let mut builder = repo.treebuilder(None).unwrap();
            for (name, mode, content) in [
                ("README.md", 0o100644, &b"hello\n"[..]),
                ("run.sh", 0o100755, b"#!/bin/sh\necho hi\n"),
                ("readme-link", 0o120000, b"README.md"),
            ] {
                builder
                    .insert(name, repo.blob(content).unwrap(), mode)
                    .unwrap();
            }
            builder.insert("src", app, 0o040000).unwrap();
            builder.insert("vendor-lib", elsewhere, 0o160000).unwrap();
            let root = builder.write().unwrap();
            drop(builder);
            let main = commit(
                &repo,
                Some("refs/heads/main"),
                &[],
                root,
                "first commit\n\nbody",
            );
            let feature = commit_tree(
                &repo,
                Some("refs/heads/feature"),
                &[main],
                &[("feature.txt", 0o100644, b"new\n")],
                "add feature",
            );
            let signature = signature();
            let main_object = repo.find_object(main, None).unwrap();
            repo.tag("v1", &main_object, &signature, "release 1", false)
                .unwrap();
            repo.tag_lightweight("light", &main_object, false).unwrap();
            drop(main_object);
            Source {
                dir,
                repo,
                main,
                feature,
            }
        }

        fn location(&self) -> RepoLocation {
            RepoLocation::parse(self.dir.path().to_str().unwrap()).unwrap()
        }

        fn file_url(&self) -> RepoLocation {
            RepoLocation::parse(&format!("file://{}", self.dir.path().display())).unwrap()
        }
    }

    fn signature() -> Signature<'static> {
        Signature::now("Ada Lovelace", "ada@example.org").unwrap()
    }

    fn tree_of(repo: &Repository, files: &[(&str, i32, &[u8])]) -> Oid {
        let mut builder = repo.treebuilder(None).unwrap();
        for (name, mode, content) in files {
            builder
                .insert(name, repo.blob(content).unwrap(), *mode)
                .unwrap();
        }
        builder.write().unwrap()
    }

    fn commit(
        repo: &Repository,
        update: Option<&str>,
        parents: &[Oid],
        tree: Oid,
        message: &str,
    ) -> Oid {
        let tree = repo.find_tree(tree).unwrap();
        let parents: Vec<git2::Commit<'_>> = parents
            .iter()
            .map(|id| repo.find_commit(*id).unwrap())
            .collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let signature = signature();
        repo.commit(update, &signature, &signature, message, &tree, &parents)
            .unwrap()
    }

    fn commit_tree(
        repo: &Repository,
        update: Option<&str>,
        parents: &[Oid],
        files: &[(&str, i32, &[u8])],
        message: &str,
    ) -> Oid {
        let tree = tree_of(repo, files);
        commit(repo, update, parents, tree, message)
    }

    /// The default policy: public addresses only.
    fn no_network() -> EgressPolicy {
        EgressPolicy::default()
    }

    /// A policy that lets fetches reach test servers on loopback.
    fn loopback_allowed() -> EgressPolicy {
        EgressPolicy::new(&["127.0.0.0/8".parse().unwrap()])
    }

    fn mirror_in(dir: &TempDir) -> Mirror {
        Mirror::open_or_init(&dir.path().join("repos").join("prj_test.git")).unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn resolve(mirror: &Mirror, text: &str) -> Result<Commit, SourceError> {
        mirror.resolve(&GitRef::parse(text).unwrap())
    }

    #[test]
    fn fetch_from_a_local_path_then_resolve_and_export() {
        let source = Source::new();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let outcome = mirror
            .fetch(&source.location(), None, GENEROUS, &no_network())
            .unwrap();
        assert_eq!(outcome.branches, ["feature", "main"]);
        assert_eq!(outcome.tags, ["light", "v1"]);
        assert_eq!(outcome.default_branch.as_deref(), Some("main"));

        let main_sha = source.main.to_string();
        let feature_sha = source.feature.to_string();
        let cases = [
            ("main", &main_sha),
            ("refs/heads/main", &main_sha),
            ("feature", &feature_sha),
            ("v1", &main_sha),
            ("refs/tags/v1", &main_sha),
            ("light", &main_sha),
            (&main_sha[..7], &main_sha),
            (&feature_sha[..12], &feature_sha),
            (&feature_sha, &feature_sha),
        ];
        for (text, expected) in cases {
            let found = resolve(&mirror, text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&found.sha, expected, "{text}");
        }
        let first = resolve(&mirror, "main").unwrap();
        assert_eq!(first.message, "first commit");
        assert_eq!(first.author, "Ada Lovelace");
        assert_eq!(
            resolve(&mirror, &main_sha.to_uppercase()[..9]).unwrap().sha,
            main_sha
        );

        let export_dir = data.path().join("build").join("context");
        let summary = mirror.export(&main_sha, &export_dir).unwrap();
        assert_eq!(
            fs::read_to_string(export_dir.join("README.md")).unwrap(),
            "hello\n"
        );
        assert_eq!(mode_of(&export_dir.join("README.md")), 0o644);
        assert_eq!(mode_of(&export_dir.join("run.sh")), 0o755);
        let link = export_dir.join("readme-link");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("README.md"));
        assert_eq!(
            fs::read_to_string(export_dir.join("src").join("app.js")).unwrap(),
            "console.log('hi')\n"
        );
        assert!(!export_dir.join(".git").exists());
        assert!(!export_dir.join("vendor-lib").exists());
        assert!(!export_dir.join("feature.txt").exists());
        assert_eq!(summary.files, 3);
        assert_eq!(summary.directories, 1);
        assert_eq!(summary.symlinks, 1);
        assert_eq!(summary.bytes, 6 + 18 + 18);
        assert_eq!(summary.skipped_submodules, ["vendor-lib"]);
        assert!(
            summary.notes[0].contains("submodule `vendor-lib` was skipped"),
            "{:?}",
            summary.notes
        );

        let feature_dir = data.path().join("feature");
        mirror.export(&feature_sha, &feature_dir).unwrap();
        assert_eq!(
            fs::read_to_string(feature_dir.join("feature.txt")).unwrap(),
            "new\n"
        );
    }

    #[test]
    fn unknown_refs_are_ref_not_found() {
        let source = Source::new();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        mirror
            .fetch(&source.location(), None, GENEROUS, &no_network())
            .unwrap();
        for text in [
            "nope",
            "refs/heads/v1",
            "refs/tags/main",
            "1234567",
            "feature/none",
        ] {
            match resolve(&mirror, text) {
                Err(SourceError::RefNotFound(name)) => assert_eq!(name, text),
                other => panic!("{text}: expected RefNotFound, got {other:?}"),
            }
        }
        let api_error = Error::from(resolve(&mirror, "nope").unwrap_err());
        let Error::Invalid(message) = api_error else {
            panic!("ref not found must be a 422");
        };
        assert_eq!(
            message,
            "`nope` is not a branch, tag or commit of the repository"
        );
    }

    #[test]
    fn fetch_from_a_file_url_follows_new_commits_and_deleted_branches() {
        let source = Source::new();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let first = mirror
            .fetch(&source.file_url(), None, GENEROUS, &no_network())
            .unwrap();
        assert_eq!(first.branches, ["feature", "main"]);
        assert_eq!(
            resolve(&mirror, "main").unwrap().sha,
            source.main.to_string()
        );

        let newer = commit_tree(
            &source.repo,
            Some("refs/heads/main"),
            &[source.main],
            &[("README.md", 0o100644, b"hello again\n")],
            "second commit",
        );
        source
            .repo
            .find_reference("refs/heads/feature")
            .unwrap()
            .delete()
            .unwrap();

        // The same handle sees the new pack and refs: a long-lived `Mirror` stays correct.
        let second = mirror
            .fetch(&source.file_url(), None, GENEROUS, &no_network())
            .unwrap();
        assert_eq!(second.branches, ["main"]);
        let head = resolve(&mirror, "main").unwrap();
        assert_eq!(head.sha, newer.to_string());
        assert_eq!(head.message, "second commit");
        assert!(matches!(
            resolve(&mirror, "feature"),
            Err(SourceError::RefNotFound(_))
        ));
        // The old commit is still known by sha: a redeploy of an older commit works.
        assert_eq!(
            resolve(&mirror, &source.main.to_string()).unwrap().sha,
            source.main.to_string()
        );
    }

    #[test]
    fn missing_or_non_repository_paths_are_unreachable() {
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let missing = data.path().join("no-such-repo");
        let location = RepoLocation::parse(missing.to_str().unwrap()).unwrap();
        let error = mirror
            .fetch(&location, None, GENEROUS, &no_network())
            .unwrap_err();
        let message = Error::from(error).to_string();
        assert!(message.contains("cannot be reached"), "{message}");
        assert!(message.contains("does not exist"), "{message}");

        let empty = TempDir::new().unwrap();
        let location = RepoLocation::parse(empty.path().to_str().unwrap()).unwrap();
        let error = mirror
            .fetch(&location, None, GENEROUS, &no_network())
            .unwrap_err();
        assert!(matches!(error, SourceError::Unreachable(_)), "{error:?}");
    }

    /// Runs `work` on a thread and returns its result, panicking when it takes longer than
    /// `deadline`: "answers, never hangs", with a deadline far above the time expected.
    fn answered_within<T: Send + 'static>(
        deadline: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(work());
        });
        result
            .recv_timeout(deadline)
            .unwrap_or_else(|_| panic!("no answer within {deadline:?}"))
    }

    #[test]
    fn a_refused_https_connection_fails_fast_as_unreachable() {
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let location = RepoLocation::parse("https://127.0.0.1:1/x.git").unwrap();
        // With a ten-minute timeout, an answer within a minute is one that did not wait for
        // the timeout.
        let error = answered_within(Duration::from_secs(60), move || {
            mirror.fetch(
                &location,
                Some("tok_never_shown"),
                Duration::from_secs(600),
                &loopback_allowed(),
            )
        })
        .unwrap_err();
        assert!(matches!(error, SourceError::Unreachable(_)), "{error:?}");
        let message = Error::from(error);
        assert!(matches!(message, Error::Invalid(_)));
        assert!(
            !message.to_string().contains("tok_never_shown"),
            "{message}"
        );
    }

    /// A loopback listener that counts the connections it accepts and, when `first_bytes`
    /// is set, reports the first bytes of the first one.
    fn counting_listener() -> (
        u16,
        Arc<std::sync::atomic::AtomicUsize>,
        mpsc::Receiver<Vec<u8>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let (sender, first_bytes) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buffer = [0u8; 16];
                let read = std::io::Read::read(&mut stream, &mut buffer).unwrap_or(0);
                let _ = sender.send(buffer[..read].to_vec());
            }
        });
        (port, accepted, first_bytes)
    }

    /// libgit2 sends every https connection through the proxy: with the default policy a
    /// loopback, private or link-local host is refused with one message, at once, and
    /// the listener there is never contacted.
    #[test]
    fn internal_hosts_are_refused_with_one_message_and_never_contacted() {
        let (port, accepted, _) = counting_listener();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let mut messages = Vec::new();
        for url in [
            format!("https://127.0.0.1:{port}/x.git"),
            format!("https://localhost:{port}/x.git"),
            format!("https://[::1]:{port}/x.git"),
            "https://10.0.0.1/x.git".to_owned(),
            "https://169.254.169.254/latest/meta-data.git".to_owned(),
            "https://100.64.0.1/x.git".to_owned(),
        ] {
            let location = RepoLocation::parse(&url).unwrap();
            let started = Instant::now();
            let error = mirror
                .fetch(&location, Some("tok_x"), GENEROUS, &no_network())
                .unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{url} took {:?}",
                started.elapsed()
            );
            assert!(
                matches!(error, SourceError::HostRefused),
                "{url}: {error:?}"
            );
            messages.push(Error::from(error).to_string());
        }
        messages.dedup();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("git.allowed_networks"), "{messages:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "a refused host was contacted"
        );
    }

    /// libgit2 would open a plain-http URL directly even with a proxy set (only https
    /// goes through CONNECT), so a fetch under a policy refuses anything but https.
    #[test]
    fn plain_http_under_a_policy_connects_nowhere() {
        let (port, accepted, _) = counting_listener();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let job = FetchJob {
            mirror_path: mirror.path().to_owned(),
            url: format!("http://127.0.0.1:{port}/x.git"),
            token: None,
            egress: Some(loopback_allowed()),
            deadline: Instant::now() + GENEROUS,
            timeout: GENEROUS,
            abandoned: Arc::new(AtomicBool::new(false)),
            verifier: OriginVerifier::system(),
        };
        let error = job.run().unwrap_err();
        assert!(matches!(error, SourceError::HostRefused), "{error:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "the server was contacted"
        );
    }

    /// With the operator's allowance, the fetch reaches the loopback server: it receives
    /// a TLS ClientHello (the proxy's own handshake, which checks its certificate before
    /// a tunnel opens).
    #[test]
    fn an_allowed_network_is_reached_through_the_tunnel() {
        let (port, accepted, first_bytes) = counting_listener();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let location = RepoLocation::parse(&format!("https://127.0.0.1:{port}/x.git")).unwrap();
        let error = mirror
            .fetch(
                &location,
                None,
                Duration::from_secs(10),
                &loopback_allowed(),
            )
            .unwrap_err();
        assert!(matches!(error, SourceError::Unreachable(_)), "{error:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let hello = first_bytes.recv_timeout(GENEROUS).unwrap();
        assert_eq!(
            hello.first(),
            Some(&0x16),
            "a TLS handshake record: {hello:?}"
        );
    }

    /// An https server whose certificate does not verify fails the fetch at once, with
    /// the reason. Before the proxy verified certificates, libgit2 refused it on an error
    /// path that writes through a freed stream (see `source::egress`): the fetch thread
    /// blocked for good and the fetch ended only with its timeout.
    #[test]
    fn an_untrusted_certificate_fails_the_fetch_with_the_reason() {
        let (_, chain, key) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let (port, _) = crate::tls::test_tls_server(vec![(chain, key)]);
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let location = RepoLocation::parse(&format!("https://127.0.0.1:{port}/x.git")).unwrap();
        let error = mirror
            .fetch(&location, Some("tok_x"), GENEROUS, &loopback_allowed())
            .unwrap_err();
        let SourceError::Unreachable(why) = &error else {
            panic!("{error:?}");
        };
        assert!(
            why.starts_with(
                "the TLS connection failed: the certificate of 127.0.0.1 is not trusted"
            ),
            "{why}"
        );
        assert!(!Error::from(error).to_string().contains("tok_x"));
    }

    /// A server that shows the proxy a trusted certificate and libgit2 another one gets
    /// nothing over libgit2's connection: the tunnel is cut before the first request, so
    /// neither a request nor the token reaches it.
    #[test]
    fn a_server_switching_certificates_gets_no_request() {
        let (ca, chain, key) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let (_, stranger_chain, stranger_key) = crate::tls::test_ca_and_leaf(&["127.0.0.1"]);
        let (port, received) =
            crate::tls::test_tls_server(vec![(chain, key), (stranger_chain, stranger_key)]);
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let location = RepoLocation::parse(&format!("https://127.0.0.1:{port}/x.git")).unwrap();
        let verifier = OriginVerifier::trusting_pem(ca.as_bytes()).unwrap();
        let error = mirror
            .fetch_trusting(
                &location,
                Some("tok_x"),
                GENEROUS,
                &loopback_allowed(),
                verifier,
            )
            .unwrap_err();
        let SourceError::Unreachable(why) = &error else {
            panic!("{error:?}");
        };
        assert!(why.contains("not trusted"), "{why}");
        // Each connection whose handshake completed reports what it received. Whether
        // libgit2's handshake completes before the tunnel is cut depends on timing, so the
        // reports are gathered until the server stops, and none may hold a byte.
        let mut reports: Vec<(usize, Vec<u8>)> = Vec::new();
        while let Ok(report) = received.recv_timeout(GENEROUS) {
            reports.push(report);
        }
        assert!(
            !reports.is_empty(),
            "the proxy's own check reached the server"
        );
        assert!(
            reports.iter().all(|(_, bytes)| bytes.is_empty()),
            "nothing reached the server: {reports:?}"
        );
    }

    #[test]
    fn a_stalled_server_times_out_instead_of_hanging() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (release, released) = mpsc::channel::<()>();
        // Accepts the connection and never answers, like a black-holed server.
        let server = std::thread::spawn(move || {
            let (_stream, _) = listener.accept().unwrap();
            let _ = released.recv_timeout(Duration::from_secs(60));
        });
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let location = RepoLocation::parse(&format!("https://127.0.0.1:{port}/x.git")).unwrap();
        let error = answered_within(Duration::from_secs(60), move || {
            mirror.fetch(&location, None, Duration::from_secs(1), &loopback_allowed())
        })
        .unwrap_err();
        assert!(
            matches!(error, SourceError::TimedOut { secs: 1 }),
            "{error:?}"
        );
        assert_eq!(
            Error::from(error).to_string(),
            "fetching the repository timed out after 1 s"
        );
        // Closing the connection lets the abandoned fetch thread finish too.
        release.send(()).unwrap();
        server.join().unwrap();
    }

    /// An HTTP server that answers every request with 401 and records the
    /// `Authorization` headers it was sent.
    fn refusing_server() -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut authorizations = Vec::new();
            listener.set_nonblocking(false).unwrap();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    if let Some(value) = line.strip_prefix("Authorization: ") {
                        authorizations.push(value.trim().to_owned());
                    }
                    line.clear();
                }
                let response = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                stream.write_all(response.as_bytes()).unwrap();
            }
            authorizations
        });
        (port, server)
    }

    #[test]
    fn a_refused_token_is_auth_failed_and_never_echoed() {
        let (port, server) = refusing_server();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        // Plain http is refused by `RepoLocation`; the job is driven directly so the test
        // needs no TLS server. The credential path is the same for both schemes.
        let job = FetchJob {
            mirror_path: mirror.path().to_owned(),
            url: format!("http://127.0.0.1:{port}/x.git"),
            token: Some("tok_secret_value".into()),
            egress: None,
            deadline: Instant::now() + GENEROUS,
            timeout: GENEROUS,
            abandoned: Arc::new(AtomicBool::new(false)),
            verifier: OriginVerifier::system(),
        };
        let error = job.run().unwrap_err();
        assert!(matches!(error, SourceError::AuthFailed), "{error:?}");
        assert!(!Error::from(error).to_string().contains("tok_secret_value"));
        let authorizations = server.join().unwrap();
        use base64::Engine as _;
        let expected =
            base64::engine::general_purpose::STANDARD.encode("x-access-token:tok_secret_value");
        assert_eq!(authorizations, [format!("Basic {expected}")]);
    }

    #[test]
    fn export_refuses_a_used_directory_and_unknown_commits() {
        let source = Source::new();
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        mirror
            .fetch(&source.location(), None, GENEROUS, &no_network())
            .unwrap();
        let used = data.path().join("used");
        fs::create_dir(&used).unwrap();
        fs::write(used.join("left-over"), "x").unwrap();
        let error = mirror.export(&source.main.to_string(), &used).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        let unknown = "1234567890123456789012345678901234567890";
        let error = mirror
            .export(unknown, &data.path().join("fresh"))
            .unwrap_err();
        assert!(matches!(error, SourceError::RefNotFound(_)), "{error:?}");
        let error = mirror
            .export("main", &data.path().join("fresh"))
            .unwrap_err();
        assert!(matches!(error, SourceError::RefNotFound(_)), "{error:?}");
    }

    /// One raw tree entry: mode text, name bytes, object id.
    type RawEntry<'a> = (&'a str, &'a [u8], Oid);

    /// Writes a tree object byte by byte, bypassing git2's checks, as an attacker could.
    fn raw_tree(repo: &Repository, entries: &[RawEntry<'_>]) -> Oid {
        let mut bytes = Vec::new();
        for (mode, name, id) in entries {
            bytes.extend_from_slice(mode.as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(id.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
    }

    #[test]
    fn crafted_trees_cannot_escape_the_export_directory() {
        let data = TempDir::new().unwrap();
        let mirror = mirror_in(&data);
        let repo = &mirror.repo;
        let outside = TempDir::new().unwrap();
        let payload = repo.blob(b"pwned").unwrap();
        let link_target = repo
            .blob(outside.path().to_str().unwrap().as_bytes())
            .unwrap();
        let inner = raw_tree(repo, &[("100644", b"file", payload)]);
        let cases: [(&str, Vec<RawEntry<'_>>); 6] = [
            ("dot-dot", vec![("100644", b"..", payload)]),
            ("dot-dot dir", vec![("40000", b"..", inner)]),
            ("slash", vec![("100644", b"../../escape", payload)]),
            ("absolute", vec![("100644", b"/tmp/escape", payload)]),
            ("dot-git", vec![("40000", b".GIT", inner)]),
            // A symlink and a directory of the same name: writing into the directory
            // would follow the link if the export trusted the tree.
            (
                "link then dir",
                vec![("120000", b"x", link_target), ("40000", b"x", inner)],
            ),
        ];
        for (label, entries) in cases {
            let tree = raw_tree(repo, &entries);
            let sha = commit(repo, None, &[], tree, label).to_string();
            let dest = data.path().join("exports").join(label.replace(' ', "-"));
            let result = mirror.export(&sha, &dest);
            assert!(
                matches!(result, Err(SourceError::UnsafePath(_))),
                "{label}: {result:?}"
            );
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "{label}");
        }
        let tree = raw_tree(repo, &[("100644", b"..", payload)]);
        let sha = commit(repo, None, &[], tree, "unsafe").to_string();
        let error = mirror
            .export(&sha, &data.path().join("unsafe"))
            .unwrap_err();
        assert!(matches!(error, SourceError::UnsafePath(_)), "{error:?}");
        assert!(matches!(Error::from(error), Error::Invalid(_)));
    }

    #[test]
    fn a_mirror_can_move_into_spawn_blocking() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Mirror>();
    }

    #[test]
    fn internal_failures_are_internal_errors() {
        let error = Error::from(SourceError::Git("odb corrupt".into()));
        assert!(matches!(error, Error::Internal(_)), "{error:?}");
        let error = Error::from(SourceError::AuthFailed);
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    }
}
