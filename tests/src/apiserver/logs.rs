//! `pods/log`: the lines appended so far as `text/plain`, and with
//! `follow=true` every later line as soon as it is appended.

use http::{header, HeaderValue, Response};
use tokio::sync::broadcast::error::RecvError;

use super::body::Body;
use super::pods;
use super::requestinfo::{parse_bool, query_value};
use super::server::Ctx;
use super::state::lock;
use super::status::Status;

/// Serves GET `.../pods/<name>/log`.
pub(crate) fn serve(ctx: &Ctx) -> Result<Response<Body>, Status> {
    let pod = pods::find(ctx)?;
    if let Some(c) = query_value(&ctx.query, "container") {
        if c != "main" {
            return Err(Status::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.name
            )));
        }
    }
    let follow = query_value(&ctx.query, "follow")
        .and_then(|v| parse_bool(&v))
        .unwrap_or(false);
    let key = (pod.namespace.clone(), pod.name.clone());

    // Snapshot and subscribe under the store lock so no line falls between.
    let (existing, mut rx) = {
        let store = lock(&ctx.shared.store);
        let rx = ctx.shared.log_tx.subscribe();
        (store.logs.get(&key).cloned().unwrap_or_default(), rx)
    };

    let (tx, body) = Body::channel();
    let completion = ctx.completion.clone();
    let shutdown = ctx.shared.shutdown.clone();
    tokio::spawn(async move {
        let _completion = completion;
        for line in existing {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            let line = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                line = rx.recv() => line,
            };
            match line {
                Ok(l) if l.namespace == key.0 && l.pod == key.1 => {
                    if tx.send(l.text).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
            }
        }
    });

    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}
