//! The deterministic core of a member: raft-rs `RawNode` + the MVCC apply, with no I/O of its own
//! (the page store's soft commits aside). The [`crate::sequencer`] drives it; tests drive it
//! directly.
//!
//! Protocol per round: [`Core::ready`] applies what Raft says is committed and returns a [`Step`]
//! with the records that must be durable (WAL) before [`Core::persisted`] may be called with it.
//! Invariants: an entry is applied only after it is committed; a client's reply is sent only after
//! its entry is applied (so it is durable on a quorum, and visible to every core's readers); the
//! applied index and the state it produced are committed together by the MVCC store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use raft::prelude::{ConfState, Entry, EntryType, HardState};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use retcd_engine::mvcc::{Applied, Mvcc, MvccError, WriteResult};
use retcd_engine::request::Request;
use retcd_engine::wal::Record;

use crate::feed::{EventBatch, Feed};
use crate::lessor::LeaseChange;
use crate::log::{RecoveredLog, entry_record};

/// What a client sees of a failed proposal.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("server stopped")]
    Stopped,
    #[error("no leader")]
    NoLeader,
    #[error("leader changed")]
    LeaderChanged,
    #[error(transparent)]
    Apply(MvccError),
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("apply: {0}")]
    Mvcc(#[from] MvccError),
    #[error("raft log entry {index}: {reason}")]
    BadEntry { index: u64, reason: String },
}

pub type Reply = flume::Sender<Result<WriteResult, ProposeError>>;

/// A request from some core: its encoded [`Request`] and where to send the outcome.
pub struct Proposal {
    pub data: Vec<u8>,
    pub reply: Reply,
}

/// Member state every core may read (response headers, Status).
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub member_id: u64,
    pub cluster_id: u64,
    term: AtomicU64,
    leader: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
    db_size: AtomicU64,
    db_size_in_use: AtomicU64,
    /// etcd's NOSPACE alarm: raised when a write would take the store past its quota, cleared by
    /// `alarm disarm`. Kept in memory (etcd persists its alarms; a restart clears this one).
    nospace: AtomicBool,
}

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
    pub fn commit_index(&self) -> u64 {
        self.commit.load(Ordering::Acquire)
    }
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
    pub fn db_size(&self) -> u64 {
        self.db_size.load(Ordering::Acquire)
    }
    pub fn db_size_in_use(&self) -> u64 {
        self.db_size_in_use.load(Ordering::Acquire)
    }
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }
    pub fn set_nospace(&self, raised: bool) {
        self.nospace.store(raised, Ordering::Release);
    }
}

/// A page-store checkpoint in progress: the blocking job and the applied (index, term) it covers.
pub struct Checkpoint {
    pub job: retcd_engine::btree::SyncJob,
    pub applied: (u64, u64),
}

/// One round's work for the caller: make `records` durable, then call [`Core::persisted`].
pub struct Step {
    ready: raft::Ready,
    pub records: Vec<Record>,
}

struct Pending {
    index: u64,
    term: u64,
    reply: Reply,
}

/// Applied entries between page-store checkpoints.
const CHECKPOINT_ENTRIES: u64 = 10_000;

pub struct Core {
    raw: RawNode<MemStorage>,
    mvcc: Mvcc,
    feed: Feed,
    pending: VecDeque<Pending>,
    status: Arc<NodeStatus>,
    since_checkpoint: u64,
    /// Lease changes applied since the last [`Core::take_lease_changes`] (for the lessor).
    lease_changes: Vec<LeaseChange>,
}

impl Core {
    /// A single-member (for now) node over a recovered log and the MVCC store.
    pub fn new(
        mvcc: Mvcc,
        log: &RecoveredLog,
        status: Arc<NodeStatus>,
        feed: Feed,
        heartbeat_ticks: usize,
        election_ticks: usize,
    ) -> Result<Core, CoreError> {
        let id = status.member_id;
        let conf = ConfState::from((vec![id], vec![]));
        let storage = crate::log::storage(log, conf, mvcc.applied())?;
        let cfg = Config {
            id,
            election_tick: election_ticks,
            heartbeat_tick: heartbeat_ticks,
            applied: mvcc.applied().0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        cfg.validate()?;
        let logger = crate::trace::logger();
        let raw = RawNode::new(&cfg, storage, &logger)?;
        let core = Core {
            raw,
            mvcc,
            feed,
            pending: VecDeque::new(),
            status,
            since_checkpoint: 0,
            lease_changes: Vec::new(),
        };
        core.publish_status();
        Ok(core)
    }

    /// A lone voter elects itself at once instead of waiting for an election timeout.
    pub fn campaign_if_alone(&mut self) -> Result<(), CoreError> {
        let voters = self.raw.raft.prs().conf().voters().ids().len();
        if voters == 1 && self.raw.raft.state != StateRole::Leader {
            self.raw.campaign()?;
        }
        Ok(())
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    /// Proposes one request; the reply goes out once it is applied (or fails).
    pub fn propose(&mut self, p: Proposal) {
        if !self.is_leader() {
            let _ = p.reply.send(Err(ProposeError::NoLeader));
            return;
        }
        match self.raw.propose(Vec::new(), p.data) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                debug_assert!(self.pending.back().is_none_or(|b| b.index < index));
                self.pending.push_back(Pending {
                    index,
                    term,
                    reply: p.reply,
                });
            }
            Err(_) => {
                let _ = p.reply.send(Err(ProposeError::NoLeader));
            }
        }
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Applies committed entries of the next Ready and returns what must be persisted.
    pub fn ready(&mut self) -> Result<Option<Step>, CoreError> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        // Single member: no messages to send yet (peers come with clustering).
        let committed = rd.take_committed_entries();
        self.apply(&committed)?;
        let mut records: Vec<Record> = rd.entries().iter().map(entry_record).collect();
        if let Some(hs) = rd.hs() {
            records.push(hs_record(hs));
        }
        Ok(Some(Step { ready: rd, records }))
    }

    /// The step's records are durable: hand them to Raft's storage and apply what became committed.
    pub fn persisted(&mut self, step: Step) -> Result<(), CoreError> {
        let Step { ready, .. } = step;
        {
            let store = self.raw.mut_store();
            let mut w = store.wl();
            if !ready.entries().is_empty() {
                w.append(ready.entries())?;
            }
            if let Some(hs) = ready.hs() {
                w.set_hardstate(hs.clone());
            }
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().wl().mut_hard_state().commit = commit;
        }
        let committed = light.take_committed_entries();
        self.apply(&committed)?;
        self.raw.advance_apply();
        self.publish_status();
        Ok(())
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<(), CoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let applied_before = self.mvcc.applied().0;
        let mut reqs: Vec<Option<Request>> = Vec::with_capacity(entries.len());
        for e in entries {
            let req = match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => {
                    Some(Request::decode(&e.data).map_err(|err| CoreError::BadEntry {
                        index: e.index,
                        reason: err.to_string(),
                    })?)
                }
                // Empty entries (a new leader's) and configuration changes carry no request; the
                // single member's configuration never changes.
                _ => None,
            };
            reqs.push(req);
        }
        let batch: Vec<Applied<'_>> = entries
            .iter()
            .zip(&reqs)
            .map(|(e, r)| Applied {
                index: e.index,
                term: e.term,
                request: r.as_ref(),
            })
            .collect();
        let mut events = Vec::new();
        let mut results = self
            .mvcc
            .apply_with_events(&batch, &mut events)?
            .into_iter();
        self.feed.publish(EventBatch {
            revision: self.mvcc.revision(),
            events,
        });
        for (e, r) in entries.iter().zip(&reqs) {
            if e.index <= applied_before {
                continue;
            }
            let result = if r.is_some() { results.next() } else { None };
            if let (Some(req), Some(Ok(w))) = (r, &result) {
                LeaseChange::collect(req, w, &mut self.lease_changes);
            }
            while let Some(p) = self.pending.front() {
                if p.index > e.index {
                    break;
                }
                let p = self.pending.pop_front().expect("front exists");
                if p.index == e.index && p.term == e.term {
                    let out = match result {
                        Some(Ok(w)) => Ok(w),
                        Some(Err(err)) => Err(ProposeError::Apply(err)),
                        None => Err(ProposeError::LeaderChanged),
                    };
                    let _ = p.reply.send(out);
                    break;
                }
                // The entry at that index is somebody else's: this proposal was dropped.
                let _ = p.reply.send(Err(ProposeError::LeaderChanged));
            }
        }
        self.since_checkpoint += entries.len() as u64;
        Ok(())
    }

    fn publish_status(&self) {
        let s = &self.status;
        s.term.store(self.raw.raft.term, Ordering::Release);
        s.leader.store(self.raw.raft.leader_id, Ordering::Release);
        s.commit
            .store(self.raw.raft.raft_log.committed, Ordering::Release);
        s.applied.store(self.mvcc.applied().0, Ordering::Release);
        s.db_size.store(self.mvcc.db_size(), Ordering::Release);
        s.db_size_in_use
            .store(self.mvcc.db_size_in_use(), Ordering::Release);
    }

    /// The lease changes applied since the last call (grants, revokes, checkpoints), in order.
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= CHECKPOINT_ENTRIES
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
        Ok(Checkpoint { job, applied })
    }

    /// The checkpoint's job ran: returns the WAL record that lets the log be trimmed up to it.
    pub fn finish_checkpoint(&mut self, cp: Checkpoint) -> Record {
        self.mvcc.finish_checkpoint(cp.job);
        Record::Checkpoint {
            index: cp.applied.0,
            term: cp.applied.1,
        }
    }

    /// Drops in-memory log entries up to `index` (they are in the page store).
    pub fn trim_log(&mut self, index: u64) -> Result<(), CoreError> {
        let store = self.raw.mut_store();
        let first = raft::Storage::first_index(store)?;
        if index >= first {
            store.wl().compact(index)?;
        }
        Ok(())
    }

    /// Fails every waiting proposal (shutdown).
    pub fn fail_pending(&mut self) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(ProposeError::Stopped));
        }
    }
}

fn hs_record(hs: &HardState) -> Record {
    Record::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}
