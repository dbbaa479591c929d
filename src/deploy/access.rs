//! Who may make the server fetch which repository: checked at connect, plan, webhook and
//! deploy time (`Deploys::permit_repo`), so a permission the operator revokes later stops
//! fetches. It lives with deploys, the lowest service that fetches; `git_connection`
//! asks it too.
//! Invariant: a local repository is used only by an account the operator allows, never
//! inside the data directory, and never by two accounts.

use crate::{
    error::{Error, Result},
    source::RepoLocation,
    store,
};

use super::Deploys;

impl Deploys {
    /// Checks that the account may make the server fetch `repo`, as the operator's config
    /// says now: a local path only for an account `git.local_repo_accounts` allows, never
    /// inside the data directory, and never one that leads into a repository another
    /// account's project uses (symlinks resolved, worktrees and `.git` directories
    /// included). Remote URLs are checked at each connection instead
    /// (`source::EgressPolicy`).
    pub async fn permit_repo(
        &self,
        account_id: &str,
        handle: &str,
        repo: &RepoLocation,
    ) -> Result<()> {
        let RepoLocation::Local(local) = repo else {
            return Ok(());
        };
        if !self.config.local_repos_allowed(handle) {
            return Err(Error::Forbidden(format!(
                "repositories on this server's disk are not allowed for account `{handle}`: the operator allows them per account (git.local_repo_accounts); connect an https URL instead"
            )));
        }
        repo.check_permitted(&self.config.data_dir)?;
        let account = account_id.to_owned();
        let others = self
            .store
            .call(move |c| store::git::repos_of_other_accounts(c, &account))
            .await?;
        // A connection its account may no longer use fetches nothing, so it claims nothing.
        let claimed: Vec<String> = others
            .into_iter()
            .filter(|(other_handle, _)| self.config.local_repos_allowed(other_handle))
            .map(|(_, other_repo)| other_repo)
            .collect();
        let local = local.clone();
        let shared = tokio::task::spawn_blocking(move || {
            let mine = local.identity();
            claimed
                .iter()
                .any(|other_repo| match RepoLocation::parse(other_repo) {
                    Ok(RepoLocation::Local(theirs)) => theirs.identity().overlaps(&mine),
                    Ok(RepoLocation::Https(_)) | Err(_) => false,
                })
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))?;
        if shared {
            return Err(Error::Conflict(format!(
                "repo {repo} leads into a repository another account's project uses; a repository on this server's disk belongs to one account"
            )));
        }
        Ok(())
    }
}
