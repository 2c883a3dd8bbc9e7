//! The issuer's Ed25519 keys, in `state_dir/issuer/`.
//!
//! - `key-<kid>.pk8` (0600): the private key, PKCS#8 DER. Only the active and the
//!   next key have one; a rotated-out key only verifies, so its private half is
//!   deleted.
//! - `keys.toml`: every key's kid, public key (base64), `created_at` and state:
//!   `next` (prepared by `rotate-key --prepare`: verifies, signs after the next
//!   rotation), `active` (signs and verifies), `retiring` (verifies until
//!   `retire_after`) or `retired` (kept for the record, verifies nothing; also a
//!   next key withdrawn with `rotate-key --withdraw`).
//!
//! The trust bundle agents load ([`IssuerKeys::export_public`]) has the same format
//! without retired keys, so one loader ([`VerifyingKeys`] as [`FromFile`]) serves
//! both the hub (pointed at `keys.toml`) and the agent (pointed at its copy).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::manifest::{parse_records, render, verifying_set, BUNDLE_HEADER, MANIFEST_HEADER};
pub use super::manifest::{KeyRecord, KeyState};
use super::token::{SigningKey, VerifyingKeys};
use super::watch::{FromFile, Watched};
use crate::files::{create_private_dir, from_unix, read_optional, unix, write_atomic, FileLock};

/// Directory of the issuer keys inside the hub's state directory.
pub const ISSUER_DIR: &str = "issuer";
/// The key manifest inside [`ISSUER_DIR`].
pub const KEYS_FILE: &str = "keys.toml";

/// The issuer keys, reloaded by the hub when `keys.toml` changes.
pub type HubKeys = Watched<IssuerKeys>;
/// An agent's trust bundle, reloaded when its file changes.
pub type TrustBundle = Watched<VerifyingKeys>;

/// Why the issuer keys could not be loaded, created or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file could not be written (or a lock taken).
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The manifest or bundle is not valid TOML for this schema.
    #[error("{path}: malformed key file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// The manifest or bundle parsed but is inconsistent.
    #[error("{path}: invalid key file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// There are no issuer keys yet.
    #[error("{path}: does not exist (issuer keys are created by `hawser credential issue` or the hub's first start)")]
    Missing {
        /// The manifest.
        path: PathBuf,
    },
    /// The system random generator failed.
    #[error("cannot generate an Ed25519 key")]
    Generate,
}

/// The issuer's keys: the active signing key and every key that still verifies.
#[derive(Debug)]
pub struct IssuerKeys {
    dir: PathBuf,
    records: Vec<KeyRecord>,
    active: SigningKey,
    verifying: VerifyingKeys,
}

impl FromFile for IssuerKeys {
    type Error = KeyError;
    /// `path` is the manifest, `state_dir/issuer/keys.toml`.
    fn from_file(path: &Path) -> Result<IssuerKeys, KeyError> {
        IssuerKeys::load_dir(path.parent().unwrap_or_else(|| Path::new(".")))
    }
}

// === impl IssuerKeys ===

impl IssuerKeys {
    /// `state_dir/issuer/keys.toml`, the file the hub watches.
    pub fn manifest_path(state_dir: &Path) -> PathBuf {
        state_dir.join(ISSUER_DIR).join(KEYS_FILE)
    }

    /// Loads the keys, or creates the first one (directory 0700, key file 0600).
    pub fn load_or_create(state_dir: &Path) -> Result<IssuerKeys, KeyError> {
        let dir = state_dir.join(ISSUER_DIR);
        let manifest = dir.join(KEYS_FILE);
        if manifest.exists() {
            return IssuerKeys::load_dir(&dir);
        }
        create_private_dir(&dir).map_err(|source| KeyError::Write {
            path: dir.clone(),
            source,
        })?;
        let _lock = FileLock::acquire(&manifest).map_err(|source| KeyError::Write {
            path: manifest.clone(),
            source,
        })?;
        // Another process may have created them while this one waited for the lock.
        if manifest.exists() {
            return IssuerKeys::load_dir(&dir);
        }
        let mut records = Vec::new();
        let active = new_key(&dir, &mut records, KeyState::Active, SystemTime::now())?;
        save_manifest(&manifest, &records)?;
        Ok(IssuerKeys {
            dir,
            verifying: verifying_set(&records),
            records,
            active,
        })
    }

    /// Loads existing keys; [`KeyError::Missing`] if there are none.
    pub fn load(state_dir: &Path) -> Result<IssuerKeys, KeyError> {
        IssuerKeys::load_dir(&state_dir.join(ISSUER_DIR))
    }

    fn load_dir(dir: &Path) -> Result<IssuerKeys, KeyError> {
        let manifest = dir.join(KEYS_FILE);
        let text = read_optional(&manifest)
            .map_err(|source| KeyError::Read {
                path: manifest.clone(),
                source,
            })?
            .ok_or_else(|| KeyError::Missing {
                path: manifest.clone(),
            })?;
        let records = parse_records(&manifest, &text)?;
        let invalid = |reason: String| KeyError::Invalid {
            path: manifest.clone(),
            reason,
        };
        let mut active = records.iter().filter(|r| r.state == KeyState::Active);
        let (Some(record), None) = (active.next(), active.next()) else {
            return Err(invalid("exactly one key must be active".into()));
        };
        if records.iter().filter(|r| r.state == KeyState::Next).count() > 1 {
            return Err(invalid("at most one key may be next".into()));
        }
        let key = read_private_key(dir, &record.kid)?;
        Ok(IssuerKeys {
            dir: dir.to_path_buf(),
            verifying: verifying_set(&records),
            records,
            active: key,
        })
    }

    /// The key new credentials are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.active
    }

    /// Every key in the manifest.
    pub fn records(&self) -> &[KeyRecord] {
        &self.records
    }

    /// The public keys that verify (active, and retiring until `retire_after`).
    pub fn verifying_keys(&self) -> &VerifyingKeys {
        &self.verifying
    }

    /// The key prepared for the next rotation, if any.
    pub fn next_key(&self) -> Option<&KeyRecord> {
        self.records.iter().find(|r| r.state == KeyState::Next)
    }

    /// Prepares the key the next rotation makes active: it verifies from now on but
    /// signs nothing until [`IssuerKeys::rotate`]. Give agents their updated chain
    /// (`hawser cluster agent-chain --patch`) in between, and they accept credentials
    /// signed after the rotation at once. Returns the kid, and whether it was made now
    /// (false: one was already prepared, and is kept).
    pub fn prepare_next(&mut self) -> Result<(String, bool), KeyError> {
        self.prepare_next_at(SystemTime::now())
    }

    /// [`IssuerKeys::prepare_next`] at a given time (for tests).
    pub fn prepare_next_at(&mut self, now: SystemTime) -> Result<(String, bool), KeyError> {
        let (_lock, manifest, mut fresh) = self.lock_and_reload()?;
        let made = match fresh.next_key() {
            Some(next) => (next.kid.clone(), false),
            None => {
                let key = new_key(&self.dir, &mut fresh.records, KeyState::Next, now)?;
                save_manifest(&manifest, &fresh.records)?;
                fresh.verifying = verifying_set(&fresh.records);
                (key.kid().to_string(), true)
            }
        };
        *self = fresh;
        Ok(made)
    }

    /// Withdraws the prepared next key, if any: it is retired (it verifies nothing)
    /// without ever having signed, and its private half is deleted. Agents whose chain
    /// still lists it are unaffected, since no credential carries its kid. Returns
    /// the kid withdrawn.
    pub fn withdraw_next(&mut self) -> Result<Option<String>, KeyError> {
        let (_lock, manifest, mut fresh) = self.lock_and_reload()?;
        let Some(next) = fresh.records.iter_mut().find(|r| r.state == KeyState::Next) else {
            *self = fresh;
            return Ok(None);
        };
        next.state = KeyState::Retired;
        let kid = next.kid.clone();
        save_manifest(&manifest, &fresh.records)?;
        // Only after the manifest no longer names it as signing-to-be.
        let _ = std::fs::remove_file(self.dir.join(key_file(&kid)));
        fresh.verifying = verifying_set(&fresh.records);
        *self = fresh;
        Ok(Some(kid))
    }

    /// Makes a new active key: the prepared next key if there is one, else a new one.
    /// The old one verifies for `overlap` more, so credentials signed before and after
    /// both work in between. `overlap` zero (a leaked key) cuts the old credentials
    /// off at once. Returns the new kid.
    pub fn rotate(&mut self, overlap: Duration) -> Result<String, KeyError> {
        self.rotate_at(overlap, SystemTime::now())
    }

    /// [`IssuerKeys::rotate`] at a given time (for tests).
    pub fn rotate_at(&mut self, overlap: Duration, now: SystemTime) -> Result<String, KeyError> {
        let (_lock, manifest, mut fresh) = self.lock_and_reload()?;
        let old_kid = fresh.active.kid().to_string();
        for r in &mut fresh.records {
            match r.state {
                KeyState::Active => {
                    r.state = KeyState::Retiring;
                    r.retire_after = Some(whole_seconds(now + overlap));
                }
                KeyState::Retiring if r.retire_after.is_none_or(|t| t <= now) => {
                    r.state = KeyState::Retired
                }
                _ => {}
            }
        }
        fresh.active = match fresh.records.iter_mut().find(|r| r.state == KeyState::Next) {
            Some(next) => {
                let key = read_private_key(&self.dir, &next.kid)?;
                next.state = KeyState::Active;
                key
            }
            None => new_key(&self.dir, &mut fresh.records, KeyState::Active, now)?,
        };
        save_manifest(&manifest, &fresh.records)?;
        // The manifest no longer needs the old private key; a key that only
        // verifies is safer without its private half on disk.
        let _ = std::fs::remove_file(self.dir.join(key_file(&old_kid)));
        fresh.verifying = verifying_set(&fresh.records);
        *self = fresh;
        Ok(self.active.kid().to_string())
    }

    /// Locks the manifest and reads it again: a change starts from the file, not from
    /// this copy, since another process may have rotated or prepared a key.
    fn lock_and_reload(&self) -> Result<(FileLock, PathBuf, IssuerKeys), KeyError> {
        let manifest = self.dir.join(KEYS_FILE);
        let lock = FileLock::acquire(&manifest).map_err(|source| KeyError::Write {
            path: manifest.clone(),
            source,
        })?;
        let fresh = IssuerKeys::load_dir(&self.dir)?;
        Ok((lock, manifest, fresh))
    }

    /// Writes the trust bundle for agents (public keys only) to `path`.
    pub fn export_public(&self, path: &Path) -> Result<(), KeyError> {
        let live: Vec<KeyRecord> = self
            .records
            .iter()
            .filter(|r| r.state != KeyState::Retired)
            .cloned()
            .collect();
        write_atomic(path, render(BUNDLE_HEADER, &live).as_bytes(), 0o644).map_err(|source| {
            KeyError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// Times in the manifest have second precision; keep the in-memory copy equal to
/// what a reload would read.
fn whole_seconds(t: SystemTime) -> SystemTime {
    from_unix(unix(t))
}

fn key_file(kid: &str) -> String {
    format!("key-{kid}.pk8")
}

/// Reads the private half of key `kid` and checks it is that key.
fn read_private_key(dir: &Path, kid: &str) -> Result<SigningKey, KeyError> {
    let key_path = dir.join(key_file(kid));
    let der = std::fs::read(&key_path).map_err(|source| KeyError::Read {
        path: key_path.clone(),
        source,
    })?;
    let key = SigningKey::from_pkcs8(&der).map_err(|e| KeyError::Invalid {
        path: key_path.clone(),
        reason: format!("not a PKCS#8 Ed25519 key: {e}"),
    })?;
    if key.kid() != kid {
        return Err(KeyError::Invalid {
            path: key_path,
            reason: "does not match its public key in keys.toml".into(),
        });
    }
    Ok(key)
}

/// Generates a key, writes its private half, and appends it in `state`.
fn new_key(
    dir: &Path,
    records: &mut Vec<KeyRecord>,
    state: KeyState,
    now: SystemTime,
) -> Result<SigningKey, KeyError> {
    let (key, der) = SigningKey::generate().map_err(|_| KeyError::Generate)?;
    let path = dir.join(key_file(key.kid()));
    write_atomic(&path, &der, 0o600).map_err(|source| KeyError::Write { path, source })?;
    records.push(KeyRecord {
        kid: key.kid().to_string(),
        public_key: key.public_key(),
        created_at: whole_seconds(now),
        state,
        retire_after: None,
    });
    Ok(key)
}

fn save_manifest(path: &Path, records: &[KeyRecord]) -> Result<(), KeyError> {
    write_atomic(path, render(MANIFEST_HEADER, records).as_bytes(), 0o644).map_err(|source| {
        KeyError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
