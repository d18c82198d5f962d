//! Admission of large Range responses: what bounds a member's memory when many clients list a lot
//! at once.
//!
//! A Range response is built whole (its key-values, then the encoded message) before its first
//! byte goes out, so ten clients that each listed 500k keys at once held ten responses at once
//! (2.7 GiB, perf/findings.md §14; etcd grows the same way, by more). Each core therefore admits
//! at most [`CORE_BUDGET`] bytes of Range responses at a time:
//!
//! - Before each step of its scan, a Range reserves what that step may collect: the key-values
//!   collected so far ([`RangeSteps::bytes`](retcd_engine::mvcc::RangeSteps::bytes)) plus
//!   [`RANGE_STEP_BYTES`] (a step collects no more than that, plus one key-value), once that
//!   passes [`FREE_BYTES`]: a point read or a page of a list never comes here. So a Range that
//!   waits holds only memory it was granted.
//! - It keeps the charge while its response is encoded and sent: the gRPC front
//!   ([`crate::grpc_limit`]) moves the charge into the response body ([`hold_until_sent`]), which
//!   hands the encoded message to HTTP/2 in [`CHUNK`]-byte pieces — HTTP/2 takes the next piece
//!   only once the client's flow-control window has room — and releases the charge after the
//!   last piece. A message of several pieces is handed on in copies, so that the encoded
//!   message is freed with the last copy made, not when HTTP/2 has sent the last piece: what
//!   HTTP/2 still holds after the release is at most a window and a piece. A failed or
//!   cancelled Range releases its charge at once.
//! - A Range that would take the core past its budget waits for charges to be released, unless
//!   it is the oldest charged Range of the core (the lowest ticket among holders), which always
//!   proceeds. So Ranges waiting on each other cannot deadlock, and a core holds at most its
//!   budget plus what the oldest response takes beyond it: one response larger than the budget is
//!   served alone.
//! - At most [`MAX_WAITING`] Ranges wait per core; another one that would wait is refused with
//!   etcd's "etcdserver: too many requests" (`ResourceExhausted`), its charge released. A
//!   waiting Range holds its read snapshot (which keeps the pages freed after it from reuse),
//!   so its waits are bounded too: a Range that has not been admitted by its deadline (the
//!   member's request timeout after it began: etcd's, 5 s and two election timeouts) gives up
//!   with etcd's "etcdserver: request timed out" (`Unavailable`, which clients retry),
//!   releasing its charge and its snapshot.
//!
//! Invariants (checked under the core's lock): `held` is the sum of the charges of the core's
//! live [`Charge`]s, and `holders` holds exactly those with a non-zero charge; `wakers` holds at
//! most one waker per waiting Range (by ticket: a release takes them all to wake, a waiter puts
//! its own back when it waits again), and none of a Range no longer waiting.
//!
//! A client that stops reading a large response keeps its charge until its stream ends (its
//! deadline passes, it resets the stream, or the connection closes): meanwhile the other large
//! Ranges of that core wait behind it, each until its own wait times out. Pages of a list
//! (under [`FREE_BYTES`]) never wait. The wait's clock is [`crate::timer`]'s thread (a glommio
//! timer is the core's own, and a waiter's deadline must fire while the core is busy elsewhere).
//!
//! So a core holds at most its budget, plus what the oldest Range takes beyond it, plus one
//! key-value per charged Range (a step's overshoot), plus what HTTP/2 buffers of the responses
//! already released.
//!
//! Not admitted here: the Ranges of a Txn (built whole as before). The JSON gateway's Ranges go
//! through the same gRPC front and are admitted like any other; the Lock and Election services'
//! internal reads drop their charge when they take the response apart.
//!
//! Who calls: the KV service's Range ([`crate::kv`]) and the gRPC front.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::{Buf, Bytes};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use retcd_engine::metrics::{Counter, Gauge};
pub use retcd_engine::mvcc::RANGE_STEP_BYTES;

use crate::errors::EtcdError;
use crate::timer::Sleep;

/// Bytes of Range responses one core holds at once (being built or sent) before younger ones
/// wait.
pub const CORE_BUDGET: usize = 64 << 20;

/// A Range whose key-values (with the next step's reserve) take at most this much is never
/// charged: a page of a list (500 keys of a few KiB) costs no lock, and such responses are
/// bounded, as every other request's, by the streams a core serves.
pub const FREE_BYTES: usize = 4 << 20;

/// Ranges waiting per core before the next one is refused.
pub const MAX_WAITING: usize = 1024;

/// The largest piece of an admitted response handed to HTTP/2 at a time: what HTTP/2 may still
/// buffer of a response whose charge was released. A page of a list goes as one piece, as
/// before (smaller pieces made HTTP/2 wait for the client's window between them).
pub const CHUNK: usize = 4 << 20;

/// Ranges that waited for the budget, ever.
pub static WAITS: Counter = Counter::new();
/// Ranges refused because [`MAX_WAITING`] were already waiting, ever.
pub static REFUSED: Counter = Counter::new();
/// Ranges whose wait passed its limit, ever.
pub static TIMED_OUT: Counter = Counter::new();
/// Bytes charged now, all cores together.
pub static HELD: Gauge = Gauge::new();

thread_local! {
    static THIS_CORE: Arc<Admission> = Arc::new(Admission::new(CORE_BUDGET, MAX_WAITING));
}

/// One core's budget of Range response bytes.
#[derive(Debug)]
pub struct Admission {
    budget: usize,
    max_waiting: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: usize,
    next_ticket: u64,
    /// Ticket → bytes charged, for every charge above zero.
    holders: BTreeMap<u64, usize>,
    waiting: usize,
    /// Ticket → the task of a waiting Range, to wake when a charge is released.
    wakers: BTreeMap<u64, Waker>,
}

impl State {
    fn check(&self) {
        debug_assert_eq!(self.held, self.holders.values().sum::<usize>());
        debug_assert!(self.holders.values().all(|&b| b > 0));
        debug_assert!(self.wakers.len() <= self.waiting);
    }
}

impl Admission {
    /// A budget of `budget` bytes with at most `max_waiting` waiters.
    pub fn new(budget: usize, max_waiting: usize) -> Self {
        Admission {
            budget,
            max_waiting,
            state: Mutex::new(State::default()),
        }
    }

    /// The budget of the calling thread's core.
    pub fn this_core() -> Arc<Admission> {
        THIS_CORE.with(Arc::clone)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding this lock cannot leave it inconsistent: every update
        // below is complete before the guard drops.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A charge of nothing yet, younger than every charge taken before.
    pub fn charge(self: &Arc<Self>) -> Charge {
        let mut s = self.lock();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        Charge {
            core: self.clone(),
            ticket,
            bytes: 0,
        }
    }

    /// Bytes charged on this core now.
    pub fn held(&self) -> usize {
        self.lock().held
    }
}

/// The bytes one Range holds against its core's budget; released when dropped.
#[derive(Debug)]
pub struct Charge {
    core: Arc<Admission>,
    ticket: u64,
    bytes: usize,
}

impl Charge {
    /// Raises the charge to `bytes` (a running total), waiting while younger than the oldest
    /// holder and the core's budget has no room for the difference, until `deadline`.
    pub fn grow_to(&mut self, bytes: usize, deadline: Instant) -> Grow<'_> {
        Grow {
            charge: self,
            bytes,
            deadline,
            waiting: None,
        }
    }

    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let wakers = {
            let mut s = self.core.lock();
            let removed = s.holders.remove(&self.ticket);
            debug_assert_eq!(removed, Some(self.bytes));
            s.held -= self.bytes;
            s.check();
            std::mem::take(&mut s.wakers)
        };
        HELD.add(-(self.bytes as i64));
        for w in wakers.into_values() {
            w.wake();
        }
    }
}

/// The future of [`Charge::grow_to`].
#[derive(Debug)]
pub struct Grow<'c> {
    charge: &'c mut Charge,
    bytes: usize,
    deadline: Instant,
    /// Counted in the core's waiters, with the deadline's timer.
    waiting: Option<Sleep>,
}

impl Future for Grow<'_> {
    type Output = Result<(), EtcdError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let charge = &mut *this.charge;
        if this.bytes <= charge.bytes {
            return Poll::Ready(Ok(()));
        }
        let core = charge.core.clone();
        let mut s = core.lock();
        let more = this.bytes - charge.bytes;
        let oldest = s.holders.keys().next().is_none_or(|&t| t >= charge.ticket);
        if oldest || s.held + more <= core.budget {
            s.held += more;
            *s.holders.entry(charge.ticket).or_default() += more;
            if this.waiting.take().is_some() {
                s.waiting -= 1;
                s.wakers.remove(&charge.ticket);
            }
            s.check();
            drop(s);
            charge.bytes = this.bytes;
            HELD.add(more as i64);
            return Poll::Ready(Ok(()));
        }
        let deadline = match &mut this.waiting {
            Some(deadline) => deadline,
            None => {
                if s.waiting >= core.max_waiting {
                    REFUSED.inc();
                    return Poll::Ready(Err(EtcdError::TooManyRequests));
                }
                s.waiting += 1;
                WAITS.inc();
                this.waiting.insert(Sleep::until(this.deadline))
            }
        };
        if Pin::new(deadline).poll(cx).is_ready() {
            s.waiting -= 1;
            s.wakers.remove(&charge.ticket);
            s.check();
            this.waiting = None;
            TIMED_OUT.inc();
            return Poll::Ready(Err(EtcdError::Timeout));
        }
        s.wakers.insert(charge.ticket, cx.waker().clone());
        s.check();
        Poll::Pending
    }
}

impl Drop for Grow<'_> {
    fn drop(&mut self) {
        if self.waiting.is_some() {
            let mut s = self.charge.core.lock();
            s.waiting -= 1;
            s.wakers.remove(&self.charge.ticket);
            s.check();
        }
    }
}

/// A response's charge, carried in its extensions from the handler to the gRPC front.
#[derive(Debug, Clone)]
pub struct ResponseCharge {
    /// Only held: its drop releases the charge.
    _held: Arc<Charge>,
}

impl ResponseCharge {
    /// Holds `charge` until the response carrying it has been sent.
    pub fn new(charge: Charge) -> Self {
        ResponseCharge {
            _held: Arc::new(charge),
        }
    }
}

/// If the handler left a [`ResponseCharge`] in `resp`, its body keeps it until the last byte has
/// been handed to HTTP/2, in [`CHUNK`]-byte pieces; any other response is returned as it is.
pub fn hold_until_sent(mut resp: Response<tonic::body::Body>) -> Response<tonic::body::Body> {
    match resp.extensions_mut().remove::<ResponseCharge>() {
        None => resp,
        Some(charge) => resp.map(|inner| {
            tonic::body::Body::new(Sending {
                inner,
                rest: Bytes::new(),
                charge: Some(charge),
            })
        }),
    }
}

/// An admitted response's body: the encoded message in pieces, then its trailers.
struct Sending {
    inner: tonic::body::Body,
    /// What is left of the data frame being handed on.
    rest: Bytes,
    /// Released once every data byte has been handed on.
    charge: Option<ResponseCharge>,
}

impl Sending {
    /// The next piece of a message of several, as a copy: HTTP/2 never holds a slice of the
    /// whole message, which is freed with the last copy.
    fn next_piece(&mut self) -> Bytes {
        let n = self.rest.len().min(CHUNK);
        let piece = Bytes::copy_from_slice(&self.rest[..n]);
        if n == self.rest.len() {
            self.rest = Bytes::new();
        } else {
            self.rest.advance(n);
        }
        piece
    }
}

impl Body for Sending {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if this.rest.has_remaining() {
            return Poll::Ready(Some(Ok(Frame::data(this.next_piece()))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.len() > CHUNK => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(Frame::data(this.next_piece()))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                // Trailers: every data byte has been handed on.
                Err(trailers) => {
                    this.charge = None;
                    Poll::Ready(Some(Ok(trailers)))
                }
            },
            end => {
                this.charge = None;
                Poll::Ready(end)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.rest.has_remaining() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        // The upper bound first: `set_lower` asserts it stays at or below it.
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(inner.lower().saturating_add(rest));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;
    use std::time::Duration;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A deadline no test reaches.
    fn long() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn poll(g: &mut Grow<'_>, waker: &Waker) -> Poll<Result<(), EtcdError>> {
        Pin::new(g).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn the_oldest_proceeds_younger_ones_wait_past_the_budget() {
        let core = Arc::new(Admission::new(100, 8));
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut a = core.charge();
        let mut b = core.charge();
        let mut c = core.charge();
        // Within the budget, every charge grows.
        assert!(poll(&mut b.grow_to(40, long()), &waker).is_ready());
        assert!(poll(&mut a.grow_to(50, long()), &waker).is_ready());
        assert_eq!(core.held(), 90);
        // Past it, the youngest waits; the oldest holder (a) proceeds, even far past it.
        let mut grow_c = c.grow_to(20, long());
        assert!(poll(&mut grow_c, &waker).is_pending());
        drop(grow_c);
        assert!(poll(&mut a.grow_to(500, long()), &waker).is_ready());
        assert_eq!(core.held(), 540);
        // b is not the oldest holder: it waits until a is released.
        let mut grow_b = b.grow_to(60, long());
        assert!(poll(&mut grow_b, &waker).is_pending());
        assert_eq!(core.lock().waiting, 1);
        drop(a);
        // The waiting task is woken; c's wait went away and took its waker with it.
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(poll(&mut grow_b, &waker).is_ready());
        drop(grow_b);
        assert_eq!((core.held(), core.lock().waiting), (60, 0));
        // Now b is the oldest holder; c fits within the budget.
        assert!(poll(&mut c.grow_to(40, long()), &waker).is_ready());
        assert_eq!(core.held(), 100);
        drop((b, c));
        assert_eq!(core.held(), 0);
        assert!(core.lock().holders.is_empty());
    }

    #[test]
    fn a_waiter_past_the_bound_is_refused_and_dropped_waiters_leave() {
        let core = Arc::new(Admission::new(10, 2));
        let waker = Waker::from(Arc::new(Count::default()));
        let mut old = core.charge();
        assert!(poll(&mut old.grow_to(10, long()), &waker).is_ready());
        let mut young: Vec<Charge> = (0..3).map(|_| core.charge()).collect();
        let [y0, y1, y2] = &mut young[..] else {
            unreachable!()
        };
        let mut g0 = y0.grow_to(1, long());
        let mut g1 = y1.grow_to(1, long());
        assert!(poll(&mut g0, &waker).is_pending());
        assert!(poll(&mut g1, &waker).is_pending());
        let mut g2 = y2.grow_to(1, long());
        assert_eq!(
            poll(&mut g2, &waker),
            Poll::Ready(Err(EtcdError::TooManyRequests))
        );
        drop(g2);
        // A waiter that goes away (its client cancelled) makes room for another.
        drop(g1);
        assert!(poll(&mut y2.grow_to(1, long()), &waker).is_pending());
        assert_eq!(core.lock().waiting, 1);
        drop(g0);
        assert_eq!(core.lock().waiting, 0);
        drop(young);
        drop(old);
        assert_eq!(core.held(), 0);
    }

    /// Wakes the test's thread.
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    #[test]
    fn a_wait_past_its_limit_times_out_and_leaves() {
        let core = Arc::new(Admission::new(10, 4));
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut old = core.charge();
        assert!(poll(&mut old.grow_to(10, long()), &waker).is_ready());
        let mut young = core.charge();
        let mut grow = young.grow_to(1, Instant::now() + Duration::from_millis(20));
        // Woken by the timer thread, not by a release (none comes): bounded by a deadline far
        // past the limit.
        let give_up = Instant::now() + Duration::from_secs(30);
        let result = loop {
            match poll(&mut grow, &waker) {
                Poll::Ready(r) => break r,
                Poll::Pending => {
                    assert_eq!(core.lock().waiting, 1);
                    let now = Instant::now();
                    assert!(now < give_up, "the wait's limit never fired");
                    std::thread::park_timeout(give_up - now);
                }
            }
        };
        assert_eq!(result, Err(EtcdError::Timeout));
        assert_eq!(core.lock().waiting, 0);
        assert!(
            core.lock().wakers.is_empty(),
            "a timed-out waiter left its waker"
        );
        drop(grow);
        assert_eq!(core.lock().waiting, 0);
        assert_eq!((young.bytes(), core.held()), (0, 10));
        drop((young, old));
        assert_eq!(core.held(), 0);
    }

    #[test]
    fn an_admitted_body_is_handed_on_in_chunks_then_releases_its_charge() {
        let core = Arc::new(Admission::new(1 << 30, 1));
        let waker = Waker::from(Arc::new(Count::default()));
        let mut charge = core.charge();
        assert!(poll(&mut charge.grow_to(5 << 20, long()), &waker).is_ready());
        let message = "7".repeat(CHUNK * 2 + 3);
        let inner = tonic::body::Body::new(message.clone());
        let mut resp = Response::new(inner);
        resp.extensions_mut().insert(ResponseCharge::new(charge));
        let mut body = hold_until_sent(resp).into_body();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let d = f.into_data().expect("only data");
                    sizes.push(d.len());
                    got.extend_from_slice(&d);
                }
                Poll::Ready(None) => break,
                other => panic!("unexpected {other:?}"),
            }
            if sizes.len() < 3 {
                assert_eq!(core.held(), 5 << 20, "released before the last piece");
            }
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 3]);
        assert_eq!(got, message.as_bytes());
        assert_eq!(core.held(), 0);
    }
}
