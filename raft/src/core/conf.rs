//! Changes of the cluster's configuration: membership changes as the Cluster service asks for
//! them ([`MemberChange`]), checked as etcd checks them (removed ids, peer URLs, learners, strict
//! reconfiguration) and proposed; a committed change checked again and applied to Raft and the
//! membership; this member publishing its attributes (name, client URLs); leader transfer.
//!
//! Invariants: a change is checked against the applied membership both before it is proposed and
//! when it is applied (a change refused at apply changes nothing); after an applied change the
//! membership's voters are raft-rs's (debug-asserted); a member that applied its own removal is
//! [`Core::removed`]. The sequencer calls the public methods; `apply` calls `apply_conf_change`
//! and the round calls `finish_transfers`.

use std::time::Instant;

use raft::prelude::{ConfChange, ConfChangeType};

use crate::membership::{Member, MemberAttrs};
use crate::reply::{DoneReply, MemberError, MembersReply, ProposeError};

use super::waiters::Waiter;
use super::{Core, CoreError};

/// A membership change as the Cluster service asks for it.
#[derive(Debug, Clone)]
pub enum MemberChange {
    Add {
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove(u64),
    Promote(u64),
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
}

impl Core {
    /// Proposes a membership change after etcd's checks; the reply carries the membership once
    /// the change is applied.
    pub fn change_members(&mut self, change: MemberChange, reply: MembersReply, now: Instant) {
        if let Err(e) = self.check_change(&change) {
            let _ = reply.send(Err(ProposeError::Member(e)));
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(ProposeError::NoLeader));
            return;
        }
        let (seq, ctx) = self.next_context();
        let proposed = match change {
            MemberChange::Update { id, peer_urls } => self.raw.propose(
                ctx,
                MemberAttrs {
                    id,
                    peer_urls: Some(peer_urls),
                    ..Default::default()
                }
                .encode(),
            ),
            other => {
                let mut cc = ConfChange::default();
                match other {
                    MemberChange::Add {
                        id,
                        peer_urls,
                        is_learner,
                    } => {
                        cc.set_change_type(if is_learner {
                            ConfChangeType::AddLearnerNode
                        } else {
                            ConfChangeType::AddNode
                        });
                        cc.node_id = id;
                        cc.context = Member {
                            id,
                            peer_urls,
                            is_learner,
                            ..Default::default()
                        }
                        .encode();
                    }
                    MemberChange::Remove(id) => {
                        cc.set_change_type(ConfChangeType::RemoveNode);
                        cc.node_id = id;
                    }
                    MemberChange::Promote(id) => {
                        cc.set_change_type(ConfChangeType::AddNode);
                        cc.node_id = id;
                    }
                    MemberChange::Update { .. } => unreachable!("handled above"),
                }
                self.raw.propose_conf_change(ctx, cc)
            }
        };
        match proposed {
            Ok(()) => self.wait(seq, Waiter::Members(reply), now),
            Err(e) => {
                let _ = reply.send(Err(super::waiters::refused(e)));
            }
        }
    }

    /// etcd's checks of a membership change against the applied membership (and, on the
    /// leader, the followers' progress).
    fn check_change(&self, change: &MemberChange) -> Result<(), MemberError> {
        let m = &self.membership;
        match change {
            MemberChange::Add {
                id,
                peer_urls,
                is_learner,
            } => {
                if m.is_removed(*id) {
                    return Err(MemberError::IdRemoved);
                }
                if m.members
                    .iter()
                    .any(|x| x.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(MemberError::PeerUrlExists);
                }
                if *is_learner && m.members.iter().filter(|x| x.is_learner).count() >= 1 {
                    return Err(MemberError::TooManyLearners);
                }
                if !is_learner {
                    // etcd's strict reconfiguration check: the new voter must not take the
                    // started members below a quorum, and every voter must be reachable.
                    let voters = m.voters().count() + 1;
                    if started(m.voters()) < voters / 2 + 1 {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    if self.is_leader() && self.active_voters() < m.voters().count() {
                        return Err(MemberError::Unhealthy);
                    }
                }
                Ok(())
            }
            MemberChange::Remove(id) => {
                let target = m.get(*id).ok_or(if m.is_removed(*id) {
                    MemberError::IdRemoved
                } else {
                    MemberError::NotFound
                })?;
                if !target.is_learner {
                    // etcd: the started voters left must make a quorum, and removing a voter
                    // that is up must leave a reachable quorum.
                    let voters = m.voters().count() - 1;
                    if started(m.voters().filter(|x| x.id != *id)) < voters / 2 + 1 {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    if self.is_leader()
                        && self.is_active(*id)
                        && self.active_voters() - 1 < voters / 2 + 1
                    {
                        return Err(MemberError::Unhealthy);
                    }
                }
                Ok(())
            }
            MemberChange::Promote(id) => {
                let target = m.get(*id).ok_or(MemberError::NotFound)?;
                if !target.is_learner {
                    return Err(MemberError::NotLearner);
                }
                // etcd: the learner's match must be at least 90% of the leader's.
                let leader_match = self.raw.raft.raft_log.last_index();
                let learner_match = self.raw.raft.prs().get(*id).map_or(0, |p| p.matched);
                if !self.is_leader() || (learner_match as f64) < leader_match as f64 * 0.9 {
                    return Err(MemberError::LearnerNotReady);
                }
                Ok(())
            }
            MemberChange::Update { id, peer_urls } => {
                m.get(*id).ok_or(MemberError::NotFound)?;
                if m.members
                    .iter()
                    .any(|x| x.id != *id && x.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(MemberError::PeerUrlExists);
                }
                Ok(())
            }
        }
    }

    fn is_active(&self, id: u64) -> bool {
        id == self.status.member_id || self.raw.raft.prs().get(id).is_some_and(|p| p.recent_active)
    }

    fn active_voters(&self) -> usize {
        self.membership
            .voters()
            .filter(|m| self.is_active(m.id))
            .count()
    }

    /// Validates a committed configuration change against the membership (etcd's apply-time
    /// check); applies it to Raft and the membership unless it is refused.
    pub(super) fn apply_conf_change(
        &mut self,
        cc: &ConfChange,
        index: u64,
    ) -> Result<Result<(), MemberError>, CoreError> {
        let id = cc.node_id;
        let m = &self.membership;
        let verdict = match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode if m.is_removed(id) => {
                Err(MemberError::IdRemoved)
            }
            ConfChangeType::AddNode if m.get(id).is_some_and(|x| !x.is_learner) => {
                Err(MemberError::NotLearner)
            }
            ConfChangeType::AddLearnerNode if m.get(id).is_some() => {
                Err(MemberError::PeerUrlExists)
            }
            ConfChangeType::RemoveNode if m.get(id).is_none() => Err(MemberError::NotFound),
            _ => Ok(()),
        };
        if verdict.is_err() {
            return Ok(verdict);
        }
        let cs = self.raw.apply_conf_change(cc)?;
        self.raw.mut_store().wl().set_conf_state(cs);
        match cc.get_change_type() {
            ConfChangeType::RemoveNode => {
                self.membership.remove(id);
                if id == self.status.member_id {
                    self.removed = true;
                }
            }
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                let member = if cc.context.is_empty() {
                    Member {
                        id,
                        ..Default::default()
                    }
                } else {
                    Member::decode(&cc.context).map_err(|err| CoreError::BadEntry {
                        index,
                        reason: err.to_string(),
                    })?
                };
                if member.id != id {
                    return Err(CoreError::BadEntry {
                        index,
                        reason: format!("member {:x} in a change of {id:x}", member.id),
                    });
                }
                self.membership.add(Member {
                    is_learner: learner,
                    ..member
                });
            }
        }
        debug_assert_eq!(
            self.membership
                .conf_state()
                .voters
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            self.raw.raft.prs().conf().voters().ids().iter().collect(),
            "the membership's voters are raft's"
        );
        Ok(Ok(()))
    }

    /// Proposes this member's name and client URLs once per run (etcd's publish). Returns
    /// whether that proposal is applied, after which the member serves clients.
    pub fn publish(&mut self, name: &str, client_urls: &[String], now: Instant) -> bool {
        let me = self.status.member_id;
        if self.published {
            return true;
        }
        if self.membership.get(me).is_none() {
            return false;
        }
        // Proposed even when the stored attributes are already these: its apply is what shows
        // that everything committed before this run is applied (a sole voter's stored commit
        // index can be far behind its log).
        let waiting = self
            .pending
            .values()
            .any(|p| matches!(p.waiter, Waiter::Publish) && p.deadline > now);
        if !waiting && self.raw.raft.leader_id != raft::INVALID_ID {
            let attrs = MemberAttrs {
                id: me,
                name: Some(name.to_owned()),
                client_urls: Some(client_urls.to_vec()),
                peer_urls: None,
            };
            self.propose_waiter(attrs.encode(), Waiter::Publish, now);
        }
        false
    }

    /// Starts a leadership transfer to `to`; the reply comes when `to` leads (or on timeout).
    pub fn transfer_leader(&mut self, to: u64, reply: DoneReply, now: Instant) {
        if !self.is_leader() {
            let _ = reply.send(Err(ProposeError::NotLeader));
            return;
        }
        if self.membership.voters().all(|m| m.id != to) {
            let _ = reply.send(Err(ProposeError::Member(MemberError::NotFound)));
            return;
        }
        if to == self.status.member_id {
            let _ = reply.send(Ok(()));
            return;
        }
        self.raw.transfer_leader(to);
        self.transfers.push((to, reply, now + self.request_timeout));
    }

    /// etcd's `longestConnected` for TransferLeadership on stop: of the other voters this leader
    /// heard from within the last election timeout, the one with the most of the log; `None`
    /// when this member does not lead or no such voter exists.
    pub fn stop_transferee(&self) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let me = self.status.member_id;
        let prs = self.raw.raft.prs();
        self.membership
            .voters()
            .filter(|m| m.id != me && self.is_active(m.id))
            .max_by_key(|m| prs.get(m.id).map_or(0, |p| p.matched))
            .map(|m| m.id)
    }

    pub(super) fn finish_transfers(&mut self) {
        let leader = self.raw.raft.leader_id;
        self.transfers.retain(|(to, reply, _)| {
            if *to == leader {
                let _ = reply.send(Ok(()));
                false
            } else {
                true
            }
        });
    }
}

/// Members that published their attributes (etcd's "started").
fn started<'a>(members: impl Iterator<Item = &'a Member>) -> usize {
    members.filter(|m| !m.name.is_empty()).count()
}
