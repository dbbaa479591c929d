//! Accounts and API tokens as stored (a token's record never holds its secret), and the
//! actor a mutation is done by.

use std::net::IpAddr;

use crate::names::{Handle, Scope};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub handle: Handle,
    pub created_at: String,
}

/// A token as stored: everything but the secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub account_id: String,
    pub name: Option<String>,
    pub scope: Scope,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// Who is acting: an authenticated token, the operator on the server's shell, or a
/// verified webhook delivery.
#[derive(Debug, Clone)]
pub struct Actor {
    pub account_id: String,
    pub handle: Handle,
    /// The token used, or `None` for the operator and webhooks.
    pub token_id: Option<String>,
    pub scope: Scope,
    pub client_addr: Option<IpAddr>,
    /// Set when a signed webhook delivery acts for the project's account.
    pub via_webhook: bool,
    /// Set when a background task (the preview expiry sweep) acts for the account; the
    /// audit log names it.
    pub background: Option<&'static str>,
}

impl Actor {
    /// The operator running `cantila admin` with direct access to the data directory.
    pub fn operator(account: &Account) -> Self {
        Self {
            account_id: account.id.clone(),
            handle: account.handle.clone(),
            token_id: None,
            scope: Scope::Admin,
            client_addr: None,
            via_webhook: false,
            background: None,
        }
    }

    /// A verified webhook delivery, acting with deploy scope for the project's account.
    pub fn webhook(account_id: String, handle: Handle, client_addr: Option<IpAddr>) -> Self {
        Self {
            account_id,
            handle,
            token_id: None,
            scope: Scope::Deploy,
            client_addr,
            via_webhook: true,
            background: None,
        }
    }

    /// A background task of the daemon acting for an account, named `task` in the audit
    /// log.
    pub fn background(account_id: String, handle: Handle, task: &'static str) -> Self {
        Self {
            account_id,
            handle,
            token_id: None,
            scope: Scope::Deploy,
            client_addr: None,
            via_webhook: false,
            background: Some(task),
        }
    }

    /// How the audit log names this actor.
    pub fn label(&self) -> String {
        if let Some(task) = self.background {
            return task.to_owned();
        }
        match (&self.token_id, self.via_webhook) {
            (Some(id), _) => id.clone(),
            (None, true) => "webhook".to_owned(),
            (None, false) => "admin-cli".to_owned(),
        }
    }
}
