//! The deterministic cluster simulation (`retcd_raft::sim`) over a fixed set of seeds: every
//! seed must pass; each injected bug must make at least one of the same seeds fail; a seed must
//! replay exactly. Soaks over many seeds: the `retcd-sim` binary (`--seeds N`).

use retcd_raft::sim::{Bugs, Config, Failure, run, trace_hash};

/// The suite's seeds for 3 members (debug build: ~1 s each on this 2-core machine).
const SEEDS_3: std::ops::RangeInclusive<u64> = 1..=40;
/// The suite's seeds for 5 members (~2 s each).
const SEEDS_5: std::ops::RangeInclusive<u64> = 1..=12;

fn config(seed: u64, members: usize, bugs: Bugs) -> Config {
    let mut c = Config::new(seed);
    c.members = members;
    c.bugs = bugs;
    c
}

fn all_pass(seeds: impl Iterator<Item = u64>, members: usize) {
    let mut failures: Vec<Failure> = Vec::new();
    let mut undecided = 0;
    let mut n = 0;
    for seed in seeds {
        n += 1;
        match run(&config(seed, members, Bugs::default())) {
            Ok(r) => undecided += usize::from(r.undecided),
            Err(f) => {
                eprintln!("{f}");
                failures.push(f);
            }
        }
    }
    eprintln!(
        "{members} members: {n} seeds, {} failed, {undecided} left undecided by the checker",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seeds that failed: {:?} (each printed above with its replay command and trace)",
        failures.iter().map(|f| f.config.seed).collect::<Vec<_>>()
    );
}

#[test]
fn three_members_first_half() {
    let (a, b) = (*SEEDS_3.start(), *SEEDS_3.end());
    all_pass(a..=(a + b) / 2, 3);
}

#[test]
fn three_members_second_half() {
    let (a, b) = (*SEEDS_3.start(), *SEEDS_3.end());
    all_pass((a + b) / 2 + 1..=b, 3);
}

/// A sole member: crashes, power cuts and restarts; its serializable reads are checked as
/// linearizable too (a sole member serves only once everything acknowledged is applied).
#[test]
fn one_member() {
    all_pass(1..=40, 1);
}

#[test]
fn five_members() {
    all_pass(SEEDS_5, 5);
}

/// Runs the suite's seeds with `bugs` until one fails; panics if none does.
fn finds(bugs: Bugs, what: &str) {
    for members in [3, 5] {
        let seeds = if members == 3 { SEEDS_3 } else { SEEDS_5 };
        for seed in seeds {
            if let Err(f) = run(&config(seed, members, bugs)) {
                eprintln!(
                    "{what}: found by seed {seed} ({members} members): {}",
                    f.what.chars().take(300).collect::<String>()
                );
                return;
            }
        }
    }
    panic!("{what}: no suite seed caught the injected bug");
}

#[test]
fn finds_an_acknowledgement_before_the_wal_fdatasync() {
    finds(
        Bugs {
            ack_before_fsync: true,
            ..Bugs::default()
        },
        "ack before fdatasync",
    );
}

#[test]
fn finds_a_skipped_fsync_of_the_meta_page() {
    finds(
        Bugs {
            skip_meta_sync: true,
            ..Bugs::default()
        },
        "skipped meta page fsync",
    );
}

#[test]
fn finds_a_vote_that_was_not_persisted() {
    finds(
        Bugs {
            vote_without_persist: true,
            ..Bugs::default()
        },
        "vote without persisting it",
    );
}

#[test]
fn finds_a_read_served_without_read_index() {
    finds(
        Bugs {
            read_without_read_index: true,
            ..Bugs::default()
        },
        "read without ReadIndex",
    );
}

/// A seed is a run: the same trace twice, for a passing seed and for a failing one.
#[test]
fn a_seed_replays_exactly() {
    let cfg = config(7, 3, Bugs::default());
    let a = run(&cfg).expect("seed 7 passes");
    let b = run(&cfg).expect("seed 7 passes");
    assert!(a.trace.len() > 100, "a trace of {} events", a.trace.len());
    assert_eq!(a.trace_hash, trace_hash(&a.trace));
    assert_eq!(a.trace_hash, b.trace_hash, "two runs of seed 7 differ");
    let bugs = Bugs {
        read_without_read_index: true,
        ..Bugs::default()
    };
    let (seed, f1) = SEEDS_3
        .filter_map(|seed| run(&config(seed, 3, bugs)).err().map(|f| (seed, f)))
        .next()
        .expect("a suite seed finds the bug");
    let Err(f2) = run(&config(seed, 3, bugs)) else {
        panic!("seed {seed} failed once, then passed");
    };
    assert_eq!(f1.what, f2.what);
    assert_eq!(trace_hash(&f1.trace), trace_hash(&f2.trace));
}
