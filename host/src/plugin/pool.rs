//! How a stage gets its instances: fresh ones, pre-warmed ahead of requests, or reused
//! ones, kept between calls.
//!
//! - **Fresh** (`instances = "fresh"`): every call gets an instance nothing has called
//!   before, so no state survives between requests. Creating and initialising one is
//!   most of a fresh call's cost, so the pool keeps `prewarm` of them ready: instantiated
//!   and `init`-ed in a background task, handed out once, then torn down by that task
//!   too. When none is ready the request creates its own (a cold start, counted) and
//!   the pool refills.
//! - **Reuse** (`instances = "reuse"`): an instance goes back to the pool after a
//!   successful call, up to `max_uses` calls.
//!
//! An instance that trapped, timed out, hit its memory cap or returned an illegal value
//! is never given back; nor is one whose call was cancelled (the caller dropped it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::Instrument;

use super::instance::{Instance, Template};

/// The instances one stage keeps.
pub(crate) struct Instances {
    mode: Mode,
    ready: Mutex<Vec<Instance>>,
    /// Used fresh instances waiting for the refill task to tear them down (at most
    /// `keep`; past that the request path drops its own).
    spent: Mutex<Vec<Instance>>,
    /// How many instances to keep ready (changed by [`Instances::set_keep`]).
    keep: AtomicUsize,
    /// Set when the stage left the serving chain: keep nothing more.
    retired: AtomicBool,
    /// A refill task is running (fresh only).
    refilling: AtomicBool,
}

#[derive(Clone, Copy)]
enum Mode {
    Fresh,
    Reuse { max_uses: u64 },
}

impl Instances {
    /// Fresh instances, `prewarm` of them kept ready.
    pub(crate) fn fresh(prewarm: usize) -> Self {
        Self::new(Mode::Fresh, prewarm)
    }

    /// Reused instances, up to `max_idle` kept between calls.
    pub(crate) fn reuse(max_idle: usize, max_uses: u64) -> Self {
        Self::new(Mode::Reuse { max_uses }, max_idle)
    }

    fn new(mode: Mode, keep: usize) -> Self {
        Instances {
            mode,
            ready: Mutex::new(Vec::with_capacity(keep)),
            spent: Mutex::new(Vec::with_capacity(keep)),
            keep: AtomicUsize::new(keep),
            retired: AtomicBool::new(false),
            refilling: AtomicBool::new(false),
        }
    }

    fn ready(&self) -> MutexGuard<'_, Vec<Instance>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spent(&self) -> MutexGuard<'_, Vec<Instance>> {
        self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self) -> usize {
        self.keep.load(Ordering::Relaxed)
    }

    /// Keeps up to `keep` instances from now on (a reload lowered or raised
    /// `prewarm`/`max_idle`); surplus ready ones are dropped now.
    pub(crate) fn set_keep(&self, keep: usize) {
        self.keep.store(keep, Ordering::Relaxed);
        // Torn down after the lock is released.
        let surplus = {
            let mut ready = self.ready();
            let at = keep.min(ready.len());
            ready.split_off(at)
        };
        drop(surplus);
    }

    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self.mode, Mode::Fresh)
    }

    /// Instances ready for the next calls.
    pub(crate) fn ready_count(&self) -> usize {
        self.ready().len()
    }

    /// Drops the kept instances and keeps none from now on (the stage left the serving
    /// chain; requests still running on it create instances as needed).
    pub(crate) fn retire(&self) {
        // Set before the lists are cleared; `give_back` checks it under the list's lock,
        // so an instance given back concurrently is either cleared here or not kept.
        self.retired.store(true, Ordering::Release);
        self.ready().clear();
        self.spent().clear();
    }

    /// A kept instance, if one is ready.
    pub(crate) fn take(&self) -> Option<Instance> {
        self.ready().pop()
    }

    /// Keeps `instance` for a later call if the mode allows it: a fresh instance only
    /// while nothing has called it, a reused one until `max_uses`. A used fresh
    /// instance of a pre-warmed stage is left to the refill task to tear down.
    pub(crate) fn give_back(&self, instance: Instance) {
        let keep = match self.mode {
            Mode::Fresh => instance.uses == 0,
            Mode::Reuse { max_uses } => instance.uses < max_uses,
        };
        if !keep {
            if self.is_fresh() {
                let mut spent = self.spent();
                if !self.retired.load(Ordering::Acquire) && spent.len() < self.keep() {
                    spent.push(instance);
                }
            }
            return;
        }
        let mut ready = self.ready();
        if !self.retired.load(Ordering::Acquire) && ready.len() < self.keep() {
            ready.push(instance);
        }
    }

    fn wants_more(&self) -> bool {
        !self.retired.load(Ordering::Acquire) && self.ready_count() < self.keep()
    }

    /// Whether the refill task has anything to do.
    fn has_work(&self) -> bool {
        self.wants_more() || !self.spent().is_empty()
    }

    /// Fresh stages: in a background task, unless one is running, tears down the used
    /// instances and tops the ready ones up to `prewarm`. Each new instance gets
    /// `init_budget` for start-up and `init`.
    pub(crate) fn refill(self: &Arc<Self>, template: &Arc<Template>, init_budget: Duration) {
        if !self.is_fresh() || !self.has_work() || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, template) = (self.clone(), template.clone());
        let span = tracing::debug_span!("plugin-prewarm", stage = %template.stage_name());
        tokio::spawn(
            async move {
                loop {
                    // Teardown happens after the lock is released.
                    let spent = std::mem::take(&mut *pool.spent());
                    drop(spent);
                    while pool.wants_more() {
                        match template.instantiate(init_budget).await {
                            Ok((instance, _)) => pool.give_back(instance),
                            Err(e) => {
                                // The request path meets the same failure, reports it and
                                // counts it; here it only stops the refill.
                                tracing::debug!(reason = %e.kind, "pre-warming stopped: {}", e.detail);
                                pool.refilling.store(false, Ordering::Release);
                                return;
                            }
                        }
                    }
                    pool.refilling.store(false, Ordering::Release);
                    // A call between the last check and clearing the flag would have
                    // found it set and not started a task: look once more.
                    if !pool.has_work() || pool.refilling.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
            .instrument(span),
        );
    }
}
