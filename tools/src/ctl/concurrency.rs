//! `lock` and `elect`: etcdctl's distributed lock and leader election, through the server's
//! Lock and Election services, each on a session lease this process keeps alive (the recipe
//! the services run is clientv3's concurrency, so keys are `<name>/<lease %x>` as etcdctl's).
//! SIGINT and SIGTERM release the lock or resign and exit 0, as etcdctl's handlers do.

use retcd_net::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, RangeRequest, RangeResponse,
};
use retcd_net::pb::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use retcd_net::pb::v3lockpb::{LockRequest, UnlockRequest};
use tokio::signal::unix::{SignalKind, signal};

use super::client::{Client, KeepAlive};
use super::flags::{Kind, Parsed, Spec, spec};
use super::print::{self, Printed, Printer};
use super::rawarg::bytes;
use super::usage::about;
use super::{Cmd, connected_no_timeout};
use crate::output::Failure;

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: about(
            "lock",
            "<lockname> [exec-command arg1 arg2 ...]",
            "Acquires a named lock",
        ),
        flags: &[spec("ttl", Kind::Int, "10", "timeout for session")],
        run: lock,
    },
    Cmd {
        about: about(
            "elect",
            "<election-name> [proposal]",
            "Observes and participates in leader election",
        ),
        flags: ELECT,
        run: elect,
    },
];

const ELECT: &[Spec] = &[Spec {
    short: Some('l'),
    ..spec("listen", Kind::Bool, "false", "observation mode")
}];

/// A session: a lease kept alive in the background until dropped. `lost` fires when the lease
/// is gone (expired or revoked).
struct Session {
    lease: i64,
    lost: tokio::sync::oneshot::Receiver<()>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn session(c: &Client, ttl: i64) -> Result<Session, String> {
    let mut l = c.lease();
    let g = c
        .call(l.lease_grant(c.request(LeaseGrantRequest { ttl, id: 0 })))
        .await?;
    let lease = g.id;
    let (lost_tx, lost) = tokio::sync::oneshot::channel();
    let mut stream = KeepAlive::open(c, lease).await?;
    let keeper = tokio::spawn(async move {
        while let Ok(Some(r)) = stream.next().await {
            if r.ttl <= 0 || !stream.renew_after(r.ttl).await {
                break;
            }
        }
        let _ = lost_tx.send(());
    });
    Ok(Session {
        lease,
        lost,
        keeper,
    })
}

async fn revoke(c: &Client, lease: i64) {
    let mut l = c.lease();
    let _ = c
        .call(l.lease_revoke(c.request(LeaseRevokeRequest { id: lease })))
        .await;
}

async fn get(c: &Client, key: &[u8]) -> Result<RangeResponse, String> {
    let mut kv = c.kv();
    c.call(kv.range(c.request(RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })))
    .await
}

fn show(printer: &Printer, r: &RangeResponse) -> Result<(), String> {
    match printer.get(r) {
        Printed::Out(b) => {
            print::emit(&b);
            Ok(())
        }
        Printed::Unsupported(why) => Err(why),
    }
}

/// SIGINT and SIGTERM, caught from the start of the command (etcdctl installs its handler
/// first thing), so that none is lost between two waits.
struct Interrupts {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn catch() -> Interrupts {
        Interrupts {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Waits for the next one.
    async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.int) => {}
            _ = one(&mut self.term) => {}
        }
    }
}

/// What etcdctl says when a signal cancels a wait (its context is cancelled).
const CANCELED: &str = "context canceled";

fn lock(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let Some(name) = p.args.first().cloned() else {
        return Err(Failure::bad_args(
            "lock takes a lock name argument and an optional command to execute",
        ));
    };
    let exec: Vec<String> = p.args[1..].to_vec();
    let ttl = p.int("ttl");
    let printer = &*printer;
    connected_no_timeout(p, |c| async move {
        let mut signals = Interrupts::catch();
        let mut s = session(&c, ttl).await?;
        let mut locks = c.lock();
        let lock = c.call(locks.lock(c.request(LockRequest {
            name: bytes(&name),
            lease: s.lease,
        })));
        let locked = tokio::select! {
            r = lock => r?,
            _ = signals.recv() => {
                // The session's lease goes, and with it the waiting key.
                revoke(&c, s.lease).await;
                return Err(CANCELED.to_string());
            }
        };
        let unlock = async |key: Vec<u8>| {
            let mut locks = c.lock();
            let _ = c.call(locks.unlock(c.request(UnlockRequest { key }))).await;
        };
        if !exec.is_empty() {
            // The session is kept alive while the command runs (it may outlast the TTL);
            // a signal reaches the command, and this process waits for it.
            let revision = locked.header.as_ref().map_or(0, |h| h.revision);
            let env = [
                (
                    "ETCD_LOCK_KEY",
                    String::from_utf8_lossy(&locked.key).into_owned(),
                ),
                ("ETCD_LOCK_REV", revision.to_string()),
            ];
            let ran = super::exec::run(&exec, &env).await;
            unlock(locked.key.clone()).await;
            revoke(&c, s.lease).await;
            return ran;
        }
        let held = get(&c, &locked.key).await?;
        if held.kvs.is_empty() {
            return Err("lock lost on init".to_string());
        }
        show(printer, &held)?;
        tokio::select! {
            _ = signals.recv() => {
                unlock(locked.key.clone()).await;
                revoke(&c, s.lease).await;
                Ok(())
            }
            _ = &mut s.lost => Err("session expired".to_string()),
        }
    })?;
    Ok(Printed::Out(Vec::new()))
}

fn elect(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let listen = p.bool("listen");
    match (p.args.len(), listen) {
        (1 | 2, _) => {}
        _ => {
            return Err(Failure::bad_args(
                "elect takes one election name argument and an optional proposal argument",
            ));
        }
    }
    if p.args.len() == 1 && !listen {
        return Err(Failure::bad_args("no proposal argument but -l not set"));
    }
    if p.args.len() == 2 && listen {
        return Err(Failure::bad_args("proposal given but -l is set"));
    }
    let name = bytes(&p.args[0]);
    let proposal = p.args.get(1).map(|a| bytes(a)).unwrap_or_default();
    let printer = &*printer;
    connected_no_timeout(p, |c| async move {
        let mut e = c.election();
        let mut signals = Interrupts::catch();
        if listen {
            let mut stream = e
                .observe(c.request(LeaderRequest { name }))
                .await
                .map_err(|s| super::client::status_text(&s))?
                .into_inner();
            loop {
                tokio::select! {
                    _ = signals.recv() => return Ok(()),
                    r = stream.message() => match r {
                        Ok(Some(r)) => {
                            let kvs: Vec<_> = r.kv.into_iter().collect();
                            let count = kvs.len() as i64;
                            show(printer, &RangeResponse {
                                header: r.header,
                                kvs,
                                more: false,
                                count,
                            })?;
                        }
                        _ => return Err("elect: observer lost".to_string()),
                    },
                }
            }
        }
        let mut s = session(&c, 60).await?;
        let campaign = c.call(e.campaign(c.request(CampaignRequest {
            name,
            lease: s.lease,
            value: proposal,
        })));
        let won = tokio::select! {
            r = campaign => r?,
            _ = signals.recv() => {
                revoke(&c, s.lease).await;
                return Err(CANCELED.to_string());
            }
        };
        let leader = won.leader.unwrap_or_default();
        show(printer, &get(&c, &leader.key).await?)?;
        tokio::select! {
            _ = signals.recv() => {
                let _ = c.call(e.resign(c.request(ResignRequest { leader: Some(leader) }))).await;
                revoke(&c, s.lease).await;
                Ok(())
            }
            _ = &mut s.lost => Err("elect: session expired".to_string()),
        }
    })?;
    Ok(Printed::Out(Vec::new()))
}
