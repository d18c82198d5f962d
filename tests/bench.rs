//! retcd-bench (the `bench/` crate) against the real retcd binary and against real etcd, through
//! its CLI entry point `retcd_bench::cli::main_with`:
//!
//! - etcd benchmark's `put`: etcd's report layout, the HTML report, and what the store then
//!   holds (keys within the key space, one revision per put);
//! - `range ... --output json`: one JSON report with every request counted;
//! - a fio-style job file in two reporting groups (put; then range and mixed together), as JSON
//!   and as fio's text;
//! - every other etcd benchmark command (JSON: requests counted, no errors), and --target-leader
//!   with --sample;
//! - job-file and `--set` errors, which are refused before any connection (no server).

mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::GetOptions;
use serde_json::Value;
use support::{Kind, Server, connect};

/// Longest one retcd-bench command may run before the test fails.
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `retcd-bench ARGS` through `main_with` on a thread of its own (it builds its own tokio
/// runtime) and returns what it printed, or its error message. Fails the test if it runs longer
/// than [`BENCH_TIMEOUT`].
fn bench(args: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = std::iter::once("retcd-bench")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let shown = argv.join(" ");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let result = retcd_bench::cli::main_with(argv, &mut out).map_err(|e| e.to_string());
        let _ = tx.send(result.map(|()| String::from_utf8_lossy(&out).into_owned()));
    });
    match rx.recv_timeout(BENCH_TIMEOUT) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("`{shown}` ran past {BENCH_TIMEOUT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("`{shown}` panicked"),
    }
}

/// [`bench`] that must succeed.
#[track_caller]
fn bench_ok(args: &[&str]) -> String {
    bench(args).unwrap_or_else(|e| panic!("retcd-bench {}: {e}", args.join(" ")))
}

/// The number of keys under `prefix` (every key if empty) and the store's revision.
fn count_and_revision(server: &Server, prefix: &str) -> (i64, i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut client = connect(server, Duration::from_secs(10)).await;
        let opts = if prefix.is_empty() {
            GetOptions::new().with_all_keys()
        } else {
            GetOptions::new().with_prefix()
        };
        let resp = client
            .get(prefix, Some(opts.with_count_only()))
            .await
            .unwrap_or_else(|e| panic!("count keys under {prefix:?}: {e}"));
        (resp.count(), resp.header().expect("header").revision())
    })
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `report["classes"][class]["count"]`, 0 if the class is absent (a job reports no empty class).
fn class_count(job: &Value, class: &str) -> u64 {
    job["classes"]
        .get(class)
        .map_or(0, |c| c["count"].as_u64().expect("count"))
}

#[test]
fn etcd_commands_and_job_files_against_retcd() {
    commands_and_job_files(Kind::Retcd);
}

/// The same against real etcd: the generator speaks etcd's API, nothing of retcd's.
#[test]
fn etcd_commands_and_job_files_against_etcd() {
    commands_and_job_files(Kind::Etcd);
}

fn commands_and_job_files(kind: Kind) {
    let server = Server::start_in_tempdir(kind);
    let endpoint = server.endpoint();
    let tmp = tempfile::tempdir().expect("tempdir");

    // 1. put: etcd's report, the HTML page, 200 revisions over at most 50 keys.
    let (_, rev0) = count_and_revision(&server, "");
    let html = tmp.path().join("put.html");
    let text = bench_ok(&[
        "--endpoints",
        &endpoint,
        "--clients",
        "4",
        "--conns",
        "2",
        "put",
        "--total",
        "200",
        "--key-space-size",
        "50",
        "--val-size",
        "64",
        "--report",
        html.to_str().expect("UTF-8 path"),
    ]);
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for start in [
        "Summary:",
        "  Total:\t",
        "  Requests/sec:\t",
        "Response time histogram:",
        "Latency distribution:",
        "  50% in ",
    ] {
        let found = lines[at..].iter().position(|l| l.starts_with(start));
        let Some(i) = found else {
            panic!("no line starting with {start:?} (in order) in:\n{text}");
        };
        at += i + 1;
    }
    assert!(!text.contains("Error distribution"), "{text}");
    let page = std::fs::read_to_string(&html).expect("the --report file");
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..80]);
    assert!(page.contains("<svg"), "no plot in the HTML report");
    let (keys, rev) = count_and_revision(&server, "");
    assert!((1..=50).contains(&keys), "{keys} keys after put");
    assert_eq!(rev - rev0, 200, "revisions made by 200 puts");

    // 2. range --output json: one report, every request counted.
    let text = bench_ok(&[
        "--endpoints",
        &endpoint,
        "range",
        "foo",
        "--total",
        "100",
        "--consistency",
        "s",
        "--output",
        "json",
    ]);
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("range JSON: {e}:\n{text}"));
    let reports = json.as_array().expect("a JSON array");
    assert_eq!(reports.len(), 1, "{json}");
    assert_eq!(reports[0]["count"], 100, "{json}");
    assert_eq!(reports[0]["error_count"], 0, "{json}");

    // 3. A job file: group 0 writes, group 1 reads and mixes.
    let file = write_file(
        tmp.path(),
        "two-groups.fio",
        "; writers, then readers and a mix\n\
         [w]\n\
         rw=put\n\
         total=100\n\
         clients=2\n\
         keyspace=20\n\
         key_prefix=/t/\n\
         \n\
         [r]\n\
         stonewall\n\
         rw=range\n\
         prefix\n\
         key_prefix=/t/\n\
         total=50\n\
         \n\
         [m]\n\
         rw=mixed\n\
         total=40\n\
         keyspace=20\n\
         key_prefix=/t/\n",
    );
    let file = file.to_str().expect("UTF-8 path");
    let (_, rev0) = count_and_revision(&server, "");
    let text = bench_ok(&["--endpoints", &endpoint, "run", file, "--output", "json"]);
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("run JSON: {e}:\n{text}"));
    assert_eq!(json["profile"], "two-groups", "{json}");
    let jobs = json["jobs"].as_array().expect("jobs");
    let summary: Vec<(&str, u64, &str)> = jobs
        .iter()
        .map(|j| {
            let name = j["name"].as_str().expect("name");
            (
                name,
                j["group"].as_u64().expect("group"),
                j["rw"].as_str().expect("rw"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("w", 0, "put"), ("r", 1, "range"), ("m", 1, "mixed")],
        "{json}"
    );
    let classes = |job: &Value| -> Vec<String> {
        job["classes"]
            .as_object()
            .expect("classes")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(classes(&jobs[0]), ["op"], "{json}");
    assert_eq!(class_count(&jobs[0], "op"), 100, "{json}");
    assert_eq!(classes(&jobs[1]), ["op"], "{json}");
    assert_eq!(class_count(&jobs[1], "op"), 50, "{json}");
    assert!(
        classes(&jobs[2])
            .iter()
            .all(|c| c == "read" || c == "write"),
        "{json}"
    );
    let (reads, writes) = (
        class_count(&jobs[2], "read"),
        class_count(&jobs[2], "write"),
    );
    assert_eq!(reads + writes, 40, "{json}");
    for job in jobs {
        for (class, stats) in job["classes"].as_object().expect("classes") {
            assert_eq!(stats["error_count"], 0, "{} {class}: {json}", job["name"]);
        }
    }
    let (keys, rev) = count_and_revision(&server, "/t/");
    assert!((1..=20).contains(&keys), "{keys} keys under /t/");
    assert_eq!(
        rev - rev0,
        100 + writes as i64,
        "revisions made by the job file"
    );

    // The same file in fio's text.
    let text = bench_ok(&["--endpoints", &endpoint, "run", file]);
    for line in [
        "Run status group 0 (all jobs):",
        "Run status group 1 (all jobs):",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn job_file_errors_name_file_line_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Nothing listens there: the errors come before any connection.
    let nowhere = ["--endpoints", "127.0.0.1:1", "--dial-timeout", "2s"];

    let typo = write_file(tmp.path(), "typo.fio", "[j]\nrw=mixed\nrwmixreed=50\n");
    let typo = typo.to_str().expect("UTF-8 path");
    let err = bench(&[&nowhere[..], &["run", typo]].concat()).expect_err("a typo must be refused");
    let expected = format!("{typo}:3: unknown key \"rwmixreed\"");
    assert!(err.contains(&expected), "{err:?} lacks {expected:?}");

    let good = write_file(tmp.path(), "good.fio", "[j]\nrw=put\ntotal=10\n");
    let good = good.to_str().expect("UTF-8 path");
    let err = bench(&[&nowhere[..], &["run", good, "--set", "clients=0"]].concat())
        .expect_err("clients=0 must be refused");
    let expected = "--set:0: bad value \"0\" for clients: expected a positive integer";
    assert!(err.contains(expected), "{err:?} lacks {expected:?}");
}

/// Every etcd benchmark command, small, against `kind`: each report counts requests and no errors.
fn every_command(kind: Kind) {
    let server = Server::start_in_tempdir(kind);
    let endpoint = server.endpoint();
    let commands: &[&[&str]] = &[
        &[
            "txn-put",
            "--txn-ops",
            "4",
            "--key-space-size",
            "40",
            "--total",
            "100",
        ],
        &["txn-mixed", "--key-space-size", "40", "--total", "100"],
        &["lease-keepalive", "--total", "100"],
        &[
            "stm",
            "--keys",
            "10",
            "--keys-per-txn",
            "2",
            "--total",
            "100",
        ],
        &[
            "watch",
            "--streams",
            "2",
            "--watch-per-stream",
            "5",
            "--put-total",
            "50",
        ],
        &[
            "watch-latency",
            "--streams",
            "2",
            "--watchers-per-stream",
            "2",
            "--put-total",
            "50",
            "--put-rate",
            "500",
        ],
        &["watch-get", "--watchers", "50", "--events", "4"],
    ];
    for command in commands {
        let mut args = vec![
            "--endpoints",
            &endpoint,
            "--clients",
            "4",
            "--conns",
            "2",
            "--output",
            "json",
        ];
        args.extend_from_slice(command);
        let out = bench_ok(&args);
        let reports: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{command:?}: {e}: {out}"));
        let reports = reports
            .as_array()
            .unwrap_or_else(|| panic!("{command:?}: not an array: {out}"));
        assert!(!reports.is_empty(), "{command:?}: no report");
        for r in reports {
            assert_eq!(r["error_count"], 0, "{command:?}: errors in {r}");
            assert!(
                r["count"].as_u64().unwrap_or(0) > 0,
                "{command:?}: nothing measured in {r}"
            );
        }
    }
    // The leader is found through Maintenance.Status; --sample appends etcd's per-second CSV.
    let text = bench_ok(&[
        "--endpoints",
        &endpoint,
        "--target-leader",
        "--sample",
        "--precise",
        "put",
        "--total",
        "50",
    ]);
    assert!(text.contains("\nSummary:\n"), "{text}");
    assert!(
        text.contains("Sample in one second (unix latency throughput):\nUNIX-SECOND,"),
        "{text}"
    );
}

#[test]
fn every_etcd_command_against_retcd() {
    every_command(Kind::Retcd);
}

#[test]
fn every_etcd_command_against_etcd() {
    every_command(Kind::Etcd);
}
