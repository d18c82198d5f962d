//! `defrag --data-dir`: the page store of a stopped member rewritten into a new file holding only
//! its live pages, then renamed over the old one — etcdutl's offline defrag. The copy goes
//! through the snapshot-install path (bounded transactions, engine/DESIGN.md §4.7) from one
//! consistent read of the old store, keeps this member's identity, and is synced before the
//! rename, so a crash leaves either the old file or the new one under the name (plus, at worst,
//! a stale `db.defrag` that the next defrag removes). The old store's lock is held throughout,
//! so a running member's data dir is refused.

use std::collections::VecDeque;
use std::path::Path;

use retcd::import::{sibling, sync_dir};
use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::{Mvcc, RawEntry};

use crate::output::Progress;

/// Bytes of entries read from the old store at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Sizes of the db file before and after.
#[derive(Debug, Clone, Copy)]
pub struct Defragmented {
    pub before: u64,
    pub after: u64,
}

pub fn defrag(data_dir: &Path) -> Result<Defragmented, String> {
    let db = data_dir.join("member").join("snap").join("db");
    let before = std::fs::metadata(&db)
        .map_err(|e| format!("{}: {e}", db.display()))?
        .len();
    let old = Mvcc::open(&StoreOptions::new(db.clone())).map_err(|e| e.to_string())?;
    let new_path = sibling(&db, "defrag");
    let after = copy_live(&old, &new_path)?;
    // The old store (and its lock) goes only once the new file is complete and durable.
    std::fs::rename(&new_path, &db).map_err(|e| format!("renaming into {}: {e}", db.display()))?;
    sync_dir(db.parent().expect("db has a parent"))?;
    drop(old);
    Ok(Defragmented { before, after })
}

/// Writes the live pages of `old` (one consistent read of it, its identity kept) into a new page
/// store at `to` (replacing a file left there), synced; returns the new file's length. A progress
/// bar goes to a terminal's stderr.
pub fn copy_live(old: &Mvcc, to: &Path) -> Result<u64, String> {
    let identity = old.local_identity().map_err(|e| e.to_string())?;
    let snap = old.reader().state_snapshot();
    let applied = snap.applied().0;
    if to.exists() {
        std::fs::remove_file(to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    let mut new = Mvcc::open(&StoreOptions::new(to.to_path_buf())).map_err(|e| e.to_string())?;
    let mut bar = Progress::new(old.db_size_in_use());
    let mut after: Option<Vec<u8>> = None;
    let mut buffered: VecDeque<RawEntry> = VecDeque::new();
    let mut done = false;
    let entries = std::iter::from_fn(|| {
        if buffered.is_empty() && !done {
            match snap.chunk(after.as_deref(), CHUNK_BYTES) {
                Ok(chunk) if chunk.is_empty() => done = true,
                Ok(chunk) => {
                    after = chunk.last().map(|(k, _)| k.clone());
                    bar.add(chunk.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum());
                    buffered.extend(chunk);
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e.to_string()));
                }
            }
        }
        buffered.pop_front().map(Ok)
    });
    new.install(entries, applied).map_err(|e| e.to_string())?;
    if let Some((member_id, cluster_id)) = identity {
        new.set_local_identity(member_id, cluster_id)
            .map_err(|e| e.to_string())?;
    }
    new.sync().map_err(|e| e.to_string())?;
    // The durable commit dropped the free pages at the end (the install's last batches free
    // what the earlier ones wrote beside): the file is cut to what it holds.
    new.shrink_file().map_err(|e| e.to_string())?;
    drop(new);
    bar.finish();
    Ok(std::fs::metadata(to)
        .map_err(|e| format!("{}: {e}", to.display()))?
        .len())
}
