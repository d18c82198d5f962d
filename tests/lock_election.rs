//! Issue 14: the server-side Lock and Election services (v3lock, v3election) through the
//! `etcd-client` crate, which calls them over gRPC. Each body runs against real etcd and retcd
//! concurrently ([`support::run_both`]), so every expectation written here is etcd's answer
//! too — revisions included: both stores start at revision 1 and the bodies write the same.
//! A request that must wait is proven to have waited by its answer's revision, which is after
//! the write that released it.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{
    Client, GetOptions, LeaderKey, LeaseGrantOptions, LockOptions, ProclaimOptions, ResignOptions,
};
use support::{Kind, Server, Target, assert_status};

const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a waiting request's key may take to appear.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

const LEASE_A: i64 = 0xa1;
const LEASE_B: i64 = 0xb2;
const LEASE_C: i64 = 0xc3;

async fn client(t: &Target) -> Client {
    Client::connect([t.endpoint.as_str()], None)
        .await
        .expect("connect")
}

async fn grant(c: &mut Client, id: i64) {
    c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id)))
        .await
        .expect("grant");
}

/// The keys under `prefix`, in key order.
async fn keys(c: &mut Client, prefix: &str) -> Vec<String> {
    c.get(
        prefix,
        Some(GetOptions::new().with_prefix().with_keys_only()),
    )
    .await
    .expect("get")
    .kvs()
    .iter()
    .map(|kv| kv.key_str().unwrap().to_string())
    .collect()
}

/// Waits until the keys under `prefix` are `want`.
async fn wait_keys(c: &mut Client, prefix: &str, want: &[&str]) {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let got = keys(c, prefix).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "keys under {prefix}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("header").revision()
}

#[test]
fn lock_waits_for_older_holders_and_unlock_releases() {
    support::run_both(&[], BODY_TIMEOUT, |t| async move {
        let mut c = client(&t).await;
        for id in [LEASE_A, LEASE_B, LEASE_C] {
            grant(&mut c, id).await;
        }
        // Uncontended: the key is the name, '/', the lease in hex; revision 2 after the grants.
        let a = c
            .lock("L", Some(LockOptions::new().with_lease(LEASE_A)))
            .await
            .expect("lock A");
        assert_eq!(a.key(), b"L/a1");
        assert_eq!(header_rev(a.header()), 2);
        // The same lease again holds it already.
        let again = c
            .lock("L", Some(LockOptions::new().with_lease(LEASE_A)))
            .await
            .expect("lock A again");
        assert_eq!(again.key(), b"L/a1");
        assert_eq!(header_rev(again.header()), 2);

        // B waits for A.
        let mut cb = client(&t).await;
        let b = tokio::spawn(async move {
            cb.lock("L", Some(LockOptions::new().with_lease(LEASE_B)))
                .await
                .expect("lock B")
        });
        wait_keys(&mut c, "L/", &["L/a1", "L/b2"]).await;
        let unlocked = c.unlock("L/a1").await.expect("unlock A");
        assert_eq!(header_rev(unlocked.header()), 4);
        let b = b.await.expect("B");
        assert_eq!(b.key(), b"L/b2");
        assert_eq!(
            header_rev(b.header()),
            4,
            "B's answer comes after A's unlock"
        );

        // C waits for B; its lease is revoked meanwhile: once B unlocks, C's session expired.
        // (etcd 3.5's answer; 3.4's Mutex.Lock did not check and answered with the key C no
        // longer has.)
        let mut cc = client(&t).await;
        let waiting = tokio::spawn(async move {
            cc.lock("L", Some(LockOptions::new().with_lease(LEASE_C)))
                .await
        });
        wait_keys(&mut c, "L/", &["L/b2", "L/c3"]).await;
        c.lease_revoke(LEASE_C).await.expect("revoke C");
        c.unlock("L/b2").await.expect("unlock B");
        let waited = waiting.await.expect("C");
        match t.kind {
            Kind::Etcd => {
                let r = waited.expect("etcd 3.4 answers");
                assert_eq!((r.key(), header_rev(r.header())), (&b"L/c3"[..], 7));
            }
            Kind::Retcd => assert_status(waited, "Unknown", "mutex: session is expired"),
        }

        // A lease that does not exist.
        assert_status(
            c.lock("L", Some(LockOptions::new().with_lease(0x77))).await,
            // etcd's in-process client drops the code.
            "Unknown",
            "etcdserver: requested lease not found",
        );
        // Unlocking a key nobody holds is a delete of nothing.
        let none = c.unlock("L/a1").await.expect("unlock again");
        assert_eq!(header_rev(none.header()), 7);
    });
}

#[test]
fn a_waiting_lock_whose_caller_goes_away_removes_its_key() {
    support::run_both(&[], BODY_TIMEOUT, |t| async move {
        let mut c = client(&t).await;
        grant(&mut c, LEASE_A).await;
        grant(&mut c, LEASE_B).await;
        c.lock("L", Some(LockOptions::new().with_lease(LEASE_A)))
            .await
            .expect("lock A");
        let mut cb = client(&t).await;
        let b = tokio::spawn(async move {
            cb.lock("L", Some(LockOptions::new().with_lease(LEASE_B)))
                .await
        });
        wait_keys(&mut c, "L/", &["L/a1", "L/b2"]).await;
        // Aborting the task drops the client and its connection: the call is cancelled.
        b.abort();
        wait_keys(&mut c, "L/", &["L/a1"]).await;
    });
}

fn leader_key(name: &str, key: &str, rev: i64, lease: i64) -> LeaderKey {
    LeaderKey::new()
        .with_name(name)
        .with_key(key)
        .with_rev(rev)
        .with_lease(lease)
}

#[test]
fn election_campaign_proclaim_observe_resign() {
    support::run_both(&[], BODY_TIMEOUT, |t| async move {
        let mut c = client(&t).await;
        for id in [LEASE_A, LEASE_B] {
            grant(&mut c, id).await;
        }
        assert_status(c.leader("E").await, "Unknown", "election: no leader");

        // An observer before anybody campaigns sees the first leader. (Its own task: etcd's
        // gRPC sends the response headers with the first message only.)
        let mut co = client(&t).await;
        let (seen_tx, mut observe) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = co.observe("E").await.expect("observe");
            while let Some(m) = stream.message().await.expect("observe") {
                if seen_tx.send(m).is_err() {
                    break;
                }
            }
        });
        let a = c.campaign("E", "a-1", LEASE_A).await.expect("campaign A");
        assert_eq!(header_rev(a.header()), 2);
        let leader = a.leader().expect("leader key").clone();
        assert_eq!(
            (leader.name(), leader.key(), leader.rev(), leader.lease()),
            (&b"E"[..], &b"E/a1"[..], 2, LEASE_A)
        );
        let seen = observe.recv().await.expect("first");
        assert_eq!(header_rev(seen.header()), 2);
        assert_eq!(seen.kv().expect("kv").value(), b"a-1");

        let l = c.leader("E").await.expect("leader");
        assert_eq!(l.kv().expect("kv").key(), b"E/a1");
        assert_eq!(l.kv().expect("kv").value(), b"a-1");

        let p = c
            .proclaim(
                "a-2",
                Some(ProclaimOptions::new().with_leader(leader.clone())),
            )
            .await
            .expect("proclaim");
        assert_eq!(header_rev(p.header()), 3);
        let seen = observe.recv().await.expect("second");
        assert_eq!(header_rev(seen.header()), 3);
        assert_eq!(seen.kv().expect("kv").value(), b"a-2");

        // B waits for A; A resigns; B leads and the observer sees B's value.
        let mut cb = client(&t).await;
        let b = tokio::spawn(async move { cb.campaign("E", "b-1", LEASE_B).await.expect("B") });
        wait_keys(&mut c, "E/", &["E/a1", "E/b2"]).await;
        let r = c
            .resign(Some(ResignOptions::new().with_leader(leader.clone())))
            .await
            .expect("resign");
        assert_eq!(header_rev(r.header()), 5);
        let b = b.await.expect("B");
        // Campaign's header is that of its put, before the wait.
        assert_eq!(header_rev(b.header()), 4);
        assert_eq!(b.leader().expect("leader").key(), b"E/b2");
        let seen = observe.recv().await.expect("third");
        assert_eq!(header_rev(seen.header()), 5);
        let kv = seen.kv().expect("kv");
        assert_eq!((kv.key(), kv.value()), (&b"E/b2"[..], &b"b-1"[..]));

        // A is no longer the leader.
        assert_status(
            c.proclaim(
                "a-3",
                Some(ProclaimOptions::new().with_leader(leader.clone())),
            )
            .await,
            "Unknown",
            "election: not leader",
        );
        // Resigning again deletes nothing (its compare fails) and answers.
        let r = c
            .resign(Some(ResignOptions::new().with_leader(leader)))
            .await
            .expect("resign again");
        assert_eq!(header_rev(r.header()), 5);
        assert_status(
            c.proclaim("x", None).await,
            "Unknown",
            "\"leader\" field must be provided",
        );
        assert_status(
            c.resign(None).await,
            "Unknown",
            "\"leader\" field must be provided",
        );
        // Campaigning again with the lease that leads keeps the key and takes the new value.
        let again = c
            .campaign("E", "b-2", LEASE_B)
            .await
            .expect("campaign B again");
        assert_eq!(again.leader().expect("leader").rev(), 4);
        let kv = c
            .leader("E")
            .await
            .expect("leader")
            .kv()
            .expect("kv")
            .clone();
        assert_eq!((kv.value(), kv.create_revision()), (&b"b-2"[..], 4));
        // Proclaim needs only the leader key, from any client.
        let p = c
            .proclaim(
                "b-3",
                Some(ProclaimOptions::new().with_leader(leader_key("E", "E/b2", 4, LEASE_B))),
            )
            .await
            .expect("proclaim by key");
        assert_eq!(header_rev(p.header()), 7);
    });
}

/// A long-running etcdctl or retcdctl (`lock` without a command, `elect`), its stdout read line
/// by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(ctl: &std::path::Path, s: &Server, args: &[&str]) -> Running {
        let mut child = std::process::Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", s.client_url()))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdctl");
        let lines = support::stdout_lines(&mut child);
        Running { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(STATE_TIMEOUT)
            .expect("a line from etcdctl")
    }

    /// SIGINT (etcdctl then unlocks or resigns), and its exit.
    fn interrupt(mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + STATE_TIMEOUT;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "etcdctl did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `name/<lease in hex>` with the lease replaced (leases differ between stores).
fn shape(key: &str) -> String {
    let (name, lease) = key.rsplit_once('/').expect("name/lease");
    assert!(i64::from_str_radix(lease, 16).is_ok(), "{key}");
    format!("{name}/<lease>")
}

/// Keys under `prefix`, through etcdctl.
fn ctl_keys(s: &Server, prefix: &str) -> Vec<String> {
    let out = s.etcdctl(&["get", prefix, "--prefix", "--keys-only"]);
    assert!(out.success(), "{out:?}");
    out.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn wait_ctl_keys(s: &Server, prefix: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let keys = ctl_keys(s, prefix);
        if keys.len() == n {
            return keys;
        }
        assert!(
            Instant::now() < deadline,
            "{keys:?} under {prefix}, want {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// etcdctl's own `lock` and `elect` (the client-side recipes over KV, Lease and Watch) and
/// retcdctl's (over the Lock and Election services), the same steps against etcd and retcd,
/// compared with lease ids masked.
#[test]
fn etcdctl_lock_and_elect() {
    let (etcd, retcd) = support::start_both(&[]);
    let mut seen = Vec::new();
    let ctls = [support::etcdctl_binary(), support::retcdctl_bin()];
    for (ctl, s) in ctls.iter().flat_map(|c| [(c, &etcd), (c, &retcd)]) {
        let mut log = Vec::new();
        // Uncontended, with a command: it runs holding the lock, then the lock is gone.
        let out = std::process::Command::new(ctl)
            .arg(format!("--endpoints={}", s.client_url()))
            .args(["lock", "L", "--", "sh", "-c", "echo held $ETCD_LOCK_KEY"])
            .output()
            .expect("lock");
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let held = stdout
            .trim()
            .strip_prefix("held ")
            .expect("the command ran");
        log.push(format!("held {}", shape(held)));
        assert!(ctl_keys(s, "L/").is_empty());

        // A holder, then a second one that waits until the first is interrupted.
        let holder = Running::start(ctl, s, &["lock", "L"]);
        let key = holder.line();
        log.push(shape(&key));
        let waiter = Running::start(ctl, s, &["lock", "L"]);
        let keys = wait_ctl_keys(s, "L/", 2);
        assert_eq!(keys[0], key);
        holder.interrupt();
        let second = waiter.line();
        assert_eq!(
            second, keys[1],
            "the waiter holds it once the holder let go"
        );
        waiter.interrupt();
        assert!(ctl_keys(s, "L/").is_empty());

        // Elections: a leader, an observer, a second candidate taking over on resign.
        let first = Running::start(ctl, s, &["elect", "E", "p1"]);
        let leader_key = first.line();
        log.push(format!("{} {}", shape(&leader_key), first.line()));
        let observer = Running::start(ctl, s, &["elect", "-l", "E"]);
        assert_eq!(
            (observer.line(), observer.line()),
            (leader_key.clone(), "p1".to_string())
        );
        let second = Running::start(ctl, s, &["elect", "E", "p2"]);
        wait_ctl_keys(s, "E/", 2);
        first.interrupt();
        let next_key = second.line();
        log.push(format!("{} {}", shape(&next_key), second.line()));
        assert_eq!(
            (observer.line(), observer.line()),
            (next_key, "p2".to_string())
        );
        second.interrupt();
        observer.interrupt();
        seen.push(log);
    }
    for (i, log) in seen.iter().enumerate() {
        assert_eq!(*log, seen[0], "run {i}: etcdctl/retcdctl × etcd/retcd");
    }
    assert_eq!(seen[0][..2], ["held L/<lease>", "L/<lease>"]);
}
