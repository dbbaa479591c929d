//! SQL for the audit log: append and page, never update or delete. Entries are appended
//! only by `Store::write_audited`, in the transaction of the change they record.

use rusqlite::params;

use super::Db;
use crate::{
    clock,
    error::Result,
    model::{account::Actor, audit::AuditEntry},
};

/// An entry to append with a change: who did what to which target. It is stamped with
/// the time when it is written.
#[derive(Debug, Clone)]
pub struct Audit {
    account_id: String,
    actor: String,
    client_addr: Option<String>,
    action: String,
    target: String,
}

impl Audit {
    /// An entry of `actor` (a token, the operator, a webhook or a background task acting
    /// for the account), in its account's log.
    pub fn by(actor: &Actor, action: &str, target: impl Into<String>) -> Self {
        Self {
            account_id: actor.account_id.clone(),
            actor: actor.label(),
            client_addr: actor.client_addr.map(|addr| addr.to_string()),
            action: action.to_owned(),
            target: target.into(),
        }
    }

    /// An entry made by the daemon itself (`actor` names the task: the backup scheduler,
    /// the uploader), in `account_id`'s log.
    pub fn by_daemon(
        account_id: &str,
        actor: &str,
        action: &str,
        target: impl Into<String>,
    ) -> Self {
        Self {
            account_id: account_id.to_owned(),
            actor: actor.to_owned(),
            client_addr: None,
            action: action.to_owned(),
            target: target.into(),
        }
    }

    fn stamped(self, at: String) -> AuditEntry {
        AuditEntry {
            account_id: self.account_id,
            actor: self.actor,
            action: self.action,
            target: Some(self.target),
            client_addr: self.client_addr,
            at,
        }
    }
}

/// The entries a change appends: known before it runs (one, maybe one, several), or read
/// from its outcome (a closure of it, for an entry whose action or target the change
/// decides).
pub trait AuditOf<T> {
    fn entries(self, outcome: &T) -> Vec<Audit>;
}

impl<T> AuditOf<T> for Audit {
    fn entries(self, _outcome: &T) -> Vec<Audit> {
        vec![self]
    }
}

impl<T> AuditOf<T> for Option<Audit> {
    fn entries(self, _outcome: &T) -> Vec<Audit> {
        self.into_iter().collect()
    }
}

impl<T> AuditOf<T> for Vec<Audit> {
    fn entries(self, _outcome: &T) -> Vec<Audit> {
        self
    }
}

impl<T, F> AuditOf<T> for F
where
    F: FnOnce(&T) -> Vec<Audit>,
{
    fn entries(self, outcome: &T) -> Vec<Audit> {
        self(outcome)
    }
}

/// Appends `audits` in order, inside the caller's transaction.
pub(super) fn append(db: &Db, audits: Vec<Audit>) -> Result<()> {
    for audit in audits {
        insert(db, &audit.stamped(clock::now()))?;
    }
    Ok(())
}

fn insert(db: &Db, entry: &AuditEntry) -> Result<()> {
    db.execute(
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
    db: &Db,
    account_id: &str,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, AuditEntry)>> {
    let mut statement = db.prepare(
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
