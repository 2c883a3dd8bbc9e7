//! Relaying HTTP/1.1 upgraded connections (SPDY/3.1, WebSocket) through the tunnel.
//!
//! HTTP/2 has no `Upgrade`, so an upgraded connection crosses the tunnel as one
//! HTTP/2 stream: the request body carries client-to-server bytes and the
//! response body server-to-client bytes, both flow-controlled per stream. The
//! bytes themselves are never parsed or changed.

use super::body::{channel, Body, BodySender};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Chunks of up to this size move per body frame.
const CHUNK: usize = 32 * 1024;
/// Frames that may wait in a relay channel (bounded memory per direction).
const FRAMES: usize = 4;

/// A body to send one direction of an upgraded stream, and its feeding half.
pub fn relay_body() -> (BodySender, Body) {
    channel(FRAMES)
}

/// Copies everything `reader` yields into `tx` until end of stream.
async fn io_to_channel<R: AsyncRead + Unpin>(mut reader: R, tx: BodySender) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let frame = Frame::data(Bytes::copy_from_slice(&buf[..n]));
                if tx.send(Ok(frame)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "upgraded stream read ended");
                break;
            }
        }
    }
}

/// Writes every data frame of `body` to `writer`, flushing each, then shuts the
/// writer down so the far side sees the end.
async fn body_to_io<B, W>(mut body: B, mut writer: W)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    W: AsyncWrite + Unpin,
{
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => {
                tracing::debug!(error = %e, "upgraded stream body ended");
                break;
            }
        };
        if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Joins an upgraded connection with the two tunnel bodies: bytes read from
/// `upgraded` go to `outbound`, bytes of `inbound` are written to `upgraded`.
/// Ends when the far side's stream ends and the local side has been drained.
pub async fn splice<B>(upgraded: Upgraded, inbound: B, outbound: BodySender)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (reader, writer) = tokio::io::split(TokioIo::new(upgraded));
    let up = io_to_channel(reader, outbound);
    let down = body_to_io(inbound, writer);
    tokio::pin!(up, down);
    // When the inbound direction ends, the far end has closed: stop reading too, as
    // Go's UpgradeAwareHandler closes both sides once a copy finishes. When the
    // local reader ends first (half-close), keep delivering the other direction.
    tokio::select! {
        _ = &mut down => {}
        _ = &mut up => down.await,
    }
}
