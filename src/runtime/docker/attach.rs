//! Interactive sessions on the engine: attaching to a created container and starting it
//! (an interactive run), exec into a running one, resizing their terminals and hanging
//! them up.
//! Invariant: the output stream is the engine's hijacked connection read only as fast as
//! the session's reader polls it, so nothing here buffers a process's output.

use std::time::Duration;

use bollard::{
    container::{AttachContainerResults, LogOutput},
    exec::{CreateExecOptions, StartExecOptions, StartExecResults},
    query_parameters::{
        AttachContainerOptions, KillContainerOptions, ResizeContainerTTYOptions, ResizeExecOptions,
    },
    Docker,
};
use futures_util::{FutureExt, Stream, StreamExt};

use super::Engine;
use crate::runtime::{
    ExecSpec, RuntimeError, TerminalOutput, TerminalSession, TerminalSize, TerminalTarget,
};

/// The longest pause between two looks at an exec the engine still reports running after
/// its output ended.
const EXIT_POLL_MAX: Duration = Duration::from_secs(1);

impl Engine {
    /// Attaches to the created container `id`, then starts it: attaching first means its
    /// first bytes reach the session.
    pub async fn attach_and_start(
        &self,
        id: &str,
        size: Option<TerminalSize>,
    ) -> Result<TerminalSession, RuntimeError> {
        let details = self
            .client
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
        let tty = details.config.and_then(|c| c.tty).unwrap_or(false);
        let AttachContainerResults { output, input } = self
            .client
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await?;
        self.client
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await?;
        let target = TerminalTarget::Container(id.to_owned());
        if let (true, Some(size)) = (tty, size) {
            self.first_size(&target, size).await;
        }
        let engine = self.clone();
        let container = id.to_owned();
        Ok(TerminalSession {
            target,
            tty,
            input,
            output: session_output(output),
            // The container has stopped once its output ended; the wait returns at once
            // with its exit code.
            exit: async move { engine.wait(&container).await }.boxed(),
        })
    }

    /// Runs `spec.command` in the running container `id`, attached.
    pub async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<TerminalSession, RuntimeError> {
        let created = self
            .client
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(spec.tty),
                    cmd: Some(spec.command.clone()),
                    ..Default::default()
                },
            )
            .await?;
        let started = self
            .client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: spec.tty,
                    output_capacity: None,
                }),
            )
            .await?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Engine(
                "the engine started the command detached".to_owned(),
            ));
        };
        let target = TerminalTarget::Exec(created.id.clone());
        if let (true, Some(size)) = (spec.tty, spec.size) {
            self.first_size(&target, size).await;
        }
        Ok(TerminalSession {
            target,
            tty: spec.tty,
            input,
            output: session_output(output),
            exit: exec_exit_code(self.client.clone(), created.id).boxed(),
        })
    }

    /// Sets a session's first size. Before API 1.42 neither a container nor an exec takes
    /// its size at creation, so this comes right after the start; a process that already
    /// ended has no terminal to size, which is no failure of the session.
    async fn first_size(&self, target: &TerminalTarget, size: TerminalSize) {
        if let Err(err) = self.resize_terminal(target, size).await {
            tracing::debug!(error = %err, "setting a terminal's first size");
        }
    }

    pub async fn resize_terminal(
        &self,
        target: &TerminalTarget,
        size: TerminalSize,
    ) -> Result<(), RuntimeError> {
        let (h, w) = (i32::from(size.rows), i32::from(size.cols));
        match target {
            TerminalTarget::Container(id) => {
                self.client
                    .resize_container_tty(id, ResizeContainerTTYOptions { h, w })
                    .await?
            }
            TerminalTarget::Exec(id) => {
                self.client
                    .resize_exec(id, ResizeExecOptions { h, w })
                    .await?
            }
        }
        Ok(())
    }

    /// A container's hang-up is SIGHUP through the engine (its init passes it on to the
    /// process). An exec has no such call: the engine leaves an exec's process running
    /// when its client goes, so SIGHUP is sent from inside the container to the process
    /// groups the closed terminal would have reached.
    pub async fn hang_up(&self, target: &TerminalTarget) -> Result<(), RuntimeError> {
        match target {
            TerminalTarget::Container(id) => {
                let killed = self
                    .client
                    .kill_container(
                        id,
                        Some(KillContainerOptions {
                            signal: "SIGHUP".to_owned(),
                        }),
                    )
                    .await;
                match killed.map_err(RuntimeError::from) {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
                    // 409: the container is not running any more.
                    Err(RuntimeError::Engine(message)) if message.contains("is not running") => {
                        Ok(())
                    }
                    Err(err) => Err(err),
                }
            }
            TerminalTarget::Exec(exec_id) => self.hang_up_exec(exec_id).await,
        }
    }

    async fn hang_up_exec(&self, exec_id: &str) -> Result<(), RuntimeError> {
        let inspected = match self.client.inspect_exec(exec_id).await {
            Ok(inspected) => inspected,
            Err(err) => {
                return match RuntimeError::from(err) {
                    RuntimeError::NotFound(_) => Ok(()),
                    other => Err(other),
                }
            }
        };
        let (Some(true), Some(pid), Some(container)) =
            (inspected.running, inspected.pid, inspected.container_id)
        else {
            return Ok(());
        };
        let groups = terminal_groups(pid).await.map_err(|err| {
            RuntimeError::Engine(format!(
                "cannot find the process groups of exec {exec_id} (host process {pid}) to hang up: {err}"
            ))
        })?;
        // The group ids are numbers read from /proc, passed as arguments: the shell reads
        // none of them as code. `kill` is a shell builtin, so images without a kill binary
        // (Debian's slim ones) have it too.
        let mut command = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "kill -HUP \"$@\"".to_owned(),
            "sh".to_owned(),
        ];
        command.extend(groups.iter().map(|group| format!("-{group}")));
        let created = self
            .client
            .create_exec(
                &container,
                CreateExecOptions {
                    cmd: Some(command),
                    ..Default::default()
                },
            )
            .await?;
        self.client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: true,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await?;
        Ok(())
    }
}

/// The process group ids, in the container's own numbering, that a hang-up of the
/// terminal of the exec whose process is `host_pid` reaches: the session leader's group
/// and the terminal's foreground group. Read from the host's /proc (the engine runs on
/// this machine: the single-node runtime talks to it over its Unix socket).
async fn terminal_groups(host_pid: i64) -> std::io::Result<Vec<i64>> {
    let status = tokio::fs::read_to_string(format!("/proc/{host_pid}/status")).await?;
    let leader = namespaced_pid(&status)?;
    let stat = tokio::fs::read_to_string(format!("/proc/{host_pid}/stat")).await?;
    let mut groups = vec![leader];
    if let Some(foreground) = foreground_group(&stat).filter(|g| *g > 0 && *g != host_pid) {
        // A foreground job that just ended has no status to read; the leader's is enough.
        if let Ok(status) = tokio::fs::read_to_string(format!("/proc/{foreground}/status")).await {
            groups.push(namespaced_pid(&status)?);
        }
    }
    Ok(groups)
}

/// The innermost pid of a `/proc/<pid>/status` (its last `NSpid` figure): the process's id
/// inside its container.
fn namespaced_pid(status: &str) -> std::io::Result<i64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|figures| figures.split_whitespace().last())
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| std::io::Error::other("no NSpid line (Linux 4.1 or later has one)"))
}

/// The foreground process group of a process's terminal (`tpgid`, the 8th field of
/// `/proc/<pid>/stat`, counted after the parenthesized command name, which may hold
/// spaces).
fn foreground_group(stat: &str) -> Option<i64> {
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(5)?.parse().ok()
}

/// The engine's frames as session output. With a terminal the engine sends raw bytes
/// (`Console`), which are stdout.
fn session_output(
    frames: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static,
) -> futures_util::stream::BoxStream<'static, Result<TerminalOutput, RuntimeError>> {
    frames
        .filter_map(|frame| async move {
            match frame {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok(TerminalOutput::Stdout(message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(TerminalOutput::Stderr(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(err) => Some(Err(RuntimeError::from(err))),
            }
        })
        .boxed()
}

/// An exec's exit code once its output ended. The engine records the exit before it
/// closes the output, so the first look finds it; later looks, further and further apart,
/// cover an exec whose process closed its output and runs on.
async fn exec_exit_code(client: Docker, exec_id: String) -> Result<i64, RuntimeError> {
    let mut pause = Duration::from_millis(20);
    loop {
        let inspected = client.inspect_exec(&exec_id).await?;
        if inspected.running != Some(true) {
            return inspected.exit_code.ok_or_else(|| {
                RuntimeError::Engine(format!("exec {exec_id} ended without an exit code"))
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(EXIT_POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ids_a_hang_up_needs_from_proc() {
        let status = "Name:\tbash\nTgid:\t4242\nNSpid:\t4242\t17\nPPid:\t1\n";
        assert_eq!(namespaced_pid(status).unwrap(), 17);
        assert_eq!(namespaced_pid("NSpid:\t99\n").unwrap(), 99);
        assert!(namespaced_pid("Name:\tsh\n").is_err());
        // The command name may hold spaces and parentheses.
        let stat = "4242 (my (odd) cmd) S 4200 4242 4242 34816 4300 4194560 0";
        assert_eq!(foreground_group(stat), Some(4300));
        assert_eq!(foreground_group("garbage"), None);
    }
}
