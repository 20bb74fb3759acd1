//! Server-sent events, as the relay sees them: the gate that holds a
//! stream's role-only opening until its first token (so a stream that fails
//! before it can fail over), and the tail that tells a clean `[DONE]` end.
//! Both are bounded and never buffer a stream whole.

/// What the stream gate says about the events seen so far.
pub enum Gate {
    /// Only the role-only opening (or comments) so far: keep holding.
    Hold,
    /// A content token (or anything else real) arrived: send what is held.
    Release,
    /// An error event before any token.
    Fail(String),
}

/// Watches a stream's first events. Bounded: past `GATE_MAX_BYTES` it lets go.
#[derive(Default)]
pub struct StreamGate {
    pending: Vec<u8>,
    seen: usize,
}

pub const GATE_MAX_BYTES: usize = 64 * 1024;

impl StreamGate {
    pub fn feed(&mut self, payload: &[u8]) -> Gate {
        self.seen += payload.len();
        if self.seen > GATE_MAX_BYTES {
            return Gate::Release;
        }
        self.pending.extend_from_slice(payload);
        while let Some(i) = memchr::memmem::find(&self.pending, b"\n\n") {
            let verdict = classify(&self.pending[..i]);
            self.pending.drain(..i + 2);
            match verdict {
                Gate::Hold => {}
                other => return other,
            }
        }
        Gate::Hold
    }
}

/// One SSE event, before any token: an opening that only sets the role, a
/// comment or a blank holds; an error fails; anything else releases.
pub fn classify(event: &[u8]) -> Gate {
    let event = event.strip_suffix(b"\r").unwrap_or(event);
    let Some(data) = event.split(|&b| b == b'\n').find_map(|line| line.strip_prefix(b"data:")) else {
        return Gate::Hold;
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    let has = |needle: &[u8]| memchr::memmem::find(data, needle).is_some();
    if data.starts_with(b"{\"error\"") {
        return Gate::Fail(String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned());
    }
    let role_only = has(b"\"role\"")
        && !has(b"\"tool_calls\"")
        && !has(b"\"function_call\"")
        && !has(b"\"finish_reason\":\"")
        && (!has(b"\"content\"") || has(b"\"content\":\"\"") || has(b"\"content\":null"));
    if role_only {
        Gate::Hold
    } else {
        Gate::Release
    }
}

/// The last bytes of a stream's payload, to tell a clean `[DONE]` ending.
#[derive(Default)]
pub struct StreamTail {
    buf: [u8; 16],
    len: usize,
}

impl StreamTail {
    pub fn push(&mut self, bytes: &[u8]) {
        let cap = self.buf.len();
        if bytes.len() >= cap {
            self.buf.copy_from_slice(&bytes[bytes.len() - cap..]);
            self.len = cap;
        } else {
            let keep = (cap - bytes.len()).min(self.len);
            self.buf.copy_within(self.len - keep..self.len, 0);
            self.buf[keep..keep + bytes.len()].copy_from_slice(bytes);
            self.len = keep + bytes.len();
        }
    }

    pub fn ends_with_done(&self) -> bool {
        let t = &self.buf[..self.len];
        let t = t.strip_suffix(b"\n\n").or_else(|| t.strip_suffix(b"\r\n\r\n")).unwrap_or(t);
        t.ends_with(b"[DONE]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> Vec<u8> {
        format!("data: {data}\n\n").into_bytes()
    }

    #[test]
    fn the_gate_holds_only_the_opening() {
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        let token = r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let tool = r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"x"}]}}]}"#;
        let mut g = StreamGate::default();
        assert!(matches!(g.feed(&ev(role)), Gate::Hold));
        assert!(matches!(g.feed(b": keep-alive\n\n"), Gate::Hold));
        // A token split across reads.
        let t = ev(token);
        assert!(matches!(g.feed(&t[..10]), Gate::Hold));
        assert!(matches!(g.feed(&t[10..]), Gate::Release));
        assert!(matches!(StreamGate::default().feed(&ev(tool)), Gate::Release));
        assert!(matches!(StreamGate::default().feed(&ev("[DONE]")), Gate::Release));
        assert!(matches!(StreamGate::default().feed(&ev(r#"{"error":{"message":"x"}}"#)), Gate::Fail(_)));
        let mut big = StreamGate::default();
        assert!(matches!(big.feed(&vec![b' '; GATE_MAX_BYTES + 1]), Gate::Release));
    }

    #[test]
    fn the_tail_knows_a_clean_end() {
        let mut t = StreamTail::default();
        t.push(b"data: {\"x\":1}\n\ndata: [DO");
        assert!(!t.ends_with_done());
        t.push(b"NE]\n\n");
        assert!(t.ends_with_done());
        t.push(b"data: more\n\n");
        assert!(!t.ends_with_done());
        let mut t = StreamTail::default();
        for b in b"data: [DONE]\n\n" {
            t.push(&[*b]);
        }
        assert!(t.ends_with_done());
    }
}
