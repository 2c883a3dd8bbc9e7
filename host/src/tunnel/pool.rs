//! The hub's set of live tunnels, per cluster.

use crate::pki::Fingerprint;
use crate::proxy::body::{self, Body};
use crate::registry::Registry;
use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a request that found every tunnel of its cluster closing waits for
/// a replacement: during a certificate rotation the agent drains the old tunnel
/// as soon as the new one is admitted, which may be a moment before the hub has
/// it in the pool.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// One live tunnel as the hub sees it.
#[derive(Debug)]
pub struct Tunnel {
    info: TunnelInfo,
    sender: SendRequest<Body>,
    cancel: CancellationToken,
    draining: AtomicBool,
}

impl Tunnel {
    /// Whether new requests may go here.
    fn usable(&self) -> bool {
        !self.sender.is_closed()
            && !self.cancel.is_cancelled()
            && !self.draining.load(Ordering::Relaxed)
    }

    fn info(&self) -> TunnelInfo {
        TunnelInfo {
            draining: self.draining.load(Ordering::Relaxed),
            ..self.info.clone()
        }
    }
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
    /// The agent is draining it (GOAWAY): requests in flight finish, no new ones
    /// are sent here.
    pub draining: bool,
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
    /// Wakes requests waiting for a replacement tunnel.
    arrived: Notify,
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

    /// Adds a tunnel whose certificate `registry` admits; returns its id, or `None`
    /// when the certificate is not (or no longer) registered. `cancel` closes it.
    ///
    /// The check and the insert happen under the pool lock, and the registry watcher
    /// stores a new registry before it calls [`TunnelPool::enforce`] (which takes the
    /// same lock): a tunnel admitted under an old registry is therefore either in the
    /// pool when `enforce` scans it, or checked against the new registry here.
    pub fn insert(
        &self,
        registry: &ArcSwap<Registry>,
        cluster: &str,
        peer: SocketAddr,
        fingerprint: Fingerprint,
        sender: SendRequest<Body>,
        cancel: CancellationToken,
    ) -> Option<u64> {
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
            draining: false,
        };
        let tunnel = Arc::new(Tunnel {
            info,
            sender,
            cancel,
            draining: AtomicBool::new(false),
        });
        {
            let mut clusters = self.lock();
            if !registry.load().is_admitted(cluster, &fingerprint) {
                return None;
            }
            clusters
                .entry(cluster.to_string())
                .or_default()
                .push(tunnel);
        }
        self.arrived.notify_waiters();
        Some(id)
    }

    /// Takes a tunnel out of rotation while it stays listed (and cuttable): the
    /// agent sent GOAWAY, so its streams in flight run to completion elsewhere
    /// in hyper and no new request may go there.
    pub fn mark_draining(&self, cluster: &str, id: u64) {
        if let Some(t) = self.get(cluster, id) {
            t.draining.store(true, Ordering::Relaxed);
        }
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
            .map(|l| l.iter().filter(|t| t.usable()).count())
            .unwrap_or(0)
    }

    /// Every live tunnel, for admin views.
    pub fn snapshot(&self) -> Vec<TunnelInfo> {
        let mut all: Vec<TunnelInfo> = self.lock().values().flatten().map(|t| t.info()).collect();
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

    /// Ids of the tunnels of a cluster that take new requests, in insertion order.
    fn usable_ids(&self, cluster: &str) -> Vec<u64> {
        self.lock()
            .get(cluster)
            .map(|list| {
                list.iter()
                    .filter(|t| t.usable())
                    .map(|t| t.info.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live tunnel ids of a cluster, starting at the next one in round-robin order.
    /// Draining tunnels are not candidates.
    pub fn candidates(&self, cluster: &str) -> Vec<u64> {
        let live = self.usable_ids(cluster);
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
    /// closed or drains before the request left is skipped, so losing one agent
    /// replica or rotating its certificate fails no new request. Tunnels that came
    /// up meanwhile are tried after `order`, and if every tunnel bounced the
    /// request, a replacement is awaited for a moment. Once a request is out, its
    /// failure is returned, unless the agent refused the stream unprocessed
    /// (REFUSED_STREAM, or beyond a GOAWAY) and the request has no body, which
    /// makes sending it again safe.
    pub async fn send(
        &self,
        cluster: &str,
        order: &[u64],
        req: Request<Body>,
    ) -> Result<(u64, Response<Incoming>), SendError> {
        use http_body::Body as _;
        let (parts, body) = req.into_parts();
        let template = body.is_end_stream().then(|| parts.clone());
        let mut req = Request::from_parts(parts, body);
        let mut queue: std::collections::VecDeque<u64> = order.iter().copied().collect();
        let mut tried: Vec<u64> = Vec::new();
        let mut waited = false;
        loop {
            let Some(id) = queue.pop_front() else {
                // Registered before looking, so an insert in between is not missed.
                let arrival = self.arrived.notified();
                tokio::pin!(arrival);
                arrival.as_mut().enable();
                let fresh: Vec<u64> = self
                    .usable_ids(cluster)
                    .into_iter()
                    .filter(|id| !tried.contains(id))
                    .collect();
                if !fresh.is_empty() {
                    queue.extend(fresh);
                    continue;
                }
                if waited || tried.is_empty() {
                    break;
                }
                waited = true;
                tracing::debug!(
                    cluster,
                    "every tunnel refused the request; waiting for a replacement"
                );
                let _ = tokio::time::timeout(HANDOVER_WAIT, arrival).await;
                continue;
            };
            if tried.contains(&id) {
                continue;
            }
            tried.push(id);
            let Some(tunnel) = self.get(cluster, id) else {
                continue;
            };
            if !tunnel.usable() {
                continue;
            }
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
                        let source = e.into_error();
                        match &template {
                            Some(parts) if refused_unprocessed(&source) => {
                                tracing::debug!(tunnel = id, error = %source, "agent refused the stream unprocessed; sending again on another tunnel");
                                req = Request::from_parts(parts.clone(), body::empty());
                            }
                            _ => {
                                return Err(SendError::Tunnel {
                                    cluster: cluster.into(),
                                    tunnel: id,
                                    source,
                                })
                            }
                        }
                    }
                },
            }
        }
        Err(SendError::NoTunnel(cluster.into()))
    }
}

/// Whether the agent provably did not process the request: HTTP/2 says so for a
/// stream reset with REFUSED_STREAM and for a stream above the last stream id of
/// a graceful GOAWAY (RFC 9113, section 8.7).
fn refused_unprocessed(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
#[path = "tests/pool.rs"]
mod tests;
