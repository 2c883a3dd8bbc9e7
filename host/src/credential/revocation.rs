//! Revoked credentials, in `state_dir/revoked.toml`.
//!
//! A plain TOML list the hub re-reads while running (revoking needs no restart)
//! and that agents load from a synced copy:
//!
//! ```toml
//! [[revoked]]
//! id = "7b0e6d1c-..."                # the credential's jti
//! revoked_at = "2025-01-31T12:00:00Z"
//! expires_at = "2025-03-02T12:00:00Z" # after this the entry is pruned
//! ```
//!
//! An entry can be dropped once the credential has expired anyway. When `revoke`
//! is not told the expiry, it uses `revoked_at` + the longest TTL any credential
//! can have ([`MAX_REFRESH_TTL`]), which is never earlier than the real expiry.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::watch::{FromFile, Watched};
use super::{LEEWAY, MAX_REFRESH_TTL};
use crate::files::{parse_rfc3339, read_optional, rfc3339, write_atomic, FileLock};

/// File name of the revocation list inside the state directory.
pub const REVOKED_FILE: &str = "revoked.toml";

const HEADER: &str = "\
# Revoked Hawser credentials. Managed by `hawser credential revoke`; the hub
# re-reads this file, and agents load a synced copy. Entries are pruned after
# the credential's expiry.
";

/// The revocation list, reloaded when its file changes.
pub type Revocations = Watched<RevocationList>;

/// Why the revocation list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file could not be written (or its lock taken).
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not valid TOML for this schema, or holds a bad entry.
    #[error("{path}: invalid revocation list: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The id to revoke is not a credential id.
    #[error("{0:?} is not a credential id (a UUID, as printed by `hawser credential issue`)")]
    BadId(String),
}

/// One revoked credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The credential id (jti), canonical lower-case UUID.
    pub id: String,
    /// When it was revoked.
    pub revoked_at: SystemTime,
    /// When the credential expires; the entry may be pruned after it.
    pub expires_at: SystemTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    revoked: Vec<RawEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    revoked_at: String,
    expires_at: String,
}

/// The revoked credential ids, as a set for a cheap per-request check.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    entries: Vec<Revoked>,
    ids: HashSet<String>,
}

// === impl RevocationList ===

impl RevocationList {
    /// Loads `path`; a missing file is an empty list (nothing revoked yet).
    pub fn load(path: &Path) -> Result<RevocationList, RevocationError> {
        let text = read_optional(path).map_err(|source| RevocationError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let Some(text) = text else {
            return Ok(RevocationList::default());
        };
        let invalid = |reason: String| RevocationError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut list = RevocationList::default();
        for e in raw.revoked {
            let id =
                canonical_id(&e.id).map_err(|_| invalid(format!("{:?} is not a UUID", e.id)))?;
            let revoked_at = parse_rfc3339(&e.revoked_at).map_err(invalid)?;
            let expires_at = parse_rfc3339(&e.expires_at).map_err(invalid)?;
            list.insert(Revoked {
                id,
                revoked_at,
                expires_at,
            });
        }
        Ok(list)
    }

    /// Whether the credential `id` is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[Revoked] {
        &self.entries
    }

    fn insert(&mut self, entry: Revoked) -> bool {
        if !self.ids.insert(entry.id.clone()) {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// Drops entries whose credential has expired (plus the verification leeway).
    fn prune(&mut self, now: SystemTime) {
        self.entries.retain(|e| e.expires_at + LEEWAY >= now);
        self.ids = self.entries.iter().map(|e| e.id.clone()).collect();
    }

    /// Writes the list to `path` atomically (mode 0644: ids are not secret).
    pub fn save(&self, path: &Path) -> Result<(), RevocationError> {
        let raw = RawFile {
            revoked: self
                .entries
                .iter()
                .map(|e| RawEntry {
                    id: e.id.clone(),
                    revoked_at: rfc3339(e.revoked_at),
                    expires_at: rfc3339(e.expires_at),
                })
                .collect(),
        };
        // A list of string tables always serializes.
        let text = format!(
            "{HEADER}\n{}",
            toml::to_string(&raw).expect("revocation list serializes")
        );
        write_atomic(path, text.as_bytes(), 0o644).map_err(|source| RevocationError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl FromFile for RevocationList {
    type Error = RevocationError;
    fn from_file(path: &Path) -> Result<RevocationList, RevocationError> {
        RevocationList::load(path)
    }
}

/// `state_dir/revoked.toml`.
pub fn revocations_path(state_dir: &Path) -> PathBuf {
    state_dir.join(REVOKED_FILE)
}

fn canonical_id(id: &str) -> Result<String, uuid::Error> {
    Ok(uuid::Uuid::parse_str(id.trim())?.hyphenated().to_string())
}

/// Revokes credential `id` in `state_dir/revoked.toml`, pruning expired entries on
/// the way. `expires_at` is the credential's expiry if known (see the module docs
/// for the fallback). Returns `false` if it was already revoked. A running hub
/// picks the change up on its next poll.
pub fn revoke(
    state_dir: &Path,
    id: &str,
    expires_at: Option<SystemTime>,
) -> Result<bool, RevocationError> {
    revoke_at(
        &revocations_path(state_dir),
        id,
        expires_at,
        SystemTime::now(),
    )
}

/// [`revoke`] on any list file, at a given time.
pub fn revoke_at(
    path: &Path,
    id: &str,
    expires_at: Option<SystemTime>,
    now: SystemTime,
) -> Result<bool, RevocationError> {
    let id = canonical_id(id).map_err(|_| RevocationError::BadId(id.to_string()))?;
    let _lock = FileLock::acquire(path).map_err(|source| RevocationError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let mut list = RevocationList::load(path)?;
    list.prune(now);
    let expires_at = expires_at.unwrap_or(now + MAX_REFRESH_TTL);
    let added = list.insert(Revoked {
        id,
        revoked_at: now,
        expires_at,
    });
    list.save(path)?;
    Ok(added)
}

/// Copies the hub's revocation list to `dest` (for an agent), atomically. A hub
/// with no revocations yet exports an empty list, so the agent's file exists.
pub fn export(state_dir: &Path, dest: &Path) -> Result<(), RevocationError> {
    RevocationList::load(&revocations_path(state_dir))?.save(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ID: &str = "7b0e6d1c-4c1a-4d3e-9f00-0123456789ab";

    #[test]
    fn revoke_is_idempotent_canonical_and_prunes_expired_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(REVOKED_FILE);
        let now = SystemTime::now();
        assert!(RevocationList::load(&path)
            .expect("missing is empty")
            .entries()
            .is_empty());
        assert!(revoke_at(
            &path,
            &ID.to_uppercase(),
            Some(now + Duration::from_secs(600)),
            now
        )
        .expect("revoke"));
        assert!(!revoke_at(&path, ID, None, now).expect("again"));
        let list = RevocationList::load(&path).expect("load");
        assert!(list.is_revoked(ID));
        let other = uuid::Uuid::new_v4().to_string();
        let later = now + Duration::from_secs(3600);
        revoke_at(&path, &other, None, later).expect("revoke other");
        let list = RevocationList::load(&path).expect("load");
        assert!(!list.is_revoked(ID), "expired entry pruned");
        assert!(list.is_revoked(&other));
        assert!(matches!(
            revoke_at(&path, "not-a-uuid", None, now),
            Err(RevocationError::BadId(_))
        ));
    }

    #[test]
    fn a_watching_hub_sees_revocations_without_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let revocations = Revocations::open(revocations_path(dir.path())).expect("open");
        assert!(!revocations.get().is_revoked(ID));
        revoke(dir.path(), ID, None).expect("revoke");
        assert!(revocations.reload_if_changed().expect("reload"));
        assert!(revocations.get().is_revoked(ID));
        // A corrupt file keeps the revocations in force.
        std::fs::write(revocations_path(dir.path()), "revoked = 3").expect("write");
        assert!(revocations.reload_if_changed().is_err());
        assert!(revocations.get().is_revoked(ID));
    }

    #[test]
    fn export_writes_a_list_an_agent_can_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("agent-revoked.toml");
        export(dir.path(), &dest).expect("export empty");
        assert!(RevocationList::load(&dest)
            .expect("load")
            .entries()
            .is_empty());
        revoke(dir.path(), ID, None).expect("revoke");
        export(dir.path(), &dest).expect("export");
        assert!(RevocationList::load(&dest).expect("load").is_revoked(ID));
    }
}
