//! The KV service (Range, Put, DeleteRange, Txn, Compact): etcd's request validation, conversion
//! between etcd's protobuf messages and the engine's requests, and response headers.
//!
//! Reads are served on the calling core from the latest committed snapshot; writes are proposed to
//! the sequencer and answered once applied. Validation happens here, before anything is proposed,
//! so an invalid request never reaches the Raft log (apply re-checks what depends on state).

use std::collections::HashSet;
use std::sync::Arc;

use prost::Message;
use retcd_engine::mvcc::{
    self, DeleteResult, KeyValue, OpResult, PutResult, RangeResult, TxnResult, WriteResult,
};
use retcd_engine::request::{self as er, Request};
use retcd_engine::runtime;
use retcd_raft::{MemberError, ProposeError};
use tonic::{Request as Req, Response, Status};

use crate::admission;
use crate::context::Ctx;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    self as pb, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse, compare, request_op, response_op,
};
use crate::pb::mvccpb;

pub struct KvService {
    ctx: Arc<Ctx>,
}

impl KvService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        KvService { ctx }
    }
}

/// Maps an engine error to etcd's gRPC status.
pub fn mvcc_status(e: mvcc::MvccError) -> Status {
    match e {
        mvcc::MvccError::Compacted => EtcdError::Compacted.status(),
        mvcc::MvccError::FutureRev => EtcdError::FutureRev.status(),
        mvcc::MvccError::KeyNotFound => EtcdError::KeyNotFound.status(),
        mvcc::MvccError::LeaseNotFound => EtcdError::LeaseNotFound.status(),
        mvcc::MvccError::LeaseExist => EtcdError::LeaseExist.status(),
        mvcc::MvccError::Auth(e) => crate::auth::auth_status(e),
        mvcc::MvccError::NoSpace => EtcdError::NoSpace.status(),
        mvcc::MvccError::Corrupt => EtcdError::Corrupt.status(),
        other => {
            tracing::error!(error = %other, "storage error");
            Status::internal(format!("retcd: {other}"))
        }
    }
}

pub fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Apply(e) => mvcc_status(e),
        ProposeError::NoLeader => EtcdError::NoLeader.status(),
        ProposeError::LeaderChanged => EtcdError::LeaderChanged.status(),
        ProposeError::Stopped => EtcdError::Stopped.status(),
        ProposeError::NotLeader => EtcdError::NotLeader.status(),
        ProposeError::Timeout => EtcdError::Timeout.status(),
        ProposeError::TooLarge => EtcdError::RequestTooLarge.status(),
        ProposeError::TimeoutDueToLeaderFail => EtcdError::TimeoutDueToLeaderFail.status(),
        // Not in etcd's error table: etcd answers raft's error text with code Unknown (its
        // togRPCError), and clients (etcd's own tester among them) match that text.
        ProposeError::ProposalDropped => Status::unknown("raft proposal dropped"),
        ProposeError::Member(e) => match e {
            MemberError::NotFound | MemberError::IdRemoved => EtcdError::MemberNotFound,
            MemberError::PeerUrlExists => EtcdError::PeerURLExist,
            MemberError::NotLearner => EtcdError::MemberNotLearner,
            MemberError::LearnerNotReady => EtcdError::LearnerNotReady,
            MemberError::TooManyLearners => EtcdError::TooManyLearners,
            MemberError::NotEnoughStarted => EtcdError::MemberNotEnoughStarted,
            MemberError::Unhealthy => EtcdError::Unhealthy,
        }
        .status(),
    }
}

/// Waits until a read on this member sees every write acknowledged before it was asked (Raft's
/// ReadIndex). A sole voter needs no round once its state is current (it acknowledges a write
/// only once it is applied and published; after a restart, only once the new term's first entry
/// committed and everything before it is applied again). A learner serves only serializable
/// reads, as etcd's do.
pub async fn linearizable(ctx: &Ctx) -> Result<(), Status> {
    if ctx.status.sole_voter_reads_current() {
        return Ok(());
    }
    if ctx.status.is_learner() {
        return Err(EtcdError::NotSupportedForLearner.status());
    }
    ctx.proposer.read_index().await.map_err(propose_status)?;
    Ok(())
}

// ---- quota costs (etcd's quota.go) ----

/// What etcd adds to a put's encoded size for its key's index and revision entries.
const KV_OVERHEAD: usize = 256;

fn put_cost(r: &PutRequest) -> usize {
    KV_OVERHEAD + r.encoded_len()
}

/// The larger of the two branches' puts (nested txns count nothing, as in etcd).
fn txn_cost(r: &TxnRequest) -> usize {
    let branch = |ops: &[pb::RequestOp]| -> usize {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => put_cost(p),
                _ => 0,
            })
            .sum()
    };
    branch(&r.success).max(branch(&r.failure))
}

// ---- validation (etcd's api/v3rpc/key.go rules) ----

fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if pb::range_request::SortOrder::try_from(r.sort_order).is_err()
        || pb::range_request::SortTarget::try_from(r.sort_target).is_err()
    {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(x)) => check_range(x)?,
            Some(request_op::Request::RequestPut(x)) => check_put(x)?,
            Some(request_op::Request::RequestDeleteRange(x)) => check_delete(x)?,
            Some(request_op::Request::RequestTxn(x)) => check_txn(x, max_ops)?,
            None => {}
        }
    }
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// Deleted intervals of a txn branch, in etcd's "affine" order where an empty end is +infinity.
#[derive(Default)]
struct Dels(Vec<(Vec<u8>, Vec<u8>)>);

impl Dels {
    fn contains(&self, k: &[u8]) -> bool {
        self.0
            .iter()
            .any(|(s, e)| s.as_slice() <= k && (e.is_empty() || k < e.as_slice()))
    }
}

/// etcd's checkIntervals: a txn branch may not put the same key twice, nor put a key it deletes
/// (nested txns included; the two branches of a nested txn may put the same key).
fn check_intervals(reqs: &[pb::RequestOp]) -> Result<(HashSet<Vec<u8>>, Dels), EtcdError> {
    let mut dels = Dels::default();
    for op in reqs {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                let mut e = d.key.clone();
                e.push(0);
                e
            } else {
                d.range_end.clone()
            };
            dels.0.push((d.key.clone(), end));
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in reqs {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || dels.contains(&k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.0.extend(dels_then.0);
        dels.0.extend(dels_else.0);
    }
    for op in reqs {
        if let Some(request_op::Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || dels.contains(&p.key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

// ---- conversion ----

pub fn range_req(r: &RangeRequest) -> er::RangeRequest {
    er::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: r.sort_order,
        sort_target: r.sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

fn put_req(r: PutRequest) -> er::PutRequest {
    er::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

fn delete_req(r: DeleteRangeRequest) -> er::DeleteRangeRequest {
    er::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

fn compare(c: pb::Compare) -> er::Compare {
    // etcd compares against the zero value when the union does not carry the target's field.
    let (value, number) = match (c.target, c.target_union) {
        (3, Some(compare::TargetUnion::Value(v))) => (v, 0),
        (0, Some(compare::TargetUnion::Version(n)))
        | (1, Some(compare::TargetUnion::CreateRevision(n)))
        | (2, Some(compare::TargetUnion::ModRevision(n)))
        | (4, Some(compare::TargetUnion::Lease(n))) => (Vec::new(), n),
        _ => (Vec::new(), 0),
    };
    er::Compare {
        result: c.result,
        target: c.target,
        key: c.key,
        range_end: c.range_end,
        value,
        number,
    }
}

fn ops(v: Vec<pb::RequestOp>) -> Vec<er::RequestOp> {
    v.into_iter()
        .filter_map(|op| {
            Some(match op.request? {
                request_op::Request::RequestRange(r) => er::RequestOp::Range(range_req(&r)),
                request_op::Request::RequestPut(r) => er::RequestOp::Put(put_req(r)),
                request_op::Request::RequestDeleteRange(r) => {
                    er::RequestOp::DeleteRange(delete_req(r))
                }
                request_op::Request::RequestTxn(r) => er::RequestOp::Txn(txn_req(r)),
            })
        })
        .collect()
}

fn txn_req(r: TxnRequest) -> er::TxnRequest {
    er::TxnRequest {
        compare: r.compare.into_iter().map(compare).collect(),
        success: ops(r.success),
        failure: ops(r.failure),
    }
}

pub fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

fn inner_header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn range_resp(r: RangeResult, header: Option<ResponseHeader>) -> RangeResponse {
    RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}
fn put_resp(r: PutResult, header: Option<ResponseHeader>) -> PutResponse {
    PutResponse {
        header,
        prev_kv: r.prev_kv.map(kv),
    }
}
fn delete_resp(r: DeleteResult, header: Option<ResponseHeader>) -> DeleteRangeResponse {
    DeleteRangeResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}
fn txn_resp(r: TxnResult, header: Option<ResponseHeader>) -> TxnResponse {
    TxnResponse {
        header,
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|op| ResponseOp {
                response: Some(match op {
                    OpResult::Range(x) => {
                        let h = inner_header(x.revision);
                        response_op::Response::ResponseRange(range_resp(x, h))
                    }
                    OpResult::Put(x) => {
                        let h = inner_header(x.revision);
                        response_op::Response::ResponsePut(put_resp(x, h))
                    }
                    OpResult::DeleteRange(x) => {
                        let h = inner_header(x.revision);
                        response_op::Response::ResponseDeleteRange(delete_resp(x, h))
                    }
                    OpResult::Txn(x) => {
                        let h = inner_header(x.revision);
                        response_op::Response::ResponseTxn(txn_resp(x, h))
                    }
                }),
            })
            .collect(),
    }
}

/// etcd's isTxnSerializable: every Range of both branches asks for a serializable read.
fn txn_is_serializable(t: &er::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| matches!(op, er::RequestOp::Range(r) if r.serializable))
}

/// etcd's isTxnReadonly: every op of both branches is a Range (a nested txn, even a read-only one,
/// is not). etcd serves such a txn without Raft, so it is never refused as too large.
fn txn_is_read_only(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// Encoded size of the InternalRaftRequest etcd proposes for a request of `inner_len` bytes: the
/// request in its oneof field (1-byte tag, length) plus the RequestHeader (field 100: 2-byte tag,
/// length) carrying the request id. etcd's ids (idutil.Generator) are the member id's low 16 bits
/// followed by a 40-bit millisecond timestamp and an 8-bit counter, so their varint length depends on
/// the member id only (a timestamp fills the low 48 bits).
fn raft_request_len(inner_len: usize, member_id: u64) -> usize {
    use prost::encoding::encoded_len_varint;
    let id = ((member_id & 0xffff) << 48) | (1 << 47);
    let header = 1 + encoded_len_varint(id);
    1 + encoded_len_varint(inner_len as u64)
        + inner_len
        + 2
        + encoded_len_varint(header as u64)
        + header
}

impl KvService {
    /// etcd: a request whose InternalRaftRequest encodes to more than --max-request-bytes is
    /// refused before proposal.
    fn check_size(&self, m: &impl Message) -> Result<(), Status> {
        if raft_request_len(m.encoded_len(), self.ctx.status.member_id)
            > self.ctx.limits.max_request_bytes
        {
            return Err(EtcdError::RequestTooLarge.status());
        }
        Ok(())
    }

    /// etcd's backend quota: a write whose cost would take the db past --quota-backend-bytes
    /// raises the NOSPACE alarm (for this member, through Raft, so every member refuses what
    /// adds data from then on: the apply checks it), and is refused.
    /// As etcd: the size compared is the db's (the file's pages, free ones included, so after a
    /// compaction it takes a defragmentation to get below the quota again), a write is allowed
    /// while size + cost < quota, and a request that puts nothing (cost 0) always passes (3.5).
    async fn check_quota(&self, cost: usize) -> Result<(), Status> {
        if cost == 0 {
            return Ok(());
        }
        let status = &self.ctx.status;
        if status.nospace() {
            return Err(EtcdError::NoSpace.status());
        }
        let quota = self.ctx.limits.quota_bytes;
        if quota > 0 && status.db_size().saturating_add(cost as u64) >= quota as u64 {
            tracing::warn!(
                quota,
                db_size = status.db_size(),
                "backend quota exceeded: raising the NOSPACE alarm"
            );
            // etcd waits for the alarm and answers NoSpace whatever became of it.
            let nospace = retcd_engine::mvcc::ALARM_NOSPACE;
            let raised = self
                .ctx
                .proposer
                .propose_alarm(true, status.member_id, nospace);
            if let Err(e) = raised.await {
                tracing::warn!(error = %e, "failed to raise the NOSPACE alarm");
            }
            return Err(EtcdError::NoSpace.status());
        }
        Ok(())
    }

    /// Proposes `req` for `caller` once etcd's auth rules allow it (checked again at apply).
    async fn write(&self, caller: &er::Caller, req: Request) -> Result<WriteResult, Status> {
        self.ctx
            .auth
            .check_request(caller, &req, &self.ctx.reader)?;
        self.ctx
            .proposer
            .propose_as(&req, caller)
            .await
            .map_err(propose_status)
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(&self, request: Req<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let (md, ext, r) = request.into_parts();
        check_range(&r)?;
        if !r.serializable {
            linearizable(&self.ctx).await?;
        }
        // After the barrier, as etcd: a permission revoked before this read began is gone.
        let caller = self.ctx.auth.caller_of(&md, &ext)?;
        self.ctx.auth.check_read(&caller, &r.key, &r.range_end)?;
        let req = range_req(&r);
        let mut steps = self.ctx.reader.range_steps(&req).map_err(mvcc_status)?;
        // A large response is admitted against this core's budget as it grows: each step's
        // memory is reserved before the step collects it (crate::admission).
        let mut charge = None;
        // One deadline for all of this Range's waits.
        let deadline = std::time::Instant::now() + self.ctx.limits.request_timeout;
        loop {
            let next = steps.bytes() + admission::RANGE_STEP_BYTES;
            if next > admission::FREE_BYTES {
                charge
                    .get_or_insert_with(|| admission::Admission::this_core().charge())
                    .grow_to(next, deadline)
                    .await?;
            }
            if steps.step().map_err(mvcc_status)? {
                break;
            }
            // A long range (a page of a list, counting the rest) lets the requests queued
            // behind it on this core run between its steps.
            runtime::yield_now().await;
        }
        let res = steps.finish();
        self.ctx.auth.check_unchanged(&caller)?;
        let h = self.ctx.header(res.revision);
        let mut resp = Response::new(range_resp(res, h));
        if let Some(charge) = charge {
            resp.extensions_mut()
                .insert(admission::ResponseCharge::new(charge));
        }
        Ok(resp)
    }

    async fn put(&self, request: Req<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (md, ext, r) = request.into_parts();
        check_put(&r)?;
        self.check_size(&r)?;
        let caller = self.ctx.auth.caller_of(&md, &ext)?;
        self.check_quota(put_cost(&r)).await?;
        match self.write(&caller, Request::Put(put_req(r))).await? {
            WriteResult::Put(p) => {
                let h = self.ctx.header(p.revision);
                Ok(Response::new(put_resp(p, h)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Req<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let (md, ext, r) = request.into_parts();
        check_delete(&r)?;
        self.check_size(&r)?;
        let caller = self.ctx.auth.caller_of(&md, &ext)?;
        match self
            .write(&caller, Request::DeleteRange(delete_req(r)))
            .await?
        {
            WriteResult::DeleteRange(d) => {
                let h = self.ctx.header(d.revision);
                Ok(Response::new(delete_resp(d, h)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, request: Req<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let (md, ext, r) = request.into_parts();
        check_txn(&r, self.ctx.limits.max_txn_ops)?;
        let read_only = txn_is_read_only(&r);
        if !read_only {
            self.check_size(&r)?;
            self.check_quota(txn_cost(&r)).await?;
        }
        let req = Request::Txn(txn_req(r));
        let Request::Txn(t) = &req else {
            unreachable!("built above")
        };
        if read_only {
            // Like a Range, served from this core's view of the committed state once it holds
            // every write acknowledged before this request arrived.
            if !txn_is_serializable(t) {
                linearizable(&self.ctx).await?;
            }
            let caller = self.ctx.auth.caller_of(&md, &ext)?;
            self.ctx
                .auth
                .check_request(&caller, &req, &self.ctx.reader)?;
            if let Some(res) = self.ctx.reader.txn_read_only(t).map_err(mvcc_status)? {
                self.ctx.auth.check_unchanged(&caller)?;
                let h = self.ctx.header(res.revision);
                return Ok(Response::new(txn_resp(res, h)));
            }
        }
        let caller = self.ctx.auth.caller_of(&md, &ext)?;
        match self.write(&caller, req).await? {
            WriteResult::Txn(t) => {
                let h = self.ctx.header(t.revision);
                Ok(Response::new(txn_resp(t, h)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Req<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = self.ctx.auth.caller(&request)?;
        let r = request.into_inner();
        let req = Request::Compact(er::CompactRequest {
            revision: r.revision,
            physical: r.physical,
        });
        match self.write(&caller, req).await? {
            WriteResult::Compact { revision } => Ok(Response::new(CompactionResponse {
                header: self.ctx.header(revision),
            })),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(w: WriteResult) -> Status {
    tracing::error!(result = ?w, "apply returned a result of another kind");
    Status::internal("retcd: unexpected apply result")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: k.into(),
                    range_end: end.into(),
                    ..Default::default()
                },
            )),
        }
    }
    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn raft_request_len_matches_etcd() {
        // Measured against etcd 3.4 with --max-request-bytes 100000: a member id with bit 15 set
        // (10-byte request ids) accepts a put of key "big" whose PutRequest is 99982 bytes.
        assert_eq!(raft_request_len(99_982, 0x8000), 100_000);
        assert_eq!(raft_request_len(99_982, 0x7fff), 99_999);
        assert_eq!(raft_request_len(10, 0), 1 + 1 + 10 + 2 + 1 + 8);
    }

    #[test]
    fn read_only_txns() {
        let range = pb::RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: "a".into(),
                ..Default::default()
            })),
        };
        assert!(txn_is_read_only(&txn(vec![], vec![])));
        assert!(txn_is_read_only(&txn(
            vec![range.clone()],
            vec![range.clone()]
        )));
        // etcd does not look into nested txns.
        let nested_ro = pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(
                vec![range.clone()],
                vec![],
            ))),
        };
        assert!(!txn_is_read_only(&txn(vec![nested_ro], vec![])));
        assert!(!txn_is_read_only(&txn(vec![range.clone()], vec![put("a")])));
        assert!(!txn_is_read_only(&txn(vec![del("a", "")], vec![])));
        let nested_rw = pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(vec![], vec![put("x")]))),
        };
        assert!(!txn_is_read_only(&txn(vec![range], vec![nested_rw])));
    }

    #[test]
    fn txn_checks() {
        assert!(check_txn(&txn(vec![put("a"), put("b")], vec![put("a")]), 128).is_ok());
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128).err(),
            Some(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![]), 128).err(),
            Some(EtcdError::DuplicateKey)
        );
        assert!(check_txn(&txn(vec![del("a", "c"), put("c")], vec![]), 128).is_ok());
        let nested = pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(
                vec![put("x")],
                vec![put("x")],
            ))),
        };
        assert!(check_txn(&txn(vec![nested.clone()], vec![]), 128).is_ok());
        assert_eq!(
            check_txn(&txn(vec![nested, put("x")], vec![]), 128).err(),
            Some(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("b")], vec![]), 1).err(),
            Some(EtcdError::TooManyOps)
        );
        assert_eq!(
            check_txn(&txn(vec![put("")], vec![]), 128).err(),
            Some(EtcdError::EmptyKey)
        );
    }
}
