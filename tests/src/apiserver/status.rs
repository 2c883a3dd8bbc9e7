//! `metav1.Status` bodies byte-for-byte as the apiserver writes them: Go field
//! order, empty fields omitted, HTML-escaped, newline-terminated.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::body::Body;

/// `metav1.Status`. Fields are declared in Go order so serde writes them in
/// the same order as `encoding/json`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Status {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "apiVersion", skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    pub metadata: Empty,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    #[serde(skip_serializing_if = "is_zero")]
    pub code: u16,
}

/// `metav1.ListMeta{}`: always written as `{}`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Empty {}

/// `metav1.StatusDetails`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

/// `metav1.StatusCause` (its `Type` is serialized as `reason`).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Cause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(c: &u16) -> bool {
    *c == 0
}

impl Status {
    /// A `Failure` Status as an API response (`kind`/`apiVersion` set).
    pub fn failure(code: u16, reason: &str, message: String, details: Option<Details>) -> Status {
        Status {
            kind: "Status".to_string(),
            api_version: "v1".to_string(),
            status: "Failure".to_string(),
            message,
            reason: reason.to_string(),
            details,
            code,
            ..Status::default()
        }
    }

    /// `apierrors.NewUnauthorized("Unauthorized")` as the authentication
    /// filter sends it (no details).
    pub fn unauthorized() -> Status {
        Status::failure(401, "Unauthorized", "Unauthorized".to_string(), None)
    }

    /// `apierrors.NewForbidden(groupResource, name, err)`.
    pub fn forbidden(group: &str, resource: &str, name: &str, err: &str) -> Status {
        let message = if group.is_empty() && resource.is_empty() {
            format!("forbidden: {err}")
        } else {
            let gr = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            if name.is_empty() {
                format!("{gr} is forbidden: {err}")
            } else {
                format!("{gr} \"{name}\" is forbidden: {err}")
            }
        };
        let details = Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: resource.to_string(),
            causes: Vec::new(),
        };
        Status::failure(403, "Forbidden", message, Some(details))
    }

    /// `apierrors.NewNotFound(groupResource, name)`.
    pub fn not_found(resource: &str, name: &str) -> Status {
        let details = Details {
            name: name.to_string(),
            kind: resource.to_string(),
            ..Details::default()
        };
        Status::failure(
            404,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
            Some(details),
        )
    }

    /// The 404 for a path no handler serves.
    pub fn path_not_found() -> Status {
        Status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource".to_string(),
            Some(Details::default()),
        )
    }

    /// `apierrors.NewBadRequest(msg)`.
    pub fn bad_request(message: String) -> Status {
        Status::failure(400, "BadRequest", message, None)
    }

    /// `apierrors.NewMethodNotSupported`-style 405.
    pub fn method_not_allowed() -> Status {
        Status::failure(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
            Some(Details::default()),
        )
    }

    /// Serializes like the apiserver's JSON encoder: HTML-escaped, with a
    /// trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = go_json(self);
        s.push('\n');
        s
    }

    /// The Status as audit `responseStatus` (no `kind`/`apiVersion`).
    pub fn audit_value(&self) -> serde_json::Value {
        let mut copy = self.clone();
        copy.kind.clear();
        copy.api_version.clear();
        serde_json::to_value(&copy).unwrap_or(serde_json::Value::Null)
    }
}

/// `json.Marshal` output: serde_json plus Go's HTML escaping of `<`, `>`, `&`
/// (these characters only occur inside JSON strings, so escaping in place is
/// safe).
pub(crate) fn go_json<T: Serialize>(v: &T) -> String {
    let raw = serde_json::to_string(v).unwrap_or_default();
    raw.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// A JSON API response with the headers the apiserver always sets.
pub(crate) fn json_response(code: u16, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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

/// A Status response.
pub(crate) fn status_response(status: &Status) -> Response<Body> {
    json_response(status.code, status.to_json())
}

/// A serialized object as a 200 JSON response (newline-terminated like the
/// apiserver's encoder).
pub(crate) fn object_response(v: &serde_json::Value) -> Response<Body> {
    let mut s = go_json(v);
    s.push('\n');
    json_response(200, s)
}

/// Go's `http.Error`: a plain-text body with a trailing newline.
pub(crate) fn text_error(code: u16, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::full(format!("{message}\n")));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_body_is_exact() {
        let body = Status::unauthorized().to_json();
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
        );
        assert_eq!(body.len(), 129);
    }

    #[test]
    fn exec_success_status_matches_go() {
        let s = Status {
            status: "Success".to_string(),
            ..Status::default()
        };
        assert_eq!(go_json(&s), "{\"metadata\":{},\"status\":\"Success\"}");
    }

    #[test]
    fn forbidden_messages() {
        let s = Status::forbidden("", "users", "bob", "User \"alice\" cannot impersonate");
        assert_eq!(
            s.message,
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate"
        );
        let s = Status::forbidden("", "", "", "User \"a\" cannot get path \"/x\"");
        assert_eq!(s.message, "forbidden: User \"a\" cannot get path \"/x\"");
        assert!(s.to_json().contains("\"details\":{}"));
    }
}
