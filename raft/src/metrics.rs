//! The metric cells of proposing and applying (etcd's `etcd_server_proposals_pending`,
//! `etcd_server_proposals_failed_total`, `etcd_server_slow_apply_total`,
//! `etcd_debugging_mvcc_keys_total`); read by net/src/metrics.rs. The Raft state metrics
//! (leader, indexes, leader changes) are read from [`crate::status::NodeStatus`] at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use retcd_engine::metrics::{Counter, Gauge, Histogram};

use crate::feed::EventBatch;
use retcd_engine::mvcc::{Event, EventKind, Mvcc};
use retcd_engine::request::RangeRequest;

/// Proposals handed to the sequencer and not yet answered.
pub static PROPOSALS_PENDING: Gauge = Gauge::new();
/// Proposals that failed before being applied (no leader, dropped, timed out, stopped); an
/// apply's own refusal (a compacted revision, say) is an answer, not a failure, as in etcd.
pub static PROPOSALS_FAILED: Counter = Counter::new();

/// Counts a proposal as pending while it lives.
pub(crate) struct Pending;

impl Pending {
    pub(crate) fn start() -> Pending {
        PROPOSALS_PENDING.add(1);
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PROPOSALS_PENDING.add(-1);
    }
}

/// Applies that took longer than [`slow_apply`] (`--experimental-warning-apply-duration`).
pub static SLOW_APPLIES: Counter = Counter::new();
static SLOW_APPLY_NANOS: AtomicU64 = AtomicU64::new(100_000_000);

/// What counts as a slow apply (etcd's default: 100 ms).
pub fn slow_apply() -> Duration {
    Duration::from_nanos(SLOW_APPLY_NANOS.load(Ordering::Relaxed))
}

/// Sets [`slow_apply`] (at start).
pub fn set_slow_apply(d: Duration) {
    SLOW_APPLY_NANOS.store(
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Bounds of [`GROUP_COMMIT_ENTRIES`]: 1 to 4096 entries, doubling.
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// `retcd_wal_group_commit_entries`: records in each WAL append (one fdatasync each).
pub static GROUP_COMMIT_ENTRIES: Histogram = Histogram::new(BATCH_BOUNDS);
/// `retcd_checkpoint_duration_seconds`: each checkpoint, from its start (the free list written)
/// to its Checkpoint record durable in the WAL.
pub static CHECKPOINT_SECONDS: Histogram = Histogram::new(retcd_engine::metrics::DISK_SECONDS);

/// Bounds of the write path's stage histograms: 10 µs to ~1.3 s, doubling (a stage takes
/// microseconds on a fast path and an fdatasync's milliseconds on a slow disk).
const STAGE_BOUNDS: &[f64] = &[
    0.000_01, 0.000_02, 0.000_04, 0.000_08, 0.000_16, 0.000_32, 0.000_64, 0.001_28, 0.002_56,
    0.005_12, 0.010_24, 0.020_48, 0.040_96, 0.081_92, 0.163_84, 0.327_68, 0.655_36, 1.310_72,
];
/// `retcd_proposal_duration_seconds`: a write from the serving core's point of view, from its
/// hand-over to the sequencer to its answer (queueing, Raft, WAL, apply and the hop back).
pub static PROPOSAL_SECONDS: Histogram = Histogram::new(STAGE_BOUNDS);
/// `retcd_sequencer_stage_duration_seconds{stage}`: where the sequencer's rounds go, one
/// observation per round and stage (issue 16's breakdown: divide each sum by the writes).
/// `ready`: raft-rs's Ready (stepping, log entries, messages); `wal`: the WAL append and its
/// fdatasync; `apply`: applying what is durable and committed, answering the callers;
/// `idle`: waiting for the next proposal, message or tick.
pub static STAGE_READY_SECONDS: Histogram = Histogram::new(STAGE_BOUNDS);
pub static STAGE_WAL_SECONDS: Histogram = Histogram::new(STAGE_BOUNDS);
pub static STAGE_APPLY_SECONDS: Histogram = Histogram::new(STAGE_BOUNDS);
pub static STAGE_IDLE_SECONDS: Histogram = Histogram::new(STAGE_BOUNDS);

/// The latest watch feed's queues, one per core, read at scrape time (weak: a scrape never keeps
/// a queue open).
pub(crate) static FEED_QUEUES: std::sync::Mutex<Vec<flume::WeakSender<Arc<EventBatch>>>> =
    std::sync::Mutex::new(Vec::new());

/// Each core's watch-feed depth (batches its watchers have not taken yet), in core order.
pub fn feed_queued() -> Vec<u64> {
    let queues = FEED_QUEUES.lock().unwrap_or_else(|e| e.into_inner());
    queues
        .iter()
        .map(|q| q.upgrade().map_or(0, |tx| tx.len() as u64))
        .collect()
}

/// Live keys in the store.
pub static KEYS: Gauge = Gauge::new();

/// Counts the live keys afresh (at start and after a snapshot replaced the store): a count-only
/// range over every key.
pub(crate) fn count_keys(mvcc: &Mvcc) {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    };
    match mvcc.reader().range(&all) {
        Ok(r) => KEYS.set(r.count),
        Err(e) => tracing::warn!(error = %e, "cannot count the keys"),
    }
}

/// Follows the live keys through an applied batch's events: a put of version 1 creates a key,
/// a delete ends one.
pub(crate) fn count_events(events: &[Event]) {
    let delta: i64 = events
        .iter()
        .map(|e| match e.kind {
            EventKind::Put if e.kv.version == 1 => 1,
            EventKind::Put => 0,
            EventKind::Delete => -1,
        })
        .sum();
    if delta != 0 {
        KEYS.add(delta);
    }
}

/// etcd's lease metrics (`etcd_debugging_lease_*`): grants and revokes as applied, renewals
/// (keep-alives) seen by the leader, and the granted TTLs.
pub static LEASES_GRANTED: Counter = Counter::new();
pub static LEASES_REVOKED: Counter = Counter::new();
pub static LEASES_RENEWED: Counter = Counter::new();
pub static LEASE_TTL_SECONDS: Histogram = Histogram::new(LEASE_TTL_BUCKETS);

/// `prometheus.ExponentialBuckets(1, 2, 24)`.
pub const LEASE_TTL_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0, 32768.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0, 2097152.0, 4194304.0,
    8388608.0,
];
