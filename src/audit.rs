//! The audit log: one entry per mutation (who, what, target, when, from where). Entries
//! are written by `Store::write_audited`, in the transaction of the mutation they record,
//! so the log and the state never disagree; this module reads them back.

use crate::{
    error::Result,
    model::account::Actor,
    pagination::{Page, PageRequest},
    store::{self, Store},
};

pub use crate::model::audit::AuditEntry;

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
