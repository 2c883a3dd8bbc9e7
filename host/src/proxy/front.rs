//! The hub's front listener: `https://HUB/clusters/<name>/<kubernetes path>`.

use super::body::{boxed, Body};
use super::framing::{Conflicts, FramingGuard};
use super::headers::{
    self, AUDIT_ID, TUNNEL_AS_GROUP, TUNNEL_AS_USER, TUNNEL_UPGRADE, TUNNEL_UPGRADED,
};
use super::lifecycle::{endpoint_name, Denial, Outcome, Phases, Pipeline, RequestCtx, Role};
use super::request_info::RequestInfo;
use super::route::{self, PathError};
use super::status::Status;
use super::upgrade;
use crate::access::{AccessPolicy, ClientImpersonation};
use crate::config::FrontConfig;
use crate::credential::{handle_refresh, Refresher, REFRESH_PATH};
use crate::plugin::{Candidate, Health, Locality};
use crate::registry::Registry;
use crate::tunnel::{SendError, TunnelPool};
use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the front handler needs.
pub struct Front {
    /// Live tunnels.
    pub pool: Arc<TunnelPool>,
    /// Registered clusters.
    pub registry: Arc<ArcSwap<Registry>>,
    /// Listener settings.
    pub cfg: FrontConfig,
    /// The phases, with the plugin chain if one is configured.
    pub pipeline: Pipeline,
    /// Mints access tokens for kubectl's exec plugin at [`REFRESH_PATH`].
    pub refresher: Option<Arc<Refresher>>,
    /// Who may reach which cluster and impersonate whom.
    pub access: Option<AccessPolicy>,
}

/// Serves the front listener until `shutdown` fires.
pub async fn serve_front(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    front: Arc<Front>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "front accept failed");
                    continue;
                }
            },
        };
        let (front, acceptor, shutdown) = (front.clone(), acceptor.clone(), shutdown.clone());
        let span = tracing::debug_span!("client", %peer);
        tokio::spawn(
            async move {
                let _ = stream.set_nodelay(true);
                let tls =
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            return tracing::debug!(error = %e, "client TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!("client TLS handshake timed out"),
                    };
                // HTTP/1.1 connections get the framing guard; HTTP/2 frames its own.
                if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                    front.serve_connection(tls, peer, shutdown, None).await;
                } else {
                    let (guarded, conflicts) =
                        FramingGuard::new(tls, front.cfg.max_header_bytes * 2 + 16 * 1024);
                    front
                        .serve_connection(guarded, peer, shutdown, Some(conflicts))
                        .await;
                }
            }
            .instrument(span),
        );
    }
}

impl Front {
    async fn serve_connection<S>(
        self: Arc<Self>,
        io: S,
        peer: SocketAddr,
        shutdown: CancellationToken,
        conflicts: Option<Conflicts>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        // HTTP/1.1 serves a connection's requests in order, so a counter gives each
        // request the position the framing guard saw it at.
        let position = Arc::new(AtomicU64::new(0));
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            let index = position.fetch_add(1, Ordering::Relaxed);
            let smuggled = conflicts.as_ref().is_some_and(|c| c.contains(index));
            async move {
                if smuggled {
                    let status = Status::bad_request(
                        "request has both Content-Length and Transfer-Encoding",
                    );
                    return Ok::<_, std::convert::Infallible>(status.into_response());
                }
                Ok(this.handle(peer, req).await)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // hyper answers a header block beyond its buffer with 431 itself; below that,
        // `handle` applies the configured limit exactly.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size((self.cfg.max_header_bytes * 2).max(16 * 1024));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size((self.cfg.max_header_bytes * 2) as u32);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            },
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
            }
        }
    }

    /// Runs the lifecycle for one request.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let received = Instant::now();
        let mut audit_id = None;
        let mut resp = match self.proxy(peer, req, received, &mut audit_id).await {
            Ok(resp) => resp,
            Err(denial) => denial.into_response(),
        };
        if let Some(id) = audit_id {
            resp.headers_mut().entry(AUDIT_ID).or_insert(id);
        }
        resp
    }

    async fn proxy(
        &self,
        peer: SocketAddr,
        mut req: Request<Incoming>,
        received: Instant,
        audit_id_out: &mut Option<HeaderValue>,
    ) -> Result<Response<Body>, Denial> {
        // Phase 1: receive.
        let size = headers::block_size(req.headers());
        if size > self.cfg.max_header_bytes {
            return Err(Denial::new(Status::bad_request(format!(
                "request header block of {size} bytes exceeds the limit of {} bytes",
                self.cfg.max_header_bytes
            ))));
        }
        let path = req.uri().path().to_string();
        if let (Some(refresher), REFRESH_PATH) = (&self.refresher, path.as_str()) {
            return Ok(handle_refresh(refresher, req).await);
        }
        let target = route::split(&path).map_err(|e| match e {
            PathError::NotClusterPath => Denial::new(Status::path_not_found(&path)),
            other => Denial::new(Status::bad_request(other.to_string())),
        })?;
        let cluster = target.cluster.to_string();
        if self.registry.load().get(&cluster).is_none() {
            return Err(Denial::new(Status::cluster_not_found(&cluster)));
        }
        let upgrade = headers::upgrade_request(req.headers());
        if upgrade.is_some() && req.version() != Version::HTTP_11 {
            return Err(Denial::new(Status::bad_request(
                "protocol upgrades need HTTP/1.1",
            )));
        }
        let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
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
        // policy can allow it. The client's Authorization crosses the tunnel so the
        // agent can check it again; the agent never passes it to the API server.
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
            cluster: cluster.clone(),
            audit_id: audit_id.to_str().unwrap_or_default().to_string(),
            peer,
            info,
            path_and_query,
            received,
        };

        let mut phases = self.pipeline.start(&ctx, &parts.method, &parts.headers);

        // Phase 2: credential.
        if let Err(denial) = phases.credential().await {
            return Err(finish(phases, ctx, None, denial));
        }

        // Phase 2b: the hub's access policy for this caller and cluster.
        if let Err(denial) = self.authorize(&phases, &cluster, &asked) {
            return Err(finish(phases, ctx, None, denial));
        }
        if let Some(user) = asked.user.as_ref().filter(|_| self.access.is_some()) {
            if let Ok(v) = HeaderValue::from_str(user) {
                parts.headers.insert(TUNNEL_AS_USER, v);
            }
            for g in &asked.groups {
                if let Ok(v) = HeaderValue::from_str(g) {
                    parts.headers.append(TUNNEL_AS_GROUP, v);
                }
            }
        }

        // Phase 4: route among live tunnels; a stage may pick one, never add one.
        let live = self.pool.candidates(&cluster);
        if live.is_empty() {
            let status =
                Status::unavailable(format!("cluster \"{cluster}\" has no connected agent"));
            return Err(finish(phases, ctx, None, status.into()));
        }
        // Routing candidates are only built for a chain that has stages to read them.
        let candidates = if phases.has_chain() {
            self.candidates(&cluster, &live)
        } else {
            Vec::new()
        };
        let route = match phases.route(&candidates).await {
            Ok(route) => route,
            Err(denial) => return Err(finish(phases, ctx, None, denial)),
        };
        let order: Vec<u64> = match route.tunnel {
            Some(first) => std::iter::once(first)
                .chain(live.iter().copied().filter(|id| *id != first))
                .collect(),
            None => live,
        };
        for (name, value) in route.headers {
            parts.headers.insert(name, value);
        }

        // Phase 5: forward.
        let uri = format!("http://{cluster}{}", ctx.path_and_query);
        let mut out = Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(h) = out.headers_mut() {
            *h = parts.headers;
            if let Some(up) = &upgrade {
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
            Denial::new(Status::bad_request(format!("cannot forward request: {e}")))
        })?;
        let send = self.pool.send(&cluster, &order, out);
        let sent = if ctx.long_running() {
            send.await
        } else {
            match tokio::time::timeout(self.cfg.request_timeout, send).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(finish(
                        phases,
                        ctx,
                        None,
                        Status::timeout(self.cfg.request_timeout).into(),
                    ))
                }
            }
        };
        let (tunnel, resp) = match sent {
            Ok(pair) => pair,
            Err(e @ SendError::NoTunnel(_)) => {
                return Err(finish(
                    phases,
                    ctx,
                    None,
                    Status::unavailable(e.to_string()).into(),
                ))
            }
            Err(e @ SendError::Tunnel { tunnel, .. }) => {
                return Err(finish(
                    phases,
                    ctx,
                    Some(tunnel),
                    Status::unavailable(e.to_string()).into(),
                ))
            }
        };

        // Phase 6: respond.
        let (mut rparts, rbody) = resp.into_parts();
        // The tunnel speaks HTTP/2; the client's connection decides the wire version.
        rparts.version = Version::HTTP_11;
        let switched = rparts.headers.remove(TUNNEL_UPGRADED).is_some();
        let upgrade_value = rparts.headers.remove(TUNNEL_UPGRADE);
        headers::remove_hop_by_hop(&mut rparts.headers);
        headers::strip_internal(&mut rparts.headers);
        let resp = match (switched, on_upgrade, client_tx) {
            (true, Some(on_upgrade), Some(client_tx)) => {
                let value = upgrade_value
                    .or(upgrade)
                    .unwrap_or_else(|| HeaderValue::from_static("websocket"));
                rparts.status = StatusCode::SWITCHING_PROTOCOLS;
                rparts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                rparts.headers.insert(header::UPGRADE, value);
                if let Err(denial) = phases.response_started(101).await {
                    return Err(finish(phases, ctx, Some(tunnel), denial));
                }
                let span = tracing::info_span!("upgraded", cluster = %cluster, audit_id = %ctx.audit_id, tunnel);
                tokio::spawn(
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
                return Ok(with_audit_id(
                    Response::from_parts(rparts, super::body::empty()),
                    audit_id,
                ));
            }
            // An upgrade the API server refused (>= 400) is relayed as is, then the
            // connection is closed, as kube-apiserver's upgrade-aware proxy does.
            (_, on_upgrade, _) => {
                if on_upgrade.is_some() {
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
        // Phase 7 when the body has been delivered (or the client left).
        let (parts, body) = resp.into_parts();
        let (body, ended) = super::body::on_end(body);
        let span = tracing::debug_span!("audit", audit_id = %ctx.audit_id);
        tokio::spawn(
            async move {
                let _ = ended.await;
                phases.audit(&ctx, &Outcome::code(code, Some(tunnel))).await;
            }
            .instrument(span),
        );
        Ok(with_audit_id(Response::from_parts(parts, body), audit_id))
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

fn with_audit_id(mut resp: Response<Body>, audit_id: HeaderValue) -> Response<Body> {
    resp.headers_mut().entry(AUDIT_ID).or_insert(audit_id);
    resp
}

/// Audits a refused request and hands back its denial.
fn finish(phases: Phases, ctx: RequestCtx, tunnel: Option<u64>, denial: Denial) -> Denial {
    spawn_audit(phases, ctx, Outcome::denied(&denial, tunnel));
    denial
}

/// Phase 7 runs off the response path, so audit stages never delay a reply.
fn spawn_audit(phases: Phases, ctx: RequestCtx, outcome: Outcome) {
    let span = tracing::debug_span!("audit", audit_id = %ctx.audit_id);
    tokio::spawn(async move { phases.audit(&ctx, &outcome).await }.instrument(span));
}
