//! The TLS section of the configuration: the client transport's files and checks
//! (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`,
//! `--client-cert-allowed-hostname`, `--auto-tls`, `--self-signed-cert-validity`), the peer
//! transport's (`--peer-*`, `--experimental-peer-skip-client-san-verification`) and the policy
//! every TLS listener shares (`--cipher-suites`, `--tls-min-version`, `--tls-max-version`), with
//! etcd's validation and wording.
//!
//! Only [`super::build`] calls [`tls`], after the URLs are known.

use std::path::PathBuf;

use retcd_net::tls::{TlsFiles, TlsPolicy, TlsVersion, check_cipher_suites};

use super::settings::{Settings, bool_of, invalid_setting, list_of, str_of, u64_of};
use super::url::Url;
use super::{ConfigError, Scheme};

/// The TLS part of [`super::Config`], under its field names.
pub(super) struct Tls {
    pub client_tls: Option<TlsFiles>,
    pub client_auto_tls: bool,
    pub self_signed_cert_validity: u64,
    pub tls_policy: TlsPolicy,
    pub peer_tls: Option<TlsFiles>,
    pub peer_client_cert: Option<(PathBuf, PathBuf)>,
    pub peer_auto_tls: bool,
    pub peer_skip_client_san_verification: bool,
}

/// etcd's message for a certificate given without its key, or a key without its certificate.
const BOTH: &str = "KeyFile and CertFile must both be present[key: {key}, cert: {cert}]";

/// A certificate and key flag pair: both or neither (etcd's message otherwise).
fn pair(
    settings: &Settings,
    cert: &'static str,
    key: &'static str,
    message: &str,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (path_of(settings, cert), path_of(settings, key)) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (c, k) => {
            let show = |p: Option<PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
            Err(ConfigError::Invalid(
                message
                    .replacen("{key}", &show(k), 1)
                    .replacen("{cert}", &show(c), 1),
            ))
        }
    }
}

/// Go's `%q` of a string list: `["a" "b"]`.
fn go_quoted(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

fn path_of(settings: &Settings, name: &'static str) -> Option<PathBuf> {
    Some(str_of(settings, name))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// A list flag as etcd's `StringsValue` would hold it, without its empty items (an empty flag
/// value is no list).
fn names_of(settings: &Settings, name: &'static str) -> Vec<String> {
    list_of(settings, name)
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
}

pub(super) fn tls(
    settings: &Settings,
    listen_client_urls: &[Url],
    listen_peer_urls: &[Url],
    warnings: &mut Vec<String>,
) -> Result<Tls, ConfigError> {
    let tls_policy = policy(settings)?;
    let client_auto_tls = bool_of(settings, "auto-tls");
    let self_signed_cert_validity = u64_of(settings, "self-signed-cert-validity");
    let client_tls =
        pair(settings, "cert-file", "key-file", BOTH)?.map(|(cert_file, key_file)| TlsFiles {
            cert_file,
            key_file,
            trusted_ca_file: path_of(settings, "trusted-ca-file"),
            client_cert_auth: bool_of(settings, "client-cert-auth"),
            crl_file: path_of(settings, "client-crl-file"),
            allowed_cn: Vec::new(),
            allowed_hostname: names_of(settings, "client-cert-allowed-hostname"),
        });
    if client_auto_tls && client_tls.is_some() {
        warnings.push("ignoring client auto TLS since certs given".into());
    }
    let auto = client_auto_tls && client_tls.is_none();
    for url in listen_client_urls {
        match url.scheme {
            Scheme::Https if client_tls.is_none() && !auto => {
                return Err(ConfigError::Invalid(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} \
                     with HTTPS scheme"
                )));
            }
            Scheme::Http if client_tls.is_some() => warnings.push(format!(
                "scheme is http or unix while key and cert files are present; ignoring key and \
                 cert files (client-url {url})"
            )),
            _ => {}
        }
    }
    let Peer {
        peer_tls,
        peer_client_cert,
        peer_auto_tls,
        peer_skip_client_san_verification,
    } = peer(settings, listen_peer_urls, warnings)?;
    // etcd checks the validity only where it generates a certificate.
    if (auto || peer_auto_tls) && self_signed_cert_validity == 0 {
        return Err(invalid_setting(
            settings,
            "self-signed-cert-validity",
            "0".into(),
            "selfSignedCertValidity is invalid,it should be greater than 0",
        ));
    }
    Ok(Tls {
        client_tls,
        client_auto_tls: auto,
        self_signed_cert_validity,
        tls_policy,
        peer_tls,
        peer_client_cert,
        peer_auto_tls,
        peer_skip_client_san_verification,
    })
}

struct Peer {
    peer_tls: Option<TlsFiles>,
    peer_client_cert: Option<(PathBuf, PathBuf)>,
    peer_auto_tls: bool,
    peer_skip_client_san_verification: bool,
}

fn peer(
    settings: &Settings,
    listen_peer_urls: &[Url],
    warnings: &mut Vec<String>,
) -> Result<Peer, ConfigError> {
    const CLIENT_BOTH: &str = "ClientKeyFile and ClientCertFile must both be present or both absent: key: {key}, cert: {cert}]";
    let allowed_cn = names_of(settings, "peer-cert-allowed-cn");
    let allowed_hostname = names_of(settings, "peer-cert-allowed-hostname");
    if !allowed_cn.is_empty() && !allowed_hostname.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "AllowedCNs and AllowedHostnames are mutually exclusive (cns={}, hostnames={})",
            go_quoted(&allowed_cn),
            go_quoted(&allowed_hostname)
        )));
    }
    let peer_tls =
        pair(settings, "peer-cert-file", "peer-key-file", BOTH)?.map(|(cert_file, key_file)| {
            TlsFiles {
                cert_file,
                key_file,
                trusted_ca_file: path_of(settings, "peer-trusted-ca-file"),
                client_cert_auth: bool_of(settings, "peer-client-cert-auth"),
                crl_file: path_of(settings, "peer-crl-file"),
                allowed_cn,
                allowed_hostname,
            }
        });
    let peer_client_cert = pair(
        settings,
        "peer-client-cert-file",
        "peer-client-key-file",
        CLIENT_BOTH,
    )?;
    let auto_asked = bool_of(settings, "peer-auto-tls");
    if auto_asked && peer_tls.is_some() {
        warnings.push("ignoring peer auto TLS since certs given".into());
    }
    let peer_auto_tls = auto_asked && peer_tls.is_none();
    for url in listen_peer_urls {
        match url.scheme {
            Scheme::Https if peer_tls.is_none() && !peer_auto_tls => {
                return Err(ConfigError::Invalid(format!(
                    "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
                    url.host_port()
                )));
            }
            Scheme::Http if peer_tls.is_some() => warnings.push(format!(
                "scheme is HTTP while key and cert files are present; ignoring key and cert \
                 files (peer-url {url})"
            )),
            _ => {}
        }
    }
    Ok(Peer {
        peer_tls,
        peer_client_cert,
        peer_auto_tls,
        peer_skip_client_san_verification: bool_of(
            settings,
            "experimental-peer-skip-client-san-verification",
        ),
    })
}

fn policy(settings: &Settings) -> Result<TlsPolicy, ConfigError> {
    let version = |name: &'static str| -> Result<Option<TlsVersion>, ConfigError> {
        let s = str_of(settings, name);
        if s.is_empty() {
            return Ok(None);
        }
        TlsVersion::parse(&s)
            .map(Some)
            .map_err(|reason| invalid_setting(settings, name, s, &reason))
    };
    let min_version = version("tls-min-version")?.unwrap_or(TlsVersion::Tls12);
    let max_version = version("tls-max-version")?;
    if let Some(max) = max_version.filter(|&max| min_version > max) {
        return Err(ConfigError::Invalid(format!(
            "min version ({min_version}) is greater than max version ({max})"
        )));
    }
    let cipher_suites = names_of(settings, "cipher-suites");
    if min_version == TlsVersion::Tls13 && !cipher_suites.is_empty() {
        return Err(ConfigError::Invalid(
            "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
        ));
    }
    check_cipher_suites(&cipher_suites).map_err(|reason| {
        invalid_setting(settings, "cipher-suites", cipher_suites.join(","), &reason)
    })?;
    Ok(TlsPolicy {
        min_version,
        max_version,
        cipher_suites,
    })
}
