//! Pre-warmed fresh instances (`prewarm`): created and initialised off the request path,
//! each used for exactly one call, refilled in the background, and counted as cold
//! starts when a request has to create its own.

mod plugin_support;

use std::sync::Arc;
use std::time::Duration;

use hawser::plugin::testing::request;
use hawser::plugin::{PluginHost, Principal};
use plugin_support::{eventually_or, misbehave, Fixture};

/// How many calls the instance that served this answer had made (the fixture counts).
fn calls(p: Principal) -> String {
    p.extra("instance-calls").expect("instance-calls")[0].clone()
}

fn ready(host: &PluginHost) -> usize {
    host.chain().stages()[0].ready_instances
}

/// Waits until `n` instances of the only stage are ready.
async fn until_ready(host: &PluginHost, n: usize) {
    let what = format!("{n} ready instances");
    eventually_or(
        Duration::from_secs(20),
        &what,
        || ready(host) == n,
        || format!("{} ready", ready(host)),
    )
    .await;
}

#[tokio::test]
async fn requests_take_prewarmed_instances_and_the_pool_refills_in_the_background() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", "prewarm = 3"));
    let host = fx.host().await;
    until_ready(&host, 3).await;
    let chain = host.chain();
    for _ in 0..5 {
        // Each answer comes from an instance nothing had called before.
        let who = chain.check_credential(&request("/", &[])).await.unwrap();
        assert_eq!(calls(who.unwrap()), "1");
        until_ready(&host, 3).await;
    }
    let m = host.metrics().snapshot("creds");
    assert_eq!((m.invocations, m.cold_starts), (5, 0));
}

#[tokio::test]
async fn without_prewarm_every_fresh_call_is_a_cold_start() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", "prewarm = 0"));
    let host = fx.host().await;
    let chain = host.chain();
    for _ in 0..3 {
        let who = chain.check_credential(&request("/", &[])).await.unwrap();
        assert_eq!(calls(who.unwrap()), "1");
    }
    assert_eq!(ready(&host), 0);
    assert_eq!(host.metrics().snapshot("creds").cold_starts, 3);
    let text = host.metrics().render_prometheus();
    assert!(text.contains("hawser_plugin_cold_starts_total{stage=\"creds\""));
    // Every call lands in the call-time histogram, start-up included.
    let count = text
        .lines()
        .find(|l| l.starts_with("hawser_plugin_call_seconds_count{stage=\"creds\""))
        .expect("call-time histogram");
    assert!(count.ends_with(" 3"), "{count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_pool_still_gets_only_unused_instances() {
    let fx = Fixture::new(&misbehave("creds", "credential", "ok", "a", "prewarm = 2"));
    let host = fx.host().await;
    until_ready(&host, 2).await;
    let chain = host.chain();
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let chain = Arc::clone(&chain);
            tokio::spawn(async move {
                let who = chain.check_credential(&request("/", &[])).await.unwrap();
                calls(who.unwrap())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "1");
    }
    let m = host.metrics().snapshot("creds");
    assert_eq!(m.invocations, 24);
    assert!(m.cold_starts >= 1, "24 calls on a pool of 2: {m:?}");
    until_ready(&host, 2).await;
}

#[tokio::test]
async fn a_reused_stage_reports_its_idle_instances_and_refuses_prewarm() {
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "instances = \"reuse\"",
    ));
    let host = fx.host().await;
    // The self-check instance is kept for the first request.
    assert_eq!(ready(&host), 1);
    let chain = host.chain();
    let who = chain.check_credential(&request("/", &[])).await.unwrap();
    assert_eq!(calls(who.unwrap()), "1");
    let who = chain.check_credential(&request("/", &[])).await.unwrap();
    assert_eq!(calls(who.unwrap()), "2");
    assert_eq!(host.metrics().snapshot("creds").cold_starts, 0);

    fx.write(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "instances = \"reuse\"\nprewarm = 2",
    ));
    let Err(err) = PluginHost::load(&fx.file, hawser::plugin::Role::Hub).await else {
        panic!("prewarm with reuse was accepted");
    };
    let err = err.to_string();
    assert!(
        err.contains("plugins-hub.toml") && err.contains(".prewarm"),
        "{err}"
    );
    assert!(
        err.contains("only applies with instances = \"fresh\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_stage_keeps_at_most_max_idle_instances_after_a_burst() {
    let fx = Fixture::new(&misbehave(
        "creds",
        "credential",
        "ok",
        "a",
        "instances = \"reuse\"\nmax_idle = 2",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    // Slow calls (a busy-wait in the guest) overlap, so the burst runs on more
    // instances than are kept afterwards.
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let chain = Arc::clone(&chain);
            tokio::spawn(async move {
                let slow = request("/", &[("x-misbehave", "slow")]);
                calls(chain.check_credential(&slow).await.unwrap().unwrap())
            })
        })
        .collect();
    let mut first_calls = 0;
    for t in tasks {
        if t.await.unwrap() == "1" {
            first_calls += 1;
        }
    }
    assert!(
        first_calls > 2,
        "the burst ran on {first_calls} new instances"
    );
    assert_eq!(ready(&host), 2);

    // max_idle is for reused instances only, and bounded by the concurrency limit.
    for (extra, key, why) in [
        (
            "max_idle = 2",
            ".max_idle",
            "only applies with instances = \"reuse\"",
        ),
        (
            "instances = \"reuse\"\nmax_idle = 9\n[stage.limits]\nconcurrency = 8",
            ".max_idle",
            "outside 0..=8",
        ),
    ] {
        fx.write(&misbehave("creds", "credential", "ok", "a", extra));
        let Err(err) = PluginHost::load(&fx.file, hawser::plugin::Role::Hub).await else {
            panic!("{extra:?} was accepted");
        };
        let err = err.to_string();
        assert!(err.contains(key) && err.contains(why), "{err}");
    }
}
