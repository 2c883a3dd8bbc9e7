//! The plugin routes of the admin listener: reload, status and metrics.

use std::sync::Arc;

use tracing::Instrument;

use super::error::PluginError;
use super::reload::{PluginHost, ReloadOutcome, ReloadTrigger};

impl PluginHost {
    /// A reload for the admin route. It runs in its own task, so a client that hangs
    /// up does not cancel it half-way (its outcome still reaches the status, metric and
    /// log). `None` when another admin reload is already waiting to run: it will read
    /// the same files, so requests beyond it add nothing but work.
    async fn admin_reload(self: &Arc<Self>) -> Option<Result<ReloadOutcome, PluginError>> {
        use std::sync::atomic::Ordering;
        let waiting = &self.admin_waiting;
        if waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n == 0).then_some(1)
            })
            .is_err()
        {
            return None;
        }
        let this = self.clone();
        let task = tokio::spawn(
            async move {
                let guard = this.reload_lock.lock().await;
                this.admin_waiting.store(0, Ordering::SeqCst);
                drop(guard);
                this.reload(ReloadTrigger::Admin).await
            }
            .instrument(tracing::info_span!("plugin-admin-reload")),
        );
        Some(task.await.unwrap_or_else(|e| {
            Err(PluginError::Internal(format!(
                "admin reload task failed: {e}"
            )))
        }))
    }

    /// Handles the plugin admin routes; `None` when `path` is not one of them.
    ///
    /// - `POST /plugins/reload`: reload now; 200 with `{"result":"swapped"|"unchanged",
    ///   "generation":N}`, or 422 with `{"result":"failed","error":"..."}`.
    /// - `GET /plugins/status`: [`ReloadStatus`](super::ReloadStatus) as JSON.
    /// - `GET /plugins/metrics`: Prometheus text.
    pub async fn admin(
        self: &Arc<Self>,
        method: &http::Method,
        path: &str,
    ) -> Option<(http::StatusCode, String)> {
        use http::{Method, StatusCode};
        Some(match (method, path) {
            (&Method::POST, "/plugins/reload") => match self.admin_reload().await {
                Some(Ok(ReloadOutcome::Swapped(g))) => (
                    StatusCode::OK,
                    serde_json::json!({"result": "swapped", "generation": g}).to_string(),
                ),
                Some(Ok(ReloadOutcome::Unchanged(g))) => (
                    StatusCode::OK,
                    serde_json::json!({"result": "unchanged", "generation": g}).to_string(),
                ),
                Some(Err(e)) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({"result": "failed", "error": e.to_string(),
                        "generation": self.chain().generation()})
                    .to_string(),
                ),
                None => (
                    StatusCode::TOO_MANY_REQUESTS,
                    serde_json::json!({"result": "busy", "error": "a reload is already \
                        waiting for the running one; it reads the files when it starts",
                        "generation": self.chain().generation()})
                    .to_string(),
                ),
            },
            (&Method::GET, "/plugins/status") => (StatusCode::OK, self.status_json()),
            (&Method::GET, "/plugins/metrics") => {
                let mut text = self.metrics().render_prometheus();
                text.push_str(&format!(
                    "# HELP hawser_plugin_instances Plugin instances alive, each in one of \
                     runtime.max_instances slots.\n# TYPE hawser_plugin_instances gauge\n\
                     hawser_plugin_instances {}\n",
                    self.runtime().live_instances()
                ));
                let sig = self.runtime().signature_counts();
                text.push_str(&format!(
                    "# HELP hawser_plugin_signature_checks_total Signature checks plugins asked \
                     the host for, by result: verified, passed earlier (remembered) or failed.\n\
                     # TYPE hawser_plugin_signature_checks_total counter\n\
                     hawser_plugin_signature_checks_total{{result=\"verified\"}} {}\n\
                     hawser_plugin_signature_checks_total{{result=\"remembered\"}} {}\n\
                     hawser_plugin_signature_checks_total{{result=\"failed\"}} {}\n",
                    sig.verified, sig.remembered, sig.failed
                ));
                (StatusCode::OK, text)
            }
            _ => return None,
        })
    }
}
