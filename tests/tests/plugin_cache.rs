//! The compiled-artifact cache: each plugin version is compiled once, kept on disk by
//! content and engine, and pruned least-recently-used first without touching what the
//! running chain uses.

mod plugin_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hawser::plugin::testing::{self, request};
use hawser::plugin::ReloadTrigger;
use plugin_support::{misbehave, Fixture};

#[tokio::test]
async fn compiled_artifacts_are_cached_on_disk_by_content_and_engine() {
    let cache = tempfile::tempdir().unwrap();
    let fx = Fixture::new("");
    let text = |v: &str| {
        format!(
            "role = \"hub\"\n[runtime]\nmax_instances = 16\ncache_dir = {:?}\n{}",
            cache.path().display().to_string(),
            plugin_support::expand(&misbehave("creds", "credential", "ok", v, ""))
        )
    };
    std::fs::write(&fx.file, text("a")).unwrap();
    let first = fx.host().await;
    assert_eq!(first.runtime().cache_stats().compiled, 1);
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one .cwasm artifact");

    // A config-only change reuses the component from memory.
    std::fs::write(&fx.file, text("b")).unwrap();
    first.reload(ReloadTrigger::Admin).await.unwrap();
    let s = first.runtime().cache_stats();
    assert_eq!((s.compiled, s.memory_hits), (1, 1));

    // A new process (runtime) loads it from disk instead of compiling.
    let second = fx.host().await;
    let s = second.runtime().cache_stats();
    assert_eq!((s.compiled, s.disk_hits), (0, 1));
    assert!(second
        .chain()
        .check_credential(&request("/", &[]))
        .await
        .is_ok());
}

/// The misbehave fixture with a custom section `tag` appended: the same plugin, a
/// different file digest.
fn variant(dir: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(testing::plugin("hawser-plugin-misbehave")).unwrap();
    let name = b"hawser-test";
    let size = 1 + name.len() + tag.len();
    assert!(size < 128, "one-byte LEB128 sizes");
    bytes.extend([0u8, size as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(tag.as_bytes());
    let path = dir.join(format!("misbehave-{tag}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn artifacts(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cwasm"))
        .collect()
}

/// The one name in `after` that is not in `before`.
fn added(before: &BTreeSet<String>, after: &BTreeSet<String>) -> String {
    let new: Vec<_> = after.difference(before).collect();
    assert_eq!(new.len(), 1, "{before:?} -> {after:?}");
    new[0].clone()
}

#[tokio::test]
async fn the_disk_cache_keeps_the_most_recently_used_artifacts() {
    let cache = tempfile::tempdir().unwrap();
    let fx = Fixture::new("");
    let chain = |tag: &str| {
        let plugin = variant(fx.dir.path(), tag);
        let text = format!(
            "role = \"hub\"\n[runtime]\nmax_instances = 16\ncache_dir = {:?}\ncache_max_entries = 3\n\
             [[stage]]\nname = \"creds\"\nkind = \"credential\"\nplugin = {:?}\n\
             [stage.config]\nbehaviour = \"ok\"\nversion = \"{tag}\"\n",
            cache.path().display().to_string(),
            plugin.display().to_string()
        );
        std::fs::write(&fx.file, text).unwrap();
    };
    let on_disk = || artifacts(cache.path());

    // One process compiles three versions: three artifacts, within the limit.
    chain("v1");
    let first = fx.host().await;
    let a1 = added(&BTreeSet::new(), &on_disk());
    chain("v2");
    first.reload(ReloadTrigger::Admin).await.unwrap();
    let a2 = added(&[a1.clone()].into(), &on_disk());
    chain("v3");
    first.reload(ReloadTrigger::Admin).await.unwrap();
    let before = on_disk();
    let a3 = added(&[a1.clone(), a2.clone()].into(), &before);

    // A second process loads v1 and then v3 from disk; each load marks it used.
    chain("v1");
    let second = fx.host().await;
    chain("v3");
    second.reload(ReloadTrigger::Admin).await.unwrap();
    assert_eq!(second.runtime().cache_stats().compiled, 0);
    assert_eq!(on_disk(), before);

    // A fourth version goes past the limit: the least recently used artifact (v2's,
    // though v1's was written first) goes; v3's, in use, and v1's stay.
    chain("v4");
    second.reload(ReloadTrigger::Admin).await.unwrap();
    let after = on_disk();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&a2), "{after:?}");
    assert!(after.contains(&a1) && after.contains(&a3), "{after:?}");
    assert!(second
        .chain()
        .check_credential(&request("/", &[]))
        .await
        .is_ok());
}
