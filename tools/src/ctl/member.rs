//! `member add|remove|update|promote|list`: etcdctl's membership commands. Member ids are
//! unsigned 64-bit hexadecimal on the command line, `%16x` (space-padded) in the add, remove,
//! update and promote lines and `%x` in the list.

use std::fmt::Write as _;

use retcd_net::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest,
};

use super::flags::{Kind, Parsed, Spec, go_parse_uint, spec};
use super::print::{Json, Printed, Printer, fields_header, go_quote};
use super::usage::{About, about};
use super::{Cmd, connected, panic};
use crate::output::{Failure, Format, table};

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: about(
            "member add",
            "<memberName> [options]",
            "Adds a member into the cluster",
        ),
        flags: &[
            spec(
                "peer-urls",
                Kind::Str,
                "",
                "comma separated peer URLs for the new member.",
            ),
            spec(
                "learner",
                Kind::Bool,
                "false",
                "indicates if the new member is raft learner",
            ),
        ],
        run: add,
    },
    Cmd {
        about: about(
            "member remove",
            "<memberID>",
            "Removes a member from the cluster",
        ),
        flags: &[],
        run: remove,
    },
    Cmd {
        about: about(
            "member update",
            "<memberID> [options]",
            "Updates a member in the cluster",
        ),
        flags: UPDATE,
        run: update,
    },
    Cmd {
        about: About {
            long: Some("Promotes a non-voting learner member to a voting one in the cluster."),
            ..about(
                "member promote",
                "<memberID>",
                "Promotes a non-voting member in the cluster",
            )
        },
        flags: &[],
        run: promote,
    },
    Cmd {
        about: About {
            long: Some(
                "When --write-out is set to simple, this command prints out comma-separated \
                 member lists for each endpoint.\nThe items in the lists are ID, Status, Name, \
                 Peer Addrs, Client Addrs, Is Learner.",
            ),
            ..about("member list", "", "Lists all members in the cluster")
        },
        flags: &[],
        run: list,
    },
];

const UPDATE: &[Spec] = &[spec(
    "peer-urls",
    Kind::Str,
    "",
    "comma separated peer URLs for the updated member.",
)];

/// A member id argument (`member remove|update|promote`).
fn member_id(p: &Parsed) -> Result<u64, Failure> {
    let [arg] = p.args.as_slice() else {
        return Err(Failure::bad_args("member ID is not provided"));
    };
    go_parse_uint(arg, 16)
        .map_err(|e| Failure::bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

fn peer_urls(p: &Parsed) -> Result<Vec<String>, Failure> {
    let urls = p.str("peer-urls");
    if urls.is_empty() {
        return Err(Failure::bad_args("member peer urls not provided"));
    }
    Ok(urls.split(',').map(str::to_string).collect())
}

/// clientv3's check of peer URLs before it sends them (etcd's types.NewURLs): a 3.4 server
/// would take a malformed one and lose the member.
fn check_urls(urls: &[String]) -> Result<(), Failure> {
    for u in urls {
        let u = u.trim();
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "http" | "https" | "unix" | "unixs"
        ) {
            return Err(Failure::error(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            )));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (host, tail) = rest.split_at(end);
        let host_port = match host.strip_prefix('[') {
            Some(b) => b.split_once("]:").is_some(),
            None => host.split(':').count() == 2,
        };
        if !host_port {
            return Err(Failure::error(format!(
                "URL address does not have the form \"host:port\": {u}"
            )));
        }
        if tail.starts_with('/') {
            return Err(Failure::error(format!("URL must not contain a path: {u}")));
        }
    }
    Ok(())
}

fn add(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let name = match p.args.as_slice() {
        [] => return Err(Failure::bad_args("member name not provided")),
        [n] => n.clone(),
        args => {
            let mut e = "too many arguments".to_string();
            for a in args {
                if a.to_lowercase().starts_with("http") {
                    let _ = write!(e, ", did you mean --peer-urls={a}");
                }
            }
            return Err(Failure::bad_args(e));
        }
    };
    let urls = peer_urls(p)?;
    check_urls(&urls)?;
    let req = MemberAddRequest {
        peer_ur_ls: urls,
        is_learner: p.bool("learner"),
    };
    let r = connected(p, |c| async move {
        let mut m = c.cluster();
        c.call(m.member_add(c.request(req))).await
    })?;
    let new = r.member.clone().unwrap_or_default();
    let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = writeln!(o, "Member {:16x} added to cluster {cluster:16x}", new.id);
            let mut conf = Vec::new();
            for m in &r.members {
                for u in &m.peer_ur_ls {
                    let n = if m.id == new.id { &name } else { &m.name };
                    conf.push(format!("{n}={u}"));
                }
            }
            o.push('\n');
            let _ = writeln!(o, "ETCD_NAME={}", go_quote(name.as_bytes()));
            let _ = writeln!(
                o,
                "ETCD_INITIAL_CLUSTER={}",
                go_quote(conf.join(",").as_bytes())
            );
            let _ = writeln!(
                o,
                "ETCD_INITIAL_ADVERTISE_PEER_URLS={}",
                go_quote(p.str("peer-urls").as_bytes())
            );
            o.push_str("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n");
        },
        None,
        |j| {
            j.header(r.header.as_ref());
            if let Some(m) = &r.member {
                j.key("member");
                j.open();
                json_member(j, m);
                j.close();
            }
            j.objects("members", &r.members, None, json_member);
        },
    ))
}

fn remove(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let id = member_id(p)?;
    let r = connected(p, |c| async move {
        let mut m = c.cluster();
        c.call(m.member_remove(c.request(MemberRemoveRequest { id })))
            .await
    })?;
    Ok(changed(
        printer,
        &r,
        r.header.as_ref(),
        &r.members,
        id,
        "removed from",
    ))
}

fn update(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let id = member_id(p)?;
    let urls = peer_urls(p)?;
    check_urls(&urls)?;
    let r = connected(p, |c| async move {
        let mut m = c.cluster();
        c.call(m.member_update(c.request(MemberUpdateRequest {
            id,
            peer_ur_ls: urls,
        })))
        .await
    })?;
    Ok(changed(
        printer,
        &r,
        r.header.as_ref(),
        &r.members,
        id,
        "updated in",
    ))
}

/// The output of a remove or an update: `Member %16x <what> cluster %16x`, or the response's
/// header and members.
fn changed(
    printer: &Printer,
    r: &impl prost::Message,
    header: Option<&retcd_net::pb::etcdserverpb::ResponseHeader>,
    members: &[Member],
    id: u64,
    what: &str,
) -> Printed {
    let cluster = header.map_or(0, |h| h.cluster_id);
    printer.rpc(
        r,
        |o| {
            let _ = writeln!(o, "Member {id:16x} {what} cluster {cluster:16x}");
        },
        None,
        |j| {
            j.header(header);
            j.objects("members", members, None, json_member);
        },
    )
}

fn promote(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let id = member_id(p)?;
    let r = connected(p, |c| async move {
        let mut m = c.cluster();
        c.call(m.member_promote(c.request(MemberPromoteRequest { id })))
            .await
    })?;
    if printer.format != Format::Simple {
        // etcdctl 3.4 has no printer for it in the other formats.
        return Err(panic(
            "runtime error: invalid memory address or nil pointer dereference",
        ));
    }
    let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
    Ok(Printed::Out(
        format!("Member {id:16x} promoted in cluster {cluster:16x}\n").into_bytes(),
    ))
}

fn list(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let r = connected(p, |c| async move {
        let mut m = c.cluster();
        c.call(m.member_list(c.request(MemberListRequest {
            linearizable: false,
        })))
        .await
    })?;
    let rows = || -> Vec<Vec<String>> {
        r.members
            .iter()
            .map(|m| {
                vec![
                    format!("{:x}", m.id),
                    if m.name.is_empty() {
                        "unstarted"
                    } else {
                        "started"
                    }
                    .to_string(),
                    m.name.clone(),
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner.to_string(),
                ]
            })
            .collect()
    };
    if printer.format == Format::Table {
        return Ok(Printed::Out(
            table(
                &[
                    "ID",
                    "Status",
                    "Name",
                    "Peer Addrs",
                    "Client Addrs",
                    "Is Learner",
                ],
                &rows(),
            )
            .into_bytes(),
        ));
    }
    Ok(printer.rpc(
        &r,
        |o| {
            for row in rows() {
                let _ = writeln!(o, "{}", row.join(", "));
            }
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            for m in &r.members {
                let _ = writeln!(o, "\"ID\" : {}", m.id);
                let _ = writeln!(o, "\"Name\" : {}", go_quote(m.name.as_bytes()));
                for u in &m.peer_ur_ls {
                    let _ = writeln!(o, "\"PeerURL\" : {}", go_quote(u.as_bytes()));
                }
                for u in &m.client_ur_ls {
                    let _ = writeln!(o, "\"ClientURL\" : {}", go_quote(u.as_bytes()));
                }
                let _ = writeln!(o, "\"IsLearner\" : {}", m.is_learner);
                o.push('\n');
            }
        }),
        |j| {
            j.header(r.header.as_ref());
            j.objects("members", &r.members, None, json_member);
        },
    ))
}

/// etcdserverpb.Member's json fields.
pub fn json_member(j: &mut Json, m: &Member) {
    j.num("ID", m.id);
    j.str("name", &m.name);
    j.strs("peerURLs", &m.peer_ur_ls, true);
    j.strs("clientURLs", &m.client_ur_ls, true);
    j.boolean("isLearner", m.is_learner);
}
