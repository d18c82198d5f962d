//! Corruption checks on a 3-member cluster of the real binary: one member's stored state is
//! changed behind Raft's back (the test hook: the page store edited while the member is stopped,
//! so its HashKV differs at the same revision). The initial check keeps it from serving; started
//! without that check, the leader's periodic check raises a CORRUPT alarm for that member, which
//! every member then holds and which refuses writes.

mod support;

use std::time::{Duration, Instant};

use retcd_engine::btree::{self, PageStore, StoreOptions};
use support::cluster::Cluster;
use support::{Kind, Output};

fn ok(out: Output) -> String {
    assert!(out.success(), "{out:?}");
    out.stdout
}

/// Changes the stored value of `key`'s version at `main` from `from` to `to` (same length) in
/// the page store at `db`, keeping the tag (revision, applied index): nothing else can tell.
fn corrupt_value(db: &std::path::Path, key: &[u8], main: u64, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    assert!(!key.contains(&0), "a key without 0x00 needs no escaping");
    let mut store = PageStore::open(&StoreOptions::new(db.to_path_buf()))
        .expect("open the stopped member's db");
    // engine/DESIGN.md §4.1: 'k' ‖ key ‖ 00 00 ‖ BE(!main).
    let k = [b"k", key, &[0, 0], &(!main).to_be_bytes()].concat();
    let snap = store.reader().snapshot();
    let tag = snap.tag();
    let stored = btree::get(&snap, &k)
        .expect("read")
        .expect("the version is stored")
        .to_vec();
    drop(snap);
    let at = stored
        .windows(from.len())
        .position(|w| w == from)
        .expect("the value is in the stored version");
    let mut changed = stored.clone();
    changed[at..at + to.len()].copy_from_slice(to);
    let mut txn = store.begin();
    txn.put(&k, &changed).unwrap();
    txn.commit(tag).unwrap();
    store.sync().unwrap();
}

/// A 3-member cluster (with `args`) where one follower's stored value of `corrupt-me` differs
/// from the others'; that member's initial check is asserted to refuse it, and it is then
/// started without that check. Returns the cluster, the leader's and that member's indexes, and
/// that member's id.
fn cluster_with_a_corrupted_member(args: &[&str]) -> (Cluster, usize, usize, u64) {
    let mut c = Cluster::start(Kind::Retcd, 3, args);
    let put: serde_json::Value = serde_json::from_str(&ok(c.etcdctl(&[
        "put",
        "corrupt-me",
        "good-value",
        "-w",
        "json",
    ])))
    .unwrap();
    let main = put["header"]["revision"].as_u64().expect("revision");
    for i in 0..20 {
        ok(c.etcdctl(&["put", &format!("k{i}"), "v"]));
    }
    c.wait_caught_up();
    let leader = c.leader();
    let bad = (leader + 1) % 3;
    let bad_id = c.member_id(bad);

    // A graceful stop checkpoints: the edited db holds every applied entry, so the WAL replay
    // at the next start does not rewrite the version.
    c.members[bad].stop();
    corrupt_value(
        &c.members[bad].db_path(),
        b"corrupt-me",
        main,
        b"good-value",
        b"evil-value",
    );
    let refused = c.members[bad]
        .try_start_again()
        .expect_err("the initial check keeps a corrupted member from serving");
    assert!(
        refused.contains(&format!("{bad_id:x} found data inconsistency with peers")),
        "{refused}"
    );
    assert!(c.members[bad].early_exit().is_some(), "{refused}");
    c.members[bad].push_arg("--experimental-initial-corrupt-check=false");
    c.members[bad].start_again();
    (c, leader, bad, bad_id)
}

/// Waits until the leader lists exactly a CORRUPT alarm for `bad_id`; then every member holds
/// the same (applied from the log) and refuses writes, reads go on, and the leader's log says
/// `why`.
fn assert_alarmed(c: &mut Cluster, leader: usize, bad_id: u64, why: &str) {
    let want = format!("memberID:{bad_id} alarm:CORRUPT \n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = c.members[leader].etcdctl(&["alarm", "list"]);
        if listed.stdout == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CORRUPT alarm for {bad_id:x}: {listed:?}\n{}",
            c.members[leader].log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait_caught_up();
    for m in &c.members {
        assert_eq!(m.etcdctl(&["alarm", "list"]).stdout, want, "{}", m.name());
    }
    assert!(
        c.members[leader].log_tail().contains(why),
        "{}",
        c.members[leader].log_tail()
    );
    for m in &c.members {
        let put = m.etcdctl(&["put", "after", "1"]);
        assert!(!put.success(), "{put:?}");
        assert!(
            put.stderr.contains("etcdserver: corrupt cluster"),
            "{put:?}"
        );
    }
    let get = ok(c.members[leader].etcdctl(&["get", "corrupt-me", "--print-value-only"]));
    assert_eq!(get, "good-value\n");
}

/// The initial check refuses the member; the leader's periodic check alarms it.
#[test]
fn a_member_with_corrupted_state_is_found_and_alarmed() {
    let (mut c, leader, _, bad_id) = cluster_with_a_corrupted_member(&[
        "--experimental-corrupt-check-time=1s",
        "--experimental-compact-hash-check-enabled=false",
    ]);
    assert_alarmed(&mut c, leader, bad_id, "found hash mismatch");
}

/// The compact hash check alone (no periodic check) alarms it after a compaction.
#[test]
fn a_compaction_hash_mismatch_is_found_and_alarmed() {
    let (mut c, leader, _, bad_id) = cluster_with_a_corrupted_member(&[
        "--experimental-corrupt-check-time=0",
        "--experimental-compact-hash-check-time=1s",
    ]);
    let rev = c.members[leader].etcdctl(&["get", "corrupt-me", "-w", "json"]);
    let rev: serde_json::Value = serde_json::from_str(&ok(rev)).unwrap();
    let rev = rev["header"]["revision"].as_i64().expect("revision");
    ok(c.members[leader].etcdctl(&["compact", &rev.to_string()]));
    assert_alarmed(&mut c, leader, bad_id, "failed compaction hash check");
}
