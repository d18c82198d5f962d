//! The Lease service through the `etcd-client` crate, against the real retcd binary and real etcd.
//!
//! As in kv_client.rs, each test body runs against one etcd and one retcd concurrently, so every
//! expectation written here is etcd's answer too. Both servers run with `--election-timeout 500
//! --heartbeat-interval 100`, which makes etcd's minimum lease TTL 1 s (ceil(1.5 × 500 ms)), so
//! expiry tests stay short. Waits are bounded polling loops, never sleeps used as synchronization.
//! The restart test runs against retcd only: etcd 3.4 does not persist lease checkpoints by default.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Error, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
};
use support::{Kind, Server, assert_status, rev};

/// Longest a test body may run against one server.
const BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// Flags for both servers: etcd's minimum lease TTL becomes 1 s.
const ARGS: &[&str] = &["--election-timeout", "500", "--heartbeat-interval", "100"];

const E_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const E_LEASE_EXIST: &str = "etcdserver: lease already exists";
const E_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";

async fn client(endpoint: String) -> Client {
    Client::connect([endpoint.as_str()], None)
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// Runs `body` (given the endpoint) against etcd and retcd ([`support::run_both`]).
fn run_both<F, Fut>(body: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    support::run_both(ARGS, BODY_TIMEOUT, move |t| body(t.endpoint))
}

async fn put_lease(c: &mut Client, key: &str, value: &str, lease: i64) -> i64 {
    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap_or_else(|e| panic!("put {key:?} with lease {lease:x}: {e}"))
        .header()
        .expect("header")
        .revision()
}

/// (key, value, mod revision, lease) of every key.
async fn all_keys(c: &mut Client) -> Vec<(String, String, i64, i64)> {
    c.get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("get all")
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.mod_revision(),
                kv.lease(),
            )
        })
        .collect()
}

async fn ttl_of(c: &mut Client, id: i64, keys: bool) -> (i64, i64, i64, Vec<String>) {
    let opts = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
    let r = c
        .lease_time_to_live(id, opts)
        .await
        .unwrap_or_else(|e| panic!("time-to-live {id:x}: {e}"));
    let mut ks: Vec<String> = r
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    // etcd lists a lease's keys from a map: in no particular order.
    ks.sort();
    (r.id(), r.ttl(), r.granted_ttl(), ks)
}

async fn lease_ids(c: &mut Client) -> Vec<i64> {
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    ids
}

/// Polls (every 50 ms, at most `limit`) until `key` is gone; returns how long it took.
async fn wait_gone(c: &mut Client, key: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = c.get(key, None).await.expect("get");
        if r.kvs().is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{key:?} still there after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- bodies ----

async fn grant_revoke_and_attach(endpoint: String) {
    let mut c = client(endpoint).await;
    assert_eq!(rev(&mut c).await, 1);

    // Server-chosen id.
    let g = c.lease_grant(60, None).await.expect("grant");
    let a = g.id();
    assert!(a > 0, "server-chosen id {a}");
    assert_eq!(g.ttl(), 60);
    assert_eq!(g.header().expect("header").revision(), 1);
    // Client-chosen id; a grant does not take a revision.
    let b = 0x1234;
    let g = c
        .lease_grant(300, Some(LeaseGrantOptions::new().with_id(b)))
        .await
        .expect("grant with id");
    assert_eq!((g.id(), g.ttl()), (b, 300));
    assert_status(
        c.lease_grant(10, Some(LeaseGrantOptions::new().with_id(b)))
            .await,
        "FailedPrecondition",
        E_LEASE_EXIST,
    );
    assert_status(
        c.lease_grant(9_000_000_001, None).await,
        "OutOfRange",
        E_TTL_TOO_LARGE,
    );
    // A TTL below the minimum (1 s with these flags) is raised to it.
    let g = c
        .lease_grant(0, Some(LeaseGrantOptions::new().with_id(0x99)))
        .await
        .expect("grant ttl 0");
    assert_eq!((g.id(), g.ttl()), (0x99, 1));
    c.lease_revoke(0x99).await.expect("revoke 0x99");
    assert_eq!(rev(&mut c).await, 1);

    // Keys attached to leases.
    assert_eq!(put_lease(&mut c, "a", "1", a).await, 2);
    assert_eq!(put_lease(&mut c, "b", "2", a).await, 3);
    assert_eq!(put_lease(&mut c, "c", "3", b).await, 4);
    let d = c.put("d", "4", None).await.expect("put d");
    assert_eq!(d.header().unwrap().revision(), 5);
    assert_status(
        c.put("x", "1", Some(PutOptions::new().with_lease(0x777)))
            .await,
        "NotFound",
        E_LEASE_NOT_FOUND,
    );
    // ignore_lease keeps the key's lease.
    c.put("a", "10", Some(PutOptions::new().with_ignore_lease()))
        .await
        .expect("put ignore_lease");
    // Moving a key to another lease detaches it from the first.
    put_lease(&mut c, "c", "30", a).await;
    put_lease(&mut c, "c", "31", b).await;
    assert_eq!(
        all_keys(&mut c).await,
        vec![
            ("a".into(), "10".into(), 6, a),
            ("b".into(), "2".into(), 3, a),
            ("c".into(), "31".into(), 8, b),
            ("d".into(), "4".into(), 5, 0),
        ]
    );

    // Time-to-live, with and without keys; -1 for a lease that does not exist.
    let (id, ttl, granted, keys) = ttl_of(&mut c, a, false).await;
    assert_eq!((id, granted, keys.len()), (a, 60, 0));
    assert!((55..=60).contains(&ttl), "ttl {ttl}");
    let (_, _, granted, keys) = ttl_of(&mut c, a, true).await;
    assert_eq!(
        (granted, keys),
        (60, vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(
        ttl_of(&mut c, b, true).await.3,
        vec!["c".to_string()],
        "keys of b"
    );
    assert_eq!(ttl_of(&mut c, 0x777, true).await, (0x777, -1, 0, vec![]));

    let mut want = vec![a, b];
    want.sort();
    assert_eq!(lease_ids(&mut c).await, want);

    // Revoke deletes every attached key in one revision.
    let r = c.lease_revoke(a).await.expect("revoke a");
    assert_eq!(r.header().expect("header").revision(), 9);
    assert_eq!(
        all_keys(&mut c).await,
        vec![
            ("c".into(), "31".into(), 8, b),
            ("d".into(), "4".into(), 5, 0),
        ]
    );
    let before = c
        .get("a", Some(GetOptions::new().with_revision(8)))
        .await
        .expect("get at 8");
    assert_eq!(before.kvs().len(), 1);
    assert_status(c.lease_revoke(a).await, "NotFound", E_LEASE_NOT_FOUND);
    assert_eq!(ttl_of(&mut c, a, false).await.1, -1);
    assert_eq!(lease_ids(&mut c).await, vec![b]);
    assert_status(
        c.put("y", "1", Some(PutOptions::new().with_lease(a))).await,
        "NotFound",
        E_LEASE_NOT_FOUND,
    );
    assert_eq!(rev(&mut c).await, 9);
}

#[test]
fn grant_revoke_and_attach_match_etcd() {
    run_both(grant_revoke_and_attach);
}

async fn keep_alive(endpoint: String) {
    let mut c = client(endpoint).await;
    let id = c.lease_grant(30, None).await.expect("grant").id();
    // The client's first keep-alive is answered inside lease_keep_alive.
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.expect("keep-alive");
    assert_eq!(keeper.id(), id);
    for _ in 0..3 {
        keeper.keep_alive().await.expect("send keep-alive");
        let r = stream.message().await.expect("recv").expect("a response");
        assert_eq!((r.id(), r.ttl()), (id, 30));
        assert_eq!(r.header().expect("header").revision(), 1);
    }
    // Several requests in flight: one response each, in order.
    for _ in 0..5 {
        keeper.keep_alive().await.expect("send keep-alive");
    }
    for _ in 0..5 {
        let r = stream.message().await.expect("recv").expect("a response");
        assert_eq!((r.id(), r.ttl()), (id, 30));
    }
    // A revoked lease answers TTL 0 on the same stream.
    c.lease_revoke(id).await.expect("revoke");
    keeper.keep_alive().await.expect("send keep-alive");
    let r = stream.message().await.expect("recv").expect("a response");
    assert_eq!((r.id(), r.ttl()), (id, 0));
    // The client closes its side: the stream ends cleanly.
    drop(keeper);
    assert!(stream.message().await.expect("clean end").is_none());
    // A lease that never existed: TTL 0, which the client reports as not found.
    match c.lease_keep_alive(0x4242).await {
        Err(Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
        other => panic!("keep-alive of an unknown lease: {other:?}"),
    }
}

#[test]
fn keep_alive_match_etcd() {
    run_both(keep_alive);
}

async fn expiry(endpoint: String) {
    let mut c = client(endpoint).await;
    // Renewed every 200 ms, a 1 s lease outlives a few of its TTLs.
    let kept = c.lease_grant(1, None).await.expect("grant kept").id();
    let gone = c.lease_grant(1, None).await.expect("grant gone").id();
    put_lease(&mut c, "kept", "1", kept).await;
    put_lease(&mut c, "gone1", "1", gone).await;
    put_lease(&mut c, "gone2", "2", gone).await;
    c.put("plain", "1", None).await.expect("put plain");
    assert_eq!(rev(&mut c).await, 5);
    let (mut keeper, mut stream) = c.lease_keep_alive(kept).await.expect("keep-alive");
    let start = Instant::now();
    let mut gone_after = None;
    while start.elapsed() < Duration::from_millis(2500) {
        keeper.keep_alive().await.expect("send");
        let r = stream.message().await.expect("recv").expect("response");
        assert_eq!(r.ttl(), 1, "kept lease renewed");
        if gone_after.is_none() && c.get("gone1", None).await.unwrap().kvs().is_empty() {
            gone_after = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone_after = match gone_after {
        Some(d) => d,
        None => wait_gone(&mut c, "gone1", Duration::from_secs(5)).await,
    };
    assert!(
        gone_after < Duration::from_secs(4),
        "expired after {gone_after:?}"
    );
    // Both keys went in one revision; the renewed lease and its key are still there.
    assert_eq!(rev(&mut c).await, 6);
    let keys: Vec<String> = all_keys(&mut c).await.into_iter().map(|k| k.0).collect();
    assert_eq!(keys, vec!["kept".to_string(), "plain".to_string()]);
    assert_eq!(ttl_of(&mut c, gone, false).await.1, -1);
    assert_eq!(lease_ids(&mut c).await, vec![kept]);
    // Once its keep-alives stop, the renewed lease expires too.
    drop(keeper);
    drop(stream);
    wait_gone(&mut c, "kept", Duration::from_secs(5)).await;
    assert_eq!(rev(&mut c).await, 7);
    assert!(lease_ids(&mut c).await.is_empty());
}

#[test]
fn expiry_matches_etcd() {
    run_both(expiry);
}

/// Leases and their keys survive a restart; a lease whose remaining TTL was checkpointed expires
/// on time afterwards instead of getting its full TTL again (checkpoints every second here).
#[test]
fn leases_survive_a_restart_without_being_extended() {
    let mut server = Server::start_in_tempdir_with_env(
        Kind::Retcd,
        ARGS,
        &[("RETCD_LEASE_CHECKPOINT_INTERVAL_MS", "1000")],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let endpoint = server.endpoint();
    let (long, short) = rt.block_on(async {
        let mut c = client(endpoint.clone()).await;
        let long = c.lease_grant(600, None).await.expect("grant long").id();
        let short = c.lease_grant(6, None).await.expect("grant short").id();
        put_lease(&mut c, "long", "1", long).await;
        put_lease(&mut c, "short", "1", short).await;
        // Wait until 3 s of the short lease have passed: a checkpoint recorded at most 4 s.
        let start = Instant::now();
        loop {
            let (_, ttl, _, _) = ttl_of(&mut c, short, false).await;
            if ttl <= 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "ttl {ttl}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (long, short)
    });
    server.kill9();
    server.start_again();
    rt.block_on(async {
        let mut c = client(server.endpoint()).await;
        let mut ids = vec![long, short];
        ids.sort();
        assert_eq!(lease_ids(&mut c).await, ids);
        let (_, ttl, granted, keys) = ttl_of(&mut c, long, true).await;
        assert_eq!((granted, keys), (600, vec!["long".to_string()]));
        assert!((590..=600).contains(&ttl), "long ttl {ttl}");
        let (_, ttl, granted, keys) = ttl_of(&mut c, short, true).await;
        assert_eq!((granted, keys), (6, vec!["short".to_string()]));
        // Not extended to its full 6 s: it expires from the checkpointed remaining TTL.
        assert!(ttl <= 3, "short ttl after restart {ttl}");
        let took = wait_gone(&mut c, "short", Duration::from_secs(8)).await;
        assert!(took < Duration::from_millis(4500), "expired after {took:?}");
        assert_eq!(ttl_of(&mut c, short, false).await.1, -1);
        assert_eq!(all_keys(&mut c).await.len(), 1);
        assert_eq!(lease_ids(&mut c).await, vec![long]);
    });
}
