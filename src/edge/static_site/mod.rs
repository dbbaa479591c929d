//! Static sites as the edge holds them: each site's index loaded once (on a blocking
//! thread, the first time a request names its root) and then read without a lock, a file
//! system call or a blocking-pool hop per request for the files held in memory.
//! Invariant: a site is loaded at most once at a time; a site nobody asked for in
//! `IDLE_SECS` is dropped (with the memory it held) when another one loads.

pub mod budget;
pub mod index;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use arc_swap::ArcSwap;

pub use budget::MemoryBudget;
pub use index::{Body, Coding, Entry, IndexedFile, Site, Variant};

/// A loaded site unused this long is dropped the next time another site loads, so the
/// sites of releases no longer routed do not hold memory for ever.
const IDLE_SECS: u64 = 600;

/// One site's place in the table: loaded once, then shared.
#[derive(Debug, Default)]
struct Slot {
    site: tokio::sync::OnceCell<Arc<Site>>,
    /// Seconds since `Sites::epoch` of the last request; written only when it changes,
    /// so requests within the same second share the cache line read-only.
    last_used: AtomicU64,
}

/// The sites the edge has loaded, by root.
#[derive(Debug)]
pub struct Sites {
    table: ArcSwap<HashMap<PathBuf, Arc<Slot>>>,
    /// Serializes changes to `table` (reads never take it).
    changing: Mutex<()>,
    budget: Arc<MemoryBudget>,
    epoch: Instant,
}

/// Why a site could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailed {
    #[error("reading the site: {0}")]
    Io(#[from] std::io::Error),
    #[error("the loading task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The site's directory is not there (yet: a release being rebuilt after a restore).
    /// Not kept, so the site is served once it appears.
    #[error("the site's directory is missing")]
    Missing,
}

impl Sites {
    /// Sites holding at most `memory_bytes` of file bodies in memory, all together.
    pub fn new(memory_bytes: u64) -> Self {
        Self {
            table: ArcSwap::default(),
            changing: Mutex::new(()),
            budget: Arc::new(MemoryBudget::new(memory_bytes)),
            epoch: Instant::now(),
        }
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Runs `answer` with the site at `root` if it is loaded already: the path every
    /// request but a site's first takes.
    pub fn with_loaded<R>(&self, root: &Path, answer: impl FnOnce(&Site) -> R) -> Option<R> {
        let table = self.table.load();
        let slot = table.get(root)?;
        let site = slot.site.get()?;
        let now = self.now();
        if slot.last_used.load(Ordering::Relaxed) != now {
            slot.last_used.store(now, Ordering::Relaxed);
        }
        Some(answer(site))
    }

    /// The site at `root`, loading it if nobody has (concurrent callers wait for the
    /// same load). A failed load is not kept: the next request tries again.
    pub async fn load(&self, root: &Path) -> Result<Arc<Site>, LoadFailed> {
        let slot = self.slot(root);
        let site = slot
            .site
            .get_or_try_init(|| async {
                let owned = root.to_owned();
                let budget = self.budget.clone();
                let started = Instant::now();
                let site =
                    tokio::task::spawn_blocking(move || index::load(&owned, &budget)).await??;
                if !site.entries.contains_key("") {
                    return Err(LoadFailed::Missing);
                }
                tracing::debug!(
                    root = %root.display(),
                    paths = site.entries.len(),
                    memory_bytes = self.budget.used(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "static site loaded"
                );
                Ok::<_, LoadFailed>(Arc::new(site))
            })
            .await?;
        Ok(site.clone())
    }

    /// The slot of `root`, added (and idle sites dropped) if it has none.
    fn slot(&self, root: &Path) -> Arc<Slot> {
        if let Some(slot) = self.table.load().get(root) {
            return slot.clone();
        }
        let _changing = self
            .changing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.table.load_full();
        if let Some(slot) = current.get(root) {
            return slot.clone();
        }
        let now = self.now();
        let mut next: HashMap<PathBuf, Arc<Slot>> = current
            .iter()
            .filter(|(_, slot)| {
                // A slot still loading has no site yet and is kept.
                slot.site.get().is_none()
                    || now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) < IDLE_SECS
            })
            .map(|(root, slot)| (root.clone(), slot.clone()))
            .collect();
        let slot = Arc::new(Slot {
            site: tokio::sync::OnceCell::new(),
            last_used: AtomicU64::new(now),
        });
        next.insert(root.to_owned(), slot.clone());
        self.table.store(Arc::new(next));
        slot
    }
}
