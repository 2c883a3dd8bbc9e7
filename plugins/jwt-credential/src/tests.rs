//! Native tests of the whole check: tokens signed in-process with `ring`, verified
//! through the SDK's native `verify_signature` (same library and rules as the host).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hawser_plugin_sdk::testing::request;
use hawser_plugin_sdk::DenialKind;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use super::*;

pub(crate) const NOW: u64 = 1_700_000_000;
pub(crate) const JTI: &str = "7b0e6d1c-4c1a-4d3e-9f00-0123456789ab";
pub(crate) const RID: &str = "11111111-2222-3333-4444-555555555555";

pub(crate) fn pair(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

pub(crate) fn kid(p: &Ed25519KeyPair) -> String {
    settings::kid_for(p.public_key().as_ref())
}

pub(crate) fn at(seconds: u64) -> Timestamp {
    Timestamp {
        seconds,
        nanoseconds: 0,
    }
}

fn plugin(extra: Value) -> JwtCredential {
    let k = pair(1);
    let mut cfg = json!({
        "issuer": "hawser-hub",
        "keys": { kid(&k): STANDARD.encode(k.public_key().as_ref()) },
    });
    for (name, v) in extra.as_object().unwrap() {
        cfg[name] = v.clone();
    }
    JwtCredential::init(&Config::from_json(cfg.to_string())).unwrap()
}

pub(crate) fn claims() -> Value {
    json!({
        "iss": "hawser-hub", "sub": "alice@example.com", "aud": ["hawser"],
        "exp": NOW + 600, "nbf": NOW, "iat": NOW, "jti": JTI, "use": "access",
        "groups": ["dev", "ops"], "extra": { "scopes": ["read", "write"] },
        "clusters": ["eu1", "us2"], "uid": "42",
    })
}

fn sign_raw(header: &Value, claims: &Value, key: &Ed25519KeyPair) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

pub(crate) fn sign(claims: &Value, key: &Ed25519KeyPair) -> String {
    sign_raw(
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid(key)}),
        claims,
        key,
    )
}

pub(crate) fn with(mut c: Value, name: &str, v: Value) -> Value {
    c[name] = v;
    c
}

fn check(p: &JwtCredential, token: &str) -> Result<Option<Principal>, Denial> {
    p.check_at(
        &request("/api", &[("authorization", &format!("Bearer {token}"))]),
        at(NOW),
    )
}

pub(crate) fn unauthorized() -> Result<Option<Principal>, Denial> {
    Err(Denial::unauthorized("Unauthorized"))
}

#[test]
fn a_valid_access_token_is_the_principal() {
    let p = plugin(json!({}));
    let who = check(&p, &sign(&claims(), &pair(1))).unwrap().unwrap();
    assert_eq!(who.user, "alice@example.com");
    assert_eq!(who.uid, "42");
    assert_eq!(who.groups, ["dev", "ops"]);
    assert_eq!(
        who.extra("scopes"),
        Some(&["read".to_string(), "write".into()][..])
    );
    // A single-string audience, no uid, groups or extra.
    let mut c = with(claims(), "aud", json!("hawser"));
    for k in ["uid", "groups", "extra"] {
        c.as_object_mut().unwrap().remove(k);
    }
    let who = check(&p, &sign(&c, &pair(1))).unwrap().unwrap();
    assert_eq!((who.uid.as_str(), who.groups.len()), ("", 0));
}

#[test]
fn no_token_of_this_issuer_abstains_and_two_headers_are_unauthorized() {
    let p = plugin(json!({}));
    let other_issuer = format!(
        "Bearer {}",
        sign(&with(claims(), "iss", json!("evil")), &pair(1))
    );
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let not_json = format!("Bearer a.{}.b", URL_SAFE_NO_PAD.encode("{"));
    let two_parts = format!("Bearer a.{payload}");
    for headers in [
        vec![],
        vec![("authorization", "Basic YWxpY2U6cHc=")],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer s3cret")],
        vec![("authorization", "Bearer not.a.jwt")],
        vec![("authorization", not_json.as_str())],
        vec![("authorization", two_parts.as_str())],
        vec![("authorization", other_issuer.as_str())],
    ] {
        assert_eq!(
            p.check_at(&request("/api", &headers), at(NOW)),
            Ok(None),
            "{headers:?}"
        );
    }
    let good = format!("Bearer {}", sign(&claims(), &pair(1)));
    let twice = [
        ("authorization", good.as_str()),
        ("authorization", good.as_str()),
    ];
    assert_eq!(
        p.check_at(&request("/api", &twice), at(NOW)),
        unauthorized()
    );
}

#[test]
fn every_invalid_token_is_the_same_401() {
    let p = plugin(json!({}));
    let k = pair(1);
    let other = pair(2);
    let valid = sign(&claims(), &k);
    let (h, rest) = valid.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    // The trusted key's header over a payload signed by another key.
    let foreign = sign_raw(
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid(&k)}),
        &claims(),
        &other,
    );
    // A payload changed after signing.
    let tampered_claims = with(claims(), "groups", json!(["system:masters"]));
    let tampered = format!(
        "{h}.{}.{}",
        URL_SAFE_NO_PAD.encode(tampered_claims.to_string()),
        valid.rsplit('.').next().unwrap()
    );
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid(&k)}).to_string())
    );
    let no_clusters = {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("clusters");
        c
    };
    let claims_shape = Refusal::Malformed("claims are not base64url JSON of the expected shape");
    let cases: Vec<(&str, String, Refusal)> = vec![
        (
            "signed by another key under a trusted kid",
            foreign,
            Refusal::BadSignature,
        ),
        ("payload tampered", tampered, Refusal::BadSignature),
        ("alg none", none, Refusal::UnsupportedAlgorithm),
        ("unknown kid", sign(&claims(), &other), Refusal::UnknownKey),
        (
            "wrong audience",
            sign(&with(claims(), "aud", json!(["kubernetes"])), &k),
            Refusal::WrongAudience,
        ),
        (
            "expired",
            sign(&with(claims(), "exp", json!(NOW - 61)), &k),
            Refusal::Expired,
        ),
        (
            "not yet valid",
            sign(&with(claims(), "nbf", json!(NOW + 61)), &k),
            Refusal::NotYetValid,
        ),
        (
            "refresh token",
            sign(&with(claims(), "use", json!("refresh")), &k),
            Refusal::WrongUse,
        ),
        ("no clusters claim", sign(&no_clusters, &k), claims_shape),
        (
            "illegal user name",
            sign(&with(claims(), "sub", json!("alice\r\nx-evil: 1")), &k),
            Refusal::UnusableIdentity("sub is not a legal user name"),
        ),
        (
            "oversized",
            sign(&with(claims(), "padding", json!("x".repeat(9 * 1024))), &k),
            Refusal::Oversized,
        ),
    ];
    for (what, token, why) in cases {
        assert_eq!(check(&p, &token), unauthorized(), "{what}");
        let req = request("/api", &[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(p.decide(&req, at(NOW)), Outcome::Refused(why), "{what}");
    }
    // Within the leeway both ends still verify.
    for c in [
        with(claims(), "exp", json!(NOW - 60)),
        with(claims(), "nbf", json!(NOW + 60)),
    ] {
        assert!(check(&p, &sign(&c, &k)).unwrap().is_some());
    }
}

#[test]
fn revoked_credentials_and_their_refreshed_tokens_are_refused() {
    let k = pair(1);
    let token = sign(&claims(), &k);
    let minted = sign(&with(claims(), "rid", json!(RID)), &k);
    let p = plugin(json!({}));
    assert!(check(&p, &token).unwrap().is_some());
    assert!(check(&p, &minted).unwrap().is_some());
    let p = plugin(json!({ "revoked": [JTI.to_uppercase()] }));
    assert_eq!(check(&p, &token), unauthorized());
    let p = plugin(json!({ "revoked": [{ "id": RID }] }));
    assert_eq!(check(&p, &minted), unauthorized());
    assert!(check(&p, &token).unwrap().is_some());
}

#[test]
fn clusters_the_token_does_not_allow_are_forbidden() {
    let token = sign(&claims(), &pair(1));
    let header = format!("Bearer {token}");
    let mut req = request("/api", &[("authorization", &header)]);
    // Hub: the request's target cluster.
    let hub = plugin(json!({}));
    req.cluster = "eu1".into();
    assert!(hub.check_at(&req, at(NOW)).unwrap().is_some());
    req.cluster = "ap3".into();
    let d = hub.check_at(&req, at(NOW)).unwrap_err();
    assert_eq!(d.kind, DenialKind::Forbidden);
    assert_eq!(
        d.message,
        "clusters \"ap3\" is forbidden: User \"alice@example.com\" cannot access cluster \"ap3\": the credential does not allow this cluster"
    );
    // The credential is genuine, so the denial names its user (for audit).
    assert_eq!(
        d.principal.as_ref().map(|p| p.user.as_str()),
        Some("alice@example.com")
    );
    // Agent: its own cluster, whatever the request says.
    let agent = plugin(json!({ "cluster": "us2" }));
    req.cluster = String::new();
    assert!(agent.check_at(&req, at(NOW)).unwrap().is_some());
    let agent = plugin(json!({ "cluster": "ap3" }));
    assert_eq!(
        agent.check_at(&req, at(NOW)).unwrap_err().kind,
        DenialKind::Forbidden
    );
    // An invalid token is 401 even for a cluster it does not allow.
    let expired = sign(&with(claims(), "exp", json!(NOW - 3600)), &pair(1));
    let header = format!("Bearer {expired}");
    let mut req = request("/api", &[("authorization", &header)]);
    req.cluster = "ap3".into();
    assert_eq!(hub.check_at(&req, at(NOW)), unauthorized());
}

#[test]
fn a_retiring_key_stops_verifying_after_retire_after() {
    let k = pair(1);
    let cfg = json!({
        "issuer": "hawser-hub",
        "keys": { kid(&k): {
            "public_key": STANDARD.encode(k.public_key().as_ref()),
            "retire_after": "2023-11-14T22:13:20Z", // NOW
        }},
    });
    let p = JwtCredential::init(&Config::from_json(cfg.to_string())).unwrap();
    let header = format!("Bearer {}", sign(&claims(), &k));
    let req = request("/api", &[("authorization", &header)]);
    assert!(p.check_at(&req, at(NOW)).unwrap().is_some());
    assert_eq!(p.check_at(&req, at(NOW + 1)), unauthorized());
}

#[test]
fn another_header_carries_the_bare_token() {
    let p = plugin(json!({ "header": "X-Hawser-Token" }));
    let token = sign(&claims(), &pair(1));
    let bearer = format!("Bearer {token}");
    for value in [token.as_str(), bearer.as_str()] {
        let req = request("/api", &[("x-hawser-token", value)]);
        assert!(p.check_at(&req, at(NOW)).unwrap().is_some(), "{value}");
    }
    // The Authorization header is not this stage's: abstain.
    let req = request("/api", &[("authorization", &bearer)]);
    assert_eq!(p.check_at(&req, at(NOW)), Ok(None));
}

#[test]
fn forbidden_messages_are_bounded_and_printable() {
    let m = forbidden_message(&"u".repeat(2000), "eu1\n");
    assert!(m.len() <= 1024);
    assert!(!m.chars().any(char::is_control));
}
