//! etcd's Watch service: any number of watchers multiplexed over one bidirectional stream, any
//! number of streams per connection.
//!
//! How events reach a watcher (per core, nothing shared across cores but the feed's `Arc`s):
//!
//! - The sequencer publishes one `Arc<EventBatch>` per applied batch to the bounded queue of every
//!   core that has a watch stream (`retcd_raft::feed`; a stream is counted before it reads any
//!   snapshot, so a core it skips has nobody who could miss the batch). On each core a *hub*
//!   task ([`start_hub`]) takes them and hands each to
//!   every watch stream of the core through the stream's own bounded queue
//!   ([`STREAM_FEED_DEPTH`] batches). Neither step ever waits: a full queue drops the batch and
//!   marks the core (resp. the stream) lagged.
//! - Each stream is one local task that owns its watchers. A watcher is *synced* (it takes events
//!   from the stream's queue) or *unsynced* (it catches up from the `r` revision log of the latest
//!   committed snapshot, [`CATCH_UP_EVENTS`] events per step, yielding between steps; etcd's
//!   unsynced group). A watcher created with a start revision in the past starts unsynced; a
//!   stream that finds itself lagged moves all its watchers to unsynced (etcd's victims), so a slow
//!   consumer gets every event later instead of blocking anybody.
//! - Responses go to the client through a queue bounded in responses ([`SEND_DEPTH`], etcd's
//!   `chanBufLen`) and in encoded bytes ([`SEND_BYTES`]); a full one makes only this stream's task
//!   wait, which in turn lets its feed queue overflow. So a stream that does not read holds at most
//!   its two queues (the batches are shared with every other stream of the core) and one
//!   catch-up step ([`CATCH_UP_EVENTS`], [`CATCH_UP_BYTES`]).
//!
//! Why nothing is skipped or repeated: a batch is published only after its revision is committed,
//! and a stream registers its queue before it reads any snapshot, so every revision after a
//! snapshot's revision S arrives in the stream's queue (or marks it lagged). A watcher delivers
//! an event only if its revision is ≥ the watcher's `next_rev`, and `next_rev` moves past every
//! revision delivered (from history: past S once it read up to S, then it turns synced).
//!
//! etcd behaviours (server/etcdserver/api/v3rpc/watch.go, server/mvcc/watcher.go,
//! watchable_store.go, v3.5): an empty key is "\0"; range_end "\0" watches every key ≥ key; a
//! range with key ≥ range_end, or a watch_id already in use, is answered created + canceled with
//! watch_id -1 and the error as cancel_reason; watch_id 0 picks the next free id; start_revision 0
//! is the current revision + 1; a start revision below the compacted revision gives created, then
//! a response canceled with compact_revision (no cancel_reason, header revision 0); events of one
//! revision stay in one response (with fragment set, responses of at least --max-request-bytes +
//! 512 KiB are split with fragment=true on all but the last, `sendFragments`); prev_kv is the key's
//! version before the event; progress notifications go only to synced watchers that got no events
//! since the last interval; a progress request is answered (watch_id -1) when every watcher of the
//! stream is synced (etcd 3.5's `progressIfSync`), and when some are not, as soon as they are (as
//! etcd 3.6 defers it) — and only once every watcher was given every event up to the revision that
//! was current when the request came, which is the revision the answer carries at least.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{Stream, StreamExt};
use prost::Message;
use retcd_engine::mvcc::{Event, EventKind, MvccError};
use retcd_engine::runtime;
use retcd_raft::feed::{EventBatch, Listeners, Listening, Subscription};
use tonic::{Request, Response, Status, Streaming};

use crate::context::Ctx;
use crate::pb::etcdserverpb::{
    WatchCreateRequest, WatchRequest, WatchResponse, watch_create_request::FilterType,
    watch_request::RequestUnion, watch_server::Watch,
};
use crate::pb::mvccpb;

/// Event batches queued per stream before the stream is marked lagged (and catches up from
/// history).
pub const STREAM_FEED_DEPTH: usize = 64;
/// Responses buffered per stream before its task waits for the client (etcd's chanBufLen).
pub const SEND_DEPTH: usize = 128;
/// Bytes of responses buffered per stream (encoded size) before its task waits for the client;
/// one response may go over it.
pub const SEND_BYTES: usize = 4 << 20;
/// Events, and bytes of keys and values, read from history per catch-up step (a revision is never
/// split, so a step may read more when one revision has more).
pub const CATCH_UP_EVENTS: usize = 1000;
pub const CATCH_UP_BYTES: usize = 1 << 20;
/// Client requests buffered per stream before reading from the client pauses.
const REQUEST_DEPTH: usize = 64;
/// How often an idle stream checks that its client is still there.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// etcd's allowance for gRPC framing on top of --max-request-bytes (v3rpc/grpc.go).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's error texts (server/mvcc/watcher.go).
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// One stream's end of its core's hub.
struct Tap {
    tx: flume::Sender<Arc<EventBatch>>,
    lagged: Arc<AtomicBool>,
}

/// This core's watch streams, and their count that the sequencer reads to skip a core without
/// any (`retcd_raft::feed::Listeners`).
struct Hub {
    taps: Vec<Tap>,
    listeners: Listeners,
}

thread_local! {
    /// `None` until [`start_hub`] ran on this core.
    static HUB: RefCell<Option<Hub>> = const { RefCell::new(None) };
}

/// Starts this core's watch hub on the core's executor: it hands every batch of `sub` to every
/// watch stream of the core. Call once per core, before serving.
pub fn start_hub(sub: Subscription) {
    HUB.with(|h| {
        *h.borrow_mut() = Some(Hub {
            taps: Vec::new(),
            listeners: sub.listeners(),
        })
    });
    runtime::spawn_local(async move {
        while let Ok(batch) = sub.rx.recv_async().await {
            // A batch dropped before this one: every stream must catch up from history. The
            // flags are set before this batch is queued, so a stream sees them when it takes it.
            let core_lagged = sub.take_lagged();
            HUB.with(|h| {
                let mut h = h.borrow_mut();
                let Some(hub) = h.as_mut() else { return };
                hub.taps.retain(|t| {
                    if core_lagged {
                        t.lagged.store(true, Ordering::Release);
                    }
                    match t.tx.try_send(batch.clone()) {
                        Ok(()) => true,
                        Err(flume::TrySendError::Full(_)) => {
                            t.lagged.store(true, Ordering::Release);
                            true
                        }
                        Err(flume::TrySendError::Disconnected(_)) => false,
                    }
                });
            });
        }
    });
}

/// A stream's queue of batches, registered with this core's hub; `None` without a hub.
struct StreamFeed {
    rx: flume::Receiver<Arc<EventBatch>>,
    lagged: Arc<AtomicBool>,
    /// Keeps the sequencer sending batches to this core while the stream lives.
    _listening: Listening,
}

impl StreamFeed {
    /// Call before the stream reads any store snapshot (the module's doc says why).
    fn register() -> Option<StreamFeed> {
        HUB.with(|h| {
            let mut h = h.borrow_mut();
            let hub = h.as_mut()?;
            let listening = hub.listeners.enter();
            // Streams that ended are forgotten here too (the hub forgets them only when a batch
            // comes, which a core without streams never gets), once they are as many as the live
            // ones: opening n streams stays O(n).
            if hub.taps.len() > 2 * hub.listeners.count() + 8 {
                hub.taps.retain(|t| !t.tx.is_disconnected());
            }
            let (tx, rx) = flume::bounded(STREAM_FEED_DEPTH);
            let lagged = Arc::new(AtomicBool::new(false));
            hub.taps.push(Tap {
                tx,
                lagged: lagged.clone(),
            });
            Some(StreamFeed {
                rx,
                lagged,
                _listening: listening,
            })
        })
    }

    fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

pub struct WatchService {
    ctx: Arc<Ctx>,
}

impl WatchService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        WatchService { ctx }
    }
}

type Outgoing = Result<WatchResponse, Status>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Outgoing> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (metadata, extensions, mut requests) = request.into_parts();
        let local = LocalWatch::open(self.ctx.clone(), metadata, extensions)?;
        let req_tx = local.requests.clone();
        runtime::spawn_local(async move {
            loop {
                let m = requests.message().await;
                let last = !matches!(m, Ok(Some(_)));
                if req_tx.send_async(m).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(local.responses))
    }
}

/// A watch stream opened inside the server (Lock, Election, the JSON gateway): the same task,
/// queues and bounds as a gRPC client's stream, with the caller's metadata and connection
/// attributes for its permission checks. Dropping it ends the stream's task.
pub struct LocalWatch {
    requests: flume::Sender<Result<Option<WatchRequest>, Status>>,
    responses: Pin<Box<dyn Stream<Item = Outgoing> + Send>>,
}

impl LocalWatch {
    /// Starts a stream's task on this core.
    pub fn open(
        ctx: Arc<Ctx>,
        metadata: tonic::metadata::MetadataMap,
        extensions: tonic::Extensions,
    ) -> Result<LocalWatch, Status> {
        let Some(feed) = StreamFeed::register() else {
            return Err(Status::unavailable(
                "retcd: the watch feed does not run on this core",
            ));
        };
        let (out, out_rx) = flume::bounded::<(Outgoing, usize)>(SEND_DEPTH);
        let buffered = Arc::new(AtomicUsize::new(0));
        let (drained_tx, drained) = flume::bounded(1);
        let taken = buffered.clone();
        let responses = out_rx.into_stream().map(move |(r, len)| {
            if taken.fetch_sub(len, Ordering::AcqRel) >= SEND_BYTES {
                let _ = drained_tx.try_send(());
            }
            r
        });
        let (requests, req_rx) = flume::bounded(REQUEST_DEPTH);
        let stream = WatchStreamTask {
            metadata,
            extensions,
            ctx,
            out,
            buffered,
            drained,
            watchers: BTreeMap::new(),
            by_key: HashMap::new(),
            ranges: Vec::new(),
            next_id: 0,
            unsynced: 0,
            progress_pending: None,
        };
        runtime::spawn_local(stream.run(feed, req_rx));
        Ok(LocalWatch {
            requests,
            responses: Box::pin(responses),
        })
    }

    /// Sends one request; `Err` once the stream's task ended.
    pub async fn send(&mut self, req: WatchRequest) -> Result<(), Status> {
        self.requests
            .send_async(Ok(Some(req)))
            .await
            .map_err(|_| Status::cancelled("retcd: the watch stream ended"))
    }

    /// The next response; `None` once the stream's task ended.
    pub async fn next(&mut self) -> Option<Outgoing> {
        self.responses.next().await
    }
}

/// One watcher of a stream.
struct Watcher {
    key: Vec<u8>,
    /// None: exactly `key`; empty: every key ≥ `key`; else `[key, end)`.
    end: Option<Vec<u8>>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// etcd's `progress[id]`: no events were sent since the last progress interval.
    progress_due: bool,
    /// The first revision this watcher has not been given yet.
    next_rev: i64,
    synced: bool,
}

impl Watcher {
    fn wants(&self, ev: &Event) -> bool {
        let k = ev.kv.key.as_slice();
        let in_range = match &self.end {
            None => k == self.key.as_slice(),
            Some(end) if end.is_empty() => k >= self.key.as_slice(),
            Some(end) => k >= self.key.as_slice() && k < end.as_slice(),
        };
        in_range
            && match ev.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }
}

/// The client went away (its response stream is gone or its request stream failed).
struct Gone;

/// What wakes a stream's task.
enum Step {
    Request(Result<Option<WatchRequest>, Status>),
    Batch(Arc<EventBatch>),
    Tick,
    CatchUp,
    Stop,
}

struct WatchStreamTask {
    ctx: Arc<Ctx>,
    /// The stream's metadata and connection attributes: its caller is resolved again at each
    /// create (etcd: a token may have expired, permissions may have changed).
    metadata: tonic::metadata::MetadataMap,
    extensions: tonic::Extensions,
    /// Responses with their encoded size, to the client.
    out: flume::Sender<(Outgoing, usize)>,
    /// Encoded bytes in `out` (the response stream subtracts what it hands to hyper).
    buffered: Arc<AtomicUsize>,
    /// A token each time `buffered` falls below [`SEND_BYTES`].
    drained: flume::Receiver<()>,
    watchers: BTreeMap<i64, Watcher>,
    /// Single-key watchers by key.
    by_key: HashMap<Vec<u8>, Vec<i64>>,
    /// Range and from-key watchers.
    ranges: Vec<i64>,
    /// etcd's watchStream.nextID.
    next_id: i64,
    unsynced: usize,
    /// A progress request waits until every watcher is synced and has reached the revision that
    /// was current when it came.
    progress_pending: Option<i64>,
}

fn event_pb(ev: &Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match ev.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(crate::kv::kv(ev.kv.clone())),
        prev_kv: if with_prev {
            ev.prev_kv.clone().map(crate::kv::kv)
        } else {
            None
        },
    }
}

impl WatchStreamTask {
    async fn run(
        mut self,
        feed: StreamFeed,
        req_rx: flume::Receiver<Result<Option<WatchRequest>, Status>>,
    ) {
        let interval = self
            .ctx
            .watch_progress_notify_interval
            .max(Duration::from_millis(10));
        let mut next_tick = Instant::now() + interval;
        let mut reading = true;
        // While catching up, live batches and history steps take turns.
        let mut batch_turn = false;
        loop {
            let now = Instant::now();
            let step = if self.unsynced > 0 {
                // Catching up: take what is ready, else do the next history step.
                batch_turn = !batch_turn;
                if let Some(m) = reading.then(|| req_rx.try_recv().ok()).flatten() {
                    Step::Request(m)
                } else if let Some(b) = batch_turn.then(|| feed.rx.try_recv().ok()).flatten() {
                    Step::Batch(b)
                } else if now >= next_tick {
                    Step::Tick
                } else {
                    Step::CatchUp
                }
            } else {
                let wake = next_tick.min(now + IDLE_CHECK);
                futures_lite::future::or(
                    async {
                        if !reading {
                            return std::future::pending().await;
                        }
                        match req_rx.recv_async().await {
                            Ok(m) => Step::Request(m),
                            Err(_) => Step::Request(Ok(None)),
                        }
                    },
                    futures_lite::future::or(
                        async {
                            match feed.rx.recv_async().await {
                                Ok(b) => Step::Batch(b),
                                Err(_) => Step::Stop,
                            }
                        },
                        async {
                            runtime::sleep(wake.saturating_duration_since(now)).await;
                            if Instant::now() >= next_tick {
                                Step::Tick
                            } else if self.out.is_disconnected() {
                                Step::Stop
                            } else {
                                Step::CatchUp
                            }
                        },
                    ),
                )
                .await
            };
            let done = match step {
                Step::Request(Ok(Some(req))) => self.on_request(req).await,
                // The client closed its side: etcd goes on sending until the stream ends.
                Step::Request(Ok(None)) => {
                    reading = false;
                    Ok(())
                }
                Step::Request(Err(_)) | Step::Stop => Err(Gone),
                Step::Batch(b) => {
                    if feed.take_lagged() {
                        // Batches were dropped: everything queued is older than the snapshot
                        // the catch-up will read, so drop it too.
                        tracing::debug!(
                            watchers = self.watchers.len(),
                            "watch stream lagged: catching up from history"
                        );
                        self.unsync_all();
                        while feed.rx.try_recv().is_ok() {}
                        Ok(())
                    } else {
                        self.on_batch(&b).await
                    }
                }
                Step::Tick => {
                    next_tick = Instant::now() + interval;
                    self.on_tick(&feed).await
                }
                Step::CatchUp => {
                    let r = if self.unsynced > 0 {
                        self.catch_up().await
                    } else {
                        Ok(())
                    };
                    futures_lite::future::yield_now().await;
                    r
                }
            };
            if done.is_err() || (!reading && self.out.is_disconnected()) {
                return;
            }
            if let Some(target) = self.progress_pending
                && self.unsynced == 0
                && self.progress_all_rev() >= target
                && self.send_progress_all().await.is_err()
            {
                return;
            }
        }
    }

    async fn send(&self, r: WatchResponse) -> Result<(), Gone> {
        while self.buffered.load(Ordering::Acquire) >= SEND_BYTES {
            // The token may be stale (sent before this wait): the loop re-checks.
            futures_lite::future::or(
                async {
                    let _ = self.drained.recv_async().await;
                },
                runtime::sleep(IDLE_CHECK),
            )
            .await;
            if self.out.is_disconnected() {
                return Err(Gone);
            }
        }
        let len = r.encoded_len();
        self.buffered.fetch_add(len, Ordering::AcqRel);
        self.out.send_async((Ok(r), len)).await.map_err(|_| Gone)
    }

    async fn on_request(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.remove(c.watch_id) {
                    self.send(WatchResponse {
                        header: self.ctx.current_header(),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..WatchResponse::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                if self.progress_pending.is_none() {
                    self.progress_pending = Some(self.ctx.reader.revisions().0);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Whether this stream's caller may read `[key, range_end)`; else etcd's cancel reason (the
    /// text of the gRPC error as Go prints it).
    fn permitted(&self, key: &[u8], range_end: &[u8]) -> Result<(), String> {
        let auth = &self.ctx.auth;
        auth.caller_of(&self.metadata, &self.extensions)
            .and_then(|caller| auth.check_read(&caller, key, range_end))
            .map_err(|s| {
                let code = match s.code() {
                    tonic::Code::Unauthenticated => "Unauthenticated",
                    tonic::Code::InvalidArgument => "InvalidArgument",
                    _ => {
                        return "rpc error: code = PermissionDenied desc = etcdserver: permission \
                                denied"
                            .to_string();
                    }
                };
                format!("rpc error: code = {code} desc = {}", s.message())
            })
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Gone> {
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        let current = self.ctx.reader.revisions().0;
        let end = match c.range_end.as_slice() {
            [] => None,
            [0] => Some(Vec::new()),
            _ => Some(c.range_end.clone()),
        };
        // etcd's isWatchPermitted first, on the range as asked (`[0]` is every key from `key` on;
        // etcd 3.4 checked it as the single key, a bypass); then the request itself.
        let refusal = if let Err(reason) = self.permitted(&key, &c.range_end) {
            Some(reason)
        } else if end.as_ref().is_some_and(|e| !e.is_empty() && key >= *e) {
            Some(ERR_EMPTY_RANGE.to_owned())
        } else if c.watch_id != 0 && self.watchers.contains_key(&c.watch_id) {
            Some(ERR_DUPLICATE_ID.to_owned())
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self
                .send(WatchResponse {
                    header: self.ctx.header(current),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: reason,
                    ..WatchResponse::default()
                })
                .await;
        }
        let id = if c.watch_id == 0 {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else {
            c.watch_id
        };
        let start = if c.start_revision == 0 {
            current + 1
        } else {
            c.start_revision
        };
        // etcd: synced when the start revision is in the future, else caught up from history.
        let synced = start > current;
        let single = end.is_none();
        let w = Watcher {
            key,
            end,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            fragment: c.fragment,
            progress_notify: c.progress_notify,
            progress_due: true,
            next_rev: start,
            synced,
        };
        if single {
            self.by_key.entry(w.key.clone()).or_default().push(id);
        } else {
            self.ranges.push(id);
        }
        if !synced {
            self.unsynced += 1;
        }
        self.watchers.insert(id, w);
        self.send(WatchResponse {
            header: self.ctx.header(current),
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        })
        .await
    }

    /// Forgets watcher `id`; false if there is none.
    fn remove(&mut self, id: i64) -> bool {
        let Some(w) = self.watchers.remove(&id) else {
            return false;
        };
        if !w.synced {
            self.unsynced -= 1;
        }
        if w.end.is_none() {
            if let Some(ids) = self.by_key.get_mut(&w.key) {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    self.by_key.remove(&w.key);
                }
            }
        } else {
            self.ranges.retain(|&i| i != id);
        }
        true
    }

    fn unsync_all(&mut self) {
        for w in self.watchers.values_mut() {
            if w.synced {
                w.synced = false;
                self.unsynced += 1;
            }
        }
    }

    /// Delivers a live batch to the synced watchers, one response per watcher and revision.
    async fn on_batch(&mut self, batch: &EventBatch) -> Result<(), Gone> {
        let evs = &batch.events;
        let mut i = 0;
        while i < evs.len() {
            let rev = evs[i].kv.mod_revision;
            let mut j = i + 1;
            while j < evs.len() && evs[j].kv.mod_revision == rev {
                j += 1;
            }
            let mut per: Vec<(i64, Vec<mvccpb::Event>)> = Vec::new();
            let mut slot: HashMap<i64, usize> = HashMap::new();
            for ev in &evs[i..j] {
                let single = self.by_key.get(&ev.kv.key).into_iter().flatten();
                for &id in single.chain(self.ranges.iter()) {
                    let w = &self.watchers[&id];
                    if !w.synced || rev < w.next_rev || !w.wants(ev) {
                        continue;
                    }
                    let at = *slot.entry(id).or_insert_with(|| {
                        per.push((id, Vec::new()));
                        per.len() - 1
                    });
                    per[at].1.push(event_pb(ev, w.prev_kv));
                }
            }
            for (id, events) in per {
                self.send_events(id, rev, events).await?;
            }
            i = j;
        }
        for w in self.watchers.values_mut() {
            if w.synced {
                w.next_rev = w.next_rev.max(batch.revision + 1);
            }
        }
        Ok(())
    }

    async fn send_events(
        &mut self,
        id: i64,
        revision: i64,
        events: Vec<mvccpb::Event>,
    ) -> Result<(), Gone> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        w.progress_due = false;
        let fragment = w.fragment;
        let resp = WatchResponse {
            header: self.ctx.header(revision),
            watch_id: id,
            events,
            ..WatchResponse::default()
        };
        if fragment {
            self.send_fragments(resp).await
        } else {
            self.send(resp).await
        }
    }

    /// etcd's sendFragments: a response of at least --max-request-bytes + 512 KiB (etcd's
    /// `grpcOverheadBytes`) with two or more events goes out in pieces, each as large as it may be
    /// while holding at least one event.
    async fn send_fragments(&self, resp: WatchResponse) -> Result<(), Gone> {
        let max = self.ctx.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
        if resp.encoded_len() < max || resp.events.len() < 2 {
            return self.send(resp).await;
        }
        let WatchResponse {
            header,
            watch_id,
            events,
            ..
        } = resp;
        let base = WatchResponse {
            header,
            watch_id,
            fragment: true,
            ..WatchResponse::default()
        };
        let base_len = base.encoded_len();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut cur = base.clone();
            let mut size = base_len;
            while let Some(ev) = events.peek() {
                let len = ev.encoded_len();
                let add = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
                if !cur.events.is_empty() && size + add >= max {
                    break;
                }
                size += add;
                cur.events.push(events.next().expect("peeked"));
            }
            if events.peek().is_none() {
                cur.fragment = false;
            }
            self.send(cur).await?;
        }
        Ok(())
    }

    /// One catch-up step for the unsynced watchers from the latest snapshot's history.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        let unsynced: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| !w.synced)
            .map(|(&id, _)| id)
            .collect();
        let Some(from) = unsynced.iter().map(|id| self.watchers[id].next_rev).min() else {
            return Ok(());
        };
        let with_prev = unsynced.iter().any(|id| self.watchers[id].prev_kv);
        let h = match self.ctx.reader.history(
            from,
            i64::MAX,
            CATCH_UP_EVENTS,
            CATCH_UP_BYTES,
            with_prev,
        ) {
            Ok(h) => h,
            Err(MvccError::Compacted) => {
                // etcd (watcher_group.chooseAll): a watcher that needs a compacted revision is
                // told the compacted revision and canceled.
                let compacted = self.ctx.reader.revisions().1;
                for id in unsynced {
                    if self.watchers[&id].next_rev < compacted {
                        self.remove(id);
                        self.send(WatchResponse {
                            header: self.ctx.header(0),
                            watch_id: id,
                            canceled: true,
                            compact_revision: compacted,
                            ..WatchResponse::default()
                        })
                        .await?;
                    }
                }
                return Ok(());
            }
            Err(e) => {
                tracing::error!(error = %e, "watch: cannot read history");
                let _ = self
                    .out
                    .send_async((Err(Status::internal(format!("retcd: {e}"))), 0))
                    .await;
                return Err(Gone);
            }
        };
        let complete = h.next_rev > h.revision;
        for id in unsynced {
            let w = &self.watchers[&id];
            let events: Vec<mvccpb::Event> = h
                .events
                .iter()
                .filter(|e| e.kv.mod_revision >= w.next_rev && w.wants(e))
                .map(|e| event_pb(e, w.prev_kv))
                .collect();
            if !events.is_empty() {
                self.send_events(id, h.revision, events).await?;
            }
            let w = self
                .watchers
                .get_mut(&id)
                .expect("not removed while sending");
            w.next_rev = w.next_rev.max(h.next_rev);
            if complete {
                w.synced = true;
                self.unsynced -= 1;
            }
        }
        Ok(())
    }

    /// The revision up to which every synced watcher was given every event it wants.
    fn progress_all_rev(&self) -> i64 {
        let current = self.ctx.reader.revisions().0;
        self.watchers
            .values()
            .map(|w| (w.next_rev - 1).min(current))
            .min()
            .unwrap_or(current)
    }

    /// Progress notifications (--experimental-watch-progress-notify-interval).
    async fn on_tick(&mut self, feed: &StreamFeed) -> Result<(), Gone> {
        // Deliver what is queued first so the progress revision is as recent as it can be.
        while let Ok(b) = feed.rx.try_recv() {
            if feed.take_lagged() {
                self.unsync_all();
                while feed.rx.try_recv().is_ok() {}
                break;
            }
            self.on_batch(&b).await?;
        }
        let current = self.ctx.reader.revisions().0;
        let mut due = Vec::new();
        for (&id, w) in self.watchers.iter_mut() {
            if !w.progress_notify {
                continue;
            }
            if w.progress_due && w.synced {
                due.push((id, (w.next_rev - 1).min(current)));
            }
            w.progress_due = true;
        }
        for (id, rev) in due {
            self.send(WatchResponse {
                header: self.ctx.header(rev),
                watch_id: id,
                ..WatchResponse::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Answers a progress request (every watcher is synced): watch_id -1 at the revision every
    /// watcher has reached.
    async fn send_progress_all(&mut self) -> Result<(), Gone> {
        self.progress_pending = None;
        let rev = self.progress_all_rev();
        self.send(WatchResponse {
            header: self.ctx.header(rev),
            watch_id: -1,
            ..WatchResponse::default()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retcd_engine::mvcc::KeyValue;
    use retcd_raft::feed::Feed;

    fn batch(rev: i64) -> EventBatch {
        EventBatch {
            revision: rev,
            events: vec![Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: b"k".to_vec(),
                    mod_revision: rev,
                    ..KeyValue::default()
                },
                prev_kv: None,
            }],
        }
    }

    #[test]
    fn the_hub_marks_streams_lagged_when_the_core_or_the_stream_queue_overflows() {
        runtime::block_on_local(async {
            let (feed, mut subs) = Feed::new(1, 2);
            let sub = subs.pop().expect("one subscription");
            let sub_rx = sub.rx.clone();
            start_hub(sub);
            let stream = StreamFeed::register().expect("a hub on this core");
            // The core's queue overflows before the hub runs: batch 4 is lost.
            for rev in 2..5 {
                feed.publish(batch(rev));
            }
            futures_lite::future::yield_now().await;
            feed.publish(batch(5));
            futures_lite::future::yield_now().await;
            let got: Vec<i64> = stream.rx.try_iter().map(|b| b.revision).collect();
            assert_eq!(got, vec![2, 3, 5]);
            assert!(stream.take_lagged(), "the core's loss reaches the stream");
            assert!(!stream.take_lagged());
            // The stream's own queue overflows: the hub never waits for it.
            for rev in 6..(6 + STREAM_FEED_DEPTH as i64 + 10) {
                feed.publish(batch(rev));
                futures_lite::future::yield_now().await;
            }
            assert_eq!(stream.rx.len(), STREAM_FEED_DEPTH);
            assert!(stream.take_lagged());
            // A stream that is gone is forgotten.
            drop(stream);
            let other = StreamFeed::register().expect("a hub on this core");
            feed.publish(batch(1000));
            futures_lite::future::yield_now().await;
            HUB.with(|h| assert_eq!(h.borrow().as_ref().expect("hub").taps.len(), 1));
            assert_eq!(other.rx.len(), 1);
            // A core whose streams are all gone gets no more batches.
            drop(other);
            feed.publish(batch(1001));
            assert!(sub_rx.is_empty());
        });
    }
}
