//! Deterministic simulation of a cluster (feature `sim`; the crate's tests and the `retcd-sim`
//! binary, never a server build).
//!
//! # What it owns
//!
//! One run ([`run`]) of 1, 3 or 5 members — each a real [`Core`](crate::core::Core) over a real
//! WAL and page store in a data directory of its own, with its lessor — driven in one thread
//! from one seed: a simulated clock, a network of single messages (delay, drop, duplicate,
//! reorder, partitions and heals, snapshots), a disk under [`engine::disk::PowerLoss`]
//! (power cuts at a seeded I/O operation, then torn, dropped, kept or garbled unsynced writes;
//! latency spikes; stalls; a flipped bit in one member's synced files), and clients whose puts
//! and linearizable gets are recorded with their simulated invocation and response times.
//! After every round it checks election safety (one leader per term) and state machine safety
//! (every member reaches the same state at an applied index); a panic, or an error of a member
//! whose power was not cut, fails the run. At the end the network heals, every member comes
//! back, the cluster settles, and the run fails unless the members' key-value states are equal
//! and the history (plus a final read of every key) is linearizable
//! (tests/support/linearizability.rs, the same file the process-level fault tests use).
//! ARCHITECTURE.md, "Testing: the deterministic simulation", has the fault model in full.
//!
//! # How a member is driven
//!
//! Exactly as [`crate::sequencer`] drives it, in the same order: report unreachable peers and
//! failed snapshots, issue queued reads, then per Ready: send what may leave before the fsync,
//! append the records to the WAL (awaited, then the WAL's spare segment awaited so that no
//! background I/O is in flight between events), `persisted`, send the rest; then installed
//! snapshots and lease changes to the lessor, leadership to the lessor, publishing the member's
//! attributes, and a checkpoint when due (its blocking job runs at once; its completion — the
//! Checkpoint record, segment release, log trim — is an event later on). A restart recovers
//! through `sequencer::open`, the function every production start uses.
//!
//! # Invariants (what makes a seed a run)
//!
//! - Everything random comes from the seed ([`rng`]): the schedule of faults, message delays,
//!   which sector of a torn write survives, and raft-rs's randomized election timeouts, which
//!   the simulator sets from its seed after every event (raft-rs draws them from `thread_rng`;
//!   each draw is replaced before the member ticks again).
//! - Time is `base + simulated duration`; nothing reads the real clock to decide anything.
//! - Events are ordered by (time, insertion number) in a `BTreeMap`; no hash map's order
//!   reaches a decision.
//! - Every I/O is awaited to completion before the next event, so the disk sees the same
//!   operations in the same order, and a power cut placed at the n-th operation falls at the
//!   same place.
//!
//! A failing run returns the seed and the trace of every event with its simulated time; the
//! same seed and options replay it exactly (the test suite checks that two runs of a seed give
//! the same trace hash).
//!
//! # Injected bugs
//!
//! [`Bugs`] puts back, on purpose, each mistake the simulator must catch: an acknowledgement
//! before the WAL's fdatasync, a skipped fsync of the page store's meta page (modelled by the
//! power-loss layer: that sync is not made), a vote sent without its HardState persisted, and
//! linearizable reads served locally by a member that believes it leads. They exist only here.
//!
//! # Who may call it
//!
//! Tests and the `retcd-sim` binary. Its seams in production code: `sequencer::open` and
//! `new_lessor` (split out of `Sequencer::run`, which calls them), `serve_input`,
//! `serve_lease_call` and `lease_duties` made crate-visible, and `Core::sim_*` (compiled only
//! with the feature).

mod rng;
mod world;

#[allow(dead_code)]
#[path = "../../../tests/support/linearizability.rs"]
mod linearizability;

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Mistakes put back on purpose (each must make some suite seed fail).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bugs {
    /// A round answers (applies, sends acknowledgements and votes) before its WAL append.
    pub ack_before_fsync: bool,
    /// The page store's checkpoint skips the fsync after writing the meta page.
    pub skip_meta_sync: bool,
    /// HardState records (term, vote) are never written: a vote leaves unpersisted.
    pub vote_without_persist: bool,
    /// A linearizable read on a member that believes it leads is served at once, locally.
    pub read_without_read_index: bool,
}

impl Bugs {
    /// The bug named on the command line (`ack-before-fsync`, `skip-meta-sync`,
    /// `vote-without-persist`, `read-without-read-index`).
    pub fn by_name(name: &str) -> Option<Bugs> {
        let mut b = Bugs::default();
        match name {
            "ack-before-fsync" => b.ack_before_fsync = true,
            "skip-meta-sync" => b.skip_meta_sync = true,
            "vote-without-persist" => b.vote_without_persist = true,
            "read-without-read-index" => b.read_without_read_index = true,
            _ => return None,
        }
        Some(b)
    }

    fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.ack_before_fsync {
            v.push("ack-before-fsync");
        }
        if self.skip_meta_sync {
            v.push("skip-meta-sync");
        }
        if self.vote_without_persist {
            v.push("vote-without-persist");
        }
        if self.read_without_read_index {
            v.push("read-without-read-index");
        }
        v
    }
}

/// One run's options.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// 1, 3 or 5.
    pub members: usize,
    /// Client operations issued before the cluster is left to settle.
    pub ops: usize,
    pub bugs: Bugs,
    /// Where the members' data directories go (a fresh directory per run, removed after it);
    /// default: /dev/shm when it exists (the simulated disk needs no real durability), else the
    /// system's temporary directory.
    pub dir: Option<PathBuf>,
}

impl Config {
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            members: 3,
            ops: 150,
            bugs: Bugs::default(),
            dir: None,
        }
    }

    /// The command that replays this run, printing its trace.
    pub fn replay_command(&self) -> String {
        let mut c = format!(
            "cargo run --release -p retcd-raft --features sim --bin retcd-sim -- --seed {} --members {} --ops {}",
            self.seed, self.members, self.ops
        );
        for b in self.bugs.names() {
            c.push_str(" --bug ");
            c.push_str(b);
        }
        c.push_str(" --trace");
        c
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    /// FNV-1a of the whole trace: equal for two runs of one seed.
    pub trace_hash: u64,
    pub events: u64,
    /// Simulated time at the end, in milliseconds.
    pub sim_ms: u64,
    pub writes_acked: u64,
    pub writes_unknown: u64,
    pub reads: u64,
    pub crashes: u64,
    pub snapshots: u64,
    /// Keys whose history the checker could not decide within its budget.
    pub undecided: bool,
    pub trace: Vec<String>,
}

/// Why a run failed, with everything needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub config: Config,
    pub what: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const TAIL: usize = 80;
        writeln!(
            f,
            "simulation failed: seed {} ({} members): {}",
            self.config.seed, self.config.members, self.what
        )?;
        writeln!(f, "replay: {}", self.config.replay_command())?;
        let skip = self.trace.len().saturating_sub(TAIL);
        writeln!(
            f,
            "last {} of {} trace events:",
            self.trace.len() - skip,
            self.trace.len()
        )?;
        for line in &self.trace[skip..] {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs one seed to the end; builds its own glommio executor (call it from a plain thread). A
/// panic inside the run (raft-rs's assertions included) is a failure like any other, with the
/// trace up to it.
pub fn run(cfg: &Config) -> Result<Report, Failure> {
    retcd_engine::runtime::block_on_local(run_async(cfg))
}

/// [`run`] inside the caller's glommio executor: a soak runs many seeds in one executor (each
/// executor costs an eventfd that glommio 0.9 does not close, so one per seed leaks them).
pub async fn run_async(cfg: &Config) -> Result<Report, Failure> {
    use futures_lite::FutureExt;
    let root = cfg
        .dir
        .clone()
        .unwrap_or_else(|| {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        })
        .join(format!(
            "retcd-sim-{}-{:x}-{}",
            std::process::id(),
            cfg.seed,
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
    let _ = std::fs::remove_dir_all(&root);
    if let Err(e) = std::fs::create_dir_all(&root) {
        return Err(Failure {
            config: cfg.clone(),
            what: format!("creating {}: {e}", root.display()),
            trace: Vec::new(),
        });
    }
    let trace = Rc::new(RefCell::new(Vec::new()));
    let result = AssertUnwindSafe(world::run(cfg.clone(), root.clone(), trace.clone()))
        .catch_unwind()
        .await;
    let _ = std::fs::remove_dir_all(&root);
    match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(Failure {
                config: cfg.clone(),
                what: format!("panicked: {what}"),
                trace: std::mem::take(&mut *trace.borrow_mut()),
            })
        }
    }
}

/// FNV-1a over the trace lines (one newline after each).
pub fn trace_hash(trace: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in trace {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
