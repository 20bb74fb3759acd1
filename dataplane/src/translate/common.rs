//! What the request, response and stream translators share, so that each
//! mapping exists once and both paths (whole answers and streams) give the
//! same result: stop reasons, usage arithmetic, tool-call ids, error types,
//! the limits, and a lenient reader for the token counts upstreams send.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A default for chat's optional `max_tokens` when the target (Anthropic)
/// requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The longest error message passed on to a client (bytes, cut at a
/// character boundary).
pub const ERROR_MESSAGE_MAX_BYTES: usize = 4096;

/// The longest SSE event a stream translator accepts from an upstream
/// (bytes of its lines); a longer one ends the stream with an error event.
pub const EVENT_MAX_BYTES: usize = 1 << 20;

/// The most tool calls one streamed answer may make; more end the stream
/// with an error event (the state per call is small, but it is bounded).
pub const TOOL_CALLS_MAX: usize = 1024;

/// The longest tool-call id kept as is; a longer one is shortened (and
/// made unique with a hash) on the way to Anthropic.
const TOOL_ID_MAX_BYTES: usize = 128;

/// An OpenAI tool-call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`).
///
/// A valid id is kept as it is. Any other (empty, too long, or with other
/// characters: `call:1`, `functions.get_weather:0`) becomes its valid
/// characters with each other byte as `_`, cut to 96 bytes, then `_` and 16
/// hex digits of a hash (FNV-1a) of the whole original id: deterministic, so
/// the request path (assistant `tool_calls`, `tool` messages) and the
/// response paths map an id the same way and a round trip matches up, and
/// two different ids stay different.
pub fn anthropic_tool_id(id: &str) -> Cow<'_, str> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !id.is_empty() && id.len() <= TOOL_ID_MAX_BYTES && id.bytes().all(valid) {
        return Cow::Borrowed(id);
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(id.len().min(96) + 20);
    if id.is_empty() {
        out.push_str("toolu");
    }
    for b in id.bytes().take(96) {
        out.push(if valid(b) { char::from(b) } else { '_' });
    }
    out.push('_');
    out.push_str(&format!("{hash:016x}"));
    Cow::Owned(out)
}

/// An Anthropic `stop_reason` → OpenAI's `finish_reason`.
///
/// `end_turn`, `stop_sequence` and `pause_turn` → `stop`; `max_tokens` and
/// `model_context_window_exceeded` → `length`; `tool_use` → `tool_calls`;
/// `refusal` → `content_filter`; anything else → `stop`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// An OpenAI `finish_reason` → Anthropic's `stop_reason`.
///
/// `stop` → `end_turn` (OpenAI does not say whether a stop sequence matched);
/// `length` → `max_tokens`; `tool_calls` and `function_call` → `tool_use`;
/// `content_filter` → `refusal`; anything else → `end_turn`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// [`stop_reason`] for an answer that made tool calls or not: some servers
/// (older vLLM and llama.cpp builds, Ollama) end a tool-calling answer with
/// `stop`; a Messages client needs `tool_use` to run the tools.
pub fn stop_reason_after(finish_reason: &str, made_tool_calls: bool) -> &'static str {
    match stop_reason(finish_reason) {
        "end_turn" if made_tool_calls => "tool_use",
        s => s,
    }
}

/// `thinking.budget_tokens` → chat's `reasoning_effort`: under 4096 → `low`,
/// under 16384 → `medium`, else `high`.
pub fn reasoning_effort(budget_tokens: u64) -> &'static str {
    match budget_tokens {
        0..4096 => "low",
        4096..16384 => "medium",
        _ => "high",
    }
}

/// Chat's `reasoning_effort` → a `thinking.budget_tokens` (`None` for
/// `none`: no thinking). `minimal` → 1024 (Anthropic's least), `low` → 2048,
/// `medium` → 8192, `high` → 24576; [`reasoning_effort`] maps each back.
pub fn thinking_budget(effort: &str) -> Option<Option<u64>> {
    match effort {
        "none" => Some(None),
        "minimal" => Some(Some(1024)),
        "low" => Some(Some(2048)),
        "medium" => Some(Some(8192)),
        "high" => Some(Some(24576)),
        _ => None,
    }
}

/// OpenAI's error `type` for an HTTP status.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// An Anthropic error `type` → the status Anthropic answers it with.
pub fn anthropic_type_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// An OpenAI error `type` (or `code`) → the status it stands for.
pub fn openai_type_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" | "invalid_request" | "BadRequestError" => 400,
        "authentication_error" | "invalid_api_key" => 401,
        "permission_error" | "insufficient_permissions" => 403,
        "not_found_error" | "model_not_found" => 404,
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" | "insufficient_quota" => 429,
        "overloaded" | "overloaded_error" | "service_unavailable" => 529,
        _ => 500,
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Append `v` as JSON. The types written here serialize infallibly (strings,
/// integers, maps with string keys); if one ever failed, `out` is left as it was.
pub fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

/// Token counts in both APIs' terms. Anthropic's `input` leaves out the cache
/// reads and writes; OpenAI's `prompt_tokens` includes them, with the reads as
/// `prompt_tokens_details.cached_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    /// From OpenAI's counts: input = prompt − cached (saturating), cache
    /// reads = cached, cache writes = 0 (OpenAI reports none).
    pub fn from_openai(u: &OpenAiUsage) -> Usage {
        let prompt = u.prompt_tokens.0.unwrap_or(0);
        let cached = u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens.0).unwrap_or(0).min(prompt);
        Usage { input: prompt - cached, output: u.completion_tokens.0.unwrap_or(0), cache_read: cached, cache_write: 0 }
    }

    /// From Anthropic's counts (absent ones are 0).
    pub fn from_anthropic(u: &AnthropicUsage) -> Usage {
        Usage {
            input: u.input_tokens.0.unwrap_or(0),
            output: u.output_tokens.0.unwrap_or(0),
            cache_read: u.cache_read_input_tokens.0.unwrap_or(0),
            cache_write: u.cache_creation_input_tokens.0.unwrap_or(0),
        }
    }

    /// OpenAI's `prompt_tokens`: input + cache reads + cache writes.
    pub fn prompt(&self) -> u64 {
        self.input.saturating_add(self.cache_read).saturating_add(self.cache_write)
    }

    pub fn openai(&self) -> OpenAiUsageOut {
        let prompt = self.prompt();
        OpenAiUsageOut {
            prompt_tokens: prompt,
            completion_tokens: self.output,
            total_tokens: prompt.saturating_add(self.output),
            prompt_tokens_details: CachedOut { cached_tokens: self.cache_read },
        }
    }

    pub fn anthropic(&self) -> AnthropicUsageOut {
        AnthropicUsageOut {
            input_tokens: self.input,
            cache_creation_input_tokens: self.cache_write,
            cache_read_input_tokens: self.cache_read,
            output_tokens: self.output,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct OpenAiUsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: CachedOut,
}

#[derive(Serialize, Debug)]
pub struct CachedOut {
    pub cached_tokens: u64,
}

#[derive(Serialize, Debug)]
pub struct AnthropicUsageOut {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

/// OpenAI's `usage` as an upstream sends it (every count lenient).
#[derive(Deserialize, Default, Debug)]
pub struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: Count,
    #[serde(default)]
    pub completion_tokens: Count,
    #[serde(default)]
    pub prompt_tokens_details: Option<CachedIn>,
}

#[derive(Deserialize, Default, Debug)]
pub struct CachedIn {
    #[serde(default)]
    pub cached_tokens: Count,
}

/// Anthropic's `usage` as an upstream sends it (every count lenient).
#[derive(Deserialize, Default, Debug)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Count,
    #[serde(default)]
    pub output_tokens: Count,
    #[serde(default)]
    pub cache_read_input_tokens: Count,
    #[serde(default)]
    pub cache_creation_input_tokens: Count,
}

/// A token count from an upstream: a non-negative integer, or a
/// non-negative finite float (truncated, saturating at `u64::MAX`). Anything
/// else (null, negative, a string, an object) reads as absent, not as an
/// error: a bad count must not fail an answer the client otherwise gets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Count, E> {
                // `as` saturates (and is only reached for finite, non-negative values).
                Ok(Count((v.is_finite() && v >= 0.0).then_some(v as u64)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_none<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Count, D2::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value read as an optional string: a string is kept (borrowed
/// when unescaped); anything else (null, a number, an object) is absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Text<'de>, D2::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The message of an upstream's error body, whatever its shape: OpenAI's
/// `{"error":{"message",…}}`, Anthropic's `{"type":"error","error":{"type",
/// "message"}}`, `{"error":"…"}`, `{"message":"…"}` (vLLM), `{"detail":"…"}`
/// (FastAPI servers), or any text. Also the error's own `type` (or `code`)
/// when it names one. `None` for an empty or unreadable body.
pub fn error_parts(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Env<'a> {
        #[serde(borrow, default)]
        error: Option<ErrorField<'a>>,
        #[serde(borrow, default)]
        message: Text<'a>,
        #[serde(borrow, default)]
        detail: Text<'a>,
        #[serde(borrow, default, rename = "type")]
        kind: Text<'a>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField<'a> {
        #[serde(borrow)]
        Obj(Inner<'a>),
        #[serde(borrow)]
        Str(Cow<'a, str>),
        Other(IgnoredAny),
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(borrow, default)]
        message: Text<'a>,
        #[serde(borrow, default, rename = "type")]
        kind: Text<'a>,
        #[serde(borrow, default)]
        code: Text<'a>,
    }
    let own = |s: &str| Some(cap(s, ERROR_MESSAGE_MAX_BYTES).to_owned()).filter(|s| !s.trim().is_empty());
    if let Ok(env) = serde_json::from_slice::<Env<'_>>(body) {
        match env.error {
            Some(ErrorField::Obj(inner)) => {
                // The more telling of the two (`{"type": "server_error",
                // "code": "overloaded"}` is an overload), else whichever is there.
                let (kind, code) = (inner.kind.as_deref(), inner.code.as_deref());
                let known = |k: &&str| openai_type_status(k) != 500 || anthropic_type_status(k) != 500;
                let kind = kind.filter(known).or(code.filter(known)).or(kind).or(code).and_then(|k| own(cap(k, 64)));
                let message = inner.message.as_deref().and_then(own);
                if message.is_some() {
                    return (message, kind);
                }
            }
            Some(ErrorField::Str(s)) => return (own(&s), None),
            _ => {}
        }
        let kind = env.kind.as_deref().filter(|k| *k != "error").and_then(|k| own(cap(k, 64)));
        if let Some(m) = env.message.as_deref().or(env.detail.as_deref()).and_then(own) {
            return (Some(m), kind);
        }
        // JSON without a message: the body itself says most.
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_MESSAGE_MAX_BYTES)]);
    (own(text.trim()), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_tool_ids_are_kept_and_others_mapped_the_same_way_every_time() {
        assert_eq!(anthropic_tool_id("call_abc-123"), "call_abc-123");
        assert_eq!(anthropic_tool_id("toolu_01A"), "toolu_01A");
        let a = anthropic_tool_id("functions.get_weather:0");
        assert_eq!(a, anthropic_tool_id("functions.get_weather:0"));
        assert!(a.starts_with("functions_get_weather_0_"), "{a}");
        let b = anthropic_tool_id("functions.get_weather:1");
        assert_ne!(a, b);
        for id in ["", "é", "a b", &"x".repeat(10_000), "\u{0}"] {
            let m = anthropic_tool_id(id);
            assert!(!m.is_empty() && m.len() <= 120, "{m}");
            assert!(m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{m}");
        }
        // A mapped id is valid, so it maps to itself: a round trip is stable.
        assert_eq!(anthropic_tool_id(&a), a);
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop}");
        }
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
            ("eos", "end_turn"),
        ] {
            assert_eq!(stop_reason(finish), stop, "{finish}");
        }
    }

    #[test]
    fn usage_keeps_cache_tokens_exact_both_ways() {
        let a = AnthropicUsage {
            input_tokens: Count(Some(10)),
            output_tokens: Count(Some(7)),
            cache_read_input_tokens: Count(Some(100)),
            cache_creation_input_tokens: Count(Some(20)),
        };
        let u = Usage::from_anthropic(&a);
        let o = u.openai();
        assert_eq!((o.prompt_tokens, o.completion_tokens, o.total_tokens), (130, 7, 137));
        assert_eq!(o.prompt_tokens_details.cached_tokens, 100);
        let back: OpenAiUsage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 130, "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 100}
        }))
        .unwrap();
        let b = Usage::from_openai(&back);
        // OpenAI does not report cache writes: they count as plain input.
        assert_eq!(b, Usage { input: 30, output: 7, cache_read: 100, cache_write: 0 });
        assert_eq!(b.prompt(), 130);
        // More cached than prompt (a bad upstream): saturates.
        let odd: OpenAiUsage =
            serde_json::from_str(r#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":9}}"#).unwrap();
        assert_eq!(Usage::from_openai(&odd), Usage { input: 0, output: 0, cache_read: 5, cache_write: 0 });
        let max = Usage { input: u64::MAX, output: u64::MAX, cache_read: 1, cache_write: 1 }.openai();
        assert_eq!((max.prompt_tokens, max.total_tokens), (u64::MAX, u64::MAX));
    }

    #[test]
    fn counts_are_lenient() {
        for (json, want) in [
            ("5", Some(5)),
            ("-1", None),
            ("1e3", Some(1000)),
            ("1e400", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", Some(u64::MAX)),
            ("null", None),
            ("\"7\"", None),
            ("[1,2]", None),
            ("{\"a\":[1]}", None),
            ("true", None),
        ] {
            let v: Result<Count, _> = serde_json::from_str(json);
            match v {
                Ok(c) => assert_eq!(c.0, want, "{json}"),
                // serde_json refuses 1e400 itself (out of range): still no panic.
                Err(_) => assert_eq!(want, None, "{json}"),
            }
        }
    }

    #[test]
    fn error_messages_are_found_in_any_shape_and_capped() {
        let cases: [(&[u8], Option<&str>, Option<&str>); 10] = [
            (
                br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
                Some("bad"),
                Some("invalid_request_error"),
            ),
            (
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                Some("Overloaded"),
                Some("overloaded_error"),
            ),
            (br#"{"error":"plain"}"#, Some("plain"), None),
            (
                br#"{"error":{"message":"busy","type":"server_error","code":"overloaded"}}"#,
                Some("busy"),
                Some("overloaded"),
            ),
            (br#"{"error":{"message":"x","type":"server_error","code":"E42"}}"#, Some("x"), Some("server_error")),
            (
                br#"{"object":"error","message":"vllm says","type":"BadRequestError"}"#,
                Some("vllm says"),
                Some("BadRequestError"),
            ),
            (br#"{"detail":"Not Found"}"#, Some("Not Found"), None),
            (b"<html>bad gateway</html>", Some("<html>bad gateway</html>"), None),
            (b"", None, None),
            (b"\xff\xfe oops", Some("\u{fffd}\u{fffd} oops"), None),
        ];
        for (body, message, kind) in cases {
            let (m, k) = error_parts(body);
            assert_eq!(m.as_deref(), message, "{body:?}");
            assert_eq!(k.as_deref(), kind, "{body:?}");
        }
        let long = format!("{{\"error\":{{\"message\":\"{}\"}}}}", "é".repeat(5000));
        let (m, _) = error_parts(long.as_bytes());
        let m = m.unwrap();
        assert!(m.len() <= ERROR_MESSAGE_MAX_BYTES && m.len() >= ERROR_MESSAGE_MAX_BYTES - 1);
    }
}
