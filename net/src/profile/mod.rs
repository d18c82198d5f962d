//! Runtime profiles for `--enable-pprof`, in Go's pprof format (profile.proto, gzipped), so
//! `go tool pprof`, `pprof` and every tool that reads Go's profiles read retcd's:
//!
//! - [`cpu`]: where every thread spends CPU time, sampled at 100 Hz;
//! - [`heap`]: the live heap by allocation stack, sampled every ~512 KiB allocated (Go's rate),
//!   recorded by the global allocator wrapper [`heap::Sampled`];
//! - [`pprof`]: the format; [`stack`]: recording and symbolizing stacks.
//!
//! Everything is off unless `--enable-pprof` (or etcd's other trigger, `--log-level=debug`):
//! then the allocator's only cost is one relaxed load per call. Served by
//! `crate::http`'s `/debug/pprof/` handlers; encoding runs on a thread of its own, never on a
//! core. Symbolizing reads the binary's line tables for each profile and frees them after: a
//! transient ~200 MiB on the release build, for a second or two.

pub mod cpu;
pub mod heap;
pub mod pprof;
pub mod stack;

use std::fmt::Write;
use std::time::Duration;

use pprof::{Builder, LabelValue, Values};

/// A CPU profile of `recorded`: Go's sample types (`samples`/count, `cpu`/nanoseconds), each
/// sample labelled with its thread's name and id.
pub fn encode_cpu(recorded: &cpu::Recorded) -> Vec<u8> {
    let period = 1_000_000_000 / cpu::HZ;
    let mut b = Builder::new(
        &[("samples", "count"), ("cpu", "nanoseconds")],
        "cpu",
        ("cpu", "nanoseconds", period),
        is_signal_internal,
    );
    b.duration(recorded.duration);
    if recorded.dropped > 0 {
        b.comment(&format!(
            "{} samples dropped: the table of distinct stacks was full",
            recorded.dropped
        ));
    }
    let mut names = std::collections::HashMap::new();
    for (tid, stack, count) in &recorded.samples {
        let name = names
            .entry(*tid)
            .or_insert_with(|| thread_name(*tid))
            .clone();
        let n = *count as i64;
        b.sample(
            stack,
            Values {
                values: &[n, n * period],
                labels: &[
                    ("thread", LabelValue::Str(name)),
                    ("tid", LabelValue::Num(i64::from(*tid))),
                ],
            },
        );
    }
    b.finish()
}

/// The heap profile: Go's in-use sample types (`inuse_objects`/count, `inuse_space`/bytes),
/// scaled from the samples.
pub fn encode_heap() -> Vec<u8> {
    let (blocks, dropped) = heap::live();
    let mut b = Builder::new(
        &[("inuse_objects", "count"), ("inuse_space", "bytes")],
        "inuse_space",
        ("space", "bytes", heap::rate() as i64),
        is_allocator_internal,
    );
    if dropped > 0 {
        b.comment(&format!(
            "{dropped} samples dropped: the table of live samples was full"
        ));
    }
    for block in blocks {
        let (objects, bytes) = heap::scale(block.size);
        b.sample(
            &block.stack,
            Values {
                values: &[objects.round() as i64, bytes.round() as i64],
                labels: &[("bytes", LabelValue::Num(block.size as i64))],
            },
        );
    }
    b.finish()
}

/// `/debug/pprof/heap?debug=1`: the same samples as text, in Go's legacy heap profile layout
/// (raw sampled counts, and twice the sampling rate after `heap/`, from which readers such as
/// `go tool pprof` scale them; the bracketed totals, allocations since start in Go's, are the
/// in-use ones here: retcd keeps no cumulative counts), then the process's memory as the kernel
/// reports it.
pub fn heap_text() -> String {
    let (blocks, dropped) = heap::live();
    let mut by_stack: std::collections::HashMap<stack::Stack, (u64, u64)> = Default::default();
    for block in &blocks {
        let e = by_stack.entry(block.stack).or_default();
        e.0 += 1;
        e.1 += block.size as u64;
    }
    let mut rows: Vec<_> = by_stack.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
    let (objects, bytes) = rows
        .iter()
        .fold((0, 0), |t, (_, (o, s))| (t.0 + o, t.1 + s));
    let mut out = format!(
        "heap profile: {objects}: {bytes} [{objects}: {bytes}] @ heap/{}\n",
        2 * heap::rate()
    );
    let mut symbols = stack::Symbols::default();
    for (stack, (o, s)) in &rows {
        let frames = symbols.lines(stack, is_allocator_internal);
        let _ = write!(out, "{o}: {s} [{o}: {s}] @");
        let mut last = None;
        for f in &frames {
            if last != Some(f.ip) {
                let _ = write!(out, " {:#x}", f.ip);
                last = Some(f.ip);
            }
        }
        out.push('\n');
        for f in &frames {
            let l = &f.line;
            let _ = writeln!(out, "#\t{:#x}\t{}\t{}:{}", f.ip, l.function, l.file, l.line);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "# retcd process memory (/proc/self/status)");
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for l in status
            .lines()
            .filter(|l| l.starts_with("Vm") || l.starts_with("Rss"))
        {
            let _ = writeln!(
                out,
                "# {}",
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
    }
    let _ = writeln!(out, "# SampledLiveBlocks = {}", blocks.len());
    let _ = writeln!(out, "# DroppedSamples = {dropped}");
    out
}

/// The name a thread gave itself (`/proc/self/task/<tid>/comm`), or its id once it is gone.
fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| format!("thread {tid}"))
}

/// Frames of the CPU profiler's handler (left out when the stack walk could not skip them by
/// the interrupted address).
fn is_signal_internal(function: &str) -> bool {
    function.starts_with("retcd_net::profile::cpu::") || function.starts_with("backtrace::")
}

/// Frames between an allocation and the sampler: the allocator shims and the sampler (by their
/// display names: `<alloc::alloc::Global as Allocator>::grow` is `alloc::alloc::Global::grow`).
fn is_allocator_internal(function: &str) -> bool {
    function.starts_with("retcd_net::profile::")
        || function.starts_with("__rust_alloc")
        || function.starts_with("__rust_realloc")
        || function.starts_with("__rustc::__rust_alloc")
        || function.starts_with("__rustc::__rust_realloc")
        || function.starts_with("__rg_")
        || function.starts_with("alloc::alloc::")
}

/// How long a `/debug/pprof/profile` runs by default, and at most (longer asks are cut to it).
pub const DEFAULT_SECONDS: u64 = 30;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
