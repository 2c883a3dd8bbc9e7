//! Per-stage limits: time budget, memory cap, concurrency, and the quarantine breaker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use wasmtime::ResourceLimiter;

use super::types::StageKind;

/// Resource limits of one stage (`[stage.limits]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Time budget of one call (`timeout_ms`), counted in epoch ticks while the guest
    /// runs (time queued behind other tasks after a yield does not count). With fresh
    /// instances it covers `init` too. Default 20 ms, 50 ms for audit. A plugin without
    /// WASI imports runs inline when this is at most `runtime.inline_max_ms` (default
    /// 50 ms; `instance::runs_inline`);
    /// otherwise a call also ends after 4 x `timeout_ms` + 250 ms of wall-clock time,
    /// whatever it waits on.
    pub timeout: Duration,
    /// Time budget of `init` on a reused instance (`init_timeout_ms`). Default 1 s.
    pub init_timeout: Duration,
    /// Linear memory cap per instance, in bytes (`memory_mb`). Default 32 MiB, or
    /// `runtime.max_memory_mb` when that is smaller.
    pub memory_bytes: usize,
    /// Calls allowed in flight at once (`concurrency`); more fail fast as overloaded.
    /// Default 64, or `runtime.max_instances` when that is smaller.
    pub concurrency: u32,
}

impl Limits {
    /// The defaults for a stage of `kind`.
    pub fn defaults(kind: StageKind) -> Limits {
        Limits {
            timeout: Duration::from_millis(match kind {
                StageKind::Audit => 50,
                _ => 20,
            }),
            init_timeout: Duration::from_secs(1),
            memory_bytes: 32 * 1024 * 1024,
            concurrency: 64,
        }
    }
}

/// When repeated faults quarantine a plugin version (`[stage.quarantine]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QuarantinePolicy {
    /// Faults (trap, timeout, memory cap, illegal output) within `window` that trip the
    /// breaker (`after_faults`, default 5).
    pub after_faults: u32,
    /// The window faults are counted in (`window_ms`, default 10 s).
    pub window: Duration,
    /// First quarantine length (`backoff_ms`, default 5 s); doubles on each trip that
    /// follows without a successful call in between.
    pub backoff: Duration,
    /// Longest quarantine (`max_backoff_ms`, default 5 min).
    pub max_backoff: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            after_faults: 5,
            window: Duration::from_secs(10),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Caps the total linear memory of one store and remembers whether the cap was hit.
pub(crate) struct MemoryCap {
    max: usize,
    used: usize,
    pub(crate) exceeded: bool,
}

impl MemoryCap {
    pub(crate) fn new(max: usize) -> Self {
        MemoryCap {
            max,
            used: 0,
            exceeded: false,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Bytes of linear memory the instance has grown to (memories never shrink).
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.used + desired.saturating_sub(current);
        if used > self.max {
            self.exceeded = true;
            wasmtime::bail!("memory cap of {} bytes exceeded", self.max);
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Counts calls in flight; refuses past the limit instead of queueing.
pub(crate) struct Gate {
    in_flight: AtomicU32,
    max: u32,
}

impl Gate {
    pub(crate) fn new(max: u32) -> Self {
        Gate {
            in_flight: AtomicU32::new(0),
            max,
        }
    }

    pub(crate) fn enter(&self) -> Option<GateGuard<'_>> {
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(GateGuard(self))
    }
}

pub(crate) struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Quarantines a plugin version after repeated faults. Times are milliseconds of the
/// runtime's monotonic clock.
pub(crate) struct Breaker {
    policy: QuarantinePolicy,
    /// 0 when closed, else the time the quarantine ends.
    open_until: AtomicU64,
    /// Trips since the last successful call; non-zero means the next success resets it.
    trips: AtomicU32,
    faults: Mutex<VecDeque<u64>>,
}

impl Breaker {
    pub(crate) fn new(policy: QuarantinePolicy) -> Self {
        Breaker {
            policy,
            open_until: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            faults: Mutex::new(VecDeque::new()),
        }
    }

    /// Remaining quarantine, if any.
    pub(crate) fn quarantined(&self, now: u64) -> Option<Duration> {
        let until = self.open_until.load(Ordering::Acquire);
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Records a successful call.
    pub(crate) fn success(&self) {
        if self.trips.load(Ordering::Relaxed) != 0 {
            self.trips.store(0, Ordering::Relaxed);
        }
    }

    /// Records a fault; returns the quarantine length when this fault trips the breaker.
    /// Faults while the breaker is open come from calls that were already running when
    /// it tripped; they are not counted, so one burst trips it once, not once per
    /// `after_faults` calls of the burst.
    pub(crate) fn fault(&self, now: u64) -> Option<Duration> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if self.open_until.load(Ordering::Acquire) > now {
            return None;
        }
        let window = self.policy.window.as_millis() as u64;
        while faults
            .front()
            .is_some_and(|&t| now.saturating_sub(t) > window)
        {
            faults.pop_front();
        }
        faults.push_back(now);
        if (faults.len() as u32) < self.policy.after_faults {
            return None;
        }
        faults.clear();
        let trips = self.trips.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = self
            .policy
            .backoff
            .saturating_mul(1 << trips)
            .min(self.policy.max_backoff);
        self.open_until
            .store(now + backoff.as_millis() as u64, Ordering::Release);
        Some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_trips_after_faults_in_window_and_backs_off() {
        let b = Breaker::new(QuarantinePolicy {
            after_faults: 3,
            window: Duration::from_millis(100),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(120),
        });
        assert_eq!(b.fault(0), None);
        assert_eq!(b.fault(10), None);
        // Outside the window: the first two no longer count.
        assert_eq!(b.fault(500), None);
        assert_eq!(b.fault(510), None);
        assert_eq!(b.fault(520), Some(Duration::from_millis(50)));
        assert_eq!(b.quarantined(530), Some(Duration::from_millis(40)));
        assert_eq!(b.quarantined(570), None);
        for t in [600, 601] {
            assert_eq!(b.fault(t), None);
        }
        assert_eq!(b.fault(602), Some(Duration::from_millis(100)));
        for t in [800, 801] {
            assert_eq!(b.fault(t), None);
        }
        assert_eq!(b.fault(802), Some(Duration::from_millis(120)), "capped");
        b.success();
        for t in [1000, 1001] {
            assert_eq!(b.fault(t), None);
        }
        assert_eq!(b.fault(1002), Some(Duration::from_millis(50)), "reset");
    }

    #[test]
    fn a_burst_of_faults_trips_the_breaker_once() {
        let b = Breaker::new(QuarantinePolicy {
            after_faults: 2,
            window: Duration::from_secs(10),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(300),
        });
        assert_eq!(b.fault(0), None);
        assert_eq!(b.fault(1), Some(Duration::from_millis(50)));
        // Calls in flight when it tripped fail later; they neither extend nor double it.
        for t in 2..40 {
            assert_eq!(b.fault(t), None, "at {t}");
        }
        assert_eq!(b.quarantined(40), Some(Duration::from_millis(11)));
        // After the quarantine, the next trip doubles the backoff once.
        assert_eq!(b.fault(60), None);
        assert_eq!(b.fault(61), Some(Duration::from_millis(100)));
    }

    #[test]
    fn gate_refuses_past_limit() {
        let g = Gate::new(2);
        let a = g.enter().unwrap();
        let _b = g.enter().unwrap();
        assert!(g.enter().is_none());
        drop(a);
        assert!(g.enter().is_some());
    }

    #[test]
    fn memory_cap_counts_all_memories() {
        let mut m = MemoryCap::new(100);
        assert!(m.memory_growing(0, 60, None).unwrap());
        assert!(m.memory_growing(0, 30, None).unwrap());
        assert!(m.memory_growing(30, 50, None).is_err());
        assert!(m.exceeded);
    }
}
