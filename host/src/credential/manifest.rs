//! The file format of `keys.toml` and of the agents' trust bundle: a list of
//! keys with their kid, public key, creation time and state.

use std::path::Path;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::KeyError;
use super::token::{is_valid_kid, kid_for, VerifyingKeys};
use super::watch::FromFile;
use crate::files::{parse_rfc3339, rfc3339};

pub(super) const MANIFEST_HEADER: &str = "\
# Hawser credential issuer keys. Managed by `hawser credential rotate-key`;
# the hub re-reads this file. Private keys are in key-<kid>.pk8 next to it.
";
pub(super) const BUNDLE_HEADER: &str = "\
# Hawser credential trust bundle: public keys only, from `hawser credential export-keys`.
# The agent verifies user credentials with these keys.
";

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published ahead of a rotation: verifies, signs nothing yet. The next
    /// `rotate-key` makes it active, so agents that were given it beforehand accept
    /// credentials signed after the rotation at once.
    Next,
    /// Signs new credentials and verifies.
    Active,
    /// Verifies until `retire_after`.
    Retiring,
    /// Verifies nothing.
    Retired,
}

/// One key in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id ([`kid_for`] of the public key).
    pub kid: String,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// When it was made.
    pub created_at: SystemTime,
    /// Its state.
    pub state: KeyState,
    /// For a retiring key, when it stops verifying.
    pub retire_after: Option<SystemTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    kid: String,
    public_key: String,
    created_at: String,
    state: KeyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_after: Option<String>,
}

pub(super) fn parse_records(path: &Path, text: &str) -> Result<Vec<KeyRecord>, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|source| KeyError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out: Vec<KeyRecord> = Vec::with_capacity(raw.keys.len());
    for k in raw.keys {
        let bytes = STANDARD
            .decode(k.public_key.trim())
            .map_err(|e| invalid(format!("key {:?}: public_key: {e}", k.kid)))?;
        let public_key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid(format!("key {:?}: public_key is not 32 bytes", k.kid)))?;
        if !is_valid_kid(&k.kid) || kid_for(&public_key) != k.kid {
            return Err(invalid(format!(
                "key {:?}: kid does not match its public key",
                k.kid
            )));
        }
        if out.iter().any(|r| r.kid == k.kid) {
            return Err(invalid(format!("key {:?} is listed twice", k.kid)));
        }
        let retire_after = k
            .retire_after
            .as_deref()
            .map(parse_rfc3339)
            .transpose()
            .map_err(invalid)?;
        if k.state == KeyState::Retiring && retire_after.is_none() {
            return Err(invalid(format!(
                "key {:?} is retiring but has no retire_after",
                k.kid
            )));
        }
        let created_at = parse_rfc3339(&k.created_at).map_err(invalid)?;
        out.push(KeyRecord {
            kid: k.kid,
            public_key,
            created_at,
            state: k.state,
            retire_after,
        });
    }
    Ok(out)
}

pub(super) fn render(header: &str, records: &[KeyRecord]) -> String {
    let raw = RawFile {
        keys: records
            .iter()
            .map(|r| RawKey {
                kid: r.kid.clone(),
                public_key: STANDARD.encode(r.public_key),
                created_at: rfc3339(r.created_at),
                state: r.state,
                retire_after: r.retire_after.map(rfc3339),
            })
            .collect(),
    };
    // A list of plain string tables always serializes.
    format!(
        "{header}\n{}",
        toml::to_string(&raw).expect("key manifest serializes")
    )
}

pub(super) fn verifying_set(records: &[KeyRecord]) -> VerifyingKeys {
    let mut keys = VerifyingKeys::new();
    for r in records {
        match r.state {
            KeyState::Next | KeyState::Active => keys.insert(r.public_key, None),
            KeyState::Retiring => keys.insert(r.public_key, r.retire_after),
            KeyState::Retired => {}
        }
    }
    keys
}

/// Loads a trust bundle (or a `keys.toml`): the keys that are not retired.
impl FromFile for VerifyingKeys {
    type Error = KeyError;
    fn from_file(path: &Path) -> Result<VerifyingKeys, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let keys = verifying_set(&parse_records(path, &text)?);
        if keys.is_empty() {
            // An empty set would refuse every user; say so at load, not per request.
            return Err(KeyError::Invalid {
                path: path.to_path_buf(),
                reason: "no key that verifies".into(),
            });
        }
        Ok(keys)
    }
}
