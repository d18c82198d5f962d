//! The sequencer: the task on core 0 that owns the [`Core`], the WAL and the proposal queue.
//!
//! Every core hands its writes to the sequencer through one bounded flume queue ([`Proposer`]).
//! The loop takes everything pending when the previous flush ended (bounded by a byte budget),
//! proposes it, writes the resulting records with one WAL append (one fdatasync), applies what is
//! committed and replies. While a flush is in progress, new proposals queue up: that is the group
//! commit. The queue's bound is the backpressure: a full queue makes callers wait.
//!
//! A second bounded queue carries everything else that drives Raft: messages from peers, reads
//! asking for a read index, membership changes and leader transfers ([`Input`]). Outgoing
//! messages go to the peers' outboxes ([`crate::transport::Router`]) without waiting.
//!
//! On each Raft tick the sequencer also runs the member's periodic duties: the lessor's
//! (`lease_duties`) and, when --auto-compaction-retention is set, the automatic compaction
//! ([`crate::compactor`]); both propose through the core like any request and never wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use retcd_engine::mvcc::{Mvcc, WriteResult};
use retcd_engine::page::StoreError;
use retcd_engine::request::{Caller, Request};

use crate::tokens::SimpleTokens;
use retcd_engine::runtime;
use retcd_engine::wal::{Record, Wal, WalError, WalOptions};
use tracing::{info, warn};

use bytes::Bytes;

use crate::compactor::{AutoCompactor, Retention};
use crate::core::{
    Checkpoint, Core, CoreError, CoreOptions, MemberChange, Outgoing, Proposal, SnapshotEntries,
};
use crate::feed::Feed;
use crate::lessor::{LeaseCall, LeaseHandle, Lessor, LessorOptions};
use crate::membership::{Member, Membership};
use crate::reply::{DoneReply, MembersReply, ProposeError, ReadReply};
use crate::status::NodeStatus;
use crate::transport::{PeerLink, Router, SnapshotJob};

/// The name of the thread a checkpoint's job runs on.
const CHECKPOINT_THREAD: &str = "retcd-checkpoint";

/// A checkpoint whose job ran, and how it went (`Err`: its thread could not start or panicked).
type JobDone = Result<Box<(Checkpoint, Result<(), StoreError>)>, String>;

#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("checkpoint: {0}")]
    Store(#[from] StoreError),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("stored membership: {0}")]
    Membership(String),
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// A read of the whole state (for a snapshot to a member) met damage in the page store: a
    /// leader that cannot send snapshots would hold back every member that needs one, so the
    /// member stops and another leads.
    #[error(
        "reading the state for a snapshot: {0}; this member's data is damaged: remove its data and re-add it to the cluster"
    )]
    Damaged(String),
}

#[derive(Debug, Clone)]
pub struct SequencerOptions {
    pub wal: WalOptions,
    /// Raft tick (etcd's --heartbeat-interval); the heartbeat is one tick.
    pub tick: Duration,
    /// Election timeout in ticks (etcd's --election-timeout / --heartbeat-interval).
    pub election_ticks: usize,
    /// etcd's --initial-election-tick-advance (see [`Core::advance_election_clock`]).
    pub initial_election_tick_advance: bool,
    /// Proposals that may wait in the queue before callers block.
    pub queue_depth: usize,
    /// Bytes of requests taken into one batch.
    pub max_batch_bytes: usize,
    /// Longest time between page-store checkpoints while writes are applied.
    pub checkpoint_interval: Duration,
    /// How often the lessor checkpoints the remaining TTL of long leases (etcd's default: 5 min).
    pub lease_checkpoint_interval: Duration,
    /// Lease calls (keep-alive, time-to-live, …) that may wait before callers block.
    pub lease_queue_depth: usize,
    /// etcd's --auth-token-ttl: how long a simple token lives after its last use.
    pub auth_token_ttl: Duration,
    /// Peer messages, reads and membership calls that may wait before their senders block.
    pub input_depth: usize,
    /// How long a proposal or a read waits before it fails (etcd: 5 s + 2 × election timeout).
    pub request_timeout: Duration,
    /// The initial members when this member bootstraps a new cluster (ignored once the log
    /// holds anything).
    pub bootstrap: Option<Vec<Member>>,
    /// etcd's --snapshot-count and --experimental-snapshot-catchup-entries (see
    /// [`CoreOptions`]).
    pub snapshot_count: u64,
    pub catch_up_entries: u64,
    /// Bytes of entry data kept behind a checkpoint at most (see [`CoreOptions`]).
    pub catch_up_bytes: u64,
    /// A leader's bound of uncommitted proposal bytes (see [`crate::core::MAX_UNCOMMITTED_BYTES`]).
    pub max_uncommitted_bytes: u64,
    /// What this member publishes about itself once it runs (etcd's name and client URLs).
    pub name: String,
    pub client_urls: Vec<String>,
    /// etcd's --auto-compaction-mode / --auto-compaction-retention (`None`: retention 0, off).
    pub auto_compaction: Option<Retention>,
    /// How often revision-mode auto compaction checks (etcd: 5 min; shorter in tests).
    pub revision_compaction_interval: Duration,
    /// etcd's --force-new-cluster: a member with a log restarts as the only member of its
    /// cluster ([`crate::log::force_new_cluster_records`]).
    pub force_new_cluster: bool,
}

impl SequencerOptions {
    pub fn new(wal: WalOptions) -> Self {
        SequencerOptions {
            wal,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            initial_election_tick_advance: true,
            queue_depth: 16_384,
            max_batch_bytes: 2 << 20,
            checkpoint_interval: Duration::from_secs(5),
            lease_checkpoint_interval: crate::lessor::DEFAULT_CHECKPOINT_INTERVAL,
            lease_queue_depth: 4096,
            auth_token_ttl: Duration::from_secs(300),
            input_depth: 4096,
            request_timeout: Duration::from_secs(7),
            snapshot_count: 100_000,
            catch_up_entries: crate::core::CATCH_UP_ENTRIES,
            catch_up_bytes: crate::core::CATCH_UP_BYTES,
            max_uncommitted_bytes: crate::core::MAX_UNCOMMITTED_BYTES,
            bootstrap: None,
            name: String::new(),
            client_urls: Vec::new(),
            auto_compaction: None,
            revision_compaction_interval: crate::compactor::REVISION_INTERVAL,
            force_new_cluster: false,
        }
    }
}

/// What drives Raft besides client writes.
pub enum Input {
    /// Encoded messages from a peer.
    Messages(Vec<Bytes>),
    /// A peer's connection failed.
    Unreachable(u64),
    Read(ReadReply),
    Members(MemberChange, MembersReply),
    TransferLeader(u64, DoneReply),
    /// Where a leader that stops hands its leadership (see [`Core::stop_transferee`]).
    StopTransferee(flume::Sender<Result<Option<u64>, ProposeError>>),
    /// A peer said this member was removed from the cluster.
    Removed,
    /// A snapshot from the leader (the encoded message) with its state.
    Snapshot(Bytes, SnapshotEntries),
    /// How streaming a snapshot to a member ended.
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// Reading the state for a snapshot met damage in the page store (the error): the
    /// sequencer stops with [`SequencerError::Damaged`].
    Damaged(String),
    /// Maintenance.Defragment of this member's page store: answered when it ends.
    Defragment(DoneReply),
    /// A page-store checkpoint of everything applied so far (a graceful stop's, so that the
    /// db file alone holds the state, as etcd's backend commit on close): answered when a
    /// checkpoint begun after the request is durable.
    Checkpoint(DoneReply),
}

/// What the peer transport serves: the outboxes of peers and the snapshots to stream.
pub struct PeerQueues {
    pub links: flume::Receiver<PeerLink>,
    pub snapshots: flume::Receiver<SnapshotJob>,
}

/// Hands requests to the sequencer; cheap to clone, usable from any core.
#[derive(Clone)]
pub struct Proposer {
    tx: flume::Sender<Proposal>,
    inputs: flume::Sender<Input>,
}

/// What the peer transport gives the sequencer: the peers' messages and their failures.
#[derive(Clone)]
pub struct PeerInbox {
    inputs: flume::Sender<Input>,
}

impl PeerInbox {
    /// Hands a peer's messages to Raft (waits while the input queue is full).
    pub async fn deliver(&self, msgs: Vec<Bytes>) -> Result<(), ProposeError> {
        self.inputs
            .send_async(Input::Messages(msgs))
            .await
            .map_err(|_| ProposeError::Stopped)
    }

    /// Tells Raft that a peer's connection failed (dropped when the queue is full: the next
    /// failure reports it again).
    pub fn unreachable(&self, id: u64) {
        let _ = self.inputs.try_send(Input::Unreachable(id));
    }

    /// A peer refused this member as removed: the sequencer stops.
    pub async fn removed(&self) {
        let _ = self.inputs.send_async(Input::Removed).await;
    }

    /// A snapshot received from the leader (waits while the input queue is full).
    pub async fn snapshot(
        &self,
        message: Bytes,
        entries: SnapshotEntries,
    ) -> Result<(), ProposeError> {
        self.inputs
            .send_async(Input::Snapshot(message, entries))
            .await
            .map_err(|_| ProposeError::Stopped)
    }

    /// How streaming a snapshot to `to` ended.
    pub async fn snapshot_sent(&self, to: u64, ok: bool) {
        let _ = self.inputs.send_async(Input::SnapshotSent { to, ok }).await;
    }

    /// Reading the state for a snapshot met damage in the page store.
    pub async fn damaged(&self, error: String) {
        let _ = self.inputs.send_async(Input::Damaged(error)).await;
    }
}

impl Proposer {
    async fn ask<T>(
        &self,
        make: impl FnOnce(flume::Sender<Result<T, ProposeError>>) -> Input,
    ) -> Result<T, ProposeError> {
        let (reply, rx) = flume::bounded(1);
        self.inputs
            .send_async(make(reply))
            .await
            .map_err(|_| ProposeError::Stopped)?;
        rx.recv_async().await.map_err(|_| ProposeError::Stopped)?
    }

    /// Waits until this member has applied everything committed when the call was made, as
    /// confirmed by the leader (Raft's ReadIndex); returns that index.
    pub async fn read_index(&self) -> Result<u64, ProposeError> {
        self.ask(Input::Read).await
    }

    /// Proposes a membership change; returns the membership once it is applied.
    pub async fn change_members(
        &self,
        change: MemberChange,
    ) -> Result<std::sync::Arc<Membership>, ProposeError> {
        self.ask(|r| Input::Members(change, r)).await
    }

    /// Defragments this member's page store online (raft/src/core/defrag.rs); returns when
    /// it is done.
    pub async fn defragment(&self) -> Result<(), ProposeError> {
        self.ask(Input::Defragment).await
    }

    /// Checkpoints the page store (see [`Input::Checkpoint`]); returns when it is durable.
    pub async fn checkpoint(&self) -> Result<(), ProposeError> {
        self.ask(Input::Checkpoint).await
    }

    /// The voter a leader that stops should hand its leadership to, if any.
    pub async fn stop_transferee(&self) -> Result<Option<u64>, ProposeError> {
        self.ask(Input::StopTransferee).await
    }

    /// Hands leadership to `to` (this member must lead); returns once `to` leads.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ProposeError> {
        self.ask(|r| Input::TransferLeader(to, r)).await
    }

    /// Proposes the member's own `req` (checked against no caller) and waits until it is
    /// applied (durable on a quorum).
    pub async fn propose(&self, req: &Request) -> Result<WriteResult, ProposeError> {
        self.propose_bytes(req.encode()).await
    }

    /// Raises (`activate`) or clears alarm type `alarm` for `member_id` through Raft (the
    /// member's own request: callers check a client's rights first); waits until applied.
    pub async fn propose_alarm(
        &self,
        activate: bool,
        member_id: u64,
        alarm: i32,
    ) -> Result<WriteResult, ProposeError> {
        let req = Request::Alarm(retcd_engine::request::AlarmRequest {
            activate,
            member_id,
            alarm,
        });
        self.propose(&req).await
    }

    /// Proposes a client's `req`, which the apply checks against `caller`'s permissions at its
    /// place in the log; waits until it is applied.
    pub async fn propose_as(
        &self,
        req: &Request,
        caller: &Caller,
    ) -> Result<WriteResult, ProposeError> {
        self.propose_bytes(req.encode_as(caller)).await
    }

    async fn propose_bytes(&self, data: Vec<u8>) -> Result<WriteResult, ProposeError> {
        let _pending = crate::metrics::Pending::start();
        let started = Instant::now();
        let result = async {
            let (reply, rx) = flume::bounded(1);
            self.tx
                .send_async(Proposal { data, reply })
                .await
                .map_err(|_| ProposeError::Stopped)?;
            rx.recv_async().await.map_err(|_| ProposeError::Stopped)?
        }
        .await;
        if let Err(e) = &result
            && !matches!(e, ProposeError::Apply(_) | ProposeError::Member(_))
        {
            crate::metrics::PROPOSALS_FAILED.inc();
        }
        crate::metrics::PROPOSAL_SECONDS.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Proposals queued for the sequencer and not yet taken (retcd's own metric).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// The sequencer before it runs: create it anywhere, run it on core 0.
pub struct Sequencer {
    opts: SequencerOptions,
    mvcc: Mvcc,
    status: Arc<NodeStatus>,
    feed: Feed,
    rx: flume::Receiver<Proposal>,
    inputs_tx: flume::Sender<Input>,
    inputs: flume::Receiver<Input>,
    links: flume::Sender<PeerLink>,
    snapshots: flume::Sender<SnapshotJob>,
    leases: LeaseHandle,
    lease_rx: flume::Receiver<LeaseCall>,
    tokens: Arc<SimpleTokens>,
}

impl Sequencer {
    /// The sequencer, the handle for clients' requests, and the queue on which it announces each
    /// peer it starts talking to (for the peer transport).
    pub fn new(
        opts: SequencerOptions,
        mvcc: Mvcc,
        status: Arc<NodeStatus>,
        feed: Feed,
    ) -> (Sequencer, Proposer, PeerQueues) {
        let (tx, rx) = flume::bounded(opts.queue_depth);
        let tokens = Arc::new(SimpleTokens::new(opts.auth_token_ttl));
        let (inputs_tx, inputs) = flume::bounded(opts.input_depth);
        let (leases, lease_rx) = LeaseHandle::channel(opts.lease_queue_depth);
        // Peers are members: the bound is never reached in practice.
        let (links, links_rx) = flume::bounded(64);
        let (snapshots, snapshots_rx) = flume::bounded(crate::transport::SNAPSHOT_DEPTH);
        (
            Sequencer {
                opts,
                mvcc,
                status,
                feed,
                rx,
                inputs_tx: inputs_tx.clone(),
                inputs,
                links,
                snapshots,
                tokens,
                leases,
                lease_rx,
            },
            Proposer {
                tx,
                inputs: inputs_tx,
            },
            PeerQueues {
                links: links_rx,
                snapshots: snapshots_rx,
            },
        )
    }

    /// Where the peer transport delivers messages.
    pub fn peer_inbox(&self) -> PeerInbox {
        PeerInbox {
            inputs: self.inputs_tx.clone(),
        }
    }

    /// Reaches this member's lessor (lease grant, keep-alive, time-to-live, list) from any core.
    pub fn lease_handle(&self) -> LeaseHandle {
        self.leases.clone()
    }

    /// The simple auth tokens this member's apply hands out, for every core's services.
    pub fn tokens(&self) -> Arc<SimpleTokens> {
        self.tokens.clone()
    }

    /// Recovers the log and runs until every [`Proposer`] is dropped or an error stops it.
    /// `started` is called once recovery is complete and the member serves writes.
    pub async fn run(self, started: impl FnOnce()) -> Result<(), SequencerError> {
        let Sequencer {
            opts,
            mvcc,
            status,
            feed,
            rx,
            // Held until the sequencer stops: the input and lease queues never read as
            // disconnected.
            inputs_tx: _own_inputs,
            inputs,
            links,
            snapshots,
            leases: _own_handle,
            lease_rx,
            tokens,
        } = self;
        let seq_base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let Opened {
            mut wal,
            mut core,
            replay_to,
        } = open(&opts, mvcc, status, feed, tokens.clone(), seq_base).await?;
        let mut lessor = new_lessor(
            &opts,
            &core,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            Instant::now(),
        )?;
        core.campaign_if_alone()?;
        let mut leases = Leases {
            lessor: &mut lessor,
            rx: &lease_rx,
        };
        let mut io = Io {
            wal: &mut wal,
            router: Router::new(links, snapshots),
            unreachable: Vec::new(),
        };
        let result = drive(
            &mut core,
            &mut io,
            &rx,
            &inputs,
            &opts,
            &mut leases,
            (replay_to, started),
        )
        .await;
        core.fail_pending();
        result
    }
}

/// A member's storage as a start finds it, with the [`Core`] over it.
pub(crate) struct Opened {
    pub(crate) wal: Wal,
    pub(crate) core: Core,
    /// The commit index recorded before the restart: the member serves once it applied this far.
    pub(crate) replay_to: u64,
}

/// Recovers a member from its files: the WAL's records into raft-rs's log (bootstrapping a new
/// cluster's log when there is nothing yet), the membership the page store holds, and the
/// [`Core`] over them. Every start goes through here, the simulator's restarts included, so
/// that what a crash leaves is recovered by the code that recovers it in production.
/// `seq_base` makes this run's proposal contexts differ from an earlier run's.
pub(crate) async fn open(
    opts: &SequencerOptions,
    mvcc: Mvcc,
    status: Arc<NodeStatus>,
    feed: Feed,
    tokens: Arc<SimpleTokens>,
    seq_base: u64,
) -> Result<Opened, SequencerError> {
    let (mut wal, recovered) = Wal::open(opts.wal.clone()).await?;
    if let Some((file, offset)) = &recovered.truncated_tail {
        warn!(file = %file.display(), offset, "WAL: truncated a torn tail (an unacknowledged write)");
    }
    let mut log = crate::log::recover(&recovered.records);
    drop(recovered);
    if let Some(members) = &opts.bootstrap
        && log.entries.is_empty()
        && log.hard_state.term == 0
        && mvcc.applied().0 == 0
    {
        // A new cluster: the initial members' configuration changes open the log.
        let records = crate::log::bootstrap_records(members);
        wal.append(&records).await?;
        log = crate::log::recover(&records);
        info!(members = members.len(), "bootstrapped a new cluster");
    }
    let membership = match mvcc.membership().map_err(CoreError::Mvcc)? {
        Some(bytes) => {
            Membership::decode(&bytes).map_err(|e| SequencerError::Membership(e.to_string()))?
        }
        None => Membership::default(),
    };
    if membership.is_removed(status.member_id) {
        return Err(SequencerError::Removed);
    }
    if opts.force_new_cluster {
        let ids = membership.members.iter().map(|m| m.id);
        let records =
            crate::log::force_new_cluster_records(&log, mvcc.applied().0, ids, status.member_id);
        if !records.is_empty() {
            warn!(
                local_member_id = %format!("{:x}", status.member_id),
                removed_members = records.len() - 1,
                commit_index = log.hard_state.commit,
                "forcing restart member as a one-member cluster (--force-new-cluster)"
            );
            wal.append(&records).await?;
            crate::log::recover_onto(&mut log, &records);
        }
    }
    info!(
        applied = mvcc.applied().0,
        revision = mvcc.revision(),
        wal_entries = log.entries.len(),
        "recovered storage"
    );
    // Serve once everything committed before the restart is applied again.
    let replay_to = log.hard_state.commit;
    // Every entry already in the log was proposed before this run: whatever token one of
    // them hands out died with that run (applied then or not).
    tokens.replayed_to(
        log.entries
            .last()
            .map_or(replay_to, |e| e.index.max(replay_to)),
    );
    let core = Core::new(
        mvcc,
        &log,
        membership,
        status,
        feed,
        CoreOptions {
            heartbeat_ticks: 1,
            election_ticks: opts.election_ticks,
            request_timeout: opts.request_timeout,
            snapshot_count: opts.snapshot_count,
            catch_up_entries: opts.catch_up_entries,
            catch_up_bytes: opts.catch_up_bytes,
            max_entry_bytes: wal.max_entry_data(),
            tokens,
            max_uncommitted_bytes: opts.max_uncommitted_bytes,
        },
        seq_base,
    )?;
    Ok(Opened {
        wal,
        core,
        replay_to,
    })
}

/// Computes the hash of the compaction to `target` (from `previous`) on a thread of its own (a
/// walk of the key space) and records it in `status` for the compact hash check.
fn record_compaction_hash(
    snap: retcd_engine::mvcc::StateSnapshot,
    target: i64,
    previous: i64,
    status: &Arc<NodeStatus>,
) {
    let status = status.clone();
    let spawned = std::thread::Builder::new()
        .name("retcd-compact-hash".into())
        .spawn(move || match snap.compaction_hash(target, previous) {
            Ok(h) => status.record_compact_hash(h),
            Err(e) => tracing::warn!(target, error = %e, "failed to hash a compaction"),
        });
    if let Err(e) = spawned {
        tracing::warn!(target, error = %e, "cannot start a compaction hash thread");
    }
}

/// The lessor of a member that just started (or restarted) over `core`'s stored leases.
pub(crate) fn new_lessor(
    opts: &SequencerOptions,
    core: &Core,
    unix_ms: u64,
    now: Instant,
) -> Result<Lessor, SequencerError> {
    Ok(Lessor::new(
        LessorOptions {
            min_ttl: crate::lessor::min_lease_ttl(opts.tick, opts.election_ticks),
            checkpoint_interval: opts.lease_checkpoint_interval,
            ..LessorOptions::default()
        },
        core.member_id(),
        unix_ms,
        &core.mvcc().leases().map_err(CoreError::Mvcc)?,
        now,
    ))
}

/// What wakes the sequencer between rounds.
enum Event {
    Proposal(Result<Proposal, flume::RecvError>),
    Input(Input),
    Checkpointed(JobDone),
    Lease(LeaseCall),
    Tick,
}

/// The lessor and the queue of the cores' lease calls.
struct Leases<'a> {
    lessor: &'a mut Lessor,
    rx: &'a flume::Receiver<LeaseCall>,
}

/// Lease calls served per wake-up before the loop goes on.
const LEASE_CALLS_PER_ROUND: usize = 1024;

/// Proposes a request of the sequencer's own (a revoke of an expired lease, a lease checkpoint);
/// nobody waits for its outcome.
fn propose_internal(core: &mut Core, req: Request, now: Instant) {
    core.propose_internal(req.encode(), now);
}

/// Inputs served per wake-up before the loop goes on.
const INPUTS_PER_ROUND: usize = 1024;

/// Proposes `first` and what waits in `rx`, up to `max_bytes` of requests.
fn propose_batch(
    core: &mut Core,
    rx: &flume::Receiver<Proposal>,
    first: Option<Proposal>,
    max_bytes: usize,
    now: Instant,
) {
    let mut bytes = 0;
    let mut next = first;
    while bytes < max_bytes {
        let Some(p) = next.take().or_else(|| rx.try_recv().ok()) else {
            break;
        };
        bytes += p.data.len();
        core.propose(p, now);
    }
}

/// One round's serving of inputs, with the sequencer's state it touches.
struct InputRound<'a> {
    /// A checkpoint is in flight: a snapshot to install waits for it.
    checkpointing: bool,
    /// Callers waiting for the next checkpoint.
    asked: &'a mut Vec<DoneReply>,
    held_snapshot: &'a mut Option<Input>,
}

impl InputRound<'_> {
    /// Serves `first` and what waits in `inputs`, at most [`INPUTS_PER_ROUND`].
    fn serve(
        &mut self,
        core: &mut Core,
        inputs: &flume::Receiver<Input>,
        first: Option<Input>,
        now: Instant,
    ) -> Result<(), SequencerError> {
        let mut next = first;
        for _ in 0..INPUTS_PER_ROUND {
            let Some(input) = next.take().or_else(|| inputs.try_recv().ok()) else {
                break;
            };
            if let Input::Checkpoint(reply) = input {
                self.asked.push(reply);
                continue;
            }
            if self.checkpointing && matches!(input, Input::Snapshot(..)) {
                // A newer snapshot replaces a held one (Raft asks again if needed).
                *self.held_snapshot = Some(input);
                continue;
            }
            serve_input(core, input, now)?;
        }
        Ok(())
    }
}

/// Ticks a member that applied its own removal goes on running (etcd: 10 ticks).
const REMOVED_LINGER_TICKS: u32 = 10;

pub(crate) fn serve_input(
    core: &mut Core,
    input: Input,
    now: Instant,
) -> Result<(), SequencerError> {
    match input {
        Input::Messages(msgs) => {
            for b in msgs {
                match crate::transport::decode(&b) {
                    Ok(m) => core.step(m)?,
                    Err(e) => warn!(error = %e, "dropped a peer message"),
                }
            }
        }
        Input::Unreachable(id) => core.report_unreachable(id),
        Input::Read(reply) => core.read(reply),
        Input::Members(change, reply) => core.change_members(change, reply, now),
        Input::TransferLeader(to, reply) => core.transfer_leader(to, reply, now),
        Input::StopTransferee(reply) => {
            let _ = reply.send(Ok(core.stop_transferee()));
        }
        Input::Removed => return Err(SequencerError::Removed),
        Input::Snapshot(message, entries) => match crate::transport::decode(&message) {
            Ok(m) => core.receive_snapshot(m, entries)?,
            Err(e) => warn!(error = %e, "dropped a snapshot message"),
        },
        Input::SnapshotSent { to, ok } => core.report_snapshot(to, ok),
        Input::Damaged(e) => return Err(SequencerError::Damaged(e)),
        Input::Defragment(reply) => core.defragment(reply),
        // The sequencer's loop schedules checkpoints (`Sequencer::run`); without one (the
        // simulator) there is no page store to make durable.
        Input::Checkpoint(reply) => {
            let _ = reply.send(Ok(()));
        }
    }
    Ok(())
}

/// The sequencer's I/O: the WAL and the peers' outboxes.
struct Io<'a> {
    wal: &'a mut Wal,
    router: Router,
    unreachable: Vec<u64>,
}

impl Io<'_> {
    /// Queues `out` for the peers; what could not be queued is noted for [`Io::report`].
    fn send(&mut self, core: &mut Core, out: Outgoing) {
        for (m, state) in out.snapshots {
            if !self.router.send_snapshot(&m, state) {
                core.snapshot_failed(m.to);
            }
        }
        if !out.messages.is_empty() {
            self.router.send(out.messages, &mut self.unreachable);
        }
    }

    /// Tells raft-rs which peers could not be reached and which snapshots were not sent. Called
    /// between rounds: raft-rs must not be stepped between a Ready and its advance.
    fn report(&mut self, core: &mut Core) {
        for id in self.unreachable.drain(..) {
            core.report_unreachable(id);
        }
        core.report_failures();
    }
}

/// Answers one core's lease call (grants are proposed; the rest is answered from memory).
pub(crate) fn serve_lease_call(
    core: &mut Core,
    lessor: &mut Lessor,
    call: LeaseCall,
    now: Instant,
) {
    use retcd_engine::request::LeaseCheckpointRequest;
    let leader = core.is_leader();
    match call {
        LeaseCall::Grant { id, ttl, reply } => {
            let req = lessor.grant_request(id, ttl);
            core.propose(
                Proposal {
                    data: Request::LeaseGrant(req).encode(),
                    reply,
                },
                now,
            );
        }
        LeaseCall::KeepAlive { id, reply } => {
            if !leader {
                // Only the leader's lessor knows when leases expire: the caller forwards.
                let _ = reply.send(Err(ProposeError::NotLeader));
                return;
            }
            let ttl = match lessor.renew(id, now) {
                Some(r) => {
                    if r.clear_checkpoint {
                        propose_internal(
                            core,
                            Request::LeaseCheckpoint(LeaseCheckpointRequest {
                                checkpoints: vec![(id, 0)],
                            }),
                            now,
                        );
                    }
                    r.ttl
                }
                None => 0,
            };
            let _ = reply.send(Ok(ttl));
        }
        LeaseCall::TimeToLive { id, reply } => {
            let _ = reply.send(if leader {
                Ok(lessor.time_to_live(id, now))
            } else {
                Err(ProposeError::NotLeader)
            });
        }
        LeaseCall::Leases { reply } => {
            let _ = reply.send(Ok(lessor.ids_by_expiry()));
        }
    }
}

/// The leader's periodic lease work: revoke what expired, checkpoint remaining TTLs.
pub(crate) fn lease_duties(core: &mut Core, lessor: &mut Lessor, now: Instant) {
    use retcd_engine::request::{LeaseCheckpointRequest, LeaseRevokeRequest};
    lessor.maintain();
    if !core.is_leader() {
        return;
    }
    for id in lessor.expired(now) {
        propose_internal(core, Request::LeaseRevoke(LeaseRevokeRequest { id }), now);
    }
    let checkpoints = lessor.due_checkpoints(now);
    if !checkpoints.is_empty() {
        propose_internal(
            core,
            Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }),
            now,
        );
    }
}

async fn drive(
    core: &mut Core,
    io: &mut Io<'_>,
    rx: &flume::Receiver<Proposal>,
    inputs: &flume::Receiver<Input>,
    opts: &SequencerOptions,
    leases: &mut Leases<'_>,
    (replay_to, started): (u64, impl FnOnce()),
) -> Result<(), SequencerError> {
    let mut started = Some(started);
    // Proposes only while this member leads (the schedule is told at every tick); none at all
    // when the retention is 0.
    let mut auto_compactor = opts
        .auto_compaction
        .map(|r| AutoCompactor::new(r, opts.revision_compaction_interval));
    let mut replayed = false;
    let mut last_tick = Instant::now();
    let mut last_checkpoint = Instant::now();
    // At most one checkpoint in flight; its blocking fdatasyncs run off the core.
    let (done_tx, done_rx) = flume::bounded::<JobDone>(1);
    let mut checkpointing = false;
    let mut checkpoint_started = Instant::now();
    // Asked for a checkpoint (Input::Checkpoint): those waiting for the next one to begin, and
    // those waiting for the one in flight to end.
    let mut checkpoint_asked: Vec<DoneReply> = Vec::new();
    let mut checkpoint_waiting: Vec<DoneReply> = Vec::new();
    // Leases expire from when this member leads (after its log is replayed): etcd's Promote.
    let mut leading = false;
    // A snapshot received while a checkpoint runs waits for it: installing syncs the page store,
    // and one durable commit runs at a time.
    let mut held_snapshot: Option<Input> = None;
    // When this member applied its own removal: it goes on sending for a while so that the
    // others learn the removal is committed (etcd's stopWithDelay), then stops.
    let mut removed_at: Option<Instant> = None;
    loop {
        io.report(core);
        core.issue_reads(Instant::now());
        loop {
            let ready_at = Instant::now();
            let Some(mut step) = core.ready()? else { break };
            crate::metrics::STAGE_READY_SECONDS.observe(ready_at.elapsed().as_secs_f64());
            // A leader's appends leave before its own fsync (etcd's pipelining).
            let now_msgs = std::mem::take(&mut step.out);
            io.send(core, now_msgs);
            if let Some(cp) = step.install_sync.take() {
                // An installed snapshot is made durable before its Checkpoint record (the first
                // of the records) lets the log start after it (engine/DESIGN.md §4.7); its
                // fdatasyncs run off the core, as a checkpoint's, so core 0's other tasks go on.
                let (cp, result) = runtime::spawn_blocking(move || {
                    let mut cp = cp;
                    let r = cp.job.run();
                    (cp, r)
                })
                .await;
                result?;
                core.finish_install_sync(cp);
            }
            if !step.records.is_empty() {
                crate::metrics::GROUP_COMMIT_ENTRIES.observe(step.records.len() as f64);
                let wal_at = Instant::now();
                io.wal.append(&step.records).await?;
                crate::metrics::STAGE_WAL_SECONDS.observe(wal_at.elapsed().as_secs_f64());
            }
            let apply_at = Instant::now();
            let later = core.persisted(step)?;
            crate::metrics::STAGE_APPLY_SECONDS.observe(apply_at.elapsed().as_secs_f64());
            io.send(core, later);
        }
        core.refresh_status();
        if core.removed() {
            let at = *removed_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= opts.tick * REMOVED_LINGER_TICKS {
                return Err(SequencerError::Removed);
            }
        }
        if !checkpointing && let Some(input) = held_snapshot.take() {
            serve_input(core, input, Instant::now())?;
            continue;
        }
        if core.take_installed() {
            let stored = core.mvcc().leases().map_err(CoreError::Mvcc)?;
            leases.lessor.reload(&stored, Instant::now());
        }
        if let Some(c) = auto_compactor.as_mut() {
            c.collect(Instant::now());
        }
        // Before any deletion batch of theirs (below) runs: the state still holds what they drop.
        // A member alone has no one to compare them with: no walk.
        let compactions = core.take_compactions();
        if core.membership().members.len() > 1 {
            for (target, previous) in compactions {
                let snap = core.mvcc().reader().state_snapshot();
                record_compaction_hash(snap, target, previous, core.status());
            }
        }
        let changes = core.take_lease_changes();
        if !changes.is_empty() {
            leases.lessor.applied(&changes, Instant::now());
        }
        if core.is_leader() != leading {
            leading = core.is_leader();
            if leading {
                leases.lessor.promote(Instant::now());
            }
        }
        // Close the connections of removed members (a joining member has not applied its
        // membership yet, so "not listed" does not mean "gone").
        let members = core.membership();
        io.router.retain(|id| !members.is_removed(id));
        if !replayed && core.mvcc().applied().0 >= replay_to {
            replayed = true;
            // A new cluster's members are known only once its opening configuration changes
            // are applied (the first campaign_if_alone, before the replay, saw none): a lone
            // voter elects itself now instead of after a whole election timeout.
            core.campaign_if_alone()?;
            if opts.initial_election_tick_advance {
                core.advance_election_clock();
            }
        }
        if started.is_some()
            && core.mvcc().applied().0 >= replay_to
            && core.publish(&opts.name, &opts.client_urls, Instant::now())
        {
            (started.take().expect("checked"))();
        }
        if !checkpointing
            && (core.checkpoint_due()
                || !checkpoint_asked.is_empty()
                || core.defrag_wants_checkpoint()
                || (core.applied_since_checkpoint() > 0
                    && last_checkpoint.elapsed() >= opts.checkpoint_interval))
        {
            checkpoint_started = Instant::now();
            let mut cp = core.begin_checkpoint()?;
            let done = done_tx.clone();
            // On a thread of its own, off core 0's CPU where there are others: the job encodes
            // and writes the in-memory nodes (engine/DESIGN.md §3.6.1), CPU the sequencer needs.
            runtime::spawn_local(async move {
                let out = runtime::on_own_thread(CHECKPOINT_THREAD, move || {
                    let r = cp.job.run();
                    Box::new((cp, r))
                })
                .await;
                let _ = done.send_async(out).await;
            });
            checkpointing = true;
            checkpoint_waiting.append(&mut checkpoint_asked);
        }
        if core.has_ready() {
            // Stepping a message or an apply produced more work: do it before sleeping.
            continue;
        }
        // A compaction's deletion goes one bounded batch per round, behind everything that was
        // ready, and the wait below does not sleep while more is left: whatever arrived
        // meanwhile is served before the next batch (engine/DESIGN.md §4.9).
        if core.compaction_pending() {
            core.compact_step()?;
        }
        // A defragmentation's moves go the same way, one bounded step per round.
        if core.defrag_has_step() {
            core.defrag_step()?;
        }
        let wait = if core.compaction_pending() || core.defrag_has_step() {
            Duration::ZERO
        } else {
            opts.tick.saturating_sub(last_tick.elapsed())
        };
        let idle_at = Instant::now();
        // `or` polls its first future first. A finished checkpoint comes first: proposals are
        // always ready under load and held its completion (and the next checkpoint, and the
        // log's trimming) back for seconds. Inputs and proposals are then taken together (see
        // the arms below); they used to wait behind proposals, and the other members' answers
        // among them are what commits the waiting proposals (3 members, 1000 clients: +6 %
        // puts/s, perf/findings.md §18).
        let next = futures_lite::future::or(
            async {
                match done_rx.recv_async().await {
                    Ok(done) => Event::Checkpointed(done),
                    // `done_tx` lives in this frame: never disconnected.
                    Err(_) => std::future::pending().await,
                }
            },
            futures_lite::future::or(
                async {
                    match inputs.recv_async().await {
                        Ok(i) => Event::Input(i),
                        // The sequencer's own sender keeps the queue open.
                        Err(_) => std::future::pending().await,
                    }
                },
                futures_lite::future::or(
                    async { Event::Proposal(rx.recv_async().await) },
                    futures_lite::future::or(
                        async {
                            match leases.rx.recv_async().await {
                                Ok(call) => Event::Lease(call),
                                // The sequencer's own handle keeps the queue open.
                                Err(_) => std::future::pending().await,
                            }
                        },
                        async {
                            if wait.is_zero() {
                                // Lets the other tasks of core 0 (the services that propose,
                                // the peer links) run before the loop goes on.
                                futures_lite::future::yield_now().await;
                            } else {
                                runtime::sleep(wait).await;
                            }
                            Event::Tick
                        },
                    ),
                ),
            ),
        )
        .await;
        let now = Instant::now();
        crate::metrics::STAGE_IDLE_SECONDS.observe((now - idle_at).as_secs_f64());
        match next {
            // Whichever woke the loop, what waits in the other queue is taken in the same round:
            // inputs (the other members' messages, linearizable reads) and proposals each get a
            // batch per round, so neither starves the other.
            Event::Proposal(Ok(p)) => {
                propose_batch(core, rx, Some(p), opts.max_batch_bytes, now);
                let mut round = InputRound {
                    checkpointing,
                    asked: &mut checkpoint_asked,
                    held_snapshot: &mut held_snapshot,
                };
                round.serve(core, inputs, None, now)?;
            }
            // Every proposer is gone: the server is shutting down.
            Event::Proposal(Err(_)) => return Ok(()),
            Event::Input(input) => {
                let mut round = InputRound {
                    checkpointing,
                    asked: &mut checkpoint_asked,
                    held_snapshot: &mut held_snapshot,
                };
                round.serve(core, inputs, Some(input), now)?;
                propose_batch(core, rx, None, opts.max_batch_bytes, now);
            }
            Event::Checkpointed(done) => {
                let (cp, result) = *done.map_err(SequencerError::Checkpoint)?;
                result?;
                let rec = core.finish_checkpoint(cp)?;
                let Record::Checkpoint { index, .. } = rec else {
                    unreachable!("a checkpoint record")
                };
                io.wal.append(&[rec]).await?;
                io.wal.release_to(index).await?;
                core.trim_log(index)?;
                crate::metrics::CHECKPOINT_SECONDS.observe_duration(checkpoint_started.elapsed());
                checkpointing = false;
                last_checkpoint = Instant::now();
                for reply in checkpoint_waiting.drain(..) {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::Lease(call) => {
                serve_lease_call(core, leases.lessor, call, now);
                for _ in 1..LEASE_CALLS_PER_ROUND {
                    let Ok(call) = leases.rx.try_recv() else {
                        break;
                    };
                    serve_lease_call(core, leases.lessor, call, now);
                }
            }
            Event::Tick => {}
        }
        if last_tick.elapsed() >= opts.tick {
            last_tick = Instant::now();
            core.tick(last_tick);
            lease_duties(core, leases.lessor, last_tick);
            // Not before the member serves: until its log is replayed, its revision is not the
            // cluster's yet.
            if started.is_none()
                && let Some(c) = auto_compactor.as_mut()
            {
                c.duties(core, last_tick);
            }
        }
    }
}
