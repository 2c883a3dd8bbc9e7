//! Load harness for the whole path: client -> hub -> tunnel -> agent -> API server,
//! measured against the same API server reached directly, in the same run. Two hub
//! paths: without plugin stages, and with the chains production runs (the JWT
//! credential stage at the hub; at the agent the JWT stage bound to the cluster and
//! the impersonation stage, as the registration bundle writes them), called with a
//! credential the hub issued.
//!
//! Run with `scripts/load.sh` (builds the release binary first). Figures:
//! - small GETs at fixed rates: achieved rate, p50 and p99 latency (latency is
//!   taken from each request's scheduled start, so stalls are not hidden);
//! - closed-loop maximum requests/s at a fixed concurrency;
//! - throughput of one large streamed body.
//!
//! Bounded in count and time; loopback only.

use bytes::Bytes;
use hawser_tests::apiserver::Rule;
use hawser_tests::harness::procs::HubOpts;
use hawser_tests::harness::stack::{double_config, Stack, AGENT_TOKEN};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client(ca_pem: &str) -> HttpsClient {
    let tls = hawser_tests::harness::client::tls_config(ca_pem, rustls::DEFAULT_VERSIONS);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

struct Target {
    name: &'static str,
    client: HttpsClient,
    base: String,
    token: String,
}

async fn one(t: &Target, path: &str) -> Result<usize, String> {
    let req = http::Request::get(format!("{}{path}", t.base))
        .header("authorization", format!("Bearer {}", t.token))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = t.client.request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.map_err(|e| e.to_string())?.into_data() {
            n += d.len();
        }
    }
    Ok(n)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// Open loop at `rps` for `secs`.
async fn fixed_rate(t: Arc<Target>, path: &'static str, rps: u32, secs: u64) -> Run {
    let total = rps as u64 * secs;
    let interval = Duration::from_secs_f64(1.0 / rps as f64);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let t = t.clone();
        tasks.spawn(async move { one(&t, path).await.map(|_| scheduled.elapsed()) });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(d)) => lat.push(d),
            _ => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    Run {
        rate: lat.len() as f64 / elapsed,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        errors,
    }
}

/// Closed loop with `conc` workers for `secs`: requests/s.
async fn max_rate(t: Arc<Target>, path: &'static str, conc: usize, secs: u64) -> (f64, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let t = t.clone();
        tasks.spawn(async move {
            let (mut ok, mut err) = (0usize, 0usize);
            while Instant::now() < deadline {
                match one(&t, path).await {
                    Ok(_) => ok += 1,
                    Err(_) => err += 1,
                }
            }
            (ok, err)
        });
    }
    let (mut ok, mut err) = (0, 0);
    while let Some(Ok((o, e))) = tasks.join_next().await {
        ok += o;
        err += e;
    }
    (ok as f64 / start.elapsed().as_secs_f64(), err)
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let big_mib: usize = std::env::var("LOAD_BIG_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let s = Stack::start(double_config(), HubOpts::default(), 1, 2).await;
    let mut api = double_config();
    api.rules.push(Rule::allow_all("group:devs"));
    let chained = Stack::start_with_identity(api, 1, 2).await;
    let line = "x".repeat(1024 * 1024 - 1);
    for stack in [&s, &chained] {
        stack.api.add_pod("default", "bench");
        for _ in 0..big_mib {
            stack.api.append_log("default", "bench", &line);
        }
    }
    let direct = Arc::new(Target {
        name: "direct",
        client: client(&s.api.ca_pem()),
        base: s.api.url(),
        token: AGENT_TOKEN.into(),
    });
    let via = Arc::new(Target {
        name: "via hub",
        client: client(&s.hub.ca_pem()),
        base: format!("https://127.0.0.1:{}/clusters/eu1", s.hub.front.port()),
        token: "any".into(),
    });
    let via_chains = Arc::new(Target {
        name: "via hub, chains",
        client: client(&chained.hub.ca_pem()),
        base: format!(
            "https://127.0.0.1:{}/clusters/eu1",
            chained.hub.front.port()
        ),
        token: chained.issue_token("alice", &["devs"]),
    });
    let targets = [&direct, &via, &via_chains];
    let small: &'static str = "/api/v1/namespaces/default/pods/bench";
    let big: &'static str = "/api/v1/namespaces/default/pods/bench/log";
    // Warm both paths (TLS sessions, pools).
    for t in targets {
        for _ in 0..50 {
            one(t, small).await.expect("warm-up request");
        }
    }
    println!(
        "# Hawser load harness: {secs}s per step, loopback, 2 agent tunnels; \
         \"chains\": JWT at the hub, JWT + impersonation at the agent"
    );
    println!("| load | target | achieved rps | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|");
    for rps in [200u32, 500, 1000] {
        let mut p99s = Vec::new();
        for t in targets {
            let r = fixed_rate(t.clone(), small, rps, secs).await;
            println!(
                "| {rps} rps GET | {} | {:.0} | {} | {} | {} |",
                t.name,
                r.rate,
                ms(r.p50),
                ms(r.p99),
                r.errors
            );
            p99s.push(r.p99);
        }
        for (i, t) in targets.iter().enumerate().skip(1) {
            println!(
                "| {rps} rps GET | added p99, {} | | | {} | |",
                t.name,
                ms(p99s[i].saturating_sub(p99s[0]))
            );
        }
    }
    let mut maxes = Vec::new();
    // The hub and agent processes behind each target (none for direct), whose CPU
    // time per request the closed loop measures: unlike throughput, that does not
    // depend on what else the two cores run.
    let procs = [
        None,
        Some((s.hub.pid(), s.agents[0].pid())),
        Some((chained.hub.pid(), chained.agents[0].pid())),
    ];
    let mut cpu_lines = Vec::new();
    for (t, procs) in targets.iter().zip(procs) {
        let cpu = |pid| hawser_tests::harness::cpu_time(pid).unwrap_or_default();
        let before = procs.map(|(h, a)| (cpu(h), cpu(a)));
        let start = Instant::now();
        let (rate, errors) = max_rate((*t).clone(), small, 32, secs).await;
        let requests = rate * start.elapsed().as_secs_f64();
        if let (Some((h, a)), Some((h0, a0))) = (procs, before) {
            let per = |d: Duration| d.as_secs_f64() * 1e6 / requests.max(1.0);
            cpu_lines.push(format!(
                "| CPU per request, {} | hub {:.0} µs | agent {:.0} µs | | | |",
                t.name,
                per(cpu(h).saturating_sub(h0)),
                per(cpu(a).saturating_sub(a0))
            ));
        }
        println!(
            "| closed loop, 32 conc | {} | {rate:.0} | | | {errors} |",
            t.name
        );
        maxes.push(rate);
    }
    for line in cpu_lines {
        println!("{line}");
    }
    for (i, t) in targets.iter().enumerate().skip(1) {
        println!(
            "| closed loop ratio {}/direct | | {:.2} | | | |",
            t.name,
            maxes[i] / maxes[0]
        );
    }
    let mut tputs = Vec::new();
    for t in targets {
        let start = Instant::now();
        let n = one(t, big).await.expect("large body");
        let mibps = n as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
        println!(
            "| {big_mib} MiB body | {} | {mibps:.0} MiB/s | | | |",
            t.name
        );
        tputs.push(mibps);
    }
    for (i, t) in targets.iter().enumerate().skip(1) {
        println!(
            "| large body ratio {}/direct | | {:.2} | | | |",
            t.name,
            tputs[i] / tputs[0]
        );
    }
    let rss = |pid| hawser_tests::harness::peak_rss_kib(pid).unwrap_or(0) / 1024;
    println!(
        "\npeak RSS: hub {} MiB, agent {} MiB; with chains: hub {} MiB, agent {} MiB",
        rss(s.hub.pid()),
        rss(s.agents[0].pid()),
        rss(chained.hub.pid()),
        rss(chained.agents[0].pid()),
    );
}
