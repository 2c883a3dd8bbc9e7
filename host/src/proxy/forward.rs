//! The agent's side of the lifecycle: requests arriving through the tunnel are
//! checked, given the agent's own credential and forwarded to the API server.

use super::body::{boxed, empty, Body};
use super::headers::{self, TUNNEL_AS_GROUP, TUNNEL_AS_USER, TUNNEL_UPGRADE, TUNNEL_UPGRADED};
use super::lifecycle::{Denial, Outcome, Phases, Pipeline, RequestCtx, Role};
use super::request_info::RequestInfo;
use super::status::Status;
use super::upgrade;
use crate::access::{AccessPolicy, ClientImpersonation};
use crate::plugin::Principal;
use crate::upstream::{Upstream, UpstreamError};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Handles the hub's requests on every tunnel of this agent.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    upstream: Upstream,
    pipeline: Pipeline,
    access: Option<AccessPolicy>,
}

impl Forwarder {
    /// A forwarder for `cluster` that reaches the API server through `upstream`.
    pub fn new(
        cluster: String,
        upstream: Upstream,
        pipeline: Pipeline,
        access: Option<AccessPolicy>,
    ) -> Forwarder {
        Forwarder {
            inner: Arc::new(Inner {
                cluster,
                upstream,
                pipeline,
                access,
            }),
        }
    }

    /// Runs the agent's phases for one request from the hub.
    pub async fn handle(&self, hub: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let received = Instant::now();
        match self.forward(hub, req, received).await {
            Ok(resp) => resp,
            Err(denial) => denial.into_response(),
        }
    }

    async fn forward(
        &self,
        hub: SocketAddr,
        req: Request<Incoming>,
        received: Instant,
    ) -> Result<Response<Body>, Denial> {
        let me = &self.inner;
        // Phase 1: receive. The hub addresses requests to the cluster it believes
        // this tunnel serves; anything else is a routing bug and is refused.
        if req.uri().host() != Some(me.cluster.as_str()) {
            return Err(Denial::new(Status::new(
                StatusCode::MISDIRECTED_REQUEST,
                "BadRequest",
                format!("this agent serves cluster \"{}\"", me.cluster),
            )));
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let info = RequestInfo::parse(req.method(), req.uri().path(), req.uri().query());
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.headers.remove(TUNNEL_UPGRADE);
        // A client impersonation request the hub's policy allowed; checked again below.
        let asked = headers::client_impersonation(&parts.headers, TUNNEL_AS_USER, TUNNEL_AS_GROUP)
            .map_err(|e| Denial::new(Status::bad_request(e)))?;
        headers::strip_internal(&mut parts.headers);
        headers::remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        let audit_id = headers::ensure_audit_id(&mut parts.headers);
        let ctx = RequestCtx {
            role: Role::Agent,
            cluster: me.cluster.clone(),
            audit_id: audit_id.to_str().unwrap_or_default().to_string(),
            peer: hub,
            info,
            path_and_query,
            received,
        };
        let mut phases = me.pipeline.start(&ctx, &parts.method, &parts.headers);

        // Phase 2: credential, checked again here so a forged identity from anyone
        // without the issuer's key is refused even if the hub was compromised.
        if let Err(denial) = phases.credential().await {
            return Err(finish(phases, ctx, denial));
        }

        // Phase 2b: the access policy again, with this agent's own copy.
        let as_identity = match authorize(me.access.as_ref(), &phases, &me.cluster, &asked) {
            Ok(identity) => identity,
            Err(denial) => return Err(finish(phases, ctx, denial)),
        };

        // Phase 3: impersonate. Nothing the caller sent may claim an identity, and the
        // caller's credential, wherever a plugin found it, stays here.
        headers::strip_identity(&mut parts.headers);
        for name in phases.credential_headers() {
            parts.headers.remove(name.as_str());
        }
        let impersonation = match phases.impersonate(as_identity).await {
            Ok(lines) => lines,
            Err(denial) => return Err(finish(phases, ctx, denial)),
        };
        for (name, value) in &impersonation {
            parts.headers.append(name.clone(), value.clone());
        }

        // Phase 5: forward with the agent's own credential.
        let own = match me.upstream.authorization() {
            Ok(own) => own,
            Err(e) => {
                return Err(finish(
                    phases,
                    ctx,
                    Status::internal(format!("agent credential unavailable: {e}")).into(),
                ))
            }
        };
        if let Some(own) = &own {
            parts.headers.insert(header::AUTHORIZATION, own.clone());
        }
        if let Err(reason) = verify_identity_headers(&parts.headers, own.as_ref(), &impersonation) {
            return Err(finish(
                phases,
                ctx,
                Status::internal(format!("refusing to forward: {reason}")).into(),
            ));
        }
        let uri = match me.upstream.uri(&ctx.path_and_query) {
            Ok(uri) => uri,
            Err(e) => {
                return Err(finish(
                    phases,
                    ctx,
                    Status::bad_request(e.to_string()).into(),
                ))
            }
        };
        let mut out = Request::builder().method(parts.method).uri(uri);
        if let Some(h) = out.headers_mut() {
            *h = parts.headers;
            if let Some(up) = &upgrade {
                h.remove(header::CONTENT_LENGTH);
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                h.insert(header::UPGRADE, up.clone());
            }
        }
        let (out_body, tunnel_in) = match upgrade {
            Some(_) => (empty(), Some(body)),
            None => (boxed(body), None),
        };
        let out = match out.body(out_body) {
            Ok(out) => out,
            Err(e) => {
                return Err(finish(
                    phases,
                    ctx,
                    Status::bad_request(format!("cannot forward request: {e}")).into(),
                ))
            }
        };
        let mut resp = match me.upstream.send(out).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(error = %e, audit_id = %ctx.audit_id, "API server request failed");
                let message = format!("cluster \"{}\": {e}", me.cluster);
                let status = match e {
                    UpstreamError::NoResponseHead(_) => {
                        Status::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
                    }
                    _ => Status::unavailable(message),
                };
                return Err(finish(phases, ctx, status.into()));
            }
        };

        // Phase 6: respond. Internal headers in the answer come from the API server or
        // whatever it proxies to (a pod, a service): only the agent may set them.
        headers::strip_internal(resp.headers_mut());
        let code = resp.status();
        if let Err(denial) = phases.response_started(code.as_u16()).await {
            return Err(finish(phases, ctx, denial));
        }
        let span = tracing::info_span!("respond", audit_id = %ctx.audit_id);
        let outcome = Outcome::code(code.as_u16(), None);
        let mut result = match tunnel_in {
            Some(tunnel_in) if code == StatusCode::SWITCHING_PROTOCOLS => {
                let on_upgrade = hyper::upgrade::on(&mut resp);
                let (mut rparts, _) = resp.into_parts();
                let protocol = rparts.headers.get(header::UPGRADE).cloned();
                headers::remove_hop_by_hop(&mut rparts.headers);
                rparts.status = StatusCode::OK;
                rparts
                    .headers
                    .insert(TUNNEL_UPGRADED, HeaderValue::from_static("101"));
                if let Some(p) = protocol {
                    rparts.headers.insert(TUNNEL_UPGRADE, p);
                }
                let (tx, relay) = upgrade::relay_body();
                phases.tasks().spawn(
                    async move {
                        match on_upgrade.await {
                            Ok(upgraded) => upgrade::splice(upgraded, tunnel_in, tx).await,
                            Err(e) => tracing::warn!(error = %e, "API server upgrade failed"),
                        }
                        phases.audit(&ctx, &outcome).await;
                    }
                    .instrument(span),
                );
                Response::from_parts(rparts, relay)
            }
            _ => {
                let (mut rparts, rbody) = resp.into_parts();
                headers::remove_hop_by_hop(&mut rparts.headers);
                // Phase 7 once the body has been delivered.
                let (body, ended) = super::body::on_end(boxed(rbody));
                phases.tasks().spawn(
                    async move {
                        let _ = ended.await;
                        phases.audit(&ctx, &outcome).await;
                    }
                    .instrument(span),
                );
                Response::from_parts(rparts, body)
            }
        };
        result
            .headers_mut()
            .entry(headers::AUDIT_ID)
            .or_insert(audit_id);
        Ok(result)
    }
}

/// Checks a relayed client impersonation request against the agent's policy; the
/// identity to impersonate when it is allowed.
fn authorize(
    policy: Option<&AccessPolicy>,
    phases: &Phases,
    cluster: &str,
    asked: &ClientImpersonation,
) -> Result<Option<Principal>, Denial> {
    let forbidden = |msg: String| Denial::new(Status::new(StatusCode::FORBIDDEN, "Forbidden", msg));
    let (Some(policy), Some(who)) = (policy, phases.principal()) else {
        if asked.is_empty() {
            return Ok(None);
        }
        return Err(forbidden(
            "client impersonation is not enabled on this agent".into(),
        ));
    };
    policy.check(who, cluster, asked)?;
    Ok(asked.user.as_ref().map(|user| Principal {
        user: user.clone(),
        uid: String::new(),
        groups: asked.groups.clone(),
        extra: Vec::new(),
    }))
}

/// Audits a refused request and hands back its denial.
fn finish(phases: Phases, ctx: RequestCtx, denial: Denial) -> Denial {
    phases.audit_later(ctx, Outcome::denied(&denial, None));
    denial
}

/// The last check before a request leaves for the API server (fail closed): the
/// only `Authorization` is the agent's own, the only `Impersonate-*` lines are the
/// ones the impersonation stage produced, and no `X-Remote-*` header is present.
pub fn verify_identity_headers(
    headers: &HeaderMap,
    own: Option<&HeaderValue>,
    impersonation: &[(HeaderName, HeaderValue)],
) -> Result<(), String> {
    let auth: Vec<&HeaderValue> = headers.get_all(header::AUTHORIZATION).iter().collect();
    match (own, auth.as_slice()) {
        (Some(own), [only]) if *only == own => {}
        (None, []) => {}
        _ => return Err("an Authorization header other than the agent's own survived".into()),
    }
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("x-remote-") {
            return Err(format!("header `{n}` survived"));
        }
        if n.starts_with("impersonate-")
            && !impersonation.iter().any(|(k, v)| k == name && v == value)
        {
            return Err(format!(
                "header `{n}` was not set by the impersonation stage"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_closed_check() {
        let own = HeaderValue::from_static("Bearer agent");
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, own.clone());
        assert!(verify_identity_headers(&h, Some(&own), &[]).is_ok());
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        assert!(verify_identity_headers(&h, Some(&own), &[]).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, own.clone());
        h.insert("impersonate-user", HeaderValue::from_static("root"));
        assert!(verify_identity_headers(&h, Some(&own), &[]).is_err());
        let stage = [(
            HeaderName::from_static("impersonate-user"),
            HeaderValue::from_static("root"),
        )];
        assert!(verify_identity_headers(&h, Some(&own), &stage).is_ok());
        h.insert("x-remote-user", HeaderValue::from_static("root"));
        assert!(verify_identity_headers(&h, Some(&own), &stage).is_err());
    }
}
