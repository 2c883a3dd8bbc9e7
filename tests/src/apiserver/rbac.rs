//! An RBAC-like authorizer over the double's [`Rule`]s, with the real
//! `Forbidden` messages of `responsewriters.Forbidden`.

use super::auth::ALL_AUTHENTICATED;
use super::requestinfo::RequestInfo;
use super::status::Status;
use super::{Rule, UserInfo};

/// `authorizer.Attributes`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub path: String,
}

impl Attributes {
    /// The attributes the authorization filter checks for a request.
    pub fn from_request_info(info: &RequestInfo) -> Attributes {
        Attributes {
            verb: info.verb.clone(),
            resource_request: info.is_resource_request,
            api_group: info.api_group.clone(),
            api_version: info.api_version.clone(),
            namespace: info.namespace.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            name: info.name.clone(),
            path: info.path.clone(),
        }
    }
}

/// The non-resource URLs `system:discovery` and `system:public-info-viewer`
/// grant to every authenticated user.
const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/version/",
    "/openapi",
    "/openapi/*",
];

/// The self reviews `system:basic-user` lets every authenticated user create.
const BASIC_USER_RESOURCES: &[(&str, &str)] = &[
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];

/// Authorizes `attrs` for `user`; returns the allow reason, or `None` when no
/// rule allows it (RBAC's "no opinion" becomes a denial).
pub(crate) fn authorize(user: &UserInfo, attrs: &Attributes, rules: &[Rule]) -> Option<String> {
    if !attrs.resource_request
        && attrs.verb == "get"
        && user.groups.iter().any(|g| g == ALL_AUTHENTICATED)
        && DISCOVERY_URLS.iter().any(|u| url_matches(u, &attrs.path))
    {
        return Some(
            "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\""
                .to_string(),
        );
    }
    if attrs.resource_request
        && attrs.verb == "create"
        && user.groups.iter().any(|g| g == ALL_AUTHENTICATED)
        && BASIC_USER_RESOURCES.contains(&(attrs.api_group.as_str(), attrs.resource.as_str()))
    {
        return Some(
            "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\""
                .to_string(),
        );
    }
    rules
        .iter()
        .position(|r| subject_matches(r, user) && rule_allows(r, attrs))
        .map(|i| format!("RBAC: allowed by test double rule #{i}"))
}

fn subject_matches(rule: &Rule, user: &UserInfo) -> bool {
    rule.subjects.iter().any(|s| {
        s == "*"
            || s.strip_prefix("user:") == Some(user.username.as_str())
            || s.strip_prefix("group:")
                .is_some_and(|g| user.groups.iter().any(|ug| ug == g))
    })
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// `rbac.RuleAllows`.
fn rule_allows(rule: &Rule, attrs: &Attributes) -> bool {
    if !has(&rule.verbs, &attrs.verb) {
        return false;
    }
    if !attrs.resource_request {
        return rule
            .non_resource_urls
            .iter()
            .any(|u| url_matches(u, &attrs.path));
    }
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource_ok = rule.resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
    });
    has(&rule.api_groups, &attrs.api_group)
        && resource_ok
        && (rule.resource_names.is_empty() || rule.resource_names.contains(&attrs.name))
}

/// `rbac.NonResourceURLMatches`.
fn url_matches(rule_url: &str, path: &str) -> bool {
    rule_url == "*"
        || rule_url == path
        || rule_url
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// `responsewriters.Forbidden`: the message of `forbiddenMessage`, sanitized,
/// wrapped by `apierrors.NewForbidden`.
pub(crate) fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> Status {
    let msg = if !attrs.resource_request {
        format!(
            "User {:?} cannot {} path {:?}",
            user.username, attrs.verb, attrs.path
        )
    } else {
        let mut resource = attrs.resource.clone();
        if !attrs.subresource.is_empty() {
            resource = format!("{resource}/{}", attrs.subresource);
        }
        if !attrs.namespace.is_empty() {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                user.username, attrs.verb, resource, attrs.api_group, attrs.namespace
            )
        } else {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                user.username, attrs.verb, resource, attrs.api_group
            )
        }
    };
    let msg = msg
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let err = if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    };
    Status::forbidden(&attrs.api_group, &attrs.resource, &attrs.name, &err)
}
