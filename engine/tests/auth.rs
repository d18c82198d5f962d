//! The auth state through `Mvcc::apply`: persisted with the applied index and found again after
//! a restart, carried by a Raft snapshot into another store, published to readers after each
//! batch; a client's request checked at apply against the state at its entry (a grant revoked by
//! an earlier entry of the same batch is already gone), while the member's own requests are not
//! checked.

mod common;

use common::store_options;
use retcd_engine::auth::AuthError;
use retcd_engine::mvcc::{Applied, Mvcc, MvccError, WriteResult};
use retcd_engine::request::{AuthRequest, Caller, PermKind, Permission, PutRequest, Request};

fn apply(
    m: &mut Mvcc,
    index: u64,
    batch: &[(Request, Option<Caller>)],
) -> Vec<Result<WriteResult, MvccError>> {
    let entries: Vec<Applied<'_>> = batch
        .iter()
        .enumerate()
        .map(|(i, (r, c))| Applied {
            index: index + i as u64,
            term: 1,
            request: Some(r),
            caller: c.as_ref(),
            membership: None,
        })
        .collect();
    m.apply(&entries).unwrap()
}

fn auth(a: AuthRequest) -> (Request, Option<Caller>) {
    (Request::Auth(a), None)
}

fn put(key: &str, caller: &Caller) -> (Request, Option<Caller>) {
    (
        Request::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        }),
        Some(caller.clone()),
    )
}

fn seed() -> Vec<(Request, Option<Caller>)> {
    vec![
        auth(AuthRequest::UserAdd {
            name: "root".into(),
            password: b"$2a$04$hash".to_vec(),
            no_password: false,
        }),
        auth(AuthRequest::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        }),
        auth(AuthRequest::RoleAdd { name: "w".into() }),
        auth(AuthRequest::RoleGrantPermission {
            name: "w".into(),
            perm: Permission {
                kind: PermKind::Write,
                key: b"/w/".to_vec(),
                range_end: b"/w0".to_vec(),
            },
        }),
        auth(AuthRequest::UserAdd {
            name: "alice".into(),
            password: Vec::new(),
            no_password: true,
        }),
        auth(AuthRequest::UserGrantRole {
            user: "alice".into(),
            role: "w".into(),
        }),
        auth(AuthRequest::Enable),
    ]
}

#[test]
fn auth_state_is_persisted_checked_at_apply_and_carried_by_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mvcc::open(&store_options(dir.path())).unwrap();
    let reader = m.auth_reader();
    assert!(apply(&mut m, 1, &seed()).iter().all(Result::is_ok));
    let rev = m.auth().revision();
    assert_eq!(rev, 7, "1 + six changes; enable adds none");
    assert!(reader.enabled(), "published to readers");
    let alice = Caller {
        user: "alice".into(),
        revision: rev,
    };
    // In one batch: a put allowed, the grant revoked, the same put refused; the lease expiry's
    // own requests are never checked.
    let res = apply(
        &mut m,
        8,
        &[
            put("/w/1", &alice),
            auth(AuthRequest::RoleRevokePermission {
                role: "w".into(),
                key: b"/w/".to_vec(),
                range_end: b"/w0".to_vec(),
            }),
            put(
                "/w/2",
                &Caller {
                    revision: rev + 1,
                    ..alice.clone()
                },
            ),
            put("/w/3", &alice),
            (
                Request::Put(PutRequest {
                    key: b"/own".to_vec(),
                    ..Default::default()
                }),
                None,
            ),
            put("/x", &Caller::default()),
        ],
    );
    let errs: Vec<Option<AuthError>> = res
        .iter()
        .map(|r| match r {
            Err(MvccError::Auth(e)) => Some(*e),
            Ok(_) => None,
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        errs,
        vec![
            None,
            None,
            Some(AuthError::PermissionDenied),
            Some(AuthError::OldRevision),
            None,
            Some(AuthError::UserEmpty),
        ]
    );
    let rev = m.auth().revision();
    let applied = m.applied().0;
    // A checkpoint makes it durable (the WAL replays what follows one).
    m.sync().unwrap();
    drop(m);

    // A restart finds the same state.
    let mut m = Mvcc::open(&store_options(dir.path())).unwrap();
    assert_eq!(m.auth().revision(), rev);
    assert!(m.auth().enabled());
    assert_eq!(m.auth().user("alice").unwrap().roles, vec!["w".to_string()]);
    assert!(m.auth().role("w").unwrap().perms.is_empty());
    assert_eq!(m.auth().user("root").unwrap().password, b"$2a$04$hash");
    assert!(m.auth_reader().enabled());

    // A snapshot of it installs the same state into another store.
    let snap = m.reader().state_snapshot();
    let mut entries = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = snap.chunk(after.as_deref(), 1 << 20).unwrap();
        let Some(last) = chunk.last() else { break };
        after = Some(last.0.clone());
        entries.extend(chunk);
    }
    let dir2 = tempfile::tempdir().unwrap();
    let mut other = Mvcc::open(&store_options(dir2.path())).unwrap();
    let other_reader = other.auth_reader();
    assert!(!other_reader.enabled());
    other
        .install(entries.into_iter().map(Ok::<_, String>), applied)
        .unwrap();
    assert_eq!(other.auth().revision(), rev);
    assert!(other_reader.enabled(), "an install republishes");
    assert_eq!(
        other
            .auth()
            .users()
            .map(|u| u.name.clone())
            .collect::<Vec<_>>(),
        vec!["alice".to_string(), "root".to_string()]
    );
    // A refused change leaves nothing behind.
    let res = apply(
        &mut m,
        applied + 1,
        &[auth(AuthRequest::UserDelete {
            name: "root".into(),
        })],
    );
    assert!(matches!(
        res[0],
        Err(MvccError::Auth(AuthError::InvalidMgmt))
    ));
    assert_eq!(m.auth().revision(), rev);
}
