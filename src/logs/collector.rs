//! The log collector: one follower task per running instance reads its output from Docker,
//! the edge hands over access records, and one writer stores both in batches, publishes
//! them to live followers, and keeps every project under its cap.
//! Invariant: a container stream is followed by at most one task, which resumes after the
//! last line it (or, after a restart, the store) has seen, so no line is stored twice; lines
//! reach live followers only after they are stored.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::{
    clock,
    edge::{AccessLogSink, AccessRecord},
    labels::{Filter, Labels},
    live::Topics,
    runtime::{ContainerLogLine, OutputStream},
    store::{self, Store},
};

use super::{LogStream, Logs, NewLine, ReadPosition, RuntimeLine};

/// Lines waiting for the writer. When full, followers wait, and so does their read from
/// Docker, which keeps the output in its own log meanwhile: nothing is lost, only later.
const LINE_QUEUE: usize = 20_000;
/// Access-record batches waiting for the writer (the edge sends up to 256 records a batch).
/// When full, the edge drops batches rather than wait.
const ACCESS_QUEUE: usize = 512;
/// The most lines stored in one transaction.
const MAX_BATCH: usize = 2_000;
/// How long the writer gathers lines before storing them, so a chatty app costs one
/// transaction (one fsync) per interval rather than one per line.
const BATCH_WAIT: Duration = Duration::from_millis(100);
/// How often lines past the age limit are dropped, at most: a short `max_age` is checked
/// more often (`age_prune_interval`).
const AGE_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A project over its byte cap is pruned to this fraction of it, so pruning runs once in a
/// while rather than after every batch.
const PRUNE_TO_PERCENT: u64 = 90;
/// Live lines kept per project for followers that are a little behind; past it they catch
/// up from the store.
const LIVE_BUFFER: usize = 4096;

/// The writer's two queues: container lines, and the edge's access-record batches.
type Receivers = (mpsc::Receiver<NewLine>, mpsc::Receiver<Vec<AccessRecord>>);

/// The collector's shared half, held by the `Logs` handle.
pub(super) struct LogCollector {
    /// The writer's queue of container lines (the handle's tests feed it directly).
    pub(super) lines: mpsc::Sender<NewLine>,
    access_sink: AccessLogSink,
    receivers: Mutex<Option<Receivers>>,
    /// Containers with a follower task, so a container is never followed twice.
    followed: Mutex<HashSet<String>>,
    /// Flipped on shutdown; followers stop reading.
    stopping: watch::Sender<bool>,
    /// Stored lines, per project, for live followers.
    pub live: Topics<Arc<RuntimeLine>>,
}

impl std::fmt::Debug for LogCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCollector").finish_non_exhaustive()
    }
}

impl Default for LogCollector {
    fn default() -> Self {
        let (lines, lines_rx) = mpsc::channel(LINE_QUEUE);
        let (access_sink, access_rx) = AccessLogSink::channel(ACCESS_QUEUE);
        Self {
            lines,
            access_sink,
            receivers: Mutex::new(Some((lines_rx, access_rx))),
            followed: Mutex::new(HashSet::new()),
            stopping: watch::Sender::new(false),
            live: Topics::new(LIVE_BUFFER),
        }
    }
}

impl LogCollector {
    /// Where the edge sends access records.
    pub fn access_log_sink(&self) -> AccessLogSink {
        self.access_sink.clone()
    }

    /// Marks a container as followed; false when a follower already has it.
    fn claim(&self, container_id: &str) -> bool {
        self.followed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container_id.to_owned())
    }

    fn release(&self, container_id: &str) {
        self.followed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(container_id);
    }
}

/// An instance container and the tags of its lines.
#[derive(Debug, Clone)]
pub struct StartedContainer {
    pub id: String,
    pub project_id: String,
    /// The instance id as `GET /v1/projects/:id/instances` shows it (`instance_id`).
    pub instance: String,
    /// The process type (`cantila.process`: `web`, `worker`, ...).
    pub process: String,
    /// The preview it runs (`cantila.preview`); `None` for production.
    pub preview_id: Option<String>,
    /// The service it runs (`cantila.service`); `None` for the app's instances.
    pub service: Option<String>,
}

impl StartedContainer {
    /// The instance (or service container) of a listed container, when it is one of this
    /// installation's.
    fn of(container: &crate::runtime::ContainerSummary, installation: &str) -> Option<Self> {
        let labels = Labels::parse(&container.labels);
        if labels.installation.as_deref() != Some(installation) {
            return None;
        }
        if labels.kind == Some(crate::labels::Kind::Service) {
            // A service's lines carry its name; `process` says `service`.
            return Some(Self {
                id: container.id.clone(),
                project_id: labels.project?,
                instance: instance_id(&container.id),
                process: crate::labels::Kind::Service.as_str().to_owned(),
                preview_id: None,
                service: labels.service,
            });
        }
        labels.instance.as_ref()?;
        Some(Self {
            id: container.id.clone(),
            project_id: labels.project?,
            instance: instance_id(&container.id),
            // `cantila.process` names the Procfile type; older web instances carry only
            // `cantila.kind=web`.
            process: labels
                .process
                .or_else(|| labels.kind.map(|kind| kind.as_str().to_owned()))
                .unwrap_or_else(|| "web".to_owned()),
            preview_id: labels.preview,
            service: None,
        })
    }
}

/// An instance's id in the API: the first 12 characters of its container id, as Docker
/// shows it.
pub fn instance_id(container_id: &str) -> String {
    container_id.chars().take(12).collect()
}

impl Logs {
    /// Starts following a container that was just started (a no-op when it is followed).
    pub fn follow_started(&self, container: StartedContainer) {
        if !self.collector.claim(&container.id) {
            return;
        }
        let logs = self.clone();
        tokio::spawn(async move {
            let id = container.id.clone();
            logs.follow_container(container).await;
            logs.collector.release(&id);
        });
    }

    /// Follows every running instance of this installation that has no follower: at
    /// start-up (resuming where the store left off) and on each reconciler pass (instances
    /// Docker restarted, or started while the daemon was down).
    pub async fn follow_running(&self) -> crate::error::Result<()> {
        self.runtime.ready().await?;
        let containers = self
            .runtime
            .containers_matching(&Filter::new().installation(&self.installation))
            .await
            .map_err(crate::error::Error::from)?;
        for container in containers {
            if container.state != "running" {
                continue;
            }
            if let Some(started) = StartedContainer::of(&container, &self.installation) {
                self.follow_started(started);
            }
        }
        Ok(())
    }
}

/// Decides which lines of a re-read stream are new: those after the stored position.
/// Docker's `since` has whole-second precision, so a resumed read starts a little early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    last_ns: i64,
    /// Lines with exactly `last_ns` already taken.
    lines_at_last: i64,
    /// Lines with exactly `last_ns` seen in the current read.
    seen_at_last: i64,
}

impl Resume {
    fn new(position: Option<(i64, i64)>) -> Self {
        let (last_ns, lines_at_last) = position.unwrap_or((i64::MIN, 0));
        Self {
            last_ns,
            lines_at_last,
            seen_at_last: 0,
        }
    }

    /// Starts a new read of the stream from its beginning (or `since`).
    fn restart(&mut self) {
        self.seen_at_last = 0;
    }

    /// Whether a line with this timestamp is new; if so, it becomes the position.
    fn admit(&mut self, at_ns: i64) -> bool {
        if at_ns < self.last_ns {
            return false;
        }
        if at_ns == self.last_ns {
            self.seen_at_last += 1;
            if self.seen_at_last <= self.lines_at_last {
                return false;
            }
            self.lines_at_last += 1;
            return true;
        }
        self.last_ns = at_ns;
        self.lines_at_last = 1;
        self.seen_at_last = 1;
        true
    }
}

impl Logs {
    /// Reads one container until it stops for good (or the daemon stops), re-reading after
    /// an engine hiccup or a quick restart; every line goes to the writer once.
    async fn follow_container(&self, container: StartedContainer) {
        let id = container.id.clone();
        let positions = self
            .lines
            .call(move |c| {
                Ok((
                    store::runtime_logs::read_position(c, &id, LogStream::Stdout)?,
                    store::runtime_logs::read_position(c, &id, LogStream::Stderr)?,
                ))
            })
            .await;
        let Ok((stdout, stderr)) = positions else {
            tracing::warn!(container = %container.id, "cannot read the log position; not following");
            return;
        };
        let mut resume = [Resume::new(stdout), Resume::new(stderr)];
        let mut stopping = self.collector.stopping.subscribe();
        tracing::debug!(container = %container.id, instance = %container.instance, "following instance output");
        loop {
            // Both streams come in one read; start at the older position (a stream never read
            // yet means from the start).
            let since_ns = resume.iter().map(|r| r.last_ns).min().unwrap_or(i64::MIN);
            let since_secs = if since_ns == i64::MIN {
                0
            } else {
                since_ns.div_euclid(1_000_000_000)
            };
            for r in &mut resume {
                r.restart();
            }
            let mut lines = self.runtime.follow_logs(&container.id, since_secs);
            loop {
                let next = tokio::select! {
                    next = lines.next() => next,
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                let Some(next) = next else { break };
                let line = match next {
                    Ok(line) => line,
                    Err(err) => {
                        tracing::debug!(container = %container.id, error = %err, "log stream ended with an error");
                        break;
                    }
                };
                if let Some(new_line) = admit(&container, &mut resume, line) {
                    if self.collector.lines.send(new_line).await.is_err() {
                        return;
                    }
                }
            }
            // The stream ends when the container stops. It may be back already (a restart by
            // Docker); otherwise the reconciler follows it again when it is.
            tokio::time::sleep(Duration::from_millis(200)).await;
            match self.runtime.inspect(&container.id).await {
                Ok(status) if status.running => continue,
                Ok(_) | Err(_) => return,
            }
        }
    }
}

/// The line to store for what Docker gave, or `None` when it was stored before.
fn admit(
    container: &StartedContainer,
    resume: &mut [Resume; 2],
    line: ContainerLogLine,
) -> Option<NewLine> {
    let (slot, stream) = match line.stream {
        OutputStream::Stdout => (0, LogStream::Stdout),
        OutputStream::Stderr => (1, LogStream::Stderr),
    };
    let position = &mut resume[slot];
    if !position.admit(line.at_ns) {
        return None;
    }
    Some(NewLine {
        project_id: container.project_id.clone(),
        at_ns: line.at_ns,
        instance: container.instance.clone(),
        process: container.process.clone(),
        stream,
        text: line.text,
        preview_id: container.preview_id.clone(),
        service: container.service.clone(),
        position: Some(ReadPosition {
            container_id: container.id.clone(),
            last_ns: position.last_ns,
            lines_at_last: position.lines_at_last,
        }),
    })
}

fn access_line(record: AccessRecord) -> NewLine {
    NewLine {
        text: record.line(),
        project_id: record.project_id,
        preview_id: record.preview_id,
        service: None,
        at_ns: record.at_ns,
        instance: "edge".to_owned(),
        process: "edge".to_owned(),
        stream: LogStream::Edge,
        position: None,
    }
}

/// The writer: batches lines into the store, publishes them, enforces the caps. Also
/// starts following what is already running. Ends when `stopped` completes, after storing
/// what was already handed over. It gets only the logs service's handle.
pub async fn run(logs: Logs, stopped: impl Future<Output = ()>) {
    let Some((mut lines, mut access)) = logs
        .collector
        .receivers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    // One connection for everything (`Logs::lines`): a second one would let a log batch
    // commit between the read and the write of another transaction, which SQLite answers
    // with SQLITE_BUSY. The writer keeps its transactions short instead (batches, pruning
    // in chunks).
    let startup = logs.clone();
    tokio::spawn(async move {
        if startup.runtime.ready().await.is_ok() {
            if let Err(err) = startup.follow_running().await {
                tracing::warn!(error = %err, "following running instances at start-up");
            }
        }
    });
    tokio::pin!(stopped);
    let mut age_prune = tokio::time::interval(age_prune_interval(logs.config.max_age()));
    let mut batch: Vec<NewLine> = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            received = lines.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 { break; }
            }
            Some(records) = access.recv() => batch.extend(records.into_iter().map(access_line)),
            _ = age_prune.tick() => {
                logs.prune_by_age().await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                received = lines.recv_many(&mut batch, room) => {
                    if received == 0 { break; }
                }
                // A batch of the edge is never split: the transaction may go a little past
                // MAX_BATCH rather than store one batch in two.
                Some(records) = access.recv() => batch.extend(records.into_iter().map(access_line)),
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        logs.store_batch(std::mem::take(&mut batch)).await;
    }
    logs.collector.stopping.send_replace(true);
    while let Ok(line) = lines.try_recv() {
        batch.push(line);
    }
    while let Ok(records) = access.try_recv() {
        batch.extend(records.into_iter().map(access_line));
    }
    if !batch.is_empty() {
        logs.store_batch(batch).await;
    }
}

impl Logs {
    async fn store_batch(&self, batch: Vec<NewLine>) {
        let cap = self.config.max_bytes_per_project;
        let count = batch.len();
        let appended = match self
            .lines
            .call(move |c| store::runtime_logs::append(c, batch, cap))
            .await
        {
            Ok(appended) => appended,
            Err(err) => {
                // The read positions were not advanced either: after a restart the container
                // lines are read again. Edge lines of this batch are lost; say so.
                tracing::error!(error = %err, lines = count, "storing runtime log lines");
                return;
            }
        };
        let live = &self.collector.live;
        let mut listening: HashMap<String, bool> = HashMap::new();
        for line in appended.lines {
            let heard = *listening
                .entry(line.project_id.clone())
                .or_insert_with(|| live.has_subscribers(&line.project_id));
            if heard {
                let project_id = line.project_id.clone();
                live.publish(&project_id, Arc::new(line));
            }
        }
        let target = cap / 100 * PRUNE_TO_PERCENT;
        for project_id in appended.over_cap {
            let id = project_id.clone();
            match prune_to(&self.lines, id, target).await {
                Ok(dropped) => {
                    tracing::debug!(project = %project_id, dropped, "runtime logs over the size cap; dropped the oldest lines")
                }
                Err(err) => {
                    tracing::warn!(project = %project_id, error = %err, "pruning runtime logs")
                }
            }
        }
    }
}

/// Prunes a project to `target` bytes one chunk per store call, so requests waiting for the
/// store get their turn between chunks.
async fn prune_to(store: &Store, project_id: String, target: u64) -> crate::error::Result<u64> {
    let mut total = 0;
    loop {
        let id = project_id.clone();
        let dropped = store
            .call(move |c| store::runtime_logs::prune_chunk(c, &id, target))
            .await?;
        if dropped == 0 {
            return Ok(total);
        }
        total += dropped;
        tokio::task::yield_now().await;
    }
}

impl Logs {
    async fn prune_by_age(&self) {
        let store = &self.lines;
        let cutoff = clock::now_nanos() - self.config.max_age().as_nanos() as i64;
        let result = async {
            let projects = store
                .call(|c| store::runtime_logs::projects_with_lines(c))
                .await?;
            let mut dropped = 0;
            for project_id in projects {
                loop {
                    let id = project_id.clone();
                    let went = store
                        .call(move |c| store::runtime_logs::prune_old_chunk(c, &id, cutoff))
                        .await?;
                    if went == 0 {
                        break;
                    }
                    dropped += went;
                    tokio::task::yield_now().await;
                }
            }
            store
                .call(move |c| store::runtime_logs::forget_positions_before(c, cutoff))
                .await?;
            Ok::<_, crate::error::Error>(dropped)
        };
        match result.await {
            Ok(0) => {}
            Ok(dropped) => tracing::debug!(dropped, "dropped runtime log lines past the age limit"),
            Err(err) => tracing::warn!(error = %err, "pruning old runtime logs"),
        }
        self.collector.live.close_unheard();
        let dropped = self.collector.access_sink.dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "edge access-log records dropped so far because the log writer was behind"
            );
        }
    }
}

/// How often lines past `max_age` are dropped: every minute, or every quarter of the
/// window when that is shorter (never under a second), so a line outlives a short window
/// by a quarter of it at most rather than by up to a minute.
fn age_prune_interval(max_age: Duration) -> Duration {
    (max_age / 4).clamp(Duration::from_secs(1), AGE_PRUNE_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_windows_are_pruned_more_often() {
        for (max_age_secs, expected_secs) in [
            (7 * 86_400, 60),
            (600, 60),
            (240, 60),
            (120, 30),
            (20, 5),
            (3, 1),
            (1, 1),
        ] {
            assert_eq!(
                age_prune_interval(Duration::from_secs(max_age_secs)),
                Duration::from_secs(expected_secs),
                "max_age {max_age_secs} s"
            );
        }
    }

    #[test]
    fn a_resumed_read_skips_exactly_what_was_stored() {
        // Stored: lines at t=5 (two of them). The re-read starts at t=0 and sees 3, 5, 5, 5, 7.
        let mut resume = Resume::new(Some((5, 2)));
        resume.restart();
        let admitted: Vec<bool> = [3, 5, 5, 5, 7, 7]
            .iter()
            .map(|t| resume.admit(*t))
            .collect();
        assert_eq!(admitted, vec![false, false, false, true, true, true]);
        assert_eq!((resume.last_ns, resume.lines_at_last), (7, 2));

        // A fresh stream takes everything, including repeated timestamps.
        let mut fresh = Resume::new(None);
        let admitted: Vec<bool> = [1, 1, 2].iter().map(|t| fresh.admit(*t)).collect();
        assert_eq!(admitted, vec![true, true, true]);

        // Reading again after a hiccup, from the in-memory position: nothing twice.
        fresh.restart();
        let again: Vec<bool> = [1, 1, 2, 3].iter().map(|t| fresh.admit(*t)).collect();
        assert_eq!(again, vec![false, false, false, true]);
    }
}
