//! The member's log as etcd's tooling reads it, against etcd: zap's JSON keys in zap's order on
//! every line, the lifecycle lines in etcd's words and order, several --log-outputs at once, and
//! the systemd/journal output (journald's native protocol, on a socket of the test's).

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::{Kind, Server};

/// Each line's JSON object, checked to open with zap's keys in zap's order.
fn zap_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            assert!(l.starts_with("{\"level\":\""), "{l}");
            let at = |k: &str| l.find(k).unwrap_or_else(|| panic!("{k} in {l}"));
            let (ts, caller, msg) = (at(",\"ts\":\""), at(",\"caller\":\""), at(",\"msg\":\""));
            assert!(ts < caller && caller < msg, "{l}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .collect()
}

/// Where the first line whose message starts with `msg` is.
fn position(lines: &[serde_json::Value], msg: &str) -> Option<usize> {
    lines
        .iter()
        .position(|l| l["msg"].as_str().is_some_and(|m| m.starts_with(msg)))
}

#[test]
fn logs_read_like_etcds_on_several_outputs() {
    for kind in [Kind::Etcd, Kind::Retcd] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("member.log");
        let outputs = format!("--log-outputs=stderr,{}", file.display());
        let server =
            Server::start_in_tempdir_with_args(kind, &["--log-level=info", outputs.as_str()]);
        let text = std::fs::read_to_string(&file).expect("the log file");
        let lines = zap_lines(&text);
        assert!(lines.len() > 5, "{kind:?}: {text}");
        for l in &lines {
            let level = l["level"].as_str().unwrap();
            assert!(["debug", "info", "warn", "error"].contains(&level), "{l}");
            let ts = l["ts"].as_str().unwrap();
            assert!(ts.len() >= 24 && ts.as_bytes()[10] == b'T', "{l}");
            assert!(l["caller"].as_str().unwrap().contains(".go:") || kind == Kind::Retcd);
        }
        // The same lines went to stderr (the harness's log).
        let published_line = "published local member to cluster through raft";
        assert!(server.log_since(0).contains(published_line), "{kind:?}");
        // etcd's order: elected, published, then the client listener's line.
        let elected = position(&lines, "raft.node: ").expect("a raft.node line");
        let msg = lines[elected]["msg"].as_str().unwrap();
        assert!(
            msg.contains(" elected leader ") && msg.contains(" at term "),
            "{msg}"
        );
        let published =
            position(&lines, published_line).unwrap_or_else(|| panic!("{kind:?}: {text}"));
        let serving = position(
            &lines,
            "serving client traffic insecurely; this is strongly discouraged!",
        )
        .unwrap_or_else(|| panic!("{kind:?}: {text}"));
        assert!(
            elected < published && published < serving,
            "{kind:?}: {elected} {published} {serving}\n{text}"
        );
        // etcd 3.5 (retcd's model; the etcd here is 3.4) says it is ready in between and warns
        // about plain text.
        if kind == Kind::Retcd {
            let ready = position(&lines, "ready to serve client requests").expect("ready");
            assert!(published < ready && ready < serving, "{text}");
            assert_eq!(lines[serving]["level"], "warn");
        }
    }
}

#[test]
fn journal_output_sends_each_line_to_journald() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.socket");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let d = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = d.contains("ready to serve client requests");
                got.push(d);
                if done {
                    break;
                }
            }
        }
        got
    });
    let path_str = path.to_str().unwrap();
    let _server = Server::start_in_tempdir_with_env(
        Kind::Retcd,
        &["--log-outputs=systemd/journal"],
        &[("RETCD_JOURNAL_SOCKET", path_str)],
    );
    let got = reader.join().unwrap();
    let ready = got
        .iter()
        .find(|d| d.contains("ready to serve client requests"))
        .unwrap_or_else(|| panic!("{got:?}"));
    let fields: Vec<&str> = ready.lines().collect();
    assert!(
        fields[0].starts_with("MESSAGE={\"level\":\"info\",\"ts\":"),
        "{ready}"
    );
    assert!(fields.contains(&"PRIORITY=6"), "{ready}");
    assert!(fields.contains(&"SYSLOG_IDENTIFIER=retcd"), "{ready}");
    let warn = got
        .iter()
        .find(|d| d.contains("\"level\":\"warn\""))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(warn.contains("\nPRIORITY=4\n"), "{warn}");
}

#[test]
fn journal_output_without_journald_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no.socket");
    let err = Server::try_start_with_env(
        Kind::Retcd,
        dir.path(),
        &["--log-outputs=systemd/journal"],
        &[("RETCD_JOURNAL_SOCKET", missing.to_str().unwrap())],
    )
    .err()
    .expect("no journald: no start");
    assert!(err.contains("cannot log to systemd/journal"), "{err}");
}
