//! etcd's v3lock service (server/etcdserver/api/v3lock, v3.5): a lock named N is held by the key
//! `N/<lease in hex>` with the lowest create revision under `N/`; Lock puts the caller's key
//! (owned by its lease) and waits until every older key is gone, Unlock deletes the key. Nothing
//! is kept in memory: the keys are the lock, so a lease's expiry releases it on every member.
//!
//! A Lock whose caller goes away while it waits deletes its key, as etcd's `Mutex.Lock` does
//! when its context ends.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::concurrency::{
    Client, OnAbandon, create_revision_is, delete_txn, first_created_op, get_op, prefix_of, put_op,
    range_kv, session_key,
};
use crate::context::Ctx;
use crate::pb::etcdserverpb::{RangeRequest, TxnRequest};
use crate::pb::v3lockpb::{
    LockRequest, LockResponse, UnlockRequest, UnlockResponse, lock_server::Lock,
};

/// etcd's `ErrSessionExpired`: the caller's key went away (its lease expired) while it waited.
const ERR_SESSION_EXPIRED: &str = "mutex: session is expired";

pub struct LockService {
    ctx: Arc<Ctx>,
}

impl LockService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        LockService { ctx }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let client = Client::new(&self.ctx, &request);
        let req = request.into_inner();
        let lease = client.session(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = session_key(&prefix, lease);
        // Put the key unless this lease has it already, and read the owner, in one txn
        // (etcd's tryAcquire).
        let resp = client
            .txn(TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, b"", lease), first_created_op(&prefix)],
                failure: vec![get_op(&key), first_created_op(&prefix)],
            })
            .await?;
        let header = resp.header.unwrap_or_default();
        let my_rev = if resp.succeeded {
            header.revision
        } else {
            range_kv(&resp, 0).map_or(0, |kv| kv.create_revision)
        };
        let owner = range_kv(&resp, 1).map(|kv| kv.create_revision);
        if owner.is_none_or(|rev| rev == my_rev) {
            return Ok(Response::new(LockResponse {
                header: Some(header),
                key,
            }));
        }
        // Wait for every older key; if the caller goes away meanwhile (this future is dropped)
        // or the wait fails, the key is deleted.
        let guard = OnAbandon::new(client, delete_txn(&key));
        let client = guard.client();
        client.wait_deletes(&prefix, my_rev - 1).await?;
        let got = client
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        guard.disarm();
        if got.kvs.is_empty() {
            return Err(Status::unknown(ERR_SESSION_EXPIRED));
        }
        Ok(Response::new(LockResponse {
            header: got.header,
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let client = Client::new(&self.ctx, &request);
        let deleted = client.delete(&request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse {
            header: deleted.header,
        }))
    }
}
