//! The deterministic core of a member: raft-rs `RawNode` + the MVCC apply, with no I/O of its own
//! (the page store's soft commits aside) and no clock of its own (callers pass `now`). The
//! [`crate::sequencer`] drives it; tests drive it directly.
//!
//! Protocol per round: [`Core::ready`] applies what Raft says is committed and returns a [`Step`]
//! with the messages that may go out at once (a leader's appends go to followers before its own
//! fsync, as etcd's do) and the records that must be durable (WAL) before [`Core::persisted`] may
//! be called with it; `persisted` returns the messages that had to wait for that fsync (votes,
//! a follower's acknowledgements).
//!
//! Invariants: an entry is applied only after it is committed; a client's reply is sent only after
//! its entry is applied (so it is durable on a quorum, and visible to every core's readers); the
//! applied index, the state it produced and the membership are committed together by the MVCC
//! store; the membership's voters and learners are raft-rs's configuration at the applied index.
//!
//! This module owns the [`Core`] itself (construction, ticks, peer messages, the Ready/persisted
//! round, publishing [`crate::status::NodeStatus`]); the rest of `Core`'s methods live with what
//! they own:
//! - `apply`: decoding committed entries, applying them to the MVCC store, answering waiters;
//! - `conf`: membership changes (etcd's checks, proposing, applying), attributes, leader transfer;
//! - `waiters`: pending proposals, their contexts and deadlines, expiry, failing them all;
//! - `reads`: linearizable reads, batched into ReadIndex requests and released once applied;
//! - `snapshot`: Raft snapshots received and installed, sent and reported;
//! - `checkpoint`: page-store checkpoints and trimming the in-memory log behind them.

mod apply;
mod checkpoint;
mod conf;
mod defrag;
mod reads;
mod snapshot;
mod waiters;

pub use checkpoint::{CATCH_UP_BYTES, CATCH_UP_ENTRIES, Checkpoint};
pub use conf::MemberChange;
pub use snapshot::SnapshotEntries;
pub use waiters::Proposal;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use raft::prelude::{HardState, Message};
use raft::{Config, RawNode, StateRole};
use retcd_engine::mvcc::{Mvcc, MvccError, StateSnapshot};
use retcd_engine::wal::Record;

use crate::feed::Feed;
use crate::lessor::LeaseChange;
use crate::log::{LogStore, RecoveredLog, entry_record};
use crate::membership::Membership;
use crate::reply::DoneReply;
use crate::status::NodeStatus;
use crate::tokens::SimpleTokens;

use checkpoint::CHECKPOINT_ENTRIES;
use reads::Reads;
use waiters::Pending;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("apply: {0}")]
    Mvcc(#[from] MvccError),
    #[error("raft log entry {index}: {reason}")]
    BadEntry { index: u64, reason: String },
    /// The recovered log cannot explain the state recorded with it: synced entries were lost
    /// (engine/DESIGN.md §2.5). The member must be rebuilt from its peers.
    #[error(
        "the WAL lost committed entries: its HardState commits up to index {commit} but the log ends at {last}; remove this member's data and re-add it to the cluster"
    )]
    LostEntries { commit: u64, last: u64 },
    /// The WAL's Checkpoint record says the page store held every entry up to `checkpoint`
    /// durably, and the page store holds less: its newest commit was damaged (a Checkpoint
    /// record is written only after the page store's durable commit, engine/DESIGN.md §2.3), and
    /// the entries between may be gone from the WAL.
    #[error(
        "the page store lost durable commits: it holds entries up to index {applied} but the WAL's checkpoint says {checkpoint} were stored; its data is damaged: remove this member's data and re-add it to the cluster"
    )]
    StoreBehindWal { applied: u64, checkpoint: u64 },
}

/// Messages for peers. A snapshot message goes with the state it stands for, captured when the
/// message left Raft (the peer transport streams it).
#[derive(Default)]
pub struct Outgoing {
    pub messages: Vec<Message>,
    pub snapshots: Vec<(Message, StateSnapshot)>,
}

/// One round's work for the caller: send `out` now, run `install_sync` (if any) and then
/// [`Core::finish_install_sync`], make `records` durable, then call [`Core::persisted`].
pub struct Step {
    ready: raft::Ready,
    pub out: Outgoing,
    /// The durable commit of the snapshot this round installed: `records` starts with the
    /// Checkpoint record at its index, which may be appended only once this job has run
    /// (engine/DESIGN.md §4.7). Run it off the core, as a checkpoint's.
    pub install_sync: Option<Checkpoint>,
    pub records: Vec<Record>,
}

/// Raft settings (etcd's flags, in ticks of --heartbeat-interval).
#[derive(Clone)]
pub struct CoreOptions {
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    /// How long a proposal or read may wait (etcd: 5 s + 2 × election timeout).
    pub request_timeout: Duration,
    /// etcd's --snapshot-count: applied entries between two checkpoints at most (fewer when
    /// [`CHECKPOINT_ENTRIES`] is smaller), after which the log is trimmed.
    pub snapshot_count: u64,
    /// etcd's --experimental-snapshot-catchup-entries: entries kept in memory behind a
    /// checkpoint for members that are behind; one further behind gets a snapshot.
    pub catch_up_entries: u64,
    /// Bytes of entry data kept behind a checkpoint at most, whatever `catch_up_entries` says
    /// (etcd has no such bound): with large values 5,000 entries are gigabytes of memory.
    pub catch_up_bytes: u64,
    /// Largest entry data a proposal may carry: what one WAL record holds
    /// (`Wal::max_entry_data`).
    pub max_entry_bytes: usize,
    /// The simple auth tokens the apply hands out and withdraws (read by every core).
    pub tokens: Arc<SimpleTokens>,
    /// Bytes of entry data a leader holds uncommitted before raft-rs drops new proposals
    /// (raft-rs's `max_uncommitted_size`; [`MAX_UNCOMMITTED_BYTES`] by default).
    pub max_uncommitted_bytes: u64,
}

/// How many bytes of proposals a leader keeps uncommitted at most. Without a bound, a leader cut
/// off from its quorum (or with slow followers) keeps every proposal of the request timeout in
/// memory; past it a proposal fails at once with etcd's "raft proposal dropped". A healthy
/// leader holds a few batches (2 MiB each) in flight, far below it; etcd's own server leaves
/// raft's bound unset, its example raft application uses 1 GiB.
pub const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;

/// raft-rs's per-message size (and so the smallest bound raft-rs accepts for uncommitted bytes).
const MAX_SIZE_PER_MSG: u64 = 1 << 20;

pub struct Core {
    raw: RawNode<LogStore>,
    mvcc: Mvcc,
    feed: Feed,
    status: Arc<NodeStatus>,
    membership: Membership,
    pending: BTreeMap<u64, Pending>,
    next_seq: u64,
    reads: Reads,
    transfers: Vec<(u64, DoneReply, Instant)>,
    request_timeout: Duration,
    checkpoint_entries: u64,
    catch_up_entries: u64,
    catch_up_bytes: u64,
    max_entry_bytes: usize,
    /// (index, bytes of entry data applied up to and including it since this core started) of
    /// each applied entry the in-memory log still holds, oldest first: what
    /// [`Core::trim_log`] measures `catch_up_bytes` with.
    applied_bytes: VecDeque<(u64, u64)>,
    /// The cumulative bytes before `applied_bytes`' first entry.
    applied_bytes_base: u64,
    since_checkpoint: u64,
    /// Bytes of the entries applied since the last checkpoint: the in-memory Raft log holds
    /// them until it (bounded by [`checkpoint::CHECKPOINT_BYTES`]).
    since_checkpoint_bytes: u64,
    /// Lease changes applied since the last [`Core::take_lease_changes`] (for the lessor).
    lease_changes: Vec<LeaseChange>,
    /// Compactions applied since the last [`Core::take_compactions`]: (target, previously
    /// compacted revision), for their compaction hashes.
    compactions: Vec<(i64, i64)>,
    tokens: Arc<SimpleTokens>,
    /// This member applied its own removal.
    removed: bool,
    /// This run's attributes proposal was applied: everything committed before the restart is
    /// applied too (it precedes that entry in the log), so clients may be served (etcd's
    /// publish, proposed on every start).
    published: bool,
    /// An online defragmentation in progress.
    defrag: Option<defrag::Running>,
    /// A snapshot received from the leader, waiting for Raft to hand it over: (index, entries).
    incoming: Option<(u64, SnapshotEntries)>,
    /// A snapshot was installed since the last [`Core::take_installed`].
    installed: bool,
    /// The durable commit of the snapshot installed by the current round, for its [`Step`].
    install_sync: Option<Checkpoint>,
    /// Peers whose snapshot was not sent, to report to raft-rs before the next round.
    failed_snapshots: Vec<u64>,
    /// Applied `physical` compactions, answered once no compaction is pending (etcd answers
    /// them once the compaction's deletion is done).
    physical: Vec<(crate::reply::Reply, retcd_engine::mvcc::WriteResult)>,
}

impl Core {
    /// A member over a recovered log, the MVCC store and the stored membership. `seq_base` makes
    /// this run's proposal contexts differ from an earlier run's (the clock in nanoseconds).
    pub fn new(
        mvcc: Mvcc,
        log: &RecoveredLog,
        membership: Membership,
        status: Arc<NodeStatus>,
        feed: Feed,
        opts: CoreOptions,
        seq_base: u64,
    ) -> Result<Core, CoreError> {
        let id = status.member_id;
        let applied = mvcc.applied().0;
        if applied < log.checkpoint.0 {
            return Err(CoreError::StoreBehindWal {
                applied,
                checkpoint: log.checkpoint.0,
            });
        }
        let storage = crate::log::storage(log, membership.conf_state(), mvcc.applied())?;
        {
            use raft::Storage;
            let (commit, last) = (log.hard_state.commit, storage.last_index()?);
            if commit > last {
                return Err(CoreError::LostEntries { commit, last });
            }
        }
        let cfg = Config {
            id,
            election_tick: opts.election_ticks,
            heartbeat_tick: opts.heartbeat_ticks,
            applied: mvcc.applied().0,
            max_size_per_msg: MAX_SIZE_PER_MSG,
            max_inflight_msgs: 256,
            max_uncommitted_size: opts.max_uncommitted_bytes.max(MAX_SIZE_PER_MSG),
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
            status,
            membership,
            pending: BTreeMap::new(),
            next_seq: seq_base,
            reads: Reads {
                next_ctx: seq_base,
                ..Default::default()
            },
            transfers: Vec::new(),
            request_timeout: opts.request_timeout,
            checkpoint_entries: opts.snapshot_count.clamp(1, CHECKPOINT_ENTRIES),
            catch_up_entries: opts.catch_up_entries,
            catch_up_bytes: opts.catch_up_bytes,
            max_entry_bytes: opts.max_entry_bytes,
            applied_bytes: VecDeque::new(),
            applied_bytes_base: 0,
            since_checkpoint: 0,
            since_checkpoint_bytes: 0,
            lease_changes: Vec::new(),
            compactions: Vec::new(),
            tokens: opts.tokens,
            removed: false,
            published: false,
            defrag: None,
            incoming: None,
            installed: false,
            install_sync: None,
            failed_snapshots: Vec::new(),
            physical: Vec::new(),
        };
        if !core.membership.members.is_empty() {
            core.status.members.store(Arc::new(core.membership.clone()));
        }
        core.publish_status();
        crate::metrics::count_keys(&core.mvcc);
        Ok(core)
    }

    /// A lone voter elects itself at once instead of waiting for an election timeout.
    pub fn campaign_if_alone(&mut self) -> Result<(), CoreError> {
        let voters = self.raw.raft.prs().conf().voters().ids().len();
        let me = self.status.member_id;
        if voters == 1
            && self.raw.raft.prs().conf().voters().contains(me)
            && self.raw.raft.state != StateRole::Leader
        {
            self.raw.campaign()?;
            // Elected within the campaign: say so now, before anything it proposes next is
            // applied (etcd's order of lines: elected, then published).
            self.publish_status();
        }
        Ok(())
    }

    /// etcd's --initial-election-tick-advance: a voter among several starts with its election
    /// clock two ticks short of the shortest timeout, so a new or restarted cluster elects a
    /// leader within a few ticks instead of a whole election timeout. Safe against disrupting a
    /// running leader: pre-vote with check-quorum makes members that hear from a leader refuse.
    /// Called once the log is replayed: raft-rs knows the voters only when the configuration
    /// changes in it are applied. A follower that hears a leader restarts its clock at the
    /// leader's next heartbeat anyway.
    pub fn advance_election_clock(&mut self) {
        let voters = self.raw.raft.prs().conf().voters().ids().len();
        if voters < 2 || self.raw.raft.state == StateRole::Leader {
            return;
        }
        let ticks = self.raw.raft.election_timeout().saturating_sub(2);
        for _ in 0..ticks {
            // Fewer ticks than the shortest randomized timeout: none of them campaigns.
            self.raw.tick();
        }
        tracing::info!(
            fast_forward_ticks = ticks,
            election_ticks = self.raw.raft.election_timeout(),
            voters,
            "fast-forwarded election ticks"
        );
    }

    pub fn tick(&mut self, now: Instant) {
        self.raw.tick();
        self.expire(now);
    }

    pub fn member_id(&self) -> u64 {
        self.status.member_id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// The status this core publishes.
    pub fn status(&self) -> &Arc<NodeStatus> {
        &self.status
    }
    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether this member applied its own removal (it must stop).
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// A message from a peer. What raft-rs refuses (a forwarded proposal that arrives while this
    /// member cannot take it, a late answer from a peer that left, a message type peers do not
    /// send) is dropped: the proposer's waiter times out, as a lost message would make it. Only a
    /// storage error stops the member.
    pub fn step(&mut self, mut m: Message) -> Result<(), CoreError> {
        // raft-rs treats an empty proposal as a bug of the caller (it panics); from the network
        // it is just a bad message.
        if m.get_msg_type() == raft::prelude::MessageType::MsgPropose && m.entries.is_empty() {
            tracing::warn!(from = m.from, "dropped an empty forwarded proposal");
            return Ok(());
        }
        // A member that lost its log and joined again as itself (its snap and wal moved away,
        // started with --initial-cluster-state existing) gets heartbeats committing what the
        // leader remembers it held; raft-rs panics on a commit index past the log. Committing
        // only what the log holds is what a follower may do anyway; the leader then finds the
        // log behind from the answers and sends the entries (or a snapshot).
        let last = self.raw.raft.raft_log.last_index();
        if m.get_msg_type() == raft::prelude::MessageType::MsgHeartbeat && m.commit > last {
            tracing::warn!(
                from = m.from,
                commit = m.commit,
                last_index = last,
                "a heartbeat commits past this member's log (its log was lost?); committing only what it holds"
            );
            m.commit = last;
        }
        match self.raw.step(m) {
            Ok(()) => Ok(()),
            Err(e @ raft::Error::Store(_)) => Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "dropped a peer message");
                Ok(())
            }
        }
    }

    /// A peer's connection failed: raft-rs probes it again instead of streaming appends.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Applies committed entries of the next Ready and returns what must be sent and persisted.
    pub fn ready(&mut self) -> Result<Option<Step>, CoreError> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        let out = self.outgoing(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install(&snap)?;
        }
        for rs in rd.take_read_states() {
            self.read_state(rs.index, &rs.request_ctx);
        }
        let committed = rd.take_committed_entries();
        self.apply(&committed)?;
        let mut records: Vec<Record> = Vec::new();
        if !rd.snapshot().is_empty() {
            // The page store holds the snapshot durably: the log may start after it.
            let m = rd.snapshot().get_metadata();
            records.push(Record::Checkpoint {
                index: m.index,
                term: m.term,
            });
        }
        records.extend(rd.entries().iter().map(entry_record));
        // A HardState whose only change is the commit index needs no fdatasync (etcd's
        // MustSync): the commit index is learnt again after a restart (from the leader, or by a
        // lone voter committing its whole log in its first term). Not writing it at all spares
        // a leader one fdatasync per commit advance.
        if let Some(hs) = rd.hs()
            && rd.must_sync()
        {
            records.push(hs_record(hs));
        }
        let install_sync = self.install_sync.take();
        assert_eq!(
            install_sync.is_some(),
            !rd.snapshot().is_empty(),
            "a round's install and its durable commit go together"
        );
        Ok(Some(Step {
            ready: rd,
            out,
            install_sync,
            records,
        }))
    }

    /// The step's records are durable: hand them to Raft's storage, apply what became committed
    /// and return the messages that waited for the fsync.
    pub fn persisted(&mut self, step: Step) -> Result<Outgoing, CoreError> {
        let Step { mut ready, .. } = step;
        {
            let store = self.raw.mut_store();
            let mut w = store.wl();
            if !ready.snapshot().is_empty() {
                w.apply_snapshot(ready.snapshot().clone())?;
            }
            if !ready.entries().is_empty() {
                w.append(ready.entries())?;
            }
            if let Some(hs) = ready.hs() {
                w.set_hardstate(hs.clone());
            }
        }
        let mut messages = ready.take_persisted_messages();
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().wl().mut_hard_state().commit = commit;
        }
        messages.extend(light.take_messages());
        let messages = self.outgoing(messages);
        let committed = light.take_committed_entries();
        self.apply(&committed)?;
        self.raw.advance_apply();
        self.release_reads();
        self.finish_transfers();
        self.publish_status();
        Ok(messages)
    }

    fn publish_status(&self) {
        let s = &self.status;
        let r = &self.raw.raft;
        s.term.store(r.term, Ordering::Release);
        let was = s.leader.swap(r.leader_id, Ordering::AcqRel);
        if r.leader_id != 0 && r.leader_id != was {
            s.leader_changes.fetch_add(1, Ordering::Relaxed);
            // etcd's raft node lines (tools wait for them).
            tracing::info!(
                "raft.node: {:x} elected leader {:x} at term {}",
                s.member_id,
                r.leader_id,
                r.term
            );
        } else if r.leader_id == 0 && was != 0 {
            tracing::info!(
                "raft.node: {:x} lost leader {:x} at term {}",
                s.member_id,
                was,
                r.term
            );
        }
        s.commit.store(r.raft_log.committed, Ordering::Release);
        s.last_index
            .store(r.raft_log.last_index(), Ordering::Release);
        s.applied.store(self.mvcc.applied().0, Ordering::Release);
        s.reads_current.store(
            r.state == StateRole::Leader
                && r.commit_to_current_term()
                && self.mvcc.applied().0 >= r.raft_log.committed,
            Ordering::Release,
        );
        s.learner.store(
            self.membership
                .get(s.member_id)
                .is_some_and(|m| m.is_learner),
            Ordering::Release,
        );
        s.db_size.store(self.mvcc.db_size(), Ordering::Release);
        s.db_size_in_use
            .store(self.mvcc.db_size_in_use(), Ordering::Release);
        if !self.mvcc.alarms_are(&s.alarms.load()) {
            s.alarms.store(Arc::new(self.mvcc.alarms()));
        }
    }

    /// Whether a compaction's dropped versions are still being deleted (engine/DESIGN.md §4.9).
    pub fn compaction_pending(&self) -> bool {
        self.mvcc.compaction_pending()
    }

    /// One bounded deletion batch of the pending compaction; the sequencer runs one between
    /// rounds, so applies keep flowing. Answers the `physical` compactions once none is pending.
    pub fn compact_step(&mut self) -> Result<(), CoreError> {
        self.mvcc.compact_step()?;
        if !self.mvcc.compaction_pending() {
            for (reply, result) in self.physical.drain(..) {
                let _ = reply.send(Ok(result));
            }
            self.publish_status();
        }
        Ok(())
    }

    /// Publishes term and leader after a round that changed no entries (elections).
    pub fn refresh_status(&self) {
        self.publish_status();
    }
}

/// What the simulator (`crate::sim`) needs of raft-rs's election timer. raft-rs draws each
/// randomized election timeout from `thread_rng` when a member's term or role changes; the
/// simulator replaces every draw with one from its seed, so that a run replays exactly.
#[cfg(feature = "sim")]
impl Core {
    /// (term, role, the randomized election timeout in ticks now in force).
    pub fn sim_election_timer(&self) -> (u64, StateRole, usize) {
        let r = &self.raw.raft;
        (r.term, r.state, r.randomized_election_timeout())
    }

    /// Sets the randomized election timeout, in `[election_ticks, 2 × election_ticks)`.
    pub fn sim_set_election_timeout(&mut self, ticks: usize) {
        self.raw.raft.set_randomized_election_timeout(ticks);
    }

    /// (commit index, last index) of raft-rs's log.
    pub fn sim_log(&self) -> (u64, u64) {
        let l = &self.raw.raft.raft_log;
        (l.committed, l.last_index())
    }
}

fn hs_record(hs: &HardState) -> Record {
    Record::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}
