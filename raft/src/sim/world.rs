//! One simulated run: the members, the network, the disk faults, the clients, and the checks at
//! the end (see the module documentation of [`super`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::StateRole;
use raft::prelude::{Message, MessageType};
use retcd_engine::btree::StoreOptions;
use retcd_engine::disk::{Loss, PowerLoss, SkipSync};
use retcd_engine::mvcc::{Mvcc, RawEntry, WriteResult};
use retcd_engine::request::{CompactRequest, PutRequest, RangeRequest, Request};
use retcd_engine::wal::{Preallocate, Record, Wal, WalOptions};

use crate::core::{Checkpoint, Core, Outgoing, Proposal};
use crate::feed::Feed;
use crate::lessor::{LeaseCall, Lessor};
use crate::membership::Member;
use crate::reply::ProposeError;
use crate::sequencer::{self, Input, SequencerOptions};
use crate::status::NodeStatus;
use crate::tokens::SimpleTokens;

use super::linearizability::{self as lin, Kind, Op};
use super::rng::{Rng, mix};
use super::{Config, Failure, Report};

/// Simulated time, in microseconds since the start of the run.
type Time = u64;

const MS: Time = 1000;
const SEC: Time = 1_000_000;
/// etcd's defaults: a 100 ms heartbeat and a 1 s election timeout.
const TICK: Time = 100 * MS;
const ELECTION_TICKS: usize = 10;
/// Keys the clients use: few, so that operations on one key overlap and reads see writes; the
/// checker's work per key stays small.
const KEYS: u64 = 4;
/// A client gives up on an operation after this long (its outcome is then unknown).
const CLIENT_TIMEOUT: Time = 4 * SEC;
/// How long the cluster may take to settle after the last fault before the run fails.
const SETTLE_LIMIT: Time = 60 * SEC;
/// Bounds of a run, so that no loop is unbounded even when something is wrong.
const MAX_EVENTS: u64 = 5_000_000;
const MAX_CLIENT_PHASE: Time = 30 * 60 * SEC;
/// Search steps the linearizability checker may take per key.
const CHECK_BUDGET: u64 = 5_000_000;
const CLUSTER_ID: u64 = 0x51;
const UNIX_MS_BASE: u64 = 1_700_000_000_000;
/// Small WAL segments: rollovers and releases happen in every run.
const SEGMENT_SIZE: u64 = 8 << 10;
/// The segments of worlds with large values: the largest value's record fits.
const LARGE_VALUE_SEGMENT_SIZE: u64 = 32 << 10;

/// A member's key-value state: (key, value, mod revision) in key order.
type KvState = Vec<(Vec<u8>, Vec<u8>, i64)>;

enum Ev {
    Tick(usize, u64),
    Deliver {
        to: usize,
        from: usize,
        msg: Message,
    },
    Snapshot {
        to: usize,
        from: usize,
        from_life: u64,
        msg: Message,
        entries: Vec<RawEntry>,
    },
    SnapshotSent {
        at: usize,
        life: u64,
        peer: u64,
        ok: bool,
    },
    /// Reading the state for a snapshot met damage in member `at`'s page store (as
    /// net/src/peer.rs reports it).
    Damaged {
        at: usize,
        life: u64,
        error: String,
    },
    CheckpointDone(usize, u64),
    /// The member's loop goes on (a compaction has more batches to delete).
    Resume(usize, u64),
    Client(usize),
    ClientGiveUp(usize, u64),
    Nemesis,
    CutNow(usize, u64),
    Restart(usize),
    Settled,
}

impl Ev {
    /// The member whose sequencer handles the event (it waits while that member is busy).
    fn member(&self) -> Option<usize> {
        match self {
            Ev::Tick(i, _) | Ev::CheckpointDone(i, _) | Ev::Resume(i, _) => Some(*i),
            Ev::Deliver { to, .. } | Ev::Snapshot { to, .. } => Some(*to),
            Ev::SnapshotSent { at, .. } | Ev::Damaged { at, .. } => Some(*at),
            _ => None,
        }
    }
}

struct Live {
    wal: Wal,
    core: Core,
    /// What the member publishes to its client cores (the sole-voter read rule reads it).
    status: Arc<NodeStatus>,
    lessor: Lessor,
    replay_to: u64,
    started: bool,
    checkpoint: Option<Checkpoint>,
    last_checkpoint: Time,
    held_snapshot: Option<Input>,
    leading: bool,
    unreachable: Vec<u64>,
}

struct Node {
    id: u64,
    dir: PathBuf,
    power: PowerLoss,
    live: Option<Live>,
    /// Bumped at every crash: events of an earlier life are dropped.
    life: u64,
    /// The member's sequencer is in an fdatasync (or stalled) until then.
    busy_until: Time,
    /// This member's tick period: clocks drift apart.
    tick: Time,
    slow_disk_until: Time,
    /// A power cut is armed (the member dies at a coming I/O) or the member is down.
    crashing: bool,
    /// The member comes back at once after this crash (a crash right after voting).
    quick_restart: bool,
    /// Vote requests on their way to the member when it crashed after voting: they arrive just
    /// after it restarts, before its leader's next heartbeat.
    held_votes: Vec<Ev>,
    /// A bit of one of its synced files flips while it is down (a bad disk).
    corrupt_at_restart: bool,
    /// Its files were damaged: it may refuse to start or stop with an error saying so (it is
    /// then retired, as an operator would remove it), but never serve wrong data.
    damaged: bool,
    /// Down for good (its damaged data refused).
    retired: bool,
    timer: (u64, StateRole),
    timer_gen: u64,
}

enum Waiting {
    Write(flume::Receiver<Result<WriteResult, ProposeError>>),
    Read(flume::Receiver<Result<u64, ProposeError>>, String),
    /// A lease grant or a compaction (not in the checked history).
    Other(
        flume::Receiver<Result<WriteResult, ProposeError>>,
        &'static str,
    ),
}

struct Pending {
    seq: u64,
    member: usize,
    call: Time,
    /// The history entry of a write.
    op: Option<usize>,
    waiting: Waiting,
}

#[derive(Default)]
struct Client {
    pending: Option<Pending>,
    seq: u64,
}

/// Network weather, fixed per seed.
struct Net {
    drop_permille: u64,
    dup_permille: u64,
    reorder_permille: u64,
    /// Chance that a member crashes right after granting a vote.
    vote_crash_percent: u64,
    /// `cut[a][b]`: messages from `a` to `b` are lost (partitions are not always transitive:
    /// a bridge member may reach two sides that cannot reach each other).
    cut: Vec<Vec<bool>>,
}

impl Net {
    fn heal(&mut self) {
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
    }

    /// Members in different groups cannot reach each other; `bridge` reaches everyone.
    fn split(&mut self, groups: &[u8], bridge: Option<usize>) {
        for (a, row) in self.cut.iter_mut().enumerate() {
            for (b, c) in row.iter_mut().enumerate() {
                *c = groups[a] != groups[b] && bridge != Some(a) && bridge != Some(b);
            }
        }
    }
}

struct World {
    cfg: Config,
    base: Instant,
    now: Time,
    rng: Rng,
    queue: BTreeMap<(Time, u64), Ev>,
    seq: u64,
    nodes: Vec<Node>,
    net: Net,
    snapshot_count: u64,
    catch_up_entries: u64,
    /// The page stores' bound on in-memory nodes (engine/DESIGN.md §3.6; 0: every commit writes
    /// pages, as before it): 64 KiB in half the worlds, small enough that the bound forces
    /// spills and early checkpoints (§3.6.1) too; off in the other half.
    btree_memory: usize,
    /// In a third of the worlds one put in five carries a value over a page: a leaf of its own
    /// in the page store, kept in memory or written by its own rules (engine/DESIGN.md §3.3,
    /// §3.6); their WAL segments are [`LARGE_VALUE_SEGMENT_SIZE`], and their members keep
    /// only 10–60 KiB of entries behind a checkpoint (`catch_up_bytes`).
    large_values: bool,
    /// Every member ticks at the same instants and draws its election timeout from two values:
    /// simultaneous candidates, split votes.
    lockstep: bool,
    /// The leader of every term seen so far (Raft's election safety: at most one per term).
    leaders: BTreeMap<u64, u64>,
    /// (term, revision) of the state each applied index left, as the first member to apply it
    /// had it: every member must reach the same state at the same index.
    applied_at: BTreeMap<u64, (u64, i64)>,
    clients: Vec<Client>,
    history: Vec<Op>,
    issued: usize,
    settling: Option<Time>,
    done: bool,
    fatal: Option<String>,
    trace: Rc<RefCell<Vec<String>>>,
    report: Report,
    root: PathBuf,
}

/// Runs `cfg` with the members' data under `root` (which exists and is empty), logging every
/// event into `trace`, which outlives a panic of the run.
pub(super) async fn run(
    cfg: Config,
    root: PathBuf,
    trace: Rc<RefCell<Vec<String>>>,
) -> Result<Report, Failure> {
    World::new(cfg, root, trace).run().await
}

fn loss_of(rng: &mut Rng) -> Loss {
    match rng.below(7) {
        0 => Loss::DropAll,
        1 => Loss::KeepAll,
        2 => Loss::TornLast { unit: 512 },
        3 => Loss::TornLast { unit: 4096 },
        4 => Loss::Garble { name: "db" },
        _ => Loss::Sectors {
            percent: rng.below(101) as u8,
        },
    }
}

fn describe(m: &Message) -> String {
    format!(
        "{:?} {}->{} term {} index {} log_term {} commit {} entries {}{}",
        m.get_msg_type(),
        m.from,
        m.to,
        m.term,
        m.index,
        m.log_term,
        m.commit,
        m.entries.len(),
        if m.reject { " reject" } else { "" }
    )
}

fn bootstrap_members(n: usize) -> Vec<Member> {
    (1..=n as u64)
        .map(|id| Member {
            id,
            name: String::new(),
            peer_urls: vec![format!("http://m{id}:2380")],
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect()
}

impl World {
    fn new(cfg: Config, root: PathBuf, trace: Rc<RefCell<Vec<String>>>) -> World {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.members;
        let net = Net {
            drop_permille: rng.below(50),
            dup_permille: rng.below(30),
            reorder_permille: rng.below(100),
            vote_crash_percent: rng.between(10, 60),
            cut: vec![vec![false; n]; n],
        };
        let snapshot_count = rng.between(10, 60);
        let catch_up_entries = rng.between(5, 150);
        let clients = rng.between(3, 6) as usize;
        let lockstep = rng.percent(30);
        let nodes = (0..n)
            .map(|i| {
                let dir = root.join(format!("m{}", i + 1));
                std::fs::create_dir_all(&dir).expect("member dir");
                let power = PowerLoss::install(&dir);
                if cfg.bugs.skip_meta_sync {
                    // The page store's meta slots are its first two pages.
                    power.skip_syncs(Some(SkipSync::AfterWriteBelow {
                        name: "db",
                        below: 2 * 4096,
                    }));
                }
                Node {
                    id: i as u64 + 1,
                    dir,
                    power,
                    live: None,
                    life: 0,
                    busy_until: 0,
                    tick: if lockstep {
                        TICK
                    } else {
                        TICK * rng.between(950, 1050) / 1000
                    },
                    slow_disk_until: 0,
                    crashing: false,
                    quick_restart: false,
                    held_votes: Vec::new(),
                    corrupt_at_restart: false,
                    damaged: false,
                    retired: false,
                    timer: (0, StateRole::Follower),
                    timer_gen: 0,
                }
            })
            .collect();
        World {
            report: Report {
                seed: cfg.seed,
                ..Report::default()
            },
            cfg,
            base: Instant::now(),
            now: 0,
            rng,
            queue: BTreeMap::new(),
            seq: 0,
            nodes,
            net,
            snapshot_count,
            catch_up_entries,
            // From a value already drawn: one more draw would change every seed's world.
            btree_memory: if snapshot_count % 2 == 1 { 64 << 10 } else { 0 },
            large_values: catch_up_entries.is_multiple_of(3),
            lockstep,
            leaders: BTreeMap::new(),
            applied_at: BTreeMap::new(),
            clients: (0..clients).map(|_| Client::default()).collect(),
            history: Vec::new(),
            issued: 0,
            settling: None,
            done: false,
            fatal: None,
            trace,
            root,
        }
    }

    fn at(&self, t: Time) -> Instant {
        self.base + Duration::from_micros(t)
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn log(&mut self, what: impl AsRef<str>) {
        let t = self.now;
        // Error messages name files: the run's directory differs from run to run.
        let root = self.root.to_string_lossy();
        let what = what.as_ref().replace(root.as_ref(), "<dir>");
        self.trace
            .borrow_mut()
            .push(format!("{:>6}.{:03} {what}", t / MS, t % MS));
    }

    fn fail(&mut self, what: String) {
        let root = self.root.to_string_lossy().into_owned();
        let what = what.replace(&root, "<dir>");
        if self.fatal.is_none() {
            self.log(format!("FAILURE: {what}"));
            self.fatal = Some(what);
        }
    }

    fn options(&self, i: usize) -> SequencerOptions {
        let mut o = SequencerOptions::new(WalOptions {
            dir: self.nodes[i].dir.join("member/wal"),
            segment_size: if self.large_values {
                LARGE_VALUE_SEGMENT_SIZE
            } else {
                SEGMENT_SIZE
            },
            // Both ways of preallocating a segment, by member.
            preallocate: if i.is_multiple_of(2) {
                Preallocate::Reserve
            } else {
                Preallocate::ZeroFill
            },
        });
        o.tick = Duration::from_micros(TICK);
        o.election_ticks = ELECTION_TICKS;
        o.request_timeout = Duration::from_secs(3);
        o.snapshot_count = self.snapshot_count;
        o.catch_up_entries = self.catch_up_entries;
        if self.large_values {
            // 10–60 KiB: a few large values, so the byte bound trims before the count does.
            o.catch_up_bytes = self.snapshot_count << 10;
        }
        o.checkpoint_interval = Duration::from_secs(1);
        o.lease_checkpoint_interval = Duration::from_secs(3);
        o.bootstrap = Some(bootstrap_members(self.cfg.members));
        o.name = format!("m{}", i + 1);
        o.client_urls = vec![format!("http://m{}:2379", i + 1)];
        o
    }

    async fn run(mut self) -> Result<Report, Failure> {
        for i in 0..self.nodes.len() {
            if let Err(e) = self.open(i).await {
                self.fail(format!("m{} does not start: {e}", i + 1));
            }
        }
        for c in 0..self.clients.len() {
            let t = self.rng.between(500 * MS, 2 * SEC);
            self.push(t, Ev::Client(c));
        }
        let t = self.rng.between(SEC, 3 * SEC);
        self.push(t, Ev::Nemesis);
        while self.fatal.is_none() && !self.done {
            let Some(((t, _), ev)) = self.queue.pop_first() else {
                self.fail("nothing left to happen".into());
                break;
            };
            self.report.events += 1;
            if self.report.events > MAX_EVENTS {
                self.fail(format!("more than {MAX_EVENTS} events"));
                break;
            }
            if let Some(i) = ev.member()
                && self.nodes[i].busy_until > t
            {
                // The member's sequencer is inside an fdatasync or stalled: the event waits.
                let until = self.nodes[i].busy_until;
                self.push(until, ev);
                continue;
            }
            self.now = t;
            if self.settling.is_none() && t > MAX_CLIENT_PHASE {
                self.fail("the clients did not finish".into());
                break;
            }
            if let Some(since) = self.settling
                && t > since + SETTLE_LIMIT
            {
                self.fail("the cluster did not settle after the faults stopped".into());
                break;
            }
            self.handle(ev).await;
            self.poll_clients();
            if self.settling.is_none()
                && self.issued >= self.cfg.ops
                && self.clients.iter().all(|c| c.pending.is_none())
            {
                self.settle();
            }
        }
        if self.fatal.is_none() {
            self.check();
        }
        for i in 0..self.nodes.len() {
            if let Some(live) = self.nodes[i].live.take() {
                drop(live.core);
                let _ = live.wal.close().await;
            }
        }
        self.report.sim_ms = self.now / MS;
        let trace = std::mem::take(&mut *self.trace.borrow_mut());
        self.report.trace_hash = super::trace_hash(&trace);
        match self.fatal.take() {
            Some(what) => Err(Failure {
                config: self.cfg.clone(),
                what,
                trace,
            }),
            None => {
                self.report.trace = trace;
                Ok(self.report.clone())
            }
        }
    }

    async fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(i, life) => {
                if self.nodes[i].life != life || self.nodes[i].live.is_none() {
                    return;
                }
                let now = self.at(self.now);
                if let Some(live) = self.nodes[i].live.as_mut() {
                    live.core.tick(now);
                    sequencer::lease_duties(&mut live.core, &mut live.lessor, now);
                }
                self.round(i).await;
                let next = self.now + self.nodes[i].tick;
                let life = self.nodes[i].life;
                self.push(next, Ev::Tick(i, life));
            }
            Ev::Deliver { to, from, msg } => {
                if self.nodes[to].live.is_none() || !self.link(from, to) {
                    return;
                }
                self.log(format!("m{} recv {}", to + 1, describe(&msg)));
                let bytes = crate::transport::encode(&msg);
                let now = self.at(self.now);
                let r = match self.nodes[to].live.as_mut() {
                    Some(live) => {
                        sequencer::serve_input(&mut live.core, Input::Messages(vec![bytes]), now)
                    }
                    None => Ok(()),
                };
                if let Err(e) = r {
                    self.stop(to, e.to_string()).await;
                    return;
                }
                self.round(to).await;
            }
            Ev::Snapshot {
                to,
                from,
                from_life,
                msg,
                entries,
            } => {
                let delivered = self.nodes[to].live.is_some() && self.link(from, to);
                let at = self.now + self.rng.between(MS, 20 * MS);
                self.push(
                    at,
                    Ev::SnapshotSent {
                        at: from,
                        life: from_life,
                        peer: to as u64 + 1,
                        ok: delivered,
                    },
                );
                if !delivered {
                    return;
                }
                self.log(format!(
                    "m{} recv snapshot at index {} ({} entries) {}",
                    to + 1,
                    msg.get_snapshot().get_metadata().index,
                    entries.len(),
                    describe(&msg)
                ));
                let input = Input::Snapshot(
                    crate::transport::encode(&msg),
                    Box::new(entries.into_iter().map(Ok)),
                );
                let now = self.at(self.now);
                let r = match self.nodes[to].live.as_mut() {
                    Some(live) if live.checkpoint.is_some() => {
                        // As the sequencer does: one durable commit at a time.
                        live.held_snapshot = Some(input);
                        Ok(())
                    }
                    Some(live) => sequencer::serve_input(&mut live.core, input, now),
                    None => Ok(()),
                };
                if let Err(e) = r {
                    self.stop(to, e.to_string()).await;
                    return;
                }
                self.round(to).await;
            }
            Ev::SnapshotSent { at, life, peer, ok } => {
                if self.nodes[at].life != life {
                    return;
                }
                let now = self.at(self.now);
                if let Some(live) = self.nodes[at].live.as_mut() {
                    let _ = sequencer::serve_input(
                        &mut live.core,
                        Input::SnapshotSent { to: peer, ok },
                        now,
                    );
                    self.round(at).await;
                }
            }
            Ev::Damaged { at, life, error } => {
                if self.nodes[at].life != life {
                    return;
                }
                let now = self.at(self.now);
                let r = match self.nodes[at].live.as_mut() {
                    Some(live) => {
                        sequencer::serve_input(&mut live.core, Input::Damaged(error), now)
                    }
                    None => Ok(()),
                };
                if let Err(e) = r {
                    self.stop(at, e.to_string()).await;
                }
            }
            Ev::CheckpointDone(i, life) => {
                if self.nodes[i].life != life {
                    return;
                }
                if let Err(e) = self.finish_checkpoint(i).await {
                    self.stop(i, e).await;
                    return;
                }
                self.round(i).await;
            }
            Ev::Resume(i, life) => {
                if self.nodes[i].life == life {
                    self.round(i).await;
                }
            }
            Ev::Client(c) => self.client_op(c).await,
            Ev::ClientGiveUp(c, seq) => {
                if self.clients[c]
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.seq == seq)
                {
                    let p = self.clients[c].pending.take().expect("checked");
                    self.log(format!("client {c} gives up on m{}", p.member + 1));
                    self.client_next(c);
                }
            }
            Ev::Nemesis => self.nemesis(),
            Ev::CutNow(i, life) => {
                if self.nodes[i].life == life && self.nodes[i].live.is_some() {
                    self.nodes[i].power.cut_now();
                    self.stop(i, "power cut".into()).await;
                }
            }
            Ev::Restart(i) => {
                let loss = loss_of(&mut self.rng);
                let seed = self.rng.next();
                let report = match self.nodes[i].power.recover(loss, seed) {
                    Ok(r) => r,
                    Err(e) => {
                        self.fail(format!("m{}: the disk after the cut: {e}", i + 1));
                        return;
                    }
                };
                self.log(format!(
                    "m{} restarts after {loss:?}: {} unsynced writes, {} sectors lost, {} directory changes undone",
                    i + 1,
                    report.writes,
                    report.sectors_lost,
                    report.dir_ops_undone
                ));
                if std::mem::take(&mut self.nodes[i].corrupt_at_restart) {
                    match self.flip_a_bit(i) {
                        Ok(what) => {
                            self.log(format!("m{}: {what}", i + 1));
                            self.nodes[i].damaged = true;
                        }
                        Err(e) => {
                            self.fail(format!("m{}: damaging a file: {e}", i + 1));
                            return;
                        }
                    }
                }
                if let Err(e) = self.open(i).await {
                    if self.nodes[i].damaged {
                        self.retire(i, &e);
                    } else {
                        self.fail(format!(
                            "m{} does not restart after a power cut ({loss:?}): {e}",
                            i + 1
                        ));
                    }
                }
            }
            Ev::Settled => self.check_settled(),
        }
    }

    fn link(&self, from: usize, to: usize) -> bool {
        from != to && !self.net.cut[from][to]
    }

    /// Opens member `i` from its files, as a start of the process does.
    async fn open(&mut self, i: usize) -> Result<(), String> {
        let opts = self.options(i);
        let node = &self.nodes[i];
        let status = Arc::new(NodeStatus::new(node.id, CLUSTER_ID));
        let mut store = StoreOptions::new(node.dir.join("member/snap/db"));
        store.memory_limit = self.btree_memory;
        let mvcc = Mvcc::open(&store).map_err(|e| e.to_string())?;
        let tokens = Arc::new(SimpleTokens::new(Duration::from_secs(300)));
        // Contexts of this life must differ from an earlier life's (the sequencer uses the
        // wall clock in nanoseconds).
        let seq_base = (self.now + 1) * 1000;
        let opened = sequencer::open(&opts, mvcc, status.clone(), Feed::none(), tokens, seq_base)
            .await
            .map_err(|e| e.to_string())?;
        let mut wal = opened.wal;
        let mut core = opened.core;
        wal.wait_for_spare().await.map_err(|e| e.to_string())?;
        let lessor = sequencer::new_lessor(
            &opts,
            &core,
            UNIX_MS_BASE + self.now / MS,
            self.at(self.now),
        )
        .map_err(|e| e.to_string())?;
        core.campaign_if_alone().map_err(|e| e.to_string())?;
        // The sequencer also fast-forwards the election clock once the log is replayed
        // (--initial-election-tick-advance); the simulator does not, so that a seed's history
        // stays what it was when the seed was recorded as finding a bug.
        let node = &mut self.nodes[i];
        node.live = Some(Live {
            wal,
            core,
            status,
            lessor,
            replay_to: opened.replay_to,
            started: false,
            checkpoint: None,
            last_checkpoint: self.now,
            held_snapshot: None,
            leading: false,
            unreachable: Vec::new(),
        });
        node.crashing = false;
        node.busy_until = self.now;
        let life = node.life;
        let first = if self.lockstep {
            (self.now / TICK + 1) * TICK
        } else {
            self.now + self.rng.below(self.nodes[i].tick)
        };
        self.push(first, Ev::Tick(i, life));
        self.sync_timer(i);
        self.log(format!("m{} up (life {life})", i + 1));
        for ev in std::mem::take(&mut self.nodes[i].held_votes) {
            let at = self.now + self.rng.between(100, 3 * MS);
            self.push(at, ev);
        }
        Ok(())
    }

    /// Replaces raft-rs's draw of the randomized election timeout (from `thread_rng`) by one
    /// from the seed: a value per (member, term-or-role change), so the draw does not depend on
    /// how often this is called.
    fn sync_timer(&mut self, i: usize) {
        let seed = self.cfg.seed;
        let spread = if self.lockstep {
            2
        } else {
            ELECTION_TICKS as u64
        };
        let node = &mut self.nodes[i];
        let Some(live) = node.live.as_mut() else {
            return;
        };
        let (term, role, current) = live.core.sim_election_timer();
        if (term, role) != node.timer {
            node.timer = (term, role);
            node.timer_gen += 1;
        }
        let want = ELECTION_TICKS
            + (mix(seed ^ (node.id << 56) ^ node.timer_gen.wrapping_mul(0x9e37_79b9)) % spread)
                as usize;
        if current != want {
            live.core.sim_set_election_timeout(want);
        }
    }

    /// Member `i`'s damaged files were refused (at start, or by a read that found the damage):
    /// it stays down for the rest of the run, as an operator would remove it.
    fn retire(&mut self, i: usize, why: &str) {
        self.log(format!("m{} is retired: {why}", i + 1));
        let node = &mut self.nodes[i];
        node.retired = true;
        node.crashing = true;
        node.live = None;
    }

    /// Flips one bit of one of member `i`'s files (a WAL segment or the page store), where it
    /// holds data.
    fn flip_a_bit(&mut self, i: usize) -> std::io::Result<String> {
        use std::os::unix::fs::FileExt;
        let dir = &self.nodes[i].dir;
        let mut files = vec![dir.join("member/snap/db")];
        let mut wal: Vec<PathBuf> = std::fs::read_dir(dir.join("member/wal"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        wal.sort();
        files.extend(wal);
        let path = files[self.rng.below(files.len() as u64) as usize].clone();
        let bytes = std::fs::read(&path)?;
        let Some(end) = bytes.iter().rposition(|&b| b != 0) else {
            return Ok(format!("{} holds nothing to damage", path.display()));
        };
        let at = self.rng.below(end as u64 + 1);
        let bit = 1u8 << self.rng.below(8);
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all_at(&[bytes[at as usize] ^ bit], at)?;
        f.sync_all()?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(format!(
            "flipped bit {bit:#04x} at offset {at} of {}",
            name.unwrap_or_default()
        ))
    }

    /// State machine safety, checked after every round: the state a member applied up to an
    /// index is the one every other member had there.
    fn check_applied(&mut self, i: usize) {
        let Some(live) = self.nodes[i].live.as_ref() else {
            return;
        };
        let (index, term) = live.core.mvcc().applied();
        let revision = live.core.mvcc().revision();
        match self.applied_at.get(&index) {
            None => {
                self.applied_at.insert(index, (term, revision));
            }
            Some(&(t, r)) if (t, r) != (term, revision) => {
                self.fail(format!(
                    "m{} applied index {index} (term {term}) at revision {revision}, another member had it at term {t}, revision {r}",
                    i + 1
                ));
            }
            Some(_) => {}
        }
    }

    /// A read of member `m`'s store failed: only a member whose files were damaged may say so.
    fn read_failed(&mut self, m: usize, e: &str) {
        if !self.nodes[m].damaged {
            self.fail(format!("m{}: a read failed: {e}", m + 1));
        }
    }

    /// Raft's election safety, checked after every round: one leader per term.
    fn check_leader(&mut self, i: usize) {
        let Some(live) = self.nodes[i].live.as_ref() else {
            return;
        };
        if !live.core.is_leader() {
            return;
        }
        let (term, _, _) = live.core.sim_election_timer();
        let id = self.nodes[i].id;
        match self.leaders.get(&term) {
            None => {
                self.leaders.insert(term, id);
                self.log(format!("m{id} leads term {term}"));
            }
            Some(&other) if other != id => {
                self.fail(format!("two leaders in term {term}: m{other} and m{id}"));
            }
            Some(_) => {}
        }
    }

    /// Member `i` stopped: a crash when its power was cut (it comes back later), else a failure.
    async fn stop(&mut self, i: usize, why: String) {
        if !self.nodes[i].power.is_cut() && !self.nodes[i].damaged {
            self.fail(format!("m{} stopped: {why}", i + 1));
            return;
        }
        if !self.nodes[i].power.is_cut() {
            if let Some(mut live) = self.nodes[i].live.take() {
                live.core.fail_pending();
                drop(live.core);
                let _ = live.wal.close().await;
            }
            self.nodes[i].life += 1;
            self.retire(i, &why);
            return;
        }
        if let Some(mut live) = self.nodes[i].live.take() {
            live.core.fail_pending();
            drop(live.core);
            let _ = live.wal.close().await;
        }
        let node = &mut self.nodes[i];
        node.life += 1;
        node.crashing = true;
        node.busy_until = self.now;
        self.report.crashes += 1;
        self.log(format!("m{} crashed: {why}", i + 1));
        let back = self.now
            + if self.settling.is_some() {
                10 * MS
            } else if std::mem::take(&mut self.nodes[i].quick_restart) {
                self.rng.between(20 * MS, 300 * MS)
            } else {
                self.rng.between(50 * MS, 3 * SEC)
            };
        self.push(back, Ev::Restart(i));
    }

    fn disk_latency(&mut self, i: usize, t: Time) -> Time {
        if self.nodes[i].slow_disk_until > t {
            self.rng.between(20 * MS, 400 * MS)
        } else {
            self.rng.between(100, 2 * MS)
        }
    }

    async fn append(
        &mut self,
        i: usize,
        live: &mut Live,
        records: &[Record],
        t: &mut Time,
    ) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        live.wal.append(records).await.map_err(|e| e.to_string())?;
        // No background I/O may run between events: a power cut must fall at the same place.
        live.wal.wait_for_spare().await.map_err(|e| e.to_string())?;
        *t += self.disk_latency(i, *t);
        Ok(())
    }

    /// One pass of the sequencer's loop for member `i`, after whatever just happened to it.
    async fn round(&mut self, i: usize) {
        let Some(mut live) = self.nodes[i].live.take() else {
            return;
        };
        let mut t = self.now.max(self.nodes[i].busy_until);
        let r = self.drive(i, &mut live, &mut t).await;
        self.nodes[i].busy_until = t;
        self.nodes[i].live = Some(live);
        match r {
            Ok(()) => {
                self.sync_timer(i);
                self.check_leader(i);
                self.check_applied(i);
            }
            Err(e) => self.stop(i, e).await,
        }
    }

    async fn drive(&mut self, i: usize, live: &mut Live, t: &mut Time) -> Result<(), String> {
        let bugs = self.cfg.bugs;
        for _ in 0..1000 {
            for id in std::mem::take(&mut live.unreachable) {
                live.core.report_unreachable(id);
            }
            live.core.report_failures();
            live.core.issue_reads(self.at(*t));
            for _ in 0..10_000 {
                let Some(mut step) = live.core.ready().map_err(|e| e.to_string())? else {
                    break;
                };
                let out = std::mem::take(&mut step.out);
                self.send(i, live, out, *t);
                if let Some(mut cp) = step.install_sync.take() {
                    // An installed snapshot is durable before its Checkpoint record, the first
                    // of the round's records (the sequencer runs this job off the core and
                    // waits for it).
                    cp.job.run().map_err(|e| e.to_string())?;
                    live.core.finish_install_sync(cp);
                    *t += self.disk_latency(i, *t);
                }
                if bugs.vote_without_persist {
                    step.records
                        .retain(|r| !matches!(r, Record::HardState { .. }));
                }
                let records = std::mem::take(&mut step.records);
                if bugs.ack_before_fsync {
                    let later = live.core.persisted(step).map_err(|e| e.to_string())?;
                    self.send(i, live, later, *t);
                    self.append(i, live, &records, t).await?;
                } else {
                    self.append(i, live, &records, t).await?;
                    let later = live.core.persisted(step).map_err(|e| e.to_string())?;
                    self.send(i, live, later, *t);
                }
            }
            live.core.refresh_status();
            let now = self.at(*t);
            if live.checkpoint.is_none()
                && let Some(input) = live.held_snapshot.take()
            {
                sequencer::serve_input(&mut live.core, input, now).map_err(|e| e.to_string())?;
                continue;
            }
            if live.core.take_installed() {
                let stored = live.core.mvcc().leases().map_err(|e| e.to_string())?;
                live.lessor.reload(&stored, now);
            }
            let changes = live.core.take_lease_changes();
            if !changes.is_empty() {
                live.lessor.applied(&changes, now);
            }
            if live.core.is_leader() != live.leading {
                live.leading = live.core.is_leader();
                if live.leading {
                    live.lessor.promote(now);
                }
            }
            if !live.started
                && live.core.mvcc().applied().0 >= live.replay_to
                && live.core.publish(
                    &format!("m{}", i + 1),
                    &[format!("http://m{}:2379", i + 1)],
                    now,
                )
            {
                live.started = true;
            }
            if live.checkpoint.is_none()
                && (live.core.checkpoint_due()
                    || (live.core.applied_since_checkpoint() > 0
                        && *t >= live.last_checkpoint + SEC))
            {
                let mut cp = live.core.begin_checkpoint().map_err(|e| e.to_string())?;
                // The job's fdatasyncs run on the blocking thread in production while the
                // sequencer goes on; here they run now and their completion comes later.
                cp.job.run().map_err(|e| e.to_string())?;
                live.checkpoint = Some(cp);
                let done = *t + self.disk_latency(i, *t);
                let life = self.nodes[i].life;
                self.push(done, Ev::CheckpointDone(i, life));
            }
            if live.core.has_ready() {
                continue;
            }
            // A compaction's deletion goes one bounded batch per round, behind everything that
            // was ready, as in the sequencer.
            if live.core.compaction_pending() {
                live.core.compact_step().map_err(|e| e.to_string())?;
                if live.core.compaction_pending() {
                    // Whatever else is due now is served before the next batch.
                    let life = self.nodes[i].life;
                    self.push(*t + 1, Ev::Resume(i, life));
                }
            }
            return Ok(());
        }
        Err("the sequencer's loop does not come to rest".into())
    }

    async fn finish_checkpoint(&mut self, i: usize) -> Result<(), String> {
        let Some(mut live) = self.nodes[i].live.take() else {
            return Ok(());
        };
        let r = async {
            let Some(cp) = live.checkpoint.take() else {
                return Ok(None);
            };
            let rec = live.core.finish_checkpoint(cp).map_err(|e| e.to_string())?;
            let Record::Checkpoint { index, .. } = rec else {
                unreachable!("a checkpoint record")
            };
            live.wal.append(&[rec]).await.map_err(|e| e.to_string())?;
            live.wal
                .release_to(index)
                .await
                .map_err(|e| e.to_string())?;
            live.wal.wait_for_spare().await.map_err(|e| e.to_string())?;
            live.core.trim_log(index).map_err(|e| e.to_string())?;
            live.last_checkpoint = self.now;
            Ok::<_, String>(Some(index))
        }
        .await;
        let r = r.map(|index| {
            if let Some(index) = index {
                let mut segments: Vec<String> =
                    std::fs::read_dir(self.nodes[i].dir.join("member/wal"))
                        .map(|d| {
                            d.filter_map(Result::ok)
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .filter(|n| n.ends_with(".wal"))
                                .collect()
                        })
                        .unwrap_or_default();
                segments.sort();
                self.log(format!(
                    "m{} checkpointed index {index}; WAL segments {segments:?}",
                    i + 1
                ));
            }
        });
        self.nodes[i].live = Some(live);
        r
    }

    /// Puts `out` on the network at time `at`, as the peer transport would.
    fn send(&mut self, i: usize, live: &mut Live, out: Outgoing, at: Time) {
        for (m, state) in out.snapshots {
            let to = m.to as usize - 1;
            if to >= self.nodes.len() || !self.link(i, to) {
                live.core.snapshot_failed(m.to);
                continue;
            }
            let mut entries = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            let mut ok = true;
            for _ in 0..1_000_000 {
                match state.chunk(after.as_deref(), 64 << 10) {
                    Ok(chunk) if chunk.is_empty() => break,
                    Ok(chunk) => {
                        after = chunk.last().map(|(k, _)| k.clone());
                        entries.extend(chunk);
                    }
                    Err(e) => {
                        if e.is_damage() {
                            let life = self.nodes[i].life;
                            let error = e.to_string();
                            self.push(at, Ev::Damaged { at: i, life, error });
                        }
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                live.core.snapshot_failed(m.to);
                continue;
            }
            self.report.snapshots += 1;
            let d = self.rng.between(5 * MS, 50 * MS);
            let life = self.nodes[i].life;
            self.push(
                at + d,
                Ev::Snapshot {
                    to,
                    from: i,
                    from_life: life,
                    msg: m,
                    entries,
                },
            );
        }
        for m in out.messages {
            let to = m.to as usize - 1;
            if to >= self.nodes.len() {
                continue;
            }
            if !self.link(i, to) {
                if !live.unreachable.contains(&m.to) {
                    live.unreachable.push(m.to);
                }
                continue;
            }
            if self.rng.permille(self.net.drop_permille) {
                continue;
            }
            if m.get_msg_type() == MessageType::MsgRequestVoteResponse
                && !m.reject
                && self.settling.is_none()
                && self.rng.percent(self.net.vote_crash_percent)
                && self.may_crash()
            {
                // Crash right after voting: the vote must have been made durable first.
                let ops = self.rng.between(1, 3);
                self.arm_crash(i, ops, "after voting");
                self.hold_votes(i, m.to as usize - 1);
                self.nodes[i].quick_restart = true;
            }
            // Forwarded proposals are delivered at most once, as by the peer transport (a
            // failed stream drops its queue, nothing is resent): raft-rs does not deduplicate
            // them, and a second copy would be applied as a second write.
            if m.get_msg_type() != MessageType::MsgPropose
                && self.rng.permille(self.net.dup_permille)
            {
                let d = self.delay();
                self.push(
                    at + d,
                    Ev::Deliver {
                        to,
                        from: i,
                        msg: m.clone(),
                    },
                );
            }
            let d = self.delay();
            self.push(
                at + d,
                Ev::Deliver {
                    to,
                    from: i,
                    msg: m,
                },
            );
        }
    }

    fn delay(&mut self) -> Time {
        if self.rng.permille(self.net.reorder_permille) {
            self.rng.between(10 * MS, 300 * MS)
        } else {
            self.rng.between(200, 5 * MS)
        }
    }

    fn may_crash(&self) -> bool {
        // At most a majority down at once, so that the cluster comes back soon.
        let down = self.nodes.iter().filter(|n| n.crashing).count();
        down < self.nodes.len() / 2 + 1
    }

    /// Arms a power cut of member `i` (which is up: its `live` may be out of the node while
    /// its round runs).
    fn arm_crash(&mut self, i: usize, ops: u64, why: &str) {
        if self.nodes[i].crashing {
            return;
        }
        self.nodes[i].crashing = true;
        self.nodes[i].power.cut_after(ops);
        self.log(format!(
            "nemesis: m{}'s power fails at its {ops}th next I/O ({why})",
            i + 1
        ));
        let at = self.now + self.rng.between(20 * MS, 800 * MS);
        let life = self.nodes[i].life;
        self.push(at, Ev::CutNow(i, life));
    }

    /// Member `i` granted its vote to `candidate` and is about to crash: the requests of other
    /// candidates of that term still on the wire arrive just after it restarts (a slow link),
    /// and those candidates cannot reach `candidate` for a while — the member must remember
    /// whom it voted for, or two of them lead the same term.
    fn hold_votes(&mut self, i: usize, candidate: usize) {
        {
            let late: Vec<(Time, u64)> = self
                .queue
                .iter()
                .filter(|(_, ev)| {
                    matches!(ev, Ev::Deliver { to, msg, .. }
                        if *to == i && msg.get_msg_type() == MessageType::MsgRequestVote)
                })
                .map(|(k, _)| *k)
                .collect();
            for k in late {
                let ev = self.queue.remove(&k).expect("listed");
                if let Ev::Deliver { from, .. } = &ev
                    && *from != candidate
                {
                    let from = *from;
                    self.net.cut[from][candidate] = true;
                    self.net.cut[candidate][from] = true;
                    self.log(format!(
                        "nemesis: m{} and m{} cannot reach each other",
                        from + 1,
                        candidate + 1
                    ));
                }
                self.nodes[i].held_votes.push(ev);
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.live.as_ref().is_some_and(|l| l.core.is_leader()))
    }

    fn nemesis(&mut self) {
        if self.settling.is_some() {
            return;
        }
        let n = self.nodes.len();
        let pick = self.rng.below(100);
        let mut pause = self.rng.between(200 * MS, 1500 * MS);
        match pick {
            0..=14 => {
                let groups: Vec<u8> = (0..n).map(|_| self.rng.below(2) as u8).collect();
                self.log(format!("nemesis: partition {groups:?}"));
                self.net.split(&groups, None);
            }
            15..=24 => {
                // A bridge: two sides that only one member reaches, the classic way to two
                // leaders when a vote is forgotten.
                let bridge = self.rng.below(n as u64) as usize;
                let mut groups: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
                for i in (1..n).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    groups.swap(i, j);
                }
                self.log(format!(
                    "nemesis: partition {groups:?} bridged by m{}",
                    bridge + 1
                ));
                self.net.split(&groups, Some(bridge));
            }
            25..=34 => {
                if let Some(l) = self.leader() {
                    let mut groups = vec![0; n];
                    groups[l] = 1;
                    // Its clock runs slow too (a paused process, a skewed clock): it goes on
                    // believing it leads for a while.
                    let tick = TICK * self.rng.between(1300, 2500) / 1000;
                    self.log(format!(
                        "nemesis: isolate the leader m{}, its clock ticks every {tick} us",
                        l + 1
                    ));
                    self.net.split(&groups, None);
                    self.nodes[l].tick = tick;
                    // Long enough for the others to elect a leader and write.
                    pause = self.rng.between(2 * SEC, 4 * SEC);
                }
            }
            35..=49 => {
                self.log("nemesis: heal");
                self.net.heal();
            }
            50..=69 => {
                if self.may_crash() {
                    let i = match self.leader() {
                        Some(l) if self.rng.percent(50) => l,
                        _ => self.rng.below(n as u64) as usize,
                    };
                    if self.nodes[i].live.is_none() {
                        return self.push_nemesis(pause);
                    }
                    let ops = self.rng.between(1, 12);
                    self.arm_crash(i, ops, "crash");
                }
            }
            70..=79 => {
                let i = self.rng.below(n as u64) as usize;
                let d = self.rng.between(100 * MS, 2500 * MS);
                self.log(format!("nemesis: m{} stalls for {} ms", i + 1, d / MS));
                let node = &mut self.nodes[i];
                node.busy_until = node.busy_until.max(self.now + d);
            }
            80..=89 => {
                let i = self.rng.below(n as u64) as usize;
                let d = self.rng.between(SEC, 5 * SEC);
                self.log(format!(
                    "nemesis: m{}'s disk is slow for {} ms",
                    i + 1,
                    d / MS
                ));
                self.nodes[i].slow_disk_until = self.now + d;
            }
            90..=92 => {
                // A bad disk under one member, at most one per run: a bit of a file flips
                // while it is down. Not under a sole member: its files are the only copy, so
                // the damage is refused and nothing is left to check.
                let i = self.rng.below(n as u64) as usize;
                if n > 1
                    && self.may_crash()
                    && self.nodes[i].live.is_some()
                    && !self.nodes.iter().any(|n| n.damaged || n.corrupt_at_restart)
                {
                    self.nodes[i].corrupt_at_restart = true;
                    let ops = self.rng.between(1, 12);
                    self.arm_crash(i, ops, "its disk will damage a file");
                }
            }
            _ => {
                let i = self.rng.below(n as u64) as usize;
                let tick = TICK * self.rng.between(800, 1200) / 1000;
                self.log(format!(
                    "nemesis: m{}'s clock ticks every {} us",
                    i + 1,
                    tick
                ));
                self.nodes[i].tick = tick;
            }
        }
        self.push_nemesis(pause);
    }

    fn push_nemesis(&mut self, after: Time) {
        let next = self.now + after;
        self.push(next, Ev::Nemesis);
    }

    async fn client_op(&mut self, c: usize) {
        if self.settling.is_some() || self.issued >= self.cfg.ops {
            return;
        }
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].live.as_ref().is_some_and(|l| l.started))
            .collect();
        if candidates.is_empty() {
            let at = self.now + 200 * MS;
            self.push(at, Ev::Client(c));
            return;
        }
        // Clients often go to a member that believes it leads (there may be two).
        let leaders: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| {
                self.nodes[i]
                    .live
                    .as_ref()
                    .is_some_and(|l| l.core.is_leader())
            })
            .collect();
        let m = if !leaders.is_empty() && self.rng.percent(40) {
            leaders[self.rng.below(leaders.len() as u64) as usize]
        } else {
            candidates[self.rng.below(candidates.len() as u64) as usize]
        };
        self.issued += 1;
        let client = &mut self.clients[c];
        client.seq += 1;
        let seq = client.seq;
        let key = format!("k{}", self.rng.below(KEYS));
        let pick = self.rng.below(100);
        let now = self.at(self.now);
        let call = self.now;
        let bugs = self.cfg.bugs;
        let live = self.nodes[m].live.as_mut().expect("a candidate is live");
        let waiting = if pick < 50 {
            let name = format!("c{c}.{seq}");
            let mut value = name.clone();
            // (Drawn only where there are large values: the other worlds stay as they were.)
            if self.large_values && self.rng.percent(20) {
                let len = self.rng.between(4_100, 12_000) as usize;
                value.push('.');
                value.extend(std::iter::repeat_n('v', len));
            }
            let (tx, rx) = flume::bounded(1);
            live.core.propose(
                Proposal {
                    data: Request::Put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.clone().into_bytes(),
                        ..Default::default()
                    })
                    .encode(),
                    reply: tx,
                },
                now,
            );
            self.history.push(Op {
                key: key.clone(),
                call,
                ret: None,
                kind: Kind::Put(value.clone()),
            });
            let shown = if value.len() > name.len() {
                format!("{name}.…({} bytes)", value.len())
            } else {
                name
            };
            self.log(format!("client {c} put {key}={shown} at m{}", m + 1));
            (Some(self.history.len() - 1), Waiting::Write(rx))
        } else if pick < 95 {
            // A sole voter whose state is current answers from it, as net/src/kv.rs does; so
            // does a serializable read, which on a sole member must see every acknowledged
            // write too once it serves clients (etcd publishes first); the injected bug: any
            // member that believes it leads answers from its own state.
            let serializable = self.cfg.members == 1 && self.rng.percent(30);
            if serializable
                || live.status.sole_voter_reads_current()
                || (bugs.read_without_read_index && live.core.is_leader())
            {
                let v = match read_key(&live.core, &key) {
                    Ok(v) => v,
                    Err(e) => {
                        self.read_failed(m, &e);
                        self.client_next(c);
                        return;
                    }
                };
                self.log(format!(
                    "client {c} get {key} at m{} (local) = {v:?}",
                    m + 1
                ));
                self.history.push(Op {
                    key,
                    call,
                    ret: Some(call),
                    kind: Kind::Get(v),
                });
                self.report.reads += 1;
                self.client_next(c);
                return;
            }
            let (tx, rx) = flume::bounded(1);
            live.core.read(tx);
            self.log(format!("client {c} get {key} at m{}", m + 1));
            (None, Waiting::Read(rx, key))
        } else if pick < 97 {
            // A compaction of the last few revisions, both kinds (a physical one is answered
            // once its deletion batches are done).
            let (tx, rx) = flume::bounded(1);
            let revision = (live.core.mvcc().revision() - self.rng.below(10) as i64).max(1);
            let physical = self.rng.percent(50);
            live.core.propose(
                Proposal {
                    data: Request::Compact(CompactRequest { revision, physical }).encode(),
                    reply: tx,
                },
                now,
            );
            self.log(format!(
                "client {c} compacts at revision {revision} (physical {physical}) at m{}",
                m + 1
            ));
            (None, Waiting::Other(rx, "compaction"))
        } else {
            let (tx, rx) = flume::bounded(1);
            let ttl = self.rng.between(1, 4) as i64;
            sequencer::serve_lease_call(
                &mut live.core,
                &mut live.lessor,
                LeaseCall::Grant {
                    id: 0,
                    ttl,
                    reply: tx,
                },
                now,
            );
            self.log(format!(
                "client {c} grants a lease of {ttl} s at m{}",
                m + 1
            ));
            (None, Waiting::Other(rx, "lease grant"))
        };
        self.clients[c].pending = Some(Pending {
            seq,
            member: m,
            call,
            op: waiting.0,
            waiting: waiting.1,
        });
        let at = self.now + CLIENT_TIMEOUT;
        self.push(at, Ev::ClientGiveUp(c, seq));
        self.round(m).await;
    }

    fn client_next(&mut self, c: usize) {
        let at = self.now + self.rng.below(100 * MS);
        self.push(at, Ev::Client(c));
    }

    /// Collects the answers that arrived (a reply is "received" when the member's round ended).
    fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some(p) = self.clients[c].pending.as_ref() else {
                continue;
            };
            let ret = self.now.max(self.nodes[p.member].busy_until);
            let member = p.member;
            let outcome: Option<String> = match &p.waiting {
                Waiting::Write(rx) => match rx.try_recv() {
                    Err(flume::TryRecvError::Empty) => None,
                    Ok(Ok(w)) => {
                        let op = p.op.expect("a write has a history entry");
                        self.history[op].ret = Some(ret);
                        self.report.writes_acked += 1;
                        Some(format!("ok at revision {}", revision_of(&w)))
                    }
                    Ok(Err(e)) => {
                        self.report.writes_unknown += 1;
                        Some(format!("unknown outcome: {e}"))
                    }
                    Err(flume::TryRecvError::Disconnected) => {
                        self.report.writes_unknown += 1;
                        Some("unknown outcome: the member went away".into())
                    }
                },
                Waiting::Read(rx, key) => match rx.try_recv() {
                    Err(flume::TryRecvError::Empty) => None,
                    Ok(Ok(index)) => match self.nodes[member].live.as_ref() {
                        Some(live) => {
                            let v = match read_key(&live.core, key) {
                                Ok(v) => v,
                                Err(e) => {
                                    let key = key.clone();
                                    self.clients[c].pending = None;
                                    self.read_failed(member, &e);
                                    self.log(format!(
                                        "client {c} at m{}: get {key} failed: {e}",
                                        member + 1
                                    ));
                                    self.client_next(c);
                                    continue;
                                }
                            };
                            let s = format!("read index {index}: {key} = {v:?}");
                            self.history.push(Op {
                                key: key.clone(),
                                call: p.call,
                                ret: Some(ret),
                                kind: Kind::Get(v),
                            });
                            self.report.reads += 1;
                            Some(s)
                        }
                        None => Some("failed: the member went away".into()),
                    },
                    Ok(Err(e)) => Some(format!("failed: {e}")),
                    Err(flume::TryRecvError::Disconnected) => {
                        Some("failed: the member went away".into())
                    }
                },
                Waiting::Other(rx, what) => match rx.try_recv() {
                    Err(flume::TryRecvError::Empty) => None,
                    Ok(Ok(_)) => Some(format!("{what}: ok")),
                    Ok(Err(e)) => Some(format!("{what}: {e}")),
                    Err(flume::TryRecvError::Disconnected) => Some(format!("{what}: lost")),
                },
            };
            if let Some(s) = outcome {
                self.clients[c].pending = None;
                self.log(format!("client {c} at m{}: {s}", member + 1));
                self.client_next(c);
            }
        }
    }

    /// The clients are done: faults stop, the network heals, every member comes back.
    fn settle(&mut self) {
        self.settling = Some(self.now);
        self.log("settle: faults stop, the network heals");
        self.net.heal();
        self.net.drop_permille = 0;
        for node in &mut self.nodes {
            node.slow_disk_until = 0;
            if node.live.is_some() && node.crashing {
                // Disarm: the power stays on.
                node.power.cut_after(u64::MAX / 4);
                node.crashing = false;
            }
        }
        let at = self.now + 100 * MS;
        self.push(at, Ev::Settled);
    }

    fn check_settled(&mut self) {
        let again = self.now + 100 * MS;
        let mut views = Vec::new();
        for node in self.nodes.iter().filter(|n| !n.retired) {
            let Some(live) = node.live.as_ref() else {
                self.push(again, Ev::Settled);
                return;
            };
            let (commit, last) = live.core.sim_log();
            views.push((
                node.id,
                live.core.leader_id(),
                live.core.mvcc().applied().0,
                commit,
                last,
                live.core.is_leader(),
            ));
        }
        let leader = views[0].1;
        let settled = leader != 0
            && views.iter().all(|v| v.1 == leader)
            && views.iter().any(|v| v.0 == leader && v.5)
            && views
                .iter()
                .all(|v| v.2 == views[0].2 && v.3 == v.2 && v.4 == v.2);
        if settled {
            self.log(format!("settled: leader m{leader}, applied {}", views[0].2));
            self.done = true;
        } else {
            self.push(again, Ev::Settled);
        }
    }

    /// The end: every member's state is the same, and the history (with a final read of every
    /// key) is linearizable.
    fn check(&mut self) {
        // A damaged member may find its damage only now, reading everything: it says so and
        // is retired, as a read that meets the damage during the run retires it.
        for i in 0..self.nodes.len() {
            let damaged_read = self.nodes[i].damaged
                && self.nodes[i].live.as_ref().is_some_and(|l| {
                    l.core
                        .mvcc()
                        .reader()
                        .range(&RangeRequest {
                            key: vec![0],
                            range_end: vec![0],
                            ..Default::default()
                        })
                        .is_err()
                });
            if damaged_read {
                self.retire(
                    i,
                    "its damaged page store reports the damage at the final read",
                );
            }
        }
        let ids: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| !n.retired)
            .map(|n| n.id)
            .collect();
        let states: Result<Vec<KvState>, String> = self
            .nodes
            .iter()
            .filter(|n| !n.retired)
            .map(|n| {
                let live = n.live.as_ref().expect("settled: every member is up");
                live.core
                    .mvcc()
                    .reader()
                    .range(&RangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        ..Default::default()
                    })
                    .map(|r| {
                        r.kvs
                            .into_iter()
                            .map(|kv| (kv.key, kv.value, kv.mod_revision))
                            .collect()
                    })
                    .map_err(|e| format!("m{}: reading its whole state: {e}", n.id))
            })
            .collect();
        let states = match states {
            Ok(s) => s,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        for (i, s) in states.iter().enumerate().skip(1) {
            if *s != states[0] {
                let diff: Vec<String> = states[0]
                    .iter()
                    .filter(|kv| !s.contains(kv))
                    .chain(s.iter().filter(|kv| !states[0].contains(kv)))
                    .take(6)
                    .map(|(k, v, r)| {
                        format!(
                            "{}={}@{r}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        )
                    })
                    .collect();
                self.fail(format!(
                    "after settling, m{} and m{} hold different states (differing: {diff:?})",
                    ids[0], ids[i]
                ));
                return;
            }
        }
        let end = self.now + 1;
        for k in 0..KEYS {
            let key = format!("k{k}");
            let v = states[0]
                .iter()
                .find(|(kk, _, _)| *kk == key.as_bytes())
                .map(|(_, v, _)| String::from_utf8_lossy(v).into_owned());
            self.history.push(Op {
                key,
                call: end,
                ret: Some(end),
                kind: Kind::Get(v),
            });
        }
        match lin::check_bounded(&self.history, CHECK_BUDGET) {
            Ok(decided) => self.report.undecided = !decided,
            Err(v) => {
                let mut ops = v.ops.clone();
                ops.sort_by_key(|o| (o.call, o.ret));
                let ops: Vec<String> = ops
                    .iter()
                    .map(|o| {
                        format!(
                            "[{}..{}] {:?}",
                            o.call,
                            o.ret.map_or("?".to_string(), |r| r.to_string()),
                            o.kind
                        )
                    })
                    .collect();
                self.fail(format!(
                    "the history of {} is not linearizable (times in us): {}",
                    v.key,
                    ops.join(", ")
                ));
            }
        }
    }
}

/// The value of `key` on a member, or the error its store gave.
fn read_key(core: &Core, key: &str) -> Result<Option<String>, String> {
    let r = core
        .mvcc()
        .reader()
        .range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    Ok(r.kvs
        .into_iter()
        .next()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

fn revision_of(w: &WriteResult) -> i64 {
    match w {
        WriteResult::Put(p) => p.revision,
        _ => 0,
    }
}
