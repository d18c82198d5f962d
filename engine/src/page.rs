//! Byte layout of page-store pages (DESIGN.md §3.1–§3.2): meta pages, node pages and free-list pages.
//!
//! Owns encoding and *verified* decoding. Invariant: no byte of a page is interpreted before its crc,
//! its self page id, its kind and every entry offset have been checked; a failure is a
//! [`StoreError::Corrupt`] naming the file and byte offset. Only `btree` calls this module.

use std::io;
use std::path::{Path, PathBuf};

pub const PAGE_SIZE: usize = 4096;
pub const HEADER: usize = 32;
pub const KIND_BRANCH: u8 = 1;
pub const KIND_LEAF: u8 = 2;
pub const KIND_FREELIST: u8 = 3;

const META_MAGIC: &[u8; 8] = b"RETCDDB\0";
const META_VERSION: u32 = 1;
const META_CRC_AT: usize = 48;
/// Page ids stored in one free-list page.
pub const FREELIST_PER_PAGE: usize = (PAGE_SIZE - 40) / 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("page store corrupt: {file}: offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "page store {file} is in use by another process (another retcd, or a tool, on the same \
         data dir); refusing to open it twice"
    )]
    Locked { file: PathBuf },
    #[error("page store {file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The contents of a meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub txn: u64,
    pub root: u64,
    pub freelist: u64,
    pub high_water: u64,
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; PAGE_SIZE];
        b[0..8].copy_from_slice(META_MAGIC);
        b[8..12].copy_from_slice(&META_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.txn.to_le_bytes());
        b[24..32].copy_from_slice(&self.root.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.high_water.to_le_bytes());
        let crc = crc32c::crc32c(&b[..META_CRC_AT]);
        b[META_CRC_AT..META_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a meta page; `Err(reason)` when it is not a valid one.
    pub fn decode(b: &[u8]) -> Result<Meta, String> {
        if b.len() < PAGE_SIZE {
            return Err("short meta page".into());
        }
        if crc32c::crc32c(&b[..META_CRC_AT]) != u32_at(b, META_CRC_AT) {
            return Err("meta page checksum mismatch".into());
        }
        if &b[0..8] != META_MAGIC {
            return Err("bad meta magic".into());
        }
        if u32_at(b, 8) != META_VERSION || u32_at(b, 12) as usize != PAGE_SIZE {
            return Err(format!(
                "unsupported format version {} / page size {}",
                u32_at(b, 8),
                u32_at(b, 12)
            ));
        }
        let m = Meta {
            txn: u64_at(b, 16),
            root: u64_at(b, 24),
            freelist: u64_at(b, 32),
            high_water: u64_at(b, 40),
        };
        if m.txn == 0 || m.high_water < 2 || m.root >= m.high_water || m.freelist >= m.high_water {
            return Err(format!("inconsistent meta page {m:?}"));
        }
        Ok(m)
    }
}

/// A verified, borrowed node or free-list page.
#[derive(Clone, Copy)]
pub struct PageView<'a> {
    bytes: &'a [u8],
    kind: u8,
    count: usize,
}

impl<'a> PageView<'a> {
    /// Verifies the node at page `id` in `map` (the first `high_water` pages of the file are valid to
    /// touch) and returns a view of it.
    pub fn parse(map: &'a [u8], high_water: u64, id: u64, file: &Path) -> Result<Self, StoreError> {
        let off = id * PAGE_SIZE as u64;
        if id < 2 || id >= high_water || (off as usize) + PAGE_SIZE > map.len() {
            return Err(corrupt(file, off, format!("page id {id} out of bounds")));
        }
        let start = off as usize;
        let first = &map[start..start + PAGE_SIZE];
        let overflow = u32_at(first, 16) as u64;
        if id + 1 + overflow > high_water {
            return Err(corrupt(
                file,
                off,
                format!("overflow {overflow} past end of file"),
            ));
        }
        let len = (1 + overflow as usize) * PAGE_SIZE;
        let bytes = &map[start..start + len];
        if crc32c::crc32c(&bytes[4..]) != u32_at(bytes, 0) {
            return Err(corrupt(file, off, "page checksum mismatch"));
        }
        if u64_at(bytes, 8) != id {
            return Err(corrupt(
                file,
                off,
                format!("page claims id {}", u64_at(bytes, 8)),
            ));
        }
        let kind = bytes[4];
        let count = u16_at(bytes, 6) as usize;
        let used = u32_at(bytes, 20) as usize;
        if used > len || used < HEADER {
            return Err(corrupt(file, off, "used length out of bounds"));
        }
        let view = PageView {
            bytes: &bytes[..used],
            kind,
            count,
        };
        match kind {
            KIND_LEAF | KIND_BRANCH => view.check_entries(file, off)?,
            KIND_FREELIST => {
                if 40 + count * 8 > used {
                    return Err(corrupt(file, off, "free list count out of bounds"));
                }
            }
            k => return Err(corrupt(file, off, format!("unknown page kind {k}"))),
        }
        Ok(view)
    }

    /// A view of a node page that [`PageView::parse`] already verified and that has not changed
    /// since (the caller's guarantee: committed pages are immutable while reachable).
    pub fn trusted(map: &'a [u8], id: u64) -> Self {
        let start = (id * PAGE_SIZE as u64) as usize;
        let head = &map[start..start + HEADER];
        let used = u32_at(head, 20) as usize;
        debug_assert!(used >= HEADER && used <= (1 + u32_at(head, 16) as usize) * PAGE_SIZE);
        PageView {
            bytes: &map[start..start + used],
            kind: head[4],
            count: u16_at(head, 6) as usize,
        }
    }

    fn check_entries(&self, file: &Path, off: u64) -> Result<(), StoreError> {
        let used = self.bytes.len();
        let table_end = HEADER + self.count * 4;
        if table_end > used {
            return Err(corrupt(file, off, "offset table out of bounds"));
        }
        let fixed = if self.kind == KIND_LEAF { 8 } else { 12 };
        for i in 0..self.count {
            let at = u32_at(self.bytes, HEADER + i * 4) as usize;
            if at < table_end || at + fixed > used {
                return Err(corrupt(
                    file,
                    off,
                    format!("entry {i} offset out of bounds"),
                ));
            }
            let klen = u32_at(self.bytes, at) as usize;
            let vlen = if self.kind == KIND_LEAF {
                u32_at(self.bytes, at + 4) as usize
            } else {
                0
            };
            if (at + fixed)
                .checked_add(klen)
                .and_then(|x| x.checked_add(vlen))
                .is_none_or(|e| e > used)
            {
                return Err(corrupt(
                    file,
                    off,
                    format!("entry {i} length out of bounds"),
                ));
            }
        }
        Ok(())
    }

    /// Pages (1 + overflow) this node occupies.
    pub fn pages(&self) -> u64 {
        pages_for(self.bytes.len()) as u64
    }
    pub fn kind(&self) -> u8 {
        self.kind
    }
    pub fn count(&self) -> usize {
        self.count
    }
    fn entry(&self, i: usize) -> usize {
        debug_assert!(i < self.count);
        u32_at(self.bytes, HEADER + i * 4) as usize
    }
    /// Key of entry `i` (leaf or branch).
    pub fn key(&self, i: usize) -> &'a [u8] {
        let at = self.entry(i);
        let klen = u32_at(self.bytes, at) as usize;
        let fixed = if self.kind == KIND_LEAF { 8 } else { 12 };
        &self.bytes[at + fixed..at + fixed + klen]
    }
    /// Value of leaf entry `i`.
    pub fn value(&self, i: usize) -> &'a [u8] {
        debug_assert_eq!(self.kind, KIND_LEAF);
        let at = self.entry(i);
        let klen = u32_at(self.bytes, at) as usize;
        let vlen = u32_at(self.bytes, at + 4) as usize;
        &self.bytes[at + 8 + klen..at + 8 + klen + vlen]
    }
    /// Child page id of branch entry `i`.
    pub fn child(&self, i: usize) -> u64 {
        debug_assert_eq!(self.kind, KIND_BRANCH);
        u64_at(self.bytes, self.entry(i) + 4)
    }
    /// Free-list page: (next page, the page ids it lists).
    pub fn freelist(&self) -> (u64, impl Iterator<Item = u64> + 'a) {
        debug_assert_eq!(self.kind, KIND_FREELIST);
        let b = self.bytes;
        (
            u64_at(b, 32),
            (0..self.count).map(move |i| u64_at(b, 40 + i * 8)),
        )
    }
}

/// Size a leaf entry takes in a node, offset slot included.
pub fn leaf_entry_size(key: &[u8], value: &[u8]) -> usize {
    4 + 8 + key.len() + value.len()
}
/// Size a branch entry takes in a node, offset slot included.
pub fn branch_entry_size(key: &[u8]) -> usize {
    4 + 12 + key.len()
}
/// Pages (1 + overflow) a node of `used` bytes needs.
pub fn pages_for(used: usize) -> usize {
    used.div_ceil(PAGE_SIZE).max(1)
}

/// Encodes a node page into `out` (cleared first); `entries` yields (key, value) for leaves and
/// (key, child id as 8 LE bytes) for branches.
pub fn encode_node<'e>(
    out: &mut Vec<u8>,
    id: u64,
    kind: u8,
    entries: impl ExactSizeIterator<Item = (&'e [u8], &'e [u8])>,
) {
    let count = entries.len();
    assert!(
        count > 0 && count <= u16::MAX as usize,
        "node entry count {count}"
    );
    out.clear();
    out.resize(HEADER + count * 4, 0);
    for (i, (k, v)) in entries.enumerate() {
        let at = out.len() as u32;
        out[HEADER + i * 4..HEADER + i * 4 + 4].copy_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        if kind == KIND_LEAF {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        } else {
            debug_assert_eq!(v.len(), 8);
            out.extend_from_slice(v);
            out.extend_from_slice(k);
        }
    }
    finish(out, id, kind, count);
}

/// Encodes a free-list page listing `ids`, continuing in page `next`.
pub fn encode_freelist(out: &mut Vec<u8>, id: u64, next: u64, ids: &[u64]) {
    assert!(ids.len() <= FREELIST_PER_PAGE);
    out.clear();
    out.resize(40, 0);
    out[32..40].copy_from_slice(&next.to_le_bytes());
    for p in ids {
        out.extend_from_slice(&p.to_le_bytes());
    }
    finish(out, id, KIND_FREELIST, ids.len());
}

fn finish(out: &mut Vec<u8>, id: u64, kind: u8, count: usize) {
    let used = out.len();
    let pages = pages_for(used);
    out.resize(pages * PAGE_SIZE, 0);
    out[4] = kind;
    out[6..8].copy_from_slice(&(count as u16).to_le_bytes());
    out[8..16].copy_from_slice(&id.to_le_bytes());
    out[16..20].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
    out[20..24].copy_from_slice(&(used as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out[4..]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_roundtrip_and_corruption() {
        let mut buf = Vec::new();
        let big = vec![7u8; 9000];
        let entries: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"bb", &big)];
        encode_node(&mut buf, 5, KIND_LEAF, entries.into_iter());
        assert_eq!(buf.len(), 3 * PAGE_SIZE);
        let mut map = vec![0u8; 5 * PAGE_SIZE];
        map.extend_from_slice(&buf);
        let f = Path::new("db");
        let v = PageView::parse(&map, 8, 5, f).unwrap();
        assert_eq!(v.count(), 2);
        assert_eq!(v.key(1), b"bb");
        assert_eq!(v.value(1).len(), 9000);
        assert_eq!(v.value(0), b"1");
        // Wrong id, out-of-bounds, flipped byte.
        assert!(PageView::parse(&map, 8, 6, f).is_err());
        assert!(PageView::parse(&map, 6, 5, f).is_err());
        map[5 * PAGE_SIZE + 2 * PAGE_SIZE + 10] ^= 1;
        let err = PageView::parse(&map, 8, 5, f).err().unwrap().to_string();
        assert!(err.contains("offset 20480"), "{err}");
    }

    /// A branch with a long key spans pages (§3.2): read back whole, and a flipped byte in its
    /// last page is caught by the first read, naming the run's first page.
    #[test]
    fn multi_page_branch_is_verified_whole() {
        let long = vec![b'k'; 6000];
        let (a, b) = (7u64.to_le_bytes(), 9u64.to_le_bytes());
        let mut buf = Vec::new();
        let entries: Vec<(&[u8], &[u8])> = vec![(b"", &a), (&long, &b)];
        encode_node(&mut buf, 3, KIND_BRANCH, entries.into_iter());
        assert_eq!(buf.len(), 2 * PAGE_SIZE);
        let mut map = vec![0u8; 3 * PAGE_SIZE];
        map.extend_from_slice(&buf);
        let f = Path::new("db");
        let v = PageView::parse(&map, 5, 3, f).unwrap();
        assert_eq!((v.count(), v.pages(), v.child(0), v.child(1)), (2, 2, 7, 9));
        assert_eq!((v.key(0), v.key(1)), (&b""[..], &long[..]));
        map[4 * PAGE_SIZE + 100] ^= 1;
        let err = PageView::parse(&map, 5, 3, f).err().unwrap().to_string();
        assert!(
            err.contains("offset 12288") && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn meta_roundtrip() {
        let m = Meta {
            txn: 3,
            root: 4,
            freelist: 0,
            high_water: 9,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b).unwrap(), m);
        b[20] ^= 1;
        assert!(Meta::decode(&b).is_err());
    }
}
