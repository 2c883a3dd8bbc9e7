//! The tunnel under faults: removed clusters, dead routes, lost replicas, hub
//! restarts, refused certificates and old TLS versions.

use hawser::pki::{HubCa, Validity};
use hawser_tests::harness::client::{front_client, get};
use hawser_tests::harness::procs::{agent_config, AgentProc, HubOpts, HubProc, FAST_TUNNEL};
use hawser_tests::harness::relay::Relay;
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_cluster_cuts_its_tunnels_within_a_second() {
    let s = Stack::start(double_config(), HubOpts::default(), 1, 2).await;
    let (ok, out) = s.hub.cluster_cmd(&["remove", CLUSTER]);
    assert!(ok, "{out}");
    let removed = Instant::now();
    assert!(
        s.hub.wait_tunnels(CLUSTER, 0, Duration::from_secs(1)).await,
        "tunnels still up 1s after removal"
    );
    assert!(removed.elapsed() <= Duration::from_secs(1));
    // And the agent, refused at the handshake now, never gets a tunnel back.
    let client = front_client(&s.hub.ca_pem());
    let r = get(&client, s.hub.front, &s.path("/api"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(
        s.hub
            .logs
            .wait_for("not registered", Duration::from_secs(5))
            .await,
        "{}",
        s.hub.logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_tunnel_is_dropped_within_the_keepalive_bound_and_replaced() {
    // Hub keepalive 500ms + 1s: a dead tunnel must be gone within 1.5s (plus scheduling slack).
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let relay = Relay::start(s.hub.tunnel).await;
    let cfg = agent_config(
        &s.bundle,
        "via-relay",
        relay.addr,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    s.agents.push(AgentProc::start(&cfg).await);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(10))
            .await
    );
    let first = s.hub.tunnels().await[0]["id"].clone();

    relay.freeze();
    let frozen = Instant::now();
    let dropped = hawser_tests::harness::eventually(Duration::from_secs(5), || async {
        (!s.hub.tunnels().await.iter().any(|t| t["id"] == first)).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "dead tunnel never dropped");
    let took = frozen.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "dead tunnel dropped after {took:?}, bound is 1.5s"
    );

    // The agent notices too (its own keepalive) and reconnects through the relay.
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(10))
            .await,
        "agent did not reconnect"
    );
    let client = front_client(&s.hub.ca_pem());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_replica_fails_no_new_request() {
    let mut s = Stack::start(double_config(), HubOpts::default(), 2, 2).await;
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");
    // Both replicas serve traffic: requests spread over all four tunnels.
    for _ in 0..8 {
        assert_eq!(get(&client, s.hub.front, &pods, &[]).await.status, 200);
    }
    let used: std::collections::HashSet<String> = s
        .hub
        .logs
        .text()
        .lines()
        .filter(|l| l.contains("hawser::access"))
        .filter_map(|l| {
            l.split("tunnel=Some(")
                .nth(1)
                .map(|t| t.split(')').next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        used.len(),
        4,
        "requests not spread over all live tunnels: {used:?}"
    );
    s.agents[0].kill().await;
    assert!(
        s.hub.wait_tunnels(CLUSTER, 2, Duration::from_secs(5)).await,
        "killed replica's tunnels still listed"
    );
    for i in 0..50 {
        let r = get(&client, s.hub.front, &pods, &[]).await;
        assert_eq!(
            r.status,
            200,
            "request {i} after losing a replica: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_come_back_after_a_hub_restart() {
    let mut s = Stack::start(double_config(), HubOpts::default(), 2, 1).await;
    let opts = HubOpts {
        tunnel: s.hub.tunnel.to_string(),
        front: s.hub.front.to_string(),
        ..HubOpts::default()
    };
    s.hub.kill().await;
    let dir = s.hub.dir.clone();
    let restarted = Instant::now();
    s.hub = HubProc::start(&dir, &opts).await;
    // backoff_max is 500ms in FAST_TUNNEL: both replicas must be back well within a few seconds.
    assert!(
        s.hub.wait_tunnels(CLUSTER, 2, Duration::from_secs(5)).await,
        "agents did not return: {}",
        s.hub.logs.text()
    );
    eprintln!("agents back {:?} after restart", restarted.elapsed());
    let client = front_client(&s.hub.ca_pem());
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

/// Starts an agent with the given certificate and key in place of the bundle's.
async fn agent_with_cert(s: &Stack, name: &str, cert_pem: &str, key_pem: &str) -> AgentProc {
    let cfg = agent_config(
        &s.bundle,
        name,
        s.hub.tunnel,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    let dir = cfg.parent().unwrap();
    std::fs::write(dir.join("agent.crt"), cert_pem).unwrap();
    std::fs::write(dir.join("agent.key"), key_pem).unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"../agent.crt\"", "\"agent.crt\"")
        .replace("\"../agent.key\"", "\"agent.key\"");
    std::fs::write(&cfg, text).unwrap();
    AgentProc::start(&cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_expired_and_foreign_certificates_are_refused() {
    let s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let ca = HubCa::load(&s.hub.dir.join("state")).unwrap();

    // Issued by the hub CA for the right cluster, but never registered.
    let unlisted = ca
        .issue_agent(CLUSTER, Validity::days_from_now(30))
        .unwrap();
    let _a = agent_with_cert(
        &s,
        "unlisted",
        &unlisted.cert_pem,
        unlisted.key_pem.expose(),
    )
    .await;
    assert!(
        s.hub
            .logs
            .wait_for("not registered", Duration::from_secs(10))
            .await,
        "{}",
        s.hub.logs.text()
    );

    // Registered CA, expired.
    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let expired = ca.issue_agent(CLUSTER, past).unwrap();
    let _b = agent_with_cert(&s, "expired", &expired.cert_pem, expired.key_pem.expose()).await;
    assert!(
        s.hub
            .logs
            .wait_for("certificate expired", Duration::from_secs(10))
            .await,
        "{}",
        s.hub.logs.text()
    );

    // Issued by some other CA.
    let other_dir = tempfile::tempdir().unwrap();
    let foreign = HubCa::load_or_create(other_dir.path())
        .unwrap()
        .issue_agent(CLUSTER, Validity::days_from_now(30))
        .unwrap();
    let _c = agent_with_cert(&s, "foreign", &foreign.cert_pem, foreign.key_pem.expose()).await;
    // webpki reports a foreign CA with the same subject as a bad signature, else as an unknown issuer.
    let foreign_refused = hawser_tests::harness::eventually(Duration::from_secs(10), || async {
        let logs = s.hub.logs.text();
        (logs.contains("BadSignature") || logs.contains("UnknownIssuer")).then_some(())
    });
    assert!(foreign_refused.await.is_some(), "{}", s.hub.logs.text());

    // None of them ever got a tunnel, so nothing reached the API server.
    assert!(s.hub.tunnels().await.is_empty());
    let client = front_client(&s.hub.ca_pem());
    assert_eq!(
        get(&client, s.hub.front, &s.path("/api"), &[]).await.status,
        503
    );
    assert!(s.api.requests().is_empty());
}

/// A minimal TLS 1.1 ClientHello (no extensions): rustls must answer with a fatal
/// `protocol_version` alert.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13]); // ECDHE-ECDSA/RSA-AES128-GCM, ECDHE-RSA-AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let extensions: &[u8] = &[
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04, // signature_algorithms
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
    ];
    body.extend_from_slice(&[0x00, extensions.len() as u8]);
    body.extend_from_slice(extensions);
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    record.extend(hs);
    record
}

async fn tls_alert_for_old_client(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_refused_and_1_2_still_works() {
    let s = Stack::start(double_config(), HubOpts::default(), 1, 1).await;
    for addr in [s.hub.tunnel, s.hub.front] {
        let reply = tls_alert_for_old_client(addr).await;
        // Alert record (21), fatal (2), protocol_version (70).
        assert!(reply.len() >= 7, "no alert from {addr}: {reply:?}");
        assert_eq!(
            (reply[0], reply[5], reply[6]),
            (21, 2, 70),
            "from {addr}: {reply:?}"
        );
    }
    // TLS 1.2 is the minimum, not refused; default clients negotiate 1.3.
    for (versions, expect) in [
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
        (rustls::DEFAULT_VERSIONS, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let cfg = hawser_tests::harness::client::tls_config(&s.hub.ca_pem(), versions);
        let tcp = tokio::net::TcpStream::connect(s.hub.front).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expect));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_trusts_only_the_pinned_hub_ca() {
    let s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let cfg = agent_config(
        &s.bundle,
        "wrong-pin",
        s.hub.tunnel,
        &s.api_target(),
        1,
        FAST_TUNNEL,
    );
    let dir = cfg.parent().unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.join("ca.crt"),
        HubCa::load_or_create(other.path()).unwrap().cert_pem(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"../ca.crt\"", "\"ca.crt\"");
    std::fs::write(&cfg, text).unwrap();
    let agent = AgentProc::start(&cfg).await;
    assert!(
        agent
            .logs
            .wait_for("cannot reach the hub", Duration::from_secs(10))
            .await,
        "{}",
        agent.logs.text()
    );
    assert!(
        agent.logs.text().contains("invalid peer certificate"),
        "{}",
        agent.logs.text()
    );
    assert!(s.hub.tunnels().await.is_empty());
}
