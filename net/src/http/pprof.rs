//! `/debug/pprof/` on the client URLs with `--enable-pprof` (or `--log-level=debug`), as etcd
//! registers Go's `net/http/pprof` handlers: the same paths, headers, error texts and
//! parameters for the profiles retcd has (`profile`, `heap`, `cmdline`); the others answer
//! Go's "Unknown profile". Profiles come from [`crate::profile`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::{Body, Query, nosniff, text};
use crate::profile::{self, cpu};

/// Whether `/debug/pprof/` is served (set at start).
pub static ENABLED: AtomicBool = AtomicBool::new(false);

pub const PREFIX: &str = "/debug/pprof";

/// Whether `path` is one of the pprof paths (when enabled).
pub(super) fn serves(path: &str) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && (path == PREFIX
            || path
                .strip_prefix(PREFIX)
                .is_some_and(|p| p.starts_with('/')))
}

pub(super) async fn answer(path: &str, query: &Query) -> Response<Body> {
    match path.strip_prefix(PREFIX).unwrap_or("") {
        // Go's ServeMux: a subtree pattern's root without its slash is redirected.
        "" => {
            let mut r = Response::new(Body::from(format!(
                "<a href=\"{PREFIX}/\">Moved Permanently</a>.\n\n"
            )));
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            let h = r.headers_mut();
            h.insert(header::LOCATION, HeaderValue::from_static("/debug/pprof/"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/" => index(),
        "/profile" => cpu_profile(query).await,
        "/heap" => heap(query).await,
        "/cmdline" => nosniff(text(std::env::args().collect::<Vec<_>>().join("\0"))),
        _ => serve_error(StatusCode::NOT_FOUND, "Unknown profile"),
    }
}

fn index() -> Response<Body> {
    let body = format!(
        "<html>\n<head>\n<title>{PREFIX}/</title>\n</head>\n<body>\n{PREFIX}/<br>\n<p>\n\
         Profiles in Go's pprof format (read them with <code>go tool pprof URL</code>):<br>\n\
         <a href=\"cmdline\">cmdline</a>: the command line of this process<br>\n\
         <a href=\"heap?debug=1\">heap</a>: live memory by allocation stack, sampled every \
         {} bytes allocated on average<br>\n\
         <a href=\"profile\">profile</a>: CPU profile of every thread; <code>seconds</code> \
         (default {}) says how long<br>\n</p>\n</body>\n</html>\n",
        profile::heap::rate(),
        profile::DEFAULT_SECONDS
    );
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Go's `pprof.Profile`: `seconds` (default 30) of CPU profile, then the profile.
async fn cpu_profile(query: &Query) -> Response<Body> {
    let seconds = query
        .get("seconds")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0)
        .map_or(profile::DEFAULT_SECONDS, |s| s as u64);
    let duration = Duration::from_secs(seconds).min(profile::MAX_DURATION);
    let session = match cpu::Session::start() {
        Ok(s) => s,
        Err(e) => {
            return serve_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Could not enable CPU profiling: {e}"),
            );
        }
    };
    // The session stops if the client goes away meanwhile (this future is dropped with it).
    retcd_engine::runtime::sleep(duration).await;
    let encoded = retcd_engine::runtime::on_own_thread("pprof", move || {
        profile::encode_cpu(&session.finish())
    })
    .await;
    profile_response(encoded, "profile")
}

/// Go's heap handler: `debug=N` (N ≠ 0) gives text, else the profile.
async fn heap(query: &Query) -> Response<Body> {
    let debug = query
        .get("debug")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(0);
    if debug != 0 {
        return match retcd_engine::runtime::on_own_thread("pprof", profile::heap_text).await {
            Ok(t) => nosniff(text(t)),
            Err(e) => serve_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
    }
    let encoded = retcd_engine::runtime::on_own_thread("pprof", profile::encode_heap).await;
    profile_response(encoded, "heap")
}

fn profile_response(encoded: Result<Vec<u8>, String>, name: &str) -> Response<Body> {
    let bytes = match encoded {
        Ok(b) => b,
        Err(e) => return serve_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let mut r = nosniff(Response::new(Body::from(bytes)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Go's pprof `serveError`: `http.Error`'s answer, marked as pprof's.
fn serve_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = super::error(status, message);
    r.headers_mut()
        .insert("x-go-pprof", HeaderValue::from_static("1"));
    r
}
