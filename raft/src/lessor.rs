//! The lessor: lease expiry, renewal and checkpointing, on the sequencer core (etcd's
//! `server/lease/lessor.go`, primary side).
//!
//! Leases themselves (id, granted TTL, remaining TTL at the last checkpoint, attached keys) are MVCC
//! state, changed only through Raft (`Request::LeaseGrant/LeaseRevoke/LeaseCheckpoint`). What is
//! not replicated lives here: when each lease expires. Keep-alives renew it in memory (etcd's leader
//! does the same: renewals do not go through Raft); the leader proposes a revoke for each expired
//! lease and, periodically, a checkpoint of remaining TTLs so that a restart does not extend them.
//!
//! [`Lessor`] is deterministic and does no I/O: time comes in as `Instant`s. The sequencer feeds it
//! the lease changes of every applied batch ([`LeaseChange`]), asks it what to propose, and answers
//! the cores' calls ([`LeaseHandle`]) from it.
//!
//! Invariants: a lease is here iff it is in the applied MVCC state (loaded at startup, then kept in
//! step by [`Lessor::applied`]); an expired lease stays until its revoke is applied, and meanwhile
//! it cannot be renewed (keep-alive answers TTL 0 as for a missing lease).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use retcd_engine::mvcc::{LeaseInfo, WriteResult};
use retcd_engine::request::{LeaseGrantRequest, Request};

use crate::reply::{ProposeError, Reply};

/// etcd's MaxLeaseTTL (seconds): a longer grant is refused with "etcdserver: too large lease TTL".
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's default lease checkpoint interval.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// etcd's leaseRevokeRate: expired leases revoked per second at most.
pub const REVOKE_RATE: u32 = 1000;

/// etcd's maxLeaseCheckpointBatchSize: remaining TTLs in one checkpoint request.
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// etcd's minimum lease TTL for a member: ceil(⌊3 × election ticks / 2⌋ × tick) seconds.
pub fn min_lease_ttl(tick: Duration, election_ticks: usize) -> i64 {
    let min = tick * ((3 * election_ticks / 2) as u32);
    let secs = min.as_secs() as i64;
    if min.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

#[derive(Debug, Clone)]
pub struct LessorOptions {
    /// Granted TTLs below this are raised to it (seconds).
    pub min_ttl: i64,
    /// How often the remaining TTL of a long lease is checkpointed.
    pub checkpoint_interval: Duration,
    /// Expired leases revoked per second at most.
    pub revoke_rate: u32,
    /// When an expired lease's revoke has not been applied after this long, it is proposed again
    /// (etcd: the request timeout).
    pub revoke_retry: Duration,
}

impl Default for LessorOptions {
    fn default() -> Self {
        LessorOptions {
            min_ttl: 2,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            revoke_rate: REVOKE_RATE,
            revoke_retry: Duration::from_secs(3),
        }
    }
}

/// A lease change made by an applied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked { id: i64 },
    Checkpointed { id: i64, remaining: i64 },
}

impl LeaseChange {
    /// The lease changes of one successfully applied request, appended to `out`.
    pub fn collect(req: &Request, result: &WriteResult, out: &mut Vec<LeaseChange>) {
        match (req, result) {
            (Request::LeaseGrant(_), WriteResult::LeaseGrant { id, ttl, .. }) => {
                out.push(LeaseChange::Granted { id: *id, ttl: *ttl })
            }
            (Request::LeaseRevoke(r), WriteResult::LeaseRevoke { .. }) => {
                out.push(LeaseChange::Revoked { id: r.id })
            }
            (Request::LeaseCheckpoint(c), WriteResult::LeaseCheckpoint { .. }) => out.extend(
                c.checkpoints
                    .iter()
                    .map(|&(id, remaining)| LeaseChange::Checkpointed { id, remaining }),
            ),
            _ => {}
        }
    }
}

/// etcd's idutil.Generator: the member id's low 16 bits, then a 40-bit millisecond timestamp taken
/// at startup and an 8-bit counter that increments (and may carry into the timestamp).
#[derive(Debug, Clone)]
struct IdGen {
    prefix: u64,
    suffix: u64,
}

const SUFFIX_BITS: u32 = 48;

impl IdGen {
    fn new(member_id: u64, unix_ms: u64) -> IdGen {
        IdGen {
            prefix: (member_id & 0xffff) << SUFFIX_BITS,
            suffix: (unix_ms & ((1 << 40) - 1)) << 8,
        }
    }
    fn next(&mut self) -> u64 {
        self.suffix = self.suffix.wrapping_add(1);
        self.prefix | (self.suffix & ((1 << SUFFIX_BITS) - 1))
    }
}

#[derive(Debug, Clone)]
struct Lease {
    ttl: i64,
    /// Remaining TTL at the last applied checkpoint (0: none).
    remaining: i64,
    expiry: Instant,
    /// When this lease is next looked at by the expiry scan: its expiry, or once expired, when its
    /// revoke is retried. Heap entries with another time are stale.
    due: Instant,
}

impl Lease {
    /// etcd's RemainingTTL: the checkpointed remaining TTL if set, else the granted TTL.
    fn remaining_ttl(&self) -> i64 {
        if self.remaining > 0 {
            self.remaining
        } else {
            self.ttl
        }
    }
}

/// What a renewal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    /// The granted TTL (what keep-alive answers).
    pub ttl: i64,
    /// The lease had a checkpointed remaining TTL: propose a checkpoint clearing it (remaining 0),
    /// or a restart would shorten the renewed lease (etcd does the same).
    pub clear_checkpoint: bool,
}

/// etcd's LeaseTimeToLive answer for an existing lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeToLive {
    /// Remaining seconds, truncated (etcd: `int64(Remaining().Seconds())`), never negative.
    pub ttl: i64,
    pub granted_ttl: i64,
}

pub struct Lessor {
    opts: LessorOptions,
    leases: HashMap<i64, Lease>,
    /// (due, id), earliest first; stale entries are skipped.
    expiries: BinaryHeap<Reverse<(Instant, i64)>>,
    /// (time of the next checkpoint, id), earliest first.
    checkpoints: BinaryHeap<Reverse<(Instant, i64)>>,
    ids: IdGen,
    /// Revokes that may be proposed now, as time at `revoke_rate` (a token bucket).
    revoke_credit: Duration,
    last_refill: Instant,
}

impl Lessor {
    /// A lessor over the stored leases: each expires `remaining` seconds from `now` if it was
    /// checkpointed, else its full TTL from `now` (etcd's Promote with checkpoints persisted).
    pub fn new(
        opts: LessorOptions,
        member_id: u64,
        unix_ms: u64,
        stored: &[LeaseInfo],
        now: Instant,
    ) -> Lessor {
        let mut l = Lessor {
            revoke_credit: Duration::from_millis(500),
            opts,
            leases: HashMap::with_capacity(stored.len()),
            expiries: BinaryHeap::new(),
            checkpoints: BinaryHeap::new(),
            ids: IdGen::new(member_id, unix_ms),
            last_refill: now,
        };
        for info in stored {
            let lease = Lease {
                ttl: info.ttl,
                remaining: info.remaining,
                expiry: now,
                due: now,
            };
            let secs = lease.remaining_ttl();
            l.leases.insert(info.id, lease);
            l.set_expiry(info.id, now + secs_duration(secs));
            l.schedule_checkpoint(info.id, now);
        }
        l
    }

    /// Replaces every lease with `stored` (a Raft snapshot was installed), as [`Lessor::new`]
    /// would load them; lease ids keep coming from the same generator.
    pub fn reload(&mut self, stored: &[LeaseInfo], now: Instant) {
        self.leases.clear();
        self.expiries.clear();
        self.checkpoints.clear();
        for info in stored {
            let lease = Lease {
                ttl: info.ttl,
                remaining: info.remaining,
                expiry: now,
                due: now,
            };
            let secs = lease.remaining_ttl();
            self.leases.insert(info.id, lease);
            self.set_expiry(info.id, now + secs_duration(secs));
            self.schedule_checkpoint(info.id, now);
        }
    }

    /// This member became the leader (or finished replaying its log as a lone member): every lease
    /// expires its remaining TTL from `now` — the checkpointed one if any, else the full TTL
    /// (etcd's Promote with persisted checkpoints). Checkpoints replayed from the log only set the
    /// remaining TTL; this is where they take effect.
    pub fn promote(&mut self, now: Instant) {
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        self.expiries.clear();
        self.checkpoints.clear();
        for id in ids {
            let secs = self.leases[&id].remaining_ttl();
            self.set_expiry(id, now + secs_duration(secs));
            self.schedule_checkpoint(id, now);
        }
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The grant to propose for a client's request: `id` 0 gets a fresh id, a TTL below the
    /// minimum is raised to it. (A TTL above [`MAX_LEASE_TTL`] is refused before this; an id in
    /// use is refused when the grant is applied.)
    pub fn grant_request(&mut self, id: i64, ttl: i64) -> LeaseGrantRequest {
        let mut id = id;
        while id == 0 {
            // Only positive ids, as etcd.
            let candidate = (self.ids.next() & (i64::MAX as u64)) as i64;
            if !self.leases.contains_key(&candidate) {
                id = candidate;
            }
        }
        LeaseGrantRequest {
            id,
            ttl: ttl.max(self.opts.min_ttl),
        }
    }

    /// Applies the lease changes of an applied batch; a granted lease's expiry starts `now`.
    pub fn applied(&mut self, changes: &[LeaseChange], now: Instant) {
        for c in changes {
            match *c {
                LeaseChange::Granted { id, ttl } => {
                    crate::metrics::LEASES_GRANTED.inc();
                    crate::metrics::LEASE_TTL_SECONDS.observe(ttl as f64);
                    self.leases.insert(
                        id,
                        Lease {
                            ttl,
                            remaining: 0,
                            expiry: now,
                            due: now,
                        },
                    );
                    self.set_expiry(id, now + secs_duration(ttl));
                    self.schedule_checkpoint(id, now);
                }
                LeaseChange::Revoked { id } => {
                    crate::metrics::LEASES_REVOKED.inc();
                    self.leases.remove(&id);
                }
                LeaseChange::Checkpointed { id, remaining } => {
                    if let Some(l) = self.leases.get_mut(&id) {
                        l.remaining = remaining;
                        self.schedule_checkpoint(id, now);
                    }
                }
            }
        }
        self.compact_heaps();
    }

    /// etcd's Renew: the lease expires its granted TTL from `now`. `None` for a lease that does not
    /// exist or has expired (its revoke is pending).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<Renewed> {
        let l = self.leases.get_mut(&id)?;
        if l.expiry <= now {
            return None;
        }
        let clear_checkpoint = l.remaining > 0;
        l.remaining = 0;
        let ttl = l.ttl;
        self.set_expiry(id, now + secs_duration(ttl));
        crate::metrics::LEASES_RENEWED.inc();
        Some(Renewed {
            ttl,
            clear_checkpoint,
        })
    }

    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<TimeToLive> {
        let l = self.leases.get(&id)?;
        Some(TimeToLive {
            ttl: l.expiry.saturating_duration_since(now).as_secs() as i64,
            granted_ttl: l.ttl,
        })
    }

    /// Every lease id, soonest expiry first (etcd's Leases order).
    pub fn ids_by_expiry(&self) -> Vec<i64> {
        let mut v: Vec<(Instant, i64)> =
            self.leases.iter().map(|(id, l)| (l.expiry, *id)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The expired leases to revoke now, earliest first, at most what the revoke rate allows. Each
    /// is proposed again after `revoke_retry` if its revoke has not been applied by then.
    pub fn expired(&mut self, now: Instant) -> Vec<i64> {
        // Time-based credit, at most half a second's worth (etcd revokes rate/2 every 500 ms); each
        // revoke costs 1/rate s.
        let cost = Duration::from_secs(1) / self.opts.revoke_rate.max(1);
        let elapsed = now.saturating_duration_since(self.last_refill);
        self.revoke_credit = (self.revoke_credit + elapsed).min(Duration::from_millis(500));
        self.last_refill = now;
        let mut out = Vec::new();
        while self.revoke_credit >= cost {
            let Some(&Reverse((due, id))) = self.expiries.peek() else {
                break;
            };
            if due > now {
                break;
            }
            self.expiries.pop();
            let retry = now + self.opts.revoke_retry;
            match self.leases.get_mut(&id) {
                Some(l) if l.due == due && l.expiry <= now => {
                    l.due = retry;
                    self.expiries.push(Reverse((retry, id)));
                    self.revoke_credit -= cost;
                    out.push(id);
                }
                _ => {} // stale entry
            }
        }
        out
    }

    /// (id, remaining seconds, rounded up) of the leases whose scheduled checkpoint is due, at most
    /// [`MAX_CHECKPOINT_BATCH`]; leases whose remaining TTL is still their full TTL are skipped
    /// (etcd's findDueScheduledCheckpoints). The next one is scheduled when this one is applied.
    pub fn due_checkpoints(&mut self, now: Instant) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while out.len() < MAX_CHECKPOINT_BATCH {
            let Some(&Reverse((at, id))) = self.checkpoints.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.checkpoints.pop();
            let Some(l) = self.leases.get(&id) else {
                continue;
            };
            if l.expiry <= now {
                continue;
            }
            let left = l.expiry - now;
            let remaining = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
            if remaining >= l.ttl {
                continue;
            }
            out.push((id, remaining));
        }
        out
    }

    fn set_expiry(&mut self, id: i64, expiry: Instant) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.expiry = expiry;
            l.due = expiry;
            self.expiries.push(Reverse((expiry, id)));
        }
    }

    /// etcd's scheduleCheckpointIfNeeded: only a lease with more left than one interval.
    fn schedule_checkpoint(&mut self, id: i64, now: Instant) {
        let Some(l) = self.leases.get(&id) else {
            return;
        };
        if l.remaining_ttl() > self.opts.checkpoint_interval.as_secs() as i64 {
            self.checkpoints
                .push(Reverse((now + self.opts.checkpoint_interval, id)));
        }
    }

    /// Renewals leave stale heap entries behind; rebuild when they dominate.
    fn compact_heaps(&mut self) {
        let limit = 4 * self.leases.len() + 1024;
        if self.expiries.len() > limit {
            let leases = &self.leases;
            self.expiries
                .retain(|Reverse((due, id))| leases.get(id).is_some_and(|l| l.due == *due));
        }
        if self.checkpoints.len() > limit {
            let leases = &self.leases;
            self.checkpoints
                .retain(|Reverse((_, id))| leases.contains_key(id));
        }
    }

    /// Drops stale entries if renewals piled them up (call now and then, e.g. per tick).
    pub fn maintain(&mut self) {
        self.compact_heaps();
    }
}

fn secs_duration(secs: i64) -> Duration {
    Duration::from_secs(secs.max(0) as u64)
}

// ---- the cores' side ----

/// Leases listed: ids, soonest expiry first.
pub type LeaseIds = Vec<i64>;

/// A call from some core to the lessor on the sequencer core. Each carries its reply channel.
pub enum LeaseCall {
    /// Grant (the id chosen when 0, the TTL raised to the minimum) through Raft.
    Grant { id: i64, ttl: i64, reply: Reply },
    /// Renew: the granted TTL, or 0 for a missing or expired lease.
    KeepAlive {
        id: i64,
        reply: flume::Sender<Result<i64, ProposeError>>,
    },
    TimeToLive {
        id: i64,
        reply: flume::Sender<Result<Option<TimeToLive>, ProposeError>>,
    },
    Leases {
        reply: flume::Sender<Result<LeaseIds, ProposeError>>,
    },
}

/// Reaches the lessor from any core; cheap to clone. Each call is one message on a bounded queue
/// (a full queue makes callers wait) and one reply.
#[derive(Clone)]
pub struct LeaseHandle {
    tx: flume::Sender<LeaseCall>,
}

impl LeaseHandle {
    /// A handle and the queue the sequencer serves.
    pub fn channel(depth: usize) -> (LeaseHandle, flume::Receiver<LeaseCall>) {
        let (tx, rx) = flume::bounded(depth);
        (LeaseHandle { tx }, rx)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(flume::Sender<Result<T, ProposeError>>) -> LeaseCall,
    ) -> Result<T, ProposeError> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send_async(make(reply))
            .await
            .map_err(|_| ProposeError::Stopped)?;
        rx.recv_async().await.map_err(|_| ProposeError::Stopped)?
    }

    /// Grants a lease; answers the applied `WriteResult::LeaseGrant`.
    pub async fn grant(&self, id: i64, ttl: i64) -> Result<WriteResult, ProposeError> {
        self.call(|reply| LeaseCall::Grant { id, ttl, reply }).await
    }

    pub async fn keep_alive(&self, id: i64) -> Result<i64, ProposeError> {
        self.call(|reply| LeaseCall::KeepAlive { id, reply }).await
    }

    pub async fn time_to_live(&self, id: i64) -> Result<Option<TimeToLive>, ProposeError> {
        self.call(|reply| LeaseCall::TimeToLive { id, reply }).await
    }

    pub async fn leases(&self) -> Result<LeaseIds, ProposeError> {
        self.call(|reply| LeaseCall::Leases { reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LessorOptions {
        LessorOptions {
            min_ttl: 2,
            checkpoint_interval: Duration::from_secs(5),
            revoke_rate: 1000,
            revoke_retry: Duration::from_secs(3),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn granted(l: &mut Lessor, id: i64, ttl: i64, now: Instant) {
        l.applied(&[LeaseChange::Granted { id, ttl }], now);
    }

    #[test]
    fn min_ttl_is_etcds() {
        // etcd: ceil(⌊3·electionTicks/2⌋ · heartbeat).
        assert_eq!(min_lease_ttl(Duration::from_millis(100), 10), 2);
        assert_eq!(min_lease_ttl(Duration::from_millis(100), 5), 1);
        assert_eq!(min_lease_ttl(Duration::from_millis(1000), 2), 3);
    }

    #[test]
    fn grant_picks_unique_positive_ids_and_raises_the_ttl() {
        let t0 = Instant::now();
        let mut l = Lessor::new(opts(), 0xffff_1234, 1_700_000_000_000, &[], t0);
        let a = l.grant_request(0, 1);
        assert_eq!(a.ttl, 2);
        assert!(a.id > 0);
        assert_eq!((a.id as u64) >> 48, 0x1234);
        granted(&mut l, a.id, a.ttl, t0);
        let b = l.grant_request(0, 60);
        assert!(b.id > 0 && b.id != a.id);
        assert_eq!(b.ttl, 60);
        assert_eq!(l.grant_request(7, 10).id, 7);
        // A member id with bit 15 set still gives positive ids.
        let mut m = Lessor::new(opts(), 0x8000, u64::MAX, &[], t0);
        for _ in 0..300 {
            assert!(m.grant_request(0, 5).id > 0);
        }
    }

    #[test]
    fn expiry_order_and_renew() {
        let t0 = Instant::now();
        let mut l = Lessor::new(opts(), 1, 0, &[], t0);
        granted(&mut l, 1, 10, t0);
        granted(&mut l, 2, 5, t0);
        granted(&mut l, 3, 7, t0);
        assert_eq!(l.ids_by_expiry(), vec![2, 3, 1]);
        assert!(l.expired(t0 + s(4)).is_empty());
        // Lease 2 renewed at 4 s now expires at 9 s, after 3 (7 s).
        assert_eq!(
            l.renew(2, t0 + s(4)),
            Some(Renewed {
                ttl: 5,
                clear_checkpoint: false
            })
        );
        assert_eq!(l.ids_by_expiry(), vec![3, 2, 1]);
        assert_eq!(l.expired(t0 + s(7)), vec![3]);
        assert_eq!(l.expired(t0 + Duration::from_millis(9999)), vec![2]);
        // Lease 3's revoke was not applied within the retry interval: proposed again.
        assert_eq!(l.expired(t0 + s(10)), vec![1, 3]);
        // Expired and not yet revoked: no renewal, no second proposal before the retry.
        assert_eq!(l.renew(1, t0 + s(10)), None);
        assert!(l.expired(t0 + s(11)).is_empty());
        assert_eq!(l.time_to_live(1, t0 + s(11)).map(|t| t.ttl), Some(0));
        // Lease 3's revoke is applied; 2 and 1 are proposed again after the retry interval.
        l.applied(&[LeaseChange::Revoked { id: 3 }], t0 + s(11));
        assert_eq!(l.expired(t0 + s(13)), vec![2, 1]);
        assert_eq!(l.renew(3, t0 + s(13)), None);
        assert_eq!(l.time_to_live(3, t0 + s(13)), None);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn revokes_are_rate_limited() {
        let t0 = Instant::now();
        let mut o = opts();
        o.revoke_rate = 10;
        let mut l = Lessor::new(o, 1, 0, &[], t0);
        for id in 1..=30 {
            granted(&mut l, id, 2, t0);
        }
        // Half a second's worth at once, refilled at the rate.
        assert_eq!(l.expired(t0 + s(2)).len(), 5);
        assert_eq!(l.expired(t0 + s(2)).len(), 0);
        assert_eq!(l.expired(t0 + Duration::from_millis(2300)).len(), 3);
        assert_eq!(l.expired(t0 + s(3)).len(), 5);
        assert_eq!(l.expired(t0 + s(4)).len(), 5);
    }

    #[test]
    fn time_to_live_truncates_like_etcd() {
        let t0 = Instant::now();
        let mut l = Lessor::new(opts(), 1, 0, &[], t0);
        granted(&mut l, 9, 60, t0);
        let t = l.time_to_live(9, t0 + Duration::from_millis(300)).unwrap();
        assert_eq!((t.ttl, t.granted_ttl), (59, 60));
        assert_eq!(l.time_to_live(8, t0), None);
    }

    #[test]
    fn restart_uses_the_checkpointed_remaining_ttl() {
        let t0 = Instant::now();
        let stored = [
            LeaseInfo {
                id: 1,
                ttl: 100,
                remaining: 20,
            },
            LeaseInfo {
                id: 2,
                ttl: 30,
                remaining: 0,
            },
        ];
        let mut l = Lessor::new(opts(), 1, 0, &stored, t0);
        // A checkpoint replayed from the log takes effect at promotion.
        l.applied(
            &[LeaseChange::Checkpointed {
                id: 2,
                remaining: 25,
            }],
            t0,
        );
        assert_eq!(l.time_to_live(2, t0).unwrap().ttl, 30);
        l.promote(t0);
        assert_eq!(l.time_to_live(1, t0).unwrap().ttl, 20);
        assert_eq!(l.time_to_live(2, t0).unwrap().ttl, 25);
        l.applied(
            &[LeaseChange::Checkpointed {
                id: 2,
                remaining: 0,
            }],
            t0,
        );
        l.promote(t0);
        assert_eq!(l.time_to_live(2, t0).unwrap().ttl, 30);
        assert_eq!(l.ids_by_expiry(), vec![1, 2]);
        assert_eq!(l.expired(t0 + s(20)), vec![1]);
        // Renewing a checkpointed lease clears its checkpoint and gives the full TTL.
        let mut l = Lessor::new(opts(), 1, 0, &stored, t0);
        assert_eq!(
            l.renew(1, t0 + s(1)),
            Some(Renewed {
                ttl: 100,
                clear_checkpoint: true
            })
        );
        assert_eq!(l.time_to_live(1, t0 + s(1)).unwrap().ttl, 100);
        assert!(!l.renew(1, t0 + s(2)).unwrap().clear_checkpoint);
    }

    #[test]
    fn checkpoints_record_the_remaining_ttl_of_long_leases() {
        let t0 = Instant::now();
        let mut l = Lessor::new(opts(), 1, 0, &[], t0);
        granted(&mut l, 1, 20, t0);
        // Not longer than one interval: never checkpointed.
        granted(&mut l, 2, 5, t0);
        assert!(l.due_checkpoints(t0 + s(4)).is_empty());
        let due = l.due_checkpoints(t0 + Duration::from_millis(5200));
        assert_eq!(due, vec![(1, 15)]);
        assert!(l.due_checkpoints(t0 + s(9)).is_empty());
        // Its application schedules the next one.
        l.applied(
            &[LeaseChange::Checkpointed {
                id: 1,
                remaining: 15,
            }],
            t0 + s(6),
        );
        assert_eq!(l.due_checkpoints(t0 + s(11)), vec![(1, 9)]);
        // A lease renewed to its full TTL is not checkpointed.
        granted(&mut l, 3, 20, t0 + s(11));
        l.renew(3, t0 + s(16));
        assert!(l.due_checkpoints(t0 + s(16)).is_empty());
    }

    #[test]
    fn changes_of_applied_requests() {
        use retcd_engine::request::{LeaseCheckpointRequest, LeaseRevokeRequest};
        let mut out = Vec::new();
        LeaseChange::collect(
            &Request::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 9 }),
            &WriteResult::LeaseGrant {
                revision: 1,
                id: 5,
                ttl: 9,
            },
            &mut out,
        );
        LeaseChange::collect(
            &Request::LeaseRevoke(LeaseRevokeRequest { id: 5 }),
            &WriteResult::LeaseRevoke { revision: 2 },
            &mut out,
        );
        LeaseChange::collect(
            &Request::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: vec![(6, 3), (7, 4)],
            }),
            &WriteResult::LeaseCheckpoint { revision: 2 },
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                LeaseChange::Granted { id: 5, ttl: 9 },
                LeaseChange::Revoked { id: 5 },
                LeaseChange::Checkpointed {
                    id: 6,
                    remaining: 3
                },
                LeaseChange::Checkpointed {
                    id: 7,
                    remaining: 4
                },
            ]
        );
    }

    #[test]
    fn stale_heap_entries_are_dropped() {
        let t0 = Instant::now();
        let mut l = Lessor::new(opts(), 1, 0, &[], t0);
        granted(&mut l, 1, 100, t0);
        for i in 0..5000 {
            l.renew(1, t0 + Duration::from_millis(i));
        }
        l.maintain();
        assert!(l.expiries.len() <= 1028);
        assert_eq!(l.expired(t0 + s(105)), vec![1]);
    }
}
