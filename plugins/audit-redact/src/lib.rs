//! Audit plugin: redacts configured headers and drops noisy events.
//!
//! ```toml
//! [stage.config]
//! redact_headers = ["authorization", "cookie", "x-api-key"]   # default: authorization, cookie
//! redact_query = false
//! strip_extra = false                  # remove principal extras from recorded events
//! drop_paths = ["/healthz", "/readyz", "/livez"]   # the path and what is under it
//! drop_users = ["system:kube-probe"]
//! ```

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use hawser_plugin_sdk::{
    export_plugin, Audit, AuditDecision, AuditEvent, Config, Plugin, Redaction,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Cfg {
    redact_headers: Vec<String>,
    redact_query: bool,
    strip_extra: bool,
    drop_paths: Vec<String>,
    drop_users: Vec<String>,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            redact_headers: vec!["authorization".into(), "cookie".into()],
            redact_query: false,
            strip_extra: false,
            drop_paths: Vec::new(),
            drop_users: Vec::new(),
        }
    }
}

/// The plugin: what to redact and drop.
pub struct AuditRedact(Cfg);

impl Plugin for AuditRedact {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(AuditRedact(config.parse()?))
    }

    // Only the headers it may redact matter to its decision.
    fn request_headers(&self) -> Option<Vec<String>> {
        Some(self.0.redact_headers.clone())
    }
}

/// Whether `path` is `prefix` or below it, by whole segments: `/api/v1/namespaces/mon`
/// covers `/api/v1/namespaces/mon/pods`, not `/api/v1/namespaces/monitoring`.
fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

impl Audit for AuditRedact {
    fn decide(&self, ev: &AuditEvent) -> Result<AuditDecision, String> {
        let c = &self.0;
        if c.drop_paths.iter().any(|p| under(&ev.path, p))
            || ev
                .principal
                .as_ref()
                .is_some_and(|p| c.drop_users.contains(&p.user))
        {
            return Ok(AuditDecision::Drop);
        }
        let headers: Vec<String> = ev
            .headers
            .iter()
            .filter(|h| {
                c.redact_headers
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&h.name))
            })
            .map(|h| h.name.clone())
            .collect();
        let query = c.redact_query && !ev.query.is_empty();
        if headers.is_empty() && !query && !c.strip_extra {
            return Ok(AuditDecision::Keep);
        }
        Ok(AuditDecision::Redact(Redaction {
            headers,
            query,
            extra: c.strip_extra,
        }))
    }
}

export_plugin!(AuditRedact: audit; no_std);

#[cfg(test)]
mod tests {
    use super::*;
    use hawser_plugin_sdk::testing::{audit_event, request};

    #[test]
    fn redacts_and_drops() {
        let a = AuditRedact::init(&Config::from_json(r#"{"drop_paths":["/healthz"]}"#)).unwrap();
        let ev = audit_event(&request(
            "/api",
            &[("authorization", "Bearer x"), ("accept", "*/*")],
        ));
        match a.decide(&ev).unwrap() {
            AuditDecision::Redact(r) => assert_eq!(r.headers, ["authorization"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            a.decide(&audit_event(&request("/api", &[]))).unwrap(),
            AuditDecision::Keep
        ));
        assert!(matches!(
            a.decide(&audit_event(&request("/healthzz", &[]))).unwrap(),
            AuditDecision::Redact(_) | AuditDecision::Keep
        ));
        assert!(matches!(
            a.decide(&audit_event(&request("/healthz/ready", &[])))
                .unwrap(),
            AuditDecision::Drop
        ));
        assert!(matches!(
            a.decide(&audit_event(&request("/healthz", &[]))).unwrap(),
            AuditDecision::Drop
        ));
    }
}
