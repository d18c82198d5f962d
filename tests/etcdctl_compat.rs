//! etcdctl compatibility: runs the real etcdctl (3.4, API v3) against real
//! etcd and against retcd with the same command sequence and asserts that the
//! normalized stdout, stderr and exit status are identical.
//!
//! `RETCD_COMPAT_BASELINE=etcd` compares etcd against a second real etcd
//! instead of retcd, which validates the harness and the normalization.
//! See `support::normalize` for what is masked.

mod support;

use support::{Kind, Output, Server};

/// Set to print every command with etcd's normalized output (use with
/// `--nocapture`).
const VERBOSE_ENV: &str = "RETCD_COMPAT_VERBOSE";

/// What the reference etcd must do for a step; guards against a vacuous pass
/// where both servers fail the same way (e.g. neither is reachable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Fail,
}

struct Mismatch {
    step: usize,
    command: String,
    report: String,
}

/// One etcd (the reference) and one candidate (retcd, or etcd in baseline
/// mode), fed the same commands.
struct Compat {
    test: &'static str,
    reference: Server,
    candidate: Server,
    steps: usize,
    mismatches: Vec<Mismatch>,
    /// Lease ids granted so far: (placeholder, etcd's id, the candidate's id), ids in hex as
    /// etcdctl prints them. Placeholders in arguments become each server's own id; each server's
    /// ids in its output (hex, and decimal in JSON) become the placeholder.
    leases: Vec<(String, String, String)>,
}

impl Compat {
    /// Starts both servers concurrently, each in its own tempdir (owned by
    /// the `Server`, removed after its process is killed).
    fn start(test: &'static str) -> Compat {
        let candidate_kind = Kind::candidate_from_env();
        let (reference, candidate) = std::thread::scope(|s| {
            let r = s.spawn(|| Server::start_in_tempdir(Kind::Etcd));
            let c = s.spawn(move || Server::start_in_tempdir(candidate_kind));
            // Join both before unwrapping so a started server is never leaked.
            let (r, c) = (r.join(), c.join());
            match (r, c) {
                (Ok(r), Ok(c)) => (r, c),
                (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
            }
        });
        Compat {
            test,
            reference,
            candidate,
            steps: 0,
            mismatches: Vec::new(),
            leases: Vec::new(),
        }
    }

    /// Runs a command that must succeed on etcd.
    fn ok(&mut self, args: &[&str]) -> Output {
        self.step(args, None, Expect::Ok)
    }

    /// Runs a command that must fail on etcd.
    fn fail(&mut self, args: &[&str]) -> Output {
        self.step(args, None, Expect::Fail)
    }

    /// Runs `etcdctl txn ARGS` with `script` on stdin; must succeed on etcd.
    fn txn(&mut self, args: &[&str], script: &str) -> Output {
        let mut full = vec!["txn"];
        full.extend_from_slice(args);
        self.step(&full, Some(script), Expect::Ok)
    }

    fn txn_fail(&mut self, args: &[&str], script: &str) -> Output {
        let mut full = vec!["txn"];
        full.extend_from_slice(args);
        self.step(&full, Some(script), Expect::Fail)
    }

    /// Runs one etcdctl command against both servers, records a mismatch of
    /// the normalized outputs, and returns etcd's raw output.
    fn step(&mut self, args: &[&str], stdin: Option<&str>, expect: Expect) -> Output {
        self.steps += 1;
        let command = describe(args, stdin);
        let (ref_args, cand_args) = (self.lease_args(args, true), self.lease_args(args, false));
        let want = self.reference.etcdctl_stdin(&as_strs(&ref_args), stdin);
        let got = self.candidate.etcdctl_stdin(&as_strs(&cand_args), stdin);
        if args.starts_with(&["lease", "grant"]) {
            self.learn_lease(&want.stdout, &got.stdout);
        }
        assert_eq!(
            want.success(),
            expect == Expect::Ok,
            "[{}] reference etcd did not behave as the test expects for `{command}` \
             (expected {expect:?}):\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
            self.test,
            want.status,
            want.stdout,
            want.stderr
        );
        if std::env::var_os(VERBOSE_ENV).is_some() {
            eprintln!(
                "[{}] step {}: {command}\n  status: {:?}\n  stdout:\n{}\n  stderr:\n{}",
                self.test,
                self.steps,
                want.code(),
                self.reference
                    .normalize(&self.mask_leases(&want.stdout, true)),
                self.reference
                    .normalize(&self.mask_leases(&want.stderr, true))
            );
        }
        let mut report = String::new();
        let want_code = format!("{:?}", want.code());
        let got_code = format!("{:?}", got.code());
        if want_code != got_code {
            report.push_str(&format!(
                "exit status: etcd {want_code}, candidate {got_code}\n"
            ));
        }
        for (stream, w, g) in [
            ("stdout", &want.stdout, &got.stdout),
            ("stderr", &want.stderr, &got.stderr),
        ] {
            let w = self.reference.normalize(&self.mask_leases(w, true));
            let g = self.candidate.normalize(&self.mask_leases(g, false));
            if w != g {
                report.push_str(&format!(
                    "{stream} (- etcd, + candidate):\n{}",
                    line_diff(&w, &g)
                ));
            }
        }
        if !report.is_empty() {
            self.mismatches.push(Mismatch {
                step: self.steps,
                command,
                report,
            });
        }
        want
    }

    /// `args` with every lease placeholder replaced by the reference's (or the candidate's) id.
    fn lease_args(&self, args: &[&str], reference: bool) -> Vec<String> {
        args.iter()
            .map(|a| {
                let mut a = a.to_string();
                for (ph, r, c) in &self.leases {
                    a = a.replace(ph.as_str(), if reference { r } else { c });
                }
                a
            })
            .collect()
    }

    /// Records the ids of `lease 694d… granted with TTL(…)` as the next `<LEASE_n>`.
    fn learn_lease(&mut self, want: &str, got: &str) {
        let id = |s: &str| {
            s.strip_prefix("lease ")
                .and_then(|rest| rest.split(' ').next())
                .map(str::to_string)
        };
        if let (Some(r), Some(c)) = (id(want), id(got)) {
            let ph = format!("<LEASE_{}>", self.leases.len() + 1);
            self.leases.push((ph, r, c));
        }
    }

    /// `s` with this server's lease ids (hex and decimal) replaced by their placeholders.
    fn mask_leases(&self, s: &str, reference: bool) -> String {
        let mut s = s.to_string();
        for (ph, r, c) in &self.leases {
            let hex = if reference { r } else { c };
            s = s.replace(hex.as_str(), ph);
            if let Ok(n) = i64::from_str_radix(hex, 16) {
                s = s.replace(&n.to_string(), ph);
            }
        }
        s
    }

    /// Panics with every recorded mismatch.
    fn finish(self) {
        if self.mismatches.is_empty() {
            return;
        }
        let mut msg = format!(
            "[{}] {} of {} etcdctl commands differ between etcd and {} ({}):\n",
            self.test,
            self.mismatches.len(),
            self.steps,
            self.candidate.kind().label(),
            self.candidate.name(),
        );
        for m in &self.mismatches {
            msg.push_str(&format!(
                "\n=== step {}: {}\n{}",
                m.step, m.command, m.report
            ));
        }
        panic!("{msg}");
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `etcdctl a b 'c d'` plus the stdin script, for reports.
fn describe(args: &[&str], stdin: Option<&str>) -> String {
    let mut s = String::from("etcdctl");
    for a in args {
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(a);
        }
    }
    if let Some(input) = stdin {
        s.push_str(" <<EOF\n");
        s.push_str(input);
        s.push_str("EOF");
    }
    s
}

/// Line diff via longest common subsequence: ` ` common, `-` only in `a`,
/// `+` only in `b`.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.split('\n').collect();
    let b: Vec<&str> = b.split('\n').collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn line_diff_marks_changed_lines() {
    assert_eq!(
        line_diff("a\nb\nc", "a\nx\nc\nd"),
        "  a\n- b\n+ x\n  c\n+ d\n"
    );
    assert_eq!(
        describe(&["put", "", "a b"], Some("x\n")),
        "etcdctl put '' 'a b' <<EOF\nx\nEOF"
    );
}

/// Puts and gets over several revisions: prefix, limit, keys-only,
/// print-value-only, JSON/fields output, --rev, ranges, --from-key, sorting.
#[test]
fn put_and_get() {
    let mut c = Compat::start("put_and_get");
    // Revisions 2..=14, chosen so that every sort target orders the /s/
    // keys differently from KEY and without ties: versions c=1 b=2 a=3 d=4,
    // creates b<a<c<d, mods c<b<a<d, values d("")<b<c<a.
    c.ok(&["put", "/s/b", "v3"]);
    c.ok(&["put", "/s/a", "v1"]);
    c.ok(&["put", "/s/c", "v2"]);
    c.ok(&["put", "/s/b", "v0"]);
    c.ok(&["put", "/s/a", "v9"]);
    c.ok(&["put", "/s/a", "v5", "--prev-kv"]);
    c.ok(&["put", "/t/x", "x", "-w", "json"]);
    c.ok(&["put", "zeta", "z"]);
    c.ok(&["put", "/s/d", "d1"]);
    c.ok(&["put", "/s/d", "d2"]);
    c.ok(&["put", "/s/d", "d3"]);
    c.ok(&["put", "/s/d", ""]);
    c.ok(&["put", "/t/x", "", "--prev-kv", "-w", "json"]);

    c.ok(&["get", "/s/a"]);
    c.ok(&["get", "/nokey"]);
    c.ok(&["get", "/nokey", "-w", "json"]);
    c.ok(&["get", "/s/a", "-w", "json"]);
    c.ok(&["get", "/s/a", "-w", "fields"]);
    c.ok(&["get", "/s/a", "--hex"]);
    c.ok(&["get", "/s/a", "--consistency=s"]);

    c.ok(&["get", "/s/", "--prefix"]);
    c.ok(&["get", "/s/", "--prefix", "-w", "json"]);
    c.ok(&["get", "/s/", "--prefix", "--limit", "2"]);
    c.ok(&["get", "/s/", "--prefix", "--limit", "2", "-w", "json"]);
    c.ok(&["get", "/s/", "--prefix", "--keys-only"]);
    c.ok(&["get", "/s/", "--prefix", "--keys-only", "-w", "json"]);
    c.ok(&["get", "/s/", "--prefix", "--print-value-only"]);
    c.ok(&["get", "", "--prefix", "--keys-only"]);
    c.ok(&["get", "/nope/", "--prefix", "-w", "json"]);

    // History.
    c.ok(&["get", "/s/a", "--rev", "2"]);
    c.ok(&["get", "/s/a", "--rev", "3"]);
    c.ok(&["get", "/s/a", "--rev", "6", "-w", "json"]);
    c.ok(&["get", "/s/a", "--rev", "0"]);
    c.ok(&["get", "/s/", "--prefix", "--rev", "4", "-w", "json"]);
    c.ok(&["get", "/s/", "--prefix", "--rev", "5", "--keys-only"]);

    // [key, end) ranges and --from-key.
    c.ok(&["get", "/s/a", "/s/c"]);
    c.ok(&["get", "/s/a", "/s/c", "-w", "json"]);
    c.ok(&["get", "/s/b", "/s/bb"]);
    c.ok(&["get", "/s/c", "/s/a"]);
    c.ok(&["get", "/s/b", "--from-key"]);
    c.ok(&["get", "/s/b", "--from-key", "--keys-only", "--limit", "3"]);
    c.ok(&["get", "", "--from-key", "--keys-only"]);
    c.ok(&["get", "/t/", "--from-key", "-w", "json"]);

    // Sorting.
    for target in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"] {
        for order in ["ASCEND", "DESCEND"] {
            c.ok(&[
                "get",
                "/s/",
                "--prefix",
                "--sort-by",
                target,
                "--order",
                order,
            ]);
        }
        c.ok(&["get", "/s/", "--prefix", "--sort-by", target, "--keys-only"]);
    }
    c.ok(&["get", "/s/", "--prefix", "--order", "DESCEND"]);
    c.ok(&["get", "/s/", "--prefix", "--order", "ASCEND", "--keys-only"]);
    c.ok(&[
        "get",
        "/s/",
        "--prefix",
        "--sort-by",
        "MODIFY",
        "--order",
        "DESCEND",
        "--limit",
        "2",
    ]);
    c.ok(&[
        "get",
        "/s/",
        "--prefix",
        "--sort-by",
        "VALUE",
        "--limit",
        "2",
        "-w",
        "json",
    ]);
    c.ok(&[
        "get", "/s/", "--prefix", "--order", "DESCEND", "--limit", "1", "-w", "json",
    ]);
    c.ok(&[
        "get",
        "",
        "--from-key",
        "--sort-by",
        "CREATE",
        "--order",
        "DESCEND",
        "--keys-only",
    ]);

    // Errors.
    c.fail(&["get", "/s/a", "--rev", "1000"]);
    c.fail(&["get", "/s/", "--prefix", "--rev", "15", "-w", "json"]);
    c.fail(&["put", "", "x"]);
    c.fail(&["put", "--ignore-value", "/nokey"]);
    c.fail(&["get", "/s/", "--prefix", "--sort-by", "SIZE"]);
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.finish();
}

/// Deletes: single key, nothing matched, --prefix, --prev-kv, --from-key,
/// [key, end) ranges; revisions observed via JSON headers and --rev.
#[test]
fn delete() {
    let mut c = Compat::start("delete");
    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "4"),
        ("e", "5"),
        ("/p/1", "x"),
        ("/p/2", "y"),
        ("/p/3", "z"),
        ("/q/1", "w"),
        ("x1", "9"),
        ("x2", "8"),
        ("y1", "7"),
    ] {
        c.ok(&["put", k, v]);
    }
    c.ok(&["get", "", "--prefix", "-w", "json"]);

    // Nothing matched: prints 0 and does not bump the revision.
    c.ok(&["del", "nothing"]);
    c.ok(&["del", "nothing", "-w", "json"]);
    c.ok(&["del", "/nope/", "--prefix"]);
    c.ok(&["del", "/nope/", "--prefix", "--prev-kv"]);
    c.ok(&["get", "a", "-w", "json"]);

    c.ok(&["del", "a"]);
    c.ok(&["del", "a"]);
    c.ok(&["del", "b", "--prev-kv"]);
    c.ok(&["del", "c", "--prev-kv", "-w", "json"]);
    c.ok(&["del", "/p/", "--prefix", "--prev-kv"]);
    c.ok(&["get", "/p/", "--prefix"]);
    c.ok(&["del", "/q/", "--prefix", "-w", "json"]);
    c.ok(&["put", "c", "again"]);
    c.ok(&["get", "c", "-w", "json"]);
    c.ok(&["del", "c", "e"]);
    c.ok(&["get", "", "--prefix", "--keys-only"]);
    c.ok(&["del", "x", "--from-key", "--prev-kv"]);
    c.ok(&["del", "x", "--from-key"]);
    c.ok(&["get", "", "--prefix", "-w", "json"]);

    // Deleted keys are still visible in history.
    c.ok(&["get", "", "--prefix", "--rev", "13", "--keys-only"]);
    c.ok(&["get", "a", "--rev", "14", "-w", "json"]);
    c.ok(&["get", "b", "--rev", "15"]);
    c.ok(&["del", "e", "--prev-kv"]);
    c.ok(&["del", "", "--prefix"]);
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.fail(&["del", ""]);
    c.finish();
}

/// `txn -i` with compares on value, version, create and mod revision;
/// success and failure branches with put/get/del operations.
#[test]
fn txn() {
    let mut c = Compat::start("txn");
    c.ok(&["put", "k1", "v1"]); // rev 2
    c.ok(&["put", "k2", "v2"]); // rev 3
    c.ok(&["put", "k1", "v1b"]); // rev 4
    c.ok(&["put", "/p/a", "1"]); // rev 5
    c.ok(&["put", "/p/b", "2"]); // rev 6

    // Value compare, success branch with all three op kinds.
    c.txn(
        &["-i"],
        "value(\"k1\") = \"v1b\"\n\nput k3 v3\nget k1\ndel k2\n\nput never v\n\n",
    );
    // Value compare, failure branch.
    c.txn(
        &["-i"],
        "value(\"k1\") = \"nope\"\n\nput never v\n\nget k1\nput k4 v4\n\n",
    );
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    // version / create / mod compares with = > < !=.
    c.txn(&["-i"], "version(\"k1\") = \"2\"\n\nget k1\n\nget k2\n\n");
    c.txn(&["-i"], "version(\"k1\") > \"2\"\n\nget k1\n\nget k2\n\n");
    c.txn(
        &["-i"],
        "create(\"k1\") = \"2\"\nmod(\"k1\") = \"4\"\n\nput k1 v1c\n\n\n",
    );
    c.txn(
        &["-i"],
        "mod(\"k1\") < \"5\"\n\nput k1 v1d\n\nget k1 --rev 4\n\n",
    );
    c.txn(
        &["-i"],
        "create(\"k3\") > \"6\"\nvalue(\"k3\") != \"v3\"\n\n\nget k3\n\n",
    );
    c.txn(
        &["-i"],
        "value(\"k1\") > \"v1\"\nvalue(\"k1\") < \"v2\"\n\nget k1\n\n\n",
    );
    // A missing key has version 0, create 0 and mod 0.
    c.txn(
        &["-i"],
        "version(\"missing\") = \"0\"\n\nput created 1\n\n\n",
    );
    c.txn(
        &["-i"],
        "create(\"missing\") = \"0\"\nmod(\"missing\") = \"0\"\n\nget missing\n\n\n",
    );
    c.txn(&["-i"], "value(\"missing\") = \"\"\n\nget k1\n\nget k3\n\n");
    // No compares: success branch.
    c.txn(&["-i"], "\nput k5 v5\nget k5\n\n\n");
    // Ops with flags.
    c.txn(
        &["-i"],
        "value(\"k3\") = \"v3\"\n\nget /p/ --prefix\nput k6 v6 --prev-kv\ndel /p/ --prefix --prev-kv\n\n\n",
    );
    c.txn(
        &["-i", "-w", "json"],
        "value(\"k1\") = \"v1c\"\n\nget k1\nput k7 v7\n\ndel k1\nget k5\n\n",
    );
    c.txn(
        &["-i", "-w", "json"],
        "mod(\"k1\") > \"1\"\n\nget k1\ndel k6\nput k8 v8\n\n\n",
    );
    // Without -i the same format is read from stdin, without prompts.
    c.txn(&[], "value(\"k5\") = \"v5\"\n\nput k9 v9\n\nput k9 x\n\n");
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    // Errors: duplicate keys in one branch, malformed compare.
    c.txn_fail(&["-i"], "\nput dup 1\nput dup 2\n\n\n");
    c.txn_fail(&["-i"], "bogus(\"k1\") = \"1\"\n\n\n\n");
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.finish();
}

/// `compaction N`, reads below, at and above the compacted revision, and
/// compaction errors.
#[test]
fn compaction() {
    let mut c = Compat::start("compaction");
    c.ok(&["put", "k", "v1"]); // rev 2
    c.ok(&["put", "k", "v2"]); // rev 3
    c.ok(&["put", "k", "v3"]); // rev 4
    c.ok(&["put", "j", "x"]); // rev 5
    c.ok(&["del", "j"]); // rev 6
    c.ok(&["put", "k", "v4"]); // rev 7
    c.ok(&["put", "m", "y"]); // rev 8

    c.ok(&["compaction", "4"]);
    c.fail(&["get", "k", "--rev", "3"]);
    c.fail(&["get", "k", "--rev", "1", "-w", "json"]);
    c.ok(&["get", "k", "--rev", "4"]);
    c.ok(&["get", "k", "--rev", "5", "-w", "json"]);
    c.ok(&["get", "j", "--rev", "5"]);
    c.ok(&["get", "j", "--rev", "6"]);
    c.ok(&["get", "", "--prefix", "--rev", "4", "-w", "json"]);
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.fail(&["compaction", "3"]);
    c.fail(&["compaction", "4"]);
    c.fail(&["compaction", "100"]);
    c.ok(&["compaction", "--physical", "6"]);
    c.fail(&["get", "k", "--rev", "5"]);
    c.ok(&["get", "k", "--rev", "6"]);
    c.ok(&["put", "k", "v5"]); // rev 9
    c.ok(&["compaction", "9"]);
    c.fail(&["get", "k", "--rev", "8"]);
    c.ok(&["get", "k", "-w", "json"]);
    c.fail(&["get", "k", "--rev", "10"]);
    c.fail(&["compaction", "10"]);
    c.finish();
}

/// endpoint status / health and member list in table and JSON form.
#[test]
fn cluster_info() {
    let mut c = Compat::start("cluster_info");
    c.ok(&["put", "a", "1"]);
    c.ok(&["endpoint", "status", "-w", "table"]);
    c.ok(&["endpoint", "status", "-w", "json"]);
    c.ok(&["member", "list", "-w", "table"]);
    c.ok(&["member", "list", "-w", "json"]);
    c.ok(&["endpoint", "health"]);
    c.ok(&["endpoint", "health", "-w", "table"]);
    c.ok(&["endpoint", "health", "-w", "json"]);
    c.ok(&["get", "a", "-w", "json"]);
    c.finish();
}

/// Data and revisions survive a graceful restart and a SIGKILL; the raft
/// term moves on.
#[test]
fn restart_and_kill9() {
    let mut c = Compat::start("restart_and_kill9");
    c.ok(&["put", "a", "1"]);
    c.ok(&["put", "a", "2"]);
    c.ok(&["put", "b", "3"]);
    c.reference.restart();
    c.candidate.restart();
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.ok(&["get", "a", "--rev", "2"]);
    c.ok(&["put", "c", "4"]);
    c.reference.kill9();
    c.candidate.kill9();
    c.reference.start_again();
    c.candidate.start_again();
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.ok(&["endpoint", "status", "-w", "table"]);
    c.ok(&["put", "d", "5", "-w", "json"]);
    c.finish();
}

/// lease grant / list / timetolive [--keys] / keep-alive --once / revoke and put --lease. Lease ids
/// differ per server: `<LEASE_n>` stands for the n-th granted one (see `Compat::leases`).
#[test]
fn leases() {
    let mut c = Compat::start("leases");
    c.ok(&["lease", "grant", "600"]);
    c.ok(&["lease", "grant", "300"]);
    c.ok(&["lease", "list"]);
    c.ok(&["put", "--lease=<LEASE_1>", "a", "1"]);
    c.ok(&["put", "--lease=<LEASE_2>", "c", "3"]);
    c.fail(&["put", "--lease=777", "x", "1"]);
    c.ok(&["put", "--ignore-lease", "a", "10"]);
    c.ok(&["get", "a", "-w", "json"]);
    c.ok(&["lease", "timetolive", "<LEASE_1>"]);
    c.ok(&["lease", "timetolive", "<LEASE_1>", "--keys"]);
    c.ok(&["lease", "timetolive", "<LEASE_2>", "--keys", "-w", "json"]);
    c.ok(&["lease", "timetolive", "1234"]);
    c.ok(&["lease", "timetolive", "1234", "-w", "json"]);
    c.ok(&["lease", "keep-alive", "--once", "<LEASE_1>"]);
    c.fail(&["lease", "keep-alive", "--once", "1234"]);
    c.ok(&["put", "--lease=<LEASE_1>", "b", "2"]);
    c.ok(&["lease", "revoke", "<LEASE_1>"]);
    c.fail(&["lease", "revoke", "<LEASE_1>"]);
    c.ok(&["get", "", "--prefix", "-w", "json"]);
    c.ok(&["lease", "list"]);
    c.ok(&["lease", "timetolive", "<LEASE_1>"]);
    c.finish();
}

/// etcdctl watch runs until it is killed: started as a child, it is read until `until` shows up
/// in its output (or 10 s pass), given 300 ms more for anything that should not come, then
/// killed. `live` commands run (against the same server) right after the start: callers pass a
/// `--rev` at or below their first revision, so no event depends on when the watch got created.
fn watch_output(server: &Server, args: &[&str], live: &[&[&str]], until: &str) -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let mut cmd = Command::new(support::etcdctl_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("ETCDCTL_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .arg("watch")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn etcdctl watch");
    let out = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let out = out.clone();
        let mut pipe = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    if !live.is_empty() {
        for c in live {
            let o = server.etcdctl(c);
            assert!(o.success(), "etcdctl {c:?}: {}", o.stderr);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !String::from_utf8_lossy(&out.lock().unwrap()).contains(until)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    String::from_utf8_lossy(&out.lock().unwrap()).into_owned()
}

impl Compat {
    /// `etcdctl watch ARGS` on both servers (see [`watch_output`]); etcd's output must contain
    /// `until`, and the normalized outputs must be equal.
    fn watch(&mut self, args: &[&str], live: &[&[&str]], until: &str) {
        self.steps += 1;
        let command = describe(&[&["watch"], args].concat(), None);
        let (want, got) = std::thread::scope(|s| {
            let w = s.spawn(|| watch_output(&self.reference, args, live, until));
            let g = s.spawn(|| watch_output(&self.candidate, args, live, until));
            (w.join().unwrap(), g.join().unwrap())
        });
        assert!(
            want.contains(until),
            "[{}] reference etcd's `{command}` did not print {until:?}:\n{want}",
            self.test
        );
        let (w, g) = (
            self.reference.normalize(&want),
            self.candidate.normalize(&got),
        );
        if w != g {
            self.mismatches.push(Mismatch {
                step: self.steps,
                command,
                report: format!("stdout (- etcd, + candidate):\n{}", line_diff(&w, &g)),
            });
        }
    }
}

#[test]
fn watch() {
    let mut c = Compat::start("watch");
    c.ok(&["put", "w/a", "1"]); // rev 2
    c.ok(&["put", "w/b", "2"]); // rev 3
    c.ok(&["put", "w/a", "3"]); // rev 4
    c.ok(&["del", "w/b"]); // rev 5
    c.ok(&["put", "x", "4"]); // rev 6
    c.ok(&["put", "w/c", "end"]); // rev 7
    // History (--rev) of one key, a prefix, a range, with and without prev_kv.
    c.watch(&["w/a", "--rev", "1"], &[], "3");
    c.watch(&["w/", "--prefix", "--rev", "2"], &[], "end");
    c.watch(&["w/", "--prefix", "--rev", "3", "--prev-kv"], &[], "end");
    c.watch(&["w/a", "w/c", "--rev", "1"], &[], "w/b");
    c.watch(
        &["w/", "--prefix", "--rev", "4", "-w", "json"],
        &[],
        "Events",
    );
    // Live events (from revision 8, the first of them, however fast the watch starts).
    c.watch(
        &["live/", "--prefix", "--prev-kv", "--rev", "8"],
        &[
            &["put", "live/1", "a"],
            &["put", "live/1", "b"],
            &["del", "live/1"],
            &["put", "live/2", "last"],
        ],
        "last",
    );
    c.finish();
}
