//! The agent's TLS identity towards the hub (pinned CA, certificate, key),
//! reloaded when its files change so a rotated certificate is used without a
//! restart.
//!
//! Kubernetes updates a Secret volume by writing a new directory and swapping a
//! symlink, so every file gets a new inode at once; plain files may be replaced
//! one at a time. Either way a pair that does not load (a half-written file, a
//! key that does not match, a certificate for another cluster or CA) is logged
//! and the current identity stays: the tunnels up keep serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::ClientConfig;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::HubLink;
use crate::files::{stamp, Stamp};
use crate::pki::{cluster_of_cert, fingerprint_of_der, first_cert_der_from_pem, Fingerprint};
use crate::tls::{self, TlsError};

/// Why the agent's TLS files do not make a usable identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or parsed, or rustls refused the pair.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The certificate could not be parsed.
    #[error("{path}: {source}")]
    Cert {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        source: crate::pki::PkiError,
    },
    /// The key belongs to another certificate.
    #[error("{key}: does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate was issued for another cluster.
    #[error("{path}: certificate is for cluster `{cert}` but the config says `{config}`")]
    WrongCluster {
        /// The certificate file.
        path: PathBuf,
        /// Cluster in the certificate.
        cert: String,
        /// Cluster in the config.
        config: String,
    },
    /// The certificate does not chain to the pinned hub CA, or is not valid now.
    #[error("{path}: not acceptable to the hub (pinned CA {ca}): {reason}")]
    Untrusted {
        /// The certificate file.
        path: PathBuf,
        /// The pinned CA file.
        ca: PathBuf,
        /// rustls's verdict.
        reason: String,
    },
}

/// A loaded identity: what new tunnels present to the hub.
#[derive(Debug)]
pub struct Identity {
    /// Increases by one per change; tunnels remember which one they were opened with.
    pub generation: u64,
    /// The agent certificate.
    pub fingerprint: Fingerprint,
    /// The TLS client configuration for dialling the hub.
    pub client: Arc<ClientConfig>,
    /// Digest of the three files' contents, to tell a real change from a touch.
    digest: [u8; 32],
    cert_der: Vec<u8>,
    ca_pem: String,
    cert_file: PathBuf,
    ca_file: PathBuf,
}

impl Identity {
    /// Reads and checks the pinned CA, certificate and key named in `hub`: the
    /// certificate must name `cluster` and match the key. Whether the hub will
    /// take it is [`Identity::check_trust`].
    pub fn load(hub: &HubLink, cluster: &str, generation: u64) -> Result<Identity, IdentityError> {
        let ca_pem = tls::read_pem(&hub.ca_file)?;
        let cert_pem = tls::read_pem(&hub.cert_file)?;
        let key_pem = tls::read_pem(&hub.key_file)?;
        let cert_err = |source| IdentityError::Cert {
            path: hub.cert_file.clone(),
            source,
        };
        let der = first_cert_der_from_pem(&cert_pem).map_err(cert_err)?;
        let cert_cluster = cluster_of_cert(&der).map_err(cert_err)?;
        if cert_cluster != cluster {
            return Err(IdentityError::WrongCluster {
                path: hub.cert_file.clone(),
                cert: cert_cluster,
                config: cluster.to_string(),
            });
        }
        let client =
            tls::agent_tunnel_client(&ca_pem, &cert_pem, &key_pem).map_err(|e| match e {
                TlsError::Rustls(rustls::Error::InconsistentKeys(_)) => {
                    IdentityError::KeyMismatch {
                        cert: hub.cert_file.clone(),
                        key: hub.key_file.clone(),
                    }
                }
                other => other.into(),
            })?;
        let mut digest = Sha256::new();
        for part in [&ca_pem, &cert_pem, &key_pem] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        Ok(Identity {
            generation,
            fingerprint: fingerprint_of_der(&der),
            client: Arc::new(client),
            digest: digest.finalize().into(),
            cert_der: der,
            ca_pem,
            cert_file: hub.cert_file.clone(),
            ca_file: hub.ca_file.clone(),
        })
    }

    /// The hub's own check, done here so a bad file is reported by name rather
    /// than as an opaque handshake failure: the certificate chains to the pinned
    /// CA and is valid now.
    pub fn check_trust(&self) -> Result<(), IdentityError> {
        check_chain(&self.ca_pem, &self.cert_der).map_err(|reason| IdentityError::Untrusted {
            path: self.cert_file.clone(),
            ca: self.ca_file.clone(),
            reason,
        })
    }
}

/// Chain to the pinned CA, valid now, usable for client authentication.
fn check_chain(ca_pem: &str, der: &[u8]) -> Result<(), String> {
    let roots = tls::roots_from_pem("pinned hub CA", ca_pem).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn stamps(hub: &HubLink) -> [Option<Stamp>; 3] {
    [
        stamp(&hub.ca_file),
        stamp(&hub.cert_file),
        stamp(&hub.key_file),
    ]
}

/// Polls the files every `every` and publishes a new [`Identity`] on `tx` when
/// they change to a valid, different set. Invalid sets are logged once per
/// change and retried on the next change; the published identity stays.
pub async fn watch_identity(
    hub: HubLink,
    cluster: String,
    every: Duration,
    tx: watch::Sender<Arc<Identity>>,
    shutdown: CancellationToken,
) {
    let mut seen = stamps(&hub);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = stamps(&hub);
        if now == seen {
            continue;
        }
        // Recorded whatever the outcome: a bad file is reported once, and the
        // next write (the key after the certificate, say) is a new change.
        seen = now;
        let current = tx.borrow().clone();
        let loaded = Identity::load(&hub, &cluster, current.generation + 1)
            .and_then(|fresh| fresh.check_trust().map(|()| fresh));
        match loaded {
            Ok(fresh) if fresh.digest == current.digest => {}
            Ok(fresh) => {
                tracing::info!(
                    old = %current.fingerprint,
                    new = %fresh.fingerprint,
                    "agent certificate changed; opening new tunnels with it, then draining the old ones"
                );
                tx.send_replace(Arc::new(fresh));
            }
            Err(e) => tracing::error!(
                error = %e,
                current = %current.fingerprint,
                "new agent certificate files are unusable; the tunnels keep the current certificate"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{HubCa, Validity};
    use std::path::Path;

    fn link(dir: &Path) -> HubLink {
        HubLink {
            address: "127.0.0.1:1".into(),
            server_name: "127.0.0.1".into(),
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("agent.crt"),
            key_file: dir.join("agent.key"),
            connections: 1,
        }
    }

    fn write(dir: &Path, ca: &HubCa, cluster: &str) -> Fingerprint {
        let issued = ca.issue_agent(cluster, Validity::days_from_now(1)).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("agent.crt"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("agent.key"), issued.key_pem.expose()).unwrap();
        issued.fingerprint
    }

    #[test]
    fn load_accepts_a_good_pair_and_names_what_is_wrong_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HubCa::load_or_create(&dir.path().join("ca")).unwrap();
        let hub = link(dir.path());
        let fp = write(dir.path(), &ca, "eu1");
        let id = Identity::load(&hub, "eu1", 7).unwrap();
        assert_eq!((id.fingerprint, id.generation), (fp, 7));
        id.check_trust().unwrap();

        let err = Identity::load(&hub, "us2", 1).unwrap_err();
        assert!(matches!(err, IdentityError::WrongCluster { .. }), "{err}");

        // A key from another certificate.
        let other = ca.issue_agent("eu1", Validity::days_from_now(1)).unwrap();
        std::fs::write(dir.path().join("agent.key"), other.key_pem.expose()).unwrap();
        let err = Identity::load(&hub, "eu1", 1).unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");

        // Another CA's certificate.
        let foreign = HubCa::load_or_create(&dir.path().join("other"))
            .unwrap()
            .issue_agent("eu1", Validity::days_from_now(1))
            .unwrap();
        std::fs::write(dir.path().join("agent.crt"), &foreign.cert_pem).unwrap();
        std::fs::write(dir.path().join("agent.key"), foreign.key_pem.expose()).unwrap();
        let err = Identity::load(&hub, "eu1", 1)
            .unwrap()
            .check_trust()
            .unwrap_err();
        assert!(matches!(err, IdentityError::Untrusted { .. }), "{err}");

        std::fs::write(dir.path().join("agent.crt"), "garbage").unwrap();
        let err = Identity::load(&hub, "eu1", 1).unwrap_err().to_string();
        assert!(err.contains("agent.crt"), "{err}");
    }

    #[tokio::test]
    async fn the_watcher_publishes_a_valid_change_and_ignores_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HubCa::load_or_create(&dir.path().join("ca")).unwrap();
        let hub = link(dir.path());
        let first = write(dir.path(), &ca, "eu1");
        let (tx, mut rx) = watch::channel(Arc::new(Identity::load(&hub, "eu1", 0).unwrap()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_identity(
            hub.clone(),
            "eu1".into(),
            Duration::from_millis(10),
            tx,
            stop.clone(),
        ));
        // Garbage: nothing is published.
        std::fs::write(dir.path().join("agent.crt"), "garbage").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.changed())
                .await
                .is_err(),
            "an unusable certificate was published"
        );
        assert_eq!(rx.borrow().fingerprint, first);
        // A valid new pair, swapped in like a Secret volume: through a symlink.
        let new_dir = dir.path().join("v2");
        std::fs::create_dir(&new_dir).unwrap();
        let second = write(&new_dir, &ca, "eu1");
        for f in ["agent.crt", "agent.key"] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
            std::os::unix::fs::symlink(new_dir.join(f), dir.path().join(f)).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("new identity published")
            .unwrap();
        let now = rx.borrow_and_update().clone();
        assert_eq!((now.fingerprint, now.generation), (second, 1));
        stop.cancel();
        task.await.unwrap();
    }
}
