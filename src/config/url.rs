//! Client and peer URLs as etcd accepts them (`http(s)://host:port`, no path),
//! and the socket addresses a listen URL binds.
//!
//! A [`Url`] that exists has passed [`Url::parse`]: a known scheme, a
//! non-empty host of plain characters and a port that fits `u16`. Whether a
//! URL may be *bound* (an IP literal or `localhost`) is a separate question,
//! answered by [`Url::socket_addr`] and checked by the builder for listen
//! URLs only, because advertised URLs may carry host names.
//!
//! Public through `config::{Url, Scheme}`; anything in the crate may use it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// URL scheme of a client or peer URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A client or peer URL as etcd accepts it: `scheme://host:port`, no path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Url {
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl Url {
    /// Parses one URL with etcd's rules (scheme http/https, `host:port`,
    /// no path). `unix`/`unixs` URLs, valid in etcd, are not supported yet.
    pub fn parse(input: &str) -> Result<Url, String> {
        let s = input.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("URL scheme must be http or https: {s}"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "unix" | "unixs" => {
                return Err(format!(
                    "unix socket URLs are not supported by retcd yet: {s}"
                ));
            }
            _ => return Err(format!("URL scheme must be http or https: {s}")),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if !tail.is_empty() {
            return Err(format!("URL must not contain a path: {s}"));
        }
        if authority.contains('@') {
            return Err(format!("URL must not contain user information: {s}"));
        }
        let not_host_port = || format!("URL address does not have the form \"host:port\": {s}");
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(not_host_port)?;
            let port = after.strip_prefix(':').ok_or_else(not_host_port)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("invalid IPv6 address in URL: {s}"));
            }
            (host, port)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(not_host_port)?;
            if host.contains(':') {
                return Err(not_host_port());
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("URL has an empty host: {s}"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        {
            return Err(format!("invalid character in URL host: {s}"));
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port in URL: {s}"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port out of range in URL: {s}"))?;
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// `host:port` (IPv6 hosts in brackets), as Go's `url.URL.Host`.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address to bind for a listen URL: an IP literal, or `localhost`
    /// as 127.0.0.1 (what etcd ends up binding). `None` for other host names.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = if self.host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.host.parse::<IpAddr>().ok()?
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host_port())
    }
}

/// Only for listen URLs, which the builder has checked are bindable.
pub(super) fn bind_addrs(urls: &[Url]) -> Vec<SocketAddr> {
    urls.iter()
        .map(|u| {
            u.socket_addr()
                .expect("listen URLs are validated as IP or localhost")
        })
        .collect()
}
