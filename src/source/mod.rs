//! Source: git repositories through git2 (mirrors, fetch, refs, tree export) and webhook
//! verification. The only module that uses git2; no git2 type appears in its API.

mod git;
mod refs;
mod repo;
mod webhook;

pub use git::{Commit, ExportSummary, FetchOutcome, Mirror, SourceError};
pub use refs::GitRef;
pub use repo::{HttpsUrl, LocalPath, RepoLocation};
pub use webhook::{
    verify_gitea, verify_github, verify_gitlab, PullRequestAction, PullRequestEvent, PushEvent,
    SignatureError,
};
