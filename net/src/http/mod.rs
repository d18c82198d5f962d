//! The HTTP/1.1 side of the member's ports: what a client that does not speak HTTP/2 gets, on a
//! plain address (its first bytes are not the HTTP/2 preface) or a TLS one (it did not
//! negotiate `h2` by ALPN), as etcd's ports serve HTTP/1.1 next to gRPC.
//!
//! - the client port: `/health` (etcd 3.5), `/livez` and `/readyz` (etcd 3.6, [`health`]),
//!   `/version`, `/metrics` ([`crate::metrics`]), the JSON gateway under `/v3/` ([`gateway`]),
//!   `/debug/pprof/` with `--enable-pprof` ([`pprof`]);
//! - the peer port: `/version` (etcd's peer handler serves it too).
//!
//! Any other path answers 404 with the body of Go's `http.NotFound`, as etcd does for a path it
//! does not serve. Responses are written as Go's `net/http` writes etcd's: the same status,
//! body, `Content-Type` and `X-Content-Type-Options`.
//!
//! Called by [`crate::serve`] for each such connection; holds no state of its own.

mod body;
mod gateway;
mod health;
pub mod pprof;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

pub use body::Body;

use crate::context::Ctx;
use crate::metrics::grpc::Metered;

/// `--enable-grpc-gateway` (set at start).
pub static GATEWAY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// etcd's `etcd_server_health_success` and `etcd_server_health_failures` (`/health` answers).
pub static HEALTH_SUCCESS: retcd_engine::metrics::Counter = retcd_engine::metrics::Counter::new();
pub static HEALTH_FAILURES: retcd_engine::metrics::Counter = retcd_engine::metrics::Counter::new();

/// What one listener serves: over HTTP/1.1, and whether gRPC too.
#[derive(Clone)]
pub enum HttpApi {
    /// A client URL: gRPC and every HTTP endpoint.
    Client(Arc<Ctx>),
    /// A client URL while `--listen-client-http-urls` is set: gRPC only (every path 404).
    ClientGrpcOnly,
    /// A `--listen-client-http-urls` URL: every HTTP endpoint, no gRPC.
    ClientHttpOnly(Arc<Ctx>),
    /// A `--listen-metrics-urls` URL: `/metrics` and the health endpoints, no gRPC.
    Metrics(Arc<Ctx>),
    /// A peer URL: gRPC (the peer service) and `/version`.
    Peer,
}

impl HttpApi {
    /// Whether the listener serves gRPC (HTTP/2) at all.
    pub fn serves_grpc(&self) -> bool {
        matches!(
            self,
            HttpApi::Client(_) | HttpApi::ClientGrpcOnly | HttpApi::Peer
        )
    }
}

/// Answers one HTTP/1.1 request; `grpc` is the connection's gRPC service, which the JSON
/// gateway calls.
pub async fn handle<B>(
    api: HttpApi,
    grpc: Metered,
    req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    let gateway = GATEWAY.load(std::sync::atomic::Ordering::Relaxed);
    let (ctx, all) = match &api {
        HttpApi::Client(ctx) | HttpApi::ClientHttpOnly(ctx) => (Some(ctx), true),
        HttpApi::Metrics(ctx) => (Some(ctx), false),
        HttpApi::ClientGrpcOnly | HttpApi::Peer => (None, false),
    };
    let mut response = match (ctx, path) {
        (_, "/version") if !matches!(api, HttpApi::ClientGrpcOnly) => version(&parts.method),
        (Some(ctx), "/health") => health::health(ctx, &parts.method, &query).await,
        (Some(ctx), "/metrics") => metrics(ctx, &parts.method),
        (Some(_), p) if all && pprof::serves(p) => pprof::answer(p, &query).await,
        (Some(_), p) if all && gateway && gateway::route(p).is_some() => {
            let route = gateway::route(p).expect("checked");
            gateway::call(route, &grpc, &parts, body).await
        }
        // grpc-gateway's own answer to a path under its prefixes that it does not serve.
        (Some(_), p) if all && gateway && gateway::is_gateway_path(p) => {
            error(StatusCode::NOT_FOUND, "Not Found")
        }
        (Some(ctx), p) => match health::Probe::of(p) {
            Some(probe) => probe.answer(ctx, &parts.method, &query).await,
            None => not_found(),
        },
        (None, _) => not_found(),
    };
    if all {
        cors(&mut response);
    }
    Ok(response)
}

/// etcd's client port answers every HTTP request with these (its default `--cors=*`).
fn cors(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

/// A core renders `/metrics` at most once per this long; scrapes in between get the same body.
/// A render takes ~2 ms of the core that serves the scrape: a scrape storm then costs a core at
/// most a tenth of its time, whatever its rate, and memory one body per core.
const RENDER_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

thread_local! {
    /// This core's last rendering and when it was made.
    static LAST_RENDER: std::cell::RefCell<Option<(std::time::Instant, bytes::Bytes)>> =
        const { std::cell::RefCell::new(None) };
}

/// `/metrics` (Prometheus' text format; any method, as promhttp answers).
fn metrics(ctx: &Ctx, _method: &Method) -> Response<Body> {
    let now = std::time::Instant::now();
    let body = LAST_RENDER.with_borrow_mut(|last| match last {
        Some((at, body)) if now.duration_since(*at) < RENDER_EVERY => body.clone(),
        _ => {
            let body = bytes::Bytes::from(crate::metrics::render(ctx));
            *last = Some((now, body.clone()));
            body
        }
    });
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

/// etcd's `/version`: the server's and the cluster's version.
fn version(method: &Method) -> Response<Body> {
    if method != Method::GET {
        return method_not_allowed();
    }
    let v = crate::maintenance::ETCD_API_VERSION;
    let mut r = Response::new(Body::from(format!(
        "{{\"etcdserver\":\"{v}\",\"etcdcluster\":\"{v}\"}}"
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Go's `http.NotFound`.
fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "404 page not found")
}

/// etcd's answer to a method other than GET (with `Allow: GET`).
fn method_not_allowed() -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    r
}

/// Go's `http.Error`: the message and a newline, as plain text, not to be sniffed.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = nosniff(text(format!("{message}\n")));
    *r.status_mut() = status;
    r
}

/// A 200 of plain text (what Go's content sniffing makes of etcd's JSON health bodies too).
fn text(body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `r` with `X-Content-Type-Options: nosniff`.
fn nosniff(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A request's query parameters, decoded as Go's `url.ParseQuery` decodes them.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        )
    }

    /// The first value of `key` (Go's `Query().Get`).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present, with any value (Go's `_, found := Query()[key]`).
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every non-empty value of `key` (etcd's `getQuerySet`).
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Percent-decoding (with `+` as a space in a query, as Go's `url.ParseQuery`; not in a
/// `grpc-message`); a malformed escape is kept as written.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: Option<&u8>) -> Option<u8> {
    (*c? as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_as_go_parses_it() {
        let q = Query::parse("exclude=NOSPACE&exclude=&exclude=CORRUPT&verbose&x=a%2Fb+c&bad=%zz");
        assert_eq!(q.all("exclude"), ["NOSPACE", "CORRUPT"]);
        assert!(q.has("verbose"));
        assert_eq!(q.get("verbose"), Some(""));
        assert_eq!(q.get("x"), Some("a/b c"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("none"), None);
    }
}
