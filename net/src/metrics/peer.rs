//! etcd's peer traffic metrics, by peer: `etcd_network_peer_sent_bytes_total{To}`,
//! `…_received_bytes_total{From}` and `…_sent_failures_total{To}` (bytes of Raft messages; a
//! failure is a stream to the peer that broke), and `…_round_trip_time_seconds{To}` (the
//! prober's calls, net/src/peer.rs). The cells of a peer are created on its first
//! use and kept (a removed member's stay, at their last values, as etcd's series do).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use retcd_engine::metrics::{Counter, Histogram};

/// etcd's round-trip buckets: `prometheus.ExponentialBuckets(0.0001, 2, 16)`, 0.1 ms to 3.3 s.
pub const RTT_SECONDS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

pub struct PeerCells {
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
    pub sent_failures: Counter,
    pub round_trip: Histogram,
}

impl Default for PeerCells {
    fn default() -> Self {
        PeerCells {
            sent_bytes: Counter::new(),
            received_bytes: Counter::new(),
            sent_failures: Counter::new(),
            round_trip: Histogram::new(RTT_SECONDS),
        }
    }
}

static PEERS: Mutex<BTreeMap<u64, Arc<PeerCells>>> = Mutex::new(BTreeMap::new());

/// The cells of peer `id` (hold on to them: this takes a lock).
pub fn cells(id: u64) -> Arc<PeerCells> {
    PEERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id)
        .or_default()
        .clone()
}

/// Every peer's cells, by id.
pub fn all() -> Vec<(u64, Arc<PeerCells>)> {
    PEERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, c)| (*id, c.clone()))
        .collect()
}
