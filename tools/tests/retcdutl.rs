//! `retcdutl` against etcd's own tool on the same files: `snapshot status` in every output
//! format prints what the real `etcdctl snapshot status` (Debian's etcd-client 3.4, which runs
//! the same code as etcdutl 3.5) prints, with the same exit codes and `Error:` lines for bad
//! input. The snapshot files are written by engine::bbolt with etcd's `key` and `meta` buckets,
//! in sizes that exercise the table widths and byte units.

use std::path::Path;
use std::process::{Command, Output};

use retcd_engine::bbolt::{MemSource, write_snapshot};
use retcd_engine::etcd_keys::{BucketRevision, KeyValueRef, encode_key_value, revision_key};

const RETCDUTL: &str = env!("CARGO_BIN_EXE_retcdutl");

/// A snapshot file of `n` revisions of one put each (value `v` bytes), plus a `meta` bucket.
fn snapshot_file(dir: &Path, n: i64, v: usize) -> std::path::PathBuf {
    let mut keys = Vec::new();
    for main in 2..2 + n {
        let key = format!("key-{main:06}");
        let value = vec![b'v'; v];
        let mut kv = Vec::new();
        encode_key_value(
            KeyValueRef {
                key: key.as_bytes(),
                create_revision: main,
                mod_revision: main,
                version: 1,
                value: &value,
                lease: 0,
            },
            &mut kv,
        );
        let rk = revision_key(BucketRevision {
            main,
            sub: 0,
            tombstone: false,
        });
        keys.push((rk, kv));
    }
    let source = MemSource {
        buckets: vec![
            (b"key".to_vec(), keys),
            (
                b"meta".to_vec(),
                vec![(
                    b"consistent_index".to_vec(),
                    (n as u64 + 4).to_be_bytes().to_vec(),
                )],
            ),
        ],
    };
    let path = dir.join(format!("snap-{n}-{v}.db"));
    let file = std::fs::File::create(&path).unwrap();
    let (_, mut file, _) = write_snapshot(std::io::BufWriter::new(file), &source).unwrap();
    std::io::Write::flush(&mut file).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (run `bash .ci/setup` for etcdctl)"))
}

/// stdout, the `Error:` lines of stderr (etcdctl may log other lines there) and the exit code.
fn outcome(o: &Output) -> (String, Vec<String>, Option<i32>) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr
            .lines()
            .filter(|l| l.starts_with("Error:"))
            .map(str::to_string)
            .collect(),
        o.status.code(),
    )
}

fn assert_same(args: &[&str]) {
    let ours = outcome(&run(RETCDUTL, args));
    let etcds = outcome(&run("etcdctl", args));
    assert_eq!(ours, etcds, "retcdutl vs etcdctl {args:?}");
}

#[test]
fn snapshot_status_prints_what_etcdctl_prints() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        snapshot_file(dir.path(), 0, 0),
        snapshot_file(dir.path(), 5, 10),
        snapshot_file(dir.path(), 3000, 300),
        snapshot_file(dir.path(), 200, 70_000),
    ];
    for file in &files {
        let file = file.to_str().unwrap();
        for format in ["simple", "table", "json", "fields", "protobuf", "yaml"] {
            assert_same(&["snapshot", "status", file, "-w", format]);
        }
        assert_same(&["snapshot", "status", file]);
        assert_same(&["--write-out", "table", "snapshot", "status", file]);
    }
    // The numbers themselves, once: 3,000 puts from revision 2.
    let o = run(
        RETCDUTL,
        &[
            "snapshot",
            "status",
            files[2].to_str().unwrap(),
            "-w",
            "json",
        ],
    );
    let json = String::from_utf8(o.stdout).unwrap();
    assert!(
        json.contains("\"revision\":3001,\"totalKey\":3001,"),
        "{json}"
    );
}

#[test]
fn snapshot_status_refuses_bad_input_as_etcdctl_does() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_db = dir.path().join("not-a-db");
    std::fs::write(&not_a_db, b"hello\n").unwrap();
    let zeros = dir.path().join("zeros");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    let missing = dir.path().join("missing.db");
    let good = snapshot_file(dir.path(), 5, 10);
    let good = good.to_str().unwrap();
    for args in [
        vec!["snapshot", "status"],
        vec!["snapshot", "status", good, good],
        vec!["snapshot", "status", missing.to_str().unwrap()],
        vec!["snapshot", "status", not_a_db.to_str().unwrap()],
        vec!["snapshot", "status", zeros.to_str().unwrap()],
    ] {
        assert_same(&args);
    }
    // A damaged page inside a valid file: an error naming the damage, exit code 1, no output.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(good).unwrap();
    bytes[2 * 4096..3 * 4096].fill(0xAB);
    std::fs::write(&damaged, bytes).unwrap();
    let (stdout, errors, code) = outcome(&run(
        RETCDUTL,
        &["snapshot", "status", damaged.to_str().unwrap()],
    ));
    assert_eq!((stdout.as_str(), code), ("", Some(1)), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn version_names_the_api() {
    let o = run(RETCDUTL, &["version"]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        out,
        format!(
            "retcdutl version: {}\nAPI version: 3.5\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}
