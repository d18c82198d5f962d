//! Rebuilding raft-rs's log storage from the WAL (DESIGN.md §2.3).
//!
//! The WAL is the durable log; raft-rs reads entries through `MemStorage`, an in-memory index of
//! the entries after the last checkpoint. Invariant: the storage holds exactly the entries the WAL
//! holds after the newest checkpoint, with a later entry at an index replacing every entry from
//! that index on (Raft's suffix overwrite), and a snapshot's checkpoint (one whose (index, term)
//! the log does not hold) replacing every entry written before it.

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::storage::{MemStorage, MemStorageCore, RaftState};
use raft::{GetEntriesContext, StorageError};
use retcd_engine::wal::Record;

/// Log state recovered from the WAL.
#[derive(Debug, Default)]
pub struct RecoveredLog {
    pub hard_state: HardState,
    /// (index, term) of the newest checkpoint: entries up to it are in the page store.
    pub checkpoint: (u64, u64),
    pub entries: Vec<Entry>,
}

/// Folds WAL records into the log they describe.
pub fn recover(records: &[Record]) -> RecoveredLog {
    let mut log = RecoveredLog::default();
    recover_onto(&mut log, records);
    log
}

/// Folds more WAL records (appended after those `log` was recovered from) into it.
pub fn recover_onto(log: &mut RecoveredLog, records: &[Record]) {
    for r in records {
        match r {
            Record::Entry {
                index,
                term,
                entry_type,
                data,
            } => {
                // Overwrite: drop every entry at or after this index.
                if let Some(first) = log.entries.first().map(|e| e.index) {
                    if *index < first {
                        log.entries.clear();
                    } else {
                        log.entries.truncate((*index - first) as usize);
                    }
                }
                if log
                    .entries
                    .last()
                    .is_some_and(|last| last.index + 1 != *index)
                {
                    // A gap: the WAL went on after the page store's applied index, which was ahead
                    // of the WAL's last entry (a damaged last entry that a checkpoint already held
                    // was cut as a torn tail, DESIGN.md §2.5). The entries before the gap can never
                    // be needed again; `storage` checks that the page store covers the gap.
                    log.entries.clear();
                }
                let mut e = Entry {
                    index: *index,
                    term: *term,
                    data: data.to_vec(),
                    ..Default::default()
                };
                e.set_entry_type(entry_type_of(*entry_type));
                log.entries.push(e);
            }
            Record::HardState { term, vote, commit } => {
                log.hard_state.term = *term;
                log.hard_state.vote = *vote;
                log.hard_state.commit = *commit;
            }
            Record::Checkpoint { index, term } => {
                if *index >= log.checkpoint.0 {
                    if replaces_log(&log.entries, *index, *term) {
                        // A snapshot installed at `index` (DESIGN.md §4.7): it replaced the
                        // whole log, so the entries read so far, those after `index` included,
                        // are the replaced log's and may conflict with the leader's. Only
                        // entries appended after this record continue the snapshot.
                        log.entries.clear();
                    }
                    log.checkpoint = (*index, *term);
                }
            }
        }
    }
    let cp = log.checkpoint.0;
    log.entries.retain(|e| e.index > cp);
}

/// etcd's restart as a standalone node (`--force-new-cluster`): the records that make `me` the
/// only member of the log's cluster — a committed RemoveNode for every other member that
/// `members` (the applied membership's ids, at `applied`) and the committed configuration
/// changes after it leave, appended after the commit index (so uncommitted entries are
/// overwritten, as etcd discards them), and the hard state committing them. Empty when `me` is
/// already alone.
pub fn force_new_cluster_records(
    log: &RecoveredLog,
    applied: u64,
    members: impl IntoIterator<Item = u64>,
    me: u64,
) -> Vec<Record> {
    use raft::prelude::{ConfChange, ConfChangeType};
    let commit = log.hard_state.commit.max(applied);
    let mut ids: std::collections::BTreeSet<u64> = members.into_iter().collect();
    for e in &log.entries {
        if e.index <= applied
            || e.index > commit
            || e.get_entry_type() != EntryType::EntryConfChange
        {
            continue;
        }
        if let Ok(cc) = <ConfChange as prost011::Message>::decode(&e.data[..]) {
            match cc.get_change_type() {
                ConfChangeType::RemoveNode => {
                    ids.remove(&cc.node_id);
                }
                _ => {
                    ids.insert(cc.node_id);
                }
            }
        }
    }
    let term = log.hard_state.term;
    let mut records: Vec<Record> = ids
        .iter()
        .filter(|id| **id != me)
        .enumerate()
        .map(|(i, id)| {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::RemoveNode);
            cc.node_id = *id;
            Record::Entry {
                index: commit + 1 + i as u64,
                term,
                entry_type: entry_type_byte(EntryType::EntryConfChange),
                data: Bytes::from(prost011::Message::encode_to_vec(&cc)),
            }
        })
        .collect();
    if records.is_empty() {
        return records;
    }
    records.push(Record::HardState {
        term,
        vote: log.hard_state.vote,
        commit: commit + records.len() as u64,
    });
    records
}

/// Whether a state at (`index`, `term`) — a Raft snapshot's — replaced the log `entries` rather
/// than being a state the log leads to. Raft installs a snapshot only over a log that does not
/// hold its (index, term) (raft-rs fast-forwards the commit index otherwise), and by log matching
/// no entry after a different entry at `index` can be in the leader's log; so the log is replaced
/// when its entry at `index` has another term, or when it ends before `index`. A checkpoint of
/// this log's own applied entry always finds that entry with its term, or finds it released with
/// the WAL segments before the log's first entry (nothing to compare: the log is kept).
fn replaces_log(entries: &[Entry], index: u64, term: u64) -> bool {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return false;
    };
    // `recover` keeps the entries contiguous (an overwrite truncates, a gap clears).
    debug_assert_eq!(last.index - first.index + 1, entries.len() as u64);
    if index < first.index {
        return false;
    }
    if index > last.index {
        return true;
    }
    let e = &entries[(index - first.index) as usize];
    debug_assert_eq!(e.index, index);
    e.term != term
}

pub fn entry_type_of(t: u8) -> EntryType {
    match t {
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    }
}

pub fn entry_type_byte(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

/// The WAL record of a raft entry.
pub fn entry_record(e: &Entry) -> Record {
    Record::Entry {
        index: e.index,
        term: e.term,
        entry_type: entry_type_byte(e.get_entry_type()),
        data: Bytes::copy_from_slice(&e.data),
    }
}

/// The first entries of a new cluster's log, as etcd writes them: one configuration change
/// adding each initial member (index 1.., term 1), committed. Every initial member writes the same.
pub fn bootstrap_records(members: &[crate::membership::Member]) -> Vec<Record> {
    use raft::prelude::{ConfChange, ConfChangeType};
    let mut records = Vec::with_capacity(members.len() + 1);
    for (i, m) in members.iter().enumerate() {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = m.id;
        cc.context = m.encode();
        records.push(Record::Entry {
            index: i as u64 + 1,
            term: 1,
            entry_type: entry_type_byte(EntryType::EntryConfChange),
            data: Bytes::from(prost011::Message::encode_to_vec(&cc)),
        });
    }
    records.push(Record::HardState {
        term: 1,
        vote: 0,
        commit: members.len() as u64,
    });
    records
}

/// raft-rs's view of the log: the in-memory entries after the last trim, and the snapshot a
/// follower that needs older entries gets: its metadata is the applied (index, term) and
/// configuration, kept current by the core after every apply; its data, the page store's state
/// at that index, is streamed by the peer transport (crate::core captures it when the message
/// leaves).
pub struct LogStore {
    mem: MemStorage,
    snapshot: std::cell::RefCell<raft::prelude::SnapshotMetadata>,
}

impl LogStore {
    pub fn wl(&self) -> std::sync::RwLockWriteGuard<'_, MemStorageCore> {
        self.mem.wl()
    }

    /// What a snapshot taken now holds: the applied (index, term) and the configuration there.
    pub fn set_snapshot_meta(&self, index: u64, term: u64, conf: Option<ConfState>) {
        let mut m = self.snapshot.borrow_mut();
        m.index = index;
        m.term = term;
        if let Some(c) = conf {
            m.set_conf_state(c);
        }
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot.borrow();
        if meta.index == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut s = Snapshot::default();
        *s.mut_metadata() = meta.clone();
        Ok(s)
    }
}

/// Builds raft-rs storage for the recovered log. `applied` is the page store's applied (index,
/// term), which may be newer than the WAL's last checkpoint (the page store was synced but the
/// checkpoint record not yet written) and never older (`Core::open` refuses that:
/// `CoreError::StoreBehindWal`).
pub fn storage(log: &RecoveredLog, conf: ConfState, applied: (u64, u64)) -> raft::Result<LogStore> {
    debug_assert!(
        applied.0 >= log.checkpoint.0,
        "a page store behind the WAL's checkpoint is refused before"
    );
    let storage = MemStorage::new();
    let base = applied;
    {
        let mut w = storage.wl();
        if base.0 == 0 {
            w.set_conf_state(conf.clone());
        } else {
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = base.0;
            snap.mut_metadata().term = base.1;
            *snap.mut_metadata().mut_conf_state() = conf.clone();
            w.apply_snapshot(snap)?;
        }
        // The page store may hold a snapshot's state whose Checkpoint record a crash kept out of
        // the WAL (DESIGN.md §4.7): then the WAL's entries are the log the snapshot replaced.
        let replaced = replaces_log(&log.entries, base.0, base.1);
        let newer: Vec<Entry> = log
            .entries
            .iter()
            .filter(|e| e.index > base.0 && !replaced)
            .cloned()
            .collect();
        if let Some(first) = newer.first() {
            // Entries must continue right after the state the page store holds (the WAL keeps
            // every segment that holds an entry newer than the checkpoint).
            if first.index > base.0 + 1 {
                return Err(raft::Error::Store(raft::StorageError::Other(
                    format!(
                        "WAL gap: the page store holds entries up to {}, the WAL's first later entry is {}",
                        base.0, first.index
                    )
                    .into(),
                )));
            }
        }
        if !newer.is_empty() {
            w.append(&newer)?;
        }
        let mut hs = log.hard_state.clone();
        hs.commit = hs.commit.max(base.0);
        // A new member starts in term 1 (as etcd's bootstrap does), so its first election makes
        // term 2, like etcd's.
        hs.term = hs.term.max(base.1).max(1);
        w.set_hardstate(hs);
    }
    let mut meta = raft::prelude::SnapshotMetadata {
        index: base.0,
        term: base.1,
        ..Default::default()
    };
    meta.set_conf_state(conf);
    Ok(LogStore {
        mem: storage,
        snapshot: std::cell::RefCell::new(meta),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Record {
        Record::Entry {
            index,
            term,
            entry_type: 0,
            data: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn overwrite_and_checkpoint() {
        let recs = vec![
            ent(1, 1),
            ent(2, 1),
            ent(3, 1),
            Record::HardState {
                term: 2,
                vote: 1,
                commit: 2,
            },
            ent(3, 2),
            ent(4, 2),
            Record::Checkpoint { index: 1, term: 1 },
        ];
        let log = recover(&recs);
        assert_eq!(
            log.entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(2, 1), (3, 2), (4, 2)]
        );
        assert_eq!(log.hard_state.term, 2);
        assert_eq!(log.checkpoint, (1, 1));
        let s = storage(&log, ConfState::from((vec![1], vec![])), (2, 1)).unwrap();
        use raft::Storage;
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.last_index().unwrap(), 4);
    }

    fn indexes_terms(log: &RecoveredLog) -> Vec<(u64, u64)> {
        log.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    /// A snapshot installed at 5 (term 2) over a log of term-1 entries 1..10: the Checkpoint
    /// record written after the install ends the log there, so entries 6..10 of term 1 (written
    /// before it, conflicting with the leader's log) do not come back; entries appended after
    /// the record do.
    #[test]
    fn a_snapshot_checkpoint_drops_the_suffix_it_replaced() {
        let conf = ConfState::from((vec![1], vec![]));
        let mut recs: Vec<Record> = (1..=10).map(|i| ent(i, 1)).collect();
        recs.push(Record::Checkpoint { index: 5, term: 2 });
        let log = recover(&recs);
        assert_eq!(log.checkpoint, (5, 2));
        assert_eq!(indexes_terms(&log), vec![]);
        let s = storage(&log, conf.clone(), (5, 2)).unwrap();
        use raft::Storage;
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));

        // The leader's entries after the snapshot, appended after the record, are the log.
        recs.extend([ent(6, 2), ent(7, 2)]);
        let log = recover(&recs);
        assert_eq!(indexes_terms(&log), vec![(6, 2), (7, 2)]);
        let s = storage(&log, conf.clone(), (5, 2)).unwrap();
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(s.term(6).unwrap(), 2);

        // A snapshot beyond the log's end: nothing of the old log survives either.
        let mut recs: Vec<Record> = (1..=10).map(|i| ent(i, 1)).collect();
        recs.extend([Record::Checkpoint { index: 15, term: 2 }, ent(16, 2)]);
        let log = recover(&recs);
        assert_eq!(indexes_terms(&log), vec![(16, 2)]);
    }

    /// An ordinary checkpoint (the page store's durable commit at an applied entry) keeps the
    /// entries after it, wherever they are in the WAL: they may be committed, not yet applied.
    #[test]
    fn an_ordinary_checkpoint_keeps_the_entries_after_it() {
        let mut recs: Vec<Record> = (1..=10).map(|i| ent(i, 1)).collect();
        recs.push(Record::Checkpoint { index: 5, term: 1 });
        let log = recover(&recs);
        assert_eq!(
            indexes_terms(&log),
            (6..=10).map(|i| (i, 1)).collect::<Vec<_>>()
        );
        // Its segment's entries up to the checkpoint were released: the checkpoint's own entry is
        // not in the WAL any more, and a copy of it opens the next segment.
        let recs = vec![
            Record::Checkpoint { index: 5, term: 1 },
            ent(9, 1),
            ent(10, 1),
            Record::Checkpoint { index: 8, term: 1 },
            ent(11, 1),
            Record::Checkpoint { index: 8, term: 1 },
        ];
        let log = recover(&recs);
        assert_eq!(indexes_terms(&log), vec![(9, 1), (10, 1), (11, 1)]);
        assert_eq!(log.checkpoint, (8, 1));
    }

    /// A crash after a snapshot's install synced the page store, before its Checkpoint record:
    /// the page store's applied (index, term) is the snapshot's, and the WAL's entries after
    /// that index, of another term at it, are the replaced log (DESIGN.md §4.7).
    #[test]
    fn a_page_store_ahead_of_the_wal_drops_the_suffix_a_snapshot_replaced() {
        let conf = ConfState::from((vec![1], vec![]));
        let recs: Vec<Record> = (1..=10).map(|i| ent(i, 1)).collect();
        let log = recover(&recs);
        let s = storage(&log, conf.clone(), (5, 2)).unwrap();
        use raft::Storage;
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));
        // Applied ahead of the checkpoint record by an ordinary durable commit: entry 5 is the
        // page store's, and the entries after it stay.
        let s = storage(&log, conf, (5, 1)).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 10));
    }

    #[test]
    fn gap_covered_by_the_page_store() {
        // Entry 3 was cut from the WAL after the page store had applied it; the log went on at 4.
        let recs = vec![ent(1, 1), ent(2, 1), ent(4, 2), ent(5, 2)];
        let log = recover(&recs);
        assert_eq!(
            log.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![4, 5]
        );
        let conf = ConfState::from((vec![1], vec![]));
        let s = storage(&log, conf.clone(), (3, 1)).unwrap();
        use raft::Storage;
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.last_index().unwrap(), 5);
        // Not covered: entries 2 and 3 are lost, which must not go unnoticed.
        let err = storage(&log, conf, (1, 1))
            .err()
            .expect("a gap the page store does not cover");
        assert!(err.to_string().contains("WAL gap"), "{err}");
    }
}
