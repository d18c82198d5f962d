//! KV, Maintenance.Status and Cluster.MemberList through the `etcd-client`
//! crate, against the real retcd binary.
//!
//! Every test body is an `async fn` taking a [`Target`] (one server's
//! endpoint and identity). Each test starts one real etcd and one retcd and
//! runs the same body against both, concurrently: the expected values written
//! in a body are asserted against etcd too, so they are etcd's answers, not
//! guesses. A failure report says which server failed (`etcd` failing means
//! the expectation is wrong; `retcd` failing means retcd differs from etcd).
//!
//! Values are exact: revisions, versions, create/mod revisions, counts,
//! `more`, `deleted`, `succeeded`, error codes and messages. What legitimately
//! differs between the two servers is handled explicitly: the Status version
//! (etcd-server 3.4.23 vs retcd's 3.5.0), and raft indexes / db sizes, which
//! are only checked for being consistent and positive.

mod support;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, Error, GetOptions, GetResponse,
    PutOptions, ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use support::{Kind, Target, assert_status, rev};

/// Longest a test body may run against one server (with the servers' start,
/// bounded by `support::READY_TIMEOUT`, a test stays under 30 s).
const BODY_TIMEOUT: Duration = Duration::from_secs(12);

fn run_both<F, Fut>(extra_args: &[&str], body: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    support::run_both(extra_args, BODY_TIMEOUT, body)
}

// ---- comparable views of responses ----

/// A KeyValue with every field.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kv {
    key: String,
    value: String,
    create: i64,
    modr: i64,
    ver: i64,
    lease: i64,
}

/// Bytes as a readable string (`\x00` for non-printable bytes).
fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn kv(key: &str, value: &str, create: i64, modr: i64, ver: i64) -> Kv {
    Kv {
        key: show(key.as_bytes()),
        value: show(value.as_bytes()),
        create,
        modr,
        ver,
        lease: 0,
    }
}

fn kv_of(k: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: show(k.key()),
        value: show(k.value()),
        create: k.create_revision(),
        modr: k.mod_revision(),
        ver: k.version(),
        lease: k.lease(),
    }
}

/// A Range response: header revision, kvs, count, more.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    rev: i64,
    kvs: Vec<Kv>,
    count: i64,
    more: bool,
}

fn got(rev: i64, kvs: Vec<Kv>, count: i64, more: bool) -> Got {
    Got {
        rev,
        kvs,
        count,
        more,
    }
}

fn got_of(r: &GetResponse) -> Got {
    Got {
        rev: r.header().expect("range header").revision(),
        kvs: r.kvs().iter().map(kv_of).collect(),
        count: r.count(),
        more: r.more(),
    }
}

/// Every field of a response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hdr {
    cluster_id: u64,
    member_id: u64,
    revision: i64,
    raft_term: u64,
}

fn hdr_of(h: Option<&ResponseHeader>) -> Option<Hdr> {
    h.map(|h| Hdr {
        cluster_id: h.cluster_id(),
        member_id: h.member_id(),
        revision: h.revision(),
        raft_term: h.raft_term(),
    })
}

/// The header etcd puts on a response inside a txn: only the revision.
fn inner(revision: i64) -> Option<Hdr> {
    Some(Hdr {
        cluster_id: 0,
        member_id: 0,
        revision,
        raft_term: 0,
    })
}

/// A Range response inside a txn (whose header holds only the revision).
fn get_op(revision: i64, kvs: Vec<Kv>, count: i64, more: bool) -> Op {
    Op::Get {
        hdr: inner(revision),
        kvs,
        count,
        more,
    }
}

/// One response of a txn, with the full header of the inner response.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Put {
        hdr: Option<Hdr>,
        prev: Option<Kv>,
    },
    Get {
        hdr: Option<Hdr>,
        kvs: Vec<Kv>,
        count: i64,
        more: bool,
    },
    Del {
        hdr: Option<Hdr>,
        deleted: i64,
        prev: Vec<Kv>,
    },
    Txn {
        hdr: Option<Hdr>,
        succeeded: bool,
        ops: Vec<Op>,
    },
}

fn ops_of(t: &TxnResponse) -> Vec<Op> {
    t.op_responses()
        .iter()
        .map(|r| match r {
            TxnOpResponse::Put(p) => Op::Put {
                hdr: hdr_of(p.header()),
                prev: p.prev_key().map(kv_of),
            },
            TxnOpResponse::Get(g) => Op::Get {
                hdr: hdr_of(g.header()),
                kvs: g.kvs().iter().map(kv_of).collect(),
                count: g.count(),
                more: g.more(),
            },
            TxnOpResponse::Delete(d) => Op::Del {
                hdr: hdr_of(d.header()),
                deleted: d.deleted(),
                prev: d.prev_kvs().iter().map(kv_of).collect(),
            },
            TxnOpResponse::Txn(t) => Op::Txn {
                hdr: hdr_of(t.header()),
                succeeded: t.succeeded(),
                ops: ops_of(t),
            },
        })
        .collect()
}

// ---- small helpers ----

async fn get(c: &mut Client, key: &str, opts: GetOptions) -> Got {
    let r = c
        .get(key, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("get {key:?}: {e}"));
    got_of(&r)
}

async fn get_bytes(c: &mut Client, key: &[u8], opts: GetOptions) -> Got {
    let r = c
        .get(key.to_vec(), Some(opts))
        .await
        .unwrap_or_else(|e| panic!("get {}: {e}", show(key)));
    got_of(&r)
}

/// Current revision (header of a count-only range).
/// Puts and returns the header revision.
async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    c.put(key, value, None)
        .await
        .unwrap_or_else(|e| panic!("put {key:?}: {e}"))
        .header()
        .expect("put header")
        .revision()
}

const E_EMPTY_KEY: &str = "etcdserver: key is not provided";
const E_KEY_NOT_FOUND: &str = "etcdserver: key not found";
const E_VALUE_PROVIDED: &str = "etcdserver: value is provided";
const E_LEASE_PROVIDED: &str = "etcdserver: lease is provided";
const E_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const E_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const E_FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const E_TOO_LARGE: &str = "etcdserver: request is too large";
const E_TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const E_DUPLICATE: &str = "etcdserver: duplicate key given in txn request";

fn all() -> GetOptions {
    GetOptions::new().with_all_keys()
}

// ---- Range ----

async fn range_keys_and_ranges(t: Target) {
    let mut c = t.client().await;
    assert_eq!(rev(&mut c).await, 1, "a new store is at revision 1");
    for (i, (k, v)) in [
        ("a", "1"),
        ("b", "2"),
        ("b\0x", "3"),
        ("c", "4"),
        ("foo", "5"),
        ("foo/1", "6"),
        ("foo/2", "7"),
        ("fop", "8"),
        ("a", "1a"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(put(&mut c, k, v).await, i as i64 + 2);
    }
    let a = kv("a", "1a", 2, 10, 2);
    let b = kv("b", "2", 3, 3, 1);
    let b0 = kv("b\0x", "3", 4, 4, 1);
    let cc = kv("c", "4", 5, 5, 1);
    let foo0 = kv("foo", "5", 6, 6, 1);
    let foo1 = kv("foo/1", "6", 7, 7, 1);
    let foo2 = kv("foo/2", "7", 8, 8, 1);
    let fop = kv("fop", "8", 9, 9, 1);
    let everything = vec![
        a.clone(),
        b.clone(),
        b0.clone(),
        cc.clone(),
        foo0.clone(),
        foo1.clone(),
        foo2.clone(),
        fop.clone(),
    ];

    // Single key.
    assert_eq!(
        get(&mut c, "a", GetOptions::new()).await,
        got(10, vec![a.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "b\0x", GetOptions::new()).await,
        got(10, vec![b0.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "zz", GetOptions::new()).await,
        got(10, vec![], 0, false)
    );
    // A key is not a prefix.
    assert_eq!(
        get(&mut c, "fo", GetOptions::new()).await,
        got(10, vec![], 0, false)
    );

    // Explicit [key, range_end).
    assert_eq!(
        get(&mut c, "a", GetOptions::new().with_range("c")).await,
        got(10, vec![a.clone(), b.clone(), b0.clone()], 3, false)
    );
    assert_eq!(
        get(&mut c, "b", GetOptions::new().with_range("b\0y")).await,
        got(10, vec![b.clone(), b0.clone()], 2, false)
    );
    assert_eq!(
        get(&mut c, "a", GetOptions::new().with_range("b")).await,
        got(10, vec![a.clone()], 1, false)
    );
    // range_end <= key: empty.
    assert_eq!(
        get(&mut c, "c", GetOptions::new().with_range("a")).await,
        got(10, vec![], 0, false)
    );
    assert_eq!(
        get(&mut c, "a", GetOptions::new().with_range("a")).await,
        got(10, vec![], 0, false)
    );

    // Prefix.
    assert_eq!(
        get(&mut c, "foo", GetOptions::new().with_prefix()).await,
        got(10, vec![foo0.clone(), foo1.clone(), foo2.clone()], 3, false)
    );
    assert_eq!(
        get(&mut c, "foo/", GetOptions::new().with_prefix()).await,
        got(10, vec![foo1.clone(), foo2.clone()], 2, false)
    );
    assert_eq!(
        get(&mut c, "b", GetOptions::new().with_prefix()).await,
        got(10, vec![b.clone(), b0.clone()], 2, false)
    );
    assert_eq!(
        get(&mut c, "x", GetOptions::new().with_prefix()).await,
        got(10, vec![], 0, false)
    );
    // An empty prefix is every key (key = range_end = "\0").
    assert_eq!(
        get(&mut c, "", GetOptions::new().with_prefix()).await,
        got(10, everything.clone(), 8, false)
    );

    // From key (range_end = "\0").
    assert_eq!(
        get(&mut c, "c", GetOptions::new().with_from_key()).await,
        got(
            10,
            vec![
                cc.clone(),
                foo0.clone(),
                foo1.clone(),
                foo2.clone(),
                fop.clone()
            ],
            5,
            false
        )
    );
    assert_eq!(
        get(&mut c, "fop", GetOptions::new().with_from_key()).await,
        got(10, vec![fop.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "g", GetOptions::new().with_from_key()).await,
        got(10, vec![], 0, false)
    );
    // All keys.
    assert_eq!(
        get(&mut c, "", all()).await,
        got(10, everything.clone(), 8, false)
    );
    assert_eq!(
        get(&mut c, "", GetOptions::new().with_from_key()).await,
        got(10, everything, 8, false)
    );

    // An empty key is refused.
    assert_status(c.get("", None).await, "InvalidArgument", E_EMPTY_KEY);
    assert_status(
        c.get("", Some(GetOptions::new().with_range("z"))).await,
        "InvalidArgument",
        E_EMPTY_KEY,
    );
    assert_eq!(rev(&mut c).await, 10);
}

#[test]
fn range_keys_and_ranges_match_etcd() {
    run_both(&[], range_keys_and_ranges);
}

/// (what, key, options, the keys expected).
type BinaryCase = (&'static str, &'static [u8], GetOptions, Vec<&'static [u8]>);

/// Keys with 0x00 and 0xff bytes sort bytewise, in every range form.
async fn range_binary_keys(t: Target) {
    let mut c = t.client().await;
    let keys: Vec<&[u8]> = vec![
        b"a\xff",
        b"\0",
        b"a\0b",
        b"\xff\xff",
        b"a",
        b"\0\0",
        b"\xff",
        b"a\0",
        b"\0\xff",
        b"a\x01",
        b"\x01",
        b"a\0\0",
        b"\xff\0",
        b"\0\x01",
        b"a\xff\xff",
    ];
    let mut expected: Vec<Kv> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let rev = i as i64 + 2;
        let value = format!("{i}");
        let r = c.put(k.to_vec(), value.clone(), None).await.expect("put");
        assert_eq!(r.header().unwrap().revision(), rev);
        expected.push(Kv {
            key: show(k),
            value,
            create: rev,
            modr: rev,
            ver: 1,
            lease: 0,
        });
    }
    let by_key = |ks: &[&[u8]]| -> Vec<Kv> {
        let mut ks: Vec<&[u8]> = ks.to_vec();
        ks.sort();
        ks.iter()
            .map(|k| expected.iter().find(|e| e.key == show(k)).unwrap().clone())
            .collect()
    };
    let n = keys.len() as i64;
    let cur = n + 1;
    let everything = by_key(&keys);
    assert_eq!(
        get_bytes(&mut c, b"\0", GetOptions::new().with_from_key()).await,
        got(cur, everything.clone(), n, false)
    );
    assert_eq!(
        get(&mut c, "", all()).await,
        got(cur, everything.clone(), n, false)
    );
    assert_eq!(
        get(
            &mut c,
            "",
            all().with_sort(SortTarget::Key, SortOrder::Descend)
        )
        .await,
        {
            let mut e = everything.clone();
            e.reverse();
            got(cur, e, n, false)
        }
    );
    let cases: Vec<BinaryCase> = vec![
        ("key \\0", b"\0", GetOptions::new(), vec![b"\0"]),
        (
            "key \\xff\\0",
            b"\xff\0",
            GetOptions::new(),
            vec![b"\xff\0"],
        ),
        (
            "prefix \\0",
            b"\0",
            GetOptions::new().with_prefix(),
            vec![b"\0", b"\0\0", b"\0\x01", b"\0\xff"],
        ),
        (
            "prefix a",
            b"a",
            GetOptions::new().with_prefix(),
            vec![
                b"a",
                b"a\0",
                b"a\0\0",
                b"a\0b",
                b"a\x01",
                b"a\xff",
                b"a\xff\xff",
            ],
        ),
        (
            "prefix a\\0",
            b"a\0",
            GetOptions::new().with_prefix(),
            vec![b"a\0", b"a\0\0", b"a\0b"],
        ),
        (
            "[a\\0, a\\0\\0)",
            b"a\0",
            GetOptions::new().with_range(b"a\0\0".to_vec()),
            vec![b"a\0"],
        ),
        (
            "[a, a\\x01)",
            b"a",
            GetOptions::new().with_range(b"a\x01".to_vec()),
            vec![b"a", b"a\0", b"a\0\0", b"a\0b"],
        ),
        (
            "prefix a\\xff",
            b"a\xff",
            GetOptions::new().with_prefix(),
            vec![b"a\xff", b"a\xff\xff"],
        ),
        (
            "prefix \\xff (from key)",
            b"\xff",
            GetOptions::new().with_prefix(),
            vec![b"\xff", b"\xff\0", b"\xff\xff"],
        ),
        (
            "prefix \\xff\\xff (from key)",
            b"\xff\xff",
            GetOptions::new().with_prefix(),
            vec![b"\xff\xff"],
        ),
        (
            "from \\0\\xff to \\x01\\0",
            b"\0\xff",
            GetOptions::new().with_range(b"\x01\0".to_vec()),
            vec![b"\0\xff", b"\x01"],
        ),
    ];
    for (what, key, opts, want) in cases {
        let want = by_key(&want);
        let count = want.len() as i64;
        assert_eq!(
            get_bytes(&mut c, key, opts).await,
            got(cur, want, count, false),
            "{what}"
        );
    }
    // Deleting a prefix with 0x00 bytes leaves its neighbours.
    let r = c
        .delete(
            b"a\0".to_vec(),
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete prefix a\\0");
    assert_eq!(r.deleted(), 3);
    assert_eq!(
        r.prev_kvs().iter().map(kv_of).collect::<Vec<_>>(),
        by_key(&[b"a\0", b"a\0\0", b"a\0b"])
    );
    assert_eq!(
        get_bytes(&mut c, b"a", GetOptions::new().with_prefix()).await,
        got(
            cur + 1,
            by_key(&[b"a", b"a\x01", b"a\xff", b"a\xff\xff"]),
            4,
            false
        )
    );
    // Compares over a binary range.
    assert!(
        txn_succeeded(
            &mut c,
            vec![Compare::version(b"\0".to_vec(), CompareOp::Equal, 1).with_prefix()]
        )
        .await
    );
    assert!(
        !txn_succeeded(
            &mut c,
            vec![Compare::value(b"\0".to_vec(), CompareOp::Less, "2").with_range(b"\x01".to_vec())]
        )
        .await
    );
}

#[test]
fn range_binary_keys_match_etcd() {
    run_both(&[], range_binary_keys);
}

/// Enough keys (1000, 1 KiB values) to span many pages.
async fn many_keys(t: Target) {
    let mut c = t.client().await;
    let key = |i: usize| format!("key/{i:04}");
    let value = |i: usize| format!("{i:04}").repeat(256);
    for batch in 0..8 {
        let ops: Vec<TxnOp> = (batch * 125..(batch + 1) * 125)
            .map(|i| TxnOp::put(key(i), value(i), None))
            .collect();
        let r = c.txn(Txn::new().and_then(ops)).await.expect("batch");
        assert_eq!(r.header().unwrap().revision(), batch as i64 + 2);
    }
    let at = |i: usize| {
        let rev = (i / 125) as i64 + 2;
        Kv {
            key: key(i),
            value: value(i),
            create: rev,
            modr: rev,
            ver: 1,
            lease: 0,
        }
    };
    let p = || GetOptions::new().with_prefix();
    assert_eq!(
        get(&mut c, "key/", p().with_count_only()).await,
        got(9, vec![], 1000, false)
    );
    assert_eq!(
        get(&mut c, "key/", p().with_limit(10)).await,
        got(9, (0..10).map(at).collect(), 1000, true)
    );
    assert_eq!(
        get(&mut c, "key/0500", GetOptions::new().with_range("key/0600")).await,
        got(9, (500..600).map(at).collect(), 100, false)
    );
    assert_eq!(
        get(&mut c, "key/0990", GetOptions::new().with_from_key()).await,
        got(9, (990..1000).map(at).collect(), 10, false)
    );
    assert_eq!(
        get(
            &mut c,
            "key/",
            p().with_limit(3)
                .with_sort(SortTarget::Key, SortOrder::Descend)
        )
        .await,
        got(9, vec![at(999), at(998), at(997)], 1000, true)
    );
    let all_keys = get(&mut c, "key/", p().with_keys_only()).await;
    assert_eq!(all_keys.kvs.len(), 1000);
    assert!(
        all_keys
            .kvs
            .iter()
            .enumerate()
            .all(|(i, k)| k.key == key(i) && k.value.is_empty())
    );
    assert_eq!(
        get(
            &mut c,
            "key/",
            p().with_min_create_revision(9).with_keys_only()
        )
        .await
        .kvs
        .len(),
        125
    );

    let r = c
        .delete(
            "key/0100",
            Some(DeleteOptions::new().with_range("key/0900")),
        )
        .await
        .expect("delete 800");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (10, 800));
    assert_eq!(
        get(&mut c, "key/", p().with_count_only()).await,
        got(10, vec![], 200, false)
    );
    assert_eq!(
        get(&mut c, "key/0098", GetOptions::new().with_range("key/0902")).await,
        got(10, vec![at(98), at(99), at(900), at(901)], 4, false)
    );
    assert_eq!(
        get(&mut c, "key/", p().with_revision(9).with_count_only()).await,
        got(10, vec![], 1000, false)
    );
    c.compact(9, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    assert_eq!(
        get(&mut c, "key/0500", GetOptions::new().with_revision(9)).await,
        got(10, vec![at(500)], 1, false)
    );
    assert_status(
        c.get("key/0500", Some(GetOptions::new().with_revision(8)))
            .await,
        "OutOfRange",
        E_COMPACTED,
    );
    c.compact(10, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    assert_eq!(
        get(&mut c, "key/", p().with_count_only()).await,
        got(10, vec![], 200, false)
    );
    assert_eq!(
        get(&mut c, "key/0099", GetOptions::new().with_range("key/0901")).await,
        got(10, vec![at(99), at(900)], 2, false)
    );
    let r = c
        .delete("key/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete all");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (11, 200));
    assert_eq!(get(&mut c, "", all()).await, got(11, vec![], 0, false));
}

#[test]
fn many_keys_match_etcd() {
    run_both(&[], many_keys);
}

async fn range_limit_count_keys_only(t: Target) {
    let mut c = t.client().await;
    for i in 1..=5 {
        put(&mut c, &format!("k{i}"), &format!("v{i}")).await;
    }
    let k = |i: i64| kv(&format!("k{i}"), &format!("v{i}"), i + 1, i + 1, 1);
    let p = || GetOptions::new().with_prefix();

    assert_eq!(
        get(&mut c, "k", p().with_limit(2)).await,
        got(6, vec![k(1), k(2)], 5, true)
    );
    assert_eq!(
        get(&mut c, "k", p().with_limit(1)).await,
        got(6, vec![k(1)], 5, true)
    );
    assert_eq!(
        get(&mut c, "k", p().with_limit(4)).await,
        got(6, vec![k(1), k(2), k(3), k(4)], 5, true)
    );
    let all5 = vec![k(1), k(2), k(3), k(4), k(5)];
    assert_eq!(
        get(&mut c, "k", p().with_limit(5)).await,
        got(6, all5.clone(), 5, false)
    );
    assert_eq!(
        get(&mut c, "k", p().with_limit(6)).await,
        got(6, all5.clone(), 5, false)
    );
    // 0 and negative limits mean no limit.
    assert_eq!(
        get(&mut c, "k", p().with_limit(0)).await,
        got(6, all5.clone(), 5, false)
    );
    assert_eq!(
        get(&mut c, "k", p().with_limit(-1)).await,
        got(6, all5.clone(), 5, false)
    );
    // A limit on a single key.
    assert_eq!(
        get(&mut c, "k3", GetOptions::new().with_limit(1)).await,
        got(6, vec![k(3)], 1, false)
    );
    // Limit applies after sorting.
    assert_eq!(
        get(
            &mut c,
            "k",
            p().with_limit(2)
                .with_sort(SortTarget::Key, SortOrder::Descend)
        )
        .await,
        got(6, vec![k(5), k(4)], 5, true)
    );
    // Limit with a range.
    assert_eq!(
        get(
            &mut c,
            "k2",
            GetOptions::new().with_range("k5").with_limit(2)
        )
        .await,
        got(6, vec![k(2), k(3)], 3, true)
    );

    // count_only: no kvs, the count of the whole range.
    assert_eq!(
        get(&mut c, "k", p().with_count_only()).await,
        got(6, vec![], 5, false)
    );
    assert_eq!(
        get(&mut c, "k", p().with_count_only().with_limit(2)).await,
        got(6, vec![], 5, false)
    );
    assert_eq!(
        get(&mut c, "k9", GetOptions::new().with_count_only()).await,
        got(6, vec![], 0, false)
    );
    assert_eq!(
        get(&mut c, "k1", GetOptions::new().with_count_only()).await,
        got(6, vec![], 1, false)
    );

    // keys_only: every field but the value.
    let nv = |i: i64| kv(&format!("k{i}"), "", i + 1, i + 1, 1);
    assert_eq!(
        get(&mut c, "k", p().with_keys_only()).await,
        got(6, vec![nv(1), nv(2), nv(3), nv(4), nv(5)], 5, false)
    );
    assert_eq!(
        get(&mut c, "k", p().with_keys_only().with_limit(2)).await,
        got(6, vec![nv(1), nv(2)], 5, true)
    );
    assert_eq!(
        get(&mut c, "k", p().with_keys_only().with_count_only()).await,
        got(6, vec![], 5, false)
    );
}

#[test]
fn range_limit_count_keys_only_match_etcd() {
    run_both(&[], range_limit_count_keys_only);
}

async fn range_revisions(t: Target) {
    let mut c = t.client().await;
    assert_eq!(put(&mut c, "x", "1").await, 2);
    assert_eq!(put(&mut c, "x", "2").await, 3);
    assert_eq!(put(&mut c, "y", "1").await, 4);
    let d = c.delete("x", None).await.expect("delete x");
    assert_eq!((d.header().unwrap().revision(), d.deleted()), (5, 1));
    assert_eq!(put(&mut c, "x", "3").await, 6);

    let at = |r: i64| GetOptions::new().with_revision(r);
    let x1 = kv("x", "1", 2, 2, 1);
    let x2 = kv("x", "2", 2, 3, 2);
    let x3 = kv("x", "3", 6, 6, 1);
    let y1 = kv("y", "1", 4, 4, 1);
    // The header carries the current revision, whatever revision is read.
    assert_eq!(get(&mut c, "x", at(1)).await, got(6, vec![], 0, false));
    assert_eq!(
        get(&mut c, "x", at(2)).await,
        got(6, vec![x1.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "x", at(3)).await,
        got(6, vec![x2.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "x", at(4)).await,
        got(6, vec![x2.clone()], 1, false)
    );
    assert_eq!(get(&mut c, "x", at(5)).await, got(6, vec![], 0, false));
    assert_eq!(
        get(&mut c, "x", at(6)).await,
        got(6, vec![x3.clone()], 1, false)
    );
    // 0 and negative revisions read the newest state.
    assert_eq!(
        get(&mut c, "x", at(0)).await,
        got(6, vec![x3.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "x", at(-3)).await,
        got(6, vec![x3.clone()], 1, false)
    );
    assert_eq!(
        get(&mut c, "", all().with_revision(1)).await,
        got(6, vec![], 0, false)
    );
    assert_eq!(
        get(&mut c, "", all().with_revision(4)).await,
        got(6, vec![x2.clone(), y1.clone()], 2, false)
    );
    assert_eq!(
        get(&mut c, "", all().with_revision(5)).await,
        got(6, vec![y1.clone()], 1, false)
    );
    // Past revisions combine with the other options.
    assert_eq!(
        get(&mut c, "", all().with_revision(4).with_limit(1)).await,
        got(6, vec![x2.clone()], 2, true)
    );
    assert_eq!(
        get(&mut c, "", all().with_revision(4).with_count_only()).await,
        got(6, vec![], 2, false)
    );
    assert_eq!(
        get(&mut c, "", all().with_revision(3).with_keys_only()).await,
        got(6, vec![kv("x", "", 2, 3, 2)], 1, false)
    );
    assert_eq!(
        get(&mut c, "x", at(2).with_serializable()).await,
        got(6, vec![x1.clone()], 1, false)
    );

    // Future revision.
    assert_status(c.get("x", Some(at(7))).await, "OutOfRange", E_FUTURE);
    assert_status(
        c.get("x", Some(at(100).with_serializable())).await,
        "OutOfRange",
        E_FUTURE,
    );

    // Compacted revision.
    let r = c.compact(3, None).await.expect("compact 3");
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_status(c.get("x", Some(at(2))).await, "OutOfRange", E_COMPACTED);
    assert_status(c.get("x", Some(at(1))).await, "OutOfRange", E_COMPACTED);
    assert_status(
        c.get("", Some(all().with_revision(2).with_serializable()))
            .await,
        "OutOfRange",
        E_COMPACTED,
    );
    assert_status(
        c.get("x", Some(at(2).with_count_only())).await,
        "OutOfRange",
        E_COMPACTED,
    );
    // The compacted revision itself stays readable.
    assert_eq!(
        get(&mut c, "x", at(3)).await,
        got(6, vec![x2.clone()], 1, false)
    );
    assert_eq!(get(&mut c, "x", at(5)).await, got(6, vec![], 0, false));
    assert_eq!(
        get(&mut c, "", all().with_revision(4)).await,
        got(6, vec![x2, y1.clone()], 2, false)
    );
    assert_eq!(
        get(&mut c, "x", at(0)).await,
        got(6, vec![x3.clone()], 1, false)
    );
    assert_status(c.get("x", Some(at(7))).await, "OutOfRange", E_FUTURE);
    assert_eq!(get(&mut c, "", all()).await, got(6, vec![x3, y1], 2, false));
}

#[test]
fn range_revisions_match_etcd() {
    run_both(&[], range_revisions);
}

/// Keys a..d where each sort target gives a different order:
/// key a b c d; version b a c d; create d c b a; mod b d c a; value c d a b.
async fn seed_sort_data(c: &mut Client) -> [Kv; 4] {
    for (i, (k, v)) in [
        ("d", "d0"),
        ("c", "c0"),
        ("b", "4"),
        ("a", "a0"),
        ("c", "c1"),
        ("d", "d1"),
        ("d", "d2"),
        ("d", "2"),
        ("c", "1"),
        ("a", "3"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(put(c, k, v).await, i as i64 + 2);
    }
    [
        kv("a", "3", 5, 11, 2),
        kv("b", "4", 4, 4, 1),
        kv("c", "1", 3, 10, 3),
        kv("d", "2", 2, 9, 4),
    ]
}

async fn range_sort(t: Target) {
    let mut c = t.client().await;
    let [a, b, cc, d] = seed_sort_data(&mut c).await;
    let order = |s: &str| -> Vec<Kv> {
        s.chars()
            .map(|ch| match ch {
                'a' => a.clone(),
                'b' => b.clone(),
                'c' => cc.clone(),
                'd' => d.clone(),
                _ => unreachable!(),
            })
            .collect()
    };
    let rev_str = |s: &str| s.chars().rev().collect::<String>();
    for (target, ascending) in [
        (SortTarget::Key, "abcd"),
        (SortTarget::Version, "bacd"),
        (SortTarget::Create, "dcba"),
        (SortTarget::Mod, "bdca"),
        (SortTarget::Value, "cdab"),
    ] {
        // NONE sorts ascending for every target but KEY (whose natural order
        // is ascending anyway).
        for (sort_order, expected) in [
            (SortOrder::None, ascending.to_string()),
            (SortOrder::Ascend, ascending.to_string()),
            (SortOrder::Descend, rev_str(ascending)),
        ] {
            let what = format!("sort {target:?} {sort_order:?}");
            let opts = all().with_sort(target, sort_order);
            assert_eq!(
                get(&mut c, "", opts.clone()).await,
                got(11, order(&expected), 4, false),
                "{what}"
            );
            // The limit applies to the sorted result, except for NONE with
            // a target other than KEY: etcd then fetches only limit + 1
            // keys (in key order: a b c) and sorts those.
            let limited = if sort_order == SortOrder::None && target != SortTarget::Key {
                let mut first = order("abc");
                first.sort_by(|x, y| match target {
                    SortTarget::Version => x.ver.cmp(&y.ver),
                    SortTarget::Create => x.create.cmp(&y.create),
                    SortTarget::Mod => x.modr.cmp(&y.modr),
                    SortTarget::Value => x.value.cmp(&y.value),
                    SortTarget::Key => unreachable!(),
                });
                first.truncate(2);
                first
            } else {
                order(&expected[..2])
            };
            assert_eq!(
                get(&mut c, "", opts.clone().with_limit(2)).await,
                got(11, limited, 4, true),
                "{what} limit 2"
            );
            // Values are dropped after sorting, so a keys_only sort by value
            // still sorts by value.
            let no_values: Vec<Kv> = order(&expected)
                .into_iter()
                .map(|mut k| {
                    k.value.clear();
                    k
                })
                .collect();
            assert_eq!(
                get(&mut c, "", opts.clone().with_keys_only()).await,
                got(11, no_values, 4, false),
                "{what} keys_only"
            );
            assert_eq!(
                get(&mut c, "", opts.with_count_only()).await,
                got(11, vec![], 4, false),
                "{what} count_only"
            );
        }
    }
    // Sorting a sub-range, at a past revision.
    assert_eq!(
        get(
            &mut c,
            "b",
            GetOptions::new()
                .with_range("d")
                .with_revision(8)
                .with_sort(SortTarget::Mod, SortOrder::Descend)
        )
        .await,
        got(
            11,
            vec![kv("c", "c1", 3, 6, 2), kv("b", "4", 4, 4, 1)],
            2,
            false
        )
    );
}

#[test]
fn range_sort_match_etcd() {
    run_both(&[], range_sort);
}

async fn range_mod_create_filters(t: Target) {
    let mut c = t.client().await;
    let [a, b, cc, d] = seed_sort_data(&mut c).await;
    // a: create 5 mod 11; b: create 4 mod 4; c: create 3 mod 10; d: create 2 mod 9.
    // Filters do not change the count, which is the whole range's.
    let cases: Vec<(&str, GetOptions, Vec<Kv>)> = vec![
        (
            "min_mod 9",
            all().with_min_mod_revision(9),
            vec![a.clone(), cc.clone(), d.clone()],
        ),
        (
            "min_mod 11",
            all().with_min_mod_revision(11),
            vec![a.clone()],
        ),
        ("min_mod 12", all().with_min_mod_revision(12), vec![]),
        (
            "max_mod 9",
            all().with_max_mod_revision(9),
            vec![b.clone(), d.clone()],
        ),
        ("max_mod 3", all().with_max_mod_revision(3), vec![]),
        (
            "mod in [5, 10]",
            all().with_min_mod_revision(5).with_max_mod_revision(10),
            vec![cc.clone(), d.clone()],
        ),
        (
            "min_create 4",
            all().with_min_create_revision(4),
            vec![a.clone(), b.clone()],
        ),
        (
            "max_create 3",
            all().with_max_create_revision(3),
            vec![cc.clone(), d.clone()],
        ),
        (
            "create in [3, 4]",
            all()
                .with_min_create_revision(3)
                .with_max_create_revision(4),
            vec![b.clone(), cc.clone()],
        ),
        (
            "create >= 3 and mod <= 10",
            all().with_min_create_revision(3).with_max_mod_revision(10),
            vec![b.clone(), cc.clone()],
        ),
        (
            "min_mod 9 sorted by create",
            all()
                .with_min_mod_revision(9)
                .with_sort(SortTarget::Create, SortOrder::Ascend),
            vec![d.clone(), cc.clone(), a.clone()],
        ),
    ];
    for (what, opts, expected) in cases {
        assert_eq!(
            get(&mut c, "", opts).await,
            got(11, expected, 4, false),
            "{what}"
        );
    }
    // The limit applies after filtering.
    assert_eq!(
        get(&mut c, "", all().with_min_mod_revision(9).with_limit(2)).await,
        got(11, vec![a.clone(), cc.clone()], 4, true),
    );
    assert_eq!(
        get(&mut c, "", all().with_min_mod_revision(9).with_limit(3)).await,
        got(11, vec![a.clone(), cc.clone(), d.clone()], 4, false),
    );
    assert_eq!(
        get(&mut c, "", all().with_max_create_revision(3).with_limit(1)).await,
        got(11, vec![cc.clone()], 4, true),
    );
    // count_only ignores the filters.
    assert_eq!(
        get(
            &mut c,
            "",
            all().with_min_mod_revision(11).with_count_only()
        )
        .await,
        got(11, vec![], 4, false),
    );
    // keys_only with a filter.
    assert_eq!(
        get(&mut c, "", all().with_min_mod_revision(11).with_keys_only()).await,
        got(11, vec![kv("a", "", 5, 11, 2)], 4, false),
    );
    // Filters at a past revision (rev 8: a c5 m5, b c4 m4, c c3 m6, d c2 m8).
    assert_eq!(
        get(&mut c, "", all().with_revision(8).with_min_mod_revision(6)).await,
        got(
            11,
            vec![kv("c", "c1", 3, 6, 2), kv("d", "d2", 2, 8, 3)],
            4,
            false
        ),
    );
    // A filter on a single key.
    assert_eq!(
        get(&mut c, "a", GetOptions::new().with_max_mod_revision(10)).await,
        got(11, vec![], 1, false),
    );
}

#[test]
fn range_mod_create_filters_match_etcd() {
    run_both(&[], range_mod_create_filters);
}

async fn range_serializable_and_headers(t: Target) {
    let mut c = t.client().await;
    let mut cl = t.client().await.cluster_client();
    let mut mt = t.client().await.maintenance_client();
    let members = cl.member_list().await.expect("member list");
    let status = mt.status().await.expect("status");
    let member_id = members.members()[0].id();
    let mh = hdr_of(members.header()).expect("member list header");
    let sh = hdr_of(status.header()).expect("status header");
    assert_ne!(mh.cluster_id, 0, "cluster_id");
    assert_ne!(member_id, 0, "member id");
    assert_eq!(mh.member_id, member_id);
    assert_eq!(status.leader(), member_id);
    assert_eq!(
        sh,
        Hdr {
            cluster_id: mh.cluster_id,
            member_id,
            revision: 1,
            raft_term: status.raft_term()
        }
    );
    let term = status.raft_term();
    // A fresh single-member cluster elected itself once, at term 2.
    assert_eq!(term, 2, "raft term");
    let want = |revision: i64| {
        Some(Hdr {
            cluster_id: mh.cluster_id,
            member_id,
            revision,
            raft_term: term,
        })
    };
    // The Cluster service fills no revision.
    assert_eq!(Some(mh), want(0));

    let p = c.put("s", "1", None).await.expect("put");
    assert_eq!(hdr_of(p.header()), want(2));
    let lin = c.get("s", None).await.expect("get");
    let ser = c
        .get("s", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get");
    assert_eq!(hdr_of(lin.header()), want(2));
    assert_eq!(hdr_of(ser.header()), want(2));
    assert_eq!(got_of(&ser), got(2, vec![kv("s", "1", 2, 2, 1)], 1, false));
    assert_eq!(got_of(&lin), got_of(&ser));
    let ser_all = c
        .get("", Some(all().with_serializable().with_keys_only()))
        .await
        .expect("serializable get all");
    assert_eq!(
        got_of(&ser_all),
        got(2, vec![kv("s", "", 2, 2, 1)], 1, false)
    );
    let ser_missing = c
        .get("t", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get missing");
    assert_eq!(hdr_of(ser_missing.header()), want(2));
    assert_eq!(got_of(&ser_missing), got(2, vec![], 0, false));

    let d = c.delete("nothing", None).await.expect("delete");
    assert_eq!(hdr_of(d.header()), want(2));
    let tx = c.txn(Txn::new()).await.expect("empty txn");
    assert_eq!(hdr_of(tx.header()), want(2));
    assert!(tx.succeeded());
    let cp = c.compact(2, None).await.expect("compact");
    assert_eq!(hdr_of(cp.header()), want(2));
    let status = mt.status().await.expect("status");
    assert_eq!(hdr_of(status.header()), want(2));
}

#[test]
fn range_serializable_and_headers_match_etcd() {
    run_both(&[], range_serializable_and_headers);
}

// ---- Put ----

async fn put_options(t: Target) {
    let mut c = t.client().await;
    let p = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(p.header().unwrap().revision(), 2);
    assert_eq!(p.prev_key().map(kv_of), None, "no prev_kv on create");
    let p = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(p.header().unwrap().revision(), 3);
    assert_eq!(p.prev_key().map(kv_of), Some(kv("k", "v1", 2, 2, 1)));
    let p = c.put("k", "v3", None).await.expect("put");
    assert_eq!(p.header().unwrap().revision(), 4);
    assert_eq!(p.prev_key().map(kv_of), None, "prev_kv not asked");

    // ignore_value keeps the value, bumps version and mod revision.
    let p = c
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .expect("put ignore_value");
    assert_eq!(p.header().unwrap().revision(), 5);
    assert_eq!(p.prev_key().map(kv_of), Some(kv("k", "v3", 2, 4, 3)));
    assert_eq!(
        get(&mut c, "k", GetOptions::new()).await,
        got(5, vec![kv("k", "v3", 2, 5, 4)], 1, false)
    );
    // ignore_lease keeps the lease (none here) and takes the new value.
    let p = c
        .put("k", "v4", Some(PutOptions::new().with_ignore_lease()))
        .await
        .expect("put ignore_lease");
    assert_eq!(p.header().unwrap().revision(), 6);
    assert_eq!(
        get(&mut c, "k", GetOptions::new()).await,
        got(6, vec![kv("k", "v4", 2, 6, 5)], 1, false)
    );
    let p = c
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_ignore_lease()),
        )
        .await
        .expect("put ignore_value ignore_lease");
    assert_eq!(p.header().unwrap().revision(), 7);
    assert_eq!(
        get(&mut c, "k", GetOptions::new()).await,
        got(7, vec![kv("k", "v4", 2, 7, 6)], 1, false)
    );
    // An empty value is a value.
    assert_eq!(put(&mut c, "e", "").await, 8);
    assert_eq!(
        get(&mut c, "e", GetOptions::new()).await,
        got(8, vec![kv("e", "", 8, 8, 1)], 1, false)
    );
    // Binary keys and values.
    c.put(b"\0\xff".to_vec(), b"\xff\0".to_vec(), None)
        .await
        .expect("binary put");
    let r = c.get(b"\0\xff".to_vec(), None).await.expect("binary get");
    assert_eq!(
        got_of(&r),
        got(
            9,
            vec![Kv {
                key: show(b"\0\xff"),
                value: show(b"\xff\0"),
                create: 9,
                modr: 9,
                ver: 1,
                lease: 0
            }],
            1,
            false
        )
    );
    let state = get(&mut c, "", all().with_keys_only()).await;
    assert_eq!(state.rev, 9);

    // Failed puts change nothing.
    let ign_v = || PutOptions::new().with_ignore_value();
    let ign_l = || PutOptions::new().with_ignore_lease();
    assert_status(
        c.put("missing", "", Some(ign_v())).await,
        "InvalidArgument",
        E_KEY_NOT_FOUND,
    );
    assert_status(
        c.put("missing", "x", Some(ign_l())).await,
        "InvalidArgument",
        E_KEY_NOT_FOUND,
    );
    assert_status(
        c.put("k", "x", Some(ign_v())).await,
        "InvalidArgument",
        E_VALUE_PROVIDED,
    );
    assert_status(
        c.put("missing", "x", Some(ign_v())).await,
        "InvalidArgument",
        E_VALUE_PROVIDED,
    );
    assert_status(
        c.put("k", "x", Some(ign_l().with_lease(5))).await,
        "InvalidArgument",
        E_LEASE_PROVIDED,
    );
    assert_status(
        c.put("k", "x", Some(PutOptions::new().with_lease(12345)))
            .await,
        "NotFound",
        E_LEASE_NOT_FOUND,
    );
    assert_status(
        c.put("k", "x", Some(PutOptions::new().with_lease(-1)))
            .await,
        "NotFound",
        E_LEASE_NOT_FOUND,
    );
    // The lease is checked before ignore_value's key lookup.
    assert_status(
        c.put("missing", "", Some(ign_v().with_lease(77))).await,
        "NotFound",
        E_LEASE_NOT_FOUND,
    );
    assert_status(c.put("", "v", None).await, "InvalidArgument", E_EMPTY_KEY);
    // The empty key is checked first.
    assert_status(
        c.put("", "v", Some(ign_v())).await,
        "InvalidArgument",
        E_EMPTY_KEY,
    );
    assert_eq!(get(&mut c, "", all().with_keys_only()).await, state);
    assert_eq!(
        get(&mut c, "k", GetOptions::new()).await,
        got(9, vec![kv("k", "v4", 2, 7, 6)], 1, false)
    );
}

#[test]
fn put_options_match_etcd() {
    run_both(&[], put_options);
}

const MAX_REQUEST_BYTES: usize = 100_000;
/// gRPC's own receive limit: --max-request-bytes plus 512 KiB.
const GRPC_LIMIT: usize = MAX_REQUEST_BYTES + 512 * 1024;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Encoded length of a bytes field of `len` bytes with a 1-byte tag (0 if
/// empty: proto3 omits it).
fn bytes_field(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + varint_len(len as u64) + len
    }
}

/// Encoded PutRequest{key, value}.
fn put_len(key: usize, value: usize) -> usize {
    bytes_field(key) + bytes_field(value)
}

/// Encoded TxnRequest{success: [RequestOp{request_put: put}]}.
fn txn_put_len(key: usize, value: usize) -> usize {
    bytes_field(bytes_field(put_len(key, value)))
}

/// What etcd compares with --max-request-bytes: the InternalRaftRequest,
/// i.e. the request in its field plus a RequestHeader{ID} (field 100, 2-byte
/// tag) whose request id is the member id's low 16 bits followed by 48 bits
/// of timestamp and counter.
fn raft_len(inner: usize, member_id: u64) -> usize {
    let id = ((member_id & 0xffff) << 48) | (1 << 47);
    let header = 1 + varint_len(id);
    bytes_field(inner) + 2 + varint_len(header as u64) + header
}

/// Largest value for `key_len` whose request `len(key, value)` etcd accepts.
fn largest_value(member_id: u64, key_len: usize, len: fn(usize, usize) -> usize) -> usize {
    (0..MAX_REQUEST_BYTES)
        .rev()
        .find(|&v| raft_len(len(key_len, v), member_id) <= MAX_REQUEST_BYTES)
        .expect("some value fits")
}

async fn put_request_size_limits(t: Target) {
    let mut c = t.client().await;
    let member_id = c.member_list().await.expect("member list").members()[0].id();
    let big = |n: usize| "v".repeat(n);

    // The exact boundary of --max-request-bytes.
    let put_max = largest_value(member_id, 3, put_len);
    let txn_max = largest_value(member_id, 3, txn_put_len);
    assert!(
        (MAX_REQUEST_BYTES - 40..MAX_REQUEST_BYTES - 10).contains(&put_max),
        "{put_max}"
    );
    assert_status(
        c.put("big", big(put_max + 1), None).await,
        "InvalidArgument",
        E_TOO_LARGE,
    );
    assert_eq!(put(&mut c, "big", &big(put_max)).await, 2);
    assert_status(
        c.txn(Txn::new().and_then([TxnOp::put("big", big(txn_max + 1), None)]))
            .await,
        "InvalidArgument",
        E_TOO_LARGE,
    );
    let r = c
        .txn(Txn::new().and_then([TxnOp::put("big", big(txn_max), None)]))
        .await
        .expect("txn at the limit");
    assert_eq!(r.header().unwrap().revision(), 3);
    let unchanged = get(&mut c, "", all().with_keys_only()).await;
    assert_eq!(unchanged, got(3, vec![kv("big", "", 2, 3, 2)], 1, false));

    // Over --max-request-bytes but under the gRPC limit: etcd's own error.
    for n in [put_max + 2, MAX_REQUEST_BYTES + 1, GRPC_LIMIT - 1024] {
        assert_status(
            c.put("big", big(n), None).await,
            "InvalidArgument",
            E_TOO_LARGE,
        );
        assert_status(
            c.txn(Txn::new().and_then([TxnOp::put("big", big(n), None)]))
                .await,
            "InvalidArgument",
            E_TOO_LARGE,
        );
        assert_eq!(get(&mut c, "", all().with_keys_only()).await, unchanged);
    }
    // A txn whose puts are small but add up to too much, even in the branch
    // not taken.
    let ops: Vec<TxnOp> = (0..4)
        .map(|i| TxnOp::put(format!("t{i}"), big(MAX_REQUEST_BYTES / 3), None))
        .collect();
    assert_status(
        c.txn(Txn::new().and_then(ops.clone())).await,
        "InvalidArgument",
        E_TOO_LARGE,
    );
    assert_status(
        c.txn(Txn::new().or_else(ops)).await,
        "InvalidArgument",
        E_TOO_LARGE,
    );
    // Deletes go through Raft too.
    assert_status(
        c.delete(big(MAX_REQUEST_BYTES + 1), None).await,
        "InvalidArgument",
        E_TOO_LARGE,
    );
    assert_eq!(get(&mut c, "", all().with_keys_only()).await, unchanged);

    // Reads are not proposed, so only the gRPC limit applies to them: a
    // range, and a read-only txn (served without Raft by etcd).
    let huge_key = "k".repeat(MAX_REQUEST_BYTES + 50_000);
    assert_eq!(
        get(&mut c, &huge_key, GetOptions::new()).await,
        got(3, vec![], 0, false)
    );
    let r = c
        .txn(
            Txn::new()
                .when([Compare::version(huge_key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::get(huge_key.clone(), None)])
                .or_else([TxnOp::get("big", None)]),
        )
        .await
        .expect("large read-only txn");
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 3);
    // A txn holding a nested txn is not read-only to etcd, even when the
    // nested txn only reads.
    assert_status(
        c.txn(Txn::new().and_then([
            TxnOp::get(huge_key.clone(), None),
            TxnOp::txn(Txn::new().and_then([TxnOp::get("big", None)])),
        ]))
        .await,
        "InvalidArgument",
        E_TOO_LARGE,
    );
    // Beyond the gRPC limit any request is refused.
    assert!(c.put("big", big(GRPC_LIMIT + 1), None).await.is_err());
    assert!(c.get("k".repeat(GRPC_LIMIT + 1), None).await.is_err());
    assert!(
        c.txn(Txn::new().and_then([TxnOp::get("k".repeat(GRPC_LIMIT + 1), None)]))
            .await
            .is_err()
    );
    // The connection is still usable and nothing changed.
    assert_eq!(get(&mut c, "", all().with_keys_only()).await, unchanged);
    assert_eq!(put(&mut c, "small", "1").await, 4);
}

#[test]
fn put_request_size_limits_match_etcd() {
    let limit = MAX_REQUEST_BYTES.to_string();
    run_both(&["--max-request-bytes", &limit], put_request_size_limits);
}

/// retcd only, a documented difference: one WAL record holds a Raft entry of at most ~4 MiB
/// (engine/DESIGN.md §2.3). With --max-request-bytes above that, a larger write gets etcd's
/// request-too-large error (etcd takes it), where it used to stop the member; smaller ones
/// still go through, and the member serves on.
#[test]
fn a_write_the_wal_cannot_hold_is_refused_and_the_member_serves_on() {
    let mut server = support::Server::start_in_tempdir_with_args(
        Kind::Retcd,
        &["--max-request-bytes", "10485760"],
    );
    let t = Target::of(&server);
    let rt = support::runtime();
    rt.block_on(async move {
        let mut c = t.client().await;
        assert_status(
            c.put("big", "v".repeat(5 << 20), None).await,
            "InvalidArgument",
            E_TOO_LARGE,
        );
        let txn = Txn::new().and_then([TxnOp::put("big", "v".repeat(5 << 20), None)]);
        assert_status(c.txn(txn).await, "InvalidArgument", E_TOO_LARGE);
        assert_eq!(put(&mut c, "big", &"v".repeat(3 << 20)).await, 2);
        let r = c.get("big", None).await.expect("get");
        assert_eq!(r.kvs()[0].value().len(), 3 << 20);
        assert_eq!(put(&mut c, "small", "1").await, 3);
    });
    assert!(server.is_running(), "the member still runs");
}

/// How gRPC refuses a message over its receive limit (grpc-go: code
/// ResourceExhausted, "grpc: received message larger than max (N vs. M)").
async fn grpc_limit_refusal(t: Target) {
    let mut c = t.client().await;
    let n = GRPC_LIMIT + 1;
    let r = c.put("big", "v".repeat(n), None).await;
    let sent = put_len(3, n);
    match r {
        Err(Error::GRpcStatus(s)) => assert_eq!(
            (format!("{:?}", s.code()), s.message()),
            (
                "ResourceExhausted".to_string(),
                format!("grpc: received message larger than max ({sent} vs. {GRPC_LIMIT})")
                    .as_str()
            ),
            "gRPC refusal"
        ),
        other => panic!("put over the gRPC limit: {other:?}"),
    }
    assert_eq!(rev(&mut c).await, 1);
}

#[test]
fn grpc_limit_refusal_match_etcd() {
    let limit = MAX_REQUEST_BYTES.to_string();
    run_both(&["--max-request-bytes", &limit], grpc_limit_refusal);
}

// ---- DeleteRange ----

async fn delete_range(t: Target) {
    let mut c = t.client().await;
    for (i, k) in ["a", "b", "c", "d", "foo", "foo/1", "foo/2", "fop", "z"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(put(&mut c, k, &format!("v{k}")).await, i as i64 + 2);
    }
    let v = |k: &str, rev: i64| kv(k, &format!("v{k}"), rev, rev, 1);
    let del = |opts: DeleteOptions| Some(opts);

    // Single key, no prev_kv.
    let r = c.delete("a", None).await.expect("delete a");
    assert_eq!(
        (
            r.header().unwrap().revision(),
            r.deleted(),
            r.prev_kvs().len()
        ),
        (11, 1, 0)
    );
    // Nothing matched: revision not bumped.
    let r = c.delete("a", None).await.expect("delete a again");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (11, 0));
    let r = c
        .delete(
            "e",
            del(DeleteOptions::new().with_range("f").with_prev_key()),
        )
        .await
        .expect("delete [e, f)");
    assert_eq!(
        (
            r.header().unwrap().revision(),
            r.deleted(),
            r.prev_kvs().len()
        ),
        (11, 0, 0)
    );
    assert_eq!(rev(&mut c).await, 11);

    // Range with prev_kv.
    let r = c
        .delete(
            "b",
            del(DeleteOptions::new().with_range("d").with_prev_key()),
        )
        .await
        .expect("delete [b, d)");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (12, 2));
    assert_eq!(
        r.prev_kvs().iter().map(kv_of).collect::<Vec<_>>(),
        vec![v("b", 3), v("c", 4)]
    );
    // Prefix.
    let r = c
        .delete(
            "foo",
            del(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete prefix foo");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (13, 3));
    assert_eq!(
        r.prev_kvs().iter().map(kv_of).collect::<Vec<_>>(),
        vec![v("foo", 6), v("foo/1", 7), v("foo/2", 8)]
    );
    let r = c
        .delete("missing", del(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete missing prefix");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (13, 0));
    // From key.
    let r = c
        .delete(
            "x",
            del(DeleteOptions::new().with_from_key().with_prev_key()),
        )
        .await
        .expect("delete from x");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (14, 1));
    assert_eq!(
        r.prev_kvs().iter().map(kv_of).collect::<Vec<_>>(),
        vec![v("z", 10)]
    );
    // range_end <= key deletes nothing.
    let r = c
        .delete("d", del(DeleteOptions::new().with_range("a")))
        .await
        .expect("delete [d, a)");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (14, 0));
    // An empty key is refused.
    assert_status(c.delete("", None).await, "InvalidArgument", E_EMPTY_KEY);
    assert_status(
        c.delete("", del(DeleteOptions::new().with_range("z")))
            .await,
        "InvalidArgument",
        E_EMPTY_KEY,
    );
    assert_eq!(
        get(&mut c, "", all()).await,
        got(14, vec![v("d", 5), v("fop", 9)], 2, false)
    );
    // All keys.
    let r = c
        .delete(
            "",
            del(DeleteOptions::new().with_all_keys().with_prev_key()),
        )
        .await
        .expect("delete all");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (15, 2));
    assert_eq!(
        r.prev_kvs().iter().map(kv_of).collect::<Vec<_>>(),
        vec![v("d", 5), v("fop", 9)]
    );
    assert_eq!(get(&mut c, "", all()).await, got(15, vec![], 0, false));
    let r = c
        .delete("", del(DeleteOptions::new().with_all_keys()))
        .await
        .expect("delete all again");
    assert_eq!((r.header().unwrap().revision(), r.deleted()), (15, 0));

    // History survives the deletes; a recreated key starts over.
    assert_eq!(
        get(&mut c, "", all().with_revision(10).with_count_only()).await,
        got(15, vec![], 9, false)
    );
    assert_eq!(
        get(&mut c, "a", GetOptions::new().with_revision(10)).await,
        got(15, vec![v("a", 2)], 1, false)
    );
    assert_status(
        c.put("a", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        "InvalidArgument",
        E_KEY_NOT_FOUND,
    );
    let p = c
        .put("a", "va", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put a");
    assert_eq!(p.header().unwrap().revision(), 16);
    assert_eq!(p.prev_key().map(kv_of), None, "no prev_kv after a delete");
    assert_eq!(
        get(&mut c, "a", GetOptions::new()).await,
        got(16, vec![v("a", 16)], 1, false)
    );
}

#[test]
fn delete_range_match_etcd() {
    run_both(&[], delete_range);
}

// ---- Txn ----

async fn txn_succeeded(c: &mut Client, cmps: Vec<Compare>) -> bool {
    let r = c
        .txn(Txn::new().when(cmps.clone()))
        .await
        .unwrap_or_else(|e| panic!("txn {cmps:?}: {e}"));
    assert!(ops_of(&r).is_empty());
    r.succeeded()
}

async fn txn_compares(t: Target) {
    let mut c = t.client().await;
    put(&mut c, "k", "x").await;
    put(&mut c, "k", "m").await;
    // k: version 2, create 2, mod 3, value "m", lease 0.
    let ops = [
        CompareOp::Equal,
        CompareOp::Greater,
        CompareOp::Less,
        CompareOp::NotEqual,
    ];
    // Whether `actual OP operand` holds, for actual < / == / > operand.
    let holds = |op: CompareOp, actual_vs_operand: std::cmp::Ordering| {
        use std::cmp::Ordering::*;
        match op {
            CompareOp::Equal => actual_vs_operand == Equal,
            CompareOp::Greater => actual_vs_operand == Greater,
            CompareOp::Less => actual_vs_operand == Less,
            CompareOp::NotEqual => actual_vs_operand != Equal,
        }
    };
    for op in ops {
        for (operand_delta, ord) in [
            (-1i64, std::cmp::Ordering::Greater),
            (0, std::cmp::Ordering::Equal),
            (1, std::cmp::Ordering::Less),
        ] {
            let want = holds(op, ord);
            let values = ["a", "m", "z"];
            let cmps = [
                ("version", Compare::version("k", op, 2 + operand_delta)),
                (
                    "create",
                    Compare::create_revision("k", op, 2 + operand_delta),
                ),
                ("mod", Compare::mod_revision("k", op, 3 + operand_delta)),
                (
                    "value",
                    Compare::value("k", op, values[(operand_delta + 1) as usize]),
                ),
                ("lease", Compare::lease("k", op, operand_delta)),
            ];
            for (what, cmp) in cmps {
                assert_eq!(
                    txn_succeeded(&mut c, vec![cmp]).await,
                    want,
                    "{what} {op:?} (actual {ord:?} operand)"
                );
            }
        }
    }
    // Value compares are bytewise.
    assert!(txn_succeeded(&mut c, vec![Compare::value("k", CompareOp::Greater, "l")]).await);
    assert!(txn_succeeded(&mut c, vec![Compare::value("k", CompareOp::Less, "mm")]).await);
    assert!(txn_succeeded(&mut c, vec![Compare::value("k", CompareOp::Greater, "")]).await);
    // Every compare must hold.
    assert!(
        txn_succeeded(
            &mut c,
            vec![
                Compare::version("k", CompareOp::Equal, 2),
                Compare::value("k", CompareOp::Equal, "m")
            ]
        )
        .await
    );
    assert!(
        !txn_succeeded(
            &mut c,
            vec![
                Compare::version("k", CompareOp::Equal, 2),
                Compare::value("k", CompareOp::Equal, "a")
            ]
        )
        .await
    );
    // A missing key compares as a zero KeyValue, except for VALUE, which
    // always fails.
    let missing: Vec<(&str, Compare, bool)> = vec![
        (
            "version = 0",
            Compare::version("no", CompareOp::Equal, 0),
            true,
        ),
        (
            "version < 1",
            Compare::version("no", CompareOp::Less, 1),
            true,
        ),
        (
            "version > 0",
            Compare::version("no", CompareOp::Greater, 0),
            false,
        ),
        (
            "version != 0",
            Compare::version("no", CompareOp::NotEqual, 0),
            false,
        ),
        (
            "create = 0",
            Compare::create_revision("no", CompareOp::Equal, 0),
            true,
        ),
        (
            "mod = 0",
            Compare::mod_revision("no", CompareOp::Equal, 0),
            true,
        ),
        (
            "mod < 5",
            Compare::mod_revision("no", CompareOp::Less, 5),
            true,
        ),
        ("lease = 0", Compare::lease("no", CompareOp::Equal, 0), true),
        (
            "value = ''",
            Compare::value("no", CompareOp::Equal, ""),
            false,
        ),
        (
            "value != 'x'",
            Compare::value("no", CompareOp::NotEqual, "x"),
            false,
        ),
        (
            "value > ''",
            Compare::value("no", CompareOp::Greater, ""),
            false,
        ),
        (
            "value < 'x'",
            Compare::value("no", CompareOp::Less, "x"),
            false,
        ),
    ];
    for (what, cmp, want) in missing {
        assert_eq!(
            txn_succeeded(&mut c, vec![cmp]).await,
            want,
            "missing key: {what}"
        );
    }
    // A deleted key is missing too.
    put(&mut c, "gone", "1").await;
    c.delete("gone", None).await.expect("delete");
    assert!(txn_succeeded(&mut c, vec![Compare::version("gone", CompareOp::Equal, 0)]).await);
    assert!(
        txn_succeeded(
            &mut c,
            vec![Compare::create_revision("gone", CompareOp::Equal, 0)]
        )
        .await
    );
    assert!(!txn_succeeded(&mut c, vec![Compare::value("gone", CompareOp::Equal, "1")]).await);
    // No compare: succeeds. Empty txns change nothing.
    assert!(txn_succeeded(&mut c, vec![]).await);
    assert_eq!(rev(&mut c).await, 5);
}

#[test]
fn txn_compares_match_etcd() {
    run_both(&[], txn_compares);
}

async fn txn_compare_ranges(t: Target) {
    let mut c = t.client().await;
    put(&mut c, "p/1", "a").await; // 2
    put(&mut c, "p/2", "b").await; // 3
    put(&mut c, "p/3", "c").await; // 4
    put(&mut c, "q", "z").await; // 5
    let cases: Vec<(&str, Compare, bool)> = vec![
        (
            "all values > ''",
            Compare::value("p/", CompareOp::Greater, "").with_prefix(),
            true,
        ),
        (
            "values in [p/1, p/3) < c",
            Compare::value("p/1", CompareOp::Less, "c").with_range("p/3"),
            true,
        ),
        (
            "values in [p/1, p/4) < c",
            Compare::value("p/1", CompareOp::Less, "c").with_range("p/4"),
            false,
        ),
        (
            "values under p/ != b",
            Compare::value("p/", CompareOp::NotEqual, "b").with_prefix(),
            false,
        ),
        (
            "values under p/ = a",
            Compare::value("p/", CompareOp::Equal, "a").with_prefix(),
            false,
        ),
        (
            "versions under p/ = 1",
            Compare::version("p/", CompareOp::Equal, 1).with_prefix(),
            true,
        ),
        (
            "creates under p/ > 1",
            Compare::create_revision("p/", CompareOp::Greater, 1).with_prefix(),
            true,
        ),
        (
            "creates under p/ > 2",
            Compare::create_revision("p/", CompareOp::Greater, 2).with_prefix(),
            false,
        ),
        (
            "mods under p/ < 5",
            Compare::mod_revision("p/", CompareOp::Less, 5).with_prefix(),
            true,
        ),
        (
            "mods from p/ < 5 (q included)",
            Compare::mod_revision("p/", CompareOp::Less, 5).with_range("\0"),
            false,
        ),
        (
            "leases under p/ = 0",
            Compare::lease("p/", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        // An empty range compares a zero KeyValue (VALUE always fails).
        (
            "versions under r/ = 0",
            Compare::version("r/", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        (
            "values under r/ = ''",
            Compare::value("r/", CompareOp::Equal, "").with_prefix(),
            false,
        ),
        (
            "versions in [p/3, p/1) = 0",
            Compare::version("p/3", CompareOp::Equal, 0).with_range("p/1"),
            true,
        ),
    ];
    for (what, cmp, want) in cases {
        assert_eq!(txn_succeeded(&mut c, vec![cmp]).await, want, "{what}");
    }
    put(&mut c, "p/2", "b2").await; // 6
    assert!(
        !txn_succeeded(
            &mut c,
            vec![Compare::version("p/", CompareOp::Equal, 1).with_prefix()]
        )
        .await
    );
    assert!(
        txn_succeeded(
            &mut c,
            vec![Compare::version("p/", CompareOp::Greater, 0).with_prefix()]
        )
        .await
    );
    assert!(
        txn_succeeded(
            &mut c,
            vec![Compare::version("p/", CompareOp::Less, 3).with_prefix()]
        )
        .await
    );
    assert!(
        !txn_succeeded(
            &mut c,
            vec![Compare::mod_revision("p/", CompareOp::Less, 5).with_prefix()]
        )
        .await
    );
    assert_eq!(rev(&mut c).await, 6);
}

#[test]
fn txn_compare_ranges_match_etcd() {
    run_both(&[], txn_compare_ranges);
}

async fn txn_branches_and_responses(t: Target) {
    let mut c = t.client().await;
    put(&mut c, "k1", "v1").await; // 2
    put(&mut c, "k2", "v2").await; // 3

    // Success branch with every op kind; the nested txn's compare sees the
    // state before the outer txn (k3 does not exist yet), so it takes its
    // failure branch.
    let nested = Txn::new()
        .when([Compare::value("k3", CompareOp::Equal, "v3")])
        .and_then([TxnOp::put("k4", "v4", None)])
        .or_else([
            TxnOp::put("k5", "v5", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("k3", None),
        ]);
    let r = c
        .txn(
            Txn::new()
                .when([Compare::version("k1", CompareOp::Equal, 1)])
                .and_then([
                    TxnOp::get("k1", None),
                    TxnOp::put("k3", "v3", Some(PutOptions::new().with_prev_key())),
                    TxnOp::get("k1", None),
                    TxnOp::delete("k2", Some(DeleteOptions::new().with_prev_key())),
                    TxnOp::get("k", Some(GetOptions::new().with_prefix())),
                    TxnOp::txn(nested),
                    TxnOp::get("k4", None),
                    TxnOp::get("k", Some(GetOptions::new().with_prefix().with_keys_only())),
                    TxnOp::delete("nothing", None),
                ])
                .or_else([TxnOp::put("fail", "1", None)]),
        )
        .await
        .expect("txn 1");
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 4);
    let k1 = kv("k1", "v1", 2, 2, 1);
    let k3 = kv("k3", "v3", 4, 4, 1);
    let k5 = kv("k5", "v5", 4, 4, 1);
    assert_eq!(
        ops_of(&r),
        vec![
            // Before any change the txn reads at revision 3.
            get_op(3, vec![k1.clone()], 1, false),
            Op::Put {
                hdr: inner(4),
                prev: None
            },
            get_op(4, vec![k1.clone()], 1, false),
            Op::Del {
                hdr: inner(4),
                deleted: 1,
                prev: vec![kv("k2", "v2", 3, 3, 1)]
            },
            get_op(4, vec![k1.clone(), k3.clone()], 2, false),
            Op::Txn {
                hdr: inner(0),
                succeeded: false,
                ops: vec![
                    Op::Put {
                        hdr: inner(4),
                        prev: None
                    },
                    get_op(4, vec![k3.clone()], 1, false),
                ]
            },
            get_op(4, vec![], 0, false),
            get_op(
                4,
                vec![
                    kv("k1", "", 2, 2, 1),
                    kv("k3", "", 4, 4, 1),
                    kv("k5", "", 4, 4, 1)
                ],
                3,
                false
            ),
            Op::Del {
                hdr: inner(4),
                deleted: 0,
                prev: vec![]
            },
        ]
    );
    assert_eq!(
        get(&mut c, "", all()).await,
        got(4, vec![k1.clone(), k3.clone(), k5.clone()], 3, false)
    );

    // Failure branch; a range at a past revision; a put after a read.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("k1", CompareOp::Equal, "nope")])
                .and_then([TxnOp::put("x", "1", None)])
                .or_else([
                    TxnOp::get("k2", Some(GetOptions::new().with_revision(3))),
                    TxnOp::put("k1", "v1b", Some(PutOptions::new().with_prev_key())),
                    TxnOp::get("k1", None),
                    TxnOp::get("k", Some(GetOptions::new().with_prefix().with_revision(2))),
                    TxnOp::get(
                        "k",
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_count_only()
                                .with_limit(1),
                        ),
                    ),
                    TxnOp::get(
                        "k",
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_limit(2)
                                .with_sort(SortTarget::Mod, SortOrder::Descend),
                        ),
                    ),
                ]),
        )
        .await
        .expect("txn 2");
    assert!(!r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 5);
    let k1b = kv("k1", "v1b", 2, 5, 2);
    assert_eq!(
        ops_of(&r),
        vec![
            get_op(4, vec![kv("k2", "v2", 3, 3, 1)], 1, false),
            Op::Put {
                hdr: inner(5),
                prev: Some(k1.clone())
            },
            get_op(5, vec![k1b.clone()], 1, false),
            get_op(5, vec![k1.clone()], 1, false),
            get_op(5, vec![], 3, false),
            get_op(5, vec![k1b.clone(), k3.clone()], 3, true),
        ]
    );

    // Read-only and no-op txns do not bump the revision.
    let r = c
        .txn(Txn::new().and_then([TxnOp::get("k1", None), TxnOp::get("zz", None)]))
        .await
        .expect("read-only txn");
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 5);
    assert_eq!(
        ops_of(&r),
        vec![
            get_op(5, vec![k1b.clone()], 1, false),
            get_op(5, vec![], 0, false),
        ]
    );
    let r = c
        .txn(Txn::new().and_then([TxnOp::delete(
            "zz",
            Some(DeleteOptions::new().with_prefix()),
        )]))
        .await
        .expect("no-op delete txn");
    assert_eq!(r.header().unwrap().revision(), 5);
    assert_eq!(
        ops_of(&r),
        vec![Op::Del {
            hdr: inner(5),
            deleted: 0,
            prev: vec![]
        }]
    );
    let r = c
        .txn(Txn::new().when([Compare::version("k1", CompareOp::Equal, 99)]))
        .await
        .expect("failed empty txn");
    assert!(!r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 5);

    // Several writes share one revision; sub-revision order is visible in
    // nothing but the values.
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::put("m1", "1", None),
            TxnOp::delete("k3", None),
            TxnOp::put("m2", "2", None),
            TxnOp::txn(Txn::new().and_then([TxnOp::put("m3", "3", None)])),
            TxnOp::put("k1", "v1c", None),
        ]))
        .await
        .expect("multi-write txn");
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_eq!(
        get(&mut c, "", all()).await,
        got(
            6,
            vec![
                kv("k1", "v1c", 2, 6, 3),
                k5.clone(),
                kv("m1", "1", 6, 6, 1),
                kv("m2", "2", 6, 6, 1),
                kv("m3", "3", 6, 6, 1),
            ],
            5,
            false
        )
    );
    // Deeply nested txns, both branches.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::version("m1", CompareOp::Equal, 1)])
                .and_then([TxnOp::txn(
                    Txn::new()
                        .when([Compare::version("m1", CompareOp::Equal, 2)])
                        .and_then([TxnOp::put("n", "then", None)])
                        .or_else([TxnOp::txn(
                            Txn::new()
                                .and_then([TxnOp::put("n", "deep", None)])
                                .or_else([TxnOp::put("never", "x", None)]),
                        )]),
                )]),
        )
        .await
        .expect("nested txn");
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 7);
    assert_eq!(
        ops_of(&r),
        vec![Op::Txn {
            hdr: inner(0),
            succeeded: false,
            ops: vec![Op::Txn {
                hdr: inner(0),
                succeeded: true,
                ops: vec![Op::Put {
                    hdr: inner(7),
                    prev: None
                }]
            }]
        }]
    );
    assert_eq!(
        get(&mut c, "n", GetOptions::new()).await,
        got(7, vec![kv("n", "deep", 7, 7, 1)], 1, false)
    );
}

#[test]
fn txn_branches_and_responses_match_etcd() {
    run_both(&[], txn_branches_and_responses);
}

async fn txn_errors(t: Target) {
    let mut c = t.client().await;
    put(&mut c, "a", "1").await; // 2
    put(&mut c, "b", "1").await; // 3
    let state = get(&mut c, "", all()).await;
    let puts = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("p{i:03}"), "v", None))
            .collect()
    };
    // Compares that hold (a missing key has version 0).
    let cmps = |n: usize| -> Vec<Compare> {
        (0..n)
            .map(|_| Compare::version("zzz", CompareOp::Equal, 0))
            .collect()
    };

    // More than --max-txn-ops (128) in any list.
    assert_status(
        c.txn(Txn::new().and_then(puts(129))).await,
        "InvalidArgument",
        E_TOO_MANY_OPS,
    );
    assert_status(
        c.txn(Txn::new().or_else(puts(129))).await,
        "InvalidArgument",
        E_TOO_MANY_OPS,
    );
    assert_status(
        c.txn(Txn::new().when(cmps(129))).await,
        "InvalidArgument",
        E_TOO_MANY_OPS,
    );
    assert_eq!(get(&mut c, "", all()).await, state);

    // Duplicate keys in one branch.
    let dup_cases: Vec<(&str, Vec<TxnOp>)> = vec![
        (
            "put twice",
            vec![TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)],
        ),
        (
            "put inside a deleted range",
            vec![
                TxnOp::delete("a", Some(DeleteOptions::new().with_range("c"))),
                TxnOp::put("b", "2", None),
            ],
        ),
        (
            "put of a deleted key",
            vec![TxnOp::put("a", "2", None), TxnOp::delete("a", None)],
        ),
        (
            "put under a deleted prefix",
            vec![
                TxnOp::put("p/1", "2", None),
                TxnOp::delete("p/", Some(DeleteOptions::new().with_prefix())),
            ],
        ),
        (
            "put in a nested txn and outside",
            vec![
                TxnOp::txn(Txn::new().and_then([TxnOp::put("x", "1", None)])),
                TxnOp::put("x", "2", None),
            ],
        ),
        (
            "put in a nested txn's other branch and outside",
            vec![
                TxnOp::txn(Txn::new().or_else([TxnOp::put("x", "1", None)])),
                TxnOp::put("x", "2", None),
            ],
        ),
        (
            "put in a nested txn under an outer delete",
            vec![
                TxnOp::delete("x", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("x", "1", None)])),
            ],
        ),
    ];
    for (what, ops) in dup_cases {
        let r = c.txn(Txn::new().and_then(ops.clone())).await;
        assert_status(r, "InvalidArgument", E_DUPLICATE);
        // Checked whichever branch runs.
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::version("a", CompareOp::Equal, 1)])
                    .or_else(ops),
            )
            .await;
        match r {
            Err(Error::GRpcStatus(s)) if s.message() == E_DUPLICATE => {}
            other => panic!("{what} in the branch not taken: {other:?}"),
        }
    }
    assert_eq!(get(&mut c, "", all()).await, state);

    // Not duplicates.
    let ok_cases: Vec<(&str, Txn, i64)> = vec![
        (
            "the same key in both branches",
            Txn::new()
                .when([Compare::version("a", CompareOp::Equal, 1)])
                .and_then([TxnOp::put("x", "1", None)])
                .or_else([TxnOp::put("x", "2", None)]),
            4,
        ),
        (
            "a put right after a deleted range",
            Txn::new().and_then([
                TxnOp::delete("a", Some(DeleteOptions::new().with_range("b"))),
                TxnOp::put("b", "2", None),
            ]),
            5,
        ),
        (
            "deleting a key twice",
            Txn::new().and_then([TxnOp::delete("b", None), TxnOp::delete("b", None)]),
            6,
        ),
        (
            "the same key in both branches of a nested txn",
            Txn::new().and_then([TxnOp::txn(
                Txn::new()
                    .and_then([TxnOp::put("y", "1", None)])
                    .or_else([TxnOp::put("y", "2", None)]),
            )]),
            7,
        ),
        ("128 puts", Txn::new().and_then(puts(128)), 8),
        (
            "128 compares",
            Txn::new()
                .when(cmps(128))
                .and_then([TxnOp::get("a", None)])
                .or_else(puts(1)),
            8,
        ),
    ];
    for (what, txn, want_rev) in ok_cases {
        let r = c.txn(txn).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.header().unwrap().revision(), want_rev, "{what}");
    }
    assert_eq!(
        get(
            &mut c,
            "p",
            GetOptions::new().with_prefix().with_count_only()
        )
        .await,
        got(8, vec![], 128, false)
    );
    assert_eq!(
        get(&mut c, "p127", GetOptions::new()).await,
        got(8, vec![kv("p127", "v", 8, 8, 1)], 1, false)
    );
    assert_eq!(
        get(&mut c, "p000", GetOptions::new()).await,
        got(8, vec![kv("p000", "v", 8, 8, 1)], 1, false)
    );

    // A txn that fails changes nothing, even where earlier ops would have.
    let state = get(&mut c, "", all()).await;
    assert_eq!(state.rev, 8);
    let failing: Vec<(&str, Txn, &str, &str)> = vec![
        (
            "unknown lease",
            Txn::new().and_then([
                TxnOp::put("new", "1", None),
                TxnOp::delete("x", None),
                TxnOp::put("b", "1", Some(PutOptions::new().with_lease(777))),
            ]),
            "NotFound",
            E_LEASE_NOT_FOUND,
        ),
        (
            "ignore_value on a missing key",
            Txn::new().and_then([
                TxnOp::put("new", "1", None),
                TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value())),
            ]),
            "InvalidArgument",
            E_KEY_NOT_FOUND,
        ),
        (
            "ignore_lease on a missing key, in a nested txn",
            Txn::new().and_then([
                TxnOp::put("new", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put(
                    "missing",
                    "1",
                    Some(PutOptions::new().with_ignore_lease()),
                )])),
            ]),
            "InvalidArgument",
            E_KEY_NOT_FOUND,
        ),
        (
            "range at a future revision",
            Txn::new().and_then([
                TxnOp::put("new", "1", None),
                TxnOp::get("a", Some(GetOptions::new().with_revision(9))),
            ]),
            "OutOfRange",
            E_FUTURE,
        ),
        (
            "value with ignore_value",
            Txn::new().and_then([
                TxnOp::put("new", "1", None),
                TxnOp::put("x", "1", Some(PutOptions::new().with_ignore_value())),
            ]),
            "InvalidArgument",
            E_VALUE_PROVIDED,
        ),
        (
            "lease with ignore_lease",
            Txn::new().and_then([
                TxnOp::put("new", "1", None),
                TxnOp::put(
                    "x",
                    "1",
                    Some(PutOptions::new().with_ignore_lease().with_lease(3)),
                ),
            ]),
            "InvalidArgument",
            E_LEASE_PROVIDED,
        ),
        (
            "empty key in a put",
            Txn::new().and_then([TxnOp::put("new", "1", None), TxnOp::put("", "1", None)]),
            "InvalidArgument",
            E_EMPTY_KEY,
        ),
        (
            "empty key in a range",
            Txn::new().and_then([TxnOp::put("new", "1", None), TxnOp::get("", None)]),
            "InvalidArgument",
            E_EMPTY_KEY,
        ),
        (
            "empty key in a delete",
            Txn::new().and_then([TxnOp::put("new", "1", None), TxnOp::delete("", None)]),
            "InvalidArgument",
            E_EMPTY_KEY,
        ),
        (
            "empty key in the branch not taken",
            Txn::new()
                .and_then([TxnOp::put("new", "1", None)])
                .or_else([TxnOp::delete("", None)]),
            "InvalidArgument",
            E_EMPTY_KEY,
        ),
        (
            "empty key in a compare",
            Txn::new()
                .when([Compare::version("", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("new", "1", None)]),
            "InvalidArgument",
            E_EMPTY_KEY,
        ),
    ];
    for (what, txn, code, msg) in failing {
        let r = c.txn(txn).await;
        match &r {
            Err(Error::GRpcStatus(s))
                if format!("{:?}", s.code()) == code && s.message() == msg => {}
            other => panic!("{what}: expected {code} {msg:?}, got {other:?}"),
        }
        assert_eq!(get(&mut c, "", all()).await, state, "{what}");
    }

    // Put checks run on the branch taken only.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::version("a", CompareOp::Equal, 99)])
                .and_then([TxnOp::put(
                    "b",
                    "1",
                    Some(PutOptions::new().with_lease(777)),
                )])
                .or_else([TxnOp::put("taken", "1", None)]),
        )
        .await
        .expect("bad lease in the branch not taken");
    assert!(!r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 9);
    let r = c
        .txn(
            Txn::new()
                .and_then([TxnOp::get("zz", None)])
                .or_else([TxnOp::get("a", Some(GetOptions::new().with_revision(99)))]),
        )
        .await
        .expect("future range in the branch not taken");
    assert!(r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 9);

    // Inside a txn a range's revision is checked against the store's first
    // revision, which is -1 before any compaction: -1 reads the newest state,
    // -2 is compacted.
    let neg =
        |r: i64| Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(r)))]);
    let r = c.txn(neg(-1)).await.expect("txn range at revision -1");
    assert_eq!(ops_of(&r), vec![get_op(9, vec![], 0, false)]);
    assert_status(c.txn(neg(-2)).await, "OutOfRange", E_COMPACTED);

    // Ranges at compacted revisions.
    c.compact(5, None).await.expect("compact");
    assert_status(c.txn(neg(-1)).await, "OutOfRange", E_COMPACTED);
    let state = get(&mut c, "", all()).await;
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::put("new", "1", None),
            TxnOp::get("a", Some(GetOptions::new().with_revision(4))),
        ]))
        .await;
    assert_status(r, "OutOfRange", E_COMPACTED);
    assert_eq!(get(&mut c, "", all()).await, state);
    let r = c
        .txn(Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(5)))]))
        .await
        .expect("range at the compacted revision");
    assert_eq!(ops_of(&r), vec![get_op(9, vec![], 0, false)]);
}

#[test]
fn txn_errors_match_etcd() {
    run_both(&[], txn_errors);
}

// ---- Compact ----

/// etcd's compacted revision starts at -1, so a new store can be compacted
/// at revision 0 (once).
async fn compaction_of_a_new_store(t: Target) {
    let mut c = t.client().await;
    assert_status(c.compact(-1, None).await, "OutOfRange", E_COMPACTED);
    let r = c.compact(0, None).await.expect("compact 0");
    assert_eq!(r.header().unwrap().revision(), 1);
    assert_status(c.compact(0, None).await, "OutOfRange", E_COMPACTED);
    assert_status(c.compact(2, None).await, "OutOfRange", E_FUTURE);
    let r = c
        .compact(1, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact 1");
    assert_eq!(r.header().unwrap().revision(), 1);
    assert_status(c.compact(1, None).await, "OutOfRange", E_COMPACTED);
    assert_eq!(put(&mut c, "a", "1").await, 2);
    assert_eq!(
        get(&mut c, "a", GetOptions::new().with_revision(1)).await,
        got(2, vec![], 0, false)
    );
}

#[test]
fn compaction_of_a_new_store_match_etcd() {
    run_both(&[], compaction_of_a_new_store);
}

async fn compaction(t: Target) {
    let mut c = t.client().await;
    put(&mut c, "a", "1").await; // 2
    put(&mut c, "a", "2").await; // 3
    put(&mut c, "a", "3").await; // 4
    put(&mut c, "b", "1").await; // 5
    c.delete("b", None).await.expect("delete b"); // 6
    let at = |r: i64| GetOptions::new().with_revision(r);

    let r = c.compact(3, None).await.expect("compact 3");
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_status(c.get("a", Some(at(2))).await, "OutOfRange", E_COMPACTED);
    assert_eq!(
        get(&mut c, "a", at(3)).await,
        got(6, vec![kv("a", "2", 2, 3, 2)], 1, false)
    );
    assert_eq!(
        get(&mut c, "a", at(4)).await,
        got(6, vec![kv("a", "3", 2, 4, 3)], 1, false)
    );
    // At or below the compacted revision: compacted; above the current one:
    // future. Neither changes anything.
    for r in [3, 2, 1, 0, -1] {
        assert_status(c.compact(r, None).await, "OutOfRange", E_COMPACTED);
    }
    assert_status(c.compact(7, None).await, "OutOfRange", E_FUTURE);
    assert_status(
        c.compact(100, Some(CompactionOptions::new().with_physical()))
            .await,
        "OutOfRange",
        E_FUTURE,
    );
    assert_eq!(
        get(&mut c, "a", at(3)).await,
        got(6, vec![kv("a", "2", 2, 3, 2)], 1, false)
    );

    // Physical: returns once the compaction is done.
    let r = c
        .compact(5, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact 5 physical");
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_status(c.get("b", Some(at(4))).await, "OutOfRange", E_COMPACTED);
    assert_eq!(
        get(&mut c, "b", at(5)).await,
        got(6, vec![kv("b", "1", 5, 5, 1)], 1, false)
    );
    assert_eq!(get(&mut c, "b", at(6)).await, got(6, vec![], 0, false));
    assert_eq!(
        get(&mut c, "", all().with_revision(5)).await,
        got(
            6,
            vec![kv("a", "3", 2, 4, 3), kv("b", "1", 5, 5, 1)],
            2,
            false
        )
    );
    assert_eq!(
        get(&mut c, "", all()).await,
        got(6, vec![kv("a", "3", 2, 4, 3)], 1, false)
    );
    // Compacting does not bump the revision; the current revision can be
    // compacted.
    let r = c
        .compact(6, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact 6");
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_status(c.compact(6, None).await, "OutOfRange", E_COMPACTED);
    assert_status(c.get("a", Some(at(5))).await, "OutOfRange", E_COMPACTED);
    // Keys survive with their history fields.
    assert_eq!(
        get(&mut c, "", all()).await,
        got(6, vec![kv("a", "3", 2, 4, 3)], 1, false)
    );
    assert_eq!(put(&mut c, "a", "4").await, 7);
    assert_eq!(put(&mut c, "b", "2").await, 8);
    assert_eq!(
        get(&mut c, "", all()).await,
        got(
            8,
            vec![kv("a", "4", 2, 7, 4), kv("b", "2", 8, 8, 1)],
            2,
            false
        )
    );
    assert_eq!(
        get(&mut c, "", all().with_revision(6)).await,
        got(8, vec![kv("a", "3", 2, 4, 3)], 1, false)
    );
}

#[test]
fn compaction_match_etcd() {
    run_both(&[], compaction);
}

// ---- Maintenance.Status and Cluster.MemberList ----

async fn status_and_member_list(t: Target) {
    let c = t.client().await;
    let mut kvc = c.kv_client();
    let mut mt = c.maintenance_client();
    let mut cl = c.cluster_client();

    let list = cl.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 1, "one member");
    let m = &list.members()[0];
    let id = m.id();
    assert_ne!(id, 0);
    assert_eq!(
        (m.name(), m.peer_urls(), m.client_urls(), m.is_learner()),
        (
            t.name.as_str(),
            &[t.peer_url.clone()][..],
            &[t.client_url.clone()][..],
            false
        )
    );
    let lh = hdr_of(list.header()).expect("member list header");
    assert_ne!(lh.cluster_id, 0);
    assert_eq!((lh.member_id, lh.revision), (id, 0));

    let s = mt.status().await.expect("status");
    let want_version = match t.kind {
        Kind::Etcd => "3.4.23",
        Kind::Retcd => "3.5.0",
    };
    assert_eq!(s.version(), want_version);
    assert_eq!(s.leader(), id, "a single member leads");
    assert_eq!(s.raft_term(), 2);
    assert!(s.raft_index() > 0, "raft_index {}", s.raft_index());
    assert!(s.raft_applied_index() > 0, "raft_applied_index");
    assert!(
        s.raft_applied_index() <= s.raft_index(),
        "applied {} > committed {}",
        s.raft_applied_index(),
        s.raft_index()
    );
    assert!(s.db_size() > 0, "db_size");
    assert!(
        s.raft_used_db_size() > 0 && s.raft_used_db_size() <= s.db_size(),
        "db_size_in_use {} of {}",
        s.raft_used_db_size(),
        s.db_size()
    );
    assert!(s.errors().is_empty(), "errors {:?}", s.errors());
    assert!(!s.is_learner());
    assert_eq!(
        hdr_of(s.header()),
        Some(Hdr {
            cluster_id: lh.cluster_id,
            member_id: id,
            revision: 1,
            raft_term: 2
        })
    );
    assert_eq!(lh.raft_term, 2);

    // Each write is one more raft entry, applied before it is answered.
    let before = s.raft_index();
    let p = kvc.put("k", "v", None).await.expect("put");
    assert_eq!(
        hdr_of(p.header()),
        Some(Hdr {
            cluster_id: lh.cluster_id,
            member_id: id,
            revision: 2,
            raft_term: 2
        })
    );
    let s2 = mt.status().await.expect("status after put");
    assert!(s2.raft_index() > before, "raft_index after a put");
    assert!(s2.raft_applied_index() >= s2.raft_index() - 1);
    assert_eq!(s2.header().unwrap().revision(), 2);
    assert_eq!((s2.leader(), s2.raft_term()), (id, 2));
    assert_eq!(s2.version(), want_version);
    // Failed writes do not reach the log: the revision stays.
    assert!(
        kvc.put("", "v", None).await.is_err(),
        "empty key must be refused"
    );
    let s3 = mt.status().await.expect("status after failed put");
    assert_eq!(s3.header().unwrap().revision(), 2);
}

#[test]
fn status_and_member_list_match_etcd() {
    run_both(&[], status_and_member_list);
}

/// Many small requests at once on one HTTP/2 connection (as a client that multiplexes many
/// callers does): every one is answered, errors included, and the connection survives (h2's
/// guard against floods of small frames once closed such connections in retcd).
#[test]
fn a_burst_of_small_requests_on_one_connection() {
    run_both(&[], |t| async move {
        let c = t.client().await;
        let burst: Vec<_> = (0..1000)
            .map(|i| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        c.put(format!("k{i}"), "v", None).await.map(drop)
                    } else {
                        // An empty key: answered at once with etcd's error.
                        c.get("", None).await.map(drop)
                    }
                })
            })
            .collect();
        let mut refused = 0;
        for (i, b) in burst.into_iter().enumerate() {
            match b.await.unwrap() {
                Ok(()) => assert_eq!(i % 2, 0, "request {i}"),
                Err(e) => {
                    assert_eq!(i % 2, 1, "request {i}: {e}");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 500);
        let mut c = c;
        let n = c
            .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .unwrap()
            .count();
        assert_eq!(n, 500);
    });
}

// ---- large lists at once (net/src/admission.rs) ----

/// One sample of the member's `/metrics`, by its full name.
fn metric(server: &support::Server, name: &str) -> f64 {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("{}/metrics", server.client_url()))
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// Lists whose responses together pass a core's budget of response bytes (64 MiB) are answered
/// in turn: each one whole and exact, the younger ones waiting while the oldest is built and
/// sent, and every charge released once its response has gone out.
#[test]
fn large_lists_at_once_are_admitted_in_turn_and_answered_whole() {
    const KEYS: usize = 80;
    const VALUE: usize = 1 << 20;
    let value = |i: usize| vec![b'a' + (i % 26) as u8; VALUE];
    // A waiting list times out after the request timeout (5 s and two election timeouts: 11 s
    // here, 7 by default): a debug build under CI's load takes seconds to build and send each
    // list it waits behind.
    let server =
        support::Server::start_in_tempdir_with_args(Kind::Retcd, &["--election-timeout", "3000"]);
    let t = Target::of(&server);
    let rt = support::runtime();
    rt.block_on(async move {
        let mut c = t.client().await;
        for i in 0..KEYS {
            c.put(format!("big/{i:03}"), value(i), None)
                .await
                .expect("put");
        }
        // One connection: every list is served by the same core.
        let kv = c.kv_client().max_decoding_message_size(usize::MAX);
        let lists: Vec<_> = (0..3)
            .map(|_| {
                let mut kv = kv.clone();
                tokio::spawn(
                    async move { kv.get("big/", Some(GetOptions::new().with_prefix())).await },
                )
            })
            .collect();
        for list in lists {
            let r = list.await.expect("task").expect("list");
            assert_eq!(
                (r.count(), r.more(), r.kvs().len()),
                (KEYS as i64, false, KEYS)
            );
            for (i, kv) in r.kvs().iter().enumerate() {
                assert_eq!(kv.key(), format!("big/{i:03}").as_bytes());
                assert!(kv.value() == value(i), "value of big/{i:03}");
            }
        }
    });
    assert!(
        metric(&server, "retcd_range_admission_waits_total") >= 1.0,
        "a list past the budget waited"
    );
    assert_eq!(metric(&server, "retcd_range_admission_held_bytes"), 0.0);
    assert_eq!(metric(&server, "retcd_range_admission_refused_total"), 0.0);
    assert_eq!(metric(&server, "retcd_range_admission_timeouts_total"), 0.0);
}
