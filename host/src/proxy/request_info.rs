//! What a Kubernetes API path asks for, parsed as k8s.io/apiserver's
//! `RequestInfoFactory` does, enough to tell long-running requests apart and to
//! give stages and audit the verb and resource.

/// The parsed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// True for `/api/...` and `/apis/...` paths.
    pub is_resource_request: bool,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, ...), or the lower-cased HTTP
    /// method for non-resource requests.
    pub verb: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace, if any.
    pub namespace: String,
    /// Resource, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `exec`.
    pub subresource: String,
    /// Object name.
    pub name: String,
}

/// A raw request path percent-decoded, as the API server reads it. Bytes that are not
/// UTF-8 become U+FFFD: no Kubernetes name contains them, and the API server answers
/// such a path with 404 whatever Hawser makes of it. (The front refuses encoded
/// slashes, so decoding never adds a segment.)
pub fn decoded_path(raw: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// Verbs kube-apiserver exempts from its request timeout.
const LONG_RUNNING_VERBS: [&str; 2] = ["watch", "proxy"];
/// Subresources kube-apiserver exempts from its request timeout.
const LONG_RUNNING_SUBRESOURCES: [&str; 5] = ["attach", "exec", "proxy", "log", "portforward"];

impl RequestInfo {
    /// Parses a raw path (without the `/clusters/<name>` prefix) and query. The path
    /// is percent-decoded first, as kube-apiserver reads `URL.Path`: otherwise
    /// `/api/v1/namespaces/x/%73ecrets` would be served as secrets but classified (and
    /// audited) as something else.
    pub fn parse(method: &http::Method, path: &str, query: Option<&str>) -> RequestInfo {
        let path = decoded_path(path);
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let mut info = RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            ..Default::default()
        };
        let rest = match parts.as_slice() {
            ["api", version, rest @ ..] => {
                info.api_version = (*version).to_string();
                rest
            }
            ["apis", group, version, rest @ ..] => {
                info.api_group = (*group).to_string();
                info.api_version = (*version).to_string();
                rest
            }
            _ => return info,
        };
        info.is_resource_request = true;
        let mut rest: &[&str] = rest;
        let mut explicit_verb = None;
        if let Some(first @ ("watch" | "proxy")) = rest.first().copied() {
            explicit_verb = Some(first);
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            info.namespace = rest[1].to_string();
            if rest.len() > 2 {
                rest = &rest[2..];
            } else {
                info.resource = "namespaces".into();
                info.name = rest[1].to_string();
                rest = &[];
            }
        }
        if let Some(r) = rest.first() {
            info.resource = (*r).to_string();
        }
        if let Some(n) = rest.get(1) {
            info.name = (*n).to_string();
        }
        if let Some(s) = rest.get(2) {
            info.subresource = (*s).to_string();
        }
        info.verb = match (explicit_verb, method.as_str()) {
            (Some(v), _) => v.to_string(),
            (None, "GET" | "HEAD") if info.name.is_empty() => if watch_requested(query) {
                "watch"
            } else {
                "list"
            }
            .to_string(),
            (None, "GET" | "HEAD") => "get".into(),
            (None, "POST") => "create".into(),
            (None, "PUT") => "update".into(),
            (None, "PATCH") => "patch".into(),
            (None, "DELETE") if info.name.is_empty() => "deletecollection".into(),
            (None, "DELETE") => "delete".into(),
            (None, other) => other.to_ascii_lowercase(),
        };
        info
    }

    /// Requests kube-apiserver does not time out: watch, proxy, and the attach, exec,
    /// proxy, log and portforward subresources.
    pub fn is_long_running(&self) -> bool {
        self.is_resource_request
            && (LONG_RUNNING_VERBS.contains(&self.verb.as_str())
                || LONG_RUNNING_SUBRESOURCES.contains(&self.subresource.as_str()))
    }
}

fn watch_requested(query: Option<&str>) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == "watch" && (v == "1" || v.eq_ignore_ascii_case("true")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn parse(m: Method, p: &str, q: Option<&str>) -> RequestInfo {
        RequestInfo::parse(&m, p, q)
    }

    #[test]
    fn verbs_and_long_running() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                None,
                "list",
                false,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                Some("watch=1"),
                "watch",
                true,
            ),
            (
                Method::GET,
                "/api/v1/pods",
                Some("watch=true&resourceVersion=5"),
                "watch",
                true,
            ),
            (Method::GET, "/api/v1/watch/pods", None, "watch", true),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/p",
                None,
                "get",
                false,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/p/log",
                Some("follow=true"),
                "get",
                true,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/p/exec",
                None,
                "create",
                true,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/p/exec",
                None,
                "get",
                true,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/p/portforward",
                None,
                "create",
                true,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/p/attach",
                None,
                "create",
                true,
            ),
            (
                Method::DELETE,
                "/apis/apps/v1/namespaces/x/deployments",
                None,
                "deletecollection",
                false,
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/x/deployments/d",
                None,
                "patch",
                false,
            ),
            (Method::GET, "/version", None, "get", false),
            (Method::GET, "/api", None, "get", false),
        ];
        for (m, p, q, verb, long) in cases {
            let info = parse(m.clone(), p, q);
            assert_eq!(info.verb, verb, "{m} {p}");
            assert_eq!(info.is_long_running(), long, "{m} {p}");
        }
    }

    #[test]
    fn percent_encoded_paths_are_read_as_the_api_server_reads_them() {
        let i = parse(Method::GET, "/api/v1/namespaces/prod/%73ecrets/db", None);
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str()
            ),
            ("get", "prod", "secrets", "db")
        );
        let i = parse(
            Method::GET,
            "/api/v1/namespaces/%64efault/pods/web/%65xec",
            None,
        );
        assert_eq!(
            (i.resource.as_str(), i.subresource.as_str()),
            ("pods", "exec")
        );
        assert!(i.is_long_running());
        assert_eq!(
            decoded_path("/api/v1/pods/a%ffb"),
            "/api/v1/pods/a\u{fffd}b"
        );
    }

    #[test]
    fn resource_fields() {
        let i = parse(
            Method::GET,
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            None,
        );
        assert_eq!(
            (i.api_group.as_str(), i.api_version.as_str()),
            ("apps", "v1")
        );
        assert_eq!(
            (i.namespace.as_str(), i.resource.as_str()),
            ("ns", "deployments")
        );
        assert_eq!((i.name.as_str(), i.subresource.as_str()), ("d", "scale"));
        let i = parse(Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (i.resource.as_str(), i.name.as_str()),
            ("namespaces", "kube-system")
        );
    }
}
