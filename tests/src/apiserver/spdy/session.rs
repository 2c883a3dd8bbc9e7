//! The server side of a SPDY/3.1 connection: accepts client streams (replying
//! with SYN_REPLY at once, as spdystream's server does), delivers their data,
//! echoes pings, and lets handlers write data, FIN and GOAWAY.
//!
//! There is no flow control: like spdystream, WINDOW_UPDATE and SETTINGS are
//! ignored, and inbound data is buffered without bound (test traffic only).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{encode, read_frame, Deflater, Frame, Headers, Inflater, FLAG_FIN};

/// A stream the client opened.
pub(crate) struct SpdyStream {
    pub id: u32,
    pub headers: Headers,
    /// Data from the client; ends (`None`) at FIN, reset or connection end.
    pub data: mpsc::UnboundedReceiver<Bytes>,
}

impl SpdyStream {
    /// The first value of header `name` (case-insensitive; spdystream sends
    /// lower-case names).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the writer task is asked to do.
enum Out {
    Frame(Frame),
    /// Flush and shut down the write side (TLS close_notify, TCP FIN).
    Close,
}

/// Writes frames on the connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct SpdyWriter {
    tx: mpsc::UnboundedSender<Out>,
}

impl SpdyWriter {
    /// Sends data on a stream; false once the connection is gone.
    pub fn data(&self, stream_id: u32, data: Bytes) -> bool {
        let frame = Frame::Data {
            stream_id,
            flags: 0,
            data,
        };
        self.tx.send(Out::Frame(frame)).is_ok()
    }

    /// Half-closes our side of a stream (an empty DATA frame with FIN).
    pub fn fin(&self, stream_id: u32) {
        self.send(Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        });
    }

    /// Resets a stream.
    pub fn reset(&self, stream_id: u32, status: u32) {
        self.send(Frame::RstStream { stream_id, status });
    }

    /// Announces that no further streams will be accepted.
    pub fn go_away(&self, last_good_stream_id: u32) {
        self.send(Frame::GoAway {
            last_good_stream_id,
            status: 0,
        });
    }

    fn send(&self, frame: Frame) {
        let _ = self.tx.send(Out::Frame(frame));
    }
}

/// A running server-side SPDY connection. Dropping it closes the connection.
pub(crate) struct SpdySession {
    /// Streams as the client opens them; ends when the connection does.
    pub incoming: mpsc::UnboundedReceiver<SpdyStream>,
    pub writer: SpdyWriter,
    closed: CancellationToken,
    read_task: JoinHandle<()>,
    write_task: JoinHandle<()>,
}

impl SpdySession {
    /// Starts reading and writing frames on `io`.
    pub fn start<IO>(io: IO) -> std::io::Result<SpdySession>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let (frame_tx, mut frame_rx) = mpsc::unbounded_channel::<Out>();
        let (stream_tx, incoming) = mpsc::unbounded_channel();
        let writer = SpdyWriter { tx: frame_tx };
        let closed = CancellationToken::new();
        let mut deflater = Deflater::new()?;

        let write_task = tokio::spawn(async move {
            while let Some(Out::Frame(frame)) = frame_rx.recv().await {
                let Ok(bytes) = encode(&frame, &mut deflater) else {
                    break;
                };
                if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });

        let reply = writer.clone();
        let read_closed = closed.clone();
        let read_task = tokio::spawn(async move {
            let mut inflater = Inflater::new();
            let mut streams: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
            // Any read error ends the connection like EOF does.
            while let Ok(Some(frame)) = read_frame(&mut rd, &mut inflater).await {
                match frame {
                    Frame::SynStream {
                        stream_id,
                        flags,
                        headers,
                    } => {
                        // Reply before handing the stream out, so the reply
                        // precedes any data a handler writes on it.
                        reply.send(Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Vec::new(),
                        });
                        let (tx, data) = mpsc::unbounded_channel();
                        if flags & FLAG_FIN == 0 {
                            streams.insert(stream_id, tx);
                        }
                        let _ = stream_tx.send(SpdyStream {
                            id: stream_id,
                            headers,
                            data,
                        });
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => {
                        if let Some(tx) = streams.get(&stream_id) {
                            if !data.is_empty() {
                                let _ = tx.send(data);
                            }
                        }
                        if flags & FLAG_FIN != 0 {
                            streams.remove(&stream_id);
                        }
                    }
                    Frame::RstStream { stream_id, .. } => {
                        streams.remove(&stream_id);
                    }
                    // Client pings have odd ids; ours would be even (we send none).
                    Frame::Ping { id } if id % 2 == 1 => reply.send(Frame::Ping { id }),
                    _ => {}
                }
            }
            drop(streams);
            read_closed.cancel();
        });

        Ok(SpdySession {
            incoming,
            writer,
            closed,
            read_task,
            write_task,
        })
    }

    /// Waits until the client closes the connection, at most `limit`: the
    /// handler's last frames are then known to have been read.
    pub async fn wait_closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.closed.cancelled()).await;
    }

    /// Writes out every queued frame, then shuts the connection down cleanly
    /// (at most `limit`); Go's server closes hijacked TLS connections the
    /// same way, with a close_notify.
    pub async fn close(mut self, limit: Duration) {
        let _ = self.writer.tx.send(Out::Close);
        let _ = tokio::time::timeout(limit, &mut self.write_task).await;
    }
}

impl Drop for SpdySession {
    fn drop(&mut self) {
        self.read_task.abort();
        self.write_task.abort();
    }
}
