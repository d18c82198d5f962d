//! `retcdctl`: etcdctl v3's command line, spoken over the wire protocol only (etcd's protos
//! from net/ and a tonic client), with etcdctl's output and exit codes, so that scripts written
//! for etcdctl work unchanged against retcd or etcd.
//!
//! - [`flags`]: cobra/pflag's command line and `ETCDCTL_*` variables;
//! - [`client`]: endpoints, TLS, auth, timeouts;
//! - [`print`]: the output formats;
//! - [`kv`]: the commands (get, put, del, compaction so far; tools/RETCDCTL.md has the rest).
//!
//! Called by the `retcdctl` binary; [`run`] returns the process's exit code.

pub mod client;
pub mod flags;
pub mod kv;
pub mod print;
pub mod usage;

use flags::{GLOBAL, Kind, Spec};
use print::{Printed, Printer};

use crate::output::{Failure, Format, exit};

type Command = fn(&flags::Parsed, &mut Printer) -> Result<Printed, Failure>;

/// The commands: what their usage says, their own flags, what runs them.
fn command(name: &str) -> Option<(usage::About, &'static [Spec], Command)> {
    Some(match name {
        "get" => (kv::GET_ABOUT, kv::GET, kv::get),
        "put" => (kv::PUT_ABOUT, kv::PUT, |p, pr| kv::put(p, pr)),
        "del" => (kv::DEL_ABOUT, kv::DEL, |p, pr| kv::del(p, pr)),
        "compaction" => (kv::COMPACTION_ABOUT, kv::COMPACTION, kv::compaction),
        _ => return None,
    })
}

/// Runs one call on a connection made from the global flags, on a runtime of its own.
pub fn connected<T, F, Fut>(p: &flags::Parsed, f: F) -> Result<T, Failure>
where
    F: FnOnce(std::rc::Rc<client::Client>) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::error)?;
    rt.block_on(async {
        let c = client::connect(p).await.map_err(Failure::error)?;
        f(std::rc::Rc::new(c)).await.map_err(Failure::error)
    })
}

/// The index of the command word in `argv`: the first argument that is neither a flag nor the
/// value of a global flag that takes one (cobra finds it the same way).
fn command_at(argv: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        let takes_value = |s: &Spec| s.kind != Kind::Bool;
        if let Some(long) = a.strip_prefix("--") {
            if long.is_empty() {
                return None;
            }
            if !long.contains('=') && GLOBAL.iter().any(|s| s.name == long && takes_value(s)) {
                i += 1;
            }
        } else if let Some(short) = a.strip_prefix('-') {
            let mut chars = short.chars();
            if let (Some(c), None) = (chars.next(), chars.next())
                && GLOBAL.iter().any(|s| s.short == Some(c) && takes_value(s))
            {
                i += 1;
            }
        } else {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Runs `argv` (without the program name) and returns the exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let fail = |f: Failure| {
        eprintln!("Error: {}", f.message);
        f.code
    };
    let Some(at) = command_at(&argv) else {
        // cobra without a command prints the help; etcdctl's own help text comes later.
        println!("retcdctl: etcdctl v3's commands; see `etcdctl --help`");
        return 0;
    };
    let name = argv[at].as_str();
    let Some((about, specs, cmd)) = command(name) else {
        // cobra's message, then etcdctl's own "Error:" line.
        let e = format!("unknown command \"{name}\" for \"{}\"", usage::PROGRAM);
        eprintln!("Error: {e}");
        eprintln!("Run '{} --help' for usage.", usage::PROGRAM);
        return fail(Failure::error(e));
    };
    let mut rest = argv.clone();
    rest.remove(at);
    let env = |k: &str| std::env::var(k).ok();
    let parsed = match flags::parse(&rest, &[specs, &[flags::HELP], GLOBAL], &env) {
        Ok(p) => p,
        Err(e) => {
            // cobra prints the flag error and the usage (etcdctl's usage goes to stdout, then
            // cobra ends its part with an empty line), then etcdctl prints the error again.
            eprintln!("Error: {e}");
            print::emit(usage::render(&about, specs).as_bytes());
            eprintln!();
            return fail(Failure::error(e));
        }
    };
    if parsed.bool("help") {
        print::emit(usage::render(&about, specs).as_bytes());
        return 0;
    }
    let format = match Format::parse(parsed.str("write-out")) {
        Ok(f) => f,
        Err(f) => return fail(f),
    };
    let mut printer = Printer {
        format,
        hex: parsed.bool("hex"),
        value_only: false,
    };
    match cmd(&parsed, &mut printer) {
        Ok(Printed::Out(bytes)) => {
            print::emit(&bytes);
            0
        }
        Ok(Printed::Unsupported(why)) => fail(Failure {
            code: exit::BAD_FEATURE,
            message: why,
        }),
        Err(f) => fail(f),
    }
}
