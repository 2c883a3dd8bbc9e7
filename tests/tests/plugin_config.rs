//! The shipped chain files (`config/plugins-*.toml`) load as they are, with the
//! freshly built plugins.

use std::path::PathBuf;

use hawser::plugin::{PluginHost, Role, StageKind};

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}

#[tokio::test]
async fn the_shipped_hub_and_agent_chains_load() {
    // Fails with "... does not exist" when the plugins are not built: run
    // scripts/build-plugins.sh.
    hawser::plugin::testing::plugin("hawser-plugin-header-credential");
    for (file, role, kinds) in [
        (
            "plugins-hub.toml",
            Role::Hub,
            &[StageKind::Credential, StageKind::Routing, StageKind::Audit][..],
        ),
        (
            "plugins-agent.toml",
            Role::Agent,
            &[
                StageKind::Credential,
                StageKind::Impersonation,
                StageKind::Audit,
            ][..],
        ),
    ] {
        let host = match PluginHost::load(config(file), role).await {
            Ok(h) => h,
            Err(e) => panic!("{file}: {e}"),
        };
        let chain = host.chain();
        for k in kinds {
            assert!(chain.has(*k), "{file}: no {k} stage");
        }
    }
}
