//! Registry credentials: an account's username and password (or token) per registry
//! server, used for its image pulls. `Registries` is the handle (store and secret box).
//! Invariants: the password is sealed at rest and never leaves this module except as the
//! `RegistryCredential` a pull presents (whose `Debug` masks it); another account's credentials
//! are never found (404); one set per server and account, a new one replacing the old.

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    ids,
    model::image::RegistryServer,
    runtime::RegistryCredential,
    secrets::SecretBox,
    store::{self, registries::StoredCredential, Store},
};

/// The longest username and password accepted (registry tokens are long JWTs).
const MAX_USERNAME_LEN: usize = 255;
const MAX_PASSWORD_LEN: usize = 8192;

#[derive(Clone)]
pub struct Registries {
    store: Store,
    /// Seals passwords as they are added, opens them for a pull.
    secrets: SecretBox,
}

/// Credentials as listed: never the password.
#[derive(Debug, Clone)]
pub struct RegistryView {
    pub id: String,
    pub server: String,
    pub username: String,
    pub created_at: String,
}

impl From<&StoredCredential> for RegistryView {
    fn from(stored: &StoredCredential) -> Self {
        Self {
            id: stored.id.clone(),
            server: stored.server.clone(),
            username: stored.username.clone(),
            created_at: stored.created_at.clone(),
        }
    }
}

/// A validated request to add credentials. `Debug` masks the password.
pub struct NewCredential {
    pub server: RegistryServer,
    pub username: String,
    pub password: String,
}

impl NewCredential {
    pub fn parse(server: &str, username: &str, password: String) -> Result<Self> {
        let server = RegistryServer::parse(server)?;
        if username.is_empty() || username.len() > MAX_USERNAME_LEN {
            return Err(Error::Invalid(format!(
                "username must be 1-{MAX_USERNAME_LEN} characters"
            )));
        }
        if username.chars().any(|c| c.is_control() || c == ':') {
            return Err(Error::Invalid(
                "username must not hold control characters or `:`".to_owned(),
            ));
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
            return Err(Error::Invalid(format!(
                "password must be 1-{MAX_PASSWORD_LEN} characters (a password or an access token)"
            )));
        }
        if password.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "password must not hold control characters".to_owned(),
            ));
        }
        Ok(Self {
            server,
            username: username.to_owned(),
            password,
        })
    }
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl Registries {
    pub fn new(store: Store, secrets: SecretBox) -> Self {
        Self { store, secrets }
    }

    /// Stores credentials for a server, replacing the account's earlier ones for it.
    pub async fn add(&self, actor: &Actor, request: NewCredential) -> Result<RegistryView> {
        let stored = StoredCredential {
            id: ids::new_id("reg"),
            account_id: actor.account_id.clone(),
            server: request.server.as_str().to_owned(),
            username: request.username,
            password: self.secrets.seal_str(&request.password),
            created_at: clock::now(),
        };
        let view = RegistryView::from(&stored);
        let audit = store::Audit::by(actor, "registry.add", &stored.id);
        self.store
            .write_audited(audit, move |tx| store::registries::upsert(tx, &stored))
            .await?;
        Ok(view)
    }

    pub async fn list(&self, actor: &Actor) -> Result<Vec<RegistryView>> {
        let account_id = actor.account_id.clone();
        let stored = self
            .store
            .call(move |c| store::registries::list(c, &account_id))
            .await?;
        Ok(stored.iter().map(RegistryView::from).collect())
    }

    /// Removes credentials; another account's id is not found.
    pub async fn remove(&self, actor: &Actor, id: String) -> Result<RegistryView> {
        let account_id = actor.account_id.clone();
        let audit = store::Audit::by(actor, "registry.remove", &id);
        self.store
            .write_audited(audit, move |tx| {
                let found = store::registries::by_id(tx, &account_id, &id)?
                    .ok_or_else(|| Error::NotFound(format!("registry `{id}` not found")))?;
                store::registries::delete(tx, &account_id, &id)?;
                Ok(RegistryView::from(&found))
            })
            .await
    }

    /// The account's credentials for `server`, opened for a pull, or `None`.
    pub async fn auth_for(
        &self,
        account_id: &str,
        server: &RegistryServer,
    ) -> Result<Option<RegistryCredential>> {
        let (account_id, key) = (account_id.to_owned(), server.as_str().to_owned());
        let Some(stored) = self
            .store
            .call(move |c| store::registries::for_server(c, &account_id, &key))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(RegistryCredential {
            server: stored.server,
            username: stored.username,
            password: self.secrets.open_string(&stored.password)?,
        }))
    }
}

impl Registries {
    /// Every credential of the account, opened, for a build: its base images may come
    /// from any of the account's registries (the builder asks only for the ones it needs).
    pub async fn all_for(&self, account_id: &str) -> Result<Vec<RegistryCredential>> {
        let account_id = account_id.to_owned();
        let stored = self
            .store
            .call(move |c| store::registries::list(c, &account_id))
            .await?;
        stored
            .into_iter()
            .map(|stored| {
                Ok(RegistryCredential {
                    server: stored.server,
                    username: stored.username,
                    password: self.secrets.open_string(&stored.password)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked_and_never_printed() {
        let ok = NewCredential::parse("https://ghcr.io", "me", "s3cret-token".to_owned()).unwrap();
        assert_eq!(ok.server.as_str(), "ghcr.io");
        assert!(!format!("{ok:?}").contains("s3cret"));
        for (server, user, password, field) in [
            ("ghcr.io/x", "me", "pw", "server"),
            ("ghcr.io", "", "pw", "username"),
            ("ghcr.io", "a:b", "pw", "username"),
            ("ghcr.io", "me", "", "password"),
            ("ghcr.io", "me", "a\nb", "password"),
        ] {
            let err = NewCredential::parse(server, user, password.to_owned())
                .expect_err(server)
                .to_string();
            assert!(err.starts_with(field), "{err}");
        }
    }
}
