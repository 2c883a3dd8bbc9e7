use super::*;
use crate::credential::testing::{claims, key, ISSUER};
use std::time::{Duration, SystemTime};

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

/// A token with any header and claims, signed (or not) by `key`.
fn craft(header: serde_json::Value, claims: serde_json::Value, key: Option<&SigningKey>) -> String {
    let text = format!("{}.{}", b64(&header), b64(&claims));
    let sig = key
        .map(|k| k.pair.sign(text.as_bytes()).as_ref().to_vec())
        .unwrap_or_default();
    format!("{text}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn sign_verify_round_trip() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let c = claims(now, TokenUse::Access);
    let token = sign(&c, &key);
    assert_eq!(verify(token.expose(), &keys, now, ISSUER), Ok(c));
}

#[test]
fn header_is_eddsa_jwt_with_kid() {
    let (key, _) = key();
    let token = sign(&claims(SystemTime::now(), TokenUse::Access), &key);
    let head = token.expose().split('.').next().expect("header");
    let v: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).expect("b64")).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})
    );
    assert!(is_valid_kid(key.kid()));
}

#[test]
fn tampered_payload_fails_the_signature() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let token = sign(&claims(now, TokenUse::Access), &key);
    let parts: Vec<&str> = token.expose().split('.').collect();
    let mut c = claims(now, TokenUse::Access);
    c.groups = vec!["admins".into()];
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_value(&c).expect("json")),
        parts[2]
    );
    assert_eq!(
        verify(&forged, &keys, now, ISSUER),
        Err(CredentialError::BadSignature)
    );
}

#[test]
fn other_algorithms_are_refused() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let c = serde_json::to_value(claims(now, TokenUse::Access)).expect("json");
    for alg in ["none", "HS256", "RS256", "ES256", "eddsa"] {
        let t = craft(
            serde_json::json!({"alg": alg, "typ": "JWT", "kid": key.kid()}),
            c.clone(),
            Some(&key),
        );
        assert_eq!(
            verify(&t, &keys, now, ISSUER),
            Err(CredentialError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
    // `alg: none` with an empty signature part.
    let t = craft(serde_json::json!({"alg": "none"}), c, None);
    assert_eq!(
        verify(&t, &keys, now, ISSUER),
        Err(CredentialError::UnsupportedAlgorithm)
    );
}

#[test]
fn extra_header_parameters_and_missing_kid_are_refused() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let c = serde_json::to_value(claims(now, TokenUse::Access)).expect("json");
    let jku = serde_json::json!({"alg": "EdDSA", "kid": key.kid(), "jku": "https://evil/keys"});
    assert!(matches!(
        verify(&craft(jku, c.clone(), Some(&key)), &keys, now, ISSUER),
        Err(CredentialError::Malformed(_))
    ));
    let no_kid = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
    assert!(matches!(
        verify(&craft(no_kid, c, Some(&key)), &keys, now, ISSUER),
        Err(CredentialError::Malformed(_))
    ));
}

#[test]
fn unknown_and_retired_keys_are_refused() {
    let now = SystemTime::now();
    let (key, _) = key();
    let (_, other_keys) = crate::credential::testing::key();
    let token = sign(&claims(now, TokenUse::Access), &key);
    assert_eq!(
        verify(token.expose(), &other_keys, now, ISSUER),
        Err(CredentialError::UnknownKey {
            kid: key.kid().into()
        })
    );
    let mut retiring = VerifyingKeys::new();
    retiring.insert(key.public_key(), Some(now + Duration::from_secs(10)));
    assert!(verify(token.expose(), &retiring, now, ISSUER).is_ok());
    let later = now + Duration::from_secs(11);
    assert!(matches!(
        verify(token.expose(), &retiring, later, ISSUER),
        Err(CredentialError::UnknownKey { .. })
    ));
}

#[test]
fn malformed_and_oversized_tokens_are_refused() {
    let now = SystemTime::now();
    let (key, keys) = key();
    for bad in ["", "a", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
        assert!(
            matches!(
                verify(bad, &keys, now, ISSUER),
                Err(CredentialError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
    let big = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        verify(&big, &keys, now, ISSUER),
        Err(CredentialError::Oversized)
    );
    // Correctly signed, but the claims lack `use` and `clusters`.
    let c = serde_json::json!({"iss": ISSUER, "sub": "a", "aud": "hawser", "exp": 9_999_999_999i64, "nbf": 0, "iat": 0, "jti": "x"});
    let t = craft(
        serde_json::json!({"alg": "EdDSA", "kid": key.kid()}),
        c,
        Some(&key),
    );
    assert!(matches!(
        verify(&t, &keys, now, ISSUER),
        Err(CredentialError::Malformed(_))
    ));
    // A signature of the wrong length.
    let token = sign(&claims(now, TokenUse::Access), &key);
    let (signed, _) = token.expose().rsplit_once('.').expect("three parts");
    let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([0u8; 63]));
    assert_eq!(
        verify(&short, &keys, now, ISSUER),
        Err(CredentialError::BadSignature)
    );
    // Non-canonical base64 (padding) is malformed, not a signature to try.
    let padded = format!("{}=", token.expose());
    assert!(matches!(
        verify(&padded, &keys, now, ISSUER),
        Err(CredentialError::Malformed(_))
    ));
}

#[test]
fn time_issuer_and_audience_are_checked() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let c = claims(now, TokenUse::Access);
    let t = sign(&c, &key);
    let hour = Duration::from_secs(3600);
    // Within the 60 s leeway on both sides.
    assert!(verify(
        t.expose(),
        &keys,
        now + hour + Duration::from_secs(59),
        ISSUER
    )
    .is_ok());
    assert!(verify(t.expose(), &keys, now - Duration::from_secs(59), ISSUER).is_ok());
    assert_eq!(
        verify(
            t.expose(),
            &keys,
            now + hour + Duration::from_secs(62),
            ISSUER
        ),
        Err(CredentialError::Expired)
    );
    assert_eq!(
        verify(t.expose(), &keys, now - Duration::from_secs(62), ISSUER),
        Err(CredentialError::NotYetValid)
    );
    assert_eq!(
        verify(t.expose(), &keys, now, "someone-else"),
        Err(CredentialError::WrongIssuer)
    );
    let mut c2 = c.clone();
    c2.aud = vec!["kubernetes".into()];
    assert_eq!(
        verify(sign(&c2, &key).expose(), &keys, now, ISSUER),
        Err(CredentialError::WrongAudience)
    );
}

#[test]
fn audience_may_be_a_single_string() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let mut c = serde_json::to_value(claims(now, TokenUse::Access)).expect("json");
    c["aud"] = serde_json::json!("hawser");
    let t = craft(
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()}),
        c,
        Some(&key),
    );
    assert_eq!(
        verify(&t, &keys, now, ISSUER).map(|c| c.aud),
        Ok(vec!["hawser".to_string()])
    );
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let now = SystemTime::now();
    let (key, keys) = key();
    let token = sign(&claims(now, TokenUse::Access), &key);
    assert_eq!(format!("{token:?}"), "SecretToken(<redacted>)");
    assert!(!format!("{key:?}").contains("pair"));
    let err = verify(
        token.expose(),
        &keys,
        now + Duration::from_secs(7200),
        ISSUER,
    )
    .expect_err("expired");
    assert!(!format!("{err} {err:?}").contains(token.expose()));
}
