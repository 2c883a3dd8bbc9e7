//! The `[audit]` table, embeddable in the hub's and the agent's TOML.
//!
//! [`AuditConfig`] is the raw serde form (`deny_unknown_fields`); [`AuditConfig::validate`]
//! turns it into [`AuditSettings`], loading the policy file, so a bad policy stops
//! the process at start rather than at the first request. See `config/audit.toml`.

use super::policy::Policy;
use crate::config::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What [`crate::audit::AuditLog::record`] does when an event cannot be queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Wait for room: requests slow down, no event is lost.
    #[default]
    Blocking,
    /// Refuse at once (the proxy answers 503), also once the sink has been failing
    /// for longer than `failure_grace`.
    FailClosed,
}

/// `[audit]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Kubernetes audit Policy (YAML), relative to the config file.
    pub policy_file: PathBuf,
    /// `blocking` (default) or `fail-closed`.
    #[serde(default)]
    pub mode: Mode,
    /// Events held in memory per sink before back-pressure, spill or refusal.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Fail-closed: refuse once a sink has failed continuously for this long.
    #[serde(default = "default_failure_grace", with = "humantime_serde")]
    pub failure_grace: Duration,
    /// At shutdown, how long queued events may take to be written or delivered
    /// (undelivered webhook events are kept in the spool).
    #[serde(default = "default_shutdown_flush", with = "humantime_serde")]
    pub shutdown_flush: Duration,
    /// `[audit.file]`: a JSON-lines log.
    #[serde(default)]
    pub file: Option<FileConfig>,
    /// `[audit.webhook]`: batches POSTed to a receiver.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// `[audit.file]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The log file; rotated copies are `<path>.1` (newest) to `<path>.<max_backups>`.
    pub path: PathBuf,
    /// Rotate before the file would exceed this size.
    #[serde(default = "default_max_size_mb")]
    pub max_size_mb: u64,
    /// Rotated files kept; 0 keeps none.
    #[serde(default = "default_max_backups")]
    pub max_backups: u32,
}

/// `[audit.webhook]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://...` endpoint receiving `EventList` batches.
    pub url: String,
    /// PEM CA bundle that the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// Optional bearer token, re-read for every batch (so rotation needs no restart).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Events per POST.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// How long a partial batch waits for more events.
    #[serde(default = "default_max_batch_wait", with = "humantime_serde")]
    pub max_batch_wait: Duration,
    /// Where events go when the memory queue is full; replayed in order.
    pub spool_dir: PathBuf,
    /// Bound on the spool's size on disk.
    #[serde(default = "default_spool_max_mb")]
    pub spool_max_mb: u64,
    /// First retry delay ceiling (full jitter).
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Retry delay ceiling.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Total time for one POST.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_queue_size() -> usize {
    10_000
}
fn default_failure_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_flush() -> Duration {
    Duration::from_secs(5)
}
fn default_max_size_mb() -> u64 {
    100
}
fn default_max_backups() -> u32 {
    10
}
fn default_max_batch_size() -> usize {
    400
}
fn default_max_batch_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_spool_max_mb() -> u64 {
    1024
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Validated audit settings.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The loaded policy.
    pub policy: Arc<Policy>,
    /// Blocking or fail-closed.
    pub mode: Mode,
    /// Memory queue per sink, in events (at least 1).
    pub queue_size: usize,
    /// See [`AuditConfig::failure_grace`].
    pub failure_grace: Duration,
    /// See [`AuditConfig::shutdown_flush`].
    pub shutdown_flush: Duration,
    /// The log file sink, if configured.
    pub file: Option<FileSettings>,
    /// The webhook sink, if configured.
    pub webhook: Option<WebhookSettings>,
}

/// Validated `[audit.file]`.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Absolute or config-relative path, resolved.
    pub path: PathBuf,
    /// Rotation threshold in bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub max_backups: u32,
}

/// Validated `[audit.webhook]`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The endpoint (https).
    pub url: http::Uri,
    /// CA bundle file.
    pub ca_file: PathBuf,
    /// Bearer token file.
    pub token_file: Option<PathBuf>,
    /// Events per POST (at least 1).
    pub max_batch_size: usize,
    /// Wait for a fuller batch.
    pub max_batch_wait: Duration,
    /// Spool directory (created if missing).
    pub spool_dir: PathBuf,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Retry backoff start.
    pub retry_initial: Duration,
    /// Retry backoff cap.
    pub retry_max: Duration,
    /// Per-POST timeout.
    pub request_timeout: Duration,
}

const MB: u64 = 1024 * 1024;

impl AuditConfig {
    /// Validates the table read from `file` (relative paths are relative to its
    /// directory). Errors name the key, e.g. `audit.webhook.url`.
    pub fn validate(&self, file: &Path) -> Result<AuditSettings, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let resolve = |p: &Path| match file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        if self.file.is_none() && self.webhook.is_none() {
            return Err(invalid(
                "audit",
                "configure [audit.file], [audit.webhook] or both".into(),
            ));
        }
        if self.queue_size == 0 {
            return Err(invalid("audit.queue_size", "must be at least 1".into()));
        }
        if self.failure_grace.is_zero() {
            return Err(invalid("audit.failure_grace", "must be above zero".into()));
        }
        let policy = Policy::load(&resolve(&self.policy_file))
            .map_err(|e| invalid("audit.policy_file", e.to_string()))?;
        let file_settings = match &self.file {
            None => None,
            Some(f) => {
                if f.max_size_mb == 0 {
                    return Err(invalid(
                        "audit.file.max_size_mb",
                        "must be at least 1".into(),
                    ));
                }
                Some(FileSettings {
                    path: resolve(&f.path),
                    max_bytes: f.max_size_mb.saturating_mul(MB),
                    max_backups: f.max_backups,
                })
            }
        };
        let webhook = match &self.webhook {
            None => None,
            Some(w) => Some(validate_webhook(w, &invalid, &resolve)?),
        };
        Ok(AuditSettings {
            policy: Arc::new(policy),
            mode: self.mode,
            queue_size: self.queue_size,
            failure_grace: self.failure_grace,
            shutdown_flush: self.shutdown_flush,
            file: file_settings,
            webhook,
        })
    }
}

fn validate_webhook(
    w: &WebhookConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<WebhookSettings, ConfigError> {
    let url: http::Uri = w.url.parse().map_err(|e| {
        invalid(
            "audit.webhook.url",
            format!("`{}` is not a URL: {e}", w.url),
        )
    })?;
    if url.scheme_str() != Some("https") || url.host().is_none() {
        return Err(invalid(
            "audit.webhook.url",
            format!("`{}` must be an https:// URL with a host", w.url),
        ));
    }
    if w.max_batch_size == 0 {
        return Err(invalid(
            "audit.webhook.max_batch_size",
            "must be at least 1".into(),
        ));
    }
    if w.spool_max_mb == 0 {
        return Err(invalid(
            "audit.webhook.spool_max_mb",
            "must be at least 1".into(),
        ));
    }
    if w.retry_initial.is_zero() {
        return Err(invalid(
            "audit.webhook.retry_initial",
            "must be above zero".into(),
        ));
    }
    if w.retry_max < w.retry_initial {
        return Err(invalid(
            "audit.webhook.retry_max",
            "must not be below retry_initial".into(),
        ));
    }
    if w.request_timeout.is_zero() {
        return Err(invalid(
            "audit.webhook.request_timeout",
            "must be above zero".into(),
        ));
    }
    Ok(WebhookSettings {
        url,
        ca_file: resolve(&w.ca_file),
        token_file: w.token_file.as_deref().map(resolve),
        max_batch_size: w.max_batch_size,
        max_batch_wait: w.max_batch_wait,
        spool_dir: resolve(&w.spool_dir),
        spool_max_bytes: w.spool_max_mb.saturating_mul(MB),
        retry_initial: w.retry_initial,
        retry_max: w.retry_max,
        request_timeout: w.request_timeout,
    })
}

/// Reads a TOML file holding an `[audit]` table (and nothing else), as
/// `config/audit.toml` does, and validates it.
pub fn load(file: &Path) -> Result<AuditSettings, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        audit: AuditConfig,
    }
    let wrapper: Wrapper = crate::config::read_toml(file)?;
    wrapper.audit.validate(file)
}

#[cfg(test)]
#[path = "tests/config.rs"]
mod tests;
