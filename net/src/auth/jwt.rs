//! etcd's JWT auth tokens (`--auth-token jwt,sign-method=M,pub-key=F,priv-key=F,ttl=D`): the
//! keys, loaded once at start-up; a token signed for a user at an auth revision; a token
//! verified back into the user and revision it names.
//!
//! A token is the compact JWS etcd's golang-jwt writes: `b64(header).b64(claims).b64(signature)`,
//! base64url without padding, header `{"alg":M,"typ":"JWT"}`, claims
//! `{"exp":UNIX_SECONDS,"revision":AUTH_REVISION,"username":USER}` spelled as Go's encoding/json
//! spells a map (keys sorted, `<`, `>`, `&` escaped), so retcd and etcd given the same keys accept
//! each other's tokens. Methods: RS256/384/512 (RSASSA-PKCS1-v1_5), PS256/384/512 (RSASSA-PSS,
//! salt as long as the hash), ES256/384/512 (ECDSA on P-256/384/521, `r‖s` fixed width), EdDSA
//! (Ed25519; etcd 3.6) and HS256/384/512 (HMAC keyed with the bytes of the `priv-key` file, as
//! etcd). `ring` does all but ES512, which the RustCrypto `p521` crate does.
//!
//! Invariants:
//! - a token verifies only under the configured method (its `alg` must be that one: no `none`,
//!   no RSA public key taken for an HMAC secret), with the configured key, before its `exp` and
//!   not before its `iat`/`nbf` when it has them (golang-jwt's MapClaims rules), and with a string
//!   `username` and a numeric `revision`; anything else is refused, and the gate answers etcd's
//!   "invalid auth token";
//! - a provider loaded without a private key only verifies: [`JwtTokens::sign`] answers etcd's
//!   ErrVerifyOnly;
//! - keys are parsed and checked when loaded (the key type and curve the method needs, a size
//!   `ring` can use, a public key that matches the private one), so a bad key stops the start,
//!   never a request.
//!
//! Nothing is kept per token: a token works on every member that has the same keys and outlives
//! restarts and leader changes. It cannot be revoked before `exp` (as in etcd), but it carries the
//! auth revision it was signed at, so after any auth change the permission checks of
//! engine/src/auth.rs refuse it with etcd's "revision of auth store is old".
//!
//! Callers: src/config loads the provider from `--auth-token` ([`JwtTokens::load`]), the gate
//! (`super::gate`) verifies the token of each request ([`JwtTokens::verify`]), and
//! `super::AuthService::authenticate` signs one once its Authenticate is applied
//! ([`JwtTokens::sign`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{Map, Value};

/// etcd's token lifetime when the `ttl` option is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// A signing method, by its JWS `alg` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMethod {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl SignMethod {
    pub const ALL: [SignMethod; 13] = [
        SignMethod::Rs256,
        SignMethod::Rs384,
        SignMethod::Rs512,
        SignMethod::Ps256,
        SignMethod::Ps384,
        SignMethod::Ps512,
        SignMethod::Es256,
        SignMethod::Es384,
        SignMethod::Es512,
        SignMethod::EdDsa,
        SignMethod::Hs256,
        SignMethod::Hs384,
        SignMethod::Hs512,
    ];

    /// The method named `alg` (case-sensitive, as golang-jwt's registry); `None` for a name
    /// etcd does not know and for `none`.
    pub fn from_alg(alg: &str) -> Option<SignMethod> {
        SignMethod::ALL.into_iter().find(|m| m.alg() == alg)
    }

    pub fn alg(self) -> &'static str {
        match self {
            SignMethod::Rs256 => "RS256",
            SignMethod::Rs384 => "RS384",
            SignMethod::Rs512 => "RS512",
            SignMethod::Ps256 => "PS256",
            SignMethod::Ps384 => "PS384",
            SignMethod::Ps512 => "PS512",
            SignMethod::Es256 => "ES256",
            SignMethod::Es384 => "ES384",
            SignMethod::Es512 => "ES512",
            SignMethod::EdDsa => "EdDSA",
            SignMethod::Hs256 => "HS256",
            SignMethod::Hs384 => "HS384",
            SignMethod::Hs512 => "HS512",
        }
    }

    fn kind(self) -> KeyKind {
        match self {
            SignMethod::Rs256
            | SignMethod::Rs384
            | SignMethod::Rs512
            | SignMethod::Ps256
            | SignMethod::Ps384
            | SignMethod::Ps512 => KeyKind::Rsa,
            SignMethod::Es256 => KeyKind::Ec(Curve::P256),
            SignMethod::Es384 => KeyKind::Ec(Curve::P384),
            SignMethod::Es512 => KeyKind::Ec(Curve::P521),
            SignMethod::EdDsa => KeyKind::Ed25519,
            SignMethod::Hs256 | SignMethod::Hs384 | SignMethod::Hs512 => KeyKind::Hmac,
        }
    }

    /// ring's verification algorithm (every asymmetric method but ES512).
    fn ring_verification(self) -> Option<&'static dyn sig::VerificationAlgorithm> {
        Some(match self {
            SignMethod::Rs256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            SignMethod::Rs384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            SignMethod::Rs512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            SignMethod::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
            SignMethod::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
            SignMethod::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
            SignMethod::Es256 => &sig::ECDSA_P256_SHA256_FIXED,
            SignMethod::Es384 => &sig::ECDSA_P384_SHA384_FIXED,
            SignMethod::EdDsa => &sig::ED25519,
            SignMethod::Es512 | SignMethod::Hs256 | SignMethod::Hs384 | SignMethod::Hs512 => {
                return None;
            }
        })
    }

    /// ring's signing algorithm of an RSA method.
    fn rsa_padding(self) -> &'static dyn sig::RsaEncoding {
        match self {
            SignMethod::Rs384 => &sig::RSA_PKCS1_SHA384,
            SignMethod::Rs512 => &sig::RSA_PKCS1_SHA512,
            SignMethod::Ps256 => &sig::RSA_PSS_SHA256,
            SignMethod::Ps384 => &sig::RSA_PSS_SHA384,
            SignMethod::Ps512 => &sig::RSA_PSS_SHA512,
            _ => &sig::RSA_PKCS1_SHA256,
        }
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            SignMethod::Hs384 => hmac::HMAC_SHA384,
            SignMethod::Hs512 => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        }
    }
}

impl fmt::Display for SignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alg())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ec(Curve),
    Ed25519,
    Hmac,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Curve> {
        match oid {
            OID_P256 => Some(Curve::P256),
            OID_P384 => Some(Curve::P384),
            OID_P521 => Some(Curve::P521),
            _ => None,
        }
    }

    /// Bytes of a private scalar.
    fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn ring_signing(self) -> &'static sig::EcdsaSigningAlgorithm {
        match self {
            Curve::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            _ => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        }
    }
}

// DER contents of the object identifiers keys are told apart by.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Smallest and largest RSA moduli `ring` signs and verifies with.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Why keys could not be loaded, or a token not signed. The `auth:` messages are etcd's.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("auth: missing key data")]
    MissingKey,
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// A key file that does not hold a key the method can use.
    #[error("{which} key: {reason}")]
    BadKey { which: &'static str, reason: String },
    #[error("failed to sign a JWT token: {0}")]
    Sign(&'static str),
}

fn bad_private(reason: impl Into<String>) -> JwtError {
    JwtError::BadKey {
        which: "private",
        reason: reason.into(),
    }
}

fn bad_public(reason: impl Into<String>) -> JwtError {
    JwtError::BadKey {
        which: "public",
        reason: reason.into(),
    }
}

/// golang-jwt's message for a key file that holds no PEM block.
const NOT_PEM: &str = "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key";

/// Why a token was refused (logged; the client only hears "invalid auth token").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("token contains an invalid number of segments")]
    Segments,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token signed with {0:?}, not the configured method")]
    Method(String),
    #[error("signature is invalid")]
    Signature,
    #[error("token is expired")]
    Expired,
    #[error("token used before issued")]
    UsedBeforeIssued,
    #[error("token is not valid yet")]
    NotValidYet,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user: String,
    /// The auth revision the token was signed at.
    pub revision: u64,
}

enum Signer {
    Rsa {
        pair: sig::RsaKeyPair,
        padding: &'static dyn sig::RsaEncoding,
    },
    Ecdsa(sig::EcdsaKeyPair),
    P521(p521::ecdsa::SigningKey),
    Ed25519(sig::Ed25519KeyPair),
    Hmac(hmac::Key),
}

impl Signer {
    fn sign(&self, msg: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, JwtError> {
        match self {
            Signer::Rsa { pair, padding } => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*padding, rng, msg, &mut out)
                    .map_err(|_| JwtError::Sign("RSA signing failed"))?;
                Ok(out)
            }
            Signer::Ecdsa(pair) => pair
                .sign(rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JwtError::Sign("ECDSA signing failed")),
            Signer::P521(key) => key
                .try_sign(msg)
                .map(|s: p521::ecdsa::Signature| s.to_bytes().to_vec())
                .map_err(|_| JwtError::Sign("ECDSA P-521 signing failed")),
            Signer::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
            Signer::Hmac(key) => Ok(hmac::sign(key, msg).as_ref().to_vec()),
        }
    }
}

enum Verifier {
    Ring(sig::UnparsedPublicKey<Vec<u8>>),
    P521(p521::ecdsa::VerifyingKey),
    Hmac(hmac::Key),
}

impl Verifier {
    /// The verifier of `method` for `public` (RSAPublicKey DER, an uncompressed EC point or an
    /// Ed25519 key).
    fn new(method: SignMethod, public: Vec<u8>) -> Result<Verifier, JwtError> {
        if method == SignMethod::Es512 {
            return p521::ecdsa::VerifyingKey::from_sec1_bytes(&public)
                .map(Verifier::P521)
                .map_err(|_| bad_public("not a point of P-521"));
        }
        let alg = method
            .ring_verification()
            .expect("every asymmetric method but ES512 is ring's");
        Ok(Verifier::Ring(sig::UnparsedPublicKey::new(alg, public)))
    }

    fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::Ring(key) => key.verify(msg, signature).is_ok(),
            Verifier::P521(key) => p521::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(msg, &s).is_ok()),
            Verifier::Hmac(key) => hmac::verify(key, msg, signature).is_ok(),
        }
    }
}

/// The JWT token provider: its method, lifetime and keys.
pub struct JwtTokens {
    method: SignMethod,
    ttl: Duration,
    /// `None` for a verify-only provider (a public key only).
    signer: Option<Signer>,
    verifier: Verifier,
    rng: SystemRandom,
    /// Tells this provider's entries in the per-core cache of verified tokens from another's.
    id: u64,
}

/// Tokens each core verified lately: a request carrying a JWT pays the signature check (tens of
/// microseconds for RSA or ECDSA) once per core and token, then only the clock checks. Bounded:
/// emptied when it holds [`VERIFIED_PER_CORE`] tokens.
const VERIFIED_PER_CORE: usize = 4096;

/// A verified token's claims and the Unix seconds it is valid in: from `from` (its iat and nbf)
/// up to, not including, `until` (its exp).
struct Verified {
    claims: TokenClaims,
    from: i64,
    until: i64,
}

thread_local! {
    static VERIFIED: std::cell::RefCell<std::collections::HashMap<(u64, String), Verified>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

static NEXT_PROVIDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtTokens")
            .field("method", &self.method)
            .field("ttl", &self.ttl)
            .field("verify_only", &self.verify_only())
            .finish_non_exhaustive()
    }
}

impl JwtTokens {
    /// Loads the keys for `method` from the contents of the `pub-key` and `priv-key` files
    /// (empty counts as not given, as in etcd): etcd's jwtOptions.Key. Asymmetric methods take
    /// a private key (PEM: PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#8
    /// `PRIVATE KEY`), a public key (PEM: SPKI `PUBLIC KEY`, or a certificate), or both, which
    /// must then match; HMAC methods take the private key file's bytes as their secret.
    pub fn load(
        method: SignMethod,
        public_pem: Option<&[u8]>,
        private_pem: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<JwtTokens, JwtError> {
        let public_pem = public_pem.filter(|k| !k.is_empty());
        let private_pem = private_pem.filter(|k| !k.is_empty());
        let rng = SystemRandom::new();
        let (signer, verifier) = match method.kind() {
            KeyKind::Hmac => {
                let secret = private_pem.ok_or(JwtError::MissingKey)?;
                let key = hmac::Key::new(method.hmac_algorithm(), secret);
                (Some(Signer::Hmac(key.clone())), Verifier::Hmac(key))
            }
            kind => {
                let private = private_pem
                    .map(|pem| load_private(method, kind, pem, &rng))
                    .transpose()?;
                let public = public_pem.map(|pem| load_public(kind, pem)).transpose()?;
                let public = match (&private, public) {
                    (None, None) => return Err(JwtError::MissingKey),
                    (Some((_, own)), Some(given)) if *own != given => {
                        return Err(JwtError::KeyMismatch);
                    }
                    (Some((_, own)), _) => own.clone(),
                    (None, Some(given)) => given,
                };
                (
                    private.map(|(signer, _)| signer),
                    Verifier::new(method, public)?,
                )
            }
        };
        Ok(JwtTokens {
            method,
            ttl,
            signer,
            verifier,
            rng,
            id: NEXT_PROVIDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    pub fn method(&self) -> SignMethod {
        self.method
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Loaded without a private key: verifies tokens, signs none.
    pub fn verify_only(&self) -> bool {
        self.signer.is_none()
    }

    /// A token for `user` at auth revision `revision`, valid for the TTL from now.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, JwtError> {
        self.sign_at(user, revision, SystemTime::now())
    }

    /// [`JwtTokens::sign`] as if it were `now`.
    pub fn sign_at(&self, user: &str, revision: u64, now: SystemTime) -> Result<String, JwtError> {
        let signer = self.signer.as_ref().ok_or(JwtError::VerifyOnly)?;
        // Go's time.Now().Add(ttl).Unix(): whole seconds, rounded down.
        let exp = unix_seconds(now + self.ttl);
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.method.alg());
        let mut claims = format!(r#"{{"exp":{exp},"revision":{revision},"username":"#);
        go_json_string(user, &mut claims);
        claims.push('}');
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = signer.sign(token.as_bytes(), &self.rng)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The user and auth revision of a valid `token`.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenRefused> {
        self.verify_at(token, unix_seconds(SystemTime::now()))
    }

    /// [`JwtTokens::verify`] at `now`, in seconds since the Unix epoch: from this core's cache
    /// of verified tokens while `now` is in the token's validity, else checked in full.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<TokenClaims, TokenRefused> {
        let key = (self.id, token.to_string());
        let cached = VERIFIED.with(|v| {
            v.borrow()
                .get(&key)
                .filter(|c| c.from <= now && now < c.until)
                .map(|c| c.claims.clone())
        });
        if let Some(claims) = cached {
            return Ok(claims);
        }
        let (claims, from, until) = self.verify_fully(token, now)?;
        VERIFIED.with(|v| {
            let mut v = v.borrow_mut();
            if v.len() >= VERIFIED_PER_CORE {
                v.clear();
            }
            v.insert(
                key,
                Verified {
                    claims: claims.clone(),
                    from,
                    until,
                },
            );
        });
        Ok(claims)
    }

    /// Every check of a token: its claims and the seconds it is valid in (`from..until`).
    fn verify_fully(&self, token: &str, now: i64) -> Result<(TokenClaims, i64, i64), TokenRefused> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRefused::Segments);
        };
        let head = json_object(header).ok_or(TokenRefused::Malformed("header"))?;
        let alg = head
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenRefused::Malformed("no alg in the header"))?;
        if alg != self.method.alg() {
            return Err(TokenRefused::Method(alg.to_string()));
        }
        let body = json_object(claims).ok_or(TokenRefused::Malformed("claims"))?;
        // golang-jwt's MapClaims.Valid: each time claim optional, in whole seconds.
        if !time_claim(&body, "exp", |exp| now < exp) {
            return Err(TokenRefused::Expired);
        }
        if !time_claim(&body, "iat", |iat| now >= iat) {
            return Err(TokenRefused::UsedBeforeIssued);
        }
        if !time_claim(&body, "nbf", |nbf| now >= nbf) {
            return Err(TokenRefused::NotValidYet);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenRefused::Malformed("signature"))?;
        let signed = &token.as_bytes()[..header.len() + 1 + claims.len()];
        if !self.verifier.verify(signed, &signature) {
            return Err(TokenRefused::Signature);
        }
        let user = body
            .get("username")
            .and_then(Value::as_str)
            .ok_or(TokenRefused::Malformed("no username claim"))?;
        let revision = body
            .get("revision")
            .and_then(Value::as_f64)
            .ok_or(TokenRefused::Malformed("no revision claim"))?;
        let claims = TokenClaims {
            user: user.to_string(),
            // Go's uint64(float64): JSON numbers are doubles there too.
            revision: revision as u64,
        };
        // The time claims passed above, so each is absent, 0 or a number.
        let secs = |name| {
            body.get(name)
                .and_then(Value::as_f64)
                .filter(|s| *s != 0.0)
                .map(|s| s.floor() as i64)
        };
        let from = secs("iat")
            .into_iter()
            .chain(secs("nbf"))
            .max()
            .unwrap_or(i64::MIN);
        let until = secs("exp").unwrap_or(i64::MAX);
        Ok((claims, from, until))
    }
}

/// Seconds since the Unix epoch, rounded down (a clock before 1970 reads 0).
fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether the time claim `name` of `claims` is absent (or 0, which golang-jwt treats as
/// absent) or numeric and `ok` with its whole seconds.
fn time_claim(claims: &Map<String, Value>, name: &str, ok: impl Fn(i64) -> bool) -> bool {
    match claims.get(name) {
        None => true,
        Some(v) => match v.as_f64() {
            Some(0.0) => true,
            Some(secs) => ok(secs.floor() as i64),
            None => false,
        },
    }
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Appends `s` as Go's encoding/json writes a string (HTML-safe, the default).
fn go_json_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The private key in `pem` for `method` and its public key (in the form [`Verifier::new`]
/// takes).
fn load_private(
    method: SignMethod,
    kind: KeyKind,
    pem: &[u8],
    rng: &SystemRandom,
) -> Result<(Signer, Vec<u8>), JwtError> {
    let (_, der) = pem_block(pem).ok_or_else(|| bad_private(NOT_PEM))?;
    let pkcs8 = pkcs8(&der);
    match kind {
        KeyKind::Rsa => {
            let pair = match pkcs8 {
                Some(p) if p.algorithm == OID_RSA => sig::RsaKeyPair::from_pkcs8(&der),
                Some(_) => return Err(bad_private("key is not a valid RSA private key")),
                None => sig::RsaKeyPair::from_der(&der),
            }
            .map_err(|e| bad_private(rsa_refusal(&e.to_string())))?;
            let public = pair.public().as_ref().to_vec();
            let signer = Signer::Rsa {
                pair,
                padding: method.rsa_padding(),
            };
            Ok((signer, public))
        }
        KeyKind::Ec(curve) => {
            let not_ec = || bad_private("key is not a valid ECDSA private key");
            // PKCS#8 wraps a SEC1 ECPrivateKey and names the curve outside it.
            let (sec1_der, named) = match pkcs8 {
                Some(p) if p.algorithm == OID_EC => (p.private_key, p.parameter),
                Some(_) => return Err(not_ec()),
                None => (&der[..], None),
            };
            let key = sec1(sec1_der).ok_or_else(not_ec)?;
            let named = named.or(key.curve);
            if let Some(oid) = named
                && Curve::from_oid(oid) != Some(curve)
            {
                return Err(bad_private(format!(
                    "{method} needs a {} key, this one is on {}",
                    curve.name(),
                    Curve::from_oid(oid).map_or("another curve", Curve::name)
                )));
            }
            if key.secret.len() > curve.scalar_len() {
                return Err(bad_private(format!("not a {} private key", curve.name())));
            }
            // Go's ParseECPrivateKey takes a scalar shorter than the curve's, left-padded.
            let mut secret = vec![0; curve.scalar_len() - key.secret.len()];
            secret.extend_from_slice(key.secret);
            if curve == Curve::P521 {
                let signing = p521::ecdsa::SigningKey::from_slice(&secret)
                    .map_err(|_| bad_private("not a P-521 private key"))?;
                let own = p521::ecdsa::VerifyingKey::from(&signing)
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                if key.public.is_some_and(|p| p != own) {
                    return Err(bad_private("its public key is not its private key's"));
                }
                return Ok((Signer::P521(signing), own));
            }
            let public = key.public.ok_or_else(|| {
                bad_private("an EC private key without its public key is not supported")
            })?;
            let pair = sig::EcdsaKeyPair::from_private_key_and_public_key(
                curve.ring_signing(),
                &secret,
                public,
                rng,
            )
            .map_err(|e| bad_private(format!("{} private key refused: {e}", curve.name())))?;
            let own = pair.public_key().as_ref().to_vec();
            Ok((Signer::Ecdsa(pair), own))
        }
        KeyKind::Ed25519 => {
            if pkcs8.is_none_or(|p| p.algorithm != OID_ED25519) {
                return Err(bad_private("key is not a valid Ed25519 private key"));
            }
            let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| bad_private(format!("Ed25519 private key refused: {e}")))?;
            let own = pair.public_key().as_ref().to_vec();
            Ok((Signer::Ed25519(pair), own))
        }
        KeyKind::Hmac => unreachable!("HMAC secrets are not parsed"),
    }
}

fn rsa_refusal(ring_reason: &str) -> String {
    match ring_reason {
        "TooSmall" | "TooLarge" => format!(
            "RSA key size refused ({ring_reason}): retcd signs and verifies with RSA keys of \
             {} to {} bits",
            RSA_BITS.start(),
            RSA_BITS.end()
        ),
        "InvalidEncoding" => {
            "x509: failed to parse RSA private key (PKCS#1 or PKCS#8 expected)".to_string()
        }
        other => format!("RSA private key refused: {other}"),
    }
}

/// The public key in `pem` (an SPKI or a certificate's) for `kind`, in the form
/// [`Verifier::new`] takes.
fn load_public(kind: KeyKind, pem: &[u8]) -> Result<Vec<u8>, JwtError> {
    let (label, der) = pem_block(pem).ok_or_else(|| bad_public(NOT_PEM))?;
    let info = match spki(&der) {
        Some(info) => info,
        None => {
            let cert = x509_parser::parse_x509_certificate(&der).map_err(|_| {
                bad_public(if label == "RSA PUBLIC KEY" {
                    "a PKCS#1 RSA PUBLIC KEY is not accepted (etcd neither); write it as a \
                     PUBLIC KEY (openssl rsa -RSAPublicKey_in -pubout)"
                        .to_string()
                } else {
                    format!("x509: {label:?} is neither a PKIX public key nor a certificate")
                })
            })?;
            let spki_der = cert.1.tbs_certificate.subject_pki.raw.to_vec();
            return load_spki(kind, &spki_der);
        }
    };
    check_public(kind, info)
}

fn load_spki(kind: KeyKind, der: &[u8]) -> Result<Vec<u8>, JwtError> {
    let info = spki(der).ok_or_else(|| bad_public("x509: malformed subject public key info"))?;
    check_public(kind, info)
}

fn check_public(kind: KeyKind, info: Spki<'_>) -> Result<Vec<u8>, JwtError> {
    match kind {
        KeyKind::Rsa => {
            if info.algorithm != OID_RSA {
                return Err(bad_public("key is not a valid RSA public key"));
            }
            let bits = rsa_modulus_bits(info.key)
                .ok_or_else(|| bad_public("x509: malformed RSA public key"))?;
            if !RSA_BITS.contains(&bits) {
                return Err(bad_public(format!(
                    "RSA key of {bits} bits refused: retcd verifies with RSA keys of {} to {} \
                     bits",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                )));
            }
        }
        KeyKind::Ec(curve) => {
            if info.algorithm != OID_EC {
                return Err(bad_public("key is not a valid ECDSA public key"));
            }
            let on = info.parameter.and_then(Curve::from_oid);
            if on != Some(curve) {
                return Err(bad_public(format!(
                    "{} key needed, this one is on {}",
                    curve.name(),
                    on.map_or("another curve", Curve::name)
                )));
            }
            if info.key.len() != 1 + 2 * curve.scalar_len() || info.key[0] != 4 {
                return Err(bad_public(format!(
                    "not an uncompressed {} point",
                    curve.name()
                )));
            }
        }
        KeyKind::Ed25519 => {
            if info.algorithm != OID_ED25519 || info.key.len() != 32 {
                return Err(bad_public("key is not a valid Ed25519 public key"));
            }
        }
        KeyKind::Hmac => unreachable!("HMAC secrets are not parsed"),
    }
    Ok(info.key.to_vec())
}

/// The first PEM block of `data` (Go's pem.Decode: text before it is skipped, so is an RFC 1421
/// header), as its label and decoded bytes.
fn pem_block(data: &[u8]) -> Option<(String, Vec<u8>)> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = find(data, BEGIN)? + BEGIN.len();
    let rest = &data[start..];
    let label_end = find(rest, b"-----")?;
    let label = std::str::from_utf8(&rest[..label_end]).ok()?;
    if label.contains(['\n', '\r']) {
        return None;
    }
    let body = &rest[label_end + 5..];
    let end = find(body, format!("-----END {label}-----").as_bytes())?;
    let body = std::str::from_utf8(&body[..end]).ok()?;
    let b64: String = body
        .lines()
        .filter(|line| !line.contains(':'))
        .flat_map(|line| line.chars().filter(|c| !c.is_ascii_whitespace()))
        .collect();
    Some((label.to_string(), STANDARD.decode(b64).ok()?))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// A few DER tags.
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;

/// One DER element of `input`: its tag, contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The element of `input` if it has tag `tag`: its contents and what follows it.
fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match der_element(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// A BIT STRING's bits, when they are whole bytes.
fn whole_bytes(bits: &[u8]) -> Option<&[u8]> {
    match bits.split_first()? {
        (0, bytes) => Some(bytes),
        _ => None,
    }
}

/// The parts of a PKCS#8 PrivateKeyInfo retcd reads.
struct Pkcs8<'a> {
    algorithm: &'a [u8],
    /// The OID parameter of the algorithm (an EC key's curve), if it has one.
    parameter: Option<&'a [u8]>,
    private_key: &'a [u8],
}

/// `der` as PKCS#8; `None` when it is not shaped as one (a PKCS#1 or SEC1 key, say).
fn pkcs8(der: &[u8]) -> Option<Pkcs8<'_>> {
    let (seq, _) = der_expect(der, SEQUENCE)?;
    let (_version, rest) = der_expect(seq, INTEGER)?;
    let (algorithm, rest) = der_expect(rest, SEQUENCE)?;
    let (private_key, _) = der_expect(rest, OCTET_STRING)?;
    let (oid, parameters) = der_expect(algorithm, OID)?;
    Some(Pkcs8 {
        algorithm: oid,
        parameter: der_expect(parameters, OID).map(|(p, _)| p),
        private_key,
    })
}

/// The parts of a SEC1 ECPrivateKey.
struct Sec1<'a> {
    secret: &'a [u8],
    curve: Option<&'a [u8]>,
    /// The public point, when the key carries it.
    public: Option<&'a [u8]>,
}

fn sec1(der: &[u8]) -> Option<Sec1<'_>> {
    let (seq, _) = der_expect(der, SEQUENCE)?;
    let (_version, rest) = der_expect(seq, INTEGER)?;
    let (secret, mut rest) = der_expect(rest, OCTET_STRING)?;
    let mut key = Sec1 {
        secret,
        curve: None,
        public: None,
    };
    while let Some((tag, contents, next)) = der_element(rest) {
        match tag {
            0xa0 => key.curve = der_expect(contents, OID).map(|(o, _)| o),
            0xa1 => key.public = der_expect(contents, BIT_STRING).and_then(|(b, _)| whole_bytes(b)),
            _ => {}
        }
        rest = next;
    }
    Some(key)
}

/// The parts of a SubjectPublicKeyInfo.
struct Spki<'a> {
    algorithm: &'a [u8],
    parameter: Option<&'a [u8]>,
    key: &'a [u8],
}

fn spki(der: &[u8]) -> Option<Spki<'_>> {
    let (seq, _) = der_expect(der, SEQUENCE)?;
    let (algorithm, rest) = der_expect(seq, SEQUENCE)?;
    let (bits, _) = der_expect(rest, BIT_STRING)?;
    let (oid, parameters) = der_expect(algorithm, OID)?;
    Some(Spki {
        algorithm: oid,
        parameter: der_expect(parameters, OID).map(|(p, _)| p),
        key: whole_bytes(bits)?,
    })
}

/// Bits of the modulus of a PKCS#1 RSAPublicKey.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (seq, _) = der_expect(der, SEQUENCE)?;
    let (n, rest) = der_expect(seq, INTEGER)?;
    der_expect(rest, INTEGER)?;
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    let first = *n.first()?;
    Some(n.len() * 8 - first.leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;

    use super::*;

    const OPENSSL: &str = "/usr/bin/openssl";

    /// Runs openssl with `stdin`, returning what it wrote.
    fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = Command::new(OPENSSL)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl");
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(stdin)
            .expect("feed openssl");
        let out = child.wait_with_output().expect("openssl output");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A private key (PEM) and its public key (SPKI PEM).
    #[derive(Clone)]
    struct Pair {
        private: Vec<u8>,
        public: Vec<u8>,
    }

    fn pair_of(private: Vec<u8>) -> Pair {
        let public = openssl(&["pkey", "-pubout"], &private);
        Pair { private, public }
    }

    fn rsa(bits: &str) -> Pair {
        let opt = format!("rsa_keygen_bits:{bits}");
        pair_of(openssl(
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", &opt],
            b"",
        ))
    }

    /// SEC1 (`EC PRIVATE KEY`).
    fn ec(curve: &str) -> Pair {
        pair_of(openssl(
            &["ecparam", "-name", curve, "-genkey", "-noout"],
            b"",
        ))
    }

    fn ed25519() -> Pair {
        pair_of(openssl(&["genpkey", "-algorithm", "ed25519"], b""))
    }

    /// Keys made once per test process (RSA key generation is slow), two of each kind.
    struct Keys {
        rsa: [Pair; 2],
        p256: [Pair; 2],
        p384: Pair,
        p521: [Pair; 2],
        ed25519: [Pair; 2],
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys {
            rsa: [rsa("2048"), rsa("2048")],
            p256: [ec("prime256v1"), ec("prime256v1")],
            p384: ec("secp384r1"),
            p521: [ec("secp521r1"), ec("secp521r1")],
            ed25519: [ed25519(), ed25519()],
        })
    }

    const SECRETS: [&[u8]; 2] = [b"a shared secret\n", b"another secret\n"];

    /// The `i`th key pair for `m` (HMAC: the secret twice).
    fn pair(m: SignMethod, i: usize) -> Pair {
        let k = keys();
        match m.kind() {
            KeyKind::Rsa => k.rsa[i].clone(),
            KeyKind::Ec(Curve::P256) => k.p256[i].clone(),
            KeyKind::Ec(Curve::P384) if i == 0 => k.p384.clone(),
            KeyKind::Ec(Curve::P384) => ec("secp384r1"),
            KeyKind::Ec(Curve::P521) => k.p521[i].clone(),
            KeyKind::Ed25519 => k.ed25519[i].clone(),
            KeyKind::Hmac => Pair {
                private: SECRETS[i].to_vec(),
                public: SECRETS[i].to_vec(),
            },
        }
    }

    fn provider(m: SignMethod, i: usize) -> JwtTokens {
        let p = pair(m, i);
        JwtTokens::load(m, Some(&p.public), Some(&p.private), DEFAULT_TTL)
            .unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    fn verifier(m: SignMethod, i: usize) -> JwtTokens {
        let p = pair(m, i);
        JwtTokens::load(m, Some(&p.public), None, DEFAULT_TTL)
            .unwrap_or_else(|e| panic!("{m}: {e}"))
    }

    fn segment(token: &str, i: usize) -> String {
        let part = token.split('.').nth(i).unwrap();
        String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn alice(revision: u64) -> Result<TokenClaims, TokenRefused> {
        Ok(TokenClaims {
            user: "alice".into(),
            revision,
        })
    }

    #[test]
    fn every_method_signs_and_verifies() {
        for m in SignMethod::ALL {
            let t = provider(m, 0);
            assert!(!t.verify_only());
            let token = t.sign("alice", 7).unwrap();
            assert_eq!(t.verify(&token), alice(7), "{m}");
            assert_eq!(
                segment(&token, 0),
                format!(r#"{{"alg":"{}","typ":"JWT"}}"#, m.alg())
            );
            assert!(!token.contains('='), "{m}: no padding: {token}");
            // Another member with the same keys accepts it; one with the public key only too.
            assert_eq!(provider(m, 0).verify(&token), alice(7), "{m}");
            if m.kind() != KeyKind::Hmac {
                let v = verifier(m, 0);
                assert!(v.verify_only());
                assert_eq!(v.verify(&token), alice(7), "{m}");
                assert!(
                    matches!(v.sign("alice", 7), Err(JwtError::VerifyOnly)),
                    "{m}"
                );
            }
        }
    }

    #[test]
    fn signatures_have_the_jws_sizes() {
        for (m, len) in [
            (SignMethod::Rs256, 256),
            (SignMethod::Ps512, 256),
            (SignMethod::Es256, 64),
            (SignMethod::Es384, 96),
            (SignMethod::Es512, 132),
            (SignMethod::EdDsa, 64),
            (SignMethod::Hs384, 48),
        ] {
            let token = provider(m, 0).sign("u", 1).unwrap();
            let sig = URL_SAFE_NO_PAD
                .decode(token.rsplit('.').next().unwrap())
                .unwrap();
            assert_eq!(sig.len(), len, "{m}");
        }
    }

    #[test]
    fn claims_are_written_as_etcd_writes_them() {
        let t = provider(SignMethod::Hs256, 0);
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        let token = t.sign_at("alice", 12, now).unwrap();
        assert_eq!(
            segment(&token, 1),
            r#"{"exp":1700000300,"revision":12,"username":"alice"}"#
        );
        let token = t.sign_at("a\"b\\<&>\n\u{1}é\u{2028}", 1, now).unwrap();
        assert_eq!(
            segment(&token, 1),
            r#"{"exp":1700000300,"revision":1,"username":"a\"b\\\u003c\u0026\u003e\n\u0001é\u2028"}"#
        );
        assert_eq!(
            t.verify_at(&token, 1_700_000_000).unwrap().user,
            "a\"b\\<&>\n\u{1}é\u{2028}"
        );
    }

    #[test]
    fn tokens_expire_after_the_ttl() {
        let t = JwtTokens::load(
            SignMethod::Hs256,
            None,
            Some(SECRETS[0]),
            Duration::from_secs(10),
        )
        .unwrap();
        let token = t
            .sign_at("alice", 3, UNIX_EPOCH + Duration::from_secs(1000))
            .unwrap();
        assert_eq!(t.verify_at(&token, 1000), alice(3));
        assert_eq!(t.verify_at(&token, 1009), alice(3));
        assert_eq!(t.verify_at(&token, 1010), Err(TokenRefused::Expired));
        // Signed now, it is already expired by the real clock after the TTL: made an hour ago.
        let old = t
            .sign_at("alice", 3, SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        assert_eq!(t.verify(&old), Err(TokenRefused::Expired));
    }

    /// A token with `header` and `claims` (JSON) signed with HMAC secret `secret`.
    fn forged(header: &str, claims: &str, secret: &[u8], alg: hmac::Algorithm) -> String {
        let signing = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let tag = hmac::sign(&hmac::Key::new(alg, secret), signing.as_bytes());
        format!("{signing}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    #[test]
    fn alg_none_and_other_algs_are_refused() {
        let claims = r#"{"exp":4000000000,"revision":1,"username":"root"}"#;
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        );
        for m in SignMethod::ALL {
            let t = provider(m, 0);
            assert_eq!(
                t.verify(&none),
                Err(TokenRefused::Method("none".into())),
                "{m}"
            );
            // A token of every other method, even with the same key material.
            for other in SignMethod::ALL.into_iter().filter(|o| *o != m) {
                let token = provider(other, 0).sign("root", 1).unwrap();
                assert_eq!(
                    t.verify(&token),
                    Err(TokenRefused::Method(other.alg().into())),
                    "{m} given {other}"
                );
            }
        }
        // The classic confusion: an HS256 token keyed with the RS256 public key.
        let rsa = pair(SignMethod::Rs256, 0);
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let confused = forged(header, claims, &rsa.public, hmac::HMAC_SHA256);
        assert_eq!(
            verifier(SignMethod::Rs256, 0).verify(&confused),
            Err(TokenRefused::Method("HS256".into()))
        );
        // An alg that is not a string, or none at all.
        let t = provider(SignMethod::Hs256, 0);
        for header in [r#"{"alg":256}"#, r#"{"typ":"JWT"}"#] {
            let token = forged(header, claims, SECRETS[0], hmac::HMAC_SHA256);
            assert!(
                matches!(t.verify(&token), Err(TokenRefused::Malformed(_))),
                "{header}"
            );
        }
    }

    #[test]
    fn tokens_of_other_keys_are_refused() {
        for m in SignMethod::ALL {
            let token = provider(m, 1).sign("root", 1).unwrap();
            assert_eq!(
                provider(m, 0).verify(&token),
                Err(TokenRefused::Signature),
                "{m}"
            );
            if m.kind() != KeyKind::Hmac {
                assert_eq!(
                    verifier(m, 0).verify(&token),
                    Err(TokenRefused::Signature),
                    "{m}"
                );
            }
        }
    }

    #[test]
    fn altered_tokens_are_refused() {
        for m in SignMethod::ALL {
            let t = provider(m, 0);
            let token = t.sign("alice", 5).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            // Claims changed to another user, signature kept.
            let claims = segment(&token, 1).replace("alice", "root");
            let root = format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(claims),
                parts[2]
            );
            assert_eq!(t.verify(&root), Err(TokenRefused::Signature), "{m}");
            // A signature cut short, or one bit of it flipped.
            let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let short = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(&sig[..sig.len() - 1])
            );
            assert_eq!(t.verify(&short), Err(TokenRefused::Signature), "{m}");
            let mut flipped = sig.clone();
            flipped[0] ^= 1;
            let flipped = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(flipped)
            );
            assert_eq!(t.verify(&flipped), Err(TokenRefused::Signature), "{m}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let t = provider(SignMethod::Es256, 0);
        let token = t.sign("alice", 1).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        for bad in [
            String::new(),
            "garbage".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{token}.{}", parts[2]),
            "!!!.???.***".into(),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.%%", parts[0], parts[1]),
            format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("[]"), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode("42"), parts[2]),
            format!("{}..{}", parts[0], parts[2]),
        ] {
            assert!(t.verify(&bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn claims_must_name_a_user_and_revision_and_be_current() {
        let t = provider(SignMethod::Hs512, 0);
        let header = r#"{"alg":"HS512","typ":"JWT"}"#;
        let check = |claims: &str| {
            t.verify_at(&forged(header, claims, SECRETS[0], hmac::HMAC_SHA512), 2000)
        };
        assert_eq!(
            check(r#"{"exp":3000,"revision":4,"username":"alice"}"#),
            alice(4)
        );
        // golang-jwt: exp is optional, 0 counts as absent; iat and nbf are checked when given.
        assert_eq!(check(r#"{"revision":4,"username":"alice"}"#), alice(4));
        assert_eq!(
            check(r#"{"exp":0,"revision":4,"username":"alice"}"#),
            alice(4)
        );
        assert_eq!(
            check(r#"{"exp":2000.9,"revision":4,"username":"alice"}"#),
            Err(TokenRefused::Expired)
        );
        assert_eq!(
            check(r#"{"exp":"3000","revision":4,"username":"alice"}"#),
            Err(TokenRefused::Expired)
        );
        assert_eq!(
            check(r#"{"iat":2001,"revision":4,"username":"alice"}"#),
            Err(TokenRefused::UsedBeforeIssued)
        );
        assert_eq!(
            check(r#"{"nbf":2001,"revision":4,"username":"alice"}"#),
            Err(TokenRefused::NotValidYet)
        );
        assert_eq!(
            check(r#"{"nbf":2000,"revision":4,"username":"alice"}"#),
            alice(4)
        );
        for claims in [
            r#"{"exp":3000,"revision":4}"#,
            r#"{"exp":3000,"username":"alice"}"#,
            r#"{"exp":3000,"revision":"4","username":"alice"}"#,
            r#"{"exp":3000,"revision":4,"username":7}"#,
        ] {
            assert!(
                matches!(check(claims), Err(TokenRefused::Malformed(_))),
                "{claims}"
            );
        }
    }

    #[test]
    fn key_formats() {
        let rsa = pair(SignMethod::Rs256, 0);
        assert!(String::from_utf8_lossy(&rsa.private).contains("BEGIN PRIVATE KEY"));
        let pkcs1 = openssl(&["pkey", "-traditional"], &rsa.private);
        assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
        let p256 = pair(SignMethod::Es256, 0);
        assert!(String::from_utf8_lossy(&p256.private).contains("BEGIN EC PRIVATE KEY"));
        let p256_pkcs8 = openssl(&["pkey"], &p256.private);
        let p521 = pair(SignMethod::Es512, 0);
        let p521_pkcs8 = openssl(&["pkey"], &p521.private);
        let cases: [(SignMethod, &Pair, &[u8]); 4] = [
            (SignMethod::Rs256, &rsa, &pkcs1),
            (SignMethod::Ps384, &rsa, &pkcs1),
            (SignMethod::Es256, &p256, &p256_pkcs8),
            (SignMethod::Es512, &p521, &p521_pkcs8),
        ];
        for (m, p, other_form) in cases {
            let a = JwtTokens::load(m, Some(&p.public), Some(other_form), DEFAULT_TTL).unwrap();
            let b = JwtTokens::load(m, None, Some(&p.private), DEFAULT_TTL).unwrap();
            assert_eq!(b.verify(&a.sign("alice", 2).unwrap()), alice(2), "{m}");
            assert_eq!(a.verify(&b.sign("alice", 2).unwrap()), alice(2), "{m}");
        }
        // Text around the PEM block is skipped, as Go's pem.Decode does.
        let mut noisy = b"a comment\n".to_vec();
        noisy.extend_from_slice(&p256.private);
        JwtTokens::load(SignMethod::Es256, None, Some(&noisy), DEFAULT_TTL).unwrap();
        // A certificate stands for its public key (golang-jwt takes one).
        let key = rcgen::KeyPair::from_pem(&String::from_utf8_lossy(&p256_pkcs8)).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["jwt.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let v = JwtTokens::load(
            SignMethod::Es256,
            Some(cert.pem().as_bytes()),
            None,
            DEFAULT_TTL,
        )
        .unwrap();
        assert_eq!(
            v.verify(&provider(SignMethod::Es256, 0).sign("alice", 2).unwrap()),
            alice(2)
        );
    }

    fn load_err(m: SignMethod, public: Option<&[u8]>, private: Option<&[u8]>) -> String {
        JwtTokens::load(m, public, private, DEFAULT_TTL)
            .map(|t| panic!("{m} loaded: {t:?}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_keys_are_refused_when_loaded() {
        let rsa_key = pair(SignMethod::Rs256, 0);
        let other_rsa = pair(SignMethod::Rs256, 1);
        let p256 = pair(SignMethod::Es256, 0);
        let p384 = pair(SignMethod::Es384, 0);
        let ed = pair(SignMethod::EdDsa, 0);
        for m in SignMethod::ALL {
            assert_eq!(load_err(m, None, None), "auth: missing key data", "{m}");
            assert_eq!(
                load_err(m, Some(b""), Some(b"")),
                "auth: missing key data",
                "{m}"
            );
        }
        assert_eq!(
            load_err(SignMethod::Hs256, Some(SECRETS[0]), None),
            "auth: missing key data"
        );
        assert_eq!(
            load_err(
                SignMethod::Rs256,
                Some(&other_rsa.public),
                Some(&rsa_key.private)
            ),
            "auth: public and private keys don't match"
        );
        assert_eq!(
            load_err(
                SignMethod::Es256,
                Some(&pair(SignMethod::Es256, 1).public),
                Some(&p256.private)
            ),
            "auth: public and private keys don't match"
        );
        assert_eq!(
            load_err(SignMethod::Rs256, None, Some(b"not a key")),
            format!("private key: {NOT_PEM}")
        );
        assert_eq!(
            load_err(SignMethod::Es256, Some(b"not a key"), None),
            format!("public key: {NOT_PEM}")
        );
        // Keys of another type or curve than the method's.
        for (m, public, private) in [
            (SignMethod::Rs256, &p256.public, &p256.private),
            (SignMethod::Es256, &rsa_key.public, &rsa_key.private),
            (SignMethod::Es256, &p384.public, &p384.private),
            (SignMethod::Es384, &p256.public, &p256.private),
            (SignMethod::Es512, &p256.public, &p256.private),
            (SignMethod::EdDsa, &p256.public, &p256.private),
            (SignMethod::Ps256, &ed.public, &ed.private),
        ] {
            let e = load_err(m, None, Some(private));
            assert!(e.starts_with("private key: "), "{m}: {e}");
            let e = load_err(m, Some(public), None);
            assert!(e.starts_with("public key: "), "{m}: {e}");
        }
        // ring neither signs nor verifies with RSA keys under 2048 bits.
        let small = rsa("1024");
        assert!(load_err(SignMethod::Rs256, None, Some(&small.private)).contains("2048"));
        assert!(load_err(SignMethod::Rs256, Some(&small.public), None).contains("2048"));
        // etcd takes no PKCS#1 public key either.
        let pkcs1_public = openssl(&["rsa", "-pubin", "-RSAPublicKey_out"], &rsa_key.public);
        assert!(load_err(SignMethod::Rs256, Some(&pkcs1_public), None).contains("RSA PUBLIC KEY"),);
    }

    #[test]
    fn method_names_are_etcds() {
        for m in SignMethod::ALL {
            assert_eq!(SignMethod::from_alg(m.alg()), Some(m));
        }
        for name in ["none", "rs256", "RS1", "ES521", "Ed25519", ""] {
            assert_eq!(SignMethod::from_alg(name), None, "{name}");
        }
    }
}
