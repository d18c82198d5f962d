//! Settings as gathered from one source (command line plus `ETCD_*`
//! variables, or the config file), each remembering where it was set, and the
//! typed readers the builder uses.
//!
//! A [`Settings`] map holds only what was given; a missing name means etcd's
//! default, which the readers fill in from the flag table. Every value was
//! parsed with its flag's kind, so a reader asked for the wrong type is a bug
//! in this crate and panics. [`Origin`] exists so that every error and warning
//! names the flag, variable or file key (with its line) to fix.
//!
//! Private to `config`; sources write settings, `build` (and future section
//! modules such as TLS) read them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::ConfigError;
use super::flags::{Spec, spec};
use super::url::Url;
use super::value::{Value, default_value, parse_value};

#[derive(Clone, Debug)]
pub(super) enum Origin {
    Default,
    Flag(&'static str),
    Env {
        var: String,
        flag: &'static str,
    },
    File {
        path: PathBuf,
        key: String,
        line: Option<usize>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::Flag(name) => write!(f, "flag --{name}"),
            Origin::Env { var, flag } => write!(f, "environment variable {var} (flag --{flag})"),
            Origin::File { path, key, line } => {
                write!(f, "key `{key}` in config file {}", path.display())?;
                if let Some(line) = line {
                    write!(f, " (line {line})")?;
                }
                Ok(())
            }
        }
    }
}

impl Origin {
    /// Suffix for warnings that already name the flag.
    pub(super) fn suffix(&self) -> String {
        match self {
            Origin::Default | Origin::Flag(_) => String::new(),
            other => format!(" (set by {other})"),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Setting {
    pub(super) value: Value,
    pub(super) origin: Origin,
}

/// Ordered by name so that warnings come out in a stable order.
pub(super) type Settings = BTreeMap<&'static str, Setting>;

/// Parses `value` (command-line syntax) for the flag `spec` and records it as set by `origin`.
pub(super) fn set_parsed(
    settings: &mut Settings,
    spec: &Spec,
    value: &str,
    origin: Origin,
) -> Result<(), ConfigError> {
    let parsed = parse_value(spec.kind, value).map_err(|reason| ConfigError::InvalidValue {
        origin: origin.to_string(),
        value: value.to_string(),
        reason,
    })?;
    settings.insert(
        spec.name,
        Setting {
            value: parsed,
            origin,
        },
    );
    Ok(())
}

/// The setting `name`, or its default when it was not given.
pub(super) fn value(settings: &Settings, name: &'static str) -> (Value, Origin) {
    match settings.get(name) {
        Some(s) => (s.value.clone(), s.origin.clone()),
        None => (default_value(spec(name)), Origin::Default),
    }
}

/// `fn $getter(settings, name) -> $ty`: the value of the setting `name`, whose spec kind makes it a
/// `Value::$variant` (`$what` names that kind in the panic if it does not).
macro_rules! value_getter {
    ($getter:ident, $variant:ident, $ty:ty, $what:literal) => {
        pub(super) fn $getter(settings: &Settings, name: &'static str) -> $ty {
            match value(settings, name).0 {
                Value::$variant(v) => v,
                other => panic!("--{} is not {}: {:?}", name, $what, other),
            }
        }
    };
}

value_getter!(str_of, Str, String, "a string");
value_getter!(u64_of, U64, u64, "unsigned");
value_getter!(i64_of, I64, i64, "an integer");
value_getter!(bool_of, Bool, bool, "a boolean");
value_getter!(dur_of, Dur, i64, "a duration");
value_getter!(list_of, List, Vec<String>, "a list");

/// URL list; an empty value keeps etcd's default, as etcd does.
pub(super) fn urls_of(settings: &Settings, name: &'static str) -> (Vec<Url>, Origin) {
    match value(settings, name) {
        (Value::Urls(urls), origin) if !urls.is_empty() => (urls, origin),
        (Value::Urls(_), origin) => match default_value(spec(name)) {
            Value::Urls(urls) => (urls, origin),
            _ => unreachable!(),
        },
        (other, _) => panic!("--{name} is not a URL list: {other:?}"),
    }
}

pub(super) fn usize_of(settings: &Settings, name: &'static str) -> Result<usize, ConfigError> {
    let v = u64_of(settings, name);
    usize::try_from(v)
        .map_err(|_| invalid_setting(settings, name, v.to_string(), "too large for this platform"))
}

/// [`ConfigError::InvalidValue`] for the value `given` to the setting `name`, naming where it was
/// set.
pub(super) fn invalid_setting(
    settings: &Settings,
    name: &'static str,
    given: String,
    reason: &str,
) -> ConfigError {
    ConfigError::InvalidValue {
        origin: value(settings, name).1.to_string(),
        value: given,
        reason: reason.to_string(),
    }
}
