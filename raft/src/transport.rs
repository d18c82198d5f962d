//! The Raft side of the peer transport: encoding raft-rs messages, one bounded outbox per peer,
//! and the announcement of new peers to the network layer (net/'s `peer` module), which owns the
//! connections. The sequencer is the only caller of [`Router`].
//!
//! Invariants: the sequencer never blocks on a peer: a full outbox (by message count or by
//! bytes) drops the message and reports the peer unreachable to raft-rs (which then probes
//! instead of streaming appends), exactly as a lost message would; a removed member's outbox is
//! closed. What an outbox holds is only ever messages raft-rs re-sends when lost (appends,
//! heartbeats, votes, their answers); snapshots go through their own queue and a refused one is
//! reported to raft-rs as a failed snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use raft::prelude::Message;
use retcd_engine::mvcc::StateSnapshot;

/// A new peer's outbox, for the network layer to drain into a connection.
pub struct PeerLink {
    pub id: u64,
    /// Encoded raft-rs messages, in order.
    pub rx: OutboxRx,
}

/// The receiving end of a peer's outbox; taking a message frees its bytes of the budget.
#[derive(Clone)]
pub struct OutboxRx {
    rx: flume::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl OutboxRx {
    /// The next message; `None` once the sequencer closed the outbox and it is empty.
    pub async fn recv(&self) -> Option<Bytes> {
        let m = self.rx.recv_async().await.ok()?;
        self.taken(&m);
        Some(m)
    }

    /// A message if one is queued.
    pub fn try_recv(&self) -> Option<Bytes> {
        let m = self.rx.try_recv().ok()?;
        self.taken(&m);
        Some(m)
    }

    fn taken(&self, m: &Bytes) {
        let before = self.queued.fetch_sub(m.len(), Ordering::Relaxed);
        debug_assert!(before >= m.len(), "outbox byte count went below zero");
    }

    /// Drops every queued message (they are stale once a connection failed).
    pub fn clear(&self) {
        while self.try_recv().is_some() {}
    }

    /// The sequencer closed the outbox (the member was removed).
    pub fn is_disconnected(&self) -> bool {
        self.rx.is_disconnected()
    }

    /// Bytes of the messages queued now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The sending end, kept by the [`Router`].
struct Outbox {
    tx: flume::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// Queues `m` unless that would pass either bound. A message larger than the byte budget
    /// still goes when nothing else is queued: a single entry may be that large, and refusing
    /// it forever would stall the peer.
    fn offer(&self, m: Bytes) -> bool {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + m.len() > OUTBOX_BYTES {
            return false;
        }
        let len = m.len();
        // Counted before it is visible to the receiver, so the count never goes below zero.
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(m).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
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

/// Bytes queued per peer before messages are dropped. A peer that far behind (8 of the link's
/// 4 MiB frames) is better probed than fed: without a byte bound, 4096 appends of up to 1 MiB
/// (raft-rs's max_size_per_msg; one large entry may exceed it) could pile up per slow peer.
pub const OUTBOX_BYTES: usize = 32 << 20;

pub struct Router {
    outboxes: HashMap<u64, Outbox>,
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
            let outbox = self.outboxes.entry(to).or_insert_with(|| {
                let (tx, rx) = flume::bounded(OUTBOX_DEPTH);
                let queued = Arc::new(AtomicUsize::new(0));
                // The network layer lives as long as the server: a closed link queue means it is
                // shutting down, and the outbox simply fills up.
                let _ = self.links.try_send(PeerLink {
                    id: to,
                    rx: OutboxRx {
                        rx,
                        queued: queued.clone(),
                    },
                });
                Outbox { tx, queued }
            });
            if !outbox.offer(encode(&m)) && !unreachable.contains(&to) {
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
        assert_eq!(decode(&link.rx.try_recv().unwrap()).unwrap(), m);
        let mut queued = 1;
        while link.rx.try_recv().is_some() {
            queued += 1;
        }
        assert_eq!(queued, OUTBOX_DEPTH);
        assert_eq!(link.rx.queued_bytes(), 0);
        r.retain(|id| id != 7);
        assert!(link.rx.try_recv().is_none());
        assert!(link.rx.is_disconnected());
    }

    fn append(to: u64, bytes: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = to;
        m.term = 2;
        m.entries = vec![raft::prelude::Entry {
            data: vec![7u8; bytes],
            ..Default::default()
        }];
        m
    }

    #[test]
    fn an_outbox_holds_at_most_its_byte_budget() {
        let (links_tx, links_rx) = flume::unbounded();
        let (snap_tx, _snap_rx) = flume::unbounded();
        let mut r = Router::new(links_tx, snap_tx);
        // A slow peer: 3 × the budget of 1 MiB appends, far fewer than OUTBOX_DEPTH messages.
        let n = 3 * OUTBOX_BYTES / (1 << 20);
        assert!(n < OUTBOX_DEPTH);
        let mut unreachable = Vec::new();
        r.send(
            (0..n).map(|_| append(9, 1 << 20)).collect(),
            &mut unreachable,
        );
        // What did not fit was dropped and the peer reported unreachable (raft-rs probes it and
        // re-sends from its match index).
        assert_eq!(unreachable, vec![9]);
        let link = links_rx.try_recv().unwrap();
        let mut bytes = 0;
        let mut messages = 0;
        while let Some(m) = link.rx.try_recv() {
            bytes += m.len();
            messages += 1;
        }
        assert!(bytes <= OUTBOX_BYTES, "{bytes} bytes queued");
        assert!(messages > 0 && messages < n, "{messages} of {n} queued");
        assert_eq!(link.rx.queued_bytes(), 0);

        // Drained, the outbox takes messages again; one larger than the whole budget goes when
        // nothing else is queued, and nothing goes behind it until it left.
        unreachable.clear();
        r.send(vec![append(9, OUTBOX_BYTES + 1)], &mut unreachable);
        assert!(unreachable.is_empty());
        r.send(vec![append(9, 10)], &mut unreachable);
        assert_eq!(unreachable, vec![9]);
        assert!(link.rx.try_recv().unwrap().len() > OUTBOX_BYTES);
        unreachable.clear();
        r.send(vec![append(9, 10)], &mut unreachable);
        assert!(unreachable.is_empty());
        assert_eq!(link.rx.queued_bytes(), link.rx.try_recv().unwrap().len());
        link.rx.clear();
        assert_eq!(link.rx.queued_bytes(), 0);
    }
}
