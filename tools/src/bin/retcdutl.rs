//! `retcdutl`: retcd's offline tool, etcdutl's commands and output. It works on files only
//! (snapshot files; data dirs in later commands) and never talks to a server.

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use retcd_tools::output::{Failure, Format};

/// The etcd API version retcd implements (the server's Status.version).
const API_VERSION: &str = "3.5";

#[derive(Parser)]
#[command(name = "retcdutl", about = "An administrative command line tool for retcd (etcdutl's commands).")]
struct Cli {
    /// Output format: simple, table, json, fields (etcdutl's --write-out).
    #[arg(short = 'w', long = "write-out", global = true, default_value = "simple")]
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
    /// Prints the version of retcdutl.
    Version,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Gets backend snapshot status of a given file.
    Status {
        /// The snapshot file.
        files: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<String, Failure> {
    match cli.command {
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
