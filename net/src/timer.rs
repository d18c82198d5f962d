//! The clock hyper's own timeouts run on: HTTP/2 keep-alive pings (`--grpc-keepalive-interval`,
//! `--grpc-keepalive-timeout`) and the HTTP/1.1 header read timeout (a client that trickles its
//! headers is dropped). hyper's sleeps must be `Send + Sync`, which glommio's per-executor
//! timers are not, so one thread keeps a heap of deadlines and wakes the sleeps that are due.
//!
//! Bounds: a sleep registers once per waker (a re-poll with the same waker adds nothing), and an
//! entry leaves the heap at its deadline, so the heap holds at most one entry per live sleep and
//! waker plus the entries of dropped sleeps until their deadlines. The thread only pops and wakes.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Deadlines {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Clock {
    deadlines: Mutex<Deadlines>,
    changed: Condvar,
}

static CLOCK: OnceLock<&'static Clock> = OnceLock::new();

fn clock() -> &'static Clock {
    CLOCK.get_or_init(|| {
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            deadlines: Mutex::new(Deadlines::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("retcd-timer".to_string())
            .spawn(move || clock.run())
            .expect("cannot start the timer thread");
        clock
    })
}

impl Clock {
    fn register(&self, at: Instant, waker: Waker) {
        let mut d = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        d.seq += 1;
        let seq = d.seq;
        let earliest = d.heap.peek().is_none_or(|Reverse(e)| at < e.at);
        d.heap.push(Reverse(Entry { at, seq, waker }));
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut due = Vec::new();
        let mut d = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            while d.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                let Reverse(e) = d.heap.pop().expect("peeked");
                due.push(e.waker);
            }
            if !due.is_empty() {
                drop(d);
                for w in due.drain(..) {
                    w.wake();
                }
                d = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            d = match d.heap.peek() {
                Some(Reverse(e)) => {
                    let wait = e.at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(d, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(d).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// A future that resolves at a deadline.
#[derive(Debug)]
pub struct Sleep {
    at: Instant,
    /// The waker registered with the clock, if any.
    registered: Option<Waker>,
}

impl Sleep {
    pub fn until(at: Instant) -> Sleep {
        Sleep {
            at,
            registered: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.at {
            return Poll::Ready(());
        }
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            clock().register(this.at, cx.waker().clone());
            this.registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for Sleep {}

/// hyper's timer on [`Sleep`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::until(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_ends_at_its_deadline_not_before() {
        for ms in [0u64, 5, 20] {
            let at = Instant::now() + Duration::from_millis(ms);
            futures_lite::future::block_on(Sleep::until(at));
            assert!(Instant::now() >= at);
        }
    }
}
