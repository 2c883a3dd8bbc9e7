//! The host imports (`hawser:plugin/host`): logging, the wall clock and signature
//! verification (`signatures.rs`). Time spent in them is charged to the call's budget
//! where it can be long.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::bindings::host;
use super::instance::StoreState;

const MAX_LOG_LINES: u32 = 32;
const MAX_LOG_BYTES: usize = 1024;

impl host::Host for StoreState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(stage = %self.stage, "plugin log: further lines of this call dropped");
            }
            return;
        }
        let mut end = message.len().min(MAX_LOG_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let msg = message[..end].escape_debug();
        let stage = &*self.stage;
        match level {
            host::LogLevel::Trace => tracing::trace!(stage, "plugin: {msg}"),
            host::LogLevel::Debug => tracing::debug!(stage, "plugin: {msg}"),
            host::LogLevel::Info => tracing::info!(stage, "plugin: {msg}"),
            host::LogLevel::Warn => tracing::warn!(stage, "plugin: {msg}"),
            host::LogLevel::Error => tracing::error!(stage, "plugin: {msg}"),
        }
    }

    fn now(&mut self) -> host::Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        host::Timestamp {
            seconds: d.as_secs(),
            nanoseconds: d.subsec_nanos(),
        }
    }

    fn verify_signature(
        &mut self,
        key: host::PublicKey,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        let started = Instant::now();
        let valid = self.signatures.verify(&key, &message, &signature);
        self.charge(started.elapsed());
        valid
    }
}

impl StoreState {
    /// Counts time spent in a host import against the call's budget. The epoch
    /// deadline sees at most one tick pass during an import however long it ran; what
    /// is charged here ends the call at the next tick once the budget is spent.
    fn charge(&mut self, spent: Duration) {
        let ticks = spent.as_nanos() / self.tick.as_nanos().max(1);
        self.ticks_left = self
            .ticks_left
            .saturating_sub(u64::try_from(ticks).unwrap_or(u64::MAX));
    }
}

impl super::bindings::hawser::plugin::types::Host for StoreState {}
