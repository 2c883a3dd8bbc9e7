//! The `hawser` command line.
// The doc comments below are clap's help text, where `<name>` is a placeholder.
#![allow(rustdoc::invalid_html_tags)]

use crate::config::{AgentConfig, HubConfig};
pub use crate::credential_cmd::CredentialOp;
use crate::plugin::{self, PluginHost, Role};
use crate::proxy::lifecycle::Pipeline;
use crate::shutdown::{cancel_on_signal, CancellationToken};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

/// Hawser: govern registered Kubernetes clusters from one hub, over tunnels the
/// clusters dial out.
#[derive(Debug, Parser)]
#[command(name = "hawser", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub: the tunnel listener agents dial and the HTTPS front listener.
    Hub {
        /// The hub's TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the agent inside a registered cluster.
    Agent {
        /// The agent's TOML config (from the cluster's bundle).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Issue, revoke and rotate user credentials; `exec` is kubectl's credential plugin.
    Credential {
        /// The credential operation.
        #[command(subcommand)]
        op: CredentialOp,
    },
    /// Register, list and remove clusters (uses the hub's config and state directory).
    Cluster {
        /// The hub's TOML config.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// The cluster operation.
        #[command(subcommand)]
        op: ClusterOp,
    },
}

/// Cluster operations.
#[derive(Debug, Subcommand)]
pub enum ClusterOp {
    /// Register a cluster: issue its agent certificate, whitelist it, write its bundle.
    Register {
        /// Cluster name (a DNS label: lower-case letters, digits, '-').
        name: String,
        /// Region label, for locality-aware routing.
        #[arg(long)]
        region: Option<String>,
        /// Zone label, for locality-aware routing.
        #[arg(long)]
        zone: Option<String>,
        /// Directory for the bundle (default: ./hawser-<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Agent container image in the manifest.
        #[arg(long, default_value = concat!("hawser/hawser:", env!("CARGO_PKG_VERSION")))]
        image: String,
        /// Agent certificate lifetime in days.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
        /// Namespace for the agent in the external cluster.
        #[arg(long, default_value = "hawser-system")]
        namespace: String,
        /// A user-extra key the agent may impersonate (Impersonate-Extra-<KEY>),
        /// repeatable; the ClusterRole grants `userextras/<key>` (lower-cased) for
        /// each and no extras without one.
        #[arg(long = "user-extra-key", value_name = "KEY")]
        user_extra_keys: Vec<String>,
    },
    /// List registered clusters and the fingerprints of their admitted certificates.
    List,
    /// Print a cluster's agent plugin chain (the bundle's plugins-agent.toml) with the
    /// issuer keys that verify now, e.g. after `hawser credential rotate-key --prepare`.
    ///
    /// Ship it before the rotation that makes the prepared key sign, and agents accept
    /// new credentials without a gap: `hawser cluster agent-chain <name> --patch >
    /// patch.yaml; kubectl -n <namespace> patch secret hawser-agent --type merge
    /// --patch-file patch.yaml`. The agents reload their chain when it changes.
    AgentChain {
        /// Cluster name.
        name: String,
        /// The user-extra keys given at registration (repeatable).
        #[arg(long = "user-extra-key", value_name = "KEY")]
        user_extra_keys: Vec<String>,
        /// Print a merge patch for the agent's Secret instead of the chain.
        #[arg(long)]
        patch: bool,
    },
    /// Rotate a cluster's agent certificate, step 1: issue a new one and admit it
    /// alongside the current one.
    ///
    /// Writes agent.crt, agent.key (0600), ca.crt and secret-patch.yaml into --out.
    /// Ship them to the agents (`kubectl -n <namespace> patch secret hawser-agent
    /// --type merge --patch-file <out>/secret-patch.yaml`); each agent notices the
    /// new files, opens new tunnels with them and drains the old tunnels without
    /// cutting requests in flight. Then run `retire-cert` with the old fingerprint.
    RotateCert {
        /// Cluster name.
        name: String,
        /// Directory for the new certificate and key (default: ./hawser-<name>-rotated);
        /// existing files are never overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
        /// New certificate lifetime in days.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
        /// Namespace of the agent, for the printed kubectl command.
        #[arg(long, default_value = "hawser-system")]
        namespace: String,
    },
    /// Rotate a cluster's agent certificate, step 2: stop admitting the old one.
    ///
    /// Run it once every agent replica has switched (`cluster list` and the hub's
    /// admin /tunnels show which fingerprint each tunnel uses). Tunnels still
    /// authenticated with the retired certificate are cut within a second; tunnels
    /// using the other certificates are untouched. The last certificate of a
    /// cluster cannot be retired.
    RetireCert {
        /// Cluster name.
        name: String,
        /// The certificate to retire, as printed by `cluster list` (sha256:<hex>).
        #[arg(long)]
        fingerprint: String,
    },
    /// Remove a cluster; its live tunnels are cut within a second.
    Remove {
        /// Cluster name.
        name: String,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Hub { config } => {
            let cfg = HubConfig::load(&config)?;
            let shutdown = CancellationToken::new();
            let (pipeline, _watch) = pipeline(
                Role::Hub,
                &config,
                cfg.plugins.as_deref(),
                cfg.allow_unauthenticated,
            )
            .await?;
            // The audit log stops only after the requests in flight have drained, so
            // their last events are still written.
            let audit_stop = CancellationToken::new();
            let pipeline = with_audit(pipeline, cfg.audit.as_ref(), &audit_stop)?;
            let audit = pipeline.audit_log().cloned();
            let requests = pipeline.tasks().clone();
            let hub = crate::hub::start(cfg, pipeline, shutdown.clone()).await?;
            announce(serde_json::json!({
                "role": "hub",
                "front": hub.front_addr.to_string(),
                "tunnel": hub.tunnel_addr.to_string(),
                "admin": hub.admin_addr.map(|a| a.to_string()),
            }));
            cancel_on_signal(shutdown).await;
            hub.wait().await;
            drain_requests(&requests).await;
            audit_stop.cancel();
            if let Some(log) = audit {
                log.drained().await;
            }
            Ok(())
        }
        Command::Agent { config } => {
            let cfg = AgentConfig::load(&config)?;
            let shutdown = CancellationToken::new();
            let (pipeline, _watch) = pipeline(
                Role::Agent,
                &config,
                cfg.plugins.as_deref(),
                cfg.allow_unauthenticated,
            )
            .await?;
            // The audit log stops only after the requests in flight have drained, so
            // their last events are still written.
            let audit_stop = CancellationToken::new();
            let pipeline = with_audit(pipeline, cfg.audit.as_ref(), &audit_stop)?;
            let audit = pipeline.audit_log().cloned();
            let requests = pipeline.tasks().clone();
            let agent = crate::agent::start(cfg, pipeline, shutdown.clone()).await?;
            announce(
                serde_json::json!({"role": "agent", "admin": agent.admin_addr.map(|a| a.to_string())}),
            );
            cancel_on_signal(shutdown).await;
            agent.wait().await;
            drain_requests(&requests).await;
            audit_stop.cancel();
            if let Some(log) = audit {
                log.drained().await;
            }
            Ok(())
        }
        Command::Credential { op } => crate::credential_cmd::run(op).await,
        Command::Cluster { config, op } => {
            let config = config.context("`hawser cluster` needs --config <hub config>")?;
            let cfg = HubConfig::load(&config)?;
            crate::cluster_cmd::run(cfg, op)
        }
    }
}

/// The role's phases: built in, or backed by the plugin chain in `file` (loaded and
/// self-checked now, refusing to start on any error; then watched for changes and
/// SIGHUP while the returned watcher lives).
///
/// Without a credential stage nothing verifies the caller: refused unless the role's
/// config (`config_file`) sets `allow_unauthenticated`.
async fn pipeline(
    role: Role,
    config_file: &std::path::Path,
    file: Option<&std::path::Path>,
    allow_unauthenticated: bool,
) -> anyhow::Result<(Pipeline, Option<plugin::Watcher>)> {
    let (pipeline, watcher) = chain_pipeline(role, file).await?;
    let checking = pipeline
        .plugins()
        .filter(|h| h.chain().has(plugin::StageKind::Credential));
    if let Some(host) = checking {
        if !allow_unauthenticated {
            // A reload must not take the credential stage away (it keeps the old chain).
            host.require_credential_stage();
        }
    } else {
        let what = match file {
            Some(chain) => format!(
                "the plugin chain {} has no credential stage",
                chain.display()
            ),
            None => "`plugins` is not set, so there is no credential stage".to_string(),
        };
        if !allow_unauthenticated {
            anyhow::bail!(
                "{}: {what}: requests would reach the cluster with no verified user. \
                 Configure a chain with a credential stage (see config/plugins-{role}.toml), \
                 or set `allow_unauthenticated = true` (demos and tests only)",
                config_file.display()
            );
        }
        tracing::warn!(
            "allow_unauthenticated: {what}; requests are forwarded with no verified user{}",
            if role == Role::Agent {
                ", under the agent's own credential"
            } else {
                ""
            }
        );
    }
    Ok((
        pipeline.allow_unauthenticated(allow_unauthenticated),
        watcher,
    ))
}

/// The role's phases on the chain in `file`, if any.
async fn chain_pipeline(
    role: Role,
    file: Option<&std::path::Path>,
) -> anyhow::Result<(Pipeline, Option<plugin::Watcher>)> {
    // SIGHUP would otherwise end the process (its default action) while there is no
    // chain to reload, or before the chain's watcher takes the signal over.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let Some(file) = file else {
        let logged = async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: no plugin chain is configured, nothing to reload");
            }
        };
        tokio::spawn(tracing::Instrument::instrument(
            logged,
            tracing::info_span!("sighup"),
        ));
        return Ok((Pipeline::builtin(role), None));
    };
    let host: Arc<PluginHost> = PluginHost::load(file, role).await?;
    let watcher = plugin::watch(&host, plugin::WatchOptions::default())?;
    drop(hangups);
    Ok((Pipeline::with_plugins(role, host), Some(watcher)))
}

/// Waits for what requests left running (phase 7 of the last responses, upgraded
/// sessions the closed connections are ending), so their audit events are written
/// before the audit log is flushed. Bounded: the listeners have stopped already.
async fn drain_requests(requests: &tokio_util::task::TaskTracker) {
    requests.close();
    if tokio::time::timeout(std::time::Duration::from_secs(10), requests.wait())
        .await
        .is_err()
    {
        tracing::warn!(left = requests.len(), "request tasks still running at exit");
    }
}

/// Adds the audit log when `[audit]` is configured; its sinks flush on shutdown.
fn with_audit(
    pipeline: Pipeline,
    settings: Option<&crate::audit::AuditSettings>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Pipeline> {
    Ok(match settings {
        Some(s) => pipeline.with_audit(crate::audit::AuditLog::start(s, shutdown.clone())?),
        None => pipeline,
    })
}

/// One machine-readable line on stdout saying where the listeners are (useful with
/// port 0), while logs go to stderr.
fn announce(value: serde_json::Value) {
    println!("{value}");
}
