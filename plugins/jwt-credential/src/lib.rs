//! Credential plugin: verifies Hawser access tokens — the Ed25519-signed JWTs the hub
//! issues (`hawser credential issue`) — inside Wasm, with the same rules as the host's
//! built-in verifier (`hawser::credential::Verifier`).
//!
//! # Config
//!
//! ```toml
//! [[stage]]
//! name = "jwt"
//! kind = "credential"
//! plugin = "plugins/hawser_plugin_jwt_credential.wasm"
//! instances = "reuse"              # init parses the keys and the revocation list once
//! [stage.config]
//! issuer = "hawser-hub"            # required: the token's `iss` must equal it
//! cluster = "eu1"                  # optional, agent: the token's `clusters` must contain
//!                                  # it. At the hub leave it out: the request's target
//!                                  # cluster (request-head `cluster`) is checked instead.
//! header = "authorization"         # optional, default; `Bearer <token>` is expected there
//!                                  # (another header may carry the bare token)
//! revoked = [                      # optional: revoked credential ids (jti); a chain reload
//!   "7b0e6d1c-4c1a-4d3e-9f00-0123456789ab", # with a new list takes effect at once
//! ]
//! [stage.config.keys]              # required: the trust bundle, kid = base64 public key
//! "cc988574feaf4806" = "lFbyq0MINCJBW7e3ZS4AVz00y/IpgsiZEm1ufnh+h44="
//! # a retiring key stops verifying after `retire_after`, as in the bundle:
//! "195ede34541b4d6f" = { public_key = "Nbsp2CsAEFukEAuWnbx779HdYN+I2ZAA2smHO6zHTaI=", retire_after = "2025-03-01T00:00:00Z" }
//! ```
//!
//! Revocations can also come from a file, re-read without a chain reload:
//!
//! ```toml
//! [stage.grants]
//! read_dirs = { "/var/lib/hawser/revocations" = "/revocations" }  # read-only
//! [stage.config]
//! revocations_file = "/revocations/revoked.toml"  # guest path; `revoked.toml` format
//! revocations_check_interval = "1s"   # default 1s, at most 1h; "0s" = every request
//! revocations_if_missing = "refuse-all"  # default; or "none-revoked"
//! ```
//!
//! A fresh instance reads the file in `init`; a reused one looks at its modification
//! time and size at most once per interval (host clock) and re-reads it on change, so a
//! revocation takes effect within the interval. A missing file refuses every
//! credential unless `revocations_if_missing = "none-revoked"`; an unreadable or
//! invalid file keeps the last good list (refusing everything if there is none). Grant
//! a directory holding only the list, never the hub's `state_dir` (it holds the issuer's
//! private keys). See [`revocations`].
//!
//! `revoked` entries may also be the `[[revoked]]` tables of `revoked.toml`
//! (`{ id, revoked_at, expires_at }`; only `id` is used). A kid must be the one the
//! issuer derives from its key (16 hex digits of its SHA-256), or `init` refuses the
//! config.
//!
//! # Decisions
//! - No credential header, or one that holds no token of this issuer (another scheme
//!   such as `Basic`, an opaque token, a JWT whose unverified `iss` is another issuer):
//!   abstain (`Ok(None)`), so a later credential stage may decide, as kube-apiserver's
//!   authenticators do; when every stage abstains the host answers the same 401.
//!   Hub-issued tokens and, say, static CI tokens can so share `Authorization`.
//! - Any invalid credential of this issuer — malformed, over 8 KiB (never decoded,
//!   so never passed on), `alg` other than `EdDSA` (`none`,
//!   `HS256`), unknown or retired `kid`, bad signature (checked with the host's
//!   `verify-signature` over exactly the received `header.payload`), wrong `iss`, `aud`
//!   without `hawser`, expired or not yet valid (60 s leeway, host clock), not an
//!   access token (refresh tokens are refused), revoked `jti` or `rid` (config or
//!   revocation file), a configured revocation file unavailable, or an identity
//!   the host could not send upstream: 401 with the message `Unauthorized`, so the
//!   client gets kube-apiserver's exact 401 body and learns nothing about why.
//! - A valid credential that does not allow the cluster (`cluster` from the config, and
//!   the request's target cluster when the host has resolved one): 403 Forbidden.
//! - Otherwise the principal: `sub` as the user, `uid`, `groups`, `extra`.
//!
//! The token is never logged; refusals are logged at `debug` with their reason only.

pub mod jws;
pub mod revocations;
pub mod settings;

use hawser_plugin_sdk::host::{self, LogLevel, PublicKey, Timestamp};
use hawser_plugin_sdk::{
    export_plugin, Config, CredentialCheck, Denial, Extra, Plugin, Principal, RequestHead,
};

use jws::{Claims, Refusal};
use revocations::RevocationFile;
use settings::Settings;

/// The message of every 401: the host turns it into kube-apiserver's exact body.
pub const UNAUTHORIZED: &str = "Unauthorized";

/// The plugin: the validated config.
pub struct JwtCredential {
    settings: Settings,
    revocations: Option<RevocationFile>,
}

impl Plugin for JwtCredential {
    fn init(config: &Config) -> Result<Self, String> {
        JwtCredential::init_at(config, host::now())
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        Some(vec![self.settings.header.clone()])
    }

    fn credential_headers(&self) -> Vec<String> {
        vec![self.settings.header.clone()]
    }
}

impl CredentialCheck for JwtCredential {
    fn check(&self, req: &RequestHead) -> Result<Option<Principal>, Denial> {
        self.check_at(req, host::now())
    }
}

/// What a check concluded, before it becomes the WIT result.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Abstain,
    Refused(Refusal),
    ClusterNotAllowed { who: Principal, cluster: String },
    Accepted(Principal),
}

impl JwtCredential {
    /// [`Plugin::init`] at a given time: validates the config and, if a revocation
    /// file is configured, reads it.
    pub fn init_at(config: &Config, now: Timestamp) -> Result<Self, String> {
        let settings = Settings::from_json(config.json())?;
        let revocations = settings
            .revocations_file
            .clone()
            .map(|f| RevocationFile::open(f, now));
        Ok(JwtCredential {
            settings,
            revocations,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// [`CredentialCheck::check`] at a given time.
    pub fn check_at(&self, req: &RequestHead, now: Timestamp) -> Result<Option<Principal>, Denial> {
        match self.decide(req, now) {
            Outcome::Abstain => Ok(None),
            Outcome::Accepted(p) => Ok(Some(p)),
            Outcome::Refused(why) => {
                host::log(LogLevel::Debug, &format!("credential refused: {why}"));
                Err(Denial::unauthorized(UNAUTHORIZED))
            }
            Outcome::ClusterNotAllowed { who, cluster } => {
                host::log(
                    LogLevel::Debug,
                    "credential refused: it does not allow the cluster",
                );
                // The credential is genuine: name its user so audit records who it was.
                Err(Denial::forbidden(forbidden_message(&who.user, &cluster)).naming(who))
            }
        }
    }

    fn decide(&self, req: &RequestHead, now: Timestamp) -> Outcome {
        let s = &self.settings;
        let mut values = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(&s.header));
        let value = match (values.next(), values.next()) {
            (None, _) => return Outcome::Abstain,
            (Some(v), None) => v.value.as_str(),
            (Some(_), Some(_)) => {
                return Outcome::Refused(Refusal::Malformed("more than one credential header"))
            }
        };
        // Only a token of this issuer is this stage's to judge; anything else (another
        // scheme, an opaque token, another issuer's JWT) is left to later stages.
        let Some(token) = token_of(value, &s.header).filter(|t| jws::claims_issuer(t, &s.issuer))
        else {
            host::log(
                LogLevel::Debug,
                "credential abstained: not a token of this issuer",
            );
            return Outcome::Abstain;
        };
        let claims = match self.verify(token, now) {
            Ok(c) => c,
            Err(why) => return Outcome::Refused(why),
        };
        let principal = match principal(&claims) {
            Ok(p) => p,
            Err(why) => return Outcome::Refused(why),
        };
        // Every cluster this request is bound to must be named in the credential: the
        // configured one (the agent's own) and the request's target, once resolved.
        let wanted = s
            .cluster
            .iter()
            .map(String::as_str)
            .chain(Some(req.cluster.as_str()).filter(|c| !c.is_empty()));
        for cluster in wanted {
            if !claims.clusters.iter().any(|c| c == cluster) {
                return Outcome::ClusterNotAllowed {
                    who: principal,
                    cluster: cluster.to_owned(),
                };
            }
        }
        Outcome::Accepted(principal)
    }

    /// Signature, then claims, use and revocation; the claims of a valid access token.
    fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, Refusal> {
        let s = &self.settings;
        let jws = jws::split(token)?;
        let key = s
            .keys
            .get(&jws.kid)
            .filter(|k| k.verifies_at(now.seconds, now.nanoseconds))
            .ok_or(Refusal::UnknownKey)?;
        let public = PublicKey::Ed25519(key.public.to_vec());
        if !host::verify_signature(&public, jws.signed, &jws.signature) {
            return Err(Refusal::BadSignature);
        }
        let claims = jws::decode_claims(jws.payload)?;
        let now_secs = i64::try_from(now.seconds).unwrap_or(i64::MAX);
        jws::check_claims(&claims, &s.issuer, now_secs)?;
        let revoked = |id: &str| s.revoked.contains(&id.to_ascii_lowercase());
        if revoked(&claims.jti) || claims.rid.as_deref().is_some_and(revoked) {
            return Err(Refusal::Revoked);
        }
        if let Some(file) = &self.revocations {
            let ids: Vec<&str> = std::iter::once(claims.jti.as_str())
                .chain(claims.rid.as_deref())
                .collect();
            file.check(&ids, now)?;
        }
        Ok(claims)
    }
}

/// The token in a credential header value: `Bearer <token>` in `authorization`; in
/// another header the bare token (a `Bearer ` prefix is accepted too). `None` when the
/// value holds no such token (another scheme, such as `Basic`).
fn token_of<'a>(value: &'a str, header: &str) -> Option<&'a str> {
    if header == settings::DEFAULT_HEADER {
        return jws::bearer(value).ok();
    }
    let bare = value.trim();
    if bare.contains(char::is_whitespace) {
        return jws::bearer(bare).ok();
    }
    Some(bare).filter(|b| !b.is_empty())
}

// Limits of the host's principal validation (`hawser::plugin::validate`); a token
// beyond them is refused with 401 here rather than failing the stage with a 500.
const MAX_NAME: usize = 512;
const MAX_GROUPS: usize = 256;
const MAX_EXTRA_KEYS: usize = 32;
const MAX_EXTRA_VALUES: usize = 64;

/// The principal a valid credential names, if the host would accept it.
fn principal(c: &Claims) -> Result<Principal, Refusal> {
    use Refusal::UnusableIdentity as Unusable;
    if c.sub.is_empty() || !is_value(&c.sub) {
        return Err(Unusable("sub is not a legal user name"));
    }
    let uid = c.uid.clone().unwrap_or_default();
    if !uid.is_empty() && !is_value(&uid) {
        return Err(Unusable("uid is not a legal header value"));
    }
    if c.groups.len() > MAX_GROUPS {
        return Err(Unusable("too many groups"));
    }
    if c.groups.iter().any(|g| g.is_empty() || !is_value(g)) {
        return Err(Unusable("a group is not a legal header value"));
    }
    if c.extra.len() > MAX_EXTRA_KEYS {
        return Err(Unusable("too many extra keys"));
    }
    let mut extra = Vec::with_capacity(c.extra.len());
    for (key, values) in &c.extra {
        if key.is_empty() || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Unusable(
                "an extra key is not 1-256 visible ASCII characters",
            ));
        }
        if values.len() > MAX_EXTRA_VALUES || values.iter().any(|v| !is_value(v)) {
            return Err(Unusable("an extra value is not a legal header value"));
        }
        extra.push(Extra {
            key: key.clone(),
            values: values.clone(),
        });
    }
    Ok(Principal {
        user: c.sub.clone(),
        uid,
        groups: c.groups.clone(),
        extra,
    })
}

/// A legal HTTP header value of at most [`MAX_NAME`] bytes: visible ASCII, space and
/// tab, no surrounding whitespace.
fn is_value(v: &str) -> bool {
    v.len() <= MAX_NAME
        && v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && !v.starts_with([' ', '\t'])
        && !v.ends_with([' ', '\t'])
}

/// A Kubernetes-style 403 message, at most 1024 bytes, without control characters.
pub fn forbidden_message(user: &str, cluster: &str) -> String {
    let mut m = format!(
        "clusters {cluster:?} is forbidden: User {user:?} cannot access cluster {cluster:?}: \
         the credential does not allow this cluster"
    );
    if m.len() > 1024 {
        let mut end = 1024;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
    }
    m
}

export_plugin!(JwtCredential: credential);

#[cfg(test)]
mod revocations_tests;
#[cfg(test)]
mod tests;
