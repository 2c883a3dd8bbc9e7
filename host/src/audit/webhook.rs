//! The webhook backend's HTTP client: one POST per batch, with the body
//! kube-apiserver's webhook backend sends (an `audit.k8s.io/v1` `EventList`).
//!
//! Any answer but 2xx, and any transport error, fails the whole batch; the sink
//! task retries it with backoff. Events are queued as their JSON text, so the body
//! is assembled without re-encoding them.

use super::config::WebhookSettings;
use super::AuditError;
use crate::error_chain::error_chain;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How much of an error response is kept for the log line.
const ERROR_BODY_LIMIT: usize = 512;

/// A client for one webhook URL.
pub(crate) struct WebhookClient {
    url: http::Uri,
    token_file: Option<PathBuf>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl WebhookClient {
    /// Builds the TLS client; the receiver must present a certificate from `ca_file`.
    pub(crate) fn new(settings: &WebhookSettings) -> Result<WebhookClient, AuditError> {
        let ca_pem = crate::tls::read_pem(&settings.ca_file)?;
        let roots = crate::tls::roots_from_pem("audit webhook CA", &ca_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(crate::tls::TlsError::from)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let web = WebhookClient {
            url: settings.url.clone(),
            token_file: settings.token_file.clone(),
            timeout: settings.request_timeout,
            client,
        };
        // An unreadable token is a setup error: report it at start.
        web.authorization()?;
        Ok(web)
    }

    /// Re-read per batch: projected tokens rotate, and a batch is rare enough.
    fn authorization(&self) -> Result<Option<HeaderValue>, AuditError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        let bad = || {
            AuditError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "token is empty or not a header value",
                ),
            )
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(bad());
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad())?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// POSTs one batch; `Ok` only on a 2xx answer.
    pub(crate) async fn deliver(&self, events: &[Bytes]) -> Result<(), AuditError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, */*")
            .body(Full::new(event_list(events)))
            .map_err(|e| self.unreachable(e.to_string()))?;
        if let Some(auth) = self.authorization()? {
            req.headers_mut().insert(header::AUTHORIZATION, auth);
        }
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => return Err(self.unreachable(format!("no answer within {:?}", self.timeout))),
            Ok(Err(e)) => return Err(self.unreachable(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        // Read (a bounded part of) the body so the connection can be reused and
        // an error can be reported.
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(resp.into_body(), ERROR_BODY_LIMIT).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        Err(AuditError::WebhookStatus {
            url: self.url.to_string(),
            status: status.as_u16(),
            body,
        })
    }

    fn unreachable(&self, reason: String) -> AuditError {
        AuditError::WebhookUnreachable {
            url: self.url.to_string(),
            reason,
        }
    }
}

/// `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[...]}`.
pub(crate) fn event_list(events: &[Bytes]) -> Bytes {
    let size: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 96);
    body.extend_from_slice(
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
    );
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_list_wraps_items_like_kube_apiserver() {
        let body = event_list(&[
            Bytes::from_static(br#"{"a":1}"#),
            Bytes::from_static(br#"{"b":2}"#),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["items"], serde_json::json!([{"a": 1}, {"b": 2}]));
        let empty: serde_json::Value = serde_json::from_slice(&event_list(&[])).unwrap();
        assert_eq!(empty["items"], serde_json::json!([]));
    }
}
