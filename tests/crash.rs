//! Crash test: a client streams puts while the server is killed with SIGKILL
//! at random moments, over and over, on the same data directory.
//!
//! Every put creates a new, unique key whose value encodes the key, so after
//! each restart the whole store can be checked exactly:
//!
//! * every acknowledged put is present with exactly the acknowledged
//!   mod_revision and value (a Range at that key, and the full range);
//! * the keys' create_revisions are exactly `2..=current revision`, each used
//!   once (no revision lost, none duplicated, no gap);
//! * every key present is one the client tried to put, with the value that
//!   encodes it (unacknowledged puts, in flight at the kill, may be present
//!   or not, but only intact);
//! * whatever was seen after one restart is still there, unchanged, after
//!   every later one, and the revision never goes backwards.
//!
//! The kill times come from a seeded RNG (`RETCD_CRASH_SEED` overrides the
//! seed; the seed is printed so a failure can be replayed). A few rounds run
//! longer than the page store's checkpoint interval (5 s) so that kills also
//! land right after checkpoints and recovery replays the WAL on top of a
//! durable page-store tree.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, KvClient};
use support::{Server, connect, newest_meta};

/// Kill/restart rounds.
const KILLS: usize = 22;
/// Concurrent writer tasks.
const WRITERS: usize = 6;
/// Random load time before each kill, in milliseconds.
const LOAD_MS: (u64, u64) = (50, 400);
/// Every `LONG_EVERY`-th round (offset `LONG_AT`) loads for longer than the
/// checkpoint interval first, so that the kill follows a page-store checkpoint.
const LONG_EVERY: usize = 8;
const LONG_AT: usize = 5;
const LONG_EXTRA: Duration = Duration::from_millis(5_300);
/// Bound of any single client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of waiting for the writers to notice the kill and stop.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of waiting for the first acknowledged put of a round.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per page of the full-range read.
const PAGE: i64 = 2_000;
const DEFAULT_SEED: u64 = 0x5eed_c0ff_ee15_2024;

/// splitmix64: small, seedable, good enough to spread kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn key_for(round: usize, writer: usize, seq: u64) -> String {
    format!("crash/r{round:03}/w{writer}/{seq:07}")
}

/// The value every put of `key` writes: the key itself plus a filler whose
/// length also derives from the key (so records have varied sizes).
fn value_for(key: &str) -> Vec<u8> {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut v = format!("value-of:{key}:").into_bytes();
    v.extend(std::iter::repeat_n(
        b'a' + (h % 26) as u8,
        (h % 97) as usize,
    ));
    v
}

/// What one writer task did in a round.
#[derive(Default)]
struct WriterLog {
    acked: Vec<(String, i64)>,
    /// Puts that got no acknowledgement (at most the one in flight at the kill).
    unacked: Vec<String>,
    /// The error that ended the task, and when.
    error: Option<(Instant, String)>,
}

async fn writer(
    mut kv: KvClient,
    round: usize,
    id: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> WriterLog {
    let mut log = WriterLog::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = key_for(round, id, seq);
        seq += 1;
        let res =
            tokio::time::timeout(REQUEST_TIMEOUT, kv.put(key.clone(), value_for(&key), None)).await;
        match res {
            Ok(Ok(resp)) => {
                let rev = resp
                    .header()
                    .unwrap_or_else(|| panic!("put {key}: response without a header"))
                    .revision();
                log.acked.push((key, rev));
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                log.unacked.push(key);
                log.error = Some((Instant::now(), e.to_string()));
                break;
            }
            Err(_) => {
                log.unacked.push(key);
                log.error = Some((
                    Instant::now(),
                    format!("timed out after {REQUEST_TIMEOUT:?}"),
                ));
                break;
            }
        }
    }
    log
}

/// Everything the test knows about the store.
#[derive(Default)]
struct Model {
    /// Acknowledged puts: key → revision of the response.
    acked: BTreeMap<String, i64>,
    /// Puts that were tried but not acknowledged.
    unacked: BTreeSet<String>,
    /// Every key seen by a verification, with its mod_revision: durable from
    /// then on.
    seen: BTreeMap<String, i64>,
    /// Highest revision any response showed.
    max_revision: i64,
}

struct Kv {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    value: Vec<u8>,
}

/// Reads every key at one revision, in pages. Returns (revision, key → kv).
async fn read_all(client: &mut Client, expect_at_most: usize) -> (i64, BTreeMap<String, Kv>) {
    let mut all = BTreeMap::new();
    let mut start = vec![0u8];
    let mut revision = 0i64;
    let max_pages = expect_at_most / PAGE as usize + 3;
    for page in 0.. {
        assert!(
            page < max_pages,
            "full range: more than {max_pages} pages of {PAGE} keys (at most {expect_at_most} keys were ever put)"
        );
        let opts = GetOptions::new()
            .with_range(vec![0u8])
            .with_limit(PAGE)
            .with_revision(revision);
        let resp = client
            .get(start.clone(), Some(opts))
            .await
            .unwrap_or_else(|e| panic!("full range get (page {page}): {e}"));
        let rev = resp.header().expect("range response header").revision();
        if page == 0 {
            revision = rev;
        } else {
            assert_eq!(
                rev, revision,
                "header revision changed between pages (nothing writes)"
            );
        }
        for kv in resp.kvs() {
            let key = String::from_utf8(kv.key().to_vec())
                .unwrap_or_else(|_| panic!("non-UTF-8 key {:?}", kv.key()));
            let prev = all.insert(
                key.clone(),
                Kv {
                    mod_revision: kv.mod_revision(),
                    create_revision: kv.create_revision(),
                    version: kv.version(),
                    value: kv.value().to_vec(),
                },
            );
            assert!(prev.is_none(), "key {key} returned twice by the full range");
        }
        if !resp.more() {
            break;
        }
        let last = resp.kvs().last().expect("a page with more=true has keys");
        start = last.key().to_vec();
        start.push(0);
    }
    (revision, all)
}

/// Checks the restarted server against the model; `fresh` are the puts
/// acknowledged in the round just ended (each is also read with its own Range).
async fn verify(client: &mut Client, model: &mut Model, fresh: &[(String, i64)], when: &str) {
    // Per-key Range of the puts acknowledged since the last check.
    let kv = client.kv_client();
    let chunks: Vec<Vec<(String, i64)>> = fresh
        .chunks(fresh.len().div_ceil(4).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut kv = kv.clone();
        let when = when.to_string();
        tasks.push(tokio::spawn(async move {
            for (key, rev) in chunk {
                let resp = kv
                    .get(key.clone(), None)
                    .await
                    .unwrap_or_else(|e| panic!("{when}: get {key}: {e}"));
                let kvs = resp.kvs();
                assert_eq!(
                    kvs.len(),
                    1,
                    "{when}: acknowledged put {key} (revision {rev}) is missing"
                );
                let got = &kvs[0];
                assert_eq!(got.key(), key.as_bytes());
                assert_eq!(
                    got.mod_revision(),
                    rev,
                    "{when}: acknowledged put {key}: mod_revision {} != acknowledged {rev}",
                    got.mod_revision()
                );
                assert_eq!(
                    got.value(),
                    value_for(&key).as_slice(),
                    "{when}: value of {key}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("verification task panicked");
    }

    let attempted = model.acked.len() + model.unacked.len();
    let (revision, all) = read_all(client, attempted).await;
    assert!(
        revision >= model.max_revision,
        "{when}: revision went backwards: {revision} < {} seen before",
        model.max_revision
    );
    // One key per revision: create_revisions are exactly 2..=revision.
    let mut creates: Vec<i64> = all.values().map(|kv| kv.create_revision).collect();
    creates.sort_unstable();
    let expected: Vec<i64> = (2..=revision).collect();
    if creates != expected {
        let have: BTreeSet<i64> = creates.iter().copied().collect();
        let missing: Vec<i64> = expected
            .iter()
            .filter(|r| !have.contains(r))
            .take(10)
            .copied()
            .collect();
        let dups: Vec<i64> = creates
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .take(10)
            .collect();
        let beyond: Vec<i64> = creates
            .iter()
            .filter(|&&r| r < 2 || r > revision)
            .take(10)
            .copied()
            .collect();
        panic!(
            "{when}: {} keys at revision {revision}, create_revisions are not exactly 2..={revision}: \
             missing (first 10) {missing:?}, duplicated {dups:?}, out of range {beyond:?}",
            all.len()
        );
    }
    for (key, kv) in &all {
        assert!(
            model.acked.contains_key(key) || model.unacked.contains(key),
            "{when}: key {key} was never put"
        );
        assert_eq!(
            kv.mod_revision, kv.create_revision,
            "{when}: {key} was put once"
        );
        assert_eq!(kv.version, 1, "{when}: version of {key}");
        assert!(
            kv.value == value_for(key),
            "{when}: {key} holds a value that is not its own ({} bytes: {:?})",
            kv.value.len(),
            String::from_utf8_lossy(&kv.value[..kv.value.len().min(80)])
        );
    }
    for (key, rev) in &model.acked {
        match all.get(key) {
            None => panic!("{when}: acknowledged put {key} (revision {rev}) is missing"),
            Some(kv) => assert_eq!(
                kv.mod_revision, *rev,
                "{when}: acknowledged put {key}: mod_revision {} != acknowledged {rev}",
                kv.mod_revision
            ),
        }
    }
    for (key, rev) in &model.seen {
        match all.get(key) {
            None => panic!(
                "{when}: {key} (revision {rev}) was present after an earlier restart and is gone"
            ),
            Some(kv) => assert_eq!(kv.mod_revision, *rev, "{when}: {key} changed its revision"),
        }
    }
    model.seen = all
        .into_iter()
        .map(|(k, kv)| (k, kv.mod_revision))
        .collect();
    model.max_revision = revision;
}

/// (txn, root) of the newest meta page of the page store, if readable.
fn durable_meta(db: &Path) -> Option<(u64, u64)> {
    newest_meta(db).map(|m| (m.txn, m.root))
}

#[test]
fn puts_survive_repeated_sigkill() {
    let seed = std::env::var("RETCD_CRASH_SEED")
        .ok()
        .map(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
                .unwrap_or_else(|e| panic!("RETCD_CRASH_SEED={s:?}: {e}"))
        })
        .unwrap_or(DEFAULT_SEED);
    eprintln!("crash test: seed {seed:#x} (set RETCD_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tmp = tempfile::Builder::new()
        .prefix("retcd-crash-")
        .tempdir()
        .expect("tempdir");
    let test_start = Instant::now();
    let mut server = Server::start_retcd(tmp.path());
    let db = server.db_path();
    let mut model = Model {
        max_revision: 1,
        ..Model::default()
    };
    let mut restart_times = Vec::new();
    let mut checkpoints = 0;
    let mut unacked_present = 0;
    let mut meta_before = durable_meta(&db);

    for round in 0..KILLS {
        let load = Duration::from_millis(rng.range(LOAD_MS.0, LOAD_MS.1));
        let long = round % LONG_EVERY == LONG_AT;
        let (logs, killed_at) = rt.block_on(async {
            let client = connect(&server, REQUEST_TIMEOUT).await;
            let stop = Arc::new(AtomicBool::new(false));
            let acks = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..WRITERS)
                .map(|w| {
                    tokio::spawn(writer(
                        client.kv_client(),
                        round,
                        w,
                        stop.clone(),
                        acks.clone(),
                    ))
                })
                .collect();
            // Load is flowing once a put is acknowledged (bounded wait).
            let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
            while acks.load(Ordering::Relaxed) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: no put acknowledged within {FIRST_ACK_TIMEOUT:?}"
                );
                assert!(
                    !tasks.iter().all(|t| t.is_finished()),
                    "round {round}: every writer stopped before any put was acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The load time is what is random, not a synchronization.
            tokio::time::sleep(if long { LONG_EXTRA + load } else { load }).await;
            // Taken before the signal: writers see the kill before kill9 returns.
            let killed_at = Instant::now();
            server.kill9();
            stop.store(true, Ordering::Relaxed);
            let mut logs = Vec::new();
            for t in tasks {
                match tokio::time::timeout(JOIN_TIMEOUT, t).await {
                    Ok(Ok(log)) => logs.push(log),
                    Ok(Err(e)) => panic!("round {round}: writer task failed: {e}"),
                    Err(_) => panic!(
                        "round {round}: a writer did not stop within {JOIN_TIMEOUT:?} of the kill"
                    ),
                }
            }
            drop(client);
            (logs, killed_at)
        });

        let mut fresh = Vec::new();
        for log in logs {
            if let Some((at, e)) = &log.error {
                assert!(
                    *at >= killed_at,
                    "round {round}: a put failed while the server was up: {e}"
                );
            }
            for (key, rev) in &log.acked {
                assert!(
                    *rev > model.max_revision,
                    "round {round}: put {key} acknowledged at revision {rev}, not above {} seen before",
                    model.max_revision
                );
            }
            fresh.extend(log.acked);
            model.unacked.extend(log.unacked);
        }
        let mut revs: Vec<i64> = fresh.iter().map(|(_, r)| *r).collect();
        revs.sort_unstable();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "round {round}: two puts acknowledged with the same revision"
        );
        for (key, rev) in &fresh {
            model.acked.insert(key.clone(), *rev);
            model.max_revision = model.max_revision.max(*rev);
        }
        let meta_after = durable_meta(&db);
        if meta_after != meta_before {
            checkpoints += 1;
        }
        meta_before = meta_after;

        let t = Instant::now();
        server.start_again();
        restart_times.push(t.elapsed());
        let when = format!(
            "after kill {} (round {round}, {} ms of load{})",
            round + 1,
            load.as_millis(),
            if long { " after a long run" } else { "" }
        );
        rt.block_on(async {
            let mut client = connect(&server, REQUEST_TIMEOUT).await;
            verify(&mut client, &mut model, &fresh, &when).await;
        });
        unacked_present = model
            .unacked
            .iter()
            .filter(|k| model.seen.contains_key(*k))
            .count();
        eprintln!(
            "round {round:2}: load {:4} ms{}, {:5} puts acked, revision {}",
            load.as_millis(),
            if long { " (+5.3 s)" } else { "" },
            fresh.len(),
            model.max_revision
        );
    }

    // The restarted server still takes writes, and they survive one more crash.
    let last = rt.block_on(async {
        let mut client = connect(&server, REQUEST_TIMEOUT).await;
        let key = "crash/final";
        let resp = client
            .put(key, value_for(key), None)
            .await
            .expect("put after the last restart");
        let rev = resp.header().expect("header").revision();
        assert_eq!(
            rev,
            model.max_revision + 1,
            "first put after the last restart"
        );
        (key.to_string(), rev)
    });
    server.kill9();
    model.acked.insert(last.0.clone(), last.1);
    model.max_revision = last.1;
    server.start_again();
    rt.block_on(async {
        let mut client = connect(&server, REQUEST_TIMEOUT).await;
        verify(&mut client, &mut model, &[last], "after the final kill").await;
    });

    let max_restart = restart_times.iter().max().copied().unwrap_or_default();
    let db_len = std::fs::metadata(&db).map_or(0, |m| m.len());
    eprintln!(
        "crash test: {} kills, {} acknowledged puts, {} unacknowledged (of which {} present after recovery), \
         final revision {}, {} page-store checkpoints seen between kills, db file {} MiB, slowest restart {:?}, total {:?}",
        KILLS + 1,
        model.acked.len(),
        model.unacked.len(),
        unacked_present,
        model.max_revision,
        checkpoints,
        db_len >> 20,
        max_restart,
        test_start.elapsed()
    );
    assert!(
        checkpoints > 0,
        "no page-store checkpoint happened between kills: the long rounds should have made one"
    );
}
