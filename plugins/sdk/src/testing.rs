//! Builders for native unit tests of plugins.

use alloc::string::String;

use crate::{AuditEvent, AuditPhase, Candidate, Header, Health, Locality, RequestHead, Role};

/// A hub `GET path` request from `10.0.0.1:5555` with `headers` (names lower-cased).
pub fn request(path: &str, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        role: Role::Hub,
        request_id: "test-1".into(),
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: n.to_ascii_lowercase(),
                value: (*v).into(),
            })
            .collect(),
        client_addr: "10.0.0.1:5555".into(),
        cluster: String::new(),
    }
}

/// A candidate in `region`/`zone` with `health`, weight 1, nothing in flight.
pub fn candidate(
    cluster: &str,
    endpoint: &str,
    region: &str,
    zone: &str,
    health: Health,
) -> Candidate {
    Candidate {
        cluster: cluster.into(),
        endpoint: endpoint.into(),
        locality: Locality {
            region: region.into(),
            zone: zone.into(),
        },
        health,
        weight: 1,
        in_flight: 0,
    }
}

/// A `request-received` audit event for `req`.
pub fn audit_event(req: &RequestHead) -> AuditEvent {
    AuditEvent {
        request_id: req.request_id.clone(),
        phase: AuditPhase::RequestReceived,
        timestamp_ms: 0,
        role: req.role,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        client_addr: req.client_addr.clone(),
        principal: None,
        impersonated: None,
        route: None,
        status: 0,
        latency_us: 0,
        message: String::new(),
    }
}
