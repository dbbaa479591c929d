//! Live streams of stored, sequence-numbered lines: broadcast topics (one per deploy or
//! project) and the replay-then-follow loop behind every SSE stream of the API.
//! Invariant: a writer stores a line before it publishes it, and a follower subscribes before
//! it reads the store, so replay followed by the live stream never loses, repeats or
//! reorders a line; a follower that falls behind catches up from the store.

use std::{collections::HashMap, future::Future, sync::Mutex};

use tokio::sync::{broadcast, mpsc};

/// A line with its place in the store's order.
pub trait Sequenced: Clone + Send + Sync + 'static {
    fn seq(&self) -> i64;
}

/// Broadcast channels by key, created on demand.
#[derive(Debug)]
pub struct Topics<T> {
    channels: Mutex<HashMap<String, broadcast::Sender<T>>>,
    capacity: usize,
}

impl<T: Clone> Topics<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Opens the topic if it is not open yet.
    pub fn open(&self, key: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(key.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0);
    }

    /// A receiver of the topic's future lines, or `None` when the topic is not open.
    pub fn subscribe(&self, key: &str) -> Option<broadcast::Receiver<T>> {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.get(key).map(broadcast::Sender::subscribe)
    }

    /// A receiver of the topic's future lines, opening the topic when needed.
    pub fn subscribe_or_open(&self, key: &str) -> broadcast::Receiver<T> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(key.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Whether anyone listens on the topic, so a writer can skip building lines for nobody.
    pub fn has_subscribers(&self, key: &str) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .get(key)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Sends to the topic's current subscribers, if it is open.
    pub fn publish(&self, key: &str, line: T) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = channels.get(key) {
            let _ = sender.send(line);
        }
    }

    /// Closes the topic: its subscribers see the end of the stream.
    pub fn close(&self, key: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Closes open topics nobody listens to.
    pub fn close_unheard(&self) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, sender| sender.receiver_count() > 0);
    }
}

/// How one followed stream reads the store and the live topic.
pub struct FollowSource<T, Fetch, Subscribe, Keep, Last> {
    /// Stored lines after a sequence number, in order; an empty answer means caught up.
    /// May return a bounded chunk: it is called again until it returns nothing.
    pub fetch_after: Fetch,
    /// A receiver of the live topic, or `None` once the stream has ended for good.
    pub subscribe: Subscribe,
    /// Live lines that pass this are sent on (stored lines are filtered by `fetch_after`).
    pub keep: Keep,
    /// A line after which the stream ends (a deploy's final status).
    pub is_last: Last,
    /// Send lines after this sequence number.
    pub after: i64,
    pub _line: std::marker::PhantomData<T>,
}

/// Follows a stream from after `source.after`: stored lines first, then live ones. Each
/// line arrives exactly once and in order; the task ends when the receiver is dropped,
/// after the last line, or when the topic closes and the store has nothing more.
pub fn replay_then_follow<T, Fetch, FetchFuture, Subscribe, Keep, Last>(
    source: FollowSource<T, Fetch, Subscribe, Keep, Last>,
) -> mpsc::Receiver<T>
where
    T: Sequenced,
    Fetch: Fn(i64) -> FetchFuture + Send + Sync + 'static,
    FetchFuture: Future<Output = Vec<T>> + Send,
    Subscribe: Fn() -> Option<broadcast::Receiver<T>> + Send + 'static,
    Keep: Fn(&T) -> bool + Send + 'static,
    Last: Fn(&T) -> bool + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let FollowSource {
            fetch_after,
            subscribe,
            keep,
            is_last,
            after,
            ..
        } = source;
        // Subscribe before reading the store: a line is stored before it is published, so
        // everything is either in the replay or still to come live.
        let live = subscribe();
        let mut last = after;
        // Sends stored lines until the store has nothing after `last`; false when the
        // stream is over (receiver gone or last line sent).
        let catch_up = |last: i64| {
            let fetch = &fetch_after;
            let tx = &tx;
            let is_last = &is_last;
            async move {
                let mut last = last;
                loop {
                    let chunk = fetch(last).await;
                    if chunk.is_empty() {
                        return (last, true);
                    }
                    for line in chunk {
                        if line.seq() <= last {
                            continue;
                        }
                        last = line.seq();
                        let done = is_last(&line);
                        if tx.send(line).await.is_err() || done {
                            return (last, false);
                        }
                    }
                }
            }
        };
        let (caught_up_to, going) = catch_up(last).await;
        last = caught_up_to;
        if !going {
            return;
        }
        let Some(mut live) = live else { return };
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                () = tx.closed() => return,
            };
            match received {
                Ok(line) => {
                    if line.seq() <= last {
                        continue;
                    }
                    last = line.seq();
                    if !keep(&line) {
                        continue;
                    }
                    let done = is_last(&line);
                    if tx.send(line).await.is_err() || done {
                        return;
                    }
                }
                // Fell behind: the store has every line the channel dropped.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (caught_up_to, going) = catch_up(last).await;
                    last = caught_up_to;
                    if !going {
                        return;
                    }
                }
                // The writer finished: drain the store, then end unless the topic was
                // opened again (subscribing first, so nothing falls in between).
                Err(broadcast::error::RecvError::Closed) => {
                    let reopened = subscribe();
                    let (caught_up_to, going) = catch_up(last).await;
                    last = caught_up_to;
                    match reopened {
                        Some(reopened) if going => live = reopened,
                        Some(_) | None => return,
                    }
                }
            }
        }
    });
    rx
}
