//! `snapshot restore`: a new member's data dir from an etcd-format snapshot file — made by
//! retcd's or etcd's Maintenance.Snapshot, or a db copied from an etcd data dir
//! (`--skip-hash-check`) — with the membership of the flags and fresh member and cluster ids, as
//! etcdutl does. The seed's recovery procedure 3: restore the same snapshot on every member and
//! start them with the same flags.
//!
//! What it writes is `retcd::import::build`'s (the server builds the same from a data dir that
//! etcd's own restore wrote): the page store at `member/snap/db` with the imported state and this
//! member's identity, and a WAL at `member/wal` (or `--wal-dir`) holding the new cluster's
//! bootstrap entries, committed. Everything is built in a sibling
//! `<data-dir>.restoring` dir, synced, and renamed into place last, so a crash or an error never
//! leaves a half-restored data dir under the final name.

use std::path::{Path, PathBuf};

use retcd::import::{sibling, sync_dir};
use retcd_engine::bbolt::{Db, Trailer};

use crate::output::{Failure, Progress};

/// etcdutl's flags of `snapshot restore`.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub file: PathBuf,
    pub name: String,
    pub data_dir: Option<PathBuf>,
    pub wal_dir: Option<PathBuf>,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    pub skip_hash_check: bool,
}

/// What a restore did, for its log lines.
#[derive(Debug, Clone)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub wal_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: i64,
    pub versions: u64,
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::error(e)
}

pub fn restore(o: &RestoreOptions) -> Result<Restored, Failure> {
    // Absolute paths: the WAL opens through io_uring, which does not resolve against the cwd.
    let cwd = std::env::current_dir().map_err(|e| fail(format!("current directory: {e}")))?;
    let data_dir = cwd.join(
        o.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", o.name))),
    );
    let wal_dir = o.wal_dir.as_ref().map(|w| cwd.join(w));
    // The member's flags are parsed by the server's own parser, so the ids are the ones the
    // server derives when it starts with the same flags.
    let parsed = retcd::config::parse_from(
        [
            "retcd",
            "--name",
            &o.name,
            "--data-dir",
            &data_dir.display().to_string(),
            "--initial-cluster",
            &o.initial_cluster,
            "--initial-cluster-token",
            &o.initial_cluster_token,
            "--initial-advertise-peer-urls",
            &o.initial_advertise_peer_urls,
        ],
        &|_| None,
    )
    .map_err(fail)?;
    let retcd::config::Parsed::Run(cfg, _) = parsed else {
        return Err(fail("unexpected flags"));
    };
    let (members, me, cluster_id) = retcd::identity::new_cluster(&cfg).map_err(fail)?;
    if dir_has_entries(&data_dir)? {
        return Err(fail(format!(
            "data-dir {:?} not empty or could not be read",
            data_dir.display().to_string()
        )));
    }
    if let Some(w) = &wal_dir
        && w.exists()
    {
        return Err(fail(format!(
            "wal-dir {:?} exists",
            w.display().to_string()
        )));
    }
    let db = Db::open(&o.file).map_err(fail)?;
    match db.trailer().map_err(fail)? {
        Trailer::Absent if !o.skip_hash_check => {
            return Err(fail("snapshot missing hash but --skip-hash-check=false"));
        }
        Trailer::Present { .. } if !o.skip_hash_check => {
            db.verify_trailer().map_err(fail)?;
        }
        _ => {}
    }
    db.check().map_err(fail)?;
    let building = sibling(&data_dir, "restoring");
    let wal_building = wal_dir.as_ref().map(|w| sibling(w, "restoring"));
    for dir in std::iter::once(&building).chain(wal_building.as_ref()) {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| fail(format!("removing {}: {e}", dir.display())))?;
        }
    }
    // A progress bar on a terminal: bytes of keys and values imported, of the file's size.
    let bar = std::sync::Mutex::new(Progress::new(
        std::fs::metadata(&o.file).map_or(0, |m| m.len()),
    ));
    let built = retcd::import::build(
        &db,
        &building,
        wal_building.as_deref(),
        (&members, me.id, cluster_id),
        &|n| bar.lock().unwrap_or_else(|e| e.into_inner()).add(n),
    );
    bar.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
    let (revision, versions) = match built {
        Ok(b) => (b.revision, b.versions),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            if let Some(w) = &wal_building {
                let _ = std::fs::remove_dir_all(w);
            }
            return Err(fail(e));
        }
    };
    let wal_dir = match (&wal_dir, &wal_building) {
        (Some(w), Some(b)) => {
            rename_synced(b, w)?;
            w.clone()
        }
        _ => data_dir.join("member").join("wal"),
    };
    rename_synced(&building, &data_dir)?;
    Ok(Restored {
        data_dir,
        wal_dir,
        member_id: me.id,
        cluster_id,
        revision,
        versions,
    })
}

/// Whether `dir` exists and holds anything (etcdutl refuses a non-empty data dir).
fn dir_has_entries(dir: &Path) -> Result<bool, Failure> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(_) => Ok(true),
    }
}

/// Renames `from` to `to` (an empty `to` is replaced) and syncs the parent, so the rename is
/// durable before the tool reports success.
fn rename_synced(from: &Path, to: &Path) -> Result<(), Failure> {
    if to.exists() {
        std::fs::remove_dir(to).map_err(|e| fail(format!("{}: {e}", to.display())))?;
    }
    std::fs::rename(from, to).map_err(|e| {
        fail(format!(
            "renaming {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent).map_err(fail)
}
