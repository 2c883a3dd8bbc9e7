//! The `[credentials]` config section, for the hub and for the agent, and the
//! one call each role makes to turn it into running parts.
//!
//! See `config/credentials.toml` for an annotated example.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::issue::IssueError;
use super::keys::{HubKeys, IssuerKeys, KeyError, TrustBundle};
use super::refresh::Refresher;
use super::revocation::{revocations_path, RevocationError, Revocations};
use super::verifier::{KeySource, Verifier};
use super::{DEFAULT_ISSUER, DEFAULT_REFRESHED_TTL};

/// Why the credential parts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The keys or the trust bundle.
    #[error("credential keys: {0}")]
    Keys(#[from] KeyError),
    /// The revocation list.
    #[error("credential revocations: {0}")]
    Revocations(#[from] RevocationError),
    /// A setting is out of range.
    #[error("[credentials] {0}")]
    Settings(#[from] IssueError),
}

fn default_issuer() -> String {
    DEFAULT_ISSUER.to_string()
}
fn default_refreshed_ttl() -> Duration {
    DEFAULT_REFRESHED_TTL
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(1)
}

/// `[credentials]` in the hub's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubCredentialSettings {
    /// `iss` of issued credentials, and the only issuer accepted.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Lifetime of access tokens minted by the refresh endpoint (5 s to 24 h).
    #[serde(default = "default_refreshed_ttl", with = "humantime_serde")]
    pub refreshed_ttl: Duration,
    /// How often the key manifest and revocation list are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for HubCredentialSettings {
    fn default() -> Self {
        HubCredentialSettings {
            issuer: default_issuer(),
            refreshed_ttl: default_refreshed_ttl(),
            reload_interval: default_reload_interval(),
        }
    }
}

impl HubCredentialSettings {
    /// Loads (or creates) the issuer keys in `state_dir`, opens the revocation
    /// list, and returns the refresher; its [`Refresher::verifier`] checks access
    /// tokens on the front listener. Spawn `verifier().watch(reload_interval, ..)`.
    pub fn open(&self, state_dir: &Path) -> Result<Refresher, SetupError> {
        IssuerKeys::load_or_create(state_dir)?;
        let keys = Arc::new(HubKeys::open(IssuerKeys::manifest_path(state_dir))?);
        let revocations = Arc::new(Revocations::open(revocations_path(state_dir))?);
        Ok(Refresher::new(
            keys,
            revocations,
            self.issuer.clone(),
            self.refreshed_ttl,
        )?)
    }
}

/// `[credentials]` in the agent's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCredentialSettings {
    /// The issuer to accept (the hub's `[credentials] issuer`).
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The trust bundle from `hawser credential export-keys` (public keys only).
    pub trust_bundle: PathBuf,
    /// The synced copy of the hub's revocation list. A missing file means
    /// nothing is revoked, so deploy it with the bundle.
    pub revocations: PathBuf,
    /// How often both files are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl AgentCredentialSettings {
    /// Resolves relative paths against `base` (the config file's directory).
    pub fn resolve(mut self, base: &Path) -> AgentCredentialSettings {
        self.trust_bundle = base.join(&self.trust_bundle);
        self.revocations = base.join(&self.revocations);
        self
    }

    /// Loads the bundle and the revocation list into a verifier. Spawn
    /// `watch(reload_interval, ..)` on it.
    pub fn open(&self) -> Result<Verifier, SetupError> {
        let bundle = Arc::new(TrustBundle::open(&self.trust_bundle)?);
        let revocations = Arc::new(Revocations::open(&self.revocations)?);
        Ok(Verifier::new(
            KeySource::Bundle(bundle),
            revocations,
            self.issuer.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        hub: HubCredentialSettings,
        agent: AgentCredentialSettings,
    }

    #[test]
    fn the_example_config_parses_and_opens() {
        let text = include_str!("../../../config/credentials.toml");
        let example: Example = toml::from_str(text).expect("config/credentials.toml parses");
        assert_eq!(example.hub.issuer, DEFAULT_ISSUER);
        assert_eq!(example.hub.refreshed_ttl, Duration::from_secs(900));

        let dir = tempfile::tempdir().expect("tempdir");
        let refresher = example.hub.open(dir.path()).expect("hub opens");
        let agent = example.agent.resolve(dir.path());
        let keys = IssuerKeys::load(dir.path()).expect("keys");
        keys.export_public(&agent.trust_bundle).expect("export");
        super::super::revocation::export(dir.path(), &agent.revocations)
            .expect("export revocations");
        let verifier = agent.open().expect("agent opens");
        assert_eq!(verifier.issuer(), refresher.verifier().issuer());
    }

    #[test]
    fn unknown_keys_and_bad_ttls_are_refused() {
        assert!(toml::from_str::<HubCredentialSettings>("isuer = \"x\"").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let s = HubCredentialSettings {
            refreshed_ttl: Duration::from_secs(4),
            ..Default::default()
        };
        assert!(matches!(s.open(dir.path()), Err(SetupError::Settings(_))));
        let s = HubCredentialSettings {
            refreshed_ttl: Duration::from_secs(5),
            ..Default::default()
        };
        assert!(s.open(dir.path()).is_ok());
    }
}
