//! Write-ahead log: the durable storage of the Raft log (engine/DESIGN.md §2).
//!
//! # What this module owns
//!
//! Every file named `<seq:016x>-<first_index:016x>.wal` in the WAL directory, the spare segment
//! file [`SPARE_FILE_NAME`] (DESIGN §2.1), leftover `<segment name>.tmp` files (deleted at open),
//! and the small `dma-probe` file (see [`prime_dma_io`]). Nothing else writes to them. The module
//! encodes [`Record`]s into the segment format of DESIGN §2.2–2.3, writes them with the
//! group-commit protocol of §2.4 and recovers them with the torn-tail / corruption rule of §2.5.
//!
//! # Invariants
//!
//! - Segments have consecutive `seq`s; the last one is the *current* segment, the only one written.
//!   Each segment's header (block 0) and preallocation (blocks reserved that read as zeros) are
//!   durable before it gets its final name, so writing a record never changes the file's size.
//! - At most one spare file exists. A background task on the same executor (`spawn_local`; the
//!   [`Wal`] owns its handle) preallocates it and fdatasyncs it, started when the WAL opens and again
//!   after each rollover consumed the spare. A rollover uses the spare only once that task has
//!   finished successfully (it waits for it otherwise), writes the header into it, fdatasyncs,
//!   renames it and fsyncs the directory. The spare is never a segment: open deletes it.
//! - `tail` (where the next record goes) is a multiple of 8, at least 4096, at most the segment
//!   size; every byte of the current segment from `tail` on is zero on disk.
//! - Each write starts at the 4096-aligned block holding `tail`, begins with the bytes already in
//!   that block (kept in `tail_block`, so rewriting it changes nothing before the tail), has a
//!   length that is a multiple of 4096 and at most `W` = [`MAX_WRITE_BYTES`]; one `fdatasync`
//!   follows the bytes of at most `W`. `append` returns only after the last `fdatasync` returned.
//! - Every record's crc chains from the previous record (from the header's seed for the first
//!   record of a segment); the seed of a new segment is the crc of the last record before it.
//! - Every segment starts with copies of the latest HardState and Checkpoint records (if any),
//!   written before anything else in it, so deleting older segments never loses either.
//! - Entries within one appended batch have strictly increasing indexes (checked with `assert!`).
//! - After an I/O error (including one of the spare's preparation, reported by the rollover that
//!   needs the spare), or if an `append`/`release_to` future is dropped mid-way, the [`Wal`] is
//!   poisoned: what is on disk is no longer known, so every later call fails with
//!   [`WalError::Poisoned`] until the WAL is reopened (which runs recovery).
//! - Dropping the [`Wal`] cancels the spare's preparation (glommio drops the task's future at its
//!   next await; an I/O already submitted completes into a file nobody uses); [`Wal::close`]
//!   cancels it and waits until it stopped.
//!
//! # Who may call it
//!
//! Only the sequencer core's single writer, on the glommio executor that opened the [`Wal`] (it is
//! `!Send`). Two `Wal`s must never be open on the same directory. The WAL is read only at startup,
//! by [`Wal::open`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::Task;
use glommio::io::{Directory, DmaBuffer, DmaFile, OpenOptions};
use tracing::{debug, info, warn};

use crate::disk::{self, Origin};

/// Block size: the O_DIRECT alignment of every write and the size of a segment header.
pub const BLOCK_SIZE: u64 = 4096;
/// `W`: the most bytes written between two `fdatasync`s (DESIGN §2.4), counting the whole aligned
/// write (the rewritten start of the tail block and the zero padding included).
pub const MAX_WRITE_BYTES: u64 = 4 << 20;
/// Largest payload of one record (DESIGN §2.3): a record plus the carried-over start of the tail
/// block always fits into one write of at most `W` bytes.
pub const MAX_PAYLOAD: usize = (4 << 20) - 8192;
/// Largest Raft entry data an Entry record of a default-sized segment carries
/// ([`Wal::max_entry_data`]): a write whose entry is larger is refused.
pub const MAX_ENTRY_DATA: usize = MAX_PAYLOAD - ENTRY_FIXED;
/// Default size of a segment file.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Name of the file read by [`prime_dma_io`].
pub const PROBE_FILE_NAME: &str = "dma-probe";
/// Name of the spare segment file: preallocated, fdatasynced, and renamed to a segment's name when
/// the WAL rolls over (DESIGN §2.1). Never a segment; deleted at open.
pub const SPARE_FILE_NAME: &str = "segment.spare";

const BLOCK: usize = BLOCK_SIZE as usize;
const W: usize = MAX_WRITE_BYTES as usize;
const MAGIC: &[u8; 8] = b"RETCDWAL";
const FORMAT_VERSION: u32 = 2;
const RECORD_HEADER: usize = 24;
/// Largest segment: a record's `write` field (DESIGN §2.3) holds an offset ÷ 8 in 32 bits.
const MAX_SEGMENT_SIZE: u64 = 8 << 32;
/// The unit a disk writes atomically (DESIGN §1): a torn write leaves whole sectors unwritten.
const SECTOR: usize = 512;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;
const ENTRY_FIXED: usize = 24;
const HARD_STATE_LEN: usize = 24;
const CHECKPOINT_LEN: usize = 16;
/// Encoded size of the HardState and Checkpoint copies that open every segment.
const CARRY_MAX: usize = RECORD_HEADER + HARD_STATE_LEN + RECORD_HEADER + CHECKPOINT_LEN;
/// Write buffers come in power-of-two sizes of 1 ..= 1024 blocks (1024 blocks = `W`).
const CLASSES: usize = 11;
const PREALLOC_CHUNK: u64 = 1 << 20;
const READ_CHUNK: u64 = 4 << 20;

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Bytes on disk fail their checks where they cannot be a torn tail (DESIGN §2.5): data that
    /// may have been acknowledged is damaged.
    #[error("WAL corruption in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset in `file` of the damaged record or header.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("WAL I/O error: {op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record is larger than a write or a segment can hold.
    #[error("WAL record too large: payload of {size} bytes, at most {max}")]
    RecordTooLarge {
        /// The record's payload size.
        size: usize,
        /// The largest payload accepted with the configured segment size.
        max: usize,
    },
    /// The options cannot be used.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// `release_to` asked to drop entries that no appended Checkpoint record covers.
    #[error("WAL release_to({requested}) is beyond the last checkpoint ({checkpoint:?})")]
    ReleaseBeyondCheckpoint {
        /// The index passed to `release_to`.
        requested: u64,
        /// The index of the last Checkpoint record, if any.
        checkpoint: Option<u64>,
    },
    /// An earlier write failed or was interrupted; the WAL must be reopened.
    #[error("WAL unusable after a failed or interrupted write; reopen it to recover")]
    Poisoned,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(glommio::GlommioError<()>) -> WalError {
    let path = path.to_path_buf();
    move |e| WalError::Io {
        op,
        path,
        source: e.into(),
    }
}

fn std_io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { op, path, source }
}

/// An I/O that completed with fewer bytes than asked for (a short write or an early EOF).
fn short_io(op: &'static str, path: &Path, kind: std::io::ErrorKind, message: String) -> WalError {
    WalError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::new(kind, message),
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Options of [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The WAL directory (created if missing).
    pub dir: PathBuf,
    /// Size of each new segment file: a multiple of 4096, at least 8192 (default 64 MiB).
    pub segment_size: u64,
    /// How a new segment's space is made to read as zeros (DESIGN §2.1).
    pub preallocate: Preallocate,
}

impl WalOptions {
    /// Options for `dir` with the default segment size.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            preallocate: Preallocate::Reserve,
        }
    }
}

/// How the spare segment's space is made to read as zeros, durably (DESIGN §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocate {
    /// `fallocate`: the blocks are reserved and read as zeros without being written, so a
    /// segment costs no disk bandwidth (etcd preallocates the same way); zero-filled where the
    /// filesystem cannot.
    Reserve,
    /// Zeros written over the whole segment (tests: the path of a filesystem without
    /// `fallocate`).
    ZeroFill,
}

/// One WAL record (DESIGN §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A Raft entry. An entry whose index is ≤ the last one before it replaces every entry from
    /// that index on (Raft overwriting a conflicting suffix); the WAL only stores them in order.
    Entry {
        /// Raft index.
        index: u64,
        /// Raft term.
        term: u64,
        /// Raft entry type.
        entry_type: u8,
        /// The entry's data.
        data: Bytes,
    },
    /// Raft hard state.
    HardState {
        /// Current term.
        term: u64,
        /// Vote in that term (0 = none).
        vote: u64,
        /// Commit index.
        commit: u64,
    },
    /// Every entry up to `index` is applied and durable in the page store.
    Checkpoint {
        /// Applied index.
        index: u64,
        /// Its term.
        term: u64,
    },
}

const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

const fn align_down(n: u64) -> u64 {
    n & !(BLOCK_SIZE - 1)
}

const fn align_up(n: u64) -> u64 {
    (n + BLOCK_SIZE - 1) & !(BLOCK_SIZE - 1)
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// crc of a record (DESIGN §2.3): over header bytes 0..8 ‖ 12..24 (`prev` and `write` included)
/// ‖ payload, so a record can be verified on its own as well as in its chain.
fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header[0..8]);
    let c = crc32c::crc32c_append(c, &header[12..RECORD_HEADER]);
    crc32c::crc32c_append(c, payload)
}

/// A record at the start of `rest` that is intact on its own (plausible header, matching crc;
/// not its place in the chain): its encoded size and its `write` offset (DESIGN §2.5, rule 3).
fn intact_record(rest: &[u8]) -> Option<(usize, u64)> {
    if rest.len() < RECORD_HEADER {
        return None;
    }
    let len = u32_at(rest, 0) as usize;
    let kind = rest[4];
    if len == 0
        || len > MAX_PAYLOAD
        || !(KIND_ENTRY..=KIND_CHECKPOINT).contains(&kind)
        || !all_zero(&rest[5..8])
        || !all_zero(&rest[20..24])
    {
        return None;
    }
    let total = RECORD_HEADER + pad8(len);
    if total > rest.len() {
        return None;
    }
    let crc = record_crc(
        &rest[..RECORD_HEADER],
        &rest[RECORD_HEADER..RECORD_HEADER + len],
    );
    (crc == u32_at(rest, 8)).then(|| (total, u64::from(u32_at(rest, 16)) * 8))
}

/// Whether the failed record at `at` shows the mark of an interrupted write (DESIGN §2.5, rule
/// 4): its extent is unknown, or a sector of its extent holds only zeros there.
fn shows_tear(buf: &[u8], at: usize) -> bool {
    let rest = &buf[at..];
    if rest.len() < RECORD_HEADER {
        return true;
    }
    let len = u32_at(rest, 0) as usize;
    if len == 0 || len > MAX_PAYLOAD || RECORD_HEADER + pad8(len) > rest.len() {
        return true;
    }
    let end = at + RECORD_HEADER + pad8(len);
    let mut from = at;
    while from < end {
        let to = ((from / SECTOR + 1) * SECTOR).min(end);
        if all_zero(&buf[from..to]) {
            return true;
        }
        from = to;
    }
    false
}

impl Record {
    fn kind(&self) -> u8 {
        match self {
            Record::Entry { .. } => KIND_ENTRY,
            Record::HardState { .. } => KIND_HARD_STATE,
            Record::Checkpoint { .. } => KIND_CHECKPOINT,
        }
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        match self {
            Record::Entry { data, .. } => ENTRY_FIXED + data.len(),
            Record::HardState { .. } => HARD_STATE_LEN,
            Record::Checkpoint { .. } => CHECKPOINT_LEN,
        }
    }

    /// Bytes the record takes in a segment: header, payload and padding to 8.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER + pad8(self.payload_len())
    }

    /// Appends the framed record to `out`, chained from `prev_crc` and marked as written by the
    /// write whose first record is at offset `write` (DESIGN §2.3); returns the record's crc.
    fn encode_into(&self, prev_crc: u32, write: u64, out: &mut Vec<u8>) -> u32 {
        let start = out.len();
        let len = self.payload_len();
        assert!(
            len <= MAX_PAYLOAD,
            "WAL record payload of {len} bytes over {MAX_PAYLOAD}"
        );
        assert!(
            write.is_multiple_of(8) && write / 8 <= u64::from(u32::MAX),
            "WAL write offset {write} does not fit a record's write field"
        );
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&[self.kind(), 0, 0, 0]);
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&prev_crc.to_le_bytes());
        out.extend_from_slice(&((write / 8) as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        match self {
            Record::Entry {
                index,
                term,
                entry_type,
                data,
            } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
                out.extend_from_slice(&[*entry_type, 0, 0, 0, 0, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Record::HardState { term, vote, commit } => {
                out.extend_from_slice(&term.to_le_bytes());
                out.extend_from_slice(&vote.to_le_bytes());
                out.extend_from_slice(&commit.to_le_bytes());
            }
            Record::Checkpoint { index, term } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
            }
        }
        out.resize(start + RECORD_HEADER + pad8(len), 0);
        let crc = record_crc(
            &out[start..start + RECORD_HEADER],
            &out[start + RECORD_HEADER..start + RECORD_HEADER + len],
        );
        out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            out.len() - start,
            self.encoded_len(),
            "WAL record encoded to a size other than its framing says"
        );
        crc
    }

    fn decode(kind: u8, p: &[u8]) -> Result<Record, String> {
        match kind {
            KIND_ENTRY => {
                if p.len() < ENTRY_FIXED {
                    return Err(format!("entry payload of {} bytes is too short", p.len()));
                }
                if !all_zero(&p[17..24]) {
                    return Err("non-zero reserved bytes in entry payload".into());
                }
                Ok(Record::Entry {
                    index: u64_at(p, 0),
                    term: u64_at(p, 8),
                    entry_type: p[16],
                    data: Bytes::copy_from_slice(&p[ENTRY_FIXED..]),
                })
            }
            KIND_HARD_STATE if p.len() == HARD_STATE_LEN => Ok(Record::HardState {
                term: u64_at(p, 0),
                vote: u64_at(p, 8),
                commit: u64_at(p, 16),
            }),
            KIND_CHECKPOINT if p.len() == CHECKPOINT_LEN => Ok(Record::Checkpoint {
                index: u64_at(p, 0),
                term: u64_at(p, 8),
            }),
            _ => Err(format!(
                "payload of {} bytes is invalid for kind {kind}",
                p.len()
            )),
        }
    }
}

/// What the log looks like after the records read or written so far.
#[derive(Debug, Clone, Default)]
struct LogState {
    /// crc of the last record (the chain value the next record starts from).
    crc: u32,
    /// Index of the last Entry record (or the segment's `first_index - 1` before any).
    last_index: u64,
    hard_state: Option<(u64, u64, u64)>,
    checkpoint: Option<(u64, u64)>,
}

impl LogState {
    fn note(&mut self, rec: &Record) {
        match *rec {
            Record::Entry { index, .. } => self.last_index = index,
            Record::HardState { term, vote, commit } => {
                self.hard_state = Some((term, vote, commit));
            }
            Record::Checkpoint { index, term } => self.checkpoint = Some((index, term)),
        }
    }

    /// The records that open every segment (DESIGN §2.4).
    fn carry(&self) -> [Option<Record>; 2] {
        [
            self.hard_state
                .map(|(term, vote, commit)| Record::HardState { term, vote, commit }),
            self.checkpoint
                .map(|(index, term)| Record::Checkpoint { index, term }),
        ]
    }

    fn has_carry(&self) -> bool {
        self.hard_state.is_some() || self.checkpoint.is_some()
    }
}

/// Records found by [`Wal::open`].
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every record, in log order, from the oldest segment kept. Each segment starts with copies
    /// of the latest HardState and Checkpoint written before it, so those may repeat.
    pub records: Vec<Record>,
    /// Where a torn tail was cut (file and offset), if one was.
    pub truncated_tail: Option<(PathBuf, u64)>,
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    first_index: u64,
    path: PathBuf,
}

fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (a, b) = stem.split_once('-')?;
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !hex16(a) || !hex16(b) {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

fn encode_header(seq: u64, first_index: u64, seed: u32) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&first_index.to_le_bytes());
    h[32..36].copy_from_slice(&seed.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Verifies a segment header (DESIGN §2.2) against the file's name; returns the chain seed.
fn check_header(buf: &[u8], seg: &Segment) -> Result<u32, WalError> {
    let bad = |offset: u64, reason: &str| corrupt(&seg.path, offset, reason);
    if buf.len() < BLOCK {
        return Err(bad(0, "segment shorter than its header"));
    }
    if &buf[0..8] != MAGIC {
        return Err(bad(0, "bad segment magic"));
    }
    if crc32c::crc32c(&buf[0..36]) != u32_at(buf, 36) {
        return Err(bad(0, "segment header checksum mismatch"));
    }
    match u32_at(buf, 8) {
        FORMAT_VERSION => {}
        1 => {
            return Err(bad(
                8,
                "segment format version 1 (written by a development build of retcd) is not supported",
            ));
        }
        _ => return Err(bad(8, "unsupported segment format version")),
    }
    if u32_at(buf, 12) != BLOCK as u32 {
        return Err(bad(12, "unsupported segment block size"));
    }
    if u64_at(buf, 16) != seg.seq {
        return Err(bad(16, "header seq does not match the file name"));
    }
    if u64_at(buf, 24) != seg.first_index {
        return Err(bad(24, "header first_index does not match the file name"));
    }
    if let Some(i) = buf[40..BLOCK].iter().position(|&b| b != 0) {
        return Err(bad(
            40 + i as u64,
            "non-zero bytes in the header's reserved area",
        ));
    }
    Ok(u32_at(buf, 32))
}

/// How the records of a segment ended.
enum ScanEnd {
    /// Records end cleanly at this offset (zeros from here to the segment end).
    Clean(u64),
    /// The record at this offset fails.
    Failed(u64, String),
}

/// Reads the records of one segment (`buf` is the whole file), appending them to `out` and
/// advancing `state`.
fn scan_records(buf: &[u8], state: &mut LogState, out: &mut Vec<Record>) -> ScanEnd {
    let mut at = BLOCK;
    loop {
        debug_assert_eq!(at % 8, 0);
        let rest = &buf[at..];
        let fail = |reason: String| ScanEnd::Failed(at as u64, reason);
        if rest.len() < RECORD_HEADER {
            if all_zero(rest) {
                return ScanEnd::Clean(at as u64);
            }
            return fail("record header past the segment end".into());
        }
        let len = u32_at(rest, 0) as usize;
        if len == 0 {
            if all_zero(rest) {
                return ScanEnd::Clean(at as u64);
            }
            return fail("zero length field followed by non-zero bytes".into());
        }
        let kind = rest[4];
        if !all_zero(&rest[5..8]) || !all_zero(&rest[20..24]) {
            return fail("non-zero reserved bytes in record header".into());
        }
        if !(KIND_ENTRY..=KIND_CHECKPOINT).contains(&kind) {
            return fail(format!("unknown record kind {kind}"));
        }
        if len > MAX_PAYLOAD {
            return fail(format!("record length {len} exceeds {MAX_PAYLOAD}"));
        }
        let total = RECORD_HEADER + pad8(len);
        if total > rest.len() {
            return fail(format!(
                "record of {total} bytes extends past the segment end"
            ));
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        let crc = record_crc(&rest[..RECORD_HEADER], payload);
        if crc != u32_at(rest, 8) {
            return fail("record checksum mismatch".into());
        }
        if u32_at(rest, 12) != state.crc {
            return fail("record does not chain from the record before it".into());
        }
        if u64::from(u32_at(rest, 16)) * 8 > at as u64 {
            return fail("record claims a write that starts after it".into());
        }
        if !all_zero(&rest[RECORD_HEADER + len..total]) {
            return fail("non-zero record padding".into());
        }
        let rec = match Record::decode(kind, payload) {
            Ok(r) => r,
            Err(reason) => return fail(reason),
        };
        state.crc = crc;
        state.note(&rec);
        out.push(rec);
        at += total;
    }
}

/// Makes sure glommio's one-time iopoll probe on this thread sees a non-empty file on the WAL's
/// device; call it on every executor before it opens any other `DmaFile` on that filesystem.
///
/// glommio decides once per thread and device whether polled I/O works by reading the first
/// `DmaFile` the thread opens; if that file is empty (a new WAL), the probe read "succeeds" with
/// 0 bytes, polling is enabled, and every later read fails with EOPNOTSUPP. This writes (with
/// std I/O) a 4096-byte file [`PROBE_FILE_NAME`] in `dir` if there is none, then opens and reads
/// it with `DmaFile`. [`Wal::open`] calls it first.
pub async fn prime_dma_io(dir: &Path) -> Result<(), WalError> {
    let probe = dir.join(PROBE_FILE_NAME);
    let ok = std::fs::metadata(&probe).is_ok_and(|m| m.len() >= BLOCK_SIZE);
    if !ok {
        std::fs::write(&probe, [0xa5u8; BLOCK]).map_err(std_io_err("writing", &probe))?;
    }
    let file = DmaFile::open(&probe)
        .await
        .map_err(io_err("opening", &probe))?;
    let read = file.read_at_aligned(0, BLOCK).await;
    file.close().await.map_err(io_err("closing", &probe))?;
    read.map_err(io_err("reading", &probe))?;
    Ok(())
}

/// Writes `data` (a multiple of 4096 bytes) at the aligned offset `start` of `file`, through the
/// reusable power-of-two buffers in `bufs` (glommio writes a whole `DmaBuffer`, whose length
/// cannot grow back once trimmed). Returns the number of buffers it had to allocate.
async fn write_blocks(
    file: &DmaFile,
    path: &Path,
    bufs: &mut [Option<Rc<DmaBuffer>>; CLASSES],
    data: &[u8],
    start: u64,
) -> Result<u64, WalError> {
    assert_eq!(start % BLOCK_SIZE, 0, "unaligned WAL write offset {start}");
    assert_eq!(
        data.len() % BLOCK,
        0,
        "unaligned WAL write length {}",
        data.len()
    );
    let mut allocated = 0;
    let mut done = 0usize;
    while done < data.len() {
        let blocks = (data.len() - done) / BLOCK;
        let class = (blocks.ilog2() as usize).min(CLASSES - 1);
        let piece = BLOCK << class;
        let slot = &mut bufs[class];
        if slot.as_mut().is_none_or(|b| Rc::get_mut(b).is_none()) {
            *slot = Some(Rc::new(file.alloc_dma_buffer(piece)));
            allocated += 1;
        }
        let Some(rc) = slot.as_mut() else {
            unreachable!("buffer slot filled above")
        };
        let Some(buf) = Rc::get_mut(rc) else {
            unreachable!("fresh or exclusive buffer")
        };
        assert_eq!(buf.len(), piece);
        buf.as_bytes_mut()
            .copy_from_slice(&data[done..done + piece]);
        let pos = start + done as u64;
        disk::write(path, pos, &data[done..done + piece]).map_err(std_io_err("writing", path))?;
        let n = file
            .write_rc_at(Rc::clone(rc), pos)
            .await
            .map_err(io_err("writing", path))?;
        if n != piece {
            return Err(short_io(
                "writing",
                path,
                std::io::ErrorKind::WriteZero,
                format!("short write: {n} of {piece} bytes at offset {pos}"),
            ));
        }
        done += piece;
    }
    Ok(allocated)
}

/// Prepares the spare segment file at `path` (DESIGN §2.1): created (truncating whatever is there),
/// preallocated to `size` bytes that read as zeros (see [`preallocate`]), then fdatasynced.
/// Returns the open (read-write) file; its zeros are durable.
async fn prepare_spare(path: PathBuf, size: u64, how: Preallocate) -> Result<DmaFile, WalError> {
    disk::create_by(Origin::Background, &path).map_err(std_io_err("creating", &path))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .map_err(io_err("creating", &path))?;
    let filled = preallocate(&file, &path, size, how).await;
    if let Err(e) = filled {
        // Best effort: the error is what gets reported.
        let _ = file.close().await;
        return Err(e);
    }
    debug!(path = %path.display(), size, "prepared spare WAL segment");
    Ok(file)
}

/// Makes `0..size` of the empty `file` read as zeros and fdatasyncs it: with `fallocate` (mode 0:
/// the file's size becomes `size`, its blocks are allocated as unwritten extents that read as
/// zeros until written, and the fdatasync makes both durable), or with [`zero_fill`] when asked
/// to or when the filesystem has no `fallocate`.
async fn preallocate(
    file: &DmaFile,
    path: &Path,
    size: u64,
    how: Preallocate,
) -> Result<(), WalError> {
    if how == Preallocate::ZeroFill {
        return zero_fill(file, path, size).await;
    }
    // For the power-loss recorder the reservation is what the zero-fill would write.
    let zeros = vec![0u8; PREALLOC_CHUNK.min(size) as usize];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(PREALLOC_CHUNK) as usize;
        disk::write_by(Origin::Background, path, pos, &zeros[..n])
            .map_err(std_io_err("preallocating", path))?;
        pos += n as u64;
    }
    // Through io_uring, so that the filesystem's work (it may wait for its journal) happens off
    // the writer's core.
    if let Err(e) = file.pre_allocate(size, false).await {
        let err: std::io::Error = e.into();
        return match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => zero_fill(file, path, size).await,
            _ => Err(std_io_err("preallocating", path)(err)),
        };
    }
    disk::sync_by(Origin::Background, path).map_err(std_io_err("syncing", path))?;
    file.fdatasync().await.map_err(io_err("syncing", path))
}

/// Writes zeros over `0..size` of `file` and fdatasyncs it.
async fn zero_fill(file: &DmaFile, path: &Path, size: u64) -> Result<(), WalError> {
    let chunk = PREALLOC_CHUNK.min(size) as usize;
    let mut buf = file.alloc_dma_buffer(chunk);
    buf.as_bytes_mut().fill(0);
    let mut buf = Rc::new(buf);
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(chunk as u64) as usize;
        if Rc::get_mut(&mut buf).is_none() {
            let mut fresh = file.alloc_dma_buffer(chunk);
            fresh.as_bytes_mut().fill(0);
            buf = Rc::new(fresh);
        }
        if n < buf.len() {
            // The last chunk, possibly shorter.
            let Some(b) = Rc::get_mut(&mut buf) else {
                unreachable!("fresh or exclusive buffer")
            };
            b.trim_to_size(n);
        }
        disk::write_by(Origin::Background, path, pos, &buf.as_bytes()[..n])
            .map_err(std_io_err("preallocating", path))?;
        let w = file
            .write_rc_at(Rc::clone(&buf), pos)
            .await
            .map_err(io_err("preallocating", path))?;
        if w != n {
            return Err(short_io(
                "preallocating",
                path,
                std::io::ErrorKind::WriteZero,
                format!("short write: {w} of {n} bytes at offset {pos}"),
            ));
        }
        pos += n as u64;
    }
    disk::sync_by(Origin::Background, path).map_err(std_io_err("syncing", path))?;
    file.fdatasync().await.map_err(io_err("syncing", path))
}

/// Turns a prepared spare (preallocated and durable, see [`prepare_spare`]) into the segment `seg`
/// (DESIGN §2.1): writes the header block (one 4096-byte O_DIRECT write), fdatasyncs, renames the
/// file to the segment's name and fsyncs the directory. Returns the open file.
async fn publish_segment(
    dir: &Path,
    dir_handle: &Directory,
    file: DmaFile,
    seg: &Segment,
    seed: u32,
) -> Result<DmaFile, WalError> {
    let spare = dir.join(SPARE_FILE_NAME);
    let mut buf = file.alloc_dma_buffer(BLOCK);
    buf.as_bytes_mut()
        .copy_from_slice(&encode_header(seg.seq, seg.first_index, seed));
    disk::write(&spare, 0, buf.as_bytes()).map_err(std_io_err("writing header", &spare))?;
    let w = file
        .write_at(buf, 0)
        .await
        .map_err(io_err("writing header", &spare))?;
    if w != BLOCK {
        return Err(short_io(
            "writing header",
            &spare,
            std::io::ErrorKind::WriteZero,
            format!("short write: {w} of {BLOCK} bytes"),
        ));
    }
    disk::sync(&spare).map_err(std_io_err("syncing", &spare))?;
    file.fdatasync().await.map_err(io_err("syncing", &spare))?;
    disk::rename(&spare, &seg.path).map_err(std_io_err("renaming", &spare))?;
    file.rename(&seg.path)
        .await
        .map_err(io_err("renaming", &spare))?;
    disk::sync_dir(dir).map_err(std_io_err("syncing", dir))?;
    dir_handle.sync().await.map_err(io_err("syncing", dir))?;
    info!(path = %seg.path.display(), "created WAL segment");
    Ok(file)
}

/// Reads a whole segment file; returns the open (read-write) file and its bytes.
async fn read_segment(path: &Path) -> Result<(DmaFile, Vec<u8>), WalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(io_err("opening", path))?;
    let size = file.file_size().await.map_err(io_err("stat", path))?;
    if size < BLOCK_SIZE || size % BLOCK_SIZE != 0 {
        file.close().await.map_err(io_err("closing", path))?;
        return Err(corrupt(
            path,
            size,
            format!("segment size {size} is not a non-zero multiple of {BLOCK_SIZE}"),
        ));
    }
    let mut buf = Vec::with_capacity(size as usize);
    while (buf.len() as u64) < size {
        let pos = buf.len() as u64;
        let n = (size - pos).min(READ_CHUNK) as usize;
        let r = file
            .read_at_aligned(pos, n)
            .await
            .map_err(io_err("reading", path))?;
        if r.is_empty() {
            return Err(short_io(
                "reading",
                path,
                std::io::ErrorKind::UnexpectedEof,
                format!("segment ends at {pos}, expected {size} bytes"),
            ));
        }
        buf.extend_from_slice(&r);
    }
    Ok((file, buf))
}

/// Lists the segments in `dir` in seq order, deleting a leftover spare and leftover `.tmp`
/// segments (DESIGN §2.1, §2.5: neither is ever a segment).
async fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(std_io_err("listing", dir))?;
    for entry in entries {
        let entry = entry.map_err(std_io_err("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == SPARE_FILE_NAME {
            debug!(path = %entry.path().display(), "deleting leftover spare WAL segment");
            disk::remove(&entry.path()).map_err(std_io_err("deleting", &entry.path()))?;
            glommio::io::remove(entry.path())
                .await
                .map_err(io_err("deleting", &entry.path()))?;
            continue;
        }
        if let Some(base) = name.strip_suffix(".tmp") {
            if parse_segment_name(base).is_some() {
                warn!(path = %entry.path().display(), "deleting unfinished WAL segment");
                disk::remove(&entry.path()).map_err(std_io_err("deleting", &entry.path()))?;
                glommio::io::remove(entry.path())
                    .await
                    .map_err(io_err("deleting", &entry.path()))?;
            }
            continue;
        }
        if let Some((seq, first_index)) = parse_segment_name(name) {
            segs.push(Segment {
                seq,
                first_index,
                path: entry.path(),
            });
        }
    }
    segs.sort_by_key(|s| s.seq);
    for pair in segs.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(corrupt(
                &pair[1].path,
                0,
                format!(
                    "segment seq {} follows seq {}: a segment is missing or duplicated",
                    pair[1].seq, pair[0].seq
                ),
            ));
        }
    }
    Ok(segs)
}

/// The spare segment file (DESIGN §2.1).
enum Spare {
    /// Being prepared by a background task (which may have finished, successfully or not).
    Preparing(Task<Result<DmaFile, WalError>>),
    /// Prepared: preallocated and durable, open read-write.
    Ready(DmaFile),
}

/// The write-ahead log. See the module documentation.
pub struct Wal {
    dir: PathBuf,
    dir_handle: Directory,
    /// Size of new segments.
    segment_size: u64,
    preallocate: Preallocate,
    /// Live segments, oldest first; the last is the current one.
    segments: VecDeque<Segment>,
    /// The current segment, open read-write.
    file: DmaFile,
    /// Size of the current segment file.
    file_size: u64,
    /// Offset of the next record in the current segment.
    tail: u64,
    /// The block holding `tail`: bytes before `tail % 4096` as on disk, zeros after.
    tail_block: Box<[u8]>,
    /// Aligned file offset where the chunk being encoded will be written.
    chunk_start: u64,
    /// `tail` when the chunk was started (the chunk holds records iff `tail > chunk_from`).
    chunk_from: u64,
    /// Encoded chunk: the tail block's prefix, then records, then (when flushing) zero padding.
    staging: Vec<u8>,
    /// Reusable O_DIRECT write buffers of 2^k blocks.
    bufs: [Option<Rc<DmaBuffer>>; CLASSES],
    buffer_allocations: u64,
    state: LogState,
    poisoned: bool,
    /// The next segment's file; `None` only while a rollover uses it or after a failure.
    spare: Option<Spare>,
}

impl Wal {
    /// Opens (creating it and its first segment if empty) the WAL in `opts.dir` and recovers its
    /// records (DESIGN §2.5): a torn tail is cut and zeroed; corruption is an error.
    pub async fn open(opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        if !opts.segment_size.is_multiple_of(BLOCK_SIZE)
            || opts.segment_size < 2 * BLOCK_SIZE
            || opts.segment_size > MAX_SEGMENT_SIZE
        {
            return Err(WalError::InvalidOptions(format!(
                "segment_size {} is not a multiple of {BLOCK_SIZE} between {} and {MAX_SEGMENT_SIZE}",
                opts.segment_size,
                2 * BLOCK_SIZE
            )));
        }
        let dir = opts.dir.clone();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(std_io_err("creating", &dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|f| f.sync_all())
                    .map_err(std_io_err("syncing", parent))?;
            }
        }
        prime_dma_io(&dir).await?;
        let dir_handle = Directory::open(&dir)
            .await
            .map_err(io_err("opening", &dir))?;
        let segs = list_segments(&dir).await?;
        if segs.is_empty() {
            let seg = Segment {
                seq: 0,
                first_index: 1,
                path: dir.join(segment_name(0, 1)),
            };
            let spare = prepare_spare(
                dir.join(SPARE_FILE_NAME),
                opts.segment_size,
                opts.preallocate,
            )
            .await?;
            let file = publish_segment(&dir, &dir_handle, spare, &seg, 0).await?;
            let state = LogState {
                crc: 0,
                last_index: 0,
                ..LogState::default()
            };
            let mut wal = Wal::new(
                dir,
                dir_handle,
                opts.segment_size,
                opts.preallocate,
                VecDeque::from([seg]),
                file,
                opts.segment_size,
                state,
            );
            wal.start_spare();
            return Ok((wal, Recovered::default()));
        }
        let (mut wal, recovered) = Wal::recover(opts, dir_handle, segs).await?;
        // Nothing awaits between here and the return: the preparation starts running at the
        // caller's next await.
        wal.start_spare();
        Ok((wal, recovered))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        dir: PathBuf,
        dir_handle: Directory,
        segment_size: u64,
        preallocate: Preallocate,
        segments: VecDeque<Segment>,
        file: DmaFile,
        file_size: u64,
        state: LogState,
    ) -> Wal {
        Wal {
            dir,
            dir_handle,
            segment_size,
            preallocate,
            segments,
            file,
            file_size,
            tail: BLOCK_SIZE,
            tail_block: vec![0u8; BLOCK].into_boxed_slice(),
            chunk_start: BLOCK_SIZE,
            chunk_from: BLOCK_SIZE,
            staging: Vec::new(),
            bufs: Default::default(),
            buffer_allocations: 0,
            state,
            poisoned: false,
            spare: None,
        }
    }

    /// Starts preparing the spare segment file in the background (DESIGN §2.1).
    fn start_spare(&mut self) {
        debug_assert!(self.spare.is_none(), "one spare at a time");
        let path = self.dir.join(SPARE_FILE_NAME);
        let size = self.segment_size;
        self.spare = Some(Spare::Preparing(glommio::spawn_local(prepare_spare(
            path,
            size,
            self.preallocate,
        ))));
    }

    /// Takes the prepared spare file, waiting for its preparation to finish if it has not (or
    /// preparing it here if none is under way, which happens only after a failure).
    async fn take_spare(&mut self) -> Result<DmaFile, WalError> {
        match self.spare.take() {
            Some(Spare::Ready(file)) => Ok(file),
            Some(Spare::Preparing(task)) => task.await,
            None => {
                let path = self.dir.join(SPARE_FILE_NAME);
                prepare_spare(path, self.segment_size, self.preallocate).await
            }
        }
    }

    /// Waits until the spare segment file is prepared (diagnostics and tests: a rollover after
    /// this does not wait for the preallocation). An error of the preparation poisons the WAL, as it
    /// would at the next rollover.
    #[doc(hidden)]
    pub async fn wait_for_spare(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        self.poisoned = true;
        let file = self.take_spare().await?;
        self.spare = Some(Spare::Ready(file));
        self.poisoned = false;
        Ok(())
    }

    async fn recover(
        opts: WalOptions,
        dir_handle: Directory,
        segs: Vec<Segment>,
    ) -> Result<(Wal, Recovered), WalError> {
        let mut recovered = Recovered::default();
        let mut state = LogState::default();
        let n = segs.len();
        for i in 0..n {
            let seg = &segs[i];
            let (file, buf) = read_segment(&seg.path).await?;
            let checked = check_header(&buf, seg).and_then(|seed| {
                if i == 0 {
                    state.crc = seed;
                    state.last_index = seg.first_index.saturating_sub(1);
                    return Ok(());
                }
                if seed != state.crc {
                    return Err(corrupt(
                        &seg.path,
                        32,
                        "chain seed differs from the previous segment's last record crc",
                    ));
                }
                if seg.first_index != state.last_index.wrapping_add(1) {
                    return Err(corrupt(
                        &seg.path,
                        24,
                        format!(
                            "first_index {} does not follow the previous segment's last entry {}",
                            seg.first_index, state.last_index
                        ),
                    ));
                }
                Ok(())
            });
            if let Err(e) = checked {
                file.close().await.map_err(io_err("closing", &seg.path))?;
                return Err(e);
            }
            let end = scan_records(&buf, &mut state, &mut recovered.records);
            let (tail, zero_to) = match end {
                ScanEnd::Clean(_) if i + 1 < n => {
                    file.close().await.map_err(io_err("closing", &seg.path))?;
                    continue;
                }
                ScanEnd::Clean(at) => (at, None),
                ScanEnd::Failed(at, reason) => {
                    let torn = Wal::why_not_torn(&buf, at, &segs[i + 1..])
                        .await
                        .and_then(|why| match why {
                            None => Ok(()),
                            Some(why) => Err(corrupt(&seg.path, at, format!("{reason}; {why}"))),
                        });
                    if let Err(e) = torn {
                        file.close().await.map_err(io_err("closing", &seg.path))?;
                        return Err(e);
                    }
                    warn!(
                        path = %seg.path.display(),
                        offset = at,
                        %reason,
                        "truncating torn WAL tail"
                    );
                    let last_nonzero = buf.iter().rposition(|&b| b != 0).unwrap_or(0) as u64;
                    let to = align_up(last_nonzero + 1).max(align_up(at));
                    recovered.truncated_tail = Some((seg.path.clone(), at));
                    (at, Some(to))
                }
            };
            // `seg` is the current segment from here on.
            let mut wal = Wal::new(
                opts.dir.clone(),
                dir_handle,
                opts.segment_size,
                opts.preallocate,
                segs[..=i].iter().cloned().collect(),
                file,
                buf.len() as u64,
                state,
            );
            wal.set_tail(tail, &buf[align_down(tail) as usize..tail as usize]);
            if let Some(to) = zero_to {
                wal.poisoned = true;
                // Later (empty) segments go first, newest first: a crash in between leaves
                // consecutive seqs and the same torn tail for the next recovery to cut.
                for later in segs[i + 1..].iter().rev() {
                    warn!(path = %later.path.display(), "deleting WAL segment after a torn tail");
                    wal.remove_durably(&later.path).await?;
                }
                wal.zero_tail(to).await?;
                wal.poisoned = false;
            }
            debug!(
                segments = wal.segments.len(),
                records = recovered.records.len(),
                last_index = wal.state.last_index,
                "recovered WAL"
            );
            return Ok((wal, recovered));
        }
        unreachable!("the loop returns at the last segment")
    }

    /// DESIGN §2.5: the failure at `at` of a segment is a torn tail (`None`) unless one of the
    /// four rules says the damaged bytes were synced (`Some(the rule that failed)`).
    async fn why_not_torn(
        buf: &[u8],
        at: u64,
        later: &[Segment],
    ) -> Result<Option<String>, WalError> {
        let at_us = at as usize;
        let from = at_us.saturating_add(W).min(buf.len());
        if let Some(i) = buf[from..].iter().position(|&b| b != 0) {
            return Ok(Some(format!(
                "non-zero bytes at offset {} lie beyond one write from it",
                from + i
            )));
        }
        let end = buf.iter().rposition(|&b| b != 0).map_or(at_us, |i| i + 1);
        let mut p = at_us + 8;
        while p < end {
            if let Some((_, write)) = intact_record(&buf[p..]).filter(|&(_, w)| w > at) {
                return Ok(Some(format!(
                    "the intact record at offset {p} was written by a later write (from offset {write}), so this one was synced"
                )));
            }
            p += 8;
        }
        if !shows_tear(buf, at_us) {
            return Ok(Some(
                "every sector of the record was written, so it was damaged after it was written"
                    .into(),
            ));
        }
        for seg in later {
            let (file, lbuf) = read_segment(&seg.path).await?;
            file.close().await.map_err(io_err("closing", &seg.path))?;
            check_header(&lbuf, seg)?;
            if let Some(i) = lbuf[BLOCK..].iter().position(|&b| b != 0) {
                return Ok(Some(format!(
                    "a later segment, {}, holds records (offset {})",
                    seg.path.display(),
                    BLOCK + i
                )));
            }
        }
        Ok(None)
    }

    /// Sets the write position of the current segment; `prefix` is the tail block's bytes before
    /// `tail`.
    fn set_tail(&mut self, tail: u64, prefix: &[u8]) {
        assert!(tail >= BLOCK_SIZE && tail.is_multiple_of(8) && tail <= self.file_size);
        assert_eq!(prefix.len() as u64, tail % BLOCK_SIZE);
        self.tail = tail;
        self.tail_block.fill(0);
        self.tail_block[..prefix.len()].copy_from_slice(prefix);
        self.begin_chunk();
    }

    /// Writes zeros from the tail to `to` (aligned) and fdatasyncs: the cut of a torn tail.
    async fn zero_tail(&mut self, to: u64) -> Result<(), WalError> {
        assert_eq!(to % BLOCK_SIZE, 0);
        assert!(to <= self.file_size && to >= self.chunk_start);
        self.staging.resize((to - self.chunk_start) as usize, 0);
        if !self.staging.is_empty() {
            self.write_staging().await?;
        }
        self.begin_chunk();
        Ok(())
    }

    /// Writes `staging` (whole blocks) at `chunk_start` of the current segment and fdatasyncs.
    async fn write_staging(&mut self) -> Result<(), WalError> {
        let path = self.current_path().to_path_buf();
        self.buffer_allocations += write_blocks(
            &self.file,
            &path,
            &mut self.bufs,
            &self.staging,
            self.chunk_start,
        )
        .await?;
        crate::metrics::WAL_WRITE_BYTES.add(self.staging.len() as u64);
        if !disk::fsync_enabled() {
            return Ok(());
        }
        disk::sync(&path).map_err(std_io_err("syncing", &path))?;
        let started = std::time::Instant::now();
        self.file
            .fdatasync()
            .await
            .map_err(io_err("syncing", &path))?;
        crate::metrics::WAL_FSYNC_SECONDS.observe_duration(started.elapsed());
        Ok(())
    }

    /// Deletes a file of the WAL directory and fsyncs the directory.
    async fn remove_durably(&self, path: &Path) -> Result<(), WalError> {
        disk::remove(path).map_err(std_io_err("deleting", path))?;
        glommio::io::remove(path)
            .await
            .map_err(io_err("deleting", path))?;
        disk::sync_dir(&self.dir).map_err(std_io_err("syncing", &self.dir))?;
        self.dir_handle
            .sync()
            .await
            .map_err(io_err("syncing", &self.dir))
    }

    fn current_path(&self) -> &Path {
        &self.segments.back().expect("a current segment").path
    }

    /// Index of the last Entry record appended or recovered (with Raft's overwrite rule: the
    /// index of the last Entry record in log order), or the first kept segment's
    /// `first_index - 1` when there is none.
    pub fn last_index(&self) -> u64 {
        self.state.last_index
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many O_DIRECT write buffers have been allocated (diagnostics: they are reused, so this
    /// stays small).
    #[doc(hidden)]
    pub fn buffer_allocations(&self) -> u64 {
        self.buffer_allocations
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    /// Appends one batch (DESIGN §2.4): encodes the records, writes them (in several writes, each
    /// followed by `fdatasync`, when they exceed `W` or the segment), and returns only when all
    /// are durable.
    ///
    /// # Panics
    ///
    /// If the Entry records of the batch do not have strictly increasing indexes.
    pub async fn append(&mut self, records: &[Record]) -> Result<(), WalError> {
        self.check_usable()?;
        let max = self.max_payload();
        let mut prev_index = None;
        for rec in records {
            let size = rec.payload_len();
            if size > max {
                return Err(WalError::RecordTooLarge { size, max });
            }
            if let Record::Entry { index, .. } = *rec {
                if let Some(prev) = prev_index {
                    assert!(
                        index > prev,
                        "WAL batch entries must have increasing indexes: {index} after {prev}"
                    );
                }
                prev_index = Some(index);
            }
        }
        self.poisoned = true;
        self.write_batch(records).await?;
        self.poisoned = false;
        Ok(())
    }

    /// Largest Raft entry data an Entry record can carry (DESIGN §2.3): what a proposal may
    /// hold, whatever the request limit says, or its append would fail the WAL.
    pub fn max_entry_data(&self) -> usize {
        self.max_payload() - ENTRY_FIXED
    }

    /// Largest payload that fits a write and a fresh segment (after its carried records).
    fn max_payload(&self) -> usize {
        let room = (self.segment_size - BLOCK_SIZE) as usize - CARRY_MAX - RECORD_HEADER;
        MAX_PAYLOAD.min(room & !7)
    }

    async fn write_batch(&mut self, records: &[Record]) -> Result<(), WalError> {
        debug_assert_eq!(self.chunk_from, self.tail);
        if self.tail == BLOCK_SIZE {
            self.push_carry();
        }
        for rec in records {
            self.push(rec).await?;
        }
        self.flush_chunk().await
    }

    /// Encodes the latest HardState and Checkpoint at the start of an empty segment.
    fn push_carry(&mut self) {
        assert_eq!(self.tail, BLOCK_SIZE, "carried records open a segment");
        for rec in self.state.carry().into_iter().flatten() {
            debug_assert!(self.tail + rec.encoded_len() as u64 <= self.file_size);
            self.encode(&rec);
        }
    }

    fn encode(&mut self, rec: &Record) {
        let crc = rec.encode_into(self.state.crc, self.chunk_from, &mut self.staging);
        self.state.crc = crc;
        self.state.note(rec);
        self.tail += rec.encoded_len() as u64;
        assert_eq!(
            self.staging.len() as u64,
            self.tail - self.chunk_start,
            "WAL staging buffer out of step with the tail"
        );
        assert!(self.tail <= self.file_size, "record past the segment end");
    }

    async fn push(&mut self, rec: &Record) -> Result<(), WalError> {
        let need = rec.encoded_len() as u64;
        if self.tail + need > self.file_size {
            self.flush_chunk().await?;
            self.roll().await?;
            self.push_carry();
        }
        if align_up(self.tail + need) - self.chunk_start > MAX_WRITE_BYTES {
            self.flush_chunk().await?;
        }
        assert!(align_up(self.tail + need) - self.chunk_start <= MAX_WRITE_BYTES);
        self.encode(rec);
        Ok(())
    }

    /// Starts a new chunk at the tail: the staging buffer gets the tail block's existing bytes.
    fn begin_chunk(&mut self) {
        let prefix = (self.tail % BLOCK_SIZE) as usize;
        self.staging.clear();
        self.staging.extend_from_slice(&self.tail_block[..prefix]);
        self.chunk_start = align_down(self.tail);
        self.chunk_from = self.tail;
    }

    /// Writes the encoded chunk (padded to a block) and fdatasyncs; then starts the next chunk.
    async fn flush_chunk(&mut self) -> Result<(), WalError> {
        if self.tail == self.chunk_from {
            return Ok(());
        }
        assert_eq!(
            self.staging.len() as u64,
            self.tail - self.chunk_start,
            "WAL staging buffer out of step with the tail"
        );
        let len = align_up(self.staging.len() as u64);
        assert!(len <= MAX_WRITE_BYTES, "WAL write of {len} bytes exceeds W");
        assert!(self.chunk_start + len <= self.file_size);
        self.staging.resize(len as usize, 0);
        self.write_staging().await?;
        let prefix = (self.tail % BLOCK_SIZE) as usize;
        if prefix == 0 {
            self.tail_block.fill(0);
        } else {
            let off = (align_down(self.tail) - self.chunk_start) as usize;
            self.tail_block
                .copy_from_slice(&self.staging[off..off + BLOCK]);
        }
        self.begin_chunk();
        Ok(())
    }

    /// Switches to a new segment (the chunk must have been flushed).
    async fn roll(&mut self) -> Result<(), WalError> {
        assert_eq!(self.tail, self.chunk_from, "roll with an unflushed chunk");
        let cur = self.segments.back().expect("a current segment");
        let seq = cur.seq + 1;
        let first_index = self.state.last_index.wrapping_add(1);
        let seg = Segment {
            seq,
            first_index,
            path: self.dir.join(segment_name(seq, first_index)),
        };
        let waited = Instant::now();
        let spare = self.take_spare().await?;
        let waited = waited.elapsed();
        let file =
            publish_segment(&self.dir, &self.dir_handle, spare, &seg, self.state.crc).await?;
        debug!(?waited, "WAL rollover (time spent waiting for the spare)");
        let old = std::mem::replace(&mut self.file, file);
        let old_path = self.current_path().to_path_buf();
        self.segments.push_back(seg);
        self.file_size = self.segment_size;
        self.set_tail(BLOCK_SIZE, &[]);
        self.start_spare();
        old.close().await.map_err(io_err("closing", &old_path))?;
        Ok(())
    }

    /// Deletes the oldest segments whose entries are all ≤ `index`, never the current one.
    /// `index` must not exceed the index of the last Checkpoint record appended (or recovered).
    pub async fn release_to(&mut self, index: u64) -> Result<(), WalError> {
        self.check_usable()?;
        let checkpoint = self.state.checkpoint.map(|(i, _)| i);
        if checkpoint.is_none_or(|c| index > c) {
            return Err(WalError::ReleaseBeyondCheckpoint {
                requested: index,
                checkpoint,
            });
        }
        self.poisoned = true;
        if self.tail == BLOCK_SIZE && self.state.has_carry() {
            // The current segment must hold the carried state before older ones go.
            self.write_batch(&[]).await?;
        }
        // Segment k's last entry is segment k+1's first_index - 1.
        while self.segments.len() > 1 && self.segments[1].first_index.saturating_sub(1) <= index {
            let path = self.segments[0].path.clone();
            self.remove_durably(&path).await?;
            self.segments.pop_front();
            info!(path = %path.display(), index, "released WAL segment");
        }
        self.poisoned = false;
        Ok(())
    }

    /// Closes the files. A spare still being prepared is cancelled (and waited for); the spare
    /// file stays behind and is deleted by the next open.
    pub async fn close(mut self) -> Result<(), WalError> {
        let spare = match self.spare.take() {
            Some(Spare::Preparing(task)) => task.cancel().await,
            Some(Spare::Ready(file)) => Some(Ok(file)),
            None => None,
        };
        match spare {
            Some(Ok(file)) => {
                if let Err(e) = file.close().await {
                    // Not part of the log: the next open deletes it anyway.
                    warn!(error = %e, "closing the spare WAL segment failed");
                }
            }
            Some(Err(e)) => warn!(error = %e, "preparing the spare WAL segment failed"),
            None => {}
        }
        let path = self.current_path().to_path_buf();
        self.file.close().await.map_err(io_err("closing", &path))?;
        self.dir_handle
            .close()
            .await
            .map_err(io_err("closing", &self.dir))?;
        Ok(())
    }
}
