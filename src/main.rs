//! `retcd`: the server binary. It only wires the parts together from the configuration: storage
//! (engine/), the sequencer (raft/) on core 0, and the gRPC services (net/) on every core.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use retcd_engine::btree::StoreOptions;
use retcd_engine::mvcc::Mvcc;
use retcd_engine::runtime;
use retcd_engine::wal::WalOptions;

// Every request allocates (decoded messages, B+tree node copies, response buffers) and frees on
// the core that served it: glibc's malloc was 10–15% of a busy core's samples (perf/findings.md).
// Wrapped for `--enable-pprof`'s heap profiles; off, the wrapper costs one relaxed load per call.
#[global_allocator]
static GLOBAL: retcd_net::profile::heap::Sampled<mimalloc::MiMalloc> =
    retcd_net::profile::heap::Sampled(mimalloc::MiMalloc);
use retcd_net::auth::TokenProvider;
use retcd_net::context::{Ctx, Limits, MemberInfo};
use retcd_net::serve::ServeOptions;
use retcd_raft::NodeStatus;
use retcd_raft::feed::Feed;
use retcd_raft::sequencer::{Sequencer, SequencerOptions};
use tracing::{error, info, warn};

use retcd::config::{self, AuthTokenConfig, Config, Parsed};
use retcd::{identity, stop, systemd, transport};

/// Event batches queued per core before the core is marked lagged.
const FEED_DEPTH: usize = 1024;

/// Internal knob: `0` runs the cores unpinned.
const PIN_CORES_ENV: &str = "RETCD_PIN_CORES";

/// Internal knob (tests): the lease checkpoint interval in milliseconds instead of etcd's 5 min
/// (etcd 3.5 has no flag for it).
const LEASE_CHECKPOINT_ENV: &str = "RETCD_LEASE_CHECKPOINT_INTERVAL_MS";

/// Internal knob (experiments): soft commits keep the B+tree nodes they change in memory up to
/// this many bytes (engine/DESIGN.md §3.6; unset: 64 MiB); 0: each commit writes pages.
const BTREE_MEMORY_ENV: &str = "RETCD_BTREE_MEMORY_BYTES";

/// Internal knob (tests): a leader's bound of uncommitted proposal bytes instead of
/// `retcd_raft::core::MAX_UNCOMMITTED_BYTES` (raft-rs raises anything below 1 MiB to 1 MiB).
const MAX_UNCOMMITTED_ENV: &str = "RETCD_MAX_UNCOMMITTED_BYTES";

/// Internal knob (tests): how often `--auto-compaction-mode=revision` checks, in milliseconds,
/// instead of etcd's fixed 5 min (etcd's own tests fake the clock instead; it has no flag).
const REVISION_COMPACTION_INTERVAL_ENV: &str = "RETCD_REVISION_COMPACTION_INTERVAL_MS";

/// Internal knob (tests): the HTTP/1.1 header read timeout in milliseconds instead of
/// `retcd_net::serve::HEADER_READ_TIMEOUT`.
const HEADER_TIMEOUT_ENV: &str = "RETCD_HTTP_HEADER_TIMEOUT_MS";

fn main() -> ExitCode {
    let (cfg, warnings) = match config::parse() {
        Ok(Parsed::Run(cfg, warnings)) => (cfg, warnings),
        Ok(Parsed::Version(text)) | Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("retcd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = retcd::logging::init(&cfg) {
        eprintln!("retcd: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    for w in &warnings {
        warn!("{w}");
    }
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "retcd stopped");
            eprintln!("retcd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cfg: Config) -> Result<(), String> {
    // Before any thread starts: every thread inherits the blocked signals, one waits for them.
    let signals = stop::watch_signals().map_err(|e| format!("cannot handle signals: {e}"))?;
    // Storage paths are absolute from here on (io_uring opens are not relative to the cwd).
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    cfg.data_dir = cwd.join(&cfg.data_dir);
    if let Some(w) = cfg.dedicated_wal_dir.take() {
        cfg.dedicated_wal_dir = Some(cwd.join(w));
    }
    info!(
        retcd_version = config::RETCD_VERSION,
        etcd_api_version = config::ETCD_API_VERSION,
        name = %cfg.name,
        data_dir = %cfg.data_dir.display(),
        "starting retcd"
    );
    runtime::probe_io_uring().map_err(|e| e.to_string())?;
    if cfg.unsafe_no_fsync {
        warn!(
            "--unsafe-no-fsync is set: fsync is disabled; unsafe, will cause data loss on a crash"
        );
        retcd_engine::disk::set_unsafe_no_fsync(true);
    }
    let transport::Listeners {
        client: client_listen,
        client_http: client_http_listen,
        metrics: metrics_listen,
        peer: peer_listen,
    } = transport::listeners(&cfg)?;

    let peer_urls: Vec<String> = cfg
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    let client_urls: Vec<String> = cfg
        .advertise_client_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    // A data dir that etcd's own `snapshot restore` wrote becomes retcd's, once.
    retcd::import::import_etcd_data_dir(&cfg)?;
    let mut store_opts = StoreOptions::new(cfg.db_path());
    if let Some(bytes) = std::env::var(BTREE_MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        store_opts.memory_limit = bytes;
    }
    let mut mvcc = Mvcc::open(&store_opts).map_err(|e| e.to_string())?;
    // The store is ours now (its lock): snapshot spools of an earlier run are garbage.
    match retcd_net::peer::remove_leftover_spools(&cfg.snap_dir()) {
        Ok(0) => {}
        Ok(n) => info!(
            removed = n,
            "removed snapshot spools left by an earlier run"
        ),
        Err(e) => return Err(format!("cannot clean {}: {e}", cfg.snap_dir().display())),
    }
    let identity = identity::resolve(&cfg, &mut mvcc)?;
    let status = Arc::new(NodeStatus::new(identity.member_id, identity.cluster_id));
    if let Some(m) = identity.fetched {
        status.seed_members(m);
    }
    let reader = mvcc.reader();
    let auth_state = mvcc.auth_reader();
    let mut seq_opts = SequencerOptions::new(WalOptions::new(cfg.wal_dir()));
    seq_opts.tick = cfg.heartbeat_interval;
    seq_opts.election_ticks = cfg.election_ticks() as usize;
    seq_opts.initial_election_tick_advance = cfg.initial_election_tick_advance;
    // etcd's request timeout: 5 s plus two election timeouts.
    let request_timeout = std::time::Duration::from_secs(5) + 2 * cfg.election_timeout;
    seq_opts.request_timeout = request_timeout;
    seq_opts.bootstrap = identity.bootstrap;
    seq_opts.force_new_cluster = cfg.force_new_cluster;
    seq_opts.snapshot_count = cfg.snapshot_count;
    seq_opts.catch_up_entries = cfg.snapshot_catchup_entries;
    seq_opts.name = cfg.name.clone();
    seq_opts.client_urls = client_urls.clone();
    seq_opts.auth_token_ttl = cfg.auth_token_ttl;
    seq_opts.auto_compaction = cfg.auto_compaction;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Bound before any core serves; another process on these ports is refused here, as etcd
    // is, instead of silently sharing the clients (retcd_net::serve::Bound).
    let shared = cfg.socket_reuse_port;
    let serving: Vec<(std::net::SocketAddr, bool)> = client_listen
        .iter()
        .chain(&client_http_listen)
        .map(|l| (l.addr, l.security.tls.is_some()))
        .collect();
    let client_listen =
        retcd_net::serve::bind(&client_listen, cores, shared).map_err(|e| e.to_string())?;
    // The HTTP-only and metrics URLs, served by every core next to the client URLs.
    let http_listen =
        retcd_net::serve::bind(&client_http_listen, cores, shared).map_err(|e| e.to_string())?;
    let metrics_listen =
        retcd_net::serve::bind(&metrics_listen, cores, shared).map_err(|e| e.to_string())?;
    let grpc_only = !http_listen.is_empty();
    // Only core 0 serves peers.
    let peer_listen = retcd_net::serve::bind(&peer_listen, 1, shared).map_err(|e| e.to_string())?;
    // One bounded event queue per core; a core that falls behind catches up from history.
    let (feed, subscriptions) = Feed::new(cores, FEED_DEPTH);
    let subscriptions = Mutex::new(subscriptions.into_iter().map(Some).collect::<Vec<_>>());
    if let Some(ms) = std::env::var(LEASE_CHECKPOINT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        seq_opts.lease_checkpoint_interval = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(bytes) = std::env::var(MAX_UNCOMMITTED_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        seq_opts.max_uncommitted_bytes = bytes;
    }
    if let Some(ms) = std::env::var(REVISION_COMPACTION_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        seq_opts.revision_compaction_interval = std::time::Duration::from_millis(ms.max(1));
    }
    let (sequencer, proposer, peer_queues) = Sequencer::new(seq_opts, mvcc, status.clone(), feed);
    let leases = sequencer.lease_handle();
    let tokens = match &cfg.auth_token {
        AuthTokenConfig::Simple => TokenProvider::Simple(sequencer.tokens()),
        AuthTokenConfig::Jwt(jwt) => TokenProvider::Jwt(jwt.tokens.clone()),
        AuthTokenConfig::None => TokenProvider::None,
    };
    let auth = retcd_net::auth::AuthGate::new(
        auth_state,
        tokens,
        cfg.client_tls.as_ref().is_some_and(|t| t.client_cert_auth),
    );
    let passwords = retcd_net::auth::Passwords::start(cfg.bcrypt_cost)
        .map_err(|e| format!("cannot start the bcrypt thread: {e}"))?;
    let peer_leases = leases.clone();
    let peer_inbox = sequencer.peer_inbox();
    // Peer frames carry whole Raft batches: room for a few of the largest requests.
    let peer_max_bytes = 2 * cfg.max_request_bytes + (8 << 20);
    let peer_status = status.clone();
    let peer = Mutex::new(Some((peer_queues, peer_inbox)));
    let snap_dir = cfg.snap_dir();

    retcd_net::metrics::grpc::EXTENSIVE
        .store(cfg.metrics_extensive, std::sync::atomic::Ordering::Relaxed);
    retcd_net::http::GATEWAY.store(
        cfg.enable_grpc_gateway,
        std::sync::atomic::Ordering::Relaxed,
    );
    if cfg.serves_pprof() {
        retcd_net::http::pprof::ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
        info!(path = retcd_net::http::pprof::PREFIX, "pprof is enabled");
        // A test's knob: a denser heap sample than Go's default (see heap::set_rate).
        if let Some(bytes) = std::env::var("RETCD_PPROF_HEAP_SAMPLE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            retcd_net::profile::heap::set_rate(bytes);
        }
        if !retcd_net::profile::heap::enable() {
            warn!(
                "pprof: no heap or CPU profiles here: walking stacks inside the allocator and \
                 signal handlers needs glibc 2.35 or later"
            );
        }
    }
    if let Some(n) = cfg.max_concurrent_streams {
        retcd_net::serve::set_max_streams(n);
    }
    retcd_net::serve::set_keepalive(cfg.grpc_keepalive_interval, cfg.grpc_keepalive_timeout);
    if let Some(ms) = std::env::var(HEADER_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        retcd_net::serve::set_header_read_timeout(std::time::Duration::from_millis(ms));
    }
    retcd_raft::metrics::set_slow_apply(cfg.warning_apply_duration);
    let ctx = Arc::new(Ctx {
        reader,
        proposer,
        leases,
        status,
        member: MemberInfo {
            name: cfg.name.clone(),
            peer_urls,
            client_urls,
        },
        limits: Limits {
            max_request_bytes: cfg.max_request_bytes,
            max_txn_ops: cfg.max_txn_ops,
            quota_bytes: i64::try_from(cfg.quota_bytes()).unwrap_or(i64::MAX),
            request_timeout,
        },
        watch_progress_notify_interval: cfg.watch_progress_notify_interval,
        auth,
        passwords,
    });
    let checker = retcd_net::corruption::Checker {
        reader: ctx.reader.clone(),
        status: ctx.status.clone(),
        proposer: ctx.proposer.clone(),
        timeout: request_timeout,
        initial: cfg.initial_corrupt_check,
        period: cfg.corrupt_check_time,
        compact_period: cfg.compact_hash_check,
    };
    let peer_reader = ctx.reader.clone();
    let stop_proposer = ctx.proposer.clone();
    let stop_status = ctx.status.clone();
    let serve_opts = ServeOptions {
        listen: client_listen,
        max_recv_bytes: cfg.max_request_bytes + (512 << 10),
    };

    // Cores serve clients only once the sequencer has replayed the log: before that, a read could
    // miss an acknowledged write.
    let (go_tx, go_rx) = flume::bounded::<()>(cores + 1);
    let (fail_tx, fail_rx) = flume::bounded::<String>(cores + 1);
    let go_main = go_rx.clone();
    let sequencer = Mutex::new(Some(sequencer));
    // Pinned to one CPU each unless RETCD_PIN_CORES=0 (several members on one machine, as in a
    // local cluster benchmark, would otherwise pin their sequencers to the same CPU).
    let pin = std::env::var(PIN_CORES_ENV).map_or(true, |v| v != "0");
    let started = runtime::start_cores(cores, runtime::DEFAULT_IO_MEMORY, pin, move |core| {
        let ctx = ctx.clone();
        let go_rx = go_rx.clone();
        let fail_tx = fail_tx.clone();
        let serve_opts = serve_opts.clone();
        // This core's watch hub consumes its feed.
        let feed = subscriptions.lock().expect("not poisoned")[core].take();
        let seq = if core == 0 {
            sequencer.lock().expect("not poisoned").take()
        } else {
            None
        };
        // Core 0 also carries the peer traffic, next to the sequencer.
        let peer = if core == 0 {
            peer.lock().expect("not poisoned").take()
        } else {
            None
        };
        let peer_status = peer_status.clone();
        let peer_listen = peer_listen.clone();
        let http_listen = http_listen.clone();
        let metrics_listen = metrics_listen.clone();
        let snap_dir = snap_dir.clone();
        let peer_leases = peer_leases.clone();
        let peer_reader = peer_reader.clone();
        let go_tx = go_tx.clone();
        let checker = checker.clone();
        async move {
            if let Some(feed) = feed {
                retcd_net::watch::start_hub(feed);
            }
            if let Some(seq) = seq {
                let fail = fail_tx.clone();
                let check_fail = fail_tx.clone();
                runtime::spawn_local(async move {
                    // Clients are served once the log is replayed and, unless turned off, the
                    // state's hash matched the peers'; the leader's periodic check runs after.
                    let started = move || {
                        runtime::spawn_local(async move {
                            let ready = move || {
                                for _ in 0..=cores {
                                    let _ = go_tx.try_send(());
                                }
                            };
                            if let Err(e) = checker.run(ready).await {
                                let _ = check_fail.send(e);
                            }
                        });
                    };
                    let msg = match CatchPanic(Box::pin(seq.run(started))).await {
                        Ok(Ok(())) => return,
                        Ok(Err(retcd_raft::sequencer::SequencerError::Removed)) => {
                            REMOVED.to_string()
                        }
                        Ok(Err(e)) => format!("sequencer: {e}"),
                        Err(panic) => format!("sequencer panicked: {panic}"),
                    };
                    let _ = fail.send(msg);
                });
            }
            // Peers are served from the start (a follower needs its leader before it serves
            // clients); clients once the log is replayed. Both run in this core's own future: a
            // detached glommio task that waits on nothing that can wake it is dropped.
            let peers = async {
                let Some((links, inbox)) = peer else { return };
                let listeners = match retcd_net::serve::listeners(&peer_listen, 0) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = fail_tx.send(format!("cannot listen for peers: {e}"));
                        return;
                    }
                };
                retcd_net::peer::start_links(links, peer_status.clone(), inbox.clone());
                let routes = retcd_net::peer::PeerService::new(
                    peer_status,
                    inbox,
                    snap_dir,
                    peer_leases,
                    peer_reader,
                )
                .routes(peer_max_bytes);
                retcd_net::serve::serve_listeners(
                    "peer",
                    listeners,
                    routes,
                    retcd_net::http::HttpApi::Peer,
                    peer_max_bytes,
                    std::future::pending(),
                )
                .await;
            };
            let clients = async {
                if go_rx.recv_async().await.is_err() {
                    return;
                }
                use retcd_net::http::HttpApi;
                let max_recv_bytes = serve_opts.max_recv_bytes;
                let http = if grpc_only {
                    HttpApi::ClientGrpcOnly
                } else {
                    HttpApi::Client(ctx.clone())
                };
                let mut groups = Vec::new();
                for (kind, bound, api) in [
                    ("client", &serve_opts.listen, http),
                    ("client", &http_listen, HttpApi::ClientHttpOnly(ctx.clone())),
                    ("metrics", &metrics_listen, HttpApi::Metrics(ctx.clone())),
                ] {
                    match retcd_net::serve::listeners(bound, core) {
                        Ok(l) if l.is_empty() => {}
                        Ok(l) => groups.push(retcd_net::serve::serve_listeners(
                            kind,
                            l,
                            retcd_net::routes(ctx.clone()),
                            api,
                            max_recv_bytes,
                            std::future::pending(),
                        )),
                        Err(e) => {
                            let _ = fail_tx.send(format!("core {core}: {e}"));
                            return;
                        }
                    }
                }
                let (c, b, a) = (groups.pop(), groups.pop(), groups.pop());
                futures_lite::future::zip(futures_lite::future::zip(maybe(a), maybe(b)), maybe(c))
                    .await;
            };
            futures_lite::future::zip(peers, clients).await;
        }
    })
    .map_err(|e| e.to_string())?;

    // Wait until the member serves (or fails to start), then until something fails.
    let first = flume::Selector::new()
        .recv(&go_main, |_| None)
        .recv(&fail_rx, |m| m.ok())
        .wait();
    if let Some(msg) = first {
        return removed_or(msg);
    }
    info!(client_urls = ?cfg.listen_client_urls.iter().map(|u| u.to_string()).collect::<Vec<_>>(), "ready to serve client requests");
    for (addr, secure) in serving {
        transport::log_serving("client", addr, secure);
    }
    match systemd::notify("READY=1") {
        Ok(true) => info!("notified systemd of readiness"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot notify systemd of readiness"),
    }
    let next = flume::Selector::new()
        .recv(&fail_rx, |m| m.map_err(|_| None))
        .recv(signals.take_over(), |s| Err(s.ok()))
        .wait();
    match next {
        Ok(msg) => removed_or(msg),
        Err(Some(signal)) => stop::on_signal(signal, &stop_proposer, &stop_status, request_timeout),
        Err(None) => {
            started.join().map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}

/// What the sequencer reports when this member was removed from the cluster.
const REMOVED: &str = retcd_net::peer::REMOVED_MESSAGE;

/// etcd exits 0 once the member learns it was removed (after logging so); any other failure
/// is an error.
fn removed_or(msg: String) -> Result<(), String> {
    if msg == REMOVED {
        warn!("{REMOVED}");
        let _ = systemd::notify("STOPPING=1");
        return Ok(());
    }
    Err(msg)
}

/// Runs `f` if there is one.
async fn maybe<F: Future<Output = ()>>(f: Option<F>) {
    if let Some(f) = f {
        f.await;
    }
}

/// Resolves to `Err(panic message)` instead of unwinding when the wrapped future panics while it
/// is polled. A panic in the sequencer would otherwise end core 0's thread silently: the other
/// cores keep the failure channel open, so the process neither serves nor exits.
struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "(non-string panic payload)".to_owned()
            })),
        }
    }
}
