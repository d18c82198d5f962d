//! `watch`: etcdctl's watch of a key, range or prefix — from the arguments (with the exec form
//! `watch key -- cmd args`, and `ETCDCTL_WATCH_KEY` / `ETCDCTL_WATCH_RANGE_END`) or, with `-i`,
//! from `watch …` and `progress` lines on standard input — every response printed as it
//! arrives. All watches share one Watch stream that requires a leader, as clientv3's do.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use retcd_net::pb::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
    watch_client::WatchClient, watch_request,
};
use retcd_net::pb::mvccpb::Event;
use tokio::io::AsyncBufReadExt;

use super::argify::argify;
use super::flags::{HELP, Kind, Parsed, Spec, hidden, spec};
use super::print::{self, Json, Printed, Printer, fields_header, fields_kv, go_quote};
use super::usage::about;
use super::{Cmd, connected_no_timeout};
use crate::output::{Failure, Format, exit};

pub const COMMANDS: &[Cmd] = &[Cmd {
    about: about(
        "watch",
        "[options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
        "Watches events stream on keys or prefixes",
    ),
    flags: FLAGS,
    run: watch,
}];

const FLAGS: &[Spec] = &[
    Spec {
        short: Some('i'),
        ..spec("interactive", Kind::Bool, "false", "Interactive mode")
    },
    spec(
        "prefix",
        Kind::Bool,
        "false",
        "Watch on a prefix if prefix is set",
    ),
    spec("rev", Kind::Int, "0", "Revision to start watching"),
    spec(
        "prev-kv",
        Kind::Bool,
        "false",
        "get the previous key-value pair before the event happens",
    ),
    hidden(spec(
        "progress-notify",
        Kind::Bool,
        "false",
        "get periodic watch progress notification from server",
    )),
];

const BAD_NUM: &str = "bad number of arguments";
const BAD_NUM_ENV: &str = "bad number of arguments (found conflicting environment key)";
const BAD_NUM_SEP: &str = "bad number of arguments (found separator --, but no commands)";

/// One watch to create: its request and the command to run per event.
struct Wanted {
    create: WatchCreateRequest,
    exec: Vec<String>,
}

fn env_key() -> Result<(String, String), Failure> {
    let key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
    let end = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
    if key.is_empty() && !end.is_empty() {
        return Err(Failure::bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            go_quote(end.as_bytes())
        )));
    }
    Ok((key, end))
}

/// etcdctl's getWatchChan: the key (and range end) from the watch arguments and flags.
fn create_request(p: &Parsed, args: &[String]) -> Result<WatchCreateRequest, String> {
    let Some(key) = args.first() else {
        return Err(BAD_NUM.into());
    };
    let mut req = WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        start_revision: p.int("rev"),
        prev_kv: p.bool("prev-kv"),
        progress_notify: p.bool("progress-notify"),
        ..Default::default()
    };
    if args.len() == 2 {
        if p.bool("prefix") {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        req.range_end = args[1].as_bytes().to_vec();
    }
    if p.bool("prefix") {
        (req.key, req.range_end) = retcd_net::keys::prefix_range(&req.key);
    }
    Ok(req)
}

/// The exec command and the watch arguments, as etcdctl's parseWatchArgs splits them.
fn split_exec(
    raw: &[String],
    positional: &[String],
    env: &(String, String),
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let sep = raw.iter().position(|a| a == "--");
    if sep == Some(raw.len().wrapping_sub(1)) {
        return Err(Failure::bad_args(BAD_NUM_SEP));
    }
    if sep.is_none() && raw.is_empty() && env.0.is_empty() {
        return Err(Failure::bad_args(BAD_NUM));
    }
    let exec: Vec<String> = sep.map_or_else(Vec::new, |i| raw[i + 1..].to_vec());
    let mut args = positional.to_vec();
    if !env.0.is_empty() {
        let before_sep = match sep {
            // The positional arguments that came before the separator.
            Some(_) => args.len().saturating_sub(exec.len()),
            None => args.len(),
        };
        if before_sep > 0 {
            return Err(Failure::bad_args(BAD_NUM_ENV));
        }
    }
    if let (Some(first), false) = (exec.first(), args.is_empty())
        && let Some(i) = args.iter().rposition(|a| a == first)
    {
        args.truncate(i);
    }
    Ok((with_env_key(args, env), exec))
}

fn watch(p: &Parsed, printer: &mut Printer) -> Result<Printed, Failure> {
    let env = env_key()?;
    let interactive = p.bool("interactive");
    let mut first = Vec::new();
    if !interactive {
        // The process's own arguments after the first `watch` (etcdctl reads os.Args).
        let raw: Vec<String> = std::env::args()
            .skip(1)
            .skip_while(|a| a != "watch")
            .skip(1)
            .collect();
        let (args, exec) = split_exec(&raw, &p.args, &env)?;
        let create = create_request(p, &args).map_err(Failure::bad_args)?;
        first.push(Wanted { create, exec });
    }
    let printer = &*printer;
    let env = &env;
    connected_no_timeout(p, |c| async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(16);
        let mut req = c.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        // What the line reader did, in order with the creates it sent.
        let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::unbounded_channel::<Ctl>();
        let mut pending: VecDeque<Vec<String>> = VecDeque::new();
        for w in first {
            pending.push_back(w.exec);
            let _ = tx.send(create(w.create)).await;
        }
        if interactive {
            // Lines are read beside the call: the server answers the call only once a watch is
            // asked for.
            tokio::spawn(read_lines(tx.clone(), ctl_tx, env.clone()));
        }
        let mut client =
            WatchClient::new(c.channel.clone()).max_decoding_message_size(super::client::MAX_RECV);
        let mut responses = client
            .watch(req)
            .await
            .map_err(|s| super::client::status_text(&s))?
            .into_inner();
        let mut execs: HashMap<i64, Vec<String>> = HashMap::new();
        loop {
            tokio::select! {
                // Creates are queued before their responses can arrive: take those first.
                biased;
                ctl = ctl_rx.recv() => match ctl {
                    Some(Ctl::Created(exec)) => pending.push_back(exec),
                    Some(Ctl::Stop(e)) => return Err(e),
                    None => std::future::pending::<()>().await,
                },
                r = responses.message() => {
                    let r = match r {
                        Ok(Some(r)) => r,
                        _ => break,
                    };
                    if r.created {
                        // The reader may still hold this create's exec in the channel.
                        while let Ok(Ctl::Created(exec)) = ctl_rx.try_recv() {
                            pending.push_back(exec);
                        }
                        let exec = pending.pop_front().unwrap_or_default();
                        if !r.canceled {
                            execs.insert(r.watch_id, exec);
                            continue;
                        }
                    }
                    let targets: Vec<Vec<String>> = if r.watch_id == -1 {
                        execs.values().cloned().collect()
                    } else {
                        vec![execs.get(&r.watch_id).cloned().unwrap_or_default()]
                    };
                    for exec in targets {
                        show(printer, &r, &exec)?;
                    }
                    if r.canceled {
                        execs.remove(&r.watch_id);
                        if !interactive {
                            break;
                        }
                    }
                }
            }
        }
        Err(Stop::canceled())
    })
    .map_err(Stop::decode)?;
    Ok(Printed::Out(Vec::new()))
}

/// What the line reader of `watch -i` tells the response loop.
enum Ctl {
    /// A create was sent; its exec command, for the created response to come.
    Created(Vec<String>),
    /// The end: an error to exit with.
    Stop(String),
}

/// `watch -i`'s reader: each stdin line becomes a create or a progress request on the stream.
async fn read_lines(
    tx: tokio::sync::mpsc::Sender<WatchRequest>,
    ctl: tokio::sync::mpsc::UnboundedSender<Ctl>,
    env: (String, String),
) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let stop = |e: String| {
        let _ = ctl.send(Ctl::Stop(e));
    };
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return stop(Stop::eof()),
            Err(e) => return stop(Stop::read(e)),
        };
        let request = match interactive_line(&line, &env) {
            Err(e) => return stop(e),
            Ok(None) => continue,
            Ok(Some(Line::Progress)) => {
                watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})
            }
            Ok(Some(Line::Watch(args))) => {
                let parsed = match super::flags::parse(&args, &[FLAGS, &[HELP]], &|_| None) {
                    Ok(p) => p,
                    Err(e) => return stop(Stop::bad_args(e)),
                };
                let (wargs, exec) = match split_interactive(&args, &parsed, &env) {
                    Ok(x) => x,
                    Err(e) => return stop(e),
                };
                match create_request(&parsed, &wargs) {
                    Ok(c) => {
                        let _ = ctl.send(Ctl::Created(exec));
                        watch_request::RequestUnion::CreateRequest(c)
                    }
                    Err(e) => {
                        eprintln!("Invalid command {line} ({e})");
                        continue;
                    }
                }
            }
        };
        let req = WatchRequest {
            request_union: Some(request),
        };
        if tx.send(req).await.is_err() {
            return;
        }
    }
}

fn create(c: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(c)),
    }
}

/// How the watch loop ends, carried through `connected`'s string error: an exit code, then the
/// message.
struct Stop;

impl Stop {
    fn encode(code: i32, message: &str) -> String {
        format!("{code}\u{1}{message}")
    }
    fn eof() -> String {
        Stop::encode(exit::INVALID_INPUT, "Error reading watch request line: EOF")
    }
    fn read(e: std::io::Error) -> String {
        Stop::encode(
            exit::INVALID_INPUT,
            &format!("Error reading watch request line: {e}"),
        )
    }
    fn bad_args(e: impl std::fmt::Display) -> String {
        Stop::encode(exit::BAD_ARGS, &e.to_string())
    }
    fn canceled() -> String {
        Stop::encode(exit::INTERRUPTED, "watch is canceled by the server")
    }
    fn decode(f: Failure) -> Failure {
        match f.message.split_once('\u{1}') {
            Some((code, m)) => Failure {
                code: code.parse().unwrap_or(exit::ERROR),
                message: m.to_string(),
            },
            None => f,
        }
    }
}

enum Line {
    Watch(Vec<String>),
    Progress,
}

/// One line of `watch -i`: a watch to create, a progress request, or a complaint on stderr.
fn interactive_line(line: &str, env: &(String, String)) -> Result<Option<Line>, String> {
    let toks: Vec<String> = argify(line.as_bytes())
        .map_err(|_| Stop::encode(exit::INVALID_INPUT, "invalid syntax"))?
        .into_iter()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .collect();
    match toks.first().map(String::as_str) {
        None => {
            eprintln!("Invalid command: {line} (watch and progress supported)");
            Ok(None)
        }
        Some("watch") => {
            if toks.len() < 2 && env.0.is_empty() {
                eprintln!("Invalid command {line} (command type or key is not provided)");
                return Ok(None);
            }
            Ok(Some(Line::Watch(toks[1..].to_vec())))
        }
        Some("progress") => Ok(Some(Line::Progress)),
        Some(_) => {
            eprintln!("Invalid command {line} (only support watch)");
            Ok(None)
        }
    }
}

/// The watch arguments after `ETCDCTL_WATCH_KEY` (and `ETCDCTL_WATCH_RANGE_END`), if set.
fn with_env_key(args: Vec<String>, env: &(String, String)) -> Vec<String> {
    if env.0.is_empty() {
        return args;
    }
    let mut with_env = vec![env.0.clone()];
    if !env.1.is_empty() {
        with_env.push(env.1.clone());
    }
    with_env.extend(args);
    with_env
}

/// parseWatchArgs for an interactive `watch …` line (its own flags already parsed).
fn split_interactive(
    toks: &[String],
    parsed: &Parsed,
    env: &(String, String),
) -> Result<(Vec<String>, Vec<String>), String> {
    let sep = toks.iter().position(|a| a == "--");
    if sep == Some(toks.len() - 1) {
        return Err(Stop::bad_args(BAD_NUM_SEP));
    }
    let before: Vec<String> = match sep {
        Some(i) => parsed.args[..parsed.args.len() - (toks.len() - i - 1)].to_vec(),
        None => parsed.args.clone(),
    };
    if sep.is_none() && env.0.is_empty() && before.is_empty() {
        return Err(Stop::bad_args(BAD_NUM));
    }
    if sep.is_none() && !before.is_empty() && !env.0.is_empty() {
        return Err(Stop::bad_args(BAD_NUM_ENV));
    }
    let exec = sep.map_or_else(Vec::new, |i| toks[i + 1..].to_vec());
    Ok((with_env_key(before, env), exec))
}

/// clientv3's WatchResponse.Err() text of a canceled watch.
fn cancel_text(r: &WatchResponse) -> String {
    if r.compact_revision != 0 {
        return "etcdserver: mvcc: required revision has been compacted".into();
    }
    if !r.cancel_reason.is_empty() {
        let s = tonic::Status::failed_precondition(r.cancel_reason.clone());
        return super::client::status_text(&s);
    }
    "etcdserver: mvcc: required revision is a future revision".into()
}

/// Prints one response (and runs the exec command per event).
fn show(printer: &Printer, r: &WatchResponse, exec: &[String]) -> Result<(), String> {
    if r.canceled {
        eprintln!("watch was canceled ({})", cancel_text(r));
    }
    let revision = r.header.as_ref().map_or(0, |h| h.revision);
    let progress = r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && revision != 0;
    if progress {
        print::emit(format!("progress notify: {revision}\n").as_bytes());
    }
    match display(printer, r) {
        Printed::Out(b) => print::emit(&b),
        Printed::Unsupported(why) => return Err(Stop::encode(exit::BAD_FEATURE, &why)),
    }
    if exec.is_empty() {
        return Ok(());
    }
    for ev in &r.events {
        let kv = ev.kv.clone().unwrap_or_default();
        let kind = if ev.r#type == 1 { "DELETE" } else { "PUT" };
        let status = std::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env("ETCD_WATCH_REVISION", revision.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", format!("\"{kind}\""))
            .env("ETCD_WATCH_KEY", go_quote(&kv.key))
            .env("ETCD_WATCH_VALUE", go_quote(&kv.value))
            .status();
        let failed = match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(match s.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("signal: {s}"),
            }),
            Err(e) => Some(format!("exec: {}: {e}", go_quote(exec[0].as_bytes()))),
        };
        if let Some(why) = failed {
            let argv: Vec<String> = exec.iter().map(|a| go_quote(a.as_bytes())).collect();
            eprintln!("command [{}] error ({why})", argv.join(" "));
            return Err(Stop::encode(exit::ERROR, ""));
        }
    }
    Ok(())
}

fn event_type(e: &Event) -> &'static str {
    if e.r#type == 1 { "DELETE" } else { "PUT" }
}

/// etcdctl's display of a watch response.
fn display(printer: &Printer, r: &WatchResponse) -> Printed {
    let mut o = String::new();
    match printer.format {
        Format::Simple => {
            let mut out = Vec::new();
            for e in &r.events {
                out.extend_from_slice(event_type(e).as_bytes());
                out.push(b'\n');
                let mut s = String::new();
                if let Some(kv) = &e.prev_kv {
                    printer.simple_kv(&mut s, kv);
                }
                if let Some(kv) = &e.kv {
                    printer.simple_kv(&mut s, kv);
                }
                out.extend_from_slice(s.as_bytes());
            }
            return Printed::Out(out);
        }
        Format::Fields => {
            fields_header(&mut o, r.header.as_ref());
            for e in &r.events {
                let _ = writeln!(o, "\"Type\" : {}", event_type(e));
                if let Some(kv) = &e.prev_kv {
                    fields_kv(&mut o, "Prev", kv);
                }
                fields_kv(&mut o, "", &e.kv.clone().unwrap_or_default());
            }
        }
        Format::Json => {
            // clientv3's WatchResponse: untagged fields, the header by value, events always an
            // array.
            let mut j = Json::new();
            j.key("Header");
            j.open();
            let h = r.header.unwrap_or_default();
            j.num("cluster_id", h.cluster_id);
            j.num("member_id", h.member_id);
            j.num("revision", h.revision);
            j.num("raft_term", h.raft_term);
            j.close();
            j.objects("Events", &r.events, Some("[]"), |j, e| {
                j.num("type", e.r#type);
                if let Some(kv) = &e.kv {
                    j.key("kv");
                    j.kv(kv);
                }
                if let Some(kv) = &e.prev_kv {
                    j.key("prev_kv");
                    j.kv(kv);
                }
            });
            j.num_always("CompactRevision", r.compact_revision);
            j.boolean_always("Canceled", r.canceled);
            j.boolean_always("Created", r.created);
            o = j.end();
        }
        Format::Protobuf => {
            let m = WatchResponse {
                header: r.header,
                events: r.events.clone(),
                compact_revision: r.compact_revision,
                canceled: r.canceled,
                created: r.created,
                ..Default::default()
            };
            return Printed::Out(prost::Message::encode_to_vec(&m));
        }
        Format::Table => return printer.unsupported(),
    }
    Printed::Out(o.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn exec_split_as_etcdctl() {
        let none = (String::new(), String::new());
        let (args, exec) = split_exec(
            &v(&["foo", "--", "echo", "hi"]),
            &v(&["foo", "echo", "hi"]),
            &none,
        )
        .unwrap();
        assert_eq!((args, exec), (v(&["foo"]), v(&["echo", "hi"])));
        assert_eq!(
            split_exec(&v(&["foo", "--"]), &v(&["foo"]), &none)
                .unwrap_err()
                .message,
            BAD_NUM_SEP
        );
        assert_eq!(split_exec(&[], &[], &none).unwrap_err().message, BAD_NUM);
        let env = ("k".to_string(), String::new());
        assert_eq!(
            split_exec(&v(&["foo"]), &v(&["foo"]), &env)
                .unwrap_err()
                .message,
            BAD_NUM_ENV
        );
        let (args, _) = split_exec(&v(&["--prefix"]), &[], &env).unwrap();
        assert_eq!(args, v(&["k"]));
    }
}
