//! Counters and health of each audit sink, shared by [`super::AuditLog`] and the
//! sink's task, with a Prometheus text exposition:
//! - `hawser_audit_events_total{sink}`: events accepted
//! - `hawser_audit_record_waits_total{sink}`: blocking-mode waits for room
//! - `hawser_audit_refusals_total{sink}`: fail-closed refusals
//! - `hawser_audit_spooled_total{sink}`: events written to the spool
//! - `hawser_audit_delivered_total{sink}`: events written or acknowledged
//! - `hawser_audit_delivery_failures_total{sink}`: failed writes or POSTs
//! - `hawser_audit_lost_total{sink}`: events neither delivered nor kept at shutdown
//! - `hawser_audit_spool_corrupt_lines_total{sink}`: torn spool lines skipped
//! - gauges `hawser_audit_queue_events`, `hawser_audit_spool_bytes`,
//!   `hawser_audit_sink_failing`

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters and health of one sink.
#[derive(Debug, Default)]
pub(crate) struct SinkShared {
    pub(crate) recorded: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) refusals: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    /// Start of the current failure streak.
    failing_since: Mutex<Option<Instant>>,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl SinkShared {
    /// A write or POST failed; starts the streak if none is running.
    pub(crate) fn failed(&self) {
        add(&self.failures, 1);
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        since.get_or_insert_with(Instant::now);
    }

    /// A write or POST succeeded; ends the streak.
    pub(crate) fn succeeded(&self, events: usize) {
        add(&self.delivered, events as u64);
        *self.failing_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How long the sink has been failing, if it is.
    pub(crate) fn failing_for(&self) -> Option<Duration> {
        let since = *self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        since.map(|s| s.elapsed())
    }
}

/// A read-out of one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSnapshot {
    /// `file` or `webhook`.
    pub sink: &'static str,
    /// Events accepted by `record`.
    pub recorded: u64,
    /// Times `record` waited for room (blocking mode).
    pub waits: u64,
    /// Times `record` refused an event (fail-closed mode).
    pub refusals: u64,
    /// Events written to the spool.
    pub spooled: u64,
    /// Events written to the file or acknowledged by the webhook.
    pub delivered: u64,
    /// Failed writes or POSTs (each retry counts).
    pub failures: u64,
    /// Events neither delivered nor kept at shutdown (logged as errors).
    pub lost: u64,
    /// Spool lines skipped because a crash tore them.
    pub corrupt: u64,
    /// Events in the memory queue now.
    pub queued: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// How long the sink has been failing, if it is.
    pub failing_for: Option<Duration>,
}

impl SinkShared {
    pub(crate) fn snapshot(
        &self,
        sink: &'static str,
        queued: u64,
        spool_bytes: u64,
    ) -> SinkSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkSnapshot {
            sink,
            recorded: get(&self.recorded),
            waits: get(&self.waits),
            refusals: get(&self.refusals),
            spooled: get(&self.spooled),
            delivered: get(&self.delivered),
            failures: get(&self.failures),
            lost: get(&self.lost),
            corrupt: get(&self.corrupt),
            queued,
            spool_bytes,
            failing_for: self.failing_for(),
        }
    }
}

/// The Prometheus text for `sinks`.
pub(crate) fn render(sinks: &[SinkSnapshot]) -> String {
    type Field = fn(&SinkSnapshot) -> u64;
    let families: [(&str, &str, &str, Field); 11] = [
        (
            "hawser_audit_events_total",
            "counter",
            "Events accepted.",
            |s| s.recorded,
        ),
        (
            "hawser_audit_record_waits_total",
            "counter",
            "Blocking-mode waits for room.",
            |s| s.waits,
        ),
        (
            "hawser_audit_refusals_total",
            "counter",
            "Fail-closed refusals.",
            |s| s.refusals,
        ),
        (
            "hawser_audit_spooled_total",
            "counter",
            "Events written to the spool.",
            |s| s.spooled,
        ),
        (
            "hawser_audit_delivered_total",
            "counter",
            "Events written or acknowledged.",
            |s| s.delivered,
        ),
        (
            "hawser_audit_delivery_failures_total",
            "counter",
            "Failed writes or POSTs.",
            |s| s.failures,
        ),
        (
            "hawser_audit_lost_total",
            "counter",
            "Events not kept at shutdown.",
            |s| s.lost,
        ),
        (
            "hawser_audit_spool_corrupt_lines_total",
            "counter",
            "Torn spool lines skipped.",
            |s| s.corrupt,
        ),
        (
            "hawser_audit_queue_events",
            "gauge",
            "Events in the memory queue.",
            |s| s.queued,
        ),
        (
            "hawser_audit_spool_bytes",
            "gauge",
            "Bytes in the spool.",
            |s| s.spool_bytes,
        ),
        (
            "hawser_audit_sink_failing",
            "gauge",
            "1 while the sink is failing.",
            |s| u64::from(s.failing_for.is_some()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in sinks {
            let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", s.sink, field(s));
        }
    }
    out
}
