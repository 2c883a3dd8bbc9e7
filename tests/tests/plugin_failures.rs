//! Failure handling of the plugin runtime, against the freshly built misbehave fixture:
//! every failure policy, deadlines, memory caps, illegal outputs, quarantine, overload,
//! instance reuse after traps, and the locked-down sandbox.

mod plugin_support;

use std::time::{Duration, Instant};

use hawser::plugin::testing::{audit_event, request};
use hawser::plugin::{FailureKind, PluginHost, Principal, Rejection, Role};
use plugin_support::{candidates, captured_logs, logs_text, misbehave, Fixture};

fn failure(r: Rejection) -> hawser::plugin::PluginFailure {
    match r {
        Rejection::Failed(f) => f,
        other => panic!("expected a plugin failure, got {other:?}"),
    }
}

fn bad(behaviour: &str) -> hawser::plugin::RequestHead {
    request("/api/v1/pods", &[("x-misbehave", behaviour)])
}

#[tokio::test]
async fn trap_fails_closed_with_a_500_status_naming_the_plugin_and_host_keeps_serving() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    let chain = host.chain();

    captured_logs();
    let f = failure(chain.check_credential(&bad("trap")).await.unwrap_err());
    assert_eq!(f.kind, FailureKind::Trap);
    // A std plugin's panic message reaches the host log through the SDK's hook, with
    // the stage named (a plugin has no stderr).
    let logs = logs_text();
    assert!(
        logs.lines().any(|l| l.contains("stage=\"creds\"")
            && l.contains("plugin: plugin panicked at plugins/testing/misbehave/src/lib.rs:")
            && l.contains("misbehave: trap")),
        "{logs}"
    );
    assert_eq!(f.http_status, 500);
    assert_eq!(f.stage, "creds");
    // The plugin's function that panicked, not the panic machinery under it.
    assert!(
        f.detail.contains("(in hawser_plugin_misbehave::") && f.detail.contains("::act)"),
        "{}",
        f.detail
    );
    assert!(
        f.plugin.starts_with("hawser_plugin_misbehave.wasm@"),
        "{}",
        f.plugin
    );
    let status: serde_json::Value = serde_json::from_str(&f.status_json()).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "InternalError");
    assert_eq!(status["code"], 500);
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("plugin stage \"creds\""));

    let p = chain
        .check_credential(&request("/", &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.user, "user-a");
    let m = host.metrics().snapshot("creds");
    assert_eq!((m.invocations, m.failures(FailureKind::Trap)), (2, 1));
}

/// Runs one request that misbehaves as `behaviour` on a stage with a 50 ms budget and
/// `instances` mode; checks it timed out (503) and that the next request is served
/// normally. Returns the failure and how long the bad request took.
async fn times_out_then_serves(
    instances: &str,
    behaviour: &str,
) -> (hawser::plugin::PluginFailure, Duration) {
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        &format!("instances = \"{instances}\"\n[stage.limits]\ntimeout_ms = 50"),
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let start = Instant::now();
    let f = failure(chain.check_credential(&bad(behaviour)).await.unwrap_err());
    let took = start.elapsed();
    assert_eq!(
        (f.kind, f.http_status),
        (FailureKind::Timeout, 503),
        "{instances}"
    );
    // A timed-out instance is dropped; the next call gets a working one.
    let p = chain
        .check_credential(&request("/", &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.user, "user-a", "{instances}");
    let m = host.metrics().snapshot("creds");
    assert_eq!(m.failures(FailureKind::Timeout), 1, "{instances}");
    (f, took)
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline_and_the_next_request_is_fine() {
    for instances in ["fresh", "reuse"] {
        let (_, took) = times_out_then_serves(instances, "loop").await;
        assert!(
            (Duration::from_millis(50)..Duration::from_secs(2)).contains(&took),
            "{instances}: returned after {took:?}"
        );
    }
}

#[tokio::test]
async fn a_plugin_waiting_in_a_host_call_is_ended_by_the_wall_clock_limit() {
    // A WASI sleep runs no guest code, so only the wall-clock limit
    // (4 x timeout_ms + 250 ms = 450 ms) can end it.
    for instances in ["fresh", "reuse"] {
        let (f, took) = times_out_then_serves(instances, "sleep").await;
        assert!(
            f.detail.contains("wall-clock limit of 450 ms"),
            "{}",
            f.detail
        );
        assert!(
            (Duration::from_millis(450)..Duration::from_secs(5)).contains(&took),
            "{instances}: returned after {took:?}"
        );
    }
}

#[tokio::test]
async fn output_larger_than_the_host_lifts_is_a_memory_fault_and_the_next_request_is_fine() {
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "[stage.limits]\nmemory_mb = 32\ntimeout_ms = 2000",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let f = failure(
        chain
            .check_credential(&bad("huge-output"))
            .await
            .unwrap_err(),
    );
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
    assert_eq!(
        f.detail, "more than 4 MiB handed to the host in one call",
        "{f:?}"
    );
    assert!(chain.check_credential(&request("/", &[])).await.is_ok());
    let m = host.metrics().snapshot("creds");
    assert_eq!(m.failures(FailureKind::MemoryLimit), 1);
}

#[tokio::test]
async fn random_bytes_beyond_the_limit_fail_the_call_not_the_host() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    let chain = host.chain();
    let f = failure(
        chain
            .check_credential(&bad("random-hog"))
            .await
            .unwrap_err(),
    );
    assert_eq!(f.kind, FailureKind::Trap, "{f:?}");
    assert!(f.detail.contains("exceeds limit 65536"), "{f:?}");
    assert!(chain.check_credential(&request("/", &[])).await.is_ok());
}

#[tokio::test]
async fn memory_bomb_is_capped_and_the_next_request_is_fine() {
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "[stage.limits]\nmemory_mb = 16\ntimeout_ms = 2000",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let f = failure(
        chain
            .check_credential(&bad("memory-bomb"))
            .await
            .unwrap_err(),
    );
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
    assert_eq!(f.http_status, 500);
    assert!(f.detail.contains("16 MiB"), "{}", f.detail);
    assert!(chain.check_credential(&request("/", &[])).await.is_ok());
    let m = host.metrics().snapshot("creds");
    assert_eq!(m.failures(FailureKind::MemoryLimit), 1);
    // The bomb grew its instance close to the cap, never past it.
    assert!(
        (8 << 20..=16 << 20).contains(&m.memory_peak_bytes),
        "{}",
        m.memory_peak_bytes
    );
}

#[tokio::test]
async fn time_spent_in_host_imports_counts_against_the_budget() {
    // Signature checks run on the host, where no epoch deadline fires; their time is
    // charged to the call's budget, so the call ends on the budget, not later on the
    // wall-clock limit (450 ms here) or never.
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "[stage.limits]\ntimeout_ms = 50\nmemory_mb = 64",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let f = failure(
        chain
            .check_credential(&bad("verify-flood"))
            .await
            .unwrap_err(),
    );
    assert_eq!(f.kind, FailureKind::Timeout, "{f:?}");
    assert!(f.detail.contains("time budget"), "{}", f.detail);
    assert!(chain.check_credential(&request("/", &[])).await.is_ok());
}

#[tokio::test]
async fn host_handles_are_capped_and_the_next_request_is_fine() {
    // Each WASI handle (a timer here; a stream or a file elsewhere) is host memory the
    // linear-memory cap does not count, so the number a plugin holds is capped too.
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "[stage.limits]\ntimeout_ms = 2000",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let f = failure(
        chain
            .check_credential(&bad("handle-hoard"))
            .await
            .unwrap_err(),
    );
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
    assert_eq!(f.http_status, 500);
    assert!(f.detail.contains("1024 host handles"), "{}", f.detail);
    assert!(chain.check_credential(&request("/", &[])).await.is_ok());
    let m = host.metrics().snapshot("creds");
    assert_eq!(m.failures(FailureKind::MemoryLimit), 1);
}

#[tokio::test]
async fn a_trapped_reused_instance_is_never_reused() {
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "instances = \"reuse\"",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let calls = |p: Principal| p.extra("instance-calls").unwrap()[0].clone();
    let ok = request("/", &[]);
    assert_eq!(
        calls(chain.check_credential(&ok).await.unwrap().unwrap()),
        "1"
    );
    assert_eq!(
        calls(chain.check_credential(&ok).await.unwrap().unwrap()),
        "2",
        "reused"
    );
    assert!(chain.check_credential(&bad("trap")).await.is_err());
    assert_eq!(
        calls(chain.check_credential(&ok).await.unwrap().unwrap()),
        "1",
        "a new instance"
    );

    // Fresh instances never carry state.
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let chain = fx.host().await.chain();
    for _ in 0..3 {
        assert_eq!(
            calls(chain.check_credential(&ok).await.unwrap().unwrap()),
            "1"
        );
    }
}

#[tokio::test]
async fn fail_open_audit_keeps_the_event_and_counts_the_failure() {
    let fx = Fixture::new(&format!(
        "{}{}",
        misbehave(
            "audit-open",
            "audit",
            "audit-error",
            "a",
            "failure = \"open\""
        ),
        misbehave(
            "audit-open-trap",
            "audit",
            "trap",
            "a",
            "failure = \"open\""
        ),
    ));
    let host = fx.host().await;
    let ev = audit_event(&request("/", &[]));
    let out = host.chain().audit(ev.clone()).await.unwrap();
    assert_eq!(out, Some(ev), "the event is recorded unchanged");
    let m = host.metrics().snapshot("audit-open");
    assert_eq!((m.fail_open, m.failures(FailureKind::Error)), (1, 1));
    let m = host.metrics().snapshot("audit-open-trap");
    assert_eq!((m.fail_open, m.failures(FailureKind::Trap)), (1, 1));
}

#[tokio::test]
async fn fail_closed_audit_rejects() {
    let fx = Fixture::new(&misbehave("audit", "audit", "audit-error", "a", ""));
    let host = fx.host().await;
    let f = failure(
        host.chain()
            .audit(audit_event(&request("/", &[])))
            .await
            .unwrap_err(),
    );
    assert_eq!((f.kind, f.http_status), (FailureKind::Error, 500));
}

#[tokio::test]
async fn fail_open_routing_leaves_the_choice_to_the_host() {
    let fx = Fixture::new(&misbehave(
        "route",
        "routing",
        "loop",
        "a",
        "failure = \"open\"\n[stage.limits]\ntimeout_ms = 20",
    ));
    let host = fx.host().await;
    let who = Principal::new("x");
    let out = host
        .chain()
        .route(&request("/", &[]), Some(&who), &candidates())
        .await;
    assert_eq!(out, Ok(None));
    assert_eq!(
        host.metrics()
            .snapshot("route")
            .failures(FailureKind::Timeout),
        1
    );
}

#[tokio::test]
async fn fail_open_credential_falls_through_to_the_next_stage() {
    let fx = Fixture::new(&format!(
        "{}[[stage]]\nname = \"tokens\"\nkind = \"credential\"\nplugin = \"{{tokens}}\"\n\
         [stage.config.tokens.s3cret]\nuser = \"alice\"\n",
        misbehave("flaky", "credential", "trap", "a", "failure = \"open\""),
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let p = chain
        .check_credential(&request("/", &[("authorization", "Bearer s3cret")]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.user, "alice");
    // No stage accepts: the host answers 401.
    let r = chain
        .check_credential(&request("/", &[]))
        .await
        .unwrap_err();
    assert_eq!(r.http_status(), 401);
    assert!(matches!(r, Rejection::Denied { ref stage, .. } if stage == "host"));
}

#[tokio::test]
async fn illegal_outputs_are_refused() {
    // Routing runs at the hub, impersonation at the agent: one chain each.
    let hub_fx = Fixture::new(&format!(
        "{}{}",
        misbehave("creds", "credential", "ok", "a", ""),
        misbehave(
            "route",
            "routing",
            "ok",
            "a",
            "[stage.policy]\nallow_headers = [\"x-hawser-*\"]"
        ),
    ));
    let agent_fx = Fixture::new(&format!(
        "{}{}",
        misbehave("creds", "credential", "ok", "a", ""),
        misbehave("imp", "impersonation", "ok", "a", ""),
    ));
    let (hub, agent) = (hub_fx.host().await, agent_fx.host().await);
    let (chain, agent_chain) = (hub.chain(), agent.chain());
    let who = chain
        .check_credential(&request("/", &[]))
        .await
        .unwrap()
        .unwrap();

    let cases: [(&str, Option<&str>); 4] = [
        ("illegal-principal", Some("not a legal header value")),
        ("escalate", Some("system:masters")),
        (
            "illegal-route",
            Some("not one of the configured candidates"),
        ),
        ("illegal-header", Some("not a legal header value")),
    ];
    for (behaviour, detail) in cases {
        let req = bad(behaviour);
        let result = match behaviour {
            "illegal-principal" => chain.check_credential(&req).await.map(|_| ()),
            "escalate" => agent_chain.impersonate(&who, &req).await.map(|_| ()),
            _ => chain
                .route(&req, Some(&who), &candidates())
                .await
                .map(|_| ()),
        };
        let f = failure(result.unwrap_err());
        assert_eq!(f.kind, FailureKind::IllegalOutput, "{behaviour}");
        assert_eq!(f.http_status, 500, "{behaviour}");
        let detail = detail.unwrap();
        assert!(
            f.detail.contains(detail),
            "{behaviour}: {:?} lacks {detail:?}",
            f.detail
        );
    }

    // The legal choice passes, and carries only the allowed header.
    let choice = chain
        .route(&request("/", &[]), Some(&who), &candidates())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (choice.cluster.as_str(), choice.endpoint.as_str()),
        ("c1", "e1")
    );
    assert_eq!(choice.set_headers[0].name, "x-hawser-version");
}

#[tokio::test]
async fn an_abstaining_impersonation_stage_still_bounds_the_identity_sent_upstream() {
    // The credential stage vouches for system:masters; the impersonation stage has no
    // opinion. Its policy (default: deny system:masters) still applies to what is sent.
    let fx = Fixture::new(&format!(
        "[[stage]]\nname = \"creds\"\nkind = \"credential\"\nplugin = \"{{tokens}}\"\n\
         [stage.config.tokens.root]\nuser = \"root\"\ngroups = [\"system:masters\"]\n\
         [stage.config.tokens.dev]\nuser = \"dev\"\ngroups = [\"devs\"]\n{}",
        misbehave("imp", "impersonation", "abstain", "a", "")
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let as_root = request("/", &[("authorization", "Bearer root")]);
    let who = chain.check_credential(&as_root).await.unwrap().unwrap();
    assert_eq!(who.groups, ["system:masters"]);
    match chain.impersonate(&who, &as_root).await {
        Err(Rejection::Denied { stage, denial }) => {
            assert_eq!(stage, "imp");
            assert_eq!(denial.kind, hawser::plugin::DenialKind::Forbidden);
            assert!(
                denial.message.contains("system:masters"),
                "{}",
                denial.message
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Within the policy, the abstaining stage lets the caller through unmapped.
    let as_dev = request("/", &[("authorization", "Bearer dev")]);
    let who = chain.check_credential(&as_dev).await.unwrap().unwrap();
    assert_eq!(chain.impersonate(&who, &as_dev).await.unwrap(), None);
}

#[tokio::test]
async fn a_routing_header_the_policy_does_not_allow_is_refused() {
    let fx = Fixture::new(&misbehave("route", "routing", "ok", "a", ""));
    let host = fx.host().await;
    let who = Principal::new("x").with_version("a");
    let f = failure(
        host.chain()
            .route(&request("/", &[]), Some(&who), &candidates())
            .await
            .unwrap_err(),
    );
    assert_eq!(f.kind, FailureKind::IllegalOutput);
    assert!(
        f.detail.contains("not allowed by the stage policy"),
        "{}",
        f.detail
    );
}

trait WithVersion {
    fn with_version(self, v: &str) -> Self;
}

impl WithVersion for Principal {
    fn with_version(mut self, v: &str) -> Self {
        self.extra.push(hawser::plugin::Extra {
            key: "version".into(),
            values: vec![v.into()],
        });
        self
    }
}

#[tokio::test]
async fn repeated_traps_quarantine_the_version_until_a_new_one_loads() {
    let stage = |version: &str| {
        misbehave(
            "creds",
            "credential",
            "ok",
            version,
            "[stage.quarantine]\nafter_faults = 3\nwindow_ms = 60000\nbackoff_ms = 600000",
        )
    };
    let fx = Fixture::new(&stage("a"));
    let host = fx.host().await;
    let chain = host.chain();
    for _ in 0..3 {
        assert_eq!(
            failure(chain.check_credential(&bad("trap")).await.unwrap_err()).kind,
            FailureKind::Trap
        );
    }
    // Even a good request is refused fast while quarantined.
    let start = Instant::now();
    let f = failure(
        chain
            .check_credential(&request("/", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((f.kind, f.http_status), (FailureKind::Quarantined, 503));
    assert!(start.elapsed() < Duration::from_millis(100));
    let m = host.metrics().snapshot("creds");
    assert_eq!(
        (m.quarantines, m.failures(FailureKind::Quarantined)),
        (1, 1)
    );
    assert!(host.status().stages[0].quarantined);
    assert!(host
        .metrics()
        .render_prometheus()
        .contains("hawser_plugin_quarantines_total{stage=\"creds\""));

    // A new version starts clean.
    fx.write(&stage("b"));
    host.reload(hawser::plugin::ReloadTrigger::Admin)
        .await
        .unwrap();
    let p = host
        .chain()
        .check_credential(&request("/", &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.user, "user-b");
}

#[tokio::test]
async fn calls_past_the_concurrency_limit_fail_fast_as_overloaded() {
    let fx = Fixture::new(&format!(
        "{}slow_ms = 300\n",
        misbehave(
            "creds",
            "credential",
            "slow",
            "a",
            "[stage.limits]\nconcurrency = 1\ntimeout_ms = 5000"
        )
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let req = request("/", &[]);
    // The slow call yields to the executor every epoch tick, so the second call runs
    // while the first is still inside the plugin.
    let (a, b) = tokio::join!(chain.check_credential(&req), async {
        tokio::task::yield_now().await;
        chain.check_credential(&req).await
    });
    assert!(a.is_ok(), "{a:?}");
    let f = failure(b.unwrap_err());
    assert_eq!((f.kind, f.http_status), (FailureKind::Overloaded, 503));
}

#[tokio::test]
async fn running_out_of_instance_slots_is_overload_not_a_plugin_fault() {
    // Two slots: one holds the idle stage's instance kept after the start-up
    // self-check, the first call to the slow stage takes the other. A second concurrent
    // call finds no slot free: that is the host's capacity, so it must not count
    // towards quarantining the plugin.
    let stages = format!(
        "{}slow_ms = 300\n{}",
        misbehave(
            "slow",
            "credential",
            "slow",
            "a",
            "instances = \"reuse\"\nmax_idle = 0\n[stage.limits]\nconcurrency = 2\n\
             timeout_ms = 5000\n[stage.quarantine]\nafter_faults = 1",
        ),
        misbehave("idle", "credential", "ok", "a", "instances = \"reuse\""),
    );
    let fx = Fixture::new("");
    let text = format!(
        "role = \"hub\"\n[runtime]\nmax_instances = 2\ncache_dir = {:?}\n{}",
        plugin_support::cache_dir().display().to_string(),
        plugin_support::expand(&stages)
    );
    std::fs::write(&fx.file, text).unwrap();
    let host = fx.host().await;
    let chain = host.chain();
    let req = request("/", &[]);
    let (a, b) = tokio::join!(chain.check_credential(&req), async {
        tokio::task::yield_now().await;
        chain.check_credential(&req).await
    });
    assert!(a.is_ok(), "{a:?}");
    let f = failure(b.unwrap_err());
    assert_eq!(
        (f.kind, f.http_status),
        (FailureKind::Overloaded, 503),
        "{f:?}"
    );
    assert!(f.detail.contains("max_instances"), "{}", f.detail);
    assert!(!host.status().stages[0].quarantined);
    assert!(chain.check_credential(&req).await.is_ok());
}

#[tokio::test]
async fn plugins_have_no_ambient_capabilities_unless_granted() {
    let probe = request("/", &[("x-misbehave", "probe")]);
    let extra = |p: &Principal, k: &str| p.extra(k).unwrap()[0].clone();

    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let p = fx
        .host()
        .await
        .chain()
        .check_credential(&probe)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(extra(&p, "env-count"), "0");
    assert_eq!(extra(&p, "fs"), "denied");

    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "[stage.grants]\nenv = { A = \"1\", B = \"2\" }\nread_dirs = { \".\" = \"/\" }",
    ));
    let p = fx
        .host()
        .await
        .chain()
        .check_credential(&probe)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(extra(&p, "env-count"), "2");
    assert_eq!(extra(&p, "fs"), "open");
}

#[tokio::test]
async fn plugins_see_only_the_request_headers_they_declare() {
    let req = request(
        "/",
        &[
            ("x-misbehave", "probe"),
            ("authorization", "Bearer secret"),
            ("x-a", "1"),
            ("cookie", "c"),
        ],
    );
    let seen = |p: &Principal| p.extra("headers-seen").unwrap().to_vec();

    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", ""));
    let host = fx.host().await;
    assert_eq!(host.chain().stages()[0].request_headers, None);
    let p = host.chain().check_credential(&req).await.unwrap().unwrap();
    assert_eq!(seen(&p), ["x-misbehave", "authorization", "x-a", "cookie"]);

    let fx = Fixture::new(&format!(
        "{}request_headers = [\"x-misbehave\", \"X-A\"]\n",
        misbehave("creds", "credential", "ok", "a", "")
    ));
    let host = fx.host().await;
    assert_eq!(
        host.chain().stages()[0].request_headers.as_deref(),
        Some(&["x-misbehave".to_string(), "x-a".to_string()][..])
    );
    let p = host.chain().check_credential(&req).await.unwrap().unwrap();
    assert_eq!(seen(&p), ["x-misbehave", "x-a"], "no credential reaches it");

    // The credential headers a plugin declares reach it, listed or not.
    let fx = Fixture::new(&format!(
        "{}request_headers = [\"x-misbehave\"]\ncredential_headers = [\"cookie\"]\n",
        misbehave("creds", "credential", "ok", "a", "")
    ));
    let host = fx.host().await;
    let p = host.chain().check_credential(&req).await.unwrap().unwrap();
    assert_eq!(seen(&p), ["x-misbehave", "cookie"]);

    // The proxy copies only what some stage reads: the union of the declarations,
    // or every header once one stage declares nothing.
    let declaring = |name: &str, headers: &str| {
        format!(
            "{}request_headers = {headers}\n",
            misbehave(name, "credential", "ok", "a", "")
        )
    };
    let fx = Fixture::new(&format!(
        "{}{}",
        declaring("one", r#"["x-b", "x-a"]"#),
        declaring("two", r#"["x-a", "cookie"]"#)
    ));
    assert_eq!(
        fx.host().await.chain().request_headers(),
        Some(&["cookie".to_string(), "x-a".into(), "x-b".into()][..])
    );
    let fx = Fixture::new(&format!(
        "{}{}",
        declaring("one", r#"["x-a"]"#),
        misbehave("two", "credential", "ok", "a", "")
    ));
    assert_eq!(fx.host().await.chain().request_headers(), None);

    // A declaration the host cannot honour refuses the plugin.
    let fx = Fixture::new(&format!(
        "{}request_headers = [\"bad header\"]\n",
        misbehave("creds", "credential", "ok", "a", "")
    ));
    let err = PluginHost::load(&fx.file, Role::Hub)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("request-headers"), "{err}");
}
