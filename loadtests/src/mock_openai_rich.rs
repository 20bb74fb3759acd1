//! The mock's OpenAI chat answers with more than text, as vLLM, llama.cpp
//! and OpenAI send them: tool calls (`tool_use`, `tool_calls` of them in
//! parallel), reasoning (`thinking`: `reasoning_content`, as vLLM and
//! llama.cpp's reasoning parsers send it) and prompt-cache reads
//! (`cache_read_tokens`: `usage.prompt_tokens_details.cached_tokens`, which
//! `prompt_tokens` includes) — whole and streamed, steered per request by the
//! same [`Behaviour`].
//!
//! Streamed tool calls come as OpenAI sends them: one chunk opening each call
//! (`index`, `id`, `type`, `function.name`, empty `arguments`), then its
//! arguments in fragments, each in a chunk of its own; the finish chunk says
//! `tool_calls`. A conversation whose last message is a tool result gets
//! text (the round trip's end).

use super::{aborted, head, push_json, send, Behaviour, Ctx};
use monoio::io::AsyncWriteRent;
use serde_json::{json, Value};
use std::time::Duration;
use switchboard_dataplane::fmt::push_chunk;

/// The arguments every mock tool call carries, in the fragments it streams them in.
const ARGUMENT_FRAGMENTS: [&str; 3] = ["{\"location\": ", "\"Paris\", \"unit\": ", "\"celsius\"}"];
const REASONING: [&str; 2] = ["Let me think", " about it."];

/// What the request asks for that this answer reads.
pub(super) struct Asked<'a> {
    pub model: &'a str,
    pub stream: bool,
    pub include_usage: bool,
    pub tools: &'a [Value],
    pub messages: &'a [Value],
}

/// Whether this behaviour needs the rich answer (else the plain one serves).
pub(super) fn wanted(b: &Behaviour) -> bool {
    b.tool_use == Some(true) || b.thinking == Some(true) || b.cache_read_tokens.is_some()
}

pub(super) async fn answer<S: AsyncWriteRent>(
    ctx: &Ctx,
    io: &mut S,
    out: &mut Vec<u8>,
    a: &Asked<'_>,
    body_len: usize,
    b: &Behaviour,
) -> bool {
    let id = ctx.seq.get();
    let tokens = b.tokens.unwrap_or(16);
    let prompt = body_len.div_ceil(4) as u64;
    let cached = b.cache_read_tokens.unwrap_or(0).min(prompt);
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": tokens,
        "total_tokens": prompt + tokens as u64,
    });
    if b.cache_read_tokens.is_some() {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    let last_is_tool = a.messages.last().is_some_and(|m| m["role"] == "tool");
    let calls = if b.tool_use == Some(true) && !last_is_tool && !a.tools.is_empty() {
        b.tool_calls.unwrap_or(1).clamp(1, 16) as usize
    } else {
        0
    };
    let tool_name =
        |i: usize| a.tools.get(i % a.tools.len().max(1)).and_then(|t| t["function"]["name"].as_str()).unwrap_or("tool");
    let call_id = |i: usize| format!("call_mock_{id}_{i}");
    let thinking = b.thinking == Some(true);
    let text = ctx.cfg.token_text.repeat(tokens as usize);
    let finish = if calls > 0 { "tool_calls" } else { "stop" };
    if !a.stream {
        let mut message = json!({"role": "assistant", "content": if calls > 0 { Value::Null } else { json!(text) }});
        if thinking {
            message["reasoning_content"] = json!(REASONING.concat());
        }
        if calls > 0 {
            let list: Vec<Value> = (0..calls)
                .map(|i| {
                    json!({"id": call_id(i), "type": "function",
                           "function": {"name": tool_name(i), "arguments": ARGUMENT_FRAGMENTS.concat()}})
                })
                .collect();
            message["tool_calls"] = json!(list);
        }
        let body = json!({
            "id": format!("chatcmpl-mock-{id}"), "object": "chat.completion", "created": 1_700_000_000u64,
            "model": a.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": usage,
        });
        push_json(out, 200, body.to_string().as_bytes());
        return send(io, out).await;
    }
    let chunk = |delta: Value, finish: Option<&str>| -> String {
        let c = json!({
            "id": format!("chatcmpl-mock-{id}"), "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": a.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    if thinking {
        events.extend(REASONING.iter().map(|r| chunk(json!({"reasoning_content": r}), None)));
    }
    if calls == 0 {
        let word = &ctx.cfg.token_text;
        events.extend((0..tokens).map(|_| chunk(json!({"content": word}), None)));
    }
    for i in 0..calls {
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call_id(i), "type": "function",
                                   "function": {"name": tool_name(i), "arguments": ""}}]}),
            None,
        ));
        events.extend(
            ARGUMENT_FRAGMENTS
                .iter()
                .map(|f| chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": f}}]}), None)),
        );
    }
    events.push(chunk(json!({}), Some(finish)));
    if a.include_usage {
        let u = json!({
            "id": format!("chatcmpl-mock-{id}"), "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": a.model, "choices": [], "usage": usage,
        });
        events.push(format!("data: {u}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    head(out, 200, "text/event-stream", None);
    let interval = b.interval_ms.unwrap_or(0);
    for (i, e) in events.iter().enumerate() {
        if b.drop_after.is_some_and(|n| i as u64 > n as u64) {
            // Cut mid-stream: the connection closes without the rest.
            let _ = send(io, out).await;
            return false;
        }
        push_chunk(out, e.as_bytes());
        if interval > 0 {
            if !send(io, out).await {
                return aborted(ctx);
            }
            monoio::time::sleep(Duration::from_millis(interval)).await;
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    send(io, out).await || aborted(ctx)
}
