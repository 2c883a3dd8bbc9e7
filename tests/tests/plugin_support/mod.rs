//! Shared helpers for the `plugin_*` tests: chain files in a temp dir that point at the
//! freshly built plugins (`scripts/build-plugins.sh`), and bounded condition waits.
#![allow(dead_code)] // each test binary uses a different subset

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hawser::plugin::testing::{self, candidate};
use hawser::plugin::{Candidate, Health, PluginHost, Role};

/// A chain file in its own temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
}

impl Fixture {
    /// Writes `stages` (TOML `[[stage]]` tables, with `{misbehave}`,
    /// `{misbehave-inline}`, `{tokens}`, `{impersonate}`, `{route}`, `{audit}` standing
    /// for the built plugins) after a `[runtime]` section that shares one artifact
    /// cache across tests.
    pub fn new(stages: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("plugins-hub.toml");
        let f = Fixture { dir, file };
        f.write(stages);
        f
    }

    /// Rewrites the chain file, for the agent when a stage impersonates (only the
    /// agent runs impersonation), else for the hub.
    pub fn write(&self, stages: &str) {
        let header = match role_for(stages) {
            Role::Agent => header().replace("role = \"hub\"", "role = \"agent\""),
            Role::Hub => header(),
        };
        let text = format!("{header}\n{}", expand(stages));
        std::fs::write(&self.file, text).expect("write chain file");
    }

    /// The role the chain file is written for.
    pub fn role(&self) -> Role {
        let text = std::fs::read_to_string(&self.file).expect("read chain file");
        if text.starts_with("role = \"agent\"") {
            Role::Agent
        } else {
            Role::Hub
        }
    }

    /// Loads a host for the file.
    pub async fn host(&self) -> Arc<PluginHost> {
        match PluginHost::load(&self.file, self.role()).await {
            Ok(h) => h,
            Err(e) => panic!("chain did not load: {e}"),
        }
    }
}

/// The process that runs `stages`: the agent when one impersonates, else the hub.
/// Impersonation (agent only) and routing (hub only) cannot share a chain.
pub fn role_for(stages: &str) -> Role {
    let imp = stages.contains("kind = \"impersonation\"");
    let route = stages.contains("kind = \"routing\"");
    assert!(
        !(imp && route),
        "a chain runs at the hub (routing) or at the agent (impersonation), not both"
    );
    if imp {
        Role::Agent
    } else {
        Role::Hub
    }
}

/// `role` and `[runtime]`: a small pool, and the shared on-disk artifact cache so each
/// plugin is compiled once per test run, not once per test.
pub fn header() -> String {
    format!(
        "role = \"hub\"\n[runtime]\nmax_instances = 64\ncache_dir = {:?}\n",
        cache_dir().display().to_string()
    )
}

pub fn cache_dir() -> PathBuf {
    let dir = testing::plugin_dir()
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("hawser-test-plugin-cache"))
        .expect("target dir");
    std::fs::create_dir_all(&dir).expect("cache dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    dir
}

/// Replaces plugin placeholders with the built `.wasm` paths.
pub fn expand(stages: &str) -> String {
    let mut s = stages.to_owned();
    for (key, name) in [
        ("{misbehave}", "hawser-plugin-misbehave"),
        ("{misbehave-inline}", "hawser-plugin-misbehave-inline"),
        ("{tokens}", "hawser-plugin-header-credential"),
        ("{impersonate}", "hawser-plugin-impersonate"),
        ("{route}", "hawser-plugin-locality-route"),
        ("{audit}", "hawser-plugin-audit-redact"),
    ] {
        if s.contains(key) {
            s = s.replace(key, &testing::plugin(name).display().to_string());
        }
    }
    s
}

/// A `[[stage]]` of the misbehave fixture with `behaviour`, `version` and extra lines.
pub fn misbehave(name: &str, kind: &str, behaviour: &str, version: &str, extra: &str) -> String {
    format!(
        "[[stage]]\nname = \"{name}\"\nkind = \"{kind}\"\nplugin = \"{{misbehave}}\"\n{extra}\n\
         [stage.config]\nbehaviour = \"{behaviour}\"\nversion = \"{version}\"\n"
    )
}

/// Two candidates of cluster `c1`.
pub fn candidates() -> Vec<Candidate> {
    vec![
        candidate("c1", "e1", "eu", "eu-a", Health::Healthy),
        candidate("c1", "e2", "eu", "eu-b", Health::Healthy),
    ]
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    eventually_or(limit, what, cond, String::new).await
}

/// Like [`eventually`]; `context` is added to the failure message.
pub async fn eventually_or(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything the host logs during this test binary, at debug level for Hawser. The
/// first call installs the capturing subscriber.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("hawser=debug"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

pub fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}
