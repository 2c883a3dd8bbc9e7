//! Helpers for tests that run plugins in the real runtime: locating the workspace's
//! freshly built plugins and building common inputs.
//!
//! Plugins are built by `scripts/build-plugins.sh` (`cargo build --release --target
//! wasm32-wasip2`) into `target/wasm32-wasip2/release/<crate_name>.wasm`. Tests never
//! use checked-in `.wasm` files.

use std::path::PathBuf;

use super::types::{
    AuditEvent, AuditPhase, Candidate, Header, Health, Locality, RequestHead, Role,
};

/// The directory holding built plugins: `$CARGO_TARGET_DIR` (or the workspace's
/// `target/`) + `wasm32-wasip2/<profile>`, where profile is `$HAWSER_PLUGIN_PROFILE` or
/// `release`.
pub fn plugin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(|p| p.join("target"))
                .unwrap_or_else(|| PathBuf::from("target"))
        });
    let profile = std::env::var("HAWSER_PLUGIN_PROFILE").unwrap_or_else(|_| "release".into());
    target.join("wasm32-wasip2").join(profile)
}

/// The built plugin of crate `name` (e.g. `hawser-plugin-misbehave`), or an error
/// telling how to build it.
pub fn plugin_path(name: &str) -> Result<PathBuf, String> {
    let path = plugin_dir().join(format!("{}.wasm", name.replace('-', "_")));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "plugin {name} is not built: {} does not exist. Run scripts/build-plugins.sh first.",
            path.display()
        ))
    }
}

/// Like [`plugin_path`], panicking with the build instruction when missing.
pub fn plugin(name: &str) -> PathBuf {
    plugin_path(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A `GET path` request head from `10.0.0.1:5555` with the given headers.
pub fn request(path: &str, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        role: Role::Hub,
        request_id: "test-1".into(),
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: n.to_ascii_lowercase(),
                value: (*v).into(),
            })
            .collect(),
        client_addr: "10.0.0.1:5555".into(),
        cluster: String::new(),
    }
}

/// A candidate in `region`/`zone` with `health`, weight 1.
pub fn candidate(
    cluster: &str,
    endpoint: &str,
    region: &str,
    zone: &str,
    health: Health,
) -> Candidate {
    Candidate {
        cluster: cluster.into(),
        endpoint: endpoint.into(),
        locality: Locality {
            region: region.into(),
            zone: zone.into(),
        },
        health,
        weight: 1,
        in_flight: 0,
    }
}

/// A `request-received` audit event for `req`.
pub fn audit_event(req: &RequestHead) -> AuditEvent {
    AuditEvent {
        request_id: req.request_id.clone(),
        phase: AuditPhase::RequestReceived,
        timestamp_ms: 0,
        role: req.role,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        client_addr: req.client_addr.clone(),
        principal: None,
        impersonated: None,
        route: None,
        status: 0,
        latency_us: 0,
        message: String::new(),
    }
}
