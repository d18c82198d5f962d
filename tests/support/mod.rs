//! Shared harness for retcd's integration tests.
//!
//! Starts real etcd (`/usr/bin/etcd`) or retcd (the `retcd` binary of this
//! package) as a single-node cluster on free loopback ports, waits until it
//! answers `etcdctl endpoint health`, runs the real `etcdctl` against it and
//! normalizes etcdctl's output so that two different servers can be compared
//! textually.
//!
//! Every child process is owned by a [`Server`] and killed (SIGKILL) when the
//! `Server` is dropped, including while a test panics. Nothing here waits with
//! a fixed sleep: all waits are bounded polling loops.
//!
//! Use it from a test file with `mod support;`.

#![allow(dead_code)]

pub mod cluster;
pub mod proxy;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest time a server may take from spawn to a healthy `endpoint health`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest time a single etcdctl invocation may run before it is killed.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time a server gets to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of the bounded wait loops.
const POLL: Duration = Duration::from_millis(25);
/// How many times a start is retried with fresh ports when the server could
/// not bind them (another process took a port between our probe and its bind).
const START_ATTEMPTS: usize = 3;
/// How much of a server's log is printed when a test fails.
const LOG_TAIL_BYTES: usize = 16 * 1024;

/// Env var that selects the server compared against real etcd by the compat
/// tests: unset, empty or `retcd` means retcd; `etcd` means a second real etcd
/// (used to validate the harness and the normalization).
pub const BASELINE_ENV: &str = "RETCD_COMPAT_BASELINE";

/// Which server binary a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Retcd,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Retcd => "retcd",
        }
    }

    /// The binary to run. `/usr/bin/etcd` can be overridden with
    /// `RETCD_TEST_ETCD_BIN`.
    pub fn binary(self) -> PathBuf {
        match self {
            Kind::Etcd => std::env::var_os("RETCD_TEST_ETCD_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
            Kind::Retcd => PathBuf::from(env!("CARGO_BIN_EXE_retcd")),
        }
    }

    /// The server the compat tests compare against real etcd, chosen by
    /// [`BASELINE_ENV`].
    pub fn candidate_from_env() -> Kind {
        match std::env::var(BASELINE_ENV) {
            Err(_) => Kind::Retcd,
            Ok(v) if v.is_empty() || v == "retcd" => Kind::Retcd,
            Ok(v) if v == "etcd" => Kind::Etcd,
            Ok(v) => panic!("{BASELINE_ENV}={v:?}: expected `etcd` or `retcd`"),
        }
    }
}

/// The etcdctl binary; `/usr/bin/etcdctl` unless `RETCD_TEST_ETCDCTL_BIN`.
pub fn etcdctl_binary() -> PathBuf {
    std::env::var_os("RETCD_TEST_ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"))
}

/// What an etcdctl run printed, decoded lossily as UTF-8.
#[derive(Clone, Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code, or `None` when the process died from a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Ports handed out by this test process, so two servers of one process never
/// get the same port even if the kernel offers it twice.
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
/// Makes member names unique within the process.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// The rows of an etcdctl table (lines starting with `|`, header excluded), cells trimmed.
pub fn table_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `n` distinct free TCP ports on 127.0.0.1: bind port 0, read the port, and
/// release it (all listeners are held until the end so they are distinct).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        assert!(tries < 1000, "could not find {n} free loopback ports");
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if !handed.contains(&port) {
            handed.push(port);
            ports.push(port);
        }
        listeners.push(l);
    }
    ports
}

/// Why a start attempt failed.
struct StartError {
    /// The process exited before it became ready.
    exited: bool,
    message: String,
}

/// One single-node etcd or retcd process plus its directory.
pub struct Server {
    kind: Kind,
    name: String,
    /// Directory holding the data dir and the log.
    dir: PathBuf,
    data_dir: PathBuf,
    /// stdout and stderr of every run of the process, appended.
    log_path: PathBuf,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    /// Environment variables set for the process (on top of the test's, minus ETCD_*).
    envs: Vec<(String, String)>,
    child: Option<Child>,
    /// Kept alive until the process is gone (fields drop after `Drop::drop`).
    tempdir: Option<tempfile::TempDir>,
    /// Exit status of the last run that exited before it became ready.
    early_exit: Option<ExitStatus>,
    /// For a cluster member: its --initial-cluster and --initial-cluster-state (a single-node
    /// server lists only itself).
    cluster: Option<(String, String)>,
    /// The peer URL other members use, when it is not the one listened on (a proxy in front).
    advertise_peer: Option<String>,
    /// Clients reach it over TLS: its client URL is https://, and etcdctl gets these flags
    /// (`--cacert`/`--cert`/`--key`, or `--insecure-skip-tls-verify`).
    client_tls: Option<Vec<String>>,
    /// `--user` for every etcdctl run through this server (its readiness checks included), once
    /// auth is on.
    etcdctl_user: Option<String>,
}

impl Server {
    /// Starts real etcd with its data under `dir`. Panics (printing the log)
    /// if it does not become healthy within [`READY_TIMEOUT`].
    pub fn start_etcd(dir: &Path) -> Server {
        Server::start(Kind::Etcd, dir)
    }

    /// Starts retcd with its data under `dir`, with the same flags as
    /// [`Server::start_etcd`] except etcd's logging flags.
    pub fn start_retcd(dir: &Path) -> Server {
        Server::start(Kind::Retcd, dir)
    }

    pub fn start(kind: Kind, dir: &Path) -> Server {
        Server::try_start(kind, dir, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server in a fresh temporary directory owned by the `Server`
    /// (removed after the process is killed).
    pub fn start_in_tempdir(kind: Kind) -> Server {
        Server::start_in_tempdir_with_args(kind, &[])
    }

    /// [`Server::start_in_tempdir`] with `extra_args` appended to the standard
    /// flags. Panics (printing the log) if the server does not start.
    pub fn start_in_tempdir_with_args(kind: Kind, extra_args: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-test-", kind.label()))
            .tempdir()
            .expect("create tempdir");
        let mut server =
            Server::try_start(kind, tmp.path(), extra_args).unwrap_or_else(|e| panic!("{e}"));
        server.tempdir = Some(tmp);
        server
    }

    /// [`Server::start_in_tempdir_with_args`] with environment variables set
    /// for the process (e.g. retcd's internal test knobs).
    pub fn start_in_tempdir_with_env(
        kind: Kind,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-test-", kind.label()))
            .tempdir()
            .expect("create tempdir");
        let mut server = Server::try_start_with_env(kind, tmp.path(), extra_args, envs)
            .unwrap_or_else(|e| panic!("{e}"));
        server.tempdir = Some(tmp);
        server
    }

    /// Starts a server with `extra_args` appended to the standard flags.
    /// Retries with fresh ports when the process exits complaining that an
    /// address is in use; any other failure is returned with the log tail.
    pub fn try_start(kind: Kind, dir: &Path, extra_args: &[&str]) -> Result<Server, String> {
        Server::try_start_with_env(kind, dir, extra_args, &[])
    }

    /// [`Server::try_start`] with environment variables for the process.
    pub fn try_start_with_env(
        kind: Kind,
        dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Server, String> {
        Server::try_start_full(kind, dir, extra_args, envs, None)
    }

    /// [`Server::try_start`] with its client URLs https:// (`extra_args` bring the server's TLS
    /// flags); etcdctl, also for the readiness check, is run with `etcdctl_tls`.
    pub fn try_start_tls(
        kind: Kind,
        dir: &Path,
        extra_args: &[&str],
        etcdctl_tls: &[&str],
    ) -> Result<Server, String> {
        let etcdctl_tls = etcdctl_tls.iter().map(|s| s.to_string()).collect();
        Server::try_start_full(kind, dir, extra_args, &[], Some(etcdctl_tls))
    }

    fn try_start_full(
        kind: Kind,
        dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        client_tls: Option<Vec<String>>,
    ) -> Result<Server, String> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{id}", kind.label(), std::process::id());
        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(2);
            let data_dir = dir.join("data");
            // A failed attempt may have left member data bound to old ports.
            let _ = std::fs::remove_dir_all(&data_dir);
            let mut server = Server {
                kind,
                name: name.clone(),
                dir: dir.to_path_buf(),
                data_dir,
                log_path: dir.join(format!("{}.log", kind.label())),
                client_port: ports[0],
                peer_port: ports[1],
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                envs: envs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                child: None,
                tempdir: None,
                early_exit: None,
                cluster: None,
                advertise_peer: None,
                client_tls: client_tls.clone(),
                etcdctl_user: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = server.log_tail();
                    last_error = format!(
                        "{} failed to start (attempt {attempt}/{START_ATTEMPTS}): {}\n\
                         --- {} ---\n{log}--- end of log ---",
                        kind.label(),
                        e.message,
                        server.log_path.display(),
                    );
                    let port_race =
                        e.exited && log.to_lowercase().contains("address already in use");
                    // Kill whatever is left before the next attempt.
                    server.kill_child();
                    if !port_race {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A cluster member that is not started yet ([`Server::spawn_member`], then
    /// [`Server::wait_member_ready`] once a quorum runs). `dir` holds its data dir and log.
    pub fn member(
        kind: Kind,
        dir: &Path,
        name: &str,
        ports: (u16, u16),
        initial_cluster: &str,
        state: &str,
        extra_args: &[&str],
    ) -> Server {
        Server {
            kind,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            data_dir: dir.join("data"),
            log_path: dir.join(format!("{}.log", kind.label())),
            client_port: ports.0,
            peer_port: ports.1,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            child: None,
            tempdir: None,
            early_exit: None,
            cluster: Some((initial_cluster.to_string(), state.to_string())),
            advertise_peer: None,
            client_tls: None,
            etcdctl_user: None,
        }
    }

    /// Runs every later etcdctl of this server (readiness checks included) as `user`
    /// (`name:password`): for a server whose auth is on.
    pub fn set_etcdctl_user(&mut self, user: &str) {
        self.etcdctl_user = Some(format!("--user={user}"));
    }

    /// Sets an environment variable for this member's later starts (retcd's test knobs).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// Advertises `url` as this member's peer URL (a proxy that forwards to its peer port).
    pub fn set_advertise_peer(&mut self, url: &str) {
        self.advertise_peer = Some(url.to_string());
    }

    /// The --initial-cluster this member is started with (`None` for a single server).
    pub fn initial_cluster(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(initial, _)| initial.as_str())
    }

    /// Changes a member's --initial-cluster-state for its next start.
    pub fn set_cluster_state(&mut self, state: &str) {
        if let Some((_, s)) = self.cluster.as_mut() {
            *s = state.to_string();
        }
    }

    /// Starts the process without waiting for it to serve (a member waits for a quorum).
    pub fn spawn_member(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.early_exit = None;
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until the member serves (`endpoint health`), panicking with its log otherwise.
    pub fn wait_member_ready(&mut self) {
        if let Err(e) = self.wait_ready(Instant::now() + READY_TIMEOUT) {
            panic!(
                "{} did not become ready: {}\n--- {} ---\n{}--- end of log ---",
                self.name,
                e.message,
                self.log_path.display(),
                self.log_tail()
            );
        }
    }

    /// Waits until a learner serves serializable reads (a learner refuses `endpoint health`'s
    /// linearizable read).
    pub fn wait_member_ready_serializable(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.run_etcdctl(
                &["--command-timeout=2s", "get", "health", "--consistency=s"],
                None,
                Duration::from_secs(5),
            );
            if out.as_ref().is_ok_and(|o| o.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline && self.is_running(),
                "{} does not serve: {out:?}\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits (bounded) until the process exits by itself; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        None
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, …) to the running process.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = self.child.as_ref() {
            // SAFETY: plain kill(2) on the pid of a child we have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The page store's file (`member/snap/db` in the data dir, etcd's layout).
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("member/snap/db")
    }

    /// The WAL directory (`member/wal` in the data dir).
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("member/wal")
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// `http://127.0.0.1:PORT`: the endpoint as the seed's operators write it for etcdctl's
    /// `--endpoints` (etcdctl 3.4 sends it whole as the HTTP/2 `:authority` of its maintenance
    /// calls, which retcd must accept as etcd does).
    pub fn endpoint(&self) -> String {
        self.client_url()
    }

    pub fn client_url(&self) -> String {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The command-line flags the server is started with.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--name".to_string(),
            self.name.clone(),
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".to_string(),
            self.client_url(),
            "--advertise-client-urls".to_string(),
            self.client_url(),
            "--listen-peer-urls".to_string(),
            self.peer_url(),
            "--initial-advertise-peer-urls".to_string(),
            self.advertise_peer
                .clone()
                .unwrap_or_else(|| self.peer_url()),
        ];
        match &self.cluster {
            None => args.extend([
                "--initial-cluster".to_string(),
                format!("{}={}", self.name, self.peer_url()),
            ]),
            Some((initial, state)) => args.extend([
                "--initial-cluster".to_string(),
                initial.clone(),
                "--initial-cluster-state".to_string(),
                state.clone(),
            ]),
        }
        if self.kind == Kind::Etcd {
            for a in [
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "error",
            ] {
                args.push(a.to_string());
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Adds a flag for the next start (see [`Server::start_again`]).
    pub fn push_arg(&mut self, arg: &str) {
        self.extra_args.push(arg.to_string());
    }

    /// Gracefully stops the server (SIGTERM, then SIGKILL after
    /// [`STOP_TIMEOUT`]) and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped (or killed) server again with the same flags and data
    /// and waits until it is healthy. Panics with the log on failure.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: {} is still running",
            self.name
        );
        if let Err(e) = self.spawn_and_wait() {
            panic!(
                "{} failed to restart: {}\n--- {} ---\n{}--- end of log ---",
                self.kind.label(),
                e.message,
                self.log_path.display(),
                self.log_tail()
            );
        }
    }

    /// Like [`Server::start_again`], but a start that fails is returned (with
    /// the log tail) instead of panicking. On failure the process is gone:
    /// [`Server::early_exit`] tells how it exited if it exited by itself
    /// (`None` if it was killed because it did not become ready in time).
    pub fn try_start_again(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "try_start_again: {} is still running",
            self.name
        );
        self.early_exit = None;
        match self.spawn_and_wait() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill_child();
                Err(format!(
                    "{} failed to start: {}\n--- {} ---\n{}--- end of log ---",
                    self.kind.label(),
                    e.message,
                    self.log_path.display(),
                    self.log_tail()
                ))
            }
        }
    }

    /// Exit status of the last run that exited on its own before it became
    /// ready (set by a failed start), if any.
    pub fn early_exit(&self) -> Option<ExitStatus> {
        self.early_exit
    }

    /// Current length in bytes of the server's log (all runs appended); pass
    /// it to [`Server::log_since`] to read what later runs printed.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_path).map_or(0, |m| m.len())
    }

    /// What the server printed to its log after byte `pos` (see
    /// [`Server::log_len`]), decoded lossily as UTF-8.
    pub fn log_since(&self, pos: u64) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let start = (pos as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// SIGTERM and wait (bounded); SIGKILL if it does not exit in time.
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: plain kill(2) on the pid of a child we have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        self.kill_child();
    }

    /// SIGKILL and wait: a crash, no chance to flush anything.
    pub fn kill9(&mut self) {
        self.kill_child();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL; it fails only if already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.spawn().map_err(|message| StartError {
            exited: false,
            message,
        })?;
        self.wait_ready(Instant::now() + READY_TIMEOUT)
    }

    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open {}: {e}", self.log_path.display()))?;
        let bin = self.kind.binary();
        let args = self.args();
        let _ = writeln!(log, "=== {} {}", bin.display(), args.join(" "));
        let log_err = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // ETCD_* variables are read by etcd as flags; keep the run hermetic.
        remove_env_with_prefixes(&mut cmd, &["ETCD_", "ETCDCTL_"]);
        cmd.envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls until the client port accepts connections and
    /// `etcdctl endpoint health` succeeds, or the process exits, or `deadline`.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), StartError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let mut last = String::from("client port never accepted a connection");
        loop {
            let child = self.child.as_mut().expect("wait_ready without a child");
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.early_exit = Some(status);
                    return Err(StartError {
                        exited: true,
                        message: format!("process exited early with {status}"),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(StartError {
                        exited: false,
                        message: format!("waiting on the process: {e}"),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError {
                    exited: false,
                    message: format!("not healthy after {READY_TIMEOUT:?}; last check: {last}"),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let limit = remaining
                    .min(Duration::from_secs(5))
                    .max(Duration::from_millis(100));
                match self.run_etcdctl(
                    &[
                        "--dial-timeout=1s",
                        "--command-timeout=2s",
                        "endpoint",
                        "health",
                    ],
                    None,
                    limit,
                ) {
                    Ok(out) if out.success() => return Ok(()),
                    // It serves; an alarm it keeps from before (NOSPACE, CORRUPT) is etcdctl's
                    // reason to call it unhealthy, which a test restarting it expects.
                    Ok(out) if format!("{}{}", out.stdout, out.stderr).contains("Active Alarm") => {
                        return Ok(());
                    }
                    Ok(out) => {
                        last = format!(
                            "etcdctl endpoint health: {}: {}{}",
                            out.status,
                            out.stdout.trim(),
                            out.stderr.trim()
                        )
                    }
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `etcdctl --endpoints=<this server> ARGS` with `ETCDCTL_API=3`.
    /// Panics if etcdctl cannot be run or runs past [`ETCDCTL_TIMEOUT`].
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_stdin(args, None)
    }

    /// Like [`Server::etcdctl`] with `stdin` fed to etcdctl (`txn -i`).
    pub fn etcdctl_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.etcdctl_stdin(args, Some(stdin))
    }

    pub fn etcdctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_etcdctl(args, stdin, ETCDCTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("etcdctl {args:?} against {}: {e}", self.name))
    }

    fn run_etcdctl(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<Output, String> {
        let mut cmd = Command::new(etcdctl_binary());
        remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
        cmd.env("ETCDCTL_API", "3");
        cmd.arg(format!("--endpoints={}", self.endpoint()));
        cmd.args(self.client_tls.iter().flatten());
        cmd.args(self.etcdctl_user.iter());
        cmd.args(args);
        run_with_timeout(cmd, stdin, timeout)
    }

    /// Runs etcdctl against this server with `tls` instead of the server's own client TLS flags
    /// (a client with another certificate, or none).
    pub fn etcdctl_as(&self, tls: &[&str], args: &[&str]) -> Output {
        let mut cmd = Command::new(etcdctl_binary());
        remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
        cmd.env("ETCDCTL_API", "3");
        cmd.arg(format!("--endpoints={}", self.endpoint()));
        cmd.args(tls);
        cmd.args(args);
        run_with_timeout(cmd, None, ETCDCTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("etcdctl {args:?} against {}: {e}", self.name))
    }

    /// [`normalize`] plus this server's own details: its client and peer
    /// ports become `<CLIENT_PORT>` / `<PEER_PORT>` and its data dir
    /// `<DATA_DIR>`.
    pub fn normalize(&self, s: &str) -> String {
        let s = s.replace(&self.data_dir.display().to_string(), "<DATA_DIR>");
        let s = replace_port(&s, self.client_port, "<CLIENT_PORT>");
        let s = replace_port(&s, self.peer_port, "<PEER_PORT>");
        normalize(&s)
    }

    /// The last [`LOG_TAIL_BYTES`] of the server's stdout+stderr log.
    pub fn log_tail(&self) -> String {
        let Ok(bytes) = std::fs::read(&self.log_path) else {
            return String::from("(no log)\n");
        };
        let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
        let mut s = String::from_utf8_lossy(&bytes[start..]).into_owned();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_child();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ({}) log {} ---\n{}--- end of log ---",
                self.name,
                self.kind.label(),
                self.log_path.display(),
                self.log_tail()
            );
        }
    }
}

/// Unsets, for `cmd`, every inherited environment variable whose name starts
/// with one of `prefixes`.
pub fn remove_env_with_prefixes(cmd: &mut Command, prefixes: &[&str]) {
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && prefixes.iter().any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
}

/// Runs `cmd`, feeding `stdin`, capturing stdout and stderr; kills it after
/// `timeout`.
pub fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_owned();
            // A write error means the child exited early; its output says why.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            }))
        }
        _ => None,
    };
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().map_err(|e| format!("wait: {e}"))?;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("wait: {e}"));
            }
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if timed_out {
        return Err(format!(
            "timed out after {timeout:?}\nstdout: {stdout}\nstderr: {stderr}"
        ));
    }
    Ok(Output {
        stdout,
        stderr,
        status,
    })
}

/// Replaces `127.0.0.1:PORT` (not followed by another digit) with
/// `127.0.0.1:<placeholder>`.
fn replace_port(s: &str, port: u16, placeholder: &str) -> String {
    let pat = format!("127.0.0.1:{port}");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(&pat) {
        let end = pos + pat.len();
        let next_is_digit = rest[end..].starts_with(|c: char| c.is_ascii_digit());
        out.push_str(&rest[..pos]);
        if next_is_digit {
            out.push_str(&pat);
        } else {
            out.push_str("127.0.0.1:");
            out.push_str(placeholder);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks what legitimately differs between two servers holding the same data
/// so etcdctl outputs compare equal. The list is kept minimal on purpose;
/// revisions, raft_term, counts, keys, values, versions of keys, error texts
/// and exit codes are all compared as is.
///
/// Masked (with the reason):
/// * `cluster_id`, `member_id` in JSON response headers, `ClusterID` /
///   `MemberID` in `-w fields`, `ID` and `leader` in member / status JSON, and
///   the `ID` column of tables → `<CLUSTER_ID>` / `<MEMBER_ID>`: derived from
///   the member's URLs (hence its ports) and a hash, so random per server.
/// * `name` in member JSON and the `NAME` table column → `<NAME>`: each server
///   gets a unique member name.
/// * `took` (endpoint health, text `took = ...`, JSON, `TOOK` column) →
///   `<DURATION>`: a timing.
/// * `ts` of etcdctl's own client-side zap log lines (printed to stderr on
///   gRPC errors) → `<TS>`, and the random `client-<uuid>` of their `target`
///   → `client-<UUID>`.
/// * `endpoint status`: `VERSION` (etcd-server here is 3.4.23, retcd reports
///   3.5.x), `DB SIZE` / `dbSize` / `dbSizeInUse` (storage-engine specific),
///   `RAFT INDEX` / `RAFT APPLIED INDEX` / `raftIndex` / `raftAppliedIndex`
///   (count internal log entries such as etcd's member-attribute and
///   cluster-version proposals, an implementation detail) → `<VERSION>`,
///   `<DB_SIZE>`, `<RAFT_INDEX>`. `RAFT TERM` is *not* masked.
/// * Table layout: cells are trimmed and borders reduced to `+-+-+`, because
///   etcdctl pads columns to the widest cell and masked cells differ in width.
///
/// Ports are server specific and masked by [`Server::normalize`].
/// Member IDs printed in etcdctl's "simple" output format (hex, no column) are
/// not recognized: use `-w table` or `-w json` for cluster commands.
pub fn normalize(s: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    // Header cells of the table being read, if inside one.
    let mut header: Option<Vec<String>> = None;
    for line in s.split('\n') {
        if is_table_border(line) {
            let columns = line.matches('+').count().saturating_sub(1);
            out.push(format!("+{}", "-+".repeat(columns)));
            continue;
        }
        if let Some(cells) = table_cells(line) {
            match &header {
                None => {
                    out.push(format!("| {} |", cells.join(" | ")));
                    header = Some(cells);
                }
                Some(h) => {
                    let is_status = h.iter().any(|c| c == "DB SIZE");
                    let masked: Vec<String> = cells
                        .into_iter()
                        .enumerate()
                        .map(|(i, cell)| {
                            let mask = h.get(i).and_then(|col| column_mask(col, is_status));
                            match mask {
                                Some(m) if !cell.is_empty() => m.to_string(),
                                _ => cell,
                            }
                        })
                        .collect();
                    out.push(format!("| {} |", masked.join(" | ")));
                }
            }
            continue;
        }
        header = None;
        out.push(normalize_line(line));
    }
    out.join("\n")
}

/// Placeholder for a table column, by header; `VERSION` only in
/// `endpoint status` tables (recognized by their `DB SIZE` column).
fn column_mask(column: &str, is_status_table: bool) -> Option<&'static str> {
    match column {
        "ID" => Some("<MEMBER_ID>"),
        "NAME" => Some("<NAME>"),
        "VERSION" if is_status_table => Some("<VERSION>"),
        "DB SIZE" => Some("<DB_SIZE>"),
        "RAFT INDEX" | "RAFT APPLIED INDEX" => Some("<RAFT_INDEX>"),
        "TOOK" => Some("<DURATION>"),
        _ => None,
    }
}

fn is_table_border(line: &str) -> bool {
    let line = line.trim_end();
    line.len() > 1 && line.starts_with('+') && line.chars().all(|c| c == '+' || c == '-')
}

/// The trimmed cells of a `| a | b |` table row.
fn table_cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim_end();
    if line.len() < 2 || !line.starts_with('|') || !line.ends_with('|') {
        return None;
    }
    let inner = &line[1..line.len() - 1];
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

fn normalize_line(line: &str) -> String {
    let mut l = line.to_string();
    for (key, placeholder) in [
        ("cluster_id", "<CLUSTER_ID>"),
        ("member_id", "<MEMBER_ID>"),
        ("ClusterID", "<CLUSTER_ID>"),
        ("MemberID", "<MEMBER_ID>"),
        ("ID", "<MEMBER_ID>"),
        ("leader", "<MEMBER_ID>"),
        ("name", "<NAME>"),
        ("took", "<DURATION>"),
        ("ts", "<TS>"),
        ("dbSize", "<DB_SIZE>"),
        ("dbSizeInUse", "<DB_SIZE>"),
        ("raftIndex", "<RAFT_INDEX>"),
        ("raftAppliedIndex", "<RAFT_INDEX>"),
    ] {
        l = mask_json_value(&l, key, placeholder);
    }
    // `version` is also a key's version in KV output: mask it only in
    // `endpoint status -w json`.
    if l.starts_with("[{\"Endpoint\"") {
        l = mask_json_value(&l, "version", "<VERSION>");
    }
    // A lease's remaining TTL is whole seconds left at the moment each server answers: under load
    // the two servers' answers straddle a second boundary. Its exact value is checked by
    // tests/lease.rs; here only its presence and place are compared.
    l = mask_after(&l, "remaining(", "<REMAINING>", |c| c.is_ascii_digit());
    if l.contains("\"granted-ttl\"") {
        l = mask_json_value(&l, "ttl", "<REMAINING>");
    }
    l = mask_after(&l, "took = ", "<DURATION>", |c| !c.is_whitespace());
    l = mask_after(&l, "endpoint://client-", "<UUID>", |c| {
        c.is_ascii_hexdigit() || c == '-'
    });
    l
}

/// Replaces the run of characters satisfying `keep` that follows each
/// occurrence of `marker` with `placeholder`.
fn mask_after(s: &str, marker: &str, placeholder: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(marker) {
        let start = pos + marker.len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let len = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        if len > 0 {
            out.push_str(placeholder);
        }
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// Replaces the value of every `"key": value` (also etcdctl's `"key" : value`
/// fields format) with `placeholder`, keeping the quotes of a string value.
fn mask_json_value(s: &str, key: &str, placeholder: &str) -> String {
    let pat = format!("\"{key}\"");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(&pat) {
        let after_key = pos + pat.len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let sep = rest.trim_start_matches(' ');
        let Some(after_colon) = sep.strip_prefix(':') else {
            continue;
        };
        let value = after_colon.trim_start_matches(' ');
        out.push_str(&rest[..rest.len() - value.len()]);
        rest = value;
        let len = json_scalar_len(rest);
        if len == 0 {
            continue;
        }
        if rest.starts_with('"') {
            out.push('"');
            out.push_str(placeholder);
            out.push('"');
        } else {
            out.push_str(placeholder);
        }
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// Byte length of the JSON string or number at the start of `s` (0 if none).
fn json_scalar_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.first() == Some(&b'"') {
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        return 0;
    }
    b.iter()
        .take_while(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        .count()
}

// ---------------------------------------------------------------------------
// Client and on-disk layout helpers (the crash and recovery tests)

/// An etcd client of `server` that connects within 5 s and bounds each request by `timeout`.
pub async fn connect(server: &Server, timeout: Duration) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(timeout);
    etcd_client::Client::connect([server.client_url()], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.client_url()))
}

/// The store's current revision, from the header of a count-only read of every key.
pub async fn rev(c: &mut etcd_client::Client) -> i64 {
    c.get("\0", Some(etcd_client::GetOptions::new().with_count_only()))
        .await
        .expect("count-only get")
        .header()
        .expect("header")
        .revision()
}

/// Size of a page of the page store (engine/DESIGN.md §3).
const DB_PAGE: usize = 4096;

/// Bitwise CRC-32C (Castagnoli), enough for the few records and pages a test checks.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A meta page of the page store (engine/DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub txn: u64,
    pub root: u64,
    pub high_water: u64,
}

/// The newest valid meta page of the db file at `path`, if it can be read.
pub fn newest_meta(path: &Path) -> Option<Meta> {
    let bytes = std::fs::read(path).ok()?;
    let mut best: Option<Meta> = None;
    for slot in 0..2 {
        let Some(m) = bytes.get(slot * DB_PAGE..slot * DB_PAGE + 52) else {
            continue;
        };
        if &m[0..8] != b"RETCDDB\0" || crc32c(&m[..48]) != u32_at(m, 48) {
            continue;
        }
        let meta = Meta {
            txn: u64_at(m, 16),
            root: u64_at(m, 24),
            high_water: u64_at(m, 40),
        };
        if best.is_none_or(|b| meta.txn > b.txn) {
            best = Some(meta);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    // Integration test crates that include this module run these too.
    use super::*;

    #[test]
    fn normalize_masks_ids_and_keeps_revisions() {
        let s = r#"{"header":{"cluster_id":1511,"member_id":1366,"revision":4,"raft_term":2},"kvs":[{"key":"YQ==","version":1}]}"#;
        assert_eq!(
            normalize(s),
            r#"{"header":{"cluster_id":<CLUSTER_ID>,"member_id":<MEMBER_ID>,"revision":4,"raft_term":2},"kvs":[{"key":"YQ==","version":1}]}"#
        );
    }

    #[test]
    fn normalize_tables_and_log_lines() {
        let s =
            "+----+------+\n|  ID  | NAME |\n+----+------+\n| abc | n1 |\n+----+------+\nafter\n";
        assert_eq!(
            normalize(s),
            "+-+-+\n| ID | NAME |\n+-+-+\n| <MEMBER_ID> | <NAME> |\n+-+-+\nafter\n"
        );
        let log = r#"{"level":"warn","ts":"2026-11-24T12:46:16.604Z","target":"endpoint://client-8b4b6661-0da4/127.0.0.1:1","took":"1ms"}"#;
        assert_eq!(
            normalize(log),
            r#"{"level":"warn","ts":"<TS>","target":"endpoint://client-<UUID>/127.0.0.1:1","took":"<DURATION>"}"#
        );
        assert_eq!(
            normalize("x is healthy: successfully committed proposal: took = 1.2ms"),
            "x is healthy: successfully committed proposal: took = <DURATION>"
        );
        assert_eq!(
            replace_port("a 127.0.0.1:123 127.0.0.1:1234", 123, "<P>"),
            "a 127.0.0.1:<P> 127.0.0.1:1234"
        );
    }
}

// ---------------------------------------------------------------------------
// One test body against both servers
// ---------------------------------------------------------------------------

/// One server a test body runs against.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    /// `127.0.0.1:PORT`.
    pub endpoint: String,
    /// The member name it was started with.
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
}

impl Target {
    pub fn of(s: &Server) -> Target {
        Target {
            kind: s.kind(),
            endpoint: s.endpoint(),
            name: s.name().to_string(),
            client_url: s.client_url(),
            peer_url: s.peer_url(),
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.endpoint))
    }
}

/// A runtime for a test that talks to servers by itself.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Starts etcd and retcd side by side (each in its own tempdir, with `extra_args`, both at once).
pub fn start_both(extra_args: &[&str]) -> (Server, Server) {
    std::thread::scope(|s| {
        let e = s.spawn(|| Server::start_in_tempdir_with_args(Kind::Etcd, extra_args));
        let r = s.spawn(|| Server::start_in_tempdir_with_args(Kind::Retcd, extra_args));
        // Join both before unwrapping so a started server is never leaked.
        match (e.join(), r.join()) {
            (Ok(e), Ok(r)) => (e, r),
            (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
        }
    })
}

/// Starts etcd and retcd (each in its own tempdir, with `extra_args`), runs
/// `body` against both concurrently (each run bounded by `timeout`), and fails
/// with both outcomes if either run panicked or timed out. The expectations a
/// body asserts are thereby proven to be etcd's.
pub fn run_both<F, Fut>(extra_args: &[&str], timeout: Duration, body: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (etcd, retcd) = start_both(extra_args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcomes: Vec<(Kind, Result<(), String>)> = rt.block_on(async {
        let handles: Vec<_> = [&etcd, &retcd]
            .into_iter()
            .map(|s| {
                let t = Target::of(s);
                (t.kind, tokio::spawn(tokio::time::timeout(timeout, body(t))))
            })
            .collect();
        let mut out = Vec::new();
        for (kind, h) in handles {
            let r = match h.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(format!("timed out after {timeout:?}")),
                Err(e) if e.is_panic() => Err(panic_message(e.into_panic())),
                Err(e) => Err(format!("task failed: {e}")),
            };
            out.push((kind, r));
        }
        out
    });
    drop(rt);
    let failed = outcomes.iter().any(|(_, r)| r.is_err());
    if failed {
        let report: Vec<String> = outcomes
            .iter()
            .map(|(k, r)| match r {
                Ok(()) => format!("[{}] passed", k.label()),
                Err(e) => format!("[{}] FAILED: {e}", k.label()),
            })
            .collect();
        // Dropping the servers while panicking prints their logs.
        panic!("{}", report.join("\n"));
    }
    drop((etcd, retcd));
}

pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "non-string panic".to_string()
    }
}

/// Asserts that `r` failed with a gRPC status of `code` (the Debug name of
/// the tonic code, e.g. `OutOfRange`) and exactly `message`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, etcd_client::Error>,
    code: &str,
    message: &str,
) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            assert_eq!(
                (format!("{:?}", s.code()), s.message()),
                (code.to_string(), message),
                "gRPC status"
            );
        }
        other => panic!("expected {code} {message:?}, got {other:?}"),
    }
}

/// The `retcdutl` binary built beside `retcd` (`cargo test --workspace` builds both; a test run
/// of this crate alone needs `cargo build -p retcd-tools` first).
pub fn retcdutl_bin() -> PathBuf {
    tool_bin("retcdutl")
}

/// The `retcdctl` binary (built as [`retcdutl_bin`] is).
pub fn retcdctl_bin() -> PathBuf {
    tool_bin("retcdctl")
}

fn tool_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_retcd")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: `cargo build -p retcd-tools` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// etcdctl's commands that set up auth as the tests use it: root (password `root_pw`, role
/// root), role `r` with readwrite on the prefix `/a/`, user alice (password `alice_pw`, role r),
/// then `auth enable`.
pub fn auth_setup_commands(root_pw: &str, alice_pw: &str) -> Vec<Vec<String>> {
    let root_user = format!("root:{root_pw}");
    let alice_user = format!("alice:{alice_pw}");
    [
        &["user", "add", &root_user][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "r"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "r",
            "readwrite",
            "/a/",
        ],
        &["user", "add", &alice_user],
        &["user", "grant-role", "alice", "r"],
        &["auth", "enable"],
    ]
    .iter()
    .map(|c| c.iter().map(|a| a.to_string()).collect())
    .collect()
}

/// What a server's state looks like to etcdctl: `get "" --prefix -w json` and `endpoint hashkv
/// -w json`, taken before a change that must keep it ([`State::assert_same`]).
pub struct State {
    get: String,
    hashkv: String,
}

impl State {
    pub fn of(s: &Server) -> State {
        let run = |args: &[&str]| {
            let o = s.etcdctl(args);
            assert!(o.success(), "{o:?}");
            o.stdout
        };
        State {
            get: run(&["get", "", "--prefix", "-w", "json"]),
            hashkv: run(&["endpoint", "hashkv", "-w", "json"]),
        }
    }

    /// The header's revision of the `get`.
    pub fn revision(&self) -> i64 {
        let v: serde_json::Value = serde_json::from_str(&self.get).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }

    /// `s` holds the same keys, values, revisions (the term aside: a restart moves it) and the
    /// same HashKV and compact revision.
    pub fn assert_same(&self, s: &Server, when: &str) {
        let now = State::of(s);
        let strip = |j: &str| {
            let mut v: serde_json::Value = serde_json::from_str(j).unwrap();
            v["header"]["raft_term"] = serde_json::Value::Null;
            v
        };
        assert!(
            strip(&now.get) == strip(&self.get),
            "{when}: the keys differ"
        );
        let hash = |j: &str| {
            let v: serde_json::Value = serde_json::from_str(j).unwrap();
            (
                v[0]["HashKV"]["hash"].clone(),
                v[0]["HashKV"]["compact_revision"].clone(),
            )
        };
        assert_eq!(hash(&now.hashkv), hash(&self.hashkv), "{when}: HashKV");
    }
}

/// Bound of waiting for a server's thread to come or go.
const THREAD_WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The threads of process `pid` named `name`.
pub fn threads_named(pid: u32, name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim_end() == name)
        .count()
}

/// Waits (bounded) until process `pid` has `want` threads named `name`; returns how many it has.
pub fn wait_threads(pid: u32, name: &str, want: usize) -> usize {
    let deadline = Instant::now() + THREAD_WAIT_TIMEOUT;
    loop {
        let n = threads_named(pid, name);
        if n == want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The non-empty lines `child` writes to its (piped) stdout, as they come, read by a thread.
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("a piped stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if !line.is_empty() && tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
