//! Authentication (bearer tokens) and impersonation (a port of
//! `k8s.io/apiserver/pkg/endpoints/filters/impersonation.go`); every piece of
//! an impersonation request is authorized through [`super::rbac`].

use http::HeaderMap;

use super::rbac::{authorize, forbidden, Attributes};
use super::status::Status;
use super::{Rule, UserInfo};

pub(crate) const ALL_AUTHENTICATED: &str = "system:authenticated";
const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";
const SA_PREFIX: &str = "system:serviceaccount:";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Header values as strings, one per line (non-UTF-8 bytes replaced).
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// The bearer-token authenticator: `Authorization: Bearer <token>` looked up
/// in `tokens`; the user gets `system:authenticated` like every
/// authenticated user does.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    tokens: &std::collections::HashMap<String, UserInfo>,
) -> Option<UserInfo> {
    let auth = values(headers, "authorization").into_iter().next()?;
    let mut parts = auth.trim().splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    let mut user = tokens.get(token)?.clone();
    if !user
        .groups
        .iter()
        .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
    {
        user.groups.push(ALL_AUTHENTICATED.to_string());
    }
    Some(user)
}

/// A `v1.ObjectReference` built by `buildImpersonationRequests`.
struct ImpersonationRequest {
    kind: &'static str,
    namespace: String,
    name: String,
    api_version: &'static str,
    field_path: String,
}

impl ImpersonationRequest {
    /// Go's `%v` of an `ObjectReference` value:
    /// `{Kind Namespace Name UID APIVersion ResourceVersion FieldPath}`.
    fn go_value(&self) -> String {
        format!(
            "{{{} {} {} {} {} {} {}}}",
            self.kind, self.namespace, self.name, "", self.api_version, "", self.field_path
        )
    }
}

/// `url.PathUnescape`; `None` on a malformed escape.
fn path_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Go strings may hold any bytes; Rust ones cannot, so keep the raw key.
    String::from_utf8(out).ok()
}

/// `buildImpersonationRequests`.
fn build_requests(headers: &HeaderMap) -> Result<Vec<ImpersonationRequest>, Status> {
    let mut reqs = Vec::new();
    let user = values(headers, "impersonate-user")
        .into_iter()
        .next()
        .unwrap_or_default();
    let has_user = !user.is_empty();
    if has_user {
        match split_sa_username(&user) {
            Some((ns, name)) => reqs.push(ImpersonationRequest {
                kind: "ServiceAccount",
                namespace: ns,
                name,
                api_version: "",
                field_path: String::new(),
            }),
            None => reqs.push(ImpersonationRequest {
                kind: "User",
                namespace: String::new(),
                name: user.clone(),
                api_version: "",
                field_path: String::new(),
            }),
        }
    }
    // One group per header line: a line "a, b" is the single group "a, b".
    let groups = values(headers, "impersonate-group");
    let has_groups = !groups.is_empty();
    for g in groups {
        reqs.push(ImpersonationRequest {
            kind: "Group",
            namespace: String::new(),
            name: g,
            api_version: "",
            field_path: String::new(),
        });
    }
    let mut has_extra = false;
    for name in headers.keys() {
        let Some(raw_key) = name.as_str().strip_prefix(EXTRA_PREFIX) else {
            continue;
        };
        has_extra = true;
        let key = raw_key.to_ascii_lowercase();
        let key = path_unescape(&key).unwrap_or(key);
        for v in values(headers, name.as_str()) {
            reqs.push(ImpersonationRequest {
                kind: "UserExtra",
                namespace: String::new(),
                name: v,
                api_version: "authentication.k8s.io/v1",
                field_path: key.clone(),
            });
        }
    }
    let uid = values(headers, "impersonate-uid")
        .into_iter()
        .next()
        .unwrap_or_default();
    let has_uid = !uid.is_empty();
    if has_uid {
        reqs.push(ImpersonationRequest {
            kind: "UID",
            namespace: String::new(),
            name: uid,
            api_version: "authentication.k8s.io/v1",
            field_path: String::new(),
        });
    }
    if (has_groups || has_extra || has_uid) && !has_user {
        let list: Vec<String> = reqs.iter().map(ImpersonationRequest::go_value).collect();
        return Err(Status::bad_request(format!(
            "requested [{}] without impersonating a user",
            list.join(" ")
        )));
    }
    Ok(reqs)
}

/// `serviceaccount.SplitUsername`.
fn split_sa_username(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix(SA_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    if ns.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    Some((ns.to_string(), name.to_string()))
}

/// Runs the impersonation filter. `Ok(None)`: no impersonation headers.
/// `Err`: the Status to answer with (400 or 403).
pub(crate) fn impersonate(
    headers: &HeaderMap,
    requestor: &UserInfo,
    rules: &[Rule],
) -> Result<Option<UserInfo>, Status> {
    let reqs = build_requests(headers)?;
    if reqs.is_empty() {
        return Ok(None);
    }
    let groups_specified = headers.contains_key("impersonate-group");
    let mut user = UserInfo::default();
    for r in &reqs {
        let mut attrs = Attributes {
            verb: "impersonate".to_string(),
            resource_request: true,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            ..Attributes::default()
        };
        match r.kind {
            "ServiceAccount" => {
                attrs.resource = "serviceaccounts".to_string();
                user.username = format!("{SA_PREFIX}{}:{}", r.namespace, r.name);
                if !groups_specified {
                    user.groups = vec![
                        "system:serviceaccounts".to_string(),
                        format!("system:serviceaccounts:{}", r.namespace),
                    ];
                }
            }
            "User" => {
                attrs.resource = "users".to_string();
                user.username = r.name.clone();
            }
            "Group" => {
                attrs.resource = "groups".to_string();
                user.groups.push(r.name.clone());
            }
            "UserExtra" => {
                attrs.api_group = "authentication.k8s.io".to_string();
                attrs.api_version = "v1".to_string();
                attrs.resource = "userextras".to_string();
                attrs.subresource = r.field_path.clone();
                user.extra
                    .entry(r.field_path.clone())
                    .or_default()
                    .push(r.name.clone());
            }
            _ => {
                attrs.api_group = "authentication.k8s.io".to_string();
                attrs.api_version = "v1".to_string();
                attrs.resource = "uids".to_string();
                user.uid = r.name.clone();
            }
        }
        if authorize(requestor, &attrs, rules).is_none() {
            return Err(forbidden(requestor, &attrs, ""));
        }
    }
    if user.username != ANONYMOUS {
        if !user
            .groups
            .iter()
            .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
        {
            user.groups.push(ALL_AUTHENTICATED.to_string());
        }
    } else if !user.groups.iter().any(|g| g == ALL_UNAUTHENTICATED) {
        user.groups.push(ALL_UNAUTHENTICATED.to_string());
    }
    Ok(Some(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn group_without_user_is_rejected_with_go_formatting() {
        let h = hdrs(&[("Impersonate-Group", "a, b"), ("Impersonate-Uid", "u1")]);
        let err = impersonate(&h, &UserInfo::new("alice"), &[]).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "requested [{Group  a, b    } {UID  u1  authentication.k8s.io/v1  }] without impersonating a user"
        );
    }

    #[test]
    fn impersonation_builds_user() {
        let h = hdrs(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "g1"),
            ("Impersonate-Group", "g2, g3"),
            ("Impersonate-Extra-Acme.com%2Fproject", "p1"),
            ("Impersonate-Extra-Bad%zz", "x"),
        ]);
        let u = impersonate(
            &h,
            &UserInfo::new("admin"),
            &[Rule::allow_all("user:admin")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(u.username, "bob");
        assert_eq!(u.groups, ["g1", "g2, g3", "system:authenticated"]);
        assert_eq!(u.extra["acme.com/project"], ["p1"]);
        assert_eq!(u.extra["bad%zz"], ["x"]);
    }

    #[test]
    fn service_account_gets_sa_groups() {
        let h = hdrs(&[("Impersonate-User", "system:serviceaccount:ns1:robot")]);
        let u = impersonate(&h, &UserInfo::new("admin"), &[Rule::allow_all("*")])
            .unwrap()
            .unwrap();
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn denied_impersonation_message() {
        let h = hdrs(&[("Impersonate-User", "bob")]);
        let err = impersonate(&h, &UserInfo::new("alice"), &[]).unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn subresource_and_names() {
        let rule = Rule {
            subjects: vec!["group:devs".into()],
            verbs: vec!["impersonate".into()],
            api_groups: vec!["authentication.k8s.io".into()],
            resources: vec!["userextras/scopes".into()],
            resource_names: vec!["view".into()],
            non_resource_urls: vec![],
        };
        let mut u = UserInfo::new("carol");
        u.groups.push("devs".into());
        let mut a = Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            api_group: "authentication.k8s.io".into(),
            resource: "userextras".into(),
            subresource: "scopes".into(),
            name: "view".into(),
            ..Attributes::default()
        };
        assert!(authorize(&u, &a, std::slice::from_ref(&rule)).is_some());
        a.name = "edit".into();
        assert!(authorize(&u, &a, &[rule]).is_none());
    }
}
