//! Previews as stored: a branch, pull request or ref of a project released as its own
//! target.

/// A preview as stored.
#[derive(Debug, Clone)]
pub struct Preview {
    pub id: String,
    pub project_id: String,
    /// Lowercase, one label under the base domain; unique across all accounts.
    pub hostname: String,
    /// The branch it follows; `None` for a preview of a tag or a commit.
    pub branch: Option<String>,
    /// What was asked for: the branch name, a tag or a commit.
    pub git_ref: String,
    pub pull_request: Option<u32>,
    /// Env overrides, sealed JSON (`{"KEY": "value"}`).
    pub sealed_env: Option<Vec<u8>>,
    /// Idle time before the expiry sweep removes it.
    pub ttl_secs: u64,
    /// What created it: `api` or `webhook`.
    pub trigger: String,
    pub created_at: String,
    /// The last create or update (deploy) of the preview.
    pub updated_at: String,
    pub expires_at: String,
}
