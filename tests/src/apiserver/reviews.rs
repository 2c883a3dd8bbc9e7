//! Self reviews: `SelfSubjectReview` (`kubectl auth whoami`) reports the
//! effective user, `SelfSubjectAccessReview` (`kubectl auth can-i`) asks the
//! authorizer. Both are how a test sees, through kubectl, who the request
//! arrived as.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::body::Body;
use super::rbac::{self, Attributes};
use super::server::Ctx;
use super::status::{go_json, json_response, Status};

mod protobuf;

/// Largest review body accepted.
const MAX_BODY: usize = 1 << 20;

/// The API groups the double serves besides the core group.
pub(crate) fn api_groups() -> Value {
    let group = |name: &str| {
        let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
        json!({"name": name, "versions": [gv], "preferredVersion": gv})
    };
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group("authentication.k8s.io"), group("authorization.k8s.io")],
    })
}

/// The `APIResourceList` of a group version the double serves.
pub(crate) fn resources(group_version: &str) -> Option<Value> {
    let (name, kind) = match group_version {
        "authentication.k8s.io/v1" => ("selfsubjectreviews", "SelfSubjectReview"),
        "authorization.k8s.io/v1" => ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
        _ => return None,
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [{
            "name": name,
            "singularName": name.trim_end_matches('s'),
            "namespaced": false,
            "kind": kind,
            "verbs": ["create"],
        }],
    }))
}

async fn read_body(req: &mut Request<Incoming>) -> Result<Bytes, Status> {
    Ok(Limited::new(req.body_mut(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Status::bad_request(format!("reading request body: {e}")))?
        .to_bytes())
}

/// The review's `spec` as JSON; kubectl's clientset sends protobuf.
async fn read_spec(req: &mut Request<Incoming>) -> Result<Value, Status> {
    let protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/vnd.kubernetes.protobuf")
        });
    let body = read_body(req).await?;
    if protobuf {
        return protobuf::access_review_spec(&body).ok_or_else(|| {
            Status::bad_request("decoding request body: invalid protobuf".to_string())
        });
    }
    let review: Value = serde_json::from_slice(&body)
        .map_err(|e| Status::bad_request(format!("decoding request body: {e}")))?;
    Ok(review["spec"].clone())
}

fn created(v: &Value) -> Response<Body> {
    let mut s = go_json(v);
    s.push('\n');
    json_response(201, s)
}

/// POST `/apis/authentication.k8s.io/v1/selfsubjectreviews`.
pub(crate) async fn whoami(
    ctx: &Ctx,
    req: &mut Request<Incoming>,
) -> Result<Response<Body>, Status> {
    // The spec of a SelfSubjectReview is empty; only the caller matters.
    read_body(req).await?;
    let u = &ctx.user;
    let mut info = serde_json::Map::new();
    info.insert("username".into(), json!(u.username));
    if !u.uid.is_empty() {
        info.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        info.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        info.insert("extra".into(), json!(u.extra));
    }
    Ok(created(&json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": info},
    })))
}

/// POST `/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub(crate) async fn can_i(
    ctx: &Ctx,
    req: &mut Request<Incoming>,
) -> Result<Response<Body>, Status> {
    let spec = read_spec(req).await?;
    let spec = &spec;
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: text(r, "verb"),
            resource_request: true,
            api_group: text(r, "group"),
            api_version: text(r, "version"),
            namespace: text(r, "namespace"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            name: text(r, "name"),
            path: String::new(),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: text(n, "verb"),
            path: text(n, "path"),
            ..Attributes::default()
        }
    } else {
        return Err(Status::bad_request(
            "spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified"
                .to_string(),
        ));
    };
    let decision = rbac::authorize(&ctx.user, &attrs, &ctx.shared.cfg.rules);
    let mut status = json!({"allowed": decision.is_some()});
    if let Some(reason) = decision {
        status["reason"] = json!(reason);
    }
    Ok(created(&json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    })))
}
