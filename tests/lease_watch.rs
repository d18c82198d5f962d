//! Leases seen through the Watch service, with the `etcd-client` crate, against real etcd and the
//! real retcd binary.
//!
//! Each body runs against one etcd and one retcd concurrently (as in lease.rs), so every
//! expectation written here is etcd's answer too. Both servers run with `--election-timeout 500
//! --heartbeat-interval 100`, which makes etcd's minimum lease TTL 1 s. A lease's end (expiry or
//! revoke) deletes all its keys in one revision (etcd deletes them in key order, in one txn), so
//! a watcher gets them as one response; with prev_kv each event carries the deleted pair, lease
//! included. Waits are bounded; no sleep is used as synchronization.

mod support;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Event, EventType, GetOptions, PutOptions, WatchOptions, WatchResponse, WatchStream,
};
use support::rev;

/// Longest a test body may run against one server.
const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a test waits for one expected watch response (a 1 s lease expires well within it).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(8);

/// Flags for both servers: etcd's minimum lease TTL becomes 1 s.
const ARGS: &[&str] = &["--election-timeout", "500", "--heartbeat-interval", "100"];

/// Runs `body` (given the endpoint) against etcd and retcd ([`support::run_both`]).
fn run_both<F, Fut>(body: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    support::run_both(ARGS, BODY_TIMEOUT, move |t| body(t.endpoint))
}

async fn client(endpoint: String) -> Client {
    Client::connect([endpoint.as_str()], None)
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

async fn put(c: &mut Client, key: &str, value: &str, lease: i64) -> i64 {
    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    c.put(key, value, opts)
        .await
        .unwrap_or_else(|e| panic!("put {key:?} (lease {lease:x}): {e}"))
        .header()
        .expect("header")
        .revision()
}

/// The next response of `w`, within [`RESPONSE_TIMEOUT`].
async fn next(w: &mut WatchStream, what: &str) -> WatchResponse {
    match tokio::time::timeout(RESPONSE_TIMEOUT, w.message()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("watch stream ended while waiting for {what}"),
        Ok(Err(e)) => panic!("watch stream failed while waiting for {what}: {e}"),
        Err(_) => panic!("no watch response within {RESPONSE_TIMEOUT:?} while waiting for {what}"),
    }
}

/// A watch on `prefix` (with prev_kv if asked, from `start` if not 0), once the server confirmed
/// its creation.
async fn watch(c: &mut Client, prefix: &str, prev_kv: bool, start: i64) -> WatchStream {
    let mut opts = WatchOptions::new().with_prefix();
    if prev_kv {
        opts = opts.with_prev_key();
    }
    if start != 0 {
        opts = opts.with_start_revision(start);
    }
    let mut w = c.watch(prefix, Some(opts)).await.expect("watch");
    let created = next(&mut w, "the created response").await;
    assert!(
        created.created(),
        "first response not `created`: {created:?}"
    );
    assert!(
        created.events().is_empty(),
        "events in `created`: {created:?}"
    );
    w
}

/// (type, key, value, create, mod, version, lease) of an event's kv.
type Ev = (EventType, String, String, i64, i64, i64, i64);

fn ev(e: &Event) -> Ev {
    let kv = e.kv().expect("event kv");
    (
        e.event_type(),
        kv.key_str().unwrap().to_string(),
        kv.value_str().unwrap().to_string(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    )
}

/// (key, value, create, mod, version, lease) of an event's prev_kv.
fn prev(e: &Event) -> Option<(String, String, i64, i64, i64, i64)> {
    e.prev_kv().map(|kv| {
        (
            kv.key_str().unwrap().to_string(),
            kv.value_str().unwrap().to_string(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease(),
        )
    })
}

/// Reads responses until `n` events came (the puts of the setup); they may come grouped in any
/// way. Returns them.
async fn events(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut got = Vec::new();
    while got.len() < n {
        let r = next(w, &format!("{n} events (got {})", got.len())).await;
        got.extend(r.events().iter().cloned());
    }
    assert_eq!(got.len(), n, "more events than expected: {got:?}");
    got
}

/// Sets up keys `lw/c`, `lw/a`, `lw/b` (in that order) on one lease of `ttl` seconds, `lw/keep`
/// without a lease and `lw/other` on another (long) lease; the watchers of `lw/` see the 5 puts.
/// Returns (lease, its keys' (key, value, create revision), other lease).
async fn setup(
    c: &mut Client,
    watchers: &mut [&mut WatchStream],
    ttl: i64,
) -> (i64, Vec<(&'static str, &'static str, i64)>, i64) {
    let lease = c.lease_grant(ttl, None).await.expect("grant").id();
    let other = c.lease_grant(600, None).await.expect("grant other").id();
    let mut keys = Vec::new();
    for (k, v) in [("lw/c", "vc"), ("lw/a", "va"), ("lw/b", "vb")] {
        keys.push((k, v, put(c, k, v, lease).await));
    }
    put(c, "lw/keep", "kept", 0).await;
    put(c, "lw/other", "o", other).await;
    for w in watchers.iter_mut() {
        let puts = events(w, 5).await;
        assert!(
            puts.iter().all(|e| e.event_type() == EventType::Put),
            "{puts:?}"
        );
    }
    keys.sort();
    (lease, keys, other)
}

/// Checks that `r` holds exactly the deletes of `keys` (sorted), all at `r`'s revision, with
/// prev_kv (leased by `lease`) iff `prev_kv`; returns the revision.
fn check_deletes(r: &WatchResponse, keys: &[(&str, &str, i64)], lease: i64, prev_kv: bool) -> i64 {
    let at = r.header().expect("header").revision();
    let got: Vec<Ev> = r.events().iter().map(ev).collect();
    let want: Vec<Ev> = keys
        .iter()
        .map(|(k, _, _)| (EventType::Delete, k.to_string(), String::new(), 0, at, 0, 0))
        .collect();
    assert_eq!(got, want, "the lease's deletes in one response: {r:?}");
    let got_prev: Vec<_> = r.events().iter().map(prev).collect();
    let want_prev: Vec<_> = keys
        .iter()
        .map(|&(k, v, created)| {
            prev_kv.then(|| (k.to_string(), v.to_string(), created, created, 1, lease))
        })
        .collect();
    assert_eq!(got_prev, want_prev, "prev_kv of the deletes: {r:?}");
    at
}

/// What is left after the lease ended: `lw/keep` and `lw/other`, at revision `at`.
async fn check_rest(c: &mut Client, at: i64, other: i64) {
    let r = c
        .get("lw/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get lw/");
    let left: Vec<(String, i64)> = r
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_string(), kv.lease()))
        .collect();
    assert_eq!(
        left,
        vec![("lw/keep".to_string(), 0), ("lw/other".to_string(), other)]
    );
    assert_eq!(r.header().expect("header").revision(), at, "revision");
}

/// A watcher created after the lease ended, from its revision, gets the same single response
/// (the history path of the Watch service).
async fn check_history(c: &mut Client, keys: &[(&str, &str, i64)], lease: i64, at: i64) {
    let mut w = watch(c, "lw/", true, at).await;
    let r = next(&mut w, "the deletes from history").await;
    assert_eq!(check_deletes(&r, keys, lease, true), at);
}

// ---- bodies ----

async fn expiry_deletes_in_one_response(endpoint: String) {
    let mut c = client(endpoint).await;
    let mut with_prev = watch(&mut c, "lw/", true, 0).await;
    let mut plain = watch(&mut c, "lw/", false, 0).await;
    let (lease, keys, other) = setup(&mut c, &mut [&mut with_prev, &mut plain], 1).await;
    let before = rev(&mut c).await;

    // Nothing renews the lease: it expires within about a second.
    let r = next(&mut with_prev, "the expiry's deletes").await;
    let at = check_deletes(&r, &keys, lease, true);
    assert_eq!(at, before + 1, "expiry takes one revision");
    let r = next(&mut plain, "the expiry's deletes").await;
    assert_eq!(check_deletes(&r, &keys, lease, false), at);

    check_rest(&mut c, at, other).await;
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl");
    assert_eq!(ttl.ttl(), -1, "the expired lease is gone");
    check_history(&mut c, &keys, lease, at).await;
}

#[test]
fn expiry_deletes_all_keys_in_one_response() {
    run_both(expiry_deletes_in_one_response);
}

async fn revoke_deletes_in_one_response(endpoint: String) {
    let mut c = client(endpoint).await;
    let mut with_prev = watch(&mut c, "lw/", true, 0).await;
    let mut plain = watch(&mut c, "lw/", false, 0).await;
    let (lease, keys, other) = setup(&mut c, &mut [&mut with_prev, &mut plain], 60).await;
    let before = rev(&mut c).await;

    let revoked = c.lease_revoke(lease).await.expect("revoke");
    let at = revoked.header().expect("header").revision();
    assert_eq!(at, before + 1, "revoke takes one revision");
    let r = next(&mut with_prev, "the revoke's deletes").await;
    assert_eq!(check_deletes(&r, &keys, lease, true), at);
    let r = next(&mut plain, "the revoke's deletes").await;
    assert_eq!(check_deletes(&r, &keys, lease, false), at);

    check_rest(&mut c, at, other).await;
    check_history(&mut c, &keys, lease, at).await;

    // Revoking a lease without keys takes no revision and sends no event: the next event the
    // watcher gets is the put after it.
    let empty = c.lease_grant(60, None).await.expect("grant").id();
    let r = c.lease_revoke(empty).await.expect("revoke keyless");
    assert_eq!(r.header().expect("header").revision(), at);
    let after = put(&mut c, "lw/after", "x", 0).await;
    assert_eq!(after, at + 1);
    let r = next(&mut with_prev, "the put after the keyless revoke").await;
    let got: Vec<Ev> = r.events().iter().map(ev).collect();
    assert_eq!(
        got,
        vec![(
            EventType::Put,
            "lw/after".to_string(),
            "x".to_string(),
            after,
            after,
            1,
            0
        )]
    );
}

#[test]
fn revoke_deletes_all_keys_in_one_response() {
    run_both(revoke_deletes_in_one_response);
}
