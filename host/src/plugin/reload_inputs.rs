//! What a load or reload reads: the config, the plugin files it names, the stamps
//! those files had just before they were read, and the chain's fingerprint.
//!
//! The stamps are what the watcher compares later changes with. They are taken before
//! each file is read, so a change landing while a reload (or the start-up load) runs
//! differs from them and triggers another reload instead of being lost.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::cache::{digest, Digest};
use super::config::ChainSpec;
use super::engine::Runtime;
use super::error::PluginError;
use super::types::Role;
use crate::files::{read_regular, stamp, Stamp};

/// The largest plugin file a reload reads. Real plugins are well under a few MiB; the
/// cap keeps a wrong path (a disk image, a log) from filling memory and the compiler.
pub const MAX_PLUGIN_BYTES: u64 = 32 << 20;

/// Files with the stamps they had just before they were read (`None`: missing).
pub(crate) type Stamps = Vec<(PathBuf, Option<Stamp>)>;

/// The config as one read saw it.
pub(super) struct ConfigRead {
    /// The config file and every plugin it names, stamped before any plugin is read.
    pub(super) stamps: Stamps,
    /// The plugin files the config names (even when the config is invalid).
    pub(super) named: Vec<PathBuf>,
    pub(super) spec: Result<ChainSpec, PluginError>,
}

/// Reads and validates the config `file` for `role`, stamping it before the read and
/// the plugins it names right after.
pub(super) async fn read_config(file: &Path, role: Role) -> Result<ConfigRead, PluginError> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut stamps = vec![(file.clone(), stamp(&file))];
        let text = match ChainSpec::read(&file) {
            Ok(text) => text,
            Err(e) => {
                return ConfigRead {
                    stamps,
                    named: Vec::new(),
                    spec: Err(e),
                }
            }
        };
        let named = ChainSpec::named_plugins_in(&text, &file);
        stamps.extend(named.iter().map(|p| (p.clone(), stamp(p))));
        ConfigRead {
            stamps,
            named,
            spec: ChainSpec::parse(&text, &file, role),
        }
    })
    .await
    .map_err(|e| PluginError::Internal(format!("config reader failed: {e}")))
}

/// Fails unless `spec` asks for the settings `runtime` was built with.
pub(super) fn check_runtime(runtime: &Runtime, spec: &ChainSpec) -> Result<(), PluginError> {
    if runtime.settings() != &spec.runtime {
        return Err(PluginError::Config {
            file: spec.file.clone(),
            key: "runtime".into(),
            reason:
                "runtime settings differ from the running engine's; they only change on restart"
                    .into(),
        });
    }
    Ok(())
}

/// Reads every plugin file of `spec` and hashes it.
pub(super) async fn read_plugins(spec: &ChainSpec) -> Result<Vec<(Vec<u8>, Digest)>, PluginError> {
    let mut out = Vec::with_capacity(spec.stages.len());
    for s in &spec.stages {
        let path = s.plugin.clone();
        let bytes = tokio::task::spawn_blocking(move || read_plugin(&path))
            .await
            .map_err(|e| PluginError::Internal(format!("plugin reader failed: {e}")))?
            .map_err(|reason| PluginError::Plugin {
                file: spec.file.clone(),
                stage: s.name.clone(),
                plugin: s.plugin.clone(),
                reason,
            })?;
        let d = digest(&bytes);
        out.push((bytes, d));
    }
    Ok(out)
}

/// Reads one plugin file: a regular file of at most [`MAX_PLUGIN_BYTES`].
fn read_plugin(path: &Path) -> Result<Vec<u8>, String> {
    read_regular(path, MAX_PLUGIN_BYTES)
}

/// Identifies a chain: role, runtime settings, and every stage's settings and bytes.
pub(super) fn fingerprint(spec: &ChainSpec, plugins: &[(Vec<u8>, Digest)]) -> Digest {
    let mut fp = Sha256::new();
    fp.update(format!("{:?}{:?}", spec.role, spec.runtime));
    for (s, (_, d)) in spec.stages.iter().zip(plugins) {
        fp.update(format!("{s:?}"));
        fp.update(d);
    }
    fp.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.wasm");
        std::fs::write(&ok, b"\0asm").unwrap();
        assert_eq!(read_plugin(&ok).unwrap(), b"\0asm");

        let err = read_plugin(dir.path()).unwrap_err();
        assert!(err.contains("is not a regular file"), "{err}");

        let fifo = dir.path().join("fifo.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Would block forever if it were opened for reading without O_NONBLOCK.
        let err = read_plugin(&fifo).unwrap_err();
        assert!(err.contains("fifo.wasm is not a regular file"), "{err}");

        let big = dir.path().join("big.wasm");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PLUGIN_BYTES + 1).unwrap();
        let err = read_plugin(&big).unwrap_err();
        assert!(err.contains("larger than the 32 MiB allowed"), "{err}");

        let err = read_plugin(&dir.path().join("missing.wasm")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }
}
