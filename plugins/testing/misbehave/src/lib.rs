//! Test fixture: one plugin implementing every stage, that behaves or misbehaves as its
//! config says. Used by the host's tests and benchmarks; never deploy it.
//!
//! ```toml
//! [stage.config]
//! behaviour = "ok"   # ok | loop | memory-bomb | handle-hoard | verify-flood | trap
//!                    # | slow | sleep | trap-init | fail-init | sleep-init | illegal-route
//!                    # | illegal-header | illegal-principal | escalate | abstain
//!                    # | audit-error | huge-output | random-hog
//! version = "a"      # echoed into every output
//! slow_ms = 5        # for "slow": busy-wait this long per call
//! ```
//!
//! `handle-hoard` holds 5000 WASI timer handles at once (host memory the linear-memory
//! cap does not see), then drops them and answers normally.
//!
//! `huge-output` (credential) returns a user name of 8 MiB: within the memory cap, but
//! more than the host lifts out of a plugin in one call.
//!
//! `random-hog` asks the host for 16 MiB of random bytes in one call, host memory the
//! linear-memory cap does not see.
//!
//! `verify-flood` asks the host to verify signatures over 2 MiB messages 128 times: the
//! time is spent in the host, not in guest code.
//!
//! `sleep` and `sleep-init` sleep for an hour in a WASI clock wait, where no guest code
//! runs and so no epoch deadline can fire: only the host's wall-clock limit ends them.
//!
//! A request header `x-misbehave: <behaviour>` overrides the configured behaviour for
//! that call (audit reads it from the event's headers), so a test can make one request
//! misbehave and check the next one is served normally. `x-misbehave: probe` makes the
//! credential stage report what the sandbox lets it see: extras `env-count` (environment
//! variables), `fs` (`open` when `/` can be listed, else `denied`).
//!
//! With `behaviour = "ok"` every stage echoes `version` and checks that the previous
//! stages of the same request ran with the same version:
//! - credential: principal `user-<version>`, extras `version=[v]` and `instance-calls=[n]`
//!   (calls served by this instance; 1 with fresh instances);
//! - impersonation: denies (403) when the principal's version differs, else impersonates
//!   `as-<user>` with `version=[v]` (`abstain`: no opinion, whatever the principal);
//! - routing: denies when the principal's version differs, else the first candidate
//!   with header `x-hawser-version: v`;
//! - audit: errors when the principal's version differs, else keeps the event.

use std::cell::Cell;
use std::hint::black_box;

use hawser_plugin_sdk::{
    export_plugin, host, Audit, AuditDecision, AuditEvent, Candidate, Config, CredentialCheck,
    Denial, Impersonation, Plugin, Principal, RequestHead, RouteChoice, Routing,
};
use serde::Deserialize;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Behaviour {
    Ok,
    Loop,
    MemoryBomb,
    HandleHoard,
    VerifyFlood,
    Trap,
    Slow,
    Sleep,
    TrapInit,
    FailInit,
    SleepInit,
    IllegalRoute,
    IllegalHeader,
    IllegalPrincipal,
    Escalate,
    Abstain,
    AuditError,
    Probe,
    HugeOutput,
    RandomHog,
}

/// The behaviour for one call: the `x-misbehave` header when present, else the config.
fn behaviour_for(headers: &[hawser_plugin_sdk::Header], configured: Behaviour) -> Behaviour {
    headers
        .iter()
        .find(|h| h.name == "x-misbehave")
        .and_then(|h| serde_json::from_value(serde_json::Value::String(h.value.clone())).ok())
        .unwrap_or(configured)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cfg {
    #[serde(default = "ok")]
    behaviour: Behaviour,
    #[serde(default)]
    version: String,
    #[serde(default = "five")]
    slow_ms: u64,
    /// Declared as `plugin-info.request-headers` (default: every header).
    #[serde(default)]
    request_headers: Option<Vec<String>>,
    /// Declared as `plugin-info.credential-headers` (default: none).
    #[serde(default)]
    credential_headers: Vec<String>,
}

fn ok() -> Behaviour {
    Behaviour::Ok
}

fn five() -> u64 {
    5
}

/// The fixture plugin.
pub struct Misbehave {
    cfg: Cfg,
    calls: Cell<u64>,
}

impl Plugin for Misbehave {
    fn init(config: &Config) -> Result<Self, String> {
        let cfg: Cfg = config.parse()?;
        match cfg.behaviour {
            Behaviour::FailInit => return Err("misbehave: refusing this configuration".into()),
            Behaviour::TrapInit => panic!("misbehave: trap in init"),
            Behaviour::SleepInit => std::thread::sleep(std::time::Duration::from_secs(3600)),
            _ => {}
        }
        Ok(Misbehave {
            cfg,
            calls: Cell::new(0),
        })
    }

    fn version(&self) -> Option<String> {
        Some(self.cfg.version.clone())
    }

    fn request_headers(&self) -> Option<Vec<String>> {
        self.cfg.request_headers.clone()
    }

    fn credential_headers(&self) -> Vec<String> {
        self.cfg.credential_headers.clone()
    }
}

impl Misbehave {
    /// Runs the misbehaviour, if any, before a stage answers; returns the behaviour.
    fn act(&self, headers: &[hawser_plugin_sdk::Header]) -> Behaviour {
        self.calls.set(self.calls.get() + 1);
        let behaviour = behaviour_for(headers, self.cfg.behaviour);
        match behaviour {
            Behaviour::Loop => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Behaviour::MemoryBomb => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Behaviour::HandleHoard => hoard_handles(5000),
            Behaviour::VerifyFlood => verify_flood(),
            Behaviour::RandomHog => random_hog(),
            Behaviour::Trap => panic!("misbehave: trap"),
            Behaviour::Sleep => std::thread::sleep(std::time::Duration::from_secs(3600)),
            Behaviour::Slow => {
                let start = now_ms();
                while now_ms() < start + self.cfg.slow_ms {
                    black_box(());
                }
            }
            _ => {}
        }
        behaviour
    }

    fn same_version(&self, who: Option<&Principal>) -> bool {
        who.and_then(|p| p.extra("version"))
            .is_some_and(|v| v.len() == 1 && v[0] == self.cfg.version)
    }

    fn versioned(&self, p: Principal) -> Principal {
        p.with_extra("version", vec![self.cfg.version.clone()])
    }
}

/// Has the host verify Ed25519 signatures over large messages. The key is the base
/// point, a valid key, so the host hashes the whole message before rejecting.
fn verify_flood() {
    let mut key = vec![0x66u8; 32];
    key[0] = 0x58;
    // 2 MiB: within what the host takes from a plugin in one call.
    let message = vec![0u8; 2 << 20];
    let signature = [0u8; 64];
    for _ in 0..128 {
        black_box(host::verify_signature(
            &hawser_plugin_sdk::host::PublicKey::Ed25519(key.clone()),
            &message,
            &signature,
        ));
    }
}

/// Asks WASI for 16 MiB of random bytes at once.
#[cfg(target_arch = "wasm32")]
fn random_hog() {
    black_box(wasip2::random::random::get_random_bytes(16 << 20));
}

/// Natively there is no host to ask.
#[cfg(not(target_arch = "wasm32"))]
fn random_hog() {}

/// Opens `n` WASI timer handles and holds them all before dropping them.
#[cfg(target_arch = "wasm32")]
fn hoard_handles(n: usize) {
    let hoard: Vec<_> = (0..n)
        .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000))
        .collect();
    black_box(hoard);
}

/// Natively there is no host handle table to fill.
#[cfg(not(target_arch = "wasm32"))]
fn hoard_handles(_n: usize) {}

fn now_ms() -> u64 {
    let t = host::now();
    t.seconds * 1000 + u64::from(t.nanoseconds) / 1_000_000
}

impl CredentialCheck for Misbehave {
    fn check(&self, req: &RequestHead) -> Result<Option<Principal>, Denial> {
        let behaviour = self.act(&req.headers);
        let user = match behaviour {
            Behaviour::IllegalPrincipal => "mallory\r\nimpersonate-user: root".to_owned(),
            Behaviour::HugeOutput => "x".repeat(8 << 20),
            _ => format!("user-{}", self.cfg.version),
        };
        let mut p = Principal::new(user)
            .with_groups(["dev"])
            .with_extra("instance-calls", vec![self.calls.get().to_string()]);
        if behaviour == Behaviour::Probe {
            let fs = if std::fs::read_dir("/").is_ok() {
                "open"
            } else {
                "denied"
            };
            let seen = req.headers.iter().map(|h| h.name.clone()).collect();
            p = p
                .with_extra("env-count", vec![std::env::vars().count().to_string()])
                .with_extra("fs", vec![fs.into()])
                .with_extra("headers-seen", seen);
        }
        Ok(Some(self.versioned(p)))
    }
}

impl Impersonation for Misbehave {
    fn apply(&self, who: &Principal, req: &RequestHead) -> Result<Option<Principal>, Denial> {
        match self.act(&req.headers) {
            Behaviour::Escalate => {
                return Ok(Some(Principal::new("root").with_groups(["system:masters"])))
            }
            Behaviour::Abstain => return Ok(None),
            _ => {}
        }
        if !self.same_version(Some(who)) {
            return Err(Denial::forbidden("misbehave: chain version mismatch"));
        }
        let p = Principal::new(format!("as-{}", who.user)).with_groups(who.groups.iter().cloned());
        Ok(Some(self.versioned(p)))
    }
}

impl Routing for Misbehave {
    fn route(
        &self,
        req: &RequestHead,
        who: Option<&Principal>,
        candidates: &[Candidate],
    ) -> Result<Option<RouteChoice>, Denial> {
        match self.act(&req.headers) {
            Behaviour::IllegalRoute => {
                return Ok(Some(RouteChoice {
                    cluster: "not-configured".into(),
                    endpoint: "evil.example.com:443".into(),
                    set_headers: Vec::new(),
                }))
            }
            Behaviour::IllegalHeader => {
                let first = candidates
                    .first()
                    .ok_or_else(|| Denial::unavailable("none"))?;
                return Ok(Some(
                    RouteChoice::to(first).with_header("x-hawser-version", "a\r\nhost: evil"),
                ));
            }
            _ => {}
        }
        if !self.same_version(who) {
            return Err(Denial::forbidden("misbehave: chain version mismatch"));
        }
        let first = candidates
            .first()
            .ok_or_else(|| Denial::unavailable("no candidates"))?;
        Ok(Some(
            RouteChoice::to(first).with_header("x-hawser-version", &self.cfg.version),
        ))
    }
}

impl Audit for Misbehave {
    fn decide(&self, event: &AuditEvent) -> Result<AuditDecision, String> {
        if self.act(&event.headers) == Behaviour::AuditError {
            return Err("misbehave: audit sink unavailable".into());
        }
        if !self.same_version(event.principal.as_ref()) {
            return Err("misbehave: chain version mismatch".into());
        }
        Ok(AuditDecision::Keep)
    }
}

export_plugin!(Misbehave: credential, impersonation, routing, audit);

#[cfg(test)]
mod tests {
    use super::*;
    use hawser_plugin_sdk::testing::{candidate, request};
    use hawser_plugin_sdk::Health;

    #[test]
    fn ok_chain_echoes_and_checks_versions() {
        let m = Misbehave::init(&Config::from_json(r#"{"version":"a"}"#)).unwrap();
        let req = request("/", &[]);
        let p = m.check(&req).unwrap().unwrap();
        assert_eq!(p.extra("version").unwrap(), ["a"]);
        assert!(m.apply(&p, &req).unwrap().is_some());
        let c = [candidate("c", "e", "", "", Health::Healthy)];
        assert!(m.route(&req, Some(&p), &c).unwrap().is_some());
        let other = Misbehave::init(&Config::from_json(r#"{"version":"b"}"#)).unwrap();
        assert!(other.apply(&p, &req).is_err());
        assert!(other.route(&req, Some(&p), &c).is_err());
    }

    #[test]
    fn init_failure_is_reported() {
        assert!(Misbehave::init(&Config::from_json(r#"{"behaviour":"fail-init"}"#)).is_err());
        assert!(Misbehave::init(&Config::from_json(r#"{"behaviour":"nope"}"#)).is_err());
    }
}
