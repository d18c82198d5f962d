//! `lease grant|revoke|timetolive|list|keep-alive`: etcdctl's lease commands. Lease ids are
//! signed 64-bit hexadecimal on the command line; the clientv3 structs etcdctl prints embed the
//! response header, so their json has its fields at the top level.

use std::fmt::Write as _;

use retcd_net::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
};

use super::client::KeepAlive;
use super::flags::{Kind, Parsed, Spec, go_parse_int, spec};
use super::print::{self, Json, Printed, Printer, fields_header, go_quote};
use super::usage::about;
use super::{Cmd, connected, connected_no_timeout};
use crate::output::{Failure, Format, exit};

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: about("lease grant", "<ttl>", "Creates leases"),
        flags: &[],
        run: grant,
    },
    Cmd {
        about: about("lease revoke", "<leaseID>", "Revokes leases"),
        flags: &[],
        run: revoke,
    },
    Cmd {
        about: about(
            "lease timetolive",
            "<leaseID> [options]",
            "Get lease information",
        ),
        flags: &[spec(
            "keys",
            Kind::Bool,
            "false",
            "Get keys attached to this lease",
        )],
        run: timetolive,
    },
    Cmd {
        about: about("lease list", "", "List all active leases"),
        flags: &[],
        run: list,
    },
    Cmd {
        about: about(
            "lease keep-alive",
            "[options] <leaseID>",
            "Keeps leases alive (renew)",
        ),
        flags: KEEP_ALIVE,
        run: keep_alive,
    },
];

const KEEP_ALIVE: &[Spec] = &[spec(
    "once",
    Kind::Bool,
    "false",
    "Resets the keep-alive time to its original value and exits immediately",
)];

/// etcdctl's leaseFromArgs.
pub fn lease_id(arg: &str) -> Result<i64, Failure> {
    go_parse_int(arg, 16)
        .map_err(|e| Failure::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

fn one_arg(p: &Parsed, message: &str) -> Result<String, Failure> {
    match p.args.as_slice() {
        [a] => Ok(a.clone()),
        _ => Err(Failure::bad_args(message)),
    }
}

fn grant(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let arg = one_arg(p, "lease grant command needs TTL argument")?;
    let ttl = go_parse_int(&arg, 10).map_err(|e| Failure::bad_args(format!("bad TTL ({e})")))?;
    let r = connected(p, |c| async move {
        let mut l = c.lease();
        c.call(l.lease_grant(c.request(LeaseGrantRequest { ttl, id: 0 })))
            .await
    })
    .map_err(|f| Failure::error(format!("failed to grant lease ({})", f.message)))?;
    if printer.format == Format::Protobuf {
        return Ok(Printed::Out(header_bytes(r.header.as_ref())));
    }
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = writeln!(o, "lease {:016x} granted with TTL({}s)", r.id, r.ttl);
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            let _ = writeln!(o, "\"ID\" : {}", r.id);
            let _ = writeln!(o, "\"TTL\" : {}", r.ttl);
        }),
        |j| {
            j.header_fields(r.header.as_ref());
            j.num_always("ID", r.id);
            j.num_always("TTL", r.ttl);
            j.str_always("Error", &r.error);
        },
    ))
}

/// clientv3's lease structs marshal to protobuf as their embedded header alone.
fn header_bytes(h: Option<&retcd_net::pb::etcdserverpb::ResponseHeader>) -> Vec<u8> {
    prost::Message::encode_to_vec(&h.cloned().unwrap_or_default())
}

fn revoke(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let arg = one_arg(p, "lease revoke command needs 1 argument")?;
    let id = lease_id(&arg)?;
    let r = connected(p, |c| async move {
        let mut l = c.lease();
        c.call(l.lease_revoke(c.request(LeaseRevokeRequest { id })))
            .await
    })
    .map_err(|f| Failure::error(format!("failed to revoke lease ({})", f.message)))?;
    if printer.format == Format::Protobuf {
        let h = r.header.unwrap_or_default();
        return Ok(Printed::Unsupported(format!(
            "marshal unsupported for type clientv3.LeaseRevokeResponse ({{cluster_id:{} \
             member_id:{} revision:{} raft_term:{} }})",
            h.cluster_id, h.member_id, h.revision, h.raft_term
        )));
    }
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = writeln!(o, "lease {id:016x} revoked");
        },
        Some(&|o| fields_header(o, r.header.as_ref())),
        |j| j.header(r.header.as_ref()),
    ))
}

/// An RPC error of the commands etcdctl ends with ExitBadConnection.
fn bad_connection(f: Failure) -> Failure {
    Failure {
        code: exit::BAD_CONNECTION,
        message: f.message,
    }
}

fn timetolive(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let arg = one_arg(p, "lease timetolive command needs lease ID as argument")?;
    let id = lease_id(&arg)?;
    let keys = p.bool("keys");
    let r = connected_no_timeout(p, |c| async move {
        let mut l = c.lease();
        c.call(l.lease_time_to_live(c.request(LeaseTimeToLiveRequest { id, keys })))
            .await
    })
    .map_err(bad_connection)?;
    if printer.format == Format::Protobuf {
        return Ok(Printed::Out(header_bytes(r.header.as_ref())));
    }
    let key_strings: Vec<String> = r
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    Ok(printer.rpc(
        &r,
        |o| {
            if r.granted_ttl == 0 && r.ttl == -1 {
                let _ = writeln!(o, "lease {:016x} already expired", r.id);
                return;
            }
            let _ = write!(
                o,
                "lease {:016x} granted with TTL({}s), remaining({}s)",
                r.id, r.granted_ttl, r.ttl
            );
            if keys {
                let _ = write!(o, ", attached keys([{}])", key_strings.join(" "));
            }
            o.push('\n');
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            let _ = writeln!(o, "\"ID\" : {}", r.id);
            let _ = writeln!(o, "\"TTL\" : {}", r.ttl);
            let _ = writeln!(o, "\"GrantedTTL\" : {}", r.granted_ttl);
            for k in &r.keys {
                let _ = writeln!(o, "\"Key\" : {}", go_quote(k));
            }
        }),
        |j| {
            j.header_fields(r.header.as_ref());
            j.num_always("id", r.id);
            j.num_always("ttl", r.ttl);
            j.num_always("granted-ttl", r.granted_ttl);
            j.key("keys");
            if r.keys.is_empty() {
                j.raw("null");
            } else {
                let items: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| {
                        format!(
                            "\"{}\"",
                            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k)
                        )
                    })
                    .collect();
                j.raw(&format!("[{}]", items.join(",")));
            }
        },
    ))
}

fn list(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let r = connected_no_timeout(p, |c| async move {
        let mut l = c.lease();
        c.call(l.lease_leases(c.request(LeaseLeasesRequest {})))
            .await
    })
    .map_err(bad_connection)?;
    if printer.format == Format::Protobuf {
        return Ok(Printed::Out(header_bytes(r.header.as_ref())));
    }
    Ok(printer.rpc(
        &r,
        |o| {
            let _ = writeln!(o, "found {} leases", r.leases.len());
            for l in &r.leases {
                let _ = writeln!(o, "{:016x}", l.id);
            }
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            for l in &r.leases {
                let _ = writeln!(o, "\"ID\" : {}", l.id);
            }
        }),
        |j| {
            j.header_fields(r.header.as_ref());
            j.objects("leases", &r.leases, Some("[]"), |j, l| {
                j.num_always("id", l.id)
            });
        },
    ))
}

/// One keep-alive response as etcdctl prints it.
fn show_keep_alive(
    printer: &Printer,
    r: &retcd_net::pb::etcdserverpb::LeaseKeepAliveResponse,
) -> Printed {
    if printer.format == Format::Protobuf {
        return Printed::Out(header_bytes(r.header.as_ref()));
    }
    printer.rpc(
        r,
        |o| {
            let _ = writeln!(o, "lease {:016x} keepalived with TTL({})", r.id, r.ttl);
        },
        Some(&|o| {
            fields_header(o, r.header.as_ref());
            let _ = writeln!(o, "\"ID\" : {}", r.id);
            let _ = writeln!(o, "\"TTL\" : {}", r.ttl);
        }),
        |j: &mut Json| {
            j.header_fields(r.header.as_ref());
            j.num_always("ID", r.id);
            j.num_always("TTL", r.ttl);
        },
    )
}

fn keep_alive(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let arg = one_arg(p, "lease keep-alive command needs lease ID as argument")?;
    let id = lease_id(&arg)?;
    let once = p.bool("once");
    let printer = &*printer;
    connected_no_timeout(p, |c| async move {
        let mut stream = KeepAlive::open(&c, id).await?;
        loop {
            let r = match stream.next().await {
                Ok(Some(r)) => r,
                Ok(None) if once => return Err("EOF".to_string()),
                Ok(None) => break,
                Err(s) => return Err(super::client::status_text(&s)),
            };
            if r.ttl <= 0 {
                if once {
                    return Err("etcdserver: requested lease not found".into());
                }
                break;
            }
            match show_keep_alive(printer, &r) {
                Printed::Out(b) => print::emit(&b),
                Printed::Unsupported(why) => return Err(why),
            }
            if once {
                return Ok(());
            }
            if !stream.renew_after(r.ttl).await {
                break;
            }
        }
        if printer.format == Format::Simple {
            print::emit(format!("lease {id:016x} expired or revoked.\n").as_bytes());
        }
        Ok(())
    })
    .map_err(|f| if once { bad_connection(f) } else { f })?;
    Ok(Printed::Out(Vec::new()))
}
