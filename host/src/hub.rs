//! The hub role: tunnel listener, front listener, registry watcher, admin.

use crate::admin::{self, AdminRoutes};
use crate::config::HubConfig;
use crate::listen::ConnectionLimit;
use crate::pki::{HubCa, Validity};
use crate::proxy::front::{serve_front, Front};
use crate::proxy::lifecycle::Pipeline;
use crate::registry::Registry;
use crate::tls;
use crate::tunnel::{serve_agents, AgentListener, TunnelPool};
use arc_swap::ArcSwap;
use http::StatusCode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The CA could not be loaded or created, or a certificate issued.
    #[error("hub CA: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// The registry file is unreadable.
    #[error("cluster registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The credential issuer could not be opened.
    #[error("credentials: {0}")]
    Credentials(#[from] crate::credential::settings::SetupError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running hub.
pub struct Hub {
    /// Where users and kubectl connect.
    pub front_addr: SocketAddr,
    /// Where agents connect.
    pub tunnel_addr: SocketAddr,
    /// The admin listener, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// Live tunnels.
    pub pool: Arc<TunnelPool>,
    tasks: JoinSet<()>,
}

impl Hub {
    /// Waits until every listener has stopped (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, HubError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind { what, addr, source })
}

/// Starts the hub; it runs until `shutdown` fires.
pub async fn start(
    cfg: HubConfig,
    pipeline: Pipeline,
    shutdown: CancellationToken,
) -> Result<Hub, HubError> {
    let ca = HubCa::load_or_create(&cfg.state_dir)?;
    let mut names = cfg.front.server_names.clone();
    let advertised = cfg.tunnel.advertise_host().to_string();
    if !names.contains(&advertised) {
        names.push(advertised);
    }
    // A fresh serving certificate each start: clients trust the CA, not the leaf.
    let serving = ca.issue_server(&names, Validity::days_from_now(365))?;
    let registry = Arc::new(ArcSwap::from_pointee(Registry::load(&cfg.state_dir)?));
    let pool = Arc::new(TunnelPool::new());

    let tunnel_tls = tls::hub_tunnel_server(
        ca.cert_pem(),
        &serving.cert_pem,
        serving.key_pem.expose(),
        registry.clone(),
    )?;
    let front_tls = tls::front_server(&serving.cert_pem, serving.key_pem.expose())?;
    let tunnel_listener = bind("tunnel", cfg.tunnel.listen).await?;
    let front_listener = bind("front", cfg.front.listen).await?;
    let tunnel_addr = local(&tunnel_listener, cfg.tunnel.listen);
    let front_addr = local(&front_listener, cfg.front.listen);

    let mut tasks = JoinSet::new();
    // Tunnels outlive the front listener at shutdown: they close once the requests in
    // flight through them have drained (see `serve_front`).
    let tunnels_stop = CancellationToken::new();
    let agents = AgentListener {
        acceptor: TlsAcceptor::from(Arc::new(tunnel_tls)),
        pool: pool.clone(),
        keepalive: cfg.tunnel.keepalive,
        handshake_timeout: cfg.tunnel.handshake_timeout,
        registry: registry.clone(),
    };
    tasks.spawn(
        serve_agents(tunnel_listener, agents, tunnels_stop.clone())
            .instrument(tracing::info_span!("tunnel_listener", addr = %tunnel_addr)),
    );
    let plugins = pipeline.plugins().cloned();
    // The refresh endpoint for kubectl's exec plugin; key rotations and revocations
    // are picked up by polling, without a restart.
    let refresher = Arc::new(cfg.credentials.open(&cfg.state_dir)?);
    let verifier = refresher.verifier().clone();
    let (every, stop) = (cfg.credentials.reload_interval, shutdown.clone());
    tasks.spawn(
        async move { verifier.watch(every, stop).await }
            .instrument(tracing::info_span!("credential_watch")),
    );
    let connections = Arc::new(ConnectionLimit::new("front", cfg.front.max_connections));
    let front = Arc::new(Front {
        pool: pool.clone(),
        registry: registry.clone(),
        cfg: cfg.front.clone(),
        pipeline,
        refresher: Some(refresher),
        access: cfg.access.clone(),
        connections: connections.clone(),
    });
    let front_done = serve_front(
        front_listener,
        TlsAcceptor::from(Arc::new(front_tls)),
        front,
        shutdown.clone(),
    );
    tasks.spawn(
        async move {
            front_done.await;
            tunnels_stop.cancel();
        }
        .instrument(tracing::info_span!("front_listener", addr = %front_addr)),
    );
    tasks.spawn(
        watch_registry(
            cfg.state_dir.clone(),
            cfg.registry_poll,
            registry.clone(),
            pool.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("registry_watch")),
    );
    let admin_addr = match cfg.admin_listen {
        Some(addr) => {
            let listener = bind("admin", addr).await?;
            let bound = local(&listener, addr);
            tasks.spawn(
                admin::serve_admin(
                    listener,
                    hub_routes(pool.clone(), registry.clone(), connections),
                    plugins,
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("admin_listener", addr = %bound)),
            );
            Some(bound)
        }
        None => None,
    };
    tracing::info!(%front_addr, %tunnel_addr, ?admin_addr, clusters = registry.load().clusters().count(), "hub started");
    Ok(Hub {
        front_addr,
        tunnel_addr,
        admin_addr,
        pool,
        tasks,
    })
}

fn local(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// Re-reads the registry when its file changes and cuts tunnels whose certificate
/// is no longer registered. A file that does not parse keeps the last good registry.
async fn watch_registry(
    state_dir: PathBuf,
    every: std::time::Duration,
    registry: Arc<ArcSwap<Registry>>,
    pool: Arc<TunnelPool>,
    shutdown: CancellationToken,
) {
    let file = state_dir.join("clusters.toml");
    let mut last = std::fs::read(&file).ok();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = std::fs::read(&file).ok();
        if now == last {
            continue;
        }
        match Registry::load(&state_dir) {
            Ok(fresh) => {
                // Store first, then cut: a tunnel being admitted meanwhile is either
                // seen by `enforce` or checked against the new registry on insert.
                let fresh = Arc::new(fresh);
                registry.store(fresh.clone());
                let cut = pool.enforce(&fresh);
                tracing::info!(
                    clusters = fresh.clusters().count(),
                    tunnels_cut = cut,
                    "registry reloaded"
                );
                last = now;
            }
            Err(e) => {
                tracing::error!(error = %e, "registry file is invalid; keeping the previous registry")
            }
        }
    }
}

fn hub_routes(
    pool: Arc<TunnelPool>,
    registry: Arc<ArcSwap<Registry>>,
    connections: Arc<ConnectionLimit>,
) -> AdminRoutes {
    Arc::new(move |path| match path {
        "/livez" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/tunnels" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&pool.snapshot()).unwrap_or_default(),
        ),
        "/metrics" => {
            let mut out = String::from("# HELP hawser_hub_tunnels_live Live agent tunnels per registered cluster.\n# TYPE hawser_hub_tunnels_live gauge\n");
            for rec in registry.load().clusters() {
                out.push_str(&format!(
                    "hawser_hub_tunnels_live{{cluster=\"{}\"}} {}\n",
                    rec.name,
                    pool.live(&rec.name)
                ));
            }
            out.push_str(&format!(
                "# HELP hawser_hub_front_connections Client connections open on the front listener.\n\
                 # TYPE hawser_hub_front_connections gauge\nhawser_hub_front_connections {}\n\
                 # HELP hawser_hub_front_connections_refused_total Client connections closed at once because front.max_connections were open.\n\
                 # TYPE hawser_hub_front_connections_refused_total counter\nhawser_hub_front_connections_refused_total {}\n",
                connections.open(),
                connections.refused()
            ));
            (StatusCode::OK, "text/plain; version=0.0.4", out)
        }
        _ => admin::not_found(),
    })
}
