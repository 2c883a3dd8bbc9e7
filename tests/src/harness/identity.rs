//! Production-shaped identity for a stack: the hub's chain is the JWT credential stage
//! with the hub's public keys, the agents run the chain their registration bundle
//! carries (the JWT stage bound to the cluster, then impersonation), and users hold
//! credentials the hub issued.

use super::procs::{agent_config, AgentProc, HubOpts, HubProc, FAST_TUNNEL};
use super::stack::{Stack, CLUSTER};
use crate::apiserver::DoubleConfig;
use base64::{engine::general_purpose::STANDARD, Engine};
use hawser::credential::{self, IssueRequest, IssuerKeys, KeyState};
use hawser::plugin::testing::{plugin_dir, plugin_path};
use std::path::Path;
use std::time::Duration;

/// The path of a built plugin: `wasm("jwt-credential")`.
pub fn wasm(name: &str) -> String {
    plugin_path(&format!("hawser_plugin_{}", name.replace('-', "_")))
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

/// The `[stage.config.keys]` lines of the JWT stage: the public keys in the hub's
/// `state` that still verify, as `"kid" = "base64"`.
pub fn trusted_keys(state: &Path) -> String {
    let mut keys = String::new();
    for r in IssuerKeys::load(state).unwrap().records() {
        if r.state != KeyState::Retired {
            keys.push_str(&format!(
                "\"{}\" = \"{}\"\n",
                r.kid,
                STANDARD.encode(r.public_key)
            ));
        }
    }
    keys
}

/// The JWT credential stage (reused instances) with the hub's current public keys in
/// `state`, `revoked` ids and `extra` config lines (`cluster = "eu1"` at an agent).
pub fn jwt_stage(state: &Path, extra: &str, revoked: &[String]) -> String {
    let keys = trusted_keys(state);
    format!(
        "[[stage]]\nname = \"jwt\"\nkind = \"credential\"\nplugin = \"{}\"\ninstances = \"reuse\"\n[stage.config]\nissuer = \"hawser-hub\"\nrevoked = {revoked:?}\n{extra}\n[stage.config.keys]\n{keys}",
        wasm("jwt-credential")
    )
}

impl Stack {
    /// A stack whose hub checks hub-issued credentials (the JWT stage) and whose
    /// `agents` run their bundle's own chain, as `hawser cluster register` wrote it.
    /// Issue credentials with [`Stack::issue_token`].
    pub async fn start_with_identity(
        api: DoubleConfig,
        agents: usize,
        connections: usize,
    ) -> Stack {
        // The hub makes its issuer keys on first start; its chain needs them.
        let mut s = Stack::start(api, HubOpts::default(), 0, connections).await;
        let chain = s.dir.path().join("hub-chain.toml");
        let state = s.hub.dir.join("state");
        let text = format!("role = \"hub\"\n{}", jwt_stage(&state, "", &[]));
        std::fs::write(&chain, text).unwrap();
        let opts = HubOpts {
            tunnel: s.hub.tunnel.to_string(),
            front: s.hub.front.to_string(),
            top_extra: format!("plugins = \"{}\"\n", chain.display()),
            allow_unauthenticated: false,
            ..HubOpts::default()
        };
        s.hub.kill().await;
        let dir = s.hub.dir.clone();
        s.hub = HubProc::start(&dir, &opts).await;

        // The bundle's chain names the plugins where the pod mounts them.
        let bundled = std::fs::read_to_string(s.bundle.join("plugins-agent.toml")).unwrap();
        let agent_chain = s.dir.path().join("agent-chain.toml");
        let local = bundled.replace("/opt/hawser/plugins", &plugin_dir().display().to_string());
        std::fs::write(&agent_chain, local).unwrap();
        for i in 0..agents {
            let cfg = agent_config(
                &s.bundle,
                &format!("replica-{i}"),
                s.hub.tunnel,
                &s.api_target(),
                connections,
                FAST_TUNNEL,
            );
            let text = std::fs::read_to_string(&cfg).unwrap();
            let text = format!("plugins = \"{}\"\n{text}", agent_chain.display());
            std::fs::write(&cfg, text).unwrap();
            s.agents.push(AgentProc::start(&cfg).await);
        }
        assert!(
            s.hub
                .wait_tunnels(CLUSTER, agents * connections, Duration::from_secs(15))
                .await,
            "agents did not connect: {}",
            s.hub.logs.text()
        );
        s
    }

    /// A bearer token the hub issued to `user` in `groups`, for this stack's cluster,
    /// valid for an hour.
    pub fn issue_token(&self, user: &str, groups: &[&str]) -> String {
        let req = IssueRequest {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            clusters: vec![CLUSTER.into()],
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        let issued = credential::issue(&self.hub.dir.join("state"), "hawser-hub", &req)
            .unwrap_or_else(|e| panic!("issuing a credential: {e}"));
        issued.token.expose().to_string()
    }
}
