//! Per-project request counters kept by the edge: requests by status class, body bytes in
//! and out, and a fixed-bucket latency histogram with percentile estimates.
//! Invariant: recording is a handful of relaxed atomic adds (no lock, no allocation) on the
//! recording thread's own shard, so edge threads on different cores never write the same
//! cache line; a snapshot sums the shards, so totals stay exact. The bucket bounds never
//! change meaning, because stored series keep raw bucket counts.

use std::{
    cell::Cell,
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use serde::Serialize;

/// Upper bounds of the latency buckets, in microseconds (100 µs to 10 s, a 1-2.5-5 ladder
/// so an app answering from memory still gets a meaningful p50); one more bucket counts
/// everything slower.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Buckets of the histogram: one per bound plus the open-ended last one.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// How many shards each set of per-thread state (counters, access-log batches) has: one
/// per core the process may use, so each edge thread has its own.
pub(crate) fn shard_count() -> usize {
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS
        .get_or_init(|| std::thread::available_parallelism().map_or(1, |cores| cores.get().min(64)))
}

thread_local! {
    /// This thread's shard, once it has one.
    static THREAD_SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Gives the calling thread shard `index` (modulo the count): the edge numbers its threads,
/// so no two of them share a shard.
pub(crate) fn pin_thread_shard(index: usize) {
    THREAD_SHARD.with(|shard| shard.set(Some(index % shard_count())));
}

/// The calling thread's shard: the one it was pinned to, else one handed out round-robin on
/// its first use (threads other than the edge's record rarely: tests, the console).
pub(crate) fn thread_shard() -> usize {
    THREAD_SHARD.with(|shard| match shard.get() {
        Some(index) => index,
        None => {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let index = NEXT.fetch_add(1, Ordering::Relaxed) % shard_count();
            shard.set(Some(index));
            index
        }
    })
}

/// One thread shard of a project's counters, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct CounterShard {
    status_classes: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_total_us: AtomicU64,
}

/// One project's live counters. Every field is an atomic, so recording never blocks.
#[derive(Debug)]
pub struct ProjectCounters {
    shards: Box<[CounterShard]>,
}

impl Default for ProjectCounters {
    fn default() -> Self {
        Self {
            shards: (0..shard_count())
                .map(|_| CounterShard::default())
                .collect(),
        }
    }
}

impl ProjectCounters {
    /// The calling thread's shard.
    fn shard(&self) -> &CounterShard {
        &self.shards[thread_shard() % self.shards.len()]
    }

    /// Counts one response by its status class and the time until its head was ready.
    /// Latency stops at the head because a streamed body (a download, a WebSocket) can
    /// last as long as the client wants.
    pub fn record_response(&self, status: u16, latency: Duration) {
        let shard = self.shard();
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        shard.status_classes[class].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // A binary search over 16 sorted bounds: four comparisons, no branch on the data
        // beyond them; the index past the last bound is the open-ended bucket.
        let bucket = LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < micros);
        shard.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.latency_total_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Request body bytes received from the client.
    pub fn add_bytes_in(&self, bytes: u64) {
        self.shard().bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Response body bytes sent to the client.
    pub fn add_bytes_out(&self, bytes: u64) {
        self.shard().bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The sum over the shards of one counter.
    fn total(&self, counter: impl Fn(&CounterShard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| counter(shard).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// A point-in-time copy of these counters.
    pub fn snapshot(&self) -> ProjectMetrics {
        let classes: [u64; 5] = std::array::from_fn(|i| self.total(|s| &s.status_classes[i]));
        let latency_counts: [u64; LATENCY_BUCKETS] =
            std::array::from_fn(|i| self.total(|s| &s.latency_buckets[i]));
        let latency_total_us = self.total(|s| &s.latency_total_us);
        let latency = LatencySnapshot::from_buckets(&latency_counts, latency_total_us);
        ProjectMetrics {
            requests: classes.iter().sum(),
            status_1xx: classes[0],
            status_2xx: classes[1],
            status_3xx: classes[2],
            status_4xx: classes[3],
            status_5xx: classes[4],
            bytes_in: self.total(|s| &s.bytes_in),
            bytes_out: self.total(|s| &s.bytes_out),
            latency,
            latency_counts,
            latency_total_us,
        }
    }
}

/// A point-in-time copy of one project's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectMetrics {
    pub requests: u64,
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: LatencySnapshot,
    /// The raw bucket counts behind `latency`, for collectors that store or export them.
    #[serde(skip)]
    pub latency_counts: [u64; LATENCY_BUCKETS],
    /// The sum of every recorded latency, in microseconds.
    #[serde(skip)]
    pub latency_total_us: u64,
}

impl ProjectMetrics {
    /// What happened between `earlier` and `self` (the counters only grow while the
    /// daemon runs, so every field is a plain difference).
    pub fn since(&self, earlier: &ProjectMetrics) -> ProjectMetrics {
        let latency_counts: [u64; LATENCY_BUCKETS] = std::array::from_fn(|i| {
            self.latency_counts[i].saturating_sub(earlier.latency_counts[i])
        });
        let latency_total_us = self
            .latency_total_us
            .saturating_sub(earlier.latency_total_us);
        ProjectMetrics {
            requests: self.requests.saturating_sub(earlier.requests),
            status_1xx: self.status_1xx.saturating_sub(earlier.status_1xx),
            status_2xx: self.status_2xx.saturating_sub(earlier.status_2xx),
            status_3xx: self.status_3xx.saturating_sub(earlier.status_3xx),
            status_4xx: self.status_4xx.saturating_sub(earlier.status_4xx),
            status_5xx: self.status_5xx.saturating_sub(earlier.status_5xx),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            latency: LatencySnapshot::from_buckets(&latency_counts, latency_total_us),
            latency_counts,
            latency_total_us,
        }
    }
}

/// The latency histogram and percentiles estimated from it (linear within a bucket, so
/// an estimate is never off by more than its bucket's width).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySnapshot {
    /// `(upper bound in ms, count)`; the last bound is `None`, for slower than 10 s.
    pub buckets: Vec<(Option<f64>, u64)>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl LatencySnapshot {
    /// The histogram view of raw bucket counts and their latency sum.
    pub fn from_buckets(counts: &[u64], total_us: u64) -> Self {
        let total: u64 = counts.iter().sum();
        let buckets = counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let bound = LATENCY_BUCKET_BOUNDS_US
                    .get(i)
                    .map(|&us| us as f64 / 1000.0);
                (bound, count)
            })
            .collect();
        Self {
            buckets,
            mean_ms: (total > 0).then(|| total_us as f64 / total as f64 / 1000.0),
            p50_ms: percentile_ms(counts, 0.50),
            p95_ms: percentile_ms(counts, 0.95),
            p99_ms: percentile_ms(counts, 0.99),
        }
    }
}

/// Estimates the `quantile` latency from bucket counts, interpolating inside the bucket
/// that holds it. The open-ended last bucket reports its lower bound (10 s).
pub fn percentile_ms(counts: &[u64], quantile: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = quantile * total as f64;
    let mut seen = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let lower_us = if i == 0 {
            0
        } else {
            LATENCY_BUCKET_BOUNDS_US[i - 1]
        };
        let Some(&upper_us) = LATENCY_BUCKET_BOUNDS_US.get(i) else {
            return Some(lower_us as f64 / 1000.0);
        };
        if (seen + count) as f64 >= rank {
            let within = ((rank - seen as f64) / count as f64).clamp(0.0, 1.0);
            let us = lower_us as f64 + (upper_us - lower_us) as f64 * within;
            return Some(us / 1000.0);
        }
        seen += count;
    }
    None
}

/// Counters for every project the edge has answered for, and for every preview on its own
/// (under the preview's id), so a preview's traffic never counts as its project's. The
/// maps are copied on the rare insert of a new key and read without a lock on every
/// request.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    projects: ArcSwap<HashMap<String, Arc<ProjectCounters>>>,
    /// The project of each preview with counters in `projects`.
    preview_projects: ArcSwap<HashMap<String, String>>,
}

impl EdgeMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `project_id`, created on first use.
    pub fn project(&self, project_id: &str) -> Arc<ProjectCounters> {
        if let Some(counters) = self.projects.load().get(project_id) {
            return counters.clone();
        }
        let mut found = None;
        self.projects.rcu(|current| {
            let mut next = HashMap::clone(current);
            let counters = next
                .entry(project_id.to_owned())
                .or_insert_with(|| Arc::new(ProjectCounters::default()))
                .clone();
            found = Some(counters);
            next
        });
        // `rcu` always runs its closure at least once, so `found` is set; the fallback
        // only keeps the signature free of a panic path.
        found.unwrap_or_default()
    }

    /// The counters of a preview of `project_id`, kept apart from the project's own.
    pub fn preview(&self, project_id: &str, preview_id: &str) -> Arc<ProjectCounters> {
        if !self.preview_projects.load().contains_key(preview_id) {
            self.preview_projects.rcu(|current| {
                let mut next = HashMap::clone(current);
                next.insert(preview_id.to_owned(), project_id.to_owned());
                next
            });
        }
        self.project(preview_id)
    }

    /// A copy of `project_id`'s (or a preview's, by its id) counters (all zero for one
    /// never seen).
    pub fn snapshot(&self, project_id: &str) -> ProjectMetrics {
        self.projects
            .load()
            .get(project_id)
            .map(|counters| counters.snapshot())
            .unwrap_or_default()
    }

    /// Every project with counters, for collectors that sweep them all (previews not
    /// included).
    pub fn project_ids(&self) -> Vec<String> {
        let previews = self.preview_projects.load();
        self.projects
            .load()
            .keys()
            .filter(|key| !previews.contains_key(*key))
            .cloned()
            .collect()
    }

    /// Every preview with counters, with its project: `(preview id, project id)`.
    pub fn previews(&self) -> Vec<(String, String)> {
        self.preview_projects
            .load()
            .iter()
            .map(|(preview, project)| (preview.clone(), project.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_count_by_class_and_bytes_add_up() {
        let metrics = EdgeMetrics::new();
        let project = metrics.project("prj_a");
        for status in [101, 200, 204, 301, 404, 418, 502] {
            project.record_response(status, Duration::from_millis(3));
        }
        project.add_bytes_in(10);
        metrics.project("prj_a").add_bytes_out(25);
        let snap = metrics.snapshot("prj_a");
        assert_eq!(snap.requests, 7);
        assert_eq!(
            (
                snap.status_1xx,
                snap.status_2xx,
                snap.status_3xx,
                snap.status_4xx,
                snap.status_5xx
            ),
            (1, 2, 1, 2, 1)
        );
        assert_eq!((snap.bytes_in, snap.bytes_out), (10, 25));
        assert_eq!(metrics.snapshot("prj_unknown"), ProjectMetrics::default());
        assert_eq!(metrics.project_ids(), vec!["prj_a".to_owned()]);

        // A preview counts on its own, never as its project.
        metrics
            .preview("prj_a", "prv_b")
            .record_response(200, Duration::from_millis(1));
        assert_eq!(metrics.snapshot("prj_a").requests, 7);
        assert_eq!(metrics.snapshot("prv_b").requests, 1);
        assert_eq!(metrics.project_ids(), vec!["prj_a".to_owned()]);
        assert_eq!(
            metrics.previews(),
            vec![("prv_b".to_owned(), "prj_a".to_owned())]
        );
    }

    #[test]
    fn counts_from_many_threads_sum_exactly() {
        let counters = Arc::new(ProjectCounters::default());
        let threads: Vec<_> = (0..8)
            .map(|index| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    pin_thread_shard(index);
                    for _ in 0..1000 {
                        counters.record_response(200, Duration::from_micros(50));
                        counters.add_bytes_out(3);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let snap = counters.snapshot();
        assert_eq!((snap.requests, snap.status_2xx), (8000, 8000));
        assert_eq!(snap.bytes_out, 24_000);
        assert_eq!(snap.latency_counts[0], 8000);
        assert_eq!(snap.latency_total_us, 400_000);
    }

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let counters = ProjectCounters::default();
        // 98 fast requests (≤1 ms) and two slow ones (between 250 and 500 ms).
        for _ in 0..98 {
            counters.record_response(200, Duration::from_micros(500));
        }
        counters.record_response(200, Duration::from_millis(300));
        counters.record_response(200, Duration::from_millis(400));
        let latency = counters.snapshot().latency;
        let p50 = latency.p50_ms.unwrap();
        assert!(p50 > 0.25 && p50 <= 0.5, "{p50}");
        assert!(latency.p95_ms.unwrap() <= 0.5);
        let p99 = latency.p99_ms.unwrap();
        assert!((250.0..=500.0).contains(&p99), "{p99}");
        assert_eq!(latency.buckets.len(), LATENCY_BUCKETS);
        assert_eq!(latency.buckets[2], (Some(0.5), 98));
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        for (micros, bucket) in [
            (0, 0),
            (100, 0),
            (101, 1),
            (999, 3),
            (1_000, 3),
            (1_001, 4),
            (10_000_000, 15),
            (10_000_001, 16),
            (u64::MAX / 2, 16),
        ] {
            let counters = ProjectCounters::default();
            counters.record_response(200, Duration::from_micros(micros));
            let counts = counters.snapshot().latency_counts;
            assert_eq!(counts[bucket], 1, "{micros} µs: {counts:?}");
        }
    }

    #[test]
    fn deltas_subtract_every_counter() {
        let counters = ProjectCounters::default();
        counters.record_response(200, Duration::from_millis(2));
        counters.add_bytes_out(7);
        let before = counters.snapshot();
        counters.record_response(503, Duration::from_millis(40));
        counters.add_bytes_out(5);
        let delta = counters.snapshot().since(&before);
        assert_eq!(
            (
                delta.requests,
                delta.status_2xx,
                delta.status_5xx,
                delta.bytes_out
            ),
            (1, 0, 1, 5)
        );
        assert_eq!(delta.latency_counts.iter().sum::<u64>(), 1);
        assert_eq!(delta.latency_total_us, 40_000);
        assert_eq!(delta.latency.p50_ms, Some(37.5));
    }

    #[test]
    fn the_slowest_bucket_is_open_ended_and_empty_has_no_percentiles() {
        let counters = ProjectCounters::default();
        assert_eq!(counters.snapshot().latency.p50_ms, None);
        counters.record_response(504, Duration::from_secs(30));
        let latency = counters.snapshot().latency;
        assert_eq!(latency.p99_ms, Some(10_000.0));
        assert_eq!(latency.buckets.last(), Some(&(None, 1)));
    }
}
