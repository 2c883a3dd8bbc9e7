//! Pure parsing and checks of a Hawser access token, with no host calls: the
//! `Bearer` header, the JWS compact form, the header and the claims. The same rules
//! as the host's `hawser::credential::token::verify` and `Verifier::verify_token`.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Deserializer};

/// Longest token accepted, in bytes; larger ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The only JWS algorithm accepted.
pub const ALG: &str = "EdDSA";
/// The only `typ` accepted (when present).
pub const TYP: &str = "JWT";
/// The audience every Hawser credential carries.
pub const AUDIENCE: &str = "hawser";
/// The `use` of a token `kubectl` presents (refresh tokens are refused).
pub const ACCESS: &str = "access";
/// Clock skew tolerated on `exp` and `nbf`, seconds.
pub const LEEWAY_SECS: i64 = 60;

/// Why a credential was refused. The client always gets the same 401; this is for
/// the log and tests. No variant carries the token or a claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The header or the token is not well formed.
    Malformed(&'static str),
    /// The token is larger than [`MAX_TOKEN_BYTES`].
    Oversized,
    /// `alg` is not `EdDSA` (`none`, `HS256`, ...).
    UnsupportedAlgorithm,
    /// `kid` names no configured key, or a retiring key past its `retire_after`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not contain `hawser`.
    WrongAudience,
    /// `exp` is in the past, beyond the leeway.
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    NotYetValid,
    /// Not an access token (a refresh token, or an unknown `use`).
    WrongUse,
    /// The credential, or the refresh credential it was minted from, is revoked.
    Revoked,
    /// The claims name an identity the host would refuse to send upstream.
    UnusableIdentity(&'static str),
    /// The configured revocation file could not be read (missing, unreadable or
    /// invalid, with no earlier good copy): every credential is refused.
    RevocationsUnavailable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "malformed credential: {why}"),
            Refusal::Oversized => write!(f, "credential larger than {MAX_TOKEN_BYTES} bytes"),
            Refusal::UnsupportedAlgorithm => f.write_str("credential algorithm is not EdDSA"),
            Refusal::UnknownKey => f.write_str("credential signed by an unknown or retired key"),
            Refusal::BadSignature => f.write_str("credential signature does not verify"),
            Refusal::WrongIssuer => f.write_str("credential issued by another issuer"),
            Refusal::WrongAudience => f.write_str("credential not meant for hawser"),
            Refusal::Expired => f.write_str("credential expired"),
            Refusal::NotYetValid => f.write_str("credential not valid yet"),
            Refusal::WrongUse => f.write_str("not an access credential"),
            Refusal::Revoked => f.write_str("credential revoked"),
            Refusal::RevocationsUnavailable => {
                f.write_str("revocation file unavailable; refusing every credential")
            }
            Refusal::UnusableIdentity(why) => write!(f, "credential identity unusable: {why}"),
        }
    }
}

/// `Bearer <token>`: scheme case-insensitive, exactly one token, no inner whitespace.
pub fn bearer(value: &str) -> Result<&str, Refusal> {
    const WHY: Refusal = Refusal::Malformed("expected `Bearer <token>`");
    let (scheme, token) = value.trim().split_once(' ').ok_or(WHY)?;
    let token = token.trim_start();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.contains(char::is_whitespace)
    {
        return Err(WHY);
    }
    Ok(token)
}

/// The JWS protected header. Parameters beyond `alg`, `typ` and `kid` are refused,
/// so `jku`, `jwk`, `x5u` or `crit` cannot steer verification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Algorithm; must be [`ALG`].
    pub alg: String,
    /// Type; [`TYP`] when present.
    #[serde(default)]
    pub typ: Option<String>,
    /// Key id; must name a configured key.
    #[serde(default)]
    pub kid: Option<String>,
}

/// A token split into its parts, header checked, signature not yet verified.
#[derive(Debug)]
pub struct Jws<'a> {
    /// The key id (shape checked by [`is_valid_kid`]).
    pub kid: String,
    /// Exactly the received `header.payload` bytes: what the signature covers.
    pub signed: &'a [u8],
    /// The base64url payload, decoded only after the signature verifies.
    pub payload: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits a JWS compact token (exactly three parts) and checks its header: size,
/// `alg` = EdDSA, `typ` = JWT when present, a `kid` of the issuer's shape.
pub fn split(token: &str) -> Result<Jws<'_>, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Oversized);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed("expected three dot-separated parts"));
    };
    let header: Header = decode_json(h64).ok_or(Refusal::Malformed(
        "header is not base64url JSON with alg, typ, kid",
    ))?;
    if header.alg != ALG {
        return Err(Refusal::UnsupportedAlgorithm);
    }
    if header.typ.as_deref().is_some_and(|t| t != TYP) {
        return Err(Refusal::Malformed("typ is not JWT"));
    }
    let kid = header.kid.ok_or(Refusal::Malformed("header has no kid"))?;
    if !is_valid_kid(&kid) {
        return Err(Refusal::Malformed("kid is not a key id"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| Refusal::Malformed("signature is not base64url"))?;
    if signature.len() != 64 {
        return Err(Refusal::BadSignature);
    }
    Ok(Jws {
        kid,
        // The signed bytes are exactly the received `header.payload`, never a re-encoding.
        signed: &token.as_bytes()[..h64.len() + 1 + p64.len()],
        payload: p64,
        signature,
    })
}

/// Whether `token` claims to come from `issuer`: a JWS compact token (three parts)
/// whose payload is base64url JSON with that `iss`. Nothing here is verified; it
/// only decides whether this stage owns the credential (and verifies it) or abstains
/// so a later credential stage may, as kube-apiserver's OIDC authenticator does.
/// Tokens over [`MAX_TOKEN_BYTES`] are never decoded and count as claiming it, so
/// the caller refuses them.
pub fn claims_issuer(token: &str, issuer: &str) -> bool {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return true;
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    decode_json::<Iss>(payload).is_some_and(|c| c.iss == issuer)
}

/// Whether `kid` has the shape the issuer gives key ids: 16 lower-case hex digits.
pub fn is_valid_kid(kid: &str) -> bool {
    kid.len() == 16
        && kid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The claims of a Hawser credential (times in seconds since the Unix epoch).
/// Unknown claims are ignored; a missing required one makes the token malformed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// User name.
    pub sub: String,
    /// Audiences (a single string is accepted too).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry.
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at (required, not checked).
    pub iat: i64,
    /// Credential id.
    pub jti: String,
    /// `access` or `refresh`.
    #[serde(rename = "use")]
    pub token_use: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
    /// Clusters the credential may reach. Required; empty means none.
    pub clusters: Vec<String>,
    /// The user's UID.
    #[serde(default)]
    pub uid: Option<String>,
    /// The refresh credential this access token was minted from.
    #[serde(default)]
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

/// Decodes the payload; call only after the signature verified.
pub fn decode_claims(payload: &str) -> Result<Claims, Refusal> {
    decode_json(payload).ok_or(Refusal::Malformed(
        "claims are not base64url JSON of the expected shape",
    ))
}

/// Issuer, audience, time window (with [`LEEWAY_SECS`]) and use.
pub fn check_claims(claims: &Claims, issuer: &str, now_secs: i64) -> Result<(), Refusal> {
    if claims.iss != issuer {
        return Err(Refusal::WrongIssuer);
    }
    if !claims.aud.iter().any(|a| a == AUDIENCE) {
        return Err(Refusal::WrongAudience);
    }
    if now_secs > claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(Refusal::Expired);
    }
    if now_secs.saturating_add(LEEWAY_SECS) < claims.nbf {
        return Err(Refusal::NotYetValid);
    }
    if claims.token_use != ACCESS {
        return Err(Refusal::WrongUse);
    }
    Ok(())
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    const KID: &str = "0123456789abcdef";

    fn token(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header),
            b64(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    fn header() -> String {
        format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{KID}"}}"#)
    }

    #[test]
    fn bearer_takes_exactly_one_token_with_any_scheme_case() {
        assert_eq!(bearer("Bearer abc"), Ok("abc"));
        assert_eq!(bearer("bearer   abc  "), Ok("abc"));
        assert_eq!(bearer("  BEARER abc"), Ok("abc"));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearer a b",
            "Bearer a\tb",
            "Bearerabc",
            "abc",
        ] {
            assert!(bearer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_issuer_reads_the_unverified_iss_and_claims_oversized_tokens() {
        let ours = token(&header(), r#"{"iss":"hub","sub":"a"}"#, &[7; 64]);
        assert!(claims_issuer(&ours, "hub"));
        assert!(!claims_issuer(&ours, "other"));
        for not_ours in [
            String::new(),
            "s3cret".into(),
            token(&header(), r#"{"sub":"a"}"#, &[7; 64]),
            token(&header(), r#"{"iss":7}"#, &[7; 64]),
            token(&header(), "not json", &[7; 64]),
            format!("{ours}.x"),
            ours.rsplit_once('.').unwrap().0.to_string(),
        ] {
            assert!(!claims_issuer(&not_ours, "hub"), "{not_ours:?}");
        }
        // Never decoded, and so never passed on to another stage.
        assert!(claims_issuer(&"x".repeat(MAX_TOKEN_BYTES + 1), "hub"));
    }

    #[test]
    fn split_keeps_the_received_signed_bytes() {
        let t = token(&header(), "{}", &[7; 64]);
        let jws = split(&t).unwrap();
        assert_eq!(jws.kid, KID);
        let dot = t.rfind('.').unwrap();
        assert_eq!(jws.signed, &t.as_bytes()[..dot]);
        assert_eq!(jws.payload, b64("{}"));
        assert_eq!(jws.signature, [7; 64]);
    }

    #[test]
    fn split_refuses_other_shapes_and_algorithms() {
        let sig = [1u8; 64];
        let good = token(&header(), "{}", &sig);
        let cases: Vec<(String, Refusal)> = vec![
            (
                good.splitn(3, '.').take(2).collect::<Vec<_>>().join("."),
                Refusal::Malformed("expected three dot-separated parts"),
            ),
            (
                format!("{good}.x"),
                Refusal::Malformed("expected three dot-separated parts"),
            ),
            (
                token(&format!(r#"{{"alg":"none","kid":"{KID}"}}"#), "{}", &[]),
                Refusal::UnsupportedAlgorithm,
            ),
            (
                token(
                    &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{KID}"}}"#),
                    "{}",
                    &[0; 32],
                ),
                Refusal::UnsupportedAlgorithm,
            ),
            (
                token(
                    &format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{KID}","jku":"https://x"}}"#),
                    "{}",
                    &sig,
                ),
                Refusal::Malformed("header is not base64url JSON with alg, typ, kid"),
            ),
            (
                token(
                    &format!(r#"{{"alg":"EdDSA","typ":"JOSE","kid":"{KID}"}}"#),
                    "{}",
                    &sig,
                ),
                Refusal::Malformed("typ is not JWT"),
            ),
            (
                token(r#"{"alg":"EdDSA"}"#, "{}", &sig),
                Refusal::Malformed("header has no kid"),
            ),
            (
                token(r#"{"alg":"EdDSA","kid":"../../etc"}"#, "{}", &sig),
                Refusal::Malformed("kid is not a key id"),
            ),
            (
                token(
                    &format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{KID}"}}"#),
                    "{}",
                    &sig,
                ),
                Refusal::Malformed("header is not base64url JSON with alg, typ, kid"),
            ),
            (
                format!("{}.{}.{}", b64(&header()), b64("{}"), "AAA="),
                Refusal::Malformed("signature is not base64url"),
            ),
            (token(&header(), "{}", &[1; 63]), Refusal::BadSignature),
            (
                format!("{}=.{}.{}", b64(&header()), b64("{}"), b64("x")),
                Refusal::Malformed("header is not base64url JSON with alg, typ, kid"),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(split(&t).unwrap_err(), want, "{t}");
        }
        let big = token(&header(), &"x".repeat(MAX_TOKEN_BYTES), &sig);
        assert_eq!(split(&big).unwrap_err(), Refusal::Oversized);
    }

    fn claims(extra: &str) -> Claims {
        let json = format!(
            r#"{{"iss":"hub","sub":"alice","aud":"hawser","exp":2000,"nbf":1000,"iat":1000,
                "jti":"7b0e6d1c-4c1a-4d3e-9f00-0123456789ab","use":"access","clusters":["eu1"]{extra}}}"#
        );
        decode_claims(&b64(&json)).unwrap()
    }

    #[test]
    fn claims_decode_with_defaults_and_ignore_unknown_claims() {
        let c = claims(r#","future":true"#);
        assert_eq!(c.aud, ["hawser"]);
        assert!(c.groups.is_empty() && c.extra.is_empty());
        assert_eq!((c.uid, c.rid), (None, None));
        let c = claims(r#","groups":["dev"],"extra":{"scopes":["a","b"]},"uid":"42","rid":"r""#);
        assert_eq!(c.groups, ["dev"]);
        assert_eq!(c.extra["scopes"], ["a", "b"]);
        // Missing `clusters` must never read as "all".
        let no_clusters = r#"{"iss":"hub","sub":"a","aud":["hawser"],"exp":1,"nbf":1,"iat":1,"jti":"j","use":"access"}"#;
        assert!(decode_claims(&b64(no_clusters)).is_err());
        assert!(decode_claims("%%%").is_err());
    }

    #[test]
    fn claim_checks_with_leeway() {
        let c = claims("");
        assert_eq!(check_claims(&c, "hub", 1500), Ok(()));
        assert_eq!(check_claims(&c, "other", 1500), Err(Refusal::WrongIssuer));
        assert_eq!(check_claims(&c, "hub", 2060), Ok(()));
        assert_eq!(check_claims(&c, "hub", 2061), Err(Refusal::Expired));
        assert_eq!(check_claims(&c, "hub", 940), Ok(()));
        assert_eq!(check_claims(&c, "hub", 939), Err(Refusal::NotYetValid));
        let mut r = c.clone();
        r.token_use = "refresh".into();
        assert_eq!(check_claims(&r, "hub", 1500), Err(Refusal::WrongUse));
        let mut a = c;
        a.aud = vec!["kubernetes".into()];
        assert_eq!(check_claims(&a, "hub", 1500), Err(Refusal::WrongAudience));
    }
}
