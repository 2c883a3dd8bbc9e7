//! The kubectl exec credential plugin across an access-token expiry, with the real
//! kubectl: a kubeconfig from `hawser credential issue --exec`, the hub minting
//! 5-second access tokens (`[credentials] refreshed_ttl`), the JWT credential stage
//! at the hub following a synced revocation file.
//!
//! One long-running client-go process (`kubectl proxy`) shows the exec cache: a token
//! is reused until its `expirationTimestamp`, then the plugin runs again and a new
//! token is minted; after the refresh credential is revoked, the hub refuses the
//! cached token (401), the next refresh is refused, and a new kubectl fails.

use hawser_tests::harness::identity::{trusted_keys, wasm};
use hawser_tests::harness::kubectl::Kubectl;
use hawser_tests::harness::procs::{HubOpts, HubProc, FAST_TUNNEL};
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use hawser_tests::harness::{eventually, hawser_cli as cli, issued_id};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const REFRESHED_TTL: Duration = Duration::from_secs(5);
/// kubectl proxy forwards paths to the server host as they are, without the
/// kubeconfig's `/clusters/<name>` prefix (unless `--append-server-path`), so
/// requests through it carry the prefix.
const PODS: &str = "/clusters/eu1/api/v1/namespaces/default/pods";

/// The hub's JWT stage: its public keys, and the revocation file synced to `synced`.
fn jwt_chain(state: &Path, synced: &Path) -> String {
    let keys = trusted_keys(state);
    format!(
        "role = \"hub\"\n[[stage]]\nname = \"jwt\"\nkind = \"credential\"\nplugin = {:?}\ninstances = \"reuse\"\n\
         [stage.grants]\nread_dirs = {{ {:?} = \"/revocations\" }}\n\
         [stage.config]\nissuer = \"hawser-hub\"\nrevocations_file = \"/revocations/revoked.toml\"\nrevocations_check_interval = \"200ms\"\n\
         [stage.config.keys]\n{keys}",
        wasm("jwt-credential"),
        synced.display().to_string()
    )
}

/// Lines of the hub log with ANSI colours removed.
fn plain_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Ids of the access tokens the refresh endpoint minted, in order.
fn minted_ids(hub: &HubProc) -> Vec<String> {
    plain_log(&hub.logs.text())
        .lines()
        .filter(|l| l.contains("access credential refreshed"))
        .filter_map(|l| {
            let id = l.split(" id=").nth(1)?;
            Some(id.split_whitespace().next()?.trim_matches('"').to_string())
        })
        .collect()
}

fn refused_refreshes(hub: &HubProc) -> usize {
    hub.logs
        .text()
        .matches("credential refresh refused")
        .count()
}

/// A GET through `kubectl proxy`: the status code and body.
async fn proxy_get(proxy: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(proxy).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, text))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .ok()
        .flatten()
        .expect("kubectl proxy did not answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_refreshes_at_expiry_and_stops_once_the_refresh_credential_is_revoked() {
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    s.api.add_pod("default", "web-0");
    let d = s.dir.path().to_path_buf();
    let cfg = s.hub.config();
    let cfg = cfg.to_str().unwrap().to_string();
    let hub_url = format!("https://127.0.0.1:{}", s.hub.front.port());

    // A refresh credential and its exec kubeconfig, straight from the CLI.
    let kubeconfig = d.join("carol.kubeconfig");
    let out = cli(&[
        "credential",
        "issue",
        "-c",
        &cfg,
        "--user",
        "carol",
        "--cluster",
        CLUSTER,
        "--ttl",
        "1h",
        "--exec",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--hub-url",
        &hub_url,
    ]);
    let refresh_id = issued_id(&out);
    // The operator's sync of public keys and revocations for the credential stage.
    let synced = d.join("synced");
    let sync = || {
        cli(&[
            "credential",
            "export-keys",
            "-c",
            &cfg,
            "--out-dir",
            synced.to_str().unwrap(),
        ])
    };
    sync();

    // Restart the hub (same ports) with 5 s access tokens and the JWT stage.
    let chain = d.join("hub-chain.toml");
    std::fs::write(&chain, jwt_chain(&s.hub.dir.join("state"), &synced)).unwrap();
    let opts = HubOpts {
        tunnel: s.hub.tunnel.to_string(),
        front: s.hub.front.to_string(),
        top_extra: format!("plugins = \"{}\"\n", chain.display()),
        front_extra: format!(
            "[credentials]\nrefreshed_ttl = \"{}s\"\n",
            REFRESHED_TTL.as_secs()
        ),
        ..HubOpts::default()
    };
    s.hub.kill().await;
    let dir = s.hub.dir.clone();
    s.hub = HubProc::start(&dir, &opts).await;
    s.add_agent(1, FAST_TUNNEL).await;
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(15))
            .await,
        "{}",
        s.hub.logs.text()
    );
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        cache_dir: d.join("kube-cache"),
    };
    let (code, out, err) = kubectl.run(&["get", "pods"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web-0"), "{out}");
    assert!(!minted_ids(&s.hub).is_empty(), "{}", s.hub.logs.text());

    // One client-go process for the rest: kubectl proxy on an ephemeral port.
    let mut proxy = kubectl.spawn(&["proxy", "--port=0", "--address=127.0.0.1"], &[]);
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("kubectl proxy did not start")
        .unwrap()
        .unwrap_or_default();
    let proxy_addr: SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl proxy output: {line:?}"));

    // First request: the plugin runs and a token is minted; an immediate second
    // request reuses it (the exec cache), minting nothing.
    let (code, body) = proxy_get(proxy_addr, PODS).await;
    assert_eq!(code, 200, "{body}");
    let first = minted_ids(&s.hub);
    let first_at = Instant::now();
    let (code, body) = proxy_get(proxy_addr, PODS).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(minted_ids(&s.hub), first, "a cached token was not reused");

    // Keep using the proxy: every request succeeds, and once the token's
    // expirationTimestamp passes kubectl runs the plugin again, once.
    let mut requests = 0;
    let renewed = loop {
        let (code, body) = proxy_get(proxy_addr, PODS).await;
        assert_eq!(code, 200, "request {requests}: {body}");
        requests += 1;
        let ids = minted_ids(&s.hub);
        if ids.len() > first.len() {
            break ids;
        }
        assert!(
            first_at.elapsed() < REFRESHED_TTL + Duration::from_secs(10),
            "kubectl never refreshed the expired token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let renewed_after = first_at.elapsed();
    assert_eq!(renewed.len(), first.len() + 1, "one refresh per expiry");
    let (old, new) = (first.last().unwrap(), renewed.last().unwrap());
    assert_ne!(old, new, "the new token has a new id");
    // Not earlier than the expiry (timestamps are whole seconds, so up to 1 s early).
    assert!(
        renewed_after + Duration::from_secs(1) >= REFRESHED_TTL,
        "refreshed after {renewed_after:?}, before the token expired"
    );
    // The old token was never refused: the refresh came from the expiry, not a 401.
    assert_eq!(refused_refreshes(&s.hub), 0);

    // Revoke the refresh credential. Once the hub has re-read its list (within
    // `reload_interval`) its refresh endpoint refuses it; then the operator syncs the
    // list to the credential stage.
    let revoked_at = Instant::now();
    cli(&["credential", "revoke", "-c", &cfg, &refresh_id]);
    let reloaded = eventually(Duration::from_secs(10), || async {
        plain_log(&s.hub.logs.text())
            .lines()
            .any(|l| l.contains("credential file reloaded") && l.contains("revoked.toml"))
            .then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "the hub did not re-read revoked.toml");
    sync();
    // The cached token (minted from it, not expired yet) is refused with a 401 ...
    let unauthorized = eventually(Duration::from_secs(10), || async {
        let (code, body) = proxy_get(proxy_addr, PODS).await;
        (code == 401).then_some(body)
    })
    .await
    .expect("the hub kept accepting a token of a revoked refresh credential");
    assert!(unauthorized.contains("Unauthorized"), "{unauthorized}");
    let first_401 = revoked_at.elapsed();
    // ... so kubectl runs the plugin again, and the hub refuses the refresh; no
    // request gets through any more.
    let refused = eventually(Duration::from_secs(10), || async {
        if refused_refreshes(&s.hub) > 0 {
            return Some(());
        }
        let (code, body) = proxy_get(proxy_addr, PODS).await;
        assert_ne!(
            code, 200,
            "a request got through after the revocation: {body}"
        );
        None
    })
    .await;
    if refused.is_none() {
        let _ = proxy.start_kill();
        let mut err = String::new();
        if let Some(mut e) = proxy.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut err)).await;
        }
        panic!(
            "no refresh was attempted after the 401\nkubectl proxy: {err}\nhub: {}",
            plain_log(&s.hub.logs.text())
                .lines()
                .filter(|l| l.contains("refresh") || l.contains("credential"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let (code, body) = proxy_get(proxy_addr, PODS).await;
    assert_ne!(
        code, 200,
        "a request got through after the revocation: {body}"
    );
    assert_eq!(
        minted_ids(&s.hub).len(),
        renewed.len(),
        "a token was minted after the hub re-read the revocation"
    );
    eprintln!(
        "exec refresh: {requests} proxied requests on one token, renewed after {renewed_after:?}; \
         first 401 {first_401:?} after the revocation, then the refresh was refused"
    );

    // A new kubectl cannot get a token at all.
    let (code, _, err) = kubectl.run(&["get", "pods"]).await;
    assert_ne!(
        code, 0,
        "kubectl succeeded with a revoked refresh credential"
    );
    assert!(
        err.contains("the hub refused the refresh credential"),
        "{err}"
    );
    let _ = proxy.kill().await;
}
