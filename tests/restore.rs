//! Issue 13: `retcdutl snapshot restore`, the seed's recovery procedure 3 — a snapshot restored on
//! every member of a stopped cluster, the cluster started again with its own flags — from a
//! snapshot saved by the real etcd (etcd → retcd migration). The restored retcd cluster serves
//! exactly etcd's keys, values, revisions and versions, and the same HashKV; writes go on from
//! etcd's revision. Bad input (a damaged snapshot, a missing hash, a data dir in use) changes
//! nothing.
//!
//! `retcdutl` is the binary built beside `retcd` (`cargo test --workspace` builds both).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::cluster::Cluster;
use support::{Kind, Server};

fn retcdutl() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_retcd")).with_file_name("retcdutl");
    assert!(
        p.exists(),
        "{} is missing: `cargo build -p retcd-tools` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// The `kvs` of `get "" --prefix -w json` (the header differs between clusters).
fn kvs(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json).expect("etcdctl json");
    v["kvs"].clone()
}

/// (hash, compact revision, header revision) of `endpoint hashkv -w json`.
fn hashkv(json: &str) -> (u64, i64, i64) {
    let v: serde_json::Value = serde_json::from_str(json).expect("etcdctl json");
    let h = &v[0]["HashKV"];
    (
        h["hash"].as_u64().expect("hash"),
        h["compact_revision"].as_i64().expect("compact revision"),
        h["header"]["revision"].as_i64().expect("revision"),
    )
}

fn ok(o: support::Output) -> String {
    assert!(o.success(), "{o:?}");
    o.stdout
}

fn restore(snapshot: &Path, m: &Server, initial_cluster: &str, extra: &[&str]) -> support::Output {
    let mut cmd = Command::new(retcdutl());
    cmd.args(["snapshot", "restore"])
        .arg(snapshot)
        .arg("--data-dir")
        .arg(m.data_dir())
        .args(["--name", m.name(), "--initial-cluster", initial_cluster])
        .args(["--initial-advertise-peer-urls", &m.peer_url()])
        .args(extra);
    support::run_with_timeout(cmd, None, std::time::Duration::from_secs(60)).expect("retcdutl")
}

#[test]
fn an_etcd_snapshot_restored_on_every_member_of_a_retcd_cluster() {
    let etcd = Server::start_in_tempdir(Kind::Etcd);
    for (k, v) in [
        ("a", "1"),
        ("b", "1"),
        ("a", "2"),
        ("c/1", "x"),
        ("c/2", "y"),
    ] {
        ok(etcd.etcdctl(&["put", k, v]));
    }
    ok(etcd.etcdctl(&["del", "b"]));
    ok(etcd.etcdctl_with_stdin(&["txn"], "\nput t1 one\nput t2 two\n\n\n"));
    ok(etcd.etcdctl(&["put", "big", &"v".repeat(20_000)]));
    ok(etcd.etcdctl(&["compaction", "4"]));
    ok(etcd.etcdctl(&["put", "a", "3"]));
    let want = kvs(&ok(etcd.etcdctl(&["get", "", "--prefix", "-w", "json"])));
    let want_hash = hashkv(&ok(etcd.etcdctl(&["endpoint", "hashkv", "-w", "json"])));
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("etcd.db");
    ok(etcd.etcdctl(&["snapshot", "save", snapshot.to_str().unwrap()]));
    drop(etcd);

    let mut c = Cluster::start(Kind::Retcd, 3, &[]);
    let initial = c.members[0].initial_cluster().unwrap().to_string();
    // The data dir of a running member is refused, and left as it was.
    let busy = restore(&snapshot, &c.members[0], &initial, &[]);
    assert!(
        !busy.success() && busy.stderr.contains("not empty"),
        "{busy:?}"
    );
    for m in &mut c.members {
        m.stop();
    }
    // A damaged snapshot, and a db without its hash, are refused; nothing is written.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xFF;
    std::fs::write(&damaged, &bytes).unwrap();
    let unhashed = dir.path().join("unhashed.db");
    std::fs::write(&unhashed, &bytes[..n - 32]).unwrap();
    for m in &c.members {
        std::fs::remove_dir_all(m.data_dir()).unwrap();
        let r = restore(&damaged, m, &initial, &[]);
        assert!(!r.success() && r.stderr.contains("sha256"), "{r:?}");
        let r = restore(&unhashed, m, &initial, &[]);
        assert!(
            !r.success()
                && r.stderr
                    .contains("Error: snapshot missing hash but --skip-hash-check=false"),
            "{r:?}"
        );
        assert!(
            !m.data_dir().exists(),
            "a refused restore wrote {}",
            m.data_dir().display()
        );
    }
    // Member 0 restores the db without a hash (as copied from a data dir), the others the file.
    for (i, m) in c.members.iter().enumerate() {
        let r = if i == 0 {
            restore(&unhashed, m, &initial, &["--skip-hash-check"])
        } else {
            restore(&snapshot, m, &initial, &[])
        };
        assert!(r.success(), "{r:?}");
        assert!(r.stderr.contains("\"msg\":\"restored snapshot\""), "{r:?}");
    }
    for m in &mut c.members {
        m.spawn_member();
    }
    for m in &mut c.members {
        m.wait_member_ready();
    }
    c.leader();
    for m in &c.members {
        let got = kvs(&ok(m.etcdctl(&["get", "", "--prefix", "-w", "json"])));
        assert_eq!(got, want, "{} serves etcd's keys", m.name());
        assert_eq!(
            hashkv(&ok(m.etcdctl(&["endpoint", "hashkv", "-w", "json"]))),
            want_hash,
            "{}: HashKV",
            m.name()
        );
    }
    // Writes go on from etcd's revision, and every member has them.
    let put: serde_json::Value = serde_json::from_str(&ok(
        c.members[1].etcdctl(&["put", "after", "1", "-w", "json"])
    ))
    .unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(want_hash.2 + 1));
    c.wait_caught_up();
    for m in &c.members {
        let got = ok(m.etcdctl(&["get", "after", "--print-value-only", "--consistency=s"]));
        assert_eq!(got, "1\n", "{}", m.name());
    }
    // A compacted revision stays compacted.
    let old = c.members[2].etcdctl(&["get", "a", "--rev=3"]);
    assert!(
        old.stderr.contains("required revision has been compacted"),
        "{old:?}"
    );
}
