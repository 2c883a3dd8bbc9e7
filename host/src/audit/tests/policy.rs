use super::*;
use std::path::Path;

fn parse(text: &str) -> Result<Policy, AuditError> {
    Policy::parse(Path::new("policy.yaml"), text)
}

fn policy(rules: &str) -> Policy {
    let text = format!("apiVersion: audit.k8s.io/v1\nkind: Policy\n{rules}");
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A resource request; fields as `RequestInfo` would give them.
fn res<'a>(
    user: &'a str,
    groups: &'a [String],
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
) -> Attributes<'a> {
    Attributes {
        user,
        groups,
        verb,
        api_group: group,
        resource,
        is_resource_request: true,
        ..Attributes::default()
    }
}

fn non_res<'a>(verb: &'a str, path: &'a str) -> Attributes<'a> {
    Attributes {
        user: "alice",
        verb,
        path,
        ..Attributes::default()
    }
}

#[test]
fn rules_match_like_kube_apiserver() {
    let p = policy(
        r#"
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
  - level: None
    userGroups: ["system:nodes"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["pods/exec", "*/attach", "deployments/*"]
  - level: Request
    namespaces: ["kube-system"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets"]
        resourceNames: ["db"]
      - group: "rbac.authorization.k8s.io"
  - level: Metadata
    nonResourceURLs: ["/healthz*", "/version"]
  - level: Request
    resources:
      - group: ""
        resources: ["*"]
    verbs: ["create"]
"#,
    );
    let nodes = vec!["system:nodes".to_string()];
    let none: Vec<String> = vec![];
    let sub = |verb, resource, subresource| Attributes {
        subresource,
        ..res("alice", &[], verb, "", resource)
    };
    let cases: Vec<(&str, Attributes, Level)> = vec![
        (
            "user+verb match",
            res("system:kube-proxy", &none, "watch", "", "endpoints"),
            Level::None,
        ),
        (
            "user matches, verb does not: falls through",
            res("system:kube-proxy", &none, "list", "", "pods"),
            Level::None,
        ),
        (
            "group match",
            res("bob", &nodes, "get", "", "pods"),
            Level::None,
        ),
        (
            "resource/subresource exact",
            sub("create", "pods", "exec"),
            Level::RequestResponse,
        ),
        (
            "subresource rule does not match the resource",
            sub("get", "pods", ""),
            Level::None,
        ),
        (
            "*/subresource",
            sub("create", "pods", "attach"),
            Level::RequestResponse,
        ),
        (
            "resource/* matches a subresource",
            sub("update", "deployments", "scale"),
            Level::RequestResponse,
        ),
        (
            "resource/* matches the resource itself",
            sub("get", "deployments", ""),
            Level::RequestResponse,
        ),
        (
            "namespaces",
            Attributes {
                namespace: "kube-system",
                ..res("alice", &[], "get", "", "configmaps")
            },
            Level::Request,
        ),
        (
            "resourceNames match",
            Attributes {
                name: "db",
                ..res("alice", &[], "get", "", "secrets")
            },
            Level::Metadata,
        ),
        (
            "resourceNames mismatch",
            Attributes {
                name: "x",
                ..res("alice", &[], "get", "", "secrets")
            },
            Level::None,
        ),
        (
            "group without resources matches all",
            res("alice", &[], "delete", "rbac.authorization.k8s.io", "roles"),
            Level::Metadata,
        ),
        (
            "api group must match",
            res("alice", &[], "create", "apps", "deployments"),
            Level::None,
        ),
        (
            "* resource, verb create",
            res("alice", &[], "create", "", "configmaps"),
            Level::Request,
        ),
        (
            "* matches subresources too",
            sub("create", "pods", "eviction"),
            Level::Request,
        ),
        (
            "nonResourceURL prefix",
            non_res("get", "/healthz/etcd"),
            Level::Metadata,
        ),
        (
            "nonResourceURL exact",
            non_res("get", "/version"),
            Level::Metadata,
        ),
        (
            "nonResourceURL is not a prefix without *",
            non_res("get", "/version/x"),
            Level::None,
        ),
        (
            "no rule matches: None",
            non_res("get", "/metrics"),
            Level::None,
        ),
    ];
    for (name, attrs, want) in cases {
        assert_eq!(p.level_for(&attrs).0, want, "{name}");
    }
}

#[test]
fn first_matching_rule_wins_and_default_is_none() {
    let p = policy(
        r#"
rules:
  - level: RequestResponse
    verbs: ["delete"]
  - level: None
    verbs: ["delete", "get"]
  - level: Metadata
    resources: [{group: ""}]
"#,
    );
    let cases = [
        ("delete", Level::RequestResponse),
        ("get", Level::None),
        ("list", Level::Metadata),
    ];
    for (verb, want) in cases {
        assert_eq!(
            p.level_for(&res("alice", &[], verb, "", "pods")).0,
            want,
            "{verb}"
        );
    }
    // A non-resource request matches no resource rule.
    assert_eq!(p.level_for(&non_res("list", "/metrics")).0, Level::None);
    // A rule with no selectors matches everything.
    let all = policy("rules:\n  - level: Metadata\n");
    assert_eq!(
        all.level_for(&non_res("get", "/anything")).0,
        Level::Metadata
    );
    assert_eq!(
        all.level_for(&res("x", &[], "get", "", "pods")).0,
        Level::Metadata
    );
}

#[test]
fn non_resource_urls_wildcards() {
    let p = policy(
        r#"
rules:
  - level: Metadata
    nonResourceURLs: ["/logs/*", "/exact", "/pre*"]
  - level: Request
    nonResourceURLs: ["*"]
"#,
    );
    let cases = [
        ("/logs/kubelet.log", Level::Metadata),
        ("/logs/", Level::Metadata),
        ("/logs", Level::Request),
        ("/exact", Level::Metadata),
        ("/exact/more", Level::Request),
        ("/prefix/anything", Level::Metadata),
        ("/other", Level::Request),
    ];
    for (path, want) in cases {
        assert_eq!(p.level_for(&non_res("get", path)).0, want, "{path}");
    }
    // nonResourceURLs never match a resource request.
    let only = policy("rules:\n  - level: Metadata\n    nonResourceURLs: [\"*\"]\n");
    assert_eq!(
        only.level_for(&res("a", &[], "get", "", "pods")).0,
        Level::None
    );
}

#[test]
fn omit_stages_are_the_union_of_policy_and_rule() {
    let p = policy(
        r#"
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["watch"]
    omitStages: ["ResponseStarted"]
  - level: Metadata
    verbs: ["get"]
"#,
    );
    let (_, watch) = p.level_for(&res("a", &[], "watch", "", "pods"));
    assert!(watch.contains(Stage::RequestReceived) && watch.contains(Stage::ResponseStarted));
    assert!(!watch.contains(Stage::ResponseComplete) && !watch.contains(Stage::Panic));
    let (_, get) = p.level_for(&res("a", &[], "get", "", "pods"));
    assert_eq!(get, StageSet::EMPTY.with(Stage::RequestReceived));
    let (level, unmatched) = p.level_for(&res("a", &[], "list", "", "pods"));
    assert_eq!(
        (level, unmatched),
        (Level::None, StageSet::EMPTY.with(Stage::RequestReceived))
    );
}

#[test]
fn invalid_policies_name_the_rule_and_field() {
    let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{head}rules: []\n"), "rules", "0 rules"),
        (head.to_string(), "rules", "0 rules"),
        ("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n".into(), "apiVersion", "not supported"),
        ("apiVersion: audit.k8s.io/v1\nkind: Pod\nrules: [{level: None}]\n".into(), "kind", "not `Policy`"),
        (format!("{head}rules:\n  - level: None\n  - verbs: [get]\n"), "rules[1].level", "required"),
        (format!("{head}rules:\n  - level: Verbose\n"), "rules[0].level", "unknown variant"),
        (format!("{head}rules:\n  - level: None\n    verb: [get]\n"), "rules[0]", "unknown field `verb`"),
        (format!("{head}omitStages: [Done]\nrules: [{{level: None}}]\n"), "omitStages[0]", "unknown variant"),
        (
            format!("{head}rules:\n  - level: None\n    nonResourceURLs: [\"/a\"]\n    namespaces: [x]\n"),
            "rules[0].nonResourceURLs",
            "both regular resources and non-resource URLs",
        ),
        (format!("{head}rules:\n  - level: None\n    nonResourceURLs: [\"healthz\"]\n"), "rules[0].nonResourceURLs[0]", "begin with a '/'"),
        (format!("{head}rules:\n  - level: None\n    nonResourceURLs: [\"/a/*/b\"]\n"), "rules[0].nonResourceURLs[0]", "final character"),
        (
            format!("{head}rules:\n  - level: None\n  - level: None\n    resources: [{{group: \"\", resourceNames: [x]}}]\n"),
            "rules[1].resources[0].resourceNames",
            "requires at least one resource",
        ),
        (format!("{head}rules:\n  - level: None\n    resources: [{{group: \"Apps!\"}}]\n"), "rules[0].resources[0].group", "not a valid API group"),
        ("rules: [".into(), "", "policy.yaml"),
    ];
    for (text, field, reason) in cases {
        let err = parse(&text).expect_err(&text).to_string();
        assert!(err.starts_with("audit policy policy.yaml: "), "{err}");
        assert!(
            err.contains(&format!(": {field}")) || field.is_empty(),
            "want field {field:?} in {err}"
        );
        assert!(err.contains(reason), "want {reason:?} in {err}");
    }
}

#[test]
fn the_shipped_policy_is_valid_and_sensible() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/audit-policy.yaml");
    let p = Policy::load(&file).unwrap();
    let sa = vec!["system:serviceaccounts:kube-system".to_string()];
    let admin = vec!["system:authenticated".to_string()];
    let sub = |resource, subresource, verb| Attributes {
        subresource,
        ..res("alice", &admin, verb, "", resource)
    };
    let cases: Vec<(&str, Attributes, Level)> = vec![
        ("probe", non_res("get", "/readyz"), Level::None),
        (
            "system watch",
            res(
                "system:serviceaccount:kube-system:x",
                &sa,
                "watch",
                "",
                "pods",
            ),
            Level::None,
        ),
        (
            "secret read",
            res("alice", &admin, "get", "", "secrets"),
            Level::Metadata,
        ),
        (
            "secret write has no body",
            res("alice", &admin, "create", "", "secrets"),
            Level::Metadata,
        ),
        ("exec", sub("pods", "exec", "create"), Level::Metadata),
        (
            "rbac change",
            res(
                "alice",
                &admin,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
            ),
            Level::RequestResponse,
        ),
        (
            "deployment patch",
            res("alice", &admin, "patch", "apps", "deployments"),
            Level::Request,
        ),
        (
            "pod list",
            res("alice", &admin, "list", "", "pods"),
            Level::Metadata,
        ),
    ];
    for (name, attrs, want) in cases {
        assert_eq!(p.level_for(&attrs).0, want, "{name}");
    }
    assert!(p
        .level_for(&res("alice", &admin, "list", "", "pods"))
        .1
        .contains(Stage::RequestReceived));
}

#[test]
fn attributes_from_a_parsed_request() {
    let info = crate::proxy::request_info::RequestInfo::parse(
        &http::Method::GET,
        "/api/v1/namespaces/default/pods/web/log",
        None,
    );
    let user = super::super::events::UserInfo {
        username: "alice".into(),
        groups: vec!["dev".into()],
        ..Default::default()
    };
    let path = "/api/v1/namespaces/default/pods/web/log";
    let a = Attributes::from_request(&info, path, &user);
    assert_eq!(
        (
            a.user,
            a.verb,
            a.resource,
            a.subresource,
            a.namespace,
            a.name
        ),
        ("alice", "get", "pods", "log", "default", "web")
    );
    assert!(a.is_resource_request && a.groups == ["dev"]);
    let p = policy("rules:\n  - level: Request\n    userGroups: [dev]\n    resources: [{group: \"\", resources: [\"pods/log\"]}]\n");
    assert_eq!(p.level_for(&a).0, Level::Request);
}
