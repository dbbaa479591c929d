//! Source: git repositories through git2 (mirrors, fetch, refs, tree export), where a fetch
//! may connect (the egress policy and its proxy), and webhook verification. The only
//! module that uses git2; no git2 type appears in its API.

mod egress;
mod git;
mod refs;
mod repo;
mod webhook;

pub use crate::config::AllowedNetwork;
pub use egress::{resolve as resolve_host, EgressPolicy};
pub use git::{Commit, ExportSummary, FetchOutcome, Mirror, SourceError};
pub use refs::GitRef;
pub use repo::{HttpsUrl, LocalPath, RepoIdentity, RepoLocation};
pub use webhook::{
    confirm_head, verify_gitea, verify_github, verify_gitlab, PullRequestAction, PullRequestEvent,
    PushEvent, SignatureError,
};
