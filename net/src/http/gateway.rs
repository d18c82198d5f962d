//! etcd's gRPC gateway: the v3 API as JSON over HTTP/1.1 (`POST /v3/<service>/<call>`, and
//! `/v3beta/` as etcd 3.4 still serves), as grpc-gateway maps it for etcd 3.4: the body is the
//! request message in protobuf's JSON mapping with the proto field names (bytes as base64, 64-bit
//! integers as strings, enums by name; an empty body is the empty message), the answer is the
//! response message the same way, or for a streaming call one `{"result":…}` line per message.
//!
//! Each call is made through the connection's own gRPC service (in process, no socket): the
//! same limits, learner checks, authentication (the `Authorization` header is the token, as
//! grpc-gateway passes it on) and answers as a gRPC client gets. A failed call answers
//! grpc-gateway's error body with the HTTP status of its gRPC code.
//!
//! Bounds: a request body longer than the gRPC limit is refused as gRPC refuses such a message;
//! a streaming answer goes through a queue of [`STREAM_DEPTH`] lines, so a client that does not
//! read makes the call wait (its watch falls back to history, as a slow gRPC stream's does).

use std::future::Future;
use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body::Body as _;
use hyper::service::Service;
use prost::Message;
use retcd_engine::runtime;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Body, error};
use crate::grpc_limit::PREFIX_LEN;
use crate::metrics::grpc::Metered;
use crate::pb::{etcdserverpb as pb, v3electionpb as epb, v3lockpb as lpb};

/// Lines of a streaming answer queued for the client.
const STREAM_DEPTH: usize = 16;
/// Request chunks queued between the HTTP body and the gRPC call.
const INPUT_DEPTH: usize = 16;

type Answer = Pin<Box<dyn Future<Output = Response<Body>>>>;

/// One gateway path.
pub struct Route {
    path: &'static str,
    grpc: &'static str,
    call: fn(Call) -> Answer,
}

macro_rules! routes {
    ($($path:literal => $grpc:literal : $kind:ident($req:ty, $resp:ty);)*) => {
        &[$(Route {
            path: $path,
            grpc: $grpc,
            call: |c| Box::pin($kind::<$req, $resp>(c)),
        },)*]
    };
}

/// etcd 3.4's gateway paths (api/etcdserverpb/rpc.proto's `google.api.http` options; the
/// `/v3/kv/lease/…` aliases too). `/v3/maintenance/hash` is Hash, as in 3.4.
const ROUTES: &[Route] = routes! {
    "kv/range" => "/etcdserverpb.KV/Range": unary(pb::RangeRequest, pb::RangeResponse);
    "kv/put" => "/etcdserverpb.KV/Put": unary(pb::PutRequest, pb::PutResponse);
    "kv/deleterange" => "/etcdserverpb.KV/DeleteRange": unary(pb::DeleteRangeRequest, pb::DeleteRangeResponse);
    "kv/txn" => "/etcdserverpb.KV/Txn": unary(pb::TxnRequest, pb::TxnResponse);
    "kv/compaction" => "/etcdserverpb.KV/Compact": unary(pb::CompactionRequest, pb::CompactionResponse);
    "watch" => "/etcdserverpb.Watch/Watch": bidi(pb::WatchRequest, pb::WatchResponse);
    "lease/grant" => "/etcdserverpb.Lease/LeaseGrant": unary(pb::LeaseGrantRequest, pb::LeaseGrantResponse);
    "lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke": unary(pb::LeaseRevokeRequest, pb::LeaseRevokeResponse);
    "kv/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke": unary(pb::LeaseRevokeRequest, pb::LeaseRevokeResponse);
    "lease/keepalive" => "/etcdserverpb.Lease/LeaseKeepAlive": bidi(pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse);
    "lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive": unary(pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse);
    "kv/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive": unary(pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse);
    "lease/leases" => "/etcdserverpb.Lease/LeaseLeases": unary(pb::LeaseLeasesRequest, pb::LeaseLeasesResponse);
    "kv/lease/leases" => "/etcdserverpb.Lease/LeaseLeases": unary(pb::LeaseLeasesRequest, pb::LeaseLeasesResponse);
    "cluster/member/add" => "/etcdserverpb.Cluster/MemberAdd": unary(pb::MemberAddRequest, pb::MemberAddResponse);
    "cluster/member/remove" => "/etcdserverpb.Cluster/MemberRemove": unary(pb::MemberRemoveRequest, pb::MemberRemoveResponse);
    "cluster/member/update" => "/etcdserverpb.Cluster/MemberUpdate": unary(pb::MemberUpdateRequest, pb::MemberUpdateResponse);
    "cluster/member/list" => "/etcdserverpb.Cluster/MemberList": unary(pb::MemberListRequest, pb::MemberListResponse);
    "cluster/member/promote" => "/etcdserverpb.Cluster/MemberPromote": unary(pb::MemberPromoteRequest, pb::MemberPromoteResponse);
    "maintenance/alarm" => "/etcdserverpb.Maintenance/Alarm": unary(pb::AlarmRequest, pb::AlarmResponse);
    "maintenance/status" => "/etcdserverpb.Maintenance/Status": unary(pb::StatusRequest, pb::StatusResponse);
    "maintenance/defragment" => "/etcdserverpb.Maintenance/Defragment": unary(pb::DefragmentRequest, pb::DefragmentResponse);
    "maintenance/hash" => "/etcdserverpb.Maintenance/Hash": unary(pb::HashRequest, pb::HashResponse);
    "maintenance/snapshot" => "/etcdserverpb.Maintenance/Snapshot": server_stream(pb::SnapshotRequest, pb::SnapshotResponse);
    "maintenance/transfer-leadership" => "/etcdserverpb.Maintenance/MoveLeader": unary(pb::MoveLeaderRequest, pb::MoveLeaderResponse);
    "auth/enable" => "/etcdserverpb.Auth/AuthEnable": unary(pb::AuthEnableRequest, pb::AuthEnableResponse);
    "auth/disable" => "/etcdserverpb.Auth/AuthDisable": unary(pb::AuthDisableRequest, pb::AuthDisableResponse);
    "auth/status" => "/etcdserverpb.Auth/AuthStatus": unary(pb::AuthStatusRequest, pb::AuthStatusResponse);
    "auth/authenticate" => "/etcdserverpb.Auth/Authenticate": unary(pb::AuthenticateRequest, pb::AuthenticateResponse);
    "auth/user/add" => "/etcdserverpb.Auth/UserAdd": unary(pb::AuthUserAddRequest, pb::AuthUserAddResponse);
    "auth/user/get" => "/etcdserverpb.Auth/UserGet": unary(pb::AuthUserGetRequest, pb::AuthUserGetResponse);
    "auth/user/list" => "/etcdserverpb.Auth/UserList": unary(pb::AuthUserListRequest, pb::AuthUserListResponse);
    "auth/user/delete" => "/etcdserverpb.Auth/UserDelete": unary(pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse);
    "auth/user/changepw" => "/etcdserverpb.Auth/UserChangePassword": unary(pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse);
    "auth/user/grant" => "/etcdserverpb.Auth/UserGrantRole": unary(pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse);
    "auth/user/revoke" => "/etcdserverpb.Auth/UserRevokeRole": unary(pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse);
    "auth/role/add" => "/etcdserverpb.Auth/RoleAdd": unary(pb::AuthRoleAddRequest, pb::AuthRoleAddResponse);
    "auth/role/get" => "/etcdserverpb.Auth/RoleGet": unary(pb::AuthRoleGetRequest, pb::AuthRoleGetResponse);
    "auth/role/list" => "/etcdserverpb.Auth/RoleList": unary(pb::AuthRoleListRequest, pb::AuthRoleListResponse);
    "auth/role/delete" => "/etcdserverpb.Auth/RoleDelete": unary(pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse);
    "auth/role/grant" => "/etcdserverpb.Auth/RoleGrantPermission": unary(pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse);
    "auth/role/revoke" => "/etcdserverpb.Auth/RoleRevokePermission": unary(pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse);
    "lock/lock" => "/v3lockpb.Lock/Lock": unary(lpb::LockRequest, lpb::LockResponse);
    "lock/unlock" => "/v3lockpb.Lock/Unlock": unary(lpb::UnlockRequest, lpb::UnlockResponse);
    "election/campaign" => "/v3electionpb.Election/Campaign": unary(epb::CampaignRequest, epb::CampaignResponse);
    "election/proclaim" => "/v3electionpb.Election/Proclaim": unary(epb::ProclaimRequest, epb::ProclaimResponse);
    "election/leader" => "/v3electionpb.Election/Leader": unary(epb::LeaderRequest, epb::LeaderResponse);
    "election/observe" => "/v3electionpb.Election/Observe": server_stream(epb::LeaderRequest, epb::LeaderResponse);
    "election/resign" => "/v3electionpb.Election/Resign": unary(epb::ResignRequest, epb::ResignResponse);
};

/// The gateway route of an HTTP path, if it is one.
pub fn route(path: &str) -> Option<&'static Route> {
    let rest = under_prefix(path)?;
    ROUTES.iter().find(|r| r.path == rest)
}

/// Whether `path` is under the gateway's prefixes (served or not).
pub fn is_gateway_path(path: &str) -> bool {
    under_prefix(path).is_some()
}

fn under_prefix(path: &str) -> Option<&str> {
    path.strip_prefix("/v3/")
        .or_else(|| path.strip_prefix("/v3beta/"))
}

/// One gateway call in progress.
pub struct Call {
    grpc: Metered,
    path: &'static str,
    authorization: Option<HeaderValue>,
    /// The HTTP request body's chunks (an error ends it).
    input: flume::Receiver<Result<Bytes, String>>,
}

/// Serves `route` for the request `parts` with its `body`.
pub async fn call<B>(route: &Route, grpc: &Metered, parts: &Parts, body: B) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    if parts.method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let (tx, input) = flume::bounded(INPUT_DEPTH);
    runtime::spawn_local(read_body(body, tx));
    (route.call)(Call {
        grpc: grpc.clone(),
        path: route.grpc,
        authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
        input,
    })
    .await
}

/// Forwards the chunks of `body` until it ends, fails, or nobody takes them.
async fn read_body<B>(mut body: B, tx: flume::Sender<Result<Bytes, String>>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        let frame = futures_lite::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let chunk = match frame {
            None => return,
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => Ok(d),
                Err(_) => continue,
            },
        };
        let failed = chunk.is_err();
        if tx.send_async(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// A gRPC status as the gateway reports it.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn invalid(message: String) -> Failure {
        Failure { code: 3, message }
    }

    /// grpc-gateway v1's HTTP status for the code (`runtime.HTTPStatusFromCode`).
    fn http_status(&self) -> StatusCode {
        match self.code {
            0 => StatusCode::OK,
            1 => StatusCode::REQUEST_TIMEOUT,
            3 | 11 => StatusCode::BAD_REQUEST,
            9 => StatusCode::PRECONDITION_FAILED,
            4 => StatusCode::GATEWAY_TIMEOUT,
            5 => StatusCode::NOT_FOUND,
            6 | 10 => StatusCode::CONFLICT,
            7 => StatusCode::FORBIDDEN,
            8 => StatusCode::TOO_MANY_REQUESTS,
            12 => StatusCode::NOT_IMPLEMENTED,
            14 => StatusCode::SERVICE_UNAVAILABLE,
            16 => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// grpc-gateway v1's error body of a unary call.
    fn response(&self) -> Response<Body> {
        let m = json_string(&self.message);
        let mut r = Response::new(Body::from(format!(
            "{{\"error\":{m},\"message\":{m},\"code\":{}}}",
            self.code
        )));
        *r.status_mut() = self.http_status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    /// grpc-gateway v1's error line of a stream.
    fn stream_line(&self) -> Bytes {
        let status = self.http_status();
        Bytes::from(format!(
            "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
            self.code,
            status.as_u16(),
            json_string(&self.message),
            json_string(status.canonical_reason().unwrap_or(""))
        ))
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The whole request body, at most `limit` bytes.
async fn read_all(
    input: &flume::Receiver<Result<Bytes, String>>,
    limit: usize,
) -> Result<Bytes, Failure> {
    let mut all = BytesMut::new();
    while let Ok(chunk) = input.recv_async().await {
        let chunk = chunk.map_err(Failure::invalid)?;
        all.extend_from_slice(&chunk);
        if all.len() > limit {
            return Err(Failure {
                code: 8,
                message: format!(
                    "grpc: received message larger than max ({} vs. {limit})",
                    all.len()
                ),
            });
        }
    }
    Ok(all.freeze())
}

/// The message of a JSON body (the empty message for an empty body, as grpc-gateway decodes).
fn decode_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Failure::invalid(e.to_string()))
}

/// `message` as one gRPC frame.
fn frame<T: Message>(message: &T) -> Bytes {
    let len = message.encoded_len();
    let mut b = Vec::with_capacity(PREFIX_LEN + len);
    b.push(0);
    b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message.encode(&mut b).expect("a Vec grows as needed");
    Bytes::from(b)
}

/// The request body of an in-process gRPC call: the frames sent on a queue.
struct Frames(flume::r#async::RecvStream<'static, Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use futures_lite::Stream;
        Pin::new(&mut self.get_mut().0)
            .poll_next(cx)
            .map(|f| f.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The messages of a gRPC answer, then its status.
struct Answers {
    body: tonic::body::Body,
    buf: BytesMut,
    /// A status in the headers (a trailers-only answer).
    status: Option<Failure>,
}

impl Answers {
    /// The next message; `Ok(None)` once the call ended well.
    async fn next(&mut self) -> Result<Option<Bytes>, Failure> {
        loop {
            if self.buf.len() >= PREFIX_LEN {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= PREFIX_LEN + len {
                    self.buf.advance(PREFIX_LEN);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            }
            let frame =
                futures_lite::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            match frame {
                None => {
                    return match self.status.take() {
                        Some(f) if f.code != 0 => Err(f),
                        _ => Ok(None),
                    };
                }
                Some(Err(e)) => {
                    return Err(Failure {
                        code: 13,
                        message: e.to_string(),
                    });
                }
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => self.buf.extend_from_slice(&d),
                    Err(f) => {
                        if let Ok(trailers) = f.into_trailers()
                            && let Some(s) = status_of(&trailers)
                        {
                            self.status = Some(s);
                        }
                    }
                },
            }
        }
    }
}

/// The gRPC status in `headers`, if any (its message percent-decoded).
fn status_of(headers: &http::HeaderMap) -> Option<Failure> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| super::percent_decode(m, false))
        .unwrap_or_default();
    Some(Failure { code, message })
}

impl Call {
    /// Calls the gRPC method with the frames sent on the returned queue.
    async fn start(&self, frames: flume::Receiver<Bytes>) -> Result<Answers, Failure> {
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(self.path)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers");
        if let Some(a) = &self.authorization {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Frames(frames.into_stream()))
            .map_err(|e| Failure::invalid(e.to_string()))?;
        let resp = match self.grpc.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        Ok(Answers {
            body,
            buf: BytesMut::new(),
            status: status_of(&parts.headers),
        })
    }

    /// Sends the one request message of a unary or server-streaming call.
    async fn single<Req>(&self) -> Result<Answers, Failure>
    where
        Req: Message + DeserializeOwned + Default,
    {
        let body = read_all(&self.input, self.grpc.limit()).await?;
        let req: Req = decode_json(&body)?;
        let (tx, rx) = flume::bounded(1);
        tx.try_send(frame(&req)).expect("room for one");
        drop(tx);
        self.start(rx).await
    }
}

fn json_response(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    r
}

async fn unary<Req, Resp>(call: Call) -> Response<Body>
where
    Req: Message + DeserializeOwned + Default,
    Resp: Message + Serialize + Default,
{
    let result = async {
        let mut answers = call.single::<Req>().await?;
        let msg = answers.next().await?.ok_or_else(|| Failure {
            code: 13,
            message: "no response message".to_string(),
        })?;
        let resp = Resp::decode(msg).map_err(|e| Failure {
            code: 13,
            message: e.to_string(),
        })?;
        serde_json::to_vec(&resp).map_err(|e| Failure {
            code: 13,
            message: e.to_string(),
        })
    }
    .await;
    match result {
        Ok(body) => json_response(body),
        Err(f) => f.response(),
    }
}

async fn server_stream<Req, Resp>(call: Call) -> Response<Body>
where
    Req: Message + DeserializeOwned + Default,
    Resp: Message + Serialize + Default + 'static,
{
    match call.single::<Req>().await {
        Ok(answers) => stream_answers::<Resp>(answers),
        Err(f) => f.response(),
    }
}

async fn bidi<Req, Resp>(call: Call) -> Response<Body>
where
    Req: Message + DeserializeOwned + Default + 'static,
    Resp: Message + Serialize + Default + 'static,
{
    let (tx, rx) = flume::bounded(INPUT_DEPTH);
    let input = call.input.clone();
    runtime::spawn_local(forward_requests::<Req>(input, tx));
    match call.start(rx).await {
        Ok(answers) => stream_answers::<Resp>(answers),
        Err(f) => f.response(),
    }
}

/// Turns the JSON objects of a streamed request body into gRPC frames, one per object, until
/// the body ends or holds something that is not one.
async fn forward_requests<Req>(
    input: flume::Receiver<Result<Bytes, String>>,
    tx: flume::Sender<Bytes>,
) where
    Req: Message + DeserializeOwned + Default,
{
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Ok(chunk)) = input.recv_async().await {
        buf.extend_from_slice(&chunk);
        let mut used = 0;
        let mut objects = serde_json::Deserializer::from_slice(&buf).into_iter::<Req>();
        loop {
            match objects.next() {
                Some(Ok(req)) => {
                    used = objects.byte_offset();
                    if tx.send_async(frame(&req)).await.is_err() {
                        return;
                    }
                }
                // A partial object waits for more of the body.
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "gateway: a streamed request is not JSON");
                    return;
                }
                None => break,
            }
        }
        buf.drain(..used);
    }
}

/// A streaming answer: one `{"result":…}` line per message, an error line if the call failed.
fn stream_answers<Resp>(mut answers: Answers) -> Response<Body>
where
    Resp: Message + Serialize + Default + 'static,
{
    let (tx, rx) = flume::bounded::<Bytes>(STREAM_DEPTH);
    runtime::spawn_local(async move {
        loop {
            let line = match answers.next().await {
                Ok(Some(msg)) => match Resp::decode(msg) {
                    Ok(resp) => {
                        let mut line = b"{\"result\":".to_vec();
                        if serde_json::to_writer(&mut line, &resp).is_err() {
                            return;
                        }
                        line.extend_from_slice(b"}\n");
                        Bytes::from(line)
                    }
                    Err(e) => Failure {
                        code: 13,
                        message: e.to_string(),
                    }
                    .stream_line(),
                },
                Ok(None) => return,
                Err(f) => {
                    let _ = tx.send_async(f.stream_line()).await;
                    return;
                }
            };
            // The client went away: dropping `answers` cancels the call.
            if tx.send_async(line).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Body::stream(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
