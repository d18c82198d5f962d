//! An RSA key pair for JWT tokens, made by openssl for each test (in a directory removed
//! afterwards), and the `--auth-token` values that use it.
#![allow(dead_code)]

use std::process::Command;

/// An RSA key pair in PEM files, in a directory removed afterwards.
pub struct Keys {
    _dir: tempfile::TempDir,
    pub private: String,
    pub public: String,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let (private, public) = (path("jwt.pem"), path("jwt.pub"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &private,
        ]);
        openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
        Keys {
            _dir: dir,
            private,
            public,
        }
    }

    /// The `--auth-token` value signing with RS256.
    pub fn auth_token(&self) -> String {
        format!(
            "jwt,pub-key={},priv-key={},sign-method=RS256",
            self.public, self.private
        )
    }

    /// The `--auth-token` value of a verify-only provider.
    pub fn verify_only(&self) -> String {
        format!("jwt,pub-key={},sign-method=RS256", self.public)
    }
}

pub fn openssl(args: &[&str]) {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
