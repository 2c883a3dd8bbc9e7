//! The agent's side: keep `connections` tunnels to the hub open, reconnecting with
//! jittered exponential backoff, and serve the hub's requests on each.
//!
//! Each slot holds one tunnel. When the agent's certificate changes (see
//! [`super::identity`]) the slot dials a second tunnel with the new certificate
//! while the old one keeps serving; only once the hub has admitted the new one
//! (it sent its first bytes) does the old one get a graceful GOAWAY: no new
//! streams, and those in flight (a watch, `logs -f`, exec) run to completion or
//! until `drain_timeout`.

use super::backoff::Backoff;
use super::identity::{watch_identity, Identity};
use super::io::FirstRead;
use super::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::config::AgentConfig;
use crate::proxy::forward::Forwarder;
use crate::tls;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long the hub may take to speak on a fresh tunnel before the agent gives up
/// on it (it sends its HTTP/2 preface right after admitting the certificate).
const ADMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Grace for streams in flight when the agent shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Shared view of the agent's tunnels, for readiness and metrics.
#[derive(Debug, Default)]
pub struct AgentTunnelState {
    live: AtomicUsize,
    connects: AtomicUsize,
    draining: AtomicUsize,
}

impl AgentTunnelState {
    /// Tunnels currently up (draining ones included).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Tunnels established since start.
    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::Relaxed)
    }

    /// Tunnels draining after a certificate rotation.
    pub fn draining(&self) -> usize {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Why one dial attempt failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("{0}")]
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

/// Everything a tunnel slot needs; cloned into each.
#[derive(Clone)]
struct Slots {
    cfg: Arc<AgentConfig>,
    forwarder: Forwarder,
    state: Arc<AgentTunnelState>,
    identity: watch::Receiver<Arc<Identity>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Runs `cfg.hub.connections` tunnel slots and the certificate watcher until
/// `shutdown` fires, then waits for every tunnel to close. `identity` is the
/// identity loaded (and checked) at start.
pub async fn run_agent_tunnels(
    cfg: Arc<AgentConfig>,
    identity: Identity,
    forwarder: Forwarder,
    state: Arc<AgentTunnelState>,
    shutdown: CancellationToken,
) {
    let (tx, rx) = watch::channel(Arc::new(identity));
    let tasks = TaskTracker::new();
    tasks.spawn(
        watch_identity(
            cfg.hub.clone(),
            cfg.cluster.clone(),
            cfg.cert_reload_interval,
            tx,
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("cert_watch")),
    );
    let slots = Slots {
        cfg: cfg.clone(),
        forwarder,
        state,
        identity: rx,
        tasks: tasks.clone(),
        shutdown,
    };
    let mut loops = tokio::task::JoinSet::new();
    for slot in 0..cfg.hub.connections {
        let span = tracing::info_span!("tunnel", slot, hub = %cfg.hub.address);
        loops.spawn(slots.clone().run().instrument(span));
    }
    while loops.join_next().await.is_some() {}
    // Draining tunnels live on in their own tasks; they end at shutdown too.
    tasks.close();
    tasks.wait().await;
}

/// A tunnel served in its own task.
struct Served {
    generation: u64,
    drain: CancellationToken,
    done: JoinHandle<Option<Duration>>,
}

/// What woke a slot that has a tunnel.
enum Event {
    Shutdown,
    /// The tunnel ended; how long it was up.
    Ended(Option<Duration>),
    IdentityChanged,
    RotateNow,
}

impl Slots {
    async fn run(self) {
        let cfg = &self.cfg;
        let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
        // A tunnel that stayed up this long counts as healthy and resets the backoff; a
        // hub that refuses us right after the handshake keeps the delays growing.
        let healthy_after = cfg
            .backoff_max
            .min(Duration::from_secs(5))
            .max(cfg.keepalive.interval);
        let mut identity = self.identity.clone();
        let mut current: Option<Served> = None;
        let mut rotate_at = Instant::now();
        while !self.shutdown.is_cancelled() {
            let Some(served) = current.as_mut() else {
                let id = identity.borrow_and_update().clone();
                match self.open(&id).await {
                    Ok(served) => {
                        current = Some(served);
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reach the hub"),
                }
                if !self.pause(backoff.next_delay()).await {
                    break;
                }
                continue;
            };
            let rotate = identity.borrow().generation != served.generation;
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => Event::Shutdown,
                lived = &mut served.done => Event::Ended(lived.unwrap_or(None)),
                _ = identity.changed(), if !rotate => Event::IdentityChanged,
                _ = tokio::time::sleep_until(rotate_at.into()), if rotate => Event::RotateNow,
            };
            match event {
                Event::Shutdown => break,
                Event::IdentityChanged => rotate_at = Instant::now(),
                Event::Ended(lived) => {
                    current = None;
                    if lived.is_some_and(|l| l >= healthy_after) {
                        backoff.reset();
                    }
                    if !self.pause(backoff.next_delay()).await {
                        break;
                    }
                }
                Event::RotateNow => {
                    let id = identity.borrow_and_update().clone();
                    match self.open(&id).await {
                        Ok(fresh) => {
                            if let Some(old) = current.replace(fresh) {
                                tracing::info!(
                                    fingerprint = %id.fingerprint,
                                    "tunnel with the new certificate is up; draining the old one"
                                );
                                old.drain.cancel();
                            }
                        }
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "cannot open a tunnel with the new certificate; the current tunnel keeps serving");
                            rotate_at = Instant::now() + delay;
                        }
                    }
                }
            }
        }
    }

    /// Sleeps for `delay` unless shutdown comes first; false on shutdown.
    async fn pause(&self, delay: Duration) -> bool {
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after backoff"
        );
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Dials the hub with `id` and starts serving; returns once the hub has
    /// admitted the tunnel (sent its first bytes).
    async fn open(&self, id: &Identity) -> Result<Served, String> {
        let tls = tokio::select! {
            _ = self.shutdown.cancelled() => return Err("shutting down".into()),
            tls = dial(&self.cfg, id) => tls.map_err(|e| e.to_string())?,
        };
        let (up_tx, up_rx) = oneshot::channel();
        let drain = CancellationToken::new();
        let tunnel = Tunnel {
            cfg: self.cfg.clone(),
            forwarder: self.forwarder.clone(),
            state: self.state.clone(),
            drain: drain.clone(),
            shutdown: self.shutdown.clone(),
        };
        let span =
            tracing::info_span!("conn", generation = id.generation, fingerprint = %id.fingerprint);
        let done = self.tasks.spawn(tunnel.run(tls, up_tx).instrument(span));
        match up_rx.await {
            Ok(()) => Ok(Served {
                generation: id.generation,
                drain,
                done,
            }),
            // The task ended before the hub spoke; it says why.
            Err(_) => Err(match done.await {
                Ok(_) => "the hub did not admit the tunnel (see the log line above)".into(),
                Err(e) => format!("tunnel task failed: {e}"),
            }),
        }
    }
}

/// One connection attempt with the given identity.
async fn dial(
    cfg: &AgentConfig,
    id: &Identity,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DialError> {
    let hub = &cfg.hub;
    let name = tls::server_name(&hub.server_name)?;
    let attempt = async {
        let tcp = TcpStream::connect(&hub.address)
            .await
            .map_err(|source| DialError::Connect {
                address: hub.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(id.client.clone())
            .connect(name, tcp)
            .await
            .map_err(DialError::Handshake)
    };
    tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .map_err(|_| DialError::Timeout)?
}

/// One tunnel's serving task.
struct Tunnel {
    cfg: Arc<AgentConfig>,
    forwarder: Forwarder,
    state: Arc<AgentTunnelState>,
    drain: CancellationToken,
    shutdown: CancellationToken,
}

impl Tunnel {
    /// Serves the hub's requests until the tunnel ends. `up` fires once the hub
    /// has spoken; returns how long the tunnel was up (`None`: never admitted).
    async fn run(
        self,
        tls: tokio_rustls::client::TlsStream<TcpStream>,
        up: oneshot::Sender<()>,
    ) -> Option<Duration> {
        let hub = tls
            .get_ref()
            .0
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (first_tx, first_rx) = oneshot::channel();
        let forwarder = self.forwarder.clone();
        let service = hyper::service::service_fn(move |req| {
            let forwarder = forwarder.clone();
            async move { Ok::<_, std::convert::Infallible>(forwarder.handle(hub, req).await) }
        });
        let cfg = &self.cfg;
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(cfg.keepalive.interval)
            .keep_alive_timeout(cfg.keepalive.timeout)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_concurrent_streams(4096)
            .serve_connection(TokioIo::new(FirstRead::new(tls, first_tx)), service);
        tokio::pin!(conn);

        // A hub that refuses the certificate does so after our side of the TLS
        // handshake is done (TLS 1.3 verifies the client last): wait for its
        // preface before calling the tunnel up.
        let refused = tokio::select! {
            r = conn.as_mut() => Some(describe(r)),
            r = first_rx => r.err().map(|_| "connection closed before the hub spoke".to_string()),
            _ = tokio::time::sleep(ADMIT_TIMEOUT) => Some(format!("the hub sent nothing within {ADMIT_TIMEOUT:?}")),
            _ = self.shutdown.cancelled() => Some("shutting down".into()),
        };
        if let Some(reason) = refused {
            tracing::warn!(%reason, "the hub did not admit the tunnel");
            return None;
        }
        let started = Instant::now();
        self.state.live.fetch_add(1, Ordering::Relaxed);
        self.state.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("tunnel up");
        let _ = up.send(());

        let (reason, drained) = tokio::select! {
            r = conn.as_mut() => (describe(r), false),
            _ = self.drain.cancelled() => {
                self.state.draining.fetch_add(1, Ordering::Relaxed);
                // GOAWAY: the hub opens no new stream here; those in flight go on.
                conn.as_mut().graceful_shutdown();
                tracing::info!(drain_timeout = ?cfg.drain_timeout, "draining tunnel: no new requests, waiting for those in flight");
                let reason = tokio::select! {
                    r = conn.as_mut() => match r {
                        Ok(()) => "drained".to_string(),
                        Err(e) => format!("while draining: {e}"),
                    },
                    _ = tokio::time::sleep(cfg.drain_timeout) => {
                        format!("drain timeout ({:?}) reached; closed with streams still open", cfg.drain_timeout)
                    }
                    _ = self.shutdown.cancelled() => {
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                        "shutting down while draining".to_string()
                    }
                };
                self.state.draining.fetch_sub(1, Ordering::Relaxed);
                (reason, true)
            }
            _ = self.shutdown.cancelled() => {
                // Let in-flight streams finish briefly, then go.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                ("shutting down".to_string(), false)
            }
        };
        self.state.live.fetch_sub(1, Ordering::Relaxed);
        let lived_ms = started.elapsed().as_millis() as u64;
        if drained {
            tracing::info!(%reason, lived_ms, "old tunnel closed after rotation");
        } else {
            tracing::warn!(%reason, lived_ms, "tunnel down");
        }
        Some(started.elapsed())
    }
}

fn describe(result: Result<(), hyper::Error>) -> String {
    match result {
        Ok(()) => "hub closed the tunnel".into(),
        Err(e) => format!("{e}"),
    }
}
