//! Accounts and API tokens as stored (a token's record never holds its secret).

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
