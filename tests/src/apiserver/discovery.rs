//! Non-resource endpoints: `/version`, legacy discovery (`/api`, `/apis`,
//! `/api/v1`, `/apis/<group>/v1`) and the health checks. Aggregated discovery is not offered, so
//! clients fall back to legacy discovery as they do with older servers.

use http::{header, HeaderValue, Response};
use serde_json::json;

use super::body::Body;
use super::reviews;
use super::server::Ctx;
use super::status::{object_response, Status};

/// Serves a non-resource GET.
pub(crate) fn serve(ctx: &Ctx, path: &str) -> Result<Response<Body>, Status> {
    match path {
        "/version" | "/version/" => Ok(object_response(&version(&ctx.shared.cfg.version))),
        "/api" | "/api/" => Ok(object_response(&json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
            ],
        }))),
        "/apis" | "/apis/" => Ok(object_response(&reviews::api_groups())),
        "/api/v1" | "/api/v1/" => Ok(object_response(&core_v1_resources())),
        "/healthz" | "/livez" | "/readyz" => {
            let mut resp = Response::new(Body::full("ok"));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp.headers_mut().insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            Ok(resp)
        }
        _ => path
            .strip_prefix("/apis/")
            .and_then(|gv| reviews::resources(gv.trim_end_matches('/')))
            .map(|list| object_response(&list))
            .ok_or_else(Status::path_not_found),
    }
}

/// `version.Info` for a `vMAJOR.MINOR.PATCH` git version.
fn version(git_version: &str) -> serde_json::Value {
    let mut nums = git_version.trim_start_matches('v').split(['.', '-', '+']);
    let major = nums.next().unwrap_or("1").to_string();
    let minor = nums.next().unwrap_or("0").to_string();
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The `APIResourceList` of the core group, limited to what the double serves.
fn core_v1_resources() -> serde_json::Value {
    let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs});
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "namespaces", "singularName": "namespace", "namespaced": false,
                "kind": "Namespace", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": ["ns"],
            },
            {
                "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": ["po"], "categories": ["all"],
            },
            sub("pods/attach", "PodAttachOptions", &["create", "get"]),
            sub("pods/exec", "PodExecOptions", &["create", "get"]),
            sub("pods/log", "Pod", &["get"]),
            sub("pods/portforward", "PodPortForwardOptions", &["create", "get"]),
        ],
    })
}
