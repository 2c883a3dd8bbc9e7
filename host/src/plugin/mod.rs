//! The WebAssembly stage runtime.
//!
//! Hawser's per-request stages (credential check, impersonation, routing, audit) run
//! as WebAssembly components (WIT package `hawser:plugin@0.2.0`, in `wit/plugin.wit`)
//! that operators chain in TOML and swap while traffic flows.
//!
//! # Using it from the proxy
//!
//! ```ignore
//! let plugins = PluginHost::load("config/plugins-hub.toml", Role::Hub).await?; // refuse to start on Err
//! let _watch = plugin::watch(&plugins, WatchOptions::default())?;               // files + SIGHUP
//!
//! // per request: one chain version for every phase
//! let chain = plugins.chain();
//! let who = chain.check_credential(&head).await?;            // Option<Principal>
//! let as_whom = match &who {
//!     Some(p) => chain.impersonate(p, &head).await?,         // Option<Principal> → Impersonate-*
//!     None => None,
//! };
//! let choice = chain.route(&head, who.as_ref(), &candidates).await?; // Option<RouteChoice>
//! let event = chain.audit(event).await?;                     // Option<AuditEvent> to record
//! // Err(rejection): answer rejection.http_status() with rejection.status_json()
//! ```
//!
//! Admin: [`PluginHost::admin`] serves `POST /plugins/reload`, `GET /plugins/status` and
//! `GET /plugins/metrics`.
//!
//! # Layout
//! - [`types`]: the records crossing the boundary (generated from the WIT).
//! - `bindings`: `bindgen!` for the WIT, once.
//! - [`engine`]: the one `Engine` (pooling allocator, epoch ticker) and `Linker`.
//! - `cache`: compiled artifacts by content hash and engine fingerprint.
//! - `instance`: stores, capability grants, creating and calling an instance;
//!   `host_imports`: logging, the clock and signature verification for plugins.
//! - `exports`: the export functions a stage calls, type-checked once per plugin version.
//! - `view`: borrowed request and audit records, lowered without copying.
//! - `header_filter`: the request headers each plugin declared it reads.
//! - `pool`: fresh instances pre-warmed ahead of requests, or reused instances.
//! - [`limits`]: time, memory and concurrency limits; the quarantine breaker.
//! - `stage`: one configured plugin and its single call path.
//! - [`chain`]: the phases over an ordered list of stages.
//! - [`config`]: the TOML schema and its validation.
//! - [`reload`]: the `ArcSwap` and reloads; `watch`: file watch and SIGHUP;
//!   `admin_routes`: the admin routes.
//! - [`validate`]: checks on plugin output.
//! - [`error`], [`metrics`]: failures and counters.
//! - [`testing`]: locating freshly built plugins from tests.

mod admin_routes;
mod bindings;
mod cache;
mod call_error;
pub mod chain;
pub mod config;
pub mod engine;
pub mod error;
mod exports;
mod header_filter;
mod host_imports;
mod instance;
pub mod limits;
pub mod metrics;
mod pool;
pub mod reload;
mod reload_inputs;
mod reload_status;
mod sandbox;
mod signatures;
mod stage;
pub mod testing;
pub mod types;
pub mod validate;
mod view;
mod watch;

pub use cache::CacheStats;
pub use chain::{Chain, StageInfo};
pub use config::{ChainSpec, FailurePolicy, InstanceMode, StageSpec};
pub use engine::{Runtime, RuntimeSettings};
pub use error::{ErrorSource, FailureKind, PluginError, PluginFailure, Rejection};
pub use metrics::{ReloadResult, StageMetrics, StageSnapshot};
pub use reload::{PluginHost, ReloadOutcome, ReloadStatus, ReloadTrigger};
pub use reload_inputs::MAX_PLUGIN_BYTES;
pub use sandbox::Grants;
pub use signatures::SignatureCounts;
pub use types::*;
pub use watch::{watch, WatchOptions, Watcher};
