//! Issue 14: `--enable-pprof`. etcd serves Go's `net/http/pprof` under `/debug/pprof/` on its
//! client URLs; retcd serves the CPU and heap profiles in Go's format. Both are fetched with curl
//! and read with Go's own `go tool pprof` (Debian: golang-go), against real etcd and retcd.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Kind, Server};

/// curl's view of one answer: status, the headers this test reads, the body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl -s -D headers -o body URL`.
fn curl(url: &str) -> Answer {
    let dir = tempfile::tempdir().expect("tempdir");
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .arg(url)
        .output()
        .expect("curl (Debian: curl)");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let head = std::fs::read_to_string(&head).expect("headers");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// Go's `go` command (Debian's golang-go puts it in PATH; its GOROOT has it too).
fn go() -> PathBuf {
    ["/usr/bin/go", "/usr/lib/go/bin/go"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("go (Debian: golang-go; bash .ci/setup installs it)")
}

/// `go tool pprof -top [-sample_index=…] FILE`: its report, or the test fails with its error.
fn pprof_top(file: &Path, sample_index: Option<&str>) -> String {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(go());
    cmd.args(["tool", "pprof", "-top"]);
    if let Some(i) = sample_index {
        cmd.arg(format!("-sample_index={i}"));
    }
    let out = cmd
        .arg(file)
        .env("HOME", home.path())
        .env("PPROF_TMPDIR", home.path())
        .output()
        .expect("go tool pprof");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {file:?}: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

fn save(a: &Answer, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, &a.body).expect("write profile");
    p
}

/// Puts `n` keys through etcdctl (load for the CPU profile to see).
fn put_keys(s: &Server, n: usize) {
    for i in 0..n {
        let out = s.etcdctl(&["put", &format!("k{i}"), "v"]);
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
fn profiles_are_read_by_go_tool_pprof_on_etcd_and_retcd() {
    let etcd = Server::start_in_tempdir_with_args(Kind::Etcd, &["--enable-pprof"]);
    // A dense heap sample (one per ~4 KiB allocated instead of 512 KiB): at Go's rate a short
    // run may hold no sampled block alive, and the heap profile would have nothing to name.
    let retcd = Server::start_in_tempdir_with_env(
        Kind::Retcd,
        &["--enable-pprof"],
        &[("RETCD_PPROF_HEAP_SAMPLE_BYTES", "4096")],
    );
    for s in [&etcd, &retcd] {
        let kind = s.kind();
        let base = format!("{}/debug/pprof", s.client_url());
        let dir = tempfile::tempdir().expect("tempdir");

        // The index, and ServeMux's redirect to it.
        let index = curl(&format!("{base}/"));
        assert_eq!(index.status, 200, "{kind:?}");
        assert_eq!(
            index.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{kind:?}"
        );
        assert!(index.text().contains("/debug/pprof/"), "{kind:?}");
        let redirect = curl(&base);
        assert_eq!(redirect.status, 301, "{kind:?}");
        assert_eq!(redirect.header("location"), Some("/debug/pprof/"));

        // The command line, NUL-separated.
        let cmdline = curl(&format!("{base}/cmdline"));
        assert_eq!(cmdline.status, 200, "{kind:?}");
        assert_eq!(
            cmdline.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(cmdline.header("x-content-type-options"), Some("nosniff"));
        let text = cmdline.text();
        let args: Vec<&str> = text.split('\0').collect();
        assert!(args.contains(&"--enable-pprof"), "{kind:?}: {args:?}");

        // A profile retcd does not have, and one nobody has: Go's answer for an unknown one.
        let unknown = curl(&format!("{base}/nosuch"));
        assert_eq!(unknown.status, 404, "{kind:?}");
        assert_eq!(unknown.text(), "Unknown profile\n", "{kind:?}");
        assert_eq!(unknown.header("x-go-pprof"), Some("1"), "{kind:?}");

        // A CPU profile under load.
        let (cpu, ()) = std::thread::scope(|t| {
            let profile = t.spawn(|| curl(&format!("{base}/profile?seconds=2")));
            put_keys(s, 20);
            (profile.join().expect("profile"), ())
        });
        assert_eq!(cpu.status, 200, "{kind:?}: {}", cpu.text());
        assert_eq!(cpu.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            cpu.header("content-disposition"),
            Some("attachment; filename=\"profile\"")
        );
        let top = pprof_top(&save(&cpu, dir.path(), "cpu.pb.gz"), None);
        assert!(top.contains("Type: cpu"), "{kind:?}: {top}");
        assert!(top.contains("Duration: 2"), "{kind:?}: {top}");

        // Two at once: the second is refused with Go's words.
        let (a, b) = std::thread::scope(|t| {
            let a = t.spawn(|| curl(&format!("{base}/profile?seconds=3")));
            let b = t.spawn(|| curl(&format!("{base}/profile?seconds=3")));
            (a.join().expect("a"), b.join().expect("b"))
        });
        let (ok, refused) = if a.status == 200 { (a, b) } else { (b, a) };
        assert_eq!((ok.status, refused.status), (200, 500), "{kind:?}");
        assert_eq!(
            refused.text(),
            "Could not enable CPU profiling: cpu profiling already in use\n",
            "{kind:?}"
        );
        assert_eq!(refused.header("x-go-pprof"), Some("1"), "{kind:?}");

        // The heap profile, and its text form.
        let heap = curl(&format!("{base}/heap"));
        assert_eq!(heap.status, 200, "{kind:?}");
        assert_eq!(
            heap.header("content-disposition"),
            Some("attachment; filename=\"heap\"")
        );
        let top = pprof_top(&save(&heap, dir.path(), "heap.pb.gz"), Some("inuse_space"));
        assert!(top.contains("Type: inuse_space"), "{kind:?}: {top}");
        let text = curl(&format!("{base}/heap?debug=1"));
        assert_eq!(text.status, 200, "{kind:?}");
        assert!(text.text().starts_with("heap profile: "), "{kind:?}");

        if kind == Kind::Retcd {
            // retcd's profiles name its own functions, from the binary's symbols.
            let top = pprof_top(&save(&cpu, dir.path(), "cpu.pb.gz"), None);
            assert!(top.contains("File: retcd"), "{top}");
            let traces = Command::new(go())
                .args(["tool", "pprof", "-traces"])
                .arg(dir.path().join("cpu.pb.gz"))
                .output()
                .expect("go tool pprof -traces");
            let traces = String::from_utf8_lossy(&traces.stdout);
            assert!(traces.contains("thread:  retcd-core-"), "{traces}");
            assert!(traces.contains("retcd_"), "{traces}");
            let heap = text.text();
            assert!(
                heap.contains("\tretcd_") || heap.contains("\tglommio::"),
                "{heap}"
            );
            assert!(heap.contains("# VmRSS: "), "{heap}");
            // The text form is Go's legacy heap profile, which pprof reads too.
            let top = pprof_top(&save(&text, dir.path(), "heap.txt"), None);
            assert!(top.contains("Type: space"), "{top}");
        }
    }
}

#[test]
fn pprof_is_off_by_default() {
    let (etcd, retcd) = support::start_both(&[]);
    for s in [&etcd, &retcd] {
        for path in ["/debug/pprof/", "/debug/pprof/profile?seconds=1"] {
            let a = curl(&format!("{}{path}", s.client_url()));
            assert_eq!(
                (a.status, a.text().as_str()),
                (404, "404 page not found\n"),
                "{:?} {path}",
                s.kind()
            );
        }
    }
}
