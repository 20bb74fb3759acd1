//! The mock upstream's Anthropic Messages API (`POST /v1/messages`): whole
//! answers and SSE streams with text, thinking and tool use, prompt-cache
//! usage, Anthropic-shaped errors (529 `overloaded_error` included) and a
//! stream cut mid-way — steered per request by the same [`Behaviour`] as
//! the OpenAI side (the `mock` object of the body, or `x-mock`).
//!
//! Usage it reports: `input_tokens` = ceil(body bytes / 4) minus the cache
//! reads and writes asked for (`cache_read_tokens`, `cache_write_tokens`),
//! `output_tokens` = `tokens` (cumulative in `message_delta`, 1 in
//! `message_start`, as Anthropic sends).

use super::{aborted, head, push_json, send, wait_watching, Behaviour, Ctx, Raw};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use switchboard_dataplane::fmt::push_chunk;

#[derive(Deserialize, Default)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    mock: Option<Behaviour>,
}

/// An Anthropic error response (`{"type":"error","error":{"type","message"}}`).
pub(super) fn push_error(out: &mut Vec<u8>, status: u16, message: &str) {
    let kind = switchboard_shared::anthropic::error_type(status);
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    push_json(out, status, body.to_string().as_bytes());
}

/// Whether the conversation's last message hands back a tool result: then
/// the answer is text (the tool round trip's end), not another tool call.
fn ends_with_tool_result(messages: &[Value]) -> bool {
    let Some(last) = messages.last() else { return false };
    last["content"].as_array().is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": ceil(body bytes / 4)}`
/// (the mock's count, the same `input_tokens` a message with this body reports).
pub(super) async fn count_tokens<S: AsyncWriteRent>(
    io: &mut S,
    out: &mut Vec<u8>,
    body: &[u8],
    has_version: bool,
) -> bool {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            push_error(out, 400, &format!("mock: bad JSON: {e}"));
            return send(io, out).await;
        }
    };
    if !has_version || req.model.is_none() || req.messages.is_none() {
        push_error(out, 400, "mock: anthropic-version, model and messages are required");
        return send(io, out).await;
    }
    let n = (body.len() as u64).div_ceil(4);
    push_json(out, 200, json!({"input_tokens": n}).to_string().as_bytes());
    send(io, out).await
}

pub(super) async fn answer<S: AsyncReadRent + AsyncWriteRent + Raw>(
    ctx: &Ctx,
    io: &mut S,
    out: &mut Vec<u8>,
    body: &[u8],
    header_behaviour: Behaviour,
    has_version: bool,
) -> bool {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            push_error(out, 400, &format!("mock: bad JSON: {e}"));
            return send(io, out).await;
        }
    };
    if !has_version {
        push_error(out, 400, "anthropic-version: header is required");
        return send(io, out).await;
    }
    let (Some(model), Some(_), Some(messages)) = (&req.model, req.max_tokens, &req.messages) else {
        push_error(out, 400, "mock: model, max_tokens and messages are required");
        return send(io, out).await;
    };
    let b = req.mock.clone().unwrap_or_default().over(&header_behaviour.over(&ctx.cfg.behaviour));
    let delay = b.delay_ms.unwrap_or(0);
    if delay > 0 && !wait_watching(io, Duration::from_millis(delay)).await {
        return aborted(ctx);
    }
    if let Some(status) = b.status.filter(|s| *s >= 300) {
        let message = if status == 529 { "Overloaded".to_string() } else { format!("mock: injected status {status}") };
        push_error(out, status, &message);
        return send(io, out).await;
    }
    let tokens = b.tokens.unwrap_or(16) as u64;
    let cache_read = b.cache_read_tokens.unwrap_or(0);
    let cache_write = b.cache_write_tokens.unwrap_or(0);
    let input = (body.len() as u64).div_ceil(4).saturating_sub(cache_read + cache_write);
    let id = {
        let n = ctx.seq.get().wrapping_add(1);
        ctx.seq.set(n);
        n
    };
    let tool = (b.tool_use == Some(true) && !ends_with_tool_result(messages))
        .then(|| req.tools.as_ref().and_then(|t| t.first()).and_then(|t| t["name"].as_str()).unwrap_or("tool"))
        .map(str::to_string);
    let thinking = b.thinking == Some(true);
    let stop_reason = if tool.is_some() { "tool_use" } else { "end_turn" };
    let usage = |output: u64| {
        json!({
            "input_tokens": input,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output,
        })
    };
    let text = ctx.cfg.token_text.as_str();
    let tool_id = format!("toolu_mock_{id}");
    let tool_input = json!({"location": "Paris", "unit": "celsius"});
    if !req.stream.unwrap_or(false) {
        let mut content = Vec::new();
        if thinking {
            content.push(json!({"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl"}));
        }
        content.push(json!({"type": "text", "text": text.repeat(tokens as usize)}));
        if let Some(name) = &tool {
            content.push(json!({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}));
        }
        let msg = json!({
            "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage(tokens),
        });
        push_json(out, 200, msg.to_string().as_bytes());
        return send(io, out).await;
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let start = json!({"type": "message_start", "message": {
        "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(1),
    }});
    head(out, 200, "text/event-stream", None);
    push_chunk(out, event("message_start", start).as_bytes());
    push_chunk(out, event("ping", json!({"type": "ping"})).as_bytes());
    let mut index = 0;
    if thinking {
        let blocks = [
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": "Let me think."}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}}),
            ),
            event("content_block_stop", json!({"type": "content_block_stop", "index": index})),
        ];
        for e in blocks {
            push_chunk(out, e.as_bytes());
        }
        index += 1;
    }
    let block_start =
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}});
    push_chunk(out, event("content_block_start", block_start).as_bytes());
    let delta = event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
    );
    if !send(io, out).await {
        return aborted(ctx);
    }
    let interval = b.interval_ms.unwrap_or(0);
    for i in 0..tokens {
        if b.drop_after == Some(i as u32) {
            return false;
        }
        if b.error_after == Some(i as u32) {
            let e = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            push_chunk(out, event("error", e).as_bytes());
            out.extend_from_slice(b"0\r\n\r\n");
            return send(io, out).await;
        }
        if interval > 0 && i > 0 {
            monoio::time::sleep(Duration::from_millis(interval)).await;
        }
        push_chunk(out, delta.as_bytes());
        if interval > 0 && !send(io, out).await {
            return aborted(ctx);
        }
    }
    if b.drop_after == Some(tokens as u32) {
        send(io, out).await;
        return false;
    }
    push_chunk(out, event("content_block_stop", json!({"type": "content_block_stop", "index": index})).as_bytes());
    if let Some(name) = &tool {
        index += 1;
        let start = json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}});
        push_chunk(out, event("content_block_start", start).as_bytes());
        let args = tool_input.to_string();
        let (a, z) = args.split_at(args.len() / 2);
        for part in ["", a, z] {
            let d = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": part}});
            push_chunk(out, event("content_block_delta", d).as_bytes());
        }
        push_chunk(out, event("content_block_stop", json!({"type": "content_block_stop", "index": index})).as_bytes());
    }
    let end = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": tokens}});
    push_chunk(out, event("message_delta", end).as_bytes());
    push_chunk(out, event("message_stop", json!({"type": "message_stop"})).as_bytes());
    out.extend_from_slice(b"0\r\n\r\n");
    send(io, out).await || aborted(ctx)
}
