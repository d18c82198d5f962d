//! The command line: etcd benchmark's commands and flags, `run FILE.fio`, `null-server` and
//! `compare`. Parses, runs on a multi-threaded tokio runtime, and writes the reports (text as
//! etcd's benchmark prints it, JSON or CSV with `--output`, an HTML page with `--report`).
//!
//! Flags keep etcd's names and defaults, so a command line written for etcd's `benchmark`
//! runs unchanged (global flags may come before or after the command).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use retcd_net::pb::etcdserverpb::{CompactionRequest, RangeRequest};

use crate::client::{ConnectOptions, TlsOptions, connect, status_text};
use crate::keys::{KeyStyle, Picker, prefix_range};
use crate::load::{
    Isolation, KeepaliveOp, Keys, MixedOp, Op, Outcome, Plan, PutOp, RangeOp, RangeTarget, StmOp,
    TxnPutOp, Value, drive,
};
use crate::profile::{self, Distribution};
use crate::progress::{Bar, Goal};
use crate::report::{Recorder, Stats, render_html};

#[derive(Parser, Debug)]
#[command(
    name = "retcd-bench",
    version,
    about = "A low-level benchmark tool for etcd v3 stores (retcd and etcd alike)",
    long_about = "retcd-bench drives any etcd v3 gRPC endpoint. It takes the commands and flags of \
etcd's own `benchmark` tool, and runs fio-style job files (`retcd-bench run FILE.fio`)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Total number of gRPC clients
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Use full floating point precision
    #[arg(long, global = true)]
    pub precise: bool,
    /// Sample requests for every second
    #[arg(long, global = true)]
    pub sample: bool,
    /// Connect only to the leader member
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// Provide username[:password] and prompt if password is not supplied
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Identify secure client using this TLS certificate file
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Identify secure client using this TLS key file
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Skip server certificate verification (not supported: use --cacert)
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// Dial timeout for client connections (e.g. 2s); 0 = none
    #[arg(long, global = true, value_parser = duration, default_value = "0")]
    pub dial_timeout: Duration,
    /// Report format on stdout
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also write a self-contained HTML page with plots to FILE
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Csv,
}

fn duration(s: &str) -> Result<Duration, String> {
    profile::parse_time(s).ok_or_else(|| format!("invalid duration {s:?} (e.g. 500ms, 2s, 5m)"))
}

fn consistency(s: &str) -> Result<bool, String> {
    match s {
        "l" => Ok(false),
        "s" => Ok(true),
        _ => Err("Linearizable(l) or Serializable(s)".into()),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Benchmark put
    Put(PutArgs),
    /// Benchmark range
    Range(RangeArgs),
    /// Benchmark txn-put
    TxnPut(TxnPutArgs),
    /// Benchmark a mixed load of txn-put & txn-range
    TxnMixed(TxnMixedArgs),
    /// Benchmark watch: creating watchers, then delivering events to them
    Watch(WatchArgs),
    /// Benchmark watch latency: from a put's response to its event at every watcher
    WatchLatency(WatchLatencyArgs),
    /// Benchmark serializable gets while many unsynced watchers catch up
    WatchGet(WatchGetArgs),
    /// Benchmark lease keepalive
    LeaseKeepalive(KeepaliveArgs),
    /// Benchmark STM (optimistic transactions retried on conflict)
    Stm(StmArgs),
    /// Run a fio-style job file
    Run(RunArgs),
    /// Serve etcd's KV and Lease API with instant empty answers (measures the generator)
    NullServer(NullArgs),
    /// Compare JSON results of two stores (A B A B rounds) as a Markdown table
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// Key size of put request
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put request
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum puts per second (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of put requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys
    #[arg(long)]
    pub sequential_keys: bool,
    /// Prefix for keys
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Interval to compact database (e.g. 5m); 0 = never
    #[arg(long, value_parser = duration, default_value = "0")]
    pub compact_interval: Duration,
    /// Delta between current revision and compact revision
    #[arg(long, default_value_t = 1000)]
    pub compact_index_delta: i64,
}

#[derive(Args, Debug)]
pub struct RangeArgs {
    /// Key to read (with --prefix: the prefix; may be omitted then)
    #[arg(id = "range_key", value_name = "KEY")]
    pub key: Option<String>,
    /// End of the range (exclusive)
    #[arg(id = "range_end", value_name = "END")]
    pub end: Option<String>,
    /// Maximum range requests per second (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of range requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l", value_parser = consistency, action = clap::ArgAction::Set)]
    pub consistency: bool,
    /// Maximum number of results to return from range request (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only returns the count of keys
    #[arg(long)]
    pub count_only: bool,
    /// Only returns the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Range over all keys with the given key as prefix
    #[arg(long)]
    pub prefix: bool,
    /// Use paginated unary range with 10k-key pages
    #[arg(long)]
    pub paginate: bool,
}

#[derive(Args, Debug)]
pub struct TxnPutArgs {
    /// Key size of txn put
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of txn put
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of puts per txn
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    /// Maximum txns per second (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of txn requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
}

#[derive(Args, Debug)]
pub struct TxnMixedArgs {
    /// Key size of mixed txn
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of mixed txn
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum txns per second (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of txn requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Read operation range end key (reads cover every key, with --limit, as etcd's do)
    #[arg(long, default_value = "")]
    pub end_key: String,
    /// Read operation range result limit
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l", value_parser = consistency, action = clap::ArgAction::Set)]
    pub consistency: bool,
    /// Read/write ops ratio
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Total watch streams
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Total watchers per stream
    #[arg(long, default_value_t = 100)]
    pub watch_per_stream: usize,
    /// Total number of keys to be watched
    #[arg(long, default_value_t = 1)]
    pub watched_key_total: usize,
    /// Number of keys to put per second (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub put_rate: u64,
    /// Number of put requests
    #[arg(long, default_value_t = 1000)]
    pub put_total: usize,
    /// Key size of watch request
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Args, Debug)]
pub struct WatchLatencyArgs {
    /// Total watch streams
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Total watchers per stream
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// PrevKV enabled on watch requests
    #[arg(long)]
    pub prevkv: bool,
    /// Total number of put requests
    #[arg(long, default_value_t = 1000)]
    pub put_total: usize,
    /// Number of keys to put per second
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Key size of watch response
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size of watch response
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

#[derive(Args, Debug)]
pub struct WatchGetArgs {
    /// Total number of watchers
    #[arg(long, default_value_t = 10000)]
    pub watchers: usize,
    /// Total number of watcher streams
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Number of events per watcher
    #[arg(long, default_value_t = 8)]
    pub events: usize,
}

#[derive(Args, Debug)]
pub struct KeepaliveArgs {
    /// Total number of lease keepalive requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
}

#[derive(Args, Debug)]
pub struct StmArgs {
    /// Read Committed (c), Repeatable Reads (r), Serializable (s), or Snapshot (ss)
    #[arg(long, default_value = "r")]
    pub isolation: String,
    /// Total unique keys accessible by the benchmark
    #[arg(long, default_value_t = 1)]
    pub keys: u64,
    /// Total number of completed STM transactions
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Number of keys to access per transaction
    #[arg(long, default_value_t = 1)]
    pub keys_per_txn: usize,
    /// Percentage of keys to overwrite per transaction
    #[arg(long, default_value_t = 50)]
    pub txn_wr_percent: u8,
    /// Wrap STM transaction with a custom locking mechanism (only "stm": none)
    #[arg(long, default_value = "stm")]
    pub stm_locker: String,
    /// Value size of each STM put request
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum STM transactions per second (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job file
    pub file: PathBuf,
    /// Override a key in every job, e.g. --set runtime=5s (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NullArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:23790")]
    pub listen: std::net::SocketAddr,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Label of the baseline store (e.g. etcd)
    #[arg(long)]
    pub baseline: String,
    /// Label of the store compared with it (e.g. retcd)
    #[arg(long)]
    pub contender: String,
    /// CPU seconds per results file (lines: LABEL ROUND PROFILE SERVER_S GENERATOR_S): adds a
    /// table of CPU time per request
    #[arg(long, value_name = "FILE")]
    pub cpu: Option<PathBuf>,
    /// JSON results written by `run --output json`, named LABEL-ROUND-PROFILE.json
    pub files: Vec<PathBuf>,
}

/// Something that stops the command, with the message to print.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

impl Fatal {
    fn from(e: impl std::fmt::Display) -> Fatal {
        Fatal(e.to_string())
    }
}

/// Entry point of the binary: parses `args`, runs, writes the reports to `out`.
pub fn main_with(args: impl IntoIterator<Item = String>, out: &mut dyn Write) -> Result<(), Fatal> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // --help and --version are answers, not errors: printed to `out`, exit status 0.
        Err(e) if !e.use_stderr() => {
            return write!(out, "{}", e.render()).map_err(Fatal::from);
        }
        Err(e) => return Err(Fatal(e.render().to_string())),
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(Fatal::from)?;
    let reports = rt.block_on(execute(&cli, out))?;
    if let Some(path) = &cli.global.report {
        let title = format!("retcd-bench {}", command_name(&cli.command));
        let runs: Vec<&Stats> = reports.iter().map(|(_, s)| s).collect();
        std::fs::write(path, render_html(&title, &runs))
            .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Put(_) => "put",
        Command::Range(_) => "range",
        Command::TxnPut(_) => "txn-put",
        Command::TxnMixed(_) => "txn-mixed",
        Command::Watch(_) => "watch",
        Command::WatchLatency(_) => "watch-latency",
        Command::WatchGet(_) => "watch-get",
        Command::LeaseKeepalive(_) => "lease-keepalive",
        Command::Stm(_) => "stm",
        Command::Run(_) => "run",
        Command::NullServer(_) => "null-server",
        Command::Compare(_) => "compare",
    }
}

fn connect_options(g: &Global) -> ConnectOptions {
    ConnectOptions {
        endpoints: g
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        tls: TlsOptions {
            cert: g.cert.clone(),
            key: g.key.clone(),
            cacert: g.cacert.clone(),
            insecure_skip_verify: g.insecure_skip_tls_verify,
        },
        user: g.user.clone(),
        dial_timeout: (!g.dial_timeout.is_zero()).then_some(g.dial_timeout),
        target_leader: g.target_leader,
        direct: true,
    }
}

/// A titled report: etcd prints some before their summary ("Watch creation summary:").
type Titled = (String, Stats);

/// Writes the reports in the chosen format.
fn emit(g: &Global, out: &mut dyn Write, reports: &[Titled]) -> Result<(), Fatal> {
    let text = match g.output {
        Output::Text => reports
            .iter()
            .map(|(title, s)| format!("{title}{}", s.render_etcd(g.precise, g.sample)))
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Json => {
            let v: Vec<serde_json::Value> = reports.iter().map(|(_, s)| s.to_json()).collect();
            serde_json::to_string_pretty(&v).map_err(Fatal::from)?
        }
        Output::Csv => {
            let mut s = format!("{}\n", Stats::csv_header());
            for (_, st) in reports {
                s.push_str(&st.csv_row());
                s.push('\n');
            }
            s
        }
    };
    writeln!(out, "{text}").map_err(Fatal::from)
}

async fn execute(cli: &Cli, out: &mut dyn Write) -> Result<Vec<Titled>, Fatal> {
    let g = &cli.global;
    if g.clients == 0 || g.conns == 0 {
        return Err(Fatal("--clients and --conns must be positive".into()));
    }
    let opts = connect_options(g);
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C ends the run early and still reports what was measured.
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let plan = |total: u64, rate: u64| Plan {
        clients: g.clients,
        total: Some(total),
        runtime: None,
        ramp: Duration::ZERO,
        rate,
    };
    let varint = |size: usize, prefix: &str| KeyStyle::Varint {
        prefix: prefix.as_bytes().to_vec(),
        size,
    };
    let keys = |style: KeyStyle, dist: Distribution, space: u64| -> Result<Keys, Fatal> {
        Ok(Keys {
            style: Arc::new(style),
            picker: Arc::new(Picker::new(dist, space).map_err(Fatal)?),
        })
    };
    let rng = SmallRng::from_entropy;
    let reports: Vec<Titled> = match &cli.command {
        Command::Put(a) => {
            positive_key_space(a.key_space_size)?;
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let dist = if a.sequential_keys {
                Distribution::Sequential
            } else {
                Distribution::Uniform
            };
            let keys = keys(varint(a.key_size, &a.prefix), dist, a.key_space_size)?;
            let value = Value::random(a.val_size, false);
            let ops = (0..g.clients)
                .map(|i| PutOp {
                    kv: conns[i % conns.len()].kv(),
                    keys: keys.clone(),
                    value: value.clone(),
                    lease: None,
                    rng: rng(),
                })
                .collect();
            let compactor = (!a.compact_interval.is_zero()).then(|| {
                let (mut kv, every, delta) =
                    (conns[0].kv(), a.compact_interval, a.compact_index_delta);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let req = RangeRequest {
                            key: b"foo".to_vec(),
                            ..Default::default()
                        };
                        let Ok(r) = kv.range(req).await else { continue };
                        let rev = r.into_inner().header.map_or(0, |h| h.revision);
                        let req = CompactionRequest {
                            revision: (rev - delta).max(0),
                            physical: false,
                        };
                        if let Err(s) = kv.compact(req).await {
                            eprintln!("compaction failed: {}", status_text(&s));
                        }
                    }
                })
            });
            let o = run_ops(&plan(a.total, a.rate), ops, &progress, &stop).await;
            if let Some(c) = compactor {
                c.abort();
            }
            single("put", "", o)
        }
        Command::Range(a) => {
            if a.paginate && a.limit > 0 {
                return Err(Fatal(
                    "--paginate and --limit are mutually exclusive".into(),
                ));
            }
            if a.count_only && a.keys_only {
                return Err(Fatal(
                    "`--keys-only` and `--count-only` cannot be set at the same time".into(),
                ));
            }
            let Some(key) = a.key.clone().or_else(|| a.prefix.then(String::new)) else {
                return Err(Fatal(
                    "range: a key is required (usage: range key [end-range])".into(),
                ));
            };
            let (key, end) = if a.prefix {
                prefix_range(key.as_bytes())
            } else {
                (
                    key.into_bytes(),
                    a.end.clone().unwrap_or_default().into_bytes(),
                )
            };
            announce_consistency(g, out, a.consistency)?;
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let template = RangeRequest {
                limit: if a.paginate { 10_000 } else { a.limit },
                serializable: a.consistency,
                keys_only: a.keys_only,
                count_only: a.count_only,
                ..Default::default()
            };
            let target = RangeTarget::Fixed { key, end };
            let ops = (0..g.clients)
                .map(|i| RangeOp {
                    kv: conns[i % conns.len()].kv(),
                    target: target.clone(),
                    template: template.clone(),
                    paginate: a.paginate,
                    rng: rng(),
                })
                .collect();
            single(
                "range",
                "",
                run_ops(&plan(a.total, a.rate), ops, &progress, &stop).await,
            )
        }
        Command::TxnPut(a) => {
            positive_key_space(a.key_space_size)?;
            if a.txn_ops as u64 > a.key_space_size {
                return Err(Fatal(format!(
                    "expected --txn-ops no larger than --key-space-size, got txn-ops({}) key-space-size({})",
                    a.txn_ops, a.key_space_size
                )));
            }
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let keys = keys(
                varint(a.key_size, ""),
                Distribution::Sequential,
                a.key_space_size,
            )?;
            let value = Value::random(a.val_size, false);
            let ops = (0..g.clients)
                .map(|i| TxnPutOp {
                    kv: conns[i % conns.len()].kv(),
                    keys: keys.clone(),
                    value: value.clone(),
                    ops: a.txn_ops,
                    rng: rng(),
                })
                .collect();
            single(
                "txn-put",
                "",
                run_ops(&plan(a.total, a.rate), ops, &progress, &stop).await,
            )
        }
        Command::TxnMixed(a) => {
            positive_key_space(a.key_space_size)?;
            announce_consistency(g, out, a.consistency)?;
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let keys = keys(
                varint(a.key_size, ""),
                Distribution::Sequential,
                a.key_space_size,
            )?;
            let value = Value::random(a.val_size, false);
            // etcd's reads: every key ("" with prefix), at most --limit of them.
            let (key, end) = prefix_range(b"");
            let reads = RangeTarget::Fixed { key, end };
            let template = RangeRequest {
                limit: a.limit,
                serializable: a.consistency,
                ..Default::default()
            };
            let read_percent = (100.0 * a.rw_ratio / (1.0 + a.rw_ratio))
                .round()
                .clamp(0.0, 100.0) as u8;
            let ops = (0..g.clients)
                .map(|i| MixedOp {
                    kv: conns[i % conns.len()].kv(),
                    read_percent,
                    in_txn: true,
                    reads: reads.clone(),
                    read_template: template.clone(),
                    keys: keys.clone(),
                    value: value.clone(),
                    rng: rng(),
                })
                .collect();
            let o = run_ops(&plan(a.total, a.rate), ops, &progress, &stop).await;
            let mut v = Vec::new();
            for (class, rec) in o.classes.iter().zip(o.recorders) {
                let title = format!(
                    "Total {} Ops: {}\nDetails:",
                    if *class == "read" { "Read" } else { "Write" },
                    rec.len()
                );
                v.push((
                    title,
                    Stats::new(format!("txn-mixed-{class}"), rec, o.elapsed),
                ));
            }
            v
        }
        Command::Watch(a) => {
            positive_key_space(a.key_space_size)?;
            let wanted = 1 + a.streams / 100;
            if g.conns.min(g.clients) < wanted {
                eprintln!(
                    "warning: grpc limits 100 streams per client connection, have {} but need {wanted}",
                    g.conns.min(g.clients)
                );
            }
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let style = varint(a.key_size, "");
            let mut r = rng();
            let keys = (0..a.watched_key_total.max(1))
                .map(|i| {
                    style.key(if a.sequential_keys {
                        i as u64 % a.key_space_size
                    } else {
                        r.gen_range(0..a.key_space_size)
                    })
                })
                .collect();
            let bench = crate::watch::WatchBench {
                streams: a.streams,
                watch_per_stream: a.watch_per_stream,
                keys,
                put_total: a.put_total,
                put_rate: a.put_rate,
            };
            let goal = Goal {
                ops: Some((a.streams * a.watch_per_stream) as u64),
                time: None,
            };
            let bar = Bar::start(progress.clone(), goal);
            let res = bench
                .run(&conns, progress.clone(), Duration::from_secs(60))
                .await
                .map_err(|s| Fatal(status_text(&s)))?;
            drop(bar);
            let mut events = res.events;
            if res.missing > 0 {
                events.err(format!(
                    "{} events did not arrive within 60s of the last put",
                    res.missing
                ));
            }
            vec![
                (
                    "Watch creation summary:\n".into(),
                    Stats::new("watch-make", res.create, res.create_elapsed),
                ),
                (
                    "Watch events received summary:\n".into(),
                    Stats::new("watch-put", events, res.events_elapsed),
                ),
            ]
        }
        Command::WatchLatency(a) => {
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let mut r = rng();
            let key: Vec<u8> = (0..a.key_size).map(|_| r.r#gen()).collect();
            let value: Vec<u8> = (0..a.val_size).map(|_| r.r#gen()).collect();
            let goal = Goal {
                ops: Some((a.put_total * a.streams * a.watchers_per_stream) as u64),
                time: None,
            };
            let bar = Bar::start(progress.clone(), goal);
            let w = crate::watch::WatchLatency {
                streams: a.streams,
                watchers_per_stream: a.watchers_per_stream,
                key,
                value,
                put_total: a.put_total,
                put_rate: a.put_rate,
                prev_kv: a.prevkv,
            };
            let (puts, put_elapsed, events) =
                crate::watch::watch_latency(&conns, w, progress.clone())
                    .await
                    .map_err(|s| Fatal(status_text(&s)))?;
            drop(bar);
            vec![
                (
                    "\nPut summary:\n".into(),
                    Stats::new("watch-latency-put", puts, put_elapsed),
                ),
                (
                    "\nWatch events summary:\n".into(),
                    Stats::new("watch-latency-watch", events, put_elapsed),
                ),
            ]
        }
        Command::WatchGet(a) => {
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let getter = connect(&opts, 1).await.map_err(Fatal::from)?;
            let goal = Goal {
                ops: Some((a.watchers * a.events) as u64),
                time: None,
            };
            let bar = Bar::start(progress.clone(), goal);
            let (rec, elapsed) = crate::watch::watch_get(
                &conns,
                &getter[0],
                a.watchers,
                a.streams,
                a.events,
                progress.clone(),
            )
            .await
            .map_err(|s| Fatal(status_text(&s)))?;
            drop(bar);
            vec![(
                "Get during watch summary:\n".into(),
                Stats::new("watch-get", rec, elapsed),
            )]
        }
        Command::LeaseKeepalive(a) => {
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let mut ops = Vec::with_capacity(g.clients);
            for i in 0..g.clients {
                ops.push(
                    KeepaliveOp::open(conns[i % conns.len()].lease(), 100)
                        .await
                        .map_err(|s| Fatal(status_text(&s)))?,
                );
            }
            single(
                "lease-keepalive",
                "",
                run_ops(&plan(a.total, 0), ops, &progress, &stop).await,
            )
        }
        Command::Stm(a) => {
            if a.keys == 0 {
                return Err(Fatal(format!("expected positive --keys, got ({})", a.keys)));
            }
            if a.txn_wr_percent > 100 {
                return Err(Fatal(format!(
                    "expected [0, 100] --txn-wr-percent, got ({})",
                    a.txn_wr_percent
                )));
            }
            if a.keys_per_txn as u64 > a.keys {
                return Err(Fatal(format!(
                    "expected --keys-per-txn between 0 and {}, got ({})",
                    a.keys, a.keys_per_txn
                )));
            }
            let isolation = match a.isolation.as_str() {
                "c" => Isolation::ReadCommitted,
                "r" => Isolation::RepeatableReads,
                "s" => Isolation::Serializable,
                "ss" => Isolation::SerializableSnapshot,
                other => {
                    return Err(Fatal(format!(
                        "unexpected isolation {other:?}: c, r, s or ss"
                    )));
                }
            };
            if a.stm_locker != "stm" {
                return Err(Fatal(format!(
                    "unsupported stm locker {:?}: only \"stm\"",
                    a.stm_locker
                )));
            }
            let conns = connect(&opts, g.conns).await.map_err(Fatal::from)?;
            let keys = keys(varint(16, ""), Distribution::Uniform, a.keys)?;
            let value = Value::random(a.val_size, false);
            let retries = Arc::new(AtomicU64::new(0));
            let ops = (0..g.clients)
                .map(|i| StmOp {
                    kv: conns[i % conns.len()].kv(),
                    keys: keys.clone(),
                    keys_per_txn: a.keys_per_txn,
                    write_percent: a.txn_wr_percent,
                    isolation,
                    value: value.clone(),
                    retries: retries.clone(),
                    rng: rng(),
                })
                .collect();
            single(
                "stm",
                "",
                run_ops(&plan(a.total, a.rate), ops, &progress, &stop).await,
            )
        }
        Command::Run(a) => return run_file(g, a, &opts, out, progress, stop).await,
        Command::NullServer(a) => {
            crate::null::serve(a.listen, |addr| {
                eprintln!("null-server: serving etcd's KV and Lease API on {addr}");
            })
            .await
            .map_err(Fatal)?;
            return Ok(Vec::new());
        }
        Command::Compare(a) => {
            let table =
                crate::compare::markdown(&a.baseline, &a.contender, &a.files).map_err(Fatal)?;
            write!(out, "{table}").map_err(Fatal::from)?;
            if let Some(cpu) = &a.cpu {
                let t = crate::compare::cpu_markdown(&a.baseline, &a.contender, &a.files, cpu)
                    .map_err(Fatal)?;
                write!(out, "\n{t}").map_err(Fatal::from)?;
            }
            return Ok(Vec::new());
        }
    };
    emit(g, out, &reports)?;
    Ok(reports)
}

/// etcd's check of --key-space-size, with its message.
fn positive_key_space(n: u64) -> Result<(), Fatal> {
    if n == 0 {
        return Err(Fatal(format!(
            "expected positive --key-space-size, got ({n})"
        )));
    }
    Ok(())
}

/// etcd prints which reads it benchmarks before the report; only in the text format, so that
/// JSON and CSV stay parseable.
fn announce_consistency(g: &Global, out: &mut dyn Write, serializable: bool) -> Result<(), Fatal> {
    if g.output != Output::Text {
        return Ok(());
    }
    let kind = if serializable {
        "serializable"
    } else {
        "linearizable"
    };
    writeln!(out, "bench with {kind} range").map_err(Fatal::from)
}

async fn run_ops<O: Op>(
    plan: &Plan,
    ops: Vec<O>,
    progress: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Outcome {
    let bar = Bar::start(
        progress.clone(),
        Goal {
            ops: plan.total,
            time: plan.runtime,
        },
    );
    let o = drive(plan, ops, progress.clone(), stop.clone()).await;
    drop(bar);
    o
}

fn single(name: &str, title: &str, o: Outcome) -> Vec<Titled> {
    let rec = o
        .recorders
        .into_iter()
        .fold(Recorder::default(), |mut a, r| {
            a.merge(r);
            a
        });
    vec![(title.to_string(), Stats::new(name, rec, o.elapsed))]
}

async fn run_file(
    g: &Global,
    a: &RunArgs,
    opts: &ConnectOptions,
    out: &mut dyn Write,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Titled>, Fatal> {
    let mut p = profile::load(&a.file).map_err(Fatal::from)?;
    for o in &a.overrides {
        profile::apply_override(&mut p, o).map_err(Fatal::from)?;
    }
    let name = a
        .file
        .file_stem()
        .map_or_else(|| "profile".into(), |s| s.to_string_lossy().into_owned());
    let goal = Goal {
        ops: p
            .jobs
            .iter()
            .map(|j| j.total.map(|t| t * j.numjobs as u64))
            .sum::<Option<u64>>(),
        time: None,
    };
    let started = Instant::now();
    let bar = Bar::start(progress.clone(), goal);
    let results = crate::run::run_profile(&p, opts, progress, stop)
        .await
        .map_err(Fatal::from)?;
    drop(bar);
    let text = match g.output {
        Output::Text => format!(
            "{}Profile {} done in {:.1}s\n",
            crate::run::render_fio(&results),
            a.file.display(),
            started.elapsed().as_secs_f64()
        ),
        Output::Json => {
            serde_json::to_string_pretty(&crate::run::to_json(&name, &results))
                .map_err(Fatal::from)?
                + "\n"
        }
        Output::Csv => {
            let mut s = format!("{}\n", Stats::csv_header());
            for j in &results {
                for (_, st) in j.merged() {
                    s.push_str(&st.csv_row());
                    s.push('\n');
                }
            }
            s
        }
    };
    write!(out, "{text}").map_err(Fatal::from)?;
    Ok(results
        .iter()
        .flat_map(|j| j.merged())
        .map(|(_, s)| (String::new(), s))
        .collect())
}
