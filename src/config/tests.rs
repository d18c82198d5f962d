//! End-to-end tests of the configuration: each drives [`parse_from`] (or the
//! flow behind it) with a command line, an environment and, where needed, a
//! config file, and checks the resulting `Config`, warnings or error text.
//! Unit tests of single parsers live next to them (see `value`).

use super::flags::lookup;
use super::value::parse_value;
use super::*;
use std::collections::HashMap;
use std::path::Path;

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.get(k).cloned();
    let mut full = vec!["retcd"];
    full.extend_from_slice(args);
    parse_from(full, &lookup)
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> (Config, Vec<String>) {
    match run_with(args, env) {
        Ok(Parsed::Run(c, w)) => (c, w),
        other => panic!("expected Run for {args:?}, got {other:?}"),
    }
}

fn err(args: &[&str], env: &[(&str, &str)]) -> String {
    match run_with(args, env) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("expected an error for {args:?}, got {other:?}"),
    }
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "retcd-config-test-{}-{}.yml",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults() {
    let (c, w) = ok(&[], &[]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c, Config::default());
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
    assert_eq!(c.dedicated_wal_dir, None);
    assert_eq!(c.wal_dir(), PathBuf::from("default.etcd/member/wal"));
    assert_eq!(c.member_dir(), PathBuf::from("default.etcd/member"));
    assert_eq!(c.db_path(), PathBuf::from("default.etcd/member/snap/db"));
    assert_eq!(c.listen_client_urls, vec![url("http://localhost:2379")]);
    assert_eq!(c.advertise_client_urls, vec![url("http://localhost:2379")]);
    assert_eq!(c.listen_peer_urls, vec![url("http://localhost:2380")]);
    assert_eq!(
        c.initial_advertise_peer_urls,
        vec![url("http://localhost:2380")]
    );
    assert_eq!(c.initial_cluster_string(), "default=http://localhost:2380");
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(c.quota_backend_bytes, 0);
    assert_eq!(c.quota_bytes(), 2 * 1024 * 1024 * 1024);
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.logger, "zap");
    assert_eq!(c.log_outputs, vec![LogOutput::Stderr]);
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.election_timeout, Duration::from_millis(1000));
    assert_eq!(c.election_ticks(), 10);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
    assert_eq!(c.config_file, None);
    assert_eq!(
        c.listen_client_addrs(),
        vec!["127.0.0.1:2379".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        c.listen_peer_addrs(),
        vec!["127.0.0.1:2380".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn data_dir_and_initial_cluster_default_from_name() {
    let (c, _) = ok(&["--name", "infra1"], &[]);
    assert_eq!(c.data_dir, PathBuf::from("infra1.etcd"));
    assert_eq!(c.initial_cluster_string(), "infra1=http://localhost:2380");
    // The derived initial cluster follows the advertised peer URLs.
    let (c, _) = ok(
        &[
            "--name=n2",
            "--initial-advertise-peer-urls=http://10.0.0.2:2380,http://10.0.0.3:2380",
        ],
        &[],
    );
    assert_eq!(
        c.initial_cluster_string(),
        "n2=http://10.0.0.2:2380,n2=http://10.0.0.3:2380"
    );
    // An explicit initial cluster is kept.
    let (c, _) = ok(
        &[
            "--name",
            "a",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.2:2380",
        ],
        &[],
    );
    assert_eq!(c.initial_cluster.len(), 2);
    assert_eq!(c.initial_cluster[1].name, "b");
    // An explicit data dir wins.
    let (c, _) = ok(&["--name", "a", "--data-dir", "/var/lib/etcd"], &[]);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd"));
    assert_eq!(c.db_path(), PathBuf::from("/var/lib/etcd/member/snap/db"));
    let (c, _) = ok(&["--wal-dir", "/wal"], &[]);
    assert_eq!(c.wal_dir(), PathBuf::from("/wal"));
}

#[test]
fn env_var_override() {
    let (c, w) = ok(
        &[],
        &[
            ("ETCD_NAME", "envname"),
            ("ETCD_DATA_DIR", "/data"),
            ("ETCD_SNAPSHOT_COUNT", "5000"),
            ("ETCD_LOG_LEVEL", "debug"),
            ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
            ("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "1m30s"),
            ("ETCD_QUOTA_BACKEND_BYTES", "-1"),
            ("ETCD_WAL_DIR", ""),
        ],
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.name, "envname");
    assert_eq!(c.data_dir, PathBuf::from("/data"));
    assert_eq!(c.snapshot_count, 5000);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(90));
    assert_eq!(c.quota_bytes(), u64::MAX);
    assert_eq!(c.dedicated_wal_dir, None);
    let e = err(&[], &[("ETCD_MAX_TXN_OPS", "lots")]);
    assert!(e.contains("ETCD_MAX_TXN_OPS") && e.contains("lots"), "{e}");
}

#[test]
fn flag_and_env_for_the_same_setting_conflict() {
    let e = err(
        &["--name", "fromflag"],
        &[("ETCD_NAME", "fromenv"), ("ETCD_MAX_TXN_OPS", "7")],
    );
    assert!(e.contains("ETCD_NAME") && e.contains("shadowed"), "{e}");
    // An empty variable counts as unset, as in etcd.
    let (c, _) = ok(
        &["--name", "fromflag"],
        &[("ETCD_NAME", ""), ("ETCD_MAX_TXN_OPS", "7")],
    );
    assert_eq!(c.name, "fromflag");
    assert_eq!(c.max_txn_ops, 7);
}

#[test]
fn go_flag_syntax() {
    let (c, _) = ok(
        &["-name", "a", "--max-txn-ops=9", "-snapshot-count=0x10"],
        &[],
    );
    assert_eq!(c.name, "a");
    assert_eq!(c.max_txn_ops, 9);
    assert_eq!(c.snapshot_count, 16);
    // Last occurrence wins, "--" ends the flags.
    let (c, _) = ok(&["--name", "a", "--name", "b", "--"], &[]);
    assert_eq!(c.name, "b");
    // Boolean flags: bare, =true, =false, Go spellings.
    for (arg, expect) in [
        ("--enable-pprof", true),
        ("--enable-pprof=true", true),
        ("--enable-pprof=T", true),
        ("--enable-pprof=false", false),
        ("-enable-pprof=0", false),
    ] {
        let (c, _) = ok(&[arg], &[]);
        assert_eq!(c.enable_pprof, expect, "{arg}");
        assert_eq!(c.serves_pprof(), expect, "{arg}");
    }
    let (c, _) = ok(&["--log-level=debug"], &[]);
    assert!(!c.enable_pprof && c.serves_pprof());
    // A boolean flag does not take the next argument.
    let e = err(&["--enable-pprof", "true"], &[]);
    assert_eq!(e, "'true' is not a valid flag");
    assert!(err(&["--enable-pprof=maybe"], &[]).contains("--enable-pprof"));
    assert_eq!(err(&["--name"], &[]), "flag needs an argument: --name");
    assert_eq!(err(&["---name"], &[]), "bad flag syntax: ---name");
    assert_eq!(err(&["stray"], &[]), "'stray' is not a valid flag");
    assert!(err(&["gateway", "start"], &[]).contains("gateway"));
}

#[test]
fn unknown_flag_error() {
    assert_eq!(
        err(&["--no-such-flag=1"], &[]),
        "flag provided but not defined: --no-such-flag"
    );
    assert_eq!(
        err(&["-bogus"], &[]),
        "flag provided but not defined: -bogus"
    );
}

#[test]
fn help_and_version() {
    for arg in ["-h", "--help", "-help"] {
        match run_with(&[arg], &[]).unwrap() {
            Parsed::Help(text) => {
                assert!(text.contains("--listen-client-urls 'http://localhost:2379'"));
                assert!(text.contains("--data-dir '${name}.etcd'"));
            }
            other => panic!("{other:?}"),
        }
    }
    match run_with(&["--version"], &[]).unwrap() {
        Parsed::Version(text) => {
            assert!(text.contains(&format!("retcd Version: {RETCD_VERSION}")));
            assert!(text.contains("etcd API Version: 3.5.0"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run_with(&["--version=false"], &[]).unwrap(),
        Parsed::Run(..)
    ));
    // ETCD_VERSION is not a way to ask for --version.
    let (_, w) = ok(&[], &[("ETCD_VERSION", "1")]);
    assert!(w.iter().any(|w| w.contains("ETCD_VERSION")), "{w:?}");
}

#[test]
fn security_flags_refused() {
    for args in [
        &["--host-whitelist", "example.com"][..],
        &["--cors", "http://example.com:80"],
        &["--discovery", "https://discovery.etcd.io/abc"],
        &["--proxy", "on"],
    ] {
        let e = err(args, &[]);
        let flag = args[0].split('=').next().unwrap();
        assert!(e.contains(flag) && e.contains("refused"), "{args:?}: {e}");
    }
    // Harmless values of security flags are fine.
    let (_, w) = ok(
        &[
            "--client-cert-auth=false",
            "--auth-token=simple",
            "--cors=*",
            "--host-whitelist=*",
            "--tls-min-version=TLS1.2",
            "--proxy=off",
        ],
        &[],
    );
    assert!(w.is_empty(), "{w:?}");
    // Environment variables too.
    let e = err(&[], &[("ETCD_CORS", "http://example.com:80")]);
    assert!(e.contains("ETCD_CORS") && e.contains("--cors"), "{e}");
    // https client URLs need a certificate (etcd's message); https peer URLs, peer TLS.
    let e = err(
        &[
            "--listen-client-urls=https://127.0.0.1:2379",
            "--advertise-client-urls=https://127.0.0.1:2379",
        ],
        &[],
    );
    assert_eq!(
        e,
        "TLS key/cert (--cert-file, --key-file) must be provided for client url \
         https://127.0.0.1:2379 with HTTPS scheme"
    );
    let e = err(&["--listen-peer-urls=https://127.0.0.1:2380"], &[]);
    assert_eq!(
        e,
        "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
    );
}

#[test]
fn tuning_flags_warned() {
    let (c, w) = ok(
        &[
            "--max-snapshots=10",
            "--grpc-keepalive-min-time",
            "1h",
            "--enable-v2",
            "--max-wals=5",
            "--snapshot",
        ],
        &[("ETCD_PRE_VOTE", "false")],
    );
    assert_eq!(c, Config::default());
    let expect = [
        "flag --max-snapshots has no effect in retcd: retcd keeps no .snap files (a Raft \
         snapshot streams from the page store, and a received one is removed once installed)",
        "flag --grpc-keepalive-min-time has no effect in retcd: the HTTP/2 server has no policy \
         on how often clients may ping (etcd's enforcement policy); pings are answered whatever \
         their rate",
        "flag --enable-v2 has no effect in retcd: retcd serves the v3 API only (v2 is \
         deprecated in etcd 3.5 and removed in 3.6)",
        "flag --pre-vote has no effect in retcd: retcd always runs Raft's pre-vote and \
         check-quorum (etcd's defaults) (set by environment variable ETCD_PRE_VOTE (flag \
         --pre-vote))",
        "flag --snapshot is no longer supported by etcd; ignored",
    ];
    for e in expect {
        assert!(w.iter().any(|w| w == e), "missing {e:?} in {w:?}");
    }
    // A value equal to etcd's default asks for nothing retcd lacks.
    assert!(!w.iter().any(|w| w.contains("--max-wals")), "{w:?}");
    assert_eq!(w.len(), expect.len(), "{w:?}");
    // etcd's own validation still applies to ignored flags.
    assert!(err(&["--grpc-keepalive-interval=soon"], &[]).contains("--grpc-keepalive-interval"));
}

#[test]
fn auto_compaction_settings() {
    use retcd_raft::compactor::Retention;
    use std::time::Duration;
    let hour = Duration::from_secs(3600);
    // Off by default (etcd: retention "0", mode periodic).
    assert_eq!(Config::default().auto_compaction, None);
    let retention = |args: &[&str], env: &[(&str, &str)]| {
        let (c, w) = ok(args, env);
        assert!(w.is_empty(), "{w:?}");
        c.auto_compaction
    };
    // periodic: a bare integer is hours; a duration is taken as is.
    assert_eq!(
        retention(&["--auto-compaction-retention=1"], &[]),
        Some(Retention::Periodic(hour))
    );
    assert_eq!(
        retention(
            &[
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "5m"
            ],
            &[]
        ),
        Some(Retention::Periodic(hour / 12))
    );
    assert_eq!(
        retention(&[], &[("ETCD_AUTO_COMPACTION_RETENTION", "2s")]),
        Some(Retention::Periodic(Duration::from_secs(2)))
    );
    // revision: an integer number of revisions; 0 is off in both modes.
    assert_eq!(
        retention(
            &[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=10"
            ],
            &[]
        ),
        Some(Retention::Revisions(10))
    );
    assert_eq!(
        retention(
            &["--auto-compaction-retention=0"],
            &[("ETCD_AUTO_COMPACTION_MODE", "revision")]
        ),
        None
    );
    assert_eq!(retention(&["--auto-compaction-retention=0s"], &[]), None);
    // etcd's refusals, with etcd's messages.
    assert_eq!(
        err(&["--auto-compaction-mode=weekly"], &[]),
        r#"unknown auto-compaction-mode "weekly""#
    );
    assert_eq!(
        err(&["--auto-compaction-retention=soon"], &[]),
        r#"error parsing CompactionRetention: time: invalid duration "soon""#
    );
    assert_eq!(
        err(
            &[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1x"
            ],
            &[]
        ),
        r#"error parsing CompactionRetention: time: unknown unit "x" in duration "1x""#
    );
    assert_eq!(
        err(&["--auto-compaction-retention=-3"], &[]),
        r#"error parsing CompactionRetention: time: missing unit in duration "-3""#
    );
}

#[test]
fn auth_settings() {
    let (c, w) = ok(&["--bcrypt-cost=4", "--auth-token-ttl=7"], &[]);
    assert_eq!((c.bcrypt_cost, c.auth_token_ttl.as_secs()), (4, 7));
    assert!(w.is_empty(), "{w:?}");
    // etcd replaces a cost bcrypt cannot use by its default, with a warning.
    let (c, w) = ok(&[], &[("ETCD_BCRYPT_COST", "3")]);
    assert_eq!(c.bcrypt_cost, 10);
    assert!(
        w.iter().any(|w| w.contains("invalid given cost 3")),
        "{w:?}"
    );
}

/// Key files for the JWT tests, made by openssl in a directory removed afterwards.
struct KeyFiles(tempfile::TempDir);

impl KeyFiles {
    fn new() -> KeyFiles {
        KeyFiles(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("/usr/bin/openssl")
            .args(args)
            .current_dir(self.0.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `<name>.pem` (private) and `<name>.pub` (public) with openssl's `genpkey` arguments.
    fn pair(&self, name: &str, genpkey: &[&str]) -> (String, String) {
        let (private, public) = (format!("{name}.pem"), format!("{name}.pub"));
        let mut args = vec!["genpkey", "-out", &private];
        args.extend_from_slice(genpkey);
        self.openssl(&args);
        self.openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
        (self.path(&private), self.path(&public))
    }

    fn p256(&self, name: &str) -> (String, String) {
        self.pair(
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        )
    }
}

fn jwt_of(c: &Config) -> &JwtConfig {
    match &c.auth_token {
        AuthTokenConfig::Jwt(j) => j,
        other => panic!("not JWT: {other:?}"),
    }
}

#[test]
fn auth_token_providers() {
    assert_eq!(Config::default().auth_token, AuthTokenConfig::Simple);
    for (given, provider) in [
        ("simple", AuthTokenConfig::Simple),
        // etcd's simple provider takes options and ignores them.
        ("simple,ttl=1s", AuthTokenConfig::Simple),
        ("", AuthTokenConfig::None),
    ] {
        let (c, w) = ok(&["--auth-token", given], &[]);
        assert_eq!(c.auth_token, provider, "{given:?}");
        assert!(w.is_empty(), "{w:?}");
    }

    let keys = KeyFiles::new();
    let (rsa, rsa_pub) = keys.pair(
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let arg = format!("jwt,pub-key={rsa_pub},priv-key={rsa},sign-method=RS256");
    let (c, w) = ok(&["--auth-token", &arg], &[]);
    assert!(w.is_empty(), "{w:?}");
    let j = jwt_of(&c);
    assert_eq!(
        (
            j.sign_method,
            j.ttl,
            j.pub_key.as_deref(),
            j.priv_key.as_deref()
        ),
        (
            retcd_net::auth::jwt::SignMethod::Rs256,
            Duration::from_secs(300),
            Some(Path::new(&rsa_pub)),
            Some(Path::new(&rsa)),
        )
    );
    let token = j.tokens.sign("root", 2).unwrap();
    assert_eq!(j.tokens.verify(&token).unwrap().user, "root");

    // A public key only: verify-only; from the environment and the config file too.
    let (p256, p256_pub) = keys.p256("p256");
    let arg = format!("jwt,sign-method=ES256,pub-key={p256_pub},ttl=1h30m");
    let (c, _) = ok(&[], &[("ETCD_AUTH_TOKEN", &arg)]);
    let j = jwt_of(&c);
    assert!(j.tokens.verify_only());
    assert_eq!(j.ttl, Duration::from_secs(5400));
    let file = TempFile::new(&format!(
        "name: a\nauth-token: jwt,sign-method=ES256,priv-key={p256}\n"
    ));
    let (c, _) = ok(&["--config-file", file.path()], &[]);
    assert!(!jwt_of(&c).tokens.verify_only());
    // HMAC: the private key file's bytes are the secret.
    let arg = format!("jwt,sign-method=HS512,priv-key={p256_pub}");
    let (c, _) = ok(&["--auth-token", &arg], &[]);
    assert!(!jwt_of(&c).tokens.verify_only());
    // Options etcd does not know are warned about, as etcd does.
    let arg = format!("jwt,sign-method=ES256,priv-key={p256},colour=blue");
    let (_, w) = ok(&["--auth-token", &arg], &[]);
    assert_eq!(w, vec![r#"unknown JWT options: ["colour"]"#.to_string()]);
}

#[test]
fn auth_token_refusals() {
    let keys = KeyFiles::new();
    let (p256, p256_pub) = keys.p256("p256");
    let (other, _) = keys.p256("other");
    let (_, ed_pub) = keys.pair("ed", &["-algorithm", "ed25519"]);
    let garbage = keys.path("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let missing = keys.path("missing.pem");
    let invalid = "auth: invalid auth options";
    let cases = [
        (
            "jwt".to_string(),
            format!("{invalid} (problem loading JWT options: auth: invalid auth signature method)"),
        ),
        (
            "jwt,sign-method=XX256".into(),
            "auth: invalid auth signature method".into(),
        ),
        (
            "jwt,sign-method=none".into(),
            "unsupported signing method: none".into(),
        ),
        (
            "jwt,foo".into(),
            format!("{invalid} (invalid token specific option: jwt,foo)"),
        ),
        (
            "jwt,sign-method=ES256=x".into(),
            "invalid token specific option".into(),
        ),
        (
            "jwt,,sign-method=ES256".into(),
            "invalid token specific option".into(),
        ),
        (
            "jwt,ttl=1s,ttl=2s".into(),
            "duplicated parameters (ttl)".into(),
        ),
        (
            "bogus".into(),
            format!("{invalid} (unknown token type: bogus)"),
        ),
        (
            "jwt,sign-method=ES256,ttl=5x".into(),
            "problem loading JWT options: ttl \"5x\"".into(),
        ),
        (
            format!("jwt,sign-method=ES256,priv-key={missing}"),
            format!("problem loading JWT options: open {missing}: "),
        ),
        (
            "jwt,sign-method=RS256".into(),
            "auth: missing key data".into(),
        ),
        (
            "jwt,sign-method=HS256".into(),
            "auth: missing key data".into(),
        ),
        (
            format!("jwt,sign-method=ES256,priv-key={other},pub-key={p256_pub}"),
            "auth: public and private keys don't match".into(),
        ),
        (
            format!("jwt,sign-method=ES256,priv-key={garbage}"),
            format!(
                "private key {garbage}: invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key"
            ),
        ),
        (
            format!("jwt,sign-method=ES256,pub-key={ed_pub}"),
            format!("public key {ed_pub}: key is not a valid ECDSA public key"),
        ),
        (
            format!("jwt,sign-method=RS256,priv-key={p256}"),
            format!("private key {p256}: key is not a valid RSA private key"),
        ),
    ];
    for (given, needle) in cases {
        let e = err(&["--auth-token", &given], &[]);
        assert!(
            e.starts_with(&format!("invalid value {given:?} for flag --auth-token: "))
                && e.contains(&needle),
            "{given}: {e}\nexpected to contain: {needle}"
        );
    }
    let e = err(&[], &[("ETCD_AUTH_TOKEN", "jwt")]);
    assert!(e.contains("ETCD_AUTH_TOKEN") && e.contains(invalid), "{e}");
}

#[test]
fn bad_urls() {
    for (value, needle) in [
        ("localhost:2379", "scheme"),
        ("ftp://127.0.0.1:2379", "scheme"),
        ("http://127.0.0.1", "host:port"),
        ("http://127.0.0.1:2379/v3", "path"),
        ("http://127.0.0.1:99999", "port"),
        ("http://:2379", "empty host"),
        ("unix://localhost:2379", "unix"),
        ("http://example.com:2379", "IP address or localhost"),
    ] {
        let e = err(
            &[
                "--listen-client-urls",
                value,
                "--advertise-client-urls",
                "http://10.0.0.1:2379",
            ],
            &[],
        );
        assert!(
            e.contains("--listen-client-urls") && e.contains(needle),
            "{value}: {e}"
        );
    }
    // Advertised URLs may use host names; lists are sorted and de-duplicated.
    let (c, _) = ok(
        &[
            "--listen-client-urls=http://0.0.0.0:2379,http://[::1]:2379,http://0.0.0.0:2379",
            "--advertise-client-urls=http://node1.example.com:2379",
        ],
        &[],
    );
    assert_eq!(c.listen_client_urls.len(), 2);
    assert_eq!(c.advertise_client_urls[0].host, "node1.example.com");
    assert_eq!(
        c.listen_client_addrs(),
        vec![
            "0.0.0.0:2379".parse::<SocketAddr>().unwrap(),
            "[::1]:2379".parse::<SocketAddr>().unwrap()
        ]
    );
    // etcd: explicit listen-client-urls needs explicit advertise-client-urls.
    let e = err(&["--listen-client-urls=http://127.0.0.1:2379"], &[]);
    assert!(e.contains("--advertise-client-urls is required"), "{e}");
    let e = err(&["--initial-cluster=a=http://1.2.3.4:2380,b"], &[]);
    assert!(
        e.contains("--initial-cluster") && e.contains("name=URL"),
        "{e}"
    );
}

#[test]
fn bad_cluster_state_and_other_values() {
    let e = err(&["--initial-cluster-state", "maybe"], &[]);
    assert!(
        e.contains("--initial-cluster-state") && e.contains("new, existing"),
        "{e}"
    );
    let e = err(&[], &[("ETCD_INITIAL_CLUSTER_STATE", "old")]);
    assert!(e.contains("ETCD_INITIAL_CLUSTER_STATE"), "{e}");
    assert!(err(&["--log-level=verbose"], &[]).contains("--log-level"));
    assert!(err(&["--logger=capnslog"], &[]).contains("capnslog"));
    assert!(err(&["--log-outputs=default,stdout"], &[]).contains("--log-outputs"));
    assert!(err(&["--heartbeat-interval=300"], &[]).contains("5 times"));
    assert!(err(&["--election-timeout=60000"], &[]).contains("too long"));
    assert!(err(&["--heartbeat-interval=0"], &[]).contains("must be >0"));
    assert!(err(&["--snapshot-count=-1"], &[]).contains("--snapshot-count"));
    let (c, _) = ok(
        &[
            "--log-outputs=stdout,/var/log/retcd.log",
            "--log-level=WARN",
        ],
        &[],
    );
    assert_eq!(
        c.log_outputs,
        vec![
            LogOutput::File("/var/log/retcd.log".into()),
            LogOutput::Stdout
        ]
    );
    assert_eq!(c.log_level, LogLevel::Warn);
    let (c, w) = ok(&["--experimental-watch-progress-notify-interval=1ms"], &[]);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_millis(100));
    assert_eq!(w.len(), 1);
    let (c, _) = ok(&["--experimental-watch-progress-notify-interval=0"], &[]);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
    let (c, _) = ok(&["--quota-backend-bytes=1073741824"], &[]);
    assert_eq!(c.quota_bytes(), 1 << 30);
    // etcd takes writes up to any --max-request-bytes; retcd up to what one WAL record holds.
    let (_, w) = ok(&["--max-request-bytes=4186088"], &[]);
    assert_eq!(w, Vec::<String>::new());
    let (c, w) = ok(&["--max-request-bytes=10485760"], &[]);
    assert_eq!(c.max_request_bytes, 10 << 20);
    assert_eq!(
        w,
        [
            "--max-request-bytes 10485760 exceeds what one WAL record holds (4186088 bytes of \
          request): larger writes are refused with \"etcdserver: request is too large\""
        ]
    );
}

#[test]
fn yaml_config_file() {
    let file = TempFile::new(
        "# etcd config\n\
         name: 'infra0'\n\
         data-dir:\n\
         wal-dir: /wal\n\
         snapshot-count: 10000\n\
         heartbeat-interval: 100\n\
         election-timeout: 1000\n\
         quota-backend-bytes: 4294967296\n\
         max-request-bytes: 2097152\n\
         max-txn-ops: 256\n\
         listen-peer-urls: http://10.0.0.1:2380\n\
         listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379\n\
         initial-advertise-peer-urls: http://10.0.0.1:2380\n\
         advertise-client-urls: http://10.0.0.1:2379\n\
         initial-cluster: infra0=http://10.0.0.1:2380,infra1=http://10.0.0.2:2380\n\
         initial-cluster-token: 'tok'\n\
         initial-cluster-state: 'existing'\n\
         log-level: debug\n\
         logger: zap\n\
         log-outputs: [stdout]\n\
         experimental-watch-progress-notify-interval: 5000000000\n\
         max-snapshots: 5\n\
         proxy: 'off'\n\
         enable-pprof: true\n\
         cors:\n\
         socket-options:\n\
         \x20 reuse-port: true\n\
         client-transport-security:\n\
         \x20 cert-file:\n\
         \x20 client-cert-auth: false\n\
         peer-transport-security:\n\
         \x20 auto-tls: false\n\
         \x20 allowed-cn:\n\
         no-such-key: 1\n",
    );
    let (c, w) = ok(&["--config-file", file.path()], &[]);
    assert_eq!(c.name, "infra0");
    assert_eq!(c.data_dir, PathBuf::from("infra0.etcd"));
    assert_eq!(c.wal_dir(), PathBuf::from("/wal"));
    assert_eq!(c.snapshot_count, 10_000);
    assert_eq!(c.quota_bytes(), 4 << 30);
    assert_eq!(c.max_request_bytes, 2_097_152);
    assert_eq!(c.max_txn_ops, 256);
    assert_eq!(c.listen_client_urls.len(), 2);
    assert_eq!(c.initial_cluster.len(), 2);
    assert_eq!(c.initial_cluster_token, "tok");
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.log_outputs, vec![LogOutput::Stdout]);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(5));
    assert_eq!(c.config_file.as_deref(), Some(Path::new(file.path())));
    assert!(c.enable_pprof, "{w:?}");
    assert!(c.socket_reuse_port);
    assert!(
        w.iter()
            .any(|w| w.contains("no-such-key") && w.contains("line 34")),
        "{w:?}"
    );
    assert_eq!(w.len(), 1, "{w:?}");

    // ETCD_CONFIG_FILE works too; flags and variables are then ignored.
    let (c, w) = ok(
        &["--name", "ignored"],
        &[("ETCD_CONFIG_FILE", file.path()), ("ETCD_DATA_DIR", "/x")],
    );
    assert_eq!(c.name, "infra0");
    assert_eq!(c.data_dir, PathBuf::from("infra0.etcd"));
    assert!(
        w.iter()
            .any(|w| w.contains("--name") && w.contains("ignored")),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("ETCD_DATA_DIR")), "{w:?}");
    // ...except security settings, which are refused rather than dropped.
    let e = err(&["--config-file", file.path(), "--cert-file=/c"], &[]);
    assert!(e.contains("--cert-file") && e.contains("refused"), "{e}");
}

#[test]
fn yaml_config_file_errors() {
    let tls = TempFile::new("name: a\npeer-transport-security:\n  cert-file: /tls/c.crt\n");
    let e = err(&["--config-file", tls.path()], &[]);
    assert_eq!(
        e,
        "KeyFile and CertFile must both be present[key: , cert: /tls/c.crt]"
    );
    let top = TempFile::new("trusted-ca-file: /ca.crt\n");
    let e = err(&["--config-file", top.path()], &[]);
    assert!(
        e.contains("trusted-ca-file") && e.contains("refused"),
        "{e}"
    );
    let peer = TempFile::new(
        "peer-transport-security:\n  allowed-cn: [etcd-peer]\n  allowed-hostname: [h]\n",
    );
    assert_eq!(
        err(&["--config-file", peer.path()], &[]),
        "AllowedCNs and AllowedHostnames are mutually exclusive (cns=[\"etcd-peer\"], \
         hostnames=[\"h\"])"
    );
    let bad = TempFile::new("name: a\ninitial-cluster-state: sideways\n");
    let e = err(&["--config-file", bad.path()], &[]);
    assert!(
        e.contains("initial-cluster-state") && e.contains("line 2"),
        "{e}"
    );
    let no_port = TempFile::new("listen-peer-urls: http://10.0.0.1\n");
    let e = err(&["--config-file", no_port.path()], &[]);
    assert!(
        e.contains("listen-peer-urls") && e.contains("line 1"),
        "{e}"
    );
    let syntax = TempFile::new("name: [unclosed\n");
    let e = err(&["--config-file", syntax.path()], &[]);
    assert!(
        e.contains("cannot parse config file") && e.contains("line"),
        "{e}"
    );
    let e = err(&["--config-file", "/nonexistent/retcd.yml"], &[]);
    assert!(e.contains("cannot read config file"), "{e}");
    // Empty state means "new"; empty URL lists keep the defaults.
    let empty = TempFile::new("initial-cluster-state: ''\nlisten-client-urls: ''\n");
    let (c, _) = ok(&["--config-file", empty.path()], &[]);
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert_eq!(c.listen_client_urls, vec![url("http://localhost:2379")]);
}

#[test]
fn unrecognized_env_warned() {
    let env = |_: &str| None;
    let names = vec![
        "ETCD_NAME".to_string(),
        "ETCD_NMAE".to_string(),
        "ETCDCTL_API".to_string(),
        "PATH".to_string(),
    ];
    match parse_args(&["retcd".to_string()], &env, Some(&names)).unwrap() {
        Parsed::Run(_, w) => {
            assert_eq!(
                w,
                vec!["unrecognized environment variable ETCD_NMAE; ignored"]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_etcd_flag_is_recognised() {
    let etcd_flags = "advertise-client-urls auth-token auth-token-ttl auto-compaction-mode \
        auto-compaction-retention auto-tls backend-batch-interval backend-batch-limit \
        backend-bbolt-freelist-type bcrypt-cost cert-file cipher-suites \
        client-cert-allowed-hostname client-cert-auth client-cert-file client-crl-file \
        client-key-file config-file cors data-dir discovery discovery-fallback \
        discovery-proxy discovery-srv discovery-srv-name election-timeout \
        enable-grpc-gateway enable-log-rotation enable-pprof enable-v2 \
        experimental-bootstrap-defrag-threshold-megabytes \
        experimental-compact-hash-check-enabled experimental-compact-hash-check-time \
        experimental-compaction-batch-limit experimental-compaction-sleep-interval \
        experimental-corrupt-check-time experimental-distributed-tracing-address \
        experimental-distributed-tracing-instance-id \
        experimental-distributed-tracing-sampling-rate \
        experimental-distributed-tracing-service-name experimental-downgrade-check-time \
        experimental-enable-distributed-tracing experimental-enable-lease-checkpoint \
        experimental-enable-lease-checkpoint-persist experimental-enable-v2v3 \
        experimental-initial-corrupt-check experimental-memory-mlock \
        experimental-peer-skip-client-san-verification experimental-snapshot-catchup-entries \
        experimental-stop-grpc-service-on-defrag \
        experimental-txn-mode-write-with-shared-buffer experimental-warning-apply-duration \
        experimental-watch-progress-notify-interval force-new-cluster \
        grpc-keepalive-interval grpc-keepalive-min-time grpc-keepalive-timeout \
        heartbeat-interval host-whitelist initial-advertise-peer-urls initial-cluster \
        initial-cluster-state initial-cluster-token initial-election-tick-advance key-file \
        listen-client-http-urls listen-client-urls listen-metrics-urls listen-peer-urls \
        log-level log-outputs log-rotation-config-json logger max-concurrent-streams \
        max-request-bytes max-snapshots max-txn-ops max-wals metrics name peer-auto-tls \
        peer-cert-allowed-cn peer-cert-allowed-hostname peer-cert-file \
        peer-client-cert-auth peer-client-cert-file peer-client-key-file peer-crl-file \
        peer-key-file peer-trusted-ca-file pre-vote proxy proxy-dial-timeout \
        proxy-failure-wait proxy-read-timeout proxy-refresh-interval proxy-write-timeout \
        quota-backend-bytes raft-read-timeout raft-write-timeout \
        self-signed-cert-validity snapshot-count socket-reuse-address socket-reuse-port \
        strict-reconfig-check tls-max-version tls-min-version trusted-ca-file \
        unsafe-no-fsync v2-deprecation version wal-dir";
    let names: Vec<&str> = etcd_flags.split_whitespace().collect();
    assert_eq!(names.len(), 112);
    for name in &names {
        assert!(lookup(name).is_some(), "--{name} is not recognised");
    }
    let real = SPECS
        .iter()
        .filter(|s| s.support != Support::Legacy)
        .count();
    assert_eq!(real, names.len(), "table has flags etcd 3.5 does not have");
    for spec in SPECS {
        parse_value(spec.kind, spec.default)
            .unwrap_or_else(|e| panic!("default of --{} does not parse: {e}", spec.name));
        if spec.support != Support::Legacy {
            assert!(!spec.help.is_empty(), "--{} has no help", spec.name);
        }
    }
    // Every flag at its default value is accepted silently.
    let args: Vec<String> = SPECS
        .iter()
        .filter(|s| !matches!(s.support, Support::Legacy | Support::Special))
        .filter(|s| !s.name.ends_with("-urls") && s.name != "initial-cluster")
        .map(|s| format!("--{}={}", s.name, s.default))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (c, w) = ok(&args, &[]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c, Config::default());
}

#[test]
fn client_tls_settings() {
    use retcd_net::tls::{TlsFiles, TlsVersion};
    let want = TlsFiles {
        cert_file: PathBuf::from("/tls/s.crt"),
        key_file: PathBuf::from("/tls/s.key"),
        trusted_ca_file: Some(PathBuf::from("/tls/ca.crt")),
        client_cert_auth: true,
        crl_file: None,
        allowed_cn: vec![],
        allowed_hostname: vec![],
    };
    // Flags, ETCD_* variables and the YAML section mean the same.
    let (c, w) = ok(
        &[
            "--cert-file=/tls/s.crt",
            "--key-file=/tls/s.key",
            "--trusted-ca-file=/tls/ca.crt",
            "--client-cert-auth",
            "--listen-client-urls=https://127.0.0.1:2379",
            "--advertise-client-urls=https://127.0.0.1:2379",
            "--tls-max-version=TLS1.2",
            "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ],
        &[],
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.client_tls.as_ref(), Some(&want));
    assert_eq!(c.tls_policy.max_version, Some(TlsVersion::Tls12));
    let (c, _) = ok(
        &[],
        &[
            ("ETCD_CERT_FILE", "/tls/s.crt"),
            ("ETCD_KEY_FILE", "/tls/s.key"),
            ("ETCD_TRUSTED_CA_FILE", "/tls/ca.crt"),
            ("ETCD_CLIENT_CERT_AUTH", "true"),
        ],
    );
    assert_eq!(c.client_tls.as_ref(), Some(&want));
    let file = TempFile::new(
        "client-transport-security:\n  cert-file: /tls/s.crt\n  key-file: /tls/s.key\n  \
         trusted-ca-file: /tls/ca.crt\n  client-cert-auth: true\n",
    );
    let (c, _) = ok(&["--config-file", file.path()], &[]);
    assert_eq!(c.client_tls.as_ref(), Some(&want));
    // The peer section too, with its allowed CN.
    let file = TempFile::new(
        "listen-peer-urls: https://127.0.0.1:2380\ninitial-advertise-peer-urls: https://127.0.0.1:2380\n\
         initial-cluster: default=https://127.0.0.1:2380\npeer-transport-security:\n  \
         cert-file: /tls/p.crt\n  key-file: /tls/p.key\n  trusted-ca-file: /tls/ca.crt\n  \
         client-cert-auth: true\n  allowed-cn: [etcd-peer]\n",
    );
    let (c, _) = ok(&["--config-file", file.path()], &[]);
    let peer = c.peer_tls.expect("peer TLS");
    assert_eq!(peer.cert_file, PathBuf::from("/tls/p.crt"));
    assert!(peer.client_cert_auth);
    assert_eq!(peer.allowed_cn, ["etcd-peer"]);
    // Certificates with only http URLs: etcd warns that it ignores them.
    let (_, w) = ok(&["--cert-file=/c", "--key-file=/k"], &[]);
    assert!(
        w.iter().any(|w| w.contains("ignoring key and cert files")),
        "{w:?}"
    );
    // --auto-tls with certificates given: ignored, as etcd says.
    let (c, w) = ok(&["--auto-tls", "--cert-file=/c", "--key-file=/k"], &[]);
    assert!(!c.client_auto_tls);
    assert!(
        w.iter()
            .any(|w| w == "ignoring client auto TLS since certs given"),
        "{w:?}"
    );
}
