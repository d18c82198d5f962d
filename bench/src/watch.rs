//! Watch workloads: etcd benchmark's `watch`, `watch-latency` and `watch-get`, and the profile's
//! `rw=watch` job (watchers that measure how long each event took to reach them).
//!
//! Event latency comes from the value: writers stamp the first 8 bytes with the send time
//! ([`crate::load::unix_nanos`]); a watcher on the same machine subtracts it from the arrival
//! time. Events without a stamp (deletes, short values, other writers) are counted as received
//! but carry no latency.
//!
//! Invariants: every wait here is bounded (by the job's runtime, by a stop signal, or by the
//! expected number of events); a watcher is only counted once the server confirmed its creation.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use retcd_net::pb::etcdserverpb::{
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse, kv_client::KvClient,
    watch_client::WatchClient, watch_request,
};
use retcd_net::pb::mvccpb::Event;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::client::{Conn, Svc, status_text};
use crate::load::unix_nanos;
use crate::report::Recorder;

/// One bidirectional Watch stream.
pub struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    rx: Inbound<WatchResponse>,
}

/// The response side of a bidirectional call. gRPC servers (grpc-go's, hence etcd's) send their
/// response headers only with the first response message, and tonic's call resolves only at the
/// headers: so the call runs in its own task while the caller sends its first request.
pub enum Inbound<T> {
    Pending(tokio::task::JoinHandle<Result<Streaming<T>, Status>>),
    Open(Box<Streaming<T>>),
}

impl<T: Send + 'static> Inbound<T> {
    /// Runs `call` (a bidirectional call whose request stream the caller feeds) in its own task.
    pub fn spawn(
        call: impl Future<Output = Result<tonic::Response<Streaming<T>>, Status>> + Send + 'static,
    ) -> Inbound<T> {
        Inbound::Pending(tokio::spawn(async move { Ok(call.await?.into_inner()) }))
    }
}

impl<T> Inbound<T> {
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        if let Inbound::Pending(call) = self {
            let s = call
                .await
                .map_err(|e| Status::internal(format!("stream task: {e}")))??;
            *self = Inbound::Open(Box::new(s));
        }
        match self {
            Inbound::Open(s) => s.message().await,
            Inbound::Pending(_) => unreachable!("opened above"),
        }
    }
}

impl WatchStream {
    pub fn open(mut client: WatchClient<Svc>) -> WatchStream {
        // Requests are sent one at a time and each waits for its answer: a small queue suffices.
        let (tx, rx) = mpsc::channel(16);
        let rx = Inbound::spawn(async move {
            client
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        WatchStream { tx, rx }
    }

    /// Creates one watcher and waits until the server confirms it; events that arrive meanwhile
    /// (for watchers created earlier) go to `on_event`.
    pub async fn create(
        &mut self,
        req: WatchCreateRequest,
        mut on_event: impl FnMut(&Event),
    ) -> Result<i64, Status> {
        let msg = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(req)),
        };
        self.tx
            .send(msg)
            .await
            .map_err(|_| Status::unavailable("watch stream closed"))?;
        loop {
            let Some(r) = self.rx.message().await? else {
                return Err(Status::unavailable("watch stream closed"));
            };
            r.events.iter().for_each(&mut on_event);
            if r.canceled {
                return Err(Status::failed_precondition(r.cancel_reason));
            }
            if r.created {
                return Ok(r.watch_id);
            }
        }
    }

    /// The next response, or `None` when the stream ended or `done` was raised.
    pub async fn next(
        &mut self,
        done: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Result<WatchResponse, Status>> {
        if *done.borrow() {
            return None;
        }
        tokio::select! {
            m = self.rx.message() => m.transpose(),
            _ = done.changed() => None,
        }
    }
}

/// The stamp's latency for an event, if its value carries a plausible one.
fn stamped_latency(ev: &Event, now_ns: u64) -> Option<(u64, Duration)> {
    let v = &ev.kv.as_ref()?.value;
    let stamp = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    // Anything not sent within the last hour is not one of our stamps.
    (stamp <= now_ns && now_ns - stamp < 3_600_000_000_000)
        .then(|| (stamp, Duration::from_nanos(now_ns - stamp)))
}

/// Records an event's latency relative to the measured phase that began at `from_ns`
/// (Unix nanoseconds); events sent before it are not measured.
fn record_event(rec: &mut Recorder, ev: &Event, from_ns: u64) -> bool {
    match stamped_latency(ev, unix_nanos()) {
        Some((stamp, lat)) if stamp >= from_ns => {
            rec.ok(Duration::from_nanos(stamp - from_ns), lat);
            true
        }
        _ => false,
    }
}

/// The profile's `rw=watch` job: `watchers` watchers spread over `streams` streams (streams
/// over the connections round robin), each on `targets[i % len]` (key, range end).
pub struct WatchJob {
    pub streams: usize,
    pub watchers: usize,
    pub targets: Vec<(Vec<u8>, Vec<u8>)>,
    pub prev_kv: bool,
}

/// Runs a [`WatchJob`]: records every stamped event sent after `from_ns` until `done`.
pub async fn watch_job(
    conns: &[Conn],
    job: WatchJob,
    from_ns: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    done: tokio::sync::watch::Receiver<bool>,
) -> Result<Recorder, Status> {
    let WatchJob {
        streams,
        watchers,
        targets,
        prev_kv,
    } = job;
    let streams = streams.clamp(1, watchers.max(1));
    let mut opened = Vec::with_capacity(streams);
    for s in 0..streams {
        let mut ws = WatchStream::open(conns[s % conns.len()].watch());
        for w in (s..watchers).step_by(streams) {
            let (key, range_end) = targets[w % targets.len()].clone();
            let req = WatchCreateRequest {
                key,
                range_end,
                prev_kv,
                ..Default::default()
            };
            ws.create(req, |_| {}).await?;
        }
        opened.push(ws);
    }
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|mut ws| {
            let (from_ns, progress, mut done) = (from_ns.clone(), progress.clone(), done.clone());
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                while let Some(r) = ws.next(&mut done).await {
                    match r {
                        Ok(r) => {
                            let from = from_ns.load(Ordering::Relaxed);
                            for ev in &r.events {
                                if record_event(&mut rec, ev, from) {
                                    progress.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(s) => {
                            rec.err(status_text(&s));
                            break;
                        }
                    }
                }
                rec
            })
        })
        .collect();
    let mut all = Recorder::default();
    for t in tasks {
        all.merge(t.await.expect("watch task panicked"));
    }
    Ok(all)
}

/// etcd's `benchmark watch`: phase one creates the watchers (latency = create to confirmed);
/// phase two puts to the watched keys and measures each event's delivery.
pub struct WatchBench {
    pub streams: usize,
    pub watch_per_stream: usize,
    pub keys: Vec<Vec<u8>>,
    pub put_total: usize,
    pub put_rate: u64,
}

pub struct WatchBenchResult {
    pub create: Recorder,
    pub create_elapsed: Duration,
    pub events: Recorder,
    pub events_elapsed: Duration,
    pub missing: i64,
}

impl WatchBench {
    pub async fn run(
        &self,
        conns: &[Conn],
        progress: Arc<AtomicU64>,
        timeout: Duration,
    ) -> Result<WatchBenchResult, Status> {
        assert!(!self.keys.is_empty(), "at least one watched key");
        let started = Instant::now();
        let mut create = Recorder::default();
        let mut watchers_on = vec![0i64; self.keys.len()];
        let mut opened = Vec::with_capacity(self.streams);
        let mut n = 0usize;
        for s in 0..self.streams {
            let mut ws = WatchStream::open(conns[s % conns.len()].watch());
            for _ in 0..self.watch_per_stream {
                let k = n % self.keys.len();
                n += 1;
                let st = Instant::now();
                let req = WatchCreateRequest {
                    key: self.keys[k].clone(),
                    ..Default::default()
                };
                ws.create(req, |_| {}).await?;
                create.ok(st - started, st.elapsed());
                watchers_on[k] += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            opened.push(ws);
        }
        let create_elapsed = started.elapsed();

        let expected: i64 = (0..self.put_total)
            .map(|i| watchers_on[i % self.keys.len()])
            .sum();
        let remaining = Arc::new(AtomicI64::new(expected));
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let done_tx = Arc::new(done_tx);
        let from = unix_nanos();
        let events_start = Instant::now();
        let receivers: Vec<_> = opened
            .into_iter()
            .map(|mut ws| {
                let (remaining, progress, done_tx, mut done) = (
                    remaining.clone(),
                    progress.clone(),
                    done_tx.clone(),
                    done_rx.clone(),
                );
                tokio::spawn(async move {
                    let mut rec = Recorder::default();
                    while let Some(r) = ws.next(&mut done).await {
                        let Ok(r) = r else { break };
                        for ev in &r.events {
                            record_event(&mut rec, ev, from);
                            progress.fetch_add(1, Ordering::Relaxed);
                            if remaining.fetch_sub(1, Ordering::Relaxed) <= 1 {
                                let _ = done_tx.send(true);
                            }
                        }
                    }
                    rec
                })
            })
            .collect();
        let failed = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let limiter_gap =
            (self.put_rate > 0).then(|| Duration::from_secs_f64(1.0 / self.put_rate as f64));
        let putters: Vec<_> = conns
            .iter()
            .map(|c| {
                let (mut kv, keys, next, failed, total) = (
                    c.kv(),
                    self.keys.clone(),
                    next.clone(),
                    failed.clone(),
                    self.put_total as u64,
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total || failed.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Some(gap) = limiter_gap {
                            tokio::time::sleep_until((events_start + gap.mul_f64(i as f64)).into())
                                .await;
                        }
                        let mut value = unix_nanos().to_be_bytes().to_vec();
                        value.extend_from_slice(b"data");
                        let req = PutRequest {
                            key: keys[i as usize % keys.len()].clone(),
                            value,
                            ..Default::default()
                        };
                        if kv.put(req).await.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for p in putters {
            p.await.expect("putter panicked");
        }
        // Every put is acknowledged; the events still in flight get a bounded grace period.
        let mut waiting = done_rx.clone();
        let _ = tokio::time::timeout(timeout, waiting.wait_for(|d| *d)).await;
        let _ = done_tx.send(true);
        let mut events = Recorder::default();
        for r in receivers {
            events.merge(r.await.expect("watch receiver panicked"));
        }
        if failed.load(Ordering::Relaxed) {
            events.err("put failed");
        }
        Ok(WatchBenchResult {
            create,
            create_elapsed,
            events,
            events_elapsed: events_start.elapsed(),
            missing: remaining.load(Ordering::Relaxed).max(0),
        })
    }
}

/// etcd's `benchmark watch-latency`: puts to one key at `put_rate`; every watcher's i-th event
/// answers the i-th put; latency = event arrival − put response (0 when the event came first).
pub struct WatchLatency {
    pub streams: usize,
    pub watchers_per_stream: usize,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub put_total: usize,
    pub put_rate: u64,
    pub prev_kv: bool,
}

/// Runs a [`WatchLatency`]: returns the puts, their elapsed time, and the events.
pub async fn watch_latency(
    conns: &[Conn],
    w: WatchLatency,
    progress: Arc<AtomicU64>,
) -> Result<(Recorder, Duration, Recorder), Status> {
    let WatchLatency {
        streams,
        watchers_per_stream,
        key,
        value,
        put_total,
        put_rate,
        prev_kv,
    } = w;
    let mut opened = Vec::new();
    for s in 0..streams {
        let mut ws = WatchStream::open(conns[s % conns.len()].watch());
        for _ in 0..watchers_per_stream {
            let req = WatchCreateRequest {
                key: key.clone(),
                prev_kv,
                ..Default::default()
            };
            ws.create(req, |_| {}).await?;
        }
        opened.push(ws);
    }
    let start = Instant::now();
    let (_done_tx, done_rx) = tokio::sync::watch::channel(false);
    let receivers: Vec<_> = opened
        .into_iter()
        .map(|mut ws| {
            let mut done = done_rx.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                // Per watcher (by watch id), the arrival time of each of its events in order.
                let mut arrivals: std::collections::BTreeMap<i64, Vec<Instant>> =
                    Default::default();
                let want = put_total * watchers_per_stream;
                let mut got = 0;
                while got < want {
                    let Some(Ok(r)) = ws.next(&mut done).await else {
                        break;
                    };
                    let now = Instant::now();
                    for _ in &r.events {
                        arrivals.entry(r.watch_id).or_default().push(now);
                        got += 1;
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                }
                arrivals
            })
        })
        .collect();
    let mut kv: KvClient<Svc> = conns[0].kv();
    let mut puts = Recorder::default();
    let mut put_done = Vec::with_capacity(put_total);
    let gap = Duration::from_secs_f64(1.0 / put_rate.max(1) as f64);
    for i in 0..put_total {
        tokio::time::sleep_until((start + gap.mul_f64(i as f64)).into()).await;
        let st = Instant::now();
        let req = PutRequest {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        };
        kv.put(req).await?;
        let end = Instant::now();
        puts.ok(st - start, end - st);
        put_done.push(end);
    }
    let put_elapsed = start.elapsed();
    let mut events = Recorder::default();
    for r in receivers {
        let arrivals = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .map_err(|_| Status::deadline_exceeded("watch events did not all arrive within 60s"))?
            .expect("receiver panicked");
        for times in arrivals.values() {
            for (j, at) in times.iter().enumerate().take(put_total) {
                let sent = put_done[j].min(*at);
                events.ok(sent - start, *at - sent);
            }
        }
    }
    Ok((puts, put_elapsed, events))
}

/// etcd's `benchmark watch-get`: `watchers` unsynced watchers (from an old revision) catch up
/// on `events` events while one client does serializable gets; reports the gets.
pub async fn watch_get(
    conns: &[Conn],
    getter: &Conn,
    watchers: usize,
    streams: usize,
    events: usize,
    progress: Arc<AtomicU64>,
) -> Result<(Recorder, Duration), Status> {
    let mut kv = conns[0].kv();
    let mut first_rev = 0;
    for i in 0..events {
        let req = PutRequest {
            key: b"watchkey".to_vec(),
            value: i.to_string().into_bytes(),
            ..Default::default()
        };
        let rev = kv
            .put(req)
            .await?
            .into_inner()
            .header
            .map_or(0, |h| h.revision);
        if i == 0 {
            first_rev = rev;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let get = {
        let (stop, mut kv) = (stop.clone(), getter.kv());
        tokio::spawn(async move {
            let mut rec = Recorder::default();
            while !stop.load(Ordering::Relaxed) {
                let st = Instant::now();
                let req = RangeRequest {
                    key: b"abc".to_vec(),
                    serializable: true,
                    ..Default::default()
                };
                match kv.range(req).await {
                    Ok(_) => rec.ok(st - start, st.elapsed()),
                    Err(s) => rec.err(status_text(&s)),
                }
            }
            rec
        })
    };
    let mut tasks = Vec::new();
    for s in 0..streams.max(1) {
        let mut ws = WatchStream::open(conns[s % conns.len()].watch());
        let mine = (s..watchers).step_by(streams.max(1)).count();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..mine {
                let req = WatchCreateRequest {
                    key: b"watchkey".to_vec(),
                    start_revision: first_rev,
                    ..Default::default()
                };
                ws.create(req, |_| got += 1).await?;
            }
            let (_keep, mut done) = tokio::sync::watch::channel(false);
            while got < mine * events {
                match ws.next(&mut done).await {
                    Some(Ok(r)) => {
                        got += r.events.len();
                        progress.fetch_add(r.events.len() as u64, Ordering::Relaxed);
                    }
                    Some(Err(s)) => return Err(s),
                    None => break,
                }
            }
            Ok::<(), Status>(())
        }));
    }
    let mut result = Ok(());
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(300), t).await {
            Ok(r) => result = result.and(r.expect("watch task panicked")),
            Err(_) => {
                result = result.and(Err(Status::deadline_exceeded(
                    "watchers did not catch up within 300s",
                )))
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rec = get.await.expect("getter panicked");
    let elapsed = start.elapsed();
    result.map(|()| (rec, elapsed))
}
