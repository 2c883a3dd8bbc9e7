//! HTTP/1.1 upgrades: WebSocket and SPDY/3.1 handshakes as the kubelet and
//! apiserver answer them, and handing the upgraded connection to a task.

use std::future::Future;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::body::Body;
use super::status::{text_error, Status};

/// Largest request body tolerated (and discarded) on an upgrade request.
const MAX_UPGRADE_BODY: usize = 64 * 1024;
/// How long an upgrade request's body may take to arrive.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The upgraded connection type handlers work with.
pub(crate) type Io = TokioIo<Upgraded>;

/// Header values split on commas, across all lines, trimmed.
pub(crate) fn comma_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `httpstream.IsUpgradeRequest`: a `Connection` line mentions "upgrade".
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .to_ascii_lowercase()
                .contains("upgrade")
        })
}

/// `wsstream.IsWebSocketRequest`: an upgrade to `websocket`.
pub(crate) fn is_websocket(req: &Request<Incoming>) -> bool {
    is_upgrade(req)
        && req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn switching(headers: &[(&'static str, String)]) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().append(*k, v);
        }
    }
    resp
}

/// Accepts a WebSocket upgrade choosing the first subprotocol the client
/// offers that `supported` has (the browser bearer-token pseudo-protocol is
/// never chosen). `Err` is the refusal to send instead.
pub(crate) fn websocket_accept(
    req: &Request<Incoming>,
    supported: &[&str],
) -> Result<(Response<Body>, String), Response<Body>> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Err(text_error(
            400,
            "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header is missing or blank",
        ));
    };
    let offered: Vec<String> = comma_values(req.headers(), "sec-websocket-protocol")
        .into_iter()
        .filter(|p| !p.starts_with("base64url.bearer.authorization.k8s.io."))
        .collect();
    let Some(chosen) = offered.iter().find(|p| supported.contains(&p.as_str())) else {
        return Err(text_error(
            403,
            &format!(
                "requested protocol(s) are not supported: [{}]; supports [{}]",
                offered.join(" "),
                supported.join(" ")
            ),
        ));
    };
    let resp = switching(&[
        ("upgrade", "websocket".to_string()),
        ("connection", "Upgrade".to_string()),
        ("sec-websocket-accept", derive_accept_key(key.as_bytes())),
        ("sec-websocket-protocol", chosen.clone()),
    ]);
    Ok((resp, chosen.clone()))
}

/// `httpstream.Handshake` followed by the SPDY response upgrader.
pub(crate) fn spdy_accept(
    req: &Request<Incoming>,
    supported: &[&'static str],
) -> Result<(Response<Body>, String), Response<Body>> {
    let client = comma_values(req.headers(), "x-stream-protocol-version");
    if client.is_empty() {
        return Err(text_error(
            400,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    let Some(chosen) = client.iter().find(|c| supported.contains(&c.as_str())) else {
        let mut resp = text_error(
            403,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                client.join(" "),
                supported.join(" ")
            ),
        );
        for s in supported {
            resp.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(s),
            );
        }
        return Err(resp);
    };
    let spdy = req.headers().get(header::UPGRADE).is_some_and(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .to_ascii_lowercase()
            .contains("spdy/3.1")
    });
    if !spdy {
        return Err(text_error(
            400,
            "unable to upgrade: missing upgrade headers in request",
        ));
    }
    let resp = switching(&[
        ("connection", "Upgrade".to_string()),
        ("upgrade", "SPDY/3.1".to_string()),
        ("x-stream-protocol-version", chosen.clone()),
    ]);
    Ok((resp, chosen.clone()))
}

/// Reads and discards a request body before an upgrade. A proxy may send
/// an upgrade POST with an (empty) chunked body; its bytes would otherwise
/// be taken as the first bytes of the upgraded protocol.
pub(crate) async fn drain_body(req: &mut Request<Incoming>) -> Result<(), Status> {
    let drained = tokio::time::timeout(
        DRAIN_LIMIT,
        Limited::new(req.body_mut(), MAX_UPGRADE_BODY).collect(),
    )
    .await;
    match drained {
        Ok(Ok(_)) => Ok(()),
        _ => Err(Status::bad_request(
            "unable to upgrade: unexpected request body".to_string(),
        )),
    }
}

/// Runs `serve` on the connection once hyper has sent the 101; the task is
/// cancelled when the double shuts down.
pub(crate) fn spawn_upgraded<F, Fut>(
    req: &mut Request<Incoming>,
    shutdown: CancellationToken,
    serve: F,
) where
    F: FnOnce(Io) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = serve(TokioIo::new(upgraded)) => {}
        }
    });
}

/// Wraps an upgraded connection as a server-side WebSocket.
pub(crate) async fn websocket(io: Io) -> WebSocketStream<Io> {
    WebSocketStream::from_raw_socket(io, Role::Server, None).await
}
