//! Terminals: commands run inside a project's running instances (exec), from the request
//! that names the instance and the command to the session the API bridges to its client.
//! An exec is created (checked, audited, held) by one request and started by the client's
//! WebSocket attach, so a client that cannot attach leaves nothing running.
//! Invariants: an exec reaches only an instance of its caller's account's project (another
//! account's project or instance is not found, never revealed); every exec is in the audit
//! log with its command before anything runs; an exec nobody attaches to within
//! `PENDING_TTL` is dropped, and at most `MAX_PENDING_PER_ACCOUNT` wait at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    accounts::Actor,
    error::{Error, Result},
    ids,
    labels::{Filter, Labels},
    names::ProcessType,
    projects,
    runtime::{ExecSpec, Runtime, TerminalSession, TerminalSize, TerminalTarget},
    store::{self, Store},
};

/// How long a created exec waits for its client's attach.
pub const PENDING_TTL: Duration = Duration::from_secs(60);

/// Execs one account may have waiting for an attach at once, so a client that creates
/// them without attaching cannot grow the daemon's memory.
pub const MAX_PENDING_PER_ACCOUNT: usize = 32;

/// The most arguments a command takes, and the most bytes they hold together.
pub const MAX_COMMAND_ARGS: usize = 256;
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// The largest terminal side accepted, in cells.
pub const MAX_TERMINAL_SIDE: u16 = 1000;

/// The value of an exec's `instance` that picks any running instance of its process type.
pub const ANY_INSTANCE: &str = "any";

#[derive(Clone)]
pub struct Terminals {
    /// Projects (the account check) and the audit log.
    store: Store,
    /// Where instances run, and where execs start.
    runtime: Runtime,
    /// Only this installation's containers are instances.
    installation: Arc<str>,
    /// Created execs waiting for their attach, by exec id.
    pending: Arc<Mutex<HashMap<String, PendingExec>>>,
}

/// A command to run in an instance: its arguments, never read by a shell.
/// Invariant: 1..=`MAX_COMMAND_ARGS` arguments of at most `MAX_COMMAND_BYTES` together,
/// a non-empty program, no NUL byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command(Vec<String>);

impl Command {
    pub fn parse(args: Vec<String>) -> Result<Self> {
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "`command` {why}; give the program and its arguments as an array of strings, \
                 e.g. [\"sh\", \"-c\", \"echo hi\"] (1 to {MAX_COMMAND_ARGS} arguments, \
                 {MAX_COMMAND_BYTES} bytes in all)"
            ))
        };
        match args.first() {
            None => return Err(invalid("is empty")),
            Some(program) if program.is_empty() => return Err(invalid("names no program")),
            Some(_) => {}
        }
        if args.len() > MAX_COMMAND_ARGS {
            return Err(invalid("has too many arguments"));
        }
        if args.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
            return Err(invalid("is too long"));
        }
        if args.iter().any(|arg| arg.contains('\0')) {
            return Err(invalid("holds a NUL byte, which no program can take"));
        }
        Ok(Self(args))
    }

    pub fn args(&self) -> &[String] {
        &self.0
    }

    /// The command as a shell would show it, for the audit log: arguments with anything
    /// beyond plain characters single-quoted. Only ever displayed, never run.
    pub fn display(&self) -> String {
        self.0
            .iter()
            .map(|arg| {
                let plain = !arg.is_empty()
                    && arg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
                if plain {
                    arg.clone()
                } else {
                    format!("'{}'", arg.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Checks a terminal size from a client: each side 1..=`MAX_TERMINAL_SIDE`.
pub fn terminal_size(cols: u16, rows: u16) -> Result<TerminalSize> {
    for (name, value) in [("cols", cols), ("rows", rows)] {
        if !(1..=MAX_TERMINAL_SIDE).contains(&value) {
            return Err(Error::Invalid(format!(
                "`{name}` is {value}; a terminal side is 1 to {MAX_TERMINAL_SIDE} cells"
            )));
        }
    }
    Ok(TerminalSize { cols, rows })
}

/// What a client asks to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Command,
    pub tty: bool,
    /// The process type the instance must run (`web` when the instance is `any`).
    pub process: Option<ProcessType>,
    pub size: Option<TerminalSize>,
}

/// A created exec waiting for its attach.
#[derive(Debug, Clone)]
pub struct PendingExec {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    /// The instance's id as the API lists it.
    pub instance_id: String,
    container_id: String,
    spec: ExecSpec,
    created: Instant,
}

impl PendingExec {
    pub fn tty(&self) -> bool {
        self.spec.tty
    }
}

impl Terminals {
    pub fn new(store: Store, runtime: Runtime, installation: Arc<str>) -> Self {
        Self {
            store,
            runtime,
            installation,
            pending: Arc::default(),
        }
    }

    /// Checks and audits an exec of `request.command` in the project's `instance` (an
    /// instance id or name from the instance list, or `any`), and holds it for the
    /// client's attach.
    pub async fn create_exec(
        &self,
        actor: &Actor,
        project_id: String,
        instance: &str,
        request: ExecRequest,
    ) -> Result<PendingExec> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let (instance_id, container_id) = self
            .running_instance(&project.id, instance, request.process.as_ref())
            .await?;
        let exec = PendingExec {
            id: ids::new_id("exe"),
            account_id: actor.account_id.clone(),
            project_id: project.id.clone(),
            instance_id,
            container_id,
            spec: ExecSpec {
                command: request.command.args().to_vec(),
                tty: request.tty,
                size: request.size,
            },
            created: Instant::now(),
        };
        // Held before the audit entry, so a refused exec is not in the log (and given
        // back if the entry cannot be written).
        self.hold(&exec)?;
        let audit = store::Audit::by(
            actor,
            "instance.exec",
            format!(
                "{}/{} {}: {}",
                exec.project_id,
                exec.instance_id,
                exec.id,
                request.command.display()
            ),
        );
        if let Err(err) = self.store.write_audited(audit, |_| Ok(())).await {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&exec.id);
            return Err(err);
        }
        tracing::info!(
            exec = %exec.id, project = %exec.project_id, instance = %exec.instance_id,
            tty = exec.spec.tty, "exec created"
        );
        Ok(exec)
    }

    /// Takes a created exec for its attach: only once, only by its account, only within
    /// `PENDING_TTL` of its creation.
    pub fn take_exec(&self, actor: &Actor, exec_id: &str) -> Result<PendingExec> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let not_found = || {
            Error::NotFound(format!(
                "exec `{exec_id}` not found: it was attached already, was not attached within {} s, or does not exist",
                PENDING_TTL.as_secs()
            ))
        };
        match pending.get(exec_id) {
            Some(exec) if exec.account_id == actor.account_id => {}
            Some(_) | None => return Err(not_found()),
        }
        let exec = pending.remove(exec_id).ok_or_else(not_found)?;
        if exec.created.elapsed() > PENDING_TTL {
            return Err(not_found());
        }
        Ok(exec)
    }

    /// Starts a taken exec; `size` (a client's) overrides the one it was created with.
    pub async fn start_exec(
        &self,
        exec: PendingExec,
        size: Option<TerminalSize>,
    ) -> Result<TerminalSession> {
        let mut spec = exec.spec;
        spec.size = size.or(spec.size);
        let session = self.runtime.exec(&exec.container_id, &spec).await?;
        tracing::info!(exec = %exec.id, project = %exec.project_id, "exec started");
        Ok(session)
    }

    pub async fn resize(&self, target: &TerminalTarget, size: TerminalSize) -> Result<()> {
        Ok(self.runtime.resize_terminal(target, size).await?)
    }

    /// Hangs a session's terminal up (its client went away).
    pub async fn hang_up(&self, target: &TerminalTarget) -> Result<()> {
        Ok(self.runtime.hang_up(target).await?)
    }

    /// Drops expired execs, then holds `exec` unless its account has its allowance
    /// waiting already.
    fn hold(&self, exec: &PendingExec) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, held| held.created.elapsed() <= PENDING_TTL);
        let waiting = pending
            .values()
            .filter(|held| held.account_id == exec.account_id)
            .count();
        if waiting >= MAX_PENDING_PER_ACCOUNT {
            return Err(Error::Conflict(format!(
                "{waiting} execs are waiting to be attached; attach them or wait {} s for them to expire",
                PENDING_TTL.as_secs()
            )));
        }
        pending.insert(exec.id.clone(), exec.clone());
        Ok(())
    }

    /// The instance id and container of a running instance of the project: the one
    /// `instance` names (by id or name), or with `any` one of `process` (default web).
    async fn running_instance(
        &self,
        project_id: &str,
        instance: &str,
        process: Option<&ProcessType>,
    ) -> Result<(String, String)> {
        let containers = self
            .runtime
            .containers_matching(
                &Filter::new()
                    .installation(&self.installation)
                    .project(project_id),
            )
            .await?;
        let instances = containers.into_iter().filter_map(|container| {
            let process_type = Labels::parse(&container.labels).process_type()?;
            let matches = process.is_none_or(|wanted| *wanted == process_type);
            matches.then_some((container, process_type))
        });
        let wanted = process.map_or(ProcessType::WEB, ProcessType::as_str);
        if instance == ANY_INSTANCE {
            let running = instances
                .filter(|(container, process_type)| {
                    container.state == "running"
                        && (process.is_some() || process_type.as_str() == ProcessType::WEB)
                })
                .map(|(container, _)| container)
                .min_by(|a, b| a.name.cmp(&b.name));
            return running
                .map(|container| (crate::logs::instance_id(&container.id), container.id))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "the project has no running instance of process type `{wanted}`"
                    ))
                });
        }
        let (container, _) = instances
            .into_iter()
            .find(|(container, _)| {
                crate::logs::instance_id(&container.id) == instance || container.name == instance
            })
            .ok_or_else(|| match process {
                Some(process) => Error::NotFound(format!(
                    "instance `{instance}` of process type `{process}` not found; \
                     GET /v1/projects/{project_id}/instances lists them"
                )),
                None => Error::NotFound(format!(
                    "instance `{instance}` not found; GET /v1/projects/{project_id}/instances lists them"
                )),
            })?;
        if container.state != "running" {
            return Err(Error::Conflict(format!(
                "instance `{instance}` is not running ({}); pick a running one",
                container.state
            )));
        }
        Ok((crate::logs::instance_id(&container.id), container.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Result<Command> {
        Command::parse(args.iter().map(|a| a.to_string()).collect())
    }

    #[test]
    fn commands_are_checked_and_shown_quoted() {
        for (args, shown) in [
            (
                &["sh", "-c", "cat /etc/hostname; exit 4"][..],
                "sh -c 'cat /etc/hostname; exit 4'",
            ),
            (&["echo", "it's", ""][..], r"echo 'it'\''s' ''"),
            (&["env"][..], "env"),
        ] {
            assert_eq!(command(args).unwrap().display(), shown);
        }
        for (args, why) in [
            (&[][..], "is empty"),
            (&[""][..], "names no program"),
            (&["echo", "a\0b"][..], "NUL"),
        ] {
            let err = command(args).unwrap_err().to_string();
            assert!(err.contains("`command`") && err.contains(why), "{err}");
        }
        let many = vec!["x".to_owned(); MAX_COMMAND_ARGS + 1];
        assert!(Command::parse(many).is_err());
        let long = vec!["x".repeat(MAX_COMMAND_BYTES + 1)];
        assert!(Command::parse(long).is_err());
    }

    #[test]
    fn terminal_sizes_are_bounded_and_name_the_side() {
        assert!(terminal_size(1, MAX_TERMINAL_SIDE).is_ok());
        for (cols, rows, side) in [(0, 24, "cols"), (80, MAX_TERMINAL_SIDE + 1, "rows")] {
            let err = terminal_size(cols, rows).unwrap_err().to_string();
            assert!(err.contains(side), "{err}");
        }
    }
}
