//! The sequencer: the task on core 0 that owns the [`Core`], the WAL and the proposal queue.
//!
//! Every core hands its writes to the sequencer through one bounded flume queue ([`Proposer`]).
//! The loop takes everything pending when the previous flush ended (bounded by a byte budget),
//! proposes it, writes the resulting records with one WAL append (one fdatasync), applies what is
//! committed and replies. While a flush is in progress, new proposals queue up: that is the group
//! commit. The queue's bound is the backpressure: a full queue makes callers wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use retcd_engine::mvcc::{Mvcc, WriteResult};
use retcd_engine::page::StoreError;
use retcd_engine::request::Request;
use retcd_engine::runtime;
use retcd_engine::wal::{Record, Wal, WalError, WalOptions};
use tracing::{info, warn};

use crate::core::{Checkpoint, Core, CoreError, NodeStatus, Proposal, ProposeError};
use crate::feed::Feed;
use crate::lessor::{LeaseCall, LeaseHandle, Lessor, LessorOptions};

#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("checkpoint: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct SequencerOptions {
    pub wal: WalOptions,
    /// Raft tick (etcd's --heartbeat-interval); the heartbeat is one tick.
    pub tick: Duration,
    /// Election timeout in ticks (etcd's --election-timeout / --heartbeat-interval).
    pub election_ticks: usize,
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
}

impl SequencerOptions {
    pub fn new(wal: WalOptions) -> Self {
        SequencerOptions {
            wal,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            queue_depth: 16_384,
            max_batch_bytes: 2 << 20,
            checkpoint_interval: Duration::from_secs(5),
            lease_checkpoint_interval: crate::lessor::DEFAULT_CHECKPOINT_INTERVAL,
            lease_queue_depth: 4096,
        }
    }
}

/// Hands requests to the sequencer; cheap to clone, usable from any core.
#[derive(Clone)]
pub struct Proposer {
    tx: flume::Sender<Proposal>,
}

impl Proposer {
    /// Proposes `req` and waits until it is applied (durable on a quorum).
    pub async fn propose(&self, req: &Request) -> Result<WriteResult, ProposeError> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send_async(Proposal {
                data: req.encode(),
                reply,
            })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        rx.recv_async().await.map_err(|_| ProposeError::Stopped)?
    }
}

/// The sequencer before it runs: create it anywhere, run it on core 0.
pub struct Sequencer {
    opts: SequencerOptions,
    mvcc: Mvcc,
    status: Arc<NodeStatus>,
    feed: Feed,
    rx: flume::Receiver<Proposal>,
    leases: LeaseHandle,
    lease_rx: flume::Receiver<LeaseCall>,
}

impl Sequencer {
    pub fn new(
        opts: SequencerOptions,
        mvcc: Mvcc,
        status: Arc<NodeStatus>,
        feed: Feed,
    ) -> (Sequencer, Proposer) {
        let (tx, rx) = flume::bounded(opts.queue_depth);
        let (leases, lease_rx) = LeaseHandle::channel(opts.lease_queue_depth);
        (
            Sequencer {
                opts,
                mvcc,
                status,
                feed,
                rx,
                leases,
                lease_rx,
            },
            Proposer { tx },
        )
    }

    /// Reaches this member's lessor (lease grant, keep-alive, time-to-live, list) from any core.
    pub fn lease_handle(&self) -> LeaseHandle {
        self.leases.clone()
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
            // Held until the sequencer stops: the lease queue never reads as disconnected.
            leases: _own_handle,
            lease_rx,
        } = self;
        let (mut wal, recovered) = Wal::open(opts.wal.clone()).await?;
        if let Some((file, offset)) = &recovered.truncated_tail {
            warn!(file = %file.display(), offset, "WAL: truncated a torn tail (an unacknowledged write)");
        }
        let log = crate::log::recover(&recovered.records);
        drop(recovered);
        info!(
            applied = mvcc.applied().0,
            revision = mvcc.revision(),
            wal_entries = log.entries.len(),
            "recovered storage"
        );
        let member_id = status.member_id;
        let mut core = Core::new(mvcc, &log, status, feed, 1, opts.election_ticks)?;
        drop(log);
        let mut lessor = Lessor::new(
            LessorOptions {
                min_ttl: crate::lessor::min_lease_ttl(opts.tick, opts.election_ticks),
                checkpoint_interval: opts.lease_checkpoint_interval,
                ..LessorOptions::default()
            },
            member_id,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            &core.mvcc().leases().map_err(CoreError::Mvcc)?,
            Instant::now(),
        );
        core.campaign_if_alone()?;
        let mut leases = Leases {
            lessor: &mut lessor,
            rx: &lease_rx,
        };
        let result = drive(&mut core, &mut wal, &rx, &opts, &mut leases, started).await;
        core.fail_pending();
        result
    }
}

/// What wakes the sequencer between rounds.
enum Event {
    Proposal(Result<Proposal, flume::RecvError>),
    Checkpointed(Box<(Checkpoint, Result<(), StoreError>)>),
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
fn propose_internal(core: &mut Core, req: Request) {
    let (reply, _) = flume::bounded(1);
    core.propose(Proposal {
        data: req.encode(),
        reply,
    });
}

/// Answers one core's lease call (grants are proposed; the rest is answered from memory).
fn serve_lease_call(core: &mut Core, lessor: &mut Lessor, call: LeaseCall, now: Instant) {
    use retcd_engine::request::LeaseCheckpointRequest;
    let leader = core.is_leader();
    match call {
        LeaseCall::Grant { id, ttl, reply } => {
            let req = lessor.grant_request(id, ttl);
            core.propose(Proposal {
                data: Request::LeaseGrant(req).encode(),
                reply,
            });
        }
        LeaseCall::KeepAlive { id, reply } => {
            if !leader {
                let _ = reply.send(Err(ProposeError::NoLeader));
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
                Err(ProposeError::NoLeader)
            });
        }
        LeaseCall::Leases { reply } => {
            let _ = reply.send(Ok(lessor.ids_by_expiry()));
        }
    }
}

/// The leader's periodic lease work: revoke what expired, checkpoint remaining TTLs.
fn lease_duties(core: &mut Core, lessor: &mut Lessor, now: Instant) {
    use retcd_engine::request::{LeaseCheckpointRequest, LeaseRevokeRequest};
    lessor.maintain();
    if !core.is_leader() {
        return;
    }
    for id in lessor.expired(now) {
        propose_internal(core, Request::LeaseRevoke(LeaseRevokeRequest { id }));
    }
    let checkpoints = lessor.due_checkpoints(now);
    if !checkpoints.is_empty() {
        propose_internal(
            core,
            Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }),
        );
    }
}

async fn drive(
    core: &mut Core,
    wal: &mut Wal,
    rx: &flume::Receiver<Proposal>,
    opts: &SequencerOptions,
    leases: &mut Leases<'_>,
    started: impl FnOnce(),
) -> Result<(), SequencerError> {
    let mut started = Some(started);
    let mut last_tick = Instant::now();
    let mut last_checkpoint = Instant::now();
    // At most one checkpoint in flight; its blocking fdatasyncs run off the core.
    let (done_tx, done_rx) = flume::bounded::<Box<(Checkpoint, Result<(), StoreError>)>>(1);
    let mut checkpointing = false;
    // Leases expire from when this member leads (after its log is replayed): etcd's Promote.
    let mut leading = false;
    loop {
        while let Some(step) = core.ready()? {
            if !step.records.is_empty() {
                wal.append(&step.records).await?;
            }
            core.persisted(step)?;
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
        if started.is_some() && core.is_leader() {
            (started.take().expect("checked"))();
        }
        if !checkpointing
            && (core.checkpoint_due()
                || (core.applied_since_checkpoint() > 0
                    && last_checkpoint.elapsed() >= opts.checkpoint_interval))
        {
            let cp = core.begin_checkpoint()?;
            let done = done_tx.clone();
            runtime::spawn_local(async move {
                let out = runtime::spawn_blocking(move || {
                    let r = cp.job.run();
                    Box::new((cp, r))
                })
                .await;
                let _ = done.send_async(out).await;
            });
            checkpointing = true;
        }
        let wait = opts.tick.saturating_sub(last_tick.elapsed());
        let next = futures_lite::future::or(
            async { Event::Proposal(rx.recv_async().await) },
            futures_lite::future::or(
                async {
                    match done_rx.recv_async().await {
                        Ok(done) => Event::Checkpointed(done),
                        // `done_tx` lives in this frame: never disconnected.
                        Err(_) => std::future::pending().await,
                    }
                },
                futures_lite::future::or(
                    async {
                        match leases.rx.recv_async().await {
                            Ok(call) => Event::Lease(call),
                            // The sequencer's own handle keeps the queue open.
                            Err(_) => std::future::pending().await,
                        }
                    },
                    async {
                        runtime::sleep(wait).await;
                        Event::Tick
                    },
                ),
            ),
        )
        .await;
        match next {
            Event::Proposal(Ok(p)) => {
                let mut bytes = p.data.len();
                core.propose(p);
                while bytes < opts.max_batch_bytes {
                    let Ok(p) = rx.try_recv() else { break };
                    bytes += p.data.len();
                    core.propose(p);
                }
            }
            // Every proposer is gone: the server is shutting down.
            Event::Proposal(Err(_)) => return Ok(()),
            Event::Checkpointed(done) => {
                let (cp, result) = *done;
                result?;
                let rec = core.finish_checkpoint(cp);
                let Record::Checkpoint { index, .. } = rec else {
                    unreachable!("a checkpoint record")
                };
                wal.append(&[rec]).await?;
                wal.release_to(index).await?;
                core.trim_log(index)?;
                checkpointing = false;
                last_checkpoint = Instant::now();
            }
            Event::Lease(call) => {
                let now = Instant::now();
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
            core.tick();
            last_tick = Instant::now();
            lease_duties(core, leases.lessor, last_tick);
        }
    }
}
