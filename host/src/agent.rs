//! The agent role: tunnels to the hub, the forwarder to the API server, admin.

use crate::admin::{self, AdminRoutes};
use crate::config::AgentConfig;
use crate::proxy::forward::Forwarder;
use crate::proxy::lifecycle::Pipeline;
use crate::tls;
use crate::tunnel::{run_agent_tunnels, AgentTunnelState, Identity, IdentityError};
use crate::upstream::{Upstream, UpstreamError};
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The certificate cannot be read.
    #[error("agent certificate: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// The CA, certificate and key do not make a usable identity.
    #[error("agent certificate: {0}")]
    Identity(#[from] IdentityError),
    /// The API server client could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The admin listener could not be bound.
    #[error("cannot listen on {addr} (admin): {source}")]
    Bind {
        /// Its address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    /// Tunnel state (live count).
    pub state: Arc<AgentTunnelState>,
    /// The admin listener, if configured.
    pub admin_addr: Option<SocketAddr>,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Waits until the tunnels and listeners have stopped (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts the agent; it runs until `shutdown` fires.
pub async fn start(
    cfg: AgentConfig,
    pipeline: Pipeline,
    shutdown: CancellationToken,
) -> Result<Agent, AgentError> {
    // Check the TLS material now rather than on the first dial; later changes are
    // picked up by the certificate watcher.
    let identity = Identity::load(&cfg.hub, &cfg.cluster, 0)?;
    // At start there is no tunnel to keep, so an untrusted certificate is only a
    // warning and the hub has the last word; a rotation to one is refused.
    if let Err(e) = identity.check_trust() {
        tracing::warn!(error = %e, "the hub will probably refuse this certificate");
    }
    let upstream = Upstream::new(&cfg.apiserver, cfg.apiserver_timeouts)?;
    let plugins = pipeline.plugins().cloned();
    let forwarder = Forwarder::new(cfg.cluster.clone(), upstream, pipeline, cfg.access.clone());
    let state = Arc::new(AgentTunnelState::default());
    let mut tasks = JoinSet::new();
    let admin_addr = match cfg.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Bind { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            tasks.spawn(
                admin::serve_admin(
                    listener,
                    agent_routes(state.clone()),
                    plugins,
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("admin_listener", addr = %bound)),
            );
            Some(bound)
        }
        None => None,
    };
    let cfg = Arc::new(cfg);
    tracing::info!(cluster = %cfg.cluster, hub = %cfg.hub.address, connections = cfg.hub.connections, fingerprint = %identity.fingerprint, "agent started");
    tasks.spawn(
        run_agent_tunnels(cfg.clone(), identity, forwarder, state.clone(), shutdown)
            .instrument(tracing::info_span!("agent", cluster = %cfg.cluster)),
    );
    Ok(Agent {
        state,
        admin_addr,
        tasks,
    })
}

fn agent_routes(state: Arc<AgentTunnelState>) -> AdminRoutes {
    Arc::new(move |path| {
        match path {
        "/livez" => (StatusCode::OK, "text/plain", "ok\n".into()),
        // Ready once at least one tunnel is up, so a rollout waits for a connected pod.
        "/readyz" if state.live() > 0 => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no tunnel to the hub\n".into()),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            format!(
                "# HELP hawser_agent_tunnels_live Tunnels to the hub currently up.\n# TYPE hawser_agent_tunnels_live gauge\nhawser_agent_tunnels_live {}\n# HELP hawser_agent_tunnels_draining Tunnels draining after a certificate rotation.\n# TYPE hawser_agent_tunnels_draining gauge\nhawser_agent_tunnels_draining {}\n# HELP hawser_agent_tunnel_connects_total Tunnels established since start.\n# TYPE hawser_agent_tunnel_connects_total counter\nhawser_agent_tunnel_connects_total {}\n",
                state.live(),
                state.draining(),
                state.connects()
            ),
        ),
        _ => admin::not_found(),
    }
    })
}
