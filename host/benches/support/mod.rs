//! What the plugin benchmarks share: the runtime they drive chains on, loading a hub
//! chain with the shared artifact cache, and criterion's settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use hawser::plugin::{testing, Chain, PluginHost, Role};

/// A single-threaded runtime: a request's stages run one after another on it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `stages` (TOML `[[stage]]` tables) as hub chain `name` in `dir`, after a
/// `[runtime]` whose artifact cache every benchmark run shares, and loads it.
pub fn load_hub_chain(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    name: &str,
    stages: &str,
) -> Arc<Chain> {
    let cache = testing::plugin_dir().join("../../hawser-bench-plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let text = format!(
        "role = \"hub\"\n[runtime]\nmax_instances = 64\ncache_dir = {:?}\n{stages}",
        cache.display().to_string()
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    rt.block_on(PluginHost::load(&file, Role::Hub))
        .expect("load chain")
        .chain()
}

/// 30 samples of 3 s after 1 s of warm-up.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}
