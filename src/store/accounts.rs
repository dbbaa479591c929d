//! SQL for accounts and API tokens.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::{Error, Result},
    model::account::{Account, TokenRecord},
    names::{Handle, Scope},
};

use super::{is_unique_violation, Db, Tx};

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn to_account((id, handle, created_at): (String, String, String)) -> Result<Account> {
    Ok(Account {
        id,
        handle: Handle::parse(&handle)
            .map_err(|_| Error::Internal(format!("stored handle `{handle}` is invalid")))?,
        created_at,
    })
}

pub fn count_accounts(db: &Db) -> Result<i64> {
    Ok(db.query_row("SELECT COUNT(*) FROM accounts", [], |row| row.get(0))?)
}

pub fn insert_account(db: &Db, account: &Account) -> Result<()> {
    db.execute(
        "INSERT INTO accounts (id, handle, created_at) VALUES (?1, ?2, ?3)",
        params![account.id, account.handle.as_str(), account.created_at],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            Error::Conflict(format!("handle `{}` is taken", account.handle))
        } else {
            err.into()
        }
    })?;
    Ok(())
}

pub fn account_by_handle(db: &Db, handle: &str) -> Result<Option<Account>> {
    db.query_row(
        "SELECT id, handle, created_at FROM accounts WHERE handle = ?1",
        [handle],
        account_from_row,
    )
    .optional()?
    .map(to_account)
    .transpose()
}

const TOKEN_COLUMNS: &str =
    "id, account_id, name, scope, prefix, created_at, last_used_at, revoked_at";

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scope: String = row.get(3)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        account_id: row.get(1)?,
        name: row.get(2)?,
        // The CHECK constraint admits only the three scope names.
        scope: Scope::parse(&scope).unwrap_or(Scope::Read),
        prefix: row.get(4)?,
        created_at: row.get(5)?,
        last_used_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

pub fn insert_token(db: &Db, token: &TokenRecord, secret_hash: &[u8]) -> Result<()> {
    db.execute(
        "INSERT INTO tokens (id, account_id, name, scope, prefix, secret_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            token.id,
            token.account_id,
            token.name,
            token.scope.as_str(),
            token.prefix,
            secret_hash,
            token.created_at
        ],
    )?;
    Ok(())
}

/// The token with this secret hash, with its account's handle.
pub fn token_by_hash(db: &Db, secret_hash: &[u8]) -> Result<Option<(TokenRecord, Handle)>> {
    let found = db
        .query_row(
            &format!(
                "SELECT {TOKEN_COLUMNS}, (SELECT handle FROM accounts WHERE accounts.id = tokens.account_id)
                 FROM tokens WHERE secret_hash = ?1"
            ),
            [secret_hash],
            |row| Ok((token_from_row(row)?, row.get::<_, String>(8)?)),
        )
        .optional()?;
    found
        .map(|(token, handle)| {
            let handle = Handle::parse(&handle)
                .map_err(|_| Error::Internal(format!("stored handle `{handle}` is invalid")))?;
            Ok((token, handle))
        })
        .transpose()
}

pub fn touch_token(db: &Db, id: &str, at: &str) -> Result<()> {
    db.execute(
        "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
        params![id, at],
    )?;
    Ok(())
}

pub fn tokens_of_account(db: &Db, account_id: &str) -> Result<Vec<TokenRecord>> {
    let mut statement = db.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE account_id = ?1 ORDER BY created_at, id"
    ))?;
    let tokens = statement
        .query_map([account_id], token_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(tokens)
}

pub fn token_of_account(db: &Db, account_id: &str, token_id: &str) -> Result<Option<TokenRecord>> {
    Ok(db
        .query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE account_id = ?1 AND id = ?2"),
            [account_id, token_id],
            token_from_row,
        )
        .optional()?)
}

/// Revokes one of an account's tokens and returns it as it now stands; another account's
/// token is not found. Revoking twice keeps the first revocation time.
pub fn revoke_token_of_account(
    tx: &Tx<'_>,
    account_id: &str,
    token_id: &str,
    at: &str,
) -> Result<TokenRecord> {
    if token_of_account(tx, account_id, token_id)?.is_none() {
        return Err(Error::NotFound(format!("token `{token_id}` not found")));
    }
    revoke_token(tx, token_id, at)?;
    token_of_account(tx, account_id, token_id)?
        .ok_or_else(|| Error::Internal("revoked token vanished".to_owned()))
}

/// How many tokens keep `text` as their hash or their prefix; a test's proof that no
/// secret is stored.
#[cfg(test)]
pub fn tokens_storing(db: &Db, text: &str) -> Result<i64> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM tokens WHERE CAST(secret_hash AS TEXT) = ?1 OR prefix = ?1",
        [text],
        |r| r.get(0),
    )?)
}

fn revoke_token(db: &Db, token_id: &str, at: &str) -> Result<()> {
    db.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![token_id, at],
    )?;
    Ok(())
}
