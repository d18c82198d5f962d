//! Issue 14: readiness and stop under systemd's notification protocol (sd_notify(3)).
//!
//! The unit files are run as systemd would run their `[Service]`: `Environment=` and then
//! `EnvironmentFile=` (whose variables win), the specifiers `%H` and `%p`, `$VAR` words of
//! `ExecStart=` split into arguments, and `$NOTIFY_SOCKET` naming a datagram socket this test
//! listens on. Only the binary's path and the environment file's path are the test's own. Real
//! etcd runs Debian's own `etcd.service` the same way, which proves this harness against the
//! implementation systemd users already run; retcd runs `deploy/retcd.service`.
//!
//! `Type=notify` means: the member serves the moment it says READY=1 (so `etcdctl endpoint
//! health` right after it must pass, without retrying), and SIGTERM (systemd's stop) ends it by
//! that signal, which systemd counts as a clean exit.

mod support;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Kind;

/// Longest a member may take to say READY=1 (a debug build replays nothing here).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Debian's unit for etcd (package etcd-server).
const ETCD_UNIT: &str = "/lib/systemd/system/etcd.service";

/// What a unit's `[Service]` section asks for, as far as starting the process goes.
struct Service {
    kind: String,
    environment: Vec<(String, String)>,
    environment_files: Vec<(bool, String)>,
    exec_start: Vec<String>,
}

/// Reads the `[Service]` section of `unit`, with `%H` as `host` and `%p` as `prefix`.
fn parse_unit(unit: &str, host: &str, prefix: &str) -> Service {
    let mut s = Service {
        kind: "simple".to_string(),
        environment: Vec::new(),
        environment_files: Vec::new(),
        exec_start: Vec::new(),
    };
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        let value = value.replace("%H", host).replace("%p", prefix);
        match key {
            "Type" => s.kind = value,
            "Environment" => {
                let (k, v) = value.split_once('=').expect("Environment=K=V");
                s.environment.push((k.to_string(), v.to_string()));
            }
            "EnvironmentFile" => match value.strip_prefix('-') {
                Some(path) => s.environment_files.push((true, path.to_string())),
                None => s.environment_files.push((false, value)),
            },
            "ExecStart" => {
                s.exec_start = value.split_whitespace().map(str::to_string).collect();
            }
            _ => {}
        }
    }
    s
}

/// The variables of an environment file (`KEY=VALUE` lines, `#` comments, optional quotes).
fn read_environment_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("environment file")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// Starts `service` with `binary` for its program and `env_file` for its environment file, its
/// notifications going to `socket`.
fn start(service: &Service, binary: &Path, env_file: &Path, socket: &Path, log: &Path) -> Child {
    assert_eq!(service.kind, "notify", "a Type=notify unit");
    let mut env: BTreeMap<String, String> = service.environment.iter().cloned().collect();
    for (optional, _) in &service.environment_files {
        // The unit names its file under /etc; this test's file stands in for it.
        if env_file.exists() {
            env.extend(read_environment_file(env_file));
        } else {
            assert!(*optional, "a required environment file");
        }
    }
    let mut argv: Vec<String> = Vec::new();
    for word in &service.exec_start[1..] {
        match word.strip_prefix('$') {
            // `$VAR` alone: its value split at whitespace, nothing if empty.
            Some(var) if !var.starts_with('{') => argv.extend(
                env.get(var)
                    .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default(),
            ),
            _ => argv.push(word.clone()),
        }
    }
    let log = std::fs::File::create(log).expect("log file");
    Command::new(binary)
        .args(&argv)
        .envs(&env)
        .env("NOTIFY_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the unit's program")
}

/// The next notification on `socket`, within `timeout`.
fn notification(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

/// Runs `unit` for `kind` through a start and a stop; returns the notifications it sent after
/// READY=1 (its stop's) and its log.
fn start_and_stop(kind: Kind, unit: &str, prefix: &str) -> (Vec<String>, String) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{}-systemd-", kind.label()))
        .tempdir()
        .expect("tempdir");
    let host = host_name();
    let service = parse_unit(unit, &host, prefix);
    let ports = support::free_ports(2);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let env_file = tmp.path().join(prefix);
    std::fs::write(
        &env_file,
        format!(
            "# the member's flags, as an operator writes /etc/default/{prefix}\n\
             ETCD_DATA_DIR={}\n\
             ETCD_LISTEN_CLIENT_URLS={client}\n\
             ETCD_ADVERTISE_CLIENT_URLS={client}\n\
             ETCD_LISTEN_PEER_URLS={peer}\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\n\
             ETCD_INITIAL_CLUSTER=\"{host}={peer}\"\n",
            tmp.path().join("data").display()
        ),
    )
    .expect("environment file");
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    let log = tmp.path().join("member.log");
    let binary: PathBuf = kind.binary();
    let mut child = start(&service, &binary, &env_file, &socket_path, &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let ready = notification(&socket, READY_TIMEOUT);
    assert!(
        ready
            .as_deref()
            .is_some_and(|m| m.lines().any(|l| l == "READY=1")),
        "{kind:?}: no READY=1 within {READY_TIMEOUT:?} ({ready:?}); log:\n{}",
        show_log()
    );
    // Ready means serving: no retry.
    let health = support::cluster::etcdctl_at(&client, &["endpoint", "health"]);
    assert!(
        health.success() && health.stderr.contains("is healthy"),
        "{kind:?} right after READY=1: {health:?}"
    );

    // SAFETY: kill(2) on our child's pid, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut after = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} did not stop; log:\n{}",
            show_log()
        );
        if let Some(m) = notification(&socket, Duration::from_millis(100)) {
            after.push(m);
        }
    };
    while let Some(m) = notification(&socket, Duration::from_millis(1)) {
        after.push(m);
    }
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "{kind:?} ends by SIGTERM (a clean exit for systemd): {status:?}; log:\n{}",
        show_log()
    );
    (after, show_log())
}

#[test]
fn units_notify_ready_once_serving_and_stop_on_sigterm() {
    let etcd_unit = std::fs::read_to_string(ETCD_UNIT).expect("Debian's etcd.service");
    let (after, _) = start_and_stop(Kind::Etcd, &etcd_unit, "etcd");
    assert!(after.is_empty(), "etcd 3.4 says nothing on stop: {after:?}");

    let retcd_unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/retcd.service"))
            .expect("deploy/retcd.service");
    let (after, log) = start_and_stop(Kind::Retcd, &retcd_unit, "retcd");
    assert_eq!(after, ["STOPPING=1"], "retcd tells systemd it stops");
    for line in [
        "\"received signal; shutting down\",\"signal\":\"terminated\"",
        "skipped leadership transfer for single voting member cluster",
        "checkpointed the page store",
    ] {
        assert!(log.contains(line), "{line} not logged:\n{log}");
    }
}
