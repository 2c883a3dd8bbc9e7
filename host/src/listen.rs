//! What every accept loop (front, tunnel, admin) shares.

use std::time::Duration;

/// How long an accept loop waits after `accept` failed.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// Waits a moment after a failed `accept`. Errors such as running out of file
/// descriptors leave the connection in the backlog, so accepting again at once fails
/// again at once: without the pause the loop would spin and starve every other task.
pub async fn pause_after_accept_error() {
    tokio::time::sleep(ACCEPT_RETRY).await;
}
