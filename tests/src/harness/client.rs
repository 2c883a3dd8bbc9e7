//! Clients for the hub's listeners: HTTPS with the hub CA, raw bytes over TLS, and
//! plain HTTP for admin endpoints.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A rustls client config trusting exactly `ca_pem`.
pub fn tls_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let roots = hawser::tls::roots_from_pem("hub CA", ca_pem).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTP/1.1 client for the front listener.
pub type FrontClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTPS client trusting the hub CA.
pub fn front_client(ca_pem: &str) -> FrontClient {
    let tls = tls_config(ca_pem, rustls::DEFAULT_VERSIONS);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends a request and reads the whole reply.
pub async fn send(client: &FrontClient, req: Request<Full<Bytes>>) -> Reply {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET `https://127.0.0.1:PORT{path}` with extra headers.
pub async fn get(
    client: &FrontClient,
    front: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::get(format!("https://127.0.0.1:{}{path}", front.port()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// Writes raw bytes over TLS to the front listener and reads until the server
/// closes or `timeout` passes; returns what came back.
pub async fn raw_exchange(
    front: SocketAddr,
    ca_pem: &str,
    request: &[u8],
    timeout: Duration,
) -> String {
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca_pem, rustls::DEFAULT_VERSIONS)));
    let tcp = TcpStream::connect(front).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tls.connect(name, tcp).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain HTTP GET (admin endpoints); the body on 2xx.
pub async fn plain_get(addr: SocketAddr, path: &str) -> Option<String> {
    plain_request(addr, "GET", path).await
}

/// A plain HTTP request without a body (admin endpoints); the body on 2xx.
pub async fn plain_request(addr: SocketAddr, method: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 2").then(|| body.to_string())
}
