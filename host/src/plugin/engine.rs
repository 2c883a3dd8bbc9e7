//! The one wasmtime [`Engine`] of a process, its [`Linker`], the epoch ticker and the
//! compiled-artifact cache, bundled as a [`Runtime`].
//!
//! Engine choices (see `wasm-hosting.md` §7):
//! - pooling allocator: instance slots, memories, tables and fiber stacks are reserved
//!   once, so instantiating from an `InstancePre` costs microseconds;
//! - copy-on-write memory initialisation;
//! - epoch interruption, with a ticker thread advancing the epoch every `epoch_tick`;
//!   each call sets its own deadline from the stage's time budget.
//!
//! Engine settings cannot change on reload (a reload that changes `[runtime]` is refused).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::cache::{ArtifactCache, CacheStats};
use super::error::PluginError;
use super::instance::StoreState;
use super::signatures::{SignatureChecks, SignatureCounts};

/// Process-wide settings of the plugin runtime (`[runtime]` in the TOML).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// How often the epoch advances; the granularity of time budgets. Default 1 ms.
    pub epoch_tick: Duration,
    /// Instance slots in the pooling allocator: the most plugin instances alive at once
    /// (in flight plus kept for reuse). Default 256.
    pub max_instances: u32,
    /// The largest linear memory any plugin may be given, in MiB (each stage's
    /// `memory_mb` must fit). Default 128.
    pub max_memory_mb: u32,
    /// Where compiled artifacts are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Artifacts kept in `cache_dir`; past that the least recently used go, except
    /// those of the chain being served or loaded. Default 64.
    pub cache_max_entries: usize,
    /// The longest time budget a plugin without WASI imports runs inline for, on the
    /// calling task without a fiber (`instance::runs_inline`); zero puts every plugin
    /// on a fiber. Default 50 ms, which covers the default budgets.
    pub inline_max_budget: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            epoch_tick: Duration::from_millis(1),
            max_instances: 256,
            max_memory_mb: 128,
            cache_dir: None,
            cache_max_entries: 64,
            inline_max_budget: Duration::from_millis(50),
        }
    }
}

/// The engine, linker, artifact cache and epoch ticker shared by every chain of a process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    settings: RuntimeSettings,
    cache: ArtifactCache,
    ticker: EpochTicker,
    live: Arc<AtomicUsize>,
    signatures: Arc<SignatureChecks>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(settings: RuntimeSettings) -> Result<Arc<Runtime>, PluginError> {
        let engine = Engine::new(&engine_config(&settings))
            .map_err(|e| PluginError::Internal(format!("creating the wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Internal(format!("linking WASI: {e}")))?;
        bindings::Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Internal(format!("linking host imports: {e}")))?;
        let cache = ArtifactCache::new(
            &engine,
            settings.cache_dir.clone(),
            settings.cache_max_entries,
        )?;
        let ticker = EpochTicker::start(engine.clone(), settings.epoch_tick)?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            settings,
            cache,
            ticker,
            live: Arc::new(AtomicUsize::new(0)),
            signatures: Arc::default(),
        }))
    }

    /// The settings the runtime was built with.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// Compilation and cache counters (compiled, loaded from disk, reused from memory).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Plugin stores alive now, each holding (or about to hold) one of the
    /// `max_instances` slots: pre-warmed, idle, running and being torn down.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// How plugins' signature checks went: verified, answered from an earlier pass
    /// (`signatures.rs`), or failed.
    pub fn signature_counts(&self) -> SignatureCounts {
        self.signatures.counts()
    }

    pub(crate) fn signatures(&self) -> &Arc<SignatureChecks> {
        &self.signatures
    }

    /// Counts one store as live until the returned value is dropped.
    pub(crate) fn live_instance(&self) -> LiveInstance {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveInstance(self.live.clone())
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<StoreState> {
        &self.linker
    }

    pub(crate) fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// Milliseconds since the runtime started, as of the last epoch tick: a monotonic
    /// clock for breakers that costs one load on the request path.
    pub(crate) fn now_ms(&self) -> u64 {
        self.ticker.now_ms.load(Ordering::Relaxed)
    }
}

/// One live plugin store, counted in [`Runtime::live_instances`] until dropped.
pub(crate) struct LiveInstance(Arc<AtomicUsize>);

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn engine_config(settings: &RuntimeSettings) -> Config {
    let slots = settings.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A Rust wasip2 component has one component instance, a handful of core instances
    // (the program plus shims), one or two memories and a few tables.
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(4))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        // Per component, at most twice the share the totals assume (core instances,
        // tables) or the same (memories): without these, one component made of many
        // tiny core instances (empty memories, which the memory cap does not count)
        // could take every slot in a single instance.
        .max_core_instances_per_component(MAX_CORE_INSTANCES)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memory_size(settings.max_memory_mb as usize * MIB)
        // Reset the low part of a memory (plugin stack, data, first heap pages) with a
        // memset instead of madvise: fresh instances then skip most page faults and
        // TLB shootdowns. Plugins are linked with a small stack (build-plugins.sh).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        // Return memory to the OS in batches rather than once per instance.
        .decommit_batch_size(16)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), reset only the pages an
        // instance wrote instead of the whole kept-resident region: most of a
        // plugin's memory is never written in one call, and the memset/memcpy of it
        // was a sixth of a fresh instance's cost.
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .wasm_component_model(true);
    config
}

const MIB: usize = 1024 * 1024;
/// Core instances one plugin component may have (a Rust wasip2 plugin has three: the
/// program, and the shim and fix-up modules of its imports).
const MAX_CORE_INSTANCES: u32 = 8;
const KEEP_RESIDENT: usize = 256 * 1024;

/// Advances the engine's epoch every tick, and a coarse millisecond clock with it,
/// until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    now_ms: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, PluginError> {
        let stop = Arc::new(AtomicBool::new(false));
        let now_ms = Arc::new(AtomicU64::new(0));
        let (flag, clock) = (stop.clone(), now_ms.clone());
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("hawser-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                    clock.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            })
            .map_err(|e| PluginError::Internal(format!("starting the epoch ticker: {e}")))?;
        Ok(EpochTicker {
            stop,
            now_ms,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread wakes within one tick; a panic there has nothing to report.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::{Component, Linker};
    use wasmtime::Store;

    /// A component of `n` instances of an empty core module.
    fn core_instances(n: u32) -> Vec<u8> {
        let mut text = String::from("(component (core module $m)");
        for _ in 0..n {
            text.push_str(" (core instance (instantiate $m))");
        }
        text.push(')');
        wat::parse_str(&text).expect("valid WAT")
    }

    #[test]
    fn one_component_cannot_take_more_than_its_share_of_instance_slots() {
        let engine = Engine::new(&engine_config(&RuntimeSettings::default())).unwrap();
        let linker = Linker::<()>::new(&engine);
        let run = |n| -> Result<(), String> {
            let c = Component::new(&engine, core_instances(n)).map_err(|e| format!("{e:#}"))?;
            let mut store = Store::new(&engine, ());
            linker
                .instantiate(&mut store, &c)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(run(MAX_CORE_INSTANCES), Ok(()));
        let err = run(MAX_CORE_INSTANCES + 1).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }
}
