//! The audit log: one entry per mutation (who, what, target, when, from where), written in
//! the same transaction as the mutation so the log and the state never disagree.

use crate::{
    clock,
    error::Result,
    model::account::Actor,
    pagination::{Page, PageRequest},
    store::{self, Store},
};

pub use crate::model::audit::AuditEntry;

/// Appends an entry inside the caller's transaction.
pub fn record(
    connection: &store::Db,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
) -> Result<()> {
    store::audit::insert(
        connection,
        &AuditEntry {
            account_id: actor.account_id.clone(),
            actor: actor.label(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            client_addr: actor.client_addr.map(|addr| addr.to_string()),
            at: clock::now(),
        },
    )
}

/// The actor's account's entries, newest first. Here the cursor counts down.
pub async fn list(store: &Store, actor: &Actor, page: PageRequest) -> Result<Page<AuditEntry>> {
    let account_id = actor.account_id.clone();
    let rows = store
        .call(move |connection| {
            store::audit::page(connection, &account_id, page.after, page.limit + 1)
        })
        .await?;
    Ok(page.finish(rows))
}

/// Appends an entry made by the daemon itself (the backup scheduler), inside the caller's
/// transaction.
pub fn record_system(
    connection: &store::Db,
    account_id: &str,
    actor: &str,
    action: &str,
    target: Option<&str>,
) -> Result<()> {
    store::audit::insert(
        connection,
        &AuditEntry {
            account_id: account_id.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            client_addr: None,
            at: clock::now(),
        },
    )
}
