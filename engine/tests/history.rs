//! `MvccReader::history`: the `r` log read back as watch events must equal the events the apply
//! produced (the live watch feed), prev_kv included, and respect compaction.

use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::{Applied, Event, EventKind, Mvcc, MvccError};
use retcd_engine::request::{
    CompactRequest, DeleteRangeRequest, PutRequest, Request, RequestOp, TxnRequest,
};

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    })
}

fn apply(m: &mut Mvcc, index: &mut u64, req: Request, events: &mut Vec<Event>) {
    *index += 1;
    let res = m
        .apply_with_events(
            &[Applied {
                index: *index,
                term: 1,
                request: Some(&req),
                caller: None,
                membership: None,
            }],
            events,
        )
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
}

#[test]
fn history_equals_the_live_events_and_honours_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mvcc::open(&StoreOptions::new(dir.path().join("db"))).unwrap();
    let reader = m.reader();
    let mut index = 0;
    let mut live = Vec::new();
    apply(&mut m, &mut index, put("a", "1"), &mut live); // 2
    apply(&mut m, &mut index, put("b", "1"), &mut live); // 3
    apply(&mut m, &mut index, put("a", "2"), &mut live); // 4
    let txn = Request::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"c".to_vec(),
                value: b"1".to_vec(),
                ..PutRequest::default()
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                ..DeleteRangeRequest::default()
            }),
        ],
        ..TxnRequest::default()
    });
    apply(&mut m, &mut index, txn, &mut live); // 5: c put, a deleted
    apply(&mut m, &mut index, put("a", "3"), &mut live); // 6: a re-created
    apply(&mut m, &mut index, put("k\0x", "1"), &mut live); // 7: a key with a zero byte
    assert_eq!(live.len(), 7);

    let h = reader
        .history(1, i64::MAX, usize::MAX, usize::MAX, true)
        .unwrap();
    assert_eq!(h.events, live);
    assert_eq!((h.next_rev, h.revision), (8, 7));
    assert_eq!(live[4].kind, EventKind::Delete);
    assert_eq!(live[4].prev_kv.as_ref().unwrap().value, b"2");
    assert!(live[5].prev_kv.is_none(), "a re-created key has no prev_kv");

    // Without prev_kv; a revision is never split by max_events.
    let h = reader.history(4, i64::MAX, 2, usize::MAX, false).unwrap();
    let revs: Vec<i64> = h.events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, vec![4, 5, 5]);
    assert_eq!(h.next_rev, 6);
    assert!(h.events.iter().all(|e| e.prev_kv.is_none()));
    let h = reader.history(6, 6, 100, usize::MAX, false).unwrap();
    assert_eq!(h.events, {
        let mut e = live[5].clone();
        e.prev_kv = None;
        vec![e]
    });
    assert_eq!(h.next_rev, 7);
    // The byte budget stops after the revision that reaches it.
    let h = reader.history(2, i64::MAX, 100, 1, false).unwrap();
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.next_rev, 3);
    // Nothing after the current revision.
    let h = reader.history(8, i64::MAX, 100, usize::MAX, true).unwrap();
    assert!(h.events.is_empty());
    assert_eq!(h.next_rev, 8);

    apply(
        &mut m,
        &mut index,
        Request::Compact(CompactRequest {
            revision: 5,
            ..CompactRequest::default()
        }),
        &mut live,
    );
    assert!(matches!(
        reader.history(4, i64::MAX, 100, usize::MAX, true),
        Err(MvccError::Compacted)
    ));
    // From the compacted revision on (etcd: only `minRev < compactRev` is compacted): the put of
    // `c` at 5 survives, the tombstone of `a` at 5 does not.
    let h = reader.history(5, i64::MAX, 100, usize::MAX, true).unwrap();
    let got: Vec<(Vec<u8>, i64)> = h
        .events
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"c".to_vec(), 5),
            (b"a".to_vec(), 6),
            (b"k\0x".to_vec(), 7)
        ]
    );
    assert_eq!(h.compacted, 5);
}
