//! Running the real kubectl against the hub.

use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A kubeconfig and a fresh discovery cache for one test.
pub struct Kubectl {
    /// The kubeconfig file.
    pub kubeconfig: PathBuf,
    /// kubectl's cache directory.
    pub cache_dir: PathBuf,
}

impl Kubectl {
    /// Writes a kubeconfig whose server is `https://127.0.0.1:PORT/clusters/<cluster>`.
    pub fn new(
        dir: &Path,
        front: std::net::SocketAddr,
        cluster: &str,
        ca_pem: &str,
        token: &str,
    ) -> Kubectl {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {
                "server": format!("https://127.0.0.1:{}/clusters/{cluster}", front.port()),
                "certificate-authority-data": ca}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "user", "namespace": "default"}}],
            "current-context": cluster,
        });
        let kubeconfig = dir.join(format!("kubeconfig-{cluster}"));
        std::fs::write(&kubeconfig, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let cache_dir = dir.join(format!("kube-cache-{cluster}"));
        Kubectl {
            kubeconfig,
            cache_dir,
        }
    }

    /// A kubectl command with the kubeconfig and cache dir set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to completion (bounded); returns (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .expect("kubectl timed out")
            .expect("run kubectl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts kubectl in the background with piped stdin/stdout/stderr.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn kubectl")
    }
}
