//! The watch feed: one immutable event batch per applied batch, published by the sequencer to
//! every core.
//!
//! Invariants: batches are published in revision order; each core's queue is bounded, and a core
//! whose queue is full is marked lagged instead of blocking the sequencer (the core then catches
//! its watchers up from history, which the page store keeps). Cross-core traffic is one `Arc` per
//! batch per core — and none to a core without watch streams: waking an idle core's hub for
//! nothing cost a third of the sequencer's apply time with one client (perf/findings.md §19).
//!
//! Why skipping a core loses nothing: the sequencer publishes a batch only after the store
//! snapshot holding its revision R is visible, then (behind a SeqCst fence) reads the core's
//! [`Listeners`] count; a stream enters the count (behind a SeqCst fence) before it reads any
//! snapshot. Of the two fences one comes first in their total order, so either the sequencer sees
//! the stream and sends R, or the stream's first snapshot already holds R and it reads R from
//! history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use retcd_engine::mvcc::Event;

/// The changes of one applied batch.
#[derive(Debug)]
pub struct EventBatch {
    /// The store revision after the batch (every event's revision is ≤ it).
    pub revision: i64,
    /// In revision order (and sub-revision order within a revision).
    pub events: Vec<Event>,
}

/// One core's end of the feed.
pub struct Subscription {
    pub rx: flume::Receiver<Arc<EventBatch>>,
    listeners: Listeners,
}

impl Subscription {
    /// Whether batches were dropped because this core's queue was full since the last call
    /// (clears the mark). After `true`, catch up from history before trusting the queue again.
    pub fn take_lagged(&self) -> bool {
        self.listeners.lagged.swap(false, Ordering::AcqRel)
    }

    /// The count of this core's watch streams, which decides whether batches are sent here.
    pub fn listeners(&self) -> Listeners {
        self.listeners.clone()
    }
}

/// How many watch streams one core has (see the module's doc for why this is enough to skip a
/// core), and the core's lagged mark. Entered and left on the core's own thread only.
#[derive(Clone, Default)]
pub struct Listeners {
    count: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

impl Listeners {
    /// Counts a stream until the returned guard drops. Call before the stream reads any store
    /// snapshot.
    pub fn enter(&self) -> Listening {
        if self.count.load(Ordering::SeqCst) == 0 {
            // A mark set while nobody listened (a snapshot install marks every core) concerns
            // batches nobody here needs: the first stream reads a snapshot that holds them.
            // Cleared before the stream counts, so a mark set from now on stays.
            self.lagged.store(false, Ordering::SeqCst);
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Listening(self.count.clone())
    }

    /// The streams counted now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn any(&self) -> bool {
        self.count() > 0
    }
}

/// One stream counted in its core's [`Listeners`].
pub struct Listening(Arc<AtomicUsize>);

impl Drop for Listening {
    fn drop(&mut self) {
        let was = self.0.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(was > 0, "a stream left a core that counted none");
    }
}

struct Core {
    tx: flume::Sender<Arc<EventBatch>>,
    listeners: Listeners,
}

/// The sequencer's end of the feed.
pub struct Feed {
    subs: Vec<Core>,
}

impl Feed {
    /// A feed for `cores` subscribers, each queueing at most `depth` batches.
    pub fn new(cores: usize, depth: usize) -> (Feed, Vec<Subscription>) {
        let mut subs = Vec::with_capacity(cores);
        let mut ends = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) = flume::bounded(depth);
            let listeners = Listeners::default();
            subs.push(Core {
                tx,
                listeners: listeners.clone(),
            });
            ends.push(Subscription { rx, listeners });
        }
        *crate::metrics::FEED_QUEUES
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = subs.iter().map(|c| c.tx.downgrade()).collect();
        (Feed { subs }, ends)
    }

    /// The state jumped to `revision` (a Raft snapshot was installed): every core is marked
    /// lagged, so that every watcher catches up from the history the snapshot carries, and the
    /// cores with streams get an empty batch, so that they see the mark now rather than at the
    /// next write. A core whose queue is full sees it when it takes the batches queued there.
    pub fn jumped(&self, revision: i64) {
        for c in &self.subs {
            c.listeners.lagged.store(true, Ordering::SeqCst);
        }
        self.send(EventBatch {
            revision,
            events: Vec::new(),
        });
    }

    /// A feed nobody listens to (tests, tools).
    pub fn none() -> Feed {
        Feed { subs: Vec::new() }
    }

    /// Sends `batch` to every core with a watch stream. Call only once the store snapshot that
    /// holds `batch.revision` is visible to readers.
    pub fn publish(&self, batch: EventBatch) {
        if !batch.events.is_empty() {
            self.send(batch);
        }
    }

    /// Sends `batch` to every core with a watch stream (no allocation when there is none); a
    /// full queue marks its core lagged.
    fn send(&self, batch: EventBatch) {
        fence(Ordering::SeqCst);
        let mut to = self.subs.iter().filter(|c| c.listeners.any()).peekable();
        if to.peek().is_none() {
            return;
        }
        let batch = Arc::new(batch);
        for c in to {
            if c.tx.try_send(batch.clone()).is_err() {
                c.listeners.lagged.store(true, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retcd_engine::mvcc::{EventKind, KeyValue};

    fn batch(rev: i64) -> EventBatch {
        EventBatch {
            revision: rev,
            events: vec![Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    mod_revision: rev,
                    ..Default::default()
                },
                prev_kv: None,
            }],
        }
    }

    #[test]
    fn a_full_queue_marks_the_core_lagged_without_blocking() {
        let (feed, subs) = Feed::new(2, 2);
        let _streams: Vec<Listening> = subs.iter().map(|s| s.listeners().enter()).collect();
        for rev in 2..6 {
            feed.publish(batch(rev));
        }
        assert!(subs[0].take_lagged());
        assert!(!subs[0].take_lagged());
        let got: Vec<i64> = subs[1].rx.try_iter().map(|b| b.revision).collect();
        assert_eq!(got, vec![2, 3]);
    }

    #[test]
    fn only_cores_with_streams_get_batches() {
        let (feed, subs) = Feed::new(2, 4);
        feed.publish(batch(2));
        let stream = subs[1].listeners().enter();
        feed.publish(batch(3));
        drop(stream);
        feed.publish(batch(4));
        assert!(subs[0].rx.is_empty());
        assert!(
            !subs[0].take_lagged(),
            "a core without streams is skipped, not lagged"
        );
        let got: Vec<i64> = subs[1].rx.try_iter().map(|b| b.revision).collect();
        assert_eq!(got, vec![3]);
    }

    #[test]
    fn a_mark_set_while_nobody_listened_is_dropped_by_the_first_stream() {
        let (feed, subs) = Feed::new(1, 4);
        feed.jumped(2);
        let first = subs[0].listeners().enter();
        assert!(!subs[0].take_lagged());
        assert!(subs[0].rx.is_empty(), "no batch for a core without streams");
        feed.jumped(3);
        let _second = subs[0].listeners().enter();
        assert!(
            subs[0].take_lagged(),
            "a mark set while a stream listens stays"
        );
        drop(first);
    }

    #[test]
    fn a_jump_wakes_the_cores_with_streams_with_an_empty_batch() {
        let (feed, subs) = Feed::new(2, 4);
        let _stream = subs[1].listeners().enter();
        feed.publish(EventBatch {
            revision: 5,
            events: Vec::new(),
        });
        assert!(
            subs[1].rx.is_empty(),
            "an empty batch of applied entries is not sent"
        );
        feed.jumped(9);
        assert!(subs[0].rx.is_empty());
        let got: Vec<(i64, usize)> = subs[1]
            .rx
            .try_iter()
            .map(|b| (b.revision, b.events.len()))
            .collect();
        assert_eq!(got, vec![(9, 0)]);
        assert!(subs[1].take_lagged());
    }
}
