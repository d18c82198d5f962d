//! The command line, parsed with Go's `flag` package rules as etcd does:
//! `-flag` and `--flag` alike, `--flag=value` or `--flag value`, boolean flags
//! never take the next argument, parsing stops at `--`, and the last
//! occurrence of a flag wins.
//!
//! A non-flag argument left over is an error (etcd takes no positional
//! arguments); `-h`/`--help` stops parsing and asks for the help text. Only
//! called by the top-level flow in `config`, after etcd's subcommands have
//! been ruled out.

use super::ConfigError;
use super::flags::{Kind, lookup};
use super::settings::{Origin, Settings, set_parsed};

pub(super) enum CommandLine {
    Help,
    Settings(Settings),
}

/// Go `flag.FlagSet.Parse`: stops at the first non-flag argument or `--`.
pub(super) fn parse_command_line(args: &[String]) -> Result<CommandLine, ConfigError> {
    let mut settings = Settings::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let body = match arg.strip_prefix("--") {
            Some("") => {
                i += 1;
                break;
            }
            Some(rest) => rest,
            None => &arg[1..],
        };
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::BadFlagSyntax { arg: arg.clone() });
        }
        i += 1;
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(spec) = lookup(name) else {
            if name == "h" || name == "help" {
                return Ok(CommandLine::Help);
            }
            return Err(ConfigError::UnknownFlag {
                flag: arg_flag(arg),
            });
        };
        let value = if matches!(spec.kind, Kind::Bool | Kind::Legacy) {
            inline.unwrap_or("true").to_string()
        } else if let Some(v) = inline {
            v.to_string()
        } else if i < args.len() {
            i += 1;
            args[i - 1].clone()
        } else {
            return Err(ConfigError::MissingValue {
                flag: spec.name.to_string(),
            });
        };
        set_parsed(&mut settings, spec, &value, Origin::Flag(spec.name))?;
    }
    if let Some(extra) = args.get(i) {
        return Err(ConfigError::NotAFlag { arg: extra.clone() });
    }
    Ok(CommandLine::Settings(settings))
}

/// `--foo=bar` → `--foo` for error messages.
fn arg_flag(arg: &str) -> String {
    arg.split_once('=').map_or(arg, |(f, _)| f).to_string()
}
