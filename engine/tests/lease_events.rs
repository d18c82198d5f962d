//! MVCC leases (grant, attach, revoke, checkpoint) and the change events apply emits for watchers.

use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::{Applied, Event, EventKind, KeyValue, Mvcc, MvccError, WriteResult};
use retcd_engine::request::{
    DeleteRangeRequest, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, Request, RequestOp, TxnRequest,
};

struct Store {
    _dir: tempfile::TempDir,
    m: Mvcc,
    index: u64,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let m = Mvcc::open(&StoreOptions::new(dir.path().join("db"))).unwrap();
        Store {
            _dir: dir,
            m,
            index: 0,
        }
    }
    fn apply(&mut self, req: Request) -> (Result<WriteResult, MvccError>, Vec<Event>) {
        self.index += 1;
        let mut events = Vec::new();
        let mut r = self
            .m
            .apply_with_events(
                &[Applied {
                    index: self.index,
                    term: 1,
                    request: Some(&req),
                    caller: None,
                    membership: None,
                }],
                &mut events,
            )
            .unwrap();
        (r.pop().unwrap(), events)
    }
    fn try_put(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
    ) -> (Result<WriteResult, MvccError>, Vec<Event>) {
        self.apply(Request::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        }))
    }
    /// A put that must succeed; returns its events.
    fn put(&mut self, key: &str, value: &str, lease: i64) -> Vec<Event> {
        let (r, ev) = self.try_put(key, value, lease);
        r.unwrap();
        ev
    }
    fn get(&self, key: &str) -> Option<KeyValue> {
        let r = self
            .m
            .reader()
            .range(&RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .unwrap();
        r.kvs.into_iter().next()
    }
}

fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        value: value.into(),
        lease,
    }
}

#[test]
fn put_and_delete_events_carry_prev_kv() {
    let mut s = Store::new();
    let ev = s.put("a", "1", 0);
    assert_eq!(
        ev,
        vec![Event {
            kind: EventKind::Put,
            kv: kv("a", "1", 2, 2, 1, 0),
            prev_kv: None
        }]
    );
    let ev = s.put("a", "2", 0);
    assert_eq!(
        ev,
        vec![Event {
            kind: EventKind::Put,
            kv: kv("a", "2", 2, 3, 2, 0),
            prev_kv: Some(kv("a", "1", 2, 2, 1, 0))
        }]
    );
    s.put("b", "x", 0);
    let (r, ev) = s.apply(Request::DeleteRange(DeleteRangeRequest {
        key: "a".into(),
        range_end: "c".into(),
        prev_kv: false,
    }));
    r.unwrap();
    assert_eq!(
        ev,
        vec![
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: "a".into(),
                    mod_revision: 5,
                    ..Default::default()
                },
                prev_kv: Some(kv("a", "2", 2, 3, 2, 0)),
            },
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: "b".into(),
                    mod_revision: 5,
                    ..Default::default()
                },
                prev_kv: Some(kv("b", "x", 4, 4, 1, 0)),
            },
        ]
    );
    // Nothing deleted, nothing emitted; a failed request emits nothing either.
    let (r, ev) = s.apply(Request::DeleteRange(DeleteRangeRequest {
        key: "zz".into(),
        ..Default::default()
    }));
    r.unwrap();
    assert!(ev.is_empty());
    let (r, ev) = s.try_put("c", "1", 77);
    assert!(matches!(r, Err(MvccError::LeaseNotFound)));
    assert!(ev.is_empty());
}

#[test]
fn txn_events_share_one_revision_in_order() {
    let mut s = Store::new();
    let put = |k: &str| {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    };
    let (r, ev) = s.apply(Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![put("x"), put("y")],
        failure: vec![],
    }));
    r.unwrap();
    assert_eq!(
        ev.iter()
            .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
            .collect::<Vec<_>>(),
        vec![(b"x".to_vec(), 2), (b"y".to_vec(), 2)]
    );
}

#[test]
fn leases_attach_keys_and_revoke_deletes_them_in_one_revision() {
    let mut s = Store::new();
    let (r, _) = s.apply(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 30 }));
    assert_eq!(
        r.unwrap(),
        WriteResult::LeaseGrant {
            revision: 1,
            id: 7,
            ttl: 30
        }
    );
    let (r, _) = s.apply(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 30 }));
    assert!(matches!(r, Err(MvccError::LeaseExist)));
    s.put("a", "1", 7);
    s.put("b", "1", 7);
    s.put("c", "1", 0);
    // Moving a key to no lease detaches it.
    s.put("b", "2", 0);
    assert_eq!(s.m.reader().lease_keys(7).unwrap(), vec![b"a".to_vec()]);
    s.put("d", "1", 7);
    assert_eq!(s.get("d").unwrap().lease, 7);
    assert_eq!(
        s.m.reader().lease_keys(7).unwrap(),
        vec![b"a".to_vec(), b"d".to_vec()]
    );
    let rev = s.m.revision();
    let (r, ev) = s.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
    assert_eq!(r.unwrap(), WriteResult::LeaseRevoke { revision: rev + 1 });
    assert_eq!(ev.len(), 2);
    assert!(
        ev.iter()
            .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == rev + 1)
    );
    assert!(s.get("a").is_none() && s.get("d").is_none());
    assert_eq!(s.get("c").unwrap().value, b"1");
    assert_eq!(s.m.reader().lease(7).unwrap(), None);
    assert!(s.m.reader().lease_keys(7).unwrap().is_empty());
    let (r, _) = s.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
    assert!(matches!(r, Err(MvccError::LeaseNotFound)));
    // A lease without keys is revoked without a new revision.
    s.apply(Request::LeaseGrant(LeaseGrantRequest { id: 8, ttl: 5 }))
        .0
        .unwrap();
    let rev = s.m.revision();
    let (r, ev) = s.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 8 }));
    assert_eq!(r.unwrap(), WriteResult::LeaseRevoke { revision: rev });
    assert!(ev.is_empty());
}

#[test]
fn checkpoints_persist_remaining_ttl_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path().join("db"));
    let mut m = Mvcc::open(&opts).unwrap();
    let reqs = [
        Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 100 }),
        Request::LeaseGrant(LeaseGrantRequest { id: 2, ttl: 10 }),
        Request::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![(1, 42), (99, 5)],
        }),
    ];
    let entries: Vec<Applied<'_>> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| Applied {
            index: i as u64 + 1,
            term: 1,
            request: Some(r),
            caller: None,
            membership: None,
        })
        .collect();
    m.apply(&entries).unwrap();
    m.sync().unwrap();
    drop(m);
    let m = Mvcc::open(&opts).unwrap();
    let leases = m.leases().unwrap();
    assert_eq!(leases.len(), 2);
    assert_eq!(
        (leases[0].id, leases[0].ttl, leases[0].remaining),
        (1, 100, 42)
    );
    assert_eq!(
        (leases[1].id, leases[1].ttl, leases[1].remaining),
        (2, 10, 0)
    );
}
