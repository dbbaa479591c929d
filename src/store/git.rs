//! SQL for git connections and webhook deliveries.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

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

pub fn get(connection: &Connection, project_id: &str) -> Result<Option<StoredConnection>> {
    Ok(connection
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

pub fn upsert(connection: &Connection, stored: &StoredConnection) -> Result<()> {
    connection.execute(
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

pub fn set_secret(
    connection: &Connection,
    project_id: &str,
    sealed: &[u8],
    at: &str,
) -> Result<bool> {
    Ok(connection.execute(
        "UPDATE git_connections SET webhook_secret = ?2, updated_at = ?3 WHERE project_id = ?1",
        params![project_id, sealed, at],
    )? > 0)
}

pub fn record_delivery(
    connection: &Connection,
    project_id: &str,
    at: &str,
    event: &str,
    result: &str,
) -> Result<()> {
    connection.execute(
        "UPDATE git_connections SET last_delivery_at = ?2, last_delivery_event = ?3, last_delivery_result = ?4
         WHERE project_id = ?1",
        params![project_id, at, event, result],
    )?;
    Ok(())
}

/// Records a delivery id; false when it was seen before (a redelivery).
pub fn first_delivery(
    connection: &Connection,
    project_id: &str,
    delivery_id: &str,
    at: &str,
) -> Result<bool> {
    Ok(connection.execute(
        "INSERT OR IGNORE INTO webhook_deliveries (project_id, delivery_id, received_at) VALUES (?1, ?2, ?3)",
        params![project_id, delivery_id, at],
    )? > 0)
}
