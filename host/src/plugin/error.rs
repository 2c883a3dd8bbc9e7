//! Errors of the plugin runtime.
//!
//! Three families, kept apart so status codes and metrics come from types, not text:
//! - [`PluginError`]: loading or reloading a chain failed (bad config, a plugin that does
//!   not compile, instantiate, initialise or pass its self-check). The process refuses to
//!   start, or a reload keeps the old chain.
//! - [`PluginFailure`]: one call into a plugin failed (trap, timeout, memory cap, illegal
//!   output, overload, quarantine). The request fails closed with a 500/503 `Status`
//!   unless the stage is fail-open.
//! - [`Rejection`]: what a phase hands back to the proxy instead of a result: either a
//!   plugin's [`Denial`] or a [`PluginFailure`].

use std::fmt;
use std::path::PathBuf;

use super::types::{status_json, Denial, DenialKind, Principal};

/// Where a load error comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The operator's TOML.
    Config,
    /// A plugin file or what it did while loading.
    Plugin,
    /// The host itself (I/O on the cache, engine setup).
    Internal,
}

/// Loading or reloading a chain failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The configuration is invalid.
    #[error("{file}: {key}: {reason}")]
    Config {
        /// The TOML file.
        file: PathBuf,
        /// The offending key, e.g. `stage[1].limits.memory_mb`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plugin could not be loaded, initialised or self-checked.
    #[error("{file}: stage {stage:?} ({plugin}): {reason}")]
    Plugin {
        /// The TOML file that configures the stage.
        file: PathBuf,
        /// The stage name.
        stage: String,
        /// The plugin file.
        plugin: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The host failed (engine setup, cache I/O, a task that panicked).
    #[error("plugin runtime: {0}")]
    Internal(String),
}

impl PluginError {
    /// Where the error comes from.
    pub fn source_kind(&self) -> ErrorSource {
        match self {
            PluginError::Config { .. } => ErrorSource::Config,
            PluginError::Plugin { .. } => ErrorSource::Plugin,
            PluginError::Internal(_) => ErrorSource::Internal,
        }
    }
}

/// Why a call into a plugin failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    Trap,
    /// The call ran past the stage's time budget.
    Timeout,
    /// The guest tried to grow its memory past the stage's cap.
    MemoryLimit,
    /// The guest returned a value the host refused (see `validate`).
    IllegalOutput,
    /// The guest reported an error instead of a decision (audit `decide` returned `err`).
    Error,
    /// The stage already had `concurrency` calls in flight.
    Overloaded,
    /// This plugin version is quarantined after repeated faults.
    Quarantined,
    /// A new instance could not be created (instance pool exhausted, `init` failed).
    Instantiate,
}

impl FailureKind {
    /// Every kind, for metrics exposition.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::MemoryLimit,
        FailureKind::IllegalOutput,
        FailureKind::Error,
        FailureKind::Overloaded,
        FailureKind::Quarantined,
        FailureKind::Instantiate,
    ];

    /// Label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::IllegalOutput => "illegal_output",
            FailureKind::Error => "error",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Quarantined => "quarantined",
            FailureKind::Instantiate => "instantiate",
        }
    }

    /// HTTP status for a fail-closed request: 500 when the plugin misbehaved, 503 when
    /// it is (maybe temporarily) unable to serve.
    pub fn http_status(self) -> u16 {
        match self {
            FailureKind::Trap
            | FailureKind::MemoryLimit
            | FailureKind::IllegalOutput
            | FailureKind::Error => 500,
            FailureKind::Timeout
            | FailureKind::Overloaded
            | FailureKind::Quarantined
            | FailureKind::Instantiate => 503,
        }
    }

    /// Whether this failure counts towards quarantining the plugin version: the guest
    /// itself misbehaved, as opposed to the host shedding load.
    pub fn is_fault(self) -> bool {
        !matches!(self, FailureKind::Overloaded | FailureKind::Quarantined)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed call into a plugin. The proxy turns it into a Kubernetes `Status`
/// ([`PluginFailure::status_json`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginFailure {
    /// The stage name from the TOML.
    pub stage: String,
    /// The plugin, as `file@digest` (first 12 hex digits of its SHA-256).
    pub plugin: String,
    /// What went wrong.
    pub kind: FailureKind,
    /// HTTP status for the client (500 or 503).
    pub http_status: u16,
    /// A short, client-safe detail (no paths, no guest memory contents).
    pub detail: String,
}

/// Longest [`PluginFailure::detail`], in bytes.
const MAX_DETAIL: usize = 1024;

impl PluginFailure {
    pub(crate) fn new(stage: &str, plugin: &str, kind: FailureKind, mut detail: String) -> Self {
        // Details quote plugin output in bounded form; this is the backstop.
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        PluginFailure {
            stage: stage.to_owned(),
            plugin: plugin.to_owned(),
            kind,
            http_status: kind.http_status(),
            detail,
        }
    }

    /// The message shown to clients and in logs; it names the stage and the plugin.
    pub fn message(&self) -> String {
        format!(
            "plugin stage {:?} ({}) failed: {}: {}",
            self.stage, self.plugin, self.kind, self.detail
        )
    }

    /// Kubernetes `Status.reason`: `InternalError` (500) or `ServiceUnavailable` (503).
    pub fn reason(&self) -> &'static str {
        if self.http_status == 500 {
            "InternalError"
        } else {
            "ServiceUnavailable"
        }
    }

    /// A Kubernetes `Status` body for this failure.
    pub fn status_json(&self) -> String {
        status_json(self.http_status, self.reason(), &self.message())
    }
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for PluginFailure {}

/// A phase did not produce a result: a plugin denied the request, or a plugin failed
/// and its stage is fail-closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A plugin (or the host, when every credential stage abstained) denied the request.
    Denied {
        /// The stage that denied it (`"host"` when the host did).
        stage: String,
        /// The denial, as validated by the host.
        denial: Denial,
    },
    /// A fail-closed stage failed.
    Failed(PluginFailure),
}

impl Rejection {
    /// Who a credential stage verified before refusing with 403, if it said so
    /// (`denial.principal`); audit records name this user.
    pub fn verified_principal(&self) -> Option<&Principal> {
        match self {
            Rejection::Denied { denial, .. } if denial.kind == DenialKind::Forbidden => {
                denial.principal.as_ref()
            }
            _ => None,
        }
    }

    /// HTTP status for the client.
    pub fn http_status(&self) -> u16 {
        match self {
            Rejection::Denied { denial, .. } => denial.http_status(),
            Rejection::Failed(f) => f.http_status,
        }
    }

    /// A Kubernetes `Status` body for the client.
    pub fn status_json(&self) -> String {
        match self {
            Rejection::Denied { denial, .. } => denial.status_json(),
            Rejection::Failed(f) => f.status_json(),
        }
    }

    /// The failure, when this is one.
    pub fn failure(&self) -> Option<&PluginFailure> {
        match self {
            Rejection::Failed(f) => Some(f),
            Rejection::Denied { .. } => None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Denied { stage, denial } => {
                write!(f, "denied by stage {stage:?}: {}", denial.message)
            }
            Rejection::Failed(failure) => f.write_str(&failure.message()),
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_details_are_bounded() {
        let f = PluginFailure::new("s", "p.wasm@0", FailureKind::Trap, "é".repeat(4096));
        assert!(
            f.detail.len() <= MAX_DETAIL + '…'.len_utf8(),
            "{}",
            f.detail.len()
        );
        assert!(f.detail.ends_with('…'));
        let short = PluginFailure::new("s", "p.wasm@0", FailureKind::Trap, "trap".into());
        assert_eq!(short.detail, "trap");
    }
}
