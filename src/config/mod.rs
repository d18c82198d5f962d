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
//!   would weaken security or form a different cluster (origin filtering,
//!   discovery, proxy mode),
//! * `--help` / `--version` texts and the resolved paths and socket addresses
//!   the server needs.
//!
//! Nothing here logs: warnings are returned with the configuration so that
//! `main` can emit them once logging (configured from this very config) is up.
//!
//! This file holds the public types and the top-level flow ([`parse`] →
//! command line → config file *or* environment → [`Config`]). The parts:
//! * `url` — [`Url`] and [`Scheme`]: parsing client/peer URLs, bind addresses;
//! * `flags` — the table of every etcd flag, its default and what retcd does
//!   with it;
//! * `value` — typed values and the Go-compatible (`strconv`,
//!   `time.ParseDuration`) parsers;
//! * `settings` — settings with their origin, and typed readers with defaults;
//! * `cmdline` — Go `flag`-style command-line parsing;
//! * `env` — `ETCD_*` variables;
//! * `file` — the YAML config file, and refusing what it would make etcd drop;
//! * `build` — settings → [`Config`], one function per section (member,
//!   URLs, cluster, limits, logging, timing), plus the refusals;
//! * `tls` — the TLS section: client TLS files, auto TLS, the shared policy;
//! * `compaction` — `--auto-compaction-mode` / `--auto-compaction-retention`, parsed into
//!   the retention `retcd_raft::compactor` schedules;
//! * `auth` — the auth section: `--auth-token` (simple or JWT, with its keys
//!   loaded), `--auth-token-ttl`, `--bcrypt-cost`.

mod auth;
mod build;
mod cmdline;
mod compaction;
mod env;
mod file;
mod flags;
mod settings;
#[cfg(test)]
mod tests;
mod tls;
mod url;
mod value;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{AuthTokenConfig, JwtConfig};
pub use url::{Scheme, Url};
/// Go's parsers of flag values, for the tools' command lines too.
pub use value::{GoNumError, parse_go_bool, parse_go_duration, parse_go_int_base0};

use build::build;
use cmdline::{CommandLine, parse_command_line};
use env::{apply_env, env_var_name, non_empty, warn_unrecognized_env};
use file::{load_config_file, refuse_or_report_ignored};
use flags::{SECTIONS, SPECS, Support};
use settings::{Setting, Settings};
use url::bind_addrs;
use value::Value;

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
    /// `stderr` or `default`.
    Stderr,
    Stdout,
    /// `systemd/journal`: journald's native protocol.
    Journal,
    /// Any other value: a file path to append to.
    File(PathBuf),
}

/// `--enable-log-rotation` with `--log-rotation-config-json` (lumberjack's settings, as etcd
/// takes them; backups are named in UTC, and `compress` is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotation {
    /// `maxsize`: megabytes a file may reach before it is rotated.
    pub max_size_mb: u64,
    /// `maxage`: days a backup is kept (0: no limit).
    pub max_age_days: u64,
    /// `maxbackups`: backups kept (0: no limit).
    pub max_backups: u64,
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
    /// `--listen-client-http-urls`: HTTP only (health, metrics, the gateway); when set, the
    /// client URLs serve gRPC only, as etcd's.
    pub listen_client_http_urls: Vec<Url>,
    /// `--listen-metrics-urls`: `/metrics` and the health endpoints only.
    pub listen_metrics_urls: Vec<Url>,
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
    /// `--auth-token`: simple tokens, JWT (keys loaded) or none.
    pub auth_token: AuthTokenConfig,
    /// `--auth-token-ttl`: how long a simple token lives after its last use.
    pub auth_token_ttl: std::time::Duration,
    /// `--bcrypt-cost` (an invalid one already replaced by the default).
    pub bcrypt_cost: u32,
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
    /// `--enable-log-rotation`: how the one log file is rotated.
    pub log_rotation: Option<LogRotation>,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--initial-election-tick-advance`: a member of a cluster of several starts its election
    /// clock almost expired, so the first election takes a few ticks, not a whole timeout.
    pub initial_election_tick_advance: bool,
    /// `--experimental-watch-progress-notify-interval`, resolved (0 or
    /// negative → 10m, below 100ms → 100ms).
    pub watch_progress_notify_interval: Duration,
    /// The client transport's TLS files (`--cert-file`, `--key-file`, …); `None` without them.
    pub client_tls: Option<retcd_net::tls::TlsFiles>,
    /// `--auto-tls` in effect: no certificate given, so one is generated into
    /// `<data-dir>/fixtures/client`.
    pub client_auto_tls: bool,
    /// `--self-signed-cert-validity`, in years.
    pub self_signed_cert_validity: u64,
    /// `--cipher-suites`, `--tls-min-version`, `--tls-max-version`.
    pub tls_policy: retcd_net::tls::TlsPolicy,
    /// The peer transport's TLS files (`--peer-cert-file`, `--peer-key-file`, …).
    pub peer_tls: Option<retcd_net::tls::TlsFiles>,
    /// `--peer-client-cert-file` / `--peer-client-key-file`: presented when dialing peers
    /// instead of the peer certificate.
    pub peer_client_cert: Option<(PathBuf, PathBuf)>,
    /// `--peer-auto-tls` in effect (no peer certificate given): generated into
    /// `<data-dir>/fixtures/peer`; peers then do not verify each other (etcd's behaviour).
    pub peer_auto_tls: bool,
    /// `--experimental-peer-skip-client-san-verification`.
    pub peer_skip_client_san_verification: bool,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; `None`: retention 0 (off).
    pub auto_compaction: Option<retcd_raft::compactor::Retention>,
    /// `--metrics extensive` (any other value is etcd's `basic`): the gRPC handling-time
    /// histograms are recorded.
    pub metrics_extensive: bool,
    /// `--max-concurrent-streams`; `None`: etcd's default (unlimited), which retcd bounds.
    pub max_concurrent_streams: Option<u32>,
    /// `--grpc-keepalive-interval`, `--grpc-keepalive-timeout`: HTTP/2 pings of idle client
    /// connections, and how long an answer may take.
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    /// `--enable-grpc-gateway`.
    pub enable_grpc_gateway: bool,
    /// `--enable-pprof`: `/debug/pprof/` on the client URLs (also served at `--log-level=debug`,
    /// as etcd does; see [`Config::serves_pprof`]).
    pub enable_pprof: bool,
    /// `--socket-reuse-port`: other processes may listen on the member's addresses.
    pub socket_reuse_port: bool,
    /// `--experimental-warning-apply-duration`: an apply slower than this is logged and counted.
    pub warning_apply_duration: Duration,
    /// `--force-new-cluster`: restart as the only member of the cluster (recovery of a cluster
    /// that lost its quorum).
    pub force_new_cluster: bool,
    /// `--unsafe-no-fsync`: the WAL and the page store skip their fdatasyncs.
    pub unsafe_no_fsync: bool,
    /// `--experimental-initial-corrupt-check`: compare hashes with the peers before serving.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: period of the leader's corruption check (0: off).
    pub corrupt_check_time: Duration,
    /// `--experimental-compact-hash-check-enabled` and `-time`: period of the leader's check of
    /// the compaction hashes (`None`: off).
    pub compact_hash_check: Option<Duration>,
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
    /// Whether `/debug/pprof/` is served: `--enable-pprof`, or `--log-level=debug` (etcd
    /// registers its pprof handlers for either).
    pub fn serves_pprof(&self) -> bool {
        self.enable_pprof || self.log_level == LogLevel::Debug
    }

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
                Support::Ignored => match flags::no_effect_reason(spec.name) {
                    Some(why) => out.push_str(&format!("    (retcd: no effect: {why})\n")),
                    None => {
                        out.push_str("    (retcd: accepted but not implemented yet; ignored)\n")
                    }
                },
                Support::Security | Support::Unsupported => out.push_str(
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

/// The flow behind [`parse`] and [`parse_from`]. `env_names`, the names of the
/// whole environment, is given only for the real process environment, to
/// report misspelt `ETCD_*` variables.
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
