//! Issue 15: `retcdctl` against the real etcdctl 3.4. The same transcript of commands runs
//! through etcdctl against one fresh server and through retcdctl against another fresh server of
//! the same kind (so both see the same history: the same revisions), once for retcd and once for
//! real etcd; stdout, stderr and exit codes must be identical, member and cluster ids aside.
//!
//! So far retcdctl has get, put, del and compaction (tools/RETCDCTL.md says what is next).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{Kind, Server};

/// The `retcdctl` binary built beside `retcd` (`cargo test --workspace` builds both).
fn retcdctl_bin() -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_retcd")).with_file_name("retcdctl");
    assert!(
        p.exists(),
        "{} is missing: `cargo build -p retcd-tools` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// One step: arguments and standard input.
type Step = (&'static [&'static str], Option<&'static str>);

const TRANSCRIPT: &[Step] = &[
    (&["put", "foo", "bar"], None),
    (&["put", "foo2", "b\"a\\z\n\t\u{1}é"], None),
    (&["put", "k", "-w", "json"], Some("from stdin")),
    (&["put", "k", "v2", "--prev-kv"], None),
    (&["put", "k", "v3", "--prev-kv", "-w", "fields"], None),
    (&["put", "k", "v4", "--prev-kv", "-w", "json"], None),
    (&["put", "k", "--ignore-value", "-w", "fields"], None),
    (&["get", "foo"], None),
    (&["get", "foo", "-w", "json"], None),
    (&["get", "foo", "-w", "fields"], None),
    (&["get", "--prefix", "foo", "-w", "fields"], None),
    (&["get", "--prefix", "foo", "--hex"], None),
    (&["get", "--prefix", "foo", "--print-value-only"], None),
    (&["get", "--prefix", "foo", "--keys-only"], None),
    (&["get", "", "--prefix", "--limit=2", "-w", "json"], None),
    (
        &["get", "a", "z", "--sort-by=VALUE", "--order=DESCEND"],
        None,
    ),
    (
        &[
            "get",
            "a",
            "z",
            "--sort-by=version",
            "--order=ascend",
            "-w",
            "fields",
        ],
        None,
    ),
    (&["get", "foo", "--from-key", "--consistency=s"], None),
    (&["get", "k", "--rev=3"], None),
    (&["get", "nothing", "-w", "json"], None),
    (&["get", "nothing", "-w", "fields"], None),
    (&["del", "foo2", "--prev-kv"], None),
    (&["del", "foo2", "-w", "json"], None),
    (&["del", "", "--from-key", "-w", "fields"], None),
    (&["compaction", "3"], None),
    (&["compaction", "4", "--physical", "-w", "json"], None),
    (&["get", "k", "--rev=3"], None),
    (&["compaction", "2"], None),
    (&["compaction", "999"], None),
    (&["compaction"], None),
    (&["compaction", "abc"], None),
    (&["compaction", "-h"], None),
    // Bad input: etcdctl's messages and exit codes.
    (&["get"], None),
    (&["get", "foo", "--prefix", "--from-key"], None),
    (&["get", "a", "b", "--prefix"], None),
    (&["get", "foo", "--order=x"], None),
    (&["get", "foo", "--sort-by=x"], None),
    (&["get", "foo", "--consistency=x"], None),
    (&["get", "foo", "-w", "table"], None),
    (&["get", "foo", "-w", "nosuch"], None),
    (&["get", "foo", "--print-value-only", "-w", "json"], None),
    (&["get", "foo", "--limit=x"], None),
    (&["put"], None),
    (&["put", "k", "--lease=zz", "v"], None),
    (&["put", "k", "v", "--ignore-value"], None),
    (&["put", "", "v"], None),
    (&["put", "k", "v", "--lease=1234"], None),
    (&["del"], None),
    (&["del", "a", "b", "--prefix"], None),
    (&["--command-timeout=5s", "get", "foo"], None),
    (&["get", "--nope"], None),
    (&["put", "-x"], None),
    (&["del", "--prefix=maybe", "k"], None),
    (&["get", "--dial-timeout=x", "k"], None),
    (&["get", "-h"], None),
    (&["put", "--help"], None),
    (&["nosuch"], None),
    (&["-w", "json", "get", "foo"], None),
];

/// Runs `bin` with `args` against `server`; its stdout, stderr and exit code, ids masked.
fn run(bin: &std::path::Path, server: &Server, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new(bin);
    support::remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
    cmd.env("ETCDCTL_API", "3");
    cmd.arg(format!("--endpoints={}", server.endpoint()));
    cmd.args(args);
    let out = support::run_with_timeout(cmd, stdin, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", bin.display()));
    let text = format!(
        "stdout:\n{}\nstderr:\n{}\nexit: {:?}",
        out.stdout,
        out.stderr,
        out.status.code()
    );
    mask_ids(&text, server.client_port())
}

/// Member and cluster ids (which differ between two servers), the time stamps and connection
/// names of clientv3's log lines and the servers' ports replaced by placeholders.
fn mask_ids(s: &str, port: u16) -> String {
    let mut out = String::new();
    for line in s.split_inclusive('\n') {
        let mut l = line.replace(&format!(":{port}"), ":<PORT>");
        for (key, end) in [("\"ts\":\"", '"'), ("endpoint://client-", '/')] {
            if let Some(at) = l.find(key) {
                let start = at + key.len();
                if let Some(n) = l[start..].find(end) {
                    l.replace_range(start..start + n, "<MASKED>");
                }
            }
        }
        for key in ["\"cluster_id\":", "\"member_id\":"] {
            if let Some(at) = l.find(key) {
                let start = at + key.len();
                let end = l[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(l.len(), |n| start + n);
                l.replace_range(start..end, "<ID>");
            }
        }
        for key in ["\"ClusterID\" : ", "\"MemberID\" : "] {
            if l.starts_with(key) {
                l = format!("{key}<ID>\n");
            }
        }
        out.push_str(&l);
    }
    out
}

fn transcripts_match(kind: Kind) {
    let a = Server::start_in_tempdir(kind);
    let b = Server::start_in_tempdir(kind);
    let etcdctl = support::etcdctl_binary();
    let retcdctl = retcdctl_bin();
    for (args, stdin) in TRANSCRIPT {
        let want = run(&etcdctl, &a, args, *stdin);
        // The program's own name aside (usage lines, cobra's messages).
        let got = run(&retcdctl, &b, args, *stdin).replace("retcdctl", "etcdctl");
        assert_eq!(got, want, "{kind:?}: {args:?}");
    }
}

#[test]
fn kv_commands_print_what_etcdctl_prints_against_retcd() {
    transcripts_match(Kind::Retcd);
}

#[test]
fn kv_commands_print_what_etcdctl_prints_against_etcd() {
    transcripts_match(Kind::Etcd);
}
