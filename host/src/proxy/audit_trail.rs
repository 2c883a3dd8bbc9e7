//! Kubernetes audit events for one request, as the lifecycle's audit phase writes
//! them: `RequestReceived` once the caller is known, `ResponseStarted` for
//! long-running requests, `ResponseComplete` when the response (or the upgraded
//! stream) ends. `user` is the authenticated principal and `impersonatedUser` the
//! identity the agent impersonates; the `Audit-ID` joins hub, agent and API server.

use super::lifecycle::{Denial, RequestCtx, Role};
use super::request_info::RequestInfo;
use super::status::Status;
use crate::audit::{
    source_ips, Attributes, AuditLog, EventContext, MicroTime, ObjectReference, RequestAudit,
    ResponseStatus, Stage, UserInfo, ANNOTATION_CLUSTER, ANNOTATION_ROLE,
};
use crate::plugin::Principal;
use http::HeaderMap;
use std::collections::BTreeMap;

/// The audit state of one request.
pub struct AuditTrail {
    log: AuditLog,
    seed: EventContext,
    info: RequestInfo,
    path: String,
    request: Option<RequestAudit>,
}

/// kube-apiserver's name for a caller no stage identified.
fn anonymous() -> UserInfo {
    UserInfo {
        username: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
        ..UserInfo::default()
    }
}

/// A plugin principal as a Kubernetes `UserInfo`.
pub fn user_info(p: &Principal) -> UserInfo {
    UserInfo {
        username: p.user.clone(),
        uid: p.uid.clone(),
        groups: p.groups.clone(),
        extra: p
            .extra
            .iter()
            .map(|e| (e.key.clone(), e.values.clone()))
            .collect(),
    }
}

impl AuditTrail {
    /// Starts the trail when the request arrives.
    pub fn new(log: AuditLog, ctx: &RequestCtx, headers: &HeaderMap) -> AuditTrail {
        let mut annotations = BTreeMap::new();
        let role = match ctx.role {
            Role::Hub => "hub",
            Role::Agent => "agent",
        };
        annotations.insert(ANNOTATION_ROLE.to_string(), role.to_string());
        annotations.insert(ANNOTATION_CLUSTER.to_string(), ctx.cluster.clone());
        let seed = EventContext {
            audit_id: ctx.audit_id.clone(),
            request_uri: ctx.path_and_query.clone(),
            verb: ctx.info.verb.clone(),
            user: anonymous(),
            impersonated_user: None,
            source_ips: source_ips(headers, ctx.peer.ip()),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            object_ref: ObjectReference::from_request_info(&ctx.info),
            request_received: MicroTime::now(),
            annotations,
        };
        // Policy rules (`nonResourceURLs`) match the path as the API server reads it.
        let raw_path = ctx.path_and_query.split('?').next().unwrap_or("/");
        let path = super::request_info::decoded_path(raw_path).into_owned();
        AuditTrail {
            log,
            seed,
            info: ctx.info.clone(),
            path,
            request: None,
        }
    }

    fn decide(&mut self, user: UserInfo) -> &mut RequestAudit {
        let mut ctx = self.seed.clone();
        ctx.user = user;
        let request = {
            let attrs = Attributes::from_request(&self.info, &self.path, &ctx.user);
            RequestAudit::new(ctx.clone(), self.log.policy(), &attrs)
        };
        self.request.insert(request)
    }

    /// The caller is known: records `RequestReceived`. An error means the event could
    /// not be written and the sink is fail-closed: the request is refused.
    pub async fn received(&mut self, principal: Option<&Principal>) -> Result<(), Denial> {
        let user = principal.map(user_info).unwrap_or_else(anonymous);
        let log = self.log.clone();
        let request = self.decide(user);
        request.record(&log, Stage::RequestReceived, None).await.map_err(|e| {
            tracing::error!(error = %e, "audit event could not be written; refusing the request");
            Denial::new(e.status())
        })
    }

    /// The identity the API server will act as.
    pub fn impersonating(&mut self, who: &Principal) {
        if let Some(r) = self.request.as_mut() {
            r.ctx.impersonated_user = Some(user_info(who));
        }
    }

    /// Response headers are out: `ResponseStarted` for long-running requests.
    pub async fn started(&mut self, code: u16) -> Result<(), Denial> {
        let log = self.log.clone();
        let Some(request) = self.request.as_ref() else {
            return Ok(());
        };
        if !self.info.is_long_running() {
            return Ok(());
        }
        request
            .record(
                &log,
                Stage::ResponseStarted,
                Some(ResponseStatus::code(code)),
            )
            .await
            .map_err(|e| Denial::new(e.status()))
    }

    /// The response ended: `ResponseComplete` (the request was already answered, so
    /// a write failure is logged, not returned).
    pub async fn completed(mut self, code: u16, failure: Option<&Status>) {
        if self.request.is_none() {
            // Refused before the caller was known (for example a 401).
            self.decide(anonymous());
        }
        let Some(request) = self.request.as_ref() else {
            return;
        };
        let status = match failure {
            Some(s) => ResponseStatus::from_status(s),
            None => ResponseStatus::code(code),
        };
        if let Err(e) = request
            .record(&self.log, Stage::ResponseComplete, Some(status))
            .await
        {
            tracing::error!(audit_id = %self.seed.audit_id, error = %e, "ResponseComplete audit event lost");
        }
    }
}
