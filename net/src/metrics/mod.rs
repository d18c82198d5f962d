//! The member's metrics in Prometheus' text format (version 0.0.4), with etcd's names, types,
//! help texts and labels (etcd 3.5's definitions; what Grafana's etcd dashboard and etcd's
//! alerts read), plus retcd's own under `retcd_`.
//!
//! The values come from the cells the hot paths bump (`retcd_engine::metrics`,
//! `retcd_raft::metrics`, [`grpc`]) and from the member's state read at scrape time (Raft
//! status, the store's sizes and revisions, `/proc/self`). A scrape only reads: it takes no lock
//! the request paths take and allocates only its answer, so scraping cannot slow them.
//!
//! Format, as client_golang writes it: families sorted by name, each `# HELP`, `# TYPE`, then
//! its samples with labels sorted by name; histograms as cumulative `_bucket{le=…}` lines, then
//! `_sum` and `_count`; numbers as Go's shortest `%g`.

pub mod grpc;
pub mod peer;
mod process;

use std::fmt::Write;

use retcd_engine::metrics::{Histogram, HistogramSnapshot};

use crate::context::Ctx;

/// The answer's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One family, written.
struct Family {
    name: &'static str,
    text: String,
}

/// The families of one scrape, collected then sorted.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    fn family(&mut self, name: &'static str, kind: &str, help: &str) -> &mut String {
        let mut text = String::new();
        let _ = writeln!(text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(text, "# TYPE {name} {kind}");
        self.families.push(Family { name, text });
        &mut self.families.last_mut().expect("pushed").text
    }

    fn counter(&mut self, name: &'static str, help: &str, v: f64) {
        let t = self.family(name, "counter", help);
        let _ = writeln!(t, "{name} {}", go_float(v));
    }

    fn gauge(&mut self, name: &'static str, help: &str, v: f64) {
        let t = self.family(name, "gauge", help);
        let _ = writeln!(t, "{name} {}", go_float(v));
    }

    /// A gauge of several series, each `labels` (`a="x"`, escaped) and its value.
    fn gauge_series(
        &mut self,
        name: &'static str,
        help: &str,
        series: impl Iterator<Item = (String, f64)>,
    ) {
        let t = self.family(name, "gauge", help);
        for (labels, v) in series {
            let _ = writeln!(t, "{name}{{{labels}}} {}", go_float(v));
        }
    }

    /// A gauge with one label set to `value` and the sample 1 (etcd's version and id gauges).
    fn info(&mut self, name: &'static str, help: &str, label: &str, value: &str) {
        let t = self.family(name, "gauge", help);
        let _ = writeln!(t, "{name}{{{label}=\"{}\"}} 1", escape_label(value));
    }

    fn histogram(&mut self, name: &'static str, help: &str, h: &Histogram) {
        let t = self.family(name, "histogram", help);
        write_histogram(t, name, "", &h.snapshot());
    }

    /// One family of histograms, one per label set.
    fn histogram_series(&mut self, name: &'static str, help: &str, series: &[(&str, &Histogram)]) {
        let t = self.family(name, "histogram", help);
        for (labels, h) in series {
            write_histogram(t, name, labels, &h.snapshot());
        }
    }

    fn render(mut self) -> String {
        self.families.sort_by(|a, b| a.name.cmp(b.name));
        let mut out = String::with_capacity(self.families.iter().map(|f| f.text.len()).sum());
        for f in self.families {
            out.push_str(&f.text);
        }
        out
    }
}

/// `labels` is `a="x",b="y"` (sorted, escaped) or empty.
fn write_histogram(t: &mut String, name: &str, labels: &str, s: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, count) in s.bounds.iter().zip(&s.cumulative) {
        let _ = writeln!(
            t,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {count}",
            go_float(*bound)
        );
    }
    let _ = writeln!(t, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", s.count);
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(t, "{name}_sum{} {}", braces(labels), go_float(s.sum));
    let _ = writeln!(t, "{name}_count{} {}", braces(labels), s.count);
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`: the shortest form that reads back the same,
/// with an exponent (of two digits at least) below 1e-4 and from 1e6 on.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    // Rust's `{:e}` is the shortest round-trip digits with a decimal exponent.
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{v}")
}

/// Everything `/metrics` answers.
pub fn render(ctx: &Ctx) -> String {
    let mut x = Exposition::default();
    server(&mut x, ctx);
    disk(&mut x);
    mvcc(&mut x, ctx);
    grpc_families(&mut x);
    peers(&mut x);
    leases(&mut x);
    process::families(&mut x);
    retcd(&mut x, ctx);
    x.render()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn server(x: &mut Exposition, ctx: &Ctx) {
    let s = &ctx.status;
    let leader = s.leader();
    x.gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        flag(leader != 0),
    );
    x.gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        flag(leader != 0 && leader == s.member_id),
    );
    x.gauge(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        flag(s.is_learner()),
    );
    x.counter(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        s.leader_changes() as f64,
    );
    // Gauges despite their names, as in etcd.
    x.gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        s.commit_index() as f64,
    );
    x.gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        s.applied_index() as f64,
    );
    x.gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        retcd_raft::metrics::PROPOSALS_PENDING.get() as f64,
    );
    x.counter(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        retcd_raft::metrics::PROPOSALS_FAILED.get() as f64,
    );
    x.counter(
        "etcd_server_slow_apply_total",
        "The total number of slow apply requests (likely overloaded from slow disk).",
        retcd_raft::metrics::SLOW_APPLIES.get() as f64,
    );
    x.gauge(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        ctx.limits.quota_bytes as f64,
    );
    x.info(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        "server_id",
        &format!("{:x}", s.member_id),
    );
    let version = crate::maintenance::ETCD_API_VERSION;
    x.info(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        "server_version",
        version,
    );
    x.info(
        "etcd_cluster_version",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        "cluster_version",
        version.rsplit_once('.').map_or(version, |(mm, _)| mm),
    );
    x.counter(
        "etcd_server_health_success",
        "The total number of successful health checks",
        crate::http::HEALTH_SUCCESS.get() as f64,
    );
    x.counter(
        "etcd_server_health_failures",
        "The total number of failed health checks",
        crate::http::HEALTH_FAILURES.get() as f64,
    );
}

fn disk(x: &mut Exposition) {
    use retcd_engine::metrics as m;
    x.histogram(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &m::WAL_FSYNC_SECONDS,
    );
    x.gauge(
        "etcd_disk_wal_write_bytes_total",
        "Total number of bytes written in WAL.",
        m::WAL_WRITE_BYTES.get() as f64,
    );
    x.histogram(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &m::BACKEND_COMMIT_SECONDS,
    );
}

fn mvcc(x: &mut Exposition, ctx: &Ctx) {
    let s = &ctx.status;
    x.gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        s.db_size() as f64,
    );
    x.gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        s.db_size_in_use() as f64,
    );
    x.gauge(
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys.",
        retcd_raft::metrics::KEYS.get() as f64,
    );
    let (current, compacted) = ctx.reader.revisions();
    x.gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        current as f64,
    );
    x.gauge(
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        if compacted > 0 {
            compacted as f64
        } else {
            -1.0
        },
    );
}

fn grpc_families(x: &mut Exposition) {
    use grpc::*;
    let shown = |i: usize| METHODS[i].listed || STARTED[i].get() > 0;
    let labels = |i: usize| {
        let m = &METHODS[i];
        format!(
            "grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"",
            m.method, m.service, m.kind
        )
    };
    // Series sorted by their labels' values: method, then service.
    let mut order: Vec<usize> = (0..METHODS.len()).filter(|&i| shown(i)).collect();
    order.sort_by_key(|&i| (METHODS[i].method, METHODS[i].service));
    for (name, help, cells) in [
        (
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &STARTED,
        ),
        (
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &MSG_RECEIVED,
        ),
        (
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &MSG_SENT,
        ),
    ] {
        let t = x.family(name, "counter", help);
        for &i in &order {
            let _ = writeln!(t, "{name}{{{}}} {}", labels(i), cells[i].get());
        }
    }
    let name = "grpc_server_handled_total";
    let t = x.family(
        name,
        "counter",
        "Total number of RPCs completed on the server, regardless of success or failure.",
    );
    let mut codes: Vec<usize> = (0..CODES.len()).collect();
    codes.sort_by_key(|&c| CODES[c]);
    for &c in &codes {
        for &i in &order {
            let _ = writeln!(
                t,
                "{name}{{grpc_code=\"{}\",{}}} {}",
                CODES[c],
                labels(i),
                HANDLED[i][c].get()
            );
        }
    }
    if EXTENSIVE.load(std::sync::atomic::Ordering::Relaxed) {
        let name = "grpc_server_handling_seconds";
        let t = x.family(
            name,
            "histogram",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
        );
        for &i in &order {
            write_histogram(t, name, &labels(i), &HANDLING_SECONDS[i].snapshot());
        }
    }
    x.counter(
        "etcd_network_client_grpc_sent_bytes_total",
        "The total number of bytes sent to grpc clients.",
        SENT_BYTES.get() as f64,
    );
    x.counter(
        "etcd_network_client_grpc_received_bytes_total",
        "The total number of bytes received from grpc clients.",
        RECEIVED_BYTES.get() as f64,
    );
}

/// Per peer; no family at all before a peer exists (a single member), as etcd.
fn peers(x: &mut Exposition) {
    let all = peer::all();
    if all.is_empty() {
        return;
    }
    for (name, label, help, cell) in [
        (
            "etcd_network_peer_sent_bytes_total",
            "To",
            "The total number of bytes sent to peers.",
            (|c: &peer::PeerCells| c.sent_bytes.get()) as fn(&peer::PeerCells) -> u64,
        ),
        (
            "etcd_network_peer_received_bytes_total",
            "From",
            "The total number of bytes received from peers.",
            |c: &peer::PeerCells| c.received_bytes.get(),
        ),
        (
            "etcd_network_peer_sent_failures_total",
            "To",
            "The total number of send failures from peers.",
            |c: &peer::PeerCells| c.sent_failures.get(),
        ),
    ] {
        let t = x.family(name, "counter", help);
        // Sorted by the label's value: the hex id as text.
        let mut rows: Vec<(String, u64)> = all
            .iter()
            .map(|(id, c)| (format!("{id:x}"), cell(c)))
            .collect();
        rows.sort();
        for (id, v) in rows {
            let _ = writeln!(t, "{name}{{{label}=\"{id}\"}} {v}");
        }
    }
    let name = "etcd_network_peer_round_trip_time_seconds";
    let t = x.family(name, "histogram", "Round-Trip-Time histogram between peers");
    let mut rows: Vec<(String, &peer::PeerCells)> = all
        .iter()
        .map(|(id, c)| (format!("{id:x}"), &**c))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, c) in rows {
        write_histogram(t, name, &format!("To=\"{id}\""), &c.round_trip.snapshot());
    }
}

fn leases(x: &mut Exposition) {
    use retcd_raft::metrics as m;
    x.counter(
        "etcd_debugging_lease_granted_total",
        "The total number of granted leases.",
        m::LEASES_GRANTED.get() as f64,
    );
    x.counter(
        "etcd_debugging_lease_revoked_total",
        "The total number of revoked leases.",
        m::LEASES_REVOKED.get() as f64,
    );
    x.counter(
        "etcd_debugging_lease_renewed_total",
        "The number of renewed leases seen by the leader.",
        m::LEASES_RENEWED.get() as f64,
    );
    x.histogram(
        "etcd_debugging_lease_ttl_total",
        "Bucketed histogram of lease TTLs.",
        &m::LEASE_TTL_SECONDS,
    );
}

/// retcd's own.
fn retcd(x: &mut Exposition, ctx: &Ctx) {
    x.gauge(
        "retcd_sequencer_queued_proposals",
        "Proposals queued for the sequencer and not yet taken.",
        ctx.proposer.queued() as f64,
    );
    x.gauge(
        "retcd_range_admission_held_bytes",
        "Bytes of large Range responses being built or sent, all cores together.",
        crate::admission::HELD.get() as f64,
    );
    x.counter(
        "retcd_range_admission_waits_total",
        "Range requests that waited for their core's budget of response bytes.",
        crate::admission::WAITS.get() as f64,
    );
    x.counter(
        "retcd_range_admission_refused_total",
        "Range requests refused (too many requests) because too many were waiting already.",
        crate::admission::REFUSED.get() as f64,
    );
    x.counter(
        "retcd_range_admission_timeouts_total",
        "Range requests that gave up (request timed out) waiting for their core's budget.",
        crate::admission::TIMED_OUT.get() as f64,
    );
    x.histogram(
        "retcd_wal_group_commit_entries",
        "Records in each WAL append (one fdatasync each): the group commit's batch size.",
        &retcd_raft::metrics::GROUP_COMMIT_ENTRIES,
    );
    x.histogram(
        "retcd_proposal_duration_seconds",
        "Writes as the serving core sees them: from the hand-over to the sequencer to the answer.",
        &retcd_raft::metrics::PROPOSAL_SECONDS,
    );
    x.histogram_series(
        "retcd_sequencer_stage_duration_seconds",
        "Where the sequencer's rounds go (ready: raft-rs's Ready; wal: the WAL append and its \
         fdatasync; apply: applying and answering; idle: waiting for work).",
        &[
            ("stage=\"apply\"", &retcd_raft::metrics::STAGE_APPLY_SECONDS),
            ("stage=\"idle\"", &retcd_raft::metrics::STAGE_IDLE_SECONDS),
            ("stage=\"ready\"", &retcd_raft::metrics::STAGE_READY_SECONDS),
            ("stage=\"wal\"", &retcd_raft::metrics::STAGE_WAL_SECONDS),
        ],
    );
    x.histogram(
        "retcd_checkpoint_duration_seconds",
        "Duration of each checkpoint of the page store, until its WAL record is durable.",
        &retcd_raft::metrics::CHECKPOINT_SECONDS,
    );
    let queued = retcd_raft::metrics::feed_queued();
    x.gauge_series(
        "retcd_watch_feed_queued_batches",
        "Applied batches queued for each core's watchers.",
        queued
            .iter()
            .enumerate()
            .map(|(core, n)| (format!("core=\"{core}\""), *n as f64)),
    );
}

#[cfg(test)]
mod tests {
    use super::go_float;

    #[test]
    fn floats_as_go_formats_them() {
        for (v, s) in [
            (0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (20480.0, "20480"),
            (819200.0, "819200"),
            (1048576.0, "1.048576e+06"),
            (2147483648.0, "2.147483648e+09"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (8.2051e-05, "8.2051e-05"),
            (1e-06, "1e-06"),
            (0.001, "0.001"),
            (8.192, "8.192"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
    }
}
