//! The peer transport: Raft messages between members over gRPC streams (`net/proto/retcdpeer`),
//! served and dialed on core 0, next to the sequencer.
//!
//! - Receiving: [`PeerService`] takes each member's stream of [`RaftFrame`]s, checks that the
//!   frame is for this cluster and this member and that its sender was not removed, and hands the
//!   messages to the sequencer ([`PeerInbox`]; a full input queue holds the stream, which is
//!   HTTP/2's backpressure).
//! - Sending: the sequencer announces a [`PeerLink`] (an outbox bounded by messages and by
//!   bytes, `retcd_raft::transport::OUTBOX_BYTES`) for each peer it talks to; [`start_links`]
//!   gives each its own task, which dials the member's first peer URL, opens one `Raft` stream
//!   and sends whatever the outbox holds as one frame (up to
//!   [`FRAME_BYTES`]), so messages are batched exactly as much as the connection is behind.
//!   A failed connection drops the queued messages (they are stale: Raft resends), reports the
//!   peer unreachable and dials again after a backoff (100 ms doubling to 1 s). The task ends when
//!   the sequencer closes the outbox (the member was removed).
//! - Snapshots: a member too far behind for the leader's log gets the whole state, streamed from
//!   a consistent read view of the page store in ~1 MiB chunks ([`SnapshotJob`]); the receiver
//!   spools it to a file under the snap directory (memory stays bounded; the file is written on
//!   the blocking thread, one chunk at a time) and hands it to the sequencer, which installs it
//!   in bounded transactions when Raft accepts the snapshot (engine/DESIGN.md §4.7).
//! - Joining: [`fetch_members`] asks a running member for the cluster id and membership.
//!
//! Invariant: nothing here blocks the sequencer; the only waits are on sockets and on the
//! bounded queues between this module and the sequencer.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use glommio::net::TcpStream;
use retcd_engine::mvcc::MvccReader;
use retcd_engine::runtime;
use retcd_raft::NodeStatus;
use retcd_raft::PeerInbox;
use retcd_raft::sequencer::PeerQueues;
use retcd_raft::transport::{PeerLink, SnapshotJob};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::pb::retcdpeer::peer_client::PeerClient;
use crate::pb::retcdpeer::peer_server::{Peer, PeerServer};
use crate::pb::retcdpeer::{
    HashKvAnswer, HashKvCall, LeaseAnswer, LeaseCall, MembersRequest, MembersResponse, RaftAck,
    RaftFrame, SnapshotAck, SnapshotChunk, SnapshotEntry,
};
use crate::serve::{HyperIo, LocalExec};
use retcd_raft::ProposeError;
use retcd_raft::lessor::LeaseHandle;

/// Bytes of messages sent in one frame (a single larger message goes alone).
pub const FRAME_BYTES: usize = 4 << 20;
/// How long dialing a peer may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a removed member is told (etcd's words); it stops when it hears them.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

/// Bytes of entries per snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Deletes the snapshot spools (`incoming-*.snap`) a previous run left in `snap_dir` when it
/// stopped while receiving or before installing a snapshot; returns how many. Call at start-up,
/// before the peer port serves (the data dir's lock is held by then, so no one else spools).
pub fn remove_leftover_spools(snap_dir: &std::path::Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(snap_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("incoming-") && name.ends_with(".snap") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Serves the peer protocol for this member.
pub struct PeerService {
    status: Arc<NodeStatus>,
    inbox: PeerInbox,
    /// Where received snapshots are spooled.
    snap_dir: PathBuf,
    /// This member's lessor (for lease calls forwarded by followers).
    leases: LeaseHandle,
    /// The state, for the corruption checks' HashKV.
    reader: MvccReader,
}

impl PeerService {
    pub fn new(
        status: Arc<NodeStatus>,
        inbox: PeerInbox,
        snap_dir: PathBuf,
        leases: LeaseHandle,
        reader: MvccReader,
    ) -> Self {
        PeerService {
            status,
            inbox,
            snap_dir,
            leases,
            reader,
        }
    }

    /// The peer routes, accepting frames up to `max_bytes`.
    pub fn routes(self, max_bytes: usize) -> tonic::service::Routes {
        tonic::service::Routes::new(PeerServer::new(self).max_decoding_message_size(max_bytes))
    }

    /// Refuses a sender of another cluster, a frame for another member, a removed sender.
    fn check(&self, cluster_id: u64, from: u64, to: u64) -> Result<(), Status> {
        if cluster_id != self.status.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster ID mismatch: this member belongs to {:x}, the sender to {cluster_id:x}",
                self.status.cluster_id
            )));
        }
        if to != self.status.member_id {
            return Err(Status::failed_precondition(format!(
                "member ID mismatch: this member is {:x}, the sender wants {to:x}",
                self.status.member_id
            )));
        }
        if self.status.members().is_removed(from) {
            return Err(Status::permission_denied(REMOVED_MESSAGE));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<Streaming<RaftFrame>>) -> Result<Response<RaftAck>, Status> {
        let mut frames = req.into_inner();
        let mut cells: Option<(u64, Arc<crate::metrics::peer::PeerCells>)> = None;
        while let Some(frame) = frames.message().await? {
            self.check(frame.cluster_id, frame.from, frame.to)?;
            let bytes: usize = frame.messages.iter().map(Vec::len).sum();
            match &cells {
                Some((from, c)) if *from == frame.from => c.received_bytes.add(bytes as u64),
                _ => {
                    let c = crate::metrics::peer::cells(frame.from);
                    c.received_bytes.add(bytes as u64);
                    cells = Some((frame.from, c));
                }
            }
            tracing::trace!(from = %format!("{:x}", frame.from), messages = frame.messages.len(), "peer frame");
            let msgs = frame.messages.into_iter().map(Bytes::from).collect();
            self.inbox
                .deliver(msgs)
                .await
                .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let mut chunks = req.into_inner();
        let Some(mut chunk) = chunks.message().await? else {
            return Err(Status::invalid_argument("an empty snapshot stream"));
        };
        self.check(chunk.cluster_id, chunk.from, chunk.to)?;
        let message = Bytes::from(std::mem::take(&mut chunk.message));
        let io = |e: std::io::Error| Status::internal(format!("spooling a snapshot: {e}"));
        // A name of its own per stream: a spool still queued is never overwritten.
        static SPOOLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SPOOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .snap_dir
            .join(format!("incoming-{:x}-{n}.snap", chunk.from));
        let mut spool = Spool::create(self.snap_dir.clone(), path)
            .await
            .map_err(io)?;
        let mut entries = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            for e in &chunk.entries {
                write_record(&mut buf, &e.key, &e.value).map_err(io)?;
                entries += 1;
            }
            // The next chunk is taken only once this one is written: one chunk in memory.
            buf = spool.write(buf).await.map_err(io)?;
            if chunk.last {
                if chunk.total != entries {
                    return Err(Status::invalid_argument(format!(
                        "snapshot: {entries} entries received, the sender sent {}",
                        chunk.total
                    )));
                }
                break;
            }
            chunk = chunks
                .message()
                .await?
                .ok_or_else(|| Status::invalid_argument("the snapshot stream ended early"))?;
        }
        info!(from = %format!("{:x}", chunk.from), entries, "received a snapshot");
        let spooled = spool.finish().await.map_err(io)?;
        self.inbox
            .snapshot(message, Box::new(spooled))
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        Ok(Response::new(SnapshotAck {}))
    }

    async fn lease(&self, req: Request<LeaseCall>) -> Result<Response<LeaseAnswer>, Status> {
        let r = req.into_inner();
        if r.cluster_id != self.status.cluster_id {
            return Err(Status::failed_precondition("cluster ID mismatch"));
        }
        let not_leader = |e: ProposeError| match e {
            ProposeError::NotLeader | ProposeError::NoLeader => {
                Status::unavailable("etcdserver: no leader")
            }
            other => Status::unavailable(format!("etcdserver: {other}")),
        };
        let answer = if r.time_to_live {
            match self.leases.time_to_live(r.id).await.map_err(not_leader)? {
                Some(t) => LeaseAnswer {
                    ttl: t.ttl,
                    granted_ttl: t.granted_ttl,
                    found: true,
                },
                None => LeaseAnswer::default(),
            }
        } else {
            LeaseAnswer {
                ttl: self.leases.keep_alive(r.id).await.map_err(not_leader)?,
                ..Default::default()
            }
        };
        Ok(Response::new(answer))
    }

    async fn members(
        &self,
        _req: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.status.cluster_id,
            membership: self.status.members().encode(),
        }))
    }

    async fn hash_kv(&self, req: Request<HashKvCall>) -> Result<Response<HashKvAnswer>, Status> {
        let r = req.into_inner();
        if r.cluster_id != self.status.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster ID mismatch: this member belongs to {:x}, the sender to {:x}",
                self.status.cluster_id, r.cluster_id
            )));
        }
        let h = if r.compaction {
            self.status.compact_hash(r.revision).ok_or_else(|| {
                Status::not_found(format!("no hash of a compaction to {}", r.revision))
            })?
        } else {
            crate::corruption::hash_kv(&self.reader, r.revision)
                .await
                .map_err(crate::kv::mvcc_status)?
        };
        Ok(Response::new(HashKvAnswer {
            member_id: self.status.member_id,
            revision: h.revision,
            compact_revision: h.compact_revision,
            hash: h.hash,
            hash_revision: h.hash_revision,
        }))
    }
}

/// Gives every peer link the sequencer announces its own sending task, and every snapshot its
/// own streaming task (call on core 0).
pub fn start_links(queues: PeerQueues, status: Arc<NodeStatus>, inbox: PeerInbox) {
    let PeerQueues { links, snapshots } = queues;
    let (s, i) = (status.clone(), inbox.clone());
    runtime::spawn_local(async move {
        while let Ok(link) = links.recv_async().await {
            runtime::spawn_local(probe(link.id, link.rx.clone(), s.clone()));
            runtime::spawn_local(run_link(link, s.clone(), i.clone()));
        }
    });
    runtime::spawn_local(async move {
        while let Ok(job) = snapshots.recv_async().await {
            let (status, inbox) = (status.clone(), inbox.clone());
            runtime::spawn_local(async move {
                let to = job.to;
                let result = send_snapshot(job, &status, &inbox).await;
                if let Err(e) = &result {
                    warn!(peer = %format!("{to:x}"), error = %e, "sending a snapshot failed");
                }
                inbox.snapshot_sent(to, result.is_ok()).await;
            });
        }
    });
}

/// Streams one snapshot to its member. Damage met reading the state stops this member
/// ([`PeerInbox::damaged`]).
async fn send_snapshot(
    job: SnapshotJob,
    status: &NodeStatus,
    inbox: &PeerInbox,
) -> Result<(), String> {
    let SnapshotJob { to, message, state } = job;
    let url = status
        .members()
        .get(to)
        .and_then(|m| m.peer_urls.first().cloned())
        .ok_or_else(|| format!("member {to:x} has no peer URL"))?;
    let mut client = dial(&url).await?;
    let (tx, rx) = flume::bounded::<SnapshotChunk>(2);
    let (cluster_id, from) = (status.cluster_id, status.member_id);
    // The chunks are read here, on this core (the read view is not Send); the request stream
    // only passes them on.
    let inbox = inbox.clone();
    runtime::spawn_local(async move {
        let mut after: Option<Vec<u8>> = None;
        let mut message = message.to_vec();
        let mut sent = 0u64;
        loop {
            let entries = match state.chunk(after.as_deref(), SNAPSHOT_CHUNK_BYTES) {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "reading the state for a snapshot");
                    if e.is_damage() {
                        inbox.damaged(e.to_string()).await;
                    }
                    return;
                }
            };
            let last = entries.is_empty();
            after = entries.last().map(|(k, _)| k.clone());
            sent += entries.len() as u64;
            let chunk = SnapshotChunk {
                cluster_id,
                from,
                to,
                message: std::mem::take(&mut message),
                entries: entries
                    .into_iter()
                    .map(|(key, value)| SnapshotEntry { key, value })
                    .collect(),
                last,
                total: if last { sent } else { 0 },
            };
            if tx.send_async(chunk).await.is_err() || last {
                debug!(peer = %format!("{to:x}"), entries = sent, "snapshot streamed");
                return;
            }
        }
    });
    client
        .snapshot(rx.into_stream())
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_owned())
}

/// One record of a spooled snapshot: key and value lengths (u32 LE) and bytes.
fn write_record(w: &mut impl std::io::Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let len = |n: usize| {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| std::io::Error::other("snapshot entry over 4 GiB"))
    };
    w.write_all(&len(key.len())?)?;
    w.write_all(&len(value.len())?)?;
    w.write_all(key)?;
    w.write_all(value)
}

/// A snapshot being spooled. Every file operation runs on a thread of the spool's own, never on
/// core 0's executor (the sequencer's: a write stalled by writeback would stall Raft); the
/// stream hands it one chunk at a time and waits for the write, so at most one chunk is in
/// memory. A spool ended before [`Spool::finish`] (a refused or broken stream, a client gone,
/// a failed write) is removed by its thread; a crash leaves it to [`remove_leftover_spools`].
struct Spool {
    ops: flume::Sender<SpoolOp>,
    done: flume::Receiver<std::io::Result<SpoolReply>>,
    /// Never joined by the server (that would block core 0); tests wait for it.
    #[cfg_attr(not(test), allow(dead_code))]
    thread: std::thread::JoinHandle<()>,
}

enum SpoolOp {
    Write(Vec<u8>),
    Finish,
}

enum SpoolReply {
    /// The file exists, or a chunk was written (its buffer, for the next chunk).
    Written(Vec<u8>),
    Finished(SpooledSnapshot),
}

impl Spool {
    async fn create(dir: PathBuf, path: PathBuf) -> std::io::Result<Spool> {
        // Bounded (1): the stream never runs more than one chunk ahead of the file.
        let (ops, ops_rx) = flume::bounded::<SpoolOp>(1);
        let (done_tx, done) = flume::bounded(1);
        let thread = std::thread::Builder::new()
            .name("retcd-spool".into())
            .spawn(move || spool_thread(&dir, path, &ops_rx, &done_tx))?;
        let spool = Spool { ops, done, thread };
        spool.reply().await?;
        Ok(spool)
    }

    async fn reply(&self) -> std::io::Result<SpoolReply> {
        self.done
            .recv_async()
            .await
            .map_err(|_| std::io::Error::other("the spool's thread ended"))?
    }

    /// Appends `buf` (records); gives the buffer back for the next chunk.
    async fn write(&mut self, buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.ops
            .send_async(SpoolOp::Write(buf))
            .await
            .map_err(|_| std::io::Error::other("the spool's thread ended"))?;
        match self.reply().await? {
            SpoolReply::Written(buf) => Ok(buf),
            SpoolReply::Finished(_) => unreachable!("a write is answered with its buffer"),
        }
    }

    /// The spool is complete: its entries, to read back (the reader removes the file).
    async fn finish(self) -> std::io::Result<SpooledSnapshot> {
        self.ops
            .send_async(SpoolOp::Finish)
            .await
            .map_err(|_| std::io::Error::other("the spool's thread ended"))?;
        match self.reply().await? {
            SpoolReply::Finished(s) => Ok(s),
            SpoolReply::Written(_) => unreachable!("a finish is answered with the spool"),
        }
    }
}

/// The blocking side of a [`Spool`]: creates `path`, writes what it is sent, and removes the
/// file unless the spool was finished.
fn spool_thread(
    dir: &std::path::Path,
    path: PathBuf,
    ops: &flume::Receiver<SpoolOp>,
    done: &flume::Sender<std::io::Result<SpoolReply>>,
) {
    use std::io::Write;
    let created = std::fs::create_dir_all(dir).and_then(|()| std::fs::File::create(&path));
    let mut file = match created {
        Ok(f) => f,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    if done.send(Ok(SpoolReply::Written(Vec::new()))).is_ok() {
        while let Ok(op) = ops.recv() {
            match op {
                SpoolOp::Write(buf) => {
                    let r = file.write_all(&buf).map(|()| SpoolReply::Written(buf));
                    let failed = r.is_err();
                    if done.send(r).is_err() || failed {
                        break;
                    }
                }
                SpoolOp::Finish => {
                    drop(file);
                    let _ = done.send(SpooledSnapshot::open(path).map(SpoolReply::Finished));
                    return;
                }
            }
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
}

/// A received snapshot's entries, read back from its spool file (removed when dropped).
struct SpooledSnapshot {
    path: PathBuf,
    file: std::io::BufReader<std::fs::File>,
}

impl SpooledSnapshot {
    fn open(path: PathBuf) -> std::io::Result<SpooledSnapshot> {
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        Ok(SpooledSnapshot { path, file })
    }

    fn next_record(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        use std::io::Read;
        let mut head = [0u8; 8];
        match self.file.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let klen = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let vlen = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        let mut key = vec![0; klen];
        let mut value = vec![0; vlen];
        self.file.read_exact(&mut key)?;
        self.file.read_exact(&mut value)?;
        Ok(Some((key, value)))
    }
}

impl Iterator for SpooledSnapshot {
    type Item = Result<(Vec<u8>, Vec<u8>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
            .map_err(|e| format!("{}: {e}", self.path.display()))
            .transpose()
    }
}

impl Drop for SpooledSnapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn run_link(link: PeerLink, status: Arc<NodeStatus>, inbox: PeerInbox) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if link.rx.is_disconnected() {
            return;
        }
        let url = status
            .members()
            .get(link.id)
            .and_then(|m| m.peer_urls.first().cloned());
        let result = match &url {
            Some(url) => stream_to(url, &link, &status, &mut backoff).await,
            None => Err(format!("member {:x} has no peer URL", link.id)),
        };
        match result {
            Ok(()) => return,
            Err(e) if e.contains(REMOVED_MESSAGE) => {
                warn!(peer = %format!("{:x}", link.id), "{REMOVED_MESSAGE}");
                inbox.removed().await;
                return;
            }
            Err(e) => {
                crate::metrics::peer::cells(link.id).sent_failures.inc();
                debug!(peer = %format!("{:x}", link.id), error = %e, "peer stream failed")
            }
        }
        // Stale messages: Raft resends what matters once the peer answers again.
        link.rx.clear();
        inbox.unreachable(link.id);
        runtime::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How often the prober times a call to each peer (etcd observes its prober's round trip every
/// 30 s).
const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// etcd's prober: one small call (the membership) to peer `id` at once and then every
/// [`PROBE_INTERVAL`] on a connection of its own, its round trip recorded in
/// `etcd_network_peer_round_trip_time_seconds`; ends when the peer's outbox closes (removed).
async fn probe(id: u64, outbox: retcd_raft::transport::OutboxRx, status: Arc<NodeStatus>) {
    let mut client = None;
    while !outbox.is_disconnected() {
        let url = status
            .members()
            .get(id)
            .and_then(|m| m.peer_urls.first().cloned());
        if client.is_none()
            && let Some(url) = &url
        {
            client = dial(url).await.ok();
        }
        let mut answered = false;
        if let Some(c) = client.as_mut() {
            let started = std::time::Instant::now();
            match c.members(MembersRequest {}).await {
                Ok(_) => {
                    answered = true;
                    crate::metrics::peer::cells(id)
                        .round_trip
                        .observe_duration(started.elapsed());
                }
                Err(_) => client = None,
            }
        }
        // A peer that is not up yet (a cluster starting) is tried again soon.
        runtime::sleep(if answered {
            PROBE_INTERVAL
        } else {
            MAX_BACKOFF
        })
        .await;
    }
}

/// Sends the link's messages over one stream until it fails (`Err`) or the outbox closes (`Ok`).
async fn stream_to(
    url: &str,
    link: &PeerLink,
    status: &NodeStatus,
    backoff: &mut Duration,
) -> Result<(), String> {
    let mut client = dial(url).await?;
    debug!(peer = %format!("{:x}", link.id), url, "peer stream connected");
    *backoff = MIN_BACKOFF;
    let (cluster_id, from, to) = (status.cluster_id, status.member_id, link.id);
    let rx = link.rx.clone();
    let cells = crate::metrics::peer::cells(to);
    let frames = futures_lite::stream::unfold(rx, move |rx| {
        let cells = cells.clone();
        async move {
            let first = rx.recv().await?;
            let mut bytes = first.len();
            let mut messages = vec![first.to_vec()];
            while bytes < FRAME_BYTES {
                let Some(m) = rx.try_recv() else { break };
                bytes += m.len();
                messages.push(m.to_vec());
            }
            cells.sent_bytes.add(bytes as u64);
            Some((
                RaftFrame {
                    cluster_id,
                    from,
                    to,
                    messages,
                },
                rx,
            ))
        }
    });
    match client.raft(frames).await {
        Ok(_) => Ok(()),
        Err(s) => Err(s.message().to_owned()),
    }
}

/// One HTTP/2 connection to a peer URL, as a tonic client.
async fn dial(url: &str) -> Result<PeerClient<H2Channel>, String> {
    let (channel, origin) = connect(url).await?;
    Ok(PeerClient::with_origin(channel, origin)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(usize::MAX))
}

/// The TLS client configuration for https:// peer URLs, set once at start-up
/// ([`set_peer_tls`]) before any dial.
static PEER_TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Sets how this member dials https:// peer URLs (its client certificate, the CA it trusts).
/// Without it, dialing an https:// URL fails: a member never falls back to plain text.
pub fn set_peer_tls(config: Arc<rustls::ClientConfig>) {
    let _ = PEER_TLS.set(config);
}

/// One HTTP/2 connection to `url` (a peer or client URL of a member) for any tonic client, with
/// the origin to give it. An https:// URL is dialed over TLS with the peer TLS configuration.
pub async fn connect(url: &str) -> Result<(H2Channel, http::Uri), String> {
    let addr = resolve(url)?;
    let stream = TcpStream::connect_timeout(addr, DIAL_TIMEOUT)
        .await
        .map_err(|e| format!("dial {url}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let origin: http::Uri = url.parse().map_err(|e| format!("URL {url}: {e}"))?;
    let io = HyperIo::new(stream);
    let send = if origin.scheme_str() == Some("https") {
        let config = PEER_TLS
            .get()
            .ok_or_else(|| format!("dial {url}: https peer URL but no peer TLS is configured"))?;
        let host = origin.host().unwrap_or_default().trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("dial {url}: {e}"))?;
        let tls = futures_rustls::TlsConnector::from(config.clone())
            .connect(name, io)
            .await
            .map_err(|e| format!("TLS with {url}: {e}"))?;
        h2_handshake(crate::serve::TlsIo(tls), url).await?
    } else {
        h2_handshake(io, url).await?
    };
    Ok((H2Channel(send), origin))
}

/// The HTTP/2 client handshake on `io`; the connection runs as a task of this core.
async fn h2_handshake<IO>(
    io: IO,
    url: &str,
) -> Result<hyper::client::conn::http2::SendRequest<tonic::body::Body>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(LocalExec)
        .initial_stream_window_size(crate::serve::INITIAL_STREAM_WINDOW)
        .initial_connection_window_size(crate::serve::INITIAL_CONNECTION_WINDOW)
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 with {url}: {e}"))?;
    let peer = url.to_owned();
    runtime::spawn_local(async move {
        if let Err(e) = conn.await {
            debug!(peer, error = %e, "peer connection ended");
        }
    });
    Ok(send)
}

fn resolve(url: &str) -> Result<SocketAddr, String> {
    let hostport = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let hostport = match hostport.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hostport.to_owned(),
    };
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("peer URL {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("peer URL {url}: no address"))
}

thread_local! {
    /// This core's connection to the leader for forwarded lease calls: (leader id, client).
    static LEADER: std::cell::RefCell<Option<(u64, PeerClient<H2Channel>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Forwards a keep-alive (`time_to_live` false) or time-to-live of lease `id` to the leader;
/// returns the leader's answer (ttl, granted ttl, found). The connection is kept per core.
pub async fn forward_lease(
    status: Arc<NodeStatus>,
    id: i64,
    time_to_live: bool,
) -> Result<(i64, i64, bool), Status> {
    let (tx, rx) = flume::bounded(1);
    // glommio's sockets are not Send: the call runs as a task of this core.
    runtime::spawn_local(async move {
        let _ = tx.send(forward_lease_local(&status, id, time_to_live).await);
    });
    rx.recv_async()
        .await
        .map_err(|_| Status::unavailable("etcdserver: server stopped"))?
}

async fn forward_lease_local(
    status: &NodeStatus,
    id: i64,
    time_to_live: bool,
) -> Result<(i64, i64, bool), Status> {
    let no_leader = || Status::unavailable("etcdserver: no leader");
    let leader = status.leader();
    if leader == 0 || leader == status.member_id {
        return Err(no_leader());
    }
    let cached = LEADER.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(id, _)| *id == leader)
            .map(|(_, c)| c.clone())
    });
    let mut client = match cached {
        Some(c) => c,
        None => {
            let url = status
                .members()
                .get(leader)
                .and_then(|m| m.peer_urls.first().cloned())
                .ok_or_else(no_leader)?;
            let c = dial(&url).await.map_err(|_| no_leader())?;
            LEADER.with(|l| *l.borrow_mut() = Some((leader, c.clone())));
            c
        }
    };
    let call = LeaseCall {
        cluster_id: status.cluster_id,
        id,
        time_to_live,
    };
    match client.lease(call).await {
        Ok(a) => {
            let a = a.into_inner();
            Ok((a.ttl, a.granted_ttl, a.found))
        }
        Err(s) => {
            // A broken connection or a leader that moved: dial again next time.
            LEADER.with(|l| *l.borrow_mut() = None);
            Err(s)
        }
    }
}

/// Asks the members at `urls` (the first that answers) for the cluster id and membership.
pub async fn fetch_members(urls: &[String]) -> Result<(u64, Vec<u8>), String> {
    let mut errors = Vec::new();
    for url in urls {
        match dial(url).await {
            Ok(mut c) => match c.members(MembersRequest {}).await {
                Ok(r) => {
                    let r = r.into_inner();
                    info!(peer = url, cluster_id = %format!("{:x}", r.cluster_id), "fetched the membership");
                    return Ok((r.cluster_id, r.membership));
                }
                Err(s) => errors.push(format!("{url}: {}", s.message())),
            },
            Err(e) => errors.push(e),
        }
    }
    Err(format!(
        "could not fetch the cluster's membership from any peer: {}",
        errors.join("; ")
    ))
}

/// The HashKV at `rev` of the member at peer URL `url` (the corruption checks).
pub async fn hash_kv_of(
    url: &str,
    cluster_id: u64,
    rev: i64,
    compaction: bool,
) -> Result<HashKvAnswer, String> {
    let mut c = dial(url).await?;
    c.hash_kv(HashKvCall {
        cluster_id,
        revision: rev,
        compaction,
    })
    .await
    .map(Response::into_inner)
    .map_err(|s| s.message().to_string())
}

/// hyper's HTTP/2 client connection as the tower service tonic's clients call.
#[derive(Clone)]
pub struct H2Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type ResponseFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>,
            > + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(from: u32, n: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in from..from + n {
            write_record(&mut buf, format!("k{i}").as_bytes(), &i.to_le_bytes()).unwrap();
        }
        buf
    }

    /// A spool written chunk by chunk off the core reads back every record in order and is
    /// removed once read; one ended early (a broken or refused stream) removes its file.
    #[test]
    fn a_spool_reads_back_and_an_unfinished_one_is_removed() {
        let dir = std::env::temp_dir().join(format!("retcd-spool-test-{}", std::process::id()));
        runtime::block_on_local(async {
            let path = dir.join("incoming-1-0.snap");
            let mut spool = Spool::create(dir.clone(), path.clone()).await.unwrap();
            let buf = spool.write(records(0, 100)).await.unwrap();
            assert!(!buf.is_empty(), "the buffer comes back for the next chunk");
            spool.write(records(100, 50)).await.unwrap();
            let spooled = spool.finish().await.unwrap();
            let got: Vec<_> = spooled.map(Result::unwrap).collect();
            assert_eq!(got.len(), 150);
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, (k, v))| *k == format!("k{i}").into_bytes()
                        && *v == (i as u32).to_le_bytes())
            );
            assert!(!path.exists(), "a spool read back is removed");

            let path = dir.join("incoming-1-1.snap");
            let mut spool = Spool::create(dir.clone(), path.clone()).await.unwrap();
            spool.write(records(0, 10)).await.unwrap();
            assert!(path.exists());
            let Spool { ops, done, thread } = spool;
            drop((ops, done));
            thread.join().unwrap();
            assert!(!path.exists(), "an unfinished spool is removed");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
