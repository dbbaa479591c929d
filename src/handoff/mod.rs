//! Listening sockets that outlive one process: socket activation (systemd passes the
//! sockets, and holds connections while the daemon restarts) and the hand-off upgrade (on
//! SIGHUP the running daemon starts the binary now on disk with its sockets, waits until
//! it serves, then stops accepting, stops its background work, drains and exits).
//!
//! The hand-off's control channel is a Unix socket pair, one end passed to the new
//! process. It carries two lines: `ready` (new to old: serving on the passed sockets)
//! and `released` (old to new: no longer accepting, background work stopped); the old
//! process's exit closes it, which the new one reads as "the old one is gone". Invariant:
//! the new process starts background work only once the old one has exited, so a deploy
//! worker, reconciler or scheduler never runs twice.

mod fds;
pub mod passed;

use std::{
    ffi::OsString,
    future::Future,
    io,
    net::TcpListener,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixStream as StdUnixStream,
    },
    path::PathBuf,
    pin::Pin,
    process::ExitStatus,
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

pub use passed::Role;

/// How long a new process may take from its start to serving before the old one gives
/// up on it, stops it and keeps serving. Opening the store includes its migrations.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

const READY: &str = "ready";
const RELEASED: &str = "released";

/// Listening sockets this process was given instead of binding them, and the hand-off's
/// control channel when a hand-off started it.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(Role, TcpListener)>,
    control: Option<StdUnixStream>,
}

impl Inherited {
    /// Reads what systemd or a hand-off passed, takes ownership of those descriptors and
    /// removes the variables, so no child sees them. Call it before the process starts
    /// any thread (it changes the environment).
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok();
        let handoff = var(passed::HANDOFF_VAR);
        let activation = passed::systemd(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        );
        for name in passed::SYSTEMD_VARS
            .into_iter()
            .chain([passed::HANDOFF_VAR])
        {
            std::env::remove_var(name);
        }
        let passed = match handoff {
            Some(value) => passed::handoff(&value)?,
            None => match activation? {
                Some(passed) => passed,
                None => return Ok(Self::default()),
            },
        };
        let mut inherited = Self::default();
        for (role, fd) in passed.sockets {
            let listener = TcpListener::from(fds::adopt(fd)?);
            // A passed socket that is not a listening TCP socket fails here, by name.
            listener
                .local_addr()
                .and_then(|_| listener.set_nonblocking(true))
                .with_context(|| {
                    format!(
                        "the {} socket passed as descriptor {fd} is not a TCP socket",
                        role.name()
                    )
                })?;
            inherited.sockets.push((role, listener));
        }
        if let Some(fd) = passed.control {
            let control = StdUnixStream::from(fds::adopt(fd)?);
            control.set_nonblocking(true)?;
            inherited.control = Some(control);
        }
        Ok(inherited)
    }

    /// The socket passed for `role`, if any.
    pub fn take(&mut self, role: Role) -> Option<TcpListener> {
        let at = self.sockets.iter().position(|(r, _)| *r == role)?;
        Some(self.sockets.swap_remove(at).1)
    }

    /// The control channel to the process this one replaces (a hand-off started it).
    pub fn take_control(&mut self) -> Option<StdUnixStream> {
        self.control.take()
    }
}

/// How `run` is driven: when it stops, whether SIGHUP upgrades it, and whether it
/// replaces another process.
pub struct Lifecycle {
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// SIGHUP starts a hand-off (only `cantila serve` sets it: a signal is process-wide,
    /// and tests run many daemons in one process).
    pub upgrade_on_sighup: bool,
    /// Set in a process a hand-off started.
    pub predecessor: Option<StdUnixStream>,
}

impl Lifecycle {
    /// Runs until `shutdown`, with no hand-off either way.
    pub fn plain(shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            shutdown: Box::pin(shutdown),
            upgrade_on_sighup: false,
            predecessor: None,
        }
    }
}

/// In a process a hand-off started: the channel to the process it replaces.
pub struct Predecessor {
    channel: BufReader<UnixStream>,
}

impl Predecessor {
    pub fn new(control: StdUnixStream) -> io::Result<Self> {
        Ok(Self {
            channel: BufReader::new(UnixStream::from_std(control)?),
        })
    }

    /// Says this process serves: to systemd first (it becomes the service's main process,
    /// so the old one's exit is not the service's), then to the old process.
    pub async fn serving(&mut self) -> io::Result<()> {
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::MainPid(std::process::id())],
        );
        let stream = self.channel.get_mut();
        stream.write_all(format!("{READY}\n").as_bytes()).await?;
        stream.flush().await
    }

    /// Until the old process has stopped accepting and stopped its background work, or
    /// is gone.
    pub async fn released(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            match self.channel.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim() == RELEASED => return,
                Ok(_) => {}
            }
        }
    }

    /// Until the old process has exited: its end of the channel closes with it.
    pub async fn exited(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            match self.channel.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Why a hand-off did not happen; the process that tried keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("finding the binary to start: {0}")]
    Program(io::Error),
    #[error("starting {program}: {err}")]
    Spawn { program: String, err: io::Error },
    #[error("the new process (pid {pid}) exited before it was ready ({status})")]
    Exited { pid: u32, status: String },
    #[error("the new process (pid {pid}) was not ready within {}s; it was stopped", within.as_secs())]
    NotReady { pid: u32, within: Duration },
    #[error("the hand-off channel: {0}")]
    Channel(io::Error),
}

/// In a running process: what a SIGHUP needs to start its successor. It holds its own
/// copies of the listening sockets, since the servers own (and close) theirs.
pub struct Upgrader {
    sockets: Vec<(Role, OwnedFd)>,
    ready_within: Duration,
}

impl Upgrader {
    pub fn new(listeners: &[(Role, &TcpListener)]) -> io::Result<Self> {
        let sockets = listeners
            .iter()
            .map(|(role, listener)| Ok((*role, OwnedFd::from(listener.try_clone()?))))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            sockets,
            ready_within: READY_WITHIN,
        })
    }

    /// Starts the binary now on disk with this process's arguments and sockets, and waits
    /// until it serves. It is stopped if it does not get ready in time.
    pub async fn start_successor(&self) -> Result<Successor, UpgradeError> {
        let program = current_program().map_err(UpgradeError::Program)?;
        let (ours, theirs) = StdUnixStream::pair().map_err(UpgradeError::Channel)?;
        let passed: Vec<_> = self
            .sockets
            .iter()
            .map(|(role, fd)| (*role, fd.as_raw_fd()))
            .collect();
        let value = passed::handoff_value(&passed, theirs.as_raw_fd());
        let mut command = tokio::process::Command::new(&program);
        command
            .args(std::env::args_os().skip(1).collect::<Vec<OsString>>())
            .env(passed::HANDOFF_VAR, value);
        for name in passed::SYSTEMD_VARS {
            command.env_remove(name);
        }
        let mut keep: Vec<_> = passed.iter().map(|(_, fd)| *fd).collect();
        keep.push(theirs.as_raw_fd());
        fds::keep_across_exec(&mut command, keep);
        let mut child = command.spawn().map_err(|err| UpgradeError::Spawn {
            program: program.display().to_string(),
            err,
        })?;
        // Only the child holds its end now, so its exit reads as the end of the channel.
        drop(theirs);
        let pid = child.id().unwrap_or_default();
        tracing::info!(pid, program = %program.display(), "upgrade: started the new process");
        ours.set_nonblocking(true).map_err(UpgradeError::Channel)?;
        let mut channel =
            BufReader::new(UnixStream::from_std(ours).map_err(UpgradeError::Channel)?);
        let ready = async {
            let mut line = String::new();
            loop {
                line.clear();
                match channel.read_line(&mut line).await {
                    Ok(0) => return false,
                    Ok(_) if line.trim() == READY => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        };
        let outcome = tokio::time::timeout(self.ready_within, ready).await;
        match outcome {
            Ok(true) => Ok(Successor {
                channel: channel.into_inner(),
                pid,
            }),
            Ok(false) => {
                let status = child
                    .wait()
                    .await
                    .map_or_else(|err| err.to_string(), describe);
                Err(UpgradeError::Exited { pid, status })
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(UpgradeError::NotReady {
                    pid,
                    within: self.ready_within,
                })
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The path of this process's binary as it is on disk now. After an upgrade replaced the
/// file, /proc/self/exe reads "<path> (deleted)": that path holds the new binary.
fn current_program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let now = exe
        .to_str()
        .and_then(|path| path.strip_suffix(" (deleted)"))
        .map(PathBuf::from);
    Ok(now.unwrap_or(exe))
}

/// In the old process of a hand-off: the new process, serving.
pub struct Successor {
    channel: UnixStream,
    pub pid: u32,
}

impl Successor {
    /// Tells the new process this one no longer accepts and its background work stopped.
    /// The channel stays open until this process exits (dropping `self` early would tell
    /// the new one it exited).
    pub async fn release(&mut self) -> io::Result<()> {
        self.channel
            .write_all(format!("{RELEASED}\n").as_bytes())
            .await?;
        self.channel.flush().await
    }
}
