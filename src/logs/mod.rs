//! Runtime logs: what a project's instances write to stdout and stderr, and the edge's
//! access lines for it, tagged with instance, process type, stream, time and the preview
//! they belong to (none for production); kept under a per-project cap (bytes and age) that
//! drops the oldest first; read by time window and filters, or followed live. `collector`
//! follows the containers and writes the lines. `Logs` is the service's handle: the stores,
//! the runtime, the collector's shared half and the `[logs]` section, nothing else.
//! Invariants: a line is stored once (a daemon restart resumes each container stream after
//! its last stored line) and published only after it is stored; a read shows production's
//! lines or one preview's, never both.

pub mod collector;
#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    config::LogsConfig,
    edge::AccessLogSink,
    error::{Error, Result},
    live,
    model::account::Actor,
    runtime::Runtime,
    store::{self, Store},
};

pub use crate::model::logs::{
    LineFilter, LogStream, NewLine, ReadPosition, RuntimeLine, LINE_OVERHEAD_BYTES,
};
pub use collector::{instance_id, StartedContainer};

use collector::LogCollector;

/// The logs service: a cheap-clone handle to what reading, following and collecting
/// runtime logs use. Background tasks (the writer, the followers) hold a clone of it.
#[derive(Clone)]
pub struct Logs {
    /// All desired state: the projects and previews a read is checked against.
    store: Store,
    /// `logs.db` (`Store::open_logs`), another file than `store`'s: a chatty app's
    /// batches, prunes and vacuums queue on this connection and lock that file only, so API
    /// requests on `store` never wait behind them.
    lines: Store,
    /// A second connection to `logs.db` for reads (API log pages, follows): in WAL mode
    /// they run beside the writer instead of queueing behind its batches and prunes.
    reads: Store,
    /// Where instance output is read from; it connects on first use.
    runtime: Runtime,
    /// This installation's id: only its own containers are followed.
    installation: Arc<str>,
    /// The `[logs]` section: caps and the age limit.
    config: Arc<LogsConfig>,
    /// Followers of instance output, the edge's access-log sink, the writer's queue and
    /// live followers of stored lines.
    collector: Arc<LogCollector>,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs")
            .field("installation", &self.installation)
            .finish_non_exhaustive()
    }
}

impl Logs {
    /// The service over `store` (desired state) and `lines` (`logs.db`, where the lines
    /// are written; reads get a connection of their own to it).
    pub fn new(
        store: Store,
        lines: Store,
        runtime: Runtime,
        installation: &str,
        config: LogsConfig,
    ) -> Self {
        let reads = lines.companion().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "a read connection to logs.db; reads share the writer's");
            lines.clone()
        });
        Self {
            store,
            lines,
            reads,
            runtime,
            installation: Arc::from(installation),
            config: Arc::new(config),
            collector: Arc::new(LogCollector::default()),
        }
    }

    /// Where the edge sends access records.
    pub fn access_log_sink(&self) -> AccessLogSink {
        self.collector.access_log_sink()
    }
}

/// A validated read: a time window, filters and a line limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub filter: LineFilter,
    pub limit: u32,
}

/// The forms `since` and `until` accept, for error messages.
const TIME_FORMS: &str = "an RFC 3339 time such as 2026-01-02T15:04:05Z, or a relative window such as 30s, 10m, 2h, 1d or 1w (seconds, minutes, hours, days, weeks before now)";

/// Parses `since` or `until` (named `parameter` in the error) to nanoseconds since the
/// epoch: an RFC 3339 time, or a window before `now_ns`.
pub fn parse_time_bound(parameter: &str, value: &str, now_ns: i64) -> Result<i64> {
    let value = value.trim();
    // Relative windows use the one duration parser every endpoint shares.
    if let Ok(window) = crate::duration::parse_offset(value) {
        return Ok(now_ns - window.as_nanos() as i64);
    }
    crate::clock::parse_nanos(value).ok_or_else(|| {
        Error::BadRequest(format!(
            "`{parameter}` must be {TIME_FORMS}; got `{}`",
            value.chars().take(64).collect::<String>()
        ))
    })
}

/// Instance ids are Cantila's own short labels or `edge`; anything else matches nothing, so
/// a value outside that charset is refused rather than searched for.
pub fn parse_instance(value: &str) -> Result<String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(Error::BadRequest(format!(
            "`instance` must be an instance id as `GET /v1/projects/:id/instances` or a log line shows it (letters, digits, `-`, `_`), or `edge`; got `{}`",
            value.chars().take(64).collect::<String>()
        )))
    }
}

pub fn parse_stream(value: &str) -> Result<LogStream> {
    LogStream::parse(value).ok_or_else(|| {
        Error::BadRequest(format!(
            "`stream` must be one of stdout, stderr, edge; got `{}`",
            value.chars().take(64).collect::<String>()
        ))
    })
}

/// The longest `q` accepted.
pub const MAX_QUERY_CHARS: usize = 256;

pub fn parse_contains(value: &str) -> Result<String> {
    if value.is_empty() || value.chars().count() > MAX_QUERY_CHARS {
        return Err(Error::BadRequest(format!(
            "`q` must be 1 to {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(value.to_owned())
}

/// One page of a read.
#[derive(Debug)]
pub struct LogPage {
    pub lines: Vec<RuntimeLine>,
    /// Older lines in the window matched but were left out by the limit.
    pub truncated: bool,
}

/// Fails with 404 unless the project is the actor's and, when the filter names a preview,
/// the preview is one of that project's (another's answers exactly like a missing one, with
/// the words `projects` and `previews` use). The preview row is read from the store: logs
/// sit below the previews service.
async fn check_target(
    store: &Store,
    actor: &Actor,
    project_id: &str,
    filter: &LineFilter,
) -> Result<()> {
    let account_id = actor.account_id.clone();
    let project_id = project_id.to_owned();
    let preview_id = filter.preview_id.clone();
    store
        .call(move |c| {
            if store::projects::by_id(c, &account_id, &project_id)?.is_none() {
                return Err(Error::NotFound(format!("project `{project_id}` not found")));
            }
            if let Some(preview_id) = preview_id {
                if store::previews::by_id(c, &project_id, &preview_id)?.is_none() {
                    return Err(Error::NotFound(format!("preview `{preview_id}` not found")));
                }
            }
            Ok(())
        })
        .await
}

impl Logs {
    /// The newest `limit` lines of the window that pass the filter, oldest first.
    pub async fn read(
        &self,
        actor: &Actor,
        project_id: String,
        query: LogQuery,
    ) -> Result<LogPage> {
        check_target(&self.store, actor, &project_id, &query.filter).await?;
        let (lines, truncated) = self
            .reads
            .call(move |c| {
                store::runtime_logs::newest(
                    c,
                    &project_id,
                    query.since_ns,
                    query.until_ns,
                    &query.filter,
                    query.limit,
                )
            })
            .await?;
        Ok(LogPage { lines, truncated })
    }
}

/// Lines read per store call while replaying or catching up.
const REPLAY_CHUNK: u32 = 1000;

/// Where a followed stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowFrom {
    /// The page a plain read would return, then new lines.
    Window,
    /// Every stored line after this id (an SSE `Last-Event-ID`), then new lines.
    After(i64),
}

impl Logs {
    /// Follows the project's lines live: first the replay `from` asks for, then every new
    /// line that passes the filter, each once and in order, until the receiver is dropped.
    pub async fn follow(
        &self,
        actor: &Actor,
        project_id: String,
        query: LogQuery,
        from: FollowFrom,
    ) -> Result<mpsc::Receiver<Arc<RuntimeLine>>> {
        check_target(&self.store, actor, &project_id, &query.filter).await?;
        // Subscribed before the window is read, so no line falls between the two.
        let early = self.collector.live.subscribe_or_open(&project_id);
        let (window, after) = match from {
            FollowFrom::After(after) => (Vec::new(), after),
            FollowFrom::Window => self.window_and_newest(&project_id, &query).await?,
        };
        let mut followed = self.followed_after(project_id, query.filter, after, early);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for line in window {
                if tx.send(Arc::new(line)).await.is_err() {
                    return;
                }
            }
            while let Some(line) = followed.recv().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// The page a plain read returns, and the newest stored line of any project: everything
    /// stored so far is either in the window or left out on purpose, so the live part
    /// starts after it.
    async fn window_and_newest(
        &self,
        project_id: &str,
        query: &LogQuery,
    ) -> Result<(Vec<RuntimeLine>, i64)> {
        let id = project_id.to_owned();
        let query = query.clone();
        self.reads
            .call(move |c| {
                let newest_overall = store::runtime_logs::last_seq(c)?;
                let (lines, _) = store::runtime_logs::newest(
                    c,
                    &id,
                    query.since_ns,
                    query.until_ns,
                    &query.filter,
                    query.limit,
                )?;
                Ok((lines, newest_overall))
            })
            .await
    }

    /// The project's stored lines after `after` that pass `filter`, then its live ones;
    /// `early` is the subscription taken before anything was read.
    fn followed_after(
        &self,
        project_id: String,
        filter: LineFilter,
        after: i64,
        early: tokio::sync::broadcast::Receiver<Arc<RuntimeLine>>,
    ) -> mpsc::Receiver<Arc<RuntimeLine>> {
        let fetch_store = self.reads.clone();
        let fetch_project = project_id.clone();
        let fetch_filter = filter.clone();
        let collector = self.collector.clone();
        let early = std::sync::Mutex::new(Some(early));
        live::replay_then_follow(live::FollowSource {
            fetch_after: move |after| {
                let store = fetch_store.clone();
                let project_id = fetch_project.clone();
                let filter = fetch_filter.clone();
                async move {
                    store
                        .call(move |c| {
                            store::runtime_logs::after(c, &project_id, after, &filter, REPLAY_CHUNK)
                        })
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .map(Arc::new)
                        .collect()
                }
            },
            subscribe: move || {
                // The first subscription is the one taken before the window was read.
                let taken = early.lock().unwrap_or_else(|p| p.into_inner()).take();
                Some(taken.unwrap_or_else(|| collector.live.subscribe_or_open(&project_id)))
            },
            keep: move |line: &Arc<RuntimeLine>| filter.matches(line),
            is_last: |_: &Arc<RuntimeLine>| false,
            after,
            _line: std::marker::PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_take_rfc_3339_or_a_relative_window() {
        let now = 1_000_000 * 1_000_000_000i64;
        let check = |input: &str, expected: Option<i64>| {
            assert_eq!(
                parse_time_bound("since", input, now).ok(),
                expected,
                "{input}"
            );
        };
        check("30s", Some(now - 30_000_000_000));
        check("10m", Some(now - 600_000_000_000));
        check("2h", Some(now - 7_200_000_000_000));
        check("1d", Some(now - 86_400_000_000_000));
        check("0s", Some(now));
        check("1970-01-01T00:00:01.5Z", Some(1_500_000_000));
        check("1970-01-01T01:00:00+01:00", Some(0));
        for bad in [
            "",
            "10",
            "m",
            "-5m",
            "5y",
            "1.5h",
            "10 m",
            "yesterday",
            "99999999999999d",
        ] {
            check(bad, None);
        }
        let message = parse_time_bound("since", "soon", now)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("RFC 3339") && message.contains("30s") && message.contains("`soon`"),
            "{message}"
        );
    }

    #[test]
    fn filters_match_like_the_sql() {
        let line = RuntimeLine {
            seq: 1,
            project_id: "prj".into(),
            at_ns: 0,
            instance: "abc123".into(),
            process: "web".into(),
            stream: LogStream::Stderr,
            text: "GET /health took 3ms".into(),
            preview_id: None,
            service: None,
        };
        let check = |filter: LineFilter, expected: bool| {
            assert_eq!(filter.matches(&line), expected, "{filter:?}");
        };
        check(LineFilter::default(), true);
        check(
            LineFilter {
                preview_id: None,
                instance: Some("abc123".into()),
                stream: Some(LogStream::Stderr),
                contains: Some("/health".into()),
                service: None,
            },
            true,
        );
        // Production's view never shows a preview's line, and a preview's only its own.
        check(
            LineFilter {
                preview_id: Some("prv_a".into()),
                ..LineFilter::default()
            },
            false,
        );
        let preview_line = RuntimeLine {
            preview_id: Some("prv_a".into()),
            ..line.clone()
        };
        assert!(!LineFilter::default().matches(&preview_line));
        assert!(LineFilter {
            preview_id: Some("prv_a".into()),
            ..LineFilter::default()
        }
        .matches(&preview_line));
        assert!(!LineFilter {
            preview_id: Some("prv_b".into()),
            ..LineFilter::default()
        }
        .matches(&preview_line));
        check(
            LineFilter {
                instance: Some("other".into()),
                ..LineFilter::default()
            },
            false,
        );
        check(
            LineFilter {
                stream: Some(LogStream::Stdout),
                ..LineFilter::default()
            },
            false,
        );
        check(
            LineFilter {
                contains: Some("/HEALTH".into()),
                ..LineFilter::default()
            },
            false,
        );
    }

    fn line(preview_id: Option<&str>, text: &str) -> NewLine {
        NewLine {
            project_id: "prj_a".into(),
            at_ns: crate::clock::now_nanos(),
            instance: "abc123".into(),
            process: "web".into(),
            stream: LogStream::Stdout,
            text: text.into(),
            preview_id: preview_id.map(Into::into),
            service: None,
            position: None,
        }
    }

    fn everything(preview_id: Option<&str>) -> LogQuery {
        LogQuery {
            since_ns: None,
            until_ns: None,
            filter: LineFilter {
                preview_id: preview_id.map(Into::into),
                ..LineFilter::default()
            },
            limit: 100,
        }
    }

    async fn next_text(lines: &mut mpsc::Receiver<Arc<RuntimeLine>>) -> String {
        tokio::time::timeout(std::time::Duration::from_secs(10), lines.recv())
            .await
            .expect("a line within 10 s")
            .expect("the stream is open")
            .text
            .clone()
    }

    /// The handle end to end on a real store and a fake runtime (no containers): reads
    /// show production's lines or one preview's, another account's project or preview
    /// answers 404, and a follower gets the window, then what the writer stores, filtered.
    #[tokio::test]
    async fn reads_and_follows_keep_to_the_callers_project_and_preview() {
        let dir = tempfile::tempdir().unwrap();
        let (store, alice, bob) = fixtures::two_accounts(dir.path());
        let runtime: Runtime = Arc::new(crate::runtime::fake::FakeRuntime::default());
        let lines = store.open_logs().unwrap();
        let logs = Logs::new(store, lines, runtime, "inst", LogsConfig::default());
        let batch = vec![line(None, "production"), line(Some("prv_a"), "preview")];
        logs.lines
            .call(move |c| store::runtime_logs::append(c, batch, u64::MAX))
            .await
            .unwrap();

        async fn read(
            logs: &Logs,
            actor: &Actor,
            project: &str,
            preview: Option<&str>,
        ) -> Result<Vec<String>> {
            let page = logs
                .read(actor, project.into(), everything(preview))
                .await?;
            Ok(page.lines.into_iter().map(|l| l.text).collect())
        }
        assert_eq!(
            read(&logs, &alice, "prj_a", None).await.unwrap(),
            ["production"]
        );
        assert_eq!(
            read(&logs, &alice, "prj_a", Some("prv_a")).await.unwrap(),
            ["preview"]
        );
        for (actor, project, preview, missing) in [
            (&bob, "prj_a", None, "project `prj_a`"),
            (&bob, "prj_a", Some("prv_a"), "project `prj_a`"),
            (&alice, "prj_a", Some("prv_b"), "preview `prv_b`"),
            (&alice, "prj_b", Some("prv_b"), "project `prj_b`"),
        ] {
            let err = read(&logs, actor, project, preview).await.unwrap_err();
            assert!(
                matches!(err, Error::NotFound(_)),
                "{project} {preview:?}: {err}"
            );
            assert!(err.to_string().contains(missing), "{err}");
        }

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(collector::run(logs.clone(), async {
            let _ = stopped.await;
        }));
        let mut followed = logs
            .follow(&alice, "prj_a".into(), everything(None), FollowFrom::Window)
            .await
            .unwrap();
        assert_eq!(next_text(&mut followed).await, "production");
        for new in [
            line(None, "live"),
            line(Some("prv_a"), "preview live"),
            line(None, "live 2"),
        ] {
            logs.collector.lines.send(new).await.unwrap();
        }
        assert_eq!(next_text(&mut followed).await, "live");
        assert_eq!(next_text(&mut followed).await, "live 2");
        stop.send(()).unwrap();
        writer.await.unwrap();
    }

    /// The edge's batches reach the store whole: every record of every batch is stored,
    /// once, in order, as an `edge` line of its project (or preview).
    #[tokio::test]
    async fn every_access_record_of_a_batch_is_stored() {
        use crate::edge::AccessRecord;
        let dir = tempfile::tempdir().unwrap();
        let (store, alice, _bob) = fixtures::two_accounts(dir.path());
        let runtime: Runtime = Arc::new(crate::runtime::fake::FakeRuntime::default());
        let lines = store.open_logs().unwrap();
        let logs = Logs::new(store, lines, runtime, "inst", LogsConfig::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(collector::run(logs.clone(), async {
            let _ = stopped.await;
        }));
        // Recent times: the writer's first pass drops lines past `max_age`.
        let now = crate::clock::now_nanos();
        let record = |n: usize, preview: Option<&str>| AccessRecord {
            project_id: "prj_a".into(),
            preview_id: preview.map(str::to_owned),
            at_ns: now + n as i64,
            method: "GET".into(),
            host: "web.owner-a.test".into(),
            path: format!("/r{n:04}"),
            status: 200,
            latency: std::time::Duration::from_micros(100),
            client: "127.0.0.1".parse().unwrap(),
            request_id: format!("req_{n}"),
        };
        let sink = logs.access_log_sink();
        // Three batches of 256 (the edge's flush size) and a preview's batch, more records
        // than one transaction of container lines holds.
        for first in [0, 256, 512] {
            sink.send_batch((first..first + 256).map(|n| record(n, None)).collect());
        }
        sink.send_batch((768..800).map(|n| record(n, Some("prv_a"))).collect());
        stop.send(()).unwrap();
        writer.await.unwrap();
        assert_eq!(sink.dropped(), 0);
        let everything = |preview: Option<&str>| LogQuery {
            limit: 5000,
            ..everything(preview)
        };
        let production = logs
            .read(&alice, "prj_a".into(), everything(None))
            .await
            .unwrap();
        let paths: Vec<String> = production
            .lines
            .iter()
            .map(|l| {
                assert_eq!((l.stream, l.instance.as_str()), (LogStream::Edge, "edge"));
                l.text.split(' ').nth(1).unwrap().to_owned()
            })
            .collect();
        let expected: Vec<String> = (0..768).map(|n| format!("/r{n:04}")).collect();
        assert_eq!(paths, expected);
        let preview = logs
            .read(&alice, "prj_a".into(), everything(Some("prv_a")))
            .await
            .unwrap();
        assert_eq!(preview.lines.len(), 32);
    }

    #[test]
    fn parameters_are_validated() {
        assert!(parse_stream("stdout").is_ok());
        assert!(parse_stream("STDOUT").is_err());
        assert!(parse_instance("abc-123_x").is_ok());
        assert!(parse_instance("a b").is_err());
        assert!(parse_instance("").is_err());
        assert!(parse_contains("").is_err());
        assert!(parse_contains(&"x".repeat(257)).is_err());
    }
}
