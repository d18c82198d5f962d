//! The flag table: every etcd 3.5 server flag, with its Go type, etcd's
//! default, its `--help` line, and what retcd does with it (honours, ignores
//! with a warning, or refuses unless left at its default).
//!
//! The table is the single list of setting names: the command line, the
//! `ETCD_*` variables, the config file and the builder all look names up here,
//! so a name that is not in [`SPECS`] cannot be set. Every default parses
//! with its own kind (a test checks it), which lets readers of `Settings` fall
//! back to the default without handling errors.
//!
//! Private to `config`; its children read it.

/// `--initial-cluster` before etcd's "use ${name}" rule is applied.
pub(super) const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";

/// How a flag's value is written (Go flag types of etcd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) enum Support {
    /// Typed field of [`Config`](super::Config).
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
    /// Flags etcd itself ignores with a warning.
    Legacy,
}

/// The `--help` group a flag is listed under (etcd's own grouping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Section {
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

/// `--help` order; [`Section::Legacy`] is left out because etcd does not list those flags.
pub(super) const SECTIONS: &[Section] = &[
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
    pub(super) fn title(self) -> &'static str {
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

pub(super) struct Spec {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    /// etcd's default, written as on the command line.
    pub(super) default: &'static str,
    pub(super) support: Support,
    pub(super) section: Section,
    pub(super) help: &'static str,
}

impl Spec {
    /// A transport security setting retcd honours: dropping it (as etcd does with flags next
    /// to a config file) would run the server less secure than asked, so such drops are refused.
    pub(super) fn is_implemented_security(&self) -> bool {
        self.support == Support::Implemented && self.section == Section::Security
    }
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
pub(super) static SPECS: &[Spec] = &[
    // Member
    f("name", K::Str, "default", S::Implemented, Sec::Member, "Human-readable name of this member."),
    f("data-dir", K::Str, "", S::Implemented, Sec::Member, "Directory holding the member's data."),
    f("wal-dir", K::Str, "", S::Implemented, Sec::Member, "Separate directory for the write-ahead log (default: <data-dir>/member/wal)."),
    f("snapshot-count", K::Uint, "100000", S::Implemented, Sec::Member, "Committed entries between two snapshots to disk."),
    f("heartbeat-interval", K::Uint, "100", S::Implemented, Sec::Member, "Heartbeat interval, in milliseconds."),
    f("election-timeout", K::Uint, "1000", S::Implemented, Sec::Member, "Election timeout, in milliseconds (at least 5 heartbeats, at most 50000)."),
    f("initial-election-tick-advance", K::Bool, "true", S::Implemented, Sec::Member, "Fast-forward election ticks at boot so a first election happens sooner."),
    f("listen-peer-urls", K::Urls, "http://localhost:2380", S::Implemented, Sec::Member, "URLs to listen on for traffic from other members."),
    f("listen-client-urls", K::Urls, "http://localhost:2379", S::Implemented, Sec::Member, "URLs to listen on for client traffic (gRPC, and HTTP unless --listen-client-http-urls is set)."),
    f("listen-client-http-urls", K::Urls, "", S::Implemented, Sec::Member, "URLs to listen on for HTTP-only client traffic."),
    f("max-snapshots", K::Uint, "5", S::Ignored, Sec::Member, "Snapshot files to keep (0: no limit)."),
    f("max-wals", K::Uint, "5", S::Ignored, Sec::Member, "WAL files to keep (0: no limit)."),
    f("quota-backend-bytes", K::Int, "0", S::Implemented, Sec::Member, "Backend size that raises the NOSPACE alarm (0: 2 GiB; negative: no quota)."),
    f("backend-bbolt-freelist-type", K::Str, "map", S::Ignored, Sec::Member, "bbolt free-list type (array or map)."),
    f("backend-batch-interval", K::Duration, "0s", S::Ignored, Sec::Member, "Longest time before a backend transaction is committed."),
    f("backend-batch-limit", K::Int, "0", S::Ignored, Sec::Member, "Most operations before a backend transaction is committed."),
    f("max-txn-ops", K::Uint, "128", S::Implemented, Sec::Member, "Most operations allowed in one transaction."),
    f("max-request-bytes", K::Uint, "1572864", S::Implemented, Sec::Member, "Largest client request accepted, in bytes."),
    f("max-concurrent-streams", K::Uint32, "4294967295", S::Implemented, Sec::Member, "Most concurrent gRPC streams per client connection (default: retcd's bound of 4096)."),
    f("enable-grpc-gateway", K::Bool, "true", S::Implemented, Sec::Member, "Serve the JSON/HTTP gateway to the gRPC API."),
    f("grpc-keepalive-min-time", K::Duration, "5s", S::Ignored, Sec::Member, "Shortest interval a client may ping the server at."),
    f("grpc-keepalive-interval", K::Duration, "2h", S::Implemented, Sec::Member, "How often the server pings an idle connection (0: never)."),
    f("grpc-keepalive-timeout", K::Duration, "20s", S::Implemented, Sec::Member, "How long to wait for a ping reply before closing (0: forever)."),
    f("socket-reuse-port", K::Bool, "false", S::Implemented, Sec::Member, "Set SO_REUSEPORT on listeners: other processes may then listen on the same address."),
    f("socket-reuse-address", K::Bool, "false", S::Implemented, Sec::Member, "Set SO_REUSEADDR on listeners (retcd always does, so that a restart binds at once)."),
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
    f("auto-compaction-retention", K::Str, "0", S::Implemented, Sec::Clustering, "History to keep when compacting automatically (0: no automatic compaction)."),
    f("auto-compaction-mode", K::Str, "periodic", S::Implemented, Sec::Clustering, "How the retention is read: 'periodic' (a duration, hours by default) or 'revision'."),
    f("enable-v2", K::Bool, "false", S::Ignored, Sec::Clustering, "Serve the v2 API (deprecated in etcd 3.5)."),
    f("v2-deprecation", K::Choices(V2_DEPRECATION), "not-yet", S::Ignored, Sec::Clustering, "v2 store deprecation phase: not-yet, write-only, write-only-skip-check, write-only-drop-data or gone."),
    // Security
    f("cert-file", K::Str, "", S::Implemented, Sec::Security, "TLS certificate for client connections."),
    f("key-file", K::Str, "", S::Implemented, Sec::Security, "TLS key for client connections."),
    f("client-cert-auth", K::Bool, "false", S::Implemented, Sec::Security, "Require client certificates."),
    f("client-cert-file", K::Str, "", S::Security, Sec::Security, "Client certificate used when this member acts as a client (default: --cert-file)."),
    f("client-key-file", K::Str, "", S::Security, Sec::Security, "Client key used when this member acts as a client (default: --key-file)."),
    f("client-crl-file", K::Str, "", S::Implemented, Sec::Security, "Certificate revocation list for client certificates."),
    f("client-cert-allowed-hostname", K::Strings, "", S::Implemented, Sec::Security, "SAN host names allowed in client certificates."),
    f("trusted-ca-file", K::Str, "", S::Implemented, Sec::Security, "CA bundle for verifying client certificates."),
    f("auto-tls", K::Bool, "false", S::Implemented, Sec::Security, "Serve clients over TLS with a generated self-signed certificate."),
    f("peer-cert-file", K::Str, "", S::Implemented, Sec::Security, "TLS certificate for peer connections."),
    f("peer-key-file", K::Str, "", S::Implemented, Sec::Security, "TLS key for peer connections."),
    f("peer-client-cert-auth", K::Bool, "false", S::Implemented, Sec::Security, "Require certificates from peers."),
    f("peer-trusted-ca-file", K::Str, "", S::Implemented, Sec::Security, "CA bundle for verifying peer certificates."),
    f("peer-cert-allowed-cn", K::Strings, "", S::Implemented, Sec::Security, "Common names allowed in peer certificates."),
    f("peer-cert-allowed-hostname", K::Strings, "", S::Implemented, Sec::Security, "SAN host names allowed in peer certificates."),
    f("peer-auto-tls", K::Bool, "false", S::Implemented, Sec::Security, "Talk to peers over TLS with a generated self-signed certificate."),
    f("peer-client-cert-file", K::Str, "", S::Implemented, Sec::Security, "Client certificate for outgoing peer connections (default: --peer-cert-file)."),
    f("peer-client-key-file", K::Str, "", S::Implemented, Sec::Security, "Client key for outgoing peer connections (default: --peer-key-file)."),
    f("self-signed-cert-validity", K::Uint, "1", S::Implemented, Sec::Security, "Validity of generated certificates, in years."),
    f("peer-crl-file", K::Str, "", S::Implemented, Sec::Security, "Certificate revocation list for peer certificates."),
    f("cipher-suites", K::Strings, "", S::Implemented, Sec::Security, "TLS cipher suites to allow (empty: the implementation's defaults)."),
    f("cors", K::Strings, "*", S::Security, Sec::Security, "Origins allowed for cross-origin requests ('*' or empty: any)."),
    f("host-whitelist", K::UniqueStrings, "*", S::Security, Sec::Security, "Host headers accepted on insecure HTTP ('*' or empty: any)."),
    f("tls-min-version", K::Str, "TLS1.2", S::Implemented, Sec::Security, "Lowest TLS version accepted (TLS1.2 or TLS1.3)."),
    f("tls-max-version", K::Str, "", S::Implemented, Sec::Security, "Highest TLS version accepted (TLS1.2, TLS1.3; empty: newest)."),
    f("experimental-peer-skip-client-san-verification", K::Bool, "false", S::Implemented, Sec::Security, "Do not check the SAN of peer client certificates."),
    // Auth
    f("auth-token", K::Str, "simple", S::Implemented, Sec::Auth, "Authentication token provider and its options ('simple' or 'jwt,sign-method=M,pub-key=F,priv-key=F,ttl=D')."),
    f("bcrypt-cost", K::Uint, "10", S::Implemented, Sec::Auth, "bcrypt cost factor for password hashes (4 to 31)."),
    f("auth-token-ttl", K::Uint, "300", S::Implemented, Sec::Auth, "Lifetime of simple tokens, in seconds."),
    // Profiling and monitoring
    f("enable-pprof", K::Bool, "false", S::Implemented, Sec::Monitoring, "Serve runtime profiles under <client-url>/debug/pprof/."),
    f("metrics", K::Str, "basic", S::Implemented, Sec::Monitoring, "Metrics detail: 'basic' or 'extensive' (adds gRPC latency histograms)."),
    f("listen-metrics-urls", K::Urls, "", S::Implemented, Sec::Monitoring, "Extra URLs serving /metrics and /health."),
    // Logging
    f("logger", K::Str, "zap", S::Implemented, Sec::Logging, "Logger implementation; only 'zap' (structured logging) exists in etcd 3.5."),
    f("log-outputs", K::UniqueStrings, "default", S::Implemented, Sec::Logging, "Where logs go: 'default' or 'stderr', 'stdout', or file paths, comma separated."),
    f("log-level", K::Str, "info", S::Implemented, Sec::Logging, "Log level: debug, info, warn, error, panic or fatal."),
    f("enable-log-rotation", K::Bool, "false", S::Implemented, Sec::Logging, "Rotate the log file (needs a single file in --log-outputs)."),
    f("log-rotation-config-json", K::Str, LOG_ROTATION_DEFAULT, S::Implemented, Sec::Logging, "Log rotation settings as JSON (maxsize MB, maxage days, maxbackups; backups named in UTC; compress is refused)."),
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
    f("experimental-initial-corrupt-check", K::Bool, "true", S::Implemented, Sec::Experimental, "Compare the state's hash with the peers' before serving (retcd: on by default)."),
    f("experimental-corrupt-check-time", K::Duration, "5m", S::Implemented, Sec::Experimental, "Period of the leader's cluster-wide corruption checks (0: off; retcd: on by default)."),
    f("experimental-compact-hash-check-enabled", K::Bool, "true", S::Implemented, Sec::Experimental, "Let the leader compare the members' hashes of each compaction (retcd: on by default)."),
    f("experimental-compact-hash-check-time", K::Duration, "1m", S::Implemented, Sec::Experimental, "Period of those compaction hash checks."),
    f("experimental-enable-v2v3", K::Str, "", S::Ignored, Sec::Experimental, "Serve the v2 API from the v3 store under this prefix (deprecated)."),
    f("experimental-enable-lease-checkpoint", K::Bool, "false", S::Ignored, Sec::Experimental, "Have the leader checkpoint lease TTLs to the other members."),
    f("experimental-enable-lease-checkpoint-persist", K::Bool, "false", S::Ignored, Sec::Experimental, "Persist checkpointed lease TTLs (needs the flag above)."),
    f("experimental-compaction-batch-limit", K::Int, "0", S::Ignored, Sec::Experimental, "Revisions removed per compaction batch."),
    f("experimental-compaction-sleep-interval", K::Duration, "0s", S::Ignored, Sec::Experimental, "Pause between compaction batches."),
    f("experimental-watch-progress-notify-interval", K::Duration, "10m", S::Implemented, Sec::Experimental, "Period of watch progress notifications (0: 10m; at least 100ms)."),
    f("experimental-downgrade-check-time", K::Duration, "5s", S::Ignored, Sec::Experimental, "Period of downgrade status checks."),
    f("experimental-memory-mlock", K::Bool, "false", S::Ignored, Sec::Experimental, "Lock the process's memory in RAM."),
    f("experimental-warning-apply-duration", K::Duration, "100ms", S::Implemented, Sec::Experimental, "Warn when applying a request takes longer than this."),
    f("experimental-txn-mode-write-with-shared-buffer", K::Bool, "true", S::Ignored, Sec::Experimental, "Let write transactions read through the shared buffer."),
    f("experimental-bootstrap-defrag-threshold-megabytes", K::Uint, "0", S::Ignored, Sec::Experimental, "Defragment at boot if that frees at least this many MB (0: never)."),
    f("experimental-stop-grpc-service-on-defrag", K::Bool, "false", S::Ignored, Sec::Experimental, "Stop serving gRPC while defragmenting."),
    f("experimental-snapshot-catchup-entries", K::Uint, "5000", S::Implemented, Sec::Experimental, "Entries kept after a snapshot for slow followers to catch up."),
    // Unsafe
    f("force-new-cluster", K::Bool, "false", S::Implemented, Sec::Unsafe, "Restart as a one-member cluster, dropping the others (recovery only)."),
    f("unsafe-no-fsync", K::Bool, "false", S::Implemented, Sec::Unsafe, "Disables fsync, unsafe, will cause data loss."),
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

pub(super) fn lookup(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// For names the code itself spells; a miss is a bug, hence the panic.
pub(super) fn spec(name: &str) -> &'static Spec {
    lookup(name).unwrap_or_else(|| panic!("no flag spec for {name}"))
}

/// Why an accepted flag (`Support::Ignored`) changes nothing in retcd, where retcd's design makes
/// it moot.
pub(super) fn no_effect_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "grpc-keepalive-min-time" => {
            "the HTTP/2 server has no policy on how often clients may ping (etcd's enforcement \
             policy); pings are answered whatever their rate"
        }
        "max-snapshots" => {
            "retcd keeps no .snap files (a Raft snapshot streams from the page store, and a \
             received one is removed once installed)"
        }
        "max-wals" => {
            "retcd deletes each WAL segment as soon as a checkpoint of the page store covers it; \
             none are kept beyond that"
        }
        "experimental-enable-lease-checkpoint" | "experimental-enable-lease-checkpoint-persist" => {
            "retcd always checkpoints remaining lease TTLs through Raft and persists them \
             (etcd's behaviour with both flags on)"
        }
        "backend-bbolt-freelist-type" | "backend-batch-interval" | "backend-batch-limit" => {
            "retcd's page store is not bbolt: its transactions commit per applied batch and \
             its free list is its own"
        }
        "experimental-txn-mode-write-with-shared-buffer" => {
            "retcd's write transactions never share bbolt's buffer; reads see the last applied \
             state without copying it"
        }
        "pre-vote" => "retcd always runs Raft's pre-vote and check-quorum (etcd's defaults)",
        "strict-reconfig-check" => {
            "retcd always makes etcd's strict reconfiguration checks (a change that would leave \
             too few started or reachable voters is refused)"
        }
        "raft-read-timeout" | "raft-write-timeout" => {
            "peer connections are long-lived HTTP/2 streams; a peer that stops answering is \
             found by Raft's heartbeats and the round-trip prober, not by per-call timeouts"
        }
        "discovery-fallback" | "discovery-proxy" => {
            "it only applies to --discovery, which retcd refuses"
        }
        "proxy-failure-wait"
        | "proxy-refresh-interval"
        | "proxy-dial-timeout"
        | "proxy-write-timeout"
        | "proxy-read-timeout" => "it only applies to --proxy, which retcd refuses",
        "enable-v2" | "v2-deprecation" | "experimental-enable-v2v3" => {
            "retcd serves the v3 API only (v2 is deprecated in etcd 3.5 and removed in 3.6)"
        }
        "experimental-compaction-batch-limit" | "experimental-compaction-sleep-interval" => {
            "retcd deletes compacted revisions in bounded batches between the sequencer's \
             rounds, so a compaction never stalls writes and needs no tuning"
        }
        "experimental-stop-grpc-service-on-defrag" => {
            "retcd's defragmentation runs online and never stops serving"
        }
        _ => return None,
    })
}

/// Why a refused flag (`Support::Security`/`Unsupported`) is refused.
pub(super) fn refusal_reason(name: &str) -> &'static str {
    match name {
        "cors" | "host-whitelist" => {
            "origin/host filtering is not implemented yet; refusing to start rather than accept \
             every origin and host"
        }
        "discovery" | "discovery-srv" | "discovery-srv-name" => {
            "cluster discovery is not implemented yet; bootstrap with --initial-cluster instead"
        }
        "proxy" => "the v2 proxy mode is not implemented (it is deprecated in etcd 3.5)",
        _ => {
            "peer TLS is not implemented in retcd yet; refusing to start without the transport \
             security this setting asks for"
        }
    }
}
