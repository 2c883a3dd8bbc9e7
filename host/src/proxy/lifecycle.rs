//! The request lifecycle, written down as explicit phases.
//!
//! Every API request passes these phases in order, at the hub and again at the
//! agent. The WebAssembly stage interfaces in `wit/` mirror the pluggable ones one
//! to one (credential, impersonation, routing, audit).
//!
//! | phase | where | what happens |
//! |---|---|---|
//! | 1. receive | hub | size limits, cluster from the path, `Audit-ID`, request info |
//! | 2. credential | hub, agent | who is calling ([`Stages::credential`]) |
//! | 3. impersonate | agent | the identity the API server should see ([`Stages::impersonate`]) |
//! | 4. route | hub | which live tunnel of the cluster carries it ([`Stages::route`]) |
//! | 5. forward | hub, agent | strip identity and hop-by-hop headers, stream through the tunnel, set the agent's own credential |
//! | 6. respond | hub, agent | relay status, headers and body (or the upgraded stream) unbuffered |
//! | 7. audit | hub, agent | record the outcome ([`Stages::audit`]) |
//!
//! A stage that refuses a request returns a [`Denial`]; the host turns it into a
//! Kubernetes Status and nothing is forwarded.

use super::request_info::RequestInfo;
use super::status::Status;
use std::net::SocketAddr;
use std::time::Instant;

/// Which side of the tunnel runs the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The cloud side.
    Hub,
    /// The cluster side.
    Agent,
}

/// What every phase may read, and what earlier phases decided.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// Hub or agent.
    pub role: Role,
    /// The target cluster.
    pub cluster: String,
    /// Joins hub, agent and API-server audit records.
    pub audit_id: String,
    /// The direct peer (client at the hub, tunnel at the agent).
    pub peer: SocketAddr,
    /// The parsed Kubernetes request.
    pub info: RequestInfo,
    /// Path and query forwarded to the API server.
    pub path_and_query: String,
    /// When the request arrived.
    pub received: Instant,
}

impl RequestCtx {
    /// True for watch, exec, attach, port-forward, logs and proxy requests.
    pub fn long_running(&self) -> bool {
        self.info.is_long_running()
    }
}

/// A stage's refusal; the request ends with this Status.
#[derive(Debug, Clone)]
pub struct Denial(Box<Status>);

impl Denial {
    /// A refusal answered with `status`.
    pub fn new(status: Status) -> Denial {
        Denial(Box::new(status))
    }

    /// The Status the client will get.
    pub fn status(&self) -> &Status {
        &self.0
    }

    /// The HTTP response for the client.
    pub fn into_response(self) -> http::Response<super::body::Body> {
        (*self.0).into_response()
    }
}

impl From<Status> for Denial {
    fn from(status: Status) -> Denial {
        Denial::new(status)
    }
}

/// How a finished request ended, for the audit phase.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// HTTP status sent to the client (101 for a switched protocol).
    pub code: u16,
    /// Which tunnel carried it (hub only).
    pub tunnel: Option<u64>,
}

/// The pluggable phases. The defaults are the behaviour without plugins: no
/// credential check, no impersonation (the agent forwards with its own
/// credential), the host's round-robin over live tunnels, audit to the log.
pub trait Stages: Send + Sync + 'static {
    /// Phase 2: check the caller's credential.
    fn credential(&self, _ctx: &mut RequestCtx, _head: &http::request::Parts) -> Result<(), Denial> {
        Ok(())
    }

    /// Phase 3 (agent): headers that say whom the API server should treat the request
    /// as. Only `Impersonate-*` names are accepted from this phase.
    fn impersonate(&self, _ctx: &RequestCtx) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, Denial> {
        Ok(Vec::new())
    }

    /// Phase 4 (hub): order of preference among live tunnel ids; empty keeps the
    /// host's round-robin order.
    fn route(&self, _ctx: &RequestCtx, _tunnels: &[u64]) -> Result<Vec<u64>, Denial> {
        Ok(Vec::new())
    }

    /// Phase 7: record the outcome.
    fn audit(&self, ctx: &RequestCtx, outcome: &Outcome) {
        tracing::info!(
            target: "hawser::access",
            role = ?ctx.role,
            cluster = %ctx.cluster,
            audit_id = %ctx.audit_id,
            verb = %ctx.info.verb,
            resource = %ctx.info.resource,
            subresource = %ctx.info.subresource,
            code = outcome.code,
            tunnel = ?outcome.tunnel,
            elapsed_ms = ctx.received.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// The stages with no plugins configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinStages;

impl Stages for BuiltinStages {}
