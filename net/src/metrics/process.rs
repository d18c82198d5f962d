//! client_golang's process collector on Linux: `process_*` from `/proc/self` (CPU time, resident
//! and virtual memory, open and maximum file descriptors, start time). Read at scrape time; a
//! value that cannot be read is left out, as the collector does.

use super::Exposition;

/// The kernel's clock ticks per second (`USER_HZ`), which `/proc/self/stat` counts in.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

pub(super) fn families(x: &mut Exposition) {
    if let Some(stat) = stat() {
        x.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND,
        );
        x.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            stat.rss_pages as f64 * PAGE_SIZE,
        );
        x.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            stat.vsize as f64,
        );
        if let Some(boot) = boot_time() {
            x.gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                boot + stat.start_ticks as f64 / TICKS_PER_SECOND,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        x.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        x.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            max,
        );
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// `/proc/self/stat` (proc(5)): the fields after the command name, which may hold spaces.
fn stat() -> Option<Stat> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 3.. of proc(5), so field n is f[n - 3].
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime: n(14)?,
        stime: n(15)?,
        start_ticks: n(22)?,
        vsize: n(23)?,
        rss_pages: n(24)?,
    })
}

fn boot_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn max_fds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
