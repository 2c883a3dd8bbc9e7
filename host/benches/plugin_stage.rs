//! Cost of a plugin stage: one stage and a 5-stage chain, with fresh and reused
//! instances, against a native Rust call of the same stage code (the misbehave fixture
//! in `ok` mode, linked natively).
//!
//! Needs the built plugins: `scripts/build-plugins.sh && cargo bench -p hawser --bench plugin_stage`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hawser::plugin::testing::{self, audit_event, candidate, request};
use hawser::plugin::{Chain, Health, PluginHost, Role};
use hawser_plugin_misbehave::Misbehave;
use hawser_plugin_sdk::{Audit, Config, CredentialCheck, Impersonation, Plugin, Routing};

fn stage(name: &str, kind: &str, instances: &str, plugin: &str) -> String {
    format!(
        "[[stage]]\nname = \"{name}\"\nkind = \"{kind}\"\nplugin = {plugin:?}\ninstances = \"{instances}\"\n\
         [stage.limits]\ntimeout_ms = 1000\n[stage.policy]\n{}\n[stage.config]\nversion = \"a\"\n",
        if kind == "routing" { "allow_headers = [\"x-hawser-*\"]" } else { "" }
    )
}

fn load(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    name: &str,
    kinds: &[&str],
    instances: &str,
) -> Arc<Chain> {
    let plugin = testing::plugin("hawser-plugin-misbehave")
        .display()
        .to_string();
    let cache = testing::plugin_dir().join("../../hawser-bench-plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let mut text = format!(
        "role = \"hub\"\n[runtime]\nmax_instances = 64\ncache_dir = {:?}\n",
        cache.display().to_string()
    );
    for (i, k) in kinds.iter().enumerate() {
        text.push_str(&stage(&format!("s{i}"), k, instances, &plugin));
    }
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let host = rt
        .block_on(PluginHost::load(&file, Role::Hub))
        .expect("load chain");
    host.chain()
}

const FIVE: [&str; 5] = [
    "credential",
    "impersonation",
    "impersonation",
    "routing",
    "audit",
];

async fn run_five(
    chain: &Chain,
    req: &hawser::plugin::RequestHead,
    cands: &[hawser::plugin::Candidate],
) {
    let who = chain.check_credential(req).await.unwrap().unwrap();
    let id = chain.impersonate(&who, req).await.unwrap().unwrap();
    let route = chain.route(req, Some(&who), cands).await.unwrap().unwrap();
    let mut ev = audit_event(req);
    ev.principal = Some(who);
    let ev = chain.audit(ev).await.unwrap();
    black_box((id, route, ev));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        "/api/v1/namespaces/default/pods",
        &[
            ("authorization", "Bearer x"),
            ("accept", "application/json"),
        ],
    );
    let cands = vec![
        candidate("c1", "e1", "eu", "eu-a", Health::Healthy),
        candidate("c1", "e2", "eu", "eu-b", Health::Healthy),
    ];

    // Native baseline: the same plugin code, called directly.
    let native = Misbehave::init(&Config::from_json(r#"{"version":"a"}"#)).unwrap();
    let nreq = hawser_plugin_sdk::testing::request(
        "/api/v1/namespaces/default/pods",
        &[
            ("authorization", "Bearer x"),
            ("accept", "application/json"),
        ],
    );
    let ncands = vec![
        hawser_plugin_sdk::testing::candidate(
            "c1",
            "e1",
            "eu",
            "eu-a",
            hawser_plugin_sdk::Health::Healthy,
        ),
        hawser_plugin_sdk::testing::candidate(
            "c1",
            "e2",
            "eu",
            "eu-b",
            hawser_plugin_sdk::Health::Healthy,
        ),
    ];

    let mut g = c.benchmark_group("stage");
    g.bench_function("native", |b| {
        b.iter(|| black_box(native.check(black_box(&nreq))))
    });
    for instances in ["reuse", "fresh"] {
        let chain = load(
            &rt,
            dir.path(),
            &format!("one-{instances}"),
            &["credential"],
            instances,
        );
        g.bench_function(format!("wasm-{instances}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(chain.check_credential(black_box(&req)).await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("chain5");
    g.bench_function("native", |b| {
        b.iter(|| {
            let who = native.check(black_box(&nreq)).unwrap().unwrap();
            let id = native.apply(&who, &nreq).unwrap().unwrap();
            let id2 = native.apply(&id, &nreq).unwrap();
            let route = native.route(&nreq, Some(&who), &ncands).unwrap().unwrap();
            let mut ev = hawser_plugin_sdk::testing::audit_event(&nreq);
            ev.principal = Some(who);
            black_box((id2, route, native.decide(&ev).unwrap()));
        })
    });
    for instances in ["reuse", "fresh"] {
        let chain = load(
            &rt,
            dir.path(),
            &format!("five-{instances}"),
            &FIVE,
            instances,
        );
        g.bench_function(format!("wasm-{instances}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        run_five(&chain, &req, &cands).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
