//! [`PluginHost`]: the serving chain behind an `ArcSwap`, and everything that replaces
//! it: reloads on demand (admin endpoint), and on SIGHUP and file changes (`watch.rs`).
//!
//! A reload reads the TOML, reads every plugin file, compiles what is new (in a
//! blocking task, once per version), pre-instantiates, runs `init` with the stage's
//! config and checks the plugin implements the stage (the self-check). Only when every
//! stage passes is the new chain stored; requests already running keep the `Arc` of the
//! old chain and finish on it. A failed reload leaves the old chain serving and records
//! why (log line, `hawser_plugin_reloads_total{result="failed"}`, [`ReloadStatus`]).
//! Stages whose plugin bytes and settings did not change are carried over as they are
//! (warm instances, counters and quarantine state included), also when only a default
//! `prewarm`/`max_idle` moved because other stages came or went. A new chain's stages
//! start pre-warming only once it serves, so a failed reload holds no instance slots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::cache::Digest;
use super::chain::Chain;
use super::config::ChainSpec;
use super::engine::Runtime;
use super::error::PluginError;
use super::metrics::{ReloadResult, StageMetrics};
use super::reload_inputs::{check_runtime, fingerprint, read_config, read_plugins, Stamps};
use super::reload_status::Running;
pub use super::reload_status::{ReloadOutcome, ReloadStatus, ReloadTrigger};
use super::stage::Stage;
use super::types::Role;
use super::types::StageKind;

/// The plugin chain of one process role, swappable while traffic flows.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    file: PathBuf,
    role: Role,
    current: ArcSwap<Chain>,
    pub(super) reload_lock: tokio::sync::Mutex<()>,
    status: Mutex<ReloadStatus>,
    metrics: StageMetrics,
    /// The plugin files the config named when it was last read, loaded or not: a
    /// reload that failed on a plugin not yet (fully) written is retried when it lands.
    named_plugins: Mutex<Vec<PathBuf>>,
    /// The config and plugin files as the last load or reload read them: the watcher
    /// compares later changes with these.
    read_stamps: Mutex<Stamps>,
    /// Admin reload requests waiting for the running reload to finish.
    pub(super) admin_waiting: std::sync::atomic::AtomicU32,
    /// Refuse a reload to a chain without a credential stage (set by
    /// [`PluginHost::require_credential_stage`]).
    require_credential: std::sync::atomic::AtomicBool,
}

impl PluginHost {
    /// Loads `file` for `role`, building the runtime from its `[runtime]` section. Fails
    /// (and the process should refuse to start) when the config or any plugin is bad.
    ///
    /// Each host owns its runtime: a reload drops compiled components its chains no
    /// longer use from the runtime's cache, which would be wrong for a shared one.
    pub async fn load(
        file: impl Into<PathBuf>,
        role: Role,
    ) -> Result<Arc<PluginHost>, PluginError> {
        let file = file.into();
        let read = read_config(&file, role).await?;
        let spec = read.spec?;
        let runtime = Runtime::new(spec.runtime.clone())?;
        let metrics = StageMetrics::default();
        let plugins = read_plugins(&spec).await?;
        let chain = build(&runtime, &metrics, spec, plugins, None, 1).await?;
        for stage in &chain.stages {
            stage.fit_instances();
        }
        metrics.reload(ReloadResult::Ok, 1);
        tracing::info!(file = %file.display(), role = %role, stages = chain.stages.len(), "plugin chain loaded");
        let status = ReloadStatus {
            generation: 1,
            ok: 1,
            failed: 0,
            reloading: false,
            last_result: "ok",
            last_trigger: ReloadTrigger::Startup,
            last_error: None,
            last_attempt_unix_ms: unix_ms(),
            stages: chain.stages(),
        };
        Ok(Arc::new(PluginHost {
            runtime,
            file,
            role,
            current: ArcSwap::from_pointee(chain),
            reload_lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(status),
            metrics,
            named_plugins: Mutex::new(read.named),
            read_stamps: Mutex::new(read.stamps),
            admin_waiting: std::sync::atomic::AtomicU32::new(0),
            require_credential: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The chain serving requests now. Take it once per request and run every phase on
    /// it.
    pub fn chain(&self) -> Arc<Chain> {
        self.current.load_full()
    }

    /// The config file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The runtime (engine, cache) this host uses.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Counters of every stage, reloads included.
    pub fn metrics(&self) -> &StageMetrics {
        &self.metrics
    }

    /// From now on a reload to a chain without a credential stage fails (and the
    /// running chain keeps serving): the process was started with one and without
    /// `allow_unauthenticated`, so such a chain would refuse every request.
    pub fn require_credential_stage(&self) {
        self.require_credential
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn check_credential_stage(&self, spec: &ChainSpec, old: &Chain) -> Result<(), PluginError> {
        if spec.stages.iter().any(|s| s.kind == StageKind::Credential) {
            return Ok(());
        }
        if self
            .require_credential
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(PluginError::Config {
                file: spec.file.clone(),
                key: "stage".into(),
                reason: "no credential stage: nothing would verify callers and \
                         allow_unauthenticated is off"
                    .into(),
            });
        }
        if old.has(StageKind::Credential) {
            tracing::warn!(
                file = %spec.file.display(),
                "the new chain has no credential stage: requests are forwarded with no verified user (allow_unauthenticated)"
            );
        }
        Ok(())
    }

    /// The reload state.
    pub fn status(&self) -> ReloadStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.stages = self.chain().stages();
        s
    }

    /// The reload state as JSON.
    pub fn status_json(&self) -> String {
        serde_json::to_string(&self.status()).unwrap_or_else(|_| "{}".into())
    }

    /// Rebuilds the chain from the files and swaps it in when everything passes; on
    /// error the old chain keeps serving. Reloads run one at a time.
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadOutcome, PluginError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let _running = Running::start(&self.status);
        let old = self.chain();
        let result = async {
            // One read of the config serves both the plugins to watch and the chain, so
            // the two always agree.
            let read = read_config(&self.file, self.role).await?;
            *self.named_plugins.lock().unwrap_or_else(|p| p.into_inner()) = read.named;
            *self.read_stamps.lock().unwrap_or_else(|p| p.into_inner()) = read.stamps;
            let spec = read.spec?;
            check_runtime(&self.runtime, &spec)?;
            self.check_credential_stage(&spec, &old)?;
            let plugins = read_plugins(&spec).await?;
            if fingerprint(&spec, &plugins) == old.fingerprint {
                return Ok(None);
            }
            build(
                &self.runtime,
                &self.metrics,
                spec,
                plugins,
                Some(&old),
                old.generation + 1,
            )
            .await
            .map(Some)
        }
        .await;
        if !matches!(result, Ok(Some(_))) {
            // Components compiled for a chain that was not swapped in would otherwise
            // stay in memory until the next successful reload.
            let keep: Vec<Digest> = old.stages.iter().map(|s| s.digest).collect();
            self.runtime.cache().retain(&keep);
        }
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_trigger = trigger;
        status.last_attempt_unix_ms = unix_ms();
        match result {
            Ok(None) => {
                status.last_result = "unchanged";
                status.last_error = None;
                self.metrics.reload(ReloadResult::Unchanged, old.generation);
                Ok(ReloadOutcome::Unchanged(old.generation))
            }
            Ok(Some(chain)) => {
                let generation = chain.generation;
                let keep: Vec<Digest> = chain.stages.iter().map(|s| s.digest).collect();
                let gone: Vec<Arc<Stage>> = old
                    .stages
                    .iter()
                    .filter(|o| !chain.stages.iter().any(|n| Stage::same(o, n)))
                    .cloned()
                    .collect();
                let chain = Arc::new(chain);
                self.current.store(chain.clone());
                // Pooled instances of stages that left the chain would otherwise hold
                // instance slots until the last in-flight request on the old chain ends.
                for stage in gone {
                    stage.retire();
                }
                for stage in &chain.stages {
                    stage.fit_instances();
                }
                self.runtime.cache().retain(&keep);
                status.generation = generation;
                status.ok += 1;
                status.last_result = "ok";
                status.last_error = None;
                self.metrics.reload(ReloadResult::Ok, generation);
                tracing::info!(file = %self.file.display(), ?trigger, generation, "plugin chain reloaded");
                Ok(ReloadOutcome::Swapped(generation))
            }
            Err(e) => {
                status.failed += 1;
                status.last_result = "failed";
                status.last_error = Some(e.to_string());
                self.metrics.reload(ReloadResult::Failed, old.generation);
                tracing::error!(file = %self.file.display(), ?trigger, error = %e, generation = old.generation, "plugin chain reload failed; the previous chain keeps serving");
                Err(e)
            }
        }
    }

    /// Files whose change should trigger a reload: the config, every plugin of the
    /// serving chain, and every plugin the config named when last read (so a reload
    /// that failed because a new plugin was missing or half-written runs again when
    /// the file lands).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        for path in self
            .chain()
            .stages
            .iter()
            .map(|s| s.plugin_path().to_path_buf())
            .chain(
                self.named_plugins
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned(),
            )
        {
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files
    }

    /// Each watched file with its stamp from just before the last load or reload read
    /// it, or, for a file that read did not stamp, its stamp now.
    pub(crate) fn read_stamps(&self) -> Stamps {
        let read = self.read_stamps.lock().unwrap_or_else(|p| p.into_inner());
        self.watched_files()
            .into_iter()
            .map(|f| {
                let s = match read.iter().find(|(p, _)| *p == f) {
                    Some((_, s)) => *s,
                    None => crate::files::stamp(&f),
                };
                (f, s)
            })
            .collect()
    }
}

/// Builds a chain from `spec` and its plugin files, carrying over unchanged stages of
/// `old`.
async fn build(
    runtime: &Arc<Runtime>,
    metrics: &StageMetrics,
    spec: ChainSpec,
    plugins: Vec<(Vec<u8>, Digest)>,
    old: Option<&Chain>,
    generation: u64,
) -> Result<Chain, PluginError> {
    let fp = fingerprint(&spec, &plugins);
    let mut stages = Vec::with_capacity(spec.stages.len());
    for (s, (bytes, d)) in spec.stages.into_iter().zip(plugins) {
        let carried = old.and_then(|c| {
            c.stages
                .iter()
                .find(|o| o.digest == d && o.spec.same_but_held(&s))
        });
        let stage = match carried {
            Some(o) if o.spec == s => o.clone(),
            Some(o) => Arc::new(o.resized(s)),
            None => {
                let (name, plugin) = (s.name.clone(), s.plugin.clone());
                let stage = Stage::load(runtime.clone(), s, Arc::new(bytes), d, metrics)
                    .await
                    .map_err(|reason| PluginError::Plugin {
                        file: spec.file.clone(),
                        stage: name,
                        plugin,
                        reason,
                    })?;
                Arc::new(stage)
            }
        };
        stages.push(stage);
    }
    Ok(Chain::new(generation, spec.role, spec.file, fp, stages))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
