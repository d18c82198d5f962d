//! The Cluster service: etcd's member list and membership changes, proposed through Raft
//! (configuration changes for add, remove and promote; an attributes entry for update) and
//! answered once applied, with etcd's checks and errors (raft/src/core/conf.rs).
//!
//! A promotion needs the leader's view of the learner's progress: a member that does not lead
//! forwards the request to the leader's client URL, as etcd forwards it over its peer API.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use retcd_raft::membership::{self, Membership};
use retcd_raft::{MemberChange, ProposeError};
use tonic::{Request, Response, Status};

use crate::context::Ctx;
use crate::errors::EtcdError;
use crate::kv::propose_status;
use crate::pb::etcdserverpb::{self as pb, cluster_server::Cluster};

pub struct ClusterService {
    ctx: Arc<Ctx>,
}

impl ClusterService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        ClusterService { ctx }
    }

    async fn change(&self, change: MemberChange) -> Result<Arc<Membership>, Status> {
        self.ctx
            .proposer
            .change_members(change)
            .await
            .map_err(propose_status)
    }

    /// etcd's checkMembershipOperationPermission: the caller holds the root role.
    fn admin<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let caller = self.ctx.auth.caller(r)?;
        self.ctx.auth.check_admin(&caller)
    }
}

fn member_pb(m: &membership::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

fn members_pb(m: &Membership) -> Vec<pb::Member> {
    m.members.iter().map(member_pb).collect()
}

/// etcd's check of member URLs: each one `scheme://host:port`, scheme http or https, no path.
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let ok = !urls.is_empty()
        && urls.iter().all(|u| {
            let Some((scheme, rest)) = u.split_once("://") else {
                return false;
            };
            let Some((host, port)) = rest.rsplit_once(':') else {
                return false;
            };
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && !port.contains('/')
                && port.parse::<u16>().is_ok()
        });
    if ok {
        Ok(())
    } else {
        Err(EtcdError::MemberBadURLs.status())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.admin(&r)?;
        let r = r.into_inner();
        check_urls(&r.peer_ur_ls)?;
        // etcd: a hash of the peer URLs, the cluster and the time, so re-adding the same URLs
        // after a removal gives a new id.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = membership::member_id(
            &r.peer_ur_ls,
            &format!("{:x}{now}", self.ctx.status.cluster_id),
        );
        let members = self
            .change(MemberChange::Add {
                id,
                peer_urls: r.peer_ur_ls,
                is_learner: r.is_learner,
            })
            .await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.ctx.header(0),
            member: members.get(id).map(member_pb),
            members: members_pb(&members),
        }))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.admin(&r)?;
        let members = self.change(MemberChange::Remove(r.into_inner().id)).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.ctx.header(0),
            members: members_pb(&members),
        }))
    }

    async fn member_update(
        &self,
        r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.admin(&r)?;
        let r = r.into_inner();
        check_urls(&r.peer_ur_ls)?;
        let members = self
            .change(MemberChange::Update {
                id: r.id,
                peer_urls: r.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.ctx.header(0),
            members: members_pb(&members),
        }))
    }

    async fn member_list(
        &self,
        r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.ctx.auth.require_user(&r)?;
        // etcd's Cluster service fills no revision in its headers.
        Ok(Response::new(pb::MemberListResponse {
            header: self.ctx.header(0),
            members: members_pb(&self.ctx.status.members()),
        }))
    }

    async fn member_promote(
        &self,
        r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.admin(&r)?;
        // The leader checks the caller again: its token goes along (simple tokens are known to
        // every member).
        let token = ["token", "authorization"]
            .iter()
            .find_map(|k| r.metadata().get(*k).map(|v| (*k, v.clone())));
        let r = r.into_inner();
        let status = &self.ctx.status;
        let leader = status.leader();
        if leader != status.member_id {
            let url = status
                .members()
                .get(leader)
                .and_then(|m| m.client_urls.first().cloned())
                .ok_or_else(|| propose_status(ProposeError::NoLeader))?;
            // glommio's sockets are not Send: the call runs as a task of this core.
            let (tx, rx) = flume::bounded(1);
            retcd_engine::runtime::spawn_local(async move {
                let _ = tx.send(forward_promote(&url, r, token).await);
            });
            return rx
                .recv_async()
                .await
                .map_err(|_| propose_status(ProposeError::Stopped))?;
        }
        let members = self.change(MemberChange::Promote(r.id)).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.ctx.header(0),
            members: members_pb(&members),
        }))
    }
}

/// Asks the leader (at its client URL) to promote the learner.
async fn forward_promote(
    url: &str,
    r: pb::MemberPromoteRequest,
    token: Option<(
        &'static str,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
) -> Result<Response<pb::MemberPromoteResponse>, Status> {
    let mut r = Request::new(r);
    if let Some((key, t)) = token {
        r.metadata_mut().insert(key, t);
    }
    let (channel, origin) = crate::peer::connect(url)
        .await
        .map_err(|e| Status::unavailable(format!("forwarding to the leader: {e}")))?;
    pb::cluster_client::ClusterClient::with_origin(channel, origin)
        .member_promote(r)
        .await
}
