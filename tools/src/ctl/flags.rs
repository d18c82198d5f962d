//! etcdctl's command line as cobra and pflag read it: long flags (`--name=value`, `--name value`,
//! a bare boolean), short ones (`-w json`, `-wjson`, `-w=json`), flags anywhere among the
//! arguments, `--` ending them; then `ETCDCTL_*` variables for the global flags not given (a
//! variable shadowed by its flag is an error, as etcdctl's `pkg/flags` says).
//!
//! Errors carry pflag's wording. Called by [`super`] only.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Bool,
    Str,
    /// A comma-separated list (pflag's StringSlice).
    List,
    Int,
    Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    pub default: &'static str,
    /// etcdctl's help text for the flag.
    pub usage: &'static str,
    /// Accepted but left out of the help (etcdctl 3.5's additions, so that 3.4's help stays
    /// byte for byte).
    pub hidden: bool,
}

pub const fn spec(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    usage: &'static str,
) -> Spec {
    Spec {
        name,
        short: None,
        kind,
        default,
        usage,
        hidden: false,
    }
}

/// cobra's own flag of every command.
pub const HELP: Spec = Spec {
    short: Some('h'),
    ..spec("help", Kind::Bool, "false", "")
};

/// A flag of etcdctl 3.5 that 3.4 lacks: accepted, not listed in the help.
pub const fn hidden(s: Spec) -> Spec {
    Spec { hidden: true, ..s }
}

/// etcdctl 3.4's global (persistent) flags.
pub const GLOBAL: &[Spec] = &[
    spec("endpoints", Kind::List, "127.0.0.1:2379", "gRPC endpoints"),
    spec(
        "debug",
        Kind::Bool,
        "false",
        "enable client-side debug logging",
    ),
    Spec {
        short: Some('w'),
        ..spec(
            "write-out",
            Kind::Str,
            "simple",
            "set the output format (fields, json, protobuf, simple, table)",
        )
    },
    spec(
        "hex",
        Kind::Bool,
        "false",
        "print byte strings as hex encoded strings",
    ),
    spec(
        "dial-timeout",
        Kind::Duration,
        "2s",
        "dial timeout for client connections",
    ),
    spec(
        "command-timeout",
        Kind::Duration,
        "5s",
        "timeout for short running command (excluding dial timeout)",
    ),
    spec(
        "keepalive-time",
        Kind::Duration,
        "2s",
        "keepalive time for client connections",
    ),
    spec(
        "keepalive-timeout",
        Kind::Duration,
        "6s",
        "keepalive timeout for client connections",
    ),
    spec(
        "insecure-transport",
        Kind::Bool,
        "true",
        "disable transport security for client connections",
    ),
    spec(
        "insecure-discovery",
        Kind::Bool,
        "true",
        "accept insecure SRV records describing cluster endpoints",
    ),
    spec(
        "insecure-skip-tls-verify",
        Kind::Bool,
        "false",
        "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)",
    ),
    spec(
        "cert",
        Kind::Str,
        "",
        "identify secure client using this TLS certificate file",
    ),
    spec(
        "key",
        Kind::Str,
        "",
        "identify secure client using this TLS key file",
    ),
    spec(
        "cacert",
        Kind::Str,
        "",
        "verify certificates of TLS-enabled secure servers using this CA bundle",
    ),
    spec(
        "user",
        Kind::Str,
        "",
        "username[:password] for authentication (prompt if password is not supplied)",
    ),
    spec(
        "password",
        Kind::Str,
        "",
        "password for authentication (if this option is used, --user option shouldn't include password)",
    ),
    Spec {
        short: Some('d'),
        ..spec(
            "discovery-srv",
            Kind::Str,
            "",
            "domain name to query for SRV records describing cluster endpoints",
        )
    },
    spec(
        "discovery-srv-name",
        Kind::Str,
        "",
        "service name to query when using DNS discovery",
    ),
];

/// The flags and positional arguments of one command line.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: HashMap<&'static str, String>,
    /// The flags given on the command line or by `ETCDCTL_*` variables (not defaulted).
    given: Vec<&'static str>,
    pub args: Vec<String>,
}

impl Parsed {
    /// A copy with `name` set to `value`.
    pub fn with(&self, name: &'static str, value: &str) -> Parsed {
        let mut p = self.clone();
        p.values.insert(name, value.to_string());
        p
    }

    /// Whether `name` was given rather than defaulted (cobra's `Flags().Changed`).
    pub fn given(&self, name: &str) -> bool {
        self.given.contains(&name)
    }

    pub fn str(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    pub fn bool(&self, name: &str) -> bool {
        parse_bool(self.str(name)) == Some(true)
    }

    pub fn int(&self, name: &str) -> i64 {
        go_parse_int_base0(self.str(name)).unwrap_or(0)
    }

    pub fn duration(&self, name: &str) -> Duration {
        parse_duration(self.str(name)).unwrap_or_default()
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        let v = self.str(name);
        if v.is_empty() {
            return Vec::new();
        }
        v.split(',').map(str::to_string).collect()
    }
}

/// Reads `argv` (after the command's words) against `specs` (the command's flags then the
/// global ones), then the environment for what was not given.
pub fn parse(argv: &[String], specs: &[&[Spec]], env: Option<&Env>) -> Result<Parsed, ParseError> {
    let all: Vec<&Spec> = specs.iter().flat_map(|s| s.iter()).collect();
    let mut p = Parsed::default();
    let mut given: Vec<&'static str> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "--" {
            p.args.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let s = all
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| format!("unknown flag: --{name}"))?;
            let value = match (inline, s.kind) {
                (Some(v), _) => v,
                (None, Kind::Bool) => "true".into(),
                (None, _) => {
                    let v = argv
                        .get(i)
                        .ok_or_else(|| format!("flag needs an argument: --{name}"))?;
                    i += 1;
                    v.clone()
                }
            };
            set(&mut p, &mut given, s, value, &format!("--{name}"))?;
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let chars: Vec<char> = shorts.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let s = all
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or_else(|| format!("unknown shorthand flag: '{c}' in -{shorts}"))?;
                let rest: String = chars[j..].iter().collect();
                let value = if s.kind == Kind::Bool {
                    match rest.strip_prefix('=') {
                        Some(v) => {
                            j = chars.len();
                            v.to_string()
                        }
                        None => "true".into(),
                    }
                } else if !rest.is_empty() {
                    j = chars.len();
                    rest.strip_prefix('=').unwrap_or(&rest).to_string()
                } else {
                    let v = argv
                        .get(i)
                        .ok_or_else(|| format!("flag needs an argument: '{c}' in -{c}"))?;
                    i += 1;
                    v.clone()
                };
                set(&mut p, &mut given, s, value, &format!("-{c}, --{}", s.name))?;
            }
        } else {
            p.args.push(a.clone());
        }
    }
    if let Some(env) = env {
        apply_env(&mut p, &mut given, env)?;
    }
    for s in all {
        p.values
            .entry(s.name)
            .or_insert_with(|| s.default.to_string());
    }
    p.given = given;
    Ok(p)
}

fn set(
    p: &mut Parsed,
    given: &mut Vec<&'static str>,
    s: &Spec,
    value: String,
    shown: &str,
) -> Result<(), String> {
    let invalid = |why: String| format!("invalid argument \"{value}\" for \"{shown}\" flag: {why}");
    match s.kind {
        Kind::Bool => {
            parse_bool(&value).ok_or_else(|| {
                invalid(format!(
                    "strconv.ParseBool: parsing \"{value}\": invalid syntax"
                ))
            })?;
        }
        Kind::Int => {
            go_parse_int_base0(&value).map_err(invalid)?;
        }
        Kind::Duration => {
            parse_duration(&value)
                .ok_or_else(|| invalid(format!("time: invalid duration \"{value}\"")))?;
        }
        Kind::Str | Kind::List => {}
    }
    // pflag's StringSlice appends on repetition; every other kind takes the last value.
    let value = match (s.kind, given.contains(&s.name), p.values.get(s.name)) {
        (Kind::List, true, Some(old)) => format!("{old},{value}"),
        _ => value,
    };
    p.values.insert(s.name, value);
    if !given.contains(&s.name) {
        given.push(s.name);
    }
    Ok(())
}

/// What reading a command line can end with.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// pflag's error for a flag: the command's usage follows it.
    Flag(String),
    /// A variable shadowed by the flag of the same name: pkg/flags' fatal log line.
    EnvConflict(String),
}

impl From<String> for ParseError {
    fn from(s: String) -> ParseError {
        ParseError::Flag(s)
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Flag(s) => f.write_str(s),
            ParseError::EnvConflict(var) => write!(
                f,
                "conflicting environment variable {} is shadowed by corresponding command-line \
                 flag (either unset environment variable or disable flag)",
                super::print::go_quote(var.as_bytes())
            ),
        }
    }
}

/// The environment a command reads its `ETCDCTL_*` variables from.
pub struct Env<'a> {
    /// Every variable, in the environment's order.
    pub vars: Vec<(String, String)>,
    /// The flags variables may set: the command's inherited ones (the globals, and a group's
    /// persistent flags).
    pub flags: Vec<&'a Spec>,
    /// Variables the command reads itself (watch's `ETCDCTL_WATCH_KEY`), not warned about.
    pub own: &'a [&'a str],
}

/// The variable of a flag: `ETCDCTL_` and the name in upper case, `-` as `_`.
pub fn env_name(flag: &str) -> String {
    format!("ETCDCTL_{}", flag.to_uppercase().replace('-', "_"))
}

/// etcd's pkg/flags SetPflagsFromEnv as etcdctl uses it: a non-empty variable sets its flag
/// unless the command line did (a bad value is ignored); then a variable whose flag the
/// command line set is fatal, and any other `ETCDCTL_*` not used draws a warning.
fn apply_env(p: &mut Parsed, given: &mut Vec<&'static str>, env: &Env) -> Result<(), ParseError> {
    let on_command_line = given.clone();
    let mut used: Vec<String> = Vec::new();
    for s in &env.flags {
        let var = env_name(s.name);
        if on_command_line.contains(&s.name) {
            continue;
        }
        if let Some((_, v)) = env.vars.iter().find(|(k, v)| *k == var && !v.is_empty()) {
            used.push(var.clone());
            let _ = set(p, given, s, v.clone(), &var);
        }
    }
    for (k, v) in &env.vars {
        if !k.starts_with("ETCDCTL_") || used.contains(k) || env.own.contains(&k.as_str()) {
            continue;
        }
        if env
            .flags
            .iter()
            .any(|s| on_command_line.contains(&s.name) && env_name(s.name) == *k)
        {
            return Err(ParseError::EnvConflict(k.clone()));
        }
        super::print::capnslog('W', &format!("unrecognized environment variable {k}={v}"));
    }
    Ok(())
}

/// Go's strconv.ParseInt(s, radix, 64), with Go's error text.
pub fn go_parse_int(s: &str, radix: u32) -> Result<i64, String> {
    i64::from_str_radix(s, radix).map_err(|e| go_num_error("ParseInt", s, &e))
}

/// pflag's int flags: Go's strconv.ParseInt(s, 0, 64), so `0x10`, `0o20`, `0b1`, `020` and
/// `1_000` are numbers too; Go's error text.
pub fn go_parse_int_base0(s: &str) -> Result<i64, String> {
    retcd::config::parse_go_int_base0(s).map_err(|e| {
        format!(
            "strconv.ParseInt: parsing {}: {e}",
            super::print::go_quote(s.as_bytes())
        )
    })
}

/// Go's strconv.ParseUint(s, radix, 64) (no sign allowed), with Go's error text.
pub fn go_parse_uint(s: &str, radix: u32) -> Result<u64, String> {
    if s.starts_with('+') {
        return Err(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            super::print::go_quote(s.as_bytes())
        ));
    }
    u64::from_str_radix(s, radix).map_err(|e| go_num_error("ParseUint", s, &e))
}

fn go_num_error(f: &str, s: &str, e: &std::num::ParseIntError) -> String {
    use std::num::IntErrorKind::{NegOverflow, PosOverflow};
    let why = match e.kind() {
        PosOverflow | NegOverflow => "value out of range",
        _ => "invalid syntax",
    };
    format!(
        "strconv.{f}: parsing {}: {why}",
        super::print::go_quote(s.as_bytes())
    )
}

/// Go's strconv.ParseBool.
pub fn parse_bool(s: &str) -> Option<bool> {
    retcd::config::parse_go_bool(s).ok()
}

/// Go's time.ParseDuration (a negative duration counts as none).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let nanos = retcd::config::parse_go_duration(s).ok()?;
    Some(Duration::from_nanos(nanos.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const GET: &[Spec] = &[
        spec("prefix", Kind::Bool, "false", ""),
        spec("limit", Kind::Int, "0", ""),
    ];

    #[test]
    fn pflag_forms() {
        let p = parse(
            &args(&[
                "a",
                "--prefix",
                "-wjson",
                "--limit=3",
                "b",
                "--endpoints",
                "x,y",
            ]),
            &[GET, GLOBAL],
            None,
        )
        .unwrap();
        assert_eq!(p.args, ["a", "b"]);
        assert!(p.bool("prefix"));
        assert_eq!(p.str("write-out"), "json");
        assert_eq!(p.int("limit"), 3);
        assert_eq!(p.list("endpoints"), ["x", "y"]);
        assert_eq!(p.duration("dial-timeout"), Duration::from_secs(2));
        let err = |a: &[&str]| {
            parse(&args(a), &[GET, GLOBAL], None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&["--nope"]), "unknown flag: --nope");
        assert_eq!(err(&["-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(err(&["--limit"]), "flag needs an argument: --limit");
        assert_eq!(
            err(&["--limit=x"]),
            "invalid argument \"x\" for \"--limit\" flag: strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        let p = parse(&args(&["--", "-k"]), &[GET, GLOBAL], None).unwrap();
        assert_eq!(p.args, ["-k"]);
    }

    #[test]
    fn base_zero_integers_as_go_parses_them() {
        assert_eq!(go_parse_int_base0("0x10"), Ok(16));
        assert_eq!(go_parse_int_base0("0x_10"), Ok(16));
        assert_eq!(go_parse_int_base0("-020"), Ok(-16));
        assert_eq!(go_parse_int_base0("1_000"), Ok(1000));
        assert_eq!(
            go_parse_int_base0("_1"),
            Err("strconv.ParseInt: parsing \"_1\": invalid syntax".to_string())
        );
        assert_eq!(
            go_parse_int_base0("9223372036854775808"),
            Err(
                "strconv.ParseInt: parsing \"9223372036854775808\": value out of range".to_string()
            )
        );
        assert_eq!(go_parse_int_base0("-9223372036854775808"), Ok(i64::MIN));
    }

    #[test]
    fn environment() {
        let env = |vars: &[(&str, &str)]| Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: GLOBAL.iter().collect(),
            own: &["ETCDCTL_API"],
        };
        let e = env(&[
            ("ETCDCTL_ENDPOINTS", "http://e:1"),
            ("ETCDCTL_DIAL_TIMEOUT", "abc"),
            ("ETCDCTL_WRITE_OUT", ""),
        ]);
        let p = parse(&args(&["k"]), &[GET, GLOBAL], Some(&e)).unwrap();
        assert_eq!(p.list("endpoints"), ["http://e:1"]);
        // A bad value is ignored, an empty one not used.
        assert_eq!(p.duration("dial-timeout"), Duration::from_secs(2));
        assert_eq!(p.str("write-out"), "simple");
        let err = parse(&args(&["--endpoints=a"]), &[GET, GLOBAL], Some(&e)).unwrap_err();
        assert_eq!(err, ParseError::EnvConflict("ETCDCTL_ENDPOINTS".into()));
        assert!(
            err.to_string()
                .starts_with("conflicting environment variable \"ETCDCTL_ENDPOINTS\"")
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
