//! SSE streams, event by event over any split of the upstream's (deframed)
//! bytes; output is the client's SSE text (the relay frames it).

use super::ResponseCtx;

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
}

/// OpenAI chat chunks from the upstream → Anthropic Messages events for the client.
pub struct ChatToMessages {
    _private: (),
}

impl ChatToMessages {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        let _ = ctx;
        ChatToMessages { _private: () }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let _ = out;
        StreamEnd::Unfinished
    }

    /// The upstream's own end went by (`[DONE]`): what follows (a close
    /// without the chunked body's end) is no failure.
    pub fn upstream_ended(&self) -> bool {
        false
    }
}

/// Anthropic Messages events from the upstream → OpenAI chat chunks for the client.
pub struct MessagesToChat {
    _private: (),
}

impl MessagesToChat {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        let _ = ctx;
        MessagesToChat { _private: () }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let _ = out;
        StreamEnd::Unfinished
    }

    /// The upstream's own end went by (`message_stop`).
    pub fn upstream_ended(&self) -> bool {
        false
    }
}
