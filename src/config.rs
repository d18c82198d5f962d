//! Server configuration: every setting `retcd` accepts at start-up, parsed the
//! way etcd 3.5 parses its own.
//!
//! This module owns:
//! * the command line (Go `flag` package rules: `-flag`, `--flag`,
//!   `--flag=value`, `--flag value`; boolean flags take no separate value),
//! * the `ETCD_*` environment variables (flag name upper-cased, `-` → `_`),
//!   used only for flags not given on the command line,
//! * etcd's YAML config file (`--config-file` / `ETCD_CONFIG_FILE`); as in
//!   etcd, when a file is given every other flag and environment variable is
//!   ignored (with a warning here),
//! * etcd's defaults and its start-up validation rules,
//! * the split between settings retcd implements (typed fields of [`Config`]),
//!   settings it accepts but does not honour yet (a warning naming the flag),
//!   and settings it refuses until implemented because running without them
//!   would weaken security or form a different cluster (TLS, non-simple auth
//!   tokens, origin filtering, discovery, proxy mode, `--force-new-cluster`),
//! * `--help` / `--version` texts and the resolved paths and socket addresses
//!   the server needs.
//!
//! Nothing here logs: warnings are returned with the configuration so that
//! `main` can emit them once logging (configured from this very config) is up.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The etcd release whose API and command line retcd implements (Status reports the same).
pub use retcd_net::maintenance::ETCD_API_VERSION;
/// retcd's own version.
pub const RETCD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default member name (`--name`).
pub const DEFAULT_NAME: &str = "default";
/// Backend quota used when `--quota-backend-bytes` is 0 (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Largest quota etcd recommends (8 GiB); larger values only warn.
pub const MAX_SUGGESTED_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Default `--snapshot-count` (etcd 3.5); 0 also means this.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// Watch progress notification period used when the flag is 0 or negative.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Smallest watch progress notification period etcd allows.
pub const MIN_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_millis(100);
/// Largest `--election-timeout` etcd accepts, in milliseconds.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// `--initial-cluster` before etcd's "use ${name}" rule is applied.
const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
/// Prefix of the environment variables that stand for flags.
const ENV_PREFIX: &str = "ETCD_";
/// Environment variables etcd reads that are not flags.
const OTHER_KNOWN_ENV: &[&str] = &["ETCD_UNSUPPORTED_ARCH"];

// ---------------------------------------------------------------------------
// Public value types
// ---------------------------------------------------------------------------

/// URL scheme of a client or peer URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A client or peer URL as etcd accepts it: `scheme://host:port`, no path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Url {
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl Url {
    /// Parses one URL with etcd's rules (scheme http/https, `host:port`,
    /// no path). `unix`/`unixs` URLs, valid in etcd, are not supported yet.
    pub fn parse(input: &str) -> Result<Url, String> {
        let s = input.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("URL scheme must be http or https: {s}"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "unix" | "unixs" => {
                return Err(format!(
                    "unix socket URLs are not supported by retcd yet: {s}"
                ));
            }
            _ => return Err(format!("URL scheme must be http or https: {s}")),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if !tail.is_empty() {
            return Err(format!("URL must not contain a path: {s}"));
        }
        if authority.contains('@') {
            return Err(format!("URL must not contain user information: {s}"));
        }
        let not_host_port = || format!("URL address does not have the form \"host:port\": {s}");
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(not_host_port)?;
            let port = after.strip_prefix(':').ok_or_else(not_host_port)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("invalid IPv6 address in URL: {s}"));
            }
            (host, port)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(not_host_port)?;
            if host.contains(':') {
                return Err(not_host_port());
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("URL has an empty host: {s}"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        {
            return Err(format!("invalid character in URL host: {s}"));
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port in URL: {s}"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port out of range in URL: {s}"))?;
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// `host:port` (IPv6 hosts in brackets), as Go's `url.URL.Host`.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address to bind for a listen URL: an IP literal, or `localhost`
    /// as 127.0.0.1 (what etcd ends up binding). `None` for other host names.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = if self.host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.host.parse::<IpAddr>().ok()?
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host_port())
    }
}

/// One member of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    /// Peer URLs, sorted and de-duplicated as etcd does.
    pub peer_urls: Vec<Url>,
}

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--log-level` (zap's level names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    DPanic,
    Panic,
    Fatal,
}

impl LogLevel {
    /// Parses zap's level names (lower or upper case); empty means info.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" | "" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "dpanic" => LogLevel::DPanic,
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::DPanic => "dpanic",
            LogLevel::Panic => "panic",
            LogLevel::Fatal => "fatal",
        }
    }

    /// The closest `tracing` level (panic and fatal map to ERROR).
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            _ => tracing::Level::ERROR,
        }
    }
}

/// One `--log-outputs` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// `stderr` or `default` (and `systemd/journal`, not supported yet).
    Stderr,
    Stdout,
    /// Any other value: a file path to append to.
    File(PathBuf),
}

/// The resolved server configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (`${name}.etcd` when not given).
    pub data_dir: PathBuf,
    /// `--wal-dir`; `None` means `<data-dir>/member/wal` (see [`Config::wal_dir`]).
    pub dedicated_wal_dir: Option<PathBuf>,
    /// `--listen-client-urls` (sorted, de-duplicated).
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<Url>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster`, parsed, members in order of first appearance.
    /// May be empty (only meaningful when bootstrapping a new member).
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--snapshot-count` (0 already replaced by the default).
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`.
    pub snapshot_catchup_entries: u64,
    /// `--quota-backend-bytes` as given: 0 = default, negative = no quota.
    /// Use [`Config::quota_bytes`].
    pub quota_backend_bytes: i64,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--logger` (always "zap").
    pub logger: String,
    /// `--log-outputs`.
    pub log_outputs: Vec<LogOutput>,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--experimental-watch-progress-notify-interval`, resolved (0 or
    /// negative → 10m, below 100ms → 100ms).
    pub watch_progress_notify_interval: Duration,
    /// The config file the settings came from, if any.
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    /// etcd's defaults.
    fn default() -> Config {
        build(&Settings::new(), false, &mut Vec::new()).expect("etcd defaults are valid")
    }
}

impl Config {
    /// `<data-dir>/member`.
    pub fn member_dir(&self) -> PathBuf {
        self.data_dir.join("member")
    }

    /// The WAL directory: `--wal-dir` if given, else `<data-dir>/member/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        match &self.dedicated_wal_dir {
            Some(dir) => dir.clone(),
            None => self.member_dir().join("wal"),
        }
    }

    /// `<data-dir>/member/snap`.
    pub fn snap_dir(&self) -> PathBuf {
        self.member_dir().join("snap")
    }

    /// `<data-dir>/member/snap/db`.
    pub fn db_path(&self) -> PathBuf {
        self.snap_dir().join("db")
    }

    /// Socket addresses to bind for client traffic (`localhost` → 127.0.0.1).
    pub fn listen_client_addrs(&self) -> Vec<SocketAddr> {
        bind_addrs(&self.listen_client_urls)
    }

    /// Socket addresses to bind for peer traffic (`localhost` → 127.0.0.1).
    pub fn listen_peer_addrs(&self) -> Vec<SocketAddr> {
        bind_addrs(&self.listen_peer_urls)
    }

    /// Backend quota in bytes: 2 GiB for 0, `u64::MAX` (no quota) for a
    /// negative `--quota-backend-bytes`, as in etcd.
    pub fn quota_bytes(&self) -> u64 {
        match self.quota_backend_bytes {
            0 => DEFAULT_QUOTA_BYTES,
            q if q < 0 => u64::MAX,
            q => q as u64,
        }
    }

    /// Election timeout in heartbeat ticks.
    pub fn election_ticks(&self) -> u64 {
        (self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1)) as u64
    }

    /// `--initial-cluster` in etcd's `name=url,name=url` form.
    pub fn initial_cluster_string(&self) -> String {
        let mut parts = Vec::new();
        for member in &self.initial_cluster {
            for url in &member.peer_urls {
                parts.push(format!("{}={}", member.name, url));
            }
        }
        parts.join(",")
    }

    /// Whether a new cluster is being bootstrapped.
    pub fn is_new_cluster(&self) -> bool {
        self.initial_cluster_state == ClusterState::New
    }
}

fn bind_addrs(urls: &[Url]) -> Vec<SocketAddr> {
    urls.iter()
        .map(|u| {
            u.socket_addr()
                .expect("listen URLs are validated as IP or localhost")
        })
        .collect()
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Run the server with this configuration; the strings are warnings to
    /// log once logging is set up.
    Run(Config, Vec<String>),
    /// `--version`: print this text to stdout and exit 0.
    Version(String),
    /// `-h` / `--help`: print this text to stdout and exit 0.
    Help(String),
}

/// Why the configuration was rejected. Messages name the flag, environment
/// variable or config-file key (with its line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("flag provided but not defined: {flag}")]
    UnknownFlag { flag: String },
    #[error("bad flag syntax: {arg}")]
    BadFlagSyntax { arg: String },
    #[error("flag needs an argument: --{flag}")]
    MissingValue { flag: String },
    #[error("'{arg}' is not a valid flag")]
    NotAFlag { arg: String },
    #[error("command-line argument {index} is not valid UTF-8: {arg}")]
    NotUtf8 { index: usize, arg: String },
    #[error("the etcd '{name}' subcommand is not supported by retcd")]
    UnsupportedSubcommand { name: String },
    #[error("invalid value {value:?} for {origin}: {reason}")]
    InvalidValue {
        origin: String,
        value: String,
        reason: String,
    },
    #[error("{origin} is refused: {reason}")]
    Refused { origin: String, reason: String },
    #[error("cannot read config file {}: {source}", path.display())]
    ReadConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse config file {}: {message}", path.display())]
    ParseConfigFile { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Parses the process's command line and environment.
pub fn parse() -> Result<Parsed, ConfigError> {
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    let args = args_to_strings(std::env::args_os())?;
    parse_args(&args, &env, Some(&names))
}

/// Parses `args` (the first item is the program name, as in `std::env::args`)
/// with `env` looking up environment variables.
pub fn parse_from<I, T>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args = args_to_strings(args)?;
    parse_args(&args, env, None)
}

/// The `--version` text.
pub fn version_text() -> String {
    format!(
        "retcd Version: {}\netcd API Version: {}\nGit SHA: {}\nOS/Arch: {}/{}\n",
        RETCD_VERSION,
        ETCD_API_VERSION,
        option_env!("RETCD_GIT_SHA").unwrap_or("Not provided"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    )
}

/// The `--help` text: usage, then every etcd 3.5 flag with its default and
/// whether retcd honours, ignores or refuses it.
pub fn help_text() -> String {
    let mut out = String::from(
        "Usage:\n\n  retcd [flags]\n    Start a retcd (etcd-compatible) server.\n\n  \
         retcd --version\n    Print the version and exit.\n\n  retcd -h | --help\n    \
         Print this help and exit.\n\n  retcd --config-file FILE\n    Read the settings from \
         an etcd YAML config file; other flags and ETCD_* variables are then ignored.\n\n\
         Every flag may also be set through an environment variable: ETCD_ followed by the \
         flag name in upper case with '-' replaced by '_' (e.g. ETCD_DATA_DIR). A flag given \
         on the command line wins over its variable.\n",
    );
    for section in SECTIONS {
        out.push('\n');
        out.push_str(section.title());
        out.push_str(":\n");
        for spec in SPECS.iter().filter(|s| s.section == *section) {
            let shown = match spec.name {
                "data-dir" => "${name}.etcd",
                _ => spec.default,
            };
            out.push_str(&format!("  --{} '{}'\n", spec.name, shown));
            out.push_str(&format!("    {}\n", spec.help));
            match spec.support {
                Support::Ignored => {
                    out.push_str("    (retcd: accepted but not implemented yet; ignored)\n")
                }
                Support::Security | Support::Unsupported | Support::Bcrypt => out.push_str(
                    "    (retcd: not implemented yet; refused unless left at its default)\n",
                ),
                _ => {}
            }
        }
    }
    out
}

fn args_to_strings<I, T>(args: I) -> Result<Vec<String>, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    args.into_iter()
        .enumerate()
        .map(|(index, a)| {
            a.into().into_string().map_err(|a| ConfigError::NotUtf8 {
                index,
                arg: a.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

fn parse_args(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    env_names: Option<&[String]>,
) -> Result<Parsed, ConfigError> {
    let args = args.get(1..).unwrap_or(&[]);
    if let Some(first) = args.first()
        && (first == "gateway" || first == "grpc-proxy")
    {
        return Err(ConfigError::UnsupportedSubcommand {
            name: first.clone(),
        });
    }
    let cmdline = match parse_command_line(args)? {
        CommandLine::Help => return Ok(Parsed::Help(help_text())),
        CommandLine::Settings(settings) => settings,
    };
    if matches!(cmdline.get("version"), Some(s) if s.value == Value::Bool(true)) {
        return Ok(Parsed::Version(version_text()));
    }

    let mut warnings = Vec::new();
    let config_file = match cmdline.get("config-file") {
        Some(Setting {
            value: Value::Str(path),
            ..
        }) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => non_empty(env(&env_var_name("config-file"))).map(PathBuf::from),
    };

    let mut config = if let Some(path) = &config_file {
        refuse_or_report_ignored(&cmdline, env, path, &mut warnings)?;
        let settings = load_config_file(path, &mut warnings)?;
        build(&settings, true, &mut warnings)?
    } else {
        let mut settings = cmdline;
        apply_env(&mut settings, env, &mut warnings)?;
        if let Some(names) = env_names {
            warn_unrecognized_env(names, &mut warnings);
        }
        build(&settings, false, &mut warnings)?
    };
    config.config_file = config_file;
    Ok(Parsed::Run(config, warnings))
}

// ---------------------------------------------------------------------------
// Flag table
// ---------------------------------------------------------------------------

/// How a flag's value is written (Go flag types of etcd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    /// Go `uint` / `uint64`.
    Uint,
    Uint32,
    /// Go `int` / `int64`.
    Int,
    /// Go `time.Duration` ("10m", "1h30m", "100ms").
    Duration,
    /// Comma-separated URLs.
    Urls,
    /// Comma-separated strings, kept in order.
    Strings,
    /// Comma-separated strings, sorted and de-duplicated.
    UniqueStrings,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// Comma-separated words, each one of the listed words.
    Choices(&'static [&'static str]),
    /// Flag etcd no longer supports but still accepts (boolean-like, any value).
    Legacy,
}

/// What retcd does with a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Support {
    /// Typed field of [`Config`].
    Implemented,
    /// `--config-file`, `--version`.
    Special,
    /// Accepted; a non-default value produces a warning.
    Ignored,
    /// Refused with a non-default value: running without it would weaken
    /// security.
    Security,
    /// Refused with a non-default value: ignoring it would start a different
    /// kind of server or cluster.
    Unsupported,
    /// `--bcrypt-cost`: refused above the default, warned below it.
    Bcrypt,
    /// Flags etcd itself ignores with a warning.
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Member,
    Clustering,
    Security,
    Auth,
    Monitoring,
    Logging,
    Tracing,
    Proxy,
    Experimental,
    Unsafe,
    Other,
    Legacy,
}

const SECTIONS: &[Section] = &[
    Section::Member,
    Section::Clustering,
    Section::Security,
    Section::Auth,
    Section::Monitoring,
    Section::Logging,
    Section::Tracing,
    Section::Proxy,
    Section::Experimental,
    Section::Unsafe,
    Section::Other,
];

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Member => "Member",
            Section::Clustering => "Clustering",
            Section::Security => "Security",
            Section::Auth => "Auth",
            Section::Monitoring => "Profiling and Monitoring",
            Section::Logging => "Logging",
            Section::Tracing => "Experimental distributed tracing",
            Section::Proxy => "v2 Proxy (deprecated in etcd 3.5)",
            Section::Experimental => "Experimental features",
            Section::Unsafe => "Unsafe features",
            Section::Other => "Other",
            Section::Legacy => "Legacy",
        }
    }
}

struct Spec {
    name: &'static str,
    kind: Kind,
    /// etcd's default, written as on the command line.
    default: &'static str,
    support: Support,
    section: Section,
    help: &'static str,
}

const fn f(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    support: Support,
    section: Section,
    help: &'static str,
) -> Spec {
    Spec {
        name,
        kind,
        default,
        support,
        section,
        help,
    }
}

const fn legacy(name: &'static str) -> Spec {
    f(name, Kind::Legacy, "", Support::Legacy, Section::Legacy, "")
}

use Kind as K;
use Section as Sec;
use Support as S;

const CLUSTER_STATES: &[&str] = &["new", "existing"];
const FALLBACKS: &[&str] = &["proxy", "exit"];
const PROXY_MODES: &[&str] = &["off", "readonly", "on"];
const V2_DEPRECATION: &[&str] = &[
    "not-yet",
    "write-only",
    "write-only-skip-check",
    "write-only-drop-data",
    "gone",
];
const LOG_ROTATION_DEFAULT: &str =
    r#"{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#;

/// Every etcd 3.5 server flag (as of v3.5.33), plus the legacy flags etcd
/// still swallows.
#[rustfmt::skip]
static SPECS: &[Spec] = &[
    // Member
    f("name", K::Str, "default", S::Implemented, Sec::Member, "Human-readable name of this member."),
    f("data-dir", K::Str, "", S::Implemented, Sec::Member, "Directory holding the member's data."),
    f("wal-dir", K::Str, "", S::Implemented, Sec::Member, "Separate directory for the write-ahead log (default: <data-dir>/member/wal)."),
    f("snapshot-count", K::Uint, "100000", S::Implemented, Sec::Member, "Committed entries between two snapshots to disk."),
    f("heartbeat-interval", K::Uint, "100", S::Implemented, Sec::Member, "Heartbeat interval, in milliseconds."),
    f("election-timeout", K::Uint, "1000", S::Implemented, Sec::Member, "Election timeout, in milliseconds (at least 5 heartbeats, at most 50000)."),
    f("initial-election-tick-advance", K::Bool, "true", S::Ignored, Sec::Member, "Fast-forward election ticks at boot so a first election happens sooner."),
    f("listen-peer-urls", K::Urls, "http://localhost:2380", S::Implemented, Sec::Member, "URLs to listen on for traffic from other members."),
    f("listen-client-urls", K::Urls, "http://localhost:2379", S::Implemented, Sec::Member, "URLs to listen on for client traffic (gRPC, and HTTP unless --listen-client-http-urls is set)."),
    f("listen-client-http-urls", K::Urls, "", S::Ignored, Sec::Member, "URLs to listen on for HTTP-only client traffic."),
    f("max-snapshots", K::Uint, "5", S::Ignored, Sec::Member, "Snapshot files to keep (0: no limit)."),
    f("max-wals", K::Uint, "5", S::Ignored, Sec::Member, "WAL files to keep (0: no limit)."),
    f("quota-backend-bytes", K::Int, "0", S::Implemented, Sec::Member, "Backend size that raises the NOSPACE alarm (0: 2 GiB; negative: no quota)."),
    f("backend-bbolt-freelist-type", K::Str, "map", S::Ignored, Sec::Member, "bbolt free-list type (array or map)."),
    f("backend-batch-interval", K::Duration, "0s", S::Ignored, Sec::Member, "Longest time before a backend transaction is committed."),
    f("backend-batch-limit", K::Int, "0", S::Ignored, Sec::Member, "Most operations before a backend transaction is committed."),
    f("max-txn-ops", K::Uint, "128", S::Implemented, Sec::Member, "Most operations allowed in one transaction."),
    f("max-request-bytes", K::Uint, "1572864", S::Implemented, Sec::Member, "Largest client request accepted, in bytes."),
    f("max-concurrent-streams", K::Uint32, "4294967295", S::Ignored, Sec::Member, "Most concurrent gRPC streams per client connection."),
    f("enable-grpc-gateway", K::Bool, "true", S::Ignored, Sec::Member, "Serve the JSON/HTTP gateway to the gRPC API."),
    f("grpc-keepalive-min-time", K::Duration, "5s", S::Ignored, Sec::Member, "Shortest interval a client may ping the server at."),
    f("grpc-keepalive-interval", K::Duration, "2h", S::Ignored, Sec::Member, "How often the server pings an idle connection (0: never)."),
    f("grpc-keepalive-timeout", K::Duration, "20s", S::Ignored, Sec::Member, "How long to wait for a ping reply before closing (0: forever)."),
    f("socket-reuse-port", K::Bool, "false", S::Ignored, Sec::Member, "Set SO_REUSEPORT on listeners."),
    f("socket-reuse-address", K::Bool, "false", S::Ignored, Sec::Member, "Set SO_REUSEADDR on listeners."),
    f("raft-read-timeout", K::Duration, "5s", S::Ignored, Sec::Member, "Read timeout of peer connections."),
    f("raft-write-timeout", K::Duration, "5s", S::Ignored, Sec::Member, "Write timeout of peer connections."),
    // Clustering
    f("initial-advertise-peer-urls", K::Urls, "http://localhost:2380", S::Implemented, Sec::Clustering, "Peer URLs of this member, as the other members should use them."),
    f("initial-cluster", K::Str, DEFAULT_INITIAL_CLUSTER, S::Implemented, Sec::Clustering, "Members at bootstrap, as name=peer-url pairs separated by commas (default uses --name and --initial-advertise-peer-urls)."),
    f("initial-cluster-state", K::Choice(CLUSTER_STATES), "new", S::Implemented, Sec::Clustering, "'new' to bootstrap a new cluster, 'existing' to join one; ignored once the member is initialised."),
    f("initial-cluster-token", K::Str, "etcd-cluster", S::Implemented, Sec::Clustering, "Token that keeps separately bootstrapped clusters apart."),
    f("advertise-client-urls", K::Urls, "http://localhost:2379", S::Implemented, Sec::Clustering, "Client URLs of this member, as clients should use them; required when --listen-client-urls is given."),
    f("discovery", K::Str, "", S::Unsupported, Sec::Clustering, "Discovery service URL to bootstrap the cluster with."),
    f("discovery-fallback", K::Choice(FALLBACKS), "proxy", S::Ignored, Sec::Clustering, "What to do when discovery fails: 'exit' or 'proxy'."),
    f("discovery-proxy", K::Str, "", S::Ignored, Sec::Clustering, "HTTP proxy for talking to the discovery service."),
    f("discovery-srv", K::Str, "", S::Unsupported, Sec::Clustering, "DNS domain whose SRV records list the initial members."),
    f("discovery-srv-name", K::Str, "", S::Unsupported, Sec::Clustering, "Suffix of the SRV names queried during DNS discovery."),
    f("strict-reconfig-check", K::Bool, "true", S::Ignored, Sec::Clustering, "Reject membership changes that would lose quorum."),
    f("pre-vote", K::Bool, "true", S::Ignored, Sec::Clustering, "Run Raft's pre-vote phase before elections."),
    f("auto-compaction-retention", K::Str, "0", S::Ignored, Sec::Clustering, "History to keep when compacting automatically (0: no automatic compaction)."),
    f("auto-compaction-mode", K::Str, "periodic", S::Ignored, Sec::Clustering, "How the retention is read: 'periodic' (a duration, hours by default) or 'revision'."),
    f("enable-v2", K::Bool, "false", S::Ignored, Sec::Clustering, "Serve the v2 API (deprecated in etcd 3.5)."),
    f("v2-deprecation", K::Choices(V2_DEPRECATION), "not-yet", S::Ignored, Sec::Clustering, "v2 store deprecation phase: not-yet, write-only, write-only-skip-check, write-only-drop-data or gone."),
    // Security
    f("cert-file", K::Str, "", S::Security, Sec::Security, "TLS certificate for client connections."),
    f("key-file", K::Str, "", S::Security, Sec::Security, "TLS key for client connections."),
    f("client-cert-auth", K::Bool, "false", S::Security, Sec::Security, "Require client certificates."),
    f("client-cert-file", K::Str, "", S::Security, Sec::Security, "Client certificate used when this member acts as a client (default: --cert-file)."),
    f("client-key-file", K::Str, "", S::Security, Sec::Security, "Client key used when this member acts as a client (default: --key-file)."),
    f("client-crl-file", K::Str, "", S::Security, Sec::Security, "Certificate revocation list for client certificates."),
    f("client-cert-allowed-hostname", K::Strings, "", S::Security, Sec::Security, "SAN host names allowed in client certificates."),
    f("trusted-ca-file", K::Str, "", S::Security, Sec::Security, "CA bundle for verifying client certificates."),
    f("auto-tls", K::Bool, "false", S::Security, Sec::Security, "Serve clients over TLS with a generated self-signed certificate."),
    f("peer-cert-file", K::Str, "", S::Security, Sec::Security, "TLS certificate for peer connections."),
    f("peer-key-file", K::Str, "", S::Security, Sec::Security, "TLS key for peer connections."),
    f("peer-client-cert-auth", K::Bool, "false", S::Security, Sec::Security, "Require certificates from peers."),
    f("peer-trusted-ca-file", K::Str, "", S::Security, Sec::Security, "CA bundle for verifying peer certificates."),
    f("peer-cert-allowed-cn", K::Strings, "", S::Security, Sec::Security, "Common names allowed in peer certificates."),
    f("peer-cert-allowed-hostname", K::Strings, "", S::Security, Sec::Security, "SAN host names allowed in peer certificates."),
    f("peer-auto-tls", K::Bool, "false", S::Security, Sec::Security, "Talk to peers over TLS with a generated self-signed certificate."),
    f("peer-client-cert-file", K::Str, "", S::Security, Sec::Security, "Client certificate for outgoing peer connections (default: --peer-cert-file)."),
    f("peer-client-key-file", K::Str, "", S::Security, Sec::Security, "Client key for outgoing peer connections (default: --peer-key-file)."),
    f("self-signed-cert-validity", K::Uint, "1", S::Ignored, Sec::Security, "Validity of generated certificates, in years."),
    f("peer-crl-file", K::Str, "", S::Security, Sec::Security, "Certificate revocation list for peer certificates."),
    f("cipher-suites", K::Strings, "", S::Security, Sec::Security, "TLS cipher suites to allow (empty: the implementation's defaults)."),
    f("cors", K::Strings, "*", S::Security, Sec::Security, "Origins allowed for cross-origin requests ('*' or empty: any)."),
    f("host-whitelist", K::UniqueStrings, "*", S::Security, Sec::Security, "Host headers accepted on insecure HTTP ('*' or empty: any)."),
    f("tls-min-version", K::Str, "TLS1.2", S::Security, Sec::Security, "Lowest TLS version accepted (TLS1.2 or TLS1.3)."),
    f("tls-max-version", K::Str, "", S::Security, Sec::Security, "Highest TLS version accepted (TLS1.2, TLS1.3; empty: newest)."),
    f("experimental-peer-skip-client-san-verification", K::Bool, "false", S::Ignored, Sec::Security, "Do not check the SAN of peer client certificates."),
    // Auth
    f("auth-token", K::Str, "simple", S::Security, Sec::Auth, "Authentication token provider and its options ('simple' or 'jwt,...')."),
    f("bcrypt-cost", K::Uint, "10", S::Bcrypt, Sec::Auth, "bcrypt cost factor for password hashes (4 to 31)."),
    f("auth-token-ttl", K::Uint, "300", S::Ignored, Sec::Auth, "Lifetime of simple tokens, in seconds."),
    // Profiling and monitoring
    f("enable-pprof", K::Bool, "false", S::Ignored, Sec::Monitoring, "Serve runtime profiles under <client-url>/debug/pprof/."),
    f("metrics", K::Str, "basic", S::Ignored, Sec::Monitoring, "Metrics detail: 'basic' or 'extensive' (adds gRPC latency histograms)."),
    f("listen-metrics-urls", K::Urls, "", S::Ignored, Sec::Monitoring, "Extra URLs serving /metrics and /health."),
    // Logging
    f("logger", K::Str, "zap", S::Implemented, Sec::Logging, "Logger implementation; only 'zap' (structured logging) exists in etcd 3.5."),
    f("log-outputs", K::UniqueStrings, "default", S::Implemented, Sec::Logging, "Where logs go: 'default' or 'stderr', 'stdout', or file paths, comma separated."),
    f("log-level", K::Str, "info", S::Implemented, Sec::Logging, "Log level: debug, info, warn, error, panic or fatal."),
    f("enable-log-rotation", K::Bool, "false", S::Ignored, Sec::Logging, "Rotate the log file (needs a single file in --log-outputs)."),
    f("log-rotation-config-json", K::Str, LOG_ROTATION_DEFAULT, S::Ignored, Sec::Logging, "Log rotation settings as JSON."),
    // Tracing
    f("experimental-enable-distributed-tracing", K::Bool, "false", S::Ignored, Sec::Tracing, "Export OpenTelemetry traces."),
    f("experimental-distributed-tracing-address", K::Str, "localhost:4317", S::Ignored, Sec::Tracing, "Address of the trace collector."),
    f("experimental-distributed-tracing-service-name", K::Str, "etcd", S::Ignored, Sec::Tracing, "Service name in traces; the same on every member."),
    f("experimental-distributed-tracing-instance-id", K::Str, "", S::Ignored, Sec::Tracing, "Instance ID in traces; unique per member."),
    f("experimental-distributed-tracing-sampling-rate", K::Int, "0", S::Ignored, Sec::Tracing, "Spans sampled per million."),
    // v2 proxy
    f("proxy", K::Choice(PROXY_MODES), "off", S::Unsupported, Sec::Proxy, "Run as a v2 proxy: 'off', 'readonly' or 'on'."),
    f("proxy-failure-wait", K::Uint, "5000", S::Ignored, Sec::Proxy, "Milliseconds an endpoint stays marked failed."),
    f("proxy-refresh-interval", K::Uint, "30000", S::Ignored, Sec::Proxy, "Milliseconds between endpoint refreshes."),
    f("proxy-dial-timeout", K::Uint, "1000", S::Ignored, Sec::Proxy, "Dial timeout in milliseconds (0: none)."),
    f("proxy-write-timeout", K::Uint, "5000", S::Ignored, Sec::Proxy, "Write timeout in milliseconds (0: none)."),
    f("proxy-read-timeout", K::Uint, "0", S::Ignored, Sec::Proxy, "Read timeout in milliseconds (0: none)."),
    // Experimental
    f("experimental-initial-corrupt-check", K::Bool, "false", S::Ignored, Sec::Experimental, "Check for data corruption before serving."),
    f("experimental-corrupt-check-time", K::Duration, "0s", S::Ignored, Sec::Experimental, "Period of cluster-wide corruption checks."),
    f("experimental-compact-hash-check-enabled", K::Bool, "false", S::Ignored, Sec::Experimental, "Let the leader compare followers' hashes after compactions."),
    f("experimental-compact-hash-check-time", K::Duration, "1m", S::Ignored, Sec::Experimental, "Period of those compaction hash checks."),
    f("experimental-enable-v2v3", K::Str, "", S::Ignored, Sec::Experimental, "Serve the v2 API from the v3 store under this prefix (deprecated)."),
    f("experimental-enable-lease-checkpoint", K::Bool, "false", S::Ignored, Sec::Experimental, "Have the leader checkpoint lease TTLs to the other members."),
    f("experimental-enable-lease-checkpoint-persist", K::Bool, "false", S::Ignored, Sec::Experimental, "Persist checkpointed lease TTLs (needs the flag above)."),
    f("experimental-compaction-batch-limit", K::Int, "0", S::Ignored, Sec::Experimental, "Revisions removed per compaction batch."),
    f("experimental-compaction-sleep-interval", K::Duration, "0s", S::Ignored, Sec::Experimental, "Pause between compaction batches."),
    f("experimental-watch-progress-notify-interval", K::Duration, "10m", S::Implemented, Sec::Experimental, "Period of watch progress notifications (0: 10m; at least 100ms)."),
    f("experimental-downgrade-check-time", K::Duration, "5s", S::Ignored, Sec::Experimental, "Period of downgrade status checks."),
    f("experimental-memory-mlock", K::Bool, "false", S::Ignored, Sec::Experimental, "Lock the process's memory in RAM."),
    f("experimental-warning-apply-duration", K::Duration, "100ms", S::Ignored, Sec::Experimental, "Warn when applying a request takes longer than this."),
    f("experimental-txn-mode-write-with-shared-buffer", K::Bool, "true", S::Ignored, Sec::Experimental, "Let write transactions read through the shared buffer."),
    f("experimental-bootstrap-defrag-threshold-megabytes", K::Uint, "0", S::Ignored, Sec::Experimental, "Defragment at boot if that frees at least this many MB (0: never)."),
    f("experimental-stop-grpc-service-on-defrag", K::Bool, "false", S::Ignored, Sec::Experimental, "Stop serving gRPC while defragmenting."),
    f("experimental-snapshot-catchup-entries", K::Uint, "5000", S::Implemented, Sec::Experimental, "Entries kept after a snapshot for slow followers to catch up."),
    // Unsafe
    f("force-new-cluster", K::Bool, "false", S::Unsupported, Sec::Unsafe, "Restart as a one-member cluster, dropping the others (recovery only)."),
    f("unsafe-no-fsync", K::Bool, "false", S::Ignored, Sec::Unsafe, "Never fsync (loses data on crash)."),
    // Other
    f("config-file", K::Str, "", S::Special, Sec::Other, "etcd YAML config file; other flags and ETCD_* variables are then ignored."),
    f("version", K::Bool, "false", S::Special, Sec::Other, "Print the version and exit."),
    // Flags etcd swallows with a warning.
    legacy("cluster-active-size"),
    legacy("cluster-remove-delay"),
    legacy("cluster-sync-interval"),
    legacy("config"),
    legacy("force"),
    legacy("max-result-buffer"),
    legacy("max-retry-attempts"),
    legacy("peer-heartbeat-interval"),
    legacy("peer-election-timeout"),
    legacy("retry-interval"),
    legacy("snapshot"),
    legacy("v"),
    legacy("vv"),
    legacy("test.coverprofile"),
    legacy("test.outputdir"),
];

fn lookup(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

fn spec(name: &str) -> &'static Spec {
    lookup(name).unwrap_or_else(|| panic!("no flag spec for {name}"))
}

fn env_var_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        flag.to_ascii_uppercase().replace('-', "_")
    )
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------
// Values and where they came from
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Bool(bool),
    U64(u64),
    I64(i64),
    /// Nanoseconds.
    Dur(i64),
    Str(String),
    List(Vec<String>),
    Urls(Vec<Url>),
}

#[derive(Clone, Debug)]
enum Origin {
    Default,
    Flag(&'static str),
    Env {
        var: String,
        flag: &'static str,
    },
    File {
        path: PathBuf,
        key: String,
        line: Option<usize>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::Flag(name) => write!(f, "flag --{name}"),
            Origin::Env { var, flag } => write!(f, "environment variable {var} (flag --{flag})"),
            Origin::File { path, key, line } => {
                write!(f, "key `{key}` in config file {}", path.display())?;
                if let Some(line) = line {
                    write!(f, " (line {line})")?;
                }
                Ok(())
            }
        }
    }
}

impl Origin {
    /// Suffix for warnings that already name the flag.
    fn suffix(&self) -> String {
        match self {
            Origin::Default | Origin::Flag(_) => String::new(),
            other => format!(" (set by {other})"),
        }
    }
}

#[derive(Clone, Debug)]
struct Setting {
    value: Value,
    origin: Origin,
}

type Settings = BTreeMap<&'static str, Setting>;

fn parse_value(kind: Kind, s: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Legacy => Value::Str(s.to_string()),
        Kind::Bool => Value::Bool(parse_go_bool(s)?),
        Kind::Str => Value::Str(s.to_string()),
        Kind::Uint => Value::U64(parse_go_uint(s, u64::MAX)?),
        Kind::Uint32 => Value::U64(parse_go_uint(s, u64::from(u32::MAX))?),
        Kind::Int => Value::I64(parse_go_int(s)?),
        Kind::Duration => Value::Dur(parse_go_duration(s)?),
        Kind::Urls => {
            let mut urls = Vec::new();
            if !s.is_empty() {
                for part in s.split(',') {
                    urls.push(Url::parse(part)?);
                }
            }
            urls.sort_by_key(|u| u.to_string());
            urls.dedup();
            Value::Urls(urls)
        }
        Kind::Strings => Value::List(if s.is_empty() {
            Vec::new()
        } else {
            s.split(',').map(str::to_string).collect()
        }),
        Kind::UniqueStrings => {
            let mut items: Vec<String> = s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            items.sort();
            items.dedup();
            Value::List(items)
        }
        Kind::Choice(valid) => {
            if !valid.contains(&s) {
                return Err(format!("must be one of: {}", valid.join(", ")));
            }
            Value::Str(s.to_string())
        }
        Kind::Choices(valid) => {
            let items: Vec<String> = s.split(',').map(str::to_string).collect();
            if let Some(bad) = items.iter().find(|i| !valid.contains(&i.as_str())) {
                return Err(format!("{bad:?} is not one of: {}", valid.join(", ")));
            }
            Value::List(items)
        }
    })
}

fn default_value(spec: &Spec) -> Value {
    parse_value(spec.kind, spec.default).expect("flag defaults parse")
}

fn differs_from_default(spec: &Spec, value: &Value) -> bool {
    match (spec.name, value) {
        // Empty and "*" both mean "allow all".
        ("cors" | "host-whitelist", Value::List(items)) => !items.iter().all(|i| i == "*"),
        _ => *value != default_value(spec),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("invalid boolean value (use true or false)".to_string()),
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: decimal, `0x`, `0o`, `0b`, a leading
/// `0` for octal, `_` between digits.
fn parse_go_uint(s: &str, max: u64) -> Result<u64, String> {
    let err = || format!("invalid unsigned integer (expected 0 to {max})");
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty()
        || digits.starts_with(['+', '-'])
        || digits.ends_with('_')
        || digits.contains("__")
        || (radix == 10 && digits.starts_with('_'))
    {
        return Err(err());
    }
    let cleaned: String = digits.chars().filter(|&c| c != '_').collect();
    if cleaned.is_empty() {
        return Err(err());
    }
    let v = u64::from_str_radix(&cleaned, radix).map_err(|_| err())?;
    if v > max {
        return Err(err());
    }
    Ok(v)
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn parse_go_int(s: &str) -> Result<i64, String> {
    let err = || "invalid integer".to_string();
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_go_uint(rest, u64::MAX).map_err(|_| err())?;
    if neg {
        if magnitude > i64::MAX as u64 + 1 {
            return Err(err());
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| err())
    }
}

/// Go's `time.ParseDuration`, in nanoseconds: "300ms", "-1.5h", "2h45m".
fn parse_go_duration(input: &str) -> Result<i64, String> {
    let err = |what: &str| format!("invalid duration ({what}; e.g. 500ms, 10s, 1h30m)");
    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let limit: u128 = if neg {
        i64::MAX as u128 + 1
    } else {
        i64::MAX as u128
    };
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        s = &s[unit_len..];
        if int_part.len() > 20 {
            return Err(err("overflow"));
        }
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("overflow"))?
        };
        let mut nanos = whole * unit;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().map_err(|_| err("bad fraction"))?;
            nanos += frac * unit / 10u128.pow(digits.len() as u32);
        }
        total += nanos;
        if total > limit {
            return Err(err("overflow"));
        }
    }
    Ok(if neg {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    })
}

// ---------------------------------------------------------------------------
// Command line and environment
// ---------------------------------------------------------------------------

enum CommandLine {
    Help,
    Settings(Settings),
}

/// Go `flag.FlagSet.Parse`: stops at the first non-flag argument or `--`.
fn parse_command_line(args: &[String]) -> Result<CommandLine, ConfigError> {
    let mut settings = Settings::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let body = match arg.strip_prefix("--") {
            Some("") => {
                i += 1;
                break;
            }
            Some(rest) => rest,
            None => &arg[1..],
        };
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::BadFlagSyntax { arg: arg.clone() });
        }
        i += 1;
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(spec) = lookup(name) else {
            if name == "h" || name == "help" {
                return Ok(CommandLine::Help);
            }
            return Err(ConfigError::UnknownFlag {
                flag: arg_flag(arg),
            });
        };
        let value = if matches!(spec.kind, Kind::Bool | Kind::Legacy) {
            inline.unwrap_or("true").to_string()
        } else if let Some(v) = inline {
            v.to_string()
        } else if i < args.len() {
            i += 1;
            args[i - 1].clone()
        } else {
            return Err(ConfigError::MissingValue {
                flag: spec.name.to_string(),
            });
        };
        set_parsed(&mut settings, spec, &value, Origin::Flag(spec.name))?;
    }
    if let Some(extra) = args.get(i) {
        return Err(ConfigError::NotAFlag { arg: extra.clone() });
    }
    Ok(CommandLine::Settings(settings))
}

/// Parses `value` (command-line syntax) for the flag `spec` and records it as set by `origin`.
fn set_parsed(
    settings: &mut Settings,
    spec: &Spec,
    value: &str,
    origin: Origin,
) -> Result<(), ConfigError> {
    let parsed = parse_value(spec.kind, value).map_err(|reason| ConfigError::InvalidValue {
        origin: origin.to_string(),
        value: value.to_string(),
        reason,
    })?;
    settings.insert(
        spec.name,
        Setting {
            value: parsed,
            origin,
        },
    );
    Ok(())
}

/// `--foo=bar` → `--foo` for error messages.
fn arg_flag(arg: &str) -> String {
    arg.split_once('=').map_or(arg, |(f, _)| f).to_string()
}

/// Fills flags not given on the command line from `ETCD_*` variables.
fn apply_env(
    settings: &mut Settings,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for spec in SPECS {
        if spec.name == "config-file" {
            continue;
        }
        let var = env_var_name(spec.name);
        let Some(value) = env(&var) else { continue };
        if spec.name == "version" {
            if !value.is_empty() {
                warnings.push(format!(
                    "environment variable {var} cannot be set (it would stand for --version); ignored"
                ));
            }
            continue;
        }
        if value.is_empty() {
            continue;
        }
        if settings.get(spec.name).is_some() {
            // etcd refuses to start rather than pick one of the two.
            return Err(ConfigError::Invalid(format!(
                "conflicting environment variable {var} is shadowed by corresponding command-line \
                 flag --{} (either unset environment variable or disable flag)",
                spec.name
            )));
        }
        let origin = Origin::Env {
            var: var.clone(),
            flag: spec.name,
        };
        set_parsed(settings, spec, &value, origin)?;
    }
    Ok(())
}

fn warn_unrecognized_env(names: &[String], warnings: &mut Vec<String>) {
    let mut unknown: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(ENV_PREFIX))
        .filter(|n| !OTHER_KNOWN_ENV.contains(&n.as_str()))
        .filter(|n| !SPECS.iter().any(|s| env_var_name(s.name) == **n))
        .collect();
    unknown.sort();
    unknown.dedup();
    for name in unknown {
        warnings.push(format!("unrecognized environment variable {name}; ignored"));
    }
}

/// With a config file etcd ignores every other flag and variable. Report
/// them, but refuse security settings rather than silently drop them.
fn refuse_or_report_ignored(
    cmdline: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut ignored_flags = Vec::new();
    for (name, setting) in cmdline {
        if matches!(*name, "config-file" | "version") {
            continue;
        }
        check_security_only(spec(name), setting)?;
        ignored_flags.push(format!("--{name}"));
    }
    let mut ignored_env = Vec::new();
    for spec in SPECS.iter().filter(|s| s.name != "config-file") {
        let var = env_var_name(spec.name);
        let Some(value) = non_empty(env(&var)) else {
            continue;
        };
        if let Ok(parsed) = parse_value(spec.kind, &value) {
            let setting = Setting {
                value: parsed,
                origin: Origin::Env {
                    var: var.clone(),
                    flag: spec.name,
                },
            };
            check_security_only(spec, &setting)?;
        }
        ignored_env.push(var);
    }
    if !ignored_flags.is_empty() {
        warnings.push(format!(
            "config file {} is used, so these command-line flags are ignored (as etcd does): {}",
            path.display(),
            ignored_flags.join(", ")
        ));
    }
    if !ignored_env.is_empty() {
        warnings.push(format!(
            "config file {} is used, so these environment variables are ignored (as etcd does): {}",
            path.display(),
            ignored_env.join(", ")
        ));
    }
    Ok(())
}

fn check_security_only(spec: &Spec, setting: &Setting) -> Result<(), ConfigError> {
    let refuse = match spec.support {
        Support::Security => differs_from_default(spec, &setting.value),
        Support::Bcrypt => matches!(setting.value, Value::U64(c) if c > 10),
        _ => false,
    };
    if refuse {
        return Err(ConfigError::Refused {
            origin: setting.origin.to_string(),
            reason: format!(
                "{} (etcd would silently ignore it because a config file is given)",
                refusal_reason(spec.name)
            ),
        });
    }
    Ok(())
}

fn refusal_reason(name: &str) -> &'static str {
    match name {
        "auth-token" => {
            "only the 'simple' auth token provider is implemented; refusing to start with another one"
        }
        "cors" | "host-whitelist" => {
            "origin/host filtering is not implemented yet; refusing to start rather than accept \
             every origin and host"
        }
        "bcrypt-cost" => {
            "bcrypt costs above the default (10) are not implemented yet; refusing to hash \
             passwords more weakly than asked"
        }
        "discovery" | "discovery-srv" | "discovery-srv-name" => {
            "cluster discovery is not implemented yet; bootstrap with --initial-cluster instead"
        }
        "proxy" => "the v2 proxy mode is not implemented (it is deprecated in etcd 3.5)",
        "force-new-cluster" => {
            "forcing a new one-member cluster is not implemented yet; refusing to start as an \
             ordinary member instead"
        }
        _ => {
            "TLS is not implemented in retcd yet; refusing to start without the transport \
             security this setting asks for"
        }
    }
}

// ---------------------------------------------------------------------------
// Config file
// ---------------------------------------------------------------------------

/// Keys of etcd's YAML file that are not flag names, mapped to the flags
/// that mean the same thing.
const TLS_YAML_KEYS: &[(&str, &str, &str)] = &[
    // (yaml key, client flag, peer flag)
    ("cert-file", "cert-file", "peer-cert-file"),
    ("key-file", "key-file", "peer-key-file"),
    (
        "client-cert-file",
        "client-cert-file",
        "peer-client-cert-file",
    ),
    ("client-key-file", "client-key-file", "peer-client-key-file"),
    (
        "client-cert-auth",
        "client-cert-auth",
        "peer-client-cert-auth",
    ),
    ("trusted-ca-file", "trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "auto-tls", "peer-auto-tls"),
    (
        "allowed-hostname",
        "client-cert-allowed-hostname",
        "peer-cert-allowed-hostname",
    ),
    ("allowed-cn", "", "peer-cert-allowed-cn"),
];

/// Flags that have no top-level key in etcd's config file.
const FLAG_ONLY: &[&str] = &[
    "raft-read-timeout",
    "raft-write-timeout",
    "socket-reuse-port",
    "socket-reuse-address",
    "experimental-snapshot-catchup-entries",
    "experimental-peer-skip-client-san-verification",
    "client-crl-file",
    "peer-crl-file",
    "cert-file",
    "key-file",
    "client-cert-file",
    "client-key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
    "client-cert-allowed-hostname",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-file",
    "peer-client-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
];

fn load_config_file(path: &Path, warnings: &mut Vec<String>) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::ParseConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut loader = FileLoader {
        path,
        text: &text,
        settings: Settings::new(),
        warnings,
    };
    match &doc {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(map) => loader.top_level(map)?,
        _ => {
            return Err(ConfigError::ParseConfigFile {
                path: path.to_path_buf(),
                message: "the document must be a mapping of keys to values".to_string(),
            });
        }
    }
    Ok(loader.settings)
}

struct FileLoader<'a> {
    path: &'a Path,
    text: &'a str,
    settings: Settings,
    warnings: &'a mut Vec<String>,
}

impl FileLoader<'_> {
    fn origin(&self, key: &str, parent: Option<&str>) -> Origin {
        let full = match parent {
            Some(p) => format!("{p}.{key}"),
            None => key.to_string(),
        };
        Origin::File {
            path: self.path.to_path_buf(),
            key: full,
            line: key_line(self.text, key, parent),
        }
    }

    fn key_string(
        &self,
        key: &serde_yaml::Value,
        parent: Option<&str>,
    ) -> Result<String, ConfigError> {
        match key {
            serde_yaml::Value::String(s) => Ok(s.to_ascii_lowercase()),
            other => Err(ConfigError::ParseConfigFile {
                path: self.path.to_path_buf(),
                message: format!(
                    "keys must be strings, found {other:?}{}",
                    parent.map(|p| format!(" under `{p}`")).unwrap_or_default()
                ),
            }),
        }
    }

    fn top_level(&mut self, map: &serde_yaml::Mapping) -> Result<(), ConfigError> {
        for (key, value) in map {
            let key = self.key_string(key, None)?;
            match key.as_str() {
                "socket-options" => self.nested(
                    &key,
                    value,
                    &[
                        ("reuse-port", "socket-reuse-port"),
                        ("reuse-address", "socket-reuse-address"),
                    ],
                )?,
                "client-transport-security" | "peer-transport-security" => {
                    let peer = key.starts_with("peer");
                    let table: Vec<(&str, &str)> = TLS_YAML_KEYS
                        .iter()
                        .map(|(k, client, peer_flag)| (*k, if peer { *peer_flag } else { *client }))
                        .collect();
                    self.nested(&key, value, &table)?
                }
                "experimental-snapshot-catch-up-entries" => {
                    self.set("experimental-snapshot-catchup-entries", &key, None, value)?
                }
                _ => match lookup(&key) {
                    Some(spec)
                        if !FLAG_ONLY.contains(&spec.name)
                            && !matches!(spec.support, Support::Special | Support::Legacy) =>
                    {
                        self.set(spec.name, &key, None, value)?
                    }
                    Some(spec) if matches!(spec.support, Support::Security) && !value.is_null() => {
                        // etcd would silently drop these (they are not keys of
                        // its file); running without them would be insecure.
                        let origin = self.origin(&key, None);
                        let raw = yaml_scalar(spec.kind, value).ok().flatten();
                        let harmless = raw
                            .and_then(|r| parse_value(spec.kind, &r).ok())
                            .is_some_and(|v| !differs_from_default(spec, &v));
                        if !harmless {
                            return Err(ConfigError::Refused {
                                origin: origin.to_string(),
                                reason: format!(
                                    "etcd does not read this key at the top level of its config \
                                     file (TLS settings go under client-transport-security or \
                                     peer-transport-security) and would silently run without it; \
                                     besides, {}",
                                    refusal_reason(spec.name)
                                ),
                            });
                        }
                    }
                    _ => self.unknown(&key, None),
                },
            }
        }
        Ok(())
    }

    fn nested(
        &mut self,
        parent: &str,
        value: &serde_yaml::Value,
        table: &[(&str, &str)],
    ) -> Result<(), ConfigError> {
        let map = match value {
            serde_yaml::Value::Null => return Ok(()),
            serde_yaml::Value::Mapping(map) => map,
            _ => {
                let origin = self.origin(parent, None);
                return Err(ConfigError::InvalidValue {
                    origin: origin.to_string(),
                    value: format!("{value:?}"),
                    reason: "expected a mapping".to_string(),
                });
            }
        };
        for (key, value) in map {
            let key = self.key_string(key, Some(parent))?;
            match table.iter().find(|(k, _)| *k == key) {
                Some((_, "")) => {
                    // client-transport-security.allowed-cn: no flag of its own.
                    let items = yaml_scalar(Kind::Strings, value).ok().flatten();
                    if items.is_some_and(|s| !s.is_empty()) {
                        return Err(ConfigError::Refused {
                            origin: self.origin(&key, Some(parent)).to_string(),
                            reason: refusal_reason("cert-file").to_string(),
                        });
                    }
                }
                Some((_, flag)) => self.set(flag, &key, Some(parent), value)?,
                None => self.unknown(&key, Some(parent)),
            }
        }
        Ok(())
    }

    fn set(
        &mut self,
        flag: &str,
        key: &str,
        parent: Option<&str>,
        value: &serde_yaml::Value,
    ) -> Result<(), ConfigError> {
        let spec = spec(flag);
        let origin = self.origin(key, parent);
        let invalid = |reason: String| ConfigError::InvalidValue {
            origin: origin.to_string(),
            value: yaml_display(value),
            reason,
        };
        let Some(raw) = yaml_scalar(spec.kind, value).map_err(invalid)? else {
            return Ok(());
        };
        if flag == "initial-cluster-state" && raw.is_empty() {
            return Ok(());
        }
        let parsed = parse_value(spec.kind, &raw).map_err(invalid)?;
        self.settings.insert(
            spec.name,
            Setting {
                value: parsed,
                origin,
            },
        );
        Ok(())
    }

    fn unknown(&mut self, key: &str, parent: Option<&str>) {
        let origin = self.origin(key, parent);
        self.warnings.push(format!(
            "unknown {origin}; ignored (etcd ignores unknown keys too)"
        ));
    }
}

/// Turns a YAML value into the flag-syntax string for `kind`; `None` for null.
fn yaml_scalar(kind: Kind, value: &serde_yaml::Value) -> Result<Option<String>, String> {
    use serde_yaml::Value as Y;
    Ok(Some(match value {
        Y::Null => return Ok(None),
        Y::Bool(b) => b.to_string(),
        Y::Number(n) => match kind {
            // etcd reads YAML durations as integer nanoseconds.
            Kind::Duration => match n.as_i64() {
                Some(ns) => format!("{ns}ns"),
                None => return Err("a duration must be an integer number of nanoseconds".into()),
            },
            _ => n.to_string(),
        },
        Y::String(s) => match kind {
            // YAML 1.1 booleans, which etcd's YAML reader accepts.
            Kind::Bool => match s.to_ascii_lowercase().as_str() {
                "yes" | "y" | "on" => "true".to_string(),
                "no" | "n" | "off" => "false".to_string(),
                _ => s.clone(),
            },
            _ => s.clone(),
        },
        Y::Sequence(items) => match kind {
            Kind::Strings | Kind::UniqueStrings | Kind::Urls | Kind::Choices(_) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        Y::String(s) => parts.push(s.clone()),
                        Y::Number(n) => parts.push(n.to_string()),
                        Y::Bool(b) => parts.push(b.to_string()),
                        _ => return Err("list items must be plain values".into()),
                    }
                }
                parts.join(",")
            }
            _ => return Err("expected a single value, not a list".into()),
        },
        Y::Mapping(_) => return Err("expected a single value, not a mapping".into()),
        Y::Tagged(_) => return Err("tagged values are not supported".into()),
    }))
}

fn yaml_display(value: &serde_yaml::Value) -> String {
    match serde_yaml::to_string(value) {
        Ok(s) => s.trim_end().to_string(),
        Err(_) => format!("{value:?}"),
    }
}

/// 1-based line of `key` (under `parent` if given) in the YAML text.
fn key_line(text: &str, key: &str, parent: Option<&str>) -> Option<usize> {
    let is_key_line = |line: &str, key: &str| {
        let t = line.trim_start().trim_start_matches("- ");
        let t = t.trim_start_matches(['"', '\'']);
        t.len() > key.len()
            && t[..key.len()].eq_ignore_ascii_case(key)
            && t[key.len()..]
                .trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
    };
    let lines: Vec<&str> = text.lines().collect();
    let top_level = |line: &str| !line.starts_with([' ', '\t']) && !line.trim().is_empty();
    match parent {
        None => lines
            .iter()
            .position(|l| top_level(l) && is_key_line(l, key))
            .map(|i| i + 1),
        Some(parent) => {
            let start = lines
                .iter()
                .position(|l| top_level(l) && is_key_line(l, parent))?;
            lines[start + 1..]
                .iter()
                .take_while(|l| !top_level(l) || l.trim_start().starts_with('#'))
                .position(|l| is_key_line(l, key))
                .map(|i| start + 2 + i)
        }
    }
}

// ---------------------------------------------------------------------------
// Resolution and validation
// ---------------------------------------------------------------------------

fn value(settings: &Settings, name: &'static str) -> (Value, Origin) {
    match settings.get(name) {
        Some(s) => (s.value.clone(), s.origin.clone()),
        None => (default_value(spec(name)), Origin::Default),
    }
}

/// `fn $getter(settings, name) -> $ty`: the value of the setting `name`, whose spec kind makes it a
/// `Value::$variant` (`$what` names that kind in the panic if it does not).
macro_rules! value_getter {
    ($getter:ident, $variant:ident, $ty:ty, $what:literal) => {
        fn $getter(settings: &Settings, name: &'static str) -> $ty {
            match value(settings, name).0 {
                Value::$variant(v) => v,
                other => panic!("--{} is not {}: {:?}", name, $what, other),
            }
        }
    };
}

value_getter!(str_of, Str, String, "a string");
value_getter!(u64_of, U64, u64, "unsigned");
value_getter!(i64_of, I64, i64, "an integer");
value_getter!(bool_of, Bool, bool, "a boolean");
value_getter!(dur_of, Dur, i64, "a duration");
value_getter!(list_of, List, Vec<String>, "a list");

/// URL list; an empty value keeps etcd's default, as etcd does.
fn urls_of(settings: &Settings, name: &'static str) -> (Vec<Url>, Origin) {
    match value(settings, name) {
        (Value::Urls(urls), origin) if !urls.is_empty() => (urls, origin),
        (Value::Urls(_), origin) => match default_value(spec(name)) {
            Value::Urls(urls) => (urls, origin),
            _ => unreachable!(),
        },
        (other, _) => panic!("--{name} is not a URL list: {other:?}"),
    }
}

fn usize_of(settings: &Settings, name: &'static str) -> Result<usize, ConfigError> {
    let v = u64_of(settings, name);
    usize::try_from(v)
        .map_err(|_| invalid_setting(settings, name, v.to_string(), "too large for this platform"))
}

/// [`ConfigError::InvalidValue`] for the value `given` to the setting `name`, naming where it was
/// set.
fn invalid_setting(
    settings: &Settings,
    name: &'static str,
    given: String,
    reason: &str,
) -> ConfigError {
    ConfigError::InvalidValue {
        origin: value(settings, name).1.to_string(),
        value: given,
        reason: reason.to_string(),
    }
}

fn refused(origin: &Origin, reason: &str) -> ConfigError {
    ConfigError::Refused {
        origin: origin.to_string(),
        reason: reason.to_string(),
    }
}

const HTTPS_REASON: &str = "https URLs need TLS, which retcd does not implement yet; use http URLs";

fn check_no_tls(urls: &[Url], origin: &Origin) -> Result<(), ConfigError> {
    match urls.iter().find(|u| u.is_tls()) {
        Some(u) => Err(refused(origin, &format!("{HTTPS_REASON} (got {u})"))),
        None => Ok(()),
    }
}

/// etcd binds only IP literals and `localhost`.
fn check_bind(urls: &[Url], name: &str, origin: &Origin) -> Result<(), ConfigError> {
    match urls.iter().find(|u| u.socket_addr().is_none()) {
        Some(u) => Err(ConfigError::InvalidValue {
            origin: origin.to_string(),
            value: u.to_string(),
            reason: format!("--{name} must use an IP address or localhost to bind to"),
        }),
        None => Ok(()),
    }
}

/// Turns settings into a [`Config`], applying etcd's derived defaults and
/// validation. `file_mode` selects the rules that differ for config files.
fn build(
    settings: &Settings,
    file_mode: bool,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    // Not-implemented flags: refuse or warn.
    for (name, setting) in settings {
        let spec = spec(name);
        match spec.support {
            Support::Implemented | Support::Special => {}
            Support::Legacy => warnings.push(format!(
                "flag --{name} is no longer supported by etcd; ignored{}",
                setting.origin.suffix()
            )),
            Support::Ignored => {
                if differs_from_default(spec, &setting.value) {
                    warnings.push(format!(
                        "flag --{name} is accepted but not implemented yet; ignored{}",
                        setting.origin.suffix()
                    ));
                }
            }
            Support::Security | Support::Unsupported => {
                if differs_from_default(spec, &setting.value) {
                    return Err(refused(&setting.origin, refusal_reason(name)));
                }
            }
            Support::Bcrypt => match setting.value {
                Value::U64(cost) if cost > 10 => {
                    return Err(refused(&setting.origin, refusal_reason(name)));
                }
                Value::U64(10) => {}
                _ => warnings.push(format!(
                    "flag --{name} is accepted but not implemented yet; ignored{}",
                    setting.origin.suffix()
                )),
            },
        }
    }

    // etcd's validation of settings retcd ignores but etcd would reject.
    let mode = str_of(settings, "auto-compaction-mode");
    if !matches!(mode.as_str(), "" | "periodic" | "revision") {
        return Err(invalid_setting(
            settings,
            "auto-compaction-mode",
            mode,
            "unknown auto-compaction-mode (use periodic or revision)",
        ));
    }
    if bool_of(settings, "experimental-enable-lease-checkpoint-persist")
        && !bool_of(settings, "experimental-enable-lease-checkpoint")
    {
        return Err(ConfigError::Invalid(
            "setting --experimental-enable-lease-checkpoint-persist requires \
             --experimental-enable-lease-checkpoint"
                .to_string(),
        ));
    }
    if dur_of(settings, "experimental-compact-hash-check-time") <= 0 {
        return Err(ConfigError::Invalid(
            "--experimental-compact-hash-check-time must be >0".to_string(),
        ));
    }
    for name in ["listen-client-http-urls", "listen-metrics-urls"] {
        let (urls, origin) = urls_of(settings, name);
        check_bind(&urls, name, &origin)?;
    }

    // Member identity and storage.
    let name = str_of(settings, "name");
    let data_dir = match str_of(settings, "data-dir") {
        d if d.is_empty() => PathBuf::from(format!("{name}.etcd")),
        d => PathBuf::from(d),
    };
    let dedicated_wal_dir = Some(str_of(settings, "wal-dir"))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);

    // URLs.
    let (listen_client_urls, lc_origin) = urls_of(settings, "listen-client-urls");
    check_bind(&listen_client_urls, "listen-client-urls", &lc_origin)?;
    check_no_tls(&listen_client_urls, &lc_origin)?;
    let (listen_peer_urls, lp_origin) = urls_of(settings, "listen-peer-urls");
    check_bind(&listen_peer_urls, "listen-peer-urls", &lp_origin)?;
    check_no_tls(&listen_peer_urls, &lp_origin)?;
    let (advertise_client_urls, ac_origin) = urls_of(settings, "advertise-client-urls");
    check_no_tls(&advertise_client_urls, &ac_origin)?;
    let (initial_advertise_peer_urls, ap_origin) = urls_of(settings, "initial-advertise-peer-urls");
    check_no_tls(&initial_advertise_peer_urls, &ap_origin)?;
    if !file_mode
        && settings.contains_key("listen-client-urls")
        && !settings.contains_key("advertise-client-urls")
    {
        return Err(ConfigError::Invalid(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
                .to_string(),
        ));
    }

    // Initial cluster, with etcd's rule: the default names "default" and
    // becomes ${name}=<advertise peer URLs> when only --name is changed.
    let (mut ic_value, mut ic_origin) = match value(settings, "initial-cluster") {
        (Value::Str(s), origin) => (s, origin),
        _ => unreachable!(),
    };
    if name != DEFAULT_NAME && ic_value == DEFAULT_INITIAL_CLUSTER {
        let member = if name.is_empty() { DEFAULT_NAME } else { &name };
        ic_value = initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{member}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        ic_origin = Origin::Flag("name");
    }
    let initial_cluster =
        parse_initial_cluster(&ic_value).map_err(|reason| ConfigError::InvalidValue {
            origin: match &ic_origin {
                Origin::Flag("name") => "flag --initial-cluster (derived from --name and \
                     --initial-advertise-peer-urls)"
                    .to_string(),
                Origin::Default => "flag --initial-cluster".to_string(),
                other => other.to_string(),
            },
            value: ic_value.clone(),
            reason,
        })?;
    for member in &initial_cluster {
        check_no_tls(&member.peer_urls, &ic_origin)?;
    }

    let initial_cluster_state = match str_of(settings, "initial-cluster-state").as_str() {
        "existing" => ClusterState::Existing,
        _ => ClusterState::New,
    };

    // Sizes.
    let snapshot_count = match u64_of(settings, "snapshot-count") {
        0 => DEFAULT_SNAPSHOT_COUNT,
        n => n,
    };
    let quota_backend_bytes = i64_of(settings, "quota-backend-bytes");
    if quota_backend_bytes > MAX_SUGGESTED_QUOTA_BYTES as i64 {
        warnings.push(format!(
            "--quota-backend-bytes {quota_backend_bytes} exceeds the suggested maximum of {} bytes (8 GiB)",
            MAX_SUGGESTED_QUOTA_BYTES
        ));
    }
    let max_request_bytes = usize_of(settings, "max-request-bytes")?;
    let max_txn_ops = usize_of(settings, "max-txn-ops")?;

    // Logging.
    let logger = str_of(settings, "logger");
    let unsupported = match logger.as_str() {
        "zap" => None,
        "capnslog" => Some("--logger=capnslog is removed in etcd 3.5; use zap"),
        _ => Some("unknown logger (only 'zap' is supported)"),
    };
    if let Some(reason) = unsupported {
        return Err(invalid_setting(settings, "logger", logger, reason));
    }
    let level_raw = str_of(settings, "log-level");
    let log_level = LogLevel::parse(&level_raw).ok_or_else(|| {
        invalid_setting(
            settings,
            "log-level",
            level_raw.clone(),
            "must be one of debug, info, warn, error, panic, fatal",
        )
    })?;
    let log_outputs = resolve_log_outputs(settings, warnings)?;

    // Timing.
    let heartbeat_ms = u64_of(settings, "heartbeat-interval");
    let election_ms = u64_of(settings, "election-timeout");
    if heartbeat_ms == 0 {
        return Err(ConfigError::Invalid(
            "--heartbeat-interval must be >0 (set to 0ms)".to_string(),
        ));
    }
    if election_ms == 0 {
        return Err(ConfigError::Invalid(
            "--election-timeout must be >0 (set to 0ms)".to_string(),
        ));
    }
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(ConfigError::Invalid(format!(
            "--election-timeout[{election_ms}ms] should be at least 5 times \
             --heartbeat-interval[{heartbeat_ms}ms]"
        )));
    }
    if election_ms > MAX_ELECTION_TIMEOUT_MS {
        return Err(ConfigError::Invalid(format!(
            "--election-timeout[{election_ms}ms] is too long, and should be set less than \
             {MAX_ELECTION_TIMEOUT_MS}ms"
        )));
    }
    let wp = dur_of(settings, "experimental-watch-progress-notify-interval");
    let watch_progress_notify_interval = if wp <= 0 {
        DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL
    } else {
        let d = Duration::from_nanos(wp as u64);
        if d < MIN_WATCH_PROGRESS_NOTIFY_INTERVAL {
            warnings.push(format!(
                "--experimental-watch-progress-notify-interval {d:?} is below the minimum; using {:?}",
                MIN_WATCH_PROGRESS_NOTIFY_INTERVAL
            ));
            MIN_WATCH_PROGRESS_NOTIFY_INTERVAL
        } else {
            d
        }
    };

    Ok(Config {
        name,
        data_dir,
        dedicated_wal_dir,
        listen_client_urls,
        advertise_client_urls,
        listen_peer_urls,
        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token: str_of(settings, "initial-cluster-token"),
        snapshot_count,
        snapshot_catchup_entries: u64_of(settings, "experimental-snapshot-catchup-entries"),
        quota_backend_bytes,
        max_request_bytes,
        max_txn_ops,
        log_level,
        logger: "zap".to_string(),
        log_outputs,
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout: Duration::from_millis(election_ms),
        watch_progress_notify_interval,
        config_file: None,
    })
}

fn resolve_log_outputs(
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> Result<Vec<LogOutput>, ConfigError> {
    let mut outputs = list_of(settings, "log-outputs");
    if outputs.is_empty() {
        outputs.push("default".to_string());
    }
    let origin = value(settings, "log-outputs").1;
    let invalid = |reason: &str| ConfigError::InvalidValue {
        origin: origin.to_string(),
        value: outputs.join(","),
        reason: reason.to_string(),
    };
    if outputs.len() > 1 && outputs.iter().any(|o| o == "default") {
        return Err(invalid("'default' cannot be combined with other outputs"));
    }
    if outputs.len() > 1 && outputs.iter().any(|o| o == "systemd/journal") {
        return Err(invalid(
            "'systemd/journal' cannot be combined with other outputs",
        ));
    }
    let mut resolved = Vec::new();
    for output in &outputs {
        resolved.push(match output.as_str() {
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            "systemd/journal" => {
                warnings.push(
                    "--log-outputs systemd/journal is accepted but not implemented yet; \
                     logging to stderr"
                        .to_string(),
                );
                LogOutput::Stderr
            }
            path => LogOutput::File(PathBuf::from(path)),
        });
    }
    Ok(resolved)
}

/// etcd's `name=url,name=url` form; a name may repeat for several URLs.
fn parse_initial_cluster(s: &str) -> Result<Vec<InitialMember>, String> {
    let mut members: Vec<InitialMember> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(format!("expected name=URL, got {part:?}"));
        };
        if name.is_empty() {
            return Err(format!("member name is empty in {part:?}"));
        }
        let url = Url::parse(url)?;
        match members.iter_mut().find(|m| m.name == name) {
            Some(member) => member.peer_urls.push(url),
            None => members.push(InitialMember {
                name: name.to_string(),
                peer_urls: vec![url],
            }),
        }
    }
    for member in &mut members {
        member.peer_urls.sort_by_key(|u| u.to_string());
        member.peer_urls.dedup();
    }
    Ok(members)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        for (arg, expect_warning) in [
            ("--enable-pprof", true),
            ("--enable-pprof=true", true),
            ("--enable-pprof=T", true),
            ("--enable-pprof=false", false),
            ("-enable-pprof=0", false),
        ] {
            let (_, w) = ok(&[arg], &[]);
            assert_eq!(
                w.iter().any(|w| w.contains("--enable-pprof")),
                expect_warning,
                "{arg}"
            );
        }
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
            &["--cert-file", "/tls/server.crt"][..],
            &["--key-file=/k"],
            &["--client-cert-auth"],
            &["--trusted-ca-file", "/ca"],
            &["--auto-tls=true"],
            &["--peer-cert-file", "/p"],
            &["--peer-key-file", "/p"],
            &["--peer-client-cert-auth"],
            &["--peer-trusted-ca-file", "/ca"],
            &["--peer-auto-tls"],
            &["--client-crl-file", "/crl"],
            &["--peer-crl-file", "/crl"],
            &["--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
            &["--tls-min-version", "TLS1.3"],
            &["--tls-max-version", "TLS1.3"],
            &["--auth-token", "jwt,pub-key=a,priv-key=b,sign-method=RS256"],
            &["--host-whitelist", "example.com"],
            &["--cors", "http://example.com:80"],
            &["--bcrypt-cost", "12"],
            &["--discovery", "https://discovery.etcd.io/abc"],
            &["--proxy", "on"],
            &["--force-new-cluster"],
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
        let e = err(&[], &[("ETCD_CERT_FILE", "/c")]);
        assert!(
            e.contains("ETCD_CERT_FILE") && e.contains("--cert-file"),
            "{e}"
        );
        // https URLs need TLS.
        let e = err(
            &[
                "--listen-client-urls=https://127.0.0.1:2379",
                "--advertise-client-urls=https://127.0.0.1:2379",
            ],
            &[],
        );
        assert!(
            e.contains("--listen-client-urls") && e.contains("https"),
            "{e}"
        );
        let e = err(&["--initial-cluster=default=https://127.0.0.1:2380"], &[]);
        assert!(
            e.contains("--initial-cluster") && e.contains("https"),
            "{e}"
        );
    }

    #[test]
    fn tuning_flags_warned() {
        let (c, w) = ok(
            &[
                "--max-snapshots=10",
                "--grpc-keepalive-interval",
                "1h",
                "--enable-pprof",
                "--auto-compaction-retention=1",
                "--bcrypt-cost=4",
                "--max-wals=5",
                "--snapshot",
            ],
            &[("ETCD_PRE_VOTE", "false")],
        );
        assert_eq!(c, Config::default());
        let expect = [
            "flag --max-snapshots is accepted but not implemented yet; ignored",
            "flag --grpc-keepalive-interval is accepted but not implemented yet; ignored",
            "flag --enable-pprof is accepted but not implemented yet; ignored",
            "flag --auto-compaction-retention is accepted but not implemented yet; ignored",
            "flag --bcrypt-cost is accepted but not implemented yet; ignored",
            "flag --pre-vote is accepted but not implemented yet; ignored (set by environment variable ETCD_PRE_VOTE (flag --pre-vote))",
            "flag --snapshot is no longer supported by etcd; ignored",
        ];
        for e in expect {
            assert!(w.iter().any(|w| w == e), "missing {e:?} in {w:?}");
        }
        // A value equal to etcd's default asks for nothing retcd lacks.
        assert!(!w.iter().any(|w| w.contains("--max-wals")), "{w:?}");
        assert_eq!(w.len(), expect.len(), "{w:?}");
        // etcd's own validation still applies to ignored flags.
        assert!(err(&["--auto-compaction-mode=weekly"], &[]).contains("auto-compaction-mode"));
        assert!(
            err(&["--grpc-keepalive-interval=soon"], &[]).contains("--grpc-keepalive-interval")
        );
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
        assert!(w.iter().any(|w| w.contains("--enable-pprof")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("--socket-reuse-port")), "{w:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("no-such-key") && w.contains("line 34")),
            "{w:?}"
        );
        assert_eq!(w.len(), 3, "{w:?}");

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
        let tls = TempFile::new("name: a\nclient-transport-security:\n  cert-file: /tls/c.crt\n");
        let e = err(&["--config-file", tls.path()], &[]);
        assert!(
            e.contains("client-transport-security.cert-file")
                && e.contains("line 3")
                && e.contains("refused"),
            "{e}"
        );
        let top = TempFile::new("trusted-ca-file: /ca.crt\n");
        let e = err(&["--config-file", top.path()], &[]);
        assert!(
            e.contains("trusted-ca-file") && e.contains("refused"),
            "{e}"
        );
        let peer = TempFile::new("peer-transport-security:\n  allowed-cn: [etcd-peer]\n");
        assert!(
            err(&["--config-file", peer.path()], &[])
                .contains("peer-transport-security.allowed-cn")
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
    fn go_durations_and_integers() {
        assert_eq!(parse_go_duration("10m"), Ok(600_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("-100ms"), Ok(-100_000_000));
        assert_eq!(parse_go_duration("3\u{b5}s"), Ok(3_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("3000000h").is_err());
        assert_eq!(parse_go_uint("1_000", u64::MAX), Ok(1000));
        assert_eq!(parse_go_uint("010", u64::MAX), Ok(8));
        assert_eq!(parse_go_uint("0b101", u64::MAX), Ok(5));
        assert!(parse_go_uint("+1", u64::MAX).is_err());
        assert!(parse_go_uint("4294967296", u64::from(u32::MAX)).is_err());
        assert_eq!(parse_go_int("-0x10"), Ok(-16));
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
        assert!(parse_go_int("9223372036854775808").is_err());
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
}
