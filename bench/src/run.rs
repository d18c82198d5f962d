//! Runs a fio-style [`Profile`]: jobs of one reporting group run together, groups run one after
//! the other (fio's `stonewall`), each job as `numjobs` clones with their own connections; then
//! reports per job and per group as fio does.
//!
//! Invariants: a group starts only when every job of the previous group has finished; a watch
//! job without a runtime ends when the other jobs of its group have (the parser refuses a group
//! of only such jobs); every job's connections are closed when it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use retcd_net::pb::etcdserverpb::RangeRequest;

use crate::client::{Conn, ConnectError, ConnectOptions, connect};
use crate::keys::{KeyStyle, Picker, prefix_range};
use crate::load::{
    Isolation, KeepaliveOp, Keys, MixedOp, Op, Outcome, Plan, PutOp, RangeOp, RangeTarget,
    SharedLease, StmOp, TxnPutOp, Value, drive, unix_nanos,
};
use crate::profile::{Consistency, JobSpec, Profile, Rw};
use crate::report::{Recorder, Stats};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("job {job}: {source}")]
    Connect { job: String, source: ConnectError },
    #[error("job {job}: {message}")]
    Job { job: String, message: String },
}

/// What one job clone measured: one recorder per result class.
pub struct CloneResult {
    pub classes: Vec<(&'static str, Recorder)>,
    pub elapsed: Duration,
    /// Optimistic transactions that lost a race and were retried (rw=cas).
    pub retries: u64,
}

/// One job of the profile with its clones' results.
pub struct JobResult {
    pub spec: JobSpec,
    pub clones: Vec<CloneResult>,
}

impl JobResult {
    /// The job's clones merged: one [`Stats`] per class (named `job` or `job/class`).
    pub fn merged(&self) -> Vec<(&'static str, Stats)> {
        merge_classes(&self.spec.name, self.clones.iter())
    }

    pub fn retries(&self) -> u64 {
        self.clones.iter().map(|c| c.retries).sum()
    }
}

fn merge_classes<'a>(
    name: &str,
    clones: impl Iterator<Item = &'a CloneResult>,
) -> Vec<(&'static str, Stats)> {
    let mut by_class: BTreeMap<&'static str, (Recorder, Duration)> = BTreeMap::new();
    let mut order = Vec::new();
    for c in clones {
        for (class, rec) in &c.classes {
            let e = by_class.entry(class).or_insert_with(|| {
                order.push(*class);
                (Recorder::default(), Duration::ZERO)
            });
            e.0.merge(rec.clone());
            e.1 = e.1.max(c.elapsed);
        }
    }
    let single = order.len() == 1;
    order
        .into_iter()
        .filter_map(|class| {
            let (rec, elapsed) = by_class.remove(class)?;
            if rec.is_empty() && !single {
                return None;
            }
            let label = if single {
                name.to_string()
            } else {
                format!("{name}/{class}")
            };
            Some((class, Stats::new(label, rec, elapsed)))
        })
        .collect()
}

fn keys_of(spec: &JobSpec) -> Result<Keys, String> {
    let style = if spec.key_prefix.is_empty() {
        KeyStyle::Varint {
            prefix: Vec::new(),
            size: spec.key_size,
        }
    } else {
        KeyStyle::Decimal {
            prefix: spec.key_prefix.as_bytes().to_vec(),
            size: spec.key_size,
        }
    };
    Ok(Keys {
        style: Arc::new(style),
        picker: Arc::new(Picker::new(spec.distribution, spec.keyspace)?),
    })
}

fn read_template(spec: &JobSpec) -> RangeRequest {
    RangeRequest {
        limit: spec.limit,
        serializable: spec.consistency == Consistency::Serializable,
        keys_only: spec.keys_only,
        count_only: spec.count_only,
        ..Default::default()
    }
}

fn rng() -> SmallRng {
    SmallRng::from_entropy()
}

async fn drive_ops<O: Op>(
    spec: &JobSpec,
    ops: Vec<O>,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let plan = Plan {
        clients: spec.clients,
        total: spec.total,
        runtime: spec.runtime,
        ramp: spec.ramp_time,
        rate: spec.rate,
    };
    drive(&plan, ops, progress, stop).await
}

fn outcome(o: Outcome, retries: u64) -> CloneResult {
    CloneResult {
        classes: o.classes.iter().copied().zip(o.recorders).collect(),
        elapsed: o.elapsed,
        retries,
    }
}

/// Runs one clone of one job. `stamp`: writers put their send time in their values (a watch job
/// shares the group). `mates_done`: raised when the group's other jobs have finished.
pub async fn run_job(
    spec: &JobSpec,
    opts: &ConnectOptions,
    stamp: bool,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    mates_done: tokio::sync::watch::Receiver<bool>,
) -> Result<CloneResult, RunError> {
    let fail = |message: String| RunError::Job {
        job: spec.name.clone(),
        message,
    };
    let mut opts = opts.clone();
    opts.target_leader |= spec.target_leader;
    let conns = connect(&opts, spec.conns)
        .await
        .map_err(|source| RunError::Connect {
            job: spec.name.clone(),
            source,
        })?;
    let conn = |i: usize| -> &Conn { &conns[i % conns.len()] };
    let keys = keys_of(spec).map_err(fail)?;
    let value = Value::random(spec.value_size, stamp);
    let n = spec.clients;
    let result = match spec.rw {
        Rw::Put => {
            let lease = spec
                .lease_ttl
                .map(|ttl| Arc::new(SharedLease::new(conn(0).lease(), ttl, spec.lease_reuse)));
            let ops = (0..n)
                .map(|i| PutOp {
                    kv: conn(i).kv(),
                    keys: keys.clone(),
                    value: value.clone(),
                    lease: lease.clone(),
                    rng: rng(),
                })
                .collect();
            outcome(drive_ops(spec, ops, progress, stop).await, 0)
        }
        Rw::Range => {
            let target = if spec.prefix {
                let (key, end) = prefix_range(keys.style.prefix());
                RangeTarget::Fixed { key, end }
            } else {
                RangeTarget::Pick(keys.clone())
            };
            let ops = (0..n)
                .map(|i| RangeOp {
                    kv: conn(i).kv(),
                    target: target.clone(),
                    template: read_template(spec),
                    paginate: spec.paginate,
                    rng: rng(),
                })
                .collect();
            outcome(drive_ops(spec, ops, progress, stop).await, 0)
        }
        Rw::Txn => {
            let ops = (0..n)
                .map(|i| TxnPutOp {
                    kv: conn(i).kv(),
                    keys: keys.clone(),
                    value: value.clone(),
                    ops: spec.txn_ops,
                    rng: rng(),
                })
                .collect();
            outcome(drive_ops(spec, ops, progress, stop).await, 0)
        }
        Rw::Mixed => {
            let ops = (0..n)
                .map(|i| MixedOp {
                    kv: conn(i).kv(),
                    read_percent: spec.rwmixread,
                    in_txn: false,
                    reads: RangeTarget::Pick(keys.clone()),
                    read_template: read_template(spec),
                    keys: keys.clone(),
                    value: value.clone(),
                    rng: rng(),
                })
                .collect();
            outcome(drive_ops(spec, ops, progress, stop).await, 0)
        }
        Rw::Cas => {
            let retries = Arc::new(AtomicU64::new(0));
            let ops = (0..n)
                .map(|i| StmOp {
                    kv: conn(i).kv(),
                    keys: keys.clone(),
                    keys_per_txn: spec.txn_ops.min(spec.keyspace as usize),
                    write_percent: 100,
                    isolation: Isolation::RepeatableReads,
                    value: value.clone(),
                    retries: retries.clone(),
                    rng: rng(),
                })
                .collect();
            let o = drive_ops(spec, ops, progress, stop).await;
            outcome(o, retries.load(Ordering::Relaxed))
        }
        Rw::Keepalive => {
            let mut ops = Vec::with_capacity(n);
            for i in 0..n {
                ops.push(
                    KeepaliveOp::open(conn(i).lease(), 100)
                        .await
                        .map_err(|s| fail(crate::client::status_text(&s)))?,
                );
            }
            outcome(drive_ops(spec, ops, progress, stop).await, 0)
        }
        Rw::Watch => {
            let targets = if spec.prefix {
                vec![prefix_range(keys.style.prefix())]
            } else {
                let mut r = rng();
                (0..spec.watchers)
                    .map(|_| (keys.style.key(keys.picker.next(&mut r)), Vec::new()))
                    .collect()
            };
            let start = Instant::now();
            let from_ns = Arc::new(AtomicU64::new(
                unix_nanos() + spec.ramp_time.as_nanos() as u64,
            ));
            let (done_tx, done_rx) = tokio::sync::watch::channel(false);
            // Ends at the runtime, when the group's other jobs end, or on stop.
            let ender = {
                let (runtime, ramp, mut mates, stop) = (
                    spec.runtime,
                    spec.ramp_time,
                    mates_done.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let until_runtime = async {
                        match runtime {
                            Some(r) => tokio::time::sleep(ramp + r).await,
                            None => std::future::pending().await,
                        }
                    };
                    let until_stop = async {
                        while !stop.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        () = until_runtime => {}
                        _ = mates.wait_for(|d| *d) => {}
                        () = until_stop => {}
                    }
                    let _ = done_tx.send(true);
                })
            };
            let job = crate::watch::WatchJob {
                streams: spec.streams,
                watchers: spec.watchers,
                targets,
                prev_kv: spec.prev_kv,
            };
            let rec = crate::watch::watch_job(&conns, job, from_ns, progress, done_rx)
                .await
                .map_err(|s| fail(crate::client::status_text(&s)))?;
            ender.abort();
            let elapsed = start.elapsed().saturating_sub(spec.ramp_time);
            CloneResult {
                classes: vec![("event", rec)],
                elapsed,
                retries: 0,
            }
        }
    };
    Ok(result)
}

/// Runs every group of the profile in order; returns each job's results in profile order.
pub async fn run_profile(
    profile: &Profile,
    opts: &ConnectOptions,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JobResult>, RunError> {
    let mut results: Vec<JobResult> = Vec::new();
    let groups: std::collections::BTreeSet<usize> = profile.jobs.iter().map(|j| j.group).collect();
    for g in groups {
        let jobs: Vec<&JobSpec> = profile.jobs.iter().filter(|j| j.group == g).collect();
        let stamp = jobs.iter().any(|j| j.rw == Rw::Watch);
        let (mates_tx, mates_rx) = tokio::sync::watch::channel(false);
        let mut watchers = Vec::new();
        let mut others = Vec::new();
        for (index, spec) in jobs.iter().enumerate() {
            for _ in 0..spec.numjobs {
                let (spec, opts, progress, stop, mates) = (
                    (*spec).clone(),
                    opts.clone(),
                    progress.clone(),
                    stop.clone(),
                    mates_rx.clone(),
                );
                let task = tokio::spawn(async move {
                    run_job(&spec, &opts, stamp, progress, stop, mates).await
                });
                if jobs[index].rw == Rw::Watch {
                    watchers.push((index, task));
                } else {
                    others.push((index, task));
                }
            }
        }
        let mut per_job: Vec<Vec<CloneResult>> = jobs.iter().map(|_| Vec::new()).collect();
        let mut first_err = None;
        // A group of watch jobs alone ends at their runtimes, not at once.
        let has_mates = !others.is_empty();
        for (index, task) in others {
            match task.await.expect("job task panicked") {
                Ok(r) => per_job[index].push(r),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                }
            }
        }
        if has_mates {
            let _ = mates_tx.send(true);
        }
        for (index, task) in watchers {
            match task.await.expect("job task panicked") {
                Ok(r) => per_job[index].push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        for (spec, clones) in jobs.into_iter().zip(per_job) {
            results.push(JobResult {
                spec: spec.clone(),
                clones,
            });
        }
    }
    Ok(results)
}

/// fio's per-job blocks, then each group's "Run status" summary.
pub fn render_fio(results: &[JobResult]) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<usize, Vec<&JobResult>> = BTreeMap::new();
    for r in results {
        groups.entry(r.spec.group).or_default().push(r);
    }
    for (g, jobs) in &groups {
        for j in jobs {
            let s = &j.spec;
            let blocks: Vec<(String, Vec<(&'static str, Stats)>)> =
                if s.group_reporting || j.clones.len() == 1 {
                    vec![(
                        format!("{}: (groupid={g}, jobs={})", s.name, j.clones.len()),
                        j.merged(),
                    )]
                } else {
                    j.clones
                        .iter()
                        .map(|c| {
                            (
                                format!("{}: (groupid={g}, jobs=1)", s.name),
                                merge_classes(&s.name, std::iter::once(c)),
                            )
                        })
                        .collect()
                };
            for (header, classes) in blocks {
                out.push_str(&format!(
                    "{header}: rw={}, clients={}, conns={}, keyspace={}, key_size={}, value_size={}\n",
                    s.rw.name(),
                    s.clients,
                    s.conns,
                    s.keyspace,
                    s.key_size,
                    s.value_size
                ));
                for (class, stats) in classes {
                    out.push_str(&stats.render_fio(&format!("  {class}")));
                }
                if s.rw == Rw::Cas {
                    out.push_str(&format!("  retries={}\n", j.retries()));
                }
                out.push('\n');
            }
        }
        out.push_str(&format!("Run status group {g} (all jobs):\n"));
        let clones = jobs.iter().flat_map(|j| j.clones.iter());
        for (class, stats) in merge_classes("all", clones) {
            out.push_str(&format!(
                "  {class}: ops={}, errors={}, iops={:.1}, runtime={}msec, lat avg={:.3}ms p50={:.3}ms p99={:.3}ms\n",
                stats.count(),
                stats.error_count(),
                stats.rps,
                stats.total.as_millis(),
                stats.average * 1e3,
                stats.percentile(50.0) * 1e3,
                stats.percentile(99.0) * 1e3,
            ));
        }
        out.push('\n');
    }
    out
}

/// The profile's results as JSON: every job (clones merged) with its spec and its classes.
pub fn to_json(profile_name: &str, results: &[JobResult]) -> serde_json::Value {
    let jobs: Vec<serde_json::Value> = results
        .iter()
        .map(|j| {
            let s = &j.spec;
            let classes: serde_json::Map<String, serde_json::Value> = j
                .merged()
                .into_iter()
                .map(|(c, st)| (c.to_string(), st.to_json()))
                .collect();
            serde_json::json!({
                "name": s.name, "group": s.group, "rw": s.rw.name(), "clients": s.clients,
                "conns": s.conns, "numjobs": s.numjobs, "keyspace": s.keyspace,
                "key_size": s.key_size, "value_size": s.value_size, "retries": j.retries(),
                "classes": classes,
            })
        })
        .collect();
    serde_json::json!({ "profile": profile_name, "jobs": jobs })
}
