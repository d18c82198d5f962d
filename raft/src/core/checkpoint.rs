//! Page-store checkpoints and trimming the in-memory Raft log behind them: counting the entries
//! applied since the last checkpoint, starting one (the page store's durable commit, whose
//! blocking job the sequencer runs off the core), the WAL record that ends it, and which
//! in-memory entries may then be dropped.
//!
//! Invariants: an entry leaves the in-memory log only after a checkpoint made its effects durable
//! in the page store and its record is in the WAL; while there are other members the last
//! `catch_up_entries` stay (etcd keeps as many after a snapshot), and a member further behind
//! gets a snapshot. Only the sequencer calls these, in the order `begin_checkpoint`, the job,
//! `finish_checkpoint`, the WAL append of its record, `trim_log`.

use retcd_engine::wal::Record;

use super::{Core, CoreError};

/// A page-store checkpoint in progress: the blocking job and the applied (index, term) it covers.
pub struct Checkpoint {
    pub job: retcd_engine::btree::SyncJob,
    pub applied: (u64, u64),
}

/// Applied entries between page-store checkpoints at most. Many, so that a leaf the writes of
/// many groups change is written once between two (engine/DESIGN.md §3.6; perf/findings.md §16);
/// etcd's --snapshot-count defaults to 100,000.
pub(super) const CHECKPOINT_ENTRIES: u64 = 50_000;

/// Bytes of applied entries between page-store checkpoints at most: the in-memory Raft log and
/// the WAL hold them until the next one, so large values bring it sooner.
pub(super) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// etcd's default --experimental-snapshot-catchup-entries.
pub const CATCH_UP_ENTRIES: u64 = 5_000;

impl Core {
    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.checkpoint_entries
            || self.since_checkpoint_bytes >= CHECKPOINT_BYTES
            || self.mvcc.wants_checkpoint()
    }

    pub fn applied_since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Starts a checkpoint: the page store's durable commit of everything applied so far. Run the
    /// job off the core; once it succeeded, [`Core::finish_checkpoint`] and append the returned
    /// record to the WAL, then [`Core::trim_log`].
    pub fn begin_checkpoint(&mut self) -> Result<Checkpoint, CoreError> {
        let (job, applied) = self.mvcc.begin_checkpoint()?;
        self.since_checkpoint = 0;
        self.since_checkpoint_bytes = 0;
        Ok(Checkpoint { job, applied })
    }

    /// The checkpoint's job ran: returns the WAL record that lets the log be trimmed up to it.
    pub fn finish_checkpoint(&mut self, cp: Checkpoint) -> Result<Record, CoreError> {
        self.mvcc.finish_checkpoint(cp.job);
        self.defrag_checkpointed()?;
        Ok(Record::Checkpoint {
            index: cp.applied.0,
            term: cp.applied.1,
        })
    }

    /// Drops in-memory log entries up to `index` (they are in the page store), keeping the last
    /// [`CATCH_UP_ENTRIES`] of them for members that are behind when there are other members
    /// (etcd keeps as many after a snapshot); a member further behind needs a snapshot.
    pub fn trim_log(&mut self, index: u64) -> Result<(), CoreError> {
        let upto = if self.status.is_sole_voter() && self.membership.members.len() == 1 {
            index
        } else {
            index.saturating_sub(self.catch_up_entries)
        };
        let store = self.raw.mut_store();
        let first = raft::Storage::first_index(store)?;
        if upto >= first {
            store.wl().compact(upto)?;
        }
        Ok(())
    }
}
