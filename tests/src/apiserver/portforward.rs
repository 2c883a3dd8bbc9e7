//! `pods/portforward` over SPDY/3.1 (`portforward.k8s.io`) and over SPDY
//! carried in binary WebSocket messages (`SPDY/3.1+portforward.k8s.io`, the
//! kubectl >= 1.31 default). Each forwarded connection is a pair of streams,
//! `error` and `data`, sharing a `requestID`; data is relayed to the TCP
//! address configured for the `port` header.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::body::Body;
use super::pods;
use super::server::Ctx;
use super::spdy::{SpdySession, SpdyStream, SpdyWriter};
use super::status::{text_error, Status};
use super::upgrade::{self, spawn_upgraded, Io};

/// How long to wait for our last frames to go out when closing.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Where forwarded connections go, and how the pod is named in errors.
#[derive(Clone)]
struct Target {
    ports: HashMap<u16, SocketAddr>,
    pod: String,
    uid: String,
}

/// Serves a port-forward request by upgrading the connection.
pub(crate) fn serve(ctx: &Ctx, req: &mut Request<Incoming>) -> Result<Response<Body>, Status> {
    let pod = pods::find(ctx)?;
    if !upgrade::is_upgrade(req) {
        return Ok(text_error(400, "Upgrade request required"));
    }
    let target = Target {
        ports: ctx.shared.cfg.port_targets.clone(),
        pod: format!("{}_{}", pod.name, pod.namespace),
        uid: pod.uid.clone(),
    };
    let completion = ctx.completion.clone();
    let shutdown = ctx.shared.shutdown.clone();
    if upgrade::is_websocket(req) {
        let (resp, _) = match upgrade::websocket_accept(req, &["SPDY/3.1+portforward.k8s.io"]) {
            Ok(ok) => ok,
            Err(refusal) => return Ok(refusal),
        };
        let bridge_shutdown = shutdown.clone();
        spawn_upgraded(req, shutdown, move |io| async move {
            let _completion = completion;
            let ws = upgrade::websocket(io).await;
            let spdy_bytes = bridge(ws, bridge_shutdown);
            if let Ok(session) = SpdySession::start(spdy_bytes) {
                forward(session, target).await;
            }
        });
        Ok(resp)
    } else {
        let (resp, _) = match upgrade::spdy_accept(req, &["portforward.k8s.io"]) {
            Ok(ok) => ok,
            Err(refusal) => return Ok(refusal),
        };
        spawn_upgraded(req, shutdown, move |io: Io| async move {
            let _completion = completion;
            if let Ok(session) = SpdySession::start(io) {
                forward(session, target).await;
            }
        });
        Ok(resp)
    }
}

/// Presents the SPDY bytes carried in binary WebSocket messages as a byte
/// stream (client-go's `TunnelingConnection`, server side).
fn bridge(ws: WebSocketStream<Io>, shutdown: CancellationToken) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Binary(b)) => {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let msg = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                if sink.send(msg).await.is_err() {
                    return;
                }
            }
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { tokio::join!(inbound, outbound) } => {}
        }
        // Both directions are done: end TLS with a close_notify.
        if let Ok(mut ws) = sink.reunite(stream) {
            let _ = ws.get_mut().shutdown().await;
        }
    });
    theirs
}

/// The kubelet's `requestID`: the header, or for old clients a pseudo id
/// from the stream id.
fn request_id(s: &SpdyStream) -> String {
    if let Some(id) = s.header("requestid").filter(|v| !v.is_empty()) {
        return id.to_string();
    }
    match s.header("streamtype") {
        Some("data") => s.id.saturating_sub(2).to_string(),
        _ => s.id.to_string(),
    }
}

/// Pairs streams by request id and forwards each pair, until the client
/// closes the connection.
async fn forward(mut session: SpdySession, target: Target) {
    forward_streams(&mut session, target).await;
    session.close(CLOSE_GRACE).await;
}

async fn forward_streams(session: &mut SpdySession, target: Target) {
    let mut pending: HashMap<String, (Option<SpdyStream>, Option<SpdyStream>)> = HashMap::new();
    while let Some(stream) = session.incoming.recv().await {
        let id = request_id(&stream);
        let entry = pending.entry(id.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => entry.0 = Some(stream),
            Some("data") => entry.1 = Some(stream),
            _ => {
                session.writer.reset(stream.id, super::spdy::RST_CANCEL);
                continue;
            }
        }
        if entry.0.is_some() && entry.1.is_some() {
            if let Some((Some(error), Some(data))) = pending.remove(&id) {
                tokio::spawn(forward_pair(
                    session.writer.clone(),
                    error,
                    data,
                    target.clone(),
                ));
            }
        }
    }
}

/// Relays one forwarded connection. Ends when the target stops sending (as
/// the runtimes do): then both streams are closed.
async fn forward_pair(writer: SpdyWriter, error: SpdyStream, data: SpdyStream, target: Target) {
    let port = error.header("port").unwrap_or("").to_string();
    let addr = port
        .parse::<u16>()
        .ok()
        .and_then(|p| target.ports.get(&p).copied());
    let outcome = match addr {
        None => Err(format!("no endpoint is configured for port {port}")),
        Some(addr) => TcpStream::connect(addr)
            .await
            .map_err(|e| format!("failed to connect to {addr}: {e}")),
    };
    let tcp = match outcome {
        Ok(tcp) => tcp,
        Err(msg) => {
            let text = format!(
                "error forwarding port {port} to pod {}, uid {}: {msg}",
                target.pod, target.uid
            );
            writer.data(error.id, Bytes::from(text));
            writer.fin(data.id);
            writer.fin(error.id);
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let data_id = data.id;
    let mut from_client = data.data;
    // Client to target; a FIN from the client half-closes the target.
    tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 || !writer.data(data_id, Bytes::copy_from_slice(&buf[..n])) {
            break;
        }
    }
    writer.fin(data_id);
    writer.fin(error.id);
}
