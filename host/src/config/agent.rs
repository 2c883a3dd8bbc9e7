//! The agent's config file.

use super::hub::{default_keepalive_interval, default_keepalive_timeout};
use super::{read_toml, ConfigError, Keepalive, Validator};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where in-cluster credentials are mounted by Kubernetes.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cluster: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    hub: RawHub,
    #[serde(default)]
    tunnel: RawTunnel,
    apiserver: RawApiServer,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    plugins: Option<PathBuf>,
    #[serde(default)]
    allow_unauthenticated: bool,
    #[serde(default)]
    audit: Option<crate::audit::AuditConfig>,
    #[serde(default)]
    access: Option<crate::access::AccessConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    address: String,
    server_name: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "default_connections")]
    connections: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    keepalive_interval: Duration,
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    keepalive_timeout: Duration,
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    backoff_initial: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    backoff_max: Duration,
    #[serde(default = "default_cert_reload_interval", with = "humantime_serde")]
    cert_reload_interval: Duration,
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    drain_timeout: Duration,
}

impl Default for RawTunnel {
    fn default() -> Self {
        RawTunnel {
            keepalive_interval: default_keepalive_interval(),
            keepalive_timeout: default_keepalive_timeout(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
            cert_reload_interval: default_cert_reload_interval(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiServer {
    #[serde(default)]
    in_cluster: bool,
    #[serde(default)]
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_response_header_timeout", with = "humantime_serde")]
    response_header_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
// Above kube-apiserver's own request timeout (60 s), so that a slow list or a slow
// admission webhook is answered by the API server, not cut by the agent.
fn default_response_header_timeout() -> Duration {
    Duration::from_secs(90)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

fn default_connections() -> usize {
    1
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
/// The kubelet refreshes Secret volumes about once a minute; checking every 10 s
/// adds little to that.
fn default_cert_reload_interval() -> Duration {
    Duration::from_secs(10)
}
/// Long enough for most `logs -f`, exec and port-forward sessions to end on their
/// own; watches are re-established by their clients anyway.
fn default_drain_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Limits on reaching the API server (`[apiserver]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiServerTimeouts {
    /// TCP connect and TLS handshake together (`connect_timeout`, default 10 s).
    pub connect: Duration,
    /// From sending a request to the response head (`response_header_timeout`,
    /// default 90 s). It is what bounds long-running requests (watch, exec, logs -f,
    /// proxy), which have no total timeout, when the API server or what it proxies to
    /// never starts an answer.
    pub response_header: Duration,
}
/// The agent's validated config.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// The registered cluster name; must match the agent certificate.
    pub cluster: String,
    /// Locality labels reported to the hub.
    pub region: Option<String>,
    /// Locality labels reported to the hub.
    pub zone: Option<String>,
    /// How to reach and trust the hub.
    pub hub: HubLink,
    /// PING settings for the tunnel.
    pub keepalive: Keepalive,
    /// First reconnect delay ceiling; doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Largest reconnect delay ceiling.
    pub backoff_max: Duration,
    /// How often the certificate, key and CA files are checked for a rotation.
    pub cert_reload_interval: Duration,
    /// How long a tunnel replaced by one with a rotated certificate keeps serving
    /// its streams in flight before it is closed.
    pub drain_timeout: Duration,
    /// How the agent reaches its cluster's API server.
    pub apiserver: ApiServerSource,
    /// Limits on reaching the API server.
    pub apiserver_timeouts: ApiServerTimeouts,
    /// The admin listener (`/livez`, `/readyz`, `/metrics`), if any.
    pub admin_listen: Option<SocketAddr>,
    /// The plugin chain file (`role = "agent"`), if stages are configured.
    pub plugins: Option<PathBuf>,
    /// Serve without a credential stage: requests reach the API server under the
    /// agent's own credential, unimpersonated. Off by default, and then an agent whose
    /// chain has no credential stage refuses to start, and a reload to such a chain
    /// fails (the old one keeps serving).
    pub allow_unauthenticated: bool,
    /// Kubernetes audit events (policy and sinks), if configured.
    pub audit: Option<crate::audit::AuditSettings>,
    /// The access policy, checked again here; without it client impersonation
    /// requests relayed by the hub are refused.
    pub access: Option<crate::access::AccessPolicy>,
}

/// The hub as the agent sees it.
#[derive(Debug, Clone)]
pub struct HubLink {
    /// `host:port` of the hub's tunnel listener.
    pub address: String,
    /// Name the hub's certificate must carry.
    pub server_name: String,
    /// The pinned hub CA.
    pub ca_file: PathBuf,
    /// The agent's client certificate.
    pub cert_file: PathBuf,
    /// The agent's private key.
    pub key_file: PathBuf,
    /// Tunnels this process keeps open.
    pub connections: usize,
}

/// How the agent authenticates to its API server.
#[derive(Debug, Clone)]
pub enum ApiServerSource {
    /// A server URL, a CA file and a bearer-token file that is re-read when it changes
    /// (in-cluster: the mounted service-account token).
    Token {
        /// `https://host:port` of the API server.
        server: String,
        /// CA that signed the API server's certificate.
        ca_file: PathBuf,
        /// File holding the bearer token.
        token_file: PathBuf,
    },
    /// A kubeconfig file, for running outside a cluster.
    Kubeconfig(KubeconfigSource),
}

/// A kubeconfig and the context to use.
#[derive(Debug, Clone)]
pub struct KubeconfigSource {
    /// The kubeconfig file.
    pub path: PathBuf,
    /// The context; the file's current-context when absent.
    pub context: Option<String>,
}

impl AgentConfig {
    /// Reads and validates an agent config file.
    pub fn load(file: &Path) -> Result<AgentConfig, ConfigError> {
        Self::load_with_env(file, |k| std::env::var(k).ok())
    }

    /// Like [`AgentConfig::load`], with the environment injected (for tests).
    pub fn load_with_env(
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let raw: Raw = read_toml(file)?;
        let v = Validator { file };
        crate::registry::validate_cluster_name(&raw.cluster)
            .map_err(|e| v.invalid("cluster", e.to_string()))?;
        if raw.hub.connections == 0 || raw.hub.connections > 16 {
            return Err(v.invalid("hub.connections", "must be between 1 and 16"));
        }
        if !raw.hub.address.contains(':') {
            return Err(v.invalid("hub.address", "expected host:port"));
        }
        let t = &raw.tunnel;
        if t.backoff_initial.is_zero() || t.backoff_max < t.backoff_initial {
            return Err(v.invalid(
                "tunnel.backoff_max",
                "backoff_initial must be above zero and backoff_max at least backoff_initial",
            ));
        }
        let keepalive = v.keepalive(
            "tunnel.keepalive_interval",
            t.keepalive_interval,
            t.keepalive_timeout,
        )?;
        if t.cert_reload_interval.is_zero() || t.drain_timeout.is_zero() {
            return Err(v.invalid(
                "tunnel.cert_reload_interval",
                "cert_reload_interval and drain_timeout must be above zero",
            ));
        }
        if raw.apiserver.connect_timeout.is_zero() {
            return Err(v.invalid("apiserver.connect_timeout", "must be above zero"));
        }
        if raw.apiserver.response_header_timeout.is_zero() {
            return Err(v.invalid("apiserver.response_header_timeout", "must be above zero"));
        }
        let apiserver_timeouts = ApiServerTimeouts {
            connect: raw.apiserver.connect_timeout,
            response_header: raw.apiserver.response_header_timeout,
        };
        let apiserver = api_source(&v, raw.apiserver, env)?;
        let admin_listen = match raw.admin {
            Some(a) => Some(v.socket_addr("admin.listen", &a.listen)?),
            None => None,
        };
        Ok(AgentConfig {
            file: file.to_path_buf(),
            cluster: raw.cluster,
            region: raw.region,
            zone: raw.zone,
            hub: HubLink {
                address: raw.hub.address,
                server_name: raw.hub.server_name,
                ca_file: v.path(&raw.hub.ca_file),
                cert_file: v.path(&raw.hub.cert_file),
                key_file: v.path(&raw.hub.key_file),
                connections: raw.hub.connections,
            },
            keepalive,
            backoff_initial: raw.tunnel.backoff_initial,
            backoff_max: raw.tunnel.backoff_max,
            cert_reload_interval: raw.tunnel.cert_reload_interval,
            drain_timeout: raw.tunnel.drain_timeout,
            apiserver,
            apiserver_timeouts,
            admin_listen,
            plugins: raw.plugins.map(|p| v.path(&p)),
            allow_unauthenticated: raw.allow_unauthenticated,
            audit: raw.audit.map(|a| a.validate(file)).transpose()?,
            access: raw.access.map(|a| a.validate(file)).transpose()?,
        })
    }
}

fn api_source(
    v: &Validator<'_>,
    raw: RawApiServer,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ApiServerSource, ConfigError> {
    let explicit = raw.server.is_some() || raw.ca_file.is_some() || raw.token_file.is_some();
    let modes = [raw.in_cluster, raw.kubeconfig.is_some(), explicit];
    if modes.iter().filter(|m| **m).count() != 1 {
        return Err(v.invalid(
            "apiserver",
            "set exactly one of: in_cluster = true; kubeconfig = \"...\"; or server + ca_file + token_file",
        ));
    }
    if raw.context.is_some() && raw.kubeconfig.is_none() {
        return Err(v.invalid(
            "apiserver.context",
            "only meaningful with apiserver.kubeconfig",
        ));
    }
    if raw.in_cluster {
        let host = env("KUBERNETES_SERVICE_HOST").ok_or_else(|| {
            v.invalid(
                "apiserver.in_cluster",
                "KUBERNETES_SERVICE_HOST is not set: not running in a pod",
            )
        })?;
        let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        return Ok(ApiServerSource::Token {
            server: format!("https://{host}:{port}"),
            ca_file: Path::new(SA_DIR).join("ca.crt"),
            token_file: Path::new(SA_DIR).join("token"),
        });
    }
    if let Some(path) = raw.kubeconfig {
        return Ok(ApiServerSource::Kubeconfig(KubeconfigSource {
            path: v.path(&path),
            context: raw.context,
        }));
    }
    let (Some(server), Some(ca_file), Some(token_file)) = (raw.server, raw.ca_file, raw.token_file)
    else {
        return Err(v.invalid(
            "apiserver",
            "server, ca_file and token_file must all be set",
        ));
    };
    if !server.starts_with("https://") {
        return Err(v.invalid("apiserver.server", "must be an https:// URL"));
    }
    Ok(ApiServerSource::Token {
        server: server.trim_end_matches('/').to_string(),
        ca_file: v.path(&ca_file),
        token_file: v.path(&token_file),
    })
}
