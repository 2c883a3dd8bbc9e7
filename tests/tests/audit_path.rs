//! Kubernetes audit events from hub and agent, joined with the API server's by
//! Audit-ID: `user` is the authenticated principal, `impersonatedUser` the identity
//! the agent impersonates.

use hawser_tests::apiserver::Rule;
use hawser_tests::harness::audit_log::{audit_section, complete, events};
use hawser_tests::harness::client::{front_client, get};
use hawser_tests::harness::identity::wasm;
use hawser_tests::harness::procs::{agent_config, AgentProc, HubOpts, FAST_TUNNEL};
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use std::time::Duration;

const TOKENS: &str = "[stage.config]\nheader = \"authorization\"\n[stage.config.tokens.alice-token]\nuser = \"alice\"\ngroups = [\"devs\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_agent_and_api_server_records_join_by_audit_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub_chain = d.join("hub-chain.toml");
    std::fs::write(&hub_chain, format!("role = \"hub\"\n[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{}\"\n{TOKENS}", wasm("header-credential"))).unwrap();
    let agent_chain = d.join("agent-chain.toml");
    std::fs::write(
        &agent_chain,
        format!(
            "role = \"agent\"\n[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{}\"\n{TOKENS}\n[[stage]]\nname = \"impersonate\"\nkind = \"impersonation\"\nplugin = \"{}\"\n[stage.config]\nuser_prefix = \"hawser:\"\nkeep_groups = true\n",
            wasm("header-credential"),
            wasm("impersonate")
        ),
    )
    .unwrap();
    let mut api = double_config();
    api.rules.push(Rule::allow_all("user:hawser:alice"));
    let opts = HubOpts {
        top_extra: format!("plugins = \"{}\"\n", hub_chain.display()),
        front_extra: audit_section(d, "hub"),
        ..HubOpts::default()
    };
    let mut s = Stack::start(api, opts, 0, 1).await;
    let cfg = agent_config(
        &s.bundle,
        "audited",
        s.hub.tunnel,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "plugins = \"{}\"\n{text}{}",
            agent_chain.display(),
            audit_section(d, "agent")
        ),
    )
    .unwrap();
    s.agents.push(AgentProc::start(&cfg).await);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(10))
            .await
    );

    let client = front_client(&s.hub.ca_pem());
    let ok = get(
        &client,
        s.hub.front,
        &s.path("/api/v1/namespaces/default/pods"),
        &[("authorization", "Bearer alice-token")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let id = ok.headers["audit-id"].to_str().unwrap().to_string();
    let denied = get(
        &client,
        s.hub.front,
        &s.path("/api/v1/namespaces/default/pods"),
        &[("authorization", "Bearer forged")],
    )
    .await;
    assert_eq!(denied.status, 401);
    let denied_id = denied.headers["audit-id"].to_str().unwrap().to_string();

    let (hub_log, agent_log) = (d.join("hub-audit.log"), d.join("agent-audit.log"));
    let found = hawser_tests::harness::eventually(Duration::from_secs(10), || async {
        Some((
            complete(&hub_log, &id)?,
            complete(&agent_log, &id)?,
            complete(&hub_log, &denied_id)?,
        ))
    })
    .await;
    let (hub_ev, agent_ev, denied_ev) = found.expect("audit events written");
    for e in [&hub_ev, &agent_ev] {
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["level"], "Metadata");
        assert_eq!(e["user"]["username"], "alice");
        assert_eq!(e["verb"], "list");
        assert_eq!(e["objectRef"]["resource"], "pods");
        assert_eq!(e["responseStatus"]["code"], 200);
        let ts = e["stageTimestamp"].as_str().unwrap();
        assert_eq!(
            ts.split('.').nth(1).unwrap().trim_end_matches('Z').len(),
            6,
            "microseconds: {ts}"
        );
    }
    assert!(hub_ev["impersonatedUser"].is_null());
    assert_eq!(agent_ev["impersonatedUser"]["username"], "hawser:alice");
    assert_eq!(hub_ev["annotations"]["hawser.io/role"], "hub");
    assert_eq!(agent_ev["annotations"]["hawser.io/role"], "agent");
    assert!(events(&hub_log)
        .iter()
        .any(|e| e["auditID"] == id.as_str() && e["stage"] == "RequestReceived"));
    assert_eq!(denied_ev["responseStatus"]["code"], 401);
    assert!(
        events(&agent_log)
            .iter()
            .all(|e| e["auditID"] != denied_id.as_str()),
        "a refused request reached the agent"
    );

    // The API server's own record carries the same ID: the agent's identity, impersonating.
    let upstream = s.api.audit_events();
    let api_ev = upstream
        .iter()
        .find(|e| e["auditID"] == id.as_str() && e["stage"] == "ResponseComplete")
        .expect("API server event");
    assert_eq!(api_ev["impersonatedUser"]["username"], "hawser:alice");
    assert!(api_ev["user"]["username"]
        .as_str()
        .unwrap()
        .starts_with("system:serviceaccount:"));
    // The policy's None rule: /version is not recorded.
    let _ = get(
        &client,
        s.hub.front,
        &s.path("/version"),
        &[("authorization", "Bearer alice-token")],
    )
    .await;
    assert!(events(&hub_log)
        .iter()
        .all(|e| e["requestURI"] != "/version"));
    // Percent-encoding does not dodge a rule: the API server reads `/vers%69on` as
    // `/version`, and so does the policy.
    let encoded = get(
        &client,
        s.hub.front,
        &s.path("/vers%69on"),
        &[("authorization", "Bearer alice-token")],
    )
    .await;
    let encoded_id = encoded.headers["audit-id"].to_str().unwrap().to_string();

    // A watch is long-running: ResponseStarted when its head goes out, then
    // ResponseComplete when the stream ends (the double closes it after 1 s).
    let watch = get(
        &client,
        s.hub.front,
        &s.path("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1"),
        &[("authorization", "Bearer alice-token")],
    )
    .await;
    assert_eq!(watch.status, 200);
    let wid = watch.headers["audit-id"].to_str().unwrap().to_string();
    let stages = hawser_tests::harness::eventually(Duration::from_secs(10), || async {
        let stages: Vec<String> = events(&hub_log)
            .into_iter()
            .filter(|e| e["auditID"] == wid.as_str())
            .map(|e| e["stage"].as_str().unwrap_or("").to_string())
            .collect();
        stages
            .contains(&"ResponseComplete".to_string())
            .then_some(stages)
    })
    .await
    .expect("watch audited");
    assert_eq!(
        stages,
        ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    );
    // Events are written in order; the encoded /version request came before the watch.
    assert!(
        events(&hub_log)
            .iter()
            .all(|e| e["auditID"] != encoded_id.as_str()),
        "the policy's None rule for /version was dodged by percent-encoding"
    );
}
