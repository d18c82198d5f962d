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

use std::collections::VecDeque;

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

/// Bytes of entry data kept behind a checkpoint for members that are behind, at most: 5,000
/// entries of 100 KiB would be 500 MB per member (etcd keeps them; a member further behind
/// gets a snapshot here).
pub const CATCH_UP_BYTES: u64 = 128 << 20;

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
    /// (etcd keeps as many after a snapshot), and of those no more than [`CATCH_UP_BYTES`]; a
    /// member further behind needs a snapshot.
    pub fn trim_log(&mut self, index: u64) -> Result<(), CoreError> {
        let upto = if self.status.is_sole_voter() && self.membership.members.len() == 1 {
            index
        } else {
            index
                .saturating_sub(self.catch_up_entries)
                .max(beyond_bytes(
                    &self.applied_bytes,
                    self.applied_bytes_base,
                    index,
                    self.catch_up_bytes,
                ))
        };
        while let Some(&(i, through)) = self.applied_bytes.front()
            && i <= upto
        {
            self.applied_bytes_base = through;
            self.applied_bytes.pop_front();
        }
        let store = self.raw.mut_store();
        let first = raft::Storage::first_index(store)?;
        if upto >= first {
            store.wl().compact(upto)?;
        }
        Ok(())
    }
}

/// The oldest entry of `applied` (index, cumulative bytes through it; in index order; `base`
/// the cumulative bytes before its first) such that the entries after it, up to `index`, hold
/// at most `bound` bytes: where the log must be trimmed to for the bound. 0 when every entry
/// listed up to `index` fits (entries older than the list are not counted).
fn beyond_bytes(applied: &VecDeque<(u64, u64)>, base: u64, index: u64, bound: u64) -> u64 {
    let at = applied.partition_point(|&(i, _)| i <= index);
    let Some(&(_, through)) = at.checked_sub(1).and_then(|k| applied.get(k)) else {
        return 0;
    };
    if through - base <= bound {
        return 0;
    }
    // Entries after `index` count as fitting, so the predicate stays monotonic.
    let k = applied.partition_point(|&(_, c)| through.saturating_sub(c) > bound);
    applied[k].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bound_keeps_the_newest_entries_that_fit() {
        // Entries 10..=14 of 100, 5, 5, 100, 5 bytes.
        let mut applied = VecDeque::new();
        let mut total = 0;
        for (i, len) in [(10, 100), (11, 5), (12, 5), (13, 100), (14, 5)] {
            total += len;
            applied.push_back((i, total));
        }
        // Behind 14: 13 and 14 (105) do not fit in 104, 14 alone does.
        assert_eq!(beyond_bytes(&applied, 0, 14, 104), 13);
        assert_eq!(beyond_bytes(&applied, 0, 14, 105), 12);
        assert_eq!(beyond_bytes(&applied, 0, 14, 115), 10);
        // Everything listed fits: nothing to trim for bytes.
        assert_eq!(beyond_bytes(&applied, 0, 14, 215), 0);
        assert_eq!(beyond_bytes(&applied, 0, 14, 1_000), 0);
        // Behind 12 (entries after it do not count): 11 and 12 fit in 10, 10 does not.
        assert_eq!(beyond_bytes(&applied, 0, 12, 10), 10);
        assert_eq!(beyond_bytes(&applied, 0, 12, 9), 11);
        assert_eq!(beyond_bytes(&applied, 0, 12, 4), 12);
        // After entries 10 and 11 left (base 105): 12 to 14 hold 110.
        applied.drain(..2);
        assert_eq!(beyond_bytes(&applied, 105, 14, 110), 0);
        assert_eq!(beyond_bytes(&applied, 105, 14, 109), 12);
        // Below the list, or an empty list: nothing known.
        assert_eq!(beyond_bytes(&applied, 105, 9, 0), 0);
        assert_eq!(beyond_bytes(&VecDeque::new(), 0, 14, 0), 0);
    }
}
