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
//! A proposal is matched to its waiter by the entry's context (this member's id and a sequence
//! number), so a follower's proposals, forwarded to the leader by raft-rs, are answered by the
//! follower from its own apply. A proposal whose entry never comes back (a leader change dropped
//! it) is answered with etcd's timeout error once its deadline passes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, HardState, Message};
use raft::{Config, RawNode, StateRole};
use retcd_engine::mvcc::{Applied, Mvcc, MvccError, RawEntry, StateSnapshot, WriteResult};
use retcd_engine::request::Request;
use retcd_engine::wal::Record;

use crate::feed::{EventBatch, Feed};
use crate::lessor::LeaseChange;
use crate::log::{LogStore, RecoveredLog, entry_record};
use crate::membership::{ATTRS_FORMAT, Member, MemberAttrs, Membership};

/// etcd's membership errors, checked before a change is proposed and again when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("member not found")]
    NotFound,
    #[error("peer URLs already exist")]
    PeerUrlExists,
    #[error("member is not a learner")]
    NotLearner,
    #[error("learner is not in sync with the leader")]
    LearnerNotReady,
    #[error("too many learners")]
    TooManyLearners,
    #[error("ID removed")]
    IdRemoved,
    #[error("not enough started members")]
    NotEnoughStarted,
    #[error("unhealthy cluster")]
    Unhealthy,
}

/// What a client sees of a failed proposal or read.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("server stopped")]
    Stopped,
    #[error("no leader")]
    NoLeader,
    #[error("not leader")]
    NotLeader,
    #[error("leader changed")]
    LeaderChanged,
    #[error("request timed out")]
    Timeout,
    #[error("request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    #[error(transparent)]
    Member(MemberError),
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
/// The membership after a change was applied.
pub type MembersReply = flume::Sender<Result<Arc<Membership>, ProposeError>>;
/// The index a linearizable read may be served at: it is applied when the reply comes.
pub type ReadReply = flume::Sender<Result<u64, ProposeError>>;
pub type DoneReply = flume::Sender<Result<(), ProposeError>>;

/// A request from some core: its encoded [`Request`] and where to send the outcome.
pub struct Proposal {
    pub data: Vec<u8>,
    pub reply: Reply,
}

/// A membership change as the Cluster service asks for it.
#[derive(Debug, Clone)]
pub enum MemberChange {
    Add {
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove(u64),
    Promote(u64),
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
}

/// Member state every core may read (response headers, Status, the Cluster service).
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub member_id: u64,
    pub cluster_id: u64,
    term: AtomicU64,
    leader: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
    last_index: AtomicU64,
    learner: AtomicBool,
    db_size: AtomicU64,
    db_size_in_use: AtomicU64,
    /// etcd's NOSPACE alarm: raised when a write would take the store past its quota, cleared by
    /// `alarm disarm`. Kept in memory (etcd persists its alarms; a restart clears this one).
    nospace: AtomicBool,
    members: ArcSwap<Membership>,
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
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }
    pub fn set_nospace(&self, raised: bool) {
        self.nospace.store(raised, Ordering::Release);
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
}

/// A page-store checkpoint in progress: the blocking job and the applied (index, term) it covers.
pub struct Checkpoint {
    pub job: retcd_engine::btree::SyncJob,
    pub applied: (u64, u64),
}

/// Messages for peers. A snapshot message goes with the state it stands for, captured when the
/// message left Raft (the peer transport streams it).
#[derive(Default)]
pub struct Outgoing {
    pub messages: Vec<Message>,
    pub snapshots: Vec<(Message, StateSnapshot)>,
}

/// A received Raft snapshot's entries, in key order.
pub type SnapshotEntries = Box<dyn Iterator<Item = Result<RawEntry, String>> + Send>;

/// One round's work for the caller: send `out` now, make `records` durable, then call
/// [`Core::persisted`].
pub struct Step {
    ready: raft::Ready,
    pub out: Outgoing,
    pub records: Vec<Record>,
}

enum Waiter {
    Write(Reply),
    Members(MembersReply),
    /// The sequencer's own proposals (lease revokes, checkpoints, publishing attributes).
    Internal,
}

struct Pending {
    waiter: Waiter,
    deadline: Instant,
    /// The leader when it was proposed (a changed leader makes the timeout etcd's "possibly due
    /// to previous leader failure").
    leader: u64,
}

/// Linearizable reads: queued until the next round, then one ReadIndex request per batch.
#[derive(Default)]
struct Reads {
    queued: Vec<ReadReply>,
    /// Batches asked for, by context; re-asked every [`READ_RETRY`] (raft-rs drops the request
    /// silently while there is no leader or the leader has not committed in its term).
    inflight: BTreeMap<u64, ReadBatch>,
    /// Batches whose index is known, waiting for the apply to reach it.
    waiting: VecDeque<(u64, Instant, Vec<ReadReply>)>,
    next_ctx: u64,
}

struct ReadBatch {
    readers: Vec<ReadReply>,
    asked: Instant,
    deadline: Instant,
}

/// How long a read-index request waits before it is asked again (etcd: 500 ms).
const READ_RETRY: Duration = Duration::from_millis(500);

/// Applied entries between page-store checkpoints.
const CHECKPOINT_ENTRIES: u64 = 10_000;

/// etcd's default --experimental-snapshot-catchup-entries.
pub const CATCH_UP_ENTRIES: u64 = 5_000;

/// Raft settings (etcd's flags, in ticks of --heartbeat-interval).
#[derive(Debug, Clone, Copy)]
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
}

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
    since_checkpoint: u64,
    /// Lease changes applied since the last [`Core::take_lease_changes`] (for the lessor).
    lease_changes: Vec<LeaseChange>,
    /// This member applied its own removal.
    removed: bool,
    /// A snapshot received from the leader, waiting for Raft to hand it over: (index, entries).
    incoming: Option<(u64, SnapshotEntries)>,
    /// A snapshot was installed since the last [`Core::take_installed`].
    installed: bool,
    /// Peers whose snapshot was not sent, to report to raft-rs before the next round.
    failed_snapshots: Vec<u64>,
}

fn context(member: u64, seq: u64) -> Vec<u8> {
    let mut c = Vec::with_capacity(16);
    c.extend_from_slice(&member.to_le_bytes());
    c.extend_from_slice(&seq.to_le_bytes());
    c
}

fn seq_of(member: u64, ctx: &[u8]) -> Option<u64> {
    if ctx.len() != 16 || u64::from_le_bytes(ctx[..8].try_into().ok()?) != member {
        return None;
    }
    Some(u64::from_le_bytes(ctx[8..].try_into().ok()?))
}

/// What a committed entry asks of the state machine.
enum Kind {
    Nothing,
    Request(Request),
    Members(Result<(), MemberError>),
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
        let storage = crate::log::storage(log, membership.conf_state(), mvcc.applied())?;
        let cfg = Config {
            id,
            election_tick: opts.election_ticks,
            heartbeat_tick: opts.heartbeat_ticks,
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
            since_checkpoint: 0,
            lease_changes: Vec::new(),
            removed: false,
            incoming: None,
            installed: false,
            failed_snapshots: Vec::new(),
        };
        if !core.membership.members.is_empty() {
            core.status.members.store(Arc::new(core.membership.clone()));
        }
        core.publish_status();
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
        }
        Ok(())
    }

    pub fn tick(&mut self, now: Instant) {
        self.raw.tick();
        self.expire(now);
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
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
    pub fn step(&mut self, m: Message) -> Result<(), CoreError> {
        // raft-rs treats an empty proposal as a bug of the caller (it panics); from the network
        // it is just a bad message.
        if m.get_msg_type() == raft::prelude::MessageType::MsgPropose && m.entries.is_empty() {
            tracing::warn!(from = m.from, "dropped an empty forwarded proposal");
            return Ok(());
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

    /// A snapshot message from the leader, with the state it stands for.
    pub fn receive_snapshot(
        &mut self,
        m: Message,
        entries: SnapshotEntries,
    ) -> Result<(), CoreError> {
        let index = m.get_snapshot().get_metadata().index;
        self.step(m)?;
        // Keep the state only if Raft took this snapshot (a stale one, from a deposed leader, is
        // ignored by raft-rs and must not replace the one it did take).
        let pending = self.raw.raft.raft_log.unstable.snapshot.as_ref();
        if pending.is_some_and(|s| s.get_metadata().index == index) {
            self.incoming = Some((index, entries));
        }
        Ok(())
    }

    /// A snapshot that could not be streamed, for [`Core::report_failures`].
    pub fn snapshot_failed(&mut self, to: u64) {
        self.failed_snapshots.push(to);
    }

    /// Tells raft-rs about snapshots that were not sent (outside a Ready's processing, as
    /// raft-rs requires).
    pub fn report_failures(&mut self) {
        for to in std::mem::take(&mut self.failed_snapshots) {
            self.report_snapshot(to, false);
        }
    }

    /// The outcome of streaming a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: u64, ok: bool) {
        self.raw.report_snapshot(
            to,
            if ok {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            },
        );
    }

    /// Whether a snapshot replaced the state since the last call (leases must be reloaded).
    pub fn take_installed(&mut self) -> bool {
        std::mem::take(&mut self.installed)
    }

    /// Splits `msgs` into plain messages and snapshots, capturing each snapshot's state now:
    /// raft-rs took its metadata (the applied index) from the storage since the last apply.
    fn outgoing(&mut self, msgs: Vec<Message>) -> Outgoing {
        let mut out = Outgoing::default();
        for m in msgs {
            if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                let state = self.mvcc.reader().state_snapshot();
                if state.applied().0 == m.get_snapshot().get_metadata().index {
                    out.snapshots.push((m, state));
                } else {
                    // Applies ran since raft-rs took the metadata (a leader that stepped down
                    // and applied before the message left): the state no longer matches it.
                    self.failed_snapshots.push(m.to);
                }
            } else {
                out.messages.push(m);
            }
        }
        out
    }

    /// Replaces the state with the snapshot Raft hands over (the one received with it).
    fn install(&mut self, snap: &raft::prelude::Snapshot) -> Result<(), CoreError> {
        let index = snap.get_metadata().index;
        let entries = match self.incoming.take() {
            Some((i, e)) if i == index => e,
            _ => {
                return Err(CoreError::BadEntry {
                    index,
                    reason: "Raft restored a snapshot whose state was not received".into(),
                });
            }
        };
        self.mvcc.install(entries, index)?;
        let membership = match self.mvcc.membership()? {
            Some(b) => Membership::decode(&b).map_err(|e| CoreError::BadEntry {
                index,
                reason: e.to_string(),
            })?,
            None => Membership::default(),
        };
        self.membership = membership;
        self.status.members.store(Arc::new(self.membership.clone()));
        self.raw.mut_store().set_snapshot_meta(
            index,
            snap.get_metadata().term,
            Some(self.membership.conf_state()),
        );
        // Every watcher catches up from the history the snapshot carries.
        self.feed.lag_all();
        self.feed.publish(EventBatch {
            revision: self.mvcc.revision(),
            events: Vec::new(),
        });
        self.installed = true;
        tracing::info!(
            index,
            revision = self.mvcc.revision(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// A peer's connection failed: raft-rs probes it again instead of streaming appends.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    fn next_context(&mut self) -> (u64, Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, context(self.status.member_id, seq))
    }

    fn wait(&mut self, seq: u64, waiter: Waiter, now: Instant) {
        self.pending.insert(
            seq,
            Pending {
                waiter,
                deadline: now + self.request_timeout,
                leader: self.raw.raft.leader_id,
            },
        );
    }

    /// Proposes one request; the reply goes out once it is applied (or fails, or times out).
    pub fn propose(&mut self, p: Proposal, now: Instant) {
        self.propose_waiter(p.data, Waiter::Write(p.reply), now);
    }

    /// Proposes a request of the sequencer's own; nobody waits for its outcome.
    pub fn propose_internal(&mut self, data: Vec<u8>, now: Instant) {
        self.propose_waiter(data, Waiter::Internal, now);
    }

    fn propose_waiter(&mut self, data: Vec<u8>, waiter: Waiter, now: Instant) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            fail(waiter, ProposeError::NoLeader);
            return;
        }
        let (seq, ctx) = self.next_context();
        match self.raw.propose(ctx, data) {
            Ok(()) => self.wait(seq, waiter, now),
            Err(_) => fail(waiter, ProposeError::NoLeader),
        }
    }

    /// Asks for a read index; the reply carries it once this member applied that far.
    pub fn read(&mut self, reply: ReadReply) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(ProposeError::NoLeader));
            return;
        }
        self.reads.queued.push(reply);
    }

    /// Asks Raft for one read index for every read queued since the last round.
    pub fn issue_reads(&mut self, now: Instant) {
        if self.reads.queued.is_empty() {
            return;
        }
        let ctx = self.reads.next_ctx;
        self.reads.next_ctx += 1;
        let readers = std::mem::take(&mut self.reads.queued);
        self.raw.read_index(ctx.to_le_bytes().to_vec());
        self.reads.inflight.insert(
            ctx,
            ReadBatch {
                readers,
                asked: now,
                deadline: now + self.request_timeout,
            },
        );
    }

    /// Starts a leadership transfer to `to`; the reply comes when `to` leads (or on timeout).
    pub fn transfer_leader(&mut self, to: u64, reply: DoneReply, now: Instant) {
        if !self.is_leader() {
            let _ = reply.send(Err(ProposeError::NotLeader));
            return;
        }
        if self.membership.voters().all(|m| m.id != to) {
            let _ = reply.send(Err(ProposeError::Member(MemberError::NotFound)));
            return;
        }
        if to == self.status.member_id {
            let _ = reply.send(Ok(()));
            return;
        }
        self.raw.transfer_leader(to);
        self.transfers.push((to, reply, now + self.request_timeout));
    }

    /// Proposes a membership change after etcd's checks; the reply carries the membership once
    /// the change is applied.
    pub fn change_members(&mut self, change: MemberChange, reply: MembersReply, now: Instant) {
        if let Err(e) = self.check_change(&change) {
            let _ = reply.send(Err(ProposeError::Member(e)));
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(ProposeError::NoLeader));
            return;
        }
        let (seq, ctx) = self.next_context();
        let proposed = match change {
            MemberChange::Update { id, peer_urls } => self.raw.propose(
                ctx,
                MemberAttrs {
                    id,
                    peer_urls: Some(peer_urls),
                    ..Default::default()
                }
                .encode(),
            ),
            other => {
                let mut cc = ConfChange::default();
                match other {
                    MemberChange::Add {
                        id,
                        peer_urls,
                        is_learner,
                    } => {
                        cc.set_change_type(if is_learner {
                            ConfChangeType::AddLearnerNode
                        } else {
                            ConfChangeType::AddNode
                        });
                        cc.node_id = id;
                        cc.context = Member {
                            id,
                            peer_urls,
                            is_learner,
                            ..Default::default()
                        }
                        .encode();
                    }
                    MemberChange::Remove(id) => {
                        cc.set_change_type(ConfChangeType::RemoveNode);
                        cc.node_id = id;
                    }
                    MemberChange::Promote(id) => {
                        cc.set_change_type(ConfChangeType::AddNode);
                        cc.node_id = id;
                    }
                    MemberChange::Update { .. } => unreachable!("handled above"),
                }
                self.raw.propose_conf_change(ctx, cc)
            }
        };
        match proposed {
            Ok(()) => self.wait(seq, Waiter::Members(reply), now),
            Err(_) => {
                let _ = reply.send(Err(ProposeError::NoLeader));
            }
        }
    }

    /// etcd's checks of a membership change against the applied membership (and, on the
    /// leader, the followers' progress).
    fn check_change(&self, change: &MemberChange) -> Result<(), MemberError> {
        let m = &self.membership;
        match change {
            MemberChange::Add {
                id,
                peer_urls,
                is_learner,
            } => {
                if m.is_removed(*id) {
                    return Err(MemberError::IdRemoved);
                }
                if m.members
                    .iter()
                    .any(|x| x.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(MemberError::PeerUrlExists);
                }
                if *is_learner && m.members.iter().filter(|x| x.is_learner).count() >= 1 {
                    return Err(MemberError::TooManyLearners);
                }
                if !is_learner {
                    // etcd's strict reconfiguration check: the new voter must not take the
                    // started members below a quorum, and every voter must be reachable.
                    let voters = m.voters().count() + 1;
                    if started(m.voters()) < voters / 2 + 1 {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    if self.is_leader() && self.active_voters() < m.voters().count() {
                        return Err(MemberError::Unhealthy);
                    }
                }
                Ok(())
            }
            MemberChange::Remove(id) => {
                let target = m.get(*id).ok_or(if m.is_removed(*id) {
                    MemberError::IdRemoved
                } else {
                    MemberError::NotFound
                })?;
                if !target.is_learner {
                    // etcd: the started voters left must make a quorum, and removing a voter
                    // that is up must leave a reachable quorum.
                    let voters = m.voters().count() - 1;
                    if started(m.voters().filter(|x| x.id != *id)) < voters / 2 + 1 {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    if self.is_leader()
                        && self.is_active(*id)
                        && self.active_voters() - 1 < voters / 2 + 1
                    {
                        return Err(MemberError::Unhealthy);
                    }
                }
                Ok(())
            }
            MemberChange::Promote(id) => {
                let target = m.get(*id).ok_or(MemberError::NotFound)?;
                if !target.is_learner {
                    return Err(MemberError::NotLearner);
                }
                // etcd: the learner's match must be at least 90% of the leader's.
                let leader_match = self.raw.raft.raft_log.last_index();
                let learner_match = self.raw.raft.prs().get(*id).map_or(0, |p| p.matched);
                if !self.is_leader() || (learner_match as f64) < leader_match as f64 * 0.9 {
                    return Err(MemberError::LearnerNotReady);
                }
                Ok(())
            }
            MemberChange::Update { id, peer_urls } => {
                m.get(*id).ok_or(MemberError::NotFound)?;
                if m.members
                    .iter()
                    .any(|x| x.id != *id && x.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(MemberError::PeerUrlExists);
                }
                Ok(())
            }
        }
    }

    fn is_active(&self, id: u64) -> bool {
        id == self.status.member_id || self.raw.raft.prs().get(id).is_some_and(|p| p.recent_active)
    }

    fn active_voters(&self) -> usize {
        self.membership
            .voters()
            .filter(|m| self.is_active(m.id))
            .count()
    }

    /// Proposes this member's name and client URLs when the membership does not list them yet
    /// (etcd's publish). Returns whether they are applied already.
    pub fn publish(&mut self, name: &str, client_urls: &[String], now: Instant) -> bool {
        let me = self.status.member_id;
        let Some(m) = self.membership.get(me) else {
            return false;
        };
        if m.name == name && m.client_urls == client_urls {
            return true;
        }
        let waiting = self
            .pending
            .values()
            .any(|p| matches!(p.waiter, Waiter::Internal) && p.deadline > now);
        if !waiting && self.raw.raft.leader_id != raft::INVALID_ID {
            let attrs = MemberAttrs {
                id: me,
                name: Some(name.to_owned()),
                client_urls: Some(client_urls.to_vec()),
                peer_urls: None,
            };
            self.propose_internal(attrs.encode(), now);
        }
        false
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
        Ok(Some(Step {
            ready: rd,
            out,
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

    fn read_state(&mut self, index: u64, ctx: &[u8]) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        if let Some(batch) = self.reads.inflight.remove(&u64::from_le_bytes(bytes)) {
            self.reads
                .waiting
                .push_back((index, batch.deadline, batch.readers));
        }
    }

    fn release_reads(&mut self) {
        let applied = self.mvcc.applied().0;
        let mut i = 0;
        while i < self.reads.waiting.len() {
            if self.reads.waiting[i].0 <= applied {
                let (index, _, readers) = self.reads.waiting.remove(i).expect("in bounds");
                for r in readers {
                    let _ = r.send(Ok(index));
                }
            } else {
                i += 1;
            }
        }
    }

    fn finish_transfers(&mut self) {
        let leader = self.raw.raft.leader_id;
        self.transfers.retain(|(to, reply, _)| {
            if *to == leader {
                let _ = reply.send(Ok(()));
                false
            } else {
                true
            }
        });
    }

    /// Fails what waited past its deadline and asks again for read indexes not answered yet.
    fn expire(&mut self, now: Instant) {
        let leader = self.raw.raft.leader_id;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            let p = self.pending.remove(&seq).expect("listed");
            fail(
                p.waiter,
                if p.leader != leader {
                    ProposeError::TimeoutDueToLeaderFail
                } else {
                    ProposeError::Timeout
                },
            );
        }
        let mut again = Vec::new();
        self.reads.inflight.retain(|ctx, b| {
            if b.deadline <= now {
                for r in b.readers.drain(..) {
                    let _ = r.send(Err(ProposeError::Timeout));
                }
                false
            } else {
                if now.duration_since(b.asked) >= READ_RETRY {
                    b.asked = now;
                    again.push(*ctx);
                }
                true
            }
        });
        for ctx in again {
            self.raw.read_index(ctx.to_le_bytes().to_vec());
        }
        // Reads whose index this member has not applied in time (it is cut off from the leader).
        self.reads.waiting.retain_mut(|(_, deadline, readers)| {
            if *deadline <= now {
                for r in readers.drain(..) {
                    let _ = r.send(Err(ProposeError::Timeout));
                }
                false
            } else {
                true
            }
        });
        self.transfers.retain(|(_, reply, deadline)| {
            if *deadline <= now {
                let _ = reply.send(Err(ProposeError::Timeout));
                false
            } else {
                true
            }
        });
    }

    fn decode(&mut self, e: &Entry) -> Result<Kind, CoreError> {
        let bad = |reason: String| CoreError::BadEntry {
            index: e.index,
            reason,
        };
        match e.get_entry_type() {
            EntryType::EntryNormal if e.data.is_empty() => Ok(Kind::Nothing),
            EntryType::EntryNormal if e.data[0] == ATTRS_FORMAT => {
                let a = MemberAttrs::decode(&e.data).map_err(|err| bad(err.to_string()))?;
                if self.membership.get(a.id).is_none() {
                    return Ok(Kind::Members(Err(MemberError::NotFound)));
                }
                self.membership.set_attrs(&a);
                Ok(Kind::Members(Ok(())))
            }
            EntryType::EntryNormal => Ok(Kind::Request(
                Request::decode(&e.data).map_err(|err| bad(err.to_string()))?,
            )),
            EntryType::EntryConfChange => {
                let cc: ConfChange = prost011::Message::decode(&e.data[..])
                    .map_err(|err| bad(format!("configuration change: {err}")))?;
                Ok(Kind::Members(self.apply_conf_change(&cc, e.index)?))
            }
            EntryType::EntryConfChangeV2 => {
                Err(bad("joint configuration changes are not used".into()))
            }
        }
    }

    /// Validates a committed configuration change against the membership (etcd's apply-time
    /// check); applies it to Raft and the membership unless it is refused.
    fn apply_conf_change(
        &mut self,
        cc: &ConfChange,
        index: u64,
    ) -> Result<Result<(), MemberError>, CoreError> {
        let id = cc.node_id;
        let m = &self.membership;
        let verdict = match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode if m.is_removed(id) => {
                Err(MemberError::IdRemoved)
            }
            ConfChangeType::AddNode if m.get(id).is_some_and(|x| !x.is_learner) => {
                Err(MemberError::NotLearner)
            }
            ConfChangeType::AddLearnerNode if m.get(id).is_some() => {
                Err(MemberError::PeerUrlExists)
            }
            ConfChangeType::RemoveNode if m.get(id).is_none() => Err(MemberError::NotFound),
            _ => Ok(()),
        };
        if verdict.is_err() {
            return Ok(verdict);
        }
        let cs = self.raw.apply_conf_change(cc)?;
        self.raw.mut_store().wl().set_conf_state(cs);
        match cc.get_change_type() {
            ConfChangeType::RemoveNode => {
                self.membership.remove(id);
                if id == self.status.member_id {
                    self.removed = true;
                }
            }
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                let member = if cc.context.is_empty() {
                    Member {
                        id,
                        ..Default::default()
                    }
                } else {
                    Member::decode(&cc.context).map_err(|err| CoreError::BadEntry {
                        index,
                        reason: err.to_string(),
                    })?
                };
                if member.id != id {
                    return Err(CoreError::BadEntry {
                        index,
                        reason: format!("member {:x} in a change of {id:x}", member.id),
                    });
                }
                self.membership.add(Member {
                    is_learner: learner,
                    ..member
                });
            }
        }
        debug_assert_eq!(
            self.membership
                .conf_state()
                .voters
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            self.raw.raft.prs().conf().voters().ids().iter().collect(),
            "the membership's voters are raft's"
        );
        Ok(Ok(()))
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<(), CoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let applied_before = self.mvcc.applied().0;
        let mut kinds = Vec::with_capacity(entries.len());
        let mut memberships: Vec<Option<Vec<u8>>> = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= applied_before {
                kinds.push(Kind::Nothing);
                memberships.push(None);
                continue;
            }
            let kind = self.decode(e)?;
            memberships.push(match kind {
                Kind::Members(Ok(())) => Some(self.membership.encode()),
                _ => None,
            });
            kinds.push(kind);
        }
        let batch: Vec<Applied<'_>> = entries
            .iter()
            .zip(&kinds)
            .zip(&memberships)
            .map(|((e, k), m)| Applied {
                index: e.index,
                term: e.term,
                request: match k {
                    Kind::Request(r) => Some(r),
                    _ => None,
                },
                membership: m.as_deref(),
            })
            .collect();
        let mut events = Vec::new();
        let mut results = self
            .mvcc
            .apply_with_events(&batch, &mut events)?
            .into_iter();
        drop(batch);
        self.feed.publish(EventBatch {
            revision: self.mvcc.revision(),
            events,
        });
        if memberships.iter().any(Option::is_some) {
            self.status.members.store(Arc::new(self.membership.clone()));
        }
        let me = self.status.member_id;
        let mut members_now: Option<Arc<Membership>> = None;
        for (e, kind) in entries.iter().zip(kinds) {
            if e.index <= applied_before {
                continue;
            }
            let result = match &kind {
                Kind::Request(_) => results.next(),
                _ => None,
            };
            if let (Kind::Request(req), Some(Ok(w))) = (&kind, &result) {
                LeaseChange::collect(req, w, &mut self.lease_changes);
            }
            let Some(p) = seq_of(me, &e.context).and_then(|s| self.pending.remove(&s)) else {
                continue;
            };
            match (p.waiter, kind) {
                (Waiter::Write(reply), Kind::Request(_)) => {
                    let _ = reply.send(match result.expect("a request has a result") {
                        Ok(w) => Ok(w),
                        Err(err) => Err(ProposeError::Apply(err)),
                    });
                }
                (Waiter::Members(reply), Kind::Members(r)) => {
                    let out = match r {
                        Ok(()) => Ok(members_now
                            .get_or_insert_with(|| Arc::new(self.membership.clone()))
                            .clone()),
                        Err(e) => Err(ProposeError::Member(e)),
                    };
                    let _ = reply.send(out);
                }
                (Waiter::Internal, _) => {}
                // raft-rs replaced the entry (a second configuration change while one was
                // pending becomes an empty entry).
                (waiter, _) => fail(waiter, ProposeError::LeaderChanged),
            }
        }
        self.since_checkpoint += entries.len() as u64;
        let (index, term) = self.mvcc.applied();
        let conf = memberships
            .iter()
            .any(Option::is_some)
            .then(|| self.membership.conf_state());
        self.raw.mut_store().set_snapshot_meta(index, term, conf);
        Ok(())
    }

    fn publish_status(&self) {
        let s = &self.status;
        let r = &self.raw.raft;
        s.term.store(r.term, Ordering::Release);
        s.leader.store(r.leader_id, Ordering::Release);
        s.commit.store(r.raft_log.committed, Ordering::Release);
        s.last_index
            .store(r.raft_log.last_index(), Ordering::Release);
        s.applied.store(self.mvcc.applied().0, Ordering::Release);
        s.learner.store(
            self.membership
                .get(s.member_id)
                .is_some_and(|m| m.is_learner),
            Ordering::Release,
        );
        s.db_size.store(self.mvcc.db_size(), Ordering::Release);
        s.db_size_in_use
            .store(self.mvcc.db_size_in_use(), Ordering::Release);
    }

    /// Publishes term and leader after a round that changed no entries (elections).
    pub fn refresh_status(&self) {
        self.publish_status();
    }

    /// The lease changes applied since the last call (grants, revokes, checkpoints), in order.
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.checkpoint_entries
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

    /// Fails every waiting proposal and read (shutdown).
    pub fn fail_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending) {
            fail(p.waiter, ProposeError::Stopped);
        }
        for r in self.reads.queued.drain(..) {
            let _ = r.send(Err(ProposeError::Stopped));
        }
        for (_, b) in std::mem::take(&mut self.reads.inflight) {
            for r in b.readers {
                let _ = r.send(Err(ProposeError::Stopped));
            }
        }
        for (_, _, readers) in self.reads.waiting.drain(..) {
            for r in readers {
                let _ = r.send(Err(ProposeError::Stopped));
            }
        }
        for (_, reply, _) in self.transfers.drain(..) {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
    }
}

/// Members that published their attributes (etcd's "started").
fn started<'a>(members: impl Iterator<Item = &'a Member>) -> usize {
    members.filter(|m| !m.name.is_empty()).count()
}

fn fail(waiter: Waiter, err: ProposeError) {
    match waiter {
        Waiter::Write(r) => {
            let _ = r.send(Err(err));
        }
        Waiter::Members(r) => {
            let _ = r.send(Err(err));
        }
        Waiter::Internal => {}
    }
}

fn hs_record(hs: &HardState) -> Record {
    Record::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}
