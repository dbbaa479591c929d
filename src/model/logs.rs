//! Runtime log lines as stored: a project's instances' output and the edge's access lines,
//! where each container stream has been read up to, and the filters of a read.

use crate::live;

/// What the size cap counts for each line beyond its text: the tags and row overhead.
pub const LINE_OVERHEAD_BYTES: usize = 32;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// The edge's access line for a request to the project.
    Edge,
}

impl LogStream {
    pub const ALL: [LogStream; 3] = [LogStream::Stdout, LogStream::Stderr, LogStream::Edge];

    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Edge => "edge",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|stream| stream.as_str() == value)
    }
}

/// A stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLine {
    /// The line's place in the store: the SSE event id, increasing across all projects.
    pub seq: i64,
    pub project_id: String,
    /// When the line was written (Docker's timestamp; the edge's clock for access lines),
    /// in nanoseconds since the epoch.
    pub at_ns: i64,
    /// The instance's id (as the instances listing shows it), or `edge`.
    pub instance: String,
    /// The process type (`web`, a Procfile process), or `edge`.
    pub process: String,
    pub stream: LogStream,
    pub text: String,
    /// The preview whose container or hostname the line came from; `None` for production.
    pub preview_id: Option<String>,
    /// The project's service whose container wrote it; `None` for the app's lines.
    pub service: Option<String>,
}

impl live::Sequenced for std::sync::Arc<RuntimeLine> {
    fn seq(&self) -> i64 {
        self.seq
    }
}

/// A line on its way to the store.
#[derive(Debug, Clone)]
pub struct NewLine {
    pub project_id: String,
    pub at_ns: i64,
    pub instance: String,
    pub process: String,
    pub stream: LogStream,
    pub text: String,
    /// The preview the line belongs to; `None` for production.
    pub preview_id: Option<String>,
    /// The service whose container wrote it; `None` for the app's lines.
    pub service: Option<String>,
    /// For container lines: the stream's read position once this line is stored.
    pub position: Option<ReadPosition>,
}

/// How far a container's stream has been read: the timestamp of the last line and how many
/// lines carry exactly that timestamp (Docker may give several lines the same one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPosition {
    pub container_id: String,
    pub last_ns: i64,
    pub lines_at_last: i64,
}

/// Filters of a read or a followed stream, applied the same way in SQL and to live lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineFilter {
    /// Whose lines: production's (`None`) or one preview's. Never both, so a preview's
    /// traffic and output stay out of production's view.
    pub preview_id: Option<String>,
    pub instance: Option<String>,
    pub stream: Option<LogStream>,
    /// A case-sensitive substring of the line.
    pub contains: Option<String>,
    /// Only this service's lines.
    pub service: Option<String>,
}

impl LineFilter {
    pub fn matches(&self, line: &RuntimeLine) -> bool {
        line.preview_id == self.preview_id
            && self
                .instance
                .as_deref()
                .is_none_or(|instance| line.instance == instance)
            && self.stream.is_none_or(|stream| line.stream == stream)
            && self
                .service
                .as_deref()
                .is_none_or(|service| line.service.as_deref() == Some(service))
            && self
                .contains
                .as_deref()
                .is_none_or(|needle| line.text.contains(needle))
    }
}
