//! HashKV through the real retcd binary, side by side with real etcd: the same history applied to
//! both must give the same `Maintenance.HashKV` answers — hash, compact revision, header revision
//! and errors — at every revision asked (engine/DESIGN.md §4.10). Operators compare members and
//! verify migrations with it, so retcd's hash must be etcd's, not merely stable among retcd
//! members.
//!
//! The history covers what enters etcd's `key` bucket differently: puts and overwrites (versions,
//! create revisions), single and prefix deletes (tombstones, several sub-revisions), a txn of
//! several puts and a delete, binary keys and an empty value, keys on leases granted with
//! explicit ids (the lease id is in each value) and a revoke (tombstones in key order), then
//! compactions — one at a tombstone, one after every key was deleted (etcd's empty `keep` set,
//! whose quirk hashes versions below the compaction that a later delete removed). After each
//! phase both servers are asked at the current revision, older ones, exactly the compacted
//! revision (3.4.23: compacted), one above and one below it, the future, 0 and -1.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, DeleteOptions, LeaseGrantOptions, PutOptions, Txn, TxnOp,
};
use support::{Server, connect, start_both};

/// Bound of any single client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of the whole history against both servers.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// Lease ids chosen by the client, so both servers store the same ids in their values.
const LEASE_A: i64 = 0x1234_5678_9abc;
const LEASE_B: i64 = 7;
/// Long enough that no lease expires during the test (expiry would revoke at a revision the
/// servers do not agree on).
const LEASE_TTL: i64 = 3600;

/// One server's answer to HashKV at one revision: (hash, compact revision, header revision), or
/// the error's (gRPC code, message).
type Answer = Result<(u32, i64, i64), (i32, String)>;

/// The two servers' clients, etcd first; every write goes to both and must get the same revision.
struct Pair {
    etcd: Client,
    retcd: Client,
}

impl Pair {
    /// Runs `op` against each server in turn; both must answer the same revision.
    async fn write<F, Fut>(&mut self, what: &str, op: F) -> i64
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<i64, etcd_client::Error>>,
    {
        let e = op(self.etcd.clone())
            .await
            .unwrap_or_else(|err| panic!("etcd: {what}: {err}"));
        let r = op(self.retcd.clone())
            .await
            .unwrap_or_else(|err| panic!("retcd: {what}: {err}"));
        assert_eq!(r, e, "{what}: revision (retcd vs etcd)");
        e
    }

    async fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> i64 {
        let what = format!("put {}", key.escape_ascii());
        self.write(&what, |mut c| {
            let (key, value) = (key.to_vec(), value.to_vec());
            async move {
                let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                let r = c.put(key, value, opts).await?;
                Ok(r.header().expect("header").revision())
            }
        })
        .await
    }

    async fn delete(&mut self, key: &[u8], opts: Option<DeleteOptions>, want: i64) -> i64 {
        let what = format!("delete {}", key.escape_ascii());
        self.write(&what, |mut c| {
            let (key, opts) = (key.to_vec(), opts.clone());
            async move {
                let r = c.delete(key, opts).await?;
                assert_eq!(r.deleted(), want, "keys deleted");
                Ok(r.header().expect("header").revision())
            }
        })
        .await
    }

    async fn compact(&mut self, rev: i64) {
        self.write(&format!("compact {rev}"), |mut c| async move {
            // Physical: answered once the dropped versions are deleted, so etcd's bucket (which
            // its hash reads) is settled.
            c.compact(rev, Some(CompactionOptions::new().with_physical()))
                .await?;
            Ok(0)
        })
        .await;
    }

    /// Asks both servers HashKV at each of `revs` (deduplicated) and requires equal answers.
    /// Returns etcd's answers.
    async fn compare(&mut self, phase: &str, revs: &[i64]) -> Vec<(i64, Answer)> {
        let mut revs = revs.to_vec();
        revs.sort_unstable();
        revs.dedup();
        let mut out = Vec::new();
        for rev in revs {
            let e = hash_kv(&mut self.etcd, rev).await;
            let r = hash_kv(&mut self.retcd, rev).await;
            eprintln!("{phase}: HashKV at {rev}: etcd {e:?}, retcd {r:?}");
            assert_eq!(r, e, "{phase}: HashKV at revision {rev} (retcd vs etcd)");
            out.push((rev, e));
        }
        out
    }
}

async fn hash_kv(c: &mut Client, rev: i64) -> Answer {
    match c.hash_kv(rev).await {
        Ok(h) => Ok((
            h.hash(),
            h.compact_version(),
            h.header().expect("header").revision(),
        )),
        Err(etcd_client::Error::GRpcStatus(s)) => Err((s.code() as i32, s.message().to_string())),
        Err(e) => panic!("HashKV at {rev}: {e}"),
    }
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

fn error_of(answers: &[(i64, Answer)], rev: i64) -> Option<String> {
    let (_, a) = answers.iter().find(|(r, _)| *r == rev).expect("asked");
    a.as_ref().err().map(|(_, m)| m.clone())
}

async fn history(etcd: &Server, retcd: &Server) {
    let mut p = Pair {
        etcd: connect(etcd, REQUEST_TIMEOUT).await,
        retcd: connect(retcd, REQUEST_TIMEOUT).await,
    };
    let fresh = p.compare("fresh", &[0, 1, 2, -1]).await;
    assert_eq!(error_of(&fresh, 2).as_deref(), Some(FUTURE));

    // Phase 1: puts, overwrites, leased keys.
    let first = p.put(b"a", b"1", 0).await;
    p.put(b"b", b"1", 0).await;
    p.put(b"c", b"", 0).await;
    p.put(b"a", b"2", 0).await;
    p.put(b"bin\0key\xff", b"\x00\x01\x02", 0).await;
    for (id, what) in [(LEASE_A, "lease A"), (LEASE_B, "lease B")] {
        p.write(what, |mut c| async move {
            let r = c
                .lease_grant(LEASE_TTL, Some(LeaseGrantOptions::new().with_id(id)))
                .await?;
            assert_eq!(r.id(), id);
            Ok(r.header().expect("header").revision())
        })
        .await;
    }
    p.put(b"l/1", b"on a", LEASE_A).await;
    p.put(b"l/2", b"on a", LEASE_A).await;
    p.put(b"l/0", b"on a", LEASE_A).await;
    p.put(b"m", b"on b", LEASE_B).await;
    let puts = p.put(b"a", b"3", 0).await;
    p.compare("puts", &[0, puts, puts - 1, first, first - 1, puts + 1])
        .await;

    // Phase 2: single and prefix deletes, a txn, a revoke (its keys deleted in key order).
    p.delete(b"b", None, 1).await;
    for k in [b"p/1", b"p/2", b"p/3"] {
        p.put(k, b"x", 0).await;
    }
    let prefix = p
        .delete(b"p/", Some(DeleteOptions::new().with_prefix()), 3)
        .await;
    let txn = p
        .write("txn", |mut c| async move {
            let t = Txn::new().and_then(vec![
                TxnOp::put("t/z", "1", None),
                TxnOp::put("t/a", "2", None),
                TxnOp::put("a", "4", None),
                TxnOp::delete("c", None),
                TxnOp::put("t/m", "3", Some(PutOptions::new().with_lease(LEASE_B))),
            ]);
            let r = c.txn(t).await?;
            assert!(r.succeeded());
            Ok(r.header().expect("header").revision())
        })
        .await;
    let revoke = p
        .write("revoke A", |mut c| async move {
            let r = c.lease_revoke(LEASE_A).await?;
            Ok(r.header().expect("header").revision())
        })
        .await;
    p.put(b"b", b"again", 0).await;
    let deletes = p.put(b"a", b"5", 0).await;
    p.compare(
        "deletes",
        &[0, deletes, revoke, revoke - 1, txn, prefix, puts, 1],
    )
    .await;

    // Phase 3: a compaction in the middle of the history, at a put.
    let c1 = txn;
    p.compact(c1).await;
    let revs = [
        0,
        deletes,
        revoke,
        c1 + 1,
        c1,
        c1 - 1,
        first,
        deletes + 1,
        -1,
    ];
    let after1 = p.compare("compact at a txn", &revs).await;
    assert_eq!(error_of(&after1, c1).as_deref(), Some(COMPACTED));
    assert_eq!(error_of(&after1, c1 - 1).as_deref(), Some(COMPACTED));
    assert_eq!(error_of(&after1, deletes + 1).as_deref(), Some(FUTURE));
    assert!(error_of(&after1, c1 + 1).is_none());

    // Phase 4: a compaction at a tombstone (etcd 3.4.23 deletes it; newer versions keep it but
    // skip it in the hash, so both hash alike).
    p.put(b"d", b"1", 0).await;
    let tomb = p.delete(b"d", None, 1).await;
    p.put(b"a", b"6", 0).await;
    let more = p.put(b"e", b"1", 0).await;
    p.compact(tomb).await;
    p.compare(
        "compact at a tombstone",
        &[0, more, tomb + 1, tomb, tomb - 1],
    )
    .await;

    // Phase 5: every key deleted, then a compaction below the delete: at revisions from the
    // delete on, etcd's `keep` set is empty and it hashes each key's newest version ≤ the
    // compaction although the delete removed it; below the delete the set is not empty.
    let before_all = p.put(b"f", b"1", 0).await;
    let all = p
        .delete(b"\0", Some(DeleteOptions::new().with_all_keys()), 9)
        .await;
    p.compact(before_all).await;
    p.compare("all deleted", &[0, all, before_all + 1, before_all])
        .await;
    let last = p.put(b"g", b"after all", 0).await;
    p.compare("after all", &[0, last, all, before_all + 1])
        .await;
    // A second compaction after everything: only what is live and newer survives.
    p.compact(last).await;
    let done = p.compare("compact at the end", &[0, last, last + 1]).await;
    assert_eq!(error_of(&done, last).as_deref(), Some(COMPACTED));
    p.put(b"h", b"1", 0).await;
    p.compare("one more", &[0]).await;
}

#[test]
fn hashkv_equals_etcds_for_the_same_history() {
    let (etcd, retcd) = start_both(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, history(&etcd, &retcd))
            .await
            .expect("history within the bound");
    });

    // etcdctl's view of the same answers (the operators' tool): equal hash and compact revision.
    for rev in ["0", "-1"] {
        let [e, r] = [&etcd, &retcd].map(|s| {
            let out = s.etcdctl(&["endpoint", "hashkv", "--rev", rev, "-w", "json"]);
            assert!(out.success(), "{}: etcdctl: {out:?}", s.kind().label());
            json_numbers(&out.stdout, &["hash", "compact_revision"])
        });
        assert_eq!(r, e, "etcdctl endpoint hashkv --rev {rev} (retcd vs etcd)");
    }

    // `retcdutl hashkv` (etcdutl's) of a snapshot file saved from each, and of etcd's own db
    // once it stopped: the live hash and compact revision.
    let live = |s: &Server| {
        let out = s.etcdctl(&["endpoint", "hashkv", "-w", "json"]);
        json_numbers(&out.stdout, &["hash", "compact_revision"])
    };
    let want = live(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for s in [&etcd, &retcd] {
        let file = dir.path().join(format!("{}.db", s.kind().label()));
        let out = s.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
        assert!(out.success(), "{out:?}");
        files.push(file);
    }
    let mut etcd = etcd;
    etcd.stop();
    files.push(etcd.db_path());
    for file in &files {
        let mut cmd = std::process::Command::new(support::retcdutl_bin());
        cmd.args(["hashkv", file.to_str().unwrap(), "-w", "json"]);
        let out = support::run_with_timeout(cmd, None, Duration::from_secs(60)).unwrap();
        assert!(out.success(), "{out:?}");
        assert_eq!(
            json_numbers(&out.stdout, &["hash", "compactRevision"]),
            want,
            "retcdutl hashkv {}",
            file.display()
        );
    }
}

/// The values of `names` in etcdctl's JSON output (plain numbers).
fn json_numbers(json: &str, names: &[&str]) -> Vec<Option<String>> {
    names
        .iter()
        .map(|n| {
            let tag = format!("\"{n}\":");
            let at = json.find(&tag)? + tag.len();
            let rest = json[at..].trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
        .collect()
}
