//! The closed-loop driver and the request-response operations it drives.
//!
//! A job is `clients` tasks; each owns one [`Op`] (its gRPC client handle, its RNG, its state)
//! and loops: wait for the rate limiter, issue one operation, record its latency in its own
//! [`Recorder`] (no lock or channel on the hot path; recorders are merged at the end).
//!
//! Invariants: at most `total` operations are measured (the count is claimed before the request
//! is sent, so concurrent clients never overshoot); operations that start during the ramp are
//! issued but never recorded; a run stops at `runtime`, at `total`, or when `stop` is raised,
//! whichever comes first; the limiter never lets more than `rate` operations per second start.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use retcd_net::pb::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, PutRequest,
    RangeRequest, RequestOp, TxnRequest, compare, kv_client::KvClient, lease_client::LeaseClient,
    request_op,
};
use tokio::sync::mpsc;
use tonic::Status;

use crate::client::{Svc, status_text};
use crate::keys::{KeyStyle, Picker};
use crate::report::Recorder;
use crate::watch::Inbound;

/// How much and how fast one job runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub clients: usize,
    pub total: Option<u64>,
    pub runtime: Option<Duration>,
    pub ramp: Duration,
    /// Operations per second for the whole job; 0 = no limit.
    pub rate: u64,
}

/// One kind of request-response operation, owned by one client task.
pub trait Op: Send + 'static {
    /// Names of the result classes this op reports (e.g. read and write for a mix).
    fn classes(&self) -> &'static [&'static str] {
        &["op"]
    }
    /// Issues one operation; returns its class (an index into [`Op::classes`]) and its outcome.
    fn call(&mut self) -> impl Future<Output = (usize, Result<(), Status>)> + Send;
}

/// Spaces operation starts `1/rate` apart across all the clients of a job (burst of one, like
/// the `rate.NewLimiter(r, 1)` of etcd's benchmark).
struct Limiter {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Limiter {
    fn new(rate: u64) -> Option<Limiter> {
        (rate > 0).then(|| Limiter {
            interval: Duration::from_secs_f64(1.0 / rate as f64),
            next: std::sync::Mutex::new(Instant::now()),
        })
    }

    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().expect("limiter lock");
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// What a finished job hands back: one merged recorder per class, and the measured wall time.
pub struct Outcome {
    pub classes: &'static [&'static str],
    pub recorders: Vec<Recorder>,
    pub elapsed: Duration,
}

/// Runs `ops` (one per client) under `plan`. `progress` counts measured operations; `stop` ends
/// the job early (a watch job's mates finishing, or Ctrl-C).
pub async fn drive<O: Op>(
    plan: &Plan,
    ops: Vec<O>,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Outcome {
    assert!(!ops.is_empty(), "a job has at least one client");
    let classes = ops[0].classes();
    let start = Instant::now();
    let measure_from = start + plan.ramp;
    let deadline = plan.runtime.map(|r| measure_from + r);
    let claimed = Arc::new(AtomicU64::new(0));
    let limiter = Arc::new(Limiter::new(plan.rate));
    let mut tasks = Vec::with_capacity(ops.len());
    for mut op in ops {
        let (claimed, limiter, progress, stop) = (
            claimed.clone(),
            limiter.clone(),
            progress.clone(),
            stop.clone(),
        );
        let total = plan.total;
        // Sized up front for a fair share of the total, so that recording never reallocates
        // and copies on the hot path (bounded: a time-based run grows as it must).
        let share = total
            .map_or(4096, |t| t / plan.clients.max(1) as u64 + 64)
            .min(1 << 20) as usize;
        tasks.push(tokio::spawn(async move {
            let mut recs: Vec<Recorder> = classes
                .iter()
                .map(|_| Recorder::with_capacity(share))
                .collect();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
                let measured = now >= measure_from;
                if measured
                    && let Some(total) = total
                    && claimed.fetch_add(1, Ordering::Relaxed) >= total
                {
                    break;
                }
                if let Some(l) = limiter.as_ref() {
                    l.wait().await;
                }
                let st = Instant::now();
                let (class, result) = op.call().await;
                let latency = st.elapsed();
                if measured {
                    match result {
                        Ok(()) => {
                            recs[class].ok(st.saturating_duration_since(measure_from), latency)
                        }
                        Err(s) => recs[class].err(status_text(&s)),
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            recs
        }));
    }
    let mut recorders: Vec<Recorder> = classes.iter().map(|_| Recorder::default()).collect();
    for t in tasks {
        let recs = t.await.expect("client task panicked");
        for (all, r) in recorders.iter_mut().zip(recs) {
            all.merge(r);
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    Outcome {
        classes,
        recorders,
        elapsed,
    }
}

/// Nanoseconds since the Unix epoch: the timestamp writers put at the head of their values so
/// that a watcher on the same machine can tell how long an event took to reach it.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A job's keys: how they are spelled and which one each operation picks.
#[derive(Clone, Debug)]
pub struct Keys {
    pub style: Arc<KeyStyle>,
    pub picker: Arc<Picker>,
}

impl Keys {
    fn next(&self, rng: &mut SmallRng) -> Vec<u8> {
        self.style.key(self.picker.next(rng))
    }
}

/// The value every write sends; with `stamp`, its first 8 bytes carry [`unix_nanos`] at send time.
#[derive(Clone, Debug)]
pub struct Value {
    pub bytes: Vec<u8>,
    pub stamp: bool,
}

impl Value {
    pub fn random(size: usize, stamp: bool) -> Value {
        let mut rng = SmallRng::from_entropy();
        Value {
            bytes: (0..size).map(|_| rng.r#gen()).collect(),
            stamp: stamp && size >= 8,
        }
    }

    fn get(&self) -> Vec<u8> {
        let mut v = self.bytes.clone();
        if self.stamp {
            v[..8].copy_from_slice(&unix_nanos().to_be_bytes());
        }
        v
    }
}

/// The lease attached to a job's puts (Kubernetes attaches one lease to many events and grants a
/// new one after a while).
pub struct SharedLease {
    pub lease: LeaseClient<Svc>,
    pub ttl: i64,
    pub reuse: Duration,
    current: tokio::sync::Mutex<Option<(i64, Instant)>>,
}

impl SharedLease {
    pub fn new(lease: LeaseClient<Svc>, ttl: i64, reuse: Duration) -> SharedLease {
        SharedLease {
            lease,
            ttl,
            reuse,
            current: tokio::sync::Mutex::new(None),
        }
    }

    async fn id(&self) -> Result<i64, Status> {
        let mut cur = self.current.lock().await;
        match *cur {
            Some((id, at)) if at.elapsed() < self.reuse => Ok(id),
            _ => {
                let mut l = self.lease.clone();
                let r = l
                    .lease_grant(LeaseGrantRequest {
                        ttl: self.ttl,
                        id: 0,
                    })
                    .await?;
                let id = r.into_inner().id;
                *cur = Some((id, Instant::now()));
                Ok(id)
            }
        }
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

/// `put`: one key from the job's keys per request.
pub struct PutOp {
    pub kv: KvClient<Svc>,
    pub keys: Keys,
    pub value: Value,
    pub lease: Option<Arc<SharedLease>>,
    pub rng: SmallRng,
}

impl Op for PutOp {
    async fn call(&mut self) -> (usize, Result<(), Status>) {
        let lease = match &self.lease {
            None => 0,
            Some(l) => match l.id().await {
                Ok(id) => id,
                Err(s) => return (0, Err(s)),
            },
        };
        let req = PutRequest {
            key: self.keys.next(&mut self.rng),
            value: self.value.get(),
            lease,
            ..Default::default()
        };
        (0, self.kv.put(req).await.map(drop))
    }
}

/// What a range operation reads.
#[derive(Clone, Debug)]
pub enum RangeTarget {
    /// The same key (or range) every time, as etcd's `benchmark range key [end]`.
    Fixed { key: Vec<u8>, end: Vec<u8> },
    /// One key of the job's keys per request.
    Pick(Keys),
}

/// `range`: a Range per request, or with `paginate` a full list in pages of `template.limit` at
/// one revision (Kubernetes' paginated list; one operation = the whole list).
pub struct RangeOp {
    pub kv: KvClient<Svc>,
    pub target: RangeTarget,
    /// limit, serializable, keys_only, count_only; key and range_end are filled per request.
    pub template: RangeRequest,
    pub paginate: bool,
    pub rng: SmallRng,
}

impl RangeOp {
    async fn paginated(&mut self, mut key: Vec<u8>, end: Vec<u8>) -> Result<(), Status> {
        let mut revision = 0;
        loop {
            let req = RangeRequest {
                key,
                range_end: end.clone(),
                revision,
                ..self.template.clone()
            };
            let resp = self.kv.range(req).await?.into_inner();
            if revision == 0 {
                revision = resp.header.map_or(0, |h| h.revision);
            }
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    key = last.key.clone();
                    key.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}

impl Op for RangeOp {
    async fn call(&mut self) -> (usize, Result<(), Status>) {
        let (key, end) = match &self.target {
            RangeTarget::Fixed { key, end } => (key.clone(), end.clone()),
            RangeTarget::Pick(keys) => (keys.next(&mut self.rng), Vec::new()),
        };
        if self.paginate {
            return (0, self.paginated(key, end).await);
        }
        let req = RangeRequest {
            key,
            range_end: end,
            ..self.template.clone()
        };
        (0, self.kv.range(req).await.map(drop))
    }
}

/// `txn-put`: `ops` puts in one Txn.
pub struct TxnPutOp {
    pub kv: KvClient<Svc>,
    pub keys: Keys,
    pub value: Value,
    pub ops: usize,
    pub rng: SmallRng,
}

impl Op for TxnPutOp {
    async fn call(&mut self) -> (usize, Result<(), Status>) {
        let success = (0..self.ops)
            .map(|_| put_op(self.keys.next(&mut self.rng), self.value.get(), 0))
            .collect();
        (
            0,
            self.kv
                .txn(TxnRequest {
                    success,
                    ..Default::default()
                })
                .await
                .map(drop),
        )
    }
}

/// A read/write mix: `read_percent` of the operations read. With `in_txn` both kinds go
/// through Txn (etcd's `txn-mixed`); otherwise they are plain Range and Put.
pub struct MixedOp {
    pub kv: KvClient<Svc>,
    pub read_percent: u8,
    pub in_txn: bool,
    pub reads: RangeTarget,
    pub read_template: RangeRequest,
    pub keys: Keys,
    pub value: Value,
    pub rng: SmallRng,
}

impl Op for MixedOp {
    fn classes(&self) -> &'static [&'static str] {
        &["read", "write"]
    }

    async fn call(&mut self) -> (usize, Result<(), Status>) {
        let read = self.rng.gen_range(0..100u32) < u32::from(self.read_percent);
        let op = if read {
            let (key, range_end) = match &self.reads {
                RangeTarget::Fixed { key, end } => (key.clone(), end.clone()),
                RangeTarget::Pick(keys) => (keys.next(&mut self.rng), Vec::new()),
            };
            let req = RangeRequest {
                key,
                range_end,
                ..self.read_template.clone()
            };
            if !self.in_txn {
                return (0, self.kv.range(req).await.map(drop));
            }
            RequestOp {
                request: Some(request_op::Request::RequestRange(req)),
            }
        } else {
            let (key, value) = (self.keys.next(&mut self.rng), self.value.get());
            if !self.in_txn {
                let req = PutRequest {
                    key,
                    value,
                    ..Default::default()
                };
                return (1, self.kv.put(req).await.map(drop));
            }
            put_op(key, value, 0)
        };
        let txn = TxnRequest {
            success: vec![op],
            ..Default::default()
        };
        (usize::from(!read), self.kv.txn(txn).await.map(drop))
    }
}

/// Isolation of an optimistic transaction, as etcd's STM (`clientv3/concurrency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// No conflict check: reads see the latest value, the commit always applies.
    ReadCommitted,
    /// The commit applies only if nothing read changed since it was read.
    RepeatableReads,
    /// Reads all at the first read's revision, and the commit checks them.
    Serializable,
    /// As Serializable, and the keys written must not have changed either.
    SerializableSnapshot,
}

/// `stm` / `cas`: read `keys_per_txn` distinct keys, then commit a Txn that writes
/// `write_percent` of them if none of them changed meanwhile; retry until one commits. One
/// operation = one committed transaction (its latency includes the retries).
pub struct StmOp {
    pub kv: KvClient<Svc>,
    pub keys: Keys,
    pub keys_per_txn: usize,
    pub write_percent: u8,
    pub isolation: Isolation,
    pub value: Value,
    pub retries: Arc<AtomicU64>,
    pub rng: SmallRng,
}

impl StmOp {
    async fn attempt(&mut self, keys: &[Vec<u8>]) -> Result<bool, Status> {
        let mut revision = 0;
        let mut compares = Vec::new();
        for key in keys {
            let req = RangeRequest {
                key: key.clone(),
                revision,
                ..Default::default()
            };
            let resp = self.kv.range(req).await?.into_inner();
            if self.isolation != Isolation::ReadCommitted && revision == 0 {
                revision = resp.header.as_ref().map_or(0, |h| h.revision);
            }
            if self.isolation == Isolation::RepeatableReads {
                revision = 0;
            }
            let mod_revision = resp.kvs.first().map_or(0, |kv| kv.mod_revision);
            compares.push(Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
            });
        }
        if self.isolation == Isolation::ReadCommitted {
            compares.clear();
        }
        let writes = keys.len() * usize::from(self.write_percent) / 100;
        let success = keys[..writes]
            .iter()
            .map(|k| put_op(k.clone(), self.value.get(), 0))
            .collect();
        let resp = self
            .kv
            .txn(TxnRequest {
                compare: compares,
                success,
                failure: Vec::new(),
            })
            .await?;
        Ok(resp.into_inner().succeeded)
    }
}

impl Op for StmOp {
    async fn call(&mut self) -> (usize, Result<(), Status>) {
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(self.keys_per_txn);
        while keys.len() < self.keys_per_txn {
            let k = self.keys.next(&mut self.rng);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        // Bounded: a transaction that loses this many races in a row is reported as an error.
        for _ in 0..10_000 {
            match self.attempt(&keys).await {
                Ok(true) => return (0, Ok(())),
                Ok(false) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(s) => return (0, Err(s)),
            }
        }
        (0, Err(Status::aborted("stm: 10000 conflicting retries")))
    }
}

/// `lease-keepalive`: one lease per client, refreshed over the client's own keep-alive stream
/// (one request, one response at a time).
pub struct KeepaliveOp {
    pub id: i64,
    pub tx: mpsc::Sender<LeaseKeepAliveRequest>,
    pub rx: Inbound<LeaseKeepAliveResponse>,
}

impl KeepaliveOp {
    pub async fn open(mut lease: LeaseClient<Svc>, ttl: i64) -> Result<KeepaliveOp, Status> {
        let id = lease
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?
            .into_inner()
            .id;
        let (tx, rx) = mpsc::channel(1);
        let rx = Inbound::spawn(async move {
            lease
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        Ok(KeepaliveOp { id, tx, rx })
    }
}

impl Op for KeepaliveOp {
    async fn call(&mut self) -> (usize, Result<(), Status>) {
        if self
            .tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .is_err()
        {
            return (0, Err(Status::unavailable("keep-alive stream closed")));
        }
        match self.rx.message().await {
            Ok(Some(r)) if r.ttl > 0 => (0, Ok(())),
            Ok(Some(_)) => (
                0,
                Err(Status::not_found("etcdserver: requested lease not found")),
            ),
            Ok(None) => (0, Err(Status::unavailable("keep-alive stream closed"))),
            Err(s) => (0, Err(s)),
        }
    }
}
