//! Kubeconfig and `ExecCredential` documents for Hawser credentials.
//!
//! One kubeconfig context per cluster, each pointing at the hub with the cluster
//! as a path prefix (`<hub>/clusters/<name>`), all sharing one user. Names are
//! prefixed `hawser-` for clusters and users so the file merges into an existing
//! kubeconfig without clobbering entries; contexts are the bare cluster names.

use std::path::PathBuf;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;

use super::token::SecretToken;
use crate::files::rfc3339;

/// The exec credential API version kubectl and Hawser speak.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// How the kubeconfig's user authenticates.
#[derive(Debug, Clone)]
pub enum KubeconfigAuth {
    /// A fixed access token (`user.token`).
    Token(SecretToken),
    /// The exec plugin: kubectl runs `<command> credential exec --refresh-file
    /// <refresh_file> --hub <hub_url> --ca-file <ca_file>` for each new token.
    Exec {
        /// Path of the `hawser` binary on the user's machine.
        command: PathBuf,
        /// The file holding the refresh credential.
        refresh_file: PathBuf,
        /// The hub CA file the plugin verifies the hub with.
        ca_file: PathBuf,
    },
}

#[derive(Serialize)]
struct Config<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry<'a>>>,
    contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context", skip_serializing_if = "Option::is_none")]
    current_context: Option<String>,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterBody,
}

#[derive(Serialize)]
struct ClusterBody {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct UserEntry<'a> {
    user: UserBody<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserBody<'a> {
    Token { token: &'a str },
    Exec { exec: ExecBody },
}

#[derive(Serialize)]
struct ExecBody {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    command: String,
    args: Vec<String>,
    #[serde(rename = "interactiveMode")]
    interactive_mode: &'static str,
    #[serde(rename = "provideClusterInfo")]
    provide_cluster_info: bool,
    #[serde(rename = "installHint")]
    install_hint: &'static str,
}

#[derive(Serialize)]
struct ContextEntry {
    context: ContextBody,
}

#[derive(Serialize)]
struct ContextBody {
    cluster: String,
    user: String,
}

/// A kubeconfig (YAML) for `user` reaching `clusters` through the hub at
/// `hub_url`, trusting `ca_pem`. The current context is the first cluster.
/// The result holds the token in `Token` mode: write it 0600.
pub fn kubeconfig(
    hub_url: &str,
    ca_pem: &str,
    user: &str,
    clusters: &[String],
    auth: KubeconfigAuth,
) -> String {
    let hub_url = hub_url.trim_end_matches('/');
    let user_name = format!("hawser-{user}");
    let body = match &auth {
        KubeconfigAuth::Token(token) => UserBody::Token { token: token.expose() },
        KubeconfigAuth::Exec { command, refresh_file, ca_file } => UserBody::Exec {
            exec: ExecBody {
                api_version: EXEC_API_VERSION,
                command: command.display().to_string(),
                args: vec![
                    "credential".into(),
                    "exec".into(),
                    "--refresh-file".into(),
                    refresh_file.display().to_string(),
                    "--hub".into(),
                    hub_url.to_string(),
                    "--ca-file".into(),
                    ca_file.display().to_string(),
                ],
                interactive_mode: "Never",
                provide_cluster_info: false,
                install_hint: "install the hawser binary and ask the hub operator for a refresh credential (`hawser credential issue --exec`)",
            },
        },
    };
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: clusters
            .iter()
            .map(|c| Named {
                name: format!("hawser-{c}"),
                value: ClusterEntry {
                    cluster: ClusterBody {
                        server: format!("{hub_url}/clusters/{c}"),
                        certificate_authority_data: STANDARD.encode(ca_pem),
                    },
                },
            })
            .collect(),
        users: vec![Named {
            name: user_name.clone(),
            value: UserEntry { user: body },
        }],
        contexts: clusters
            .iter()
            .map(|c| Named {
                name: c.clone(),
                value: ContextEntry {
                    context: ContextBody {
                        cluster: format!("hawser-{c}"),
                        user: user_name.clone(),
                    },
                },
            })
            .collect(),
        current_context: clusters.first().cloned(),
    };
    // Plain strings, lists and booleans always serialize.
    serde_yaml::to_string(&config).expect("kubeconfig serializes")
}

/// The `ExecCredential` an exec plugin prints: `token`, valid until `expiry`.
pub fn exec_credential(token: &SecretToken, expiry: SystemTime) -> String {
    serde_json::json!({
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": {"token": token.expose(), "expirationTimestamp": rfc3339(expiry)},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn clusters() -> Vec<String> {
        vec!["eu1".into(), "us2".into()]
    }

    #[test]
    fn token_kubeconfig_has_a_context_per_cluster() {
        let token = SecretToken::new("aaa.bbb.ccc".into());
        let text = kubeconfig(
            "https://hub.example.com:6443/",
            CA,
            "alice",
            &clusters(),
            KubeconfigAuth::Token(token),
        );
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "eu1");
        assert_eq!(doc["clusters"][0]["name"], "hawser-eu1");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://hub.example.com:6443/clusters/eu1"
        );
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "https://hub.example.com:6443/clusters/us2"
        );
        let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .expect("ca data");
        assert_eq!(STANDARD.decode(ca).expect("base64"), CA.as_bytes());
        assert_eq!(doc["contexts"][1]["name"], "us2");
        assert_eq!(doc["contexts"][1]["context"]["cluster"], "hawser-us2");
        assert_eq!(doc["contexts"][1]["context"]["user"], "hawser-alice");
        assert_eq!(doc["users"][0]["name"], "hawser-alice");
        assert_eq!(doc["users"][0]["user"]["token"], "aaa.bbb.ccc");
    }

    #[test]
    fn exec_kubeconfig_runs_hawser_credential_exec() {
        let auth = KubeconfigAuth::Exec {
            command: "/usr/local/bin/hawser".into(),
            refresh_file: "/home/alice/.hawser/refresh".into(),
            ca_file: "/home/alice/.hawser/ca.crt".into(),
        };
        let text = kubeconfig("https://hub:6443", CA, "alice", &clusters(), auth);
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
        let exec = &doc["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], EXEC_API_VERSION);
        assert_eq!(exec["command"], "/usr/local/bin/hawser");
        assert_eq!(exec["interactiveMode"], "Never");
        assert_eq!(exec["provideClusterInfo"], false);
        let args: Vec<&str> = exec["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(
            args,
            [
                "credential",
                "exec",
                "--refresh-file",
                "/home/alice/.hawser/refresh",
                "--hub",
                "https://hub:6443",
                "--ca-file",
                "/home/alice/.hawser/ca.crt"
            ]
        );
        assert!(doc["users"][0]["user"]["token"].is_null());
    }

    #[test]
    fn exec_credential_has_the_v1_shape() {
        let expiry = crate::files::from_unix(1_700_000_000) + Duration::from_millis(500);
        let text = exec_credential(&SecretToken::new("t0k".into()), expiry);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": "t0k", "expirationTimestamp": "2023-11-14T22:13:20Z"},
            })
        );
    }
}
