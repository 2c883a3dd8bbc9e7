//! The task behind each sink: drains the memory queue (then the spool) in order,
//! delivers batches with retries, and flushes at shutdown.

use super::config::{FileSettings, WebhookSettings};
use super::file::FileSink;
use super::metrics::{add, SinkShared};
use super::spool::{Next, Segment, Spool};
use super::webhook::WebhookClient;
use super::AuditError;
use crate::tunnel::backoff::Backoff;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events per write for the file sink (one `write` call each).
const FILE_BATCH: usize = 1024;
/// Retry delays for the file sink (a full disk or a permission problem).
const FILE_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

enum Kind {
    /// `None` only while a write runs on the blocking pool (or after it panicked).
    File(Option<FileSink>, FileSettings),
    // Boxed: the hyper client is large and the enum lives for the task's life.
    Webhook(Box<WebhookClient>),
}

/// Where events are delivered, and how they are batched and retried.
pub(crate) struct Backend {
    kind: Kind,
    max_batch: usize,
    max_wait: Duration,
    retry: (Duration, Duration),
}

impl Backend {
    pub(crate) fn file(sink: FileSink, settings: FileSettings) -> Backend {
        Backend {
            kind: Kind::File(Some(sink), settings),
            max_batch: FILE_BATCH,
            max_wait: Duration::ZERO,
            retry: FILE_RETRY,
        }
    }

    pub(crate) fn webhook(client: WebhookClient, s: &WebhookSettings) -> Backend {
        Backend {
            kind: Kind::Webhook(Box::new(client)),
            max_batch: s.max_batch_size,
            max_wait: s.max_batch_wait,
            retry: (s.retry_initial, s.retry_max),
        }
    }

    /// One delivery attempt. On error, `batch` keeps only what was not delivered.
    async fn deliver(&mut self, batch: &mut Vec<Bytes>) -> Result<(), AuditError> {
        match &mut self.kind {
            Kind::Webhook(client) => client.deliver(batch).await,
            Kind::File(slot, settings) => {
                let mut sink = match slot.take() {
                    Some(sink) => sink,
                    None => FileSink::open(settings.clone())?,
                };
                let events = batch.clone();
                // File I/O blocks; keep it off the runtime's workers.
                let joined = tokio::task::spawn_blocking(move || {
                    let result = sink.write_batch(&events);
                    (sink, result)
                })
                .await;
                let (sink, result) =
                    joined.map_err(|e| AuditError::io(&settings.path, std::io::Error::other(e)))?;
                *slot = Some(sink);
                result.map_err(|(written, e)| {
                    batch.drain(..written);
                    e
                })
            }
        }
    }

    /// Syncs the log file to disk (at shutdown).
    async fn sync(&mut self) -> Result<(), AuditError> {
        let Kind::File(slot, settings) = &mut self.kind else {
            return Ok(());
        };
        let Some(mut sink) = slot.take() else {
            return Ok(());
        };
        let joined = tokio::task::spawn_blocking(move || sink.sync()).await;
        joined.map_err(|e| AuditError::io(&settings.path, std::io::Error::other(e)))?
    }
}

/// One sink's task.
pub(crate) struct SinkTask {
    backend: Backend,
    spool: Option<Arc<Spool>>,
    shared: Arc<SinkShared>,
    shutdown_flush: Duration,
}

impl SinkTask {
    pub(crate) fn new(
        backend: Backend,
        spool: Option<Arc<Spool>>,
        shared: Arc<SinkShared>,
        shutdown_flush: Duration,
    ) -> SinkTask {
        SinkTask {
            backend,
            spool,
            shared,
            shutdown_flush,
        }
    }

    /// Drains the queue, then the spool, until `cancel` fires or every
    /// [`super::AuditLog`] is dropped; then flushes.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Bytes>, cancel: CancellationToken) {
        tracing::debug!("audit sink started");
        let mut carry: Option<Bytes> = None;
        loop {
            // Checked first: under steady load the queue is never empty, and the
            // shutdown flush (bounded) must still start.
            if cancel.is_cancelled() {
                let pending: Vec<Bytes> = carry.take().into_iter().collect();
                return self.shutdown(rx, pending).await;
            }
            // 1. The memory queue holds the oldest events.
            if let Some(first) = carry.take().or_else(|| rx.try_recv().ok()) {
                let mut batch = vec![first];
                self.fill(&mut rx, &mut batch, &cancel).await;
                if !self.deliver_retrying(&mut batch, &cancel).await {
                    return self.shutdown(rx, batch).await;
                }
                continue;
            }
            // 2. Then the spool, which only holds events newer than the queue's.
            if let Some(spool) = self.spool.clone() {
                match spool.next(|| rx.is_empty()).await {
                    Ok(Next::QueueFirst) => continue,
                    Ok(Next::Segment(seg)) => {
                        if !self.replay(&spool, &seg, &cancel).await {
                            return self.shutdown(rx, Vec::new()).await;
                        }
                        continue;
                    }
                    Ok(Next::Empty) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "audit spool unusable; retrying");
                        self.shared.failed();
                        if !self.pause(self.backend.retry.1, &cancel).await {
                            return self.shutdown(rx, Vec::new()).await;
                        }
                        continue;
                    }
                }
            }
            // 3. Nothing to do: wait for an event, a spool append or shutdown.
            let spool = self.spool.clone();
            let spooled = async {
                match &spool {
                    Some(s) => s.data.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return self.shutdown(rx, Vec::new()).await,
                got = rx.recv() => match got {
                    Some(event) => carry = Some(event),
                    None => return self.shutdown(rx, Vec::new()).await,
                },
                _ = spooled => {}
            }
        }
    }

    /// Tops `batch` up from the queue, waiting up to `max_wait` for a full batch.
    async fn fill(
        &self,
        rx: &mut mpsc::Receiver<Bytes>,
        batch: &mut Vec<Bytes>,
        cancel: &CancellationToken,
    ) {
        let deadline = Instant::now() + self.backend.max_wait;
        while batch.len() < self.backend.max_batch {
            if let Ok(event) = rx.try_recv() {
                batch.push(event);
                continue;
            }
            if self.backend.max_wait.is_zero() {
                return;
            }
            tokio::select! {
                got = tokio::time::timeout_at(deadline, rx.recv()) => match got {
                    Ok(Some(event)) => batch.push(event),
                    _ => return,
                },
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Delivers `batch`, retrying with backoff. False if `cancel` fired first; the
    /// undelivered rest is then left in `batch`.
    async fn deliver_retrying(
        &mut self,
        batch: &mut Vec<Bytes>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::new(self.backend.retry.0, self.backend.retry.1);
        let mut attempt = 0u64;
        loop {
            let before = batch.len();
            match self.backend.deliver(batch).await {
                Ok(()) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, "audit sink recovered");
                    }
                    self.shared.succeeded(before);
                    return true;
                }
                Err(e) => {
                    add(&self.shared.delivered, (before - batch.len()) as u64);
                    self.shared.failed();
                    // The first failure of a streak is a warning; repeats are quieter.
                    if attempt == 0 {
                        tracing::warn!(error = %e, events = batch.len(), "audit delivery failed; retrying");
                    } else {
                        tracing::debug!(error = %e, attempt, "audit delivery failed again");
                    }
                    attempt += 1;
                    if !self.pause(backoff.next_delay(), cancel).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sleeps for `delay`; false if `cancel` fired first.
    async fn pause(&self, delay: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// Replays one spool segment in batches, recording progress after each.
    async fn replay(&mut self, spool: &Spool, seg: &Segment, cancel: &CancellationToken) -> bool {
        let replay = match spool.read(seg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read audit spool segment; retrying");
                self.shared.failed();
                return self.pause(self.backend.retry.1, cancel).await;
            }
        };
        if replay.corrupt > 0 {
            tracing::error!(
                lines = replay.corrupt,
                "skipped torn lines in the audit spool"
            );
            add(&self.shared.corrupt, replay.corrupt);
        }
        for chunk in replay.events.chunks(self.backend.max_batch) {
            let mut batch: Vec<Bytes> = chunk.iter().map(|(event, _)| event.clone()).collect();
            if !self.deliver_retrying(&mut batch, cancel).await {
                return false;
            }
            if let Some((_, end)) = chunk.last() {
                // Only a crash before the next commit could resend this batch.
                if let Err(e) = spool.commit(seg, *end).await {
                    tracing::warn!(error = %e, "cannot record audit spool progress");
                }
            }
        }
        if let Err(e) = spool.finish(seg).await {
            tracing::warn!(error = %e, "cannot delete a replayed audit spool segment");
        }
        true
    }

    /// Stops intake, then delivers what was queued within `shutdown_flush`. What
    /// is left goes to the spool (webhook) or is logged and counted as lost (file).
    async fn shutdown(mut self, mut rx: mpsc::Receiver<Bytes>, mut pending: Vec<Bytes>) {
        rx.close();
        if let Some(spool) = &self.spool {
            spool.stop_appends().await;
        }
        while let Ok(event) = rx.try_recv() {
            pending.push(event);
        }
        let deadline = Instant::now() + self.shutdown_flush;
        let mut backoff = Backoff::new(self.backend.retry.0, self.backend.retry.1);
        let mut done = 0;
        while done < pending.len() && Instant::now() < deadline {
            let end = (done + self.backend.max_batch).min(pending.len());
            let mut batch = pending[done..end].to_vec();
            match tokio::time::timeout_at(deadline, self.backend.deliver(&mut batch)).await {
                Ok(Ok(())) => {
                    self.shared.succeeded(end - done);
                    done = end;
                }
                Ok(Err(e)) => {
                    let delivered = end - done - batch.len();
                    add(&self.shared.delivered, delivered as u64);
                    done += delivered;
                    self.shared.failed();
                    tracing::warn!(error = %e, "audit flush at shutdown failed; retrying");
                    let delay = backoff
                        .next_delay()
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(delay).await;
                }
                Err(_) => break,
            }
        }
        let rest = &pending[done..];
        match &self.spool {
            Some(spool) => match spool.close(rest).await {
                Ok(()) if !rest.is_empty() => {
                    add(&self.shared.spooled, rest.len() as u64);
                    tracing::info!(
                        events = rest.len(),
                        "audit events kept in the spool for the next start"
                    );
                }
                Ok(()) => {}
                Err(e) => self.lost(rest.len(), &e),
            },
            None if !rest.is_empty() => {
                self.lost(rest.len(), &"not written before the shutdown deadline")
            }
            None => {}
        }
        if let Err(e) = self.backend.sync().await {
            tracing::error!(error = %e, "cannot sync the audit log at shutdown");
        }
        tracing::debug!("audit sink stopped");
    }

    /// Loud on purpose: this is the one place events can be lost (a disk that
    /// refuses writes until the process exits).
    fn lost(&self, n: usize, why: &dyn std::fmt::Display) {
        add(&self.shared.lost, n as u64);
        tracing::error!(events = n, reason = %why, "audit events lost at shutdown");
    }
}
