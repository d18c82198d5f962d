//! `watch`: etcdctl's watch of a key, range or prefix — from the arguments (with the exec form
//! `watch key -- cmd args`, and `ETCDCTL_WATCH_KEY` / `ETCDCTL_WATCH_RANGE_END`) or, with `-i`,
//! from `watch …` and `progress` lines on standard input — every response printed as it
//! arrives. All watches share one Watch stream that requires a leader, as clientv3's do.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use retcd_net::pb::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse, watch_request,
};
use retcd_net::pb::mvccpb::Event;

use super::Cmd;
use super::argify::{ArgifyError, argify};
use super::flags::{HELP, Kind, Parsed, Spec, hidden, spec};
use super::print::{self, Json, Printed, Printer, fields_header, fields_kv, go_quote};
use super::rawarg::{bytes, from_bytes};
use super::usage::about;
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
        key: bytes(key),
        start_revision: p.int("rev"),
        prev_kv: p.bool("prev-kv"),
        progress_notify: p.bool("progress-notify"),
        ..Default::default()
    };
    if args.len() == 2 {
        if p.bool("prefix") {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        req.range_end = bytes(&args[1]);
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
        // The process's own arguments after the first `watch` (etcdctl reads os.Args; a
        // command word given by a prefix leaves them all).
        let all = super::rawarg::args();
        let raw = match all.iter().position(|a| a == "watch") {
            Some(i) => all[i + 1..].to_vec(),
            None => all,
        };
        let (args, exec) = split_exec(&raw, &p.args, &env)?;
        let create = create_request(p, &args).map_err(Failure::bad_args)?;
        first.push(Wanted { create, exec });
    }
    let printer = &*printer;
    super::connect_and(p, false, |c| async move {
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
            tokio::spawn(read_lines(tx.clone(), ctl_tx, env));
        }
        let mut client = c.watch();
        // The server answers the call only once a watch is asked for, so the reader's
        // verdicts (the end of the input, a bad line) are heard while the call is pending.
        let mut call = std::pin::pin!(client.watch(req));
        let mut responses = None;
        let mut reader_open = interactive;
        let mut execs: HashMap<i64, Vec<String>> = HashMap::new();
        loop {
            tokio::select! {
                // Creates are queued before their responses can arrive: take those first.
                biased;
                ctl = ctl_rx.recv(), if reader_open => match ctl {
                    Some(Ctl::Created(exec)) => pending.push_back(exec),
                    Some(Ctl::Stop(f)) => return Err(f),
                    None => reader_open = false,
                },
                r = &mut call, if responses.is_none() => {
                    responses = Some(
                        r.map_err(|s| Failure::error(super::client::status_text(&s)))?
                            .into_inner(),
                    );
                }
                r = next(&mut responses) => {
                    let Ok(Some(r)) = r else { break };
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
                        show(printer, &r, &exec).await?;
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
        Err(Failure {
            code: exit::INTERRUPTED,
            message: "watch is canceled by the server".into(),
        })
    })?;
    Ok(Printed::Out(Vec::new()))
}

/// The next response of the stream once there is one.
async fn next(
    s: &mut Option<tonic::Streaming<WatchResponse>>,
) -> Result<Option<WatchResponse>, tonic::Status> {
    match s {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

fn create(c: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(c)),
    }
}

/// What the line reader of `watch -i` tells the response loop.
enum Ctl {
    /// A create was sent; its exec command, for the created response to come.
    Created(Vec<String>),
    /// The end, and how.
    Stop(Failure),
}

fn failure(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Standard input's lines, read on a thread of their own (a blocked read must not keep the
/// process from exiting), each with only its `\n` removed, as Go's ReadString leaves it; a last
/// line without `\n` is the end of the input, as for Go.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let r = match input.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    Ok(line)
                }
                Ok(_) => Err("EOF".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let end = r.is_err();
            if tx.send(r).is_err() || end {
                return;
            }
        }
    });
    rx
}

/// `watch -i`'s reader: each stdin line becomes a create or a progress request on the stream.
async fn read_lines(
    tx: tokio::sync::mpsc::Sender<WatchRequest>,
    ctl: tokio::sync::mpsc::UnboundedSender<Ctl>,
    env: (String, String),
) {
    let mut lines = stdin_lines();
    let stop = |f: Failure| {
        let _ = ctl.send(Ctl::Stop(f));
    };
    loop {
        let line = match lines.recv().await {
            Some(Ok(l)) => from_bytes(&l),
            Some(Err(e)) => {
                return stop(failure(
                    exit::INVALID_INPUT,
                    format!("Error reading watch request line: {e}"),
                ));
            }
            None => return,
        };
        let request = match interactive_line(&line, &env) {
            Err(f) => return stop(f),
            Ok(None) => continue,
            Ok(Some(Line::Progress)) => {
                watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})
            }
            Ok(Some(Line::Watch(args))) => {
                let parsed = match super::flags::parse(&args, &[FLAGS, &[HELP]], None) {
                    Ok(p) => p,
                    Err(e) => return stop(Failure::bad_args(e)),
                };
                let (wargs, exec) = match split_interactive(&args, &parsed, &env) {
                    Ok(x) => x,
                    Err(f) => return stop(f),
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

enum Line {
    Watch(Vec<String>),
    Progress,
}

/// One line of `watch -i`: a watch to create, a progress request, or a complaint on stderr.
fn interactive_line(line: &str, env: &(String, String)) -> Result<Option<Line>, Failure> {
    let toks: Vec<String> = argify(&bytes(line))
        .map_err(|e| match e {
            ArgifyError::Syntax => failure(exit::INVALID_INPUT, "invalid syntax"),
            ArgifyError::SliceBounds { high, len } => super::panic(&format!(
                "runtime error: slice bounds out of range [:{high}] with length {len}"
            )),
        })?
        .into_iter()
        .map(|t| from_bytes(&t))
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
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let sep = toks.iter().position(|a| a == "--");
    if sep == Some(toks.len() - 1) {
        return Err(Failure::bad_args(BAD_NUM_SEP));
    }
    let before: Vec<String> = match sep {
        Some(i) => parsed.args[..parsed.args.len() - (toks.len() - i - 1)].to_vec(),
        None => parsed.args.clone(),
    };
    if sep.is_none() && env.0.is_empty() && before.is_empty() {
        return Err(Failure::bad_args(BAD_NUM));
    }
    if sep.is_none() && !before.is_empty() && !env.0.is_empty() {
        return Err(Failure::bad_args(BAD_NUM_ENV));
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
async fn show(printer: &Printer, r: &WatchResponse, exec: &[String]) -> Result<(), Failure> {
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
        Printed::Unsupported(why) => return Err(failure(exit::BAD_FEATURE, why)),
    }
    // Per event, in order, each command to its end before the next.
    for ev in r.events.iter().filter(|_| !exec.is_empty()) {
        let kv = ev.kv.clone().unwrap_or_default();
        let env = [
            ("ETCD_WATCH_REVISION", revision.to_string()),
            ("ETCD_WATCH_EVENT_TYPE", format!("\"{}\"", event_type(ev))),
            ("ETCD_WATCH_KEY", go_quote(&kv.key)),
            ("ETCD_WATCH_VALUE", go_quote(&kv.value)),
        ];
        if let Err(why) = super::exec::run(exec, &env).await {
            let argv: Vec<String> = exec.iter().map(|a| go_quote(a.as_bytes())).collect();
            eprintln!("command [{}] error ({why})", argv.join(" "));
            return Err(failure(exit::ERROR, ""));
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
                if let Some(kv) = &e.prev_kv {
                    printer.simple_kv(&mut out, kv);
                }
                if let Some(kv) = &e.kv {
                    printer.simple_kv(&mut out, kv);
                }
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
