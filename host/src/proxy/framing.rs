//! A guard against request smuggling on HTTP/1.1 connections.
//!
//! hyper resolves a request that carries both `Content-Length` and
//! `Transfer-Encoding` the way RFC 9112 allows (chunked wins, the length is
//! dropped), so the handler never sees the conflict. A proxy should refuse such a
//! request outright: the next hop may frame it differently. This wrapper watches
//! the bytes hyper reads, follows HTTP/1.1 framing (heads, fixed-length and chunked
//! bodies) and records which requests, by position on the connection, had
//! conflicting framing; the handler answers those with 400.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Requests (0-based position on the connection) whose framing conflicted.
#[derive(Debug, Clone, Default)]
pub struct Conflicts(Arc<Mutex<HashSet<u64>>>);

impl Conflicts {
    /// True if request number `index` carried both framings.
    pub fn contains(&self, index: u64) -> bool {
        self.0.lock().map(|s| s.contains(&index)).unwrap_or(true)
    }

    fn insert(&self, index: u64) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(index);
        }
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping a fixed-length body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data plus its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk.
    Trailers(Vec<u8>),
    /// No longer tracking (upgrade, or bytes hyper itself will refuse).
    Off,
}

/// An I/O wrapper that tracks HTTP/1.1 request framing on reads.
pub struct FramingGuard<S> {
    inner: S,
    state: State,
    requests: u64,
    conflicts: Conflicts,
    max_head: usize,
}

impl<S> FramingGuard<S> {
    /// Wraps `inner`; heads larger than `max_head` stop the tracking (hyper refuses them).
    pub fn new(inner: S, max_head: usize) -> (FramingGuard<S>, Conflicts) {
        let conflicts = Conflicts::default();
        let guard = FramingGuard {
            inner,
            state: State::Head(Vec::new()),
            requests: 0,
            conflicts: conflicts.clone(),
            max_head,
        };
        (guard, conflicts)
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Off);
            self.state = match state {
                State::Off => return,
                State::Body(n) | State::ChunkData(n) => {
                    let take = (data.len() as u64).min(n) as usize;
                    data = &data[take..];
                    let left = n - take as u64;
                    match (left, matches!(state, State::ChunkData(_))) {
                        (0, true) => State::ChunkSize(Vec::new()),
                        (0, false) => State::Head(Vec::new()),
                        (l, true) => State::ChunkData(l),
                        (l, false) => State::Body(l),
                    }
                }
                State::Head(mut buf) => {
                    let (consumed, done) = take_until(&mut buf, data, b"\r\n\r\n");
                    data = &data[consumed..];
                    if !done {
                        if buf.len() > self.max_head {
                            State::Off
                        } else {
                            State::Head(buf)
                        }
                    } else {
                        // Stray CRLFs before a request line are tolerated by hyper;
                        // skip them and read the head that follows, if it is here.
                        let mut head = buf.as_slice();
                        while let Some(rest) = head.strip_prefix(b"\r\n") {
                            head = rest;
                        }
                        if head.is_empty() {
                            State::Head(Vec::new())
                        } else {
                            self.head(head)
                        }
                    }
                }
                State::ChunkSize(mut buf) => {
                    let (consumed, done) = take_until(&mut buf, data, b"\r\n");
                    data = &data[consumed..];
                    if !done {
                        if buf.len() > 1024 {
                            State::Off
                        } else {
                            State::ChunkSize(buf)
                        }
                    } else {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned();
                        let hex = line.split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(hex, 16) {
                            Ok(0) => State::Trailers(Vec::new()),
                            Ok(n) => State::ChunkData(n.saturating_add(2)),
                            Err(_) => State::Off,
                        }
                    }
                }
                State::Trailers(mut buf) => {
                    let (consumed, done) = take_until(&mut buf, data, b"\r\n");
                    data = &data[consumed..];
                    match (done, buf.len()) {
                        (true, 2) => State::Head(Vec::new()),
                        (true, _) => State::Trailers(Vec::new()),
                        (false, n) if n > self.max_head => State::Off,
                        (false, _) => State::Trailers(buf),
                    }
                }
            };
        }
    }

    /// Decides what follows a complete head, and records a conflict.
    fn head(&mut self, buf: &[u8]) -> State {
        let index = self.requests;
        self.requests += 1;
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(buf), Ok(httparse::Status::Complete(_))) {
            return State::Off;
        }
        let mut length = None;
        let (mut te, mut chunked, mut upgrade) = (false, false, false);
        for h in req.headers.iter() {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if h.name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok().or(Some(0));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = value.trim().ends_with("chunked");
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if te && length.is_some() {
            self.conflicts.insert(index);
            return State::Off; // hyper closes the connection after this request
        }
        if upgrade || req.method == Some("CONNECT") {
            return State::Off;
        }
        match (chunked, length) {
            (true, _) => State::ChunkSize(Vec::new()),
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head(Vec::new()),
        }
    }
}

/// Appends bytes of `data` to `buf` up to and including `delim`; returns how many
/// bytes were taken and whether the delimiter was found.
fn take_until(buf: &mut Vec<u8>, data: &[u8], delim: &[u8]) -> (usize, bool) {
    for (i, byte) in data.iter().enumerate() {
        buf.push(*byte);
        if buf.ends_with(delim) {
            return (i + 1, true);
        }
    }
    (data.len(), false)
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let fresh = buf.filled()[before..].to_vec();
            self.observe(&fresh);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (u64, Vec<u64>) {
        let (mut g, conflicts) = FramingGuard::new((), 64 * 1024);
        for c in chunks {
            g.observe(c);
        }
        let mut found: Vec<u64> = (0..g.requests).filter(|i| conflicts.contains(*i)).collect();
        found.sort();
        (g.requests, found)
    }

    #[test]
    fn follows_fixed_and_chunked_bodies_across_reads() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in [1usize, 3, 7, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(split).collect();
            assert_eq!(run(&chunks), (3, vec![]), "split {split}");
        }
    }

    #[test]
    fn flags_both_framings_by_position() {
        let stream = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(run(&[stream]), (2, vec![1]));
        let reversed =
            b"POST /bad HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(run(&[reversed]), (1, vec![0]));
    }

    #[test]
    fn stray_crlfs_before_a_request_do_not_shift_the_count() {
        let stream = b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for split in [1usize, 2, 5, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(split).collect();
            assert_eq!(run(&chunks), (2, vec![1]), "split {split}");
        }
        let repeated =
            b"\r\n\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(&[repeated]), (2, vec![]));
    }

    #[test]
    fn body_bytes_that_look_like_requests_are_not_heads() {
        let inner = "POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let outer = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        );
        assert_eq!(run(&[outer.as_bytes()]), (1, vec![]));
    }
}
