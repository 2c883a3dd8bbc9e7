//! The hub's tunnel listener: admits registered agents and turns each accepted
//! connection into an HTTP/2 client the proxy can send requests through.

use super::io::Cuttable;
use super::pool::TunnelPool;
use super::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::config::Keepalive;
use crate::pki::{cluster_of_cert, fingerprint_of_der, not_after_of_cert};
use crate::registry::Registry;
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Everything the listener needs.
#[derive(Clone)]
pub struct AgentListener {
    /// TLS with the registered-agent verifier.
    pub acceptor: TlsAcceptor,
    /// Where accepted tunnels go.
    pub pool: Arc<TunnelPool>,
    /// PING settings.
    pub keepalive: Keepalive,
    /// Limit for the TLS handshake.
    pub handshake_timeout: Duration,
    /// The whitelist, checked again once the handshake is done.
    pub registry: Arc<ArcSwap<Registry>>,
}

/// Accepts agents until `shutdown` fires.
pub async fn serve_agents(
    listener: TcpListener,
    agents: AgentListener,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the tunnels we have.
                    tracing::warn!(error = %e, "tunnel accept failed");
                    crate::listen::pause_after_accept_error().await;
                    continue;
                }
            },
        };
        let agents = agents.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("agent", %peer, cluster = tracing::field::Empty, tunnel = tracing::field::Empty);
        tokio::spawn(async move { agents.handle(stream, peer, shutdown).await }.instrument(span));
    }
}

impl AgentListener {
    async fn handle(self, stream: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::warn!(reason = %refusal_reason(&e), "agent refused");
                return;
            }
            Err(_) => {
                tracing::warn!(reason = "TLS handshake timed out", "agent refused");
                return;
            }
        };
        // The verifier already checked chain, validity and registration; read back
        // who this is for the pool.
        let (_, conn) = tls.get_ref();
        let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
            tracing::warn!(reason = "no client certificate", "agent refused");
            return;
        };
        let fingerprint = fingerprint_of_der(cert);
        let cluster = match cluster_of_cert(cert) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(reason = %e, "agent refused");
                return;
            }
        };
        let not_after = match not_after_of_cert(cert) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(reason = %e, "agent refused");
                return;
            }
        };
        // The verifier checked the registry during the handshake; checking again
        // here guards against any path that skips it (session resumption is off).
        if !self.registry.load().is_admitted(&cluster, &fingerprint) {
            tracing::warn!(reason = "certificate not registered (checked after the handshake)", %fingerprint, "agent refused");
            return;
        }
        let version = conn.protocol_version();
        tracing::Span::current().record("cluster", cluster.as_str());
        let cancel = shutdown.child_token();
        let (closed_tx, mut closed) = oneshot::channel::<()>();
        let tls = Cuttable::new(tls, cancel.clone(), closed_tx);

        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keepalive.interval)
            .keep_alive_timeout(self.keepalive.timeout)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_concurrent_reset_streams(1024)
            .handshake(TokioIo::new(tls))
            .await;
        let (sender, connection) = match handshake {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(reason = %e, "HTTP/2 handshake with agent failed");
                return;
            }
        };
        let Some(id) = self.pool.insert(
            &self.registry,
            &cluster,
            peer,
            fingerprint,
            sender,
            cancel.clone(),
        ) else {
            // The registry changed since the handshake.
            tracing::warn!(reason = "certificate no longer registered", %fingerprint, "agent refused");
            return;
        };
        tracing::Span::current().record("tunnel", id);
        // A tunnel lives no longer than the certificate that opened it; the agent
        // rotates well before, so this cuts only an agent that failed to.
        let _expiry = expire_at(not_after, cancel.clone());
        tracing::info!(?version, %fingerprint, live = self.pool.live(&cluster), "agent connected");
        let ended = tokio::select! {
            result = connection => match result {
                // The dispatcher stops cleanly on the agent's GOAWAY as well as at
                // the end of the connection; the socket tells which.
                Ok(()) => None,
                Err(e) => Some(format!("connection failed: {e}")),
            },
            _ = cancel.cancelled() => Some("closed by the hub".to_string()),
        };
        let reason = match ended {
            Some(reason) => reason,
            None => self.drain(&cluster, id, &cancel, &mut closed).await,
        };
        self.pool.remove(&cluster, id);
        tracing::info!(%reason, live = self.pool.live(&cluster), "tunnel closed");
    }
}

impl AgentListener {
    /// Follows a tunnel the agent is draining: out of rotation but listed (and cut
    /// if its certificate is retired) until its last stream ends and the agent
    /// closes it.
    async fn drain(
        &self,
        cluster: &str,
        id: u64,
        cancel: &CancellationToken,
        closed: &mut oneshot::Receiver<()>,
    ) -> String {
        if !matches!(closed.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            return "agent closed the connection".into();
        }
        self.pool.mark_draining(cluster, id);
        tracing::info!(
            live = self.pool.live(cluster),
            "agent is draining the tunnel; requests in flight continue, new ones go elsewhere"
        );
        tokio::select! {
            _ = &mut *closed => "agent closed the drained connection".into(),
            _ = cancel.cancelled() => {
                // The cut fails the socket; hyper then drops it.
                let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
                "closed by the hub while draining".into()
            }
        }
    }
}

/// The handshake failure in words, unwrapping the registry verifier's own message.
fn refusal_reason(e: &std::io::Error) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Cancels `cancel` at `not_after` (at once if it has passed) unless it is cancelled
/// first; the task stops when the returned handle is dropped.
fn expire_at(
    not_after: std::time::SystemTime,
    cancel: CancellationToken,
) -> tokio_util::task::AbortOnDropHandle<()> {
    let left = not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let task = async move {
        if cancel
            .run_until_cancelled(tokio::time::sleep(left))
            .await
            .is_some()
        {
            tracing::warn!("agent certificate expired; closing the tunnel");
            cancel.cancel();
        }
    };
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(task.in_current_span()))
}
