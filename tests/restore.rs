//! Issue 13: `retcdutl snapshot restore`, the seed's recovery procedure 3 — a snapshot restored on
//! every member of a stopped cluster, the cluster started again with its own flags — from a
//! snapshot saved by the real etcd (etcd → retcd migration). The restored retcd cluster serves
//! exactly etcd's keys, values, revisions, versions and leases (with their attached keys), the
//! same HashKV, etcd's users and roles with auth on; writes go on from etcd's revision. Bad input (a damaged snapshot, a missing hash, a data dir in use) changes
//! nothing.
//!
//! `retcdutl` is the binary built beside `retcd` (`cargo test --workspace` builds both).

mod support;

use std::path::Path;
use std::process::Command;

use support::cluster::Cluster;
use support::{Kind, Server};

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
    restore_with(support::retcdutl_bin(), snapshot, m, initial_cluster, extra)
}

/// `<tool> snapshot restore` (retcdutl, or retcdctl, which offers it as etcdctl 3.4 does).
fn restore_with(
    tool: std::path::PathBuf,
    snapshot: &Path,
    m: &Server,
    initial_cluster: &str,
    extra: &[&str],
) -> support::Output {
    let mut cmd = Command::new(tool);
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
    // Leases: one with two keys (one of them moved away from it again), one without keys.
    let lease = |ttl: &str| -> String {
        let out = ok(etcd.etcdctl(&["lease", "grant", ttl]));
        out.split_whitespace().nth(1).expect("lease id").to_string()
    };
    let (l1, l2) = (lease("3600"), lease("7200"));
    ok(etcd.etcdctl(&["put", "/a/leased", "x", "--lease", &l1]));
    ok(etcd.etcdctl(&["put", "moved", "y", "--lease", &l1]));
    ok(etcd.etcdctl(&["put", "moved", "z"]));
    // Users and roles, auth on.
    for args in support::auth_setup_commands("rootpw", "alicepw") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(etcd.etcdctl(&args));
    }
    let root = |s: &Server, args: &[&str]| {
        let mut a = vec!["--user=root:rootpw"];
        a.extend_from_slice(args);
        ok(s.etcdctl(&a))
    };
    let want = kvs(&root(&etcd, &["get", "", "--prefix", "-w", "json"]));
    let want_hash = hashkv(&root(&etcd, &["endpoint", "hashkv", "-w", "json"]));
    let want_leases = root(&etcd, &["lease", "list"]);
    let want_keys = root(&etcd, &["lease", "timetolive", &l1, "--keys"]);
    let want_users = root(&etcd, &["user", "list"]);
    let want_role = root(&etcd, &["role", "get", "r"]);
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("etcd.db");
    root(&etcd, &["snapshot", "save", snapshot.to_str().unwrap()]);
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
    // With auth on, `endpoint health` without a user fails ("user name is empty", as etcd's):
    // wait (bounded) until every member, asked as root, names the same leader.
    c.leader_as("--user=root:rootpw", None);
    for m in &c.members {
        let got = kvs(&root(m, &["get", "", "--prefix", "-w", "json"]));
        assert_eq!(got, want, "{} serves etcd's keys", m.name());
        assert_eq!(
            hashkv(&root(m, &["endpoint", "hashkv", "-w", "json"])),
            want_hash,
            "{}: HashKV",
            m.name()
        );
        assert_eq!(root(m, &["user", "list"]), want_users, "{}", m.name());
        assert_eq!(root(m, &["role", "get", "r"]), want_role, "{}", m.name());
    }
    assert_eq!(root(&c.members[0], &["lease", "list"]), want_leases);
    assert!(want_leases.contains(&l2), "{want_leases}");
    let ttl = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "N");
    assert_eq!(
        ttl(&root(
            &c.members[0],
            &["lease", "timetolive", &l1, "--keys"]
        )),
        ttl(&want_keys),
        "lease {l1} keeps its keys"
    );
    assert!(
        want_keys.contains("/a/leased") && !want_keys.contains("moved"),
        "{want_keys}"
    );
    // alice's role is there, and auth is on.
    let alice = |args: &[&str]| {
        let mut a = vec!["--user=alice:alicepw"];
        a.extend_from_slice(args);
        c.members[2].etcdctl(&a)
    };
    assert!(alice(&["put", "/a/by-alice", "1"]).success());
    let denied = alice(&["put", "/b", "1"]);
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    let anonymous = c.members[2].etcdctl(&["get", "a"]);
    assert!(!anonymous.success(), "{anonymous:?}");
    // Writes go on from etcd's revision (alice's put took one), and every member has them.
    let put: serde_json::Value =
        serde_json::from_str(&root(&c.members[1], &["put", "after", "1", "-w", "json"])).unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(want_hash.2 + 2));
    for m in &c.members {
        let got = root(m, &["get", "after", "--print-value-only"]);
        assert_eq!(got, "1\n", "{}", m.name());
    }
    // A compacted revision stays compacted.
    let old = c.members[2].etcdctl(&["--user=root:rootpw", "get", "a", "--rev=3"]);
    assert!(
        old.stderr.contains("required revision has been compacted"),
        "{old:?}"
    );
}

/// The seed's procedure 3 on retcd alone: `snapshot save` from the leader of a 3-member retcd
/// cluster (Maintenance.Snapshot), every member stopped and its data dir replaced by
/// `retcdutl snapshot restore` of that file, the cluster started again: the same keys, leases
/// and HashKV, and the revision goes on.
#[test]
fn a_retcd_snapshot_restored_on_every_member() {
    let mut c = Cluster::start(Kind::Retcd, 3, &[]);
    let leader = c.leader();
    let l = {
        let out = ok(c.members[leader].etcdctl(&["lease", "grant", "3600"]));
        out.split_whitespace().nth(1).expect("lease id").to_string()
    };
    for i in 0..200 {
        ok(c.members[i % 3].etcdctl(&["put", &format!("k/{i:03}"), &format!("v{i}")]));
    }
    ok(c.members[1].etcdctl(&["put", "leased", "x", "--lease", &l]));
    ok(c.members[2].etcdctl(&["del", "k/1", "--prefix"]));
    ok(c.members[0].etcdctl(&["compaction", "50"]));
    let m = &c.members[leader];
    let want = kvs(&ok(m.etcdctl(&["get", "", "--prefix", "-w", "json"])));
    let want_hash = hashkv(&ok(m.etcdctl(&["endpoint", "hashkv", "-w", "json"])));
    let want_keys = ok(m.etcdctl(&["lease", "timetolive", &l, "--keys"]));
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("retcd.db");
    // Saved with retcdctl (the product's own client), restored with retcdutl on two members and
    // with retcdctl on the third.
    let saved = Command::new(support::retcdctl_bin())
        .arg(format!("--endpoints={}", m.client_url()))
        .args(["snapshot", "save"])
        .arg(&snapshot)
        .output()
        .expect("retcdctl snapshot save");
    assert!(saved.status.success(), "{saved:?}");
    assert_eq!(
        String::from_utf8_lossy(&saved.stdout),
        format!("Snapshot saved at {}\n", snapshot.display())
    );
    assert!(!dir.path().join("retcd.db.part").exists());
    let initial = c.members[0].initial_cluster().unwrap().to_string();
    for m in &mut c.members {
        m.stop();
    }
    for (i, m) in c.members.iter().enumerate() {
        std::fs::remove_dir_all(m.data_dir()).unwrap();
        let tool = if i == 2 {
            support::retcdctl_bin()
        } else {
            support::retcdutl_bin()
        };
        let r = restore_with(tool, &snapshot, m, &initial, &[]);
        assert!(r.success(), "{r:?}");
    }
    c.start_all();
    c.leader();
    for m in &c.members {
        let got = kvs(&ok(m.etcdctl(&["get", "", "--prefix", "-w", "json"])));
        assert_eq!(got, want, "{}", m.name());
        assert_eq!(
            hashkv(&ok(m.etcdctl(&["endpoint", "hashkv", "-w", "json"]))),
            want_hash,
            "{}",
            m.name()
        );
    }
    let ttl = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "N");
    assert_eq!(
        ttl(&ok(c.members[0].etcdctl(&[
            "lease",
            "timetolive",
            &l,
            "--keys"
        ]))),
        ttl(&want_keys)
    );
    let put: serde_json::Value = serde_json::from_str(&ok(
        c.members[2].etcdctl(&["put", "after", "1", "-w", "json"])
    ))
    .unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(want_hash.2 + 1));
}

/// The seed's procedure 3 with etcd's own tool: `etcdctl snapshot restore` (the real etcdctl 3.4)
/// writes each member's data dir in etcd's format; retcd started on it imports it once (etcd's
/// files kept aside in `member.etcd`) and serves etcd's keys and HashKV; a restart after that
/// starts from the imported data.
#[test]
fn a_data_dir_restored_by_etcdctl_is_imported_at_start() {
    let etcd = Server::start_in_tempdir(Kind::Etcd);
    for i in 0..50 {
        ok(etcd.etcdctl(&["put", &format!("k/{i:02}"), &format!("v{i}")]));
    }
    ok(etcd.etcdctl(&["del", "k/1", "--prefix"]));
    let want = kvs(&ok(etcd.etcdctl(&["get", "", "--prefix", "-w", "json"])));
    let want_hash = hashkv(&ok(etcd.etcdctl(&["endpoint", "hashkv", "-w", "json"])));
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("etcd.db");
    ok(etcd.etcdctl(&["snapshot", "save", snapshot.to_str().unwrap()]));
    drop(etcd);

    let mut c = Cluster::start(Kind::Retcd, 3, &[]);
    let initial = c.members[0].initial_cluster().unwrap().to_string();
    for m in &mut c.members {
        m.stop();
    }
    for m in &c.members {
        std::fs::remove_dir_all(m.data_dir()).unwrap();
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(&snapshot)
            .arg("--data-dir")
            .arg(m.data_dir())
            .args(["--name", m.name(), "--initial-cluster", &initial])
            .args(["--initial-advertise-peer-urls", &m.peer_url()]);
        let r = support::run_with_timeout(cmd, None, std::time::Duration::from_secs(60))
            .expect("etcdctl snapshot restore");
        assert!(r.success(), "{r:?}");
    }
    c.start_all();
    c.leader();
    for m in &c.members {
        assert!(
            m.data_dir().join("member.etcd/snap/db").exists(),
            "{}: etcd's files are kept aside",
            m.name()
        );
        let log = m.log_since(0);
        assert!(log.contains("imported etcd's db"), "{}: {log}", m.name());
        let got = kvs(&ok(m.etcdctl(&["get", "", "--prefix", "-w", "json"])));
        assert_eq!(got, want, "{}", m.name());
        assert_eq!(
            hashkv(&ok(m.etcdctl(&["endpoint", "hashkv", "-w", "json"]))),
            want_hash,
            "{}",
            m.name()
        );
    }
    // A restart starts from the imported data (no second import), and writes go on.
    ok(c.members[0].etcdctl(&["put", "after", "1"]));
    let from = c.members[1].log_len();
    c.members[1].restart();
    assert!(!c.members[1].log_since(from).contains("imported etcd's db"));
    c.wait_caught_up();
    let got = ok(c.members[1].etcdctl(&["get", "after", "--print-value-only"]));
    assert_eq!(got, "1\n");
}
