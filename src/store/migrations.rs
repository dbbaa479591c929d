//! Schema migrations: an ordered list, each applied in its own transaction together with
//! the `user_version` bump, so a crash leaves the database at one version or the next.

use std::path::Path;

use rusqlite::Connection;

use super::OpenError;

/// Step `i` moves the schema from version `i` to `i + 1`. Append only; never edit a step
/// that has shipped.
const STEPS: &[&str] = &[
    // 1: accounts, tokens, projects, audit log.
    "CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        handle      TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name          TEXT,
        scope         TEXT NOT NULL CHECK (scope IN ('read', 'deploy', 'admin')),
        prefix        TEXT NOT NULL,
        secret_hash   BLOB NOT NULL UNIQUE,
        created_at    TEXT NOT NULL,
        last_used_at  TEXT,
        revoked_at    TEXT
    );
    CREATE INDEX tokens_by_account ON tokens(account_id);
    CREATE TABLE projects (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        runtime     TEXT,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE audit_log (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id   TEXT NOT NULL,
        actor        TEXT NOT NULL,
        action       TEXT NOT NULL,
        target       TEXT,
        client_addr  TEXT,
        at           TEXT NOT NULL
    );
    CREATE INDEX audit_by_account ON audit_log(account_id, seq);",
];

/// The schema version this binary writes.
pub const LATEST: i64 = STEPS.len() as i64;

pub(super) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite_error)?;
    if found > LATEST {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            known: LATEST,
        });
    }
    for (index, step) in STEPS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = connection.transaction().map_err(sqlite_error)?;
        tx.execute_batch(step).map_err(sqlite_error)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sqlite_error)?;
        tx.commit().map_err(sqlite_error)?;
        tracing::info!(version, "migrated database schema");
    }
    Ok(())
}
