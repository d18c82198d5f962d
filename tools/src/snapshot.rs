//! `snapshot status`: what etcdutl (and etcdctl 3.4) print for an etcd-format snapshot file —
//! a bbolt db, with or without etcd's sha256 trailer — in every output format. The numbers come
//! from [`retcd_engine::bbolt::snapshot_status`] (etcd 3.4/3.5's definitions).

use std::path::Path;

use retcd_engine::bbolt::{Db, ReadError, SnapshotStatus, snapshot_status};

use crate::output::{Failure, Format, human_bytes, table};

/// Reads `path` and returns what `snapshot status -w <format>` prints.
pub fn status(path: &Path, format: Format) -> Result<String, Failure> {
    std::fs::metadata(path)
        .map_err(|e| Failure::error(format!("stat {}: {}", path.display(), go_io_error(&e))))?;
    let db = Db::open(path).map_err(read_failure)?;
    let st = snapshot_status(&db).map_err(read_failure)?;
    print_status(&st, format)
}

/// The status in one of etcd's formats.
pub fn print_status(st: &SnapshotStatus, format: Format) -> Result<String, Failure> {
    let size = human_bytes(st.total_size);
    Ok(match format {
        Format::Simple => format!(
            "{:x}, {}, {}, {}\n",
            st.hash, st.revision, st.total_key, size
        ),
        Format::Table => table(
            &["hash", "revision", "total keys", "total size"],
            &[vec![
                format!("{:x}", st.hash),
                st.revision.to_string(),
                st.total_key.to_string(),
                size,
            ]],
        ),
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        Format::Protobuf => {
            return Err(Failure {
                code: crate::output::exit::BAD_FEATURE,
                message: "protobuf not supported as output format".to_string(),
            });
        }
    })
}

/// bbolt refuses a file that is no database with "invalid database"; etcd's tools print that.
/// Damage inside a database is reported with where it is (etcd would print bbolt's check
/// errors, which name pages too).
fn read_failure(e: ReadError) -> Failure {
    match e {
        ReadError::TooSmall { .. } | ReadError::NoValidMeta { .. } => {
            Failure::error("invalid database")
        }
        e => Failure::error(e),
    }
}

/// Go's wording of the common errors of stat(2) and open(2).
pub fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}
