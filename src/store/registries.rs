//! SQL for accounts' registry credentials (the password or token sealed by the caller).
//! Every query is scoped by account id.

use rusqlite::{params, OptionalExtension, Row};

use crate::error::Result;

use super::Db;

/// One account's credentials for one registry server, as stored.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub id: String,
    pub account_id: String,
    pub server: String,
    pub username: String,
    /// Sealed with the data directory's key.
    pub password: Vec<u8>,
    pub created_at: String,
}

const COLUMNS: &str = "id, account_id, server, username, password, created_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<StoredCredential> {
    Ok(StoredCredential {
        id: row.get(0)?,
        account_id: row.get(1)?,
        server: row.get(2)?,
        username: row.get(3)?,
        password: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Stores the credentials, replacing the account's earlier ones for the same server.
pub fn upsert(db: &Db, credential: &StoredCredential) -> Result<()> {
    db.execute(
        "DELETE FROM registry_credentials WHERE account_id = ?1 AND server = ?2",
        params![credential.account_id, credential.server],
    )?;
    db.execute(
        &format!("INSERT INTO registry_credentials ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            credential.id,
            credential.account_id,
            credential.server,
            credential.username,
            credential.password,
            credential.created_at
        ],
    )?;
    Ok(())
}

pub fn list(db: &Db, account_id: &str) -> Result<Vec<StoredCredential>> {
    let mut statement = db.prepare(&format!(
        "SELECT {COLUMNS} FROM registry_credentials WHERE account_id = ?1 ORDER BY server"
    ))?;
    let rows = statement.query_map([account_id], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn by_id(db: &Db, account_id: &str, id: &str) -> Result<Option<StoredCredential>> {
    Ok(db
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM registry_credentials WHERE account_id = ?1 AND id = ?2"
            ),
            params![account_id, id],
            from_row,
        )
        .optional()?)
}

pub fn for_server(db: &Db, account_id: &str, server: &str) -> Result<Option<StoredCredential>> {
    Ok(db
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM registry_credentials WHERE account_id = ?1 AND server = ?2"
            ),
            params![account_id, server],
            from_row,
        )
        .optional()?)
}

pub fn delete(db: &Db, account_id: &str, id: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM registry_credentials WHERE account_id = ?1 AND id = ?2",
        params![account_id, id],
    )? > 0)
}
