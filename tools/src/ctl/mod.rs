//! `retcdctl`: etcdctl v3's command line, spoken over the wire protocol only (etcd's protos
//! from net/ and a tonic client), with etcdctl's output and exit codes, so that scripts written
//! for etcdctl work unchanged against retcd or etcd. tools/RETCDCTL.md is the specification.
//!
//! - [`flags`]: cobra/pflag's command line and `ETCDCTL_*` variables;
//! - [`client`]: endpoints, TLS, auth, timeouts;
//! - [`print`]: the output formats; [`usage`]: the help texts;
//! - the commands, by what they talk to: [`kv`] (get, put, del, compaction), [`txn`],
//!   [`watch`], [`lease`], [`member`], [`maintenance`] (endpoint, alarm, defrag, move-leader,
//!   snapshot), [`auth`] (auth, user, role), [`concurrency`] (lock, elect), [`mirror`]
//!   (make-mirror), [`check`] (perf, datascale), and the root's own (version, completion,
//!   migrate) here.
//!
//! Called by the `retcdctl` binary; [`run`] returns the process's exit code.

pub mod argify;
pub mod auth;
pub mod check;
pub mod client;
pub mod completion;
pub mod concurrency;
pub mod exec;
pub mod flags;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod member;
pub mod mirror;
pub mod print;
pub mod rawarg;
pub mod skip_verify;
pub mod txn;
pub mod usage;
pub mod watch;

use flags::{GLOBAL, HELP, Kind, Spec, spec};
use print::{Printed, Printer};
use usage::About;

use crate::output::{Failure, Format, exit};

/// The etcdctl version retcdctl speaks as (its commands, flags and output).
pub const VERSION: &str = "3.4.23";
/// The API version etcdctl 3.4 prints.
pub const API_VERSION: &str = "3.4";

pub type Command = fn(&flags::Parsed, &mut Printer) -> Result<Printed, Failure>;

/// One runnable command: its usage, its own flags, what runs it.
pub struct Cmd {
    pub about: About,
    pub flags: &'static [Spec],
    pub run: Command,
}

/// A command that only holds others (`lease`, `member`, …), with its persistent flags.
struct Group {
    about: About,
    persistent: &'static [Spec],
}

const fn group(name: &'static str, args: &'static str, short: &'static str) -> Group {
    Group {
        about: About {
            path: name,
            args,
            short,
            long: None,
        },
        persistent: &[],
    }
}

const CLUSTER: &[Spec] = &[spec(
    "cluster",
    Kind::Bool,
    "false",
    "use all endpoints from the cluster member list",
)];

const GROUPS: &[Group] = &[
    group("alarm", "<subcommand>", "Alarm related commands"),
    Group {
        persistent: CLUSTER,
        ..group("endpoint", "<subcommand>", "Endpoint related commands")
    },
    group("lease", "<subcommand>", "Lease related commands"),
    group("member", "<subcommand>", "Membership related commands"),
    group("snapshot", "<subcommand>", "Manages etcd node snapshots"),
    group(
        "auth",
        "<enable or disable>",
        "Enable or disable authentication",
    ),
    group("user", "<subcommand>", "User related commands"),
    group("role", "<subcommand>", "Role related commands"),
    group(
        "check",
        "<subcommand>",
        "commands for checking properties of the etcd cluster",
    ),
    Group {
        about: About {
            path: "completion",
            args: "",
            short: "Generate the autocompletion script for the specified shell",
            long: Some(
                "Generate the autocompletion script for etcdctl for the specified shell.\n\
                 See each sub-command's help for details on how to use the generated script.",
            ),
        },
        persistent: &[],
    },
];

/// The root's commands in etcdctl's registration order (cobra suggests in this order).
const TOP: &[&str] = &[
    "get",
    "put",
    "del",
    "txn",
    "compaction",
    "alarm",
    "defrag",
    "endpoint",
    "move-leader",
    "watch",
    "version",
    "lease",
    "member",
    "snapshot",
    "make-mirror",
    "migrate",
    "lock",
    "elect",
    "auth",
    "user",
    "role",
    "check",
    "completion",
    "help",
];

/// Every runnable command.
pub fn commands() -> impl Iterator<Item = &'static Cmd> {
    [
        kv::COMMANDS,
        txn::COMMANDS,
        watch::COMMANDS,
        lease::COMMANDS,
        member::COMMANDS,
        maintenance::COMMANDS,
        auth::COMMANDS,
        concurrency::COMMANDS,
        mirror::COMMANDS,
        check::COMMANDS,
        ROOT_COMMANDS,
        completion::COMMANDS,
    ]
    .into_iter()
    .flatten()
}

fn find(path: &str) -> Option<&'static Cmd> {
    commands().find(|c| c.about.path == path)
}

fn find_group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.about.path == name)
}

/// Commands of etcdctl 3.5 that 3.4 lacks: they run, but 3.4's listings do not show them.
const HIDDEN: &[&str] = &["auth status"];

/// The runnable commands below `prefix` ("" for all), sorted by path, as cobra lists them.
fn children(prefix: &str) -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = commands()
        .filter(|c| !HIDDEN.contains(&c.about.path))
        .filter_map(|c| {
            let below = if prefix.is_empty() {
                Some(c.about.path)
            } else {
                c.about
                    .path
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix(' '))
            };
            below.map(|b| (b.to_string(), c.about.short))
        })
        .collect();
    if prefix.is_empty() {
        v.push(("help".into(), "Help about any command"));
    }
    v.sort();
    v
}

const ROOT_ABOUT: About = About {
    path: "",
    args: "",
    short: "A simple command line client for etcd3.",
    long: None,
};

fn root_help() -> String {
    usage::render_with(
        &ROOT_ABOUT,
        &[],
        &usage::Extra {
            children: children(""),
            root: true,
            ..Default::default()
        },
    )
}

/// `help` on an unknown topic shows the root's help without cobra's `-h` line (the help flag is
/// added only when a command's help runs).
fn root_help_without_help_flag() -> String {
    usage::render_with(
        &ROOT_ABOUT,
        &[],
        &usage::Extra {
            children: children(""),
            root: true,
            omit_help_flag: true,
            ..Default::default()
        },
    )
}

const HELP_ABOUT: About = About {
    path: "help",
    args: "[command]",
    short: "Help about any command",
    long: Some(
        "Help provides help for any command in the application.\nSimply type retcdctl help \
         [path to command] for full details.",
    ),
};

fn group_help(g: &Group) -> String {
    usage::render_with(
        &g.about,
        g.persistent,
        &usage::Extra {
            children: children(g.about.path),
            ..Default::default()
        },
    )
}

fn command_help(c: &Cmd) -> String {
    let inherited = c
        .about
        .path
        .split_once(' ')
        .and_then(|(g, _)| find_group(g))
        .map_or(&[][..], |g| g.persistent);
    usage::render_with(
        &c.about,
        c.flags,
        &usage::Extra {
            inherited,
            no_flags_in_use_line: c.about.path == "completion bash",
            ..Default::default()
        },
    )
}

/// cobra's command lookup with etcdctl's EnablePrefixMatching: the exact name, or the only name
/// that starts with the word.
fn resolve<'a>(word: &str, names: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    if let Some(n) = names.clone().find(|n| *n == word) {
        return Some(n);
    }
    let mut m = names.filter(|n| !word.is_empty() && n.starts_with(word));
    match (m.next(), m.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// cobra's "unknown command" error with its suggestions (Levenshtein distance ≤ 2 or a prefix,
/// case-insensitive).
fn unknown_command(word: &str, parent: &str) -> String {
    let mut e = format!("unknown command \"{word}\" for \"{parent}\"");
    let lower = word.to_lowercase();
    let suggestions: Vec<&str> = TOP
        .iter()
        .copied()
        .filter(|n| levenshtein(&lower, n) <= 2 || n.starts_with(&lower))
        .collect();
    if !suggestions.is_empty() {
        e.push_str("\n\nDid you mean this?\n");
        for s in suggestions {
            e.push_str(&format!("\t{s}\n"));
        }
    }
    e
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Runs one call on a connection made from the global flags, on a runtime of its own, each call
/// within `--command-timeout`.
pub fn connected<T, F, Fut>(p: &flags::Parsed, f: F) -> Result<T, Failure>
where
    F: FnOnce(std::rc::Rc<client::Client>) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    connect_and(
        p,
        true,
        |c| async move { f(c).await.map_err(Failure::error) },
    )
}

/// As [`connected`], for the commands etcdctl runs without a timeout (txn, user, role, lease
/// list and timetolive, watch, lock, elect).
pub fn connected_no_timeout<T, F, Fut>(p: &flags::Parsed, f: F) -> Result<T, Failure>
where
    F: FnOnce(std::rc::Rc<client::Client>) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    connect_and(
        p,
        false,
        |c| async move { f(c).await.map_err(Failure::error) },
    )
}

/// Runs `f` on a connection made from the global flags (with `--command-timeout` on each call if
/// `timeout`); `f` ends the command with a [`Failure`] of its choosing. The runtime is shut down
/// without waiting for blocked readers (a `watch -i` stdin thread).
pub fn connect_and<T, F, Fut>(p: &flags::Parsed, timeout: bool, f: F) -> Result<T, Failure>
where
    F: FnOnce(std::rc::Rc<client::Client>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let rt = runtime()?;
    let r = rt.block_on(async {
        let mut c = client::connect(p).await?;
        if !timeout {
            c.command_timeout = None;
        }
        f(std::rc::Rc::new(c)).await
    });
    rt.shutdown_background();
    r
}

/// A runtime on this thread for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::error)
}

/// A Go panic as etcdctl 3.4 dies of it (exit 2; the stack trace left out).
pub fn panic(what: &str) -> Failure {
    Failure {
        code: 2,
        message: format!("{PANIC}{what}"),
    }
}

const PANIC: &str = "panic: ";

/// The index of the next command word in `argv` at or after `from`: the first argument that is
/// neither a flag nor the value of a global flag that takes one (cobra finds it the same way).
fn command_at(argv: &[String], from: usize) -> Option<usize> {
    let mut i = from;
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

fn print_failure(f: &Failure) -> i32 {
    match f.message.strip_prefix(PANIC) {
        Some(what) => eprintln!("panic: {what}\n\ngoroutine 1 [running]:"),
        // etcdctl's os.Exit(ExitError) after its own messages.
        None if f.message.is_empty() => {}
        None => eprintln!("Error: {}", f.message),
    }
    f.code
}

/// Runs `argv` (without the program name) and returns the exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let Some(at) = command_at(&argv, 0) else {
        print::emit(root_help().as_bytes());
        return 0;
    };
    let word = argv[at].as_str();
    let Some(top) = resolve(word, TOP.iter().copied()) else {
        let e = unknown_command(word, usage::PROGRAM);
        eprintln!("Error: {e}");
        eprintln!("Run '{} --help' for usage.", usage::PROGRAM);
        return print_failure(&Failure::error(e));
    };
    let mut rest = argv.clone();
    rest.remove(at);
    if top == "help" {
        return help(&rest);
    }
    let (cmd, inherited) = match find_group(top) {
        Some(g) => {
            let sub = command_at(&rest, at).and_then(|i| {
                // Hidden commands run too; they are only left out of listings.
                let names: Vec<&str> = commands()
                    .filter_map(|c| c.about.path.strip_prefix(top)?.strip_prefix(' '))
                    .collect();
                let name = resolve(&rest[i], names.iter().copied())?;
                Some((i, find(&format!("{top} {name}"))?))
            });
            let Some((i, cmd)) = sub else {
                // cobra: a command that only holds others prints its help, whatever follows.
                print::emit(group_help(g).as_bytes());
                return 0;
            };
            rest.remove(i);
            (cmd, g.persistent)
        }
        None => match find(top) {
            Some(c) => (c, &[][..]),
            None => unreachable!("every top-level name is a command or a group: {top}"),
        },
    };
    // The commands that build no client read no ETCDCTL_* variables.
    let path = cmd.about.path;
    let reads_env = !matches!(
        path,
        "version" | "snapshot status" | "snapshot restore" | "migrate"
    ) && !path.starts_with("completion");
    let env = flags::Env {
        vars: std::env::vars_os()
            .map(|(k, v)| (rawarg::from_os(&k), rawarg::from_os(&v)))
            .collect(),
        flags: GLOBAL.iter().chain(inherited).collect(),
        // etcdctl's main takes ETCDCTL_API out of the environment; watch reads its own.
        own: if path == "watch" {
            &[
                "ETCDCTL_API",
                "ETCDCTL_WATCH_KEY",
                "ETCDCTL_WATCH_RANGE_END",
            ]
        } else {
            &["ETCDCTL_API"]
        },
    };
    let specs: &[&[Spec]] = &[cmd.flags, inherited, &[HELP], GLOBAL];
    let parsed = match flags::parse(&rest, specs, reads_env.then_some(&env)) {
        Ok(p) => p,
        Err(e @ flags::ParseError::EnvConflict(_)) => {
            print::capnslog('C', &e.to_string());
            return exit::ERROR;
        }
        Err(e) => {
            // cobra prints the flag error and the usage (etcdctl's usage goes to stdout, then
            // cobra ends its part with an empty line), then etcdctl prints the error again.
            eprintln!("Error: {e}");
            print::emit(command_help(cmd).as_bytes());
            eprintln!();
            return print_failure(&Failure::error(e));
        }
    };
    if parsed.bool("help") {
        print::emit(command_help(cmd).as_bytes());
        return 0;
    }
    let format = match Format::parse(parsed.str("write-out")) {
        Ok(f) => f,
        Err(f) => return print_failure(&f),
    };
    let mut printer = Printer {
        format,
        hex: parsed.bool("hex"),
        value_only: false,
    };
    match (cmd.run)(&parsed, &mut printer) {
        Ok(Printed::Out(bytes)) => {
            print::emit(&bytes);
            0
        }
        Ok(Printed::Unsupported(why)) => print_failure(&Failure {
            code: exit::BAD_FEATURE,
            message: why,
        }),
        Err(f) => print_failure(&f),
    }
}

/// `help [command…]`: that command's help; an unknown one gets the root's and a note on stderr.
fn help(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print::emit(usage::render(&HELP_ABOUT, &[]).as_bytes());
        return 0;
    }
    let words: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let path = words.join(" ");
    if path.is_empty() {
        print::emit(root_help().as_bytes());
    } else if let Some(c) = find(&path) {
        print::emit(command_help(c).as_bytes());
    } else if let Some(g) = find_group(&path) {
        print::emit(group_help(g).as_bytes());
    } else {
        eprintln!("Unknown help topic [`{}`]", words.join("` `"));
        print::emit(root_help_without_help_flag().as_bytes());
    }
    0
}

const ROOT_COMMANDS: &[Cmd] = &[
    Cmd {
        about: About {
            path: "version",
            args: "",
            short: "Prints the version of etcdctl",
            long: None,
        },
        flags: &[],
        run: |_, _| {
            Ok(Printed::Out(
                format!("etcdctl version: {VERSION}\nAPI version: {API_VERSION}\n").into_bytes(),
            ))
        },
    },
    Cmd {
        about: About {
            path: "migrate",
            args: "",
            short: "Migrates keys in a v2 store to a mvcc store",
            long: None,
        },
        flags: &[
            spec("no-ttl", Kind::Bool, "false", "Do not convert TTL keys"),
            spec("data-dir", Kind::Str, "", "Path to the data directory"),
            spec("wal-dir", Kind::Str, "", "Path to the WAL directory"),
            spec(
                "transformer",
                Kind::Str,
                "",
                "Path to the user-provided transformer program",
            ),
        ],
        run: |_, _| {
            Err(Failure::error(
                "migrate: retcd has no v2 store to migrate from (etcd 3.5 removed this command too)",
            ))
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_suggestions_as_cobra() {
        assert_eq!(resolve("g", TOP.iter().copied()), Some("get"));
        assert_eq!(resolve("m", TOP.iter().copied()), None);
        assert_eq!(resolve("member", TOP.iter().copied()), Some("member"));
        assert_eq!(
            unknown_command("m", "etcdctl"),
            "unknown command \"m\" for \"etcdctl\"\n\nDid you mean this?\n\tmove-leader\n\
             \tmember\n\tmake-mirror\n\tmigrate\n"
        );
        assert_eq!(levenshtein("gte", "get"), 2);
    }

    #[test]
    fn every_group_has_commands_and_every_top_name_resolves() {
        for g in GROUPS {
            assert!(!children(g.about.path).is_empty(), "{}", g.about.path);
        }
        for t in TOP {
            assert!(
                *t == "help" || find(t).is_some() || find_group(t).is_some(),
                "{t}"
            );
        }
    }
}
