//! Accounts and API tokens: creation, authentication, listing, revocation, and the
//! first-start bootstrap. Invariant: a token's secret exists only in the caller's hands;
//! the store keeps its SHA-256 and a short non-secret prefix.

use std::{
    collections::HashMap,
    io::Write,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

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

/// Why a presented secret is refused before any lookup: it cannot be a Cantila token.
fn check_shape(secret: &str) -> Result<()> {
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
        return Err(Error::Unauthenticated(format!(
            "the bearer token is not a Cantila token (they start with `{TOKEN_PREFIX}`)"
        )));
    }
    Ok(())
}

/// The token behind `hash` as an actor with the `last_used_at` the store holds; unknown
/// and revoked tokens fail with 401, the message saying which, without echoing the secret.
fn lookup(connection: &store::Db, hash: &[u8]) -> Result<(Actor, Option<String>)> {
    let (token, handle) = store::accounts::token_by_hash(connection, hash)?
        .ok_or_else(|| Error::Unauthenticated("the bearer token is not valid".to_owned()))?;
    if token.revoked_at.is_some() {
        return Err(Error::Unauthenticated(
            "the bearer token has been revoked".to_owned(),
        ));
    }
    let actor = Actor {
        account_id: token.account_id,
        handle,
        token_id: Some(token.id),
        scope: token.scope,
        client_addr: None,
        via_webhook: false,
        background: None,
    };
    Ok((actor, token.last_used_at))
}

/// A cached token is read from the store again after this long, so a revocation made by
/// another process (`cantila admin token revoke` beside a running daemon) takes effect
/// within it; one made through this daemon's API takes effect at once.
const REVALIDATE_AFTER: Duration = Duration::from_secs(5);
/// Past this many cached tokens the cache starts afresh, so memory stays bounded.
const MAX_CACHED_TOKENS: usize = 4096;

/// The API's token check: a cheap-clone handle over the store and an in-memory cache from
/// a secret's SHA-256 to its token's actor, so a request with a known token pays neither a
/// store call nor a write. Invariant: an entry is dropped when its token is revoked
/// through this handle (before the revocation's answer is sent), and no lookup that began
/// before a revocation can put its answer back afterwards (`generation`).
#[derive(Clone, Default)]
pub struct Tokens {
    cache: Arc<Mutex<TokenCache>>,
}

#[derive(Default)]
struct TokenCache {
    by_hash: HashMap<[u8; 32], CachedToken>,
    /// Bumped by every invalidation; a lookup stores its answer only if none happened
    /// since it began.
    generation: u64,
}

struct CachedToken {
    actor: Actor,
    /// When the store last confirmed the token.
    checked: Instant,
    /// The `last_used_at` the store holds or this daemon scheduled to write (fixed-width
    /// RFC 3339, so text order is time order): it is written at most once a minute, and
    /// listings show it before the write lands.
    last_used_at: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves a presented bearer secret to its actor: from the cache when the store
    /// confirmed the token less than `REVALIDATE_AFTER` ago, otherwise from the store.
    /// `last_used_at` is written at most once a minute per token, by a task of its own,
    /// never by the request. Unknown, malformed and revoked tokens fail with 401.
    pub async fn authenticate(
        &self,
        store: &Store,
        secret: &str,
        client_addr: Option<IpAddr>,
    ) -> Result<Actor> {
        check_shape(secret)?;
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let now = OffsetDateTime::now_utc();
        let cached = {
            let mut cache = self.cache();
            match cache.by_hash.get_mut(&hash) {
                Some(entry) if entry.checked.elapsed() < REVALIDATE_AFTER => {
                    let touch = take_touch(entry, now);
                    Some((entry.actor.clone(), touch))
                }
                _ => None,
            }
        };
        let (mut actor, touch) = match cached {
            Some(found) => found,
            None => self.load(store, hash, now).await?,
        };
        if let Some((token_id, at)) = touch {
            // The write runs beside the request; a failure only delays the record.
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(err) = store
                    .call(move |connection| {
                        store::accounts::touch_token(connection, &token_id, &at)
                    })
                    .await
                {
                    tracing::warn!(error = %err, "recording a token's last use");
                }
            });
        }
        actor.client_addr = client_addr;
        Ok(actor)
    }

    /// Reads the token from the store and caches it, unless a revocation happened while
    /// it was being read.
    async fn load(
        &self,
        store: &Store,
        hash: [u8; 32],
        now: OffsetDateTime,
    ) -> Result<(Actor, Option<(String, String)>)> {
        let generation = self.cache().generation;
        let (actor, stored_last_use) = store
            .call(move |connection| lookup(connection, &hash))
            .await?;
        let mut cache = self.cache();
        let known_last_use = cache
            .by_hash
            .get(&hash)
            .and_then(|entry| entry.last_used_at.clone())
            .max(stored_last_use);
        let mut entry = CachedToken {
            actor: actor.clone(),
            checked: Instant::now(),
            last_used_at: known_last_use,
        };
        let touch = take_touch(&mut entry, now);
        if cache.generation == generation {
            if cache.by_hash.len() >= MAX_CACHED_TOKENS {
                cache.by_hash.clear();
            }
            cache.by_hash.insert(hash, entry);
        }
        Ok((actor, touch))
    }

    /// Revokes one of the actor's account's tokens (see `revoke_token`) and forgets it,
    /// so the next request with it is refused.
    pub async fn revoke(
        &self,
        store: &Store,
        actor: &Actor,
        token_id: String,
    ) -> Result<TokenRecord> {
        let revoked = revoke_token(store, actor, token_id).await?;
        self.forget(|cached| cached.token_id.as_deref() == Some(revoked.id.as_str()));
        Ok(revoked)
    }

    /// Forgets every cached token of an account; for changes to the account itself.
    pub fn forget_account(&self, account_id: &str) {
        self.forget(|cached| cached.account_id == account_id);
    }

    fn forget(&self, matches: impl Fn(&Actor) -> bool) {
        let mut cache = self.cache();
        cache.generation += 1;
        cache.by_hash.retain(|_, entry| !matches(&entry.actor));
    }

    /// The account's tokens, revoked ones included, with the last use this daemon
    /// recorded even when its write has not landed yet.
    pub async fn list(&self, store: &Store, actor: &Actor) -> Result<Vec<TokenRecord>> {
        let mut tokens = list_tokens(store, actor).await?;
        let cache = self.cache();
        for entry in cache.by_hash.values() {
            let Some(recorded) = &entry.last_used_at else {
                continue;
            };
            if let Some(token) = tokens
                .iter_mut()
                .find(|token| entry.actor.token_id.as_deref() == Some(token.id.as_str()))
            {
                if token
                    .last_used_at
                    .as_deref()
                    .is_none_or(|stored| stored < recorded.as_str())
                {
                    token.last_used_at = Some(recorded.clone());
                }
            }
        }
        Ok(tokens)
    }
}

/// The `last_used_at` write a use at `now` calls for, if the last one is a minute old;
/// marks it as done so concurrent requests do not repeat it.
fn take_touch(entry: &mut CachedToken, now: OffsetDateTime) -> Option<(String, String)> {
    let stale = clock::format(now - TOUCH_INTERVAL);
    if entry
        .last_used_at
        .as_deref()
        .is_some_and(|last| last >= stale.as_str())
    {
        return None;
    }
    let at = clock::format(now);
    entry.last_used_at = Some(at.clone());
    entry.actor.token_id.clone().map(|id| (id, at))
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

        let tokens = Tokens::default();
        let actor = tokens
            .authenticate(&store, &token.secret, None)
            .await
            .unwrap();
        assert_eq!(actor.scope, Scope::Deploy);
        assert_eq!(actor.handle.as_str(), "ada");
        // Cached now; the revocation through the handle still refuses it at once.
        tokens
            .authenticate(&store, &token.secret, None)
            .await
            .unwrap();
        tokens
            .revoke(&store, &operator, token.record.id.clone())
            .await
            .unwrap();
        let err = tokens
            .authenticate(&store, &token.secret, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
    }

    #[tokio::test]
    async fn a_revocation_forgets_only_the_revoked_token_and_bad_secrets_fail() {
        let (_dir, store) = store();
        let account = create_account(&store, Handle::parse("ada").unwrap()).unwrap();
        let operator = Actor::operator(&account);
        let kept = create_token_blocking(&store, &operator, Scope::Read, None).unwrap();
        let revoked = create_token_blocking(&store, &operator, Scope::Read, None).unwrap();
        let tokens = Tokens::default();
        for token in [&kept, &revoked] {
            tokens
                .authenticate(&store, &token.secret, None)
                .await
                .unwrap();
        }
        tokens
            .revoke(&store, &operator, revoked.record.id.clone())
            .await
            .unwrap();
        assert!(tokens
            .authenticate(&store, &revoked.secret, None)
            .await
            .is_err());
        let actor = tokens
            .authenticate(&store, &kept.secret, "10.0.0.7".parse().ok())
            .await
            .unwrap();
        assert_eq!(actor.token_id.as_deref(), Some(kept.record.id.as_str()));
        assert_eq!(actor.client_addr, "10.0.0.7".parse().ok());
        for secret in ["nope", "sk_live_unknown"] {
            let err = tokens.authenticate(&store, secret, None).await.unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn a_use_is_listed_at_once_and_written_at_most_once_a_minute() {
        let (_dir, store) = store();
        let account = create_account(&store, Handle::parse("ada").unwrap()).unwrap();
        let operator = Actor::operator(&account);
        let token = create_token_blocking(&store, &operator, Scope::Read, None).unwrap();
        let tokens = Tokens::default();
        let mut entry = CachedToken {
            actor: operator.clone(),
            checked: Instant::now(),
            last_used_at: None,
        };
        entry.actor.token_id = Some(token.record.id.clone());
        let now = OffsetDateTime::now_utc();
        assert!(take_touch(&mut entry, now).is_some(), "never used: written");
        assert!(take_touch(&mut entry, now + time::Duration::seconds(59)).is_none());
        assert!(take_touch(&mut entry, now + time::Duration::seconds(61)).is_some());

        tokens
            .authenticate(&store, &token.secret, None)
            .await
            .unwrap();
        let listed = tokens.list(&store, &operator).await.unwrap();
        assert!(listed[0].last_used_at.is_some(), "{listed:?}");
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
