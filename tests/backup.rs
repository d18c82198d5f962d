//! Issue 13: `retcdutl backup` (etcdutl's legacy offline backup) of a stopped member: the backup
//! dir, put in place of the data dir and started with the member's flags, serves every key,
//! revision, lease and HashKV — writes acknowledged after the last checkpoint included (the WAL
//! is copied and replayed) — and goes on writing. A running member's data dir, and a backup dir
//! that is not empty, are refused and nothing is written.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Kind, Output, Server};

fn ok(o: Output) -> String {
    assert!(o.success(), "{o:?}");
    o.stdout
}

fn backup(data_dir: &Path, backup_dir: &Path) -> Output {
    let mut cmd = Command::new(support::retcdutl_bin());
    cmd.arg("backup")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--backup-dir")
        .arg(backup_dir);
    support::run_with_timeout(cmd, None, Duration::from_secs(120)).expect("retcdutl backup")
}

#[test]
fn a_backup_restarts_as_the_member_with_every_write() {
    let mut s = Server::start_in_tempdir(Kind::Retcd);
    let lease = ok(s.etcdctl(&["lease", "grant", "600"]));
    let lease = lease.split_whitespace().nth(1).unwrap().to_string();
    for i in 0..200 {
        ok(s.etcdctl(&["put", &format!("k/{i:03}"), &"v".repeat(i + 1)]));
    }
    ok(s.etcdctl(&["put", "leased", "1", "--lease", &lease]));
    ok(s.etcdctl(&["del", "k/00", "--prefix"]));
    let want = support::State::of(&s);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("backup");

    // Running: refused, nothing written.
    let busy = backup(s.data_dir(), &dest);
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(
        busy.stderr
            .starts_with("Error: Failed to back up etcd data["),
        "{busy:?}"
    );
    assert!(!dest.exists(), "a refused backup left {}", dest.display());

    s.stop();
    let done = backup(s.data_dir(), &dest);
    assert!(done.success(), "{done:?}");
    assert_eq!(done.stdout, "");
    // A second backup into the same (now full) dir is refused.
    let again = backup(s.data_dir(), &dest);
    assert!(
        again.stderr.contains("is not empty"),
        "a backup over a full dir: {again:?}"
    );

    // The backup in place of the data dir.
    let data = s.data_dir().to_path_buf();
    std::fs::rename(&data, tmp.path().join("original")).unwrap();
    std::fs::rename(&dest, &data).unwrap();
    s.start_again();
    want.assert_same(&s, "the backup in place");
    let ttl = ok(s.etcdctl(&["lease", "timetolive", &lease, "--keys"]));
    assert!(ttl.contains("leased"), "{ttl}");
    let rev = want.revision();
    let put: serde_json::Value =
        serde_json::from_str(&ok(s.etcdctl(&["put", "after", "1", "-w", "json"]))).unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(rev + 1));
}
