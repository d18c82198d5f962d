//! etcd's YAML config file (`--config-file` / `ETCD_CONFIG_FILE`), and etcd's
//! rule that a config file replaces every other flag and `ETCD_*` variable.
//!
//! The loader maps etcd's keys onto flag names (including the nested
//! `client-transport-security`, `peer-transport-security` and
//! `socket-options` tables), rewrites each YAML value in flag syntax and
//! parses it like a command-line value, so the builder cannot tell a file
//! from flags except through `file_mode`. Every origin names the key and its
//! line. Unknown keys only warn, as in etcd; security settings etcd would
//! silently drop (here or on the ignored command line and environment) are
//! refused instead, because running without them would be less secure than
//! asked.
//!
//! Called only by the top-level flow in `config`.

use std::path::Path;

use super::ConfigError;
use super::env::{env_var_name, non_empty};
use super::flags::{Kind, SPECS, Spec, Support, lookup, refusal_reason, spec};
use super::settings::{Origin, Setting, Settings};
use super::value::{differs_from_default, parse_value};

/// Keys of etcd's YAML file that are not flag names, mapped to the flags
/// that mean the same thing.
const TLS_YAML_KEYS: &[(&str, &str, &str)] = &[
    // (yaml key, client flag, peer flag)
    ("cert-file", "cert-file", "peer-cert-file"),
    ("key-file", "key-file", "peer-key-file"),
    (
        "client-cert-file",
        "client-cert-file",
        "peer-client-cert-file",
    ),
    ("client-key-file", "client-key-file", "peer-client-key-file"),
    (
        "client-cert-auth",
        "client-cert-auth",
        "peer-client-cert-auth",
    ),
    ("trusted-ca-file", "trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "auto-tls", "peer-auto-tls"),
    (
        "allowed-hostname",
        "client-cert-allowed-hostname",
        "peer-cert-allowed-hostname",
    ),
    ("allowed-cn", "", "peer-cert-allowed-cn"),
];

/// Flags that have no top-level key in etcd's config file.
const FLAG_ONLY: &[&str] = &[
    "raft-read-timeout",
    "raft-write-timeout",
    "socket-reuse-port",
    "socket-reuse-address",
    "experimental-snapshot-catchup-entries",
    "experimental-peer-skip-client-san-verification",
    "client-crl-file",
    "peer-crl-file",
    "cert-file",
    "key-file",
    "client-cert-file",
    "client-key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
    "client-cert-allowed-hostname",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-file",
    "peer-client-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
];

pub(super) fn load_config_file(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::ParseConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut loader = FileLoader {
        path,
        text: &text,
        settings: Settings::new(),
        warnings,
    };
    match &doc {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(map) => loader.top_level(map)?,
        _ => {
            return Err(ConfigError::ParseConfigFile {
                path: path.to_path_buf(),
                message: "the document must be a mapping of keys to values".to_string(),
            });
        }
    }
    Ok(loader.settings)
}

struct FileLoader<'a> {
    path: &'a Path,
    text: &'a str,
    settings: Settings,
    warnings: &'a mut Vec<String>,
}

impl FileLoader<'_> {
    fn origin(&self, key: &str, parent: Option<&str>) -> Origin {
        let full = match parent {
            Some(p) => format!("{p}.{key}"),
            None => key.to_string(),
        };
        Origin::File {
            path: self.path.to_path_buf(),
            key: full,
            line: key_line(self.text, key, parent),
        }
    }

    fn key_string(
        &self,
        key: &serde_yaml::Value,
        parent: Option<&str>,
    ) -> Result<String, ConfigError> {
        match key {
            serde_yaml::Value::String(s) => Ok(s.to_ascii_lowercase()),
            other => Err(ConfigError::ParseConfigFile {
                path: self.path.to_path_buf(),
                message: format!(
                    "keys must be strings, found {other:?}{}",
                    parent.map(|p| format!(" under `{p}`")).unwrap_or_default()
                ),
            }),
        }
    }

    fn top_level(&mut self, map: &serde_yaml::Mapping) -> Result<(), ConfigError> {
        for (key, value) in map {
            let key = self.key_string(key, None)?;
            match key.as_str() {
                "socket-options" => self.nested(
                    &key,
                    value,
                    &[
                        ("reuse-port", "socket-reuse-port"),
                        ("reuse-address", "socket-reuse-address"),
                    ],
                )?,
                "client-transport-security" | "peer-transport-security" => {
                    let peer = key.starts_with("peer");
                    let table: Vec<(&str, &str)> = TLS_YAML_KEYS
                        .iter()
                        .map(|(k, client, peer_flag)| (*k, if peer { *peer_flag } else { *client }))
                        .collect();
                    self.nested(&key, value, &table)?
                }
                "experimental-snapshot-catch-up-entries" => {
                    self.set("experimental-snapshot-catchup-entries", &key, None, value)?
                }
                _ => match lookup(&key) {
                    Some(spec)
                        if !FLAG_ONLY.contains(&spec.name)
                            && !matches!(spec.support, Support::Special | Support::Legacy) =>
                    {
                        self.set(spec.name, &key, None, value)?
                    }
                    Some(spec)
                        if (spec.support == Support::Security
                            || spec.is_implemented_security())
                            && !value.is_null() =>
                    {
                        // etcd would silently drop these (they are not keys of
                        // its file); running without them would be insecure.
                        let origin = self.origin(&key, None);
                        let raw = yaml_scalar(spec.kind, value).ok().flatten();
                        let harmless = raw
                            .and_then(|r| parse_value(spec.kind, &r).ok())
                            .is_some_and(|v| !differs_from_default(spec, &v));
                        if !harmless {
                            let besides = if spec.support == Support::Security {
                                format!("; besides, {}", refusal_reason(spec.name))
                            } else {
                                String::new()
                            };
                            return Err(ConfigError::Refused {
                                origin: origin.to_string(),
                                reason: format!(
                                    "etcd does not read this key at the top level of its config \
                                     file (TLS settings go under client-transport-security or \
                                     peer-transport-security) and would silently run without \
                                     it{besides}"
                                ),
                            });
                        }
                    }
                    _ => self.unknown(&key, None),
                },
            }
        }
        Ok(())
    }

    fn nested(
        &mut self,
        parent: &str,
        value: &serde_yaml::Value,
        table: &[(&str, &str)],
    ) -> Result<(), ConfigError> {
        let map = match value {
            serde_yaml::Value::Null => return Ok(()),
            serde_yaml::Value::Mapping(map) => map,
            _ => {
                let origin = self.origin(parent, None);
                return Err(ConfigError::InvalidValue {
                    origin: origin.to_string(),
                    value: format!("{value:?}"),
                    reason: "expected a mapping".to_string(),
                });
            }
        };
        for (key, value) in map {
            let key = self.key_string(key, Some(parent))?;
            match table.iter().find(|(k, _)| *k == key) {
                Some((_, "")) => {
                    // client-transport-security.allowed-cn: no flag of its own.
                    let items = yaml_scalar(Kind::Strings, value).ok().flatten();
                    if items.is_some_and(|s| !s.is_empty()) {
                        return Err(ConfigError::Refused {
                            origin: self.origin(&key, Some(parent)).to_string(),
                            reason: refusal_reason("cert-file").to_string(),
                        });
                    }
                }
                Some((_, flag)) => self.set(flag, &key, Some(parent), value)?,
                None => self.unknown(&key, Some(parent)),
            }
        }
        Ok(())
    }

    fn set(
        &mut self,
        flag: &str,
        key: &str,
        parent: Option<&str>,
        value: &serde_yaml::Value,
    ) -> Result<(), ConfigError> {
        let spec = spec(flag);
        let origin = self.origin(key, parent);
        let invalid = |reason: String| ConfigError::InvalidValue {
            origin: origin.to_string(),
            value: yaml_display(value),
            reason,
        };
        let Some(raw) = yaml_scalar(spec.kind, value).map_err(invalid)? else {
            return Ok(());
        };
        if flag == "initial-cluster-state" && raw.is_empty() {
            return Ok(());
        }
        let parsed = parse_value(spec.kind, &raw).map_err(invalid)?;
        self.settings.insert(
            spec.name,
            Setting {
                value: parsed,
                origin,
            },
        );
        Ok(())
    }

    fn unknown(&mut self, key: &str, parent: Option<&str>) {
        let origin = self.origin(key, parent);
        self.warnings.push(format!(
            "unknown {origin}; ignored (etcd ignores unknown keys too)"
        ));
    }
}

/// Turns a YAML value into the flag-syntax string for `kind`; `None` for null.
fn yaml_scalar(kind: Kind, value: &serde_yaml::Value) -> Result<Option<String>, String> {
    use serde_yaml::Value as Y;
    Ok(Some(match value {
        Y::Null => return Ok(None),
        Y::Bool(b) => b.to_string(),
        Y::Number(n) => match kind {
            // etcd reads YAML durations as integer nanoseconds.
            Kind::Duration => match n.as_i64() {
                Some(ns) => format!("{ns}ns"),
                None => return Err("a duration must be an integer number of nanoseconds".into()),
            },
            _ => n.to_string(),
        },
        Y::String(s) => match kind {
            // YAML 1.1 booleans, which etcd's YAML reader accepts.
            Kind::Bool => match s.to_ascii_lowercase().as_str() {
                "yes" | "y" | "on" => "true".to_string(),
                "no" | "n" | "off" => "false".to_string(),
                _ => s.clone(),
            },
            _ => s.clone(),
        },
        Y::Sequence(items) => match kind {
            Kind::Strings | Kind::UniqueStrings | Kind::Urls | Kind::Choices(_) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        Y::String(s) => parts.push(s.clone()),
                        Y::Number(n) => parts.push(n.to_string()),
                        Y::Bool(b) => parts.push(b.to_string()),
                        _ => return Err("list items must be plain values".into()),
                    }
                }
                parts.join(",")
            }
            _ => return Err("expected a single value, not a list".into()),
        },
        Y::Mapping(_) => return Err("expected a single value, not a mapping".into()),
        Y::Tagged(_) => return Err("tagged values are not supported".into()),
    }))
}

fn yaml_display(value: &serde_yaml::Value) -> String {
    match serde_yaml::to_string(value) {
        Ok(s) => s.trim_end().to_string(),
        Err(_) => format!("{value:?}"),
    }
}

/// 1-based line of `key` (under `parent` if given) in the YAML text.
fn key_line(text: &str, key: &str, parent: Option<&str>) -> Option<usize> {
    let is_key_line = |line: &str, key: &str| {
        let t = line.trim_start().trim_start_matches("- ");
        let t = t.trim_start_matches(['"', '\'']);
        t.len() > key.len()
            && t[..key.len()].eq_ignore_ascii_case(key)
            && t[key.len()..]
                .trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
    };
    let lines: Vec<&str> = text.lines().collect();
    let top_level = |line: &str| !line.starts_with([' ', '\t']) && !line.trim().is_empty();
    match parent {
        None => lines
            .iter()
            .position(|l| top_level(l) && is_key_line(l, key))
            .map(|i| i + 1),
        Some(parent) => {
            let start = lines
                .iter()
                .position(|l| top_level(l) && is_key_line(l, parent))?;
            lines[start + 1..]
                .iter()
                .take_while(|l| !top_level(l) || l.trim_start().starts_with('#'))
                .position(|l| is_key_line(l, key))
                .map(|i| start + 2 + i)
        }
    }
}

/// With a config file etcd ignores every other flag and variable. Report
/// them, but refuse security settings rather than silently drop them.
pub(super) fn refuse_or_report_ignored(
    cmdline: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut ignored_flags = Vec::new();
    for (name, setting) in cmdline {
        if matches!(*name, "config-file" | "version") {
            continue;
        }
        check_security_only(spec(name), setting)?;
        ignored_flags.push(format!("--{name}"));
    }
    let mut ignored_env = Vec::new();
    for spec in SPECS.iter().filter(|s| s.name != "config-file") {
        let var = env_var_name(spec.name);
        let Some(value) = non_empty(env(&var)) else {
            continue;
        };
        if let Ok(parsed) = parse_value(spec.kind, &value) {
            let setting = Setting {
                value: parsed,
                origin: Origin::Env {
                    var: var.clone(),
                    flag: spec.name,
                },
            };
            check_security_only(spec, &setting)?;
        }
        ignored_env.push(var);
    }
    if !ignored_flags.is_empty() {
        warnings.push(format!(
            "config file {} is used, so these command-line flags are ignored (as etcd does): {}",
            path.display(),
            ignored_flags.join(", ")
        ));
    }
    if !ignored_env.is_empty() {
        warnings.push(format!(
            "config file {} is used, so these environment variables are ignored (as etcd does): {}",
            path.display(),
            ignored_env.join(", ")
        ));
    }
    Ok(())
}

/// Refuses a security setting that the config file would make etcd drop;
/// anything else given besides the file is only reported as ignored.
fn check_security_only(spec: &Spec, setting: &Setting) -> Result<(), ConfigError> {
    let reason = match spec.support {
        Support::Security if differs_from_default(spec, &setting.value) => {
            refusal_reason(spec.name)
        }
        _ if spec.is_implemented_security() && differs_from_default(spec, &setting.value) => {
            "a transport security setting; put it in the config file instead"
        }
        _ => return Ok(()),
    };
    Err(ConfigError::Refused {
        origin: setting.origin.to_string(),
        reason: format!("{reason} (etcd would silently ignore it because a config file is given)"),
    })
}
