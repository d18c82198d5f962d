//! `backup --data-dir D --backup-dir B [--wal-dir W] [--backup-wal-dir BW]`: an offline copy of a
//! stopped member's data dir (etcdutl's legacy `backup`). The page store is copied through the
//! same path as the offline defrag (its live pages, from one consistent read, the member's
//! identity kept) and the WAL segments byte for byte, so the backup started with the member's
//! own flags replays the WAL past the store's checkpoint and is that member again, with every
//! acknowledged write.
//!
//! etcdutl's backup also rewrites the copy into a new one-member cluster that has to be started
//! with `--force-new-cluster`; retcd does not have that flag yet (issue 14), so the copy keeps
//! the membership: to move a cluster, prefer `snapshot save` and `snapshot restore`, as etcd's
//! documentation does.
//!
//! Nothing is half-written: the copy is built beside the backup dir (`<backup-dir>.tmp`) and
//! renamed into place once every file and directory is durable. The source store's lock is held
//! throughout, so a running member's data dir is refused.

use std::path::{Path, PathBuf};

use retcd::import::{sibling, sync_dir};
use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::Mvcc;

use crate::defrag::copy_live;

/// etcdutl's flags.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    /// The member's WAL dir when it is not `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// Where the backup's WAL goes when not `<backup-dir>/member/wal`.
    pub backup_wal_dir: Option<PathBuf>,
}

pub fn backup(o: &BackupOptions) -> Result<(), String> {
    let src_wal = o
        .wal_dir
        .clone()
        .unwrap_or_else(|| o.data_dir.join("member").join("wal"));
    for d in std::iter::once(&o.backup_dir).chain(&o.backup_wal_dir) {
        if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) {
            return Err(format!("backup directory {} is not empty", d.display()));
        }
    }
    let db = o.data_dir.join("member").join("snap").join("db");
    if !db.exists() {
        return Err(format!(
            "{} is not a retcd data dir (no {})",
            o.data_dir.display(),
            db.display()
        ));
    }
    let old = Mvcc::open(&StoreOptions::new(db)).map_err(|e| e.to_string())?;

    let tmp = sibling(&o.backup_dir, "tmp");
    let tmp_wal = o.backup_wal_dir.as_ref().map(|w| sibling(w, "tmp"));
    for t in std::iter::once(&tmp).chain(&tmp_wal) {
        if t.exists() {
            std::fs::remove_dir_all(t).map_err(|e| format!("{}: {e}", t.display()))?;
        }
    }
    let snap = tmp.join("member").join("snap");
    std::fs::create_dir_all(&snap).map_err(|e| format!("{}: {e}", snap.display()))?;
    copy_live(&old, &snap.join("db"))?;
    let wal = tmp_wal
        .clone()
        .unwrap_or_else(|| tmp.join("member").join("wal"));
    copy_files(&src_wal, &wal)?;
    for d in [snap.as_path(), &tmp.join("member"), &tmp, &wal] {
        sync_dir(d)?;
    }
    // The WAL first: a backup dir in place always has its WAL.
    if let (Some(t), Some(w)) = (&tmp_wal, &o.backup_wal_dir) {
        rename_into(t, w)?;
    }
    rename_into(&tmp, &o.backup_dir)?;
    drop(old);
    Ok(())
}

/// Copies every regular file of `from` into the new directory `to`, each synced.
fn copy_files(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let dest = to.join(entry.file_name());
        std::fs::copy(entry.path(), &dest)
            .and_then(|_| std::fs::File::open(&dest)?.sync_all())
            .map_err(|e| format!("copying {}: {e}", entry.path().display()))?;
    }
    Ok(())
}

/// Renames `from` to `to` (an empty `to` is replaced) and syncs `to`'s parent.
fn rename_into(from: &Path, to: &Path) -> Result<(), String> {
    if to.exists() {
        std::fs::remove_dir(to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    std::fs::rename(from, to).map_err(|e| format!("renaming into {}: {e}", to.display()))?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent)
}
