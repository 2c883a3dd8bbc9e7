//! The per-request credential check, run by the hub and again by the agent.
//!
//! The hub builds its [`Verifier`] over its own key manifest ([`KeySource::Issuer`]);
//! the agent over a public trust bundle ([`KeySource::Bundle`]) and a synced
//! revocation list, so it never holds a private key and re-derives the identity
//! itself instead of trusting anything the hub says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use super::keys::{HubKeys, IssuerKeys, KeyError, TrustBundle};
use super::revocation::{RevocationError, Revocations};
use super::token::{verify, Claims, CredentialError, TokenUse, VerifyingKeys};
use crate::proxy::body::{full, Body};
use crate::proxy::status::Status;

/// kube-apiserver's 401 body, byte for byte: the Status JSON plus the newline
/// its JSON encoder ends every object with (129 bytes). Every credential failure
/// answers exactly this, so a client learns nothing about why.
pub const UNAUTHORIZED_BODY: &str =
    "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n";

/// The 401 Status for any credential failure, for code that answers through
/// [`Status`] (its body lacks the trailing newline; prefer [`unauthorized`]).
pub fn unauthorized_status() -> Status {
    Status::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

/// The 401 response for any credential failure: [`UNAUTHORIZED_BODY`] as
/// `application/json`.
pub fn unauthorized() -> Response<Body> {
    let mut resp = Response::new(full(UNAUTHORIZED_BODY));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A credential file failed to reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The key manifest or trust bundle.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The revocation list.
    #[error(transparent)]
    Revocations(#[from] RevocationError),
}

/// Where the verifying keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The hub: its own `issuer/keys.toml` (the same handle signs refreshed tokens,
    /// so signing and verifying never disagree after a rotation).
    Issuer(Arc<HubKeys>),
    /// The agent: a public trust bundle.
    Bundle(Arc<TrustBundle>),
}

enum Snapshot {
    Issuer(Arc<IssuerKeys>),
    Bundle(Arc<VerifyingKeys>),
}

impl Snapshot {
    fn keys(&self) -> &VerifyingKeys {
        match self {
            Snapshot::Issuer(k) => k.verifying_keys(),
            Snapshot::Bundle(k) => k,
        }
    }
}

impl KeySource {
    fn snapshot(&self) -> Snapshot {
        match self {
            KeySource::Issuer(k) => Snapshot::Issuer(k.get()),
            KeySource::Bundle(k) => Snapshot::Bundle(k.get()),
        }
    }

    /// Re-reads the key file if it changed.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        match self {
            KeySource::Issuer(k) => k.reload_if_changed(),
            KeySource::Bundle(k) => k.reload_if_changed(),
        }
    }
}

/// Who a verified access credential names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (`Impersonate-User`).
    pub user: String,
    /// UID (`Impersonate-Uid`), if any.
    pub uid: Option<String>,
    /// Groups (`Impersonate-Group`, one line each).
    pub groups: Vec<String>,
    /// Extras (`Impersonate-Extra-<key>`, one line per value).
    pub extra: BTreeMap<String, Vec<String>>,
    /// Clusters the credential may reach; empty means none.
    pub clusters: Vec<String>,
    /// The credential id (for audit).
    pub id: String,
    /// The refresh credential it was minted from, if any (for audit).
    pub session: Option<String>,
    /// When the credential expires.
    pub expires_at: SystemTime,
}

impl Identity {
    /// Whether the credential may reach `cluster`. Only clusters named in the
    /// credential: there is no wildcard.
    pub fn allows_cluster(&self, cluster: &str) -> bool {
        self.clusters.iter().any(|c| c == cluster)
    }
}

impl From<Claims> for Identity {
    fn from(c: Claims) -> Identity {
        Identity {
            expires_at: c.expires_at(),
            user: c.sub,
            uid: c.uid,
            groups: c.groups,
            extra: c.extra,
            clusters: c.clusters,
            id: c.jti,
            session: c.rid,
        }
    }
}

/// Checks credentials against reloadable keys and revocations. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySource,
    revocations: Arc<Revocations>,
    issuer: Arc<str>,
}

// === impl Verifier ===

impl Verifier {
    /// A verifier accepting credentials from `issuer` signed by `keys`.
    pub fn new(
        keys: KeySource,
        revocations: Arc<Revocations>,
        issuer: impl Into<String>,
    ) -> Verifier {
        Verifier {
            keys,
            revocations,
            issuer: Arc::from(issuer.into()),
        }
    }

    /// Checks an `Authorization` header value: `Bearer <access token>`.
    pub fn check(&self, authorization: &str) -> Result<Identity, CredentialError> {
        self.check_at(authorization, SystemTime::now())
    }

    /// [`Verifier::check`] at a given time.
    pub fn check_at(
        &self,
        authorization: &str,
        now: SystemTime,
    ) -> Result<Identity, CredentialError> {
        let token = bearer(authorization)?;
        self.verify_token(token, TokenUse::Access, now)
            .map(Identity::from)
    }

    /// Checks the (single) `Authorization` header of a request.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<Identity, CredentialError> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(CredentialError::Missing);
        };
        self.check(value.to_str().map_err(|_| CredentialError::Missing)?)
    }

    /// Verifies a bare token for `expected` use: signature, time, issuer, audience,
    /// use, then revocation of its id and of the refresh credential it came from.
    pub fn verify_token(
        &self,
        token: &str,
        expected: TokenUse,
        now: SystemTime,
    ) -> Result<Claims, CredentialError> {
        let claims = verify(token, self.keys.snapshot().keys(), now, &self.issuer)?;
        if claims.token_use != expected {
            return Err(CredentialError::WrongUse {
                expected,
                found: claims.token_use,
            });
        }
        let revoked = self.revocations.get();
        if revoked.is_revoked(&claims.jti)
            || claims.rid.as_deref().is_some_and(|r| revoked.is_revoked(r))
        {
            return Err(CredentialError::Revoked);
        }
        Ok(claims)
    }

    /// The issuer this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key source (the hub's refresh endpoint signs from it).
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// Re-reads the revocation list and the key file if they changed (what
    /// [`Verifier::watch`] does each tick). Both are tried; the first error is
    /// returned, and a file that fails keeps its previous version.
    pub fn reload_if_changed(&self) -> Result<bool, ReloadError> {
        let revocations = self.revocations.reload_if_changed();
        let keys = self.keys.reload_if_changed();
        Ok(revocations? | keys?)
    }

    /// Polls the key file and the revocation list every `every` until `shutdown`;
    /// spawn it next to the listener that uses this verifier.
    pub async fn watch(&self, every: Duration, shutdown: CancellationToken) {
        let keys = async {
            match self.keys.clone() {
                KeySource::Issuer(k) => k.poll(every, shutdown.clone()).await,
                KeySource::Bundle(k) => k.poll(every, shutdown.clone()).await,
            }
        };
        tokio::join!(keys, self.revocations.clone().poll(every, shutdown.clone()));
    }
}

/// `Bearer <token>`: scheme case-insensitive, exactly one token.
pub(super) fn bearer(value: &str) -> Result<&str, CredentialError> {
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(CredentialError::Malformed("expected `Bearer <token>`"))?;
    let token = token.trim_start();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.contains(char::is_whitespace)
    {
        return Err(CredentialError::Malformed("expected `Bearer <token>`"));
    }
    Ok(token)
}

#[cfg(test)]
#[path = "verifier_tests.rs"]
mod tests;
