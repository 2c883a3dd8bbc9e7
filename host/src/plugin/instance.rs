//! Plugin instances: the per-store state, the host imports, creating an instance from a
//! pre-instantiated component, calling it under a deadline, and keeping instances for
//! reuse.
//!
//! A [`Template`] is one plugin version ready to instantiate: its `InstancePre` (imports
//! already resolved and type-checked) and the export indices of `lifecycle` and of its
//! stage interface. An [`Instance`] is a `Store` with one instantiated, initialised
//! component. Instances are fresh per call or kept in an [`Instances`] pool, as the
//! stage configures. An instance that trapped, timed out, hit its memory cap or returned
//! an illegal value is dropped, never reused; so is one whose call was cancelled.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{audit, credential, host, impersonation, lifecycle, routing};
use super::engine::Runtime;
use super::error::FailureKind;
use super::limits::MemoryCap;
use super::types::{
    AuditDecision, AuditEvent, Candidate, Denial, PluginInfo, Principal, RequestHead, RouteChoice,
    StageKind,
};

/// Capabilities granted to a plugin (`[stage.grants]`). Everything is off by default:
/// no stdio, no environment, no files; sockets are never granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Grants {
    /// Guest stdout goes to the host's stdout.
    pub stdout: bool,
    /// Guest stderr goes to the host's stderr.
    pub stderr: bool,
    /// Environment variables visible to the guest.
    pub env: Vec<(String, String)>,
    /// Host directories preopened read-only, as `(host path, guest path)`.
    pub read_dirs: Vec<(PathBuf, String)>,
}

impl Grants {
    fn wasi_ctx(&self) -> wasmtime::Result<WasiCtx> {
        let mut b = WasiCtxBuilder::new();
        if self.stdout {
            b.inherit_stdout();
        }
        if self.stderr {
            b.inherit_stderr();
        }
        for (k, v) in &self.env {
            b.env(k, v);
        }
        for (host, guest) in &self.read_dirs {
            b.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Ok(b.build())
    }
}

/// The data of every plugin `Store`.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    /// Epoch ticks the guest may still run for in the current call.
    ticks_left: u64,
    stage: Arc<str>,
    log_lines: u32,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

const MAX_LOG_LINES: u32 = 32;
const MAX_LOG_BYTES: usize = 1024;

impl host::Host for StoreState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(stage = %self.stage, "plugin log: further lines of this call dropped");
            }
            return;
        }
        let mut end = message.len().min(MAX_LOG_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let msg = message[..end].escape_debug();
        let stage = &*self.stage;
        match level {
            host::LogLevel::Trace => tracing::trace!(stage, "plugin: {msg}"),
            host::LogLevel::Debug => tracing::debug!(stage, "plugin: {msg}"),
            host::LogLevel::Info => tracing::info!(stage, "plugin: {msg}"),
            host::LogLevel::Warn => tracing::warn!(stage, "plugin: {msg}"),
            host::LogLevel::Error => tracing::error!(stage, "plugin: {msg}"),
        }
    }

    fn now(&mut self) -> host::Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        host::Timestamp {
            seconds: d.as_secs(),
            nanoseconds: d.subsec_nanos(),
        }
    }

    fn verify_signature(
        &mut self,
        key: host::PublicKey,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        use ring::signature as sig;
        match key {
            host::PublicKey::Ed25519(k) => sig::UnparsedPublicKey::new(&sig::ED25519, k)
                .verify(&message, &signature)
                .is_ok(),
            host::PublicKey::Es256(k) => {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, k)
                    .verify(&message, &signature)
                    .is_ok()
            }
            host::PublicKey::Rs256(k) => sig::RsaPublicKeyComponents {
                n: k.modulus,
                e: k.exponent,
            }
            .verify(&sig::RSA_PKCS1_2048_8192_SHA256, &message, &signature)
            .is_ok(),
            host::PublicKey::Ps256(k) => sig::RsaPublicKeyComponents {
                n: k.modulus,
                e: k.exponent,
            }
            .verify(&sig::RSA_PSS_2048_8192_SHA256, &message, &signature)
            .is_ok(),
        }
    }
}

impl super::bindings::hawser::plugin::types::Host for StoreState {}

/// One call into a stage, borrowed from the caller.
pub(crate) enum Call<'a> {
    Credential(&'a RequestHead),
    Impersonation(&'a Principal, &'a RequestHead),
    Routing(&'a RequestHead, Option<&'a Principal>, &'a [Candidate]),
    Audit(&'a AuditEvent),
}

/// What a stage returned, before host validation.
pub(crate) enum Reply {
    Credential(Result<Option<Principal>, Denial>),
    Impersonation(Result<Option<Principal>, Denial>),
    Routing(Result<Option<RouteChoice>, Denial>),
    Audit(Result<AuditDecision, String>),
}

enum StageIndices {
    Credential(credential::GuestIndices),
    Impersonation(impersonation::GuestIndices),
    Routing(routing::GuestIndices),
    Audit(audit::GuestIndices),
}

enum StageGuest {
    Credential(credential::Guest),
    Impersonation(impersonation::Guest),
    Routing(routing::Guest),
    Audit(audit::Guest),
}

/// A failed instantiation or call, classified.
pub(crate) struct CallError {
    pub(crate) kind: FailureKind,
    pub(crate) detail: String,
}

/// One plugin version, pre-instantiated and ready to create instances of a stage kind.
pub(crate) struct Template {
    runtime: Arc<Runtime>,
    pre: InstancePre<StoreState>,
    lifecycle: lifecycle::GuestIndices,
    stage: StageIndices,
    config_json: String,
    grants: Grants,
    memory_bytes: usize,
    stage_name: Arc<str>,
    tick: Duration,
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
        let lifecycle = lifecycle::GuestIndices::new(&pre).map_err(|e| format!("{e:#}"))?;
        let stage = match kind {
            StageKind::Credential => {
                credential::GuestIndices::new(&pre).map(StageIndices::Credential)
            }
            StageKind::Impersonation => {
                impersonation::GuestIndices::new(&pre).map(StageIndices::Impersonation)
            }
            StageKind::Routing => routing::GuestIndices::new(&pre).map(StageIndices::Routing),
            StageKind::Audit => audit::GuestIndices::new(&pre).map(StageIndices::Audit),
        }
        .map_err(|e| format!("not a {kind} plugin: {e:#}"))?;
        let tick = runtime.settings().epoch_tick;
        Ok(Template {
            tick,
            runtime,
            pre,
            lifecycle,
            stage,
            config_json,
            grants,
            memory_bytes,
            stage_name,
        })
    }

    /// Creates and initialises an instance; the guest may run for `budget` in total
    /// (start-up and `init`), and what is left of it carries over to the first call.
    pub(crate) async fn instantiate(
        &self,
        budget: Duration,
    ) -> Result<(Instance, PluginInfo), CallError> {
        let wasi = self.grants.wasi_ctx().map_err(|e| CallError {
            kind: FailureKind::Instantiate,
            detail: format!("granting capabilities: {e}"),
        })?;
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(self.memory_bytes),
            ticks_left: ticks(budget, self.tick),
            stage: self.stage_name.clone(),
            log_lines: 0,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.memory);
        // The budget counts ticks while the guest runs; time spent queued after a yield
        // does not count, so a busy host does not fail well-behaved plugins.
        store.epoch_deadline_callback(|mut ctx| {
            let left = &mut ctx.data_mut().ticks_left;
            if *left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            *left -= 1;
            // Let other tasks run while a long call continues.
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);

        let instance = match self.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(classify(&e, &store, FailureKind::Instantiate)),
        };
        let loaded = (|| -> wasmtime::Result<(lifecycle::Guest, StageGuest)> {
            let lifecycle = self.lifecycle.load(&mut store, &instance)?;
            let guest = match &self.stage {
                StageIndices::Credential(i) => {
                    StageGuest::Credential(i.load(&mut store, &instance)?)
                }
                StageIndices::Impersonation(i) => {
                    StageGuest::Impersonation(i.load(&mut store, &instance)?)
                }
                StageIndices::Routing(i) => StageGuest::Routing(i.load(&mut store, &instance)?),
                StageIndices::Audit(i) => StageGuest::Audit(i.load(&mut store, &instance)?),
            };
            Ok((lifecycle, guest))
        })();
        let (lifecycle, guest) = loaded.map_err(|e| CallError {
            kind: FailureKind::Instantiate,
            detail: format!("{e:#}"),
        })?;
        let info = match lifecycle.call_init(&mut store, &self.config_json).await {
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
                guest,
                uses: 0,
                tick: self.tick,
            },
            info,
        ))
    }
}

/// A store with one initialised instance of a stage.
pub(crate) struct Instance {
    store: Store<StoreState>,
    guest: StageGuest,
    uses: u64,
    tick: Duration,
}

impl Instance {
    /// Gives the next call a fresh time budget.
    pub(crate) fn arm(&mut self, budget: Duration) {
        self.store.data_mut().ticks_left = ticks(budget, self.tick);
    }

    /// Calls the stage within the budget armed last.
    pub(crate) async fn call(&mut self, call: Call<'_>) -> Result<Reply, CallError> {
        self.uses += 1;
        self.store.data_mut().log_lines = 0;
        self.store.set_epoch_deadline(1);
        let store = &mut self.store;
        let result = match (&self.guest, call) {
            (StageGuest::Credential(g), Call::Credential(req)) => {
                g.call_check(&mut *store, req).await.map(Reply::Credential)
            }
            (StageGuest::Impersonation(g), Call::Impersonation(who, req)) => g
                .call_apply(&mut *store, who, req)
                .await
                .map(Reply::Impersonation),
            (StageGuest::Routing(g), Call::Routing(req, who, candidates)) => g
                .call_route(&mut *store, req, who, candidates)
                .await
                .map(Reply::Routing),
            (StageGuest::Audit(g), Call::Audit(event)) => {
                g.call_decide(&mut *store, event).await.map(Reply::Audit)
            }
            _ => {
                return Err(CallError {
                    kind: FailureKind::Trap,
                    detail: "host error: call does not match the stage kind".into(),
                })
            }
        };
        result.map_err(|e| classify(&e, store, FailureKind::Trap))
    }
}

/// How a stage gets instances.
pub(crate) enum Instances {
    /// A new instance for every call.
    Fresh,
    /// Instances are kept and reused up to `max_uses` calls each.
    Reuse {
        idle: Mutex<Vec<Instance>>,
        max_idle: usize,
        max_uses: u64,
        /// Set when the stage left the serving chain: keep nothing more.
        retired: AtomicBool,
    },
}

impl Instances {
    pub(crate) fn reuse(max_idle: usize, max_uses: u64) -> Self {
        Instances::Reuse {
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            max_uses,
            retired: AtomicBool::new(false),
        }
    }

    /// Drops idle instances and keeps none from now on (the stage left the serving
    /// chain; requests still running on it create instances as needed).
    pub(crate) fn retire(&self) {
        if let Instances::Reuse { idle, retired, .. } = self {
            retired.store(true, Ordering::Relaxed);
            idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// An idle instance, if the stage reuses instances and one is available.
    pub(crate) fn take(&self) -> Option<Instance> {
        match self {
            Instances::Fresh => None,
            Instances::Reuse { idle, .. } => idle.lock().unwrap_or_else(|p| p.into_inner()).pop(),
        }
    }

    /// Returns a healthy instance after a successful call; drops it otherwise.
    pub(crate) fn give_back(&self, instance: Instance) {
        if let Instances::Reuse {
            idle,
            max_idle,
            max_uses,
            retired,
        } = self
        {
            if instance.uses < *max_uses && !retired.load(Ordering::Relaxed) {
                let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < *max_idle {
                    idle.push(instance);
                }
            }
        }
    }

    pub(crate) fn is_reuse(&self) -> bool {
        matches!(self, Instances::Reuse { .. })
    }
}

fn classify(err: &wasmtime::Error, store: &Store<StoreState>, default: FailureKind) -> CallError {
    if store.data().memory.exceeded {
        return CallError {
            kind: FailureKind::MemoryLimit,
            detail: format!(
                "memory cap of {} MiB exceeded",
                store.data().memory_cap_mib()
            ),
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError {
            kind: FailureKind::Timeout,
            detail: "time budget exceeded".into(),
        },
        Some(trap) => CallError {
            kind: FailureKind::Trap,
            detail: format!("wasm trap: {trap}"),
        },
        None => CallError {
            kind: default,
            detail: truncate(&err.to_string(), 256),
        },
    }
}

impl StoreState {
    fn memory_cap_mib(&self) -> usize {
        self.memory.max() / (1024 * 1024)
    }
}

fn truncate(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let mut end = first.len().min(max);
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    first[..end].escape_debug().to_string()
}
