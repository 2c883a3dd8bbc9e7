//! The request lifecycle, written down as explicit phases.
//!
//! Every API request passes these phases in order, at the hub and again at the
//! agent. The pluggable ones run the WebAssembly stage chain; the WIT interfaces in
//! `wit/plugin.wit` mirror them one to one (credential, impersonation, routing,
//! audit).
//!
//! | phase | where | what happens |
//! |---|---|---|
//! | 1. receive | hub, agent | size limits, cluster from the path, `Audit-ID`, request info |
//! | 2. credential | hub, agent | who is calling ([`Phases::credential`], WIT `credential.check`) |
//! | 3. impersonate | agent | the identity the API server should see ([`Phases::impersonate`], WIT `impersonation.apply`) |
//! | 4. route | hub | which live tunnel of the cluster carries it ([`Phases::route`], WIT `routing.route`) |
//! | 5. forward | hub, agent | strip identity and hop-by-hop headers, stream through the tunnel, set the agent's own credential |
//! | 6. respond | hub, agent | relay status, headers and body (or the upgraded stream) unbuffered |
//! | 7. audit | hub, agent | record the outcome ([`Phases::audit`], WIT `audit.decide`) |
//!
//! A request takes one snapshot of the plugin chain when it starts and runs every
//! phase on it, so a hot swap never mixes two chain versions in one request. A
//! stage that refuses a request yields a [`Denial`]; the host answers it with a
//! Kubernetes Status and forwards nothing.

pub use super::pipeline::Pipeline;

use super::audit_trail::AuditTrail;
use super::headers::{self, impersonation_headers};
use super::request_info::RequestInfo;
use super::status::Status;
use crate::plugin::{
    self, AuditEvent, AuditPhase, Candidate, Chain, Principal, Rejection, RequestHead, StageKind,
};
use http::{HeaderName, HeaderValue, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use crate::plugin::Role;

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

/// A refusal; the request ends with this Status.
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

impl From<Rejection> for Denial {
    fn from(rejection: Rejection) -> Denial {
        let code = StatusCode::from_u16(rejection.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let status = match &rejection {
            Rejection::Denied { denial, .. } => {
                Status::new(code, denial.reason(), denial.message.clone())
            }
            Rejection::Failed(failure) => Status::new(code, failure.reason(), failure.message()),
        };
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
    /// The Status the host answered with, when it refused the request itself.
    pub failure: Option<Status>,
}

impl Outcome {
    /// An outcome with a status code only.
    pub fn code(code: u16, tunnel: Option<u64>) -> Outcome {
        Outcome {
            code,
            tunnel,
            failure: None,
        }
    }

    /// A request the host refused with `denial`.
    pub fn denied(denial: &Denial, tunnel: Option<u64>) -> Outcome {
        Outcome {
            code: denial.status().code,
            tunnel,
            failure: Some(denial.status().clone()),
        }
    }
}

/// One request's run through the phases, on one chain version.
pub struct Phases {
    chain: Option<Arc<Chain>>,
    head: RequestHead,
    allow_unauthenticated: bool,
    principal: Option<Principal>,
    impersonated: Option<Principal>,
    trail: Option<AuditTrail>,
    tasks: TaskTracker,
}

impl Phases {
    pub(super) fn new(
        chain: Option<Arc<Chain>>,
        head: RequestHead,
        allow_unauthenticated: bool,
        trail: Option<AuditTrail>,
        tasks: TaskTracker,
    ) -> Phases {
        Phases {
            chain,
            head,
            allow_unauthenticated,
            principal: None,
            impersonated: None,
            trail,
            tasks,
        }
    }

    /// Where this request's background work runs (an upgraded session, phase 7 after
    /// the body): tracked, so shutdown waits for it before flushing the audit log.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Phase 7 off the response path, so audit stages never delay a reply.
    pub fn audit_later(self, ctx: RequestCtx, outcome: Outcome) {
        let span = tracing::debug_span!("audit", audit_id = %ctx.audit_id);
        self.tasks()
            .spawn(async move { self.audit(&ctx, &outcome).await }.instrument(span));
    }

    /// True when a plugin chain runs this request's phases.
    pub fn has_chain(&self) -> bool {
        self.chain.is_some()
    }

    /// The chain version this request runs on, if plugins are configured.
    pub fn generation(&self) -> Option<u64> {
        self.chain.as_ref().map(|c| c.generation())
    }

    /// Request headers the chain's plugins declared carry a credential (besides
    /// `authorization`): never sent upstream, masked in audit events.
    pub fn credential_headers(&self) -> &[String] {
        self.chain.as_ref().map_or(&[], |c| c.credential_headers())
    }

    /// The authenticated caller, once phase 2 produced one.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Phase 2: check the caller's credential; with audit configured, the
    /// `RequestReceived` event is written now (refusing the request if a fail-closed
    /// sink cannot take it).
    pub async fn credential(&mut self) -> Result<(), Denial> {
        let checks = self
            .chain
            .as_ref()
            .is_some_and(|c| c.has(StageKind::Credential));
        if !checks && !self.allow_unauthenticated {
            // Fail closed: nothing could verify the caller. Start-up refuses this
            // configuration; a reload that dropped the credential stage lands here.
            tracing::debug!(
                "request refused: no credential stage and allow_unauthenticated is off"
            );
            return Err(Denial::new(Status::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
            )));
        }
        if let Some(chain) = &self.chain {
            match chain.check_credential(&self.head).await {
                Ok(principal) => self.principal = principal,
                Err(rejection) => {
                    // A verified credential refused with 403: like kube-apiserver after
                    // authentication, the audit record names the user.
                    if let (Some(who), Some(trail)) =
                        (rejection.verified_principal(), self.trail.as_mut())
                    {
                        trail.received(Some(who)).await?;
                    }
                    return Err(rejection.into());
                }
            }
        }
        if let Some(trail) = self.trail.as_mut() {
            trail.received(self.principal.as_ref()).await?;
        }
        Ok(())
    }

    /// The response head is out (phase 6): `ResponseStarted` for long-running requests.
    pub async fn response_started(&mut self, code: u16) -> Result<(), Denial> {
        match self.trail.as_mut() {
            Some(trail) => trail.started(code).await,
            None => Ok(()),
        }
    }

    /// Phase 3 (agent): the `Impersonate-*` header lines for the API server. With a
    /// verified caller and no impersonation stage the caller itself is impersonated,
    /// so a user's request never runs as the agent's own identity.
    ///
    /// `asked` is a client impersonation request the access policy allowed; it
    /// replaces the caller as the identity the impersonation stages map.
    pub async fn impersonate(
        &mut self,
        asked: Option<Principal>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Denial> {
        let who = match (asked, &self.principal) {
            (Some(asked), _) => asked,
            (None, Some(caller)) => caller.clone(),
            (None, None) => return Ok(Vec::new()),
        };
        let target = match &self.chain {
            Some(chain) => chain.impersonate(&who, &self.head).await?.unwrap_or(who),
            None => who,
        };
        let lines = impersonation_headers(&target)
            .map_err(|e| Denial::new(Status::internal(format!("cannot impersonate: {e}"))))?;
        if let Some(trail) = self.trail.as_mut() {
            trail.impersonating(&target);
        }
        self.impersonated = Some(target);
        Ok(lines)
    }

    /// Phase 4 (hub): which tunnel, given `(tunnel id, candidate)` pairs, and the
    /// headers the choice adds upstream. `None` keeps the host's round-robin order;
    /// the chain has already checked that a choice names a candidate and sets only
    /// headers its stage policy allows.
    pub async fn route(&mut self, candidates: &[(u64, Candidate)]) -> Result<Route, Denial> {
        let Some(chain) = &self.chain else {
            return Ok(Route::default());
        };
        let list: Vec<Candidate> = candidates.iter().map(|(_, c)| c.clone()).collect();
        let Some(choice) = chain
            .route(&self.head, self.principal.as_ref(), &list)
            .await?
        else {
            return Ok(Route::default());
        };
        let tunnel = candidates
            .iter()
            .find(|(_, cand)| cand.cluster == choice.cluster && cand.endpoint == choice.endpoint)
            .map(|(id, _)| *id);
        let mut headers = Vec::new();
        for h in &choice.set_headers {
            let name = HeaderName::from_bytes(h.name.as_bytes());
            let value = HeaderValue::from_str(&h.value);
            match (name, value) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => {
                    return Err(Denial::new(Status::internal(format!(
                        "routing stage set an illegal header `{}`",
                        h.name
                    ))))
                }
            }
        }
        Ok(Route { tunnel, headers })
    }

    /// Phase 7: record the outcome (after audit stages decided to keep, redact or
    /// drop it). Audit stages are usually fail-open; a fail-closed one that fails is
    /// logged, since the response has already gone.
    pub async fn audit(mut self, ctx: &RequestCtx, outcome: &Outcome) {
        if let Some(trail) = self.trail.take() {
            trail
                .completed(outcome.code, outcome.failure.as_ref())
                .await;
        }
        let mut event = AuditEvent {
            request_id: ctx.audit_id.clone(),
            phase: AuditPhase::ResponseComplete,
            timestamp_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            role: self.head.role,
            method: self.head.method.clone(),
            path: self.head.path.clone(),
            query: self.head.query.clone(),
            headers: headers::masked(&self.head.headers, self.credential_headers()),
            client_addr: self.head.client_addr.clone(),
            principal: self.principal.clone(),
            impersonated: self.impersonated.clone(),
            route: outcome.tunnel.map(|t| plugin::RouteTarget {
                cluster: ctx.cluster.clone(),
                endpoint: endpoint_name(t),
            }),
            status: outcome.code,
            latency_us: ctx.received.elapsed().as_micros() as u64,
            message: outcome
                .failure
                .as_ref()
                .map(|s| s.message.clone())
                .unwrap_or_default(),
        };
        if let Some(chain) = &self.chain {
            match chain.audit(event).await {
                Ok(Some(kept)) => event = kept,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(audit_id = %ctx.audit_id, error = %e, "audit stage failed");
                    return;
                }
            }
        }
        tracing::info!(
            target: "hawser::access",
            role = %event.role,
            cluster = %ctx.cluster,
            audit_id = %event.request_id,
            method = %event.method,
            path = %event.path,
            verb = %ctx.info.verb,
            user = event.principal.as_ref().map(|p| p.user.as_str()).unwrap_or(""),
            impersonated = event.impersonated.as_ref().map(|p| p.user.as_str()).unwrap_or(""),
            code = event.status,
            tunnel = ?outcome.tunnel,
            latency_us = event.latency_us,
            message = %event.message,
            "request"
        );
    }
}

/// What the routing phase decided.
#[derive(Debug, Default)]
pub struct Route {
    /// The chosen tunnel; `None` keeps round-robin.
    pub tunnel: Option<u64>,
    /// Headers to add to the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The endpoint name routing stages see for a tunnel.
pub fn endpoint_name(tunnel: u64) -> String {
    format!("tunnel-{tunnel}")
}
