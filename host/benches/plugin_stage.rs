//! Cost of plugin stages: one credential stage, and a 5-stage chain as the hub runs it
//! (two credential stages, the first for an API-key header this request lacks, then
//! routing and two audit stages; impersonation runs at the agent), each with fresh and
//! with reused instances, against the same plugin crates linked natively and called
//! directly.
//!
//! The plugins are the workspace's own (header-credential, locality-route,
//! audit-redact) and the request carries the headers kubectl sends, so the figures are
//! what a hub pays per request. The stages run with default limits, under which these
//! plugins (no WASI imports, budgets of at most 50 ms) run inline on the calling task.
//! `wasm-reuse-fiber` gives every stage a 1 s budget instead, which puts the same calls
//! on a fiber that yields at epoch ticks, as a plugin importing WASI always runs.
//!
//! Fresh instances come three ways:
//! - `wasm-fresh`: `prewarm = 0`, so every call creates, initialises, calls and tears
//!   down its own instance: the whole CPU cost of a fresh instance per request;
//! - `wasm-fresh-prewarmed`: the default `prewarm = 2`, with the pool refilled between
//!   requests and only the request timed: what a request waits for when the host is not
//!   saturated (taking a ready instance, the call, tearing it down). Creating the
//!   instance still costs the CPU `wasm-fresh` shows, off the request path.
//!
//! `stage/wasm-floor-*` is the credential plugin configured to read a header the request
//! lacks: it is handed the same request head (minus the one header) and abstains at
//! once. It measures what the host and wasmtime cost with next to no plugin work:
//! - reused: one call with this request head (seven strings lowered into the guest),
//!   which every credential stage pays whatever it does;
//! - fresh: that plus creating, initialising and tearing down an instance of a `no_std`
//!   plugin that imports nothing (a single core instance), as the workspace's stage
//!   plugins are. A std plugin links WASI into every instance and costs more (see
//!   "std or `no_std`" in the SDK docs).
//!
//! Needs the built plugins: `scripts/build-plugins.sh && cargo bench -p hawser --bench plugin_stage`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

mod support;
use hawser::plugin::testing::{self, audit_event, candidate, request};
use hawser::plugin::{Candidate, Chain, Health, RequestHead};
use hawser_plugin_audit_redact::AuditRedact;
use hawser_plugin_header_credential::StaticTokens;
use hawser_plugin_locality_route::LocalityRoute;
use hawser_plugin_sdk::{Audit, Config, CredentialCheck, Plugin, Routing};

/// What kubectl 1.32 sends for `kubectl get pods`, plus what the hub adds.
const HEADERS: &[(&str, &str)] = &[
    ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"),
    ("accept-encoding", "gzip"),
    ("authorization", "Bearer 3f9c2a7d1e5b4c8a"),
    ("kubectl-command", "kubectl get"),
    ("kubectl-session", "6c1f0e52-6a8d-4f0b-9a43-1b7d2c9e8f10"),
    ("user-agent", "kubectl/v1.32.2 (linux/amd64) kubernetes/67a30c0"),
    ("x-forwarded-for", "10.0.0.1"),
];

const CREDENTIAL: &str = r#"{"tokens":{"3f9c2a7d1e5b4c8a":{"user":"alice@example.com","uid":"42","groups":["dev","ops"]}}}"#;
/// The credential plugin reading a header no request carries: it abstains at once.
const FLOOR: &str = r#"{"header":"x-absent","tokens":{}}"#;
/// API keys in their own header, which kubectl does not send: the stage abstains.
const API_KEYS: &str =
    r#"{"header":"x-api-key","tokens":{"k-ci-0001":{"user":"ci-bot","groups":["ci"]}}}"#;
const ROUTE: &str = r#"{"region":"eu","zone":"eu-b"}"#;
const REDACT: &str = r#"{"redact_headers":["authorization","cookie"]}"#;
const DROP_HEALTH: &str = r#"{"drop_paths":["/healthz","/livez","/readyz"]}"#;

/// (kind, plugin crate, config JSON) of each stage of a chain.
type Stages<'a> = &'a [(&'a str, &'a str, &'a str)];

/// (kind, plugin crate, config JSON) of each stage of the 5-stage chain.
const FIVE: [(&str, &str, &str); 5] = [
    ("credential", "hawser-plugin-header-credential", API_KEYS),
    ("credential", "hawser-plugin-header-credential", CREDENTIAL),
    ("routing", "hawser-plugin-locality-route", ROUTE),
    ("audit", "hawser-plugin-audit-redact", REDACT),
    ("audit", "hawser-plugin-audit-redact", DROP_HEALTH),
];

fn load(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    name: &str,
    stages: Stages,
    instances: &str,
) -> Arc<Chain> {
    let (instances, prewarm) = match instances {
        "fresh" => ("fresh", "prewarm = 0\n"),
        "fresh-prewarmed" => ("fresh", "prewarm = 2\n"),
        "reuse-fiber" => ("reuse", ""),
        other => (other, ""),
    };
    // Default limits, under which these plugins run inline; a budget past the inline
    // limit puts the same calls on a fiber.
    let limits = if name.ends_with("-fiber") {
        "[stage.limits]\ntimeout_ms = 1000\n"
    } else {
        ""
    };
    let mut text = String::new();
    for (i, (kind, plugin, config)) in stages.iter().enumerate() {
        let path = testing::plugin(plugin).display().to_string();
        // The JSON config as a TOML inline table.
        let config: toml::Value = serde_json::from_str(config).unwrap();
        text.push_str(&format!(
            "[[stage]]\nname = \"s{i}\"\nkind = \"{kind}\"\nplugin = {path:?}\ninstances = \"{instances}\"\n{prewarm}\
             config = {config}\n{limits}"
        ));
    }
    support::load_hub_chain(rt, dir, name, &text)
}

async fn run_five(chain: &Chain, req: &RequestHead, cands: &[Candidate]) {
    let who = chain.check_credential(req).await.unwrap().unwrap();
    let route = chain.route(req, Some(&who), cands).await.unwrap().unwrap();
    let mut ev = audit_event(req);
    ev.principal = Some(who);
    let ev = chain.audit(ev).await.unwrap().unwrap();
    black_box((route, ev));
}

/// Runs `call` `iters` times and returns the time spent in it. With pre-warming, waits
/// (untimed) before each call until every stage has its instances ready again.
async fn timed<F: std::future::Future<Output = ()>>(
    chain: &Chain,
    iters: u64,
    instances: &str,
    mut call: impl FnMut() -> F,
) -> Duration {
    if instances != "fresh-prewarmed" {
        let start = Instant::now();
        for _ in 0..iters {
            call().await;
        }
        return start.elapsed();
    }
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        while chain.stages().iter().any(|s| s.ready_instances < 2) {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        call().await;
        spent += start.elapsed();
    }
    spent
}

fn bench(c: &mut Criterion) {
    let rt = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let req = request("/api/v1/namespaces/default/pods", HEADERS);
    let cands = vec![
        candidate("c1", "e1", "eu", "eu-a", Health::Healthy),
        candidate("c1", "e2", "eu", "eu-b", Health::Healthy),
    ];

    // Native baseline: the same plugin crates, called directly.
    let cfg = |json: &str| Config::from_json(json);
    let n_cred = StaticTokens::init(&cfg(CREDENTIAL)).unwrap();
    let n_keys = StaticTokens::init(&cfg(API_KEYS)).unwrap();
    let n_route = LocalityRoute::init(&cfg(ROUTE)).unwrap();
    let n_redact = AuditRedact::init(&cfg(REDACT)).unwrap();
    let n_drop = AuditRedact::init(&cfg(DROP_HEALTH)).unwrap();
    let nreq = hawser_plugin_sdk::testing::request("/api/v1/namespaces/default/pods", HEADERS);
    let ncands: Vec<_> = [("e1", "eu-a"), ("e2", "eu-b")]
        .iter()
        .map(|(e, z)| {
            hawser_plugin_sdk::testing::candidate(
                "c1",
                e,
                "eu",
                z,
                hawser_plugin_sdk::Health::Healthy,
            )
        })
        .collect();

    let mut g = c.benchmark_group("stage");
    g.bench_function("native", |b| {
        b.iter(|| black_box(n_cred.check(black_box(&nreq))))
    });
    // The credential stage, then the floor: the same plugin abstaining at once.
    let floor = [("credential", FIVE[0].1, FLOOR)];
    let variants: [(&str, Stages, &[&str]); 2] = [
        (
            "",
            &FIVE[1..2],
            &["reuse", "reuse-fiber", "fresh", "fresh-prewarmed"],
        ),
        ("floor-", &floor, &["reuse", "fresh"]),
    ];
    for (label, stages, modes) in variants {
        for &instances in modes {
            let name = format!("{label}{instances}");
            let chain = load(&rt, dir.path(), &format!("one-{name}"), stages, instances);
            g.bench_function(format!("wasm-{name}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(timed(&chain, iters, instances, || async {
                        let out = chain.check_credential(black_box(&req)).await;
                        // The stage accepts the token; the floor abstains, so the
                        // chain answers 401.
                        assert_eq!(out.is_ok(), label.is_empty());
                        black_box(out.is_ok());
                    }))
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("chain5");
    g.bench_function("native", |b| {
        b.iter(|| {
            assert!(n_keys.check(black_box(&nreq)).unwrap().is_none());
            let who = n_cred.check(black_box(&nreq)).unwrap().unwrap();
            let route = n_route.route(&nreq, Some(&who), &ncands).unwrap().unwrap();
            let mut ev = hawser_plugin_sdk::testing::audit_event(&nreq);
            ev.principal = Some(who);
            ev.phase = hawser_plugin_sdk::AuditPhase::RequestReceived;
            black_box((
                route,
                n_redact.decide(&ev).unwrap(),
                n_drop.decide(&ev).unwrap(),
            ));
        })
    });
    for instances in ["reuse", "reuse-fiber", "fresh", "fresh-prewarmed"] {
        let chain = load(
            &rt,
            dir.path(),
            &format!("five-{instances}"),
            &FIVE,
            instances,
        );
        g.bench_function(format!("wasm-{instances}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(timed(&chain, iters, instances, || {
                    run_five(&chain, &req, &cands)
                }))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = bench
}
criterion_main!(benches);
