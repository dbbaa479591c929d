//! Interactive sessions with a process in a container, as the runtime hands them over: a
//! command run in a running instance (an exec), or a created container attached to and
//! then started (an interactive run). The caller writes the process's stdin, reads its
//! output, resizes its terminal and learns its exit code, without knowing the engine.
//! Invariant: nothing here names the engine's types; a session's output is read only as
//! fast as its reader takes it, so a slow reader holds the process back instead of
//! growing a buffer.

use std::{fmt, pin::Pin};

use bytes::Bytes;
use futures_util::{future::BoxFuture, stream::BoxStream};
use tokio::io::AsyncWrite;

use super::RuntimeError;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// What a resize or a hang-up addresses: the runtime's own id of the session's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalTarget {
    /// A container attached to and started (its main process).
    Container(String),
    /// A command run inside a running container.
    Exec(String),
}

/// A command to run inside a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program and its arguments, never read by a shell.
    pub command: Vec<String>,
    /// Gives the command a terminal; its output is then one stream (stdout).
    pub tty: bool,
    /// The terminal's size from the start (with `tty`).
    pub size: Option<TerminalSize>,
}

/// A piece of what the process wrote, as the runtime delivered it (not split into lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A process with its stdin, output and exit code, ready to be bridged to a client.
pub struct TerminalSession {
    /// What `resize_terminal` and `hang_up` take for this session.
    pub target: TerminalTarget,
    /// Whether the process has a terminal (its output is then all `Stdout`).
    pub tty: bool,
    /// The process's stdin; shutting it down closes the process's stdin (without a
    /// terminal; a terminal is hung up instead, see `ContainerRuntime::hang_up`).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// What the process writes, until it exits (or the session is dropped). Nothing is
    /// read from the runtime before the stream is polled.
    pub output: BoxStream<'static, Result<TerminalOutput, RuntimeError>>,
    /// The process's exit code, once `output` has ended.
    pub exit: BoxFuture<'static, Result<i64, RuntimeError>>,
}

impl fmt::Debug for TerminalSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalSession")
            .field("target", &self.target)
            .field("tty", &self.tty)
            .finish_non_exhaustive()
    }
}
