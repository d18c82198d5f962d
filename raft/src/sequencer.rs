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
}

impl Sequencer {
    pub fn new(
        opts: SequencerOptions,
        mvcc: Mvcc,
        status: Arc<NodeStatus>,
        feed: Feed,
    ) -> (Sequencer, Proposer) {
        let (tx, rx) = flume::bounded(opts.queue_depth);
        (
            Sequencer {
                opts,
                mvcc,
                status,
                feed,
                rx,
            },
            Proposer { tx },
        )
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
        let mut core = Core::new(mvcc, &log, status, feed, 1, opts.election_ticks)?;
        drop(log);
        core.campaign_if_alone()?;
        let result = drive(&mut core, &mut wal, &rx, &opts, started).await;
        core.fail_pending();
        result
    }
}

/// What wakes the sequencer between rounds.
enum Event {
    Proposal(Result<Proposal, flume::RecvError>),
    Checkpointed(Box<(Checkpoint, Result<(), StoreError>)>),
    Tick,
}

async fn drive(
    core: &mut Core,
    wal: &mut Wal,
    rx: &flume::Receiver<Proposal>,
    opts: &SequencerOptions,
    started: impl FnOnce(),
) -> Result<(), SequencerError> {
    let mut started = Some(started);
    let mut last_tick = Instant::now();
    let mut last_checkpoint = Instant::now();
    // At most one checkpoint in flight; its blocking fdatasyncs run off the core.
    let (done_tx, done_rx) = flume::bounded::<Box<(Checkpoint, Result<(), StoreError>)>>(1);
    let mut checkpointing = false;
    loop {
        while let Some(step) = core.ready()? {
            if !step.records.is_empty() {
                wal.append(&step.records).await?;
            }
            core.persisted(step)?;
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
                async {
                    runtime::sleep(wait).await;
                    Event::Tick
                },
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
            Event::Tick => {}
        }
        if last_tick.elapsed() >= opts.tick {
            core.tick();
            last_tick = Instant::now();
        }
    }
}
