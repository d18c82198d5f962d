//! The auto-compaction section: `--auto-compaction-mode` and `--auto-compaction-retention`,
//! read as etcd 3.5 reads them (`embed.Config.Validate`, `parseCompactionRetention`,
//! `v3compactor.New`), with etcd's messages for what it refuses.
//!
//! The retention is a string: a non-negative decimal integer is hours in periodic mode and
//! revisions in revision mode; anything else is a Go duration ("30m", "1h30m") whatever the mode
//! (so revision mode given "5m" keeps 300,000,000,000 revisions, as etcd does). 0 turns automatic
//! compaction off. The schedule itself is `retcd_raft::compactor`'s.

use std::time::Duration;

use retcd_raft::compactor::Retention;

use super::ConfigError;
use super::settings::{Settings, str_of};
use super::value::parse_go_duration;

pub(super) fn auto_compaction(settings: &Settings) -> Result<Option<Retention>, ConfigError> {
    let mode = str_of(settings, "auto-compaction-mode");
    // etcd's Validate: an empty mode passes (and then only a zero retention starts).
    if !matches!(mode.as_str(), "" | "periodic" | "revision") {
        return Err(ConfigError::Invalid(format!(
            "unknown auto-compaction-mode {mode:?}"
        )));
    }
    let retention = str_of(settings, "auto-compaction-retention");
    // etcd: an unset retention is "0".
    let retention = if retention.is_empty() {
        "0".to_string()
    } else {
        retention
    };
    parse_retention(&mode, &retention).map_err(ConfigError::Invalid)
}

/// etcd's `parseCompactionRetention` then `v3compactor.New`; `Ok(None)` is "off".
fn parse_retention(mode: &str, retention: &str) -> Result<Option<Retention>, String> {
    let nanos = match go_atoi(retention) {
        Some(n) if n >= 0 => match mode {
            "revision" => return Ok((n > 0).then_some(Retention::Revisions(n))),
            "periodic" => {
                let hours = n.checked_mul(3_600_000_000_000);
                // Go's multiplication wraps silently; a retention of over a million years is
                // refused here instead of turning into a wrapped (possibly negative) one.
                hours.ok_or_else(|| {
                    format!("error parsing CompactionRetention: {retention:?} hours is too long")
                })?
            }
            // An empty mode turns an integer retention into 0 in etcd.
            _ => 0,
        },
        _ => parse_go_duration(retention).map_err(|_| {
            format!(
                "error parsing CompactionRetention: {}",
                go_duration_error(retention)
            )
        })?,
    };
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 0 {
        // etcd 3.5 starts with a negative duration and then, in periodic mode, compacts in a
        // busy loop to the newest revisions (in revision mode it asks for a future revision
        // every 5 min); neither is a retention, so retcd refuses it.
        return Err(format!(
            "error parsing CompactionRetention: negative retention {retention:?}"
        ));
    }
    match mode {
        "periodic" => Ok(Some(Retention::Periodic(Duration::from_nanos(
            nanos as u64,
        )))),
        "revision" => Ok(Some(Retention::Revisions(nanos))),
        // v3compactor.New's refusal of the empty mode.
        _ => Err(format!("unsupported compaction mode {mode}")),
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform: an optional sign and decimal digits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The text of Go's `time.ParseDuration` error for an input it refuses (retcd's own parser
/// words its errors for flags; this section reports etcd's exact message).
fn go_duration_error(input: &str) -> String {
    let invalid = format!("time: invalid duration {input:?}");
    let mut s = input.strip_prefix(['+', '-']).unwrap_or(input);
    if s.is_empty() {
        return invalid;
    }
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            s = &rest[frac_len..];
        }
        // Go: a number must start here, and its integer part must fit.
        if (int_len == 0 && frac_len == 0)
            || int_part.parse::<u64>().map_or(int_len > 0, |v| v > 1 << 63)
        {
            return invalid;
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        if unit.is_empty() {
            return format!("time: missing unit in duration {input:?}");
        }
        if !matches!(
            unit,
            "ns" | "us" | "\u{b5}s" | "\u{3bc}s" | "ms" | "s" | "m" | "h"
        ) {
            return format!("time: unknown unit {unit:?} in duration {input:?}");
        }
        s = &s[unit_len..];
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn retentions_as_etcd_reads_them() {
        let p = |r: &str| parse_retention("periodic", r);
        let r = |r: &str| parse_retention("revision", r);
        assert_eq!(p("1"), Ok(Some(Retention::Periodic(H))));
        assert_eq!(p("72"), Ok(Some(Retention::Periodic(72 * H))));
        assert_eq!(p("+2"), Ok(Some(Retention::Periodic(2 * H))));
        assert_eq!(p("30m"), Ok(Some(Retention::Periodic(H / 2))));
        assert_eq!(
            p("2s"),
            Ok(Some(Retention::Periodic(Duration::from_secs(2))))
        );
        assert_eq!(p("1h30m"), Ok(Some(Retention::Periodic(H * 3 / 2))));
        assert_eq!(p("0"), Ok(None));
        assert_eq!(p("0s"), Ok(None));
        assert_eq!(r("1000"), Ok(Some(Retention::Revisions(1000))));
        assert_eq!(r("0"), Ok(None));
        // etcd reads a duration as nanoseconds of revisions.
        assert_eq!(r("5m"), Ok(Some(Retention::Revisions(300_000_000_000))));
        // An empty mode (a config file's "") turns an integer into 0, and refuses the rest.
        assert_eq!(parse_retention("", "5"), Ok(None));
        assert_eq!(
            parse_retention("", "5m"),
            Err("unsupported compaction mode ".to_string())
        );
    }

    #[test]
    fn etcds_messages_for_bad_retentions() {
        let p = |r: &str| parse_retention("periodic", r).unwrap_err();
        assert_eq!(
            p("abc"),
            r#"error parsing CompactionRetention: time: invalid duration "abc""#
        );
        assert_eq!(
            p("1d"),
            r#"error parsing CompactionRetention: time: unknown unit "d" in duration "1d""#
        );
        assert_eq!(
            p("-1"),
            r#"error parsing CompactionRetention: time: missing unit in duration "-1""#
        );
        assert_eq!(
            p("1.5"),
            r#"error parsing CompactionRetention: time: missing unit in duration "1.5""#
        );
        assert_eq!(
            parse_retention("revision", "ten").unwrap_err(),
            r#"error parsing CompactionRetention: time: invalid duration "ten""#
        );
        assert_eq!(
            p("-1h"),
            r#"error parsing CompactionRetention: negative retention "-1h""#
        );
    }
}
