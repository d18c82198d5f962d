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
