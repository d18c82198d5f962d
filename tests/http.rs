//! Issue 14: the HTTP/1.1 endpoints of the client port, with curl, against real etcd and retcd.
//!
//! Debian's etcd is 3.4, whose `/health` body has no `reason` and which has no `/livez` or
//! `/readyz`; retcd answers as etcd 3.5 (`/health`) and 3.6 (`/livez`, `/readyz`) do. So the
//! status, headers and error bodies are compared with etcd's, and the 3.5/3.6 bodies are
//! asserted as those versions' handlers write them (server/etcdserver/api/etcdhttp).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Kind, Server};

/// An HTTP answer as curl saw it.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// The headers this test compares (lower-case names), in this order.
    content_type: Option<String>,
    nosniff: bool,
    allow: Option<String>,
    body: String,
}

/// `curl -s -i [args] URL`.
fn curl(url: &str, args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (Debian: curl)");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut a = Answer {
        status,
        content_type: None,
        nosniff: false,
        allow: None,
        body: body.to_string(),
    };
    for line in lines {
        let (name, value) = line.split_once(':').expect("header");
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => a.content_type = Some(value),
            "x-content-type-options" => a.nosniff = value == "nosniff",
            "allow" => a.allow = Some(value),
            _ => {}
        }
    }
    a
}

fn get(s: &Server, path: &str) -> Answer {
    curl(&format!("{}{path}", s.client_url()), &[])
}

fn post(s: &Server, path: &str) -> Answer {
    curl(&format!("{}{path}", s.client_url()), &["-X", "POST"])
}

const TEXT: &str = "text/plain; charset=utf-8";

#[test]
fn health_version_and_unknown_paths_answer_as_etcd() {
    let (etcd, retcd) = support::start_both(&[]);

    // /health: 200, plain text (Go sniffs etcd's JSON as text).
    let e = get(&etcd, "/health");
    assert_eq!((e.status, e.body.as_str()), (200, r#"{"health":"true"}"#));
    let r = get(&retcd, "/health");
    assert_eq!(
        r,
        Answer {
            body: r#"{"health":"true","reason":""}"#.to_string(),
            ..e
        }
    );
    // ?serializable=true and an excluded alarm change nothing on a healthy member.
    let r = get(&retcd, "/health?serializable=true&exclude=NOSPACE");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );

    // Anything but GET: 405 with Allow.
    let e = post(&etcd, "/health");
    assert_eq!(e.status, 405);
    assert_eq!(post(&retcd, "/health"), e);
    assert_eq!(post(&retcd, "/version"), post(&etcd, "/version"));

    // Unknown paths: Go's NotFound.
    let e = get(&etcd, "/no/such/path");
    assert_eq!((e.status, e.body.as_str()), (404, "404 page not found\n"));
    assert_eq!(get(&retcd, "/no/such/path"), e);

    // /version: application/json, both versions.
    let e = get(&etcd, "/version");
    let r = get(&retcd, "/version");
    assert_eq!((r.status, &r.content_type), (e.status, &e.content_type));
    assert_eq!(r.body, r#"{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}"#);
    let keys = |b: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(b).expect("json");
        v.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(keys(&r.body), keys(&e.body));
}

#[test]
fn livez_and_readyz_answer_as_etcd_36() {
    let retcd = Server::start_in_tempdir(Kind::Retcd);
    let ok = Answer {
        status: 200,
        content_type: Some(TEXT.to_string()),
        nosniff: true,
        allow: None,
        body: "ok\n".to_string(),
    };
    for path in [
        "/livez",
        "/readyz",
        "/livez/serializable_read",
        "/readyz/linearizable_read",
        "/readyz/non_learner",
        "/readyz/data_corruption",
        "/readyz?exclude=linearizable_read&exclude=no_such_check",
    ] {
        assert_eq!(get(&retcd, path), ok, "{path}");
    }
    assert_eq!(
        get(&retcd, "/readyz?verbose").body,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n"
    );
    assert_eq!(
        get(&retcd, "/readyz?verbose&exclude=non_learner").body,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
    );
    assert_eq!(
        get(&retcd, "/livez?verbose").body,
        "[+]serializable_read ok\nok\n"
    );
    // A check that the probe does not have, and a sub-path of /health: not served.
    assert_eq!(get(&retcd, "/livez/linearizable_read").status, 404);
    assert_eq!(get(&retcd, "/livez/").status, 404);
    assert_eq!(get(&retcd, "/health/x").status, 404);
    let p = post(&retcd, "/readyz");
    assert_eq!((p.status, p.allow.as_deref()), (405, Some("GET")));
}

/// Both stores with a small quota, filled until NOSPACE: /health fails with the alarm, unless
/// it is excluded.
#[test]
fn health_reports_the_nospace_alarm() {
    let (etcd, retcd) = support::start_both(&["--quota-backend-bytes", "2000000"]);
    for s in [&etcd, &retcd] {
        let big = "x".repeat(64 << 10);
        let mut raised = false;
        for i in 0..100 {
            let out = s.etcdctl(&["put", &format!("big/{i:03}"), &big]);
            if !out.success() {
                assert!(out.stderr.contains("database space exceeded"), "{out:?}");
                raised = true;
                break;
            }
        }
        assert!(
            raised,
            "{:?}: a 2 MB quota must refuse 100 puts of 64 KiB",
            s.kind()
        );
    }
    let e = get(&etcd, "/health");
    assert_eq!(
        (e.status, e.body.as_str()),
        (503, "{\"health\":\"false\"}\n")
    );
    let r = get(&retcd, "/health");
    assert_eq!(
        r,
        Answer {
            body: "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n".to_string(),
            ..e
        }
    );
    let r = get(&retcd, "/health?exclude=NOSPACE");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    // /readyz checks only for corruption.
    assert_eq!(get(&retcd, "/readyz").status, 200);
}

/// A member of a 3-member cluster whose peers are gone: no leader, so /health and /readyz fail
/// (as soon as the member notices, within an election timeout), while the serializable checks
/// pass.
#[test]
fn health_without_a_leader() {
    let mut c = support::cluster::Cluster::start(Kind::Retcd, 3, &[]);
    c.members[1].stop();
    c.members[2].stop();
    let s = &c.members[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        // (Until the member notices, a linearizable read times out: "RANGE ERROR:...".)
        let r = get(s, "/health");
        if r.body.contains("RAFT NO LEADER") || Instant::now() >= deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            503,
            "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
        )
    );
    let r = get(s, "/health?serializable=true");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    assert_eq!(get(s, "/livez").status, 200);
    let r = get(s, "/readyz/linearizable_read");
    assert_eq!(r.status, 503);
    assert!(
        r.body
            .starts_with("[-]linearizable_read failed: etcdserver: "),
        "{r:?}"
    );
}

/// `--listen-metrics-urls`: `/metrics` and `/health` there, no gRPC and no gateway (etcd and
/// retcd); `--listen-client-http-urls` (etcd 3.5, retcd only here): the HTTP endpoints move
/// there and the client URLs serve gRPC only.
#[test]
fn metrics_and_http_only_urls() {
    let ports = support::free_ports(2);
    let metrics = format!("http://127.0.0.1:{}", ports[0]);
    let http_only = format!("http://127.0.0.1:{}", ports[1]);
    for kind in [Kind::Etcd, Kind::Retcd] {
        let mut args = vec!["--listen-metrics-urls", metrics.as_str()];
        if kind == Kind::Retcd {
            args.extend(["--listen-client-http-urls", http_only.as_str()]);
        }
        let s = Server::start_in_tempdir_with_args(kind, &args);
        let m = curl(&format!("{metrics}/metrics"), &[]);
        assert_eq!(m.status, 200, "{kind:?}");
        assert_eq!(
            m.content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(m.body.contains("\netcd_server_has_leader 1\n"), "{kind:?}");
        assert_eq!(
            curl(&format!("{metrics}/health"), &[]).status,
            200,
            "{kind:?}"
        );
        let gw = curl(
            &format!("{metrics}/v3/kv/range"),
            &["-X", "POST", "-d", "{}"],
        );
        assert_eq!(gw.status, 404, "{kind:?}: no gateway on the metrics URL");
        let grpc = support::cluster::etcdctl_at(&metrics, &["get", "x", "--dial-timeout=2s"]);
        assert!(!grpc.success(), "{kind:?}: no gRPC on the metrics URL");
        if kind == Kind::Retcd {
            let h = curl(&format!("{http_only}/health"), &[]);
            assert_eq!(h.status, 200);
            let put = curl(
                &format!("{http_only}/v3/kv/put"),
                &["-X", "POST", "-d", r#"{"key":"eA==","value":"eQ=="}"#],
            );
            assert_eq!(put.status, 200, "{put:?}");
            assert!(!curl(&format!("{http_only}/metrics"), &[]).body.is_empty());
            // The client URL: gRPC only.
            assert_eq!(get(&s, "/health").status, 404);
            assert!(s.etcdctl(&["get", "x"]).stdout.contains('y'));
            let grpc = support::cluster::etcdctl_at(&http_only, &["get", "x", "--dial-timeout=2s"]);
            assert!(!grpc.success(), "no gRPC on the HTTP-only URL");
        }
    }
}

/// `--enable-grpc-gateway=false`: no `/v3/` paths (Go's 404), the rest as before.
#[test]
fn the_gateway_can_be_turned_off() {
    let (etcd, retcd) = support::start_both(&["--enable-grpc-gateway=false"]);
    for s in [&etcd, &retcd] {
        let r = curl(
            &format!("{}/v3/kv/range", s.client_url()),
            &["-X", "POST", "-d", r#"{"key":"Zm9v"}"#],
        );
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "404 page not found\n"),
            "{:?}",
            s.kind()
        );
        assert_eq!(get(s, "/health").status, 200);
    }
}

/// A client that trickles its headers (slowloris) is dropped after the header read timeout
/// (shortened here by retcd's test knob), and other clients are served meanwhile.
#[test]
fn a_client_that_trickles_its_headers_is_dropped() {
    use std::io::{Read, Write};
    let s = Server::start_in_tempdir_with_env(
        Kind::Retcd,
        &[],
        &[("RETCD_HTTP_HEADER_TIMEOUT_MS", "500")],
    );
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", s.client_port())).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(get(&s, "/health").status, 200, "others are served");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let ended = slow.read_to_end(&mut answer);
    assert!(ended.is_ok(), "the server closed the connection: {ended:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// `--grpc-keepalive-interval`: an idle HTTP/2 connection gets PING frames.
#[test]
fn idle_http2_connections_are_pinged() {
    use std::io::{Read, Write};
    let s = Server::start_in_tempdir_with_args(
        Kind::Retcd,
        &[
            "--grpc-keepalive-interval=200ms",
            "--grpc-keepalive-timeout=5s",
        ],
    );
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.client_port())).unwrap();
    // The client preface and an empty SETTINGS frame.
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        c.read_exact(&mut head).expect("a frame");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).expect("its payload");
        let (kind, flags) = (head[3], head[4]);
        frames.push(kind);
        if kind == 4 && flags & 1 == 0 {
            // ACK the server's SETTINGS.
            c.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).unwrap();
        }
        if kind == 6 && flags & 1 == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no PING, frames {frames:?}");
    }
}
