//! Request bodies: Messages → chat and chat → Messages.

use super::{RequestFacts, Unsupported};

/// An Anthropic Messages request body → an OpenAI chat request body in `out`
/// (`model` replaces the client's model name when given).
pub fn messages_to_chat(body: &[u8], model: Option<&str>, out: &mut Vec<u8>) -> Result<RequestFacts, Unsupported> {
    let _ = (body, model, out);
    Err(Unsupported { param: "messages".into(), message: "Translation is not built yet.".into() })
}

/// An OpenAI chat request body → an Anthropic Messages request body in `out`.
pub fn chat_to_messages(body: &[u8], model: Option<&str>, out: &mut Vec<u8>) -> Result<RequestFacts, Unsupported> {
    let _ = (body, model, out);
    Err(Unsupported { param: "messages".into(), message: "Translation is not built yet.".into() })
}
