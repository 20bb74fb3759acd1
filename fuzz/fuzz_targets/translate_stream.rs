//! The SSE translators (OpenAI chunks → Anthropic events, and back) over
//! streams built from the input: events from both APIs' shapes with
//! fuzzer-chosen strings, ids, indexes and counts, comments, `event:`/`id:`
//! lines, garbage, any line ending (LF, CRLF, CR), and the input's own bytes.
//! Split invariance: the stream fed whole, cut at two fuzzer-chosen points,
//! and in fuzzer-sized steps gives byte-identical output and the same end,
//! with or without a required `finish_reason` (`require_finish`).
//! Never a panic; the output is whole SSE events whose data is JSON (or
//! `[DONE]`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use switchboard_dataplane::translate::stream::{ChatToMessages, MessagesToChat, StreamEnd};
use switchboard_dataplane::translate::{RequestFacts, ResponseCtx};

const FINISH: &[&str] = &["stop", "length", "tool_calls", "content_filter", "x"];
const STOP: &[&str] = &["end_turn", "max_tokens", "tool_use", "refusal", "x"];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn text(&mut self) -> String {
        let n = self.byte() as usize % 12;
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        String::from_utf8_lossy(a).into_owned()
    }
    fn count(&mut self) -> Value {
        match self.byte() % 6 {
            0 => Value::Null,
            1 => json!(-1),
            2 => json!(u64::MAX),
            3 => json!(1.5),
            _ => json!(self.byte()),
        }
    }
}

fn chat_event(b: &mut Bytes<'_>) -> String {
    let choice = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let v = match b.byte() % 12 {
        0 => choice(json!({"role": "assistant", "content": ""}), Value::Null),
        1 | 2 => choice(json!({"content": b.text()}), Value::Null),
        3 => choice(json!({"reasoning_content": b.text()}), Value::Null),
        4 => {
            let (index, id, name, args) = (b.byte() % 3, b.text(), b.text(), b.text());
            let mut call = json!({"index": index, "function": {"arguments": args}});
            if b.byte() % 2 == 0 {
                call["id"] = json!(id);
                call["function"]["name"] = json!(name);
            }
            choice(json!({"tool_calls": [call]}), Value::Null)
        }
        5 => {
            let finish = FINISH[b.byte() as usize % FINISH.len()];
            choice(json!({}), json!(finish))
        }
        6 => json!({"choices": [], "usage": {"prompt_tokens": b.count(), "completion_tokens": b.count(),
            "prompt_tokens_details": {"cached_tokens": b.count()}}}),
        7 => return "[DONE]".to_owned(),
        8 => json!({"error": {"message": b.text(), "type": "server_error"}}),
        9 => return b.text(),
        10 => choice(json!({"refusal": b.text(), "reasoning": b.text()}), Value::Null),
        _ => choice(json!({"content": Value::Null}), Value::Null),
    };
    v.to_string()
}

fn anthropic_event(b: &mut Bytes<'_>) -> String {
    let index = b.byte() % 4;
    let v = match b.byte() % 12 {
        0 => json!({"type": "message_start", "message": {"id": b.text(), "model": b.text(), "usage": {
            "input_tokens": b.count(), "cache_read_input_tokens": b.count(), "cache_creation_input_tokens": b.count()}}}),
        1 => json!({"type": "ping"}),
        2 => {
            let block = match b.byte() % 4 {
                0 => json!({"type": "text", "text": ""}),
                1 => json!({"type": "thinking", "thinking": ""}),
                2 => json!({"type": "tool_use", "id": b.text(), "name": b.text(), "input": {}}),
                _ => json!({"type": "redacted_thinking", "data": b.text()}),
            };
            json!({"type": "content_block_start", "index": index, "content_block": block})
        }
        3 | 4 => json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": b.text()}}),
        5 => json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": b.text()}}),
        6 => json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": b.text()}}),
        7 => json!({"type": "content_block_stop", "index": index}),
        8 => {
            let stop = STOP[b.byte() as usize % STOP.len()];
            json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": b.count()}})
        }
        9 => json!({"type": "message_stop"}),
        10 => json!({"type": "error", "error": {"type": "overloaded_error", "message": b.text()}}),
        _ => return b.text(),
    };
    v.to_string()
}

/// A stream of events from the input, with its line ending and extras.
fn stream(b: &mut Bytes<'_>, event: fn(&mut Bytes<'_>) -> String) -> Vec<u8> {
    let nl = ["\n", "\r\n", "\r"][b.byte() as usize % 3];
    let mut s = String::new();
    let n = b.byte() % 24;
    for _ in 0..n {
        match b.byte() % 8 {
            0 => s.push_str(&format!(": keep-alive{nl}{nl}")),
            1 => s.push_str(&format!("event: x{nl}id: 1{nl}data: {}{nl}{nl}", event(b))),
            _ => s.push_str(&format!("data: {}{nl}{nl}", event(b))),
        }
    }
    if b.byte() % 4 == 0 {
        // A cut-off tail.
        s.push_str("data: {\"ty");
    }
    s.into_bytes()
}

fn run<T>(mut t: T, pieces: &[&[u8]], feed: fn(&mut T, &[u8], &mut Vec<u8>), finish: fn(&mut T, &mut Vec<u8>) -> StreamEnd) -> (Vec<u8>, StreamEnd) {
    let mut out = Vec::new();
    for p in pieces {
        feed(&mut t, p, &mut out);
    }
    let end = finish(&mut t, &mut out);
    (out, end)
}

fn well_formed(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("UTF-8 output");
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    for ev in text.split_terminator("\n\n") {
        for line in ev.split('\n') {
            if let Some(d) = line.strip_prefix("data: ") {
                assert!(d == "[DONE]" || serde_json::from_str::<Value>(d).is_ok(), "{d:?}");
            } else {
                // An event's name, or the keep-alive comment a ping becomes.
                assert!(line.starts_with("event: ") || line == ": ping", "{line:?}");
            }
        }
    }
}

fn check(input: &[u8], cuts: (usize, usize), step: usize, facts: &RequestFacts, require_finish: bool) {
    let ctx = ResponseCtx { model: "m", request_id: "r", created_s: 1, facts };
    let (a, b) = (cuts.0 % (input.len() + 1), cuts.1 % (input.len() + 1));
    let (a, b) = (a.min(b), a.max(b));
    let split: [&[u8]; 3] = [&input[..a], &input[a..b], &input[b..]];
    let steps: Vec<&[u8]> = input.chunks(step).collect();

    let c2m = |pieces: &[&[u8]]| {
        let mut t = ChatToMessages::new(&ctx);
        t.require_finish(require_finish);
        run(t, pieces, ChatToMessages::feed, ChatToMessages::finish)
    };
    let whole = c2m(&[input]);
    well_formed(&whole.0);
    assert_eq!(c2m(&split), whole);
    assert_eq!(c2m(&steps), whole);

    let m2c = |pieces: &[&[u8]]| run(MessagesToChat::new(&ctx), pieces, MessagesToChat::feed, MessagesToChat::finish);
    let whole = m2c(&[input]);
    well_formed(&whole.0);
    assert_eq!(m2c(&split), whole);
    assert_eq!(m2c(&steps), whole);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let cuts = (usize::from(data[0]) * 7 + usize::from(data[1]), usize::from(data[2]) * 13);
    let step = usize::from(data[3] % 17) + 1;
    let facts = RequestFacts { stream: true, include_usage: data[3] & 0x80 != 0, estimated_input_tokens: u64::from(data[1]) };
    let mut b = Bytes(&data[4..]);
    let chat = stream(&mut b, chat_event);
    check(&chat, cuts, step, &facts, data[2] & 1 == 1);
    let mut b = Bytes(&data[4..]);
    let anthropic = stream(&mut b, anthropic_event);
    check(&anthropic, cuts, step, &facts, data[2] & 1 == 1);
    check(&data[4..], cuts, step, &facts, data[2] & 1 == 1);
});
