//! Panic messages of std plugins to the host log.
//!
//! A plugin is not granted stderr, where Rust writes panic messages, so without this a
//! panic would reach the operator only as a trap. A std plugin gets a panic hook
//! (installed by `init`) that writes the message through [`crate::host::log`]; a
//! `no_std` plugin traps without it (see `__hawser_panic_handler!`). The message is
//! formatted on the stack: the panic may be an allocation failure.

use core::fmt::{self, Write};

/// The host truncates a log line to this many bytes anyway.
const MAX_LINE: usize = 1024;
/// std's panic text starts with "panicked at <file>:<line>:<col>:".
const PREFIX: &str = "plugin ";

/// Text formatted into a fixed buffer, cut at a character boundary when full.
struct Line {
    buf: [u8; MAX_LINE],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_LINE - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

impl Line {
    fn format(message: fmt::Arguments<'_>) -> Line {
        let mut line = Line {
            buf: [0; MAX_LINE],
            len: 0,
        };
        // A full buffer stops formatting; what fitted is kept.
        let _ = line.write_str(PREFIX).and_then(|_| line.write_fmt(message));
        line
    }

    fn as_str(&self) -> &str {
        // Only whole characters of `str`s were copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or(PREFIX)
    }
}

/// Logs `message` as a panic, at error level.
pub fn log_panic(message: fmt::Arguments<'_>) {
    crate::host::error(Line::format(message).as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let long: String = "é".repeat(MAX_LINE);
        let line = Line::format(format_args!("panicked at {long}"));
        let text = line.as_str();
        assert!(text.starts_with("plugin panicked at éé"));
        assert!(
            text.len() <= MAX_LINE && text.len() > MAX_LINE - 2,
            "{}",
            text.len()
        );
        assert!(text.ends_with('é'));
    }

    #[test]
    fn a_short_message_is_kept_whole() {
        let line = Line::format(format_args!(
            "panicked at src/lib.rs:{}:9:\nindex out of range",
            7
        ));
        assert_eq!(
            line.as_str(),
            "plugin panicked at src/lib.rs:7:9:\nindex out of range"
        );
    }
}
