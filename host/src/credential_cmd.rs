//! `hawser credential ...`: the CLI side of [`crate::credential`].
// The doc comments of `CredentialOp` are clap's help text, where `<name>` is a placeholder.
#![allow(rustdoc::invalid_html_tags)]

use crate::config::HubConfig;
use crate::credential::{self, ExecArgs, IssueRequest, IssuerKeys, KubeconfigAuth};
use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// Credential operations.
#[derive(Debug, Subcommand)]
pub enum CredentialOp {
    /// Issue a signed, short-lived credential and optionally write a kubeconfig.
    Issue {
        /// The hub's TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// User name the clusters will see (impersonated by the agent).
        #[arg(long)]
        user: String,
        /// Group, repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Extra attribute KEY=VALUE, repeatable.
        #[arg(long = "extra", value_parser = parse_key_value)]
        extra: Vec<(String, String)>,
        /// Cluster the credential may reach, repeatable (at least one).
        #[arg(long = "cluster", required = true)]
        clusters: Vec<String>,
        /// Stable user id.
        #[arg(long)]
        uid: Option<String>,
        /// Lifetime, e.g. 8h (access tokens at most 24h; with --exec, the refresh credential's, at most 30d).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "8h")]
        ttl: std::time::Duration,
        /// Issue a refresh credential for kubectl's exec plugin instead of a token.
        #[arg(long)]
        exec: bool,
        /// Allow user or group names starting with `system:`.
        #[arg(long)]
        allow_system_names: bool,
        /// Write a kubeconfig here (mode 0600), one context per cluster.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The hub's front URL for the kubeconfig (default: https://<first server name>:<front port>).
        #[arg(long)]
        hub_url: Option<String>,
        /// With --exec: where to keep the refresh credential (default: next to the kubeconfig).
        #[arg(long)]
        refresh_file: Option<PathBuf>,
    },
    /// Revoke a credential by id; takes effect without a restart.
    Revoke {
        /// The hub's TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// The credential id (printed by `issue`).
        id: String,
    },
    /// Rotate the issuer key; credentials signed by the old key verify during the overlap.
    /// The new key is the one `--prepare` made, if any.
    RotateKey {
        /// The hub's TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// How long the old key still verifies.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30d")]
        overlap: std::time::Duration,
        /// Only prepare the next key: it verifies at once but signs after the next
        /// rotation. Update the agents' chains (`cluster agent-chain --patch`) before
        /// rotating, and they accept new credentials without a gap.
        #[arg(long, conflicts_with = "overlap")]
        prepare: bool,
        /// Withdraw the prepared key instead of rotating to it: it stops verifying and
        /// its private half is deleted. Nothing was signed with it.
        #[arg(long, conflicts_with_all = ["overlap", "prepare"])]
        withdraw: bool,
    },
    /// Export the public keys and revocation list for agents.
    ExportKeys {
        /// The hub's TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// Directory for credential-keys.toml and revoked.toml.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// kubectl exec credential plugin: prints an ExecCredential with a fresh token.
    Exec {
        /// The hub's front URL.
        #[arg(long)]
        hub: String,
        /// The hub CA file.
        #[arg(long)]
        ca_file: PathBuf,
        /// The refresh credential file.
        #[arg(long)]
        refresh_file: PathBuf,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Runs one credential operation.
pub async fn run(op: CredentialOp) -> anyhow::Result<()> {
    match op {
        CredentialOp::Issue {
            config,
            user,
            groups,
            extra,
            clusters,
            uid,
            ttl,
            exec,
            allow_system_names,
            kubeconfig,
            hub_url,
            refresh_file,
        } => {
            let cfg = HubConfig::load(&config)?;
            let registry = crate::registry::Registry::load(&cfg.state_dir)?;
            for c in &clusters {
                if registry.get(c).is_none() {
                    eprintln!("warning: cluster `{c}` is not registered (yet)");
                }
            }
            let req = IssueRequest {
                user: user.clone(),
                groups,
                extra,
                clusters: clusters.clone(),
                ttl,
                exec,
                uid,
                allow_system_names,
            };
            let issued = credential::issue(&cfg.state_dir, &cfg.credentials.issuer, &req)?;
            let expires = humantime::format_rfc3339_seconds(issued.expires_at);
            eprintln!(
                "issued credential {} for {user}, expires {expires}",
                issued.id
            );
            let Some(path) = kubeconfig else {
                println!("{}", issued.token.expose());
                return Ok(());
            };
            let hub_url = hub_url.unwrap_or_else(|| {
                let host = cfg
                    .front
                    .server_names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "127.0.0.1".into());
                format!("https://{host}:{}", cfg.front.listen.port())
            });
            let ca_file = cfg.state_dir.join("ca.crt");
            let ca_pem = std::fs::read_to_string(&ca_file)
                .with_context(|| format!("reading {}", ca_file.display()))?;
            let auth = if exec {
                let refresh = refresh_file.unwrap_or_else(|| path.with_extension("refresh"));
                write_private(&refresh, issued.token.expose())?;
                let command = std::env::current_exe().context("locating the hawser binary")?;
                KubeconfigAuth::Exec {
                    command,
                    refresh_file: refresh,
                    ca_file,
                }
            } else {
                KubeconfigAuth::Token(issued.token)
            };
            write_private(
                &path,
                &credential::kubeconfig(&hub_url, &ca_pem, &user, &clusters, auth),
            )?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        CredentialOp::Revoke { config, id } => {
            let cfg = HubConfig::load(&config)?;
            if credential::revoke(&cfg.state_dir, &id, None)? {
                println!(
                    "revoked {id}; the hub refuses it within {}",
                    humantime::format_duration(cfg.credentials.reload_interval)
                );
            } else {
                println!("{id} was already revoked");
            }
            Ok(())
        }
        CredentialOp::RotateKey {
            config,
            overlap,
            prepare,
            withdraw,
        } => {
            let cfg = HubConfig::load(&config)?;
            let mut keys = IssuerKeys::load_or_create(&cfg.state_dir)?;
            if withdraw {
                match keys.withdraw_next()? {
                    Some(kid) => println!(
                        "prepared issuer key {kid} withdrawn: it verifies nothing now, and the active key keeps signing"
                    ),
                    None => println!("no issuer key is prepared; nothing withdrawn"),
                }
                return Ok(());
            }
            if prepare {
                let (kid, made) = keys.prepare_next()?;
                let what = if made { "prepared" } else { "already prepared" };
                println!(
                    "issuer key {kid} {what}: it verifies now and signs after `hawser credential rotate-key`; \
                     give the agents their updated chain first (`hawser cluster agent-chain NAME --patch`)"
                );
                return Ok(());
            }
            let prepared = keys.next_key().map(|k| k.kid.clone());
            let kid = keys.rotate(overlap)?;
            let how = if prepared.as_deref() == Some(kid.as_str()) {
                "the prepared "
            } else {
                "new "
            };
            println!(
                "{how}issuer key {kid} signs now; the previous key verifies for another {}",
                humantime::format_duration(overlap)
            );
            Ok(())
        }
        CredentialOp::ExportKeys { config, out_dir } => {
            let cfg = HubConfig::load(&config)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let keys = IssuerKeys::load_or_create(&cfg.state_dir)?;
            keys.export_public(&out_dir.join("credential-keys.toml"))?;
            credential::revocation::export(&cfg.state_dir, &out_dir.join("revoked.toml"))?;
            println!(
                "wrote {} and {}",
                out_dir.join("credential-keys.toml").display(),
                out_dir.join("revoked.toml").display()
            );
            Ok(())
        }
        CredentialOp::Exec {
            hub,
            ca_file,
            refresh_file,
        } => {
            let exec_info = std::env::var("KUBERNETES_EXEC_INFO").ok();
            let out = credential::exec_command(&ExecArgs {
                hub,
                ca_file,
                refresh_file,
                exec_info,
            })
            .await?;
            println!("{out}");
            Ok(())
        }
    }
}

/// Writes a file only its owner can read (it holds a credential). A new file replaces
/// an existing one rather than reusing it, whose permissions may be looser.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::files::write_atomic(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_existing_readable_file_is_replaced_by_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "token").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "token");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
