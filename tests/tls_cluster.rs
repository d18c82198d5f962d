//! The seed's HTTPS cluster, automated on loopback: a CA and one server certificate made with
//! cfssl (hosts 127.0.0.1 and localhost), three members started from `ETCD_*` environment files
//! with client and peer TLS and mutual authentication, then etcdctl with `--cacert/--cert/--key`
//! and https:// endpoints — against retcd and, the same way, real etcd. Also: `--auto-tls` with
//! `--peer-auto-tls`, peers refused at the TLS layer (another CA, a CN not allowed), and a peer
//! certificate that does not cover the advertised peer URL.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    Kind, Output, etcdctl_binary, free_ports, remove_env_with_prefixes, run_with_timeout,
    table_rows,
};

/// How long three members may take to elect a leader and serve.
const CLUSTER_READY: Duration = Duration::from_secs(60);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `cfssl ARGS | cfssljson -bare NAME` in `dir`.
fn cfssl(dir: &Path, args: &[&str], name: &str) {
    let out = Command::new("cfssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cfssl (Debian's golang-cfssl; .ci/setup installs it)");
    assert!(
        out.status.success(),
        "cfssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut json = Command::new("cfssljson")
        .args(["-bare", name])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("cfssljson");
    use std::io::Write;
    json.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(json.wait().unwrap().success());
}

/// The seed's certificates: `ca.pem`, and `server.pem`/`server-key.pem` for 127.0.0.1 and
/// localhost, for server and client authentication (the members use it for both).
fn cfssl_pki(dir: &Path) {
    let files = [
        (
            "ca-csr.json",
            r#"{"CN":"retcd test CA","key":{"algo":"ecdsa","size":256},"names":[{"O":"retcd"}]}"#,
        ),
        (
            "ca-config.json",
            r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{"server":{"expiry":"8760h","usages":["signing","key encipherment","server auth","client auth"]}}}}"#,
        ),
        (
            "intruder-csr.json",
            r#"{"CN":"intruder","hosts":["127.0.0.1","localhost"],"key":{"algo":"ecdsa","size":256}}"#,
        ),
        (
            "server-csr.json",
            r#"{"CN":"etcd-peer","hosts":["127.0.0.1","localhost"],"key":{"algo":"ecdsa","size":256},"names":[{"O":"retcd"}]}"#,
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    cfssl(dir, &["gencert", "-initca", "ca-csr.json"], "ca");
    for name in ["server", "intruder"] {
        let csr = format!("{name}-csr.json");
        let args = [
            "gencert",
            "-ca=ca.pem",
            "-ca-key=ca-key.pem",
            "-config=ca-config.json",
            "-profile=server",
            &csr,
        ];
        cfssl(dir, &args, name);
    }
}

/// Three members started from environment files; killed when dropped.
struct TlsCluster {
    kind: Kind,
    children: Vec<Child>,
    client_urls: Vec<String>,
    peer_urls: Vec<String>,
    logs: Vec<PathBuf>,
    data_dirs: Vec<PathBuf>,
    /// etcdctl's TLS flags.
    etcdctl_tls: Vec<String>,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An environment file as systemd's EnvironmentFile= reads the simple ones: `KEY=VALUE` lines.
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

impl TlsCluster {
    /// Starts three members of `kind` under `dir`, each from its own environment file made of
    /// the common `tls` lines plus its URLs (every URL https://).
    fn start(kind: Kind, dir: &Path, tls: &[(&str, String)], etcdctl_tls: Vec<String>) -> Self {
        let ports = free_ports(6);
        let names = ["infra0", "infra1", "infra2"];
        let peer_urls: Vec<String> = (0..3)
            .map(|i| format!("https://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let initial: Vec<String> = (0..3)
            .map(|i| format!("{}={}", names[i], peer_urls[i]))
            .collect();
        let mut cluster = TlsCluster {
            kind,
            children: Vec::new(),
            client_urls: Vec::new(),
            peer_urls: Vec::new(),
            logs: Vec::new(),
            data_dirs: Vec::new(),
            etcdctl_tls,
        };
        for (i, name) in names.iter().enumerate() {
            let member = [
                ("ETCD_NAME", name.to_string()),
                ("ETCD_INITIAL_CLUSTER", initial.join(",")),
                ("ETCD_INITIAL_CLUSTER_STATE", "new".to_string()),
            ];
            cluster.spawn(dir, ports[2 * i], ports[2 * i + 1], &member, tls);
        }
        cluster.wait_healthy();
        cluster
    }

    /// Starts one member from an environment file: `member` (its name, initial cluster and
    /// state: what `etcdctl member add` prints) plus its URLs on `ports` and the `tls` lines.
    fn spawn(
        &mut self,
        dir: &Path,
        client_port: u16,
        peer_port: u16,
        member: &[(&str, String)],
        tls: &[(&str, String)],
    ) {
        let name = &member
            .iter()
            .find(|(k, _)| *k == "ETCD_NAME")
            .expect("ETCD_NAME")
            .1;
        let label = format!("{}-{name}", self.kind.label());
        let client = format!("https://127.0.0.1:{client_port}");
        let peer = format!("https://127.0.0.1:{peer_port}");
        let data_dir = dir.join(&label);
        let mut env = format!(
            "ETCD_DATA_DIR={}\nETCD_LISTEN_PEER_URLS={peer}\nETCD_LISTEN_CLIENT_URLS={client}\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\nETCD_ADVERTISE_CLIENT_URLS={client}\n\
             ETCD_INITIAL_CLUSTER_TOKEN=etcd-cluster-1\n",
            data_dir.display(),
        );
        for (k, v) in member.iter().chain(tls) {
            env.push_str(&format!("{k}={v}\n"));
        }
        let env_file = dir.join(format!("{label}.env"));
        std::fs::write(&env_file, env).unwrap();
        let log = dir.join(format!("{label}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(self.kind.binary());
        remove_env_with_prefixes(&mut cmd, &["ETCD_", "ETCDCTL_"]);
        cmd.envs(read_env_file(&env_file))
            .env("RETCD_PIN_CORES", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        self.children.push(cmd.spawn().expect("start member"));
        self.logs.push(log);
        self.data_dirs.push(data_dir);
        self.client_urls.push(client);
        self.peer_urls.push(peer);
    }

    /// The seed's way to grow the cluster: `etcdctl member add`, then a member started from
    /// an environment file with the lines etcdctl printed, waited for until every member
    /// answers.
    fn add_member(&mut self, dir: &Path, name: &str, tls: &[(&str, String)]) {
        let ports = free_ports(2);
        let peer = format!("--peer-urls=https://127.0.0.1:{}", ports[1]);
        // etcd refuses a reconfiguration until every member has been connected for a while
        // ("unhealthy cluster"): ask again until it stops saying so.
        let deadline = Instant::now() + CLUSTER_READY;
        let out = loop {
            let out = self.etcdctl(&["member", "add", name, &peer]);
            if out.success() || !out.stderr.contains("unhealthy cluster") {
                break out;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: member add: {out:?}",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            out.success(),
            "{:?}: member add: {out:?}\n{}",
            self.kind,
            self.logs()
        );
        let out = out.stdout;
        let member: Vec<(&str, String)> = [
            "ETCD_NAME",
            "ETCD_INITIAL_CLUSTER",
            "ETCD_INITIAL_CLUSTER_STATE",
        ]
        .into_iter()
        .map(|key| {
            let value = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no {key} in {out}"));
            (key, value.to_string())
        })
        .collect();
        self.spawn(dir, ports[0], ports[1], &member, tls);
        self.wait_healthy();
    }

    fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                let tail = &text[text.len().saturating_sub(4000)..];
                format!("--- {} ---\n{tail}", l.display())
            })
            .collect()
    }

    fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(etcdctl_binary());
        remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(&self.etcdctl_tls)
            .args(args);
        run_with_timeout(cmd, None, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.client_urls.join(","), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.success(),
            "{:?}: etcdctl {args:?}: {}{}\n{}",
            self.kind,
            out.stdout,
            out.stderr,
            self.logs()
        );
        out.stdout
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let out = self.etcdctl(&[
                "endpoint",
                "health",
                "--dial-timeout=2s",
                "--command-timeout=3s",
            ]);
            if out.success() {
                return;
            }
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{:?}: a member exited with {status}\n{}",
                        self.kind,
                        self.logs()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: not healthy after {CLUSTER_READY:?}: {}{}\n{}",
                self.kind,
                out.stdout,
                out.stderr,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `endpoint status`, `endpoint health` and `member list` tables, then a write through each
    /// member read back from every member.
    fn check_procedure(&self) {
        let status = self.ok(&["endpoint", "status", "-w", "table"]);
        let rows = table_rows(&status);
        assert_eq!(rows.len(), 3, "{status}");
        for (row, url) in rows.iter().zip(&self.client_urls) {
            assert_eq!(&row[0], url, "{status}");
        }
        assert_eq!(
            rows.iter().filter(|r| r[4] == "true").count(),
            1,
            "{status}"
        );
        assert!(
            rows.iter().all(|r| r[6] == rows[0][6]),
            "one term: {status}"
        );
        let health = self.ok(&["endpoint", "health", "-w", "table"]);
        let rows = table_rows(&health);
        assert_eq!(rows.len(), 3, "{health}");
        assert!(rows.iter().all(|r| r[1] == "true"), "{health}");
        let list = self.ok(&["member", "list", "-w", "table"]);
        let mut rows = table_rows(&list);
        rows.sort_by(|a, b| a[2].cmp(&b[2]));
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                row[1..],
                [
                    "started".to_string(),
                    format!("infra{i}"),
                    self.peer_urls[i].clone(),
                    self.client_urls[i].clone(),
                    "false".to_string()
                ],
                "{list}"
            );
        }
        for (i, url) in self.client_urls.iter().enumerate() {
            let out = self.etcdctl_at(url, &["put", &format!("k{i}"), &format!("v{i}")]);
            assert!(out.success(), "{out:?}");
            assert_eq!(out.stdout, "OK\n");
        }
        for url in &self.client_urls {
            let out = self.etcdctl_at(url, &["get", "k", "--prefix"]);
            assert_eq!(out.stdout, "k0\nv0\nk1\nv1\nk2\nv2\n", "{url}: {out:?}");
        }
    }
}

fn seed_tls(dir: &Path) -> Vec<(&'static str, String)> {
    let ca = s(&dir.join("ca.pem")).to_string();
    let cert = s(&dir.join("server.pem")).to_string();
    let key = s(&dir.join("server-key.pem")).to_string();
    vec![
        ("ETCD_CERT_FILE", cert.clone()),
        ("ETCD_KEY_FILE", key.clone()),
        ("ETCD_TRUSTED_CA_FILE", ca.clone()),
        ("ETCD_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_PEER_CERT_FILE", cert),
        ("ETCD_PEER_KEY_FILE", key),
        ("ETCD_PEER_TRUSTED_CA_FILE", ca),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true".into()),
    ]
}

fn seed_etcdctl(dir: &Path) -> Vec<String> {
    ["ca.pem", "server.pem", "server-key.pem"]
        .iter()
        .zip(["--cacert", "--cert", "--key"])
        .flat_map(|(f, flag)| [flag.to_string(), s(&dir.join(f)).to_string()])
        .collect()
}

#[test]
fn the_seed_https_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    cfssl_pki(tmp.path());
    let tls = seed_tls(tmp.path());
    for kind in [Kind::Etcd, Kind::Retcd] {
        let cluster = TlsCluster::start(kind, tmp.path(), &tls, seed_etcdctl(tmp.path()));
        cluster.check_procedure();
    }
}

#[test]
fn a_member_joins_over_tls_and_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    cfssl_pki(tmp.path());
    for kind in [Kind::Etcd, Kind::Retcd] {
        let mut tls = seed_tls(tmp.path());
        tls.push(("ETCD_SNAPSHOT_COUNT", "100".into()));
        if kind == Kind::Retcd {
            // etcd 3.4 keeps 5,000 entries for followers and has no flag for it.
            tls.push(("ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", "10".into()));
        }
        let mut cluster = TlsCluster::start(kind, tmp.path(), &tls, seed_etcdctl(tmp.path()));
        // 150 writes, one request each (a snapshot is taken every 100 entries).
        for i in 0..150 {
            let (k, v) = (format!("k{i:03}"), format!("v{i}"));
            assert_eq!(cluster.ok(&["put", &k, &v]), "OK\n");
        }
        cluster.add_member(tmp.path(), "infra3", &tls);
        let new = cluster.client_urls[3].clone();
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let out = cluster.etcdctl_at(
                &new,
                &["get", "k", "--prefix", "--keys-only", "--consistency=s"],
            );
            if out.success() && out.stdout.lines().filter(|l| !l.is_empty()).count() == 150 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?}: the new member has {out:?}\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if kind == Kind::Retcd {
            let log = std::fs::read_to_string(&cluster.logs[3]).unwrap();
            assert!(log.contains("received a snapshot"), "{log}");
        }
        let list = cluster.ok(&["member", "list", "-w", "table"]);
        assert_eq!(table_rows(&list).len(), 4, "{list}");
    }
}

#[test]
fn peers_with_a_wrong_certificate_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    cfssl_pki(tmp.path());
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let test_pki = pki::Pki::new(&other);
    let mut tls = seed_tls(tmp.path());
    tls.push(("ETCD_PEER_CERT_ALLOWED_CN", "etcd-peer".into()));
    for kind in [Kind::Etcd, Kind::Retcd] {
        let cluster = TlsCluster::start(kind, tmp.path(), &tls, seed_etcdctl(tmp.path()));
        // etcdctl as a TLS client of a member's peer port: a certificate from another CA, and
        // one from the right CA whose CN is not allowed.
        let intruder = (
            tmp.path().join("intruder.pem"),
            tmp.path().join("intruder-key.pem"),
        );
        for (cert, key) in [
            (&test_pki.stranger_cert, &test_pki.stranger_key),
            (&intruder.0, &intruder.1),
        ] {
            let mut cmd = Command::new(etcdctl_binary());
            remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
            cmd.env("ETCDCTL_API", "3").args([
                &format!("--endpoints={}", cluster.peer_urls[0]),
                "--cacert",
                s(&tmp.path().join("ca.pem")),
                "--cert",
                s(cert),
                "--key",
                s(key),
                "--dial-timeout=2s",
                "--command-timeout=3s",
                "get",
                "k",
            ]);
            let out = run_with_timeout(cmd, None, Duration::from_secs(30)).unwrap();
            assert!(
                !out.success(),
                "{kind:?}: a stranger reached the peer port: {out:?}"
            );
        }
        if kind == Kind::Retcd {
            let log = std::fs::read_to_string(&cluster.logs[0]).unwrap();
            assert!(
                log.contains("rejected connection on peer endpoint"),
                "{log}"
            );
        }
        cluster.check_procedure();
    }
}

#[test]
fn a_cluster_on_auto_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = vec![
        ("ETCD_AUTO_TLS", "true".to_string()),
        ("ETCD_PEER_AUTO_TLS", "true".to_string()),
    ];
    let etcdctl = vec![
        "--insecure-transport=false".to_string(),
        "--insecure-skip-tls-verify".to_string(),
    ];
    for kind in [Kind::Etcd, Kind::Retcd] {
        let cluster = TlsCluster::start(kind, tmp.path(), &tls, etcdctl.clone());
        cluster.check_procedure();
        for dir in &cluster.data_dirs {
            assert!(
                dir.join("fixtures/peer/cert.pem").exists(),
                "{}",
                dir.display()
            );
            assert!(
                dir.join("fixtures/client/cert.pem").exists(),
                "{}",
                dir.display()
            );
        }
    }
}

#[test]
fn a_peer_certificate_must_cover_the_advertised_peer_url() {
    let tmp = tempfile::tempdir().unwrap();
    cfssl_pki(tmp.path());
    let ports = free_ports(2);
    let peer = format!("https://127.0.0.2:{}", ports[1]);
    let out = Command::new(Kind::Retcd.binary())
        .args([
            "--data-dir",
            s(&tmp.path().join("data")),
            "--listen-peer-urls",
            &format!("https://127.0.0.1:{}", ports[1]),
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("default={peer}"),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", ports[0]),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{}", ports[0]),
            "--peer-cert-file",
            s(&tmp.path().join("server.pem")),
            "--peer-key-file",
            s(&tmp.path().join("server-key.pem")),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not cover --initial-advertise-peer-urls")
            && stderr
                .contains("x509: certificate is valid for 127.0.0.1, localhost, not 127.0.0.2"),
        "{stderr}"
    );
}
