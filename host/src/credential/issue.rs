//! Issuing credentials (`hawser credential issue`), with the input checked first.
//!
//! Names become `Impersonate-*` header values at the agent, so every user, group,
//! uid and extra value must be a valid header value. Names starting with
//! `system:` are Kubernetes-reserved (nodes, service accounts, `system:masters`)
//! and are refused unless the operator passes `allow_system_names`; the group
//! `system:masters` is refused always, because it bypasses RBAC and no RBAC
//! change on the cluster could take its power back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::keys::{IssuerKeys, KeyError};
use super::token::{sign, Claims, SecretToken, TokenUse, MAX_TOKEN_BYTES};
use super::{AUDIENCE, MAX_ACCESS_TTL, MAX_REFRESH_TTL, MIN_TTL};
use crate::files::unix;
use crate::registry::validate_cluster_name;

const SYSTEM_PREFIX: &str = "system:";
const MASTERS: &str = "system:masters";
const MAX_NAME_BYTES: usize = 256;

/// Why a credential was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request is invalid (the operator's input).
    #[error("{field}: {reason}")]
    Invalid {
        /// Which input.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The issuer keys are unusable (the hub's state).
    #[error(transparent)]
    Keys(#[from] KeyError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> IssueError {
    IssueError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// What to issue.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    /// The Kubernetes user name to impersonate.
    pub user: String,
    /// Groups to impersonate.
    pub groups: Vec<String>,
    /// Extra attributes, `(key, value)`; a key may repeat.
    pub extra: Vec<(String, String)>,
    /// Clusters the credential may reach (at least one).
    pub clusters: Vec<String>,
    /// Lifetime: at most 24 h for an access token, 30 d for a refresh token.
    pub ttl: Duration,
    /// Issue a refresh credential for the kubectl exec plugin instead of an
    /// access token.
    pub exec: bool,
    /// The user's UID, if any.
    pub uid: Option<String>,
    /// Allow `system:` users and groups (never `system:masters`).
    pub allow_system_names: bool,
}

/// An issued credential.
#[derive(Debug)]
pub struct Issued {
    /// The token: an access token, or a refresh token when `exec` was asked.
    pub token: SecretToken,
    /// Its id, for `hawser credential revoke`.
    pub id: String,
    /// Its expiry.
    pub expires_at: SystemTime,
    /// Access or refresh.
    pub token_use: TokenUse,
}

/// Issues a credential signed with the active key in `state_dir/issuer/`
/// (created on first use).
pub fn issue(state_dir: &Path, issuer: &str, req: &IssueRequest) -> Result<Issued, IssueError> {
    // Validate before touching the state directory: a typo must not create keys.
    let claims = claims_for(issuer, req, SystemTime::now())?;
    let keys = IssuerKeys::load_or_create(state_dir)?;
    finish(claims, &keys)
}

/// [`issue`] with loaded keys, at a given time.
pub fn issue_with(
    keys: &IssuerKeys,
    issuer: &str,
    req: &IssueRequest,
    now: SystemTime,
) -> Result<Issued, IssueError> {
    finish(claims_for(issuer, req, now)?, keys)
}

fn finish(claims: Claims, keys: &IssuerKeys) -> Result<Issued, IssueError> {
    let token = sign(&claims, keys.signing_key());
    if token.expose().len() > MAX_TOKEN_BYTES {
        return Err(invalid(
            "credential",
            format!("is larger than {MAX_TOKEN_BYTES} bytes; use fewer groups or extras"),
        ));
    }
    Ok(Issued {
        token,
        id: claims.jti.clone(),
        expires_at: claims.expires_at(),
        token_use: claims.token_use,
    })
}

/// Checks `req` and builds the claims it asks for.
pub fn claims_for(issuer: &str, req: &IssueRequest, now: SystemTime) -> Result<Claims, IssueError> {
    if issuer.is_empty() {
        return Err(invalid("issuer", "must not be empty"));
    }
    check_name("user", &req.user)?;
    check_reserved("user", &req.user, req.allow_system_names)?;
    let mut groups: Vec<String> = Vec::new();
    for g in &req.groups {
        check_name("group", g)?;
        if g == MASTERS {
            return Err(invalid(
                "group",
                "system:masters is never issued: it bypasses RBAC on every cluster",
            ));
        }
        check_reserved("group", g, req.allow_system_names)?;
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in &req.extra {
        check_extra_key(key)?;
        check_name("extra value", value)?;
        let values = extra.entry(key.clone()).or_default();
        if !values.contains(value) {
            values.push(value.clone());
        }
    }
    if let Some(uid) = &req.uid {
        check_name("uid", uid)?;
    }
    if req.clusters.is_empty() {
        return Err(invalid(
            "clusters",
            "name at least one cluster; a credential without clusters reaches none",
        ));
    }
    let mut clusters: Vec<String> = Vec::new();
    for c in &req.clusters {
        validate_cluster_name(c).map_err(|e| invalid("cluster", e.to_string()))?;
        if !clusters.contains(c) {
            clusters.push(c.clone());
        }
    }
    let (token_use, max) = if req.exec {
        (TokenUse::Refresh, MAX_REFRESH_TTL)
    } else {
        (TokenUse::Access, MAX_ACCESS_TTL)
    };
    if req.ttl < MIN_TTL || req.ttl > max {
        return Err(invalid(
            "ttl",
            format!(
                "{} is outside {}..={} for {token_use} credential",
                humantime::format_duration(req.ttl),
                humantime::format_duration(MIN_TTL),
                humantime::format_duration(max)
            ),
        ));
    }
    let iat = unix(now);
    Ok(Claims {
        iss: issuer.to_string(),
        sub: req.user.clone(),
        aud: vec![AUDIENCE.to_string()],
        exp: unix(now + req.ttl),
        nbf: iat,
        iat,
        jti: uuid::Uuid::new_v4().to_string(),
        token_use,
        groups,
        extra,
        clusters,
        uid: req.uid.clone(),
        rid: None,
    })
}

/// A name must survive as an `Impersonate-*` header value, unchanged.
fn check_name(field: &'static str, value: &str) -> Result<(), IssueError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(invalid(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if value.trim() != value {
        return Err(invalid(
            field,
            format!("{value:?} has leading or trailing whitespace"),
        ));
    }
    if !value.is_ascii() || HeaderValue::from_str(value).is_err() {
        return Err(invalid(
            field,
            format!("{value:?} must be printable ASCII (it becomes an HTTP header value)"),
        ));
    }
    Ok(())
}

fn check_reserved(field: &'static str, value: &str, allowed: bool) -> Result<(), IssueError> {
    if value.starts_with(SYSTEM_PREFIX) && !allowed {
        return Err(invalid(
            field,
            format!("{value:?} is a Kubernetes-reserved system: name; pass --allow-system-names if you mean it"),
        ));
    }
    Ok(())
}

/// Extra keys are lower-case (header names are case-insensitive, so the API server
/// lower-cases them) and printable ASCII; others are percent-encoded on the wire.
fn check_extra_key(key: &str) -> Result<(), IssueError> {
    if key.is_empty() || key.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "extra key",
            format!("{key:?} must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
    {
        return Err(invalid(
            "extra key",
            format!("{key:?} must be lower-case printable ASCII without spaces"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "issue_tests.rs"]
mod tests;
