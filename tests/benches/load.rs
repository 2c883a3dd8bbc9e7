//! Load harness for the whole path: client -> hub -> tunnel -> agent -> API server,
//! measured against the same API server reached directly, in the same run.
//!
//! Run with `scripts/load.sh` (builds the release binary first). Figures:
//! - small GETs at fixed rates: achieved rate, p50 and p99 latency (latency is
//!   taken from each request's scheduled start, so stalls are not hidden);
//! - closed-loop maximum requests/s at a fixed concurrency;
//! - throughput of one large streamed body.
//!
//! Bounded in count and time; loopback only.

use bytes::Bytes;
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
    token: &'static str,
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
    s.api.add_pod("default", "bench");
    let line = "x".repeat(1024 * 1024 - 1);
    for _ in 0..big_mib {
        s.api.append_log("default", "bench", &line);
    }
    let direct = Arc::new(Target {
        name: "direct",
        client: client(&s.api.ca_pem()),
        base: s.api.url(),
        token: AGENT_TOKEN,
    });
    let via = Arc::new(Target {
        name: "via hub",
        client: client(&s.hub.ca_pem()),
        base: format!("https://127.0.0.1:{}/clusters/eu1", s.hub.front.port()),
        token: "any",
    });
    let small: &'static str = "/api/v1/namespaces/default/pods/bench";
    let big: &'static str = "/api/v1/namespaces/default/pods/bench/log";
    // Warm both paths (TLS sessions, pools).
    for t in [&direct, &via] {
        for _ in 0..50 {
            one(t, small).await.expect("warm-up request");
        }
    }
    println!("# Hawser load harness: {secs}s per step, loopback, 2 agent tunnels");
    println!("| load | target | achieved rps | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|");
    for rps in [200u32, 500, 1000] {
        let mut p99s = Vec::new();
        for t in [&direct, &via] {
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
        println!(
            "| {rps} rps GET | added p99 | | | {} | |",
            ms(p99s[1].saturating_sub(p99s[0]))
        );
    }
    let mut maxes = Vec::new();
    for t in [&direct, &via] {
        let (rate, errors) = max_rate(t.clone(), small, 32, secs).await;
        println!(
            "| closed loop, 32 conc | {} | {rate:.0} | | | {errors} |",
            t.name
        );
        maxes.push(rate);
    }
    println!(
        "| closed loop ratio via/direct | | {:.2} | | | |",
        maxes[1] / maxes[0]
    );
    let mut tputs = Vec::new();
    for t in [&direct, &via] {
        let start = Instant::now();
        let n = one(t, big).await.expect("large body");
        let mibps = n as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
        println!(
            "| {big_mib} MiB body | {} | {mibps:.0} MiB/s | | | |",
            t.name
        );
        tputs.push(mibps);
    }
    println!(
        "| large body ratio via/direct | | {:.2} | | | |",
        tputs[1] / tputs[0]
    );
    let hub_kib = hawser_tests::harness::peak_rss_kib(s.hub.pid()).unwrap_or(0);
    let agent_kib = hawser_tests::harness::peak_rss_kib(s.agents[0].pid()).unwrap_or(0);
    println!(
        "\npeak RSS: hub {} MiB, agent {} MiB",
        hub_kib / 1024,
        agent_kib / 1024
    );
}
