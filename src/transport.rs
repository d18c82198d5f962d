//! The member's transports from its configuration: which addresses the client and peer ports
//! listen on and how each speaks (plain, TLS, both), the TLS configurations built once at start-up
//! (so a bad certificate, key or CA is a start-up error), the auto-TLS certificates, and how this
//! member dials https peer URLs. Called once by `main` before the storage is opened.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use retcd_net::serve::{ListenAddr, Security};
use retcd_net::tls;
use tracing::{info, warn};

use crate::config::{self, Config};

/// The TLS files of one transport (client or peer): the configured ones, or with auto TLS a
/// self-signed certificate generated into `<data-dir>/fixtures/<kind>` for the listen URLs'
/// hosts; `None` without either.
fn transport_files(
    cfg: &Config,
    kind: &str,
    files: &Option<tls::TlsFiles>,
    auto: bool,
    listen: &[config::Url],
) -> Result<Option<tls::TlsFiles>, String> {
    if let Some(files) = files {
        return Ok(Some(files.clone()));
    }
    if !auto {
        return Ok(None);
    }
    warn!(kind, "automatically generate certificates");
    let hosts: Vec<String> = listen.iter().map(|u| u.host.clone()).collect();
    let dir = cfg.data_dir.join("fixtures").join(kind);
    tls::self_signed(&dir, &hosts, cfg.self_signed_cert_validity)
        .map(Some)
        .map_err(|e| format!("failed to get {kind} self-signed certs: {e}"))
}

/// etcd's line for a listener that serves now.
pub fn log_serving(kind: &str, addr: SocketAddr, secure: bool) {
    if secure {
        info!(traffic = "grpc+http", address = %addr, "serving {kind} traffic securely");
    } else {
        warn!(address = %addr, "serving {kind} traffic insecurely; this is strongly discouraged!");
    }
}

/// The listening addresses of one transport and how each speaks (etcd groups the URLs by
/// host:port: plain if any is http://, TLS if any is https://). The TLS configuration is built
/// once, here, so that a bad certificate, key or CA is a start-up error.
fn listen_addrs(
    cfg: &Config,
    kind: &'static str,
    urls: &[config::Url],
    files: Option<&tls::TlsFiles>,
    verify_client_san: bool,
) -> Result<Vec<ListenAddr>, String> {
    let server_tls = match files {
        Some(files) if urls.iter().any(|u| u.is_tls()) => Some(
            tls::server_config(files, &cfg.tls_policy, alpn(kind))
                .map_err(|e| format!("{kind} TLS: {e}"))?,
        ),
        _ => None,
    };
    let mut by_addr: BTreeMap<SocketAddr, Security> = BTreeMap::new();
    for url in urls {
        let addr = url
            .socket_addr()
            .ok_or_else(|| format!("cannot listen on {url}"))?;
        let security = by_addr.entry(addr).or_default();
        if url.is_tls() {
            security.tls.clone_from(&server_tls);
            security.verify_client_san = verify_client_san;
        } else {
            security.plain = true;
        }
    }
    // Peers are served from the start; the client kinds once the member serves clients (main
    // logs them then, as etcd does after "ready to serve client requests").
    if kind == "peer" {
        for (addr, security) in &by_addr {
            log_serving(kind, *addr, security.tls.is_some());
        }
    }
    Ok(by_addr
        .into_iter()
        .map(|(addr, security)| ListenAddr { addr, security })
        .collect())
}

/// The protocols a TLS listener offers by ALPN: gRPC's `h2` everywhere, and HTTP/1.1 on the
/// client port (its HTTP endpoints), as etcd's client port offers both.
fn alpn(kind: &str) -> &'static [&'static [u8]] {
    match kind {
        "client" => &[b"h2", b"http/1.1"],
        "metrics" => &[b"http/1.1"],
        _ => &[b"h2"],
    }
}

/// Where the member listens, by what each address serves.
pub struct Listeners {
    /// `--listen-client-urls`: gRPC, and the HTTP endpoints unless `client_http` is given.
    pub client: Vec<ListenAddr>,
    /// `--listen-client-http-urls`: the HTTP endpoints only.
    pub client_http: Vec<ListenAddr>,
    /// `--listen-metrics-urls`: `/metrics` and the health endpoints only.
    pub metrics: Vec<ListenAddr>,
    pub peer: Vec<ListenAddr>,
}

/// The listening addresses; sets how this member dials https peer URLs. The client transport's
/// TLS (certificate, client certificate checks) covers the HTTP-only and metrics URLs too.
pub fn listeners(cfg: &Config) -> Result<Listeners, String> {
    let client_files = transport_files(
        cfg,
        "client",
        &cfg.client_tls,
        cfg.client_auto_tls,
        &cfg.listen_client_urls,
    )?;
    let client = listen_addrs(
        cfg,
        "client",
        &cfg.listen_client_urls,
        client_files.as_ref(),
        false,
    )?;
    let client_http = listen_addrs(
        cfg,
        "client",
        &cfg.listen_client_http_urls,
        client_files.as_ref(),
        false,
    )?;
    let metrics = listen_addrs(
        cfg,
        "metrics",
        &cfg.listen_metrics_urls,
        client_files.as_ref(),
        false,
    )?;
    let peer_files = transport_files(
        cfg,
        "peer",
        &cfg.peer_tls,
        cfg.peer_auto_tls,
        &cfg.listen_peer_urls,
    )?;
    let verify_san = !cfg.peer_skip_client_san_verification && !cfg.peer_auto_tls;
    let peer = listen_addrs(
        cfg,
        "peer",
        &cfg.listen_peer_urls,
        peer_files.as_ref(),
        verify_san,
    )?;
    if let Some(files) = &peer_files {
        if !cfg.peer_auto_tls {
            // Other members check this certificate against the URL they dial: say so now, not
            // as their handshake failures later.
            for url in cfg
                .initial_advertise_peer_urls
                .iter()
                .filter(|u| u.is_tls())
            {
                tls::check_cert_covers(&files.cert_file, &url.host).map_err(|e| {
                    format!(
                        "--peer-cert-file {} does not cover --initial-advertise-peer-urls {url}: {e}",
                        files.cert_file.display()
                    )
                })?;
            }
        }
        let client_cert = match &cfg.peer_client_cert {
            Some((cert, key)) => (cert.as_path(), key.as_path()),
            None => (files.cert_file.as_path(), files.key_file.as_path()),
        };
        let dial = tls::client_config(files, client_cert, &cfg.tls_policy, cfg.peer_auto_tls)
            .map_err(|e| format!("peer TLS: {e}"))?;
        retcd_net::peer::set_peer_tls(dial);
    }
    Ok(Listeners {
        client,
        client_http,
        metrics,
        peer,
    })
}
