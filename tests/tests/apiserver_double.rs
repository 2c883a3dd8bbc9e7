//! Proof that the kube-apiserver test double is faithful enough: the real
//! kubectl runs against it directly (no hub), and raw HTTP checks the
//! impersonation, authorization and audit details byte for byte.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hawser_tests::apiserver::{
    ApiServerDouble, DoubleConfig, PodSpec, RecordedRequest, Rule, UserInfo,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const ADMIN: &str = "admin-token";
const ALICE: &str = "alice-token";
/// Upper bound for any single test.
const TEST_LIMIT: Duration = Duration::from_secs(150);
/// Upper bound for one kubectl run.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body with an overall time limit.
async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test exceeded its time limit");
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: name.into(),
        uid: format!("{name}-uid"),
        groups: vec!["devs".into()],
        extra: BTreeMap::new(),
    }
}

/// admin may do anything; alice may only read pods; bob (when impersonated)
/// may do anything.
fn config() -> DoubleConfig {
    let mut cfg = DoubleConfig::default();
    cfg.tokens.insert(ADMIN.into(), user("admin"));
    cfg.tokens.insert(ALICE.into(), user("alice"));
    cfg.rules.push(Rule::allow_all("user:admin"));
    cfg.rules.push(Rule::allow_all("user:bob"));
    cfg.rules.push(Rule {
        subjects: vec!["user:alice".into()],
        verbs: vec!["get".into(), "list".into(), "watch".into()],
        api_groups: vec!["".into()],
        resources: vec!["pods".into()],
        ..Rule::default()
    });
    cfg.pods = vec![
        PodSpec::new("default", "web-0"),
        PodSpec::new("default", "web-1"),
    ];
    cfg
}

async fn start(cfg: DoubleConfig) -> ApiServerDouble {
    ApiServerDouble::start(cfg).await.expect("start double")
}

/// A kubeconfig pointing straight at the double, plus a fresh cache dir.
struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(api: &ApiServerDouble, token: &str) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        Kubectl::with_cache(api, token, dir, cache)
    }

    /// Another user sharing this one's discovery cache (so kubectl skips
    /// discovery and reports the API error of the request itself).
    fn other_user(&self, api: &ApiServerDouble, token: &str) -> Kubectl {
        Kubectl::with_cache(api, token, tempfile::tempdir().unwrap(), self.cache.clone())
    }

    fn with_cache(
        api: &ApiServerDouble,
        token: &str,
        dir: tempfile::TempDir,
        cache: PathBuf,
    ) -> Kubectl {
        let ca = base64::engine::general_purpose::STANDARD.encode(api.ca_pem());
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": api.url(), "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u", "namespace": "default"}}],
            "current-context": "double",
        });
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, serde_json::to_string(&config).unwrap()).unwrap();
        Kubectl {
            dir,
            kubeconfig,
            cache,
        }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd.arg("--cache-dir").arg(&self.cache);
        cmd.args(args);
        cmd.env_remove("KUBECONFIG").env("HOME", self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs to completion, feeding `stdin` if given: (exit code, stdout, stderr).
    async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> (i32, String, String) {
        let mut cmd = self.command(args, env);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish"))
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a long-running kubectl and returns it with its stdout lines.
    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut child = self.command(args, env).spawn().expect("spawn kubectl");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    }
}

/// Reads lines until one contains `needle`.
async fn line_with(
    lines: &mut Lines<BufReader<ChildStdout>>,
    needle: &str,
    limit: Duration,
) -> String {
    tokio::time::timeout(limit, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => {}
                other => panic!("stdout ended before {needle:?}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?} within {limit:?}"))
}

fn find(api: &ApiServerDouble, pred: impl Fn(&RecordedRequest) -> bool) -> Vec<RecordedRequest> {
    api.requests().into_iter().filter(|r| pred(r)).collect()
}

// === kubectl against the double ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pods_prints_the_server_side_table() {
    bounded(async {
        let api = start(config()).await;
        let k = Kubectl::new(&api, ADMIN);
        let (code, out, err) = k.run(&["get", "pods"], &[], None).await;
        assert_eq!(code, 0, "{err}");
        let header = out.lines().next().unwrap_or_default();
        for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
            assert!(header.contains(col), "{out}");
        }
        assert!(
            out.contains("web-0") && out.contains("web-1") && out.contains("Running"),
            "{out}"
        );

        let list = find(&api, |r| r.path == "/api/v1/namespaces/default/pods");
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0]
            .header("accept")
            .unwrap_or_default()
            .contains("as=Table"));
        assert_eq!(list[0].status, 200);
        assert_eq!(
            list[0].user.as_ref().map(|u| u.username.as_str()),
            Some("admin")
        );
        // Discovery went the legacy way.
        assert!(!find(&api, |r| r.path == "/api/v1").is_empty());

        let (code, out, err) = k
            .run(&["get", "pod", "web-0", "-o", "json"], &[], None)
            .await;
        assert_eq!(code, 0, "{err}");
        let pod: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(pod["metadata"]["name"], "web-0");
        assert_eq!(pod["status"]["phase"], "Running");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_with_a_bad_token_is_unauthorized() {
    bounded(async {
        let api = start(config()).await;
        // With an empty cache, discovery fails first; client-go reports
        // discovery errors without decoding the Status.
        let admin = Kubectl::new(&api, ADMIN);
        let bad = admin.other_user(&api, "not-a-token");
        let (code, _, err) = bad.run(&["get", "pods"], &[], None).await;
        assert_ne!(code, 0);
        assert!(err.contains("You must be logged in to the server"), "{err}");
        assert!(api
            .requests()
            .iter()
            .all(|r| r.status == 401 && r.user.is_none()));
        // With discovery cached, the pods request's 401 Status is decoded.
        let (code, _, err) = admin.run(&["get", "pods"], &[], None).await;
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = bad.run(&["get", "pods"], &[], None).await;
        assert_ne!(code, 0);
        assert!(
            err.contains("error: You must be logged in to the server (Unauthorized)"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_without_impersonate_permission_is_forbidden() {
    bounded(async {
        let api = start(config()).await;
        let alice = Kubectl::new(&api, ALICE);
        // Empty cache: discovery is denied, kubectl says so without details.
        let (code, _, err) = alice.run(&["get", "pods", "--as", "bob"], &[], None).await;
        assert_ne!(code, 0);
        assert!(err.contains("Error from server (Forbidden)"), "{err}");
        // Discovery cached: the Status message of the pods request shows.
        let (code, _, err) = alice.run(&["get", "pods"], &[], None).await;
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = alice.run(&["get", "pods", "--as", "bob"], &[], None).await;
        assert_ne!(code, 0);
        assert!(
            err.contains(r#"Error from server (Forbidden): users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
            "{err}"
        );
        // Admin may impersonate bob, and the double sees bob.
        let k = Kubectl::new(&api, ADMIN);
        let (code, out, err) = k.run(&["get", "pods", "--as", "bob", "--as-group", "team, a"], &[], None).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("web-0"));
        let seen = find(&api, |r| r.path == "/api/v1/namespaces/default/pods" && r.status == 200);
        let u = seen.last().and_then(|r| r.user.clone()).unwrap();
        assert_eq!(u.username, "bob");
        assert_eq!(u.groups, ["team, a", "system:authenticated"]);
        assert_eq!(seen.last().unwrap().header_values("impersonate-group"), ["team, a"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_whoami_and_can_i_see_the_effective_user() {
    bounded(async {
        let api = start(config()).await;
        let admin = Kubectl::new(&api, ADMIN);
        let args = [
            "auth",
            "whoami",
            "-o",
            "json",
            "--as",
            "bob",
            "--as-group",
            "g1",
            "--as-group",
            "g2",
        ];
        let (code, out, err) = admin.run(&args, &[], None).await;
        assert_eq!(code, 0, "{err}");
        let review: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(review["status"]["userInfo"]["username"], "bob");
        assert_eq!(
            review["status"]["userInfo"]["groups"],
            serde_json::json!(["g1", "g2", "system:authenticated"])
        );

        let alice = admin.other_user(&api, ALICE);
        let (code, out, _) = alice
            .run(&["auth", "can-i", "list", "pods"], &[], None)
            .await;
        assert_eq!((code, out.trim()), (0, "yes"));
        let (code, out, _) = alice
            .run(&["auth", "can-i", "delete", "pods"], &[], None)
            .await;
        assert_eq!((code, out.trim()), (1, "no"));
        let (code, out, _) = alice
            .run(&["auth", "can-i", "create", "pods/exec"], &[], None)
            .await;
        assert_eq!((code, out.trim()), (1, "no"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_receives_emitted_events_promptly() {
    bounded(async {
        let api = start(config()).await;
        let k = Kubectl::new(&api, ADMIN);
        let (mut child, mut lines) = k.spawn(&["get", "pods", "-w"], &[]);
        line_with(&mut lines, "web-1", RUN_LIMIT).await;
        api.wait_for_request(
            |r| r.query.contains("watch=true") || r.query.contains("watch=1"),
            RUN_LIMIT,
        )
        .await
        .expect("watch request");
        for name in ["web-2", "web-3"] {
            let emitted = api.emit_watch_event("ADDED", "default", name);
            line_with(&mut lines, name, Duration::from_secs(10)).await;
            let lag = emitted.elapsed();
            assert!(
                lag < Duration::from_secs(2),
                "{name} printed {lag:?} after emission"
            );
        }
        let _ = child.kill().await;
        // The watch was audited as long-running.
        let stages: Vec<String> = api
            .audit_events()
            .iter()
            .filter(|e| e["verb"] == "watch")
            .map(|e| e["stage"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(stages[..2], ["RequestReceived", "ResponseStarted"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_receives_appended_lines() {
    bounded(async {
        let api = start(config()).await;
        api.append_log("default", "web-0", "first line");
        let k = Kubectl::new(&api, ADMIN);
        let (mut child, mut lines) = k.spawn(&["logs", "-f", "web-0"], &[]);
        line_with(&mut lines, "first line", RUN_LIMIT).await;
        api.wait_for_request(
            |r| r.path.ends_with("/log") && r.query.contains("follow=true"),
            RUN_LIMIT,
        )
        .await
        .expect("follow request");
        for i in 0..3 {
            api.append_log("default", "web-0", &format!("appended {i}"));
            line_with(
                &mut lines,
                &format!("appended {i}"),
                Duration::from_secs(10),
            )
            .await;
        }
        let _ = child.kill().await;
    })
    .await;
}

async fn exec_roundtrips(api: &ApiServerDouble, env: &[(&str, &str)]) {
    let k = Kubectl::new(api, ADMIN);
    let (code, out, err) = k
        .run(
            &["exec", "-i", "web-0", "--", "cat"],
            env,
            Some(b"hello double\nsecond\n"),
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "hello double\nsecond\n"), "{err}");
    let (code, out, err) = k
        .run(&["exec", "web-0", "--", "echo", "hi", "there"], env, None)
        .await;
    assert_eq!((code, out.as_str()), (0, "hi there\n"), "{err}");
    let (code, _, err) = k
        .run(&["exec", "web-0", "--", "sh", "-c", "exit 3"], env, None)
        .await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = k.run(&["exec", "web-0", "--", "env"], env, None).await;
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("env: not found"), "{err}");
    // attach: the main process echoes stdin back, like `cat`.
    let (code, out, err) = k
        .run(&["attach", "-i", "web-0"], env, Some(b"attached\n"))
        .await;
    assert_eq!((code, out.as_str()), (0, "attached\n"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket() {
    bounded(async {
        let api = start(config()).await;
        exec_roundtrips(&api, &[]).await;
        let execs = find(&api, |r| r.path.ends_with("/exec"));
        assert_eq!(execs.len(), 4, "{execs:?}");
        for r in &execs {
            assert_eq!((r.method.as_str(), r.status), ("GET", 101), "{r:?}");
            assert_eq!(
                r.header("upgrade").unwrap_or_default().to_ascii_lowercase(),
                "websocket"
            );
            assert_eq!(
                r.header_values("sec-websocket-protocol"),
                ["v5.channel.k8s.io"]
            );
        }
        // exec is long-running: RequestReceived, ResponseStarted, ResponseComplete.
        let audit_id = &api
            .audit_events()
            .iter()
            .find(|e| e["objectRef"]["subresource"] == "exec")
            .unwrap()["auditID"]
            .clone();
        let stages: Vec<Value> = api
            .audit_events()
            .iter()
            .filter(|e| &e["auditID"] == audit_id)
            .map(|e| e["stage"].clone())
            .collect();
        assert_eq!(
            stages,
            ["RequestReceived", "ResponseStarted", "ResponseComplete"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy() {
    bounded(async {
        let api = start(config()).await;
        exec_roundtrips(&api, &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")]).await;
        let execs = find(&api, |r| r.path.ends_with("/exec"));
        assert_eq!(execs.len(), 4, "{execs:?}");
        for r in &execs {
            assert_eq!((r.method.as_str(), r.status), ("POST", 101), "{r:?}");
            assert_eq!(r.header("upgrade").as_deref(), Some("SPDY/3.1"));
            assert!(!r.header_values("x-stream-protocol-version").is_empty());
        }
    })
    .await;
}

async fn port_forward_roundtrip(env: &[(&str, &str)]) -> ApiServerDouble {
    let mut cfg = config();
    cfg.port_targets
        .insert(8080, hawser_tests::harness::upper_echo_server().await);
    let api = start(cfg).await;
    let k = Kubectl::new(&api, ADMIN);
    let (mut child, mut lines) = k.spawn(&["port-forward", "pod/web-0", ":8080"], env);
    let line = line_with(&mut lines, "Forwarding from 127.0.0.1:", RUN_LIMIT).await;
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    for round in 0..3 {
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
        // Half-close: the target sees EOF and the forwarded connection ends.
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest))
            .await
            .expect("no EOF")
            .unwrap();
        assert!(rest.is_empty());
    }
    let _ = child.kill().await;
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(
        !err.to_ascii_lowercase().contains("error"),
        "kubectl reported: {err}"
    );
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket() {
    bounded(async {
        let api = port_forward_roundtrip(&[]).await;
        let pf = find(&api, |r| r.path.ends_with("/portforward"));
        assert_eq!(pf.len(), 1, "{pf:?}");
        assert_eq!((pf[0].method.as_str(), pf[0].status), ("GET", 101));
        assert_eq!(
            pf[0].header("sec-websocket-protocol").as_deref(),
            Some("SPDY/3.1+portforward.k8s.io")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy() {
    bounded(async {
        let api = port_forward_roundtrip(&[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]).await;
        let pf = find(&api, |r| r.path.ends_with("/portforward"));
        assert_eq!(pf.len(), 1, "{pf:?}");
        assert_eq!((pf[0].method.as_str(), pf[0].status), ("POST", 101));
        assert_eq!(
            pf[0].header("x-stream-protocol-version").as_deref(),
            Some("portforward.k8s.io")
        );
    })
    .await;
}

// === raw HTTP ===

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let pem = ca_pem;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Sends one HTTP/1.1 request with exactly the given header lines.
async fn raw(api: &ApiServerDouble, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    raw_to(api.url(), api.ca_pem(), method, target, headers).await
}

/// `raw` without borrowing the double, for requests that outlive it.
async fn raw_to(
    url: String,
    ca_pem: String,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let addr = url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tls_client(&ca_pem, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf))
        .await
        .expect("reply timed out");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
    out
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn unauthorized_body_is_byte_exact_and_audited() {
    bounded(async {
        let api = start(config()).await;
        for auth in [None, Some("Bearer nope"), Some("Basic YTpi")] {
            let hdrs: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
            let r = raw(&api, "GET", PODS, &hdrs).await;
            assert_eq!(r.status, 401);
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(
                r.body,
                b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
            );
            assert_eq!(r.body.len(), 129);
        }
        // Failed authentication is audited once, at ResponseStarted.
        let events = api.audit_events();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e["stage"] == "ResponseStarted" && e["responseStatus"]["code"] == 401 && e["user"] == serde_json::json!({})));
        assert_eq!(events[1]["responseStatus"]["message"], "Authentication failed, attempted: bearer");
        // Headers are recorded as received.
        assert_eq!(api.requests()[1].header_values("authorization"), ["Bearer nope"]);
    })
    .await;
}

#[tokio::test]
async fn impersonation_groups_are_one_per_line_and_extra_keys_are_unescaped() {
    bounded(async {
        let api = start(config()).await;
        let r = raw(
            &api,
            "GET",
            PODS,
            &[
                ("Authorization", "Bearer admin-token"),
                ("Impersonate-User", "bob"),
                ("Impersonate-Group", "a, b"),
                ("Impersonate-Group", "c"),
                ("Impersonate-Uid", "bob-1"),
                ("Impersonate-Extra-Acme.com%2Fproject", "p1"),
                ("Impersonate-Extra-Acme.com%2Fproject", "p2"),
                ("Impersonate-Extra-Bad%zzKey", "x"),
                ("Audit-ID", "audit-123"),
                ("X-Forwarded-For", "10.1.2.3, 10.4.5.6"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("audit-id"), Some("audit-123"));
        assert_eq!(r.json()["kind"], "PodList");

        let req = find(&api, |r| r.path == PODS).pop().unwrap();
        assert_eq!(req.header_values("impersonate-group"), ["a, b", "c"]);
        assert_eq!(req.authenticated_user.as_ref().unwrap().username, "admin");
        let u = req.user.unwrap();
        assert_eq!(u.username, "bob");
        assert_eq!(u.uid, "bob-1");
        assert_eq!(u.groups, ["a, b", "c", "system:authenticated"]);
        assert_eq!(u.extra["acme.com/project"], ["p1", "p2"]);
        assert_eq!(
            u.extra["bad%zzkey"],
            ["x"],
            "malformed escapes keep the raw key"
        );

        let events: Vec<Value> = api
            .audit_events()
            .into_iter()
            .filter(|e| e["auditID"] == "audit-123")
            .collect();
        let stages: Vec<&str> = events
            .iter()
            .map(|e| e["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
        let done = &events[1];
        assert_eq!(done["user"]["username"], "admin");
        assert_eq!(done["impersonatedUser"]["username"], "bob");
        assert_eq!(
            done["impersonatedUser"]["extra"]["acme.com/project"],
            serde_json::json!(["p1", "p2"])
        );
        assert!(events[0].get("impersonatedUser").is_none());
        assert_eq!(done["verb"], "list");
        assert_eq!(done["requestURI"], PODS);
        assert_eq!(
            done["sourceIPs"],
            serde_json::json!(["10.1.2.3", "10.4.5.6", "127.0.0.1"])
        );
        assert_eq!(
            done["objectRef"],
            serde_json::json!({"resource": "pods", "namespace": "default", "apiVersion": "v1"})
        );
        assert_eq!(done["responseStatus"]["code"], 200);
        assert_eq!(done["level"], "Metadata");
        let ts = done["stageTimestamp"].as_str().unwrap();
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
    })
    .await;
}

#[tokio::test]
async fn impersonation_without_a_user_is_a_bad_request() {
    bounded(async {
        let api = start(config()).await;
        let r = raw(
            &api,
            "GET",
            PODS,
            &[("Authorization", "Bearer admin-token"), ("Impersonate-Group", "g1"), ("Impersonate-Extra-Scopes", "view")],
        )
        .await;
        assert_eq!(r.status, 400);
        let s = r.json();
        assert_eq!(s["reason"], "BadRequest");
        assert_eq!(
            s["message"],
            "requested [{Group  g1    } {UserExtra  view  authentication.k8s.io/v1  scopes}] without impersonating a user"
        );
    })
    .await;
}

#[tokio::test]
async fn impersonation_is_authorized_piece_by_piece() {
    bounded(async {
        let mut cfg = config();
        cfg.rules.push(Rule {
            subjects: vec!["group:devs".into()],
            verbs: vec!["impersonate".into()],
            api_groups: vec!["".into()],
            resources: vec!["users".into()],
            resource_names: vec!["bob".into()],
            ..Rule::default()
        });
        cfg.rules.push(Rule {
            subjects: vec!["user:alice".into()],
            verbs: vec!["impersonate".into()],
            api_groups: vec!["authentication.k8s.io".into()],
            resources: vec!["userextras/scopes".into()],
            resource_names: vec!["view".into()],
            ..Rule::default()
        });
        let api = start(cfg).await;
        let alice = ("Authorization", "Bearer alice-token");

        let r = raw(&api, "GET", PODS, &[alice, ("Impersonate-User", "carol")]).await;
        assert_eq!(r.status, 403);
        let s = r.json();
        assert_eq!(
            s["message"],
            r#"users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        assert_eq!(s["details"], serde_json::json!({"name": "carol", "kind": "users"}));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

        let r = raw(&api, "GET", PODS, &[alice, ("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "view")]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

        let r = raw(&api, "GET", PODS, &[alice, ("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "edit")]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json()["message"],
            r#"userextras.authentication.k8s.io "edit" is forbidden: User "alice" cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope"#
        );

        let r = raw(&api, "GET", PODS, &[alice, ("Impersonate-User", "system:serviceaccount:ns1:robot")]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json()["message"],
            r#"serviceaccounts "robot" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "ns1""#
        );
    })
    .await;
}

#[tokio::test]
async fn authorization_denials_use_the_real_messages() {
    bounded(async {
        let api = start(config()).await;
        let alice = ("Authorization", "Bearer alice-token");
        let r = raw(&api, "GET", "/logs/", &[alice]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.body,
            b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"alice\\\" cannot get path \\\"/logs/\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n"
        );
        let r = raw(&api, "POST", "/api/v1/namespaces/default/pods/web-0/exec?command=ls&stdout=true", &[alice]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json()["message"],
            r#"pods "web-0" is forbidden: User "alice" cannot create resource "pods/exec" in API group "" in the namespace "default""#
        );
        // Discovery is open to every authenticated user.
        for path in ["/version", "/api", "/apis", "/api/v1", "/healthz"] {
            assert_eq!(raw(&api, "GET", path, &[alice]).await.status, 200, "{path}");
        }
        assert_eq!(raw(&api, "GET", "/version", &[alice]).await.json()["minor"], "32");
        // Unknown paths are a NotFound Status (for users allowed to ask).
        let admin = ("Authorization", "Bearer admin-token");
        let r = raw(&api, "GET", "/apis/apps/v1/namespaces/default/deployments", &[admin]).await;
        assert_eq!((r.status, r.json()["reason"].clone()), (404, Value::from("NotFound")));
        let r = raw(&api, "GET", "/api/v1/namespaces/default/pods/nope", &[admin]).await;
        assert_eq!(r.json()["message"], r#"pods "nope" not found"#);
    })
    .await;
}

#[tokio::test]
async fn spdy_upgrade_without_protocol_version_is_rejected() {
    bounded(async {
        let api = start(config()).await;
        let r = raw(
            &api,
            "POST",
            "/api/v1/namespaces/default/pods/web-0/exec?command=ls&stdout=true",
            &[
                ("Authorization", "Bearer admin-token"),
                ("Connection", "Upgrade"),
                ("Upgrade", "SPDY/3.1"),
            ],
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "unable to upgrade: X-Stream-Protocol-Version is required\n"
        );
    })
    .await;
}

#[tokio::test]
async fn watch_streams_events_after_the_resource_version() {
    bounded(async {
        let api = start(config()).await;
        // web-0 and web-1 are resourceVersions 1 and 2; watch from 1 sees web-1
        // then the live event, and the stream ends at timeoutSeconds.
        let task = {
            let url = format!("{PODS}?watch=1&resourceVersion=1&timeoutSeconds=3");
            let api_ref = &api;
            async move {
                raw(
                    api_ref,
                    "GET",
                    &url,
                    &[("Authorization", "Bearer admin-token")],
                )
                .await
            }
        };
        let emitter = async {
            api.wait_for_request(|r| r.query.contains("watch=1"), Duration::from_secs(10))
                .await
                .expect("watch");
            api.emit_watch_event("MODIFIED", "default", "web-0");
        };
        let (r, ()) = tokio::join!(task, emitter);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        let events: Vec<Value> = String::from_utf8_lossy(&r.body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seen: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ADDED".to_string(), "web-1".to_string()),
                ("MODIFIED".to_string(), "web-0".to_string())
            ]
        );
        assert_eq!(events[1]["object"]["metadata"]["resourceVersion"], "3");
    })
    .await;
}

#[tokio::test]
async fn http2_is_served() {
    bounded(async {
        let api = start(config()).await;
        let addr = api.url().trim_start_matches("https://").to_string();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tls_client(&api.ca_pem(), &[b"h2", b"http/1.1"])
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{addr}/version"))
            .header("authorization", "Bearer admin-token")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(
            (resp.status().as_u16(), resp.version()),
            (200, http::Version::HTTP_2)
        );
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["gitVersion"], "v1.32.3");
    })
    .await;
}

/// Opens a WebSocket exec session offering `protocol`.
async fn ws_exec(
    api: &ApiServerDouble,
    query: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let addr = api.url().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tls_client(&api.ca_pem(), &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!("wss://{addr}/api/v1/namespaces/default/pods/web-0/exec?{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer admin-token".parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// Collects (channel, payload) messages until the server closes.
async fn ws_drain(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    >,
) -> (Vec<(u8, Vec<u8>)>, Option<u16>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut got = Vec::new();
    let mut close = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("ws stalled")
    {
        match msg.unwrap() {
            Message::Binary(b) => got.push((b[0], b[1..].to_vec())),
            Message::Close(frame) => close = frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    }
    (got, close)
}

#[tokio::test]
async fn websocket_exec_channels_v4_and_v5() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    bounded(async {
        let api = start(config()).await;
        // v4: output on channel 1, the Status on channel 3, normal closure.
        let mut ws = ws_exec(
            &api,
            "command=echo&command=hi&stdout=true&stderr=true",
            "v4.channel.k8s.io",
        )
        .await;
        let (got, close) = ws_drain(&mut ws).await;
        assert_eq!(
            got,
            [
                (1, b"hi\n".to_vec()),
                (3, br#"{"metadata":{},"status":"Success"}"#.to_vec())
            ]
        );
        assert_eq!(close, Some(1000));

        // v5: stdin closed with [255, 0] ends `cat`.
        let mut ws = ws_exec(
            &api,
            "command=cat&stdin=true&stdout=true",
            "v5.channel.k8s.io",
        )
        .await;
        ws.send(Message::Binary(bytes::Bytes::from_static(b"\x00abc")))
            .await
            .unwrap();
        ws.send(Message::Binary(bytes::Bytes::from_static(b"\xff\x00")))
            .await
            .unwrap();
        let (got, close) = ws_drain(&mut ws).await;
        assert_eq!(
            got,
            [
                (1, b"abc".to_vec()),
                (3, br#"{"metadata":{},"status":"Success"}"#.to_vec())
            ]
        );
        assert_eq!(close, Some(1000));

        // A non-zero exit is a NonZeroExitCode Status with the ExitCode cause.
        let mut ws = ws_exec(
            &api,
            "command=sh&command=-c&command=exit%2042&stdout=true",
            "v5.channel.k8s.io",
        )
        .await;
        let (got, _) = ws_drain(&mut ws).await;
        let status: Value = serde_json::from_slice(&got.last().unwrap().1).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(
            status["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "42"}])
        );
    })
    .await;
}

#[tokio::test]
async fn response_delay_applies_to_slow_paths_only() {
    bounded(async {
        let mut cfg = config();
        cfg.response_delay = Some(Duration::from_millis(400));
        let api = start(cfg).await;
        let admin = ("Authorization", "Bearer admin-token");
        let t = std::time::Instant::now();
        let r = raw(
            &api,
            "GET",
            "/api/v1/namespaces/default/pods/slow",
            &[admin],
        )
        .await;
        assert_eq!(r.status, 404);
        assert!(t.elapsed() >= Duration::from_millis(400));
        let t = std::time::Instant::now();
        assert_eq!(raw(&api, "GET", PODS, &[admin]).await.status, 200);
        assert!(t.elapsed() < Duration::from_millis(400));
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    bounded(async {
        let api = start(config()).await;
        let watch = tokio::spawn(raw_to(
            api.url(),
            api.ca_pem(),
            "GET",
            "/api/v1/namespaces/default/pods?watch=true",
            &[("Authorization", "Bearer admin-token")],
        ));
        api.wait_for_request(|r| r.query == "watch=true", Duration::from_secs(10))
            .await
            .expect("watch");
        api.shutdown();
        // `raw_to` reads until EOF, so it returns only because shutdown ended the stream.
        let r = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("watch still open")
            .unwrap();
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            body.contains(r#""type":"ADDED""#) && body.contains("web-1"),
            "{body}"
        );
    })
    .await;
}
