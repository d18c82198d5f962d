//! TLS on the client port, against the real binaries: certificates from a test CA
//! (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`),
//! `--auto-tls`, and the bad input etcd refuses at the TLS layer, each checked against retcd and
//! real etcd alike; start-up errors with etcd's wording.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use pki::Pki;
use rustls::pki_types::pem::PemObject;
use support::{Kind, Output, Server};

/// How long a client may wait for the server to close a connection it refuses.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn server_flags(p: &Pki) -> Vec<&str> {
    let mut flags = p.server_flags();
    flags.extend(["--client-crl-file", s(&p.crl)]);
    flags
}

fn client_flags<'a>(p: &'a Pki, cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    p.client_flags(cert, key)
}

/// etcdctl flags that fail fast against a server that refuses the connection.
const FAST: [&str; 2] = ["--dial-timeout=2s", "--command-timeout=3s"];

fn ok(out: Output) -> String {
    assert!(
        out.success(),
        "etcdctl failed: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Sends `bytes` on a fresh connection, ends its sending side (etcd 3.4 sets no handshake
/// deadline: a client that stops halfway holds its connection open until it closes), and waits
/// until the server closes it (a read returns 0 or an error) within [`CLOSE_TIMEOUT`].
fn refused_and_closed(server: &Server, bytes: &[u8]) {
    let conn = send(server, bytes);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    wait_closed(server, conn);
}

fn send(server: &Server, bytes: &[u8]) -> TcpStream {
    let addr = format!("127.0.0.1:{}", server.client_port());
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(CLOSE_TIMEOUT)).unwrap();
    let _ = conn.write_all(bytes);
    conn
}

fn wait_closed(server: &Server, mut conn: TcpStream) {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            // A TLS alert or the server's own handshake bytes: read on until the close.
            Ok(_) => assert!(started.elapsed() < CLOSE_TIMEOUT, "connection never closed"),
        }
    }
    assert!(
        started.elapsed() < CLOSE_TIMEOUT,
        "{:?} did not close the connection",
        server.kind()
    );
}

/// What an HTTP/2 client without TLS sends first: the preface and an empty SETTINGS frame.
fn plain_h2_hello() -> Vec<u8> {
    let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    v.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    v
}

#[test]
fn client_certificates_as_etcd_checks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    for kind in [Kind::Etcd, Kind::Retcd] {
        let dir = tmp.path().join(kind.label());
        std::fs::create_dir_all(&dir).unwrap();
        let client = client_flags(&pki, &pki.client_cert, &pki.client_key);
        let server = Server::try_start_tls(kind, &dir, &server_flags(&pki), &client)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok(server.etcdctl(&["put", "k", "v"])), "OK\n");
        assert_eq!(ok(server.etcdctl(&["get", "k"])), "k\nv\n");
        let status = ok(server.etcdctl(&["endpoint", "status", "-w", "table"]));
        assert!(status.contains(&server.client_url()), "{status}");
        ok(server.etcdctl(&["endpoint", "health"]));

        // Refused: no client certificate, one from another CA, a revoked one, an expired one.
        let mut no_cert = vec!["--cacert", s(&pki.ca)];
        no_cert.extend(FAST);
        let mut stranger = client_flags(&pki, &pki.stranger_cert, &pki.stranger_key);
        stranger.extend(FAST);
        let mut revoked = client_flags(&pki, &pki.revoked_cert, &pki.revoked_key);
        revoked.extend(FAST);
        let mut expired = client_flags(&pki, &pki.expired_cert, &pki.expired_key);
        expired.extend(FAST);
        let mut future = client_flags(&pki, &pki.future_cert, &pki.future_key);
        future.extend(FAST);
        for (what, flags) in [
            ("no certificate", &no_cert),
            ("another CA", &stranger),
            ("revoked", &revoked),
            ("expired", &expired),
            ("not yet valid", &future),
        ] {
            let out = server.etcdctl_as(flags, &["get", "k"]);
            assert!(
                !out.success(),
                "{:?} served a client with {what}: {}",
                kind,
                out.stdout
            );
        }
        // A server certificate not signed by the CA etcdctl trusts is refused by etcdctl.
        let mut wrong_ca = client_flags(&pki, &pki.client_cert, &pki.client_key);
        wrong_ca[1] = s(&pki.stranger_cert);
        wrong_ca.extend(FAST);
        assert!(!server.etcdctl_as(&wrong_ca, &["get", "k"]).success());

        // Plain HTTP/2, garbage, and a handshake cut short: closed, and the server goes on.
        refused_and_closed(&server, &plain_h2_hello());
        refused_and_closed(&server, &[0x42; 512]);
        refused_and_closed(&server, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
        assert_eq!(
            ok(server.etcdctl(&["get", "k", "--print-value-only"])),
            "v\n"
        );
    }
}

#[test]
fn an_https_client_on_a_plain_port_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    for kind in [Kind::Etcd, Kind::Retcd] {
        let server = Server::start_in_tempdir(kind);
        let url = server.client_url().replace("http://", "https://");
        let mut cmd = std::process::Command::new(support::etcdctl_binary());
        support::remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={url}"))
            .args(["--cacert", s(&pki.ca)])
            .args(FAST)
            .args(["get", "k"]);
        let out = support::run_with_timeout(cmd, None, Duration::from_secs(30)).unwrap();
        assert!(
            !out.success(),
            "{kind:?} answered TLS on a plain port: {}",
            out.stdout
        );
        // A ClientHello on the plain port, then the server goes on answering.
        refused_and_closed(
            &server,
            &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x03],
        );
        assert_eq!(ok(server.etcdctl(&["put", "k", "v"])), "OK\n");
    }
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    // The server reads its certificate from these paths; the test replaces their contents.
    let (cert, key) = (tmp.path().join("live.pem"), tmp.path().join("live-key.pem"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    for kind in [Kind::Etcd, Kind::Retcd] {
        std::fs::copy(&pki.server_cert, &cert).unwrap();
        std::fs::copy(&pki.server_key, &key).unwrap();
        let dir = tmp.path().join(kind.label());
        std::fs::create_dir_all(&dir).unwrap();
        let flags = ["--cert-file", s(&cert), "--key-file", s(&key)];
        let server = Server::try_start_tls(kind, &dir, &flags, &["--cacert", s(&pki.ca)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok(server.etcdctl(&["put", "k", "v"])), "OK\n");
        // Rotate to a certificate of another CA: new connections get it at once.
        std::fs::copy(&pki.other_server_key, &key).unwrap();
        std::fs::copy(&pki.other_server_cert, &cert).unwrap();
        let mut old_ca = vec!["--cacert", s(&pki.ca)];
        old_ca.extend(FAST);
        assert!(
            !server.etcdctl_as(&old_ca, &["get", "k"]).success(),
            "{kind:?}"
        );
        let mut new_ca = vec!["--cacert", s(&pki.other_ca)];
        new_ca.extend(FAST);
        assert_eq!(
            ok(server.etcdctl_as(&new_ca, &["get", "k", "--print-value-only"])),
            "v\n"
        );
    }
}

#[test]
fn a_tls12_only_server_with_one_cipher_suite_serves_etcdctl() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let client = client_flags(&pki, &pki.client_cert, &pki.client_key);
    // TLS 1.2 with one ECDSA suite: etcdctl (Go) negotiates it with the ECDSA certificate.
    let mut flags = server_flags(&pki);
    flags.extend([
        "--tls-max-version",
        "TLS1.2",
        "--cipher-suites",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ]);
    let dir = tmp.path().join("ecdsa");
    let server =
        Server::try_start_tls(Kind::Retcd, &dir, &flags, &client).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok(server.etcdctl(&["put", "k", "v"])), "OK\n");
}

/// One HTTP/1.1 request (`Connection: close`) on `conn`; the whole response.
fn http1_get(mut conn: impl Read + Write, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // A TLS peer that closes without close_notify ends the read with an error: what came counts.
    let _ = conn.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn http1_on_the_client_port_plain_and_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&pki.ca).unwrap();
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap();
    roots.add(ca).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = std::sync::Arc::new(config);
    for kind in [Kind::Etcd, Kind::Retcd] {
        let plain = Server::start_in_tempdir(kind);
        let addr = format!("127.0.0.1:{}", plain.client_port());
        let response = http1_get(TcpStream::connect(&addr).unwrap(), "/not-served");
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{kind:?}: {response}"
        );
        assert!(
            response.ends_with("\r\n\r\n404 page not found\n"),
            "{kind:?}: {response}"
        );

        let dir = tmp.path().join(kind.label());
        std::fs::create_dir_all(&dir).unwrap();
        let flags = [
            "--cert-file",
            s(&pki.server_cert),
            "--key-file",
            s(&pki.server_key),
        ];
        let server = Server::try_start_tls(kind, &dir, &flags, &["--cacert", s(&pki.ca)])
            .unwrap_or_else(|e| panic!("{e}"));
        let tcp = TcpStream::connect(format!("127.0.0.1:{}", server.client_port())).unwrap();
        tcp.set_read_timeout(Some(CLOSE_TIMEOUT)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        let response = http1_get(rustls::StreamOwned::new(conn, tcp), "/not-served");
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{kind:?}: {response}"
        );
        assert!(
            response.ends_with("404 page not found\n"),
            "{kind:?}: {response}"
        );
    }
}

#[test]
fn auto_tls_serves_with_a_generated_certificate() {
    for kind in [Kind::Etcd, Kind::Retcd] {
        let tmp = tempfile::tempdir().unwrap();
        let etcdctl = ["--insecure-transport=false", "--insecure-skip-tls-verify"];
        let mut server = Server::try_start_tls(kind, tmp.path(), &["--auto-tls"], &etcdctl)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok(server.etcdctl(&["put", "k", "v"])), "OK\n");
        let fixtures = server.data_dir().join("fixtures/client");
        let cert = std::fs::read(fixtures.join("cert.pem")).expect("cert.pem");
        assert!(fixtures.join("key.pem").exists());
        // Without skipping verification nobody trusts a self-signed certificate.
        let out = server.etcdctl_as(
            &["--insecure-transport=false", FAST[0], FAST[1]],
            &["get", "k"],
        );
        assert!(!out.success(), "{kind:?}: {}", out.stdout);
        // A restart keeps the certificate.
        server.restart();
        assert_eq!(std::fs::read(fixtures.join("cert.pem")).unwrap(), cert);
        assert_eq!(
            ok(server.etcdctl(&["get", "k", "--print-value-only"])),
            "v\n"
        );
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn failed_handshakes_leave_the_server_answering() {
    const HANDSHAKES: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let dir = tmp.path().join("retcd");
    std::fs::create_dir_all(&dir).unwrap();
    let client = client_flags(&pki, &pki.client_cert, &pki.client_key);
    let server = Server::try_start_tls(Kind::Retcd, &dir, &server_flags(&pki), &client)
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = server.pid().unwrap();
    // A handshake that stops halfway, its client still connected: closed by the server's
    // handshake deadline (10 s), which the flood below outlasts.
    let stalled = send(&server, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
    let flood_started = Instant::now();
    // Warm up (allocator pools, the first connections' buffers) before measuring.
    for _ in 0..200 {
        refused_and_closed(&server, &[0x42; 64]);
    }
    let before = rss_kib(pid);
    for i in 0..HANDSHAKES {
        let bytes: &[u8] = match i % 3 {
            0 => &[0x42; 64],
            1 => &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01],
            _ => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        };
        refused_and_closed(&server, bytes);
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "resident memory grew from {before} KiB to {after} KiB over {HANDSHAKES} failed handshakes"
    );
    assert_eq!(ok(server.etcdctl(&["put", "k", "v"])), "OK\n");
    eprintln!(
        "{HANDSHAKES} failed handshakes took {:?}",
        flood_started.elapsed()
    );
    wait_closed(&server, stalled);
    // Logged, but not once per connection.
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    let logged = log
        .matches("rejected connection on client endpoint")
        .count();
    assert!(
        (1..HANDSHAKES / 10).contains(&logged),
        "{logged} rejections logged"
    );
}

#[test]
fn start_up_errors_name_the_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    // An https URL without a certificate: etcd's message, from both.
    for kind in [Kind::Etcd, Kind::Retcd] {
        let dir = tmp.path().join(kind.label());
        std::fs::create_dir_all(&dir).unwrap();
        let err = match Server::try_start_tls(kind, &dir, &[], &[]) {
            Ok(_) => panic!("{kind:?} started with an https URL and no certificate"),
            Err(e) => e,
        };
        assert!(
            err.contains("TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:"),
            "{kind:?}: {err}"
        );
    }
    // retcd checks the pair at start-up.
    let dir = tmp.path().join("mismatch");
    std::fs::create_dir_all(&dir).unwrap();
    let flags = [
        "--cert-file",
        s(&pki.server_cert),
        "--key-file",
        s(&pki.client_key),
    ];
    let err = Server::try_start_tls(Kind::Retcd, &dir, &flags, &[])
        .err()
        .expect("refused");
    assert!(
        err.contains("private key does not match public key"),
        "{err}"
    );
    for (flags, want) in [
        (
            vec!["--tls-min-version", "TLS1.1"],
            "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)",
        ),
        (
            vec!["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
            "min version (TLS1.3) is greater than max version (TLS1.2)",
        ),
        (
            vec!["--cipher-suites", "TLS_FOO"],
            "unexpected TLS cipher suite \"TLS_FOO\"",
        ),
        (
            vec!["--cert-file", s(&pki.server_cert)],
            "KeyFile and CertFile must both be present[key: , cert: ",
        ),
    ] {
        let dir = tmp.path().join("flags");
        let err = Server::try_start_tls(Kind::Retcd, &dir, &flags, &[])
            .err()
            .expect("refused");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
}
