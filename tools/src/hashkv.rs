//! `hashkv FILE [--rev N]`: etcdutl's KV history hash of a db file, in its output formats. The file
//! is either an etcd db (a snapshot file, or `member/snap/db` of an etcd data dir) or retcd's page
//! store (`member/snap/db` of a retcd data dir, as its last checkpoint left it: the WAL is not
//! replayed, as etcdutl does not replay etcd's). Either way the hash is etcd's HashKV
//! (engine/DESIGN.md §4.10): an etcd db is imported into a temporary page store first (§7.4),
//! which keeps every revision, so both give what `endpoint hashkv` gives for the same history.
//! The file is only read; a retcd store in use by a running member is refused (its lock).

use std::io::Read;
use std::path::Path;

use retcd::import::is_bbolt;
use retcd_engine::bbolt::Db;
use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::{KvHash, Mvcc};

use crate::output::{Failure, Format, table};
use crate::snapshot::go_io_error;

/// The first bytes of retcd's page store (its meta page's magic, engine/DESIGN.md §3.1).
const RETCD_MAGIC: &[u8; 8] = b"RETCDDB\0";

/// Hashes `path` up to `rev` (0: its latest revision) and returns what `hashkv -w <format>` prints.
pub fn hashkv(path: &Path, rev: i64, format: Format) -> Result<String, Failure> {
    std::fs::metadata(path)
        .map_err(|e| Failure::error(format!("stat {}: {}", path.display(), go_io_error(&e))))?;
    let h = if is_bbolt(path) {
        let db = Db::open(path).map_err(Failure::error)?;
        let dir = tempdir(path)?;
        let result = (|| {
            let mut mvcc =
                Mvcc::open(&StoreOptions::new(dir.join("db"))).map_err(Failure::error)?;
            mvcc.import_etcd(&db).map_err(Failure::error)?;
            mvcc.reader().hash_kv(rev).map_err(Failure::error)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result?
    } else if has_magic(path) {
        let mvcc = Mvcc::open(&StoreOptions::new(path.to_path_buf())).map_err(Failure::error)?;
        mvcc.reader().hash_kv(rev).map_err(Failure::error)?
    } else {
        return Err(Failure::error("invalid database"));
    };
    print(&h, format)
}

fn has_magic(path: &Path) -> bool {
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == RETCD_MAGIC
}

/// A fresh directory beside the system's temporary ones, for the imported copy.
fn tempdir(path: &Path) -> Result<std::path::PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!(
        "retcdutl-hashkv-{}-{}",
        std::process::id(),
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Failure::error(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// etcdutl's printers for its HashKV (hash, hash revision, compact revision).
fn print(h: &KvHash, format: Format) -> Result<String, Failure> {
    let row = [
        h.hash.to_string(),
        h.hash_revision.to_string(),
        h.compact_revision.to_string(),
    ];
    Ok(match format {
        Format::Simple => format!("{}\n", row.join(", ")),
        Format::Table => table(
            &["hash", "hash revision", "compact revision"],
            &[row.to_vec()],
        ),
        Format::Json => format!(
            "{{\"hash\":{},\"hashRevision\":{},\"compactRevision\":{}}}\n",
            h.hash, h.hash_revision, h.compact_revision
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Hash revision\" : {}\n\"Compact revision\" : {}\n",
            h.hash, h.hash_revision, h.compact_revision
        ),
        Format::Protobuf => {
            return Err(Failure {
                code: crate::output::exit::BAD_FEATURE,
                message: "protobuf not supported as output format".to_string(),
            });
        }
    })
}
