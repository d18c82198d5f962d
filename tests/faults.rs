//! Fault tests of a 3-member retcd cluster under a steady write/read load: the leader and a
//! follower are killed (SIGKILL) and restarted, stopped (SIGSTOP) past the election timeout and
//! continued, and cut off from the other members' traffic (a proxy in front of its peer port).
//! Afterwards: no acknowledged write is missing on any member, every member holds identical
//! data (`endpoint hashkv`), and the recorded history of the clients' operations passes the
//! linearizability checker (tests/support/linearizability.rs).
//!
//! Every fault is held for a fixed time (that is the load running through it); every wait for
//! the cluster is a bounded poll.

#[path = "support/linearizability.rs"]
mod linearizability;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use linearizability::{Kind as OpKind, Op};
use support::Kind;
use support::cluster::Cluster;

/// Keys the clients race on (reads and overwrites).
const KEYS: usize = 3;
/// Clients per member.
const CLIENTS_PER_MEMBER: usize = 2;

/// What the clients did: the history of the shared keys and the unique keys whose put was
/// acknowledged.
#[derive(Default)]
struct Record {
    ops: Vec<Op>,
    acked: Vec<String>,
    errors: usize,
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn connect(endpoint: &str) -> Option<Client> {
    Client::connect(
        [endpoint],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(3)),
        ),
    )
    .await
    .ok()
}

/// One client: pinned to one member, it alternates puts of unique values to the shared keys,
/// linearizable gets of them, and puts of keys of its own; each operation is recorded with its
/// invocation and response time.
async fn client(
    id: usize,
    endpoint: String,
    stop: Arc<AtomicBool>,
    start: Instant,
    rec: Arc<Mutex<Record>>,
) {
    let mut c: Option<Client> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        if c.is_none() {
            c = connect(&endpoint).await;
            if c.is_none() {
                // The member is down: try again shortly (bounded by the test's run time).
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let cl = c.as_mut().expect("connected");
        seq += 1;
        let key = format!("shared/{}", seq as usize % KEYS);
        let call = micros(start);
        let failed = match seq % 3 {
            0 => {
                let value = format!("c{id}-{seq}");
                let r = cl.put(key.as_str(), value.as_str(), None).await;
                let ok = r.is_ok();
                rec.lock().unwrap().ops.push(Op {
                    key,
                    call,
                    ret: ok.then(|| micros(start)),
                    kind: OpKind::Put(value),
                });
                !ok
            }
            1 => match cl.get(key.as_str(), None).await {
                Ok(r) => {
                    let ret = micros(start);
                    let v = r
                        .kvs()
                        .first()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                    rec.lock().unwrap().ops.push(Op {
                        key,
                        call,
                        ret: Some(ret),
                        kind: OpKind::Get(v),
                    });
                    false
                }
                Err(_) => true,
            },
            _ => {
                let own = format!("own/{id}/{seq:06}");
                let ok = cl.put(own.as_str(), "x", None).await.is_ok();
                if ok {
                    rec.lock().unwrap().acked.push(own);
                }
                !ok
            }
        };
        if failed {
            rec.lock().unwrap().errors += 1;
            // A fresh connection after an error (the member may have restarted), after a pause
            // so that a member that is down is not asked thousands of times a second.
            c = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs the load in the background until the returned flag is set.
fn start_load(
    endpoints: Vec<String>,
    start: Instant,
    rec: Arc<Mutex<Record>>,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio");
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for (i, e) in endpoints.iter().enumerate() {
                for j in 0..CLIENTS_PER_MEMBER {
                    let id = i * CLIENTS_PER_MEMBER + j;
                    tasks.push(tokio::spawn(client(
                        id,
                        e.clone(),
                        s.clone(),
                        start,
                        rec.clone(),
                    )));
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    (stop, handle)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Stop,
    Cut,
}

/// Holds a fault for `d` while the load runs through it.
fn hold(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn faults_under_load_lose_nothing_and_stay_linearizable() {
    let mut c = Cluster::start_proxied(Kind::Retcd, 3, &[]);
    let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    let start = Instant::now();
    let rec = Arc::new(Mutex::new(Record::default()));
    let (stop, load) = start_load(endpoints.clone(), start, rec.clone());
    let progress = |what: &str| {
        let r = rec.lock().unwrap();
        eprintln!(
            "{what}: {} shared ops, {} acked own keys, {} errors",
            r.ops.len(),
            r.acked.len(),
            r.errors
        );
    };
    hold(Duration::from_secs(1));
    progress("steady");

    // Each fault hits the leader, then a follower: SIGKILL (restarted on its data), SIGSTOP past
    // the election timeout (then SIGCONT), and a cut-off from the others' traffic (then
    // restored).
    for (fault, offset, duration) in [
        (Fault::Kill, 1, 1500),
        (Fault::Stop, 2, 2500),
        (Fault::Cut, 1, 3000),
    ] {
        for target in ["leader", "follower"] {
            let leader = c.leader();
            let i = if target == "leader" {
                leader
            } else {
                (leader + offset) % 3
            };
            match fault {
                Fault::Kill => c.members[i].kill9(),
                Fault::Stop => c.members[i].signal(libc::SIGSTOP),
                Fault::Cut => c.proxies[i].cut(),
            }
            hold(Duration::from_millis(duration));
            match fault {
                Fault::Kill => c.members[i].start_again(),
                Fault::Stop => c.members[i].signal(libc::SIGCONT),
                Fault::Cut => c.proxies[i].restore(),
            }
            c.leader();
            progress(&format!("{fault:?} {target}"));
        }
    }

    // Leadership moved twice while followers forward writes (a forwarded proposal that reaches
    // a leader in transfer is dropped, not fatal).
    for _ in 0..2 {
        let leader = c.leader();
        let to = c.member_id((leader + 1) % 3);
        let out = c.members[leader].etcdctl(&["move-leader", &format!("{to:x}")]);
        assert!(out.success(), "{out:?}");
        assert_eq!(c.leader(), (leader + 1) % 3);
        hold(Duration::from_millis(500));
    }
    progress("move-leader");

    hold(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    load.join().expect("load thread");
    let rec = Arc::try_unwrap(rec)
        .ok()
        .expect("clients done")
        .into_inner()
        .unwrap();
    assert!(
        rec.ops.iter().filter(|o| o.ret.is_some()).count() > 100,
        "the load ran ({} operations)",
        rec.ops.len()
    );

    // Every member holds the same data, including every acknowledged write.
    c.wait_caught_up();
    let hashes: Vec<String> = c
        .etcdctl(&["endpoint", "hashkv"])
        .stdout
        .lines()
        .map(|l| l.split(", ").nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(hashes.len(), 3, "{hashes:?}");
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "members differ: {hashes:?}"
    );
    for m in &c.members {
        let keys = m.etcdctl(&["get", "own/", "--prefix", "--keys-only", "--consistency=s"]);
        assert!(keys.success(), "{keys:?}");
        let have: std::collections::HashSet<&str> =
            keys.stdout.lines().filter(|l| !l.is_empty()).collect();
        let missing: Vec<&String> = rec
            .acked
            .iter()
            .filter(|k| !have.contains(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged writes missing on {}: {:?}",
            missing.len(),
            m.name(),
            &missing[..missing.len().min(10)]
        );
    }

    // The history, with a final read of each key, is linearizable.
    let mut ops = rec.ops;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let mut cl = connect(&endpoints[0]).await.expect("connect");
        for k in 0..KEYS {
            let key = format!("shared/{k}");
            let call = micros(start);
            let r = cl
                .get(key.as_str(), Some(GetOptions::new()))
                .await
                .expect("final read");
            let v = r
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            ops.push(Op {
                key,
                call,
                ret: Some(micros(start)),
                kind: OpKind::Get(v),
            });
        }
    });
    let n = ops.len();
    if let Err(v) = linearizability::check(&ops) {
        panic!(
            "not linearizable: key {} ({} operations of {n}); first ones: {:#?}",
            v.key,
            v.ops.len(),
            &v.ops[..v.ops.len().min(40)]
        );
    }
}
