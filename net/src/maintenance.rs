//! The Maintenance service: Status (what `etcdctl endpoint status` shows), Alarm, MoveLeader
//! and HashKV. The other RPCs (Defragment, Hash, Snapshot, Downgrade) answer Unimplemented until
//! their issues land.

use std::sync::Arc;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::context::Ctx;
use crate::errors::EtcdError;
use crate::kv::propose_status;
use crate::pb::etcdserverpb::{self as pb, maintenance_server::Maintenance};
use retcd_raft::ProposeError;

/// The etcd release whose client API retcd implements; clients (Kubernetes among them) gate
/// features on Status.version.
pub const ETCD_API_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    ctx: Arc<Ctx>,
}

impl MaintenanceService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        MaintenanceService { ctx }
    }
}

impl MaintenanceService {
    /// etcd's authMaintenanceServer: the caller holds the root role (or auth is off).
    fn admin<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let caller = self.ctx.auth.caller(r)?;
        self.ctx.auth.check_admin(&caller)
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("retcd: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        // etcd: listing alarms needs a known caller, changing them root.
        if request.get_ref().action == AlarmAction::Get as i32 {
            self.ctx.auth.require_user(&request)?;
        } else {
            self.admin(&request)?;
        }
        let r = request.into_inner();
        let status = &self.ctx.status;
        // The only alarm retcd raises so far is NOSPACE (the backend quota, see net::kv).
        let nospace = || pb::AlarmMember {
            member_id: status.member_id,
            alarm: pb::AlarmType::Nospace as i32,
        };
        let wants_nospace =
            r.alarm == pb::AlarmType::None as i32 || r.alarm == pb::AlarmType::Nospace as i32;
        let alarms = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => status.nospace().then(nospace).into_iter().collect(),
            Ok(AlarmAction::Deactivate) if wants_nospace && status.nospace() => {
                status.set_nospace(false);
                tracing::info!("NOSPACE alarm disarmed");
                vec![nospace()]
            }
            Ok(AlarmAction::Deactivate) => Vec::new(),
            Ok(AlarmAction::Activate) | Err(_) => return Err(unimplemented("raising alarms")),
        };
        Ok(Response::new(pb::AlarmResponse {
            header: self.ctx.current_header(),
            alarms,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.ctx.auth.require_user(&request)?;
        let s = &self.ctx.status;
        Ok(Response::new(pb::StatusResponse {
            header: self.ctx.current_header(),
            version: ETCD_API_VERSION.to_string(),
            db_size: s.db_size() as i64,
            leader: s.leader(),
            raft_index: s.commit_index(),
            raft_term: s.term(),
            raft_applied_index: s.applied_index(),
            errors: Vec::new(),
            db_size_in_use: s.db_size_in_use() as i64,
            is_learner: s.is_learner(),
            storage_version: String::new(),
            db_size_quota: self.ctx.limits.quota_bytes,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        r: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.admin(&r)?;
        Err(unimplemented("Defragment"))
    }
    async fn hash(
        &self,
        r: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.admin(&r)?;
        Err(unimplemented("Hash"))
    }
    /// etcd's HashKV: the hash etcd computes over its `key` bucket up to a revision, equal to
    /// etcd's for the same history (engine/DESIGN.md §4.10), so members — retcd or etcd — can be
    /// compared and a migration verified. The header carries the current revision, as etcd's.
    async fn hash_kv(
        &self,
        r: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.admin(&r)?;
        let h = self
            .ctx
            .reader
            .hash_kv(r.into_inner().revision)
            .map_err(crate::kv::mvcc_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.ctx.header(h.revision),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }
    type SnapshotStream = BoxStream<pb::SnapshotResponse>;
    async fn snapshot(
        &self,
        r: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.admin(&r)?;
        Err(unimplemented("Snapshot"))
    }
    async fn move_leader(
        &self,
        r: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.admin(&r)?;
        let to = r.into_inner().target_id;
        let s = &self.ctx.status;
        if s.leader() != s.member_id {
            return Err(EtcdError::NotLeader.status());
        }
        if s.members().voters().all(|m| m.id != to) {
            return Err(EtcdError::BadLeaderTransferee.status());
        }
        match self.ctx.proposer.transfer_leader(to).await {
            Ok(()) => Ok(Response::new(pb::MoveLeaderResponse {
                header: self.ctx.current_header(),
            })),
            Err(ProposeError::Timeout) => Err(EtcdError::TimeoutLeaderTransfer.status()),
            Err(ProposeError::Member(_)) => Err(EtcdError::BadLeaderTransferee.status()),
            Err(e) => Err(propose_status(e)),
        }
    }
    async fn downgrade(
        &self,
        r: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        self.admin(&r)?;
        Err(unimplemented("Downgrade"))
    }
}
