//! Runs the deterministic cluster simulation (`retcd_raft::sim`) over many seeds, or replays one.
//!
//! ```text
//! retcd-sim [--seeds N] [--from S] [--seed S] [--members 3|5] [--ops N] [--jobs J]
//!           [--bug NAME]... [--trace] [--keep-going]
//! ```
//!
//! `--seeds N` runs seeds `S..S+N` (`--from`, default 1) on `--jobs` threads (default 1) and
//! stops at the first failure (`--keep-going`: counts them all); `--seed S` runs one seed, and
//! `--trace` prints its whole trace. A failure prints the seed, the command that replays it and
//! the end of its trace. The exit status is 1 when a seed failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use retcd_raft::sim::{Bugs, Config, run_async};

struct Args {
    from: u64,
    seeds: u64,
    members: usize,
    ops: usize,
    jobs: usize,
    bugs: Bugs,
    trace: bool,
    keep_going: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("retcd-sim: {msg}");
    eprintln!(
        "usage: retcd-sim [--seeds N] [--from S] [--seed S] [--members 3|5] [--ops N] [--jobs J] [--bug ack-before-fsync|skip-meta-sync|vote-without-persist|read-without-read-index]... [--trace] [--keep-going]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        from: 1,
        seeds: 1,
        members: 3,
        ops: Config::new(0).ops,
        jobs: 1,
        bugs: Bugs::default(),
        trace: false,
        keep_going: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = value("--seeds"),
            "--from" => a.from = value("--from"),
            "--seed" => {
                a.from = value("--seed");
                a.seeds = 1;
            }
            "--members" => a.members = value("--members") as usize,
            "--ops" => a.ops = value("--ops") as usize,
            "--jobs" => a.jobs = (value("--jobs") as usize).max(1),
            "--bug" => {
                let name = it.next().unwrap_or_else(|| usage("--bug needs a name"));
                let b =
                    Bugs::by_name(&name).unwrap_or_else(|| usage(&format!("unknown bug {name}")));
                a.bugs = Bugs {
                    ack_before_fsync: a.bugs.ack_before_fsync || b.ack_before_fsync,
                    skip_meta_sync: a.bugs.skip_meta_sync || b.skip_meta_sync,
                    vote_without_persist: a.bugs.vote_without_persist || b.vote_without_persist,
                    read_without_read_index: a.bugs.read_without_read_index
                        || b.read_without_read_index,
                };
            }
            "--trace" => a.trace = true,
            "--keep-going" => a.keep_going = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if ![1, 3, 5].contains(&a.members) {
        usage("--members is 1, 3 or 5");
    }
    a
}

fn main() {
    let args = Arc::new(parse());
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(args.from));
    let failed = Arc::new(AtomicU64::new(0));
    let passed = Arc::new(AtomicU64::new(0));
    let undecided = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let end = args.from + args.seeds;
    let threads: Vec<_> = (0..args.jobs)
        .map(|_| {
            let (args, next, failed, passed, undecided, stop) = (
                args.clone(),
                next.clone(),
                failed.clone(),
                passed.clone(),
                undecided.clone(),
                stop.clone(),
            );
            // One executor per thread for all its seeds (see `run_async`).
            std::thread::spawn(move || retcd_engine::runtime::block_on_local(async move {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let mut cfg = Config::new(seed);
                    cfg.members = args.members;
                    cfg.ops = args.ops;
                    cfg.bugs = args.bugs;
                    match run_async(&cfg).await {
                        Ok(r) => {
                            passed.fetch_add(1, Ordering::Relaxed);
                            if r.undecided {
                                undecided.fetch_add(1, Ordering::Relaxed);
                            }
                            if args.trace {
                                for line in &r.trace {
                                    println!("{line}");
                                }
                            }
                            if args.seeds == 1 || args.trace {
                                println!(
                                    "seed {seed}: ok ({} events, {} ms simulated, {} writes acknowledged, {} unknown, {} reads, {} crashes, {} snapshots, trace hash {:016x})",
                                    r.events,
                                    r.sim_ms,
                                    r.writes_acked,
                                    r.writes_unknown,
                                    r.reads,
                                    r.crashes,
                                    r.snapshots,
                                    r.trace_hash
                                );
                            }
                        }
                        Err(f) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if args.trace {
                                for line in &f.trace {
                                    println!("{line}");
                                }
                            }
                            eprintln!("{f}");
                            if !args.keep_going {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    let done = passed.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
                    if args.seeds > 1 && done.is_multiple_of(500) {
                        eprintln!(
                            "{done} seeds, {} failed, {:.0} s",
                            failed.load(Ordering::Relaxed),
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
            }))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let (p, f) = (
        passed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "{} members, seeds {}..{}: {p} passed, {f} failed, {} with a history the checker left undecided, {:.1} s",
        args.members,
        args.from,
        end,
        undecided.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    if f > 0 {
        std::process::exit(1);
    }
}
