//! An incremental, in-place decoder for `Transfer-Encoding: chunked`.
//!
//! It is fed whatever bytes have arrived, in any split, and moves payload bytes
//! down over the framing in the same buffer (payload is never longer than the
//! framed bytes it came from), so decoding copies each payload byte at most
//! once and allocates nothing. It is strict: CRLF only, hex sizes of at most 15
//! digits, bounded size lines and trailers.

const MAX_SIZE_LINE_BYTES: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// The framing is not valid chunked encoding.
    Malformed(&'static str),
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkedError::Malformed(what) => write!(f, "malformed chunked encoding: {what}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeExt,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    line_bytes: usize,
    trailer_bytes: usize,
    remaining: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size, size: 0, digits: 0, line_bytes: 0, trailer_bytes: 0, remaining: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode `buf[*r..end]`, moving payload bytes to `buf[*w..]` (`*w <= *r`).
    /// On return `*r` is where decoding stopped (`end`, or just past the final
    /// CRLF when the body is complete) and `*w` is the end of the payload.
    /// Returns `Ok(true)` once the whole body has been decoded.
    pub fn decode(&mut self, buf: &mut [u8], r: &mut usize, end: usize, w: &mut usize) -> Result<bool, ChunkedError> {
        debug_assert!(*w <= *r && end <= buf.len());
        while *r < end {
            if self.state == State::Data {
                let avail = (end - *r) as u64;
                let n = avail.min(self.remaining) as usize;
                if *w != *r {
                    buf.copy_within(*r..*r + n, *w);
                }
                *r += n;
                *w += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[*r];
            *r += 1;
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 15 {
                            return Err(ChunkedError::Malformed("chunk size too large"));
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size * 16 + d;
                        self.digits += 1;
                        self.line_bytes += 1;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => {
                        self.state = State::SizeExt;
                        self.line_bytes += 1;
                    }
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(ChunkedError::Malformed("bad chunk size")),
                },
                State::SizeExt => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(ChunkedError::Malformed("bare LF in chunk size line")),
                    _ => {
                        self.line_bytes += 1;
                        if self.line_bytes > MAX_SIZE_LINE_BYTES {
                            return Err(ChunkedError::Malformed("chunk size line too long"));
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected LF after chunk size"));
                    }
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                    self.size = 0;
                    self.digits = 0;
                    self.line_bytes = 0;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkedError::Malformed("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected LF after chunk data"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::FinalLf,
                    b'\n' => return Err(ChunkedError::Malformed("bare LF in trailer")),
                    _ => {
                        self.bump_trailer()?;
                        self.state = State::TrailerLine;
                    }
                },
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(ChunkedError::Malformed("bare LF in trailer")),
                    _ => self.bump_trailer()?,
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected LF in trailer"));
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed("expected final LF"));
                    }
                    self.state = State::Done;
                    return Ok(true);
                }
                State::Data | State::Done => return Ok(true),
            }
        }
        Ok(self.state == State::Done)
    }

    fn bump_trailer(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkedError::Malformed("trailers too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `step` bytes; returns payload and bytes consumed.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut buf = input.to_vec();
        let mut dec = ChunkedDecoder::new();
        let (mut r, mut w) = (0, 0);
        let mut done = false;
        while r < buf.len() && !done {
            let end = (r + step).min(buf.len());
            done = dec.decode(&mut buf, &mut r, end, &mut w)?;
        }
        Ok((buf[..w].to_vec(), r, done))
    }

    #[test]
    fn decodes_any_split() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (payload, consumed, done) = decode_in_steps(input, step).unwrap();
            assert!(done, "step {step}");
            assert_eq!(payload, b"hello 0123456789");
            assert_eq!(&input[consumed..], b"NEXT");
        }
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (payload, _, done) = decode_in_steps(b"5\r\nhel", 100).unwrap();
        assert!(!done);
        assert_eq!(payload, b"hel");
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\n",
            b"-1\r\n",
        ] {
            assert!(decode_in_steps(bad, 3).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE_BYTES + 1));
        assert!(decode_in_steps(&long_ext, 1000).is_err());
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES + 1));
        assert!(decode_in_steps(&trailer, 1000).is_err());
    }
}
