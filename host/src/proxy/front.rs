//! The hub's front listener: `https://HUB/clusters/<name>/<kubernetes path>`. Each
//! request then runs the phases in `hub_request.rs`.

use super::body::Body;
use super::framing::{Conflicts, FramingGuard};
use super::headers::AUDIT_ID;
use super::lifecycle::Pipeline;
use super::status::Status;
use crate::access::AccessPolicy;
use crate::config::FrontConfig;
use crate::credential::Refresher;
use crate::listen::ConnectionLimit;
use crate::registry::Registry;
use crate::tunnel::TunnelPool;
use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    /// Mints access tokens for kubectl's exec plugin at [`REFRESH_PATH`](crate::credential::refresh::REFRESH_PATH).
    pub refresher: Option<Arc<Refresher>>,
    /// Who may reach which cluster and impersonate whom.
    pub access: Option<AccessPolicy>,
    /// The cap on open client connections (`front.max_connections`).
    pub connections: Arc<ConnectionLimit>,
}

/// How long requests in flight may run on once shutdown has begun.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the front listener until `shutdown` fires, then lets the requests in flight
/// finish (up to 10 s) before returning; the caller closes the tunnels after that.
pub async fn serve_front(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    front: Arc<Front>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "front accept failed");
                    crate::listen::pause_after_accept_error().await;
                    continue;
                }
            },
        };
        // Over the cap the stream is dropped here, which closes it.
        let Some(slot) = front.connections.admit(peer) else {
            continue;
        };
        let (front, acceptor, shutdown) = (front.clone(), acceptor.clone(), shutdown.clone());
        let span = tracing::debug_span!("client", %peer);
        connections.spawn(
            async move {
                let _slot = slot;
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
    connections.close();
    connections.wait().await;
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
        // request the position the framing guard saw it at. It also tells whether a
        // request has arrived at all.
        let position = Arc::new(AtomicU64::new(0));
        let requests = position.clone();
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
            .header_read_timeout(self.cfg.header_timeout)
            .max_buf_size((self.cfg.max_header_bytes * 2).max(16 * 1024));
        // PINGs find dead HTTP/2 peers (HTTP/1.1 idle connections end on the header
        // read timeout).
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_header_list_size((self.cfg.max_header_bytes * 2) as u32);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        // Before the first request hyper has no timer running: the protocol is not
        // known yet, or the HTTP/2 handshake waits for the client's preface.
        let first_request = tokio::time::sleep(self.cfg.header_timeout);
        tokio::pin!(first_request);
        let mut waiting_for_first = true;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                    return;
                }
                _ = &mut first_request, if waiting_for_first => {
                    waiting_for_first = false;
                    if requests.load(Ordering::Relaxed) == 0 {
                        tracing::debug!(timeout = ?self.cfg.header_timeout, "no request head in time; closing the connection");
                        return;
                    }
                }
            }
        }
    }

    /// Runs the lifecycle for one request (see `hub_request.rs`); every answer
    /// carries the request's `Audit-ID`.
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
}
