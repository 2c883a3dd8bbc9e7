//! Borrowed forms of the records the host passes into a plugin.
//!
//! A stage sees only the request headers it declared, so the host hands it the request
//! with the other headers left out. These views build that request out of borrows: the
//! strings are lowered from the proxy's own request straight into the guest's memory,
//! with nothing cloned on the way. Field names and order are the WIT records'
//! (`wit/plugin.wit`); the host checks them against each plugin version's exports when
//! it loads the plugin (`exports.rs`), so a drift from the WIT fails loading, not a call.

use wasmtime::component::{ComponentType, Lower};

use super::types::{AuditPhase, Header, Principal, RequestHead, Role, RouteTarget};

/// `request-head`, borrowed, with the headers the stage may see.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct RequestView<'a> {
    role: Role,
    #[component(name = "request-id")]
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    pub(crate) headers: Vec<&'a Header>,
    #[component(name = "client-addr")]
    client_addr: &'a str,
    cluster: &'a str,
}

impl<'a> RequestView<'a> {
    /// `req` with only `headers`.
    pub(crate) fn new(req: &'a RequestHead, headers: Vec<&'a Header>) -> Self {
        RequestView {
            role: req.role,
            request_id: &req.request_id,
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers,
            client_addr: &req.client_addr,
            cluster: &req.cluster,
        }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &str {
        self.path
    }
}

/// `audit-event`, borrowed, with the headers the stage may see.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct AuditEventView<'a> {
    #[component(name = "request-id")]
    pub(crate) request_id: &'a str,
    phase: AuditPhase,
    #[component(name = "timestamp-ms")]
    timestamp_ms: u64,
    role: Role,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    pub(crate) headers: Vec<&'a Header>,
    #[component(name = "client-addr")]
    client_addr: &'a str,
    principal: Option<&'a Principal>,
    impersonated: Option<&'a Principal>,
    route: Option<&'a RouteTarget>,
    status: u16,
    #[component(name = "latency-us")]
    latency_us: u64,
    message: &'a str,
}

impl<'a> AuditEventView<'a> {
    /// `event` with only `headers`.
    pub(crate) fn new(event: &'a super::types::AuditEvent, headers: Vec<&'a Header>) -> Self {
        AuditEventView {
            request_id: &event.request_id,
            phase: event.phase,
            timestamp_ms: event.timestamp_ms,
            role: event.role,
            method: &event.method,
            path: &event.path,
            query: &event.query,
            headers,
            client_addr: &event.client_addr,
            principal: event.principal.as_ref(),
            impersonated: event.impersonated.as_ref(),
            route: event.route.as_ref(),
            status: event.status,
            latency_us: event.latency_us,
            message: &event.message,
        }
    }
}
