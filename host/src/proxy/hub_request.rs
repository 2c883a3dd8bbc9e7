//! The hub's side of one API request: the lifecycle phases of
//! [`lifecycle`](super::lifecycle) from receive to audit, one method per phase.

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::net::SocketAddr;
use std::time::Instant;
use tracing::Instrument;

use super::body::{boxed, Body, BodySender};
use super::front::Front;
use super::headers::{self, TUNNEL_AS_GROUP, TUNNEL_AS_USER, TUNNEL_UPGRADE, TUNNEL_UPGRADED};
use super::lifecycle::{endpoint_name, Denial, Outcome, Phases, RequestCtx, Role};
use super::request_info::RequestInfo;
use super::route::{self, PathError};
use super::status::Status;
use super::upgrade;
use crate::access::ClientImpersonation;
use crate::credential::{handle_refresh, REFRESH_PATH};
use crate::plugin::{Candidate, Health, Locality};
use crate::tunnel::SendError;

/// A request that passed phase 1, ready for the pluggable phases.
struct Received {
    ctx: RequestCtx,
    parts: Parts,
    body: Incoming,
    /// The `Upgrade` the client asked for (exec, attach, port-forward, watch over
    /// WebSocket), and hyper's handle on the upgraded connection.
    upgrade: Option<(HeaderValue, OnUpgrade)>,
    /// Who the client asked to be treated as (`kubectl --as`).
    asked: ClientImpersonation,
}

/// What phase 5 got back through the tunnel.
struct Forwarded {
    tunnel: u64,
    resp: Response<Incoming>,
    /// Carries the client's upgraded bytes into the tunnel stream.
    client_tx: Option<BodySender>,
}

impl Front {
    /// Phases 1 to 7 for one request; `audit_id` is set as soon as the request has one.
    pub(super) async fn proxy(
        &self,
        peer: SocketAddr,
        req: Request<Incoming>,
        received: Instant,
        audit_id: &mut Option<HeaderValue>,
    ) -> Result<Response<Body>, Denial> {
        let size = headers::block_size(req.headers());
        if size > self.cfg.max_header_bytes {
            return Err(Denial::new(Status::bad_request(format!(
                "request header block of {size} bytes exceeds the limit of {} bytes",
                self.cfg.max_header_bytes
            ))));
        }
        if let (Some(refresher), REFRESH_PATH) = (&self.refresher, req.uri().path()) {
            return Ok(handle_refresh(refresher, req).await);
        }

        // Phase 1: receive.
        let Received {
            ctx,
            mut parts,
            body,
            upgrade,
            asked,
        } = self.receive(peer, req, received, audit_id)?;
        let mut phases = self.pipeline.start(&ctx, &parts.method, &parts.headers);

        // Phase 2: credential.
        if let Err(denial) = phases.credential().await {
            return Err(finish(phases, ctx, None, denial));
        }

        // Phase 2b: the hub's access policy for this caller and cluster.
        if let Err(denial) = self.authorize(&phases, &ctx.cluster, &asked) {
            return Err(finish(phases, ctx, None, denial));
        }
        if self.access.is_some() {
            pass_client_impersonation(&asked, &mut parts.headers);
        }
        // Only now whether the cluster exists: a caller who may not reach it learns
        // nothing about which cluster names are registered (as kube-apiserver answers
        // 403 before 404).
        if self.registry.load().get(&ctx.cluster).is_none() {
            let denial = Denial::new(Status::cluster_not_found(&ctx.cluster));
            return Err(finish(phases, ctx, None, denial));
        }

        // Phase 3, impersonate, runs at the agent.
        // Phase 4: route among live tunnels; a stage may pick one, never add one.
        let order = match self
            .route(&mut phases, &ctx.cluster, &mut parts.headers)
            .await
        {
            Ok(order) => order,
            Err(denial) => return Err(finish(phases, ctx, None, denial)),
        };

        // Phase 5: forward.
        let (value, on_upgrade) = upgrade.unzip();
        let forwarded = match self
            .forward(&ctx, parts, body, value.as_ref(), &order)
            .await
        {
            Ok(forwarded) => forwarded,
            Err((tunnel, denial)) => return Err(finish(phases, ctx, tunnel, denial)),
        };

        // Phases 6 and 7: respond, then audit once the exchange is over.
        respond(phases, ctx, forwarded, value.zip(on_upgrade)).await
    }

    /// Phase 1: the cluster named in the path (whether it is registered is checked after
    /// phase 2b), request info, identity headers stripped
    /// (only the client's `Authorization` crosses, for the agent to check again),
    /// `X-Forwarded-For` and `Audit-ID`.
    fn receive(
        &self,
        peer: SocketAddr,
        mut req: Request<Incoming>,
        received: Instant,
        audit_id_out: &mut Option<HeaderValue>,
    ) -> Result<Received, Denial> {
        let path = req.uri().path().to_string();
        let target = route::split(&path).map_err(|e| match e {
            PathError::NotClusterPath => Denial::new(Status::path_not_found(&path)),
            other => Denial::new(Status::bad_request(other.to_string())),
        })?;
        let cluster = target.cluster.to_string();
        let upgrade = headers::upgrade_request(req.headers());
        if upgrade.is_some() && req.version() != Version::HTTP_11 {
            return Err(Denial::new(Status::bad_request(
                "protocol upgrades need HTTP/1.1",
            )));
        }
        let upgrade = upgrade.map(|value| (value, hyper::upgrade::on(&mut req)));
        let query = req.uri().query().map(str::to_string);
        let path_and_query = match &query {
            Some(q) => format!("{}?{q}", target.rest),
            None => target.rest.to_string(),
        };
        let info = RequestInfo::parse(req.method(), target.rest, query.as_deref());
        let (mut parts, body) = req.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::strip_internal(&mut parts.headers);
        // What the client asked to be treated as (kubectl --as); only the access
        // policy can allow it.
        let asked =
            headers::client_impersonation(&parts.headers, "impersonate-user", "impersonate-group")
                .map_err(|e| Denial::new(Status::new(StatusCode::FORBIDDEN, "Forbidden", e)))?;
        let auth = parts.headers.remove(header::AUTHORIZATION);
        headers::strip_identity(&mut parts.headers);
        if let Some(auth) = auth {
            parts.headers.insert(header::AUTHORIZATION, auth);
        }
        headers::append_forwarded_for(&mut parts.headers, peer.ip());
        let audit_id = headers::ensure_audit_id(&mut parts.headers);
        *audit_id_out = Some(audit_id.clone());
        let ctx = RequestCtx {
            role: Role::Hub,
            cluster,
            audit_id: audit_id.to_str().unwrap_or_default().to_string(),
            peer,
            info,
            path_and_query,
            received,
        };
        Ok(Received {
            ctx,
            parts,
            body,
            upgrade,
            asked,
        })
    }

    /// Phase 4: the order in which live tunnels are tried, the routing stage's choice
    /// first; its extra headers go onto the request.
    async fn route(
        &self,
        phases: &mut Phases,
        cluster: &str,
        headers: &mut HeaderMap,
    ) -> Result<Vec<u64>, Denial> {
        let live = self.pool.candidates(cluster);
        if live.is_empty() {
            let msg = format!("cluster \"{cluster}\" has no connected agent");
            return Err(Status::unavailable(msg).into());
        }
        // Routing candidates are only built for a chain that has stages to read them.
        let candidates = if phases.has_chain() {
            self.candidates(cluster, &live)
        } else {
            Vec::new()
        };
        let route = phases.route(&candidates).await?;
        for (name, value) in route.headers {
            headers.insert(name, value);
        }
        Ok(match route.tunnel {
            Some(first) => std::iter::once(first)
                .chain(live.iter().copied().filter(|id| *id != first))
                .collect(),
            None => live,
        })
    }

    /// Phase 5: sends the request through the first tunnel in `order` that takes it.
    /// A failure names the tunnel it happened on, if any.
    async fn forward(
        &self,
        ctx: &RequestCtx,
        parts: Parts,
        body: Incoming,
        upgrade: Option<&HeaderValue>,
        order: &[u64],
    ) -> Result<Forwarded, (Option<u64>, Denial)> {
        let uri = format!("http://{}{}", ctx.cluster, ctx.path_and_query);
        let mut out = Request::builder().method(parts.method).uri(uri);
        if let Some(h) = out.headers_mut() {
            *h = parts.headers;
            if let Some(up) = upgrade {
                h.insert(TUNNEL_UPGRADE, up.clone());
                // The tunnel stream's body carries the upgraded bytes, not the
                // (empty) request body a length would describe.
                h.remove(header::CONTENT_LENGTH);
            }
        }
        let (client_tx, out_body) = if upgrade.is_some() {
            let (tx, body) = upgrade::relay_body();
            (Some(tx), body)
        } else {
            (None, boxed(body))
        };
        let out = out.body(out_body).map_err(|e| {
            let msg = format!("cannot forward request: {e}");
            (None, Denial::new(Status::bad_request(msg)))
        })?;
        let send = self.pool.send(&ctx.cluster, order, out);
        let sent = if ctx.long_running() {
            send.await
        } else {
            tokio::time::timeout(self.cfg.request_timeout, send)
                .await
                .map_err(|_| (None, Status::timeout(self.cfg.request_timeout).into()))?
        };
        match sent {
            Ok((tunnel, resp)) => Ok(Forwarded {
                tunnel,
                resp,
                client_tx,
            }),
            Err(e @ SendError::NoTunnel(_)) => {
                Err((None, Status::unavailable(e.to_string()).into()))
            }
            Err(e @ SendError::Tunnel { tunnel, .. }) => {
                Err((Some(tunnel), Status::unavailable(e.to_string()).into()))
            }
        }
    }

    /// The access policy: without one, client impersonation is refused; with one,
    /// the caller must be known and allowed.
    fn authorize(
        &self,
        phases: &Phases,
        cluster: &str,
        asked: &ClientImpersonation,
    ) -> Result<(), Denial> {
        let Some(policy) = &self.access else {
            if asked.is_empty() {
                return Ok(());
            }
            let msg = "client impersonation is not enabled on this hub (no [access] policy)";
            return Err(Denial::new(Status::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                msg,
            )));
        };
        let Some(who) = phases.principal() else {
            let msg =
                format!("clusters \"{cluster}\" is forbidden: the caller is not authenticated");
            return Err(Denial::new(Status::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                msg,
            )));
        };
        policy.check(who, cluster, asked)
    }

    /// Live tunnels as routing candidates, with the cluster's registered locality.
    fn candidates(&self, cluster: &str, live: &[u64]) -> Vec<(u64, Candidate)> {
        let registry = self.registry.load();
        let record = registry.get(cluster);
        let locality = Locality {
            region: record.and_then(|r| r.region.clone()).unwrap_or_default(),
            zone: record.and_then(|r| r.zone.clone()).unwrap_or_default(),
        };
        live.iter()
            .map(|id| {
                let candidate = Candidate {
                    cluster: cluster.to_string(),
                    endpoint: endpoint_name(*id),
                    locality: locality.clone(),
                    health: Health::Healthy,
                    weight: 1,
                    in_flight: 0,
                };
                (*id, candidate)
            })
            .collect()
    }
}

/// Forwards the client's `--as` to the agent, which impersonates it after checking
/// the credential and policy again.
fn pass_client_impersonation(asked: &ClientImpersonation, headers: &mut HeaderMap) {
    let Some(user) = &asked.user else { return };
    if let Ok(v) = HeaderValue::from_str(user) {
        headers.insert(TUNNEL_AS_USER, v);
    }
    for g in &asked.groups {
        if let Ok(v) = HeaderValue::from_str(g) {
            headers.append(TUNNEL_AS_GROUP, v);
        }
    }
}

/// Phase 6: relays the API server's answer unbuffered, completing a protocol upgrade
/// when the API server switched; phase 7 runs once the body has been delivered, the
/// client has left, or the upgraded session is over.
async fn respond(
    mut phases: Phases,
    ctx: RequestCtx,
    forwarded: Forwarded,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
) -> Result<Response<Body>, Denial> {
    let Forwarded {
        tunnel,
        resp,
        client_tx,
    } = forwarded;
    let (mut rparts, rbody) = resp.into_parts();
    // The tunnel speaks HTTP/2; the client's connection decides the wire version.
    rparts.version = Version::HTTP_11;
    let switched = rparts.headers.remove(TUNNEL_UPGRADED).is_some();
    let upgrade_value = rparts.headers.remove(TUNNEL_UPGRADE);
    headers::remove_hop_by_hop(&mut rparts.headers);
    headers::strip_internal(&mut rparts.headers);
    let resp = match (switched, upgrade, client_tx) {
        (true, Some((asked, on_upgrade)), Some(client_tx)) => {
            rparts.status = StatusCode::SWITCHING_PROTOCOLS;
            rparts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            rparts
                .headers
                .insert(header::UPGRADE, upgrade_value.unwrap_or(asked));
            if let Err(denial) = phases.response_started(101).await {
                return Err(finish(phases, ctx, Some(tunnel), denial));
            }
            let span = tracing::info_span!("upgraded", cluster = %ctx.cluster, audit_id = %ctx.audit_id, tunnel);
            phases.tasks().spawn(
                async move {
                    match on_upgrade.await {
                        Ok(upgraded) => upgrade::splice(upgraded, rbody, client_tx).await,
                        Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
                    }
                    // The session is over: phase 7.
                    phases.audit(&ctx, &Outcome::code(101, Some(tunnel))).await;
                }
                .instrument(span),
            );
            return Ok(Response::from_parts(rparts, super::body::empty()));
        }
        // An upgrade the API server refused (>= 400) is relayed as is, then the
        // connection is closed, as kube-apiserver's upgrade-aware proxy does.
        (_, upgrade, _) => {
            if upgrade.is_some() {
                rparts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Response::from_parts(rparts, boxed(rbody))
        }
    };
    let code = resp.status().as_u16();
    if let Err(denial) = phases.response_started(code).await {
        return Err(finish(phases, ctx, Some(tunnel), denial));
    }
    let (parts, body) = resp.into_parts();
    let (body, ended) = super::body::on_end(body);
    let span = tracing::debug_span!("audit", audit_id = %ctx.audit_id);
    phases.tasks().spawn(
        async move {
            let _ = ended.await;
            phases.audit(&ctx, &Outcome::code(code, Some(tunnel))).await;
        }
        .instrument(span),
    );
    Ok(Response::from_parts(parts, body))
}

/// Audits a refused request and hands back its denial.
fn finish(phases: Phases, ctx: RequestCtx, tunnel: Option<u64>, denial: Denial) -> Denial {
    phases.audit_later(ctx, Outcome::denied(&denial, tunnel));
    denial
}
