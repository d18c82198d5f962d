//! engine::bbolt against the real thing: etcd 3.4's `etcdctl snapshot save|status|restore` and
//! an etcd server (Debian's etcd 3.4.23; `bash .ci/setup` installs them).
//!
//! (a) a snapshot saved from a real etcd is read, checked and its status computed as etcdctl
//!     computes it; (b) a db written by our writer with etcd's buckets is accepted by
//!     `etcdctl snapshot status` with the same hash/revision/total keys; (c) it is restored with
//!     `etcdctl snapshot restore` and a real etcd started on it serves exactly the keys written.
//!
//! Every child process is owned by a guard that kills it on drop (panics included); every wait is
//! a bounded poll.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use retcd_engine::bbolt::{
    Db, MemSource, Sha256Trailer, Source, SourceError, Trailer, Visit, snapshot_status, write_db,
};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);

fn etcd_bin() -> PathBuf {
    std::env::var_os("RETCD_TEST_ETCD_BIN").map_or_else(|| "/usr/bin/etcd".into(), PathBuf::from)
}

fn etcdctl_bin() -> PathBuf {
    std::env::var_os("RETCD_TEST_ETCDCTL_BIN")
        .map_or_else(|| "/usr/bin/etcdctl".into(), PathBuf::from)
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs etcdctl with `args`, killed after [`ETCDCTL_TIMEOUT`].
fn etcdctl(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let child = Command::new(etcdctl_bin())
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn etcdctl (bash .ci/setup installs it)");
    let mut guard = Guard(child);
    let deadline = Instant::now() + ETCDCTL_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait etcdctl") {
            break status;
        }
        assert!(Instant::now() < deadline, "etcdctl {args:?} timed out");
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: std::fs::read(&out).expect("read stdout"),
        stderr: std::fs::read(&err).expect("read stderr"),
    }
}

/// Runs etcdctl and panics unless it succeeds; returns stdout.
fn etcdctl_ok(args: &[&str]) -> String {
    let out = etcdctl(args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A single-member etcd on loopback.
struct Etcd {
    guard: Guard,
    endpoint: String,
    log: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data in `data_dir` (new or restored) as member `n1` whose peer URL
    /// is on `peer_port`, and waits until it is healthy.
    fn try_start(data_dir: &Path, peer_port: u16) -> Result<Etcd, String> {
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = data_dir.with_extension("log");
        let child = Command::new(etcd_bin())
            .args(["--name", "n1", "--data-dir"])
            .arg(data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("n1={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn etcd (bash .ci/setup installs it)");
        let mut etcd = Etcd {
            guard: Guard(child),
            endpoint: client,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = etcd.guard.0.try_wait().expect("wait etcd") {
                return Err(format!("etcd exited with {status}:\n{}", etcd.log_tail()));
            }
            let health = etcdctl(&["--endpoints", &etcd.endpoint, "endpoint", "health"]);
            if health.status.success() {
                return Ok(etcd);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd not healthy after {READY_TIMEOUT:?}:\n{}",
                    etcd.log_tail()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Prepares a data dir with `prepare(dir, peer_port)` and starts etcd on it; tries again
    /// with fresh ports and a fresh dir (at most 3 times) when another process took a port
    /// between our probe and etcd's bind.
    fn start(parent: &Path, name: &str, prepare: &dyn Fn(&Path, u16)) -> Etcd {
        let mut last = String::new();
        for attempt in 0..3 {
            let data_dir = parent.join(format!("{name}-{attempt}"));
            let peer_port = free_port();
            prepare(&data_dir, peer_port);
            match Etcd::try_start(&data_dir, peer_port) {
                Ok(etcd) => return etcd,
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("etcd could not bind its ports 3 times: {last}");
    }

    fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["--endpoints", &self.endpoint];
        all.extend_from_slice(args);
        etcdctl_ok(&all)
    }

    /// `lease grant TTL`: the lease id in etcdctl's hex.
    fn grant_lease(&self, ttl: u64) -> String {
        let out = self.ctl(&["lease", "grant", &ttl.to_string()]);
        out.split_whitespace().nth(1).expect("lease id").to_string()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(8192)..]).into_owned()
    }
}

/// `etcdctl snapshot status -w json` of `file`: (hash, revision, totalKey, totalSize).
fn etcdctl_status(file: &Path) -> (u32, i64, u64, u64) {
    let out = etcdctl_ok(&[
        "snapshot",
        "status",
        file.to_str().expect("utf-8 path"),
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    (
        v["hash"].as_u64().expect("hash") as u32,
        v["revision"].as_i64().expect("revision"),
        v["totalKey"].as_u64().expect("totalKey"),
        v["totalSize"].as_u64().expect("totalSize"),
    )
}

fn our_status(file: &Path) -> (u32, i64, u64, u64) {
    let db = Db::open(file).expect("open");
    let s = snapshot_status(&db).expect("snapshot status");
    (s.hash, s.revision, s.total_key, s.total_size)
}

/// (main, sub) of a `key` bucket key (reference §2.2).
fn revision(key: &[u8]) -> (u64, u64) {
    assert!(
        key.len() == 17 || (key.len() == 18 && key[17] == b't'),
        "{key:?}"
    );
    assert_eq!(key[8], b'_');
    (
        u64::from_be_bytes(key[..8].try_into().unwrap()),
        u64::from_be_bytes(key[9..17].try_into().unwrap()),
    )
}

#[test]
fn reads_a_snapshot_saved_from_real_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path(), "data", &|_, _| {});
    let lease_id = etcd.grant_lease(600);
    etcd.ctl(&["put", "foo", "bar"]);
    etcd.ctl(&["put", "foo", "bar2"]);
    etcd.ctl(&["put", "k2", "v2"]);
    etcd.ctl(&["del", "k2"]);
    etcd.ctl(&["put", "leased", "x", "--lease", &lease_id]);
    etcd.ctl(&["put", "big", &"b".repeat(10_000)]);
    for i in 0..30 {
        etcd.ctl(&["put", &format!("many/{i:03}"), &"v".repeat(200)]);
    }
    let snap = dir.path().join("snap.db");
    etcd.ctl(&["snapshot", "save", snap.to_str().unwrap()]);
    drop(etcd);

    let db = Db::open(&snap).expect("open etcd's snapshot");
    assert!(matches!(
        db.verify_trailer().expect("trailer"),
        Trailer::Present { .. }
    ));
    let report = db.check().expect("check etcd's snapshot");
    assert!(report.keys > 40);
    let names: Vec<Vec<u8>> = db.buckets().unwrap().into_iter().map(|b| b.name).collect();
    for want in [
        "alarm",
        "auth",
        "authRoles",
        "authUsers",
        "cluster",
        "key",
        "lease",
        "members",
        "members_removed",
        "meta",
    ] {
        assert!(
            names.contains(&want.as_bytes().to_vec()),
            "bucket {want} in {names:?}"
        );
    }
    let key = db.bucket(b"key").unwrap().expect("key bucket");
    let entries = db.entries(&key).expect("key entries");
    let revs: Vec<(u64, u64)> = entries.iter().map(|(k, _)| revision(k)).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revision order: {revs:?}"
    );
    assert!(
        entries
            .iter()
            .any(|(_, v)| v.windows(4).any(|w| w == b"bar2"))
    );
    assert_eq!(
        entries.iter().filter(|(k, _)| k.len() == 18).count(),
        1,
        "one tombstone"
    );
    // Real etcd writes its small buckets inline: the reader handles both kinds.
    assert!(db.bucket(b"meta").unwrap().unwrap().is_inline());
    assert!(!key.is_inline());
    let lease_bucket = db.bucket(b"lease").unwrap().unwrap();
    assert_eq!(db.entries(&lease_bucket).unwrap().len(), 1);

    let theirs = etcdctl_status(&snap);
    let ours = our_status(&snap);
    assert_eq!(
        ours, theirs,
        "(hash, revision, totalKey, totalSize): ours vs etcdctl"
    );
    assert_eq!(ours.1 as u64, revs.last().unwrap().0);
}

/// Protobuf: a varint field (skipped when zero, as proto3 does).
fn pb_varint(out: &mut Vec<u8>, field: u32, mut v: u64) {
    if v == 0 {
        return;
    }
    let mut tag = u64::from(field << 3);
    loop {
        let more = tag >= 0x80;
        out.push((tag as u8 & 0x7F) | if more { 0x80 } else { 0 });
        tag >>= 7;
        if !more {
            break;
        }
    }
    loop {
        let more = v >= 0x80;
        out.push((v as u8 & 0x7F) | if more { 0x80 } else { 0 });
        v >>= 7;
        if !more {
            break;
        }
    }
}

/// Protobuf: a length-delimited field (skipped when empty).
fn pb_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    out.push(((field << 3) | 2) as u8);
    let mut n = bytes.len() as u64;
    loop {
        let more = n >= 0x80;
        out.push((n as u8 & 0x7F) | if more { 0x80 } else { 0 });
        n >>= 7;
        if !more {
            break;
        }
    }
    out.extend_from_slice(bytes);
}

/// A key's state as etcd serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kv {
    value: Vec<u8>,
    create: i64,
    modified: i64,
    version: i64,
    lease: i64,
}

/// etcd's buckets (reference §2.1) with a history of puts and deletes; returns the source and
/// the live keys etcd must serve from it.
fn etcd_db() -> (MemSource, BTreeMap<Vec<u8>, Kv>, i64) {
    const LEASE: i64 = 0x1234_5678;
    let mut live: BTreeMap<Vec<u8>, Kv> = BTreeMap::new();
    let mut key_bucket = Vec::new();
    let mut rev = 1i64;
    let mut put = |live: &mut BTreeMap<Vec<u8>, Kv>, key: &[u8], value: Vec<u8>, lease: i64| {
        rev += 1;
        let kv = match live.get(key) {
            Some(old) => Kv {
                value,
                create: old.create,
                modified: rev,
                version: old.version + 1,
                lease,
            },
            None => Kv {
                value,
                create: rev,
                modified: rev,
                version: 1,
                lease,
            },
        };
        let mut pb = Vec::new();
        pb_bytes(&mut pb, 1, key);
        pb_varint(&mut pb, 2, kv.create as u64);
        pb_varint(&mut pb, 3, kv.modified as u64);
        pb_varint(&mut pb, 4, kv.version as u64);
        pb_bytes(&mut pb, 5, &kv.value);
        pb_varint(&mut pb, 6, kv.lease as u64);
        let mut k = rev.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        live.insert(key.to_vec(), kv);
        (k, pb, rev)
    };
    // 15,000 revisions: ~260 leaves, so the key bucket is a three-level tree.
    for round in 0..3 {
        for i in 0..5000 {
            let (k, v, _) = put(
                &mut live,
                format!("k/{i:05}").as_bytes(),
                format!("v{round}-{i}").into_bytes(),
                0,
            );
            key_bucket.push((k, v));
        }
    }
    let (k, v, _) = put(&mut live, b"big", vec![b'B'; 10_000], 0);
    key_bucket.push((k, v));
    let (k, v, _) = put(&mut live, b"leased", b"x".to_vec(), LEASE);
    key_bucket.push((k, v));
    // Delete k/00007: a tombstone {main, 0} ‖ 't' holding KeyValue{key}.
    let (_, _, tomb) = put(&mut live, b"k/00007", vec![], 0);
    live.remove(&b"k/00007"[..]);
    let mut k = tomb.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&0u64.to_be_bytes());
    k.push(b't');
    let mut v = Vec::new();
    pb_bytes(&mut v, 1, b"k/00007");
    key_bucket.push((k, v));
    let last = tomb;

    let mut lease = Vec::new();
    pb_varint(&mut lease, 1, LEASE as u64);
    pb_varint(&mut lease, 2, 600);
    let src = MemSource {
        buckets: vec![
            (b"key".to_vec(), key_bucket),
            (
                b"meta".to_vec(),
                vec![(b"consistent_index".to_vec(), 1000u64.to_be_bytes().to_vec())],
            ),
            (
                b"lease".to_vec(),
                vec![(LEASE.to_be_bytes().to_vec(), lease)],
            ),
            (b"alarm".to_vec(), vec![]),
            (
                b"auth".to_vec(),
                vec![(b"authRevision".to_vec(), 1u64.to_be_bytes().to_vec())],
            ),
            (b"authRoles".to_vec(), vec![]),
            (b"authUsers".to_vec(), vec![]),
            (
                b"cluster".to_vec(),
                vec![(b"clusterVersion".to_vec(), b"3.4.0".to_vec())],
            ),
            (b"members".to_vec(), vec![]),
            (b"members_removed".to_vec(), vec![]),
        ],
    };
    (src, live, last)
}

#[test]
fn etcdctl_accepts_and_restores_what_we_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, live, last_rev) = etcd_db();
    let snap = dir.path().join("ours.db");
    let mut sink = Sha256Trailer::new(std::fs::File::create(&snap).expect("create"));
    write_db(&mut sink, &src).expect("write_db");
    sink.finish().expect("trailer");

    let db = Db::open(&snap).expect("open ours");
    let report = db.check().expect("check ours");
    assert_eq!(report.unreachable, 0);
    drop(db);

    // (b) status: etcdctl opens it with bbolt, runs Tx.Check and hashes it as we do.
    let theirs = etcdctl_status(&snap);
    let ours = our_status(&snap);
    assert_eq!(
        ours, theirs,
        "(hash, revision, totalKey, totalSize): ours vs etcdctl"
    );
    assert_eq!(ours.1, last_rev);

    // (c) restore (verifies the sha256 trailer), then a real etcd serves what we wrote.
    let etcd = Etcd::start(dir.path(), "restored", &|data, peer_port| {
        let peer = format!("http://127.0.0.1:{peer_port}");
        etcdctl_ok(&[
            "snapshot",
            "restore",
            snap.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--name",
            "n1",
            "--initial-cluster",
            &format!("n1={peer}"),
            "--initial-advertise-peer-urls",
            &peer,
        ]);
    });
    let out = etcd.ctl(&["get", "", "--prefix", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("get json");
    assert_eq!(v["header"]["revision"].as_i64(), Some(last_rev), "{out}");
    let b64 = |s: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().expect("base64 string"))
            .expect("base64")
    };
    let mut served = BTreeMap::new();
    for kv in v["kvs"].as_array().expect("kvs") {
        let n = |f: &str| kv[f].as_i64().unwrap_or(0);
        served.insert(
            b64(&kv["key"]),
            Kv {
                value: kv.get("value").map(b64).unwrap_or_default(),
                create: n("create_revision"),
                modified: n("mod_revision"),
                version: n("version"),
                lease: n("lease"),
            },
        );
    }
    assert_eq!(served.len(), live.len());
    assert!(served == live, "etcd serves something else than we wrote");
    let leases = etcd.ctl(&["lease", "list"]);
    assert!(leases.contains("12345678"), "lease restored: {leases}");
}

/// Counts the bytes allocated by each thread, so that the writer's peak memory can be measured
/// while other tests run on other threads.
struct PerThread;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the bookkeeping only touches const-initialized thread-locals
// (no allocation inside the allocator).
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` come from an earlier allocation by `System` (through us).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: PerThread = PerThread;

/// etcd-like buckets generated on the fly: `key` with `revisions` 17-byte revision keys and
/// 100-byte values, and a small `meta`. Scanning allocates nothing.
struct Generated {
    revisions: u64,
}

impl Source for Generated {
    fn bucket_names(&self) -> Vec<Vec<u8>> {
        vec![b"meta".to_vec(), b"key".to_vec()]
    }

    fn scan(&self, bucket: usize, visit: &mut Visit<'_>) -> Result<(), SourceError> {
        if bucket == 0 {
            let _ = visit(b"consistent_index", &7u64.to_be_bytes());
            return Ok(());
        }
        let value = [b'v'; 100];
        let mut key = [0u8; 17];
        key[8] = b'_';
        for main in 2..2 + self.revisions {
            key[..8].copy_from_slice(&main.to_be_bytes());
            if visit(&key, &value).is_break() {
                break;
            }
        }
        Ok(())
    }
}

#[test]
fn writer_memory_does_not_grow_with_the_database() {
    let mut peaks = Vec::new();
    for revisions in [100_000u64, 1_000_000] {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let summary = write_db(&mut std::io::sink(), &Generated { revisions }).expect("write");
        let peak = PEAK.with(Cell::get) - base;
        eprintln!(
            "{revisions} revisions: {} bytes written, peak {peak} bytes allocated",
            summary.bytes
        );
        peaks.push((summary.bytes, peak));
    }
    let (small, large) = (peaks[0], peaks[1]);
    assert!(large.0 > 100 << 20, "the large db is over 100 MiB");
    // DESIGN.md §7.2: one open page per level and a few keys; nothing per entry or per page.
    assert!(large.1 < 256 << 10, "peak {} bytes", large.1);
    assert!(
        large.1 < small.1 + (16 << 10),
        "peak grew with the db: {peaks:?}"
    );
}

/// `get "" --prefix -w json` of etcd as (key, value, create, mod, version, lease) tuples, and
/// its header revision.
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);
fn etcd_rows(etcd: &Etcd, rev: i64) -> (Vec<Row>, i64) {
    let out = etcd.ctl(&["get", "", "--prefix", "-w", "json", &format!("--rev={rev}")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("base64")
    };
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let rows = v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        b64(&kv["key"]),
                        b64(&kv["value"]),
                        int(&kv["create_revision"]),
                        int(&kv["mod_revision"]),
                        int(&kv["version"]),
                        int(&kv["lease"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (rows, int(&v["header"]["revision"]))
}

/// (hash, compact revision) of `endpoint hashkv --rev` on etcd.
fn etcd_hashkv(etcd: &Etcd, rev: i64) -> (u32, i64) {
    let out = etcd.ctl(&["endpoint", "hashkv", "-w", "json", &format!("--rev={rev}")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
    let h = &v[0]["HashKV"];
    (
        h["hash"].as_u64().expect("hash") as u32,
        h["compact_revision"].as_i64().expect("compact revision"),
    )
}

/// etcd → retcd: a snapshot saved from a real etcd, imported into a fresh retcd store
/// (`Mvcc::import_etcd`, DESIGN.md §7.4), answers every revision etcd answers with the same keys,
/// values, revisions, versions and leases, and the same HashKV — before the pending compaction's
/// deletions ran and after.
#[test]
fn an_etcd_snapshot_imports_into_a_retcd_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path(), "data", &|_, _| {});
    let lease_id = etcd.grant_lease(600);
    etcd.ctl(&["put", "a", "1"]);
    etcd.ctl(&["put", "b", "1"]);
    etcd.ctl(&["put", "a", "2"]);
    etcd.ctl(&["del", "b"]);
    etcd.ctl(&["put", "leased", "x", "--lease", &lease_id]);
    // Two puts in one revision (subs 0 and 1).
    let txn = Command::new(etcdctl_bin())
        .args(["--endpoints", &etcd.endpoint, "txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"\nput t1 one\nput t2 two\n\n\n")?;
            c.wait()
        })
        .expect("etcdctl txn");
    assert!(txn.success());
    etcd.ctl(&["put", "b", "3"]);
    etcd.ctl(&["put", "big", &"b".repeat(10_000)]);
    etcd.ctl(&["put", "a", "3"]);
    let (_, before_compaction) = etcd_rows(&etcd, 0);
    let compact_at = before_compaction - 2;
    etcd.ctl(&["compaction", &compact_at.to_string()]);
    etcd.ctl(&["put", "a", "4"]);
    etcd.ctl(&["del", "t"]);
    etcd.ctl(&["del", "t", "--prefix"]);
    let (_, current) = etcd_rows(&etcd, 0);
    let snap = dir.path().join("snap.db");
    etcd.ctl(&["snapshot", "save", snap.to_str().unwrap()]);
    // etcd 3.4.23 refuses HashKV at the compacted revision itself (as retcd does).
    type Expected = (i64, Vec<Row>, Option<(u32, i64)>);
    let expect: Vec<Expected> = (compact_at..=current)
        .map(|rev| {
            let hash = (rev > compact_at).then(|| etcd_hashkv(&etcd, rev));
            (rev, etcd_rows(&etcd, rev).0, hash)
        })
        .collect();

    let store = dir.path().join("retcd");
    std::fs::create_dir_all(&store).unwrap();
    let mut m =
        retcd_engine::mvcc::Mvcc::open(&retcd_engine::btree::StoreOptions::new(store.join("db")))
            .expect("fresh store");
    let db = Db::open(&snap).expect("etcd's snapshot");
    let imported = m.import_etcd(&db).expect("import");
    assert_eq!(
        (imported.revision, imported.compacted),
        (current, compact_at)
    );
    let check = |m: &retcd_engine::mvcc::Mvcc, when: &str| {
        for (rev, rows, hash) in &expect {
            let r = m
                .reader()
                .range(&retcd_engine::request::RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision: *rev,
                    ..Default::default()
                })
                .unwrap_or_else(|e| panic!("{when}: range at {rev}: {e}"));
            let ours: Vec<Row> = r
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        kv.key,
                        kv.value,
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.lease,
                    )
                })
                .collect();
            assert_eq!(&ours, rows, "{when}: keys at revision {rev}");
            assert_eq!(r.revision, current, "{when}: header revision");
            let h = m.reader().hash_kv(*rev).ok();
            assert_eq!(
                h.map(|h| (h.hash, h.compact_revision)),
                *hash,
                "{when}: HashKV at {rev}"
            );
        }
        let below = m.reader().range(&retcd_engine::request::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: compact_at - 1,
            ..Default::default()
        });
        assert!(below.is_err(), "{when}: a revision below the compaction");
    };
    check(&m, "imported");
    let mut steps = 0;
    while m.compaction_pending() {
        m.compact_step().expect("compaction step");
        steps += 1;
        assert!(steps < 1000, "the compaction never ends");
    }
    check(&m, "after the pending compaction");
    drop(m);
    // The store's lock (flock) lives as long as its open file description: a process that
    // another test of this binary is spawning at this moment holds a copy of every descriptor
    // between its fork and its exec (close-on-exec closes them only then). So the reopen waits,
    // within a deadline, for such a copy to go.
    let opts = retcd_engine::btree::StoreOptions::new(store.join("db"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let m = loop {
        match retcd_engine::mvcc::Mvcc::open(&opts) {
            Err(retcd_engine::mvcc::MvccError::Store(retcd_engine::page::StoreError::Locked {
                ..
            })) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            other => break other.expect("reopen"),
        }
    };
    check(&m, "reopened");
}
