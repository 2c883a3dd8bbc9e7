//! The real kubectl through hub, tunnel and agent to the kube-apiserver double.

use hawser_tests::harness::kubectl::Kubectl;
use hawser_tests::harness::procs::HubOpts;
use hawser_tests::harness::stack::{double_config, Stack, CLUSTER};
use hawser_tests::harness::{peak_rss_kib, rss_kib};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

async fn stack_with_pods(cfg: hawser_tests::apiserver::DoubleConfig) -> (Stack, Kubectl) {
    let s = Stack::start(cfg, HubOpts::default(), 1, 2).await;
    s.api.add_pod("default", "web-0");
    s.api.add_pod("default", "web-1");
    let k = Kubectl::new(
        s.dir.path(),
        s.hub.front,
        CLUSTER,
        &s.hub.ca_pem(),
        "user-token",
    );
    (s, k)
}

/// Reads lines from `reader` until one contains `needle` (bounded).
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
    timeout: Duration,
) -> String {
    tokio::time::timeout(timeout, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => continue,
                other => panic!("stream ended before `{needle}`: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with `{needle}` within {timeout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pods() {
    let (s, k) = stack_with_pods(double_config()).await;
    let (code, out, err) = k.run(&["get", "pods"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("NAME") && out.contains("web-0") && out.contains("web-1"),
        "{out}"
    );
    let (code, out, err) = k.run(&["get", "pod", "web-0", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\": \"web-0\""), "{out}");
    // The Table request kept kubectl's Accept header across the tunnel.
    let table = s
        .api
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/v1/namespaces/default/pods")
        .unwrap();
    assert!(
        table
            .header("accept")
            .unwrap_or_default()
            .contains("as=Table"),
        "{table:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_streams_events_promptly() {
    let (s, k) = stack_with_pods(double_config()).await;
    let mut child = k.spawn(&["get", "pods", "-w", "--output-watch-events"], &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    line_with(&mut lines, "web-1", Duration::from_secs(30)).await;
    s.api
        .wait_for_request(|r| r.query.contains("watch"), Duration::from_secs(20))
        .await
        .expect("watch request");
    for name in ["new-a", "new-b", "new-c"] {
        let emitted = s.api.emit_watch_event("ADDED", "default", name);
        line_with(&mut lines, name, Duration::from_secs(5)).await;
        let lag = emitted.elapsed();
        assert!(
            lag < Duration::from_secs(1),
            "{name} arrived {lag:?} after it was emitted"
        );
    }
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow() {
    let (s, k) = stack_with_pods(double_config()).await;
    s.api.append_log("default", "web-0", "first line");
    let mut child = k.spawn(&["logs", "-f", "web-0"], &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    line_with(&mut lines, "first line", Duration::from_secs(30)).await;
    for i in 0..3 {
        let started = Instant::now();
        s.api.append_log("default", "web-0", &format!("follow {i}"));
        line_with(&mut lines, &format!("follow {i}"), Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let _ = child.kill().await;
}

async fn exec_roundtrip(k: &Kubectl, env: &[(&str, &str)]) {
    let mut child = k.spawn(&["exec", "-i", "web-0", "--", "cat"], env);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"hello through the tunnel\n")
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exec timed out")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through the tunnel\n"
    );

    let (code, out, _) = {
        let o = tokio::time::timeout(
            Duration::from_secs(30),
            k.command(&["exec", "web-0", "--", "echo", "hi", "there"])
                .envs(env.iter().copied())
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            (),
        )
    };
    assert_eq!((code, out.as_str()), (Some(0), "hi there\n"));

    let o = tokio::time::timeout(
        Duration::from_secs(30),
        k.command(&["exec", "web-0", "--", "sh", "-c", "exit 3"])
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "exit code must cross the tunnel: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket() {
    let (s, k) = stack_with_pods(double_config()).await;
    exec_roundtrip(&k, &[]).await;
    let ws = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/exec"))
        .collect::<Vec<_>>();
    assert!(
        ws.iter().all(|r| r.method == "GET"
            && r.header("upgrade")
                .unwrap_or_default()
                .eq_ignore_ascii_case("websocket")),
        "{ws:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy() {
    let (s, k) = stack_with_pods(double_config()).await;
    exec_roundtrip(&k, &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")]).await;
    let spdy = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/exec"))
        .collect::<Vec<_>>();
    assert!(!spdy.is_empty());
    assert!(
        spdy.iter()
            .all(|r| r.method == "POST" && r.header("upgrade").as_deref() == Some("SPDY/3.1")),
        "{spdy:?}"
    );
}

async fn port_forward_roundtrip(env: &[(&str, &str)]) {
    let mut cfg = double_config();
    cfg.port_targets
        .insert(8080, hawser_tests::harness::upper_echo_server().await);
    let (_s, k) = stack_with_pods(cfg).await;
    let mut child = k.spawn(&["port-forward", "pod/web-0", ":8080"], env);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = line_with(
        &mut lines,
        "Forwarding from 127.0.0.1:",
        Duration::from_secs(30),
    )
    .await;
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for round in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let msg = format!("ping {round} both ways");
        conn.write_all(msg.as_bytes()).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut got))
            .await
            .expect("echo timed out")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got), msg.to_uppercase());
    }
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket() {
    port_forward_roundtrip(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy() {
    port_forward_roundtrip(&[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_response_streams_with_bounded_memory() {
    let (s, k) = stack_with_pods(double_config()).await;
    let line = "y".repeat(1024 * 1024 - 1);
    for _ in 0..100 {
        s.api.append_log("default", "web-1", &line);
    }
    let (hub_pid, agent_pid) = (s.hub.pid(), s.agents[0].pid());
    let (hub_before, agent_before) = (rss_kib(hub_pid).unwrap(), rss_kib(agent_pid).unwrap());
    let mut child = k.spawn(&["logs", "web-1"], &[]);
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    let counted = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(counted.is_ok(), "streaming 100 MiB took too long");
    let status = child.wait().await.unwrap();
    assert!(status.success());
    assert_eq!(total, 100 * 1024 * 1024, "every byte arrived");
    let hub_growth = peak_rss_kib(hub_pid).unwrap().saturating_sub(hub_before) / 1024;
    let agent_growth = peak_rss_kib(agent_pid)
        .unwrap()
        .saturating_sub(agent_before)
        / 1024;
    eprintln!(
        "peak RSS growth while streaming 100 MiB: hub {hub_growth} MiB, agent {agent_growth} MiB"
    );
    // Flow control bounds what sits in memory to a few windows, far below the body.
    assert!(hub_growth < 40, "hub grew {hub_growth} MiB");
    assert!(agent_growth < 40, "agent grew {agent_growth} MiB");
}
