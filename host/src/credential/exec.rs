//! The kubectl exec plugin: `hawser credential exec`.
//!
//! kubectl runs it when it has no unexpired token (or got a 401). It reads the
//! refresh credential from a file, asks the hub's refresh endpoint for an access
//! token over HTTPS (verifying the hub against the given CA only), and prints the
//! `ExecCredential`. It caches nothing: kubectl keeps the token until
//! `expirationTimestamp`.

use crate::error_chain::error_chain;
use std::path::PathBuf;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::kubeconfig::EXEC_API_VERSION;
use super::refresh::REFRESH_PATH;
use crate::proxy::body::empty;
use crate::tls::{self, TlsError};

/// Longest the whole exchange may take; kubectl waits for the plugin.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response read from the hub.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The plugin's inputs (from its command line and environment).
#[derive(Debug, Clone)]
pub struct ExecArgs {
    /// The hub's base URL, `https://host:port`.
    pub hub: String,
    /// The hub CA (PEM) to verify the hub with.
    pub ca_file: PathBuf,
    /// The file holding the refresh credential.
    pub refresh_file: PathBuf,
    /// `KUBERNETES_EXEC_INFO`, if kubectl set it: its apiVersion must be v1.
    pub exec_info: Option<String>,
}

/// Why no credential could be printed. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The refresh credential file is unreadable or empty.
    #[error("refresh credential {path}: {reason}")]
    RefreshFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA file is unusable.
    #[error(transparent)]
    Ca(#[from] TlsError),
    /// `--hub` is not an https URL.
    #[error("hub URL {0:?} is not https://host[:port]")]
    HubUrl(String),
    /// kubectl asked for another exec API version.
    #[error("kubectl asked for exec credential version {0:?}; hawser speaks {EXEC_API_VERSION}")]
    ApiVersion(String),
    /// The hub could not be reached.
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// The hub took too long.
    #[error(
        "the hub did not answer within {}",
        humantime::format_duration(TIMEOUT)
    )]
    Timeout,
    /// The hub refused the refresh credential.
    #[error("the hub refused the refresh credential (expired, revoked or not issued by it); ask the hub operator for a new one (`hawser credential issue --exec`)")]
    Unauthorized,
    /// The hub answered with another error.
    #[error("the hub answered {code}: {message}")]
    Hub {
        /// HTTP status.
        code: StatusCode,
        /// The Status message, or the start of the body.
        message: String,
    },
    /// The hub's answer is not an ExecCredential.
    #[error("the hub's answer is not an ExecCredential: {0}")]
    BadResponse(&'static str),
}

/// Fetches a fresh access token and returns the `ExecCredential` JSON to print.
pub async fn exec_command(args: &ExecArgs) -> Result<String, ExecError> {
    if let Some(info) = &args.exec_info {
        let v: serde_json::Value = serde_json::from_str(info)
            .map_err(|_| ExecError::ApiVersion("<unparsable KUBERNETES_EXEC_INFO>".into()))?;
        let version = v["apiVersion"].as_str().unwrap_or_default();
        if version != EXEC_API_VERSION {
            return Err(ExecError::ApiVersion(version.to_string()));
        }
    }
    let refresh_err = |reason: String| ExecError::RefreshFile {
        path: args.refresh_file.clone(),
        reason,
    };
    let token =
        std::fs::read_to_string(&args.refresh_file).map_err(|e| refresh_err(e.to_string()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(refresh_err("is empty".into()));
    }
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| refresh_err("is not a token".into()))?;
    auth.set_sensitive(true);
    let uri = refresh_uri(&args.hub)?;
    let ca_pem = tls::read_pem(&args.ca_file)?;
    let tls = tls::apiserver_client(&ca_pem, None)?;
    // hyper-rustls sets ALPN itself (http/1.1 here) and refuses a preset one.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, crate::proxy::body::Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::AUTHORIZATION, auth)
        .header(header::ACCEPT, "application/json")
        .body(empty())
        .map_err(|_| ExecError::HubUrl(args.hub.clone()))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| ExecError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| ExecError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, ExecError>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ExecError::Timeout)??;
    match status {
        StatusCode::OK => check_exec_credential(&body),
        StatusCode::UNAUTHORIZED => Err(ExecError::Unauthorized),
        code => {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
                });
            Err(ExecError::Hub { code, message })
        }
    }
}

fn refresh_uri(hub: &str) -> Result<Uri, ExecError> {
    let bad = || ExecError::HubUrl(hub.to_string());
    let base: Uri = hub.parse().map_err(|_| bad())?;
    let authority = base
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .ok_or_else(bad)?;
    if base.scheme_str() != Some("https") || base.query().is_some() {
        return Err(bad());
    }
    // A hub behind a path prefix keeps it.
    let prefix = base.path().trim_end_matches('/');
    format!("https://{authority}{prefix}{REFRESH_PATH}")
        .parse()
        .map_err(|_| bad())
}

fn check_exec_credential(body: &[u8]) -> Result<String, ExecError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ExecError::BadResponse("not JSON"))?;
    if v["apiVersion"] != EXEC_API_VERSION || v["kind"] != "ExecCredential" {
        return Err(ExecError::BadResponse("wrong apiVersion or kind"));
    }
    if v["status"]["token"].as_str().is_none_or(str::is_empty) {
        return Err(ExecError::BadResponse("no status.token"));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_uri_keeps_host_port_and_prefix() {
        let u = |s: &str| refresh_uri(s).map(|u| u.to_string());
        assert_eq!(
            u("https://hub:6443").expect("ok"),
            "https://hub:6443/hawser/v1/credential/refresh"
        );
        assert_eq!(
            u("https://hub:6443/").expect("ok"),
            "https://hub:6443/hawser/v1/credential/refresh"
        );
        assert_eq!(
            u("https://h.example/k8s/").expect("ok"),
            "https://h.example/k8s/hawser/v1/credential/refresh"
        );
        assert!(matches!(
            refresh_uri("http://hub:6443"),
            Err(ExecError::HubUrl(_))
        ));
        assert!(matches!(refresh_uri("hub:6443"), Err(ExecError::HubUrl(_))));
    }

    #[test]
    fn only_an_exec_credential_with_a_token_is_printed() {
        let ok = br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}"#;
        assert!(check_exec_credential(ok).is_ok());
        let old = br#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}"#;
        assert!(check_exec_credential(old).is_err());
        let empty = br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":""}}"#;
        assert!(check_exec_credential(empty).is_err());
    }

    #[tokio::test]
    async fn wrong_exec_api_version_and_missing_file_are_reported() {
        let args = ExecArgs {
            hub: "https://127.0.0.1:1".into(),
            ca_file: "/nonexistent/ca.crt".into(),
            refresh_file: "/nonexistent/refresh".into(),
            exec_info: Some(
                r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential"}"#
                    .into(),
            ),
        };
        assert!(
            matches!(exec_command(&args).await, Err(ExecError::ApiVersion(v)) if v.ends_with("v1beta1"))
        );
        let args = ExecArgs {
            exec_info: None,
            ..args
        };
        assert!(matches!(
            exec_command(&args).await,
            Err(ExecError::RefreshFile { .. })
        ));
    }
}
