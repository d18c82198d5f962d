//! etcd's Auth service (users, roles, permissions, enable/disable, Authenticate) and what every
//! other service uses to authenticate and authorize its callers.
//!
//! - [`gate`]: the caller of a request (token or certificate) and the checks of etcd's rules;
//! - [`jwt`]: etcd's JWT tokens (`--auth-token jwt,...`), signed and verified;
//! - [`password`]: bcrypt hashing and checking on a thread of its own.
//!
//! Every change goes through Raft and is applied by engine/src/auth.rs (where etcd's rules
//! live); reads (UserGet/List, RoleGet/List, AuthStatus) are served from the applied state
//! after a linearizable read barrier, as etcd serves them through its log.

pub mod gate;
pub mod jwt;
pub mod password;

use std::sync::Arc;

use retcd_engine::auth::AuthOutcome;
use retcd_engine::mvcc::WriteResult;
use retcd_engine::request::{AuthRequest, Caller, PermKind, Permission, Request};
use tonic::{Request as Req, Response, Status};

use crate::context::Ctx;
use crate::kv::{linearizable, propose_status};
use crate::pb::authpb;
use crate::pb::etcdserverpb::{self as pb, ResponseHeader};

pub use gate::{AuthGate, ClientCommonName, TokenProvider, auth_status};
pub use password::Passwords;

/// Authenticate retries this many times when the password was checked against a state that
/// changed before the token was handed out (etcd loops until the two match).
const AUTHENTICATE_TRIES: usize = 3;

pub struct AuthService {
    ctx: Arc<Ctx>,
}

impl AuthService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        AuthService { ctx }
    }

    /// Proposes an auth change for `caller` (root only, checked here and again at apply).
    async fn change(
        &self,
        caller: &Caller,
        a: AuthRequest,
    ) -> Result<(Option<ResponseHeader>, AuthOutcome), Status> {
        if !matches!(a, AuthRequest::Authenticate { .. }) {
            self.ctx.auth.check_admin(caller)?;
        }
        match self
            .ctx
            .proposer
            .propose_as(&Request::Auth(a), caller)
            .await
            .map_err(propose_status)?
        {
            WriteResult::Auth { revision, outcome } => Ok((self.ctx.header(revision), outcome)),
            other => {
                tracing::error!(result = ?other, "apply returned a result of another kind");
                Err(Status::internal("retcd: unexpected apply result"))
            }
        }
    }

    /// A read of the auth state: caller known, barrier passed.
    async fn read<T>(&self, req: &Req<T>) -> Result<Caller, Status> {
        let caller = self.ctx.auth.caller(req)?;
        linearizable(&self.ctx).await?;
        Ok(caller)
    }
}

fn perm_kind(t: i32) -> Result<PermKind, Status> {
    PermKind::from_i32(t).ok_or_else(|| auth_status(retcd_engine::auth::AuthError::InvalidMgmt))
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Req<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let (header, _) = self.change(&caller, AuthRequest::Enable).await?;
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: Req<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let (header, _) = self.change(&caller, AuthRequest::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        request: Req<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        self.read(&request).await?;
        let s = self.ctx.auth.state();
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.ctx.current_header(),
            enabled: s.enabled(),
            auth_revision: s.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Req<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        linearizable(&self.ctx).await?;
        let r = request.into_inner();
        let mut tries = 0;
        loop {
            tries += 1;
            // etcd's CheckPassword.
            let (hash, checked_revision) = {
                let s = self.ctx.auth.state();
                if !s.enabled() {
                    return Err(auth_status(retcd_engine::auth::AuthError::NotEnabled));
                }
                match s.user(&r.name) {
                    Some(u) if !u.no_password => (Arc::<[u8]>::from(&u.password[..]), s.revision()),
                    _ => return Err(auth_status(retcd_engine::auth::AuthError::AuthFailed)),
                }
            };
            if !self.ctx.passwords.verify(r.password.clone(), hash).await? {
                tracing::info!(user = %r.name, "invalid password");
                return Err(auth_status(retcd_engine::auth::AuthError::AuthFailed));
            }
            // A verify-only JWT provider or the nop provider hands out no token: etcd proposes
            // anyway and its apply fails; refused here, the client hears the same.
            let token_prefix = match self.ctx.auth.tokens() {
                TokenProvider::Simple(_) => token_prefix(),
                TokenProvider::Jwt(j) if j.verify_only() => {
                    return Err(Status::unknown(jwt::JwtError::VerifyOnly.to_string()));
                }
                TokenProvider::Jwt(_) => String::new(),
                TokenProvider::None => {
                    return Err(auth_status(retcd_engine::auth::AuthError::AuthFailed));
                }
            };
            let a = AuthRequest::Authenticate {
                name: r.name.clone(),
                token_prefix,
                checked_revision,
            };
            match self.change(&Caller::default(), a).await {
                Ok((
                    header,
                    AuthOutcome::Token {
                        user,
                        token,
                        revision,
                    },
                )) => {
                    let token = match self.ctx.auth.tokens() {
                        // Signed by this member for the auth revision its apply saw (one
                        // signature, ~1 ms with RSA-2048, after a bcrypt check many times that).
                        TokenProvider::Jwt(j) => j
                            .sign(&user, revision)
                            .map_err(|e| Status::unknown(e.to_string()))?,
                        _ => token,
                    };
                    return Ok(Response::new(pb::AuthenticateResponse { header, token }));
                }
                Ok(_) => return Err(Status::internal("retcd: authenticate gave no token")),
                Err(s)
                    if tries < AUTHENTICATE_TRIES
                        && s.message() == crate::errors::EtcdError::AuthOldRevision.message() =>
                {
                    tracing::info!("revision when password checked became stale; retrying");
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn user_add(
        &self,
        request: Req<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        self.ctx.auth.check_admin(&caller)?;
        let r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password = if no_password || r.name.is_empty() {
            Vec::new()
        } else {
            self.ctx.passwords.hash(r.password).await?
        };
        let a = AuthRequest::UserAdd {
            name: r.name,
            password,
            no_password,
        };
        let (header, _) = self.change(&caller, a).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Req<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.read(&request).await?;
        let name = request.into_inner().name;
        // etcd: root, or the user asking about themselves.
        if caller.user != name {
            self.ctx.auth.check_admin(&caller)?;
        }
        let s = self.ctx.auth.state();
        let u = s
            .user(&name)
            .ok_or_else(|| auth_status(retcd_engine::auth::AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.ctx.current_header(),
            roles: u.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Req<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.read(&request).await?;
        self.ctx.auth.check_admin(&caller)?;
        let s = self.ctx.auth.state();
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.ctx.current_header(),
            users: s.users().map(|u| u.name.clone()).collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Req<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let name = request.into_inner().name;
        let (header, _) = self
            .change(&caller, AuthRequest::UserDelete { name })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Req<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        self.ctx.auth.check_admin(&caller)?;
        let r = request.into_inner();
        // etcd 3.5+: a password is hashed here; without one, the client's own bcrypt hash
        // (base64) is taken as it is; with neither, the user can no longer log in.
        let password = if !r.password.is_empty() {
            self.ctx.passwords.hash(r.password).await?
        } else {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&r.hashed_password)
                .map_err(|_| {
                    Status::unknown(
                        "auth: authentication failed, password was given for no password user",
                    )
                })?
        };
        let a = AuthRequest::UserChangePassword {
            name: r.name,
            password,
        };
        let (header, _) = self.change(&caller, a).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Req<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let r = request.into_inner();
        let a = AuthRequest::UserGrantRole {
            user: r.user,
            role: r.role,
        };
        let (header, _) = self.change(&caller, a).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Req<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let r = request.into_inner();
        let a = AuthRequest::UserRevokeRole {
            name: r.name,
            role: r.role,
        };
        let (header, _) = self.change(&caller, a).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Req<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let name = request.into_inner().name;
        let (header, _) = self.change(&caller, AuthRequest::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Req<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.read(&request).await?;
        let role = request.into_inner().role;
        let s = self.ctx.auth.state();
        // etcd: root, or a user holding the role.
        let holds = s
            .user(&caller.user)
            .is_some_and(|u| u.roles.contains(&role));
        if !holds {
            self.ctx.auth.check_admin(&caller)?;
        }
        let r = s
            .role(&role)
            .ok_or_else(|| auth_status(retcd_engine::auth::AuthError::RoleNotFound))?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.ctx.current_header(),
            perm: r
                .perms
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: p.kind.as_i32(),
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Req<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.read(&request).await?;
        self.ctx.auth.check_admin(&caller)?;
        let s = self.ctx.auth.state();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.ctx.current_header(),
            roles: s.roles().map(|r| r.name.clone()).collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Req<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let role = request.into_inner().role;
        let (header, _) = self
            .change(&caller, AuthRequest::RoleDelete { role })
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Req<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        self.ctx.auth.check_admin(&caller)?;
        let r = request.into_inner();
        let p = r
            .perm
            .ok_or_else(|| auth_status(retcd_engine::auth::AuthError::PermissionNotGiven))?;
        let a = AuthRequest::RoleGrantPermission {
            name: r.name,
            perm: Permission {
                kind: perm_kind(p.perm_type)?,
                key: p.key,
                range_end: p.range_end,
            },
        };
        let (header, _) = self.change(&caller, a).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Req<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let r = request.into_inner();
        let a = AuthRequest::RoleRevokePermission {
            role: r.role,
            key: r.key,
            range_end: r.range_end,
        };
        let (header, _) = self.change(&caller, a).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}

/// etcd's simple token prefix: 16 random letters (the apply appends `.<raft index>`).
fn token_prefix() -> String {
    use ring::rand::SecureRandom;
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect()
}
