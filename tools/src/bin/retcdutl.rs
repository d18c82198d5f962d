//! `retcdutl`: retcd's offline tool, etcdutl's commands and output. It works on files only
//! (snapshot files; data dirs in later commands) and never talks to a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use retcd_tools::output::{Failure, Format, log_info as log};
use retcd_tools::restore::RestoreOptions;

/// The etcd API version retcd implements (the server's Status.version).
const API_VERSION: &str = "3.5";

#[derive(Parser)]
#[command(
    name = "retcdutl",
    about = "An administrative command line tool for retcd (etcdutl's commands)."
)]
struct Cli {
    /// Output format: simple, table, json, fields (etcdutl's --write-out).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    write_out: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manages etcd-format snapshot files.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// [legacy] offline backup of a stopped member's data dir (prefer `snapshot save`).
    Backup {
        /// Path to the retcd data dir.
        #[arg(long = "data-dir", required = true)]
        data_dir: PathBuf,
        /// Path to the retcd WAL dir (default: <data-dir>/member/wal).
        #[arg(long = "wal-dir")]
        wal_dir: Option<PathBuf>,
        /// Path to the backup dir.
        #[arg(long = "backup-dir", required = true)]
        backup_dir: PathBuf,
        /// Path to the backup WAL dir (default: <backup-dir>/member/wal).
        #[arg(long = "backup-wal-dir")]
        backup_wal_dir: Option<PathBuf>,
        /// Backup v3 backend data (always: retcd has no v2 store).
        #[arg(long = "with-v3", default_value_t = true, action = clap::ArgAction::Set)]
        with_v3: bool,
    },
    /// Prints the KV history hash of a given file.
    Hashkv {
        /// The db file: an etcd snapshot or db, or a retcd data dir's member/snap/db.
        files: Vec<String>,
        /// Maximum revision to hash (default: latest revision).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
    /// Prints the version of retcdutl.
    Version,
    /// Defragments the storage of a stopped member.
    Defrag {
        /// Required. Defragments a data directory not in use by retcd.
        #[arg(long = "data-dir", required = true)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Gets backend snapshot status of a given file.
    Status {
        /// The snapshot file.
        files: Vec<String>,
    },
    /// Restores an etcd member snapshot to a retcd directory.
    Restore {
        /// The snapshot file.
        files: Vec<String>,
        /// Path to the data directory (default: <name>.etcd).
        #[arg(long = "data-dir")]
        data_dir: Option<PathBuf>,
        /// Path to the WAL directory (default: <data-dir>/member/wal).
        #[arg(long = "wal-dir")]
        wal_dir: Option<PathBuf>,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Initial cluster configuration for restore bootstrap.
        #[arg(
            long = "initial-cluster",
            default_value = "default=http://localhost:2380"
        )]
        initial_cluster: String,
        /// Initial cluster token for the etcd cluster during restore bootstrap.
        #[arg(long = "initial-cluster-token", default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// List of this member's peer URLs to advertise to the rest of the cluster.
        #[arg(
            long = "initial-advertise-peer-urls",
            default_value = "http://localhost:2380"
        )]
        initial_advertise_peer_urls: String,
        /// Ignore snapshot integrity hash value (required if copied from data directory).
        #[arg(long = "skip-hash-check")]
        skip_hash_check: bool,
    },
}

fn run(cli: Cli) -> Result<String, Failure> {
    match cli.command {
        Command::Defrag { data_dir } => {
            // etcdutl prints nothing on success.
            retcd_tools::defrag::defrag(&data_dir).map_err(|e| {
                Failure::error(format!(
                    "Failed to defragment etcd data[{}] ({e})",
                    data_dir.display()
                ))
            })?;
            Ok(String::new())
        }
        Command::Backup {
            data_dir,
            wal_dir,
            backup_dir,
            backup_wal_dir,
            with_v3,
        } => {
            if !with_v3 {
                return Err(Failure::bad_args(
                    "--with-v3=false: retcd has only the v3 store to back up",
                ));
            }
            let o = retcd_tools::backup::BackupOptions {
                data_dir,
                backup_dir,
                wal_dir,
                backup_wal_dir,
            };
            retcd_tools::backup::backup(&o).map_err(|e| {
                Failure::error(format!(
                    "Failed to back up etcd data[{}] ({e})",
                    o.data_dir.display()
                ))
            })?;
            Ok(String::new())
        }
        Command::Hashkv { files, rev } => {
            let [file] = files.as_slice() else {
                return Err(Failure::bad_args(format!(
                    "accepts 1 arg(s), received {}",
                    files.len()
                )));
            };
            let format = Format::parse(&cli.write_out)?;
            retcd_tools::hashkv::hashkv(Path::new(file), rev, format)
        }
        Command::Version => Ok(format!(
            "retcdutl version: {}\nAPI version: {API_VERSION}\n",
            env!("CARGO_PKG_VERSION")
        )),
        Command::Snapshot {
            command: SnapshotCommand::Status { files },
        } => {
            let [file] = files.as_slice() else {
                return Err(Failure::bad_args(
                    "snapshot status requires exactly one argument",
                ));
            };
            let format = Format::parse(&cli.write_out)?;
            retcd_tools::snapshot::status(Path::new(file), format)
        }
        Command::Snapshot {
            command:
                SnapshotCommand::Restore {
                    files,
                    data_dir,
                    wal_dir,
                    name,
                    initial_cluster,
                    initial_cluster_token,
                    initial_advertise_peer_urls,
                    skip_hash_check,
                },
        } => {
            let [file] = files.as_slice() else {
                return Err(Failure::bad_args(
                    "snapshot restore requires exactly one argument",
                ));
            };
            let o = RestoreOptions {
                file: PathBuf::from(file),
                name,
                data_dir,
                wal_dir,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
                skip_hash_check,
            };
            log("restoring snapshot", &[("path", file)]);
            let r = retcd_tools::restore::restore(&o)?;
            log(
                "restored snapshot",
                &[
                    ("path", file),
                    ("data-dir", &r.data_dir.display().to_string()),
                    ("wal-dir", &r.wal_dir.display().to_string()),
                    ("member-id", &format!("{:x}", r.member_id)),
                    ("cluster-id", &format!("{:x}", r.cluster_id)),
                    ("revision", &r.revision.to_string()),
                    ("versions", &r.versions.to_string()),
                ],
            );
            Ok(String::new())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("Error: {}", f.message);
            ExitCode::from(u8::try_from(f.code).unwrap_or(1))
        }
    }
}
