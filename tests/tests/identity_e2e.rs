//! Identity end to end with the real kubectl: a kubeconfig written by
//! `hawser credential issue`, the JWT credential plugin at hub and agent, the
//! impersonation plugin at the agent, and the kube-apiserver double checking it all.
//! Every case is audited: hub and agent events join the API server's by Audit-ID.

#[path = "identity_e2e/audit.rs"]
mod audit;

use audit::{expect_event, ANONYMOUS, VERBOSE};
use hawser::credential::{self, IssueRequest, IssuerKeys};
use hawser_tests::apiserver::{Rule, UserInfo};
use hawser_tests::harness::audit_log::{audit_file, audit_section};
use hawser_tests::harness::identity::{jwt_stage, wasm};
use hawser_tests::harness::kubectl::Kubectl;
use hawser_tests::harness::procs::{agent_config, AgentProc, HubOpts, HubProc, FAST_TUNNEL};
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use hawser_tests::harness::{hawser_cli as cli, issued_id};
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_with_issued_credentials_through_hub_and_agent() {
    let mut api = double_config();
    api.rules.push(Rule::allow_all("group:devs"));
    api.rules.push(Rule::allow_all("group:viewers"));
    let mut s = Stack::start(api, HubOpts::default(), 0, 1).await;
    let (d, state) = (s.dir.path().to_path_buf(), s.hub.dir.join("state"));
    let cfg = s.hub.config();
    let cfg = cfg.to_str().unwrap();
    let hub_url = format!("https://127.0.0.1:{}", s.hub.front.port());

    // Credentials from the CLI: alice may reach eu1; bob only another cluster;
    // carol is revoked. Their kubeconfigs come straight from `credential issue`.
    let kc = |name: &str| d.join(format!("{name}.kubeconfig"));
    let issue = |user: &str, cluster: &str| {
        let path = kc(user);
        cli(&[
            "credential",
            "issue",
            "-c",
            cfg,
            "--user",
            user,
            "--group",
            "devs",
            "--extra",
            "acme.com/team=blue",
            "--cluster",
            cluster,
            "--ttl",
            "1h",
            "--kubeconfig",
            path.to_str().unwrap(),
            "--hub-url",
            &hub_url,
        ])
    };
    issue("alice", CLUSTER);
    issue("bob", "us2");
    let carol = issued_id(&issue("carol", CLUSTER));
    cli(&["credential", "revoke", "-c", cfg, &carol]);
    // An expired credential (issued an hour and a half ago for one hour).
    let keys = IssuerKeys::load(&state).unwrap();
    let old = SystemTime::now() - Duration::from_secs(5400);
    let req = IssueRequest {
        user: "dave".into(),
        groups: vec!["devs".into()],
        clusters: vec![CLUSTER.into()],
        ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    let expired = credential::issue::issue_with(&keys, "hawser-hub", &req, old).unwrap();
    // A forged one: right shape and claims, signed by a key the hub never issued.
    let other = tempfile::tempdir().unwrap();
    let forged = credential::issue(
        other.path(),
        "hawser-hub",
        &IssueRequest {
            user: "mallory".into(),
            groups: vec!["devs".into()],
            clusters: vec![CLUSTER.into()],
            ttl: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .unwrap();

    // Restart the hub with the JWT stage (same ports), start the agent with the JWT
    // stage bound to its cluster plus the impersonation stage.
    let hub_chain = d.join("hub-chain.toml");
    std::fs::write(
        &hub_chain,
        format!(
            "role = \"hub\"\n{}",
            jwt_stage(&state, "", std::slice::from_ref(&carol))
        ),
    )
    .unwrap();
    let agent_chain = d.join("agent-chain.toml");
    std::fs::write(
        &agent_chain,
        format!(
            "role = \"agent\"\n{}\n[[stage]]\nname = \"impersonate\"\nkind = \"impersonation\"\nplugin = \"{}\"\n[stage.policy]\nallow_extra = [\"*\"]\n[stage.config]\nkeep_groups = true\nkeep_extra = true\n",
            jwt_stage(&state, &format!("cluster = \"{CLUSTER}\""), std::slice::from_ref(&carol)),
            wasm("impersonate")
        ),
    )
    .unwrap();
    // The access policy, at the hub and again at the agent: devs reach eu1 and may
    // ask to act as `viewer` in group `viewers`, nothing more.
    let access = "\n[[access.rule]]\ngroups = [\"devs\"]\nclusters = [\"eu1\"]\nimpersonate_users = [\"viewer\"]\nimpersonate_groups = [\"viewers\"]\n";
    let opts = HubOpts {
        tunnel: s.hub.tunnel.to_string(),
        front: s.hub.front.to_string(),
        top_extra: format!("plugins = \"{}\"\n", hub_chain.display()),
        front_extra: format!("{access}{}", audit_section(&d, "hub")),
        ..HubOpts::default()
    };
    s.hub.kill().await;
    let dir = s.hub.dir.clone();
    s.hub = HubProc::start(&dir, &opts).await;
    let agent_cfg = agent_config(
        &s.bundle,
        "jwt",
        s.hub.tunnel,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    let text = std::fs::read_to_string(&agent_cfg).unwrap();
    std::fs::write(
        &agent_cfg,
        format!(
            "plugins = \"{}\"\n{text}{access}{}",
            agent_chain.display(),
            audit_section(&d, "agent")
        ),
    )
    .unwrap();
    let (hub_log, agent_log) = (audit_file(&d, "hub"), audit_file(&d, "agent"));
    s.agents.push(AgentProc::start(&agent_cfg).await);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(15))
            .await,
        "{}",
        s.hub.logs.text()
    );

    // alice: allowed; the API server sees exactly the impersonation headers.
    let alice = Kubectl {
        kubeconfig: kc("alice"),
        cache_dir: d.join("cache-alice"),
    };
    s.api.add_pod("default", "web-0");
    let (code, out, err) = alice.run(&["get", "pods", VERBOSE]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web-0"), "{out}");
    // Its audit events: hub, agent and API server, joined by one Audit-ID.
    let hub_ev = expect_event(&hub_log, &err, 200, "alice").await;
    let id = hub_ev["auditID"].as_str().unwrap();
    assert!(hub_ev["impersonatedUser"].is_null(), "{hub_ev:#}");
    let agent_ev = audit::complete(&agent_log, id).await;
    assert_eq!(agent_ev["user"]["username"], "alice");
    assert_eq!(agent_ev["impersonatedUser"]["username"], "alice");
    assert_eq!(agent_ev["responseStatus"]["code"], 200);
    let api_ev = s
        .api
        .audit_events()
        .into_iter()
        .find(|e| e["auditID"] == id && e["stage"] == "ResponseComplete")
        .expect("the API server's event has the hub's Audit-ID");
    assert_eq!(api_ev["impersonatedUser"]["username"], "alice");
    assert_eq!(
        api_ev["user"]["username"],
        hawser_tests::harness::stack::AGENT_USER
    );
    let seen = s
        .api
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/namespaces/default/pods")
        .unwrap();
    assert_eq!(seen.header_values("impersonate-user"), vec!["alice"]);
    assert_eq!(seen.header_values("impersonate-group"), vec!["devs"]);
    assert_eq!(
        seen.header_values("impersonate-extra-acme.com%2fteam"),
        vec!["blue"]
    );
    assert_eq!(
        seen.header_values("authorization"),
        vec![format!(
            "Bearer {}",
            hawser_tests::harness::stack::AGENT_TOKEN
        )]
    );
    let effective: Option<UserInfo> = seen.user.clone();
    assert_eq!(effective.map(|u| u.username), Some("alice".to_string()));

    // bob: valid credential, wrong cluster: Forbidden.
    let bob = Kubectl {
        kubeconfig: kc("bob"),
        cache_dir: d.join("cache-bob"),
    };
    // bob's kubeconfig names only us2; point a copy at eu1.
    let text = std::fs::read_to_string(&bob.kubeconfig)
        .unwrap()
        .replace("/clusters/us2", &format!("/clusters/{CLUSTER}"));
    std::fs::write(&bob.kubeconfig, text).unwrap();
    let (code, _, err) = bob.run(&["get", "pods", VERBOSE]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Forbidden"), "{err}");
    // The credential stage refuses bob's genuine credential and names him in its
    // denial, so the audit record shows who was refused (as kube-apiserver does for
    // an authorization failure).
    let ev = expect_event(&hub_log, &err, 403, "bob").await;
    assert_eq!(ev["stage"], "ResponseComplete");
    let message = ev["responseStatus"]["message"].as_str().unwrap();
    assert!(message.contains("User \"bob\""), "{ev:#}");
    audit::absent(&agent_log, &err);

    // carol (revoked), dave (expired), mallory (forged): Unauthorized, as kube-apiserver says it.
    for (name, token) in [
        ("carol", None),
        ("dave", Some(expired.token.expose().to_string())),
        ("mallory", Some(forged.token.expose().to_string())),
    ] {
        let k = match token {
            None => Kubectl {
                kubeconfig: kc(name),
                cache_dir: d.join(format!("cache-{name}")),
            },
            Some(t) => Kubectl::new(&d, s.hub.front, CLUSTER, &s.hub.ca_pem(), &t),
        };
        let (code, _, err) = k.run(&["get", "pods", VERBOSE]).await;
        assert_ne!(code, 0, "{name} got through");
        assert!(
            err.contains("You must be logged in to the server"),
            "{name}: {err}"
        );
        expect_event(&hub_log, &err, 401, ANONYMOUS).await;
        audit::absent(&agent_log, &err);
    }
    let reached: Vec<_> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.header("impersonate-user").is_some_and(|u| u != "alice"))
        .collect();
    assert!(
        reached.is_empty(),
        "refused identities reached the API server: {reached:?}"
    );

    // kubectl --as: allowed by the policy for viewer/viewers, refused otherwise.
    let (code, _, err) = alice
        .run(&[
            "get",
            "pods",
            "--as",
            "viewer",
            "--as-group",
            "viewers",
            VERBOSE,
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let hub_ev = expect_event(&hub_log, &err, 200, "alice").await;
    let agent_ev = audit::complete(&agent_log, hub_ev["auditID"].as_str().unwrap()).await;
    assert_eq!(agent_ev["user"]["username"], "alice");
    assert_eq!(agent_ev["impersonatedUser"]["username"], "viewer");
    assert_eq!(agent_ev["impersonatedUser"]["groups"][0], "viewers");
    let seen = s
        .api
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/api/v1/namespaces/default/pods")
        .unwrap();
    assert_eq!(seen.header_values("impersonate-user"), vec!["viewer"]);
    assert_eq!(seen.header_values("impersonate-group"), vec!["viewers"]);
    let before = s.api.requests().len();
    let (code, _, err) = alice
        .run(&["get", "pods", "--as", "system:admin", VERBOSE])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("Forbidden"), "{err}");
    expect_event(&hub_log, &err, 403, "alice").await;
    audit::absent(&agent_log, &err);
    assert!(s.api.requests()[before..].iter().all(|r| r
        .header_values("impersonate-user")
        .iter()
        .all(|u| u != "system:admin")));

    // A compromised hub: same CA and state, no credential stage. It forwards the
    // forged credential, and the agent's own check refuses it.
    let rogue_opts = HubOpts {
        top_extra: String::new(),
        ..HubOpts::default()
    };
    let rogue = HubProc::start(&dir, &rogue_opts).await;
    let rogue_cfg = agent_config(
        &s.bundle,
        "behind-rogue",
        rogue.tunnel,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    let text = std::fs::read_to_string(&rogue_cfg).unwrap();
    std::fs::write(
        &rogue_cfg,
        format!(
            "plugins = \"{}\"\n{text}{access}{}",
            agent_chain.display(),
            audit_section(&d, "rogue-agent")
        ),
    )
    .unwrap();
    let _agent = AgentProc::start(&rogue_cfg).await;
    assert!(
        rogue
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(15))
            .await,
        "{}",
        rogue.logs.text()
    );
    std::fs::create_dir_all(d.join("rogue")).unwrap();
    let via_rogue = Kubectl::new(
        &d.join("rogue"),
        rogue.front,
        CLUSTER,
        &rogue.ca_pem(),
        forged.token.expose(),
    );
    let (code, _, err) = via_rogue.run(&["get", "pods", VERBOSE]).await;
    assert_ne!(code, 0, "the agent accepted a forged identity");
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // The rogue hub audits nothing; the agent's own record of the refusal is what remains.
    expect_event(&audit_file(&d, "rogue-agent"), &err, 401, ANONYMOUS).await;
    assert!(s.api.requests().iter().all(|r| r
        .header_values("impersonate-user")
        .iter()
        .all(|u| u != "mallory")));
}
