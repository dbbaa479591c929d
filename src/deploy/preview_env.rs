//! What a preview's release runs with: production's env minus `PRODUCTION_ONLY_ENV`, the
//! preview's sealed overrides, and the `CANTILA_PREVIEW*` keys. It lives with deploys
//! because the pipeline snapshots it at release; `previews` re-exports the constants and
//! asks here for a preview's URL and overrides.
//! Invariant: a preview never runs with production's data: `PRODUCTION_ONLY_ENV` is never
//! copied into it.

use std::collections::BTreeMap;

use crate::{
    error::{Error, Result},
    projects::Project,
    store,
};

use super::Deploys;

/// Env keys of production that a preview never inherits: a preview must never reach
/// production's data. They are what a wired database sets (`DATABASE_URL`, which most
/// frameworks read, and libpq's `PG*`), here also when set by hand; a preview that needs a
/// database gets one through its own `env` overrides.
pub const PRODUCTION_ONLY_ENV: &[&str] = &[
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
];

/// Env keys Cantila sets in every preview; overrides may not name them.
pub const PREVIEW_ENV_KEYS: &[&str] = &[
    "CANTILA_PREVIEW",
    "CANTILA_PREVIEW_URL",
    "CANTILA_PREVIEW_ID",
];

impl Deploys {
    /// The URL a preview is reached at, as its env and the API give it.
    pub fn preview_url(&self, hostname: &str) -> String {
        let scheme = match self.tls.mode() {
            crate::tls::TlsMode::Off => "http",
            crate::tls::TlsMode::Acme | crate::tls::TlsMode::SelfSigned => "https",
        };
        format!("{scheme}://{hostname}")
    }

    /// A preview's env overrides, opened.
    pub fn preview_overrides(&self, sealed: &[u8]) -> Result<BTreeMap<String, String>> {
        serde_json::from_slice(&self.secrets.open(sealed)?)
            .map_err(|err| Error::Internal(format!("reading a preview's env overrides: {err}")))
    }

    /// The env a preview's release runs with: production's env without
    /// `PRODUCTION_ONLY_ENV`, then the preview's overrides, then `CANTILA_PREVIEW=1`, its
    /// URL and id.
    pub(crate) async fn preview_release_env(
        &self,
        project: &Project,
        preview_id: &str,
    ) -> Result<BTreeMap<String, String>> {
        let mut env = self.env.snapshot(&project.id).await?;
        for key in PRODUCTION_ONLY_ENV {
            env.remove(*key);
        }
        let project_id = project.id.clone();
        let id = preview_id.to_owned();
        let preview = self
            .store
            .call(move |c| store::previews::by_id(c, &project_id, &id))
            .await?
            .ok_or_else(|| Error::NotFound(format!("preview `{preview_id}` not found")))?;
        if let Some(sealed) = &preview.sealed_env {
            env.extend(self.preview_overrides(sealed)?);
        }
        env.insert("CANTILA_PREVIEW".to_owned(), "1".to_owned());
        env.insert(
            "CANTILA_PREVIEW_URL".to_owned(),
            self.preview_url(&preview.hostname),
        );
        env.insert("CANTILA_PREVIEW_ID".to_owned(), preview.id.clone());
        Ok(env)
    }
}
