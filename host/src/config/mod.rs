//! Configuration for the hub and the agent.
//!
//! Each role's TOML is read into raw serde structs (`deny_unknown_fields`), then
//! validated once into the runtime types below, so the rest of the code never
//! handles an `Option` that must be `Some`. Every error names the file, the key
//! and the reason.

mod agent;
mod hub;

pub use agent::{AgentConfig, ApiServerSource, ApiServerTimeouts, HubLink, KubeconfigSource};
pub use hub::{FrontConfig, HubConfig, HubTunnelConfig};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config file that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The dotted key path.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Keepalive settings for one side of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// How often a PING is sent while the tunnel is otherwise silent.
    pub interval: Duration,
    /// How long to wait for the PING's acknowledgement before the tunnel is dropped.
    pub timeout: Duration,
}

impl Keepalive {
    /// The longest a silently dead tunnel can stay in use.
    pub fn detection_bound(&self) -> Duration {
        self.interval + self.timeout
    }
}

/// Reads a TOML file into its raw serde type.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " | "),
    })
}

/// Builds validation errors for one file.
pub(crate) struct Validator<'a> {
    pub(crate) file: &'a Path,
}

impl Validator<'_> {
    pub(crate) fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// A listen address such as `0.0.0.0:8443` or `127.0.0.1:0`.
    pub(crate) fn socket_addr(
        &self,
        key: &str,
        value: &str,
    ) -> Result<std::net::SocketAddr, ConfigError> {
        value
            .parse()
            .map_err(|_| self.invalid(key, format!("`{value}` is not an IP:port address")))
    }

    /// Paths in a config file are relative to the file's directory.
    pub(crate) fn path(&self, value: &Path) -> PathBuf {
        if value.is_absolute() {
            value.to_path_buf()
        } else {
            self.file
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(value)
        }
    }

    pub(crate) fn keepalive(
        &self,
        key: &str,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Keepalive, ConfigError> {
        if interval.is_zero() || timeout.is_zero() {
            return Err(self.invalid(key, "keepalive interval and timeout must be above zero"));
        }
        Ok(Keepalive { interval, timeout })
    }
}

#[cfg(test)]
mod tests;
