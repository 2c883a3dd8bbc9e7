//! `audit.k8s.io/v1` events at the Metadata level, emitted per stage like the
//! `WithAudit` / `WithFailedAuthenticationAudit` filters do.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use serde_json::{json, Value};

use super::requestinfo::RequestInfo;
use super::state::{lock, Shared};
use super::timefmt::rfc3339_micros;
use super::UserInfo;

/// Per-request audit context.
pub(crate) struct AuditCtx {
    shared: Arc<Shared>,
    pub audit_id: String,
    request_uri: String,
    verb: String,
    source_ips: Vec<String>,
    user_agent: Option<String>,
    object_ref: Option<Value>,
    received: SystemTime,
    state: std::sync::Mutex<AuditState>,
}

#[derive(Default)]
struct AuditState {
    user: Option<UserInfo>,
    impersonated: Option<UserInfo>,
    annotations: BTreeMap<String, String>,
    response_status: Option<Value>,
}

fn user_value(u: &UserInfo) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("username".into(), json!(u.username));
    if !u.uid.is_empty() {
        v.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        v.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        v.insert("extra".into(), json!(u.extra));
    }
    Value::Object(v)
}

/// `utilnet.SourceIPs`: X-Forwarded-For entries, then X-Real-Ip, then the
/// remote address unless it repeats the last entry.
pub(crate) fn source_ips(headers: &HeaderMap, remote: SocketAddr) -> Vec<String> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(xff) = first("x-forwarded-for") {
        ips.extend(
            xff.split(',')
                .filter_map(|p| p.trim().parse::<IpAddr>().ok()),
        );
    }
    if let Some(real) = first("x-real-ip").and_then(|v| v.trim().parse::<IpAddr>().ok()) {
        if !ips.contains(&real) {
            ips.push(real);
        }
    }
    let remote_ip = remote.ip();
    if ips.last() != Some(&remote_ip) {
        ips.push(remote_ip);
    }
    ips.iter().map(IpAddr::to_string).collect()
}

impl AuditCtx {
    pub fn new(
        shared: Arc<Shared>,
        audit_id: String,
        request_uri: String,
        info: &RequestInfo,
        headers: &HeaderMap,
        remote: SocketAddr,
    ) -> AuditCtx {
        let object_ref = info.is_resource_request.then(|| {
            let mut o = serde_json::Map::new();
            for (k, v) in [
                ("resource", &info.resource),
                ("namespace", &info.namespace),
                ("name", &info.name),
                ("apiGroup", &info.api_group),
                ("apiVersion", &info.api_version),
                ("subresource", &info.subresource),
            ] {
                if !v.is_empty() {
                    o.insert(k.into(), json!(v));
                }
            }
            Value::Object(o)
        });
        AuditCtx {
            shared,
            audit_id,
            request_uri,
            verb: info.verb.clone(),
            source_ips: source_ips(headers, remote),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            object_ref,
            received: SystemTime::now(),
            state: std::sync::Mutex::new(AuditState::default()),
        }
    }

    pub fn set_user(&self, u: &UserInfo) {
        lock(&self.state).user = Some(u.clone());
    }

    pub fn set_impersonated(&self, u: &UserInfo) {
        lock(&self.state).impersonated = Some(u.clone());
    }

    pub fn annotate(&self, k: &str, v: &str) {
        lock(&self.state).annotations.insert(k.into(), v.into());
    }

    /// Records an error Status as `responseStatus` (what `LogResponseObject`
    /// copies at every level).
    pub fn set_response_status(&self, status: Value) {
        lock(&self.state).response_status = Some(status);
    }

    /// Emits an event for `stage`; `code` is the response code once known.
    pub fn emit(&self, stage: &str, code: Option<u16>) {
        let st = lock(&self.state);
        let mut ev = serde_json::Map::new();
        ev.insert("kind".into(), json!("Event"));
        ev.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        ev.insert("level".into(), json!("Metadata"));
        ev.insert("auditID".into(), json!(self.audit_id));
        ev.insert("stage".into(), json!(stage));
        ev.insert("requestURI".into(), json!(self.request_uri));
        ev.insert("verb".into(), json!(self.verb));
        ev.insert(
            "user".into(),
            st.user
                .as_ref()
                .map(user_value)
                .unwrap_or_else(|| json!({})),
        );
        if let Some(imp) = &st.impersonated {
            ev.insert("impersonatedUser".into(), user_value(imp));
        }
        ev.insert("sourceIPs".into(), json!(self.source_ips));
        if let Some(ua) = &self.user_agent {
            ev.insert("userAgent".into(), json!(ua));
        }
        if let Some(o) = &self.object_ref {
            ev.insert("objectRef".into(), o.clone());
        }
        if let Some(code) = code {
            let mut rs = match &st.response_status {
                Some(Value::Object(m)) => m.clone(),
                _ => {
                    let mut m = serde_json::Map::new();
                    m.insert("metadata".into(), json!({}));
                    m
                }
            };
            rs.insert("code".into(), json!(code));
            ev.insert("responseStatus".into(), Value::Object(rs));
        }
        ev.insert(
            "requestReceivedTimestamp".into(),
            json!(rfc3339_micros(self.received)),
        );
        ev.insert(
            "stageTimestamp".into(),
            json!(rfc3339_micros(SystemTime::now())),
        );
        if !st.annotations.is_empty() {
            ev.insert("annotations".into(), json!(st.annotations));
        }
        drop(st);
        self.shared.push_audit(Value::Object(ev));
    }
}
