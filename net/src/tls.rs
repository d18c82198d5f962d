//! TLS material and policy for the client and peer listeners (rustls with the ring provider):
//! what etcd's `--cert-file`/`--key-file`/`--trusted-ca-file`/`--client-cert-auth`/
//! `--client-crl-file`/`--*-cert-allowed-*`/`--cipher-suites`/`--tls-*-version` mean, turned into
//! a `rustls::ServerConfig`.
//!
//! etcd's rules kept here (client/pkg/transport in etcd):
//! - the certificate and key are re-read when their files change, checked on every handshake,
//!   so a rotation needs no restart; a pair that fails to load keeps the last good one (and is
//!   logged);
//! - client certificates are required and verified when a trusted CA file is given or
//!   `--client-cert-auth` is on; the CRL file, if any, is re-read when it changes and refuses a
//!   chain any of whose serials it lists (etcd checks serials only);
//! - allowed CNs / hostnames: the leaf's CN equals one of them, or the leaf is valid for one of
//!   the hostnames (DNS or IP SAN);
//! - TLS 1.2 and 1.3 only; `--cipher-suites` takes Go's names and restricts TLS 1.2 (TLS 1.3's
//!   suites are not configurable, as in Go).
//!
//! Invariants: a `ServerConfig` is built only from a certificate and key that load and match
//! (checked at start-up, so a bad pair is a start-up error); everything that runs per handshake
//! returns rustls errors and never panics.
//!
//! Called by the server binary at start-up (to build configs from its configuration) and, per
//! handshake, by rustls on whichever core accepted the connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ProtocolVersion, RootCertStore,
    SignatureScheme, SupportedCipherSuite,
};

/// A TLS version etcd accepts for `--tls-min-version` / `--tls-max-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// etcd's names: exactly `TLS1.2` and `TLS1.3`.
    pub fn parse(s: &str) -> Result<TlsVersion, String> {
        match s {
            "TLS1.2" => Ok(TlsVersion::Tls12),
            "TLS1.3" => Ok(TlsVersion::Tls13),
            _ => Err(format!(
                "unexpected TLS version {s:?} (must be one of: TLS1.2, TLS1.3)"
            )),
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        })
    }
}

/// Go's names of the cipher suites rustls (ring) offers, and the suites. Go's names of the
/// TLS 1.3 suites are accepted too (Go ignores them in the list: TLS 1.3 suites are always on).
const CIPHER_SUITES: &[(&str, SupportedCipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go's names of suites Go offers and rustls does not (CBC modes, RSA key exchange, 3DES, RC4):
/// refused with a reason instead of etcd's "unexpected" (they are real suites, just not here).
const GO_ONLY_CIPHER_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Checks `--cipher-suites` names: Go's name of a suite rustls offers is fine; a Go suite rustls
/// cannot offer, or an unknown name, is an error with etcd's wording for the latter.
pub fn check_cipher_suites(names: &[String]) -> Result<(), String> {
    for name in names {
        if CIPHER_SUITES.iter().any(|(n, _)| n == name) {
            continue;
        }
        if GO_ONLY_CIPHER_SUITES.contains(&name.as_str()) {
            return Err(format!(
                "TLS cipher suite {name:?} is not offered by retcd (rustls offers only AEAD \
                 suites with forward secrecy: the ECDHE_*_GCM_* and *_CHACHA20_POLY1305 ones)"
            ));
        }
        return Err(format!("unexpected TLS cipher suite {name:?}"));
    }
    Ok(())
}

/// One listener kind's TLS files and checks (client or peer), as etcd's `TLSInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates must be signed by these CAs (and are then required).
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    pub crl_file: Option<PathBuf>,
    pub allowed_cn: Vec<String>,
    pub allowed_hostname: Vec<String>,
}

/// Settings shared by every TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPolicy {
    pub min_version: TlsVersion,
    /// `None`: the newest rustls offers.
    pub max_version: Option<TlsVersion>,
    /// Go's names (checked with [`check_cipher_suites`]); empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            min_version: TlsVersion::Tls12,
            max_version: None,
            cipher_suites: Vec::new(),
        }
    }
}

/// Why TLS cannot be set up (start-up errors, worded with the file at fault).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{cert} and {key}: tls: private key does not match public key")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Policy(String),
}

/// The ring provider restricted to `policy`'s cipher suites (TLS 1.3's always kept).
fn provider(policy: &TlsPolicy) -> Result<Arc<CryptoProvider>, TlsError> {
    check_cipher_suites(&policy.cipher_suites).map_err(TlsError::Policy)?;
    let mut provider = ring::default_provider();
    if !policy.cipher_suites.is_empty() {
        provider.cipher_suites.retain(|suite| {
            suite.version().version == ProtocolVersion::TLSv1_3
                || policy.cipher_suites.iter().any(|name| {
                    CIPHER_SUITES
                        .iter()
                        .any(|(n, s)| n == name && s.suite() == suite.suite())
                })
        });
    }
    Ok(Arc::new(provider))
}

fn versions(
    policy: &TlsPolicy,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let max = policy.max_version.unwrap_or(TlsVersion::Tls13);
    if policy.min_version > max {
        return Err(TlsError::Policy(format!(
            "min version ({}) is greater than max version ({max})",
            policy.min_version
        )));
    }
    if policy.min_version == TlsVersion::Tls13 && !policy.cipher_suites.is_empty() {
        return Err(TlsError::Policy(
            "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
        ));
    }
    let mut v = Vec::new();
    if policy.min_version <= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    Ok(v)
}

/// The server side of a listener kind: rustls's config with `alpn` (e.g. `h2`, `http/1.1`).
/// Loads and checks the certificate, key, CA and CRL once, so that a bad file is a start-up
/// error; afterwards they are re-read when they change.
pub fn server_config(
    files: &TlsFiles,
    policy: &TlsPolicy,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider(policy)?;
    let resolver = Arc::new(ReloadingCert::new(
        &files.cert_file,
        &files.key_file,
        provider.clone(),
    )?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(policy)?)?;
    let builder = if files.trusted_ca_file.is_some() || files.client_cert_auth {
        builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(files, provider)?))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client side of peer TLS (dialing other members): their certificates are verified
/// against `files.trusted_ca_file` (with `skip_verify`, not at all: etcd's peers on
/// `--peer-auto-tls` trust each other's self-signed certificates blindly), and this member
/// presents `client_cert`/`client_key` (re-read when they change).
pub fn client_config(
    files: &TlsFiles,
    client_cert: (&Path, &Path),
    policy: &TlsPolicy,
    skip_verify: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider(policy)?;
    let resolver = Arc::new(ReloadingCert::new(
        client_cert.0,
        client_cert.1,
        provider.clone(),
    )?);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(policy)?)?;
    let builder = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
    } else {
        builder.with_root_certificates(trusted_roots(files.trusted_ca_file.as_deref())?)
    };
    let mut config = builder.with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate (signatures are still checked): `--peer-auto-tls` only.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether the first certificate of `cert_file` is valid for `host` (an IP or DNS SAN); the
/// error says what it is valid for, in Go's x509 words.
pub fn check_cert_covers(cert_file: &Path, host: &str) -> Result<(), String> {
    let certs = load_certs(cert_file).map_err(|e| e.to_string())?;
    let leaf = certificate::Leaf::parse(&certs[0]).map_err(|e| e.to_string())?;
    if leaf.valid_for_host(host) {
        return Ok(());
    }
    let (ips, names) = leaf.sans();
    let mut valid: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    valid.extend(names);
    Err(format!(
        "x509: certificate is valid for {}, not {host}",
        valid.join(", ")
    ))
}

/// etcd's check of a peer's client certificate against the address it connects from: with IP
/// SANs, one must be that address; with DNS SANs only, one of them must resolve to it; a
/// certificate with neither passes. Runs after the handshake, on the peer listener only.
pub fn check_client_san(leaf: &CertificateDer<'_>, remote: std::net::IpAddr) -> Result<(), String> {
    let leaf = certificate::Leaf::parse(leaf).map_err(|e| e.to_string())?;
    let (ips, names) = leaf.sans();
    if ips.is_empty() && names.is_empty() {
        return Ok(());
    }
    if ips.contains(&remote) {
        return Ok(());
    }
    if names.is_empty() {
        let ips: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
        return Err(format!(
            "x509: certificate is valid for {}, not {remote}",
            ips.join(", ")
        ));
    }
    let resolves_to_remote = |name: &String| {
        use std::net::ToSocketAddrs;
        !name.starts_with("*.")
            && (name.as_str(), 0)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| a.ip() == remote))
    };
    if names.iter().any(resolves_to_remote) {
        return Ok(());
    }
    Err(format!(
        "tls: {remote:?} does not match any of DNSNames {names:?}"
    ))
}

/// When a file was last seen changed (modification time and length).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("tls: cannot parse certificate PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "tls: failed to find any PEM data in certificate input".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("tls: failed to find any PEM data in key input ({e})"),
    })
}

/// The CAs of a trusted-CA file (none without one).
fn trusted_roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in load_certs(ca)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: ca.to_path_buf(),
                what: format!("x509: {e}"),
            })?;
        }
    }
    Ok(roots)
}

/// Loads a certificate chain and its key and checks that they belong together.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let der = load_key(key)?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            what: format!("tls: failed to parse private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        // The key type cannot tell (rustls knows no public key for it): take the pair as is.
        Err(_) => Ok(certified),
    }
}

/// etcd's `--auto-tls` / `--peer-auto-tls`: a self-signed certificate (subject `O=etcd`, server
/// authentication, valid from now for `validity_years` years, SANs the listen URLs' hosts: IP
/// literals as IP SANs, names as DNS SANs) written to `dir/cert.pem` and `dir/key.pem` (the
/// directory 0700, the key 0600). Files already there are reused as they are, as etcd does, so
/// a restart keeps the certificate clients may have pinned. etcd's key is ECDSA P-521, which
/// ring cannot sign with; this one is P-256.
pub fn self_signed(
    dir: &Path,
    hosts: &[String],
    validity_years: u64,
) -> Result<TlsFiles, TlsError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let files = TlsFiles {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        ..TlsFiles::default()
    };
    if files.cert_file.exists() && files.key_file.exists() {
        return Ok(files);
    }
    if validity_years == 0 {
        return Err(TlsError::Policy(
            "selfSignedCertValidity is invalid,it should be greater than 0".into(),
        ));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Read { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let generate = || -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut hosts = hosts.to_vec();
        hosts.sort();
        hosts.dedup();
        let mut params = rcgen::CertificateParams::new(hosts)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "etcd");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now;
        let days = i64::try_from(validity_years.saturating_mul(365)).unwrap_or(i64::MAX / 2);
        params.not_after = now.saturating_add(time::Duration::days(days));
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (cert, key) = generate()
        .map_err(|e| TlsError::Policy(format!("cannot generate x509 certificate: {e}")))?;
    let write = |path: &Path, mode: u32, text: &str| -> Result<(), TlsError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(io(path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(path))
    };
    write(&files.key_file, 0o600, &key)?;
    write(&files.cert_file, 0o644, &cert)?;
    tracing::info!(path = %files.cert_file.display(), "created cert file");
    tracing::info!(path = %files.key_file.display(), "created key file");
    Ok(files)
}

/// The server's certificate, re-read when its files change (checked once per handshake).
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<(Stamp, Stamp, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let certified = load_certified_key(cert, key, &provider)?;
        Ok(ReloadingCert {
            state: Mutex::new((stamp(cert), stamp(key), Arc::new(certified))),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
        })
    }
}

impl ReloadingCert {
    /// The current pair, re-read first if its files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let (cert_stamp, key_stamp) = (stamp(&self.cert), stamp(&self.key));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if (cert_stamp, key_stamp) != (state.0, state.1) {
            match load_certified_key(&self.cert, &self.key, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    *state = (cert_stamp, key_stamp, Arc::new(key));
                }
                // Mid-rotation (one file written, not the other) or broken: keep serving with
                // the last good pair, and try again on the next handshake.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the TLS certificate; keeping the previous one")
                }
            }
        }
        state.2.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates as etcd does: against the trusted CAs (rustls's webpki
/// verifier), then the CRL's serials, then the allowed CNs / hostnames.
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    crl: Option<Crl>,
    allowed_cn: Vec<String>,
    allowed_hostname: Vec<String>,
}

impl ClientVerifier {
    fn new(files: &TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let roots = trusted_roots(files.trusted_ca_file.as_deref())?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Policy(format!("client certificate verification: {e}")))?;
        let crl = match &files.crl_file {
            Some(path) => Some(Crl::new(path.clone())?),
            None => None,
        };
        Ok(ClientVerifier {
            inner,
            crl,
            allowed_cn: files.allowed_cn.clone(),
            allowed_hostname: files.allowed_hostname.clone(),
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(crl) = &self.crl {
            crl.check(std::iter::once(end_entity).chain(intermediates))?;
        }
        if !self.allowed_cn.is_empty() || !self.allowed_hostname.is_empty() {
            let leaf = certificate::Leaf::parse(end_entity)?;
            let cn_ok = self
                .allowed_cn
                .iter()
                .any(|cn| leaf.common_name() == Some(cn.as_str()));
            let host_ok = self.allowed_hostname.iter().any(|h| leaf.valid_for_host(h));
            if !cn_ok && !host_ok {
                return Err(rustls::Error::General(
                    "client certificate authentication failed".into(),
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate revocation list file: the revoked serials, re-read when the file changes.
#[derive(Debug)]
struct Crl {
    path: PathBuf,
    state: Mutex<(Stamp, Arc<Vec<Vec<u8>>>)>,
}

impl Crl {
    fn new(path: PathBuf) -> Result<Self, TlsError> {
        let serials =
            certificate::revoked_serials(&read(&path)?).map_err(|what| TlsError::Pem {
                path: path.clone(),
                what,
            })?;
        Ok(Crl {
            state: Mutex::new((stamp(&path), Arc::new(serials))),
            path,
        })
    }

    fn check<'a>(
        &self,
        chain: impl Iterator<Item = &'a CertificateDer<'a>>,
    ) -> Result<(), rustls::Error> {
        let now = stamp(&self.path);
        let serials = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if now != state.0 {
                match read(&self.path)
                    .and_then(|der| certificate::revoked_serials(&der).map_err(TlsError::Policy))
                {
                    Ok(serials) => *state = (now, Arc::new(serials)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reload the CRL; keeping the previous one")
                    }
                }
            }
            state.1.clone()
        };
        for cert in chain {
            let serial = certificate::Leaf::parse(cert)?.serial().to_vec();
            if serials.contains(&serial) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        Ok(())
    }
}

/// The CommonName of a (verified) certificate: a client's identity under --client-cert-auth.
pub fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    certificate::Leaf::parse(der)
        .ok()?
        .common_name()
        .map(str::to_string)
}

/// What TLS needs to read from X.509 itself (x509-parser): a certificate's CN, serial and
/// names, and a CRL's revoked serials.
mod certificate {
    use rustls::pki_types::CertificateDer;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::revocation_list::CertificateRevocationList;

    pub struct Leaf<'a>(X509Certificate<'a>);

    impl<'a> Leaf<'a> {
        pub fn parse(der: &'a CertificateDer<'a>) -> Result<Self, rustls::Error> {
            X509Certificate::from_der(der.as_ref())
                .map(|(_, c)| Leaf(c))
                .map_err(|_| {
                    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
                })
        }

        pub fn common_name(&self) -> Option<&str> {
            self.0.subject().iter_common_name().next()?.as_str().ok()
        }

        /// The serial's magnitude, big-endian, without leading zeros.
        pub fn serial(&self) -> &[u8] {
            strip_zeros(self.0.raw_serial())
        }

        /// The IP and DNS SANs.
        pub fn sans(&self) -> (Vec<std::net::IpAddr>, Vec<String>) {
            let (mut ips, mut names) = (Vec::new(), Vec::new());
            if let Ok(Some(san)) = self.0.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::IPAddress(b) => {
                            if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                                ips.push(std::net::IpAddr::from(v4));
                            } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                                ips.push(std::net::IpAddr::from(v6));
                            }
                        }
                        GeneralName::DNSName(n) => names.push(n.to_string()),
                        _ => {}
                    }
                }
            }
            (ips, names)
        }

        /// Whether a DNS or IP SAN covers `host` (a `*.` wildcard covers one label).
        pub fn valid_for_host(&self, host: &str) -> bool {
            let Ok(Some(san)) = self.0.subject_alternative_name() else {
                return false;
            };
            let ip: Option<std::net::IpAddr> = host.parse().ok();
            san.value.general_names.iter().any(|name| match (name, ip) {
                (GeneralName::IPAddress(bytes), Some(ip)) => match ip {
                    std::net::IpAddr::V4(v4) => *bytes == v4.octets(),
                    std::net::IpAddr::V6(v6) => *bytes == v6.octets(),
                },
                (GeneralName::DNSName(dns), None) => dns_matches(dns, host),
                _ => false,
            })
        }
    }

    fn dns_matches(pattern: &str, host: &str) -> bool {
        let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
        match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => pattern == host,
        }
    }

    fn strip_zeros(b: &[u8]) -> &[u8] {
        let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        &b[start..]
    }

    /// The serials a CRL (DER, or PEM as etcd 3.4/3.5 take it) revokes.
    pub fn revoked_serials(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let der;
        let bytes = if bytes.starts_with(b"-----") {
            use rustls::pki_types::CertificateRevocationListDer;
            use rustls::pki_types::pem::PemObject;
            der = CertificateRevocationListDer::from_pem_slice(bytes)
                .map_err(|e| format!("cannot parse the CRL's PEM: {e}"))?;
            der.as_ref()
        } else {
            bytes
        };
        let (_, crl) = CertificateRevocationList::from_der(bytes)
            .map_err(|e| format!("cannot parse the CRL: {e}"))?;
        Ok(crl
            .iter_revoked_certificates()
            .map(|r| strip_zeros(r.raw_serial()).to_vec())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_suites_as_etcd_checks_them() {
        assert_eq!(TlsVersion::parse("TLS1.3"), Ok(TlsVersion::Tls13));
        assert_eq!(
            TlsVersion::parse("TLS1.1").unwrap_err(),
            "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)"
        );
        let policy = TlsPolicy {
            min_version: TlsVersion::Tls13,
            max_version: Some(TlsVersion::Tls12),
            cipher_suites: vec![],
        };
        assert_eq!(
            versions(&policy).unwrap_err().to_string(),
            "min version (TLS1.3) is greater than max version (TLS1.2)"
        );
        let policy = TlsPolicy {
            min_version: TlsVersion::Tls13,
            max_version: None,
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
        };
        assert_eq!(
            versions(&policy).unwrap_err().to_string(),
            "cipher suites cannot be configured when only TLS1.3 is enabled"
        );
        assert!(check_cipher_suites(&["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into()]).is_ok());
        assert_eq!(
            check_cipher_suites(&["FOO".into()]).unwrap_err(),
            "unexpected TLS cipher suite \"FOO\""
        );
        assert!(
            check_cipher_suites(&["TLS_RSA_WITH_AES_128_CBC_SHA".into()])
                .unwrap_err()
                .contains("not offered by retcd")
        );
        let policy = TlsPolicy {
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into()],
            ..TlsPolicy::default()
        };
        let suites: Vec<_> = provider(&policy)
            .unwrap()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            suites.len(),
            4,
            "three TLS 1.3 suites and the one asked for: {suites:?}"
        );
    }
}
