//! Stopping on SIGTERM and SIGINT as etcd does (pkg/osutil/interrupt_unix.go and
//! `EtcdServer.Stop`): log "received signal; shutting down", tell systemd `STOPPING=1`, hand
//! leadership to another voter when this member leads (so the cluster does not wait out an
//! election timeout), checkpoint the page store (so the db file alone holds the state, as
//! etcd's backend commit on close leaves its db for `etcdutl`), then end by the same signal
//! with its default action, so the exit status says what stopped the process (systemd counts
//! SIGTERM as a clean stop).
//!
//! Nothing else needs flushing: a write is acknowledged only once it is durable, so what a stop
//! cuts short was never acknowledged (the WAL's torn-tail repair drops it at the next start).
//!
//! The signals are blocked in every thread (they inherit the mask of the thread that starts
//! them, so [`watch_signals`] runs first) and one thread takes them with `sigwait`. Until the
//! member serves ([`Signals::take_over`]), a signal ends the process at once, as before a
//! handler existed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use retcd_raft::{NodeStatus, Proposer};
use tracing::{info, warn};

/// The signals that stop the member.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The stop signals, once they are this process's to handle.
pub struct Signals {
    rx: flume::Receiver<libc::c_int>,
    handled: Arc<AtomicBool>,
}

impl Signals {
    /// From now on the first signal is delivered here instead of ending the process (a second
    /// one still does).
    pub fn take_over(&self) -> &flume::Receiver<libc::c_int> {
        self.handled.store(true, Ordering::Release);
        &self.rx
    }
}

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set it is given; sigaddset adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the stop signals in the calling thread (and so in every thread it starts later) and
/// starts the thread that waits for them.
pub fn watch_signals() -> io::Result<Signals> {
    let set = stop_set();
    // SAFETY: `set` is an initialized signal set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let (tx, rx) = flume::bounded(1);
    let handled = Arc::new(AtomicBool::new(false));
    let taken = handled.clone();
    std::thread::Builder::new()
        .name("retcd-signals".to_string())
        .spawn(move || {
            let mut delivered = false;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialized and blocked in this thread; `sig` is written.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc != 0 {
                    continue;
                }
                if !taken.load(Ordering::Acquire) || delivered || tx.try_send(sig).is_err() {
                    // Not serving yet, or a second signal while stopping: end now.
                    die_by(sig);
                }
                delivered = true;
            }
        })?;
    Ok(Signals { rx, handled })
}

/// etcd's stop: log, notify, hand leadership over, then end by `signal`.
pub fn on_signal(
    signal: libc::c_int,
    proposer: &Proposer,
    status: &NodeStatus,
    timeout: Duration,
) -> ! {
    info!(
        signal = signal_name(signal),
        "received signal; shutting down"
    );
    if let Err(e) = crate::systemd::notify("STOPPING=1") {
        warn!(error = %e, "cannot notify systemd of the stop");
    }
    transfer_leadership(proposer, status, timeout);
    let p = proposer.clone();
    match wait_for(timeout, async move { p.checkpoint().await }) {
        Ok(()) => info!("checkpointed the page store"),
        Err(e) => warn!(error = %e, "cannot checkpoint the page store before stopping"),
    }
    die_by(signal)
}

/// etcd's `TransferLeadership` on stop: when this member leads and another voter exists, moves
/// the leadership to the connected voter with the most of the log (waiting at most `timeout`);
/// a failure is logged, the stop goes on.
fn transfer_leadership(proposer: &Proposer, status: &NodeStatus, timeout: Duration) {
    let me = status.member_id;
    if status.leader() != me {
        return;
    }
    if status.members().voters().all(|m| m.id == me) {
        info!("skipped leadership transfer for single voting member cluster");
        return;
    }
    let p = proposer.clone();
    let to = match wait_for(timeout, async move { p.stop_transferee().await }) {
        Ok(Some(to)) => to,
        Ok(None) => {
            warn!(
                error = "etcdserver: unhealthy cluster",
                "leadership transfer failed"
            );
            return;
        }
        Err(e) => {
            warn!(error = %e, "leadership transfer failed");
            return;
        }
    };
    info!(
        from = format!("{me:x}"),
        to = format!("{to:x}"),
        "leadership transfer starting"
    );
    let p = proposer.clone();
    match wait_for(timeout, async move { p.transfer_leader(to).await }) {
        Ok(()) => info!(to = format!("{to:x}"), "leadership transfer finished"),
        Err(e) => warn!(error = %e, "leadership transfer failed"),
    }
}

/// Runs a sequencer request to its answer, for at most `timeout`. (flume's futures need no
/// executor of their own: a plain thread waits on the reply.)
fn wait_for<T, F>(timeout: Duration, request: F) -> Result<T, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, retcd_raft::ProposeError>> + Send + 'static,
{
    let (done_tx, done_rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("retcd-stop".to_string())
        .spawn(move || {
            let _ = done_tx.send(futures_lite::future::block_on(request));
        })
        .map_err(|e| e.to_string())?;
    match done_rx.recv_timeout(timeout) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "terminated",
        libc::SIGINT => "interrupt",
        _ => "signal",
    }
}

/// Ends the process by `signal` with its default action (etcd re-raises it the same way).
fn die_by(signal: libc::c_int) -> ! {
    // SAFETY: restoring the default action and unblocking `signal` in this thread, then raising
    // it: the default action of the stop signals ends the process.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    // Not reached: the default action of the stop signals ends the process.
    std::process::exit(128 + signal)
}
