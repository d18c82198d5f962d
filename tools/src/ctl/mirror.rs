//! `make-mirror`: etcdctl's mirror of a prefix into another cluster — a base copy of every key
//! at one revision, then the watch from the next revision, each revision's events applied at the
//! destination as one transaction, the running count of mirrored keys printed every 30 s. It
//! runs until an error (a compacted watch included).

use std::time::Duration;

use retcd_net::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchRequest, kv_client::KvClient, request_op, watch_request,
};

use super::client::connect_endpoint;
use super::flags::{Kind, Parsed, Spec, spec};
use super::print::{self, Printed, Printer};
use super::rawarg::bytes;
use super::usage::about;
use super::{Cmd, runtime};
use crate::output::Failure;

pub const COMMANDS: &[Cmd] = &[Cmd {
    about: about(
        "make-mirror",
        "[options] <destination>",
        "Makes a mirror at the destination etcd cluster",
    ),
    flags: FLAGS,
    run: make_mirror,
}];

const FLAGS: &[Spec] = &[
    spec("prefix", Kind::Str, "", "Key-value prefix to mirror"),
    spec(
        "dest-prefix",
        Kind::Str,
        "",
        "destination prefix to mirror a prefix to a different prefix in the destination cluster",
    ),
    spec(
        "no-dest-prefix",
        Kind::Bool,
        "false",
        "mirror key-values to the root of the destination cluster",
    ),
    spec(
        "dest-cert",
        Kind::Str,
        "",
        "Identify secure client using this TLS certificate file for the destination cluster",
    ),
    spec(
        "dest-key",
        Kind::Str,
        "",
        "Identify secure client using this TLS key file",
    ),
    spec(
        "dest-cacert",
        Kind::Str,
        "",
        "Verify certificates of TLS enabled secure servers using this CA bundle",
    ),
    spec(
        "dest-insecure-transport",
        Kind::Bool,
        "true",
        "Disable transport security for client connections",
    ),
];

/// Keys read per range request of the base copy (clientv3's mirror batch).
const BATCH: i64 = 1000;

fn make_mirror(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    let [dest] = p.args.as_slice() else {
        return Err(Failure::bad_args(
            "make-mirror takes one destination argument",
        ));
    };
    // The destination's own TLS settings; no user there (3.4 has no --dest-user).
    let dp = p
        .with("cacert", p.str("dest-cacert"))
        .with("cert", p.str("dest-cert"))
        .with("key", p.str("dest-key"))
        .with("insecure-transport", p.str("dest-insecure-transport"))
        .with("user", "")
        .with("password", "");
    let prefix = p.str("prefix").to_string();
    let rt = runtime()?;
    rt.block_on(async {
        // etcdctl mirrors with no deadline on any call (its watch would end with one).
        let mut src = super::client::connect(p).await?;
        let mut dst = connect_endpoint(&dp, dest).await?;
        src.command_timeout = None;
        dst.command_timeout = None;
        if !p.str("dest-prefix").is_empty() && p.bool("no-dest-prefix") {
            return Err(Failure::bad_args(
                "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
            ));
        }
        let dest_prefix = if p.bool("no-dest-prefix") {
            String::new()
        } else if p.str("dest-prefix").is_empty() {
            prefix.clone()
        } else {
            p.str("dest-prefix").to_string()
        };
        // strings.Replace(key, prefix, destPrefix, 1), on bytes.
        let (from, to) = (bytes(&prefix), bytes(&dest_prefix));
        let rename = |k: &[u8]| -> Vec<u8> {
            let at = if from.is_empty() {
                Some(0)
            } else {
                k.windows(from.len()).position(|w| w == from.as_slice())
            };
            match at {
                Some(i) => [&k[..i], to.as_slice(), &k[i + from.len()..]].concat(),
                None => k.to_vec(),
            }
        };
        let (key, range_end) = retcd_net::keys::prefix_range(&from);
        let mut skv = src.kv();
        let mut dkv = dst.kv();
        let total = std::cell::Cell::new(0u64);
        let reporter = async {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                print::emit(format!("{}\n", total.get()).as_bytes());
            }
        };
        let work = async {
            // The base copy, at the revision of the first read.
            let mut revision = 0;
            let mut from = key.clone();
            loop {
                let r = src
                    .call(skv.range(src.request(RangeRequest {
                        key: from.clone(),
                        range_end: range_end.clone(),
                        limit: BATCH,
                        revision,
                        ..Default::default()
                    })))
                    .await?;
                if revision == 0 {
                    revision = r.header.as_ref().map_or(0, |h| h.revision);
                }
                for kv in &r.kvs {
                    dst.call(dkv.put(dst.request(PutRequest {
                        key: rename(&kv.key),
                        value: kv.value.clone(),
                        ..Default::default()
                    })))
                    .await?;
                    total.set(total.get() + 1);
                }
                match r.kvs.last() {
                    Some(last) if r.more => {
                        from = last.key.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
            // Then every change after it.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let _ = tx
                .send(WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(
                        WatchCreateRequest {
                            key: key.clone(),
                            range_end: range_end.clone(),
                            start_revision: revision + 1,
                            ..Default::default()
                        },
                    )),
                })
                .await;
            let mut w = src.watch();
            let req = src.request(tokio_stream::wrappers::ReceiverStream::new(rx));
            let mut stream = w
                .watch(req)
                .await
                .map_err(|s| super::client::status_text(&s))?
                .into_inner();
            loop {
                let r = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err("watch closed".to_string()),
                    Err(s) => return Err(super::client::status_text(&s)),
                };
                if r.compact_revision != 0 {
                    return Err("etcdserver: mvcc: required revision has been compacted".into());
                }
                if r.canceled {
                    return Err(format!("watch canceled: {}", r.cancel_reason));
                }
                let mut ops: Vec<RequestOp> = Vec::new();
                let mut last_rev = 0;
                for ev in &r.events {
                    let kv = ev.kv.clone().unwrap_or_default();
                    if last_rev != 0 && kv.mod_revision != last_rev && !ops.is_empty() {
                        commit(&dst, &mut dkv, std::mem::take(&mut ops)).await?;
                    }
                    last_rev = kv.mod_revision;
                    let request = if ev.r#type == 1 {
                        request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                            key: rename(&kv.key),
                            ..Default::default()
                        })
                    } else {
                        request_op::Request::RequestPut(PutRequest {
                            key: rename(&kv.key),
                            value: kv.value.clone(),
                            ..Default::default()
                        })
                    };
                    ops.push(RequestOp {
                        request: Some(request),
                    });
                    total.set(total.get() + 1);
                }
                if !ops.is_empty() {
                    commit(&dst, &mut dkv, ops).await?;
                }
            }
        };
        tokio::select! {
            r = work => r.map_err(Failure::error),
            _ = reporter => Ok(()),
        }
    })?;
    Ok(Printed::Out(Vec::new()))
}

async fn commit(
    dst: &super::client::Client,
    kv: &mut KvClient<tonic::transport::Channel>,
    ops: Vec<RequestOp>,
) -> Result<(), String> {
    dst.call(kv.txn(dst.request(TxnRequest {
        compare: Vec::new(),
        success: ops,
        failure: Vec::new(),
    })))
    .await?;
    Ok(())
}
