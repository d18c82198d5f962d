//! Who is calling, and may they: etcd's AuthInfoFromCtx (a token in the `token` or
//! `authorization` metadata, else with --client-cert-auth the CommonName of the connection's
//! verified client certificate) and the checks every service makes before it reads or proposes.
//!
//! A token is looked up in the simple tokens every member's apply hands out, or verified as a JWT
//! whose `revision` claim becomes the caller's revision (so a token older than the last auth
//! change is refused at the permission check, as in etcd); see [`TokenProvider`].
//!
//! Services call [`AuthGate::caller`] first, then the check for what they do, against the auth
//! state published by the apply (one atomic load). Writes are proposed with the caller, and the
//! apply checks it again at the entry's place in the log (engine/src/auth.rs), so a change of
//! permissions committed in between still holds. With auth off every check passes and the
//! caller is anonymous (the apply then refuses it only if auth was enabled meanwhile, as etcd).

use std::sync::Arc;
use std::time::Instant;

use retcd_engine::auth::{AuthError, AuthReader, AuthState, Denied};
use retcd_engine::mvcc::MvccReader;
use retcd_engine::request::{Caller, Request};
use retcd_raft::tokens::SimpleTokens;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::jwt::JwtTokens;
use crate::errors::EtcdError;
use crate::kv::mvcc_status;

/// The CommonName of a connection's verified client certificate, put in every request's
/// extensions by the listener.
#[derive(Clone, Debug)]
pub struct ClientCommonName(pub Arc<str>);

/// etcd's gRPC status for an auth error.
pub fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::RootUserNotExist => EtcdError::RootUserNotExist,
        AuthError::RootRoleNotExist => EtcdError::RootRoleNotExist,
        AuthError::UserAlreadyExist => EtcdError::UserAlreadyExist,
        AuthError::UserEmpty => EtcdError::UserEmpty,
        AuthError::UserNotFound => EtcdError::UserNotFound,
        AuthError::RoleAlreadyExist => EtcdError::RoleAlreadyExist,
        AuthError::RoleNotFound => EtcdError::RoleNotFound,
        AuthError::RoleEmpty => EtcdError::RoleEmpty,
        AuthError::PermissionNotGiven => EtcdError::PermissionNotGiven,
        AuthError::AuthFailed => EtcdError::AuthFailed,
        AuthError::PermissionDenied => EtcdError::PermissionDenied,
        AuthError::RoleNotGranted => EtcdError::RoleNotGranted,
        AuthError::PermissionNotGranted => EtcdError::PermissionNotGranted,
        AuthError::NotEnabled => EtcdError::AuthNotEnabled,
        AuthError::OldRevision => EtcdError::AuthOldRevision,
        AuthError::InvalidMgmt => EtcdError::InvalidAuthMgmt,
    }
    .status()
}

/// Where the tokens of `--auth-token` come from (etcd's TokenProvider).
#[derive(Clone)]
pub enum TokenProvider {
    /// `simple`: the tokens every member's apply hands out (raft/src/tokens.rs).
    Simple(Arc<SimpleTokens>),
    /// `jwt,...`: signed by the member that authenticated the user, verified by every member.
    Jwt(Arc<JwtTokens>),
    /// An empty `--auth-token`: etcd's nop provider, which knows no token and hands out none
    /// (only client certificates identify users).
    None,
}

pub struct AuthGate {
    state: AuthReader,
    tokens: TokenProvider,
    /// --client-cert-auth: a certificate's CommonName is the user of a request without token.
    client_cert_auth: bool,
}

impl AuthGate {
    pub fn new(state: AuthReader, tokens: TokenProvider, client_cert_auth: bool) -> Self {
        AuthGate {
            state,
            tokens,
            client_cert_auth,
        }
    }

    /// The auth state now (hold it for one request).
    pub fn state(&self) -> arc_swap::Guard<Arc<AuthState>> {
        self.state.load()
    }

    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// The caller of a request: etcd's AuthInfoFromCtx, then AuthInfoFromTLS.
    pub fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, Status> {
        self.caller_of(req.metadata(), req.extensions())
    }

    pub fn caller_of(&self, md: &MetadataMap, ext: &tonic::Extensions) -> Result<Caller, Status> {
        let state = self.state.load();
        if !state.enabled() {
            return Ok(Caller::default());
        }
        if let Some(v) = md.get("token").or_else(|| md.get("authorization")) {
            let token = v.to_str().unwrap_or_default();
            let token = token.strip_prefix("Bearer ").unwrap_or(token);
            let caller = match &self.tokens {
                TokenProvider::Simple(t) => t.user(token, Instant::now()).map(|user| Caller {
                    user,
                    revision: state.revision(),
                }),
                TokenProvider::Jwt(j) => match j.verify(token) {
                    Ok(c) => Some(Caller {
                        user: c.user,
                        revision: c.revision,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to parse a JWT token");
                        None
                    }
                },
                TokenProvider::None => None,
            };
            return caller.ok_or_else(|| EtcdError::InvalidAuthToken.status());
        }
        if self.client_cert_auth
            && let Some(cn) = ext.get::<ClientCommonName>()
        {
            return Ok(Caller {
                user: cn.0.to_string(),
                revision: state.revision(),
            });
        }
        Ok(Caller::default())
    }

    /// May `caller` read `[key, range_end)`?
    pub fn check_read(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        self.state
            .load()
            .check_op(caller, key, range_end, false)
            .map_err(auth_status)
    }

    /// etcd's requireAuthInfo: with auth on, the caller must be someone.
    pub fn check_user(&self, caller: &Caller) -> Result<(), Status> {
        if caller.revision == 0 && self.state.load().enabled() {
            return Err(auth_status(AuthError::UserEmpty));
        }
        Ok(())
    }

    /// A request that only needs a known caller: etcd's AuthInfoFromCtx + requireAuthInfo.
    pub fn require_user<T>(&self, req: &tonic::Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(req)?;
        self.check_user(&caller)?;
        Ok(caller)
    }

    /// etcd's doSerialize epilogue: a read whose caller was checked at one auth revision
    /// answers only if the revision has not moved meanwhile (the apply publishes a change before
    /// the data written after it, so data past a revoke is never returned under the old grant).
    pub fn check_unchanged(&self, caller: &Caller) -> Result<(), Status> {
        let state = self.state.load();
        if state.enabled() && caller.revision != 0 && caller.revision != state.revision() {
            return Err(auth_status(AuthError::OldRevision));
        }
        Ok(())
    }

    /// Does `caller` hold the root role (or is auth off)?
    pub fn check_admin(&self, caller: &Caller) -> Result<(), Status> {
        self.state.load().check_admin(caller).map_err(auth_status)
    }

    /// etcd's apply-time checks of a state-changing request, made before it is proposed.
    pub fn check_request(
        &self,
        caller: &Caller,
        req: &Request,
        reader: &MvccReader,
    ) -> Result<(), Status> {
        let state = self.state.load();
        if !state.enabled() {
            return Ok(());
        }
        state
            .check_request(caller, req, &mut |id| reader.lease_keys(id))
            .map_err(|d| match d {
                Denied::Auth(e) => auth_status(e),
                Denied::Read(e) => mvcc_status(e),
            })
    }
}
