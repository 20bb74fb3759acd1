//! Body filter "cache capture": a copy of a 200 body for the response cache,
//! kept while it fits the cache's entry size and dropped as soon as it does
//! not, stored when the body is complete.

pub struct Capture {
    kept: Option<Vec<u8>>,
    max: usize,
}

impl Capture {
    /// Capture at most `max` bytes.
    pub fn new(max: usize) -> Capture {
        Capture { kept: Some(Vec::new()), max }
    }

    pub fn feed(&mut self, payload: &[u8]) {
        if let Some(kept) = self.kept.as_mut() {
            if kept.len() + payload.len() <= self.max {
                kept.extend_from_slice(payload);
            } else {
                self.kept = None;
            }
        }
    }

    /// The body as the client got it, in place of the bytes captured (a held
    /// body the gateway completed, e.g. with its usage estimate).
    pub fn replace(&mut self, body: &[u8]) {
        if let Some(kept) = self.kept.as_mut() {
            kept.clear();
            kept.extend_from_slice(body);
        }
    }

    /// The whole body, unless it outgrew the bound.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.kept.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_body_that_fits_and_drops_one_that_does_not() {
        let mut c = Capture::new(8);
        c.feed(b"abcd");
        c.feed(b"efgh");
        assert_eq!(c.take().as_deref(), Some(&b"abcdefgh"[..]));
        let mut c = Capture::new(8);
        c.feed(b"abcd");
        c.feed(b"efghi");
        c.feed(b"j");
        assert_eq!(c.take(), None);
    }

    #[test]
    fn replace_swaps_in_the_body_the_client_got() {
        let mut c = Capture::new(4);
        c.feed(b"ab");
        c.replace(b"{\"usage\":1}");
        assert_eq!(c.take().as_deref(), Some(&b"{\"usage\":1}"[..]));
    }
}
