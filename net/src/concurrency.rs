//! The steps etcd's server-side Lock and Election services take through their in-process client
//! (etcd's `clientv3/concurrency`: Session, Mutex, Election), run here against this member's own
//! KV, Lease and Watch services, so every step is checked, proposed and answered exactly as a
//! client's request would be — with the caller's token and connection, so its permissions apply.
//!
//! Every error of these steps reaches the caller with gRPC's Unknown code and the step's message,
//! as etcd's do (its in-process client turns a status into an error without a code, which its
//! gRPC server then answers as Unknown).
//!
//! Used by [`crate::lock`] and [`crate::election`] only. Holds no state between requests: a lock
//! or a leadership is only its key under the name's prefix, owned by a lease.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::context::Ctx;
use crate::keys::prefix_end;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::pb::etcdserverpb::{
    self as pb, LeaseGrantRequest, RangeRequest, ResponseHeader, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, kv_server::Kv, lease_server::Lease, range_request,
    request_op, response_op, watch_request,
};
use crate::pb::mvccpb;
use crate::watch::LocalWatch;

/// etcd's concurrency.Session default TTL, used when a request names no lease.
const SESSION_TTL: i64 = 60;

/// One request's view of the member: its services, called with the request's own metadata and
/// connection attributes.
pub struct Client {
    ctx: Arc<Ctx>,
    kv: KvService,
    lease: LeaseService,
    metadata: tonic::metadata::MetadataMap,
    extensions: tonic::Extensions,
}

impl Client {
    pub fn new<T>(ctx: &Arc<Ctx>, request: &Request<T>) -> Client {
        Client {
            ctx: ctx.clone(),
            kv: KvService::new(ctx.clone()),
            lease: LeaseService::new(ctx.clone()),
            metadata: request.metadata().clone(),
            extensions: request.extensions().clone(),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        Request::from_parts(self.metadata.clone(), self.extensions.clone(), message)
    }

    /// etcd's `NewSession(WithLease(lease))` as the services use it: the given lease, or for 0 a
    /// new one of [`SESSION_TTL`] seconds (the session is orphaned at once: nothing keeps it
    /// alive).
    pub async fn session(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self
            .lease
            .lease_grant(self.request(LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            }))
            .await
            .map_err(unknown)?
            .into_inner();
        Ok(granted.id)
    }

    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self
            .kv
            .txn(self.request(txn))
            .await
            .map_err(unknown)?
            .into_inner())
    }

    pub async fn range(&self, range: RangeRequest) -> Result<pb::RangeResponse, Status> {
        Ok(self
            .kv
            .range(self.request(range))
            .await
            .map_err(unknown)?
            .into_inner())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<pb::DeleteRangeResponse, Status> {
        let req = pb::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        Ok(self
            .kv
            .delete_range(self.request(req))
            .await
            .map_err(unknown)?
            .into_inner())
    }

    /// The key under `prefix` created first (etcd's `Get(prefix, WithFirstCreate()...)`).
    pub async fn first_created(
        &self,
        prefix: &[u8],
    ) -> Result<(ResponseHeader, Option<mvccpb::KeyValue>), Status> {
        self.top(prefix, range_request::SortOrder::Ascend, 0).await
    }

    /// The key under `prefix` with the highest create revision, or with the highest at most
    /// `max_create_revision` when it is not 0 (etcd's `WithLastCreate()` and `WithMaxCreateRev`).
    async fn top(
        &self,
        prefix: &[u8],
        order: range_request::SortOrder,
        max_create_revision: i64,
    ) -> Result<(ResponseHeader, Option<mvccpb::KeyValue>), Status> {
        let resp = self
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: order as i32,
                sort_target: range_request::SortTarget::Create as i32,
                max_create_revision,
                ..Default::default()
            })
            .await?;
        Ok((resp.header.unwrap_or_default(), resp.kvs.into_iter().next()))
    }

    /// etcd's `waitDeletes`: returns once no key under `prefix` with a create revision at most
    /// `max_create_revision` is left, waiting for the deletion of each in turn (newest first).
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<ResponseHeader, Status> {
        loop {
            let (header, last) = self
                .top(
                    prefix,
                    range_request::SortOrder::Descend,
                    max_create_revision,
                )
                .await?;
            let Some(last) = last else {
                return Ok(header);
            };
            self.wait_delete(&last.key, header.revision).await?;
        }
    }

    /// etcd's `waitDelete`: returns at the first deletion of `key` at `revision` or later.
    async fn wait_delete(&self, key: &[u8], revision: i64) -> Result<(), Status> {
        let mut watch = self.watch(key, revision).await?;
        loop {
            for ev in watch.next_events().await? {
                if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                    return Ok(());
                }
            }
        }
    }

    /// A watch of exactly `key` from `revision`, created.
    pub async fn watch(&self, key: &[u8], revision: i64) -> Result<KeyWatch, Status> {
        self.watch_range(key, Vec::new(), revision).await
    }

    /// A watch of every key under `prefix` from `revision`, created.
    pub async fn watch_prefix(&self, prefix: &[u8], revision: i64) -> Result<KeyWatch, Status> {
        self.watch_range(prefix, prefix_end(prefix), revision).await
    }

    async fn watch_range(
        &self,
        key: &[u8],
        range_end: Vec<u8>,
        revision: i64,
    ) -> Result<KeyWatch, Status> {
        let mut stream = LocalWatch::open(
            self.ctx.clone(),
            self.metadata.clone(),
            self.extensions.clone(),
        )
        .map_err(unknown)?;
        stream
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: key.to_vec(),
                        range_end,
                        start_revision: revision,
                        ..Default::default()
                    },
                )),
            })
            .await
            .map_err(unknown)?;
        Ok(KeyWatch { stream })
    }
}

/// A step's error as the caller gets it.
fn unknown(e: Status) -> Status {
    Status::unknown(e.message())
}

/// One watcher on its own in-process stream.
pub struct KeyWatch {
    stream: LocalWatch,
}

impl KeyWatch {
    /// The next non-empty batch of events, with its header. A watch the server cancels
    /// (compaction, permission) or a stream that ends is an error, as a closed watch channel
    /// is to etcd's recipes.
    pub async fn next_batch(&mut self) -> Result<(ResponseHeader, Vec<mvccpb::Event>), Status> {
        loop {
            let Some(resp) = self.stream.next().await else {
                return Err(Status::unknown("lost watcher waiting for delete"));
            };
            let resp = resp.map_err(unknown)?;
            if resp.canceled {
                if resp.compact_revision != 0 {
                    return Err(Status::unknown(
                        "etcdserver: mvcc: required revision has been compacted",
                    ));
                }
                return Err(Status::unknown(if resp.cancel_reason.is_empty() {
                    "lost watcher waiting for delete".to_string()
                } else {
                    resp.cancel_reason
                }));
            }
            if !resp.events.is_empty() {
                return Ok((resp.header.unwrap_or_default(), resp.events));
            }
        }
    }

    async fn next_events(&mut self) -> Result<Vec<mvccpb::Event>, Status> {
        Ok(self.next_batch().await?.1)
    }
}

/// Runs a txn when dropped before [`OnAbandon::disarm`]: what etcd's recipes do when their
/// context ends while they wait (Lock deletes its key, Campaign resigns). Here the context is
/// the request's future, which tonic drops when the caller goes away.
pub struct OnAbandon {
    client: Option<Client>,
    txn: TxnRequest,
}

impl OnAbandon {
    pub fn new(client: Client, txn: TxnRequest) -> OnAbandon {
        OnAbandon {
            client: Some(client),
            txn,
        }
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("armed until disarmed")
    }

    pub fn disarm(mut self) -> Client {
        self.client.take().expect("armed until disarmed")
    }
}

impl Drop for OnAbandon {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let txn = std::mem::take(&mut self.txn);
        retcd_engine::runtime::spawn_local(async move {
            if let Err(e) = client.txn(txn).await {
                tracing::warn!(error = %e, "could not release the key of an abandoned request");
            }
        });
    }
}

/// A txn that deletes `key`.
pub fn delete_txn(key: &[u8]) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: vec![delete_op(key)],
        failure: Vec::new(),
    }
}

/// etcd's `Compare(CreateRevision(key), "=", revision)`.
pub fn create_revision_is(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub fn get_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// etcd's `OpGet(prefix, WithFirstCreate()...)`.
pub fn first_created_op(prefix: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: range_request::SortOrder::Ascend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            ..Default::default()
        })),
    }
}

pub fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// The first key of the `i`th response of a txn, if that response is a range.
pub fn range_kv(resp: &TxnResponse, i: usize) -> Option<&mvccpb::KeyValue> {
    match resp.responses.get(i)?.response.as_ref()? {
        response_op::Response::ResponseRange(r) => r.kvs.first(),
        _ => None,
    }
}

/// The session key of `lease` under `prefix` (etcd's `fmt.Sprintf("%s%x", pfx, lease)`).
pub fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name/`, the prefix of a lock's or an election's keys.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}
