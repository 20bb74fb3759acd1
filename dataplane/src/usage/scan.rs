//! Token counts from bodies as they stream by, never buffered: the relay
//! feeds every upstream payload to a [`UsageScan`], which keeps a few bytes of
//! state between reads. It reads `usage.prompt_tokens` /
//! `completion_tokens` / `total_tokens` (the last seen wins: a stream's usage
//! chunk comes at its end), and measures the generated text (`content`,
//! `text`, `arguments` values) for an estimate when the upstream gives no usage.
//!
//! [`StreamFilter`] takes the usage-only chunk out of a stream whose client did
//! not ask for it (the gateway asked for it on the client's behalf), and
//! tells a complete stream from a truncated one.

use crate::sse::{event_data, is_usage_only, next_event};
use memchr::{memchr, memchr2};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Name {
    #[default]
    Other,
    Prompt,
    Completion,
    Total,
    /// Generated (or, in a request, given) text.
    Text,
    /// Why a choice stopped: a string value means the generation finished.
    Finish,
    /// Anthropic's `input_tokens` (cache reads and writes not included).
    Input,
    /// Anthropic's `cache_read_input_tokens`, OpenAI's `cached_tokens`.
    CacheRead,
    /// Anthropic's `cache_creation_input_tokens`.
    CacheWrite,
}

fn name_of(key: &[u8]) -> Name {
    match key {
        b"prompt_tokens" => Name::Prompt,
        b"completion_tokens" | b"output_tokens" => Name::Completion,
        b"total_tokens" => Name::Total,
        b"input_tokens" => Name::Input,
        b"cache_read_input_tokens" | b"cached_tokens" => Name::CacheRead,
        b"cache_creation_input_tokens" => Name::CacheWrite,
        // Anthropic's text and tool-input deltas, thinking and system prompt too.
        b"content" | b"text" | b"arguments" | b"prompt" | b"input" | b"partial_json" | b"thinking" | b"system" => {
            Name::Text
        }
        b"finish_reason" | b"stop_reason" => Name::Finish,
        _ => Name::Other,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum St {
    /// Between strings: skip to the next quote.
    #[default]
    Out,
    /// Inside a string that may be a key.
    Str,
    StrEscape,
    /// A string just closed: a `:` next makes it a key.
    AfterStr(Name),
    /// After `"known key":`, waiting for the value.
    Value(Name),
    Number(Name),
    /// Inside a text value: count its bytes.
    Text,
    TextEscape,
}

const KEY_MAX: usize = 28;

/// Streaming watcher of a JSON (or SSE-of-JSON) body. See the module docs.
#[derive(Default, Debug)]
pub struct UsageScan {
    st: St,
    key: [u8; KEY_MAX],
    key_len: usize,
    /// The current string is longer than any name we know, or escaped.
    key_other: bool,
    num: u64,
    text_len: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    /// Anthropic's `input_tokens`: the prompt tokens that were neither read
    /// from nor written to the prompt cache.
    pub input_tokens: Option<u64>,
    /// Prompt tokens read from the provider's prompt cache.
    pub cache_read_tokens: Option<u64>,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: Option<u64>,
    /// Non-empty text values seen (a stream sends about one token per chunk).
    pub text_fragments: u64,
    /// Bytes of text seen.
    pub text_bytes: u64,
    /// A `finish_reason` with a string value (not null) went by: the
    /// generation finished, as opposed to being cut short.
    pub finish_seen: bool,
}

impl UsageScan {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.st {
                St::Out => match memchr(b'"', data) {
                    None => return,
                    Some(i) => {
                        data = &data[i + 1..];
                        // Fast path: the whole string, unescaped, is in this read.
                        if let Some(end) = memchr2(b'"', b'\\', data) {
                            if data[end] == b'"' {
                                let name = if end <= KEY_MAX { name_of(&data[..end]) } else { Name::Other };
                                data = &data[end + 1..];
                                match data.first() {
                                    // A key: to its value if we want it.
                                    Some(b':') => {
                                        data = &data[1..];
                                        self.st = if name == Name::Other { St::Out } else { St::Value(name) };
                                    }
                                    // A value: keep scanning.
                                    Some(b) if !b.is_ascii_whitespace() => {}
                                    // The read ended, or whitespace: decide on the next byte.
                                    _ => self.st = St::AfterStr(name),
                                }
                                continue;
                            }
                        }
                        self.key_len = 0;
                        self.key_other = false;
                        self.st = St::Str;
                    }
                },
                St::Str => {
                    let i = memchr2(b'"', b'\\', data);
                    let part = &data[..i.unwrap_or(data.len())];
                    if !self.key_other {
                        if self.key_len + part.len() <= KEY_MAX {
                            self.key[self.key_len..self.key_len + part.len()].copy_from_slice(part);
                            self.key_len += part.len();
                        } else {
                            self.key_other = true;
                        }
                    }
                    let Some(i) = i else { return };
                    if data[i] == b'\\' {
                        self.key_other = true;
                        self.st = St::StrEscape;
                    } else {
                        let name = if self.key_other { Name::Other } else { name_of(&self.key[..self.key_len]) };
                        self.st = St::AfterStr(name);
                    }
                    data = &data[i + 1..];
                }
                St::StrEscape => {
                    data = &data[1..];
                    self.st = St::Str;
                }
                St::AfterStr(name) => {
                    let b = data[0];
                    if b.is_ascii_whitespace() {
                        data = &data[1..];
                    } else if b == b':' {
                        data = &data[1..];
                        self.st = if name == Name::Other { St::Out } else { St::Value(name) };
                    } else {
                        // It was a value, not a key.
                        self.st = St::Out;
                    }
                }
                St::Value(name) => {
                    let b = data[0];
                    if b.is_ascii_whitespace() {
                        data = &data[1..];
                    } else if b.is_ascii_digit()
                        && matches!(
                            name,
                            Name::Prompt
                                | Name::Completion
                                | Name::Total
                                | Name::Input
                                | Name::CacheRead
                                | Name::CacheWrite
                        )
                    {
                        self.num = 0;
                        self.st = St::Number(name);
                    } else if b == b'"' && name == Name::Text {
                        data = &data[1..];
                        self.text_len = 0;
                        self.st = St::Text;
                    } else if b == b'"' && name == Name::Finish {
                        // Read over the value as an unnamed string.
                        self.finish_seen = true;
                        data = &data[1..];
                        self.key_len = 0;
                        self.key_other = true;
                        self.st = St::Str;
                    } else {
                        self.st = St::Out;
                    }
                }
                St::Number(name) => {
                    let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
                    for &d in &data[..digits] {
                        self.num = self.num.saturating_mul(10).saturating_add((d - b'0') as u64);
                    }
                    data = &data[digits..];
                    if !data.is_empty() {
                        let slot = match name {
                            Name::Prompt => &mut self.prompt_tokens,
                            Name::Completion => &mut self.completion_tokens,
                            Name::Input => &mut self.input_tokens,
                            Name::CacheRead => &mut self.cache_read_tokens,
                            Name::CacheWrite => &mut self.cache_write_tokens,
                            _ => &mut self.total_tokens,
                        };
                        *slot = Some(self.num);
                        self.st = St::Out;
                    }
                }
                St::Text => {
                    let i = memchr2(b'"', b'\\', data);
                    let n = i.unwrap_or(data.len());
                    self.text_len += n as u64;
                    let Some(i) = i else { return };
                    if data[i] == b'\\' {
                        self.text_len += 1;
                        self.st = St::TextEscape;
                    } else {
                        if self.text_len > 0 {
                            self.text_fragments += 1;
                            self.text_bytes += self.text_len;
                        }
                        self.st = St::Out;
                    }
                    data = &data[i + 1..];
                }
                St::TextEscape => {
                    data = &data[1..];
                    self.text_len += 1;
                    self.st = St::Text;
                }
            }
        }
    }

    /// Whether the upstream reported usage.
    pub fn reported(&self) -> bool {
        self.prompt_tokens.is_some()
            || self.completion_tokens.is_some()
            || self.total_tokens.is_some()
            || self.input_tokens.is_some()
    }

    /// All prompt tokens, OpenAI's way: `prompt_tokens` where given (it
    /// includes cached tokens), else Anthropic's `input_tokens` plus its cache
    /// reads and writes (which `input_tokens` leaves out).
    pub fn prompt(&self) -> Option<u64> {
        self.prompt_tokens.or_else(|| {
            self.input_tokens.map(|i| {
                i.saturating_add(self.cache_read_tokens.unwrap_or(0))
                    .saturating_add(self.cache_write_tokens.unwrap_or(0))
            })
        })
    }
}

/// Estimated tokens for a piece of text: about four bytes a token, the usual
/// rule for English with OpenAI's tokenizers.
pub fn estimate_tokens(text_bytes: u64) -> u64 {
    text_bytes.div_ceil(4)
}

/// Estimated prompt tokens of a request body (its text fields).
pub fn estimate_prompt(body: &[u8]) -> u64 {
    let mut req = UsageScan::default();
    req.feed(body);
    estimate_tokens(req.text_bytes)
}

/// Token counts for a request: the upstream's when it gave them, else an
/// estimate (`estimated` = true): the prompt from the request's text fields,
/// the completion from the chunks (streams) or text (whole bodies) relayed.
pub fn token_counts(reply: &UsageScan, request_body: &[u8], stream: bool) -> (u64, u64, u64, bool) {
    if reply.reported() {
        let prompt = reply.prompt().unwrap_or(0);
        let completion =
            reply.completion_tokens.unwrap_or_else(|| reply.total_tokens.map_or(0, |t| t.saturating_sub(prompt)));
        let total = reply.total_tokens.unwrap_or(prompt.saturating_add(completion));
        return (prompt, completion, total, false);
    }
    let prompt = estimate_prompt(request_body);
    let completion = if stream { reply.text_fragments } else { estimate_tokens(reply.text_bytes) };
    (prompt, completion, prompt + completion, true)
}

/// A chat or text-completion stream's events on their way to the client: a
/// filter over complete events (only a trailing partial event is held until
/// its end; bounded: past 64 KiB it passes as is) that
/// - takes out usage-only events (`"choices": []` with a `usage` object, any
///   whitespace or key order, any SSE line ending) when `strip_usage`: the
///   gateway asked for usage on the client's behalf;
/// - with `hold_done`, holds back `[DONE]` so that [`StreamFilter::end`] can
///   write the stream's ending: the usage chunk the client asked for if the
///   upstream sent none, then `[DONE]`, or nothing when the generation was cut
///   short (no `finish_reason` anywhere) and an error event must go instead;
/// - drops every event after the first `[DONE]` (the stream is over);
/// - notes whether `[DONE]` and an error event went by (whether a
///   `finish_reason` or usage did, the [`UsageScan`] knows).
///
/// [`UsageStrip`] is the filter that only strips.
pub struct StreamFilter {
    partial: Vec<u8>,
    strip_usage: bool,
    hold_done: bool,
    /// `[DONE]` went by (held or not).
    pub done_seen: bool,
    /// The upstream sent an error event (it said itself that the stream failed).
    pub error_seen: bool,
    /// The held `[DONE]` event as the upstream wrote it (its line endings).
    done_event: Vec<u8>,
}

/// The filter that only takes out usage-only events.
pub type UsageStrip = StreamFilter;

impl Default for StreamFilter {
    fn default() -> Self {
        StreamFilter::new(true, false)
    }
}

const STRIP_HOLD_MAX: usize = 64 * 1024;

/// How a filtered stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// A `finish_reason` went by and the stream ended (`[DONE]`, or a clean
    /// end of the body): `[DONE]` was written (after the usage chunk, if one was
    /// owed).
    Complete,
    /// `[DONE]` (or a clean end) without any `finish_reason`: a generation
    /// cut short. Nothing was written; the caller sends an error event.
    Truncated,
    /// Neither `[DONE]` nor a `finish_reason`: the stream just stopped.
    Unfinished,
}

/// What the gateway says in a usage chunk it writes itself.
pub struct OwedUsage<'a> {
    pub id: &'a [u8],
    /// `chat.completion.chunk` or `text_completion`.
    pub object: &'a str,
    pub model: &'a str,
    pub created_s: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl StreamFilter {
    pub fn new(strip_usage: bool, hold_done: bool) -> StreamFilter {
        StreamFilter {
            partial: Vec::new(),
            strip_usage,
            hold_done,
            done_seen: false,
            error_seen: false,
            done_event: Vec::new(),
        }
    }

    /// Append `payload` to `out`, filtered.
    pub fn filter(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        if self.partial.is_empty() {
            let used = self.events(payload, out, false);
            self.partial.extend_from_slice(&payload[used..]);
        } else {
            let mut held = std::mem::take(&mut self.partial);
            held.extend_from_slice(payload);
            let used = self.events(&held, out, false);
            held.drain(..used);
            self.partial = held;
        }
        if self.partial.len() > STRIP_HOLD_MAX {
            if self.done_seen {
                self.partial.clear();
            } else {
                out.append(&mut self.partial);
            }
        }
    }

    /// The body ended: the last event (if complete) is judged, and whatever
    /// else is held goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.partial);
        let used = self.events(&held, out, true);
        if !self.done_seen {
            out.extend_from_slice(&held[used..]);
        }
    }

    /// After [`finish`](Self::finish), with `hold_done`: write the stream's
    /// ending to `out` and say how it ended. `finish_seen`: a `finish_reason`
    /// went by ([`UsageScan::finish_seen`], which reads every byte anyway).
    /// `require_finish`: a stream without any is a truncated generation (an
    /// upstream known to omit it is trusted instead). `owed`: the usage chunk
    /// to write (the client asked for usage and the upstream reported none).
    pub fn end(
        &mut self,
        out: &mut Vec<u8>,
        finish_seen: bool,
        require_finish: bool,
        owed: Option<OwedUsage<'_>>,
    ) -> StreamEnd {
        let finished = finish_seen || !require_finish;
        if !finished {
            return if self.done_seen { StreamEnd::Truncated } else { StreamEnd::Unfinished };
        }
        if !self.done_seen && !finish_seen {
            return StreamEnd::Unfinished;
        }
        if let Some(u) = owed {
            write_usage_event(out, &u);
        }
        if !self.done_event.is_empty() {
            out.append(&mut self.done_event);
        } else if self.hold_done || !self.done_seen {
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        StreamEnd::Complete
    }

    /// Copy the complete events of `data` to `out` (as filtered); return how
    /// many bytes were complete events. An event whose blank line ends in a
    /// CR at the end of `data` waits (an LF may follow) unless `at_end`, so
    /// the output is the same whatever the split.
    fn events(&mut self, data: &[u8], out: &mut Vec<u8>, at_end: bool) -> usize {
        let mut start = 0;
        while let Some(ev) = next_event(&data[start..]) {
            if ev.cr_tail && !at_end {
                break;
            }
            let keep = match event_data(&data[start..start + ev.content]) {
                // Past `[DONE]` the stream is over: a client reading the
                // upstream directly stops there, so nothing after it is
                // relayed (the held `[DONE]` would otherwise follow it).
                _ if self.done_seen => false,
                Some(d) if &*d == b"[DONE]" => {
                    self.done_seen = true;
                    if self.hold_done && self.done_event.is_empty() {
                        self.done_event.extend_from_slice(&data[start..start + ev.end]);
                    }
                    !self.hold_done
                }
                // Only looked for when it is to go: whether the upstream
                // reported usage at all, the usage scan knows.
                Some(d) if self.strip_usage && is_usage_only(&d) => false,
                Some(d) if is_error_event(&d) => {
                    self.error_seen = true;
                    true
                }
                _ => true,
            };
            if keep {
                out.extend_from_slice(&data[start..start + ev.end]);
            }
            start += ev.end;
        }
        start
    }
}

/// Whether an event's data is an error (`{"error": {...}}`, any whitespace).
fn is_error_event(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        error: Option<serde::de::IgnoredAny>,
    }
    // Cheap pre-check, no search: servers write the error event's object
    // with `error` as its (first and only) key. One spelled otherwise is
    // missed, which costs a second error event, while looking through every
    // token chunk would cost every stream.
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
    let rest = data[start..].strip_prefix(b"{").unwrap_or(b"");
    let key = rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len());
    if !rest[key..].starts_with(b"\"error\"") {
        return false;
    }
    serde_json::from_slice::<Probe>(data).is_ok_and(|p| p.error.is_some())
}

/// The usage-only chunk OpenAI sends last when `include_usage` is asked,
/// written by the gateway for an upstream that sent none. Its counts are the
/// gateway's estimate, which the chunk says (`x_switchboard_estimated`).
fn write_usage_event(out: &mut Vec<u8>, u: &OwedUsage<'_>) {
    let chunk = serde_json::json!({
        "id": String::from_utf8_lossy(u.id),
        "object": u.object,
        "created": u.created_s,
        "model": u.model,
        "choices": [],
        "usage": {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
        },
        "x_switchboard_estimated": true,
    });
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(chunk.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(body: &[u8], step: usize) -> UsageScan {
        let mut s = UsageScan::default();
        for part in body.chunks(step) {
            s.feed(part);
        }
        s
    }

    #[test]
    fn reads_usage_across_any_split() {
        let body = br#"{"id":"x","choices":[{"message":{"role":"assistant","content":"Hello \"prompt_tokens\": 99 there"}}],"usage":{"prompt_tokens":12,"completion_tokens": 345,"total_tokens":357,"prompt_tokens_details":{"cached_tokens":5}}}"#;
        for step in [1, 2, 3, 7, 64, body.len()] {
            let s = scan_split(body, step);
            assert_eq!(s.prompt_tokens, Some(12), "step {step}");
            assert_eq!(s.completion_tokens, Some(345));
            assert_eq!(s.total_tokens, Some(357));
            assert_eq!(s.text_fragments, 1);
            assert_eq!(s.text_bytes, "Hello \\\"prompt_tokens\\\": 99 there".len() as u64);
        }
    }

    #[test]
    fn reads_anthropic_usage_with_cache_tokens_across_any_split() {
        let body = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"msg_1","content":[],"stop_reason":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
            "\n\nevent: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            "\n\nevent: message_delta\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":42}}"#,
            "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        )
        .as_bytes();
        for step in [1, 2, 3, 7, 64, body.len()] {
            let s = scan_split(body, step);
            assert_eq!(s.input_tokens, Some(21), "step {step}");
            assert_eq!((s.cache_read_tokens, s.cache_write_tokens), (Some(2000), Some(100)));
            assert_eq!(s.completion_tokens, Some(42), "the cumulative output of message_delta wins");
            assert!(s.finish_seen);
            assert_eq!(s.prompt(), Some(2121), "input excludes cache reads and writes");
            assert_eq!(token_counts(&s, b"{}", true), (2121, 42, 2163, false));
        }
        let start_only = scan_split(&body[..body.len() / 3], 5);
        assert!(!start_only.finish_seen, "stop_reason null is no finish");
    }

    #[test]
    fn counts_stream_fragments_when_there_is_no_usage() {
        let mut body = Vec::new();
        body.extend_from_slice(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        for _ in 0..5 {
            body.extend_from_slice(b"data: {\"choices\":[{\"delta\":{\"content\":\"tok\"}}]}\n\n");
        }
        body.extend_from_slice(b"data: [DONE]\n\n");
        for step in [1, 5, body.len()] {
            let s = scan_split(&body, step);
            assert!(!s.reported());
            assert_eq!(s.text_fragments, 5);
        }
        let (p, c, t, est) = token_counts(&scan_split(&body, 9), br#"{"messages":[{"content":"12345678"}]}"#, true);
        assert_eq!((p, c, t, est), (2, 5, 7, true));
    }

    #[test]
    fn reported_usage_wins_and_fills_gaps() {
        let mut s = UsageScan::default();
        s.feed(br#"{"usage":{"prompt_tokens":7,"total_tokens":7}}"#);
        assert_eq!(token_counts(&s, b"{}", false), (7, 0, 7, false));
    }

    #[test]
    fn strips_only_usage_only_events() {
        let token = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n".as_slice();
        let usage = b"data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n".as_slice();
        let done = b"data: [DONE]\n\n".as_slice();
        let stream = [token, usage, done].concat();
        let want = [token, done].concat();
        for step in [1, 3, 10, stream.len()] {
            let mut f = UsageStrip::default();
            let mut out = Vec::new();
            for part in stream.chunks(step) {
                f.filter(part, &mut out);
            }
            f.finish(&mut out);
            assert_eq!(out, want, "step {step}");
        }
        // CRLF framing too.
        let crlf = b"data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut out = Vec::new();
        UsageStrip::default().filter(crlf, &mut out);
        assert_eq!(out, b"data: [DONE]\r\n\r\n");
    }

    #[test]
    fn nothing_after_done_goes_out_whatever_the_split() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\ndata: par";
        for hold_done in [false, true] {
            for step in 1..=stream.len() {
                let mut f = StreamFilter::new(false, hold_done);
                let mut out = Vec::new();
                for part in stream.chunks(step) {
                    f.filter(part, &mut out);
                }
                f.finish(&mut out);
                let want: &[u8] = if hold_done {
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
                } else {
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"
                };
                assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want), "step {step}");
                assert!(f.done_seen);
            }
        }
    }

    #[test]
    fn strips_spaced_usage_chunks_with_any_line_ending() {
        for nl in ["\n", "\r\n", "\r"] {
            let token =
                format!("data: {{\"choices\": [{{\"delta\": {{\"content\": \"a\"}}}}], \"usage\": null}}{nl}{nl}");
            let usage =
                format!("data: {{\"id\": \"x\", \"choices\": [], \"usage\": {{\"prompt_tokens\": 4}}}}{nl}{nl}");
            let done = format!("data: [DONE]{nl}{nl}");
            let stream = [token.as_str(), usage.as_str(), done.as_str()].concat();
            let want = [token.as_str(), done.as_str()].concat();
            for step in [1, 2, 5, stream.len()] {
                let mut f = UsageStrip::default();
                let mut out = Vec::new();
                let mut scan = UsageScan::default();
                for part in stream.as_bytes().chunks(step) {
                    f.filter(part, &mut out);
                    scan.feed(part);
                }
                f.finish(&mut out);
                assert_eq!(String::from_utf8(out).unwrap(), want, "{nl:?} step {step}");
                assert_eq!(scan.prompt_tokens, Some(4));
            }
        }
    }

    /// The scanners over generated streams (random whitespace, key order,
    /// line endings), whole and split at random: the same as the fuzz target
    /// `sse_usage`, a few thousand cases on every test run.
    #[test]
    fn generated_streams_strip_scan_and_gate_whatever_the_split() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..3000 {
            let bytes: Vec<u8> = (0..96).map(|_| rand() as u8).collect();
            let want = crate::sse::synth::stream(&bytes);
            let step = (rand() % 17 + 1) as usize;
            let mut f = UsageStrip::default();
            let mut gate = crate::sse::StreamGate::default();
            let mut scan = UsageScan::default();
            let mut out = Vec::new();
            let mut released = false;
            for part in want.stream.chunks(step) {
                f.filter(part, &mut out);
                scan.feed(part);
                released |= matches!(gate.feed(part), crate::sse::Gate::Release);
            }
            f.finish(&mut out);
            let text = String::from_utf8_lossy(&want.stream);
            assert_eq!(out, want.stripped, "case {case}, step {step}: {text:?}");
            assert_eq!(released, want.releases, "case {case}: {text:?}");
            let got =
                scan.prompt_tokens.zip(scan.completion_tokens).zip(scan.total_tokens).map(|((p, c), t)| (p, c, t));
            assert_eq!(got, want.usage, "case {case}: {text:?}");
            assert_eq!(scan.text_fragments, want.tokens, "case {case}: {text:?}");
        }
    }

    #[test]
    fn a_finish_reason_is_seen_only_as_a_string_value_whatever_the_split() {
        let finished = br#"data: {"choices":[{"index":0,"delta":{},"finish_reason" : "stop"}]}"#;
        let open = br#"data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#;
        let quoted =
            br#"data: {"choices":[{"delta":{"content":"say \"finish_reason\":\"stop\""},"finish_reason":null}]}"#;
        for step in 1..finished.len() {
            assert!(scan_split(finished, step).finish_seen, "split every {step}");
            assert!(!scan_split(open, step).finish_seen, "null, split every {step}");
            assert!(!scan_split(quoted, step).finish_seen, "inside a string, split every {step}");
        }
        // What follows the value is still read: usage after a finish.
        let both = br#"{"choices":[{"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let s = scan_split(both, 5);
        assert!(s.finish_seen);
        assert_eq!((s.prompt_tokens, s.completion_tokens), (Some(3), Some(4)));
    }
}
