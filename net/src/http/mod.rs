//! The HTTP/1.1 side of the client port: what a client that does not speak HTTP/2 gets, on a
//! plain address (its first bytes are not the HTTP/2 preface) or a TLS one (it did not
//! negotiate `h2` by ALPN), as etcd's client port serves HTTP/1.1 next to gRPC. etcd's HTTP
//! endpoints (/health, /version, /metrics, the /v3 gateway) belong here; until they exist every
//! path answers 404 with the body of Go's `http.NotFound`, as etcd does for a path it does not
//! serve.
//!
//! Called by [`crate::serve`] for each such connection; stateless.

use std::convert::Infallible;

use http::{Request, Response, StatusCode};

/// Answers one HTTP/1.1 request.
pub async fn handle<B>(_req: Request<B>) -> Result<Response<String>, Infallible> {
    let mut response = Response::new(String::from("404 page not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
