//! What a reload reports: its trigger, its outcome, and the status the admin
//! endpoint shows.

use std::sync::Mutex;

use super::chain::StageInfo;

/// Marks a reload as running in the status until dropped, also when the reload is
/// cancelled half-way.
pub(super) struct Running<'a>(&'a Mutex<ReloadStatus>);

impl<'a> Running<'a> {
    pub(super) fn start(status: &'a Mutex<ReloadStatus>) -> Self {
        status.lock().unwrap_or_else(|p| p.into_inner()).reloading = true;
        Running(status)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).reloading = false;
    }
}

/// What triggered a reload (for logs and status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    /// The process started.
    Startup,
    /// An operator asked through the admin endpoint (or code called [`PluginHost::reload`](super::reload::PluginHost::reload)).
    Admin,
    /// SIGHUP.
    Signal,
    /// The config file or a plugin file changed.
    FileChange,
}

/// The outcome of a successful reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new chain with this generation now serves requests.
    Swapped(u64),
    /// The config and every plugin file are unchanged; the chain stays.
    Unchanged(u64),
}

/// The host's reload state, as the admin status endpoint shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReloadStatus {
    /// Generation of the chain serving requests.
    pub generation: u64,
    /// Successful reloads (swaps) since start, the initial load included.
    pub ok: u64,
    /// Refused reloads since start.
    pub failed: u64,
    /// Whether a reload is running now.
    pub reloading: bool,
    /// Result of the last attempt: `ok`, `failed` or `unchanged`.
    pub last_result: &'static str,
    /// What triggered the last attempt.
    pub last_trigger: ReloadTrigger,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// When the last attempt finished, milliseconds since the Unix epoch.
    pub last_attempt_unix_ms: u64,
    /// The stages of the serving chain.
    pub stages: Vec<StageInfo>,
}
