//! The Watch service through the `etcd-client` crate against the real retcd binary.
//!
//! Behaviour tests run one body against a real etcd and retcd concurrently (as tests/kv_client.rs
//! does), so every expectation written here is etcd's answer too. The stress and slow-consumer
//! tests run against retcd only and check every watcher's events against the write responses.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use support::{Kind, Server};

/// Longest a behaviour body may run against one server.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a test waits for one expected watch response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `body` (given the endpoint) against etcd and retcd ([`support::run_both`]).
fn run_both<F, Fut>(extra_args: &[&str], body: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    support::run_both(extra_args, BODY_TIMEOUT, move |t| body(t.endpoint))
}

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None)
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// An event as compared: (PUT/DELETE, key, value, create, mod, version, prev (value, mod)).
type Ev = (
    &'static str,
    String,
    String,
    i64,
    i64,
    i64,
    Option<(String, i64)>,
);

fn ev_of(e: &etcd_client::Event) -> Ev {
    let kv = e.kv().expect("event kv");
    (
        match e.event_type() {
            EventType::Put => "PUT",
            EventType::Delete => "DELETE",
        },
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        e.prev_kv().map(|p| {
            (
                String::from_utf8_lossy(p.value()).into_owned(),
                p.mod_revision(),
            )
        }),
    )
}

fn put(key: &str, value: &str, create: i64, modr: i64, ver: i64) -> Ev {
    ("PUT", key.into(), value.into(), create, modr, ver, None)
}
fn del(key: &str, modr: i64) -> Ev {
    ("DELETE", key.into(), String::new(), 0, modr, 0, None)
}
fn with_prev(mut e: Ev, value: &str, modr: i64) -> Ev {
    e.6 = Some((value.into(), modr));
    e
}

async fn next(s: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(RESPONSE_TIMEOUT, s.message())
        .await
        .expect("a watch response in time")
        .expect("watch stream ok")
        .expect("watch stream open")
}

/// Reads responses until `n` events arrived for each watch id in `want`; returns the events by
/// watch id and every response's (watch id, header revision, event count).
async fn events_for(
    s: &mut WatchStream,
    want: &[(i64, usize)],
) -> (BTreeMap<i64, Vec<Ev>>, Vec<(i64, i64, usize)>) {
    let mut got: BTreeMap<i64, Vec<Ev>> = BTreeMap::new();
    let mut responses = Vec::new();
    while want
        .iter()
        .any(|(id, n)| got.get(id).map_or(0, |v| v.len()) < *n)
    {
        let r = next(s).await;
        assert!(!r.created() && !r.canceled(), "unexpected {r:?}");
        responses.push((
            r.watch_id(),
            r.header().expect("header").revision(),
            r.events().len(),
        ));
        got.entry(r.watch_id())
            .or_default()
            .extend(r.events().iter().map(ev_of));
    }
    (got, responses)
}

/// Asserts that nothing more arrives for a short while (no duplicates, nothing unexpected).
async fn quiet(s: &mut WatchStream) {
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), s.message()).await {
        panic!("unexpected response {r:?}");
    }
}

async fn created(s: &mut WatchStream) -> (i64, i64) {
    let r = next(s).await;
    assert!(r.created() && !r.canceled(), "expected created, got {r:?}");
    (r.watch_id(), r.header().expect("header").revision())
}

#[test]
fn key_prefix_range_and_from_key_watchers_on_one_stream() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        let mut s = c.watch("foo", None).await.unwrap();
        assert_eq!(created(&mut s).await, (0, 1));
        s.watch("foo", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (1, 1));
        s.watch("a", Some(WatchOptions::new().with_range("c")))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (2, 1));
        s.watch("m", Some(WatchOptions::new().with_from_key()))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (3, 1));
        c.put("foo", "1", None).await.unwrap(); // 2
        c.put("foo1", "2", None).await.unwrap(); // 3
        c.put("b", "3", None).await.unwrap(); // 4
        c.put("c", "x", None).await.unwrap(); // 5: outside [a, c)
        c.put("z", "4", None).await.unwrap(); // 6
        c.delete("foo", None).await.unwrap(); // 7
        let (got, responses) = events_for(&mut s, &[(0, 2), (1, 3), (2, 1), (3, 1)]).await;
        assert_eq!(got[&0], vec![put("foo", "1", 2, 2, 1), del("foo", 7)]);
        assert_eq!(
            got[&1],
            vec![
                put("foo", "1", 2, 2, 1),
                put("foo1", "2", 3, 3, 1),
                del("foo", 7)
            ]
        );
        assert_eq!(got[&2], vec![put("b", "3", 4, 4, 1)]);
        assert_eq!(got[&3], vec![put("z", "4", 6, 6, 1)]);
        // Live events: one response per watcher and revision, headed by that revision.
        assert!(responses.iter().all(|&(_, rev, n)| n == 1 && rev >= 2));
        quiet(&mut s).await;
    });
}

#[test]
fn start_revision_in_the_past_catches_up_with_prev_kv() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        c.put("k", "1", None).await.unwrap(); // 2
        c.put("other", "x", None).await.unwrap(); // 3
        c.put("k", "2", None).await.unwrap(); // 4
        c.delete("k", None).await.unwrap(); // 5
        c.put("k", "3", None).await.unwrap(); // 6
        let opts = WatchOptions::new().with_start_revision(2).with_prev_key();
        let mut s = c.watch("k", Some(opts)).await.unwrap();
        assert_eq!(created(&mut s).await, (0, 6));
        let (got, responses) = events_for(&mut s, &[(0, 4)]).await;
        assert_eq!(
            got[&0],
            vec![
                put("k", "1", 2, 2, 1),
                with_prev(put("k", "2", 2, 4, 2), "1", 2),
                with_prev(del("k", 5), "2", 4),
                put("k", "3", 6, 6, 1),
            ]
        );
        // History comes in one response headed by the current revision (etcd's syncWatchers).
        assert_eq!(responses, vec![(0, 6, 4)]);
        // Then live events.
        c.put("k", "4", None).await.unwrap(); // 7
        let (got, _) = events_for(&mut s, &[(0, 1)]).await;
        assert_eq!(got[&0], vec![with_prev(put("k", "4", 6, 7, 2), "3", 6)]);
        quiet(&mut s).await;
    });
}

#[test]
fn compacted_start_revision_is_created_then_canceled() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        for i in 0..4 {
            c.put("k", format!("{i}"), None).await.unwrap(); // 2..=5
        }
        c.compact(4, None).await.unwrap();
        let mut s = c
            .watch("k", Some(WatchOptions::new().with_start_revision(2)))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (0, 5));
        let r = next(&mut s).await;
        assert!(r.canceled() && !r.created(), "{r:?}");
        assert_eq!(r.watch_id(), 0);
        assert_eq!(r.compact_revision(), 4);
        assert_eq!(r.cancel_reason(), "");
        assert!(r.events().is_empty());
        assert_eq!(r.header().expect("header").revision(), 0);
        // The compacted revision itself may still be watched (etcd: minRev < compactRev).
        s.watch("k", Some(WatchOptions::new().with_start_revision(4)))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (1, 5));
        let (got, _) = events_for(&mut s, &[(1, 2)]).await;
        assert_eq!(
            got[&1],
            vec![put("k", "2", 2, 4, 3), put("k", "3", 2, 5, 4)]
        );
        quiet(&mut s).await;
    });
}

#[test]
fn future_start_revision_waits_for_that_revision() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        let mut s = c
            .watch("f", Some(WatchOptions::new().with_start_revision(4)))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (0, 1));
        for i in 0..4 {
            c.put("f", format!("{i}"), None).await.unwrap(); // 2..=5
        }
        let (got, _) = events_for(&mut s, &[(0, 2)]).await;
        assert_eq!(
            got[&0],
            vec![put("f", "2", 2, 4, 3), put("f", "3", 2, 5, 4)]
        );
        quiet(&mut s).await;
    });
}

#[test]
fn filters_and_prev_kv() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        let mut s = c
            .watch(
                "x",
                Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
            )
            .await
            .unwrap();
        created(&mut s).await;
        s.watch(
            "x",
            Some(
                WatchOptions::new()
                    .with_filters([WatchFilterType::NoDelete])
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
        created(&mut s).await;
        c.put("x", "1", None).await.unwrap(); // 2
        c.put("x", "2", None).await.unwrap(); // 3
        c.delete("x", None).await.unwrap(); // 4
        c.put("x", "3", None).await.unwrap(); // 5
        let (got, _) = events_for(&mut s, &[(0, 1), (1, 3)]).await;
        assert_eq!(got[&0], vec![del("x", 4)]);
        assert_eq!(
            got[&1],
            vec![
                put("x", "1", 2, 2, 1),
                with_prev(put("x", "2", 2, 3, 2), "1", 2),
                put("x", "3", 5, 5, 1),
            ]
        );
        quiet(&mut s).await;
    });
}

#[test]
fn client_watch_ids_duplicates_and_cancel() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        let mut s = c
            .watch("w", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        assert_eq!(created(&mut s).await, (7, 1));
        s.watch("w", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        let r = next(&mut s).await;
        assert!(r.created() && r.canceled(), "{r:?}");
        assert_eq!(r.watch_id(), -1);
        assert_eq!(
            r.cancel_reason(),
            "mvcc: duplicate watch ID provided on the WatchStream"
        );
        // A range with key >= range_end.
        s.watch("z", Some(WatchOptions::new().with_range("a")))
            .await
            .unwrap();
        let r = next(&mut s).await;
        assert!(r.created() && r.canceled(), "{r:?}");
        assert_eq!(r.watch_id(), -1);
        assert_eq!(r.cancel_reason(), "mvcc: watcher range is empty");
        // Automatic ids start at 0.
        s.watch("w", None).await.unwrap();
        assert_eq!(created(&mut s).await, (0, 1));
        c.put("w", "1", None).await.unwrap(); // 2
        let (got, _) = events_for(&mut s, &[(7, 1), (0, 1)]).await;
        assert_eq!(got[&7], vec![put("w", "1", 2, 2, 1)]);
        s.cancel(7).await.unwrap();
        let r = next(&mut s).await;
        assert!(r.canceled() && !r.created(), "{r:?}");
        assert_eq!((r.watch_id(), r.header().unwrap().revision()), (7, 2));
        // Canceling an unknown id answers nothing.
        s.cancel(99).await.unwrap();
        c.put("w", "2", None).await.unwrap(); // 3
        let (got, _) = events_for(&mut s, &[(0, 1)]).await;
        assert_eq!(got[&0], vec![put("w", "2", 2, 3, 2)]);
        quiet(&mut s).await;
    });
}

#[test]
fn progress_request_and_txn_events_together() {
    run_both(&[], |ep| async move {
        let mut c = connect(&ep).await;
        c.put("t/a", "0", None).await.unwrap(); // 2
        let mut s = c
            .watch("t/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        created(&mut s).await;
        let txn = Txn::new()
            .when([Compare::version("t/a", CompareOp::Equal, 1)])
            .and_then([
                TxnOp::put("t/b", "1", None),
                TxnOp::put("t/c", "2", Some(PutOptions::new())),
                TxnOp::delete("t/a", Some(DeleteOptions::new())),
            ]);
        assert!(c.txn(txn).await.unwrap().succeeded()); // 3
        let (got, responses) = events_for(&mut s, &[(0, 3)]).await;
        assert_eq!(
            got[&0],
            vec![
                put("t/b", "1", 3, 3, 1),
                put("t/c", "2", 3, 3, 1),
                del("t/a", 3)
            ]
        );
        assert_eq!(responses, vec![(0, 3, 3)], "one revision, one response");
        s.request_progress().await.unwrap();
        let r = next(&mut s).await;
        assert_eq!(r.watch_id(), -1);
        assert!(r.events().is_empty() && !r.created() && !r.canceled());
        assert_eq!(r.header().unwrap().revision(), 3);
        quiet(&mut s).await;
    });
}

#[test]
fn progress_notify_interval() {
    run_both(
        &["--experimental-watch-progress-notify-interval=500ms"],
        |ep| async move {
            let mut c = connect(&ep).await;
            c.put("p", "1", None).await.unwrap(); // 2
            let mut s = c
                .watch("p", Some(WatchOptions::new().with_progress_notify()))
                .await
                .unwrap();
            assert_eq!(created(&mut s).await, (0, 2));
            let r = next(&mut s).await;
            assert_eq!(r.watch_id(), 0);
            assert!(r.events().is_empty() && !r.canceled());
            assert_eq!(r.header().unwrap().revision(), 2);
        },
    );
}

#[test]
fn fragmented_responses() {
    // etcd splits at --max-request-bytes + 512 KiB: 20 deletes with 60 KB prev_kvs exceed it.
    run_both(&["--max-request-bytes=65536"], |ep| async move {
        let mut c = connect(&ep).await;
        let big = "v".repeat(60_000);
        for i in 10..30 {
            c.put(format!("g/{i}"), big.as_str(), None).await.unwrap(); // 2..=11
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_fragment();
        let mut s = c.watch("g/", Some(opts)).await.unwrap();
        created(&mut s).await;
        c.delete("g/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap(); // 22
        let (got, responses) = events_for(&mut s, &[(0, 20)]).await;
        assert!(responses.len() > 1, "fragmented: {responses:?}");
        assert!(responses.iter().all(|&(_, rev, _)| rev == 22));
        let want: Vec<Ev> = (10..30)
            .map(|i| with_prev(del(&format!("g/{i}"), 22), &big, i - 8))
            .collect();
        assert_eq!(got[&0], want);
        quiet(&mut s).await;
    });
}

// ---- scale and slow consumers (retcd only) ----

/// The stress key space: "s/GG/H/I" for GG < [`STRESS_GROUPS`] and H, I < 10. A key's id is
/// GG·100 + H·10 + I, so ids sort like the keys, a narrow prefix "s/GG/H/" is 10 consecutive ids
/// and a group prefix "s/GG/" 100.
const STRESS_GROUPS: u32 = 40;
const STRESS_KEYS: u32 = STRESS_GROUPS * 100;

fn stress_key(id: u32) -> String {
    format!("s/{:02}/{}/{}", id / 100, id / 10 % 10, id % 10)
}

/// The id of a stress key; `u32::MAX` for any other key (which no watcher expects).
fn stress_key_id(key: &[u8]) -> u32 {
    match key {
        [b's', b'/', g1, g2, b'/', h, b'/', i]
            if [g1, g2, h, i].iter().all(|c| c.is_ascii_digit()) =>
        {
            let d = |c: &u8| u32::from(c - b'0');
            d(g1) * 1000 + d(g2) * 100 + d(h) * 10 + d(i)
        }
        _ => u32::MAX,
    }
}

/// Every put writes a value "v<n>" with a unique n ≥ 1; 0 stands for the empty value of a
/// delete, `u32::MAX` for anything else (which no watcher expects).
fn stress_value_id(value: &[u8]) -> u32 {
    match value {
        [] => 0,
        [b'v', digits @ ..] => std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(u32::MAX),
        _ => u32::MAX,
    }
}

/// How a stress watcher names its keys.
#[derive(Clone, Debug)]
enum Shape {
    Key,
    Prefix(String),
    Range,
    FromKey,
}

/// What a stress watcher watches: the keys with ids in `lo..hi`, from `start`.
#[derive(Clone, Debug)]
struct Spec {
    shape: Shape,
    lo: u32,
    hi: u32,
    /// 0: from the created revision on (filled in from the created response by the checker).
    start: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Spec {
    /// A watcher for a stream whose current revision is about `now` (≥ 1). `prev` is the
    /// stream's previous watcher, whose keys it may watch again with other options.
    fn random(rng: &mut Rng, prev: Option<&Spec>, now: i64) -> Spec {
        let (shape, lo, hi) = match prev {
            Some(p) if rng.below(100) < 8 => (p.shape.clone(), p.lo, p.hi),
            _ => match rng.below(10_000) {
                // One key (each key is watched by about 2.5 watchers).
                0..9_500 => {
                    let k = rng.below(STRESS_KEYS.into()) as u32;
                    (Shape::Key, k, k + 1)
                }
                // A narrow prefix "s/GG/H/" (10 keys).
                9_500..9_800 => {
                    let lo = rng.below((STRESS_KEYS / 10).into()) as u32 * 10;
                    let p = stress_key(lo);
                    (Shape::Prefix(p[..p.len() - 1].to_string()), lo, lo + 10)
                }
                // A range of 2 to 20 keys, across prefixes.
                9_800..9_920 => {
                    let lo = rng.below((STRESS_KEYS - 1).into()) as u32;
                    let hi = (lo + 2 + rng.below(19) as u32).min(STRESS_KEYS);
                    (Shape::Range, lo, hi)
                }
                // From one of the last 20 keys on.
                9_920..9_950 => {
                    let lo = STRESS_KEYS - 1 - rng.below(20) as u32;
                    (Shape::FromKey, lo, STRESS_KEYS)
                }
                // A group prefix "s/GG/" (100 keys).
                9_950..9_990 => {
                    let lo = rng.below(STRESS_GROUPS.into()) as u32 * 100;
                    let p = stress_key(lo);
                    (Shape::Prefix(p[..p.len() - 3].to_string()), lo, lo + 100)
                }
                // "s/1": a quarter of the keys.
                _ => (Shape::Prefix("s/1".to_string()), 1000, 2000),
            },
        };
        let start = match rng.below(100) {
            // In the past (at most `now`): catch-up from history.
            0..20 => 2 + rng.below((now - 1).max(1) as u64) as i64,
            // In the future.
            20..22 => now + 1 + rng.below(60_000) as i64,
            _ => 0,
        };
        Spec {
            shape,
            lo,
            hi,
            start,
            no_put: rng.below(8) == 0,
            no_delete: rng.below(8) == 0,
            prev_kv: rng.below(3) == 0,
        }
    }

    fn wants(&self, o: &Op) -> bool {
        (self.lo..self.hi).contains(&o.key)
            && o.rev >= self.start
            && if o.put { !self.no_put } else { !self.no_delete }
    }

    fn key_and_options(&self) -> (String, WatchOptions) {
        let mut o = WatchOptions::new();
        let key = match &self.shape {
            Shape::Key => stress_key(self.lo),
            Shape::Prefix(p) => {
                o = o.with_prefix();
                p.clone()
            }
            Shape::Range => {
                o = o.with_range(stress_key(self.hi));
                stress_key(self.lo)
            }
            Shape::FromKey => {
                o = o.with_from_key();
                stress_key(self.lo)
            }
        };
        if self.start > 0 {
            o = o.with_start_revision(self.start);
        }
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(WatchFilterType::NoPut);
        }
        if self.no_delete {
            filters.push(WatchFilterType::NoDelete);
        }
        if !filters.is_empty() {
            o = o.with_filters(filters);
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        (key, o)
    }
}

/// One event, as the oracle derives it from the write responses or as a watcher received it:
/// revision, key id, put?, value id, create revision, version, prev_kv's value id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Op {
    rev: i64,
    key: u32,
    put: bool,
    value: u32,
    create: i64,
    version: i64,
    prev: Option<u32>,
}

/// Small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One change from a write response: (revision, key id, Some(value id) for a put, None for a
/// delete). The changes of one revision are in the order they were applied.
type Change = (i64, u32, Option<u32>);

/// What the stress writers share.
#[derive(Default)]
struct WriteState {
    /// Operations taken so far (each put or delete, alone or in a Txn, is one).
    claimed: AtomicU64,
    /// The highest revision a write response reported.
    seen: AtomicI64,
    /// The last value id handed out.
    values: AtomicU32,
}

/// Share of the stress write requests that are Txns of 2 to 8 operations (percent).
const STRESS_TXN_PERCENT: u64 = 36;

/// `ops` put and delete operations from `tasks` concurrent tasks spread over `clients`, on
/// random stress keys. [`STRESS_TXN_PERCENT`] of the requests are Txns of 2 to 8 puts (3 in 4)
/// and deletes on distinct keys, so that one revision holds several events; the others are
/// single Puts (70%), Deletes (23%) and Deletes of a narrow prefix (with prev_kv, to learn which
/// keys went). Returns every change and the number of requests (a delete of a missing key
/// changes nothing and is left out).
async fn stress_writes(
    clients: &[Client],
    tasks: usize,
    ops: u64,
    seed: u64,
    state: Arc<WriteState>,
) -> (Vec<Change>, u64) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut c = clients[t % clients.len()].clone();
        let state = state.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut out: Vec<Change> = Vec::new();
            let mut requests = 0;
            let new_value = || state.values.fetch_add(1, Ordering::Relaxed) + 1;
            loop {
                let txn = rng.below(100) < STRESS_TXN_PERCENT;
                let single = rng.below(100);
                let want = if txn { 2 + rng.below(7) } else { 1 };
                let first = state.claimed.fetch_add(want, Ordering::Relaxed);
                if first >= ops {
                    break;
                }
                let n = want.min(ops - first);
                requests += 1;
                let key = rng.below(STRESS_KEYS.into()) as u32;
                let rev = if n > 1 {
                    let mut plan: Vec<(u32, Option<u32>)> = Vec::new();
                    while plan.len() < n as usize {
                        let k = rng.below(STRESS_KEYS.into()) as u32;
                        if plan.iter().all(|p| p.0 != k) {
                            plan.push((k, (rng.below(4) != 0).then(new_value)));
                        }
                    }
                    let txn_ops: Vec<TxnOp> = plan
                        .iter()
                        .map(|&(k, v)| match v {
                            Some(v) => TxnOp::put(stress_key(k), format!("v{v}"), None),
                            None => TxnOp::delete(stress_key(k), None),
                        })
                        .collect();
                    let r = c.txn(Txn::new().and_then(txn_ops)).await.expect("txn");
                    assert!(r.succeeded());
                    let rev = r.header().unwrap().revision();
                    let responses = r.op_responses();
                    assert_eq!(responses.len(), plan.len());
                    for (&(k, v), resp) in plan.iter().zip(responses) {
                        match (v, resp) {
                            (Some(_), TxnOpResponse::Put(_)) => out.push((rev, k, v)),
                            (None, TxnOpResponse::Delete(d)) => {
                                if d.deleted() > 0 {
                                    out.push((rev, k, None));
                                }
                            }
                            (_, other) => panic!("unexpected txn response {other:?}"),
                        }
                    }
                    rev
                } else if txn || single < 70 {
                    let v = new_value();
                    let r = c
                        .put(stress_key(key), format!("v{v}"), None)
                        .await
                        .expect("put");
                    let rev = r.header().unwrap().revision();
                    out.push((rev, key, Some(v)));
                    rev
                } else if single < 94 {
                    let r = c.delete(stress_key(key), None).await.expect("delete");
                    let rev = r.header().unwrap().revision();
                    if r.deleted() > 0 {
                        out.push((rev, key, None));
                    }
                    rev
                } else {
                    let k = stress_key(key / 10 * 10);
                    let opts = DeleteOptions::new().with_prefix().with_prev_key();
                    let r = c
                        .delete(&k[..k.len() - 1], Some(opts))
                        .await
                        .expect("delete prefix");
                    let rev = r.header().unwrap().revision();
                    assert_eq!(r.deleted(), r.prev_kvs().len() as i64);
                    out.extend(
                        r.prev_kvs()
                            .iter()
                            .map(|kv| (rev, stress_key_id(kv.key()), None)),
                    );
                    rev
                };
                state.seen.fetch_max(rev, Ordering::Relaxed);
            }
            (out, requests)
        }));
    }
    let mut all = Vec::new();
    let mut requests = 0;
    for h in handles {
        let (out, n) = h.await.expect("writer");
        all.extend(out);
        requests += n;
    }
    (all, requests)
}

/// Orders the changes by revision (keeping the order within one revision) and derives each
/// one's event: create revision, version and previous live value.
fn oracle(mut changes: Vec<Change>) -> Vec<Op> {
    changes.sort_by_key(|c| c.0);
    // Key id → (value id, create revision, version) while the key lives.
    let mut live: HashMap<u32, (u32, i64, i64)> = HashMap::new();
    changes
        .into_iter()
        .map(|(rev, key, value)| match value {
            Some(v) => {
                let prev = live.get(&key).copied();
                let (create, version) = prev.map_or((rev, 1), |p| (p.1, p.2 + 1));
                live.insert(key, (v, create, version));
                Op {
                    rev,
                    key,
                    put: true,
                    value: v,
                    create,
                    version,
                    prev: prev.map(|p| p.0),
                }
            }
            None => {
                let prev = live
                    .remove(&key)
                    .expect("a delete that deleted removes a live key");
                Op {
                    rev,
                    key,
                    put: false,
                    value: 0,
                    create: 0,
                    version: 0,
                    prev: Some(prev.0),
                }
            }
        })
        .collect()
}

/// Per watch id: every event and every response's (first, last) revision; and the header
/// revision of each created response.
type Received = (BTreeMap<i64, WatcherGot>, BTreeMap<i64, i64>);
/// One watcher's events and its responses' (first, last) revisions.
type WatcherGot = (Vec<Op>, Vec<(i64, i64)>);

/// Reads one stream until told the final revision and a progress response at or after it
/// arrived (progress is answered only when every watcher of the stream is synced, after every
/// event up to it). A `paused` reader reads nothing before it is told the final revision.
async fn read_stream(
    mut stream: etcd_client::WatchResponseStream,
    mut sender: etcd_client::WatchRequestSender,
    mut done: tokio::sync::mpsc::Receiver<i64>,
    paused: bool,
) -> Received {
    let mut got: Received = (BTreeMap::new(), BTreeMap::new());
    let mut target: Option<i64> = None;
    loop {
        tokio::select! {
            m = stream.message(), if !(paused && target.is_none()) => {
                let r = m.expect("stream ok").expect("stream open");
                assert!(!r.canceled(), "{r:?}");
                if r.created() {
                    let first = got.1.insert(r.watch_id(), r.header().unwrap().revision());
                    assert!(first.is_none(), "watch id {} created twice", r.watch_id());
                    continue;
                }
                if r.watch_id() == -1 {
                    let rev = r.header().unwrap().revision();
                    match target {
                        Some(t) if rev >= t => return got,
                        Some(_) => sender.request_progress().await.unwrap(),
                        None => {}
                    }
                    continue;
                }
                let evs = r.events();
                assert!(!evs.is_empty(), "{r:?}");
                let e = got.0.entry(r.watch_id()).or_default();
                e.1.push((
                    evs[0].kv().unwrap().mod_revision(),
                    evs[evs.len() - 1].kv().unwrap().mod_revision(),
                ));
                for ev in evs {
                    let kv = ev.kv().unwrap();
                    e.0.push(Op {
                        rev: kv.mod_revision(),
                        key: stress_key_id(kv.key()),
                        put: ev.event_type() == EventType::Put,
                        value: stress_value_id(kv.value()),
                        create: kv.create_revision(),
                        version: kv.version(),
                        prev: ev.prev_kv().map(|p| stress_value_id(p.value())),
                    });
                }
            }
            t = done.recv(), if target.is_none() => {
                target = Some(t.expect("final revision"));
                sender.request_progress().await.unwrap();
            }
        }
    }
}

/// A stress stream: its watchers (automatic ids, in order of creation), its reader, and where
/// to tell the reader the final revision.
struct StressStream {
    specs: Vec<(i64, Spec)>,
    reader: tokio::task::JoinHandle<Received>,
    done: tokio::sync::mpsc::Sender<i64>,
}

/// Opens stream `s` on `client` with `watchers` random watchers; `now` is a recent revision.
async fn open_stress_stream(
    client: &Client,
    s: usize,
    watchers: usize,
    now: i64,
    paused: bool,
) -> StressStream {
    let mut rng = Rng(0x5EED_0000_0000_0001 ^ (s as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut specs: Vec<(i64, Spec)> = Vec::new();
    let mut stream: Option<WatchStream> = None;
    for w in 0..watchers {
        let mut spec = Spec::random(&mut rng, specs.last().map(|p| &p.1), now);
        if paused && w == 0 {
            // Every change, so that the unread responses exceed the client's HTTP/2 window.
            spec = Spec {
                shape: Shape::Prefix("s/".to_string()),
                lo: 0,
                hi: STRESS_KEYS,
                start: 0,
                no_put: false,
                no_delete: false,
                prev_kv: false,
            };
        }
        let (key, opts) = spec.key_and_options();
        match stream.as_mut() {
            None => {
                stream = Some(
                    client
                        .watch_client()
                        .watch(key, Some(opts))
                        .await
                        .expect("watch"),
                )
            }
            Some(st) => st.watch(key, Some(opts)).await.expect("watch"),
        }
        specs.push((w as i64, spec));
    }
    let (done, rx) = tokio::sync::mpsc::channel(1);
    let (sender, stream) = stream.expect("a watcher").split();
    StressStream {
        specs,
        reader: tokio::spawn(read_stream(stream, sender, rx, paused)),
        done,
    }
}

/// What the checked watchers got, to show the test exercised what it means to.
#[derive(Debug, Default)]
struct Tally {
    events: usize,
    /// Events of a revision that brought the watcher more than one event (Txns, prefix deletes).
    shared_revision: usize,
    /// Events at or before the watcher's created revision (caught up from history).
    history: usize,
}

/// Checks that a watcher got exactly the changes it watches, in order, each once, with prev_kv
/// when asked, and every revision within one response; counts what it got into `tally`.
/// `by_key` lists the indexes into `ops` of each key's changes; `created` is the header revision
/// of the watcher's created response.
fn check_watcher(
    name: &str,
    spec: &Spec,
    created: i64,
    ops: &[Op],
    by_key: &[Vec<usize>],
    got: Option<&WatcherGot>,
    tally: &mut Tally,
) {
    let mut idx: Vec<usize> = by_key[spec.lo as usize..spec.hi as usize]
        .iter()
        .flatten()
        .copied()
        .collect();
    idx.sort_unstable();
    let want: Vec<Op> = idx
        .into_iter()
        .map(|i| ops[i])
        .filter(|o| spec.wants(o))
        .map(|o| Op {
            prev: if spec.prev_kv { o.prev } else { None },
            ..o
        })
        .collect();
    let empty = (Vec::new(), Vec::new());
    let (events, responses) = got.unwrap_or(&empty);
    if *events != want {
        let first_diff = events
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(events.len().min(want.len()));
        panic!(
            "{name} {spec:?}: got {} events, want {}; first difference at {first_diff}: got {:?} want {:?}",
            events.len(),
            want.len(),
            events.get(first_diff),
            want.get(first_diff),
        );
    }
    for pair in responses.windows(2) {
        assert!(
            pair[0].1 < pair[1].0,
            "{name}: a revision split over two responses: {pair:?}"
        );
    }
    tally.events += events.len();
    tally.shared_revision += events
        .iter()
        .enumerate()
        .filter(|&(i, e)| {
            (i > 0 && events[i - 1].rev == e.rev)
                || events.get(i + 1).is_some_and(|n| n.rev == e.rev)
        })
        .count();
    tally.history += events.iter().filter(|e| e.rev <= created).count();
}

/// CPU time (user + system, in clock ticks) of a process's threads, summed by thread name.
fn cpu_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("stat")),
        ) else {
            continue;
        };
        // Fields after the ")" that ends the command: utime and stime are the 12th and 13th.
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: u64 = f
            .get(11..13)
            .map_or(0, |v| v.iter().filter_map(|x| x.parse::<u64>().ok()).sum());
        *out.entry(comm.trim().to_string()).or_default() += ticks;
    }
    out
}

/// Ticks spent per thread name between two [`cpu_ticks`] readings, for the log.
fn cpu_spent(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    after
        .iter()
        .map(|(name, t)| (name, t - before.get(name).copied().unwrap_or(0).min(*t)))
        .filter(|(_, t)| *t > 0)
        .map(|(name, t)| format!("{name} {:.1}s", t as f64 / 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scale: 10,000 watchers over 100 streams on 10 connections (the kernel spreads
/// connections over the server's cores), 100 watchers per stream with automatic ids, on 4,000
/// keys: mostly single keys (each watched by about 2.5 watchers, sometimes twice in one stream),
/// a few hundred narrow prefixes and ranges across prefixes, and some from-key, group-prefix and
/// quarter-of-the-keys watchers, all overlapping; with filters and prev_kv; a fifth start at a
/// past revision (catch-up from history), a few in the future. 80 streams are opened after a
/// 5,000-operation warm-up, 20 more when half of the writes ran (their past watchers catch up
/// while writes go on). Five streams, on five connections, also watch every key and read nothing
/// until the writes are done: their unread responses exceed the client's HTTP/2 stream window,
/// so the server's streams lag and catch up from history. The writes are 100,000 puts and
/// deletes from 256 concurrent requests on 4 connections: single Puts, Deletes and prefix
/// Deletes, and Txns of 2 to 8 operations (see [`stress_writes`]; about 41,000 requests, so
/// several events share a revision). Every watcher's events (about 1.07 million) are compared
/// with what the write responses imply: every event once, in order, with its create revision,
/// version and prev_kv, and no revision split over two responses. Measured on 2 cores, debug
/// build: 35 to 45 s (early December 2026), about 30 s of it the writes; 75 s alone and about
/// 100 s inside the workspace suite after issue 12 (58 s of writes, the sequencer core busy;
/// the release build got no slower, perf/results/2026-12-03-vm-issue12-ab.md). With the same
/// 100,000 operations as single requests (STRESS_TXN_PERCENT = 0) the writes alone took 42 s.
#[test]
fn stress_every_watcher_gets_exactly_its_events() {
    const WATCH_CONNECTIONS: usize = 10;
    const STREAMS: usize = 100;
    const LATE_STREAMS: usize = 20;
    const PER_STREAM: usize = 100;
    const WRITE_CONNECTIONS: usize = 4;
    const WRITE_TASKS: usize = 256;
    const WARMUP_OPS: u64 = 5_000;
    const OPS: u64 = 100_000;
    // Bounds against hangs only, generous for a loaded machine; nothing here asserts a speed.
    const WRITES_TIMEOUT: Duration = Duration::from_secs(600);
    const READ_TIMEOUT: Duration = Duration::from_secs(300);
    let server = Server::start_in_tempdir(Kind::Retcd);
    let pid = server.pid().expect("server pid");
    let ep = server.endpoint();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async move {
        let mut writers = Vec::new();
        for _ in 0..WRITE_CONNECTIONS {
            writers.push(connect(&ep).await);
        }
        let warmup = Arc::new(WriteState::default());
        let (mut changes, _) =
            stress_writes(&writers, WRITE_TASKS, WARMUP_OPS, 1, warmup.clone()).await;
        let mut clients = Vec::new();
        for _ in 0..WATCH_CONNECTIONS {
            clients.push(connect(&ep).await);
        }
        let state = Arc::new(WriteState::default());
        let values = warmup.values.load(Ordering::Relaxed);
        state.values.store(values, Ordering::Relaxed);
        state
            .seen
            .store(warmup.seen.load(Ordering::Relaxed), Ordering::Relaxed);
        let open = |s: usize| {
            let now = state.seen.load(Ordering::Relaxed);
            let client = &clients[s % WATCH_CONNECTIONS];
            // Streams 0, 22, 44, 66 and 88, on 5 of the connections.
            open_stress_stream(client, s, PER_STREAM, now, s.is_multiple_of(22))
        };
        let mut streams = Vec::new();
        for s in 0..STREAMS - LATE_STREAMS {
            streams.push(open(s).await);
        }
        eprintln!(
            "stress: warm-up and first streams took {:?}",
            started.elapsed()
        );
        let server_cpu = cpu_ticks(pid);
        let own_cpu = cpu_ticks(std::process::id());
        let t = Instant::now();
        let writing = {
            let (writers, state) = (writers.clone(), state.clone());
            tokio::spawn(async move { stress_writes(&writers, WRITE_TASKS, OPS, 2, state).await })
        };
        while state.claimed.load(Ordering::Relaxed) < OPS / 2 && !writing.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for s in STREAMS - LATE_STREAMS..STREAMS {
            streams.push(open(s).await);
        }
        let (more, requests) = tokio::time::timeout(WRITES_TIMEOUT, writing)
            .await
            .expect("the writes finished in time")
            .expect("writes");
        let writes = t.elapsed();
        let server_cpu_w = cpu_ticks(pid);
        let own_cpu_w = cpu_ticks(std::process::id());
        eprintln!(
            "stress: {OPS} operations in {requests} requests took {writes:?}; CPU: server {}; \
             test {}",
            cpu_spent(&server_cpu, &server_cpu_w),
            cpu_spent(&own_cpu, &own_cpu_w),
        );
        changes.extend(more);
        let ops = oracle(changes);
        let last = ops.last().expect("changes").rev;
        let mut by_key = vec![Vec::new(); STRESS_KEYS as usize];
        for (i, o) in ops.iter().enumerate() {
            by_key[o.key as usize].push(i);
        }
        for st in &streams {
            st.done.send(last).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        let mut tally = Tally::default();
        for (s, st) in streams.into_iter().enumerate() {
            let (got, created) = tokio::time::timeout_at(deadline, st.reader)
                .await
                .unwrap_or_else(|_| panic!("stream {s} did not deliver every event in time"))
                .expect("reader");
            assert!(
                got.keys().all(|id| (0..PER_STREAM as i64).contains(id)),
                "stream {s}: events for unknown watch ids"
            );
            for (id, spec) in &st.specs {
                let mut spec = spec.clone();
                let rev = *created.get(id).expect("every watcher created");
                if spec.start == 0 {
                    spec.start = rev + 1;
                }
                let name = format!("stream {s} watcher {id}");
                check_watcher(&name, &spec, rev, &ops, &by_key, got.get(id), &mut tally);
            }
        }
        // Not a timing: the scenario itself (history catch-up, multi-event revisions) happened.
        assert!(tally.history > 0 && tally.shared_revision > 0, "{tally:?}");
        eprintln!(
            "stress: {} changes up to revision {last}; {tally:?} checked {:?} after the writes \
             began; CPU since the writes ended: server {}; test {}",
            ops.len(),
            t.elapsed(),
            cpu_spent(&server_cpu_w, &cpu_ticks(pid)),
            cpu_spent(&own_cpu_w, &cpu_ticks(std::process::id())),
        );
    });
    eprintln!("stress took {:?}", started.elapsed());
    drop(server);
}

/// Resident anonymous memory (heap, not the mapped page store) of a process, in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/<pid>/status")
}

/// Streams that never read (one from now, one catching up from revision 1, on their own
/// connection) must not stall writes or a reading watcher, and the server's memory must stay
/// bounded while they lag: 6,000 puts of 16 KiB (96 MiB of events per lagging stream, so an
/// unbounded buffer would need about 3 × 96 MiB) must leave the server's anonymous RSS
/// (/proc/<pid>/status RssAnon; the page store is file-mapped and not counted) under its level
/// before the writes plus 128 MiB (measured: about 60 MiB, most of it the write path's own).
/// A third stream on that connection reads nothing until the writes are done: it lags, catches
/// up from history, and must still get every event once, in order.
#[test]
fn a_stream_that_never_reads_stalls_nobody_and_memory_stays_bounded() {
    const PUTS: u64 = 6_000;
    const VALUE: usize = 16 << 10;
    const BOUND_KIB: u64 = 128 << 10;
    let server = Server::start_in_tempdir(Kind::Retcd);
    let pid = server.pid().expect("server pid");
    let ep = server.endpoint();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let idle = connect(&ep).await;
        let mut stuck_now = idle
            .watch_client()
            .watch("big/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let mut stuck_history = idle
            .watch_client()
            .watch(
                "big/",
                Some(WatchOptions::new().with_prefix().with_start_revision(1)),
            )
            .await
            .unwrap();
        // A stream that reads nothing while the writes run, then everything: it lags, catches up
        // from history, and must still get every event once, in order.
        let mut paused = idle
            .watch_client()
            .watch("big/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        // Read only the created responses, then never again.
        created(&mut stuck_now).await;
        created(&mut stuck_history).await;
        created(&mut paused).await;
        let reader_client = connect(&ep).await;
        let mut reader = reader_client
            .watch_client()
            .watch("big/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        created(&mut reader).await;
        let base = rss_anon_kib(pid);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_anon_kib(pid), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let reading = tokio::spawn(async move {
            let mut last = 0;
            let mut n = 0;
            while n < PUTS {
                let r = next(&mut reader).await;
                for e in r.events() {
                    let rev = e.kv().unwrap().mod_revision();
                    assert!(rev > last, "in order, once");
                    last = rev;
                    n += 1;
                }
            }
            n
        });
        let writer = connect(&ep).await;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let mut c = writer.clone();
            tasks.push(tokio::spawn(async move {
                let value = vec![b'v'; VALUE];
                let mut revs = Vec::new();
                for i in 0..PUTS / 8 {
                    let r = c
                        .put(format!("big/{w}/{}", i % 16), value.clone(), None)
                        .await
                        .expect("put");
                    revs.push(r.header().unwrap().revision());
                }
                revs
            }));
        }
        let mut revs = Vec::new();
        for task in tasks {
            revs.extend(
                tokio::time::timeout(Duration::from_secs(60), task)
                    .await
                    .expect("writes are not stalled by streams that never read")
                    .unwrap(),
            );
        }
        revs.sort_unstable();
        let writes = t.elapsed();
        let got = tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .expect("the reading watcher is not stalled")
            .unwrap();
        assert_eq!(got, PUTS);
        let mut caught_up = Vec::new();
        while caught_up.len() < revs.len() {
            let r = next(&mut paused).await;
            caught_up.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
        }
        assert_eq!(caught_up, revs, "the paused stream got every event once, in order");
        quiet(&mut paused).await;
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap();
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "slow consumer: {PUTS} puts of {VALUE} B in {writes:?}; RssAnon {base} KiB before, peak {peak} KiB"
        );
        assert!(
            peak < base + BOUND_KIB,
            "RssAnon grew from {base} KiB to {peak} KiB while streams lagged"
        );
        // The lagging streams are still alive.
        drop((stuck_now, stuck_history));
    });
    drop(server);
}
