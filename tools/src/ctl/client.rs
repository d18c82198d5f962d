//! The connection retcdctl makes: the first endpoint that answers (etcdctl's balancer tries
//! them in turn), plain or TLS (`https://` endpoints, or `--insecure-transport=false`, or
//! certificates given), the auth token of `--user`, and etcdctl's timeouts: `--dial-timeout`
//! for the connection, `--command-timeout` for each call.

use std::time::Duration;

use retcd_net::pb::etcdserverpb::{self as pb, AuthenticateRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::flags::Parsed;
use crate::output::Failure;

/// The largest response retcdctl takes: clientv3's default (math.MaxInt32), where tonic's own
/// default of 4 MiB would refuse a large range or member list.
pub const MAX_RECV: usize = i32::MAX as usize;

/// A connected client: the channel and what every request carries.
pub struct Client {
    pub channel: Channel,
    token: Option<String>,
    /// `--command-timeout` for each call; none for the commands etcdctl runs without one.
    pub command_timeout: Option<Duration>,
    /// clientv3's name of the connection in its log lines: `endpoint://client-<uuid>/<host:port>`.
    target: String,
}

/// A gRPC client of one of etcd's services on this connection, taking responses up to
/// [`MAX_RECV`].
macro_rules! service {
    ($name:ident, $client:ty) => {
        pub fn $name(&self) -> $client {
            <$client>::new(self.channel.clone()).max_decoding_message_size(MAX_RECV)
        }
    };
}

type Grpc = Channel;

impl Client {
    service!(kv, pb::kv_client::KvClient<Grpc>);
    service!(lease, pb::lease_client::LeaseClient<Grpc>);
    service!(cluster, pb::cluster_client::ClusterClient<Grpc>);
    service!(maintenance, pb::maintenance_client::MaintenanceClient<Grpc>);
    service!(auth, pb::auth_client::AuthClient<Grpc>);
    service!(watch, pb::watch_client::WatchClient<Grpc>);
    service!(lock, retcd_net::pb::v3lockpb::lock_client::LockClient<Grpc>);
    service!(
        election,
        retcd_net::pb::v3electionpb::election_client::ElectionClient<Grpc>
    );

    /// `msg` as a request carrying the auth token, if any.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = self
            .token
            .as_ref()
            .and_then(|t| MetadataValue::try_from(t).ok())
        {
            r.metadata_mut().insert("token", t);
        }
        if let Some(t) = self.command_timeout {
            r.set_timeout(t);
        }
        r
    }

    /// Runs one call within `--command-timeout` (etcdctl: "context deadline exceeded").
    pub async fn call<T, F>(&self, f: F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let r = match self.command_timeout {
            Some(t) => tokio::time::timeout(t, f).await,
            None => Ok(f.await),
        };
        match r {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => {
                self.log_retry(&s);
                Err(status_text(&s))
            }
            Err(_) => Err("context deadline exceeded".into()),
        }
    }

    /// The warning clientv3's retry interceptor logs (zap JSON on stderr) when a call fails.
    fn log_retry(&self, s: &tonic::Status) {
        log_retry(&self.target, code_name(s.code()), s.message());
    }
}

fn log_retry(target: &str, code: &str, message: &str) {
    let error = format!("rpc error: code = {code} desc = {message}");
    let json = |v: &str| serde_json::to_string(v).unwrap_or_default();
    eprintln!(
        "{{\"level\":\"warn\",\"ts\":{},\"caller\":\"clientv3/retry_interceptor.go:62\",\
         \"msg\":\"retrying of unary invoker failed\",\"target\":{},\"attempt\":0,\
         \"error\":{}}}",
        json(&retcd::logging::zap_now()),
        json(target),
        json(&error)
    );
}

/// A lease's keep-alive stream as clientv3 drives it: the first renewal is queued before the
/// call (the server answers the stream's headers with its first response), each later one goes a
/// third of the way through the TTL the last response granted (at least 500 ms apart).
pub struct KeepAlive {
    id: i64,
    tx: tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlive {
    pub async fn open(c: &Client, id: i64) -> Result<KeepAlive, String> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
        let responses = c
            .lease()
            .lease_keep_alive(c.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .map_err(|s| status_text(&s))?
            .into_inner();
        Ok(KeepAlive { id, tx, responses })
    }

    /// The next response; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<pb::LeaseKeepAliveResponse>, tonic::Status> {
        self.responses.message().await
    }

    /// Waits until the next renewal is due after a response granting `ttl` seconds, and sends
    /// it; `false` when the stream is gone.
    pub async fn renew_after(&mut self, ttl: i64) -> bool {
        let third = Duration::from_millis((ttl.max(0) as u64 * 1000 / 3).max(500));
        tokio::time::sleep(third).await;
        self.tx
            .send(pb::LeaseKeepAliveRequest { id: self.id })
            .await
            .is_ok()
    }
}

/// A random (version 4) UUID, as clientv3 names its connections.
fn uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// How etcdctl 3.4 prints a gRPC error: an etcd error by its message (clientv3 turns those into
/// its typed errors), anything else as grpc-go's status string.
pub fn status_text(s: &tonic::Status) -> String {
    let m = s.message();
    if m.starts_with("etcdserver: ") || m.starts_with("mvcc: ") || m.starts_with("auth: ") {
        return m.to_string();
    }
    // The call's deadline (`--command-timeout`), whichever side noticed it first: grpc-go's
    // DeadlineExceeded, or tonic's own "Timeout expired".
    if s.code() == tonic::Code::DeadlineExceeded
        || (s.code() == tonic::Code::Cancelled && m == "Timeout expired")
    {
        return "context deadline exceeded".into();
    }
    format!("rpc error: code = {} desc = {m}", code_name(s.code()))
}

/// grpc-go's name of a status code.
fn code_name(c: tonic::Code) -> &'static str {
    retcd_net::metrics::grpc::CODES
        .get(c as usize)
        .copied()
        .unwrap_or("Unknown")
}

/// Connects as the global flags say: the first endpoint that answers. `Err`: what etcdctl prints
/// after "Error: " and its exit code (a failed `--user` login is ExitBadConnection).
pub async fn connect(g: &Parsed) -> Result<Client, Failure> {
    if !g.str("discovery-srv").is_empty() {
        return Err(Failure::error(
            "--discovery-srv (DNS SRV discovery) is not supported by retcdctl: give the \
             members' client URLs with --endpoints",
        ));
    }
    let mut last = Failure::error("context deadline exceeded");
    for ep in g.list("endpoints") {
        match connect_endpoint(g, &ep).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A client of `ep` alone (etcdctl's per-endpoint calls: status, hashkv, defrag, health).
pub async fn connect_endpoint(g: &Parsed, ep: &str) -> Result<Client, Failure> {
    // etcdctl trims each endpoint (`--endpoints="a, b"`).
    let ep = ep.trim();
    let dial_timeout = g.duration("dial-timeout");
    let command_timeout = g.duration("command-timeout");
    let secure_flags =
        !g.bool("insecure-transport") || !g.str("cacert").is_empty() || !g.str("cert").is_empty();
    let tls = ep.starts_with("https://") || (secure_flags && !ep.starts_with("http://"));
    let skip_verify = tls && g.bool("insecure-skip-tls-verify");
    // With skip-verify the connector does the TLS, so tonic must see a plain URI.
    let scheme = if tls && !skip_verify { "https" } else { "http" };
    let uri = match ep.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{ep}"),
    };
    let mut e = Endpoint::from_shared(uri)
        .map_err(Failure::error)?
        .connect_timeout(dial_timeout)
        .tcp_nodelay(true);
    if tls && !skip_verify {
        e = e
            .tls_config(tls_config(g).map_err(Failure::error)?)
            .map_err(Failure::error)?;
    }
    let connecting = async {
        if skip_verify {
            let cfg = super::skip_verify::config(g.str("cert"), g.str("key"))?;
            let connector = super::skip_verify::Connector(std::sync::Arc::new(cfg));
            e.connect_with_connector(connector)
                .await
                .map_err(|e| error_chain(&e))
        } else {
            e.connect().await.map_err(|e| error_chain(&e))
        }
    };
    match tokio::time::timeout(dial_timeout, connecting).await {
        Ok(Ok(channel)) => {
            let host = host_of(ep);
            let mut client = Client {
                channel,
                token: None,
                command_timeout: Some(command_timeout),
                target: format!("endpoint://client-{}/{host}", uuid()),
            };
            if !g.str("user").is_empty() {
                let token = authenticate(&client, g).await.map_err(|e| Failure {
                    code: crate::output::exit::BAD_CONNECTION,
                    message: e,
                })?;
                client.token = Some(token);
            }
            Ok(client)
        }
        // clientv3 dials in the background: a call fails at its deadline, and the dial's
        // reason appears only in the retry warning.
        Ok(Err(e)) => {
            let target = format!("endpoint://client-{}/{}", uuid(), host_of(ep));
            log_retry(
                &target,
                "DeadlineExceeded",
                &format!("latest balancer error: {e}"),
            );
            Err(Failure::error("context deadline exceeded"))
        }
        Err(_) => Err(Failure::error("context deadline exceeded")),
    }
}

/// An error with its causes (tonic's own text is only "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// An endpoint without its scheme.
fn host_of(ep: &str) -> &str {
    ep.split_once("://").map_or(ep, |(_, h)| h)
}

fn tls_config(g: &Parsed) -> Result<ClientTlsConfig, String> {
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("open {p}: {e}"));
    let mut cfg = ClientTlsConfig::new().with_enabled_roots();
    if !g.str("cacert").is_empty() {
        cfg = cfg.ca_certificate(Certificate::from_pem(read(g.str("cacert"))?));
    }
    match (g.str("cert"), g.str("key")) {
        ("", "") => {}
        (c, k) if !c.is_empty() && !k.is_empty() => {
            cfg = cfg.identity(Identity::from_pem(read(c)?, read(k)?))
        }
        _ => return Err("tls: both --cert and --key must be given".into()),
    }
    Ok(cfg)
}

/// speakeasy's Ask, as etcdctl prompts: the prompt on stdout, the echo turned off while a
/// terminal is read (`stty -echo`, as speakeasy does), one line.
pub fn ask_password(prompt: &str) -> Result<String, String> {
    use std::io::{IsTerminal, Write};
    let mut out = std::io::stdout();
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    let tty = std::io::stdin().is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    if tty {
        stty("-echo");
    }
    let mut line = String::new();
    let r = std::io::stdin().read_line(&mut line);
    if tty {
        stty("echo");
        let _ = out.write_all(b"\n");
    }
    r.map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `--user name[:password]` (with `--password`, the user flag is the name alone; without
/// either, etcdctl asks for it).
async fn authenticate(client: &Client, g: &Parsed) -> Result<String, String> {
    let user = g.str("user");
    let (name, password) = if !g.str("password").is_empty() {
        (user.to_string(), g.str("password").to_string())
    } else {
        match user.split_once(':') {
            Some((n, p)) => (n.to_string(), p.to_string()),
            // Asked once per run, however many endpoints are dialed.
            None => {
                static ASKED: std::sync::OnceLock<Result<String, String>> =
                    std::sync::OnceLock::new();
                let pw = ASKED.get_or_init(|| ask_password("Password: ")).clone()?;
                (user.to_string(), pw)
            }
        }
    };
    let mut auth = client.auth();
    let r = client
        .call(auth.authenticate(client.request(AuthenticateRequest { name, password })))
        .await?;
    Ok(r.token)
}
