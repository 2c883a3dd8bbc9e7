//! Compiled-artifact cache: each plugin version is compiled once.
//!
//! Keys are the SHA-256 of the component bytes plus a hash of the engine's
//! compatibility fingerprint (wasmtime version, target, compiler settings), so a new
//! wasmtime or new engine settings never load a stale artifact. Two levels:
//! - memory: components of the current chain, so a reload that keeps a plugin does not
//!   even deserialize it;
//! - disk (optional `cache_dir`): `<digest>-<engine>.cwasm` files written by
//!   [`Component::serialize`], loaded with [`Component::deserialize_file`]. A load
//!   touches the file's modification time; after each new artifact the directory is
//!   pruned to `cache_max_entries`, least recently used first, never removing one the
//!   process holds (the chain served or being loaded). Artifacts of other engine
//!   versions are never loaded, so they age out the same way.
//!
//! Loading native code from disk trusts the directory: the cache creates it with mode
//! 0700 and refuses to use a directory another user owns or that is writable by group
//! or others.

use std::collections::HashMap;
use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::error::PluginError;

/// SHA-256 of a plugin file.
pub type Digest = [u8; 32];

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of the first `n` bytes of `d`.
pub fn hex(d: &[u8], n: usize) -> String {
    d.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// Counters of the artifact cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components compiled from wasm bytes.
    pub compiled: u64,
    /// Components loaded from the disk cache.
    pub disk_hits: u64,
    /// Components reused from memory.
    pub memory_hits: u64,
    /// Compiled components held in memory now.
    pub in_memory: usize,
}

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    max_entries: usize,
    engine_key: String,
    memory: Mutex<HashMap<Digest, Component>>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
}

impl ArtifactCache {
    pub(crate) fn new(
        engine: &Engine,
        dir: Option<PathBuf>,
        max_entries: usize,
    ) -> Result<Self, PluginError> {
        // From here on the directory is named by its resolved path: repointing a
        // symlink on the way to it later changes nothing.
        let dir = dir.as_deref().map(prepare_dir).transpose()?;
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex(&hasher.0.finalize(), 8);
        Ok(ArtifactCache {
            dir,
            max_entries,
            engine_key,
            memory: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            in_memory: self.lock().len(),
        }
    }

    /// The compiled component for `bytes` (whose SHA-256 is `digest`), compiling it at
    /// most once. Blocking: call it off the async executor.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<Component, String> {
        if let Some(c) = self.lock().get(digest) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let path = self.artifact_path(digest);
        let component = match path.as_deref().and_then(|p| self.load(engine, p)) {
            Some(c) => c,
            None => {
                let c = Component::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                if let Some(path) = &path {
                    if let Err(e) = store(&c, path) {
                        tracing::warn!(path = %path.display(), error = %e, "plugin cache: could not write compiled artifact");
                    }
                }
                self.lock().insert(*digest, c.clone());
                self.prune();
                return Ok(c);
            }
        };
        self.lock().insert(*digest, component.clone());
        Ok(component)
    }

    /// Removes the least recently used artifacts past `max_entries`, keeping those of
    /// components this process holds.
    fn prune(&self) {
        let Some(dir) = &self.dir else { return };
        let held: Vec<String> = self.lock().keys().map(|d| hex(d, 32)).collect();
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut artifacts: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name.contains(".tmp") {
                    remove_if_stale(&e);
                    return None;
                }
                let digest = name.strip_suffix(".cwasm")?.split('-').next()?.to_owned();
                if held.contains(&digest) {
                    return None;
                }
                Some((e.metadata().ok()?.modified().ok()?, e.path()))
            })
            .collect();
        let excess = (artifacts.len() + held.len()).saturating_sub(self.max_entries);
        artifacts.sort();
        for (_, path) in artifacts.into_iter().take(excess) {
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "plugin cache: removed least recently used artifact")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "plugin cache: could not remove artifact")
                }
            }
        }
    }

    /// Drops in-memory components not in `keep` (those of the chain just installed).
    pub(crate) fn retain(&self, keep: &[Digest]) {
        self.lock().retain(|d, _| keep.contains(d));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Component>> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn artifact_path(&self, digest: &Digest) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}-{}.cwasm", hex(digest, 32), self.engine_key)))
    }

    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        if !path.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` maps native code. The file was written by
        // `Component::serialize` of this same engine configuration (the name carries the
        // engine fingerprint, and wasmtime checks its own header again) into a directory
        // this process created with mode 0700 and checked is not writable by anyone else
        // (`prepare_dir`). Files are replaced by rename, never rewritten in place.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, path) };
        match loaded {
            Ok(c) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                // Marks it recently used for pruning; failing to is harmless.
                let _ = fs::File::options()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "plugin cache: ignoring unusable artifact");
                None
            }
        }
    }
}

fn store(component: &Component, path: &Path) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| e.to_string())?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(|e| e.to_string())?;
    f.write_all(&bytes).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// A half-written artifact (see [`store`]) left by a process that died while writing
/// it: removed once it is older than any write in progress could be.
fn remove_if_stale(entry: &fs::DirEntry) {
    const STALE: std::time::Duration = std::time::Duration::from_secs(3600);
    let age = entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    if age.is_some_and(|a| a > STALE) {
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::debug!(path = %entry.path().display(), "plugin cache: removed a stale partial artifact")
            }
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "plugin cache: could not remove a stale partial artifact")
            }
        }
    }
}

/// Creates `dir` if needed, checks that only this user can change what is in it (or
/// what it resolves to), and returns its resolved path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, PluginError> {
    let err = |reason: String| PluginError::Config {
        file: dir.to_path_buf(),
        key: "runtime.cache_dir".into(),
        reason,
    };
    if !dir.exists() {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
            .map_err(|e| err(format!("cannot create: {e}")))?;
    }
    // Everything below is checked on the resolved path, the one used from now on: a
    // symlink on the way cannot be repointed between the checks and the use.
    let resolved = fs::canonicalize(dir).map_err(|e| err(format!("cannot resolve: {e}")))?;
    let meta = fs::metadata(&resolved).map_err(|e| err(format!("cannot stat: {e}")))?;
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Compiled native code is loaded from here: whoever can write it runs code in
        // this process, so it must be this user's alone.
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(err(format!(
                "owned by uid {}, not by this process (uid {me}); compiled native code is loaded from it, so it must be private",
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(err(
                "writable by group or others; compiled native code is loaded from it, so it must be private (chmod 700)".into(),
            ));
        }
    }
    #[cfg(unix)]
    for ancestor in resolved.ancestors().skip(1) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = fs::metadata(ancestor)
            .map_err(|e| err(format!("cannot stat {}: {e}", ancestor.display())))?;
        let me = rustix::process::geteuid().as_raw();
        let mode = meta.permissions().mode();
        // Whoever may rename entries of an ancestor could swap the directory for
        // their own; a sticky, world-writable one (/tmp) lets only owners do that.
        let others_may_rename = mode & 0o022 != 0 && mode & 0o1000 == 0;
        if (meta.uid() != me && meta.uid() != 0) || others_may_rename {
            return Err(err(format!(
                "{} (on the way to {}) can be changed by another user, who could swap the \
                 directory compiled native code is loaded from",
                ancestor.display(),
                resolved.display()
            )));
        }
    }
    Ok(resolved)
}

/// Feeds `Hash` output into SHA-256 so the engine key is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read from the inner state.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(all(test, unix))]
#[path = "tests/cache.rs"]
mod tests;
