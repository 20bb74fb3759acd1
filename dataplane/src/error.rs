//! One error type for everything the gateway refuses or fails at, rendered
//! through the shared OpenAI error body ([`ErrorBody`]):
//! `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
//!
//! Each error says where it came from ([`Source`]) and whether another
//! upstream may be tried ([`GatewayError::retryable`]); routing reads that to
//! fail over.

use std::borrow::Cow;
use switchboard_shared::anthropic::AnthropicError;
use switchboard_shared::config::Trigger;
use switchboard_shared::error::{ErrorBody, INVALID_REQUEST as INVALID, SERVER_ERROR as SERVER};

/// Who caused the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's request is wrong.
    Client,
    /// The upstream failed or misbehaved.
    Upstream,
    /// The gateway itself (overload, shutdown).
    Gateway,
}

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: u16,
    /// OpenAI's `type`: `invalid_request_error`, `server_error`, …
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<Cow<'static, str>>,
    pub message: Cow<'static, str>,
    pub source: Source,
    /// Another upstream target may be tried (nothing reached the client).
    pub retryable: bool,
    /// The connection must close after this response (framing is unknown).
    pub close: bool,
    /// For upstream failures: which failover trigger this is.
    pub cause: Option<Trigger>,
    /// Rendered in Anthropic's shape (`{"type":"error","error":{…}}`, and
    /// `event: error` in a stream): the request came on an Anthropic path.
    pub anthropic: bool,
}

impl GatewayError {
    fn new(status: u16, kind: &'static str, code: Option<&'static str>, message: impl Into<Cow<'static, str>>) -> Self {
        let source = if status >= 500 { Source::Gateway } else { Source::Client };
        GatewayError {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
            source,
            retryable: false,
            close: false,
            cause: None,
            anthropic: false,
        }
    }

    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, INVALID, None, message)
    }

    pub fn malformed_http(what: &'static str) -> Self {
        Self::new(400, INVALID, Some("bad_request"), format!("Malformed HTTP request: {what}.")).closing()
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            INVALID,
            Some("invalid_json"),
            format!("We could not parse the JSON body of your request ({detail}). The body must be a JSON object."),
        )
    }

    pub fn invalid_type(param: &'static str, expected: &'static str) -> Self {
        Self::new(400, INVALID, Some("invalid_type"), format!("Invalid type for '{param}': expected {expected}."))
            .with_param(param)
    }

    /// A value of the right type that cannot be used (the message says why).
    pub fn invalid_value(param: &'static str, message: &'static str) -> Self {
        Self::new(400, INVALID, Some("invalid_value"), message).with_param(param)
    }

    /// A request parameter that breaks OpenAI's contract, with OpenAI's code
    /// (`empty_array`, `integer_below_min_value`, ...) and message.
    pub fn invalid_param(param: impl Into<Cow<'static, str>>, code: &'static str, message: String) -> Self {
        Self::new(400, INVALID, Some(code), message).with_param(param)
    }

    pub fn missing_param(param: &'static str) -> Self {
        Self::new(400, INVALID, Some("missing_required_parameter"), format!("Missing required parameter: '{param}'."))
            .with_param(param)
    }

    pub fn missing_key() -> Self {
        Self::new(
            401,
            INVALID,
            Some("invalid_api_key"),
            "You didn't provide an API key. Provide it in the Authorization header as `Bearer YOUR_KEY`.",
        )
    }

    /// A node agent's attach refused (unknown, revoked or wrong secret).
    pub fn node_refused(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, INVALID, Some("invalid_node_credential"), message)
    }

    pub fn invalid_key() -> Self {
        Self::new(401, INVALID, Some("invalid_api_key"), "Incorrect API key provided.")
    }

    pub fn model_not_found(model: &str) -> Self {
        let shown = shown(model);
        Self::new(
            404,
            INVALID,
            Some("model_not_found"),
            format!("The model `{shown}` does not exist or you do not have access to it."),
        )
        .with_param("model")
    }

    pub fn unknown_url(method: &str, path: &str) -> Self {
        let shown = shown(path);
        Self::new(404, INVALID, Some("unknown_url"), format!("Invalid URL ({method} {shown})"))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(405, INVALID, Some("method_not_allowed"), "Method not allowed for this endpoint.")
    }

    pub fn request_timeout() -> Self {
        Self::new(408, INVALID, Some("request_timeout"), "The request was not received in time.").closing()
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            INVALID,
            Some("request_too_large"),
            format!("The request body exceeds the limit of {limit} bytes."),
        )
        .closing()
    }

    pub fn expectation_failed() -> Self {
        Self::new(417, INVALID, Some("expectation_failed"), "Only `Expect: 100-continue` is supported.").closing()
    }

    pub fn headers_too_large(limit: usize) -> Self {
        Self::new(
            431,
            INVALID,
            Some("request_header_fields_too_large"),
            format!("The request headers exceed the limit of {limit} bytes."),
        )
        .closing()
    }

    pub fn too_many_headers(limit: usize) -> Self {
        Self::new(
            431,
            INVALID,
            Some("request_header_fields_too_large"),
            format!("The request has more than {limit} header lines."),
        )
        .closing()
    }

    /// A rate limit refused the request (the message names it).
    pub fn rate_limited(message: String) -> Self {
        Self::new(429, "rate_limit_error", Some("rate_limit_exceeded"), message)
    }

    /// A spend or token cap is reached (OpenAI's `insufficient_quota`).
    pub fn quota_exceeded(message: String) -> Self {
        Self::new(429, "insufficient_quota", Some("insufficient_quota"), message)
    }

    /// `[cluster]` with `on_redis_down = "deny"`: limits cannot be checked.
    pub fn limits_unavailable() -> Self {
        Self::new(
            503,
            SERVER,
            Some("limits_unavailable"),
            "Rate limits and quotas cannot be checked right now (the shared limits store is unavailable); retry shortly.",
        )
    }

    pub fn overloaded() -> Self {
        Self::new(503, SERVER, Some("overloaded"), "The gateway is at its connection limit; retry shortly.").closing()
    }

    pub fn shutting_down() -> Self {
        Self::new(503, SERVER, Some("shutting_down"), "The gateway is shutting down; retry on another instance.")
            .closing()
    }

    pub fn no_target(model: &str) -> Self {
        let mut e = Self::new(502, SERVER, Some("upstream_error"), format!("No upstream could serve model `{model}`."));
        e.source = Source::Upstream;
        e
    }

    /// The route has targets, but none serves this endpoint: completions and
    /// embeddings need an OpenAI-kind provider or a node (the Messages API
    /// has no counterpart to translate them to).
    /// `path`: the endpoint's (`/v1/completions`); `anthropic`: it is one of
    /// Anthropic's (a token count).
    pub fn no_target_of_kind(model: &str, path: &str, anthropic: bool) -> Self {
        let shown = shown(model);
        let kind = if anthropic { "an `anthropic`-kind provider" } else { "an `openai`-kind provider or a node" };
        Self::new(
            400,
            INVALID,
            Some("unsupported_target_kind"),
            format!(
                "Model `{shown}` has no target that serves `{path}`: its route needs {kind} \
                 (only chat completions and messages are translated between the OpenAI and Anthropic APIs)."
            ),
        )
        .with_param("model")
    }

    /// The upstream could not be reached or answered with something that is
    /// not HTTP. Another target may be tried.
    pub fn upstream(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(502, SERVER, Some("upstream_error"), message);
        e.source = Source::Upstream;
        e.retryable = true;
        e.cause = Some(Trigger::Reset);
        e
    }

    /// A stream ended without any `finish_reason`: the generation was cut
    /// short upstream (sent to the client as an SSE error event instead of
    /// `[DONE]`, so that SDKs raise rather than end as if complete).
    pub fn upstream_truncated(upstream: &str) -> Self {
        let mut e = Self::new(
            502,
            SERVER,
            Some("upstream_truncated"),
            format!(
                "Upstream `{upstream}` ended the stream without a finish_reason: the generation was cut short \
                 and this answer is incomplete."
            ),
        );
        e.source = Source::Upstream;
        e.retryable = true;
        e.cause = Some(Trigger::Reset);
        e
    }

    pub fn upstream_timeout(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(504, SERVER, Some("upstream_timeout"), message);
        e.source = Source::Upstream;
        e.retryable = true;
        e.cause = Some(Trigger::Timeout);
        e
    }

    /// A status an upstream answered, injected by `x-switchboard-fault`
    /// (`crate::fault`): fails over on `trigger` when the route does, else
    /// goes to the client as is.
    pub fn injected_status(status: u16, message: String, trigger: Option<Trigger>) -> Self {
        let kind = match status {
            429 => "rate_limit_error",
            500..=599 => SERVER,
            _ => INVALID,
        };
        let mut e = Self::new(status, kind, Some("upstream_error"), message);
        e.source = Source::Upstream;
        e.retryable = trigger.is_some();
        e.cause = trigger;
        e
    }

    /// Set which failover trigger this upstream failure is.
    pub fn because(mut self, t: Trigger) -> Self {
        self.cause = Some(t);
        self
    }

    /// Render in Anthropic's shape when `anthropic` (an error on `/v1/messages`).
    pub fn dialect(mut self, anthropic: bool) -> Self {
        self.anthropic = anthropic;
        self
    }

    /// Anthropic's error body, borrowing this error's message.
    pub fn anthropic_body(&self) -> AnthropicError<'_> {
        AnthropicError::for_status(self.status, &self.message)
    }

    /// The shared OpenAI error body, borrowing this error's fields.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody { message: &self.message, kind: self.kind, param: self.param.as_deref(), code: self.code }
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        if self.anthropic {
            return self.anthropic_body().to_json();
        }
        self.body().to_json()
    }

    /// The error as one SSE event, for a failure after a stream has started.
    /// OpenAI's SDKs raise `APIError` on a `data:` event carrying `error`.
    pub fn to_sse_event(&self) -> Vec<u8> {
        if self.anthropic {
            return self.anthropic_body().to_sse_event();
        }
        self.body().to_sse_event()
    }
}

/// The most of a client's text (a model name, a path) an error message
/// echoes, in bytes; longer text is cut at a character boundary and marked `…`.
pub const ECHO_MAX_BYTES: usize = 256;

fn shown(text: &str) -> Cow<'_, str> {
    if text.len() <= ECHO_MAX_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = ECHO_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// Reason phrases for the statuses the gateway writes itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape() {
        let e = GatewayError::invalid_type("stream", "a boolean");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "stream");
        assert_eq!(v["error"]["code"], "invalid_type");
        assert!(v["error"]["message"].as_str().unwrap().contains("stream"));
        let v: serde_json::Value = serde_json::from_slice(&GatewayError::invalid_key().to_json()).unwrap();
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }

    #[test]
    fn escapes_user_text() {
        let e = GatewayError::model_not_found("a\"b\n<c>");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("a\"b\n<c>"));
    }

    #[test]
    fn echoed_text_is_capped() {
        let long = "é".repeat(100_000);
        let e = GatewayError::model_not_found(&long);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.len() < ECHO_MAX_BYTES + 100, "{} bytes", msg.len());
        assert!(msg.contains("é…`"), "{msg}");
        assert!(GatewayError::model_not_found("short").message.contains("`short`"));
        assert!(GatewayError::unknown_url("GET", &"/x".repeat(1000)).message.len() < ECHO_MAX_BYTES + 100);
    }

    #[test]
    fn renders_anthropic_shape_on_anthropic_paths() {
        let e = GatewayError::invalid_key().dialect(true);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        let v: serde_json::Value =
            serde_json::from_slice(&GatewayError::no_target("m").dialect(true).to_json()).unwrap();
        assert_eq!(v["error"]["type"], "api_error");
        let ev = GatewayError::upstream("boom").dialect(true).to_sse_event();
        assert!(ev.starts_with(b"event: error\ndata: {\"type\":\"error\""));
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let ev = GatewayError::upstream("boom").to_sse_event();
        assert!(ev.starts_with(b"data: {\"error\""));
        assert!(ev.ends_with(b"\n\n"));
        assert_eq!(ev.iter().filter(|&&b| b == b'\n').count(), 2);
    }
}
