//! Heap profiles: [`Sampled`] wraps the global allocator and, once [`enable`]d, records the
//! stack of about one allocation per [`RATE`] bytes allocated (Go's sampling: exponentially
//! distributed gaps with that mean, so every allocation size is represented without bias). A
//! record lives until its block is freed, so [`live`] is the sampled in-use heap by stack;
//! [`super::pprof`] scales it back up as Go's `inuse_objects`/`inuse_space`.
//!
//! Cost: off, one relaxed load per allocation and per free. On, a thread-local subtraction per
//! allocation and a probe of up to [`PROBES`] table slots per free; the stack walk only for
//! sampled allocations. Nothing here allocates while recording: a thread inside the sampler
//! (`INSIDE`) is not sampled again, so the unwinder may allocate without recursion.
//!
//! Slot protocol: a writer claims slot i by CAS of `addrs[i]` from 0, then writes the record's
//! `size` and stack inside a `seq` odd/even window (a seqlock); a free zeroes the record in
//! such a window, then clears `addrs[i]`. Readers copy a record and keep it only if `seq` was
//! even and unchanged, `addrs[i]` still set and the record not zeroed. The addresses are a dense
//! array of their own, so a free's probe reads two cache lines, not one per record.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};

use super::stack::{self, AtomicStack, Stack};

/// Mean bytes allocated between two samples: Go's `runtime.MemProfileRate` default, and, like
/// it, settable before sampling starts ([`set_rate`]).
static RATE: AtomicU64 = AtomicU64::new(512 * 1024);

/// Mean bytes allocated between two samples.
pub fn rate() -> u64 {
    RATE.load(Ordering::Relaxed)
}

/// Sets [`rate`] (at start, before [`enable`]; tests sample densely so that a short run's live
/// heap is sure to show).
pub fn set_rate(bytes: u64) {
    RATE.store(bytes.max(1), Ordering::Relaxed);
}

/// Live sampled blocks the table holds (~4 GiB of live heap at the default rate); more are
/// dropped.
const SLOTS: usize = 1 << 13;
const PROBES: usize = 16;

struct Record {
    seq: AtomicU64,
    size: AtomicUsize,
    stack: AtomicStack,
}

struct Table {
    /// The sampled block in each slot; 0: free.
    addrs: Box<[AtomicUsize]>,
    records: Box<[Record]>,
}

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());
static DROPPED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Bytes this thread may still allocate before its next sample; `i64::MIN`: no gap drawn yet.
    static UNTIL: Cell<i64> = const { Cell::new(i64::MIN) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// The global allocator `A`, sampled for heap profiles once [`enable`]d.
pub struct Sampled<A>(pub A);

/// Starts sampling (`--enable-pprof`); false where stacks cannot be walked inside the allocator
/// safely ([`stack::unwinding_is_signal_safe`]). Allocations made before are not in profiles.
pub fn enable() -> bool {
    if ON.load(Ordering::Acquire) {
        return true;
    }
    if !stack::unwinding_is_signal_safe() {
        return false;
    }
    let table = Box::new(Table {
        addrs: (0..SLOTS).map(|_| AtomicUsize::new(0)).collect(),
        records: (0..SLOTS)
            .map(|_| Record {
                seq: AtomicU64::new(0),
                size: AtomicUsize::new(0),
                stack: AtomicStack::default(),
            })
            .collect(),
    });
    // Kept for the process's life: frees of sampled blocks may come at any time.
    TABLE.store(Box::leak(table), Ordering::Release);
    ON.store(true, Ordering::Release);
    true
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

fn table() -> Option<&'static Table> {
    let p = TABLE.load(Ordering::Acquire);
    // SAFETY: set once from a leaked box, never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The `probe`th slot for `addr`: the product's high bits, which depend on every address bit
/// (blocks that share their low bits, such as large blocks at a fixed offset in their own
/// segments, must not share their slots).
fn slot_of(addr: usize, probe: usize) -> usize {
    const BITS: u32 = SLOTS.trailing_zeros();
    let h = (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - BITS);
    (h as usize).wrapping_add(probe) % SLOTS
}

/// Runs `write` on record `r` inside an odd `seq` window.
fn write_record(r: &Record, write: impl FnOnce(&Record)) {
    r.seq.fetch_add(1, Ordering::Relaxed);
    fence(Ordering::Release);
    write(r);
    r.seq.fetch_add(1, Ordering::Release);
}

// SAFETY: every call is forwarded to `A` unchanged; sampling only observes the returned blocks.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Sampled<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { self.0.alloc(layout) };
        if ON.load(Ordering::Relaxed) && !p.is_null() {
            allocated(p as usize, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if ON.load(Ordering::Relaxed) && !p.is_null() {
            allocated(p as usize, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Before the block is freed: once it is, another thread may get it and sample it.
        if ON.load(Ordering::Relaxed) {
            freed(ptr as usize);
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let on = ON.load(Ordering::Relaxed);
        if on {
            freed(ptr as usize);
        }
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if on && !p.is_null() {
            allocated(p as usize, new_size);
        }
        p
    }
}

#[inline]
fn allocated(addr: usize, size: usize) {
    let left = UNTIL.with(|u| {
        let left = u.get().saturating_sub(size as i64);
        u.set(left);
        left
    });
    if left <= 0 {
        sample(addr, size, left == i64::MIN);
    }
}

#[cold]
#[inline(never)]
fn sample(addr: usize, size: usize, first: bool) {
    if INSIDE.with(|i| i.replace(true)) {
        return;
    }
    UNTIL.with(|u| u.set(next_gap(addr)));
    if !first {
        record(addr, size);
    }
    INSIDE.with(|i| i.set(false));
}

/// An exponentially distributed gap with mean [`rate`] (Go's `fastexprand`).
fn next_gap(seed: usize) -> i64 {
    let mut x = RNG.with(|r| r.get());
    if x == 0 {
        x = (seed as u64) ^ 0x2545_f491_4f6c_dd1d;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    RNG.with(|r| r.set(x));
    let uniform = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    (-uniform.ln() * rate() as f64) as i64 + 1
}

fn record(addr: usize, size: usize) {
    let Some(table) = table() else { return };
    let stack = stack::record(None);
    for probe in 0..PROBES {
        let i = slot_of(addr, probe);
        if table.addrs[i]
            .compare_exchange(0, addr, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            write_record(&table.records[i], |r| {
                r.size.store(size, Ordering::Relaxed);
                r.stack.store(&stack);
            });
            return;
        }
    }
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

#[inline]
fn freed(addr: usize) {
    let Some(table) = table() else { return };
    for probe in 0..PROBES {
        let i = slot_of(addr, probe);
        if table.addrs[i].load(Ordering::Relaxed) == addr {
            // Zeroed, so that a reader that sees the slot's next owner before it has written
            // anything reads an empty record and skips it.
            write_record(&table.records[i], |r| {
                r.size.store(0, Ordering::Relaxed);
                r.stack.clear();
            });
            table.addrs[i].store(0, Ordering::Release);
            return;
        }
    }
}

/// One live sampled block.
pub struct Block {
    pub size: usize,
    pub stack: Stack,
}

/// The live sampled blocks, and how many samples found no room in the table.
pub fn live() -> (Vec<Block>, u64) {
    let Some(table) = table() else {
        return (Vec::new(), 0);
    };
    let mut out = Vec::new();
    for (slot, r) in table.addrs.iter().zip(table.records.iter()) {
        let addr = slot.load(Ordering::Acquire);
        if addr == 0 {
            continue;
        }
        let before = r.seq.load(Ordering::Acquire);
        let size = r.size.load(Ordering::Relaxed);
        let stack = r.stack.load();
        fence(Ordering::Acquire);
        let after = r.seq.load(Ordering::Relaxed);
        if before % 2 == 0
            && before == after
            && size > 0
            && stack.len > 0
            && slot.load(Ordering::Relaxed) == addr
        {
            out.push(Block { size, stack });
        }
    }
    (out, DROPPED.load(Ordering::Relaxed))
}

/// How many bytes and blocks one sampled block of `size` stands for (Go's `scaleHeapSample`:
/// a block of size s is sampled with probability 1 - e^(-s/rate))).
pub fn scale(size: usize) -> (f64, f64) {
    if size == 0 {
        return (0.0, 0.0);
    }
    let p = 1.0 - (-(size as f64) / rate() as f64).exp();
    (1.0 / p, size as f64 / p)
}
