//! Whole (non-streaming) answers and error bodies.
//!
//! Answers are read with typed, borrowing structs (unknown fields ignored,
//! token counts lenient: [`Count`]) and written with serializing ones; the
//! mappings of stop reasons, usage and tool-call ids are the ones the
//! streams use ([`super::common`]), so both paths agree.

use super::common::{
    anthropic_tool_id, anthropic_type_status, cap, error_parts, finish_reason, openai_error_type, stop_reason_after,
    write_json, AnthropicUsage, OpenAiUsage, Text, Usage, ERROR_MESSAGE_MAX_BYTES,
};
use super::ResponseCtx;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use switchboard_shared::anthropic::{error_type, AnthropicError};

/// The upstream's 2xx body could not be read as its API's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// An Anthropic message id for an answer: `msg_` and the upstream's id (a
/// chat id's `chatcmpl-` left out), else the gateway's request id.
pub(crate) fn message_id(upstream: Option<&str>, request_id: &str) -> String {
    match upstream.map(|id| cap(id, 256)).filter(|id| !id.is_empty()) {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", cap(request_id, 256)),
    }
}

/// A chat completion id: `chatcmpl-` and the upstream's id (a message id's
/// `msg_` left out), else the gateway's request id.
pub(crate) fn completion_id(upstream: Option<&str>, request_id: &str) -> String {
    match upstream.map(|id| cap(id, 256)).filter(|id| !id.is_empty()) {
        Some(id) if id.starts_with("chatcmpl-") => id.to_owned(),
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => format!("chatcmpl-{}", cap(request_id, 256)),
    }
}

/// The id for a tool call the upstream gave none: from the request id and
/// the call's ordinal, valid for Anthropic.
pub(crate) fn generated_tool_id(request_id: &str, n: usize) -> String {
    anthropic_tool_id(&format!("toolu_{}_{n}", cap(request_id, 64))).into_owned()
}

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: ChatMessage<'a>,
    #[serde(borrow, default)]
    finish_reason: Text<'a>,
}

/// A chat message's `content`: a string, or (some servers) text parts.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum ChatContent<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Parts(Vec<ChatPart<'a>>),
    #[default]
    None,
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct ChatPart<'a> {
    #[serde(borrow, default)]
    text: Text<'a>,
    #[serde(borrow, default)]
    refusal: Text<'a>,
}

impl ChatContent<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            ChatContent::Text(t) => Cow::Borrowed(t),
            ChatContent::Parts(parts) => {
                Cow::Owned(parts.iter().filter_map(|p| p.text.as_deref().or(p.refusal.as_deref())).collect())
            }
            ChatContent::None | ChatContent::Other(_) => Cow::Borrowed(""),
        }
    }
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow, default)]
    content: ChatContent<'a>,
    #[serde(borrow, default)]
    reasoning_content: Text<'a>,
    /// vLLM's newer name for `reasoning_content` (and OpenRouter's).
    #[serde(borrow, default)]
    reasoning: Text<'a>,
    #[serde(borrow, default)]
    refusal: Text<'a>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow)]
    function: Function<'a>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    arguments: Text<'a>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: super::common::AnthropicUsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Thinking { thinking: &'a str, signature: &'static str },
    Text { text: &'a str },
    ToolUse { id: Cow<'a, str>, name: &'a str, input: Box<RawValue> },
}

/// An OpenAI chat completion → an Anthropic message, in `out`.
///
/// Only the first choice is read (a translated request never asks for
/// more). Its `reasoning_content` (or `reasoning`) becomes a thinking block
/// (with an empty `signature`: none was made), its text (or `refusal`) a text
/// block, each tool call a `tool_use` block whose `input` is the parsed
/// `arguments` — which must be a JSON object (empty counts as `{}`), else the
/// answer is [`Malformed`]. Usage: `input_tokens` = prompt − cached,
/// `cache_read_input_tokens` = cached; without usage, the request's estimate
/// and 0 output.
pub fn chat_to_messages(body: &[u8], ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> Result<(), Malformed> {
    let c: Completion<'_> =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("not a chat completion: {e}")))?;
    let Some(choice) = c.choices.into_iter().next() else {
        return Err(Malformed("a chat completion without choices".into()));
    };
    let m = &choice.message;
    let mut content = Vec::new();
    if let Some(t) = m.reasoning_content.as_deref().or(m.reasoning.as_deref()).filter(|t| !t.is_empty()) {
        content.push(Block::Thinking { thinking: t, signature: "" });
    }
    let text = m.content.text();
    if !text.is_empty() {
        content.push(Block::Text { text: &text });
    }
    if let Some(t) = m.refusal.as_deref().filter(|t| !t.is_empty()) {
        content.push(Block::Text { text: t });
    }
    for (n, call) in m.tool_calls.iter().flatten().enumerate() {
        let args = call.function.arguments.as_deref().unwrap_or("");
        let input = if args.trim().is_empty() {
            RawValue::from_string("{}".into())
        } else {
            match serde_json::from_str::<Value>(args) {
                Ok(v @ Value::Object(_)) => serde_json::value::to_raw_value(&v),
                _ => return Err(Malformed(format!("tool call {n}'s arguments are not a JSON object"))),
            }
        }
        .map_err(|e| Malformed(e.to_string()))?;
        let id = match call.id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => anthropic_tool_id(id),
            None => Cow::Owned(generated_tool_id(ctx.request_id, n)),
        };
        content.push(Block::ToolUse { id, name: call.function.name.as_deref().unwrap_or(""), input });
    }
    let made_calls = content.iter().any(|b| matches!(b, Block::ToolUse { .. }));
    let usage = match &c.usage {
        Some(u) => Usage::from_openai(u),
        None => Usage { input: ctx.facts.estimated_input_tokens, ..Usage::default() },
    };
    let id = message_id(c.id.as_deref(), ctx.request_id);
    let msg = MessageOut {
        id: &id,
        kind: "message",
        role: "assistant",
        model: c.model.as_deref().filter(|m| !m.is_empty()).unwrap_or(ctx.model),
        content,
        stop_reason: stop_reason_after(choice.finish_reason.as_deref().unwrap_or("stop"), made_calls),
        stop_sequence: None,
        usage: usage.anthropic(),
    };
    write_json(out, &msg);
    Ok(())
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(borrow)]
    content: Vec<AnthropicBlock<'a>>,
    #[serde(borrow, default)]
    stop_reason: Text<'a>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicBlock<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Text<'a>,
    #[serde(borrow, default)]
    thinking: Text<'a>,
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: super::common::OpenAiUsageOut,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOutChat<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOutChat<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
pub(crate) struct ToolCallOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: String,
}

/// An Anthropic message → an OpenAI chat completion, in `out`.
///
/// Text blocks are joined into `content` (`null` when there is none),
/// thinking blocks into `reasoning_content`, `tool_use` blocks become
/// `tool_calls` (`arguments` = the compact JSON of `input`); redacted
/// thinking and blocks of other types are left out. Usage: `prompt_tokens`
/// = input + cache reads + cache writes, `cached_tokens` = cache reads.
pub fn messages_to_chat(body: &[u8], ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> Result<(), Malformed> {
    let m: Message<'_> =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("not an Anthropic message: {e}")))?;
    let mut text: Option<String> = None;
    let mut thinking: Option<String> = None;
    let mut calls = Vec::new();
    for b in &m.content {
        match b.kind.as_ref() {
            "text" => text.get_or_insert_with(String::new).push_str(b.text.as_deref().unwrap_or("")),
            "thinking" => thinking.get_or_insert_with(String::new).push_str(b.thinking.as_deref().unwrap_or("")),
            "tool_use" => {
                // Compact: the raw input re-read and written without spacing.
                let arguments = match b.input {
                    Some(raw) => serde_json::from_str::<Value>(raw.get())
                        .ok()
                        .filter(Value::is_object)
                        .and_then(|v| serde_json::to_string(&v).ok())
                        .ok_or_else(|| Malformed("a tool_use block's input is not an object".into()))?,
                    None => "{}".to_owned(),
                };
                calls.push(ToolCallOut {
                    id: b.id.as_deref().unwrap_or(""),
                    kind: "function",
                    function: FunctionOut { name: b.name.as_deref().unwrap_or(""), arguments },
                });
            }
            _ => {}
        }
    }
    let usage = m.usage.as_ref().map(Usage::from_anthropic).unwrap_or_default();
    let id = completion_id(m.id.as_deref(), ctx.request_id);
    let c = CompletionOut {
        id: &id,
        object: "chat.completion",
        created: ctx.created_s,
        model: m.model.as_deref().filter(|m| !m.is_empty()).unwrap_or(ctx.model),
        choices: [ChoiceOut {
            index: 0,
            message: MessageOutChat {
                role: "assistant",
                content: text,
                reasoning_content: thinking,
                tool_calls: calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_reason(m.stop_reason.as_deref().unwrap_or("end_turn")),
        }],
        usage: usage.openai(),
    };
    write_json(out, &c);
    Ok(())
}

/// The message for an error body that says nothing.
fn default_message(status: u16) -> String {
    format!("The upstream answered with status {status}.")
}

/// An upstream's error body (OpenAI's shape, or anything) → Anthropic's
/// error shape for the client, in `out`. Never fails.
///
/// The `type` follows the status ([`error_type`]); the message is the
/// upstream's (any shape: see [`error_parts`]), at most 4 KiB.
pub fn error_to_messages(status: u16, body: &[u8], out: &mut Vec<u8>) {
    let (message, _) = error_parts(body);
    let message = message.unwrap_or_else(|| default_message(status));
    AnthropicError::for_status(status, cap(&message, ERROR_MESSAGE_MAX_BYTES)).write_json(out);
}

#[derive(Serialize)]
pub(crate) struct ChatError<'a> {
    pub error: ChatErrorInner<'a>,
}

#[derive(Serialize)]
pub(crate) struct ChatErrorInner<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<()>,
    pub code: Option<&'a str>,
}

/// An upstream's error body (Anthropic's shape, or anything) → OpenAI's
/// error shape for the client, in `out`. Never fails.
///
/// The `type` follows the status ([`openai_error_type`]); the upstream's own
/// error type (e.g. `overloaded_error`) is kept as `code`; the message is
/// the upstream's, at most 4 KiB.
pub fn error_to_chat(status: u16, body: &[u8], out: &mut Vec<u8>) {
    let (message, kind) = error_parts(body);
    let message = message.unwrap_or_else(|| default_message(status));
    let e = ChatError {
        error: ChatErrorInner {
            message: cap(&message, ERROR_MESSAGE_MAX_BYTES),
            kind: openai_error_type(status),
            param: None,
            code: kind.as_deref(),
        },
    };
    write_json(out, &e);
}

/// Anthropic's error type for an OpenAI stream's error object (its `type`
/// or `code`), for the `event: error` a Messages client gets.
pub(crate) fn anthropic_type_for_openai(kind: Option<&str>) -> &'static str {
    error_type(super::common::openai_type_status(kind.unwrap_or("")))
}

/// OpenAI's error type for an Anthropic error `type`, for the error chunk a
/// chat client gets.
pub(crate) fn openai_type_for_anthropic(kind: Option<&str>) -> &'static str {
    openai_error_type(anthropic_type_status(kind.unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::RequestFacts;
    use serde_json::json;

    const FACTS: RequestFacts = RequestFacts { stream: false, include_usage: false, estimated_input_tokens: 42 };

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { model: "client-model", request_id: "req-1", created_s: 1_700_000_000, facts: &FACTS }
    }

    fn c2m(body: Value) -> Result<Value, Malformed> {
        let mut out = Vec::new();
        chat_to_messages(body.to_string().as_bytes(), &ctx(), &mut out)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    fn m2c(body: Value) -> Result<Value, Malformed> {
        let mut out = Vec::new();
        messages_to_chat(body.to_string().as_bytes(), &ctx(), &mut out)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn a_chat_completion_becomes_a_message() {
        let v = c2m(json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "llama",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.", "reasoning_content": "think",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": [1, 2]}"}},
                    {"id": "functions.f:1", "type": "function", "function": {"name": "f", "arguments": ""}},
                    {"type": "function", "function": {"name": "g", "arguments": "{}"}},
                ]}}],
            "usage": {"prompt_tokens": 130, "completion_tokens": 7, "total_tokens": 137, "prompt_tokens_details": {"cached_tokens": 100}},
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_abc", "type": "message", "role": "assistant", "model": "llama",
                "content": [
                    {"type": "thinking", "thinking": "think", "signature": ""},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1, 2]}},
                    {"type": "tool_use", "id": anthropic_tool_id("functions.f:1"), "name": "f", "input": {}},
                    {"type": "tool_use", "id": generated_tool_id("req-1", 2), "name": "g", "input": {}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 30, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0, "output_tokens": 7},
            })
        );
    }

    #[test]
    fn a_bare_completion_takes_ids_model_and_usage_from_the_request() {
        let v = c2m(json!({"choices": [{"message": {"content": null}, "finish_reason": null}]})).unwrap();
        assert_eq!(v["id"], "msg_req-1");
        assert_eq!(v["model"], "client-model");
        assert_eq!(v["content"], json!([]));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["input_tokens"], 42);
        assert_eq!(v["usage"]["output_tokens"], 0);
        let v = c2m(json!({"choices": [{"message": {"refusal": "No."}, "finish_reason": "content_filter"}]})).unwrap();
        assert_eq!(v["content"], json!([{"type": "text", "text": "No."}]));
        assert_eq!(v["stop_reason"], "refusal");
        let v = c2m(json!({"choices": [{"message": {"content": "x", "reasoning": "r"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": -5, "completion_tokens": 1e30}}))
        .unwrap();
        assert_eq!(v["content"][0], json!({"type": "thinking", "thinking": "r", "signature": ""}));
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["usage"]["input_tokens"], 0);
        assert_eq!(v["usage"]["output_tokens"], u64::MAX);
    }

    #[test]
    fn content_given_as_text_parts_is_read() {
        let v = c2m(json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, "finish_reason": "stop"}]}))
            .unwrap();
        assert_eq!(v["content"], json!([{"type": "text", "text": "ab"}]));
        let v = c2m(json!({"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]})).unwrap();
        assert_eq!(v["content"], json!([]));
    }

    #[test]
    fn a_malformed_completion_is_named() {
        for body in [
            json!({"choices": []}),
            json!({"choices": "x"}),
            json!({"object": "chat.completion"}),
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}}]}),
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":"}}]}}]}),
            json!([1]),
        ] {
            assert!(c2m(body.clone()).is_err(), "{body}");
        }
        for body in [&b""[..], b"nope", b"{\"choices\":[{\"message\":"] {
            assert!(chat_to_messages(body, &ctx(), &mut Vec::new()).is_err());
            assert!(messages_to_chat(body, &ctx(), &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn a_message_becomes_a_chat_completion() {
        let v = m2c(json!({
            "id": "msg_01X", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "zzz"},
                {"type": "text", "text": "Sure. "},
                {"type": "text", "text": "Here."},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"b": { "c" : [1, 2] }, "a": "é"}},
                {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
                {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 7},
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-01X", "object": "chat.completion", "created": 1_700_000_000u64, "model": "claude-x",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "Sure. Here.", "reasoning_content": "hmm", "refusal": null,
                    "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":\"é\",\"b\":{\"c\":[1,2]}}"}},
                        {"id": "toolu_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                    ]}}],
                "usage": {"prompt_tokens": 130, "completion_tokens": 7, "total_tokens": 137, "prompt_tokens_details": {"cached_tokens": 100}},
            })
        );
        let v = m2c(json!({"content": [], "stop_reason": "max_tokens"})).unwrap();
        assert_eq!(v["id"], "chatcmpl-req-1");
        assert_eq!(v["model"], "client-model");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 0);
        assert!(m2c(json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]})).is_err());
        assert!(m2c(json!({"content": "text"})).is_err());
    }

    #[test]
    fn a_stop_after_tool_calls_is_tool_use() {
        let call = json!({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let v = c2m(json!({"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "stop"}]})).unwrap();
        assert_eq!(v["stop_reason"], "tool_use");
        let v = c2m(json!({"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "length"}]})).unwrap();
        assert_eq!(v["stop_reason"], "max_tokens");
    }

    #[test]
    fn stop_reasons_agree_between_the_two_directions() {
        for (stop, finish) in
            [("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter")]
        {
            let v = m2c(json!({"content": [], "stop_reason": stop})).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], finish);
            let v = c2m(json!({"choices": [{"message": {}, "finish_reason": finish}]})).unwrap();
            assert_eq!(v["stop_reason"], stop);
        }
    }

    fn err(f: fn(u16, &[u8], &mut Vec<u8>), status: u16, body: &[u8]) -> Value {
        let mut out = Vec::new();
        f(status, body, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn upstream_errors_take_the_clients_shape() {
        let v = err(
            error_to_messages,
            429,
            br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(v, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}));
        let v = err(error_to_messages, 502, b"<html>Bad Gateway</html>");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "<html>Bad Gateway</html>");
        let v = err(error_to_messages, 529, b"");
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(v["error"]["message"], "The upstream answered with status 529.");
        let v =
            err(error_to_chat, 529, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert_eq!(
            v,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
        );
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "server_error"),
            (0, "server_error"),
            (u16::MAX, "server_error"),
        ] {
            assert_eq!(err(error_to_chat, status, b"x")["error"]["type"], kind, "{status}");
        }
        let huge = format!("{{\"error\":{{\"message\":\"{}\"}}}}", "😀".repeat(4000));
        let v = err(error_to_chat, 400, huge.as_bytes());
        assert!(v["error"]["message"].as_str().unwrap().len() <= ERROR_MESSAGE_MAX_BYTES);
        let v = err(error_to_messages, 400, &[0xff; 10_000]);
        assert!(v["error"]["message"].as_str().unwrap().len() <= ERROR_MESSAGE_MAX_BYTES);
        assert_eq!(err(error_to_messages, 400, b"{\"error\":{}}")["error"]["message"], "{\"error\":{}}");
    }
}
