//! `txn`: etcdctl's transaction from standard input — compares, success ops and failure ops,
//! each section ended by an empty line — parsed with etcdctl's grammar and messages (exit 3 for
//! a malformed line), committed with no timeout, printed in every format.

use std::fmt::Write as _;
use std::io::BufRead;

use retcd_net::pb::etcdserverpb::{
    Compare, RequestOp, ResponseOp, TxnRequest, TxnResponse, compare, request_op, response_op,
};

use super::argify::{ArgifyError, argify};
use super::flags::{HELP, Kind, Parsed, Spec, spec};
use super::print::{self, Json, Printed, Printer, go_quote};
use super::rawarg::{bytes, from_bytes};
use super::usage::About;
use super::{Cmd, kv, panic};
use crate::output::{Failure, Format, exit};

pub const COMMANDS: &[Cmd] = &[Cmd {
    about: ABOUT,
    flags: FLAGS,
    run: txn,
}];

pub const ABOUT: About = About {
    path: "txn",
    args: "[options]",
    short: "Txn processes all the requests in one transaction",
    long: None,
};

pub const FLAGS: &[Spec] = &[Spec {
    short: Some('i'),
    ..spec(
        "interactive",
        Kind::Bool,
        "false",
        "Input transaction in interactive mode",
    )
}];

fn invalid(message: String) -> Failure {
    Failure {
        code: exit::INVALID_INPUT,
        message,
    }
}

pub fn txn(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    if !p.args.is_empty() {
        return Err(Failure::bad_args("txn command does not accept argument"));
    }
    let interactive = p.bool("interactive");
    // etcdctl connects (and asks for a password) before it reads the transaction.
    let resp = super::connect_and(p, false, |c| async move {
        let mut input = std::io::BufReader::new(std::io::stdin());
        let prompt = |s: &str| {
            if interactive {
                print::emit(format!("{s}\n").as_bytes());
            }
        };
        prompt("compares:");
        let compares = section(&mut input)?
            .iter()
            .map(|l| parse_compare(l))
            .collect::<Result<Vec<_>, _>>()?;
        prompt("success requests (get, put, del):");
        let success = ops(&mut input)?;
        prompt("failure requests (get, put, del):");
        let failure = ops(&mut input)?;
        let req = TxnRequest {
            compare: compares,
            success,
            failure,
        };
        let mut kv = c.kv();
        c.call(kv.txn(c.request(req))).await.map_err(Failure::error)
    })?;
    Ok(show(printer, &resp))
}

/// The lines of one section, each trimmed, up to the first empty one (a read error or the end of
/// the input before it is etcdctl's `EOF`, exit 3).
fn section(r: &mut impl BufRead) -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(_) if line.last() == Some(&b'\n') => {}
            _ => return Err(invalid("EOF".into())),
        }
        let line = from_bytes(&line).trim().to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn ops(r: &mut impl BufRead) -> Result<Vec<RequestOp>, Failure> {
    section(r)?.iter().map(|l| parse_op(l)).collect()
}

/// One op line: `get|put|del` (or a prefix of one, as cobra matches) with that command's own
/// flags; its argument errors keep their messages and exit codes.
fn parse_op(line: &str) -> Result<RequestOp, Failure> {
    let toks = argify(&bytes(line)).map_err(|e| match e {
        ArgifyError::Syntax => invalid("invalid syntax".into()),
        ArgifyError::SliceBounds { high, len } => panic(&format!(
            "runtime error: slice bounds out of range [:{high}] with length {len}"
        )),
    })?;
    if toks.len() < 2 {
        return Err(invalid(format!("invalid txn compare request: {line}")));
    }
    let bad_request = || invalid(format!("invalid txn request: {line}"));
    let word = from_bytes(&toks[0]);
    let names = ["put", "get", "del"];
    let name = match names.iter().find(|n| **n == word) {
        Some(n) => *n,
        None => {
            let m: Vec<&&str> = names.iter().filter(|n| n.starts_with(&word)).collect();
            match m.as_slice() {
                [one] if !word.is_empty() => **one,
                _ => return Err(bad_request()),
            }
        }
    };
    let args: Vec<String> = toks[1..].iter().map(|t| from_bytes(t)).collect();
    let specs = match name {
        "put" => kv::PUT,
        "get" => kv::GET,
        _ => kv::DEL,
    };
    let parsed = super::flags::parse(&args, &[specs, &[HELP]], None).map_err(|_| {
        // cobra's own usage of the sub-command, on stderr, before etcdctl's error.
        let about = match name {
            "put" => kv::PUT_ABOUT,
            "get" => kv::GET_ABOUT,
            _ => kv::DEL_ABOUT,
        };
        eprint!(
            "{}",
            super::usage::cobra_default_usage(&format!("{name} {}", about.args), specs)
        );
        bad_request()
    })?;
    let request = match name {
        // stdin was read ahead by the line reader: a put without its value finds nothing there.
        "put" => request_op::Request::RequestPut(kv::put_request(&parsed, &mut std::io::empty())?),
        "get" => request_op::Request::RequestRange(kv::get_request(&parsed)?),
        _ => request_op::Request::RequestDeleteRange(kv::del_request(&parsed)?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// One compare line: `<target>("<key>") <op> "<value>"`.
pub fn parse_compare(line: &str) -> Result<Compare, Failure> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid(format!("malformed comparison: {line}")));
    };
    let s = scan(&bytes(rest));
    if s.n != 3 {
        return Err(invalid(format!(
            "malformed comparison: {line}; got {target}({}) {} {}",
            go_quote(&s.key),
            s.op,
            go_quote(&s.val)
        )));
    }
    let number = || {
        std::str::from_utf8(&s.val)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| invalid(format!("invalid txn compare request: {line}")))
    };
    use compare::{CompareTarget as T, TargetUnion as U};
    let (t, u) = match target {
        "ver" | "version" => (T::Version, U::Version(number()?)),
        "c" | "create" => (T::Create, U::CreateRevision(number()?)),
        "m" | "mod" => (T::Mod, U::ModRevision(number()?)),
        "val" | "value" => (T::Value, U::Value(s.val.clone())),
        // clientv3.Compare is handed a string for a lease: etcdctl 3.4 panics.
        "lease" => return Err(panic("bad value")),
        _ => {
            return Err(invalid(format!(
                "malformed comparison: {line} (unknown target {target})"
            )));
        }
    };
    let result = match s.op.as_str() {
        "=" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        ">" => compare::CompareResult::Greater,
        "<" => compare::CompareResult::Less,
        _ => return Err(panic("Unknown result op")),
    };
    Ok(Compare {
        result: result as i32,
        target: t as i32,
        key: s.key.clone(),
        range_end: Vec::new(),
        target_union: Some(u),
    })
}

/// What Go's `fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)` stores, and how many.
#[derive(Default)]
struct Scanned {
    n: usize,
    key: Vec<u8>,
    op: String,
    val: Vec<u8>,
}

fn scan(b: &[u8]) -> Scanned {
    let mut s = Scanned::default();
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r') {
            *i += 1;
        }
    };
    // A quoted string (`"…"` or a raw `` `…` ``) after optional spaces.
    let quoted = |i: &mut usize| -> Option<Vec<u8>> {
        skip(i);
        match b.get(*i)? {
            b'`' => {
                let n = b[*i + 1..].iter().position(|&c| c == b'`')?;
                let v = b[*i + 1..*i + 1 + n].to_vec();
                *i += n + 2;
                Some(v)
            }
            b'"' => {
                let n = super::argify::double_quoted_len(&b[*i..])?;
                let v = super::argify::go_unquote(&b[*i..*i + n])?;
                *i += n;
                Some(v)
            }
            _ => None,
        }
    };
    // A space in the format needs a space in the input (or its end), then takes them all.
    let space = |i: &mut usize| -> bool {
        if *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b'\r') {
            return false;
        }
        skip(i);
        true
    };
    let Some(key) = quoted(&mut i) else { return s };
    s.key = key;
    s.n = 1;
    if b.get(i) != Some(&b')') {
        return s;
    }
    i += 1;
    if !space(&mut i) {
        return s;
    }
    skip(&mut i);
    let start = i;
    while i < b.len() && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    if start == i {
        return s;
    }
    s.op = String::from_utf8_lossy(&b[start..i]).into_owned();
    s.n = 2;
    if !space(&mut i) {
        return s;
    }
    let Some(val) = quoted(&mut i) else { return s };
    s.val = val;
    s.n = 3;
    s
}

/// etcdctl's display of a txn response.
fn show(printer: &Printer, r: &TxnResponse) -> Printed {
    let mut o = String::new();
    match printer.format {
        Format::Simple => {
            o.push_str(if r.succeeded {
                "SUCCESS\n"
            } else {
                "FAILURE\n"
            });
            let mut bytes = o.into_bytes();
            for resp in &r.responses {
                bytes.push(b'\n');
                let sub = match &resp.response {
                    Some(response_op::Response::ResponseRange(x)) => printer.get(x),
                    Some(response_op::Response::ResponsePut(x)) => printer.put(x),
                    Some(response_op::Response::ResponseDeleteRange(x)) => printer.del(x),
                    _ => Printed::Out(format!("unexpected response {resp:?}\n").into_bytes()),
                };
                if let Printed::Out(b) = sub {
                    bytes.extend(b);
                }
            }
            return Printed::Out(bytes);
        }
        Format::Fields => {
            print::fields_header(&mut o, r.header.as_ref());
            let _ = writeln!(o, "\"Succeeded\" : {}", r.succeeded);
            for resp in &r.responses {
                match &resp.response {
                    Some(response_op::Response::ResponseRange(x)) => print::fields_get(&mut o, x),
                    Some(response_op::Response::ResponsePut(x)) => print::fields_put(&mut o, x),
                    Some(response_op::Response::ResponseDeleteRange(x)) => {
                        print::fields_del(&mut o, x)
                    }
                    other => {
                        let _ = writeln!(
                            o,
                            "\"Unknown\" : {}",
                            go_quote(format!("{other:?}").as_bytes())
                        );
                    }
                }
            }
        }
        Format::Json => {
            let mut j = Json::new();
            json_txn(&mut j, r);
            o = j.end();
        }
        Format::Protobuf => return Printed::Out(prost::Message::encode_to_vec(r)),
        Format::Table => return printer.unsupported(),
    }
    Printed::Out(o.into_bytes())
}

/// TxnResponse's fields; each ResponseOp is `{"Response":{"Response<Kind>":{…}}}` (gogo's oneof
/// wrapper structs, untagged).
fn json_txn(j: &mut Json, r: &TxnResponse) {
    j.header(r.header.as_ref());
    j.boolean("succeeded", r.succeeded);
    j.objects("responses", &r.responses, None, |j, resp: &ResponseOp| {
        j.key("Response");
        match &resp.response {
            None => j.raw("null"),
            Some(x) => {
                j.open();
                match x {
                    response_op::Response::ResponseRange(x) => {
                        j.key("ResponseRange");
                        j.open();
                        print::json_get(j, x);
                    }
                    response_op::Response::ResponsePut(x) => {
                        j.key("ResponsePut");
                        j.open();
                        print::json_put(j, x);
                    }
                    response_op::Response::ResponseDeleteRange(x) => {
                        j.key("ResponseDeleteRange");
                        j.open();
                        print::json_del(j, x);
                    }
                    response_op::Response::ResponseTxn(x) => {
                        j.key("ResponseTxn");
                        j.open();
                        json_txn(j, x);
                    }
                }
                j.close();
                j.close();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_compare(line).unwrap_err().message
    }

    #[test]
    fn compares_as_etcdctl_reads_them() {
        let c = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(c.key, b"key1");
        assert_eq!(c.target_union, Some(compare::TargetUnion::ModRevision(0)));
        let c = parse_compare(r#"val("k") != "v w""#).unwrap();
        assert_eq!(
            c.target_union,
            Some(compare::TargetUnion::Value(b"v w".to_vec()))
        );
        assert_eq!(err("nothing"), "malformed comparison: nothing");
        assert_eq!(
            err(r#"ver("a") ="#),
            r#"malformed comparison: ver("a") =; got ver("a") = """#
        );
        assert_eq!(
            err(r#"ver("a")="1""#),
            r#"malformed comparison: ver("a")="1"; got ver("a")  """#
        );
        assert_eq!(
            err(r#"x("a") = "1""#),
            r#"malformed comparison: x("a") = "1" (unknown target x)"#
        );
        assert_eq!(
            err(r#"ver("a") = "x""#),
            r#"invalid txn compare request: ver("a") = "x""#
        );
    }
}
