//! Lines a container wrote, as the runtime logged them.

/// Which output of a container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line a container wrote, as the runtime logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogLine {
    pub stream: OutputStream,
    /// The runtime's timestamp of the line, in nanoseconds since the epoch.
    pub at_ns: i64,
    pub text: String,
}
