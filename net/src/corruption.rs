//! Corruption checks between members (etcd's server/etcdserver/corrupt.go), on by default in
//! retcd (etcd's are off unless asked for):
//!
//! - the *initial check* (`--experimental-initial-corrupt-check`, default true), after this
//!   member replayed its log and before it serves clients: its HashKV at its current revision
//!   against each reachable peer's at the same revision; a different hash with the same
//!   compacted revision stops the member ("… found data inconsistency with peers"). A peer that
//!   is unreachable, behind (future revision) or compacted past it is skipped, as etcd does.
//! - the *periodic check* (`--experimental-corrupt-check-time`, default 5m, 0: off), run by the
//!   leader: every member's HashKV at the leader's revision. Where etcd 3.5 raises a CORRUPT
//!   alarm for member 0 (it cannot tell who is wrong), retcd does what 3.6 does: when a quorum
//!   of the members agrees on one hash, each member with another hash gets a CORRUPT alarm of
//!   its own (through Raft, so every member refuses writes from then on); with no such quorum,
//!   the alarm names member 0.
//!
//! - the *compact hash check* (`--experimental-compact-hash-check-enabled`, default true;
//!   `--experimental-compact-hash-check-time`, 1m), run by the leader: every member records the
//!   hash of each compaction it applies (the last 10, computed on the state the compaction
//!   applied to, so it costs no extra pass while serving); the leader compares its newest
//!   unchecked ones with the peers', with the same verdict as the periodic check.
//!
//! Hashes are computed on a thread of their own: a walk of the whole key space must not stall
//! a core (the peer service and the sequencer share core 0).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use retcd_engine::mvcc::{ALARM_CORRUPT, KvHash, MvccError, MvccReader};
use retcd_raft::{NodeStatus, Proposer};
use tracing::{info, warn};

use crate::pb::retcdpeer::HashKvAnswer;

/// Name of the threads that compute a HashKV.
const HASH_THREAD: &str = "retcd-hashkv";

/// etcd's HashKV of `reader`'s latest state at `rev` (0: current), on a thread of its own.
pub async fn hash_kv(reader: &MvccReader, rev: i64) -> Result<KvHash, MvccError> {
    let reader = reader.clone();
    retcd_engine::runtime::on_own_thread(HASH_THREAD, move || reader.hash_kv(rev))
        .await
        .map_err(MvccError::Record)?
}

/// What one peer answered.
struct PeerHash {
    id: u64,
    urls: Vec<String>,
    answer: Result<HashKvAnswer, String>,
}

/// The corruption checks of this member.
#[derive(Clone)]
pub struct Checker {
    pub reader: MvccReader,
    pub status: Arc<NodeStatus>,
    pub proposer: Proposer,
    /// How long one peer may take to answer (etcd's request timeout).
    pub timeout: Duration,
    /// `--experimental-initial-corrupt-check`.
    pub initial: bool,
    /// `--experimental-corrupt-check-time` (zero: off).
    pub period: Duration,
    /// `--experimental-compact-hash-check-time` when enabled.
    pub compact_period: Option<Duration>,
}

impl Checker {
    /// The checks' schedule (call on core 0 once the log is replayed): the initial check, then
    /// `ready` (the member serves clients), then the periodic and compact-hash checks for as
    /// long as the member runs. `Err` only when the initial check refuses the member.
    pub async fn run(self, ready: impl FnOnce()) -> Result<(), String> {
        if self.initial {
            self.initial_check().await?;
        }
        ready();
        if let Some(period) = self.compact_period {
            retcd_engine::runtime::spawn_local(self.clone().run_compact_hash_checks(period));
        }
        let period = self.period;
        if !period.is_zero() {
            self.run_periodic(period).await;
        }
        Ok(())
    }

    /// No other member to compare with (then no check walks the state).
    fn alone(&self) -> bool {
        let members = self.status.members();
        members
            .members
            .iter()
            .all(|m| m.id == self.status.member_id)
    }

    /// Every other member's HashKV at `rev` (with `compaction`: the hash it recorded for its
    /// compaction to `rev`), from its first peer URL that answers.
    async fn peer_hashes(&self, rev: i64, compaction: bool) -> Vec<PeerHash> {
        let members = self.status.members();
        let mut out = Vec::new();
        for m in &members.members {
            if m.id == self.status.member_id || m.peer_urls.is_empty() {
                continue;
            }
            let mut last = String::from("no peer URL");
            let mut answer = None;
            for url in &m.peer_urls {
                let call = crate::peer::hash_kv_of(url, self.status.cluster_id, rev, compaction);
                let limit = async {
                    retcd_engine::runtime::sleep(self.timeout).await;
                    Err(format!("no answer within {:?}", self.timeout))
                };
                match futures_lite::future::or(call, limit).await {
                    Ok(a) => {
                        answer = Some(a);
                        break;
                    }
                    Err(e) => {
                        warn!(
                            local_member_id = %format!("{:x}", self.status.member_id),
                            requested_revision = rev,
                            remote_peer_endpoint = url.as_str(),
                            error = e.as_str(),
                            "failed hash kv request"
                        );
                        last = e;
                    }
                }
            }
            out.push(PeerHash {
                id: m.id,
                urls: m.peer_urls.clone(),
                answer: answer.ok_or(last),
            });
        }
        out
    }

    /// The initial check: `Err` (the member must not serve) when a peer's hash at this member's
    /// revision differs with the same compacted revision.
    pub async fn initial_check(&self) -> Result<(), String> {
        let me = format!("{:x}", self.status.member_id);
        if self.alone() {
            return Ok(());
        }
        info!(local_member_id = me.as_str(), timeout = ?self.timeout, "starting initial corruption check");
        let h = hash_kv(&self.reader, 0)
            .await
            .map_err(|e| format!("{me} failed to fetch hash ({e})"))?;
        let mut mismatch = 0;
        for p in self.peer_hashes(h.revision, false).await {
            let Ok(a) = p.answer else { continue };
            if a.hash == h.hash {
                continue;
            }
            let what = if a.compact_revision == h.compact_revision {
                mismatch += 1;
                "found different hash values from remote peer"
            } else {
                "found different compact revision values from remote peer"
            };
            warn!(
                local_member_id = me.as_str(),
                local_member_revision = h.revision,
                local_member_compact_revision = h.compact_revision,
                local_member_hash = h.hash,
                remote_peer_id = %format!("{:x}", p.id),
                remote_peer_endpoints = ?p.urls,
                remote_peer_revision = a.revision,
                remote_peer_compact_revision = a.compact_revision,
                remote_peer_hash = a.hash,
                "{what}"
            );
        }
        if mismatch > 0 {
            return Err(format!("{me} found data inconsistency with peers"));
        }
        info!(
            local_member_id = me.as_str(),
            "initial corruption checking passed; no corruption"
        );
        Ok(())
    }

    /// Runs the periodic check every `period` while this member leads (call on core 0).
    pub async fn run_periodic(self, period: Duration) {
        loop {
            retcd_engine::runtime::sleep(period).await;
            if self.status.leader() != self.status.member_id || self.alone() {
                continue;
            }
            if let Err(e) = self.periodic_check().await {
                warn!(error = e.as_str(), "corruption check failed");
            }
        }
    }

    /// One periodic check: every member's hash at the leader's revision; the members outside a
    /// quorum that agrees get a CORRUPT alarm.
    pub async fn periodic_check(&self) -> Result<(), String> {
        let h = hash_kv(&self.reader, 0).await.map_err(|e| e.to_string())?;
        let me = self.status.member_id;
        let mut hashes = vec![(me, h.hash)];
        for p in self.peer_hashes(h.revision, false).await {
            // A member compacted to another revision hashes other versions; one that failed to
            // answer is checked next time.
            if let Ok(a) = p.answer
                && a.compact_revision == h.compact_revision
            {
                hashes.push((p.id, a.hash));
            }
        }
        let checked = hashes.len() - 1;
        self.judge(&hashes, &h, "found hash mismatch").await;
        info!(
            number_of_peers_checked = checked,
            "finished peer corruption check"
        );
        Ok(())
    }

    /// The verdict on the hashes members gave for `h`'s revision: with more than one hash, the
    /// members outside a quorum that agrees get a CORRUPT alarm each (member 0 when no quorum
    /// agrees); returns whether all agreed.
    async fn judge(&self, hashes: &[(u64, u32)], h: &KvHash, what: &str) -> bool {
        let mut votes: HashMap<u32, usize> = HashMap::new();
        for (_, hash) in hashes {
            *votes.entry(*hash).or_default() += 1;
        }
        if votes.len() <= 1 {
            return true;
        }
        let members = self.status.members().members.len();
        let (majority, count) = votes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(h, n)| (*h, *n))
            .expect("at least the leader's hash");
        let corrupt: Vec<u64> = if count * 2 > members {
            hashes
                .iter()
                .filter(|(_, hash)| *hash != majority)
                .map(|(id, _)| *id)
                .collect()
        } else {
            vec![0]
        };
        for id in corrupt {
            let theirs = hashes.iter().find(|(m, _)| *m == id).map(|(_, h)| *h);
            warn!(
                revision = h.hash_revision,
                compact_revision = h.compact_revision,
                member_id = %format!("{id:x}"),
                member_hash = ?theirs,
                quorum_hash = majority,
                "{what}"
            );
            self.raise(id).await;
        }
        false
    }

    /// Runs the compact hash check every `period` while this member leads (call on core 0).
    pub async fn run_compact_hash_checks(self, period: Duration) {
        let latest_checked = Cell::new(0i64);
        loop {
            retcd_engine::runtime::sleep(period).await;
            if self.status.leader() == self.status.member_id && !self.alone() {
                self.compact_hash_check(&latest_checked).await;
            }
        }
    }

    /// etcd's CompactHashCheck: the newest recorded compaction hashes not checked yet, newest
    /// first, against the peers' for the same compaction; stops at the first one every peer
    /// answered (or at a mismatch).
    pub async fn compact_hash_check(&self, latest_checked: &Cell<i64>) {
        let me = format!("{:x}", self.status.member_id);
        info!(local_member_id = me.as_str(), timeout = ?self.timeout, "starting compact hash check");
        let hashes: Vec<KvHash> = self
            .status
            .compact_hashes()
            .into_iter()
            .filter(|h| h.hash_revision > latest_checked.get())
            .collect();
        for (i, h) in hashes.iter().enumerate() {
            let peers = self.peer_hashes(h.hash_revision, true).await;
            if peers.is_empty() {
                continue;
            }
            let mut all = vec![(self.status.member_id, h.hash)];
            for p in &peers {
                if let Ok(a) = &p.answer
                    && a.compact_revision == h.compact_revision
                {
                    all.push((p.id, a.hash));
                }
            }
            if !self.judge(&all, h, "failed compaction hash check").await {
                return;
            }
            if all.len() - 1 == peers.len() {
                info!(
                    number_of_peers_checked = peers.len(),
                    revision = h.hash_revision,
                    "successfully checked hash on whole cluster"
                );
                latest_checked.set(latest_checked.get().max(h.hash_revision));
                info!(
                    number_of_hashes_checked = i + 1,
                    "finished compaction hash check"
                );
                return;
            }
            warn!(
                number_of_peers_checked = all.len() - 1,
                number_of_peers = peers.len(),
                revision = h.hash_revision,
                "skipped revision in compaction hash check; was not able to check all peers"
            );
        }
        info!(
            number_of_hashes_checked = hashes.len(),
            "finished compaction hash check"
        );
    }

    /// Raises a CORRUPT alarm for `member` (0: the cluster) through Raft.
    async fn raise(&self, member: u64) {
        if let Err(e) = self
            .proposer
            .propose_alarm(true, member, ALARM_CORRUPT)
            .await
        {
            warn!(error = %e, "failed to raise the CORRUPT alarm");
        }
    }
}
