//! The agent's side of the lifecycle: requests arriving through the tunnel are
//! checked, given the agent's own credential and forwarded to the API server.

use super::body::{boxed, empty, Body};
use super::headers::{self, TUNNEL_UPGRADE, TUNNEL_UPGRADED};
use super::lifecycle::{Denial, Outcome, RequestCtx, Role, Stages};
use super::request_info::RequestInfo;
use super::status::Status;
use super::upgrade;
use crate::upstream::Upstream;
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
    stages: Arc<dyn Stages>,
}

impl Forwarder {
    /// A forwarder for `cluster` that reaches the API server through `upstream`.
    pub fn new(cluster: String, upstream: Upstream, stages: Arc<dyn Stages>) -> Forwarder {
        Forwarder { inner: Arc::new(Inner { cluster, upstream, stages }) }
    }

    /// Runs the agent's phases for one request from the hub.
    pub async fn handle(&self, hub: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let received = Instant::now();
        match self.forward(hub, req, received).await {
            Ok(resp) => resp,
            Err(denial) => denial.into_response(),
        }
    }

    async fn forward(&self, hub: SocketAddr, req: Request<Incoming>, received: Instant) -> Result<Response<Body>, Denial> {
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
        let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let info = RequestInfo::parse(req.method(), req.uri().path(), req.uri().query());
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.headers.remove(TUNNEL_UPGRADE);
        headers::strip_internal(&mut parts.headers);
        headers::remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        let audit_id = headers::ensure_audit_id(&mut parts.headers);
        let mut ctx = RequestCtx {
            role: Role::Agent,
            cluster: me.cluster.clone(),
            audit_id: audit_id.to_str().unwrap_or_default().to_string(),
            peer: hub,
            info,
            path_and_query,
            received,
        };

        // Phase 2: credential, checked again here so a forged identity from anyone
        // without the issuer's key is refused even if the hub was compromised.
        me.stages.credential(&mut ctx, &parts)?;

        // Phase 3: impersonate. Nothing the caller sent may claim an identity.
        headers::strip_identity(&mut parts.headers);
        let impersonation = me.stages.impersonate(&ctx)?;
        for (name, value) in &impersonation {
            if !name.as_str().starts_with("impersonate-") {
                return Err(self.fail(&ctx, Status::internal(format!("impersonation stage set header `{name}`, which it may not"))));
            }
            parts.headers.append(name.clone(), value.clone());
        }

        // Phase 5: forward with the agent's own credential.
        let own = me
            .upstream
            .authorization()
            .map_err(|e| self.fail(&ctx, Status::internal(format!("agent credential unavailable: {e}"))))?;
        if let Some(own) = &own {
            parts.headers.insert(header::AUTHORIZATION, own.clone());
        }
        if let Err(reason) = verify_identity_headers(&parts.headers, own.as_ref(), &impersonation) {
            return Err(self.fail(&ctx, Status::internal(format!("refusing to forward: {reason}"))));
        }
        let uri = me
            .upstream
            .uri(&ctx.path_and_query)
            .map_err(|e| self.fail(&ctx, Status::bad_request(e.to_string())))?;
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
        let out = out
            .body(out_body)
            .map_err(|e| self.fail(&ctx, Status::bad_request(format!("cannot forward request: {e}"))))?;
        let mut resp = me.upstream.send(out).await.map_err(|e| {
            tracing::warn!(error = %e, audit_id = %ctx.audit_id, "API server request failed");
            self.fail(&ctx, Status::unavailable(format!("cluster \"{}\": {e}", me.cluster)))
        })?;

        // Phase 6: respond.
        let code = resp.status();
        let mut result = match tunnel_in {
            Some(tunnel_in) if code == StatusCode::SWITCHING_PROTOCOLS => {
                let on_upgrade = hyper::upgrade::on(&mut resp);
                let (mut rparts, _) = resp.into_parts();
                let protocol = rparts.headers.get(header::UPGRADE).cloned();
                headers::remove_hop_by_hop(&mut rparts.headers);
                rparts.status = StatusCode::OK;
                rparts.headers.insert(TUNNEL_UPGRADED, HeaderValue::from_static("101"));
                if let Some(p) = protocol {
                    rparts.headers.insert(TUNNEL_UPGRADE, p);
                }
                let (tx, relay) = upgrade::relay_body();
                let span = tracing::info_span!("upgraded", audit_id = %ctx.audit_id);
                tokio::spawn(
                    async move {
                        match on_upgrade.await {
                            Ok(upgraded) => upgrade::splice(upgraded, tunnel_in, tx).await,
                            Err(e) => tracing::warn!(error = %e, "API server upgrade failed"),
                        }
                    }
                    .instrument(span),
                );
                Response::from_parts(rparts, relay)
            }
            _ => {
                let (mut rparts, rbody) = resp.into_parts();
                headers::remove_hop_by_hop(&mut rparts.headers);
                Response::from_parts(rparts, boxed(rbody))
            }
        };
        result.headers_mut().entry(headers::AUDIT_ID).or_insert(audit_id);
        me.stages.audit(&ctx, &Outcome { code: code.as_u16(), tunnel: None });
        Ok(result)
    }

    fn fail(&self, ctx: &RequestCtx, status: Status) -> Denial {
        self.inner.stages.audit(ctx, &Outcome { code: status.code, tunnel: None });
        Denial::new(status)
    }
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
        if n.starts_with("impersonate-") && !impersonation.iter().any(|(k, v)| k == name && v == value) {
            return Err(format!("header `{n}` was not set by the impersonation stage"));
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
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer client"));
        assert!(verify_identity_headers(&h, Some(&own), &[]).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, own.clone());
        h.insert("impersonate-user", HeaderValue::from_static("root"));
        assert!(verify_identity_headers(&h, Some(&own), &[]).is_err());
        let stage = [(HeaderName::from_static("impersonate-user"), HeaderValue::from_static("root"))];
        assert!(verify_identity_headers(&h, Some(&own), &stage).is_ok());
        h.insert("x-remote-user", HeaderValue::from_static("root"));
        assert!(verify_identity_headers(&h, Some(&own), &stage).is_err());
    }
}
