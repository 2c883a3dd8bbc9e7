//! Cost of the production credential stage: the JWT plugin checking a hub-issued
//! token, with reused instances, as the hub's chain and the agent chain of a
//! registration bundle run it.
//!
//! - `jwt/same-token`: every request carries one token, as kubectl's requests do
//!   until it refreshes it; the host answers the signature check from its record of
//!   checks that passed (`plugin/signatures.rs`).
//! - `jwt/new-token`: each request carries a token the host has not seen lately
//!   (5000 in rotation, more than it remembers), so each pays the full Ed25519 check.
//! - `ed25519/verify-native`: that check alone, called directly: the baseline the
//!   difference between the two is measured against.
//!
//! Needs the built plugins: `scripts/build-plugins.sh && cargo bench -p hawser --bench credential_stage`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};

mod support;
use hawser::credential::issue::issue_with;
use hawser::credential::{IssueRequest, IssuerKeys};
use hawser::plugin::testing::{self, request};
use hawser::plugin::Chain;

const ISSUER: &str = "hawser-hub";
/// More tokens than the host remembers passing checks for (4096).
const TOKENS: usize = 5000;

/// The hub's JWT stage over the issuer keys in `state`.
fn load(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    state: &std::path::Path,
) -> Arc<Chain> {
    let mut keys = String::new();
    for r in IssuerKeys::load(state).expect("keys").records() {
        keys.push_str(&format!(
            "\"{}\" = \"{}\"\n",
            r.kid,
            STANDARD.encode(r.public_key)
        ));
    }
    let stage = format!(
        "[[stage]]\nname = \"jwt\"\nkind = \"credential\"\nplugin = {:?}\n\
         instances = \"reuse\"\n[stage.config]\nissuer = \"{ISSUER}\"\n[stage.config.keys]\n{keys}",
        testing::plugin("hawser-plugin-jwt-credential")
            .display()
            .to_string()
    );
    support::load_hub_chain(rt, dir, "jwt", &stage)
}

fn bench(c: &mut Criterion) {
    let rt = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let req = IssueRequest {
        user: "alice@example.com".into(),
        groups: vec!["devs".into()],
        clusters: vec!["eu1".into()],
        ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    let keys = IssuerKeys::load_or_create(&state).expect("issuer keys");
    let tokens: Vec<String> = (0..TOKENS)
        .map(|_| {
            let issued = issue_with(&keys, ISSUER, &req, SystemTime::now()).expect("issue");
            format!("Bearer {}", issued.token.expose())
        })
        .collect();
    let chain = load(&rt, dir.path(), &state);
    let requests: Vec<_> = tokens
        .iter()
        .map(|t| request("/api/v1/pods", &[("authorization", t.as_str())]))
        .collect();

    let mut g = c.benchmark_group("jwt");
    for (name, distinct) in [("same-token", 1), ("new-token", TOKENS)] {
        // Criterion calls the routine once per sample: the rotation carries on across
        // samples, so no token comes back before the host has forgotten it.
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let who = chain.check_credential(&requests[i % distinct]).await;
                        i += 1;
                        assert!(matches!(who, Ok(Some(_))), "{who:?}");
                        black_box(who.is_ok());
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    // The signature check alone, on the first token's signing input.
    let token = tokens[0].trim_start_matches("Bearer ");
    let (signed, sig) = token.rsplit_once('.').expect("a JWS");
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url");
    let key = IssuerKeys::load(&state).expect("keys").records()[0].public_key;
    let mut g = c.benchmark_group("ed25519");
    g.bench_function("verify-native", |b| {
        b.iter(|| {
            let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
            assert!(key.verify(black_box(signed.as_bytes()), &sig).is_ok());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = bench
}
criterion_main!(benches);
