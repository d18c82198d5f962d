//! The disk as power-loss tests see it (engine/DESIGN.md §6).
//!
//! # What this module owns
//!
//! Hooks that the WAL and the page store call just before every operation that changes a file —
//! a write, an `fdatasync`, a create, a rename, a remove, a directory `fsync` — and the
//! [`PowerLoss`] recorder a test installs on a directory. With no recorder installed (every
//! production run) a hook is one relaxed atomic load and returns `Ok`.
//!
//! A recorder keeps what a real disk could still lose: for each file the writes since its last
//! `fdatasync` (and the durable bytes of every sector they touched), and the directory changes
//! since the directory's last `fsync`. It can "cut the power" at a chosen operation: that
//! operation and every later one under its directory fail with an I/O error, as if the machine
//! stopped there. [`PowerLoss::recover`] then turns the files into what the disk could hold after
//! the restart — unsynced writes dropped, kept, or torn at sector granularity; unsynced directory
//! changes kept up to a point and undone after it — and the test reopens the store from that.
//!
//! # Invariants
//!
//! - A hook runs before its operation and an `Err` means the operation must not happen: the
//!   caller returns the error without touching the file.
//! - A sector's durable bytes are captured before the first unsynced write to it, so a resolved
//!   sector is always its durable content with some of the later writes applied in order (a disk
//!   writes each 512-byte sector whole, DESIGN §1).
//!
//! # Who may call it
//!
//! The hooks: only engine code that writes the WAL or the page store. [`PowerLoss`]: tests.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit a disk writes whole (DESIGN §1).
pub const SECTOR: u64 = 512;

/// Installed recorders; `ACTIVE` counts them so that a hook without any costs one load.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// etcd's `--unsafe-no-fsync`: the WAL's appends and the page store's durable commits skip their
/// fdatasyncs (set once at start-up, before any write).
static NO_FSYNC: AtomicBool = AtomicBool::new(false);

/// Turns the fdatasyncs of the WAL's appends and of the page store's durable commits off (etcd's
/// `--unsafe-no-fsync`: "Disables fsync, unsafe, will cause data loss"): a crash of the machine
/// can then lose acknowledged writes. Segment creation and directory changes still sync.
pub fn set_unsafe_no_fsync(on: bool) {
    NO_FSYNC.store(on, Ordering::Relaxed);
}

/// Whether the WAL and the page store make their writes durable (see [`set_unsafe_no_fsync`]).
pub fn fsync_enabled() -> bool {
    !NO_FSYNC.load(Ordering::Relaxed)
}
static RECORDERS: Mutex<Vec<Arc<Recorder>>> = Mutex::new(Vec::new());

/// Who does an operation. A power cut is placed by counting foreground operations only: the
/// background work (the WAL's spare segment) interleaves with them in an order that depends on
/// I/O timing, and its file is never read before a foreground operation waited for it, so leaving
/// it out keeps a seed's cut at the same place in every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The writer's own sequence of operations (counted).
    Foreground,
    /// Work a background task does ahead of time (not counted; fails once the power is cut).
    Background,
}

/// Before writing `data` at `offset` of `path`.
pub fn write(path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
    write_by(Origin::Foreground, path, offset, data)
}

/// [`write`] by `origin`.
pub fn write_by(origin: Origin, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
    hook(origin, path, |s| s.write(path, offset, data))
}

/// Before an `fdatasync` (or `fsync`) of `path`.
pub fn sync(path: &Path) -> io::Result<()> {
    sync_by(Origin::Foreground, path)
}

/// [`sync`] by `origin`.
pub fn sync_by(origin: Origin, path: &Path) -> io::Result<()> {
    hook(origin, path, |s| {
        if !s.skips(path) {
            s.files.remove(path);
        }
        Ok(())
    })
}

/// Before creating `path` (or truncating it to nothing), by `origin`.
pub fn create_by(origin: Origin, path: &Path) -> io::Result<()> {
    hook(origin, path, |s| {
        s.dir_op(path, DirOp::Create { path: path.into() })
    })
}

/// Before renaming `from` to `to` (same directory).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    hook(Origin::Foreground, from, |s| {
        if let Some(log) = s.files.remove(from) {
            s.files.insert(to.into(), log);
        }
        s.dir_op(
            from,
            DirOp::Rename {
                from: from.into(),
                to: to.into(),
            },
        )
    })
}

/// Before removing `path`.
pub fn remove(path: &Path) -> io::Result<()> {
    hook(Origin::Foreground, path, |s| {
        let image = std::fs::read(path)?;
        let log = s.files.remove(path);
        s.dir_op(
            path,
            DirOp::Remove {
                path: path.into(),
                image,
                log,
            },
        )
    })
}

/// Before an `fsync` of directory `dir`: its earlier creates, renames and removes become durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    hook(Origin::Foreground, dir, |s| {
        s.dir_ops.retain(|(d, _)| d != dir);
        Ok(())
    })
}

fn hook(
    origin: Origin,
    path: &Path,
    f: impl FnOnce(&mut State) -> io::Result<()>,
) -> io::Result<()> {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let recorder = {
        let all = RECORDERS.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().find(|r| path.starts_with(&r.root)).cloned()
    };
    match recorder {
        Some(r) => r.op(origin, f),
        None => Ok(()),
    }
}

struct Recorder {
    root: PathBuf,
    state: Mutex<State>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn op(&self, origin: Origin, f: impl FnOnce(&mut State) -> io::Result<()>) -> io::Result<()> {
        let mut s = self.lock();
        if s.cut {
            return Err(power_lost());
        }
        if origin == Origin::Background {
            return f(&mut s);
        }
        s.ops += 1;
        if s.cut_at.is_some_and(|at| s.ops >= at) {
            s.cut = true;
            return Err(power_lost());
        }
        f(&mut s)
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

/// Writes to one file since its last sync.
#[derive(Default)]
struct FileLog {
    /// Durable content of every sector an unsynced write touched (zeros past the end of file).
    durable: HashMap<u64, Vec<u8>>,
    /// The unsynced writes, in order: (offset, bytes).
    writes: Vec<(u64, Vec<u8>)>,
}

enum DirOp {
    Create {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Remove {
        path: PathBuf,
        image: Vec<u8>,
        log: Option<FileLog>,
    },
}

/// A sync the disk pretends to make: it returns, and leaves the writes it should have made
/// durable as unsynced as before. Tests use it to put back, on purpose, a missing `fdatasync`
/// that the code under test must not have (and check that they catch it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipSync {
    /// Every sync of a file whose name ends with `suffix`.
    Suffix(&'static str),
    /// A sync of the file named `name` whose last unsynced write started below offset `below`
    /// (for the page store: the sync after a meta page write, whose slots are its first pages).
    AfterWriteBelow {
        /// The file name (its last path component).
        name: &'static str,
        /// The offset the last write started below.
        below: u64,
    },
}

#[derive(Default)]
struct State {
    skip: Option<SkipSync>,
    ops: u64,
    cut_at: Option<u64>,
    cut: bool,
    files: HashMap<PathBuf, FileLog>,
    /// Directory changes since their directory's last fsync: (directory, change).
    dir_ops: Vec<(PathBuf, DirOp)>,
}

impl State {
    fn skips(&self, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match self.skip {
            None => false,
            Some(SkipSync::Suffix(suffix)) => name.ends_with(suffix),
            Some(SkipSync::AfterWriteBelow { name: n, below }) => {
                name == n
                    && self
                        .files
                        .get(path)
                        .and_then(|log| log.writes.last())
                        .is_some_and(|(offset, _)| *offset < below)
            }
        }
    }

    fn write(&mut self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let log = self.files.entry(path.into()).or_default();
        let first = offset / SECTOR;
        let last = (offset + data.len() as u64).div_ceil(SECTOR);
        let mut file = None;
        for sector in first..last {
            if log.durable.contains_key(&sector) {
                continue;
            }
            let f = match &mut file {
                Some(f) => f,
                None => file.insert(File::open(path)?),
            };
            let mut bytes = vec![0u8; SECTOR as usize];
            read_up_to(f, &mut bytes, sector * SECTOR)?;
            log.durable.insert(sector, bytes);
        }
        log.writes.push((offset, data.to_vec()));
        Ok(())
    }

    fn dir_op(&mut self, path: &Path, op: DirOp) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        self.dir_ops.push((dir, op));
        Ok(())
    }
}

/// Reads what there is at `offset` (a short file leaves the rest of `buf` as it was).
fn read_up_to(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(())
}

/// What the disk keeps of the operations that were not made durable, decided at [`PowerLoss::recover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Every unsynced write and directory change is lost.
    DropAll,
    /// Every unsynced write and directory change reached the disk (as SIGKILL leaves things).
    KeepAll,
    /// Each sector of each unsynced write reaches the disk with probability `percent`/100,
    /// independently (torn and reordered writes); unsynced directory changes survive up to a
    /// random point.
    Sectors {
        /// Chance of each sector write to survive, in percent.
        percent: u8,
    },
    /// Everything survives except the last unsynced write of each file, which keeps only a prefix
    /// of whole `unit`s (512 or 4096 bytes): a write torn at a sector or block boundary.
    TornLast {
        /// 512 or 4096.
        unit: u64,
    },
    /// Everything survives, except that the first sector of the last unsynced write to each file
    /// named `name` holds garbage: a device that scrambled the sector it was writing when the
    /// power failed. That is beyond the sector atomicity the WAL's tail relies on (DESIGN §1,
    /// §2.5); the page store's meta pages must survive it (§3.1).
    Garble {
        /// The file name (its last path component) whose last write is garbled.
        name: &'static str,
    },
}

/// What [`PowerLoss::recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Unsynced writes found, over all files.
    pub writes: usize,
    /// Sectors whose content differs from what the last write put there (lost or torn).
    pub sectors_lost: usize,
    /// Directory changes undone.
    pub dir_ops_undone: usize,
}

/// A power-loss recorder on a directory (and everything under it); removed when dropped.
pub struct PowerLoss {
    recorder: Arc<Recorder>,
}

impl PowerLoss {
    /// Starts recording the operations on files under `root`.
    ///
    /// # Panics
    ///
    /// If a recorder is already installed on `root` or on a folder holding it (or under it).
    pub fn install(root: &Path) -> PowerLoss {
        let recorder = Arc::new(Recorder {
            root: root.to_path_buf(),
            state: Mutex::new(State::default()),
        });
        let mut all = RECORDERS.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            all.iter()
                .all(|r| !r.root.starts_with(root) && !root.starts_with(&r.root)),
            "overlapping power-loss recorders on {}",
            root.display()
        );
        all.push(recorder.clone());
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        PowerLoss { recorder }
    }

    /// Foreground operations counted so far.
    pub fn ops(&self) -> u64 {
        self.recorder.lock().ops
    }

    /// Cuts the power at the `n`-th operation from now (1 = the next one): it and every later
    /// one fail.
    pub fn cut_after(&self, n: u64) {
        let mut s = self.recorder.lock();
        s.cut_at = Some(s.ops + n.max(1));
    }

    /// From now on, the syncs `skip` names are not made (a fault put in on purpose; `None`
    /// makes every sync again).
    pub fn skip_syncs(&self, skip: Option<SkipSync>) {
        self.recorder.lock().skip = skip;
    }

    /// Cuts the power now.
    pub fn cut_now(&self) {
        self.recorder.lock().cut = true;
    }

    /// Whether the power is off.
    pub fn is_cut(&self) -> bool {
        self.recorder.lock().cut
    }

    /// After a cut, with every file of the store closed: makes the files what the disk holds
    /// when the machine comes back, per `loss` (random choices from `seed`), and turns the power
    /// back on with nothing pending.
    pub fn recover(&self, loss: Loss, seed: u64) -> io::Result<Report> {
        let mut s = self.recorder.lock();
        let mut rng = SplitMix(seed);
        let mut report = Report::default();
        let dir_ops = std::mem::take(&mut s.dir_ops);
        let keep = match loss {
            Loss::DropAll => 0,
            Loss::KeepAll | Loss::TornLast { .. } | Loss::Garble { .. } => dir_ops.len(),
            Loss::Sectors { .. } => rng.below(dir_ops.len() as u64 + 1) as usize,
        };
        for (_, op) in dir_ops.into_iter().skip(keep).rev() {
            report.dir_ops_undone += 1;
            undo(op, &mut s.files)?;
        }
        for (path, log) in std::mem::take(&mut s.files) {
            if !path.exists() {
                // Removed, and the removal survived.
                continue;
            }
            report.writes += log.writes.len();
            report.sectors_lost += resolve(&path, &log, loss, &mut rng)?;
        }
        s.cut = false;
        s.cut_at = None;
        Ok(report)
    }
}

impl Drop for PowerLoss {
    fn drop(&mut self) {
        let mut all = RECORDERS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|r| !Arc::ptr_eq(r, &self.recorder));
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Undoes one directory change that did not reach the disk.
fn undo(op: DirOp, files: &mut HashMap<PathBuf, FileLog>) -> io::Result<()> {
    match op {
        DirOp::Create { path } => {
            files.remove(&path);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        DirOp::Rename { from, to } => {
            if let Some(log) = files.remove(&to) {
                files.insert(from.clone(), log);
            }
            std::fs::rename(&to, &from)?;
        }
        DirOp::Remove { path, image, log } => {
            std::fs::write(&path, image)?;
            if let Some(log) = log {
                files.insert(path, log);
            }
        }
    }
    Ok(())
}

/// Writes into `path` what survives of its unsynced writes; returns the sectors that lost the
/// last write to them.
fn resolve(path: &Path, log: &FileLog, loss: Loss, rng: &mut SplitMix) -> io::Result<usize> {
    let mut sectors: Vec<u64> = log.durable.keys().copied().collect();
    sectors.sort_unstable();
    let mut content: HashMap<u64, Vec<u8>> = log.durable.clone();
    let mut newest: HashMap<u64, Vec<u8>> = log.durable.clone();
    let last = log.writes.len().checked_sub(1);
    let garbled = match loss {
        Loss::Garble { name } => path.file_name().is_some_and(|n| n == name),
        _ => false,
    };
    for (i, (offset, data)) in log.writes.iter().enumerate() {
        let end = offset + data.len() as u64;
        let kept_prefix = match loss {
            Loss::TornLast { unit } if Some(i) == last => {
                let units = data.len() as u64 / unit.max(1);
                Some(offset + rng.below(units + 1) * unit)
            }
            _ => None,
        };
        for sector in offset / SECTOR..end.div_ceil(SECTOR) {
            let (from, to) = (
                (sector * SECTOR).max(*offset),
                ((sector + 1) * SECTOR).min(end),
            );
            let bytes = &data[(from - offset) as usize..(to - offset) as usize];
            let at = (from - sector * SECTOR) as usize;
            newest.get_mut(&sector).expect("captured")[at..at + bytes.len()].copy_from_slice(bytes);
            let lands = match loss {
                Loss::DropAll => false,
                Loss::KeepAll => true,
                Loss::Sectors { percent } => rng.below(100) < u64::from(percent),
                Loss::TornLast { .. } => kept_prefix.is_none_or(|p| to <= p),
                Loss::Garble { .. } => true,
            };
            if lands {
                let c = &mut content.get_mut(&sector).expect("captured")[at..at + bytes.len()];
                c.copy_from_slice(bytes);
                if garbled && Some(i) == last && sector == offset / SECTOR {
                    for b in c.iter_mut() {
                        *b = rng.next() as u8;
                    }
                }
            }
        }
    }
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut lost = 0;
    for sector in sectors {
        let bytes = &content[&sector];
        if *bytes != newest[&sector] {
            lost += 1;
        }
        let at = sector * SECTOR;
        if at >= len && bytes.iter().all(|&b| b == 0) {
            continue;
        }
        file.write_all_at(bytes, at)?;
    }
    file.sync_all()?;
    Ok(lost)
}

/// A small seeded generator (SplitMix64): the same seed, the same disk.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}
