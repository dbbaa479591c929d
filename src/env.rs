//! Project env vars: set, remove, list (masked), and the snapshot a deploy runs with.
//! Invariant: values are sealed in the store; secret values never leave the daemon except
//! into the containers they belong to.

use std::collections::BTreeMap;

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    model::build::BuildName,
    names::{EnvKey, Scope},
    secrets::SecretBox,
    store::{self, env::StoredVar, Store},
};

/// The env service handle: the store the variables live in and the box that seals them.
#[derive(Clone)]
pub struct Env {
    store: Store,
    secrets: SecretBox,
}

/// The longest value accepted, in bytes.
const MAX_VALUE_BYTES: usize = 32 * 1024;

/// What to do with one key.
#[derive(Debug)]
pub enum EnvChange {
    Set { value: String, secret: Option<bool> },
    Remove,
}

/// One variable as a caller may see it.
#[derive(Debug, Clone)]
pub struct EnvVarView {
    pub key: String,
    /// `None` when masked (secret, or a read-scope caller).
    pub value: Option<String>,
    pub secret: bool,
    pub updated_at: String,
    /// Set or changed since the running release was deployed.
    pub pending: bool,
}

#[derive(Debug, Clone)]
pub struct EnvListing {
    pub vars: Vec<EnvVarView>,
    /// Keys removed since the running release was deployed.
    pub pending_removals: Vec<String>,
}

pub fn validate_value(key: &EnvKey, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES || value.contains('\0') {
        return Err(Error::Invalid(format!(
            "the value of `{}` must be at most 32 KiB and contain no NUL byte",
            key.as_str()
        )));
    }
    Ok(())
}

impl Env {
    pub fn new(store: Store, secrets: SecretBox) -> Self {
        Self { store, secrets }
    }

    pub async fn list(&self, actor: &Actor, project_id: String) -> Result<EnvListing> {
        let actor = actor.clone();
        let secrets = self.secrets.clone();
        self.store
            .call(move |db| {
                store::projects::check_owned(db, &actor.account_id, &project_id)?;
                listing(&secrets, &actor, store::env::with_running(db, &project_id)?)
            })
            .await
    }

    /// Applies the changes in one transaction; they take effect on the next deploy.
    pub async fn set(
        &self,
        actor: &Actor,
        project_id: String,
        changes: BTreeMap<EnvKey, EnvChange>,
    ) -> Result<EnvListing> {
        for (key, change) in &changes {
            if let EnvChange::Set { value, .. } = change {
                validate_value(key, value)?;
            }
        }
        let audits: Vec<store::Audit> = changes
            .keys()
            .map(|key| store::Audit::by(actor, "env.set", format!("{project_id}:{}", key.as_str())))
            .collect();
        let actor = actor.clone();
        let secrets = self.secrets.clone();
        self.store
            .write_audited(audits, move |tx| {
                store::projects::check_owned(tx, &actor.account_id, &project_id)?;
                apply(tx, &secrets, &project_id, changes)?;
                listing(&secrets, &actor, store::env::with_running(tx, &project_id)?)
            })
            .await
    }

    /// The values a deploy starts its instances with.
    pub async fn snapshot(&self, project_id: &str) -> Result<BTreeMap<String, String>> {
        let project_id = project_id.to_owned();
        let secrets = self.secrets.clone();
        self.store
            .call(move |connection| {
                store::env::all(connection, &project_id)?
                    .into_iter()
                    .map(|var| Ok((var.key, secrets.open_string(&var.sealed_value)?)))
                    .collect()
            })
            .await
    }
}

/// The most build secrets a project may have, and the longest value, in bytes.
const MAX_BUILD_SECRETS: usize = 100;
const MAX_BUILD_SECRET_BYTES: usize = 64 * 1024;

pub use crate::store::build_secrets::SecretEntry as BuildSecretEntry;

/// Build secrets: values a build may read (a BuildKit secret mount) that never become part
/// of the image, the plan or a log. They live beside the env because they are sealed the
/// same way; unlike secret env values they never leave the daemon except into a build.
impl Env {
    pub async fn build_secrets(
        &self,
        actor: &Actor,
        project_id: String,
    ) -> Result<Vec<BuildSecretEntry>> {
        let account_id = actor.account_id.clone();
        self.store
            .call(move |db| {
                store::projects::check_owned(db, &account_id, &project_id)?;
                store::build_secrets::names(db, &project_id)
            })
            .await
    }

    /// Sets (creates or replaces) one build secret; returns its entry, never its value.
    pub async fn set_build_secret(
        &self,
        actor: &Actor,
        project_id: String,
        name: BuildName,
        value: String,
    ) -> Result<BuildSecretEntry> {
        if value.is_empty() || value.len() > MAX_BUILD_SECRET_BYTES {
            return Err(Error::Invalid(format!(
                "value: the value of build secret `{name}` must be 1 byte to 64 KiB"
            )));
        }
        let audit = store::Audit::by(actor, "build_secret.set", format!("{project_id}:{name}"));
        let account_id = actor.account_id.clone();
        let sealed = self.secrets.seal_str(&value);
        drop(value);
        self.store
            .write_audited(audit, move |tx| {
                store::projects::check_owned(tx, &account_id, &project_id)?;
                let exists = store::build_secrets::names(tx, &project_id)?
                    .iter()
                    .any(|entry| entry.name == name.as_str());
                if !exists && store::build_secrets::count(tx, &project_id)? >= MAX_BUILD_SECRETS {
                    return Err(Error::Invalid(format!(
                        "name: a project has at most {MAX_BUILD_SECRETS} build secrets; remove one first"
                    )));
                }
                store::build_secrets::upsert(tx, &project_id, name.as_str(), &sealed, &clock::now())?;
                store::build_secrets::names(tx, &project_id)?
                    .into_iter()
                    .find(|entry| entry.name == name.as_str())
                    .ok_or_else(|| Error::Internal("a build secret vanished as it was set".to_owned()))
            })
            .await
    }

    pub async fn remove_build_secret(
        &self,
        actor: &Actor,
        project_id: String,
        name: BuildName,
    ) -> Result<()> {
        let audit = store::Audit::by(actor, "build_secret.remove", format!("{project_id}:{name}"));
        let account_id = actor.account_id.clone();
        self.store
            .write_audited(audit, move |tx| {
                store::projects::check_owned(tx, &account_id, &project_id)?;
                if !store::build_secrets::delete(tx, &project_id, name.as_str())? {
                    return Err(Error::NotFound(format!(
                        "build secret `{name}` not found in project `{project_id}`"
                    )));
                }
                Ok(())
            })
            .await
    }

    /// The project's build secrets, opened, for the build of a deploy (and nothing else).
    pub async fn build_secrets_for_build(&self, project_id: &str) -> Result<Vec<(String, String)>> {
        let project_id = project_id.to_owned();
        let secrets = self.secrets.clone();
        self.store
            .call(move |db| {
                store::build_secrets::sealed(db, &project_id)?
                    .into_iter()
                    .map(|(name, sealed)| Ok((name, secrets.open_string(&sealed)?)))
                    .collect()
            })
            .await
    }
}

/// Writes each change (sealed) inside the caller's transaction.
fn apply(
    tx: &store::Db,
    secrets: &SecretBox,
    project_id: &str,
    changes: BTreeMap<EnvKey, EnvChange>,
) -> Result<()> {
    let now = clock::now();
    for (key, change) in changes {
        match change {
            EnvChange::Set { value, secret } => {
                let secret = secret.unwrap_or_else(|| key.looks_secret());
                store::env::upsert(
                    tx,
                    project_id,
                    &StoredVar {
                        key: key.as_str().to_owned(),
                        sealed_value: secrets.seal_str(&value),
                        secret,
                        updated_at: now.clone(),
                    },
                )?;
            }
            EnvChange::Remove => {
                store::env::delete(tx, project_id, key.as_str())?;
            }
        }
    }
    Ok(())
}

/// The listing of the stored variables against the running release's sealed env.
fn listing(
    secrets: &SecretBox,
    actor: &Actor,
    (stored, running): (Vec<StoredVar>, Option<Vec<u8>>),
) -> Result<EnvListing> {
    let running: Option<BTreeMap<String, String>> = running
        .and_then(|sealed| secrets.open(&sealed).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let mut vars = Vec::with_capacity(stored.len());
    let mut current = BTreeMap::new();
    for var in stored {
        let value = secrets.open_string(&var.sealed_value)?;
        let pending = match &running {
            Some(running) => running.get(&var.key) != Some(&value),
            None => true,
        };
        let visible = actor.scope >= Scope::Deploy && !var.secret;
        current.insert(var.key.clone(), ());
        vars.push(EnvVarView {
            key: var.key,
            value: visible.then_some(value),
            secret: var.secret,
            updated_at: var.updated_at,
            pending,
        });
    }
    let pending_removals = running
        .map(|running| {
            running
                .into_keys()
                .filter(|key| !current.contains_key(key))
                .collect()
        })
        .unwrap_or_default();
    Ok(EnvListing {
        vars,
        pending_removals,
    })
}
