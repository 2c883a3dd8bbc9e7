//! Counters of the plugin runtime, with a Prometheus text exposition.
//!
//! One `StageCounters` per stage and plugin version (a reload that keeps a plugin
//! keeps its counters). Versions no chain uses any more stay listed, up to
//! [`KEPT_VERSIONS_PER_STAGE`] per stage name and [`KEPT_VERSIONS`] in all, the oldest
//! going first, so a host reloaded for months does not grow without bound. Families:
//! - `hawser_plugin_invocations_total{stage,kind,plugin,version,digest}`
//! - `hawser_plugin_denials_total{...}`
//! - `hawser_plugin_failures_total{...,reason}` (trap, timeout, memory_limit, ...)
//! - `hawser_plugin_fail_open_total{...}`: failures let through by a fail-open stage
//! - `hawser_plugin_quarantines_total{...}`
//! - `hawser_plugin_cold_starts_total{...}`: fresh instances created on the request path
//!   because none was pre-warmed
//! - `hawser_plugin_call_seconds_bucket{...,le}` / `_sum` / `_count`: a histogram of the
//!   time from taking an instance to the plugin's answer (or its failure), start-up
//!   included for cold starts
//! - `hawser_plugin_memory_peak_bytes{...}`: the most linear memory an instance of the
//!   version grew to, for sizing `memory_mb`
//! - `hawser_plugin_reloads_total{result="ok"|"failed"|"unchanged"}`
//! - `hawser_plugin_chain_generation`
//!
//! The admin route adds `hawser_plugin_instances`, the instances alive in the runtime
//! (each holds one of `runtime.max_instances` slots), and
//! `hawser_plugin_signature_checks_total{result="verified"|"remembered"|"failed"}`,
//! the signature checks plugins asked the host for (`signatures.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::FailureKind;
use super::types::StageKind;

/// Labels of one stage version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Labels {
    pub(crate) stage: String,
    pub(crate) kind: StageKind,
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) digest: String,
}

/// Versions of one stage name whose counters are kept (the serving ones always are).
pub const KEPT_VERSIONS_PER_STAGE: usize = 8;
/// Stage versions whose counters are kept in all (the serving ones always are).
pub const KEPT_VERSIONS: usize = 256;

/// Counters of one stage version.
#[derive(Debug)]
pub(crate) struct StageCounters {
    labels: Labels,
    pub(crate) invocations: AtomicU64,
    pub(crate) denials: AtomicU64,
    pub(crate) fail_open: AtomicU64,
    pub(crate) quarantines: AtomicU64,
    pub(crate) cold_starts: AtomicU64,
    call_nanos: AtomicU64,
    memory_peak: AtomicU64,
    /// Calls per bucket of [`CALL_BUCKETS_US`], the last one past every bound.
    call_buckets: [AtomicU64; CALL_BUCKETS_US.len() + 1],
    failures: [AtomicU64; FailureKind::ALL.len()],
}

/// Upper bounds of the call-time histogram, in microseconds: a reused instance answers
/// in a few microseconds, a cold start takes tens, a budget runs out at milliseconds.
const CALL_BUCKETS_US: [u64; 14] = [
    2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000,
];

impl StageCounters {
    /// Records that an instance had grown to `bytes` of linear memory.
    pub(crate) fn observe_memory(&self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes > self.memory_peak.load(Ordering::Relaxed) {
            self.memory_peak.fetch_max(bytes, Ordering::Relaxed);
        }
    }

    /// Records one call that took `d`.
    pub(crate) fn observe_call(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        let i = CALL_BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(CALL_BUCKETS_US.len());
        self.call_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.call_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A read-out of one stage's counters, summed over its versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageSnapshot {
    /// Calls into the plugin (including failed ones).
    pub invocations: u64,
    /// Denials returned by the plugin.
    pub denials: u64,
    /// Failures let through because the stage is fail-open.
    pub fail_open: u64,
    /// Times a version of this stage was quarantined.
    pub quarantines: u64,
    /// Fresh instances created on the request path because none was pre-warmed.
    pub cold_starts: u64,
    /// The most linear memory an instance of any version grew to, in bytes.
    pub memory_peak_bytes: u64,
    /// Failures by kind.
    pub failures: BTreeMap<FailureKind, u64>,
}

impl StageSnapshot {
    /// Failures of `kind`.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures.get(&kind).copied().unwrap_or(0)
    }
}

/// Result of one reload attempt, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new chain was installed.
    Ok,
    /// The chain was refused; the old one keeps serving.
    Failed,
    /// Nothing changed.
    Unchanged,
}

/// Drops the oldest counters no stage holds (the version left every chain) while
/// `stage` has more than [`KEPT_VERSIONS_PER_STAGE`] or the host more than
/// [`KEPT_VERSIONS`].
fn prune(stages: &mut Vec<Arc<StageCounters>>, stage: &str) {
    let mut of_stage = stages.iter().filter(|c| c.labels.stage == stage).count();
    let mut i = 0;
    while i < stages.len() && (of_stage > KEPT_VERSIONS_PER_STAGE || stages.len() > KEPT_VERSIONS) {
        let c = &stages[i];
        let same = c.labels.stage == stage;
        // Only the registry holds it: no chain (old or serving) has the version.
        if Arc::strong_count(c) == 1 && (same || stages.len() > KEPT_VERSIONS) {
            of_stage -= usize::from(same);
            stages.remove(i);
        } else {
            i += 1;
        }
    }
}

/// All counters of one plugin host.
#[derive(Debug, Default)]
pub struct StageMetrics {
    stages: Mutex<Vec<Arc<StageCounters>>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    reloads_unchanged: AtomicU64,
    generation: AtomicU64,
}

impl StageMetrics {
    /// The counters for `labels`, created on first use.
    pub(crate) fn counters(&self, labels: Labels) -> Arc<StageCounters> {
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = stages.iter().find(|c| c.labels == labels) {
            return c.clone();
        }
        let c = Arc::new(StageCounters {
            labels,
            invocations: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            fail_open: AtomicU64::new(0),
            quarantines: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            call_nanos: AtomicU64::new(0),
            memory_peak: AtomicU64::new(0),
            call_buckets: Default::default(),
            failures: Default::default(),
        });
        stages.push(c.clone());
        prune(&mut stages, &c.labels.stage);
        c
    }

    pub(crate) fn reload(&self, result: ReloadResult, generation: u64) {
        let c = match result {
            ReloadResult::Ok => &self.reloads_ok,
            ReloadResult::Failed => &self.reloads_failed,
            ReloadResult::Unchanged => &self.reloads_unchanged,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// Reload attempts with `result` so far.
    pub fn reloads(&self, result: ReloadResult) -> u64 {
        match result {
            ReloadResult::Ok => &self.reloads_ok,
            ReloadResult::Failed => &self.reloads_failed,
            ReloadResult::Unchanged => &self.reloads_unchanged,
        }
        .load(Ordering::Relaxed)
    }

    /// Counters of stage `name`, summed over every version whose counters are kept
    /// (see [`KEPT_VERSIONS_PER_STAGE`]).
    pub fn snapshot(&self, name: &str) -> StageSnapshot {
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = StageSnapshot::default();
        for c in stages.iter().filter(|c| c.labels.stage == name) {
            s.invocations += c.invocations.load(Ordering::Relaxed);
            s.denials += c.denials.load(Ordering::Relaxed);
            s.fail_open += c.fail_open.load(Ordering::Relaxed);
            s.quarantines += c.quarantines.load(Ordering::Relaxed);
            s.cold_starts += c.cold_starts.load(Ordering::Relaxed);
            s.memory_peak_bytes = s
                .memory_peak_bytes
                .max(c.memory_peak.load(Ordering::Relaxed));
            for k in FailureKind::ALL {
                let n = c.failures[k as usize].load(Ordering::Relaxed);
                if n > 0 {
                    *s.failures.entry(k).or_default() += n;
                }
            }
        }
        s
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let families: [Family; 5] = [
            (
                "hawser_plugin_invocations_total",
                "Calls into a plugin stage.",
                |c| c.invocations.load(Ordering::Relaxed),
            ),
            (
                "hawser_plugin_denials_total",
                "Denials returned by a plugin stage.",
                |c| c.denials.load(Ordering::Relaxed),
            ),
            (
                "hawser_plugin_fail_open_total",
                "Plugin failures let through by a fail-open stage.",
                |c| c.fail_open.load(Ordering::Relaxed),
            ),
            (
                "hawser_plugin_quarantines_total",
                "Times a plugin version was quarantined after repeated faults.",
                |c| c.quarantines.load(Ordering::Relaxed),
            ),
            (
                "hawser_plugin_cold_starts_total",
                "Fresh plugin instances created on the request path because none was pre-warmed.",
                |c| c.cold_starts.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for c in stages.iter() {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(&c.labels), get(c));
            }
        }
        let name = "hawser_plugin_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed calls into a plugin stage, by reason.\n# TYPE {name} counter"
        );
        for c in stages.iter() {
            for k in FailureKind::ALL {
                let n = c.failures[k as usize].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{{},reason=\"{k}\"}} {n}", labels(&c.labels));
            }
        }
        let name = "hawser_plugin_call_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time of plugin calls, from taking an instance to the answer.\n# TYPE {name} histogram"
        );
        for c in stages.iter() {
            let l = labels(&c.labels);
            let mut seen = 0;
            for (i, n) in c.call_buckets.iter().enumerate() {
                seen += n.load(Ordering::Relaxed);
                let le = match CALL_BUCKETS_US.get(i) {
                    Some(us) => format!("{}", *us as f64 / 1e6),
                    None => "+Inf".to_owned(),
                };
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {seen}");
            }
            let secs = c.call_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{{l}}} {secs}\n{name}_count{{{l}}} {seen}");
        }
        let name = "hawser_plugin_memory_peak_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} The most linear memory an instance of a plugin version grew to.\n# TYPE {name} gauge"
        );
        for c in stages.iter() {
            let peak = c.memory_peak.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{}}} {peak}", labels(&c.labels));
        }
        let name = "hawser_plugin_reloads_total";
        let _ = writeln!(
            out,
            "# HELP {name} Chain reload attempts, by result.\n# TYPE {name} counter"
        );
        for (result, n) in [
            ("ok", &self.reloads_ok),
            ("failed", &self.reloads_failed),
            ("unchanged", &self.reloads_unchanged),
        ] {
            let _ = writeln!(
                out,
                "{name}{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let name = "hawser_plugin_chain_generation";
        let _ = writeln!(
            out,
            "# HELP {name} Generation of the chain serving requests.\n# TYPE {name} gauge\n{name} {}",
            self.generation.load(Ordering::Relaxed)
        );
        out
    }
}

/// A counter family: name, help text, and how to read it from one stage version.
type Family = (&'static str, &'static str, fn(&StageCounters) -> u64);

fn labels(l: &Labels) -> String {
    format!(
        "stage=\"{}\",kind=\"{}\",plugin=\"{}\",version=\"{}\",digest=\"{}\"",
        escape(&l.stage),
        l.kind,
        escape(&l.plugin),
        escape(&l.version),
        l.digest
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
