//! Reload-on-change for the credential files (keys, trust bundle, revocations).
//!
//! Readers take an `Arc` snapshot from an `ArcSwap` (no lock on the request path);
//! a poller re-reads the file when its stamp (inode, mtime, size) changes. Writers
//! replace files by rename, so every change gives a new inode. A file that fails
//! to load keeps the previous value: a half-edited revocation list must not drop
//! the revocations already in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::files::{stamp, Stamp};

/// A value loaded from one file.
pub trait FromFile: Sized + Send + Sync + 'static {
    /// Why loading failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Loads the value from `path`.
    fn from_file(path: &Path) -> Result<Self, Self::Error>;
}

/// A value kept in step with its file.
pub struct Watched<T> {
    path: PathBuf,
    current: ArcSwap<T>,
    /// The stamp the current value was read under (`None`: the file was absent).
    seen: Mutex<Option<Stamp>>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T: FromFile> Watched<T> {
    /// Loads the file now; an error if it does not load.
    pub fn open(path: impl Into<PathBuf>) -> Result<Watched<T>, T::Error> {
        let path = path.into();
        // Stamp before reading: a change during the read then shows as a new stamp
        // on the next poll, instead of being mistaken for what was read.
        let seen = stamp(&path);
        let value = T::from_file(&path)?;
        Ok(Watched {
            path,
            current: ArcSwap::from_pointee(value),
            seen: Mutex::new(seen),
        })
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file if it changed. `Ok(true)` if a new value is in place; on
    /// error the previous value stays.
    pub fn reload_if_changed(&self) -> Result<bool, T::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now == *seen {
            return Ok(false);
        }
        let value = T::from_file(&self.path)?;
        self.current.store(Arc::new(value));
        *seen = now;
        Ok(true)
    }

    /// Calls [`Watched::reload_if_changed`] every `every` until `shutdown`,
    /// logging failures once per failing streak.
    pub async fn poll(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    failing = false;
                    tracing::info!(file = %self.path.display(), "credential file reloaded");
                }
                Ok(false) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(file = %self.path.display(), error = %e, "credential file is invalid; keeping the previous version");
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Text(String);

    impl FromFile for Text {
        type Error = std::io::Error;
        fn from_file(path: &Path) -> Result<Text, std::io::Error> {
            let text = std::fs::read_to_string(path)?;
            if text.contains("bad") {
                return Err(std::io::Error::other("bad content"));
            }
            Ok(Text(text))
        }
    }

    #[test]
    fn reloads_on_change_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        crate::files::write_atomic(&path, b"one", 0o644).expect("write");
        let w = Watched::<Text>::open(&path).expect("open");
        assert!(!w.reload_if_changed().expect("unchanged"));
        crate::files::write_atomic(&path, b"two", 0o644).expect("write");
        assert!(w.reload_if_changed().expect("changed"));
        assert_eq!(w.get().0, "two");
        crate::files::write_atomic(&path, b"bad", 0o644).expect("write");
        assert!(w.reload_if_changed().is_err());
        assert_eq!(w.get().0, "two");
        crate::files::write_atomic(&path, b"three", 0o644).expect("write");
        assert!(w.reload_if_changed().expect("fixed"));
        assert_eq!(w.get().0, "three");
    }
}
