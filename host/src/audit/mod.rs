//! Kubernetes-style audit (`audit.k8s.io/v1`) for the hub and the agent.
//!
//! # Layout
//! - [`events`]: the `Event` type with Kubernetes' JSON field names and `MicroTime`;
//!   [`RequestAudit`] builds the stages of one request with one `auditID`.
//! - [`policy`]: a Kubernetes audit `Policy` file and its first-match-wins evaluation.
//! - [`config`]: the `[audit]` TOML table ([`AuditConfig`]) and its validated form
//!   ([`AuditSettings`]).
//! - [`sink`]: [`AuditLog`], the cheap handle the proxy records into; a bounded queue
//!   per backend, drained by a background task (`task`) with counters (`metrics`).
//! - `file`, `webhook`, `spool`: the JSON-lines log with rotation, the batching
//!   webhook client, and the on-disk spool that keeps webhook events while the
//!   receiver is down.
//!
//! # Using it from the proxy
//! ```ignore
//! let audit = RequestAudit::new(ctx, log.policy(), &Attributes::from_request(&info, path, &user));
//! audit.record(&log, Stage::RequestReceived, None).await.map_err(|e| e.status())?;
//! // ... ResponseStarted for long-running requests, then:
//! audit.record(&log, Stage::ResponseComplete, Some(ResponseStatus::code(200))).await?;
//! ```
//!
//! # Guarantees
//! No event is ever dropped silently. In `blocking` mode [`AuditLog::record`] waits
//! for room (back-pressure on the request); in `fail-closed` mode it returns an error
//! at once, and the proxy refuses the request with a 503 Status
//! ([`AuditError::status`]). Webhook events are delivered in order and exactly once
//! while the process runs; across a crash, at most the batch in flight is sent again.

pub mod config;
pub mod events;
mod file;
mod metrics;
pub mod policy;
mod request;
pub mod sink;
mod spool;
mod task;
mod webhook;

pub use config::{
    AuditConfig, AuditSettings, FileConfig, FileSettings, Mode, WebhookConfig, WebhookSettings,
};
pub use events::{
    event_for, source_ips, Event, EventContext, Level, MicroTime, ObjectReference, ResponseStatus,
    Stage, UserInfo, ANNOTATION_CLUSTER, ANNOTATION_ROLE, ANNOTATION_TUNNEL,
};
pub use policy::{Attributes, Policy, StageSet};
pub use request::RequestAudit;
pub use sink::{AuditLog, SinkSnapshot};

use std::path::PathBuf;
use std::time::Duration;

/// Why an audit operation failed.
///
/// The `Refused*` variants and [`AuditError::Closed`] come from
/// [`AuditLog::record`]: the event was *not* recorded, so the request must not be
/// served ([`AuditError::is_refusal`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The policy file is unreadable or invalid; `field` is a path such as
    /// `rules[2].nonResourceURLs[0]`.
    #[error("audit policy {file}: {field}: {reason}")]
    Policy {
        /// The policy file.
        file: PathBuf,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the audit log or the spool could not be read or written.
    #[error("audit {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The webhook's TLS material is unusable.
    #[error("audit webhook TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The webhook could not be reached or timed out.
    #[error("audit webhook {url}: {reason}")]
    WebhookUnreachable {
        /// The webhook URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The webhook answered with a non-2xx status.
    #[error("audit webhook {url}: HTTP {status}: {body}")]
    WebhookStatus {
        /// The webhook URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Fail-closed mode: the sink's queue is full.
    #[error("audit sink {sink}: queue full ({capacity} events); request refused")]
    RefusedQueueFull {
        /// `file` or `webhook`.
        sink: &'static str,
        /// The queue's capacity.
        capacity: usize,
    },
    /// Fail-closed mode: the webhook's memory queue and its spool are both full.
    #[error("audit sink {sink}: spool full ({max_bytes} bytes); request refused")]
    RefusedSpoolFull {
        /// `webhook`.
        sink: &'static str,
        /// The spool's bound.
        max_bytes: u64,
    },
    /// Fail-closed mode: the sink has been failing for longer than `failure_grace`.
    #[error("audit sink {sink}: failing for {failing_for:?}; request refused")]
    RefusedSinkFailing {
        /// `file` or `webhook`.
        sink: &'static str,
        /// How long it has been failing.
        failing_for: Duration,
    },
    /// The audit log has shut down.
    #[error("audit log is shut down")]
    Closed,
    /// An event could not be encoded as JSON.
    #[error("audit event encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

impl AuditError {
    /// True when [`AuditLog::record`] refused the event: the caller must refuse the
    /// request (with [`AuditError::status`]) rather than serve it unaudited.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            AuditError::RefusedQueueFull { .. }
                | AuditError::RefusedSpoolFull { .. }
                | AuditError::RefusedSinkFailing { .. }
                | AuditError::Closed
        )
    }

    /// The 503 Status the proxy answers with when an event cannot be recorded.
    /// The message stays generic: sink details belong in the logs, not to clients.
    pub fn status(&self) -> crate::proxy::status::Status {
        crate::proxy::status::Status::unavailable(
            "the request cannot be audited right now; try again later",
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}
