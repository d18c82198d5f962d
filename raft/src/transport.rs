//! The Raft side of the peer transport: encoding raft-rs messages, one bounded outbox per peer,
//! and the announcement of new peers to the network layer (net/'s `peer` module), which owns the
//! connections. The sequencer is the only caller of [`Router`].
//!
//! Invariants: the sequencer never blocks on a peer: a full outbox drops the message and reports
//! the peer unreachable to raft-rs (which then probes instead of streaming appends), exactly as a
//! lost message would; a removed member's outbox is closed.

use std::collections::HashMap;

use bytes::Bytes;
use raft::prelude::Message;
use retcd_engine::mvcc::StateSnapshot;

/// A new peer's outbox, for the network layer to drain into a connection.
pub struct PeerLink {
    pub id: u64,
    /// Encoded raft-rs messages, in order.
    pub rx: flume::Receiver<Bytes>,
}

/// A snapshot to stream to a member: the encoded snapshot message and the state it stands for.
pub struct SnapshotJob {
    pub to: u64,
    pub message: Bytes,
    pub state: StateSnapshot,
}

/// Snapshots waiting to be streamed; more are refused (reported failed, Raft asks again).
pub const SNAPSHOT_DEPTH: usize = 4;

/// Messages queued per peer before they are dropped.
pub const OUTBOX_DEPTH: usize = 4096;

pub struct Router {
    outboxes: HashMap<u64, flume::Sender<Bytes>>,
    links: flume::Sender<PeerLink>,
    snapshots: flume::Sender<SnapshotJob>,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable raft message: {0}")]
pub struct MessageDecodeError(String);

pub fn encode(m: &Message) -> Bytes {
    Bytes::from(prost011::Message::encode_to_vec(m))
}

pub fn decode(b: &[u8]) -> Result<Message, MessageDecodeError> {
    prost011::Message::decode(b).map_err(|e| MessageDecodeError(e.to_string()))
}

impl Router {
    /// A router announcing each new peer's outbox on `links` and handing snapshots to
    /// `snapshots`.
    pub fn new(links: flume::Sender<PeerLink>, snapshots: flume::Sender<SnapshotJob>) -> Router {
        Router {
            outboxes: HashMap::new(),
            links,
            snapshots,
        }
    }

    /// Queues a snapshot for streaming; false when too many are queued already.
    pub fn send_snapshot(&mut self, m: &Message, state: StateSnapshot) -> bool {
        self.snapshots
            .try_send(SnapshotJob {
                to: m.to,
                message: encode(m),
                state,
            })
            .is_ok()
    }

    /// Queues `msgs`; the ids of peers whose outbox was full are added to `unreachable`.
    pub fn send(&mut self, msgs: Vec<Message>, unreachable: &mut Vec<u64>) {
        for m in msgs {
            let to = m.to;
            let tx = self.outboxes.entry(to).or_insert_with(|| {
                let (tx, rx) = flume::bounded(OUTBOX_DEPTH);
                // The network layer lives as long as the server: a closed link queue means it is
                // shutting down, and the outbox simply fills up.
                let _ = self.links.try_send(PeerLink { id: to, rx });
                tx
            });
            if tx.try_send(encode(&m)).is_err() && !unreachable.contains(&to) {
                unreachable.push(to);
            }
        }
    }

    /// Keeps the outboxes of peers for which `keep` holds; the others' connections end.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.outboxes.retain(|id, _| keep(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::MessageType;

    #[test]
    fn outboxes_are_bounded_and_announced() {
        let (links_tx, links_rx) = flume::unbounded();
        let (snap_tx, _snap_rx) = flume::unbounded();
        let mut r = Router::new(links_tx, snap_tx);
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = 7;
        m.term = 3;
        let mut unreachable = Vec::new();
        r.send(vec![m.clone(); OUTBOX_DEPTH + 2], &mut unreachable);
        assert_eq!(unreachable, vec![7]);
        let link = links_rx.try_recv().unwrap();
        assert_eq!(link.id, 7);
        assert!(links_rx.try_recv().is_err(), "announced once");
        assert_eq!(link.rx.len(), OUTBOX_DEPTH);
        assert_eq!(decode(&link.rx.try_recv().unwrap()).unwrap(), m);
        r.retain(|id| id != 7);
        while link.rx.try_recv().is_ok() {}
        assert!(link.rx.is_disconnected());
    }
}
