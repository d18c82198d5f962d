//! Automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`) against the
//! real binaries, observed through etcdctl: a read below the compacted revision is refused with
//! etcd's "required revision has been compacted", one at the compacted revision still works.
//!
//! etcd checks revision mode every 5 min and has no flag for it (its own tests fake the clock);
//! retcd's tests shorten it with RETCD_REVISION_COMPACTION_INTERVAL_MS, so revision mode is
//! checked against retcd only. Periodic mode with a "2s" retention is quick in both, and is
//! checked against real etcd too.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, parse_status};
use support::{Kind, Server};

/// How long a compaction may take to show (the schedules here act within a few seconds).
const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two looks at the servers while waiting for a deadline.
const POLL: Duration = Duration::from_millis(100);

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Revision-mode check interval in these tests (etcd: 5 min).
const INTERVAL_ENV: (&str, &str) = ("RETCD_REVISION_COMPACTION_INTERVAL_MS", "100");

fn revision(server: &Server) -> i64 {
    let out = server.etcdctl(&["endpoint", "status", "-w", "json"]);
    parse_status(&out.stdout)
        .first()
        .map(|s| s.revision)
        .unwrap_or_else(|| panic!("endpoint status: {out:?}"))
}

/// `get key --rev=rev` from this member's own state: Ok(stdout) or Err(stderr).
fn get_at(server: &Server, key: &str, rev: i64) -> Result<String, String> {
    let out = server.etcdctl(&[
        "get",
        key,
        "--consistency=s",
        "--print-value-only",
        &format!("--rev={rev}"),
    ]);
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(out.stderr)
    }
}

/// Waits (bounded) until `server` has compacted exactly at `rev`: a read at `rev - 1` is
/// refused as compacted and a read at `rev` answers `value`. Returns when it first saw it.
fn wait_compacted_at(server: &Server, key: &str, rev: i64, value: &str) -> Instant {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let below = get_at(server, key, rev - 1);
        if let Err(e) = &below {
            assert!(e.contains(COMPACTED), "{}: {e}", server.name());
            assert_eq!(
                get_at(server, key, rev).as_deref().map(str::trim),
                Ok(value),
                "{}: the compacted revision itself stays readable",
                server.name()
            );
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{}: revision {} not compacted within {DEADLINE:?}\n{}",
            server.name(),
            rev - 1,
            server.log_tail()
        );
        std::thread::sleep(POLL);
    }
}

/// Puts `key` = `v<revision>` `n` times; returns the last revision.
fn put_many(server: &Server, key: &str, n: usize) -> i64 {
    for _ in 0..n {
        let next = revision(server) + 1;
        let out = server.etcdctl(&["put", key, &format!("v{next}")]);
        assert!(out.success(), "{out:?}");
    }
    revision(server)
}

#[test]
fn revision_mode_keeps_the_last_revisions() {
    let server = Server::start_in_tempdir_with_env(
        Kind::Retcd,
        &[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=10",
        ],
        &[INTERVAL_ENV],
    );
    let last = put_many(&server, "k", 30);
    // Compactions run while the puts go on; once they stop, the store keeps exactly the last
    // 10 revisions: compacted at last − 10.
    wait_compacted_at(&server, "k", last - 10, &format!("v{}", last - 10));
    let log = server.log_since(0);
    assert!(log.contains("starting auto revision compaction"), "{log}");
    assert!(log.contains("completed auto revision compaction"), "{log}");
    // Still readable after the compaction was seen (no target beyond last − 10 exists).
    assert_eq!(
        get_at(&server, "k", last - 10).as_deref().map(str::trim),
        Ok(format!("v{}", last - 10).as_str())
    );
}

/// `--auto-compaction-retention=2s` (periodic): both servers keep 2 s of history. After the
/// writes stop, the store compacts up to the last revision, and not before 2 s have passed.
#[test]
fn periodic_two_seconds_as_etcd() {
    for kind in [Kind::Etcd, Kind::Retcd] {
        let server = Server::start_in_tempdir_with_args(kind, &["--auto-compaction-retention=2s"]);
        let last = put_many(&server, "k", 10);
        let stopped = Instant::now();
        let seen = wait_compacted_at(&server, "k", last, &format!("v{last}"));
        // The compacted revision was sampled after the last put and is compacted only once
        // the window of 2 s has passed over it (a few ms of slack: the sample may precede the
        // end of etcdctl's put by the time it takes to answer).
        let waited = seen - stopped;
        assert!(
            waited >= Duration::from_millis(1900),
            "{kind:?}: compacted to the newest revision after only {waited:?}"
        );
        if kind == Kind::Retcd {
            let log = server.log_since(0);
            assert!(log.contains("completed auto periodic compaction"), "{log}");
        }
    }
}

/// On a cluster only the leader proposes the compaction; every member applies it. After a
/// leader transfer the new leader takes over and the old one stops proposing.
#[test]
fn only_the_leader_compacts_and_every_member_applies_it() {
    let mut c = Cluster::start_with_env(
        Kind::Retcd,
        3,
        &[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=10",
        ],
        &[INTERVAL_ENV],
    );
    let leader = c.leader();
    let last = put_and_wait_everywhere(&mut c, leader, "x");
    assert_eq!(c.leader(), leader, "the leader changed during the test");
    for (i, m) in c.members.iter().enumerate() {
        let proposed = m.log_since(0).contains("starting auto revision compaction");
        assert_eq!(proposed, i == leader, "member {i} (leader {leader})");
    }

    // Leadership moves: the new leader's compactor resumes from its own state, the old one's
    // pauses.
    let target = (leader + 1) % 3;
    let id = c.member_id(target);
    let out = c.etcdctl(&["move-leader", &format!("{id:x}")]);
    assert!(out.success(), "{out:?}");
    assert_eq!(c.leader(), target);
    let marks: Vec<u64> = c.members.iter().map(|m| m.log_len()).collect();
    let last2 = put_and_wait_everywhere(&mut c, target, "y");
    assert!(last2 > last + 20);
    assert_eq!(c.leader(), target, "the leader changed during the test");
    for (i, m) in c.members.iter().enumerate() {
        let proposed = m
            .log_since(marks[i])
            .contains("starting auto revision compaction");
        assert_eq!(proposed, i == target, "member {i} (leader {target})");
    }
}

/// Puts `k` 30 times through the cluster, then waits until every member compacted at the last
/// revision − 10 (the retention); returns the last revision.
fn put_and_wait_everywhere(c: &mut Cluster, leader: usize, prefix: &str) -> i64 {
    for i in 0..30 {
        let out = c.etcdctl(&["put", "k", &format!("{prefix}{i}")]);
        assert!(out.success(), "{out:?}");
    }
    c.wait_caught_up();
    let last = revision(&c.members[leader]);
    // The value at the boundary (never compacted: every target is ≤ last − 10).
    let value = c.members[leader]
        .etcdctl(&[
            "get",
            "k",
            "--print-value-only",
            &format!("--rev={}", last - 10),
        ])
        .stdout
        .trim()
        .to_string();
    assert_eq!(value, format!("{prefix}19"));
    for m in &c.members {
        wait_compacted_at(m, "k", last - 10, &value);
    }
    last
}

/// A mode or retention etcd refuses stops both servers at start, with etcd's message.
#[test]
fn bad_settings_are_refused_with_etcds_messages() {
    let cases: [(&str, &str); 4] = [
        (
            "--auto-compaction-mode=weekly",
            r#"unknown auto-compaction-mode "weekly""#,
        ),
        (
            "--auto-compaction-retention=soon",
            r#"error parsing CompactionRetention: time: invalid duration "soon""#,
        ),
        (
            "--auto-compaction-retention=-1",
            r#"error parsing CompactionRetention: time: missing unit in duration "-1""#,
        ),
        (
            "--auto-compaction-retention=3d",
            r#"error parsing CompactionRetention: time: unknown unit "d" in duration "3d""#,
        ),
    ];
    for kind in [Kind::Etcd, Kind::Retcd] {
        for (flag, message) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            // etcd logs a flag it cannot verify as a warning (the harness keeps errors only).
            let err = match Server::try_start(kind, dir.path(), &[flag, "--log-level=warn"]) {
                Ok(_) => panic!("{kind:?} started with {flag}"),
                Err(e) => e,
            };
            // etcd's JSON log escapes the quotes.
            assert!(
                err.replace('\\', "").contains(message),
                "{kind:?} {flag}: {err}"
            );
        }
    }
}
