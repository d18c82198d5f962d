//! Connections to the store under test: gRPC channels (plain or TLS), the auth token, and leader
//! targeting — what etcd's benchmark does with its global flags (`--endpoints`, `--conns`,
//! `--cacert/--cert/--key`, `--user`, `--target-leader`, `--dial-timeout`).
//!
//! Invariants: every connection is one HTTP/2 connection to one endpoint (conn i goes to endpoint
//! i mod n, or to the leader with `target_leader`); clients are assigned to connections round
//! robin, as etcd's benchmark does (`clients[i] = conns[i % conns]`). Nothing here knows server
//! internals: only etcd's wire API.

use std::future::Future;
use std::io::{BufRead, Write as _};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use retcd_net::pb::etcdserverpb::{
    AuthenticateRequest, StatusRequest, auth_client::AuthClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// etcd's largest response is bounded by its max request size plus framing; ranges over many
/// keys can be far larger, so the client accepts what the server sends.
const MAX_MESSAGE: usize = usize::MAX;

/// What the global flags say about reaching the store.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub endpoints: Vec<String>,
    pub tls: TlsOptions,
    /// `name` or `name:password`; a missing password is asked for on the terminal.
    pub user: Option<String>,
    pub dial_timeout: Option<Duration>,
    pub target_leader: bool,
    /// Plain-text endpoints through hyper's HTTP/2 handle driven directly ([`Transport::Direct`]:
    /// cheaper per request, but a broken connection stays broken): what the load commands use.
    /// Otherwise tonic's Channel, which reconnects (tests that restart members rely on it).
    pub direct: bool,
}

/// etcd's client TLS flags.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.cacert.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("bad endpoint {0:?}: {1}")]
    BadEndpoint(String, String),
    #[error("bad tls config: {0}")]
    Tls(String),
    #[error("dial error: {0}: {1}")]
    Dial(String, String),
    #[error("bad user information: {0}")]
    User(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("no leader found among the endpoints {0:?}")]
    NoLeader(Vec<String>),
}

/// Adds the auth token (etcd's `token` metadata) to every request when there is one.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("token", t.clone());
        }
        Ok(req)
    }
}

/// The service stack every client handle sends through.
pub type Svc = InterceptedService<Transport, Token>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a connection reaches the server: tonic's `Channel` for TLS, or for a plain-text endpoint
/// hyper's HTTP/2 handle driven directly, so that a request goes from its client's task to the
/// connection without the hop through the Channel's worker task (the generator's own cost is
/// what caps any result on a small machine, issue 16 step 2).
#[derive(Clone)]
pub enum Transport {
    Channel(Channel),
    Direct(hyper::client::conn::http2::SendRequest<tonic::body::Body>),
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Channel(c) => c.poll_ready(cx).map_err(Into::into),
            Transport::Direct(s) => s.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Transport::Channel(c) => {
                let f = c.call(req);
                Box::pin(async move { Ok(f.await?) })
            }
            Transport::Direct(s) => {
                let f = s.send_request(req);
                Box::pin(async move { Ok(f.await?.map(tonic::body::Body::new)) })
            }
        }
    }
}

/// One gRPC connection; cheap to clone (clones share the HTTP/2 connection).
#[derive(Clone)]
pub struct Conn {
    pub endpoint: String,
    transport: Transport,
    /// Scheme and authority of the requests (a Channel adds them itself; hyper sends what the
    /// request says).
    origin: http::Uri,
    token: Token,
}

impl Conn {
    fn svc(&self) -> Svc {
        InterceptedService::new(self.transport.clone(), self.token.clone())
    }
    pub fn kv(&self) -> KvClient<Svc> {
        KvClient::with_origin(self.svc(), self.origin.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn watch(&self) -> WatchClient<Svc> {
        WatchClient::with_origin(self.svc(), self.origin.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn lease(&self) -> LeaseClient<Svc> {
        LeaseClient::with_origin(self.svc(), self.origin.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn maintenance(&self) -> MaintenanceClient<Svc> {
        MaintenanceClient::with_origin(self.svc(), self.origin.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn auth(&self) -> AuthClient<Svc> {
        AuthClient::with_origin(self.svc(), self.origin.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
}

/// `127.0.0.1:2379`, `http://…` or `https://…` (etcd's benchmark takes all three).
fn uri(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

fn endpoint(ep: &str, opts: &ConnectOptions) -> Result<Endpoint, ConnectError> {
    let tls = opts.tls.enabled() || ep.starts_with("https://");
    let bad = |e: &dyn std::fmt::Display| ConnectError::BadEndpoint(ep.to_string(), e.to_string());
    let mut e = Endpoint::from_shared(uri(ep, tls))
        .map_err(|e| bad(&e))?
        .tcp_nodelay(true)
        // Many clients share one connection (etcd's default is 1 conn for all clients): the
        // channel's request queue must not be what limits them.
        .buffer_size(64 * 1024)
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(4 << 20));
    if let Some(t) = opts.dial_timeout {
        e = e.connect_timeout(t);
    }
    if tls {
        if opts.tls.insecure_skip_verify {
            return Err(ConnectError::Tls(
                "--insecure-skip-tls-verify is not supported: pass the server's CA with --cacert"
                    .into(),
            ));
        }
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| ConnectError::Tls(format!("{}: {e}", p.display())))
        };
        let mut cfg = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &opts.tls.cacert {
            cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&opts.tls.cert, &opts.tls.key) {
            (Some(c), Some(k)) => cfg = cfg.identity(Identity::from_pem(read(c)?, read(k)?)),
            (None, None) => {}
            _ => return Err(ConnectError::Tls("--cert and --key go together".into())),
        }
        e = e
            .tls_config(cfg)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
    }
    Ok(e)
}

async fn dial(ep: &str, opts: &ConnectOptions, token: Token) -> Result<Conn, ConnectError> {
    let e = endpoint(ep, opts)?;
    let origin = e.uri().clone();
    let dial_err = |e: &dyn std::error::Error| ConnectError::Dial(ep.to_string(), error_chain(e));
    let transport = if opts.direct && origin.scheme_str() == Some("http") {
        Transport::Direct(
            dial_direct(&origin, opts.dial_timeout)
                .await
                .map_err(|e| dial_err(&*e))?,
        )
    } else {
        Transport::Channel(e.connect().await.map_err(|e| dial_err(&e))?)
    };
    Ok(Conn {
        endpoint: ep.to_string(),
        transport,
        origin,
        token,
    })
}

/// A plain-text HTTP/2 connection to `origin`, with the Channel's settings (no Nagle, 8 MiB
/// connection and 4 MiB stream windows) and its writes gathered ([`crate::coalesce`]); its
/// connection task runs on the runtime until the server or every handle goes away.
async fn dial_direct(
    origin: &http::Uri,
    timeout: Option<Duration>,
) -> Result<hyper::client::conn::http2::SendRequest<tonic::body::Body>, BoxError> {
    let host = origin.host().ok_or("no host")?;
    // As a Channel does: http without a port is port 80.
    let port = origin.port_u16().unwrap_or(80);
    let connecting = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port));
    let tcp = match timeout {
        Some(t) => tokio::time::timeout(t, connecting)
            .await
            .map_err(|_| "timed out")??,
        None => connecting.await?,
    };
    tcp.set_nodelay(true)?;
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_connection_window_size(8 << 20)
            .initial_stream_window_size(4 << 20)
            .handshake(hyper_util::rt::TokioIo::new(
                crate::coalesce::Coalesce::new(tcp),
            ))
            .await?;
    tokio::spawn(async move {
        // Ends with the connection; a broken one fails the requests that use it.
        let _ = conn.await;
    });
    Ok(send)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut last = s.clone();
    let mut src = e.source();
    while let Some(c) = src {
        // Wrappers often repeat their source's message; say each thing once.
        let m = c.to_string();
        if m != last {
            s.push_str(": ");
            s.push_str(&m);
        }
        last = m;
        src = c.source();
    }
    s
}

fn credentials(user: &str) -> Result<(String, String), ConnectError> {
    if let Some((name, password)) = user.split_once(':') {
        return Ok((name.to_string(), password.to_string()));
    }
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ConnectError::User(format!("{user} {e}")))?;
    Ok((
        user.to_string(),
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

/// The endpoint whose member is the leader (etcd's `--target-leader`).
async fn leader(opts: &ConnectOptions) -> Result<String, ConnectError> {
    for ep in &opts.endpoints {
        let Ok(conn) = dial(ep, opts, Token(None)).await else {
            continue;
        };
        if let Ok(s) = conn.maintenance().status(StatusRequest {}).await {
            let s = s.into_inner();
            if s.header.is_some_and(|h| h.member_id == s.leader) {
                return Ok(ep.clone());
            }
        }
    }
    Err(ConnectError::NoLeader(opts.endpoints.clone()))
}

/// Opens `conns` connections (authenticated once when `--user` is given).
pub async fn connect(opts: &ConnectOptions, conns: usize) -> Result<Vec<Conn>, ConnectError> {
    if opts.endpoints.is_empty() {
        return Err(ConnectError::NoEndpoints);
    }
    let endpoints = if opts.target_leader {
        vec![leader(opts).await?]
    } else {
        opts.endpoints.clone()
    };
    let token = match &opts.user {
        None => Token(None),
        Some(user) => {
            let (name, password) = credentials(user)?;
            let conn = dial(&endpoints[0], opts, Token(None)).await?;
            let resp = conn
                .auth()
                .authenticate(AuthenticateRequest { name, password })
                .await
                .map_err(|s| ConnectError::Auth(status_text(&s)))?;
            let t = MetadataValue::try_from(resp.into_inner().token)
                .map_err(|e| ConnectError::Auth(e.to_string()))?;
            Token(Some(t))
        }
    };
    let mut out = Vec::with_capacity(conns.max(1));
    for i in 0..conns.max(1) {
        out.push(dial(&endpoints[i % endpoints.len()], opts, token.clone()).await?);
    }
    Ok(out)
}

/// A gRPC error as grpc-go prints it (what etcd's benchmark shows in its error distribution).
pub fn status_text(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}
