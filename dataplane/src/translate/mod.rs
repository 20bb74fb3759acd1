//! Translation between the two client APIs the gateway speaks: Anthropic's
//! Messages API and OpenAI's Chat Completions. Chosen per attempt from the
//! ingress API and the target's kind (`forward::translation`); the same
//! API on both sides is passthrough and never comes here.
//!
//! - [`request`]: the client's request body → the target's.
//! - [`response`]: a whole (non-streaming) answer, and error bodies.
//! - [`stream`]: SSE, event by event, over any split of the upstream's bytes.
//!
//! Every value read here came from a client or an upstream: nothing panics,
//! sizes are bounded, and what the target cannot honour is an
//! [`Unsupported`] naming the field (a 400), never silently dropped when it
//! changes the meaning.

pub mod request;
pub mod response;
pub mod stream;

/// Which way a request is translated (the response goes the other way).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Translation {
    /// The client speaks Anthropic Messages; the target OpenAI chat.
    MessagesToChat,
    /// The client speaks OpenAI chat; the target Anthropic Messages.
    ChatToMessages,
}

/// A request field the target cannot honour: answered 400
/// `invalid_request_error` naming it (`param`, e.g. `messages[2].content[0].type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub param: String,
    pub message: String,
}

/// What translating the request learned that translating its response needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for usage in its stream (chat's
    /// `stream_options.include_usage`); Messages streams always carry usage,
    /// so it is set for every streamed Messages request.
    pub include_usage: bool,
    /// The gateway's estimate of the prompt's input tokens, for a Messages
    /// stream's `message_start` when the upstream reports usage only at its end.
    pub estimated_input_tokens: u64,
}

/// What a response translation needs to know of its request.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCtx<'a> {
    /// The model the client asked for (used where the upstream names none).
    pub model: &'a str,
    /// The gateway's request id (ids where the upstream gives none).
    pub request_id: &'a str,
    /// Unix seconds, for chat's `created` where the upstream gives none.
    pub created_s: u64,
    pub facts: &'a RequestFacts,
}

mod common;
pub use common::{anthropic_tool_id, DEFAULT_MAX_TOKENS, ERROR_MESSAGE_MAX_BYTES, EVENT_MAX_BYTES, TOOL_CALLS_MAX};

impl Unsupported {
    pub(crate) fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Unsupported { param: param.into(), message: message.into() }
    }
}
