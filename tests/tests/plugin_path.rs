//! The plugin chain on the real request path: hub and agent processes load chains
//! of freshly built WebAssembly stages and run them on every request.

use hawser_tests::apiserver::Rule;
use hawser_tests::harness::client::{front_client, get, plain_request};
use hawser_tests::harness::eventually;
use hawser_tests::harness::identity::wasm;
use hawser_tests::harness::procs::{agent_config, AgentProc, HubOpts, FAST_TUNNEL};
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKENS: &str = r#"
[stage.config]
header = "authorization"
[stage.config.tokens.alice-token]
user = "alice"
groups = ["devs", "a, b"]
"#;

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// Starts an agent whose config names `chain`.
async fn agent_with_chain(s: &mut Stack, chain: &Path) {
    let cfg = agent_config(
        &s.bundle,
        "with-plugins",
        s.hub.tunnel,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("plugins = \"{}\"\n{text}", chain.display())).unwrap();
    s.agents.push(AgentProc::start(&cfg).await);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(10))
            .await,
        "{}",
        s.agents[0].logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_impersonation_stages_run_at_hub_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let hub_chain = write(
        &dir.path().join("hub-chain.toml"),
        &format!("role = \"hub\"\n[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{}\"\n{TOKENS}", wasm("header-credential")),
    );
    let agent_chain = write(
        &dir.path().join("agent-chain.toml"),
        &format!(
            "role = \"agent\"\n[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{}\"\n{TOKENS}\n[[stage]]\nname = \"impersonate\"\nkind = \"impersonation\"\nplugin = \"{}\"\n[stage.policy]\nallow_users = [\"*\"]\nallow_groups = [\"*\"]\nallow_extra = [\"*\"]\n[stage.config]\nkeep_groups = true\nextra = {{ \"acme.com/project\" = [\"p1\"] }}\n",
            wasm("header-credential"),
            wasm("impersonate")
        ),
    );
    let mut api = double_config();
    api.rules.push(Rule::allow_all("user:alice"));
    let opts = HubOpts {
        top_extra: format!("plugins = \"{}\"\n", hub_chain.display()),
        ..HubOpts::default()
    };
    let mut s = Stack::start(api, opts, 0, 1).await;
    agent_with_chain(&mut s, &agent_chain).await;
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");

    // No credential: the hub's credential stage refuses; nothing is forwarded.
    let r = get(&client, s.hub.front, &pods, &[]).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["kind"], "Status");
    let r = get(
        &client,
        s.hub.front,
        &pods,
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        s.api.requests().iter().all(|r| !r.path.contains("/pods")),
        "a refused request reached the API server"
    );
    // Which clusters are registered is not told to callers without a credential.
    let unknown = "/clusters/nowhere/api/v1/namespaces/default/pods";
    let r = get(&client, s.hub.front, unknown, &[]).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let r = get(
        &client,
        s.hub.front,
        unknown,
        &[("authorization", "Bearer alice-token")],
    )
    .await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["reason"], "NotFound");

    // A valid credential: checked at the hub, again at the agent, impersonated there.
    let r = get(
        &client,
        s.hub.front,
        &pods,
        &[("authorization", "Bearer alice-token")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = s
        .api
        .wait_for_request(|r| r.path.ends_with("/pods"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(seen.header_values("impersonate-user"), vec!["alice"]);
    assert_eq!(
        seen.header_values("impersonate-group"),
        vec!["devs", "a, b"],
        "one line per group"
    );
    assert_eq!(
        seen.header_values("impersonate-extra-acme.com%2fproject"),
        vec!["p1"]
    );
    assert_eq!(
        seen.header_values("authorization"),
        vec!["Bearer agent-sa-token"]
    );
    assert_eq!(
        seen.user.as_ref().map(|u| u.username.as_str()),
        Some("alice"),
        "the API server acted as alice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_in_a_plugin_declared_header_never_reaches_the_api_server() {
    // The token travels in a header of the operator's choosing; the credential plugin
    // declares it, so the hub passes it to the agent (which checks it again) and the
    // agent keeps it from the API server, as it does `authorization`.
    let tokens = TOKENS.replace("header = \"authorization\"", "header = \"x-acme-token\"");
    let stage = format!(
        "[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{}\"\n{tokens}",
        wasm("header-credential")
    );
    let dir = tempfile::tempdir().unwrap();
    let hub_chain = write(
        &dir.path().join("hub.toml"),
        &format!("role = \"hub\"\n{stage}"),
    );
    let agent_chain = write(
        &dir.path().join("agent.toml"),
        &format!("role = \"agent\"\n{stage}"),
    );
    let mut api = double_config();
    api.rules.push(Rule::allow_all("user:alice"));
    let opts = HubOpts {
        top_extra: format!("plugins = \"{}\"\n", hub_chain.display()),
        ..HubOpts::default()
    };
    let mut s = Stack::start(api, opts, 0, 1).await;
    agent_with_chain(&mut s, &agent_chain).await;
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");
    let r = get(
        &client,
        s.hub.front,
        &pods,
        &[("x-acme-token", "alice-token")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = s
        .api
        .wait_for_request(|r| r.path.ends_with("/pods"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        seen.header("x-acme-token"),
        None,
        "the credential was forwarded"
    );
    assert_eq!(seen.header_values("impersonate-user"), vec!["alice"]);
    assert_eq!(
        seen.user.as_ref().map(|u| u.username.as_str()),
        Some("alice")
    );
    let status = hawser_tests::harness::client::plain_get(s.hub.admin, "/plugins/status")
        .await
        .expect("status");
    assert!(status.contains("\"credential_headers\""), "{status}");
    assert!(status.contains("x-acme-token"), "{status}");
}

fn misbehave_chain(dir: &Path, version: &str) -> PathBuf {
    write(
        &dir.join("hub-chain.toml"),
        &format!(
            "role = \"hub\"\n[[stage]]\nname = \"fixture-credential\"\nkind = \"credential\"\nplugin = \"{0}\"\n[stage.config]\nversion = \"{version}\"\n[[stage]]\nname = \"fixture-route\"\nkind = \"routing\"\nplugin = \"{0}\"\n[stage.policy]\nallow_headers = [\"x-hawser-version\"]\n[stage.config]\nversion = \"{version}\"\n",
            wasm("misbehave")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_stage_fails_that_request_closed_and_the_next_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let chain = misbehave_chain(dir.path(), "a");
    let opts = HubOpts {
        top_extra: format!("plugins = \"{}\"\n", chain.display()),
        ..HubOpts::default()
    };
    let s = Stack::start(double_config(), opts, 1, 1).await;
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");
    let r = get(&client, s.hub.front, &pods, &[("x-misbehave", "trap")]).await;
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["reason"], "InternalError");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("fixture-credential"),
        "{v}"
    );
    let r = get(&client, s.hub.front, &pods, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The routing stage's header reached the API server.
    let seen = s
        .api
        .wait_for_request(|r| r.path.ends_with("/pods"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(seen.header("x-hawser-version").as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_through_the_admin_endpoint_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let chain = misbehave_chain(dir.path(), "a");
    let opts = HubOpts {
        top_extra: format!("plugins = \"{}\"\n", chain.display()),
        ..HubOpts::default()
    };
    let s = Stack::start(double_config(), opts, 1, 2).await;
    let (front, ca, pods) = (
        s.hub.front,
        s.hub.ca_pem(),
        s.path("/api/v1/namespaces/default/pods"),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, ca, pods) = (stop.clone(), ca.clone(), pods.clone());
        load.spawn(async move {
            let client = front_client(&ca);
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && codes.len() < 2000 {
                codes.push(get(&client, front, &pods, &[]).await.status.as_u16());
            }
            codes
        });
    }
    s.api
        .wait_for_request(
            |r| r.header("x-hawser-version").as_deref() == Some("a"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // A watch held open across the swap, on its own client connection, and the
    // tunnels as they were before it.
    let watcher = front_client(&ca);
    let req = http::Request::get(format!(
        "https://127.0.0.1:{}{}",
        front.port(),
        s.path("/api/v1/namespaces/default/pods?watch=1")
    ))
    .body(http_body_util::Full::new(bytes::Bytes::new()))
    .unwrap();
    let watch = watcher.request(req).await.unwrap();
    assert_eq!(watch.status(), 200);
    let mut watch = watch.into_body();
    let tunnel_ids = |tunnels: Vec<serde_json::Value>| -> Vec<u64> {
        tunnels.iter().filter_map(|t| t["id"].as_u64()).collect()
    };
    let tunnels_before = tunnel_ids(s.hub.tunnels().await);
    assert_eq!(tunnels_before.len(), 2);
    misbehave_chain(dir.path(), "b");
    let reply = plain_request(s.hub.admin, "POST", "/plugins/reload")
        .await
        .expect("reload accepted");
    assert!(reply.contains("swapped"), "{reply}");
    s.api
        .wait_for_request(
            |r| r.header("x-hawser-version").as_deref() == Some("b"),
            Duration::from_secs(10),
        )
        .await
        .expect("new chain serves");
    // Tunnels and client connections are untouched: the same tunnels, and the watch
    // opened on the old chain still delivers on its connection.
    assert_eq!(tunnel_ids(s.hub.tunnels().await), tunnels_before);
    s.api.emit_watch_event("ADDED", "default", "after-swap");
    tokio::time::timeout(Duration::from_secs(10), async {
        use http_body_util::BodyExt;
        loop {
            let frame = watch.frame().await.expect("watch open").expect("no error");
            if let Ok(data) = frame.into_data() {
                if String::from_utf8_lossy(&data).contains("after-swap") {
                    return;
                }
            }
        }
    })
    .await
    .expect("the watch opened before the swap delivers after it");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    while let Some(codes) = load.join_next().await {
        let codes = codes.unwrap();
        total += codes.len();
        assert!(
            codes.iter().all(|c| *c == 200),
            "a request failed during the swap: {codes:?}"
        );
    }
    assert!(total > 0);
    let status = hawser_tests::harness::client::plain_get(s.hub.admin, "/plugins/status")
        .await
        .unwrap();
    assert!(status.contains("\"generation\""), "{status}");
    // Requests after the swap carry only the new version; none mixed versions (the
    // fixture denies a request whose stages disagree, which would have failed above).
    let versions: std::collections::HashSet<String> = s
        .api
        .requests()
        .iter()
        .filter_map(|r| r.header("x-hawser-version"))
        .collect();
    assert_eq!(
        versions,
        ["a".to_string(), "b".to_string()].into_iter().collect()
    );
}

/// A hub chain with only a routing stage: nothing verifies the caller.
fn routing_only_chain(dir: &Path) -> PathBuf {
    write(
        &dir.join("hub-chain.toml"),
        &format!(
            "role = \"hub\"\n[[stage]]\nname = \"locality\"\nkind = \"routing\"\nplugin = \"{}\"\n\
             [stage.config]\nregion = \"eu\"\nzone = \"eu-a\"\n",
            wasm("locality-route")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_the_credential_stage_is_refused_and_the_old_chain_serves() {
    let dir = tempfile::tempdir().unwrap();
    let chain = write(
        &dir.path().join("hub-chain.toml"),
        &format!(
            "role = \"hub\"\n[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{}\"\n{TOKENS}",
            wasm("header-credential")
        ),
    );
    let opts = HubOpts {
        top_extra: format!("plugins = \"{}\"\n", chain.display()),
        allow_unauthenticated: false,
        ..HubOpts::default()
    };
    let s = Stack::start(double_config(), opts, 1, 1).await;
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");
    let alice = [("authorization", "Bearer alice-token")];
    assert_eq!(get(&client, s.hub.front, &pods, &alice).await.status, 200);

    // The file watcher tries the routing-only chain: nothing in it would verify
    // callers, so the reload fails and says why...
    routing_only_chain(dir.path());
    let status = eventually(Duration::from_secs(60), || async {
        let status = plain_request(s.hub.admin, "GET", "/plugins/status").await?;
        status.contains("no credential stage").then_some(status)
    })
    .await
    .expect("the reload is refused");
    assert!(status.contains("\"last_result\":\"failed\""), "{status}");
    // ...and the old chain keeps serving: alice passes, a caller without a token gets
    // kube-apiserver's 401 when the credential stage abstains.
    assert_eq!(get(&client, s.hub.front, &pods, &alice).await.status, 200);
    let r = get(&client, s.hub.front, &pods, &[]).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        hawser::credential::UNAUTHORIZED_BODY
    );
    assert!(
        s.hub
            .logs
            .text()
            .lines()
            .all(|l| !l.contains("allow_unauthenticated:")),
        "no start-up warning without the opt-in"
    );
}
