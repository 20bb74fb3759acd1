//! The one OpenAI-shaped error body every Switchboard server writes:
//! `{"error":{"message":…,"type":…,"param":…,"code":…}}` as a JSON response
//! body, or the same object as one SSE `data:` event when a stream has
//! already started (OpenAI's SDKs raise `APIError` on an event carrying
//! `error`).
//!
//! The data plane, the admin API and the node agent all render through
//! [`ErrorBody`]; each keeps its own error type (what failed, which status,
//! whether to retry) and borrows its fields into an `ErrorBody` to write it.

use http::StatusCode;
use serde::Serialize;

/// OpenAI's `type` for an error the client caused.
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// OpenAI's `type` for an error on the server's side.
pub const SERVER_ERROR: &str = "server_error";

/// Written when serialization fails, which it cannot for plain strings; it
/// keeps rendering total.
const FALLBACK: &[u8] = br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#;

/// The fields of one error, borrowed from whatever error type produced it.
/// Serialized in OpenAI's field order: message, type, param, code; absent
/// `param` and `code` are `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErrorBody<'a> {
    pub message: &'a str,
    /// OpenAI's `type`: `invalid_request_error`, `server_error`,
    /// `rate_limit_error`, `insufficient_quota`, …
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

#[derive(Serialize)]
struct Envelope<'b, 'a> {
    error: &'b ErrorBody<'a>,
}

impl<'a> ErrorBody<'a> {
    /// A body with an explicit `type` and no `param` or `code`.
    pub fn new(kind: &'a str, message: &'a str) -> Self {
        ErrorBody { message, kind, param: None, code: None }
    }

    /// A body whose `type` follows the status class: `server_error` for 5xx,
    /// `invalid_request_error` otherwise.
    pub fn for_status(status: StatusCode, code: &'a str, message: &'a str) -> Self {
        ErrorBody { message, kind: kind_for(status), param: None, code: Some(code) }
    }

    pub fn with_param(mut self, param: Option<&'a str>) -> Self {
        self.param = param;
        self
    }

    pub fn with_code(mut self, code: Option<&'a str>) -> Self {
        self.code = code;
        self
    }

    /// Append the JSON object to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if serde_json::to_writer(&mut *out, &Envelope { error: self }).is_err() {
            out.truncate(start);
            out.extend_from_slice(FALLBACK);
        }
    }

    /// The JSON object, as a response body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.message.len());
        self.write_json(&mut out);
        out
    }

    /// The same object as one SSE event: `data: {…}\n\n`.
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(104 + self.message.len());
        out.extend_from_slice(b"data: ");
        self.write_json(&mut out);
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// `server_error` for a 5xx status, `invalid_request_error` otherwise.
pub fn kind_for(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        SERVER_ERROR
    } else {
        INVALID_REQUEST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_field_order_with_nulls() {
        let body = ErrorBody::new(INVALID_REQUEST, "Incorrect API key provided.").with_code(Some("invalid_api_key"));
        assert_eq!(
            String::from_utf8(body.to_json()).unwrap(),
            r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
        );
        let body = ErrorBody::new(SERVER_ERROR, "x");
        assert_eq!(body.to_json(), br#"{"error":{"message":"x","type":"server_error","param":null,"code":null}}"#);
    }

    #[test]
    fn type_follows_the_status_class() {
        let e = ErrorBody::for_status(StatusCode::BAD_GATEWAY, "local_server_unreachable", "down");
        assert_eq!(e.kind, "server_error");
        assert_eq!(e.code, Some("local_server_unreachable"));
        assert_eq!(ErrorBody::for_status(StatusCode::NOT_FOUND, "not_found", "no").kind, "invalid_request_error");
        assert_eq!(ErrorBody::for_status(StatusCode::TOO_MANY_REQUESTS, "c", "m").kind, "invalid_request_error");
    }

    #[test]
    fn escapes_user_text_and_param() {
        let body = ErrorBody::new(INVALID_REQUEST, "a\"b\n<c>\u{0}").with_param(Some("mo\"del"));
        let v: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "a\"b\n<c>\u{0}");
        assert_eq!(v["error"]["param"], "mo\"del");
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let body = ErrorBody::new(SERVER_ERROR, "line one\nline two").with_code(Some("upstream_error"));
        let ev = body.to_sse_event();
        assert!(ev.starts_with(b"data: {\"error\""));
        assert!(ev.ends_with(b"\n\n"));
        assert_eq!(ev.iter().filter(|&&b| b == b'\n').count(), 2, "newlines in the message are escaped");
        assert_eq!(&ev[6..ev.len() - 2], &body.to_json()[..]);
    }

    #[test]
    fn write_json_appends() {
        let mut out = b"prefix".to_vec();
        ErrorBody::new(SERVER_ERROR, "m").write_json(&mut out);
        assert!(out.starts_with(b"prefix{\"error\":"));
    }
}
