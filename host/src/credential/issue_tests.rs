use super::*;
use crate::credential::testing::ISSUER;
use crate::credential::token::verify;

fn request() -> IssueRequest {
    IssueRequest {
        user: "alice@example.com".into(),
        groups: vec!["dev".into(), "dev".into(), "ops".into()],
        extra: vec![
            ("acme.com/project".into(), "p1".into()),
            ("acme.com/project".into(), "p2".into()),
        ],
        clusters: vec!["eu1".into(), "us2".into()],
        ttl: Duration::from_secs(3600),
        exec: false,
        uid: Some("1234".into()),
        allow_system_names: false,
    }
}

fn field_of(result: Result<Claims, IssueError>) -> &'static str {
    match result {
        Err(IssueError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test]
fn issues_a_verifiable_access_token_with_the_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = issue(dir.path(), ISSUER, &request()).expect("issue");
    assert_eq!(issued.token_use, TokenUse::Access);
    let keys = IssuerKeys::load(dir.path()).expect("keys created");
    let c = verify(
        issued.token.expose(),
        keys.verifying_keys(),
        SystemTime::now(),
        ISSUER,
    )
    .expect("verify");
    assert_eq!(c.jti, issued.id);
    assert_eq!(c.sub, "alice@example.com");
    assert_eq!(c.groups, ["dev", "ops"]);
    assert_eq!(c.extra["acme.com/project"], ["p1", "p2"]);
    assert_eq!(c.clusters, ["eu1", "us2"]);
    assert_eq!(c.uid.as_deref(), Some("1234"));
    assert_eq!(c.exp - c.iat, 3600);
    assert!(uuid::Uuid::parse_str(&issued.id).is_ok());
}

#[test]
fn exec_issues_a_refresh_token_with_its_own_ttl_bound() {
    let now = SystemTime::now();
    let mut req = request();
    req.exec = true;
    req.ttl = Duration::from_secs(30 * 24 * 3600);
    assert_eq!(
        claims_for(ISSUER, &req, now)
            .expect("30d refresh")
            .token_use,
        TokenUse::Refresh
    );
    req.exec = false;
    assert_eq!(field_of(claims_for(ISSUER, &req, now)), "ttl");
    req.ttl = Duration::from_secs(24 * 3600);
    assert!(claims_for(ISSUER, &req, now).is_ok());
    req.ttl = Duration::from_secs(59);
    assert_eq!(field_of(claims_for(ISSUER, &req, now)), "ttl");
}

#[test]
fn invalid_input_is_refused_with_the_field_named() {
    let now = SystemTime::now();
    type Mutation = Box<dyn Fn(&mut IssueRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("user", Box::new(|r| r.user.clear())),
        ("user", Box::new(|r| r.user = "system:admin".into())),
        ("user", Box::new(|r| r.user = "bob\n".into())),
        ("user", Box::new(|r| r.user = "zoë".into())),
        (
            "group",
            Box::new(|r| r.groups = vec!["system:nodes".into()]),
        ),
        ("group", Box::new(|r| r.groups = vec![String::new()])),
        (
            "extra key",
            Box::new(|r| r.extra = vec![("Acme.com/Project".into(), "x".into())]),
        ),
        (
            "extra key",
            Box::new(|r| r.extra = vec![("a key".into(), "x".into())]),
        ),
        (
            "extra value",
            Box::new(|r| r.extra = vec![("k".into(), String::new())]),
        ),
        ("uid", Box::new(|r| r.uid = Some(String::new()))),
        ("clusters", Box::new(|r| r.clusters.clear())),
        ("cluster", Box::new(|r| r.clusters = vec!["EU_1".into()])),
    ];
    for (field, mutate) in cases {
        let mut req = request();
        mutate(&mut req);
        assert_eq!(field_of(claims_for(ISSUER, &req, now)), field, "{req:?}");
    }
}

#[test]
fn system_names_need_the_flag_and_masters_is_never_issued() {
    let now = SystemTime::now();
    let mut req = request();
    req.allow_system_names = true;
    req.user = "system:serviceaccount:ci:deployer".into();
    req.groups = vec!["system:serviceaccounts".into()];
    assert!(claims_for(ISSUER, &req, now).is_ok());
    req.groups = vec![MASTERS.into()];
    let err = claims_for(ISSUER, &req, now).expect_err("masters refused");
    assert!(err.to_string().contains("bypasses RBAC"), "{err}");
}

#[test]
fn invalid_requests_do_not_create_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = request();
    req.clusters.clear();
    assert!(issue(dir.path(), ISSUER, &req).is_err());
    assert!(!dir.path().join("issuer").exists());
}

#[test]
fn oversized_credentials_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = IssuerKeys::load_or_create(dir.path()).expect("keys");
    let mut req = request();
    req.groups = (0..400).map(|i| format!("group-number-{i}")).collect();
    let err = issue_with(&keys, ISSUER, &req, SystemTime::now()).expect_err("too large");
    assert!(
        matches!(
            err,
            IssueError::Invalid {
                field: "credential",
                ..
            }
        ),
        "{err}"
    );
}
