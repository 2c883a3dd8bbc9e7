//! Tests of the compiled-artifact cache (`plugin/cache.rs`).

use super::*;
use std::os::unix::fs::PermissionsExt;

fn refusal(dir: &Path) -> String {
    match prepare_dir(dir) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} was accepted", dir.display()),
    }
}

#[test]
fn the_cache_dir_is_used_by_its_resolved_path_below_safe_ancestors() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, link) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("l"),
    );
    fs::create_dir(&a).unwrap();
    fs::set_permissions(&a, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let cache = ArtifactCache::new(&Engine::default(), Some(link.clone()), 8).unwrap();
    // Repointing the link after start-up does not move the cache.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&b, &link).unwrap();
    let path = cache.artifact_path(&[0; 32]).unwrap();
    assert_eq!(path.parent(), Some(fs::canonicalize(&a).unwrap().as_path()));

    // A parent others may write to (without the sticky bit) is refused.
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let e = refusal(&open.join("cache"));
    assert!(e.contains("can be changed by another user"), "{e}");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(
        prepare_dir(&open.join("cache")).is_ok(),
        "sticky, like /tmp"
    );
}

#[test]
fn pruning_removes_partial_artifacts_only_once_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = ArtifactCache::new(&Engine::default(), Some(dir.clone()), 8).unwrap();
    let stale = dir.join("ab-cd.tmp999-0");
    let fresh = dir.join("ab-cd.tmp999-1");
    for f in [&stale, &fresh] {
        fs::write(f, b"partial").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    cache.prune();
    assert!(!stale.exists(), "a crashed writer's leftover is removed");
    assert!(fresh.exists(), "a write that may be in progress is kept");
}

#[test]
fn the_cache_dir_must_be_private_to_this_user() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    prepare_dir(&dir).unwrap();
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "created private");

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
    assert!(refusal(&dir).contains("writable by group or others"));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

    // Another user's directory, private or not: as root, hand it to `nobody`;
    // otherwise any root-owned directory serves.
    let foreign = if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        dir.clone()
    } else {
        PathBuf::from("/usr")
    };
    let e = refusal(&foreign);
    assert!(e.contains("not by this process"), "{e}");
    assert!(e.contains("runtime.cache_dir"), "{e}");
}
