//! Kubernetes `Status` bodies, so API clients and kubectl print proper errors.

use super::body::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

/// A `meta/v1` Status with `status: Failure`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    /// Human-readable description, printed by kubectl after "Error from server".
    pub message: String,
    /// Machine-readable reason (`NotFound`, `ServiceUnavailable`, ...).
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
    /// The HTTP status code.
    pub code: u16,
}

#[derive(Debug, Clone, Serialize)]
struct Empty {}

impl Status {
    /// A failure Status.
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason,
            details: None,
            code: code.as_u16(),
        }
    }

    /// Adds `details` (for example `{"name": "eu1", "kind": "clusters"}`).
    pub fn with_details(mut self, details: serde_json::Value) -> Status {
        self.details = Some(details);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 404 NotFound for an unknown cluster.
    pub fn cluster_not_found(name: &str) -> Status {
        Status::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("clusters \"{name}\" not found"),
        )
        .with_details(serde_json::json!({"name": name, "kind": "clusters"}))
    }

    /// 404 NotFound for a path outside `/clusters/<name>/`.
    pub fn path_not_found(path: &str) -> Status {
        Status::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource: {path} is not under /clusters/<name>/"),
        )
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 504 Timeout, as kube-apiserver sends when a request runs out of time.
    pub fn timeout(limit: std::time::Duration) -> Status {
        Status::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!(
                "Timeout: request did not complete within the hub's timeout of {}",
                humantime::format_duration(limit)
            ),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The HTTP response carrying this Status.
    pub fn into_response(self) -> Response<Body> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Go's JSON encoder ends the body with a newline; kubectl and byte-exact
        // clients see the same 129-byte 401 body kube-apiserver sends.
        let mut resp = Response::new(full(format!("{}\n", self.to_json())));
        *resp.status_mut() = code;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_order_matches_kube_apiserver() {
        let s = Status::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        assert_eq!(
            s.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
    }

    #[tokio::test]
    async fn body_ends_with_a_newline_like_kube_apiserver() {
        use http_body_util::BodyExt;
        let resp =
            Status::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized").into_response();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 129);
        assert!(body.ends_with(b"}\n"));
    }

    #[test]
    fn not_found_names_the_cluster() {
        let v: serde_json::Value =
            serde_json::from_str(&Status::cluster_not_found("eu1").to_json()).unwrap();
        assert_eq!(v["code"], 404);
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["details"]["name"], "eu1");
        assert_eq!(v["message"], "clusters \"eu1\" not found");
    }
}
