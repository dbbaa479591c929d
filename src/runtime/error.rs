//! What can go wrong asking the container runtime for something, and how each failure
//! reaches an API caller (the runtime being out of reach is a 503, the rest are internal
//! errors). The messages name the Docker engine: both runtimes Cantila has or plans (one
//! engine, or a swarm of them) are Docker engines, and operators search for these words.

/// A failure talking to the runtime, or a failure the runtime reports.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime could not be reached for a request (it restarted, or its socket went
    /// away); Cantila retries by itself.
    #[error("cannot reach the Docker engine: {0}")]
    Unreachable(String),
    /// The first connection failed: the message says what to check.
    #[error("{0}")]
    NotConnected(String),
    /// The build ran and failed; the message is the builder's own error line.
    #[error("the image build failed: {0}")]
    BuildFailed(String),
    /// A pull the registry refused or could not serve; the message is the registry's own
    /// reason (unauthorized, manifest unknown...), as the engine reported it.
    #[error("the image pull failed: {0}")]
    PullFailed(String),
    #[error("no such container or image: {0}")]
    NotFound(String),
    /// The runtime refused the request; the message is its own.
    #[error("docker: {0}")]
    Engine(String),
}

impl From<RuntimeError> for crate::error::Error {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Unreachable(message) => crate::error::Error::Unavailable(format!(
                "the Docker engine is unreachable ({message}); Cantila retries by itself"
            )),
            RuntimeError::NotConnected(message) => crate::error::Error::Unavailable(message),
            // The registry's answer concerns what the caller asked for (a reference, its
            // credentials): a 422 with the registry's reason.
            pull @ RuntimeError::PullFailed(_) => crate::error::Error::Invalid(pull.to_string()),
            other @ (RuntimeError::BuildFailed(_)
            | RuntimeError::NotFound(_)
            | RuntimeError::Engine(_)) => crate::error::Error::Internal(other.to_string()),
        }
    }
}
