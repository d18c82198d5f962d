//! Issue 14: what deploy/ ships works as written.
//!
//! - deploy/kubernetes/retcd.yaml: retcd started with exactly the manifest's command (node name,
//!   address, ports and kubeadm's certificate paths replaced by the test's own), its startup,
//!   liveness and readiness probes pass on the metrics URL, and a client with a certificate
//!   reaches it over TLS.
//! - deploy/seccomp/add-io-uring.sh: adds exactly the three io_uring calls to a profile.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `curl URL`: the HTTP status.
fn status(url: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "15",
            url,
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn the_static_pod_manifest_runs_and_its_probes_pass() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/retcd.yaml")).unwrap();
    let pod: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let container = &pod["spec"]["containers"][0];
    let command: Vec<String> = container["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    assert_eq!(command[0], "retcd");

    let tmp = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(tmp.path());
    let ports = support::free_ports(3);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let replace = [
        ("NODE_IP", "127.0.0.1".to_string()),
        ("NODE_NAME", "node1".to_string()),
        (":2379", format!(":{}", ports[0])),
        (":2380", format!(":{}", ports[1])),
        (":2381", format!(":{}", ports[2])),
        (
            "/etc/kubernetes/pki/etcd/server.crt",
            path(&pki.server_cert),
        ),
        ("/etc/kubernetes/pki/etcd/server.key", path(&pki.server_key)),
        ("/etc/kubernetes/pki/etcd/peer.crt", path(&pki.server_cert)),
        ("/etc/kubernetes/pki/etcd/peer.key", path(&pki.server_key)),
        ("/etc/kubernetes/pki/etcd/ca.crt", path(&pki.ca)),
        ("/var/lib/etcd", path(&tmp.path().join("data"))),
    ];
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| {
            replace
                .iter()
                .fold(a.clone(), |a, (from, to)| a.replace(from, to))
        })
        .collect();
    let log = std::fs::File::create(tmp.path().join("retcd.log")).unwrap();
    let mut child = Command::new(support::Kind::Retcd.binary())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("retcd");
    let show_log = || std::fs::read_to_string(tmp.path().join("retcd.log")).unwrap_or_default();

    let probe = |name: &str| {
        let p = &container[name];
        let get = &p["httpGet"];
        assert_eq!(get["scheme"].as_str(), Some("HTTP"), "{name}");
        let port = get["port"].as_u64().expect("port");
        assert_eq!(port, 2381, "{name} probes the metrics URL");
        let url = format!(
            "http://{}:{}{}",
            get["host"].as_str().expect("host"),
            ports[2],
            get["path"].as_str().expect("path")
        );
        let budget =
            p["failureThreshold"].as_u64().unwrap_or(3) * p["periodSeconds"].as_u64().unwrap_or(10);
        (url, Duration::from_secs(budget))
    };
    // The startup probe, within what the manifest allows it.
    let (url, budget) = probe("startupProbe");
    let deadline = Instant::now() + budget;
    loop {
        if status(&url) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "startup probe {url}; log:\n{}",
            show_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for name in ["livenessProbe", "readinessProbe"] {
        let (url, _) = probe(name);
        assert_eq!(status(&url), 200, "{name} {url}");
    }
    // A kube-apiserver-like client: TLS with a client certificate.
    let (cert, key) = pki.client("kube-apiserver-etcd-client", tmp.path());
    let out = support::cluster::etcdctl_at(
        &format!("https://127.0.0.1:{}", ports[0]),
        &[
            "--cacert",
            &path(&pki.ca),
            "--cert",
            &path(&cert),
            "--key",
            &path(&key),
            "put",
            "/registry/x",
            "y",
        ],
    );
    assert!(out.success(), "{out:?}; log:\n{}", show_log());
    // The HTTP endpoints on the TLS client URL, where curl negotiates HTTP/2.
    let health = Command::new("curl")
        .args(["-s", "--max-time", "15", "--cacert", &path(&pki.ca)])
        .args(["--cert", &path(&cert), "--key", &path(&key)])
        .arg(format!("https://127.0.0.1:{}/health", ports[0]))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        r#"{"health":"true","reason":""}"#
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_seccomp_script_adds_exactly_io_uring() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("default.json");
    std::fs::write(
        &input,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let out = Command::new(root().join("deploy/seccomp/add-io-uring.sh"))
        .arg(&input)
        .output()
        .expect("the script (needs jq)");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    let rules = v["syscalls"].as_array().expect("syscalls");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["names"], serde_json::json!(["read", "write"]));
    assert_eq!(
        rules[1]["names"],
        serde_json::json!(["io_uring_setup", "io_uring_enter", "io_uring_register"])
    );
    assert_eq!(rules[1]["action"], "SCMP_ACT_ALLOW");
}
