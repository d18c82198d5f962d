//! etcd's peer traffic metrics, by peer: `etcd_network_peer_sent_bytes_total{To}`,
//! `…_received_bytes_total{From}` and `…_sent_failures_total{To}` (bytes of Raft messages; a
//! failure is a stream to the peer that broke). The cells of a peer are created on its first
//! use and kept (a removed member's stay, at their last values, as etcd's series do).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use retcd_engine::metrics::Counter;

#[derive(Default)]
pub struct PeerCells {
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
    pub sent_failures: Counter,
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
