//! Typed setting values and the parsers that turn flag-syntax strings into
//! them, following Go's `strconv` and `time.ParseDuration` so that every
//! value etcd accepts is accepted here, and nothing more.
//!
//! Every source (command line, `ETCD_*` variables, and the YAML file once
//! `file` has rewritten each value in flag syntax) goes through
//! [`parse_value`], so one string means the same thing wherever it is
//! written. The [`Value`] variant always matches the flag's [`Kind`]; the
//! readers in `settings` rely on that and panic otherwise.
//!
//! Private to `config`.

use super::flags::{Kind, Spec};
use super::url::Url;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Bool(bool),
    U64(u64),
    I64(i64),
    /// Nanoseconds.
    Dur(i64),
    Str(String),
    List(Vec<String>),
    Urls(Vec<Url>),
}

pub(super) fn parse_value(kind: Kind, s: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Legacy => Value::Str(s.to_string()),
        Kind::Bool => Value::Bool(parse_go_bool(s)?),
        Kind::Str => Value::Str(s.to_string()),
        Kind::Uint => Value::U64(parse_go_uint(s, u64::MAX)?),
        Kind::Uint32 => Value::U64(parse_go_uint(s, u64::from(u32::MAX))?),
        Kind::Int => Value::I64(parse_go_int(s)?),
        Kind::Duration => Value::Dur(parse_go_duration(s)?),
        Kind::Urls => {
            let mut urls = Vec::new();
            if !s.is_empty() {
                for part in s.split(',') {
                    urls.push(Url::parse(part)?);
                }
            }
            urls.sort_by_key(|u| u.to_string());
            urls.dedup();
            Value::Urls(urls)
        }
        Kind::Strings => Value::List(if s.is_empty() {
            Vec::new()
        } else {
            s.split(',').map(str::to_string).collect()
        }),
        Kind::UniqueStrings => {
            let mut items: Vec<String> = s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            items.sort();
            items.dedup();
            Value::List(items)
        }
        Kind::Choice(valid) => {
            if !valid.contains(&s) {
                return Err(format!("must be one of: {}", valid.join(", ")));
            }
            Value::Str(s.to_string())
        }
        Kind::Choices(valid) => {
            let items: Vec<String> = s.split(',').map(str::to_string).collect();
            if let Some(bad) = items.iter().find(|i| !valid.contains(&i.as_str())) {
                return Err(format!("{bad:?} is not one of: {}", valid.join(", ")));
            }
            Value::List(items)
        }
    })
}

pub(super) fn default_value(spec: &Spec) -> Value {
    parse_value(spec.kind, spec.default).expect("flag defaults parse")
}

/// Whether a value asks for something; settings retcd lacks are only refused or warned
/// about when it does.
pub(super) fn differs_from_default(spec: &Spec, value: &Value) -> bool {
    match (spec.name, value) {
        // Empty and "*" both mean "allow all".
        ("cors" | "host-whitelist", Value::List(items)) => !items.iter().all(|i| i == "*"),
        _ => *value != default_value(spec),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("invalid boolean value (use true or false)".to_string()),
    }
}

/// Why Go's `strconv` refuses a number (the end of its error text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GoNumError {
    #[error("invalid syntax")]
    Syntax,
    #[error("value out of range")]
    Range,
}

/// Go's `strconv.ParseUint(s, 0, 64)`: decimal, `0x`, `0o`, `0b`, a leading `0` for octal, `_`
/// between digits (and after a base prefix).
fn parse_go_uint_base0(s: &str) -> Result<u64, GoNumError> {
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty()
        || digits.starts_with(['+', '-'])
        || digits.ends_with('_')
        || digits.contains("__")
        || (radix == 10 && digits.starts_with('_'))
    {
        return Err(GoNumError::Syntax);
    }
    let cleaned: String = digits.chars().filter(|&c| c != '_').collect();
    if cleaned.is_empty() {
        return Err(GoNumError::Syntax);
    }
    u64::from_str_radix(&cleaned, radix).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => GoNumError::Range,
        _ => GoNumError::Syntax,
    })
}

/// [`parse_go_uint_base0`] at most `max`, with the configuration's message.
fn parse_go_uint(s: &str, max: u64) -> Result<u64, String> {
    match parse_go_uint_base0(s) {
        Ok(v) if v <= max => Ok(v),
        _ => Err(format!("invalid unsigned integer (expected 0 to {max})")),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` (pflag's int flags parse this way too).
pub fn parse_go_int_base0(s: &str) -> Result<i64, GoNumError> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_go_uint_base0(rest)?;
    if neg {
        if magnitude > i64::MAX as u64 + 1 {
            return Err(GoNumError::Range);
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| GoNumError::Range)
    }
}

/// [`parse_go_int_base0`] with the configuration's message.
fn parse_go_int(s: &str) -> Result<i64, String> {
    parse_go_int_base0(s).map_err(|_| "invalid integer".to_string())
}

/// Go's `time.ParseDuration`, in nanoseconds: "300ms", "-1.5h", "2h45m".
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    let err = |what: &str| format!("invalid duration ({what}; e.g. 500ms, 10s, 1h30m)");
    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let limit: u128 = if neg {
        i64::MAX as u128 + 1
    } else {
        i64::MAX as u128
    };
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        s = &s[unit_len..];
        if int_part.len() > 20 {
            return Err(err("overflow"));
        }
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("overflow"))?
        };
        let mut nanos = whole * unit;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().map_err(|_| err("bad fraction"))?;
            nanos += frac * unit / 10u128.pow(digits.len() as u32);
        }
        total += nanos;
        if total > limit {
            return Err(err("overflow"));
        }
    }
    Ok(if neg {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_integers() {
        assert_eq!(parse_go_duration("10m"), Ok(600_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("-100ms"), Ok(-100_000_000));
        assert_eq!(parse_go_duration("3\u{b5}s"), Ok(3_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("3000000h").is_err());
        assert_eq!(parse_go_uint("1_000", u64::MAX), Ok(1000));
        assert_eq!(parse_go_uint("010", u64::MAX), Ok(8));
        assert_eq!(parse_go_uint("0b101", u64::MAX), Ok(5));
        assert!(parse_go_uint("+1", u64::MAX).is_err());
        assert!(parse_go_uint("4294967296", u64::from(u32::MAX)).is_err());
        assert_eq!(parse_go_int("-0x10"), Ok(-16));
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
        assert!(parse_go_int("9223372036854775808").is_err());
    }
}
