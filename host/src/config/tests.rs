//! Config tests: the examples in `config/` load, and bad files name file, key and reason.

use super::*;
use std::io::Write;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

const HUB: &str = r#"
state_dir = "state"
[tunnel]
listen = "127.0.0.1:0"
advertise = "hub.example.com:8443"
[front]
listen = "127.0.0.1:0"
server_names = ["hub.example.com"]
"#;

const AGENT: &str = r#"
cluster = "eu1"
[hub]
address = "hub.example.com:8443"
server_name = "hub.example.com"
ca_file = "ca.crt"
cert_file = "agent.crt"
key_file = "agent.key"
[apiserver]
server = "https://10.0.0.1:6443"
ca_file = "/etc/k8s/ca.crt"
token_file = "token"
"#;

#[test]
fn example_configs_load() {
    let hub = HubConfig::load(&example("hub.toml")).unwrap();
    assert_eq!(hub.front.max_header_bytes, 32768);
    assert_eq!(
        hub.tunnel.keepalive.detection_bound(),
        Duration::from_secs(30)
    );
    assert!(hub.state_dir.ends_with(".hawser/hub"));
    assert!(hub
        .plugins
        .as_ref()
        .unwrap()
        .ends_with("config/plugins-hub.toml"));
    assert!(!hub.allow_unauthenticated, "off unless set");
    let agent = AgentConfig::load(&example("agent.toml")).unwrap();
    assert_eq!(agent.hub.connections, 2);
    assert!(agent
        .plugins
        .as_ref()
        .unwrap()
        .ends_with("config/plugins-agent.toml"));
    assert!(!agent.allow_unauthenticated);
    assert_eq!(agent.backoff_initial, Duration::from_millis(100));
    assert!(
        agent.hub.ca_file.is_absolute(),
        "relative paths resolve against the file"
    );
}

#[test]
fn defaults_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubConfig::load(&write(&dir, "hub.toml", HUB)).unwrap();
    assert_eq!(hub.state_dir, dir.path().join("state"));
    assert_eq!(hub.front.request_timeout, Duration::from_secs(60));
    assert_eq!(hub.tunnel.advertise_host(), "hub.example.com");
    let agent = AgentConfig::load(&write(&dir, "agent.toml", AGENT)).unwrap();
    assert_eq!(agent.backoff_max, Duration::from_secs(30));
    assert_eq!(agent.keepalive.detection_bound(), Duration::from_secs(30));
    match agent.apiserver {
        ApiServerSource::Token {
            token_file,
            ca_file,
            ..
        } => {
            assert_eq!(token_file, dir.path().join("token"));
            assert_eq!(ca_file, PathBuf::from("/etc/k8s/ca.crt"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn in_cluster_reads_the_service_env() {
    let dir = tempfile::tempdir().unwrap();
    let text = AGENT.replace(
        "server = \"https://10.0.0.1:6443\"\nca_file = \"/etc/k8s/ca.crt\"\ntoken_file = \"token\"",
        "in_cluster = true",
    );
    let file = write(&dir, "agent.toml", &text);
    let env = |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_string()),
        "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
        _ => None,
    };
    let agent = AgentConfig::load_with_env(&file, env).unwrap();
    match agent.apiserver {
        ApiServerSource::Token {
            server, token_file, ..
        } => {
            assert_eq!(server, "https://10.96.0.1:443");
            assert!(token_file.ends_with("serviceaccount/token"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = AgentConfig::load_with_env(&file, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("apiserver.in_cluster") && err.contains("KUBERNETES_SERVICE_HOST"),
        "{err}"
    );
}

#[test]
fn errors_name_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str, &str); 13] = [
        (
            "hub",
            "state_dir = \"s\"\nbogus = 1\n",
            "bogus",
            "unknown field",
        ),
        (
            "hub",
            &HUB.replace("127.0.0.1:0\"\nadvertise", "nowhere\"\nadvertise"),
            "tunnel.listen",
            "not an IP:port",
        ),
        (
            "hub",
            &HUB.replace("hub.example.com:8443", "hub.example.com"),
            "tunnel.advertise",
            "host:port",
        ),
        (
            "hub",
            &HUB.replace("[\"hub.example.com\"]", "[]"),
            "front.server_names",
            "at least one",
        ),
        (
            "hub",
            &format!("registry_poll = \"5s\"\n{HUB}"),
            "registry_poll",
            "at most 1s",
        ),
        (
            "hub",
            &format!("{HUB}header_timeout = \"0s\"\n"),
            "front.header_timeout",
            "above zero",
        ),
        (
            "hub",
            &format!("{HUB}max_connections = 0\n"),
            "front.max_connections",
            "between 1 and",
        ),
        (
            "hub",
            &HUB.replace("[front]", "handshake_timeout = \"0s\"\n[front]"),
            "tunnel.handshake_timeout",
            "above zero",
        ),
        (
            "hub",
            &format!("{HUB}[credentials]\nreload_interval = \"0s\"\n"),
            "credentials.reload_interval",
            "above zero",
        ),
        (
            "agent",
            &AGENT.replace("cluster = \"eu1\"", "cluster = \"EU/1\""),
            "cluster",
            "cluster name",
        ),
        (
            "agent",
            &AGENT.replace("[apiserver]", "[apiserver]\nin_cluster = true"),
            "apiserver",
            "exactly one",
        ),
        (
            "agent",
            &AGENT.replace("https://10.0.0.1:6443", "http://10.0.0.1:6443"),
            "apiserver.server",
            "https://",
        ),
        (
            "agent",
            &format!("{AGENT}response_header_timeout = \"0s\"\n"),
            "apiserver.response_header_timeout",
            "above zero",
        ),
    ];
    for (role, text, key, reason) in cases {
        let file = write(&dir, &format!("{role}.toml"), text);
        let err = match role {
            "hub" => HubConfig::load(&file).unwrap_err().to_string(),
            _ => AgentConfig::load(&file).unwrap_err().to_string(),
        };
        assert!(
            err.contains(&file.display().to_string()),
            "no file in: {err}"
        );
        assert!(err.contains(key), "no key `{key}` in: {err}");
        assert!(
            err.to_lowercase().contains(&reason.to_lowercase()),
            "no reason `{reason}` in: {err}"
        );
    }
}

#[test]
fn missing_file_is_an_error() {
    let err = HubConfig::load(Path::new("/nonexistent/hub.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/hub.toml") && err.contains("cannot read"),
        "{err}"
    );
}
