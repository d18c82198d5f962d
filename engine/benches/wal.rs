//! WAL group-commit benchmark (`cargo bench -p retcd-engine --bench wal`).
//!
//! Inside one glommio executor, N writer tasks (N = 1, 16, 256) each submit one Raft entry at a
//! time (256 bytes of data, like a small put) and wait until it is durable. A single appender task
//! takes every request pending when it looks (a flume channel) and makes ONE `Wal::append` of
//! them: one write and one `fdatasync` per batch, the group commit the sequencer does (DESIGN
//! §2.4). Each writer count runs for a fixed time on a fresh WAL.
//!
//! Reported per writer count: records/s, appends (= fdatasyncs) /s, mean batch size, per-record
//! latency (submit → durable) p50/p99/max, and the appends that rolled to a new segment. Plus a
//! `raw` loop without the WAL: one 4 KiB glommio `DmaFile` write + `fdatasync` at a time (fio's
//! O_DIRECT run, through the executor), which separates the executor's I/O path from the WAL.
//!
//! A number means something only against a baseline measured in the same run on the same disk:
//! perf/engine.sh brackets each run of this bench with fio's fdatasync rate and computes
//! records/s ÷ fio's fdatasyncs/s; run alone, this bench prints that ratio when given fio's rate
//! in `RETCD_FIO_FSYNC_IOPS`.
//!
//! Environment:
//! - `RETCD_BENCH_DIR`: parent of the WAL directory (default: cargo's target/tmp, which is on the
//!   repository's filesystem; never point it at a tmpfs, fdatasync is free there);
//! - `RETCD_BENCH_SECS`: seconds per writer count (default 3);
//! - `RETCD_WAL_WRITERS`: comma-separated writer counts (default `1,16,256`);
//! - `RETCD_FIO_FSYNC_IOPS`: fio's fdatasyncs/s on the same filesystem (optional).

mod common;

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bench_tempdir, env_or};
use retcd_engine::runtime::{block_on_local, sleep, spawn_local};
use retcd_engine::wal::{Record, Wal, WalOptions};

/// Bytes of entry data per record (the Entry payload adds 24 bytes of index/term/type).
const DATA_LEN: usize = 256;
const WARMUP: Duration = Duration::from_millis(500);
/// Pause between preparing a fresh WAL or file (64 MiB of zeros written and fdatasynced) and the
/// measurement, so that the device (or a VM host) is not still busy with those writes.
const SETTLE: Duration = Duration::from_secs(1);
/// An append slower than this (and not a segment roll) is counted as slow.
const SLOW: Duration = Duration::from_millis(5);

/// Records that fit one segment: every record is 16 + pad8(24 + DATA_LEN) bytes (DESIGN §2.3),
/// packed after the 4096-byte header; the bench writes no HardState/Checkpoint to carry over.
fn records_per_segment(segment_size: u64) -> u64 {
    let rec = 16 + (24 + DATA_LEN as u64).div_ceil(8) * 8;
    (segment_size - 4096) / rec
}

/// One proposal: its data and where to say it is durable.
struct Req {
    data: Bytes,
    done: flume::Sender<()>,
}

struct Outcome {
    writers: usize,
    secs: f64,
    records: u64,
    appends: u64,
    /// Appends that started a new segment (count, total time).
    rolls: (u64, Duration),
    /// Other appends slower than `SLOW`.
    slow: u64,
    /// Per-record latencies in nanoseconds, sorted.
    lat: Vec<u64>,
}

/// Commits the filesystem holding `path` (`syncfs`): the journal, and with it the discards of
/// deleted WAL segments (ext4 mounted with `discard`), are done before the next measurement
/// instead of during it.
fn sync_fs(path: &Path) {
    let f = std::fs::File::open(path).expect("open for syncfs");
    // SAFETY: `syncfs` only reads the descriptor, which `f` keeps open for the call.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
}

/// Runs `writers` writer tasks and one appender against a fresh WAL in `dir` for `run_for`.
async fn run(dir: &Path, writers: usize, run_for: Duration) -> Outcome {
    let opts = WalOptions::new(dir);
    let per_segment = records_per_segment(opts.segment_size);
    let (mut wal, recovered) = Wal::open(opts).await.expect("open WAL");
    assert!(recovered.records.is_empty(), "the WAL dir must start empty");
    sync_fs(dir);
    sleep(SETTLE).await;

    let (req_tx, req_rx) = flume::unbounded::<Req>();
    let (lat_tx, lat_rx) = flume::unbounded::<Vec<u64>>();
    let stop = Rc::new(Cell::new(false));
    for w in 0..writers {
        let req_tx = req_tx.clone();
        let lat_tx = lat_tx.clone();
        let stop = stop.clone();
        spawn_local(async move {
            let data: Bytes = (0..DATA_LEN)
                .map(|i| (w.wrapping_mul(131) + i) as u8)
                .collect::<Vec<u8>>()
                .into();
            let mut lat = Vec::with_capacity(1 << 14);
            while !stop.get() {
                let (done, durable) = flume::bounded(1);
                let t0 = Instant::now();
                req_tx
                    .send(Req {
                        data: data.clone(),
                        done,
                    })
                    .expect("appender alive");
                durable.recv_async().await.expect("appender answers");
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            lat_tx.send(lat).expect("collector alive");
        });
    }
    drop(req_tx);
    drop(lat_tx);
    {
        let stop = stop.clone();
        spawn_local(async move {
            sleep(run_for).await;
            stop.set(true);
        });
    }

    // The appender: everything pending → one append (one fdatasync) → acknowledge all.
    let start = Instant::now();
    let (mut records, mut appends, mut slow) = (0u64, 0u64, 0u64);
    let mut rolls = (0u64, Duration::ZERO);
    let mut next_index = 1u64;
    let mut batch: Vec<Req> = Vec::new();
    let mut recs: Vec<Record> = Vec::new();
    while let Ok(first) = req_rx.recv_async().await {
        batch.push(first);
        batch.extend(req_rx.try_iter());
        recs.clear();
        for r in &batch {
            recs.push(Record::Entry {
                index: next_index,
                term: 1,
                entry_type: 0,
                data: r.data.clone(),
            });
            next_index += 1;
        }
        let t0 = Instant::now();
        wal.append(&recs).await.expect("WAL append");
        let took = t0.elapsed();
        appends += 1;
        // The first record of segment k (k ≥ 1) is record number k × per_segment (0-based).
        let rolled = (records + batch.len() as u64 - 1) / per_segment != records / per_segment;
        records += batch.len() as u64;
        if rolled {
            rolls.0 += 1;
            rolls.1 += took;
        } else if took > SLOW {
            slow += 1;
        }
        for r in batch.drain(..) {
            let _ = r.done.send(());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    wal.close().await.expect("close WAL");

    let mut lat = Vec::with_capacity(records as usize);
    while let Ok(l) = lat_rx.recv_async().await {
        lat.extend(l);
    }
    assert_eq!(lat.len() as u64, records, "every record was acknowledged");
    lat.sort_unstable();
    let segments = std::fs::read_dir(dir)
        .expect("list WAL dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        })
        .count();
    if segments as u64 != 1 + rolls.0 {
        // The roll detection assumes DESIGN §2.3's record size and one file per segment; if the
        // WAL changed (e.g. it creates the next segment ahead of time), say so instead of failing.
        println!(
            "note: {segments} segment files with {} predicted rolls; the roll column may be off",
            rolls.0
        );
    }
    Outcome {
        writers,
        secs,
        records,
        appends,
        rolls,
        slow,
        lat,
    }
}

/// The same disk operation as fio's O_DIRECT run, through glommio instead of syscalls: a 4 KiB
/// `DmaFile` write at sequential offsets of a zero-filled 64 MiB file, then `fdatasync`, one at a
/// time. Comparing it with fio separates the executor's I/O path from the WAL's own work.
/// Returns (seconds, operations, sorted latencies in ns).
async fn raw_dma(dir: &Path, run_for: Duration) -> (f64, u64, Vec<u64>) {
    use glommio::io::OpenOptions;
    const SIZE: u64 = 64 << 20;
    const CHUNK: usize = 1 << 20;
    std::fs::create_dir_all(dir).expect("create raw dir");
    // Keeps glommio's per-thread iopoll probe away from an empty file (see wal::prime_dma_io).
    retcd_engine::wal::prime_dma_io(dir).await.expect("prime");
    let path = dir.join("raw");
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .expect("open raw file");
    let zeros = Rc::new({
        let mut b = file.alloc_dma_buffer(CHUNK);
        b.as_bytes_mut().fill(0);
        b
    });
    for pos in (0..SIZE).step_by(CHUNK) {
        file.write_rc_at(zeros.clone(), pos)
            .await
            .expect("zero-fill");
    }
    file.fdatasync().await.expect("fdatasync");
    drop(zeros);
    sync_fs(dir);
    sleep(SETTLE).await;

    let block = Rc::new({
        let mut b = file.alloc_dma_buffer(4096);
        b.as_bytes_mut().fill(0x5a);
        b
    });
    let mut lat = Vec::with_capacity(1 << 16);
    let (mut pos, mut ops) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < run_for {
        let t0 = Instant::now();
        file.write_rc_at(block.clone(), pos)
            .await
            .expect("raw write");
        file.fdatasync().await.expect("raw fdatasync");
        lat.push(t0.elapsed().as_nanos() as u64);
        ops += 1;
        pos = (pos + 4096) % SIZE;
    }
    let secs = start.elapsed().as_secs_f64();
    file.close().await.expect("close raw file");
    std::fs::remove_dir_all(dir).expect("remove raw dir");
    sync_fs(dir.parent().expect("raw dir has a parent"));
    lat.sort_unstable();
    (secs, ops, lat)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

fn main() {
    let secs: f64 = env_or("RETCD_BENCH_SECS", 3.0);
    let writers: Vec<usize> = std::env::var("RETCD_WAL_WRITERS")
        .unwrap_or_else(|_| "1,16,256".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("RETCD_WAL_WRITERS: comma-separated counts")
        })
        .collect();
    let fio: Option<f64> = std::env::var("RETCD_FIO_FSYNC_IOPS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|v: &f64| *v > 0.0);
    let tmp = bench_tempdir("retcd-bench-wal-");
    println!(
        "## WAL group commit: {} B entry data per record, {secs} s per writer count, dir {}",
        DATA_LEN,
        tmp.path().display()
    );

    let (raw, outcomes) = block_on_local(async {
        // Warm-up on its own WAL: first segment creation, buffer allocation, page faults.
        let warm = tmp.path().join("warmup");
        run(&warm, 16, WARMUP).await;
        std::fs::remove_dir_all(&warm).expect("remove warm-up WAL");
        sync_fs(tmp.path());
        let raw = raw_dma(&tmp.path().join("raw"), Duration::from_secs_f64(secs)).await;
        let mut out = Vec::new();
        for &n in &writers {
            let dir = tmp.path().join(format!("w{n}"));
            let o = run(&dir, n, Duration::from_secs_f64(secs)).await;
            std::fs::remove_dir_all(&dir).expect("remove WAL");
            sync_fs(tmp.path());
            out.push(o);
        }
        (raw, out)
    });

    println!();
    print!(
        "| writers | records/s | appends (fdatasyncs)/s | mean batch | p50 µs | p99 µs | max µs | segment rolls: count, mean ms | other appends > {} ms |",
        SLOW.as_millis()
    );
    if fio.is_some() {
        print!(" records/s ÷ fio fdatasync/s |");
    }
    println!();
    print!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if fio.is_some() {
        print!("---:|");
    }
    println!();
    for o in &outcomes {
        let rps = o.records as f64 / o.secs;
        let roll_ms = if o.rolls.0 > 0 {
            format!("{:.1}", o.rolls.1.as_secs_f64() * 1e3 / o.rolls.0 as f64)
        } else {
            "-".to_owned()
        };
        print!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {}, {} | {} |",
            o.writers,
            rps,
            o.appends as f64 / o.secs,
            o.records as f64 / o.appends.max(1) as f64,
            pct(&o.lat, 0.50),
            pct(&o.lat, 0.99),
            pct(&o.lat, 1.0),
            o.rolls.0,
            roll_ms,
            o.slow,
        );
        if let Some(f) = fio {
            print!(" {:.2} |", rps / f);
        }
        println!();
    }
    println!();
    println!(
        "Without the WAL: one 4 KiB glommio DmaFile write + fdatasync at a time (fio's O_DIRECT run, through the executor):"
    );
    println!();
    println!("| raw | ops/s | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| raw | {:.0} | {:.0} | {:.0} | {:.0} |",
        raw.1 as f64 / raw.0,
        pct(&raw.2, 0.50),
        pct(&raw.2, 0.99),
        pct(&raw.2, 1.0)
    );
    if let Some(f) = fio {
        println!("\nfio baseline (RETCD_FIO_FSYNC_IOPS): {f:.0} fdatasyncs/s");
    }
}
