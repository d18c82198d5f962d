//! The bbolt reader, bbolt's `Tx.Check` and etcd's `snapshot status` (DESIGN.md §7.3).

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    BUCKET_HEADER, ELEM, ELEM_BUCKET, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, MAGIC, MAX_DEPTH,
    META_CHECKED, META_OFFSET, NO_FREELIST, PAGE_HEADER, TRAILER_LEN, VERSION, fnv1a64, show,
    u16_at, u32_at, u64_at,
};
use super::{Entry, Visit};

/// Where in the file something is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loc {
    /// A page (its first pgid).
    Page(u64),
    /// The leaf page embedded in an inline bucket's value.
    Inline { bucket: String },
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Page(id) => write!(f, "page {id}"),
            Loc::Inline { bucket } => write!(f, "inline bucket {bucket}"),
        }
    }
}

/// Why a bbolt file could not be read; each names the page or byte offset it is about.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {len} bytes at offset {offset}: {source}")]
    Io {
        offset: u64,
        len: usize,
        source: io::Error,
    },
    #[error("file of {len} bytes is too small for a bbolt database")]
    TooSmall { len: u64 },
    #[error("no valid meta page: meta 0: {meta0}; meta 1: {meta1}")]
    NoValidMeta { meta0: String, meta1: String },
    #[error("the file holds {len} bytes of database but the meta needs {needed} ({pages} pages)")]
    Truncated { len: u64, needed: u64, pages: u64 },
    #[error("page {pgid} (referenced from {from}) is beyond the high-water mark {hwm}")]
    OutOfBounds { pgid: u64, hwm: u64, from: String },
    #[error("page {pgid}: its header says id {found}")]
    IdMismatch { pgid: u64, found: u64 },
    #[error("page {pgid}: overflow {overflow} runs past the high-water mark {hwm}")]
    OverflowOutOfBounds { pgid: u64, overflow: u32, hwm: u64 },
    #[error("{at}: flags {flags:#x}, expected {expected}")]
    BadType {
        at: Loc,
        flags: u16,
        expected: &'static str,
    },
    #[error("{at}, element {index}: {reason}")]
    BadElement {
        at: Loc,
        index: usize,
        reason: String,
    },
    #[error("{at}: branch page without elements")]
    EmptyBranch { at: Loc },
    #[error("{at}, element {index}: key {key} is not after {previous}")]
    KeysOutOfOrder {
        at: Loc,
        index: usize,
        key: String,
        previous: String,
    },
    #[error("page {pgid}: first key {key} is before its branch key {branch_key}")]
    BeforeBranchKey {
        pgid: u64,
        key: String,
        branch_key: String,
    },
    #[error("page {pgid}: key {key} is not before the next branch key {next}")]
    NotBeforeNextBranchKey {
        pgid: u64,
        key: String,
        next: String,
    },
    #[error("{at}: tree deeper than {MAX_DEPTH} levels")]
    TooDeep { at: Loc },
    #[error("walk of the tree from page {root} visited more pages than the file has ({hwm})")]
    WalkTooLong { root: u64, hwm: u64 },
    #[error("page {pgid}: multiple references")]
    MultipleReferences { pgid: u64 },
    #[error("page {pgid}: reachable but freed")]
    ReachableFreed { pgid: u64 },
    #[error("page {pgid}: already freed (listed twice in the freelist)")]
    AlreadyFreed { pgid: u64 },
    #[error("page {pgid}: freelist entry {index} is page {id}, out of bounds (hwm {hwm})")]
    FreelistOutOfBounds {
        pgid: u64,
        index: usize,
        id: u64,
        hwm: u64,
    },
    #[error("page {pgid}: unreachable and not free")]
    UnreachableUnfreed { pgid: u64 },
    #[error("top-level key {key} (in {at}) is not a bucket")]
    NotABucket { key: String, at: Loc },
    #[error("{at}: bucket {key} has a bad header: {reason}")]
    BadBucketHeader {
        at: Loc,
        key: String,
        reason: String,
    },
    #[error("bucket {bucket} holds a nested bucket {key} (not supported by scan)")]
    NestedBucket { bucket: String, key: String },
    #[error(
        "sha256 trailer mismatch: the file ends in {expected}, the db's bytes hash to {actual}"
    )]
    TrailerMismatch { expected: String, actual: String },
    #[error("key bucket: last key {key} is not a revision (needs at least 8 bytes)")]
    BadRevisionKey { key: String },
}

/// The meta in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// 0 or 1: which meta page it was read from.
    pub page: u64,
    pub page_size: u32,
    /// Root page of the root bucket.
    pub root: u64,
    /// Freelist page, or `None` when not persisted (`0xFFFF…FF`).
    pub freelist: Option<u64>,
    /// High-water mark: pages in use.
    pub pgid: u64,
    pub txid: u64,
}

/// Whether a file ends in etcd's sha256 of the db bytes (reference §3.2: length ≡ 32 mod 512).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trailer {
    /// A db copied from a data dir: restore needs `--skip-hash-check`.
    Absent,
    Present {
        digest: [u8; 32],
    },
}

/// A top-level bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub name: Vec<u8>,
    root: BucketRoot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum BucketRoot {
    Page(u64),
    /// The embedded leaf page (the value after the 16-byte header).
    Inline(Vec<u8>),
}

/// Where a bucket's entries live, for tests that poke at pages.
#[cfg(test)]
pub(super) enum BucketRootView {
    Page(u64),
    Inline,
}

impl Bucket {
    #[cfg(test)]
    pub(super) fn root_view(&self) -> BucketRootView {
        match self.root {
            BucketRoot::Page(p) => BucketRootView::Page(p),
            BucketRoot::Inline(_) => BucketRootView::Inline,
        }
    }

    /// Whether bbolt stored it inside its parent's leaf.
    pub fn is_inline(&self) -> bool {
        matches!(self.root, BucketRoot::Inline(_))
    }
}

/// What [`Db::check`] found (it fails on the first problem).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// High-water mark.
    pub pages: u64,
    /// Pages reached from the root (meta and freelist pages included).
    pub reachable: u64,
    /// Pages in the persisted freelist.
    pub free: u64,
    /// Pages neither reachable nor listed free (bbolt rebuilds the freelist from these when
    /// it is not persisted; 0 in what we write).
    pub unreachable: u64,
    /// Buckets, nested ones and inline ones included, the root bucket excluded.
    pub buckets: u64,
    /// Key/value pairs in all buckets.
    pub keys: u64,
}

/// etcd 3.4/3.5's `snapshot status` of a db (reference §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

enum Backing {
    File(File),
    Bytes(Vec<u8>),
}

impl Backing {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let len = buf.len();
        let err = |source| ReadError::Io {
            offset,
            len,
            source,
        };
        match self {
            Backing::File(f) => f.read_exact_at(buf, offset).map_err(err),
            Backing::Bytes(b) => {
                let start = usize::try_from(offset).ok().filter(|&s| s <= b.len());
                match start.and_then(|s| b.get(s..s.checked_add(buf.len())?)) {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        Ok(())
                    }
                    None => Err(err(io::ErrorKind::UnexpectedEof.into())),
                }
            }
        }
    }
}

/// A read-only bbolt database, read with positional reads one page at a time.
pub struct Db {
    backing: Backing,
    len: u64,
    meta: Meta,
}

/// One page (with its overflow pages) as read.
struct Page {
    id: u64,
    flags: u16,
    count: u16,
    overflow: u32,
    data: Vec<u8>,
}

impl Db {
    /// Opens the file at `path` (a db, or an etcd snapshot with its trailer).
    pub fn open(path: &Path) -> Result<Db, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Io {
            offset: 0,
            len: 0,
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| ReadError::Io {
                offset: 0,
                len: 0,
                source,
            })?
            .len();
        Db::new(Backing::File(file), len)
    }

    /// Reads a db (or snapshot) held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Db, ReadError> {
        let len = bytes.len() as u64;
        Db::new(Backing::Bytes(bytes), len)
    }

    fn new(backing: Backing, len: u64) -> Result<Db, ReadError> {
        if len < 1024 {
            return Err(ReadError::TooSmall { len });
        }
        // Page size: meta 0's if it validates, else probe meta 1 at 1 KiB << i (bbolt ≥ 1.3.7).
        let meta0 = read_meta(&backing, 0, 0);
        let page_size = match &meta0 {
            Ok(m) => Some(u64::from(m.page_size)),
            Err(_) => (0..15)
                .map(|i| 1024u64 << i)
                .filter(|&off| off + 1024 <= len)
                .find(|&off| {
                    read_meta(&backing, off, 1).is_ok_and(|m| u64::from(m.page_size) == off)
                }),
        };
        let meta1 = match page_size {
            Some(ps) if ps + 1024 <= len => read_meta(&backing, ps, 1),
            Some(ps) => Err(format!("file of {len} bytes ends before offset {ps}")),
            None => Err("no meta page found at 1 KiB << i".into()),
        };
        // bbolt's DB.meta(): the valid one with the higher txid, else the other valid one.
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) if u64::from(a.page_size) == u64::from(b.page_size) => {
                if b.txid > a.txid { b } else { a }
            }
            (Ok(a), _) => a,
            (Err(_), Ok(b)) => b,
            (Err(meta0), Err(meta1)) => return Err(ReadError::NoValidMeta { meta0, meta1 }),
        };
        let db_len = db_len(len);
        let needed = meta.pgid.checked_mul(u64::from(meta.page_size));
        match needed {
            Some(needed) if needed <= db_len => {}
            _ => {
                return Err(ReadError::Truncated {
                    len: db_len,
                    needed: needed.unwrap_or(u64::MAX),
                    pages: meta.pgid,
                });
            }
        }
        Ok(Db { backing, len, meta })
    }

    /// The meta in use.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// `Tx.Size()`: high-water mark × page size.
    pub fn size(&self) -> u64 {
        self.meta.pgid * u64::from(self.meta.page_size)
    }

    /// Length of the file, trailer included.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Whether the file ends in etcd's sha256 trailer (not verified; see [`Db::verify_trailer`]).
    pub fn trailer(&self) -> Result<Trailer, ReadError> {
        if self.len % 512 != TRAILER_LEN as u64 {
            return Ok(Trailer::Absent);
        }
        let mut digest = [0u8; 32];
        self.backing
            .read_at(self.len - TRAILER_LEN as u64, &mut digest)?;
        Ok(Trailer::Present { digest })
    }

    /// Recomputes the sha256 of the bytes before the trailer, as `snapshot restore` does.
    pub fn verify_trailer(&self) -> Result<Trailer, ReadError> {
        let trailer = self.trailer()?;
        let Trailer::Present { digest } = &trailer else {
            return Ok(trailer);
        };
        let end = self.len - TRAILER_LEN as u64;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            self.backing.read_at(at, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if &actual != digest {
            return Err(ReadError::TrailerMismatch {
                expected: hex(digest),
                actual: hex(&actual),
            });
        }
        Ok(trailer)
    }

    /// Reads page `pgid` with its overflow pages, checking its header id and bounds.
    fn page(&self, pgid: u64, from: &dyn Fn() -> String) -> Result<Page, ReadError> {
        let hwm = self.meta.pgid;
        if pgid >= hwm {
            return Err(ReadError::OutOfBounds {
                pgid,
                hwm,
                from: from(),
            });
        }
        let ps = u64::from(self.meta.page_size);
        let mut head = [0u8; PAGE_HEADER];
        self.backing.read_at(pgid * ps, &mut head)?;
        let id = u64_at(&head, 0);
        if id != pgid {
            return Err(ReadError::IdMismatch { pgid, found: id });
        }
        let overflow = u32_at(&head, 12);
        if pgid + u64::from(overflow) >= hwm {
            return Err(ReadError::OverflowOutOfBounds {
                pgid,
                overflow,
                hwm,
            });
        }
        // Bounded by the file: pgid + overflow < hwm and hwm pages fit in the file.
        let mut data = vec![0u8; ((u64::from(overflow) + 1) * ps) as usize];
        self.backing.read_at(pgid * ps, &mut data)?;
        Ok(Page {
            id,
            flags: u16_at(&head, 8),
            count: u16_at(&head, 10),
            overflow,
            data,
        })
    }

    /// The top-level buckets, in name order.
    pub fn buckets(&self) -> Result<Vec<Bucket>, ReadError> {
        let mut out = Vec::new();
        let root = self.meta.root;
        self.walk(root, "the meta", &mut |at, _, key, value, flags| {
            if flags & ELEM_BUCKET == 0 {
                return Err(ReadError::NotABucket {
                    key: show(key),
                    at: at.clone(),
                });
            }
            out.push(Bucket {
                name: key.to_vec(),
                root: bucket_root(at, key, value)?,
            });
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, ReadError> {
        Ok(self.buckets()?.into_iter().find(|b| b.name == name))
    }

    /// Visits the entries of `bucket` in key order (checked strictly ascending); stops when
    /// `visit` returns `Break`.
    pub fn scan_bucket(&self, bucket: &Bucket, visit: &mut Visit<'_>) -> Result<(), ReadError> {
        let name = show(&bucket.name);
        let mut plain = |_: &Loc, _: usize, key: &[u8], value: &[u8], flags: u32| {
            if flags & ELEM_BUCKET != 0 {
                return Err(ReadError::NestedBucket {
                    bucket: name.clone(),
                    key: show(key),
                });
            }
            Ok(visit(key, value))
        };
        match &bucket.root {
            BucketRoot::Page(root) => self.walk(*root, &format!("bucket {name}"), &mut plain),
            BucketRoot::Inline(page) => {
                let at = Loc::Inline {
                    bucket: name.clone(),
                };
                let mut prev: Option<&[u8]> = None;
                for_each_leaf(&at, page, &mut |at, i, k, v, f| {
                    check_after(at, i, prev, k)?;
                    prev = Some(k);
                    plain(at, i, k, v, f)
                })
                .map(|_| ())
            }
        }
    }

    /// All entries of `bucket`, in key order.
    pub fn entries(&self, bucket: &Bucket) -> Result<Vec<Entry>, ReadError> {
        let mut out = Vec::new();
        self.scan_bucket(bucket, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Walks the tree rooted at `root` in key order, calling `visit(location, index, key,
    /// value, flags)` for each leaf element; keys are checked strictly ascending across the
    /// whole tree. Bounded by [`MAX_DEPTH`] and by the page count.
    fn walk(&self, root: u64, from: &str, visit: &mut ElemVisit<'_>) -> Result<(), ReadError> {
        let mut state = Walk {
            prev: None,
            visited: 0,
            root,
        };
        self.walk_page(root, &|| from.to_string(), 0, &mut state, visit)
            .map(|_| ())
    }

    fn walk_page(
        &self,
        pgid: u64,
        from: &dyn Fn() -> String,
        depth: usize,
        state: &mut Walk,
        visit: &mut ElemVisit<'_>,
    ) -> Result<ControlFlow<()>, ReadError> {
        let at = Loc::Page(pgid);
        if depth >= MAX_DEPTH {
            return Err(ReadError::TooDeep { at });
        }
        state.visited += 1;
        if state.visited > self.meta.pgid {
            return Err(ReadError::WalkTooLong {
                root: state.root,
                hwm: self.meta.pgid,
            });
        }
        let page = self.page(pgid, from)?;
        match page.flags {
            FLAG_BRANCH => {
                let children = branch_elems(&at, &page)?;
                for (_, child) in children {
                    let from = || format!("page {pgid}");
                    if self
                        .walk_page(child, &from, depth + 1, state, visit)?
                        .is_break()
                    {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Ok(ControlFlow::Continue(()))
            }
            FLAG_LEAF => {
                let prev = &mut state.prev;
                for_each_leaf(&at, &page.data, &mut |at, i, k, v, f| {
                    check_after(at, i, prev.as_deref(), k)?;
                    *prev = Some(k.to_vec());
                    visit(at, i, k, v, f)
                })
            }
            flags => Err(ReadError::BadType {
                at,
                flags,
                expected: "a branch (0x01) or leaf (0x02) page",
            }),
        }
    }

    /// bbolt's `Tx.Check` (1.3.7+/1.4 strictness, reference §1.11): fails on the first problem.
    pub fn check(&self) -> Result<CheckReport, ReadError> {
        let hwm = self.meta.pgid;
        let mut c = Checker {
            db: self,
            reach: Bits::new(hwm),
            free: Bits::new(hwm),
            report: CheckReport {
                pages: hwm,
                ..CheckReport::default()
            },
        };
        c.reach.set(0);
        c.reach.set(1);
        if let Some(f) = self.meta.freelist {
            let page = self.page(f, &|| "the meta".into())?;
            if page.flags != FLAG_FREELIST {
                return Err(ReadError::BadType {
                    at: Loc::Page(f),
                    flags: page.flags,
                    expected: "a freelist page (0x10)",
                });
            }
            for id in f..=f + u64::from(page.overflow) {
                c.reach.set(id);
            }
            for (index, id) in freelist_ids(&page)?.into_iter().enumerate() {
                if id < 2 || id >= hwm {
                    return Err(ReadError::FreelistOutOfBounds {
                        pgid: f,
                        index,
                        id,
                        hwm,
                    });
                }
                if c.free.get(id) {
                    return Err(ReadError::AlreadyFreed { pgid: id });
                }
                c.free.set(id);
                c.report.free += 1;
            }
        }
        c.tree(self.meta.root, None, None, 0)?;
        let mut reachable = 0;
        for id in 0..hwm {
            if c.reach.get(id) {
                reachable += 1;
                // Only a freelist page itself could be both (it is listed nowhere else).
                if c.free.get(id) {
                    return Err(ReadError::ReachableFreed { pgid: id });
                }
            } else if !c.free.get(id) {
                if self.meta.freelist.is_some() {
                    return Err(ReadError::UnreachableUnfreed { pgid: id });
                }
                c.report.unreachable += 1;
            }
        }
        c.report.reachable = reachable;
        Ok(c.report)
    }
}

/// Bytes of the file that are database: all of it but etcd's trailer.
fn db_len(len: u64) -> u64 {
    if len % 512 == TRAILER_LEN as u64 {
        len - TRAILER_LEN as u64
    } else {
        len
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and validates the meta page at byte `offset` (page `id`).
fn read_meta(backing: &Backing, offset: u64, id: u64) -> Result<Meta, String> {
    let mut b = [0u8; META_OFFSET + 64];
    backing.read_at(offset, &mut b).map_err(|e| e.to_string())?;
    let m = META_OFFSET;
    if u32_at(&b, m) != MAGIC {
        return Err(format!("bad magic {:#x}", u32_at(&b, m)));
    }
    if u32_at(&b, m + 4) != VERSION {
        return Err(format!("version {} (expected 2)", u32_at(&b, m + 4)));
    }
    let sum = fnv1a64(&b[m..m + META_CHECKED]);
    let stored = u64_at(&b, m + META_CHECKED);
    if sum != stored {
        return Err(format!("checksum {stored:#x}, computed {sum:#x}"));
    }
    let page_size = u32_at(&b, m + 8);
    if !page_size.is_power_of_two() || !(1024..=1 << 24).contains(&page_size) {
        return Err(format!("page size {page_size}"));
    }
    let root = u64_at(&b, m + 16);
    let freelist = u64_at(&b, m + 32);
    let pgid = u64_at(&b, m + 40);
    if pgid < 3 || root < 2 || root >= pgid {
        return Err(format!("root {root} outside 2..pgid ({pgid})"));
    }
    if freelist != NO_FREELIST && (freelist < 2 || freelist >= pgid) {
        return Err(format!("freelist {freelist} outside 2..pgid ({pgid})"));
    }
    Ok(Meta {
        page: id,
        page_size,
        root,
        freelist: (freelist != NO_FREELIST).then_some(freelist),
        pgid,
        txid: u64_at(&b, m + 48),
    })
}

/// Visits a leaf element: (location, index, key, value, element flags).
type ElemVisit<'a> = dyn for<'p> FnMut(&Loc, usize, &'p [u8], &'p [u8], u32) -> Result<ControlFlow<()>, ReadError>
    + 'a;
/// [`ElemVisit`] for the elements of one page that outlives the visit.
type PageElemVisit<'p, 'a> =
    dyn FnMut(&Loc, usize, &'p [u8], &'p [u8], u32) -> Result<ControlFlow<()>, ReadError> + 'a;

struct Walk {
    prev: Option<Vec<u8>>,
    visited: u64,
    root: u64,
}

fn check_after(at: &Loc, index: usize, prev: Option<&[u8]>, key: &[u8]) -> Result<(), ReadError> {
    match prev {
        Some(p) if key <= p => Err(ReadError::KeysOutOfOrder {
            at: at.clone(),
            index,
            key: show(key),
            previous: show(p),
        }),
        _ => Ok(()),
    }
}

/// The elements of a branch page: (key, child pgid), bounds-checked.
fn branch_elems<'p>(at: &Loc, page: &'p Page) -> Result<Vec<(&'p [u8], u64)>, ReadError> {
    let count = usize::from(page.count);
    if count == 0 {
        return Err(ReadError::EmptyBranch { at: at.clone() });
    }
    let d = &page.data;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = PAGE_HEADER + ELEM * i;
        let bad = |reason: String| ReadError::BadElement {
            at: at.clone(),
            index: i,
            reason,
        };
        if e + ELEM > d.len() {
            return Err(bad(format!("element array of {count} runs past the page")));
        }
        let pos = u32_at(d, e) as usize;
        let ksize = u32_at(d, e + 4) as usize;
        let key = e
            .checked_add(pos)
            .and_then(|s| d.get(s..s.checked_add(ksize)?))
            .ok_or_else(|| bad(format!("key at +{pos}, {ksize} bytes, runs past the page")))?;
        out.push((key, u64_at(d, e + 8)));
    }
    Ok(out)
}

/// Calls `visit(location, index, key, value, flags)` for each element of the leaf page in
/// `page` (a page read from the file, or an inline bucket's embedded page), bounds-checked.
fn for_each_leaf<'p>(
    at: &Loc,
    page: &'p [u8],
    visit: &mut PageElemVisit<'p, '_>,
) -> Result<ControlFlow<()>, ReadError> {
    if page.len() < PAGE_HEADER {
        return Err(ReadError::BadElement {
            at: at.clone(),
            index: 0,
            reason: format!("page of {} bytes has no header", page.len()),
        });
    }
    let flags = u16_at(page, 8);
    if flags != FLAG_LEAF {
        return Err(ReadError::BadType {
            at: at.clone(),
            flags,
            expected: "a leaf page (0x02)",
        });
    }
    let count = usize::from(u16_at(page, 10));
    for i in 0..count {
        let e = PAGE_HEADER + ELEM * i;
        let bad = |reason: String| ReadError::BadElement {
            at: at.clone(),
            index: i,
            reason,
        };
        if e + ELEM > page.len() {
            return Err(bad(format!("element array of {count} runs past the page")));
        }
        let eflags = u32_at(page, e);
        let pos = u32_at(page, e + 4) as usize;
        let ksize = u32_at(page, e + 8) as usize;
        let vsize = u32_at(page, e + 12) as usize;
        let kv = e
            .checked_add(pos)
            .and_then(|s| page.get(s..s.checked_add(ksize)?.checked_add(vsize)?))
            .ok_or_else(|| {
                bad(format!(
                    "key at +{pos}, {ksize} + {vsize} bytes, runs past the page"
                ))
            })?;
        let (key, value) = kv.split_at(ksize);
        if visit(at, i, key, value, eflags)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Decodes a bucket element's value (flag 0x01).
fn bucket_root(at: &Loc, key: &[u8], value: &[u8]) -> Result<BucketRoot, ReadError> {
    if value.len() < BUCKET_HEADER {
        return Err(ReadError::BadBucketHeader {
            at: at.clone(),
            key: show(key),
            reason: format!("value of {} bytes", value.len()),
        });
    }
    match u64_at(value, 0) {
        0 => Ok(BucketRoot::Inline(value[BUCKET_HEADER..].to_vec())),
        root => Ok(BucketRoot::Page(root)),
    }
}

fn freelist_ids(page: &Page) -> Result<Vec<u64>, ReadError> {
    let d = &page.data;
    let (n, start) = if page.count == 0xFFFF {
        (u64_at(d, PAGE_HEADER), PAGE_HEADER + 8)
    } else {
        (u64::from(page.count), PAGE_HEADER)
    };
    let fits = ((d.len() - start) / 8) as u64;
    if n > fits {
        return Err(ReadError::BadElement {
            at: Loc::Page(page.id),
            index: 0,
            reason: format!("freelist of {n} ids does not fit its {} bytes", d.len()),
        });
    }
    Ok((0..n as usize).map(|i| u64_at(d, start + 8 * i)).collect())
}

/// A bitmap of pgids below the high-water mark.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Self {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
}

struct Checker<'a> {
    db: &'a Db,
    reach: Bits,
    free: Bits,
    report: CheckReport,
}

impl Checker<'_> {
    /// Checks the tree at `pgid`: every key ≥ `lower` (the branch key pointing here) and
    /// < `upper` (the next branch key), pages reached once, sub-buckets recursively.
    fn tree(
        &mut self,
        pgid: u64,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        depth: usize,
    ) -> Result<(), ReadError> {
        let at = Loc::Page(pgid);
        if depth >= MAX_DEPTH {
            return Err(ReadError::TooDeep { at });
        }
        let page = self.db.page(pgid, &|| "the tree".into())?;
        for id in pgid..=pgid + u64::from(page.overflow) {
            if self.reach.get(id) {
                return Err(ReadError::MultipleReferences { pgid: id });
            }
            if self.free.get(id) {
                return Err(ReadError::ReachableFreed { pgid: id });
            }
            self.reach.set(id);
        }
        let bound_check = |key: &[u8]| -> Result<(), ReadError> {
            if let Some(l) = lower
                && key < l
            {
                return Err(ReadError::BeforeBranchKey {
                    pgid,
                    key: show(key),
                    branch_key: show(l),
                });
            }
            if let Some(u) = upper
                && key >= u
            {
                return Err(ReadError::NotBeforeNextBranchKey {
                    pgid,
                    key: show(key),
                    next: show(u),
                });
            }
            Ok(())
        };
        match page.flags {
            FLAG_BRANCH => {
                let elems = branch_elems(&at, &page)?;
                for i in 0..elems.len() {
                    let (key, child) = elems[i];
                    if i > 0 {
                        check_after(&at, i, Some(elems[i - 1].0), key)?;
                    }
                    bound_check(key)?;
                    let next = elems.get(i + 1).map(|e| e.0).or(upper);
                    self.tree(child, Some(key), next, depth + 1)?;
                }
            }
            FLAG_LEAF => {
                let mut prev: Option<&[u8]> = None;
                let mut subs = Vec::new();
                let page_data = &page.data;
                // The visitor never breaks; the walk's result carries only errors.
                let _: ControlFlow<()> = for_each_leaf(&at, page_data, &mut |at, i, k, v, f| {
                    check_after(at, i, prev, k)?;
                    prev = Some(k);
                    bound_check(k)?;
                    if f & ELEM_BUCKET != 0 {
                        subs.push((k.to_vec(), bucket_root(at, k, v)?));
                    } else {
                        self.report.keys += 1;
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
                for (name, root) in subs {
                    self.report.buckets += 1;
                    match root {
                        BucketRoot::Page(r) => self.tree(r, None, None, depth + 1)?,
                        BucketRoot::Inline(p) => self.inline(&name, &p)?,
                    }
                }
            }
            flags => {
                return Err(ReadError::BadType {
                    at,
                    flags,
                    expected: "a branch (0x01) or leaf (0x02) page",
                });
            }
        }
        Ok(())
    }

    /// An inline bucket: bbolt skips them; we check its keys ascend and it nests nothing.
    fn inline(&mut self, name: &[u8], page: &[u8]) -> Result<(), ReadError> {
        let at = Loc::Inline { bucket: show(name) };
        let mut prev: Option<&[u8]> = None;
        let mut keys = 0;
        let _: ControlFlow<()> = for_each_leaf(&at, page, &mut |at, i, k, _, f| {
            check_after(at, i, prev, k)?;
            prev = Some(k);
            if f & ELEM_BUCKET != 0 {
                return Err(ReadError::NestedBucket {
                    bucket: show(name),
                    key: show(k),
                });
            }
            keys += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        self.report.keys += keys;
        Ok(())
    }
}

/// etcd 3.4/3.5's `snapshot status` of `db` (reference §3.3): [`Db::check`] first, then the
/// CRC-32C over every bucket name and its keys and values, the main revision of the last key of
/// the `key` bucket, the number of key/value pairs, and `Tx.Size()`.
pub fn snapshot_status(db: &Db) -> Result<SnapshotStatus, ReadError> {
    db.check()?;
    let mut hash = 0u32;
    let mut total_key = 0u64;
    let mut revision = 0i64;
    for bucket in db.buckets()? {
        hash = crc32c::crc32c_append(hash, &bucket.name);
        let mut last: Option<Vec<u8>> = None;
        let is_key = bucket.name == b"key";
        db.scan_bucket(&bucket, &mut |k, v| {
            hash = crc32c::crc32c_append(hash, k);
            hash = crc32c::crc32c_append(hash, v);
            total_key += 1;
            if is_key {
                last = Some(k.to_vec());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(k) = last {
            let main: [u8; 8] = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ReadError::BadRevisionKey { key: show(&k) })?;
            revision = i64::from_be_bytes(main);
        }
    }
    Ok(SnapshotStatus {
        hash,
        revision,
        total_key,
        total_size: db.size(),
    })
}
