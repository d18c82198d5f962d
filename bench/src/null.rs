//! A server that answers etcd's KV and Lease RPCs instantly, without storing anything: it
//! measures the generator itself. Whatever rate retcd-bench reaches against it is the ceiling
//! of the generator on that machine, which must sit well above what any real store reaches
//! (perf/results/*-generator.md).
//!
//! Answers are well-formed (a header with a growing revision, leases with their TTL) so that
//! every request-response command of retcd-bench runs against it unchanged.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};

use retcd_net::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
    kv_server::{Kv, KvServer},
    lease_server::{Lease, LeaseServer},
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Clones share the revision counter (one per server, across its services).
#[derive(Clone, Default)]
struct Null {
    revision: std::sync::Arc<AtomicI64>,
}

impl Null {
    fn header(&self, write: bool) -> Option<ResponseHeader> {
        let revision = if write {
            self.revision.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.revision.load(Ordering::Relaxed)
        };
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 1,
            revision,
            raft_term: 2,
        })
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Kv for Null {
    async fn range(&self, _: Request<RangeRequest>) -> Answer<RangeResponse> {
        Ok(Response::new(RangeResponse {
            header: self.header(false),
            ..Default::default()
        }))
    }
    async fn put(&self, _: Request<PutRequest>) -> Answer<PutResponse> {
        Ok(Response::new(PutResponse {
            header: self.header(true),
            prev_kv: None,
        }))
    }
    async fn delete_range(&self, _: Request<DeleteRangeRequest>) -> Answer<DeleteRangeResponse> {
        Ok(Response::new(DeleteRangeResponse {
            header: self.header(true),
            ..Default::default()
        }))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Answer<TxnResponse> {
        Ok(Response::new(TxnResponse {
            header: self.header(true),
            succeeded: true,
            responses: vec![],
        }))
    }
    async fn compact(&self, _: Request<CompactionRequest>) -> Answer<CompactionResponse> {
        Ok(Response::new(CompactionResponse {
            header: self.header(false),
        }))
    }
}

type KeepAlives = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for Null {
    async fn lease_grant(&self, r: Request<LeaseGrantRequest>) -> Answer<LeaseGrantResponse> {
        let r = r.into_inner();
        let id = if r.id != 0 {
            r.id
        } else {
            self.revision.fetch_add(1, Ordering::Relaxed) + 1
        };
        Ok(Response::new(LeaseGrantResponse {
            header: self.header(false),
            id,
            ttl: r.ttl,
            error: String::new(),
        }))
    }
    async fn lease_revoke(&self, _: Request<LeaseRevokeRequest>) -> Answer<LeaseRevokeResponse> {
        Ok(Response::new(LeaseRevokeResponse {
            header: self.header(true),
        }))
    }
    type LeaseKeepAliveStream = KeepAlives;
    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let header = self.header(false);
        let out = r.into_inner().map(move |m| {
            m.map(|m| LeaseKeepAliveResponse {
                header,
                id: m.id,
                ttl: 60,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Answer<LeaseTimeToLiveResponse> {
        let id = r.into_inner().id;
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(false),
            id,
            ttl: 60,
            granted_ttl: 60,
            keys: vec![],
        }))
    }
    async fn lease_leases(&self, _: Request<LeaseLeasesRequest>) -> Answer<LeaseLeasesResponse> {
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(false),
            leases: vec![],
        }))
    }
}

/// Serves until the process is stopped. `ready` is called with the bound address.
pub async fn serve(listen: SocketAddr, ready: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    ready(addr);
    let null = Null::default();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(KvServer::new(null.clone()))
        .add_service(LeaseServer::new(null))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .map_err(|e| e.to_string())
}
