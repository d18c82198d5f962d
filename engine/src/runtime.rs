//! The thread-per-core runtime: the only module that names the executor's API (glommio 0.9), so
//! that the rest of retcd could move to another executor by rewriting this file alone.
//!
//! What it owns:
//!
//! - [`probe_io_uring`]: the startup check that io_uring is usable. glommio panics with a
//!   misleading "kernel too old" message when io_uring is blocked (the `kernel.io_uring_disabled`
//!   sysctl, a container's seccomp profile) or when the locked-memory limit is too small; the
//!   probe turns those into a [`RuntimeError`] that names the cause and the fix.
//! - [`start_cores`] / [`Cores`]: one executor per core, each on its own thread, pinned to a CPU
//!   when asked, each running the caller's per-core future. **Core 0 is the sequencer core**: the
//!   one that drives Raft and the WAL; the other cores serve reads and forward writes to it. This
//!   module treats every core alike; the role is the caller's convention.
//! - [`on_own_thread`]: long blocking work on a thread of its own, off core 0's CPU.
//! - [`spawn_local`], [`sleep`], [`yield_now`]: the task and timer primitives that per-core code
//!   uses (only inside an executor started here).
//! - [`block_on_local`]: runs one future to completion on a fresh executor on the calling thread
//!   (tests and tools).
//!
//! Memory: every executor preallocates `io_memory` bytes that it registers with io_uring, and
//! glommio refuses to start when `RLIMIT_MEMLOCK` is below 512 KiB. Its default (10 MiB) exceeds
//! the common 8 MiB limit, so callers always pass `io_memory` explicitly;
//! [`DEFAULT_IO_MEMORY`] fits many cores into 8 MiB.

use std::any::Any;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

/// The `io_memory` that [`block_on_local`] uses and that callers without a better figure pass to
/// [`start_cores`]: 512 KiB per executor.
pub const DEFAULT_IO_MEMORY: usize = 512 * 1024;

/// glommio's own floor for `RLIMIT_MEMLOCK` (it refuses to start below it).
const MIN_MEMLOCK: u64 = 512 * 1024;

/// The runtime's errors: io_uring unavailable, an executor or its thread that could not start, or
/// a core that panicked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// io_uring cannot be used by this process.
    #[error(
        "io_uring is unavailable ({source}): {cause}; retcd's executors need io_uring. Fix: {fix}"
    )]
    IoUringUnavailable {
        /// The error of the probing system call.
        source: io::Error,
        /// The most likely cause, as far as the probe could tell.
        cause: String,
        /// What to change.
        fix: &'static str,
    },
    /// The locked-memory limit is below what the executors need.
    #[error(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {limit} bytes, below the {needed} bytes \
         io_uring executors need; raise it (`ulimit -l`, systemd LimitMEMLOCK=, docker \
         --ulimit memlock=)"
    )]
    MemlockTooLow {
        /// The current soft limit, in bytes.
        limit: u64,
        /// The minimum, in bytes.
        needed: u64,
    },
    /// `start_cores` was asked for zero cores.
    #[error("at least one core is needed")]
    NoCores,
    /// The operating system refused to start a core's thread.
    #[error("could not start the thread of core {core}: {source}")]
    Thread {
        /// The core's index.
        core: usize,
        /// The error of `std::thread::Builder::spawn`.
        source: io::Error,
    },
    /// glommio could not build a core's executor.
    #[error("could not start the executor of core {core} (io_memory {io_memory} bytes): {message}")]
    Executor {
        /// The core's index.
        core: usize,
        /// The `io_memory` it was asked for.
        io_memory: usize,
        /// glommio's error, as text (its error type is not `Send`).
        message: String,
    },
    /// A core's thread panicked.
    #[error("core {core} panicked: {message}")]
    Panicked {
        /// The core's index.
        core: usize,
        /// The panic's message, when it was a string.
        message: String,
    },
}

/// Checks that io_uring works in this process, before any executor is built (glommio would
/// panic with a misleading message instead).
///
/// Creates a 2-entry ring, registers an opcode probe on it (glommio needs `IORING_REGISTER_PROBE`,
/// Linux >= 5.6; it uses opcodes from 5.8), and checks `RLIMIT_MEMLOCK` against glommio's floor.
pub fn probe_io_uring() -> Result<(), RuntimeError> {
    let ring = io_uring::IoUring::new(2).map_err(|source| {
        let (cause, fix) = io_uring_failure_cause(&source);
        RuntimeError::IoUringUnavailable { source, cause, fix }
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|source| RuntimeError::IoUringUnavailable {
            source,
            cause: "the kernel cannot report its io_uring opcodes (IORING_REGISTER_PROBE)".into(),
            fix: "run on Linux 5.8 or newer",
        })?;
    let limit = memlock_limit();
    if limit < MIN_MEMLOCK {
        return Err(RuntimeError::MemlockTooLow {
            limit,
            needed: MIN_MEMLOCK,
        });
    }
    Ok(())
}

/// Names the likely cause of a failed `io_uring_setup` and its fix.
fn io_uring_failure_cause(err: &io::Error) -> (String, &'static str) {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match err.raw_os_error() {
        Some(libc::ENOSYS) => (
            "the io_uring_setup system call is missing: a kernel built without io_uring \
             (CONFIG_IO_URING=n) or older than 5.1, or a seccomp filter that answers ENOSYS"
                .into(),
            "run on Linux 5.8 or newer with io_uring enabled; in a container, allow \
             io_uring_setup, io_uring_enter and io_uring_register in the seccomp profile \
             (deploy/seccomp/add-io-uring.sh in retcd's sources makes one from your runtime's \
             default profile; docker --security-opt seccomp=<profile>, or Kubernetes' \
             seccompProfile type Localhost as in deploy/kubernetes/retcd.yaml)",
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => match sysctl {
            Some(v @ 1..) => (
                format!("the sysctl kernel.io_uring_disabled is {v}"),
                "`sysctl -w kernel.io_uring_disabled=0` (or, with value 1, add this user to the \
                 group named by kernel.io_uring_group)",
            ),
            _ => (
                "the process is not allowed to create io_uring instances, most likely a \
                 seccomp filter (container runtimes block io_uring by default)"
                    .into(),
                "allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp \
                 profile (deploy/seccomp/add-io-uring.sh in retcd's sources makes one from your \
                 runtime's default profile; docker --security-opt seccomp=<profile>, or \
                 Kubernetes' seccompProfile type Localhost as in deploy/kubernetes/retcd.yaml), \
                 and check kernel.io_uring_disabled",
            ),
        },
        Some(libc::ENOMEM) => (
            "not enough lockable memory for the ring".into(),
            "raise RLIMIT_MEMLOCK (`ulimit -l`, systemd LimitMEMLOCK=, docker --ulimit memlock=)",
        ),
        _ => (
            "unexpected error".into(),
            "check kernel.io_uring_disabled, the seccomp profile and RLIMIT_MEMLOCK",
        ),
    }
}

/// The soft `RLIMIT_MEMLOCK`, in bytes (`u64::MAX` when unlimited or unknown).
fn memlock_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// The CPUs for threads that must not take the sequencer core's CPU ([`on_own_thread`]): set
/// by [`start_cores`] when it pins (the process's CPUs but core 0's, when others remain); empty:
/// no binding (a thread then inherits its creator's CPUs, which are the process's when unpinned).
static BACKGROUND_CPUS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// How much [`on_own_thread`]'s threads raise their nice value: the cores' threads go first on
/// a shared CPU, and the background thread still gets about a tenth of it.
const BACKGROUND_NICE: libc::c_int = 10;

/// The calling thread's nice value.
fn nice() -> libc::c_int {
    // SAFETY: getpriority reads its integer arguments only; gettid cannot fail. (-1 is also a
    // valid nice value: an error reads as that, which only makes the next step a no-op or off
    // by one.)
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// Raises the calling thread's nice value by [`BACKGROUND_NICE`] (at most to 19); false when
/// the kernel refused.
fn lower_priority() -> bool {
    let target = (nice() + BACKGROUND_NICE).min(19);
    // SAFETY: setpriority reads its integer arguments only; gettid cannot fail.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, target) == 0 }
}

/// Binds the calling thread to `cpus`; false when the kernel refused.
fn bind_to(cpus: &[usize]) -> bool {
    // SAFETY: cpu_set_t is plain data, filled here with CPU_SET and read by sched_setaffinity
    // for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The CPUs this process may run on (its affinity mask), in ascending order; empty if unknown.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The running executors started by [`start_cores`]. Dropping it detaches the threads; call
/// [`Cores::join`] to wait for them.
#[derive(Debug)]
pub struct Cores {
    threads: Vec<JoinHandle<()>>,
    cpus: Vec<Option<usize>>,
}

impl Cores {
    /// The number of cores.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: `start_cores` refuses zero cores.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The CPU each core is pinned to, by core index (`None`: not pinned).
    pub fn cpus(&self) -> &[Option<usize>] {
        &self.cpus
    }

    /// Waits until every core's future has returned. Fails with the first core (by index) that
    /// panicked, after waiting for all of them.
    pub fn join(self) -> Result<(), RuntimeError> {
        let mut first = None;
        for (core, thread) in self.threads.into_iter().enumerate() {
            if let Err(payload) = thread.join() {
                let message = panic_message(payload.as_ref());
                first.get_or_insert(RuntimeError::Panicked { core, message });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The text of a panic payload, when it is a string.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

/// Builds one core's executor on the calling thread: pinned to `cpu` if given, unpinned if that
/// fails. Returns the executor and the CPU it is pinned to.
fn make_executor(
    core: usize,
    io_memory: usize,
    cpu: Option<usize>,
) -> Result<(LocalExecutor, Option<usize>), String> {
    let name = format!("retcd-core-{core}");
    if let Some(cpu) = cpu {
        let pinned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&name)
            .io_memory(io_memory)
            .make();
        match pinned {
            Ok(ex) => return Ok((ex, Some(cpu))),
            Err(e) => {
                tracing::warn!(core, cpu, error = %e, "cannot pin core to its CPU, running it unpinned")
            }
        }
    }
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(&name)
        .io_memory(io_memory)
        .make()
        .map(|ex| (ex, None))
        .map_err(|e| e.to_string())
}

/// Starts `n` executors, each on its own thread named `retcd-core-<i>`, each running `f(i)`
/// until it returns. Core 0 is the sequencer core (see the module documentation).
///
/// With `pin`, core `i` is pinned to the `i`-th CPU of the process's affinity mask (CPU `i` when
/// the process may run anywhere); a core whose pinning fails, or that has no CPU left, runs
/// unpinned (logged). `io_memory` is the per-executor io_uring buffer, in bytes
/// ([`DEFAULT_IO_MEMORY`] unless measured otherwise).
///
/// Probes io_uring first ([`probe_io_uring`]). Every executor is built before any `f(i)` runs:
/// if one cannot be built, none runs and the error is returned.
pub fn start_cores<F, Fut>(
    n: usize,
    io_memory: usize,
    pin: bool,
    f: F,
) -> Result<Cores, RuntimeError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if n == 0 {
        return Err(RuntimeError::NoCores);
    }
    probe_io_uring()?;
    let cpus = if pin { allowed_cpus() } else { Vec::new() };
    let f = Arc::new(f);
    let (built_tx, built_rx) = mpsc::channel::<(usize, Result<Option<usize>, String>)>();
    let mut threads = Vec::with_capacity(n);
    let mut go = Vec::with_capacity(n);
    let mut failure = None;
    for core in 0..n {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let cpu = cpus.get(core).copied();
        let f = Arc::clone(&f);
        let built_tx = built_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("retcd-core-{core}"))
            .spawn(move || {
                let ex = match make_executor(core, io_memory, cpu) {
                    Ok((ex, pinned)) => {
                        let _ = built_tx.send((core, Ok(pinned)));
                        ex
                    }
                    Err(e) => {
                        let _ = built_tx.send((core, Err(e)));
                        return;
                    }
                };
                drop(built_tx);
                // Runs only when every core's executor was built.
                if go_rx.recv().is_ok() {
                    ex.run(f(core));
                }
            });
        match spawned {
            Ok(t) => {
                threads.push(t);
                go.push(go_tx);
            }
            Err(source) => {
                failure = Some(RuntimeError::Thread { core, source });
                break;
            }
        }
    }
    drop(built_tx);
    // Every thread reports once, or dies (a panic while building) and drops its sender: the loop
    // ends when all have done either.
    let mut pinned = vec![None; threads.len()];
    let mut reported = vec![false; threads.len()];
    while let Ok((core, built)) = built_rx.recv() {
        reported[core] = true;
        match built {
            Ok(cpu) => pinned[core] = cpu,
            Err(message) => {
                failure.get_or_insert(RuntimeError::Executor {
                    core,
                    io_memory,
                    message,
                });
            }
        }
    }
    if failure.is_none() && reported.iter().all(|&r| r) {
        // Before any core runs: its first background thread must find the set.
        let mut spare = Vec::new();
        if let Some(Some(cpu0)) = pinned.first() {
            spare = cpus.clone();
            if spare.len() > 1 {
                spare.retain(|c| c != cpu0);
            }
        }
        *BACKGROUND_CPUS.lock().unwrap_or_else(|e| e.into_inner()) = spare;
        for tx in &go {
            // A core whose thread is gone shows up in `join`.
            let _ = tx.send(());
        }
        return Ok(Cores {
            threads,
            cpus: pinned,
        });
    }
    drop(go);
    for (core, t) in threads.into_iter().enumerate() {
        if let Err(payload) = t.join() {
            let message = panic_message(payload.as_ref());
            failure.get_or_insert(RuntimeError::Panicked { core, message });
        }
    }
    Err(failure.unwrap_or(RuntimeError::Panicked {
        core: reported.iter().position(|&r| !r).unwrap_or(0),
        message: "the core's thread ended while its executor was being built".to_owned(),
    }))
}

/// Spawns `f` as a detached task on the current core's executor; its output is dropped.
///
/// # Panics
///
/// Outside an executor started by this module.
pub fn spawn_local<F: Future + 'static>(f: F) {
    glommio::spawn_local(async move {
        let _ = f.await;
    })
    .detach();
}

/// Runs blocking `f` on the current executor's blocking thread pool (file syncs that must not
/// stall the core) and waits for its result.
///
/// # Panics
///
/// Outside an executor started by this module.
pub async fn spawn_blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Runs `f` on a new thread named `name` and waits for its result without blocking the core: for
/// long work (a walk of the whole state for a hash, a checkpoint's page writes) that must hold
/// neither a core nor glommio's blocking pool. The thread runs on the CPUs other than core 0's
/// when the cores are pinned and there are others (a thread would otherwise inherit its
/// creator's CPU: the blocking pool of a pinned core runs on that core's CPU), at a lower
/// priority ([`BACKGROUND_NICE`]). `Err` says why no result came.
pub async fn on_own_thread<T, F>(name: &str, f: F) -> Result<T, String>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = flume::bounded(1);
    let cpus = BACKGROUND_CPUS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if !cpus.is_empty() && !bind_to(&cpus) {
                tracing::debug!("cannot bind a background thread to its CPUs");
            }
            // Background work yields to the cores when they share a CPU with it (a process
            // given one CPU): the kernel's nice, for this thread alone (a fresh one each time),
            // raised from what it inherited (a process started under `nice` keeps its order).
            if !lower_priority() {
                tracing::debug!("cannot lower a background thread's priority");
            }
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a {name} thread: {e}"))?;
    rx.recv_async()
        .await
        .map_err(|_| format!("the {name} thread ended without an answer"))
}

/// Waits for `d` on the current core's timer.
///
/// # Panics
///
/// Outside an executor started by this module.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Lets the tasks already ready on this core run before the caller goes on: a long request
/// calls it between steps so that the requests queued behind it do not wait for all of it.
/// (New I/O is only seen once the ready tasks are done: glommio polls it between runs, or when
/// its preemption timer fires, 100 ms by default. A 1 ms timer was tried: put-1000 then stalled
/// for ~60 s in some runs, findings §20.)
pub async fn yield_now() {
    glommio::executor().yield_now().await;
}

/// Runs `f` to completion on a fresh, unpinned executor on the calling thread (with
/// [`DEFAULT_IO_MEMORY`]), for tests and tools.
///
/// # Panics
///
/// If io_uring is unavailable or the executor cannot be built (the message says why), or when
/// called from inside an executor.
pub fn block_on_local<F: Future>(f: F) -> F::Output {
    if let Err(e) = probe_io_uring() {
        panic!("{e}");
    }
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(DEFAULT_IO_MEMORY)
        .make()
        .unwrap_or_else(|e| panic!("could not start an executor: {e}"));
    ex.run(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn failure_causes_name_the_fix() {
        let eperm = RuntimeError::IoUringUnavailable {
            source: io::Error::from_raw_os_error(libc::EPERM),
            cause: io_uring_failure_cause(&io::Error::from_raw_os_error(libc::EPERM)).0,
            fix: io_uring_failure_cause(&io::Error::from_raw_os_error(libc::EPERM)).1,
        }
        .to_string();
        assert!(eperm.contains("io_uring_disabled"), "{eperm}");
        let (cause, fix) = io_uring_failure_cause(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(
            cause.contains("seccomp") && fix.contains("seccomp"),
            "{cause} / {fix}"
        );
        let (_, fix) = io_uring_failure_cause(&io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(fix.contains("RLIMIT_MEMLOCK"), "{fix}");
    }

    #[test]
    fn cores_run_their_future_with_local_tasks_and_timers() {
        static SUM: AtomicUsize = AtomicUsize::new(0);
        let cores = start_cores(2, DEFAULT_IO_MEMORY, true, |core| async move {
            let done = std::rc::Rc::new(std::cell::Cell::new(0));
            let set = std::rc::Rc::clone(&done);
            spawn_local(async move {
                sleep(Duration::from_millis(1)).await;
                set.set(core + 1);
            });
            // Bounded: the task needs one timer tick.
            for _ in 0..10_000 {
                if done.get() != 0 {
                    break;
                }
                sleep(Duration::from_millis(1)).await;
            }
            SUM.fetch_add(done.get(), Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(cores.len(), 2);
        assert_eq!(cores.cpus().len(), 2);
        cores.join().unwrap();
        assert_eq!(SUM.load(Ordering::SeqCst), 1 + 2);
    }

    /// Long background work ([`on_own_thread`]) runs at a lower priority and, with the cores
    /// pinned, off core 0's CPU when the process has another.
    #[test]
    fn background_threads_stay_off_the_sequencer_cores_cpu() {
        let process = allowed_cpus();
        let expected_nice = (nice() + BACKGROUND_NICE).min(19);
        let (tx, rx) = mpsc::channel();
        let cores = start_cores(1, DEFAULT_IO_MEMORY, true, move |_| {
            let tx = tx.clone();
            async move {
                let seen = on_own_thread("test-background", || (allowed_cpus(), nice())).await;
                tx.send(seen).unwrap();
            }
        })
        .unwrap();
        let core0 = cores.cpus()[0];
        cores.join().unwrap();
        let (cpus, nice) = rx.recv().unwrap().unwrap();
        assert_eq!(nice, expected_nice);
        if let Some(cpu0) = core0
            && process.len() > 1
        {
            assert!(!cpus.contains(&cpu0), "{cpus:?} holds core 0's CPU {cpu0}");
            assert!(!cpus.is_empty());
        }
    }

    #[test]
    fn join_reports_a_panicking_core() {
        let cores = start_cores(2, DEFAULT_IO_MEMORY, false, |core| async move {
            assert_ne!(core, 1, "core one fails");
        })
        .unwrap();
        match cores.join() {
            Err(RuntimeError::Panicked { core: 1, message }) => {
                assert!(message.contains("core one fails"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn zero_cores_is_an_error() {
        assert!(matches!(
            start_cores(0, DEFAULT_IO_MEMORY, false, |_| async {}),
            Err(RuntimeError::NoCores)
        ));
    }

    #[test]
    fn block_on_local_runs_a_future() {
        assert_eq!(block_on_local(async { 6 * 7 }), 42);
    }
}
