//! Body filter "deframe": the upstream's body framing taken off — a
//! Content-Length counted down, a chunked body decoded in place, a
//! close-delimited body read to the end — so the filters after it see the
//! payload alone.

use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::http::head::BodyFraming;
use std::ops::Range;

pub struct Deframer {
    framing: BodyFraming,
    decoder: ChunkedDecoder,
    /// Bytes still to come of a Content-Length body.
    remaining: u64,
    /// The body is complete.
    pub done: bool,
    /// The upstream closed (the end of a close-delimited body).
    pub eof: bool,
    /// Bytes past the end of the response: the upstream is confused; its
    /// connection is not reused.
    pub surplus: bool,
    /// The upstream closed after `[DONE]`: the stream is over (a normal end),
    /// the connection is not reused.
    pub gone_after_done: bool,
}

impl Deframer {
    pub fn new(framing: BodyFraming) -> Deframer {
        Deframer {
            framing,
            decoder: ChunkedDecoder::new(),
            remaining: match framing {
                BodyFraming::Length(n) => n,
                _ => 0,
            },
            done: matches!(framing, BodyFraming::None | BodyFraming::Length(0)),
            eof: false,
            surplus: false,
            gone_after_done: false,
        }
    }

    /// The payload among the bytes `buf[pos..]` read from the upstream (a
    /// chunked body is decoded in place, so the range may be shorter).
    pub fn payload(&mut self, buf: &mut [u8], pos: usize) -> Result<Range<usize>, ChunkedError> {
        let end = buf.len();
        if self.gone_after_done {
            self.done = true;
            return Ok(pos..pos);
        }
        Ok(match self.framing {
            BodyFraming::Chunked => {
                let (mut rp, mut wp) = (pos, pos);
                let d = self.decoder.decode(buf, &mut rp, end, &mut wp)?;
                self.done = d;
                self.surplus |= d && rp < end;
                pos..wp
            }
            BodyFraming::Length(_) => {
                let n = ((end - pos) as u64).min(self.remaining) as usize;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.done = true;
                    self.surplus |= end > pos + n;
                }
                pos..pos + n
            }
            BodyFraming::Close => {
                self.done = self.eof;
                pos..end
            }
            BodyFraming::None => {
                self.surplus |= end > pos;
                pos..pos
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framing: BodyFraming, reads: &[&[u8]]) -> (Vec<u8>, bool, bool) {
        let mut d = Deframer::new(framing);
        let mut got = Vec::new();
        for r in reads {
            let mut buf = r.to_vec();
            let range = d.payload(&mut buf, 0).unwrap();
            got.extend_from_slice(&buf[range]);
        }
        (got, d.done, d.surplus)
    }

    #[test]
    fn content_length_counts_down_and_notes_surplus() {
        assert_eq!(all(BodyFraming::Length(5), &[b"he", b"llo"]), (b"hello".to_vec(), true, false));
        assert_eq!(all(BodyFraming::Length(3), &[b"hello"]), (b"hel".to_vec(), true, true));
        assert_eq!(all(BodyFraming::Length(0), &[]), (Vec::new(), true, false));
    }

    #[test]
    fn chunked_is_decoded_across_any_split() {
        let wire = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            // The relay keeps undecoded bytes; here each read is whole up to `cut`.
            let mut d = Deframer::new(BodyFraming::Chunked);
            let mut buf = wire[..cut].to_vec();
            let mut got = Vec::new();
            let r = d.payload(&mut buf, 0).unwrap();
            got.extend_from_slice(&buf[r]);
            let mut rest = wire[cut..].to_vec();
            let r = d.payload(&mut rest, 0).unwrap();
            got.extend_from_slice(&rest[r]);
            assert_eq!(got, b"hello world", "cut at {cut}");
            assert!(d.done);
        }
    }

    #[test]
    fn close_delimited_ends_at_eof_and_none_has_no_body() {
        let mut d = Deframer::new(BodyFraming::Close);
        let mut buf = b"abc".to_vec();
        assert_eq!(d.payload(&mut buf, 0).unwrap(), 0..3);
        assert!(!d.done);
        d.eof = true;
        let mut empty = Vec::new();
        assert_eq!(d.payload(&mut empty, 0).unwrap(), 0..0);
        assert!(d.done);
        assert_eq!(all(BodyFraming::None, &[b"x"]), (Vec::new(), true, true));
    }
}
