//! Issue 13: `retcdutl defrag --data-dir` (etcdutl's offline defrag) on a stopped member: the db
//! file shrinks to about its live pages, and the member restarted on it serves the same keys,
//! revisions and HashKV and goes on writing. A running member's data dir is refused (the page
//! store's lock) with etcdutl's message and the file is left as it was.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Kind, Output, Server};

fn ok(o: Output) -> String {
    assert!(o.success(), "{o:?}");
    o.stdout
}

fn defrag(s: &Server) -> Output {
    let mut cmd = Command::new(support::retcdutl_bin());
    cmd.arg("defrag").arg("--data-dir").arg(s.data_dir());
    support::run_with_timeout(cmd, None, Duration::from_secs(120)).expect("retcdutl defrag")
}

/// ~40 MB of values under k/, then the first three quarters (k/0…, k/1…, k/2…) deleted and
/// compacted away: the live keys are the last written, at the end of the file. Returns the
/// compacted revision.
fn fill_and_compact(s: &Server) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = support::connect(s, Duration::from_secs(10)).await;
        let value = vec![b'v'; 10_000];
        for i in 0..4000 {
            c.put(format!("k/{i:04}"), value.clone(), None)
                .await
                .expect("put");
        }
    });
    for p in ["k/0", "k/1", "k/2"] {
        ok(s.etcdctl(&["del", p, "--prefix"]));
    }
    let rev: serde_json::Value =
        serde_json::from_str(&ok(s.etcdctl(&["get", "k/3999", "-w", "json"]))).unwrap();
    let rev = rev["header"]["revision"].as_i64().unwrap();
    ok(s.etcdctl(&["compaction", "--physical", &rev.to_string()]));
    rev
}

#[test]
fn offline_defrag_shrinks_the_db_and_keeps_the_data() {
    let mut s = Server::start_in_tempdir(Kind::Retcd);
    let rev = fill_and_compact(&s);
    let want = support::State::of(&s);
    let db = s.data_dir().join("member/snap/db");

    // In use: refused, unchanged.
    let busy = defrag(&s);
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(
        busy.stderr.starts_with(&format!(
            "Error: Failed to defragment etcd data[{}] (",
            s.data_dir().display()
        )),
        "{busy:?}"
    );
    // (The running member's own checkpoints write the db meanwhile: what the refused defrag
    // must not have done is leave a copy or change what the member serves.)
    assert!(
        !db.with_file_name("db.defrag").exists(),
        "a refused defrag left its copy"
    );
    want.assert_same(&s, "after a refused defrag");

    s.stop();
    let size_before = std::fs::metadata(&db).unwrap().len();
    let done = defrag(&s);
    assert!(done.success(), "{done:?}");
    assert_eq!(done.stdout, "", "etcdutl prints nothing on success");
    // 1,000 live values of 10 KB: ~10 MB live of a file that grew past 40 MB (the file grows
    // in 32 MiB steps, so the copy is one step).
    let size_after = std::fs::metadata(&db).unwrap().len();
    assert!(
        size_after * 2 < size_before,
        "the db did not shrink: {size_before} → {size_after} bytes"
    );
    // (The restart replays the WAL past the store's last checkpoint, as etcd replays past its
    // consistent index.)
    s.start_again();
    want.assert_same(&s, "after the offline defrag");
    let put: serde_json::Value =
        serde_json::from_str(&ok(s.etcdctl(&["put", "after", "1", "-w", "json"]))).unwrap();
    assert_eq!(put["header"]["revision"].as_i64(), Some(rev + 1));
}

/// `etcdctl defrag` against a running member (Maintenance.Defragment): the file shrinks to within
/// 10 % of the pages in use while a writer goes on, every key and revision is as before (HashKV
/// at the revision before the defragmentation unchanged), every acknowledged write is there, and
/// etcdctl prints what it prints for etcd.
#[test]
fn online_defrag_shrinks_the_db_while_writes_go_on() {
    for kind in [Kind::Etcd, Kind::Retcd] {
        let s = Server::start_in_tempdir(kind);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        fill_and_compact(&s);
        // HashKV takes revisions above the compacted one.
        let rev: serde_json::Value =
            serde_json::from_str(&ok(s.etcdctl(&["put", "m", "1", "-w", "json"]))).unwrap();
        let rev = rev["header"]["revision"].as_i64().unwrap().to_string();
        // The keys at that revision (the header's revision moves with the writer below).
        let kvs_at = || {
            let j = ok(s.etcdctl(&["get", "k/", "--prefix", "-w", "json", "--rev", &rev]));
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            v["kvs"].clone()
        };
        let want = kvs_at();
        assert_eq!(want.as_array().map(Vec::len), Some(1000));
        let hash_at = || {
            let j = ok(s.etcdctl(&["endpoint", "hashkv", "--rev", &rev, "-w", "json"]));
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            v[0]["HashKV"]["hash"].clone()
        };
        let want_hash = hash_at();
        let status = || -> (u64, u64) {
            let j = ok(s.etcdctl(&["endpoint", "status", "-w", "json"]));
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            let st = &v[0]["Status"];
            (
                st["dbSize"].as_u64().unwrap(),
                st["dbSizeInUse"].as_u64().unwrap(),
            )
        };
        let (size_before, _) = status();

        // A writer goes on meanwhile (each put acknowledged before the next).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = s.client_url();
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut c = etcd_client::Client::connect([url], None).await.unwrap();
                    let mut acked = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && acked < 2000 {
                        c.put(format!("w/{acked:05}"), "x", None)
                            .await
                            .expect("put");
                        acked += 1;
                    }
                    acked
                })
            })
        };
        let out = ok(s.etcdctl(&["defrag", "--command-timeout=60s"]));
        assert_eq!(
            out,
            format!("Finished defragmenting etcd member[{}]\n", s.client_url()),
            "{kind:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked = writer.join().unwrap();

        let (size, in_use) = status();
        eprintln!(
            "{kind:?}: db {size_before} → {size} bytes ({in_use} in use), {acked} puts during the defragmentation"
        );
        assert!(
            size * 2 < size_before,
            "{kind:?}: the db did not shrink: {size_before} → {size} bytes"
        );
        if kind == Kind::Retcd {
            let file = std::fs::metadata(s.data_dir().join("member/snap/db"))
                .unwrap()
                .len();
            assert_eq!(file, size, "the file is the db size etcd reports");
            // Within 10 % of the pages in use (etcd's file after its defrag holds exactly its
            // pages in use).
            assert!(
                size <= in_use + in_use / 10,
                "{size} bytes after defragmenting, {in_use} in use"
            );
        }
        // (Not assert_eq: the values are 10 KB each.)
        assert!(kvs_at() == want, "{kind:?}: the keys changed");
        assert_eq!(hash_at(), want_hash, "{kind:?}");
        let count = rt.block_on(async {
            let mut c = support::connect(&s, Duration::from_secs(10)).await;
            let only = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only();
            c.get("w/", Some(only)).await.expect("count").count()
        });
        assert_eq!(count, i64::from(acked), "{kind:?}");
    }
}

/// A defragmentation asked for while a snapshot stream holds its read view (the issue's "a
/// defrag request during a snapshot"): etcd's defrag waits for the stream to end; retcd's moves
/// what it can, ends after a bounded wait for the pages the stream keeps (it never blocks on a
/// client) and answers as etcd does. The snapshot is still the whole state at its revision, the
/// member serves and writes meanwhile, and a defragmentation after the stream shrinks the file.
#[test]
fn a_defrag_during_a_snapshot_stream_answers_and_the_snapshot_holds() {
    let s = Server::start_in_tempdir(Kind::Retcd);
    fill_and_compact(&s);
    // HashKV takes revisions above the compacted one.
    let put: serde_json::Value =
        serde_json::from_str(&ok(s.etcdctl(&["put", "m", "1", "-w", "json"]))).unwrap();
    let rev = put["header"]["revision"].as_i64().unwrap().to_string();
    let hash_at = |rev: &str| {
        let j = ok(s.etcdctl(&["endpoint", "hashkv", "--rev", rev, "-w", "json"]));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        v[0]["HashKV"]["hash"].as_u64().expect("hash")
    };
    let want_hash = hash_at(&rev);
    let db_size = || {
        let j = ok(s.etcdctl(&["endpoint", "status", "-w", "json"]));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let st = &v[0]["Status"];
        (
            st["dbSize"].as_u64().unwrap(),
            st["dbSizeInUse"].as_u64().unwrap(),
        )
    };
    let (size_before, _) = db_size();

    // The stream's HTTP/2 connection lives on the runtime's worker while the test runs etcdctl.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut stream, first) = rt.block_on(async {
        let mut c = support::connect(&s, Duration::from_secs(300)).await;
        let mut stream = c.snapshot().await.expect("snapshot");
        let first = stream.message().await.expect("message").expect("first");
        (stream, first.blob().to_vec())
    });
    let out = ok(s.etcdctl(&["defrag", "--command-timeout=60s"]));
    assert_eq!(
        out,
        format!("Finished defragmenting etcd member[{}]\n", s.client_url())
    );
    let put: serde_json::Value =
        serde_json::from_str(&ok(s.etcdctl(&["put", "during", "1", "-w", "json"]))).unwrap();
    let put_rev = put["header"]["revision"].as_i64().expect("revision");

    let mut bytes = first;
    rt.block_on(async {
        while let Some(m) = stream.message().await.expect("message") {
            bytes.extend_from_slice(m.blob());
        }
    });
    let file = s.dir().join("during-defrag.snapshot.db");
    std::fs::write(&file, &bytes).unwrap();
    // The snapshot is the state before the put, whole: its revision, and etcd's HashKV of its
    // key bucket equals the member's at that revision. (hashkv reads the db part; the sha256
    // trailer is checked by a restore.)
    let status = Command::new(support::retcdutl_bin())
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .expect("retcdutl snapshot status");
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["revision"].as_i64(), Some(put_rev - 1), "{status}");
    let hashkv = Command::new(support::retcdutl_bin())
        .args(["hashkv", "-w", "json", "--rev", &rev])
        .arg(&file)
        .output()
        .expect("retcdutl hashkv");
    assert!(hashkv.status.success(), "{hashkv:?}");
    let hashkv: serde_json::Value = serde_json::from_slice(&hashkv.stdout).unwrap();
    assert_eq!(hashkv["hash"].as_u64(), Some(want_hash), "{hashkv}");
    let restored = s.dir().join("restored");
    let restore = Command::new(support::retcdutl_bin())
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .expect("retcdutl snapshot restore");
    assert!(restore.status.success(), "the sha256 holds: {restore:?}");

    // The member serves as before; with the stream gone (its writer's read view released) the
    // file shrinks.
    assert_eq!(hash_at(&rev), want_hash);
    let pid = s.pid().expect("running");
    assert_eq!(support::wait_threads(pid, "retcd-snapshot", 0), 0);
    ok(s.etcdctl(&["defrag", "--command-timeout=60s"]));
    let (size, in_use) = db_size();
    assert!(
        size * 2 < size_before && size <= in_use + in_use / 10,
        "db {size_before} → {size} bytes, {in_use} in use"
    );
}
