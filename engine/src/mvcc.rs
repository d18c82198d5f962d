//! etcd's multi-version semantics on the page store (DESIGN.md §4, §5): revisions, Range at a
//! revision, Put/DeleteRange/Txn/Compact, with etcd's errors.
//!
//! [`Mvcc`] is the single writer (the apply on the sequencer core); [`MvccReader`] is cloned to every
//! core and serves Range from the latest committed snapshot. Invariants: revisions only grow; one main
//! revision per request that changes something; a request that fails changes nothing; the applied
//! Raft index is committed in the same page-store transaction as the changes it produced.

mod defrag;
mod import;

pub use defrag::{Defrag, DefragNext, DefragReport};
pub use import::Imported;

use std::cmp::Ordering;
use std::collections::BTreeSet;

use rkyv::{Archive, Deserialize, Serialize, rancor};

use std::sync::Arc;

use crate::auth::{self, AuthError, AuthOutcome, AuthReader, AuthState, Denied, Touched};
use crate::btree::{
    self, Cursor, PageStore, Reader, Snapshot, Source, StoreOptions, Tag, WriteTxn,
};
use crate::etcd_keys::{self, BucketRevision, KeyValueRef};
use crate::page::StoreError;
use crate::request::{
    Caller, CompactRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, Request,
    RequestOp, TxnRequest, archive_into,
};

/// Whether a Txn puts anything, in either branch, at any depth (etcd's quota cost above zero).
fn txn_puts(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        RequestOp::Put(_) => true,
        RequestOp::Txn(inner) => txn_puts(inner),
        _ => false,
    })
}

/// Stored value of one version of a key (the `k` key space, §4.1).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Version {
    sub: u32,
    create_revision: i64,
    version: i64,
    lease: i64,
    tombstone: bool,
    value: Vec<u8>,
}

/// Stored state of one lease (the `l` key space).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct LeaseRecord {
    /// Granted TTL in seconds.
    ttl: i64,
    /// Remaining TTL at the last lease checkpoint (0: never checkpointed).
    remaining: i64,
}

/// A lease as the lessor and the Lease service see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl: i64,
    /// Remaining TTL at the last checkpoint; 0 when none was taken.
    pub remaining: i64,
}

/// etcd's mvccpb.Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as watchers see it: for a delete, `kv` holds the key and the deleting revision only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// etcd's mvccpb.KeyValue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    #[error("key not found")]
    KeyNotFound,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExist,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt record in page store: {0}")]
    Record(String),
    /// A NOSPACE alarm is raised: writes that add data are refused (etcd's capped applier).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised: every write is refused (etcd's corrupt applier).
    #[error("corrupt cluster")]
    Corrupt,
}

impl MvccError {
    /// Whether this member's own page store failed its checks (a page checksum, a record that
    /// does not parse): its data is damaged, not the request.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            MvccError::Store(StoreError::Corrupt { .. }) | MvccError::Record(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResult {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteResult {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResult {
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<OpResult>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Range(RangeResult),
    Put(PutResult),
    DeleteRange(DeleteResult),
    Txn(TxnResult),
}
/// Result of applying one [`Request`]; `revision` of the outer response is in each variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    Put(PutResult),
    DeleteRange(DeleteResult),
    Txn(TxnResult),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        revision: i64,
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    LeaseCheckpoint {
        revision: i64,
    },
    Auth {
        revision: i64,
        outcome: AuthOutcome,
    },
    /// etcd's answer: the alarm raised (newly or not) or cleared, `None` for a type NONE raised
    /// or an alarm cleared that was not raised; `changed` whether the set changed.
    Alarm {
        revision: i64,
        alarm: Option<Alarm>,
        changed: bool,
    },
}

pub use crate::etcd_db::{ALARM_CORRUPT, ALARM_NOSPACE, Alarm, alarm_name};

// Layout of the published tag.
const TAG_REV: usize = 0;
const TAG_COMPACT: usize = 1;
const TAG_APPLIED: usize = 2;
const TAG_TERM: usize = 3;

/// The compacted revision of a store that was never compacted (etcd's initial -1: Compact(0) is
/// accepted once). Stored as its two's-complement u64.
pub const NEVER_COMPACTED: i64 = -1;

const META_APPLIED: &[u8] = b"mapplied";
const META_REV: &[u8] = b"mrev";
const META_COMPACT: &[u8] = b"mcompact";
/// A compaction whose dropped versions are not all deleted yet: [next main, next sub, target]
/// (§4.9).
const META_COMPACTION: &[u8] = b"mcompaction";

/// Versions one deletion batch of a compaction deletes at most, and `r` entries it visits at
/// most (etcd's compaction batch limit: 1,000 revisions per backend transaction).
pub const COMPACTION_BATCH: usize = 1000;

/// Bytes of keys and values one transaction of a snapshot install takes at most (§4.7).
pub const INSTALL_BATCH_BYTES: usize = 4 << 20;
/// Entries one transaction of a snapshot install takes at most (§4.7).
pub const INSTALL_BATCH_ENTRIES: usize = 16_384;

/// How much one transaction of a snapshot install takes at most (whichever bound comes first;
/// the last entry of a transaction may take it past `bytes`). [`Mvcc::install`] uses
/// [`INSTALL_BATCH_BYTES`] and [`INSTALL_BATCH_ENTRIES`]; tests use small ones to cut the power
/// between many batches of a small state.
#[derive(Debug, Clone, Copy)]
pub struct InstallBatch {
    pub bytes: usize,
    pub entries: usize,
}

impl Default for InstallBatch {
    fn default() -> InstallBatch {
        InstallBatch {
            bytes: INSTALL_BATCH_BYTES,
            entries: INSTALL_BATCH_ENTRIES,
        }
    }
}
/// The cluster membership (raft/'s encoding, opaque here), written with the applied index of the
/// entry that changed it.
const META_MEMBERS: &[u8] = b"mmembers";
/// This member's identity: [member id, cluster id]. Local state, never replicated.
const META_LOCAL: &[u8] = b"mlocal";
/// Auth: [enabled (0/1), auth revision] (§4.8).
const META_AUTH: &[u8] = b"mauth";
/// Raised alarms: `malarm ‖ BE(member id) ‖ BE(alarm type as u32)` → empty (§4.3).
const META_ALARM: &[u8] = b"malarm";

fn alarm_key(a: Alarm) -> Vec<u8> {
    [
        META_ALARM,
        &a.member_id.to_be_bytes(),
        &(a.alarm as u32).to_be_bytes(),
    ]
    .concat()
}

/// The alarms raised in `src`, in (member, type) order.
fn load_alarms<S: Source>(src: &S) -> Result<BTreeSet<Alarm>, MvccError> {
    let mut out = BTreeSet::new();
    let mut cur = btree::cursor(src);
    cur.seek(META_ALARM)?;
    while cur.valid() && cur.key().starts_with(META_ALARM) {
        let rest = &cur.key()[META_ALARM.len()..];
        let (Ok(member), Ok(alarm)) = (
            <[u8; 8]>::try_from(rest.get(..8).unwrap_or_default()),
            <[u8; 4]>::try_from(rest.get(8..).unwrap_or_default()),
        ) else {
            return Err(MvccError::Record(format!(
                "alarm key of {} bytes",
                rest.len()
            )));
        };
        out.insert(Alarm {
            member_id: u64::from_be_bytes(member),
            alarm: u32::from_be_bytes(alarm) as i32,
        });
        cur.advance()?;
    }
    Ok(out)
}

/// `enc(key)` of §4.1 appended to `out`.
fn push_enc(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}
fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 12);
    k.push(b'k');
    push_enc(&mut k, key);
    k.extend_from_slice(&[0, 0]);
    k
}
fn version_key(key: &[u8], main: i64) -> Vec<u8> {
    let mut k = key_prefix(key);
    k.extend_from_slice(&(!(main as u64)).to_be_bytes());
    k
}
fn rev_key(main: i64, sub: u32) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'r';
    k[1..9].copy_from_slice(&(main as u64).to_be_bytes());
    k[9..17].copy_from_slice(&(sub as u64).to_be_bytes());
    k
}
/// The `r` key at (main, sub), for a position that may not hold an entry.
fn rev_pos_key(main: u64, sub: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'r';
    k[1..9].copy_from_slice(&main.to_be_bytes());
    k[9..].copy_from_slice(&sub.to_be_bytes());
    k
}

fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'l';
    k[1..].copy_from_slice(&(id as u64).to_be_bytes());
    k
}
/// `'a' ‖ BE(lease) ‖ key`: the keys attached to a lease (§4.5).
fn attach_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(b'a');
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// `'U' ‖ name`: one user; `'R' ‖ name`: one role (§4.8).
fn user_key(name: &str) -> Vec<u8> {
    [b"U", name.as_bytes()].concat()
}
fn role_key(name: &str) -> Vec<u8> {
    [b"R", name.as_bytes()].concat()
}

/// The auth state as stored in `src`.
fn load_auth<S: Source>(src: &S) -> Result<AuthState, MvccError> {
    let (enabled, revision) =
        get_u64s::<2, _>(src, META_AUTH)?.map_or((false, 1), |a| (a[0] == 1, a[1]));
    let mut users = Vec::new();
    let mut roles = Vec::new();
    let mut cur = btree::cursor(src);
    cur.seek(b"R")?;
    while cur.valid() && cur.key().first() == Some(&b'R') {
        roles.push(auth::decode_role(cur.value()).map_err(MvccError::Record)?);
        cur.advance()?;
    }
    cur.seek(b"U")?;
    while cur.valid() && cur.key().first() == Some(&b'U') {
        users.push(auth::decode_user(cur.value()).map_err(MvccError::Record)?);
        cur.advance()?;
    }
    Ok(AuthState::from_parts(enabled, revision, users, roles))
}

fn decode_lease(bytes: &[u8]) -> Result<&ArchivedLeaseRecord, MvccError> {
    rkyv::access::<ArchivedLeaseRecord, rancor::Error>(bytes)
        .map_err(|e| MvccError::Record(e.to_string()))
}

fn get_lease<S: Source>(src: &S, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
    let Some(v) = btree::get(src, &lease_key(id))? else {
        return Ok(None);
    };
    let r = decode_lease(v)?;
    Ok(Some(LeaseInfo {
        id,
        ttl: r.ttl.to_native(),
        remaining: r.remaining.to_native(),
    }))
}

fn all_leases<S: Source>(src: &S) -> Result<Vec<LeaseInfo>, MvccError> {
    let mut out = Vec::new();
    let mut cur = btree::cursor(src);
    cur.seek(b"l")?;
    while cur.valid() && cur.key().first() == Some(&b'l') {
        let id = u64::from_be_bytes(cur.key()[1..9].try_into().expect("8 bytes")) as i64;
        let r = decode_lease(cur.value())?;
        out.push(LeaseInfo {
            id,
            ttl: r.ttl.to_native(),
            remaining: r.remaining.to_native(),
        });
        cur.advance()?;
    }
    Ok(out)
}

fn attached_keys<S: Source>(src: &S, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
    let prefix = attach_key(id, b"");
    let mut out = Vec::new();
    let mut cur = btree::cursor(src);
    cur.seek(&prefix)?;
    while cur.valid() && cur.key().starts_with(&prefix) {
        out.push(cur.key()[prefix.len()..].to_vec());
        cur.advance()?;
    }
    Ok(out)
}

/// Decodes a `k` tree key into (user key, main revision).
fn split_version_key(tk: &[u8]) -> Result<(Vec<u8>, i64), MvccError> {
    if tk.len() < 11 || tk[0] != b'k' {
        return Err(malformed_key(tk));
    }
    let (group, rev) = tk.split_at(tk.len() - 8);
    let main = !u64::from_be_bytes(rev.try_into().expect("8 bytes")) as i64;
    Ok((key_of_group(group)?, main))
}

fn malformed_key(tk: &[u8]) -> MvccError {
    MvccError::Record(format!("malformed key-index key {tk:?}"))
}

/// The user key of a key-index group (`k`, the escaped key, the `00 00` terminator).
fn key_of_group(group: &[u8]) -> Result<Vec<u8>, MvccError> {
    let body = group
        .strip_prefix(b"k")
        .and_then(|b| b.strip_suffix(&[0, 0]))
        .ok_or_else(|| malformed_key(group))?;
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        key.push(body[i]);
        if body[i] == 0 {
            if body.get(i + 1) != Some(&0xFF) {
                return Err(malformed_key(group));
            }
            i += 1;
        }
        i += 1;
    }
    Ok(key)
}

fn decode_version(bytes: &[u8]) -> Result<&ArchivedVersion, MvccError> {
    rkyv::access::<ArchivedVersion, rancor::Error>(bytes)
        .map_err(|e| MvccError::Record(e.to_string()))
}

fn to_kv(key: Vec<u8>, main: i64, v: &ArchivedVersion, keys_only: bool) -> KeyValue {
    KeyValue {
        key,
        create_revision: v.create_revision.to_native(),
        mod_revision: main,
        version: v.version.to_native(),
        value: if keys_only {
            Vec::new()
        } else {
            v.value.to_vec()
        },
        lease: v.lease.to_native(),
    }
}

/// Visits the newest version ≤ `rev` of every live key in `[start, end)`, in key order, until
/// `f` returns false. `f` gets the key's group in the key index (`k`, the escaped key, `00 00`;
/// [`key_of_group`] gives the key back), so that a caller that only counts decodes no key.
///
/// The bounds are compared in the escaped form, which keeps byte order: for keys `a`, `b`,
/// `a < b` ⇔ `k·esc(a)·00 00 < k·esc(b)`, as `00 00` sorts below any escaped byte (`00 FF` or
/// a byte ≥ 1) and `esc` never yields `00 00`.
fn scan<S: Source>(
    src: &S,
    start: &[u8],
    end: &[u8],
    rev: i64,
    mut f: impl FnMut(&[u8], i64, &ArchivedVersion) -> Result<bool, MvccError>,
) -> Result<(), MvccError> {
    scan_step(src, start, end, rev, None, usize::MAX, |g, main, v| {
        Ok(if f(g, main, v)? {
            Visit::Next
        } else {
            Visit::Stop
        })
    })
    .map(drop)
}

/// What a [`scan_step`] does after handing a key to its visitor.
enum Visit {
    /// Go on to the next key.
    Next,
    /// End this step here; the next one resumes after this key.
    Pause,
    /// End the scan.
    Stop,
}

/// One step of a [`scan`]: it starts just past the group `after` (where the previous step
/// stopped) when given, and stops once it has visited `budget` entries of the key index and
/// finished a key, or once `f` asks it to pause. `Some(group)`: it stopped there, the next step goes on after `group`;
/// `None`: the range is done (or `f` ended it).
///
/// Resuming at `group · FF×9` lands past every version of that key and before the next key: a
/// version entry is the group and 8 bytes, and no other group starts with this one (its `00 00`
/// terminator cannot occur inside an escaped key).
fn scan_step<S: Source>(
    src: &S,
    start: &[u8],
    end: &[u8],
    rev: i64,
    after: Option<&[u8]>,
    budget: usize,
    mut f: impl FnMut(&[u8], i64, &ArchivedVersion) -> Result<Visit, MvccError>,
) -> Result<Option<Vec<u8>>, MvccError> {
    if !end.is_empty() && end != [0] && end <= start {
        return Ok(None);
    }
    let mut cur: Cursor<'_, S> = btree::cursor(src);
    let mut seek = Vec::with_capacity(start.len() + 3);
    seek.push(b'k');
    push_enc(&mut seek, start);
    // The group of exactly `start` (a single-key range), or the first group past the range.
    let (exact, limit) = if end.is_empty() {
        let mut g = seek.clone();
        g.extend_from_slice(&[0, 0]);
        (Some(g), None)
    } else if end == [0] {
        (None, None)
    } else {
        let mut hi = Vec::with_capacity(end.len() + 1);
        hi.push(b'k');
        push_enc(&mut hi, end);
        (None, Some(hi))
    };
    // Group of the key whose newest visible version was already handled.
    let mut done: Vec<u8> = Vec::new();
    match after {
        Some(g) => {
            debug_assert!(g.len() >= 3 && g[0] == b'k' && g.ends_with(&[0, 0]));
            let mut past = Vec::with_capacity(g.len() + 9);
            past.extend_from_slice(g);
            past.extend_from_slice(&[0xFF; 9]);
            cur.seek(&past)?;
        }
        None => cur.seek(&seek)?,
    }
    let mut visited = 0usize;
    // Entries of one group stepped over in a row (older versions of a key already handled, or
    // versions newer than `rev`): past SEEK_AFTER, the rest are jumped over with one seek.
    // (versions newer than `rev`?, how many in a row).
    let mut passed = (false, 0usize);
    while cur.valid() {
        if visited >= budget && !done.is_empty() {
            return Ok(Some(done));
        }
        visited += 1;
        let tk = cur.key();
        if tk.first() != Some(&b'k') {
            break;
        }
        if tk.len() < 11 || tk[tk.len() - 10..tk.len() - 8] != [0, 0] {
            return Err(malformed_key(tk));
        }
        let (group, main) = tk.split_at(tk.len() - 8);
        if !done.is_empty() && group == done.as_slice() {
            // Past every version of the key: `group · FF×9` (see above).
            pass_entry(&mut cur, &mut passed, false, || {
                [&done[..], &[0xFF; 9]].concat()
            })?;
            continue;
        }
        // Every group here is ≥ `seek`, so ≥ start: only the upper bound needs a look.
        match (&exact, &limit) {
            (Some(g), _) if group != g.as_slice() => break,
            (_, Some(hi)) if group >= hi.as_slice() => break,
            _ => {}
        }
        let main = !u64::from_be_bytes(main.try_into().expect("8 bytes")) as i64;
        if main > rev {
            // To the key's newest version ≤ `rev`: versions sort newest first (the revision is
            // stored inverted), so that is the first entry ≥ `group · !rev`.
            pass_entry(&mut cur, &mut passed, true, || {
                [group, &(!(rev as u64)).to_be_bytes()].concat()
            })?;
            continue;
        }
        passed.1 = 0;
        done.clear();
        done.extend_from_slice(group);
        let v = decode_version(cur.value())?;
        if !v.tombstone {
            match f(group, main, v)? {
                Visit::Next => {}
                Visit::Pause => return Ok(exact.is_none().then_some(done)),
                Visit::Stop => break,
            }
        }
        if exact.is_some() {
            // A single key has one newest visible version: the range is done.
            break;
        }
        cur.advance()?;
    }
    Ok(None)
}

/// Moves a scan over one entry it passes — an older version of the key just handled
/// (`newer` false) or a version newer than its revision — or, past [`SEEK_AFTER`] of one kind in a
/// row (`passed`), seeks to `target()` instead.
fn pass_entry<S: Source>(
    cur: &mut Cursor<'_, S>,
    passed: &mut (bool, usize),
    newer: bool,
    target: impl FnOnce() -> Vec<u8>,
) -> Result<(), MvccError> {
    if passed.0 != newer {
        *passed = (newer, 0);
    }
    passed.1 += 1;
    if passed.1 <= SEEK_AFTER {
        cur.advance()?;
    } else {
        cur.seek(&target())?;
        passed.1 = 0;
    }
    Ok(())
}

/// Entries of one key's group a scan steps over one by one before it seeks past the rest (or to
/// the version it wants): a
/// seek costs a descent from the root, a step a move within a leaf, and an uncompacted key that
/// is written often has thousands of versions (a contended CAS key: every compare of its Txns
/// walked all of them).
const SEEK_AFTER: usize = 8;

/// The newest live version of `key` (at any revision).
fn latest<S: Source>(src: &S, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
    let mut out = None;
    scan(src, key, &[], i64::MAX, |g, main, v| {
        out = Some(to_kv(key_of_group(g)?, main, v, false));
        Ok(false)
    })?;
    Ok(out)
}

/// etcd's Range at an already-validated revision `rev` (`current` is the header revision).
fn range<S: Source>(
    src: &S,
    r: &RangeRequest,
    rev: i64,
    current: i64,
) -> Result<RangeResult, MvccError> {
    let mut scan = RangeScan::new(r, rev, current);
    scan.step(src, usize::MAX)?;
    Ok(scan.finish())
}

/// etcd's Range in steps of bounded work over one source, so that the caller can let other work
/// run between them (a 500-key page of a Kubernetes list holds a core for a millisecond).
struct RangeScan<'r> {
    r: &'r RangeRequest,
    rev: i64,
    current: i64,
    /// Versions fetched: all when sorting or filtering (etcd), else limit + 1 to learn `more`.
    fetch: usize,
    /// etcd drops the values of a keys_only range after sorting, so a sort by VALUE sees them.
    drop_values: bool,
    kvs: Vec<KeyValue>,
    /// What `kvs` holds in memory: each one's key, value and fixed part.
    bytes: usize,
    count: i64,
    /// Where the last step stopped (`None` before the first one).
    resume: Option<Vec<u8>>,
    done: bool,
}

impl<'r> RangeScan<'r> {
    fn new(r: &'r RangeRequest, rev: i64, current: i64) -> Self {
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let fetch = if r.sort_order != 0 || filtered || r.limit <= 0 {
            usize::MAX
        } else {
            r.limit as usize + 1
        };
        RangeScan {
            r,
            rev,
            current,
            fetch,
            drop_values: r.keys_only && r.sort_target != 4,
            // A single key has at most one version to return; a page, up to its limit.
            kvs: Vec::with_capacity(if r.count_only {
                0
            } else if r.range_end.is_empty() {
                1
            } else {
                fetch.min(512)
            }),
            bytes: 0,
            count: 0,
            resume: None,
            done: false,
        }
    }

    /// Visits about `budget` more entries of the key index; true once the range is complete.
    fn step<S: Source>(&mut self, src: &S, budget: usize) -> Result<bool, MvccError> {
        if self.done {
            return Ok(true);
        }
        let RangeScan {
            r,
            fetch,
            drop_values,
            kvs,
            bytes,
            count,
            ..
        } = self;
        let r = *r;
        let step_end = *bytes + RANGE_STEP_BYTES;
        let resume = scan_step(
            src,
            &r.key,
            &r.range_end,
            self.rev,
            self.resume.as_deref(),
            budget,
            |g, main, v| {
                *count += 1;
                if !r.count_only && kvs.len() < *fetch {
                    let kv = to_kv(key_of_group(g)?, main, v, *drop_values);
                    *bytes += kv.key.len() + kv.value.len() + std::mem::size_of::<KeyValue>();
                    kvs.push(kv);
                    if *bytes >= step_end {
                        return Ok(Visit::Pause);
                    }
                }
                Ok(Visit::Next)
            },
        )?;
        self.done = resume.is_none();
        self.resume = resume;
        Ok(self.done)
    }

    /// The answer, once [`step`](Self::step) returned true: etcd's filters, sort and limit.
    fn finish(self) -> RangeResult {
        debug_assert!(self.done, "a range answered before its scan completed");
        let RangeScan {
            r,
            current,
            mut kvs,
            count,
            ..
        } = self;
        kvs.retain(|kv: &KeyValue| {
            !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
                || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
                || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
                || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
        });
        let mut order = r.sort_order;
        if r.sort_target != 0 && order == 0 {
            order = 1;
        } else if r.sort_target == 0 && order == 1 {
            order = 0;
        }
        if order != 0 {
            let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
                match r.sort_target {
                    1 => a.version.cmp(&b.version),
                    2 => a.create_revision.cmp(&b.create_revision),
                    3 => a.mod_revision.cmp(&b.mod_revision),
                    4 => a.value.cmp(&b.value),
                    _ => a.key.cmp(&b.key),
                }
            };
            // Stable, as etcd's results for equal sort keys stay in key order.
            if order == 2 {
                kvs.sort_by(|a, b| cmp(b, a));
            } else {
                kvs.sort_by(cmp);
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        RangeResult {
            revision: current,
            kvs,
            more,
            count,
        }
    }
}

/// etcd's Compare against the newest state of `src`: every key of the range must satisfy it; a
/// missing key compares as an empty KeyValue (no key for a value compare fails it).
fn compare<S: Source>(src: &S, c: &Compare) -> Result<bool, MvccError> {
    let mut kvs = Vec::new();
    scan(src, &c.key, &c.range_end, i64::MAX, |g, main, v| {
        kvs.push(to_kv(key_of_group(g)?, main, v, false));
        Ok(true)
    })?;
    if kvs.is_empty() {
        if c.target == 3 {
            return Ok(false);
        }
        kvs.push(KeyValue::default());
    }
    Ok(kvs.iter().all(|kv| {
        let ord = match c.target {
            0 => kv.version.cmp(&c.number),
            1 => kv.create_revision.cmp(&c.number),
            2 => kv.mod_revision.cmp(&c.number),
            3 => kv.value.as_slice().cmp(c.value.as_slice()),
            _ => kv.lease.cmp(&c.number),
        };
        match c.result {
            0 => ord == Ordering::Equal,
            1 => ord == Ordering::Greater,
            2 => ord == Ordering::Less,
            3 => ord != Ordering::Equal,
            _ => true,
        }
    }))
}

/// etcd's checkRequestRange for a Range inside a Txn, against the state before the txn: `revision`
/// 0 reads the txn's own revision; a later one is ErrFutureRev, one below the compacted revision
/// ErrCompacted (before any compaction that is -1, [`NEVER_COMPACTED`], which only matters for
/// negative revisions).
fn check_txn_range(r: &RangeRequest, current: i64, compacted: i64) -> Result<(), MvccError> {
    if r.revision == 0 {
        Ok(())
    } else if r.revision > current {
        Err(MvccError::FutureRev)
    } else if r.revision < compacted {
        Err(MvccError::Compacted)
    } else {
        Ok(())
    }
}

fn check_rev(rev: i64, current: i64, compacted: i64) -> Result<i64, MvccError> {
    if rev <= 0 {
        return Ok(current);
    }
    if rev > current {
        return Err(MvccError::FutureRev);
    }
    if rev < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(rev)
}

/// A page-store entry as a snapshot carries it: (key, value).
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// A consistent copy of the whole replicated state at one applied index, for a member that is
/// too far behind for the Raft log (a Raft snapshot): every entry of the page store except this
/// member's own identity, read in key order from one committed version.
pub struct StateSnapshot {
    snap: btree::Snapshot,
}

impl StateSnapshot {
    /// The applied Raft (index, term) the copy holds.
    pub fn applied(&self) -> (u64, u64) {
        let t = self.snap.tag();
        (t[TAG_APPLIED], t[TAG_TERM])
    }

    /// Current and compacted revision of the copy (-1: never compacted).
    pub fn revisions(&self) -> (i64, i64) {
        let t = self.snap.tag();
        (t[TAG_REV] as i64, t[TAG_COMPACT] as i64)
    }

    /// etcd's `key` bucket for this state, in bbolt's key order: what a snapshot file must hold
    /// for etcd (its compaction at [`StateSnapshot::revisions`]'s compacted revision finished,
    /// whatever retcd has deleted yet; see [`KeyBucket`]).
    pub fn etcd_key_bucket(&self) -> KeyBucket<'_, btree::Snapshot> {
        let (current, compacted) = self.revisions();
        KeyBucket::new(&self.snap, compacted, current, compacted)
    }

    /// etcd's compaction hash (3.5.5+, the compact hash check): the HashKV at `target` as the
    /// bucket was before the compaction to `target` applied, when `previous` was the compacted
    /// revision. Valid on the state right after that compaction applied and before any of its
    /// deletion batches ran (engine/DESIGN.md §4.9: until then every version it drops is still
    /// stored); every member computes it on the same state.
    pub fn compaction_hash(&self, target: i64, previous: i64) -> Result<KvHash, MvccError> {
        Ok(KvHash {
            hash: bucket_hash(&self.snap, previous, target)?,
            compact_revision: previous,
            hash_revision: target,
            revision: target,
        })
    }

    /// The membership as raft/ stored it (`m members`, opaque here), for the etcd snapshot's
    /// `members` buckets to come from this same state.
    pub fn membership(&self) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(btree::get(&self.snap, META_MEMBERS)?.map(<[u8]>::to_vec))
    }

    /// Auth's (enabled, auth revision) as stored; both `None` when the store never had an auth
    /// change (no `m auth`: disabled at revision 1, DESIGN.md §4.8).
    pub fn auth_meta(&self) -> Result<(Option<bool>, Option<u64>), MvccError> {
        Ok(match get_u64s::<2, _>(&self.snap, META_AUTH)? {
            Some([enabled, revision]) => (Some(enabled == 1), Some(revision)),
            None => (None, None),
        })
    }

    /// Visits every lease in id order (one at a time) until `visit` breaks.
    pub fn scan_leases(
        &self,
        visit: &mut dyn FnMut(LeaseInfo) -> std::ops::ControlFlow<()>,
    ) -> Result<(), MvccError> {
        let mut cur = self.snap.cursor();
        cur.seek(b"l")?;
        while cur.valid() && cur.key().first() == Some(&b'l') {
            let id = u64::from_be_bytes(cur.key()[1..9].try_into().expect("8 bytes")) as i64;
            let r = decode_lease(cur.value())?;
            let info = LeaseInfo {
                id,
                ttl: r.ttl.to_native(),
                remaining: r.remaining.to_native(),
            };
            if visit(info).is_break() {
                break;
            }
            cur.advance()?;
        }
        Ok(())
    }

    /// Visits every auth user in name order until `visit` breaks.
    pub fn scan_users(
        &self,
        visit: &mut dyn FnMut(&auth::User) -> std::ops::ControlFlow<()>,
    ) -> Result<(), MvccError> {
        let mut cur = self.snap.cursor();
        cur.seek(b"U")?;
        while cur.valid() && cur.key().first() == Some(&b'U') {
            let u = auth::decode_user(cur.value()).map_err(MvccError::Record)?;
            if visit(&u).is_break() {
                break;
            }
            cur.advance()?;
        }
        Ok(())
    }

    /// Visits every auth role in name order until `visit` breaks.
    pub fn scan_roles(
        &self,
        visit: &mut dyn FnMut(&auth::Role) -> std::ops::ControlFlow<()>,
    ) -> Result<(), MvccError> {
        let mut cur = self.snap.cursor();
        cur.seek(b"R")?;
        while cur.valid() && cur.key().first() == Some(&b'R') {
            let r = auth::decode_role(cur.value()).map_err(MvccError::Record)?;
            if visit(&r).is_break() {
                break;
            }
            cur.advance()?;
        }
        Ok(())
    }

    /// Entries after `after` (from the first when `None`), at least one and about `max_bytes`;
    /// empty once every entry was returned.
    pub fn chunk(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>, MvccError> {
        let mut cur = self.snap.cursor();
        cur.seek(after.unwrap_or(b""))?;
        if let Some(a) = after
            && cur.valid()
            && cur.key() == a
        {
            cur.advance()?;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        while cur.valid() && (out.is_empty() || bytes < max_bytes) {
            if cur.key() != META_LOCAL {
                bytes += cur.key().len() + cur.value().len();
                out.push((cur.key().to_vec(), cur.value().to_vec()));
            }
            cur.advance()?;
        }
        Ok(out)
    }
}

/// Read access to the latest committed state, from any core.
#[derive(Clone)]
pub struct MvccReader {
    reader: Reader,
}

/// Key-index entries one [`RangeSteps::step`] visits: a few hundred µs of work at most (a
/// 2 KiB value costs about a µs to find and copy; a counted key past the page far less).
pub const RANGE_STEP_ENTRIES: usize = 256;

/// The most key-values (by [`RangeSteps::bytes`]) one step of a Range collects, plus at most one
/// key-value: what a caller admitting a Range's memory reserves before each step.
pub const RANGE_STEP_BYTES: usize = 1 << 20;

/// A Range being read in steps from one snapshot ([`MvccReader::range_steps`]).
pub struct RangeSteps<'r> {
    snap: Snapshot,
    scan: RangeScan<'r>,
}

impl RangeSteps<'_> {
    /// Reads about [`RANGE_STEP_ENTRIES`] more entries, or fewer once it has collected
    /// [`RANGE_STEP_BYTES`]; true once the range is complete.
    pub fn step(&mut self) -> Result<bool, MvccError> {
        self.scan.step(&self.snap, RANGE_STEP_ENTRIES)
    }

    /// The memory the key-values read so far take (keys, values and each one's fixed part): what
    /// the response will hold, before its filters and limit.
    pub fn bytes(&self) -> usize {
        self.scan.bytes
    }

    /// The answer; call once [`step`](Self::step) returned true.
    pub fn finish(self) -> RangeResult {
        self.scan.finish()
    }
}

impl MvccReader {
    /// A lease of the latest committed state.
    pub fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
        get_lease(&self.reader.snapshot(), id)
    }
    /// Every lease of the latest committed state, by id.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, MvccError> {
        all_leases(&self.reader.snapshot())
    }
    /// The keys attached to a lease, in key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
        attached_keys(&self.reader.snapshot(), id)
    }
    /// Current and compacted revision of the latest committed state.
    pub fn revisions(&self) -> (i64, i64) {
        let t = self.reader.snapshot().tag();
        (t[TAG_REV] as i64, t[TAG_COMPACT] as i64)
    }
    /// Applied Raft (index, term) of the latest committed state.
    pub fn applied(&self) -> (u64, u64) {
        let t = self.reader.snapshot().tag();
        (t[TAG_APPLIED], t[TAG_TERM])
    }

    /// The whole latest committed state, for a Raft snapshot.
    pub fn state_snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            snap: self.reader.snapshot(),
        }
    }

    /// etcd's HashKV (DESIGN.md §4.10): the CRC-32C etcd 3.4.23 computes over its `key` bucket
    /// up to `rev` (0: the current revision; negative: nothing, as etcd), for the same history.
    /// Members that applied the same entries answer the same hash, however far each got deleting
    /// what a compaction dropped: the versions hashed are those etcd's bucket holds once the
    /// compaction has finished ([`KeyBucket`]).
    ///
    /// Errors as etcd 3.4.23's: `rev` at or below the compacted revision is
    /// [`MvccError::Compacted`] (3.4.27+/3.5.10+ accept `rev` equal to it), above the current
    /// revision [`MvccError::FutureRev`].
    ///
    /// Memory: one key and one value at a time. Two passes over the snapshot: the `k` key space
    /// until the first key live at `rev` (etcd's `keep` set is only asked whether it is empty:
    /// whether a version belongs to it is a lookup of that key's newest version ≤ `rev`), then
    /// the `r` log up to `rev` with one `k` lookup per entry (two for one ≤ the compacted
    /// revision).
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash, MvccError> {
        let snap = self.reader.snapshot();
        let t = snap.tag();
        let (current, compacted) = (t[TAG_REV] as i64, t[TAG_COMPACT] as i64);
        if rev > 0 && rev <= compacted {
            return Err(MvccError::Compacted);
        }
        if rev > current {
            return Err(MvccError::FutureRev);
        }
        let upto = if rev == 0 { current } else { rev };
        Ok(KvHash {
            hash: bucket_hash(&snap, compacted, upto)?,
            compact_revision: compacted,
            hash_revision: upto,
            revision: current,
        })
    }
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResult, MvccError> {
        let mut steps = self.range_steps(r)?;
        steps.scan.step(&steps.snap, usize::MAX)?;
        Ok(steps.finish())
    }

    /// [`range`](Self::range) in steps over the latest committed snapshot: call
    /// [`RangeSteps::step`] until it returns true (other work may run in between; the snapshot
    /// stays the same), then [`RangeSteps::finish`].
    pub fn range_steps<'r>(&self, r: &'r RangeRequest) -> Result<RangeSteps<'r>, MvccError> {
        let snap = self.reader.snapshot();
        let t = snap.tag();
        let (current, compacted) = (t[TAG_REV] as i64, t[TAG_COMPACT] as i64);
        let rev = check_rev(r.revision, current, compacted)?;
        Ok(RangeSteps {
            scan: RangeScan::new(r, rev, current),
            snap,
        })
    }

    /// A Txn whose every operation is a Range (no nested Txn), on the latest committed snapshot —
    /// what etcd serves without going through Raft. `None` when the Txn has any other operation
    /// (it must be proposed). Same answers as the write path: compares on the newest state, each
    /// Range checked against the snapshot's revision and compaction (future / compacted), the
    /// header at the snapshot's revision.
    pub fn txn_read_only(&self, t: &TxnRequest) -> Result<Option<TxnResult>, MvccError> {
        if !t
            .success
            .iter()
            .chain(&t.failure)
            .all(|op| matches!(op, RequestOp::Range(_)))
        {
            return Ok(None);
        }
        let snap = self.reader.snapshot();
        let tag = snap.tag();
        let (current, compacted) = (tag[TAG_REV] as i64, tag[TAG_COMPACT] as i64);
        let mut succeeded = true;
        for c in &t.compare {
            if !compare(&snap, c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &t.success } else { &t.failure };
        let ranges = ops.iter().filter_map(|op| match op {
            RequestOp::Range(r) => Some(r),
            _ => None,
        });
        for r in ranges.clone() {
            check_txn_range(r, current, compacted)?;
        }
        let mut responses = Vec::with_capacity(ops.len());
        for r in ranges {
            let rev = if r.revision > 0 { r.revision } else { current };
            responses.push(OpResult::Range(range(&snap, r, rev, current)?));
        }
        Ok(Some(TxnResult {
            revision: current,
            succeeded,
            responses,
        }))
    }

    /// The changes of revisions `from_rev..=to_rev` (`to_rev` capped at the current revision) from
    /// the `r` log of the latest committed snapshot, in revision order (watch history, §4.2).
    ///
    /// Reading stops after the revision in which the `max_events`-th event falls, or in which the
    /// keys and values read reach `max_bytes`: a revision is never split. `with_prev` fills each event's `prev_kv` with the key's newest live version
    /// below the event's revision (etcd's watch prev_kv). Fails with [`MvccError::Compacted`] when
    /// `from_rev` is below the compacted revision (etcd's watchable store: `minRev < compactRev`).
    pub fn history(
        &self,
        from_rev: i64,
        to_rev: i64,
        max_events: usize,
        max_bytes: usize,
        with_prev: bool,
    ) -> Result<History, MvccError> {
        let snap = self.reader.snapshot();
        let t = snap.tag();
        let (current, compacted) = (t[TAG_REV] as i64, t[TAG_COMPACT] as i64);
        if from_rev < compacted {
            return Err(MvccError::Compacted);
        }
        let to = to_rev.min(current);
        let from = from_rev.max(1);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut next_rev = to.max(from - 1) + 1;
        if from <= to {
            let mut cur = btree::cursor(&snap);
            cur.seek(&rev_key(from, 0))?;
            while cur.valid() && cur.key().first() == Some(&b'r') {
                let tk = cur.key();
                if tk.len() != 17 {
                    return Err(MvccError::Record(format!(
                        "malformed revision-log key {tk:?}"
                    )));
                }
                let main = u64::from_be_bytes(tk[1..9].try_into().expect("8 bytes")) as i64;
                if main > to {
                    break;
                }
                if (events.len() >= max_events || bytes >= max_bytes)
                    && events
                        .last()
                        .is_some_and(|e: &Event| e.kv.mod_revision != main)
                {
                    next_rev = main;
                    break;
                }
                let key = cur.value().to_vec();
                let ev = history_event(&snap, key, main, with_prev && main > compacted)?;
                if main == compacted && ev.kind == EventKind::Delete {
                    // The compaction at `compacted` drops this tombstone (§4.9); it may not be
                    // deleted yet.
                    cur.advance()?;
                    continue;
                }
                bytes += ev.kv.key.len()
                    + ev.kv.value.len()
                    + ev.prev_kv
                        .as_ref()
                        .map_or(0, |p| p.key.len() + p.value.len());
                events.push(ev);
                cur.advance()?;
            }
        }
        Ok(History {
            events,
            next_rev,
            revision: current,
            compacted,
        })
    }
}

/// etcd's HashKV of the bucket `src` holds as of a compaction at `compacted`, up to `upto`.
fn bucket_hash<S: Source>(src: &S, compacted: i64, upto: i64) -> Result<u32, MvccError> {
    // etcd filters versions ≤ the compacted revision by its `keep` set (each key's newest
    // version ≤ `upto` when it is a put) only when that set is not empty; with it empty it
    // hashes every such version its bucket holds (each key's newest ≤ compacted, when live).
    let mut keep_empty = true;
    if upto > 0 {
        scan(src, b"", &[0], upto, |_, _, _| {
            keep_empty = false;
            Ok(false)
        })?;
    }
    let kept_at = if keep_empty { compacted } else { upto };
    let mut bucket = KeyBucket::new(src, compacted, upto, kept_at);
    let mut h = crc32c::crc32c(etcd_keys::KEY_BUCKET);
    let (mut k, mut v) = (Vec::new(), Vec::new());
    while bucket.next_into(&mut k, &mut v)?.is_some() {
        h = crc32c::crc32c_append(h, &k);
        h = crc32c::crc32c_append(h, &v);
    }
    Ok(h)
}

/// What [`MvccReader::hash_kv`] answers (etcd's HashKVResponse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The compacted revision (-1: never compacted).
    pub compact_revision: i64,
    /// The revision hashed up to (etcd 3.6's hash_revision).
    pub hash_revision: i64,
    /// The current revision (the response header's revision, as etcd answers it).
    pub revision: i64,
}

/// One entry of etcd's `key` bucket (reference §2.2): revision key and `mvccpb.KeyValue` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBucketEntry {
    pub revision: BucketRevision,
    /// [`etcd_keys::encode_revision_key`] of `revision`.
    pub key: Vec<u8>,
    /// [`etcd_keys::encode_key_value`] of the version (the key alone for a tombstone).
    pub value: Vec<u8>,
}

/// etcd's `key` bucket as retcd's state gives it, in bbolt's key order (revision order): what
/// etcd's bucket holds after the same history once its compaction at `compacted` has finished —
/// every version above `compacted`, and of a key's versions ≤ `compacted` only its newest, and
/// only when that is a put (etcd 3.4.23 deletes a tombstone there; DESIGN.md §4.9) — up to
/// revision `upto`. The order comes from the `r` log; each version is read from `k`. Versions a
/// pending compaction has not deleted yet are skipped, so the entries do not depend on how far
/// the deletion got.
///
/// Memory: the cursor, one key and one value; each entry costs one `k` lookup (two when ≤
/// `compacted`).
pub struct KeyBucket<'a, S: Source> {
    src: &'a S,
    cur: Cursor<'a, S>,
    started: bool,
    done: bool,
    compacted: i64,
    upto: i64,
    /// A version ≤ `compacted` is yielded only when it is its key's newest ≤ `kept_at`
    /// (`compacted` for the bucket itself; HashKV's `keep` filter asks for more).
    kept_at: i64,
}

impl<'a, S: Source> KeyBucket<'a, S> {
    fn new(src: &'a S, compacted: i64, upto: i64, kept_at: i64) -> KeyBucket<'a, S> {
        KeyBucket {
            src,
            cur: btree::cursor(src),
            started: false,
            done: false,
            compacted,
            upto,
            kept_at: kept_at.max(compacted),
        }
    }

    /// Moves to the next entry and writes its revision key into `key` and its value into
    /// `value` (both cleared first), without allocating per entry; `None` at the end.
    pub fn next_into(
        &mut self,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<Option<BucketRevision>, MvccError> {
        if self.done {
            return Ok(None);
        }
        if !self.started {
            self.started = true;
            self.cur.seek(b"r")?;
        }
        // Every turn moves the cursor one `r` entry on: bounded by the log's length.
        while self.cur.valid() && self.cur.key().first() == Some(&b'r') {
            let tk = self.cur.key();
            if tk.len() != 17 {
                self.done = true;
                return Err(MvccError::Record(format!(
                    "malformed revision-log key {tk:?}"
                )));
            }
            let main = u64::from_be_bytes(tk[1..9].try_into().expect("8 bytes")) as i64;
            let sub = u64::from_be_bytes(tk[9..17].try_into().expect("8 bytes")) as i64;
            if main > self.upto {
                break;
            }
            // Slices of the snapshot: they outlive the cursor's move.
            let user_key = self.cur.value();
            self.cur.advance()?;
            let Some(bytes) = btree::get(self.src, &version_key(user_key, main))? else {
                self.done = true;
                return Err(MvccError::Record(format!(
                    "revision log names {user_key:?}@{main} without its version"
                )));
            };
            let v = decode_version(bytes)?;
            if main <= self.compacted
                && (v.tombstone || !newest_at(self.src, user_key, self.kept_at, main)?)
            {
                continue;
            }
            let revision = BucketRevision {
                main,
                sub,
                tombstone: v.tombstone,
            };
            key.clear();
            etcd_keys::encode_revision_key(revision, key);
            value.clear();
            let kv = if v.tombstone {
                KeyValueRef::tombstone(user_key)
            } else {
                KeyValueRef {
                    key: user_key,
                    create_revision: v.create_revision.to_native(),
                    mod_revision: main,
                    version: v.version.to_native(),
                    value: &v.value,
                    lease: v.lease.to_native(),
                }
            };
            etcd_keys::encode_key_value(kv, value);
            return Ok(Some(revision));
        }
        self.done = true;
        Ok(None)
    }
}

impl<S: Source> Iterator for KeyBucket<'_, S> {
    type Item = Result<KeyBucketEntry, MvccError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        match self.next_into(&mut key, &mut value) {
            Ok(Some(revision)) => Some(Ok(KeyBucketEntry {
                revision,
                key,
                value,
            })),
            Ok(None) => None,
            Err(e) => {
                // An error ends the iteration (a corrupt store is not read past).
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Whether `key`'s newest version at or below `at` is the one at `main` (which exists, ≤ `at`).
fn newest_at<S: Source>(src: &S, key: &[u8], at: i64, main: i64) -> Result<bool, MvccError> {
    let prefix = key_prefix(key);
    let mut cur = btree::cursor(src);
    cur.seek(&version_key(key, at))?;
    if !(cur.valid() && cur.key().starts_with(&prefix) && cur.key().len() == prefix.len() + 8) {
        return Err(MvccError::Record(format!(
            "version {key:?}@{main} not found below {at}"
        )));
    }
    Ok(split_version_key(cur.key())?.1 == main)
}

/// What [`MvccReader::history`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// In revision (and sub-revision) order.
    pub events: Vec<Event>,
    /// The first revision not read (the revision to continue from).
    pub next_rev: i64,
    /// The snapshot's current revision.
    pub revision: i64,
    /// The snapshot's compacted revision.
    pub compacted: i64,
}

/// The event of `key`'s version at main revision `main` (its `r` log entry).
fn history_event<S: Source>(
    src: &S,
    key: Vec<u8>,
    main: i64,
    with_prev: bool,
) -> Result<Event, MvccError> {
    let Some(bytes) = btree::get(src, &version_key(&key, main))? else {
        return Err(MvccError::Record(format!(
            "revision log names {key:?}@{main} without its version"
        )));
    };
    let v = decode_version(bytes)?;
    let prev_kv = if with_prev && main > 1 {
        let prefix = key_prefix(&key);
        let mut cur = btree::cursor(src);
        cur.seek(&version_key(&key, main - 1))?;
        if cur.valid() && cur.key().starts_with(&prefix) && cur.key().len() == prefix.len() + 8 {
            let (_, prev_main) = split_version_key(cur.key())?;
            let pv = decode_version(cur.value())?;
            (!pv.tombstone).then(|| to_kv(key.clone(), prev_main, pv, false))
        } else {
            None
        }
    } else {
        None
    };
    Ok(if v.tombstone {
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                mod_revision: main,
                ..KeyValue::default()
            },
            prev_kv,
        }
    } else {
        Event {
            kind: EventKind::Put,
            kv: to_kv(key, main, v, false),
            prev_kv,
        }
    })
}

/// One entry handed to [`Mvcc::apply`].
pub struct Applied<'a> {
    pub index: u64,
    pub term: u64,
    /// None for entries that carry no request (empty entries, configuration changes).
    pub request: Option<&'a Request>,
    /// Who proposed `request`: checked against the auth state at this entry; None for the
    /// member's own requests (lease expiry, checkpoints).
    pub caller: Option<&'a Caller>,
    /// The membership after this entry, when the entry changed it (stored in the same
    /// transaction as the applied index, so the two never disagree after a crash).
    pub membership: Option<&'a [u8]>,
}

/// The single writer of the MVCC state.
pub struct Mvcc {
    store: PageStore,
    rev: i64,
    compacted: i64,
    applied: (u64, u64),
    /// `m compaction`: the compaction whose dropped versions are still being deleted (§4.9).
    compaction: Option<PendingCompaction>,
    /// The auth state after the last applied entry; `auth_reader` holds it once published.
    auth: Arc<AuthState>,
    auth_reader: AuthReader,
    /// The raised alarms after the last applied entry (`m alarm`, §4.3).
    alarms: BTreeSet<Alarm>,
}

/// Where the deletion of a compaction's dropped versions goes on (§4.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingCompaction {
    /// The `r` position (main, sub) of the next entry to visit.
    next: (u64, u64),
    target: i64,
}

impl PendingCompaction {
    fn load<S: Source>(src: &S) -> Result<Option<PendingCompaction>, MvccError> {
        Ok(
            get_u64s::<3, _>(src, META_COMPACTION)?.map(|[main, sub, target]| PendingCompaction {
                next: (main, sub),
                target: target as i64,
            }),
        )
    }

    fn encode(&self) -> Vec<u8> {
        u64s(&[self.next.0, self.next.1, self.target as u64])
    }
}

/// What one deletion batch of a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionStep {
    /// Versions deleted (each a `k` and an `r` entry).
    pub deleted: usize,
    /// `r` entries visited.
    pub visited: usize,
    /// Nothing of the compaction is left to delete.
    pub finished: bool,
}

fn get_u64s<const N: usize, S: Source>(src: &S, key: &[u8]) -> Result<Option<[u64; N]>, MvccError> {
    let Some(v) = btree::get(src, key)? else {
        return Ok(None);
    };
    if v.len() != N * 8 {
        return Err(MvccError::Record(format!(
            "meta key {key:?} has {} bytes",
            v.len()
        )));
    }
    Ok(Some(std::array::from_fn(|i| {
        u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    })))
}
fn u64s(vals: &[u64]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Mvcc {
    pub fn open(opts: &StoreOptions) -> Result<Mvcc, MvccError> {
        let store = PageStore::open(opts)?;
        let snap = store.reader().snapshot();
        let rev = get_u64s::<2, _>(&snap, META_REV)?.map_or(1, |r| r[0] as i64);
        let compacted =
            get_u64s::<1, _>(&snap, META_COMPACT)?.map_or(NEVER_COMPACTED, |r| r[0] as i64);
        let applied = get_u64s::<2, _>(&snap, META_APPLIED)?.map_or((0, 0), |a| (a[0], a[1]));
        let auth = Arc::new(load_auth(&snap)?);
        let compaction = PendingCompaction::load(&snap)?;
        let alarms = load_alarms(&snap)?;
        drop(snap);
        let mut m = Mvcc {
            store,
            rev,
            compacted,
            applied,
            compaction,
            auth_reader: AuthReader::new(auth.clone()),
            auth,
            alarms,
        };
        // Publish the tag so readers see the recovered revisions.
        let tag = m.tag();
        m.store.begin().commit(tag)?;
        Ok(m)
    }

    fn tag(&self) -> Tag {
        [
            self.rev as u64,
            self.compacted as u64,
            self.applied.0,
            self.applied.1,
        ]
    }
    pub fn reader(&self) -> MvccReader {
        MvccReader {
            reader: self.store.reader(),
        }
    }
    pub fn revision(&self) -> i64 {
        self.rev
    }
    /// The auth state every core reads (republished after each batch that changed it).
    pub fn auth_reader(&self) -> AuthReader {
        self.auth_reader.clone()
    }
    /// The auth state after the last applied entry.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }
    /// The alarms raised after the last applied entry, in (member, type) order.
    pub fn alarms(&self) -> Vec<Alarm> {
        self.alarms.iter().copied().collect()
    }
    /// Whether the raised alarms are exactly `these` (in (member, type) order).
    pub fn alarms_are(&self, these: &[Alarm]) -> bool {
        self.alarms.iter().eq(these)
    }
    pub fn compacted(&self) -> i64 {
        self.compacted
    }
    /// Last applied Raft (index, term).
    pub fn applied(&self) -> (u64, u64) {
        self.applied
    }
    /// Bytes of the db file in use (etcd's dbSize).
    pub fn db_size(&self) -> u64 {
        self.store.size_pages() * crate::page::PAGE_SIZE as u64
    }
    /// Bytes in use by live pages (etcd's dbSizeInUse).
    pub fn db_size_in_use(&self) -> u64 {
        self.pages_in_use() * crate::page::PAGE_SIZE as u64
    }
    /// Pages below the high-water mark that are not free (the tree, the free list, the metas),
    /// and those the in-memory nodes will take (§3.6).
    pub fn pages_in_use(&self) -> u64 {
        self.store.pages_in_use()
    }

    /// The stored membership (raft/'s encoding), if any entry or bootstrap stored one.
    pub fn membership(&self) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(btree::get(&self.store.reader().snapshot(), META_MEMBERS)?.map(|v| v.to_vec()))
    }

    /// This member's (member id, cluster id), once [`Mvcc::set_local_identity`] stored them.
    pub fn local_identity(&self) -> Result<Option<(u64, u64)>, MvccError> {
        Ok(get_u64s::<2, _>(&self.store.reader().snapshot(), META_LOCAL)?.map(|a| (a[0], a[1])))
    }

    /// Stores this member's identity and makes it durable before returning.
    pub fn set_local_identity(&mut self, member_id: u64, cluster_id: u64) -> Result<(), MvccError> {
        let tag = self.tag();
        let mut txn = self.store.begin();
        txn.put(META_LOCAL, &u64s(&[member_id, cluster_id]))?;
        txn.commit(tag)?;
        self.sync()
    }

    /// Replaces the whole state with a Raft snapshot's entries (this member's identity kept):
    /// builds the new tree beside the published one in bounded transactions, then switches to
    /// it in one commit (DESIGN.md §4.7). Not durable yet: the caller makes it durable (a
    /// checkpoint's durable commit) before the WAL may start after the snapshot.
    /// `index` is the snapshot's applied index: a copy that does not say it (a truncated or mixed
    /// stream), or an entry that fails, is refused and the published state is left untouched.
    pub fn install<E: std::fmt::Display>(
        &mut self,
        entries: impl Iterator<Item = Result<RawEntry, E>>,
        index: u64,
    ) -> Result<(), MvccError> {
        self.install_with(entries, index, InstallBatch::default())
    }

    /// [`Mvcc::install`] with other bounds per transaction.
    pub fn install_with<E: std::fmt::Display>(
        &mut self,
        entries: impl Iterator<Item = Result<RawEntry, E>>,
        index: u64,
        batch: InstallBatch,
    ) -> Result<(), MvccError> {
        assert!(
            batch.bytes > 0 && batch.entries > 0,
            "an empty install batch"
        );
        let local = btree::get(&self.store.reader().snapshot(), META_LOCAL)?.map(|v| v.to_vec());
        let built = self.build_beside(entries, local.as_deref(), index, batch);
        let (tag, compaction, auth) = match built {
            Ok(b) => b,
            Err(e) => {
                // The error that stopped the install is the one to report; a failure to walk
                // the abandoned tree only loses its space.
                let _ = self.store.abandon_beside();
                return Err(e);
            }
        };
        self.auth = Arc::new(auth);
        // The auth state goes out before the data it guards (see `apply_with_events`).
        self.auth_reader.publish(self.auth.clone());
        self.store.switch_to_beside(tag)?;
        self.alarms = load_alarms(&self.store.reader().snapshot())?;
        self.rev = tag[TAG_REV] as i64;
        self.compacted = tag[TAG_COMPACT] as i64;
        self.applied = (tag[TAG_APPLIED], tag[TAG_TERM]);
        // The sender's deletion of what a compaction dropped goes on here (§4.9).
        self.compaction = compaction;
        Ok(())
    }

    /// Steps 1–2 of an install (§4.7): the snapshot's entries, then `local`, into the tree built
    /// beside, at most `batch` per transaction; returns its tag, pending compaction and auth
    /// state once its applied index is `index`.
    fn build_beside<E: std::fmt::Display>(
        &mut self,
        mut entries: impl Iterator<Item = Result<RawEntry, E>>,
        local: Option<&[u8]>,
        index: u64,
        batch: InstallBatch,
    ) -> Result<(Tag, Option<PendingCompaction>, AuthState), MvccError> {
        let mut more = true;
        while more {
            let mut txn = self.store.begin_beside();
            let (mut bytes, mut n) = (0, 0);
            while bytes < batch.bytes && n < batch.entries {
                let Some(e) = entries.next() else {
                    more = false;
                    break;
                };
                let (k, v) = e.map_err(|e| MvccError::Record(format!("snapshot: {e}")))?;
                if k != META_LOCAL {
                    txn.put(&k, &v)?;
                    bytes += k.len() + v.len();
                    n += 1;
                }
            }
            if !more && let Some(local) = local {
                txn.put(META_LOCAL, local)?;
            }
            txn.commit_beside()?;
        }
        let txn = self.store.begin_beside();
        let rev = get_u64s::<2, _>(&txn, META_REV)?.map_or(1, |r| r[0] as i64);
        let compacted =
            get_u64s::<1, _>(&txn, META_COMPACT)?.map_or(NEVER_COMPACTED, |r| r[0] as i64);
        let applied = get_u64s::<2, _>(&txn, META_APPLIED)?.map_or((0, 0), |a| (a[0], a[1]));
        if applied.0 != index {
            return Err(MvccError::Record(format!(
                "snapshot: its state is at applied index {}, its metadata says {index}",
                applied.0
            )));
        }
        let compaction = PendingCompaction::load(&txn)?;
        let auth = load_auth(&txn)?;
        Ok((
            [rev as u64, compacted as u64, applied.0, applied.1],
            compaction,
            auth,
        ))
    }

    /// Pages written by the largest page-store commit since the last call (tests check the
    /// bounds of an install and of compaction batches with it).
    pub fn take_largest_commit_pages(&mut self) -> u64 {
        self.store.take_largest_commit_pages()
    }

    /// Accounts for every page of the store ([`btree::PageStore::audit`]; tests and tools).
    pub fn audit(&self) -> Result<btree::PageAudit, MvccError> {
        Ok(self.store.audit()?)
    }

    /// Every lease, for the lessor at startup.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, MvccError> {
        all_leases(&self.store.reader().snapshot())
    }
    /// Durable checkpoint (§3.3): after it returns, the state up to [`Mvcc::applied`] survives a
    /// crash without the WAL.
    pub fn sync(&mut self) -> Result<(), MvccError> {
        Ok(self.store.sync()?)
    }

    /// Starts a durable checkpoint of the state up to [`Mvcc::applied`] (returned with the job);
    /// run the job off the core, then call [`Mvcc::finish_checkpoint`]. Applies may go on meanwhile.
    pub fn begin_checkpoint(&mut self) -> Result<(btree::SyncJob, (u64, u64)), MvccError> {
        Ok((self.store.begin_sync()?, self.applied))
    }

    /// Whether the page store holds enough unwritten in-memory nodes that a checkpoint should
    /// begin (engine/DESIGN.md §3.6.1).
    pub fn wants_checkpoint(&self) -> bool {
        self.store.wants_sync()
    }

    pub fn finish_checkpoint(&mut self, job: btree::SyncJob) {
        self.store.finish_sync(job);
    }

    /// Applies a batch of committed entries in one page-store transaction and publishes the result.
    /// Entries at or below the applied index are skipped (replay after restart). Returns one result
    /// per entry with a request.
    pub fn apply(
        &mut self,
        entries: &[Applied<'_>],
    ) -> Result<Vec<Result<WriteResult, MvccError>>, MvccError> {
        self.apply_with_events(entries, &mut Vec::new())
    }

    /// [`Mvcc::apply`], appending every change to `events` in revision order (the watch feed).
    pub fn apply_with_events(
        &mut self,
        entries: &[Applied<'_>],
        events: &mut Vec<Event>,
    ) -> Result<Vec<Result<WriteResult, MvccError>>, MvccError> {
        let mut results = Vec::new();
        let published_auth = self.auth.clone();
        let mut alarms = self.alarms.clone();
        let mut txn = self.store.begin();
        let (mut rev, mut compacted, mut applied) = (self.rev, self.compacted, self.applied);
        for e in entries {
            if e.index <= applied.0 {
                continue;
            }
            assert!(
                applied.0 == 0 || e.index == applied.0 + 1,
                "apply gap: {} after {}",
                e.index,
                applied.0
            );
            applied = (e.index, e.term);
            if let Some(m) = e.membership {
                txn.put(META_MEMBERS, m)?;
            }
            let Some(req) = e.request else { continue };
            let events_before = events.len();
            let mut w = Writer {
                txn: &mut txn,
                rev,
                sub: 0,
                compacted,
                events: &mut *events,
                auth: &mut self.auth,
                alarms: &mut alarms,
                index: e.index,
            };
            // etcd's corrupt and capped appliers wrap the others: checked before auth.
            let res = w.check_alarms(req).and_then(|()| match e.caller {
                Some(c) => w.check(c, req).and_then(|()| w.execute(req)),
                None => w.execute(req),
            });
            if w.sub > 0 {
                rev += 1;
            }
            compacted = w.compacted;
            match res {
                // The store failed under the request: the whole batch is abandoned (the
                // transaction is dropped, nothing is published), whatever the request did.
                Err(MvccError::Store(e)) => return Err(MvccError::Store(e)),
                Err(MvccError::Record(e)) => return Err(MvccError::Record(e)),
                r => {
                    // A request refused by etcd's rules must not have changed anything: its
                    // refusal is answered while the batch's other requests commit.
                    assert!(
                        r.is_ok() || (w.sub == 0 && events.len() == events_before),
                        "entry {}: a refused request ({:?}) changed the state",
                        e.index,
                        r.as_ref().err()
                    );
                    results.push(r);
                }
            }
        }
        txn.put(META_APPLIED, &u64s(&[applied.0, applied.1]))?;
        txn.put(META_REV, &u64s(&[rev as u64, 0]))?;
        txn.put(META_COMPACT, &u64s(&[compacted as u64]))?;
        let compaction = if compacted != self.compacted {
            PendingCompaction::load(&txn)?
        } else {
            self.compaction
        };
        debug_assert!(compaction.is_none_or(|c| c.target == compacted));
        let tag = [rev as u64, compacted as u64, applied.0, applied.1];
        // The batch's auth state goes out before its data: a reader that checked its permission
        // against the old state and then sees data written after a revoke finds the auth
        // revision moved when it checks again after its read (etcd's doSerialize).
        if !Arc::ptr_eq(&published_auth, &self.auth) {
            self.auth_reader.publish(self.auth.clone());
        }
        txn.commit(tag)?;
        self.rev = rev;
        self.compacted = compacted;
        self.applied = applied;
        self.compaction = compaction;
        self.alarms = alarms;
        Ok(results)
    }

    /// Whether a compaction's dropped versions are still being deleted (§4.9).
    pub fn compaction_pending(&self) -> bool {
        self.compaction.is_some()
    }

    /// One deletion batch of the pending compaction (§4.9), in its own transaction: at most
    /// [`COMPACTION_BATCH`] versions deleted and `r` entries visited. Changes nothing any read
    /// can see; the applied index, revisions and published tag stay as they are.
    pub fn compact_step(&mut self) -> Result<CompactionStep, MvccError> {
        let Some(mut pending) = self.compaction else {
            return Ok(CompactionStep {
                finished: true,
                ..CompactionStep::default()
            });
        };
        debug_assert_eq!(pending.target, self.compacted);
        let target = pending.target;
        let tag = self.tag();
        let mut txn = self.store.begin();
        let mut step = CompactionStep::default();
        while step.deleted < COMPACTION_BATCH && step.visited < COMPACTION_BATCH {
            let (main, sub, key) = {
                let mut cur = txn.cursor();
                cur.seek(&rev_pos_key(pending.next.0, pending.next.1))?;
                if !cur.valid() || cur.key().first() != Some(&b'r') {
                    step.finished = true;
                    break;
                }
                let tk = cur.key();
                if tk.len() != 17 {
                    return Err(MvccError::Record(format!(
                        "malformed revision-log key {tk:?}"
                    )));
                }
                let main = u64::from_be_bytes(tk[1..9].try_into().expect("8 bytes"));
                let sub = u64::from_be_bytes(tk[9..17].try_into().expect("8 bytes"));
                if main as i64 > target {
                    step.finished = true;
                    break;
                }
                (main, sub, cur.value().to_vec())
            };
            step.visited += 1;
            let budget = COMPACTION_BATCH - step.deleted;
            // The key's versions ≤ target, newest first: the newest is kept unless it is a
            // tombstone, and then it goes last, so a read at ≥ target never sees an older one.
            let mut older: Vec<(i64, u32)> = Vec::new();
            let mut newest_tombstone: Option<(i64, u32)> = None;
            let mut more = false;
            {
                let prefix = key_prefix(&key);
                let mut cur = txn.cursor();
                cur.seek(&version_key(&key, target))?;
                let mut first = true;
                while cur.valid()
                    && cur.key().starts_with(&prefix)
                    && cur.key().len() == prefix.len() + 8
                {
                    let (_, m) = split_version_key(cur.key())?;
                    let v = decode_version(cur.value())?;
                    if first {
                        if v.tombstone {
                            newest_tombstone = Some((m, v.sub.to_native()));
                        }
                        first = false;
                    } else if older.len() == budget {
                        more = true;
                        break;
                    } else {
                        older.push((m, v.sub.to_native()));
                    }
                    cur.advance()?;
                }
            }
            for &(m, s) in &older {
                txn.delete(&version_key(&key, m))?;
                txn.delete(&rev_key(m, s))?;
            }
            step.deleted += older.len();
            if more {
                // The position stays on this key's entry, or on a later one of the same key if
                // this one went (its kept version's entry is at or after it): visited again.
                break;
            }
            if let Some((m, s)) = newest_tombstone
                && step.deleted < COMPACTION_BATCH
            {
                txn.delete(&version_key(&key, m))?;
                txn.delete(&rev_key(m, s))?;
                step.deleted += 1;
            } else if newest_tombstone.is_some() {
                break;
            }
            pending.next = (main, sub + 1);
        }
        if step.finished {
            txn.delete(META_COMPACTION)?;
            self.compaction = None;
        } else {
            txn.put(META_COMPACTION, &pending.encode())?;
            self.compaction = Some(pending);
        }
        txn.commit(tag)?;
        Ok(step)
    }
}

/// Executes requests inside one page-store transaction at main revision `rev + 1`.
struct Writer<'t, 's, 'e> {
    txn: &'t mut WriteTxn<'s>,
    /// Revision before this request.
    rev: i64,
    /// Changes made so far by this request (the next sub-revision).
    sub: u32,
    compacted: i64,
    events: &'e mut Vec<Event>,
    auth: &'e mut Arc<AuthState>,
    alarms: &'e mut BTreeSet<Alarm>,
    /// The Raft index of the entry (part of a simple token).
    index: u64,
}

impl Writer<'_, '_, '_> {
    /// Revision a read inside this request sees (etcd: begin revision, +1 once it changed something).
    fn read_rev(&self) -> i64 {
        self.rev + i64::from(self.sub > 0)
    }

    /// etcd's apply-time auth checks (apply_auth.go), against the state at this entry.
    fn check(&self, caller: &Caller, req: &Request) -> Result<(), MvccError> {
        let txn = &*self.txn;
        self.auth
            .check_request(caller, req, &mut |id| attached_keys(txn, id))
            .map_err(|d| match d {
                Denied::Auth(e) => MvccError::Auth(e),
                Denied::Read(e) => e,
            })
    }

    /// etcd's corrupt applier (every write refused while a CORRUPT alarm is raised) and capped
    /// applier (while NOSPACE is: a Put, a Txn that puts anywhere, a LeaseGrant).
    fn check_alarms(&self, req: &Request) -> Result<(), MvccError> {
        let raised = |t: i32| self.alarms.iter().any(|a| a.alarm == t);
        let writes = !matches!(
            req,
            Request::LeaseCheckpoint(_) | Request::Auth(_) | Request::Alarm(_)
        );
        if writes && raised(ALARM_CORRUPT) {
            return Err(MvccError::Corrupt);
        }
        let adds = match req {
            Request::Put(_) | Request::LeaseGrant(_) => true,
            Request::Txn(t) => txn_puts(t),
            _ => false,
        };
        if adds && raised(ALARM_NOSPACE) {
            return Err(MvccError::NoSpace);
        }
        Ok(())
    }

    /// etcd's applyAlarm for ACTIVATE and DEACTIVATE: an alarm of type NONE is never raised; a
    /// raise answers the alarm even when it was raised already, a clear only when it was.
    fn apply_alarm(
        &mut self,
        req: &crate::request::AlarmRequest,
    ) -> Result<WriteResult, MvccError> {
        let a = Alarm {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let changed = if req.activate {
            req.alarm != 0 && self.alarms.insert(a)
        } else {
            self.alarms.remove(&a)
        };
        if changed {
            if req.activate {
                self.txn.put(&alarm_key(a), &[])?;
            } else {
                self.txn.delete(&alarm_key(a))?;
            }
        }
        Ok(WriteResult::Alarm {
            revision: self.rev,
            alarm: (changed || (req.activate && req.alarm != 0)).then_some(a),
            changed,
        })
    }

    fn apply_auth(&mut self, req: &crate::request::AuthRequest) -> Result<WriteResult, MvccError> {
        let (was_enabled, was_rev) = (self.auth.enabled(), self.auth.revision());
        let mut touched = Vec::new();
        let outcome = Arc::make_mut(self.auth).apply(req, self.index, &mut touched)?;
        let auth = &**self.auth;
        for t in &touched {
            match t {
                Touched::User(name) => match auth.user(name) {
                    Some(u) => self.txn.put(&user_key(name), &auth::encode_user(u))?,
                    None => {
                        self.txn.delete(&user_key(name))?;
                    }
                },
                Touched::Role(name) => match auth.role(name) {
                    Some(r) => self.txn.put(&role_key(name), &auth::encode_role(r))?,
                    None => {
                        self.txn.delete(&role_key(name))?;
                    }
                },
            }
        }
        if (was_enabled, was_rev) != (auth.enabled(), auth.revision()) {
            self.txn.put(
                META_AUTH,
                &u64s(&[u64::from(auth.enabled()), auth.revision()]),
            )?;
        }
        Ok(WriteResult::Auth {
            revision: self.rev,
            outcome,
        })
    }

    fn execute(&mut self, req: &Request) -> Result<WriteResult, MvccError> {
        match req {
            Request::Auth(a) => self.apply_auth(a),
            Request::Alarm(a) => self.apply_alarm(a),
            Request::Put(p) => {
                // etcd checks a plain Put's lease before its ignore_value/ignore_lease (inside a
                // Txn the order is the other way round, see `check_put`).
                self.check_lease(p.lease)?;
                self.check_put(p)?;
                Ok(WriteResult::Put(self.put(p)?))
            }
            Request::DeleteRange(d) => Ok(WriteResult::DeleteRange(self.delete_range(d)?)),
            Request::Txn(t) => {
                let path = self.txn_path(t)?;
                // etcd: every put of the chosen branches first, then every range.
                self.check_txn(t, &path, &mut |w, op| match op {
                    RequestOp::Put(p) => w.check_put(p),
                    _ => Ok(()),
                })?;
                self.check_txn(t, &path, &mut |w, op| match op {
                    RequestOp::Range(r) => w.check_range(r),
                    _ => Ok(()),
                })?;
                let mut path_iter = path.iter();
                let r = self.txn(t, &mut path_iter)?;
                Ok(WriteResult::Txn(TxnResult {
                    revision: self.read_rev(),
                    ..r
                }))
            }
            Request::Compact(c) => self.compact(c),
            Request::LeaseGrant(g) => {
                if get_lease(&*self.txn, g.id)?.is_some() {
                    return Err(MvccError::LeaseExist);
                }
                self.put_lease(g.id, g.ttl, 0)?;
                Ok(WriteResult::LeaseGrant {
                    revision: self.rev,
                    id: g.id,
                    ttl: g.ttl,
                })
            }
            Request::LeaseRevoke(r) => {
                if get_lease(&*self.txn, r.id)?.is_none() {
                    return Err(MvccError::LeaseNotFound);
                }
                // Every attached key goes in one revision, as one DeleteRange would.
                for key in attached_keys(&*self.txn, r.id)? {
                    self.txn.delete(&attach_key(r.id, &key))?;
                    if let Some(kv) = latest(&*self.txn, &key)? {
                        self.tombstone(kv)?;
                    }
                }
                self.txn.delete(&lease_key(r.id))?;
                Ok(WriteResult::LeaseRevoke {
                    revision: self.read_rev(),
                })
            }
            Request::LeaseCheckpoint(c) => {
                for &(id, remaining) in &c.checkpoints {
                    if let Some(l) = get_lease(&*self.txn, id)? {
                        self.put_lease(id, l.ttl, remaining)?;
                    }
                }
                Ok(WriteResult::LeaseCheckpoint { revision: self.rev })
            }
        }
    }

    fn put_lease(&mut self, id: i64, ttl: i64, remaining: i64) -> Result<(), MvccError> {
        let rec = LeaseRecord { ttl, remaining };
        let bytes =
            rkyv::to_bytes::<rancor::Error>(&rec).expect("serializing to memory cannot fail");
        self.txn.put(&lease_key(id), &bytes)?;
        Ok(())
    }

    fn check_lease(&self, lease: i64) -> Result<(), MvccError> {
        if lease != 0 && get_lease(&*self.txn, lease)?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    fn check_put(&self, p: &PutRequest) -> Result<(), MvccError> {
        if (p.ignore_value || p.ignore_lease) && latest(&*self.txn, &p.key)?.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        self.check_lease(p.lease)
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResult, MvccError> {
        let prev = latest(&*self.txn, &p.key)?;
        let main = self.rev + 1;
        let (value, lease) = match &prev {
            Some(kv) => (
                if p.ignore_value {
                    kv.value.clone()
                } else {
                    p.value.clone()
                },
                if p.ignore_lease { kv.lease } else { p.lease },
            ),
            None => (p.value.clone(), p.lease),
        };
        let v = Version {
            sub: self.sub,
            create_revision: prev.as_ref().map_or(main, |kv| kv.create_revision),
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            lease,
            tombstone: false,
            value,
        };
        let old_lease = prev.as_ref().map_or(0, |kv| kv.lease);
        if old_lease != 0 && old_lease != lease {
            self.txn.delete(&attach_key(old_lease, &p.key))?;
        }
        if lease != 0 {
            self.txn.put(&attach_key(lease, &p.key), b"")?;
        }
        self.write_version(&p.key, main, &v)?;
        // The stored bytes are written: the event takes the value and the previous version
        // instead of copies (the reply copies the previous one only when asked for it).
        let prev_kv = if p.prev_kv { prev.clone() } else { None };
        self.events.push(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: p.key.clone(),
                create_revision: v.create_revision,
                mod_revision: main,
                version: v.version,
                value: v.value,
                lease,
            },
            prev_kv: prev,
        });
        Ok(PutResult {
            revision: main,
            prev_kv,
        })
    }

    fn write_version(&mut self, key: &[u8], main: i64, v: &Version) -> Result<(), MvccError> {
        let bytes = archive_into(v, Vec::with_capacity(64 + v.value.len()));
        self.txn.put(&version_key(key, main), &bytes)?;
        self.txn.put(&rev_key(main, v.sub), key)?;
        self.sub += 1;
        Ok(())
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteResult, MvccError> {
        let mut victims = Vec::new();
        scan(&*self.txn, &d.key, &d.range_end, i64::MAX, |g, main, v| {
            victims.push(to_kv(key_of_group(g)?, main, v, false));
            Ok(true)
        })?;
        for kv in &victims {
            if kv.lease != 0 {
                self.txn.delete(&attach_key(kv.lease, &kv.key))?;
            }
            self.tombstone(kv.clone())?;
        }
        Ok(DeleteResult {
            revision: self.read_rev(),
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        })
    }

    /// Deletes live version `prev` at this request's revision.
    fn tombstone(&mut self, prev: KeyValue) -> Result<(), MvccError> {
        let main = self.rev + 1;
        let tomb = Version {
            sub: self.sub,
            create_revision: 0,
            version: 0,
            lease: 0,
            tombstone: true,
            value: Vec::new(),
        };
        self.write_version(&prev.key, main, &tomb)?;
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: prev.key.clone(),
                mod_revision: main,
                ..KeyValue::default()
            },
            prev_kv: Some(prev),
        });
        Ok(())
    }

    fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        compare(&*self.txn, c)
    }

    /// Evaluates every compare up front (etcd's txn path): one bool per txn, nested in order.
    fn txn_path(&self, t: &TxnRequest) -> Result<Vec<bool>, MvccError> {
        let mut path = Vec::new();
        self.txn_path_into(t, &mut path)?;
        Ok(path)
    }
    fn txn_path_into(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(inner) = op {
                self.txn_path_into(inner, path)?;
            }
        }
        Ok(())
    }

    /// [`check_txn_range`] against the state before this txn.
    fn check_range(&self, r: &RangeRequest) -> Result<(), MvccError> {
        check_txn_range(r, self.rev, self.compacted)
    }

    /// Runs `check` on every non-txn op of the chosen branches (nested txns included) against the
    /// state before the txn, as etcd's checkRequests. Returns the number of path entries used.
    fn check_txn(
        &self,
        t: &TxnRequest,
        path: &[bool],
        check: &mut impl FnMut(&Self, &RequestOp) -> Result<(), MvccError>,
    ) -> Result<usize, MvccError> {
        let ops = if path[0] { &t.success } else { &t.failure };
        let mut used = 1;
        for op in ops {
            match op {
                RequestOp::Txn(inner) => used += self.check_txn(inner, &path[used..], check)?,
                op => check(self, op)?,
            }
        }
        Ok(used)
    }

    fn txn<'p>(
        &mut self,
        t: &TxnRequest,
        path: &mut impl Iterator<Item = &'p bool>,
    ) -> Result<TxnResult, MvccError> {
        let ok = *path.next().expect("txn path covers every executed txn");
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => {
                    // Header: the txn's read revision; data: at `r.revision` when set (checked
                    // against the state before the txn by `check_range`).
                    let current = self.read_rev();
                    let rev = if r.revision > 0 { r.revision } else { current };
                    OpResult::Range(range(&*self.txn, r, rev, current)?)
                }
                RequestOp::Put(p) => OpResult::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => OpResult::DeleteRange(self.delete_range(d)?),
                // etcd leaves a nested txn's response header empty: its revision is 0.
                RequestOp::Txn(inner) => OpResult::Txn(self.txn(inner, path)?),
            });
        }
        Ok(TxnResult {
            revision: 0,
            succeeded: ok,
            responses,
        })
    }

    /// Schedules the compaction (§4.9): reads below `target` fail from this entry on; the
    /// versions it drops are deleted afterwards in batches ([`Mvcc::compact_step`]).
    fn compact(&mut self, c: &CompactRequest) -> Result<WriteResult, MvccError> {
        if c.revision <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if c.revision > self.rev {
            return Err(MvccError::FutureRev);
        }
        let target = c.revision;
        // A pending compaction merges: its position stays (keys it passed that changed since
        // are named again by entries after it).
        let next = match PendingCompaction::load(&*self.txn)? {
            Some(p) => p.next,
            None => ((self.compacted + 1) as u64, 0),
        };
        self.txn.put(
            META_COMPACTION,
            &PendingCompaction { next, target }.encode(),
        )?;
        self.compacted = target;
        Ok(WriteResult::Compact { revision: self.rev })
    }
}
