//! SSE streams, event by event over any split of the upstream's (deframed)
//! bytes; output is the client's SSE text (the relay frames it).
//!
//! Each translator keeps the upstream's trailing partial event (at most
//! [`EVENT_MAX_BYTES`]: a longer event ends the stream with an error event)
//! and a little state: the open content block, the tool calls seen, the
//! usage so far. Every complete event is parsed as JSON once (typed,
//! borrowing structs) and answered with whole events of the client's API,
//! so the output depends only on the events, never on how the bytes were
//! split. Comments (`: keep-alive`) and events without data are ignored;
//! so are the `event:`, `id:` and `retry:` lines (each event's JSON names
//! its type).

use super::common::{
    anthropic_tool_id, error_parts, finish_reason, stop_reason, write_json, AnthropicUsage, AnthropicUsageOut, Count,
    OpenAiUsage, OpenAiUsageOut, Text, Usage, EVENT_MAX_BYTES, TOOL_CALLS_MAX,
};
use super::response::{
    anthropic_type_for_openai, completion_id, generated_tool_id, message_id, openai_type_for_anthropic, ChatError,
    ChatErrorInner,
};
use super::ResponseCtx;
use crate::sse::{event_data, next_event};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use switchboard_shared::anthropic::AnthropicError;

/// How an upstream stream ended, once [`ChatToMessages::finish`] or
/// [`MessagesToChat::finish`] is called at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// It ended properly: the client's closing events are written.
    Complete,
    /// The upstream sent an error event: it is translated and written; nothing follows.
    Errored,
    /// It stopped without its end: nothing more is written (the relay adds an error event).
    Unfinished,
    /// The upstream ended (`[DONE]`) without ever saying why the generation
    /// stopped, where it must ([`ChatToMessages::require_finish`]): a
    /// generation cut short, not passed off as complete. Nothing more is
    /// written (the relay adds an `upstream_truncated` error event).
    Truncated,
}

/// The most content blocks one streamed Anthropic answer may open (the
/// state kept per block is small, but it is bounded).
const BLOCKS_MAX: usize = 4 * TOOL_CALLS_MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Open,
    Done,
    Errored,
    /// `[DONE]` without a finish reason, where one is required.
    Truncated,
}

/// An event longer than [`EVENT_MAX_BYTES`].
struct TooBig;

/// The upstream's bytes cut into events: complete ones are handed on as they
/// come (straight from the input when nothing is pending), the trailing
/// partial one is kept.
#[derive(Default)]
struct Framer {
    pending: Vec<u8>,
}

impl Framer {
    fn feed(&mut self, input: &[u8], f: &mut impl FnMut(&[u8])) -> Result<(), TooBig> {
        if self.pending.is_empty() {
            let used = each_event(input, f)?;
            self.keep(&input[used..])
        } else {
            self.pending.extend_from_slice(input);
            let pending = std::mem::take(&mut self.pending);
            let used = each_event(&pending, f);
            self.pending = pending;
            match used {
                Ok(used) => {
                    self.pending.drain(..used);
                    self.check()
                }
                Err(e) => {
                    self.pending.clear();
                    Err(e)
                }
            }
        }
    }

    fn keep(&mut self, rest: &[u8]) -> Result<(), TooBig> {
        // A partial event is a prefix of its content, so one already over
        // the cap will be over it whole: the verdict does not depend on
        // where the input was split.
        if rest.len() > EVENT_MAX_BYTES {
            return Err(TooBig);
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    fn check(&mut self) -> Result<(), TooBig> {
        if self.pending.len() > EVENT_MAX_BYTES {
            self.pending.clear();
            return Err(TooBig);
        }
        Ok(())
    }

    /// What is left at the stream's end: an event without its blank line.
    fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

fn each_event(buf: &[u8], f: &mut impl FnMut(&[u8])) -> Result<usize, TooBig> {
    let mut used = 0;
    while let Some(ev) = next_event(&buf[used..]) {
        let content = &buf[used..used + ev.content];
        if content.len() > EVENT_MAX_BYTES {
            return Err(TooBig);
        }
        if !content.is_empty() {
            f(content);
        }
        used += ev.end;
    }
    Ok(used)
}

/// An event's data, trimmed; `None` for a comment or an event without data.
fn data_of(content: &[u8]) -> Option<Cow<'_, [u8]>> {
    let data = event_data(content)?;
    let trimmed = data.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.len() == data.len() {
        return Some(data);
    }
    Some(Cow::Owned(trimmed.to_vec()))
}

/// Whether the bytes left at a stream's end are an event that only lacks
/// its blank line (`data: [DONE]`, or a whole JSON object), not one cut off.
fn whole_event(rest: &[u8]) -> bool {
    match data_of(rest) {
        Some(data) => *data == *b"[DONE]" || serde_json::from_slice::<IgnoredAny>(&data).is_ok(),
        None => false,
    }
}

const TOO_BIG: &str = "The upstream sent a stream event over 1 MiB.";

// ---- OpenAI chunks → Anthropic events ----

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Count,
    #[serde(borrow, default)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Text<'a>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow, default)]
    content: Text<'a>,
    #[serde(borrow, default)]
    reasoning_content: Text<'a>,
    #[serde(borrow, default)]
    reasoning: Text<'a>,
    #[serde(borrow, default)]
    refusal: Text<'a>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default)]
    index: Count,
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    arguments: Text<'a>,
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: AnthropicUsageOut,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text { text: &'static str },
    Thinking { thinking: &'static str, signature: &'static str },
    ToolUse { id: &'a str, name: &'a str, input: Empty },
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum DeltaOut<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: AnthropicUsageOut,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: &'static str,
}

fn emit<T: Serialize>(out: &mut Vec<u8>, name: &str, v: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(out, v);
    out.extend_from_slice(b"\n\n");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Text,
    Thinking,
    Tool,
}

struct ToolSlot {
    /// The chunk's tool-call `index`.
    upstream_index: u64,
    upstream_id: Option<String>,
    block: u32,
    /// The arguments so far (up to [`TOOL_ARGUMENTS_MAX`]), checked at the
    /// end: a call whose arguments never form a JSON object is the
    /// upstream's failure, not a tool call the client would run.
    arguments: String,
}

/// The most argument bytes one streamed tool call may have (they are kept to
/// be checked at the stream's end).
const TOOL_ARGUMENTS_MAX: usize = 4 << 20;

/// OpenAI chat chunks from the upstream → Anthropic Messages events for the client.
///
/// - `message_start` goes out with the first chunk: `msg_` + its id, its
///   model (else the client's), and `input_tokens` from the usage the
///   upstream reported so far or else the request's estimate (never 0 for a
///   prompt), with `cached_tokens` as `cache_read_input_tokens`.
/// - `reasoning_content` (or `reasoning`) streams as a thinking block, text
///   (and `refusal`) as a text block, each tool call (a new chunk tool
///   `index`, or a new `id` at a seen index) as a `tool_use` block whose
///   `arguments` fragments go out as `input_json_delta`s as they come.
///   Blocks get increasing indexes; the open one is stopped before another
///   starts, and when the `finish_reason` arrives.
/// - At `[DONE]` — or, if the stream ends without it after a
///   `finish_reason`, in [`finish`](Self::finish) — `message_delta` (the
///   stop reason, the last usage reported: exact input, cache reads,
///   cumulative output) and `message_stop`. Without any usage from the
///   upstream the counts are the estimate and the number of content chunks.
/// - `data: {"error":…}` → Anthropic's `event: error`, and nothing after.
pub struct ChatToMessages {
    framer: Framer,
    st: C2M,
}

struct C2M {
    request_id: String,
    model: String,
    estimated_input: u64,
    phase: Phase,
    started: bool,
    open: Option<(Kind, u32)>,
    next_index: u32,
    tools: Vec<ToolSlot>,
    stop: Option<&'static str>,
    usage: Option<Usage>,
    fragments: u64,
    require_finish: bool,
}

impl ChatToMessages {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        ChatToMessages {
            framer: Framer::default(),
            st: C2M {
                request_id: ctx.request_id.to_owned(),
                model: ctx.model.to_owned(),
                estimated_input: ctx.facts.estimated_input_tokens,
                phase: Phase::Open,
                started: false,
                open: None,
                next_index: 0,
                tools: Vec::new(),
                stop: None,
                usage: None,
                fragments: 0,
                require_finish: false,
            },
        }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.st.phase != Phase::Open {
            return;
        }
        let st = &mut self.st;
        if self.framer.feed(input, &mut |ev| st.event(ev, out)).is_err() {
            self.st.fail(out, "api_error", TOO_BIG);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let rest = self.framer.take_rest();
        if whole_event(&rest) {
            self.st.event(&rest, out);
        }
        match self.st.phase {
            Phase::Done => StreamEnd::Complete,
            Phase::Errored => StreamEnd::Errored,
            Phase::Truncated => StreamEnd::Truncated,
            Phase::Open if self.st.stop.is_some() => {
                self.st.close(out);
                if self.st.phase == Phase::Errored {
                    StreamEnd::Errored
                } else {
                    StreamEnd::Complete
                }
            }
            Phase::Open => StreamEnd::Unfinished,
        }
    }

    /// A stream that ends without any `finish_reason` is a truncated
    /// generation ([`StreamEnd::Truncated`]), unless the upstream is known
    /// to omit it (`require_finish_reason = false` on its provider).
    pub fn require_finish(&mut self, yes: bool) {
        self.st.require_finish = yes;
    }

    /// The upstream's own end (`[DONE]`) or its error event went by: what
    /// follows (a close without the chunked body's end) is no failure.
    pub fn upstream_ended(&self) -> bool {
        self.st.phase != Phase::Open
    }
}

impl C2M {
    fn event(&mut self, content: &[u8], out: &mut Vec<u8>) {
        if self.phase != Phase::Open {
            return;
        }
        let Some(data) = data_of(content) else {
            // A keep-alive comment from the upstream: Anthropic's own
            // keep-alive, once the message has started (idle connections
            // stay open, and a client that left is noticed by the write).
            if self.started && content.first() == Some(&b':') {
                emit(out, "ping", &TypeOnly { kind: "ping" });
            }
            return;
        };
        if *data == *b"[DONE]" {
            if self.require_finish && self.stop.is_none() {
                // Never told why it stopped: cut short (llama-cpp-python
                // interrupted, a server restarted), not a complete answer.
                self.phase = Phase::Truncated;
            } else {
                self.close(out);
            }
            return;
        }
        let chunk: Chunk<'_> = match serde_json::from_slice(&data) {
            Ok(c) => c,
            Err(_) => {
                self.fail(out, "api_error", "The upstream sent a stream event that is not a chat completion chunk.");
                return;
            }
        };
        if chunk.error.is_some() {
            let (message, kind) = error_parts(&data);
            let message = message.unwrap_or_else(|| "The upstream's stream failed.".into());
            self.fail(out, anthropic_type_for_openai(kind.as_deref()), &message);
            return;
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage::from_openai(u));
        }
        self.start(chunk.id.as_deref(), chunk.model.as_deref(), out);
        for choice in chunk.choices.iter().flatten() {
            if choice.index.0.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(d) = &choice.delta {
                if let Some(t) = d.reasoning_content.as_deref().or(d.reasoning.as_deref()).filter(|t| !t.is_empty()) {
                    self.block(Kind::Thinking, out);
                    self.delta(DeltaOut::Thinking { thinking: t }, out);
                }
                for t in [d.content.as_deref(), d.refusal.as_deref()].into_iter().flatten() {
                    if !t.is_empty() {
                        self.block(Kind::Text, out);
                        self.delta(DeltaOut::Text { text: t }, out);
                    }
                }
                for (pos, call) in d.tool_calls.iter().flatten().enumerate() {
                    if !self.tool_delta(pos, call, out) {
                        return;
                    }
                }
            }
            if let Some(f) = choice.finish_reason.as_deref() {
                self.stop = Some(stop_reason(f));
                self.stop_open(out);
            }
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = match self.usage {
            Some(u) => Usage { output: 0, ..u },
            None => Usage { input: self.estimated_input, ..Usage::default() },
        };
        let id = message_id(id, &self.request_id);
        let start = MessageStart {
            kind: "message_start",
            message: StartMessage {
                id: &id,
                kind: "message",
                role: "assistant",
                model: model.filter(|m| !m.is_empty()).unwrap_or(&self.model),
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage: usage.anthropic(),
            },
        };
        emit(out, "message_start", &start);
    }

    /// Make the open block one of `kind` (text or thinking), opening a new one if needed.
    fn block(&mut self, kind: Kind, out: &mut Vec<u8>) {
        if matches!(self.open, Some((k, _)) if k == kind) {
            return;
        }
        self.stop_open(out);
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        let content_block = match kind {
            Kind::Thinking => StartBlock::Thinking { thinking: "", signature: "" },
            _ => StartBlock::Text { text: "" },
        };
        emit(out, "content_block_start", &BlockStart { kind: "content_block_start", index, content_block });
        self.open = Some((kind, index));
    }

    fn delta(&mut self, delta: DeltaOut<'_>, out: &mut Vec<u8>) {
        let Some((_, index)) = self.open else { return };
        self.fragments = self.fragments.saturating_add(1);
        emit(out, "content_block_delta", &BlockDelta { kind: "content_block_delta", index, delta });
    }

    fn stop_open(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            emit(out, "content_block_stop", &BlockStop { kind: "content_block_stop", index });
        }
    }

    /// One tool-call fragment; false when the stream failed (too many calls).
    fn tool_delta(&mut self, pos: usize, call: &ToolDelta<'_>, out: &mut Vec<u8>) -> bool {
        let upstream_index = call.index.0.unwrap_or(pos as u64);
        let id = call.id.as_deref().filter(|id| !id.is_empty());
        let found = self.tools.iter().rposition(|t| {
            t.upstream_index == upstream_index
                && match (id, t.upstream_id.as_deref()) {
                    (Some(new), Some(old)) => new == old,
                    _ => true,
                }
        });
        let function = call.function.as_ref();
        let slot = match found {
            Some(s) => s,
            None => {
                if self.tools.len() >= TOOL_CALLS_MAX {
                    self.fail(out, "api_error", "The upstream's answer makes too many tool calls.");
                    return false;
                }
                self.stop_open(out);
                let index = self.next_index;
                self.next_index = self.next_index.saturating_add(1);
                let block_id = match id {
                    Some(id) => anthropic_tool_id(id).into_owned(),
                    None => generated_tool_id(&self.request_id, self.tools.len()),
                };
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or("");
                let content_block = StartBlock::ToolUse { id: &block_id, name, input: Empty {} };
                emit(out, "content_block_start", &BlockStart { kind: "content_block_start", index, content_block });
                self.open = Some((Kind::Tool, index));
                self.tools.push(ToolSlot {
                    upstream_index,
                    upstream_id: id.map(str::to_owned),
                    block: index,
                    arguments: String::new(),
                });
                self.tools.len() - 1
            }
        };
        if let Some(args) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
            // A fragment for a call whose block was stopped (a server that
            // interleaves calls) still goes to that call's index.
            let tool = &mut self.tools[slot];
            if tool.arguments.len().saturating_add(args.len()) > TOOL_ARGUMENTS_MAX {
                self.fail(out, "api_error", "The upstream's tool call has arguments over 4 MiB.");
                return false;
            }
            tool.arguments.push_str(args);
            let index = tool.block;
            self.fragments = self.fragments.saturating_add(1);
            let delta = DeltaOut::InputJson { partial_json: args };
            emit(out, "content_block_delta", &BlockDelta { kind: "content_block_delta", index, delta });
        }
        true
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.start(None, None, out);
        self.stop_open(out);
        let broken = self.tools.iter().any(|t| {
            !t.arguments.trim().is_empty()
                && !serde_json::from_str::<serde_json::Value>(&t.arguments).is_ok_and(|v| v.is_object())
        });
        if broken {
            // As a whole answer's would be (502): a tool call the client cannot run.
            self.fail(out, "api_error", "The upstream's tool call arguments are not a JSON object.");
            return;
        }
        let usage =
            self.usage.unwrap_or(Usage { input: self.estimated_input, output: self.fragments, ..Usage::default() });
        let delta = MessageDelta {
            kind: "message_delta",
            delta: StopDelta {
                stop_reason: match self.stop.unwrap_or("end_turn") {
                    "end_turn" if !self.tools.is_empty() => "tool_use",
                    s => s,
                },
                stop_sequence: None,
            },
            usage: usage.anthropic(),
        };
        emit(out, "message_delta", &delta);
        emit(out, "message_stop", &TypeOnly { kind: "message_stop" });
        self.phase = Phase::Done;
    }

    fn fail(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        if self.phase != Phase::Open {
            return;
        }
        out.extend_from_slice(b"event: error\ndata: ");
        AnthropicError { kind, message }.write_json(out);
        out.extend_from_slice(b"\n\n");
        self.phase = Phase::Errored;
    }
}

// ---- Anthropic events → OpenAI chunks ----

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow, default)]
    message: Option<EventMessage<'a>>,
    #[serde(default)]
    index: Count,
    #[serde(borrow, default)]
    content_block: Option<EventBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct EventMessage<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct EventBlock<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Text<'a>,
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

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow, default)]
    text: Text<'a>,
    #[serde(borrow, default)]
    thinking: Text<'a>,
    #[serde(borrow, default)]
    partial_json: Text<'a>,
    #[serde(borrow, default)]
    stop_reason: Text<'a>,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OpenAiUsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: ChunkDeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct ChunkDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallChunk<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallChunk<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionChunk<'a>,
}

#[derive(Serialize)]
struct FunctionChunk<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockKind {
    Text,
    Thinking,
    /// A `tool_use` block and its call's ordinal among the answer's calls.
    Tool(u32),
    Other,
}

/// Anthropic Messages events from the upstream → OpenAI chat chunks for the client.
///
/// - `message_start` → the first chunk (`role: "assistant"`, empty
///   content), with `chatcmpl-` + the message id, the model, `created`.
/// - `text_delta` → `content`, `thinking_delta` → `reasoning_content`;
///   a `tool_use` block's start → a `tool_calls` entry (`index` = the call's
///   ordinal in the answer, `id`, `type`, name, empty `arguments`), each
///   `input_json_delta` → an `arguments` fragment at that index. Signature
///   and citation deltas, `ping`, redacted thinking and unknown events are
///   left out.
/// - `message_delta`'s `stop_reason` → a chunk with the `finish_reason`;
///   its usage is kept (output is cumulative; input and cache counts, when
///   it carries them, replace `message_start`'s).
/// - `message_stop` → the usage chunk (`choices: []`) if the client asked
///   for it (`stream_options.include_usage`), then `data: [DONE]`.
/// - `event: error` → `data: {"error":{…}}`, and nothing after.
pub struct MessagesToChat {
    framer: Framer,
    st: M2C,
}

struct M2C {
    request_id: String,
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    phase: Phase,
    started: bool,
    blocks: Vec<(u64, BlockKind)>,
    tools: u32,
    usage: Usage,
    finished: bool,
    /// The tool call (by ordinal) opened last, while none of its input came.
    no_arguments_yet: Option<u32>,
}

impl MessagesToChat {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        MessagesToChat {
            framer: Framer::default(),
            st: M2C {
                request_id: ctx.request_id.to_owned(),
                model: ctx.model.to_owned(),
                id: completion_id(None, ctx.request_id),
                created: ctx.created_s,
                include_usage: ctx.facts.include_usage,
                phase: Phase::Open,
                started: false,
                blocks: Vec::new(),
                tools: 0,
                usage: Usage::default(),
                finished: false,
                no_arguments_yet: None,
            },
        }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.st.phase != Phase::Open {
            return;
        }
        let st = &mut self.st;
        if self.framer.feed(input, &mut |ev| st.event(ev, out)).is_err() {
            self.st.fail(out, "server_error", TOO_BIG, None);
        }
    }

    /// A Messages stream is complete only with its `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let rest = self.framer.take_rest();
        if whole_event(&rest) {
            self.st.event(&rest, out);
        }
        match self.st.phase {
            Phase::Done => StreamEnd::Complete,
            Phase::Errored => StreamEnd::Errored,
            Phase::Open | Phase::Truncated => StreamEnd::Unfinished,
        }
    }

    /// The upstream's own end (`message_stop`) or its error event went by.
    pub fn upstream_ended(&self) -> bool {
        self.st.phase != Phase::Open
    }
}

impl M2C {
    fn event(&mut self, content: &[u8], out: &mut Vec<u8>) {
        if self.phase != Phase::Open {
            return;
        }
        let Some(data) = data_of(content) else { return };
        let ev: Event<'_> = match serde_json::from_slice(&data) {
            Ok(e) => e,
            Err(_) => {
                self.fail(
                    out,
                    "server_error",
                    "The upstream sent a stream event that is not an Anthropic event.",
                    None,
                );
                return;
            }
        };
        let kind = ev.kind.as_deref().unwrap_or("");
        if kind == "error" || ev.error.is_some() {
            let (message, kind) = error_parts(&data);
            let message = message.unwrap_or_else(|| "The upstream's stream failed.".into());
            self.fail(out, openai_type_for_anthropic(kind.as_deref()), &message, kind.as_deref());
            return;
        }
        match kind {
            "message_start" => {
                if let Some(m) = &ev.message {
                    if !self.started {
                        if let Some(id) = m.id.as_deref().filter(|id| !id.is_empty()) {
                            self.id = completion_id(Some(id), &self.request_id);
                        }
                        if let Some(model) = m.model.as_deref().filter(|m| !m.is_empty()) {
                            model.clone_into(&mut self.model);
                        }
                    }
                    if let Some(u) = &m.usage {
                        let u = Usage::from_anthropic(u);
                        self.usage = Usage { output: self.usage.output, ..u };
                    }
                }
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                self.empty_arguments(out);
                let Some(b) = &ev.content_block else { return };
                let index = ev.index.0.unwrap_or(self.blocks.len() as u64);
                let kind = match b.kind.as_deref() {
                    Some("text") => BlockKind::Text,
                    Some("thinking") => BlockKind::Thinking,
                    Some("tool_use") => BlockKind::Tool(self.tools),
                    _ => BlockKind::Other,
                };
                if self.blocks.len() >= BLOCKS_MAX {
                    self.fail(out, "server_error", "The upstream's answer has too many content blocks.", None);
                    return;
                }
                self.blocks.push((index, kind));
                match kind {
                    BlockKind::Text => {
                        if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                            self.chunk(ChunkDeltaOut { content: Some(t), ..Default::default() }, None, out);
                        }
                    }
                    BlockKind::Thinking => {
                        if let Some(t) = b.thinking.as_deref().filter(|t| !t.is_empty()) {
                            self.chunk(ChunkDeltaOut { reasoning_content: Some(t), ..Default::default() }, None, out);
                        }
                    }
                    BlockKind::Tool(ordinal) => {
                        self.tools = self.tools.saturating_add(1);
                        let generated;
                        let id = match b.id.as_deref().filter(|id| !id.is_empty()) {
                            Some(id) => id,
                            None => {
                                generated = generated_tool_id(&self.request_id, ordinal as usize);
                                &generated
                            }
                        };
                        // Anthropic starts a call with `input: {}` and streams
                        // the input; a non-empty one here is sent as the first fragment.
                        let arguments = match b.input.map(|r| r.get().trim()) {
                            Some(raw) if raw != "{}" => serde_json::from_str::<serde_json::Value>(raw)
                                .ok()
                                .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                                .and_then(|v| serde_json::to_string(&v).ok())
                                .unwrap_or_default(),
                            _ => String::new(),
                        };
                        // A call whose input never comes has `{}` (JSON), not `""`.
                        self.no_arguments_yet = arguments.is_empty().then_some(ordinal);
                        let call = ToolCallChunk {
                            index: ordinal,
                            id: Some(id),
                            kind: Some("function"),
                            function: FunctionChunk {
                                name: Some(b.name.as_deref().unwrap_or("")),
                                arguments: &arguments,
                            },
                        };
                        self.chunk(ChunkDeltaOut { tool_calls: Some([call]), ..Default::default() }, None, out);
                    }
                    BlockKind::Other => {}
                }
            }
            "content_block_delta" => {
                self.start(out);
                let Some(d) = &ev.delta else { return };
                let block = ev.index.0.and_then(|i| self.blocks.iter().rev().find(|b| b.0 == i)).map(|b| b.1);
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(t) = d.text.as_deref().filter(|t| !t.is_empty()) {
                            self.chunk(ChunkDeltaOut { content: Some(t), ..Default::default() }, None, out);
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = d.thinking.as_deref().filter(|t| !t.is_empty()) {
                            self.chunk(ChunkDeltaOut { reasoning_content: Some(t), ..Default::default() }, None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let (Some(BlockKind::Tool(ordinal)), Some(part)) =
                            (block, d.partial_json.as_deref().filter(|p| !p.is_empty()))
                        else {
                            return;
                        };
                        if self.no_arguments_yet == Some(ordinal) {
                            self.no_arguments_yet = None;
                        }
                        let call = ToolCallChunk {
                            index: ordinal,
                            id: None,
                            kind: None,
                            function: FunctionChunk { name: None, arguments: part },
                        };
                        self.chunk(ChunkDeltaOut { tool_calls: Some([call]), ..Default::default() }, None, out);
                    }
                    _ => {}
                }
            }
            "content_block_stop" => self.empty_arguments(out),
            "message_delta" => {
                self.start(out);
                self.empty_arguments(out);
                if let Some(u) = &ev.usage {
                    if let Some(o) = u.output_tokens.0 {
                        self.usage.output = o;
                    }
                    if let Some(i) = u.input_tokens.0 {
                        self.usage.input = i;
                    }
                    if let Some(r) = u.cache_read_input_tokens.0 {
                        self.usage.cache_read = r;
                    }
                    if let Some(w) = u.cache_creation_input_tokens.0 {
                        self.usage.cache_write = w;
                    }
                }
                if let Some(s) = ev.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    if !self.finished {
                        self.finished = true;
                        self.chunk(ChunkDeltaOut::default(), Some(finish_reason(s)), out);
                    }
                }
            }
            "message_stop" => {
                self.start(out);
                if !self.finished {
                    self.finished = true;
                    self.chunk(ChunkDeltaOut::default(), Some("stop"), out);
                }
                if self.include_usage {
                    let c = ChunkOut {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.model,
                        choices: &[],
                        usage: Some(self.usage.openai()),
                    };
                    out.extend_from_slice(b"data: ");
                    write_json(out, &c);
                    out.extend_from_slice(b"\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.phase = Phase::Done;
            }
            // Anthropic's keep-alive: a comment (ignored by SDKs, keeps idle
            // connections open), once the answer has started.
            "ping" if self.started => out.extend_from_slice(b": ping\n\n"),
            // Event types added later.
            _ => {}
        }
    }

    /// The tool call opened last got no input at all: its arguments are `{}`.
    fn empty_arguments(&mut self, out: &mut Vec<u8>) {
        if let Some(ordinal) = self.no_arguments_yet.take() {
            let call = ToolCallChunk {
                index: ordinal,
                id: None,
                kind: None,
                function: FunctionChunk { name: None, arguments: "{}" },
            };
            self.chunk(ChunkDeltaOut { tool_calls: Some([call]), ..Default::default() }, None, out);
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.chunk(ChunkDeltaOut { role: Some("assistant"), content: Some(""), ..Default::default() }, None, out);
    }

    fn chunk(&self, delta: ChunkDeltaOut<'_>, finish: Option<&'static str>, out: &mut Vec<u8>) {
        let choice = ChoiceOut { index: 0, delta, logprobs: None, finish_reason: finish };
        let c = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: std::slice::from_ref(&choice),
            usage: None,
        };
        out.extend_from_slice(b"data: ");
        write_json(out, &c);
        out.extend_from_slice(b"\n\n");
    }

    fn fail(&mut self, out: &mut Vec<u8>, kind: &str, message: &str, code: Option<&str>) {
        if self.phase != Phase::Open {
            return;
        }
        // The gateway's code for an upstream's failure, unless the upstream gave its own.
        let code = code.or(Some("upstream_error"));
        let e = ChatError { error: ChatErrorInner { message, kind, param: None, code } };
        out.extend_from_slice(b"data: ");
        write_json(out, &e);
        out.extend_from_slice(b"\n\n");
        self.phase = Phase::Errored;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::RequestFacts;
    use serde_json::{json, Value};

    fn facts(include_usage: bool) -> RequestFacts {
        RequestFacts { stream: true, include_usage, estimated_input_tokens: 42 }
    }

    fn ctx(f: &RequestFacts) -> ResponseCtx<'_> {
        ResponseCtx { model: "client-model", request_id: "req-1", created_s: 1_700_000_000, facts: f }
    }

    /// Translate `input` fed in the given pieces; the output and the end.
    fn c2m_parts(parts: &[&[u8]], f: &RequestFacts) -> (Vec<u8>, StreamEnd) {
        let mut t = ChatToMessages::new(&ctx(f));
        let mut out = Vec::new();
        for p in parts {
            t.feed(p, &mut out);
        }
        let end = t.finish(&mut out);
        (out, end)
    }

    fn m2c_parts(parts: &[&[u8]], f: &RequestFacts) -> (Vec<u8>, StreamEnd) {
        let mut t = MessagesToChat::new(&ctx(f));
        let mut out = Vec::new();
        for p in parts {
            t.feed(p, &mut out);
        }
        let end = t.finish(&mut out);
        (out, end)
    }

    /// The client's events: (event name, data as JSON, or `"[DONE]"`);
    /// keep-alive comments (`: ping`) left out.
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "{text}");
        text.split_terminator("\n\n")
            .filter(|ev| *ev != ": ping")
            .map(|ev| {
                let mut name = String::new();
                let mut data = Value::Null;
                for line in ev.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = if d == "[DONE]" { Value::from("[DONE]") } else { serde_json::from_str(d).unwrap() };
                    } else {
                        panic!("unexpected line {line:?}");
                    }
                }
                (name, data)
            })
            .collect()
    }

    fn sse(datas: &[Value], nl: &str) -> Vec<u8> {
        let mut s = String::new();
        for d in datas {
            match d.as_str() {
                Some(raw) => s.push_str(&format!("data: {raw}{nl}{nl}")),
                None => s.push_str(&format!("data: {d}{nl}{nl}")),
            }
        }
        s.into_bytes()
    }

    fn chat_stream() -> Vec<Value> {
        let c = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "llama",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        vec![
            c(json!({"role": "assistant", "content": ""}), Value::Null),
            c(json!({"reasoning_content": "Think"}), Value::Null),
            c(json!({"reasoning_content": "ing."}), Value::Null),
            c(json!({"content": "Hel"}), Value::Null),
            c(json!({"content": "lo"}), Value::Null),
            c(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                Value::Null,
            ),
            c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}), Value::Null),
            c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
            c(
                json!({"tool_calls": [{"index": 1, "id": "call:b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}),
                Value::Null,
            ),
            c(json!({}), Value::from("tool_calls")),
            json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "model": "llama", "choices": [],
                "usage": {"prompt_tokens": 130, "completion_tokens": 9, "total_tokens": 139, "prompt_tokens_details": {"cached_tokens": 100}}}),
            Value::from("[DONE]"),
        ]
    }

    #[test]
    fn chat_chunks_become_anthropic_events() {
        let f = facts(true);
        let (out, end) = c2m_parts(&[&sse(&chat_stream(), "\n")], &f);
        assert_eq!(end, StreamEnd::Complete);
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(
            ev[0].1,
            json!({"type": "message_start", "message": {"id": "msg_7", "type": "message", "role": "assistant", "model": "llama",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 42, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}})
        );
        assert_eq!(ev[1].1["content_block"], json!({"type": "thinking", "thinking": "", "signature": ""}));
        assert_eq!(ev[2].1["delta"], json!({"type": "thinking_delta", "thinking": "Think"}));
        assert_eq!(ev[5].1["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(ev[7].1["delta"], json!({"type": "text_delta", "text": "lo"}));
        assert_eq!(ev[9].1["content_block"], json!({"type": "tool_use", "id": "call_a", "name": "f", "input": {}}));
        assert_eq!(ev[10].1["delta"], json!({"type": "input_json_delta", "partial_json": "{\"x\":"}));
        assert_eq!(ev[11].1["delta"], json!({"type": "input_json_delta", "partial_json": "1}"}));
        assert_eq!(ev[13].1["content_block"]["id"], anthropic_tool_id("call:b").as_ref());
        assert_eq!(ev[13].1["content_block"]["name"], "g");
        // Indexes increase, one block open at a time.
        let indexes: Vec<u64> = ev.iter().filter_map(|e| e.1["index"].as_u64()).collect();
        assert_eq!(indexes, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]);
        assert_eq!(
            ev[16].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100, "output_tokens": 9}})
        );
        assert_eq!(ev[17].1, json!({"type": "message_stop"}));
    }

    #[test]
    fn any_split_of_either_stream_gives_the_same_output() {
        let f = facts(true);
        let chat = chat_stream();
        let anthropic = anthropic_stream();
        for nl in ["\n", "\r\n", "\r"] {
            let mut input = sse(&chat, nl);
            input.splice(0..0, format!(": keep-alive{nl}{nl}event: x{nl}id: 3{nl}retry: 10{nl}{nl}").bytes());
            let (whole, _) = c2m_parts(&[&input], &f);
            assert!(!whole.is_empty());
            for i in 0..=input.len() {
                assert_eq!(c2m_parts(&[&input[..i], &input[i..]], &f).0, whole, "split at {i} ({nl:?})");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(c2m_parts(&bytes, &f).0, whole, "byte by byte ({nl:?})");

            let input = anthropic_sse(&anthropic, nl);
            let (whole, _) = m2c_parts(&[&input], &f);
            for i in 0..=input.len() {
                assert_eq!(m2c_parts(&[&input[..i], &input[i..]], &f).0, whole, "split at {i} ({nl:?})");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(m2c_parts(&bytes, &f).0, whole, "byte by byte ({nl:?})");
        }
    }

    #[test]
    fn usage_on_the_finish_chunk_and_no_done_still_completes() {
        // llama.cpp: usage on the finish chunk; here the stream then just ends.
        let f = facts(false);
        let input = sse(
            &[
                json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 1}}),
                json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 2}}),
            ],
            "\n",
        );
        let (out, end) = c2m_parts(&[&input], &f);
        assert_eq!(end, StreamEnd::Complete);
        let ev = events(&out);
        // The first chunk's usage is already exact: `message_start` says so.
        assert_eq!(ev[0].1["message"]["usage"]["input_tokens"], 12);
        let delta = &ev[ev.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert_eq!(delta["usage"]["output_tokens"], 2);
        assert_eq!(delta["usage"]["input_tokens"], 12);
        assert_eq!(ev.last().unwrap().0, "message_stop");
    }

    #[test]
    fn a_stream_without_usage_reports_the_estimate_and_a_cut_stream_is_unfinished() {
        let f = facts(false);
        let tok = |t: &str| json!({"choices": [{"index": 0, "delta": {"content": t}}]});
        let (out, end) = c2m_parts(&[&sse(&[tok("a"), tok("b"), Value::from("[DONE]")], "\n")], &f);
        assert_eq!(end, StreamEnd::Complete);
        let ev = events(&out);
        assert_eq!(ev[0].1["message"]["id"], "msg_req-1");
        assert_eq!(ev[0].1["message"]["model"], "client-model");
        let delta = &ev[ev.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            (delta["usage"]["input_tokens"].as_u64(), delta["usage"]["output_tokens"].as_u64()),
            (Some(42), Some(2))
        );
        // Cut mid-generation: no finish_reason, no [DONE].
        let (out, end) = c2m_parts(&[&sse(&[tok("a")], "\n"), b"data: {\"choi"], &f);
        assert_eq!(end, StreamEnd::Unfinished);
        assert!(events(&out).iter().all(|e| e.0 != "message_stop" && e.0 != "message_delta"));
        // `[DONE]` without its blank line at the very end still closes.
        let (out, end) = c2m_parts(&[&sse(&[tok("a")], "\n"), b"data: [DONE]"], &f);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(events(&out).last().unwrap().0, "message_stop");
        // Nothing at all, then [DONE]: still a well-formed message.
        let (out, end) = c2m_parts(&[b"data: [DONE]\n\n"], &f);
        assert_eq!(end, StreamEnd::Complete);
        let names: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
        let (out, end) = c2m_parts(&[], &f);
        assert_eq!((out.len(), end), (0, StreamEnd::Unfinished));
    }

    #[test]
    fn upstream_errors_end_the_stream_in_the_clients_shape() {
        let f = facts(true);
        let tok = json!({"choices": [{"index": 0, "delta": {"content": "a"}}]});
        let err = json!({"error": {"message": "overloaded now", "type": "server_error", "code": "overloaded"}});
        let (out, end) = c2m_parts(&[&sse(&[tok.clone(), err, tok.clone(), Value::from("[DONE]")], "\n")], &f);
        assert_eq!(end, StreamEnd::Errored);
        let ev = events(&out);
        let last = ev.last().unwrap();
        assert_eq!(last.0, "error");
        // `code: "overloaded"` says more than `type: "server_error"`.
        assert_eq!(
            last.1,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "overloaded now"}})
        );
        assert_eq!(ev.iter().filter(|e| e.0 == "content_block_delta").count(), 1);
        // Not a chunk at all.
        let (out, end) = c2m_parts(&[b"data: {not json\n\n"], &f);
        assert_eq!(end, StreamEnd::Errored);
        assert_eq!(events(&out)[0].0, "error");

        let input = anthropic_sse(
            &[
                json!({"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3}}}),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ],
            "\n",
        );
        let (out, end) = m2c_parts(&[&input], &f);
        assert_eq!(end, StreamEnd::Errored);
        let ev = events(&out);
        assert_eq!(
            ev.last().unwrap().1,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
        );
    }

    #[test]
    fn an_event_over_the_cap_is_an_error_however_it_arrives() {
        let f = facts(false);
        let big =
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n", "a".repeat(EVENT_MAX_BYTES));
        let ok = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
        let input = [&ok[..], big.as_bytes(), &ok[..]].concat();
        let (whole, end) = c2m_parts(&[&input], &f);
        assert_eq!(end, StreamEnd::Errored);
        let ev = events(&whole);
        assert_eq!(ev.last().unwrap().1["error"]["message"], TOO_BIG);
        let pieces: Vec<&[u8]> = input.chunks(4096).collect();
        assert_eq!(c2m_parts(&pieces, &f).0, whole);
        let (m, end) = m2c_parts(&[big.as_bytes()], &f);
        assert_eq!(end, StreamEnd::Errored);
        assert_eq!(events(&m)[0].1["error"]["message"], TOO_BIG);
        // Just under the cap is fine.
        let fits = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
            "a".repeat(EVENT_MAX_BYTES - 64)
        );
        let (_, end) = c2m_parts(&[fits.as_bytes(), b"data: [DONE]\n\n"], &f);
        assert_eq!(end, StreamEnd::Complete);
    }

    #[test]
    fn interleaved_and_index_reusing_tool_calls_keep_their_ids() {
        let f = facts(false);
        let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
            let mut c = json!({"index": index, "function": {"arguments": args}});
            if let Some(id) = id {
                c["id"] = json!(id);
            }
            if let Some(name) = name {
                c["function"]["name"] = json!(name);
            }
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [c]}}]})
        };
        let input = sse(
            &[
                // Two calls in one chunk, then fragments for each.
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "id": "c0", "function": {"name": "a", "arguments": ""}},
                    {"index": 1, "id": "c1", "function": {"name": "b", "arguments": ""}}]}}]}),
                call(0, None, None, "{}"),
                call(1, None, None, "{\"k\":1}"),
                // A server that puts every call at index 0 with a new id.
                call(0, Some("c2"), Some("c"), "{}"),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                Value::from("[DONE]"),
            ],
            "\n",
        );
        let ev = events(&c2m_parts(&[&input], &f).0);
        let starts: Vec<(u64, String)> = ev
            .iter()
            .filter(|e| e.0 == "content_block_start")
            .map(|e| (e.1["index"].as_u64().unwrap(), e.1["content_block"]["id"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(starts, [(0, "c0".to_owned()), (1, "c1".to_owned()), (2, "c2".to_owned())]);
        let deltas: Vec<(u64, String)> = ev
            .iter()
            .filter(|e| e.0 == "content_block_delta")
            .map(|e| (e.1["index"].as_u64().unwrap(), e.1["delta"]["partial_json"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(deltas, [(0, "{}".to_owned()), (1, "{\"k\":1}".to_owned()), (2, "{}".to_owned())]);
    }

    fn anthropic_stream() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 1}}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi é😀"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}}),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
            json!({"type": "message_stop"}),
        ]
    }

    fn anthropic_sse(events: &[Value], nl: &str) -> Vec<u8> {
        let mut s = String::new();
        for e in events {
            s.push_str(&format!("event: {}{nl}data: {e}{nl}{nl}", e["type"].as_str().unwrap_or("x")));
        }
        s.into_bytes()
    }

    #[test]
    fn anthropic_events_become_chat_chunks() {
        let f = facts(true);
        let (out, end) = m2c_parts(&[&anthropic_sse(&anthropic_stream(), "\n")], &f);
        assert_eq!(end, StreamEnd::Complete);
        let ev = events(&out);
        assert!(ev.iter().all(|e| e.0.is_empty()));
        let data: Vec<&Value> = ev.iter().map(|e| &e.1).collect();
        for d in &data[..data.len() - 1] {
            assert_eq!(d["id"], "chatcmpl-01");
            assert_eq!(d["object"], "chat.completion.chunk");
            assert_eq!(d["created"], 1_700_000_000u64);
            assert_eq!(d["model"], "claude-x");
        }
        let deltas: Vec<&Value> = data.iter().filter_map(|d| d["choices"].get(0)).map(|c| &c["delta"]).collect();
        assert_eq!(
            deltas,
            [
                &json!({"role": "assistant", "content": ""}),
                &json!({"reasoning_content": "Hmm."}),
                &json!({"content": "Hi é😀"}),
                &json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
                &json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                &json!({"tool_calls": [{"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "g", "arguments": ""}}]}),
                // `g` got no input: its arguments are `{}`, as in a whole answer.
                &json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
                &json!({}),
            ]
        );
        assert_eq!(data[data.len() - 3]["choices"][0]["finish_reason"], "tool_calls");
        let usage = data[data.len() - 2];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 130, "completion_tokens": 15, "total_tokens": 145, "prompt_tokens_details": {"cached_tokens": 100}})
        );
        assert_eq!(data[data.len() - 1], &Value::from("[DONE]"));
        // Without include_usage: no usage chunk.
        let (out, _) = m2c_parts(&[&anthropic_sse(&anthropic_stream(), "\n")], &facts(false));
        let ev = events(&out);
        assert!(ev.iter().all(|e| e.1.get("usage").is_none()));
        assert_eq!(ev.last().unwrap().1, "[DONE]");
    }

    #[test]
    fn an_anthropic_stream_without_message_stop_is_unfinished() {
        let f = facts(true);
        let mut evs = anthropic_stream();
        evs.pop();
        let (out, end) = m2c_parts(&[&anthropic_sse(&evs, "\n")], &f);
        assert_eq!(end, StreamEnd::Unfinished);
        assert!(!out.ends_with(b"[DONE]\n\n"));
        let (_, end) = m2c_parts(&[b"event: ping\ndata: {\"type\":\"ping\"}\n\n"], &f);
        assert_eq!(end, StreamEnd::Unfinished);
        let (out, end) = m2c_parts(&[b"data: [1,2]\n\n"], &f);
        assert_eq!(end, StreamEnd::Errored);
        assert!(events(&out)[0].1["error"]["message"].is_string());
    }

    #[test]
    fn stop_reasons_are_the_same_streamed_and_whole() {
        use crate::translate::response;
        let f = facts(false);
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
        ] {
            let input = anthropic_sse(
                &[
                    json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
                    json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}}),
                    json!({"type": "message_stop"}),
                ],
                "\n",
            );
            let ev = events(&m2c_parts(&[&input], &f).0);
            let streamed = ev.iter().find_map(|e| e.1["choices"][0]["finish_reason"].as_str()).unwrap().to_owned();
            let mut whole = Vec::new();
            response::messages_to_chat(
                json!({"content": [], "stop_reason": stop}).to_string().as_bytes(),
                &ctx(&f),
                &mut whole,
            )
            .unwrap();
            let whole: Value = serde_json::from_slice(&whole).unwrap();
            assert_eq!(streamed, finish);
            assert_eq!(whole["choices"][0]["finish_reason"], finish);
        }
        // A server that ends a tool-calling answer with `stop`: `tool_use` either way.
        let call = json!({"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}});
        let input = sse(
            &[
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "stop"}]}),
                Value::from("[DONE]"),
            ],
            "\n",
        );
        let ev = events(&c2m_parts(&[&input], &f).0);
        assert_eq!(ev.iter().find_map(|e| e.1["delta"]["stop_reason"].as_str()), Some("tool_use"));
        for finish in ["stop", "length", "tool_calls", "content_filter", "function_call", "other"] {
            let input = sse(
                &[json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}), Value::from("[DONE]")],
                "\n",
            );
            let ev = events(&c2m_parts(&[&input], &f).0);
            let streamed = ev.iter().find_map(|e| e.1["delta"]["stop_reason"].as_str()).unwrap().to_owned();
            let mut whole = Vec::new();
            response::chat_to_messages(
                json!({"choices": [{"message": {}, "finish_reason": finish}]}).to_string().as_bytes(),
                &ctx(&f),
                &mut whole,
            )
            .unwrap();
            let whole: Value = serde_json::from_slice(&whole).unwrap();
            assert_eq!(whole["stop_reason"], streamed.as_str(), "{finish}");
        }
    }

    #[test]
    fn garbage_never_panics_and_output_is_always_well_formed() {
        let f = facts(true);
        let inputs: [&[u8]; 10] = [
            b"data: {\"choices\":[{\"index\":18446744073709551616,\"delta\":{\"content\":5}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-1,\"function\":{\"arguments\":\"\\ud800\"}}]}}]}\n\n",
            b"data: {\"choices\":null,\"usage\":{\"prompt_tokens\":1e400}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":99,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n",
            b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-3},\"delta\":{\"stop_reason\":7}}\n\n",
            b"\xff\xfe\n\n\r\r\r\n\n",
            b"data: \xff\n\n",
            b"data:\ndata:\n\n",
            b"data: {\"error\":null,\"choices\":[]}\n\n",
            b"data: {\"type\":\"error\"}\n\n",
        ];
        for input in inputs {
            let (out, _) = c2m_parts(&[input], &f);
            let _ = events(&out);
            let (out, _) = m2c_parts(&[input], &f);
            let _ = events(&out);
        }
    }

    #[test]
    fn a_tool_call_without_input_has_empty_object_arguments() {
        let f = facts(false);
        let input = b"data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"noargs\",\"input\":{}}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":2}}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
        let (out, end) = m2c_parts(&[input], &f);
        assert_eq!(end, StreamEnd::Complete);
        let args: String = events(&out)
            .iter()
            .filter_map(|(_, d)| {
                d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(args, "{}", "JSON the client can parse, as the whole answer has");
        // With input streamed, nothing is added.
        let with_input =
            String::from_utf8_lossy(input).replace("\"partial_json\":\"\"", "\"partial_json\":\"{\\\"a\\\":1}\"");
        let (out, _) = m2c_parts(&[with_input.as_bytes()], &f);
        let args: String = events(&out)
            .iter()
            .filter_map(|(_, d)| {
                d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
    }

    #[test]
    fn done_without_a_finish_reason_is_truncated_where_one_is_required() {
        let f = facts(false);
        let tok = json!({"choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": null}]});
        let input = sse(&[tok, Value::from("[DONE]")], "\n");
        let mut t = ChatToMessages::new(&ctx(&f));
        t.require_finish(true);
        let mut out = Vec::new();
        t.feed(&input, &mut out);
        assert!(t.upstream_ended());
        assert_eq!(t.finish(&mut out), StreamEnd::Truncated);
        let names: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
        assert!(!names.iter().any(|n| n == "message_stop" || n == "message_delta"), "{names:?}");
        // An upstream known to omit it is trusted.
        let (out, end) = c2m_parts(&[&input], &f);
        assert_eq!(end, StreamEnd::Complete);
        assert!(events(&out).iter().any(|e| e.0 == "message_stop"));
    }

    #[test]
    fn tool_arguments_that_never_form_json_end_the_stream_with_an_error() {
        let f = facts(false);
        let call = |args: &str| {
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "f", "arguments": args}}]}, "finish_reason": null}]})
        };
        let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
        for (args, ok) in [("{\"a\": ", false), ("[1]", false), ("{\"a\": 1}", true), ("", true)] {
            let input = sse(&[call(args), finish.clone(), Value::from("[DONE]")], "\n");
            let (out, end) = c2m_parts(&[&input], &f);
            let names: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
            if ok {
                assert_eq!(
                    (end, names.last().map(String::as_str)),
                    (StreamEnd::Complete, Some("message_stop")),
                    "{args}"
                );
            } else {
                assert_eq!((end, names.last().map(String::as_str)), (StreamEnd::Errored, Some("error")), "{args}");
                assert!(!names.iter().any(|n| n == "message_stop"));
            }
        }
    }

    #[test]
    fn keep_alives_cross_over_once_the_answer_started() {
        let f = facts(false);
        let tok = json!({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]});
        let mut input = b": before\n\n".to_vec();
        input.extend_from_slice(&sse(&[tok], "\n"));
        input.extend_from_slice(b": keep-alive\n\n");
        let (out, _) = c2m_parts(&[&input], &f);
        let names: Vec<String> = events(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(names.iter().filter(|n| *n == "ping").count(), 1, "{names:?}");
        assert_eq!(names.last().map(String::as_str), Some("ping"));
        let ping = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";
        let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n";
        let (out, _) = m2c_parts(&[ping, start, ping], &f);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches(": ping\n\n").count(), 1, "{text}");
    }
}
