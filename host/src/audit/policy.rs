//! Kubernetes audit `Policy` files (`--audit-policy-file`), evaluated as
//! `k8s.io/apiserver/pkg/audit/policy/checker.go` does: the first matching rule
//! wins, no match means level None, and a policy without rules is invalid.

use super::events::{Level, Stage, API_VERSION};
use super::AuditError;
use serde::Deserialize;
use std::path::Path;

/// What a policy rule is matched against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    /// The authenticated user's name.
    pub user: &'a str,
    /// The authenticated user's groups.
    pub groups: &'a [String],
    /// Kubernetes verb, or the lower-cased HTTP method for non-resource requests.
    pub verb: &'a str,
    /// API group (`""` for the core group).
    pub api_group: &'a str,
    /// Resource, e.g. `pods`.
    pub resource: &'a str,
    /// Subresource, e.g. `log`.
    pub subresource: &'a str,
    /// Namespace; `""` for cluster-scoped resources.
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The request path, matched by `nonResourceURLs`.
    pub path: &'a str,
    /// True for `/api/...` and `/apis/...` requests.
    pub is_resource_request: bool,
}

impl<'a> Attributes<'a> {
    /// The attributes of a parsed request made by `user`; `path` excludes the query.
    pub fn from_request(
        info: &'a crate::proxy::request_info::RequestInfo,
        path: &'a str,
        user: &'a super::events::UserInfo,
    ) -> Attributes<'a> {
        Attributes {
            user: &user.username,
            groups: &user.groups,
            verb: &info.verb,
            api_group: &info.api_group,
            resource: &info.resource,
            subresource: &info.subresource,
            namespace: &info.namespace,
            name: &info.name,
            path,
            is_resource_request: info.is_resource_request,
        }
    }
}

/// A set of stages (`omitStages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageSet(u8);

impl StageSet {
    /// The empty set.
    pub const EMPTY: StageSet = StageSet(0);

    fn bit(stage: Stage) -> u8 {
        1 << (stage as u8)
    }

    /// True if `stage` is in the set.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & StageSet::bit(stage) != 0
    }

    /// The set plus `stage`.
    pub fn with(self, stage: Stage) -> StageSet {
        StageSet(self.0 | StageSet::bit(stage))
    }

    /// Both sets together.
    pub fn union(self, other: StageSet) -> StageSet {
        StageSet(self.0 | other.0)
    }
}

impl FromIterator<Stage> for StageSet {
    fn from_iter<I: IntoIterator<Item = Stage>>(iter: I) -> StageSet {
        iter.into_iter().fold(StageSet::EMPTY, StageSet::with)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    api_version: String,
    kind: String,
    // ObjectMeta; accepted (kubectl-style manifests carry a name) and not used.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_yaml::Value>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    // Accepted for compatibility, not applied yet: bodies are recorded as given to
    // `RequestAudit::set_request_object`.
    #[serde(default)]
    #[allow(dead_code)]
    omit_managed_fields: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    level: Option<Level>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    #[allow(dead_code)]
    omit_managed_fields: Option<bool>,
}

/// One `resources` entry of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
    /// Already unioned with the policy's `omitStages`.
    omit_stages: StageSet,
}

/// A validated audit policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: StageSet,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(file: &Path) -> Result<Policy, AuditError> {
        let text = std::fs::read_to_string(file).map_err(|e| AuditError::io(file, e))?;
        Policy::parse(file, &text)
    }

    /// Parses and validates policy text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Policy, AuditError> {
        let err = |field: &str, reason: String| AuditError::Policy {
            file: file.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let raw: RawPolicy = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(
            text,
        ))
        .map_err(|e| {
            let path = e.path().to_string();
            err(
                if path == "." { "(document)" } else { &path },
                e.into_inner().to_string(),
            )
        })?;
        if raw.api_version != API_VERSION {
            return Err(err(
                "apiVersion",
                format!(
                    "`{}` is not supported; use `{API_VERSION}`",
                    raw.api_version
                ),
            ));
        }
        if raw.kind != "Policy" {
            return Err(err("kind", format!("`{}` is not `Policy`", raw.kind)));
        }
        if raw.rules.is_empty() {
            return Err(err("rules", "a policy with 0 rules is illegal".into()));
        }
        let omit_stages: StageSet = raw.omit_stages.iter().copied().collect();
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                validate_rule(r, omit_stages)
                    .map_err(|(f, why)| err(&format!("rules[{i}].{f}"), why))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { rules, omit_stages })
    }

    /// The level and omitted stages for a request: the first matching rule's, or
    /// None (with the policy's `omitStages`) when no rule matches.
    pub fn level_for(&self, attrs: &Attributes<'_>) -> (Level, StageSet) {
        self.rules
            .iter()
            .find(|r| r.matches(attrs))
            .map(|r| (r.level, r.omit_stages))
            .unwrap_or((Level::None, self.omit_stages))
    }

    /// How many rules the policy has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

/// Checks one rule as `pkg/apis/audit/validation` does; errors are (field, reason).
fn validate_rule(r: RawRule, policy_omit: StageSet) -> Result<Rule, (String, String)> {
    let level = r
        .level
        .ok_or_else(|| ("level".to_string(), "is required".to_string()))?;
    if !r.non_resource_urls.is_empty() && (!r.resources.is_empty() || !r.namespaces.is_empty()) {
        return Err((
            "nonResourceURLs".into(),
            "rules cannot apply to both regular resources and non-resource URLs".into(),
        ));
    }
    for (j, url) in r.non_resource_urls.iter().enumerate() {
        let field = format!("nonResourceURLs[{j}]");
        if url == "*" {
            continue;
        }
        if !url.starts_with('/') {
            return Err((
                field,
                format!("`{url}`: non-resource URL rules must begin with a '/' character"),
            ));
        }
        if url.strip_suffix('*').unwrap_or(url).contains('*') {
            return Err((field, format!("`{url}`: non-resource URL wildcards '*' must be the final character of the rule")));
        }
    }
    for (j, gr) in r.resources.iter().enumerate() {
        if !gr.group.is_empty() && !is_dns1123_subdomain(&gr.group) {
            return Err((
                format!("resources[{j}].group"),
                format!("`{}` is not a valid API group", gr.group),
            ));
        }
        if !gr.resource_names.is_empty() && gr.resources.is_empty() {
            return Err((
                format!("resources[{j}].resourceNames"),
                "using resourceNames requires at least one resource".into(),
            ));
        }
    }
    Ok(Rule {
        level,
        users: r.users,
        user_groups: r.user_groups,
        verbs: r.verbs,
        resources: r.resources,
        namespaces: r.namespaces,
        non_resource_urls: r.non_resource_urls,
        omit_stages: r
            .omit_stages
            .iter()
            .copied()
            .collect::<StageSet>()
            .union(policy_omit),
    })
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}

impl Rule {
    fn matches(&self, a: &Attributes<'_>) -> bool {
        if !self.users.is_empty() && !has(&self.users, a.user) {
            return false;
        }
        if !self.user_groups.is_empty() && !a.groups.iter().any(|g| has(&self.user_groups, g)) {
            return false;
        }
        if !self.verbs.is_empty() && !has(&self.verbs, a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(a);
        }
        if !self.non_resource_urls.is_empty() {
            return !a.is_resource_request
                && self
                    .non_resource_urls
                    .iter()
                    .any(|spec| path_matches(a.path, spec));
        }
        true
    }

    fn matches_resource(&self, a: &Attributes<'_>) -> bool {
        if !a.is_resource_request {
            return false;
        }
        // Cluster-scoped resources have the empty namespace, which a rule may list.
        if !self.namespaces.is_empty() && !has(&self.namespaces, a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.resources
            .iter()
            .filter(|gr| gr.group == a.api_group)
            .any(|gr| {
                if gr.resources.is_empty() {
                    return true;
                }
                if !gr.resource_names.is_empty() && !has(&gr.resource_names, a.name) {
                    return false;
                }
                gr.resources.iter().any(|res| {
                    res == "*"
                    || *res == combined
                    || (!a.subresource.is_empty() && res.strip_prefix("*/") == Some(a.subresource))
                    // As in checker.go, "pods/*" matches pods and every subresource of pods.
                    || res.strip_suffix("/*") == Some(a.resource)
                })
            })
    }
}

/// `*` matches everything, otherwise an exact match or a trailing-`*` prefix match.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

#[cfg(test)]
#[path = "tests/policy.rs"]
mod tests;
