//! A whole path for one test: kube-apiserver double, hub, one registered cluster,
//! and its agents.

use super::procs::{agent_config, AgentProc, ApiTarget, HubOpts, HubProc, FAST_TUNNEL};
use crate::apiserver::{ApiServerDouble, DoubleConfig, Rule, UserInfo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The agent's service-account token at the double.
pub const AGENT_TOKEN: &str = "agent-sa-token";
/// The agent's service-account user.
pub const AGENT_USER: &str = "system:serviceaccount:hawser-system:hawser-agent";
/// The cluster every stack registers.
pub const CLUSTER: &str = "eu1";

/// Everything a path test needs, torn down on drop.
pub struct Stack {
    // Fields drop in this order: agents go before the hub, so they never redial its
    // freed port, which another test's listener may have taken by then.
    /// Running agents.
    pub agents: Vec<AgentProc>,
    /// The hub.
    pub hub: HubProc,
    /// The API server double.
    pub api: ApiServerDouble,
    /// The registered cluster's bundle.
    pub bundle: PathBuf,
    /// Scratch directory.
    pub dir: tempfile::TempDir,
}

/// A double that knows the agent's token and lets it do anything (as an
/// impersonating agent would, before identity stages exist).
pub fn double_config() -> DoubleConfig {
    let mut cfg = DoubleConfig::default();
    cfg.tokens.insert(
        AGENT_TOKEN.into(),
        UserInfo {
            username: AGENT_USER.into(),
            uid: "agent-uid".into(),
            groups: vec!["system:serviceaccounts".into()],
            extra: BTreeMap::new(),
        },
    );
    cfg.rules
        .push(Rule::allow_all(&format!("user:{AGENT_USER}")));
    cfg
}

impl Stack {
    /// Starts the double, a hub, registers `eu1`, and starts `agents` agent
    /// processes with `connections` tunnels each.
    pub async fn start(
        api: DoubleConfig,
        hub: HubOpts,
        agents: usize,
        connections: usize,
    ) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let api = ApiServerDouble::start(api)
            .await
            .expect("start apiserver double");
        let hub = HubProc::start(&dir.path().join("hub"), &hub).await;
        let bundle = hub.register(CLUSTER).await;
        let mut stack = Stack {
            dir,
            api,
            hub,
            bundle,
            agents: Vec::new(),
        };
        for _ in 0..agents {
            stack.add_agent(connections, FAST_TUNNEL).await;
        }
        if agents > 0 {
            assert!(
                stack
                    .hub
                    .wait_tunnels(CLUSTER, agents * connections, Duration::from_secs(15))
                    .await,
                "agents did not connect: {}",
                stack.hub.logs.text()
            );
        }
        stack
    }

    /// Where agents reach the double.
    pub fn api_target(&self) -> ApiTarget {
        ApiTarget {
            url: self.api.url(),
            ca_pem: self.api.ca_pem(),
            token: AGENT_TOKEN.into(),
        }
    }

    /// Starts one more agent replica.
    pub async fn add_agent(&mut self, connections: usize, tunnel: &str) -> &AgentProc {
        let name = format!("replica-{}", self.agents.len());
        let cfg = agent_config(
            &self.bundle,
            &name,
            self.hub.tunnel,
            &self.api_target(),
            connections,
            tunnel,
        );
        self.agents.push(AgentProc::start(&cfg).await);
        self.agents.last().unwrap()
    }

    /// `/clusters/eu1` + `path`.
    pub fn path(&self, path: &str) -> String {
        format!("/clusters/{CLUSTER}{path}")
    }
}
