//! [`RequestAudit`]: the stages of one request, built from one context and one
//! policy decision, so RequestReceived, ResponseStarted and ResponseComplete carry
//! the same `auditID` and received timestamp.

use super::events::{event_for, Event, EventContext, Level, ResponseStatus, Stage};
use super::policy::{Attributes, Policy, StageSet};
use super::sink::AuditLog;
use super::AuditError;

/// The audit state of one request: its context and the policy's decision. Each
/// stage becomes an event with the same `auditID`.
#[derive(Debug, Clone)]
pub struct RequestAudit {
    /// Fields shared by every stage; the proxy may fill in `impersonated_user` and
    /// annotations as phases decide them.
    pub ctx: EventContext,
    level: Level,
    omit: StageSet,
    request_object: Option<serde_json::Value>,
    response_object: Option<serde_json::Value>,
}

impl RequestAudit {
    /// Evaluates `policy` for `attrs` and keeps the decision for every stage.
    pub fn new(ctx: EventContext, policy: &Policy, attrs: &Attributes<'_>) -> RequestAudit {
        let (level, omit) = policy.level_for(attrs);
        RequestAudit::with_decision(ctx, level, omit)
    }

    /// A request whose level and omitted stages are already decided.
    pub fn with_decision(ctx: EventContext, level: Level, omit: StageSet) -> RequestAudit {
        RequestAudit {
            ctx,
            level,
            omit,
            request_object: None,
            response_object: None,
        }
    }

    /// The level chosen for this request.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Keeps the request body; ignored below level Request, so callers need not
    /// check (and should not parse bodies when `level() < Request`).
    pub fn set_request_object(&mut self, body: serde_json::Value) {
        if self.level >= Level::Request {
            self.request_object = Some(body);
        }
    }

    /// Keeps the response body; ignored below level RequestResponse.
    pub fn set_response_object(&mut self, body: serde_json::Value) {
        if self.level >= Level::RequestResponse {
            self.response_object = Some(body);
        }
    }

    /// The event for `stage`, or `None` when the level is None or the stage omitted.
    /// Bodies are attached from ResponseStarted on, as kube-apiserver only has them
    /// once the handler has run.
    pub fn event(&self, stage: Stage, response: Option<ResponseStatus>) -> Option<Event> {
        if self.level == Level::None || self.omit.contains(stage) {
            return None;
        }
        let mut event = event_for(stage, self.level, &self.ctx, response);
        if stage != Stage::RequestReceived {
            event.request_object = self.request_object.clone();
            if stage != Stage::ResponseStarted {
                event.response_object = self.response_object.clone();
            }
        }
        Some(event)
    }

    /// Records `stage` into `log` (a no-op when the stage is not audited). An error
    /// means the event was not recorded: refuse the request with
    /// [`AuditError::status`]. For an audited request whose policy omits
    /// `RequestReceived`, that stage still checks that the sinks can take its later
    /// events ([`AuditLog::admit`]), so fail-closed refuses before forwarding.
    pub async fn record(
        &self,
        log: &AuditLog,
        stage: Stage,
        response: Option<ResponseStatus>,
    ) -> Result<(), AuditError> {
        match self.event(stage, response) {
            Some(event) => log.record(event).await,
            None if stage == Stage::RequestReceived && self.level != Level::None => log.admit(),
            None => Ok(()),
        }
    }
}
