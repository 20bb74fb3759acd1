//! Whole (non-streaming) answers and error bodies.

use super::ResponseCtx;

/// The upstream's 2xx body could not be read as its API's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// An OpenAI chat completion → an Anthropic message, in `out`.
pub fn chat_to_messages(body: &[u8], ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> Result<(), Malformed> {
    let _ = (body, ctx, out);
    Err(Malformed("not built".into()))
}

/// An Anthropic message → an OpenAI chat completion, in `out`.
pub fn messages_to_chat(body: &[u8], ctx: &ResponseCtx<'_>, out: &mut Vec<u8>) -> Result<(), Malformed> {
    let _ = (body, ctx, out);
    Err(Malformed("not built".into()))
}

/// An upstream's error body (OpenAI's shape, or anything) → Anthropic's
/// error shape for the client, in `out`. Never fails.
pub fn error_to_messages(status: u16, body: &[u8], out: &mut Vec<u8>) {
    let _ = (status, body, out);
}

/// An upstream's error body (Anthropic's shape, or anything) → OpenAI's
/// error shape for the client, in `out`. Never fails.
pub fn error_to_chat(status: u16, body: &[u8], out: &mut Vec<u8>) {
    let _ = (status, body, out);
}
