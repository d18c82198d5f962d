//! Who this member is: its member id and cluster id, decided once and kept in the data dir.
//!
//! - A data dir that holds an identity keeps it: the flags that bootstrapped it are ignored from
//!   then on (as etcd ignores --initial-cluster on a restart), except that a restart with
//!   `--initial-cluster-state new` whose flags give another member id is refused: the data dir
//!   belongs to another member or cluster (a changed --initial-cluster-token, say).
//! - A new cluster (`new`): every id derived from --initial-cluster and --initial-cluster-token as
//!   etcd derives them, so all initial members agree without talking; the initial members open
//!   the log (raft/src/log.rs `bootstrap_records`).
//! - Joining (`existing`): the cluster id and membership are fetched from a running member; this
//!   member is the one whose peer URLs are its --initial-advertise-peer-urls (added beforehand
//!   with `member add`).
//!
//! The identity is stored (durably) before the member talks to anyone.

use std::time::{Duration, Instant};

use retcd_engine::mvcc::Mvcc;
use retcd_engine::runtime;
use retcd_raft::membership::{self, Member, Membership};
use tracing::info;

use crate::config::Config;

pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The initial members, when this member bootstraps a new cluster.
    pub bootstrap: Option<Vec<Member>>,
    /// The membership fetched from the cluster when joining (peer URLs to dial until this
    /// member's own log says who the members are).
    pub fetched: Option<Membership>,
}

/// How long a joining member keeps asking the other members for the membership.
const JOIN_FETCH_FOR: Duration = Duration::from_secs(10);

fn urls(u: &[crate::config::Url]) -> Vec<String> {
    u.iter().map(|u| u.to_string()).collect()
}

/// The initial members as etcd derives them from --initial-cluster and the token.
fn initial_members(cfg: &Config) -> Vec<Member> {
    let mut members: Vec<Member> = cfg
        .initial_cluster
        .iter()
        .map(|m| {
            let peer_urls = urls(&m.peer_urls);
            Member {
                id: membership::member_id(&peer_urls, &cfg.initial_cluster_token),
                name: m.name.clone(),
                peer_urls,
                client_urls: Vec::new(),
                is_learner: false,
            }
        })
        .collect();
    members.sort_by_key(|m| m.id);
    members
}

/// This member in --initial-cluster, checked against --initial-advertise-peer-urls as etcd checks.
fn local_initial(cfg: &Config, members: &[Member]) -> Result<Member, String> {
    let me = members.iter().find(|m| m.name == cfg.name).ok_or_else(|| {
        format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            cfg.name
        )
    })?;
    let mut advertised = urls(&cfg.initial_advertise_peer_urls);
    advertised.sort();
    let mut listed = me.peer_urls.clone();
    listed.sort();
    if advertised != listed {
        return Err(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} \
             (the two must list the same URLs for this member)",
            cfg.name,
            me.peer_urls.join(","),
            advertised.join(",")
        ));
    }
    Ok(me.clone())
}

/// A new cluster's members as --initial-cluster and --initial-cluster-token describe them (sorted
/// by id), this member among them, and the cluster id: what a new member bootstraps with, and what
/// `retcdutl snapshot restore` writes into the data dir it builds.
pub fn new_cluster(cfg: &Config) -> Result<(Vec<Member>, Member, u64), String> {
    let members = initial_members(cfg);
    let me = local_initial(cfg, &members)?;
    let cluster_id = membership::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
    Ok((members, me, cluster_id))
}

pub fn resolve(cfg: &Config, mvcc: &mut Mvcc) -> Result<Identity, String> {
    let stored = mvcc.local_identity().map_err(|e| e.to_string())?;
    if let Some((member_id, cluster_id)) = stored {
        if cfg.is_new_cluster() {
            let (_, me, cid) = new_cluster(cfg)?;
            if me.id != member_id || cid != cluster_id {
                return Err(format!(
                    "the data dir {} belongs to member {member_id:x} of cluster {cluster_id:x}, \
                     but --initial-cluster and --initial-cluster-token describe member {:x} of \
                     cluster {cid:x}; start with the flags that created it, or an empty data dir",
                    cfg.data_dir.display(),
                    me.id
                ));
            }
        }
        info!(member_id = %format!("{member_id:x}"), cluster_id = %format!("{cluster_id:x}"), "restarting a member");
        return Ok(Identity {
            member_id,
            cluster_id,
            bootstrap: None,
            fetched: None,
        });
    }
    let identity = if cfg.is_new_cluster() {
        let (members, me, cluster_id) = new_cluster(cfg)?;
        refuse_if_bootstrapped(cfg, &me)?;
        info!(member_id = %format!("{:x}", me.id), cluster_id = %format!("{cluster_id:x}"), members = members.len(), "starting a member of a new cluster");
        Identity {
            member_id: me.id,
            cluster_id,
            bootstrap: Some(members),
            fetched: None,
        }
    } else {
        join(cfg)?
    };
    mvcc.set_local_identity(identity.member_id, identity.cluster_id)
        .map_err(|e| format!("storing the member's identity: {e}"))?;
    Ok(identity)
}

/// etcd's isMemberBootstrapped: an empty data dir told to bootstrap a new cluster whose running
/// members already know this member as started (it published its name and client URLs) lost its
/// data; bootstrapping again would make a second, empty copy of it. Asks each other initial member
/// once; members that do not answer (the usual case: they are starting too) are skipped.
fn refuse_if_bootstrapped(cfg: &Config, me: &Member) -> Result<(), String> {
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .filter(|m| m.name != cfg.name)
        .flat_map(|m| urls(&m.peer_urls))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let found = runtime::block_on_local(retcd_net::peer::fetch_members(&others));
    let Ok((_, bytes)) = found else {
        return Ok(());
    };
    let Ok(remote) = Membership::decode(&bytes) else {
        return Ok(());
    };
    if remote.get(me.id).is_some_and(|m| !m.client_urls.is_empty()) {
        return Err(format!(
            "member {:x} ({}) has already been bootstrapped: its data dir {} is empty or lost; remove it with `etcdctl member remove`, add it again with `etcdctl member add`, and start it with --initial-cluster-state existing",
            me.id,
            cfg.name,
            cfg.data_dir.display()
        ));
    }
    Ok(())
}

/// Fetches the membership from the other members of --initial-cluster and finds this member.
fn join(cfg: &Config) -> Result<Identity, String> {
    let mine = urls(&cfg.initial_advertise_peer_urls);
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .flat_map(|m| urls(&m.peer_urls))
        .filter(|u| !mine.contains(u))
        .collect();
    if others.is_empty() {
        return Err(
            "--initial-cluster-state existing needs the running members in --initial-cluster"
                .into(),
        );
    }
    let deadline = Instant::now() + JOIN_FETCH_FOR;
    let (cluster_id, bytes) = runtime::block_on_local(async {
        loop {
            match retcd_net::peer::fetch_members(&others).await {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => runtime::sleep(Duration::from_millis(500)).await,
            }
        }
    })?;
    let members = Membership::decode(&bytes).map_err(|e| e.to_string())?;
    let me = members.by_peer_urls(&mine).ok_or_else(|| {
        format!(
            "no member of cluster {cluster_id:x} has the peer URLs {} (add this member with \
             `etcdctl member add` first)",
            mine.join(",")
        )
    })?;
    info!(member_id = %format!("{:x}", me.id), cluster_id = %format!("{cluster_id:x}"), "joining an existing cluster");
    Ok(Identity {
        member_id: me.id,
        cluster_id,
        bootstrap: None,
        fetched: Some(members),
    })
}
