//! The Anthropic Messages API's wire shapes the gateway itself writes: the
//! error body `{"type":"error","error":{"type":…,"message":…}}` (as a JSON
//! response body, or as one SSE `event: error` once a stream has started),
//! and the error `type` Anthropic uses for each status.
//!
//! Errors an Anthropic-kind upstream sends are relayed as they are; these
//! are for errors the gateway raises on `/v1/messages` (a missing key, an
//! unknown model, a rate limit, every target down).

use serde::Serialize;

/// The `anthropic-version` sent to an Anthropic-kind provider when the
/// client sent none (the Messages API's only version to date).
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Written when serialization fails, which it cannot for plain strings.
const FALLBACK: &[u8] = br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#;

/// Anthropic's error `type` for an HTTP status
/// (<https://docs.anthropic.com/en/api/errors>).
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[derive(Serialize)]
struct Inner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: Inner<'a>,
}

/// One Anthropic error, borrowed from whatever produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnthropicError<'a> {
    /// `invalid_request_error`, `authentication_error`, … ([`error_type`]).
    pub kind: &'a str,
    pub message: &'a str,
}

impl<'a> AnthropicError<'a> {
    /// The error for a status, with Anthropic's `type` for it.
    pub fn for_status(status: u16, message: &'a str) -> Self {
        AnthropicError { kind: error_type(status), message }
    }

    /// Append the JSON object to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let env = Envelope { kind: "error", error: Inner { kind: self.kind, message: self.message } };
        if serde_json::to_writer(&mut *out, &env).is_err() {
            out.truncate(start);
            out.extend_from_slice(FALLBACK);
        }
    }

    /// The JSON object, as a response body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.message.len());
        self.write_json(&mut out);
        out
    }

    /// The same object as one SSE event: `event: error\ndata: {…}\n\n`, as
    /// Anthropic ends a stream that failed (its SDKs raise on it).
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.message.len());
        out.extend_from_slice(b"event: error\ndata: ");
        self.write_json(&mut out);
        out.extend_from_slice(b"\n\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_anthropic_shape() {
        let e = AnthropicError::for_status(404, "no \"such\" model");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["message"], "no \"such\" model");
        let ev = e.to_sse_event();
        assert!(ev.starts_with(b"event: error\ndata: {\"type\":\"error\""));
        assert!(ev.ends_with(b"}\n\n"));
    }

    #[test]
    fn statuses_map_to_anthropic_types() {
        assert_eq!(error_type(400), "invalid_request_error");
        assert_eq!(error_type(401), "authentication_error");
        assert_eq!(error_type(403), "permission_error");
        assert_eq!(error_type(405), "invalid_request_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(error_type(503), "overloaded_error");
        assert_eq!(error_type(502), "api_error");
        assert_eq!(error_type(500), "api_error");
    }
}
