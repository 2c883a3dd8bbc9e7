//! The hub's config file.

use super::{read_toml, ConfigError, Keepalive, Validator};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    state_dir: PathBuf,
    tunnel: RawTunnel,
    front: RawFront,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default = "default_registry_poll", with = "humantime_serde")]
    registry_poll: Duration,
    #[serde(default)]
    plugins: Option<PathBuf>,
    #[serde(default)]
    allow_unauthenticated: bool,
    #[serde(default)]
    credentials: crate::credential::settings::HubCredentialSettings,
    #[serde(default)]
    audit: Option<crate::audit::AuditConfig>,
    #[serde(default)]
    access: Option<crate::access::AccessConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    listen: String,
    advertise: String,
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    keepalive_interval: Duration,
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    keepalive_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    handshake_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFront {
    listen: String,
    server_names: Vec<String>,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: usize,
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    header_timeout: Duration,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

fn default_registry_poll() -> Duration {
    Duration::from_millis(250)
}
pub(super) fn default_keepalive_interval() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}

/// Most client connections `front.max_connections` may allow (each costs a file
/// descriptor and buffers).
const MAX_CONNECTIONS: usize = 1_000_000;

/// The hub's validated config.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// Where the CA, the serving certificate and the cluster registry live.
    pub state_dir: PathBuf,
    /// The listener agents dial.
    pub tunnel: HubTunnelConfig,
    /// The HTTPS listener users and kubectl call.
    pub front: FrontConfig,
    /// The admin listener (`/livez`, `/readyz`, `/metrics`), if any.
    pub admin_listen: Option<SocketAddr>,
    /// How often the registry file is re-read, so a removed cluster is cut off quickly.
    pub registry_poll: Duration,
    /// The plugin chain file (`role = "hub"`), if stages are configured.
    pub plugins: Option<PathBuf>,
    /// Serve without a credential stage: requests are forwarded with no verified
    /// user. Off by default, and then a hub whose chain has no credential stage
    /// refuses to start, and a reload to such a chain fails (the old one keeps serving).
    pub allow_unauthenticated: bool,
    /// User credentials: issuer name, refresh-token lifetime, reload interval.
    pub credentials: crate::credential::settings::HubCredentialSettings,
    /// Kubernetes audit events (policy and sinks), if configured.
    pub audit: Option<crate::audit::AuditSettings>,
    /// Who may reach which cluster and impersonate whom; `None` leaves it to the
    /// credential's allowed clusters and refuses all client impersonation.
    pub access: Option<crate::access::AccessPolicy>,
}

/// The hub's tunnel listener.
#[derive(Debug, Clone)]
pub struct HubTunnelConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// `host:port` that agents dial; written into agent bundles.
    pub advertise: String,
    /// PING settings; a silent tunnel is dropped after `interval + timeout`.
    pub keepalive: Keepalive,
    /// Longest time an agent may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
}

impl HubTunnelConfig {
    /// The host part of `advertise`, which agents check in the hub's certificate.
    pub fn advertise_host(&self) -> &str {
        host_of(&self.advertise)
    }
}

/// The hub's user-facing HTTPS listener.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// DNS names and IP addresses in the serving certificate.
    pub server_names: Vec<String>,
    /// Limit for requests that are not long-running (watch, exec, logs ... have none).
    pub request_timeout: Duration,
    /// Largest total size of a request's header block.
    pub max_header_bytes: usize,
    /// Time a client has to send a request's header block, counted from the end of
    /// the TLS handshake for the first request and from the previous response for
    /// later HTTP/1.1 ones; a connection that sends none within it is closed.
    pub header_timeout: Duration,
    /// Client connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

impl HubConfig {
    /// Reads and validates a hub config file.
    pub fn load(file: &Path) -> Result<HubConfig, ConfigError> {
        let raw: Raw = read_toml(file)?;
        let v = Validator { file };
        let tunnel = HubTunnelConfig {
            listen: v.socket_addr("tunnel.listen", &raw.tunnel.listen)?,
            advertise: raw.tunnel.advertise.clone(),
            keepalive: v.keepalive(
                "tunnel.keepalive_interval",
                raw.tunnel.keepalive_interval,
                raw.tunnel.keepalive_timeout,
            )?,
            handshake_timeout: raw.tunnel.handshake_timeout,
        };
        if !raw.tunnel.advertise.contains(':') || tunnel.advertise_host().is_empty() {
            return Err(v.invalid("tunnel.advertise", "expected host:port that agents dial"));
        }
        if raw.front.server_names.is_empty() {
            return Err(v.invalid(
                "front.server_names",
                "at least one DNS name or IP is needed",
            ));
        }
        if raw.front.max_header_bytes < 1024 {
            return Err(v.invalid("front.max_header_bytes", "must be at least 1024"));
        }
        if raw.front.request_timeout.is_zero() {
            return Err(v.invalid("front.request_timeout", "must be above zero"));
        }
        if raw.front.header_timeout.is_zero() {
            return Err(v.invalid("front.header_timeout", "must be above zero"));
        }
        if raw.front.max_connections == 0 || raw.front.max_connections > MAX_CONNECTIONS {
            return Err(v.invalid(
                "front.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        if raw.tunnel.handshake_timeout.is_zero() {
            return Err(v.invalid("tunnel.handshake_timeout", "must be above zero"));
        }
        if raw.credentials.reload_interval.is_zero() {
            return Err(v.invalid(
                "credentials.reload_interval",
                "must be above zero: it is how soon key rotations and revocations apply",
            ));
        }
        if raw.registry_poll.is_zero() || raw.registry_poll > Duration::from_secs(1) {
            return Err(v.invalid(
                "registry_poll",
                "must be above zero and at most 1s, so removed clusters are cut within a second",
            ));
        }
        let front = FrontConfig {
            listen: v.socket_addr("front.listen", &raw.front.listen)?,
            server_names: raw.front.server_names,
            request_timeout: raw.front.request_timeout,
            max_header_bytes: raw.front.max_header_bytes,
            header_timeout: raw.front.header_timeout,
            max_connections: raw.front.max_connections,
        };
        let admin_listen = match raw.admin {
            Some(a) => Some(v.socket_addr("admin.listen", &a.listen)?),
            None => None,
        };
        Ok(HubConfig {
            file: file.to_path_buf(),
            state_dir: v.path(&raw.state_dir),
            tunnel,
            front,
            admin_listen,
            registry_poll: raw.registry_poll,
            plugins: raw.plugins.map(|p| v.path(&p)),
            allow_unauthenticated: raw.allow_unauthenticated,
            credentials: raw.credentials,
            audit: raw.audit.map(|a| a.validate(file)).transpose()?,
            access: raw.access.map(|a| a.validate(file)).transpose()?,
        })
    }
}
