//! Linearizable reads (etcd's ReadIndex). Reads queue until the next round, then one ReadIndex
//! request per batch goes to Raft; a batch is asked again every [`READ_RETRY`] until Raft
//! answers with an index, and its readers are released once this member applied that index.
//!
//! Invariants: a reader gets an index only once this member's applied index reached it, so what
//! it then reads includes every write committed before it asked; a batch's context is a counter of
//! its own, apart from proposal contexts. Deadlines and shutdown are `waiters`' (which fails the
//! batches it expires). The sequencer calls [`Core::read`] and [`Core::issue_reads`]; the round
//! calls `read_state` and `release_reads`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::reply::{ProposeError, ReadReply};

use super::Core;

/// Linearizable reads: queued until the next round, then one ReadIndex request per batch.
#[derive(Default)]
pub(super) struct Reads {
    pub(super) queued: Vec<ReadReply>,
    /// Batches asked for, by context; re-asked every [`READ_RETRY`] (raft-rs drops the request
    /// silently while there is no leader or the leader has not committed in its term).
    pub(super) inflight: BTreeMap<u64, ReadBatch>,
    /// Batches whose index is known, waiting for the apply to reach it.
    pub(super) waiting: VecDeque<(u64, Instant, Vec<ReadReply>)>,
    pub(super) next_ctx: u64,
}

pub(super) struct ReadBatch {
    pub(super) readers: Vec<ReadReply>,
    pub(super) asked: Instant,
    pub(super) deadline: Instant,
}

/// How long a read-index request waits before it is asked again (etcd: 500 ms).
pub(super) const READ_RETRY: Duration = Duration::from_millis(500);

impl Core {
    /// Asks for a read index; the reply carries it once this member applied that far.
    pub fn read(&mut self, reply: ReadReply) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(ProposeError::NoLeader));
            return;
        }
        self.reads.queued.push(reply);
    }

    /// Asks Raft for one read index for every read queued since the last round.
    pub fn issue_reads(&mut self, now: Instant) {
        if self.reads.queued.is_empty() {
            return;
        }
        let ctx = self.reads.next_ctx;
        self.reads.next_ctx += 1;
        let readers = std::mem::take(&mut self.reads.queued);
        self.raw.read_index(ctx.to_le_bytes().to_vec());
        self.reads.inflight.insert(
            ctx,
            ReadBatch {
                readers,
                asked: now,
                deadline: now + self.request_timeout,
            },
        );
    }

    pub(super) fn read_state(&mut self, index: u64, ctx: &[u8]) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        if let Some(batch) = self.reads.inflight.remove(&u64::from_le_bytes(bytes)) {
            self.reads
                .waiting
                .push_back((index, batch.deadline, batch.readers));
        }
    }

    pub(super) fn release_reads(&mut self) {
        let applied = self.mvcc.applied().0;
        let mut i = 0;
        while i < self.reads.waiting.len() {
            if self.reads.waiting[i].0 <= applied {
                let (index, _, readers) = self.reads.waiting.remove(i).expect("in bounds");
                for r in readers {
                    let _ = r.send(Ok(index));
                }
            } else {
                i += 1;
            }
        }
    }
}
