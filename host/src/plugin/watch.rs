//! Reloads a [`PluginHost`] when its config or plugin files change, and on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::error::PluginError;
use super::reload::{PluginHost, ReloadTrigger};
use super::reload_inputs::Stamps;
use crate::files::stamp as file_stamp;

/// Settings of [`watch`].
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How often file metadata is checked. Default 1 s.
    pub poll_interval: Duration,
    /// How long files must stay unchanged before a reload starts (editors and
    /// ConfigMap updates write in several steps). Default 250 ms.
    pub debounce: Duration,
    /// Reload on SIGHUP. Default true.
    pub sighup: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(1),
            debounce: Duration::from_millis(250),
            sighup: true,
        }
    }
}

/// A running watcher; stops when dropped.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reloads `host` when its config or plugin files change and (optionally) on SIGHUP.
///
/// Files are polled by metadata (size, mtime, inode), which also follows the symlink
/// swaps of Kubernetes ConfigMap volumes. Must be called inside a Tokio runtime; the
/// SIGHUP handler is installed before this returns.
pub fn watch(host: &Arc<PluginHost>, options: WatchOptions) -> Result<Watcher, PluginError> {
    let mut hangup = if options.sighup {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
                |e| PluginError::Internal(format!("installing the SIGHUP handler: {e}")),
            )?,
        )
    } else {
        None
    };
    let stamp_of = |h: &PluginHost| stamp(&h.watched_files());
    // What the files looked like when the chain was read: a change made since (while
    // it loaded, or before `watch` was called) is seen as a change.
    let mut last = host.read_stamps();
    let span = tracing::debug_span!("plugin-watch", file = %host.file().display());
    let host = Arc::downgrade(host);
    let task = tokio::spawn(
        async move {
            loop {
                let signalled = tokio::select! {
                    _ = tokio::time::sleep(options.poll_interval) => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let Some(h) = host.upgrade() else { return };
                let trigger = if signalled {
                    ReloadTrigger::Signal
                } else {
                    let mut now = stamp_of(&h);
                    if now == last {
                        continue;
                    }
                    // Wait until the files stop changing.
                    loop {
                        tokio::time::sleep(options.debounce).await;
                        let again = stamp_of(&h);
                        if again == now {
                            break;
                        }
                        now = again;
                    }
                    ReloadTrigger::FileChange
                };
                // Errors are recorded in the status, metrics and log by `reload`.
                let _ = h.reload(trigger).await;
                // Stamped as the reload read them: a change made while it ran differs
                // and triggers another.
                last = h.read_stamps();
            }
        }
        .instrument(span),
    );
    Ok(Watcher { task })
}

/// One stamp per watched file (`None`: missing or unreadable).
fn stamp(files: &[PathBuf]) -> Stamps {
    files.iter().map(|f| (f.clone(), file_stamp(f))).collect()
}
