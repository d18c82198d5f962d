//! The watch feed: one immutable event batch per applied batch, published by the sequencer to
//! every core.
//!
//! Invariants: batches are published in revision order; each core's queue is bounded, and a core
//! whose queue is full is marked lagged instead of blocking the sequencer (the core then catches
//! its watchers up from history, which the page store keeps). Cross-core traffic is one `Arc` per
//! batch per core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// Whether batches were dropped because this core's queue was full since the last call
    /// (clears the mark). After `true`, catch up from history before trusting the queue again.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

/// The sequencer's end of the feed.
pub struct Feed {
    subs: Vec<(flume::Sender<Arc<EventBatch>>, Arc<AtomicBool>)>,
}

impl Feed {
    /// A feed for `cores` subscribers, each queueing at most `depth` batches.
    pub fn new(cores: usize, depth: usize) -> (Feed, Vec<Subscription>) {
        let mut subs = Vec::with_capacity(cores);
        let mut ends = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) = flume::bounded(depth);
            let lagged = Arc::new(AtomicBool::new(false));
            subs.push((tx, lagged.clone()));
            ends.push(Subscription { rx, lagged });
        }
        *crate::metrics::FEED_QUEUES
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            subs.iter().map(|(tx, _)| tx.downgrade()).collect();
        (Feed { subs }, ends)
    }

    /// Marks every core lagged: the state jumped (a Raft snapshot was installed), so every
    /// watcher catches up from the history, which the snapshot carries.
    pub fn lag_all(&self) {
        for (_, lagged) in &self.subs {
            lagged.store(true, Ordering::Release);
        }
    }

    /// A feed nobody listens to (tests, tools).
    pub fn none() -> Feed {
        Feed { subs: Vec::new() }
    }

    pub fn publish(&self, batch: EventBatch) {
        if self.subs.is_empty() || batch.events.is_empty() {
            return;
        }
        let batch = Arc::new(batch);
        for (tx, lagged) in &self.subs {
            if tx.try_send(batch.clone()).is_err() {
                lagged.store(true, Ordering::Release);
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
        for rev in 2..6 {
            feed.publish(batch(rev));
        }
        assert!(subs[0].take_lagged());
        assert!(!subs[0].take_lagged());
        let got: Vec<i64> = subs[1].rx.try_iter().map(|b| b.revision).collect();
        assert_eq!(got, vec![2, 3]);
    }
}
