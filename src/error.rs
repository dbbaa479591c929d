//! The domain error: every failure a domain function can report, independent of HTTP.
//! The API maps it to a status in one exhaustive match (`api::error`).
//! Invariant: it names no lower layer's type; each adapter converts its own failures into
//! it (the store's `From<StoreError>`), so every module can return it.

/// A failure of a domain operation. Messages are lowercase sentences that say what was
/// wrong and, where it helps, what is accepted; they are shown to API clients as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target does not exist, or belongs to another account (never revealed).
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed but clashes with existing state (a taken name).
    #[error("{0}")]
    Conflict(String),
    /// A field failed validation.
    #[error("{0}")]
    Invalid(String),
    /// The request itself is malformed (a bad cursor, a bad query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials that are unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the scope the operation needs.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed attempts from one client address.
    #[error("too many failed authentication attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Something Cantila depends on (the Docker engine) is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The disk under the data directory is full: the write was refused and nothing
    /// changed. Reads keep working, and writes work again once space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// The store failed; the detail (SQLite's message) is logged, never shown to the
    /// client.
    #[error("store: {0}")]
    Store(String),
    /// A bug or an unexpected state; the detail is logged, never shown to the client.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The error of a write refused because the data directory's disk is full.
    pub fn storage_full() -> Self {
        Error::StorageFull(
            "the disk holding Cantila's data directory is full, so nothing was changed; \
             free space on the server and retry"
                .to_owned(),
        )
    }
}

/// True when an I/O failure means the disk is full (ENOSPC) or the user's quota is
/// spent (EDQUOT), so callers can answer `Error::StorageFull` instead of a 500.
pub fn is_storage_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
