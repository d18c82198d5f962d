//! The serving stack end to end: tonic services in `Routes`, hyper HTTP/2 on glommio streams, two
//! cores sharing one port with `SO_REUSEPORT`, called by a tonic client on tokio.
//!
//! The service is hand-written (`tonic::server::Grpc` + `ProstCodec` on a message defined here) so
//! that the test does not depend on the etcd protos.
#![cfg(feature = "server")]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use retcd_engine::runtime::{self, DEFAULT_IO_MEMORY};
use retcd_net::serve::{
    ListenAddr, Security, ServeOptions, bind, listeners, serve, serve_listeners,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{BoxFuture, Bytes, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

const CORES: usize = 2;
const MAX_RECV_BYTES: usize = 64 * 1024;
const CONNECTIONS: usize = 32;
const SEQUENTIAL_CALLS: usize = 5000;
const CONCURRENT_CALLS: usize = 256;
/// The bound on every wait of the test.
const WAIT: Duration = Duration::from_secs(20);

const SERVICE: &str = "retcd.test.Echo";
const ECHO: &str = "/retcd.test.Echo/Echo";

/// Request and reply: the payload comes back with the index of the core that served it.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoMsg {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
    #[prost(uint32, tag = "2")]
    core: u32,
}

/// The service, as tonic's code generator would write it.
#[derive(Clone)]
struct EchoServer {
    core: u32,
    max_decoding_message_size: usize,
}

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

/// The `Echo` method.
struct EchoMethod {
    core: u32,
}

impl UnaryService<EchoMsg> for EchoMethod {
    type Response = EchoMsg;
    type Future = Ready<Result<Response<EchoMsg>, Status>>;

    fn call(&mut self, request: Request<EchoMsg>) -> Self::Future {
        let payload = request.into_inner().payload;
        ready(Ok(Response::new(EchoMsg {
            payload,
            core: self.core,
        })))
    }
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let core = self.core;
        let limit = self.max_decoding_message_size;
        match req.uri().path() {
            ECHO => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<EchoMsg, EchoMsg>::default())
                    .max_decoding_message_size(limit);
                Ok(grpc.unary(EchoMethod { core }, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

fn routes(core: usize, max_recv_bytes: usize) -> Routes {
    Routes::new(EchoServer {
        core: core as u32,
        max_decoding_message_size: max_recv_bytes,
    })
}

async fn call(channel: &Channel, path: &'static str, payload: Vec<u8>) -> Result<EchoMsg, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let request = Request::new(EchoMsg {
        payload,
        core: u32::MAX,
    });
    let codec = ProstCodec::<EchoMsg, EchoMsg>::default();
    grpc.unary(request, PathAndQuery::from_static(path), codec)
        .await
        .map(Response::into_inner)
}

/// Connects to `addr`, retrying a bounded number of times.
async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut last = None;
    for _ in 0..100 {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {addr}: {last:?}");
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits for every task of `tasks`, failing on a panic of any.
async fn join_all(mut tasks: tokio::task::JoinSet<()>) {
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Tells the cores to stop (dropping `stop`) and waits until every one returned without a panic.
async fn stop_cores(stop: flume::Sender<()>, cores: runtime::Cores) {
    drop(stop);
    let joined = within(
        "cores stop",
        tokio::task::spawn_blocking(move || cores.join()),
    )
    .await;
    joined.unwrap().expect("cores ran without panics");
}

#[tokio::test]
async fn grpc_on_two_reuseport_cores() {
    // Port 0 is bound once for both cores, one socket each.
    let bound = bind(&[ListenAddr::plain(loopback0())], CORES, false).unwrap();
    let (ready_tx, ready_rx) = flume::unbounded::<(usize, SocketAddr)>();
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let cores = runtime::start_cores(CORES, DEFAULT_IO_MEMORY, true, move |core| {
        let bound = bound.clone();
        let (ready_tx, stop_rx) = (ready_tx.clone(), stop_rx.clone());
        async move {
            let (listener, _) = listeners(&bound, core).unwrap().pop().unwrap();
            ready_tx
                .send((core, listener.local_addr().unwrap()))
                .unwrap();
            let stop = async move {
                let _ = stop_rx.recv_async().await;
            };
            serve_listeners(
                "client",
                vec![(listener, Security::plain())],
                routes(core, MAX_RECV_BYTES),
                retcd_net::http::HttpApi::Peer,
                MAX_RECV_BYTES,
                stop,
            )
            .await;
        }
    })
    .expect("start cores");
    assert_eq!(cores.len(), CORES);

    let mut addrs = BTreeSet::new();
    for _ in 0..CORES {
        let (_core, addr) = within("cores ready", ready_rx.recv_async()).await.unwrap();
        addrs.insert(addr);
    }
    assert_eq!(addrs.len(), 1, "all cores listen on one address: {addrs:?}");
    let addr = *addrs.first().unwrap();

    // Many connections: the kernel spreads them over both cores.
    let mut channels = Vec::new();
    let mut served_by = BTreeSet::new();
    for i in 0..CONNECTIONS {
        let channel = within("connect", connect(addr)).await;
        let payload = format!("hello {i}").into_bytes();
        let reply = within("call", call(&channel, ECHO, payload.clone()))
            .await
            .unwrap();
        assert_eq!(reply.payload, payload);
        served_by.insert(reply.core);
        channels.push(channel);
    }
    assert_eq!(
        served_by,
        (0..CORES as u32).collect(),
        "every core served connections"
    );

    // Sequential unary calls on one connection (informative rate).
    let channel = channels[0].clone();
    let started = Instant::now();
    for i in 0..SEQUENTIAL_CALLS {
        let payload = (i as u64).to_le_bytes().to_vec();
        let reply = within("sequential call", call(&channel, ECHO, payload.clone()))
            .await
            .unwrap();
        assert_eq!(reply.payload, payload);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{SEQUENTIAL_CALLS} sequential unary calls in {elapsed:?}: {:.0} calls/s",
        SEQUENTIAL_CALLS as f64 / elapsed.as_secs_f64()
    );

    // Concurrent calls multiplexed over every connection.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT_CALLS {
        let channel = channels[i % channels.len()].clone();
        tasks.spawn(async move {
            let payload = vec![i as u8; 1000 + i];
            let reply = call(&channel, ECHO, payload.clone()).await.unwrap();
            assert_eq!(reply.payload, payload);
        });
    }
    within("concurrent calls", join_all(tasks)).await;

    // A message just under the limit passes; one over it is refused from its length prefix, as
    // grpc-go refuses it (`oversized_message_refused_like_grpc_go` checks the details).
    let under = vec![7u8; MAX_RECV_BYTES - 16];
    let reply = within("large call", call(&channel, ECHO, under.clone()))
        .await
        .unwrap();
    assert_eq!(reply.payload, under);
    let over = within(
        "oversized call",
        call(&channel, ECHO, vec![7u8; MAX_RECV_BYTES + 1]),
    )
    .await;
    assert_eq!(over.unwrap_err().code(), Code::ResourceExhausted);

    // An unknown method is unimplemented; the connection stays usable.
    let unknown = within(
        "unknown method",
        call(&channel, "/retcd.test.Echo/Nope", vec![]),
    )
    .await;
    assert_eq!(unknown.unwrap_err().code(), Code::Unimplemented);
    let unknown = within(
        "unknown service",
        call(&channel, "/retcd.test.Nope/Echo", vec![]),
    )
    .await;
    assert_eq!(unknown.unwrap_err().code(), Code::Unimplemented);
    assert!(
        within("call after errors", call(&channel, ECHO, vec![1]))
            .await
            .is_ok()
    );

    // Shut down with connections still open: the server's GOAWAY closes them and every core
    // returns well before the drain timeout.
    drop(channel);
    let started = Instant::now();
    stop_cores(stop_tx, cores).await;
    let stopped_in = started.elapsed();
    assert!(
        stopped_in < retcd_net::serve::DRAIN_TIMEOUT,
        "connections drained in {stopped_in:?}"
    );
    // The server is gone: new connections are refused.
    let refused = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err());
    drop(channels);
}

/// An echo request whose encoded message is `len` bytes long.
fn echo_of_len(len: usize) -> Vec<u8> {
    use prost::Message;
    let encoded = |n: usize| {
        EchoMsg {
            payload: vec![0; n],
            core: u32::MAX,
        }
        .encoded_len()
    };
    let mut n = len.saturating_sub(encoded(0));
    while encoded(n) > len {
        n -= 1;
    }
    assert_eq!(encoded(n), len, "an echo message of {len} bytes");
    vec![7; n]
}

#[tokio::test]
async fn oversized_message_refused_like_grpc_go() {
    let bound = bind(&[ListenAddr::plain(loopback0())], 1, false).unwrap();
    let addr = bound[0].addr;
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let cores = runtime::start_cores(1, DEFAULT_IO_MEMORY, true, move |_| {
        let (bound, stop_rx) = (bound.clone(), stop_rx.clone());
        async move {
            let listener = bound[0].listener(0).unwrap();
            let stop = async move {
                let _ = stop_rx.recv_async().await;
            };
            // tonic's own limit is higher, so that only the length-prefix check can refuse.
            serve_listeners(
                "client",
                vec![(listener, Security::plain())],
                routes(0, 2 * MAX_RECV_BYTES),
                retcd_net::http::HttpApi::Peer,
                MAX_RECV_BYTES,
                stop,
            )
            .await;
        }
    })
    .expect("start cores");
    let channel = within("connect", connect(addr)).await;

    // 10 bytes over the limit: grpc-go's status and message, from the length prefix.
    let over = within(
        "oversized call",
        call(&channel, ECHO, echo_of_len(MAX_RECV_BYTES + 10)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (over.code(), over.message()),
        (
            Code::ResourceExhausted,
            format!(
                "grpc: received message larger than max ({} vs. {MAX_RECV_BYTES})",
                MAX_RECV_BYTES + 10
            )
            .as_str()
        )
    );
    // One byte over is refused too; a message of exactly the limit passes.
    let over = within(
        "call 1 byte over",
        call(&channel, ECHO, echo_of_len(MAX_RECV_BYTES + 1)),
    )
    .await
    .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    let at = echo_of_len(MAX_RECV_BYTES);
    let reply = within("call at the limit", call(&channel, ECHO, at.clone()))
        .await
        .unwrap();
    assert_eq!(reply.payload, at);

    // The connection stays usable, also after more refused bytes than its flow-control window
    // (the unread request bodies must not keep their share of the window).
    let refusals = 2 * retcd_net::serve::INITIAL_CONNECTION_WINDOW as usize / MAX_RECV_BYTES;
    for _ in 0..refusals {
        let over = within(
            "repeated oversized call",
            call(&channel, ECHO, echo_of_len(MAX_RECV_BYTES + 10)),
        )
        .await
        .unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted);
    }
    // Concurrent refusals and calls on the same connection.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let channel = channel.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                let err = call(&channel, ECHO, echo_of_len(MAX_RECV_BYTES + 10))
                    .await
                    .unwrap_err();
                assert_eq!(err.code(), Code::ResourceExhausted);
            } else {
                let payload = vec![i as u8; 1000 * i];
                let reply = call(&channel, ECHO, payload.clone()).await.unwrap();
                assert_eq!(reply.payload, payload);
            }
        });
    }
    within("concurrent calls", join_all(tasks)).await;
    let reply = within(
        "call after refusals",
        call(&channel, ECHO, b"after".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(reply.payload, b"after");

    drop(channel);
    stop_cores(stop_tx, cores).await;
}

#[test]
fn bind_refuses_an_address_another_process_holds() {
    // Taken by a socket without SO_REUSEPORT (etcd's) or with it (another retcd, or ourselves):
    // refused, naming the address, unless sharing is asked for (--socket-reuse-port) with a
    // holder that allows it.
    let plain = std::net::TcpListener::bind(loopback0()).unwrap();
    let ours = bind(&[ListenAddr::plain(loopback0())], 2, false).unwrap();
    for addr in [plain.local_addr().unwrap(), ours[0].addr] {
        let err = bind(&[ListenAddr::plain(addr)], 2, false).expect_err("bind must fail");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
    let shared = bind(&[ListenAddr::plain(loopback0())], 2, true).unwrap();
    assert!(bind(&[ListenAddr::plain(shared[0].addr)], 2, false).is_err());
    assert!(bind(&[ListenAddr::plain(shared[0].addr)], 2, true).is_ok());
    assert!(bind(&[ListenAddr::plain(plain.local_addr().unwrap())], 1, true).is_err());
}

fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn serve_returns_after_shutdown() {
    // No connections: shutdown returns at once (nothing to drain).
    let mut listen = vec![ListenAddr::plain(loopback0())];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        listen.push(ListenAddr::plain("[::1]:0".parse().unwrap()));
    }
    let opts = ServeOptions {
        listen: bind(&listen, 1, false).unwrap(),
        max_recv_bytes: MAX_RECV_BYTES,
    };
    let started = Instant::now();
    runtime::block_on_local(serve(
        opts,
        0,
        routes(0, MAX_RECV_BYTES),
        retcd_net::http::HttpApi::Peer,
        async {},
    ))
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}
