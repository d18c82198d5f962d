//! etcd's authentication state (DESIGN.md §4.8): users, roles and their key-range permissions,
//! the enabled flag and the auth revision, and the rules that check a caller against them.
//!
//! [`AuthState`] is the whole state, small enough to live in memory: the apply (the single
//! writer, through `Mvcc`) changes it and writes each changed record in the batch's page-store
//! transaction; every core reads the version published after the batch ([`AuthReader`]), so a
//! service checks a request against exactly what the apply will check it against, one entry
//! later at most. Invariants: a request that fails changes nothing; every change that etcd
//! counts bumps the revision by one; the derived permission sets (`grants`) are rebuilt on every
//! change, so a revoked permission is gone for the very next check. The same rules run before a
//! request is proposed (services) and when it is applied (with the caller recorded in the log),
//! so a change committed in between is still enforced.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rkyv::{Archive, Deserialize, Serialize, rancor};

use crate::request::{AuthRequest, Caller, Permission, Request, RequestOp, TxnRequest};

/// The user and the role etcd treats as administrators.
pub const ROOT: &str = "root";

/// etcd's auth errors (server/auth/store.go); net/ maps each to etcd's gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth: root user does not exist")]
    RootUserNotExist,
    #[error("auth: root user does not have root role")]
    RootRoleNotExist,
    #[error("auth: user already exists")]
    UserAlreadyExist,
    #[error("auth: user name is empty")]
    UserEmpty,
    #[error("auth: user not found")]
    UserNotFound,
    #[error("auth: role already exists")]
    RoleAlreadyExist,
    #[error("auth: role not found")]
    RoleNotFound,
    #[error("auth: role name is empty")]
    RoleEmpty,
    #[error("auth: permission not given")]
    PermissionNotGiven,
    #[error("auth: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("auth: permission denied")]
    PermissionDenied,
    #[error("auth: role is not granted to the user")]
    RoleNotGranted,
    #[error("auth: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("auth: authentication is not enabled")]
    NotEnabled,
    #[error("auth: revision in header is old")]
    OldRevision,
    #[error("auth: invalid auth management")]
    InvalidMgmt,
}

/// One user (etcd's authpb.User). `roles` is sorted and without duplicates.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    /// bcrypt hash of the password; empty for a user without one.
    pub password: Vec<u8>,
    pub roles: Vec<String>,
    pub no_password: bool,
}

/// One role (etcd's authpb.Role). `perms` is sorted by key, as etcd keeps it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    pub name: String,
    pub perms: Vec<Permission>,
}

/// A half-open key interval `[begin, end)`; `end` None is unbounded.
type Interval = (Vec<u8>, Option<Vec<u8>>);

/// The union of a user's permissions, merged into sorted disjoint intervals per kind.
#[derive(Debug, Clone, Default)]
struct Grants {
    root: bool,
    read: Vec<Interval>,
    write: Vec<Interval>,
}

/// The interval a permission or a request names: one key when `range_end` is empty, every key
/// from `key` on when it is `[0]` (etcd's open end).
fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        (key.to_vec(), Some(end))
    } else if range_end == [0] {
        (key.to_vec(), None)
    } else {
        (key.to_vec(), Some(range_end.to_vec()))
    }
}

fn merge(mut ivs: Vec<Interval>) -> Vec<Interval> {
    ivs.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(ivs.len());
    for (b, e) in ivs {
        if let Some((_, last_end)) = out.last_mut() {
            let touches = match last_end {
                None => true,
                Some(le) => b <= *le,
            };
            if touches {
                if last_end.is_some() && (e.is_none() || e > *last_end) {
                    *last_end = e;
                }
                continue;
            }
        }
        out.push((b, e));
    }
    out
}

/// Whether the merged `ivs` cover all of `[begin, end)`.
fn covers(ivs: &[Interval], begin: &[u8], end: Option<&[u8]>) -> bool {
    // The last interval starting at or before `begin` is the only one that can hold it.
    let i = ivs.partition_point(|(b, _)| b.as_slice() <= begin);
    let Some((_, e)) = i.checked_sub(1).map(|i| &ivs[i]) else {
        return false;
    };
    match (e, end) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(end)) => end <= e.as_slice(),
    }
}

/// etcd's isValidPermissionRange: a key, and an end that is empty (one key), above the key, or
/// `[0]` (open).
fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end > key || range_end == [0])
}

/// What one auth change touched, for the apply to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    User(String),
    Role(String),
}

/// The outcome of an applied auth change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Done,
    /// An Authenticate of `user` at auth revision `revision`: `token` is the simple token every
    /// member now knows, or empty when the proposal carried no token prefix (JWT: the proposer
    /// signs a token for `user` and `revision` itself).
    Token {
        user: String,
        token: String,
        revision: u64,
    },
}

/// The whole auth state at one point of the log.
#[derive(Debug, Clone)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    grants: BTreeMap<String, Grants>,
}

impl Default for AuthState {
    /// A new store: etcd commits auth revision 1 when it creates its auth buckets.
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            grants: BTreeMap::new(),
        }
    }
}

impl AuthState {
    /// Builds the state from its stored parts (the `m auth` record, every user and role).
    pub fn from_parts(
        enabled: bool,
        revision: u64,
        users: impl IntoIterator<Item = User>,
        roles: impl IntoIterator<Item = Role>,
    ) -> AuthState {
        let mut s = AuthState {
            enabled,
            revision,
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
            grants: BTreeMap::new(),
        };
        s.rebuild_grants();
        s
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn revision(&self) -> u64 {
        self.revision
    }
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }
    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }
    /// Every role, by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    fn rebuild_grants(&mut self) {
        let mut grants = BTreeMap::new();
        for u in self.users.values() {
            let mut g = Grants {
                root: u.roles.iter().any(|r| r == ROOT),
                ..Grants::default()
            };
            let (mut read, mut write) = (Vec::new(), Vec::new());
            for p in u.roles.iter().filter_map(|r| self.roles.get(r)) {
                for perm in &p.perms {
                    let iv = interval(&perm.key, &perm.range_end);
                    if perm.kind.reads() {
                        read.push(iv.clone());
                    }
                    if perm.kind.writes() {
                        write.push(iv);
                    }
                }
            }
            g.read = merge(read);
            g.write = merge(write);
            grants.insert(u.name.clone(), g);
        }
        self.grants = grants;
    }

    /// etcd's isOpPermitted: may `caller` read (or write) `[key, range_end)`?
    pub fn check_op(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        write: bool,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if caller.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if caller.revision < self.revision {
            return Err(AuthError::OldRevision);
        }
        let Some(g) = self.grants.get(&caller.user) else {
            return Err(AuthError::PermissionDenied);
        };
        if g.root {
            return Ok(());
        }
        let (begin, end) = interval(key, range_end);
        // A range that ends at or before it starts reads nothing: it needs its first key only.
        let end = match end {
            Some(e) if e <= begin => Some([key, &[0]].concat()),
            e => e,
        };
        let ivs = if write { &g.write } else { &g.read };
        if covers(ivs, &begin, end.as_deref()) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's IsAdminPermitted: the caller holds the root role (anyone while auth is off).
    pub fn check_admin(&self, caller: &Caller) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if caller.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        match self.grants.get(&caller.user) {
            None => Err(AuthError::UserNotFound),
            Some(g) if g.root => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// The checks etcd makes for a state-changing request (apply_auth.go), through nested Txns;
    /// `attached` lists the keys attached to a lease (empty for an unknown lease).
    pub fn check_request<E>(
        &self,
        caller: &Caller,
        req: &Request,
        attached: &mut dyn FnMut(i64) -> Result<Vec<Vec<u8>>, E>,
    ) -> Result<(), Denied<E>> {
        if !self.enabled {
            return Ok(());
        }
        match req {
            Request::Put(p) => self.check_put(caller, p, attached),
            Request::DeleteRange(d) => {
                self.check_op(caller, &d.key, &d.range_end, true)?;
                if d.prev_kv {
                    self.check_op(caller, &d.key, &d.range_end, false)?;
                }
                Ok(())
            }
            Request::Txn(t) => self.check_txn(caller, t, attached),
            Request::LeaseRevoke(r) => self.check_lease_puts(caller, r.id, attached),
            // etcd 3.7: compaction is root's (3.4 let any user compact).
            Request::Compact(_) => Ok(self.check_admin(caller)?),
            Request::LeaseGrant(_) | Request::LeaseCheckpoint(_) => Ok(()),
            Request::Auth(AuthRequest::Authenticate { .. }) => Ok(()),
            Request::Auth(_) | Request::Alarm(_) => Ok(self.check_admin(caller)?),
        }
    }

    fn check_put<E>(
        &self,
        caller: &Caller,
        p: &crate::request::PutRequest,
        attached: &mut dyn FnMut(i64) -> Result<Vec<Vec<u8>>, E>,
    ) -> Result<(), Denied<E>> {
        self.check_op(caller, &p.key, &[], true)?;
        // A user who could not revoke the lease (a key on it they may not write) may not
        // attach to it either.
        if p.lease != 0 {
            self.check_lease_puts(caller, p.lease, attached)?;
        }
        if p.prev_kv {
            self.check_op(caller, &p.key, &[], false)?;
        }
        Ok(())
    }

    fn check_lease_puts<E>(
        &self,
        caller: &Caller,
        lease: i64,
        attached: &mut dyn FnMut(i64) -> Result<Vec<Vec<u8>>, E>,
    ) -> Result<(), Denied<E>> {
        if self.check_admin(caller).is_ok() {
            return Ok(());
        }
        for key in attached(lease).map_err(Denied::Read)? {
            self.check_op(caller, &key, &[], true)?;
        }
        Ok(())
    }

    fn check_txn<E>(
        &self,
        caller: &Caller,
        t: &TxnRequest,
        attached: &mut dyn FnMut(i64) -> Result<Vec<Vec<u8>>, E>,
    ) -> Result<(), Denied<E>> {
        for c in &t.compare {
            self.check_op(caller, &c.key, &c.range_end, false)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => self.check_op(caller, &r.key, &r.range_end, false)?,
                RequestOp::Put(p) => self.check_put(caller, p, attached)?,
                RequestOp::DeleteRange(d) => {
                    if d.prev_kv {
                        self.check_op(caller, &d.key, &d.range_end, false)?;
                    }
                    self.check_op(caller, &d.key, &d.range_end, true)?;
                }
                RequestOp::Txn(inner) => self.check_txn(caller, inner, attached)?,
            }
        }
        Ok(())
    }

    /// Applies one auth change at Raft index `index`: on success the state has changed (revision
    /// bumped where etcd bumps it, grants rebuilt) and `touched` lists the records to write; on
    /// an error nothing changed.
    pub fn apply(
        &mut self,
        req: &AuthRequest,
        index: u64,
        touched: &mut Vec<Touched>,
    ) -> Result<AuthOutcome, AuthError> {
        let (before, was_enabled) = (touched.len(), self.enabled);
        let out = self.apply_inner(req, index, touched)?;
        // etcd bumps the revision on every change but enable.
        if touched.len() > before || (was_enabled && !self.enabled) {
            self.revision += 1;
            self.rebuild_grants();
        }
        Ok(out)
    }

    fn apply_inner(
        &mut self,
        req: &AuthRequest,
        index: u64,
        touched: &mut Vec<Touched>,
    ) -> Result<AuthOutcome, AuthError> {
        use AuthRequest as A;
        match req {
            A::Enable => {
                if self.enabled {
                    return Ok(AuthOutcome::Done);
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                // etcd 3.4 and later do not bump the revision on enable.
                self.enabled = true;
            }
            A::Disable => {
                if !self.enabled {
                    return Ok(AuthOutcome::Done);
                }
                self.enabled = false;
            }
            A::Authenticate {
                name,
                token_prefix,
                checked_revision,
            } => {
                if !self.enabled {
                    return Err(AuthError::NotEnabled);
                }
                let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
                if user.no_password {
                    return Err(AuthError::AuthFailed);
                }
                // The password was checked against an older state (it may have changed).
                if *checked_revision != self.revision {
                    return Err(AuthError::OldRevision);
                }
                let token = if token_prefix.is_empty() {
                    String::new()
                } else {
                    format!("{token_prefix}.{index}")
                };
                return Ok(AuthOutcome::Token {
                    user: name.clone(),
                    token,
                    revision: self.revision,
                });
            }
            A::UserAdd {
                name,
                password,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        name: name.clone(),
                        password: if *no_password {
                            Vec::new()
                        } else {
                            password.clone()
                        },
                        roles: Vec::new(),
                        no_password: *no_password,
                    },
                );
                touched.push(Touched::User(name.clone()));
            }
            A::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                touched.push(Touched::User(name.clone()));
            }
            A::UserChangePassword { name, password } => {
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                if !u.no_password {
                    u.password = password.clone();
                }
                touched.push(Touched::User(name.clone()));
            }
            A::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).expect("checked");
                match u.roles.binary_search(role) {
                    // etcd ignores a second grant of the same role (no revision either).
                    Ok(_) => return Ok(AuthOutcome::Done),
                    Err(i) => u.roles.insert(i, role.clone()),
                }
                touched.push(Touched::User(user.clone()));
            }
            A::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT && role == ROOT {
                    return Err(AuthError::InvalidMgmt);
                }
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                let i = u
                    .roles
                    .iter()
                    .position(|r| r == role)
                    .ok_or(AuthError::RoleNotGranted)?;
                u.roles.remove(i);
                touched.push(Touched::User(name.clone()));
            }
            A::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(
                    name.clone(),
                    Role {
                        name: name.clone(),
                        perms: Vec::new(),
                    },
                );
                touched.push(Touched::Role(name.clone()));
            }
            A::RoleDelete { role } => {
                if self.enabled && role == ROOT {
                    return Err(AuthError::InvalidMgmt);
                }
                self.roles.remove(role).ok_or(AuthError::RoleNotFound)?;
                touched.push(Touched::Role(role.clone()));
                for u in self.users.values_mut() {
                    if let Some(i) = u.roles.iter().position(|r| r == role) {
                        u.roles.remove(i);
                        touched.push(Touched::User(u.name.clone()));
                    }
                }
            }
            A::RoleGrantPermission { name, perm } => {
                if !valid_permission_range(&perm.key, &perm.range_end) {
                    return Err(AuthError::InvalidMgmt);
                }
                let r = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                let i = r.perms.partition_point(|p| p.key < perm.key);
                match r.perms[i..]
                    .iter()
                    .take_while(|p| p.key == perm.key)
                    .position(|p| p.range_end == perm.range_end)
                {
                    Some(j) => r.perms[i + j].kind = perm.kind,
                    None => {
                        let at = i + r.perms[i..]
                            .iter()
                            .take_while(|p| p.key == perm.key)
                            .count();
                        r.perms.insert(at, perm.clone());
                    }
                }
                touched.push(Touched::Role(name.clone()));
            }
            A::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = r.perms.len();
                r.perms
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if r.perms.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                touched.push(Touched::Role(role.clone()));
            }
        }
        Ok(AuthOutcome::Done)
    }
}

/// Why a request was refused: an auth rule, or reading the attached keys of a lease failed.
#[derive(Debug)]
pub enum Denied<E> {
    Auth(AuthError),
    Read(E),
}

impl<E> From<AuthError> for Denied<E> {
    fn from(e: AuthError) -> Self {
        Denied::Auth(e)
    }
}

/// Encodes a user record (`U` key space).
pub fn encode_user(u: &User) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(u)
        .expect("serializing to memory cannot fail")
        .to_vec()
}
/// Encodes a role record (`R` key space).
pub fn encode_role(r: &Role) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(r)
        .expect("serializing to memory cannot fail")
        .to_vec()
}
pub fn decode_user(b: &[u8]) -> Result<User, String> {
    rkyv::from_bytes::<User, rancor::Error>(b).map_err(|e| format!("user record: {e}"))
}
pub fn decode_role(b: &[u8]) -> Result<Role, String> {
    rkyv::from_bytes::<Role, rancor::Error>(b).map_err(|e| format!("role record: {e}"))
}

/// The auth state every core reads: the version published after the last applied batch.
#[derive(Clone)]
pub struct AuthReader {
    cell: Arc<ArcSwap<AuthState>>,
}

impl AuthReader {
    pub(crate) fn new(state: Arc<AuthState>) -> AuthReader {
        AuthReader {
            cell: Arc::new(ArcSwap::new(state)),
        }
    }
    pub(crate) fn publish(&self, state: Arc<AuthState>) {
        self.cell.store(state);
    }
    /// The current state (one atomic load; hold it for one request).
    pub fn load(&self) -> arc_swap::Guard<Arc<AuthState>> {
        self.cell.load()
    }
    /// Whether auth is on, without keeping the state.
    pub fn enabled(&self) -> bool {
        self.cell.load().enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{DeleteRangeRequest, PermKind, PutRequest};

    fn caller(user: &str, s: &AuthState) -> Caller {
        Caller {
            user: user.into(),
            revision: s.revision(),
        }
    }

    fn apply(s: &mut AuthState, r: AuthRequest) -> Result<AuthOutcome, AuthError> {
        s.apply(&r, 1, &mut Vec::new())
    }

    fn perm(kind: PermKind, key: &str, end: &[u8]) -> Permission {
        Permission {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    fn seeded() -> AuthState {
        let mut s = AuthState::default();
        for name in ["root", "alice"] {
            apply(
                &mut s,
                AuthRequest::UserAdd {
                    name: name.into(),
                    password: b"h".to_vec(),
                    no_password: false,
                },
            )
            .unwrap();
        }
        apply(&mut s, AuthRequest::RoleAdd { name: "r".into() }).unwrap();
        apply(
            &mut s,
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: perm(PermKind::Read, "/a/", b"/a0"),
            },
        )
        .unwrap();
        apply(
            &mut s,
            AuthRequest::UserGrantRole {
                user: "alice".into(),
                role: "r".into(),
            },
        )
        .unwrap();
        apply(
            &mut s,
            AuthRequest::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
        )
        .unwrap();
        apply(&mut s, AuthRequest::Enable).unwrap();
        s
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let mut s = AuthState::default();
        assert_eq!(
            apply(&mut s, AuthRequest::Enable),
            Err(AuthError::RootUserNotExist)
        );
        apply(
            &mut s,
            AuthRequest::UserAdd {
                name: "root".into(),
                password: vec![],
                no_password: false,
            },
        )
        .unwrap();
        assert_eq!(
            apply(&mut s, AuthRequest::Enable),
            Err(AuthError::RootRoleNotExist)
        );
        assert!(!s.enabled());
    }

    #[test]
    fn authenticate_hands_out_simple_or_no_token() {
        let mut s = seeded();
        let r = s.revision();
        let auth = |prefix: &str, checked_revision| AuthRequest::Authenticate {
            name: "alice".into(),
            token_prefix: prefix.into(),
            checked_revision,
        };
        assert_eq!(
            s.apply(&auth("abc", r), 42, &mut Vec::new()),
            Ok(AuthOutcome::Token {
                user: "alice".into(),
                token: "abc.42".into(),
                revision: r,
            })
        );
        // JWT: no prefix, no token; the revision is the one the proposer signs.
        assert_eq!(
            s.apply(&auth("", r), 43, &mut Vec::new()),
            Ok(AuthOutcome::Token {
                user: "alice".into(),
                token: String::new(),
                revision: r,
            })
        );
        assert_eq!(s.revision(), r, "authenticate changes nothing");
        assert_eq!(
            s.apply(&auth("", r - 1), 44, &mut Vec::new()),
            Err(AuthError::OldRevision)
        );
    }

    #[test]
    fn revisions_count_as_etcd() {
        let s = seeded();
        // 1 at creation, +2 users, +1 role, +1 grant, +2 role grants; enable adds nothing.
        assert_eq!(s.revision(), 7);
        let mut s2 = s.clone();
        // A second grant of the same role changes nothing.
        apply(
            &mut s2,
            AuthRequest::UserGrantRole {
                user: "alice".into(),
                role: "r".into(),
            },
        )
        .unwrap();
        assert_eq!(s2.revision(), 7);
        apply(&mut s2, AuthRequest::Disable).unwrap();
        assert_eq!(s2.revision(), 8);
    }

    #[test]
    fn prefix_reader_reads_only_its_prefix() {
        let s = seeded();
        let a = caller("alice", &s);
        assert_eq!(s.check_op(&a, b"/a/x", b"", false), Ok(()));
        assert_eq!(s.check_op(&a, b"/a/", b"/a0", false), Ok(()));
        assert_eq!(
            s.check_op(&a, b"/a/", b"/b", false),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check_op(&a, b"/a/x", b"", true),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check_op(&a, b"/b", b"", false),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check_op(&a, b"\0", b"\0", false),
            Err(AuthError::PermissionDenied)
        );
        // No token: etcd's ErrUserEmpty; a token from before a change: ErrAuthOldRevision.
        assert_eq!(
            s.check_op(&Caller::default(), b"/a/x", b"", false),
            Err(AuthError::UserEmpty)
        );
        let old = Caller {
            revision: s.revision() - 1,
            ..a.clone()
        };
        assert_eq!(
            s.check_op(&old, b"/a/x", b"", false),
            Err(AuthError::OldRevision)
        );
        let root = caller("root", &s);
        assert_eq!(s.check_op(&root, b"\0", b"\0", true), Ok(()));
        assert_eq!(s.check_admin(&root), Ok(()));
        assert_eq!(s.check_admin(&a), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn union_of_adjacent_grants_covers_the_whole() {
        let mut s = seeded();
        apply(
            &mut s,
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: perm(PermKind::Read, "/a0", b"/c"),
            },
        )
        .unwrap();
        let a = caller("alice", &s);
        assert_eq!(s.check_op(&a, b"/a/", b"/c", false), Ok(()));
        assert_eq!(
            s.check_op(&a, b"/a/", b"/c\0", false),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn nested_txn_and_lease_attach_are_checked() {
        let mut s = seeded();
        apply(
            &mut s,
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: perm(PermKind::ReadWrite, "/w/", b"/w0"),
            },
        )
        .unwrap();
        let a = caller("alice", &s);
        let no_leases = &mut |_| Ok::<_, ()>(vec![]);
        let put = |key: &str, prev_kv: bool, lease: i64| {
            RequestOp::Put(PutRequest {
                key: key.into(),
                prev_kv,
                lease,
                ..Default::default()
            })
        };
        let nested = |op: RequestOp| {
            Request::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![],
                    failure: vec![op],
                })],
                failure: vec![],
            })
        };
        assert!(
            s.check_request(&a, &nested(put("/w/x", false, 0)), no_leases)
                .is_ok()
        );
        assert!(matches!(
            s.check_request(&a, &nested(put("/x", false, 0)), no_leases),
            Err(Denied::Auth(AuthError::PermissionDenied))
        ));
        // prev_kv inside a nested put needs read too: grant write only on /wo/.
        apply(
            &mut s,
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: perm(PermKind::Write, "/wo/", b"/wo0"),
            },
        )
        .unwrap();
        let a = caller("alice", &s);
        assert!(
            s.check_request(&a, &nested(put("/wo/x", false, 0)), no_leases)
                .is_ok()
        );
        assert!(matches!(
            s.check_request(&a, &nested(put("/wo/x", true, 0)), no_leases),
            Err(Denied::Auth(AuthError::PermissionDenied))
        ));
        // A lease that holds a key alice may not write cannot be attached to.
        let leases = &mut |id| {
            Ok::<_, ()>(if id == 5 {
                vec![b"/x".to_vec()]
            } else {
                vec![]
            })
        };
        assert!(matches!(
            s.check_request(&a, &nested(put("/w/y", false, 5)), leases),
            Err(Denied::Auth(AuthError::PermissionDenied))
        ));
        assert!(matches!(
            s.check_request(
                &a,
                &Request::LeaseRevoke(crate::request::LeaseRevokeRequest { id: 5 }),
                leases
            ),
            Err(Denied::Auth(AuthError::PermissionDenied))
        ));
        let del = Request::DeleteRange(DeleteRangeRequest {
            key: b"/a/x".to_vec(),
            ..Default::default()
        });
        assert!(s.check_request(&a, &del, no_leases).is_err());
    }

    #[test]
    fn root_protections_and_bad_input() {
        let mut s = seeded();
        let r = s.revision();
        for req in [
            AuthRequest::UserDelete {
                name: "root".into(),
            },
            AuthRequest::UserRevokeRole {
                name: "root".into(),
                role: "root".into(),
            },
            AuthRequest::RoleDelete {
                role: "root".into(),
            },
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: perm(PermKind::Read, "", b""),
            },
            AuthRequest::RoleGrantPermission {
                name: "r".into(),
                perm: perm(PermKind::Read, "b", b"a"),
            },
        ] {
            assert_eq!(apply(&mut s, req), Err(AuthError::InvalidMgmt));
        }
        assert_eq!(
            apply(
                &mut s,
                AuthRequest::UserGrantRole {
                    user: "alice".into(),
                    role: "nope".into()
                }
            ),
            Err(AuthError::RoleNotFound)
        );
        assert_eq!(s.revision(), r, "refused changes leave the revision");
        // Deleting a role takes it from its users.
        apply(&mut s, AuthRequest::RoleDelete { role: "r".into() }).unwrap();
        assert!(s.user("alice").unwrap().roles.is_empty());
        let a = caller("alice", &s);
        assert_eq!(
            s.check_op(&a, b"/a/x", b"", false),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn grants_are_kept_sorted_and_updated_in_place() {
        let mut s = seeded();
        for (k, kind) in [
            ("/b", PermKind::Read),
            ("/0", PermKind::Read),
            ("/b", PermKind::Write),
        ] {
            apply(
                &mut s,
                AuthRequest::RoleGrantPermission {
                    name: "r".into(),
                    perm: perm(kind, k, b""),
                },
            )
            .unwrap();
        }
        let keys: Vec<_> = s
            .role("r")
            .unwrap()
            .perms
            .iter()
            .map(|p| (p.key.clone(), p.kind))
            .collect();
        assert_eq!(
            keys,
            vec![
                (b"/0".to_vec(), PermKind::Read),
                (b"/a/".to_vec(), PermKind::Read),
                (b"/b".to_vec(), PermKind::Write)
            ]
        );
        assert_eq!(
            apply(
                &mut s,
                AuthRequest::RoleRevokePermission {
                    role: "r".into(),
                    key: b"/zz".to_vec(),
                    range_end: vec![]
                }
            ),
            Err(AuthError::PermissionNotGranted)
        );
    }
}
