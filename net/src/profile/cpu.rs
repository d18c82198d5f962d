//! CPU profiles: while a [`Session`] runs, a process CPU-time timer (`ITIMER_PROF`, 100 Hz, as
//! Go's default rate) sends SIGPROF to whichever thread is using the CPU, and the handler adds
//! that thread's stack to a fixed table. Idle threads (a core parked in io_uring) cost nothing
//! and show nothing, as in Go's profiles.
//!
//! One session at a time (Go's rule: a second gets "cpu profiling already in use"). The handler
//! stays installed once set, doing nothing between sessions, so a SIGPROF still in flight when a
//! session ends never meets the signal's default action (terminating the process). It is
//! installed with SA_RESTART; glommio's rings treat EINTR from `io_uring_enter` as a wake-up.
//!
//! Invariant: the table is freed only after the timer is off, the table pointer is cleared and
//! no handler is running (`IN_HANDLER` counts them, raised before the pointer is read).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::stack::{self, AtomicStack, Stack};

/// Samples per second of CPU time.
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
static INSTALL: Once = Once::new();

/// What a session recorded: (thread id, stack, samples).
pub struct Recorded {
    pub samples: Vec<(i32, Stack, u64)>,
    pub dropped: u64,
    pub duration: Duration,
}

/// A running CPU profile; stopping it ([`Session::finish`] or drop) turns the timer off.
pub struct Session {
    table: Option<Box<Table>>,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cpu profiling already in use")]
    Busy,
    #[error("{0}")]
    Os(std::io::Error),
}

impl Session {
    pub fn start() -> Result<Session, StartError> {
        if BUSY.swap(true, Ordering::AcqRel) {
            return Err(StartError::Busy);
        }
        let mut installed = Ok(());
        INSTALL.call_once(|| installed = install_handler());
        if let Err(e) = installed {
            BUSY.store(false, Ordering::Release);
            return Err(StartError::Os(e));
        }
        let table = Box::new(Table {
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
        });
        let mut session = Session {
            table: Some(table),
            started: Instant::now(),
        };
        let ptr = session.table.as_deref_mut().expect("just set") as *mut Table;
        TABLE.store(ptr, Ordering::SeqCst);
        if let Err(e) = set_timer(Duration::from_nanos(1_000_000_000 / HZ as u64)) {
            drop(session);
            return Err(StartError::Os(e));
        }
        Ok(session)
    }

    /// Stops the profile and returns what it recorded.
    pub fn finish(mut self) -> Recorded {
        self.stop();
        let duration = self.started.elapsed();
        let table = self
            .table
            .take()
            .expect("a session holds its table until finished");
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

    /// Timer off, table detached, running handlers drained. Idempotent.
    fn stop(&mut self) {
        if self.table.is_none() || TABLE.load(Ordering::SeqCst).is_null() {
            return;
        }
        let _ = set_timer(Duration::ZERO);
        TABLE.store(std::ptr::null_mut(), Ordering::SeqCst);
        // A handler that read the pointer before it was cleared had already raised the count;
        // it finishes in microseconds. Bounded: if one never finishes, the table is leaked
        // rather than freed under it.
        for _ in 0..10_000_000 {
            if IN_HANDLER.load(Ordering::SeqCst) == 0 {
                return;
            }
            std::thread::yield_now();
        }
        std::mem::forget(self.table.take());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
        BUSY.store(false, Ordering::Release);
    }
}

fn set_timer(interval: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: interval.as_secs() as libc::time_t,
        tv_usec: interval.subsec_micros() as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: plain syscall with a valid itimerval; no old value asked for.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn install_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C"` function of the
    // SA_SIGINFO signature and only does async-signal-safe work (atomics, the stack walk).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
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
        let slot = &table.slots[(hash as usize).wrapping_add(probe) % SLOTS];
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
