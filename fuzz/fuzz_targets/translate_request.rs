//! The request, response and error translators (both ways) over any body:
//! the input's own bytes, and a JSON document built from it whose keys and
//! strings come from the two APIs' vocabulary (so the fuzzer reaches deep
//! into messages, content blocks, tools and usage). Never a panic; a body
//! translated without error is one valid JSON object; an error body is
//! always written, and is JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use switchboard_dataplane::translate::{request, response, RequestFacts, ResponseCtx};

const KEYS: &[&str] = &[
    "model", "messages", "role", "content", "type", "text", "system", "max_tokens", "max_completion_tokens",
    "stream", "stream_options", "include_usage", "tools", "tool_choice", "name", "input", "input_schema",
    "parameters", "function", "arguments", "id", "tool_use_id", "tool_call_id", "tool_calls", "is_error",
    "source", "media_type", "data", "url", "image_url", "thinking", "budget_tokens", "reasoning_effort",
    "metadata", "user_id", "user", "stop", "stop_sequences", "temperature", "top_p", "top_k", "n",
    "choices", "message", "delta", "finish_reason", "stop_reason", "usage", "prompt_tokens",
    "completion_tokens", "prompt_tokens_details", "cached_tokens", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "error", "detail", "reasoning_content",
    "refusal", "index", "disable_parallel_tool_use", "parallel_tool_calls", "cache_control", "description",
    "response_format", "logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "signature",
];

const STRINGS: &[&str] = &[
    "user", "assistant", "system", "developer", "tool", "function", "text", "image", "tool_use",
    "tool_result", "thinking", "redacted_thinking", "document", "base64", "url", "auto", "any", "none",
    "required", "enabled", "disabled", "low", "medium", "high", "minimal", "stop", "length", "tool_calls",
    "end_turn", "max_tokens", "content_filter", "refusal", "image/png", "data:image/png;base64,AAAA",
    "https://x.test/a.png", "data:x", "{}", "{\"a\":1}", "[1]", "{", "", "call:1", "toolu_1", "é😀\u{0}",
    "error", "overloaded_error", "custom", "web_search_20250305", "ephemeral", "json_object",
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn value(b: &mut Bytes<'_>, depth: u32) -> Value {
    let kind = b.byte();
    let leaf = depth >= 6 || b.0.is_empty();
    match kind % 12 {
        0 => Value::Null,
        1 => Value::Bool(kind & 0x80 != 0),
        2 => Value::from(u64::from_le_bytes(pad(b.take(8)))),
        3 => Value::from(-(i64::from(b.byte()))),
        4 => Number::from_f64(f64::from(b.byte()) / 7.0 - 3.0).map_or(Value::Null, Value::Number),
        5 | 6 => Value::from(STRINGS[b.byte() as usize % STRINGS.len()]),
        7 => {
            let n = b.byte() as usize % 24;
            Value::from(String::from_utf8_lossy(b.take(n)).into_owned())
        }
        8 | 9 if !leaf => {
            let n = b.byte() % 5;
            Value::Array((0..n).map(|_| value(b, depth + 1)).collect())
        }
        _ if !leaf => object(b, depth + 1),
        _ => Value::from(kind),
    }
}

fn object(b: &mut Bytes<'_>, depth: u32) -> Value {
    let n = b.byte() % 7;
    let mut m = Map::new();
    for _ in 0..n {
        let k = KEYS[b.byte() as usize % KEYS.len()];
        m.insert(k.to_owned(), value(b, depth));
    }
    Value::Object(m)
}

fn pad(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a[..s.len()].copy_from_slice(s);
    a
}

fn json_object(out: &[u8], what: &str) {
    match serde_json::from_slice::<Value>(out) {
        Ok(Value::Object(_)) => {}
        _ => panic!("{what}: not a JSON object: {:?}", String::from_utf8_lossy(out)),
    }
}

fn check(body: &[u8], status: u16) {
    let model = (status % 2 == 0).then_some("target-model");
    for (f, what) in [
        (request::messages_to_chat as fn(&[u8], Option<&str>, &mut Vec<u8>) -> _, "messages_to_chat"),
        (request::chat_to_messages, "chat_to_messages"),
    ] {
        let mut out = Vec::new();
        if f(body, model, &mut out).is_ok() {
            json_object(&out, what);
        }
    }
    let facts = RequestFacts { stream: false, include_usage: true, estimated_input_tokens: u64::from(status) };
    let ctx = ResponseCtx { model: "m", request_id: "req\u{0}é", created_s: u64::MAX, facts: &facts };
    for (f, what) in [
        (response::chat_to_messages as fn(&[u8], &ResponseCtx<'_>, &mut Vec<u8>) -> _, "chat response"),
        (response::messages_to_chat, "messages response"),
    ] {
        let mut out = Vec::new();
        if f(body, &ctx, &mut out).is_ok() {
            json_object(&out, what);
        }
    }
    for (f, what) in [
        (response::error_to_messages as fn(u16, &[u8], &mut Vec<u8>), "error_to_messages"),
        (response::error_to_chat, "error_to_chat"),
    ] {
        let mut out = Vec::new();
        f(status, body, &mut out);
        json_object(&out, what);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, rest)) = data.split_first() else { return };
    let status = [200u16, 400, 401, 403, 404, 413, 429, 500, 502, 503, 529, 0, 599, 999][s as usize % 14];
    check(rest, status);
    let mut b = Bytes(rest);
    let doc = object(&mut b, 0);
    check(doc.to_string().as_bytes(), status);
});
