use super::*;
use crate::audit::{RequestAudit, StageSet};
use crate::proxy::request_info::RequestInfo;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

fn at(micros: u64) -> MicroTime {
    MicroTime(UNIX_EPOCH + Duration::from_micros(micros))
}

fn ctx() -> EventContext {
    EventContext {
        audit_id: "6f6c6a52-2b1c-4a57-9c3e-0f1e2d3c4b5a".into(),
        request_uri: "/api/v1/namespaces/default/pods/web-0/log?follow=true".into(),
        verb: "get".into(),
        user: UserInfo {
            username: "system:serviceaccount:hawser:agent".into(),
            uid: "u-1".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
            extra: [(
                "authentication.kubernetes.io/pod-name".to_string(),
                vec!["agent-0".to_string()],
            )]
            .into_iter()
            .collect(),
        },
        impersonated_user: Some(UserInfo {
            username: "alice".into(),
            groups: vec!["dev".into()],
            ..UserInfo::default()
        }),
        source_ips: vec!["10.0.0.7".into()],
        user_agent: Some("kubectl/v1.31.0".into()),
        object_ref: Some(ObjectReference {
            resource: "pods".into(),
            namespace: "default".into(),
            name: "web-0".into(),
            api_version: "v1".into(),
            subresource: "log".into(),
            ..ObjectReference::default()
        }),
        request_received: at(1_700_000_000_123_456),
        annotations: [
            (ANNOTATION_ROLE.to_string(), "agent".to_string()),
            (ANNOTATION_CLUSTER.to_string(), "eu1".to_string()),
        ]
        .into_iter()
        .collect(),
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

#[test]
fn micro_time_has_exactly_six_fraction_digits_in_utc() {
    let cases = [
        (1_700_000_000_123_456, "2023-11-14T22:13:20.123456Z"),
        (1_700_000_000_000_000, "2023-11-14T22:13:20.000000Z"),
        (1_700_000_000_000_001, "2023-11-14T22:13:20.000001Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
    ];
    for (micros, want) in cases {
        assert_eq!(at(micros).to_string(), want);
        assert_eq!(serde_json::to_value(at(micros)).unwrap(), json!(want));
        assert_eq!(
            serde_json::from_value::<MicroTime>(json!(want)).unwrap(),
            at(micros)
        );
    }
    // Sub-microsecond precision is truncated, never printed.
    let nanos = MicroTime(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789));
    assert_eq!(nanos.to_string(), "2023-11-14T22:13:20.123456Z");
    assert!(serde_json::from_value::<MicroTime>(json!("yesterday")).is_err());
    // Out-of-range clocks are clamped rather than panicking.
    let before = MicroTime(UNIX_EPOCH - Duration::from_secs(1));
    assert_eq!(before.to_string(), "1970-01-01T00:00:00.000000Z");
    let after = MicroTime(UNIX_EPOCH + Duration::from_secs(300_000_000_000));
    assert_eq!(after.to_string(), "9999-12-31T23:59:59.000000Z");
}

#[test]
fn event_json_uses_kubernetes_field_names() {
    let mut event = event_for(
        Stage::ResponseComplete,
        Level::Metadata,
        &ctx(),
        Some(ResponseStatus::code(200)),
    );
    event.stage_timestamp = at(1_700_000_000_223_456);
    let v = serde_json::to_value(&event).unwrap();
    assert_eq!(
        keys(&v),
        [
            "annotations",
            "apiVersion",
            "auditID",
            "impersonatedUser",
            "kind",
            "level",
            "objectRef",
            "requestReceivedTimestamp",
            "requestURI",
            "responseStatus",
            "sourceIPs",
            "stage",
            "stageTimestamp",
            "user",
            "userAgent",
            "verb",
        ]
    );
    assert_eq!(v["kind"], "Event");
    assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(v["level"], "Metadata");
    assert_eq!(v["stage"], "ResponseComplete");
    assert_eq!(keys(&v["user"]), ["extra", "groups", "uid", "username"]);
    assert_eq!(
        v["impersonatedUser"],
        json!({"username": "alice", "groups": ["dev"]})
    );
    assert_eq!(
        v["objectRef"],
        json!({"resource": "pods", "namespace": "default", "name": "web-0", "apiVersion": "v1", "subresource": "log"})
    );
    assert_eq!(v["responseStatus"], json!({"metadata": {}, "code": 200}));
    assert_eq!(v["requestReceivedTimestamp"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(v["stageTimestamp"], "2023-11-14T22:13:20.223456Z");
    assert_eq!(v["annotations"]["hawser.io/role"], "agent");
}

#[test]
fn empty_optional_fields_are_omitted() {
    let mut c = ctx();
    c.impersonated_user = None;
    c.object_ref = None;
    c.user_agent = None;
    c.source_ips.clear();
    c.annotations.clear();
    c.user = UserInfo {
        username: "alice".into(),
        ..UserInfo::default()
    };
    let v =
        serde_json::to_value(event_for(Stage::RequestReceived, Level::Metadata, &c, None)).unwrap();
    assert_eq!(
        keys(&v),
        [
            "apiVersion",
            "auditID",
            "kind",
            "level",
            "requestReceivedTimestamp",
            "requestURI",
            "stage",
            "stageTimestamp",
            "user",
            "verb"
        ]
    );
    assert_eq!(v["user"], json!({"username": "alice"}));
}

#[test]
fn reads_an_event_written_by_kube_apiserver() {
    let text = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods/x","verb":"delete","user":{"username":"admin","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"kubectl/v1.31.0","objectRef":{"resource":"pods","namespace":"default","name":"x","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404},"requestReceivedTimestamp":"2024-05-01T10:00:00.000001Z","stageTimestamp":"2024-05-01T10:00:00.002000Z","annotations":{"authorization.k8s.io/decision":"allow"}}"#;
    let event: Event = serde_json::from_str(text).unwrap();
    assert_eq!(event.verb, "delete");
    assert_eq!(event.response_status.as_ref().map(|s| s.code), Some(404));
    let back: Value = serde_json::to_value(&event).unwrap();
    assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
}

#[test]
fn stages_share_the_audit_id_and_follow_level_and_omit_stages() {
    let mut audit = RequestAudit::with_decision(
        ctx(),
        Level::RequestResponse,
        StageSet::EMPTY.with(Stage::RequestReceived),
    );
    audit.set_request_object(json!({"kind": "Pod"}));
    audit.set_response_object(json!({"kind": "Pod", "status": {}}));
    assert!(
        audit.event(Stage::RequestReceived, None).is_none(),
        "omitted stage"
    );
    let started = audit
        .event(Stage::ResponseStarted, Some(ResponseStatus::code(200)))
        .unwrap();
    let done = audit
        .event(Stage::ResponseComplete, Some(ResponseStatus::code(200)))
        .unwrap();
    assert_eq!(started.audit_id, done.audit_id);
    assert_eq!(
        started.request_received_timestamp,
        done.request_received_timestamp
    );
    assert!(started.request_object.is_some() && started.response_object.is_none());
    assert!(done.request_object.is_some() && done.response_object.is_some());

    let mut meta = RequestAudit::with_decision(ctx(), Level::Metadata, StageSet::EMPTY);
    meta.set_request_object(json!({"kind": "Secret"}));
    let received = meta.event(Stage::RequestReceived, None).unwrap();
    assert!(received.request_object.is_none() && received.response_status.is_none());
    assert!(meta
        .event(Stage::ResponseComplete, None)
        .unwrap()
        .request_object
        .is_none());

    let mut req = RequestAudit::with_decision(ctx(), Level::Request, StageSet::EMPTY);
    req.set_request_object(json!({"kind": "Pod"}));
    req.set_response_object(json!({"kind": "Pod"}));
    let done = req.event(Stage::ResponseComplete, None).unwrap();
    assert!(done.request_object.is_some() && done.response_object.is_none());

    let none = RequestAudit::with_decision(ctx(), Level::None, StageSet::EMPTY);
    assert!(Stage::ALL.iter().all(|s| none.event(*s, None).is_none()));
}

#[test]
fn source_ips_follow_kube_apiserver_order() {
    let peer: IpAddr = "10.0.0.9".parse().unwrap();
    let mut h = http::HeaderMap::new();
    assert_eq!(source_ips(&h, peer), ["10.0.0.9"]);
    h.insert(
        "x-forwarded-for",
        "1.1.1.1, bogus, 2.2.2.2".parse().unwrap(),
    );
    h.insert("x-real-ip", "3.3.3.3".parse().unwrap());
    assert_eq!(
        source_ips(&h, peer),
        ["1.1.1.1", "2.2.2.2", "3.3.3.3", "10.0.0.9"]
    );
    h.insert("x-real-ip", "2.2.2.2".parse().unwrap());
    h.insert("x-forwarded-for", "1.1.1.1, 10.0.0.9".parse().unwrap());
    assert_eq!(
        source_ips(&h, peer),
        ["1.1.1.1", "10.0.0.9", "2.2.2.2", "10.0.0.9"]
    );
}

#[test]
fn object_ref_and_status_from_proxy_types() {
    let info = RequestInfo::parse(
        &http::Method::GET,
        "/apis/apps/v1/namespaces/ns/deployments/web/scale",
        None,
    );
    let r = ObjectReference::from_request_info(&info).unwrap();
    assert_eq!(
        (
            r.api_group.as_str(),
            r.resource.as_str(),
            r.namespace.as_str(),
            r.name.as_str(),
            r.subresource.as_str()
        ),
        ("apps", "deployments", "ns", "web", "scale")
    );
    let healthz = RequestInfo::parse(&http::Method::GET, "/healthz", None);
    assert!(ObjectReference::from_request_info(&healthz).is_none());

    let status = crate::proxy::status::Status::unavailable("no tunnel");
    let rs = ResponseStatus::from_status(&status);
    assert_eq!(
        serde_json::to_value(rs).unwrap(),
        json!({"metadata": {}, "status": "Failure", "message": "no tunnel", "reason": "ServiceUnavailable", "code": 503})
    );
}
