//! What accept loops share: the pause after a failed accept, and a connection cap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an accept loop waits after `accept` failed.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// Waits a moment after a failed `accept`. Errors such as running out of file
/// descriptors leave the connection in the backlog, so accepting again at once fails
/// again at once: without the pause the loop would spin and starve every other task.
pub async fn pause_after_accept_error() {
    tokio::time::sleep(ACCEPT_RETRY).await;
}

/// A cap on the connections one listener keeps open at once.
///
/// A connection over the cap is accepted and closed at once: the client sees the close
/// right away instead of hanging in the kernel's backlog, and the connections already
/// open keep their share of memory and file descriptors.
pub struct ConnectionLimit {
    listener: &'static str,
    max: usize,
    permits: Arc<Semaphore>,
    refused: AtomicU64,
    /// When a refusal was last logged, as milliseconds since `started`.
    last_warning_ms: AtomicU64,
    started: Instant,
}

/// How often a listener over its connection cap logs a warning.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl ConnectionLimit {
    /// A cap of `max` open connections (at least one) for the listener named `listener`.
    pub fn new(listener: &'static str, max: usize) -> ConnectionLimit {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            listener,
            max,
            permits: Arc::new(Semaphore::new(max)),
            refused: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// A slot for one more connection, held until the connection ends; `None` (and the
    /// refusal counted and, at most every 10 s, logged) when all are taken.
    pub fn admit(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                listener = self.listener,
                %peer,
                max_connections = self.max,
                refused_total = refused,
                "connection limit reached; closing new connections until some end"
            );
        }
        None
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Connections closed at once because the cap was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_past_the_cap_are_refused_until_one_ends() {
        let limit = ConnectionLimit::new("test", 2);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = limit.admit(peer).expect("first");
        let _b = limit.admit(peer).expect("second");
        assert!(limit.admit(peer).is_none());
        assert!(limit.admit(peer).is_none());
        assert_eq!((limit.open(), limit.refused()), (2, 2));
        drop(a);
        assert!(limit.admit(peer).is_some());
        assert_eq!(limit.refused(), 2);
    }
}
