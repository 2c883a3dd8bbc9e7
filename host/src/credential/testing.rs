//! Fixtures for the credential unit tests.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::token::{Claims, SigningKey, TokenUse, VerifyingKeys};
use crate::files::unix;

pub(crate) const ISSUER: &str = "hawser-hub";

/// A fresh key and the set trusting it.
pub(crate) fn key() -> (SigningKey, VerifyingKeys) {
    let (key, _) = SigningKey::generate().expect("generate key");
    let mut keys = VerifyingKeys::new();
    keys.insert(key.public_key(), None);
    (key, keys)
}

/// Claims for alice, valid for an hour from `now`.
pub(crate) fn claims(now: SystemTime, token_use: TokenUse) -> Claims {
    let now = unix(now);
    Claims {
        iss: ISSUER.into(),
        sub: "alice".into(),
        aud: vec!["hawser".into()],
        exp: now + 3600,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        token_use,
        groups: vec!["dev".into()],
        extra: BTreeMap::from([("acme.com/project".into(), vec!["p1".into()])]),
        clusters: vec!["eu1".into()],
        uid: Some("u-1".into()),
        rid: None,
    }
}
