//! `hawser cluster ...`: register, list, rotate, retire and remove clusters in the
//! hub's registry (the CLI side of [`crate::bundle`] and [`crate::rotate`]).

use std::path::PathBuf;

use crate::bundle::{self, RegisterRequest};
use crate::cli::ClusterOp;
use crate::config::HubConfig;
use crate::pki::Fingerprint;
use crate::rotate;

/// Runs one cluster operation against the hub's state directory.
pub fn run(cfg: HubConfig, op: ClusterOp) -> anyhow::Result<()> {
    match op {
        ClusterOp::Register {
            name,
            region,
            zone,
            out,
            image,
            validity_days,
            namespace,
            user_extra_keys,
        } => {
            let out_dir = out.unwrap_or_else(|| PathBuf::from(format!("hawser-{name}")));
            let req = RegisterRequest {
                state_dir: cfg.state_dir.clone(),
                name,
                region,
                zone,
                hub_address: cfg.tunnel.advertise.clone(),
                hub_server_name: cfg.tunnel.advertise_host().to_string(),
                out_dir,
                image,
                validity_days,
                namespace,
                user_extra_keys,
                issuer: cfg.credentials.issuer.clone(),
            };
            let outcome = bundle::register_cluster(&req)?;
            println!(
                "registered cluster {} (certificate {})",
                outcome.record.name,
                outcome
                    .record
                    .certs
                    .first()
                    .map(|f| f.to_string())
                    .unwrap_or_default()
            );
            for f in &outcome.files {
                println!("  wrote {}", f.display());
            }
            println!(
                "deploy it with:\n  kubectl apply -f {}\n  {}",
                req.out_dir.join("manifest.yaml").display(),
                bundle::configmap_command(&req.namespace, "target/wasm32-wasip2/release")
            );
            Ok(())
        }
        ClusterOp::List => {
            let clusters = bundle::list_clusters(&cfg.state_dir)?;
            if clusters.is_empty() {
                println!("no clusters registered");
            }
            for c in clusters {
                let certs: Vec<String> = c.certs.iter().map(|f| f.to_string()).collect();
                println!(
                    "{}\tregion={}\tzone={}\tcerts={}\tregistered={}",
                    c.name,
                    c.region.as_deref().unwrap_or("-"),
                    c.zone.as_deref().unwrap_or("-"),
                    certs.join(","),
                    c.registered_at
                );
            }
            Ok(())
        }
        ClusterOp::RotateCert {
            name,
            out,
            validity_days,
            namespace,
        } => {
            let out_dir = out.unwrap_or_else(|| PathBuf::from(format!("hawser-{name}-rotated")));
            let req = rotate::RotateRequest {
                state_dir: cfg.state_dir.clone(),
                name,
                out_dir,
                validity_days,
            };
            let outcome = rotate::rotate_cert(&req)?;
            println!(
                "issued certificate {} for cluster {}; admitted alongside {}",
                outcome.fingerprint,
                req.name,
                join(&outcome.previous)
            );
            for f in &outcome.files {
                println!("  wrote {}", f.display());
            }
            println!(
                "ship it to the agents with: kubectl -n {namespace} patch secret hawser-agent --type merge --patch-file {}",
                req.out_dir.join(rotate::SECRET_PATCH).display()
            );
            println!(
                "once every agent uses it: hawser cluster retire-cert {} --fingerprint <old>",
                req.name
            );
            Ok(())
        }
        ClusterOp::AgentChain {
            name,
            user_extra_keys,
            patch,
        } => {
            let chain = bundle::current_agent_chain(
                &cfg.state_dir,
                &name,
                &cfg.credentials.issuer,
                &user_extra_keys,
            )?;
            if patch {
                print!("{}", bundle::chain_secret_patch(&chain));
            } else {
                print!("{chain}");
            }
            Ok(())
        }
        ClusterOp::RetireCert { name, fingerprint } => {
            let fp: Fingerprint = fingerprint.parse()?;
            let rec = rotate::retire_cert(&cfg.state_dir, &name, &fp)?;
            println!(
                "retired certificate {fp} of cluster {name}; its tunnels close within a second; still admitted: {}",
                join(&rec.certs)
            );
            Ok(())
        }
        ClusterOp::Remove { name } => {
            let rec = bundle::remove_cluster(&cfg.state_dir, &name)?;
            println!(
                "removed cluster {}; its tunnels close within a second",
                rec.name
            );
            Ok(())
        }
    }
}

fn join(fps: &[Fingerprint]) -> String {
    fps.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
