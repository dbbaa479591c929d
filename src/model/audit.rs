//! Entries of the audit log as stored.

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub account_id: String,
    /// The token id, or `admin-cli` for the operator on the server.
    pub actor: String,
    /// A dotted verb such as `project.create`.
    pub action: String,
    pub target: Option<String>,
    pub client_addr: Option<String>,
    pub at: String,
}
