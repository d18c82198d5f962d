//! The Maintenance service's commands: `endpoint health|status|hashkv` (each endpoint on its
//! own connection, `--cluster` for every member's client URLs), `move-leader`, `alarm
//! list|disarm`, `defrag` (online per endpoint, or `--data-dir` offline through retcdutl's
//! defrag), and `snapshot save|status|restore` (status and restore are retcdutl's code).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use retcd_net::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, DefragmentRequest, HashKvRequest, HashKvResponse,
    MemberListRequest, MoveLeaderRequest, RangeRequest, SnapshotRequest, StatusRequest,
    StatusResponse, alarm_request,
};
use sha2::Digest as _;

use super::client::{Client, connect_endpoint};
use super::flags::{Kind, Parsed, Spec, go_parse_uint, spec};
use super::print::{
    self, Json, Printed, Printer, fields_header, go_duration, go_quote, js, zap_info,
};
use super::usage::{About, about};
use super::{CLUSTER, Cmd, connected, panic, runtime};
use crate::output::{Failure, Format, exit, human_bytes, log_info, table};

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: about(
            "endpoint health",
            "",
            "Checks the healthiness of endpoints specified in `--endpoints` flag",
        ),
        flags: &[],
        run: health,
    },
    Cmd {
        about: About {
            long: Some(
                "When --write-out is set to simple, this command prints out comma-separated \
                 status lists for each endpoint.\nThe items in the lists are endpoint, ID, \
                 version, db size, is leader, is learner, raft term, raft index, raft applied \
                 index, errors.",
            ),
            ..about(
                "endpoint status",
                "",
                "Prints out the status of endpoints specified in `--endpoints` flag",
            )
        },
        flags: &[],
        run: status,
    },
    Cmd {
        about: about(
            "endpoint hashkv",
            "",
            "Prints the KV history hash for each endpoint in --endpoints",
        ),
        flags: &[spec(
            "rev",
            Kind::Int,
            "0",
            "maximum revision to hash (default: all revisions)",
        )],
        run: hashkv,
    },
    Cmd {
        about: about(
            "move-leader",
            "<transferee-member-id>",
            "Transfers leadership to another etcd cluster member.",
        ),
        flags: &[],
        run: move_leader,
    },
    Cmd {
        about: about("alarm list", "", "Lists all alarms"),
        flags: &[],
        run: alarm_list,
    },
    Cmd {
        about: about("alarm disarm", "", "Disarms all alarms"),
        flags: &[],
        run: alarm_disarm,
    },
    Cmd {
        about: about(
            "defrag",
            "",
            "Defragments the storage of the etcd members with given endpoints",
        ),
        flags: DEFRAG,
        run: defrag,
    },
    Cmd {
        about: about(
            "snapshot save",
            "<filename>",
            "Stores an etcd node backend snapshot to a given file",
        ),
        flags: &[],
        run: snapshot_save,
    },
    Cmd {
        about: About {
            long: Some(
                "When --write-out is set to simple, this command prints out comma-separated \
                 status lists for each endpoint.\nThe items in the lists are hash, revision, \
                 total keys, total size.",
            ),
            ..about(
                "snapshot status",
                "<filename>",
                "Gets backend snapshot status of a given file",
            )
        },
        flags: &[],
        run: snapshot_status,
    },
    Cmd {
        about: about(
            "snapshot restore",
            "<filename> [options]",
            "Restores an etcd member snapshot to an etcd directory",
        ),
        flags: RESTORE,
        run: snapshot_restore,
    },
];

const DEFRAG: &[Spec] = &[
    CLUSTER[0],
    spec(
        "data-dir",
        Kind::Str,
        "",
        "Optional. If present, defragments a data directory not in use by etcd.",
    ),
];

const RESTORE: &[Spec] = &[
    spec("data-dir", Kind::Str, "", "Path to the data directory"),
    spec(
        "wal-dir",
        Kind::Str,
        "",
        "Path to the WAL directory (use --data-dir if none given)",
    ),
    spec(
        "initial-cluster",
        Kind::Str,
        "default=http://localhost:2380",
        "Initial cluster configuration for restore bootstrap",
    ),
    spec(
        "initial-cluster-token",
        Kind::Str,
        "etcd-cluster",
        "Initial cluster token for the etcd cluster during restore bootstrap",
    ),
    spec(
        "initial-advertise-peer-urls",
        Kind::Str,
        "http://localhost:2380",
        "List of this member's peer URLs to advertise to the rest of the cluster",
    ),
    spec(
        "name",
        Kind::Str,
        "default",
        "Human-readable name for this member",
    ),
    spec(
        "skip-hash-check",
        Kind::Bool,
        "false",
        "Ignore snapshot integrity hash value (required if copied from data directory)",
    ),
];

/// etcdctl's endpointsFromCluster: `--endpoints` as given, or with `--cluster` every member's
/// client URLs (the member list asked without auth).
fn endpoints(p: &Parsed) -> Result<Vec<String>, Failure> {
    if !p.bool("cluster") {
        return Ok(p.list("endpoints"));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let mut last = "context deadline exceeded".to_string();
        for ep in p.list("endpoints") {
            let c = match connect_endpoint(&without_user(p), &ep).await {
                Ok(c) => c,
                Err(e) => {
                    last = e.message;
                    continue;
                }
            };
            let mut m = c.cluster();
            match c
                .call(m.member_list(c.request(MemberListRequest {
                    linearizable: false,
                })))
                .await
            {
                Ok(r) => return Ok(r.members.into_iter().flat_map(|m| m.client_ur_ls).collect()),
                Err(e) => last = e,
            }
        }
        Err(Failure::error(format!(
            "failed to fetch endpoints from etcd cluster member list: {last}"
        )))
    })
}

/// The global flags without `--user` (endpointsFromCluster connects without auth).
fn without_user(p: &Parsed) -> Parsed {
    p.with("user", "")
}

/// Each endpoint with what its call answered.
type PerEndpoint<T> = Vec<(String, Result<T, String>)>;

/// Runs `f` against each endpoint on its own connection, in order.
fn per_endpoint<T>(
    p: &Parsed,
    eps: &[String],
    f: impl AsyncFnMut(&Client, &str) -> Result<T, String>,
) -> Result<PerEndpoint<T>, Failure> {
    let mut f = f;
    let rt = runtime()?;
    Ok(rt.block_on(async {
        let mut out = Vec::new();
        for ep in eps {
            let r = match connect_endpoint(p, ep).await {
                Ok(c) => f(&c, ep).await,
                Err(e) => Err(e.message),
            };
            out.push((ep.clone(), r));
        }
        out
    }))
}

struct Health {
    ep: String,
    health: bool,
    took: String,
    error: String,
}

fn health(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let eps = endpoints(p)?;
    let rt = runtime()?;
    // Checked concurrently; reported in the order they finish, as etcdctl does.
    let list: Vec<Health> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for ep in eps {
            let p = p.clone();
            set.spawn(async move {
                let c = match connect_endpoint(&p, &ep).await {
                    Ok(c) => c,
                    Err(e) => {
                        return Health {
                            ep,
                            health: false,
                            took: String::new(),
                            error: e.message,
                        };
                    }
                };
                let start = Instant::now();
                let mut kv = c.kv();
                let r = c
                    .call(kv.range(c.request(RangeRequest {
                        key: b"health".to_vec(),
                        ..Default::default()
                    })))
                    .await;
                let took = go_duration(start.elapsed());
                match r {
                    Err(e) if e != "etcdserver: permission denied" => Health {
                        ep,
                        health: false,
                        took,
                        error: e,
                    },
                    _ => Health {
                        ep,
                        health: true,
                        took,
                        error: String::new(),
                    },
                }
            });
        }
        let mut v = Vec::new();
        while let Some(h) = set.join_next().await {
            if let Ok(h) = h {
                v.push(h);
            }
        }
        v
    });
    let unhealthy = list.iter().any(|h| !h.error.is_empty());
    let mut o = String::new();
    match printer.format {
        Format::Simple => {
            // etcdctl 3.4 prints these on stderr.
            for h in &list {
                if h.error.is_empty() {
                    eprintln!(
                        "{} is healthy: successfully committed proposal: took = {}",
                        h.ep, h.took
                    );
                } else {
                    eprintln!(
                        "{} is unhealthy: failed to commit proposal: {}",
                        h.ep, h.error
                    );
                }
            }
        }
        Format::Fields => {
            for h in &list {
                let _ = writeln!(o, "\"Endpoint\" : {}", go_quote(h.ep.as_bytes()));
                let _ = writeln!(o, "\"Health\" : {}", h.health);
                let _ = writeln!(o, "\"Took\" : {}", h.took);
                let _ = writeln!(o, "\"Error\" : {}", h.error);
                o.push('\n');
            }
        }
        Format::Json => {
            o = json_array(&list, |j, h| {
                j.str_always("endpoint", &h.ep);
                j.boolean_always("health", h.health);
                j.str_always("took", &h.took);
                j.str("error", &h.error);
            });
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|h| {
                    vec![
                        h.ep.clone(),
                        h.health.to_string(),
                        h.took.clone(),
                        h.error.clone(),
                    ]
                })
                .collect();
            o = table(&["endpoint", "health", "took", "error"], &rows);
        }
        Format::Protobuf => return Ok(printer.unsupported()),
    }
    print::emit(o.as_bytes());
    if unhealthy {
        return Err(Failure::error("unhealthy cluster"));
    }
    Ok(Printed::Out(Vec::new()))
}

fn status(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let eps = endpoints(p)?;
    let results = per_endpoint(p, &eps, async |c: &Client, _ep: &str| {
        let mut m = c.maintenance();
        c.call(m.status(c.request(StatusRequest {}))).await
    })?;
    let mut ok: Vec<(String, StatusResponse)> = Vec::new();
    let mut failed = false;
    for (ep, r) in results {
        match r {
            Ok(s) => ok.push((ep, s)),
            Err(e) => {
                failed = true;
                eprintln!("Failed to get the status of endpoint {ep} ({e})");
            }
        }
    }
    let out = show_status(printer, &ok);
    if failed {
        if let Printed::Out(b) = &out {
            print::emit(b);
        }
        return Err(Failure {
            code: exit::ERROR,
            message: String::new(),
        });
    }
    Ok(out)
}

fn show_status(printer: &Printer, list: &[(String, StatusResponse)]) -> Printed {
    let member = |s: &StatusResponse| s.header.as_ref().map_or(0, |h| h.member_id);
    let row = |ep: &str, s: &StatusResponse| {
        vec![
            ep.to_string(),
            format!("{:x}", member(s)),
            s.version.clone(),
            human_bytes(s.db_size.max(0) as u64),
            (s.leader == member(s)).to_string(),
            s.is_learner.to_string(),
            s.raft_term.to_string(),
            s.raft_index.to_string(),
            s.raft_applied_index.to_string(),
            s.errors.join(", "),
        ]
    };
    let mut o = String::new();
    match printer.format {
        Format::Simple => {
            for (ep, s) in list {
                let _ = writeln!(o, "{}", row(ep, s).join(", "));
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list.iter().map(|(ep, s)| row(ep, s)).collect();
            o = table(
                &[
                    "endpoint",
                    "ID",
                    "version",
                    "db size",
                    "is leader",
                    "is learner",
                    "raft term",
                    "raft index",
                    "raft applied index",
                    "errors",
                ],
                &rows,
            );
        }
        Format::Fields => {
            for (ep, s) in list {
                fields_header(&mut o, s.header.as_ref());
                let _ = writeln!(o, "\"Version\" : {}", go_quote(s.version.as_bytes()));
                let _ = writeln!(o, "\"DBSize\" : {}", s.db_size);
                let _ = writeln!(o, "\"Leader\" : {}", s.leader);
                let _ = writeln!(o, "\"IsLearner\" : {}", s.is_learner);
                let _ = writeln!(o, "\"RaftIndex\" : {}", s.raft_index);
                let _ = writeln!(o, "\"RaftTerm\" : {}", s.raft_term);
                let _ = writeln!(o, "\"RaftAppliedIndex\" : {}", s.raft_applied_index);
                let _ = writeln!(o, "\"Errors\" : [{}]", s.errors.join(" "));
                let _ = writeln!(o, "\"Endpoint\" : {}", go_quote(ep.as_bytes()));
                o.push('\n');
            }
        }
        Format::Json => {
            o = json_array(list, |j, (ep, s)| {
                endpoint_entry(j, ep, "Status", |j| {
                    j.header(s.header.as_ref());
                    j.str("version", &s.version);
                    j.num("dbSize", s.db_size);
                    j.num("leader", s.leader);
                    j.num("raftIndex", s.raft_index);
                    j.num("raftTerm", s.raft_term);
                    j.num("raftAppliedIndex", s.raft_applied_index);
                    j.strs("errors", &s.errors, true);
                    j.num("dbSizeInUse", s.db_size_in_use);
                    j.boolean("isLearner", s.is_learner);
                });
            });
        }
        Format::Protobuf => return printer.unsupported(),
    }
    Printed::Out(o.into_bytes())
}

/// Go's encoding/json of a slice of structs on one line: each object written by `each`, `[]`
/// when there are none (etcdctl's endpoint commands).
fn json_array<T>(items: &[T], each: impl Fn(&mut Json, &T)) -> String {
    let objects: Vec<String> = items
        .iter()
        .map(|x| {
            let mut j = Json::new();
            each(&mut j, x);
            j.close_object()
        })
        .collect();
    format!("[{}]\n", objects.join(","))
}

/// `"Endpoint":<ep>,"<key>":{…}`: etcdctl's epStatus and epHashKV.
fn endpoint_entry(j: &mut Json, ep: &str, key: &str, body: impl FnOnce(&mut Json)) {
    j.str_always("Endpoint", ep);
    j.key(key);
    j.open();
    body(j);
    j.close();
}

fn hashkv(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let eps = endpoints(p)?;
    let revision = p.int("rev");
    let results = per_endpoint(p, &eps, async |c: &Client, _ep: &str| {
        let mut m = c.maintenance();
        c.call(m.hash_kv(c.request(HashKvRequest { revision })))
            .await
    })?;
    let mut ok: Vec<(String, HashKvResponse)> = Vec::new();
    let mut last = None;
    for (ep, r) in results {
        match r {
            Ok(h) => ok.push((ep, h)),
            Err(e) => {
                eprintln!("Failed to get the hash of endpoint {ep} ({e})");
                last = Some(e);
            }
        }
    }
    let mut o = String::new();
    match printer.format {
        Format::Simple => {
            for (ep, h) in &ok {
                let _ = writeln!(o, "{ep}, {}", h.hash);
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = ok
                .iter()
                .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
                .collect();
            o = table(&["endpoint", "hash"], &rows);
        }
        Format::Fields => {
            for (ep, h) in &ok {
                fields_header(&mut o, h.header.as_ref());
                let _ = writeln!(o, "\"Endpoint\" : {}", go_quote(ep.as_bytes()));
                let _ = writeln!(o, "\"Hash\" : {}", h.hash);
                o.push('\n');
            }
        }
        Format::Json => {
            o = json_array(&ok, |j, (ep, h)| {
                endpoint_entry(j, ep, "HashKV", |j| {
                    j.header(h.header.as_ref());
                    j.num("hash", h.hash);
                    j.num("compact_revision", h.compact_revision);
                });
            });
        }
        Format::Protobuf => return Ok(printer.unsupported()),
    }
    if let Some(e) = last {
        print::emit(o.as_bytes());
        return Err(Failure::error(e));
    }
    Ok(Printed::Out(o.into_bytes()))
}

fn move_leader(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let [arg] = p.args.as_slice() else {
        return Err(Failure::bad_args("move-leader command needs 1 argument"));
    };
    let target = go_parse_uint(arg, 16).map_err(Failure::bad_args)?;
    let eps = p.list("endpoints");
    let rt = runtime()?;
    let found = rt.block_on(async {
        for ep in &eps {
            let c = connect_endpoint(p, ep).await?;
            let mut m = c.maintenance();
            let s = c
                .call(m.status(c.request(StatusRequest {})))
                .await
                .map_err(Failure::error)?;
            if s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
                return Ok(Some((c, s.leader)));
            }
        }
        Ok::<_, Failure>(None)
    })?;
    let Some((c, leader)) = found else {
        return Err(Failure::bad_args(format!(
            "no leader endpoint given at [{}]",
            eps.join(" ")
        )));
    };
    let r = rt
        .block_on(async {
            let mut m = c.maintenance();
            c.call(m.move_leader(c.request(MoveLeaderRequest { target_id: target })))
                .await
        })
        .map_err(Failure::error)?;
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = writeln!(o, "Leadership transferred from {leader:x} to {target:x}");
        },
        None,
        |j| j.header(r.header.as_ref()),
    ))
}

fn no_args(p: &Parsed, command: &str) -> Result<(), Failure> {
    if p.args.is_empty() {
        Ok(())
    } else {
        Err(Failure::bad_args(format!(
            "{command} command accepts no arguments"
        )))
    }
}

/// An alarm as Go's `%+v` of the proto message prints it: `memberID:N alarm:NOSPACE `.
fn alarm_text(a: &AlarmMember) -> String {
    let mut s = String::new();
    if a.member_id != 0 {
        let _ = write!(s, "memberID:{} ", a.member_id);
    }
    if a.alarm != 0 {
        let name = retcd_net::pb::etcdserverpb::AlarmType::try_from(a.alarm)
            .map_or_else(|_| a.alarm.to_string(), |t| t.as_str_name().to_string());
        let _ = write!(s, "alarm:{name} ");
    }
    s
}

fn show_alarms(printer: &Printer, r: &AlarmResponse) -> Result<Printed, Failure> {
    if printer.format == Format::Fields && r.header.is_none() {
        return Err(panic(
            "runtime error: invalid memory address or nil pointer dereference",
        ));
    }
    Ok(printer.rpc(
        r,
        |o| {
            for a in &r.alarms {
                let _ = writeln!(o, "{}", alarm_text(a));
            }
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            for a in &r.alarms {
                let _ = writeln!(o, "\"MemberID\" : {}", a.member_id);
                let t = retcd_net::pb::etcdserverpb::AlarmType::try_from(a.alarm)
                    .map_or_else(|_| a.alarm.to_string(), |t| t.as_str_name().to_string());
                let _ = writeln!(o, "\"AlarmType\" : {t}");
                o.push('\n');
            }
        }),
        |j| {
            j.header(r.header.as_ref());
            j.objects("alarms", &r.alarms, None, |j, a| {
                j.num("memberID", a.member_id);
                j.num("alarm", a.alarm);
            });
        },
    ))
}

fn alarm_request(action: alarm_request::AlarmAction, a: &AlarmMember) -> AlarmRequest {
    AlarmRequest {
        action: action as i32,
        member_id: a.member_id,
        alarm: a.alarm,
    }
}

fn alarm_list(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "alarm list")?;
    let r = connected(p, |c| async move {
        let mut m = c.maintenance();
        let req = alarm_request(alarm_request::AlarmAction::Get, &AlarmMember::default());
        c.call(m.alarm(c.request(req))).await
    })?;
    show_alarms(printer, &r)
}

/// clientv3's AlarmDisarm of no alarm in particular: every listed alarm deactivated one by one,
/// the answers gathered into a response without a header.
fn alarm_disarm(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    no_args(p, "alarm disarm")?;
    let r = connected(p, |c| async move {
        let mut m = c.maintenance();
        let req = alarm_request(alarm_request::AlarmAction::Get, &AlarmMember::default());
        let list = c.call(m.alarm(c.request(req))).await?;
        let mut all = AlarmResponse::default();
        for a in &list.alarms {
            let req = alarm_request(alarm_request::AlarmAction::Deactivate, a);
            let r = c.call(m.alarm(c.request(req))).await?;
            all.alarms.extend(r.alarms);
        }
        Ok(all)
    })?;
    show_alarms(printer, &r)
}

fn defrag(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    let data_dir = p.str("data-dir");
    if !data_dir.is_empty() {
        if let Err(e) = crate::defrag::defrag(Path::new(data_dir)) {
            eprintln!("Failed to defragment etcd data[{data_dir}] ({e})");
            return Err(quiet_exit());
        }
        return Ok(Printed::Out(Vec::new()));
    }
    let eps = endpoints(p)?;
    let results = per_endpoint(p, &eps, async |c: &Client, _ep: &str| {
        let mut m = c.maintenance();
        c.call(m.defragment(c.request(DefragmentRequest {}))).await
    })?;
    let mut failures = 0;
    for (ep, r) in results {
        match r {
            Ok(_) => print::emit(format!("Finished defragmenting etcd member[{ep}]\n").as_bytes()),
            Err(e) => {
                failures += 1;
                eprintln!("Failed to defragment etcd member[{ep}] ({e})");
            }
        }
    }
    if failures > 0 {
        return Err(quiet_exit());
    }
    Ok(Printed::Out(Vec::new()))
}

/// Exit 1 without an `Error:` line (etcdctl's `os.Exit(ExitError)`).
fn quiet_exit() -> Failure {
    Failure {
        code: exit::ERROR,
        message: String::new(),
    }
}

fn snapshot_save(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    let [file] = p.args.as_slice() else {
        return Err(Failure::bad_args("snapshot save expects one argument"));
    };
    let interrupted = |message: String| Failure {
        code: exit::INTERRUPTED,
        message,
    };
    let eps = p.list("endpoints");
    if eps.len() != 1 {
        return Err(interrupted(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            eps.join(" ")
        )));
    }
    let path = PathBuf::from(file);
    let part = PathBuf::from(format!("{file}.part"));
    let r = save(p, &eps[0], &path, &part);
    // Whatever happened, no partial file stays behind (and never under the final name).
    let _ = std::fs::remove_file(&part);
    r.map_err(interrupted)?;
    Ok(Printed::Out(
        format!("Snapshot saved at {file}\n").into_bytes(),
    ))
}

fn save(p: &Parsed, ep: &str, path: &Path, part: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = part.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(part)
        .map_err(|e| {
            format!(
                "could not open {shown} (open {shown}: {})",
                crate::snapshot::go_io_error(&e)
            )
        })?;
    zap_info(
        "snapshot/v3_snapshot.go:119",
        "created temporary db file",
        &[("path", js(&shown))],
    );
    let started = Instant::now();
    let rt = runtime().map_err(|f| f.message)?;
    let size = rt.block_on(async {
        let mut c = connect_endpoint(p, ep).await.map_err(|f| f.message)?;
        // etcdctl: no deadline for a snapshot unless --command-timeout is given.
        if !p.given("command-timeout") {
            c.command_timeout = None;
        }
        let mut m = c.maintenance();
        let mut stream = m
            .snapshot(c.request(SnapshotRequest {}))
            .await
            .map_err(|s| super::client::status_text(&s))?
            .into_inner();
        zap_info(
            "clientv3/maintenance.go:200",
            "opened snapshot stream; downloading",
            &[],
        );
        zap_info(
            "snapshot/v3_snapshot.go:127",
            "fetching snapshot",
            &[("endpoint", js(ep))],
        );
        let mut sha = sha2::Sha256::new();
        // The last 32 bytes seen so far: the sha256 trailer once the stream ends.
        let mut tail: Vec<u8> = Vec::with_capacity(64);
        let mut size = 0u64;
        let mut progress: Option<crate::output::Progress> = None;
        loop {
            let chunk = match stream.message().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(s) => return Err(super::client::status_text(&s)),
            };
            let bar = progress.get_or_insert_with(|| {
                crate::output::Progress::new(chunk.blob.len() as u64 + chunk.remaining_bytes)
            });
            bar.add(chunk.blob.len() as u64);
            f.write_all(&chunk.blob).map_err(|e| e.to_string())?;
            size += chunk.blob.len() as u64;
            tail.extend_from_slice(&chunk.blob);
            if tail.len() > 32 {
                let n = tail.len() - 32;
                sha.update(&tail[..n]);
                tail.drain(..n);
            }
        }
        if let Some(bar) = progress.as_mut() {
            bar.finish();
        }
        zap_info(
            "clientv3/maintenance.go:208",
            "completed snapshot read; closing",
            &[],
        );
        // clientv3's snapshot.Save checks the same trailer (v3_snapshot.go).
        if tail.len() != 32 {
            return Err(format!("sha256 checksum not found [bytes: {size}]"));
        }
        if sha.finalize().as_slice() != tail.as_slice() {
            return Err("expected sha256 checksum does not match the snapshot stream".to_string());
        }
        Ok(size)
    })?;
    f.sync_all().map_err(|e| e.to_string())?;
    drop(f);
    zap_info(
        "snapshot/v3_snapshot.go:142",
        "fetched snapshot",
        &[
            ("endpoint", js(ep)),
            ("size", js(&human_bytes(size))),
            ("took", started.elapsed().as_secs_f64().to_string()),
        ],
    );
    std::fs::rename(part, path)
        .map_err(|e| format!("could not rename {shown} to {} ({e})", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = retcd::import::sync_dir(dir);
    }
    zap_info(
        "snapshot/v3_snapshot.go:152",
        "saved",
        &[("path", js(&path.display().to_string()))],
    );
    Ok(())
}

fn snapshot_status(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let [file] = p.args.as_slice() else {
        return Err(Failure::bad_args(
            "snapshot status requires exactly one argument",
        ));
    };
    let text = crate::snapshot::status(Path::new(file), printer.format)?;
    Ok(Printed::Out(text.into_bytes()))
}

fn snapshot_restore(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    let [file] = p.args.as_slice() else {
        return Err(Failure::bad_args(
            "snapshot restore requires exactly one argument",
        ));
    };
    let dir = |name: &str| (!p.str(name).is_empty()).then(|| PathBuf::from(p.str(name)));
    let o = crate::restore::RestoreOptions {
        file: PathBuf::from(file),
        name: p.str("name").to_string(),
        data_dir: dir("data-dir"),
        wal_dir: dir("wal-dir"),
        initial_cluster: p.str("initial-cluster").to_string(),
        initial_cluster_token: p.str("initial-cluster-token").to_string(),
        initial_advertise_peer_urls: p.str("initial-advertise-peer-urls").to_string(),
        skip_hash_check: p.bool("skip-hash-check"),
    };
    log_info("restoring snapshot", &[("path", file)]);
    let r = crate::restore::restore(&o)?;
    log_info(
        "restored snapshot",
        &[
            ("path", file),
            ("data-dir", &r.data_dir.display().to_string()),
            ("member-id", &format!("{:x}", r.member_id)),
            ("cluster-id", &format!("{:x}", r.cluster_id)),
        ],
    );
    Ok(Printed::Out(Vec::new()))
}
