//! `ETCD_*` environment variables: each flag's variable is `ETCD_` plus the
//! flag name upper-cased with `-` turned into `_`.
//!
//! Invariants, as in etcd: a variable only fills a flag the command line left
//! unset, and one set for a flag the command line also sets is an error
//! rather than a silent pick; an empty variable counts as unset. Variables
//! that look like ours but name no flag are reported, not refused.
//!
//! The top-level flow in `config` applies the variables only when no config
//! file is given; with a file, `file` uses the same naming to report them as
//! ignored.

use super::ConfigError;
use super::flags::SPECS;
use super::settings::{Origin, Settings, set_parsed};

/// Prefix of the environment variables that stand for flags.
const ENV_PREFIX: &str = "ETCD_";
/// Environment variables etcd reads that are not flags.
const OTHER_KNOWN_ENV: &[&str] = &["ETCD_UNSUPPORTED_ARCH"];

pub(super) fn env_var_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        flag.to_ascii_uppercase().replace('-', "_")
    )
}

/// etcd treats an empty variable as unset.
pub(super) fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Fills flags not given on the command line from `ETCD_*` variables.
pub(super) fn apply_env(
    settings: &mut Settings,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for spec in SPECS {
        if spec.name == "config-file" {
            continue;
        }
        let var = env_var_name(spec.name);
        let Some(value) = env(&var) else { continue };
        if spec.name == "version" {
            if !value.is_empty() {
                warnings.push(format!(
                    "environment variable {var} cannot be set (it would stand for --version); ignored"
                ));
            }
            continue;
        }
        if value.is_empty() {
            continue;
        }
        if settings.get(spec.name).is_some() {
            // etcd refuses to start rather than pick one of the two.
            return Err(ConfigError::Invalid(format!(
                "conflicting environment variable {var} is shadowed by corresponding command-line \
                 flag --{} (either unset environment variable or disable flag)",
                spec.name
            )));
        }
        let origin = Origin::Env {
            var: var.clone(),
            flag: spec.name,
        };
        set_parsed(settings, spec, &value, origin)?;
    }
    Ok(())
}

/// Catches misspelt variables, which would otherwise be dropped without a word.
pub(super) fn warn_unrecognized_env(names: &[String], warnings: &mut Vec<String>) {
    let mut unknown: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(ENV_PREFIX))
        .filter(|n| !OTHER_KNOWN_ENV.contains(&n.as_str()))
        .filter(|n| !SPECS.iter().any(|s| env_var_name(s.name) == **n))
        .collect();
    unknown.sort();
    unknown.dedup();
    for name in unknown {
        warnings.push(format!("unrecognized environment variable {name}; ignored"));
    }
}
