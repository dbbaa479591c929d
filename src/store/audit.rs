//! SQL for the audit log: append and page, never update or delete.

use rusqlite::{params, Connection};

use crate::{error::Result, model::audit::AuditEntry};

pub fn insert(connection: &Connection, entry: &AuditEntry) -> Result<()> {
    connection.execute(
        "INSERT INTO audit_log (account_id, actor, action, target, client_addr, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            entry.account_id,
            entry.actor,
            entry.action,
            entry.target,
            entry.client_addr,
            entry.at
        ],
    )?;
    Ok(())
}

/// Entries of one account, newest first, strictly older than `before_seq` when given;
/// returns up to `limit` entries with their sequence numbers.
pub fn page(
    connection: &Connection,
    account_id: &str,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, AuditEntry)>> {
    let mut statement = connection.prepare(
        "SELECT seq, account_id, actor, action, target, client_addr, at FROM audit_log
         WHERE account_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = statement
        .query_map(
            params![account_id, before_seq.unwrap_or(i64::MAX), limit],
            |row| {
                Ok((
                    row.get(0)?,
                    AuditEntry {
                        account_id: row.get(1)?,
                        actor: row.get(2)?,
                        action: row.get(3)?,
                        target: row.get(4)?,
                        client_addr: row.get(5)?,
                        at: row.get(6)?,
                    },
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
