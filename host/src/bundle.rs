//! `hawser cluster register/list/remove`: registering an external cluster and
//! writing the bundle an operator applies inside it (agent config, agent
//! certificate and key, the pinned hub CA, and a Kubernetes manifest).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::pki::{HubCa, IssuedCert, PkiError, Validity};
use crate::registry::{
    create_private_dir, dns1123_label_problem, now_rfc3339, validate_cluster_name, write_atomic,
    ClusterRecord, Registry, RegistryError,
};

/// The namespace the agent is deployed into unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "hawser-system";

const AGENT_TOML: &str = "agent.toml";
pub(crate) const AGENT_CRT: &str = "agent.crt";
pub(crate) const AGENT_KEY: &str = "agent.key";
pub(crate) const CA_CRT: &str = "ca.crt";
const MANIFEST: &str = "manifest.yaml";
const MOUNT_DIR: &str = "/etc/hawser";
const ADMIN_PORT: u16 = 8081;
/// The non-root user the agent runs as (the distroless "nonroot" uid).
const AGENT_UID: u32 = 65532;

/// Why registering, listing or removing a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The hub CA could not be loaded, created or used.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The registry could not be read, changed or saved.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A request field is unusable.
    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    /// A bundle file already exists; overwriting it could destroy another cluster's key.
    #[error("{path}: already exists; refusing to overwrite an existing bundle")]
    Exists { path: PathBuf },
    /// A bundle file or directory could not be written.
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Everything `hawser cluster register` needs.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// The hub's state directory (CA and registry).
    pub state_dir: PathBuf,
    /// The cluster name (a DNS-1123 label).
    pub name: String,
    /// Locality: region.
    pub region: Option<String>,
    /// Locality: zone.
    pub zone: Option<String>,
    /// `host:port` agents dial (the hub's tunnel listener).
    pub hub_address: String,
    /// The name the hub's tunnel certificate must carry.
    pub hub_server_name: String,
    /// Where the bundle is written (created 0700).
    pub out_dir: PathBuf,
    /// The agent container image.
    pub image: String,
    /// Lifetime of the agent certificate.
    pub validity_days: u32,
    /// Namespace for the agent (usually [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// User-extra keys the agent may impersonate (`Impersonate-Extra-<key>`); each
    /// becomes an RBAC resource `userextras/<key>`. Empty: no extras at all.
    pub user_extra_keys: Vec<String>,
}

/// What `register_cluster` did.
#[derive(Debug)]
pub struct RegisterOutcome {
    /// The registry record that was saved.
    pub record: ClusterRecord,
    /// The bundle files that were written.
    pub files: Vec<PathBuf>,
}

/// Registers a cluster: validates the request, creates the CA on first use,
/// refuses an existing name, issues the agent certificate, writes the bundle
/// into `out_dir` (created 0700; `agent.key` and `manifest.yaml`, which embeds
/// the key, are 0600), then saves the registry atomically.
pub fn register_cluster(req: &RegisterRequest) -> Result<RegisterOutcome, BundleError> {
    // Check everything that can be checked before anything is created.
    validate_request(req)?;
    let ca = HubCa::load_or_create(&req.state_dir)?;
    let mut registry = Registry::load(&req.state_dir)?;
    if registry.get(&req.name).is_some() {
        return Err(RegistryError::Exists {
            name: req.name.clone(),
        }
        .into());
    }
    let names = [AGENT_TOML, AGENT_CRT, AGENT_KEY, CA_CRT, MANIFEST];
    let paths: Vec<PathBuf> = names.iter().map(|n| req.out_dir.join(n)).collect();
    for path in &paths {
        let exists = path.try_exists().map_err(|source| BundleError::Write {
            path: path.clone(),
            source,
        })?;
        if exists {
            return Err(BundleError::Exists { path: path.clone() });
        }
    }
    let issued = ca.issue_agent(&req.name, Validity::days_from_now(req.validity_days))?;
    let record = ClusterRecord {
        name: req.name.clone(),
        region: req.region.clone(),
        zone: req.zone.clone(),
        certs: vec![issued.fingerprint],
        registered_at: now_rfc3339(),
    };
    registry.insert(record.clone())?;
    create_private_dir(&req.out_dir).map_err(|source| BundleError::Write {
        path: req.out_dir.clone(),
        source,
    })?;
    let contents = bundle_contents(req, &ca, &issued);
    let mut written = Vec::new();
    for (path, (text, mode)) in paths.iter().zip(contents.iter()) {
        if let Err(source) = write_atomic(path, text.as_bytes(), *mode) {
            remove_files(&written);
            return Err(BundleError::Write {
                path: path.clone(),
                source,
            });
        }
        written.push(path.clone());
    }
    // The registry is saved last: if the bundle could not be written, the hub
    // never admits a certificate nobody holds.
    if let Err(e) = registry.save(&req.state_dir) {
        remove_files(&written);
        return Err(e.into());
    }
    tracing::info!(cluster = %req.name, fingerprint = %issued.fingerprint, out_dir = %req.out_dir.display(), "registered cluster");
    Ok(RegisterOutcome {
        record,
        files: written,
    })
}

/// Removes a cluster from the registry; its agents are refused from then on.
pub fn remove_cluster(state_dir: &Path, name: &str) -> Result<ClusterRecord, BundleError> {
    let mut registry = Registry::load(state_dir)?;
    let record = registry.remove(name)?;
    registry.save(state_dir)?;
    tracing::info!(cluster = %name, "removed cluster");
    Ok(record)
}

/// All registered clusters, ordered by name.
pub fn list_clusters(state_dir: &Path) -> Result<Vec<ClusterRecord>, BundleError> {
    Ok(Registry::load(state_dir)?.clusters().cloned().collect())
}

fn validate_request(req: &RegisterRequest) -> Result<(), BundleError> {
    let invalid = |field, reason: String| BundleError::InvalidRequest { field, reason };
    validate_cluster_name(&req.name)?;
    if let Some(reason) = dns1123_label_problem(&req.namespace) {
        return Err(invalid(
            "namespace",
            format!("{:?} {reason}", req.namespace),
        ));
    }
    for (field, value) in [("region", &req.region), ("zone", &req.zone)] {
        if let Some(v) = value {
            if v.is_empty() || v.chars().any(char::is_control) {
                return Err(invalid(
                    field,
                    format!("{v:?} must be non-empty, without control characters"),
                ));
            }
        }
    }
    let port_ok = req
        .hub_address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok
        || req
            .hub_address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "hub address",
            format!("{:?} is not host:port", req.hub_address),
        ));
    }
    for (field, value) in [
        ("hub server name", &req.hub_server_name),
        ("image", &req.image),
    ] {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                field,
                format!("{value:?} must be non-empty, without spaces"),
            ));
        }
    }
    if req.validity_days == 0 {
        return Err(invalid("validity", "must be at least one day".into()));
    }
    for key in &req.user_extra_keys {
        // RBAC matches `userextras/<key>` literally: a '*' would read as a wildcard
        // that RBAC does not honour here, and blanks cannot appear in a header name.
        if key.is_empty()
            || key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '*')
        {
            return Err(invalid(
                "user extra key",
                format!("{key:?} must be non-empty, without spaces, control characters or '*'"),
            ));
        }
    }
    Ok(())
}

/// The RBAC resources for user-extra impersonation: `userextras/<key>` per key,
/// lower-cased (the API server lower-cases the key it reads from the
/// `Impersonate-Extra-<key>` header before authorizing it), sorted, without duplicates.
fn user_extra_resources(keys: &[String]) -> Vec<String> {
    let mut out: Vec<String> = keys
        .iter()
        .map(|k| format!("userextras/{}", k.to_lowercase()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The bundle files' text and mode, in the order agent.toml, agent.crt,
/// agent.key, ca.crt, manifest.yaml.
fn bundle_contents(req: &RegisterRequest, ca: &HubCa, issued: &IssuedCert) -> [(String, u32); 5] {
    let key = issued.key_pem.expose();
    [
        (agent_toml(req), 0o644),
        (issued.cert_pem.clone(), 0o644),
        (key.to_string(), 0o600),
        (ca.cert_pem().to_string(), 0o644),
        // The manifest embeds the key in its Secret, so it is as secret as the key.
        (
            manifest_yaml(req, ca.cert_pem(), &issued.cert_pem, key),
            0o600,
        ),
    ]
}

pub(crate) fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// The agent's TOML config. Paths are relative to the file's directory, so it
/// works both next to the bundle files and mounted from the Secret.
pub fn agent_toml(req: &RegisterRequest) -> String {
    let q = toml_str;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Hawser agent for cluster {} (generated by `hawser cluster register`).",
        q(&req.name)
    );
    let _ = writeln!(out, "cluster = {}", q(&req.name));
    if let Some(region) = &req.region {
        let _ = writeln!(out, "region = {}", q(region));
    }
    if let Some(zone) = &req.zone {
        let _ = writeln!(out, "zone = {}", q(zone));
    }
    let _ = write!(
        out,
        "
[hub]
address = {address}   # the hub's tunnel listener
server_name = {server_name}    # name the hub's certificate must carry
ca_file = \"{CA_CRT}\"                 # the pinned hub CA
cert_file = \"{AGENT_CRT}\"
key_file = \"{AGENT_KEY}\"
connections = 1                     # tunnels this process keeps open

[tunnel]
keepalive_interval = \"10s\"
keepalive_timeout = \"20s\"
backoff_initial = \"100ms\"
backoff_max = \"30s\"

[apiserver]
in_cluster = true                   # service-account token and CA from /var/run/secrets/kubernetes.io/serviceaccount

[admin]
listen = \"0.0.0.0:{ADMIN_PORT}\"             # /livez, /readyz, /metrics
",
        address = q(&req.hub_address),
        server_name = q(&req.hub_server_name),
    );
    out
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The Kubernetes manifest: Namespace, ServiceAccount, ClusterRole (impersonation
/// only), ClusterRoleBinding, Secret (the bundle files) and Deployment, as
/// multi-document YAML.
pub fn manifest_yaml(req: &RegisterRequest, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let ns = yaml_str(&req.namespace);
    let agent_toml = agent_toml(req);
    let labels = |indent: usize| {
        let pad = " ".repeat(indent);
        format!(
            "{pad}app.kubernetes.io/name: hawser-agent\n{pad}hawser.io/cluster: {}\n",
            yaml_str(&req.name)
        )
    };
    // Pods roll when the config or certificate changes, e.g. on re-apply after rotation.
    let mut hasher = Sha256::new();
    for part in [agent_toml.as_str(), cert_pem, ca_pem] {
        hasher.update(part.as_bytes());
    }
    let checksum: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret_entry = |name: &str, body: &str| format!("  {name}: {}", yaml_block(body, 4));
    let mut out = String::new();
    let _ = write!(
        out,
        "# Hawser agent for cluster {name} (generated by `hawser cluster register`).
# Contains the agent's private key: keep this file secret.
---
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
{l4}---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: hawser-agent
  namespace: {ns}
  labels:
{l4}---
# The agent forwards hub requests as the hub's end users: it may impersonate and nothing else.
# User extras only under the keys named at registration (`--user-extra-key`).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: hawser-agent-impersonator
  labels:
{l4}rules:
  - apiGroups: [\"\"]
    resources: [\"users\", \"groups\", \"serviceaccounts\"]
    verbs: [\"impersonate\"]
  - apiGroups: [\"authentication.k8s.io\"]
    resources: [{auth_resources}]
    verbs: [\"impersonate\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: hawser-agent-impersonator
  labels:
{l4}roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: hawser-agent-impersonator
subjects:
  - kind: ServiceAccount
    name: hawser-agent
    namespace: {ns}
---
apiVersion: v1
kind: Secret
metadata:
  name: hawser-agent
  namespace: {ns}
  labels:
{l4}type: Opaque
stringData:
{toml}{crt}{key}{ca}---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hawser-agent
  namespace: {ns}
  labels:
{l4}spec:
  replicas: 2
  selector:
    matchLabels:
{l6}  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
{l8}      annotations:
        hawser.io/config-sha256: \"{checksum}\"
    spec:
      serviceAccountName: hawser-agent
      automountServiceAccountToken: true
      securityContext:
        runAsNonRoot: true
        runAsUser: {AGENT_UID}
        runAsGroup: {AGENT_UID}
        fsGroup: {AGENT_UID}
        seccompProfile:
          type: RuntimeDefault
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
{l20}      containers:
        - name: agent
          image: {image}
          args: [\"agent\", \"--config\", \"{MOUNT_DIR}/{AGENT_TOML}\"]
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
          ports:
            - name: admin
              containerPort: {ADMIN_PORT}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /livez
              port: {ADMIN_PORT}
          readinessProbe:
            httpGet:
              path: /readyz
              port: {ADMIN_PORT}
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              cpu: 500m
              memory: 256Mi
          securityContext:
            runAsNonRoot: true
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities:
              drop: [\"ALL\"]
          volumeMounts:
            - name: config
              mountPath: {MOUNT_DIR}
              readOnly: true
      volumes:
        - name: config
          secret:
            secretName: hawser-agent
            defaultMode: 288 # 0440: readable by the agent's group (fsGroup) only
",
        name = yaml_str(&req.name),
        l4 = labels(4),
        l6 = labels(6),
        l8 = labels(8),
        l20 = labels(20),
        toml = secret_entry(AGENT_TOML, &agent_toml),
        crt = secret_entry(AGENT_CRT, cert_pem),
        key = secret_entry(AGENT_KEY, key_pem),
        ca = secret_entry(CA_CRT, ca_pem),
        image = yaml_str(&req.image),
        auth_resources = std::iter::once("uids".to_string())
            .chain(user_extra_resources(&req.user_extra_keys))
            .map(|r| yaml_str(&r))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out
}

/// A YAML double-quoted scalar (valid for any string).
pub(crate) fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value followed by its newline: a literal block (`|`) indented by `indent`
/// when the text allows one, which keeps PEM readable; a quoted scalar otherwise.
pub(crate) fn yaml_block(s: &str, indent: usize) -> String {
    let literal_ok = s.ends_with('\n')
        && !s.ends_with("\n\n")
        && !s.starts_with([' ', '\t', '\n'])
        && !s
            .chars()
            .any(|c| c != '\n' && c != '\t' && (c.is_control() || c == '\u{feff}'));
    if !literal_ok {
        return format!("{}\n", yaml_str(s));
    }
    let pad = " ".repeat(indent);
    let mut out = String::from("|\n");
    for line in s.lines() {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    fn request(dir: &Path) -> RegisterRequest {
        RegisterRequest {
            state_dir: dir.join("state"),
            name: "eu1".into(),
            region: Some("eu-west".into()),
            zone: Some("eu-west-1a".into()),
            hub_address: "hub.example.com:8443".into(),
            hub_server_name: "hub.example.com".into(),
            out_dir: dir.join("bundle"),
            image: "ghcr.io/example/hawser:1.0".into(),
            validity_days: 365,
            namespace: DEFAULT_NAMESPACE.into(),
            user_extra_keys: Vec::new(),
        }
    }

    fn keys(t: &toml::Table) -> Vec<&str> {
        t.keys().map(String::as_str).collect()
    }

    #[test]
    fn agent_toml_has_exactly_the_agent_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path());
        let text = agent_toml(&req);
        assert!(text.starts_with(
            "# Hawser agent for cluster \"eu1\" (generated by `hawser cluster register`).\n"
        ));
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            keys(&t),
            [
                "admin",
                "apiserver",
                "cluster",
                "hub",
                "region",
                "tunnel",
                "zone"
            ]
        );
        assert_eq!(t["cluster"].as_str(), Some("eu1"));
        assert_eq!(t["zone"].as_str(), Some("eu-west-1a"));
        let hub = t["hub"].as_table().unwrap();
        assert_eq!(
            keys(hub),
            [
                "address",
                "ca_file",
                "cert_file",
                "connections",
                "key_file",
                "server_name"
            ]
        );
        assert_eq!(hub["address"].as_str(), Some("hub.example.com:8443"));
        assert_eq!(hub["ca_file"].as_str(), Some("ca.crt"));
        assert_eq!(hub["connections"].as_integer(), Some(1));
        let tunnel = t["tunnel"].as_table().unwrap();
        assert_eq!(
            keys(tunnel),
            [
                "backoff_initial",
                "backoff_max",
                "keepalive_interval",
                "keepalive_timeout"
            ]
        );
        assert_eq!(t["apiserver"]["in_cluster"].as_bool(), Some(true));
        assert_eq!(t["admin"]["listen"].as_str(), Some("0.0.0.0:8081"));

        // The agent's own parser accepts it, with paths next to the file.
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, &text).unwrap();
        let env = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.0.0.1".to_string());
        let cfg = crate::config::AgentConfig::load_with_env(&file, env).unwrap();
        assert_eq!(cfg.hub.key_file, dir.path().join("agent.key"));

        req.region = None;
        req.zone = None;
        let t: toml::Table = toml::from_str(&agent_toml(&req)).unwrap();
        assert!(!t.contains_key("region") && !t.contains_key("zone"));
    }

    #[test]
    fn register_writes_the_bundle_and_registers_the_cert() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let outcome = register_cluster(&req).unwrap();
        let names: Vec<_> = outcome
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, [AGENT_TOML, AGENT_CRT, AGENT_KEY, CA_CRT, MANIFEST]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&req.out_dir), 0o700);
            assert_eq!(mode(&req.out_dir.join(AGENT_KEY)), 0o600);
            assert_eq!(mode(&req.out_dir.join(MANIFEST)), 0o600);
        }
        let read = |n: &str| std::fs::read_to_string(req.out_dir.join(n)).unwrap();
        let der = crate::pki::first_cert_der_from_pem(&read(AGENT_CRT)).unwrap();
        assert_eq!(
            crate::pki::fingerprint_of_der(&der),
            outcome.record.certs[0]
        );
        assert_eq!(crate::pki::cluster_of_cert(&der).unwrap(), "eu1");
        assert_eq!(
            read(CA_CRT),
            HubCa::load(&req.state_dir).unwrap().cert_pem()
        );
        assert!(read(AGENT_KEY).contains("PRIVATE KEY"));
        let registry = Registry::load(&req.state_dir).unwrap();
        assert!(registry.is_admitted("eu1", &outcome.record.certs[0]));
        assert_eq!(outcome.record.region.as_deref(), Some("eu-west"));

        // The same name again is refused, even into a fresh directory.
        let mut again = request(dir.path());
        again.out_dir = dir.path().join("other");
        let err = register_cluster(&again).unwrap_err();
        assert!(
            matches!(err, BundleError::Registry(RegistryError::Exists { .. })),
            "{err}"
        );
        // A second cluster may not overwrite the first one's bundle.
        again.name = "us2".into();
        again.out_dir = req.out_dir.clone();
        assert!(matches!(
            register_cluster(&again),
            Err(BundleError::Exists { .. })
        ));
        assert!(Registry::load(&req.state_dir).unwrap().get("us2").is_none());
    }

    #[test]
    fn bad_requests_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let base = request(dir.path());
        let edits: [fn(&mut RegisterRequest); 9] = [
            |r| r.user_extra_keys = vec![String::new()],
            |r| r.user_extra_keys = vec!["a b".into()],
            |r| r.user_extra_keys = vec!["*".into()],
            |r| r.name = "a/b".into(),
            |r| r.namespace = "Kube System".into(),
            |r| r.hub_address = "hub.example.com".into(),
            |r| r.image = String::new(),
            |r| r.validity_days = 0,
            |r| r.region = Some("eu\nwest".into()),
        ];
        for edit in edits {
            let mut req = base.clone();
            edit(&mut req);
            assert!(register_cluster(&req).is_err(), "{req:?}");
        }
        assert!(!base.state_dir.exists() && !base.out_dir.exists());
    }

    #[test]
    fn list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(list_clusters(&state).unwrap().is_empty());
        for name in ["us2", "eu1"] {
            let mut req = request(dir.path());
            req.name = name.into();
            req.out_dir = dir.path().join(name);
            register_cluster(&req).unwrap();
        }
        let names: Vec<_> = list_clusters(&state)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["eu1", "us2"]);
        assert_eq!(remove_cluster(&state, "eu1").unwrap().name, "eu1");
        let err = remove_cluster(&state, "eu1").unwrap_err();
        assert!(
            matches!(err, BundleError::Registry(RegistryError::Unknown { .. })),
            "{err}"
        );
        assert_eq!(list_clusters(&state).unwrap().len(), 1);
    }

    #[test]
    fn user_extra_keys_become_userextras_subresources() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path());
        req.user_extra_keys = vec!["Scopes".into(), "acme.com/project".into(), "scopes".into()];
        validate_request(&req).unwrap();
        let text = manifest_yaml(&req, "CA\n", "CERT\n", "KEY\n");
        let role: Value = serde_yaml::Deserializer::from_str(&text)
            .nth(2)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .unwrap();
        let rules: Value = serde_yaml::from_str(
            r#"[{apiGroups: [""], resources: [users, groups, serviceaccounts], verbs: [impersonate]},
                {apiGroups: [authentication.k8s.io],
                 resources: [uids, userextras/acme.com/project, userextras/scopes],
                 verbs: [impersonate]}]"#,
        )
        .unwrap();
        assert_eq!(role["rules"], rules);
    }

    #[test]
    fn manifest_is_six_documents_with_least_privilege() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path());
        req.image = "registry:5000/hawser:\"odd\" #tag".into();
        let (ca, cert, key) = (
            "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n",
            "CERT\n",
            "KEY: \"x\"",
        );
        let text = manifest_yaml(&req, ca, cert, key);
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        for doc in &docs {
            assert_eq!(
                doc["metadata"]["labels"]["hawser.io/cluster"].as_str(),
                Some("eu1")
            );
            assert_eq!(
                doc["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
                Some("hawser-agent")
            );
        }
        // Without extra keys: no userextras rule at all (a bare `userextras` matches
        // nothing in RBAC, since the key is the subresource).
        let rules: Value = serde_yaml::from_str(
            r#"[{apiGroups: [""], resources: [users, groups, serviceaccounts], verbs: [impersonate]},
                {apiGroups: [authentication.k8s.io], resources: [uids], verbs: [impersonate]}]"#,
        )
        .unwrap();
        assert_eq!(docs[2]["rules"], rules);
        assert!(!text.contains("userextras"), "{text}");
        assert_eq!(
            docs[3]["subjects"][0]["name"].as_str(),
            Some("hawser-agent")
        );
        assert_eq!(
            docs[3]["subjects"][0]["namespace"].as_str(),
            Some(DEFAULT_NAMESPACE)
        );

        let data = &docs[4]["stringData"];
        assert_eq!(docs[4]["type"].as_str(), Some("Opaque"));
        assert_eq!(data["agent.toml"].as_str(), Some(agent_toml(&req).as_str()));
        assert_eq!(data["ca.crt"].as_str(), Some(ca));
        assert_eq!(data["agent.crt"].as_str(), Some(cert));
        assert_eq!(data["agent.key"].as_str(), Some(key));

        let spec = &docs[5]["spec"];
        assert_eq!(spec["replicas"].as_u64(), Some(2));
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
            Some(0)
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["serviceAccountName"].as_str(), Some("hawser-agent"));
        assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(true));
        let c = &pod["containers"][0];
        assert_eq!(c["image"].as_str(), Some(req.image.as_str()));
        let args: Value =
            serde_yaml::from_str("[agent, --config, /etc/hawser/agent.toml]").unwrap();
        assert_eq!(c["args"], args);
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.name")
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/livez")
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_u64(), Some(8081));
        assert_eq!(c["resources"]["limits"]["memory"].as_str(), Some("256Mi"));
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true)
        );
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"][0].as_str(),
            Some("ALL")
        );
        assert_eq!(
            c["volumeMounts"][0]["mountPath"].as_str(),
            Some("/etc/hawser")
        );
        assert_eq!(c["volumeMounts"][0]["readOnly"].as_bool(), Some(true));
        assert_eq!(
            pod["volumes"][0]["secret"]["secretName"].as_str(),
            Some("hawser-agent")
        );
        let anti = &pod["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            anti["podAffinityTerm"]["topologyKey"].as_str(),
            Some("kubernetes.io/hostname")
        );
    }
}
