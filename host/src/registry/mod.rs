//! The hub's whitelist of registered clusters, kept in `state_dir/clusters.toml`.
//!
//! The tunnel listener admits an agent only if the fingerprint of the client
//! certificate it presented is listed under the cluster its certificate names.
//! Several fingerprints per cluster let an operator rotate agent certificates
//! without downtime.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{create_private_dir, write_atomic, FileLock};
use crate::pki::Fingerprint;

/// File name of the registry inside the state directory.
pub const CLUSTERS_FILE: &str = "clusters.toml";

const HEADER: &str = "\
# Clusters registered with this Hawser hub, and the agent certificates it admits.
# Managed by `hawser cluster register/list/remove/rotate-cert/retire-cert`; the hub re-reads this file.
";

/// Why a registry operation failed. Messages name the file (when there is one) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// The registry file is not valid TOML for this schema.
    #[error("{path}: malformed cluster registry: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// The registry file parsed but its content is inconsistent.
    #[error("{path}: invalid cluster registry: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// The registry could not be serialized.
    #[error("{path}: cannot serialize the cluster registry: {source}")]
    Serialize {
        path: PathBuf,
        source: toml::ser::Error,
    },
    /// The registry file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// A cluster with this name is already registered.
    #[error("cluster {name:?} is already registered")]
    Exists { name: String },
    /// No cluster with this name is registered.
    #[error("cluster {name:?} is not registered")]
    Unknown { name: String },
    /// The cluster does not admit this certificate.
    #[error("cluster {name:?} has no certificate {fingerprint}")]
    UnknownCert {
        name: String,
        fingerprint: Fingerprint,
    },
    /// Retiring the only admitted certificate would lock every agent out.
    #[error("{fingerprint} is the only certificate of cluster {name:?}; rotate first (`hawser cluster rotate-cert`) or remove the cluster")]
    LastCert {
        name: String,
        fingerprint: Fingerprint,
    },
    /// The name is not a DNS-1123 label.
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
}

/// One registered cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRecord {
    /// The cluster name (a DNS-1123 label); agents carry it in their certificate.
    pub name: String,
    /// Locality: region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Locality: zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Fingerprints of the admitted agent certificates; several allowed for rotation.
    pub certs: Vec<Fingerprint>,
    /// When the cluster was registered, RFC 3339 (UTC).
    pub registered_at: String,
}

/// The on-disk shape: `[[cluster]]` tables.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClustersFile {
    #[serde(default)]
    cluster: Vec<ClusterRecord>,
}

/// The set of registered clusters, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    clusters: BTreeMap<String, ClusterRecord>,
}

/// The registry's write lock, held from [`Registry::lock`] until dropped.
#[derive(Debug)]
pub struct RegistryLock {
    _held: FileLock,
}

// === impl Registry ===

impl Registry {
    /// Takes the lock for a load-modify-save of `state_dir/clusters.toml`. Commands
    /// run at the same time (`register` while `remove` or `retire-cert` runs) would
    /// otherwise each save their own copy, and one would silently undo the other,
    /// re-admitting a removed cluster's certificate. Hold it from `load` to `save`.
    pub fn lock(state_dir: &Path) -> Result<RegistryLock, RegistryError> {
        create_private_dir(state_dir).map_err(|source| RegistryError::Write {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(CLUSTERS_FILE);
        FileLock::acquire(&path)
            .map(|held| RegistryLock { _held: held })
            .map_err(|source| RegistryError::Write { path, source })
    }

    /// Reads `state_dir/clusters.toml`. A missing file is an empty registry; a
    /// malformed one is an error naming the file and the TOML error.
    pub fn load(state_dir: &Path) -> Result<Registry, RegistryError> {
        let path = state_dir.join(CLUSTERS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let file: ClustersFile = toml::from_str(&text).map_err(|source| RegistryError::Parse {
            path: path.clone(),
            source,
        })?;
        let mut clusters = BTreeMap::new();
        for rec in file.cluster {
            // A hand-edited file must not smuggle in names agents could not carry.
            if let Err(e) = validate_cluster_name(&rec.name) {
                return Err(RegistryError::Invalid {
                    path,
                    reason: e.to_string(),
                });
            }
            if let Some(dup) = clusters.insert(rec.name.clone(), rec) {
                let reason = format!("cluster {:?} is listed twice", dup.name);
                return Err(RegistryError::Invalid { path, reason });
            }
        }
        Ok(Registry { clusters })
    }

    /// Writes `state_dir/clusters.toml` atomically (temporary file in the same
    /// directory, fsync, rename), creating `state_dir` (0700) if needed.
    pub fn save(&self, state_dir: &Path) -> Result<(), RegistryError> {
        let path = state_dir.join(CLUSTERS_FILE);
        let file = ClustersFile {
            cluster: self.clusters.values().cloned().collect(),
        };
        let body = toml::to_string(&file).map_err(|source| RegistryError::Serialize {
            path: path.clone(),
            source,
        })?;
        create_private_dir(state_dir).map_err(|source| RegistryError::Write {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let text = format!("{HEADER}\n{body}");
        write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|source| RegistryError::Write { path, source })
    }

    /// The record of one cluster.
    pub fn get(&self, name: &str) -> Option<&ClusterRecord> {
        self.clusters.get(name)
    }

    /// All records, ordered by name.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterRecord> {
        self.clusters.values()
    }

    /// Whether `fp` is an admitted certificate of `cluster`.
    pub fn is_admitted(&self, cluster: &str, fp: &Fingerprint) -> bool {
        self.clusters
            .get(cluster)
            .is_some_and(|rec| rec.certs.contains(fp))
    }

    /// Adds a cluster; an error if the name is invalid or already registered.
    pub fn insert(&mut self, rec: ClusterRecord) -> Result<(), RegistryError> {
        validate_cluster_name(&rec.name)?;
        if self.clusters.contains_key(&rec.name) {
            return Err(RegistryError::Exists { name: rec.name });
        }
        self.clusters.insert(rec.name.clone(), rec);
        Ok(())
    }

    /// The record of a registered cluster, to change.
    fn record_mut(&mut self, cluster: &str) -> Result<&mut ClusterRecord, RegistryError> {
        self.clusters
            .get_mut(cluster)
            .ok_or_else(|| RegistryError::Unknown {
                name: cluster.to_string(),
            })
    }

    /// Admits one more certificate for a registered cluster (rotation). Adding
    /// a fingerprint that is already admitted is a no-op.
    pub fn add_cert(&mut self, cluster: &str, fp: Fingerprint) -> Result<(), RegistryError> {
        let rec = self.record_mut(cluster)?;
        if !rec.certs.contains(&fp) {
            rec.certs.push(fp);
        }
        Ok(())
    }

    /// Stops admitting one certificate of a cluster (the end of a rotation) and
    /// returns the updated record. The last certificate cannot be retired: that
    /// would lock out every agent, which is what [`Registry::remove`] is for.
    pub fn retire_cert(
        &mut self,
        cluster: &str,
        fp: &Fingerprint,
    ) -> Result<ClusterRecord, RegistryError> {
        let rec = self.record_mut(cluster)?;
        if !rec.certs.contains(fp) {
            return Err(RegistryError::UnknownCert {
                name: cluster.to_string(),
                fingerprint: *fp,
            });
        }
        if rec.certs.len() == 1 {
            return Err(RegistryError::LastCert {
                name: cluster.to_string(),
                fingerprint: *fp,
            });
        }
        rec.certs.retain(|c| c != fp);
        Ok(rec.clone())
    }

    /// Removes a cluster and returns its record; an error if it is unknown.
    pub fn remove(&mut self, name: &str) -> Result<ClusterRecord, RegistryError> {
        self.clusters
            .remove(name)
            .ok_or_else(|| RegistryError::Unknown {
                name: name.to_string(),
            })
    }
}

/// Checks a cluster name: a DNS-1123 label, 1-63 characters of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`. The name ends up in a certificate URI,
/// Kubernetes labels and file content, so nothing else is allowed.
pub fn validate_cluster_name(name: &str) -> Result<(), RegistryError> {
    match dns1123_label_problem(name) {
        None => Ok(()),
        Some(reason) => Err(RegistryError::InvalidName {
            name: name.to_string(),
            reason,
        }),
    }
}

/// Why `s` is not a DNS-1123 label, or `None` if it is one.
pub(crate) fn dns1123_label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        let mut reason = String::new();
        let _ = match c {
            'A'..='Z' => write!(reason, "contains upper-case {c:?}; use lower case"),
            '/' | '\\' => write!(reason, "contains a path separator {c:?}"),
            '.' => write!(reason, "contains '.'; a single DNS label is required"),
            '%' => write!(reason, "contains '%'; percent-encoding is not allowed"),
            _ => write!(reason, "contains {c:?}; only a-z, 0-9 and '-' are allowed"),
        };
        return Some(reason);
    }
    if s.len() > 63 {
        return Some(format!(
            "is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit".into());
    }
    None
}

#[cfg(test)]
mod tests;
