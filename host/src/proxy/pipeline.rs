//! The phases of one role ([`Pipeline`]): the plugin chain, if any, the audit log,
//! and the work requests leave running. Each request starts its [`Phases`] here.

use super::audit_trail::AuditTrail;
use super::headers;
use super::lifecycle::{Phases, RequestCtx};
use crate::audit::AuditLog;
use crate::plugin::{PluginHost, RequestHead, Role};
use http::HeaderMap;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// The phases of one role, with or without a plugin chain.
#[derive(Clone)]
pub struct Pipeline {
    role: Role,
    plugins: Option<Arc<PluginHost>>,
    /// Forward requests although no credential stage verified a user
    /// (`allow_unauthenticated`); otherwise they are refused with 401.
    allow_unauthenticated: bool,
    audit: Option<AuditLog>,
    /// Work requests leave running after their response head (upgraded sessions,
    /// phase 7 once a body ends), so shutdown can wait for it.
    tasks: TaskTracker,
}

impl Pipeline {
    /// No plugins: round-robin over live tunnels, access log only, and every request
    /// refused with 401 (there is no credential check) unless
    /// [`Pipeline::allow_unauthenticated`] says otherwise.
    pub fn builtin(role: Role) -> Pipeline {
        Pipeline {
            role,
            plugins: None,
            allow_unauthenticated: false,
            audit: None,
            tasks: TaskTracker::new(),
        }
    }

    /// Phases backed by a hot-swappable plugin chain.
    pub fn with_plugins(role: Role, plugins: Arc<PluginHost>) -> Pipeline {
        Pipeline {
            role,
            plugins: Some(plugins),
            allow_unauthenticated: false,
            audit: None,
            tasks: TaskTracker::new(),
        }
    }

    /// Forwards requests when the chain has no credential stage (none is configured,
    /// or a reload removed it): the hub with no verified user, the agent under its own
    /// credential. Without this they are refused with kube-apiserver's 401.
    pub fn allow_unauthenticated(mut self, allow: bool) -> Pipeline {
        self.allow_unauthenticated = allow;
        self
    }

    /// Adds Kubernetes audit events written to `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Pipeline {
        self.audit = Some(log);
        self
    }

    /// The background work of requests (see [`Phases::tasks`]); at shutdown, close it
    /// and wait, after the listeners stopped and before the audit log is flushed.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The audit log, if any (for metrics and draining at shutdown).
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The plugin host, if any (for admin routes).
    pub fn plugins(&self) -> Option<&Arc<PluginHost>> {
        self.plugins.as_ref()
    }

    /// Starts one request's phases on the chain version current now.
    pub fn start(&self, ctx: &RequestCtx, method: &http::Method, headers: &HeaderMap) -> Phases {
        let (path, query) = match ctx.path_and_query.split_once('?') {
            Some((p, q)) => (p, q.to_string()),
            None => (ctx.path_and_query.as_str(), String::new()),
        };
        // Plugins see the path as the API server will read it.
        let path = super::request_info::decoded_path(path).into_owned();
        let chain = self.plugins.as_ref().map(|p| p.chain());
        let head = RequestHead {
            role: self.role,
            request_id: ctx.audit_id.clone(),
            method: method.as_str().to_string(),
            path,
            query,
            // Copied only when stages will read them, and only those they declared.
            headers: match &chain {
                Some(chain) => headers::for_plugins(headers, chain.request_headers()),
                None => Vec::new(),
            },
            client_addr: ctx.peer.to_string(),
            cluster: ctx.cluster.clone(),
        };
        let trail = self
            .audit
            .clone()
            .map(|log| AuditTrail::new(log, ctx, headers));
        Phases::new(
            chain,
            head,
            self.allow_unauthenticated,
            trail,
            self.tasks.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_info::RequestInfo;

    fn ctx() -> RequestCtx {
        let path = "/api/v1/namespaces/default/pods";
        RequestCtx {
            role: Role::Hub,
            cluster: "eu1".into(),
            audit_id: "a1".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            info: RequestInfo::parse(&http::Method::GET, path, None),
            path_and_query: path.into(),
            received: std::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn without_a_credential_stage_requests_are_refused_unless_allowed() {
        let (get, headers) = (http::Method::GET, HeaderMap::new());
        let mut phases = Pipeline::builtin(Role::Hub).start(&ctx(), &get, &headers);
        let denial = phases.credential().await.unwrap_err();
        let response = denial.into_response();
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);

        let allowed = Pipeline::builtin(Role::Hub).allow_unauthenticated(true);
        let mut phases = allowed.start(&ctx(), &get, &headers);
        assert!(phases.credential().await.is_ok());
        assert!(phases.principal().is_none());
    }
}
