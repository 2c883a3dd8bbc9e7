//! Revocations read from a file at run time, so a revocation reaches a running
//! chain without a reload.
//!
//! The file is the hub's `revoked.toml` (as `hawser credential revoke` writes it, or
//! a copy from `hawser credential export-keys`), in a directory the operator grants
//! read-only through `[stage.grants] read_dirs`. A fresh instance reads it in `init`;
//! a reused one stats it again at most once per `check_interval` (measured with the
//! host clock) and re-reads it when its modification time or size changed.
//!
//! Failure handling, chosen to fail closed:
//! - missing file: every credential is refused, unless `if_missing = "none-revoked"`
//!   (the hub's own list is absent until the first revocation; an exported copy
//!   always exists, so a missing copy is a deployment error);
//! - unreadable or invalid file: the last good list stays in force (a half-written
//!   list must not drop revocations); with no good list yet, every credential is
//!   refused.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use hawser_plugin_sdk::host::{self, LogLevel, Timestamp};

use crate::jws::Refusal;
use crate::settings::canonical_uuid;

/// What a missing revocation file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Refuse every credential until the file appears (default).
    RefuseAll,
    /// Nothing is revoked.
    NoneRevoked,
}

/// `revocations_file` and its companions from the stage config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// The file's path inside the guest (under a granted directory).
    pub path: String,
    /// Longest time between two looks at the file; zero looks on every request.
    pub check_interval: Duration,
    /// What a missing file means.
    pub if_missing: IfMissing,
}

/// The longest `revocations_check_interval` accepted: a revocation must not wait
/// for hours.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Parses a revocation list into canonical ids.
///
/// Only the TOML that `hawser credential revoke` and `export-keys` write is read:
/// comments, `revoked = []`, and `[[revoked]]` tables of `key = "string"` lines with
/// `id` (required), `revoked_at` and `expires_at` (ignored). Anything else is an
/// error, so the last good list stays in force. A full TOML parser would triple the
/// plugin's size, and with it the compile time of every hub and agent start.
pub fn parse(text: &str) -> Result<BTreeSet<String>, String> {
    let mut ids = BTreeSet::new();
    // The current `[[revoked]]` table's id, once its first line was read.
    let mut entry: Option<Option<String>> = None;
    let mut close = |entry: &mut Option<Option<String>>, line: usize| match entry.take() {
        None => Ok(()),
        Some(None) => Err(format!(
            "the [[revoked]] table before line {line} has no id"
        )),
        Some(Some(id)) => {
            ids.insert(id);
            Ok(())
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[revoked]]" {
            close(&mut entry, n)?;
            entry = Some(None);
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {n}: expected [[revoked]] or key = \"value\""))?;
        let (key, value) = (key.trim(), value.trim());
        let Some(current) = entry.as_mut() else {
            if key == "revoked" && value.split('#').next().map(str::trim) == Some("[]") {
                continue;
            }
            return Err(format!("line {n}: {key:?} outside a [[revoked]] table"));
        };
        let value =
            string_value(value).ok_or_else(|| format!("line {n}: {key} is not a \"string\""))?;
        match key {
            "id" if current.is_none() => {
                let id = canonical_uuid(value)
                    .ok_or_else(|| format!("line {n}: {value:?} is not a credential id"))?;
                *current = Some(id);
            }
            "id" => return Err(format!("line {n}: a second id in one [[revoked]] table")),
            "revoked_at" | "expires_at" => {}
            other => return Err(format!("line {n}: unknown key {other:?}")),
        }
    }
    close(&mut entry, text.lines().count() + 1)?;
    Ok(ids)
}

/// `"text"` or `'text'`, optionally followed by a comment; no escapes (ids and
/// timestamps need none).
fn string_value(value: &str) -> Option<&str> {
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &value[1..];
    let end = rest.find(quote)?;
    let (inner, after) = (&rest[..end], rest[end + 1..].trim_start());
    (!inner.contains('\\') && (after.is_empty() || after.starts_with('#'))).then_some(inner)
}

/// What identifies one version of the file: modification time and size. Writers
/// replace it by rename; the size may stay the same (one entry expires as another is
/// added), and the time may not tick between two writes on a filesystem with coarse
/// timestamps, so a version read within [`RACY`] of its modification is read again
/// at the next look (as git treats "racily clean" files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<Duration>,
    len: u64,
}

/// How recent a modification time must be for the stamp to be trusted (FAT-like
/// filesystems keep 2 s).
const RACY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct State {
    /// When the file was last looked at (host clock), if ever.
    checked_at: Option<Duration>,
    /// The stamp `ids` was read under; `None` after a failed or absent read.
    seen: Option<Stamp>,
    /// `seen` was read too soon after its modification to tell it from a later one.
    racy: bool,
    /// The ids in force; `None` means refuse everything.
    ids: Option<BTreeSet<String>>,
}

/// The revocation file of one plugin instance.
#[derive(Debug)]
pub struct RevocationFile {
    settings: FileSettings,
    state: RefCell<State>,
}

fn since_epoch(t: Timestamp) -> Duration {
    Duration::new(t.seconds, t.nanoseconds)
}

impl RevocationFile {
    /// Reads the file now (at `init`).
    pub fn open(settings: FileSettings, now: Timestamp) -> RevocationFile {
        let file = RevocationFile {
            settings,
            state: RefCell::new(State {
                checked_at: None,
                seen: None,
                racy: false,
                ids: None,
            }),
        };
        file.refresh(since_epoch(now));
        file
    }

    /// Refuses if any of `ids` (the jti and the rid) is revoked, or if there is no
    /// usable list; looks at the file first when the interval has passed.
    pub fn check(&self, ids: &[&str], now: Timestamp) -> Result<(), Refusal> {
        let now = since_epoch(now);
        let due = match self.state.borrow().checked_at {
            None => true,
            // A clock that went back also makes a look due.
            Some(at) => now < at || now - at >= self.settings.check_interval,
        };
        if due {
            self.refresh(now);
        }
        let state = self.state.borrow();
        let Some(revoked) = &state.ids else {
            return Err(Refusal::RevocationsUnavailable);
        };
        if ids
            .iter()
            .any(|id| revoked.contains(&id.to_ascii_lowercase()))
        {
            return Err(Refusal::Revoked);
        }
        Ok(())
    }

    /// Stats the file and re-reads it if it changed.
    fn refresh(&self, now: Duration) {
        let mut state = self.state.borrow_mut();
        state.checked_at = Some(now);
        let path = &self.settings.path;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                state.seen = None;
                state.ids = match self.settings.if_missing {
                    IfMissing::NoneRevoked => Some(BTreeSet::new()),
                    IfMissing::RefuseAll => {
                        host::log(
                            LogLevel::Warn,
                            &format!(
                                "revocation file {path} is missing; refusing every credential"
                            ),
                        );
                        None
                    }
                };
                return;
            }
            Err(e) => return self.keep_last(&mut state, &e.to_string()),
        };
        let stamp = Stamp {
            modified: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok()),
            len: meta.len(),
        };
        if state.seen == Some(stamp) && state.ids.is_some() && !state.racy {
            return;
        }
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text));
        match parsed {
            Ok(ids) => {
                state.seen = Some(stamp);
                state.racy = stamp.modified.is_none_or(|m| now.saturating_sub(m) < RACY);
                state.ids = Some(ids);
            }
            Err(why) => self.keep_last(&mut state, &why),
        }
    }

    /// A failed read: the last good list stays; without one, refuse everything.
    /// `seen` is cleared so the next look reads the file again.
    fn keep_last(&self, state: &mut State, why: &str) {
        state.seen = None;
        let what = if state.ids.is_some() {
            "keeping the previous list"
        } else {
            "refusing every credential"
        };
        host::log(
            LogLevel::Warn,
            &format!("revocation file {}: {why}; {what}", self.settings.path),
        );
    }
}
