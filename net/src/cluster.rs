//! The Cluster service. A single member lists itself; membership changes answer Unimplemented
//! until clustering lands.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::context::Ctx;
use crate::pb::etcdserverpb::{self as pb, cluster_server::Cluster};

pub struct ClusterService {
    ctx: Arc<Ctx>,
}

impl ClusterService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        ClusterService { ctx }
    }

    fn me(&self) -> pb::Member {
        let m = &self.ctx.member;
        pb::Member {
            id: self.ctx.status.member_id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: false,
        }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("retcd: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(unimplemented("MemberAdd"))
    }
    async fn member_remove(
        &self,
        _r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(unimplemented("MemberRemove"))
    }
    async fn member_update(
        &self,
        _r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unimplemented("MemberUpdate"))
    }
    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        // etcd's Cluster service fills no revision in its headers.
        Ok(Response::new(pb::MemberListResponse {
            header: self.ctx.header(0),
            members: vec![self.me()],
        }))
    }
    async fn member_promote(
        &self,
        _r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(unimplemented("MemberPromote"))
    }
}
