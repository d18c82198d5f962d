//! go-grpc-prometheus's server metrics, as etcd exposes them: `grpc_server_started_total`,
//! `grpc_server_handled_total` (by code), `grpc_server_msg_received_total`,
//! `grpc_server_msg_sent_total`, and with `--metrics extensive` `grpc_server_handling_seconds`;
//! plus etcd's `etcd_network_client_grpc_{sent,received}_bytes_total` (message bytes).
//!
//! [`Metered`] wraps a connection's gRPC service (what HTTP/2 clients and the JSON gateway
//! call): it counts a call when it starts, counts the messages and bytes of both bodies as they
//! pass, and records the code from the response's `grpc-status` (the headers of a trailers-only
//! answer, at once; else the trailers, when the response body ends — `Canceled` if the client
//! dropped it first). Only etcd's methods are counted (others are refused by the routes anyway).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use retcd_engine::metrics::{Counter, Histogram};

use crate::grpc_limit::GrpcLimit;

type StdError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// gRPC's codes, by number, as go-grpc-prometheus names them.
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// A served method: (service, method, grpc_type, shown before its first call).
pub struct Method {
    pub service: &'static str,
    pub method: &'static str,
    pub kind: &'static str,
    /// etcd registers its metrics for the services on its gRPC server at start (every method
    /// shows, at 0); Lock and Election come later and show once called.
    pub listed: bool,
}

macro_rules! methods {
    ($($service:literal: $listed:literal [$($method:literal $kind:literal),*];)*) => {
        &[$($(Method { service: $service, method: $method, kind: $kind, listed: $listed },)*)*]
    };
}

pub const METHODS: &[Method] = methods! {
    "etcdserverpb.Auth": true [
        "AuthDisable" "unary", "AuthEnable" "unary", "AuthStatus" "unary", "Authenticate" "unary",
        "RoleAdd" "unary", "RoleDelete" "unary", "RoleGet" "unary",
        "RoleGrantPermission" "unary", "RoleList" "unary", "RoleRevokePermission" "unary",
        "UserAdd" "unary", "UserChangePassword" "unary", "UserDelete" "unary", "UserGet" "unary",
        "UserGrantRole" "unary", "UserList" "unary", "UserRevokeRole" "unary"];
    "etcdserverpb.Cluster": true [
        "MemberAdd" "unary", "MemberList" "unary", "MemberPromote" "unary",
        "MemberRemove" "unary", "MemberUpdate" "unary"];
    "etcdserverpb.KV": true [
        "Compact" "unary", "DeleteRange" "unary", "Put" "unary", "Range" "unary", "Txn" "unary"];
    "etcdserverpb.Lease": true [
        "LeaseGrant" "unary", "LeaseKeepAlive" "bidi_stream", "LeaseLeases" "unary",
        "LeaseRevoke" "unary", "LeaseTimeToLive" "unary"];
    "etcdserverpb.Maintenance": true [
        "Alarm" "unary", "Defragment" "unary", "Downgrade" "unary", "Hash" "unary",
        "HashKV" "unary", "MoveLeader" "unary", "Snapshot" "server_stream", "Status" "unary"];
    "etcdserverpb.Watch": true ["Watch" "bidi_stream"];
    "v3electionpb.Election": false [
        "Campaign" "unary", "Leader" "unary", "Observe" "server_stream", "Proclaim" "unary",
        "Resign" "unary"];
    "v3lockpb.Lock": false ["Lock" "unary", "Unlock" "unary"];
};

const N: usize = METHODS.len();

/// Per method (index into [`METHODS`]).
pub static STARTED: [Counter; N] = [const { Counter::new() }; N];
pub static MSG_RECEIVED: [Counter; N] = [const { Counter::new() }; N];
pub static MSG_SENT: [Counter; N] = [const { Counter::new() }; N];
/// Per method and code.
pub static HANDLED: [[Counter; 17]; N] = [const { [const { Counter::new() }; 17] }; N];
/// Per method, with `--metrics extensive` only.
pub static HANDLING_SECONDS: [Histogram; N] = [const { Histogram::new(GRPC_SECONDS) }; N];
pub static SENT_BYTES: Counter = Counter::new();
pub static RECEIVED_BYTES: Counter = Counter::new();

/// `prometheus.DefBuckets`.
pub const GRPC_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `--metrics extensive`: the handling-time histograms are recorded.
pub static EXTENSIVE: AtomicBool = AtomicBool::new(false);

/// The index in [`METHODS`] of a request path (`/service/method`), by one hash lookup: every
/// gRPC call asks.
fn method_index(path: &str) -> Option<usize> {
    static BY_PATH: std::sync::OnceLock<std::collections::HashMap<String, usize>> =
        std::sync::OnceLock::new();
    BY_PATH
        .get_or_init(|| {
            METHODS
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("/{}/{}", m.service, m.method), i))
                .collect()
        })
        .get(path)
        .copied()
}

/// Counts the gRPC messages (and their payload bytes) in a body's data as it passes.
#[derive(Default)]
struct Framing {
    /// Bytes of the current message's payload still to come.
    remaining: usize,
    prefix: [u8; 5],
    prefix_len: usize,
}

impl Framing {
    /// Returns (messages begun, payload bytes) in `data`.
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut msgs, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                bytes += n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                msgs += 1;
                self.prefix_len = 0;
                self.remaining = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
            }
        }
        (msgs, bytes)
    }
}

/// A request body whose messages are counted.
pub struct Received<B> {
    inner: B,
    method: usize,
    framing: Framing,
}

impl<B> Body for Received<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(d) = f.data_ref()
        {
            let (msgs, bytes) = this.framing.feed(d);
            MSG_RECEIVED[this.method].add(msgs);
            RECEIVED_BYTES.add(bytes);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose messages are counted and whose status ends the call's record.
pub struct Sent {
    inner: tonic::body::Body,
    method: usize,
    started: Instant,
    framing: Framing,
    recorded: bool,
}

impl Sent {
    fn record(&mut self, code: usize) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        HANDLED[self.method][code.min(16)].inc();
        if EXTENSIVE.load(Ordering::Relaxed) {
            HANDLING_SECONDS[self.method].observe_duration(self.started.elapsed());
        }
    }
}

fn code_of(headers: &http::HeaderMap) -> Option<usize> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl Body for Sent {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let (msgs, bytes) = this.framing.feed(d);
                    MSG_SENT[this.method].add(msgs);
                    SENT_BYTES.add(bytes);
                } else if let Some(t) = f.trailers_ref() {
                    let code = code_of(t).unwrap_or(UNKNOWN);
                    this.record(code);
                }
            }
            Some(Err(_)) => this.record(UNKNOWN),
            // Ended without a status.
            None => this.record(UNKNOWN),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        // The client went away before the call ended.
        self.record(CANCELED);
    }
}

/// A connection's gRPC service, metered.
#[derive(Clone)]
pub struct Metered {
    inner: GrpcLimit,
}

impl Metered {
    pub fn new(inner: GrpcLimit) -> Metered {
        Metered { inner }
    }

    /// The largest message length accepted.
    pub fn limit(&self) -> usize {
        self.inner.limit()
    }

    /// With the caller's certificate common name (see [`GrpcLimit::with_common_name`]).
    pub fn with_common_name(&self, cn: Option<String>) -> Metered {
        Metered {
            inner: self.inner.with_common_name(cn),
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for Metered
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>>>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let Some(method) = method_index(req.uri().path()) else {
            let fut = self.inner.call(req);
            return Box::pin(fut);
        };
        STARTED[method].inc();
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let body = Received {
            inner: body,
            method,
            framing: Framing::default(),
        };
        let fut = self.inner.call(Request::from_parts(parts, body));
        Box::pin(async move {
            let resp = fut.await?;
            let (parts, body) = resp.into_parts();
            let mut sent = Sent {
                inner: tonic::body::Body::empty(),
                method,
                started,
                framing: Framing::default(),
                recorded: false,
            };
            if let Some(code) = code_of(&parts.headers) {
                // Trailers-only: the call is over (and the empty body may never be polled).
                sent.record(code);
                return Ok(Response::from_parts(parts, body));
            }
            sent.inner = body;
            Ok(Response::from_parts(parts, tonic::body::Body::new(sent)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_counts_messages_split_anyhow() {
        let mut f = Framing::default();
        let msg = |n: u8| {
            let mut m = vec![0, 0, 0, 0, n];
            m.extend(std::iter::repeat_n(7, n as usize));
            m
        };
        let mut all = msg(3);
        all.extend(msg(0));
        all.extend(msg(2));
        let (a, b) = all.split_at(6);
        assert_eq!(f.feed(a), (1, 1));
        assert_eq!(f.feed(b), (2, 4));
        assert_eq!(
            method_index("/etcdserverpb.KV/Range").map(|i| METHODS[i].method),
            Some("Range")
        );
        assert_eq!(method_index("/etcdserverpb.KV/Nope"), None);
    }
}
