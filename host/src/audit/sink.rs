//! [`AuditLog`]: the handle the proxy records events into.
//!
//! Each configured sink (file, webhook) has a bounded memory queue drained by its
//! own task (see `task`). The webhook's queue overflows into its on-disk spool.
//! When neither has room, the configured [`Mode`] decides: `blocking` waits (the
//! request is held up, the event is kept), `fail-closed` returns an error so the
//! request is refused. Nothing is dropped silently: every wait and refusal is
//! counted, and events that cannot be kept at shutdown are logged and counted.

use super::config::{AuditSettings, Mode};
use super::events::Event;
use super::file::FileSink;
use super::metrics::{add, render, SinkShared};
use super::policy::Policy;
use super::spool::{AppendError, Spool};
use super::task::{Backend, SinkTask};
use super::webhook::WebhookClient;
use super::AuditError;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use super::metrics::SinkSnapshot;

/// A cheap, cloneable handle to the audit sinks.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    failure_grace: Duration,
    policy: Arc<Policy>,
    pipelines: Vec<Pipeline>,
    tracker: TaskTracker,
}

/// The producer side of one sink.
struct Pipeline {
    sink: &'static str,
    tx: mpsc::Sender<Bytes>,
    spool: Option<Arc<Spool>>,
    shared: Arc<SinkShared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks: Vec<_> = self.inner.pipelines.iter().map(|p| p.sink).collect();
        f.debug_struct("AuditLog")
            .field("mode", &self.inner.mode)
            .field("sinks", &sinks)
            .finish_non_exhaustive()
    }
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens the configured sinks and spawns their tasks on the current runtime.
    /// When `shutdown` is cancelled the tasks stop taking events, flush what is
    /// queued (bounded by `shutdown_flush`; webhook leftovers go to the spool) and
    /// end; [`AuditLog::drained`] waits for that.
    ///
    /// Must be called inside a Tokio runtime (it spawns the sink tasks).
    pub fn start(
        settings: &AuditSettings,
        shutdown: CancellationToken,
    ) -> Result<AuditLog, AuditError> {
        let tracker = TaskTracker::new();
        let mut pipelines = Vec::new();
        let mut spawn = |sink: &'static str,
                         backend: Backend,
                         spool: Option<Arc<Spool>>,
                         span: tracing::Span| {
            let (tx, rx) = mpsc::channel(settings.queue_size);
            let shared = Arc::new(SinkShared::default());
            let task = SinkTask::new(
                backend,
                spool.clone(),
                shared.clone(),
                settings.shutdown_flush,
            );
            tracker.spawn(task.run(rx, shutdown.clone()).instrument(span));
            pipelines.push(Pipeline {
                sink,
                tx,
                spool,
                shared,
            });
        };
        if let Some(f) = &settings.file {
            let sink = FileSink::open(f.clone())?;
            let span = tracing::info_span!("audit_sink", sink = "file", path = %f.path.display());
            spawn("file", Backend::file(sink, f.clone()), None, span);
        }
        if let Some(w) = &settings.webhook {
            let client = WebhookClient::new(w)?;
            let spool = Arc::new(Spool::open(&w.spool_dir, w.spool_max_bytes)?);
            let span = tracing::info_span!("audit_sink", sink = "webhook", url = %w.url);
            spawn("webhook", Backend::webhook(client, w), Some(spool), span);
        }
        tracker.close();
        Ok(AuditLog {
            inner: Arc::new(Inner {
                mode: settings.mode,
                failure_grace: settings.failure_grace,
                policy: settings.policy.clone(),
                pipelines,
                tracker,
            }),
        })
    }

    /// The policy to evaluate requests with (see [`super::RequestAudit::new`]).
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Hands `event` to every sink. In blocking mode this waits while the sinks
    /// are full; in fail-closed mode it returns an error at once. `Err` means the
    /// event was not recorded (by at least one sink): refuse the request with
    /// [`AuditError::status`].
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        let line = Bytes::from(serde_json::to_vec(&event)?);
        if self.inner.mode == Mode::FailClosed {
            // Check every sink first, so a failing sink does not leave the event
            // in the others for a request that is then refused.
            for p in &self.inner.pipelines {
                self.check_health(p)?;
            }
        }
        for p in &self.inner.pipelines {
            self.push(p, line.clone()).await?;
            add(&p.shared.recorded, 1);
        }
        Ok(())
    }

    /// Fail-closed mode, for a request that will be audited but whose first event
    /// comes later (the policy omits `RequestReceived`): whether its events could be
    /// recorded now. `Err` refuses the request before it is forwarded, as recording
    /// `RequestReceived` would have. Other modes always admit.
    pub fn admit(&self) -> Result<(), AuditError> {
        if self.inner.mode != Mode::FailClosed {
            return Ok(());
        }
        for p in &self.inner.pipelines {
            self.check_health(p)?;
            let spool_full = p.spool.as_ref().is_none_or(|s| s.bytes() >= s.max_bytes);
            if p.tx.capacity() == 0 && spool_full {
                add(&p.shared.refusals, 1);
                return Err(AuditError::RefusedQueueFull {
                    sink: p.sink,
                    capacity: p.tx.max_capacity(),
                });
            }
        }
        Ok(())
    }

    fn check_health(&self, p: &Pipeline) -> Result<(), AuditError> {
        match p.shared.failing_for() {
            Some(failing_for) if failing_for > self.inner.failure_grace => {
                add(&p.shared.refusals, 1);
                Err(AuditError::RefusedSinkFailing {
                    sink: p.sink,
                    failing_for,
                })
            }
            _ => Ok(()),
        }
    }

    async fn push(&self, p: &Pipeline, line: Bytes) -> Result<(), AuditError> {
        let Some(spool) = &p.spool else {
            return self.push_queue(p, line).await;
        };
        let mut waited = false;
        loop {
            let mut st = spool.lock().await;
            if st.closed {
                return Err(AuditError::Closed);
            }
            if !st.active {
                match p.tx.try_send(line.clone()) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(AuditError::Closed),
                    // From here on, events go to the spool until it is replayed.
                    Err(mpsc::error::TrySendError::Full(_)) => st.active = true,
                }
            }
            // Register for wake-ups before releasing the lock, so room freed in
            // between is not missed (the task frees room under the same lock).
            let room = spool.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match spool.append(&mut st, &line) {
                Ok(()) => {
                    add(&p.shared.spooled, 1);
                    return Ok(());
                }
                Err(AppendError::Io(e)) => return Err(e),
                Err(AppendError::Full) => self.full(p, spool.max_bytes, &mut waited)?,
            }
            drop(st);
            room.await;
        }
    }

    /// Spool full: fail-closed refuses, blocking counts one wait per event.
    fn full(&self, p: &Pipeline, max_bytes: u64, waited: &mut bool) -> Result<(), AuditError> {
        if self.inner.mode == Mode::FailClosed {
            add(&p.shared.refusals, 1);
            return Err(AuditError::RefusedSpoolFull {
                sink: p.sink,
                max_bytes,
            });
        }
        if !*waited {
            *waited = true;
            add(&p.shared.waits, 1);
        }
        Ok(())
    }

    async fn push_queue(&self, p: &Pipeline, line: Bytes) -> Result<(), AuditError> {
        match p.tx.try_send(line) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
            Err(mpsc::error::TrySendError::Full(line)) => {
                if self.inner.mode == Mode::FailClosed {
                    add(&p.shared.refusals, 1);
                    return Err(AuditError::RefusedQueueFull {
                        sink: p.sink,
                        capacity: p.tx.max_capacity(),
                    });
                }
                add(&p.shared.waits, 1);
                p.tx.send(line).await.map_err(|_| AuditError::Closed)
            }
        }
    }

    /// Counters and gauges of every sink.
    pub fn metrics(&self) -> Vec<SinkSnapshot> {
        self.inner
            .pipelines
            .iter()
            .map(|p| {
                let queued = (p.tx.max_capacity() - p.tx.capacity()) as u64;
                let spool_bytes = p.spool.as_ref().map_or(0, |s| s.bytes());
                p.shared.snapshot(p.sink, queued, spool_bytes)
            })
            .collect()
    }

    /// The metrics in Prometheus text format, for the admin `/metrics` page.
    pub fn render_metrics(&self) -> String {
        render(&self.metrics())
    }

    /// Waits until every sink task has flushed and ended (after shutdown).
    pub async fn drained(&self) {
        self.inner.tracker.wait().await
    }
}
