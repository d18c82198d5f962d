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
        self.compare_streams(
            command,
            report,
            [(&want.stdout, &got.stdout), (&want.stderr, &got.stderr)],
            false,
        );
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

    /// Normalizes (stdout, stderr) of both servers, adds any difference to `report` (with
    /// repeated lines collapsed in stdout when `dedup`), and records a mismatch if there is one.
    fn compare_streams(
        &mut self,
        command: String,
        mut report: String,
        streams: [(&String, &String); 2],
        dedup: bool,
    ) {
        for (stream, (w, g)) in ["stdout", "stderr"].into_iter().zip(streams) {
            let mut w = self.reference.normalize(&self.mask_leases(w, true));
            let mut g = self.candidate.normalize(&self.mask_leases(g, false));
            if dedup && stream == "stdout" {
                (w, g) = (dedup_lines(&w), dedup_lines(&g));
            }
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

/// One step of a [`session_output`] run.
#[derive(Clone, Copy, Debug)]
enum Act<'a> {
    /// Writes this line (a newline is added) to the streaming command's stdin.
    Line(&'a str),
    /// Runs another etcdctl command against the same server; it must succeed.
    Ctl(&'a [&'a str]),
    /// Waits (at most [`SESSION_WAIT`]) until stdout shows this text after the previous `Out`
    /// match: each `Out` consumes one occurrence, so `Out(x)` twice waits for two.
    Out(&'a str),
    /// Like `Out`, on stderr.
    Err(&'a str),
    /// Waits (at most [`SESSION_WAIT`]) until the command exits by itself.
    Exit,
}

/// Bound of every wait of a session.
const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a streaming etcdctl command printed and how it ended.
struct Session {
    stdout: String,
    stderr: String,
    /// `Some(code)` if it exited by itself (an `Act::Exit`, or at the end of stdin), `None` if
    /// it had to be killed.
    code: Option<Option<i32>>,
    /// The `Out` / `Err` / `Exit` steps that timed out.
    missed: Vec<String>,
}

/// Runs `etcdctl ARGS` against `server` as a child with stdin piped and plays `acts` in order:
/// stdin lines, other etcdctl commands, and bounded waits for output. No event depends on timing
/// as long as every watch names a `--rev` at or below its first event and every wait names output
/// that must come. After the last act it gets [`QUIET`] more for anything that should not come,
/// then stdin is closed; a command that reads stdin gets 2 s to exit, then it (or at once any
/// other command) is killed.
fn session_output(server: &Server, args: &[String], acts: &[Act<'_>]) -> Session {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    /// The "nothing more" window after the last act.
    const QUIET: Duration = Duration::from_millis(300);

    let mut cmd = Command::new(support::etcdctl_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("ETCDCTL_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn etcdctl");
    let mut stdin = child.stdin.take();
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let t = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, t)
    };
    let (out, out_reader) = collect(Box::new(child.stdout.take().expect("stdout piped")));
    let (err, err_reader) = collect(Box::new(child.stderr.take().expect("stderr piped")));
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();

    let mut missed = Vec::new();
    let mut code = None;
    // Where the next `Out` / `Err` match may start.
    let (mut out_pos, mut err_pos) = (0, 0);
    for act in acts {
        match *act {
            Act::Line(l) => {
                if let Some(pipe) = stdin.as_mut() {
                    let _ = pipe.write_all(format!("{l}\n").as_bytes());
                    let _ = pipe.flush();
                }
            }
            Act::Ctl(a) => {
                let o = server.etcdctl(a);
                assert!(o.success(), "etcdctl {a:?}: {}", o.stderr);
            }
            Act::Out(m) | Act::Err(m) => {
                let (buf, pos) = match act {
                    Act::Out(_) => (&out, &mut out_pos),
                    _ => (&err, &mut err_pos),
                };
                let deadline = Instant::now() + SESSION_WAIT;
                loop {
                    let s = text(buf);
                    if let Some(i) = s.get(*pos..).and_then(|rest| rest.find(m)) {
                        *pos += i + m.len();
                        break;
                    }
                    if Instant::now() >= deadline {
                        missed.push(format!("{act:?}"));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Act::Exit => {
                let deadline = Instant::now() + SESSION_WAIT;
                loop {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        code = Some(status.code());
                        break;
                    }
                    if Instant::now() >= deadline {
                        missed.push("Exit".to_string());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    if code.is_none() {
        std::thread::sleep(QUIET);
        drop(stdin.take());
        // Only a command that reads its stdin (`watch -i`) is expected to end with it.
        let reads_stdin = acts.iter().any(|a| matches!(a, Act::Line(_)));
        let deadline = Instant::now() + Duration::from_secs(if reads_stdin { 2 } else { 0 });
        while code.is_none() && Instant::now() < deadline {
            match child.try_wait().expect("try_wait") {
                Some(status) => code = Some(status.code()),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if code.is_none() {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
    let _ = out_reader.join();
    let _ = err_reader.join();
    Session {
        stdout: text(&out),
        stderr: text(&err),
        code,
        missed,
    }
}

/// Collapses runs of identical consecutive lines into one: how many `keepalived` lines a
/// keep-alive prints in a time window is a matter of timing (the waits check that enough came).
fn dedup_lines(s: &str) -> String {
    let mut lines: Vec<&str> = s.split('\n').collect();
    lines.dedup();
    lines.join("\n")
}

impl Compat {
    /// `etcdctl ARGS` as a streaming session (see [`session_output`]) on both servers at once,
    /// lease placeholders replaced in the arguments, stdin lines and other commands; every wait
    /// must succeed on etcd, and etcd's and the candidate's normalized stdout, stderr and ending
    /// must be equal. `dedup` compares stdout with repeated lines collapsed ([`dedup_lines`]).
    fn session(&mut self, args: &[&str], acts: &[Act<'_>], dedup: bool) {
        self.steps += 1;
        let mut command = describe(args, None);
        for a in acts {
            command.push_str(&format!("\n    {a:?}"));
        }
        let per_server = |reference: bool| {
            let args = self.lease_args(args, reference);
            let lines: Vec<String> = acts
                .iter()
                .map(|a| match a {
                    Act::Line(l) => self.lease_args(&[l], reference).remove(0),
                    _ => String::new(),
                })
                .collect();
            let ctls: Vec<Vec<String>> = acts
                .iter()
                .map(|a| match a {
                    Act::Ctl(c) => self.lease_args(c, reference),
                    _ => Vec::new(),
                })
                .collect();
            (args, lines, ctls)
        };
        let run =
            |server: &Server, (args, lines, ctls): (Vec<String>, Vec<String>, Vec<Vec<String>>)| {
                let ctl_strs: Vec<Vec<&str>> = ctls.iter().map(|c| as_strs(c)).collect();
                let acts: Vec<Act<'_>> = acts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| match a {
                        Act::Line(_) => Act::Line(&lines[i]),
                        Act::Ctl(_) => Act::Ctl(&ctl_strs[i]),
                        other => *other,
                    })
                    .collect();
                session_output(server, &args, &acts)
            };
        let (ref_in, cand_in) = (per_server(true), per_server(false));
        let (want, got) = std::thread::scope(|s| {
            let w = s.spawn(|| run(&self.reference, ref_in));
            let g = s.spawn(|| run(&self.candidate, cand_in));
            (w.join().unwrap(), g.join().unwrap())
        });
        assert!(
            want.missed.is_empty(),
            "[{}] reference etcd's `{command}` missed {:?}:\nstdout:\n{}\nstderr:\n{}",
            self.test,
            want.missed,
            want.stdout,
            want.stderr
        );
        if std::env::var_os(VERBOSE_ENV).is_some() {
            eprintln!(
                "[{}] step {}: {command}\n  ending: {:?}\n  stdout:\n{}\n  stderr:\n{}",
                self.test, self.steps, want.code, want.stdout, want.stderr
            );
        }
        let mut report = String::new();
        if !got.missed.is_empty() {
            report.push_str(&format!("candidate missed {:?}\n", got.missed));
        }
        if want.code != got.code {
            report.push_str(&format!(
                "ending (None: killed): etcd {:?}, candidate {:?}\n",
                want.code, got.code
            ));
        }
        self.compare_streams(
            command,
            report,
            [(&want.stdout, &got.stdout), (&want.stderr, &got.stderr)],
            dedup,
        );
    }
}

#[test]
fn dedup_lines_collapses_runs() {
    assert_eq!(dedup_lines("a\na\nb\na\n\n"), "a\nb\na\n");
}

/// `etcdctl watch -i`: watches (key, prefix, range, --prev-kv, history by --rev) and `progress`
/// requests on stdin, writes by other etcdctl commands while it runs, the interactive mode's
/// input errors, and a watch from a compacted revision. Every watch starts at a revision at or
/// below its first event, each write matches one watcher, and every next step waits for the
/// previous one's output, so the output's order does not depend on timing (etcdctl prints each
/// watcher's responses from its own goroutine).
#[test]
fn watch_interactive() {
    use Act::{Ctl, Err, Line, Out};
    let mut c = Compat::start("watch_interactive");
    c.ok(&["put", "one", "o1"]); // rev 2
    c.ok(&["put", "p/a", "pa1"]); // rev 3
    c.ok(&["put", "one", "o2"]); // rev 4
    c.ok(&["put", "p/b", "pb1"]); // rev 5
    c.ok(&["del", "p/a"]); // rev 6
    c.ok(&["put", "r/b", "rb1"]); // rev 7
    c.ok(&["put", "zz", "z1"]); // rev 8
    c.session(
        &["watch", "-i"],
        &[
            // History: one key from rev 2, a prefix with prev_kv from 1, a range from 1.
            Line("watch --rev 2 one"),
            Out("o2"),
            Line("watch --prefix --prev-kv --rev 1 p/"),
            Out("DELETE"),
            Out("pa1"),
            Line("watch r/a r/c --rev 1"),
            Out("rb1"),
            // Flags after the key; a watch that only sees future events (rev 9 is the next).
            Line("watch live --rev 9 --prev-kv"),
            // Live writes, each seen by one watcher.
            Ctl(&["put", "live", "l1"]), // rev 9
            Out("l1"),
            Ctl(&["put", "live", "l2"]), // rev 10
            Out("l2"),
            // Only now is every watcher known to be created: etcdctl sends a progress request
            // without waiting for pending creates, and broadcasts the answer to created ones.
            Line("progress"),
            Out("progress notify: 10"),
            Out("progress notify: 10"),
            Out("progress notify: 10"),
            Out("progress notify: 10"),
            Ctl(&["put", "p/c", "pc1"]), // rev 11
            Out("pc1"),
            Ctl(&["del", "p/", "--prefix"]), // rev 12: p/b and p/c
            Out("DELETE"),
            Out("DELETE"),
            Out("pc1"),
            Ctl(&["put", "r/bb", "rbb"]), // rev 13
            Out("rbb"),
            Ctl(&["put", "r/c", "outside"]), // rev 14: no watcher
            Ctl(&["del", "live"]),           // rev 15
            Out("DELETE"),
            Out("live"),
            Out("l2"),
            Line("progress"),
            Out("progress notify: 15"),
            Out("progress notify: 15"),
            Out("progress notify: 15"),
            Out("progress notify: 15"),
            // Input errors (client side; etcdctl goes on).
            Line("cancel 0"),
            Err("only support watch"),
            Line(""),
            Err("watch and progress supported"),
            Line("watch"),
            Err("key is not provided"),
            Line("watch p/ q/ --prefix"),
            Err("mutually exclusive"),
            // A watch from a compacted revision is canceled; the others go on.
            Ctl(&["compaction", "10"]),
            Line("watch --rev 3 one"),
            Err("watch was canceled"),
            Ctl(&["put", "one", "o3"]), // rev 16
            Out("o3"),
            Line("progress"),
            Out("progress notify: 16"),
            Out("progress notify: 16"),
            Out("progress notify: 16"),
            Out("progress notify: 16"),
        ],
        false,
    );
    // A watch from the future only reports once its revision is reached; the stdin is closed
    // right after the last event (etcdctl exits, status 3).
    c.session(
        &["watch", "-i"],
        &[
            Line("watch --rev 18 f/ --prefix"),
            Ctl(&["put", "f/1", "f1"]), // rev 17
            Ctl(&["put", "f/2", "f2"]), // rev 18
            Out("f2"),
            Line("watch --rev 17 f/1"),
            Out("f1"),
        ],
        false,
    );
    c.finish();
}

/// `etcdctl lease keep-alive` as a stream: a few renewals (in simple and JSON output), a lease
/// revoked while it runs (etcdctl notices on its next renewal and exits), and an unknown lease
/// (exits at once). With TTL 3 etcdctl renews every second.
#[test]
fn lease_keep_alive_stream() {
    use Act::{Ctl, Exit, Out};
    let mut c = Compat::start("lease_keep_alive_stream");
    c.ok(&["lease", "grant", "3"]);
    let renewed = Out("keepalived with TTL(3)");
    c.session(
        &["lease", "keep-alive", "<LEASE_1>"],
        &[renewed, renewed, renewed],
        true,
    );
    c.session(
        &["lease", "keep-alive", "-w", "json", "<LEASE_1>"],
        &[Out("\"TTL\":3"), Out("\"TTL\":3"), Out("\"TTL\":3")],
        true,
    );
    // Granted only now: nothing renews it before its session.
    c.ok(&["lease", "grant", "3"]);
    c.ok(&["put", "--lease=<LEASE_2>", "k", "v"]);
    c.session(
        &["lease", "keep-alive", "<LEASE_2>"],
        &[
            renewed,
            Ctl(&["lease", "revoke", "<LEASE_2>"]),
            Out("expired or revoked."),
            Exit,
        ],
        true,
    );
    c.ok(&["get", "k"]);
    c.session(
        &["lease", "keep-alive", "1234"],
        &[Out("expired or revoked."), Exit],
        false,
    );
    c.session(
        &["lease", "keep-alive", "-w", "json", "1234"],
        &[Exit],
        false,
    );
    c.session(&["lease", "keep-alive", "<LEASE_2>"], &[Exit], false);
    c.finish();
}
