//! The body of an HTTP/1.1 response: whole (health, version, a unary gateway call) or a
//! stream of chunks (a streaming gateway call: watch, lease keep-alive, observe, snapshot),
//! fed through a bounded queue by the task that produces them. When the client goes away, hyper
//! drops the body, the queue closes, and the producer stops at its next send.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::Stream;
use http_body::{Frame, SizeHint};

pub struct Body(Inner);

enum Inner {
    Full(Option<Bytes>),
    Stream(flume::r#async::RecvStream<'static, Bytes>),
}

impl Body {
    /// A body of the chunks sent on the returned queue's other end, ending when it is dropped.
    pub fn stream(rx: flume::Receiver<Bytes>) -> Body {
        Body(Inner::Stream(rx.into_stream()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body(Inner::Full(Some(Bytes::from(s))))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body(Inner::Full(Some(b)))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body(Inner::Full(Some(Bytes::from(v))))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => Pin::new(s)
                .poll_next(cx)
                .map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Inner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}
