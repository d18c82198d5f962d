//! Issue 12, fix 4: what a member buffers is bounded. A leader whose proposals cannot commit
//! (its followers are stopped) holds at most its bound of uncommitted bytes and refuses the
//! rest at once with etcd's answer to raft's ErrProposalDropped, instead of keeping every
//! proposal in memory for the whole request timeout.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use support::Kind;
use support::cluster::Cluster;

/// The leader's bound in the test (RETCD_MAX_UNCOMMITTED_BYTES); raft-rs's smallest.
const BOUND: usize = 1 << 20;
/// Value size of each proposal: the bound holds 16 of them.
const VALUE: usize = 64 << 10;
/// Proposals made while nothing commits: 2.5 × the bound.
const PUTS: usize = 40;
/// How long a client waits for a put that the leader took (it cannot commit).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn a_leader_refuses_proposals_beyond_its_uncommitted_bound() {
    // A long election timeout keeps the leader leading (check-quorum) while its followers are
    // stopped and its proposals are refused or wait.
    let mut c = Cluster::start_with_env(
        Kind::Retcd,
        3,
        &["--heartbeat-interval=100", "--election-timeout=10000"],
        &[("RETCD_MAX_UNCOMMITTED_BYTES", &BOUND.to_string())],
    );
    let leader = c.leader();
    let endpoint = c.members[leader].endpoint();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(async {
        Client::connect(
            [endpoint.as_str()],
            Some(ConnectOptions::new().with_timeout(CLIENT_TIMEOUT)),
        )
        .await
        .expect("connect")
    });
    // The connection is up before the followers stop: the puts below all reach the leader
    // within the election timeout.
    rt.block_on(async { client.kv_client().put("warm", "up", None).await })
        .expect("put while healthy");
    for &i in &followers {
        c.members[i].signal(libc::SIGSTOP);
    }
    let started = Instant::now();
    let results: Vec<(Result<(), etcd_client::Error>, Duration)> = rt.block_on(async {
        let puts: Vec<_> = (0..PUTS)
            .map(|n| {
                let mut kv = client.kv_client();
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = kv
                        .put(format!("k{n}"), vec![b'v'; VALUE], None)
                        .await
                        .map(|_| ());
                    (r, t.elapsed())
                })
            })
            .collect();
        let mut out = Vec::new();
        for p in puts {
            out.push(p.await.expect("put task"));
        }
        out
    });
    let elapsed = started.elapsed();
    for &i in &followers {
        c.members[i].signal(libc::SIGCONT);
    }
    assert!(
        elapsed < Duration::from_secs(9),
        "the puts ran past the election timeout ({elapsed:?}): the leader may have stepped down"
    );

    let mut refused = 0;
    let mut waited = 0;
    for (r, took) in &results {
        match r {
            Err(etcd_client::Error::GRpcStatus(s))
                if s.code() == tonic::Code::Unknown && s.message() == "raft proposal dropped" =>
            {
                // Refused at once, not after a wait.
                assert!(*took < CLIENT_TIMEOUT, "a refusal took {took:?}");
                refused += 1;
            }
            Err(_) => waited += 1,
            Ok(()) => panic!("a put committed while both followers were stopped"),
        }
    }
    // Every entry carries its encoded request around the value: the bound holds fewer than
    // BOUND / VALUE of them (raft-rs always takes one more when nothing is uncommitted).
    assert!(
        waited <= BOUND / VALUE,
        "the leader took {waited} puts of {VALUE} bytes over a bound of {BOUND} bytes \
         ({refused} refused)"
    );
    assert!(refused >= PUTS - BOUND / VALUE, "{refused} refused");

    // Once the followers run again, what the leader took commits and new writes go through.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rt.block_on(async { client.kv_client().put("after", "ok", None).await });
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no write after SIGCONT: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait_caught_up();
}
