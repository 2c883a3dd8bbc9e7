//! `hawser cluster register/list/remove`: registering an external cluster and
//! writing the bundle an operator applies inside it (agent config, agent
//! certificate and key, the pinned hub CA, and a Kubernetes manifest).

mod agent_chain;
mod manifest;

use agent_chain::AGENT_CHAIN;
pub use agent_chain::{
    agent_chain_toml, chain_secret_patch, configmap_command, current_agent_chain, AGENT_PLUGINS,
    PLUGINS_CONFIGMAP, PLUGIN_DIR,
};
pub use manifest::manifest_yaml;
pub(crate) use manifest::{yaml_block, yaml_str};

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::credential::{IssuerKeys, KeyError};
use crate::files::{create_private_dir, now_rfc3339, write_atomic};
use crate::pki::{HubCa, IssuedCert, PkiError, Validity};
use crate::registry::{
    dns1123_label_problem, validate_cluster_name, ClusterRecord, Registry, RegistryError,
};

/// The namespace the agent is deployed into unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "hawser-system";

const AGENT_TOML: &str = "agent.toml";
pub(crate) const AGENT_CRT: &str = "agent.crt";
pub(crate) const AGENT_KEY: &str = "agent.key";
pub(crate) const CA_CRT: &str = "ca.crt";
const MANIFEST: &str = "manifest.yaml";
const MOUNT_DIR: &str = "/etc/hawser";
const ADMIN_PORT: u16 = 8081;
/// The non-root user the agent runs as (the distroless "nonroot" uid).
const AGENT_UID: u32 = 65532;

/// Why registering, listing or removing a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The hub CA could not be loaded, created or used.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The registry could not be read, changed or saved.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The credential issuer keys (trusted by the agent's chain) could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A request field is unusable.
    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    /// A bundle file already exists; overwriting it could destroy another cluster's key.
    #[error("{path}: already exists; refusing to overwrite an existing bundle")]
    Exists { path: PathBuf },
    /// A bundle file or directory could not be written.
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Everything `hawser cluster register` needs.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// The hub's state directory (CA and registry).
    pub state_dir: PathBuf,
    /// The cluster name (a DNS-1123 label).
    pub name: String,
    /// Locality: region.
    pub region: Option<String>,
    /// Locality: zone.
    pub zone: Option<String>,
    /// `host:port` agents dial (the hub's tunnel listener).
    pub hub_address: String,
    /// The name the hub's tunnel certificate must carry.
    pub hub_server_name: String,
    /// Where the bundle is written (created 0700).
    pub out_dir: PathBuf,
    /// The agent container image.
    pub image: String,
    /// Lifetime of the agent certificate.
    pub validity_days: u32,
    /// Namespace for the agent (usually [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// User-extra keys the agent may impersonate (`Impersonate-Extra-<key>`); each
    /// becomes an RBAC resource `userextras/<key>`. Empty: no extras at all.
    pub user_extra_keys: Vec<String>,
    /// The `iss` of the hub's credentials (`[credentials] issuer`), which the agent's
    /// credential stage accepts.
    pub issuer: String,
}

/// What `register_cluster` did.
#[derive(Debug)]
pub struct RegisterOutcome {
    /// The registry record that was saved.
    pub record: ClusterRecord,
    /// The bundle files that were written.
    pub files: Vec<PathBuf>,
}

/// Registers a cluster: validates the request, creates the CA on first use,
/// refuses an existing name, issues the agent certificate, writes the bundle
/// into `out_dir` (created 0700; `agent.key` and `manifest.yaml`, which embeds
/// the key, are 0600), then saves the registry atomically.
pub fn register_cluster(req: &RegisterRequest) -> Result<RegisterOutcome, BundleError> {
    // Check everything that can be checked before anything is created.
    validate_request(req)?;
    let ca = HubCa::load_or_create(&req.state_dir)?;
    let keys = IssuerKeys::load_or_create(&req.state_dir)?;
    let _lock = Registry::lock(&req.state_dir)?;
    let mut registry = Registry::load(&req.state_dir)?;
    if registry.get(&req.name).is_some() {
        return Err(RegistryError::Exists {
            name: req.name.clone(),
        }
        .into());
    }
    let names = [
        AGENT_TOML,
        AGENT_CHAIN,
        AGENT_CRT,
        AGENT_KEY,
        CA_CRT,
        MANIFEST,
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| req.out_dir.join(n)).collect();
    for path in &paths {
        let exists = path.try_exists().map_err(|source| BundleError::Write {
            path: path.clone(),
            source,
        })?;
        if exists {
            return Err(BundleError::Exists { path: path.clone() });
        }
    }
    let issued = ca.issue_agent(&req.name, Validity::days_from_now(req.validity_days))?;
    let record = ClusterRecord {
        name: req.name.clone(),
        region: req.region.clone(),
        zone: req.zone.clone(),
        certs: vec![issued.fingerprint],
        registered_at: now_rfc3339(),
    };
    registry.insert(record.clone())?;
    create_private_dir(&req.out_dir).map_err(|source| BundleError::Write {
        path: req.out_dir.clone(),
        source,
    })?;
    let chain = agent_chain_toml(&req.name, &req.issuer, &req.user_extra_keys, keys.records());
    let contents = bundle_contents(req, &ca, &issued, &chain);
    let written = write_then_save(&paths, &contents, &registry, &req.state_dir)?;
    tracing::info!(cluster = %req.name, fingerprint = %issued.fingerprint, out_dir = %req.out_dir.display(), "registered cluster");
    Ok(RegisterOutcome {
        record,
        files: written,
    })
}

/// Removes a cluster from the registry; its agents are refused from then on.
pub fn remove_cluster(state_dir: &Path, name: &str) -> Result<ClusterRecord, BundleError> {
    let _lock = Registry::lock(state_dir)?;
    let mut registry = Registry::load(state_dir)?;
    let record = registry.remove(name)?;
    registry.save(state_dir)?;
    tracing::info!(cluster = %name, "removed cluster");
    Ok(record)
}

/// All registered clusters, ordered by name.
pub fn list_clusters(state_dir: &Path) -> Result<Vec<ClusterRecord>, BundleError> {
    Ok(Registry::load(state_dir)?.clusters().cloned().collect())
}

fn validate_request(req: &RegisterRequest) -> Result<(), BundleError> {
    let invalid = |field, reason: String| BundleError::InvalidRequest { field, reason };
    validate_cluster_name(&req.name)?;
    if let Some(reason) = dns1123_label_problem(&req.namespace) {
        return Err(invalid(
            "namespace",
            format!("{:?} {reason}", req.namespace),
        ));
    }
    for (field, value) in [("region", &req.region), ("zone", &req.zone)] {
        if let Some(v) = value {
            if v.is_empty() || v.chars().any(char::is_control) {
                return Err(invalid(
                    field,
                    format!("{v:?} must be non-empty, without control characters"),
                ));
            }
        }
    }
    let port_ok = req
        .hub_address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok
        || req
            .hub_address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "hub address",
            format!("{:?} is not host:port", req.hub_address),
        ));
    }
    for (field, value) in [
        ("hub server name", &req.hub_server_name),
        ("image", &req.image),
    ] {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                field,
                format!("{value:?} must be non-empty, without spaces"),
            ));
        }
    }
    if req.validity_days == 0 {
        return Err(invalid("validity", "must be at least one day".into()));
    }
    for key in &req.user_extra_keys {
        // RBAC matches `userextras/<key>` literally: a '*' would read as a wildcard
        // that RBAC does not honour here, and blanks cannot appear in a header name.
        if key.is_empty()
            || key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '*')
        {
            return Err(invalid(
                "user extra key",
                format!("{key:?} must be non-empty, without spaces, control characters or '*'"),
            ));
        }
    }
    Ok(())
}

/// The bundle files' text and mode, in the order agent.toml, plugins-agent.toml,
/// agent.crt, agent.key, ca.crt, manifest.yaml.
fn bundle_contents(
    req: &RegisterRequest,
    ca: &HubCa,
    issued: &IssuedCert,
    chain: &str,
) -> [(String, u32); 6] {
    let key = issued.key_pem.expose();
    [
        (agent_toml(req), 0o644),
        (chain.to_string(), 0o644),
        (issued.cert_pem.clone(), 0o644),
        (key.to_string(), 0o600),
        (ca.cert_pem().to_string(), 0o644),
        // The manifest embeds the key in its Secret, so it is as secret as the key.
        (
            manifest_yaml(req, ca.cert_pem(), &issued.cert_pem, key, chain),
            0o600,
        ),
    ]
}

/// Writes `contents[i]` (text, mode) to `paths[i]`, then saves `registry`; on any
/// failure removes what it wrote. The registry is saved last: if the files could not
/// be written, the hub never admits a certificate nobody holds.
pub(crate) fn write_then_save(
    paths: &[PathBuf],
    contents: &[(String, u32)],
    registry: &Registry,
    state_dir: &Path,
) -> Result<Vec<PathBuf>, BundleError> {
    let mut written = Vec::new();
    for (path, (text, mode)) in paths.iter().zip(contents) {
        if let Err(source) = write_atomic(path, text.as_bytes(), *mode) {
            remove_files(&written);
            return Err(BundleError::Write {
                path: path.clone(),
                source,
            });
        }
        written.push(path.clone());
    }
    if let Err(e) = registry.save(state_dir) {
        remove_files(&written);
        return Err(e.into());
    }
    Ok(written)
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// The agent's TOML config. Paths are relative to the file's directory, so it
/// works both next to the bundle files and mounted from the Secret.
pub fn agent_toml(req: &RegisterRequest) -> String {
    let q = toml_str;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Hawser agent for cluster {} (generated by `hawser cluster register`).",
        q(&req.name)
    );
    let _ = writeln!(out, "cluster = {}", q(&req.name));
    if let Some(region) = &req.region {
        let _ = writeln!(out, "region = {}", q(region));
    }
    if let Some(zone) = &req.zone {
        let _ = writeln!(out, "zone = {}", q(zone));
    }
    let _ = write!(
        out,
        "
# The agent checks each caller's credential again and impersonates them (the chain
# names the .wasm files the manifest mounts). Without a chain it refuses to start.
plugins = \"{AGENT_CHAIN}\"

[hub]
address = {address}   # the hub's tunnel listener
server_name = {server_name}    # name the hub's certificate must carry
ca_file = \"{CA_CRT}\"                 # the pinned hub CA
cert_file = \"{AGENT_CRT}\"
key_file = \"{AGENT_KEY}\"
connections = 1                     # tunnels this process keeps open

[tunnel]
keepalive_interval = \"10s\"
keepalive_timeout = \"20s\"
backoff_initial = \"100ms\"
backoff_max = \"30s\"

[apiserver]
in_cluster = true                   # service-account token and CA from /var/run/secrets/kubernetes.io/serviceaccount

[admin]
listen = \"0.0.0.0:{ADMIN_PORT}\"             # /livez, /readyz, /metrics
",
        address = q(&req.hub_address),
        server_name = q(&req.hub_server_name),
    );
    out
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests;
