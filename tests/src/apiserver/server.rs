//! Listener, connection serving and the filter chain: audit init,
//! authentication, impersonation, authorization, then routing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::audit::AuditCtx;
use super::auth;
use super::body::Body;
use super::rbac::{self, Attributes};
use super::requestinfo::{self, RequestInfo};
use super::state::Shared;
use super::status::{status_response, Status};
use super::{
    discovery, exec, logs, pods, portforward, reviews, upgrade, watch, RecordedRequest, UserInfo,
};

/// Binds `127.0.0.1:0` and serves until `shared.shutdown` is cancelled.
pub(crate) async fn spawn(
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let token = shared.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = token.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let serve = async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, remote, req).await) }
                    });
                    // HTTP/1.1 and HTTP/2 (by preface); upgrades on HTTP/1.1.
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                };
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = serve => {}
                }
            });
        }
    });
    Ok(addr)
}

/// Everything a handler needs about the request being served.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub info: RequestInfo,
    pub query: String,
    /// The request's `Accept` header, for content negotiation.
    pub accept: Option<String>,
    /// The effective (possibly impersonated) user.
    pub user: UserInfo,
    pub audit: Arc<AuditCtx>,
    /// Held by long-running responses for as long as they stream; the last
    /// clone dropped emits the `ResponseComplete` audit event.
    pub completion: Arc<Completion>,
}

/// Emits `ResponseComplete` for a long-running request when dropped.
pub(crate) struct Completion {
    audit: Arc<AuditCtx>,
    code: AtomicU16,
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.audit
            .emit("ResponseComplete", Some(self.code.load(Ordering::SeqCst)));
    }
}

async fn handle(
    shared: Arc<Shared>,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let idx = shared.record(RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers,
        user: None,
        authenticated_user: None,
        status: 0,
    });

    // WithAuditInit: reuse the caller's Audit-ID, else mint one.
    let audit_id = req
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let info = requestinfo::parse(&method, &path, &query);
    let request_uri = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let audit = Arc::new(AuditCtx::new(
        shared.clone(),
        audit_id.clone(),
        request_uri,
        &info,
        req.headers(),
        remote,
    ));

    let mut resp = filter_chain(&shared, idx, info, query, audit, &mut req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        h.insert("audit-id", v);
    }
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    shared.record_status(idx, resp.status().as_u16());
    resp
}

/// A Status error response, also recorded as the audit `responseStatus`.
fn fail(audit: &AuditCtx, status: &Status) -> Response<Body> {
    audit.set_response_status(status.audit_value());
    status_response(status)
}

/// `getAuthMethods` of the failed-authentication audit filter.
fn auth_methods(req: &Request<Incoming>) -> String {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_string();
    let parts: Vec<&str> = auth.split(' ').collect();
    let mut methods = Vec::new();
    if parts.len() > 1 && parts[0].eq_ignore_ascii_case("basic") {
        methods.push("basic");
    }
    if parts.len() > 1 && parts[0].eq_ignore_ascii_case("bearer") {
        methods.push("bearer");
    }
    if methods.is_empty() {
        "Authentication failed, no credentials provided".to_string()
    } else {
        format!("Authentication failed, attempted: {}", methods.join(", "))
    }
}

async fn filter_chain(
    shared: &Arc<Shared>,
    idx: usize,
    info: RequestInfo,
    query: String,
    audit: Arc<AuditCtx>,
    req: &mut Request<Incoming>,
) -> Response<Body> {
    // Authentication. Failures are audited once, at ResponseStarted, by
    // WithFailedAuthenticationAudit.
    let Some(authn) = auth::authenticate(req.headers(), &shared.cfg.tokens) else {
        audit.set_response_status(json!({"metadata": {}, "message": auth_methods(req)}));
        audit.emit("ResponseStarted", Some(401));
        return status_response(&Status::unauthorized());
    };
    shared.record_users(idx, Some(authn.clone()), Some(authn.clone()));
    audit.set_user(&authn);
    audit.emit("RequestReceived", None);

    let long_running = info.is_long_running();
    let completion = Arc::new(Completion {
        audit: audit.clone(),
        code: AtomicU16::new(0),
    });
    let resp = authorized_chain(
        shared,
        idx,
        info,
        query,
        authn,
        audit.clone(),
        completion.clone(),
        req,
    )
    .await;
    let code = resp.status().as_u16();
    completion.code.store(code, Ordering::SeqCst);
    if long_running {
        audit.emit("ResponseStarted", Some(code));
    }
    // Streaming tasks of long-running responses hold clones and the last one
    // dropped emits ResponseComplete; otherwise this drop emits it now.
    drop(completion);
    resp
}

#[allow(clippy::too_many_arguments)]
async fn authorized_chain(
    shared: &Arc<Shared>,
    idx: usize,
    info: RequestInfo,
    query: String,
    authn: UserInfo,
    audit: Arc<AuditCtx>,
    completion: Arc<Completion>,
    req: &mut Request<Incoming>,
) -> Response<Body> {
    // Impersonation, inside the audit filter like the real chain.
    let user = match auth::impersonate(req.headers(), &authn, &shared.cfg.rules) {
        Ok(Some(imp)) => {
            audit.set_impersonated(&imp);
            shared.record_users(idx, Some(authn.clone()), Some(imp.clone()));
            imp
        }
        Ok(None) => authn,
        Err(status) => return fail(&audit, &status),
    };

    // Authorization of the effective user.
    let attrs = Attributes::from_request_info(&info);
    match rbac::authorize(&user, &attrs, &shared.cfg.rules) {
        Some(reason) => {
            audit.annotate("authorization.k8s.io/decision", "allow");
            audit.annotate("authorization.k8s.io/reason", &reason);
        }
        None => {
            audit.annotate("authorization.k8s.io/decision", "forbid");
            audit.annotate("authorization.k8s.io/reason", "");
            let mut resp = fail(&audit, &rbac::forbidden(&user, &attrs, ""));
            resp.headers_mut().insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            return resp;
        }
    }

    if let Some(delay) = shared.cfg.response_delay {
        if !info.is_long_running() && info.path.ends_with("/slow") {
            tokio::time::sleep(delay).await;
        }
    }

    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ctx = Ctx {
        shared: shared.clone(),
        info,
        query,
        accept,
        user,
        audit,
        completion,
    };
    let resp = route(&ctx, req).await;
    if let Err(status) = &resp {
        ctx.audit.set_response_status(status.audit_value());
    }
    resp.unwrap_or_else(|status| status_response(&status))
}

/// Dispatches an authorized request to its handler.
async fn route(ctx: &Ctx, req: &mut Request<Incoming>) -> Result<Response<Body>, Status> {
    let info = &ctx.info;
    let method = req.method().clone();
    if !info.is_resource_request {
        if method != Method::GET && method != Method::HEAD {
            return Err(Status::method_not_allowed());
        }
        return discovery::serve(ctx, &info.path);
    }
    if info.api_prefix == "apis" {
        let gvr = (
            info.api_group.as_str(),
            info.api_version.as_str(),
            info.resource.as_str(),
        );
        return match (gvr, info.parts.len(), method == Method::POST) {
            (("authentication.k8s.io", "v1", "selfsubjectreviews"), 1, true) => {
                reviews::whoami(ctx, req).await
            }
            (("authorization.k8s.io", "v1", "selfsubjectaccessreviews"), 1, true) => {
                reviews::can_i(ctx, req).await
            }
            _ => Err(Status::path_not_found()),
        };
    }
    if info.api_version != "v1" {
        return Err(Status::path_not_found());
    }
    let read_only = method == Method::GET || method == Method::HEAD;
    match (info.resource.as_str(), info.parts.len()) {
        ("pods", 1) if read_only => {
            if info.verb == "watch" {
                watch::serve(ctx)
            } else {
                pods::list(ctx)
            }
        }
        ("pods", 2) if read_only => pods::get(ctx),
        ("pods", n) if n >= 3 && info.subresource == "proxy" => pods::proxy(ctx).await,
        ("pods", 3) => match info.subresource.as_str() {
            "log" if read_only => logs::serve(ctx),
            "exec" | "attach" if method == Method::GET || method == Method::POST => {
                upgrade::drain_body(req).await?;
                exec::serve(ctx, req)
            }
            "portforward" if method == Method::GET || method == Method::POST => {
                upgrade::drain_body(req).await?;
                portforward::serve(ctx, req)
            }
            "log" | "exec" | "attach" | "portforward" => Err(Status::method_not_allowed()),
            _ => Err(Status::path_not_found()),
        },
        ("namespaces", 1 | 2) if read_only => pods::namespaces(ctx),
        ("pods" | "namespaces", _) => Err(Status::method_not_allowed()),
        _ => Err(Status::path_not_found()),
    }
}
