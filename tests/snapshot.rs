//! Maintenance.Snapshot through the real retcd binary, checked with etcd's own tools and against
//! real etcd (engine/DESIGN.md §7.5, reference `bbolt-etcd-formats.md` §2–3):
//!
//! - `etcdctl snapshot save` from retcd succeeds, `snapshot status` accepts the file, the trailer
//!   is the sha256 of the db, and the stream is cut as etcd cuts it (32 KiB blobs, remaining
//!   bytes, the digest alone at the end) — the same shape checked on etcd's stream;
//! - migration: a history applied to retcd, snapshotted, restored with `etcdctl snapshot
//!   restore` and served by a real etcd answers as retcd did (keys with their revisions,
//!   versions and leases, the revision, leases and their keys, users and roles, HashKV);
//! - the same history applied to a real etcd and to retcd gives byte-identical `key` buckets
//!   (and equal lease, auth and compaction records) in the two snapshots;
//! - a client that cancels the stream after its first message stops the writer's thread, and the
//!   server goes on serving; a client that stops reading does not make the server buffer the db;
//! - a snapshot taken while writes go on holds exactly one revision's state;
//! - a cluster's members (a learner among them) and a removed member are in the snapshot as
//!   `member list` shows them, on etcd and on retcd alike.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, DeleteOptions, GetOptions, LeaseGrantOptions, PutOptions, Txn, TxnOp,
};
use retcd_engine::bbolt::{Db, Trailer};
use retcd_engine::etcd_db;
use retcd_engine::etcd_keys;
use support::{Kind, Server, connect, start_both};

/// Bound of any single client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of a whole test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// Lease ids chosen by the client, so both servers store the same ids.
const LEASE_A: i64 = 0x1234_5678_9abc;
const LEASE_B: i64 = 7;
/// Long enough that no lease expires during a test.
const LEASE_TTL: i64 = 3600;
/// etcd's blob size.
const CHUNK: usize = 32 * 1024;
const ROOT_PASSWORD: &str = "rootpw";

async fn put(c: &mut Client, key: &[u8], value: &[u8], lease: i64) -> i64 {
    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    c.put(key.to_vec(), value.to_vec(), opts)
        .await
        .unwrap_or_else(|e| panic!("put {}: {e}", key.escape_ascii()))
        .header()
        .expect("header")
        .revision()
}

/// The history both servers get: puts and overwrites, binary keys, an empty value, single and
/// prefix deletes, a txn of several ops, keys on leases, a revoke, a physical compaction, and
/// writes after it. Returns the last revision.
async fn history(c: &mut Client) -> i64 {
    put(c, b"a", b"1", 0).await;
    put(c, b"b", b"1", 0).await;
    put(c, b"c", b"", 0).await;
    put(c, b"a", b"2", 0).await;
    put(c, b"bin\0key\xff", b"\x00\x01\x02", 0).await;
    for id in [LEASE_A, LEASE_B] {
        let r = c
            .lease_grant(LEASE_TTL, Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .expect("lease grant");
        assert_eq!(r.id(), id);
    }
    put(c, b"l/1", b"on a", LEASE_A).await;
    put(c, b"l/2", b"on a", LEASE_A).await;
    put(c, b"m", b"on b", LEASE_B).await;
    c.delete("b", None).await.expect("delete b");
    for k in [b"p/1", b"p/2", b"p/3"] {
        put(c, k, b"x", 0).await;
    }
    c.delete("p/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete prefix");
    let t = Txn::new().and_then(vec![
        TxnOp::put("t/z", "1", None),
        TxnOp::put("t/a", "2", None),
        TxnOp::put("a", "3", None),
        TxnOp::delete("c", None),
        TxnOp::put("t/m", "3", Some(PutOptions::new().with_lease(LEASE_A))),
    ]);
    assert!(c.txn(t).await.expect("txn").succeeded());
    c.lease_revoke(LEASE_B).await.expect("revoke B");
    let before_compaction = put(c, b"b", b"again", 0).await;
    put(c, b"a", b"4", 0).await;
    c.compact(
        before_compaction,
        Some(CompactionOptions::new().with_physical()),
    )
    .await
    .expect("compact");
    put(c, b"after", b"compaction", 0).await;
    put(c, b"l/2", b"still on a", LEASE_A).await
}

/// Users and roles through etcdctl (as an operator creates them): root with the root role, a
/// role with a prefix permission and a single-key one, a user holding it.
fn auth_setup(s: &Server) {
    for args in [
        vec!["role", "add", "root"],
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "reader",
            "read",
            "k/",
            "--prefix",
        ],
        vec!["role", "grant-permission", "reader", "readwrite", "single"],
        vec!["user", "add", "alice:alicepw"],
        vec!["user", "grant-role", "alice", "reader"],
    ] {
        let out = s.etcdctl(&args);
        assert!(out.success(), "etcdctl {args:?}: {}", out.stderr);
    }
    let root = format!("root:{ROOT_PASSWORD}");
    for args in [
        vec!["user", "add", root.as_str()],
        vec!["user", "grant-role", "root", "root"],
    ] {
        let out = s.etcdctl(&args);
        assert!(out.success(), "etcdctl {args:?}: {}", out.stderr);
    }
}

/// The messages of one snapshot stream: (remaining_bytes, blob length), and all blobs
/// concatenated.
async fn fetch(c: &mut Client) -> (Vec<(u64, usize)>, Vec<u8>) {
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut shape = Vec::new();
    let mut bytes = Vec::new();
    // Each turn takes one message; the stream ends (bounded by the db size / 1 byte).
    while let Some(m) = stream.message().await.expect("snapshot message") {
        shape.push((m.remaining_bytes(), m.blob().len()));
        bytes.extend_from_slice(m.blob());
    }
    (shape, bytes)
}

/// The stream is cut as etcd cuts it: 32 KiB blobs with remaining = total − sent, the last
/// data blob at remaining 0, then the 32-byte digest alone at remaining 0.
fn assert_etcd_shape(who: &str, shape: &[(u64, usize)], total: usize) {
    let (last, data) = shape.split_last().expect("messages");
    assert_eq!(*last, (0, 32), "{who}: the digest comes alone, last");
    let mut sent = 0usize;
    for (i, &(remaining, len)) in data.iter().enumerate() {
        sent += len;
        assert_eq!(
            remaining,
            (total - sent) as u64,
            "{who}: message {i} remaining"
        );
        if i + 1 < data.len() {
            assert_eq!(len, CHUNK, "{who}: message {i} is a full 32 KiB blob");
        }
    }
    assert_eq!(sent, total, "{who}: the blobs hold the db");
}

/// A snapshot file's buckets: name → entries.
type Buckets = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

fn buckets(bytes: Vec<u8>) -> Buckets {
    let db = Db::from_bytes(bytes).expect("open snapshot");
    assert!(
        matches!(
            db.verify_trailer().expect("trailer"),
            Trailer::Present { .. }
        ),
        "a snapshot stream ends in its sha256"
    );
    db.check().expect("bbolt's Tx.Check");
    db.buckets()
        .expect("buckets")
        .into_iter()
        .map(|b| {
            let entries = db.entries(&b).expect("entries");
            (b.name.clone(), entries)
        })
        .collect()
}

fn show(entries: &[(Vec<u8>, Vec<u8>)]) -> String {
    entries
        .iter()
        .map(|(k, v)| format!("{} = {}\n", k.escape_ascii(), v.escape_ascii()))
        .collect()
}

#[test]
fn key_bucket_and_records_equal_etcds_for_the_same_history() {
    let (etcd, retcd) = start_both(&[]);
    auth_setup(&etcd);
    auth_setup(&retcd);
    let rt = support::runtime();
    let (e, r) = rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let mut ec = connect(&etcd, REQUEST_TIMEOUT).await;
            let mut rc = connect(&retcd, REQUEST_TIMEOUT).await;
            let last = history(&mut ec).await;
            assert_eq!(history(&mut rc).await, last, "same revisions");
            let (eshape, e) = fetch(&mut ec).await;
            let (rshape, r) = fetch(&mut rc).await;
            assert_etcd_shape("etcd", &eshape, e.len() - 32);
            assert_etcd_shape("retcd", &rshape, r.len() - 32);
            (e, r)
        })
        .await
        .expect("within the test's time")
    });
    let (e, r) = (buckets(e), buckets(r));
    let names = |m: &BTreeMap<Vec<u8>, _>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&r), names(&e), "the same ten buckets");
    for name in names(&e) {
        eprintln!(
            "--- {}: etcd\n{}--- retcd\n{}",
            name.escape_ascii(),
            show(&e[&name]),
            show(&r[&name])
        );
    }
    // Byte-identical: revision keys and KeyValue values, leases, roles, alarms, removed members.
    for name in [
        etcd_db::KEY,
        etcd_db::LEASE,
        etcd_db::AUTH_ROLES,
        etcd_db::AUTH,
        etcd_db::ALARM,
        etcd_db::MEMBERS_REMOVED,
    ] {
        assert_eq!(
            r[name],
            e[name],
            "bucket {} (retcd vs etcd)",
            name.escape_ascii()
        );
    }
    let kvs = &r[etcd_db::KEY];
    assert!(kvs.len() > 10, "the key bucket holds the history");
    for (k, v) in kvs {
        etcd_keys::decode_revision_key(k).expect("revision key");
        etcd_keys::decode_key_value(v).expect("KeyValue");
    }
    // Users: the same but for the bcrypt salt; our encoding of etcd's user is etcd's bytes.
    let users = |b: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, retcd_engine::auth::User)> {
        b.iter()
            .map(|(k, v)| {
                let mut u = etcd_db::decode_user(v).expect("authpb.User");
                assert_eq!(etcd_db::encode_user(&u), *v, "encode(decode(etcd's user))");
                assert!(u.password.starts_with(b"$2"), "a bcrypt hash");
                u.password.clear();
                (k.clone(), u)
            })
            .collect()
    };
    assert_eq!(
        users(&r[etcd_db::AUTH_USERS]),
        users(&e[etcd_db::AUTH_USERS])
    );
    // meta: the compaction records are etcd's; consistent_index is each one's own Raft index.
    let meta = |b: &[(Vec<u8>, Vec<u8>)], key: &[u8]| {
        b.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    for key in [
        etcd_db::FINISHED_COMPACT_REV,
        etcd_db::SCHEDULED_COMPACT_REV,
    ] {
        assert_eq!(
            meta(&r[etcd_db::META], key),
            meta(&e[etcd_db::META], key),
            "meta {}",
            key.escape_ascii()
        );
    }
    for key in [etcd_db::CONSISTENT_INDEX, etcd_db::TERM] {
        let v = meta(&r[etcd_db::META], key).expect("retcd writes it");
        assert!(etcd_db::decode_u64(&v).expect("u64") > 0);
    }
    // One member each, with its own name and URLs.
    let member = |b: &[(Vec<u8>, Vec<u8>)], s: &Server| {
        assert_eq!(b.len(), 1, "one member");
        let m = etcd_db::decode_member(&b[0].1).expect("member JSON");
        assert_eq!(b[0].0, etcd_db::member_key(m.id));
        assert_eq!(m.name, s.name());
        assert_eq!(m.peer_urls, vec![s.peer_url()]);
        assert_eq!(m.client_urls, vec![s.client_url()]);
    };
    member(&e[etcd_db::MEMBERS], &etcd);
    member(&r[etcd_db::MEMBERS], &retcd);
    let version = meta(&r[etcd_db::CLUSTER], etcd_db::CLUSTER_VERSION).expect("cluster version");
    etcd_db::decode_cluster_version(&version).expect("X.Y.0");
}

/// `etcdctl -w json` output without the ids that differ between two clusters.
fn without_ids(json: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("etcdctl JSON {json:?}: {e}"));
    // etcdctl nests them in "header", except `lease timetolive`, which flattens them.
    fn strip(o: &mut serde_json::Value) {
        if let Some(o) = o.as_object_mut() {
            o.remove("cluster_id");
            o.remove("member_id");
            o.remove("raft_term");
        }
    }
    if let Some(h) = v.get_mut("header") {
        strip(h);
    }
    strip(&mut v);
    v
}

fn ctl(s: &Server, args: &[&str]) -> String {
    let out = s.etcdctl(args);
    assert!(
        out.success(),
        "etcdctl {args:?} against {}: {}",
        s.name(),
        out.stderr
    );
    out.stdout
}

/// What the migration compares: (what, answer) pairs from etcdctl.
fn observe(s: &Server) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let get = ctl(s, &["get", "", "--prefix", "-w", "json"]);
    out.push(("get".into(), without_ids(&get)));
    let leases = ctl(s, &["lease", "list", "-w", "json"]);
    let mut leases = without_ids(&leases);
    out.push(("lease list".into(), leases["leases"].take()));
    let id = format!("{LEASE_A:x}");
    let ttl = ctl(s, &["lease", "timetolive", &id, "--keys", "-w", "json"]);
    let mut ttl = without_ids(&ttl);
    // The remaining TTL runs on each server's clock.
    ttl.as_object_mut().expect("object").remove("ttl");
    // etcd lists a lease's keys from a Go map: in no particular order.
    if let Some(keys) = ttl.get_mut("keys").and_then(|k| k.as_array_mut()) {
        keys.sort_by_key(|k| k.as_str().unwrap_or_default().to_string());
    }
    out.push(("timetolive".into(), ttl));
    let users = ctl(s, &["user", "list", "-w", "json"]);
    out.push(("user list".into(), without_ids(&users)));
    for role in ["reader", "root"] {
        let r = ctl(s, &["role", "get", role, "-w", "json"]);
        out.push((format!("role get {role}"), without_ids(&r)));
    }
    let u = ctl(s, &["user", "get", "alice", "-w", "json"]);
    out.push(("user get alice".into(), without_ids(&u)));
    let hash = ctl(s, &["endpoint", "hashkv", "-w", "json"]);
    let mut hash: serde_json::Value = serde_json::from_str(&hash).expect("hashkv JSON");
    let hash = hash[0]["HashKV"].take().to_string();
    out.push(("hashkv".into(), without_ids(&hash)));
    out
}

#[test]
fn restored_into_real_etcd_answers_as_retcd() {
    let mut retcd = Server::start_in_tempdir(Kind::Retcd);
    // The etcd that will serve the restored snapshot: started once for its ports and flags.
    let mut etcd = Server::start_in_tempdir(Kind::Etcd);
    etcd.stop();
    let rt = support::runtime();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let mut c = connect(&retcd, REQUEST_TIMEOUT).await;
            history(&mut c).await;
        })
        .await
        .expect("within the test's time")
    });
    auth_setup(&retcd);
    // Auth on at the end: from then on every call is root's.
    ctl(&retcd, &["auth", "enable"]);
    let root = format!("root:{ROOT_PASSWORD}");
    retcd.set_etcdctl_user(&root);
    let file = retcd.dir().join("retcd.snapshot");
    let file_s = file.display().to_string();
    let saved = ctl(&retcd, &["snapshot", "save", &file_s]);
    eprintln!("snapshot save: {saved}");

    let status = ctl(&retcd, &["snapshot", "status", &file_s, "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let bytes = std::fs::read(&file).expect("snapshot file");
    assert_eq!(bytes.len() % 512, 32, "db ‖ sha256");
    assert_eq!(status["totalSize"], bytes.len() as u64 - 32);
    let db = Db::from_bytes(bytes).expect("open");
    assert!(matches!(
        db.verify_trailer().expect("trailer verifies"),
        Trailer::Present { .. }
    ));
    let ours = retcd_engine::bbolt::snapshot_status(&db).expect("status");
    assert_eq!(status["hash"], ours.hash, "etcdctl's hash is ours");
    assert_eq!(status["revision"], ours.revision);
    assert_eq!(status["totalKey"], ours.total_key);

    let before = observe(&retcd);

    // Restore into the stopped etcd's data dir, with its name and peer URL.
    std::fs::remove_dir_all(etcd.data_dir()).expect("clear etcd's data dir");
    let cluster = format!("{}={}", etcd.name(), etcd.peer_url());
    let data_dir = etcd.data_dir().display().to_string();
    let restored = ctl(
        &retcd,
        &[
            "snapshot",
            "restore",
            &file_s,
            "--data-dir",
            &data_dir,
            "--name",
            etcd.name(),
            "--initial-cluster",
            &cluster,
            "--initial-advertise-peer-urls",
            &etcd.peer_url(),
        ],
    );
    eprintln!("snapshot restore: {restored}");
    etcd.set_etcdctl_user(&root);
    etcd.start_again();
    let after = observe(&etcd);
    for ((what, r), (_, e)) in before.iter().zip(&after) {
        eprintln!("{what}: retcd {r}\n{what}: etcd  {e}");
    }
    for ((what, r), (_, e)) in before.iter().zip(&after) {
        assert_eq!(e, r, "{what}: restored etcd vs retcd");
    }
    // etcd serves it: a write on top goes on from retcd's revision.
    let rev = before[0].1["header"]["revision"]
        .as_i64()
        .expect("revision");
    let put = ctl(&etcd, &["put", "new", "v", "-w", "json"]);
    assert_eq!(without_ids(&put)["header"]["revision"], rev + 1);
    retcd.stop();
}

/// Fills `c` with `txns` txns of 100 puts of 2 KiB each (~200 KiB per txn).
async fn fill(c: &mut Client, txns: usize) {
    let value = vec![b'v'; 2048];
    for t in 0..txns {
        let ops = (0..100)
            .map(|i| TxnOp::put(format!("fill/{t:04}/{i:03}"), value.clone(), None))
            .collect::<Vec<_>>();
        assert!(
            c.txn(Txn::new().and_then(ops))
                .await
                .expect("txn")
                .succeeded()
        );
    }
}

#[test]
fn a_cancelled_stream_ends_the_writer_and_the_server_serves_on() {
    let retcd = Server::start_in_tempdir(Kind::Retcd);
    let pid = retcd.pid().expect("running");
    let rt = support::runtime();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let mut c = connect(&retcd, REQUEST_TIMEOUT).await;
            // ~8 MiB: far more than the queue and HTTP/2 windows hold, so the writer waits.
            fill(&mut c, 40).await;
            let log_start = retcd.log_len();
            let mut stream = c.snapshot().await.expect("snapshot");
            let first = stream.message().await.expect("first").expect("a message");
            assert_eq!(first.blob().len(), CHUNK);
            assert!(first.remaining_bytes() > 4 << 20);
            assert_eq!(
                support::threads_named(pid, "retcd-snapshot"),
                1,
                "the writer waits for the client"
            );
            drop(stream);
            drop(c);
            let left = tokio::task::spawn_blocking(move || {
                support::wait_threads(pid, "retcd-snapshot", 0)
            })
            .await
            .expect("join");
            assert_eq!(left, 0, "the writer's thread ended after the cancel");
            let log = retcd.log_since(log_start);
            assert!(
                log.contains("sending database snapshot to client")
                    && log.contains("the client went away")
                    && !log.contains("successfully sent database snapshot"),
                "the cancel is logged as etcd logs a failed send:\n{log}"
            );
            // Still serving: a write, a read, a whole snapshot.
            let mut c = connect(&retcd, REQUEST_TIMEOUT).await;
            let rev = put(&mut c, b"after", b"cancel", 0).await;
            let got = c.get("after", None).await.expect("get");
            assert_eq!(got.kvs()[0].value(), b"cancel");
            let (shape, bytes) = fetch(&mut c).await;
            assert_etcd_shape("retcd", &shape, bytes.len() - 32);
            let b = buckets(bytes);
            let (last, _) = b[etcd_db::KEY].last().expect("keys");
            assert_eq!(etcd_keys::decode_revision_key(last).expect("rev").main, rev);
        })
        .await
        .expect("within the test's time")
    });
}

#[test]
fn a_snapshot_during_writes_holds_one_revision() {
    let retcd = Server::start_in_tempdir(Kind::Retcd);
    let rt = support::runtime();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let mut c = connect(&retcd, REQUEST_TIMEOUT).await;
            fill(&mut c, 10).await;
            // Writers over 50 keys, with deletes, until told to stop.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut writers = Vec::new();
            for w in 0..2 {
                let mut wc = connect(&retcd, REQUEST_TIMEOUT).await;
                let stop = stop.clone();
                writers.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    // Bounded: the test's timeout, and the stop flag after the snapshot.
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let key = format!("w/{:02}", (n * 7 + w) % 50);
                        if n % 5 == 4 {
                            wc.delete(key, None).await.expect("delete");
                        } else {
                            put(&mut wc, key.as_bytes(), n.to_string().as_bytes(), 0).await;
                        }
                        n += 1;
                    }
                    n
                }));
            }
            // Let some writes land first (a revision well above the fill's).
            let start = support::rev(&mut c).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while support::rev(&mut c).await < start + 20 {
                assert!(Instant::now() < deadline, "writers make progress");
            }
            let (_, bytes) = fetch(&mut c).await;
            let during = support::rev(&mut c).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for w in writers {
                assert!(w.await.expect("writer") > 0);
            }
            let b = buckets(bytes);
            // Replaying the key bucket gives the state at its last revision R: every revision
            // from 2 to R present (nothing compacted), and the live keys equal a read at R.
            let mut state: BTreeMap<Vec<u8>, etcd_keys::BucketRevision> = BTreeMap::new();
            let mut values = BTreeMap::new();
            let mut mains = Vec::new();
            for (k, v) in &b[etcd_db::KEY] {
                let rev = etcd_keys::decode_revision_key(k).expect("revision");
                let kv = etcd_keys::decode_key_value(v).expect("KeyValue");
                if mains.last() != Some(&rev.main) {
                    mains.push(rev.main);
                }
                if rev.tombstone {
                    state.remove(&kv.key);
                    values.remove(&kv.key);
                } else {
                    state.insert(kv.key.clone(), rev);
                    values.insert(kv.key.clone(), (kv.value, kv.mod_revision, kv.version));
                }
            }
            let r = *mains.last().expect("revisions");
            assert_eq!(mains, (2..=r).collect::<Vec<_>>(), "every revision up to R");
            assert!(r > start && r <= during, "taken while writes went on");
            let meta = &b[etcd_db::META];
            assert!(meta.iter().any(|(k, _)| k == etcd_db::CONSISTENT_INDEX));
            let at_r = c
                .get("", Some(GetOptions::new().with_prefix().with_revision(r)))
                .await
                .expect("get at R");
            let served: BTreeMap<Vec<u8>, (Vec<u8>, i64, i64)> = at_r
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key().to_vec(),
                        (kv.value().to_vec(), kv.mod_revision(), kv.version()),
                    )
                })
                .collect();
            assert_eq!(values, served, "the snapshot is the state at revision {r}");
        })
        .await
        .expect("within the test's time")
    });
}

/// The anonymous memory (heap, not the mmapped page store) of process `pid`, in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("RssAnon kB");
    kb * 1024
}

#[test]
fn a_slow_client_does_not_make_the_server_buffer_the_db() {
    const DB_AT_LEAST: u64 = 36 << 20;
    /// Far below the db: the bounded queue, HTTP/2 windows and the writer's pages.
    const GROWTH_AT_MOST: u64 = 16 << 20;
    const PAUSE_SAMPLES: usize = 50;
    const PAUSE_STEP: Duration = Duration::from_millis(100);
    let retcd = Server::start_in_tempdir(Kind::Retcd);
    let pid = retcd.pid().expect("running");
    let rt = support::runtime();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let mut c = connect(&retcd, REQUEST_TIMEOUT).await;
            fill(&mut c, 190).await;
            let baseline = rss_anon(pid);
            let mut stream = c.snapshot().await.expect("snapshot");
            let first = stream.message().await.expect("message").expect("first");
            let (mut total, mut peak, mut n) = (first.blob().len() as u64, baseline, 1u64);
            // A client that stops reading for a while (load shaping, not synchronization): a
            // server that does not wait for it would run ahead and hold the db in memory
            // (measured: ~8 MB/s of a debug build, so tens of MiB in this pause).
            for _ in 0..PAUSE_SAMPLES {
                tokio::time::sleep(PAUSE_STEP).await;
                peak = peak.max(rss_anon(pid));
                if peak - baseline >= GROWTH_AT_MOST {
                    break;
                }
            }
            // Then the rest at full speed; one message per turn, the stream ends after the
            // db and its digest.
            while let Some(m) = stream.message().await.expect("message") {
                total += m.blob().len() as u64;
                n += 1;
                if n % 16 == 0 {
                    peak = peak.max(rss_anon(pid));
                }
            }
            eprintln!("db {total} bytes in {n} messages; server RssAnon {baseline} → peak {peak}");
            assert!(total > DB_AT_LEAST, "a db of {total} bytes");
            assert!(
                peak - baseline < GROWTH_AT_MOST,
                "the server's memory grew by {} bytes while streaming {total}",
                peak - baseline
            );
        })
        .await
        .expect("within the test's time")
    });
}

/// A 3-member cluster, one member removed and a learner added; the snapshot of member 0 holds
/// the members (JSON keyed by hex id), the removed id and, for retcd, the voters and learners in
/// `confState`, as `member list` shows them. Checked on etcd and on retcd with the same steps.
fn membership_in_the_snapshot(kind: Kind) {
    let mut c = support::cluster::Cluster::start(kind, 3, &[]);
    let learner = c.add_member("learner", true);
    let learner_id = c.member_id(learner);
    let removed = c.member_id(2);
    // Asked of the two voters that stay (a learner refuses member calls).
    let voters = format!("{},{}", c.members[0].endpoint(), c.members[1].endpoint());
    let out =
        support::cluster::reconfigure_at(&voters, &["member", "remove", &format!("{removed:x}")]);
    assert!(out.success(), "{}: member remove: {out:?}", kind.label());
    c.members[2].stop();
    c.members.remove(2);
    c.wait_caught_up();
    let m0 = &c.members[0];
    let file = m0.dir().join("cluster.snapshot");
    let file_s = file.display().to_string();
    ctl(m0, &["snapshot", "save", &file_s]);
    let list: serde_json::Value =
        serde_json::from_str(&ctl(m0, &["member", "list", "-w", "json"])).expect("member list");
    let b = buckets(std::fs::read(&file).expect("snapshot file"));
    let who = kind.label();

    let mut members: BTreeMap<u64, etcd_db::Member> = BTreeMap::new();
    for (k, v) in &b[etcd_db::MEMBERS] {
        let m = etcd_db::decode_member(v).expect("member JSON");
        assert_eq!(*k, etcd_db::member_key(m.id), "{who}: key is the hex id");
        members.insert(m.id, m);
    }
    let listed = list["members"].as_array().expect("members");
    assert_eq!(
        members.len(),
        listed.len(),
        "{who}: {members:?} vs {listed:?}"
    );
    for l in listed {
        let id = l["ID"].as_u64().expect("ID");
        let m = &members[&id];
        let urls = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|u| u.as_str().expect("url").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            m.peer_urls,
            urls(&l["peerURLs"]),
            "{who}: peer URLs of {id:x}"
        );
        assert_eq!(
            m.is_learner,
            id == learner_id,
            "{who}: learner flag of {id:x}"
        );
        if id != learner_id {
            // The learner may not have published its name yet; the voters have.
            assert_eq!(m.name, l["name"].as_str().expect("name"), "{who}: name");
            assert_eq!(m.client_urls, urls(&l["clientURLs"]), "{who}: client URLs");
        }
    }
    assert_eq!(
        b[etcd_db::MEMBERS_REMOVED],
        vec![(etcd_db::member_key(removed), b"removed".to_vec())],
        "{who}: the removed member"
    );
    if kind == Kind::Retcd {
        let (_, cs) = b[etcd_db::META]
            .iter()
            .find(|(k, _)| k == etcd_db::CONF_STATE)
            .expect("confState");
        let cs = etcd_db::decode_conf_state(cs).expect("confState JSON");
        assert_eq!(cs.learners, vec![learner_id]);
        let mut voters: Vec<u64> = members
            .keys()
            .copied()
            .filter(|&id| id != learner_id)
            .collect();
        voters.sort_unstable();
        assert_eq!(cs.voters, voters);
    }
}

#[test]
fn a_clusters_members_and_removed_members_are_etcds_records() {
    std::thread::scope(|s| {
        let e = s.spawn(|| membership_in_the_snapshot(Kind::Etcd));
        let r = s.spawn(|| membership_in_the_snapshot(Kind::Retcd));
        // Join both before failing, so both clusters are stopped.
        match (e.join(), r.join()) {
            (Ok(()), Ok(())) => {}
            (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
        }
    });
}

/// etcd 3.5's backend hash over a snapshot's buckets, `meta`'s consistent_index and term skipped.
fn backend_hash_of(b: &Buckets) -> u32 {
    let mut h = 0u32;
    for (name, entries) in b {
        h = crc32c::crc32c_append(h, name);
        for (k, v) in entries {
            let skipped = name.as_slice() == etcd_db::META
                && (k.as_slice() == etcd_db::CONSISTENT_INDEX || k.as_slice() == etcd_db::TERM);
            if !skipped {
                h = crc32c::crc32c_append(h, k);
                h = crc32c::crc32c_append(h, v);
            }
        }
    }
    h
}

/// Maintenance.Hash is etcd 3.5's backend hash of the db a snapshot streams at the same state,
/// and every member of a cluster that applied the same entries answers the same hash.
#[test]
fn hash_is_the_backend_hash_of_the_snapshot_db_and_members_agree() {
    let mut c = support::cluster::Cluster::start(Kind::Retcd, 3, &[]);
    let leader = c.leader();
    let rt = support::runtime();
    let mut clients: Vec<Client> = c
        .members
        .iter()
        .map(|m| rt.block_on(connect(m, Duration::from_secs(10))))
        .collect();
    rt.block_on(async {
        history(&mut clients[leader]).await;
    });
    c.wait_caught_up();
    let (hashes, bytes) = rt.block_on(async {
        let mut hashes = Vec::new();
        for cl in &mut clients {
            hashes.push(cl.hash().await.expect("Maintenance.Hash").hash());
        }
        let (_, bytes) = fetch(&mut clients[leader]).await;
        (hashes, bytes)
    });
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "members answer different hashes: {hashes:?}"
    );
    assert_eq!(
        hashes[leader],
        backend_hash_of(&buckets(bytes)),
        "Hash is the backend hash of the snapshot db"
    );
}
