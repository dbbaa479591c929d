//! Accounts and API tokens: creation, authentication, listing, revocation, and the
//! first-start bootstrap. Invariant: a token's secret exists only in the caller's hands;
//! the store keeps its SHA-256 and a short non-secret prefix.

use std::{io::Write, net::IpAddr, path::Path};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    clock,
    config::Config,
    error::{Error, Result},
    ids,
    names::{Handle, Scope, TokenName},
    store::{self, Store},
};

pub use crate::model::account::{Account, Actor, TokenRecord};

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "sk_live_";
/// Random characters after the prefix: 40 base62 characters, 238 bits.
const TOKEN_RANDOM_LENGTH: usize = 40;
/// Characters of the token kept in clear for listing (`sk_live_` plus four).
const TOKEN_DISPLAY_PREFIX_LENGTH: usize = TOKEN_PREFIX.len() + 4;
/// `last_used_at` is written at most this often per token, so reads do not become writes.
const TOUCH_INTERVAL: time::Duration = time::Duration::seconds(60);

/// A freshly minted token: the only moment its secret is known.
#[derive(Debug)]
pub struct NewToken {
    pub record: TokenRecord,
    pub secret: String,
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn mint(account_id: &str, scope: Scope, name: Option<&TokenName>) -> (NewToken, Vec<u8>) {
    let secret = format!("{TOKEN_PREFIX}{}", ids::random_base62(TOKEN_RANDOM_LENGTH));
    let record = TokenRecord {
        id: ids::new_id("tok"),
        account_id: account_id.to_owned(),
        name: name.map(|n| n.as_str().to_owned()),
        scope,
        prefix: secret[..TOKEN_DISPLAY_PREFIX_LENGTH].to_owned(),
        created_at: clock::now(),
        last_used_at: None,
        revoked_at: None,
    };
    let hash = hash_secret(&secret);
    (NewToken { record, secret }, hash)
}

/// Creates an account; 409 when the handle is taken.
pub fn create_account(store: &Store, handle: Handle) -> Result<Account> {
    let account = Account {
        id: ids::new_id("acc"),
        handle,
        created_at: clock::now(),
    };
    let audit = store::Audit::by(&Actor::operator(&account), "account.create", &account.id);
    store.write_audited_blocking(audit, |tx| store::accounts::insert_account(tx, &account))?;
    Ok(account)
}

/// Finds an account by handle for the operator's CLI; 404 when there is none.
pub fn account_by_handle(store: &Store, handle: &Handle) -> Result<Account> {
    let handle = handle.clone();
    store.call_blocking(|connection| {
        store::accounts::account_by_handle(connection, handle.as_str())?
            .ok_or_else(|| Error::NotFound(format!("no account has the handle `{handle}`")))
    })
}

/// Mints a token for the actor's account (or, for the operator, the account given).
/// A token can never mint a scope above its own.
pub async fn create_token(
    store: &Store,
    actor: &Actor,
    scope: Scope,
    name: Option<TokenName>,
) -> Result<NewToken> {
    if scope > actor.scope {
        return Err(Error::Forbidden(format!(
            "a `{}` token cannot create a `{scope}` token; tokens can only create tokens of their own scope or below",
            actor.scope
        )));
    }
    let (token, hash) = mint(&actor.account_id, scope, name.as_ref());
    let audit = store::Audit::by(actor, "token.create", &token.record.id);
    store
        .write_audited(audit, move |tx| {
            store::accounts::insert_token(tx, &token.record, &hash)?;
            Ok(token)
        })
        .await
}

/// The same as `create_token`, synchronously, for `cantila admin`.
pub fn create_token_blocking(
    store: &Store,
    actor: &Actor,
    scope: Scope,
    name: Option<TokenName>,
) -> Result<NewToken> {
    let (token, hash) = mint(&actor.account_id, scope, name.as_ref());
    let audit = store::Audit::by(actor, "token.create", &token.record.id);
    store.write_audited_blocking(audit, |tx| {
        store::accounts::insert_token(tx, &token.record, &hash)?;
        Ok(token)
    })
}

/// Resolves a presented bearer secret to its actor. Unknown, malformed and revoked tokens
/// all fail with 401; the message says which, without echoing the secret.
pub async fn authenticate(
    store: &Store,
    secret: &str,
    client_addr: Option<IpAddr>,
) -> Result<Actor> {
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
        return Err(Error::Unauthenticated(format!(
            "the bearer token is not a Cantila token (they start with `{TOKEN_PREFIX}`)"
        )));
    }
    let hash = hash_secret(secret);
    store
        .call(move |connection| {
            let (token, handle) =
                store::accounts::token_by_hash(connection, &hash)?.ok_or_else(|| {
                    Error::Unauthenticated("the bearer token is not valid".to_owned())
                })?;
            if token.revoked_at.is_some() {
                return Err(Error::Unauthenticated(
                    "the bearer token has been revoked".to_owned(),
                ));
            }
            let now = OffsetDateTime::now_utc();
            let stale = clock::format(now - TOUCH_INTERVAL);
            if token
                .last_used_at
                .as_deref()
                .is_none_or(|last| last < stale.as_str())
            {
                store::accounts::touch_token(connection, &token.id, &clock::format(now))?;
            }
            Ok(Actor {
                account_id: token.account_id,
                handle,
                token_id: Some(token.id),
                scope: token.scope,
                client_addr,
                via_webhook: false,
                background: None,
            })
        })
        .await
}

pub async fn list_tokens(store: &Store, actor: &Actor) -> Result<Vec<TokenRecord>> {
    let account_id = actor.account_id.clone();
    store
        .call(move |connection| store::accounts::tokens_of_account(connection, &account_id))
        .await
}

/// Lists tokens for `cantila admin token list`.
pub fn list_tokens_blocking(store: &Store, account: &Account) -> Result<Vec<TokenRecord>> {
    store.call_blocking(|connection| store::accounts::tokens_of_account(connection, &account.id))
}

/// Revokes one of the actor's account's tokens; another account's token answers 404.
/// Revoking twice is harmless and keeps the first revocation time.
pub async fn revoke_token(store: &Store, actor: &Actor, token_id: String) -> Result<TokenRecord> {
    let audit = store::Audit::by(actor, "token.revoke", &token_id);
    let account_id = actor.account_id.clone();
    store
        .write_audited(audit, move |tx| {
            store::accounts::revoke_token_of_account(tx, &account_id, &token_id, &clock::now())
        })
        .await
}

pub fn revoke_token_blocking(store: &Store, actor: &Actor, token_id: &str) -> Result<TokenRecord> {
    let audit = store::Audit::by(actor, "token.revoke", token_id);
    store.write_audited_blocking(audit, |tx| {
        store::accounts::revoke_token_of_account(tx, &actor.account_id, token_id, &clock::now())
    })
}

/// On an empty store, creates the default account and writes one admin token to
/// `<data_dir>/admin-token` (mode 0600). Returns the path written, if any. The token
/// itself is never logged.
pub fn bootstrap(store: &Store, config: &Config) -> anyhow::Result<Option<std::path::PathBuf>> {
    let empty = store.call_blocking(|connection| store::accounts::count_accounts(connection))? == 0;
    if !empty {
        return Ok(None);
    }
    let handle = Handle::parse(&config.default_handle)?;
    let account = create_account(store, handle)?;
    let name = TokenName::parse("bootstrap")?;
    let token = create_token_blocking(store, &Actor::operator(&account), Scope::Admin, Some(name))?;
    let path = config.admin_token_path();
    write_secret_file(&path, &token.secret)?;
    Ok(Some(path))
}

/// Writes `secret` to `path`, readable by the owner only from the moment it exists.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // An existing file keeps its old mode on open; force it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(secret.as_bytes())?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn tokens_authenticate_until_revoked() {
        let (_dir, store) = store();
        let account = create_account(&store, Handle::parse("ada").unwrap()).unwrap();
        let operator = Actor::operator(&account);
        let token = create_token_blocking(&store, &operator, Scope::Deploy, None).unwrap();
        assert!(token.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(token.secret.len(), TOKEN_PREFIX.len() + TOKEN_RANDOM_LENGTH);
        assert!(token.secret.starts_with(&token.record.prefix));

        let actor = authenticate(&store, &token.secret, None).await.unwrap();
        assert_eq!(actor.scope, Scope::Deploy);
        assert_eq!(actor.handle.as_str(), "ada");

        revoke_token(&store, &operator, token.record.id.clone())
            .await
            .unwrap();
        let err = authenticate(&store, &token.secret, None).await.unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
    }

    #[tokio::test]
    async fn the_secret_is_not_stored() {
        let (_dir, store) = store();
        let account = create_account(&store, Handle::parse("ada").unwrap()).unwrap();
        let token =
            create_token_blocking(&store, &Actor::operator(&account), Scope::Read, None).unwrap();
        let secret = token.secret.clone();
        let found: i64 = store
            .call_blocking(move |c| store::accounts::tokens_storing(c, &secret))
            .unwrap();
        assert_eq!(found, 0);
    }

    #[tokio::test]
    async fn a_token_cannot_mint_above_its_scope() {
        let (_dir, store) = store();
        let account = create_account(&store, Handle::parse("ada").unwrap()).unwrap();
        let mut actor = Actor::operator(&account);
        actor.scope = Scope::Deploy;
        assert!(matches!(
            create_token(&store, &actor, Scope::Admin, None).await,
            Err(Error::Forbidden(_))
        ));
        assert!(create_token(&store, &actor, Scope::Read, None)
            .await
            .is_ok());
    }
}
