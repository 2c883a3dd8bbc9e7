//! The credential token: a JWT (JWS compact serialization) signed with Ed25519.
//!
//! Verification is deliberately narrow: one algorithm (`EdDSA`), a `kid` that must
//! name a trusted key, the signature checked over exactly the received
//! `header.payload` bytes before any claim is looked at, and no header parameter
//! beyond `alg`, `typ` and `kid` (so `jku`, `jwk`, `x5u` or `crit` cannot steer it).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::{AUDIENCE, LEEWAY};
use crate::files::{from_unix, unix};

/// Longest token accepted, in bytes; larger ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const ALG: &str = "EdDSA";
const TYP: &str = "JWT";

/// Why a presented credential was refused. The client always gets the same 401
/// ([`super::unauthorized`]); the variant is for logs and tests. No variant
/// carries the token text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `Authorization` header (or not valid UTF-8).
    #[error("no bearer credential presented")]
    Missing,
    /// The token or the header is not well formed.
    #[error("malformed credential: {0}")]
    Malformed(&'static str),
    /// The token is larger than [`MAX_TOKEN_BYTES`].
    #[error("credential larger than {MAX_TOKEN_BYTES} bytes")]
    Oversized,
    /// `alg` is not `EdDSA` (for example `none` or `HS256`).
    #[error("credential algorithm is not EdDSA")]
    UnsupportedAlgorithm,
    /// `kid` names no key that verifies now (unknown, or retired).
    #[error("credential signed by unknown or retired key {kid:?}")]
    UnknownKey {
        /// The key id from the header (checked to be a plain id before it is shown).
        kid: String,
    },
    /// The signature does not verify.
    #[error("credential signature does not verify")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("credential expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("credential not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("credential issued by another issuer")]
    WrongIssuer,
    /// `aud` does not contain `hawser`.
    #[error("credential not meant for hawser")]
    WrongAudience,
    /// A refresh token where an access token is needed, or the reverse.
    #[error("{found} credential where {expected} credential is needed")]
    WrongUse {
        /// What the endpoint needs.
        expected: TokenUse,
        /// What the token is.
        found: TokenUse,
    },
    /// The credential (or the refresh credential it came from) is revoked.
    #[error("credential revoked")]
    Revoked,
}

/// A token. `Debug` never prints it; [`SecretToken::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Wraps token text.
    pub fn new(token: String) -> SecretToken {
        SecretToken(token)
    }
    /// The token text, for a kubeconfig, a file or an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// What a token may be used for (claim `use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// Presented to `/clusters/<name>/...`.
    Access,
    /// Presented only to the refresh endpoint, for a new access token.
    Refresh,
}

impl fmt::Display for TokenUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenUse::Access => "an access",
            TokenUse::Refresh => "a refresh",
        })
    }
}

/// The claims of a Hawser credential. Times are seconds since the Unix epoch.
/// Unknown claims are ignored (a newer issuer may add some), unknown header
/// parameters are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer; must equal the configured issuer.
    pub iss: String,
    /// The user name the agent impersonates.
    pub sub: String,
    /// Audiences; must contain `hawser`. A single string is accepted too.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry.
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// The credential id (UUID v4); what `credential revoke` takes.
    pub jti: String,
    /// Access or refresh.
    #[serde(rename = "use")]
    pub token_use: TokenUse,
    /// Groups to impersonate.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes to impersonate (lower-case keys).
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
    /// Clusters this credential may reach. Required, and empty means none: a
    /// missing list must never read as "all".
    pub clusters: Vec<String>,
    /// The user's UID, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// For access tokens minted by the refresh endpoint: the refresh credential's
    /// id, so revoking that credential revokes them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Claims {
    /// Expiry as a time.
    pub fn expires_at(&self) -> SystemTime {
        from_unix(self.exp)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// The key id of an Ed25519 public key: 16 hex digits of its SHA-256. Derived, so
/// a manifest cannot pair a kid with the wrong key, and safe in file names.
pub fn kid_for(public: &[u8]) -> String {
    Sha256::digest(public)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `kid` has the shape [`kid_for`] produces.
pub fn is_valid_kid(kid: &str) -> bool {
    kid.len() == 16
        && kid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An Ed25519 private key and its id. `Debug` prints only the id.
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 v2 Ed25519 key (what [`SigningKey::generate`] returns).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8(der)?;
        Ok(SigningKey {
            kid: kid_for(pair.public_key().as_ref()),
            pair,
        })
    }

    /// A new random key, with its PKCS#8 encoding for storage.
    pub fn generate() -> Result<(SigningKey, Vec<u8>), ring::error::Unspecified> {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())?;
        let key = SigningKey::from_pkcs8(doc.as_ref()).map_err(|_| ring::error::Unspecified)?;
        Ok((key, doc.as_ref().to_vec()))
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }
}

/// Public keys that verify credentials, by kid. A key may carry `valid_until`
/// (a retiring key): after it, tokens signed with it are refused, even if this
/// set was loaded before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyingKeys {
    keys: BTreeMap<String, TrustedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TrustedKey {
    public: [u8; 32],
    valid_until: Option<SystemTime>,
}

impl VerifyingKeys {
    /// An empty set (verifies nothing).
    pub fn new() -> VerifyingKeys {
        VerifyingKeys::default()
    }

    /// Adds a public key under its kid ([`kid_for`]).
    pub fn insert(&mut self, public: [u8; 32], valid_until: Option<SystemTime>) {
        self.keys.insert(
            kid_for(&public),
            TrustedKey {
                public,
                valid_until,
            },
        );
    }

    /// The kids in the set, with their `valid_until`.
    pub fn kids(&self) -> impl Iterator<Item = (&str, Option<SystemTime>)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v.valid_until))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Signs `claims` with `key`: `base64url(header).base64url(claims).base64url(sig)`.
pub fn sign(claims: &Claims, key: &SigningKey) -> SecretToken {
    let header = Header {
        alg: ALG.into(),
        typ: Some(TYP.into()),
        kid: Some(key.kid.clone()),
    };
    // Structs of strings, integers and string maps always serialize.
    let header = serde_json::to_vec(&header).expect("JWT header serializes");
    let payload = serde_json::to_vec(claims).expect("JWT claims serialize");
    let mut text = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.pair.sign(text.as_bytes());
    text.push('.');
    text.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    SecretToken(text)
}

/// Verifies `token` against `keys` at `now` and returns its claims. Does not look
/// at `use` or revocation; [`super::Verifier`] does.
pub fn verify(
    token: &str,
    keys: &VerifyingKeys,
    now: SystemTime,
    expected_issuer: &str,
) -> Result<Claims, CredentialError> {
    use CredentialError::*;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Oversized);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("expected three dot-separated parts"));
    };
    let header: Header =
        decode_json(h64).ok_or(Malformed("header is not base64url JSON with alg, typ, kid"))?;
    if header.alg != ALG {
        return Err(UnsupportedAlgorithm);
    }
    if header.typ.as_deref().is_some_and(|t| t != TYP) {
        return Err(Malformed("typ is not JWT"));
    }
    let kid = header.kid.ok_or(Malformed("header has no kid"))?;
    if !is_valid_kid(&kid) {
        return Err(Malformed("kid is not a key id"));
    }
    let key = match keys.keys.get(&kid) {
        Some(k) if k.valid_until.is_none_or(|until| now <= until) => k,
        _ => return Err(UnknownKey { kid }),
    };
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| Malformed("signature is not base64url"))?;
    // The signed bytes are exactly the received `header.payload`, never a re-encoding.
    let signed = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    UnparsedPublicKey::new(&ED25519, &key.public)
        .verify(signed, &sig)
        .map_err(|_| BadSignature)?;
    let claims: Claims = decode_json(p64).ok_or(Malformed(
        "claims are not base64url JSON of the expected shape",
    ))?;
    if claims.iss != expected_issuer {
        return Err(WrongIssuer);
    }
    if !claims.aud.iter().any(|a| a == AUDIENCE) {
        return Err(WrongAudience);
    }
    let (now, leeway) = (unix(now), secs(LEEWAY));
    if now > claims.exp.saturating_add(leeway) {
        return Err(Expired);
    }
    if now.saturating_add(leeway) < claims.nbf {
        return Err(NotYetValid);
    }
    Ok(claims)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
