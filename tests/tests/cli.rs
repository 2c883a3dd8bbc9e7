//! The command line: help everywhere, bad use exits non-zero, bad config names
//! file, key and reason, and the cluster commands work on the hub's state.

use hawser_tests::harness::hawser_bin;
use hawser_tests::harness::procs::cluster_cmd;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(hawser_bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn hub_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        "state_dir = \"state\"\n[tunnel]\nlisten = \"127.0.0.1:0\"\nadvertise = \"hub.example.com:8443\"\n[front]\nlisten = \"127.0.0.1:0\"\nserver_names = [\"hub.example.com\"]\n",
    )
    .unwrap();
    path
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["hub", "--help"],
        vec!["agent", "--help"],
        vec!["cluster", "--help"],
        vec!["cluster", "register", "--help"],
        vec!["cluster", "list", "--help"],
        vec!["cluster", "agent-chain", "--help"],
        vec!["cluster", "remove", "--help"],
        vec!["cluster", "rotate-cert", "--help"],
        vec!["cluster", "retire-cert", "--help"],
    ] {
        let (code, text) = run(&args);
        assert_eq!(code, 0, "{args:?}: {text}");
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}

#[test]
fn bad_usage_exits_non_zero() {
    for args in [
        vec![],
        vec!["bogus"],
        vec!["hub"],
        vec!["cluster", "register"],
        vec!["cluster", "rotate-cert"],
        vec!["cluster", "retire-cert", "eu1"],
        vec!["hub", "--config"],
    ] {
        let (code, text) = run(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
    }
    let (code, text) = run(&["cluster", "list"]);
    assert_ne!(code, 0);
    assert!(text.contains("--config"), "{text}");
}

#[test]
fn bad_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, "state_dir = \"s\"\n[tunnel]\nlisten = \"nowhere\"\nadvertise = \"h:1\"\n[front]\nlisten = \"127.0.0.1:0\"\nserver_names = [\"h\"]\n").unwrap();
    let (code, text) = run(&["hub", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(path.to_str().unwrap())
            && text.contains("tunnel.listen")
            && text.contains("not an IP:port"),
        "{text}"
    );

    std::fs::write(&path, "state_dir = \"s\"\ntypo = 1\n").unwrap();
    let (code, text) = run(&["hub", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        text.contains("unknown field") && text.contains("typo"),
        "{text}"
    );

    let (code, text) = run(&["agent", "--config", "/nonexistent/agent.toml"]);
    assert_eq!(code, 1);
    assert!(text.contains("/nonexistent/agent.toml"), "{text}");
}

#[test]
fn register_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hub_config(dir.path());
    let out = dir.path().join("bundle");
    let (ok, text) = cluster_cmd(
        &cfg,
        &[
            "register",
            "eu1",
            "--region",
            "eu-west",
            "--zone",
            "eu-west-1a",
            "--user-extra-key",
            "Scopes",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    for f in [
        "agent.toml",
        "plugins-agent.toml",
        "agent.crt",
        "agent.key",
        "ca.crt",
        "manifest.yaml",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let agent = std::fs::read_to_string(out.join("agent.toml")).unwrap();
    assert!(
        agent.contains("address = \"hub.example.com:8443\"")
            && agent.contains("server_name = \"hub.example.com\""),
        "{agent}"
    );
    // The agent's chain lets the registered extra key through, lower-cased as RBAC has it.
    let chain = std::fs::read_to_string(out.join("plugins-agent.toml")).unwrap();
    assert!(
        chain.contains("cluster = \"eu1\"")
            && chain.contains("allow_extra = [\"scopes\"]")
            && chain.contains("keep_extra_keys = [\"scopes\"]"),
        "{chain}"
    );
    let manifest = std::fs::read_to_string(out.join("manifest.yaml")).unwrap();
    assert!(
        manifest.contains("replicas: 2") && manifest.contains("impersonate"),
        "{manifest}"
    );
    assert!(
        manifest.contains("\"userextras/scopes\"") && !manifest.contains("\"userextras\""),
        "{manifest}"
    );
    assert!(
        dir.path().join("state/ca.crt").exists(),
        "CA created on first use"
    );

    let (ok, text) = cluster_cmd(
        &cfg,
        &[
            "register",
            "eu1",
            "--out",
            dir.path().join("again").to_str().unwrap(),
        ],
    );
    assert!(!ok, "duplicate name must be refused: {text}");
    let (ok, text) = cluster_cmd(
        &cfg,
        &[
            "register",
            "../evil",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!ok, "{text}");

    let (ok, text) = cluster_cmd(&cfg, &["list"]);
    assert!(
        ok && text.contains("eu1")
            && text.contains("region=eu-west")
            && text.contains("certs=sha256:"),
        "{text}"
    );
    let (ok, text) = cluster_cmd(&cfg, &["remove", "eu1"]);
    assert!(ok, "{text}");
    let (ok, text) = cluster_cmd(&cfg, &["list"]);
    assert!(ok && text.contains("no clusters registered"), "{text}");
    let (ok, text) = cluster_cmd(&cfg, &["remove", "eu1"]);
    assert!(!ok, "{text}");
}

#[test]
fn without_a_credential_stage_hub_and_agent_refuse_to_start_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_config(dir.path());
    let hub_text = std::fs::read_to_string(&hub).unwrap();
    let refused = |role: &str, config: &std::path::Path, what: &str| {
        let (code, text) = run(&[role, "--config", config.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}");
        for needle in [
            config.to_str().unwrap(),
            what,
            "no verified user",
            "allow_unauthenticated = true",
        ] {
            assert!(text.contains(needle), "{role}: no {needle:?} in {text}");
        }
    };
    refused("hub", &hub, "`plugins` is not set");

    // A chain whose only stage routes: still nothing checks the caller.
    let chain = dir.path().join("routing-only.toml");
    let route = hawser::plugin::testing::plugin_path("hawser_plugin_locality_route").unwrap();
    std::fs::write(
        &chain,
        format!(
            "role = \"hub\"\n[[stage]]\nname = \"locality\"\nkind = \"routing\"\nplugin = {:?}\n\
             [stage.config]\nregion = \"eu\"\nzone = \"eu-a\"\n",
            route.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        &hub,
        format!("plugins = {:?}\n{hub_text}", chain.display().to_string()),
    )
    .unwrap();
    refused("hub", &hub, "has no credential stage");

    // An agent from a registered bundle, pointed at an explicit API server.
    std::fs::write(&hub, &hub_text).unwrap();
    let bundle = dir.path().join("bundle");
    let (ok, text) = cluster_cmd(
        &hub,
        &["register", "eu1", "--out", bundle.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    std::fs::copy(dir.path().join("state/ca.crt"), bundle.join("api-ca.crt")).unwrap();
    std::fs::write(bundle.join("token"), "t0ken\n").unwrap();
    let generated = std::fs::read_to_string(bundle.join("agent.toml")).unwrap();
    let agent = bundle.join("agent.toml");
    let explicit = generated
        .lines()
        .map(|l| match l.trim_start() {
            l if l.starts_with("in_cluster") => {
                "server = \"https://127.0.0.1:1\"\nca_file = \"api-ca.crt\"\ntoken_file = \"token\""
                    .to_string()
            }
            l if l.starts_with("listen") => "listen = \"127.0.0.1:0\"".to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&agent, &explicit).unwrap();
    // Its chain names the plugin files the pod mounts; without them it refuses to start.
    let (code, text) = run(&["agent", "--config", agent.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let missing = "plugins-agent.toml: stage[0] (\"credential\").plugin: \
                   /opt/hawser/plugins/hawser_plugin_jwt_credential.wasm does not exist";
    assert!(text.contains(missing), "{text}");
    let unchained: Vec<&str> = explicit
        .lines()
        .filter(|l| !l.starts_with("plugins"))
        .collect();
    std::fs::write(&agent, unchained.join("\n")).unwrap();
    refused("agent", &agent, "`plugins` is not set");
}

#[tokio::test]
async fn a_bundles_agent_chain_accepts_hub_credentials_for_its_cluster_only() {
    use hawser::credential::{self, IssueRequest};
    use hawser::plugin::testing::{plugin_dir, request};
    use hawser::plugin::{PluginHost, Rejection, Role};

    let dir = tempfile::tempdir().unwrap();
    let hub = hub_config(dir.path());
    let bundle = dir.path().join("bundle");
    let (ok, text) = cluster_cmd(
        &hub,
        &[
            "register",
            "eu1",
            "--user-extra-key",
            "scopes",
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("create configmap hawser-agent-plugins"),
        "{text}"
    );
    // The chain as the pod sees it, with the plugin files where this build put them.
    let chain = std::fs::read_to_string(bundle.join("plugins-agent.toml"))
        .unwrap()
        .replace("/opt/hawser/plugins", &plugin_dir().display().to_string());
    let file = dir.path().join("chain.toml");
    std::fs::write(&file, chain).unwrap();
    let host = PluginHost::load(&file, Role::Agent).await.unwrap();
    let chain = host.chain();

    let state = dir.path().join("state");
    let token = |cluster: &str| {
        let req = IssueRequest {
            user: "alice".into(),
            groups: vec!["devs".into()],
            extra: vec![
                ("scopes".into(), "read".into()),
                ("acme.com/team".into(), "a".into()),
            ],
            clusters: vec![cluster.into()],
            ttl: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let issued = credential::issue(&state, "hawser-hub", &req).unwrap();
        format!("Bearer {}", issued.token.expose())
    };
    let with = |auth: &str| {
        request(
            "/api/v1/namespaces/default/pods",
            &[("authorization", auth)],
        )
    };

    let mine = with(&token("eu1"));
    let who = chain.check_credential(&mine).await.unwrap().unwrap();
    assert_eq!(
        (who.user.as_str(), who.groups.as_slice()),
        ("alice", &["devs".to_string()][..])
    );
    let sent = chain.impersonate(&who, &mine).await.unwrap().unwrap_or(who);
    assert_eq!(sent.user, "alice");
    assert_eq!(sent.groups, ["devs"]);
    // Only the registered extra key is passed on (the ClusterRole allows no other);
    // the other is left out rather than failing the request.
    assert_eq!(sent.extra("scopes").unwrap(), ["read"]);
    assert!(sent.extra("acme.com/team").is_none(), "{sent:?}");

    // A credential for another cluster is forbidden here; none at all is a 401.
    for (req, status) in [
        (with(&token("eu2")), 403),
        (request("/api/v1/namespaces/default/pods", &[]), 401),
    ] {
        match chain.check_credential(&req).await {
            Err(r @ Rejection::Denied { .. }) => assert_eq!(r.http_status(), status),
            other => panic!("expected a {status}, got {other:?}"),
        }
    }
}

#[test]
fn agent_chain_follows_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_config(dir.path());
    let bundle = dir.path().join("bundle");
    let (ok, text) = cluster_cmd(
        &hub,
        &["register", "eu1", "--out", bundle.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    let kids = |chain: &str| {
        let t: toml::Table = toml::from_str(chain).unwrap();
        let keys = t["stage"][0]["config"]["keys"].as_table().unwrap().clone();
        keys.keys().cloned().collect::<Vec<_>>()
    };
    let chain = |args: &[&str]| {
        let out = Command::new(hawser_bin())
            .args(["cluster", "agent-chain"])
            .args(args)
            .arg("--config")
            .arg(&hub)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };

    // Without a rotation it is the bundle's chain.
    let bundled = std::fs::read_to_string(bundle.join("plugins-agent.toml")).unwrap();
    assert_eq!(chain(&["eu1"]), bundled);
    assert_eq!(kids(&bundled).len(), 1);

    // After a rotation both keys verify until the old one retires.
    let (code, text) = run(&[
        "credential",
        "rotate-key",
        "-c",
        hub.to_str().unwrap(),
        "--overlap",
        "1h",
    ]);
    assert_eq!(code, 0, "{text}");
    let rotated = chain(&["eu1"]);
    assert_eq!(kids(&rotated).len(), 2, "{rotated}");
    // The old key verifies only until the hub retires it.
    let t: toml::Table = toml::from_str(&rotated).unwrap();
    let old = &t["stage"][0]["config"]["keys"][&kids(&bundled)[0]];
    assert!(old["retire_after"].as_str().is_some(), "{rotated}");

    // As a merge patch for the agent's Secret.
    let patch: serde_yaml::Value = serde_yaml::from_str(&chain(&["eu1", "--patch"])).unwrap();
    assert_eq!(
        patch["stringData"]["plugins-agent.toml"].as_str(),
        Some(rotated.as_str())
    );

    let (ok, text) = cluster_cmd(&hub, &["agent-chain", "eu2"]);
    assert!(
        !ok && text.contains("cluster \"eu2\" is not registered"),
        "{text}"
    );
}

/// `rotate-key --prepare` publishes the next key before it signs: an agent given the
/// chain in between accepts the first credential signed after the rotation, where the
/// chain of registration time refuses it (the gap a one-step rotation leaves).
/// A hub config in `dir` with cluster `eu1` registered; returns it and the bundle.
fn hub_with_eu1(dir: &Path) -> (PathBuf, PathBuf) {
    let hub = hub_config(dir);
    let bundle = dir.join("bundle");
    let (ok, text) = cluster_cmd(
        &hub,
        &["register", "eu1", "--out", bundle.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    (hub, bundle)
}

/// What `hawser cluster agent-chain eu1` prints now.
fn agent_chain(hub: &Path) -> String {
    let out = Command::new(hawser_bin())
        .args(["cluster", "agent-chain", "eu1", "--config"])
        .arg(hub)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_prepared_key_lets_agents_accept_credentials_signed_after_the_rotation() {
    use hawser::credential::{self, IssueRequest};
    use hawser::plugin::testing::{plugin_dir, request};
    use hawser::plugin::{PluginHost, Rejection, Role};

    let dir = tempfile::tempdir().unwrap();
    let (hub, bundle) = hub_with_eu1(dir.path());
    let hub_arg = hub.to_str().unwrap();
    let bundled = std::fs::read_to_string(bundle.join("plugins-agent.toml")).unwrap();

    let (code, text) = run(&["credential", "rotate-key", "-c", hub_arg, "--prepare"]);
    assert!(
        code == 0 && text.contains(" prepared: it verifies now"),
        "{text}"
    );
    // Preparing again keeps that key.
    let kid = text.split_whitespace().nth(2).unwrap().to_string();
    let (code, again) = run(&["credential", "rotate-key", "-c", hub_arg, "--prepare"]);
    assert!(
        code == 0 && again.contains(&format!("issuer key {kid} already prepared")),
        "{again}"
    );
    let prepared = agent_chain(&hub);
    let (code, text) = run(&["credential", "rotate-key", "-c", hub_arg]);
    assert!(
        code == 0 && text.contains("the prepared issuer key"),
        "{text}"
    );
    // `--prepare` and `--overlap` do not go together.
    let (code, _) = run(&[
        "credential",
        "rotate-key",
        "-c",
        hub_arg,
        "--prepare",
        "--overlap",
        "1h",
    ]);
    assert_ne!(code, 0);

    let req = IssueRequest {
        user: "alice".into(),
        clusters: vec!["eu1".into()],
        ttl: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let issued = credential::issue(&dir.path().join("state"), "hawser-hub", &req).unwrap();
    let auth = format!("Bearer {}", issued.token.expose());
    let req = request("/api/v1/pods", &[("authorization", auth.as_str())]);

    for (name, chain, accepted) in [("prepared", &prepared, true), ("bundled", &bundled, false)] {
        let file = dir.path().join(format!("{name}.toml"));
        let text = chain.replace("/opt/hawser/plugins", &plugin_dir().display().to_string());
        std::fs::write(&file, text).unwrap();
        let host = PluginHost::load(&file, Role::Agent).await.unwrap();
        match host.chain().check_credential(&req).await {
            Ok(Some(who)) if accepted => assert_eq!(who.user, "alice"),
            Err(r @ Rejection::Denied { .. }) if !accepted => assert_eq!(r.http_status(), 401),
            other => panic!("{name} chain: {other:?}"),
        }
    }
}

#[test]
fn a_prepared_key_can_be_withdrawn_unused() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = hub_with_eu1(dir.path());
    let hub_arg = hub.to_str().unwrap();
    let agent_chain = || agent_chain(&hub);

    let (code, text) = run(&["credential", "rotate-key", "-c", hub_arg, "--prepare"]);
    assert_eq!(code, 0, "{text}");
    let kid = text.split_whitespace().nth(2).unwrap().to_string();
    assert!(agent_chain().contains(&kid));

    let (code, text) = run(&["credential", "rotate-key", "-c", hub_arg, "--withdraw"]);
    assert!(
        code == 0 && text.contains(&format!("prepared issuer key {kid} withdrawn")),
        "{text}"
    );
    assert!(!agent_chain().contains(&kid));
    let (code, text) = run(&["credential", "rotate-key", "-c", hub_arg, "--withdraw"]);
    assert!(
        code == 0 && text.contains("no issuer key is prepared"),
        "{text}"
    );
    // `--withdraw` goes with neither `--prepare` nor `--overlap`.
    for other in [&["--prepare"][..], &["--overlap", "1h"]] {
        let mut args = vec!["credential", "rotate-key", "-c", hub_arg, "--withdraw"];
        args.extend_from_slice(other);
        assert_ne!(run(&args).0, 0, "{other:?}");
    }
    // The next rotation makes a new key; the withdrawn one never signs.
    let (code, text) = run(&["credential", "rotate-key", "-c", hub_arg]);
    assert!(code == 0 && text.contains("new issuer key"), "{text}");
    assert!(!text.contains(&kid), "{text}");
}
