//! The log backend: one JSON Event per line, rotated by size.
//!
//! Rotation renames `audit.log` to `audit.log.1`, shifting older copies up to
//! `audit.log.<max_backups>` (the oldest is overwritten). Each batch is one
//! `write`, so a process crash loses nothing that was written; the file is synced
//! at rotation and at shutdown, not per batch, which would cap throughput at the
//! disk's sync rate.

use super::config::FileSettings;
use super::AuditError;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open audit log file. Blocking I/O: the sink task runs it on the blocking pool.
pub(crate) struct FileSink {
    settings: FileSettings,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    /// Opens (appending to) the log, creating its directory if needed.
    pub(crate) fn open(settings: FileSettings) -> Result<FileSink, AuditError> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        }
        let mut sink = FileSink {
            settings,
            file: None,
            size: 0,
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> Result<(), AuditError> {
        let path = &self.settings.path;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        self.size = file.metadata().map_err(|e| AuditError::io(path, e))?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Writes `events` as lines, rotating whenever the next line would take the
    /// file past `max_bytes`. On error, returns how many events were written before
    /// it, so a retry writes each event once.
    pub(crate) fn write_batch(&mut self, events: &[Bytes]) -> Result<(), (usize, AuditError)> {
        if self.file.is_none() {
            // A failed rotation left no file open: open it before sizing anything, so
            // a retry does not rotate (and shift the backups) once more.
            self.reopen().map_err(|e| (0, e))?;
        }
        let mut buf: Vec<u8> = Vec::new();
        let mut written = 0;
        for (i, line) in events.iter().enumerate() {
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 + 1 > self.settings.max_bytes {
                self.write_out(&mut buf).map_err(|e| (written, e))?;
                written = i;
                self.rotate().map_err(|e| (written, e))?;
            }
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        self.write_out(&mut buf).map_err(|e| (written, e))
    }

    fn write_out(&mut self, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            // A failed rotation left no file open; try again.
            self.reopen()?;
        }
        let path = &self.settings.path;
        let Some(file) = self.file.as_mut() else {
            return Err(AuditError::Closed);
        };
        file.write_all(buf).map_err(|e| AuditError::io(path, e))?;
        self.size += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let path = self.settings.path.clone();
        if let Some(file) = self.file.take() {
            file.sync_data().map_err(|e| AuditError::io(&path, e))?;
        }
        let n = self.settings.max_backups;
        let moved = if n == 0 {
            std::fs::remove_file(&path)
        } else {
            for i in (1..n).rev() {
                let from = backup(&path, i);
                if from.exists() {
                    let to = backup(&path, i + 1);
                    std::fs::rename(&from, &to).map_err(|e| AuditError::io(&from, e))?;
                }
            }
            std::fs::rename(&path, backup(&path, 1))
        };
        match moved {
            Ok(()) => {}
            // Already gone (moved away by hand): nothing to rotate.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(&path, e)),
        }
        // The live file is gone; the next one starts empty even if opening it fails
        // now and is retried later.
        self.size = 0;
        self.reopen()
    }

    /// Syncs the file (at shutdown).
    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        match &self.file {
            Some(f) => f
                .sync_data()
                .map_err(|e| AuditError::io(&self.settings.path, e)),
            None => Ok(()),
        }
    }
}

/// `audit.log` -> `audit.log.<i>`.
pub(crate) fn backup(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

#[cfg(test)]
#[path = "tests/file.rs"]
mod tests;
