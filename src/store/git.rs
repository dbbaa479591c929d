//! SQL for git connections and webhook deliveries.

use rusqlite::{params, OptionalExtension};

use crate::error::Result;

use super::{Db, Tx};

/// A project's git connection as stored; secrets sealed.
#[derive(Debug, Clone)]
pub struct StoredConnection {
    pub project_id: String,
    pub repo: String,
    pub branch: String,
    pub webhook_secret: Vec<u8>,
    pub access_token: Option<Vec<u8>>,
    pub created_at: String,
    pub updated_at: String,
    pub last_delivery_at: Option<String>,
    pub last_delivery_event: Option<String>,
    pub last_delivery_result: Option<String>,
}

pub fn get(db: &Db, project_id: &str) -> Result<Option<StoredConnection>> {
    Ok(db
        .query_row(
            "SELECT project_id, repo, branch, webhook_secret, access_token, created_at, updated_at,
                    last_delivery_at, last_delivery_event, last_delivery_result
             FROM git_connections WHERE project_id = ?1",
            [project_id],
            |row| {
                Ok(StoredConnection {
                    project_id: row.get(0)?,
                    repo: row.get(1)?,
                    branch: row.get(2)?,
                    webhook_secret: row.get(3)?,
                    access_token: row.get(4)?,
                    created_at: row.get(5)?,
                    updated_at: row.get(6)?,
                    last_delivery_at: row.get(7)?,
                    last_delivery_event: row.get(8)?,
                    last_delivery_result: row.get(9)?,
                })
            },
        )
        .optional()?)
}

pub fn upsert(db: &Db, stored: &StoredConnection) -> Result<()> {
    db.execute(
        "INSERT INTO git_connections (project_id, repo, branch, webhook_secret, access_token, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (project_id) DO UPDATE SET repo = excluded.repo, branch = excluded.branch,
             webhook_secret = excluded.webhook_secret, access_token = excluded.access_token,
             updated_at = excluded.updated_at",
        params![
            stored.project_id,
            stored.repo,
            stored.branch,
            stored.webhook_secret,
            stored.access_token,
            stored.created_at,
            stored.updated_at
        ],
    )?;
    Ok(())
}

pub fn set_secret(db: &Db, project_id: &str, sealed: &[u8], at: &str) -> Result<bool> {
    Ok(db.execute(
        "UPDATE git_connections SET webhook_secret = ?2, updated_at = ?3 WHERE project_id = ?1",
        params![project_id, sealed, at],
    )? > 0)
}

pub fn record_delivery(
    db: &Db,
    project_id: &str,
    at: &str,
    event: &str,
    result: &str,
) -> Result<()> {
    db.execute(
        "UPDATE git_connections SET last_delivery_at = ?2, last_delivery_event = ?3, last_delivery_result = ?4
         WHERE project_id = ?1",
        params![project_id, at, event, result],
    )?;
    Ok(())
}

/// Whether a verified delivery was seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Neither its id nor its body: it is now remembered.
    New,
    /// Its delivery id was received at this time (a redelivery).
    DeliveryId(String),
    /// The same body was received at this time (a replay, whatever its id).
    Body(String),
}

/// The delivery's identity, as `remember_delivery` records it.
#[derive(Debug, Clone)]
pub struct DeliveryKey<'a> {
    pub project_id: &'a str,
    pub delivery_id: Option<&'a str>,
    pub body_sha256: &'a [u8],
    /// The ref a push named, so a later push to it can retire this body.
    pub subject: Option<&'a str>,
}

/// Remembers a delivery by id and body digest in one transaction, unless either was seen
/// since `since`; records older than that are forgotten first.
pub fn remember_delivery(
    db: &mut Db,
    key: &DeliveryKey<'_>,
    at: &str,
    since: &str,
) -> Result<Seen> {
    let tx = Tx::begin(db)?;
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE received_at < ?1",
        [since],
    )?;
    tx.execute("DELETE FROM webhook_bodies WHERE received_at < ?1", [since])?;
    if let Some(delivery_id) = key.delivery_id {
        let before: Option<String> = tx
            .query_row(
                "SELECT received_at FROM webhook_deliveries WHERE project_id = ?1 AND delivery_id = ?2",
                params![key.project_id, delivery_id],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(before) = before {
            return Ok(Seen::DeliveryId(before));
        }
    }
    let before: Option<String> = tx
        .query_row(
            "SELECT received_at FROM webhook_bodies WHERE project_id = ?1 AND body_sha256 = ?2",
            params![key.project_id, key.body_sha256],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(before) = before {
        return Ok(Seen::Body(before));
    }
    if let Some(delivery_id) = key.delivery_id {
        tx.execute(
            "INSERT INTO webhook_deliveries (project_id, delivery_id, received_at) VALUES (?1, ?2, ?3)",
            params![key.project_id, delivery_id, at],
        )?;
    }
    tx.execute(
        "INSERT INTO webhook_bodies (project_id, body_sha256, subject, received_at) VALUES (?1, ?2, ?3, ?4)",
        params![key.project_id, key.body_sha256, key.subject, at],
    )?;
    tx.commit()?;
    Ok(Seen::New)
}

/// Forgets a delivery whose handling failed, so the provider's redelivery is handled.
pub fn forget_delivery(db: &Db, key: &DeliveryKey<'_>) -> Result<()> {
    if let Some(delivery_id) = key.delivery_id {
        db.execute(
            "DELETE FROM webhook_deliveries WHERE project_id = ?1 AND delivery_id = ?2",
            params![key.project_id, delivery_id],
        )?;
    }
    db.execute(
        "DELETE FROM webhook_bodies WHERE project_id = ?1 AND body_sha256 = ?2",
        params![key.project_id, key.body_sha256],
    )?;
    Ok(())
}

/// Forgets the bodies of earlier pushes to the key's ref once this one was acted on: they
/// are stale now (the head moved), and forgetting them lets the same push body, sent
/// again later for a real push (GitLab's and Gitea's carry no push time), be handled.
pub fn retire_earlier_bodies(db: &Db, key: &DeliveryKey<'_>) -> Result<()> {
    if let Some(subject) = key.subject {
        db.execute(
            "DELETE FROM webhook_bodies WHERE project_id = ?1 AND subject = ?2 AND body_sha256 != ?3",
            params![key.project_id, subject, key.body_sha256],
        )?;
    }
    Ok(())
}

/// The repositories other accounts' projects are connected to, with the owning account's
/// handle: what a local path is checked against, so one account cannot build another's.
pub fn repos_of_other_accounts(db: &Db, account_id: &str) -> Result<Vec<(String, String)>> {
    let mut statement = db.prepare(
        "SELECT accounts.handle, git_connections.repo
         FROM git_connections
         JOIN projects ON projects.id = git_connections.project_id
         JOIN accounts ON accounts.id = projects.account_id
         WHERE projects.account_id != ?1",
    )?;
    let rows = statement.query_map([account_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Removes the project's git connection (the project switched to an image source).
pub fn delete(db: &Db, project_id: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM git_connections WHERE project_id = ?1",
        [project_id],
    )? > 0)
}
