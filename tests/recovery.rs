//! Recovery tests: stop the server with SIGKILL, damage its files the way a
//! torn write or a bad disk would, restart it and check what it does.
//!
//! * A torn WAL tail (the first sector of a record whose later sectors never
//!   landed, after the last record) is cut: the server says so in its log,
//!   keeps every put, takes new puts, and the next restart is clean.
//! * Damage to a synced WAL record — the last acknowledged put's, or one with
//!   more than W = 4 MiB of records after it — is not a torn tail
//!   (engine/DESIGN.md §2.5): the server refuses to start and names the
//!   segment file and the record's offset; so does a HardState committing
//!   entries the log no longer holds.
//! * A flipped byte in a B+tree page is never served as data: the server
//!   either refuses to start or fails the reads that touch the page, naming
//!   the db file and the page's byte offset (DESIGN.md §3.2).
//!
//! The byte layouts used here (segment header, record framing, meta and node
//! pages) are the ones engine/DESIGN.md specifies.

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use support::{Meta, Server, connect, crc32c, newest_meta, u16_at, u32_at, u64_at};

const BLOCK: usize = 4096;
const PAGE: usize = 4096;
/// W of DESIGN §2.4: the most bytes one WAL write covers.
const W: usize = 4 << 20;
/// Bound of waiting for a checkpoint to show up in the db file.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(30);
/// Bound of any single client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Plumbing

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Puts `key` and returns the revision of the response.
async fn put(client: &mut Client, key: &str, value: &[u8]) -> i64 {
    let resp = client
        .put(key, value.to_vec(), None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    resp.header().expect("put response header").revision()
}

/// Asserts that `key` holds exactly `value`, written (once) at `rev`.
async fn expect_key(client: &mut Client, key: &str, value: &[u8], rev: i64, when: &str) {
    let resp = client
        .get(key, None)
        .await
        .unwrap_or_else(|e| panic!("{when}: get {key}: {e}"));
    let kvs = resp.kvs();
    assert_eq!(
        kvs.len(),
        1,
        "{when}: {key} (put at revision {rev}) is missing"
    );
    assert_eq!(kvs[0].key(), key.as_bytes(), "{when}");
    assert_eq!(kvs[0].mod_revision(), rev, "{when}: mod_revision of {key}");
    assert_eq!(
        kvs[0].create_revision(),
        rev,
        "{when}: create_revision of {key}"
    );
    assert_eq!(kvs[0].version(), 1, "{when}: version of {key}");
    assert!(kvs[0].value() == value, "{when}: value of {key}");
}

/// The current revision (header of a Range).
async fn revision(client: &mut Client) -> i64 {
    let resp = client
        .get("revision-probe", None)
        .await
        .expect("get revision-probe");
    resp.header().expect("range header").revision()
}

/// Every key of the store with its mod_revision (one Range over everything).
async fn all_keys(client: &mut Client) -> Vec<(String, i64)> {
    let resp = client
        .get(vec![0u8], Some(GetOptions::new().with_range(vec![0u8])))
        .await
        .expect("full range get");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            )
        })
        .collect()
}

fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("retcd-recovery-{name}-"))
        .tempdir()
        .expect("tempdir")
}

/// Flips (xor 0xff) the byte at `offset` of `path`.
fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes[offset as usize] ^= 0xff;
    std::fs::write(path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes `data` at `offset` of `path` (in place).
fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all_at(data, offset)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all().expect("fsync");
}

// ---------------------------------------------------------------------------
// WAL layout (DESIGN §2)

/// One record as framed in a segment.
#[derive(Debug, Clone, Copy)]
struct WalRecord {
    offset: usize,
    len: usize,
    kind: u8,
}

impl WalRecord {
    fn payload(&self) -> std::ops::Range<usize> {
        self.offset + REC_HEADER..self.offset + REC_HEADER + self.len
    }
    /// Offset just past the record (padding included).
    fn end(&self) -> usize {
        self.offset + REC_HEADER + self.len.next_multiple_of(8)
    }
}

/// The segment files of a WAL directory, in seq order.
fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs
}

/// Size of a record header (DESIGN §2.3).
const REC_HEADER: usize = 24;

/// crc of the record at `at` of `buf` with payload `payload` (DESIGN §2.3).
fn record_crc(buf: &[u8], at: usize, payload: std::ops::Range<usize>) -> u32 {
    let mut c = buf[at..at + 8].to_vec();
    c.extend_from_slice(&buf[at + 12..at + REC_HEADER]);
    c.extend_from_slice(&buf[payload]);
    crc32c(&c)
}

/// The records of one segment (framing only: walks `len` fields from offset
/// 4096 until a zero one, checking each record's crc and chain).
fn wal_records(buf: &[u8]) -> Vec<WalRecord> {
    assert_eq!(&buf[0..8], b"RETCDWAL", "segment magic");
    let mut prev_crc = u32_at(buf, 32);
    let mut out = Vec::new();
    let mut at = BLOCK;
    while at + REC_HEADER <= buf.len() {
        let len = u32_at(buf, at) as usize;
        if len == 0 {
            break;
        }
        let rec = WalRecord {
            offset: at,
            len,
            kind: buf[at + 4],
        };
        assert!(
            rec.end() <= buf.len(),
            "record at {at} past the segment end"
        );
        let crc = record_crc(buf, at, rec.payload());
        assert_eq!(crc, u32_at(buf, at + 8), "crc of the record at {at}");
        assert_eq!(
            prev_crc,
            u32_at(buf, at + 12),
            "chain of the record at {at}"
        );
        prev_crc = crc;
        out.push(rec);
        at = rec.end();
    }
    out
}

/// Overwrites the last 4 payload bytes of `rec` in `seg`, so that it fails its crc.
fn damage_record(seg: &Path, rec: WalRecord) {
    write_at(
        seg,
        (rec.payload().end - 4) as u64,
        &[0x5a, 0xa5, 0x5a, 0xa5],
    );
}

/// Appends a valid record (as its own write) after the last one of `seg`.
fn append_record(seg: &Path, buf: &[u8], recs: &[WalRecord], kind: u8, payload: &[u8]) {
    let last = recs.last().expect("a record to chain from");
    let at = last.end();
    let mut rec = vec![0u8; REC_HEADER + payload.len().next_multiple_of(8)];
    rec[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    rec[4] = kind;
    rec[12..16].copy_from_slice(&buf[last.offset + 8..last.offset + 12]);
    rec[16..20].copy_from_slice(&((at / 8) as u32).to_le_bytes());
    rec[REC_HEADER..REC_HEADER + payload.len()].copy_from_slice(payload);
    let crc = record_crc(&rec, 0, REC_HEADER..REC_HEADER + payload.len());
    rec[8..12].copy_from_slice(&crc.to_le_bytes());
    write_at(seg, at as u64, &rec);
}

/// The last segment that holds a record, with its bytes and records.
fn last_written_segment(wal_dir: &Path) -> (PathBuf, Vec<u8>, Vec<WalRecord>) {
    for seg in wal_segments(wal_dir).into_iter().rev() {
        let buf = std::fs::read(&seg).unwrap_or_else(|e| panic!("read {}: {e}", seg.display()));
        let recs = wal_records(&buf);
        if !recs.is_empty() {
            return (seg, buf, recs);
        }
    }
    panic!("no WAL segment in {} holds a record", wal_dir.display());
}

// ---------------------------------------------------------------------------
// Page store layout (DESIGN §3)

const KIND_BRANCH: u8 = 1;
const KIND_LEAF: u8 = 2;

/// Verified view of node page `id` in `db`: (kind, count, bytes of the node).
fn node(db: &[u8], id: u64) -> (u8, usize, &[u8]) {
    let off = id as usize * PAGE;
    let first = &db[off..off + PAGE];
    let overflow = u32_at(first, 16) as usize;
    let bytes = &db[off..off + (1 + overflow) * PAGE];
    assert_eq!(crc32c(&bytes[4..]), u32_at(bytes, 0), "crc of page {id}");
    assert_eq!(u64_at(bytes, 8), id, "self id of page {id}");
    (bytes[4], u16_at(bytes, 6) as usize, bytes)
}

/// Page ids from the root to the leaf whose range covers `key`.
fn path_to_leaf(db: &[u8], root: u64, key: &[u8]) -> Vec<u64> {
    let mut path = vec![root];
    let mut id = root;
    for _ in 0..64 {
        let (kind, count, bytes) = node(db, id);
        if kind == KIND_LEAF {
            return path;
        }
        assert_eq!(kind, KIND_BRANCH, "page {id} is neither leaf nor branch");
        // Entry i covers keys from its own key up to entry i+1's key.
        let mut child = None;
        for i in 0..count {
            let at = u32_at(bytes, 32 + i * 4) as usize;
            let klen = u32_at(bytes, at) as usize;
            let k = &bytes[at + 12..at + 12 + klen];
            if i == 0 || k <= key {
                child = Some(u64_at(bytes, at + 4));
            } else {
                break;
            }
        }
        id = child.expect("a branch has entries");
        path.push(id);
    }
    panic!("tree deeper than 64 levels");
}

/// Tree key of version `rev` of user key `key` (DESIGN §4.1).
fn version_key(key: &[u8], rev: i64) -> Vec<u8> {
    let mut k = vec![b'k'];
    for &b in key {
        k.push(b);
        if b == 0 {
            k.push(0xff);
        }
    }
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&(!(rev as u64)).to_be_bytes());
    k
}

/// Polls (bounded) until the db file's newest meta page has a txn above
/// `after`, i.e. a checkpoint completed after the call that read `after`.
fn wait_for_checkpoint(db: &Path, after: u64) -> Meta {
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    loop {
        if let Some(m) = newest_meta(db)
            && m.txn > after
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no page-store checkpoint within {CHECKPOINT_WAIT:?} (meta txn still {after})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Logs and exits

/// Starts the killed `server` again; returns what it logged while starting.
fn start_again_logged(server: &mut Server) -> String {
    let pos = server.log_len();
    server.start_again();
    server.log_since(pos)
}

fn assert_failed_exit(status: Option<ExitStatus>, log: &str) {
    let status = status
        .unwrap_or_else(|| panic!("the server neither became ready nor exited (it hung):\n{log}"));
    assert!(
        !status.success() && status.code().is_some(),
        "the server should exit with a non-zero code, got {status}:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// a. torn WAL tail

#[test]
fn torn_wal_tail_is_truncated() {
    let rt = runtime();
    let tmp = tempdir("torn");
    let mut server = Server::start_retcd(tmp.path());
    let mut acked: Vec<(String, Vec<u8>, i64)> = Vec::new();

    // Phase 1: puts, kill, garbage appended right after the last record.
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for i in 0..30 {
            let key = format!("torn/a/{i:03}");
            let value = format!("value a {i}").into_bytes();
            let rev = put(&mut c, &key, &value).await;
            assert_eq!(rev, i + 2, "revision of {key}");
            acked.push((key, value, rev));
        }
    });
    server.kill9();
    let (seg, _buf, recs) = last_written_segment(&server.wal_dir());
    let end = recs.last().expect("records").end();
    // The first sectors of a record of 2,000 bytes (len, kind Entry, a crc,
    // the start of its payload) whose later sectors never reached the disk:
    // what a write cut short before its fdatasync leaves.
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&2000u32.to_le_bytes());
    garbage.extend_from_slice(&[1, 0, 0, 0]);
    garbage.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    garbage.extend_from_slice(&[0; 12]);
    garbage.extend((0..100u32).map(|i| (i * 37 + 11) as u8));
    write_at(&seg, end as u64, &garbage);

    let log = start_again_logged(&mut server);
    assert!(
        log.contains("truncated a torn tail") && log.contains(&format!("\"offset\":{end}")),
        "the server should log that it truncated a torn tail at offset {end}:\n{log}"
    );
    assert!(
        log.contains(&seg.display().to_string()),
        "log should name {}:\n{log}",
        seg.display()
    );
    // The cut was zeroed and the writer went on at its start: the segment
    // holds only valid chained records (checked by `wal_records`), the next
    // one right where the garbage was, and zeros after the last.
    let after = std::fs::read(&seg).expect("read segment");
    let recs_after = wal_records(&after);
    assert!(
        recs_after.iter().any(|r| r.offset == end),
        "the writer should continue at the cut {end}: {:?}",
        &recs_after[recs_after.len().saturating_sub(3)..]
    );
    let tail = recs_after.last().unwrap().end();
    assert!(
        after[tail..].iter().all(|&b| b == 0),
        "non-zero bytes after the last record at {tail}"
    );

    // Phase 2: every put survived; new puts work; then the last put's own
    // record is damaged (its last payload bytes overwritten).
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for (key, value, rev) in &acked {
            expect_key(
                &mut c,
                key,
                value,
                *rev,
                "after cutting garbage after the last record",
            )
            .await;
        }
        assert_eq!(
            revision(&mut c).await,
            31,
            "revision after the first recovery"
        );
        for i in 0..5 {
            let key = format!("torn/b/{i:03}");
            let value = format!("value b {i}").into_bytes();
            let rev = put(&mut c, &key, &value).await;
            assert_eq!(rev, 32 + i, "revision of {key} (new puts after recovery)");
            acked.push((key, value, rev));
        }
    });
    server.kill9();
    let (seg, buf, recs) = last_written_segment(&server.wal_dir());
    let (last_key, _, _) = acked.last().cloned().unwrap();
    let holding: Vec<WalRecord> = recs
        .iter()
        .copied()
        .filter(|r| {
            buf[r.payload()]
                .windows(last_key.len())
                .any(|w| w == last_key.as_bytes())
        })
        .collect();
    assert_eq!(
        holding.len(),
        1,
        "exactly one WAL record should hold {last_key}: {holding:?}"
    );
    let victim = holding[0];
    assert_eq!(victim.kind, 1, "the record of {last_key} is an Entry");
    damage_record(&seg, victim);

    // The last put was acknowledged, so its record was synced: damage to it
    // is corruption, never a torn tail to cut (DESIGN §2.5), even though it
    // is the last record of the log.
    let pos = server.log_len();
    let started = server.try_start_again();
    let log = server.log_since(pos);
    assert!(
        started.is_err(),
        "the server started over the damaged record of the acknowledged {last_key}:\n{log}"
    );
    assert_failed_exit(server.early_exit(), &log);
    assert!(
        log.contains("WAL corruption")
            && log.contains(&seg.display().to_string())
            && log.contains(&format!("offset {}", victim.offset)),
        "the error should name {} and offset {}:\n{log}",
        seg.display(),
        victim.offset
    );
    assert!(!log.contains("truncat"), "nothing may be truncated:\n{log}");
    // Put the bytes back: everything acknowledged is served again.
    write_at(
        &seg,
        (victim.payload().end - 4) as u64,
        &buf[victim.payload().end - 4..victim.payload().end],
    );
    server.start_again();
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for (key, value, rev) in &acked {
            expect_key(&mut c, key, value, *rev, "after repairing the record").await;
        }
        let cur = revision(&mut c).await;
        let rev = put(&mut c, "torn/c/000", b"value c 0").await;
        assert_eq!(rev, cur + 1, "first put after the repair");
        acked.push(("torn/c/000".into(), b"value c 0".to_vec(), rev));
    });

    // Phase 3: a second crash and restart is clean and loses nothing.
    server.kill9();
    let log = start_again_logged(&mut server);
    assert!(
        !log.contains("torn tail") && !log.contains("truncat"),
        "the second restart should find no torn tail:\n{log}"
    );
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for (key, value, rev) in &acked {
            expect_key(&mut c, key, value, *rev, "after a clean restart").await;
        }
        assert_eq!(
            all_keys(&mut c).await.len(),
            acked.len(),
            "keys after a clean restart"
        );
    });
    eprintln!(
        "torn tail: cut garbage at {end}; a damaged last record at {} of {} refused",
        victim.offset,
        seg.display()
    );
}

/// A HardState that commits entries the log no longer holds means synced
/// entries were lost: the member refuses to start (etcd's rule) with a clear
/// error instead of raft-rs's panic "commit is out of range".
#[test]
fn hard_state_beyond_the_log_refuses_to_start() {
    let rt = runtime();
    let tmp = tempdir("lost");
    let mut server = Server::start_retcd(tmp.path());
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for i in 0..5 {
            put(&mut c, &format!("lost/{i}"), b"v").await;
        }
    });
    server.kill9();
    let (seg, buf, recs) = last_written_segment(&server.wal_dir());
    let term = recs
        .iter()
        .rev()
        .find(|r| r.kind == 1)
        .map(|r| u64_at(&buf[r.payload()], 8))
        .expect("an entry");
    let mut hs = Vec::new();
    hs.extend_from_slice(&term.to_le_bytes());
    hs.extend_from_slice(&0u64.to_le_bytes());
    hs.extend_from_slice(&1_000_000u64.to_le_bytes());
    append_record(&seg, &buf, &recs, 2, &hs);

    let pos = server.log_len();
    let started = server.try_start_again();
    let log = server.log_since(pos);
    assert!(
        started.is_err(),
        "started over a log missing committed entries:\n{log}"
    );
    assert_failed_exit(server.early_exit(), &log);
    assert!(
        log.contains("the WAL lost committed entries")
            && log.contains("commits up to index 1000000"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// b. flipped byte inside the WAL, far from the tail

#[test]
fn wal_corruption_before_the_tail_refuses_to_start() {
    let rt = runtime();
    let tmp = tempdir("walflip");
    let mut server = Server::start_retcd(tmp.path());
    const N: i64 = 80;
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for i in 0..N {
            let rev = put(&mut c, &format!("big/{i:03}"), &big_value(i as u64)).await;
            assert_eq!(rev, i + 2);
        }
    });
    server.kill9();
    let (seg, buf, recs) = last_written_segment(&server.wal_dir());
    let first = recs[0];
    assert_eq!(first.offset, BLOCK);
    assert!(
        first.len >= 8,
        "first record too short to flip a payload byte: {first:?}"
    );
    let flip_at = BLOCK + 20;
    let end = recs.last().unwrap().end();
    assert!(
        end > first.offset + W + BLOCK,
        "need more than W = {W} bytes of records after offset {}; they end at {end}",
        first.offset
    );
    flip_byte(&seg, flip_at as u64);

    let pos = server.log_len();
    let started = server.try_start_again();
    let log = server.log_since(pos);
    assert!(
        started.is_err(),
        "the server started on a WAL with a flipped byte at {flip_at}, {} bytes before the tail:\n{log}",
        end - flip_at
    );
    assert_failed_exit(server.early_exit(), &log);
    let seg_name = seg.display().to_string();
    assert!(
        log.contains(&seg_name),
        "the error should name the WAL file {seg_name}:\n{log}"
    );
    assert!(
        log.contains(&format!("offset {}", first.offset)),
        "the error should name the offset {} of the damaged record:\n{log}",
        first.offset
    );
    assert!(log.contains("WAL corruption"), "{log}");
    // Recovery must not have changed anything: the file is as we left it.
    let now = std::fs::read(&seg).expect("read segment");
    assert!(
        now[..end] == {
            let mut b = buf[..end].to_vec();
            b[flip_at] ^= 0xff;
            b
        },
        "the refused start modified the WAL"
    );

    // Undo the flip: everything is back.
    flip_byte(&seg, flip_at as u64);
    server.start_again();
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for i in 0..N {
            expect_key(
                &mut c,
                &format!("big/{i:03}"),
                &big_value(i as u64),
                i + 2,
                "after undoing the flip",
            )
            .await;
        }
    });
    eprintln!(
        "WAL corruption: flipped byte {flip_at} of {seg_name}, {} bytes of records after it; refused: {}",
        end - flip_at,
        line_with(&log, "retcd: ")
    );
}

// ---------------------------------------------------------------------------
// c. flipped byte inside a B+tree page

/// Starts a server in `tmp`, puts `n` keys `page/k/NNNN` (200-byte values),
/// and waits until a checkpoint has made them durable in the page store; kills
/// the server. Returns the server and the (key, value, revision) written.
fn checkpointed_store(
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    n: i64,
) -> (Server, Vec<(String, Vec<u8>, i64)>) {
    let mut server = Server::start_retcd(tmp);
    let db = server.db_path();
    let mut written = Vec::new();
    let value_of = |i: i64| format!("{i:04}:{}", "v".repeat(195)).into_bytes();
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        for i in 0..n {
            let key = format!("page/k/{i:04}");
            let value = value_of(i);
            let rev = put(&mut c, &key, &value).await;
            assert_eq!(rev, i + 2);
            written.push((key, value, rev));
        }
    });
    // Every put above is applied; any checkpoint from now on covers them. One
    // more write makes sure one more checkpoint is due.
    let before = newest_meta(&db).expect("db meta").txn;
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        let rev = put(&mut c, "page/sentinel", b"s").await;
        assert_eq!(rev, n + 2);
    });
    wait_for_checkpoint(&db, before);
    server.kill9();
    (server, written)
}

/// The line of `text` that holds `needle` (for the summaries), or "".
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or("")
}

/// Asserts `err` (a log or an error message) names the db file and `offset`.
fn assert_names_page(text: &str, db: &Path, offset: u64) {
    let db = db.display().to_string();
    assert!(
        text.contains(&db) && text.contains(&format!("offset {offset}")),
        "the error should name {db} and the page offset {offset}:\n{text}"
    );
}

/// Starts the killed `server` again after a byte of the page at `offset` of `db` was damaged. If
/// it refuses to start, asserts that it exited with an error naming the page and returns its log
/// as `Err`; if it starts, returns the log position from before the start.
fn restart_over_damaged_page(server: &mut Server, db: &Path, offset: u64) -> Result<u64, String> {
    let pos = server.log_len();
    let started = server.try_start_again();
    let log = server.log_since(pos);
    match started {
        Err(_) => {
            assert_failed_exit(server.early_exit(), &log);
            assert_names_page(&log, db, offset);
            Err(log)
        }
        Ok(()) => Ok(pos),
    }
}

#[test]
fn corrupt_root_page_is_never_served() {
    let rt = runtime();
    let tmp = tempdir("rootflip");
    let (mut server, written) = checkpointed_store(&rt, tmp.path(), 300);
    let db = server.db_path();
    let meta = newest_meta(&db).expect("db meta");
    assert_ne!(meta.root, 0, "the tree has a root");
    let bytes = std::fs::read(&db).unwrap();
    let (kind, _, _) = node(&bytes, meta.root);
    let offset = meta.root * PAGE as u64;
    flip_byte(&db, offset + 100);

    let outcome = match restart_over_damaged_page(&mut server, &db, offset) {
        Err(log) => line_with(&log, "retcd: ").to_string(),
        Ok(_) => {
            // It may start only if it never needs the root; then every read
            // must fail and name the page.
            rt.block_on(async {
                let mut c = connect(&server, REQUEST_TIMEOUT).await;
                let (key, _, _) = &written[0];
                match c.get(key.as_str(), None).await {
                    Ok(resp) => panic!(
                        "a read through the damaged root page returned {:?}",
                        resp.kvs()
                    ),
                    Err(e) => {
                        assert_names_page(&e.to_string(), &db, offset);
                        format!("started, reads fail: {e}")
                    }
                }
            })
        }
    };
    eprintln!(
        "root page corruption: page {} (kind {kind}) at offset {offset} of {}: {outcome}",
        meta.root,
        db.display()
    );
}

#[test]
fn corrupt_leaf_page_is_never_served() {
    let rt = runtime();
    let tmp = tempdir("leafflip");
    let (mut server, written) = checkpointed_store(&rt, tmp.path(), 300);
    let db = server.db_path();
    let meta = newest_meta(&db).expect("db meta");
    let bytes = std::fs::read(&db).unwrap();
    // The leaf holding page/k/0150. Restart only touches the leaves of the
    // `m` keys (applied index, revision) and of writes replayed from the WAL
    // (at most the sentinel): the damaged leaf must be none of those.
    let (target, _, target_rev) = &written[150];
    let target_path = path_to_leaf(
        &bytes,
        meta.root,
        &version_key(target.as_bytes(), *target_rev),
    );
    let leaf = *target_path.last().unwrap();
    let meta_leaf = *path_to_leaf(&bytes, meta.root, b"mapplied").last().unwrap();
    let sentinel_leaf = *path_to_leaf(
        &bytes,
        meta.root,
        &version_key(b"page/sentinel", written.len() as i64 + 2),
    )
    .last()
    .unwrap();
    assert!(
        target_path.len() >= 2 && leaf != meta_leaf && leaf != sentinel_leaf,
        "test setup: the leaf of {target} ({target_path:?}) must differ from the root, \
         the meta keys' leaf {meta_leaf} and the sentinel's leaf {sentinel_leaf}"
    );
    // Keys that live in the same leaf (to check) and one that does not.
    let (_, count, _) = node(&bytes, leaf);
    let other = written
        .iter()
        .find(|(k, _, r)| {
            *path_to_leaf(&bytes, meta.root, &version_key(k.as_bytes(), *r))
                .last()
                .unwrap()
                != leaf
        })
        .cloned()
        .expect("a key in another leaf");
    let offset = leaf * PAGE as u64;
    flip_byte(&db, offset + 200);

    let outcome = match restart_over_damaged_page(&mut server, &db, offset) {
        Err(_) => "refused to start".to_string(),
        Ok(pos) => rt.block_on(async {
            let mut c = connect(&server, REQUEST_TIMEOUT).await;
            // A point read of a key in the damaged leaf.
            let error = match c.get(target.as_str(), None).await {
                Ok(resp) => panic!(
                    "a read of {target} (in the damaged page {leaf}) returned {:?}",
                    resp.kvs()
                ),
                Err(e) => {
                    assert_names_page(&e.to_string(), &db, offset);
                    e.to_string()
                }
            };
            // A range over everything passes through the damaged leaf too.
            match c
                .get(vec![0u8], Some(GetOptions::new().with_range(vec![0u8])))
                .await
            {
                Ok(resp) => panic!(
                    "a full range through the damaged page {leaf} returned {} keys",
                    resp.kvs().len()
                ),
                Err(e) => assert_names_page(&e.to_string(), &db, offset),
            }
            // Pages that are intact still serve.
            let (k, v, r) = &other;
            expect_key(&mut c, k, v, *r, "a key outside the damaged page").await;
            let log = server.log_since(pos);
            assert_names_page(&log, &db, offset);
            format!("started; reads through the page fail: {error}")
        }),
    };
    eprintln!(
        "leaf page corruption: page {leaf} ({count} entries, path {target_path:?}) at offset {offset} of {}: {outcome}",
        db.display()
    );
}

// ---------------------------------------------------------------------------
// WAL segments: roll to a new segment, crash, release old segments, crash

/// Value of `big/…` key number `i`: 64 KiB, derived from `i`.
fn big_value(i: u64) -> Vec<u8> {
    let mut v = vec![b'a' + (i % 26) as u8; 64 << 10];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// Puts `big/NNNNNN` keys, numbered from `next` on, with `tasks` concurrent
/// writers until `done()` holds (polled; at most `limit` puts). Returns the
/// acknowledged (number, revision) pairs; every put must succeed.
async fn load_big(
    server: &Server,
    next: &mut u64,
    tasks: usize,
    limit: u64,
    done: impl Fn() -> bool,
) -> Vec<(u64, i64)> {
    let client = connect(server, REQUEST_TIMEOUT).await;
    let counter = Arc::new(AtomicU64::new(*next));
    let stop = Arc::new(AtomicBool::new(false));
    let end = *next + limit;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let mut kv = client.kv_client();
        let counter = counter.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let resp = kv
                    .put(format!("big/{i:06}"), big_value(i), None)
                    .await
                    .unwrap_or_else(|e| panic!("put big/{i:06}: {e}"));
                acked.push((i, resp.header().expect("header").revision()));
            }
            acked
        }));
    }
    while !done() {
        assert!(
            !handles.iter().all(|h| h.is_finished()),
            "the condition did not hold after {limit} puts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("writer task"));
    }
    *next = (*next).max(all.iter().map(|(i, _)| i + 1).max().unwrap_or(0));
    all
}

async fn expect_big(client: &mut Client, acked: &[(u64, i64)], when: &str) {
    for (i, rev) in acked {
        expect_key(client, &format!("big/{i:06}"), &big_value(*i), *rev, when).await;
    }
}

/// The WAL rolls to a second segment and the server is killed right then;
/// after the restart a checkpoint releases the first segment and the server
/// is killed again: every put survives both, and recovery starts from a
/// segment that is no longer seq 0.
#[test]
fn wal_segments_roll_and_release_across_crashes() {
    let rt = runtime();
    let tmp = tempdir("segments");
    let mut server = Server::start_retcd(tmp.path());
    let wal = server.wal_dir();
    let mut next = 0u64;
    let t0 = Instant::now();
    // ~1000 puts of 64 KiB fill the first 64 MiB segment.
    let mut acked = rt.block_on(load_big(&server, &mut next, 4, 3_000, || {
        wal_segments(&wal).len() >= 2
    }));
    server.kill9();
    let rolled = (acked.len(), t0.elapsed());
    // The checkpoint 5 s after the restart (the replayed entries count as
    // applied) releases the first segment; writes go on until it did.
    let pos = server.log_len();
    server.start_again();
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        expect_big(&mut c, &acked, "after a crash right after a segment roll").await;
    });
    let released = || server.log_since(pos).contains("released WAL segment");
    acked.extend(rt.block_on(load_big(&server, &mut next, 1, 3_000, released)));
    server.kill9();
    let segs = wal_segments(&wal);
    let names: Vec<String> = segs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty() && !names[0].starts_with("0000000000000000-"),
        "the first segment should have been released: {names:?}"
    );
    server.start_again();
    rt.block_on(async {
        let mut c = connect(&server, REQUEST_TIMEOUT).await;
        expect_big(&mut c, &acked, "after a crash after a segment release").await;
        let rev = put(&mut c, "big/last", b"x").await;
        assert_eq!(rev, acked.len() as i64 + 2, "next revision");
    });
    eprintln!(
        "segments: rolled after {} puts ({:?}), {} puts in all, segments left {names:?}, {:?}",
        rolled.0,
        rolled.1,
        acked.len(),
        t0.elapsed()
    );
}

/// Runs a one-member retcd on `data_dir` with these client and peer URLs until it exits (it is
/// expected to be refused at start).
fn second_retcd(data_dir: &Path, client: &str, peer: &str) -> support::Output {
    let cmd = second_retcd_command(data_dir, client, peer);
    support::run_with_timeout(cmd, None, Duration::from_secs(20)).unwrap()
}

/// A single-member retcd on `data_dir` with these client and peer URLs.
fn second_retcd_command(data_dir: &Path, client: &str, peer: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(support::Kind::Retcd.binary());
    cmd.args(["--data-dir", data_dir.to_str().unwrap()]);
    cmd.args([
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
    ]);
    cmd.args([
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
    ]);
    cmd.args(["--initial-cluster", &format!("default={peer}")]);
    cmd
}

/// A second retcd on a data dir another retcd is using is refused at start with a clear error,
/// and the first goes on serving (etcd and bbolt lock theirs too).
#[test]
fn a_data_dir_in_use_is_refused() {
    let first = Server::start_in_tempdir(support::Kind::Retcd);
    first.etcdctl(&["put", "k", "v"]);
    let ports = support::free_ports(2);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let out = second_retcd(first.data_dir(), &client, &peer);
    assert!(!out.success(), "a second retcd started: {}", out.stderr);
    assert!(
        out.stderr.contains("in use by another process"),
        "{}",
        out.stderr
    );
    let got = first.etcdctl(&["get", "k", "--print-value-only"]);
    assert_eq!(got.stdout, "v\n");
}

/// A second member started on the client or peer port of a running one — etcd or retcd — is
/// refused at start, as etcd refuses it ("address already in use"), and the first keeps every
/// client: retcd's per-core SO_REUSEPORT sockets must not let another process join them and
/// silently take half of the connections.
#[test]
fn a_port_in_use_is_refused() {
    for kind in [support::Kind::Etcd, support::Kind::Retcd] {
        let first = Server::start_in_tempdir(kind);
        first.etcdctl(&["put", "k", "v"]);
        let ports = support::free_ports(2);
        for (client, peer) in [
            (first.client_port(), ports[1]),
            (ports[0], first.peer_port()),
        ] {
            let dir = tempdir("second");
            let client = format!("http://127.0.0.1:{client}");
            let peer = format!("http://127.0.0.1:{peer}");
            let out = second_retcd(&dir.path().join("data"), &client, &peer);
            assert!(!out.success(), "a second member started: {}", out.stderr);
            assert!(
                out.stderr.contains("Address already in use"),
                "{kind:?}: {}",
                out.stderr
            );
        }
        // Every connection still reaches the first (a new etcdctl connection each time).
        for _ in 0..8 {
            let got = first.etcdctl(&["get", "k", "--print-value-only"]);
            assert_eq!(got.stdout, "v\n", "{kind:?}");
        }
    }
}

/// Snapshot spools a crash left behind (`member/snap/incoming-*.snap`) are removed at the next
/// start; other files there are kept.
#[test]
fn leftover_snapshot_spools_are_removed_at_start() {
    let mut server = Server::start_in_tempdir(support::Kind::Retcd);
    server.etcdctl(&["put", "k", "v"]);
    server.kill9();
    let snap = server.data_dir().join("member").join("snap");
    let spool = snap.join("incoming-2a-7.snap");
    let other = snap.join("keep.me");
    std::fs::write(&spool, b"half a snapshot").unwrap();
    std::fs::write(&other, b"x").unwrap();
    server.start_again();
    assert!(!spool.exists(), "the spool is still there");
    assert!(other.exists());
    let got = server.etcdctl(&["get", "k", "--print-value-only"]);
    assert_eq!(got.stdout, "v\n");
}

/// A restarted member serves clients only once everything acknowledged before is applied
/// again, as etcd (which publishes through Raft before serving): the very first answer of a
/// serializable read after a restart holds every acknowledged put. Stopped before the first
/// checkpoint, so the page store holds nothing and the whole log is replayed; a sole voter's
/// stored commit index lags its log (the commit index alone is never fdatasynced).
#[test]
fn first_answer_after_restart_holds_every_acknowledged_put() {
    let rt = runtime();
    let tmp = tempdir("first-answer");
    let mut server = Server::start_retcd(tmp.path());
    for (round, stop) in [("stop", true), ("kill", false)] {
        let count = rt.block_on(async {
            let mut c = connect(&server, REQUEST_TIMEOUT).await;
            for i in 0..40 {
                put(&mut c, &format!("first/{round}/{i:02}"), b"v").await;
            }
            c.get(
                "first/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count")
            .count()
        });
        if stop {
            server.stop();
        } else {
            server.kill9();
        }
        server.spawn_member();
        // Ask as fast as the client can, from before the port opens: the first answer counts.
        let url = server.client_url();
        let first = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "no answer within 60 s\n{}",
                    server.log_tail()
                );
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(200))
                    .with_timeout(REQUEST_TIMEOUT);
                let Ok(mut c) = Client::connect([url.clone()], Some(opts)).await else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let serializable = GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_serializable();
                match c.get("first/", Some(serializable)).await {
                    Ok(r) => break r.count(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
        assert_eq!(
            first, count,
            "the first serializable answer after a {round} misses acknowledged puts"
        );
        server.wait_member_ready();
    }
}

/// `--socket-reuse-port`: a second member with it may listen on the first's client address
/// (without it, tests/recovery.rs `a_port_in_use_is_refused`).
#[test]
fn socket_reuse_port_lets_a_second_member_share_the_address() {
    let first =
        Server::start_in_tempdir_with_args(support::Kind::Retcd, &["--socket-reuse-port=true"]);
    let dir = tempdir("second");
    let client = format!("http://127.0.0.1:{}", first.client_port());
    let peer = format!("http://127.0.0.1:{}", support::free_ports(1)[0]);
    let log = dir.path().join("second.log");
    let mut second = second_retcd_command(&dir.path().join("data"), &client, &peer)
        .arg("--socket-reuse-port=true")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("second retcd");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let served = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ready to serve client requests") {
            break Ok(());
        }
        if let Some(status) = second.try_wait().unwrap() {
            break Err(format!("exited {status}: {text}"));
        }
        if std::time::Instant::now() >= deadline {
            break Err(format!("not serving: {text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = second.kill();
    let _ = second.wait();
    served.expect("the second member serves on the shared address");
    assert!(first.etcdctl(&["put", "k", "v"]).success());
}
