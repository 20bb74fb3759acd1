//! The Messages <-> chat translators, against what passthrough does with the
//! same bytes (the usage scan and the usage-chunk strip), and the JSON parse
//! each event needs with serde_json (what the translators use) against
//! simd-json (which needs a mutable copy of each event).
//! Run: `cargo bench -p switchboard-benches --bench translate`.
//! The numbers and the conclusion are in docs/anthropic.md ("What is translated").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use std::borrow::Cow;
use switchboard_benches::chat_body;
use switchboard_dataplane::request;
use switchboard_dataplane::translate::stream::{ChatToMessages, MessagesToChat};
use switchboard_dataplane::translate::{request as treq, response as tresp, RequestFacts, ResponseCtx};
use switchboard_dataplane::usage::scan::{UsageScan, UsageStrip};

const TOKENS: usize = 100;

const CHAT_TOKEN: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}"#;
const ANTHROPIC_TOKEN: &str =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word "}}"#;

/// An OpenAI chat stream of `TOKENS` content chunks, a finish and a usage chunk.
fn chat_stream() -> Vec<u8> {
    let mut s = String::from(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    );
    for _ in 0..TOKENS {
        s.push_str(&format!("data: {CHAT_TOKEN}\n\n"));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":100,\"total_tokens\":112}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

/// An Anthropic Messages stream of `TOKENS` text deltas, as Anthropic sends it.
fn anthropic_stream() -> Vec<u8> {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
         event: ping\ndata: {\"type\":\"ping\"}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    for _ in 0..TOKENS {
        s.push_str(&format!("event: content_block_delta\ndata: {ANTHROPIC_TOKEN}\n\n"));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

/// A Messages request of about `bytes` bytes, as Claude Code sends one
/// (system blocks, tools, a tool round trip).
fn messages_body(bytes: usize) -> Vec<u8> {
    let mut content = String::new();
    while content.len() + 900 < bytes {
        content.push_str("The quick brown fox jumps over the lazy dog. ");
    }
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,"temperature":1,"metadata":{{"user_id":"u1"}},
"system":[{{"type":"text","text":"You are Claude Code."}},{{"type":"text","text":"Be terse.","cache_control":{{"type":"ephemeral"}}}}],
"tools":[{{"name":"Read","description":"Reads a file.","input_schema":{{"type":"object","properties":{{"path":{{"type":"string"}}}},"required":["path"]}}}}],
"messages":[{{"role":"user","content":"{content}"}},
{{"role":"assistant","content":[{{"type":"text","text":"Reading."}},{{"type":"tool_use","id":"toolu_1","name":"Read","input":{{"path":"a.rs"}}}}]}},
{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_1","content":"fn main() {{}}"}}]}}]}}"#
    )
    .into_bytes()
}

fn ctx(facts: &RequestFacts) -> ResponseCtx<'_> {
    ResponseCtx { model: "m", request_id: "0123456789abcdef", created_s: 1_795_305_600, facts }
}

/// One stream through passthrough's filters: the usage scan and the strip,
/// one event per read (the relay's worst case).
fn passthrough(stream: &[u8], out: &mut Vec<u8>) -> usize {
    let mut scan = UsageScan::default();
    let mut strip = UsageStrip::default();
    for ev in stream.split_inclusive(|&b| b == b'\n') {
        scan.feed(ev);
        strip.filter(ev, out);
    }
    strip.finish(out);
    out.len()
}

fn per_stream(c: &mut Criterion) {
    let facts = RequestFacts { stream: true, include_usage: true, estimated_input_tokens: 12 };
    let chat = chat_stream();
    let anthropic = anthropic_stream();
    let mut g = c.benchmark_group("translate_stream_100_tokens");
    g.throughput(Throughput::Elements(TOKENS as u64));
    let mut out = Vec::with_capacity(64 * 1024);
    g.bench_function("passthrough_chat_scan_and_strip", |b| {
        b.iter(|| {
            out.clear();
            passthrough(black_box(&chat), &mut out)
        })
    });
    g.bench_function("passthrough_messages_scan_and_strip", |b| {
        b.iter(|| {
            out.clear();
            passthrough(black_box(&anthropic), &mut out)
        })
    });
    g.bench_function("chat_to_messages", |b| {
        b.iter(|| {
            out.clear();
            let mut t = ChatToMessages::new(&ctx(&facts));
            for ev in black_box(&chat).split_inclusive(|&b| b == b'\n') {
                t.feed(ev, &mut out);
            }
            t.finish(&mut out);
            out.len()
        })
    });
    g.bench_function("messages_to_chat", |b| {
        b.iter(|| {
            out.clear();
            let mut t = MessagesToChat::new(&ctx(&facts));
            for ev in black_box(&anthropic).split_inclusive(|&b| b == b'\n') {
                t.feed(ev, &mut out);
            }
            t.finish(&mut out);
            out.len()
        })
    });
    g.finish();
}

// The shapes the translators read, for the parse-only comparison.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Choice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<EventDelta<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct EventDelta<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

fn per_event(c: &mut Criterion) {
    let facts = RequestFacts { stream: true, include_usage: true, estimated_input_tokens: 12 };
    let mut g = c.benchmark_group("translate_event");
    g.throughput(Throughput::Elements(1));
    let chat_ev = format!("data: {CHAT_TOKEN}\n\n");
    let anthropic_ev = format!("event: content_block_delta\ndata: {ANTHROPIC_TOKEN}\n\n");
    let mut out = Vec::with_capacity(4096);
    g.bench_function("passthrough_scan_chat_token", |b| {
        b.iter(|| {
            let mut s = UsageScan::default();
            s.feed(black_box(chat_ev.as_bytes()));
            s.text_fragments
        })
    });
    g.bench_function("chat_to_messages_token", |b| {
        let mut t = ChatToMessages::new(&ctx(&facts));
        t.feed(chat_ev.as_bytes(), &mut out);
        b.iter(|| {
            out.clear();
            t.feed(black_box(chat_ev.as_bytes()), &mut out);
            out.len()
        })
    });
    g.bench_function("messages_to_chat_token", |b| {
        let mut t = MessagesToChat::new(&ctx(&facts));
        b.iter(|| {
            out.clear();
            t.feed(black_box(anthropic_ev.as_bytes()), &mut out);
            out.len()
        })
    });
    g.bench_function("parse_chat_token_serde_json", |b| {
        b.iter(|| serde_json::from_str::<Chunk<'_>>(black_box(CHAT_TOKEN)).unwrap().choices.map(|c| c.len()))
    });
    let mut copy = Vec::with_capacity(1024);
    g.bench_function("parse_chat_token_simd_json_with_copy", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(CHAT_TOKEN.as_bytes()));
            simd_json::serde::from_slice::<Chunk<'_>>(&mut copy).unwrap().choices.map(|c| c.len())
        })
    });
    g.bench_function("parse_anthropic_token_serde_json", |b| {
        b.iter(|| serde_json::from_str::<Event<'_>>(black_box(ANTHROPIC_TOKEN)).unwrap().index)
    });
    g.bench_function("parse_anthropic_token_simd_json_with_copy", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(ANTHROPIC_TOKEN.as_bytes()));
            simd_json::serde::from_slice::<Event<'_>>(&mut copy).unwrap().index
        })
    });
    g.finish();
}

fn per_request(c: &mut Criterion) {
    let facts = RequestFacts { stream: false, include_usage: false, estimated_input_tokens: 12 };
    let mut g = c.benchmark_group("translate_request");
    let messages = messages_body(10 * 1024);
    let chat = chat_body(10 * 1024);
    let mut out = Vec::with_capacity(32 * 1024);
    g.throughput(Throughput::Bytes(messages.len() as u64));
    g.bench_function("passthrough_scan_10k_chat_body", |b| b.iter(|| request::scan(black_box(&chat)).unwrap().stream));
    g.bench_function("messages_to_chat_10k", |b| {
        b.iter(|| {
            out.clear();
            treq::messages_to_chat(black_box(&messages), Some("llama"), &mut out).unwrap()
        })
    });
    g.bench_function("chat_to_messages_10k", |b| {
        b.iter(|| {
            out.clear();
            treq::chat_to_messages(black_box(&chat), Some("claude"), &mut out).unwrap()
        })
    });
    let completion = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}}}"#,
        "word ".repeat(200)
    );
    let message = format!(
        r#"{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{{"type":"text","text":"{}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":12,"output_tokens":200}}}}"#,
        "word ".repeat(200)
    );
    g.throughput(Throughput::Bytes(completion.len() as u64));
    g.bench_function("passthrough_scan_1k_completion", |b| {
        b.iter(|| {
            let mut s = UsageScan::default();
            s.feed(black_box(completion.as_bytes()));
            s.total_tokens
        })
    });
    g.bench_function("response_chat_to_messages_1k", |b| {
        b.iter(|| {
            out.clear();
            tresp::chat_to_messages(black_box(completion.as_bytes()), &ctx(&facts), &mut out).unwrap()
        })
    });
    g.bench_function("response_messages_to_chat_1k", |b| {
        b.iter(|| {
            out.clear();
            tresp::messages_to_chat(black_box(message.as_bytes()), &ctx(&facts), &mut out).unwrap()
        })
    });
    g.finish();
}

criterion_group!(translate, per_event, per_stream, per_request);
criterion_main!(translate);
