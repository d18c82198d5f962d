//! The auth section of the configuration: `--auth-token` parsed as etcd parses it (its
//! decomposeOpts, then the JWT provider's options), `--auth-token-ttl` and `--bcrypt-cost`.
//!
//! A JWT provider's key files are read and its keys loaded here, so a bad option or key stops
//! the start with etcd's message ("auth: invalid auth options", "auth: missing key data", "auth:
//! public and private keys don't match", …; what etcd only logs before "auth: invalid auth
//! options" is in parentheses after it). Only [`super::build`] calls [`auth`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use retcd_net::auth::jwt::{DEFAULT_TTL, JwtError, JwtTokens, SignMethod};

use super::ConfigError;
use super::settings::{Settings, str_of, u64_of, value};
use super::value::parse_go_duration;

/// `--auth-token`: the token provider.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthTokenConfig {
    /// `simple` (options after it are accepted and ignored, as in etcd).
    Simple,
    /// `jwt,sign-method=…[,pub-key=…][,priv-key=…][,ttl=…]`.
    Jwt(JwtConfig),
    /// An empty token type: etcd's nop provider (no token is valid, Authenticate fails).
    None,
}

/// The JWT provider's options and the provider loaded from them.
#[derive(Clone)]
pub struct JwtConfig {
    pub sign_method: SignMethod,
    pub pub_key: Option<PathBuf>,
    pub priv_key: Option<PathBuf>,
    /// How long a token is valid after it is signed (`ttl`, 5 min by default).
    pub ttl: Duration,
    /// The keys of `pub_key`/`priv_key`, loaded and checked at start-up.
    pub tokens: Arc<JwtTokens>,
}

impl PartialEq for JwtConfig {
    /// The same options (the keys were loaded from the same files).
    fn eq(&self, other: &JwtConfig) -> bool {
        (self.sign_method, &self.pub_key, &self.priv_key, self.ttl)
            == (
                other.sign_method,
                &other.pub_key,
                &other.priv_key,
                other.ttl,
            )
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("sign_method", &self.sign_method)
            .field("pub_key", &self.pub_key)
            .field("priv_key", &self.priv_key)
            .field("ttl", &self.ttl)
            .field("verify_only", &self.tokens.verify_only())
            .finish()
    }
}

/// The auth part of [`super::Config`], under its field names.
pub(super) struct Auth {
    pub auth_token: AuthTokenConfig,
    pub auth_token_ttl: Duration,
    pub bcrypt_cost: u32,
}

pub(super) fn auth(settings: &Settings, warnings: &mut Vec<String>) -> Result<Auth, ConfigError> {
    let cost = u64_of(settings, "bcrypt-cost");
    // etcd's NewAuthStore: a cost outside bcrypt's range is replaced by the default.
    let bcrypt_cost = if (4..=31).contains(&cost) {
        cost as u32
    } else {
        warnings.push(format!(
            "use default bcrypt cost instead of the invalid given cost {cost} (min 4, max 31)"
        ));
        10
    };
    Ok(Auth {
        auth_token: auth_token(settings, warnings)?,
        auth_token_ttl: Duration::from_secs(u64_of(settings, "auth-token-ttl")),
        bcrypt_cost,
    })
}

/// The JWT options etcd knows; others are warned about.
const JWT_OPTIONS: [&str; 4] = ["sign-method", "pub-key", "priv-key", "ttl"];

/// etcd's NewTokenProvider, up to loading the keys.
fn auth_token(
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> Result<AuthTokenConfig, ConfigError> {
    let given = str_of(settings, "auth-token");
    let fail = |reason: String| ConfigError::InvalidValue {
        origin: value(settings, "auth-token").1.to_string(),
        value: given.clone(),
        reason,
    };
    let invalid = |detail: String| fail(format!("auth: invalid auth options ({detail})"));
    // decomposeOpts: the type, then name=value pairs, each name once.
    let mut parts = given.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut opts: Vec<(&str, &str)> = Vec::new();
    for part in parts {
        let pair: Vec<&str> = part.split('=').collect();
        let [name, v] = pair[..] else {
            return Err(invalid(format!("invalid token specific option: {given}")));
        };
        if opts.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!(
                "invalid token specific option, duplicated parameters ({name}): {given}"
            )));
        }
        opts.push((name, v));
    }
    let opt = |name: &str| {
        opts.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    };
    match kind {
        "simple" => return Ok(AuthTokenConfig::Simple),
        "" => return Ok(AuthTokenConfig::None),
        "jwt" => {}
        other => return Err(invalid(format!("unknown token type: {other}"))),
    }

    // jwtOptions.ParseWithDefaults: ttl, the key files, then the method.
    let problem = |detail: String| invalid(format!("problem loading JWT options: {detail}"));
    let ttl = match opt("ttl") {
        None => DEFAULT_TTL,
        Some(v) => {
            let nanos = parse_go_duration(v).map_err(|e| problem(format!("ttl {v:?}: {e}")))?;
            // A token with a TTL of 0 or less expires as it is signed, as in etcd.
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
        }
    };
    let read = |name: &str| -> Result<Option<(PathBuf, Vec<u8>)>, ConfigError> {
        let Some(path) = opt(name) else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|e| problem(format!("open {path}: {e}")))?;
        Ok(Some((PathBuf::from(path), bytes)))
    };
    let public = read("pub-key")?;
    let private = read("priv-key")?;
    let method = opt("sign-method").unwrap_or_default();
    let Some(sign_method) = SignMethod::from_alg(method) else {
        return Err(if method == "none" {
            // golang-jwt knows "none"; etcd then finds no key type for it.
            fail("unsupported signing method: none".to_string())
        } else {
            problem("auth: invalid auth signature method".to_string())
        });
    };
    let unknown: Vec<&str> = opts
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !JWT_OPTIONS.contains(n))
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!("unknown JWT options: {unknown:?}"));
    }

    let tokens = JwtTokens::load(
        sign_method,
        public.as_ref().map(|(_, k)| &k[..]),
        private.as_ref().map(|(_, k)| &k[..]),
        ttl,
    )
    .map_err(|e| match e {
        JwtError::BadKey { which, reason } => {
            let file = if which == "public" { &public } else { &private };
            let path = file.as_ref().map(|(p, _)| p.display().to_string());
            fail(format!(
                "{which} key {}: {reason}",
                path.unwrap_or_default()
            ))
        }
        other => fail(other.to_string()),
    })?;
    Ok(AuthTokenConfig::Jwt(JwtConfig {
        sign_method,
        pub_key: public.map(|(p, _)| p),
        priv_key: private.map(|(p, _)| p),
        ttl,
        tokens: Arc::new(tokens),
    }))
}
