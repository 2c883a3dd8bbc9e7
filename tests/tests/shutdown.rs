//! The hub's graceful shutdown and its limits on idle clients, over real sockets: on
//! SIGTERM it stops accepting, lets the requests in flight finish and only then closes
//! the tunnels; a client that connects and sends nothing is closed after
//! `front.header_timeout`; connections past `front.max_connections` are closed at once;
//! SIGHUP without a plugin chain is logged and ignored.

use bytes::Bytes;
use hawser_tests::harness::audit_log::{audit_file, audit_section, complete};
use hawser_tests::harness::client::{front_client, plain_get, tls_config};
use hawser_tests::harness::procs::HubOpts;
use hawser_tests::harness::stack::{double_config, Stack};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_before_the_tunnels_close() {
    let audit_dir = tempfile::tempdir().unwrap();
    let opts = HubOpts {
        front_extra: audit_section(audit_dir.path(), "hub"),
        ..HubOpts::default()
    };
    let mut s = Stack::start(double_config(), opts, 1, 1).await;
    s.api.add_pod("default", "web-0");
    let client = front_client(&s.hub.ca_pem());
    // A watch the API server ends by itself after 2 s.
    let url = format!(
        "https://127.0.0.1:{}{}",
        s.hub.front.port(),
        s.path("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=2")
    );
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.expect("watch");
    assert_eq!(resp.status(), 200);
    let audit_id = resp.headers()["audit-id"].to_str().unwrap().to_string();
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a first event").expect("frame");
    let first = String::from_utf8_lossy(first.data_ref().expect("data")).to_string();
    assert!(first.contains("web-0"), "{first}");

    s.hub.terminate();
    // The watch runs on to its own end, through the tunnel, and ends cleanly.
    let rest = tokio::time::timeout(Duration::from_secs(15), body.collect())
        .await
        .expect("the watch ended within the drain period");
    assert!(
        rest.is_ok(),
        "the watch was cut: {:?}\n{}",
        rest.err(),
        s.hub.logs.text()
    );
    let status = s.hub.exited(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|st| st.success()),
        "hub exit: {status:?}\n{}",
        s.hub.logs.text()
    );
    // Its audit event was written before the audit log closed.
    let event = complete(&audit_file(audit_dir.path(), "hub"), &audit_id);
    assert!(
        event.is_some(),
        "no ResponseComplete for the drained watch\n{}",
        s.hub.logs.text()
    );
    assert_eq!(event.unwrap()["responseStatus"]["code"], 200);
}

/// Opens TLS to the front, offering `alpn`.
async fn connect(s: &Stack, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut cfg = tls_config(&s.hub.ca_pem(), rustls::DEFAULT_VERSIONS);
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(s.hub.front).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tls.connect(name, tcp).await
}

/// A TLS connection to the front that the hub admitted, retried for up to 10 s.
async fn held_connection(s: &Stack, alpn: &[u8]) -> TlsStream<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(s, alpn).await {
            Ok(stream) => return stream,
            Err(e) => assert!(Instant::now() < deadline, "not admitted: {e}"),
        }
        tokio::task::yield_now().await;
    }
}

/// Opens TLS to the front, offering `alpn`, sends nothing, and returns how long the
/// hub took to close the connection.
async fn silent_client(s: &Stack, alpn: &[u8]) -> Duration {
    let mut stream = connect(s, alpn).await.expect("TLS handshake");
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        // An HTTP/2 server speaks first (its SETTINGS); read until the close.
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "a silent {:?} client was kept open",
        String::from_utf8_lossy(alpn)
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_no_request_are_closed_after_the_header_timeout() {
    let opts = HubOpts {
        front_extra: "header_timeout = \"300ms\"\n".into(),
        ..HubOpts::default()
    };
    let s = Stack::start(double_config(), opts, 0, 1).await;
    for alpn in [b"h2".as_slice(), b"http/1.1".as_slice()] {
        let took = silent_client(&s, alpn).await;
        assert!(
            took >= Duration::from_millis(250),
            "{}: closed after {took:?}",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_at_once_until_one_ends() {
    let opts = HubOpts {
        front_extra: "max_connections = 2\n".into(),
        ..HubOpts::default()
    };
    let s = Stack::start(double_config(), opts, 0, 1).await;
    // Another test's agent may still be redialing a port this hub now uses, holding a
    // slot for a moment: retry until both of ours are in.
    let first = held_connection(&s, b"http/1.1").await;
    let _second = held_connection(&s, b"h2").await;
    // The third is accepted and closed: its handshake fails at once.
    assert!(connect(&s, b"http/1.1").await.is_err());
    let metrics = plain_get(s.hub.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("hawser_hub_front_connections 2\n"),
        "{metrics}"
    );
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hawser_hub_front_connections_refused_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no refused counter in\n{metrics}"));
    assert!(refused >= 1, "{metrics}");
    assert!(
        s.hub.logs.text().contains("connection limit reached"),
        "{}",
        s.hub.logs.text()
    );
    // Once one ends, new connections are served again.
    drop(first);
    held_connection(&s, b"http/1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_plugin_chain_is_logged_not_fatal() {
    let s = Stack::start(double_config(), HubOpts::default(), 0, 1).await;
    let pid = s.hub.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.hub.logs.text().contains("nothing to reload") {
        assert!(
            Instant::now() < deadline,
            "no SIGHUP log line\n{}",
            s.hub.logs.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        plain_get(s.hub.admin, "/livez").await.as_deref(),
        Some("ok\n")
    );
}
