//! Auth in a 3-member cluster, against retcd and real etcd alike, with simple and with JWT
//! tokens: a token minted on one member works on every member (etcd hands simple tokens out in
//! the apply; JWTs are signed with keys every member has); a permission revoked through one
//! member is enforced on the very next request on every member; tokens survive a leader change;
//! a restarted member has forgotten its simple tokens (they live in memory only), as etcd's does,
//! while the others still take them — and JWTs survive the restart.

#[path = "support/jwt_keys.rs"]
mod jwt_keys;
mod support;

use retcd_bench::client::{Conn, ConnectOptions, connect, status_text};
use retcd_net::pb::etcdserverpb::{MoveLeaderRequest, PutRequest, RangeRequest};
use support::cluster::{Cluster, etcdctl_at};
use support::{Kind, Output};

fn ok(o: Output) -> String {
    assert!(o.success(), "etcdctl failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One connection per member (in member order), all with the token alice got from member 0.
fn alice_on_each(endpoints: &[String], rt: &tokio::runtime::Runtime) -> Vec<Conn> {
    let opts = ConnectOptions {
        endpoints: endpoints.to_vec(),
        user: Some("alice:pw".into()),
        ..ConnectOptions::default()
    };
    rt.block_on(connect(&opts, endpoints.len()))
        .expect("alice connects")
}

fn get(conn: &Conn, key: &str, rt: &tokio::runtime::Runtime) -> Result<i64, String> {
    rt.block_on(conn.kv().range(RangeRequest {
        key: key.into(),
        ..Default::default()
    }))
    .map(|r| r.into_inner().count)
    .map_err(|s| status_text(&s))
}

fn put(conn: &Conn, key: &str, rt: &tokio::runtime::Runtime) -> Result<(), String> {
    rt.block_on(conn.kv().put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
    .map(drop)
    .map_err(|s| status_text(&s))
}

const DENIED: &str = "rpc error: code = PermissionDenied desc = etcdserver: permission denied";
const TRANSPORT: &str = "rpc error: code = Unknown desc = transport error";
const INVALID_TOKEN: &str =
    "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token";

/// A JWT minted before an auth change (its `revision` claim is behind).
const OLD_REVISION: &str =
    "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old";

fn auth_on_every_member(kind: Kind, jwt: bool) {
    let keys = jwt_keys::Keys::new();
    let token_flag = keys.auth_token();
    let args: &[&str] = if jwt {
        &["--auth-token", &token_flag]
    } else {
        &[]
    };
    // What a token minted before an auth change gets: a simple token carries no revision.
    let stale = |simple: &str| -> String {
        if jwt {
            OLD_REVISION.into()
        } else {
            simple.into()
        }
    };
    let mut c = Cluster::start(kind, 3, args);
    let leader = c.leader();
    let all = c.endpoints();
    for args in support::auth_setup_commands("root", "pw") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(etcdctl_at(&all, &args));
    }
    let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    let rt = rt();
    let alice = alice_on_each(&endpoints, &rt);
    // A token minted on member 0 is good on every member, for writes (forwarded to the leader
    // by followers) and linearizable reads.
    for (i, conn) in alice.iter().enumerate() {
        put(conn, &format!("/a/{i}"), &rt).unwrap_or_else(|e| panic!("member {i}: {e}"));
        assert_eq!(get(conn, "/a/0", &rt), Ok(1), "member {i}");
        assert_eq!(get(conn, "/b", &rt), Err(DENIED.into()), "member {i}");
    }
    // Tokens survive a leader change.
    let root = |endpoint: &str, args: &[&str]| {
        let mut a = vec!["--user=root:root"];
        a.extend_from_slice(args);
        ok(etcdctl_at(endpoint, &a))
    };
    let new_leader = (leader + 1) % 3;
    let to = c.members[new_leader].endpoint();
    let target = member_id(&endpoints[new_leader]);
    let opts = ConnectOptions {
        endpoints: vec![endpoints[leader].clone()],
        user: Some("root:root".into()),
        ..ConnectOptions::default()
    };
    let root_conn = rt
        .block_on(connect(&opts, 1))
        .expect("root connects")
        .remove(0);
    rt.block_on(
        root_conn
            .maintenance()
            .move_leader(MoveLeaderRequest { target_id: target }),
    )
    .unwrap_or_else(|s| panic!("move leader to {to}: {}", status_text(&s)));
    // MoveLeader answers once the target leads; a third member learns it at the new leader's
    // first message, and until then answers a linearizable read "no leader" (retcd answers at
    // once where etcd would hold the read): wait until every member knows.
    c.leader_as("--user=root:root", Some(target));
    for (i, conn) in alice.iter().enumerate() {
        assert_eq!(
            get(conn, "/a/0", &rt),
            Ok(1),
            "member {i} after the leader change"
        );
    }
    // A permission revoked through one member is gone for the next request on every member.
    root(
        &endpoints[0],
        &["role", "revoke-permission", "--prefix=true", "r", "/a/"],
    );
    for (i, conn) in alice.iter().enumerate() {
        assert_eq!(get(conn, "/a/0", &rt), Err(stale(DENIED)), "member {i}");
        assert_eq!(put(conn, "/a/x", &rt), Err(stale(DENIED)), "member {i}");
    }
    for (i, conn) in alice_on_each(&endpoints, &rt).iter().enumerate() {
        assert_eq!(
            get(conn, "/a/0", &rt),
            Err(DENIED.into()),
            "member {i}, new token"
        );
    }
    root(
        &endpoints[0],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "r",
            "read",
            "/a/",
        ],
    );
    let alice = alice_on_each(&endpoints, &rt);
    // A restarted member has forgotten every simple token; the others still take them. (etcd
    // re-applies at start what follows the last index its backend saved — which etcd 3.4
    // advances only with a key-value write — so a token it had not yet applied, or applied
    // after the last write, comes back: a write, then the member takes the token, bounded.)
    let restarted = (new_leader + 1) % 3;
    root(&endpoints[0], &["put", "/after-login", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&alice[restarted], "/a/0", &rt) != Ok(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "member {restarted} never took the token"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.members[restarted].set_etcdctl_user("root:root");
    c.members[restarted].restart();
    for (i, conn) in alice.iter().enumerate() {
        let expect = if i == restarted && !jwt {
            Err(INVALID_TOKEN.to_string())
        } else {
            Ok(1)
        };
        // The client learns that its connection to the restarted member is gone when it
        // writes on it: that one request fails in the transport, the next one reconnects.
        let mut got = get(conn, "/a/0", &rt);
        if i == restarted && got == Err(TRANSPORT.into()) {
            got = get(conn, "/a/0", &rt);
        }
        assert_eq!(got, expect, "member {i}");
    }
    // Deleting the user ends their tokens everywhere.
    root(&endpoints[0], &["user", "delete", "alice"]);
    for (i, conn) in alice.iter().enumerate() {
        assert_eq!(
            get(conn, "/a/0", &rt),
            Err(stale(INVALID_TOKEN)),
            "member {i}"
        );
    }
}

fn member_id(endpoint: &str) -> u64 {
    let o = ok(etcdctl_at(
        endpoint,
        &["--user=root:root", "endpoint", "status", "-w", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&o).expect("status json");
    v[0]["Status"]["header"]["member_id"]
        .as_u64()
        .expect("member id")
}

#[test]
fn retcd_auth_on_every_member() {
    auth_on_every_member(Kind::Retcd, false);
}

#[test]
fn etcd_auth_on_every_member() {
    auth_on_every_member(Kind::Etcd, false);
}

#[test]
fn retcd_jwt_on_every_member() {
    auth_on_every_member(Kind::Retcd, true);
}

#[test]
fn etcd_jwt_on_every_member() {
    auth_on_every_member(Kind::Etcd, true);
}
