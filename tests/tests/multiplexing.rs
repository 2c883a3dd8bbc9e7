//! One tunnel carries many concurrent requests, and per-stream flow control keeps
//! a slow consumer from stalling the others.

use bytes::Bytes;
use hawser_tests::harness::client::{front_client, get};
use hawser_tests::harness::procs::HubOpts;
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use http_body_util::{BodyExt, Full};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_large_stream_does_not_block_other_requests_on_the_same_tunnel() {
    // One agent, one tunnel: every request below shares it.
    let s = Stack::start(double_config(), HubOpts::default(), 1, 1).await;
    assert_eq!(s.hub.tunnels().await.len(), 1);
    s.api.add_pod("default", "big");
    let line = "z".repeat(1024 * 1024 - 1);
    let mib = 64;
    for _ in 0..mib {
        s.api.append_log("default", "big", &line);
    }
    let client = front_client(&s.hub.ca_pem());
    let url = format!(
        "https://127.0.0.1:{}/clusters/{CLUSTER}/api/v1/namespaces/default/pods/big/log",
        s.hub.front.port()
    );
    let stalled = client
        .request(
            http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let mut stalled = stalled.into_body();
    // Read one frame so the stream is certainly flowing, then stop reading it.
    stalled.frame().await.unwrap().unwrap();

    // Meanwhile, many concurrent requests over the same tunnel complete promptly.
    let pods = s.path("/api/v1/namespaces/default/pods");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (client, front, pods) = (front_client(&s.hub.ca_pem()), s.hub.front, pods.clone());
        tasks.spawn(async move { get(&client, front, &pods, &[]).await.status });
    }
    let all = tokio::time::timeout(Duration::from_secs(15), async {
        let mut codes = Vec::new();
        while let Some(code) = tasks.join_next().await {
            codes.push(code.unwrap());
        }
        codes
    })
    .await
    .expect("requests stalled behind the slow stream");
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|c| *c == 200), "{all:?}");

    // The stalled stream lost nothing: read the rest.
    let mut total = 0usize;
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = stalled.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                total += d.len();
            }
        }
    })
    .await;
    assert!(drained.is_ok());
    assert!(
        total >= (mib - 1) * 1024 * 1024,
        "only {total} bytes after the first frame"
    );
}
