//! etcd's v3election service (server/etcdserver/api/v3election, v3.5): the leader of election N
//! is the key `N/<lease in hex>` with the lowest create revision under `N/`, its value the
//! leader's proclamation. Campaign puts the caller's key and waits until every older key is
//! gone; Proclaim and Resign act only while the key still has the create revision the caller
//! was elected with; Leader reads the owner; Observe streams the owner's value as it changes.
//! Nothing is kept in memory: the keys are the election.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures_lite::Stream;
use tonic::{Request, Response, Status};

use crate::concurrency::{
    Client, KeyWatch, OnAbandon, create_revision_is, delete_op, get_op, prefix_of, put_op,
    range_kv, session_key,
};
use crate::context::Ctx;
use crate::pb::etcdserverpb::{ResponseHeader, TxnRequest};
use crate::pb::mvccpb;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse, election_server::Election,
};

/// etcd's errors (plain Go errors there, so gRPC's Unknown code).
const ERR_MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
const ERR_NOT_LEADER: &str = "election: not leader";
const ERR_NO_LEADER: &str = "election: no leader";

pub struct ElectionService {
    ctx: Arc<Ctx>,
}

impl ElectionService {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        ElectionService { ctx }
    }
}

/// etcd's `Resign` txn: delete the key if it is still the one elected at `rev`.
fn resign_txn(key: &[u8], rev: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![create_revision_is(key, rev)],
        success: vec![delete_op(key)],
        failure: Vec::new(),
    }
}

/// etcd's `Proclaim`: puts `value` on the leader's key if it is still the one elected at `rev`.
async fn proclaim(
    client: &Client,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<ResponseHeader, Status> {
    let resp = client
        .txn(TxnRequest {
            compare: vec![create_revision_is(key, rev)],
            success: vec![put_op(key, value, lease)],
            failure: Vec::new(),
        })
        .await?;
    if !resp.succeeded {
        return Err(Status::unknown(ERR_NOT_LEADER));
    }
    Ok(resp.header.unwrap_or_default())
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let client = Client::new(&self.ctx, &request);
        let req = request.into_inner();
        let lease = client.session(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = session_key(&prefix, lease);
        let resp = client
            .txn(TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, &req.value, lease)],
                failure: vec![get_op(&key)],
            })
            .await?;
        let header = resp.header.unwrap_or_default();
        let mut rev = header.revision;
        if !resp.succeeded {
            // This lease campaigned already: keep its key, with the new value.
            let kv = range_kv(&resp, 0).cloned().unwrap_or_default();
            rev = kv.create_revision;
            if kv.value != req.value
                && let Err(e) = proclaim(&client, &key, rev, lease, &req.value).await
            {
                let _ = client.txn(resign_txn(&key, rev)).await;
                return Err(e);
            }
        }
        // A caller that goes away while it waits resigns (etcd's Campaign on a done context);
        // a wait that fails otherwise leaves the key, as etcd does.
        let guard = OnAbandon::new(client, resign_txn(&key, rev));
        let waited = guard.client().wait_deletes(&prefix, rev - 1).await;
        guard.disarm();
        waited?;
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let client = Client::new(&self.ctx, &request);
        let req = request.into_inner();
        let leader = req
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let lease = client.session(leader.lease).await?;
        let header = proclaim(&client, &leader.key, leader.rev, lease, &req.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let client = Client::new(&self.ctx, &request);
        let prefix = prefix_of(&request.into_inner().name);
        let (header, kv) = client.first_created(&prefix).await?;
        let kv = kv.ok_or_else(|| Status::unknown(ERR_NO_LEADER))?;
        Ok(Response::new(LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let client = Client::new(&self.ctx, &request);
        let observer = Observer {
            client,
            prefix: prefix_of(&request.into_inner().name),
            leader: None,
            queue: VecDeque::new(),
        };
        let stream = futures_lite::stream::unfold(observer, |mut o| async move {
            o.next().await.map(|r| (Ok(r), o))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let client = Client::new(&self.ctx, &request);
        let req = request.into_inner();
        let leader = req
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        client.session(leader.lease).await?;
        let resp = client.txn(resign_txn(&leader.key, leader.rev)).await?;
        Ok(Response::new(ResignResponse {
            header: resp.header,
        }))
    }
}

/// etcd's `Election.observe`: the leader's key and value, then every change of its value, then
/// the next leader once it is deleted, and so on. The stream ends (without an error, as etcd's
/// Observe returns once its channel closes) when a read or a watch fails.
struct Observer {
    client: Client,
    prefix: Vec<u8>,
    /// The watch of the current leader's key.
    leader: Option<KeyWatch>,
    queue: VecDeque<LeaderResponse>,
}

impl Observer {
    async fn next(&mut self) -> Option<LeaderResponse> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(r);
            }
            match self.leader.as_mut() {
                None => {
                    let (header, kv) = find_leader(&self.client, &self.prefix).await?;
                    let watch = self.client.watch(&kv.key, header.revision + 1).await.ok()?;
                    self.leader = Some(watch);
                    self.queue.push_back(LeaderResponse {
                        header: Some(header),
                        kv: Some(kv),
                    });
                }
                Some(watch) => {
                    let (header, events) = watch.next_batch().await.ok()?;
                    for ev in events {
                        if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                            self.leader = None;
                            break;
                        }
                        self.queue.push_back(LeaderResponse {
                            header: Some(header),
                            kv: ev.kv,
                        });
                    }
                }
            }
        }
    }
}

/// The current leader of the election under `prefix`, or the first key put under it when there
/// is none (its header's revision set to the put's, as etcd does).
async fn find_leader(client: &Client, prefix: &[u8]) -> Option<(ResponseHeader, mvccpb::KeyValue)> {
    let (header, kv) = client.first_created(prefix).await.ok()?;
    if let Some(kv) = kv {
        return Some((header, kv));
    }
    let mut watch = client.watch_prefix(prefix, header.revision).await.ok()?;
    loop {
        let (mut header, events) = watch.next_batch().await.ok()?;
        if let Some(kv) = events
            .into_iter()
            .find(|ev| ev.r#type == mvccpb::event::EventType::Put as i32)
            .and_then(|ev| ev.kv)
        {
            header.revision = kv.mod_revision;
            return Some((header, kv));
        }
    }
}
