//! A linearizability checker for key-value histories, in the manner of porcupine (Wing & Gong's
//! search with Lowe's memoization): is there a total order of the operations, consistent with
//! their real-time order (an operation that returned before another was invoked comes first),
//! in which every read returns the value of the latest write?
//!
//! A key-value map is linearizable exactly when each key's history is (linearizability is
//! compositional), so histories are checked key by key. A write whose outcome is unknown (an
//! error or timeout: it may or may not have happened) is an operation that never returned; it
//! may be ordered anywhere after its invocation, including after everything else (= never
//! observed). Failed reads tell nothing and are left out by the recorder.

use std::collections::{HashMap, HashSet};

/// One operation on one key, with its invocation and response times (any monotonic unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub key: String,
    pub call: u64,
    /// `None`: the outcome is unknown (only for writes).
    pub ret: Option<u64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Sets the value.
    Put(String),
    /// Read this value (`None`: the key did not exist).
    Get(Option<String>),
}

/// Why a history is not linearizable: the key and its operations.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    pub ops: Vec<Op>,
}

/// Checks every key's history; the first key that cannot be linearized is returned.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    check_bounded(history, u64::MAX).map(|_| ())
}

/// [`check`] with at most `budget` search steps per key (the search is exponential in the
/// number of overlapping operations at worst). `Ok(false)`: some key ran out of budget before
/// an order was found or ruled out, so the history is neither proven nor refuted there.
#[allow(dead_code)]
pub fn check_bounded(history: &[Op], budget: u64) -> Result<bool, Violation> {
    let mut by_key: HashMap<&str, Vec<Op>> = HashMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut conclusive = true;
    for key in keys {
        let ops = &by_key[key];
        match check_key(ops, budget) {
            Some(true) => {}
            Some(false) => {
                return Err(Violation {
                    key: key.to_string(),
                    ops: ops.clone(),
                });
            }
            None => conclusive = false,
        }
    }
    Ok(conclusive)
}

/// An event of the search list: an operation's call or return, in time order.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// Index of the matching event (call ↔ return).
    pair: usize,
    prev: usize,
    next: usize,
}

/// Wing & Gong's search over one key's operations, memoizing (linearized set, state) pairs;
/// `None` once `budget` steps were taken without an answer.
fn check_key(ops: &[Op], budget: u64) -> Option<bool> {
    let n = ops.len();
    if n == 0 {
        return Some(true);
    }
    // Events sorted by time; at equal times calls come before returns (touching intervals
    // overlap), and unknown returns go last.
    let mut raw: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        raw.push((op.call, true, i));
        raw.push((op.ret.unwrap_or(u64::MAX), false, i));
    }
    raw.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    // Node 0 is the head sentinel; events are 1..=2n.
    let mut ev = vec![
        Event {
            op: usize::MAX,
            is_call: false,
            pair: 0,
            prev: 0,
            next: 0,
        };
        2 * n + 1
    ];
    let mut call_at = vec![0; n];
    for (pos, &(_, is_call, op)) in raw.iter().enumerate() {
        let idx = pos + 1;
        ev[idx] = Event {
            op,
            is_call,
            pair: 0,
            prev: idx - 1,
            next: if pos + 1 < raw.len() { idx + 1 } else { 0 },
        };
        if is_call {
            call_at[op] = idx;
        } else {
            let c = call_at[op];
            ev[idx].pair = c;
            ev[c].pair = idx;
        }
    }
    ev[0].next = 1;

    let lift = |ev: &mut Vec<Event>, c: usize| {
        let r = ev[c].pair;
        let (p, nx) = (ev[c].prev, ev[c].next);
        ev[p].next = nx;
        ev[nx].prev = p;
        let (p, nx) = (ev[r].prev, ev[r].next);
        ev[p].next = nx;
        if nx != 0 {
            ev[nx].prev = p;
        }
    };
    let unlift = |ev: &mut Vec<Event>, c: usize| {
        let r = ev[c].pair;
        let (p, nx) = (ev[r].prev, ev[r].next);
        ev[p].next = r;
        if nx != 0 {
            ev[nx].prev = r;
        }
        let (p, nx) = (ev[c].prev, ev[c].next);
        ev[p].next = c;
        ev[nx].prev = c;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut state: Option<String> = None;
    let mut entry = ev[0].next;
    let mut steps = 0u64;
    // Bounded: each (linearized set, state) is tried once; the cache bounds the search, and
    // `budget` bounds it further.
    loop {
        steps += 1;
        if steps > budget {
            return None;
        }
        if ev[0].next == 0 {
            return Some(true);
        }
        if entry != 0 && ev[entry].is_call {
            let op = &ops[ev[entry].op];
            let (ok, next_state) = match &op.kind {
                Kind::Put(v) => (true, Some(v.clone())),
                Kind::Get(seen) => (*seen == state, state.clone()),
            };
            if ok {
                let i = ev[entry].op;
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), next_state.clone())) {
                    stack.push((entry, state.clone()));
                    state = next_state;
                    lift(&mut ev, entry);
                    entry = ev[0].next;
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = ev[entry].next;
        } else {
            // A return whose operation is not linearized yet (or the end): backtrack.
            let Some((e, s)) = stack.pop() else {
                return Some(false);
            };
            let i = ev[e].op;
            linearized[i / 64] &= !(1 << (i % 64));
            state = s;
            unlift(&mut ev, e);
            entry = ev[e].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(call: u64, ret: Option<u64>, v: &str) -> Op {
        Op {
            key: "k".into(),
            call,
            ret,
            kind: Kind::Put(v.into()),
        }
    }
    fn get(call: u64, ret: u64, v: Option<&str>) -> Op {
        Op {
            key: "k".into(),
            call,
            ret: Some(ret),
            kind: Kind::Get(v.map(String::from)),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        // Sequential: put a, get a, put b, get b.
        assert!(
            check(&[
                put(0, Some(1), "a"),
                get(2, 3, Some("a")),
                put(4, Some(5), "b"),
                get(6, 7, Some("b"))
            ])
            .is_ok()
        );
        // A read of the value before any write.
        assert!(check(&[get(0, 1, None), put(2, Some(3), "a")]).is_ok());
        // Concurrent writes: a read may see either, but two later reads must agree on the order.
        assert!(
            check(&[
                put(0, Some(10), "a"),
                put(0, Some(10), "b"),
                get(11, 12, Some("a"))
            ])
            .is_ok()
        );
        assert!(
            check(&[
                put(0, Some(10), "a"),
                put(0, Some(10), "b"),
                get(11, 12, Some("a")),
                get(13, 14, Some("b"))
            ])
            .is_err()
        );
    }

    #[test]
    fn stale_reads_and_lost_writes_are_caught() {
        // A read after an acknowledged write sees the old value: stale.
        assert!(
            check(&[
                put(0, Some(1), "a"),
                put(2, Some(3), "b"),
                get(4, 5, Some("a"))
            ])
            .is_err()
        );
        // An acknowledged write never observed although a later read ran after it: lost.
        assert!(check(&[put(0, Some(1), "a"), get(2, 3, None)]).is_err());
        // A value nobody wrote.
        assert!(check(&[get(0, 1, Some("z"))]).is_err());
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        // Never observed: fine.
        assert!(check(&[put(0, None, "a"), get(5, 6, None)]).is_ok());
        // Observed later: fine.
        assert!(check(&[put(0, None, "a"), get(5, 6, Some("a"))]).is_ok());
        // Observed, then not: it cannot un-happen.
        assert!(check(&[put(0, None, "a"), get(5, 6, Some("a")), get(7, 8, None)]).is_err());
        // Not before it was invoked.
        assert!(check(&[get(0, 1, Some("a")), put(2, None, "a")]).is_err());
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = vec![put(0, Some(1), "a")];
        h.push(Op {
            key: "other".into(),
            ..get(2, 3, None)
        });
        assert!(check(&h).is_ok());
    }
}
