//! Issue 14: the JSON gateway (`POST /v3/...`) with curl, against real etcd and retcd side by
//! side: the same requests give the same JSON, the member and cluster ids (and lease TTLs that
//! tick) aside. Both stores start at revision 1, so revisions compare as they are.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Kind, Server};

/// How long a streamed line may take.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// `curl -X POST -d body URL/path` (with `headers`): the HTTP status and the body.
fn post(s: &Server, path: &str, body: &str, headers: &[&str]) -> (u16, String) {
    use std::io::Write;
    let mut cmd = Command::new("curl");
    // The body on stdin: it may be larger than an argument can be.
    cmd.args([
        "-s",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
    ])
    .args(["--data-binary", "@-"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let mut child = cmd
        .arg(format!("{}{path}", s.client_url()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(body.as_bytes()).expect("body");
    drop(stdin);
    let out = child.wait_with_output().expect("curl");
    assert!(out.status.success(), "curl {path}: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

/// The JSON with the ids that differ between two stores masked.
fn masked(json: &str) -> Value {
    let mut v: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    mask(&mut v);
    v
}

fn mask(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "cluster_id" | "member_id" | "leader" | "ID" if x.is_string() => {
                        *x = Value::String("<id>".into())
                    }
                    _ => mask(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// One answer of each store to the same request.
struct Pair<'a> {
    etcd: &'a Server,
    retcd: &'a Server,
}

impl Pair<'_> {
    /// Posts to both and asserts the same status and (masked) JSON; returns retcd's.
    fn same(&self, path: &str, body: &str) -> Value {
        self.same_with(path, body, &[], &[])
    }

    fn same_with(
        &self,
        path: &str,
        body: &str,
        etcd_headers: &[&str],
        retcd_headers: &[&str],
    ) -> Value {
        let (es, eb) = post(self.etcd, path, body, etcd_headers);
        let (rs, rb) = post(self.retcd, path, body, retcd_headers);
        assert_eq!(rs, es, "{path} {body}: status (etcd said {eb})");
        let (e, r) = (masked(&eb), masked(&rb));
        assert_eq!(r, e, "{path} {body}");
        r
    }
}

#[test]
fn kv_lease_lock_and_errors_answer_as_etcds_gateway() {
    let (etcd, retcd) = support::start_both(&[]);
    let p = Pair {
        etcd: &etcd,
        retcd: &retcd,
    };
    // "foo" = Zm9v, "bar" = YmFy, "baz" = YmF6, "fop" = Zm9w.
    let put = p.same("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    assert_eq!(put["header"]["revision"], "2");
    p.same(
        "/v3beta/kv/put",
        r#"{"key":"Zm9vMQ==","value":"YmF6","prev_kv":true}"#,
    );
    p.same(
        "/v3/kv/put",
        r#"{"key":"Zm9vMQ==","value":"YmFy","prev_kv":true}"#,
    );
    let got = p.same("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w"}"#);
    assert_eq!(got["count"], "2");
    p.same(
        "/v3/kv/range",
        r#"{"key":"Zm9v","keys_only":true,"limit":1}"#,
    );
    p.same(
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"MOD","count_only":true}"#,
    );
    p.same(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],
            "success":[{"request_put":{"key":"Zm9v","value":"YmF6"}},{"request_range":{"key":"Zm9v"}}],
            "failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    );
    p.same(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],
            "failure":[{"request_delete_range":{"key":"Zm9vMQ==","prev_kv":true}}]}"#,
    );
    p.same("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#);
    p.same("/v3/kv/compaction", r#"{"revision":"3"}"#);

    // Errors: grpc-gateway's body and HTTP status for the gRPC code.
    let e = p.same("/v3/kv/range", "{}");
    assert_eq!(e["code"], 3);
    p.same("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#);
    p.same(
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmFy","lease":"99"}"#,
    );
    p.same("/v3/kv/range", r#"{"key":"Zm9v","revision":"1000"}"#);

    // Leases (TTL of the time-to-live ticks; compared apart).
    p.same("/v3/lease/grant", r#"{"TTL":"60","ID":"1000"}"#);
    p.same("/v3/lease/grant", r#"{"TTL":"60","ID":"1000"}"#);
    p.same(
        "/v3/kv/put",
        r#"{"key":"bGVhc2Vk","value":"eA==","lease":"1000"}"#,
    );
    let ttl = |s: &Server| {
        let (code, body) = post(
            s,
            "/v3/lease/timetolive",
            r#"{"ID":"1000","keys":true}"#,
            &[],
        );
        assert_eq!(code, 200, "{body}");
        let mut v = masked(&body);
        let t: i64 = v["TTL"].as_str().expect("TTL").parse().expect("number");
        assert!((55..=60).contains(&t), "{body}");
        v["TTL"] = Value::Null;
        v
    };
    assert_eq!(ttl(&retcd), ttl(&etcd));
    p.same("/v3/lease/leases", "");
    p.same("/v3/kv/lease/revoke", r#"{"ID":"1000"}"#);
    p.same("/v3/lease/revoke", r#"{"ID":"1000"}"#);
    p.same("/v3/kv/range", r#"{"key":"bGVhc2Vk"}"#);

    // Lock and election.
    p.same("/v3/lease/grant", r#"{"TTL":"60","ID":"2000"}"#);
    let lock = p.same("/v3/lock/lock", r#"{"name":"TA==","lease":"2000"}"#);
    assert_eq!(lock["key"], "TC83ZDA="); // "L/7d0"
    p.same("/v3/lock/unlock", r#"{"key":"TC83ZDA="}"#);
    let won = p.same(
        "/v3/election/campaign",
        r#"{"name":"RQ==","lease":"2000","value":"djE="}"#,
    );
    p.same("/v3/election/leader", r#"{"name":"RQ=="}"#);
    let leader = won["leader"].to_string().replace("\"<id>\"", "\"2000\"");
    p.same(
        "/v3/election/proclaim",
        &format!(r#"{{"leader":{leader},"value":"djI="}}"#),
    );
    p.same("/v3/election/resign", &format!(r#"{{"leader":{leader}}}"#));

    // Cluster and maintenance: the same fields.
    let keys =
        |v: &Value| -> Vec<String> { v.as_object().expect("object").keys().cloned().collect() };
    let (_, e) = post(&etcd, "/v3/cluster/member/list", "", &[]);
    let (_, r) = post(&retcd, "/v3/cluster/member/list", "", &[]);
    let (e, r) = (masked(&e), masked(&r));
    assert_eq!(keys(&r["members"][0]), keys(&e["members"][0]));
    let (_, e) = post(&etcd, "/v3/maintenance/status", "", &[]);
    let (_, r) = post(&retcd, "/v3/maintenance/status", "", &[]);
    let mut want = keys(&masked(&e));
    // etcd 3.5's field, which 3.4 lacks.
    want.push("dbSizeQuota".to_string());
    let mut got = keys(&masked(&r));
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // Not a gateway path, not POST.
    for path in ["/v3alpha/kv/range", "/v3/kv/nothing"] {
        assert_eq!(
            post(&retcd, path, "{}", &[]),
            post(&etcd, path, "{}", &[]),
            "{path}"
        );
    }
}

#[test]
fn auth_tokens_go_in_the_authorization_header() {
    let (etcd, retcd) = support::start_both(&[]);
    let p = Pair {
        etcd: &etcd,
        retcd: &retcd,
    };
    p.same("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#);
    p.same("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#);
    p.same("/v3/auth/role/add", r#"{"name":"reader"}"#);
    p.same(
        "/v3/auth/role/grant",
        r#"{"name":"reader","perm":{"permType":"READ","key":"YQ==","range_end":"Yg=="}}"#,
    );
    p.same("/v3/auth/user/add", r#"{"name":"u","password":"pw"}"#);
    p.same("/v3/auth/user/grant", r#"{"user":"u","role":"reader"}"#);
    p.same("/v3/auth/enable", "");
    // Without a token.
    p.same("/v3/kv/range", r#"{"key":"YQ=="}"#);
    let token = |s: &Server, user: &str| -> String {
        let (code, body) = post(
            s,
            "/v3/auth/authenticate",
            &format!(r#"{{"name":"{user}","password":"pw"}}"#),
            &[],
        );
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        format!("Authorization: {}", v["token"].as_str().expect("token"))
    };
    let (et, rt) = (token(&etcd, "u"), token(&retcd, "u"));
    p.same_with("/v3/kv/range", r#"{"key":"YQ=="}"#, &[&et], &[&rt]);
    p.same_with(
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"eA=="}"#,
        &[&et],
        &[&rt],
    );
    p.same_with("/v3/kv/range", r#"{"key":"eg=="}"#, &[&et], &[&rt]);
    let (et, rt) = (token(&etcd, "root"), token(&retcd, "root"));
    p.same_with(
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"eA=="}"#,
        &[&et],
        &[&rt],
    );
    p.same_with("/v3/auth/user/list", "", &[&et], &[&rt]);
    p.same_with("/v3/auth/disable", "", &[&et], &[&rt]);
}

/// A streamed call: its lines as they come.
struct Streamed {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streamed {
    fn start(s: &Server, path: &str, body: &str) -> Streamed {
        let mut child = Command::new("curl")
            .args(["-s", "-N", "--max-time", "60", "-X", "POST", "-d", body])
            .arg(format!("{}{path}", s.client_url()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let lines = support::stdout_lines(&mut child);
        Streamed { child, lines }
    }

    fn next(&self) -> Value {
        masked(
            &self
                .lines
                .recv_timeout(LINE_TIMEOUT)
                .expect("a streamed line"),
        )
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_keepalive_and_observe_stream_as_etcds() {
    let (etcd, retcd) = support::start_both(&[]);
    let mut seen = Vec::new();
    for s in [&etcd, &retcd] {
        let mut lines = Vec::new();
        let watch = Streamed::start(
            s,
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}}"#,
        );
        lines.push(watch.next());
        post(s, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &[]);
        post(s, "/v3/kv/put", r#"{"key":"Zm9vMQ==","value":"YmF6"}"#, &[]);
        post(s, "/v3/kv/deleterange", r#"{"key":"Zm9v"}"#, &[]);
        lines.push(watch.next());
        lines.push(watch.next());
        lines.push(watch.next());
        // A compacted start revision: created, then canceled with the compact revision.
        post(s, "/v3/kv/compaction", r#"{"revision":"3"}"#, &[]);
        let old = Streamed::start(
            s,
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v","start_revision":"2"}}"#,
        );
        lines.push(old.next());
        lines.push(old.next());

        post(s, "/v3/lease/grant", r#"{"TTL":"60","ID":"3000"}"#, &[]);
        let keep = Streamed::start(s, "/v3/lease/keepalive", r#"{"ID":"3000"}{"ID":"3000"}"#);
        for _ in 0..2 {
            let mut v = keep.next();
            assert!(v["result"]["TTL"].is_string(), "{v}");
            v["result"]["TTL"] = Value::Null;
            lines.push(v);
        }
        let observe = Streamed::start(s, "/v3/election/observe", r#"{"name":"RQ=="}"#);
        post(
            s,
            "/v3/election/campaign",
            r#"{"name":"RQ==","lease":"3000","value":"djE="}"#,
            &[],
        );
        lines.push(observe.next());
        // A snapshot streams its chunks as base64 blobs: the first carries what remains.
        let snap = Streamed::start(s, "/v3/maintenance/snapshot", "");
        let first = snap.next();
        assert!(first["result"]["blob"].is_string(), "{first}");
        seen.push((s.kind(), lines));
    }
    let (_, e) = &seen[0];
    let (k, r) = &seen[1];
    assert_eq!(*k, Kind::Retcd);
    for (i, (r, e)) in r.iter().zip(e).enumerate() {
        assert_eq!(r, e, "line {i}");
    }
}

/// Bodies that are not a request: the same HTTP status and gRPC code as etcd's gateway (the
/// decoder's wording is Go's there, serde's here), and nothing written.
#[test]
fn bad_bodies_are_refused_as_etcds_gateway_refuses_them() {
    let (etcd, retcd) = support::start_both(&[]);
    let big = format!(r#"{{"key":"Zm9v","value":"{}"}}"#, "QUFB".repeat(700_000));
    for body in [
        "{bad",
        r#"{"key":"not base64!"}"#,
        r#"{"key":12}"#,
        r#"{"key":"Zm9v","lease":"x"}"#,
        "[1,2]",
        big.as_str(),
    ] {
        let (ec, eb) = post(&etcd, "/v3/kv/put", body, &[]);
        let (rc, rb) = post(&retcd, "/v3/kv/put", body, &[]);
        let code = |b: &str| masked(b)["code"].clone();
        assert_eq!(
            (rc, code(&rb)),
            (ec, code(&eb)),
            "{}: etcd said {eb}, retcd {rb}",
            &body[..body.len().min(40)]
        );
    }
    for s in [&etcd, &retcd] {
        let (_, b) = post(s, "/v3/kv/range", r#"{"key":"Zm9v"}"#, &[]);
        assert_eq!(
            masked(&b)["header"]["revision"],
            "1",
            "{:?}: nothing written: {b}",
            s.kind()
        );
    }
}
