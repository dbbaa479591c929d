//! SQL for projects' image sources: the connected reference, the SHA-256 of its registry
//! webhook secret, and the last delivery.

use rusqlite::{params, OptionalExtension};

use crate::error::Result;

use super::Db;

/// A project's image source as stored.
#[derive(Debug, Clone)]
pub struct StoredImageSource {
    pub project_id: String,
    pub reference: String,
    pub webhook_secret_sha256: Vec<u8>,
    pub created_at: String,
    pub updated_at: String,
    pub last_delivery_at: Option<String>,
    pub last_delivery_result: Option<String>,
}

pub fn get(db: &Db, project_id: &str) -> Result<Option<StoredImageSource>> {
    Ok(db
        .query_row(
            "SELECT project_id, reference, webhook_secret_sha256, created_at, updated_at,
                    last_delivery_at, last_delivery_result
             FROM project_images WHERE project_id = ?1",
            [project_id],
            |row| {
                Ok(StoredImageSource {
                    project_id: row.get(0)?,
                    reference: row.get(1)?,
                    webhook_secret_sha256: row.get(2)?,
                    created_at: row.get(3)?,
                    updated_at: row.get(4)?,
                    last_delivery_at: row.get(5)?,
                    last_delivery_result: row.get(6)?,
                })
            },
        )
        .optional()?)
}

pub fn upsert(db: &Db, stored: &StoredImageSource) -> Result<()> {
    db.execute(
        "INSERT INTO project_images (project_id, reference, webhook_secret_sha256, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (project_id) DO UPDATE SET reference = excluded.reference,
             webhook_secret_sha256 = excluded.webhook_secret_sha256,
             updated_at = excluded.updated_at",
        params![
            stored.project_id,
            stored.reference,
            stored.webhook_secret_sha256,
            stored.created_at,
            stored.updated_at
        ],
    )?;
    Ok(())
}

pub fn delete(db: &Db, project_id: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM project_images WHERE project_id = ?1",
        [project_id],
    )? > 0)
}

/// Records a registry delivery and what came of it (`queued ...`, `ignored: ...`).
pub fn record_delivery(db: &Db, project_id: &str, at: &str, result: &str) -> Result<()> {
    db.execute(
        "UPDATE project_images SET last_delivery_at = ?2, last_delivery_result = ?3 WHERE project_id = ?1",
        params![project_id, at, result],
    )?;
    Ok(())
}
