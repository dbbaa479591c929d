//! The waiter: one task per run, from its start to its end. It waits for an interactive
//! run's terminal (or gives up after `ATTACH_WITHIN`), copies the container's output into
//! the store and then to live followers, stops the container when the timeout runs out or
//! a cancel comes (SIGTERM, SIGKILL after `runs.stop_grace_secs`), records how the run
//! ended and removes the container.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;

use crate::{
    clock,
    runtime::OutputStream,
    store::{
        self,
        runs::{Ending, OutputCap},
    },
};

use super::{ActiveRun, Attach, Run, RunLine, RunStatus, RunStream, Runs, ATTACH_WITHIN};

/// Output lines are stored in batches (one transaction each), so a chatty command does
/// not cost an fsync per line: at most this many lines...
const BATCH_LINES: usize = 200;
/// ...or what arrived within this long after the batch's first line.
const BATCH_WAIT: Duration = Duration::from_millis(100);
/// A longer line is cut here (the engine itself splits lines at 16 KiB).
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long the waiter waits for the output after the container stopped; the engine ends
/// the stream when the container stops, so this only bounds a stream it never ends.
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);
/// How often the waiter looks whether a terminal started an interactive run's container.
const START_POLL: Duration = Duration::from_millis(50);
/// How long a terminal that attached has to start the container.
const START_WITHIN: Duration = Duration::from_secs(30);

impl Runs {
    /// Runs until the run is over, whatever happens; never panics the daemon.
    pub(super) async fn wait_for_end(self, run: Run, container_id: String, active: Arc<ActiveRun>) {
        if run.interactive && !self.wait_for_terminal(&run, &container_id, &active).await {
            return;
        }
        let engine = self.0.runtime.clone();
        // The timeout counts from the start: a plain run is running already, an
        // interactive one has just been started by its terminal.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(run.timeout_secs);
        let output = tokio::spawn(
            self.clone()
                .copy_output(run.id.clone(), container_id.clone()),
        );
        let exit = tokio::select! {
            exit = engine.wait(&container_id) => exit,
            () = tokio::time::sleep_until(deadline) => {
                self.stop(&active, RunStatus::TimedOut, &container_id).await
            }
            () = active.cancel.notified() => {
                self.stop(&active, RunStatus::Canceled, &container_id).await
            }
        };
        if tokio::time::timeout(OUTPUT_DRAIN, output).await.is_err() {
            tracing::warn!(run = %run.id, "the run's output did not end with its container");
        }
        let stopping = active.state().stopping;
        let grace = self.0.config.runs.stop_grace_secs;
        let ending = match (stopping, exit) {
            (Some(RunStatus::TimedOut), exit) => Ending {
                status: RunStatus::TimedOut,
                exit_code: exit.ok(),
                error: Some(format!(
                    "timed out after {} s: stopped with SIGTERM, then SIGKILL after {grace} s",
                    run.timeout_secs
                )),
                at: clock::now(),
            },
            (Some(status), exit) => Ending {
                status,
                exit_code: exit.ok(),
                error: Some(format!(
                    "canceled: stopped with SIGTERM, then SIGKILL after {grace} s"
                )),
                at: clock::now(),
            },
            (None, Ok(code)) => Ending {
                status: if code == 0 {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                },
                exit_code: Some(code),
                error: None,
                at: clock::now(),
            },
            (None, Err(err)) => Ending {
                status: RunStatus::Failed,
                exit_code: None,
                error: Some(format!("the run's container was lost: {err}")),
                at: clock::now(),
            },
        };
        tracing::info!(run = %run.id, status = ending.status.as_str(), exit_code = ?ending.exit_code, "a run ended");
        self.record_end(&run, ending).await;
        if let Err(err) = engine
            .stop_and_remove(&container_id, Duration::from_secs(1))
            .await
        {
            tracing::warn!(run = %run.id, error = %err, "removing a finished run's container");
        }
        self.0.hub.release(&run.id);
    }

    /// Marks why the run stops (the first reason stands), then stops its container:
    /// SIGTERM, SIGKILL after the grace period. Returns the exit code.
    async fn stop(
        &self,
        active: &ActiveRun,
        why: RunStatus,
        container_id: &str,
    ) -> Result<i64, crate::runtime::RuntimeError> {
        active.state().stopping.get_or_insert(why);
        let engine = &self.0.runtime;
        if let Err(err) = engine
            .stop(container_id, self.0.config.runs.stop_grace_secs)
            .await
        {
            tracing::warn!(container = %container_id, error = %err, "stopping a run's container");
        }
        engine.wait(container_id).await
    }

    /// An interactive run waits for its terminal: true once a terminal attached and
    /// started the container; false when the run ended before (nobody attached within
    /// `ATTACH_WITHIN`, a cancel, or a terminal that never started it), recorded here.
    async fn wait_for_terminal(&self, run: &Run, container_id: &str, active: &ActiveRun) -> bool {
        let why = tokio::select! {
            () = active.attached.notified() => None,
            () = active.cancel.notified() => Some("canceled before a terminal attached".to_owned()),
            () = tokio::time::sleep(ATTACH_WITHIN) => Some(format!(
                "canceled: no terminal attached within {} s", ATTACH_WITHIN.as_secs()
            )),
        };
        let why = match why {
            Some(why) => {
                let mut state = active.state();
                // An attach that won the race stands.
                if state.attach == Attach::Attached {
                    None
                } else {
                    state.attach = Attach::Expired;
                    Some(why)
                }
            }
            None => None,
        };
        let why = match why {
            Some(why) => Some(why),
            None => self.wait_until_started(container_id, active).await.err(),
        };
        let Some(why) = why else { return true };
        self.record_end(
            run,
            Ending {
                status: RunStatus::Canceled,
                exit_code: None,
                error: Some(why),
                at: clock::now(),
            },
        )
        .await;
        let _ = self
            .0
            .runtime
            .stop_and_remove(container_id, Duration::from_secs(1))
            .await;
        self.0.hub.release(&run.id);
        false
    }

    /// Waits until the terminal has started the container. The engine's wait answers at
    /// once for a container that was never started, so it is only asked once this says
    /// the container has run. Err with why when it never starts, or on a cancel.
    async fn wait_until_started(
        &self,
        container_id: &str,
        active: &ActiveRun,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        loop {
            match self.0.runtime.inspect(container_id).await {
                Ok(status) if status.running || has_started(status.started_at.as_deref()) => {
                    return Ok(())
                }
                Ok(_) => {}
                Err(err) => return Err(format!("the run's container was lost: {err}")),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "canceled: the terminal attached but did not start the run within {} s",
                    START_WITHIN.as_secs()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(START_POLL) => {}
                () = active.cancel.notified() => {
                    return Err("canceled before the terminal started the run".to_owned())
                }
            }
        }
    }

    /// Copies the container's output into the store, then to live followers, in batches,
    /// until the container stops.
    async fn copy_output(self, run_id: String, container_id: String) {
        let mut lines = self.0.runtime.follow_logs(&container_id, 0);
        let id = run_id.clone();
        let mut next_seq = self
            .0
            .store
            .call(move |c| store::runs::last_output_seq(c, &id))
            .await
            .unwrap_or(0)
            + 1;
        let cap = OutputCap {
            max_lines: self.0.config.runs.output_max_lines,
            max_bytes: self.0.config.runs.output_max_bytes,
        };
        let mut ended = false;
        while !ended {
            let Some(first) = lines.next().await else {
                break;
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH_LINES {
                match tokio::time::timeout_at(deadline, lines.next()).await {
                    Ok(Some(item)) => batch.push(item),
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut stored = Vec::with_capacity(batch.len());
            for item in batch {
                match item {
                    Ok(line) => {
                        stored.push(RunLine {
                            seq: next_seq,
                            at: clock::format_nanos(line.at_ns),
                            stream: match line.stream {
                                OutputStream::Stdout => RunStream::Stdout,
                                OutputStream::Stderr => RunStream::Stderr,
                            },
                            line: cut(line.text),
                        });
                        next_seq += 1;
                    }
                    Err(err) => {
                        tracing::warn!(run = %run_id, error = %err, "following a run's output");
                        ended = true;
                        break;
                    }
                }
            }
            let (id, written) = (run_id.clone(), stored.clone());
            if let Err(err) = self
                .0
                .store
                .write(move |tx| store::runs::append_output(tx, &id, &written, cap))
                .await
            {
                tracing::error!(run = %run_id, error = %err, "storing a run's output");
            }
            for line in stored {
                self.0.hub.live.publish(&run_id, line);
            }
        }
    }

    /// Records how a run ended (unless an ending was recorded first), then prunes the
    /// project's finished runs beyond its history.
    pub(super) async fn record_end(&self, run: &Run, ending: Ending) {
        let (id, project_id) = (run.id.clone(), run.project_id.clone());
        let keep = self.0.config.runs.history_per_project;
        let result = self
            .0
            .store
            .call(move |c| {
                store::runs::finish(c, &id, &ending)?;
                store::runs::prune_history(c, &project_id, keep)
            })
            .await;
        if let Err(err) = result {
            tracing::error!(run = %run.id, error = %err, "recording a run's end");
        }
    }
}

/// Whether the engine's start time says the container has run: one never started
/// reports the zero time (`0001-01-01T00:00:00Z`).
fn has_started(started_at: Option<&str>) -> bool {
    started_at.is_some_and(|at| !at.is_empty() && !at.starts_with("0001-"))
}

/// A line cut to `MAX_LINE_BYTES` at a character boundary.
fn cut(mut line: String) -> String {
    if line.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str(" [line cut]");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        assert_eq!(cut("short".to_owned()), "short");
        let long = "é".repeat(MAX_LINE_BYTES);
        let was_cut = cut(long);
        assert!(was_cut.ends_with(" [line cut]"));
        assert!(was_cut.len() <= MAX_LINE_BYTES + " [line cut]".len());
    }

    #[test]
    fn a_container_never_started_reports_the_zero_time() {
        assert!(!has_started(None));
        assert!(!has_started(Some("0001-01-01T00:00:00Z")));
        assert!(!has_started(Some("")));
        assert!(has_started(Some("2026-01-02T03:04:05.6Z")));
    }
}
