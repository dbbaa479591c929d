//! Runtime logs: what a project's instances write to stdout and stderr, and the edge's
//! access lines for it, tagged with instance, process type, stream, time and the preview
//! they belong to (none for production); kept under a per-project cap (bytes and age) that
//! drops the oldest first; read by time window and filters, or followed live. `collector`
//! follows the containers and writes the lines.
//! Invariants: a line is stored once (a daemon restart resumes each container stream after
//! its last stored line) and published only after it is stored; a read shows production's
//! lines or one preview's, never both.

pub mod collector;

use tokio::sync::mpsc;

use crate::{
    accounts::Actor,
    error::{Error, Result},
    live,
    state::AppState,
    store,
};

pub use crate::model::logs::{
    LineFilter, LogStream, NewLine, ReadPosition, RuntimeLine, LINE_OVERHEAD_BYTES,
};
pub use collector::{follow_running, follow_started, instance_id, LogCollector, StartedContainer};

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
/// the preview is one of that project's (another's answers exactly like a missing one).
async fn check_target(
    app: &AppState,
    actor: &Actor,
    project_id: &str,
    filter: &LineFilter,
) -> Result<()> {
    match &filter.preview_id {
        Some(preview_id) => {
            crate::previews::get(app, actor, project_id.to_owned(), preview_id.clone())
                .await
                .map(|_| ())
        }
        None => crate::projects::get(&app.store, actor, project_id.to_owned())
            .await
            .map(|_| ()),
    }
}

/// The newest `limit` lines of the window that pass the filter, oldest first.
pub async fn read(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    query: LogQuery,
) -> Result<LogPage> {
    check_target(app, actor, &project_id, &query.filter).await?;
    let (lines, truncated) = app
        .log_store
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

/// Follows the project's lines live: first the replay `from` asks for, then every new line
/// that passes the filter, each once and in order, until the receiver is dropped.
pub async fn follow(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    query: LogQuery,
    from: FollowFrom,
) -> Result<mpsc::Receiver<std::sync::Arc<RuntimeLine>>> {
    check_target(app, actor, &project_id, &query.filter).await?;
    // Subscribed before the window is read, so no line falls between the two.
    let early = app.logs.live.subscribe_or_open(&project_id);
    let (window, after) = match from {
        FollowFrom::After(after) => (Vec::new(), after),
        FollowFrom::Window => {
            let id = project_id.clone();
            let window_query = query.clone();
            app.log_store
                .call(move |c| {
                    // Everything stored so far is either in the window or left out on
                    // purpose; the live part starts after the newest line of any project.
                    let newest_overall = store::runtime_logs::last_seq(c)?;
                    let (lines, _) = store::runtime_logs::newest(
                        c,
                        &id,
                        window_query.since_ns,
                        window_query.until_ns,
                        &window_query.filter,
                        window_query.limit,
                    )?;
                    Ok((lines, newest_overall))
                })
                .await?
        }
    };
    let (tx, rx) = mpsc::channel(256);
    let filter = query.filter.clone();
    let fetch_app = app.clone();
    let fetch_project = project_id.clone();
    let fetch_filter = filter.clone();
    let live_app = app.clone();
    let live_project = project_id;
    let early = std::sync::Mutex::new(Some(early));
    let mut followed = live::replay_then_follow(live::FollowSource {
        fetch_after: move |after| {
            let store = fetch_app.log_store.clone();
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
                    .map(std::sync::Arc::new)
                    .collect()
            }
        },
        subscribe: move || {
            // The first subscription is the one taken before the window was read.
            let taken = early.lock().unwrap_or_else(|p| p.into_inner()).take();
            Some(taken.unwrap_or_else(|| live_app.logs.live.subscribe_or_open(&live_project)))
        },
        keep: move |line: &std::sync::Arc<RuntimeLine>| filter.matches(line),
        is_last: |_: &std::sync::Arc<RuntimeLine>| false,
        after,
        _line: std::marker::PhantomData,
    });
    tokio::spawn(async move {
        for line in window {
            if tx.send(std::sync::Arc::new(line)).await.is_err() {
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
