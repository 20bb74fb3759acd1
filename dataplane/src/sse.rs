//! Server-sent events, as the relay sees them: the gate that holds a
//! stream's role-only opening until its first token (so a stream that fails
//! before it can fail over), the tail that tells a clean `[DONE]` end, and the
//! event framing and probes they (and the usage strip) share.
//! All are bounded and never buffer a stream whole.
//!
//! Framing follows the SSE spec: a line ends with CRLF, LF or CR, and an event
//! ends at a blank line. Event payloads are read by parsing their JSON (any
//! whitespace, any key order), never by byte pattern.

use memchr::memmem::Finder;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::LazyLock;

#[doc(hidden)]
pub mod synth;

/// Where the first complete event of a buffer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventEnd {
    /// End of the event's lines (the blank line that ends it starts here).
    pub content: usize,
    /// Just past the blank line's terminator.
    pub end: usize,
    /// The blank line ended with a CR that is the buffer's last byte: an LF
    /// may follow and belong to it.
    pub cr_tail: bool,
}

/// The first complete event of `buf`, if there is one. A non-blank line that
/// ends with a CR at the end of `buf` is not complete yet (an LF may follow).
pub fn next_event(buf: &[u8]) -> Option<EventEnd> {
    let mut line_start = 0;
    loop {
        let p = line_start + memchr::memchr2(b'\r', b'\n', &buf[line_start..])?;
        let (len, cr_tail) = match (buf[p], buf.get(p + 1)) {
            (b'\n', _) => (1, false),
            (_, Some(b'\n')) => (2, false),
            (_, Some(_)) => (1, false),
            (_, None) => (1, true),
        };
        if p == line_start {
            return Some(EventEnd { content: p, end: p + len, cr_tail });
        }
        if cr_tail {
            return None;
        }
        line_start = p + len;
    }
}

/// The lines of an event's content (any line ending).
pub fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = content;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(p) = memchr::memchr2(b'\r', b'\n', rest) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..p];
        let len = if rest[p] == b'\r' && rest.get(p + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[p + len..];
        Some(line)
    })
}

/// The value of a `data` field line (`data`, `data:x`, `data: x`).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    if line == b"data" {
        return Some(b"");
    }
    let v = line.strip_prefix(b"data:")?;
    Some(v.strip_prefix(b" ").unwrap_or(v))
}

/// An event's data: its `data` lines joined by LF (borrowed when there is
/// one, the usual case). `None` for an event without data (a comment).
pub fn event_data(content: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut found: Option<Cow<'_, [u8]>> = None;
    for v in lines(content).filter_map(data_value) {
        found = Some(match found {
            None => Cow::Borrowed(v),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(v);
                Cow::Owned(joined)
            }
        });
    }
    found
}

/// Accepts any JSON object (and nothing else), skipping its contents.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

/// Whether an event's data is a usage-only chunk: `"choices": []` and a
/// `usage` object (what `stream_options.include_usage` adds at the end).
pub fn is_usage_only(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        // `IgnoredAny` has no size: the Vec never allocates.
        choices: Option<Vec<IgnoredAny>>,
        usage: Option<AnyObject>,
    }
    // Cheap exact pre-checks: the key `usage` appears as is or escaped, and
    // some array is empty.
    // Searchers built once: `memmem::find` would build one per call, per event.
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"usage"));
    static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
    let named = USAGE.find(data).is_some() || ESCAPE.find(data).is_some();
    if !named || !has_empty_array(data) {
        return false;
    }
    match serde_json::from_slice::<Probe>(data) {
        Ok(p) => p.choices.is_some_and(|c| c.is_empty()) && p.usage.is_some(),
        Err(_) => false,
    }
}

/// Whether `data` has a `[` followed by JSON whitespace and `]`.
fn has_empty_array(data: &[u8]) -> bool {
    memchr::memchr_iter(b'[', data)
        .any(|i| data[i + 1..].iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) == Some(&b']'))
}

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
        let mut used = 0;
        let mut verdict = Gate::Hold;
        // A CR ending an event may be followed by an LF: that reads as one
        // more blank line, an empty event, which holds.
        while let Some(ev) = next_event(&self.pending[used..]) {
            verdict = classify(&self.pending[used..used + ev.content]);
            used += ev.end;
            if !matches!(verdict, Gate::Hold) {
                break;
            }
        }
        self.pending.drain(..used);
        verdict
    }
}

/// One SSE event (its lines), before any token: an opening that only sets the
/// role, a comment or a blank holds; an error fails; anything else releases.
pub fn classify(event: &[u8]) -> Gate {
    #[derive(Deserialize)]
    struct Probe<'a> {
        error: Option<IgnoredAny>,
        /// Anthropic's event type: `message_start`, `ping` and
        /// `content_block_start` come before the first token.
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        choices: Option<Vec<Choice<'a>>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
        finish_reason: Option<IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        role: Option<IgnoredAny>,
        #[serde(borrow)]
        content: Option<Cow<'a, str>>,
        tool_calls: Option<IgnoredAny>,
        function_call: Option<IgnoredAny>,
    }
    let Some(data) = event_data(event) else {
        return Gate::Hold;
    };
    let Ok(p) = serde_json::from_slice::<Probe<'_>>(&data) else {
        // `[DONE]`, or anything that is not a chunk we know: let it through.
        return Gate::Release;
    };
    if p.error.is_some() {
        return Gate::Fail(String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned());
    }
    if matches!(p.kind.as_deref(), Some("message_start" | "ping" | "content_block_start")) {
        return Gate::Hold;
    }
    let role_only = |c: &Choice<'_>| {
        c.finish_reason.is_none()
            && c.delta.as_ref().is_some_and(|d| {
                d.role.is_some()
                    && d.tool_calls.is_none()
                    && d.function_call.is_none()
                    && d.content.as_deref().is_none_or(str::is_empty)
            })
    };
    match p.choices {
        Some(c) if !c.is_empty() && c.iter().all(role_only) => Gate::Hold,
        _ => Gate::Release,
    }
}

/// The last bytes of a stream's payload, to tell a clean `[DONE]` ending.
#[derive(Default)]
pub struct StreamTail {
    buf: [u8; 32],
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

    /// The stream's last data is `[DONE]` (then any line endings: LF, CRLF, CR).
    pub fn ends_with_done(&self) -> bool {
        let t = &self.buf[..self.len];
        let end = t.iter().rposition(|b| !matches!(b, b'\r' | b'\n')).map_or(0, |i| i + 1);
        t[..end].ends_with(b"[DONE]")
    }

    /// The stream's last event is Anthropic's `message_stop`
    /// (`data: {"type":"message_stop"}`, any spacing and line endings): a
    /// Messages stream that finished.
    pub fn ends_with_message_stop(&self) -> bool {
        let t = &self.buf[..self.len];
        let end = t.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        let Some(t) = t[..end].strip_suffix(b"}") else { return false };
        let end = t.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        t[..end].ends_with(b"\"message_stop\"")
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
    fn the_gate_reads_spaced_json_in_any_key_order() {
        let role = r#"{ "choices" : [ { "finish_reason" : null, "delta" : { "content" : "", "role" : "assistant" }, "index" : 0 } ], "id" : "x" }"#;
        assert!(matches!(StreamGate::default().feed(&ev(role)), Gate::Hold));
        let error = r#"{ "error" : { "message" : "overloaded" } }"#;
        assert!(matches!(StreamGate::default().feed(&ev(error)), Gate::Fail(_)));
        let token = r#"{ "choices" : [ { "delta" : { "content" : "hi" } } ] }"#;
        assert!(matches!(StreamGate::default().feed(&ev(token)), Gate::Release));
    }

    #[test]
    fn events_end_at_a_blank_line_with_any_line_ending() {
        let role = r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        let token = r#"{"choices":[{"delta":{"content":"hi"}}]}"#;
        for nl in ["\n", "\r\n", "\r"] {
            let stream = format!("data: {role}{nl}{nl}: comment{nl}{nl}data: {token}{nl}{nl}");
            // Whole, and a byte at a time: held until the token, then released.
            let mut g = StreamGate::default();
            let verdicts: Vec<bool> =
                stream.as_bytes().iter().map(|b| matches!(g.feed(&[*b]), Gate::Release)).collect();
            assert_eq!(verdicts.iter().filter(|r| **r).count(), 1, "{nl:?}");
            // At the token's blank line (its CR, for CRLF: the content is known).
            let at = verdicts.iter().position(|r| *r).unwrap();
            assert!(at + nl.len() >= stream.len(), "released at the token's end ({nl:?})");
            assert!(matches!(StreamGate::default().feed(stream.as_bytes()), Gate::Release), "{nl:?}");
            let opening = format!("data: {role}{nl}{nl}");
            assert!(matches!(StreamGate::default().feed(opening.as_bytes()), Gate::Hold), "{nl:?}");
        }
    }

    #[test]
    fn a_line_ending_in_cr_waits_for_a_possible_lf() {
        assert_eq!(next_event(b"data: x\r"), None);
        assert_eq!(next_event(b"data: x\r\n"), None);
        assert_eq!(next_event(b"data: x\r\n\r"), Some(EventEnd { content: 9, end: 10, cr_tail: true }));
        assert_eq!(next_event(b"data: x\r\n\r\nz"), Some(EventEnd { content: 9, end: 11, cr_tail: false }));
        assert_eq!(next_event(b"data: x\r\rz"), Some(EventEnd { content: 8, end: 9, cr_tail: false }));
        assert_eq!(next_event(b"data: x\n\n"), Some(EventEnd { content: 8, end: 9, cr_tail: false }));
        let content = b"data: a\r\ndata:b\rdata\nid: 1";
        assert_eq!(event_data(content).as_deref(), Some(&b"a\nb\n"[..]));
        assert_eq!(event_data(b": only a comment"), None);
    }

    #[test]
    fn a_usage_only_chunk_is_recognised_by_parsing() {
        for data in [
            r#"{"id":"x","choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"id": "x", "choices": [], "usage": {"prompt_tokens": 1}}"#,
            r#"{ "usage" : { } , "choices" : [ ] }"#,
            "{\r\n\t\"choices\":[\n],\"usage\":{\"total_tokens\":3}}",
            r#"{"\u0075sage":{"a":1},"choices":[]}"#,
        ] {
            assert!(is_usage_only(data.as_bytes()), "{data}");
        }
        for data in [
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#,
            r#"{"choices":[],"usage":null}"#,
            r#"{"choices":[{"delta":{}}],"usage":{"total_tokens":3}}"#,
            r#"{"choices":[],"usage":5}"#,
            r#"{"choices":[],"note":"usage"}"#,
            r#"{"choices":[],"usage":{},"choices":[]}"#,
            "[DONE]",
            r#"{"content":"\"choices\":[],\"usage\":{}"}"#,
        ] {
            assert!(!is_usage_only(data.as_bytes()), "{data}");
        }
    }

    #[test]
    fn the_gate_holds_an_anthropic_opening() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5}}}\n\n";
        let block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        let ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
        let mut g = StreamGate::default();
        assert!(matches!(g.feed(start.as_bytes()), Gate::Hold));
        assert!(matches!(g.feed(block.as_bytes()), Gate::Hold));
        assert!(matches!(g.feed(ping.as_bytes()), Gate::Hold));
        assert!(matches!(g.feed(delta.as_bytes()), Gate::Release));
        let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert!(matches!(StreamGate::default().feed(err.as_bytes()), Gate::Fail(_)));
    }

    #[test]
    fn the_tail_knows_a_message_stop() {
        for end in ["{\"type\":\"message_stop\"}\n\n", "{ \"type\" : \"message_stop\" }\r\n\r\n"] {
            let mut t = StreamTail::default();
            t.push(b"event: message_stop\ndata: ");
            for b in end.as_bytes() {
                t.push(&[*b]);
            }
            assert!(t.ends_with_message_stop(), "{end:?}");
        }
        let mut t = StreamTail::default();
        t.push(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n");
        assert!(!t.ends_with_message_stop());
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
        for end in ["\r\n\r\n", "\r\r", "\n"] {
            let mut t = StreamTail::default();
            t.push(format!("data: [DONE]{end}").as_bytes());
            assert!(t.ends_with_done(), "{end:?}");
        }
    }
}
