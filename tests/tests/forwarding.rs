//! The front listener and the forwarding rules, over real sockets: hub process,
//! agent process, kube-apiserver double.

use hawser_tests::harness::client::{front_client, get, raw_exchange};
use hawser_tests::harness::procs::{agent_config, AgentProc, ApiTarget, HubOpts, FAST_TUNNEL};
use hawser_tests::harness::stack::{double_config, Stack, AGENT_TOKEN, CLUSTER};
use std::time::Duration;

async fn stack() -> Stack {
    Stack::start(double_config(), HubOpts::default(), 1, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_the_api_server_with_the_agents_credential_only() {
    let s = stack().await;
    let client = front_client(&s.hub.ca_pem());
    let reply = get(
        &client,
        s.hub.front,
        &s.path("/api/v1/namespaces/default/pods"),
        &[
            ("authorization", "Bearer user-token"),
            ("x-remote-user", "root"),
            ("x-remote-group", "system:masters"),
            ("x-hawser-tunnel-upgrade", "websocket"),
            ("accept", "application/json"),
            ("accept-encoding", "identity"),
            ("connection", "x-drop-me"),
            ("x-drop-me", "1"),
            ("te", "trailers"),
            ("x-forwarded-for", "198.51.100.9"),
        ],
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["kind"], "PodList");
    let audit_id = reply.headers["audit-id"].to_str().unwrap().to_string();

    let seen = s.api.requests();
    let req = seen
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/default/pods")
        .expect("forwarded");
    assert_eq!(
        req.header_values("authorization"),
        vec![format!("Bearer {AGENT_TOKEN}")]
    );
    for (name, _) in &req.headers {
        assert!(
            !name.starts_with("impersonate-"),
            "{name} reached the API server"
        );
        assert!(
            !name.starts_with("x-remote-"),
            "{name} reached the API server"
        );
        assert!(
            !name.starts_with("x-hawser-tunnel-"),
            "{name} reached the API server"
        );
        assert!(
            !["connection", "te", "x-drop-me", "keep-alive", "upgrade"].contains(&name.as_str()),
            "hop-by-hop {name} forwarded"
        );
    }
    assert_eq!(req.header("accept").as_deref(), Some("application/json"));
    assert_eq!(req.header("accept-encoding").as_deref(), Some("identity"));
    assert_eq!(
        req.header("x-forwarded-for").as_deref(),
        Some("198.51.100.9, 127.0.0.1")
    );
    assert_eq!(
        req.header("audit-id").as_deref(),
        Some(audit_id.as_str()),
        "Audit-ID set by the hub and returned"
    );
    assert_eq!(req.query, "");
    // This stack has no credential stage: it runs only because the test opted in,
    // and both processes say so when they start.
    let warning = "allow_unauthenticated: `plugins` is not set";
    assert!(s.hub.logs.text().contains(warning), "{}", s.hub.logs.text());
    assert!(s.agents[0].logs.text().contains(&format!("{warning}, so there is no credential stage; requests are forwarded with no verified user, under the agent's own credential")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_impersonation_without_an_access_policy_is_refused() {
    let s = stack().await;
    let client = front_client(&s.hub.ca_pem());
    let pods = s.path("/api/v1/namespaces/default/pods");
    for header in [
        "impersonate-user",
        "impersonate-group",
        "impersonate-uid",
        "impersonate-extra-scopes",
    ] {
        let r = get(&client, s.hub.front, &pods, &[(header, "system:admin")]).await;
        assert_eq!(r.status, 403, "{header}");
        assert_eq!(r.json()["reason"], "Forbidden", "{header}");
    }
    assert!(
        s.api.requests().iter().all(|r| !r.path.ends_with("/pods")),
        "nothing forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_audit_id_is_kept_and_query_passes() {
    let s = stack().await;
    let client = front_client(&s.hub.ca_pem());
    let reply = get(
        &client,
        s.hub.front,
        &s.path("/api/v1/namespaces/default/pods?limit=500"),
        &[("audit-id", "my-audit-id")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["audit-id"], "my-audit-id");
    let req = s
        .api
        .wait_for_request(
            |r| r.header("audit-id").as_deref() == Some("my-audit-id"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(req.query, "limit=500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_unavailable_and_tricky_clusters_get_status_bodies() {
    let s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let client = front_client(&s.hub.ca_pem());

    let r = get(&client, s.hub.front, "/clusters/nowhere/api", &[]).await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(
        (
            v["kind"].as_str(),
            v["apiVersion"].as_str(),
            v["status"].as_str()
        ),
        (Some("Status"), Some("v1"), Some("Failure"))
    );
    assert_eq!(
        (v["reason"].as_str(), v["code"].as_i64()),
        (Some("NotFound"), Some(404))
    );
    assert!(v["message"].as_str().unwrap().contains("nowhere"));

    // Registered, but no agent connected.
    let r = get(
        &client,
        s.hub.front,
        &format!("/clusters/{CLUSTER}/api"),
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    assert_eq!(r.json()["code"], 503);

    for path in [
        "/clusters//api",
        "/clusters/..%2feu1/api",
        "/clusters/eu1%2Fapi/x",
        "/clusters/eu1/../eu2/api",
        "/clusters/eu1/api/%2e%2e/x",
    ] {
        let r = get(&client, s.hub.front, path, &[]).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.json()["reason"], "BadRequest", "{path}");
    }
    let r = get(&client, s.hub.front, "/api/v1/pods", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["kind"], "Status");
    assert!(s.api.requests().is_empty(), "nothing may be forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused_before_forwarding() {
    let s = Stack::start(
        double_config(),
        HubOpts {
            front_extra: "max_header_bytes = 4096\n".into(),
            ..HubOpts::default()
        },
        1,
        1,
    )
    .await;
    let ca = s.hub.ca_pem();
    let pods = s.path("/api/v1/namespaces/default/pods");
    let t = Duration::from_secs(5);

    let conflicting = format!("POST {pods} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let reply = raw_exchange(s.hub.front, &ca, conflicting.as_bytes(), t).await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "conflicting CL/TE: {reply}"
    );

    let garbage = raw_exchange(
        s.hub.front,
        &ca,
        b"GET /clusters/eu1/api HTTP/1.1\r\nHost x\r\n\r\n",
        t,
    )
    .await;
    assert!(
        garbage.starts_with("HTTP/1.1 400"),
        "malformed header line: {garbage}"
    );

    let big = "a".repeat(5000);
    let oversized =
        format!("GET {pods} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(s.hub.front, &ca, oversized.as_bytes(), t).await;
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "oversized headers: {reply}"
    );
    assert!(
        reply.contains("\"kind\":\"Status\"") && reply.contains("exceeds the limit of 4096"),
        "{reply}"
    );

    // Sanity: a proper request on the same hub goes through, and only it arrived.
    let ok = format!("GET {pods} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(s.hub.front, &ca, ok.as_bytes(), t).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let forwarded: Vec<_> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/pods"))
        .collect();
    assert_eq!(
        forwarded.len(),
        1,
        "only the valid request may be forwarded: {forwarded:?}"
    );
    assert_eq!(forwarded[0].method, "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_requests_time_out_but_watches_do_not() {
    let mut api = double_config();
    api.response_delay = Some(Duration::from_secs(3));
    let s = Stack::start(
        api,
        HubOpts {
            front_extra: "request_timeout = \"700ms\"\n".into(),
            ..HubOpts::default()
        },
        1,
        1,
    )
    .await;
    let client = front_client(&s.hub.ca_pem());
    use http_body_util::BodyExt;
    let req = http::Request::get(format!(
        "https://127.0.0.1:{}{}",
        s.hub.front.port(),
        s.path("/api/v1/namespaces/default/pods?watch=1")
    ))
    .body(http_body_util::Full::new(bytes::Bytes::new()))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();

    // While the watch is open, a short request runs into the hub's timeout...
    let r = get(
        &client,
        s.hub.front,
        &s.path("/api/v1/namespaces/default/pods/slow"),
        &[],
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["reason"], "Timeout");

    // ...and the watch, older than that timeout, still delivers.
    s.api.emit_watch_event("ADDED", "default", "late-pod");
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let f = body.frame().await.expect("stream open").expect("no error");
            if let Ok(data) = f.into_data() {
                let text = String::from_utf8_lossy(&data).into_owned();
                if text.contains("late-pod") {
                    return text;
                }
            }
        }
    })
    .await
    .expect("watch event after the timeout");
    assert!(frame.contains("ADDED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_api_server_refuses_is_relayed_as_is() {
    let s = stack().await;
    s.api.add_pod("default", "web-0");
    let ca = s.hub.ca_pem();
    // SPDY exec without X-Stream-Protocol-Version: kube-apiserver answers 400 and
    // does not switch protocols; the hub must pass that answer through.
    let exec = s.path("/api/v1/namespaces/default/pods/web-0/exec?command=ls&stdout=1");
    let req = format!("POST {exec} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n");
    let reply = raw_exchange(s.hub.front, &ca, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("X-Stream-Protocol-Version"),
        "the API server's own message is relayed: {reply}"
    );
    let upstream = s
        .api
        .wait_for_request(|r| r.path.ends_with("/exec"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(upstream.status, 400);
    assert_eq!(upstream.header("upgrade").as_deref(), Some("SPDY/3.1"));
    assert_eq!(upstream.header("connection").as_deref(), Some("Upgrade"));

    // An upgrade for a pod that does not exist: 404 Status, relayed.
    let missing = s.path("/api/v1/namespaces/default/pods/nope/exec?command=ls&stdout=1");
    let req = format!("GET {missing} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n");
    let reply = raw_exchange(s.hub.front, &ca, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.contains("\"reason\":\"NotFound\""), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_cannot_fake_an_upgrade_with_hawser_headers() {
    let s = stack().await;
    s.api.add_pod("default", "web-0");
    let ca = s.hub.ca_pem();
    // A pod behind `pods/proxy` answers an upgrade request with 200 and the header the
    // agent uses to tell the hub that the API server switched protocols.
    let proxy = s.path(
        "/api/v1/namespaces/default/pods/web-0/proxy/ws?header=x-hawser-tunnel-upgraded:101\
         &header=x-hawser-tunnel-upgrade:evil&header=x-app:kept",
    );
    let req = format!("GET {proxy} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    let reply = raw_exchange(s.hub.front, &ca, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("pod web-0 answered /ws"), "{reply}");
    let lower = reply.to_ascii_lowercase();
    assert!(lower.contains("x-app: kept"), "{reply}");
    assert!(!lower.contains("x-hawser-"), "{reply}");
    assert!(!lower.contains("evil"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_accepts_and_stalls_fails_even_a_watch_quickly() {
    // Accepts TCP, never answers the TLS handshake.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = stall.accept().await {
            held.push(conn);
        }
    });
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let target = ApiTarget {
        url: format!("https://{addr}"),
        ..s.api_target()
    };
    start_agent(&mut s, &target, "connect_timeout = \"300ms\"\n").await;

    let client = front_client(&s.hub.ca_pem());
    let watch = s.path("/api/v1/namespaces/default/pods?watch=1");
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        get(&client, s.hub.front, &watch, &[]),
    )
    .await
    .expect("the watch hung on a stalled API server");
    assert_eq!(
        reply.status,
        503,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["kind"], "Status");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("300ms"),
        "{}",
        reply.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_running_request_whose_answer_never_starts_ends_with_a_504() {
    // pods/proxy has no total timeout; the pod behind it takes a minute to answer.
    let mut s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    s.api.add_pod("default", "slow-0");
    let target = s.api_target();
    start_agent(&mut s, &target, "response_header_timeout = \"300ms\"\n").await;

    let client = front_client(&s.hub.ca_pem());
    let slow = s.path("/api/v1/namespaces/default/pods/slow-0/proxy/?delay_ms=60000");
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        get(&client, s.hub.front, &slow, &[]),
    )
    .await
    .expect("the request hung on an answer that never started");
    assert_eq!(
        reply.status,
        504,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let status = reply.json();
    assert_eq!(
        (&status["kind"], &status["reason"]),
        (&"Status".into(), &"Timeout".into())
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no response head within 300ms"),
        "{status}"
    );
    // An answer that starts within the limit is relayed.
    let quick = s.path("/api/v1/namespaces/default/pods/slow-0/proxy/?delay_ms=10");
    assert_eq!(get(&client, s.hub.front, &quick, &[]).await.status, 200);
}

/// Starts an agent for the test cluster against `target`, with `apiserver_extra` added to
/// its `[apiserver]` table, and waits for its tunnel.
async fn start_agent(s: &mut Stack, target: &ApiTarget, apiserver_extra: &str) {
    let cfg = agent_config(&s.bundle, "custom", s.hub.tunnel, target, 1, FAST_TUNNEL);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "token_file = \"token\"\n",
        &format!("token_file = \"token\"\n{apiserver_extra}"),
    );
    std::fs::write(&cfg, text).unwrap();
    s.agents.push(AgentProc::start(&cfg).await);
    assert!(
        s.hub
            .wait_tunnels(CLUSTER, 1, Duration::from_secs(10))
            .await
    );
}
