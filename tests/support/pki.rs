//! Test certificates: a CA, a server certificate for 127.0.0.1 and localhost, client
//! certificates (one revoked by a CRL, one from another CA), written as PEM files the servers
//! and etcdctl read. Generated with rcgen so that the tests need no tool beyond the build.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

/// The files of one PKI, under one directory.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Signed by the CA, CN `root`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signed by the CA and listed in the CRL.
    pub revoked_cert: PathBuf,
    pub revoked_key: PathBuf,
    /// Signed by the CA, but its validity ended yesterday.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    /// Signed by the CA, valid only from tomorrow.
    pub future_cert: PathBuf,
    pub future_key: PathBuf,
    /// Signed by another CA.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    /// DER, revoking `revoked_cert`.
    pub crl: PathBuf,
    /// The other CA, and a server certificate for 127.0.0.1 it signed (a rotation to another
    /// CA).
    pub other_ca: PathBuf,
    pub other_server_cert: PathBuf,
    pub other_server_key: PathBuf,
    /// The CA, to sign more client certificates.
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    serial: u64,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    leaf_with(issuer, cn, sans, serial, dir, name, |_| {})
}

fn leaf_with(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    serial: u64,
    dir: &Path,
    name: &str,
    adjust: impl FnOnce(&mut CertificateParams),
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    adjust(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Pki {
    /// A server's client-TLS flags: its certificate, this CA, client certificates required.
    pub fn server_flags(&self) -> Vec<&str> {
        vec![
            "--cert-file",
            s(&self.server_cert),
            "--key-file",
            s(&self.server_key),
            "--trusted-ca-file",
            s(&self.ca),
            "--client-cert-auth",
        ]
    }

    /// etcdctl's flags for a client presenting `cert` and `key` and trusting this CA.
    pub fn client_flags<'a>(&'a self, cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
        vec!["--cacert", s(&self.ca), "--cert", s(cert), "--key", s(key)]
    }

    /// Another client certificate signed by this PKI's CA, with CommonName `cn`, written to
    /// `dir/<cn>.pem` and `dir/<cn>-key.pem` (the CA's key is kept for this).
    pub fn client(&self, cn: &str, dir: &Path) -> (PathBuf, PathBuf) {
        leaf(&self.issuer, cn, &[], 100 + cn.len() as u64, dir, cn)
    }

    /// Generates everything into `dir`.
    pub fn new(dir: &Path) -> Pki {
        let ca_issuer = ca("retcd test CA");
        let other = ca("another CA");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_issuer.pem()).unwrap();
        let (server_cert, server_key) = leaf(
            &ca_issuer,
            "server",
            &["127.0.0.1", "localhost"],
            1,
            dir,
            "server",
        );
        let (client_cert, client_key) = leaf(&ca_issuer, "root", &[], 2, dir, "client");
        let (revoked_cert, revoked_key) = leaf(&ca_issuer, "revoked", &[], 3, dir, "revoked");
        let (stranger_cert, stranger_key) = leaf(&other, "root", &[], 4, dir, "stranger");
        let now = time::OffsetDateTime::now_utc();
        let (future_cert, future_key) = leaf_with(&ca_issuer, "root", &[], 6, dir, "future", |p| {
            p.not_before = now + time::Duration::days(1);
            p.not_after = now + time::Duration::days(30);
        });
        let (expired_cert, expired_key) =
            leaf_with(&ca_issuer, "root", &[], 5, dir, "expired", |p| {
                p.not_before = now - time::Duration::days(30);
                p.not_after = now - time::Duration::days(1);
            });
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(3u64),
                revocation_time: now - time::Duration::hours(1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca_issuer)
        .unwrap();
        let other_ca = dir.join("other-ca.pem");
        std::fs::write(&other_ca, other.pem()).unwrap();
        let (other_server_cert, other_server_key) = leaf(
            &other,
            "server",
            &["127.0.0.1", "localhost"],
            7,
            dir,
            "other-server",
        );
        let crl_path = dir.join("crl.der");
        std::fs::write(&crl_path, crl.der()).unwrap();
        Pki {
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
            revoked_cert,
            revoked_key,
            expired_cert,
            expired_key,
            future_cert,
            future_key,
            stranger_cert,
            stranger_key,
            crl: crl_path,
            other_ca,
            other_server_cert,
            other_server_key,
            issuer: ca_issuer,
        }
    }
}
