//! A **test double** of kube-apiserver, for tests only.
//!
//! It is not a Kubernetes implementation: it keeps a handful of pods in
//! memory and nothing else. What it does reproduce faithfully is the part of
//! `k8s.io/apiserver` that a tunnel in front of a cluster has to preserve, so
//! that the real `kubectl` works against it and tests can observe exactly what
//! reached "the cluster":
//!
//! - bearer-token authentication with the exact 401 body;
//! - impersonation (`Impersonate-*` headers) as `impersonation.go` does it,
//!   including per-line groups, escaped extra keys and per-piece authorization;
//! - RBAC-like authorization with the real `Forbidden` messages;
//! - request-info parsing (verb, namespace, resource, subresource, name);
//! - legacy discovery, pod list/get (JSON or server-side `Table`), watch and
//!   logs (with `follow`), and the self reviews behind `kubectl auth whoami`
//!   and `kubectl auth can-i`;
//! - exec/attach over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) and
//!   SPDY/3.1, and port-forward over SPDY/3.1 and SPDY-in-WebSocket;
//! - `audit.k8s.io/v1` events at the Metadata level;
//! - a record of every request, with its raw header lines.
//!
//! # Known differences from kube-apiserver
//! - Impersonation headers without `Impersonate-User` get a 400 `BadRequest`
//!   Status (as the shared reference specifies); `impersonation.go` up to at
//!   least 1.34 answers with a plain-text 500 from `InternalError`.
//! - Discovery is legacy only (no aggregated discovery, no OpenAPI: 404), and
//!   serves the core group plus the two self-review groups.
//! - A 401 over HTTP/2 carries no `Connection: close` (HTTP/2 forbids it).
//! - Watch history is never compacted, so there is no 410 `Expired`.
//! - SPDY has no flow control (neither does spdystream); WebSocket and SPDY
//!   sessions run fake commands (see `exec`), not processes.
//!
//! # Layout
//! - `server` accepts TLS connections (HTTP/1.1 and HTTP/2) and runs the
//!   filter chain: audit init, authentication, impersonation, authorization.
//! - `auth` authentication and impersonation, `rbac` authorization.
//! - `requestinfo` the `RequestInfoFactory` port.
//! - `discovery`, `pods`, `watch`, `logs`, `reviews` the plain HTTP endpoints.
//! - `exec` the fake commands, `exec_ws` and `exec_spdy` their transports.
//! - `spdy` SPDY/3.1 framing, `portforward` port-forwarding on top of it.
//! - `upgrade` the WebSocket and SPDY handshakes.
//! - `audit`, `status`, `state`, `tls`, `timefmt`, `body` support code.

// Handlers return their error response (a `Status`, ~200 bytes) by value:
// it is built at most once per request, so boxing would only add noise.
#![allow(clippy::result_large_err)]

mod audit;
mod auth;
mod body;
mod discovery;
mod exec;
mod exec_spdy;
mod exec_ws;
mod logs;
mod pods;
mod portforward;
mod rbac;
mod requestinfo;
mod reviews;
mod server;
mod spdy;
mod state;
mod status;
mod timefmt;
mod tls;
mod upgrade;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use self::state::Shared;

/// Configuration of an [`ApiServerDouble`].
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// `gitVersion` served by `/version`, e.g. `v1.32.3` (major `1`, minor `32`).
    pub version: String,
    /// Bearer token to user. Unknown or missing tokens get 401.
    pub tokens: HashMap<String, UserInfo>,
    /// RBAC-like allow rules, evaluated against the effective user. Empty
    /// means only the built-in discovery rule applies.
    pub rules: Vec<Rule>,
    /// Pods that exist at start.
    pub pods: Vec<PodSpec>,
    /// Port-forward targets: pod port to the real TCP address to dial.
    pub port_targets: HashMap<u16, SocketAddr>,
    /// If set, non-long-running requests whose path ends with `/slow` wait
    /// this long before they are answered (for timeout tests).
    pub response_delay: Option<Duration>,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            version: "v1.32.3".to_string(),
            tokens: HashMap::new(),
            rules: Vec::new(),
            pods: Vec::new(),
            port_targets: HashMap::new(),
            response_delay: None,
        }
    }
}

/// A user as `k8s.io/apiserver/pkg/authentication/user.Info` models it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. `alice` or `system:serviceaccount:ns:name`.
    pub username: String,
    /// UID; empty when unknown.
    pub uid: String,
    /// Group names.
    pub groups: Vec<String>,
    /// Extra attributes (keys as the authenticator or impersonation set them).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with just a name.
    pub fn new(username: &str) -> UserInfo {
        UserInfo {
            username: username.to_string(),
            ..UserInfo::default()
        }
    }
}

/// An RBAC-like allow rule: a `PolicyRule` together with its subjects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `user:NAME`, `group:NAME`, or `*` for everyone.
    pub subjects: Vec<String>,
    /// Verbs (`get`, `list`, `watch`, `create`, `impersonate`, ...) or `*`.
    pub verbs: Vec<String>,
    /// API groups (`""` is core) or `*`.
    pub api_groups: Vec<String>,
    /// Resources, optionally `resource/subresource` (`pods/exec`,
    /// `userextras/scopes`), `*/subresource`, or `*`.
    pub resources: Vec<String>,
    /// Allowed object names; empty means any.
    pub resource_names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/logs/*`) or `*`.
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    /// A rule allowing `subject` everything, like `cluster-admin`.
    pub fn allow_all(subject: &str) -> Rule {
        Rule {
            subjects: vec![subject.to_string()],
            verbs: vec!["*".to_string()],
            api_groups: vec!["*".to_string()],
            resources: vec!["*".to_string()],
            resource_names: Vec::new(),
            non_resource_urls: vec!["*".to_string()],
        }
    }
}

/// A pod to create at start; every pod has one running container `main`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PodSpec {
    /// A pod `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// One request as the double received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path, still percent-encoded.
    pub path: String,
    /// Raw query string without `?` (empty if none).
    pub query: String,
    /// One entry per header line with lower-case names, as received (before
    /// `Authorization` and `Impersonate-*` are consumed). Lines with the same
    /// name keep their order; across names the order of first appearance.
    pub headers: Vec<(String, String)>,
    /// Effective user (the impersonated one when impersonating), if the
    /// request was authenticated.
    pub user: Option<UserInfo>,
    /// The user the bearer token authenticated, if any.
    pub authenticated_user: Option<UserInfo>,
    /// Response status code; 0 while the response head is not ready yet.
    pub status: u16,
}

impl RecordedRequest {
    /// All values of header `name` (case-insensitive), one per line.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

/// A running kube-apiserver test double on `https://127.0.0.1:PORT`.
///
/// Dropping it (or calling [`ApiServerDouble::shutdown`]) stops the listener
/// and every open connection, watch and stream.
pub struct ApiServerDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    shutdown: CancellationToken,
}

impl ApiServerDouble {
    /// Starts the double on `127.0.0.1:0` with a fresh CA whose serving
    /// certificate is valid for `127.0.0.1` and `localhost`.
    pub async fn start(cfg: DoubleConfig) -> anyhow::Result<ApiServerDouble> {
        let pki = tls::generate()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(cfg, shutdown.clone()));
        let addr = server::spawn(shared.clone(), pki.server_config.clone()).await?;
        Ok(ApiServerDouble {
            shared,
            addr,
            ca_pem: pki.ca_pem,
            shutdown,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Every `audit.k8s.io/v1` `Event` emitted so far, in order.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.shared.audit_events()
    }

    /// Creates (or replaces) a pod and emits `ADDED` to live watchers.
    pub fn add_pod(&self, namespace: &str, name: &str) {
        self.shared.emit("ADDED", namespace, name);
    }

    /// Applies `kind` (`ADDED`, `MODIFIED` or `DELETED`) to a pod, bumping the
    /// resourceVersion, and sends the event to watchers. `MODIFIED` and
    /// `DELETED` of an unknown pod act on a synthetic one; any other kind acts
    /// like `ADDED`. Returns the instant just before the event is handed to
    /// the watchers.
    pub fn emit_watch_event(&self, kind: &str, namespace: &str, name: &str) -> Instant {
        self.shared.emit(kind, namespace, name)
    }

    /// Appends a line to a pod's log; `follow` readers get it immediately.
    pub fn append_log(&self, namespace: &str, pod: &str, line: &str) {
        self.shared.append_log(namespace, pod, line);
    }

    /// Waits until a request whose response head is ready matches `pred`.
    /// Returns `None` after `timeout`.
    pub async fn wait_for_request(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        self.shared.wait_for_request(pred, timeout).await
    }

    /// Stops the double (same as dropping it).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for ApiServerDouble {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
