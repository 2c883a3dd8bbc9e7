//! `pods/exec` and `pods/attach`: option parsing, the transport choice
//! (WebSocket or SPDY), and the fake commands the "container" runs.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::body::Body;
use super::pods;
use super::requestinfo::{parse_bool, query_value, query_values};
use super::server::Ctx;
use super::status::{text_error, Cause, Details, Status};
use super::upgrade::{self, spawn_upgraded};
use super::{exec_spdy, exec_ws};

/// Remote-command protocols the double speaks over WebSocket.
const WS_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Remote-command protocols over SPDY (v5 behaves as v4 there).
const SPDY_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What the client asked to run and which streams it wants.
#[derive(Clone, Debug)]
pub(crate) struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// `attach` rather than `exec`: the "main process" behaves like `cat`.
    pub attach: bool,
}

impl ExecOptions {
    fn parse(query: &str, attach: bool) -> Result<ExecOptions, Status> {
        let flag = |k: &str| {
            query_value(query, k)
                .and_then(|v| parse_bool(&v))
                .unwrap_or(false)
        };
        let mut opts = ExecOptions {
            command: query_values(query, "command"),
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
            tty: flag("tty"),
            attach,
        };
        if opts.tty {
            // The kubelet drops stderr with a TTY.
            opts.stderr = false;
        }
        if !attach && opts.command.is_empty() {
            return Err(Status::bad_request(
                "you must specify at least one command for the container".to_string(),
            ));
        }
        if !opts.stdin && !opts.stdout && !opts.stderr {
            return Err(Status::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr".to_string(),
            ));
        }
        Ok(opts)
    }
}

/// Serves an exec or attach request by upgrading the connection.
pub(crate) fn serve(ctx: &Ctx, req: &mut Request<Incoming>) -> Result<Response<Body>, Status> {
    let pod = pods::find(ctx)?;
    if let Some(c) = query_value(&ctx.query, "container") {
        if c != "main" {
            return Err(Status::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.name
            )));
        }
    }
    let opts = ExecOptions::parse(&ctx.query, ctx.info.subresource == "attach")?;
    if !upgrade::is_upgrade(req) {
        return Ok(text_error(400, "Upgrade request required"));
    }
    let completion = ctx.completion.clone();
    let shutdown = ctx.shared.shutdown.clone();
    if upgrade::is_websocket(req) {
        let (resp, proto) = match upgrade::websocket_accept(req, WS_PROTOCOLS) {
            Ok(ok) => ok,
            Err(refusal) => return Ok(refusal),
        };
        spawn_upgraded(req, shutdown, move |io| async move {
            let _completion = completion;
            let ws = upgrade::websocket(io).await;
            exec_ws::serve(ws, &proto, opts).await;
        });
        Ok(resp)
    } else {
        let (resp, _proto) = match upgrade::spdy_accept(req, SPDY_PROTOCOLS) {
            Ok(ok) => ok,
            Err(refusal) => return Ok(refusal),
        };
        spawn_upgraded(req, shutdown, move |io| async move {
            let _completion = completion;
            exec_spdy::serve(io, opts).await;
        });
        Ok(resp)
    }
}

/// Output of the fake process.
pub(crate) enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// Runs the fake command and returns its exit code. `stdin` ends when the
/// client closes it; output goes to `out`.
pub(crate) async fn run(
    opts: &ExecOptions,
    stdin: Option<UnboundedReceiver<Bytes>>,
    out: &UnboundedSender<Output>,
) -> i32 {
    if opts.attach {
        return cat(stdin, out).await;
    }
    run_argv(&opts.command, stdin, out).await
}

async fn cat(stdin: Option<UnboundedReceiver<Bytes>>, out: &UnboundedSender<Output>) -> i32 {
    if let Some(mut rx) = stdin {
        while let Some(chunk) = rx.recv().await {
            if out.send(Output::Stdout(chunk)).is_err() {
                break;
            }
        }
    }
    0
}

async fn run_argv(
    argv: &[String],
    stdin: Option<UnboundedReceiver<Bytes>>,
    out: &UnboundedSender<Output>,
) -> i32 {
    let say = |o: Output| {
        let _ = out.send(o);
    };
    match argv.first().map(String::as_str) {
        Some("echo") => {
            say(Output::Stdout(Bytes::from(format!(
                "{}\n",
                argv[1..].join(" ")
            ))));
            0
        }
        Some("cat") if argv.len() == 1 => cat(stdin, out).await,
        Some("true") => 0,
        Some("false") => 1,
        Some("sh") if argv.get(1).map(String::as_str) == Some("-c") => {
            let Some(script) = argv.get(2) else {
                say(Output::Stderr(Bytes::from_static(
                    b"sh: -c requires an argument\n",
                )));
                return 2;
            };
            let words: Vec<String> = script.split_whitespace().map(str::to_string).collect();
            match words.as_slice() {
                [exit] if exit == "exit" => 0,
                [exit, code] if exit == "exit" => {
                    code.parse::<i32>().map(|c| c & 0xff).unwrap_or(2)
                }
                [] => 0,
                _ => Box::pin(run_argv(&words, stdin, out)).await,
            }
        }
        Some(cmd) => {
            say(Output::Stderr(Bytes::from(format!(
                "sh: {cmd}: not found\n"
            ))));
            127
        }
        None => 127,
    }
}

/// The Status the kubelet reports on the error stream for an exit code
/// (`v4WriteStatusFunc`: no kind/apiVersion).
pub(crate) fn exit_status(code: i32, command: &[String]) -> Status {
    if code == 0 {
        return Status {
            status: "Success".to_string(),
            ..Status::default()
        };
    }
    Status {
        status: "Failure".to_string(),
        message: format!(
            "command terminated with non-zero exit code: command '{}' exited with {code}: ",
            command.join(" ")
        ),
        reason: "NonZeroExitCode".to_string(),
        details: Some(Details {
            causes: vec![Cause {
                reason: "ExitCode".to_string(),
                message: code.to_string(),
            }],
            ..Details::default()
        }),
        ..Status::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_json() {
        let s = super::super::status::go_json(&exit_status(
            3,
            &["sh".into(), "-c".into(), "exit 3".into()],
        ));
        assert_eq!(
            s,
            "{\"metadata\":{},\"status\":\"Failure\",\"message\":\"command terminated with non-zero exit code: command 'sh -c exit 3' exited with 3: \",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":[{\"reason\":\"ExitCode\",\"message\":\"3\"}]}}"
        );
    }

    #[tokio::test]
    async fn commands() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(run_argv(&argv(&["sh", "-c", "exit 7"]), None, &tx).await, 7);
        assert_eq!(run_argv(&argv(&["echo", "a", "b"]), None, &tx).await, 0);
        assert!(matches!(rx.recv().await, Some(Output::Stdout(b)) if b == "a b\n"));
        assert_eq!(run_argv(&argv(&["env"]), None, &tx).await, 127);
        assert!(matches!(rx.recv().await, Some(Output::Stderr(_))));
    }
}
