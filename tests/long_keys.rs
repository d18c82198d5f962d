//! Long keys through the real retcd binary, side by side with real etcd.
//!
//! etcd takes any key up to its request limit (--max-request-bytes, 1.5 MiB by default): its
//! bbolt keys are revisions and the user key lives in the value. retcd's B+tree key holds the
//! whole user key (engine/DESIGN.md §4.1), so its branch nodes must hold keys of any length
//! (§3.2, §3.3). Before that, the first commit over two keys longer than half a page never
//! returned: the member hung on the put and its db file grew without bound.
//!
//! The test puts keys of 3 KiB, 64 KiB and ~1 MiB sharing one long prefix into a fresh etcd and a
//! fresh retcd, reads them back exactly (point reads and one prefix range), lets retcd's page
//! store checkpoint them, deletes and rewrites some, kills both servers with SIGKILL, starts them
//! again and reads everything once more, then writes after the restart. Every answer, revisions
//! included, must be the same from both servers.

mod support;

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use support::{Server, connect, newest_meta};

/// Bound of any single client request (a 1 MiB put included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of one phase against one server.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of waiting for retcd's page store to checkpoint (every 5 s while entries are applied).
const CHECKPOINT_WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "/long/";
/// Key lengths and how many keys of each: two ~1 MiB keys keep a range of them all well under
/// the client's 4 MiB limit on a response.
const GROUPS: [(usize, u8); 3] = [(3 * 1024, 3), (64 * 1024, 3), (1_000_000, 2)];

/// Key `i` of length `len`: [`PREFIX`], a filler every key shares, then `i`, so keys of one
/// length differ only in their last bytes.
fn long_key(len: usize, i: u8) -> Vec<u8> {
    let mut k = PREFIX.as_bytes().to_vec();
    k.extend((k.len()..len - 3).map(|j| b'a' + (j % 26) as u8));
    k.extend_from_slice(format!("{i:03}").as_bytes());
    assert_eq!(k.len(), len);
    k
}

/// A key-value as both servers must answer it.
#[derive(Clone, PartialEq, Eq)]
struct Kv {
    key: Vec<u8>,
    value: Vec<u8>,
    create: i64,
    modr: i64,
    ver: i64,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = &self.key[self.key.len().saturating_sub(3)..];
        write!(
            f,
            "{{key: {} bytes ..{}, value: {}, create {}, mod {}, version {}}}",
            self.key.len(),
            tail.escape_ascii(),
            self.value.escape_ascii(),
            self.create,
            self.modr,
            self.ver
        )
    }
}

fn kvs(resp: &etcd_client::GetResponse) -> Vec<Kv> {
    resp.kvs()
        .iter()
        .map(|kv| Kv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create: kv.create_revision(),
            modr: kv.mod_revision(),
            ver: kv.version(),
        })
        .collect()
}

/// What a server holds under [`PREFIX`]: the revision and every key-value of one prefix range,
/// each also read on its own and found the same.
#[derive(Debug, PartialEq, Eq)]
struct View {
    revision: i64,
    kvs: Vec<Kv>,
}

async fn view(c: &mut Client, when: &str) -> View {
    let resp = c
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap_or_else(|e| panic!("{when}: range: {e}"));
    let revision = resp.header().expect("header").revision();
    let all = kvs(&resp);
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "{when}: range out of order"
    );
    for kv in &all {
        let one = c
            .get(kv.key.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("{when}: get: {e}"));
        assert_eq!(kvs(&one), vec![kv.clone()], "{when}: point read");
    }
    View { revision, kvs: all }
}

async fn put(c: &mut Client, key: Vec<u8>, value: &str, when: &str) -> i64 {
    let resp = c
        .put(key, value, None)
        .await
        .unwrap_or_else(|e| panic!("{when}: put: {e}"));
    resp.header().expect("header").revision()
}

/// Runs `phase` against etcd and retcd at once (each bounded by [`PHASE_TIMEOUT`]) and returns
/// both results, etcd's first; fails naming the server whose run failed.
fn on_both<F, Fut, T>(rt: &tokio::runtime::Runtime, servers: &[&Server; 2], phase: F) -> [T; 2]
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    rt.block_on(async {
        let mut runs = Vec::new();
        for s in servers {
            let c = connect(s, REQUEST_TIMEOUT).await;
            runs.push(tokio::spawn(tokio::time::timeout(PHASE_TIMEOUT, phase(c))));
        }
        let mut out = Vec::new();
        for (s, run) in servers.iter().zip(runs) {
            let label = s.kind().label();
            match run.await {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(_)) => panic!("[{label}] timed out after {PHASE_TIMEOUT:?}"),
                Err(e) if e.is_panic() => {
                    panic!("[{label}] {}", support::panic_message(e.into_panic()))
                }
                Err(e) => panic!("[{label}] {e}"),
            }
        }
        out.try_into().unwrap_or_else(|_| unreachable!("two runs"))
    })
}

/// Waits (bounded) until the page store of `server` was checkpointed past meta txn `after`.
fn wait_checkpoint(server: &Server, after: u64) {
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    while newest_meta(&server.db_path()).is_none_or(|m| m.txn <= after) {
        assert!(
            Instant::now() < deadline,
            "no page-store checkpoint within {CHECKPOINT_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn long_keys_are_stored_read_and_recovered_as_etcd_does() {
    let (mut etcd, mut retcd) = support::start_both(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let checkpointed = newest_meta(&retcd.db_path()).map_or(0, |m| m.txn);

    // Puts, each answered with the next revision, and every key read back exactly.
    let [e, r] = on_both(&rt, &[&etcd, &retcd], |mut c| async move {
        let mut rev = put(&mut c, b"/a-short-key".to_vec(), "s", "first put").await;
        for (len, n) in GROUPS {
            for i in 0..n {
                let got = put(&mut c, long_key(len, i), &format!("{len}/{i}"), "put").await;
                assert_eq!(
                    got,
                    rev + 1,
                    "revision of the put of key {i} of {len} bytes"
                );
                rev = got;
            }
        }
        let v = view(&mut c, "after the puts").await;
        let keys: Vec<Vec<u8>> = v.kvs.iter().map(|kv| kv.key.clone()).collect();
        let mut want: Vec<Vec<u8>> = GROUPS
            .iter()
            .flat_map(|&(len, n)| (0..n).map(move |i| long_key(len, i)))
            .collect();
        want.sort();
        assert!(keys == want, "the range holds exactly the keys put");
        assert_eq!(v.revision, rev);
        v
    });
    assert_eq!(e, r, "after the puts: etcd, then retcd");

    // retcd's page store now holds the long keys (read from its file after the restart below).
    wait_checkpoint(&retcd, checkpointed);

    // Deletes and rewrites on top of the checkpointed tree, left to the WAL.
    let [e, r] = on_both(&rt, &[&etcd, &retcd], |mut c| async move {
        for (len, _) in GROUPS {
            let resp = c.delete(long_key(len, 1), None).await.expect("delete");
            assert_eq!(resp.deleted(), 1, "delete of key 1 of {len} bytes");
        }
        put(&mut c, long_key(1_000_000, 0), "rewritten", "rewrite").await;
        put(&mut c, long_key(64 * 1024, 7), "new", "new key").await;
        view(&mut c, "after deletes and rewrites").await
    });
    assert_eq!(e, r, "after deletes and rewrites: etcd, then retcd");
    let before = r;

    for s in [&mut etcd, &mut retcd] {
        s.kill9();
        s.start_again();
    }
    let [e, r] = on_both(&rt, &[&etcd, &retcd], |mut c| async move {
        let v = view(&mut c, "after the restart").await;
        for (len, _) in GROUPS {
            let gone = c.get(long_key(len, 1), None).await.expect("get");
            assert_eq!(
                gone.count(),
                0,
                "deleted key of {len} bytes after the restart"
            );
        }
        v
    });
    assert_eq!(e, r, "after the restart: etcd, then retcd");
    assert_eq!(r, before, "retcd after the restart");

    // The recovered tree takes more long keys.
    let [e, r] = on_both(&rt, &[&etcd, &retcd], |mut c| async move {
        put(&mut c, long_key(1_000_000, 1), "again", "put after restart").await;
        put(&mut c, long_key(3 * 1024, 9), "again", "put after restart").await;
        view(&mut c, "after puts after the restart").await
    });
    assert_eq!(e, r, "after puts after the restart: etcd, then retcd");
    drop(rt);
}
