//! What every core may read of this member's Raft state ([`NodeStatus`]): term, leader, commit
//! and applied indexes, the last log index, whether it is a learner, the page store's size, the
//! raised alarms and the applied membership (response headers, Status, the Cluster service).
//!
//! A leaf: it knows only [`crate::membership`], so the core, the lessor, the sequencer and net/
//! can share it without knowing each other.
//!
//! Invariants: only [`crate::core`] writes the Raft values and the membership (after each round,
//! and when an applied entry or an installed snapshot changed the membership); the fields are
//! `pub(crate)` for that alone; the alarms too, as applied (they change only through the log).
//! Everyone else reads, except for the membership a joining member fetched
//! ([`NodeStatus::seed_members`], at startup, before the core runs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use retcd_engine::mvcc::{ALARM_NOSPACE, Alarm, KvHash};

use crate::membership::Membership;

/// Member state every core may read (response headers, Status, the Cluster service).
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub member_id: u64,
    pub cluster_id: u64,
    pub(crate) term: AtomicU64,
    pub(crate) leader: AtomicU64,
    /// Times the leader became a member other than the last one known (etcd's
    /// `etcd_server_leader_changes_seen_total`).
    pub(crate) leader_changes: AtomicU64,
    pub(crate) commit: AtomicU64,
    pub(crate) applied: AtomicU64,
    /// This member leads, has committed an entry of its own term (so every entry of earlier
    /// terms it holds is committed: Raft's condition for serving reads) and has applied all
    /// that is committed.
    pub(crate) reads_current: AtomicBool,
    pub(crate) last_index: AtomicU64,
    pub(crate) learner: AtomicBool,
    pub(crate) db_size: AtomicU64,
    pub(crate) db_size_in_use: AtomicU64,
    /// The raised alarms as applied (etcd's alarm store), in (member, type) order.
    pub(crate) alarms: ArcSwap<Vec<Alarm>>,
    pub(crate) members: ArcSwap<Membership>,
    /// The compaction hashes of the latest compactions, newest last (etcd keeps 10).
    compact_hashes: std::sync::Mutex<std::collections::VecDeque<KvHash>>,
}

/// Compaction hashes a member keeps (etcd's hashStorage).
pub const COMPACT_HASHES: usize = 10;

impl NodeStatus {
    pub fn new(member_id: u64, cluster_id: u64) -> Self {
        NodeStatus {
            member_id,
            cluster_id,
            ..Default::default()
        }
    }
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }
    pub fn commit_index(&self) -> u64 {
        self.commit.load(Ordering::Acquire)
    }
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
    /// The index of the last entry in this member's log (etcd's raftIndex).
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Acquire)
    }
    pub fn is_learner(&self) -> bool {
        self.learner.load(Ordering::Acquire)
    }
    pub fn db_size(&self) -> u64 {
        self.db_size.load(Ordering::Acquire)
    }
    pub fn db_size_in_use(&self) -> u64 {
        self.db_size_in_use.load(Ordering::Acquire)
    }
    /// The raised alarms, in (member, type) order.
    pub fn alarms(&self) -> Arc<Vec<Alarm>> {
        self.alarms.load_full()
    }
    /// A NOSPACE alarm is raised (for any member): writes that add data are refused.
    pub fn nospace(&self) -> bool {
        self.alarms.load().iter().any(|a| a.alarm == ALARM_NOSPACE)
    }
    /// Records the hash of a compaction (the oldest of [`COMPACT_HASHES`] goes).
    pub fn record_compact_hash(&self, h: KvHash) {
        let mut q = self.compact_hashes.lock().expect("not poisoned");
        if q.len() == COMPACT_HASHES {
            q.pop_front();
        }
        q.push_back(h);
    }
    /// The recorded compaction hashes, newest first.
    pub fn compact_hashes(&self) -> Vec<KvHash> {
        let q = self.compact_hashes.lock().expect("not poisoned");
        q.iter().rev().copied().collect()
    }
    /// The hash recorded for the compaction to `revision`, if any.
    pub fn compact_hash(&self, revision: i64) -> Option<KvHash> {
        let q = self.compact_hashes.lock().expect("not poisoned");
        q.iter().find(|h| h.hash_revision == revision).copied()
    }
    /// The applied membership (before this member applied any: the one it joined with).
    pub fn members(&self) -> Arc<Membership> {
        self.members.load_full()
    }
    /// The membership a joining member fetched, until its own log replaces it.
    pub fn seed_members(&self, m: Membership) {
        self.members.store(Arc::new(m));
    }
    /// Whether this member is the only voter: then a write is acknowledged only once it is
    /// applied and published, so every read of the published state is linearizable without
    /// asking Raft for a read index.
    pub fn is_sole_voter(&self) -> bool {
        let m = self.members.load();
        let mut voters = m.voters();
        voters.next().is_some_and(|v| v.id == self.member_id) && voters.next().is_none()
    }
    /// Whether a sole voter's published state holds every acknowledged write: after a restart,
    /// writes acknowledged by the previous run are in the log but committed again only once the
    /// new term's first entry commits; until then a read must go through ReadIndex.
    pub fn sole_voter_reads_current(&self) -> bool {
        self.is_sole_voter() && self.reads_current.load(Ordering::Acquire)
    }
}
