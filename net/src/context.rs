//! What every service on every core shares: the committed-state reader, the proposer, the member's
//! identity and status, and the request limits. Built once by the server, cloned (as an `Arc`) to
//! every core.

use std::sync::Arc;

use retcd_engine::mvcc::MvccReader;
use retcd_raft::lessor::LeaseHandle;
use retcd_raft::{NodeStatus, Proposer};

use crate::pb::etcdserverpb::ResponseHeader;

/// This member as the Cluster service lists it.
#[derive(Debug, Clone, Default)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// Limits enforced before a request is proposed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// etcd's --max-request-bytes.
    pub max_request_bytes: usize,
    /// etcd's --max-txn-ops.
    pub max_txn_ops: usize,
    /// etcd's --quota-backend-bytes (resolved).
    pub quota_bytes: i64,
    /// etcd's request timeout (5 s and two election timeouts): how long after it began a large
    /// Range may still wait for its core's budget (crate::admission) before it times out.
    pub request_timeout: std::time::Duration,
}

pub struct Ctx {
    pub reader: MvccReader,
    pub proposer: Proposer,
    /// The lessor on the sequencer core (lease grant, keep-alive, time-to-live, list).
    pub leases: LeaseHandle,
    pub status: Arc<NodeStatus>,
    pub member: MemberInfo,
    pub limits: Limits,
    /// Callers and their permissions (auth).
    pub auth: crate::auth::AuthGate,
    /// bcrypt, off the request cores.
    pub passwords: crate::auth::Passwords,
    /// etcd's --experimental-watch-progress-notify-interval.
    pub watch_progress_notify_interval: std::time::Duration,
}

impl Ctx {
    /// etcd's response header: cluster and member id, the given revision, the current raft term.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.status.cluster_id,
            member_id: self.status.member_id,
            revision,
            raft_term: self.status.term(),
        })
    }

    /// Header at the current revision.
    pub fn current_header(&self) -> Option<ResponseHeader> {
        self.header(self.reader.revisions().0)
    }
}
