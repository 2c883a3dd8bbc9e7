//! The agent's side: keep `connections` tunnels to the hub open, reconnecting with
//! jittered exponential backoff, and serve the hub's requests on each.

use super::backoff::Backoff;
use super::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::config::AgentConfig;
use crate::proxy::forward::Forwarder;
use crate::tls;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Shared view of the agent's tunnels, for readiness and metrics.
#[derive(Debug, Default)]
pub struct AgentTunnelState {
    live: AtomicUsize,
    connects: AtomicUsize,
}

impl AgentTunnelState {
    /// Tunnels currently up.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Tunnels established since start.
    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::Relaxed)
    }
}

/// Why one dial attempt failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("reading the agent's TLS files: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with the hub: {0}")]
    Handshake(std::io::Error),
    #[error("timed out connecting to the hub")]
    Timeout,
}

/// Runs `cfg.hub.connections` tunnel loops until `shutdown` fires.
pub async fn run_agent_tunnels(
    cfg: Arc<AgentConfig>,
    forwarder: Forwarder,
    state: Arc<AgentTunnelState>,
    shutdown: CancellationToken,
) {
    let mut loops = tokio::task::JoinSet::new();
    for slot in 0..cfg.hub.connections {
        let span = tracing::info_span!("tunnel", slot, hub = %cfg.hub.address);
        loops.spawn(
            tunnel_loop(
                cfg.clone(),
                forwarder.clone(),
                state.clone(),
                shutdown.clone(),
            )
            .instrument(span),
        );
    }
    while loops.join_next().await.is_some() {}
}

async fn tunnel_loop(
    cfg: Arc<AgentConfig>,
    forwarder: Forwarder,
    state: Arc<AgentTunnelState>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    // A tunnel that stayed up this long counts as healthy and resets the backoff; a
    // hub that refuses us right after the handshake keeps the delays growing.
    let healthy_after = cfg
        .backoff_max
        .min(Duration::from_secs(5))
        .max(cfg.keepalive.interval);
    while !shutdown.is_cancelled() {
        match dial(&cfg).await {
            Ok(tls) => {
                let started = Instant::now();
                state.live.fetch_add(1, Ordering::Relaxed);
                state.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("tunnel up");
                let reason = serve(&cfg, tls, forwarder.clone(), &shutdown).await;
                state.live.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(%reason, lived_ms = started.elapsed().as_millis() as u64, "tunnel down");
                if started.elapsed() >= healthy_after {
                    backoff.reset();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the hub"),
        }
        let delay = backoff.next_delay();
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after backoff"
        );
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection attempt. TLS files are read each time, so a rotated certificate
/// is used on the next connection without a restart.
async fn dial(cfg: &AgentConfig) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DialError> {
    let hub = &cfg.hub;
    let client = tls::agent_tunnel_client(
        &tls::read_pem(&hub.ca_file)?,
        &tls::read_pem(&hub.cert_file)?,
        &tls::read_pem(&hub.key_file)?,
    )?;
    let name = tls::server_name(&hub.server_name)?;
    let attempt = async {
        let tcp = TcpStream::connect(&hub.address)
            .await
            .map_err(|source| DialError::Connect {
                address: hub.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .map_err(DialError::Handshake)
    };
    tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .map_err(|_| DialError::Timeout)?
}

/// Serves the hub's requests on one tunnel until it ends; returns why.
async fn serve(
    cfg: &AgentConfig,
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    forwarder: Forwarder,
    shutdown: &CancellationToken,
) -> String {
    let hub = tls
        .get_ref()
        .0
        .peer_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let service = hyper::service::service_fn(move |req| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, std::convert::Infallible>(forwarder.handle(hub, req).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(cfg.keepalive.interval)
        .keep_alive_timeout(cfg.keepalive.timeout)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(4096)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => match result {
            Ok(()) => "hub closed the tunnel".into(),
            Err(e) => format!("{e}"),
        },
        _ = shutdown.cancelled() => {
            // Let in-flight streams finish briefly, then go.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            "shutting down".into()
        }
    }
}
