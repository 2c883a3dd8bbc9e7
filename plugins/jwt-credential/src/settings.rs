//! The stage's `config` table, validated at `init`: a bad config refuses the chain
//! (at start the process does not start, on reload the old chain keeps serving).

use std::collections::{BTreeMap, BTreeSet};
use std::time::UNIX_EPOCH;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::jws::is_valid_kid;
use crate::revocations::{FileSettings, IfMissing, MAX_CHECK_INTERVAL};

/// How often the revocation file is looked at, unless configured.
pub const DEFAULT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What `init` accepts. See the crate docs for the TOML form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    issuer: String,
    keys: BTreeMap<String, Value>,
    #[serde(default)]
    revoked: Vec<Value>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    revocations_file: Option<String>,
    #[serde(default)]
    revocations_check_interval: Option<String>,
    #[serde(default)]
    revocations_if_missing: Option<String>,
}

/// A trusted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The Ed25519 public key.
    pub public: [u8; 32],
    /// For a retiring key: the Unix second after which it verifies nothing.
    pub retire_after: Option<u64>,
}

impl TrustedKey {
    /// Whether the key verifies at `now` (seconds, nanoseconds): always, or up to and
    /// including `retire_after` (as the host's verifier: `now <= until`).
    pub fn verifies_at(&self, seconds: u64, nanoseconds: u32) -> bool {
        match self.retire_after {
            None => true,
            Some(until) => seconds < until || (seconds == until && nanoseconds == 0),
        }
    }
}

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Expected `iss`.
    pub issuer: String,
    /// Trusted keys by kid.
    pub keys: BTreeMap<String, TrustedKey>,
    /// Revoked credential ids (lower-case UUIDs).
    pub revoked: BTreeSet<String>,
    /// The cluster every accepted token must allow (the agent's own), if set.
    pub cluster: Option<String>,
    /// The header carrying the credential, lower-case.
    pub header: String,
    /// A revocation file to follow at run time, if configured.
    pub revocations_file: Option<FileSettings>,
}

/// The default credential header.
pub const DEFAULT_HEADER: &str = "authorization";

impl Settings {
    /// Parses and validates the config JSON.
    pub fn from_json(json: &str) -> Result<Settings, String> {
        let raw: Raw =
            serde_json::from_str(json).map_err(|e| format!("invalid plugin config: {e}"))?;
        if raw.issuer.is_empty() {
            return Err("issuer: must not be empty".into());
        }
        if raw.keys.is_empty() {
            // An empty set would refuse every user; say so at load, not per request.
            return Err("keys: name at least one trusted key (kid = base64 public key)".into());
        }
        let mut keys = BTreeMap::new();
        for (kid, value) in raw.keys {
            let key = trusted_key(&kid, value).map_err(|e| format!("keys.{kid}: {e}"))?;
            keys.insert(kid, key);
        }
        let mut revoked = BTreeSet::new();
        for (i, value) in raw.revoked.into_iter().enumerate() {
            revoked.insert(revoked_id(value).map_err(|e| format!("revoked[{i}]: {e}"))?);
        }
        let cluster = match raw.cluster {
            Some(c) if !c.is_empty() => {
                if !is_cluster_name(&c) {
                    return Err(format!(
                        "cluster: {c:?} is not a cluster name (a DNS-1123 label: a-z, 0-9, '-')"
                    ));
                }
                Some(c)
            }
            _ => None,
        };
        let header = raw
            .header
            .unwrap_or_else(|| DEFAULT_HEADER.into())
            .to_ascii_lowercase();
        if !is_header_name(&header) {
            return Err(format!("header: {header:?} is not an HTTP header name"));
        }
        let revocations_file = file_settings(
            raw.revocations_file,
            raw.revocations_check_interval,
            raw.revocations_if_missing,
        )?;
        Ok(Settings {
            issuer: raw.issuer,
            keys,
            revoked,
            cluster,
            header,
            revocations_file,
        })
    }
}

/// `revocations_file`, `revocations_check_interval` and `revocations_if_missing`; the
/// latter two only with the first.
fn file_settings(
    path: Option<String>,
    interval: Option<String>,
    if_missing: Option<String>,
) -> Result<Option<FileSettings>, String> {
    let Some(path) = path else {
        if interval.is_some() || if_missing.is_some() {
            return Err(
                "revocations_check_interval and revocations_if_missing need revocations_file"
                    .into(),
            );
        }
        return Ok(None);
    };
    // The guest sees only granted directories, at absolute guest paths.
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "revocations_file: {path:?} must be an absolute file path inside a directory granted in [stage.grants] read_dirs"
        ));
    }
    let check_interval = match interval {
        None => DEFAULT_CHECK_INTERVAL,
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("revocations_check_interval: {text:?}: {e}"))?,
    };
    if check_interval > MAX_CHECK_INTERVAL {
        return Err(format!(
            "revocations_check_interval: at most {}",
            humantime::format_duration(MAX_CHECK_INTERVAL)
        ));
    }
    let if_missing = match if_missing.as_deref() {
        None | Some("refuse-all") => IfMissing::RefuseAll,
        Some("none-revoked") => IfMissing::NoneRevoked,
        Some(other) => {
            return Err(format!(
                "revocations_if_missing: {other:?}; expected \"refuse-all\" or \"none-revoked\""
            ))
        }
    };
    Ok(Some(FileSettings {
        path,
        check_interval,
        if_missing,
    }))
}

/// `kid = "<base64>"` or `kid = { public_key = "<base64>", retire_after = "<RFC 3339>" }`.
fn trusted_key(kid: &str, value: Value) -> Result<TrustedKey, String> {
    let (text, retire_after) = match value {
        Value::String(s) => (s, None),
        Value::Object(mut m) => {
            let public = match m.remove("public_key") {
                Some(Value::String(s)) => s,
                Some(_) => return Err("public_key must be a string".into()),
                None => return Err("public_key is missing".into()),
            };
            let retire_after = match m.remove("retire_after") {
                None => None,
                Some(Value::String(s)) => Some(parse_time(&s)?),
                Some(_) => return Err("retire_after must be an RFC 3339 string".into()),
            };
            if let Some(k) = m.keys().next() {
                return Err(format!(
                    "unknown field {k:?}; expected public_key, retire_after"
                ));
            }
            (public, retire_after)
        }
        _ => {
            return Err(
                "expected a base64 public key or a table { public_key, retire_after }".into(),
            )
        }
    };
    let public = decode_key(&text)?;
    if !is_valid_kid(kid) || kid_for(&public) != kid {
        return Err(format!(
            "kid does not match the public key (its kid is {:?}); copy both from the trust bundle",
            kid_for(&public)
        ));
    }
    Ok(TrustedKey {
        public,
        retire_after,
    })
}

/// A public key in base64 (standard, as in the trust bundle; URL-safe and unpadded
/// forms are accepted too): 32 bytes.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or("public key is not base64")?;
    bytes
        .try_into()
        .map_err(|_| "public key is not 32 bytes (an Ed25519 key)".to_string())
}

/// The key id the issuer derives from a public key: 16 hex digits of its SHA-256.
pub fn kid_for(public: &[u8]) -> String {
    Sha256::digest(public)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_time(text: &str) -> Result<u64, String> {
    humantime::parse_rfc3339(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 UTC time"))
}

/// `"<jti>"`, or a `revoked.toml` entry `{ id, revoked_at, expires_at }`.
fn revoked_id(value: Value) -> Result<String, String> {
    let id = match value {
        Value::String(s) => s,
        Value::Object(mut m) => {
            let id = match m.remove("id") {
                Some(Value::String(s)) => s,
                _ => return Err("an entry needs id = \"<credential id>\"".into()),
            };
            if let Some(k) = m.keys().find(|k| *k != "revoked_at" && *k != "expires_at") {
                return Err(format!(
                    "unknown field {k:?}; expected id, revoked_at, expires_at"
                ));
            }
            id
        }
        _ => return Err("expected a credential id (string)".into()),
    };
    canonical_uuid(&id).ok_or_else(|| {
        format!("{id:?} is not a credential id (a UUID, as printed by `hawser credential issue`)")
    })
}

/// A hyphenated UUID, lower-cased; `None` for anything else.
pub fn canonical_uuid(id: &str) -> Option<String> {
    let id = id.trim();
    let ok = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| id.to_ascii_lowercase())
}

/// A DNS-1123 label, as registered cluster names are.
pub fn is_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A lower-case HTTP header name (RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Ed25519 public key of seed [1; 32] and its kid.
    fn key() -> (String, String) {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pair = Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();
        let public = pair.public_key().as_ref();
        (kid_for(public), STANDARD.encode(public))
    }

    fn cfg(extra: &str) -> Result<Settings, String> {
        let (kid, public) = key();
        Settings::from_json(&format!(
            r#"{{"issuer":"hawser-hub","keys":{{"{kid}":"{public}"}}{extra}}}"#
        ))
    }

    #[test]
    fn minimal_config_has_defaults() {
        let s = cfg("").unwrap();
        assert_eq!(s.issuer, "hawser-hub");
        assert_eq!(s.keys.len(), 1);
        assert!(s.revoked.is_empty());
        assert_eq!(s.cluster, None);
        assert_eq!(s.header, "authorization");
        let s = cfg(r#","cluster":"","header":"X-Hawser-Token""#).unwrap();
        assert_eq!((s.cluster, s.header.as_str()), (None, "x-hawser-token"));
    }

    #[test]
    fn the_documented_example_config_loads() {
        // The `[stage.config]` of the crate docs, as the host hands it over (JSON).
        let s = Settings::from_json(
            r#"{"issuer":"hawser-hub","cluster":"eu1","header":"authorization",
                "revoked":["7b0e6d1c-4c1a-4d3e-9f00-0123456789ab"],
                "keys":{"cc988574feaf4806":"lFbyq0MINCJBW7e3ZS4AVz00y/IpgsiZEm1ufnh+h44=",
                        "195ede34541b4d6f":{"public_key":"Nbsp2CsAEFukEAuWnbx779HdYN+I2ZAA2smHO6zHTaI=",
                                            "retire_after":"2025-03-01T00:00:00Z"}}}"#,
        )
        .unwrap();
        assert_eq!(s.keys.len(), 2);
        assert_eq!(s.cluster.as_deref(), Some("eu1"));
    }

    #[test]
    fn kid_is_the_truncated_sha256_of_the_key() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        assert_eq!(kid_for(&[0; 32]), "66687aadf862bd77");
    }

    #[test]
    fn keys_in_both_forms_and_retire_after() {
        let (kid, public) = key();
        let s = Settings::from_json(&format!(
            r#"{{"issuer":"i","keys":{{"{kid}":{{"public_key":"{public}","retire_after":"2023-11-14T22:13:20Z"}}}}}}"#
        ))
        .unwrap();
        let k = &s.keys[&kid];
        assert_eq!(k.retire_after, Some(1_700_000_000));
        assert!(k.verifies_at(1_699_999_999, 999_999_999));
        assert!(k.verifies_at(1_700_000_000, 0));
        assert!(!k.verifies_at(1_700_000_000, 1));
        assert!(!k.verifies_at(1_700_000_001, 0));
        // Unpadded / URL-safe encodings of the same key are accepted.
        let unpadded = public.trim_end_matches('=');
        assert!(Settings::from_json(&format!(
            r#"{{"issuer":"i","keys":{{"{kid}":"{unpadded}"}}}}"#
        ))
        .is_ok());
    }

    #[test]
    fn revoked_ids_are_canonical_in_both_forms() {
        let s = cfg(
            r#","revoked":["7B0E6D1C-4C1A-4D3E-9F00-0123456789AB",
                {"id":"11111111-2222-3333-4444-555555555555","revoked_at":"2025-01-31T12:00:00Z","expires_at":"2025-03-02T12:00:00Z"}]"#,
        )
        .unwrap();
        assert!(s.revoked.contains("7b0e6d1c-4c1a-4d3e-9f00-0123456789ab"));
        assert!(s.revoked.contains("11111111-2222-3333-4444-555555555555"));
        assert_eq!(canonical_uuid("nope"), None);
    }

    #[test]
    fn bad_configs_are_refused_with_the_key_named() {
        let (kid, public) = key();
        let other_kid = kid_for(&[9; 32]);
        let cases = [
            (r#"{"keys":{}}"#.to_string(), "issuer"),
            (r#"{"issuer":"","keys":{}}"#.to_string(), "issuer"),
            (r#"{"issuer":"i","keys":{}}"#.to_string(), "keys"),
            (
                format!(r#"{{"issuer":"i","keys":{{"{other_kid}":"{public}"}}}}"#),
                "kid does not match",
            ),
            (
                format!(r#"{{"issuer":"i","keys":{{"{kid}":"AAAA"}}}}"#),
                "not 32 bytes",
            ),
            (
                format!(r#"{{"issuer":"i","keys":{{"{kid}":"***"}}}}"#),
                "not base64",
            ),
            (
                format!(
                    r#"{{"issuer":"i","keys":{{"{kid}":{{"public_key":"{public}","retire_after":"soon"}}}}}}"#
                ),
                "RFC 3339",
            ),
            (
                format!(
                    r#"{{"issuer":"i","keys":{{"{kid}":{{"public_key":"{public}","state":"x"}}}}}}"#
                ),
                "unknown field",
            ),
            (
                format!(r#"{{"issuer":"i","keys":{{"{kid}":"{public}"}},"revoked":["x"]}}"#),
                "revoked[0]",
            ),
            (
                format!(r#"{{"issuer":"i","keys":{{"{kid}":"{public}"}},"cluster":"EU1"}}"#),
                "cluster",
            ),
            (
                format!(r#"{{"issuer":"i","keys":{{"{kid}":"{public}"}},"header":"bad header"}}"#),
                "header",
            ),
            (
                format!(r#"{{"issuer":"i","keys":{{"{kid}":"{public}"}},"issuers":"typo"}}"#),
                "unknown field",
            ),
        ];
        for (json, want) in cases {
            let err = Settings::from_json(&json).expect_err(&json);
            assert!(err.contains(want), "{json}: {err:?} lacks {want:?}");
        }
    }
}
