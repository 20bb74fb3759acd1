//! HTTP/1.1 framing: request and response heads (httparse), the chunked body
//! decoder, and reads and writes with deadlines.
//!
//! Nothing here allocates per byte: heads are parsed in place from the
//! connection's read buffer, and chunked bodies are decoded in place.

pub mod chunked;
pub mod head;
pub mod io;

/// Index just past the `\r\n\r\n` that ends a head in `buf`, searching from
/// `from` (the caller passes where the previous search stopped, so a head that
/// arrives in pieces is scanned once).
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    // Built once: `memmem::find` would build a searcher on every call (two
    // heads per proxied request).
    static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    let start = from.saturating_sub(3);
    HEAD_END.find(&buf[start.min(buf.len())..]).map(|i| start + i + 4)
}

#[cfg(test)]
mod tests {
    use super::find_head_end;

    #[test]
    fn finds_the_end_across_resumed_searches() {
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(find_head_end(buf, 0), Some(27));
        // A search resumed at any earlier point still finds it, even mid-terminator.
        for from in 0..27 {
            assert_eq!(find_head_end(buf, from), Some(27));
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(find_head_end(b"", 10), None);
    }
}
