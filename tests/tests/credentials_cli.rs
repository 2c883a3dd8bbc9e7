//! `hawser credential ...` against a running hub: issue, kubeconfig, the exec
//! plugin's refresh round trip, revocation without a restart.

use hawser_tests::harness::hawser_bin;
use hawser_tests::harness::procs::{HubOpts, HubProc};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(hawser_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_exec_refresh_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&dir.path().join("hub"), &HubOpts::default()).await;
    hub.register("eu1").await;
    let cfg = hub.config();
    let cfg = cfg.to_str().unwrap();
    let hub_url = format!("https://127.0.0.1:{}", hub.front.port());

    // A plain token plus a kubeconfig with one context per cluster, private to its owner.
    let kc = dir.path().join("alice.kubeconfig");
    let (code, _, err) = run(&[
        "credential",
        "issue",
        "-c",
        cfg,
        "--user",
        "alice",
        "--group",
        "devs",
        "--cluster",
        "eu1",
        "--ttl",
        "1h",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--hub-url",
        &hub_url,
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        text.contains(&format!("{hub_url}/clusters/eu1"))
            && text.contains("certificate-authority-data"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Refused input: no cluster, a reserved group, a TTL beyond the limit.
    for bad in [
        vec!["credential", "issue", "-c", cfg, "--user", "bob"],
        vec![
            "credential",
            "issue",
            "-c",
            cfg,
            "--user",
            "bob",
            "--cluster",
            "eu1",
            "--group",
            "system:masters",
        ],
        vec![
            "credential",
            "issue",
            "-c",
            cfg,
            "--user",
            "bob",
            "--cluster",
            "eu1",
            "--ttl",
            "400h",
        ],
    ] {
        let (code, _, err) = run(&bad);
        assert_ne!(code, 0, "{bad:?} was accepted: {err}");
    }

    // Exec mode: a refresh credential; the plugin trades it for a short-lived token.
    let kc = dir.path().join("carol.kubeconfig");
    let refresh = dir.path().join("carol.refresh");
    let (code, _, err) = run(&[
        "credential",
        "issue",
        "-c",
        cfg,
        "--user",
        "carol",
        "--cluster",
        "eu1",
        "--ttl",
        "24h",
        "--exec",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--hub-url",
        &hub_url,
        "--refresh-file",
        refresh.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let id = err
        .split("issued credential ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let kubeconfig = std::fs::read_to_string(&kc).unwrap();
    assert!(
        kubeconfig.contains("client.authentication.k8s.io/v1") && kubeconfig.contains("exec"),
        "{kubeconfig}"
    );
    let ca = hub.dir.join("state/ca.crt");
    let exec = [
        "credential",
        "exec",
        "--hub",
        &hub_url,
        "--ca-file",
        ca.to_str().unwrap(),
        "--refresh-file",
        refresh.to_str().unwrap(),
    ];
    let (code, out, err) = run(&exec);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "ExecCredential");
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert!(v["status"]["token"].as_str().unwrap().split('.').count() == 3);
    assert!(v["status"]["expirationTimestamp"].as_str().is_some());

    // Revoked: the running hub refuses the refresh credential without a restart.
    let (code, _, err) = run(&["credential", "revoke", "-c", cfg, &id]);
    assert_eq!(code, 0, "{err}");
    let refused = hawser_tests::harness::eventually(Duration::from_secs(10), || async {
        let (code, _, _) = run(&exec);
        (code != 0).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "revoked refresh credential still accepted"
    );
}
