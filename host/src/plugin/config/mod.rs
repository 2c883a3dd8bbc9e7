//! The plugin chain TOML (`config/plugins-<role>.toml`): raw serde structs with
//! `deny_unknown_fields`, then validation into runtime types ([`ChainSpec`]). Every
//! error names the file, the key and the reason.
//!
//! ```toml
//! role = "hub"                       # must match the process role
//!
//! [runtime]                          # optional; changing it needs a restart
//! epoch_tick_ms = 1
//! max_instances = 256
//! max_memory_mb = 128
//! cache_dir = "/var/cache/hawser/plugins"   # relative paths are relative to this file
//! cache_max_entries = 64             # artifacts kept on disk; least recently used go first
//! inline_max_ms = 50                 # longest budget a plugin without WASI runs inline for
//!
//! [[stage]]                          # stages run in file order within their phase
//! name = "tokens"                    # unique; appears in logs, metrics and Status messages
//! kind = "credential"                # credential | impersonation | routing | audit
//! plugin = "plugins/static_token.wasm"  # relative to this file
//! failure = "closed"                 # closed (default) | open (not for impersonation)
//! instances = "fresh"                # fresh (default) | reuse
//! max_uses = 10000                   # reuse only: calls before an instance is retired
//! max_idle = 8                       # reuse only: kept between calls (fewer if < 64 slots)
//! prewarm = 2                        # fresh only: instances created ahead of requests
//!                                    # (held instances must leave half the slots free:
//!                                    #  defaults of max_idle and prewarm shrink to fit)
//! [stage.limits]
//! timeout_ms = 20                    # default 20, audit 50
//! init_timeout_ms = 1000
//! memory_mb = 32
//! concurrency = 64
//! [stage.quarantine]
//! after_faults = 5
//! window_ms = 10000
//! backoff_ms = 5000
//! max_backoff_ms = 300000
//! [stage.grants]                     # capabilities; all off by default
//! stdout = false
//! stderr = false
//! env = { NAME = "value" }
//! read_dirs = { "/etc/hawser/keys" = "/keys" }   # host dir = guest dir, read-only
//! [stage.policy]                     # host-enforced bounds on the plugin's output
//! allow_headers = ["x-hawser-*"]     # routing
//! # allow_users, deny_users, allow_groups, deny_groups, allow_extra, allow_uids:
//! # impersonation
//! [stage.config]                     # handed to the plugin's init() as JSON
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::engine::RuntimeSettings;
use super::error::PluginError;
use super::limits::{Limits, QuarantinePolicy};
use super::sandbox::Grants;
use super::types::{Role, StageKind};
use super::validate::{Pattern, Policy};

mod budget;
mod stage;
use stage::{runs_at, stage};

/// What a stage does when its plugin fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// The request fails with a 500/503 `Status` naming the plugin.
    Closed,
    /// The failure is logged and counted, and the stage is skipped (abstains, keeps the
    /// event). Refused for impersonation stages.
    Open,
}

/// How a stage gets plugin instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceMode {
    /// A new instance (and `init`) for every call: no state survives between requests.
    Fresh,
    /// Instances are kept and reused, each for up to `max_uses` calls.
    Reuse,
}

/// The largest chain file read (a few KiB is typical).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One validated stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpec {
    /// Unique stage name.
    pub name: String,
    /// Which phase it belongs to.
    pub kind: StageKind,
    /// The plugin file (absolute, or relative to the process's working directory).
    pub plugin: PathBuf,
    /// Behaviour on plugin failure.
    pub failure: FailurePolicy,
    /// Fresh or reused instances.
    pub instances: InstanceMode,
    /// Calls per instance before it is retired (reuse only).
    pub max_uses: u64,
    /// Instances kept between calls (reuse only; at most `limits.concurrency`). More
    /// may run during a burst; past this they are torn down after their call, so a
    /// burst does not pin pool slots other stages need.
    pub max_idle: u32,
    /// Fresh instances kept instantiated and initialised ahead of requests (fresh
    /// only; 0 creates each on the request path).
    pub prewarm: u32,
    /// Whether the config sets `prewarm`/`max_idle`. Defaulted ones are lowered until
    /// the chain fits the runtime (`budget.rs`), so they depend on the other stages.
    pub held_explicit: bool,
    /// Time, memory and concurrency limits.
    pub limits: Limits,
    /// When repeated faults quarantine the plugin version.
    pub quarantine: QuarantinePolicy,
    /// Capabilities granted to the plugin.
    pub grants: Grants,
    /// Host-enforced bounds on the plugin's output.
    pub policy: Policy,
    /// The `config` table as JSON, handed to `init`.
    pub config_json: String,
}

/// A validated chain file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSpec {
    /// The file it was read from.
    pub file: PathBuf,
    /// The role it configures.
    pub role: Role,
    /// Engine settings.
    pub runtime: RuntimeSettings,
    /// Stages in file order.
    pub stages: Vec<StageSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    role: RawRole,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    stage: Vec<RawStage>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawRole {
    Hub,
    Agent,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    epoch_tick_ms: Option<u64>,
    max_instances: Option<u32>,
    max_memory_mb: Option<u32>,
    cache_dir: Option<PathBuf>,
    cache_max_entries: Option<u32>,
    inline_max_ms: Option<u64>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Credential,
    Impersonation,
    Routing,
    Audit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    kind: RawKind,
    plugin: PathBuf,
    failure: Option<FailurePolicy>,
    instances: Option<InstanceMode>,
    max_uses: Option<u64>,
    max_idle: Option<u32>,
    prewarm: Option<u32>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    quarantine: RawQuarantine,
    #[serde(default)]
    grants: RawGrants,
    policy: Option<RawPolicy>,
    config: Option<toml::Table>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<u64>,
    init_timeout_ms: Option<u64>,
    memory_mb: Option<u32>,
    concurrency: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    after_faults: Option<u32>,
    window_ms: Option<u64>,
    backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    stdout: bool,
    #[serde(default)]
    stderr: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    read_dirs: BTreeMap<PathBuf, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow_users: Option<Vec<String>>,
    deny_users: Option<Vec<String>>,
    allow_groups: Option<Vec<String>>,
    deny_groups: Option<Vec<String>>,
    allow_extra: Option<Vec<String>>,
    allow_uids: Option<Vec<String>>,
    allow_headers: Option<Vec<String>>,
}

impl ChainSpec {
    /// Reads and validates `file` for `role`.
    pub fn load(file: &Path, role: Role) -> Result<ChainSpec, PluginError> {
        Self::parse(&Self::read(file)?, file, role)
    }

    /// The text of `file`, or an error naming it.
    pub fn read(file: &Path) -> Result<String, PluginError> {
        let err = |reason| PluginError::Config {
            file: file.to_path_buf(),
            key: "(file)".into(),
            reason,
        };
        let bytes = crate::files::read_regular(file, MAX_CONFIG_BYTES).map_err(err)?;
        String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))
    }

    /// The plugin files `text` (read from `file`) names, resolved as
    /// [`ChainSpec::load`] resolves them, without validating anything else (a file that
    /// does not exist yet is listed); empty when `text` is not TOML. The reload watcher
    /// polls them.
    pub fn named_plugins_in(text: &str, file: &Path) -> Vec<PathBuf> {
        let base = file.parent().unwrap_or(Path::new("."));
        let stages = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut d| d.remove("stage"))
            .and_then(|s| s.try_into::<Vec<toml::Table>>().ok())
            .unwrap_or_default();
        stages
            .iter()
            .filter_map(|s| s.get("plugin")?.as_str().map(|p| base.join(p)))
            .collect()
    }

    /// Validates `text` as if read from `file` (relative paths resolve against its
    /// directory).
    pub fn parse(text: &str, file: &Path, role: Role) -> Result<ChainSpec, PluginError> {
        let err = |key: String, reason: String| PluginError::Config {
            file: file.to_path_buf(),
            key,
            reason,
        };
        let de = toml::Deserializer::new(text);
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(document)".into() } else { key };
            let inner = e.into_inner();
            let message = inner.message().trim().replace('\n', "; ");
            // Syntax errors have no key to name: say where they are.
            match inner.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    err(key, format!("line {line}: {message}"))
                }
                None => err(key, message),
            }
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        let file_role = match raw.role {
            RawRole::Hub => Role::Hub,
            RawRole::Agent => Role::Agent,
        };
        if file_role != role {
            return Err(err(
                "role".into(),
                format!("this file configures the {file_role} but the process is the {role}"),
            ));
        }
        let runtime = runtime(&raw.runtime, base, &err)?;
        let mut names = HashSet::new();
        let mut stages = Vec::with_capacity(raw.stage.len());
        for (i, s) in raw.stage.into_iter().enumerate() {
            let at = format!("stage[{i}]");
            if !valid_name(&s.name) {
                return Err(err(
                    format!("{at}.name"),
                    format!(
                        "{:?} must be 1-63 characters of a-z, 0-9, '-' and '_'",
                        s.name
                    ),
                ));
            }
            if !names.insert(s.name.clone()) {
                return Err(err(
                    format!("{at}.name"),
                    format!("{:?} is used twice", s.name),
                ));
            }
            let at = format!("stage[{i}] ({:?})", s.name);
            let spec = stage(s, &at, base, &runtime, &err)?;
            if let Err(why) = runs_at(spec.kind, role) {
                return Err(err(format!("{at}.kind"), why.into()));
            }
            stages.push(spec);
        }
        budget::fit(&mut stages, runtime.max_instances)
            .map_err(|reason| err("runtime.max_instances".into(), reason))?;
        Ok(ChainSpec {
            file: file.to_path_buf(),
            role,
            runtime,
            stages,
        })
    }
}

fn valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

type ErrFn<'a> = dyn Fn(String, String) -> PluginError + 'a;

fn runtime(raw: &RawRuntime, base: &Path, err: &ErrFn<'_>) -> Result<RuntimeSettings, PluginError> {
    let d = RuntimeSettings::default();
    let tick = range(raw.epoch_tick_ms, 1, 100, "runtime.epoch_tick_ms", err)?;
    let max_instances = range(raw.max_instances, 1, 10_000, "runtime.max_instances", err)?;
    let max_memory_mb = range(raw.max_memory_mb, 1, 4096, "runtime.max_memory_mb", err)?;
    let inline_max = range(raw.inline_max_ms, 0, 1000, "runtime.inline_max_ms", err)?;
    let max_entries = range(
        raw.cache_max_entries,
        1,
        100_000,
        "runtime.cache_max_entries",
        err,
    )?;
    if max_entries.is_some() && raw.cache_dir.is_none() {
        return Err(err(
            "runtime.cache_max_entries".into(),
            "only applies with runtime.cache_dir".into(),
        ));
    }
    Ok(RuntimeSettings {
        epoch_tick: tick.map_or(d.epoch_tick, Duration::from_millis),
        max_instances: max_instances.unwrap_or(d.max_instances),
        max_memory_mb: max_memory_mb.unwrap_or(d.max_memory_mb),
        cache_dir: raw.cache_dir.as_ref().map(|p| base.join(p)),
        cache_max_entries: max_entries.map_or(d.cache_max_entries, |n| n as usize),
        inline_max_budget: inline_max.map_or(d.inline_max_budget, Duration::from_millis),
    })
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    v: Option<T>,
    min: T,
    max: T,
    key: &str,
    err: &ErrFn<'_>,
) -> Result<Option<T>, PluginError> {
    match v {
        Some(v) if v < min || v > max => {
            Err(err(key.into(), format!("{v} is outside {min}..={max}")))
        }
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests;
