//! Agent certificate rotation: `cluster rotate-cert` admits a new certificate next
//! to the old one, the agent picks the new files up (swapped like a Secret volume),
//! opens a new tunnel and drains the old one without cutting what runs on it, and
//! `cluster retire-cert` then refuses the old certificate and cuts only its tunnels.

use bytes::Bytes;
use hawser::pki::{fingerprint_of_der, first_cert_der_from_pem};
use hawser_tests::harness::client::{front_client, get, FrontClient};
use hawser_tests::harness::eventually;
use hawser_tests::harness::procs::{agent_config, AgentProc, HubOpts, FAST_TUNNEL};
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fast tunnel timings plus a quick certificate poll and a drain longer than the test.
fn rotation_tunnel() -> String {
    format!("{FAST_TUNNEL}cert_reload_interval = \"100ms\"\ndrain_timeout = \"60s\"\n")
}

fn fingerprint(cert_pem: &str) -> String {
    fingerprint_of_der(&first_cert_der_from_pem(cert_pem).unwrap()).to_string()
}

/// Lays out `dir` like a Kubernetes Secret volume: `..<version>/` holds the files,
/// `..data` points at it, and `agent.crt`/`agent.key` point into `..data`. A new
/// version is swapped in atomically by renaming a fresh `..data` link over the old.
fn secret_volume(dir: &Path, version: &str, cert_pem: &str, key_pem: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("agent.crt"), cert_pem).unwrap();
    std::fs::write(versioned.join("agent.key"), key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["agent.crt", "agent.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

/// Starts an agent whose certificate and key come from a Secret-like volume in its
/// own directory; returns it and that directory.
async fn agent_on_volume(
    s: &Stack,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
) -> (AgentProc, PathBuf) {
    let cfg = agent_config(
        &s.bundle,
        name,
        s.hub.tunnel,
        &s.api_target(),
        1,
        &rotation_tunnel(),
    );
    let dir = cfg.parent().unwrap().to_path_buf();
    secret_volume(&dir, "v1", cert_pem, key_pem);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"../agent.crt\"", "\"agent.crt\"")
        .replace("\"../agent.key\"", "\"agent.key\"");
    std::fs::write(&cfg, text).unwrap();
    (AgentProc::start(&cfg).await, dir)
}

/// Runs `cluster rotate-cert` and returns the new (cert, key) PEMs.
fn rotate(s: &Stack, out: &str) -> (String, String) {
    let dir = s.dir.path().join(out);
    let (ok, text) = s
        .hub
        .cluster_cmd(&["rotate-cert", CLUSTER, "--out", dir.to_str().unwrap()]);
    assert!(ok, "rotate-cert failed: {text}");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("agent.crt"), read("agent.key"))
}

/// Tunnels of the cluster as (fingerprint, draining).
async fn tunnels(s: &Stack) -> Vec<(String, bool)> {
    s.hub
        .tunnels()
        .await
        .iter()
        .filter(|t| t["cluster"] == CLUSTER)
        .map(|t| {
            (
                t["fingerprint"].as_str().unwrap_or_default().to_string(),
                t["draining"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// A watch read in the background: its text so far and, once over, how it ended.
struct Watch {
    text: Arc<Mutex<String>>,
    ended: tokio::task::JoinHandle<Result<(), String>>,
}

async fn open_watch(client: &FrontClient, s: &Stack, timeout_seconds: u64) -> Watch {
    let req = http::Request::get(format!(
        "https://127.0.0.1:{}{}",
        s.hub.front.port(),
        s.path(&format!(
            "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds={timeout_seconds}"
        ))
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let resp = client.request(req).await.expect("watch request");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let ended = tokio::spawn(async move {
        loop {
            match body.frame().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        sink.lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
    });
    Watch { text, ended }
}

impl Watch {
    async fn wait_for(&self, needle: &str) -> bool {
        eventually(Duration::from_secs(5), || async {
            self.text.lock().unwrap().contains(needle).then_some(())
        })
        .await
        .is_some()
    }
}

/// GETs in a loop until stopped; counts successes and records every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

fn start_load(client: FrontClient, s: &Stack) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let url = format!(
        "https://127.0.0.1:{}{}",
        s.hub.front.port(),
        s.path("/api/v1/namespaces/default/pods")
    );
    let (stop2, ok2) = (stop.clone(), ok.clone());
    let task = tokio::spawn(async move {
        let mut failures = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let req = http::Request::get(&url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let outcome =
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Err(_) => Err("timed out".to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        match resp.into_body().collect().await {
                            Ok(_) if status == 200 => Ok(()),
                            Ok(b) => Err(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&b.to_bytes())
                            )),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                };
            match outcome {
                Ok(()) => {
                    ok2.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failures.push(e),
            }
        }
        failures
    });
    Load { stop, ok, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_watch_and_every_request_then_retire_refuses_the_old_cert() {
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let old_cert = std::fs::read_to_string(s.bundle.join("agent.crt")).unwrap();
    let old_key = std::fs::read_to_string(s.bundle.join("agent.key")).unwrap();
    let old_fp = fingerprint(&old_cert);
    let (agent, volume) = agent_on_volume(&s, "replica-0", &old_cert, &old_key).await;
    s.agents.push(agent);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(15))
            .await,
        "agent did not connect: {}",
        s.hub.logs.text()
    );
    assert_eq!(tunnels(&s).await, [(old_fp.clone(), false)]);

    // A watch that outlives the rotation and then ends on its own (timeoutSeconds).
    let client = front_client(&s.hub.ca_pem());
    let watch = open_watch(&client, &s, 10).await;
    let watch_opened = Instant::now();
    s.api
        .emit_watch_event("ADDED", "default", "before-rotation");
    assert!(
        watch.wait_for("before-rotation").await,
        "watch delivers nothing"
    );
    let load = start_load(client.clone(), &s);

    // Step 1: a new certificate, admitted alongside the old one.
    let (new_cert, new_key) = rotate(&s, "rotated");
    let new_fp = fingerprint(&new_cert);
    let (ok, list) = s.hub.cluster_cmd(&["list"]);
    assert!(
        ok && list.contains(&old_fp) && list.contains(&new_fp),
        "{list}"
    );

    // The kubelet swaps the Secret volume.
    let swapped = Instant::now();
    secret_volume(&volume, "v2", &new_cert, &new_key);
    let switched = eventually(Duration::from_secs(10), || async {
        let t = tunnels(&s).await;
        t.iter()
            .any(|(fp, draining)| *fp == new_fp && !draining)
            .then_some(())
    })
    .await;
    assert!(
        switched.is_some(),
        "no tunnel with the new certificate: {:?}\n{}",
        tunnels(&s).await,
        s.agents[0].logs.text()
    );
    let switch_took = swapped.elapsed();
    // The old tunnel is out of rotation but still up: the watch runs on it.
    let draining = eventually(Duration::from_secs(5), || async {
        tunnels(&s)
            .await
            .contains(&(old_fp.clone(), true))
            .then_some(())
    })
    .await;
    assert!(
        draining.is_some(),
        "old tunnel not draining: {:?}",
        tunnels(&s).await
    );
    assert!(
        watch_opened.elapsed() < Duration::from_secs(8),
        "rotation took too long to overlap the watch"
    );

    // The watch, on the drained tunnel, still delivers, then ends cleanly.
    s.api.emit_watch_event("ADDED", "default", "after-rotation");
    assert!(
        watch.wait_for("after-rotation").await,
        "watch stopped delivering after the rotation: {}",
        watch.text.lock().unwrap()
    );
    let ended = tokio::time::timeout(Duration::from_secs(15), watch.ended)
        .await
        .expect("watch never ended")
        .unwrap();
    assert_eq!(ended, Ok(()), "watch did not end cleanly");
    // With its last stream done, the old tunnel closes long before the drain timeout.
    assert!(
        s.hub.wait_tunnels(CLUSTER, 1, Duration::from_secs(5)).await,
        "{:?}",
        tunnels(&s).await
    );
    assert_eq!(tunnels(&s).await, [(new_fp.clone(), false)]);
    assert!(
        s.agents[0]
            .logs
            .wait_for("old tunnel closed after rotation", Duration::from_secs(5))
            .await,
        "{}",
        s.agents[0].logs.text()
    );
    assert!(
        s.agents[0].logs.text().contains("reason=drained"),
        "{}",
        s.agents[0].logs.text()
    );

    load.stop.store(true, Ordering::Relaxed);
    let failures = load.task.await.unwrap();
    let served = load.ok.load(Ordering::Relaxed);
    eprintln!(
        "switch to the new certificate took {switch_took:?}; {served} requests during the rotation, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    assert!(served >= 10, "too few requests to show anything: {served}");

    // Step 2: retire the old certificate. The new tunnel stays; the old one is refused.
    let (ok, text) = s
        .hub
        .cluster_cmd(&["retire-cert", CLUSTER, "--fingerprint", &old_fp]);
    assert!(ok, "{text}");
    let (ok, list) = s.hub.cluster_cmd(&["list"]);
    assert!(
        ok && !list.contains(&old_fp) && list.contains(&new_fp),
        "{list}"
    );
    s.hub
        .logs
        .wait_for("registry reloaded", Duration::from_secs(5))
        .await;
    let refused = old_cert_is_refused(&s, &old_cert, &old_key).await;
    assert!(refused, "the old certificate still opens a tunnel");
    assert_eq!(tunnels(&s).await, [(new_fp, false)]);
    assert_eq!(
        get(
            &client,
            s.hub.front,
            &s.path("/api/v1/namespaces/default/pods"),
            &[]
        )
        .await
        .status,
        200
    );
}

/// Presents `cert` to the tunnel listener the way an agent does: the hub must
/// end the TLS handshake with an alert (TLS 1.3 checks the client certificate
/// after the client has finished, so the refusal arrives on the first read).
async fn old_cert_is_refused(s: &Stack, cert_pem: &str, key_pem: &str) -> bool {
    use tokio::io::AsyncReadExt;
    let refused = eventually(Duration::from_secs(5), || async {
        let cfg = hawser::tls::agent_tunnel_client(&s.hub.ca_pem(), cert_pem, key_pem).unwrap();
        let tcp = tokio::net::TcpStream::connect(s.hub.tunnel).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let outcome = match tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
        {
            Err(e) => Some(e.to_string()),
            Ok(mut tls) => {
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await {
                    Ok(Err(e)) => Some(e.to_string()),
                    // Bytes (the hub's HTTP/2 preface) mean the hub took it.
                    _ => None,
                }
            }
        };
        outcome.filter(|e| e.contains("certificate") || e.contains("alert"))
    })
    .await;
    match refused {
        Some(reason) => {
            eprintln!("old certificate refused: {reason}");
            s.hub
                .logs
                .wait_for("not registered", Duration::from_secs(5))
                .await
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_the_old_certificate_cuts_only_the_tunnels_that_use_it() {
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let old_cert = std::fs::read_to_string(s.bundle.join("agent.crt")).unwrap();
    let old_key = std::fs::read_to_string(s.bundle.join("agent.key")).unwrap();
    let (new_cert, new_key) = rotate(&s, "rotated");
    let (old_fp, new_fp) = (fingerprint(&old_cert), fingerprint(&new_cert));
    // Mid-rollout: one replica still on the old certificate, one on the new.
    let (a, _) = agent_on_volume(&s, "old", &old_cert, &old_key).await;
    let (b, _) = agent_on_volume(&s, "new", &new_cert, &new_key).await;
    s.agents.extend([a, b]);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 2, Duration::from_secs(15))
            .await,
        "{}",
        s.hub.logs.text()
    );
    let mut both = tunnels(&s).await;
    both.sort();
    let mut want = vec![(old_fp.clone(), false), (new_fp.clone(), false)];
    want.sort();
    assert_eq!(both, want);
    let new_id = s
        .hub
        .tunnels()
        .await
        .iter()
        .find(|t| t["fingerprint"] == new_fp.as_str())
        .map(|t| t["id"].clone())
        .unwrap();

    let (ok, text) = s
        .hub
        .cluster_cmd(&["retire-cert", CLUSTER, "--fingerprint", &old_fp]);
    assert!(ok, "{text}");
    let retired = Instant::now();
    assert!(
        s.hub.wait_tunnels(CLUSTER, 1, Duration::from_secs(2)).await,
        "old tunnel not cut: {:?}",
        tunnels(&s).await
    );
    eprintln!("old tunnel cut {:?} after retire-cert", retired.elapsed());
    let left = s.hub.tunnels().await;
    assert_eq!(left[0]["fingerprint"], new_fp.as_str());
    assert_eq!(left[0]["id"], new_id, "the new tunnel must not be touched");
    // The old replica keeps trying and is refused at the handshake.
    assert!(
        s.hub
            .logs
            .wait_for("not registered", Duration::from_secs(5))
            .await,
        "{}",
        s.hub.logs.text()
    );

    // Bad use: the last certificate, an unknown one, a malformed one.
    for (args, why) in [
        (
            vec!["retire-cert", CLUSTER, "--fingerprint", new_fp.as_str()],
            "only certificate",
        ),
        (
            vec!["retire-cert", CLUSTER, "--fingerprint", old_fp.as_str()],
            "has no certificate",
        ),
        (
            vec!["retire-cert", CLUSTER, "--fingerprint", "sha256:zz"],
            "invalid fingerprint",
        ),
        (
            vec!["retire-cert", "nope", "--fingerprint", new_fp.as_str()],
            "not registered",
        ),
        (
            vec!["rotate-cert", "nope", "--out", "/tmp/never-written"],
            "not registered",
        ),
    ] {
        let (ok, text) = s.hub.cluster_cmd(&args);
        assert!(!ok && text.contains(why), "{args:?}: {text}");
    }
    assert_eq!(s.hub.tunnels().await[0]["id"], new_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_mismatched_new_certificate_leaves_the_old_tunnel_serving() {
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let old_cert = std::fs::read_to_string(s.bundle.join("agent.crt")).unwrap();
    let old_key = std::fs::read_to_string(s.bundle.join("agent.key")).unwrap();
    let (agent, volume) = agent_on_volume(&s, "replica-0", &old_cert, &old_key).await;
    s.agents.push(agent);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(15))
            .await
    );
    let id = s.hub.tunnels().await[0]["id"].clone();
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");

    // Garbage in place of the certificate.
    secret_volume(&volume, "v2", "garbage\n", &old_key);
    assert!(
        s.agents[0]
            .logs
            .wait_for("unusable", Duration::from_secs(5))
            .await,
        "{}",
        s.agents[0].logs.text()
    );
    assert!(
        s.agents[0].logs.text().contains("agent.crt"),
        "the log names the file"
    );
    assert_eq!(get(&client, s.hub.front, &pods, &[]).await.status, 200);

    // A valid new certificate with the old key: a mismatch, also refused.
    let (new_cert, _) = rotate(&s, "rotated");
    secret_volume(&volume, "v3", &new_cert, &old_key);
    assert!(
        s.agents[0]
            .logs
            .wait_for("does not match the certificate", Duration::from_secs(5))
            .await,
        "{}",
        s.agents[0].logs.text()
    );
    for _ in 0..5 {
        assert_eq!(get(&client, s.hub.front, &pods, &[]).await.status, 200);
    }
    let now = s.hub.tunnels().await;
    assert_eq!(now.len(), 1);
    assert_eq!(
        now[0]["id"], id,
        "the old tunnel must not have been replaced"
    );
    assert_eq!(now[0]["draining"], false);
    assert!(
        !s.agents[0].logs.text().contains("draining"),
        "{}",
        s.agents[0].logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_ends_when_its_agent_certificate_expires() {
    // An agent that failed to rotate: its certificate, registered and valid when it
    // connects, expires a few seconds later. The hub cuts the tunnel then, and the
    // agent's reconnects with the expired certificate fail the handshake.
    let s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let state = s.hub.dir.join("state");
    let ca = hawser::pki::HubCa::load(&state).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let issued = ca
        .issue_agent(
            CLUSTER,
            hawser::pki::Validity {
                not_before: now - time::Duration::minutes(5),
                not_after: now + time::Duration::seconds(4),
            },
        )
        .unwrap();
    let fp = issued.fingerprint.to_string();
    let mut registry = hawser::registry::Registry::load(&state).unwrap();
    registry.add_cert(CLUSTER, issued.fingerprint).unwrap();
    registry.save(&state).unwrap();

    let (_agent, _dir) =
        agent_on_volume(&s, "expiring", &issued.cert_pem, issued.key_pem.expose()).await;
    let up = eventually(Duration::from_secs(10), || async {
        tunnels(&s)
            .await
            .iter()
            .any(|(f, _)| *f == fp)
            .then_some(())
    })
    .await;
    assert!(up.is_some(), "no tunnel: {}", s.hub.logs.text());
    let gone = eventually(Duration::from_secs(20), || async {
        tunnels(&s).await.is_empty().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "tunnel outlived its certificate: {}",
        s.hub.logs.text()
    );
    assert!(
        s.hub
            .logs
            .text()
            .contains("agent certificate expired; closing the tunnel"),
        "{}",
        s.hub.logs.text()
    );
}
