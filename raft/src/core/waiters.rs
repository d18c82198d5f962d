//! Pending proposals and their waiters. A proposal is matched to its waiter by the entry's
//! context (this member's id and a sequence number), so a follower's proposals, forwarded to the
//! leader by raft-rs, are answered by the follower from its own apply. A proposal whose entry
//! never comes back (a leader change dropped it) is answered with etcd's timeout error once its
//! deadline passes. Expiry also covers the other things that wait with a deadline (read batches,
//! leader transfers), and at shutdown everything that waits is failed.
//!
//! Invariants: a waiter leaves `pending` only to be answered: by the apply of its entry
//! (`apply`), by expiry (etcd's "possibly due to previous leader failure" when the leader changed
//! since it was proposed), or by [`Core::fail_pending`]; a proposal made while there is no
//! leader, or refused by raft-rs, is failed at once and never waits; contexts never repeat within
//! a run, and `seq_base` makes them differ from an earlier run's. The sequencer proposes and
//! fails; within the core, `conf` proposes through `next_context` and `wait`, `apply` answers
//! through `seq_of` and `fail`, and [`Core::tick`] expires.

use std::time::Instant;

use crate::reply::{MembersReply, ProposeError, Reply};

use super::Core;
use super::reads::READ_RETRY;

/// A request from some core: its encoded [`Request`](retcd_engine::request::Request) and where to
/// send the outcome.
pub struct Proposal {
    pub data: Vec<u8>,
    pub reply: Reply,
}

pub(super) enum Waiter {
    Write(Reply),
    Members(MembersReply),
    /// The sequencer's own proposals (lease revokes, checkpoints).
    Internal,
    /// This run's proposal of the member's attributes ([`Core::publish`]).
    Publish,
}

pub(super) struct Pending {
    pub(super) waiter: Waiter,
    pub(super) deadline: Instant,
    /// The leader when it was proposed (a changed leader makes the timeout etcd's "possibly due
    /// to previous leader failure").
    pub(super) leader: u64,
}

fn context(member: u64, seq: u64) -> Vec<u8> {
    let mut c = Vec::with_capacity(16);
    c.extend_from_slice(&member.to_le_bytes());
    c.extend_from_slice(&seq.to_le_bytes());
    c
}

pub(super) fn seq_of(member: u64, ctx: &[u8]) -> Option<u64> {
    if ctx.len() != 16 || u64::from_le_bytes(ctx[..8].try_into().ok()?) != member {
        return None;
    }
    Some(u64::from_le_bytes(ctx[8..].try_into().ok()?))
}

impl Core {
    pub(super) fn next_context(&mut self) -> (u64, Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, context(self.status.member_id, seq))
    }

    pub(super) fn wait(&mut self, seq: u64, waiter: Waiter, now: Instant) {
        self.pending.insert(
            seq,
            Pending {
                waiter,
                deadline: now + self.request_timeout,
                leader: self.raw.raft.leader_id,
            },
        );
    }

    /// Proposes one request; the reply goes out once it is applied (or fails, or times out).
    pub fn propose(&mut self, p: Proposal, now: Instant) {
        self.propose_waiter(p.data, Waiter::Write(p.reply), now);
    }

    /// Proposes a request of the sequencer's own; nobody waits for its outcome.
    pub fn propose_internal(&mut self, data: Vec<u8>, now: Instant) {
        self.propose_waiter(data, Waiter::Internal, now);
    }

    pub(super) fn propose_waiter(&mut self, data: Vec<u8>, waiter: Waiter, now: Instant) {
        // Checked by the proposer, before Raft: an entry the WAL cannot hold would stop every
        // member that appends it.
        if data.len() > self.max_entry_bytes {
            fail(waiter, ProposeError::TooLarge);
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            fail(waiter, ProposeError::NoLeader);
            return;
        }
        let (seq, ctx) = self.next_context();
        match self.raw.propose(ctx, data) {
            Ok(()) => self.wait(seq, waiter, now),
            Err(e) => fail(waiter, refused(e)),
        }
    }

    /// Fails what waited past its deadline and asks again for read indexes not answered yet.
    pub(super) fn expire(&mut self, now: Instant) {
        let leader = self.raw.raft.leader_id;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            let p = self.pending.remove(&seq).expect("listed");
            fail(
                p.waiter,
                if p.leader != leader {
                    ProposeError::TimeoutDueToLeaderFail
                } else {
                    ProposeError::Timeout
                },
            );
        }
        let mut again = Vec::new();
        self.reads.inflight.retain(|ctx, b| {
            if b.deadline <= now {
                for r in b.readers.drain(..) {
                    let _ = r.send(Err(ProposeError::Timeout));
                }
                false
            } else {
                if now.duration_since(b.asked) >= READ_RETRY {
                    b.asked = now;
                    again.push(*ctx);
                }
                true
            }
        });
        for ctx in again {
            self.raw.read_index(ctx.to_le_bytes().to_vec());
        }
        // Reads whose index this member has not applied in time (it is cut off from the leader).
        self.reads.waiting.retain_mut(|(_, deadline, readers)| {
            if *deadline <= now {
                for r in readers.drain(..) {
                    let _ = r.send(Err(ProposeError::Timeout));
                }
                false
            } else {
                true
            }
        });
        self.transfers.retain(|(_, reply, deadline)| {
            if *deadline <= now {
                let _ = reply.send(Err(ProposeError::Timeout));
                false
            } else {
                true
            }
        });
    }

    /// Fails every waiting proposal and read (shutdown).
    pub fn fail_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending) {
            fail(p.waiter, ProposeError::Stopped);
        }
        for r in self.reads.queued.drain(..) {
            let _ = r.send(Err(ProposeError::Stopped));
        }
        for (_, b) in std::mem::take(&mut self.reads.inflight) {
            for r in b.readers {
                let _ = r.send(Err(ProposeError::Stopped));
            }
        }
        for (_, _, readers) in self.reads.waiting.drain(..) {
            for r in readers {
                let _ = r.send(Err(ProposeError::Stopped));
            }
        }
        for (_, reply, _) in self.transfers.drain(..) {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
        for (reply, _) in self.physical.drain(..) {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
    }
}

/// What a client is told of a proposal raft-rs refused. Dropped (over the uncommitted bound, a
/// leader transfer in progress, no leader to forward to) is etcd's ErrProposalDropped, which
/// etcd's server answers as it is (its gRPC error table has no entry for it).
pub(super) fn refused(e: raft::Error) -> ProposeError {
    match e {
        raft::Error::ProposalDropped => ProposeError::ProposalDropped,
        _ => ProposeError::NoLeader,
    }
}

pub(super) fn fail(waiter: Waiter, err: ProposeError) {
    match waiter {
        Waiter::Write(r) => {
            let _ = r.send(Err(err));
        }
        Waiter::Members(r) => {
            let _ = r.send(Err(err));
        }
        Waiter::Internal | Waiter::Publish => {}
    }
}
