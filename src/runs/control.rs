//! Runs from outside their waiter: cancels, the terminal's hooks (`attach_target`,
//! `finish`), the start-up recovery, the periodic sweep of orphan containers and the
//! stop at shutdown.
//! Invariant: every container labelled `cantila.kind=run` of this installation belongs to
//! a run this process waits on; any other (left by a crash, or by a run whose record
//! failed) is removed at start and by the sweep.

use std::{future::Future, time::Duration};

use crate::{
    clock,
    error::{Error, Result},
    labels::{self, Filter, Key, Kind},
    store::{self, runs::Ending},
};

use super::{Attach, Run, RunStatus, Runs};

/// How often the sweep looks for run containers no run owns.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl Runs {
    /// Cancels a pending or running run of the account: its container gets SIGTERM, then
    /// SIGKILL after `runs.stop_grace_secs`, and the run ends `canceled`. Answers the run
    /// as it ended; a run already over answers 409. Not audited: `cancel_by` is the
    /// audited entry point for people.
    pub async fn cancel(&self, account_id: &str, run_id: &str) -> Result<Run> {
        let run = self.get(account_id, run_id).await?;
        if run.status.is_final() {
            return Err(already_over(&run));
        }
        match self.0.hub.get(run_id) {
            Some(active) => {
                let ended = active.ended.notified();
                active.state().stopping.get_or_insert(RunStatus::Canceled);
                active.cancel.notify_one();
                // The waiter stops the container within the grace period, then records.
                let within = Duration::from_secs(self.0.config.runs.stop_grace_secs + 15);
                if tokio::time::timeout(within, ended).await.is_err() {
                    tracing::warn!(run = %run_id, "a canceled run did not end in time");
                }
            }
            // A run no waiter of this process owns (it cannot outlive a restart, but the
            // record and the container are put right all the same).
            None => {
                self.record_end(
                    &run,
                    Ending {
                        status: RunStatus::Canceled,
                        exit_code: None,
                        error: Some("canceled".to_owned()),
                        at: clock::now(),
                    },
                )
                .await;
                if let Some(container) = &run.container_id {
                    let _ = self
                        .0
                        .runtime
                        .stop_and_remove(container, Duration::from_secs(1))
                        .await;
                }
            }
        }
        self.get(account_id, run_id).await
    }

    /// `cancel` for `actor` (as the audit log names it), with its audit entry.
    pub async fn cancel_by(&self, account_id: &str, actor: &str, run_id: &str) -> Result<Run> {
        let run = self.get(account_id, run_id).await?;
        if run.status.is_final() {
            return Err(already_over(&run));
        }
        let audit = store::Audit::by_daemon(account_id, actor, "run.cancel", run_id);
        self.0.store.write_audited(audit, |_| Ok(())).await?;
        self.cancel(account_id, run_id).await
    }

    /// For the terminal (`GET /v1/runs/{id}/attach`): the pending interactive run of the
    /// account and its container, which the caller attaches to and then starts. The run
    /// is `running` from here on and its timeout counts. Answers 409 for a run that is not
    /// interactive, not pending (already attached, started or over).
    pub async fn attach_target(&self, account_id: &str, run_id: &str) -> Result<(Run, String)> {
        let mut run = self.get(account_id, run_id).await?;
        if !run.interactive {
            return Err(Error::Conflict(format!(
                "run `{run_id}` is not interactive; follow its output with GET /v1/runs/{run_id}/events"
            )));
        }
        let not_pending = |run: &Run| {
            Error::Conflict(format!(
                "run `{run_id}` is {}; a terminal attaches only to a pending interactive run, once",
                run.status.as_str()
            ))
        };
        if run.status != RunStatus::Pending {
            return Err(not_pending(&run));
        }
        let (Some(active), Some(container)) = (self.0.hub.get(run_id), run.container_id.clone())
        else {
            return Err(not_pending(&run));
        };
        {
            let mut state = active.state();
            if state.attach != Attach::Waiting || state.stopping.is_some() {
                return Err(not_pending(&run));
            }
            state.attach = Attach::Attached;
        }
        let at = clock::now();
        let (id, marked) = (run.id.clone(), at.clone());
        let started = self
            .0
            .store
            .call(move |c| store::runs::set_running(c, &id, &marked))
            .await?;
        if !started {
            return Err(not_pending(&run));
        }
        active.attached.notify_one();
        run.status = RunStatus::Running;
        run.started_at = Some(at);
        Ok((run, container))
    }

    /// For the terminal: the run's process exited with `exit_code`. Recorded at once
    /// (`succeeded` or `failed`) unless the run was being stopped (a cancel or its
    /// timeout: the waiter records that) or had ended already. The waiter still removes
    /// the container and ends the output stream.
    pub async fn finish(&self, run_id: &str, exit_code: i64) -> Result<()> {
        if let Some(active) = self.0.hub.get(run_id) {
            if active.state().stopping.is_some() {
                return Ok(());
            }
        }
        let id = run_id.to_owned();
        let run = self
            .0
            .store
            .call(move |c| store::runs::by_id(c, &id))
            .await?
            .ok_or_else(|| Error::NotFound(format!("run `{run_id}` not found")))?;
        self.record_end(
            &run,
            Ending {
                status: if exit_code == 0 {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                },
                exit_code: Some(exit_code),
                error: None,
                at: clock::now(),
            },
        )
        .await;
        Ok(())
    }

    /// At start, before the API serves: runs a previous process left pending or running
    /// are recorded `interrupted`, and every run container of this installation is
    /// removed (none is this process's yet). An engine that does not answer leaves the
    /// containers to the sweep.
    pub async fn recover(&self) -> Result<()> {
        let left = self.0.store.call(|c| store::runs::active(c)).await?;
        for run in &left {
            tracing::warn!(run = %run.id, status = run.status.as_str(), "recording a run the daemon stopped during as interrupted");
            self.record_end(
                run,
                Ending {
                    status: RunStatus::Interrupted,
                    exit_code: None,
                    error: Some(
                        "interrupted: the daemon stopped while this run was in progress; its container was removed"
                            .to_owned(),
                    ),
                    at: clock::now(),
                },
            )
            .await;
        }
        match self.engine().await {
            Ok(_) => self.sweep().await,
            Err(err) => {
                tracing::warn!(error = %err, "the engine does not answer: the sweep will remove leftover run containers");
                Ok(())
            }
        }
    }

    /// Removes this installation's run containers that no run of this process owns.
    pub async fn sweep(&self) -> Result<()> {
        let engine = self.engine().await?;
        let containers = engine
            .containers_matching(
                &Filter::new()
                    .installation(&self.0.installation)
                    .kind(Kind::Run),
            )
            .await?;
        for container in containers {
            let owned = labels::get(&container.labels, Key::Run)
                .is_some_and(|run_id| self.0.hub.is_active(run_id));
            if !owned {
                tracing::info!(container = %container.name, "removing a run container no run owns");
                if let Err(err) = engine
                    .stop_and_remove(&container.id, Duration::from_secs(1))
                    .await
                {
                    tracing::warn!(container = %container.name, error = %err, "removing an orphan run container");
                }
            }
        }
        Ok(())
    }

    /// The sweep every `SWEEP_EVERY` until `stopped`; then every run still going is
    /// recorded `interrupted` and its container removed, so a stopped daemon leaves no
    /// run behind whose timeout nobody enforces.
    pub async fn run_sweeper(self, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                () = &mut stopped => break,
            }
            if let Err(err) = self.sweep().await {
                tracing::debug!(error = %err, "sweeping run containers");
            }
        }
        self.stop_all().await;
    }

    /// Ends every run this process waits on as `interrupted` and removes its container.
    async fn stop_all(&self) {
        let active = self.0.hub.all();
        let stops = active.into_iter().map(|(run_id, run)| async move {
            run.state().stopping.get_or_insert(RunStatus::Interrupted);
            let id = run_id.clone();
            let Ok(Some(stored)) = self
                .0
                .store
                .call(move |c| store::runs::by_id(c, &id))
                .await
            else {
                return;
            };
            self.record_end(
                &stored,
                Ending {
                    status: RunStatus::Interrupted,
                    exit_code: None,
                    error: Some("interrupted: the daemon stopped while this run was in progress".to_owned()),
                    at: clock::now(),
                },
            )
            .await;
            if let Some(container) = &stored.container_id {
                let grace = Duration::from_secs(self.0.config.runs.stop_grace_secs);
                if let Err(err) = self.0.runtime.stop_and_remove(container, grace).await {
                    tracing::warn!(run = %run_id, error = %err, "removing a run's container at shutdown");
                }
            }
            self.0.hub.release(&run_id);
        });
        futures_util::future::join_all(stops).await;
    }
}

fn already_over(run: &Run) -> Error {
    Error::Conflict(format!(
        "run `{}` is already {}; only pending or running runs can be canceled",
        run.id,
        run.status.as_str()
    ))
}
