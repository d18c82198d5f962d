//! Authentication and authorization against the real binaries: the seed's etcdctl sequence
//! (users, roles, permissions, auth enable, commands with `--user`) compared line for line with
//! real etcd; a user with a prefix grant reading, writing and watching only what it may, through
//! the `etcd-client` crate against retcd and etcd alike; the bypasses etcd 3.4 has (nested
//! txns, prev_kv and lease attach inside txns, from-key watches over a single-key grant) refused
//! by retcd — and shown to exist in etcd 3.4.23, so each check can fail; certificate identity
//! with --client-cert-auth.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Permission, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use support::{Kind, Server, Target, assert_status};

const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcdctl command of a transcript: its arguments and standard input.
struct Step(&'static [&'static str], Option<&'static str>);

/// The seed's auth walk-through and the bad input around it, as etcdctl 3.4 types it.
const SEED: &[Step] = &[
    Step(&["user", "add", "root:root"], None),
    Step(&["role", "add", "root"], None),
    Step(&["user", "grant-role", "root", "root"], None),
    Step(&["role", "add", "reader"], None),
    Step(
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "reader",
            "read",
            "/app/",
        ],
        None,
    ),
    Step(&["user", "add", "alice:pw"], None),
    Step(&["user", "grant-role", "alice", "reader"], None),
    Step(&["user", "add", "bob", "--new-user-password=x"], None),
    Step(&["user", "add", "alice:again"], None),
    Step(&["role", "list"], None),
    Step(&["user", "list"], None),
    Step(&["auth", "enable"], None),
    Step(&["get", "/app/x"], None),
    Step(&["--user=root:root", "put", "/app/x", "1"], None),
    Step(
        &[
            "--user=root:root",
            "role",
            "grant-permission",
            "--prefix=true",
            "root",
            "readwrite",
            "/",
        ],
        None,
    ),
    Step(&["--user=alice:pw", "get", "/app/x"], None),
    Step(&["--user=alice:pw", "get", "--prefix", "/app/"], None),
    Step(&["--user=alice:pw", "put", "/app/x", "2"], None),
    Step(&["--user=alice:pw", "get", "/other"], None),
    Step(&["--user=alice:pw", "get", "--prefix", "/"], None),
    Step(&["--user=alice:wrong", "get", "/app/x"], None),
    Step(&["--user=nobody:pw", "get", "/app/x"], None),
    Step(&["--user=root:root", "role", "get", "reader"], None),
    Step(&["--user=root:root", "role", "get", "root"], None),
    Step(&["--user=root:root", "user", "get", "alice"], None),
    Step(
        &["--user=root:root", "user", "get", "alice", "--detail"],
        None,
    ),
    Step(&["--user=alice:pw", "user", "get", "alice"], None),
    Step(&["--user=alice:pw", "user", "get", "root"], None),
    Step(&["--user=alice:pw", "user", "list"], None),
    Step(&["--user=alice:pw", "role", "get", "reader"], None),
    Step(&["--user=alice:pw", "role", "add", "mine"], None),
    Step(&["--user=root:root", "user", "delete", "root"], None),
    Step(
        &["--user=root:root", "user", "revoke-role", "root", "root"],
        None,
    ),
    Step(&["--user=root:root", "role", "delete", "root"], None),
    Step(
        &[
            "--user=root:root",
            "role",
            "grant-permission",
            "nope",
            "read",
            "/a",
        ],
        None,
    ),
    Step(
        &["--user=root:root", "user", "grant-role", "alice", "nope"],
        None,
    ),
    Step(
        &["--user=root:root", "user", "grant-role", "nobody", "reader"],
        None,
    ),
    Step(
        &["--user=root:root", "user", "revoke-role", "alice", "root"],
        None,
    ),
    Step(
        &[
            "--user=root:root",
            "role",
            "revoke-permission",
            "reader",
            "/zz",
        ],
        None,
    ),
    Step(
        &[
            "--user=root:root",
            "role",
            "revoke-permission",
            "reader",
            "/app/",
            "--prefix=true",
        ],
        None,
    ),
    Step(&["--user=alice:pw", "get", "/app/x"], None),
    Step(&["--user=bob:x", "get", "/app/x"], None),
    Step(
        &[
            "--user=root:root",
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ],
        Some("newpw\n"),
    ),
    Step(&["--user=alice:pw", "get", "/app/x"], None),
    Step(&["--user=root:root", "role", "add", "rw"], None),
    Step(
        &[
            "--user=root:root",
            "role",
            "grant-permission",
            "rw",
            "readwrite",
            "/k",
            "/l",
        ],
        None,
    ),
    Step(
        &[
            "--user=root:root",
            "role",
            "grant-permission",
            "rw",
            "write",
            "--from-key",
            "/z",
        ],
        None,
    ),
    Step(
        &[
            "--user=root:root",
            "role",
            "grant-permission",
            "rw",
            "read",
            "/k",
        ],
        None,
    ),
    Step(&["--user=root:root", "role", "get", "rw"], None),
    Step(
        &["--user=root:root", "user", "grant-role", "alice", "rw"],
        None,
    ),
    Step(
        &["--user=root:root", "user", "grant-role", "alice", "rw"],
        None,
    ),
    Step(&["--user=alice:newpw", "put", "/k1", "v"], None),
    Step(&["--user=alice:newpw", "put", "/zzz", "v"], None),
    Step(&["--user=alice:newpw", "get", "/zzz"], None),
    Step(&["--user=alice:newpw", "txn"], Some("\nput /k2 v\n\n")),
    Step(&["--user=alice:newpw", "txn"], Some("\nput /other v\n\n")),
    Step(&["--user=alice:newpw", "del", "/k1"], None),
    Step(&["--user=root:root", "compaction", "2"], None),
    Step(
        &["--user=alice:newpw", "member", "list", "-w", "json"],
        None,
    ),
    Step(&["--user=alice:newpw", "alarm", "list"], None),
    Step(&["--user=alice:newpw", "alarm", "disarm"], None),
    Step(&["--user=root:root", "alarm", "list"], None),
    Step(&["--user=root:root", "user", "delete", "bob"], None),
    Step(&["--user=root:root", "role", "delete", "rw"], None),
    Step(&["--user=root:root", "user", "get", "alice"], None),
    Step(&["--user=root:root", "auth", "disable"], None),
    Step(&["user", "list"], None),
    Step(&["role", "list"], None),
    Step(&["auth", "disable"], None),
    Step(&["user", "delete", "root"], None),
    Step(&["auth", "enable"], None),
];

/// What etcdctl printed for each step, with what differs between two servers taken out:
/// ports, data dirs and member ids, and the Go client's timestamped retry warnings.
fn transcript(server: &Server, steps: &[Step]) -> String {
    let mut out = String::new();
    for Step(args, stdin) in steps {
        let o = server.etcdctl_stdin(args, *stdin);
        out.push_str(&format!("$ etcdctl {}\n", args.join(" ")));
        for line in o.stdout.lines().chain(o.stderr.lines()) {
            if !line.contains("retry_interceptor") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(&format!("[exit {:?}]\n", o.code()));
    }
    let out = server.normalize(&out);
    // Member ids are the hash of the peer URLs, which hold the (different) ports.
    let id = format!("{:x}", member_id(server));
    out.replace(&id, "<MEMBER_ID>").replace(
        &u64::from_str_radix(&id, 16).unwrap().to_string(),
        "<MEMBER_ID>",
    )
}

fn member_id(server: &Server) -> u64 {
    let o = server.etcdctl(&["--user=root:root", "member", "list", "-w", "json"]);
    let o = if o.success() {
        o
    } else {
        server.etcdctl(&["member", "list", "-w", "json"])
    };
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("member list json");
    v["members"][0]["ID"].as_u64().expect("member id")
}

#[test]
fn seed_auth_sequence_matches_etcd() {
    let etcd = Server::start_in_tempdir(Kind::Etcd);
    let retcd = Server::start_in_tempdir(Kind::candidate_from_env());
    let (e, r) = std::thread::scope(|s| {
        let e = s.spawn(|| transcript(&etcd, SEED));
        let r = s.spawn(|| transcript(&retcd, SEED));
        (e.join().unwrap(), r.join().unwrap())
    });
    if e != r {
        let diff: Vec<String> = e
            .lines()
            .zip(r.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("etcd:  {a}\nretcd: {b}"))
            .take(20)
            .collect();
        panic!(
            "transcripts differ:\n{}\n--- etcd ---\n{e}\n--- retcd ---\n{r}",
            diff.join("\n")
        );
    }
    // The transcript really exercised the refusals.
    for needle in [
        "Error: etcdserver: permission denied",
        "Error: etcdserver: authentication failed, invalid user ID or password",
        "Error: etcdserver: user name is empty",
        "Error: etcdserver: invalid auth management",
        "Error: etcdserver: role name not found",
        "Error: etcdserver: user name not found",
        "Error: etcdserver: permission is not granted to the role",
        "Error: etcdserver: role is not granted to the user",
        "Error: etcdserver: user name already exists",
        "Error: etcdserver: root user does not exist",
    ] {
        assert!(r.contains(needle), "{needle} missing from\n{r}");
    }
}

// ---- etcd-client: one body against both servers ----

fn run_both<F, Fut>(extra_args: &[&str], body: F)
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    support::run_both(extra_args, BODY_TIMEOUT, body)
}

async fn as_user(t: &Target, user: &str, password: &str) -> Client {
    Client::connect(
        [t.endpoint.as_str()],
        Some(ConnectOptions::new().with_user(user, password)),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: connect as {user}: {e}", t.kind.label()))
}

/// root (root role), alice (read on `/a/`, readwrite on `/w/`, write on `/wo/`, read on the
/// single key `/s`), auth on. Returns root's client.
async fn setup(t: &Target) -> Client {
    let mut c = t.client().await;
    c.user_add("root", "root", None).await.unwrap();
    c.role_add("root").await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("r").await.unwrap();
    for p in [
        Permission::read("/a/").with_prefix(),
        Permission::read_write("/w/").with_prefix(),
        Permission::write("/wo/").with_prefix(),
        Permission::read("/s"),
    ] {
        c.role_grant_permission("r", p).await.unwrap();
    }
    c.user_add("alice", "pw", None).await.unwrap();
    c.user_grant_role("alice", "r").await.unwrap();
    c.auth_enable().await.unwrap();
    let mut root = as_user(t, "root", "root").await;
    for k in ["/a/x", "/b", "/s", "/s2", "/wo/x"] {
        root.put(k, "v", None).await.unwrap();
    }
    root
}

const DENIED: (&str, &str) = ("PermissionDenied", "etcdserver: permission denied");

fn denied<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) {
    assert_status(r, DENIED.0, DENIED.1);
}

#[test]
fn a_prefix_reader_reads_writes_and_watches_only_what_it_may() {
    run_both(&[], |t| async move {
        let mut root = setup(&t).await;
        let mut alice = as_user(&t, "alice", "pw").await;
        // Reads.
        let got = alice.get("/a/x", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"v");
        alice
            .get("/a/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        denied(alice.get("/b", None).await);
        denied(alice.get("/", Some(GetOptions::new().with_prefix())).await);
        denied(
            alice
                .get("/a/", Some(GetOptions::new().with_from_key()))
                .await,
        );
        denied(alice.get("/wo/x", None).await);
        // Writes.
        denied(alice.put("/a/x", "2", None).await);
        alice.put("/w/x", "1", None).await.unwrap();
        alice.put("/wo/y", "1", None).await.unwrap();
        denied(
            alice
                .put("/wo/y", "2", Some(PutOptions::new().with_prev_key()))
                .await,
        );
        denied(alice.delete("/a/x", None).await);
        denied(
            alice
                .delete("/w/", Some(DeleteOptions::new().with_from_key()))
                .await,
        );
        alice
            .delete("/w/x", Some(DeleteOptions::new().with_prev_key()))
            .await
            .unwrap();
        // A flat txn: every compare and every op of both branches.
        let txn = |cmp: &str, put: &str| {
            Txn::new()
                .when([Compare::value(cmp, CompareOp::Equal, "v")])
                .and_then([TxnOp::put(put, "t", None)])
                .or_else([TxnOp::get("/a/x", None)])
        };
        alice.txn(txn("/a/x", "/w/t")).await.unwrap();
        denied(alice.txn(txn("/b", "/w/t")).await);
        denied(alice.txn(txn("/a/x", "/b")).await);
        // Leases: alice may not revoke (nor attach to) a lease holding a key she cannot write.
        let lease = root.lease_grant(100, None).await.unwrap().id();
        root.put("/b", "l", Some(PutOptions::new().with_lease(lease)))
            .await
            .unwrap();
        denied(alice.lease_revoke(lease).await);
        denied(
            alice
                .put("/w/l", "1", Some(PutOptions::new().with_lease(lease)))
                .await,
        );
        let own = alice.lease_grant(100, None).await.unwrap().id();
        alice
            .put("/w/l", "1", Some(PutOptions::new().with_lease(own)))
            .await
            .unwrap();
        alice.lease_revoke(own).await.unwrap();
        root.lease_revoke(lease).await.unwrap();
        // Watches: refused at create, not filtered.
        let mut stream = alice.watch("/b", None).await.expect("watch stream opens");
        let r = stream.message().await.unwrap().expect("a response");
        assert!(r.created() && r.canceled(), "{r:?}");
        assert_eq!(
            r.cancel_reason(),
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
        let mut stream = alice
            .watch("/a/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let r = stream.message().await.unwrap().expect("a response");
        assert!(r.created() && !r.canceled(), "{r:?}");
        // A revoked permission stops the very next request.
        root.role_revoke_permission(
            "r",
            "/a/",
            Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
        )
        .await
        .unwrap();
        denied(alice.get("/a/x", None).await);
        // Without a token: etcd's "user name is empty".
        let mut anon = t.client().await;
        assert_status(
            anon.get("/a/x", None).await,
            "InvalidArgument",
            "etcdserver: user name is empty",
        );
        assert_status(
            as_user_err(&t, "alice", "wrong").await,
            "InvalidArgument",
            "etcdserver: authentication failed, invalid user ID or password",
        );
        assert_status(
            as_user_err(&t, "mallory", "pw").await,
            "InvalidArgument",
            "etcdserver: authentication failed, invalid user ID or password",
        );
        // Deleting a user ends their token.
        root.user_delete("alice").await.unwrap();
        assert_status(
            alice.get("/w/x", None).await,
            "Unauthenticated",
            "etcdserver: invalid auth token",
        );
    });
}

async fn as_user_err(t: &Target, user: &str, password: &str) -> Result<(), etcd_client::Error> {
    Client::connect(
        [t.endpoint.as_str()],
        Some(ConnectOptions::new().with_user(user, password)),
    )
    .await
    .map(drop)
}

/// Each bypass of etcd 3.4.23's checks, as the request that uses it: retcd refuses all of
/// them; etcd 3.4.23 lets each through (asserted, so this test also proves it can fail).
#[test]
fn etcd_34_bypasses_are_closed() {
    run_both(&[], |t| async move {
        let mut root = setup(&t).await;
        let mut alice = as_user(&t, "alice", "pw").await;
        let lease = root.lease_grant(100, None).await.unwrap().id();
        root.put("/b", "l", Some(PutOptions::new().with_lease(lease)))
            .await
            .unwrap();
        let nested = |op: TxnOp| Txn::new().and_then([TxnOp::txn(Txn::new().and_then([op]))]);
        let mut results = Vec::new();
        // A put to a key alice may not write, inside a nested txn.
        results.push(alice.txn(nested(TxnOp::put("/b", "x", None))).await.is_ok());
        // A read of a key alice may not read, inside a nested txn.
        results.push(alice.txn(nested(TxnOp::get("/b", None))).await.is_ok());
        // prev_kv of a write-only key, inside a txn.
        results.push(
            alice
                .txn(Txn::new().and_then([TxnOp::put(
                    "/wo/x",
                    "y",
                    Some(PutOptions::new().with_prev_key()),
                )]))
                .await
                .is_ok(),
        );
        // Attaching to a lease that holds /b, inside a txn.
        results.push(
            alice
                .txn(Txn::new().and_then([TxnOp::put(
                    "/w/l",
                    "y",
                    Some(PutOptions::new().with_lease(lease)),
                )]))
                .await
                .is_ok(),
        );
        // A from-key watch where alice may read the single key /s only.
        let mut stream = alice
            .watch("/s", Some(WatchOptions::new().with_from_key()))
            .await
            .unwrap();
        let r = stream.message().await.unwrap().expect("a response");
        results.push(!r.canceled());
        let allowed = match t.kind {
            Kind::Etcd => vec![true; results.len()],
            Kind::Retcd => vec![false; results.len()],
        };
        assert_eq!(results, allowed, "which bypass requests were let through");
        // Nothing of it happened on retcd.
        if t.kind == Kind::Retcd {
            let b = root.get("/b", None).await.unwrap();
            assert_eq!(b.kvs()[0].value(), b"l");
            assert_eq!(root.get("/w/l", None).await.unwrap().count(), 0);
        }
    });
}

/// With --client-cert-auth a certificate's CommonName is the user of a request without a token.
#[test]
fn certificate_common_name_is_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki::Pki::new(dir.path());
    let (alice_cert, alice_key) = p.client("alice", dir.path());
    let tls = p.server_flags();
    for kind in [Kind::Etcd, Kind::Retcd] {
        let sd = tempfile::tempdir().unwrap();
        let as_root = p.client_flags(&p.client_cert, &p.client_key);
        let server = Server::try_start_tls(kind, sd.path(), &tls, &as_root)
            .unwrap_or_else(|e| panic!("{}: {e}", kind.label()));
        let as_alice = p.client_flags(&alice_cert, &alice_key);
        let run = |tls: &[&str], args: &[&str]| {
            let o = server.etcdctl_as(tls, args);
            (o.code(), o.stdout.trim().to_string(), last_line(&o.stderr))
        };
        for args in [
            &["user", "add", "root:root"][..],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "r"],
            &["role", "grant-permission", "r", "readwrite", "/a"],
            &["user", "add", "alice:pw"],
            &["user", "grant-role", "alice", "r"],
            &["auth", "enable"],
        ] {
            let o = run(&as_root, args);
            assert_eq!(o.0, Some(0), "{}: {args:?}: {o:?}", kind.label());
        }
        // The certificate of CN root is root: it may write anywhere.
        assert_eq!(
            run(&as_root, &["put", "/b", "1"]).0,
            Some(0),
            "{}",
            kind.label()
        );
        // CN alice is alice.
        assert_eq!(
            run(&as_alice, &["put", "/a", "1"]).0,
            Some(0),
            "{}",
            kind.label()
        );
        assert_eq!(
            run(&as_alice, &["get", "/b"]),
            (
                Some(1),
                String::new(),
                "Error: etcdserver: permission denied".to_string()
            ),
            "{}",
            kind.label()
        );
        // A token wins over the certificate.
        assert_eq!(
            run(
                &as_alice,
                &["--user=root:root", "get", "/b", "--print-value-only"]
            ),
            (Some(0), "1".to_string(), String::new()),
            "{}",
            kind.label()
        );
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.contains("retry_interceptor"))
        .unwrap_or_default()
        .to_string()
}

/// Where etcd 3.7 closed what 3.4 left open (a caller is required for member list, status, alarm
/// list and lease calls; compaction, alarm changes and keys of other users' leases need more),
/// retcd answers as 3.7. Against retcd only: Debian's etcd is 3.4.
#[test]
fn etcd_37_rules() {
    let server = Server::start_in_tempdir(Kind::Retcd);
    let ok = |args: &[&str]| {
        let o = server.etcdctl(args);
        assert!(o.success(), "{args:?}: {}{}", o.stdout, o.stderr);
        o.stdout
    };
    for args in [
        &["user", "add", "root:root"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "w"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "w",
            "readwrite",
            "/w/",
        ],
        &["user", "add", "alice:pw"],
        &["user", "grant-role", "alice", "w"],
        &["auth", "enable"],
    ] {
        ok(args);
    }
    let granted = ok(&["--user=root:root", "lease", "grant", "100"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ok(&["--user=root:root", "put", "/b", "1", "--lease", &lease]);
    let refused = |args: &[&str], message: &str| {
        let o = server.etcdctl(args);
        assert!(!o.success(), "{args:?} succeeded: {}", o.stdout);
        let last = last_line(&o.stderr);
        assert!(
            last.starts_with("Error: ") && last.contains(message),
            "{args:?}: {}",
            o.stderr
        );
    };
    let empty = "etcdserver: user name is empty";
    let denied = "etcdserver: permission denied";
    refused(&["member", "list"], empty);
    refused(&["alarm", "list"], empty);
    refused(&["lease", "grant", "10"], empty);
    refused(&["lease", "list"], empty);
    refused(&["--user=alice:pw", "compaction", "1"], denied);
    refused(
        &["--user=alice:pw", "lease", "keep-alive", "--once", &lease],
        denied,
    );
    refused(
        &["--user=alice:pw", "lease", "timetolive", &lease, "--keys"],
        denied,
    );
    refused(&["--user=alice:pw", "lease", "list"], denied);
    refused(&["--user=alice:pw", "lease", "revoke", &lease], denied);
    ok(&["--user=alice:pw", "member", "list"]);
    ok(&["--user=alice:pw", "alarm", "list"]);
    ok(&["--user=alice:pw", "lease", "timetolive", &lease]);
    ok(&["--user=root:root", "lease", "keep-alive", "--once", &lease]);
    ok(&["--user=root:root", "lease", "timetolive", &lease, "--keys"]);
    ok(&["--user=root:root", "compaction", "1"]);
}

/// AuthStatus (etcd 3.5+: Debian's etcd 3.4 does not serve it) reports auth on and etcd's auth
/// revision: 1 for a new store, one more per change, none for `auth enable`.
#[test]
fn auth_status_reports_etcds_revision() {
    run_both(&[], |t| async move {
        setup(&t).await;
        let opts = retcd_bench::client::ConnectOptions {
            endpoints: vec![t.endpoint.clone()],
            user: Some("root:root".into()),
            ..Default::default()
        };
        let conn = retcd_bench::client::connect(&opts, 1)
            .await
            .unwrap()
            .remove(0);
        let status = conn
            .auth()
            .auth_status(retcd_net::pb::etcdserverpb::AuthStatusRequest {})
            .await;
        match (t.kind, status) {
            (Kind::Etcd, Err(s)) => assert_eq!(format!("{:?}", s.code()), "Unimplemented", "{s:?}"),
            (Kind::Retcd, Ok(s)) => {
                let s = s.into_inner();
                // 1, + user root, + role root, + its grant, + role r, + 4 permissions, + user
                // alice, + her role.
                assert_eq!((s.enabled, s.auth_revision), (true, 11));
            }
            (k, other) => panic!("{}: {other:?}", k.label()),
        }
    });
}

/// Password guessing cannot pile up work: bcrypt runs on one thread behind a bounded queue, and
/// what does not fit is refused at once with etcd's "too many requests". Against retcd only
/// (etcd answers every guess, one bcrypt at a time per request).
#[test]
fn password_guessing_is_bounded() {
    let server = Server::start_in_tempdir(Kind::Retcd);
    let t = Target::of(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        setup(&t).await;
        let anon = t.client().await;
        let guesses: Vec<_> = (0..200)
            .map(|i| {
                let c = anon.clone();
                tokio::spawn(async move {
                    c.auth_client()
                        .authenticate("root".to_string(), format!("guess{i}"))
                        .await
                })
            })
            .collect();
        let (mut failed, mut refused) = (0, 0);
        for g in guesses {
            match g.await.unwrap() {
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.message()
                        == "etcdserver: authentication failed, invalid user ID or password" =>
                {
                    failed += 1
                }
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.message() == "etcdserver: too many requests" =>
                {
                    refused += 1
                }
                other => panic!("a guess got {other:?}"),
            }
        }
        assert!(
            failed >= 1 && refused >= 1,
            "failed {failed}, refused {refused}"
        );
        // The right password still works afterwards.
        as_user(&t, "root", "root").await;
    });
}

/// etcd 3.5+'s UserChangePassword: without a password (and without a client-made hash) the
/// user's password becomes empty and the user can no longer log in. Against retcd only (etcd 3.4
/// hashes the empty password instead).
#[test]
fn an_empty_new_password_locks_the_user() {
    let server = Server::start_in_tempdir(Kind::Retcd);
    let t = Target::of(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut root = setup(&t).await;
        root.user_change_password("alice", "").await.unwrap();
        for password in ["", "pw"] {
            assert_status(
                as_user_err(&t, "alice", password).await,
                "InvalidArgument",
                "etcdserver: authentication failed, invalid user ID or password",
            );
        }
        root.user_change_password("alice", "new").await.unwrap();
        as_user(&t, "alice", "new").await;
    });
}
