//! grpc-go's refusal of an oversized request message, ahead of tonic's routes.
//!
//! etcd (grpc-go) refuses a received message longer than its limit (`--max-request-bytes` plus
//! 512 KiB) with `ResourceExhausted` and the message
//! `grpc: received message larger than max (N vs. M)`, N being the length from the message's
//! gRPC length prefix and M the limit. tonic's decoder refuses it with `OutOfRange` and a message
//! of its own, so [`GrpcLimit`] checks the first message of every request itself: it reads the
//! request body until the 5-byte prefix of the first gRPC message (compressed flag, then the
//! big-endian `u32` length) is in hand and
//!
//! - if the length exceeds the limit, answers at once with a trailers-only gRPC response (HTTP
//!   200, `content-type: application/grpc`, `grpc-status: 8`, `grpc-message` percent-encoded as
//!   the gRPC spec says), without calling the service and without reading the rest of the body
//!   (hyper then resets the request stream with `NO_ERROR`, as HTTP/2 prescribes for an early
//!   response);
//! - otherwise calls the routes with a body ([`Prefixed`]) that replays what was read and then
//!   continues with the rest. The frame that completed the prefix is replayed as is (no copy);
//!   only when the prefix arrives split over several frames are the first few bytes (at most 4)
//!   copied, into one small allocation.
//!
//! A body that ends, fails or brings trailers before 5 bytes are in is handed on unchanged: the
//! service answers it as it would have.
//!
//! On the way back, a response whose handler left a charge of [`crate::admission`] gets a body
//! that holds it until the response has been sent.
//!
//! Limits of the check:
//!
//! - Only the first message of a request is checked here. The later messages of a client stream
//!   (Watch, LeaseKeepAlive) are checked by tonic alone, so every generated server must still be
//!   built with `.max_decoding_message_size(max_recv_bytes)` as the backstop (an oversized later
//!   message then fails the stream with tonic's `OutOfRange` status, not grpc-go's).
//! - The service is called only once the first message's prefix has arrived (or the request body
//!   has ended): a client stream that sends nothing has no handler running yet. etcd's streaming
//!   methods all start with a client message, so this changes nothing for them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::codegen::StdError;
use tonic::service::Routes;
use tower::Service;

/// The length of a gRPC message prefix: the compressed flag (1 byte), then the message length
/// (big-endian `u32`).
pub const PREFIX_LEN: usize = 5;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// tonic's [`Routes`] as a hyper service that refuses an oversized first request message the way
/// grpc-go does (see the module documentation).
#[derive(Clone, Debug)]
pub struct GrpcLimit {
    routes: Routes,
    limit: usize,
    /// The connection's verified client certificate name, given to every request.
    common_name: Option<crate::auth::ClientCommonName>,
}

impl GrpcLimit {
    /// Serves `routes`, refusing a first request message longer than `max_recv_bytes`.
    pub fn new(routes: Routes, max_recv_bytes: usize) -> Self {
        GrpcLimit {
            routes,
            limit: max_recv_bytes,
            common_name: None,
        }
    }

    /// The same service for a connection whose client presented a verified certificate with
    /// this CommonName (etcd's identity under --client-cert-auth).
    pub fn with_common_name(&self, cn: Option<String>) -> Self {
        GrpcLimit {
            common_name: cn.map(|c| crate::auth::ClientCommonName(c.into())),
            ..self.clone()
        }
    }

    /// The largest message length accepted.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<B> hyper::service::Service<Request<B>> for GrpcLimit
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = GrpcLimitFuture<B>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        if let Some(cn) = &self.common_name {
            parts.extensions.insert(cn.clone());
        }
        GrpcLimitFuture {
            state: State::Peek(Peek {
                routes: self.routes.clone(),
                limit: self.limit,
                parts,
                body,
                head: [0; PREFIX_LEN - 1],
                head_len: 0,
            }),
        }
    }
}

/// The response future of [`GrpcLimit`]: reads the first message's prefix, then answers the
/// refusal or runs the routes.
pub struct GrpcLimitFuture<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send,
{
    state: State<B>,
}

enum State<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send,
{
    Peek(Peek<B>),
    Call(<Routes as Service<Request<Prefixed<B>>>>::Future),
    Done,
}

/// The request before the first message's prefix is complete.
struct Peek<B> {
    routes: Routes,
    limit: usize,
    parts: http::request::Parts,
    body: B,
    /// Bytes of data frames that together held fewer than [`PREFIX_LEN`] bytes.
    head: [u8; PREFIX_LEN - 1],
    head_len: usize,
}

/// What reading the prefix came to.
enum Peeked<E> {
    /// The first message is longer than the limit: its length.
    TooLarge(u32),
    /// Call the service; `held` is the frame (or error) read last, to replay after `head`;
    /// `ended` says the body has nothing more.
    Pass {
        held: Option<Result<Frame<Bytes>, E>>,
        ended: bool,
    },
}

impl<B> Peek<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send,
{
    fn poll_prefix(&mut self, cx: &mut Context<'_>) -> Poll<Peeked<B::Error>> {
        // Nothing is read before the routes are ready to take the request (they always are).
        if let Err(never) = ready!(Service::<Request<Prefixed<B>>>::poll_ready(
            &mut self.routes,
            cx
        )) {
            match never {}
        }
        loop {
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    return Poll::Ready(Peeked::Pass {
                        held: None,
                        ended: true,
                    });
                }
                Some(Err(e)) => {
                    return Poll::Ready(Peeked::Pass {
                        held: Some(Err(e)),
                        ended: false,
                    });
                }
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Trailers before a whole prefix: the service sees the truncated message.
                Err(frame) => {
                    return Poll::Ready(Peeked::Pass {
                        held: Some(Ok(frame)),
                        ended: false,
                    });
                }
            };
            let have = self.head_len;
            if have + data.len() < PREFIX_LEN {
                self.head[have..have + data.len()].copy_from_slice(&data);
                self.head_len += data.len();
                continue;
            }
            let mut prefix = [0; PREFIX_LEN];
            prefix[..have].copy_from_slice(&self.head[..have]);
            prefix[have..].copy_from_slice(&data[..PREFIX_LEN - have]);
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
            if usize::try_from(len).map_or(true, |len| len > self.limit) {
                return Poll::Ready(Peeked::TooLarge(len));
            }
            return Poll::Ready(Peeked::Pass {
                held: Some(Ok(Frame::data(data))),
                ended: false,
            });
        }
    }
}

impl<B> Future for GrpcLimitFuture<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send,
{
    type Output = Result<Response<tonic::body::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Peek(peek) => {
                    let peeked = ready!(peek.poll_prefix(cx));
                    let State::Peek(peek) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!("in the peek state");
                    };
                    let Peek {
                        mut routes,
                        limit,
                        parts,
                        body,
                        head,
                        head_len,
                    } = peek;
                    match peeked {
                        Peeked::TooLarge(len) => {
                            // Dropping `body` unread lets hyper reset the request stream.
                            drop(body);
                            return Poll::Ready(Ok(too_large_response(len, limit)));
                        }
                        Peeked::Pass { held, ended } => {
                            let head =
                                (head_len > 0).then(|| Bytes::copy_from_slice(&head[..head_len]));
                            let body = Prefixed {
                                head,
                                held,
                                rest: body,
                                ended,
                            };
                            this.state = State::Call(routes.call(Request::from_parts(parts, body)));
                        }
                    }
                }
                State::Call(fut) => {
                    let result = ready!(Pin::new(fut).poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(result.map(crate::admission::hold_until_sent));
                }
                State::Done => panic!("GrpcLimitFuture polled after completion"),
            }
        }
    }
}

/// A request body after [`GrpcLimit`] read its first frames: replays them, then continues with
/// the rest of the body.
#[derive(Debug)]
pub struct Prefixed<B: Body> {
    /// The bytes of the first data frames when the prefix came split (at most 4).
    head: Option<Bytes>,
    /// The frame, or error, read last.
    held: Option<Result<Frame<Bytes>, B::Error>>,
    rest: B,
    /// `rest` has ended.
    ended: bool,
}

// Nothing of a `Prefixed` is pinned but `rest`, which is `Unpin`; the held error need not be.
impl<B: Body + Unpin> Unpin for Prefixed<B> {}

impl<B: Body<Data = Bytes> + Unpin> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(held));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.rest).poll_frame(cx));
        if frame.is_none() {
            this.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.held.is_none() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.rest.size_hint()
        };
        let held = match &self.held {
            Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        let buffered = (self.head.as_ref().map_or(0, Bytes::len) + held) as u64;
        if buffered > 0 {
            let upper = hint.upper().map(|upper| upper.saturating_add(buffered));
            hint.set_lower(hint.lower().saturating_add(buffered));
            if let Some(upper) = upper {
                hint.set_upper(upper);
            }
        }
        hint
    }
}

/// grpc-go's answer to a received message of `len` bytes over `limit`: a trailers-only response
/// with `ResourceExhausted` and `grpc: received message larger than max (len vs. limit)`.
pub fn too_large_response(len: u32, limit: usize) -> Response<tonic::body::Body> {
    let message = format!("grpc: received message larger than max ({len} vs. {limit})");
    let mut response = Response::new(tonic::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        GRPC_STATUS,
        HeaderValue::from(tonic::Code::ResourceExhausted as i32),
    );
    headers.insert(GRPC_MESSAGE, grpc_message_header(message));
    response
}

/// `message` as a `grpc-message` value: percent-encoded as the gRPC spec says (every byte outside
/// space..=`~`, and `%`, as `%XX`), so that UTF-8 survives.
pub fn grpc_message_header(message: String) -> HeaderValue {
    let plain = |b: u8| (b' '..=b'~').contains(&b) && b != b'%';
    let bytes = if message.bytes().all(plain) {
        message.into_bytes()
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = Vec::with_capacity(message.len() * 3);
        for b in message.bytes() {
            if plain(b) {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
        }
        out
    };
    HeaderValue::from_maybe_shared(Bytes::from(bytes)).expect("printable ASCII is a header value")
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use hyper::service::Service as _;
    use tonic::server::NamedService;

    use super::*;

    /// A body of given frames.
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        /// How many frames were taken.
        taken: Arc<Mutex<usize>>,
    }

    impl Frames {
        fn new(frames: Vec<Frame<Bytes>>) -> Frames {
            Frames {
                frames: frames.into(),
                taken: Arc::default(),
            }
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let this = self.get_mut();
            let frame = this.frames.pop_front();
            if frame.is_some() {
                *this.taken.lock().unwrap() += 1;
            }
            Poll::Ready(frame.map(Ok))
        }
    }

    /// Answers with the request body: its bytes, then a trailer `x-trailer` if it had one.
    #[derive(Clone)]
    struct Collect;

    impl NamedService for Collect {
        const NAME: &'static str = "retcd.test.Collect";
    }

    impl Service<Request<tonic::body::Body>> for Collect {
        type Response = Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let (data, trailer) = read_body(req.into_body()).await;
                let body = Frames::new(vec![Frame::data(Bytes::from(data))]);
                let mut response = Response::new(tonic::body::Body::new(body));
                if let Some(t) = trailer.and_then(|t| t.get("x-trailer").cloned()) {
                    response.headers_mut().insert("x-trailer", t);
                }
                Ok(response)
            })
        }
    }

    /// Reads `body` to its end: the bytes of its data frames, and its trailers if it has some.
    async fn read_body<B>(mut body: B) -> (Vec<u8>, Option<http::HeaderMap>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame.expect("no body error").into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    const LIMIT: usize = 100;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7, len as usize));
        m
    }

    /// Serves a request of `frames` to `/retcd.test.Collect/X`: the response and its body.
    fn serve(frames: Vec<Frame<Bytes>>) -> (Response<()>, Vec<u8>, usize) {
        let body = Frames::new(frames);
        let taken = Arc::clone(&body.taken);
        let request = Request::post("/retcd.test.Collect/X").body(body).unwrap();
        let svc = GrpcLimit::new(Routes::new(Collect), LIMIT);
        futures_lite::future::block_on(async move {
            let response = svc.call(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let (data, _) = read_body(body).await;
            let taken = *taken.lock().unwrap();
            (Response::from_parts(parts, ()), data, taken)
        })
    }

    fn data(bytes: &[u8]) -> Frame<Bytes> {
        Frame::data(Bytes::copy_from_slice(bytes))
    }

    fn split(bytes: &[u8], at: &[usize]) -> Vec<Frame<Bytes>> {
        let mut frames = Vec::new();
        let mut start = 0;
        for &end in at.iter().chain([&bytes.len()]) {
            frames.push(data(&bytes[start..end]));
            start = end;
        }
        frames
    }

    /// Where a body starting with a message prefix is cut into frames: whole, after the prefix,
    /// and with the prefix split over several frames (an empty one included).
    const PREFIX_SPLITS: &[&[usize]] = &[&[], &[5], &[1, 3], &[0, 1, 2, 3, 4], &[2, 2, 9]];

    #[test]
    fn refuses_an_oversized_first_message_from_its_prefix() {
        let m = message(LIMIT as u32 + 10);
        for &at in PREFIX_SPLITS {
            let (response, body, taken) = serve(split(&m, at));
            let h = response.headers();
            assert_eq!(response.status(), 200);
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["grpc-status"], "8");
            assert_eq!(
                h["grpc-message"],
                "grpc: received message larger than max (110 vs. 100)"
            );
            assert!(body.is_empty());
            // Read only up to the frame that completed the prefix.
            let needed = at.iter().filter(|&&i| i < 5).count() + 1;
            assert_eq!(taken, needed, "split at {at:?}");
        }
    }

    #[test]
    fn passes_the_body_whole() {
        let mut m = message(LIMIT as u32);
        m.extend_from_slice(&message(3));
        // The same splits, and one inside the second message's prefix too.
        for &at in PREFIX_SPLITS.iter().chain(&[&[4, 104][..]]) {
            let (response, body, _) = serve(split(&m, at));
            assert!(response.headers().get("grpc-status").is_none());
            assert_eq!(body, m, "split at {at:?}");
        }
    }

    #[test]
    fn hands_on_short_bodies_and_trailers() {
        let (_, body, _) = serve(vec![]);
        assert!(body.is_empty());
        let (_, body, _) = serve(split(&[0, 0, 1], &[1]));
        assert_eq!(body, [0, 0, 1]);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-trailer", HeaderValue::from_static("t"));
        let (response, body, _) = serve(vec![data(&[0, 0]), data(&[]), Frame::trailers(trailers)]);
        assert_eq!(body, [0, 0]);
        assert_eq!(response.headers()["x-trailer"], "t");
    }

    #[test]
    fn percent_encodes_the_message() {
        assert_eq!(grpc_message_header("a b~".into()), "a b~");
        assert_eq!(grpc_message_header("100% é\n".into()), "100%25 %C3%A9%0A");
    }
}
