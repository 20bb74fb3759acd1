//! The playground: a chat sent from the console goes to the in-process data
//! plane's `/v1/chat/completions` over loopback, with a client key, exactly
//! as any client's request (same routing, limits, accounting and request
//! log), and its answer (an SSE stream) is relayed to the browser as it
//! arrives. The browser never holds the key: the console mints one per
//! session and org, or the caller passes one it already has.

use super::{playground_key, session_cookie};
use crate::api::{ApiJson, ErrorBody};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// How long connecting to the data plane may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most messages one playground chat sends.
pub const MAX_MESSAGES: usize = 256;

/// Where the playground sends requests.
#[derive(Clone, Debug)]
pub struct Dataplane {
    addr: SocketAddr,
    tls: bool,
    /// It listens on every address (the console shows the page's host).
    wildcard: bool,
}

impl Dataplane {
    /// A wildcard listen address is reached on loopback.
    pub fn new(mut addr: SocketAddr, tls: bool) -> Dataplane {
        let wildcard = addr.ip().is_unspecified();
        if wildcard {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Dataplane { addr, tls, wildcard }
    }

    /// The gateway's URL as the console shows it (`{host}` for the page's
    /// host when the data plane listens on every address).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.wildcard {
            format!("{scheme}://{{host}}:{}", self.addr.port())
        } else {
            format!("{scheme}://{}", self.addr)
        }
    }
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaygroundChat {
    /// The model (route) name clients ask for.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Use a playground key minted for this org (admin role; deleted at sign-out).
    #[serde(default)]
    pub org: Option<String>,
    /// Or a client key you hold (sent to the data plane, never stored).
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
}

/// Send a chat through the data plane and stream its answer back (SSE, the
/// data plane's own status and `x-switchboard-*` / `x-request-id` headers).
#[utoipa::path(post, path = "/v1/admin/console/playground/chat", tag = "console", request_body = PlaygroundChat, responses((status = 200, description = "the data plane's answer, streamed (text/event-stream)"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn chat(
    State(s): State<SharedState>,
    method: Method,
    headers: HeaderMap,
    ApiJson(b): ApiJson<PlaygroundChat>,
) -> ApiResult<Response> {
    // Console sessions only: this is the browser's way to the data plane.
    let a = super::authenticate(&s, &method, &headers).await?;
    let session = session_cookie(&headers).ok_or_else(ApiError::unauthorized)?;
    let model = b.model.trim();
    if model.is_empty() || model.chars().count() > 256 {
        return Err(ApiError::invalid_field("model", "pick a model (1 to 256 characters)"));
    }
    if b.messages.is_empty() || b.messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid_field("messages", format!("send 1 to {MAX_MESSAGES} messages")));
    }
    for (i, m) in b.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(ApiError::invalid_field(&format!("messages[{i}].role"), "expected system, user or assistant"));
        }
    }
    if let Some(t) = b.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid_field("temperature", "must be between 0 and 2"));
        }
    }
    let key = match (&b.api_key, &b.org) {
        (Some(k), None) if !k.trim().is_empty() && k.len() <= 512 => k.trim().to_string(),
        (None, Some(org)) if !org.trim().is_empty() => playground_key(&s, &a, &session, org.trim()).await?,
        _ => return Err(ApiError::invalid_field("org", "give either `org` (a playground key is minted) or `api_key`")),
    };
    let dp = s.console.dataplane().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "playground_unavailable", "No data plane runs in this process.")
    })?;
    if dp.tls {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "playground_unavailable",
            "The playground relays over plain HTTP on loopback; this data plane serves only HTTPS.",
        ));
    }
    let mut body = serde_json::json!({
        "model": model,
        "messages": b.messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(n) = b.max_tokens {
        body["max_tokens"] = n.into();
    }
    if let Some(t) = b.temperature {
        body["temperature"] = t.into();
    }
    let body = serde_json::to_vec(&body).map_err(|_| ApiError::internal("cannot encode the chat"))?;
    relay(&dp, &key, body).await
}

fn unreachable_dp(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "playground: the data plane is unreachable");
    ApiError::new(StatusCode::BAD_GATEWAY, "playground_unavailable", "The data plane could not be reached.")
}

async fn relay(dp: &Dataplane, key: &str, body: Vec<u8>) -> ApiResult<Response> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(dp.addr))
        .await
        .map_err(|_| unreachable_dp("connect timed out"))?
        .map_err(unreachable_dp)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(unreachable_dp)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "playground connection ended");
        }
    });
    let auth = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| ApiError::invalid_field("api_key", "not a valid key"))?;
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::HOST, dp.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, auth)
        .header(header::USER_AGENT, "switchboard-console")
        .body(axum::body::Body::from(body))
        .map_err(|_| ApiError::internal("cannot build the playground request"))?;
    let resp = sender.send_request(req).await.map_err(unreachable_dp)?;
    let (parts, incoming) = resp.into_parts();
    let mut out = Response::new(axum::body::Body::new(incoming));
    *out.status_mut() = parts.status;
    for (name, value) in parts.headers.iter() {
        let n = name.as_str();
        if n == "content-type" || n == "x-request-id" || n.starts_with("x-switchboard-") || n == "retry-after" {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(out.into_response())
}
