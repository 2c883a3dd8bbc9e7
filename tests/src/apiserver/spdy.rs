//! SPDY/3.1 as `moby/spdystream` speaks it (the transport of `kubectl exec`
//! and `port-forward` before WebSockets): frame encoding and decoding, with
//! header blocks compressed by one zlib stream per direction seeded with the
//! SPDY/3 dictionary.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

mod dictionary;
mod session;
mod zlib;

pub(crate) use session::{SpdySession, SpdyStream, SpdyWriter};
pub(crate) use zlib::{Deflater, Inflater};

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// `FLAG_FIN` on control and data frames.
pub(crate) const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status `CANCEL`.
pub(crate) const RST_CANCEL: u32 = 5;

/// Header name/value pairs; a name with several values appears once per value.
pub(crate) type Headers = Vec<(String, String)>;

/// A decoded SPDY/3.1 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define; ignored.
    Unknown,
}

pub(super) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Serializes a name/value header block (SPDY/3: 32-bit lengths; several
/// values of one name joined by NUL).
fn encode_block(headers: &Headers) -> Vec<u8> {
    let mut merged: Vec<(String, Vec<&str>)> = Vec::new();
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        match merged.iter_mut().find(|(mk, _)| *mk == k) {
            Some((_, vs)) => vs.push(v),
            None => merged.push((k, vec![v])),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(merged.len() as u32).to_be_bytes());
    for (k, vs) in merged {
        let v = vs.join("\0");
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn decode_block(block: &[u8]) -> io::Result<Headers> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        let s = block
            .get(pos..pos + n)
            .ok_or_else(|| invalid("truncated header block"))?;
        pos += n;
        Ok(s)
    };
    let count = be32(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[0x80, 0x03]);
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// Encodes a frame; header blocks go through `deflater`.
pub(crate) fn encode(frame: &Frame, deflater: &mut Deflater) -> io::Result<Vec<u8>> {
    let with_block = |id: u32, extra: &[u8], headers: &Headers, d: &mut Deflater| {
        let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
        p.extend_from_slice(extra);
        p.extend(d.deflate(&encode_block(headers))?);
        Ok::<_, io::Error>(p)
    };
    Ok(match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
        } => {
            let p = with_block(*stream_id, &[0, 0, 0, 0, 0, 0], headers, deflater)?;
            control(TYPE_SYN_STREAM, *flags, &p)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => control(
            TYPE_SYN_REPLY,
            *flags,
            &with_block(*stream_id, &[], headers, deflater)?,
        ),
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => control(
            TYPE_HEADERS,
            *flags,
            &with_block(*stream_id, &[], headers, deflater)?,
        ),
        Frame::RstStream { stream_id, status } => {
            let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(TYPE_RST_STREAM, 0, &p)
        }
        Frame::Settings => control(TYPE_SETTINGS, 0, &0u32.to_be_bytes()),
        Frame::Ping { id } => control(TYPE_PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            let mut p = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(TYPE_GOAWAY, 0, &p)
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            control(TYPE_WINDOW_UPDATE, 0, &p)
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let len = data.len() as u32;
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(*flags);
            out.extend_from_slice(&len.to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
        Frame::Unknown => Vec::new(),
    })
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    inflater: &mut Inflater,
) -> io::Result<Option<Frame>> {
    let mut hdr = [0u8; 8];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = hdr[4];
    let len = u32::from_be_bytes([0, hdr[5], hdr[6], hdr[7]]) as usize;
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    if hdr[0] & 0x80 == 0 {
        return Ok(Some(Frame::Data {
            stream_id: be32(&hdr[..4]) & 0x7fff_ffff,
            flags,
            data: Bytes::from(p),
        }));
    }
    let version = u16::from_be_bytes([hdr[0] & 0x7f, hdr[1]]);
    if version != 3 {
        return Err(invalid(format!("unsupported SPDY version {version}")));
    }
    let need = |n: usize| {
        if len < n {
            Err(invalid("short control frame"))
        } else {
            Ok(())
        }
    };
    let kind = u16::from_be_bytes([hdr[2], hdr[3]]);
    let frame = match kind {
        TYPE_SYN_STREAM => {
            need(10)?;
            let headers = decode_block(&inflater.inflate(&p[10..])?)?;
            Frame::SynStream {
                stream_id: be32(&p) & 0x7fff_ffff,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            need(4)?;
            // Always inflate, to keep the connection's zlib state in step.
            let headers = decode_block(&inflater.inflate(&p[4..])?)?;
            let stream_id = be32(&p) & 0x7fff_ffff;
            if kind == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => {
            need(8)?;
            Frame::RstStream {
                stream_id: be32(&p) & 0x7fff_ffff,
                status: be32(&p[4..]),
            }
        }
        TYPE_SETTINGS => Frame::Settings,
        TYPE_PING => {
            need(4)?;
            Frame::Ping { id: be32(&p) }
        }
        TYPE_GOAWAY => {
            need(8)?;
            Frame::GoAway {
                last_good_stream_id: be32(&p) & 0x7fff_ffff,
                status: be32(&p[4..]),
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(8)?;
            Frame::WindowUpdate {
                stream_id: be32(&p) & 0x7fff_ffff,
                delta: be32(&p[4..]) & 0x7fff_ffff,
            }
        }
        _ => Frame::Unknown,
    };
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_shared_zlib_streams() {
        let mut d = Deflater::new().unwrap();
        let mut i = Inflater::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "80".into()),
                ],
            },
            Frame::SynStream {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("x".into(), "a".into()),
                    ("x".into(), "b".into()),
                ],
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi"),
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode(f, &mut d).unwrap());
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r, &mut i).await.unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r, &mut i).await.unwrap(), None);
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        // zlib's Adler-32 of the SPDY/3 dictionary, as carried in DICTID.
        let (mut a, mut b) = (1u32, 0u32);
        for &x in dictionary::SPDY3 {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(dictionary::SPDY3.len(), 1423);
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }
}
