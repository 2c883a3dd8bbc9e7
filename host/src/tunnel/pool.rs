//! The hub's set of live tunnels, per cluster.

use crate::pki::Fingerprint;
use crate::proxy::body::Body;
use crate::registry::Registry;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// One live tunnel as the hub sees it.
#[derive(Debug)]
pub struct Tunnel {
    info: TunnelInfo,
    sender: SendRequest<Body>,
    cancel: CancellationToken,
}

/// Facts about a live tunnel (for logs, admin and routing).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TunnelInfo {
    /// Unique for the life of the hub process.
    pub id: u64,
    /// The cluster named in the agent certificate.
    pub cluster: String,
    /// The agent's address as seen by the hub.
    pub peer: SocketAddr,
    /// The agent certificate.
    pub fingerprint: String,
    /// Seconds since the Unix epoch when the tunnel came up.
    pub connected_at: u64,
}

/// Why a request could not be sent through any tunnel.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The cluster has no live tunnel.
    #[error("cluster `{0}` has no connected agent")]
    NoTunnel(String),
    /// The request went out and the tunnel failed before a response.
    #[error("tunnel {tunnel} to cluster `{cluster}` failed: {source}")]
    Tunnel {
        /// The cluster.
        cluster: String,
        /// Which tunnel.
        tunnel: u64,
        /// hyper's error.
        source: hyper::Error,
    },
}

/// Live tunnels per cluster, spread round-robin.
#[derive(Debug, Default)]
pub struct TunnelPool {
    clusters: Mutex<HashMap<String, Vec<Arc<Tunnel>>>>,
    next_id: AtomicU64,
    turn: AtomicUsize,
}

impl TunnelPool {
    /// An empty pool.
    pub fn new() -> TunnelPool {
        TunnelPool::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Tunnel>>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single insert/retain), so poison is ignored.
        self.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a tunnel; returns its id. `cancel` closes it.
    pub fn insert(
        &self,
        cluster: &str,
        peer: SocketAddr,
        fingerprint: Fingerprint,
        sender: SendRequest<Body>,
        cancel: CancellationToken,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connected_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let info = TunnelInfo {
            id,
            cluster: cluster.to_string(),
            peer,
            fingerprint: fingerprint.to_string(),
            connected_at,
        };
        let tunnel = Arc::new(Tunnel {
            info,
            sender,
            cancel,
        });
        self.lock()
            .entry(cluster.to_string())
            .or_default()
            .push(tunnel);
        id
    }

    /// Forgets a tunnel (its connection ended).
    pub fn remove(&self, cluster: &str, id: u64) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(cluster) {
            list.retain(|t| t.info.id != id);
            if list.is_empty() {
                map.remove(cluster);
            }
        }
    }

    /// Number of live tunnels of a cluster.
    pub fn live(&self, cluster: &str) -> usize {
        self.lock()
            .get(cluster)
            .map(|l| l.iter().filter(|t| !t.sender.is_closed()).count())
            .unwrap_or(0)
    }

    /// Every live tunnel, for admin views.
    pub fn snapshot(&self) -> Vec<TunnelInfo> {
        let mut all: Vec<TunnelInfo> = self
            .lock()
            .values()
            .flatten()
            .map(|t| t.info.clone())
            .collect();
        all.sort_by_key(|t| t.id);
        all
    }

    /// Closes every tunnel whose certificate is no longer admitted by `registry`.
    /// Returns how many were cut.
    pub fn enforce(&self, registry: &Registry) -> usize {
        let mut cut = 0;
        for tunnel in self.lock().values().flatten() {
            let admitted = tunnel
                .info
                .fingerprint
                .parse::<Fingerprint>()
                .map(|fp| registry.is_admitted(&tunnel.info.cluster, &fp))
                .unwrap_or(false);
            if !admitted && !tunnel.cancel.is_cancelled() {
                tracing::warn!(cluster = %tunnel.info.cluster, tunnel = tunnel.info.id, "agent certificate no longer registered; closing tunnel");
                tunnel.cancel.cancel();
                cut += 1;
            }
        }
        cut
    }

    /// Live tunnel ids of a cluster, starting at the next one in round-robin order.
    pub fn candidates(&self, cluster: &str) -> Vec<u64> {
        let map = self.lock();
        let Some(list) = map.get(cluster) else {
            return Vec::new();
        };
        let live: Vec<u64> = list
            .iter()
            .filter(|t| !t.sender.is_closed() && !t.cancel.is_cancelled())
            .map(|t| t.info.id)
            .collect();
        if live.is_empty() {
            return live;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % live.len();
        live[start..]
            .iter()
            .chain(&live[..start])
            .copied()
            .collect()
    }

    fn get(&self, cluster: &str, id: u64) -> Option<Arc<Tunnel>> {
        self.lock()
            .get(cluster)?
            .iter()
            .find(|t| t.info.id == id)
            .cloned()
    }

    /// Sends a request over the first tunnel in `order` that takes it. A tunnel that
    /// died before the request left is skipped, so losing one agent replica fails no
    /// new request; once a request is out, its failure is returned.
    pub async fn send(
        &self,
        cluster: &str,
        order: &[u64],
        mut req: Request<Body>,
    ) -> Result<(u64, Response<Incoming>), SendError> {
        for &id in order {
            let Some(tunnel) = self.get(cluster, id) else {
                continue;
            };
            let mut sender = tunnel.sender.clone();
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((id, resp)),
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        tracing::debug!(tunnel = id, error = %e.error(), "tunnel refused request before sending; trying next");
                        req = back;
                    }
                    None => {
                        return Err(SendError::Tunnel {
                            cluster: cluster.into(),
                            tunnel: id,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
        Err(SendError::NoTunnel(cluster.into()))
    }
}
