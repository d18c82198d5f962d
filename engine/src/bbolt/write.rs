//! The streaming bbolt writer (DESIGN.md §7.1–7.2).

use std::io::{self, Write};
use std::ops::ControlFlow;

use sha2::{Digest, Sha256};

use super::{
    BUCKET_HEADER, ELEM, ELEM_BUCKET, Entry, FLAG_BRANCH, FLAG_LEAF, FLAG_META, MAGIC, MAX_DEPTH,
    MAX_KEY_SIZE, MAX_VALUE_SIZE, META_CHECKED, META_OFFSET, NO_FREELIST, PAGE_HEADER, PAGE_SIZE,
    VERSION, Visit, fnv1a64, put_header, put_u32, put_u64, show,
};

/// An error of a [`Source`], boxed so that sources keep their own error types.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What [`write_db`] reads: top-level buckets of key/value pairs, from one consistent read view,
/// so that two scans of a bucket visit the same entries in the same order.
pub trait Source {
    /// The names of the top-level buckets, in any order (the file holds them sorted).
    fn bucket_names(&self) -> Vec<Vec<u8>>;

    /// Visits the entries of bucket `bucket` (an index into [`Source::bucket_names`]) in
    /// ascending key order. Stops early, returning `Ok`, when `visit` returns `Break`.
    fn scan(&self, bucket: usize, visit: &mut Visit<'_>) -> Result<(), SourceError>;
}

/// A bucket of a [`MemSource`]: its name and its entries in ascending key order.
pub type MemBucket = (Vec<u8>, Vec<Entry>);

/// A [`Source`] held in memory: `(name, entries)` per bucket, entries in ascending key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemSource {
    pub buckets: Vec<MemBucket>,
}

impl Source for MemSource {
    fn bucket_names(&self) -> Vec<Vec<u8>> {
        self.buckets.iter().map(|(name, _)| name.clone()).collect()
    }

    fn scan(&self, bucket: usize, visit: &mut Visit<'_>) -> Result<(), SourceError> {
        let (_, entries) = self.buckets.get(bucket).ok_or("no such bucket")?;
        for (k, v) in entries {
            if visit(k, v).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Why [`write_db`] failed. Bytes already written to the sink are then not a valid file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the bbolt stream: {0}")]
    Io(#[from] io::Error),
    #[error("scanning bucket {bucket}: {source}")]
    Source { bucket: String, source: SourceError },
    #[error("bucket name {name}: {reason}")]
    BadBucketName { name: String, reason: &'static str },
    #[error("bucket {bucket}, key {key}: {reason}")]
    BadEntry {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("bucket {bucket} changed between the planning and the writing scan: {what}")]
    SourceChanged { bucket: String, what: String },
}

/// What [`write_db`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// Pages in the file (meta `pgid`); the file is `pages × 4096` bytes.
    pub pages: u64,
    /// Bytes written (`pages × 4096`).
    pub bytes: u64,
    /// Key/value pairs in all buckets.
    pub entries: u64,
}

/// Writes the buckets of `source` as a bbolt database into `out`, sequentially (DESIGN.md §7).
/// `source` is scanned twice; the first scan plans the layout, the second writes it.
pub fn write_db<W: Write + ?Sized>(
    out: &mut W,
    source: &dyn Source,
) -> Result<WriteSummary, WriteError> {
    write_db_planned(out, source, &mut |_| Ok(()))
}

/// [`write_db`] that first tells `planned` the size of the db in bytes (`hwm × 4096`), once the
/// planning pass knows it and before the first byte goes to `out`: etcd's snapshot stream
/// announces `remaining_bytes` from its first message on. An error from `planned` ends the
/// write before anything is written.
pub fn write_db_planned<W: Write + ?Sized>(
    out: &mut W,
    source: &dyn Source,
    planned: &mut dyn FnMut(u64) -> io::Result<()>,
) -> Result<WriteSummary, WriteError> {
    let names = source.bucket_names();
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    for w in order.windows(2) {
        if names[w[0]] == names[w[1]] {
            return Err(WriteError::BadBucketName {
                name: show(&names[w[0]]),
                reason: "listed twice",
            });
        }
    }
    for name in &names {
        if name.is_empty() || name.len() > MAX_KEY_SIZE {
            return Err(WriteError::BadBucketName {
                name: show(name),
                reason: "must be 1..=32768 bytes",
            });
        }
    }

    // Pass 1: plan. Pgids are not known yet, so the root bucket's elements carry a
    // placeholder root of the same size.
    let mut plan = Vec::with_capacity(order.len());
    let mut pages = 2u64;
    for &i in &order {
        let mut emit = Emit::plan();
        let mut b = BucketBuilder::new(&names[i]);
        scan_into(source, i, &names[i], &mut b, &mut emit)?;
        let p = b.finish_plan(&mut emit)?;
        pages += p.pages;
        plan.push(p);
    }
    let mut root_plan = Emit::plan();
    let mut root = TreeBuilder::new(ELEM_BUCKET);
    for (&i, p) in order.iter().zip(&plan) {
        let value = match &p.inline {
            Some(len) => vec![0u8; *len],
            None => vec![0u8; BUCKET_HEADER],
        };
        root.add(&names[i], &value, &mut root_plan)?;
    }
    root.finish(&mut root_plan)?;
    pages += root_plan.next - 2;
    let hwm = pages;
    let root_pgid = hwm - 1;

    planned(hwm * PAGE_SIZE as u64)?;

    // Pass 2: write.
    let mut counted = Counting {
        inner: out,
        bytes: 0,
    };
    write_meta(&mut counted, 0, root_pgid, hwm, 2)?;
    write_meta(&mut counted, 1, root_pgid, hwm, 1)?;
    let mut emit = Emit {
        out: Some(&mut counted),
        next: 2,
    };
    let mut root_values = Vec::with_capacity(order.len());
    let mut entries = 0u64;
    for (&i, p) in order.iter().zip(&plan) {
        let before = emit.next;
        let mut b = BucketBuilder::new(&names[i]);
        if p.inline.is_some() {
            b.collect_inline = Some(Vec::new());
        }
        scan_into(source, i, &names[i], &mut b, &mut emit)?;
        let changed = |what: String| WriteError::SourceChanged {
            bucket: show(&names[i]),
            what,
        };
        if b.entries != p.entries {
            return Err(changed(format!(
                "{} entries, planned {}",
                b.entries, p.entries
            )));
        }
        let value = match b.collect_inline.take() {
            Some(inline) => {
                let bytes = inline_bucket(&inline);
                if Some(bytes.len()) != p.inline {
                    return Err(changed("its inline size differs".into()));
                }
                bytes
            }
            None => {
                let root = b.tree.finish(&mut emit)?;
                let mut header = vec![0u8; BUCKET_HEADER];
                put_u64(&mut header, 0, root);
                header
            }
        };
        if emit.next - before != p.pages {
            return Err(changed(format!(
                "{} pages, planned {}",
                emit.next - before,
                p.pages
            )));
        }
        entries += b.entries;
        root_values.push(value);
    }
    let mut root = TreeBuilder::new(ELEM_BUCKET);
    for (&i, value) in order.iter().zip(&root_values) {
        root.add(&names[i], value, &mut emit)?;
    }
    let written_root = root.finish(&mut emit)?;
    // Everything above was planned from the same sizes, so only a source that changed (caught
    // per bucket above) could move the root or the high-water mark.
    assert_eq!(written_root, root_pgid, "root bucket's root page moved");
    assert_eq!(emit.next, hwm, "high-water mark moved");
    let bytes = counted.bytes;
    assert_eq!(bytes, hwm * PAGE_SIZE as u64, "stream length ≠ hwm pages");
    Ok(WriteSummary {
        pages: hwm,
        bytes,
        entries,
    })
}

/// Writes etcd's snapshot stream into `out`: the db of [`write_db`] followed by the 32-byte
/// sha256 of its bytes (reference §3.1; what `etcdctl snapshot save` stores). Returns the sink and
/// the digest.
pub fn write_snapshot<W: Write>(
    out: W,
    source: &dyn Source,
) -> Result<(WriteSummary, W, [u8; 32]), WriteError> {
    write_snapshot_planned(out, source, &mut |_| Ok(()))
}

/// [`write_snapshot`] with [`write_db_planned`]'s `planned` (the db's size, trailer excluded).
pub fn write_snapshot_planned<W: Write>(
    out: W,
    source: &dyn Source,
    planned: &mut dyn FnMut(u64) -> io::Result<()>,
) -> Result<(WriteSummary, W, [u8; 32]), WriteError> {
    let mut sink = Sha256Trailer::new(out);
    let summary = write_db_planned(&mut sink, source, planned)?;
    let (out, digest) = sink.finish()?;
    Ok((summary, out, digest))
}

/// A sink wrapper for etcd's snapshot stream: hashes every byte it passes on, and
/// [`Sha256Trailer::finish`] appends the 32-byte sha256 of them (reference §3.1).
pub struct Sha256Trailer<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Sha256Trailer<W> {
    pub fn new(inner: W) -> Self {
        Sha256Trailer {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Writes the digest of everything written so far and returns the sink.
    pub fn finish(mut self) -> io::Result<(W, [u8; 32])> {
        let digest: [u8; 32] = self.hasher.finalize().into();
        self.inner.write_all(&digest)?;
        self.inner.flush()?;
        Ok((self.inner, digest))
    }
}

impl<W: Write> Write for Sha256Trailer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Hash only what the sink took, so a short write is hashed once.
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts the bytes passed to the caller's sink.
struct Counting<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write + ?Sized> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_meta(out: &mut dyn Write, id: u64, root: u64, hwm: u64, txid: u64) -> io::Result<()> {
    let mut page = vec![0u8; PAGE_SIZE];
    put_header(&mut page, id, FLAG_META, 0, 0);
    let m = META_OFFSET;
    put_u32(&mut page, m, MAGIC);
    put_u32(&mut page, m + 4, VERSION);
    put_u32(&mut page, m + 8, PAGE_SIZE as u32);
    put_u32(&mut page, m + 12, 0);
    put_u64(&mut page, m + 16, root);
    put_u64(&mut page, m + 24, 0);
    put_u64(&mut page, m + 32, NO_FREELIST);
    put_u64(&mut page, m + 40, hwm);
    put_u64(&mut page, m + 48, txid);
    let sum = fnv1a64(&page[m..m + META_CHECKED]);
    put_u64(&mut page, m + META_CHECKED, sum);
    out.write_all(&page)
}

/// Where pages go: nowhere (planning) or the sink. Pgids are allocated in emission order.
struct Emit<'a> {
    out: Option<&'a mut dyn Write>,
    next: u64,
}

impl Emit<'_> {
    fn plan() -> Emit<'static> {
        Emit { out: None, next: 2 }
    }

    fn writing(&self) -> bool {
        self.out.is_some()
    }

    /// Emits `page` (whole pages; its header's id is filled in here) and returns its pgid.
    fn page(&mut self, page: &mut [u8]) -> io::Result<u64> {
        debug_assert_eq!(page.len() % PAGE_SIZE, 0);
        let id = self.next;
        self.next += (page.len() / PAGE_SIZE) as u64;
        if let Some(out) = self.out.as_mut() {
            page[..8].copy_from_slice(&id.to_le_bytes());
            out.write_all(page)?;
        }
        Ok(id)
    }

    /// Emits a leaf holding the one entry `key`/`value` (larger than a page), streaming the
    /// value from the caller's buffer.
    fn big_leaf(&mut self, flags: u32, key: &[u8], value: &[u8]) -> io::Result<u64> {
        let size = PAGE_HEADER + ELEM + key.len() + value.len();
        let pages = size.div_ceil(PAGE_SIZE);
        let id = self.next;
        self.next += pages as u64;
        if let Some(out) = self.out.as_mut() {
            let mut head = vec![0u8; PAGE_HEADER + ELEM];
            put_header(&mut head, id, FLAG_LEAF, 1, (pages - 1) as u32);
            put_u32(&mut head, PAGE_HEADER, flags);
            put_u32(&mut head, PAGE_HEADER + 4, ELEM as u32);
            put_u32(&mut head, PAGE_HEADER + 8, key.len() as u32);
            put_u32(&mut head, PAGE_HEADER + 12, value.len() as u32);
            out.write_all(&head)?;
            out.write_all(key)?;
            out.write_all(value)?;
            write_zeros(&mut **out, pages * PAGE_SIZE - size)?;
        }
        Ok(id)
    }
}

fn write_zeros(out: &mut dyn Write, mut n: usize) -> io::Result<()> {
    static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    while n > 0 {
        let k = n.min(ZEROS.len());
        out.write_all(&ZEROS[..k])?;
        n -= k;
    }
    Ok(())
}

/// Builds one B+tree bottom-up from entries in key order, emitting each page as soon as it is
/// complete (post-order). Holds one open leaf and one open branch page per level.
struct TreeBuilder {
    /// Leaf element flags of every entry (0, or [`ELEM_BUCKET`] in the root bucket).
    flags: u32,
    /// The open leaf: (key length, value length) per element, and the keys and values.
    leaf: Vec<(u32, u32)>,
    leaf_data: Vec<u8>,
    /// `16 + Σ(16 + klen + vlen)` of the open leaf.
    leaf_size: usize,
    /// Open branch pages, `levels[0]` being the leaves' parents.
    levels: Vec<Level>,
    /// Scratch buffer for building pages.
    scratch: Vec<u8>,
}

#[derive(Default)]
struct Level {
    /// (first key of the child, child pgid).
    elems: Vec<(Vec<u8>, u64)>,
    /// `16 + Σ(16 + klen)`.
    size: usize,
    /// Pages emitted at this level so far.
    emitted: u64,
}

impl TreeBuilder {
    fn new(flags: u32) -> Self {
        TreeBuilder {
            flags,
            leaf: Vec::new(),
            leaf_data: Vec::new(),
            leaf_size: PAGE_HEADER,
            levels: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Adds the next entry (keys ascending; checked by the caller).
    fn add(&mut self, key: &[u8], value: &[u8], emit: &mut Emit) -> io::Result<()> {
        let size = ELEM + key.len() + value.len();
        if PAGE_HEADER + size > PAGE_SIZE {
            self.close_leaf(emit)?;
            let id = emit.big_leaf(self.flags, key, value)?;
            return self.push(0, key, id, emit);
        }
        if !self.leaf.is_empty() && self.leaf_size + size > PAGE_SIZE {
            self.close_leaf(emit)?;
        }
        self.leaf.push((key.len() as u32, value.len() as u32));
        self.leaf_data.extend_from_slice(key);
        self.leaf_data.extend_from_slice(value);
        self.leaf_size += size;
        debug_assert!(self.leaf_size <= PAGE_SIZE && self.leaf.len() < 0xFFFF);
        Ok(())
    }

    fn close_leaf(&mut self, emit: &mut Emit) -> io::Result<()> {
        if self.leaf.is_empty() {
            return Ok(());
        }
        let first_len = self.leaf[0].0 as usize;
        let first = self.leaf_data[..first_len].to_vec();
        let id = if emit.writing() {
            let page = &mut self.scratch;
            page.clear();
            page.resize(PAGE_SIZE, 0);
            fill_leaf(page, self.flags, &self.leaf, &self.leaf_data);
            emit.page(page)?
        } else {
            emit.page(&mut [0u8; PAGE_SIZE])?
        };
        self.leaf.clear();
        self.leaf_data.clear();
        self.leaf_size = PAGE_HEADER;
        self.push(0, &first, id, emit)
    }

    /// Adds child `id` with first key `key` to the open branch page of `level`.
    fn push(&mut self, level: usize, key: &[u8], id: u64, emit: &mut Emit) -> io::Result<()> {
        // A page closes only with two elements or more, so each level has at most half the
        // pages of the one below: depth ≤ log2(pages) + 1.
        assert!(level < MAX_DEPTH, "tree deeper than {MAX_DEPTH} levels");
        if self.levels.len() == level {
            self.levels.push(Level::default());
        }
        let size = ELEM + key.len();
        let l = &self.levels[level];
        if l.elems.len() >= 2 && l.size + size > PAGE_SIZE {
            self.close_branch(level, emit)?;
        }
        let l = &mut self.levels[level];
        if l.elems.is_empty() {
            l.size = PAGE_HEADER;
        }
        l.elems.push((key.to_vec(), id));
        l.size += size;
        Ok(())
    }

    fn close_branch(&mut self, level: usize, emit: &mut Emit) -> io::Result<()> {
        let l = &mut self.levels[level];
        let elems = std::mem::take(&mut l.elems);
        debug_assert!(!elems.is_empty() && elems.len() < 0xFFFF);
        let pages = l.size.div_ceil(PAGE_SIZE);
        l.emitted += 1;
        let page = &mut self.scratch;
        page.clear();
        page.resize(pages * PAGE_SIZE, 0);
        if emit.writing() {
            put_header(page, 0, FLAG_BRANCH, elems.len() as u16, (pages - 1) as u32);
            let mut data = PAGE_HEADER + ELEM * elems.len();
            for (i, (key, child)) in elems.iter().enumerate() {
                let at = PAGE_HEADER + ELEM * i;
                put_u32(page, at, (data - at) as u32);
                put_u32(page, at + 4, key.len() as u32);
                put_u64(page, at + 8, *child);
                page[data..data + key.len()].copy_from_slice(key);
                data += key.len();
            }
        }
        let id = emit.page(page)?;
        let (first, _) = elems.into_iter().next().expect("a non-empty branch");
        self.push(level + 1, &first, id, emit)
    }

    /// Closes every open page and returns the root's pgid.
    fn finish(&mut self, emit: &mut Emit) -> io::Result<u64> {
        self.close_leaf(emit)?;
        if self.levels.is_empty() {
            // No entries at all: an empty leaf is the root (bbolt's fresh bucket).
            let mut page = vec![0u8; PAGE_SIZE];
            put_header(&mut page, 0, FLAG_LEAF, 0, 0);
            return emit.page(&mut page);
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            let l = &self.levels[level];
            if top && l.emitted == 0 && l.elems.len() == 1 {
                return Ok(l.elems[0].1);
            }
            if !l.elems.is_empty() {
                self.close_branch(level, emit)?;
            }
            level += 1;
            assert!(
                level < self.levels.len(),
                "a closed level always has a parent"
            );
        }
    }
}

/// Lays out a leaf page (header, elements, then keys and values) into `page`.
fn fill_leaf(page: &mut [u8], flags: u32, elems: &[(u32, u32)], data: &[u8]) {
    put_header(page, 0, FLAG_LEAF, elems.len() as u16, 0);
    let base = PAGE_HEADER + ELEM * elems.len();
    page[base..base + data.len()].copy_from_slice(data);
    let mut pos = base;
    for (i, &(k, v)) in elems.iter().enumerate() {
        let at = PAGE_HEADER + ELEM * i;
        put_u32(page, at, flags);
        put_u32(page, at + 4, (pos - at) as u32);
        put_u32(page, at + 8, k);
        put_u32(page, at + 12, v);
        pos += (k + v) as usize;
    }
}

/// The value of an inline bucket: header {root 0, sequence 0} and an embedded leaf page.
fn inline_bucket(entries: &[Entry]) -> Vec<u8> {
    let elems: Vec<(u32, u32)> = entries
        .iter()
        .map(|(k, v)| (k.len() as u32, v.len() as u32))
        .collect();
    let data: Vec<u8> = entries
        .iter()
        .flat_map(|(k, v)| [&k[..], &v[..]])
        .flatten()
        .copied()
        .collect();
    let mut value = vec![0u8; BUCKET_HEADER + PAGE_HEADER + ELEM * elems.len() + data.len()];
    fill_leaf(&mut value[BUCKET_HEADER..], 0, &elems, &data);
    value
}

/// What the planning pass found out about one bucket.
struct BucketPlan {
    entries: u64,
    /// `Some(value length)` when the bucket is written inline.
    inline: Option<usize>,
    /// Pages of its tree (0 when inline).
    pages: u64,
}

/// One user bucket being scanned: input checks, the inline size, and its tree.
struct BucketBuilder<'n> {
    name: &'n [u8],
    tree: TreeBuilder,
    entries: u64,
    last_key: Vec<u8>,
    /// `16 + Σ(16 + klen + vlen)`, saturating: the inline test.
    inline_size: usize,
    /// Pass 2 of an inline bucket: its entries (≤ 1 KiB in all, as planned).
    collect_inline: Option<Vec<Entry>>,
}

/// bbolt's inline rule: a bucket whose single leaf would fill at most a quarter page.
const INLINE_MAX: usize = PAGE_SIZE / 4;

impl<'n> BucketBuilder<'n> {
    fn new(name: &'n [u8]) -> Self {
        BucketBuilder {
            name,
            tree: TreeBuilder::new(0),
            entries: 0,
            last_key: Vec::new(),
            inline_size: PAGE_HEADER,
            collect_inline: None,
        }
    }

    fn add(&mut self, key: &[u8], value: &[u8], emit: &mut Emit) -> Result<(), WriteError> {
        let bad = |reason: String| WriteError::BadEntry {
            bucket: show(self.name),
            key: show(key),
            reason,
        };
        if key.is_empty() || key.len() > MAX_KEY_SIZE {
            return Err(bad(format!("key of {} bytes (1..=32768)", key.len())));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(bad(format!("value of {} bytes", value.len())));
        }
        if self.entries > 0 && key <= &self.last_key[..] {
            return Err(bad(format!(
                "not after the previous key {}",
                show(&self.last_key)
            )));
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        self.inline_size = self
            .inline_size
            .saturating_add(ELEM + key.len() + value.len());
        match self.collect_inline.as_mut() {
            Some(inline) => {
                if self.inline_size > INLINE_MAX {
                    return Err(WriteError::SourceChanged {
                        bucket: show(self.name),
                        what: "it outgrew its planned inline size".into(),
                    });
                }
                inline.push((key.to_vec(), value.to_vec()));
            }
            None => self.tree.add(key, value, emit)?,
        }
        Ok(())
    }

    /// Planning pass: the plan of this bucket (its tree's pages were counted by `emit`).
    fn finish_plan(mut self, emit: &mut Emit) -> Result<BucketPlan, WriteError> {
        if self.inline_size <= INLINE_MAX {
            return Ok(BucketPlan {
                entries: self.entries,
                inline: Some(self.inline_size + BUCKET_HEADER),
                pages: 0,
            });
        }
        self.tree.finish(emit)?;
        Ok(BucketPlan {
            entries: self.entries,
            inline: None,
            pages: emit.next - 2,
        })
    }
}

/// Scans bucket `index` of `source` into `b`; the first error (ours or the source's) wins.
fn scan_into(
    source: &dyn Source,
    index: usize,
    name: &[u8],
    b: &mut BucketBuilder,
    emit: &mut Emit,
) -> Result<(), WriteError> {
    let mut failed = None;
    let scanned = source.scan(index, &mut |k, v| match b.add(k, v, emit) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    scanned.map_err(|source| WriteError::Source {
        bucket: show(name),
        source,
    })
}
