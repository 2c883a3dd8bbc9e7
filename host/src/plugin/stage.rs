//! One configured stage: a plugin version with its limits, instances, breaker and
//! counters, and the single call path every phase goes through ([`Stage::invoke`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::cache::{hex, Digest};
use super::config::{FailurePolicy, InstanceMode, StageSpec};
use super::engine::Runtime;
use super::error::{FailureKind, PluginFailure};
use super::header_filter::{self, HeaderFilter};
use super::instance::{Call, CallError, Instance, Reply, Template};
use super::limits::{Breaker, Gate};
use super::metrics::{Labels, StageCounters, StageMetrics};
use super::pool::Instances;
use super::types::{PluginInfo, StageKind};

/// A loaded, self-checked stage.
pub(crate) struct Stage {
    pub(crate) spec: StageSpec,
    pub(crate) digest: Digest,
    /// `file@digest12`, used in failure messages.
    pub(crate) label: String,
    pub(crate) info: PluginInfo,
    /// The request headers the plugin declared it reads; `None`: all.
    pub(crate) headers: Option<HeaderFilter>,
    /// The request headers the plugin declared carry a credential (lower-case).
    pub(crate) credential_headers: Vec<String>,
    template: Arc<Template>,
    instances: Arc<Instances>,
    gate: Arc<Gate>,
    breaker: Arc<Breaker>,
    pub(crate) counters: Arc<StageCounters>,
    runtime: Arc<Runtime>,
}

impl Stage {
    /// Compiles (once per version), pre-instantiates and initialises `spec`'s plugin,
    /// and checks that it implements the stage's kind. With `instances = "reuse"` the
    /// instance used for the check is kept for the first request.
    pub(crate) async fn load(
        runtime: Arc<Runtime>,
        spec: StageSpec,
        bytes: Arc<Vec<u8>>,
        digest: Digest,
        metrics: &StageMetrics,
    ) -> Result<Stage, String> {
        let rt = runtime.clone();
        let component =
            tokio::task::spawn_blocking(move || rt.cache().component(rt.engine(), &bytes, &digest))
                .await
                .map_err(|e| format!("compiler task failed: {e}"))?
                .map_err(|e| format!("not a valid component: {e}"))?;

        let template = Arc::new(Template::new(
            runtime.clone(),
            &component,
            spec.kind,
            spec.name.as_str().into(),
            spec.config_json.clone(),
            spec.grants.clone(),
            spec.limits.memory_bytes,
        )?);
        let (instance, info) = template
            .instantiate(spec.limits.init_timeout)
            .await
            .map_err(|e| format!("self-check failed: {}: {}", e.kind, e.detail))?;
        if !info.stages.contains(&spec.kind) {
            let has: Vec<&str> = info.stages.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "plugin {:?} {:?} does not implement the {} stage (it implements: {})",
                info.name,
                info.version,
                spec.kind,
                has.join(", ")
            ));
        }
        let credential_headers = header_filter::credential_headers(&info.credential_headers)?;
        let headers = HeaderFilter::from_declared(info.request_headers.as_deref())?
            .map(|f| f.with(&credential_headers));
        let instances = Arc::new(match spec.instances {
            InstanceMode::Fresh => Instances::fresh(spec.prewarm as usize),
            InstanceMode::Reuse => Instances::reuse(spec.max_idle as usize, spec.max_uses),
        });
        // The self-check instance has only run `init`: as good as a pre-warmed one.
        // Pre-warming more waits for [`Stage::fit_instances`], once the chain serves: a
        // chain that fails to load or is never swapped in then holds no slots.
        instances.give_back(instance);
        let file = spec
            .plugin
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("{file}@{}", hex(&digest, 6));
        let counters = metrics.counters(Labels {
            stage: spec.name.clone(),
            kind: spec.kind,
            plugin: info.name.clone(),
            version: info.version.clone(),
            digest: hex(&digest, 6),
        });
        Ok(Stage {
            gate: Arc::new(Gate::new(spec.limits.concurrency)),
            breaker: Arc::new(Breaker::new(spec.quarantine.clone())),
            spec,
            digest,
            label,
            info,
            headers,
            credential_headers,
            template,
            instances,
            counters,
            runtime,
        })
    }

    /// This stage under `spec`, which differs from its own at most in `prewarm` and
    /// `max_idle` (a reload lowered or raised defaults to fit the runtime, see
    /// `config/budget.rs`): same plugin version, instances, breaker and counters, so
    /// warm instances and quarantine state carry over. The new numbers apply from
    /// [`Stage::fit_instances`], called once the chain holding it serves.
    pub(crate) fn resized(&self, spec: StageSpec) -> Stage {
        Stage {
            spec,
            digest: self.digest,
            label: self.label.clone(),
            info: self.info.clone(),
            headers: self.headers.clone(),
            credential_headers: self.credential_headers.clone(),
            template: self.template.clone(),
            instances: self.instances.clone(),
            gate: self.gate.clone(),
            breaker: self.breaker.clone(),
            counters: self.counters.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// Whether `a` and `b` are one stage (one is [`Stage::resized`] from the other).
    pub(crate) fn same(a: &Stage, b: &Stage) -> bool {
        Arc::ptr_eq(&a.instances, &b.instances)
    }

    /// Keeps as many instances as this stage's `prewarm`/`max_idle` says.
    pub(crate) fn fit_instances(&self) {
        let keep = match self.spec.instances {
            InstanceMode::Fresh => self.spec.prewarm,
            InstanceMode::Reuse => self.spec.max_idle,
        };
        self.instances.set_keep(keep as usize);
        self.instances
            .refill(&self.template, self.spec.limits.init_timeout);
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn kind(&self) -> StageKind {
        self.spec.kind
    }

    pub(crate) fn plugin_path(&self) -> &Path {
        &self.spec.plugin
    }

    pub(crate) fn fail_open(&self) -> bool {
        self.spec.failure == FailurePolicy::Open
    }

    /// The stage left the serving chain: free its idle instances.
    pub(crate) fn retire(&self) {
        self.instances.retire();
    }

    /// The interfaces the plugin's component imports.
    pub(crate) fn imports(&self) -> &[String] {
        self.template.imports()
    }

    /// Whether calls run inline (`instance::runs_inline`) with the stage's budget.
    pub(crate) fn calls_inline(&self) -> bool {
        self.template.runs_inline(self.spec.limits.timeout)
    }

    /// Instances ready for the next calls: pre-warmed (fresh) or idle (reuse).
    pub(crate) fn ready_instances(&self) -> usize {
        self.instances.ready_count()
    }

    pub(crate) fn is_quarantined(&self) -> bool {
        self.breaker.quarantined(self.runtime.now_ms()).is_some()
    }

    /// Calls the plugin under the stage's limits and checks its reply with `check`.
    /// Any failure (including a refused reply) drops the instance; a fault counts
    /// towards quarantine.
    pub(crate) async fn invoke<T>(
        &self,
        call: Call<'_>,
        check: impl FnOnce(Reply) -> Result<T, (FailureKind, String)>,
    ) -> Result<T, PluginFailure> {
        self.counters.invocations.fetch_add(1, Ordering::Relaxed);
        if let Some(left) = self.breaker.quarantined(self.runtime.now_ms()) {
            return Err(self.fail(
                FailureKind::Quarantined,
                format!(
                    "quarantined after repeated faults, {} ms left",
                    left.as_millis()
                ),
            ));
        }
        let Some(_in_flight) = self.gate.enter() else {
            return Err(self.fail(
                FailureKind::Overloaded,
                format!("{} calls already in flight", self.spec.limits.concurrency),
            ));
        };
        let start = Instant::now();
        let mut instance = match self.instance().await {
            Ok(i) => i,
            Err(e) => {
                self.counters.observe_call(start.elapsed());
                return Err(self.fail(e.kind, e.detail));
            }
        };
        let reply = instance.call(call).await;
        self.counters.observe_call(start.elapsed());
        self.counters.observe_memory(instance.memory_used());
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e.kind, e.detail)),
        };
        match check(reply) {
            Ok(out) => {
                self.instances.give_back(instance);
                // Hands a used fresh instance to the refill task to tear down.
                self.instances
                    .refill(&self.template, self.spec.limits.init_timeout);
                self.breaker.success();
                Ok(out)
            }
            Err((kind, detail)) => Err(self.fail(kind, detail)),
        }
    }

    /// An instance armed with the call's time budget. A kept instance (pre-warmed or
    /// reused) ran `init` under `init_timeout` and gets the full call budget; so does a
    /// new reusable one. A fresh instance created on the request path (a cold start)
    /// has the call budget cover its start-up and `init` too.
    async fn instance(&self) -> Result<Instance, CallError> {
        let limits = &self.spec.limits;
        let kept = self.instances.take();
        if self.instances.is_fresh() {
            self.instances.refill(&self.template, limits.init_timeout);
        }
        if let Some(mut i) = kept {
            i.arm(limits.timeout);
            return Ok(i);
        }
        if self.instances.is_fresh() {
            self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
            return Ok(self.template.instantiate(limits.timeout).await?.0);
        }
        let (mut i, _) = self.template.instantiate(limits.init_timeout).await?;
        i.arm(limits.timeout);
        Ok(i)
    }

    fn fail(&self, kind: FailureKind, detail: String) -> PluginFailure {
        self.counters.failure(kind);
        let failure = PluginFailure::new(&self.spec.name, &self.label, kind, detail);
        tracing::warn!(stage = %self.spec.name, plugin = %self.label, reason = %kind, "{}", failure.message());
        if kind.is_fault() {
            if let Some(backoff) = self.breaker.fault(self.runtime.now_ms()) {
                self.counters.quarantines.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    stage = %self.spec.name,
                    plugin = %self.label,
                    after_faults = self.spec.quarantine.after_faults,
                    backoff_ms = backoff.as_millis() as u64,
                    "plugin version quarantined after repeated faults; calls fail with 503 until the backoff ends or a reload changes the plugin or its stage"
                );
            }
        }
        failure
    }
}
