//! Request and response heads, parsed in place with httparse.
//!
//! The parse keeps only what the gateway acts on, so no header is copied: the
//! bearer token is kept as its place in the head (authentication hashes it
//! there with the snapshot's key hasher; the plaintext is never copied), framing headers are checked for smuggling (both
//! `Content-Length` and `Transfer-Encoding`, conflicting lengths, unknown
//! codings all refuse the request).

use switchboard_shared::config::{Strategy, MAX_HEADERS_CAP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    /// Answered like GET, without the body.
    Head,
    Post,
    Other,
}

/// The endpoints the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's Messages API (`POST /v1/messages`).
    Messages,
    /// Anthropic's token count (`POST /v1/messages/count_tokens`).
    CountTokens,
    Models,
    Model(String),
    Healthz,
    Metrics,
    /// A node agent opening a connection for the gateway to send requests down.
    NodeAttach,
    Unknown,
}

impl Endpoint {
    /// The name usage records and cache keys use.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages.count_tokens",
            _ => "other",
        }
    }

    fn from_path(path: &str) -> Endpoint {
        let path = origin_form(path);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            "/v1/models" => Endpoint::Models,
            "/healthz" => Endpoint::Healthz,
            "/metrics" => Endpoint::Metrics,
            "/v1/nodes/attach" => Endpoint::NodeAttach,
            _ => match path.strip_prefix("/v1/models/").map(percent_decode) {
                // SDKs escape the `/` of `org/model` ids (`org%2Fmodel`).
                Some(id) if !id.is_empty() && id.len() <= MAX_MODEL_ID_BYTES => Endpoint::Model(id),
                _ => Endpoint::Unknown,
            },
        }
    }

    /// The path appended to an upstream's base URL for proxied endpoints.
    pub fn upstream_suffix(&self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions => Some("/chat/completions"),
            Endpoint::Completions => Some("/completions"),
            Endpoint::Embeddings => Some("/embeddings"),
            Endpoint::Messages => Some("/messages"),
            Endpoint::CountTokens => Some("/messages/count_tokens"),
            _ => None,
        }
    }
}

/// The longest model id `GET /v1/models/{id}` looks up (decoded).
pub const MAX_MODEL_ID_BYTES: usize = 256;

/// The path of a request target: an absolute-form target
/// (`http://host/v1/...`, RFC 9112 §3.2.2, which a server must accept) is
/// reduced to its path; an origin-form one is returned as is.
fn origin_form(target: &str) -> &str {
    let scheme = |s: &str| target.as_bytes().get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s.as_bytes()));
    let rest = if scheme("http://") {
        &target[7..]
    } else if scheme("https://") {
        &target[8..]
    } else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        // `http://host` or `http://host?q`: the path is `/`.
        _ => "/",
    }
}

/// `%XX` escapes decoded; a malformed escape, or bytes that do not make
/// UTF-8, leave the text as it came.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = (b[i] == b'%').then(|| Some(hex(*b.get(i + 1)?)? * 16 + hex(*b.get(i + 2)?)?)).flatten();
        match decoded {
            Some(v) => {
                out.push(v as u8);
                i += 3;
            }
            None if b[i] == b'%' => return s.to_string(),
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// What the client presented in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Missing,
    /// Present but not `Bearer <token>`.
    Malformed,
    /// Where the token lies in the head's bytes.
    Bearer {
        start: usize,
        end: usize,
    },
}

impl Credential {
    /// The token's bytes, given the head it was parsed from.
    pub fn token<'h>(&self, head: &'h [u8]) -> Option<&'h [u8]> {
        match *self {
            Credential::Bearer { start, end } => head.get(start..end),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub endpoint: Endpoint,
    /// An HTTP/1.0 request: no chunked responses, closed unless it asks for keep-alive.
    pub http10: bool,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub credential: Credential,
    pub request_id: Option<String>,
    /// `x-switchboard-strategy`: honoured only where the route allows it.
    pub strategy: Option<Strategy>,
    /// `Cache-Control` as the response cache reads it.
    pub cache_control: CacheControl,
    /// `x-switchboard-fault` and `x-switchboard-target-only`, as sent (`crate::fault`).
    pub fault: crate::fault::RawHeaders,
    /// Where `anthropic-version` and `anthropic-beta` are in the head (their
    /// values, trimmed), forwarded to Anthropic-kind providers as sent.
    pub anthropic_version: Option<(usize, usize)>,
    pub anthropic_beta: Option<(usize, usize)>,
    /// Where the client's session id is in the head: `X-Claude-Code-Session-Id`,
    /// else `X-Session-Id` (printable ASCII, at most
    /// [`MAX_SESSION_ID_BYTES`] bytes; otherwise not kept). Recorded on usage.
    pub session: Option<(usize, usize)>,
    /// Bytes of the head, terminator included.
    pub head_len: usize,
}

impl Endpoint {
    /// An endpoint of Anthropic's API: its errors take Anthropic's shape.
    pub fn is_anthropic(&self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::CountTokens)
    }
}

impl RequestHead {
    /// Answer in Anthropic's shapes: an Anthropic path, or the model list
    /// asked by an Anthropic client (it sends `anthropic-version`).
    pub fn anthropic_dialect(&self) -> bool {
        self.endpoint.is_anthropic()
            || (matches!(self.endpoint, Endpoint::Models | Endpoint::Model(_)) && self.anthropic_version.is_some())
    }
}

/// What a request's `Cache-Control` asks of the response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheControl {
    #[default]
    Default,
    /// `no-cache`: do not answer from the cache (but store the answer).
    NoCache,
    /// `no-store`: neither.
    NoStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    TooManyHeaders,
    Malformed(&'static str),
    /// An `Expect` other than `100-continue`.
    Expectation,
}

/// The longest `x-request-id` echoed back; a longer or non-printable one is replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

pub use switchboard_shared::limits::MAX_SESSION_ID_BYTES;

fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &v[start..end]
}

pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, d| acc.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
pub fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',').any(|t| eq_ignore_case(trim(t), token))
}

/// Parse a complete request head (`buf` ends with `\r\n\r\n`).
pub fn parse_request(buf: &[u8], max_headers: usize) -> Result<RequestHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let max_headers = max_headers.min(MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let path = req.path.unwrap_or("/");
    let http10 = req.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut saw_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut credential = Credential::Missing;
    // Anthropic's SDKs send the key as `x-api-key`; `Authorization` wins if both come.
    let mut api_key = Credential::Missing;
    let mut anthropic_version = None;
    let mut anthropic_beta = None;
    let mut session = None;
    let mut generic_session = None;
    let span = |v: &[u8]| {
        let start = v.as_ptr() as usize - buf.as_ptr() as usize;
        (start, start + v.len())
    };
    let session_id = |v: &[u8]| {
        let v = trim(v);
        (!v.is_empty() && v.len() <= MAX_SESSION_ID_BYTES && v.iter().all(|b| (0x21..0x7f).contains(b)))
            .then(|| span(v))
    };
    let mut request_id = None;
    let mut strategy = None;
    let mut cache_control = CacheControl::Default;
    let mut fault = crate::fault::RawHeaders::default();
    let mut host = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        match name.len() {
            4 if eq_ignore_case(name, b"host") => {
                if host {
                    return Err(HeadError::Malformed("more than one Host header"));
                }
                host = true;
            }
            6 if eq_ignore_case(name, b"expect") => {
                if eq_ignore_case(trim(value), b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HeadError::Expectation);
                }
            }
            10 if eq_ignore_case(name, b"connection") => {
                conn_close |= has_token(value, b"close");
                conn_keep_alive |= has_token(value, b"keep-alive");
            }
            12 if eq_ignore_case(name, b"x-request-id") => {
                let v = trim(value);
                if !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES && v.iter().all(|b| (0x21..0x7f).contains(b)) {
                    // Checked printable ASCII above, so this is valid UTF-8.
                    request_id = std::str::from_utf8(v).ok().map(str::to_string);
                }
            }
            13 if eq_ignore_case(name, b"authorization") => {
                if credential != Credential::Missing {
                    return Err(HeadError::Malformed("more than one Authorization header"));
                }
                let v = trim(value);
                credential = match v.split_at_checked(7) {
                    Some((scheme, token)) if eq_ignore_case(scheme, b"bearer ") => {
                        let token = trim(token);
                        if token.is_empty() || token.iter().any(|b| matches!(b, b' ' | b'\t')) {
                            Credential::Malformed
                        } else {
                            let start = token.as_ptr() as usize - buf.as_ptr() as usize;
                            Credential::Bearer { start, end: start + token.len() }
                        }
                    }
                    _ => Credential::Malformed,
                };
            }
            9 if eq_ignore_case(name, b"x-api-key") => {
                if api_key != Credential::Missing {
                    return Err(HeadError::Malformed("more than one x-api-key header"));
                }
                let v = trim(value);
                api_key = if v.is_empty() || v.iter().any(|b| matches!(b, b' ' | b'\t')) {
                    Credential::Malformed
                } else {
                    let (start, end) = span(v);
                    Credential::Bearer { start, end }
                };
            }
            24 if eq_ignore_case(name, b"x-claude-code-session-id") => session = session_id(value),
            12 if eq_ignore_case(name, b"x-session-id") => generic_session = session_id(value),
            17 if eq_ignore_case(name, b"anthropic-version") => anthropic_version = Some(span(trim(value))),
            14 if eq_ignore_case(name, b"anthropic-beta") => anthropic_beta = Some(span(trim(value))),
            14 if eq_ignore_case(name, b"content-length") => {
                let n = parse_content_length(value).ok_or(HeadError::Malformed("invalid Content-Length"))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::Malformed("conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            17 if eq_ignore_case(name, b"transfer-encoding") => {
                if saw_te || !eq_ignore_case(trim(value), b"chunked") {
                    return Err(HeadError::Malformed("unsupported Transfer-Encoding (only a single `chunked`)"));
                }
                saw_te = true;
                chunked = true;
            }
            22 if eq_ignore_case(name, b"x-switchboard-strategy") => {
                strategy = std::str::from_utf8(trim(value)).ok().and_then(Strategy::parse);
            }
            19 if eq_ignore_case(name, b"x-switchboard-fault") => {
                fault.repeated |= fault.fault.replace(value.into()).is_some();
            }
            25 if eq_ignore_case(name, b"x-switchboard-target-only") => {
                fault.repeated |= fault.target_only.replace(value.into()).is_some();
            }
            13 if eq_ignore_case(name, b"cache-control") => {
                for d in value.split(|&b| b == b',').map(trim) {
                    if eq_ignore_case(d, b"no-store") {
                        cache_control = CacheControl::NoStore;
                    } else if eq_ignore_case(d, b"no-cache") && cache_control == CacheControl::Default {
                        cache_control = CacheControl::NoCache;
                    }
                }
            }
            _ => {}
        }
    }
    if chunked && content_length.is_some() {
        return Err(HeadError::Malformed("both Content-Length and Transfer-Encoding"));
    }
    if chunked && http10 {
        return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if !host && !http10 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    let keep_alive = if http10 { conn_keep_alive && !conn_close } else { !conn_close };
    if credential == Credential::Missing {
        credential = api_key;
    }
    Ok(RequestHead {
        method,
        endpoint: Endpoint::from_path(path),
        http10,
        content_length,
        chunked,
        keep_alive,
        expect_continue,
        credential,
        request_id,
        strategy,
        cache_control,
        fault,
        anthropic_version,
        anthropic_beta,
        session: session.or(generic_session),
        head_len,
    })
}

/// How an upstream response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub event_stream: bool,
    /// `Content-Type` value, when present (bounded by the head size).
    pub content_type: Option<Vec<u8>>,
    pub retry_after: Option<Vec<u8>>,
    pub head_len: usize,
}

const MAX_UPSTREAM_HEADERS: usize = 128;

/// Parse a complete upstream response head.
pub fn parse_response(buf: &[u8], request_was_head: bool) -> Result<ResponseHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_UPSTREAM_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed("malformed response head")),
    };
    let status = res.code.unwrap_or(0);
    let http10 = res.version == Some(0);
    let mut content_length = None;
    let mut chunked = false;
    let mut close = http10;
    let mut content_type = None;
    let mut retry_after = None;
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if eq_ignore_case(name, b"content-length") {
            let n = parse_content_length(h.value).ok_or(HeadError::Malformed("invalid upstream Content-Length"))?;
            if content_length.is_some_and(|p| p != n) {
                return Err(HeadError::Malformed("conflicting upstream Content-Length"));
            }
            content_length = Some(n);
        } else if eq_ignore_case(name, b"transfer-encoding") {
            let v = trim(h.value);
            if eq_ignore_case(v, b"chunked") {
                chunked = true;
            } else if !eq_ignore_case(v, b"identity") {
                return Err(HeadError::Malformed("unsupported upstream Transfer-Encoding"));
            }
        } else if eq_ignore_case(name, b"connection") {
            if has_token(h.value, b"close") {
                close = true;
            } else if http10 && has_token(h.value, b"keep-alive") {
                close = false;
            }
        } else if eq_ignore_case(name, b"content-type") {
            content_type = Some(trim(h.value).to_vec());
        } else if eq_ignore_case(name, b"retry-after") {
            retry_after = Some(trim(h.value).to_vec());
        }
    }
    let framing = if request_was_head || status == 204 || status == 304 || (100..200).contains(&status) {
        BodyFraming::None
    } else if chunked {
        // RFC 9112 6.3: chunked wins over Content-Length, and the connection must close.
        if content_length.is_some() {
            close = true;
        }
        BodyFraming::Chunked
    } else if let Some(n) = content_length {
        BodyFraming::Length(n)
    } else {
        close = true;
        BodyFraming::Close
    };
    let event_stream =
        content_type.as_deref().is_some_and(|ct| ct.len() >= 17 && eq_ignore_case(&ct[..17], b"text/event-stream"));
    Ok(ResponseHead { status, framing, keep_alive: !close, event_stream, content_type, retry_after, head_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestHead, HeadError> {
        parse_request(s.as_bytes(), 96)
    }

    #[test]
    fn parses_a_chat_request() {
        let h = parse(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-1\r\nContent-Length: 12\r\nX-Request-Id: abc\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.endpoint, Endpoint::ChatCompletions);
        assert_eq!(h.content_length, Some(12));
        assert!(h.keep_alive && !h.chunked && !h.expect_continue);
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-1\r\nContent-Length: 12\r\nX-Request-Id: abc\r\n\r\n";
        assert_eq!(h.credential.token(head.as_bytes()), Some(&b"sk-1"[..]));
        assert_eq!(h.request_id.as_deref(), Some("abc"));
    }

    #[test]
    fn endpoints_and_queries() {
        assert_eq!(parse("GET /v1/models?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().endpoint, Endpoint::Models);
        assert_eq!(
            parse("GET /v1/models/gpt-4o HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().endpoint,
            Endpoint::Model("gpt-4o".into())
        );
        assert_eq!(parse("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().endpoint, Endpoint::Unknown);
    }

    #[test]
    fn model_ids_are_percent_decoded() {
        let model = |target: &str| parse(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap().endpoint;
        assert_eq!(model("/v1/models/meta-llama%2FLlama-3.1-8B"), Endpoint::Model("meta-llama/Llama-3.1-8B".into()));
        assert_eq!(model("/v1/models/a%20b%2fc"), Endpoint::Model("a b/c".into()));
        assert_eq!(model("/v1/models/caf%C3%A9"), Endpoint::Model("café".into()));
        // Malformed escapes and non-UTF-8 stay as they came.
        assert_eq!(model("/v1/models/100%"), Endpoint::Model("100%".into()));
        assert_eq!(model("/v1/models/a%zz"), Endpoint::Model("a%zz".into()));
        assert_eq!(model("/v1/models/%FF"), Endpoint::Model("%FF".into()));
        assert_eq!(model(&format!("/v1/models/{}", "%41".repeat(257))), Endpoint::Unknown);
    }

    #[test]
    fn absolute_form_targets_are_accepted() {
        let ep = |target: &str| parse(&format!("POST {target} HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap().endpoint;
        assert_eq!(ep("http://gw.example/v1/chat/completions"), Endpoint::ChatCompletions);
        assert_eq!(ep("HTTPS://gw.example:8443/v1/embeddings?x=1"), Endpoint::Embeddings);
        assert_eq!(ep("http://user@gw/v1/models/org%2Fm"), Endpoint::Model("org/m".into()));
        assert_eq!(ep("http://gw.example"), Endpoint::Unknown);
        assert_eq!(ep("http://gw.example?x=/v1/models"), Endpoint::Unknown);
        assert_eq!(ep("ftp://gw/v1/chat/completions"), Endpoint::Unknown);
        let h = parse("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.method, h.endpoint), (Method::Head, Endpoint::Healthz));
    }

    #[test]
    fn refuses_smuggling_shapes() {
        let both = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(both), Err(HeadError::Malformed(_))));
        let two_cl = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(matches!(parse(two_cl), Err(HeadError::Malformed(_))));
        let te_gzip = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(matches!(parse(te_gzip), Err(HeadError::Malformed(_))));
        let bad_cl = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n";
        assert!(matches!(parse(bad_cl), Err(HeadError::Malformed(_))));
        let no_host = "GET / HTTP/1.1\r\n\r\n";
        assert!(matches!(parse(no_host), Err(HeadError::Malformed(_))));
        // The same length twice is harmless.
        assert!(parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n").is_ok());
    }

    #[test]
    fn connection_and_expect() {
        let h = parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!h.keep_alive && h.expect_continue);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n").unwrap_err(), HeadError::Expectation);
    }

    #[test]
    fn credentials() {
        let head = |v: &str| format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {v}\r\n\r\n");
        let c = |v: &str| parse(&head(v)).unwrap().credential;
        assert_eq!(c("bearer k").token(head("bearer k").as_bytes()), Some(&b"k"[..]));
        assert_eq!(c("Bearer   tok  ").token(head("Bearer   tok  ").as_bytes()), Some(&b"tok"[..]));
        assert_eq!(c("Basic abc"), Credential::Malformed);
        assert_eq!(c("Bearer "), Credential::Malformed);
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().credential, Credential::Missing);
    }

    #[test]
    fn too_many_headers() {
        let mut s = "GET / HTTP/1.1\r\nHost: x\r\n".to_string();
        for i in 0..20 {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        assert_eq!(parse_request(s.as_bytes(), 10).unwrap_err(), HeadError::TooManyHeaders);
        assert!(parse_request(s.as_bytes(), 30).is_ok());
    }

    #[test]
    fn odd_request_ids_are_dropped() {
        let h = parse("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: a b\r\n\r\n").unwrap();
        assert_eq!(h.request_id, None);
        let long = "a".repeat(MAX_REQUEST_ID_BYTES + 1);
        let h = parse(&format!("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: {long}\r\n\r\n")).unwrap();
        assert_eq!(h.request_id, None);
    }

    #[test]
    fn response_framing() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).unwrap();
        assert_eq!((r.status, r.framing, r.keep_alive), (200, BodyFraming::Length(3), true));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.framing, BodyFraming::Chunked);
        assert!(r.event_stream);
        let r = parse_response(b"HTTP/1.1 502 Bad\r\n\r\n", false).unwrap();
        assert_eq!((r.framing, r.keep_alive), (BodyFraming::Close, false));
        let r = parse_response(b"HTTP/1.1 204 No\r\nContent-Length: 9\r\n\r\n", false).unwrap();
        assert_eq!(r.framing, BodyFraming::None);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).is_err());
        assert!(parse_response(b"NOT HTTP\r\n\r\n", false).is_err());
    }
}
