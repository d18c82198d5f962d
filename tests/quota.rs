//! The backend quota (--quota-backend-bytes): etcd's NOSPACE alarm against the real binary.

mod support;

use std::time::Duration;

use support::{Kind, Server, connect};

/// Against etcd too: the same procedure (compact, defrag, disarm) and the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_quota_raise_nospace_until_disarmed() {
    for kind in [Kind::Etcd, Kind::Retcd] {
        nospace_until_disarmed(kind).await;
    }
}

async fn nospace_until_disarmed(kind: Kind) {
    let server = Server::start_in_tempdir_with_args(kind, &["--quota-backend-bytes", "2000000"]);
    let mut client = connect(&server, Duration::from_secs(10)).await;
    let value = vec![b'x'; 64 << 10];
    let mut refused = None;
    for i in 0..100 {
        match client.put(format!("big/{i:03}"), value.clone(), None).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (written, err) = refused.expect("a 2 MB quota must refuse 100 puts of 64 KiB");
    assert!(written > 5, "only {written} puts fit");
    let etcd_client::Error::GRpcStatus(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(format!("{:?}", status.code()), "ResourceExhausted");
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );

    // The refused put changed nothing; the alarm now refuses even a tiny put.
    let rev = client
        .get("big/000", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(rev, 1 + written as i64);
    assert!(client.put("small", "1", None).await.is_err());
    let listed = server.etcdctl(&["alarm", "list"]);
    assert!(listed.stdout.contains("alarm:NOSPACE"), "{listed:?}");
    // The alarm is kept across a restart (etcd's alarm bucket), and shown by endpoint status.
    let mut server = server;
    server.restart();
    let mut client = connect(&server, Duration::from_secs(10)).await;
    let err = client.put("small", "1", None).await.unwrap_err();
    assert!(err.to_string().contains("database space exceeded"), "{err}");
    assert_eq!(server.etcdctl(&["alarm", "list"]).stdout, listed.stdout);
    let status = server.etcdctl(&["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        status[0]["Status"]["errors"][0].as_str().map(str::trim_end),
        Some(listed.stdout.trim_end()),
        "{status}"
    );

    // Deletes still work; after a compaction and a defragmentation free space and the alarm is
    // disarmed, writes work again (etcd's procedure: the quota counts the db's size).
    let del = client
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), written as i64);
    let rev = del.header().unwrap().revision();
    // Physical: the answer waits until the compacted versions are deleted (in batches, after
    // the answer to a plain compaction), as an operator's `etcdctl compact --physical`.
    client
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    let defrag = server.etcdctl(&["defrag"]);
    assert!(defrag.success(), "{defrag:?}");
    let disarmed = server.etcdctl(&["alarm", "disarm"]);
    assert!(disarmed.stdout.contains("alarm:NOSPACE"), "{disarmed:?}");
    assert_eq!(server.etcdctl(&["alarm", "list"]).stdout, "");
    let put = client.put("small", "1", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), rev + 1);
}

/// AlarmRequest ACTIVATE of CORRUPT, against etcd too: every write is refused with etcd's
/// DataLoss answer, reads go on, `/health` and `alarm list` show it, a deactivation clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activated_corrupt_alarm_refuses_writes_until_deactivated() {
    for kind in [Kind::Etcd, Kind::Retcd] {
        corrupt_until_deactivated(kind).await;
    }
}

async fn corrupt_until_deactivated(kind: Kind) {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let server = Server::start_in_tempdir(kind);
    let mut client = connect(&server, Duration::from_secs(10)).await;
    client.put("k", "1", None).await.unwrap();
    let id = client.member_list().await.unwrap().members()[0].id();
    let opts = || {
        let mut o = AlarmOptions::new();
        o.with_member(id);
        Some(o)
    };
    let raised = client
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, opts())
        .await
        .unwrap();
    assert_eq!(raised.alarms().len(), 1, "{kind:?}");
    assert_eq!(raised.alarms()[0].member_id(), id);
    // Raised already: the answer names it again.
    let again = client
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, opts())
        .await
        .unwrap();
    assert_eq!(again.alarms().len(), 1, "{kind:?}");
    for write in [
        client.put("k", "2", None).await.map(|_| ()),
        client.delete("k", None).await.map(|_| ()),
    ] {
        let Err(etcd_client::Error::GRpcStatus(st)) = write else {
            panic!("{kind:?}: {write:?}")
        };
        assert_eq!(format!("{:?}", st.code()), "DataLoss");
        assert_eq!(st.message(), "etcdserver: corrupt cluster");
    }
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"1");
    assert_eq!(
        server.etcdctl(&["alarm", "list"]).stdout,
        format!("memberID:{id} alarm:CORRUPT \n")
    );
    let health = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("{}/health", server.client_url()))
        .output()
        .expect("curl (Debian: curl)");
    let health = String::from_utf8_lossy(&health.stdout);
    // etcd 3.5's body names the reason (3.4's, the etcd here, does not).
    assert!(
        health.starts_with(r#"{"health":"false""#),
        "{kind:?}: {health}"
    );
    if kind == Kind::Retcd {
        assert_eq!(
            health,
            "{\"health\":\"false\",\"reason\":\"ALARM CORRUPT\"}\n"
        );
    }
    let cleared = client
        .alarm(AlarmAction::Deactivate, AlarmType::Corrupt, opts())
        .await
        .unwrap();
    assert_eq!(cleared.alarms().len(), 1);
    client.put("k", "2", None).await.unwrap();
    assert_eq!(server.etcdctl(&["alarm", "list"]).stdout, "");
}
