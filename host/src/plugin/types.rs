//! Plain values passed between the proxy, the chain and plugins.
//!
//! Every record here is generated from `wit/plugin.wit`; the field documentation lives
//! there and is copied onto the generated types. The proxy fills these structs directly
//! (they are plain `String`/`Vec` fields), so nothing is converted on the way into a
//! plugin: the host lowers them straight into the guest's memory.
//!
//! Values the proxy builds:
//! - [`RequestHead`]: one per request; `headers` lower-cased, `query` without `?`.
//! - [`Candidate`]: one per configured target the request may go to, with the host's view
//!   of its [`Locality`] and [`Health`].
//! - [`AuditEvent`]: one per audit point ([`AuditPhase`]).
//!
//! Values the chain returns: [`Principal`] (credential and impersonation phases),
//! [`RouteChoice`], and the audit event after redaction. Denials carry a [`Denial`].

use std::fmt;

pub use super::bindings::hawser::plugin::types::{
    AuditDecision, AuditEvent, AuditPhase, Candidate, Denial, DenialKind, Extra, Header, Health,
    Locality, Principal, Redaction, RequestHead, Role, RouteChoice, RouteTarget, StageKind,
};
pub use super::bindings::lifecycle::PluginInfo;

// === impl RequestHead ===

impl RequestHead {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

// === impl Principal ===

impl Principal {
    /// A principal with only a user name.
    pub fn new(user: impl Into<String>) -> Self {
        Principal {
            user: user.into(),
            uid: String::new(),
            groups: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The values of extra attribute `key`, if present.
    pub fn extra(&self, key: &str) -> Option<&[String]> {
        self.extra
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.values.as_slice())
    }
}

// === impl Denial ===

impl Denial {
    /// A denial of `kind` with `message`.
    pub fn new(kind: DenialKind, message: impl Into<String>) -> Self {
        Denial {
            kind,
            message: message.into(),
            principal: None,
        }
    }

    /// The HTTP status code the client receives.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            DenialKind::Unauthorized => 401,
            DenialKind::Forbidden => 403,
            DenialKind::NotFound => 404,
            DenialKind::TooManyRequests => 429,
            DenialKind::Unavailable => 503,
        }
    }

    /// The Kubernetes `Status.reason` for this denial.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            DenialKind::Unauthorized => "Unauthorized",
            DenialKind::Forbidden => "Forbidden",
            DenialKind::NotFound => "NotFound",
            DenialKind::TooManyRequests => "TooManyRequests",
            DenialKind::Unavailable => "ServiceUnavailable",
        }
    }

    /// A Kubernetes `Status` body (`kind: Status`, `status: Failure`) for this denial.
    pub fn status_json(&self) -> String {
        status_json(self.http_status(), self.reason(), &self.message)
    }
}

// === impl StageKind ===

impl StageKind {
    /// All kinds, in phase order.
    pub const ALL: [StageKind; 4] = [
        StageKind::Credential,
        StageKind::Impersonation,
        StageKind::Routing,
        StageKind::Audit,
    ];

    /// The name used in TOML (`kind = "..."`), logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Credential => "credential",
            StageKind::Impersonation => "impersonation",
            StageKind::Routing => "routing",
            StageKind::Audit => "audit",
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Role ===

impl Role {
    /// The name used in TOML (`role = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes `Status` failure body.
pub(crate) fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
    .to_string()
}
