//! The copy-on-write B+tree page store (DESIGN.md §3): one file, one writer, readers on every core.
//!
//! Owns the db file, its mmap, page allocation, the free list and the publication of committed roots.
//! Invariants:
//! - the writer ([`PageStore`] / [`WriteTxn`], only on the sequencer core) never writes a page that a
//!   published root or the durable meta can reach;
//! - a page freed by txn `t` is reused only when no durable tree can reach it (a durable commit ≥ `t`
//!   completed, or the page was allocated after the last durable commit began) and every live
//!   [`Snapshot`] is at version ≥ `t` (§3.4);
//! - readers ([`Reader`], cloned to every core) only see published roots and verify every page read;
//! - a published root may reach immutable in-memory nodes (soft commits in memory, §3.6, unless
//!   [`StoreOptions::memory_limit`] is 0): a durable commit gives them page runs and its job
//!   writes them before its meta names the tree (§3.6.1); a reader reads such a run only once
//!   that commit completed; [`PageStore::memory`] counts exactly those the latest root reaches;
//! - every page below the high-water mark is a meta page, in the tree, in the persisted free list,
//!   or free (now or pending): a failed commit gives back what it allocated ([`PageStore::audit`]);
//! - keys and values of any length fit: a node is a run of pages when its entries need it, and
//!   every branch node a split writes, but the last, holds at least two entries, so each level
//!   a commit builds above the root has fewer nodes than the one below and the building ends
//!   (§3.3; asserted).
//! - a tree built beside the published one (a Raft snapshot being installed) is reachable from
//!   no published root and no meta, and no durable commit begins while it exists, so a crash
//!   leaves its pages free or past the durable high-water mark (DESIGN.md §4.7).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use memmap2::{Mmap, MmapOptions};

use crate::disk;
use crate::page::{
    self, FREELIST_PER_PAGE, HEADER, KIND_BRANCH, KIND_FREELIST, KIND_LEAF, Meta, PAGE_SIZE,
    PageView, StoreError, corrupt,
};

/// File growth step: the file is extended in chunks to keep metadata updates rare.
const GROW_STEP: u64 = 16 << 20;
/// Smallest mmap length; the map is replaced by one twice as long when the file outgrows it.
const MIN_MAP: usize = 1 << 30;

/// The shared read-only map of the file, with a record of which pages were verified.
///
/// Committed pages never change while a reader can reach them (§3.4), so a page needs its checks
/// only once per process: the first read verifies it (§3.2) and sets its bit; the writer clears the
/// bits of every page it hands out again, before writing it, and sets them once it has written
/// the page from bytes it encoded itself.
pub struct Mapping {
    map: Mmap,
    verified: Box<[AtomicU64]>,
}

impl Mapping {
    fn new(map: Mmap) -> Mapping {
        let pages = map.len() / PAGE_SIZE;
        Mapping {
            map,
            verified: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The node at page `id`: verified on its first read, trusted afterwards.
    fn view(&self, high_water: u64, id: u64, file: &Path) -> Result<PageView<'_>, StoreError> {
        let known = id < high_water
            && self
                .bit(id)
                .is_some_and(|(w, bit)| w.load(Ordering::Acquire) & bit != 0);
        if known {
            return Ok(PageView::trusted(&self.map, id));
        }
        let v = PageView::parse(&self.map, high_water, id, file)?;
        self.mark(id, 1, true);
        Ok(v)
    }

    /// Page `id`'s word of the bitmap and its bit in it (none past the map's end).
    fn bit(&self, id: u64) -> Option<(&AtomicU64, u64)> {
        let w = self.verified.get((id / 64) as usize)?;
        Some((w, 1u64 << (id % 64)))
    }

    /// Marks pages `id .. id + n` as verified — this process has just written them, from bytes
    /// it encoded and stamped itself, so their first read need not check them again (§3.2) —
    /// or forgets that they were (they are about to be rewritten).
    fn mark(&self, id: u64, n: u64, verified: bool) {
        for (w, bit) in (id..id + n).filter_map(|p| self.bit(p)) {
            if verified {
                w.fetch_or(bit, Ordering::AcqRel);
            } else {
                w.fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }
}

/// Small fixed state published with every commit (the MVCC layer stores its current and compacted
/// revision and applied index here, so readers need no tree lookup for them).
pub type Tag = [u64; 4];

/// A committed tree version, as readers see it.
pub struct Published {
    txn: u64,
    tag: Tag,
    /// `None`: the tree is empty. Never a transaction's arena node.
    root: Option<Child>,
    high_water: u64,
    map: Arc<Mapping>,
}

struct Shared {
    path: PathBuf,
    current: ArcSwap<Published>,
}

/// Cheap handle that opens snapshots of the latest published tree; clone one per core.
#[derive(Clone)]
pub struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            p: self.shared.current.load_full(),
            shared: self.shared.clone(),
        }
    }
}

/// An immutable view of one committed version. Holding it keeps its pages from reuse, so hold it
/// only for the duration of a request.
pub struct Snapshot {
    p: Arc<Published>,
    shared: Arc<Shared>,
}

impl Snapshot {
    pub fn version(&self) -> u64 {
        self.p.txn
    }
    pub fn tag(&self) -> Tag {
        self.p.tag
    }
    pub fn cursor(&self) -> Cursor<'_, Self> {
        Cursor::new(self)
    }
}

/// A reference to a node.
#[derive(Clone)]
enum Child {
    /// A node on pages.
    Page(u64),
    /// A node in the writing transaction's arena.
    Mem(usize),
    /// An immutable node a soft commit kept in memory (DESIGN.md §3.6), shared by every version
    /// that reaches it; dropped with the last of them.
    Shared(Arc<Kept>),
}

/// An in-memory node of committed trees (§3.6) and the pages a durable commit gave it (§3.6.1).
///
/// Invariants: the node never changes; a run is given only to a node whose children are pages or
/// have runs (the plan walks bottom-up), so the subtree of a node with a run has runs throughout,
/// given by the same durable commit or earlier ones; only the writer sets or clears the run,
/// before the job that writes it starts or after it failed.
struct Kept {
    node: Node,
    /// What the node takes on pages (its run's length).
    own: Footprint,
    /// What it and the in-memory nodes below it take: what evicting it gives back.
    subtree: Footprint,
    /// First page of its run (0: none, the node is *dirty*).
    run: AtomicU64,
    /// The durable commit (txn) whose job writes the run: once that commit completed, the run
    /// may be read instead of the node.
    run_txn: AtomicU64,
}

impl Kept {
    /// `own` is `node.footprint()`, which the caller has at hand.
    fn new(node: Node, own: Footprint) -> Kept {
        debug_assert_eq!(own, node.footprint());
        let mut subtree = own;
        if let Node::Branch { children, .. } = &node {
            for c in children {
                if let Child::Shared(k) = c {
                    subtree += k.subtree;
                }
            }
        }
        Kept {
            node,
            own,
            subtree,
            run: AtomicU64::new(0),
            run_txn: AtomicU64::new(0),
        }
    }

    /// Its run, if a durable commit gave it one.
    fn run(&self) -> Option<u64> {
        Some(self.run.load(Ordering::Relaxed)).filter(|&r| r != 0)
    }

    /// Its run once the job that writes it completed (durable commit `durable_txn` or earlier).
    fn written_run(&self, durable_txn: u64) -> Option<u64> {
        self.run()
            .filter(|_| self.run_txn.load(Ordering::Relaxed) <= durable_txn)
    }
}

impl Child {
    fn link(&self) -> Link<'_> {
        match self {
            Child::Page(id) => Link::Page(*id),
            Child::Mem(i) => Link::Arena(*i),
            Child::Shared(n) => Link::Node(n),
        }
    }
}

/// A borrowed [`Child`]: where a cursor goes next.
#[derive(Clone, Copy)]
enum Link<'a> {
    Page(u64),
    Arena(usize),
    Node(&'a Kept),
}

#[derive(Clone)]
enum Node {
    /// `append`: the last insert went to the end, so a split fills the left node completely
    /// (sequential keys such as revisions), otherwise it splits evenly.
    Leaf {
        entries: Vec<(Bytes, Bytes)>,
        append: bool,
    },
    Branch {
        keys: Vec<Bytes>,
        children: Vec<Child>,
    },
}

/// A key or value of an in-memory node: shared, so that copying a node (a transaction's path
/// copy, §3.6) copies pointers, not bytes.
type Bytes = Arc<[u8]>;

impl Node {
    fn empty_leaf() -> Node {
        Node::Leaf {
            entries: Vec::new(),
            append: false,
        }
    }

    /// What it would take on pages: the bound on in-memory nodes counts its bytes, the size
    /// of the file reported (and checked against the quota) its pages.
    fn footprint(&self) -> Footprint {
        let bytes = match self {
            Node::Leaf { entries, .. } => entries
                .iter()
                .map(|(k, v)| page::leaf_entry_size(k, v))
                .sum(),
            Node::Branch { keys, .. } => keys.iter().map(|k| page::branch_entry_size(k)).sum(),
        };
        let pages = page::pages_for(HEADER + bytes) as u64;
        // A leaf over a page holds one large value (§3.3): counted apart as well (§3.6).
        let large = if pages > 1 && matches!(self, Node::Leaf { .. }) {
            bytes
        } else {
            0
        };
        Footprint {
            bytes,
            pages,
            large,
        }
    }
}

/// The size of in-memory nodes as pages would hold them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Footprint {
    bytes: usize,
    pages: u64,
    /// The part of `bytes` in leaves over a page (each holds one large value).
    large: usize,
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, o: Footprint) {
        self.bytes += o.bytes;
        self.pages += o.pages;
        self.large += o.large;
    }
}

impl std::ops::SubAssign for Footprint {
    fn sub_assign(&mut self, o: Footprint) {
        let (Some(bytes), Some(pages), Some(large)) = (
            self.bytes.checked_sub(o.bytes),
            self.pages.checked_sub(o.pages),
            self.large.checked_sub(o.large),
        ) else {
            panic!("in-memory nodes of {o:?} taken from {self:?}: the count lost track of them");
        };
        *self = Footprint {
            bytes,
            pages,
            large,
        };
    }
}

/// A node as a cursor sees it: a verified page or a node the writer holds in memory.
#[derive(Clone, Copy)]
enum NodeRef<'a> {
    Page(PageView<'a>),
    Mem(&'a Node),
}

impl<'a> NodeRef<'a> {
    fn is_leaf(&self) -> bool {
        match self {
            NodeRef::Page(p) => p.kind() == KIND_LEAF,
            NodeRef::Mem(n) => matches!(n, Node::Leaf { .. }),
        }
    }
    fn len(&self) -> usize {
        match self {
            NodeRef::Page(p) => p.count(),
            NodeRef::Mem(Node::Leaf { entries, .. }) => entries.len(),
            NodeRef::Mem(Node::Branch { keys, .. }) => keys.len(),
        }
    }
    fn key(&self, i: usize) -> &'a [u8] {
        match self {
            NodeRef::Page(p) => p.key(i),
            NodeRef::Mem(Node::Leaf { entries, .. }) => &entries[i].0,
            NodeRef::Mem(Node::Branch { keys, .. }) => &keys[i],
        }
    }
    fn value(&self, i: usize) -> &'a [u8] {
        match self {
            NodeRef::Page(p) => p.value(i),
            NodeRef::Mem(Node::Leaf { entries, .. }) => &entries[i].1,
            NodeRef::Mem(Node::Branch { .. }) => unreachable!("value of a branch"),
        }
    }
    fn child(&self, i: usize) -> Link<'a> {
        match self {
            NodeRef::Page(p) => Link::Page(p.child(i)),
            NodeRef::Mem(Node::Branch { children, .. }) => children[i].link(),
            NodeRef::Mem(Node::Leaf { .. }) => unreachable!("child of a leaf"),
        }
    }
    /// Index of the child that covers `key`: the last entry whose key is ≤ `key` (entry 0 covers
    /// everything below entry 1).
    fn child_index(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (1, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid) <= key {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        lo - 1
    }
    /// First leaf index whose key is ≥ `key`.
    fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid) < key {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        lo
    }
}

/// Where a cursor loads nodes from.
pub trait Source {
    #[doc(hidden)]
    fn root_child(&self) -> Option<ChildRef<'_>>;
    #[doc(hidden)]
    fn load<'a>(&'a self, c: ChildRef<'a>) -> Result<NodeRefPub<'a>, StoreError>;
}

// Opaque wrappers so the trait can be public while the node types stay private.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct ChildRef<'a>(Link<'a>);
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct NodeRefPub<'a>(NodeRef<'a>);

impl Source for Snapshot {
    fn root_child(&self) -> Option<ChildRef<'_>> {
        self.p.root.as_ref().map(|c| ChildRef(c.link()))
    }
    fn load<'a>(&'a self, c: ChildRef<'a>) -> Result<NodeRefPub<'a>, StoreError> {
        match c.0 {
            Link::Page(id) => Ok(NodeRefPub(NodeRef::Page(self.p.map.view(
                self.p.high_water,
                id,
                &self.shared.path,
            )?))),
            Link::Node(n) => Ok(NodeRefPub(NodeRef::Mem(&n.node))),
            Link::Arena(_) => unreachable!("published versions hold no transaction's nodes"),
        }
    }
}

/// Ordered iteration over a tree. Positioned by [`Cursor::seek`]; `key`/`value` borrow the source.
pub struct Cursor<'a, S: Source> {
    src: &'a S,
    stack: Vec<(NodeRef<'a>, usize)>,
}

impl<'a, S: Source> Cursor<'a, S> {
    fn new(src: &'a S) -> Self {
        Cursor {
            src,
            stack: Vec::with_capacity(8),
        }
    }

    fn load(&self, c: Link<'a>) -> Result<NodeRef<'a>, StoreError> {
        Ok(self.src.load(ChildRef(c))?.0)
    }

    /// Positions at the first entry with key ≥ `key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.stack.clear();
        let Some(ChildRef(mut c)) = self.src.root_child() else {
            return Ok(());
        };
        loop {
            let n = self.load(c)?;
            if n.is_leaf() {
                let i = n.lower_bound(key);
                self.stack.push((n, i));
                break;
            }
            let i = n.child_index(key);
            self.stack.push((n, i));
            c = n.child(i);
        }
        self.settle()
    }

    /// Moves past exhausted leaves to the next entry (or to the end).
    fn settle(&mut self) -> Result<(), StoreError> {
        loop {
            let Some(&(n, i)) = self.stack.last() else {
                return Ok(());
            };
            if i < n.len() {
                if n.is_leaf() {
                    return Ok(());
                }
                let child = self.load(n.child(i))?;
                self.stack.push((child, 0));
                continue;
            }
            self.stack.pop();
            if let Some(top) = self.stack.last_mut() {
                top.1 += 1;
            }
        }
    }

    pub fn valid(&self) -> bool {
        !self.stack.is_empty()
    }
    pub fn key(&self) -> &'a [u8] {
        let (n, i) = self.stack.last().expect("cursor is valid");
        n.key(*i)
    }
    pub fn value(&self) -> &'a [u8] {
        let (n, i) = self.stack.last().expect("cursor is valid");
        n.value(*i)
    }
    pub fn advance(&mut self) -> Result<(), StoreError> {
        if let Some(top) = self.stack.last_mut() {
            top.1 += 1;
        }
        self.settle()
    }
}

/// A cursor over any source.
pub fn cursor<S: Source>(src: &S) -> Cursor<'_, S> {
    Cursor::new(src)
}

/// Point lookup through any source.
pub fn get<'a, S: Source>(src: &'a S, key: &[u8]) -> Result<Option<&'a [u8]>, StoreError> {
    let mut c = Cursor::new(src);
    c.seek(key)?;
    Ok((c.valid() && c.key() == key).then(|| c.value()))
}

/// Options of a page store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    /// Soft commits keep the nodes they change in memory until those reachable from the root
    /// take this many bytes (DESIGN.md §3.6); 0: every commit writes its nodes as pages.
    pub memory_limit: usize,
}

/// The default [`StoreOptions::memory_limit`]: soft commits keep their nodes in memory, and
/// durable commits write them off the writer's core (DESIGN.md §3.6, §3.6.1).
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

impl StoreOptions {
    /// A store at `path` with the default bounds.
    pub fn new(path: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            path: path.into(),
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// The single writer of the page store.
pub struct PageStore {
    shared: Arc<Shared>,
    file: File,
    map: Arc<Mapping>,
    file_len: u64,
    high_water: u64,
    txn: u64,
    durable_txn: u64,
    /// The high-water mark of the durable meta of `durable_txn`: the file may be cut to it
    /// ([`PageStore::shrink_file`]).
    durable_high_water: u64,
    /// The meta slot (0 or 1) holding the durable meta of `durable_txn`: the next durable commit
    /// writes the other one (DESIGN.md §3.1).
    durable_slot: u64,
    /// The latest committed root (`None`: empty); page-backed or kept in memory, never an
    /// arena node.
    root: Option<Child>,
    /// What the in-memory nodes `root` reaches would take on pages.
    memory: Footprint,
    /// The part of `memory` no durable commit gave pages yet (dirty nodes, §3.6.1): the pages
    /// the file is still to grow by.
    dirty: Footprint,
    memory_limit: usize,
    freelist_pages: Vec<u64>,
    free: BTreeSet<u64>,
    /// Pages freed by a txn that a durable tree may still reach: reusable once a durable commit
    /// covers the freeing txn and readers moved past it.
    pending: VecDeque<(u64, Vec<u64>)>,
    /// Pages allocated since the last durable commit began: no durable tree (neither the last
    /// one nor the one being written) can reach them.
    fresh: HashSet<u64>,
    /// Fresh pages freed again: reusable as soon as readers moved past the freeing txn, without
    /// waiting for a durable commit (this keeps the file from growing between checkpoints).
    pending_fresh: VecDeque<(u64, Vec<u64>)>,
    /// Pages of a persisted free list that the durable commit `t` replaced: the previous durable
    /// meta names them until `t` completes, and no reader ever reaches a free-list page, so only
    /// durability holds them (held like tree pages, they would wait for the next soft commit
    /// when nothing is written, and pin the end of the file after a defragmentation).
    pending_list: VecDeque<(u64, Vec<u64>)>,
    /// A durable commit was begun and not yet finished.
    syncing: bool,
    /// The root (0: empty so far) of a tree being built beside the published one (a Raft
    /// snapshot's state, DESIGN.md §4.7), if any: published to no reader, named by no meta.
    beside: Option<u64>,
    /// Pages written by the largest commit since [`PageStore::take_largest_commit_pages`].
    largest_commit: u64,
    published: VecDeque<Arc<Published>>,
    buf: Vec<u8>,
    /// Unit tests' fault hook: page writes left before one fails (`None`: none fails).
    #[cfg(test)]
    writes_before_failure: std::cell::Cell<Option<u64>>,
}

/// What [`PageStore::audit`] found.
#[derive(Debug, Default)]
pub struct PageAudit {
    /// Pages of the nodes the latest committed root (or a tree being built beside it) reaches.
    pub reachable: u64,
    /// Pages of the persisted free list.
    pub freelist: u64,
    /// Pages free now or pending (§3.4).
    pub free: u64,
    /// Pages below the high-water mark that nothing accounts for: lost until the file is rebuilt.
    pub leaked: Vec<u64>,
    /// Pages accounted for more than once (in use twice, or free while in use).
    pub twice: Vec<u64>,
}

/// The I/O of a durable commit (§3.3 steps 2–4, §3.6.1), to run off the writer's core: write the
/// in-memory nodes given runs, fdatasync, write the meta page, fdatasync. The writer goes on with
/// soft commits meanwhile; they never touch a page the new meta can reach.
pub struct SyncJob {
    file: File,
    path: PathBuf,
    /// The in-memory nodes to write, each on the run the writer gave it, children first; let go
    /// once written (here: the last holder of nodes the writer has replaced since frees them
    /// off its core).
    nodes: Vec<Arc<Kept>>,
    /// The runs written (first page, pages), for [`PageStore::finish_sync`].
    written: Vec<(u64, u64)>,
    meta: Vec<u8>,
    meta_offset: u64,
    slot: u64,
    txn: u64,
    high_water: u64,
}

impl SyncJob {
    /// Blocking: performs the durable part of the commit.
    pub fn run(&mut self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let err = io_err(&self.path);
        let fsync = disk::fsync_enabled();
        self.write_nodes()?;
        // Kept for a retry after a failed sync below (the nodes are written by then).
        if !self.nodes.is_empty() {
            self.written = std::mem::take(&mut self.nodes)
                .iter()
                .map(|k| (k.run().expect("a planned node has a run"), k.own.pages))
                .collect();
        }
        if fsync {
            disk::sync(&self.path).map_err(&err)?;
            self.file.sync_data().map_err(&err)?;
        }
        disk::write(&self.path, self.meta_offset, &self.meta).map_err(&err)?;
        self.file
            .write_all_at(&self.meta, self.meta_offset)
            .map_err(&err)?;
        if fsync {
            disk::sync(&self.path).map_err(&err)?;
            self.file.sync_data().map_err(&err)?;
        }
        crate::metrics::BACKEND_COMMIT_SECONDS.observe_duration(started.elapsed());
        Ok(())
    }

    /// Encodes and writes the planned nodes, runs that follow each other in one write (up to
    /// [`SYNC_WRITE_BYTES`]).
    fn write_nodes(&self) -> Result<(), StoreError> {
        let err = io_err(&self.path);
        let mut order: Vec<&Kept> = self.nodes.iter().map(|k| &**k).collect();
        order.sort_unstable_by_key(|k| k.run.load(Ordering::Relaxed));
        let (mut out, mut one) = (Vec::new(), Vec::new());
        let mut at = 0;
        for k in order {
            let run = k.run().expect("a planned node has a run");
            assert!(
                run >= 2 && run + k.own.pages <= self.high_water,
                "planned run {run}+{} outside the durable pages 2..{}",
                k.own.pages,
                self.high_water
            );
            if !out.is_empty()
                && (run * PAGE_SIZE as u64 != at + out.len() as u64
                    || out.len() >= SYNC_WRITE_BYTES)
            {
                disk::write(&self.path, at, &out).map_err(&err)?;
                self.file.write_all_at(&out, at).map_err(&err)?;
                out.clear();
            }
            if out.is_empty() {
                at = run * PAGE_SIZE as u64;
            }
            encode(&mut one, run, &k.node);
            // The run was sized from the node's footprint (§3.6.1): the encoding must fill it.
            assert_eq!(
                one.len() as u64,
                k.own.pages * PAGE_SIZE as u64,
                "node planned on {} pages encodes to {} bytes",
                k.own.pages,
                one.len()
            );
            out.extend_from_slice(&one);
        }
        if !out.is_empty() {
            disk::write(&self.path, at, &out).map_err(&err)?;
            self.file.write_all_at(&out, at).map_err(&err)?;
        }
        Ok(())
    }
}

/// A page write at least this large (a leaf holding a large value, §3.6) has its writeback
/// started at once: the next durable commit's fdatasync then finds it mostly on the disk
/// instead of flushing every large value since the last one in one burst, which the WAL's
/// fdatasyncs would queue behind.
const EARLY_WRITEBACK_BYTES: usize = 64 << 10;

/// Starts the writeback of `len` bytes at `offset` of `file` without waiting for it (a hint:
/// durability still comes from the durable commit's fdatasync, so a failure is ignored).
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads its integer arguments only; the descriptor is open for the
    // duration of the call (borrowed from `file`).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Unwritten leaves over a page (large values) the soft commits keep in memory at most (§3.6):
/// a quarter of the bound; a durable commit begins at half of it.
fn large_limit(memory_limit: usize) -> usize {
    memory_limit / 4
}

/// Bytes a durable commit's job writes at most at once (pages of consecutive runs).
const SYNC_WRITE_BYTES: usize = 1 << 20;

/// Encodes node `n` as the page run starting at `id`; a branch's children are on pages or have
/// runs (§3.6.1).
fn encode(buf: &mut Vec<u8>, id: u64, n: &Node) {
    match n {
        Node::Leaf { entries, .. } => page::encode_node(
            buf,
            id,
            KIND_LEAF,
            entries.iter().map(|(k, v)| (&k[..], &v[..])),
        ),
        Node::Branch { keys, children } => {
            let ids: Vec<[u8; 8]> = children
                .iter()
                .map(|c| {
                    let id = match c {
                        Child::Page(id) => Some(*id),
                        Child::Shared(k) => k.run(),
                        Child::Mem(_) => None,
                    };
                    id.expect("a written branch's children are on pages or have runs")
                        .to_le_bytes()
                })
                .collect();
            page::encode_node(
                buf,
                id,
                KIND_BRANCH,
                keys.iter().zip(&ids).map(|(k, id)| (&k[..], &id[..])),
            )
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        file: path.to_path_buf(),
        source,
    }
}

impl PageStore {
    pub fn open(opts: &StoreOptions) -> Result<PageStore, StoreError> {
        let path = opts.path.clone();
        let err = io_err(&path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(&err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(&err)?;
        // One process per store (bbolt and etcd lock theirs too): a second writer would reuse
        // pages under the first one's readers and interleave its WAL. The lock (flock) lives as
        // long as this file description, so it ends with the store or the process.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { file: path.clone() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        if file.metadata().map_err(&err)?.len() == 0 {
            let meta = Meta {
                txn: 1,
                root: 0,
                freelist: 0,
                high_water: 2,
            };
            let zeros = vec![0u8; PAGE_SIZE];
            disk::write(&path, 0, &zeros).map_err(&err)?;
            file.write_all_at(&zeros, 0).map_err(&err)?;
            disk::write(&path, PAGE_SIZE as u64, &meta.encode()).map_err(&err)?;
            file.write_all_at(&meta.encode(), PAGE_SIZE as u64)
                .map_err(&err)?;
            disk::sync(&path).map_err(&err)?;
            file.sync_all().map_err(&err)?;
            if let Some(dir) = path.parent() {
                disk::sync_dir(dir).map_err(&err)?;
                File::open(dir).and_then(|d| d.sync_all()).map_err(&err)?;
            }
        }
        let file_len = file.metadata().map_err(&err)?.len();
        let mut metas = [[0u8; PAGE_SIZE], [0u8; PAGE_SIZE]];
        for (slot, m) in metas.iter_mut().enumerate() {
            if file_len >= ((slot + 1) * PAGE_SIZE) as u64 {
                file.read_exact_at(m, (slot * PAGE_SIZE) as u64)
                    .map_err(&err)?;
            }
        }
        let (meta, durable_slot) = match (Meta::decode(&metas[0]), Meta::decode(&metas[1])) {
            (Ok(a), Ok(b)) => {
                if a.txn >= b.txn {
                    (a, 0)
                } else {
                    (b, 1)
                }
            }
            (Ok(a), Err(_)) => (a, 0),
            (Err(_), Ok(b)) => (b, 1),
            (Err(a), Err(b)) => {
                return Err(corrupt(
                    &path,
                    0,
                    format!("no valid meta page (offset 0: {a}; offset 4096: {b})"),
                ));
            }
        };
        if file_len < meta.high_water * PAGE_SIZE as u64 {
            return Err(corrupt(
                &path,
                file_len,
                format!("file is shorter than its {} pages", meta.high_water),
            ));
        }
        let map = Arc::new(Mapping::new(map_file(&file, &path, file_len)?));
        let mut free = BTreeSet::new();
        let mut freelist_pages = Vec::new();
        let mut next = meta.freelist;
        while next != 0 {
            if freelist_pages.len() as u64 > meta.high_water {
                return Err(corrupt(
                    &path,
                    next * PAGE_SIZE as u64,
                    "free list chain loops",
                ));
            }
            let v = map.view(meta.high_water, next, &path)?;
            if v.kind() != KIND_FREELIST {
                return Err(corrupt(
                    &path,
                    next * PAGE_SIZE as u64,
                    "expected a free-list page",
                ));
            }
            freelist_pages.push(next);
            let (n, ids) = v.freelist();
            for id in ids {
                if id < 2 || id >= meta.high_water || !free.insert(id) {
                    return Err(corrupt(
                        &path,
                        next * PAGE_SIZE as u64,
                        format!("bad free page id {id}"),
                    ));
                }
            }
            next = n;
        }
        let root = (meta.root != 0).then_some(Child::Page(meta.root));
        let published = Arc::new(Published {
            txn: meta.txn,
            tag: [0; 4],
            root: root.clone(),
            high_water: meta.high_water,
            map: map.clone(),
        });
        let shared = Arc::new(Shared {
            path: path.clone(),
            current: ArcSwap::new(published.clone()),
        });
        Ok(PageStore {
            shared,
            file,
            map,
            file_len,
            high_water: meta.high_water,
            txn: meta.txn,
            durable_txn: meta.txn,
            durable_high_water: meta.high_water,
            durable_slot,
            root,
            memory: Footprint::default(),
            dirty: Footprint::default(),
            memory_limit: opts.memory_limit,
            freelist_pages,
            free,
            pending: VecDeque::new(),
            fresh: HashSet::new(),
            pending_fresh: VecDeque::new(),
            pending_list: VecDeque::new(),
            syncing: false,
            beside: None,
            largest_commit: 0,
            published: VecDeque::from([published]),
            buf: Vec::with_capacity(PAGE_SIZE),
            #[cfg(test)]
            writes_before_failure: std::cell::Cell::new(None),
        })
    }

    pub fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
        }
    }
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
    /// Number of pages the file uses (the size a backup or defrag would copy).
    pub fn high_water(&self) -> u64 {
        self.high_water
    }
    pub fn free_pages(&self) -> usize {
        self.free.len() + self.pending_pages()
    }

    /// Bytes of the in-memory nodes the latest root reaches (DESIGN.md §3.6).
    pub fn memory(&self) -> usize {
        self.memory.bytes
    }

    /// Bytes of the in-memory nodes the latest root reaches that no durable commit gave pages
    /// yet (DESIGN.md §3.6.1).
    pub fn unwritten(&self) -> usize {
        self.dirty.bytes
    }

    /// The pages the file will hold once the in-memory nodes are written (the file grows only
    /// at durable commits and spills, §3.6; they take free pages first): etcd's dbSize, as the
    /// quota sees it.
    pub fn size_pages(&self) -> u64 {
        self.high_water + self.dirty.pages.saturating_sub(self.free.len() as u64)
    }

    /// Pages in use (the tree, the free list, the metas), the in-memory nodes counted as the
    /// pages a durable commit will give them: etcd's dbSizeInUse.
    pub fn pages_in_use(&self) -> u64 {
        self.high_water - self.free_pages() as u64 + self.dirty.pages
    }

    /// Accounts for every page below the high-water mark, walking the latest committed tree (a
    /// check for tests and tools: it reads every page the tree reaches). Each page must be a meta
    /// page, a page of a node the root reaches, a page of the persisted free list, or free
    /// (reusable now or pending, §3.4), and only one of these.
    pub fn audit(&self) -> Result<PageAudit, StoreError> {
        let mut seen = vec![false; self.high_water as usize];
        let mut audit = PageAudit::default();
        let mut mark = |first: u64, n: u64, audit: &mut PageAudit| {
            for p in first..first + n {
                match seen.get_mut(p as usize) {
                    Some(s) if !*s => *s = true,
                    _ => audit.twice.push(p),
                }
            }
        };
        mark(0, 2, &mut audit);
        let beside = self.beside.filter(|&r| r != 0).map(Link::Page);
        let roots = self
            .root
            .as_ref()
            .map(Child::link)
            .into_iter()
            .chain(beside);
        self.visit_pages(roots, |id, pages| {
            audit.reachable += pages;
            mark(id, pages, &mut audit);
        })?;
        for &p in &self.freelist_pages {
            audit.freelist += 1;
            mark(p, 1, &mut audit);
        }
        for &p in self
            .free
            .iter()
            .chain(self.pending_all().flat_map(|(_, p)| p))
        {
            audit.free += 1;
            mark(p, 1, &mut audit);
        }
        audit.leaked = (0..self.high_water)
            .filter(|&p| !seen[p as usize])
            .collect();
        Ok(audit)
    }

    /// The tag of the latest commit.
    pub fn tag(&self) -> Tag {
        self.shared.current.load().tag
    }

    pub fn begin(&mut self) -> WriteTxn<'_> {
        let root = self.root.clone();
        WriteTxn::new(self, root, false)
    }

    /// Writes every in-memory node the latest root reaches as pages and publishes the page-only
    /// root under the latest tag (DESIGN.md §3.6); nothing when the root is on pages already.
    pub fn spill(&mut self) -> Result<(), StoreError> {
        if !matches!(self.root, Some(Child::Shared(_))) {
            return Ok(());
        }
        let tag = self.tag();
        self.begin().commit_spilled(tag)
    }

    /// A transaction on the tree built beside the published one (started empty by the first
    /// call), committed with [`WriteTxn::commit_beside`]; until [`PageStore::switch_to_beside`]
    /// or [`PageStore::abandon_beside`] no durable commit may begin (DESIGN.md §4.7).
    pub fn begin_beside(&mut self) -> WriteTxn<'_> {
        let root = *self.beside.get_or_insert(0);
        WriteTxn::new(self, (root != 0).then_some(Child::Page(root)), true)
    }

    /// Publishes the tree built beside as the tree, with `tag`, in one commit that frees every
    /// page of the replaced tree. Reads each page of the replaced tree once (to learn its page
    /// runs); a failure there changes nothing.
    pub fn switch_to_beside(&mut self, tag: Tag) -> Result<(), StoreError> {
        let root = self.beside.expect("no tree is being built beside");
        let old = self.tree_pages(self.root.as_ref().map(Child::link))?;
        self.beside = None;
        self.txn += 1;
        self.root = (root != 0).then_some(Child::Page(root));
        self.memory = Footprint::default();
        self.dirty = Footprint::default();
        if !old.is_empty() {
            self.release(self.txn, old);
        }
        self.publish(tag);
        Ok(())
    }

    /// Drops the tree built beside (an install that failed): its pages are free again at once.
    pub fn abandon_beside(&mut self) -> Result<(), StoreError> {
        // Ended first: if the walk fails, its pages stay unaccounted (lost space, never reused
        // while reachable) rather than blocking every later durable commit.
        let Some(root) = self.beside.take() else {
            return Ok(());
        };
        let pages = self.tree_pages((root != 0).then_some(Link::Page(root)))?;
        self.free_unpublished(pages);
        Ok(())
    }

    /// Pages written by the largest commit (soft or beside) since the last call; the bound an
    /// install keeps (DESIGN.md §4.7) is checked with it.
    pub fn take_largest_commit_pages(&mut self) -> u64 {
        std::mem::take(&mut self.largest_commit)
    }

    /// Every page of the nodes `root` reaches.
    fn tree_pages(&self, root: Option<Link<'_>>) -> Result<Vec<u64>, StoreError> {
        let mut pages = Vec::new();
        self.visit_pages(root, |id, n| pages.extend(id..id + n))?;
        Ok(pages)
    }

    /// Calls `f(first page, pages)` for each page-backed node the trees from `roots` reach; the
    /// in-memory nodes on the way have no pages, their page-backed children are visited.
    fn visit_pages<'a>(
        &'a self,
        roots: impl IntoIterator<Item = Link<'a>>,
        mut f: impl FnMut(u64, u64),
    ) -> Result<(), StoreError> {
        let mut stack: Vec<Link<'a>> = roots.into_iter().collect();
        while let Some(link) = stack.pop() {
            match link {
                Link::Page(id) => {
                    let v = self.map.view(self.high_water, id, &self.shared.path)?;
                    if v.kind() == KIND_BRANCH {
                        stack.extend((0..v.count()).map(|i| Link::Page(v.child(i))));
                    }
                    f(id, v.pages());
                }
                Link::Node(k) => {
                    // A node a durable commit gave a run: the durable tree reaches its pages.
                    if let Some(run) = k.run() {
                        f(run, k.own.pages);
                    }
                    if let Node::Branch { children, .. } = &k.node {
                        stack.extend(children.iter().map(Child::link));
                    }
                }
                Link::Arena(_) => unreachable!("committed trees hold no transaction's nodes"),
            }
        }
        Ok(())
    }

    /// Frees pages of the tree built beside: no reader (it was never published) and no durable
    /// tree (no durable commit began since it was started, so each page is fresh) reaches them.
    fn free_unpublished(&mut self, pages: Vec<u64>) {
        for p in pages {
            assert!(
                self.fresh.remove(&p),
                "page {p} of the tree built beside is not fresh: a durable commit began meanwhile"
            );
            self.free.insert(p);
        }
    }

    /// Publishes the current root with `tag` to readers.
    fn publish(&mut self, tag: Tag) {
        let p = Arc::new(Published {
            txn: self.txn,
            tag,
            root: self.root.clone(),
            high_water: self.high_water,
            map: self.map.clone(),
        });
        self.shared.current.store(p.clone());
        self.published.push_back(p);
        self.reclaim();
    }

    fn ensure_len(&mut self, pages: u64) -> Result<(), StoreError> {
        let need = pages * PAGE_SIZE as u64;
        if need > self.file_len {
            let new_len = need
                .max(self.file_len + GROW_STEP)
                .next_multiple_of(GROW_STEP);
            self.file
                .set_len(new_len)
                .map_err(io_err(&self.shared.path))?;
            self.file_len = new_len;
        }
        if self.file_len as usize > self.map.map.len() {
            self.map = Arc::new(Mapping::new(map_file(
                &self.file,
                &self.shared.path,
                self.file_len,
            )?));
        }
        Ok(())
    }

    fn alloc(&mut self, n: u64) -> Result<u64, StoreError> {
        let id = self.alloc_run(n)?;
        self.map.mark(id, n, false);
        self.fresh.extend(id..id + n);
        Ok(id)
    }

    fn alloc_run(&mut self, n: u64) -> Result<u64, StoreError> {
        if n == 1 {
            if let Some(id) = self.free.pop_first() {
                return Ok(id);
            }
        } else if let Some(id) = self.free_run(n) {
            for p in id..id + n {
                self.free.remove(&p);
            }
            return Ok(id);
        }
        let id = self.high_water;
        // Grown first: a failed growth takes no page.
        self.ensure_len(id + n)?;
        self.high_water = id + n;
        Ok(id)
    }

    /// Takes back a run that [`PageStore::alloc`] handed to a txn that then failed: nothing
    /// published (no reader, no durable tree) reaches it, so it is free at once. Runs are given
    /// back newest first, so those taken at the high-water mark lower it again.
    fn give_back(&mut self, id: u64, n: u64) {
        assert!(
            id >= 2 && id + n <= self.high_water,
            "run {id}+{n} not allocated"
        );
        for p in id..id + n {
            self.fresh.remove(&p);
        }
        if id + n == self.high_water {
            self.high_water = id;
        } else {
            for p in id..id + n {
                let was_taken = self.free.insert(p);
                debug_assert!(was_taken, "page {p} given back while free");
            }
        }
    }

    /// Records the pages txn `t` freed, split by which rule makes them reusable (§3.4).
    fn release(&mut self, t: u64, pages: Vec<u64>) {
        // A page freed twice would be handed out twice: two nodes on one page. One set lookup
        // per freed page (a commit frees the few pages of its paths).
        if let Some(p) = pages
            .iter()
            .find(|p| !(2..self.high_water).contains(*p) || self.free.contains(*p))
        {
            panic!(
                "txn {t} frees page {p}, which is not in use (high-water mark {}, free: {})",
                self.high_water,
                self.free.contains(p)
            );
        }
        let (fresh, old): (Vec<u64>, Vec<u64>) =
            pages.into_iter().partition(|p| self.fresh.remove(p));
        if !fresh.is_empty() {
            self.pending_fresh.push_back((t, fresh));
        }
        if !old.is_empty() {
            self.pending.push_back((t, old));
        }
    }

    fn free_run(&self, n: u64) -> Option<u64> {
        let (mut start, mut len) = (0u64, 0u64);
        for &p in &self.free {
            if len > 0 && p == start + len {
                len += 1;
            } else {
                start = p;
                len = 1;
            }
            if len == n {
                return Some(start);
            }
        }
        None
    }

    fn write_page(&self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let n = (bytes.len() / PAGE_SIZE) as u64;
        assert!(
            id >= 2 && id + n <= self.high_water,
            "page write {id}+{n} outside the store's pages 2..{}",
            self.high_water
        );
        // The pages a live reader starts from must never be rewritten under it (§3.4): a cheap
        // spot check of the reuse rule, one comparison per published version still held.
        if let Some((root, txn)) = self.published.iter().find_map(|p| match p.root {
            Some(Child::Page(r)) if (id..id + n).contains(&r) => Some((r, p.txn)),
            _ => None,
        }) {
            panic!(
                "page write {id}+{n} overwrites the root of published version {root} (txn {txn}), which a reader may still use"
            );
        }
        #[cfg(test)]
        match self.writes_before_failure.get() {
            Some(0) => {
                return Err(io_err(&self.shared.path)(std::io::Error::other(
                    "injected write failure",
                )));
            }
            Some(n) => self.writes_before_failure.set(Some(n - 1)),
            None => {}
        }
        let offset = id * PAGE_SIZE as u64;
        disk::write(&self.shared.path, offset, bytes).map_err(io_err(&self.shared.path))?;
        self.file
            .write_all_at(bytes, id * PAGE_SIZE as u64)
            .map_err(io_err(&self.shared.path))?;
        if bytes.len() >= EARLY_WRITEBACK_BYTES {
            start_writeback(&self.file, offset, bytes.len());
        }
        Ok(())
    }

    /// Makes pages whose freeing txn is durable and older than every live snapshot reusable.
    fn reclaim(&mut self) {
        self.published.retain(|p| Arc::strong_count(p) > 1);
        let oldest_reader = self
            .published
            .iter()
            .map(|p| p.txn)
            .min()
            .unwrap_or(self.txn);
        while let Some((t, _)) = self.pending.front() {
            if *t > self.durable_txn || *t > oldest_reader {
                break;
            }
            let (_, pages) = self.pending.pop_front().expect("front exists");
            self.free.extend(pages);
        }
        while let Some((t, _)) = self.pending_fresh.front() {
            if *t > oldest_reader {
                break;
            }
            let (_, pages) = self.pending_fresh.pop_front().expect("front exists");
            self.free.extend(pages);
        }
        while let Some((t, _)) = self.pending_list.front() {
            if *t > self.durable_txn {
                break;
            }
            let (_, pages) = self.pending_list.pop_front().expect("front exists");
            self.free.extend(pages);
        }
    }

    /// Durable commit (§3.3) in one call: [`PageStore::begin_sync`], [`SyncJob::run`],
    /// [`PageStore::finish_sync`].
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let mut job = self.begin_sync()?;
        job.run()?;
        self.finish_sync(job);
        Ok(())
    }

    /// Starts a durable commit of the latest soft commit: gives the dirty in-memory nodes runs
    /// (§3.6.1), writes the free list (step 1) and returns the rest — writing those nodes, the
    /// fdatasyncs and the meta — as a job that may run on another thread. One at a time.
    pub fn begin_sync(&mut self) -> Result<SyncJob, StoreError> {
        assert!(!self.syncing, "one durable commit at a time");
        // Its free list would not hold the pages of the tree being built beside, and its meta
        // does not reach them: after a crash they would be lost for good (DESIGN.md §4.7).
        assert!(
            self.beside.is_none(),
            "no durable commit while a tree is being built beside"
        );
        let t = self.txn + 1;
        let nodes = self.plan(t)?;
        match self.begin_sync_planned(t, &nodes) {
            Ok((file, meta)) => Ok(SyncJob {
                file,
                path: self.shared.path.clone(),
                nodes,
                written: Vec::new(),
                meta: meta.encode(),
                meta_offset: (1 - self.durable_slot) * PAGE_SIZE as u64,
                slot: 1 - self.durable_slot,
                txn: t,
                high_water: meta.high_water,
            }),
            Err(e) => {
                self.unplan(&nodes);
                Err(e)
            }
        }
    }

    /// Undoes [`PageStore::plan`] for `nodes` (nothing names their runs yet): the runs given
    /// back, newest first, the nodes dirty again.
    fn unplan(&mut self, nodes: &[Arc<Kept>]) {
        for k in nodes.iter().rev() {
            let run = k.run.swap(0, Ordering::Relaxed);
            self.give_back(run, k.own.pages);
            self.dirty += k.own;
        }
    }

    /// Gives each dirty in-memory node the root reaches a run for durable commit `t`, children
    /// before parents (§3.6.1): the nodes the job writes, in that order.
    fn plan(&mut self, t: u64) -> Result<Vec<Arc<Kept>>, StoreError> {
        let mut planned: Vec<Arc<Kept>> = Vec::new();
        let mut stack: Vec<(Arc<Kept>, bool)> = match &self.root {
            Some(Child::Shared(k)) if k.run().is_none() => vec![(k.clone(), false)],
            _ => Vec::new(),
        };
        let mut result = Ok(());
        while let Some((k, expanded)) = stack.pop() {
            if !expanded {
                stack.push((k.clone(), true));
                if let Node::Branch { children, .. } = &k.node {
                    stack.extend(children.iter().filter_map(|c| match c {
                        Child::Shared(c) if c.run().is_none() => Some((c.clone(), false)),
                        _ => None,
                    }));
                }
                continue;
            }
            match self.alloc(k.own.pages) {
                Ok(run) => {
                    k.run_txn.store(t, Ordering::Relaxed);
                    k.run.store(run, Ordering::Relaxed);
                    self.dirty -= k.own;
                    planned.push(k);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            self.unplan(&planned);
            return Err(e);
        }
        assert_eq!(
            self.dirty,
            Footprint::default(),
            "the count of unwritten in-memory nodes lost track of them: every one is planned now"
        );
        Ok(planned)
    }

    /// [`PageStore::begin_sync`] once the in-memory nodes have runs: the free list (step 1) and
    /// the meta to write. On an error nothing changed but the planned runs, which the caller
    /// gives back.
    fn begin_sync_planned(
        &mut self,
        t: u64,
        nodes: &[Arc<Kept>],
    ) -> Result<(File, Meta), StoreError> {
        let root = match &self.root {
            None => 0,
            Some(Child::Page(id)) => *id,
            Some(Child::Shared(k)) => k.run().expect("the root was planned"),
            Some(Child::Mem(_)) => unreachable!("committed roots are no arena nodes"),
        };
        debug_assert!(nodes.last().is_none_or(|k| k.run() == Some(root)));
        // Free pages at the end of the file are no longer part of it: the new meta's high-water
        // mark is below them (a file cut to it loses nothing, §3.4).
        while self.free.last() == Some(&(self.high_water - 1)) {
            self.free.pop_last();
            self.high_water -= 1;
        }
        // The free-list pages are taken from the lowest free pages, which the list then does
        // not name, so that they never pin the end of the file; from the high-water mark when
        // too few are free. Either way no page of the list is in it.
        let listed = self.free.len() + self.pending_pages() + self.freelist_pages.len();
        let n = listed.div_ceil(FREELIST_PER_PAGE) as u64;
        let low: Vec<u64> = if self.free.len() as u64 >= n {
            (0..n).filter_map(|_| self.free.pop_first()).collect()
        } else {
            Vec::new()
        };
        let mut ids: Vec<u64> = self.free.iter().copied().collect();
        for (_, p) in self.pending_all() {
            ids.extend_from_slice(p);
        }
        ids.extend_from_slice(&self.freelist_pages);
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
            panic!(
                "page {} is free twice (in the free set, a pending list or the free-list pages)",
                w[0]
            );
        }
        debug_assert!(ids.len().div_ceil(FREELIST_PER_PAGE) as u64 <= n);
        let first = self.high_water;
        let pages: Vec<u64> = if low.is_empty() {
            // Grown first, and lowered again if a write fails: a failed durable commit takes
            // no page and changes nothing, so it may be retried.
            self.ensure_len(first + n)?;
            self.high_water = first + n;
            (first..first + n).collect()
        } else {
            for &p in &low {
                self.map.mark(p, 1, false);
            }
            low.clone()
        };
        let written = ids
            .chunks(FREELIST_PER_PAGE)
            .chain(std::iter::repeat_n(
                &[][..],
                pages
                    .len()
                    .saturating_sub(ids.len().div_ceil(FREELIST_PER_PAGE)),
            ))
            .zip(&pages)
            .enumerate()
            .try_for_each(|(i, (chunk, &id))| {
                let next = pages.get(i + 1).copied().unwrap_or(0);
                let mut buf = std::mem::take(&mut self.buf);
                page::encode_freelist(&mut buf, id, next, chunk);
                let w = self.write_page(id, &buf);
                self.buf = buf;
                w
            })
            .and_then(|()| self.file.try_clone().map_err(io_err(&self.shared.path)));
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                if low.is_empty() {
                    self.high_water = first;
                } else {
                    self.free.extend(low);
                }
                return Err(e);
            }
        };
        let meta = Meta {
            txn: t,
            root,
            freelist: pages.first().copied().unwrap_or(0),
            high_water: self.high_water,
        };
        let old = std::mem::replace(&mut self.freelist_pages, pages);
        self.txn = t;
        // Everything allocated so far may be reachable from the tree this commit makes durable.
        self.fresh.clear();
        if !old.is_empty() {
            self.pending_list.push_back((t, old));
        }
        self.syncing = true;
        Ok((file, meta))
    }

    /// Completes a durable commit whose [`SyncJob::run`] succeeded. (One whose job failed
    /// leaves the store syncing: no durable commit begins again, and the caller stops, as it
    /// does on any failed write.)
    pub fn finish_sync(&mut self, job: SyncJob) {
        assert!(self.syncing && job.txn > self.durable_txn);
        // Written by this process from bytes it encoded: no crc check on their first read.
        for &(run, pages) in &job.written {
            self.map.mark(run, pages, true);
        }
        self.syncing = false;
        self.durable_txn = job.txn;
        self.durable_slot = job.slot;
        self.durable_high_water = job.high_water;
        self.reclaim();
        self.evict_written();
    }

    /// Whether enough in-memory nodes wait for pages that a durable commit should begin: half
    /// the bound (§3.6.1), so that the job writes them before the bound makes a commit spill
    /// them on the writer's core.
    pub fn wants_sync(&self) -> bool {
        self.memory_limit > 0
            && !self.syncing
            && (self.dirty.bytes >= self.memory_limit / 2
                || (self.dirty.large > 0 && self.dirty.large >= large_limit(self.memory_limit) / 2))
    }

    /// Eviction (§3.6.1): replaces every in-memory node whose run a completed durable commit
    /// wrote by that run, and publishes the result under the latest tag. It walks only the nodes
    /// no durable commit gave a run (those changed since the last one began), rebuilding each
    /// branch that had such a child: the same content, new in-memory nodes.
    fn evict_written(&mut self) {
        let Some(Child::Shared(root)) = &self.root else {
            return;
        };
        let mut evicted = Footprint::default();
        let Some(root) = evict(root, self.durable_txn, &mut evicted) else {
            return;
        };
        self.root = Some(root);
        self.memory -= evicted;
        self.txn += 1;
        let tag = self.tag();
        self.publish(tag);
    }

    /// Cuts the file to the pages in use: the larger of the high-water mark and the durable
    /// meta's (a file shorter than the meta recovery opens would be refused; the other meta slot
    /// is never opened once this one is durable, §3.1). Returns the file's new length. Called
    /// by an online defragmentation after the durable commit that lowered the mark.
    pub fn shrink_file(&mut self) -> Result<u64, StoreError> {
        // A durable commit in flight may name a higher mark than the last finished one.
        assert!(!self.syncing, "the file is cut between durable commits");
        let len = self.high_water.max(self.durable_high_water) * PAGE_SIZE as u64;
        if len < self.file_len {
            self.file.set_len(len).map_err(io_err(&self.shared.path))?;
            self.file_len = len;
        }
        Ok(self.file_len)
    }

    /// Pages below `limit` that can be handed out now.
    pub fn reusable_below(&self, limit: u64) -> usize {
        self.free.range(..limit).count()
    }

    /// Pages freed but not reusable yet (waiting for a durable commit or for readers, §3.4).
    pub fn pending_pages(&self) -> usize {
        self.pending_all().map(|(_, p)| p.len()).sum()
    }

    /// Every queue of pages freed but not reusable yet, with their freeing txns.
    fn pending_all(&self) -> impl Iterator<Item = &(u64, Vec<u64>)> {
        self.pending
            .iter()
            .chain(&self.pending_fresh)
            .chain(&self.pending_list)
    }

    /// Pages the persisted free list takes.
    pub fn freelist_len(&self) -> usize {
        self.freelist_pages.len()
    }
}

fn map_file(file: &File, path: &Path, file_len: u64) -> Result<Mmap, StoreError> {
    let len = (file_len as usize).saturating_mul(2).max(MIN_MAP);
    // SAFETY: the mapping is read-only. Bytes a reader can reach (pages below a published high-water
    // mark, which never exceeds the file length, and the file is never shrunk) are never written
    // while reachable: the writer only writes freshly allocated pages (§3.4). Bytes past the end of
    // the file are never touched, so the over-long mapping never faults.
    unsafe { MmapOptions::new().len(len).map(file) }.map_err(io_err(path))
}

/// A write transaction: the only way to change the tree. Dropping it without [`WriteTxn::commit`]
/// discards its changes (the pages it read stay as they were); a commit that fails publishes
/// nothing and gives back every page it allocated.
pub struct WriteTxn<'s> {
    store: &'s mut PageStore,
    root: Option<Child>,
    arena: Vec<Node>,
    freed: Vec<u64>,
    /// Runs (first page, pages) allocated by a commit that has not published them yet: if the
    /// txn ends otherwise (its commit failed, or panicked), dropping it gives them back.
    allocated: Vec<(u64, u64)>,
    /// A transaction on the tree built beside the published one ([`PageStore::begin_beside`]).
    beside: bool,
    /// The in-memory nodes of the committed tree this transaction copied: the commit no longer
    /// reaches them.
    replaced: Footprint,
    /// The part of `replaced` that had no run (dirty, §3.6.1).
    replaced_dirty: Footprint,
    /// The commit writes every node as pages ([`WriteTxn::relocate`] moves nodes to pages).
    spill: bool,
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        while let Some((id, n)) = self.allocated.pop() {
            self.store.give_back(id, n);
        }
    }
}

impl Source for WriteTxn<'_> {
    fn root_child(&self) -> Option<ChildRef<'_>> {
        self.root.as_ref().map(|c| ChildRef(c.link()))
    }
    fn load<'a>(&'a self, c: ChildRef<'a>) -> Result<NodeRefPub<'a>, StoreError> {
        Ok(NodeRefPub(match c.0 {
            Link::Arena(i) => NodeRef::Mem(&self.arena[i]),
            Link::Node(n) => NodeRef::Mem(&n.node),
            Link::Page(id) => NodeRef::Page(self.store.map.view(
                self.store.high_water,
                id,
                &self.store.shared.path,
            )?),
        }))
    }
}

impl<'s> WriteTxn<'s> {
    fn new(store: &'s mut PageStore, root: Option<Child>, beside: bool) -> WriteTxn<'s> {
        WriteTxn {
            store,
            root,
            arena: Vec::new(),
            freed: Vec::new(),
            allocated: Vec::new(),
            beside,
            replaced: Footprint::default(),
            replaced_dirty: Footprint::default(),
            spill: false,
        }
    }

    pub fn cursor(&self) -> Cursor<'_, Self> {
        Cursor::new(self)
    }

    /// Copies committed node `c` into the arena (freeing its pages by this txn, when it has
    /// some).
    fn copy_to_mem(&mut self, c: Child) -> Result<usize, StoreError> {
        let id = match c {
            Child::Mem(i) => return Ok(i),
            Child::Shared(n) => {
                self.replace_kept(&n);
                let mut copy = n.node.clone();
                // As for a page: the next insert says again whether it went to the end.
                if let Node::Leaf { append, .. } = &mut copy {
                    *append = false;
                }
                self.arena.push(copy);
                return Ok(self.arena.len() - 1);
            }
            Child::Page(id) => id,
        };
        let map = self.store.map.clone();
        let v = map.view(self.store.high_water, id, &self.store.shared.path)?;
        let node = match v.kind() {
            KIND_LEAF => Node::Leaf {
                entries: (0..v.count())
                    .map(|i| (Bytes::from(v.key(i)), Bytes::from(v.value(i))))
                    .collect(),
                append: false,
            },
            KIND_BRANCH => Node::Branch {
                keys: (0..v.count()).map(|i| Bytes::from(v.key(i))).collect(),
                children: (0..v.count()).map(|i| Child::Page(v.child(i))).collect(),
            },
            k => {
                return Err(corrupt(
                    &self.store.shared.path,
                    id * PAGE_SIZE as u64,
                    format!("unexpected page kind {k} in tree"),
                ));
            }
        };
        self.freed.extend(id..id + v.pages());
        self.arena.push(node);
        Ok(self.arena.len() - 1)
    }

    /// The key of committed node `c` when it is a leaf over a page holding one entry (a large
    /// value, §3.3); `None` for anything else, and for nodes of this transaction's own.
    fn large_leaf_key(&self, c: &Child) -> Result<Option<Bytes>, StoreError> {
        Ok(match c {
            Child::Mem(_) => None,
            Child::Shared(n) => match &n.node {
                Node::Leaf { entries, .. } if entries.len() == 1 && n.own.pages > 1 => {
                    Some(entries[0].0.clone())
                }
                _ => None,
            },
            Child::Page(id) => {
                let v = self
                    .store
                    .map
                    .view(self.store.high_water, *id, &self.store.shared.path)?;
                (v.kind() == KIND_LEAF && v.count() == 1 && v.pages() > 1)
                    .then(|| Bytes::from(v.key(0)))
            }
        })
    }

    /// Accounts for committed in-memory node `k` leaving the tree this commit builds: its bytes,
    /// and its run, which the durable tree may reach, is freed by this txn as a page-backed
    /// node's pages are (§3.6.1).
    fn replace_kept(&mut self, k: &Kept) {
        self.replaced += k.own;
        match k.run() {
            Some(run) => self.freed.extend(run..run + k.own.pages),
            None => self.replaced_dirty += k.own,
        }
    }

    /// Index in the arena of the (in-memory) leaf that covers `key`, copying the path on the way.
    fn leaf_for(&mut self, key: &[u8]) -> Result<usize, StoreError> {
        self.leaf_at(key, false)
    }

    /// [`Self::leaf_for`] for a put of `key`: a committed leaf that holds one large value under
    /// another key is left as it is and a new leaf is put beside it (§3.3), so that the
    /// value is not written again because a key arrived next to it.
    fn leaf_for_put(&mut self, key: &[u8]) -> Result<usize, StoreError> {
        self.leaf_at(key, true)
    }

    fn leaf_at(&mut self, key: &[u8], insert: bool) -> Result<usize, StoreError> {
        let Some(root) = self.root.clone() else {
            self.arena.push(Node::Leaf {
                entries: Vec::new(),
                append: true,
            });
            self.root = Some(Child::Mem(self.arena.len() - 1));
            return Ok(self.arena.len() - 1);
        };
        let mut idx = self.copy_to_mem(root)?;
        self.root = Some(Child::Mem(idx));
        loop {
            let (i, c) = match &self.arena[idx] {
                Node::Leaf { .. } => return Ok(idx),
                n @ Node::Branch { children, .. } => {
                    let i = NodeRef::Mem(n).child_index(key);
                    (i, children[i].clone())
                }
            };
            if insert
                && let Some(large) = self.large_leaf_key(&c)?
                && *large != *key
            {
                self.arena.push(Node::empty_leaf());
                let new = self.arena.len() - 1;
                let Node::Branch { keys, children } = &mut self.arena[idx] else {
                    unreachable!("descending through a branch")
                };
                // Separators stay valid (§3.2): the keys routed to child i lie in
                // [keys[i], keys[i + 1]), and the new one, the shortest key between the put's
                // and the large leaf's (as a split picks it), parts them.
                if key < &*large {
                    keys.insert(i + 1, Bytes::from(separator(key, &large)));
                    children.insert(i, Child::Mem(new));
                } else {
                    keys.insert(i + 1, Bytes::from(separator(&large, key)));
                    children.insert(i + 1, Child::Mem(new));
                }
                return Ok(new);
            }
            let ci = self.copy_to_mem(c)?;
            if let Node::Branch { children, .. } = &mut self.arena[idx] {
                children[i] = Child::Mem(ci);
            }
            idx = ci;
        }
    }

    /// Online defragmentation's step (DESIGN.md §3.5): visits at most `max_visit` leaves in key
    /// order from the one covering `from`, and copies into this transaction the path to every
    /// leaf that lies at or above page `limit`, and one path through every branch that does —
    /// at most `max_move` paths — so that the commit writes those nodes again, on the lowest
    /// free pages. Nothing changes in the tree's content. Returns where the next step starts
    /// (`None`: the last leaf was visited) and the number of paths copied.
    ///
    /// Call it first in a transaction: it walks the committed tree, spilled first (§3.6), and
    /// makes the commit write every node as pages.
    pub fn relocate(
        &mut self,
        limit: u64,
        from: &[u8],
        max_visit: usize,
        max_move: usize,
    ) -> Result<(Option<Vec<u8>>, usize), StoreError> {
        if self.arena.is_empty() && self.freed.is_empty() {
            self.store.spill()?;
            self.root = self.store.root.clone();
        }
        self.spill = true;
        let root = match self.root {
            None => return Ok((None, 0)),
            Some(Child::Page(id)) => id,
            Some(Child::Mem(_)) => panic!("relocate is the first thing a transaction does"),
            Some(Child::Shared(_)) => panic!("relocate walks a spilled tree"),
        };
        let map = self.store.map.clone();
        let (hw, path) = (self.store.high_water, self.store.shared.path.clone());
        let view = |id: u64| map.view(hw, id, &path);
        // Branches on the way down: (node, next child to visit, it lies high and no path through
        // it is copied yet). One copied path rewrites every branch on it: moving all the leaves
        // under a high branch would rewrite the whole subtree for nothing.
        let mut stack: Vec<(PageView<'_>, usize, bool)> = Vec::new();
        let mut moves: Vec<Vec<u8>> = Vec::new();
        let (mut visited, mut next) = (0usize, Some(root));
        let mut seek = Some(from);
        while let Some(mut id) = next.take() {
            // Down to a leaf: toward `from` the first time, leftmost after.
            let leaf = loop {
                let v = view(id)?;
                let high = id + v.pages() > limit;
                if v.kind() != KIND_BRANCH {
                    break (v, high);
                }
                let i = seek.map_or(0, |k| NodeRef::Page(v).child_index(k));
                id = v.child(i);
                stack.push((v, i + 1, high));
            };
            let (leaf, high) = leaf;
            seek = None;
            visited += 1;
            if (high || stack.iter().any(|b| b.2)) && leaf.count() > 0 {
                moves.push(leaf.key(0).to_vec());
                for b in &mut stack {
                    b.2 = false;
                }
            }
            if visited >= max_visit || moves.len() >= max_move {
                if leaf.count() == 0 {
                    break;
                }
                let mut after = leaf.key(leaf.count() - 1).to_vec();
                after.push(0);
                for k in &moves {
                    self.leaf_for(k)?;
                }
                return Ok((Some(after), moves.len()));
            }
            // The next leaf: the next child of the deepest branch that has one.
            while let Some((b, i, _)) = stack.last_mut() {
                if *i < b.count() {
                    next = Some(b.child(*i));
                    *i += 1;
                    break;
                }
                stack.pop();
            }
        }
        for k in &moves {
            self.leaf_for(k)?;
        }
        Ok((None, moves.len()))
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let leaf = self.leaf_for_put(key)?;
        let Node::Leaf { entries, append } = &mut self.arena[leaf] else {
            unreachable!()
        };
        match entries.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => entries[i].1 = Bytes::from(value),
            Err(i) => {
                *append = i == entries.len();
                entries.insert(i, (Bytes::from(key), Bytes::from(value)));
            }
        }
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        if get(&*self, key)?.is_none() {
            return Ok(false);
        }
        let leaf = self.leaf_for(key)?;
        let Node::Leaf { entries, .. } = &mut self.arena[leaf] else {
            unreachable!()
        };
        let i = entries
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .expect("key was found");
        entries.remove(i);
        Ok(true)
    }

    /// Soft commit (§3.3, §3.6): publishes the new root, its changed nodes kept in memory, or,
    /// once the in-memory nodes reach the store's bound, every in-memory node written as pages.
    pub fn commit(self, tag: Tag) -> Result<(), StoreError> {
        // While a durable commit's job writes the kept nodes the bound is twice as high: they
        // leave memory when it completes, and spilling them here would write them twice.
        let limit = if self.store.syncing {
            self.store.memory_limit.saturating_mul(2)
        } else {
            self.store.memory_limit
        };
        let spill = self.spill || self.store.memory.bytes >= limit;
        self.finish(tag, spill)
    }

    /// A soft commit that writes every in-memory node the new root reaches as pages (a spill,
    /// §3.6): what a commit whose nodes must lie on pages uses (an online defragmentation's).
    pub fn commit_spilled(self, tag: Tag) -> Result<(), StoreError> {
        self.finish(tag, true)
    }

    fn finish(mut self, tag: Tag, spill: bool) -> Result<(), StoreError> {
        assert!(
            !self.beside,
            "a tree built beside is committed with commit_beside"
        );
        let (root, created) = self.build_root(spill)?;
        let store = &mut *self.store;
        store.txn += 1;
        store.root = root;
        if spill {
            store.memory = Footprint::default();
            store.dirty = Footprint::default();
        } else {
            // Added first: a collapsed root may be a node this commit built.
            store.memory += created;
            store.memory -= self.replaced;
            store.dirty += created;
            store.dirty -= self.replaced_dirty;
        }
        if !self.freed.is_empty() {
            let t = store.txn;
            store.release(t, std::mem::take(&mut self.freed));
        }
        store.publish(tag);
        Ok(())
    }

    /// Commit of a transaction from [`PageStore::begin_beside`]: writes the changed nodes as new
    /// pages (no fsync) and keeps the new root as the tree built beside; publishes nothing.
    pub fn commit_beside(mut self) -> Result<(), StoreError> {
        assert!(
            self.beside,
            "a transaction on the published tree is committed with commit"
        );
        let root = match self.build_root(true)?.0 {
            None => 0,
            Some(Child::Page(id)) => id,
            Some(_) => unreachable!("a spilled root is on pages"),
        };
        self.store.beside = Some(root);
        let freed = std::mem::take(&mut self.freed);
        self.store.free_unpublished(freed);
        Ok(())
    }

    /// Builds the changed nodes into committed ones — as new pages when `spill` (with every
    /// in-memory node the root reaches), otherwise as shared in-memory nodes — and returns the
    /// new root with what the in-memory nodes it created take; from here on the pages are
    /// the tree's, not given back when the txn is dropped.
    fn build_root(&mut self, spill: bool) -> Result<(Option<Child>, Footprint), StoreError> {
        let mut created = Footprint::default();
        let mut root = match self.root.take() {
            None => None,
            Some(c @ Child::Page(_)) => Some(c),
            Some(c @ Child::Shared(_)) if !spill => Some(c),
            Some(c) => {
                let mut parts = Vec::new();
                self.build(c, spill, &mut parts, &mut created)?;
                while parts.len() > 1 {
                    let below = parts.len();
                    let (keys, children) = parts.drain(..).unzip();
                    self.arena.push(Node::Branch { keys, children });
                    let c = Child::Mem(self.arena.len() - 1);
                    self.build(c, spill, &mut parts, &mut created)?;
                    // What makes this loop end (§3.3): a level that did not shrink would be
                    // built again forever, each time on new pages.
                    assert!(
                        parts.len() < below,
                        "branch level of {} nodes over {below} did not shrink",
                        parts.len()
                    );
                }
                parts.pop().map(|(_, c)| c)
            }
        };
        // A root branch with a single child is replaced by that child.
        loop {
            let child = match &root {
                Some(Child::Page(id)) => {
                    let v =
                        self.store
                            .map
                            .view(self.store.high_water, *id, &self.store.shared.path)?;
                    if v.kind() != KIND_BRANCH || v.count() != 1 {
                        break;
                    }
                    // A branch whose one key is longer than a page spans several pages.
                    self.freed.extend(*id..*id + v.pages());
                    Child::Page(v.child(0))
                }
                // Built by this commit, or an untouched one of an earlier commit whose other
                // children emptied (nothing rebalances, §3.3): either way it leaves the tree.
                Some(Child::Shared(n)) => match &n.node {
                    Node::Branch { children, .. } if children.len() == 1 => {
                        let child = children[0].clone();
                        let n = n.clone();
                        self.replace_kept(&n);
                        child
                    }
                    _ => break,
                },
                _ => break,
            };
            root = Some(child);
        }
        // Nothing after this fails: the new pages are the tree's from here on.
        let written: u64 = self.allocated.drain(..).map(|(_, n)| n).sum();
        self.store.largest_commit = self.store.largest_commit.max(written);
        Ok((root, created))
    }

    /// Builds node `c` (an arena node, or with `spill` also a shared one) and its arena — with
    /// `spill` also shared — descendants into committed nodes: pages when `spill`, shared
    /// in-memory nodes otherwise, split by the rule of §3.3 either way. Appends the resulting
    /// (separator, node) parts to `out` (none when the node became empty) and adds what the
    /// in-memory nodes it made take to `created`. The first part's separator is empty: the caller
    /// holds a key for the node already (its parent's entry), or makes the part the first entry
    /// of a new root, whose key is never read (§3.2).
    fn build(
        &mut self,
        c: Child,
        spill: bool,
        out: &mut Vec<(Bytes, Child)>,
        created: &mut Footprint,
    ) -> Result<(), StoreError> {
        let held = match c {
            Child::Mem(i) => Held::Own(std::mem::replace(&mut self.arena[i], Node::empty_leaf())),
            Child::Shared(n) if spill => {
                if let Some(run) = n.written_run(self.store.durable_txn) {
                    // A completed durable commit wrote it and its subtree: those pages serve.
                    out.push((Bytes::default(), Child::Page(run)));
                    return Ok(());
                }
                // Dirty, or its durable commit still running: written again here, its run
                // (which that commit's meta names) freed.
                self.replace_kept(&n);
                Held::Shared(n)
            }
            _ => unreachable!("only arena nodes, and shared ones when spilling, are built"),
        };
        let nodes: Vec<(Bytes, Node)> = if let Node::Leaf { entries, append } = held.node() {
            let sizes: Vec<usize> = entries
                .iter()
                .map(|(k, v)| page::leaf_entry_size(k, v))
                .collect();
            let ranges = split_ranges(&sizes, *append, 1);
            let seps: Vec<Bytes> = ranges
                .iter()
                .map(|r| match r.start {
                    0 => Bytes::default(),
                    i => Bytes::from(separator(&entries[i - 1].0, &entries[i].0)),
                })
                .collect();
            let append = *append;
            // Moved when taken from the arena (each node cut off the end in turn); a shared
            // leaf's entries are pointers to copy.
            let mut entries = match held {
                Held::Own(Node::Leaf { entries, .. }) => entries,
                Held::Shared(n) => match &n.node {
                    Node::Leaf { entries, .. } => entries.clone(),
                    Node::Branch { .. } => unreachable!("a leaf"),
                },
                Held::Own(Node::Branch { .. }) => unreachable!("a leaf"),
            };
            let mut parts: Vec<Node> = ranges
                .iter()
                .rev()
                .map(|r| Node::Leaf {
                    entries: entries.split_off(r.start),
                    append,
                })
                .collect();
            parts.reverse();
            seps.into_iter().zip(parts).collect()
        } else {
            let (keys, children) = match held {
                Held::Own(Node::Branch { keys, children }) => (keys, children),
                // Spilling: a branch's keys are few next to its leaves' entries.
                Held::Shared(n) => match &n.node {
                    Node::Branch { keys, children } => (keys.clone(), children.clone()),
                    Node::Leaf { .. } => unreachable!("a branch"),
                },
                Held::Own(Node::Leaf { .. }) => unreachable!("a branch"),
            };
            let mut list: Vec<(Bytes, Child)> = Vec::with_capacity(keys.len() + 1);
            let mut parts = Vec::new();
            for (k, ch) in keys.into_iter().zip(children) {
                match ch {
                    Child::Page(_) => list.push((k, ch)),
                    Child::Shared(_) if !spill => list.push((k, ch)),
                    _ => {
                        parts.clear();
                        self.build(ch, spill, &mut parts, created)?;
                        let mut k = Some(k);
                        for (pk, c) in parts.drain(..) {
                            list.push((k.take().unwrap_or(pk), c));
                        }
                    }
                }
            }
            // Sized with every key, though each node's first is stored empty: one-page nodes
            // split exactly where they did before that rule.
            let sizes: Vec<usize> = list
                .iter()
                .map(|(k, _)| page::branch_entry_size(k))
                .collect();
            // At least two entries a node: what makes each level built above the root smaller
            // than the one below (§3.3).
            let ranges = split_ranges(&sizes, false, 2);
            let mut nodes = Vec::with_capacity(ranges.len());
            for r in ranges.iter().rev() {
                let (mut keys, children): (Vec<Bytes>, Vec<Child>) =
                    list.split_off(r.start).into_iter().unzip();
                // A node's first key is never read (§3.2) and stored empty: the separator.
                let sep = std::mem::take(&mut keys[0]);
                let sep = if r.start == 0 { Bytes::default() } else { sep };
                nodes.push((sep, Node::Branch { keys, children }));
            }
            nodes.reverse();
            nodes
        };
        for (sep, n) in nodes {
            let f = n.footprint();
            // A leaf over a page (a large value) stays in memory for the durable commit's job
            // to write off this core while the unwritten ones are few (§3.6); past that it is
            // written at once, so memory does not grow with the values.
            let large_now = f.large > 0
                && self.store.dirty.large + created.large + f.large
                    > large_limit(self.store.memory_limit);
            let child = if spill || large_now {
                Child::Page(self.write(&n)?)
            } else {
                *created += f;
                Child::Shared(Arc::new(Kept::new(n, f)))
            };
            out.push((sep, child));
        }
        Ok(())
    }

    /// Writes `n` as pages (a branch's children are on pages by now); returns its first page.
    fn write(&mut self, n: &Node) -> Result<u64, StoreError> {
        let mut buf = std::mem::take(&mut self.store.buf);
        // Encode with a placeholder id to learn the size, then allocate and stamp the real id.
        encode(&mut buf, 0, n);
        let pages = (buf.len() / PAGE_SIZE) as u64;
        let id = self.store.alloc(pages)?;
        // Recorded before the write: a failed write gives the run back too.
        self.allocated.push((id, pages));
        restamp(&mut buf, id);
        self.store.write_page(id, &buf)?;
        // The next transaction reads these pages back at once (the path it copies is the one
        // this one wrote): checking bytes that were encoded here was a crc per page per commit.
        debug_assert!(
            PageView::parse(
                &self.store.map.map,
                self.store.high_water,
                id,
                &self.store.shared.path
            )
            .is_ok(),
            "a page written by this process parses"
        );
        self.store.map.mark(id, pages, true);
        self.store.buf = buf;
        Ok(id)
    }
}

/// [`PageStore::evict_written`] below `k`: the reference that replaces it (`None`: unchanged),
/// adding what leaves memory to `evicted`.
fn evict(k: &Arc<Kept>, durable_txn: u64, evicted: &mut Footprint) -> Option<Child> {
    if let Some(run) = k.written_run(durable_txn) {
        *evicted += k.subtree;
        return Some(Child::Page(run));
    }
    let Node::Branch { keys, children } = &k.node else {
        return None;
    };
    let mut changed: Option<Vec<Child>> = None;
    for (i, c) in children.iter().enumerate() {
        if let Child::Shared(c) = c
            && let Some(new) = evict(c, durable_txn, evicted)
        {
            changed.get_or_insert_with(|| children.clone())[i] = new;
        }
    }
    // A node with a run has runs throughout (§3.6.1), so this one had none: neither has its copy.
    changed.map(|children| {
        let n = Node::Branch {
            keys: keys.clone(),
            children,
        };
        Child::Shared(Arc::new(Kept::new(n, k.own)))
    })
}

/// A node being built: taken out of the arena, or shared with committed versions.
enum Held {
    Own(Node),
    Shared(Arc<Kept>),
}

impl Held {
    fn node(&self) -> &Node {
        match self {
            Held::Own(n) => n,
            Held::Shared(n) => &n.node,
        }
    }
}

fn restamp(buf: &mut [u8], id: u64) {
    buf[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&buf[4..]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// The shortest key `s` with `left < s <= right` (`left < right`): `right` up to and including
/// the first byte where the two differ. A shorter key is a prefix of both, so ≤ `left`, or
/// differs from `right` within the common prefix, so < `left` or > `right`.
fn separator<'k>(left: &[u8], right: &'k [u8]) -> &'k [u8] {
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    debug_assert!(left < right, "separator of keys out of order");
    &right[..common + 1]
}

/// Splits entries of the given sizes into nodes by the split rule (DESIGN.md §3.3): runs of
/// consecutive entries that each fit one page, except that every run but the last holds at least
/// `min` entries, spanning pages where they need it. `fill` packs pages full (sequential
/// inserts); otherwise the entries are spread evenly over the fewest pages.
fn split_ranges(sizes: &[usize], fill: bool, min: usize) -> Vec<std::ops::Range<usize>> {
    let cap = PAGE_SIZE - HEADER;
    let total: usize = sizes.iter().sum();
    let target = if fill || total <= cap {
        cap
    } else {
        total.div_ceil(total.div_ceil(cap))
    };
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, &s) in sizes.iter().enumerate() {
        if i - start >= min && (acc + s > cap || acc >= target) {
            out.push(start..i);
            start = i;
            acc = 0;
        }
        acc += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    let short = out.iter().rev().skip(1).filter(|r| r.len() < min).count();
    assert_eq!(
        short, 0,
        "a node before the last holds fewer than {min} entries"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_fit() {
        let r = split_ranges(&[1000; 10], false, 1);
        assert!(r.len() >= 3 && r.iter().all(|r| r.len() * 1000 <= PAGE_SIZE - HEADER));
        assert_eq!(split_ranges(&[10_000], false, 1), vec![0..1]);
        assert_eq!(
            split_ranges(&[10, 10_000, 10], true, 1),
            vec![0..1, 1..2, 2..3]
        );
        // Branches: two entries a node (the last may hold one), whatever their size.
        assert_eq!(split_ranges(&[2_116; 2], false, 2), vec![0..2]);
        assert_eq!(split_ranges(&[2_116; 3], false, 2), vec![0..2, 2..3]);
        assert_eq!(split_ranges(&[2_116; 4], false, 2), vec![0..2, 2..4]);
        assert_eq!(split_ranges(&[10_000], false, 2), vec![0..1]);
        assert_eq!(split_ranges(&[16, 9_000, 16], false, 2), vec![0..2, 2..3]);
        assert_eq!(split_ranges(&[9_000, 16, 16], false, 2), vec![0..2, 2..3]);
    }

    /// The split rule (DESIGN.md §3.3) on random sizes: runs cover the entries in order, every
    /// run but the last holds at least `min` entries, a run spans pages only when it holds at
    /// most `min` entries, and entries that each fit in half a page are split exactly as without
    /// `min` (one-page nodes unchanged). For branches (`min` 2) a split makes fewer nodes than
    /// entries: what makes each level built at commit shrink.
    #[test]
    fn split_ranges_follow_the_split_rule() {
        let cap = PAGE_SIZE - HEADER;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for case in 0..20_000 {
            let n = 1 + next(60) as usize;
            let small = case % 2 == 0;
            let sizes: Vec<usize> = (0..n)
                .map(|_| match (small, next(4)) {
                    (true, _) | (false, 0 | 1) => 16 + next(cap as u64 / 2 - 16) as usize,
                    (false, 2) => 16 + next(3 * cap as u64) as usize,
                    (false, _) => cap / 2 + next(64) as usize,
                })
                .collect();
            for (fill, min) in [(false, 1), (true, 1), (false, 2)] {
                let r = split_ranges(&sizes, fill, min);
                let when = format!("{sizes:?} fill {fill} min {min}: {r:?}");
                assert_eq!(r.first().map(|r| r.start), Some(0), "{when}");
                assert_eq!(r.last().map(|r| r.end), Some(n), "{when}");
                assert!(r.windows(2).all(|w| w[0].end == w[1].start), "{when}");
                for (i, run) in r.iter().enumerate() {
                    let bytes: usize = sizes[run.clone()].iter().sum();
                    assert!(!run.is_empty(), "{when}");
                    assert!(run.len() >= min || i + 1 == r.len(), "{when}");
                    assert!(bytes <= cap || run.len() <= min, "{when}");
                }
                if min == 2 && n >= 2 {
                    assert!(r.len() < n, "{when}");
                }
                if small {
                    assert_eq!(r, split_ranges(&sizes, fill, 1), "{when}");
                }
            }
        }
    }

    #[test]
    fn separator_is_the_shortest_between() {
        let cases: [(&[u8], &[u8], &[u8]); 5] = [
            (b"a", b"m", b"m"),
            (b"abc", b"abd", b"abd"),
            (b"abc", b"abcd", b"abcd"),
            (b"ab", b"abzzz", b"abz"),
            (b"abc\xff", b"abd\x00\x01", b"abd"),
        ];
        for (a, b, want) in cases {
            let s = separator(a, b);
            assert_eq!(s, want);
            assert!(a < s && s <= b);
        }
    }

    /// A commit whose page write fails part-way gives back every page it allocated, those from
    /// the free list and those at the high-water mark alike.
    #[test]
    fn checks_that_protect_data_fire_in_release_builds_and_say_what_broke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut store = PageStore::open(&StoreOptions::new(path)).unwrap();
        let mut txn = store.begin();
        txn.put(b"a", b"1").unwrap();
        txn.commit([0; 4]).unwrap();
        store.spill().unwrap();
        let held = store.reader().snapshot();
        let Some(Child::Page(root)) = store.root else {
            panic!("a spilled root is on pages")
        };
        let panic_of = |f: &mut dyn FnMut()| {
            let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("panics");
            e.downcast_ref::<String>().cloned().unwrap_or_default()
        };
        // Rewriting the root a reader holds.
        let msg = panic_of(&mut || {
            let _ = store.write_page(root, &[0u8; PAGE_SIZE]);
        });
        assert!(
            msg.contains(&format!("overwrites the root of published version {root}")),
            "{msg}"
        );
        // A write outside the store's pages.
        let hw = store.high_water;
        let msg = panic_of(&mut || {
            let _ = store.write_page(hw, &[0u8; PAGE_SIZE]);
        });
        assert!(msg.contains("outside the store's pages"), "{msg}");
        // Freeing a page that is already free.
        store.free.insert(root + 100);
        store.high_water = store.high_water.max(root + 101);
        let msg = panic_of(&mut || store.release(9, vec![root + 100]));
        assert!(msg.contains(&format!("frees page {}", root + 100)), "{msg}");
        drop(held);
    }

    #[test]
    fn replaced_free_list_pages_are_reusable_without_another_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut store = PageStore::open(&StoreOptions::new(path)).unwrap();
        for v in 1..=2u8 {
            let mut txn = store.begin();
            for i in 0..400 {
                txn.put(format!("k{i:05}").as_bytes(), &[v; 100]).unwrap();
            }
            txn.commit([0; 4]).unwrap();
            store.sync().unwrap();
        }
        // Nothing is written between these durable commits: what the first one freed (the free
        // list it replaced) is reusable after the second, whatever version readers may take.
        store.sync().unwrap();
        store.sync().unwrap();
        assert_eq!(store.pending_pages(), 0);
        let a = store.audit().unwrap();
        assert!(a.leaked.is_empty() && a.twice.is_empty(), "{a:?}");
    }

    #[test]
    fn a_failed_page_write_gives_back_the_pages_of_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut store = PageStore::open(&StoreOptions::new(path)).unwrap();
        let fill = |store: &mut PageStore, keys: u32, v: u8| {
            let mut txn = store.begin();
            for i in 0..keys {
                txn.put(format!("k{i:05}").as_bytes(), &[v; 100]).unwrap();
            }
            txn.commit_spilled([0; 4])
        };
        // A rewrite frees the first version's pages: fewer than the large commit below needs.
        fill(&mut store, 400, 1).unwrap();
        store.sync().unwrap();
        fill(&mut store, 400, 2).unwrap();
        store.sync().unwrap();
        store.sync().unwrap();
        let before = (store.high_water(), store.free_pages());
        assert!(before.1 > 0 && before.1 < 30, "{before:?}");
        for n in [0, 1, 5, 40] {
            store.writes_before_failure.set(Some(n));
            let err = fill(&mut store, 2000, 3).expect_err("a page write fails");
            assert!(err.to_string().contains("injected"), "{err}");
            // A free page given back at the top lowers the mark instead: same pages in use.
            let after = (store.high_water(), store.free_pages());
            assert!(
                after.0 <= before.0 && after.0 - after.1 as u64 == before.0 - before.1 as u64,
                "after failing write {n}: {after:?}, before: {before:?}"
            );
        }
        // A durable commit whose free-list write fails takes no page either, and can be retried.
        store.writes_before_failure.set(Some(0));
        let before = (store.high_water(), store.free_pages());
        store.sync().expect_err("the free-list write fails");
        assert_eq!(
            (store.high_water(), store.free_pages()),
            before,
            "failed sync"
        );
        store.writes_before_failure.set(None);
        store.sync().unwrap();
        fill(&mut store, 2000, 3).unwrap();
        let a = store.audit().unwrap();
        assert!(a.leaked.is_empty() && a.twice.is_empty(), "{a:?}");
    }

    /// A spill whose page write fails leaves the in-memory root published, readable and
    /// counted, and gives back its pages; the next spill writes it (DESIGN.md §3.6).
    #[test]
    fn a_failed_spill_keeps_the_in_memory_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(dir.path().join("db"));
        opts.memory_limit = 32 << 20;
        let mut store = PageStore::open(&opts).unwrap();
        let mut txn = store.begin();
        for i in 0..300u32 {
            txn.put(format!("k{i:05}").as_bytes(), &[1; 100]).unwrap();
        }
        txn.commit([0; 4]).unwrap();
        store.sync().unwrap();
        let mut txn = store.begin();
        for i in (0..3000u32).step_by(3) {
            txn.put(format!("k{i:05}").as_bytes(), &[2; 100]).unwrap();
        }
        txn.commit([0; 4]).unwrap();
        assert!(matches!(store.root, Some(Child::Shared(_))));
        let memory = store.memory();
        assert!(memory > 0);
        let pages_in_use = store.high_water() - store.free_pages() as u64;
        let contents = |store: &PageStore| {
            let snap = store.reader().snapshot();
            let mut c = snap.cursor();
            c.seek(b"").unwrap();
            let mut n = 0;
            while c.valid() {
                n += 1;
                c.advance().unwrap();
            }
            n
        };
        for n in [0, 3, 20] {
            store.writes_before_failure.set(Some(n));
            let err = store.spill().expect_err("a page write fails");
            assert!(err.to_string().contains("injected"), "{err}");
            assert!(matches!(store.root, Some(Child::Shared(_))));
            assert_eq!(store.memory(), memory);
            assert_eq!(
                store.high_water() - store.free_pages() as u64,
                pages_in_use,
                "after failing write {n}"
            );
            assert_eq!(contents(&store), 1200);
        }
        store.writes_before_failure.set(None);
        store.sync().unwrap();
        // The durable commit's job wrote the nodes (§3.6.1), and its completion replaced them
        // by their pages.
        assert!(matches!(store.root, Some(Child::Page(_))));
        assert_eq!((store.memory(), store.unwritten()), (0, 0));
        assert_eq!(contents(&store), 1200);
        let a = store.audit().unwrap();
        assert!(a.leaked.is_empty() && a.twice.is_empty(), "{a:?}");
    }
}
