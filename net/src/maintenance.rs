//! The Maintenance service: Status (what `etcdctl endpoint status` shows), Alarm, MoveLeader,
//! HashKV, Snapshot (etcd's snapshot stream: the db etcd would have written for our state,
//! engine/DESIGN.md §7.5), Hash (etcd 3.5's backend hash of that same db) and Defragment (online:
//! the sequencer moves the page store's nodes down between its rounds and cuts the file,
//! raft/src/core/defrag.rs; etcd's stops the member meanwhile). Downgrade answers Unimplemented.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::context::Ctx;
use crate::errors::EtcdError;
use crate::kv::propose_status;
use crate::pb::etcdserverpb::{self as pb, maintenance_server::Maintenance};
use retcd_engine::bbolt;
use retcd_engine::etcd_db::{self, SnapshotSource};
use retcd_engine::mvcc::{StateSnapshot, WriteResult};
use retcd_raft::ProposeError;
use retcd_raft::membership::Membership;
use retcd_raft::status::NodeStatus;

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
        let member = |a: &etcd_db::Alarm| pb::AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        };
        let activate = match AlarmAction::try_from(r.action) {
            // etcd's alarm store: every alarm for NONE, else those of the type.
            Ok(AlarmAction::Get) => {
                let alarms = self.ctx.status.alarms();
                return Ok(Response::new(pb::AlarmResponse {
                    header: self.ctx.current_header(),
                    alarms: alarms
                        .iter()
                        .filter(|a| r.alarm == pb::AlarmType::None as i32 || a.alarm == r.alarm)
                        .map(member)
                        .collect(),
                }));
            }
            Ok(AlarmAction::Activate) => true,
            Ok(AlarmAction::Deactivate) => false,
            Err(_) => return Err(Status::invalid_argument("retcd: unknown alarm action")),
        };
        // etcd raises only the types it knows (another would stop it: "unimplemented alarm
        // activation"); clearing one never raised changes nothing.
        let known = [etcd_db::ALARM_NOSPACE, etcd_db::ALARM_CORRUPT].contains(&r.alarm);
        let alarms = if activate && !known {
            Vec::new()
        } else {
            let changed = self
                .ctx
                .proposer
                .propose_alarm(activate, r.member_id, r.alarm);
            match changed.await.map_err(propose_status)? {
                WriteResult::Alarm { alarm, .. } => alarm.iter().map(member).collect(),
                other => return Err(Status::internal(format!("retcd: alarm: {other:?}"))),
            }
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
            // etcd: each raised alarm as its AlarmMember's text form.
            errors: s
                .alarms()
                .iter()
                .map(|a| {
                    format!(
                        "memberID:{} alarm:{} ",
                        a.member_id,
                        etcd_db::alarm_name(a.alarm)
                    )
                })
                .collect(),
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
        self.ctx
            .proposer
            .defragment()
            .await
            .map_err(propose_status)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.ctx.current_header(),
        }))
    }
    /// etcd 3.5's backend hash (consistent_index and term skipped) of the db a snapshot of the
    /// committed state would stream: members that applied the same entries agree.
    async fn hash(
        &self,
        r: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.admin(&r)?;
        let snap = self.ctx.reader.state_snapshot();
        let header = self.ctx.header(snap.revisions().0);
        let extras = snapshot_extras(&snap, &self.ctx.status)?;
        let source = SnapshotSource::new(snap, &extras)
            .map_err(|e| Status::internal(format!("retcd: hash: {e}")))?;
        // A walk of the whole state: on a thread of its own, as the snapshot writer.
        let hash = retcd_engine::runtime::on_own_thread(HASH_THREAD, move || {
            etcd_db::backend_hash(&source).map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r)
        .map_err(|e| Status::internal(format!("retcd: hash: {e}")))?;
        Ok(Response::new(pb::HashResponse { header, hash }))
    }
    /// etcd's HashKV: the hash etcd computes over its `key` bucket up to a revision, equal to
    /// etcd's for the same history (engine/DESIGN.md §4.10), so members — retcd or etcd — can be
    /// compared and a migration verified. The header carries the current revision, as etcd's.
    async fn hash_kv(
        &self,
        r: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.admin(&r)?;
        // A walk of the key space: off the core.
        let h = crate::corruption::hash_kv(&self.ctx.reader, r.into_inner().revision)
            .await
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
        // One committed version of the page store: both passes of the writer read it, and its
        // pages stay reserved (copy-on-write) while writes go on.
        let snap = self.ctx.reader.state_snapshot();
        let header = self.ctx.header(snap.revisions().0);
        let extras = snapshot_extras(&snap, &self.ctx.status)?;
        let source = SnapshotSource::new(snap, &extras)
            .map_err(|e| Status::internal(format!("retcd: snapshot: {e}")))?;
        let (tx, rx) = flume::bounded(SNAPSHOT_QUEUE);
        // The writer is synchronous and runs as long as the client reads: a thread of its own,
        // never a core's executor nor glommio's blocking pool (core 0's checkpoint syncs use
        // that). It ends when the stream is done or its receiver is dropped (client gone).
        std::thread::Builder::new()
            .name(SNAPSHOT_THREAD.into())
            .spawn(move || send_snapshot(&source, tx, header))
            .map_err(|e| Status::unavailable(format!("retcd: snapshot thread: {e}")))?;
        Ok(Response::new(Box::pin(rx.into_stream())))
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

/// Bytes of db in one SnapshotResponse (etcd's 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 * 1024;
/// Messages queued between the writer's thread and the gRPC stream: the writer waits when the
/// client is slower, so memory stays at a few chunks whatever the db size.
const SNAPSHOT_QUEUE: usize = 4;
/// Name of the writer's thread (tests look for it to see that a cancelled snapshot ended).
pub const SNAPSHOT_THREAD: &str = "retcd-snapshot";
/// The name of the thread that computes a Maintenance.Hash.
const HASH_THREAD: &str = "retcd-hash";
/// Progress is logged at most this often.
const SNAPSHOT_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What etcd's db holds beside the page store: the membership decoded from the same snapshot,
/// the raised alarms (in memory, on this member) and the cluster version retcd reports.
fn snapshot_extras(snap: &StateSnapshot, status: &NodeStatus) -> Result<etcd_db::Extras, Status> {
    let internal = |e: String| Status::internal(format!("retcd: snapshot: {e}"));
    let membership = match snap.membership().map_err(|e| internal(e.to_string()))? {
        Some(bytes) => Membership::decode(&bytes).map_err(|e| internal(format!("{e:?}")))?,
        // Before the first configuration entry is applied (never, once serving): the members
        // every core already knows.
        None => (*status.members()).clone(),
    };
    let members = membership
        .members
        .iter()
        .map(|m| etcd_db::Member {
            id: m.id,
            peer_urls: m.peer_urls.clone(),
            is_learner: m.is_learner,
            name: m.name.clone(),
            client_urls: m.client_urls.clone(),
        })
        .collect();
    let alarms = status.alarms().to_vec();
    // etcd keeps major.minor.0 of the cluster's version.
    let mut version = ETCD_API_VERSION.splitn(3, '.');
    let cluster_version = format!(
        "{}.{}.0",
        version.next().unwrap_or("3"),
        version.next().unwrap_or("5")
    );
    Ok(etcd_db::Extras {
        members,
        removed: membership.removed.clone(),
        alarms,
        cluster_version: Some(cluster_version),
    })
}

type SnapshotItem = Result<pb::SnapshotResponse, Status>;

/// The writer's thread: streams the db and then its digest into `tx`, logging as etcd does.
fn send_snapshot(
    source: &SnapshotSource,
    tx: flume::Sender<SnapshotItem>,
    header: Option<pb::ResponseHeader>,
) {
    let started = Instant::now();
    let total = Rc::new(Cell::new(0u64));
    let sink = ChunkSink {
        tx: tx.clone(),
        header,
        total: total.clone(),
        buf: Vec::with_capacity(SNAPSHOT_CHUNK),
        sent: 0,
        trailer: Vec::new(),
        last_log: started,
    };
    let (applied, _) = source.snapshot().applied();
    let revision = source.snapshot().revisions().0;
    let written = bbolt::write_snapshot_planned(sink, source, &mut |size| {
        total.set(size);
        tracing::info!(
            total_bytes = size,
            size = %human(size),
            revision,
            applied_index = applied,
            "sending database snapshot to client"
        );
        Ok(())
    })
    .map_err(|e| (e.to_string(), matches!(&e, bbolt::WriteError::Io(_))))
    .and_then(|(summary, sink, digest)| {
        tracing::info!(
            total_bytes = summary.bytes,
            checksum_size = digest.len(),
            "sending database sha256 checksum to client"
        );
        sink.finish(&digest)
            .map(|()| summary)
            .map_err(|e| (e.to_string(), true))
    });
    match written {
        Ok(summary) => tracing::info!(
            total_bytes = summary.bytes,
            size = %human(summary.bytes),
            took = ?started.elapsed(),
            "successfully sent database snapshot to client"
        ),
        // The sink fails only when the stream's receiver is gone: the client cancelled or
        // disconnected. Dropping the source now releases the snapshot's pages.
        Err((e, true)) if tx.is_disconnected() => tracing::warn!(
            total_bytes = total.get(),
            took = ?started.elapsed(),
            "failed to send database snapshot: the client went away ({e})"
        ),
        Err((e, _)) => {
            tracing::error!(took = ?started.elapsed(), "failed to write database snapshot: {e}");
            let _ = tx.send(Err(Status::internal(format!("retcd: snapshot: {e}"))));
        }
    }
}

/// etcd's humanized byte counts ("1.2 MB").
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Cuts the db's bytes into SnapshotResponse messages of [`SNAPSHOT_CHUNK`] bytes, each with
/// `remaining_bytes` = total − bytes sent including it; the bytes after the db (the sha256 the
/// trailer appends) are kept for [`ChunkSink::finish`], which sends them alone (reference §3.1).
/// A send blocks while the queue is full and fails once the receiver is gone.
struct ChunkSink {
    tx: flume::Sender<SnapshotItem>,
    /// Sent with the first message only.
    header: Option<pb::ResponseHeader>,
    /// The db's size, set by the planning pass before the first write.
    total: Rc<Cell<u64>>,
    buf: Vec<u8>,
    /// Db bytes already handed to messages.
    sent: u64,
    trailer: Vec<u8>,
    last_log: Instant,
}

impl ChunkSink {
    fn send(&mut self, remaining: u64, blob: Vec<u8>) -> io::Result<()> {
        let msg = pb::SnapshotResponse {
            header: self.header.take(),
            remaining_bytes: remaining,
            blob,
            version: String::new(),
        };
        self.tx
            .send(Ok(msg))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client is gone"))
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        let blob = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK));
        self.sent += blob.len() as u64;
        let remaining = self.total.get() - self.sent;
        self.send(remaining, blob)?;
        if self.last_log.elapsed() >= SNAPSHOT_PROGRESS_EVERY {
            self.last_log = Instant::now();
            tracing::info!(
                sent_bytes = self.sent,
                total_bytes = self.total.get(),
                "sending database snapshot to client: in progress"
            );
        }
        Ok(())
    }

    /// Sends what is left of the db and then the digest as the last message.
    fn finish(mut self, digest: &[u8; 32]) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_chunk()?;
        }
        debug_assert_eq!(self.trailer, digest, "the trailer written is the digest");
        debug_assert_eq!(self.sent, self.total.get(), "the whole db was sent");
        self.send(0, digest.to_vec())
    }
}

impl io::Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let in_db = self.total.get() - self.sent - self.buf.len() as u64;
        if in_db == 0 {
            self.trailer.extend_from_slice(buf);
            return Ok(buf.len());
        }
        let n = buf
            .len()
            .min(SNAPSHOT_CHUNK - self.buf.len())
            .min(usize::try_from(in_db).unwrap_or(usize::MAX));
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK || n as u64 == in_db {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
