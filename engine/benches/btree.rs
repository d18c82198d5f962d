//! B+tree page-store benchmark (`cargo bench -p retcd-engine --bench btree`).
//!
//! 1M keys (21-byte keys `k` + 20 decimal digits, so key order = number order; 64–100-byte values):
//!
//! 1. insert in random order, 1000 puts per write transaction (soft commit), a durable commit
//!    (`sync`) every 100 transactions and at the end — the apply loop's pattern;
//! 2. the same keys in ascending order into a fresh store;
//! 3. point gets of random existing keys on the random-order tree, a fresh snapshot per get (as a
//!    request takes one), each value checked;
//! 4. range scans of 1000 consecutive keys from random starting keys, then one full scan.
//!
//! Reported: ops/s, file size (high-water pages × 4096), and the process's memory (`VmRSS` from
//! /proc/self/status, split into `RssAnon` — heap, which must not grow with the number of keys —
//! and `RssFile` — pages of the db file mapped by the reads, which is page cache, not heap).
//!
//! Environment: `RETCD_BENCH_DIR` (parent of the db files; default cargo's target/tmp),
//! `RETCD_BTREE_KEYS` (default 1000000).

mod common;

use std::time::{Duration, Instant};

use common::{bench_tempdir, env_or};
use retcd_engine::btree::{self, PageStore, StoreOptions};

const BATCH: usize = 1000;
const SYNC_EVERY: usize = 100;
const SCAN_LEN: usize = 1000;
const PAGE: u64 = 4096;

/// splitmix64: a small deterministic PRNG (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `k` + `i` as 20 decimal digits (no allocation: the timed loops measure the tree, not `format!`).
fn key(i: usize) -> [u8; 21] {
    let mut k = [b'0'; 21];
    k[0] = b'k';
    let mut x = i;
    for d in k[1..].iter_mut().rev() {
        *d = b'0' + (x % 10) as u8;
        x /= 10;
    }
    k
}

fn value_len(i: usize) -> usize {
    64 + i % 37
}

/// Fills `buf` with the value of key `i`.
fn value(i: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend((0..value_len(i)).map(|j| (i.wrapping_mul(31) + j) as u8));
}

/// (VmRSS, RssAnon, RssFile) in MiB.
fn rss() -> (f64, f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// Bytes of the file that hold the tree: (high water − free or pending-free pages) × 4096.
fn live_bytes(store: &PageStore) -> u64 {
    (store.high_water() - 2 - store.free_pages() as u64) * PAGE
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

struct Row {
    what: String,
    ops: usize,
    secs: f64,
    note: String,
}

fn row(rows: &mut Vec<Row>, what: &str, ops: usize, d: Duration, note: String) {
    rows.push(Row {
        what: what.to_owned(),
        ops,
        secs: d.as_secs_f64(),
        note,
    });
}

/// Inserts keys `order[..]` in transactions of `BATCH`, syncing every `SYNC_EVERY` transactions
/// and at the end. Returns (total time, time in sync). Prints memory at each quarter.
fn load(store: &mut PageStore, order: &[u32], label: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let mut in_sync = Duration::ZERO;
    let quarter = order.len().div_ceil(4);
    let mut val = Vec::with_capacity(128);
    for (t, chunk) in order.chunks(BATCH).enumerate() {
        let mut txn = store.begin();
        for &i in chunk {
            value(i as usize, &mut val);
            txn.put(&key(i as usize), &val).expect("put");
        }
        txn.commit([t as u64 + 1, 0, 0, 0]).expect("commit");
        let done = (t + 1) * BATCH;
        if (t + 1) % SYNC_EVERY == 0 || done >= order.len() {
            let s = Instant::now();
            store.sync().expect("sync");
            in_sync += s.elapsed();
        }
        if done % quarter < BATCH || done >= order.len() {
            let (vm, anon, file) = rss();
            println!(
                "  {label}: {:>8} keys  {:>6.1} s  file {:>7.1} MiB (live {:>6.1} MiB, {:>6} free pages)  VmRSS {vm:>6.1} MiB = anon {anon:>5.1} + file {file:>6.1}",
                done.min(order.len()),
                start.elapsed().as_secs_f64(),
                mib(store.high_water() * PAGE),
                mib(live_bytes(store)),
                store.free_pages(),
            );
        }
    }
    (start.elapsed(), in_sync)
}

fn main() {
    let n: usize = env_or("RETCD_BTREE_KEYS", 1_000_000);
    let tmp = bench_tempdir("retcd-bench-btree-");
    println!(
        "## B+tree page store: {n} keys of 21 B, values 64–100 B, {BATCH} puts per txn, sync every {SYNC_EVERY} txns, dir {}",
        tmp.path().display()
    );
    let (vm, anon, file) = rss();
    // Progress lines go into a fenced block so that the output is Markdown (perf/engine.sh
    // copies it into the results file).
    println!("\n```text");
    println!("  start: VmRSS {vm:.1} MiB = anon {anon:.1} + file {file:.1}");

    let mut rng = Rng(0x5eed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut rows = Vec::new();

    // 1. Random-order insert.
    let mut store =
        PageStore::open(&StoreOptions::new(tmp.path().join("random/db"))).expect("open store");
    let (d, in_sync) = load(&mut store, &order, "random insert");
    let random_file = store.high_water() * PAGE;
    row(
        &mut rows,
        "insert, random order",
        n,
        d,
        format!(
            "{:.1} s of it in {} syncs; file {:.1} MiB, live {:.1} MiB",
            in_sync.as_secs_f64(),
            n.div_ceil(BATCH).div_ceil(SYNC_EVERY),
            mib(random_file),
            mib(live_bytes(&store))
        ),
    );

    // 2. Sequential insert into a fresh store.
    {
        let seq: Vec<u32> = (0..n as u32).collect();
        let mut s2 = PageStore::open(&StoreOptions::new(tmp.path().join("sequential/db")))
            .expect("open store");
        let (d, in_sync) = load(&mut s2, &seq, "sequential insert");
        row(
            &mut rows,
            "insert, sequential order",
            n,
            d,
            format!(
                "{:.1} s of it in {} syncs; file {:.1} MiB, live {:.1} MiB",
                in_sync.as_secs_f64(),
                n.div_ceil(BATCH).div_ceil(SYNC_EVERY),
                mib(s2.high_water() * PAGE),
                mib(live_bytes(&s2))
            ),
        );
    }
    std::fs::remove_dir_all(tmp.path().join("sequential")).expect("remove sequential store");

    let reader = store.reader();

    // 3. Point gets, one snapshot per get.
    let gets = n;
    let keys: Vec<usize> = (0..gets).map(|_| rng.below(n)).collect();
    let start = Instant::now();
    for &i in &keys {
        let snap = reader.snapshot();
        let k = key(i);
        let v = btree::get(&snap, &k).expect("get").expect("key present");
        assert_eq!(v.len(), value_len(i));
    }
    row(
        &mut rows,
        "point get (random key, snapshot per get)",
        gets,
        start.elapsed(),
        String::new(),
    );
    // The same through one snapshot: the lookup alone.
    let start = Instant::now();
    {
        let snap = reader.snapshot();
        for &i in &keys {
            let v = btree::get(&snap, &key(i))
                .expect("get")
                .expect("key present");
            assert_eq!(v.len(), value_len(i));
        }
    }
    row(
        &mut rows,
        "point get (random key, one snapshot)",
        gets,
        start.elapsed(),
        String::new(),
    );

    // 4. Range scans of SCAN_LEN keys, then a full scan.
    let scans = (n / SCAN_LEN).max(1) * 5;
    let starts: Vec<usize> = (0..scans)
        .map(|_| rng.below(n.saturating_sub(SCAN_LEN).max(1)))
        .collect();
    let start = Instant::now();
    let mut seen = 0usize;
    for &s in &starts {
        let snap = reader.snapshot();
        let mut c = snap.cursor();
        c.seek(&key(s)).expect("seek");
        let mut got = 0;
        while c.valid() && got < SCAN_LEN {
            std::hint::black_box(c.value());
            got += 1;
            c.advance().expect("advance");
        }
        assert_eq!(got, SCAN_LEN.min(n - s));
        seen += got;
    }
    let d = start.elapsed();
    row(
        &mut rows,
        &format!("range scan of {SCAN_LEN} keys (ops = scans)"),
        scans,
        d,
        format!("{:.0} keys/s", seen as f64 / d.as_secs_f64()),
    );
    let start = Instant::now();
    {
        let snap = reader.snapshot();
        let mut c = snap.cursor();
        c.seek(b"").expect("seek");
        let mut got = 0usize;
        let mut prev: Vec<u8> = Vec::new();
        while c.valid() {
            assert!(c.key() > prev.as_slice(), "keys ascend");
            prev.clear();
            prev.extend_from_slice(c.key());
            std::hint::black_box(c.value());
            got += 1;
            c.advance().expect("advance");
        }
        assert_eq!(got, n, "full scan sees every key");
    }
    let d = start.elapsed();
    row(
        &mut rows,
        "full scan (ops = keys)",
        n,
        d,
        format!("{:.2} s for all keys", d.as_secs_f64()),
    );
    let (vm, anon, file) = rss();
    println!("  after reads: VmRSS {vm:.1} MiB = anon {anon:.1} + file {file:.1}");
    println!("```");

    println!();
    println!("| operation | ops | seconds | ops/s | µs/op | notes |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {} |",
            r.what,
            r.ops,
            r.secs,
            r.ops as f64 / r.secs,
            r.secs * 1e6 / r.ops as f64,
            r.note
        );
    }
    println!();
    println!(
        "random-order tree: file {:.1} MiB = {:.0} bytes/key, live pages {:.0} bytes/key (raw key + value ≈ 103 bytes/key)",
        mib(random_file),
        random_file as f64 / n as f64,
        live_bytes(&store) as f64 / n as f64,
    );
}
