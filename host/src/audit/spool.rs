//! The webhook's on-disk spool: JSON-lines segments `<seq>.jsonl` in one directory,
//! replayed oldest first.
//!
//! Order is kept by one rule, enforced under [`Spool::state`]'s lock: once an event
//! has gone to the spool (because the memory queue was full), every later event goes
//! there too, until the sink task has replayed the whole spool and the memory queue
//! is empty. Everything in the memory queue is therefore older than everything in
//! the spool. Replay progress is written to `<seq>.pos` after each delivered batch,
//! so a restart resends at most one batch; segments left over from a previous run
//! are replayed before anything new.

use super::AuditError;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, MutexGuard, Notify};

/// One closed segment, ready to replay.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    seq: i64,
    path: PathBuf,
    len: u64,
}

struct OpenSegment {
    seg: Segment,
    file: std::fs::File,
}

/// What is protected by the spool's lock.
pub(crate) struct SpoolState {
    /// While true, producers append here instead of to the memory queue.
    pub(crate) active: bool,
    /// Set at shutdown; appends are refused afterwards.
    pub(crate) closed: bool,
    sealed: VecDeque<Segment>,
    open: Option<OpenSegment>,
    next_seq: i64,
    bytes: u64,
}

/// Why an append did not happen.
pub(crate) enum AppendError {
    /// The spool is at its bound; the caller waits or refuses.
    Full,
    /// The disk refused the write.
    Io(AuditError),
}

/// What the sink task should read next.
pub(crate) enum Next {
    /// Replay this segment.
    Segment(Segment),
    /// The memory queue holds older events: drain it first.
    QueueFirst,
    /// The spool is empty (and now inactive).
    Empty,
}

/// A replayed segment: events with the byte offset just after each.
pub(crate) struct Replay {
    pub(crate) events: Vec<(Bytes, u64)>,
    /// Lines that were not JSON (a write torn by a crash), skipped.
    pub(crate) corrupt: u64,
}

/// The spool directory and its state.
pub(crate) struct Spool {
    dir: PathBuf,
    pub(crate) max_bytes: u64,
    segment_bytes: u64,
    pub(crate) state: Mutex<SpoolState>,
    /// Notified when events are appended; wakes the sink task.
    pub(crate) data: Notify,
    /// Notified when a segment is deleted; wakes producers waiting for room.
    pub(crate) space: Notify,
    bytes: AtomicU64,
}

fn seq_of(path: &Path, ext: &str) -> Option<i64> {
    (path.extension()? == ext).then_some(())?;
    path.file_stem()?.to_str()?.parse().ok()
}

impl Spool {
    /// Opens (creating) `dir` and picks up segments left by a previous run.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Spool, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        let mut sealed = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))? {
            let path = entry.map_err(|e| AuditError::io(dir, e))?.path();
            // A position left without its segment (a crash between the two deletes
            // of `finish`), or a half-written one: stale, and a later segment with
            // the same number must not start from it.
            let orphan = seq_of(&path, "pos").is_some() && !path.with_extension("jsonl").exists();
            if orphan || path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))?;
                continue;
            }
            if let Some(seq) = seq_of(&path, "jsonl") {
                let len = std::fs::metadata(&path)
                    .map_err(|e| AuditError::io(&path, e))?
                    .len();
                sealed.push(Segment { seq, path, len });
            }
        }
        sealed.sort_by_key(|s| s.seq);
        let bytes = sealed.iter().map(|s| s.len).sum();
        let next_seq = sealed.last().map_or(0, |s| s.seq + 1);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            // Small enough that replay frees room in steps, large enough to keep
            // the file count low.
            segment_bytes: (max_bytes / 16).clamp(4 * 1024, 8 * 1024 * 1024),
            state: Mutex::new(SpoolState {
                active: !sealed.is_empty(),
                closed: false,
                sealed: sealed.into(),
                open: None,
                next_seq,
                bytes,
            }),
            data: Notify::new(),
            space: Notify::new(),
            bytes: AtomicU64::new(bytes),
        })
    }

    /// Bytes on disk, for metrics.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn set_bytes(&self, st: &mut SpoolState, bytes: u64) {
        st.bytes = bytes;
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Appends one event line. The caller holds the lock, so the choice between
    /// queue and spool and the append are one step.
    pub(crate) fn append(&self, st: &mut SpoolState, line: &[u8]) -> Result<(), AppendError> {
        if st.closed {
            return Err(AppendError::Io(AuditError::Closed));
        }
        let need = line.len() as u64 + 1;
        // An empty spool takes any event, so one oversized event cannot wedge it.
        if st.bytes > 0 && st.bytes + need > self.max_bytes {
            return Err(AppendError::Full);
        }
        if st.open.is_none() {
            let seg = Segment {
                seq: st.next_seq,
                path: self.dir.join(format!("{}.jsonl", st.next_seq)),
                len: 0,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&seg.path)
                .map_err(|e| AppendError::Io(AuditError::io(&seg.path, e)))?;
            st.next_seq += 1;
            st.open = Some(OpenSegment { seg, file });
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let Some(open) = st.open.as_mut() else {
            return Err(AppendError::Io(AuditError::Closed));
        };
        // One write per event: a page-cache append, cheap enough to do under the
        // lock, and a crash tears at most the last line (skipped on replay).
        open.file
            .write_all(&buf)
            .map_err(|e| AppendError::Io(AuditError::io(&open.seg.path, e)))?;
        open.seg.len += need;
        let full_segment = open.seg.len >= self.segment_bytes;
        let bytes = st.bytes + need;
        self.set_bytes(st, bytes);
        if full_segment {
            seal(st).map_err(AppendError::Io)?;
        }
        self.data.notify_one();
        Ok(())
    }

    /// The next segment to replay. `queue_empty` is checked under the lock: while
    /// the memory queue holds events, they are older and go first. An empty spool
    /// is deactivated so producers use the memory queue again.
    pub(crate) async fn next(&self, queue_empty: impl Fn() -> bool) -> Result<Next, AuditError> {
        let mut st = self.state.lock().await;
        if !queue_empty() {
            return Ok(Next::QueueFirst);
        }
        if st.sealed.is_empty() && st.open.as_ref().is_some_and(|o| o.seg.len > 0) {
            seal(&mut st)?;
        }
        match st.sealed.front() {
            Some(seg) => Ok(Next::Segment(seg.clone())),
            None => {
                st.active = false;
                Ok(Next::Empty)
            }
        }
    }

    /// Reads a segment from its replay position.
    pub(crate) async fn read(&self, seg: &Segment) -> Result<Replay, AuditError> {
        let data = tokio::fs::read(&seg.path)
            .await
            .map_err(|e| AuditError::io(&seg.path, e))?;
        let start = match tokio::fs::read_to_string(pos_path(seg)).await {
            Ok(text) => text.trim().parse::<usize>().unwrap_or(0).min(data.len()),
            Err(_) => 0,
        };
        let data = Bytes::from(data);
        let mut replay = Replay {
            events: Vec::new(),
            corrupt: 0,
        };
        let mut offset = start;
        for line in data[start..].split_inclusive(|b| *b == b'\n') {
            let begin = offset;
            offset += line.len();
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            if body.is_empty() {
                continue;
            }
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                replay.corrupt += 1;
                continue;
            }
            replay
                .events
                .push((data.slice(begin..begin + body.len()), offset as u64));
        }
        Ok(replay)
    }

    /// Records that everything before `offset` in `seg` was delivered. Written to a
    /// temporary file and renamed, so a crash never leaves a torn position (which
    /// would replay the whole segment).
    pub(crate) async fn commit(&self, seg: &Segment, offset: u64) -> Result<(), AuditError> {
        let path = pos_path(seg);
        let tmp = path.with_extension("pos.tmp");
        tokio::fs::write(&tmp, offset.to_string())
            .await
            .map_err(|e| AuditError::io(&tmp, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| AuditError::io(path, e))
    }

    /// Deletes a fully delivered segment and wakes producers waiting for room.
    /// The state is updated even if deletion fails: the position file then still
    /// marks the segment as delivered, so a later run skips its events.
    pub(crate) async fn finish(&self, seg: &Segment) -> Result<(), AuditError> {
        let mut st = self.state.lock().await;
        if st.sealed.front().is_some_and(|s| s.seq == seg.seq) {
            st.sealed.pop_front();
        }
        let bytes = st.bytes.saturating_sub(seg.len);
        self.set_bytes(&mut st, bytes);
        drop(st);
        self.space.notify_waiters();
        tokio::fs::remove_file(&seg.path)
            .await
            .map_err(|e| AuditError::io(&seg.path, e))?;
        // The position file may not exist (segment delivered in one batch).
        let _ = tokio::fs::remove_file(pos_path(seg)).await;
        Ok(())
    }

    /// At shutdown, before the queue is drained: refuses further appends and wakes
    /// producers waiting for room, who then see the log closed.
    pub(crate) async fn stop_appends(&self) {
        self.state.lock().await.closed = true;
        self.space.notify_waiters();
    }

    /// At shutdown: stops appends, syncs the open segment, and writes `older`
    /// (events taken from the memory queue, older than anything spooled) as a new
    /// first segment so the next run replays them first.
    pub(crate) async fn close(&self, older: &[Bytes]) -> Result<(), AuditError> {
        let mut st = self.state.lock().await;
        st.closed = true;
        seal(&mut st)?;
        self.space.notify_waiters();
        if older.is_empty() {
            return Ok(());
        }
        let seq = st.sealed.front().map_or(st.next_seq, |s| s.seq) - 1;
        let path = self.dir.join(format!("{seq}.jsonl"));
        // A position file of an earlier segment with this number would skip events.
        let _ = std::fs::remove_file(path.with_extension("pos"));
        let mut buf = Vec::new();
        for line in older {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&buf)?;
            file.sync_data()
        };
        write().map_err(|e| AuditError::io(&path, e))?;
        let bytes = st.bytes + buf.len() as u64;
        self.set_bytes(&mut st, bytes);
        st.sealed.push_front(Segment {
            seq,
            path,
            len: buf.len() as u64,
        });
        Ok(())
    }

    /// Locks the state (for producers).
    pub(crate) async fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state.lock().await
    }
}

fn pos_path(seg: &Segment) -> PathBuf {
    seg.path.with_extension("pos")
}

/// Closes the open segment (synced, so replay reads what was acknowledged to
/// producers) and queues it for replay.
fn seal(st: &mut SpoolState) -> Result<(), AuditError> {
    if let Some(open) = st.open.take() {
        open.file
            .sync_data()
            .map_err(|e| AuditError::io(&open.seg.path, e))?;
        st.sealed.push_back(open.seg);
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/spool.rs"]
mod tests;
