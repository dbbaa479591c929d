//! The edge's access log: one record per request routed to a project, handed to the log
//! collector in batches through a bounded channel (the collector stores each batch in one
//! transaction). Invariant: recording never waits; when the collector is behind, whole
//! batches are counted as dropped (record by record) instead of slowing the request.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::mpsc;

/// The longest path kept in a record; longer ones are cut (with `...`).
const MAX_PATH_CHARS: usize = 1024;

/// One request as the access log keeps it. The query string is left out: it often carries
/// tokens, and the log is readable with any `read` token of the account.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub project_id: String,
    /// Set when the request came in on a preview's hostname.
    pub preview_id: Option<String>,
    /// When the response head was ready, in nanoseconds since the epoch.
    pub at_ns: i64,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    /// From the request's arrival to the response head.
    pub latency: Duration,
    pub client: IpAddr,
    pub request_id: String,
}

impl AccessRecord {
    /// The record as one log line: `GET /path 200 1.2ms host=... client=... request_id=...`.
    pub fn line(&self) -> String {
        let path: String = if self.path.chars().count() > MAX_PATH_CHARS {
            let mut cut: String = self.path.chars().take(MAX_PATH_CHARS).collect();
            cut.push_str("...");
            cut
        } else {
            self.path.clone()
        };
        format!(
            "{} {} {} {:.1}ms host={} client={} request_id={}",
            self.method,
            path,
            self.status,
            self.latency.as_secs_f64() * 1000.0,
            self.host,
            self.client.to_canonical(),
            self.request_id
        )
    }
}

/// The sending side, held by the edge; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLogSink {
    tx: mpsc::Sender<Vec<AccessRecord>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLogSink {
    /// A sink and the receiver the collector reads, holding up to `capacity` batches.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Vec<AccessRecord>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Hands a batch over, or counts its records as dropped when the channel is full or
    /// closed. An empty batch is not sent.
    pub fn send_batch(&self, batch: Vec<AccessRecord>) {
        if batch.is_empty() {
            return;
        }
        if let Err(err) = self.tx.try_send(batch) {
            let lost = match err {
                mpsc::error::TrySendError::Full(batch)
                | mpsc::error::TrySendError::Closed(batch) => batch.len(),
            };
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        }
    }

    /// Hands one record over as a batch of one (a caller without a batch of its own).
    pub fn record(&self, record: AccessRecord) {
        self.send_batch(vec![record]);
    }

    /// Records dropped so far because the collector was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> AccessRecord {
        AccessRecord {
            preview_id: None,
            project_id: "prj_1".into(),
            at_ns: 0,
            method: "GET".into(),
            host: "app.test".into(),
            path: path.into(),
            status: 200,
            latency: Duration::from_micros(1500),
            client: "::ffff:127.0.0.1".parse().unwrap(),
            request_id: "req_1".into(),
        }
    }

    #[test]
    fn a_record_is_one_plain_line() {
        assert_eq!(
            record("/a/b").line(),
            "GET /a/b 200 1.5ms host=app.test client=127.0.0.1 request_id=req_1"
        );
        let long = record(&"x".repeat(2000)).line();
        assert!(
            long.starts_with(&format!("GET {}... 200 ", "x".repeat(1024))),
            "{long}"
        );
    }

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_waiting() {
        let (sink, mut rx) = AccessLogSink::channel(1);
        sink.send_batch(vec![record("/1"), record("/2")]);
        sink.send_batch(vec![record("/3"), record("/4"), record("/5")]);
        sink.record(record("/6"));
        assert_eq!(sink.dropped(), 4, "every record of a dropped batch counts");
        let batch = rx.try_recv().unwrap();
        let paths: Vec<&str> = batch.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/1", "/2"]);
        sink.send_batch(Vec::new());
        assert!(rx.try_recv().is_err(), "an empty batch is not sent");
    }
}
