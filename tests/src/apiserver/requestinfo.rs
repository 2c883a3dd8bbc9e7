//! Port of `k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory`.

/// What the apiserver derives from a request's method, path and query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub is_resource_request: bool,
    /// The (still escaped) URL path.
    pub path: String,
    /// Kubernetes verb, or the lower-cased method for non-resource requests.
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub parts: Vec<String>,
}

impl RequestInfo {
    /// True for requests the apiserver treats as long-running
    /// (`BasicLongRunningRequestCheck(watch/proxy, attach/exec/proxy/log/portforward)`).
    pub fn is_long_running(&self) -> bool {
        matches!(self.verb.as_str(), "watch" | "proxy")
            || matches!(
                self.subresource.as_str(),
                "attach" | "exec" | "proxy" | "log" | "portforward"
            )
    }
}

/// Query parameter values for `key`, decoded, in order.
pub(crate) fn query_values(query: &str, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The first value of query parameter `key`.
pub(crate) fn query_value(query: &str, key: &str) -> Option<String> {
    query_values(query, key).into_iter().next()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses a request like `RequestInfoFactory.NewRequestInfo`.
pub(crate) fn parse(method: &str, path: &str, query: &str) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<String> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').map(str::to_string).collect()
    };
    if parts.len() < 3 || !(parts[0] == "api" || parts[0] == "apis") {
        return info;
    }
    info.api_prefix = parts.remove(0);
    if info.api_prefix != "api" {
        // Grouped prefix: needs group, version and a resource.
        if parts.len() < 3 {
            return info;
        }
        info.api_group = parts.remove(0);
    }
    info.is_resource_request = true;
    info.api_version = parts.remove(0);

    if parts.first().map(String::as_str) == Some("watch")
        || parts.first().map(String::as_str) == Some("proxy")
    {
        if parts.len() < 2 {
            // The real factory returns an error here; the request stays a
            // resource request without a resource.
            return info;
        }
        info.verb = parts.remove(0);
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
    }

    if parts.first().map(String::as_str) == Some("namespaces") && parts.len() > 1 {
        info.namespace = parts[1].clone();
        // "status" and "finalize" are subresources of the namespace itself.
        if parts.len() > 2 && !matches!(parts[2].as_str(), "status" | "finalize") {
            parts.drain(..2);
        }
    }
    info.parts = parts.clone();

    if parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = parts[2].clone();
    }
    if parts.len() >= 2 {
        info.name = parts[1].clone();
    }
    if !parts.is_empty() {
        info.resource = parts[0].clone();
    }

    if info.name.is_empty() && info.verb == "get" {
        let watch = query_values(query, "watch")
            .first()
            .map(|v| {
                parse_bool(v).unwrap_or(!matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
            })
            .unwrap_or(false);
        info.verb = if watch { "watch" } else { "list" }.to_string();
        if let Some(sel) = query_value(query, "fieldSelector") {
            if let Some(name) = exact_name(&sel) {
                info.name = name;
            }
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_string();
    }
    info
}

/// `fieldSelector.RequiresExactMatch("metadata.name")` for the simple
/// selectors clients send (`metadata.name=x` or `metadata.name==x`).
pub(crate) fn exact_name(selector: &str) -> Option<String> {
    let mut found = None;
    for term in selector.split(',') {
        let (k, v) = if let Some((k, v)) = term.split_once("==") {
            (k, v)
        } else if let Some((k, v)) = term.split_once('=') {
            if k.ends_with('!') {
                continue;
            }
            (k, v)
        } else {
            continue;
        };
        if k.trim() == "metadata.name" && !v.is_empty() && !v.contains('/') && v != "." && v != ".."
        {
            found = Some(v.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_requests() {
        let i = parse("GET", "/api/v1/namespaces/default/pods", "limit=500");
        assert!(i.is_resource_request);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "default", "pods")
        );

        let i = parse(
            "GET",
            "/api/v1/namespaces/default/pods",
            "watch=1&resourceVersion=5",
        );
        assert_eq!(i.verb, "watch");

        let i = parse("POST", "/api/v1/namespaces/ns/pods/p/exec", "command=ls");
        assert_eq!(
            (
                i.verb.as_str(),
                i.resource.as_str(),
                i.subresource.as_str(),
                i.name.as_str()
            ),
            ("create", "pods", "exec", "p")
        );

        let i = parse("GET", "/api/v1/namespaces/ns", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "ns", "ns")
        );

        let i = parse("GET", "/apis/apps/v1/deployments", "");
        assert_eq!((i.api_group.as_str(), i.verb.as_str()), ("apps", "list"));

        let i = parse(
            "GET",
            "/api/v1/namespaces/ns/pods",
            "fieldSelector=metadata.name%3Dweb&watch=true",
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "web"));
    }

    #[test]
    fn non_resource_requests() {
        for p in [
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/healthz",
            "/",
        ] {
            let i = parse("GET", p, "");
            assert!(!i.is_resource_request, "{p}");
            assert_eq!(i.verb, "get");
        }
    }
}
