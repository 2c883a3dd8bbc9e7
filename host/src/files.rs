//! File and time helpers shared by the state files: private directories, atomic
//! writes, a lock for read-modify-write, file stamps for noticing a replaced file,
//! and the RFC 3339 timestamps they record.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a writer waits for another writer's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// A lock file older than this was left by a crashed writer: every locked section
/// is a read, a small change and one atomic write.
const LOCK_STALE: Duration = Duration::from_secs(60);

/// An exclusive lock on a read-modify-write of one file, held by a `<file>.lock`
/// created with `create_new`. Two `hawser credential revoke` runs at the same time
/// must not lose one of the revocations, and std has no portable `flock` before
/// Rust 1.89.
#[derive(Debug)]
pub(crate) struct FileLock {
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock for `target`, waiting for (or clearing a stale) other holder.
    pub(crate) fn acquire(target: &Path) -> io::Result<FileLock> {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = target.with_file_name(name);
        let started = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(FileLock { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok());
                    if age.is_some_and(|a| a > LOCK_STALE) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{} is held by another writer", path.display()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Identity of a file: inode (after following symlinks, so a Secret volume's `..data`
/// swap changes it), modification time and size. Compared to notice a replaced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

/// The stamp of `path`; `None` when it cannot be read.
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        inode,
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// Reads `path` if it is a regular file of at most `max` bytes; the error says why
/// not, naming the path.
///
/// The file is opened non-blocking and its type and size are checked on the open
/// handle: a FIFO or device (or a path swapped for one after a check) must not block
/// the reader, which for a reload would hold every later reload up.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let cannot = |e: io::Error| format!("cannot read {}: {e}", path.display());
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let too_big = |len: u64| {
        format!(
            "{} is larger than the {} allowed ({len} bytes)",
            path.display(),
            size(max)
        )
    };
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may have grown since it was opened.
    file.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `n` bytes as a short text: whole MiB or KiB where exact.
fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Reads a file that may be absent.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Seconds since the Unix epoch (JWT NumericDate); times before 1970 clamp to 0.
pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time at `secs` seconds since the epoch; negative values clamp to the epoch.
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// RFC 3339 in UTC with second precision, e.g. `2025-01-31T12:00:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses what [`rfc3339`] writes (any fractional seconds are accepted).
pub(crate) fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(text).map_err(|e| format!("{text:?} is not an RFC 3339 UTC time: {e}"))
}

/// Creates `dir` and missing parents with mode 0700 (the state and bundle
/// directories hold private keys). An existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `path` atomically: a temporary file in the same directory, created
/// with `mode`, fsynced, then renamed over `path`, so readers (the hub polls
/// the registry) never see a half-written file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{:016x}.tmp",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let result = opts.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename itself durable; best effort, as not every filesystem allows it.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The current UTC time as RFC 3339 with second precision.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_at_second_precision() {
        let t = from_unix(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Ok(t));
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("revoked.toml");
        let lock = FileLock::acquire(&target).expect("first lock");
        assert!(dir.path().join("revoked.toml.lock").exists());
        drop(lock);
        assert!(!dir.path().join("revoked.toml.lock").exists());
        let _again = FileLock::acquire(&target).expect("lock after release");
    }
}
