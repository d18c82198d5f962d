//! The Lease service (LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases) with
//! etcd's answers (etcd's `api/v3rpc/lease.go` and `etcdserver/v3_server.go`).
//!
//! Grant and revoke go through Raft (grant through the lessor on the sequencer core, which picks the
//! id when the client gave none and raises the TTL to the member's minimum; revoke straight to the
//! proposer). Keep-alive, time-to-live and the list are answered by the lessor from memory, as
//! etcd's leader does; the keys of a lease are read from the committed state on the calling core.
//! Every response carries the member's header at the current revision (etcd's `hdr.fill`).

use std::pin::Pin;
use std::sync::Arc;

use futures_lite::Stream;
use retcd_engine::mvcc::WriteResult;
use retcd_engine::request::{Caller, LeaseRevokeRequest as EngineRevoke, Request};
use retcd_raft::ProposeError;
use retcd_raft::lessor::MAX_LEASE_TTL;
use tonic::{Request as Req, Response, Status, Streaming};

use crate::context::Ctx;
use crate::errors::EtcdError;
use crate::kv::{mvcc_status, propose_status};
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};

pub struct LeaseService {
    ctx: Arc<Ctx>,
}

impl LeaseService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        LeaseService { ctx }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

/// One keep-alive stream: a response per request, in order.
struct KeepAlive {
    inbound: Streaming<LeaseKeepAliveRequest>,
    ctx: Arc<Ctx>,
    done: bool,
    /// The stream's metadata and connection attributes (its caller, checked at every renewal).
    metadata: tonic::metadata::MetadataMap,
    extensions: tonic::Extensions,
}

impl KeepAlive {
    /// etcd 3.7's checkLeaseRenew: a known caller, root or allowed to write every attached key
    /// (who could not revoke the lease may not keep it alive either).
    fn check_renew(&self, id: i64) -> Result<(), Status> {
        let auth = &self.ctx.auth;
        if !auth.state().enabled() {
            return Ok(());
        }
        let caller = auth.caller_of(&self.metadata, &self.extensions)?;
        auth.check_user(&caller)?;
        auth.check_request(
            &caller,
            &Request::LeaseRevoke(EngineRevoke { id }),
            &self.ctx.reader,
        )
    }

    async fn next(mut self) -> Option<(Result<LeaseKeepAliveResponse, Status>, KeepAlive)> {
        if self.done {
            return None;
        }
        match self.inbound.message().await {
            Ok(Some(req)) => {
                // The header is taken before the renewal (etcd: a keep-alive must never look
                // newer than a revoke that follows it).
                let header = self.ctx.current_header();
                if let Err(e) = self.check_renew(req.id) {
                    self.done = true;
                    return Some((Err(e), self));
                }
                let renewed = match self.ctx.leases.keep_alive(req.id).await {
                    Err(ProposeError::NotLeader) => {
                        crate::peer::forward_lease(self.ctx.status.clone(), req.id, false)
                            .await
                            .map(|(ttl, _, _)| ttl)
                    }
                    other => other.map_err(propose_status),
                };
                match renewed {
                    Ok(ttl) => Some((
                        Ok(LeaseKeepAliveResponse {
                            header,
                            id: req.id,
                            ttl,
                        }),
                        self,
                    )),
                    Err(e) => {
                        self.done = true;
                        Some((Err(e), self))
                    }
                }
            }
            // The client closed its side: end the stream cleanly.
            Ok(None) => None,
            Err(status) => {
                self.done = true;
                Some((Err(status), self))
            }
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Req<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        // etcd checks no permission for a grant, only that the caller is someone.
        self.ctx.auth.require_user(&request)?;
        let r = request.into_inner();
        if r.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTTLTooLarge.status());
        }
        match self
            .ctx
            .leases
            .grant(r.id, r.ttl)
            .await
            .map_err(propose_status)?
        {
            WriteResult::LeaseGrant { id, ttl, .. } => Ok(Response::new(LeaseGrantResponse {
                header: self.ctx.current_header(),
                id,
                ttl,
                error: String::new(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Req<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = self.ctx.auth.require_user(&request)?;
        let r = request.into_inner();
        let req = Request::LeaseRevoke(EngineRevoke { id: r.id });
        // etcd: write permission on every key attached to the lease.
        self.ctx
            .auth
            .check_request(&caller, &req, &self.ctx.reader)?;
        match self
            .ctx
            .proposer
            .propose_as(&req, &caller)
            .await
            .map_err(propose_status)?
        {
            WriteResult::LeaseRevoke { .. } => Ok(Response::new(LeaseRevokeResponse {
                header: self.ctx.current_header(),
            })),
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Req<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let state = KeepAlive {
            metadata: request.metadata().clone(),
            extensions: request.extensions().clone(),
            inbound: request.into_inner(),
            ctx: self.ctx.clone(),
            done: false,
        };
        let stream = futures_lite::stream::unfold(state, KeepAlive::next);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Req<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = self.ctx.auth.require_user(&request)?;
        let r = request.into_inner();
        if r.keys {
            // etcd: the keys of a lease are shown to whoever may read every one of them.
            self.check_lease_keys(&caller, &[r.id])?;
        }
        let ttl = match self.ctx.leases.time_to_live(r.id).await {
            Err(ProposeError::NotLeader) => {
                let (ttl, granted_ttl, found) =
                    crate::peer::forward_lease(self.ctx.status.clone(), r.id, true).await?;
                found.then_some(retcd_raft::lessor::TimeToLive { ttl, granted_ttl })
            }
            other => other.map_err(propose_status)?,
        };
        let Some(ttl) = ttl else {
            // etcd answers a missing lease with TTL -1, not an error.
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header: self.ctx.current_header(),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let keys = if r.keys {
            self.ctx.reader.lease_keys(r.id).map_err(mvcc_status)?
        } else {
            Vec::new()
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.ctx.current_header(),
            id: r.id,
            ttl: ttl.ttl,
            granted_ttl: ttl.granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        request: Req<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let caller = self.ctx.auth.require_user(&request)?;
        let ids = self.ctx.leases.leases().await.map_err(propose_status)?;
        // etcd's checkLeaseLeases: root, or read permission on every key of every lease.
        self.check_lease_keys(&caller, &ids)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.ctx.current_header(),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}

impl LeaseService {
    /// Root, or read permission on every key attached to the leases `ids`.
    fn check_lease_keys(&self, caller: &Caller, ids: &[i64]) -> Result<(), Status> {
        let auth = &self.ctx.auth;
        if !auth.state().enabled() || auth.check_admin(caller).is_ok() {
            return Ok(());
        }
        for &id in ids {
            for key in self.ctx.reader.lease_keys(id).map_err(mvcc_status)? {
                auth.check_read(caller, &key, &[])?;
            }
        }
        Ok(())
    }
}

fn unexpected(w: WriteResult) -> Status {
    tracing::error!(result = ?w, "apply returned a result of another kind");
    Status::internal("retcd: unexpected apply result")
}
