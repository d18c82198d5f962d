//! CPU profiles: while a [`Session`] runs, every thread of the process has a CPU-time timer of
//! its own (`timer_create` on the thread's CPU clock, 100 Hz, Go's default rate and, since Go
//! 1.18, Go's way: a process-wide `ITIMER_PROF` delivers about one signal per kernel tick, and
//! undercounts once more than two or three cores are busy). Its SIGPROF goes to that thread,
//! whose handler adds its stack to a fixed table. Idle threads (a core parked in io_uring) cost
//! nothing and show nothing. Threads started during a session are not in it (the cores, the
//! sequencer and the runtime's threads live from start-up).
//!
//! One session at a time (Go's rule: a second gets "cpu profiling already in use"). The handler
//! stays installed once set, doing nothing between sessions, so a SIGPROF still in flight when a
//! session ends never meets the signal's default action (terminating the process). It is
//! installed with SA_RESTART; glommio's rings treat EINTR from `io_uring_enter` as a wake-up.
//!
//! Invariant: the table is freed only after the timers are deleted, the table pointer is
//! cleared and no handler is running (`IN_HANDLER` counts them, raised before the pointer is
//! read); if a handler never finishes, the table is leaked rather than freed under it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::stack::{self, AtomicStack, Stack};

/// Samples per second of CPU time, per thread.
pub const HZ: i64 = 100;
/// Distinct (thread, stack) pairs per session; samples beyond are counted as dropped.
const SLOTS: usize = 1 << 13;
const PROBES: usize = 32;

struct Slot {
    /// 0: free; else the key's hash, claimed by one handler.
    hash: AtomicU64,
    /// Set once `tid` and `stack` are written; they do not change after.
    ready: AtomicBool,
    tid: AtomicI32,
    stack: AtomicStack,
    count: AtomicU64,
}

struct Table {
    slots: Box<[Slot]>,
    dropped: AtomicU64,
}

static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
static BUSY: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

/// What a session recorded: (thread id, stack, samples).
pub struct Recorded {
    pub samples: Vec<(i32, Stack, u64)>,
    pub dropped: u64,
    pub duration: Duration,
}

/// A running CPU profile; stopping it ([`Session::finish`] or drop) deletes its timers.
pub struct Session {
    /// From `Box::into_raw`: handlers hold copies of this pointer, so the box is not kept as a
    /// `Box` (moving a Box asserts it is unique) until the session frees it.
    table: *mut Table,
    timers: Vec<libc::timer_t>,
    started: Instant,
    /// Whether every handler has finished with the table (it may then be freed).
    drained: bool,
}

// SAFETY: the table is owned by the session (handlers only use it until `stop` drains them) and
// timer ids are process-wide; nothing in a session is tied to the thread that started it.
unsafe impl Send for Session {}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cpu profiling already in use")]
    Busy,
    #[error("stack walks from a signal handler need glibc 2.35 or later here")]
    Unsupported,
    #[error("{0}")]
    Os(String),
}

impl Session {
    pub fn start() -> Result<Session, StartError> {
        if BUSY.swap(true, Ordering::AcqRel) {
            return Err(StartError::Busy);
        }
        let refuse = |e| {
            BUSY.store(false, Ordering::Release);
            Err(e)
        };
        if let Err(e) = INSTALLED.get_or_init(install_handler) {
            return refuse(StartError::Os(e.clone()));
        }
        if !stack::unwinding_is_signal_safe() {
            return refuse(StartError::Unsupported);
        }
        let table = Box::into_raw(Box::new(Table {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    hash: AtomicU64::new(0),
                    ready: AtomicBool::new(false),
                    tid: AtomicI32::new(0),
                    stack: AtomicStack::default(),
                    count: AtomicU64::new(0),
                })
                .collect(),
            dropped: AtomicU64::new(0),
        }));
        TABLE.store(table, Ordering::SeqCst);
        let mut session = Session {
            table,
            timers: Vec::new(),
            started: Instant::now(),
            drained: false,
        };
        let interval = Duration::from_nanos(1_000_000_000 / HZ as u64);
        let mut last_error = None;
        for tid in threads() {
            match thread_timer(tid, interval) {
                Ok(t) => session.timers.push(t),
                // A thread that ended since the listing has no clock any more.
                Err(e) => last_error = Some(e),
            }
        }
        if session.timers.is_empty() {
            let e = last_error.map_or("no threads to profile".into(), |e| e.to_string());
            return Err(StartError::Os(e));
        }
        Ok(session)
    }

    /// Stops the profile and returns what it recorded.
    pub fn finish(mut self) -> Recorded {
        self.stop();
        let duration = self.started.elapsed();
        // SAFETY: the table lives until the session frees it (in drop, below), or forever.
        let table = unsafe { &*self.table };
        let samples = table
            .slots
            .iter()
            .filter(|s| s.ready.load(Ordering::Acquire))
            .map(|s| {
                (
                    s.tid.load(Ordering::Relaxed),
                    s.stack.load(),
                    s.count.load(Ordering::Relaxed),
                )
            })
            .collect();
        Recorded {
            samples,
            dropped: table.dropped.load(Ordering::Relaxed),
            duration,
        }
    }

    /// Timers deleted, table detached, running handlers drained. Idempotent.
    fn stop(&mut self) {
        for t in self.timers.drain(..) {
            // SAFETY: a timer this session created and has not deleted.
            unsafe { libc::timer_delete(t) };
        }
        if TABLE.load(Ordering::SeqCst) == self.table {
            TABLE.store(std::ptr::null_mut(), Ordering::SeqCst);
        }
        // A handler that read the pointer before it was cleared had already raised the count;
        // it finishes in microseconds. Bounded: one that never does keeps the table alive.
        for _ in 0..10_000_000 {
            if IN_HANDLER.load(Ordering::SeqCst) == 0 {
                self.drained = true;
                return;
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
        if self.drained {
            // SAFETY: from Box::into_raw in `start`; no handler can reach it any more.
            drop(unsafe { Box::from_raw(self.table) });
        }
        BUSY.store(false, Ordering::Release);
    }
}

/// The process's threads (`/proc/self/task`).
fn threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A timer on thread `tid`'s CPU clock that sends it SIGPROF every `interval` of its CPU time.
fn thread_timer(tid: i32, interval: Duration) -> std::io::Result<libc::timer_t> {
    // The kernel's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): a thread's CPU clock by its id.
    let clock = ((!(tid as u32)) << 3) as libc::clockid_t | 6;
    // SAFETY: a zeroed sigevent is valid; the fields set are those SIGEV_THREAD_ID reads.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_THREAD_ID;
    ev.sigev_signo = libc::SIGPROF;
    ev.sigev_notify_thread_id = tid;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid pointers to a sigevent and to where the timer id goes.
    if unsafe { libc::timer_create(clock, &mut ev, &mut timer) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ts = libc::timespec {
        tv_sec: interval.as_secs() as libc::time_t,
        tv_nsec: interval.subsec_nanos() as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: the timer was just created; no old value asked for.
    if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::timer_delete(timer) };
        return Err(e);
    }
    Ok(timer)
}

fn install_handler() -> Result<(), String> {
    // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C"` function of the
    // SA_SIGINFO signature and only does async-signal-safe work (atomics, the stack walk).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

extern "C" fn on_sigprof(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: errno is thread-local; the handler restores what it may change.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    let table = TABLE.load(Ordering::SeqCst);
    if !table.is_null() {
        // SAFETY: the session frees the table only after clearing TABLE and seeing IN_HANDLER
        // at 0, and this handler raised IN_HANDLER before reading TABLE.
        record(unsafe { &*table }, interrupted_pc(context));
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn record(table: &Table, pc: Option<usize>) {
    let stack = stack::record(pc);
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let hash = stack.hash(tid as u64);
    for probe in 0..PROBES {
        // Not the low bit: the hash sets it (0 marks a free slot).
        let slot = &table.slots[((hash >> 1) as usize).wrapping_add(probe) % SLOTS];
        let mut seen = slot.hash.load(Ordering::Acquire);
        if seen == 0 {
            match slot
                .hash
                .compare_exchange(0, hash, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    slot.tid.store(tid, Ordering::Relaxed);
                    slot.stack.store(&stack);
                    slot.count.store(1, Ordering::Relaxed);
                    slot.ready.store(true, Ordering::Release);
                    return;
                }
                Err(now) => seen = now,
            }
        }
        if seen == hash
            && slot.ready.load(Ordering::Acquire)
            && slot.tid.load(Ordering::Relaxed) == tid
            && slot.stack.equals(&stack)
        {
            slot.count.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    table.dropped.fetch_add(1, Ordering::Relaxed);
}

/// The address of the instruction the signal interrupted, from the handler's context.
fn interrupted_pc(context: *mut libc::c_void) -> Option<usize> {
    if context.is_null() {
        return None;
    }
    let uc = context as *const libc::ucontext_t;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
        Some(unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] } as usize)
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above.
        Some(unsafe { (*uc).uc_mcontext.pc } as usize)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = uc;
        None
    }
}
