//! `etcd_db::SnapshotSource` end to end in the engine: a store with keys, leases, users and roles
//! plus extras (members with a learner, a removed member, an alarm, the cluster version) is
//! written as an etcd db, read back with `bbolt::Db`, and every bucket decodes to what went in;
//! writes applied after the snapshot was taken do not reach the file (one committed version).

mod common;

use common::store_options;
use retcd_engine::bbolt::{self, Db, Trailer};
use retcd_engine::etcd_db::{self, Alarm, Extras, Member, SnapshotSource};
use retcd_engine::mvcc::{Applied, Mvcc};
use retcd_engine::request::{
    AuthRequest, LeaseGrantRequest, PermKind, Permission, PutRequest, Request,
};

fn apply(m: &mut Mvcc, index: &mut u64, requests: &[Request]) {
    let entries: Vec<Applied<'_>> = requests
        .iter()
        .map(|r| {
            *index += 1;
            Applied {
                index: *index,
                term: 3,
                request: Some(r),
                caller: None,
                membership: None,
            }
        })
        .collect();
    for r in m.apply(&entries).unwrap() {
        r.unwrap();
    }
}

fn put(key: &str, value: &str, lease: i64) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    })
}

fn extras() -> Extras {
    Extras {
        members: vec![
            Member {
                id: 0xfec7_1109_dc5d_3505,
                peer_urls: vec!["http://10.0.0.1:2380".into()],
                is_learner: false,
                name: "a".into(),
                client_urls: vec!["http://10.0.0.1:2379".into()],
            },
            Member {
                id: 0x12,
                peer_urls: vec!["http://10.0.0.2:2380".into()],
                is_learner: true,
                name: String::new(),
                client_urls: vec![],
            },
        ],
        removed: vec![0x99, 0x5],
        alarms: vec![Alarm {
            member_id: 0x12,
            alarm: etcd_db::ALARM_NOSPACE,
        }],
        cluster_version: Some("3.5.0".into()),
    }
}

#[test]
fn every_bucket_decodes_to_the_state_and_extras_of_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mvcc::open(&store_options(dir.path())).unwrap();
    let mut index = 0;
    apply(
        &mut m,
        &mut index,
        &[
            Request::LeaseGrant(LeaseGrantRequest { id: 0x42, ttl: 60 }),
            put("a", "1", 0),
            put("b", "on lease", 0x42),
            put("a", "2", 0),
            Request::Auth(AuthRequest::RoleAdd { name: "r".into() }),
            Request::Auth(AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: Permission {
                    kind: PermKind::Write,
                    key: b"k/".to_vec(),
                    range_end: b"k0".to_vec(),
                },
            }),
            Request::Auth(AuthRequest::UserAdd {
                name: "u".into(),
                password: b"$2a$04$hash".to_vec(),
                no_password: false,
            }),
            Request::Auth(AuthRequest::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            }),
            Request::Auth(AuthRequest::UserAdd {
                name: "root".into(),
                password: b"$2a$04$root".to_vec(),
                no_password: false,
            }),
            Request::Auth(AuthRequest::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            }),
            Request::Auth(AuthRequest::Enable),
        ],
    );
    let snap = m.reader().state_snapshot();
    let (rev, _) = snap.revisions();
    let want_keys: Vec<(Vec<u8>, Vec<u8>)> = snap
        .etcd_key_bucket()
        .map(|e| e.map(|e| (e.key, e.value)).unwrap())
        .collect();
    let auth = m.auth().clone();
    let source = SnapshotSource::new(snap, &extras()).unwrap();
    // Writes after the snapshot was taken: the file must not see them.
    apply(
        &mut m,
        &mut index,
        &[put("c", "later", 0), put("a", "3", 0)],
    );
    let (summary, bytes, _) = bbolt::write_snapshot(Vec::new(), &source).unwrap();
    assert_eq!(summary.bytes + 32, bytes.len() as u64);
    drop(source);

    let db = Db::from_bytes(bytes).unwrap();
    assert!(matches!(
        db.verify_trailer().unwrap(),
        Trailer::Present { .. }
    ));
    db.check().unwrap();
    let names: Vec<Vec<u8>> = db.buckets().unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(names, etcd_db::BUCKETS.map(<[u8]>::to_vec).to_vec());
    let bucket = |name: &[u8]| db.entries(&db.bucket(name).unwrap().unwrap()).unwrap();

    assert_eq!(
        bucket(etcd_db::KEY),
        want_keys,
        "the key bucket at revision {rev}"
    );
    assert_eq!(bbolt::snapshot_status(&db).unwrap().revision, rev);

    let meta = bucket(etcd_db::META);
    let get = |k: &[u8]| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        etcd_db::decode_u64(&get(etcd_db::CONSISTENT_INDEX).unwrap()).unwrap(),
        11,
        "the applied index of the snapshot, not of the later writes"
    );
    assert_eq!(
        etcd_db::decode_u64(&get(etcd_db::TERM).unwrap()).unwrap(),
        3
    );
    assert_eq!(get(etcd_db::FINISHED_COMPACT_REV), None, "never compacted");
    let cs = etcd_db::decode_conf_state(&get(etcd_db::CONF_STATE).unwrap()).unwrap();
    assert_eq!(
        (cs.voters, cs.learners),
        (vec![0xfec7_1109_dc5d_3505], vec![0x12])
    );

    let leases: Vec<etcd_db::Lease> = bucket(etcd_db::LEASE)
        .iter()
        .map(|(k, v)| {
            let l = etcd_db::decode_lease(v).unwrap();
            assert_eq!(etcd_db::decode_lease_key(k).unwrap(), l.id);
            l
        })
        .collect();
    assert_eq!(
        leases,
        vec![etcd_db::Lease {
            id: 0x42,
            ttl: 60,
            remaining_ttl: 0
        }]
    );

    let users: Vec<_> = bucket(etcd_db::AUTH_USERS)
        .iter()
        .map(|(_, v)| etcd_db::decode_user(v).unwrap())
        .collect();
    assert_eq!(users, auth.users().cloned().collect::<Vec<_>>());
    let roles: Vec<_> = bucket(etcd_db::AUTH_ROLES)
        .iter()
        .map(|(_, v)| etcd_db::decode_role(v).unwrap())
        .collect();
    assert_eq!(roles, auth.roles().cloned().collect::<Vec<_>>());
    let auth_bucket = bucket(etcd_db::AUTH);
    assert_eq!(
        auth_bucket,
        vec![
            (etcd_db::AUTH_ENABLED.to_vec(), vec![1]),
            (
                etcd_db::AUTH_REVISION.to_vec(),
                auth.revision().to_be_bytes().to_vec()
            ),
        ]
    );

    let mut members: Vec<Member> = bucket(etcd_db::MEMBERS)
        .iter()
        .map(|(k, v)| {
            let m = etcd_db::decode_member(v).unwrap();
            assert_eq!(etcd_db::decode_member_key(k).unwrap(), m.id);
            m
        })
        .collect();
    members.sort_by_key(|m| m.id);
    let mut want = extras().members;
    want.sort_by_key(|m| m.id);
    assert_eq!(members, want);
    let removed: Vec<(u64, Vec<u8>)> = bucket(etcd_db::MEMBERS_REMOVED)
        .iter()
        .map(|(k, v)| (etcd_db::decode_member_key(k).unwrap(), v.clone()))
        .collect();
    assert_eq!(
        removed,
        vec![(0x5, b"removed".to_vec()), (0x99, b"removed".to_vec())]
    );
    let alarms: Vec<Alarm> = bucket(etcd_db::ALARM)
        .iter()
        .map(|(k, v)| {
            assert!(v.is_empty());
            etcd_db::decode_alarm(k).unwrap()
        })
        .collect();
    assert_eq!(alarms, extras().alarms);
    assert_eq!(
        bucket(etcd_db::CLUSTER),
        vec![(etcd_db::CLUSTER_VERSION.to_vec(), b"3.5.0".to_vec())]
    );
}
