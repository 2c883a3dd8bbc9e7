//! The workspace's real plugins (not fixtures) running in the real host runtime, every
//! phase: static-token credentials, impersonation mapping with host policy (an agent
//! chain), locality routing with failover and audit redaction (a hub chain).

mod plugin_support;

use hawser::plugin::testing::{audit_event, candidate, request};
use hawser::plugin::{validate::REDACTED, DenialKind, FailureKind, Health, Rejection};
use plugin_support::Fixture;

const TOKENS: &str = r#"
[[stage]]
name = "tokens"
kind = "credential"
plugin = "{tokens}"
instances = "reuse"
[stage.config.tokens.s3cret]
user = "alice@example.com"
groups = ["dev", "system:masters"]
[stage.config.tokens.guest]
user = "guest"
"#;

const IMPERSONATE: &str = r#"
[[stage]]
name = "impersonate"
kind = "impersonation"
plugin = "{impersonate}"
[stage.policy]
deny_groups = ["system:*"]
[stage.config]
user_prefix = "hawser:"
keep_groups = true
add_groups = ["hawser:users"]
deny_users = ["guest"]
"#;

const ROUTE_AND_AUDIT: &str = r#"
[[stage]]
name = "route"
kind = "routing"
plugin = "{route}"
[stage.policy]
allow_headers = ["x-hawser-route"]
[stage.config]
region = "eu"
zone = "eu-a"
route_header = "x-hawser-route"

[[stage]]
name = "audit"
kind = "audit"
plugin = "{audit}"
failure = "open"
[stage.config]
drop_paths = ["/healthz"]
redact_query = true
"#;

#[tokio::test]
async fn a_chain_of_the_real_plugins_serves_every_phase() {
    // Routing runs at the hub, impersonation at the agent.
    let hub_fx = Fixture::new(&format!("{TOKENS}{ROUTE_AND_AUDIT}"));
    let agent_fx = Fixture::new(&format!("{TOKENS}{IMPERSONATE}"));
    let (hub, agent) = (hub_fx.host().await, agent_fx.host().await);
    let (chain, agent_chain) = (hub.chain(), agent.chain());
    let req = request("/api/v1/pods", &[("authorization", "Bearer s3cret")]);

    // Credential.
    let who = chain.check_credential(&req).await.unwrap().unwrap();
    assert_eq!(who.user, "alice@example.com");
    let r = chain
        .check_credential(&request("/", &[("authorization", "Bearer wrong")]))
        .await
        .unwrap_err();
    assert_eq!(r.http_status(), 401);
    let status: serde_json::Value = serde_json::from_str(&r.status_json()).unwrap();
    assert_eq!(
        (status["reason"].as_str(), status["code"].as_u64()),
        (Some("Unauthorized"), Some(401))
    );

    // Impersonation: the mapping passes system:masters through, and the stage policy
    // refuses it: a plugin cannot widen what the config allows.
    let r = agent_chain.impersonate(&who, &req).await.unwrap_err();
    match &r {
        Rejection::Failed(f) => {
            assert_eq!(f.kind, FailureKind::IllegalOutput);
            assert!(f.detail.contains("system:masters"), "{}", f.detail);
        }
        other => panic!("{other:?}"),
    }
    let mut dev = who.clone();
    dev.groups.retain(|g| g == "dev");
    let id = agent_chain.impersonate(&dev, &req).await.unwrap().unwrap();
    assert_eq!(id.user, "hawser:alice@example.com");
    assert_eq!(id.groups, ["dev", "hawser:users"]);
    let guest = chain
        .check_credential(&request("/", &[("authorization", "Bearer guest")]))
        .await
        .unwrap()
        .unwrap();
    match agent_chain.impersonate(&guest, &req).await.unwrap_err() {
        Rejection::Denied { stage, denial } => {
            assert_eq!(
                (stage.as_str(), denial.kind),
                ("impersonate", DenialKind::Forbidden)
            );
        }
        other => panic!("{other:?}"),
    }

    // Routing: nearest healthy, failover, 503 when nothing is healthy.
    let mut cands = vec![
        candidate("c1", "far", "us", "us-a", Health::Healthy),
        candidate("c1", "near", "eu", "eu-a", Health::Healthy),
    ];
    let choice = chain
        .route(&req, Some(&who), &cands)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(choice.endpoint, "near");
    assert_eq!(choice.set_headers[0].value, "c1/near");
    cands[1].health = Health::Unhealthy;
    assert_eq!(
        chain
            .route(&req, Some(&who), &cands)
            .await
            .unwrap()
            .unwrap()
            .endpoint,
        "far"
    );
    cands[0].health = Health::Unhealthy;
    assert_eq!(
        chain
            .route(&req, Some(&who), &cands)
            .await
            .unwrap_err()
            .http_status(),
        503
    );

    // Audit: the host applies the redaction the plugin asks for; health checks drop.
    let mut ev = audit_event(&req);
    ev.query = "watch=true".into();
    let recorded = chain.audit(ev).await.unwrap().unwrap();
    assert_eq!(recorded.headers[0].value, REDACTED);
    assert_eq!(recorded.query, REDACTED);
    assert_eq!(
        chain
            .audit(audit_event(&request("/healthz", &[])))
            .await
            .unwrap(),
        None
    );

    let text = hub.metrics().render_prometheus();
    assert!(text.contains("hawser_plugin_invocations_total{stage=\"tokens\",kind=\"credential\",plugin=\"hawser-plugin-header-credential\""), "{text}");
}

#[tokio::test]
async fn without_an_impersonation_stage_the_caller_is_still_never_system_masters() {
    // A chain that checks credentials and maps nothing (as an agent's may): the caller
    // is sent upstream as the credential stage found it, within the host's floor.
    let fx = Fixture::new(TOKENS);
    let host = fx.host().await;
    let chain = host.chain();
    let req = request("/api/v1/pods", &[("authorization", "Bearer s3cret")]);
    let who = chain.check_credential(&req).await.unwrap().unwrap();
    assert!(who.groups.iter().any(|g| g == "system:masters"));
    match chain.impersonate(&who, &req).await.unwrap_err() {
        Rejection::Denied { stage, denial } => assert_eq!(
            (stage.as_str(), denial.kind, denial.message.as_str()),
            (
                "host",
                DenialKind::Forbidden,
                "impersonating group \"system:masters\" is never allowed"
            )
        ),
        other => panic!("{other:?}"),
    }
    // Without it, the caller passes unchanged (no stage mapped it).
    let guest = chain
        .check_credential(&request("/", &[("authorization", "Bearer guest")]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chain.impersonate(&guest, &req).await, Ok(None));
}

/// The workspace's stage plugins are `no_std` and call no host function, so their
/// components import no WASI and no host interface: each fresh instance is a single core
/// instance (what keeps a fresh stage near 10 µs, see `host/benches/plugin_stage.rs`).
/// A plugin built with std (the misbehave fixture) shows what the check guards against:
/// a dependency that turns std on brings in all of WASI.
#[tokio::test]
async fn the_no_std_plugins_import_neither_wasi_nor_host_functions() {
    let std_stage = plugin_support::misbehave("std", "audit", "ok", "1", "");
    let hub_fx = Fixture::new(&format!("{TOKENS}{ROUTE_AND_AUDIT}{std_stage}"));
    let agent_fx = Fixture::new(IMPERSONATE);
    let (hub, agent) = (hub_fx.host().await, agent_fx.host().await);
    let stages = [hub.chain().stages(), agent.chain().stages()].concat();

    let reaching = |imports: &[String]| -> Vec<String> {
        imports
            .iter()
            .filter(|i| i.starts_with("wasi:") || i.starts_with("hawser:plugin/host"))
            .cloned()
            .collect()
    };
    let mut checked = Vec::new();
    for s in &stages {
        if s.name == "std" {
            assert!(
                s.imports.iter().any(|i| i.starts_with("wasi:cli/")),
                "{:?}",
                s.imports
            );
            continue;
        }
        assert!(
            !s.imports.is_empty(),
            "{}: the type imports are listed",
            s.name
        );
        assert_eq!(reaching(&s.imports), Vec::<String>::new(), "{}", s.name);
        checked.push(s.name.as_str());
    }
    assert_eq!(checked, ["tokens", "route", "audit", "impersonate"]);
}
