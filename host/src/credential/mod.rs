//! User credentials: signed tokens the hub issues and both the hub and the agent check.
//!
//! A credential is a JWT (JWS compact, Ed25519 / `alg: EdDSA`) naming a user, its
//! groups and extras, and the clusters it may reach. The hub checks it before it
//! forwards a request; the agent checks it *again* with only the public keys, so a
//! compromised hub cannot mint identities the issuer never signed, and only then
//! sets the Kubernetes `Impersonate-*` headers from it.
//!
//! Two kinds of token, never interchangeable (claim `use`):
//! - **access** tokens (at most 24 h) are what kubectl presents;
//! - **refresh** tokens (at most 30 d, `credential issue --exec`) are presented only
//!   to the hub's refresh endpoint ([`REFRESH_PATH`]), which answers with a fresh
//!   access token; kubectl gets them through the exec plugin (`hawser credential exec`).
//!
//! Revoking a refresh credential also revokes every access token minted from it
//! (they carry its id in claim `rid`).
//!
//! # Layout
//! - [`token`]: the claims, signing and strict verification.
//! - [`keys`]: the issuer's Ed25519 keys in `state_dir/issuer/`, rotation, the
//!   public trust bundle for agents (file format in `manifest`).
//! - [`revocation`]: `state_dir/revoked.toml` and its reloading handle.
//! - [`watch`]: reload-on-change for any of those files (`ArcSwap` + file stamp).
//! - [`mod@issue`]: validated issuance (`hawser credential issue`).
//! - [`verifier`]: the check the hub and the agent run per request, and the 401.
//! - [`refresh`]: the hub's refresh endpoint; [`exec`]: the kubectl exec plugin.
//! - [`mod@kubeconfig`]: kubeconfig and `ExecCredential` documents.
//! - [`settings`]: the `[credentials]` config section for the hub and the agent.

#![deny(missing_docs)]

pub mod exec;
pub mod issue;
pub mod keys;
pub mod kubeconfig;
pub mod refresh;
pub mod revocation;
pub mod settings;
pub mod token;
pub mod verifier;
pub mod watch;

mod manifest;
#[cfg(test)]
mod testing;

pub use exec::{exec_command, ExecArgs, ExecError};
pub use issue::{issue, IssueError, IssueRequest, Issued};
pub use keys::{HubKeys, IssuerKeys, KeyError, KeyState, TrustBundle};
pub use kubeconfig::{exec_credential, kubeconfig, KubeconfigAuth};
pub use refresh::{handle_refresh, Refresher, REFRESH_PATH};
pub use revocation::{revoke, RevocationError, RevocationList, Revocations};
pub use token::{
    sign, verify, Claims, CredentialError, SecretToken, SigningKey, TokenUse, VerifyingKeys,
};
pub use verifier::{unauthorized, Identity, KeySource, Verifier, UNAUTHORIZED_BODY};

use std::time::Duration;

/// The issuer name used when the config names none.
pub const DEFAULT_ISSUER: &str = "hawser-hub";
/// The audience every Hawser credential carries and every check requires.
pub const AUDIENCE: &str = "hawser";
/// Longest lifetime of an access token.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime of a refresh token.
pub const MAX_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest lifetime of any issued token: shorter ones would expire within the
/// clock-skew leeway and only confuse.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Shortest `refreshed_ttl`. Shorter than [`MIN_TTL`] is useful here: kubectl re-runs
/// the exec plugin once `expirationTimestamp` passes (not after the verifiers'
/// leeway), and every refresh re-checks the refresh credential at the hub, so a short
/// lifetime bounds how long a client keeps a token after its refresh credential is
/// revoked. Below 5 s kubectl would mostly be refreshing.
pub const MIN_REFRESHED_TTL: Duration = Duration::from_secs(5);
/// Lifetime of the access tokens the refresh endpoint mints, unless configured.
pub const DEFAULT_REFRESHED_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock skew tolerated on `exp` and `nbf` between the hub, the agent and the issuer.
pub const LEEWAY: Duration = Duration::from_secs(60);
