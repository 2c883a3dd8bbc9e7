//! Header-block compression: one zlib stream per direction for the whole
//! connection, seeded with the SPDY/3 dictionary, sync-flushed per frame.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::{dictionary, invalid};

/// Inflates header blocks; one per connection direction, since SPDY's zlib
/// stream spans all frames.
pub(crate) struct Inflater(Decompress);

impl Inflater {
    pub fn new() -> Inflater {
        Inflater(Decompress::new(true))
    }

    pub(super) fn inflate(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let (in0, out0) = (self.0.total_in(), self.0.total_out());
            let res = self
                .0
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.0.total_in() - in0) as usize;
            let produced = self.0.total_out() - out0;
            match res {
                Ok(_) => {}
                // The first block asks for the dictionary after its zlib header.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(dictionary::SPDY3)
                        .map_err(|e| invalid(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(invalid(format!("header block: {e}"))),
            }
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if produced == 0 && pos >= input.len() {
                return Ok(out);
            }
        }
    }
}

/// Deflates header blocks with a sync flush per frame, like Go's framer.
pub(crate) struct Deflater(Compress);

impl Deflater {
    pub fn new() -> io::Result<Deflater> {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(dictionary::SPDY3)
            .map_err(|e| invalid(format!("header dictionary: {e}")))?;
        Ok(Deflater(c))
    }

    pub(super) fn deflate(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let in0 = self.0.total_in();
            self.0
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| invalid(format!("header block: {e}")))?;
            pos += (self.0.total_in() - in0) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}
