//! Per-core gRPC serving: each client URL address is bound before the cores start, one
//! `SO_REUSEPORT` socket per core (the kernel spreads incoming connections over the cores, and
//! no other process may join: [`Bound`]), and every core serves gRPC
//! (tonic services combined in a [`tonic::service::Routes`]) over hyper's HTTP/2 server, directly
//! on glommio's TCP streams. A connection lives on the core that accepted it.
//!
//! How hyper runs on glommio:
//!
//! - I/O: [`HyperIo`] implements `hyper::rt::Read`/`Write` for a glommio `TcpStream`. Reads and
//!   (vectored) writes are non-blocking system calls straight into hyper's buffers; only when the
//!   socket would block does it defer to the stream's own `AsyncRead`/`AsyncWrite`, which arms
//!   glommio's io_uring readiness poll and wakes the task.
//! - Executor: [`LocalExec`] is hyper's `Executor`; it spawns hyper's per-stream tasks as
//!   detached tasks on the current core (`retcd_engine::runtime::spawn_local`). The futures need
//!   not be `Send`, but tonic handlers are `Send` anyway.
//! - Timer: none. hyper's `Timer`/`Sleep` must be `Send + Sync` and glommio's timer is not, so
//!   nothing that needs one is configured (no HTTP/2 keep-alive pings). The adaptive flow-control
//!   window needs only a clock, which hyper reads itself.
//!
//! gRPC is served over HTTP/2: with prior knowledge on plain addresses, after ALPN (`h2`) on TLS
//! ones. A connection whose first bytes are not the HTTP/2 preface is served as HTTP/1.1
//! ([`crate::http`]), as etcd's client port serves both.
//!
//! TLS ([`Security`]): an address is plain, TLS (rustls, the configuration from [`crate::tls`]),
//! or both, as etcd serves a host:port listed with both schemes (a first byte that opens a TLS
//! handshake record means TLS). The handshake runs on the accepting core within
//! [`TLS_HANDSHAKE_TIMEOUT`]; a failed one closes the connection and is logged at most once a
//! second per core. Every connection then goes through [`AuthorityFront`] on its way to hyper.
//!
//! Message size ([`ServeOptions::max_recv_bytes`]; etcd: `--max-request-bytes` + 512 KiB, the
//! gRPC overhead allowance): every request goes through [`GrpcLimit`], which refuses a first
//! message over the limit from its length prefix, with grpc-go's status and message, before the
//! routes are called (see [`crate::grpc_limit`]). Later messages of a client stream are checked
//! only by tonic, so callers must still build every generated server with
//! `.max_decoding_message_size(opts.max_recv_bytes)`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use hyper::rt::ReadBufCursor;
use hyper::server::conn::http2;
use retcd_engine::runtime;
use socket2::{Domain, Protocol, Socket, Type};
use tonic::service::Routes;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::authority::AuthorityFront;
use crate::grpc_limit::GrpcLimit;
use crate::http::HttpApi;
use crate::metrics::grpc::Metered;

/// Streams one client connection may have open at once by default (etcd's default is unlimited;
/// clients multiplex watches and concurrent requests over few connections, and this bounds what
/// one connection can hold); `--max-concurrent-streams` sets another ([`set_max_streams`]).
pub const MAX_CONCURRENT_STREAMS: u32 = 4096;
static MAX_STREAMS: AtomicU32 = AtomicU32::new(MAX_CONCURRENT_STREAMS);

/// How long an HTTP/1.1 client may take to send a request's headers before it is dropped (a
/// slowloris client holds a connection open by trickling them); [`set_header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
static HEADER_READ_TIMEOUT_MS: AtomicU64 = AtomicU64::new(30_000);
/// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout` (etcd's defaults: 2 h, 20 s).
static KEEPALIVE_INTERVAL_MS: AtomicU64 = AtomicU64::new(2 * 3600 * 1000);
static KEEPALIVE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(20_000);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The HTTP/1.1 header read timeout (at start; tests shorten it).
pub fn set_header_read_timeout(d: Duration) {
    HEADER_READ_TIMEOUT_MS.store(millis(d), Relaxed);
}

/// How often an idle HTTP/2 connection is pinged, and how long its answer may take before the
/// connection is closed (at start).
pub fn set_keepalive(interval: Duration, timeout: Duration) {
    KEEPALIVE_INTERVAL_MS.store(millis(interval), Relaxed);
    KEEPALIVE_TIMEOUT_MS.store(millis(timeout), Relaxed);
}

/// The ping interval of idle HTTP/2 connections; `None` for 0 (never, as etcd).
fn keepalive_interval() -> Option<Duration> {
    let ms = KEEPALIVE_INTERVAL_MS.load(Relaxed);
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// How long a ping's answer may take; 0 is etcd's "forever" (a year here).
fn keepalive_timeout() -> Duration {
    match KEEPALIVE_TIMEOUT_MS.load(Relaxed) {
        0 => Duration::from_secs(365 * 24 * 3600),
        ms => Duration::from_millis(ms),
    }
}

/// `--max-concurrent-streams` (at start, before any listener serves).
pub fn set_max_streams(n: u32) {
    MAX_STREAMS.store(n, Relaxed);
}
/// The HTTP/2 flow-control window of a stream: large enough for an etcd request of the default
/// maximum size (1.5 MiB) in one round trip. Fixed: hyper's adaptive window would start every
/// connection at the protocol's 64 KiB instead, and h2 sizes its budget of small buffered DATA
/// frames from the connection window — at 64 KiB a burst of ~130 small concurrent requests on one
/// connection (many clients multiplexed, as Kubernetes does) got the connection closed with
/// ENHANCE_YOUR_CALM.
pub const INITIAL_STREAM_WINDOW: u32 = 2 << 20;
/// The HTTP/2 flow-control window of a connection.
pub const INITIAL_CONNECTION_WINDOW: u32 = 8 << 20;
/// The listen backlog of every listening socket.
pub const LISTEN_BACKLOG: i32 = 4096;
/// After shutdown, how long [`serve`] waits for open connections to finish their streams.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest prefix of hyper's read buffer handed to glommio when a read must wait (glommio
/// needs an initialized buffer; the fast path reads into hyper's buffer as is).
const SLOW_READ_MAX: usize = 16 * 1024;
/// How long a TLS handshake may take before the connection is closed (etcd: 10 s).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A rejected connection is logged at most once per this interval per core (with the count of
/// those left out), so that a flood of bad handshakes cannot flood the log.
const REJECTED_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The most buffers one vectored write sends.
const MAX_IOVECS: usize = 64;
/// How long the accept loop pauses after a resource error (out of file descriptors, memory).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How a listening address speaks: plain HTTP/2, TLS, or both. etcd serves both on one
/// host:port listed as `http://` and `https://`; a connection whose first byte opens a TLS
/// handshake record is then TLS.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub plain: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// After the handshake, check the client certificate's SANs against the address it
    /// connects from (etcd's peer listeners, unless --experimental-peer-skip-client-san-verification).
    pub verify_client_san: bool,
}

impl Security {
    /// Plain HTTP/2 only.
    pub fn plain() -> Self {
        Security {
            plain: true,
            tls: None,
            verify_client_san: false,
        }
    }
}

/// One listening address and how it speaks.
#[derive(Clone, Debug)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub security: Security,
}

impl ListenAddr {
    /// `addr` speaking plain HTTP/2.
    pub fn plain(addr: SocketAddr) -> Self {
        ListenAddr {
            addr,
            security: Security::plain(),
        }
    }
}

/// What [`serve`] serves on.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The client URL addresses, bound for every core ([`bind`]).
    pub listen: Vec<Bound>,
    /// The largest gRPC message a service accepts, in bytes. The first message of every request
    /// is checked here ([`GrpcLimit`]); callers also pass it to every generated server's
    /// `.max_decoding_message_size`, which checks the later messages of client streams (see the
    /// module documentation).
    pub max_recv_bytes: usize,
}

/// An address's listening sockets, bound once for the whole process before any core serves: one
/// per core, in one `SO_REUSEPORT` group, so that the kernel spreads incoming connections over
/// the cores by hash and each core accepts on its own socket ([`Bound::listener`]).
///
/// `SO_REUSEPORT` would also let a second process of the same user join the group, and the
/// kernel would silently split the clients between the two (a stale member, or another member
/// started on the same port, answering half of the reads). [`bind`] therefore first binds the
/// address once without it: a port another process holds, with or without `SO_REUSEPORT`, is
/// refused with "address in use", as etcd refuses it; a second retcd finds ours taken the same
/// way. Only etcd's `--socket-reuse-port` asks for sharing.
#[derive(Clone, Debug)]
pub struct Bound {
    sockets: Arc<Vec<Socket>>,
    /// The address actually bound (the port chosen by the system for port 0).
    pub addr: SocketAddr,
    pub security: Security,
}

impl Bound {
    /// Core `core`'s listener: a duplicate of its own socket's descriptor.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor (one started by `retcd_engine::runtime`).
    pub fn listener(&self, core: usize) -> io::Result<TcpListener> {
        let fd = self.sockets[core % self.sockets.len()].try_clone()?;
        // SAFETY: the descriptor is a fresh duplicate of a bound, listening TCP socket; its
        // ownership moves to glommio, which closes it when the listener drops.
        Ok(unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) })
    }
}

/// Binds a listening TCP socket on `addr`, with `SO_REUSEADDR` (a restart is not refused while
/// old connections linger in TIME_WAIT) and `SO_REUSEPORT` when `reuse_port`; listens with
/// [`LISTEN_BACKLOG`]. An IPv6 address keeps the system's dual-stack default.
fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// How long [`bind`] waits for an address held by a process that has exited: the kernel
/// releases the listening sockets of a process's io_uring only once the ring's teardown runs,
/// milliseconds after the process is gone (measured: 3–17 ms after a SIGKILL on this machine).
/// Waiting is what lets a member restarted at once by a supervisor or a test bind its port.
const BIND_WAIT: Duration = Duration::from_secs(2);

/// A socket bound on `addr` without `SO_REUSEPORT`, retried while the address is in use for up to
/// [`BIND_WAIT`].
fn probe(addr: SocketAddr) -> io::Result<Socket> {
    let deadline = Instant::now() + BIND_WAIT;
    loop {
        match bind_socket(addr, false) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    Ok(socket
        .local_addr()?
        .as_socket()
        .expect("a TCP socket's address"))
}

/// Binds every address of `listen`, in order, for `cores` cores ([`Bound`]); `shared` is etcd's
/// `--socket-reuse-port` (other processes may bind the same address). An address that cannot be
/// bound is an error naming it.
pub fn bind(listen: &[ListenAddr], cores: usize, shared: bool) -> io::Result<Vec<Bound>> {
    assert!(cores > 0, "at least one core serves an address");
    listen
        .iter()
        .map(|l| {
            let named = |e: io::Error| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
            };
            let mut addr = l.addr;
            if !shared {
                // Closed at once: it only proves that nobody else holds the address (and
                // picks the port when 0 is asked for).
                let probe = probe(addr).map_err(named)?;
                addr = local_addr(&probe).map_err(named)?;
            }
            let mut sockets = Vec::with_capacity(cores);
            for _ in 0..cores {
                let socket = bind_socket(addr, true).map_err(named)?;
                // Port 0 in a shared bind: the others join the first one's port.
                addr = local_addr(&socket).map_err(named)?;
                sockets.push(socket);
            }
            Ok(Bound {
                sockets: Arc::new(sockets),
                addr,
                security: l.security.clone(),
            })
        })
        .collect()
}

/// Core `core`'s listeners on every address of `bound`.
pub fn listeners(bound: &[Bound], core: usize) -> io::Result<Vec<(TcpListener, Security)>> {
    bound
        .iter()
        .map(|b| Ok((b.listener(core)?, b.security.clone())))
        .collect()
}

/// Serves `routes` over gRPC on core `core`'s sockets of `opts` until `shutdown` completes, then
/// drains (see [`serve_listeners`]).
///
/// Call it on every core (e.g. in the per-core future given to
/// `retcd_engine::runtime::start_cores`); the kernel spreads connections over the cores.
pub async fn serve(
    opts: ServeOptions,
    core: usize,
    routes: Routes,
    http: HttpApi,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listeners = listeners(&opts.listen, core)?;
    serve_listeners(
        "client",
        listeners,
        routes,
        http,
        opts.max_recv_bytes,
        shutdown,
    )
    .await;
    Ok(())
}

/// Serves `routes` on already bound listeners until `shutdown` completes: each listener accepts
/// in its own task, each connection is served by its own task (an error on one connection is
/// logged and ends only that one). A request whose first message is longer than
/// `max_recv_bytes` is refused from its length prefix ([`GrpcLimit`]). `kind` (`client`,
/// `peer`) names the endpoint in logs, as etcd's "rejected connection on client endpoint".
///
/// On shutdown the listeners close, every connection is told to finish (HTTP/2 GOAWAY: the
/// streams in progress complete, new ones are refused), and this returns once all connections
/// have ended or after [`DRAIN_TIMEOUT`], whichever is first; connections still open then are
/// left to the executor.
pub async fn serve_listeners(
    kind: &'static str,
    listeners: Vec<(TcpListener, Security)>,
    routes: Routes,
    http: HttpApi,
    max_recv_bytes: usize,
    shutdown: impl Future<Output = ()>,
) {
    let service = Services {
        grpc: Metered::new(GrpcLimit::new(routes.prepare(), max_recv_bytes)),
        http,
    };
    let builder = Rc::new(http2_builder());
    // Dropping `stop_tx` tells every accept loop and connection to stop.
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    // Every accept loop and connection holds a clone of `live_tx`: when all are dropped, the
    // receiver reports disconnection.
    let (live_tx, live_rx) = flume::bounded::<()>(1);
    for (listener, security) in listeners {
        runtime::spawn_local(accept_loop(
            kind,
            listener,
            security,
            service.clone(),
            Rc::clone(&builder),
            stop_rx.clone(),
            live_tx.clone(),
        ));
    }
    drop(live_tx);
    shutdown.await;
    drop(stop_tx);
    let drained = futures_lite::future::or(
        async {
            let _ = live_rx.recv_async().await;
            true
        },
        async {
            runtime::sleep(DRAIN_TIMEOUT).await;
            false
        },
    )
    .await;
    if !drained {
        tracing::info!(timeout = ?DRAIN_TIMEOUT, "gRPC connections still open after the drain timeout");
    }
}

/// What a connection's HTTP/2 requests are answered with.
type GrpcAnswer = std::pin::Pin<
    Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>>>,
>;

/// What a listener's connections are served: gRPC over HTTP/2, the rest over HTTP/1.1.
#[derive(Clone)]
struct Services {
    grpc: Metered,
    http: HttpApi,
}

/// hyper's HTTP/2 server settings for gRPC.
fn http2_builder() -> http2::Builder<LocalExec> {
    let mut builder = http2::Builder::new(LocalExec);
    builder
        .max_concurrent_streams(MAX_STREAMS.load(Relaxed))
        .timer(crate::timer::HyperTimer)
        .keep_alive_interval(keepalive_interval())
        .keep_alive_timeout(keepalive_timeout())
        .initial_stream_window_size(INITIAL_STREAM_WINDOW)
        .initial_connection_window_size(INITIAL_CONNECTION_WINDOW)
        .auto_date_header(false);
    builder
}

/// Accepts connections on `listener` until `stop` disconnects, serving each in its own task.
async fn accept_loop(
    kind: &'static str,
    listener: TcpListener,
    security: Security,
    service: Services,
    builder: Rc<http2::Builder<LocalExec>>,
    stop: flume::Receiver<()>,
    live: flume::Sender<()>,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv_async().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                let e = io::Error::from(e);
                tracing::warn!(?local, error = %e, "accept failed");
                if is_resource_error(&e) {
                    runtime::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        runtime::spawn_local(serve_connection(
            kind,
            stream,
            security.clone(),
            service.clone(),
            Rc::clone(&builder),
            stop.clone(),
            live.clone(),
        ));
    }
}

/// Whether an accept error is a shortage that persists for a while (retrying at once would spin).
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves one connection until the client closes it, it fails, or `stop` disconnects (then
/// gracefully). A TLS connection first completes its handshake, within
/// [`TLS_HANDSHAKE_TIMEOUT`]; a failed one is logged (rate-limited) and closed. `_live` is
/// dropped when the connection ends.
async fn serve_connection(
    kind: &'static str,
    stream: TcpStream,
    security: Security,
    service: Services,
    builder: Rc<http2::Builder<LocalExec>>,
    stop: flume::Receiver<()>,
    _live: flume::Sender<()>,
) {
    let peer = stream.peer_addr().ok();
    let verify_client_san = security.verify_client_san;
    let tls = match (security.tls, security.plain) {
        (None, _) => None,
        (Some(config), false) => Some(config),
        (Some(config), true) => {
            let mut first = [0u8; 1];
            let peeked = within(TLS_HANDSHAKE_TIMEOUT, &stop, stream.peek(&mut first)).await;
            match peeked {
                Some(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => Some(config),
                Some(Ok(_)) => None,
                _ => return,
            }
        }
    };
    let io = HyperIo::new(stream);
    let Some(config) = tls else {
        return serve_http(AuthorityFront::new(io), service, builder, &stop, peer).await;
    };
    let accept = futures_rustls::TlsAcceptor::from(config).accept(io);
    match within(TLS_HANDSHAKE_TIMEOUT, &stop, accept).await {
        Some(Ok(tls)) => {
            if verify_client_san {
                let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                if let (Some(leaf), Some(peer)) = (leaf, peer)
                    && let Err(e) = crate::tls::check_client_san(leaf, peer.ip())
                {
                    return log_rejected(kind, Some(peer), &e);
                }
            }
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::common_name);
            let io = AuthorityFront::new(TlsIo(tls));
            let service = Services {
                grpc: service.grpc.with_common_name(cn),
                http: service.http,
            };
            serve_http(io, service, builder, &stop, peer).await;
        }
        Some(Err(e)) => log_rejected(kind, peer, &e.to_string()),
        None => log_rejected(kind, peer, "TLS handshake timed out"),
    }
}

/// Serves a connection as HTTP/2 (gRPC) when its first bytes are the HTTP/2 preface, else as
/// HTTP/1.1 ([`crate::http`]). A client that sends nothing within [`TLS_HANDSHAKE_TIMEOUT`] is
/// dropped.
async fn serve_http<IO>(
    mut io: AuthorityFront<IO>,
    service: Services,
    builder: Rc<http2::Builder<LocalExec>>,
    stop: &flume::Receiver<()>,
    peer: Option<SocketAddr>,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    match within(TLS_HANDSHAKE_TIMEOUT, stop, io.is_http2()).await {
        Some(Ok(true)) if !service.http.serves_grpc() => {
            tracing::debug!(
                ?peer,
                "HTTP/2 on a listener that serves HTTP/1.1 only: closed"
            )
        }
        Some(Ok(true)) => {
            // gRPC by its content type; any other HTTP/2 request (curl or a probe that
            // negotiated h2 by ALPN) gets the HTTP endpoints, as etcd's TLS client port
            // routes them.
            let conn = builder.serve_connection(
                io,
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let grpc = req
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    if grpc {
                        return hyper::service::Service::call(&service.grpc, req);
                    }
                    let (api, grpc) = (service.http.clone(), service.grpc.clone());
                    let answer: GrpcAnswer = Box::pin(async move {
                        let r = crate::http::handle(api, grpc, req).await?;
                        Ok(r.map(tonic::body::Body::new))
                    });
                    answer
                }),
            );
            drive(conn, |c| c.graceful_shutdown(), stop, peer).await;
        }
        Some(Ok(false)) => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(crate::timer::HyperTimer)
                .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS.load(Relaxed)))
                .serve_connection(
                    io,
                    hyper::service::service_fn(move |req| {
                        crate::http::handle(service.http.clone(), service.grpc.clone(), req)
                    }),
                );
            drive(conn, |c| c.graceful_shutdown(), stop, peer).await;
        }
        Some(Err(e)) => {
            tracing::debug!(?peer, error = %e, "connection failed before its first request")
        }
        None => tracing::debug!(?peer, "connection sent nothing"),
    }
}

/// `fut`'s output, or `None` once `timeout` passed or `stop` disconnected.
async fn within<T>(
    timeout: Duration,
    stop: &flume::Receiver<()>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(
        async { Some(fut.await) },
        futures_lite::future::or(
            async {
                runtime::sleep(timeout).await;
                None
            },
            async {
                let _ = stop.recv_async().await;
                None
            },
        ),
    )
    .await
}

/// Runs a connection to its end (with `graceful` once `stop` disconnects).
async fn drive<C>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    stop: &flume::Receiver<()>,
    peer: Option<SocketAddr>,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = pin!(conn);
    let finished = futures_lite::future::or(async { Some(conn.as_mut().await) }, async {
        let _ = stop.recv_async().await;
        None
    })
    .await;
    let result = match finished {
        Some(result) => result,
        None => {
            graceful(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        if is_io_error(&e) {
            tracing::debug!(?peer, error = %e, "gRPC connection ended with an I/O error");
        } else {
            let cause = std::error::Error::source(&e).map(|c| c.to_string());
            tracing::info!(?peer, error = %e, ?cause, "gRPC connection failed");
        }
    }
}

thread_local! {
    /// When this core last logged a rejected connection, and how many it left out since.
    static REJECTED: std::cell::Cell<(Option<Instant>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// Logs a connection refused at the TLS layer as etcd does ("rejected connection on client
/// endpoint"), at most once per [`REJECTED_LOG_INTERVAL`] per core.
fn log_rejected(kind: &str, peer: Option<SocketAddr>, error: &str) {
    REJECTED.with(|cell| {
        let (last, left_out) = cell.get();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < REJECTED_LOG_INTERVAL) {
            cell.set((last, left_out + 1));
            return;
        }
        cell.set((Some(now), 0));
        let remote = peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::warn!(
            remote_addr = %remote,
            error,
            more_rejected_not_logged = left_out,
            "rejected connection on {kind} endpoint"
        );
    });
}

/// Whether `e` comes from the socket (a client gone) rather than the protocol.
fn is_io_error(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.is_incomplete_message() || e.is_closed()
}

/// hyper's executor on a glommio core: spawns each future as a detached task on the current core.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        runtime::spawn_local(fut);
    }
}

/// A glommio TCP stream as hyper I/O (`hyper::rt::Read` + `hyper::rt::Write`).
///
/// Reads and writes first try the non-blocking system call directly on hyper's buffers (vectored
/// writes in one `sendmsg`); when the socket would block, the stream's own
/// `AsyncRead`/`AsyncWrite` arms the io_uring readiness poll and registers the waker.
#[derive(Debug)]
pub struct HyperIo {
    stream: TcpStream,
}

impl HyperIo {
    /// Wraps `stream`.
    pub fn new(stream: TcpStream) -> Self {
        HyperIo { stream }
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// One non-blocking `sendmsg` of `bufs`; `None` if the socket would block.
    fn try_send(&self, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        let bufs = &bufs[..bufs.len().min(MAX_IOVECS)];
        // SAFETY: msghdr is plain data; all-zero is a valid empty message.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads them.
        msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: `msg` points at `bufs.len()` valid iovecs that outlive the call.
        nonblocking(|| unsafe {
            libc::sendmsg(self.fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        })
    }

    /// Waits for writability through glommio, writing (part of) `buf` if the socket became
    /// writable in the meantime.
    fn poll_write_slow(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
}

impl HyperIo {
    /// One non-blocking `recv` into `dst`; `None` if the socket would block.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for `len` bytes of writes.
    unsafe fn try_recv(&self, dst: *mut u8, len: usize) -> Option<io::Result<usize>> {
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes of writes.
        nonblocking(|| unsafe { libc::recv(self.fd(), dst.cast(), len, libc::MSG_DONTWAIT) })
    }
}

/// Runs a non-blocking socket call until it is not interrupted: its byte count, `None` if it
/// would block, or its error.
fn nonblocking(mut call: impl FnMut() -> isize) -> Option<io::Result<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Some(Ok(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(err)),
        }
    }
}

/// The first `max` bytes of a hyper read buffer, zeroed so that they can be lent as `&mut [u8]`
/// to a reader that needs an initialized slice (glommio's wait, the TLS stream).
fn initialized_prefix(dst: &mut [MaybeUninit<u8>], max: usize) -> &mut [u8] {
    let len = dst.len().min(max);
    let dst = &mut dst[..len];
    // SAFETY: zeroing makes all `len` bytes initialized, so the cast is sound.
    unsafe {
        std::ptr::write_bytes(dst.as_mut_ptr(), 0, len);
        &mut *(dst as *mut [MaybeUninit<u8>] as *mut [u8])
    }
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: recv only writes bytes into the buffer; nothing is de-initialized.
        let dst = unsafe { buf.as_mut() };
        if dst.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // SAFETY: `dst` is valid for `dst.len()` bytes of writes.
        let n = match unsafe { this.try_recv(dst.as_mut_ptr().cast(), dst.len()) } {
            Some(result) => result?,
            // Nothing to read yet: let glommio wait for readability. It retries the read itself,
            // so it needs an initialized slice.
            None => ready!(
                Pin::new(&mut this.stream).poll_read(cx, initialized_prefix(dst, SLOW_READ_MAX))
            )?,
        };
        // SAFETY: the first `n` bytes were written by recv.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write_vectored(self, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes are not buffered.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// The same socket for the TLS layer (futures-rustls reads and writes through these).
impl AsyncRead for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        match unsafe { this.try_recv(buf.as_mut_ptr(), buf.len()) } {
            Some(result) => Poll::Ready(result),
            None => Pin::new(&mut this.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.try_send(&[IoSlice::new(buf)]) {
            Some(result) => Poll::Ready(result),
            None => this.poll_write_slow(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.try_send(bufs) {
            Some(result) => Poll::Ready(result),
            None => {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                this.poll_write_slow(cx, first)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// A TLS stream (futures-rustls over [`HyperIo`]) as hyper I/O.
pub struct TlsIo<T>(pub T);

impl<T: AsyncRead + Unpin> hyper::rt::Read for TlsIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the reader only writes bytes into the buffer; nothing is de-initialized.
        let dst = unsafe { buf.as_mut() };
        if dst.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let n = ready!(
            Pin::new(&mut self.get_mut().0).poll_read(cx, initialized_prefix(dst, SLOW_READ_MAX))
        )?;
        // SAFETY: `initialized_prefix` initialized at least the first `n` bytes.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for TlsIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }
}
