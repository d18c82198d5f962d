//! Data dirs built from etcd's data: the page store and the WAL of a member whose state comes from
//! an etcd db (a snapshot file, or `member/snap/db` of a data dir that etcd's own `snapshot
//! restore` wrote). Two callers: `retcdutl snapshot restore` ([`build`]) and the server's start
//! ([`import_etcd_data_dir`]), so the seed's recovery procedure 3 works whichever tool the operator
//! restores with.
//!
//! What a built data dir holds (engine/DESIGN.md §7.4): the imported key space, leases and auth
//! state, this member's identity, and a WAL whose only entries are the new cluster's bootstrap
//! configuration changes, committed — what a member of a new cluster writes before it talks to
//! anyone. The etcd files are never changed: a data dir from etcd's tools is moved aside to
//! `member.etcd` first, and an import cut by a crash is redone from there at the next start.

use std::path::{Path, PathBuf};

use retcd_engine::bbolt::Db;
use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::Mvcc;
use retcd_engine::wal::{Wal, WalOptions};
use retcd_raft::membership::Member;
use tracing::info;

use crate::config::Config;

/// What [`build`] imported.
#[derive(Debug, Clone, Copy)]
pub struct Built {
    pub revision: i64,
    pub versions: u64,
    pub leases: u64,
    pub users: u64,
}

/// Builds `dir/member` (and the WAL in `wal_dir`, else `dir/member/wal`) from `db` for member
/// `member_id` of the new cluster `members`; every file and directory durable on return.
/// `progress` is told the bytes of every entry imported.
pub fn build(
    db: &Db,
    dir: &Path,
    wal_dir: Option<&Path>,
    (members, member_id, cluster_id): (&[Member], u64, u64),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Built, String> {
    let snap = dir.join("member").join("snap");
    std::fs::create_dir_all(&snap).map_err(|e| format!("{}: {e}", snap.display()))?;
    let mut mvcc = Mvcc::open(&StoreOptions::new(snap.join("db"))).map_err(|e| e.to_string())?;
    let imported = mvcc
        .import_etcd_with_progress(db, progress)
        .map_err(|e| e.to_string())?;
    mvcc.set_local_identity(member_id, cluster_id)
        .map_err(|e| e.to_string())?;
    drop(mvcc);
    let wal = wal_dir.map_or_else(|| dir.join("member").join("wal"), Path::to_path_buf);
    std::fs::create_dir_all(&wal).map_err(|e| format!("{}: {e}", wal.display()))?;
    let records = retcd_raft::log::bootstrap_records(members);
    retcd_engine::runtime::block_on_local(async {
        let (mut w, _) = Wal::open(WalOptions::new(&wal)).await?;
        w.append(&records).await?;
        w.close().await
    })
    .map_err(|e| e.to_string())?;
    // The new directories' entries are durable before anyone renames the data dir into place.
    for d in [snap.as_path(), &dir.join("member"), dir, &wal] {
        sync_dir(d)?;
    }
    Ok(Built {
        revision: imported.revision,
        versions: imported.versions,
        leases: imported.leases,
        users: imported.users,
    })
}

pub fn sync_dir(d: &Path) -> Result<(), String> {
    std::fs::File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {}: {e}", d.display()))
}

/// `<path>.<suffix>`, beside `path`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether `path` starts with a bbolt meta page (etcd's db), not retcd's page store.
pub fn is_bbolt(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == 0xED0C_DAED
}

/// At start: a data dir that etcd's `snapshot restore` wrote (a bbolt `member/snap/db`) becomes a
/// retcd data dir, once, with the identity and membership of this member's flags; etcd's files
/// stay in `member.etcd` (and `<wal-dir>.etcd`). `None` when there is nothing to import.
pub fn import_etcd_data_dir(cfg: &Config) -> Result<Option<Built>, String> {
    let member = cfg.member_dir();
    let aside = sibling(&member, "etcd");
    let resuming = !member.exists() && aside.exists();
    if !resuming && !is_bbolt(&cfg.db_path()) {
        return Ok(None);
    }
    if !resuming {
        if aside.exists() {
            return Err(format!(
                "{} holds an etcd db and {} the files of an earlier import: move one of them away",
                cfg.db_path().display(),
                aside.display()
            ));
        }
        if let Some(w) = &cfg.dedicated_wal_dir
            && w.exists()
        {
            std::fs::rename(w, sibling(w, "etcd"))
                .map_err(|e| format!("moving etcd's WAL dir {} aside: {e}", w.display()))?;
        }
        std::fs::rename(&member, &aside)
            .map_err(|e| format!("moving {} aside: {e}", member.display()))?;
        sync_dir(&cfg.data_dir)?;
        info!(
            db = %aside.join("snap/db").display(),
            "found a data dir written by etcd's snapshot restore: importing it (etcd's files are kept aside)"
        );
    }
    let (members, me, cluster_id) = crate::identity::new_cluster(cfg)?;
    let db = Db::open(&aside.join("snap").join("db")).map_err(|e| e.to_string())?;
    db.check().map_err(|e| e.to_string())?;
    let building = sibling(&cfg.data_dir.join("member"), "importing");
    for d in std::iter::once(&building).chain(cfg.dedicated_wal_dir.as_ref()) {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| format!("removing {}: {e}", d.display()))?;
        }
    }
    let built = build(
        &db,
        &building,
        cfg.dedicated_wal_dir.as_deref(),
        (&members, me.id, cluster_id),
        &|_| {},
    )?;
    std::fs::rename(building.join("member"), &member)
        .map_err(|e| format!("moving the imported data into {}: {e}", member.display()))?;
    sync_dir(&cfg.data_dir)?;
    std::fs::remove_dir_all(&building).map_err(|e| format!("{}: {e}", building.display()))?;
    info!(
        revision = built.revision,
        versions = built.versions,
        leases = built.leases,
        users = built.users,
        member_id = %format!("{:x}", me.id),
        cluster_id = %format!("{cluster_id:x}"),
        "imported etcd's db"
    );
    Ok(Some(built))
}
