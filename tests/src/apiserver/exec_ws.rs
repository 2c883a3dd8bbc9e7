//! Remote command over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`):
//! every binary message starts with a channel byte (0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize; v5 adds 255 = close the channel that follows).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::exec::{exit_status, run, ExecOptions, Output};
use super::status::go_json;
use super::upgrade::Io;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// How long to wait for the client to finish the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

fn message(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(1 + data.len());
    b.put_u8(channel);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

/// Runs the command for one WebSocket session.
pub(crate) async fn serve(ws: WebSocketStream<Io>, protocol: &str, opts: ExecOptions) {
    let supports_close = protocol == "v5.channel.k8s.io";
    let (mut sink, mut stream) = ws.split();
    let (stdin_tx, stdin_rx) = if opts.stdin {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };

    // Demultiplexes client messages until the client goes away; it also
    // drives tungstenite's automatic pong replies.
    let reader = tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(data)) => match data.first() {
                    Some(&STDIN) if data.len() > 1 => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(data.slice(1..));
                        }
                    }
                    // v5: [255, channel] closes that channel; only stdin matters.
                    Some(&CLOSE) if supports_close && data.get(1) == Some(&STDIN) => {
                        stdin_tx = None;
                    }
                    _ => {}
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        stream
    });

    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let run_opts = opts.clone();
    let runner = tokio::spawn(async move { run(&run_opts, stdin_rx, &out_tx).await });
    let mut client_gone = false;
    while let Some(out) = out_rx.recv().await {
        let msg = match out {
            Output::Stdout(b) if opts.stdout => message(STDOUT, &b),
            Output::Stderr(b) if opts.stderr => message(STDERR, &b),
            _ => continue,
        };
        if sink.send(msg).await.is_err() {
            client_gone = true;
            break;
        }
    }
    if client_gone {
        runner.abort();
        reader.abort();
        return;
    }
    let code = runner.await.unwrap_or(1);
    let status = go_json(&exit_status(code, &opts.command));
    let _ = sink.send(message(ERROR, status.as_bytes())).await;
    // A normal closure tells client-go's readers io.EOF.
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let mut reader = reader;
    match tokio::time::timeout(CLOSE_GRACE, &mut reader).await {
        // Close handshake done: end TLS with close_notify, as Go's server does.
        Ok(Ok(stream)) => {
            if let Ok(mut ws) = sink.reunite(stream) {
                let _ = ws.get_mut().shutdown().await;
            }
        }
        _ => reader.abort(),
    }
}
