//! JWT auth tokens (`--auth-token jwt,...`) end to end, against the real retcd binary and real
//! etcd 3.4 started with the same flags and the same keys (made by openssl for each test).
//!
//! - `etcdctl_with_jwt_tokens`: the etcdctl session of an operator turning auth on (root user
//!   and role, `auth enable`, a put and a get as root, a wrong password, no user at all), with
//!   etcd's exact outputs, asserted against both servers.
//! - `tokens_are_shared_stateless_and_revision_bound`: raw gRPC calls with tokens of the test's
//!   choosing: each server takes the other's token (same keys: the tokens are etcd's format),
//!   a restarted server still takes a token it signed before, a token from before an auth change
//!   gets "revision of auth store is old", an altered or unsigned one "invalid auth token", and a
//!   verify-only server (public key only) refuses to hand out tokens with etcd's error.

#[path = "support/jwt_keys.rs"]
mod jwt_keys;
mod support;

use jwt_keys::Keys;

use std::path::Path;
use std::time::{Duration, Instant};

use retcd_net::auth::jwt::{DEFAULT_TTL, JwtTokens, SignMethod};
use retcd_net::pb::etcdserverpb::{
    AuthenticateRequest, RangeRequest, auth_client::AuthClient, kv_client::KvClient,
};
use support::{Kind, Server};

/// Longest one gRPC call of the test may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// etcdctl's answer: stdout, or the `Error: …` line of a failure.
fn answer(server: &Server, args: &[&str]) -> Result<String, String> {
    let out = server.etcdctl(args);
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(out
            .stderr
            .lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or(&out.stderr)
            .to_string())
    }
}

/// The root user with the root role, auth on, and `a` = `b`.
fn enable_auth(server: &Server) {
    for args in [
        &["user", "add", "root:root"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
        &["--user=root:root", "put", "a", "b"],
    ] {
        answer(server, args).unwrap_or_else(|e| panic!("{args:?} on {:?}: {e}", server.kind()));
    }
}

#[test]
fn etcdctl_with_jwt_tokens() {
    let keys = Keys::new();
    let auth_token = keys.auth_token();
    let ok = |s: &str| Ok(s.to_string());
    let err = |s: &str| Err(s.to_string());
    let session: [(&[&str], Result<String, String>); 8] = [
        (&["user", "add", "root:root"], ok("User root created\n")),
        (&["role", "add", "root"], ok("Role root created\n")),
        (
            &["user", "grant-role", "root", "root"],
            ok("Role root is granted to user root\n"),
        ),
        (&["auth", "enable"], ok("Authentication Enabled\n")),
        (&["--user=root:root", "put", "a", "b"], ok("OK\n")),
        (&["--user=root:root", "get", "a"], ok("a\nb\n")),
        (
            &["--user=root:wrong", "get", "a"],
            err("Error: etcdserver: authentication failed, invalid user ID or password"),
        ),
        (&["get", "a"], err("Error: etcdserver: user name is empty")),
    ];
    for kind in [Kind::Etcd, Kind::Retcd] {
        let server = Server::start_in_tempdir_with_args(kind, &["--auth-token", &auth_token]);
        for (args, expected) in &session {
            assert_eq!(
                &answer(&server, args),
                expected,
                "{kind:?}: etcdctl {args:?}"
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn channel(server: &Server) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::from_shared(server.client_url())
        .expect("endpoint")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("connect to {:?}: {e}", server.kind()))
}

/// The token Authenticate hands out, or the error message.
async fn authenticate(server: &Server, name: &str, password: &str) -> Result<String, String> {
    let req = AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    AuthClient::new(channel(server).await?)
        .authenticate(req)
        .await
        .map(|r| r.into_inner().token)
        .map_err(|s| s.message().to_string())
}

/// The value of `a` read with `token`, or the error message.
async fn get_a(server: &Server, token: &str) -> Result<String, String> {
    let mut req = tonic::Request::new(RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("token", token.parse().expect("ASCII token"));
    let resp = KvClient::new(channel(server).await?)
        .range(req)
        .await
        .map_err(|s| s.message().to_string())?;
    let kvs = resp.into_inner().kvs;
    assert_eq!(kvs.len(), 1, "{:?}", server.kind());
    Ok(String::from_utf8_lossy(&kvs[0].value).into_owned())
}

#[test]
fn tokens_are_shared_stateless_and_revision_bound() {
    let keys = Keys::new();
    let auth_token = keys.auth_token();
    let mut servers = [Kind::Etcd, Kind::Retcd]
        .map(|kind| Server::start_in_tempdir_with_args(kind, &["--auth-token", &auth_token]));
    for server in &servers {
        enable_auth(server);
    }
    let rt = runtime();
    let tokens = servers.each_ref().map(|s| {
        rt.block_on(authenticate(s, "root", "root"))
            .unwrap_or_else(|e| panic!("authenticate on {:?}: {e}", s.kind()))
    });
    // Both are the same kind of token: our verifier reads etcd's and retcd's alike, at the same
    // auth revision (both servers count auth revisions as etcd does).
    let pem = std::fs::read(&keys.public).unwrap();
    let verifier = JwtTokens::load(SignMethod::Rs256, Some(&pem), None, DEFAULT_TTL).unwrap();
    let claims = tokens
        .each_ref()
        .map(|t| verifier.verify(t).expect("a valid JWT"));
    assert_eq!(claims[0], claims[1]);
    assert_eq!(claims[0].user, "root");
    // Every server takes every token (no state shared but the keys).
    for server in &servers {
        for token in &tokens {
            assert_eq!(
                rt.block_on(get_a(server, token)),
                Ok("b".into()),
                "{:?}",
                server.kind()
            );
        }
    }
    // Tokens not signed with the key: the same answer from both.
    let mut parts: Vec<String> = tokens[1].split('.').map(String::from).collect();
    parts[2] = String::new();
    let unsigned = parts.join(".");
    for bad in ["garbage", &unsigned] {
        for server in &servers {
            assert_eq!(
                rt.block_on(get_a(server, bad)),
                Err("etcdserver: invalid auth token".into()),
                "{:?}",
                server.kind()
            );
        }
    }
    // A restarted retcd knows nothing of the tokens, and still takes them. (Not restarted by
    // `Server::restart`: its `endpoint health` check fails with auth on, for etcd too.)
    let retcd = &mut servers[1];
    retcd.stop();
    retcd.spawn_member();
    let deadline = Instant::now() + support::READY_TIMEOUT;
    loop {
        match rt.block_on(get_a(retcd, &tokens[0])) {
            Ok(v) => {
                assert_eq!(v, "b");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline && retcd.is_running(),
                "restarted retcd: {e}\n{}",
                retcd.log_tail()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rt.block_on(get_a(retcd, &tokens[1])), Ok("b".into()));
    // An auth change: every token signed before it is stale.
    for server in &servers {
        answer(server, &["--user=root:root", "user", "add", "bob:bob"]).unwrap();
        for token in &tokens {
            assert_eq!(
                rt.block_on(get_a(server, token)),
                Err("etcdserver: revision of auth store is old".into()),
                "{:?}",
                server.kind()
            );
        }
    }
    drop(servers);

    // A public key only: tokens are verified, none is handed out (etcd's ErrVerifyOnly).
    let verify_only = keys.verify_only();
    for kind in [Kind::Etcd, Kind::Retcd] {
        let server = Server::start_in_tempdir_with_args(kind, &["--auth-token", &verify_only]);
        for args in [
            &["user", "add", "root:root"][..],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["auth", "enable"],
        ] {
            answer(&server, args).unwrap();
        }
        assert_eq!(
            answer(&server, &["--user=root:root", "get", "a"]),
            Err(
                "Error: rpc error: code = Unknown desc = auth: token signing attempted with \
                 verify-only key"
                    .into()
            ),
            "{kind:?}"
        );
    }
}

#[test]
fn bad_jwt_options_stop_the_start() {
    let keys = Keys::new();
    let missing = Path::new(&keys.public).with_file_name("missing.pem");
    for auth_token in [
        "jwt".to_string(),
        "jwt,sign-method=RS256".to_string(),
        format!("jwt,sign-method=RS256,priv-key={}", missing.display()),
    ] {
        for kind in [Kind::Etcd, Kind::Retcd] {
            let dir = tempfile::tempdir().unwrap();
            let e = match Server::try_start(kind, dir.path(), &["--auth-token", &auth_token]) {
                Ok(_) => panic!("{kind:?} started with --auth-token {auth_token}"),
                Err(e) => e,
            };
            let expected = if auth_token == "jwt,sign-method=RS256" {
                "auth: missing key data"
            } else {
                "auth: invalid auth options"
            };
            assert!(e.contains(expected), "{kind:?} {auth_token}: {e}");
        }
    }
}
