//! Turning gathered settings into a [`Config`]: etcd's derived defaults
//! (`${name}.etcd`, the initial cluster from `--name`, 0 meaning "default"),
//! etcd's start-up validation, and retcd's refusal of settings it cannot
//! honour safely.
//!
//! [`build`] runs one function per section, in a fixed order: with several
//! faults, the first section's is the one reported, and warnings come out in
//! section order. Each section reads `&Settings` and returns its part of the
//! [`Config`] under the field names `Config` uses; TLS is such a section in
//! its own module (`super::tls`), which also checks https URLs against the
//! certificates given; so is auth (`super::auth`), which loads the JWT keys.
//!
//! Only the top-level flow in `config` and `Config::default` call [`build`].

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{Auth, auth};
use super::compaction::auto_compaction;
use super::flags::{DEFAULT_INITIAL_CLUSTER, Support, no_effect_reason, refusal_reason, spec};
use super::settings::{
    Origin, Settings, bool_of, dur_of, i64_of, invalid_setting, list_of, str_of, u64_of, urls_of,
    usize_of, value,
};
use super::tls::{Tls, tls};
use super::url::Url;
use super::value::{Value, differs_from_default};
use super::{
    ClusterState, Config, ConfigError, DEFAULT_NAME, DEFAULT_SNAPSHOT_COUNT,
    DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL, InitialMember, LogLevel, LogOutput, LogRotation,
    MAX_ELECTION_TIMEOUT_MS, MAX_SUGGESTED_QUOTA_BYTES, MIN_WATCH_PROGRESS_NOTIFY_INTERVAL,
};

/// Turns settings into a [`Config`], applying etcd's derived defaults and
/// validation. `file_mode` selects the rules that differ for config files.
pub(super) fn build(
    settings: &Settings,
    file_mode: bool,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    refuse_or_warn_unimplemented(settings, warnings)?;
    check_ignored(settings)?;
    let Member {
        name,
        data_dir,
        dedicated_wal_dir,
    } = member(settings);
    let Urls {
        listen_client_urls,
        listen_client_http_urls,
        listen_metrics_urls,
        advertise_client_urls,
        listen_peer_urls,
        initial_advertise_peer_urls,
    } = urls(settings, file_mode)?;
    let Cluster {
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token,
    } = cluster(settings, &name, &initial_advertise_peer_urls)?;
    let Limits {
        snapshot_count,
        snapshot_catchup_entries,
        quota_backend_bytes,
        max_request_bytes,
        max_txn_ops,
    } = limits(settings, warnings)?;
    let Logging {
        log_level,
        logger,
        log_outputs,
        log_rotation,
    } = logging(settings)?;
    let Timing {
        heartbeat_interval,
        election_timeout,
        initial_election_tick_advance,
        watch_progress_notify_interval,
    } = timing(settings, warnings)?;
    let Tls {
        client_tls,
        client_auto_tls,
        self_signed_cert_validity,
        tls_policy,
        peer_tls,
        peer_client_cert,
        peer_auto_tls,
        peer_skip_client_san_verification,
    } = tls(settings, &listen_client_urls, &listen_peer_urls, warnings)?;
    let Auth {
        auth_token,
        auth_token_ttl,
        bcrypt_cost,
    } = auth(settings, warnings)?;
    let auto_compaction = auto_compaction(settings)?;

    Ok(Config {
        name,
        data_dir,
        dedicated_wal_dir,
        listen_client_urls,
        listen_client_http_urls,
        listen_metrics_urls,
        advertise_client_urls,
        listen_peer_urls,
        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token,
        snapshot_count,
        snapshot_catchup_entries,
        quota_backend_bytes,
        max_request_bytes,
        max_txn_ops,
        log_level,
        logger,
        log_outputs,
        log_rotation,
        heartbeat_interval,
        election_timeout,
        initial_election_tick_advance,
        watch_progress_notify_interval,
        auth_token,
        auth_token_ttl,
        bcrypt_cost,
        client_tls,
        client_auto_tls,
        self_signed_cert_validity,
        tls_policy,
        peer_tls,
        peer_client_cert,
        peer_auto_tls,
        peer_skip_client_san_verification,
        auto_compaction,
        metrics_extensive: str_of(settings, "metrics") == "extensive",
        max_concurrent_streams: u32::try_from(u64_of(settings, "max-concurrent-streams"))
            .ok()
            .filter(|n| *n != u32::MAX),
        enable_grpc_gateway: bool_of(settings, "enable-grpc-gateway"),
        enable_pprof: bool_of(settings, "enable-pprof"),
        grpc_keepalive_interval: Duration::from_nanos(
            u64::try_from(dur_of(settings, "grpc-keepalive-interval")).unwrap_or(0),
        ),
        grpc_keepalive_timeout: Duration::from_nanos(
            u64::try_from(dur_of(settings, "grpc-keepalive-timeout")).unwrap_or(0),
        ),
        socket_reuse_port: bool_of(settings, "socket-reuse-port"),
        warning_apply_duration: Duration::from_nanos(
            u64::try_from(dur_of(settings, "experimental-warning-apply-duration")).unwrap_or(0),
        ),
        unsafe_no_fsync: bool_of(settings, "unsafe-no-fsync"),
        force_new_cluster: bool_of(settings, "force-new-cluster"),
        initial_corrupt_check: bool_of(settings, "experimental-initial-corrupt-check"),
        corrupt_check_time: Duration::from_nanos(
            u64::try_from(dur_of(settings, "experimental-corrupt-check-time")).unwrap_or(0),
        ),
        compact_hash_check: bool_of(settings, "experimental-compact-hash-check-enabled").then(
            || {
                Duration::from_nanos(
                    u64::try_from(dur_of(settings, "experimental-compact-hash-check-time"))
                        .unwrap_or(0),
                )
            },
        ),
        // Only the caller knows whether the settings came from a file.
        config_file: None,
    })
}

/// Settings retcd does not implement: refused where running without them
/// would weaken security or start a different kind of cluster, warned about
/// otherwise, and in both cases only when they ask for something.
fn refuse_or_warn_unimplemented(
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
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
                    warnings.push(match no_effect_reason(name) {
                        Some(why) => format!(
                            "flag --{name} has no effect in retcd: {why}{}",
                            setting.origin.suffix()
                        ),
                        None => format!(
                            "flag --{name} is accepted but not implemented yet; ignored{}",
                            setting.origin.suffix()
                        ),
                    });
                }
            }
            Support::Security | Support::Unsupported => {
                if differs_from_default(spec, &setting.value) {
                    return Err(refused(&setting.origin, refusal_reason(name)));
                }
            }
        }
    }
    Ok(())
}

/// etcd's validation of settings retcd ignores but etcd would reject: a
/// configuration etcd refuses to start with must not start retcd either.
fn check_ignored(settings: &Settings) -> Result<(), ConfigError> {
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
    Ok(())
}

/// Member identity and storage.
struct Member {
    name: String,
    data_dir: PathBuf,
    dedicated_wal_dir: Option<PathBuf>,
}

fn member(settings: &Settings) -> Member {
    let name = str_of(settings, "name");
    let data_dir = match str_of(settings, "data-dir") {
        d if d.is_empty() => PathBuf::from(format!("{name}.etcd")),
        d => PathBuf::from(d),
    };
    let dedicated_wal_dir = Some(str_of(settings, "wal-dir"))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    Member {
        name,
        data_dir,
        dedicated_wal_dir,
    }
}

/// Where this member listens and what it advertises.
struct Urls {
    listen_client_urls: Vec<Url>,
    listen_client_http_urls: Vec<Url>,
    listen_metrics_urls: Vec<Url>,
    advertise_client_urls: Vec<Url>,
    listen_peer_urls: Vec<Url>,
    initial_advertise_peer_urls: Vec<Url>,
}

fn urls(settings: &Settings, file_mode: bool) -> Result<Urls, ConfigError> {
    let (listen_client_urls, lc_origin) = urls_of(settings, "listen-client-urls");
    check_bind(&listen_client_urls, "listen-client-urls", &lc_origin)?;
    let (listen_peer_urls, lp_origin) = urls_of(settings, "listen-peer-urls");
    check_bind(&listen_peer_urls, "listen-peer-urls", &lp_origin)?;
    let (advertise_client_urls, _) = urls_of(settings, "advertise-client-urls");
    let (initial_advertise_peer_urls, _) = urls_of(settings, "initial-advertise-peer-urls");
    if !file_mode
        && settings.contains_key("listen-client-urls")
        && !settings.contains_key("advertise-client-urls")
    {
        return Err(ConfigError::Invalid(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
                .to_string(),
        ));
    }
    Ok(Urls {
        listen_client_urls,
        listen_client_http_urls: urls_of(settings, "listen-client-http-urls").0,
        listen_metrics_urls: urls_of(settings, "listen-metrics-urls").0,
        advertise_client_urls,
        listen_peer_urls,
        initial_advertise_peer_urls,
    })
}

/// How this member bootstraps or joins its cluster.
struct Cluster {
    initial_cluster: Vec<InitialMember>,
    initial_cluster_state: ClusterState,
    initial_cluster_token: String,
}

/// `name` and `initial_advertise_peer_urls` are the resolved member settings,
/// from which etcd derives the default initial cluster.
fn cluster(
    settings: &Settings,
    name: &str,
    initial_advertise_peer_urls: &[Url],
) -> Result<Cluster, ConfigError> {
    // Initial cluster, with etcd's rule: the default names "default" and
    // becomes ${name}=<advertise peer URLs> when only --name is changed.
    let (mut ic_value, mut ic_origin) = match value(settings, "initial-cluster") {
        (Value::Str(s), origin) => (s, origin),
        _ => unreachable!(),
    };
    if name != DEFAULT_NAME && ic_value == DEFAULT_INITIAL_CLUSTER {
        let member = if name.is_empty() { DEFAULT_NAME } else { name };
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

    let initial_cluster_state = match str_of(settings, "initial-cluster-state").as_str() {
        "existing" => ClusterState::Existing,
        _ => ClusterState::New,
    };
    Ok(Cluster {
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token: str_of(settings, "initial-cluster-token"),
    })
}

/// Snapshot, storage and request sizes.
struct Limits {
    snapshot_count: u64,
    snapshot_catchup_entries: u64,
    quota_backend_bytes: i64,
    max_request_bytes: usize,
    max_txn_ops: usize,
}

fn limits(settings: &Settings, warnings: &mut Vec<String>) -> Result<Limits, ConfigError> {
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
    if max_request_bytes > retcd_engine::wal::MAX_ENTRY_DATA {
        warnings.push(format!(
            "--max-request-bytes {max_request_bytes} exceeds what one WAL record holds ({} bytes \
             of request): larger writes are refused with \"etcdserver: request is too large\"",
            retcd_engine::wal::MAX_ENTRY_DATA
        ));
    }
    let max_txn_ops = usize_of(settings, "max-txn-ops")?;
    Ok(Limits {
        snapshot_count,
        snapshot_catchup_entries: u64_of(settings, "experimental-snapshot-catchup-entries"),
        quota_backend_bytes,
        max_request_bytes,
        max_txn_ops,
    })
}

struct Logging {
    log_level: LogLevel,
    logger: String,
    log_outputs: Vec<LogOutput>,
    log_rotation: Option<LogRotation>,
}

/// etcd's setupLogRotation: rotation needs exactly one file among the outputs, and lumberjack's
/// JSON settings.
fn log_rotation(
    settings: &Settings,
    outputs: &[LogOutput],
) -> Result<Option<LogRotation>, ConfigError> {
    if !bool_of(settings, "enable-log-rotation") {
        return Ok(None);
    }
    let files = outputs
        .iter()
        .filter(|o| matches!(o, LogOutput::File(_)))
        .count();
    if files != 1 {
        return Err(ConfigError::Invalid(
            "--log-outputs requires a single file path when using --log-rotation-config-json"
                .to_string(),
        ));
    }
    let raw = str_of(settings, "log-rotation-config-json");
    let invalid = |reason: String| {
        invalid_setting(settings, "log-rotation-config-json", raw.clone(), &reason)
    };
    let v: serde_json::Value = serde_json::from_str(&raw)
        .map_err(|e| invalid(format!("improperly formatted log rotation config: {e}")))?;
    let num = |key: &str| -> Result<u64, ConfigError> {
        match v.get(key) {
            None => Ok(0),
            Some(n) => n.as_u64().ok_or_else(|| {
                invalid(format!(
                    "invalid log rotation config: {key} must be a number"
                ))
            }),
        }
    };
    if v.get("compress").and_then(serde_json::Value::as_bool) == Some(true) {
        return Err(invalid(
            "retcd does not compress rotated logs; set \"compress\": false".to_string(),
        ));
    }
    Ok(Some(LogRotation {
        // lumberjack: 0 means its default, 100 MB.
        max_size_mb: match num("maxsize")? {
            0 => 100,
            n => n,
        },
        max_age_days: num("maxage")?,
        max_backups: num("maxbackups")?,
    }))
}

fn logging(settings: &Settings) -> Result<Logging, ConfigError> {
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
    let log_outputs = resolve_log_outputs(settings)?;
    let log_rotation = log_rotation(settings, &log_outputs)?;
    Ok(Logging {
        log_level,
        logger: "zap".to_string(),
        log_outputs,
        log_rotation,
    })
}

/// Raft timing and the watch progress period.
struct Timing {
    heartbeat_interval: Duration,
    election_timeout: Duration,
    initial_election_tick_advance: bool,
    watch_progress_notify_interval: Duration,
}

fn timing(settings: &Settings, warnings: &mut Vec<String>) -> Result<Timing, ConfigError> {
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
    Ok(Timing {
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout: Duration::from_millis(election_ms),
        initial_election_tick_advance: bool_of(settings, "initial-election-tick-advance"),
        watch_progress_notify_interval: watch_progress_notify_interval(settings, warnings),
    })
}

/// etcd's rules: 0 or negative means the default, and too short a period is
/// raised to the minimum with a warning rather than refused.
fn watch_progress_notify_interval(settings: &Settings, warnings: &mut Vec<String>) -> Duration {
    let wp = dur_of(settings, "experimental-watch-progress-notify-interval");
    if wp <= 0 {
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
    }
}

fn refused(origin: &Origin, reason: &str) -> ConfigError {
    ConfigError::Refused {
        origin: origin.to_string(),
        reason: reason.to_string(),
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

fn resolve_log_outputs(settings: &Settings) -> Result<Vec<LogOutput>, ConfigError> {
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
            "systemd/journal" => LogOutput::Journal,
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
