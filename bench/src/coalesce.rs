//! Write coalescing for the generator's plain-text connections: what turns many HTTP/2 frames
//! into one `writev`.
//!
//! h2 flushes its connection each time its task runs with frames queued, and a request is two
//! such runs (hyper queues its HEADERS, then a task of its own pipes the DATA): at 1000 clients
//! the generator made 2.1 `writev` calls per put, and system time was half its CPU. Go's gRPC,
//! what etcd's own benchmark uses, writes what has gathered once its writer has nothing more to
//! do. [`Coalesce`] does the same with a connection's writes: they gather in a buffer, and the
//! first flush of a burst yields the connection's task (it wakes itself and goes to the back of
//! the runtime's queue), so that the clients and body pipes already woken queue their frames
//! first; once a turn brings nothing more, the flush writes everything gathered in one call.
//! Measured on put-1000 against retcd (perf/findings.md §27): 2.1 `writev` per put became 0.125
//! `sendto`, the generator's CPU per put 30 → 15–17 µs, its ceiling against the null server 1.4×.
//!
//! Invariants: the buffer holds at most [`LIMIT`] bytes plus one write (a larger write first
//! drains it); a flush returns `Ready` only once the buffer is empty and the stream flushed; a
//! flush yields again only while its last turn brought more to write, and at most
//! [`MAX_YIELDS`] times (so a lone request waits one turn of the queue, never for another
//! request). Reads pass through untouched.
//!
//! Who uses it: [`crate::client`]'s direct HTTP/2 connections.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before a write goes to the stream without waiting for a flush.
pub const LIMIT: usize = 256 << 10;

/// Turns a flush yields at most, while each brings more to write.
pub const MAX_YIELDS: u32 = 4;

/// A stream whose writes are gathered until a flush (see the module's doc).
#[derive(Debug)]
pub struct Coalesce<T> {
    io: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `io`.
    written: usize,
    /// Turns the current flush has yielded.
    yields: u32,
    /// What was gathered when it last yielded.
    gathered_at_yield: usize,
}

impl<T> Coalesce<T> {
    pub fn new(io: T) -> Self {
        Coalesce {
            io,
            buf: Vec::with_capacity(16 << 10),
            written: 0,
            yields: 0,
            gathered_at_yield: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes what is gathered until nothing is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for slice in data {
            this.buf.extend_from_slice(slice);
            n += slice.len();
        }
        debug_assert!(this.buf.len() < LIMIT + n);
        Poll::Ready(Ok(n))
    }

    /// No: h2 then copies a small DATA frame (up to 1 KiB) into its own buffer with the frames
    /// before it, where it would hold one of 256 B or more as a frame of its own that needs a
    /// flush (a turn) before the next: with 256 B puts, 0.31 writes per put against 0.125.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            this.yields = 0;
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        // Yield while the last turn brought more to write.
        if this.yields == 0 || (this.buf.len() > this.gathered_at_yield && this.yields < MAX_YIELDS)
        {
            this.yields += 1;
            this.gathered_at_yield = this.buf.len();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yields = 0;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_flush_yields_while_its_turns_bring_more_and_at_most_max_yields() {
        let (near, _far) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(near);
        let count = std::sync::Arc::new(Count::default());
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let write = |c: &mut Coalesce<_>, cx: &mut Context<'_>| {
            assert!(Pin::new(c).poll_write(cx, b"frame").is_ready());
        };
        // A lone write: one turn yielded (and the task woken for it), then written.
        write(&mut c, &mut cx);
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert!(c.buf.is_empty());
        // Every turn brings more: it yields MAX_YIELDS times, then writes all of it.
        for _ in 0..MAX_YIELDS {
            write(&mut c, &mut cx);
            assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        }
        write(&mut c, &mut cx);
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert!(c.buf.is_empty() && c.yields == 0);
        let woken = count.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(woken, 1 + MAX_YIELDS as usize);
    }

    #[tokio::test]
    async fn writes_gather_until_a_flush_and_arrive_whole_and_in_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(near);
        c.write_all(b"headers").await.unwrap();
        c.write_all(b"-data").await.unwrap();
        // Nothing went out before the flush.
        assert!(c.buf.len() == 12 && c.written == 0);
        c.flush().await.unwrap();
        assert!(c.buf.is_empty() && c.yields == 0);
        // Past the limit, a write first sends what is gathered.
        let big = vec![7u8; LIMIT];
        c.write_all(&big).await.unwrap();
        c.write_all(b"tail").await.unwrap();
        assert_eq!(c.buf, b"tail");
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        let mut want = b"headers-data".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert!(got == want, "bytes lost, reordered or repeated");
    }
}
