//! Inline calls: a plugin that imports no WASI runs on the calling task, without a
//! fiber or a wall-clock timer, when its budget is short. These tests hold the inline
//! path to the same failure handling as the fiber path (`plugin_failures.rs`, whose
//! fixture imports WASI): deadlines, memory caps and traps fail the request closed,
//! and the next request is served. They also pin down the trade-off: an inline call
//! keeps its thread for up to the budget, a call on a fiber lets other tasks run.

mod plugin_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hawser::plugin::testing::request;
use hawser::plugin::{Chain, FailureKind, PluginFailure, Principal, Rejection};
use plugin_support::Fixture;

/// A stage of the inline fixture with `extra` lines (instances, limits).
fn inline_stage(extra: &str) -> String {
    format!(
        "[[stage]]\nname = \"creds\"\nkind = \"credential\"\nplugin = \"{{misbehave-inline}}\"\n\
         {extra}\n[stage.config]\n"
    )
}

fn bad(behaviour: &str) -> hawser::plugin::RequestHead {
    request("/api/v1/pods", &[("x-misbehave", behaviour)])
}

async fn fails(chain: &Chain, behaviour: &str) -> PluginFailure {
    match chain.check_credential(&bad(behaviour)).await {
        Err(Rejection::Failed(f)) => f,
        other => panic!("{behaviour}: expected a plugin failure, got {other:?}"),
    }
}

/// Calls served by the instance that answered, as the fixture counts them.
async fn served(chain: &Chain) -> String {
    let p: Principal = chain
        .check_credential(&request("/", &[]))
        .await
        .expect("accepted")
        .expect("a principal");
    assert_eq!(p.user, "inline");
    p.extra("instance-calls").expect("instance-calls")[0].clone()
}

#[tokio::test]
async fn the_status_says_which_stages_run_inline() {
    // The default budget (20 ms) runs inline; 51 ms is past the inline limit; a plugin
    // importing WASI never runs inline.
    let fx = Fixture::new(&format!(
        "{}{}{}",
        inline_stage(""),
        inline_stage("[stage.limits]\ntimeout_ms = 51").replace("\"creds\"", "\"long\""),
        plugin_support::misbehave("wasi", "credential", "ok", "a", ""),
    ));
    let host = fx.host().await;
    let inline: Vec<(String, bool)> = host
        .chain()
        .stages()
        .into_iter()
        .map(|s| (s.name, s.inline))
        .collect();
    assert_eq!(
        inline,
        [
            ("creds".to_owned(), true),
            ("long".to_owned(), false),
            ("wasi".to_owned(), false)
        ]
    );

    // `runtime.inline_max_ms = 0` puts every plugin on a fiber.
    let text = format!(
        "{}inline_max_ms = 0\n{}",
        plugin_support::header(),
        plugin_support::expand(&inline_stage(""))
    );
    std::fs::write(&fx.file, text).expect("write chain file");
    let host = fx.host().await;
    assert!(!host.chain().stages()[0].inline);
}

#[tokio::test]
async fn an_inline_loop_hits_the_deadline_and_the_next_request_is_fine() {
    for instances in ["fresh", "reuse"] {
        let fx = Fixture::new(&inline_stage(&format!("instances = \"{instances}\"")));
        let host = fx.host().await;
        let chain = host.chain();
        assert!(chain.stages()[0].inline);
        let start = Instant::now();
        let f = fails(&chain, "loop").await;
        let took = start.elapsed();
        assert_eq!(
            (f.kind, f.http_status),
            (FailureKind::Timeout, 503),
            "{f:?}"
        );
        assert!(f.message().contains("\"creds\""), "{}", f.message());
        // The default budget is 20 ms, counted in 1 ms ticks.
        assert!(
            (Duration::from_millis(20)..Duration::from_secs(2)).contains(&took),
            "{instances}: returned after {took:?}"
        );
        served(&chain).await;
        let m = host.metrics().snapshot("creds");
        assert_eq!(m.failures(FailureKind::Timeout), 1, "{instances}");
    }
}

#[tokio::test]
async fn an_inline_memory_bomb_is_capped() {
    let fx = Fixture::new(&inline_stage(
        "instances = \"reuse\"\n[stage.limits]\nmemory_mb = 16",
    ));
    let host = fx.host().await;
    let chain = host.chain();
    let f = fails(&chain, "memory-bomb").await;
    assert_eq!(
        (f.kind, f.http_status),
        (FailureKind::MemoryLimit, 500),
        "{f:?}"
    );
    assert!(f.detail.contains("16 MiB"), "{}", f.detail);
    served(&chain).await;
    let m = host.metrics().snapshot("creds");
    assert!(m.memory_peak_bytes <= 16 << 20, "{}", m.memory_peak_bytes);
}

#[tokio::test]
async fn an_inline_trap_fails_closed_and_its_instance_is_not_reused() {
    let fx = Fixture::new(&inline_stage("instances = \"reuse\""));
    let host = fx.host().await;
    let chain = host.chain();
    assert_eq!(served(&chain).await, "1");
    assert_eq!(served(&chain).await, "2");
    let f = fails(&chain, "trap").await;
    assert_eq!((f.kind, f.http_status), (FailureKind::Trap, 500), "{f:?}");
    assert!(
        f.detail
            .contains("(in <hawser_plugin_misbehave_inline::MisbehaveInline as"),
        "{}",
        f.detail
    );
    // A new instance: its first call.
    assert_eq!(served(&chain).await, "1");
}

#[tokio::test]
async fn inline_recursion_exhausts_the_wasm_stack_not_the_thread() {
    // Inline, the guest's frames are on this thread's stack; wasmtime's stack limit
    // ends the call with a trap long before the thread's own stack runs out.
    let fx = Fixture::new(&inline_stage("instances = \"reuse\""));
    let host = fx.host().await;
    let chain = host.chain();
    assert_eq!(served(&chain).await, "1");
    let f = fails(&chain, "recurse").await;
    assert_eq!((f.kind, f.http_status), (FailureKind::Trap, 500), "{f:?}");
    assert!(f.detail.contains("call stack exhausted"), "{}", f.detail);
    assert_eq!(served(&chain).await, "1");
}

/// Runs a looping call on a single-threaded runtime beside a task that counts its
/// turns; returns the turns taken while the call ran.
async fn turns_during_a_loop(chain: &Chain) -> u64 {
    served(chain).await; // an instance is ready, so the call starts at once
    let turns = Arc::new(AtomicU64::new(0));
    let counter = turns.clone();
    let task = tokio::spawn(async move {
        loop {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    let f = fails(chain, "loop").await;
    assert_eq!(f.kind, FailureKind::Timeout, "{f:?}");
    let n = turns.load(Ordering::Relaxed);
    task.abort();
    n
}

#[tokio::test(flavor = "current_thread")]
async fn an_inline_call_holds_its_thread_and_a_call_on_a_fiber_lets_other_tasks_run() {
    let fx = Fixture::new(&inline_stage("instances = \"reuse\""));
    let host = fx.host().await;
    assert_eq!(turns_during_a_loop(&host.chain()).await, 0);

    // 60 ms is past the inline limit: the same plugin runs on a fiber that yields at
    // every epoch tick.
    fx.write(&inline_stage(
        "instances = \"reuse\"\n[stage.limits]\ntimeout_ms = 60",
    ));
    let host = fx.host().await;
    assert!(!host.chain().stages()[0].inline);
    assert!(turns_during_a_loop(&host.chain()).await > 0);
}
