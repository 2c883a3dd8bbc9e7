//! `audit.k8s.io/v1` events, with the JSON field names of kube-apiserver
//! (`k8s.io/apiserver/pkg/apis/audit/v1/types.go`), so hub, agent and API-server
//! records can be read by the same tools and joined on `auditID`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

/// The audit API version of every event and policy.
pub const API_VERSION: &str = "audit.k8s.io/v1";
/// Annotation: `hub` or `agent`.
pub const ANNOTATION_ROLE: &str = "hawser.io/role";
/// Annotation: the registered cluster's name.
pub const ANNOTATION_CLUSTER: &str = "hawser.io/cluster";
/// Annotation: the tunnel that carried the request.
pub const ANNOTATION_TUNNEL: &str = "hawser.io/tunnel";

/// How much of a request is recorded. Ordered: `None < Metadata < Request <
/// RequestResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Nothing is recorded.
    None,
    /// User, verb, resource, timestamps and response code; no bodies.
    Metadata,
    /// Metadata plus the request body.
    Request,
    /// Request plus the response body.
    RequestResponse,
}

/// When, in a request's life, an event is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// As soon as the request is received, before it is handled.
    RequestReceived,
    /// Once the response headers are sent, for long-running requests (watch, exec...).
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When handling the request panicked.
    Panic,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 4] = [
        Stage::RequestReceived,
        Stage::ResponseStarted,
        Stage::ResponseComplete,
        Stage::Panic,
    ];
}

/// `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits, e.g.
/// `2024-05-01T10:00:00.123456Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MicroTime(pub SystemTime);

impl MicroTime {
    /// The current time.
    pub fn now() -> MicroTime {
        MicroTime(SystemTime::now())
    }
}

impl std::fmt::Display for MicroTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // humantime panics before 1970 and fails after 9999; a clock that far off
        // must not take the audit path down, so clamp to what RFC 3339 here allows.
        let last = std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
        let t = self.0.clamp(std::time::UNIX_EPOCH, last);
        write!(f, "{}", humantime::format_rfc3339_micros(t))
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MicroTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(MicroTime)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not RFC 3339: {e}")))
    }
}

/// `authentication/v1` UserInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// A unique id, if the authenticator provides one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups the user belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes from the authenticator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The object a resource request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// e.g. `pods`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Empty for cluster-scoped resources.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Empty for collections.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's uid, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// e.g. `v1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The object's resourceVersion, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// e.g. `exec` or `log`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

impl ObjectReference {
    /// The reference for a parsed request; `None` for non-resource requests.
    pub fn from_request_info(info: &crate::proxy::request_info::RequestInfo) -> Option<Self> {
        info.is_resource_request.then(|| ObjectReference {
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            api_group: info.api_group.clone(),
            api_version: info.api_version.clone(),
            subresource: info.subresource.clone(),
            ..ObjectReference::default()
        })
    }
}

/// `meta/v1` Status as audit events carry it: always `metadata` and `code`, and for
/// failures `status`, `message` and `reason`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseStatus {
    /// Always `{}`.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `Success` or `Failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason, e.g. `Forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extra details from a Status body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The HTTP status code.
    pub code: u16,
}

impl ResponseStatus {
    /// Just the code, as kube-apiserver records successful responses.
    pub fn code(code: u16) -> ResponseStatus {
        ResponseStatus {
            code,
            ..ResponseStatus::default()
        }
    }

    /// A failure the proxy answered itself (401, 403, 503...).
    pub fn from_status(s: &crate::proxy::status::Status) -> ResponseStatus {
        ResponseStatus {
            status: Some("Failure".into()),
            message: Some(s.message.clone()),
            reason: Some(s.reason.to_string()),
            code: s.code,
            ..ResponseStatus::default()
        }
    }
}

/// One `audit.k8s.io/v1` Event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Always `Event`.
    pub kind: String,
    /// Always `audit.k8s.io/v1`.
    pub api_version: String,
    /// The level the policy chose.
    pub level: Level,
    /// Shared by every stage of one request (and by hub, agent and API server).
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// The stage this event records.
    pub stage: Stage,
    /// Path and query as received.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Kubernetes verb, or the lower-cased HTTP method for non-resource requests.
    pub verb: String,
    /// The authenticated user.
    pub user: UserInfo,
    /// The user the request acts as, when impersonating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    /// X-Forwarded-For entries, then X-Real-Ip, then the peer address.
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The client's User-Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// What a resource request is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// Set from ResponseStarted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// The request body (levels Request and RequestResponse, when provided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<serde_json::Value>,
    /// The response body (level RequestResponse, when provided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<serde_json::Value>,
    /// When the request arrived.
    pub request_received_timestamp: MicroTime,
    /// When this stage was reached.
    pub stage_timestamp: MicroTime,
    /// Free-form annotations, e.g. `hawser.io/role`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What stays the same across the stages of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct EventContext {
    /// The request's `Audit-ID`.
    pub audit_id: String,
    /// Path and query as received.
    pub request_uri: String,
    /// Kubernetes verb.
    pub verb: String,
    /// The authenticated user.
    pub user: UserInfo,
    /// The impersonated user, once known.
    pub impersonated_user: Option<UserInfo>,
    /// See [`source_ips`].
    pub source_ips: Vec<String>,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// What a resource request is about.
    pub object_ref: Option<ObjectReference>,
    /// When the request arrived.
    pub request_received: MicroTime,
    /// Annotations copied into every stage.
    pub annotations: BTreeMap<String, String>,
}

/// Builds the event of one stage. The caller decides whether it is recorded at all
/// (see [`super::RequestAudit::event`], which applies the level and `omitStages`).
pub fn event_for(
    stage: Stage,
    level: Level,
    ctx: &EventContext,
    response_status: Option<ResponseStatus>,
) -> Event {
    Event {
        kind: "Event".into(),
        api_version: API_VERSION.into(),
        level,
        audit_id: ctx.audit_id.clone(),
        stage,
        request_uri: ctx.request_uri.clone(),
        verb: ctx.verb.clone(),
        user: ctx.user.clone(),
        impersonated_user: ctx.impersonated_user.clone(),
        source_ips: ctx.source_ips.clone(),
        user_agent: ctx.user_agent.clone(),
        object_ref: ctx.object_ref.clone(),
        response_status,
        request_object: None,
        response_object: None,
        request_received_timestamp: ctx.request_received,
        stage_timestamp: MicroTime::now(),
        annotations: ctx.annotations.clone(),
    }
}

/// `utilnet.SourceIPs`: X-Forwarded-For entries, then X-Real-Ip, then the peer
/// address unless it repeats the last one. Like kube-apiserver, the forwarded
/// entries are the client's claim and are recorded, not trusted.
pub fn source_ips(headers: &http::HeaderMap, peer: IpAddr) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut ips: Vec<IpAddr> = header("x-forwarded-for")
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default();
    if let Some(real) = header("x-real-ip").and_then(|v| v.trim().parse().ok()) {
        if !ips.contains(&real) {
            ips.push(real);
        }
    }
    if ips.last() != Some(&peer) {
        ips.push(peer);
    }
    ips.iter().map(IpAddr::to_string).collect()
}

#[cfg(test)]
#[path = "tests/events.rs"]
mod tests;
