//! The apply: decoding committed entries (requests, members' attributes, configuration changes),
//! applying a batch of them to the MVCC store in one commit together with the membership they
//! leave, publishing the batch's events to the watch feed, collecting the lease changes for the
//! lessor, and answering each entry's waiter with its outcome.
//!
//! Invariants: an entry at or below the applied index is skipped (the replay after a restart);
//! the applied index, the state and the membership are committed together; a waiter is answered
//! only after its entry is applied; an entry that does not decode stops the member
//! ([`CoreError::BadEntry`]). The round ([`Core::ready`], [`Core::persisted`]) applies; the
//! sequencer takes the lease changes.

use std::sync::Arc;

use raft::prelude::{ConfChange, Entry, EntryType};
use retcd_engine::mvcc::{Applied, WriteResult};
use retcd_engine::request::{Caller, Request};

use crate::feed::EventBatch;
use crate::lessor::LeaseChange;
use crate::membership::{ATTRS_FORMAT, MemberAttrs, Membership};
use crate::reply::{MemberError, ProposeError};

use super::waiters::{Waiter, fail, seq_of};
use super::{Core, CoreError};

/// What a committed entry asks of the state machine.
enum Kind {
    Nothing,
    Request(Request, Option<Caller>),
    Members(Result<(), MemberError>),
}

impl Core {
    fn decode(&mut self, e: &Entry) -> Result<Kind, CoreError> {
        let bad = |reason: String| CoreError::BadEntry {
            index: e.index,
            reason,
        };
        match e.get_entry_type() {
            EntryType::EntryNormal if e.data.is_empty() => Ok(Kind::Nothing),
            EntryType::EntryNormal if e.data[0] == ATTRS_FORMAT => {
                let a = MemberAttrs::decode(&e.data).map_err(|err| bad(err.to_string()))?;
                if self.membership.get(a.id).is_none() {
                    return Ok(Kind::Members(Err(MemberError::NotFound)));
                }
                self.membership.set_attrs(&a);
                Ok(Kind::Members(Ok(())))
            }
            EntryType::EntryNormal => {
                let (req, caller) =
                    Request::decode_with_caller(&e.data).map_err(|err| bad(err.to_string()))?;
                Ok(Kind::Request(req, caller))
            }
            EntryType::EntryConfChange => {
                let cc: ConfChange = prost011::Message::decode(&e.data[..])
                    .map_err(|err| bad(format!("configuration change: {err}")))?;
                Ok(Kind::Members(self.apply_conf_change(&cc, e.index)?))
            }
            EntryType::EntryConfChangeV2 => {
                Err(bad("joint configuration changes are not used".into()))
            }
        }
    }

    pub(super) fn apply(&mut self, entries: &[Entry]) -> Result<(), CoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let applied_before = self.mvcc.applied().0;
        let mut compacted = self.mvcc.compacted();
        let mut kinds = Vec::with_capacity(entries.len());
        let mut memberships: Vec<Option<Vec<u8>>> = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= applied_before {
                kinds.push(Kind::Nothing);
                memberships.push(None);
                continue;
            }
            let kind = self.decode(e)?;
            memberships.push(match kind {
                Kind::Members(Ok(())) => Some(self.membership.encode()),
                _ => None,
            });
            kinds.push(kind);
        }
        let batch: Vec<Applied<'_>> = entries
            .iter()
            .zip(&kinds)
            .zip(&memberships)
            .map(|((e, k), m)| Applied {
                index: e.index,
                term: e.term,
                request: match k {
                    Kind::Request(r, _) => Some(r),
                    _ => None,
                },
                caller: match k {
                    Kind::Request(_, c) => c.as_ref(),
                    _ => None,
                },
                membership: m.as_deref(),
            })
            .collect();
        let mut events = Vec::new();
        let started = std::time::Instant::now();
        let mut results = self
            .mvcc
            .apply_with_events(&batch, &mut events)?
            .into_iter();
        let took = started.elapsed();
        if took > crate::metrics::slow_apply() {
            crate::metrics::SLOW_APPLIES.inc();
            tracing::warn!(
                ?took,
                expected_duration = ?crate::metrics::slow_apply(),
                entries = batch.len(),
                "apply request took too long"
            );
        }
        crate::metrics::count_events(&events);
        drop(batch);
        self.feed.publish(EventBatch {
            revision: self.mvcc.revision(),
            events,
        });
        if memberships.iter().any(Option::is_some) {
            self.status.members.store(Arc::new(self.membership.clone()));
        }
        let me = self.status.member_id;
        let mut members_now: Option<Arc<Membership>> = None;
        let now = std::time::Instant::now();
        for (e, kind) in entries.iter().zip(kinds) {
            if e.index <= applied_before {
                continue;
            }
            let result = match &kind {
                Kind::Request(..) => results.next(),
                _ => None,
            };
            if let (Kind::Request(req, _), Some(r)) = (&kind, &result) {
                if let Ok(w) = r {
                    LeaseChange::collect(req, w, &mut self.lease_changes);
                    if let Request::Compact(c) = req {
                        self.compactions.push((c.revision, compacted));
                        compacted = c.revision;
                    }
                    if let (
                        Request::Alarm(ar),
                        WriteResult::Alarm {
                            alarm: Some(a),
                            changed: true,
                            ..
                        },
                    ) = (req, w)
                    {
                        let alarm = retcd_engine::mvcc::alarm_name(a.alarm);
                        let from = format!("{:x}", a.member_id);
                        if ar.activate {
                            tracing::warn!(alarm, from, "alarm raised");
                        } else {
                            tracing::warn!(alarm, from, "alarm disarmed");
                        }
                    }
                }
                self.tokens.on_applied(e.index, req, r, now);
            }
            let Some(p) = seq_of(me, &e.context).and_then(|s| self.pending.remove(&s)) else {
                continue;
            };
            match (p.waiter, kind) {
                (Waiter::Write(reply), Kind::Request(req, _)) => {
                    match result.expect("a request has a result") {
                        Ok(w)
                            if matches!(&req, Request::Compact(c) if c.physical)
                                && self.mvcc.compaction_pending() =>
                        {
                            self.physical.push((reply, w));
                        }
                        Ok(w) => {
                            let _ = reply.send(Ok(w));
                        }
                        Err(err) => {
                            let _ = reply.send(Err(ProposeError::Apply(err)));
                        }
                    }
                }
                (Waiter::Members(reply), Kind::Members(r)) => {
                    let out = match r {
                        Ok(()) => Ok(members_now
                            .get_or_insert_with(|| Arc::new(self.membership.clone()))
                            .clone()),
                        Err(e) => Err(ProposeError::Member(e)),
                    };
                    let _ = reply.send(out);
                }
                (Waiter::Internal, _) => {}
                (Waiter::Publish, Kind::Members(r)) => {
                    if r.is_ok() && !self.published {
                        self.published = true;
                        tracing::info!(
                            local_member_id = %format!("{me:x}"),
                            cluster_id = %format!("{:x}", self.status.cluster_id),
                            "published local member to cluster through raft"
                        );
                    }
                }
                // raft-rs replaced the entry (a second configuration change while one was
                // pending becomes an empty entry).
                (waiter, _) => fail(waiter, ProposeError::LeaderChanged),
            }
        }
        self.since_checkpoint += entries.len() as u64;
        for e in entries {
            self.since_checkpoint_bytes += e.data.len() as u64;
            let before = self.applied_bytes.back().copied();
            debug_assert!(
                before.is_none_or(|(i, _)| i < e.index),
                "entries are applied in order"
            );
            let through = before.map_or(self.applied_bytes_base, |(_, c)| c) + e.data.len() as u64;
            self.applied_bytes.push_back((e.index, through));
        }
        let (index, term) = self.mvcc.applied();
        let conf = memberships
            .iter()
            .any(Option::is_some)
            .then(|| self.membership.conf_state());
        self.raw.mut_store().set_snapshot_meta(index, term, conf);
        Ok(())
    }

    /// The compactions applied since the last call, as (target, previously compacted revision),
    /// in order. Their compaction hashes are taken on the state now, before any of their
    /// deletion batches runs (`StateSnapshot::compaction_hash`).
    pub fn take_compactions(&mut self) -> Vec<(i64, i64)> {
        std::mem::take(&mut self.compactions)
    }

    /// The lease changes applied since the last call (grants, revokes, checkpoints), in order.
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }
}
