//! Watch on pods: a chunked stream of `{"type":..,"object":..}` lines, one
//! chunk per event, ending at `timeoutSeconds`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::body::Body;
use super::pods::{negotiate, pod_json, pod_row, pod_table, Repr};
use super::requestinfo::query_value;
use super::server::Ctx;
use super::state::{lock, Pod, WatchEvent};
use super::status::{go_json, Status};

/// Without `timeoutSeconds` the apiserver closes after
/// `min-request-timeout` (1800 s) times a random factor; the double uses the
/// lower bound.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Serves a watch on the pod collection of the request.
pub(crate) fn serve(ctx: &Ctx) -> Result<Response<Body>, Status> {
    let repr = negotiate(ctx.accept.as_deref());
    let rv = query_value(&ctx.query, "resourceVersion").unwrap_or_default();
    let since = if rv.is_empty() || rv == "0" {
        None
    } else {
        Some(rv.parse::<u64>().map_err(|_| {
            Status::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a number"
            ))
        })?)
    };
    let timeout = query_value(&ctx.query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let namespace = ctx.info.namespace.clone();
    let name = ctx.info.name.clone();
    let matches = move |p: &Pod| {
        (namespace.is_empty() || p.namespace == namespace) && (name.is_empty() || p.name == name)
    };

    // Snapshot and subscribe under the store lock: events are broadcast under
    // the same lock, so none falls between the two.
    let (initial, mut rx) = {
        let store = lock(&ctx.shared.store);
        let rx = ctx.shared.watch_tx.subscribe();
        let initial: Vec<WatchEvent> = match since {
            // No or "0" resourceVersion: synthetic ADDED for the current state.
            None => store
                .pods
                .values()
                .filter(|p| matches(p))
                .map(|p| WatchEvent {
                    kind: "ADDED".to_string(),
                    pod: p.clone(),
                })
                .collect(),
            Some(rv) => store
                .history
                .iter()
                .filter(|e| e.pod.resource_version > rv && matches(&e.pod))
                .cloned()
                .collect(),
        };
        (initial, rx)
    };

    let (tx, body) = Body::channel();
    let completion = ctx.completion.clone();
    let shutdown = ctx.shared.shutdown.clone();
    tokio::spawn(async move {
        let _completion = completion;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for ev in initial {
            if tx.send(encode(&ev, repr)).await.is_err() {
                return;
            }
        }
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                ev = rx.recv() => ev,
            };
            match ev {
                Ok(ev) if matches(&ev.pod) => {
                    if tx.send(encode(&ev, repr)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // A watcher that fell behind is closed; clients re-list.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
            }
        }
    });

    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// One watch event line.
fn encode(ev: &WatchEvent, repr: Repr) -> Bytes {
    let object = match repr {
        Repr::Table(v) => pod_table(v, vec![pod_row(&ev.pod)], ev.pod.resource_version),
        Repr::Object => pod_json(&ev.pod, true),
    };
    let mut line = go_json(&json!({"type": ev.kind, "object": object}));
    line.push('\n');
    Bytes::from(line)
}
