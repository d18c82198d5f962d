//! etcd's simple auth tokens on this member: `<random prefix>.<raft index>`, handed out by the
//! apply of an Authenticate on every member (so a token works on whichever member a client
//! reaches next), kept in memory only (a restarted member knows none, as in etcd), valid for
//! `--auth-token-ttl` after their last use. With JWT tokens (net/src/auth/jwt.rs) the
//! Authenticate carries no token prefix, the apply hands out no token and this table stays empty.
//!
//! Written by the apply on the sequencer core ([`SimpleTokens::on_applied`]), read by every
//! core's services ([`SimpleTokens::user`]). Invariants: a user's tokens die with a change of
//! their password or their deletion, all tokens die when auth is disabled; the table is bounded
//! by the Authenticate rate times the TTL (expired tokens are swept every few hundred
//! assignments and dropped when looked up).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use retcd_engine::auth::AuthOutcome;
use retcd_engine::mvcc::{MvccError, WriteResult};
use retcd_engine::request::{AuthRequest, Request};

const SHARDS: usize = 16;
/// Assignments between two sweeps of expired tokens.
const SWEEP_EVERY: u64 = 256;

struct Entry {
    user: String,
    /// Milliseconds since `SimpleTokens::epoch` of the last use.
    last_used: AtomicU64,
}

pub struct SimpleTokens {
    shards: [RwLock<HashMap<String, Entry>>; SHARDS],
    ttl_ms: u64,
    epoch: Instant,
    assigned: AtomicU64,
    /// Entries up to this index were in the log before this run started (the WAL's replay):
    /// their tokens died with the previous run, as etcd's do.
    replayed_to: AtomicU64,
}

fn shard_of(token: &str) -> usize {
    // FNV-1a: tokens are random already, any spread will do.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in token.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    (h % SHARDS as u64) as usize
}

impl SimpleTokens {
    /// Tokens living `ttl` after their last use; 0 means etcd's default, 300 s (etcd's
    /// tokenSimple takes a TTL ≤ 0 as the default).
    pub fn new(ttl: Duration) -> SimpleTokens {
        let ttl = if ttl.is_zero() {
            Duration::from_secs(300)
        } else {
            ttl
        };
        SimpleTokens {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            ttl_ms: ttl.as_millis().max(1) as u64,
            epoch: Instant::now(),
            assigned: AtomicU64::new(0),
            replayed_to: AtomicU64::new(0),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Entries up to `index` are a replay of an earlier run: they hand out no token.
    pub fn replayed_to(&self, index: u64) {
        self.replayed_to.store(index, Ordering::Relaxed);
    }

    pub fn assign(&self, token: &str, user: &str, now: Instant) {
        let entry = Entry {
            user: user.to_string(),
            last_used: AtomicU64::new(self.ms(now)),
        };
        self.shards[shard_of(token)]
            .write()
            .expect("token shard poisoned")
            .insert(token.to_string(), entry);
        if self.assigned.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now);
        }
    }

    /// The user of a live token, renewing it (etcd resets a simple token's TTL on each use).
    pub fn user(&self, token: &str, now: Instant) -> Option<String> {
        let now_ms = self.ms(now);
        let shard = &self.shards[shard_of(token)];
        {
            let map = shard.read().expect("token shard poisoned");
            let e = map.get(token)?;
            let last = e.last_used.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) < self.ttl_ms {
                e.last_used.fetch_max(now_ms, Ordering::Relaxed);
                return Some(e.user.clone());
            }
        }
        shard.write().expect("token shard poisoned").remove(token);
        None
    }

    pub fn invalidate_user(&self, user: &str) {
        for s in &self.shards {
            s.write()
                .expect("token shard poisoned")
                .retain(|_, e| e.user != user);
        }
    }

    pub fn clear(&self) {
        for s in &self.shards {
            s.write().expect("token shard poisoned").clear();
        }
    }

    pub fn sweep(&self, now: Instant) {
        let now_ms = self.ms(now);
        for s in &self.shards {
            s.write().expect("token shard poisoned").retain(|_, e| {
                now_ms.saturating_sub(e.last_used.load(Ordering::Relaxed)) < self.ttl_ms
            });
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("token shard poisoned").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the request applied at `index`: a token handed out, a user's tokens or every
    /// token dropped.
    pub fn on_applied(
        &self,
        index: u64,
        req: &Request,
        result: &Result<WriteResult, MvccError>,
        now: Instant,
    ) {
        let Request::Auth(a) = req else { return };
        let Ok(WriteResult::Auth { outcome, .. }) = result else {
            return;
        };
        match (a, outcome) {
            (AuthRequest::Authenticate { .. }, AuthOutcome::Token { user, token, .. })
                if !token.is_empty() && index > self.replayed_to.load(Ordering::Relaxed) =>
            {
                self.assign(token, user, now);
            }
            (AuthRequest::UserDelete { name }, _)
            | (AuthRequest::UserChangePassword { name, .. }, _) => self.invalidate_user(name),
            (AuthRequest::Disable, _) => self.clear(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_after_their_last_use() {
        let t = SimpleTokens::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.assign("abc.5", "alice", t0);
        assert_eq!(
            t.user("abc.5", t0 + Duration::from_secs(9)).as_deref(),
            Some("alice")
        );
        // Renewed at 9 s: still valid at 18 s, gone 10 s after that use.
        assert!(t.user("abc.5", t0 + Duration::from_secs(18)).is_some());
        assert!(t.user("abc.5", t0 + Duration::from_secs(29)).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn user_changes_drop_their_tokens() {
        let t = SimpleTokens::new(Duration::from_secs(300));
        let now = Instant::now();
        t.assign("a.1", "alice", now);
        t.assign("a.2", "alice", now);
        t.assign("b.3", "bob", now);
        t.invalidate_user("alice");
        assert_eq!(t.len(), 1);
        assert!(t.user("b.3", now).is_some());
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn a_replayed_authenticate_hands_out_no_token() {
        use retcd_engine::mvcc::WriteResult;
        let t = SimpleTokens::new(Duration::from_secs(300));
        t.replayed_to(10);
        let req = Request::Auth(AuthRequest::Authenticate {
            name: "alice".into(),
            token_prefix: "p".into(),
            checked_revision: 1,
        });
        let applied = |token: &str| {
            Ok(WriteResult::Auth {
                revision: 1,
                outcome: AuthOutcome::Token {
                    user: "alice".into(),
                    token: token.into(),
                    revision: 1,
                },
            })
        };
        let now = Instant::now();
        t.on_applied(10, &req, &applied("p.10"), now);
        t.on_applied(11, &req, &applied("p.11"), now);
        assert!(t.user("p.10", now).is_none());
        assert_eq!(t.user("p.11", now).as_deref(), Some("alice"));
    }

    #[test]
    fn sweeps_bound_the_table() {
        let t = SimpleTokens::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..SWEEP_EVERY {
            t.assign(&format!("x.{i}"), "u", t0);
        }
        let later = t0 + Duration::from_secs(5);
        for i in 0..SWEEP_EVERY {
            t.assign(&format!("y.{i}"), "u", later);
        }
        assert_eq!(t.len(), SWEEP_EVERY as usize);
    }
}
