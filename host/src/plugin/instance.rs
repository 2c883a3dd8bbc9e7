//! Plugin instances: the per-store state, creating an instance from a pre-instantiated
//! component, and calling it under a deadline, inline or on a fiber. The host imports
//! are `host_imports.rs`; what an instance may reach (WASI grants) is `sandbox.rs`.
//!
//! A [`Template`] is one plugin version ready to instantiate: its `InstancePre` (imports
//! already resolved and type-checked) and the export indices of `lifecycle` and of its
//! stage interface. An [`Instance`] is a `Store` with one instantiated, initialised
//! component. How a stage keeps instances (pre-warmed for fresh use, or for reuse) is
//! `pool.rs`.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

pub(crate) use super::call_error::CallError;
use super::call_error::{classify, truncate, wall_clock_exceeded};
use super::engine::{LiveInstance, Runtime};
use super::error::FailureKind;
use super::exports::{ExportIndices, Funcs};
use super::limits::MemoryCap;
use super::sandbox::{handle_table, Grants};
use super::signatures::SignatureChecks;
use super::types::{
    AuditDecision, Candidate, Denial, PluginInfo, Principal, RouteChoice, StageKind,
};
use super::view::{AuditEventView, RequestView};

/// The data of every plugin `Store`.
pub(crate) struct StoreState {
    /// `None` for a component that imports no WASI (see `sandbox.rs`).
    pub(super) wasi: Option<WasiCtx>,
    pub(super) table: ResourceTable,
    pub(crate) memory: MemoryCap,
    /// Epoch ticks the guest may still run for in the current call.
    pub(super) ticks_left: u64,
    /// The length of one epoch tick.
    pub(super) tick: Duration,
    /// Whether the guest runs inline in the current call (see [`runs_inline`]): then
    /// the deadline can only continue or interrupt, since there is no fiber to yield.
    pub(super) inline: bool,
    pub(super) stage: Arc<str>,
    pub(super) log_lines: u32,
    /// The process's signature checks (`host.verify-signature`).
    pub(super) signatures: Arc<SignatureChecks>,
    /// Counts this store in [`Runtime::live_instances`] while it exists.
    _live: LiveInstance,
}

/// Bytes one call may hand the host (a result, or the arguments of one host call).
/// The largest legal result, a principal at every limit of `validate`, is about 1 MiB.
pub(crate) const MAX_LIFT_BYTES: usize = 4 << 20;

/// One call into a stage, borrowed from the caller.
pub(crate) enum Call<'a> {
    Credential(&'a RequestView<'a>),
    Impersonation(&'a Principal, &'a RequestView<'a>),
    Routing(&'a RequestView<'a>, Option<&'a Principal>, &'a [Candidate]),
    Audit(&'a AuditEventView<'a>),
}

/// What a stage returned, before host validation.
pub(crate) enum Reply {
    Credential(Result<Option<Principal>, Denial>),
    Impersonation(Result<Option<Principal>, Denial>),
    Routing(Result<Option<RouteChoice>, Denial>),
    Audit(Result<AuditDecision, String>),
}

/// One plugin version, pre-instantiated and ready to create instances of a stage kind.
pub(crate) struct Template {
    runtime: Arc<Runtime>,
    pre: InstancePre<StoreState>,
    exports: ExportIndices,
    config_json: String,
    grants: Grants,
    /// The interfaces the component imports.
    imports: Vec<String>,
    /// Whether any of them is WASI. Building a WASI context (its random generator,
    /// clocks, streams) is a tenth of a `no_std` plugin's fresh instance, so only
    /// these get one.
    imports_wasi: bool,
    memory_bytes: usize,
    stage_name: Arc<str>,
    tick: Duration,
    /// `runtime.inline_max_ms`.
    inline_max: Duration,
}

/// Wall-clock limit of a call (or of start-up and `init`) with time budget `budget`.
///
/// The budget counts epoch ticks while guest code runs, so a guest waiting inside a
/// host call (a WASI `poll` on a timer, which is what `std::thread::sleep` does) would
/// never reach it. This limit ends the call whatever it is doing; it is looser than the
/// budget because time spent queued behind other tasks after a yield does not count
/// against a well-behaved plugin.
pub(crate) fn wall_limit(budget: Duration) -> Duration {
    budget
        .saturating_mul(4)
        .saturating_add(Duration::from_millis(250))
}

/// Whether a guest that imports WASI or not (`imports_wasi`) runs inline for `budget`
/// (on the calling task's own stack, with no fiber and no wall-clock timer), given the
/// runtime's `inline_max` (`runtime.inline_max_ms`).
///
/// A component without WASI imports cannot wait on anything (the host's own imports
/// return at once), so the budget alone bounds its call. Running it inline saves a
/// fiber switch and a timer per call, about a seventh of a reused call in the
/// benchmark; the cost is that it holds its worker thread for up to the budget, so
/// only short budgets (at most `inline_max`, by default 50 ms, which covers the
/// default budgets) run inline. Longer budgets and WASI plugins run on a fiber that
/// yields to other tasks every epoch tick.
pub(crate) fn runs_inline(imports_wasi: bool, budget: Duration, inline_max: Duration) -> bool {
    !imports_wasi && budget <= inline_max
}

/// Epoch ticks for `budget`: rounded up, plus one because the first tick after arming
/// may come at once.
fn ticks(budget: Duration, tick: Duration) -> u64 {
    (budget.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64).max(1) + 1
}

impl Template {
    /// Resolves imports and looks up the exports `kind` needs. Fails when the component
    /// imports something the host does not provide or lacks an export.
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        component: &wasmtime::component::Component,
        kind: StageKind,
        stage_name: Arc<str>,
        config_json: String,
        grants: Grants,
        memory_bytes: usize,
    ) -> Result<Template, String> {
        let pre = runtime
            .linker()
            .instantiate_pre(component)
            .map_err(|e| format!("cannot link: {e:#}"))?;
        let exports = ExportIndices::new(&pre, kind)?;
        let tick = runtime.settings().epoch_tick;
        let imports: Vec<String> = component
            .component_type()
            .imports(runtime.engine())
            .map(|(name, _)| name.to_owned())
            .collect();
        let imports_wasi = imports.iter().any(|name| name.starts_with("wasi:"));
        Ok(Template {
            tick,
            inline_max: runtime.settings().inline_max_budget,
            runtime,
            pre,
            exports,
            config_json,
            grants,
            imports,
            imports_wasi,
            memory_bytes,
            stage_name,
        })
    }

    /// The interfaces the component imports (`hawser:plugin/host@0.2.0`,
    /// `wasi:filesystem/types@0.2.6`, ...).
    pub(crate) fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Whether the guest runs inline for `budget` (see [`runs_inline`]).
    pub(crate) fn runs_inline(&self, budget: Duration) -> bool {
        runs_inline(self.imports_wasi, budget, self.inline_max)
    }

    /// The name of the stage this template serves.
    pub(crate) fn stage_name(&self) -> &str {
        &self.stage_name
    }

    /// Creates and initialises an instance; the guest may run for `budget` in total
    /// (start-up and `init`), and what is left of it carries over to the first call.
    /// Start-up and `init` run inline when [`runs_inline`] allows, and otherwise
    /// together end after [`wall_limit`] of `budget`.
    pub(crate) async fn instantiate(
        &self,
        budget: Duration,
    ) -> Result<(Instance, PluginInfo), CallError> {
        if self.runs_inline(budget) {
            return self.instantiate_within(budget, true).await;
        }
        let limit = wall_limit(budget);
        match tokio::time::timeout(limit, self.instantiate_within(budget, false)).await {
            Ok(result) => result,
            Err(_) => Err(wall_clock_exceeded(limit)),
        }
    }

    async fn instantiate_within(
        &self,
        budget: Duration,
        inline: bool,
    ) -> Result<(Instance, PluginInfo), CallError> {
        let wasi = if self.imports_wasi {
            Some(self.grants.wasi_ctx().map_err(|e| CallError {
                kind: FailureKind::Instantiate,
                detail: format!("granting capabilities: {e}"),
            })?)
        } else {
            None
        };
        let state = StoreState {
            wasi,
            table: handle_table(),
            memory: MemoryCap::new(self.memory_bytes),
            ticks_left: ticks(budget, self.tick),
            tick: self.tick,
            inline,
            stage: self.stage_name.clone(),
            log_lines: 0,
            signatures: self.runtime.signatures().clone(),
            _live: self.runtime.live_instance(),
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.memory);
        // Bytes the host copies out of the guest per call (results, import arguments).
        // wasmtime's default is 128 MiB, far above any legal output, and a result can
        // name the same guest bytes many times over.
        store.set_hostcall_fuel(MAX_LIFT_BYTES);
        // The budget counts ticks while the guest runs; time spent queued after a yield
        // does not count, so a busy host does not fail well-behaved plugins.
        store.epoch_deadline_callback(|mut ctx| {
            let left = &mut ctx.data_mut().ticks_left;
            if *left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            *left -= 1;
            // On a fiber, let other tasks run while a long call continues.
            Ok(if ctx.data().inline {
                UpdateDeadline::Continue(1)
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);

        let instance = if inline {
            self.pre.instantiate(&mut store)
        } else {
            self.pre.instantiate_async(&mut store).await
        };
        let instance = match instance {
            Ok(i) => i,
            Err(e) => return Err(classify(&e, &store, FailureKind::Instantiate)),
        };
        let funcs = self
            .exports
            .load(&mut store, &instance)
            .map_err(|e| CallError {
                kind: FailureKind::Instantiate,
                detail: format!("{e:#}"),
            })?;
        let info = match funcs.init(&mut store, &self.config_json, inline).await {
            Ok(Ok(info)) => info,
            Ok(Err(reason)) => {
                return Err(CallError {
                    kind: FailureKind::Instantiate,
                    detail: format!("init refused the configuration: {}", truncate(&reason, 512)),
                })
            }
            Err(e) => return Err(classify(&e, &store, FailureKind::Trap)),
        };
        Ok((
            Instance {
                store,
                funcs,
                uses: 0,
                tick: self.tick,
                budget,
                imports_wasi: self.imports_wasi,
                inline_max: self.inline_max,
            },
            info,
        ))
    }
}

/// A store with one initialised instance of a stage.
pub(crate) struct Instance {
    store: Store<StoreState>,
    funcs: Funcs,
    pub(crate) uses: u64,
    tick: Duration,
    /// The budget armed last.
    budget: Duration,
    imports_wasi: bool,
    inline_max: Duration,
}

impl Instance {
    /// Bytes of linear memory this instance has grown to.
    pub(crate) fn memory_used(&self) -> usize {
        self.store.data().memory.used()
    }

    /// Gives the next call a fresh time budget.
    pub(crate) fn arm(&mut self, budget: Duration) {
        self.budget = budget;
        self.store.data_mut().ticks_left = ticks(budget, self.tick);
    }

    /// Calls the stage within the budget armed last: inline when [`runs_inline`]
    /// allows, else on a fiber and within the budget's [`wall_limit`] too. When the
    /// wall-clock limit ends a call, the guest is unwound where it waited; the caller
    /// must drop the instance, as after any failed call.
    pub(crate) async fn call(&mut self, call: Call<'_>) -> Result<Reply, CallError> {
        self.uses += 1;
        self.store.data_mut().log_lines = 0;
        self.store.set_epoch_deadline(1);
        let inline = runs_inline(self.imports_wasi, self.budget, self.inline_max);
        self.store.data_mut().inline = inline;
        let store = &mut self.store;
        if inline {
            return (self.funcs.call(store, call, true).await)
                .map_err(|e| classify(&e, store, FailureKind::Trap));
        }
        let limit = wall_limit(self.budget);
        match tokio::time::timeout(limit, self.funcs.call(store, call, false)).await {
            Ok(result) => result.map_err(|e| classify(&e, store, FailureKind::Trap)),
            Err(_) => Err(wall_clock_exceeded(limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::RuntimeSettings;
    use super::*;

    #[test]
    fn only_short_budgets_without_wasi_run_inline() {
        let ms = Duration::from_millis;
        let max = RuntimeSettings::default().inline_max_budget;
        // The default budgets: 20 ms, and 50 ms for audit.
        assert!(runs_inline(false, ms(20), max));
        assert!(runs_inline(false, ms(50), max));
        assert!(!runs_inline(false, ms(51), max));
        // A WASI plugin may wait in a host call, where no deadline fires.
        assert!(!runs_inline(true, ms(1), max));
        // `inline_max_ms = 0`: every plugin on a fiber.
        assert!(!runs_inline(false, ms(1), Duration::ZERO));
    }
}
