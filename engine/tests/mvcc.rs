//! MVCC tests: etcd v3.5's exact results for revisions, Range, Put, DeleteRange, Txn and Compact,
//! restart and replay, and key ordering, driven through `Mvcc::apply` and `MvccReader::range`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Rng, db_path, store_options};
use retcd_engine::btree::{PageStore, StoreOptions};
use retcd_engine::mvcc::{
    Applied, COMPACTION_BATCH, DeleteResult, KeyValue, Mvcc, MvccError, OpResult, PutResult,
    RangeResult, TxnResult, WriteResult,
};
use retcd_engine::request::{
    CompactRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, Request, RequestOp,
    TxnRequest,
};

// etcd's enums (request.rs documents the numbering).
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const BY_KEY: i32 = 0;
const BY_VERSION: i32 = 1;
const BY_CREATE: i32 = 2;
const BY_MOD: i32 = 3;
const BY_VALUE: i32 = 4;

const EQUAL: i32 = 0;
const GREATER: i32 = 1;
const LESS: i32 = 2;
const NOT_EQUAL: i32 = 3;
const T_VERSION: i32 = 0;
const T_CREATE: i32 = 1;
const T_MOD: i32 = 2;
const T_VALUE: i32 = 3;
const T_LEASE: i32 = 4;

/// A store in a temporary directory plus the next Raft index to apply.
struct Store {
    dir: tempfile::TempDir,
    m: Option<Mvcc>,
    next_index: u64,
    term: u64,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let m = Mvcc::open(&store_options(dir.path())).unwrap();
        Store {
            dir,
            m: Some(m),
            next_index: 1,
            term: 1,
        }
    }
    fn m(&self) -> &Mvcc {
        self.m.as_ref().unwrap()
    }
    fn mm(&mut self) -> &mut Mvcc {
        self.m.as_mut().unwrap()
    }
    /// Applies one request as the next Raft entry.
    fn apply(&mut self, req: Request) -> Result<WriteResult, MvccError> {
        let index = self.next_index;
        let term = self.term;
        let mut res = self
            .mm()
            .apply(&[Applied {
                index,
                term,
                request: Some(&req),
                caller: None,
                membership: None,
            }])
            .unwrap();
        self.next_index += 1;
        assert_eq!(res.len(), 1);
        assert_eq!(self.m().applied(), (index, term));
        assert_eq!(self.m().reader().applied(), (index, term));
        assert_eq!(
            self.m().reader().revisions(),
            (self.m().revision(), self.m().compacted())
        );
        res.pop().unwrap()
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> PutResult {
        match self.apply(Request::Put(put_req(key, value))).unwrap() {
            WriteResult::Put(p) => p,
            other => panic!("{other:?}"),
        }
    }
    fn put_with(&mut self, p: PutRequest) -> Result<PutResult, MvccError> {
        self.apply(Request::Put(p)).map(|r| match r {
            WriteResult::Put(p) => p,
            other => panic!("{other:?}"),
        })
    }
    fn delete(&mut self, key: &[u8], end: &[u8], prev_kv: bool) -> DeleteResult {
        match self
            .apply(Request::DeleteRange(del_req(key, end, prev_kv)))
            .unwrap()
        {
            WriteResult::DeleteRange(d) => d,
            other => panic!("{other:?}"),
        }
    }
    fn txn(&mut self, t: TxnRequest) -> Result<TxnResult, MvccError> {
        self.apply(Request::Txn(t)).map(|r| match r {
            WriteResult::Txn(t) => t,
            other => panic!("{other:?}"),
        })
    }
    fn compact(&mut self, revision: i64) -> Result<i64, MvccError> {
        self.apply(Request::Compact(CompactRequest {
            revision,
            physical: false,
        }))
        .map(|r| match r {
            WriteResult::Compact { revision } => revision,
            other => panic!("{other:?}"),
        })
    }
    /// As the KV service reads it: in steps (`range_steps`).
    fn range(&self, r: &RangeRequest) -> Result<RangeResult, MvccError> {
        Ok(self.range_in_steps(r)?.0)
    }
    /// The answer and the number of steps it took.
    fn range_in_steps(&self, r: &RangeRequest) -> Result<(RangeResult, usize), MvccError> {
        let mut steps = self.m().reader().range_steps(r)?;
        let mut n = 1;
        while !steps.step()? {
            n += 1;
        }
        Ok((steps.finish(), n))
    }
    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let r = self.range(&rr(key, b"")).unwrap();
        assert!(r.kvs.len() <= 1);
        assert_eq!(r.count, r.kvs.len() as i64);
        r.kvs.into_iter().next()
    }
    fn get_at(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>, MvccError> {
        let r = self.range(&at_rev(revision, rr(key, b"")))?;
        Ok(r.kvs.into_iter().next())
    }
    fn keys(&self, key: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
        self.range(&rr(key, end))
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }
    fn rev(&self) -> i64 {
        let r = self.m().revision();
        assert_eq!(self.m().reader().revisions().0, r);
        r
    }
    /// Runs the pending compaction's deletion batches to the end; returns the versions deleted
    /// and the number of batches.
    fn finish_compaction(&mut self) -> (usize, usize) {
        let (mut deleted, mut batches) = (0, 0);
        while self.m().compaction_pending() {
            let step = self.mm().compact_step().unwrap();
            assert!(step.deleted <= COMPACTION_BATCH && step.visited <= COMPACTION_BATCH);
            assert!(
                step.deleted > 0 || step.visited > 0 || step.finished,
                "no progress"
            );
            deleted += step.deleted;
            batches += 1;
            assert!(batches < 100_000, "a compaction that does not end");
        }
        (deleted, batches)
    }
    /// Durable checkpoint, drop, reopen.
    fn restart(&mut self) {
        self.mm().sync().unwrap();
        self.crash();
    }
    /// Drop without a checkpoint, reopen.
    fn crash(&mut self) {
        drop(self.m.take());
        self.m = Some(Mvcc::open(&store_options(self.dir.path())).unwrap());
    }
}

fn put_req(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}
fn rr(key: &[u8], end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    }
}
fn all() -> RangeRequest {
    rr(b"", b"\0")
}
fn kv(key: &[u8], value: &[u8], create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: create,
        mod_revision: modr,
        version,
        value: value.to_vec(),
        lease: 0,
    }
}
fn num_cmp(key: &[u8], target: i32, result: i32, number: i64) -> Compare {
    Compare {
        result,
        target,
        key: key.to_vec(),
        number,
        ..Default::default()
    }
}
fn val_cmp(key: &[u8], result: i32, value: &[u8]) -> Compare {
    Compare {
        result,
        target: T_VALUE,
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}
/// `r` at the past revision `revision`.
fn at_rev(revision: i64, r: RangeRequest) -> RangeRequest {
    RangeRequest { revision, ..r }
}
/// The compare `c` over every key from its key up to `end`.
fn ranged(c: Compare, end: &[u8]) -> Compare {
    Compare {
        range_end: end.to_vec(),
        ..c
    }
}
/// A txn without compares: it runs `success`.
fn txn_of(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    }
}
fn del_req(key: &[u8], end: &[u8], prev_kv: bool) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        prev_kv,
    }
}
fn op_put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp::Put(put_req(key, value))
}
fn op_range(key: &[u8], end: &[u8]) -> RequestOp {
    RequestOp::Range(rr(key, end))
}
fn op_del(key: &[u8], end: &[u8]) -> RequestOp {
    RequestOp::DeleteRange(del_req(key, end, false))
}
fn as_range(r: &OpResult) -> &RangeResult {
    match r {
        OpResult::Range(r) => r,
        other => panic!("{other:?}"),
    }
}
fn as_put(r: &OpResult) -> &PutResult {
    match r {
        OpResult::Put(r) => r,
        other => panic!("{other:?}"),
    }
}
fn as_delete(r: &OpResult) -> &DeleteResult {
    match r {
        OpResult::DeleteRange(r) => r,
        other => panic!("{other:?}"),
    }
}
fn as_txn(r: &OpResult) -> &TxnResult {
    match r {
        OpResult::Txn(r) => r,
        other => panic!("{other:?}"),
    }
}
fn keys_of(r: &RangeResult) -> Vec<&[u8]> {
    r.kvs.iter().map(|kv| kv.key.as_slice()).collect()
}

#[test]
fn revisions_across_put_put_delete_put() {
    let mut s = Store::new();
    assert_eq!(s.rev(), 1, "an empty store is at revision 1");
    assert_eq!(s.m().compacted(), -1, "never compacted (etcd starts at -1)");
    assert_eq!(s.m().applied(), (0, 0));
    let empty = s.range(&all()).unwrap();
    assert_eq!(
        empty,
        RangeResult {
            revision: 1,
            kvs: vec![],
            more: false,
            count: 0
        }
    );

    let p = s.put(b"foo", b"bar");
    assert_eq!(
        p,
        PutResult {
            revision: 2,
            prev_kv: None
        },
        "the first write is revision 2"
    );
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"bar", 2, 2, 1)));

    assert_eq!(s.put(b"foo", b"baz").revision, 3);
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"baz", 2, 3, 2)));

    let d = s.delete(b"foo", b"", false);
    assert_eq!(
        d,
        DeleteResult {
            revision: 4,
            deleted: 1,
            prev_kvs: vec![]
        }
    );
    assert_eq!(s.get(b"foo"), None);
    assert_eq!(s.range(&rr(b"foo", b"")).unwrap().revision, 4);

    assert_eq!(s.put(b"foo", b"qux").revision, 5);
    // A new generation: create_revision is the new put, version restarts at 1.
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"qux", 5, 5, 1)));
    assert_eq!(s.put(b"foo", b"quux").revision, 6);
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"quux", 5, 6, 2)));

    // History: each past revision shows the value then; the header is the current revision.
    assert_eq!(s.get_at(b"foo", 1).unwrap(), None);
    assert_eq!(
        s.get_at(b"foo", 2).unwrap(),
        Some(kv(b"foo", b"bar", 2, 2, 1))
    );
    assert_eq!(
        s.get_at(b"foo", 3).unwrap(),
        Some(kv(b"foo", b"baz", 2, 3, 2))
    );
    assert_eq!(s.get_at(b"foo", 4).unwrap(), None);
    assert_eq!(
        s.get_at(b"foo", 5).unwrap(),
        Some(kv(b"foo", b"qux", 5, 5, 1))
    );
    let r = s.range(&at_rev(3, rr(b"foo", b""))).unwrap();
    assert_eq!((r.revision, r.count), (6, 1));
    let r = s.range(&at_rev(4, rr(b"foo", b""))).unwrap();
    assert_eq!((r.revision, r.count, r.kvs.len()), (6, 0, 0));
    assert_eq!(s.rev(), 6);
}

#[test]
fn one_main_revision_per_request() {
    let mut s = Store::new();
    // Several puts in one txn share the main revision.
    let t = s
        .txn(txn_of(vec![
            op_put(b"a", b"1"),
            op_put(b"b", b"2"),
            op_put(b"c", b"3"),
        ]))
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 2);
    for r in &t.responses {
        assert_eq!(as_put(r).revision, 2);
    }
    assert_eq!(s.rev(), 2);
    let r = s.range(&all()).unwrap();
    assert_eq!(
        r.kvs,
        vec![
            kv(b"a", b"1", 2, 2, 1),
            kv(b"b", b"2", 2, 2, 1),
            kv(b"c", b"3", 2, 2, 1)
        ]
    );

    // A DeleteRange over several keys is one revision too.
    let d = s.delete(b"a", b"c", false);
    assert_eq!((d.revision, d.deleted), (3, 2));
    assert_eq!(s.rev(), 3);

    // A delete that matches nothing does not take a revision; its header is the current one.
    let d = s.delete(b"zzz", b"", true);
    assert_eq!(
        d,
        DeleteResult {
            revision: 3,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    let d = s.delete(b"a", b"c", false); // already deleted
    assert_eq!(
        d,
        DeleteResult {
            revision: 3,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    assert_eq!(s.rev(), 3);

    // A read-only txn does not either.
    let t = s.txn(txn_of(vec![op_range(b"c", b"")])).unwrap();
    assert_eq!(t.revision, 3);
    let r = as_range(&t.responses[0]);
    assert_eq!(r.revision, 3);
    assert_eq!(r.kvs, vec![kv(b"c", b"3", 2, 2, 1)]);
    // Nor a txn whose chosen branch only reads although the other one writes.
    let t = s
        .txn(TxnRequest {
            compare: vec![num_cmp(b"c", T_VERSION, EQUAL, 1)],
            success: vec![op_range(b"a", b"z")],
            failure: vec![op_put(b"x", b"y")],
        })
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 3);
    assert_eq!(as_range(&t.responses[0]).revision, 3);
    // Nor an empty txn, nor a txn whose only op is a delete of nothing.
    let t = s.txn(TxnRequest::default()).unwrap();
    assert_eq!(
        t,
        TxnResult {
            revision: 3,
            succeeded: true,
            responses: vec![]
        }
    );
    let t = s.txn(txn_of(vec![op_del(b"q", b"")])).unwrap();
    assert_eq!(t.revision, 3);
    assert_eq!(
        as_delete(&t.responses[0]),
        &DeleteResult {
            revision: 3,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    assert_eq!(s.rev(), 3);

    // Entries without a request advance the applied index only.
    let idx = s.next_index;
    let res = s
        .mm()
        .apply(&[Applied {
            index: idx,
            term: 1,
            request: None,
            caller: None,
            membership: None,
        }])
        .unwrap();
    assert!(res.is_empty());
    s.next_index += 1;
    assert_eq!(s.m().applied(), (idx, 1));
    assert_eq!(s.rev(), 3);

    // Several requests in one batch: one revision each, one result per request.
    let (p1, p2, d1) = (
        Request::Put(put_req(b"k1", b"v")),
        Request::Put(put_req(b"k2", b"v")),
        Request::DeleteRange(DeleteRangeRequest {
            key: b"nothing".to_vec(),
            ..Default::default()
        }),
    );
    let i = s.next_index;
    let res = s
        .mm()
        .apply(&[
            Applied {
                index: i,
                term: 2,
                request: Some(&p1),
                caller: None,
                membership: None,
            },
            Applied {
                index: i + 1,
                term: 2,
                request: None,
                caller: None,
                membership: None,
            },
            Applied {
                index: i + 2,
                term: 2,
                request: Some(&d1),
                caller: None,
                membership: None,
            },
            Applied {
                index: i + 3,
                term: 2,
                request: Some(&p2),
                caller: None,
                membership: None,
            },
        ])
        .unwrap();
    s.next_index += 4;
    let res: Vec<WriteResult> = res.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        res,
        vec![
            WriteResult::Put(PutResult {
                revision: 4,
                prev_kv: None
            }),
            WriteResult::DeleteRange(DeleteResult {
                revision: 4,
                deleted: 0,
                prev_kvs: vec![]
            }),
            WriteResult::Put(PutResult {
                revision: 5,
                prev_kv: None
            }),
        ]
    );
    assert_eq!(s.m().applied(), (i + 3, 2));
    assert_eq!(s.rev(), 5);
}

#[test]
fn range_key_forms_limit_and_options() {
    let mut s = Store::new();
    for k in ["a", "b", "c", "d", "e", "foo", "foo/a", "foo/b", "fop"] {
        s.put(k.as_bytes(), format!("v-{k}").as_bytes());
    }
    let n = 9;
    assert_eq!(s.rev(), 1 + n);
    // Single key.
    let r = s.range(&rr(b"b", b"")).unwrap();
    assert_eq!(
        r,
        RangeResult {
            revision: 10,
            kvs: vec![kv(b"b", b"v-b", 3, 3, 1)],
            more: false,
            count: 1
        }
    );
    assert_eq!(s.keys(b"nope", b""), Vec::<Vec<u8>>::new());
    // [key, end).
    assert_eq!(s.keys(b"b", b"d"), vec![b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(s.keys(b"bb", b"dd"), vec![b"c".to_vec(), b"d".to_vec()]);
    // Prefix: end = prefix with its last byte incremented.
    assert_eq!(
        s.keys(b"foo/", b"foo0"),
        vec![b"foo/a".to_vec(), b"foo/b".to_vec()]
    );
    assert_eq!(
        s.keys(b"foo", b"fop"),
        vec![b"foo".to_vec(), b"foo/a".to_vec(), b"foo/b".to_vec()]
    );
    // "\0": every key >= key.
    assert_eq!(
        s.keys(b"e", b"\0"),
        vec![
            b"e".to_vec(),
            b"foo".to_vec(),
            b"foo/a".to_vec(),
            b"foo/b".to_vec(),
            b"fop".to_vec()
        ]
    );
    assert_eq!(s.range(&all()).unwrap().count, n);
    assert_eq!(s.range(&rr(b"\0", b"\0")).unwrap().count, n);
    // end <= key: nothing.
    let r = s.range(&rr(b"d", b"b")).unwrap();
    assert_eq!(
        r,
        RangeResult {
            revision: 10,
            kvs: vec![],
            more: false,
            count: 0
        }
    );
    assert_eq!(s.range(&rr(b"c", b"c")).unwrap().count, 0);

    // Limit: `more` when more keys exist, `count` is the total regardless of the limit.
    let r = s.range(&RangeRequest { limit: 2, ..all() }).unwrap();
    assert_eq!(keys_of(&r), vec![b"a".as_slice(), b"b"]);
    assert!(r.more);
    assert_eq!(r.count, 9);
    let r = s.range(&RangeRequest { limit: 9, ..all() }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (9, false, 9));
    let r = s.range(&RangeRequest { limit: 8, ..all() }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (8, true, 9));
    let r = s
        .range(&RangeRequest {
            limit: 100,
            ..rr(b"b", b"e")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (3, false, 3));
    let r = s
        .range(&RangeRequest {
            limit: 1,
            ..rr(b"b", b"")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (1, false, 1));
    let r = s.range(&RangeRequest { limit: -1, ..all() }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (9, false, 9));

    // keys_only: no values, every other field.
    let r = s
        .range(&RangeRequest {
            keys_only: true,
            ..rr(b"a", b"c")
        })
        .unwrap();
    assert_eq!(r.kvs, vec![kv(b"a", b"", 2, 2, 1), kv(b"b", b"", 3, 3, 1)]);
    assert_eq!(r.count, 2);
    // count_only: no kvs, the count, never `more`.
    let r = s
        .range(&RangeRequest {
            count_only: true,
            ..all()
        })
        .unwrap();
    assert_eq!(
        r,
        RangeResult {
            revision: 10,
            kvs: vec![],
            more: false,
            count: 9
        }
    );
    let r = s
        .range(&RangeRequest {
            count_only: true,
            limit: 2,
            ..all()
        })
        .unwrap();
    assert_eq!(
        r,
        RangeResult {
            revision: 10,
            kvs: vec![],
            more: false,
            count: 9
        }
    );

    // Past revisions: the range as it was, header the current revision.
    let r = s.range(&at_rev(4, all())).unwrap();
    assert_eq!(keys_of(&r), vec![b"a".as_slice(), b"b", b"c"]);
    assert_eq!((r.revision, r.count), (10, 3));
    let r = s
        .range(&RangeRequest {
            revision: 4,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (1, true, 3));
    s.delete(b"b", b"", false);
    let r = s.range(&at_rev(10, rr(b"a", b"c"))).unwrap();
    assert_eq!(
        keys_of(&r),
        vec![b"a".as_slice(), b"b"],
        "a deleted key is visible before its deletion"
    );
    assert_eq!(r.revision, 11);
    assert_eq!(s.keys(b"a", b"c"), vec![b"a".to_vec()]);
}

#[test]
fn range_sort_every_target_and_order() {
    let mut s = Store::new();
    s.put(b"k3", b"x"); // 2
    s.put(b"k1", b"z"); // 3
    s.put(b"k2", b"y"); // 4
    s.put(b"k1", b"m"); // 5
    s.put(b"k1", b"n"); // 6
    s.put(b"k3", b"a"); // 7
    // Final: k1 create 3, version 3, mod 6, "n"; k2 create 4, version 1, mod 4, "y";
    //        k3 create 2, version 2, mod 7, "a".
    let k1 = kv(b"k1", b"n", 3, 6, 3);
    let k2 = kv(b"k2", b"y", 4, 4, 1);
    let k3 = kv(b"k3", b"a", 2, 7, 2);
    let ascending: [(i32, [&KeyValue; 3]); 5] = [
        (BY_KEY, [&k1, &k2, &k3]),
        (BY_VERSION, [&k2, &k3, &k1]),
        (BY_CREATE, [&k3, &k1, &k2]),
        (BY_MOD, [&k2, &k1, &k3]),
        (BY_VALUE, [&k3, &k1, &k2]),
    ];
    for (target, asc) in ascending {
        let asc: Vec<KeyValue> = asc.into_iter().cloned().collect();
        let desc: Vec<KeyValue> = asc.iter().rev().cloned().collect();
        for (order, want) in [
            (SORT_NONE, &asc),
            (SORT_ASCEND, &asc),
            (SORT_DESCEND, &desc),
        ] {
            let r = s
                .range(&RangeRequest {
                    sort_order: order,
                    sort_target: target,
                    ..rr(b"k", b"l")
                })
                .unwrap();
            // NONE with target KEY is key order; NONE with any other target sorts ASCEND (etcd).
            assert_eq!(&r.kvs, want, "target {target} order {order}");
            assert_eq!((r.count, r.more, r.revision), (3, false, 7));
            // With a limit the sort happens before the truncation.
            let r = s
                .range(&RangeRequest {
                    sort_order: order,
                    sort_target: target,
                    limit: 2,
                    ..rr(b"k", b"l")
                })
                .unwrap();
            assert_eq!(
                r.kvs,
                want[..2].to_vec(),
                "target {target} order {order} limit 2"
            );
            assert_eq!((r.count, r.more), (3, true));
            // keys_only drops values after sorting: a sort by VALUE still uses them.
            let r = s
                .range(&RangeRequest {
                    sort_order: order,
                    sort_target: target,
                    keys_only: true,
                    ..rr(b"k", b"l")
                })
                .unwrap();
            let want_keys: Vec<KeyValue> = want
                .iter()
                .map(|kv| KeyValue {
                    value: vec![],
                    ..kv.clone()
                })
                .collect();
            assert_eq!(r.kvs, want_keys, "target {target} order {order} keys_only");
        }
    }
    // Sorting at a past revision uses that revision's versions: at 5, k1 = "m" (v2, mod 5),
    // k2 = "y" (v1, mod 4), k3 = "x" (v1, mod 2).
    let r = s
        .range(&RangeRequest {
            revision: 5,
            sort_order: SORT_DESCEND,
            sort_target: BY_MOD,
            ..rr(b"k", b"l")
        })
        .unwrap();
    assert_eq!(
        r.kvs,
        vec![
            kv(b"k1", b"m", 3, 5, 2),
            kv(b"k2", b"y", 4, 4, 1),
            kv(b"k3", b"x", 2, 2, 1)
        ]
    );
}

#[test]
fn range_revision_filters_count_before_filtering() {
    let mut s = Store::new();
    s.put(b"k3", b"x"); // 2
    s.put(b"k1", b"z"); // 3
    s.put(b"k2", b"y"); // 4
    s.put(b"k1", b"m"); // 5
    s.put(b"k1", b"n"); // 6
    s.put(b"k3", b"a"); // 7
    // mod: k1 6, k2 4, k3 7; create: k1 3, k2 4, k3 2.
    let cases: [(RangeRequest, Vec<&[u8]>); 8] = [
        (
            RangeRequest {
                min_mod_revision: 5,
                ..all()
            },
            vec![b"k1".as_slice(), b"k3"],
        ),
        (
            RangeRequest {
                min_mod_revision: 6,
                ..all()
            },
            vec![b"k1".as_slice(), b"k3"],
        ),
        (
            RangeRequest {
                max_mod_revision: 6,
                ..all()
            },
            vec![b"k1".as_slice(), b"k2"],
        ),
        (
            RangeRequest {
                max_mod_revision: 3,
                ..all()
            },
            vec![],
        ),
        (
            RangeRequest {
                min_create_revision: 3,
                ..all()
            },
            vec![b"k1".as_slice(), b"k2"],
        ),
        (
            RangeRequest {
                max_create_revision: 3,
                ..all()
            },
            vec![b"k1".as_slice(), b"k3"],
        ),
        (
            RangeRequest {
                min_create_revision: 3,
                max_create_revision: 3,
                ..all()
            },
            vec![b"k1".as_slice()],
        ),
        (
            RangeRequest {
                min_mod_revision: 5,
                max_create_revision: 2,
                ..all()
            },
            vec![b"k3".as_slice()],
        ),
    ];
    for (req, want) in cases {
        let r = s.range(&req).unwrap();
        assert_eq!(keys_of(&r), want, "{req:?}");
        assert_eq!(r.count, 3, "count is taken before the filters: {req:?}");
        assert!(!r.more);
    }
    // Filters then limit: `more` reflects the filtered list.
    let r = s
        .range(&RangeRequest {
            min_mod_revision: 5,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!(
        (keys_of(&r), r.more, r.count),
        (vec![b"k1".as_slice()], true, 3)
    );
    let r = s
        .range(&RangeRequest {
            min_mod_revision: 7,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!(
        (keys_of(&r), r.more, r.count),
        (vec![b"k3".as_slice()], false, 3)
    );
    // Filters with a sort.
    let r = s
        .range(&RangeRequest {
            min_mod_revision: 5,
            sort_target: BY_MOD,
            sort_order: SORT_DESCEND,
            ..all()
        })
        .unwrap();
    assert_eq!(keys_of(&r), vec![b"k3".as_slice(), b"k1"]);
    // count_only ignores the filters.
    let r = s
        .range(&RangeRequest {
            min_mod_revision: 7,
            count_only: true,
            ..all()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 3));
}

#[test]
fn put_options() {
    let mut s = Store::new();
    // prev_kv on a missing key: none.
    let p = s
        .put_with(PutRequest {
            prev_kv: true,
            ..put_req(b"foo", b"1")
        })
        .unwrap();
    assert_eq!(
        p,
        PutResult {
            revision: 2,
            prev_kv: None
        }
    );
    // prev_kv: the previous version in full.
    let p = s
        .put_with(PutRequest {
            prev_kv: true,
            ..put_req(b"foo", b"2")
        })
        .unwrap();
    assert_eq!(
        p,
        PutResult {
            revision: 3,
            prev_kv: Some(kv(b"foo", b"1", 2, 2, 1))
        }
    );
    // Without prev_kv: none.
    assert_eq!(
        s.put(b"foo", b"3"),
        PutResult {
            revision: 4,
            prev_kv: None
        }
    );

    // ignore_value keeps the value, still a new version.
    let p = s
        .put_with(PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put_req(b"foo", b"")
        })
        .unwrap();
    assert_eq!(
        p,
        PutResult {
            revision: 5,
            prev_kv: Some(kv(b"foo", b"3", 2, 4, 3))
        }
    );
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"3", 2, 5, 4)));
    // ignore_lease keeps the (zero) lease and takes the new value.
    let p = s
        .put_with(PutRequest {
            ignore_lease: true,
            ..put_req(b"foo", b"4")
        })
        .unwrap();
    assert_eq!(p.revision, 6);
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"4", 2, 6, 5)));
    let p = s
        .put_with(PutRequest {
            ignore_lease: true,
            ignore_value: true,
            ..put_req(b"foo", b"")
        })
        .unwrap();
    assert_eq!(p.revision, 7);
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"4", 2, 7, 6)));

    // ignore_value / ignore_lease on a missing key: KeyNotFound, nothing changed.
    let before = s.range(&all()).unwrap();
    for p in [
        PutRequest {
            ignore_value: true,
            ..put_req(b"missing", b"")
        },
        PutRequest {
            ignore_lease: true,
            ..put_req(b"missing", b"v")
        },
        PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put_req(b"missing", b"")
        },
    ] {
        let idx = s.next_index;
        assert!(matches!(s.put_with(p), Err(MvccError::KeyNotFound)));
        assert_eq!(
            s.m().applied().0,
            idx,
            "a failed request still counts as applied"
        );
    }
    // A key deleted earlier is missing too.
    s.put(b"gone", b"x"); // 8
    s.delete(b"gone", b"", false); // 9
    assert!(matches!(
        s.put_with(PutRequest {
            ignore_value: true,
            ..put_req(b"gone", b"")
        }),
        Err(MvccError::KeyNotFound)
    ));
    assert_eq!(s.rev(), 9);
    assert_eq!(s.get(b"gone"), None);
    assert_eq!(s.get(b"missing"), None);

    // A lease: leases do not exist yet, so LeaseNotFound and nothing changed, even on an existing key.
    assert!(matches!(
        s.put_with(PutRequest {
            lease: 7,
            ..put_req(b"foo", b"5")
        }),
        Err(MvccError::LeaseNotFound)
    ));
    assert!(matches!(
        s.put_with(PutRequest {
            lease: 7,
            ..put_req(b"new", b"5")
        }),
        Err(MvccError::LeaseNotFound)
    ));
    // A plain Put checks the lease before ignore_value (etcd's applierV3backend.Put).
    assert!(matches!(
        s.put_with(PutRequest {
            lease: 7,
            ignore_value: true,
            ..put_req(b"missing", b"")
        }),
        Err(MvccError::LeaseNotFound)
    ));
    assert_eq!(s.rev(), 9);
    assert_eq!(s.get(b"foo"), Some(kv(b"foo", b"4", 2, 7, 6)));
    assert_eq!(s.get(b"new"), None);
    let after = s.range(&all()).unwrap();
    assert_eq!(after.kvs, before.kvs);

    // An empty value is a value.
    s.put(b"empty", b"");
    assert_eq!(s.get(b"empty"), Some(kv(b"empty", b"", 10, 10, 1)));
}

#[test]
fn delete_range_prev_kv_and_counts() {
    let mut s = Store::new();
    for k in ["a", "b", "c", "d", "e"] {
        s.put(k.as_bytes(), k.as_bytes()); // a=2 .. e=6
    }
    s.put(b"c", b"c2"); // 7
    let d = s.delete(b"b", b"d", true);
    assert_eq!(
        d,
        DeleteResult {
            revision: 8,
            deleted: 2,
            prev_kvs: vec![kv(b"b", b"b", 3, 3, 1), kv(b"c", b"c2", 4, 7, 2)]
        }
    );
    let d = s.delete(b"a", b"", false);
    assert_eq!(
        d,
        DeleteResult {
            revision: 9,
            deleted: 1,
            prev_kvs: vec![]
        }
    );
    // "\0": from key.
    let d = s.delete(b"d", b"\0", true);
    assert_eq!(d.revision, 10);
    assert_eq!(d.deleted, 2);
    assert_eq!(
        d.prev_kvs,
        vec![kv(b"d", b"d", 5, 5, 1), kv(b"e", b"e", 6, 6, 1)]
    );
    assert_eq!(s.range(&all()).unwrap().count, 0);
    // Nothing left: no revision.
    let d = s.delete(b"", b"\0", true);
    assert_eq!(
        d,
        DeleteResult {
            revision: 10,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    // end <= key deletes nothing.
    s.put(b"x", b"1"); // 11
    assert_eq!(
        s.delete(b"y", b"x", false),
        DeleteResult {
            revision: 11,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    assert_eq!(s.get(b"x").unwrap().mod_revision, 11);
    // History stays readable.
    let r = s.range(&at_rev(7, all())).unwrap();
    assert_eq!(keys_of(&r), vec![b"a".as_slice(), b"b", b"c", b"d", b"e"]);
    assert_eq!(r.kvs[2], kv(b"c", b"c2", 4, 7, 2));
    let r = s.range(&at_rev(8, all())).unwrap();
    assert_eq!(keys_of(&r), vec![b"a".as_slice(), b"d", b"e"]);
}

/// Runs a txn with the given compares and empty branches; returns `succeeded`.
fn eval(s: &mut Store, compare: Vec<Compare>) -> bool {
    let rev = s.rev();
    let t = s
        .txn(TxnRequest {
            compare,
            success: vec![],
            failure: vec![],
        })
        .unwrap();
    assert_eq!(t.revision, rev);
    assert!(t.responses.is_empty());
    t.succeeded
}

#[test]
fn txn_compares() {
    let mut s = Store::new();
    s.put(b"a", b"1"); // 2
    s.put(b"a", b"2"); // 3
    s.put(b"b", b"x"); // 4
    // a: value "2", version 2, create 2, mod 3, lease 0.  b: "x", 1, 4, 4, 0.
    let cases: Vec<(Compare, bool)> = vec![
        (val_cmp(b"a", EQUAL, b"2"), true),
        (val_cmp(b"a", EQUAL, b"1"), false),
        (val_cmp(b"a", NOT_EQUAL, b"1"), true),
        (val_cmp(b"a", NOT_EQUAL, b"2"), false),
        (val_cmp(b"a", GREATER, b"1"), true),
        (val_cmp(b"a", GREATER, b"2"), false),
        (val_cmp(b"a", GREATER, b"10"), true), // bytewise
        (val_cmp(b"a", LESS, b"3"), true),
        (val_cmp(b"a", LESS, b"2"), false),
        (val_cmp(b"a", GREATER, b""), true),
        (num_cmp(b"a", T_VERSION, EQUAL, 2), true),
        (num_cmp(b"a", T_VERSION, EQUAL, 1), false),
        (num_cmp(b"a", T_VERSION, GREATER, 1), true),
        (num_cmp(b"a", T_VERSION, GREATER, 2), false),
        (num_cmp(b"a", T_VERSION, LESS, 3), true),
        (num_cmp(b"a", T_VERSION, LESS, 2), false),
        (num_cmp(b"a", T_VERSION, NOT_EQUAL, 2), false),
        (num_cmp(b"a", T_VERSION, NOT_EQUAL, 0), true),
        (num_cmp(b"a", T_CREATE, EQUAL, 2), true),
        (num_cmp(b"a", T_CREATE, GREATER, 2), false),
        (num_cmp(b"a", T_CREATE, GREATER, 1), true),
        (num_cmp(b"a", T_CREATE, LESS, 3), true),
        (num_cmp(b"a", T_CREATE, NOT_EQUAL, 3), true),
        (num_cmp(b"a", T_MOD, EQUAL, 3), true),
        (num_cmp(b"a", T_MOD, EQUAL, 2), false),
        (num_cmp(b"a", T_MOD, LESS, 4), true),
        (num_cmp(b"a", T_MOD, GREATER, 2), true),
        (num_cmp(b"a", T_MOD, GREATER, 3), false),
        (num_cmp(b"a", T_MOD, NOT_EQUAL, 3), false),
        (num_cmp(b"a", T_LEASE, EQUAL, 0), true),
        (num_cmp(b"a", T_LEASE, GREATER, 0), false),
        (num_cmp(b"a", T_LEASE, LESS, 1), true),
        (num_cmp(b"a", T_LEASE, NOT_EQUAL, 0), false),
        (num_cmp(b"a", T_LEASE, NOT_EQUAL, 5), true),
        // A missing key: a VALUE compare is always false; the others compare against zero.
        (val_cmp(b"zz", EQUAL, b""), false),
        (val_cmp(b"zz", NOT_EQUAL, b"x"), false),
        (val_cmp(b"zz", LESS, b"x"), false),
        (val_cmp(b"zz", GREATER, b""), false),
        (num_cmp(b"zz", T_VERSION, EQUAL, 0), true),
        (num_cmp(b"zz", T_VERSION, NOT_EQUAL, 0), false),
        (num_cmp(b"zz", T_VERSION, LESS, 1), true),
        (num_cmp(b"zz", T_CREATE, EQUAL, 0), true),
        (num_cmp(b"zz", T_CREATE, GREATER, 0), false),
        (num_cmp(b"zz", T_MOD, EQUAL, 0), true),
        (num_cmp(b"zz", T_MOD, LESS, 1), true),
        (num_cmp(b"zz", T_MOD, GREATER, -1), true),
        (num_cmp(b"zz", T_LEASE, EQUAL, 0), true),
        // Range compares: every key in the range must satisfy.
        (ranged(num_cmp(b"a", T_VERSION, GREATER, 0), b"c"), true),
        (ranged(num_cmp(b"a", T_VERSION, EQUAL, 1), b"c"), false),
        (ranged(num_cmp(b"a", T_VERSION, EQUAL, 2), b"c"), false),
        (ranged(num_cmp(b"a", T_CREATE, GREATER, 1), b"c"), true),
        (ranged(num_cmp(b"a", T_MOD, LESS, 4), b"c"), false),
        (ranged(num_cmp(b"a", T_MOD, LESS, 5), b"c"), true),
        (ranged(val_cmp(b"a", NOT_EQUAL, b""), b"c"), true),
        (ranged(val_cmp(b"a", LESS, b"x"), b"c"), false),
        (ranged(val_cmp(b"a", LESS, b"y"), b"c"), true),
        (ranged(num_cmp(b"a", T_LEASE, EQUAL, 0), b"\0"), true),
        (ranged(num_cmp(b"b", T_VERSION, EQUAL, 1), b"\0"), true),
        (ranged(num_cmp(b"", T_VERSION, EQUAL, 1), b"\0"), false),
        // An empty range behaves as a missing key.
        (ranged(num_cmp(b"x", T_VERSION, EQUAL, 0), b"z"), true),
        (ranged(num_cmp(b"x", T_CREATE, LESS, 1), b"z"), true),
        (ranged(val_cmp(b"x", EQUAL, b""), b"z"), false),
        (ranged(num_cmp(b"b", T_VERSION, EQUAL, 0), b"a"), true),
    ];
    for (c, want) in cases {
        assert_eq!(eval(&mut s, vec![c.clone()]), want, "{c:?}");
    }
    // Compares are ANDed.
    assert!(eval(
        &mut s,
        vec![
            val_cmp(b"a", EQUAL, b"2"),
            num_cmp(b"b", T_VERSION, EQUAL, 1)
        ]
    ));
    assert!(!eval(
        &mut s,
        vec![
            val_cmp(b"a", EQUAL, b"2"),
            num_cmp(b"b", T_VERSION, EQUAL, 2)
        ]
    ));
    assert!(!eval(
        &mut s,
        vec![
            val_cmp(b"a", EQUAL, b"1"),
            num_cmp(b"b", T_VERSION, EQUAL, 1)
        ]
    ));
    // A deleted key is missing.
    s.delete(b"b", b"", false);
    assert!(eval(&mut s, vec![num_cmp(b"b", T_CREATE, EQUAL, 0)]));
    assert!(!eval(&mut s, vec![val_cmp(b"b", EQUAL, b"x")]));
    assert_eq!(s.rev(), 5);
}

#[test]
fn txn_branches_and_reads_of_own_writes() {
    let mut s = Store::new();
    s.put(b"a", b"1"); // 2
    s.put(b"c", b"0"); // 3
    let t = s
        .txn(TxnRequest {
            compare: vec![val_cmp(b"a", EQUAL, b"1")],
            success: vec![
                op_range(b"a", b""),
                op_put(b"b", b"2"),
                op_range(b"b", b""),
                RequestOp::Put(PutRequest {
                    prev_kv: true,
                    ..put_req(b"a", b"3")
                }),
                op_range(b"a", b""),
                op_put(b"d", b"4"),
                op_del(b"c", b""),
                op_range(b"", b"\0"),
            ],
            failure: vec![op_put(b"f", b"x")],
        })
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 4);
    assert_eq!(t.responses.len(), 8);
    // Before any write: the txn's begin revision.
    assert_eq!(
        as_range(&t.responses[0]),
        &RangeResult {
            revision: 3,
            kvs: vec![kv(b"a", b"1", 2, 2, 1)],
            more: false,
            count: 1
        }
    );
    assert_eq!(
        as_put(&t.responses[1]),
        &PutResult {
            revision: 4,
            prev_kv: None
        }
    );
    // After a write: the new revision, and the write is visible.
    assert_eq!(
        as_range(&t.responses[2]),
        &RangeResult {
            revision: 4,
            kvs: vec![kv(b"b", b"2", 4, 4, 1)],
            more: false,
            count: 1
        }
    );
    assert_eq!(
        as_put(&t.responses[3]),
        &PutResult {
            revision: 4,
            prev_kv: Some(kv(b"a", b"1", 2, 2, 1))
        }
    );
    assert_eq!(as_range(&t.responses[4]).kvs, vec![kv(b"a", b"3", 2, 4, 2)]);
    assert_eq!(as_put(&t.responses[5]).revision, 4);
    assert_eq!(
        as_delete(&t.responses[6]),
        &DeleteResult {
            revision: 4,
            deleted: 1,
            prev_kvs: vec![]
        }
    );
    let r = as_range(&t.responses[7]);
    assert_eq!(r.revision, 4);
    assert_eq!(
        r.kvs,
        vec![
            kv(b"a", b"3", 2, 4, 2),
            kv(b"b", b"2", 4, 4, 1),
            kv(b"d", b"4", 4, 4, 1)
        ]
    );
    assert_eq!(s.rev(), 4);
    assert_eq!(s.get(b"c"), None);
    assert_eq!(s.get(b"f"), None);
    // The txn's changes form one revision: at 3 none of them is visible.
    assert_eq!(
        s.keys(b"", b"\0"),
        vec![b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]
    );
    let r = s.range(&at_rev(3, all())).unwrap();
    assert_eq!(
        r.kvs,
        vec![kv(b"a", b"1", 2, 2, 1), kv(b"c", b"0", 3, 3, 1)]
    );
    s.delete(b"d", b"", false); // 5

    // The failure branch.
    let t = s
        .txn(TxnRequest {
            compare: vec![val_cmp(b"a", EQUAL, b"1")],
            success: vec![op_put(b"s", b"x")],
            failure: vec![op_put(b"f", b"x"), op_range(b"f", b"")],
        })
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(t.revision, 6);
    assert_eq!(as_put(&t.responses[0]).revision, 6);
    assert_eq!(as_range(&t.responses[1]).kvs, vec![kv(b"f", b"x", 6, 6, 1)]);
    assert_eq!(s.get(b"s"), None);

    // Deletes inside a txn: beginRev while nothing changed yet, beginRev + 1 after.
    let t = s
        .txn(txn_of(vec![
            op_del(b"nothing", b""),
            op_put(b"x", b"1"),
            op_del(b"nothing2", b""),
            op_range(b"q", b""),
        ]))
        .unwrap();
    assert_eq!(t.revision, 7);
    assert_eq!(
        as_delete(&t.responses[0]),
        &DeleteResult {
            revision: 6,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    assert_eq!(as_put(&t.responses[1]).revision, 7);
    assert_eq!(
        as_delete(&t.responses[2]),
        &DeleteResult {
            revision: 7,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    assert_eq!(
        as_range(&t.responses[3]),
        &RangeResult {
            revision: 7,
            kvs: vec![],
            more: false,
            count: 0
        }
    );

    // Overlapping deletes in one txn (etcd allows them; only puts may not overlap).
    let t = s
        .txn(txn_of(vec![
            op_put(b"p/1", b"1"),
            RequestOp::DeleteRange(del_req(b"f", b"g", true)),
            op_del(b"f", b""),
        ]))
        .unwrap();
    assert_eq!(t.revision, 8);
    assert_eq!(
        as_delete(&t.responses[1]),
        &DeleteResult {
            revision: 8,
            deleted: 1,
            prev_kvs: vec![kv(b"f", b"x", 6, 6, 1)]
        }
    );
    // Deleting the same key again in the txn finds it already gone.
    assert_eq!(
        as_delete(&t.responses[2]),
        &DeleteResult {
            revision: 8,
            deleted: 0,
            prev_kvs: vec![]
        }
    );
    assert_eq!(s.rev(), 8);
}

#[test]
fn nested_txn() {
    let mut s = Store::new();
    s.put(b"a", b"1"); // 2
    let inner_ok = TxnRequest {
        // Compares of every level are evaluated before the outer txn runs: "x" is still missing.
        compare: vec![num_cmp(b"x", T_VERSION, EQUAL, 0)],
        success: vec![op_range(b"x", b""), op_put(b"y", b"2")],
        failure: vec![op_put(b"never", b"1")],
    };
    let inner_fail = TxnRequest {
        compare: vec![val_cmp(b"a", EQUAL, b"nope")],
        success: vec![op_put(b"never2", b"1")],
        failure: vec![op_range(b"a", b""), TxnRequest::default().into_op()],
    };
    let t = s
        .txn(TxnRequest {
            compare: vec![val_cmp(b"a", EQUAL, b"1")],
            success: vec![
                op_put(b"x", b"1"),
                RequestOp::Txn(inner_ok),
                RequestOp::Txn(inner_fail),
                op_range(b"y", b""),
            ],
            failure: vec![],
        })
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 3);
    assert_eq!(as_put(&t.responses[0]).revision, 3);
    let inner = as_txn(&t.responses[1]);
    assert!(inner.succeeded);
    // etcd leaves a nested txn's response header empty (revision 0).
    assert_eq!(inner.revision, 0);
    assert_eq!(
        as_range(&inner.responses[0]),
        &RangeResult {
            revision: 3,
            kvs: vec![kv(b"x", b"1", 3, 3, 1)],
            more: false,
            count: 1
        }
    );
    assert_eq!(as_put(&inner.responses[1]).revision, 3);
    let inner2 = as_txn(&t.responses[2]);
    assert!(!inner2.succeeded);
    assert_eq!(inner2.revision, 0);
    assert_eq!(
        as_range(&inner2.responses[0]).kvs,
        vec![kv(b"a", b"1", 2, 2, 1)]
    );
    assert_eq!(as_range(&inner2.responses[0]).revision, 3);
    let innermost = as_txn(&inner2.responses[1]);
    assert_eq!(
        innermost,
        &TxnResult {
            revision: 0,
            succeeded: true,
            responses: vec![]
        }
    );
    assert_eq!(as_range(&t.responses[3]).kvs, vec![kv(b"y", b"2", 3, 3, 1)]);
    assert_eq!(
        s.keys(b"", b"\0"),
        vec![b"a".to_vec(), b"x".to_vec(), b"y".to_vec()]
    );

    // A nested txn that only reads, in an outer txn that writes nothing: no revision.
    let t = s
        .txn(txn_of(vec![RequestOp::Txn(txn_of(vec![op_range(
            b"a", b"",
        )]))]))
        .unwrap();
    assert_eq!(t.revision, 3);
    let inner = as_txn(&t.responses[0]);
    assert_eq!(as_range(&inner.responses[0]).revision, 3);
    assert_eq!(s.rev(), 3);

    // A failing check inside a nested txn fails the whole txn; nothing changes.
    let err = s.txn(txn_of(vec![
        op_put(b"z", b"1"),
        RequestOp::Txn(txn_of(vec![RequestOp::Put(PutRequest {
            ignore_value: true,
            ..put_req(b"missing", b"")
        })])),
    ]));
    assert!(matches!(err, Err(MvccError::KeyNotFound)));
    assert_eq!(s.rev(), 3);
    assert_eq!(s.get(b"z"), None);
}

trait IntoOp {
    fn into_op(self) -> RequestOp;
}
impl IntoOp for TxnRequest {
    fn into_op(self) -> RequestOp {
        RequestOp::Txn(self)
    }
}

#[test]
fn txn_errors_change_nothing() {
    let mut s = Store::new();
    s.put(b"a", b"1"); // 2
    s.put(b"a", b"2"); // 3
    s.put(b"b", b"1"); // 4
    let before = s.range(&all()).unwrap();
    let fail = |s: &mut Store, ops: Vec<RequestOp>| -> MvccError {
        let idx = s.next_index;
        let e = s.txn(txn_of(ops)).unwrap_err();
        assert_eq!(s.m().applied().0, idx);
        e
    };
    // Put checks run against the state before the txn, before anything is written.
    let e = fail(
        &mut s,
        vec![
            op_put(b"c", b"1"),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put_req(b"m", b"")
            }),
        ],
    );
    assert!(matches!(e, MvccError::KeyNotFound));
    let e = fail(
        &mut s,
        vec![
            op_put(b"c", b"1"),
            RequestOp::Put(PutRequest {
                ignore_lease: true,
                ..put_req(b"m", b"v")
            }),
        ],
    );
    assert!(matches!(e, MvccError::KeyNotFound));
    let e = fail(
        &mut s,
        vec![
            op_put(b"c", b"1"),
            RequestOp::Put(PutRequest {
                lease: 9,
                ..put_req(b"a", b"v")
            }),
        ],
    );
    assert!(matches!(e, MvccError::LeaseNotFound));
    // Inside a txn etcd checks ignore_value before the lease.
    let e = fail(
        &mut s,
        vec![RequestOp::Put(PutRequest {
            lease: 9,
            ignore_value: true,
            ..put_req(b"m", b"")
        })],
    );
    assert!(matches!(e, MvccError::KeyNotFound));
    // Range revisions are checked against the state before the txn.
    let e = fail(
        &mut s,
        vec![
            op_put(b"c", b"1"),
            RequestOp::Range(at_rev(5, rr(b"a", b""))),
        ],
    );
    assert!(matches!(e, MvccError::FutureRev));
    // Puts are checked before ranges.
    let e = fail(
        &mut s,
        vec![
            RequestOp::Range(at_rev(50, rr(b"a", b""))),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put_req(b"m", b"")
            }),
        ],
    );
    assert!(matches!(e, MvccError::KeyNotFound));
    // A read-only txn with a bad revision fails too.
    let e = fail(&mut s, vec![RequestOp::Range(at_rev(5, rr(b"a", b"")))]);
    assert!(matches!(e, MvccError::FutureRev));
    assert_eq!(s.rev(), 4);
    assert_eq!(s.range(&all()).unwrap(), before);

    // Only the chosen branch is checked.
    let t = s
        .txn(TxnRequest {
            compare: vec![val_cmp(b"a", EQUAL, b"2")],
            success: vec![op_range(b"a", b"")],
            failure: vec![
                RequestOp::Put(PutRequest {
                    ignore_value: true,
                    ..put_req(b"m", b"")
                }),
                RequestOp::Range(at_rev(99, rr(b"a", b""))),
            ],
        })
        .unwrap();
    assert!(t.succeeded);

    // A Range at a past revision inside a txn reads that revision; its header is the txn's.
    let t = s
        .txn(txn_of(vec![
            RequestOp::Range(at_rev(2, rr(b"a", b""))),
            op_put(b"c", b"1"),
            RequestOp::Range(at_rev(3, rr(b"a", b"\0"))),
            RequestOp::Range(at_rev(4, rr(b"a", b"\0"))),
        ]))
        .unwrap();
    assert_eq!(t.revision, 5);
    assert_eq!(
        as_range(&t.responses[0]),
        &RangeResult {
            revision: 4,
            kvs: vec![kv(b"a", b"1", 2, 2, 1)],
            more: false,
            count: 1
        }
    );
    assert_eq!(
        as_range(&t.responses[2]),
        &RangeResult {
            revision: 5,
            kvs: vec![kv(b"a", b"2", 2, 3, 2)],
            more: false,
            count: 1
        }
    );
    assert_eq!(
        keys_of(as_range(&t.responses[3])),
        vec![b"a".as_slice(), b"b"]
    );

    // After a compaction, a Range below it fails the txn with Compacted; at it, it succeeds.
    s.compact(4).unwrap();
    let e = fail(
        &mut s,
        vec![
            op_put(b"d", b"1"),
            RequestOp::Range(at_rev(3, rr(b"a", b""))),
        ],
    );
    assert!(matches!(e, MvccError::Compacted));
    assert_eq!(s.get(b"d"), None);
    let t = s
        .txn(txn_of(vec![RequestOp::Range(at_rev(4, rr(b"a", b"")))]))
        .unwrap();
    assert_eq!(as_range(&t.responses[0]).kvs, vec![kv(b"a", b"2", 2, 3, 2)]);
    assert_eq!(s.rev(), 5);
}

/// Every (user key, main revision) in the `k` key space and the number of `r` entries, read
/// directly from the page store (DESIGN.md §4.1, §4.2).
fn physical_versions(path: &Path) -> (Vec<(Vec<u8>, i64)>, usize) {
    let store = PageStore::open(&StoreOptions::new(path.to_path_buf())).unwrap();
    let snap = store.reader().snapshot();
    let mut c = snap.cursor();
    c.seek(b"").unwrap();
    let (mut versions, mut revlog) = (Vec::new(), 0);
    while c.valid() {
        let k = c.key();
        match k[0] {
            b'k' => {
                let (body, rev) = k.split_at(k.len() - 8);
                let main = !u64::from_be_bytes(rev.try_into().unwrap()) as i64;
                let body = body[1..].strip_suffix(&[0, 0]).unwrap();
                let mut key = Vec::new();
                let mut i = 0;
                while i < body.len() {
                    key.push(body[i]);
                    i += if body[i] == 0 { 2 } else { 1 };
                }
                versions.push((key, main));
            }
            b'r' => revlog += 1,
            _ => {}
        }
        c.advance().unwrap();
    }
    (versions, revlog)
}

#[test]
fn compaction() {
    let mut s = Store::new();
    s.put(b"a", b"1"); // 2
    s.put(b"b", b"1"); // 3
    s.put(b"a", b"2"); // 4
    s.delete(b"b", b"", false); // 5
    s.put(b"c", b"1"); // 6
    s.put(b"a", b"3"); // 7
    s.delete(b"c", b"", false); // 8
    s.put(b"d", b"1"); // 9
    s.put(b"d", b"2"); // 10
    assert_eq!(s.rev(), 10);

    // Errors: a future revision; nothing changes.
    assert!(matches!(s.compact(11), Err(MvccError::FutureRev)));
    assert_eq!(s.m().compacted(), -1);

    assert_eq!(
        s.compact(5).unwrap(),
        10,
        "the response carries the current revision"
    );
    assert_eq!(s.rev(), 10, "compaction does not take a revision");
    assert_eq!(s.m().compacted(), 5);
    assert_eq!(s.m().reader().revisions(), (10, 5));

    // Below C: Compacted. At C: the newest version <= C of each key.
    for rev in [1, 2, 4] {
        assert!(
            matches!(s.range(&at_rev(rev, all())), Err(MvccError::Compacted)),
            "rev {rev}"
        );
    }
    let r = s.range(&at_rev(5, all())).unwrap();
    assert_eq!(
        r,
        RangeResult {
            revision: 10,
            kvs: vec![kv(b"a", b"2", 2, 4, 2)],
            more: false,
            count: 1
        }
    );
    // Later revisions are unaffected.
    let r = s.range(&at_rev(6, all())).unwrap();
    assert_eq!(
        r.kvs,
        vec![kv(b"a", b"2", 2, 4, 2), kv(b"c", b"1", 6, 6, 1)]
    );
    let r = s.range(&at_rev(7, all())).unwrap();
    assert_eq!(
        r.kvs,
        vec![kv(b"a", b"3", 2, 7, 3), kv(b"c", b"1", 6, 6, 1)]
    );
    let r = s.range(&at_rev(9, all())).unwrap();
    assert_eq!(
        r.kvs,
        vec![kv(b"a", b"3", 2, 7, 3), kv(b"d", b"1", 9, 9, 1)]
    );
    let r = s.range(&all()).unwrap();
    assert_eq!(
        r.kvs,
        vec![kv(b"a", b"3", 2, 7, 3), kv(b"d", b"2", 9, 10, 2)]
    );

    // Errors: at or below the compacted revision.
    for rev in [5, 4, 1, 0] {
        assert!(
            matches!(s.compact(rev), Err(MvccError::Compacted)),
            "compact {rev}"
        );
    }
    assert_eq!(s.m().compacted(), 5);
    assert_eq!(s.rev(), 10);

    // b is gone (its newest version <= 5 is a tombstone); compares see it as missing.
    assert!(eval(&mut s, vec![num_cmp(b"b", T_CREATE, EQUAL, 0)]));
    // A new b starts a fresh generation.
    assert_eq!(s.put(b"b", b"new").revision, 11);
    assert_eq!(s.get(b"b"), Some(kv(b"b", b"new", 11, 11, 1)));

    // Compact at 8: c's tombstone at 8 is its newest <= 8, so c disappears entirely; a keeps 7.
    assert_eq!(s.compact(8).unwrap(), 11);
    assert!(matches!(
        s.range(&at_rev(7, all())),
        Err(MvccError::Compacted)
    ));
    let r = s.range(&at_rev(8, all())).unwrap();
    assert_eq!(r.kvs, vec![kv(b"a", b"3", 2, 7, 3)]);
    let r = s.range(&at_rev(10, all())).unwrap();
    assert_eq!(
        r.kvs,
        vec![kv(b"a", b"3", 2, 7, 3), kv(b"d", b"2", 9, 10, 2)]
    );

    // Compact at the current revision.
    assert_eq!(s.compact(11).unwrap(), 11);
    assert_eq!(s.range(&at_rev(11, all())).unwrap().count, 3);
    assert!(matches!(
        s.range(&at_rev(10, all())),
        Err(MvccError::Compacted)
    ));
    assert_eq!(s.rev(), 11);

    // Physically: only the newest version of each live key remains, tombstones included.
    s.finish_compaction();
    s.mm().sync().unwrap();
    let path = db_path(s.dir.path());
    drop(s.m.take());
    let (versions, revlog) = physical_versions(&path);
    assert_eq!(
        versions,
        vec![(b"a".to_vec(), 7), (b"b".to_vec(), 11), (b"d".to_vec(), 10)]
    );
    assert_eq!(revlog, 3);
    s.crash();
    assert_eq!((s.rev(), s.m().compacted()), (11, 11));
    assert!(matches!(s.compact(11), Err(MvccError::Compacted)));
}

#[test]
fn compaction_keeps_versions_after_c_and_handles_tombstone_gaps() {
    let mut s = Store::new();
    s.put(b"k", b"1"); // 2
    s.delete(b"k", b"", false); // 3
    s.put(b"other", b"x"); // 4
    s.put(b"k", b"2"); // 5: new generation
    s.put(b"k", b"3"); // 6
    // C = 4 falls between k's tombstone and its next generation: the old generation goes.
    s.compact(4).unwrap();
    assert_eq!(s.get_at(b"k", 4).unwrap(), None);
    assert_eq!(s.get_at(b"k", 5).unwrap(), Some(kv(b"k", b"2", 5, 5, 1)));
    assert_eq!(s.get_at(b"k", 6).unwrap(), Some(kv(b"k", b"3", 5, 6, 2)));
    // C = 5 keeps k@5 (newest <= 5) and k@6.
    s.compact(5).unwrap();
    assert_eq!(s.get_at(b"k", 5).unwrap(), Some(kv(b"k", b"2", 5, 5, 1)));
    assert_eq!(s.get_at(b"k", 6).unwrap(), Some(kv(b"k", b"3", 5, 6, 2)));
    // Compact on a fresh store at revision 1.
    let mut f = Store::new();
    assert_eq!(f.compact(1).unwrap(), 1);
    assert_eq!(f.m().compacted(), 1);
    assert_eq!(f.rev(), 1);
    assert!(matches!(f.compact(1), Err(MvccError::Compacted)));
    assert!(matches!(f.compact(2), Err(MvccError::FutureRev)));
}

#[test]
fn range_errors() {
    let mut s = Store::new();
    assert!(matches!(
        s.range(&at_rev(2, all())),
        Err(MvccError::FutureRev)
    ));
    assert_eq!(s.range(&at_rev(1, all())).unwrap().count, 0);
    s.put(b"a", b"1"); // 2
    s.put(b"a", b"2"); // 3
    assert!(matches!(
        s.range(&at_rev(4, rr(b"a", b""))),
        Err(MvccError::FutureRev)
    ));
    assert!(matches!(
        s.range(&RangeRequest {
            revision: 100,
            count_only: true,
            ..rr(b"a", b"")
        }),
        Err(MvccError::FutureRev)
    ));
    assert_eq!(s.get_at(b"a", 3).unwrap().unwrap().value, b"2");
    // A negative revision reads the current one.
    assert_eq!(s.get_at(b"a", -1).unwrap().unwrap().value, b"2");
    s.compact(3).unwrap();
    assert!(matches!(
        s.range(&at_rev(2, rr(b"a", b""))),
        Err(MvccError::Compacted)
    ));
    assert!(matches!(
        s.range(&RangeRequest {
            revision: 1,
            count_only: true,
            ..all()
        }),
        Err(MvccError::Compacted)
    ));
    assert!(matches!(
        s.range(&at_rev(4, rr(b"a", b""))),
        Err(MvccError::FutureRev)
    ));
    assert_eq!(s.get_at(b"a", 3).unwrap().unwrap().value, b"2");
    assert_eq!(s.get_at(b"a", 0).unwrap().unwrap().value, b"2");
}

#[test]
fn restart_and_replay() {
    let mut s = Store::new();
    let reqs: Vec<Request> = vec![
        Request::Put(put_req(b"a", b"1")),
        Request::Put(put_req(b"b", b"1")),
        Request::Put(put_req(b"a", b"2")),
        Request::DeleteRange(DeleteRangeRequest {
            key: b"b".to_vec(),
            ..Default::default()
        }),
        Request::Compact(CompactRequest {
            revision: 3,
            physical: true,
        }),
        Request::Txn(txn_of(vec![op_put(b"c", b"1"), op_put(b"d", b"1")])),
        Request::Put(PutRequest {
            ignore_value: true,
            ..put_req(b"zz", b"")
        }), // fails
        Request::Put(put_req(b"e", b"1")),
    ];
    // Entries 1..=8 at term 1, with an empty entry at 9 (term 2).
    for r in &reqs[..5] {
        s.apply(r.clone()).ok();
    }
    s.term = 2;
    for r in &reqs[5..] {
        s.apply(r.clone()).ok();
    }
    let res = s
        .mm()
        .apply(&[Applied {
            index: 9,
            term: 2,
            request: None,
            caller: None,
            membership: None,
        }])
        .unwrap();
    assert!(res.is_empty());
    s.next_index = 10;
    let state = |s: &Store| {
        let at = |revision: i64| s.range(&at_rev(revision, all())).map_err(|e| e.to_string());
        (
            s.rev(),
            s.m().compacted(),
            s.m().applied(),
            s.range(&all()).unwrap(),
            at(3),
            at(6),
            at(10),
        )
    };
    let before = state(&s);
    assert_eq!((before.0, before.1, before.2), (7, 3, (9, 2)));
    assert_eq!(keys_of(&before.3), vec![b"a".as_slice(), b"c", b"d", b"e"]);
    assert_eq!(
        keys_of(before.4.as_ref().unwrap()),
        vec![b"a".as_slice(), b"b"]
    );

    s.restart();
    assert_eq!(state(&s), before);
    assert_eq!(s.m().reader().applied(), (9, 2));
    assert_eq!(s.m().reader().revisions(), (7, 3));
    assert!(matches!(
        s.range(&at_rev(2, all())),
        Err(MvccError::Compacted)
    ));

    // Replay of everything already applied: skipped, no results, nothing changes.
    let entries: Vec<Applied<'_>> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| Applied {
            index: i as u64 + 1,
            term: if i < 5 { 1 } else { 2 },
            request: Some(r),
            caller: None,
            membership: None,
        })
        .collect();
    let res = s.mm().apply(&entries).unwrap();
    assert!(res.is_empty());
    assert_eq!(state(&s), before);

    // A batch straddling the applied index: only the new entries run.
    let extra = Request::Put(put_req(b"f", b"1"));
    let mut batch: Vec<Applied<'_>> = reqs[6..]
        .iter()
        .enumerate()
        .map(|(i, r)| Applied {
            index: i as u64 + 7,
            term: 2,
            request: Some(r),
            caller: None,
            membership: None,
        })
        .collect();
    batch.push(Applied {
        index: 9,
        term: 2,
        request: None,
        caller: None,
        membership: None,
    });
    batch.push(Applied {
        index: 10,
        term: 3,
        request: Some(&extra),
        caller: None,
        membership: None,
    });
    let res = s.mm().apply(&batch).unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(
        res.into_iter().next().unwrap().unwrap(),
        WriteResult::Put(PutResult {
            revision: 8,
            prev_kv: None
        })
    );
    assert_eq!(s.m().applied(), (10, 3));
    s.next_index = 11;
    s.term = 3;

    // Without a checkpoint a crash goes back to the last durable state; replaying the lost
    // entries rebuilds the same state.
    s.mm().sync().unwrap();
    let durable = state(&s);
    let lost: Vec<Request> = vec![
        Request::Put(put_req(b"g", b"1")),
        Request::DeleteRange(del_req(b"a", b"d", true)),
        Request::Compact(CompactRequest {
            revision: 9,
            physical: false,
        }),
        Request::Put(put_req(b"a", b"again")),
    ];
    let lost_entries: Vec<Applied<'_>> = lost
        .iter()
        .enumerate()
        .map(|(i, r)| Applied {
            index: 11 + i as u64,
            term: 3,
            request: Some(r),
            caller: None,
            membership: None,
        })
        .collect();
    let first: Vec<_> = s
        .mm()
        .apply(&lost_entries)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let after = state(&s);
    assert_eq!(after.0, 11);
    s.crash();
    assert_eq!(state(&s), durable);
    let second: Vec<_> = s
        .mm()
        .apply(&lost_entries)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, second);
    assert_eq!(state(&s), after);
    s.restart();
    assert_eq!(state(&s), after);
    assert_eq!(s.get(b"a"), Some(kv(b"a", b"again", 11, 11, 1)));
}

#[test]
fn large_value_round_trips() {
    let mut s = Store::new();
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    s.put(b"small", b"s");
    assert_eq!(s.put(b"big", &big).revision, 3);
    assert_eq!(s.get(b"big"), Some(kv(b"big", &big, 3, 3, 1)));
    let mut big2 = big.clone();
    big2.reverse();
    let p = s
        .put_with(PutRequest {
            prev_kv: true,
            ..put_req(b"big", &big2)
        })
        .unwrap();
    assert_eq!(p.prev_kv, Some(kv(b"big", &big, 3, 3, 1)));
    assert_eq!(s.get(b"big").unwrap().value, big2);
    assert_eq!(s.get_at(b"big", 3).unwrap().unwrap().value, big);
    let r = s.range(&all()).unwrap();
    assert_eq!(keys_of(&r), vec![b"big".as_slice(), b"small"]);
    let r = s
        .range(&RangeRequest {
            keys_only: true,
            ..all()
        })
        .unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    // VALUE compare on the big value.
    assert!(eval(&mut s, vec![val_cmp(b"big", EQUAL, &big2)]));
    s.restart();
    assert_eq!(s.get(b"big").unwrap().value, big2);
    assert_eq!(s.get_at(b"big", 3).unwrap().unwrap().value, big);
    s.compact(4).unwrap();
    assert_eq!(s.get(b"big").unwrap().value, big2);
    let d = s.delete(b"big", b"", true);
    assert_eq!(d.prev_kvs[0].value, big2);
    assert_eq!(s.get(b"big"), None);
}

#[test]
fn a_range_read_in_steps_answers_as_one_read() {
    let mut s = Store::new();
    // Keys with many versions (more entries than one step visits), tombstones, and keys
    // deleted and put again, so that steps end inside runs of old versions.
    for round in 0..4 {
        for i in 0..400u32 {
            if round == 0 || i % 3 == 0 {
                s.put(
                    format!("k{i:04}").as_bytes(),
                    format!("{round}-{i}").as_bytes(),
                );
            }
        }
        s.delete(format!("k{:04}", round * 7).as_bytes(), b"", false);
    }
    s.delete(b"k0100", b"k0110", false);
    s.put(b"k0105", b"back");
    let mid = s.rev() - 50;
    let shapes = [
        all(),
        rr(b"k0050", b"k0350"),
        RangeRequest {
            limit: 100,
            ..all()
        },
        RangeRequest {
            limit: 1,
            ..rr(b"k0099", b"k0200")
        },
        RangeRequest {
            count_only: true,
            ..all()
        },
        RangeRequest {
            keys_only: true,
            limit: 300,
            ..all()
        },
        RangeRequest {
            sort_order: 2,
            sort_target: 3,
            limit: 20,
            ..all()
        },
        RangeRequest {
            min_mod_revision: mid,
            ..all()
        },
        RangeRequest {
            revision: mid,
            limit: 250,
            ..all()
        },
        RangeRequest {
            revision: 400,
            ..rr(b"k0000", b"\0")
        },
        rr(b"k0105", b""),
        rr(b"k0000", b""),
    ];
    for r in &shapes {
        let whole = s.m().reader().range(r).unwrap();
        let (stepped, steps) = s.range_in_steps(r).unwrap();
        assert_eq!(stepped, whole, "{r:?}");
        if r.range_end == b"\0" && r.revision == 0 {
            assert!(steps > 1, "{r:?} took one step");
        }
    }
}

#[test]
fn binary_keys_order_bytewise() {
    let mut s = Store::new();
    let keys: [&[u8]; 10] = [
        b"ab", b"a\0b", b"a", b"\0", b"a\0\xff", b"b", b"a\0", b"a\xff", b"a\0\0", b"\0\0",
    ];
    for (i, k) in keys.iter().enumerate() {
        s.put(k, format!("{i}").as_bytes());
    }
    // More versions of some keys so that version groups sit next to each other.
    s.put(b"a", b"a2");
    s.put(b"a\0", b"a0-2");
    s.put(b"a", b"a3");
    let mut sorted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    sorted.sort();
    assert_eq!(s.keys(b"", b"\0"), sorted);
    assert_eq!(
        sorted,
        vec![
            b"\0".to_vec(),
            b"\0\0".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0\0".to_vec(),
            b"a\0b".to_vec(),
            b"a\0\xff".to_vec(),
            b"ab".to_vec(),
            b"a\xff".to_vec(),
            b"b".to_vec()
        ]
    );
    // Every range over these keys and a few more bounds: the store compares bounds in its
    // escaped form, which must agree with plain byte order.
    let mut bounds: Vec<Vec<u8>> = sorted.clone();
    bounds.extend([
        b"".to_vec(),
        b"a\x01".to_vec(),
        b"\xff".to_vec(),
        b"a\0\0\0".to_vec(),
    ]);
    for start in &bounds {
        for end in &bounds {
            let want: Vec<Vec<u8>> = sorted
                .iter()
                .filter(|k| match end.as_slice() {
                    b"" => k == &start,
                    b"\0" => k >= &start,
                    _ => k >= &start && k < &end,
                })
                .cloned()
                .collect();
            assert_eq!(s.keys(start, end), want, "range {start:?}..{end:?}");
        }
    }
    // Single keys that are prefixes of others.
    assert_eq!(s.get(b"a").unwrap(), kv(b"a", b"a3", 4, 14, 3));
    assert_eq!(s.get(b"a\0").unwrap(), kv(b"a\0", b"a0-2", 8, 13, 2));
    assert_eq!(s.get(b"\0").unwrap().value, b"3");
    assert_eq!(s.get(b"a\0\0").unwrap().value, b"8");
    assert_eq!(s.get(b"a\x01"), None);
    assert_eq!(s.get(b""), None);
    // Prefix ranges.
    assert_eq!(
        s.keys(b"a\0", b"a\x01"),
        vec![
            b"a\0".to_vec(),
            b"a\0\0".to_vec(),
            b"a\0b".to_vec(),
            b"a\0\xff".to_vec()
        ]
    );
    assert_eq!(s.keys(b"a", b"b"), sorted[2..9].to_vec());
    assert_eq!(s.keys(b"a", b"a\0"), vec![b"a".to_vec()]);
    assert_eq!(
        s.keys(b"", b"a\0"),
        vec![b"\0".to_vec(), b"\0\0".to_vec(), b"a".to_vec()]
    );
    assert_eq!(s.keys(b"a\0\0", b"\0"), sorted[4..].to_vec());
    assert_eq!(s.keys(b"\0", b"\0\0"), vec![b"\0".to_vec()]);
    // Limit across the binary keys.
    let r = s
        .range(&RangeRequest {
            limit: 3,
            ..rr(b"a", b"b")
        })
        .unwrap();
    assert_eq!(
        (keys_of(&r), r.more, r.count),
        (vec![b"a".as_slice(), b"a\0", b"a\0\0"], true, 7)
    );
    // Sort by key descending.
    let r = s
        .range(&RangeRequest {
            sort_order: SORT_DESCEND,
            ..all()
        })
        .unwrap();
    let mut desc = sorted.clone();
    desc.reverse();
    assert_eq!(r.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>(), desc);
    // Deleting "a" leaves the longer keys; deleting "a\0"'s prefix range leaves "a" and "ab".
    s.delete(b"a", b"", false);
    assert_eq!(s.keys(b"a", b"b"), sorted[3..9].to_vec());
    let d = s.delete(b"a\0", b"a\x01", false);
    assert_eq!(d.deleted, 4);
    let left = vec![
        b"\0".to_vec(),
        b"\0\0".to_vec(),
        b"ab".to_vec(),
        b"a\xff".to_vec(),
        b"b".to_vec(),
    ];
    assert_eq!(s.keys(b"", b"\0"), left);
    // History is per key: at 14, before the deletes, everything is there.
    assert_eq!(s.range(&at_rev(14, all())).unwrap().count, 10);
    assert_eq!(
        s.range(&at_rev(12, rr(b"a", b""))).unwrap().kvs,
        vec![kv(b"a", b"a2", 4, 12, 2)]
    );
    s.restart();
    assert_eq!(s.keys(b"", b"\0"), left);
}

/// The model: the full key-value map after every revision.
struct Model {
    states: Vec<BTreeMap<Vec<u8>, KeyValue>>, // index = revision - 1
    compacted: i64,
}
impl Model {
    fn rev(&self) -> i64 {
        self.states.len() as i64
    }
    fn current(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        self.states.last().unwrap()
    }
}

fn model_range(m: &BTreeMap<Vec<u8>, KeyValue>, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
    m.values()
        .filter(|kv| {
            if end.is_empty() {
                kv.key == start
            } else if end == b"\0" {
                kv.key.as_slice() >= start
            } else {
                kv.key.as_slice() >= start && kv.key.as_slice() < end
            }
        })
        .cloned()
        .collect()
}

#[test]
fn random_history_matches_model() {
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let mut s = Store::new();
    let mut model = Model {
        states: vec![BTreeMap::new()],
        compacted: 0,
    };
    let key = |rng: &mut Rng| -> Vec<u8> {
        let mut k = vec![b'a' + rng.below(4) as u8];
        for _ in 0..rng.below(3) {
            k.push([0u8, b'a', b'b', 0xff][rng.below(4) as usize]);
        }
        k
    };
    for step in 0..1500 {
        let mut next = model.current().clone();
        let rev = model.rev() + 1;
        match rng.below(10) {
            0..=4 => {
                let k = key(&mut rng);
                let v = format!("v{step}").into_bytes();
                let p = s.put(&k, &v);
                assert_eq!(p.revision, rev);
                let (create, version) = next
                    .get(&k)
                    .map_or((rev, 1), |kv| (kv.create_revision, kv.version + 1));
                next.insert(k.clone(), kv(&k, &v, create, rev, version));
            }
            5 | 6 => {
                let (a, b) = (key(&mut rng), key(&mut rng));
                let end = match rng.below(3) {
                    0 => Vec::new(),
                    1 => b"\0".to_vec(),
                    _ => b,
                };
                let victims = model_range(model.current(), &a, &end);
                let d = s.delete(&a, &end, true);
                assert_eq!(d.prev_kvs, victims, "step {step}");
                if victims.is_empty() {
                    assert_eq!(d.revision, rev - 1);
                    continue;
                }
                assert_eq!(d.revision, rev);
                for v in &victims {
                    next.remove(&v.key);
                }
            }
            7 => {
                // A txn putting a few distinct keys.
                let mut ks: Vec<Vec<u8>> = (0..1 + rng.below(3)).map(|_| key(&mut rng)).collect();
                ks.sort();
                ks.dedup();
                let ops = ks
                    .iter()
                    .map(|k| op_put(k, format!("t{step}").as_bytes()))
                    .collect();
                let t = s.txn(txn_of(ops)).unwrap();
                assert_eq!(t.revision, rev);
                for k in &ks {
                    let (create, version) = next
                        .get(k)
                        .map_or((rev, 1), |kv| (kv.create_revision, kv.version + 1));
                    next.insert(
                        k.clone(),
                        kv(k, format!("t{step}").as_bytes(), create, rev, version),
                    );
                }
            }
            8 => {
                if rng.below(4) == 0 {
                    let c = model.compacted
                        + 1
                        + rng.below((model.rev() - model.compacted) as u64) as i64;
                    assert_eq!(s.compact(c).unwrap(), model.rev());
                    model.compacted = c;
                } else if rng.below(2) == 0 {
                    s.restart();
                }
                continue;
            }
            _ => {
                // Reads at random revisions.
                for _ in 0..5 {
                    let r = 1 + rng.below(model.rev() as u64) as i64;
                    let (a, b) = (key(&mut rng), key(&mut rng));
                    let end = if rng.below(2) == 0 { b"\0".to_vec() } else { b };
                    let req = at_rev(r, rr(&a, &end));
                    if r < model.compacted {
                        assert!(matches!(s.range(&req), Err(MvccError::Compacted)));
                        continue;
                    }
                    let want = model_range(&model.states[r as usize - 1], &a, &end);
                    let got = s.range(&req).unwrap();
                    assert_eq!(got.kvs, want, "step {step} rev {r} [{a:?}, {end:?})");
                    assert_eq!(got.count, want.len() as i64);
                    assert_eq!(got.revision, model.rev());
                }
                continue;
            }
        }
        model.states.push(next);
        assert_eq!(s.rev(), model.rev());
    }
    // Finally every readable revision, in full.
    for r in model.compacted.max(1)..=model.rev() {
        let got = s.range(&at_rev(r, all())).unwrap();
        assert_eq!(
            got.kvs,
            model.states[r as usize - 1]
                .values()
                .cloned()
                .collect::<Vec<_>>(),
            "rev {r}"
        );
    }
}

/// Keys with hundreds of versions (a few hot keys, no compaction until late): single-key and
/// range reads at every revision, and compares on the newest version, match a model — the scan
/// steps over a key's other versions one by one only briefly and then seeks past them.
#[test]
fn hot_keys_with_many_versions_match_a_model() {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut s = Store::new();
    let mut model = Model {
        states: vec![BTreeMap::new()],
        compacted: 0,
    };
    let keys: [&[u8]; 3] = [b"h", b"h\0", b"i"];
    for step in 0..900 {
        let mut next = model.current().clone();
        let rev = model.rev() + 1;
        let k = keys[rng.below(3) as usize];
        if rng.below(10) == 0 {
            if next.remove(k).is_none() {
                continue;
            }
            assert_eq!(s.delete(k, b"", false).revision, rev);
        } else {
            let v = format!("v{step}").into_bytes();
            assert_eq!(s.put(k, &v).revision, rev);
            let (create, version) = next
                .get(k)
                .map_or((rev, 1), |kv| (kv.create_revision, kv.version + 1));
            next.insert(k.to_vec(), kv(k, &v, create, rev, version));
        }
        model.states.push(next);
        if step == 700 {
            let c = model.rev() / 2;
            s.compact(c).unwrap();
            model.compacted = c;
        }
    }
    for r in model.compacted.max(1)..=model.rev() {
        let state = &model.states[r as usize - 1];
        for k in keys {
            let got = s.range(&at_rev(r, rr(k, b""))).unwrap();
            assert_eq!(got.kvs, model_range(state, k, b""), "{k:?} at {r}");
        }
        let got = s.range(&at_rev(r, rr(b"h", b"i\0"))).unwrap();
        assert_eq!(got.kvs, model_range(state, b"h", b"i\0"), "range at {r}");
    }
    for k in keys {
        let newest = model.current().get(k).map_or(0, |kv| kv.mod_revision);
        for number in [newest, newest + 1, model.rev() / 3] {
            let t = TxnRequest {
                compare: vec![num_cmp(k, T_MOD, EQUAL, number)],
                ..Default::default()
            };
            assert_eq!(
                s.txn(t).unwrap().succeeded,
                number == newest,
                "{k:?} {number}"
            );
        }
    }
}

/// A Txn of only Ranges answers the same from the reader's snapshot (how the server serves it,
/// without Raft) as through the write path: compares, branches, every Range's revision checks and
/// data, the header revision; and through the write path it changes nothing.
#[test]
fn read_only_txn_from_the_snapshot_matches_the_write_path() {
    let mut s = Store::new();
    s.put(b"a", b"1"); // rev 2
    s.put(b"b", b"1"); // rev 3
    s.put(b"a", b"2"); // rev 4
    s.delete(b"b", b"", false); // rev 5
    s.put(b"c", b"3"); // rev 6
    s.compact(3).unwrap();
    let at = |key: &[u8], end: &[u8], revision: i64| RangeRequest {
        revision,
        ..rr(key, end)
    };
    let limited = RangeRequest {
        limit: 1,
        sort_order: SORT_DESCEND,
        sort_target: BY_MOD,
        ..all()
    };
    let txns = vec![
        // No compares: success branch, ranges now and in the past.
        TxnRequest {
            success: vec![RequestOp::Range(all()), RequestOp::Range(at(b"a", b"", 3))],
            ..Default::default()
        },
        // A true and a false compare pick their branches.
        TxnRequest {
            compare: vec![num_cmp(b"a", T_MOD, EQUAL, 4)],
            success: vec![RequestOp::Range(rr(b"a", b""))],
            failure: vec![RequestOp::Range(rr(b"c", b""))],
        },
        TxnRequest {
            compare: vec![
                val_cmp(b"a", EQUAL, b"1"),
                num_cmp(b"zz", T_VERSION, EQUAL, 0),
            ],
            success: vec![RequestOp::Range(rr(b"a", b""))],
            failure: vec![
                RequestOp::Range(limited.clone()),
                RequestOp::Range(at(b"", b"\0", 5)),
            ],
        },
        // A missing key fails a value compare; range compares cover every key.
        TxnRequest {
            compare: vec![
                val_cmp(b"b", NOT_EQUAL, b"x"),
                Compare {
                    range_end: b"d".to_vec(),
                    ..num_cmp(b"a", T_CREATE, GREATER, 1)
                },
            ],
            success: vec![RequestOp::Range(all())],
            failure: vec![],
        },
        // Revision errors: compacted, future; the compacted revision itself is readable.
        TxnRequest {
            success: vec![RequestOp::Range(at(b"a", b"", 2))],
            ..Default::default()
        },
        TxnRequest {
            success: vec![RequestOp::Range(at(b"a", b"", 7))],
            ..Default::default()
        },
        TxnRequest {
            success: vec![RequestOp::Range(at(b"a", b"", 3))],
            ..Default::default()
        },
        // An error only in the branch not taken is no error.
        TxnRequest {
            compare: vec![num_cmp(b"a", T_VERSION, EQUAL, 2)],
            success: vec![RequestOp::Range(rr(b"a", b""))],
            failure: vec![RequestOp::Range(at(b"a", b"", 99))],
        },
        TxnRequest::default(),
    ];
    for t in txns {
        let from_snapshot = s
            .m()
            .reader()
            .txn_read_only(&t)
            .map(|r| r.expect("read-only"));
        let before = s.m().revision();
        let through_raft = s.txn(t.clone());
        assert_eq!(
            s.m().revision(),
            before,
            "a read-only txn changed the revision: {t:?}"
        );
        match (&from_snapshot, &through_raft) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{t:?}"),
            (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{t:?}"),
            _ => panic!("{t:?}: snapshot {from_snapshot:?} vs write path {through_raft:?}"),
        }
    }
    // Any other operation is not the reader's to answer.
    let with_put = TxnRequest {
        success: vec![RequestOp::Put(put_req(b"a", b"3"))],
        ..Default::default()
    };
    assert!(s.m().reader().txn_read_only(&with_put).unwrap().is_none());
    let nested = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest::default())],
        ..Default::default()
    };
    assert!(s.m().reader().txn_read_only(&nested).unwrap().is_none());
}

/// What every reader can see of a store: the hash, ranges at and after the compacted revision,
/// the history from it (prev_kv included).
fn visible(s: &Store, c: i64) -> (u32, Vec<RangeResult>, Vec<retcd_engine::mvcc::Event>) {
    let reader = s.m().reader();
    let h = reader.hash_kv(0).unwrap();
    assert_eq!(h.compact_revision, c);
    let hash = h.hash;
    let ranges = [c, (c + 1).min(s.rev()), s.rev()]
        .into_iter()
        .map(|rev| s.range(&at_rev(rev, all())).unwrap())
        .collect();
    let history = reader
        .history(c, i64::MAX, usize::MAX, usize::MAX, true)
        .unwrap()
        .events;
    (hash, ranges, history)
}

#[test]
fn compaction_is_visible_at_once_and_deleted_in_bounded_batches() {
    let mut s = Store::new();
    let hot = 2500;
    for i in 0..hot {
        s.put(b"a", format!("{i}").as_bytes());
    }
    for i in 0..1000 {
        s.put(format!("k{i:04}").as_bytes(), b"v");
    }
    for i in 0..500 {
        s.delete(format!("k{i:04}").as_bytes(), b"", false);
    }
    // A tombstone at exactly the compacted revision (history drops it, prev_kv included).
    s.put(b"t", b"1");
    s.delete(b"t", b"", false);
    let c = s.rev();
    for i in 0..5 {
        s.put(b"a", format!("after {i}").as_bytes());
    }
    let before = s.range(&at_rev(c, all())).unwrap();

    // The apply only schedules: reads below C fail at once, nothing else a reader sees differs
    // from a finished compaction.
    s.compact(c).unwrap();
    assert!(s.m().compaction_pending());
    assert!(matches!(
        s.range(&at_rev(c - 1, all())),
        Err(MvccError::Compacted)
    ));
    assert_eq!(s.range(&at_rev(c, all())).unwrap(), before);
    let seen = visible(&s, c);
    assert!(
        !seen.2.iter().any(|e| e.kv.mod_revision == c),
        "the tombstone at C is gone for history"
    );
    assert_eq!(seen.2.len(), 5, "only the puts after C");

    // Deletion: bounded batches, each invisible to readers; a restart in the middle resumes.
    let dropped = (hot - 1) + 2 * 500 + 2;
    let mut deleted = 0;
    let mut batches = 0;
    for _ in 0..2 {
        let step = s.mm().compact_step().unwrap();
        assert!(step.deleted <= COMPACTION_BATCH, "{step:?}");
        assert!(!step.finished);
        deleted += step.deleted;
        batches += 1;
        assert_eq!(visible(&s, c), seen);
    }
    s.restart();
    assert!(s.m().compaction_pending(), "resumed after a restart");
    assert_eq!(visible(&s, c), seen);
    while s.m().compaction_pending() {
        let step = s.mm().compact_step().unwrap();
        assert!(step.deleted <= COMPACTION_BATCH && step.visited <= COMPACTION_BATCH);
        deleted += step.deleted;
        batches += 1;
        assert!(batches < 100, "a compaction that does not end");
        assert_eq!(visible(&s, c), seen);
    }
    assert_eq!(deleted, dropped);
    assert!(
        batches >= dropped.div_ceil(COMPACTION_BATCH),
        "{batches} batches"
    );

    // A second compaction while one is pending merges with it; reads stay exact throughout.
    for i in 0..3 {
        s.put(b"a", format!("more {i}").as_bytes());
    }
    let c2 = s.rev() - 1;
    s.compact(c2).unwrap();
    s.mm().compact_step().unwrap();
    let c3 = s.rev();
    s.delete(b"k0999", b"", false);
    let c3 = c3.max(s.rev());
    let seen3_before = s.range(&at_rev(c3, all())).unwrap();
    s.compact(c3).unwrap();
    let seen3 = visible(&s, c3);
    assert_eq!(seen3.1[0], seen3_before);
    s.finish_compaction();
    assert_eq!(visible(&s, c3), seen3);

    // Physically: the newest version of each live key, nothing else.
    s.mm().sync().unwrap();
    let path = db_path(s.dir.path());
    drop(s.m.take());
    let (versions, revlog) = physical_versions(&path);
    assert_eq!(versions.len(), 1 + 499, "{versions:?}");
    assert_eq!(revlog, versions.len());
    assert!(versions.contains(&(b"a".to_vec(), c2 + 1)));
    s.crash();
    assert!(!s.m().compaction_pending());
}

/// A Raft snapshot's state goes in through bounded transactions built beside the published tree
/// (DESIGN.md §4.7): the largest commit of an install stays within one batch whatever the size
/// of the state (before, the whole state was one transaction: every page of the new tree in one
/// commit); readers see the old state until the switch and the whole new one after it; a copy
/// that does not reach the snapshot's index is refused with the old state untouched and no page
/// lost; this member's identity is kept.
#[test]
fn a_snapshot_installs_in_bounded_transactions() {
    use retcd_engine::mvcc::INSTALL_BATCH_BYTES;
    const PAGE: u64 = 4096;
    let mut src = Store::new();
    let value = vec![b'v'; 1000];
    for t in 0..60 {
        src.txn(TxnRequest {
            compare: Vec::new(),
            success: (0..500)
                .map(|i| {
                    RequestOp::Put(put_req(format!("key{:06}", t * 500 + i).as_bytes(), &value))
                })
                .collect(),
            failure: Vec::new(),
        })
        .unwrap();
    }
    src.put(b"zz", b"last");
    src.compact(src.rev() - 1).unwrap();
    let entries = common::state_entries(src.m());
    let index = src.m().applied().0;

    let mut dst = Store::new();
    dst.mm().set_local_identity(7, 9).unwrap();
    dst.put(b"old", b"state");
    let old_hash = dst.m().reader().hash_kv(0).unwrap();
    let old_applied = dst.m().applied();

    // Stopping short of `m applied` ('k' < 'm' < 'r'): refused, nothing changed, nothing lost.
    let half = entries[..entries.len() / 3].to_vec();
    assert!(
        dst.mm()
            .install(half.into_iter().map(Ok::<_, String>), index)
            .is_err()
    );
    assert_eq!(dst.m().reader().hash_kv(0).unwrap(), old_hash);
    assert_eq!(dst.m().applied(), old_applied);
    assert_eq!(dst.get(b"old").unwrap().value, b"state");
    let a = dst.m().audit().unwrap();
    assert!(a.leaked.is_empty() && a.twice.is_empty(), "{a:?}");

    // A reader in the middle of the old state keeps reading it, whatever the install does.
    let before = dst.m().reader().state_snapshot();
    dst.mm().take_largest_commit_pages();
    dst.mm()
        .install(entries.into_iter().map(Ok::<_, String>), index)
        .unwrap();
    let largest = dst.mm().take_largest_commit_pages();
    let a = dst.m().audit().unwrap();
    assert!(a.leaked.is_empty() && a.twice.is_empty(), "{a:?}");
    // A batch's entries fill its pages at least half (none is larger than half a page).
    let bound = 2 * INSTALL_BATCH_BYTES as u64 / PAGE + 16;
    assert!(
        largest <= bound,
        "an install commit wrote {largest} pages (bound {bound})"
    );
    assert!(
        a.reachable > 3 * bound,
        "the state ({} pages) is too small to show the bound",
        a.reachable
    );
    eprintln!(
        "snapshot install: largest commit {largest} pages of a {}-page tree",
        a.reachable
    );
    let old_entries = before.chunk(None, 1 << 20).unwrap();
    assert!(old_entries.iter().any(|(k, _)| k.starts_with(b"kold\0\0")));
    assert!(!old_entries.iter().any(|(k, _)| k.starts_with(b"kkey")));
    drop(before);

    assert_eq!(dst.m().applied(), src.m().applied());
    assert_eq!(
        (dst.m().revision(), dst.m().compacted()),
        (src.m().revision(), src.m().compacted())
    );
    assert_eq!(
        dst.m().reader().hash_kv(0).unwrap(),
        src.m().reader().hash_kv(0).unwrap()
    );
    assert!(dst.get(b"old").is_none());
    assert_eq!(dst.get(b"zz").unwrap().value, b"last");
    assert_eq!(dst.m().local_identity().unwrap(), Some((7, 9)));
    dst.restart();
    assert_eq!(
        dst.m().reader().hash_kv(0).unwrap(),
        src.m().reader().hash_kv(0).unwrap()
    );
    assert_eq!(dst.m().local_identity().unwrap(), Some((7, 9)));
    let a = dst.m().audit().unwrap();
    assert!(a.leaked.is_empty() && a.twice.is_empty(), "{a:?}");
}

/// HashKV is etcd's (DESIGN.md §4.10): the numbers are what a real etcd 3.4.23 answered
/// (`etcdctl endpoint hashkv --rev N`) for the same history — puts, an overwrite, a delete, a
/// txn of two puts, compactions (physical) at 4 and 5, a delete of every key (etcd's empty
/// `keep` set) — and they hold whatever part of a compaction's deletion has run.
#[test]
fn hash_kv_is_etcds() {
    use retcd_engine::etcd_keys::{BucketRevision, decode_key_value, decode_revision_key};
    const EMPTY: u32 = 1084519789; // CRC-32C of "key": no version hashed
    let mut s = Store::new();
    let hash = |s: &Store, rev: i64| s.m().reader().hash_kv(rev).map(|h| h.hash);
    assert_eq!(hash(&s, 0).unwrap(), EMPTY);
    assert_eq!(hash(&s, 1).unwrap(), EMPTY);
    assert!(matches!(hash(&s, 2), Err(MvccError::FutureRev)));

    s.put(b"foo", b"bar1");
    s.put(b"foo", b"bar2");
    s.put(b"k2", b"v");
    s.delete(b"k2", b"", false);
    s.txn(txn_of(vec![op_put(b"x", b"1"), op_put(b"y", b"2")]))
        .unwrap();
    s.put(b"foo", b"bar3");
    assert_eq!(s.rev(), 7);
    let before = [
        (0, 1927598384),
        (1, EMPTY),
        (2, 2287484849),
        (3, 562156679),
        (4, 4001193409),
        (5, 1768164782),
        (6, 3473710722),
        (7, 1927598384),
    ];
    for (rev, want) in before {
        let h = s.m().reader().hash_kv(rev).unwrap();
        assert_eq!(h.hash, want, "rev {rev}");
        assert_eq!((h.compact_revision, h.revision), (-1, 7));
        assert_eq!(h.hash_revision, if rev == 0 { 7 } else { rev });
    }
    // A negative revision hashes nothing (etcd: no error, no version ≤ it).
    assert_eq!(hash(&s, -1).unwrap(), EMPTY);

    // Compaction at 4: 3.4.23 refuses HashKV at the compacted revision itself.
    s.compact(4).unwrap();
    let at4 = [(5, 3019180641), (6, 1807504253), (7, 886791669)];
    let check = |s: &Store, c: i64, want: &[(i64, u32)]| {
        assert!(matches!(hash(s, c), Err(MvccError::Compacted)));
        assert!(matches!(hash(s, c - 1), Err(MvccError::Compacted)));
        for &(rev, h) in want {
            assert_eq!(hash(s, rev).unwrap(), h, "rev {rev}, compacted {c}");
            assert_eq!(s.m().reader().hash_kv(rev).unwrap().compact_revision, c);
        }
    };
    check(&s, 4, &at4); // pending: nothing deleted yet
    s.finish_compaction();
    check(&s, 4, &at4);

    // The key bucket a snapshot of this state carries: what etcd's holds after the compaction.
    let bucket: Vec<_> = s
        .m()
        .reader()
        .state_snapshot()
        .etcd_key_bucket()
        .map(|e| e.unwrap())
        .collect();
    let rev = |main, sub, tombstone| BucketRevision {
        main,
        sub,
        tombstone,
    };
    let want = [
        (rev(3, 0, false), kv(b"foo", b"bar2", 2, 3, 2)),
        (rev(4, 0, false), kv(b"k2", b"v", 4, 4, 1)),
        (
            rev(5, 0, true),
            KeyValue {
                key: b"k2".to_vec(),
                ..KeyValue::default()
            },
        ),
        (rev(6, 0, false), kv(b"x", b"1", 6, 6, 1)),
        (rev(6, 1, false), kv(b"y", b"2", 6, 6, 1)),
        (rev(7, 0, false), kv(b"foo", b"bar3", 2, 7, 3)),
    ];
    assert_eq!(bucket.len(), want.len(), "{bucket:?}");
    for (e, (r, kv)) in bucket.iter().zip(want) {
        assert_eq!(e.revision, r);
        assert_eq!(decode_revision_key(&e.key).unwrap(), r);
        assert_eq!(decode_key_value(&e.value).unwrap(), kv);
    }

    // Every key deleted at 8 (foo, x, y in key order): at 8 etcd's `keep` is empty, so the
    // versions ≤ 4 it still holds are hashed although deleted since.
    assert_eq!(s.delete(b"\0", b"\0", false).deleted, 3);
    check(&s, 4, &[(5, 3019180641), (7, 886791669), (8, 213138666)]);
    s.compact(5).unwrap();
    let at5 = [(6, 3325400351), (7, 3241706157), (8, 4117162611)];
    check(&s, 5, &at5);
    s.mm().compact_step().unwrap();
    check(&s, 5, &at5);
    s.finish_compaction();
    check(&s, 5, &at5);
    s.put(b"z", b"1");
    check(&s, 5, &[(8, 4117162611), (9, 249331255), (0, 249331255)]);
    s.restart();
    check(&s, 5, &[(8, 4117162611), (9, 249331255)]);
}

/// etcd 3.4.23's `key` bucket and HashKV taken literally (reference bbolt-etcd-formats.md §2.2,
/// §4): every change written to the bucket, compaction deleting from it, the hash reading it with
/// an explicit `keep` set. The streaming hash (no `keep` set, compaction's deletion in batches)
/// is checked against it.
struct EtcdModel {
    rev: i64,
    compacted: i64,
    /// Every change ever, for etcd's in-memory index: (main, sub) → (key, tombstone).
    index: BTreeMap<(i64, i64), (Vec<u8>, bool)>,
    /// Revision key → KeyValue bytes, as bbolt orders them.
    bucket: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Live keys: (create revision, version).
    live: BTreeMap<Vec<u8>, (i64, i64)>,
}

impl EtcdModel {
    fn new() -> EtcdModel {
        EtcdModel {
            rev: 1,
            compacted: -1,
            index: BTreeMap::new(),
            bucket: BTreeMap::new(),
            live: BTreeMap::new(),
        }
    }

    /// One request's changes (`None`: delete); deletes of keys not live change nothing, and a
    /// request that changes nothing takes no revision.
    fn write(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        use retcd_engine::etcd_keys::{
            BucketRevision, KeyValueRef, encode_key_value, revision_key,
        };
        let main = self.rev + 1;
        let mut sub = 0;
        for (key, value) in changes {
            let tombstone = value.is_none();
            let mut v = Vec::new();
            match value {
                Some(value) => {
                    let (create, version) =
                        self.live.get(key).map_or((main, 1), |l| (l.0, l.1 + 1));
                    self.live.insert(key.clone(), (create, version));
                    let kv = KeyValueRef {
                        key,
                        create_revision: create,
                        mod_revision: main,
                        version,
                        value,
                        lease: 0,
                    };
                    encode_key_value(kv, &mut v);
                }
                None => {
                    if self.live.remove(key).is_none() {
                        continue;
                    }
                    encode_key_value(KeyValueRef::tombstone(key), &mut v);
                }
            }
            let r = BucketRevision {
                main,
                sub,
                tombstone,
            };
            self.bucket.insert(revision_key(r), v);
            self.index.insert((main, sub), (key.clone(), tombstone));
            sub += 1;
        }
        if sub > 0 {
            self.rev = main;
        }
    }

    /// Each key's newest change at or below `rev`: (main, sub) → tombstone.
    fn newest(&self, rev: i64) -> BTreeMap<(i64, i64), bool> {
        let mut by_key: BTreeMap<&[u8], ((i64, i64), bool)> = BTreeMap::new();
        for (&r, (k, t)) in self.index.range(..(rev + 1, 0)) {
            by_key.insert(k, (r, *t));
        }
        by_key.into_values().collect()
    }

    /// etcd's compaction, physically at once.
    fn compact(&mut self, c: i64) {
        use retcd_engine::etcd_keys::decode_revision_key;
        let kept: Vec<(i64, i64)> = self
            .newest(c)
            .into_iter()
            .filter(|(_, tomb)| !tomb)
            .map(|(r, _)| r)
            .collect();
        self.bucket.retain(|k, _| {
            let r = decode_revision_key(k).unwrap();
            r.main > c || kept.contains(&(r.main, r.sub))
        });
        self.compacted = c;
    }

    fn hash_kv(&self, rev: i64) -> Result<u32, &'static str> {
        use retcd_engine::etcd_keys::decode_revision_key;
        if rev > 0 && rev <= self.compacted {
            return Err("compacted");
        }
        if rev > self.rev {
            return Err("future");
        }
        let rev = if rev == 0 { self.rev } else { rev };
        let keep: Vec<(i64, i64)> = self
            .newest(rev)
            .into_iter()
            .filter(|(_, tomb)| !tomb)
            .map(|(r, _)| r)
            .collect();
        let mut h = crc32c::crc32c(b"key");
        for (k, v) in &self.bucket {
            let r = decode_revision_key(k).unwrap();
            if r.main > rev
                || (r.main <= self.compacted
                    && !keep.is_empty()
                    && !keep.contains(&(r.main, r.sub)))
            {
                continue;
            }
            h = crc32c::crc32c_append(h, k);
            h = crc32c::crc32c_append(h, v);
        }
        Ok(h)
    }
}

/// Random histories (puts, single and range deletes, txns of several changes, compactions whose
/// deletion runs in random batches): at each step the store's HashKV at a spread of revisions
/// equals the literal model's, and its key bucket equals the model's bucket once no compaction
/// is pending.
#[test]
fn hash_kv_matches_etcds_algorithm_on_random_histories() {
    use retcd_engine::etcd_keys::decode_revision_key;
    let keys: [&[u8]; 6] = [b"a", b"a\0", b"b", b"ba", b"c", b"\xff"];
    for seed in 1..=6u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut s = Store::new();
        let mut m = EtcdModel::new();
        for step in 0..150 {
            let key = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize].to_vec();
            let value = |rng: &mut Rng| {
                let n = rng.below(3);
                (0..n)
                    .map(|_| b'0' + rng.below(10) as u8)
                    .collect::<Vec<u8>>()
            };
            match rng.below(10) {
                0..=3 => {
                    let (k, v) = (key(&mut rng), value(&mut rng));
                    s.put(&k, &v);
                    m.write(&[(k, Some(v))]);
                }
                4 | 5 => {
                    let k = key(&mut rng);
                    s.delete(&k, b"", false);
                    m.write(&[(k, None)]);
                }
                6 => {
                    // [a, b): every live key in it, in key order.
                    let (a, b) = (key(&mut rng), key(&mut rng));
                    let (a, b) = if a <= b { (a, b) } else { (b, a) };
                    s.delete(&a, &b, false);
                    let doomed: Vec<_> = m
                        .live
                        .keys()
                        .filter(|k| **k >= a && **k < b)
                        .map(|k| (k.clone(), None))
                        .collect();
                    m.write(&doomed);
                }
                7 => {
                    // Distinct keys (etcd refuses a txn writing a key twice).
                    let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
                    for _ in 0..3 {
                        let k = key(&mut rng);
                        if changes.iter().all(|(c, _)| *c != k) {
                            let v = (rng.below(4) != 0).then(|| value(&mut rng));
                            changes.push((k, v));
                        }
                    }
                    let ops = changes
                        .iter()
                        .map(|(k, v)| match v {
                            Some(v) => op_put(k, v),
                            None => op_del(k, b""),
                        })
                        .collect();
                    s.txn(txn_of(ops)).unwrap();
                    m.write(&changes);
                }
                8 if m.rev > m.compacted.max(1) => {
                    let c = m.compacted.max(1)
                        + 1
                        + rng.below((m.rev - m.compacted.max(1)) as u64) as i64;
                    s.compact(c).unwrap();
                    m.compact(c);
                }
                _ => {
                    if s.m().compaction_pending() {
                        s.mm().compact_step().unwrap();
                    }
                }
            }
            assert_eq!(s.rev(), m.rev, "seed {seed} step {step}");
            let mut revs = vec![0, -1, 1, m.compacted, m.compacted + 1, m.rev, m.rev + 1];
            revs.extend((0..3).map(|_| rng.below(m.rev as u64 + 2) as i64));
            for rev in revs {
                let got = s.m().reader().hash_kv(rev).map(|h| {
                    assert_eq!(h.compact_revision, m.compacted);
                    h.hash
                });
                let got = got.map_err(|e| match e {
                    MvccError::Compacted => "compacted",
                    MvccError::FutureRev => "future",
                    other => panic!("{other}"),
                });
                assert_eq!(got, m.hash_kv(rev), "seed {seed} step {step} rev {rev}");
            }
            if !s.m().compaction_pending() || rng.below(4) == 0 {
                let bucket: Vec<(Vec<u8>, Vec<u8>)> = s
                    .m()
                    .reader()
                    .state_snapshot()
                    .etcd_key_bucket()
                    .map(|e| {
                        let e = e.unwrap();
                        assert_eq!(decode_revision_key(&e.key).unwrap(), e.revision);
                        (e.key, e.value)
                    })
                    .collect();
                let want: Vec<_> = m.bucket.clone().into_iter().collect();
                assert_eq!(bucket, want, "seed {seed} step {step}: key bucket");
            }
        }
    }
}

/// etcd's alarms: raised and cleared through the log, kept across a restart, and applied as
/// etcd's capped (NOSPACE) and corrupt (CORRUPT) appliers refuse writes.
#[test]
fn alarms_refuse_writes_and_survive_a_restart() {
    use retcd_engine::mvcc::{ALARM_CORRUPT, ALARM_NOSPACE, Alarm};
    use retcd_engine::request::{AlarmRequest, LeaseGrantRequest, LeaseRevokeRequest};
    let alarm = |activate: bool, member_id: u64, alarm: i32| {
        Request::Alarm(AlarmRequest {
            activate,
            member_id,
            alarm,
        })
    };
    let changed = |r: Result<WriteResult, MvccError>| match r.unwrap() {
        WriteResult::Alarm { alarm, changed, .. } => {
            assert!(alarm.is_some() || !changed);
            alarm.filter(|_| changed)
        }
        other => panic!("{other:?}"),
    };
    let mut s = Store::new();
    s.put(b"a", b"1");
    s.apply(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }))
        .unwrap();
    let nospace = Alarm {
        member_id: 5,
        alarm: ALARM_NOSPACE,
    };
    assert_eq!(
        changed(s.apply(alarm(true, 5, ALARM_NOSPACE))),
        Some(nospace)
    );
    // Raised already; NONE is never raised.
    assert_eq!(changed(s.apply(alarm(true, 5, ALARM_NOSPACE))), None);
    assert_eq!(changed(s.apply(alarm(true, 5, 0))), None);
    let rev = s.m().revision();
    assert!(matches!(
        s.put_with(put_req(b"b", b"1")),
        Err(MvccError::NoSpace)
    ));
    let put_in_failure = TxnRequest {
        compare: vec![],
        success: vec![],
        failure: vec![RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Put(put_req(b"c", b"1"))],
            failure: vec![],
        })],
    };
    assert!(matches!(s.txn(put_in_failure), Err(MvccError::NoSpace)));
    assert!(matches!(
        s.apply(Request::LeaseGrant(LeaseGrantRequest { id: 8, ttl: 60 })),
        Err(MvccError::NoSpace)
    ));
    assert_eq!(s.m().revision(), rev);
    // What frees space goes on.
    s.delete(b"a", b"", false);
    s.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
        .unwrap();
    s.restart();
    assert_eq!(s.m().alarms(), vec![nospace]);
    assert!(matches!(
        s.put_with(put_req(b"b", b"1")),
        Err(MvccError::NoSpace)
    ));
    assert_eq!(
        changed(s.apply(alarm(false, 5, ALARM_NOSPACE))),
        Some(nospace)
    );
    assert_eq!(changed(s.apply(alarm(false, 5, ALARM_NOSPACE))), None);
    s.put(b"b", b"1");
    // CORRUPT refuses every write, deletes too.
    assert!(changed(s.apply(alarm(true, 0, ALARM_CORRUPT))).is_some());
    let rev = s.m().revision();
    assert!(matches!(
        s.apply(Request::DeleteRange(del_req(b"b", b"", false))),
        Err(MvccError::Corrupt)
    ));
    s.restart();
    assert_eq!(
        s.m().alarms(),
        vec![Alarm {
            member_id: 0,
            alarm: ALARM_CORRUPT
        }]
    );
    assert!(matches!(
        s.put_with(put_req(b"b", b"2")),
        Err(MvccError::Corrupt)
    ));
    assert_eq!(s.m().revision(), rev);
    assert!(changed(s.apply(alarm(false, 0, ALARM_CORRUPT))).is_some());
    s.put(b"b", b"2");
    assert!(s.m().alarms().is_empty());
}

/// The compaction hash, taken on the state right after a compaction applied, is the HashKV the
/// same revision had before it (what etcd's compact hash check compares between members).
#[test]
fn the_compaction_hash_is_the_hash_before_the_compaction() {
    let mut s = Store::new();
    for i in 0..50u32 {
        s.put(format!("k{}", i % 7).as_bytes(), &i.to_le_bytes());
        if i % 11 == 0 {
            s.delete(format!("k{}", i % 5).as_bytes(), b"", false);
        }
    }
    // HashKV at `rev` before the compaction to it, and the compaction hash after it.
    let compact = |s: &mut Store, rev: i64, previous: i64| {
        let before = s.m().reader().hash_kv(rev).unwrap();
        s.apply(Request::Compact(CompactRequest {
            revision: rev,
            physical: false,
        }))
        .unwrap();
        let snap = s.m().reader().state_snapshot();
        let after = snap.compaction_hash(rev, previous).unwrap();
        assert_eq!(
            (after.hash, after.compact_revision),
            (before.hash, previous)
        );
    };
    let first = s.m().revision() - 20;
    compact(&mut s, first, -1);
    // Once more, from a compacted state, with part of the first compaction's deletion done.
    s.mm().compact_step().unwrap();
    for i in 0..10u32 {
        s.put(b"k1", &i.to_le_bytes());
    }
    let second = s.m().revision() - 3;
    compact(&mut s, second, first);
}
