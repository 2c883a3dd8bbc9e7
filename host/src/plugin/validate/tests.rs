use super::*;
use crate::plugin::testing::candidate;
use crate::plugin::types::{Header, Health, Locality};

#[test]
fn a_denial_names_a_principal_only_when_forbidden_and_legal() {
    let named = |kind, user: &str| {
        let mut d = Denial::new(kind, "no");
        d.principal = Some(Principal::new(user));
        d
    };
    assert!(denial(&named(DenialKind::Forbidden, "alice")).is_ok());
    assert!(denial(&named(DenialKind::Unauthorized, "alice"))
        .unwrap_err()
        .contains("only with kind forbidden"));
    assert!(denial(&named(DenialKind::Forbidden, "a\r\nb"))
        .unwrap_err()
        .starts_with("denial principal"));
    assert!(denial(&Denial::new(DenialKind::Unauthorized, "no")).is_ok());
}

#[test]
fn glob_patterns() {
    let p = Pattern::new;
    assert!(p("*").matches(""));
    assert!(p("system:*").matches("system:masters"));
    assert!(!p("system:*").matches("dev"));
    assert!(p("*@example.com").matches("a@example.com"));
    assert!(p("a*b*c").matches("aXbYc"));
    assert!(!p("a*b*c").matches("aXbY"));
    assert!(p("exact").matches("exact"));
    assert!(!p("exact").matches("exact2"));
}

#[test]
fn header_legality() {
    assert!(is_header_name("x-hawser-version"));
    assert!(!is_header_name("X-Upper"));
    assert!(!is_header_name("bad name"));
    assert!(!is_header_name(""));
    assert!(is_header_value("a b\tc"));
    assert!(!is_header_value("line\r\nbreak"));
    assert!(!is_header_value(" leading"));
    assert!(!is_header_value("caf\u{e9}"));
}

fn cand(cluster: &str, endpoint: &str) -> Candidate {
    Candidate {
        cluster: cluster.into(),
        endpoint: endpoint.into(),
        locality: Locality {
            region: String::new(),
            zone: String::new(),
        },
        health: Health::Healthy,
        weight: 1,
        in_flight: 0,
    }
}

#[test]
fn route_choice_must_be_a_candidate_and_headers_allowed() {
    let cands = [cand("c1", "e1"), cand("c2", "e2")];
    let policy = Policy {
        allow_headers: vec![Pattern::new("x-hawser-*")],
        ..Policy::default()
    };
    let mut choice = RouteChoice {
        cluster: "c1".into(),
        endpoint: "e1".into(),
        set_headers: vec![Header {
            name: "x-hawser-version".into(),
            value: "a".into(),
        }],
    };
    assert!(route_choice(&choice, &cands, &policy, &[]).is_ok());
    choice.endpoint = "e2".into();
    assert!(
        route_choice(&choice, &cands, &policy, &[]).is_err(),
        "mixed pair"
    );
    choice.endpoint = "e1".into();
    choice.set_headers[0].name = "impersonate-user".into();
    assert!(route_choice(
        &choice,
        &cands,
        &Policy {
            allow_headers: vec![Pattern::new("*")],
            ..Policy::default()
        },
        &[]
    )
    .is_err());
    for reserved in [
        "audit-id",
        "x-remote-user",
        "x-remote-group",
        "x-hawser-tunnel-as-user",
        "x-hawser-tunnel-as-group",
        "x-hawser-tunnel-upgrade",
    ] {
        choice.set_headers[0].name = reserved.into();
        let err = route_choice(&choice, &cands, &policy, &[]).unwrap_err();
        assert!(
            err.contains("may not be set by a plugin"),
            "{reserved}: {err}"
        );
    }
    assert!(
        crate::proxy::headers::INTERNAL_PREFIX.starts_with(FORBIDDEN_PREFIXES[2]),
        "the internal prefix is reserved"
    );
    choice.set_headers[0].name = "x-other".into();
    assert!(
        route_choice(&choice, &cands, &policy, &[]).is_err(),
        "not in allow list"
    );
}

#[test]
fn impersonation_policy() {
    let policy = Policy::default();
    let mut p = Principal::new("alice");
    p.groups = vec!["dev".into()];
    assert!(impersonation(&p, &policy).is_ok());
    p.groups.push("system:masters".into());
    assert!(impersonation(&p, &policy).is_err());
    let p = Principal::new("bob\r\nimpersonate-user: root");
    assert!(impersonation(&p, &policy).is_err());
    let mut p = Principal::new("carol");
    p.extra.push(crate::plugin::types::Extra {
        key: "authentication.kubernetes.io/pod-name".into(),
        values: vec!["web-0".into()],
    });
    assert_eq!(impersonation(&p, &policy), Ok(()));
    p.extra[0].key = "bad key".into();
    assert!(impersonation(&p, &policy).is_err());
}

#[test]
fn system_masters_is_refused_whatever_deny_groups_says() {
    let policy = Policy {
        deny_groups: vec![Pattern::new("system:nodes")],
        ..Policy::default()
    };
    let mut p = Principal::new("alice");
    p.groups = vec!["dev".into()];
    assert_eq!(within_policy(&p, &policy), Ok(()));
    p.groups.push("system:masters".into());
    assert_eq!(
        within_policy(&p, &policy),
        Err("impersonating group \"system:masters\" is never allowed".into())
    );
    assert!(within_floor(&p).is_err());
    p.groups = vec!["system:nodes".into()];
    assert!(
        within_policy(&p, &policy).is_err(),
        "the list still applies"
    );
    assert_eq!(within_floor(&p), Ok(()));
}

#[test]
fn uids_are_bounded_by_allow_uids() {
    let policy = Policy {
        allow_uids: vec![Pattern::new("svc-*")],
        ..Policy::default()
    };
    let mut p = Principal::new("alice");
    assert_eq!(impersonation(&p, &policy), Ok(()), "no uid is always fine");
    p.uid = "svc-42".into();
    assert_eq!(impersonation(&p, &policy), Ok(()));
    p.uid = "0".into();
    let err = impersonation(&p, &policy).unwrap_err();
    assert!(err.contains("uid \"0\""), "{err}");
    let none = Policy {
        allow_uids: Vec::new(),
        ..Policy::default()
    };
    assert!(impersonation(&p, &none).is_err());
    assert!(impersonation(&p, &Policy::default()).is_ok());
}

#[test]
fn a_route_may_not_set_a_header_the_chain_reads_credentials_from() {
    let cands = vec![candidate("c1", "e1", "eu", "eu-a", Health::Healthy)];
    let policy = Policy {
        allow_headers: vec![Pattern::new("x-*")],
        ..Policy::default()
    };
    let choice = RouteChoice {
        cluster: "c1".into(),
        endpoint: "e1".into(),
        set_headers: vec![Header {
            name: "x-ci-token".into(),
            value: "minted".into(),
        }],
    };
    assert_eq!(route_choice(&choice, &cands, &policy, &[]), Ok(()));
    let err = route_choice(&choice, &cands, &policy, &["x-ci-token".into()]).unwrap_err();
    assert!(err.contains("may not be set by a plugin"), "{err}");
}

#[test]
fn plugin_strings_in_errors_are_bounded() {
    let huge = "\u{1}".repeat(1 << 20);
    let mut p = Principal::new("alice");
    p.extra.push(crate::plugin::types::Extra {
        key: huge.clone(),
        values: vec![],
    });
    let err = principal(&p).unwrap_err();
    assert!(err.len() < 512, "{} bytes", err.len());
    let cands = vec![candidate("c1", "e1", "eu", "eu-a", Health::Healthy)];
    let choice = RouteChoice {
        cluster: huge.clone(),
        endpoint: "e1".into(),
        set_headers: vec![],
    };
    let err = route_choice(&choice, &cands, &Policy::default(), &[]).unwrap_err();
    assert!(err.len() < 512 && err.contains('…'), "{err}");
    let r = Redaction {
        headers: vec![huge],
        query: false,
        extra: false,
    };
    assert!(redaction(&r).unwrap_err().len() < 512);
    let many = Redaction {
        headers: vec!["x-a".into(); 257],
        query: false,
        extra: false,
    };
    assert!(redaction(&many).unwrap_err().contains("more than 256"));
}

#[test]
fn denial_messages_may_not_hide_or_reorder_text() {
    let ok = Denial::new(DenialKind::Forbidden, "pods is forbidden: ünïcode is fine");
    assert_eq!(denial(&ok), Ok(()));
    for bad in [
        "a\u{202E}b",
        "a\u{200B}b",
        "a\u{2028}b",
        "a\u{2066}b",
        "a\u{FEFF}b",
        "a\nb",
    ] {
        let d = Denial::new(DenialKind::Forbidden, bad);
        assert!(denial(&d).is_err(), "{bad:?}");
    }
}
