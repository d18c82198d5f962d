//! etcd's snapshot file format: a bbolt database (format version 2), as etcd 3.4–3.6 keep in
//! `member/snap/db` and stream from `Maintenance.Snapshot`, optionally followed by the sha256 of
//! its bytes. The layouts we write and what we check are specified in DESIGN.md §7; the byte-level
//! facts about bbolt are in the shared reference `bbolt-etcd-formats.md` §1.
//!
//! What it owns:
//! - [`write_db`]: a streaming writer that turns top-level buckets of sorted key/value pairs
//!   (a [`Source`] scanned twice: a planning pass, then the writing pass) into one sequential
//!   byte stream, memory bounded independently of the database size (DESIGN.md §7.2);
//!   [`Sha256Trailer`] appends etcd's 32-byte sha256 after it.
//! - [`Db`]: a reader that validates the metas, lists the top-level buckets, scans a bucket in
//!   key order (inline buckets too), verifies etcd's trailer and runs [`Db::check`], bbolt's
//!   `Tx.Check`.
//! - [`snapshot_status`]: etcd's `snapshot status` (hash, revision, total keys, total size).
//!
//! Invariants: the writer emits exactly `hwm × 4096` bytes, every page below `hwm` reachable
//! exactly once, keys strictly ascending in every page and tree; the reader never trusts a count,
//! offset or page id from the file without a bounds check, and bounds every walk (by depth and by
//! the page count), so corrupt input gives a [`ReadError`], never a panic or an endless loop.
//!
//! It is generic over buckets: only [`snapshot_status`] knows etcd's `key` bucket. Callers: the
//! server's `Maintenance.Snapshot` (writer over a consistent read view of the store) and
//! `retcdutl snapshot status|restore` (reader).

mod read;
mod write;

#[cfg(test)]
mod tests;

/// A key/value pair.
pub type Entry = (Vec<u8>, Vec<u8>);
/// A visitor of key/value pairs in key order; `Break` stops the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> std::ops::ControlFlow<()> + 'a;

pub use read::{
    Bucket, CheckReport, Db, Loc, Meta, ReadError, SnapshotStatus, Trailer, snapshot_status,
};
pub use write::{
    MemBucket, MemSource, Sha256Trailer, Source, SourceError, WriteError, WriteSummary, write_db,
    write_db_planned, write_snapshot, write_snapshot_planned,
};

/// Page size of the files we write (bbolt's default on x86-64 Linux; a multiple of 512 as etcd's
/// trailer detection needs).
pub const PAGE_SIZE: usize = 4096;
/// bbolt's `MaxKeySize`.
pub const MAX_KEY_SIZE: usize = 32768;
/// bbolt's `MaxValueSize`.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;
/// Length of etcd's sha256 trailer.
pub const TRAILER_LEN: usize = 32;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// `meta.freelist` when the freelist is not persisted (etcd on Linux, and our writer).
const NO_FREELIST: u64 = u64::MAX;

const PAGE_HEADER: usize = 16;
const ELEM: usize = 16;
const BUCKET_HEADER: usize = 16;
/// Offset of the meta struct in a meta page, and the length the checksum covers.
const META_OFFSET: usize = PAGE_HEADER;
const META_CHECKED: usize = 56;

const FLAG_BRANCH: u16 = 0x01;
const FLAG_LEAF: u16 = 0x02;
const FLAG_META: u16 = 0x04;
const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a bucket header (a sub-bucket).
const ELEM_BUCKET: u32 = 0x01;

/// Deepest tree (levels, nested buckets included) the reader follows. Our writer's trees at
/// least halve per level, so 64 levels cannot be exceeded; bbolt's own are far shallower.
const MAX_DEPTH: usize = 64;

/// FNV-1a 64, bbolt's meta checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A byte string for error messages: escaped, at most 64 bytes shown.
fn show(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(64)];
    let mut s = format!("\"{}\"", shown.escape_ascii());
    if bytes.len() > shown.len() {
        s.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    s
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes a page header at the start of `b`.
fn put_header(b: &mut [u8], id: u64, flags: u16, count: u16, overflow: u32) {
    put_u64(b, 0, id);
    put_u16(b, 8, flags);
    put_u16(b, 10, count);
    put_u32(b, 12, overflow);
}
