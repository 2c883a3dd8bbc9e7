//! Hub and agent processes from the real binary.

use super::{eventually, hawser_bin};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Captured stderr of a child process.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<String>>);

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle`.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        eventually(timeout, || async {
            self.text().contains(needle).then_some(())
        })
        .await
        .is_some()
    }

    fn follow(
        &self,
        stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        echo: &'static str,
    ) {
        let logs = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var("HAWSER_TEST_ECHO").is_ok() {
                    eprintln!("[{echo}] {line}");
                }
                let mut text = logs.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
}

/// Settings for a hub under test.
#[derive(Clone)]
pub struct HubOpts {
    /// Tunnel listen address (port 0 unless restarting on a known port).
    pub tunnel: String,
    /// Front listen address.
    pub front: String,
    /// Extra lines for `[tunnel]`.
    pub tunnel_extra: String,
    /// Extra lines for `[front]`.
    pub front_extra: String,
    /// Top-level lines (for example `plugins = "..."`).
    pub top_extra: String,
    /// `allow_unauthenticated`: on by default, so tests without a credential stage can
    /// send requests; tests of the refusal turn it off.
    pub allow_unauthenticated: bool,
}

impl Default for HubOpts {
    fn default() -> Self {
        HubOpts {
            tunnel: "127.0.0.1:0".into(),
            front: "127.0.0.1:0".into(),
            tunnel_extra: "keepalive_interval = \"500ms\"\nkeepalive_timeout = \"1s\"\n".into(),
            front_extra: String::new(),
            top_extra: String::new(),
            allow_unauthenticated: true,
        }
    }
}

/// A running hub process.
pub struct HubProc {
    child: Child,
    /// Front listener.
    pub front: SocketAddr,
    /// Tunnel listener.
    pub tunnel: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The hub's directory (config and state).
    pub dir: PathBuf,
    /// The hub's stderr.
    pub logs: Logs,
}

fn announce_addr(v: &serde_json::Value, key: &str) -> SocketAddr {
    v[key]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| panic!("no `{key}` in {v}"))
}

async fn spawn(args: &[&str]) -> (Child, serde_json::Value, Logs) {
    let mut child = Command::new(hawser_bin())
        .args(args)
        .env(
            "HAWSER_LOG",
            std::env::var("HAWSER_TEST_LOG").unwrap_or_else(|_| "info,hawser=debug".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hawser");
    let logs = Logs::default();
    logs.follow(child.stderr.take().unwrap(), "hawser");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line()).await;
    let line = match line {
        Ok(Ok(Some(line))) => line,
        other => panic!(
            "hawser {args:?} did not announce its listeners: {other:?}\n{}",
            logs.text()
        ),
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("announce line is JSON");
    (child, v, logs)
}

impl HubProc {
    /// Writes a config into `dir` and starts a hub.
    pub async fn start(dir: &Path, opts: &HubOpts) -> HubProc {
        std::fs::create_dir_all(dir).unwrap();
        let config = format!(
            "{}allow_unauthenticated = {}\nstate_dir = \"state\"\nregistry_poll = \"100ms\"\n[tunnel]\nlisten = \"{}\"\nadvertise = \"127.0.0.1:8443\"\n{}\n[front]\nlisten = \"{}\"\nserver_names = [\"127.0.0.1\", \"localhost\"]\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            opts.top_extra,
            opts.allow_unauthenticated,
            opts.tunnel,
            opts.tunnel_extra,
            opts.front,
            opts.front_extra
        );
        std::fs::write(dir.join("hub.toml"), config).unwrap();
        let cfg = dir.join("hub.toml");
        let (child, v, logs) = spawn(&["hub", "--config", cfg.to_str().unwrap()]).await;
        HubProc {
            child,
            front: announce_addr(&v, "front"),
            tunnel: announce_addr(&v, "tunnel"),
            admin: announce_addr(&v, "admin"),
            dir: dir.to_path_buf(),
            logs,
        }
    }

    /// The hub's config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("hub.toml")
    }

    /// The hub CA in PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/ca.crt")).unwrap()
    }

    /// Runs `hawser cluster ARGS --config hub.toml` and returns (success, stdout+stderr).
    pub fn cluster_cmd(&self, args: &[&str]) -> (bool, String) {
        cluster_cmd(&self.config(), args)
    }

    /// Registers a cluster; returns its bundle directory.
    pub async fn register(&self, name: &str) -> PathBuf {
        let out = self.dir.join(format!("bundle-{name}"));
        let (ok, text) = self.cluster_cmd(&[
            "register",
            name,
            "--region",
            "eu-west",
            "--zone",
            "eu-west-1a",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "register failed: {text}");
        self.wait_registered(name).await;
        out
    }

    /// Waits until the running hub has reloaded a registry that contains `name`.
    pub async fn wait_registered(&self, name: &str) {
        let client = super::client::front_client(&self.ca_pem());
        let path = format!("/clusters/{name}/version");
        let loaded = eventually(Duration::from_secs(10), || async {
            (super::client::get(&client, self.front, &path, &[])
                .await
                .status
                != 404)
                .then_some(())
        })
        .await;
        assert!(
            loaded.is_some(),
            "hub never picked up cluster {name}: {}",
            self.logs.text()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Live tunnels as the hub's admin endpoint reports them.
    pub async fn tunnels(&self) -> Vec<serde_json::Value> {
        let body = super::client::plain_get(self.admin, "/tunnels")
            .await
            .unwrap_or_default();
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
    }

    /// Waits until the hub has exactly `n` tunnels for `cluster`.
    pub async fn wait_tunnels(&self, cluster: &str, n: usize, timeout: Duration) -> bool {
        eventually(timeout, || async {
            let count = self
                .tunnels()
                .await
                .iter()
                .filter(|t| t["cluster"] == cluster)
                .count();
            (count == n).then_some(())
        })
        .await
        .is_some()
    }

    /// Kills the process (no graceful shutdown).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM (a graceful shutdown) and returns without waiting.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// Runs `hawser cluster ...` against a hub config.
pub fn cluster_cmd(config: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(hawser_bin())
        .arg("cluster")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run hawser cluster");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Where an agent reaches its API server.
pub struct ApiTarget {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// CA of the API server.
    pub ca_pem: String,
    /// The agent's service-account token.
    pub token: String,
}

/// A running agent process.
pub struct AgentProc {
    child: Child,
    /// The agent's admin listener.
    pub admin: SocketAddr,
    /// The agent's stderr.
    pub logs: Logs,
    /// The agent config used.
    pub config: PathBuf,
}

/// Rewrites a bundle's agent.toml for a test: the hub address, the API server, and
/// fast tunnel timings; `extra_tunnel` overrides `[tunnel]` lines.
pub fn agent_config(
    bundle: &Path,
    name: &str,
    hub_tunnel: SocketAddr,
    api: &ApiTarget,
    connections: usize,
    tunnel: &str,
) -> PathBuf {
    let generated = std::fs::read_to_string(bundle.join("agent.toml")).unwrap();
    let dir = bundle.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("apiserver-ca.crt"), &api.ca_pem).unwrap();
    std::fs::write(dir.join("token"), &api.token).unwrap();
    // Keep cluster/region/zone and the [hub] file names from the generated file, but
    // not its plugin chain (its .wasm paths are the pod's): tests without an agent
    // chain forward under the agent's own credential, the others name their own.
    let mut out = String::from("allow_unauthenticated = true\n");
    let mut section = String::new();
    for line in generated.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
            if section == "[hub]" {
                out.push_str("[hub]\n");
            }
            continue;
        }
        match section.as_str() {
            "" if t.starts_with("plugins") => {}
            "" => out.push_str(&format!("{line}\n")),
            "[hub]" if t.starts_with("address") => {
                out.push_str(&format!("address = \"{hub_tunnel}\"\n"))
            }
            "[hub]" if t.starts_with("connections") => {
                out.push_str(&format!("connections = {connections}\n"))
            }
            "[hub]"
                if t.starts_with("ca_file")
                    || t.starts_with("cert_file")
                    || t.starts_with("key_file") =>
            {
                let (k, v) = t.split_once('=').unwrap();
                let file = v.split('#').next().unwrap().trim().trim_matches('"');
                out.push_str(&format!("{} = \"../{file}\"\n", k.trim()));
            }
            "[hub]" => out.push_str(&format!("{line}\n")),
            _ => {}
        }
    }
    out.push_str(&format!("[tunnel]\n{tunnel}\n"));
    out.push_str(&format!(
        "[apiserver]\nserver = \"{}\"\nca_file = \"apiserver-ca.crt\"\ntoken_file = \"token\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        api.url
    ));
    let path = dir.join("agent.toml");
    std::fs::write(&path, out).unwrap();
    path
}

/// Fast timings for tests: sub-second keepalive and backoff.
pub const FAST_TUNNEL: &str = "keepalive_interval = \"500ms\"\nkeepalive_timeout = \"1s\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n";

impl AgentProc {
    /// Starts an agent from a config file.
    pub async fn start(config: &Path) -> AgentProc {
        let (child, v, logs) = spawn(&["agent", "--config", config.to_str().unwrap()]).await;
        AgentProc {
            child,
            admin: announce_addr(&v, "admin"),
            logs,
            config: config.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Kills the process with SIGKILL.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
