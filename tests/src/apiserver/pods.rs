//! Pods and namespaces as JSON objects, lists and server-side `Table`s.

use std::collections::BTreeSet;
use std::time::SystemTime;

use http::Response;
use serde_json::{json, Value};

use super::body::Body;
use super::server::Ctx;
use super::state::{lock, Pod};
use super::status::{object_response, Status};
use super::timefmt::{human_duration, rfc3339};

/// The representation an `Accept` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repr {
    /// The plain object (`application/json`).
    Object,
    /// `meta.k8s.io` Table of the given version (`v1` or `v1beta1`).
    Table(&'static str),
}

/// Content negotiation as the apiserver does it for the media types kubectl
/// sends: the first acceptable entry wins.
pub(crate) fn negotiate(accept: Option<&str>) -> Repr {
    let Some(accept) = accept else {
        return Repr::Object;
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        if !matches!(media, "application/json" | "application/*" | "*/*") {
            continue;
        }
        match param("as") {
            None => return Repr::Object,
            Some("Table") if param("g") == Some("meta.k8s.io") => match param("v") {
                Some("v1") => return Repr::Table("v1"),
                Some("v1beta1") => return Repr::Table("v1beta1"),
                _ => continue,
            },
            _ => continue,
        }
    }
    Repr::Object
}

/// A full `v1.Pod` with one running, ready container named `main`.
pub(crate) fn pod_json(p: &Pod, with_type_meta: bool) -> Value {
    let created = rfc3339(p.created);
    let mut v = json!({
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "uid": p.uid,
            "resourceVersion": p.resource_version.to_string(),
            "creationTimestamp": created,
        },
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36", "stdin": true}],
            "restartPolicy": "Always",
            "nodeName": "double-node",
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": created}],
            "podIP": "10.0.0.10",
            "startTime": created,
            "containerStatuses": [{
                "name": "main",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "image": "busybox:1.36",
                "imageID": "",
                "state": {"running": {"startedAt": created}},
            }],
        },
    });
    if with_type_meta {
        if let Value::Object(m) = &mut v {
            m.insert("kind".into(), json!("Pod"));
            m.insert("apiVersion".into(), json!("v1"));
        }
    }
    v
}

fn column(name: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0})
}

/// The pod columns `kubectl get pods` shows (the non-wide ones).
fn pod_columns() -> Value {
    json!([
        column("Name", "name", "Name must be unique within a namespace."),
        column("Ready", "", "The aggregate readiness state of this pod for accepting traffic."),
        column("Status", "", "The aggregate status of the containers in this pod."),
        column("Restarts", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        column("Age", "", "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ])
}

/// The `PartialObjectMetadata` embedded in each Table row by default.
fn partial_metadata(
    name: &str,
    namespace: Option<&str>,
    rv: u64,
    uid: &str,
    created: SystemTime,
) -> Value {
    let mut meta = json!({
        "name": name,
        "uid": uid,
        "resourceVersion": rv.to_string(),
        "creationTimestamp": rfc3339(created),
    });
    if let (Some(ns), Value::Object(m)) = (namespace, &mut meta) {
        m.insert("namespace".into(), json!(ns));
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// One Table row for a pod.
pub(crate) fn pod_row(p: &Pod) -> Value {
    let age = human_duration(
        SystemTime::now()
            .duration_since(p.created)
            .unwrap_or_default(),
    );
    json!({
        "cells": [p.name, "1/1", "Running", "0", age],
        "object": partial_metadata(&p.name, Some(&p.namespace), p.resource_version, &p.uid, p.created),
    })
}

/// A `meta.k8s.io` Table of pods.
pub(crate) fn pod_table(version: &str, rows: Vec<Value>, rv: u64) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": pod_columns(),
        "rows": rows,
    })
}

/// GET on a pod collection: `PodList` or `Table`.
pub(crate) fn list(ctx: &Ctx) -> Result<Response<Body>, Status> {
    let repr = negotiate(ctx.accept.as_deref());
    let store = lock(&ctx.shared.store);
    let pods: Vec<&Pod> = store
        .pods
        .values()
        .filter(|p| ctx.info.namespace.is_empty() || p.namespace == ctx.info.namespace)
        .filter(|p| ctx.info.name.is_empty() || p.name == ctx.info.name)
        .collect();
    let rv = store.resource_version;
    let body = match repr {
        Repr::Table(v) => pod_table(v, pods.iter().map(|p| pod_row(p)).collect(), rv),
        Repr::Object => json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "items": pods.iter().map(|p| pod_json(p, false)).collect::<Vec<_>>(),
        }),
    };
    Ok(object_response(&body))
}

/// Looks up the pod named by the request, or the NotFound Status.
pub(crate) fn find(ctx: &Ctx) -> Result<Pod, Status> {
    lock(&ctx.shared.store)
        .pods
        .get(&(ctx.info.namespace.clone(), ctx.info.name.clone()))
        .cloned()
        .ok_or_else(|| Status::not_found("pods", &ctx.info.name))
}

/// GET on a single pod.
pub(crate) fn get(ctx: &Ctx) -> Result<Response<Body>, Status> {
    let pod = find(ctx)?;
    let body = match negotiate(ctx.accept.as_deref()) {
        Repr::Table(v) => pod_table(v, vec![pod_row(&pod)], pod.resource_version),
        Repr::Object => pod_json(&pod, true),
    };
    Ok(object_response(&body))
}

/// GET on namespaces: `default`, `kube-system` and every namespace holding a
/// pod, all Active.
pub(crate) fn namespaces(ctx: &Ctx) -> Result<Response<Body>, Status> {
    let store = lock(&ctx.shared.store);
    let mut names: BTreeSet<String> = ["default", "kube-system"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(store.pods.keys().map(|(ns, _)| ns.clone()));
    let rv = store.resource_version;
    drop(store);
    let wanted: Vec<&String> = names
        .iter()
        .filter(|n| ctx.info.name.is_empty() || **n == ctx.info.name)
        .collect();
    let single = ctx.info.parts.len() == 2;
    if single && wanted.is_empty() {
        return Err(Status::not_found("namespaces", &ctx.info.name));
    }
    let created = ctx.shared.started;
    let object = |n: &str| {
        json!({
            "metadata": {"name": n, "uid": n, "resourceVersion": "1", "creationTimestamp": rfc3339(created)},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        })
    };
    let body = match negotiate(ctx.accept.as_deref()) {
        Repr::Table(v) => json!({
            "kind": "Table",
            "apiVersion": format!("meta.k8s.io/{v}"),
            "metadata": {"resourceVersion": rv.to_string()},
            "columnDefinitions": [
                column("Name", "name", "Name must be unique within a namespace."),
                column("Status", "", "The status of the namespace"),
                column("Age", "", "CreationTimestamp is a timestamp representing the server time when this object was created."),
            ],
            "rows": wanted.iter().map(|n| json!({
                "cells": [n, "Active", human_duration(SystemTime::now().duration_since(created).unwrap_or_default())],
                "object": partial_metadata(n, None, 1, n, created),
            })).collect::<Vec<_>>(),
        }),
        Repr::Object if single => {
            let mut o = object(wanted[0]);
            if let Value::Object(m) = &mut o {
                m.insert("kind".into(), json!("Namespace"));
                m.insert("apiVersion".into(), json!("v1"));
            }
            o
        }
        Repr::Object => json!({
            "kind": "NamespaceList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "items": wanted.iter().map(|n| object(n)).collect::<Vec<_>>(),
        }),
    };
    Ok(object_response(&body))
}

/// Any method on `pods/<name>/proxy[/<path>]`. The real API server relays the request
/// to the pod; the double plays the pod too, as an application that may answer with
/// anything: 200, a text body naming the path, and every response header the query asks
/// for (`?header=<name>:<value>`, repeatable), after thinking for `?delay_ms=<n>`
/// first, like an application that is slow to start its answer. Like the real proxy it
/// does not switch protocols when the backend answers an upgrade request without `101`.
pub(crate) async fn proxy(ctx: &Ctx) -> Result<Response<Body>, Status> {
    let pod = find(ctx)?;
    let delay = url::form_urlencoded::parse(ctx.query.as_bytes())
        .find(|(k, _)| k == "delay_ms")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let rest = ctx.info.parts[3..].join("/");
    let mut resp = Response::new(Body::full(format!("pod {} answered /{rest}\n", pod.name)));
    for (k, v) in url::form_urlencoded::parse(ctx.query.as_bytes()) {
        let Some((name, value)) = v.split_once(':').filter(|_| k == "header") else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_kubectl_get() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)), Repr::Table("v1"));
        assert_eq!(negotiate(Some("application/json")), Repr::Object);
        assert_eq!(negotiate(None), Repr::Object);
        assert_eq!(
            negotiate(Some(
                "application/vnd.kubernetes.protobuf, application/json"
            )),
            Repr::Object
        );
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io")),
            Repr::Table("v1beta1")
        );
    }
}
