//! Runs the kube-apiserver test double on its own, as the stand-in "external
//! cluster" of `scripts/demo.sh`. Test-only: it is not part of the product.
//!
//! `apiserver-double --dir DIR` writes DIR/ca.crt and DIR/token (the agent's
//! service-account token), prints `{"url": ...}` on stdout and serves until Ctrl-C.
//! Its RBAC lets the agent's service account do anything (it impersonates) and group
//! `devs` (the demo's user) do anything; everyone else is forbidden.

use hawser_tests::apiserver::{ApiServerDouble, Rule};
use hawser_tests::harness::stack::{double_config, AGENT_TOKEN};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = match args.as_slice() {
        [_, flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: apiserver-double --dir DIR");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&dir)?;
    let mut config = double_config();
    config.rules.push(Rule::allow_all("group:devs"));
    let api = ApiServerDouble::start(config).await?;
    for pod in ["web-0", "web-1"] {
        api.add_pod("default", pod);
        api.append_log("default", pod, &format!("{pod} started"));
    }
    std::fs::write(dir.join("ca.crt"), api.ca_pem())?;
    std::fs::write(dir.join("token"), AGENT_TOKEN)?;
    println!("{}", serde_json::json!({ "url": api.url() }));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
