//! The edge's access log: one record per request routed to a project, gathered in
//! batches (one per edge thread: a shard of its own, so threads never share a lock) and
//! handed to the log collector through a bounded channel, a batch at a time: at
//! `BATCH_RECORDS` records, or every `FLUSH_INTERVAL` by the edge thread's flusher,
//! whichever comes first. Invariant: recording never waits; when the collector is behind,
//! a batch's records are counted as dropped instead of slowing the request.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::metrics::thread_shard;

/// A batch goes to the collector once it holds this many records.
pub const BATCH_RECORDS: usize = 256;
/// A batch that is not full goes to the collector after at most about this long.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

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

/// The sending side, held by the edge; cheap to clone (clones share the batches).
#[derive(Debug, Clone)]
pub struct AccessLogSink {
    tx: mpsc::Sender<Vec<AccessRecord>>,
    dropped: Arc<AtomicU64>,
    /// The batches being filled, one per thread shard; a thread only ever locks its own
    /// (and the flushers, every `FLUSH_INTERVAL`), so the locks are uncontended.
    batches: Arc<[Mutex<Vec<AccessRecord>>]>,
}

impl AccessLogSink {
    /// A sink and the receiver the collector reads, holding up to `capacity` batches.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Vec<AccessRecord>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let batches = (0..super::metrics::shard_count())
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                batches,
            },
            rx,
        )
    }

    /// Adds a record to this thread's batch, handing the batch over once it is full.
    pub fn record(&self, record: AccessRecord) {
        let full = {
            let mut batch = lock(&self.batches[thread_shard()]);
            if batch.capacity() == 0 {
                batch.reserve_exact(BATCH_RECORDS);
            }
            batch.push(record);
            (batch.len() >= BATCH_RECORDS).then(|| std::mem::take(&mut *batch))
        };
        if let Some(full) = full {
            self.send_batch(full);
        }
    }

    /// Hands every batch not yet sent to the collector (the flusher's tick, and the edge
    /// thread's last act on shutdown).
    pub fn flush(&self) {
        for shard in self.batches.iter() {
            let batch = std::mem::take(&mut *lock(shard));
            self.send_batch(batch);
        }
    }

    /// Hands a batch over, or counts its records as dropped when the channel is full or
    /// closed. An empty batch is not sent.
    pub fn send_batch(&self, batch: Vec<AccessRecord>) {
        if batch.is_empty() {
            return;
        }
        let records = batch.len() as u64;
        if self.tx.try_send(batch).is_err() {
            self.dropped.fetch_add(records, Ordering::Relaxed);
        }
    }

    /// Records dropped so far because the collector was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn lock(batch: &Mutex<Vec<AccessRecord>>) -> std::sync::MutexGuard<'_, Vec<AccessRecord>> {
    // A panic while holding the lock leaves at worst a batch missing a record, still a
    // sound Vec, so a poisoned lock is used as it is.
    batch
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Flushes `sink`'s batches every `FLUSH_INTERVAL`, forever (an edge thread runs one and
/// aborts it when it stops); without a sink, waits forever.
pub async fn flush_every_interval(sink: Option<AccessLogSink>) {
    let Some(sink) = sink else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        sink.flush();
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
        sink.record(record("/1"));
        sink.flush();
        sink.record(record("/2"));
        sink.record(record("/3"));
        sink.flush();
        assert_eq!(sink.dropped(), 2);
        let batch = rx.try_recv().unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].path, "/1");
    }

    #[test]
    fn records_go_over_in_full_batches_and_the_rest_on_flush() {
        let (sink, mut rx) = AccessLogSink::channel(8);
        for i in 0..BATCH_RECORDS + 3 {
            sink.clone().record(record(&format!("/{i}")));
        }
        let full = rx.try_recv().unwrap();
        assert_eq!(full.len(), BATCH_RECORDS);
        assert_eq!(full[0].path, "/0");
        assert!(rx.try_recv().is_err(), "the rest waits for a flush");
        sink.flush();
        let rest = rx.try_recv().unwrap();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[2].path, format!("/{}", BATCH_RECORDS + 2));
        sink.flush();
        sink.send_batch(Vec::new());
        assert!(rx.try_recv().is_err(), "an empty batch is never sent");
        assert_eq!(sink.dropped(), 0);
    }
}
