//! Terminals: commands run inside a project's running instances (exec), from the request
//! that names the instance and the command to the session the API bridges to its client,
//! and the terminal of an interactive run (attached to its created container, which it
//! then starts). An exec is created (checked, audited, held) by one request and started by
//! the client's WebSocket attach, so a client that cannot attach leaves nothing running.
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
    model::run::RunCommand,
    names::ProcessType,
    projects,
    runs::Runs,
    runtime::{ExecSpec, Runtime, RuntimeError, TerminalSession, TerminalSize, TerminalTarget},
    store::{self, Store},
};

/// How long a created exec waits for its client's attach.
pub const PENDING_TTL: Duration = Duration::from_secs(60);

/// Execs one account may have waiting for an attach at once, so a client that creates
/// them without attaching cannot grow the daemon's memory.
pub const MAX_PENDING_PER_ACCOUNT: usize = 32;

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
    /// Interactive runs: the pending one a terminal takes, and how it ended.
    runs: Runs,
}

/// An interactive run a terminal took, to start.
#[derive(Debug, Clone)]
pub struct RunTarget {
    pub run_id: String,
    account_id: String,
    container_id: String,
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
    pub command: RunCommand,
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
    pub fn new(store: Store, runtime: Runtime, installation: Arc<str>, runs: Runs) -> Self {
        Self {
            store,
            runtime,
            installation,
            pending: Arc::default(),
            runs,
        }
    }

    /// Takes the account's pending interactive run for a terminal: from here on it is
    /// running, and its timeout counts. Another account's run is not found; a run that is
    /// not interactive, or not pending any more, is a conflict.
    pub async fn take_run(&self, actor: &Actor, run_id: &str) -> Result<RunTarget> {
        let (run, container_id) = self.runs.attach_target(&actor.account_id, run_id).await?;
        Ok(RunTarget {
            run_id: run.id,
            account_id: actor.account_id.clone(),
            container_id,
        })
    }

    /// Attaches to a taken run's container and starts it. Its exit code is read from the
    /// run once it is over: the run's waiter records the end and then removes the
    /// container, so the container itself may be gone by the time its output ended.
    pub async fn start_run(
        &self,
        target: RunTarget,
        size: Option<TerminalSize>,
    ) -> Result<TerminalSession> {
        let started = self
            .runtime
            .attach_and_start(&target.container_id, size)
            .await;
        let mut session = match started {
            Ok(session) => session,
            Err(err) => {
                // The run would otherwise wait for a start that never comes.
                if let Err(cancel) = self.runs.cancel(&target.account_id, &target.run_id).await {
                    tracing::warn!(run = %target.run_id, error = %cancel, "ending a run whose terminal could not start it");
                }
                return Err(err.into());
            }
        };
        tracing::info!(run = %target.run_id, "interactive run started by its terminal");
        let runs = self.runs.clone();
        session.exit = Box::pin(async move {
            // The run's output stream ends once the run is over and recorded.
            let mut over = runs.follow(&target.run_id, i64::MAX);
            while over.recv().await.is_some() {}
            let run = runs
                .get(&target.account_id, &target.run_id)
                .await
                .map_err(|err| RuntimeError::Engine(err.to_string()))?;
            run.exit_code.ok_or_else(|| {
                RuntimeError::Engine(format!(
                    "run `{}` ended {} without an exit code{}",
                    run.id,
                    run.status.as_str(),
                    run.error
                        .map(|error| format!(": {error}"))
                        .unwrap_or_default()
                ))
            })
        });
        Ok(session)
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

    #[test]
    fn terminal_sizes_are_bounded_and_name_the_side() {
        assert!(terminal_size(1, MAX_TERMINAL_SIDE).is_ok());
        for (cols, rows, side) in [(0, 24, "cols"), (80, MAX_TERMINAL_SIDE + 1, "rows")] {
            let err = terminal_size(cols, rows).unwrap_err().to_string();
            assert!(err.contains(side), "{err}");
        }
    }
}
