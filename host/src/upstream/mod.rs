//! The agent's connection to its cluster's API server, with its own credential.

use crate::config::{ApiServerSource, ApiServerTimeouts, KubeconfigSource};
use crate::proxy::body::Body;
use crate::tls;
use base64::Engine;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Why the API server client could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TLS material was unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The kubeconfig could not be used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token file could not be read.
    #[error("token file {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server URL is not usable.
    #[error("API server URL `{0}` is invalid")]
    Url(String),
    /// The request to the API server failed.
    #[error("API server unreachable: {}", crate::error_chain::error_chain(.0))]
    Request(#[from] hyper_util::client::legacy::Error),
    /// The API server took the request but sent no response head in time.
    #[error("the API server sent no response head within {}", humantime::format_duration(*.0))]
    NoResponseHead(Duration),
}

/// How the agent proves who it is to the API server.
enum Credential {
    /// A bearer token re-read whenever its file changes (projected service-account
    /// tokens are rotated by the kubelet).
    TokenFile(TokenFile),
    /// A bearer token from a kubeconfig.
    Token(HeaderValue),
    /// A client certificate, presented in TLS.
    ClientCertificate,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret itself never appears in Debug output.
        match self {
            Credential::TokenFile(t) => write!(f, "TokenFile({})", t.path.display()),
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::ClientCertificate => f.write_str("ClientCertificate"),
        }
    }
}

struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, u64, HeaderValue)>>,
}

impl TokenFile {
    fn header(&self) -> Result<HeaderValue, UpstreamError> {
        let err = |reason: String| UpstreamError::Token {
            path: self.path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&self.path).map_err(|e| err(e.to_string()))?;
        let stamp = (meta.modified().map_err(|e| err(e.to_string()))?, meta.len());
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((m, l, v)) = cached.as_ref() {
            if (*m, *l) == stamp {
                return Ok(v.clone());
            }
        }
        let token = std::fs::read_to_string(&self.path).map_err(|e| err(e.to_string()))?;
        let value = bearer(token.trim())
            .map_err(|_| err("token is empty or not a valid header value".into()))?;
        *cached = Some((stamp.0, stamp.1, value.clone()));
        Ok(value)
    }
}

fn bearer(token: &str) -> Result<HeaderValue, ()> {
    if token.is_empty() {
        return Err(());
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ())?;
    v.set_sensitive(true);
    Ok(v)
}

/// A pooled HTTP/1.1 client for the API server.
pub struct Upstream {
    base: String,
    credential: Credential,
    client: Client<TimedConnect<HttpsConnector<HttpConnector>>, Body>,
    response_header_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential.
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client from the agent's config, with its limits on connecting and
    /// on waiting for a response head.
    pub fn new(
        source: &ApiServerSource,
        timeouts: ApiServerTimeouts,
    ) -> Result<Upstream, UpstreamError> {
        let (base, ca_pem, client_cert, credential) = match source {
            ApiServerSource::Token {
                server,
                ca_file,
                token_file,
            } => {
                let credential = Credential::TokenFile(TokenFile {
                    path: token_file.clone(),
                    cached: Mutex::new(None),
                });
                (server.clone(), tls::read_pem(ca_file)?, None, credential)
            }
            ApiServerSource::Kubeconfig(src) => from_kubeconfig(src)?,
        };
        base.parse::<Uri>()
            .map_err(|_| UpstreamError::Url(base.clone()))?;
        let tls = tls::apiserver_client(
            &ca_pem,
            client_cert
                .as_ref()
                .map(|(c, k): &(String, String)| (c.as_str(), k.as_str())),
        )?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(TimedConnect {
                inner: connector,
                limit: timeouts.connect,
            });
        let up = Upstream {
            base: base.trim_end_matches('/').to_string(),
            credential,
            client,
            response_header_timeout: timeouts.response_header,
        };
        // Fail at start, not on the first request, when the token is unreadable.
        up.authorization()?;
        Ok(up)
    }

    /// The `Authorization` value for the next request, if the credential is a token.
    pub fn authorization(&self) -> Result<Option<HeaderValue>, UpstreamError> {
        match &self.credential {
            Credential::TokenFile(f) => f.header().map(Some),
            Credential::Token(v) => Ok(Some(v.clone())),
            Credential::ClientCertificate => Ok(None),
        }
    }

    /// The full URI for a path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        let full = format!("{}{path_and_query}", self.base);
        full.parse().map_err(|_| UpstreamError::Url(full))
    }

    /// Sends a request (which may ask for an upgrade) and waits for the response head,
    /// at most the response-header timeout. The body then streams without a limit.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        let limit = self.response_header_timeout;
        match tokio::time::timeout(limit, self.client.request(req)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(UpstreamError::NoResponseHead(limit)),
        }
    }
}

/// A connector whose connections (TCP and TLS handshake) must be ready within
/// `limit`. Long-running requests (watch, exec, logs -f) have no other limit before
/// their response starts, so an API server (or a load balancer in front of it) that
/// accepts and then stalls would otherwise hold them forever.
#[derive(Clone)]
struct TimedConnect<C> {
    inner: C,
    limit: Duration,
}

impl<C> tower_service::Service<Uri> for TimedConnect<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = C::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<C::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!(
                    "no connection to the API server within {limit:?} (TCP and TLS)"
                )
                .into()),
            }
        })
    }
}

type Material = (String, String, Option<(String, String)>, Credential);

/// Reads server, CA and credential from a kubeconfig (token or client certificate).
fn from_kubeconfig(src: &KubeconfigSource) -> Result<Material, UpstreamError> {
    let err = |reason: String| UpstreamError::Kubeconfig {
        path: src.path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&src.path).map_err(|e| err(e.to_string()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let context_name = match &src.context {
        Some(c) => c.clone(),
        None => doc["current-context"]
            .as_str()
            .ok_or_else(|| err("no current-context and no context configured".into()))?
            .to_string(),
    };
    let find = |list: &str, name: &str| -> Result<serde_yaml::Value, UpstreamError> {
        doc[list]
            .as_sequence()
            .and_then(|s| s.iter().find(|e| e["name"].as_str() == Some(name)))
            .cloned()
            .ok_or_else(|| err(format!("{list}: no entry named `{name}`")))
    };
    let context = find("contexts", &context_name)?;
    let cluster_name = context["context"]["cluster"]
        .as_str()
        .ok_or_else(|| err("context has no cluster".into()))?;
    let user_name = context["context"]["user"]
        .as_str()
        .ok_or_else(|| err("context has no user".into()))?;
    let cluster = find("clusters", cluster_name)?;
    let user = find("users", user_name)?;
    let dir = src.path.parent().unwrap_or_else(|| Path::new("."));
    let server = cluster["cluster"]["server"]
        .as_str()
        .ok_or_else(|| err("cluster has no server".into()))?
        .to_string();
    if cluster["cluster"]["insecure-skip-tls-verify"].as_bool() == Some(true) {
        return Err(err(
            "insecure-skip-tls-verify is refused: the API server certificate must be verified"
                .into(),
        ));
    }
    let material = |obj: &serde_yaml::Value,
                    data_key: &str,
                    file_key: &str|
     -> Result<Option<String>, UpstreamError> {
        if let Some(b64) = obj[data_key].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| err(format!("{data_key}: {e}")))?;
            return String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| err(format!("{data_key}: {e}")));
        }
        match obj[file_key].as_str() {
            Some(p) => std::fs::read_to_string(dir.join(p))
                .map(Some)
                .map_err(|e| err(format!("{file_key} {p}: {e}"))),
            None => Ok(None),
        }
    };
    let ca = material(
        &cluster["cluster"],
        "certificate-authority-data",
        "certificate-authority",
    )?
    .ok_or_else(|| {
        err("cluster has no certificate-authority(-data); the API server must be verified".into())
    })?;
    let u = &user["user"];
    if !u["exec"].is_null() || !u["auth-provider"].is_null() {
        return Err(err(
            "exec and auth-provider users are not supported; use a token or a client certificate"
                .into(),
        ));
    }
    if let Some(token) = u["token"].as_str() {
        let v = bearer(token.trim()).map_err(|_| err("token is empty or invalid".into()))?;
        return Ok((server, ca, None, Credential::Token(v)));
    }
    if let Some(file) = u["tokenFile"].as_str() {
        let credential = Credential::TokenFile(TokenFile {
            path: dir.join(file),
            cached: Mutex::new(None),
        });
        return Ok((server, ca, None, credential));
    }
    let cert = material(u, "client-certificate-data", "client-certificate")?;
    let key = material(u, "client-key-data", "client-key")?;
    match (cert, key) {
        (Some(c), Some(k)) => Ok((server, ca, Some((c, k)), Credential::ClientCertificate)),
        _ => Err(err(format!(
            "user `{user_name}` has neither a token nor a client certificate and key"
        ))),
    }
}

#[cfg(test)]
mod tests;
