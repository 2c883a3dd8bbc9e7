//! The audit webhook sink behind a running hub: requests through the hub while the
//! receiver answers 503 or drops connections, then every event delivered once the
//! receiver is back, batched as `audit.k8s.io/v1` `EventList`s; and `fail-closed`
//! refusing requests once the sink has failed longer than `failure_grace`.
//!
//! Delivery is at least once and in order: a batch is retried until the receiver
//! answers 2xx, so a duplicate could only come from a receiver that kept a batch but
//! lost its answer. This receiver never does, so these tests require exactly once.

use hawser_tests::harness::audit_receiver::{Receiver, DROP_CONNECTIONS, TOKEN, UNAVAILABLE, UP};
use hawser_tests::harness::client::{front_client, get, FrontClient};
use hawser_tests::harness::eventually;
use hawser_tests::harness::procs::HubOpts;
use hawser_tests::harness::stack::{double_config, Stack};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const PODS: &str = "/api/v1/namespaces/default/pods";
/// The stages a plain (not long-running) request is recorded at.
const STAGES: [&str; 2] = ["RequestReceived", "ResponseComplete"];

/// `[audit]` for the hub: every request at Metadata (`policy_extra` adds top-level
/// policy keys), posted to `r` in batches.
fn audit_section(dir: &Path, r: &Receiver, mode: &str, policy_extra: &str) -> String {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\n{policy_extra}rules:\n- level: Metadata\n"
        ),
    )
    .unwrap();
    let token = dir.join("audit-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    format!(
        "\n[audit]\npolicy_file = {:?}\nmode = \"{mode}\"\nfailure_grace = \"1s\"\n\
         [audit.webhook]\nurl = \"{}\"\nca_file = {:?}\ntoken_file = {:?}\n\
         max_batch_size = 50\nmax_batch_wait = \"300ms\"\nspool_dir = {:?}\n\
         retry_initial = \"50ms\"\nretry_max = \"300ms\"\nrequest_timeout = \"2s\"\n",
        policy.display().to_string(),
        r.url,
        r.ca_file.display().to_string(),
        token.display().to_string(),
        dir.join("spool").display().to_string(),
    )
}

async fn stack(r: &Receiver, dir: &Path, mode: &str) -> Stack {
    stack_with_policy(r, dir, mode, "").await
}

async fn stack_with_policy(r: &Receiver, dir: &Path, mode: &str, policy_extra: &str) -> Stack {
    let opts = HubOpts {
        front_extra: audit_section(dir, r, mode, policy_extra),
        ..HubOpts::default()
    };
    let s = Stack::start(double_config(), opts, 1, 1).await;
    s.api.add_pod("default", "web-0");
    s
}

/// GET pods through the hub: the status and the Audit-ID it answered with.
async fn list_pods(s: &Stack, client: &FrontClient) -> (u16, String) {
    let reply = get(client, s.hub.front, &s.path(PODS), &[]).await;
    let id = reply
        .headers
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (reply.status.as_u16(), id)
}

/// How often each `(auditID, stage)` of `ids` arrived.
fn arrivals(r: &Receiver, ids: &[String]) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for (id, stage, _, _) in r.events() {
        if ids.contains(&id) {
            *seen.entry((id, stage)).or_insert(0) += 1;
        }
    }
    seen
}

/// Sends one more request and waits for its ResponseComplete: delivery is in order,
/// so everything recorded before it has arrived too.
async fn drain(s: &Stack, client: &FrontClient, r: &Receiver) {
    let (code, marker) = list_pods(s, client).await;
    assert_eq!(code, 200);
    let arrived = eventually(Duration::from_secs(30), || async {
        r.events()
            .iter()
            .any(|(id, stage, _, _)| *id == marker && stage == "ResponseComplete")
            .then_some(())
    })
    .await;
    assert!(arrived.is_some(), "the sink did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_during_a_receiver_outage_arrive_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UNAVAILABLE).await;
    let s = stack(&r, dir.path(), "blocking").await;
    let client = front_client(&s.hub.ca_pem());

    // Half the requests while the receiver answers 503, half while it drops
    // connections: the requests are served all the same (blocking mode only waits
    // when the memory queue and the spool are full).
    const N: usize = 40;
    let mut ids = Vec::new();
    for i in 0..N {
        if i == N / 2 {
            let refused = eventually(Duration::from_secs(10), || async {
                (r.count(|st| &st.refused_503) >= 2).then_some(())
            })
            .await;
            assert!(refused.is_some(), "the hub never tried the receiver");
            r.set(DROP_CONNECTIONS);
        }
        let (code, id) = list_pods(&s, &client).await;
        assert_eq!(code, 200, "request {i} failed during the outage");
        ids.push(id);
    }
    let dropped = eventually(Duration::from_secs(10), || async {
        (r.count(|st| &st.dropped) >= 2).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the hub never retried the receiver");
    assert!(
        arrivals(&r, &ids).is_empty(),
        "events arrived while the receiver was down"
    );

    r.set(UP);
    drain(&s, &client, &r).await;
    let seen = arrivals(&r, &ids);
    let missing: Vec<_> = ids
        .iter()
        .flat_map(|id| STAGES.iter().map(move |st| (id.clone(), st.to_string())))
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "missing events: {missing:?}");
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(seen.len(), N * STAGES.len(), "unexpected stages: {seen:?}");

    // Kubernetes webhook wire format, in batches.
    assert_eq!(r.count(|st| &st.bad_requests), 0, "malformed batches");
    assert!(r
        .events()
        .iter()
        .all(|(_, _, v, k)| v == "audit.k8s.io/v1" && k == "Event"));
    let batches = r.batches();
    let largest = batches.iter().copied().max().unwrap_or(0);
    assert!(
        largest > 1,
        "no POST carried more than one event: {batches:?}"
    );
    eprintln!(
        "audit webhook: {} events of {N} requests in {} POSTs (largest {largest}) after {} 503s and {} dropped connections",
        seen.len(),
        batches.len(),
        r.count(|st| &st.refused_503),
        r.count(|st| &st.dropped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_requests_while_the_receiver_is_down_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UP).await;
    let s = stack(&r, dir.path(), "fail-closed").await;
    let client = front_client(&s.hub.ca_pem());
    let (code, before) = list_pods(&s, &client).await;
    assert_eq!(code, 200);

    // The receiver goes down: requests are served during the 1 s grace, then refused.
    r.set(UNAVAILABLE);
    let served = std::sync::Mutex::new(vec![before]);
    let refused = eventually(Duration::from_secs(15), || async {
        let (code, id) = list_pods(&s, &client).await;
        match code {
            200 => {
                served.lock().unwrap().push(id);
                None
            }
            503 => Some(id),
            other => panic!("unexpected status {other}"),
        }
    })
    .await;
    assert!(refused.is_some(), "fail-closed never refused a request");

    // Back up: requests are served again once a delivery succeeded.
    r.set(UP);
    let recovered = eventually(Duration::from_secs(15), || async {
        let (code, id) = list_pods(&s, &client).await;
        (code == 200).then_some(id)
    })
    .await
    .expect("requests still refused after the receiver came back");
    let mut served = served.into_inner().unwrap();
    served.push(recovered);
    drain(&s, &client, &r).await;

    // No request was served without its RequestReceived event, and none is lost.
    let seen = arrivals(&r, &served);
    let missing: Vec<_> = served
        .iter()
        .filter(|id| !seen.contains_key(&((*id).clone(), "RequestReceived".to_string())))
        .collect();
    assert!(missing.is_empty(), "served without an event: {missing:?}");
    assert_eq!(r.count(|st| &st.bad_requests), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_even_when_the_policy_omits_request_received() {
    // With RequestReceived omitted a request's first event comes only after it was
    // served; fail-closed must still refuse it up front while the sink is failing.
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UP).await;
    let s = stack_with_policy(
        &r,
        dir.path(),
        "fail-closed",
        "omitStages: [\"RequestReceived\"]\n",
    )
    .await;
    let client = front_client(&s.hub.ca_pem());
    assert_eq!(list_pods(&s, &client).await.0, 200);
    r.set(UNAVAILABLE);
    let refused = eventually(Duration::from_secs(15), || async {
        let (code, id) = list_pods(&s, &client).await;
        (code == 503).then_some(id)
    })
    .await
    .expect("fail-closed never refused a request");
    assert!(
        s.api
            .requests()
            .iter()
            .all(|q| q.header("audit-id").as_deref() != Some(refused.as_str())),
        "a refused request reached the API server"
    );
}
