//! Metric cells: Prometheus counters, gauges and histograms that the hot paths bump with relaxed
//! atomics and the member's `/metrics` handler (net/src/metrics.rs) reads, plus the cells of
//! what this crate measures itself (the WAL's fsyncs and bytes, the page store's durable
//! commits).
//!
//! Invariants: recording never blocks, allocates or takes a lock. A [`Counter`] bumped from
//! every core is sharded by thread (one cache line a shard), so cores never write the same
//! line; a reading sums the shards, each at some moment (Prometheus counters allow that). A
//! [`Histogram`]'s buckets are not cumulative here (each observation bumps one), so recording
//! is one increment; the reader accumulates.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Shards of a [`Counter`]: threads beyond this many share shards.
pub const SHARDS: usize = 16;

/// The most bucket bounds a [`Histogram`] has.
pub const MAX_BUCKETS: usize = 24;

#[repr(align(64))]
struct Line(AtomicU64);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard, assigned round-robin at its first use.
#[inline]
fn shard() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

/// A monotonic count, sharded by thread.
pub struct Counter {
    shards: [Line; SHARDS],
}

impl Counter {
    pub const fn new() -> Counter {
        Counter {
            shards: [const { Line(AtomicU64::new(0)) }; SHARDS],
        }
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A value that goes up and down (one cell: set by one writer, or added to).
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    #[inline]
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge::new()
    }
}

/// A distribution over fixed bucket bounds (upper bounds, ascending; `+Inf` is implied).
pub struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]`: observations in (bounds[i-1], bounds[i]]; the last one past every bound.
    counts: [AtomicU64; MAX_BUCKETS + 1],
    /// The sum of the observations, as f64 bits.
    sum: AtomicU64,
}

/// What a reader sees of a [`Histogram`]: cumulative counts per bound, then the total.
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// `cumulative[i]`: observations ≤ bounds[i].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// A histogram over `bounds` (at most [`MAX_BUCKETS`], ascending).
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS);
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        let mut cur = self.sum.load(Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match self.sum.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        let mut total = 0;
        for c in &self.counts[..self.bounds.len()] {
            total += c.load(Relaxed);
            cumulative.push(total);
        }
        total += self.counts[self.bounds.len()].load(Relaxed);
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            count: total,
            sum: f64::from_bits(self.sum.load(Relaxed)),
        }
    }
}

/// etcd's disk latency buckets: `prometheus.ExponentialBuckets(0.001, 2, 14)`, 1 ms to 8.192 s.
pub const DISK_SECONDS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// `etcd_disk_wal_fsync_duration_seconds`: each fdatasync of the WAL's appends.
pub static WAL_FSYNC_SECONDS: Histogram = Histogram::new(DISK_SECONDS);
/// `etcd_disk_wal_write_bytes_total`: bytes the WAL wrote (its padded blocks).
pub static WAL_WRITE_BYTES: Counter = Counter::new();
/// `etcd_disk_backend_commit_duration_seconds`: each durable commit of the page store (a
/// checkpoint's fdatasyncs and meta write: what etcd's bbolt commit is).
pub static BACKEND_COMMIT_SECONDS: Histogram = Histogram::new(DISK_SECONDS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_and_cumulative_when_read() {
        static H: Histogram = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0] {
            H.observe(v);
        }
        let s = H.snapshot();
        assert_eq!(s.cumulative, [2, 3]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 2.65).abs() < 1e-9);
    }

    #[test]
    fn counter_sums_its_shards() {
        static C: Counter = Counter::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        C.inc();
                    }
                });
            }
        });
        assert_eq!(C.get(), 4000);
    }
}
