//! `hawser cluster rotate-cert/retire-cert`: replacing an agent certificate
//! without downtime.
//!
//! Rotation is two steps so that no agent is ever locked out: `rotate-cert`
//! issues a new certificate and admits it *alongside* the old one, and the
//! operator ships it to the agents (their Secret); the agents notice the new
//! files, dial new tunnels with them and drain the old tunnels. Once every
//! replica runs on the new certificate, `retire-cert` stops admitting the old
//! one, and the hub cuts whatever tunnel still uses it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::bundle::{
    write_then_save, yaml_block, yaml_str, BundleError, AGENT_CRT, AGENT_KEY, CA_CRT,
};
use crate::files::create_private_dir;
use crate::pki::{Fingerprint, HubCa, Validity};
use crate::registry::{ClusterRecord, Registry};

/// The Secret patch `rotate-cert` writes next to the certificate.
pub const SECRET_PATCH: &str = "secret-patch.yaml";

/// Everything `hawser cluster rotate-cert` needs.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    /// The hub's state directory (CA and registry).
    pub state_dir: PathBuf,
    /// The registered cluster.
    pub name: String,
    /// Where the new certificate, key, CA and Secret patch are written (created 0700).
    pub out_dir: PathBuf,
    /// Lifetime of the new certificate.
    pub validity_days: u32,
}

/// What `rotate_cert` did.
#[derive(Debug)]
pub struct RotateOutcome {
    /// The new certificate.
    pub fingerprint: Fingerprint,
    /// The certificates that were admitted before and still are.
    pub previous: Vec<Fingerprint>,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Issues a new agent certificate for a registered cluster, writes it with its
/// key (0600), the hub CA and a Secret patch into `out_dir`, then admits it next
/// to the existing certificates. Files already present are never overwritten
/// (they may hold the key in service), and the registry is saved last, so a
/// failure admits no certificate nobody holds.
pub fn rotate_cert(req: &RotateRequest) -> Result<RotateOutcome, BundleError> {
    if req.validity_days == 0 {
        return Err(BundleError::InvalidRequest {
            field: "validity",
            reason: "must be at least one day".into(),
        });
    }
    let _lock = Registry::lock(&req.state_dir)?;
    let mut registry = Registry::load(&req.state_dir)?;
    let previous = match registry.get(&req.name) {
        Some(rec) => rec.certs.clone(),
        None => {
            return Err(crate::registry::RegistryError::Unknown {
                name: req.name.clone(),
            }
            .into())
        }
    };
    // The CA exists once a cluster is registered; never create one here.
    let ca = HubCa::load(&req.state_dir)?;
    let names = [AGENT_CRT, AGENT_KEY, CA_CRT, SECRET_PATCH];
    let paths: Vec<PathBuf> = names.iter().map(|n| req.out_dir.join(n)).collect();
    for path in &paths {
        let exists = path.try_exists().map_err(|source| BundleError::Write {
            path: path.clone(),
            source,
        })?;
        if exists {
            return Err(BundleError::Exists { path: path.clone() });
        }
    }
    let issued = ca.issue_agent(&req.name, Validity::days_from_now(req.validity_days))?;
    registry.add_cert(&req.name, issued.fingerprint)?;
    create_private_dir(&req.out_dir).map_err(|source| BundleError::Write {
        path: req.out_dir.clone(),
        source,
    })?;
    let key = issued.key_pem.expose();
    let contents = [
        (issued.cert_pem.clone(), 0o644),
        (key.to_string(), 0o600),
        (ca.cert_pem().to_string(), 0o644),
        // The patch carries the key, so it is as secret as the key.
        (secret_patch(&issued.cert_pem, key), 0o600),
    ];
    let written = write_then_save(&paths, &contents, &registry, &req.state_dir)?;
    tracing::info!(cluster = %req.name, fingerprint = %issued.fingerprint, "issued a rotated agent certificate; old and new are both admitted");
    Ok(RotateOutcome {
        fingerprint: issued.fingerprint,
        previous,
        files: written,
    })
}

/// Stops admitting one certificate of a cluster; live tunnels authenticated with
/// it are cut by the hub within its registry poll interval. Refuses the last
/// certificate of a cluster.
pub fn retire_cert(
    state_dir: &Path,
    name: &str,
    fingerprint: &Fingerprint,
) -> Result<ClusterRecord, BundleError> {
    let _lock = Registry::lock(state_dir)?;
    let mut registry = Registry::load(state_dir)?;
    let record = registry.retire_cert(name, fingerprint)?;
    registry.save(state_dir)?;
    tracing::info!(cluster = %name, %fingerprint, "retired agent certificate");
    Ok(record)
}

/// A merge patch for the agent's Secret replacing only the certificate and key
/// (`kubectl patch secret hawser-agent --type merge --patch-file ...`): the
/// kubelet then swaps the mounted files and the agent rotates without a restart.
fn secret_patch(cert_pem: &str, key_pem: &str) -> String {
    let mut out = String::from(
        "# Agent certificate rotation (generated by `hawser cluster rotate-cert`).\n\
         # Contains the agent's private key: keep this file secret.\n\
         stringData:\n",
    );
    for (name, body) in [(AGENT_CRT, cert_pem), (AGENT_KEY, key_pem)] {
        let _ = write!(out, "  {}: {}", yaml_str(name), yaml_block(body, 4));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{register_cluster, RegisterRequest, DEFAULT_NAMESPACE};
    use crate::registry::RegistryError;

    fn register(dir: &Path) -> Fingerprint {
        let req = RegisterRequest {
            state_dir: dir.join("state"),
            name: "eu1".into(),
            region: None,
            zone: None,
            hub_address: "hub.example.com:8443".into(),
            hub_server_name: "hub.example.com".into(),
            out_dir: dir.join("bundle"),
            image: "hawser:1".into(),
            validity_days: 30,
            namespace: DEFAULT_NAMESPACE.into(),
            user_extra_keys: Vec::new(),
            issuer: "hawser-hub".into(),
        };
        register_cluster(&req).unwrap().record.certs[0]
    }

    fn rotate_req(dir: &Path, out: &str) -> RotateRequest {
        RotateRequest {
            state_dir: dir.join("state"),
            name: "eu1".into(),
            out_dir: dir.join(out),
            validity_days: 30,
        }
    }

    #[test]
    fn rotate_admits_both_then_retire_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = register(dir.path());
        let req = rotate_req(dir.path(), "rotated");
        let outcome = rotate_cert(&req).unwrap();
        assert_eq!(outcome.previous, [old]);
        let read = |n: &str| std::fs::read_to_string(req.out_dir.join(n)).unwrap();
        let der = crate::pki::first_cert_der_from_pem(&read(AGENT_CRT)).unwrap();
        assert_eq!(crate::pki::fingerprint_of_der(&der), outcome.fingerprint);
        assert_eq!(crate::pki::cluster_of_cert(&der).unwrap(), "eu1");
        // The key matches the certificate: rustls checks the pair.
        crate::tls::agent_tunnel_client(&read(CA_CRT), &read(AGENT_CRT), &read(AGENT_KEY)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |n: &str| {
                std::fs::metadata(req.out_dir.join(n))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(AGENT_KEY), 0o600);
            assert_eq!(mode(SECRET_PATCH), 0o600);
        }
        let patch: serde_yaml::Value = serde_yaml::from_str(&read(SECRET_PATCH)).unwrap();
        assert_eq!(
            patch["stringData"]["agent.crt"].as_str(),
            Some(read(AGENT_CRT).as_str())
        );
        assert_eq!(
            patch["stringData"]["agent.key"].as_str(),
            Some(read(AGENT_KEY).as_str())
        );
        let state = dir.path().join("state");
        let reg = Registry::load(&state).unwrap();
        assert_eq!(reg.get("eu1").unwrap().certs, [old, outcome.fingerprint]);

        // The same directory again is refused: it holds a key in service.
        assert!(matches!(rotate_cert(&req), Err(BundleError::Exists { .. })));
        let rec = retire_cert(&state, "eu1", &old).unwrap();
        assert_eq!(rec.certs, [outcome.fingerprint]);
        let reg = Registry::load(&state).unwrap();
        assert!(!reg.is_admitted("eu1", &old));
        let err = retire_cert(&state, "eu1", &outcome.fingerprint).unwrap_err();
        assert!(
            matches!(err, BundleError::Registry(RegistryError::LastCert { .. })),
            "{err}"
        );
    }

    #[test]
    fn rotating_an_unknown_cluster_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        register(dir.path());
        let mut req = rotate_req(dir.path(), "nope");
        req.name = "us2".into();
        let err = rotate_cert(&req).unwrap_err();
        assert!(
            matches!(err, BundleError::Registry(RegistryError::Unknown { .. })),
            "{err}"
        );
        let mut req = rotate_req(dir.path(), "zero");
        req.validity_days = 0;
        assert!(rotate_cert(&req).is_err());
        assert!(!dir.path().join("nope").exists() && !dir.path().join("zero").exists());
        assert_eq!(
            Registry::load(&dir.path().join("state"))
                .unwrap()
                .get("eu1")
                .unwrap()
                .certs
                .len(),
            1
        );
    }
}
