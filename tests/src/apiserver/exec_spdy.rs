//! Remote command over SPDY/3.1 (`v4.channel.k8s.io`, and `v5` which is the
//! same on SPDY): the client opens one stream per `streamType` (error, stdin,
//! stdout, stderr, resize); the exit Status goes on the error stream.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::exec::{exit_status, run, ExecOptions, Output};
use super::spdy::SpdySession;
use super::status::go_json;
use super::upgrade::Io;

/// The kubelet's `streamCreationTimeout`.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the client to close the connection at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Runs the command for one SPDY connection.
pub(crate) async fn serve(io: Io, opts: ExecOptions) {
    let Ok(mut session) = SpdySession::start(io) else {
        return;
    };
    // Like the kubelet: error + one per requested stream (+ resize for a TTY).
    let expected = 1 + [opts.stdin, opts.stdout, opts.stderr, opts.tty]
        .iter()
        .filter(|b| **b)
        .count();
    let (mut error, mut stdout, mut stderr) = (None, None, None);
    let mut stdin: Option<(u32, mpsc::UnboundedReceiver<Bytes>)> = None;
    let mut others = Vec::new();
    let mut received = 0;
    let mut last_id = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            _ = &mut deadline => return,
            s = session.incoming.recv() => match s {
                Some(s) => s,
                None => return,
            },
        };
        last_id = last_id.max(stream.id);
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        match kind.as_str() {
            "error" => error = Some(stream.id),
            "stdin" => stdin = Some((stream.id, stream.data)),
            "stdout" => stdout = Some(stream.id),
            "stderr" => stderr = Some(stream.id),
            // Resize events are accepted and ignored.
            "resize" => others.push(stream),
            _ => continue,
        }
        received += 1;
    }

    let writer = session.writer.clone();
    let stdin_id = stdin.as_ref().map(|(id, _)| *id);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let run_opts = opts.clone();
    let runner =
        tokio::spawn(async move { run(&run_opts, stdin.map(|(_, rx)| rx), &out_tx).await });
    while let Some(out) = out_rx.recv().await {
        let (id, data) = match out {
            Output::Stdout(b) => (stdout, b),
            Output::Stderr(b) => (stderr, b),
        };
        if let Some(id) = id {
            if !writer.data(id, data) {
                runner.abort();
                return;
            }
        }
    }
    let code = runner.await.unwrap_or(1);
    if let Some(id) = error {
        writer.data(id, Bytes::from(go_json(&exit_status(code, &opts.command))));
    }
    let ours = [stdout, stderr, error, stdin_id]
        .into_iter()
        .flatten()
        .chain(others.iter().map(|s| s.id));
    for id in ours {
        writer.fin(id);
    }
    // Like spdystream's Close: GOAWAY, then wait for the client to hang up.
    writer.go_away(last_id);
    session.wait_closed(CLOSE_GRACE).await;
    session.close(CLOSE_GRACE).await;
}
