//! Issue 14: `/metrics` against real etcd and retcd with the same traffic, read by Prometheus'
//! own text-format parser (PyPI's prometheus_client, in the virtualenv `.ci/setup` makes): every
//! family the etcd dashboard, etcd's alerts and the issue name is there with etcd's type, help
//! text and label names, and the counts the traffic made are the same.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::Server;

/// The families compared (as the parser names them: a counter without `_total`). The peer ones
/// are absent on a single member, for etcd too.
const FAMILIES: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed",
    "etcd_server_slow_apply",
    "etcd_server_quota_backend_bytes",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_cluster_version",
    "etcd_server_health_success",
    "etcd_server_health_failures",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_wal_write_bytes_total",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_current_revision",
    "etcd_debugging_mvcc_compact_revision",
    "etcd_network_client_grpc_sent_bytes",
    "etcd_network_client_grpc_received_bytes",
    "grpc_server_started",
    "grpc_server_handled",
    "grpc_server_msg_received",
    "grpc_server_msg_sent",
    "grpc_server_handling_seconds",
    "etcd_debugging_lease_granted",
    "etcd_debugging_lease_revoked",
    "etcd_debugging_lease_renewed",
    "etcd_debugging_lease_ttl_total",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// `curl -i URL/metrics`: the content type and the body.
fn scrape(s: &Server) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .arg(format!("{}/metrics", s.client_url()))
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers");
    let ct = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("content-type");
    (ct, body.to_string())
}

/// The exposition through prometheus_client's parser (a syntax error fails here).
fn parse(text: &str) -> BTreeMap<String, Value> {
    use std::io::Write;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/patroni-venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run .ci/setup",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(root.join("tests/prometheus/parse.py"))
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "the parser refused it: {out:?}");
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(
    families: &BTreeMap<String, Value>,
    family: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    families[family]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

fn label_names(family: &Value) -> BTreeSet<String> {
    family["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .flat_map(|s| s[1].as_object().expect("labels").keys().cloned())
        .filter(|k| k != "le")
        .collect()
}

#[test]
fn metrics_have_etcds_names_types_labels_and_counts() {
    let (etcd, retcd) = support::start_both(&["--metrics", "extensive"]);
    let mut parsed = Vec::new();
    for s in [&etcd, &retcd] {
        for i in 0..5 {
            assert!(s.etcdctl(&["put", &format!("k{i}"), "v"]).success());
        }
        assert!(s.etcdctl(&["get", "k", "--prefix"]).success());
        assert!(s.etcdctl(&["del", "k0"]).success());
        assert!(s.etcdctl(&["lease", "grant", "600"]).success());
        let id = s.etcdctl(&["lease", "list"]).stdout;
        let id = id.lines().nth(1).expect("a lease").trim().to_string();
        assert!(s.etcdctl(&["lease", "keep-alive", "--once", &id]).success());
        // A refused Range: InvalidArgument (through the gateway's own gRPC call).
        let refused = Command::new("curl")
            .args(["-s", "-X", "POST", "-d", "{}"])
            .arg(format!("{}/v3/kv/range", s.client_url()))
            .output()
            .expect("curl");
        assert!(refused.status.success());
        let (ct, body) = scrape(s);
        parsed.push((ct, parse(&body)));
    }
    let (ect, e) = &parsed[0];
    let (rct, r) = &parsed[1];
    assert_eq!(rct, ect, "content type");
    for f in FAMILIES {
        let (Some(ef), Some(rf)) = (e.get(*f), r.get(*f)) else {
            panic!(
                "{f}: etcd has it: {}, retcd has it: {}",
                e.contains_key(*f),
                r.contains_key(*f)
            );
        };
        assert_eq!(rf["type"], ef["type"], "{f}: type");
        assert_eq!(rf["help"], ef["help"], "{f}: help");
        assert_eq!(label_names(rf), label_names(ef), "{f}: label names");
    }
    for (name, labels, want) in [
        (
            "grpc_server_handled_total",
            vec![("grpc_method", "Put"), ("grpc_code", "OK")],
            5.0,
        ),
        (
            "grpc_server_handled_total",
            vec![("grpc_method", "Range"), ("grpc_code", "OK")],
            // The get, and the harness's readiness check.
            2.0,
        ),
        (
            "grpc_server_handled_total",
            vec![("grpc_method", "Range"), ("grpc_code", "InvalidArgument")],
            1.0,
        ),
        (
            "grpc_server_handled_total",
            vec![("grpc_method", "DeleteRange"), ("grpc_code", "OK")],
            1.0,
        ),
        (
            "grpc_server_started_total",
            vec![("grpc_method", "Put")],
            5.0,
        ),
        (
            "grpc_server_msg_received_total",
            vec![("grpc_method", "Put")],
            5.0,
        ),
        (
            "grpc_server_handling_seconds_count",
            vec![("grpc_method", "Put")],
            5.0,
        ),
        ("etcd_server_has_leader", vec![], 1.0),
        ("etcd_server_is_leader", vec![], 1.0),
        ("etcd_server_leader_changes_seen_total", vec![], 1.0),
        ("etcd_debugging_mvcc_current_revision", vec![], 7.0),
        ("etcd_debugging_mvcc_compact_revision", vec![], -1.0),
        ("etcd_debugging_mvcc_keys_total", vec![], 4.0),
        ("etcd_server_proposals_pending", vec![], 0.0),
        ("etcd_server_proposals_failed_total", vec![], 0.0),
        ("etcd_server_slow_apply_total", vec![], 0.0),
        ("etcd_server_quota_backend_bytes", vec![], 2147483648.0),
        ("etcd_debugging_lease_granted_total", vec![], 1.0),
        ("etcd_debugging_lease_renewed_total", vec![], 1.0),
        ("etcd_debugging_lease_revoked_total", vec![], 0.0),
        ("etcd_debugging_lease_ttl_total_count", vec![], 1.0),
    ] {
        let family = name
            .strip_suffix("_total")
            .filter(|f| e.contains_key(*f))
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        let family = if e.contains_key(family) { family } else { name };
        let got = (
            value(e, family, name, &labels),
            value(r, family, name, &labels),
        );
        assert_eq!(got, (want, want), "{name}{labels:?}: (etcd, retcd)");
    }
    // WAL fsyncs were timed.
    let fsyncs = value(
        r,
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_wal_fsync_duration_seconds_count",
        &[],
    );
    assert!(fsyncs > 0.0);
}

/// A 3-member cluster: the leader's peer traffic by peer, with etcd's names and labels.
#[test]
fn peer_metrics_name_each_peer() {
    let mut seen = Vec::new();
    for kind in [support::Kind::Etcd, support::Kind::Retcd] {
        let mut c = support::cluster::Cluster::start(kind, 3, &[]);
        assert!(c.etcdctl(&["put", "a", "b"]).success());
        let ids: BTreeSet<String> = (0..3).map(|i| format!("{:x}", c.member_id(i))).collect();
        // The leader talks to every follower (a follower may talk to the leader only).
        let leader = c.leader();
        let (_, body) = scrape(&c.members[leader]);
        let families = parse(&body);
        let me = format!("{:x}", c.member_id(leader));
        let others: BTreeSet<String> = ids.iter().filter(|i| **i != me).cloned().collect();
        if kind == support::Kind::Retcd {
            assert_round_trips(&c.members[leader], &others);
        }
        for (family, label) in [
            ("etcd_network_peer_sent_bytes", "To"),
            ("etcd_network_peer_received_bytes", "From"),
        ] {
            let f = &families[family];
            let peers: BTreeSet<String> = f["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .filter(|s| s[2].as_f64().unwrap_or(0.0) > 0.0)
                .filter_map(|s| s[1][label].as_str().map(str::to_string))
                .collect();
            assert_eq!(peers, others, "{kind:?} {family}: bytes by {label}");
            seen.push((
                kind,
                family,
                f["type"].clone(),
                f["help"].clone(),
                label_names(f),
            ));
        }
    }
    for (r, e) in seen[2..].iter().zip(&seen[..2]) {
        assert_eq!(
            (r.1, &r.2, &r.3, &r.4),
            (e.1, &e.2, &e.3, &e.4),
            "retcd vs etcd"
        );
    }
}

/// Waits until the prober timed a round trip to each of `others` (etcd's histogram by `To`).
fn assert_round_trips(s: &Server, others: &BTreeSet<String>) {
    let family = "etcd_network_peer_round_trip_time_seconds";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = scrape(s);
        let f = parse(&body);
        let timed: BTreeSet<String> = f[family]["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .filter(|x| x[0] == format!("{family}_count") && x[2].as_f64() > Some(0.0))
            .filter_map(|x| x[1]["To"].as_str().map(str::to_string))
            .collect();
        if &timed == others {
            assert_eq!(f[family]["type"], "histogram");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{timed:?}\n{body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `--experimental-warning-apply-duration`: an apply slower than it is counted (and logged) —
/// with 1ns, every apply.
#[test]
fn slow_applies_are_counted_past_the_warning_duration() {
    let (etcd, retcd) = support::start_both(&["--experimental-warning-apply-duration", "1ns"]);
    for s in [&etcd, &retcd] {
        assert!(s.etcdctl(&["put", "k", "v"]).success());
        let (_, body) = scrape(s);
        let families = parse(&body);
        let slow = value(
            &families,
            "etcd_server_slow_apply",
            "etcd_server_slow_apply_total",
            &[],
        );
        assert!(slow >= 1.0, "{:?}: {slow}", s.kind());
    }
    assert!(retcd.log_since(0).contains("apply request took too long"));
}

/// --unsafe-no-fsync: writes are acknowledged without any WAL fdatasync (the fsync histogram
/// stays empty while the appended bytes grow), and the member says so when it starts.
#[test]
fn unsafe_no_fsync_skips_the_wal_fsyncs() {
    let s = Server::start_in_tempdir_with_args(support::Kind::Retcd, &["--unsafe-no-fsync"]);
    for i in 0..20 {
        assert!(s.etcdctl(&["put", &format!("k{i}"), "v"]).success());
    }
    let (_, body) = scrape(&s);
    let families = parse(&body);
    let fsyncs = value(
        &families,
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_wal_fsync_duration_seconds_count",
        &[],
    );
    assert_eq!(fsyncs, 0.0);
    let written = value(
        &families,
        "etcd_disk_wal_write_bytes_total",
        "etcd_disk_wal_write_bytes_total",
        &[],
    );
    assert!(written > 0.0);
    assert!(s.log_since(0).contains("--unsafe-no-fsync is set"));
}

/// A scrape storm (500 scrapes, 50 at a time) while a client writes: every scrape is answered
/// 200 with the exposition, and every write goes through.
#[test]
fn a_scrape_storm_is_answered_and_writes_go_on() {
    let s = Server::start_in_tempdir(support::Kind::Retcd);
    let url = format!("{}/metrics", s.client_url());
    // Each URL with its own -o: curl applies one per URL.
    let args: Vec<String> = (0..500)
        .flat_map(|_| ["-o".to_string(), "/dev/null".to_string(), url.clone()])
        .collect();
    let storm = std::thread::spawn(move || {
        Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "60",
                "--parallel",
                "--parallel-max",
                "50",
            ])
            .args(["-w", "%{http_code}\\n"])
            .args(&args)
            .output()
            .expect("curl")
    });
    for i in 0..20 {
        let put = s.etcdctl(&["put", &format!("k{i}"), "v"]);
        assert!(put.success(), "{put:?}");
    }
    let out = storm.join().unwrap();
    let codes = String::from_utf8(out.stdout).unwrap();
    assert_eq!(codes.lines().count(), 500, "{codes}");
    assert!(codes.lines().all(|c| c == "200"), "{codes}");
    let (_, body) = scrape(&s);
    assert!(body.contains("etcd_server_has_leader 1"));
}

/// retcd's own families: the group commit's batch sizes, checkpoint durations, the sequencer's
/// queue and each core's watch-feed queue.
#[test]
fn retcd_families_show_the_cores_and_the_group_commit() {
    let s = Server::start_in_tempdir(support::Kind::Retcd);
    for i in 0..10 {
        assert!(s.etcdctl(&["put", &format!("k{i}"), "v"]).success());
    }
    // A graceful defragmentation asks for checkpoints (each timed).
    assert!(s.etcdctl(&["defrag"]).success());
    let (_, body) = scrape(&s);
    let f = parse(&body);
    let appends = value(
        &f,
        "retcd_wal_group_commit_entries",
        "retcd_wal_group_commit_entries_count",
        &[],
    );
    let entries = value(
        &f,
        "retcd_wal_group_commit_entries",
        "retcd_wal_group_commit_entries_sum",
        &[],
    );
    assert!(appends >= 10.0 && entries >= appends, "{appends} {entries}");
    let checkpoints = value(
        &f,
        "retcd_checkpoint_duration_seconds",
        "retcd_checkpoint_duration_seconds_count",
        &[],
    );
    assert!(checkpoints >= 1.0, "{checkpoints}");
    assert_eq!(f["retcd_watch_feed_queued_batches"]["type"], "gauge");
    let cores = f["retcd_watch_feed_queued_batches"]["samples"]
        .as_array()
        .expect("samples")
        .len();
    assert!(cores >= 1, "{body}");
    // No more than the batches applied (the hubs drain them as they come).
    let queued = value(
        &f,
        "retcd_watch_feed_queued_batches",
        "retcd_watch_feed_queued_batches",
        &[("core", "0")],
    );
    assert!((0.0..=10.0).contains(&queued), "{queued}");
    assert_eq!(f["retcd_sequencer_queued_proposals"]["type"], "gauge");
}
