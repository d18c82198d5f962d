//! etcd's db schema beyond the `key` bucket: the names of etcd's ten buckets and the encoding of
//! every value etcd 3.4/3.5 keeps in `meta`, `lease`, `members`, `members_removed`, `cluster`,
//! `alarm`, `auth`, `authUsers` and `authRoles` (reference `bbolt-etcd-formats.md` §2.3–2.8), both
//! ways; [`SnapshotSource`] fills all ten buckets from one [`StateSnapshot`] for the bbolt writer.
//!
//! Who calls it:
//! - the server's `Maintenance.Snapshot` (net/src/maintenance.rs) streams
//!   `bbolt::write_snapshot` over a [`SnapshotSource`], so that a snapshot of retcd is the db etcd
//!   itself would have written for the same state (engine/DESIGN.md §7.5);
//! - `retcdutl snapshot restore` (etcd → retcd migration) reads an etcd db with `bbolt::Db` and
//!   decodes each bucket's values with the `decode_*` functions here.
//!
//! Protobufs are written as Go's gogo protobuf writes them (fields in number order, proto3 zero
//! values omitted) and read in any valid encoding, as Go's unmarshal does (fields in any order,
//! last scalar wins, unknown fields skipped). JSON is written as Go's `encoding/json` writes
//! etcd's member struct (field order, omitempty, Go's HTML-safe string escapes) and read with any
//! field order and spacing. The `key` bucket itself is `etcd_keys`'s.

use crate::auth::{Role, User};
use crate::bbolt::{self, SourceError, Visit};
use crate::etcd_keys::{self, BucketRevision};
use crate::mvcc::StateSnapshot;
use crate::request::{PermKind, Permission};

/// The `key` bucket: revision → `mvccpb.KeyValue` (`etcd_keys`).
pub const KEY: &[u8] = etcd_keys::KEY_BUCKET;
pub const META: &[u8] = b"meta";
pub const LEASE: &[u8] = b"lease";
pub const ALARM: &[u8] = b"alarm";
pub const CLUSTER: &[u8] = b"cluster";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const AUTH_ROLES: &[u8] = b"authRoles";

/// Every bucket a real etcd 3.4/3.5 db holds (reference §2.1), in bbolt's (byte) order. A db we
/// write holds all of them, empty or not: restore tools require some (§2.9).
pub const BUCKETS: [&[u8]; 10] = [
    ALARM,
    AUTH,
    AUTH_ROLES,
    AUTH_USERS,
    CLUSTER,
    KEY,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    META,
];

// Keys of the `meta` bucket.
/// u64 BE: the Raft index of the last applied entry.
pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
/// u64 BE: the Raft term of that entry (etcd 3.5+).
pub const TERM: &[u8] = b"term";
/// 17-byte revision {C, 0}: a compaction at C was requested.
pub const SCHEDULED_COMPACT_REV: &[u8] = b"scheduledCompactRev";
/// 17-byte revision {C, 0}: the compaction at C finished.
pub const FINISHED_COMPACT_REV: &[u8] = b"finishedCompactRev";
/// JSON of `raftpb.ConfState` (etcd 3.5+).
pub const CONF_STATE: &[u8] = b"confState";

// Keys of the `cluster` bucket.
/// ASCII "major.minor.0".
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";

// Keys of the `auth` bucket.
/// One byte, 1 = enabled; absent = never enabled.
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
/// u64 BE.
pub const AUTH_REVISION: &[u8] = b"authRevision";

/// The value of every `members_removed` entry.
pub const REMOVED: &[u8] = b"removed";

/// A value (or key) that is not what etcd writes there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd db: {0}")]
pub struct DecodeError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

// ---------------------------------------------------------------------------------------------
// meta

/// A u64 as etcd stores `consistent_index`, `term` and `authRevision`: 8 bytes big-endian.
pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn decode_u64(b: &[u8]) -> Result<u64, DecodeError> {
    match <[u8; 8]>::try_from(b) {
        Ok(a) => Ok(u64::from_be_bytes(a)),
        Err(_) => err(format!("a u64 is 8 bytes, not {}", b.len())),
    }
}

/// `scheduledCompactRev` / `finishedCompactRev` for a compaction at `rev`: the revision key
/// {rev, 0}.
pub fn encode_compact_rev(rev: i64) -> Vec<u8> {
    etcd_keys::revision_key(BucketRevision {
        main: rev,
        sub: 0,
        tombstone: false,
    })
}

/// The compacted revision (main) of a `scheduledCompactRev` / `finishedCompactRev` value.
pub fn decode_compact_rev(b: &[u8]) -> Result<i64, DecodeError> {
    if b.len() != etcd_keys::REVISION_KEY_LEN {
        return err(format!(
            "a compaction revision is 17 bytes, not {}",
            b.len()
        ));
    }
    etcd_keys::decode_revision_key(b)
        .map(|r| r.main)
        .map_err(|e| DecodeError(format!("compaction revision: {}", e.0)))
}

/// `raftpb.ConfState` as etcd 3.5 keeps it in `meta/confState` (joint-consensus fields are
/// never set by retcd, which only makes v1 configuration changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// JSON as Go writes `raftpb.ConfState`: the four id arrays `omitempty`, then `auto_leave`.
pub fn encode_conf_state(c: &ConfState) -> Vec<u8> {
    let mut s = String::from("{");
    for (name, ids) in [("voters", &c.voters), ("learners", &c.learners)] {
        if !ids.is_empty() {
            let list: Vec<String> = ids.iter().map(u64::to_string).collect();
            s.push_str(&format!("\"{name}\":[{}],", list.join(",")));
        }
    }
    s.push_str("\"auto_leave\":false}");
    s.into_bytes()
}

pub fn decode_conf_state(b: &[u8]) -> Result<ConfState, DecodeError> {
    let v: serde_json::Value =
        serde_json::from_slice(b).map_err(|e| DecodeError(format!("confState: {e}")))?;
    let ids = |name: &str| -> Result<Vec<u64>, DecodeError> {
        match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .ok_or_else(|| DecodeError(format!("confState {name}: {x} is not an id")))
                })
                .collect(),
            Some(x) => err(format!("confState {name}: {x} is not a list")),
        }
    };
    Ok(ConfState {
        voters: ids("voters")?,
        learners: ids("learners")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Protobuf, by hand (gogo's field order; proto3 zero values omitted)

use crate::protowire::{Field, WireError, fields, put_len, put_uint};

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> DecodeError {
        DecodeError(e.0)
    }
}

fn wrong_type<T>(what: &str, field: u64) -> Result<T, DecodeError> {
    err(format!("{what}: field {field} has the wrong wire type"))
}

fn utf8(b: &[u8], what: &str) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError(format!("{what}: not UTF-8")))
}

// ---------------------------------------------------------------------------------------------
// lease

/// One lease as etcd stores it (`leasepb.Lease`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Remaining TTL at the last checkpoint; 0 = none (the lease restarts with its full TTL).
    pub remaining_ttl: i64,
}

/// The lease bucket's key: the id as 8 bytes big-endian.
pub fn lease_key(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn decode_lease_key(b: &[u8]) -> Result<i64, DecodeError> {
    match <[u8; 8]>::try_from(b) {
        Ok(a) => Ok(i64::from_be_bytes(a)),
        Err(_) => err(format!("a lease key is 8 bytes, not {}", b.len())),
    }
}

pub fn encode_lease(l: &Lease) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    put_uint(1, l.id as u64, &mut out);
    put_uint(2, l.ttl as u64, &mut out);
    put_uint(3, l.remaining_ttl as u64, &mut out);
    out
}

pub fn decode_lease(b: &[u8]) -> Result<Lease, DecodeError> {
    let mut l = Lease::default();
    fields(b, "leasepb.Lease", |f, v| {
        match (f, v) {
            (1, Field::Varint(x)) => l.id = x as i64,
            (2, Field::Varint(x)) => l.ttl = x as i64,
            (3, Field::Varint(x)) => l.remaining_ttl = x as i64,
            (1..=3, _) => return wrong_type("leasepb.Lease", f),
            _ => {}
        }
        Ok(())
    })?;
    Ok(l)
}

// ---------------------------------------------------------------------------------------------
// members, members_removed, cluster

/// One member as etcd's membership store writes it (`membership.Member`: its id, RaftAttributes
/// and Attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
    /// Empty until the member published its name.
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The key of a member in `members` and `members_removed`: its id in lowercase hex without
/// leading zeros (Go's `strconv.FormatUint(id, 16)`).
pub fn member_key(id: u64) -> Vec<u8> {
    format!("{id:x}").into_bytes()
}

pub fn decode_member_key(b: &[u8]) -> Result<u64, DecodeError> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 16)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| DecodeError(format!("member key {:?} is not a hex id", b.escape_ascii())))
}

/// A JSON string as Go's `encoding/json` writes it: HTML-safe (`<`, `>`, `&` escaped), U+2028
/// and U+2029 escaped, control characters as `\n`, `\r`, `\t` or `\u00XX`.
fn push_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_json_strings(list: &[String], out: &mut String) {
    out.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(s, out);
    }
    out.push(']');
}

/// A `members` value: `{"id":…,"peerURLs":[…],"isLearner":true,"name":…,"clientURLs":[…]}`,
/// with `isLearner`, `name` and `clientURLs` omitted when false / empty, as etcd's struct tags
/// say. `peerURLs` has no omitempty: an empty list is `null` in Go when nil; etcd never writes a
/// member without peer URLs, and we write `[]`.
pub fn encode_member(m: &Member) -> Vec<u8> {
    let mut s = format!("{{\"id\":{},\"peerURLs\":", m.id);
    push_json_strings(&m.peer_urls, &mut s);
    if m.is_learner {
        s.push_str(",\"isLearner\":true");
    }
    if !m.name.is_empty() {
        s.push_str(",\"name\":");
        push_json_string(&m.name, &mut s);
    }
    if !m.client_urls.is_empty() {
        s.push_str(",\"clientURLs\":");
        push_json_strings(&m.client_urls, &mut s);
    }
    s.push('}');
    s.into_bytes()
}

pub fn decode_member(b: &[u8]) -> Result<Member, DecodeError> {
    let v: serde_json::Value =
        serde_json::from_slice(b).map_err(|e| DecodeError(format!("member JSON: {e}")))?;
    let Some(o) = v.as_object() else {
        return err("member JSON is not an object");
    };
    let strings = |name: &str| -> Result<Vec<String>, DecodeError> {
        match o.get(name) {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| DecodeError(format!("member {name}: {x} is not a string")))
                })
                .collect(),
            Some(x) => err(format!("member {name}: {x} is not a list")),
        }
    };
    let id = match o.get("id") {
        Some(x) => x
            .as_u64()
            .ok_or_else(|| DecodeError(format!("member id {x} is not a u64")))?,
        None => return err("member JSON without id"),
    };
    let is_learner = match o.get("isLearner") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(x) => return err(format!("member isLearner: {x} is not a bool")),
    };
    let name = match o.get("name") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(x) => return err(format!("member name: {x} is not a string")),
    };
    Ok(Member {
        id,
        peer_urls: strings("peerURLs")?,
        is_learner,
        name,
        client_urls: strings("clientURLs")?,
    })
}

/// `cluster/clusterVersion`: "major.minor.0" (etcd keeps the patch at 0).
pub fn encode_cluster_version(major: u64, minor: u64) -> Vec<u8> {
    format!("{major}.{minor}.0").into_bytes()
}

/// (major, minor, patch) of a `clusterVersion` value.
pub fn decode_cluster_version(b: &[u8]) -> Result<(u64, u64, u64), DecodeError> {
    let bad = || DecodeError(format!("cluster version {:?}", b.escape_ascii()));
    let s = std::str::from_utf8(b).map_err(|_| bad())?;
    let mut parts = s.split('.').map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok((a, b, c)),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------------
// alarm

/// etcd's `AlarmType`.
pub const ALARM_NONE: i32 = 0;
pub const ALARM_NOSPACE: i32 = 1;
pub const ALARM_CORRUPT: i32 = 2;

/// etcd's name of an AlarmType (`endpoint status`, `/health`, the logs).
pub fn alarm_name(alarm: i32) -> &'static str {
    match alarm {
        ALARM_NOSPACE => "NOSPACE",
        ALARM_CORRUPT => "CORRUPT",
        _ => "NONE",
    }
}

/// One raised alarm (`etcdserverpb.AlarmMember`; retcd's `m alarm` keys, engine/DESIGN.md §4.3,
/// hold the same pairs); etcd stores it as the KEY of an entry whose
/// value is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alarm {
    pub member_id: u64,
    pub alarm: i32,
}

pub fn encode_alarm(a: &Alarm) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_uint(1, a.member_id, &mut out);
    // An enum is an int32: Go writes a negative one as a 10-byte varint too.
    put_uint(2, i64::from(a.alarm) as u64, &mut out);
    out
}

pub fn decode_alarm(b: &[u8]) -> Result<Alarm, DecodeError> {
    let mut a = Alarm::default();
    fields(b, "AlarmMember", |f, v| {
        match (f, v) {
            (1, Field::Varint(x)) => a.member_id = x,
            (2, Field::Varint(x)) => a.alarm = x as i32,
            (1 | 2, _) => return wrong_type("AlarmMember", f),
            _ => {}
        }
        Ok(())
    })?;
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// auth, authUsers, authRoles

/// `auth/authEnabled`.
pub fn encode_auth_enabled(enabled: bool) -> [u8; 1] {
    [u8::from(enabled)]
}

/// etcd reads only the first byte's equality with 1.
pub fn decode_auth_enabled(b: &[u8]) -> Result<bool, DecodeError> {
    match b {
        [x] => Ok(*x == 1),
        _ => err(format!("authEnabled is one byte, not {}", b.len())),
    }
}

/// An `authUsers` value (`authpb.User`): name, password hash, roles, and `options` — always
/// written, as etcd's clients (etcdctl, clientv3 ≥ 3.4) always send UserAddOptions, so its users
/// carry `22 00` (options set, no_password false) or `22 02 08 01`.
pub fn encode_user(u: &User) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    put_len(1, u.name.as_bytes(), false, &mut out);
    put_len(2, &u.password, false, &mut out);
    for r in &u.roles {
        // Repeated strings are written even when empty.
        put_len(3, r.as_bytes(), true, &mut out);
    }
    let mut options = Vec::new();
    put_uint(1, u64::from(u.no_password), &mut options);
    put_len(4, &options, true, &mut out);
    out
}

pub fn decode_user(b: &[u8]) -> Result<User, DecodeError> {
    const WHAT: &str = "authpb.User";
    let mut u = User::default();
    fields(b, WHAT, |f, v| {
        match (f, v) {
            (1, Field::Bytes(s)) => u.name = utf8(s, "user name")?,
            (2, Field::Bytes(s)) => u.password = s.to_vec(),
            (3, Field::Bytes(s)) => u.roles.push(utf8(s, "user role")?),
            (4, Field::Bytes(s)) => {
                // A repeated occurrence of a message field merges into the previous one.
                fields(s, "authpb.UserAddOptions", |f, v| {
                    match (f, v) {
                        (1, Field::Varint(x)) => u.no_password = x != 0,
                        (1, _) => return wrong_type("authpb.UserAddOptions", f),
                        _ => {}
                    }
                    Ok(())
                })?;
            }
            (1..=4, _) => return wrong_type(WHAT, f),
            _ => {}
        }
        Ok(())
    })?;
    // retcd keeps roles sorted without duplicates, as etcd's user grant keeps them.
    u.roles.sort();
    u.roles.dedup();
    Ok(u)
}

fn perm_type(kind: PermKind) -> u64 {
    match kind {
        PermKind::Read => 0,
        PermKind::Write => 1,
        PermKind::ReadWrite => 2,
    }
}

/// An `authRoles` value (`authpb.Role`): name, then each key permission as a `Permission`
/// message {permType, key, range_end}.
pub fn encode_role(r: &Role) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_len(1, r.name.as_bytes(), false, &mut out);
    let mut p = Vec::new();
    for perm in &r.perms {
        p.clear();
        put_uint(1, perm_type(perm.kind), &mut p);
        put_len(2, &perm.key, false, &mut p);
        put_len(3, &perm.range_end, false, &mut p);
        put_len(2, &p, true, &mut out);
    }
    out
}

pub fn decode_role(b: &[u8]) -> Result<Role, DecodeError> {
    const WHAT: &str = "authpb.Role";
    let mut r = Role::default();
    fields(b, WHAT, |f, v| {
        match (f, v) {
            (1, Field::Bytes(s)) => r.name = utf8(s, "role name")?,
            (2, Field::Bytes(s)) => {
                let mut perm = Permission {
                    kind: PermKind::Read,
                    key: Vec::new(),
                    range_end: Vec::new(),
                };
                fields(s, "authpb.Permission", |f, v| {
                    match (f, v) {
                        (1, Field::Varint(x)) => {
                            perm.kind = PermKind::from_i32(x as i32).ok_or_else(|| {
                                DecodeError(format!("permission type {x} is unknown"))
                            })?;
                        }
                        (2, Field::Bytes(s)) => perm.key = s.to_vec(),
                        (3, Field::Bytes(s)) => perm.range_end = s.to_vec(),
                        (1..=3, _) => return wrong_type("authpb.Permission", f),
                        _ => {}
                    }
                    Ok(())
                })?;
                r.perms.push(perm);
            }
            (1 | 2, _) => return wrong_type(WHAT, f),
            _ => {}
        }
        Ok(())
    })?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// The snapshot source

/// What a snapshot holds that is not in the page store, or not in a form engine/ may read:
/// the membership (raft/'s encoding of `m members`, decoded by the caller from the SAME
/// [`StateSnapshot`] through [`StateSnapshot::membership`]), the raised alarms (kept in memory
/// by raft/'s NodeStatus), and the cluster version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub members: Vec<Member>,
    /// Ids of removed members.
    pub removed: Vec<u64>,
    pub alarms: Vec<Alarm>,
    /// `cluster/clusterVersion`, e.g. "3.5.0"; `None` leaves the bucket empty (as before a
    /// cluster agreed on a version).
    pub cluster_version: Option<String>,
}

/// A [`bbolt::Source`] of etcd's ten buckets over one [`StateSnapshot`]: both scans of the
/// writer read the same committed version of the page store (its pages are held from reuse
/// while the source lives), and the extras are fixed at construction, so the two passes agree.
///
/// Memory: the `key` bucket, leases, users and roles are streamed from the snapshot one entry
/// at a time; only the small buckets (meta, members, alarms, auth) are built in memory.
pub struct SnapshotSource {
    snap: StateSnapshot,
    meta: Vec<(Vec<u8>, Vec<u8>)>,
    members: Vec<(Vec<u8>, Vec<u8>)>,
    removed: Vec<(Vec<u8>, Vec<u8>)>,
    cluster: Vec<(Vec<u8>, Vec<u8>)>,
    alarms: Vec<(Vec<u8>, Vec<u8>)>,
    auth: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Sorts small in-memory buckets into bbolt's key order.
fn sorted(mut v: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

impl SnapshotSource {
    /// The buckets of `snap` plus `extras`. Fails only on a corrupt `m auth` record.
    pub fn new(snap: StateSnapshot, extras: &Extras) -> Result<SnapshotSource, SourceError> {
        let (applied, term) = snap.applied();
        let (_, compacted) = snap.revisions();
        let mut meta = vec![(CONSISTENT_INDEX.to_vec(), encode_u64(applied).to_vec())];
        if term > 0 {
            meta.push((TERM.to_vec(), encode_u64(term).to_vec()));
        }
        // etcd writes scheduledCompactRev when a compaction is requested and finishedCompactRev
        // when it is done; the key bucket we write is the one after it finished, so both.
        if compacted >= 0 {
            let rev = encode_compact_rev(compacted);
            meta.push((SCHEDULED_COMPACT_REV.to_vec(), rev.clone()));
            meta.push((FINISHED_COMPACT_REV.to_vec(), rev));
        }
        if !extras.members.is_empty() {
            let mut cs = ConfState::default();
            for m in &extras.members {
                if m.is_learner {
                    cs.learners.push(m.id);
                } else {
                    cs.voters.push(m.id);
                }
            }
            cs.voters.sort_unstable();
            cs.learners.sort_unstable();
            meta.push((CONF_STATE.to_vec(), encode_conf_state(&cs)));
        }
        let members = extras
            .members
            .iter()
            .map(|m| (member_key(m.id), encode_member(m)))
            .collect();
        let removed = extras
            .removed
            .iter()
            .map(|&id| (member_key(id), REMOVED.to_vec()))
            .collect();
        let cluster = extras
            .cluster_version
            .iter()
            .map(|v| (CLUSTER_VERSION.to_vec(), v.as_bytes().to_vec()))
            .collect();
        let alarms = extras
            .alarms
            .iter()
            .map(|a| (encode_alarm(a), Vec::new()))
            .collect();
        let (enabled, revision) = snap.auth_meta().map_err(|e| e.to_string())?;
        // etcd's fresh store writes its revision (1); authEnabled only when auth is enabled or
        // disabled. retcd writes `m auth` on every auth change, so "disabled" and "never
        // enabled" look alike here: authEnabled is written only when on (absent reads as off,
        // so a disabled store differs from etcd's in that one absent byte, not in meaning).
        let mut auth = vec![(
            AUTH_REVISION.to_vec(),
            encode_u64(revision.unwrap_or(1)).to_vec(),
        )];
        if enabled == Some(true) {
            auth.push((AUTH_ENABLED.to_vec(), encode_auth_enabled(true).to_vec()));
        }
        Ok(SnapshotSource {
            snap,
            meta: sorted(meta),
            members: sorted(members),
            removed: sorted(removed),
            cluster: sorted(cluster),
            alarms: sorted(alarms),
            auth: sorted(auth),
        })
    }

    /// The state the source reads.
    pub fn snapshot(&self) -> &StateSnapshot {
        &self.snap
    }
}

fn visit_all(entries: &[(Vec<u8>, Vec<u8>)], visit: &mut Visit<'_>) {
    for (k, v) in entries {
        if visit(k, v).is_break() {
            return;
        }
    }
}

impl bbolt::Source for SnapshotSource {
    fn bucket_names(&self) -> Vec<Vec<u8>> {
        BUCKETS.iter().map(|b| b.to_vec()).collect()
    }

    fn scan(&self, bucket: usize, visit: &mut Visit<'_>) -> Result<(), SourceError> {
        let name = *BUCKETS.get(bucket).ok_or("no such bucket")?;
        match name {
            KEY => {
                let mut keys = self.snap.etcd_key_bucket();
                let (mut k, mut v) = (Vec::new(), Vec::new());
                while keys.next_into(&mut k, &mut v)?.is_some() {
                    if visit(&k, &v).is_break() {
                        break;
                    }
                }
            }
            LEASE => {
                let mut value = Vec::new();
                self.snap.scan_leases(&mut |l| {
                    value = encode_lease(&Lease {
                        id: l.id,
                        ttl: l.ttl,
                        remaining_ttl: l.remaining,
                    });
                    visit(&lease_key(l.id), &value)
                })?;
            }
            AUTH_USERS => self.snap.scan_users(&mut |u| {
                let v = encode_user(u);
                visit(u.name.as_bytes(), &v)
            })?,
            AUTH_ROLES => self.snap.scan_roles(&mut |r| {
                let v = encode_role(r);
                visit(r.name.as_bytes(), &v)
            })?,
            META => visit_all(&self.meta, visit),
            MEMBERS => visit_all(&self.members, visit),
            MEMBERS_REMOVED => visit_all(&self.removed, visit),
            CLUSTER => visit_all(&self.cluster, visit),
            ALARM => visit_all(&self.alarms, visit),
            AUTH => visit_all(&self.auth, visit),
            _ => unreachable!("every bucket of BUCKETS is matched"),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Maintenance.Hash

/// etcd 3.5's `backend.Hash` (Maintenance.Hash) of the db `source` describes: CRC-32C over every
/// bucket's name and then its keys and values, buckets in name order, skipping `meta`'s
/// `consistent_index` and `term` (which differ between members that hold the same data). Reads
/// the source once; the caller runs it off the request cores.
pub fn backend_hash(source: &dyn crate::bbolt::Source) -> Result<u32, crate::bbolt::SourceError> {
    let names = source.bucket_names();
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let mut hash = 0u32;
    for i in order {
        let name = &names[i];
        hash = crc32c::crc32c_append(hash, name);
        let is_meta = name.as_slice() == META;
        source.scan(i, &mut |k, v| {
            if !(is_meta && (k == CONSISTENT_INDEX || k == TERM)) {
                hash = crc32c::crc32c_append(hash, k);
                hash = crc32c::crc32c_append(hash, v);
            }
            std::ops::ControlFlow::Continue(())
        })?;
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protowire::hex;

    #[test]
    fn bucket_names_are_in_bbolt_order() {
        let mut sorted = BUCKETS.to_vec();
        sorted.sort();
        assert_eq!(sorted, BUCKETS.to_vec());
    }

    #[test]
    fn meta_values() {
        assert_eq!(encode_u64(2).to_vec(), hex("0000000000000002"));
        assert_eq!(decode_u64(&hex("00000000000001ff")), Ok(511));
        assert!(decode_u64(b"short").is_err());
        // {main 5, sub 0}: 8 bytes BE, '_', 8 bytes BE.
        let c = encode_compact_rev(5);
        assert_eq!(c, hex("0000000000000005 5f 0000000000000000"));
        assert_eq!(decode_compact_rev(&c), Ok(5));
        assert!(decode_compact_rev(&c[..16]).is_err());
        let cs = ConfState {
            voters: vec![1, 3319814642761637952],
            learners: vec![],
        };
        let json = encode_conf_state(&cs);
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"voters":[1,3319814642761637952],"auto_leave":false}"#
        );
        assert_eq!(decode_conf_state(&json), Ok(cs));
        assert_eq!(
            decode_conf_state(br#"{"learners":[7],"voters":[2]}"#),
            Ok(ConfState {
                voters: vec![2],
                learners: vec![7]
            })
        );
    }

    #[test]
    fn lease_matches_etcd_bytes() {
        // Reference §2.4, from a real etcd 3.4.23: lease 2040a2367e932d09 with TTL 600.
        let id = 0x2040_a236_7e93_2d09;
        let l = Lease {
            id,
            ttl: 600,
            remaining_ttl: 0,
        };
        assert_eq!(lease_key(id).to_vec(), hex("2040a2367e932d09"));
        assert_eq!(decode_lease_key(&hex("2040a2367e932d09")), Ok(id));
        let bytes = hex("08 89daccf4e7c6a8a020 10 d804");
        assert_eq!(encode_lease(&l), bytes);
        assert_eq!(decode_lease(&bytes), Ok(l));
        let checkpointed = Lease {
            remaining_ttl: 42,
            ..l
        };
        assert_eq!(
            encode_lease(&checkpointed),
            [bytes.clone(), hex("182a")].concat()
        );
        assert_eq!(decode_lease(&encode_lease(&checkpointed)), Ok(checkpointed));
        // Any field order, unknown fields skipped; bad framing refused.
        assert_eq!(
            decode_lease(&hex("10d804 3801 0889daccf4e7c6a8a020")),
            Ok(l)
        );
        assert!(decode_lease(&hex("08")).is_err());
        assert!(decode_lease(&hex("0a01")).is_err());
    }

    #[test]
    fn member_matches_etcd_json() {
        // Reference §2.5, from a real etcd 3.4.23.
        let m = Member {
            id: 3319814642761637952,
            peer_urls: vec!["http://127.0.0.1:23800".into()],
            is_learner: false,
            name: "n1".into(),
            client_urls: vec!["http://127.0.0.1:23790".into()],
        };
        let json = br#"{"id":3319814642761637952,"peerURLs":["http://127.0.0.1:23800"],"name":"n1","clientURLs":["http://127.0.0.1:23790"]}"#;
        assert_eq!(encode_member(&m), json.to_vec());
        assert_eq!(decode_member(json), Ok(m.clone()));
        assert_eq!(member_key(m.id), b"2e1259d415f2a040".to_vec());
        assert_eq!(decode_member_key(b"2e1259d415f2a040"), Ok(m.id));
        assert_eq!(member_key(0xabc), b"abc".to_vec());
        assert!(decode_member_key(b"xyz").is_err());
        assert!(decode_member_key(b"").is_err());
        // A learner that has not published its name yet; Go's HTML-safe escapes.
        let l = Member {
            id: 10,
            peer_urls: vec!["http://a<b>&c".into()],
            is_learner: true,
            name: String::new(),
            client_urls: vec![],
        };
        let json = encode_member(&l);
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"id":10,"peerURLs":["http://a\u003cb\u003e\u0026c"],"isLearner":true}"#
        );
        assert_eq!(decode_member(&json), Ok(l));
        assert!(decode_member(b"{}").is_err());
        assert!(decode_member(b"[1]").is_err());
    }

    #[test]
    fn cluster_version_and_alarm() {
        assert_eq!(encode_cluster_version(3, 4), b"3.4.0".to_vec());
        assert_eq!(decode_cluster_version(b"3.5.0"), Ok((3, 5, 0)));
        assert!(decode_cluster_version(b"3.5").is_err());
        let a = Alarm {
            member_id: 0x1234,
            alarm: ALARM_NOSPACE,
        };
        // {1: member id 0x1234 as a varint, 2: NOSPACE}.
        let bytes = hex("08 b424 1001");
        assert_eq!(encode_alarm(&a), bytes);
        assert_eq!(decode_alarm(&bytes), Ok(a));
    }

    #[test]
    fn auth_values() {
        assert_eq!(encode_auth_enabled(true), [1]);
        assert_eq!(decode_auth_enabled(&[0]), Ok(false));
        assert!(decode_auth_enabled(&[]).is_err());
        let u = User {
            name: "alice".into(),
            password: b"$2a$10$hash".to_vec(),
            roles: vec!["r1".into(), "root".into()],
            no_password: false,
        };
        // 0a05 "alice", 120b "$2a$10$hash", 1a02 "r1", 1a04 "root", 2200 (options set, false).
        let bytes = hex("0a05616c696365 120b24326124313024686173 68 1a027231 1a04726f6f74 2200");
        assert_eq!(encode_user(&u), bytes);
        assert_eq!(decode_user(&bytes), Ok(u.clone()));
        // Without options (an old client) and with no_password.
        assert_eq!(decode_user(&bytes[..bytes.len() - 2]), Ok(u.clone()));
        let np = User {
            name: "bob".into(),
            password: vec![],
            roles: vec![],
            no_password: true,
        };
        assert_eq!(encode_user(&np), hex("0a03626f62 2202 0801"));
        assert_eq!(decode_user(&encode_user(&np)), Ok(np));

        let r = Role {
            name: "r1".into(),
            perms: vec![
                Permission {
                    kind: PermKind::Read,
                    key: b"a".to_vec(),
                    range_end: b"b".to_vec(),
                },
                Permission {
                    kind: PermKind::ReadWrite,
                    key: b"k".to_vec(),
                    range_end: vec![],
                },
            ],
        };
        // 0a02 "r1"; 1206 {READ omitted, 1201 "a", 1a01 "b"}; 1205 {0802 READWRITE, 1201 "k"}.
        let bytes = hex("0a027231 1206 1201611a0162 1205 08021201 6b");
        assert_eq!(encode_role(&r), bytes);
        assert_eq!(decode_role(&bytes), Ok(r));
        assert!(decode_role(&hex("0a027231 1203 0805")).is_err());
    }
}
