//! A mock OpenAI-compatible upstream, fast enough to measure the gateway
//! against, with behaviour chosen per request.
//!
//! Serves `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
//! `GET /v1/models`. Non-streaming replies carry `usage`; streaming replies are
//! OpenAI-shaped SSE (a role chunk, one chunk per token, a finish chunk, a
//! usage chunk when `stream_options.include_usage` is set, `[DONE]`).
//!
//! Behaviour comes from, in increasing precedence: the [`MockConfig`]
//! defaults, an `x-mock` request header holding JSON, and a `"mock"` object in
//! the request body (which a gateway forwards untouched). See [`Behaviour`].
//!
//! Token accounting is deterministic so tests can check totals:
//! `prompt_tokens = ceil(body bytes / 4)`, `completion_tokens = tokens`.

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpListener, TcpStream};
use monoio::time::Instant;
use serde::Deserialize;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
#[path = "mock_anthropic.rs"]
mod anthropic;
#[path = "mock_openai_rich.rs"]
mod rich;

use switchboard_dataplane::fmt::{push_chunk, push_dec};
use switchboard_dataplane::http::find_head_end;
use switchboard_dataplane::http::head::{has_token, parse_content_length};
use switchboard_dataplane::http::io::{read_append, write_all, IoFail};
use switchboard_dataplane::server::shutdown_sockets;

/// A fault to inject instead of a normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Reset the connection (RST) without answering.
    Reset,
    /// Close the connection without answering.
    Close,
    /// Never answer (until the peer goes away or an hour passes).
    Hang,
    /// Answer with bytes that are not HTTP.
    Garbage,
}

/// How SSE lines end (the spec allows all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineEnding {
    Lf,
    Crlf,
    Cr,
}

impl LineEnding {
    fn blank(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n\n",
            LineEnding::Crlf => "\r\n\r\n",
            LineEnding::Cr => "\r\r",
        }
    }
}

/// What the mock does for one request. Every field is optional; unset fields
/// fall back to the level below (header, then config).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Answer with this status and an OpenAI error body.
    pub status: Option<u16>,
    /// Wait this long before the response head.
    pub delay_ms: Option<u64>,
    /// Add a random 0..jitter_ms to the delay.
    pub jitter_ms: Option<u64>,
    /// Completion tokens to produce.
    pub tokens: Option<u32>,
    /// Streaming: time before the first chunk.
    pub ttft_ms: Option<u64>,
    /// Streaming: time between chunks.
    pub interval_ms: Option<u64>,
    pub fault: Option<Fault>,
    /// Streaming: drop the connection after this many tokens.
    pub drop_after: Option<u32>,
    /// Streaming: after this many tokens, wait for [`MockHandle::release`].
    pub hold_after: Option<u32>,
    /// Streaming: after this many tokens, send an SSE error event and end the stream.
    pub error_after: Option<u32>,
    /// Streaming: end the stream cleanly but without `data: [DONE]`.
    pub skip_done: Option<bool>,
    /// Leave `usage` out of every reply (an upstream that does not report it).
    pub no_usage: Option<bool>,
    /// Report this JSON as the `usage` of chat and text completions, verbatim
    /// (an upstream or node that reports nonsense).
    pub usage_json: Option<String>,
    /// Streaming: write JSON as Python servers do (`{"id": "x", "choices": []}`,
    /// spaces after `:` and `,`), with the usage chunk's `usage` before `choices`.
    pub spaced_json: Option<bool>,
    /// Streaming: end SSE lines with LF (the default), CRLF or CR.
    pub line_ending: Option<LineEnding>,
    /// Answer 200 with a chunked body whose first chunk-size line is broken.
    pub bad_first_chunk: Option<bool>,
    /// Never say why the generation stopped: streams have no chunk with a
    /// `finish_reason` (they end `[DONE]` all the same, as an interrupted
    /// llama-cpp-python does); whole answers say `"finish_reason": null`.
    pub no_finish_reason: Option<bool>,
    /// Streaming: close the connection right after `[DONE]`, without ending
    /// the chunked body.
    pub done_then_close: Option<bool>,
    /// Accept any body, as llama-cpp-python and others do: one that is not
    /// JSON (or lacks `messages`) is answered 200 like any other.
    pub permissive: Option<bool>,
    /// Answer with a tool call (the request's first tool: a `tool_use` block
    /// and `stop_reason: tool_use` on the Messages API, `tool_calls` and
    /// `finish_reason: tool_calls` on chat) unless the last message is a tool result.
    pub tool_use: Option<bool>,
    /// Chat: how many tool calls in parallel (1–16; the request's tools in turn).
    pub tool_calls: Option<u32>,
    /// A thinking block before the text (Messages API); `reasoning_content`
    /// deltas before the content (chat, as vLLM and llama.cpp send them).
    pub thinking: Option<bool>,
    /// Prompt tokens reported as read from the prompt cache (chat:
    /// `prompt_tokens_details.cached_tokens`, included in `prompt_tokens`).
    pub cache_read_tokens: Option<u64>,
    /// Messages API: prompt tokens reported as written to the prompt cache.
    pub cache_write_tokens: Option<u64>,
    /// Streaming (chat): each content token carries the time the mock wrote
    /// it, `"system_fingerprint":"t<19 digits>"` (CLOCK_MONOTONIC, ns), so a
    /// client on the same machine can time each event's transit through a
    /// proxy (`stream-hold --stamp`).
    pub stamp: Option<bool>,
}

impl Behaviour {
    /// This behaviour, with unset fields taken from `base`.
    pub fn over(self, base: &Behaviour) -> Behaviour {
        Behaviour {
            status: self.status.or(base.status),
            delay_ms: self.delay_ms.or(base.delay_ms),
            jitter_ms: self.jitter_ms.or(base.jitter_ms),
            tokens: self.tokens.or(base.tokens),
            ttft_ms: self.ttft_ms.or(base.ttft_ms),
            interval_ms: self.interval_ms.or(base.interval_ms),
            fault: self.fault.or(base.fault),
            drop_after: self.drop_after.or(base.drop_after),
            hold_after: self.hold_after.or(base.hold_after),
            error_after: self.error_after.or(base.error_after),
            skip_done: self.skip_done.or(base.skip_done),
            no_usage: self.no_usage.or(base.no_usage),
            usage_json: self.usage_json.or_else(|| base.usage_json.clone()),
            spaced_json: self.spaced_json.or(base.spaced_json),
            line_ending: self.line_ending.or(base.line_ending),
            bad_first_chunk: self.bad_first_chunk.or(base.bad_first_chunk),
            no_finish_reason: self.no_finish_reason.or(base.no_finish_reason),
            done_then_close: self.done_then_close.or(base.done_then_close),
            permissive: self.permissive.or(base.permissive),
            tool_use: self.tool_use.or(base.tool_use),
            tool_calls: self.tool_calls.or(base.tool_calls),
            thinking: self.thinking.or(base.thinking),
            cache_read_tokens: self.cache_read_tokens.or(base.cache_read_tokens),
            cache_write_tokens: self.cache_write_tokens.or(base.cache_write_tokens),
            stamp: self.stamp.or(base.stamp),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    /// Defaults for every request.
    pub behaviour: Behaviour,
    /// The text of one token.
    pub token_text: String,
    /// Models listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Keep a copy of every request (tests); off for load.
    pub record: bool,
    /// Bearer tokens answered with 401 (a provider refusing a key).
    pub reject_keys: Vec<String>,
    /// Like llama-cpp-python's server (`interrupt_requests = true`, its
    /// default): whenever another request arrives (any path, `/v1/models`
    /// too), every stream running ends at once with `data: [DONE]` and no
    /// `finish_reason`. Counted in [`MockHandle::interrupted`].
    pub interrupt_on_request: bool,
    /// Answer a generation for a model not in `models` with 404
    /// `model_not_found`, as OpenAI does (off: any model is served).
    pub strict_models: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            behaviour: Behaviour { tokens: Some(16), ..Behaviour::default() },
            token_text: "word ".to_string(),
            models: vec!["mock-model".to_string()],
            tls: None,
            record: false,
            reject_keys: Vec::new(),
            interrupt_on_request: false,
            strict_models: false,
        }
    }
}

/// A request the mock received (when `record` is on).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: AtomicU64,
    connections: AtomicU64,
    /// Requests the peer left: a write failed mid-stream, or it closed the
    /// connection while the mock waited (`delay_ms`, `ttft_ms`).
    aborted: AtomicU64,
    /// Request heads parsed so far: a stream that sees this change was
    /// overtaken by another request (`interrupt_on_request`).
    arrivals: AtomicU64,
    /// Streams ended early by another request's arrival.
    interrupted: AtomicU64,
    released: AtomicBool,
    stopping: AtomicBool,
    recorded: Mutex<Vec<Recorded>>,
}

pub struct MockUpstream;

/// A running mock; stops when dropped.
pub struct MockHandle {
    pub addr: SocketAddr,
    pub tls: bool,
    state: Arc<State>,
    fds: Vec<RawFd>,
    threads: Vec<JoinHandle<()>>,
}

impl MockUpstream {
    pub fn start(cfg: MockConfig) -> io::Result<MockHandle> {
        let listeners = switchboard_dataplane::server::bind_reuseport(
            cfg.listen,
            cfg.workers,
            4096,
            switchboard_dataplane::server::AddrSharing::Exclusive,
        )?;
        let addr = listeners[0].local_addr()?;
        let tls = match &cfg.tls {
            Some((cert, key)) => Some(Arc::new(server_tls(cert, key)?)),
            None => None,
        };
        let state = Arc::new(State::default());
        let cfg = Arc::new(cfg);
        let fds = listeners.iter().map(|l| l.as_raw_fd()).collect();
        let mut threads = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let (cfg, state, tls) = (cfg.clone(), state.clone(), tls.clone());
            threads.push(std::thread::Builder::new().name(format!("mock-{i}")).spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build();
                match rt {
                    Ok(mut rt) => rt.block_on(accept_loop(l, cfg, state, tls)),
                    Err(e) => tracing::error!(error = %e, "mock runtime failed"),
                }
            })?);
        }
        Ok(MockHandle { addr, tls: tls.is_some(), state, fds, threads })
    }
}

impl MockHandle {
    /// `http(s)://addr/v1`
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Requests answered or faulted so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests cut short because the peer went away (mid-stream, or while
    /// the mock waited before answering).
    pub fn aborted(&self) -> u64 {
        self.state.aborted.load(Ordering::SeqCst)
    }

    /// Streams ended early with `[DONE]` because another request arrived
    /// (`interrupt_on_request`).
    pub fn interrupted(&self) -> u64 {
        self.state.interrupted.load(Ordering::SeqCst)
    }

    /// Let streams held by `hold_after` continue.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn stop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Our listeners stay open until the threads end.
        shutdown_sockets(&self.fds);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_tls(cert: &[u8], key: &[u8]) -> io::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert).collect::<Result<_, _>>().map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn accept_loop(
    l: std::net::TcpListener,
    cfg: Arc<MockConfig>,
    state: Arc<State>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let Ok(listener) = TcpListener::from_std(l) else { return };
    let ctx = Rc::new(Ctx { cfg, state, seq: std::cell::Cell::new(0), conns: Default::default(), pacer: Pacer::new() });
    loop {
        let accepted = listener.accept().await;
        if ctx.state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok((stream, _)) = accepted else {
            monoio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        ctx.state.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let fd = stream.as_raw_fd();
        let tls = tls.clone();
        monoio::spawn(async move {
            ctx.conns.borrow_mut().insert(fd);
            match tls {
                None => serve(ctx.clone(), stream).await,
                Some(cfg) => {
                    if let Ok(s) = monoio_rustls::TlsAcceptor::from(cfg).accept(stream).await {
                        serve(ctx.clone(), s).await;
                    }
                }
            }
            ctx.conns.borrow_mut().remove(&fd);
        });
    }
    // Stopping: end the open connections so their sockets close now.
    shutdown_sockets(ctx.conns.borrow().iter());
    let until = Instant::now() + Duration::from_secs(2);
    while !ctx.conns.borrow().is_empty() && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Ctx {
    cfg: Arc<MockConfig>,
    state: Arc<State>,
    seq: std::cell::Cell<u64>,
    conns: std::cell::RefCell<std::collections::HashSet<RawFd>>,
    /// The one clock every paced stream of this worker waits on.
    pacer: Rc<Pacer>,
}

/// Milliseconds a [`Pacer`]'s wheel spans; a wait further out than this
/// stays in its slot for another turn.
const PACER_SLOTS: u64 = 1024;

/// One timer for all the paced streams of a worker, instead of one per
/// stream per token: a stream waiting for its next token's time puts its
/// waker in the wheel's slot for that millisecond, and one tick task, running
/// only while somebody waits, wakes each slot's streams when its millisecond
/// comes. With 10,000 streams at 30 tokens a second that is 1,000 timer
/// firings a second rather than 300,000 timer registrations.
struct Pacer {
    origin: Instant,
    slots: std::cell::RefCell<Vec<Vec<(u64, std::task::Waker)>>>,
    waiting: std::cell::Cell<usize>,
    ticking: std::cell::Cell<bool>,
}

impl Pacer {
    fn new() -> Rc<Pacer> {
        Rc::new(Pacer {
            origin: Instant::now(),
            slots: std::cell::RefCell::new((0..PACER_SLOTS).map(|_| Vec::new()).collect()),
            waiting: std::cell::Cell::new(0),
            ticking: std::cell::Cell::new(false),
        })
    }

    /// Milliseconds since the pacer began, rounded down.
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Microseconds since the pacer began.
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Until `at_us` microseconds after the pacer began (to the millisecond,
    /// never early).
    fn until(self: &Rc<Self>, at_us: u64) -> PaceUntil {
        PaceUntil { pacer: self.clone(), due_ms: at_us.div_ceil(1000), waiting: false }
    }

    /// Wake every waiter due by now, a slot a millisecond, while any wait.
    async fn tick(self: Rc<Self>) {
        let mut done_ms = self.now_ms();
        while self.waiting.get() > 0 {
            monoio::time::sleep_until(self.origin + Duration::from_millis(done_ms + 1)).await;
            let now = self.now_ms();
            // A worker stalled for longer than the wheel visits each slot once.
            let from = now.saturating_sub(PACER_SLOTS - 1).max(done_ms + 1);
            let mut slots = self.slots.borrow_mut();
            for ms in from..=now {
                let slot = &mut slots[(ms % PACER_SLOTS) as usize];
                let before = slot.len();
                slot.retain(|(due, waker)| {
                    if *due <= now {
                        waker.wake_by_ref();
                        false
                    } else {
                        true
                    }
                });
                self.waiting.set(self.waiting.get() - (before - slot.len()));
            }
            done_ms = now;
        }
        self.ticking.set(false);
    }
}

struct PaceUntil {
    pacer: Rc<Pacer>,
    due_ms: u64,
    waiting: bool,
}

impl std::future::Future for PaceUntil {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let p = self.pacer.clone();
        if p.now_ms() >= self.due_ms {
            return std::task::Poll::Ready(());
        }
        if !self.waiting {
            // Woken only by the tick (which removes the entry as it wakes it).
            self.waiting = true;
            p.slots.borrow_mut()[(self.due_ms % PACER_SLOTS) as usize].push((self.due_ms, cx.waker().clone()));
            p.waiting.set(p.waiting.get() + 1);
            if !p.ticking.replace(true) {
                monoio::spawn(p.clone().tick());
            }
        }
        std::task::Poll::Pending
    }
}

trait Raw {
    fn raw_fd(&self) -> Option<RawFd>;
}

impl Raw for TcpStream {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl Raw for monoio_rustls::ServerTlsStream<TcpStream> {
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

const IDLE: Duration = Duration::from_secs(60);

async fn serve<S: AsyncReadRent + AsyncWriteRent + Raw>(ctx: Rc<Ctx>, mut io: S) {
    let mut buf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    loop {
        // Head.
        let mut scanned = 0;
        let head_end = loop {
            if let Some(end) = find_head_end(&buf, scanned) {
                break end;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            scanned = buf.len();
            match read_append(&mut io, &mut buf, 4096, Instant::now() + IDLE).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&buf[..head_end]), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let path = req.path.unwrap_or("").to_string();
        let mut len = 0usize;
        let mut close = false;
        let mut header_behaviour = Behaviour::default();
        let mut rejected = false;
        let mut has_version = false;
        for h in req.headers.iter() {
            let key_header = h.name.eq_ignore_ascii_case("authorization") || h.name.eq_ignore_ascii_case("x-api-key");
            if key_header && !ctx.cfg.reject_keys.is_empty() {
                let token = h.value.strip_prefix(b"Bearer ").unwrap_or(h.value);
                rejected = ctx.cfg.reject_keys.iter().any(|k| k.as_bytes() == token);
            }
            has_version |= h.name.eq_ignore_ascii_case("anthropic-version");
            if h.name.eq_ignore_ascii_case("content-length") {
                len = parse_content_length(h.value).unwrap_or(0) as usize;
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= has_token(h.value, b"close");
            } else if h.name.eq_ignore_ascii_case("x-mock") {
                header_behaviour = serde_json::from_slice(h.value).unwrap_or_default();
            }
        }
        let recorded = ctx.cfg.record.then(|| {
            req.headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect::<Vec<_>>()
        });
        // Body.
        while buf.len() < head_end + len {
            let want = head_end + len - buf.len();
            match read_append(&mut io, &mut buf, want, Instant::now() + IDLE).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if let Some(headers) = recorded {
            if let Ok(mut r) = ctx.state.recorded.lock() {
                r.push(Recorded { method: method.clone(), path: path.clone(), headers, body: body.clone() });
            }
        }
        ctx.state.requests.fetch_add(1, Ordering::SeqCst);
        let arrival = ctx.state.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        if rejected && path.ends_with("/messages") {
            anthropic::push_error(&mut out, 401, "mock: invalid x-api-key");
            if !send(&mut io, &mut out).await || close {
                return;
            }
            continue;
        }
        if rejected {
            push_error(&mut out, 401, "mock: this key is refused");
            if !send(&mut io, &mut out).await || close {
                return;
            }
            continue;
        }
        let bare = path.split('?').next().unwrap_or("");
        let keep = if method == "POST" && bare.ends_with("/messages/count_tokens") {
            anthropic::count_tokens(&mut io, &mut out, &body, has_version).await
        } else if method == "POST" && bare.ends_with("/messages") {
            anthropic::answer(&ctx, &mut io, &mut out, &body, header_behaviour, has_version).await
        } else {
            answer(&ctx, &mut io, &mut out, &method, &path, &body, header_behaviour, arrival).await
        };
        if !keep || close {
            return;
        }
    }
}

#[derive(Deserialize, Default)]
struct ReqBody {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    mock: Option<Behaviour>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    messages: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// A complete JSON response with a length.
fn push_json(out: &mut Vec<u8>, status: u16, body: &[u8]) {
    head(out, status, "application/json", Some(body.len()));
    out.extend_from_slice(body);
}

/// A complete OpenAI-shaped error response.
fn push_error(out: &mut Vec<u8>, status: u16, message: &str) {
    let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    push_json(out, status, body.to_string().as_bytes());
}

fn head(out: &mut Vec<u8>, status: u16, content_type: &str, len: Option<usize>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, status as u64);
    out.extend_from_slice(b" X\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    match len {
        Some(n) => {
            out.extend_from_slice(b"\r\ncontent-length: ");
            push_dec(out, n as u64);
        }
        None => out.extend_from_slice(b"\r\ntransfer-encoding: chunked"),
    }
    if status == 429 {
        out.extend_from_slice(b"\r\nretry-after: 1");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

async fn send<S: AsyncWriteRent>(io: &mut S, out: &mut Vec<u8>) -> bool {
    let ok = write_all(io, out, Instant::now() + IDLE).await.is_ok();
    out.clear();
    ok
}

fn jitter(ctx: &Ctx, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let n = ctx.seq.get().wrapping_add(1);
    ctx.seq.set(n);
    // splitmix64: cheap, deterministic per worker, good enough for jitter.
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % (max + 1)
}

// One request's parts as `serve` parsed them, plus its arrival number.
#[allow(clippy::too_many_arguments)]
async fn answer<S: AsyncReadRent + AsyncWriteRent + Raw>(
    ctx: &Ctx,
    io: &mut S,
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    body: &[u8],
    header_behaviour: Behaviour,
    arrival: u64,
) -> bool {
    let path = path.split('?').next().unwrap_or("");
    if method == "GET" && path.ends_with("/models") {
        let data: Vec<_> = ctx
            .cfg
            .models
            .iter()
            .map(|m| serde_json::json!({"id": m, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}))
            .collect();
        let json = serde_json::json!({"object": "list", "data": data}).to_string();
        push_json(out, 200, json.as_bytes());
        return send(io, out).await;
    }
    let kind = if path.ends_with("/chat/completions") {
        Kind::Chat
    } else if path.ends_with("/completions") {
        Kind::Text
    } else if path.ends_with("/embeddings") {
        Kind::Embedding
    } else {
        push_error(out, 404, "mock: unknown path");
        return send(io, out).await;
    };
    let permissive = header_behaviour.permissive.or(ctx.cfg.behaviour.permissive) == Some(true);
    let req: ReqBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) if permissive => ReqBody::default(),
        Err(e) => {
            push_error(out, 400, &format!("mock: bad JSON: {e}"));
            return send(io, out).await;
        }
    };
    if ctx.cfg.strict_models && !ctx.cfg.models.contains(&req.model) {
        push_error(out, 404, &format!("The model `{}` does not exist or you do not have access to it.", req.model));
        return send(io, out).await;
    }
    let b = req.mock.clone().unwrap_or_default().over(&header_behaviour.over(&ctx.cfg.behaviour));
    let delay = b.delay_ms.unwrap_or(0) + jitter(ctx, b.jitter_ms.unwrap_or(0));
    if delay > 0 && !wait_watching(io, Duration::from_millis(delay)).await {
        return aborted(ctx);
    }
    match b.fault {
        Some(Fault::Reset) => {
            if let Some(fd) = io.raw_fd() {
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: setsockopt on our own open socket with a valid struct.
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
            return false;
        }
        Some(Fault::Close) => return false,
        Some(Fault::Hang) => {
            // Say nothing until the peer goes away (or an hour passes).
            let mut scratch = Vec::with_capacity(1024);
            let until = Instant::now() + Duration::from_secs(3600);
            while let Ok(n) = read_append(io, &mut scratch, 1024, until).await {
                if n == 0 {
                    break;
                }
                scratch.clear();
            }
            return false;
        }
        Some(Fault::Garbage) => {
            out.extend_from_slice(b"THIS IS NOT HTTP\r\n\r\n");
            send(io, out).await;
            return false;
        }
        None => {}
    }
    if b.bad_first_chunk == Some(true) {
        let ct = if req.stream == Some(true) { "text/event-stream" } else { "application/json" };
        head(out, 200, ct, None);
        out.extend_from_slice(b"zz-not-a-size\r\n{}\r\n0\r\n\r\n");
        send(io, out).await;
        return false;
    }
    if let Some(status) = b.status.filter(|s| *s >= 300) {
        push_error(out, status, &format!("mock: injected status {status}"));
        return send(io, out).await;
    }
    if kind == Kind::Chat && rich::wanted(&b) {
        let asked = rich::Asked {
            model: &req.model,
            stream: req.stream == Some(true),
            include_usage: req.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true),
            tools: req.tools.as_deref().unwrap_or(&[]),
            messages: req.messages.as_deref().unwrap_or(&[]),
        };
        return rich::answer(ctx, io, out, &asked, body.len(), &b).await;
    }
    let tokens = b.tokens.unwrap_or(16);
    let prompt_tokens = body.len().div_ceil(4) as u64;
    let model = serde_json::to_string(&req.model).unwrap_or_else(|_| "\"\"".into());
    let id = ctx.seq.get();
    let no_usage = b.no_usage == Some(true);
    if kind == Kind::Embedding {
        let usage = if no_usage {
            "null".to_string()
        } else {
            format!(r#"{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens}}}"#)
        };
        let json = format!(
            r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3,0.4]}}],"model":{model},"usage":{usage}}}"#
        );
        push_json(out, 200, json.as_bytes());
        return send(io, out).await;
    }
    let text = serde_json::to_string(&ctx.cfg.token_text).unwrap_or_else(|_| "\"\"".into());
    let usage = if no_usage {
        "null".to_string()
    } else if let Some(u) = &b.usage_json {
        u.clone()
    } else {
        format!(
            r#"{{"prompt_tokens":{prompt_tokens},"completion_tokens":{tokens},"total_tokens":{}}}"#,
            prompt_tokens + tokens as u64
        )
    };
    let finish_reason = if b.no_finish_reason == Some(true) { "null" } else { "\"stop\"" };
    if !req.stream.unwrap_or(false) {
        let content = serde_json::to_string(&ctx.cfg.token_text.repeat(tokens as usize)).unwrap_or_default();
        let json = match kind {
            Kind::Chat => format!(
                r#"{{"id":"chatcmpl-mock-{id}","object":"chat.completion","created":1700000000,"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":{finish_reason}}}],"usage":{usage}}}"#
            ),
            _ => format!(
                r#"{{"id":"cmpl-mock-{id}","object":"text_completion","created":1700000000,"model":{model},"choices":[{{"index":0,"text":{content},"finish_reason":{finish_reason}}}],"usage":{usage}}}"#
            ),
        };
        push_json(out, 200, json.as_bytes());
        return send(io, out).await;
    }
    // Streaming.
    let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false) && !no_usage;
    let spaced = b.spaced_json == Some(true);
    let blank = b.line_ending.unwrap_or(LineEnding::Lf).blank();
    // Python's `json.dumps` separators. The mock's own JSON has no `":` or
    // `,"` inside its strings (but the token text's, which stays as is).
    let shape = |event: String| -> String {
        let event = event.strip_suffix("\n\n").unwrap_or(&event).to_string();
        let event = if spaced {
            let text_at = event.find(text.as_str());
            match text_at {
                Some(i) => {
                    let (a, rest) = event.split_at(i);
                    let (t, c) = rest.split_at(text.len());
                    [respace(a), t.to_string(), respace(c)].concat()
                }
                None => respace(&event),
            }
        } else {
            event
        };
        event + blank
    };
    let chunk = |payload: &str| -> String {
        match kind {
            Kind::Chat => {
                format!(
                    r#"data: {{"id":"chatcmpl-mock-{id}","object":"chat.completion.chunk","created":1700000000,"model":{model},"choices":[{payload}]}}"#
                ) + "\n\n"
            }
            _ => {
                format!(
                    r#"data: {{"id":"cmpl-mock-{id}","object":"text_completion","created":1700000000,"model":{model},"choices":[{payload}]}}"#
                ) + "\n\n"
            }
        }
    };
    let chunk = |payload: &str| shape(chunk(payload));
    let first = match kind {
        Kind::Chat => chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#),
        _ => chunk(r#"{"index":0,"text":"","finish_reason":null}"#),
    };
    let token = match kind {
        Kind::Chat => chunk(&format!(r#"{{"index":0,"delta":{{"content":{text}}},"finish_reason":null}}"#)),
        _ => chunk(&format!(r#"{{"index":0,"text":{text},"finish_reason":null}}"#)),
    };
    // `stamp`: the token event with a field for its write time, first in its
    // object (before any field whose text could hold anything); `stamp_at`:
    // the digits' distance from the end of `out` once the event is pushed
    // (`push_chunk` adds CRLF after it).
    let (token, stamp_at) = match token.find('{') {
        Some(i) if b.stamp == Some(true) && kind == Kind::Chat => {
            let at = i + 1;
            let field = "\"system_fingerprint\":\"t";
            let event = format!("{}{field}{}\",{}", &token[..at], "0".repeat(STAMP_DIGITS), &token[at..]);
            let from_end = event.len() - (at + field.len()) + 2;
            (event, Some(from_end))
        }
        _ => (token, None),
    };
    let finish = match kind {
        _ if b.no_finish_reason == Some(true) => String::new(),
        Kind::Chat => chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#),
        _ => chunk(r#"{"index":0,"text":"","finish_reason":"stop"}"#),
    };
    let usage_event = if include_usage && spaced {
        let obj = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        shape(format!(
            r#"data: {{"id":"mock-{id}","usage":{usage},"object":"{obj}","created":1700000000,"model":{model},"choices":[]}}"#
        ))
    } else if include_usage {
        let obj = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        shape(format!(
            r#"data: {{"id":"mock-{id}","object":"{obj}","created":1700000000,"model":{model},"choices":[],"usage":{usage}}}"#
        ))
    } else {
        String::new()
    };
    let interval = b.interval_ms.unwrap_or(0);
    let ttft = b.ttft_ms.unwrap_or(0);
    head(out, 200, "text/event-stream", None);
    let done = "data: [DONE]".to_string() + blank;
    let done_event: &[u8] = if b.skip_done == Some(true) { b"" } else { done.as_bytes() };
    if interval == 0 && ttft == 0 && b.drop_after.is_none() && b.hold_after.is_none() && b.error_after.is_none() {
        // Fast path: the whole stream in one write.
        push_chunk(out, first.as_bytes());
        for _ in 0..tokens {
            push_chunk(out, token.as_bytes());
        }
        push_chunk(out, finish.as_bytes());
        push_chunk(out, usage_event.as_bytes());
        push_chunk(out, done_event);
        if b.done_then_close == Some(true) {
            send(io, out).await;
            return false;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        return send(io, out).await || aborted(ctx);
    }
    if !send(io, out).await {
        return aborted(ctx);
    }
    if ttft > 0 && !wait_watching(io, Duration::from_millis(ttft)).await {
        return aborted(ctx);
    }
    push_chunk(out, first.as_bytes());
    if !send(io, out).await {
        return aborted(ctx);
    }
    // `interrupt_on_request`: another request arrived since this one.
    let overtaken = || ctx.cfg.interrupt_on_request && ctx.state.arrivals.load(Ordering::SeqCst) != arrival;
    // Token i is due `i * interval` after the first, on the worker's one
    // pacer: gaps do not drift with the time each write takes.
    let mut first_us = 0u64;
    let interval_us = interval.saturating_mul(1000);
    for i in 0..tokens {
        if overtaken() {
            return interrupt(ctx, io, out, done.as_bytes()).await;
        }
        if b.drop_after == Some(i) {
            return false;
        }
        if b.error_after == Some(i) {
            let error = r#"data: {"error":{"message":"mock: injected stream error","type":"server_error","param":null,"code":null}}"#;
            push_chunk(out, shape(error.to_string()).as_bytes());
            out.extend_from_slice(b"0\r\n\r\n");
            return send(io, out).await;
        }
        if b.hold_after == Some(i) {
            let until = Instant::now() + Duration::from_secs(30);
            while !ctx.state.released.load(Ordering::SeqCst) && Instant::now() < until {
                monoio::time::sleep(Duration::from_millis(2)).await;
            }
            // The schedule starts again after the hold: the next token an
            // interval from now.
            let since = interval_us.saturating_mul(u64::from(i).saturating_sub(1));
            first_us = ctx.pacer.now_us().saturating_sub(since);
        }
        if i == 0 {
            first_us = ctx.pacer.now_us();
        } else if interval > 0 {
            ctx.pacer.until(first_us.saturating_add(interval_us.saturating_mul(u64::from(i)))).await;
            if overtaken() {
                return interrupt(ctx, io, out, done.as_bytes()).await;
            }
        }
        push_chunk(out, token.as_bytes());
        if let Some(from_end) = stamp_at {
            write_stamp(out, from_end);
        }
        if !send(io, out).await {
            return aborted(ctx);
        }
    }
    if b.drop_after == Some(tokens) {
        return false;
    }
    if overtaken() {
        return interrupt(ctx, io, out, done.as_bytes()).await;
    }
    push_chunk(out, finish.as_bytes());
    push_chunk(out, usage_event.as_bytes());
    push_chunk(out, done_event);
    if b.done_then_close == Some(true) {
        send(io, out).await;
        return false;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    send(io, out).await || aborted(ctx)
}

/// Digits of a `stamp` (nanoseconds of CLOCK_MONOTONIC, zero-padded).
pub const STAMP_DIGITS: usize = 19;

/// CLOCK_MONOTONIC in nanoseconds: the clock every process on the machine
/// shares (what `stamp` writes and `stream-hold` compares with).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Write the time now into the stamp whose digits start `from_end` bytes
/// before the end of `out`.
fn write_stamp(out: &mut [u8], from_end: usize) {
    let Some(start) = out.len().checked_sub(from_end) else { return };
    let Some(digits) = out.get_mut(start..start.saturating_add(STAMP_DIGITS)) else { return };
    let mut v = monotonic_ns();
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `":` → `": ` and `,"` → `, "`: the separators Python writes.
fn respace(s: &str) -> String {
    s.replace("\":", "\": ").replace(",\"", ", \"")
}

/// Wait `d`, watching the peer: false if it closed the connection meanwhile.
async fn wait_watching<S: AsyncReadRent>(io: &mut S, d: Duration) -> bool {
    let until = Instant::now() + d;
    let mut scratch = Vec::with_capacity(64);
    loop {
        scratch.clear();
        match read_append(io, &mut scratch, 64, until).await {
            Err(IoFail::Timeout) => return true,
            Ok(0) | Err(IoFail::Io(_)) => return false,
            // Nothing is sent mid-request; whatever it is, keep waiting.
            Ok(_) => {}
        }
    }
}

/// End a stream the way llama-cpp-python does when another request arrives:
/// `data: [DONE]` straight after the last token, no `finish_reason`.
async fn interrupt<S: AsyncWriteRent>(ctx: &Ctx, io: &mut S, out: &mut Vec<u8>, done: &[u8]) -> bool {
    ctx.state.interrupted.fetch_add(1, Ordering::SeqCst);
    push_chunk(out, done);
    out.extend_from_slice(b"0\r\n\r\n");
    send(io, out).await || aborted(ctx)
}

fn aborted(ctx: &Ctx) -> bool {
    ctx.state.aborted.fetch_add(1, Ordering::SeqCst);
    false
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
    Embedding,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

    /// A streamed chat of 40 tokens, 25 ms apart (a second of generation).
    const SLOW_STREAM: &str = r#"{"model":"m","stream":true,"messages":[],"mock":{"tokens":40,"interval_ms":25}}"#;

    fn send(addr: SocketAddr, req: &str) -> std::net::TcpStream {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s
    }

    fn post(body: &str) -> String {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: m\r\ncontent-length: {}\r\n\r\n{body}", body.len())
    }

    /// Read until `until` is in what was read `times` times (or the peer closes); the text.
    fn read_until_n(s: &mut std::net::TcpStream, seen: &mut Vec<u8>, until: &str, times: usize) -> String {
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(seen).matches(until).count() < times {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(seen).into_owned()
    }

    fn read_until(s: &mut std::net::TcpStream, seen: &mut Vec<u8>, until: &str) -> String {
        read_until_n(s, seen, until, 1)
    }

    /// A stream with a second request sent after its second token: the text
    /// of the stream, and the mock.
    fn stream_overtaken(interrupt_on_request: bool) -> (String, MockHandle) {
        let mock = MockUpstream::start(MockConfig { interrupt_on_request, ..MockConfig::default() }).unwrap();
        let mut a = send(mock.addr, &post(SLOW_STREAM));
        let mut seen = Vec::new();
        let token = r#""content":"word ""#;
        let start = read_until_n(&mut a, &mut seen, token, 2);
        assert!(!start.contains("[DONE]"), "the stream ended early: {start}");
        // Any other request, even the model list.
        let mut b = send(mock.addr, "GET /v1/models HTTP/1.1\r\nhost: m\r\n\r\n");
        let mut list = Vec::new();
        assert!(read_until(&mut b, &mut list, "mock-model").contains("200"));
        (read_until(&mut a, &mut seen, "0\r\n\r\n"), mock)
    }

    /// Paced tokens are never early: token i goes out no sooner than
    /// i intervals after the first, for every stream sharing the pacer.
    #[test]
    fn paced_streams_keep_their_schedule() {
        let mock = MockUpstream::start(MockConfig::default()).unwrap();
        let body = r#"{"model":"m","stream":true,"messages":[],"mock":{"tokens":6,"interval_ms":20}}"#;
        let started = std::time::Instant::now();
        let mut streams: Vec<_> = (0..3).map(|_| send(mock.addr, &post(body))).collect();
        for s in &mut streams {
            let text = read_until(s, &mut Vec::new(), "0\r\n\r\n");
            assert_eq!(text.matches(r#""content":"word ""#).count(), 6, "{text}");
            assert!(text.contains("data: [DONE]"), "{text}");
        }
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
    }

    #[test]
    fn interrupt_on_request_ends_a_running_stream_with_done_and_no_finish_reason() {
        let (text, mock) = stream_overtaken(true);
        assert!(text.contains("data: [DONE]"), "{text}");
        assert!(!text.contains(r#""finish_reason":"stop""#), "{text}");
        let tokens = text.matches(r#""content":"word ""#).count();
        assert!((2..40).contains(&tokens), "cut short after {tokens} tokens: {text}");
        assert_eq!(mock.interrupted(), 1);
    }

    #[test]
    fn without_interrupt_on_request_streams_run_to_their_end() {
        let (text, mock) = stream_overtaken(false);
        assert!(text.contains(r#""finish_reason":"stop""#) && text.contains("data: [DONE]"), "{text}");
        assert_eq!(text.matches(r#""content":"word ""#).count(), 40);
        assert_eq!(mock.interrupted(), 0);
        // A stream nobody overtakes runs to its end in interrupt mode too.
        let mock = MockUpstream::start(MockConfig { interrupt_on_request: true, ..MockConfig::default() }).unwrap();
        let mut a = send(mock.addr, &post(SLOW_STREAM));
        let text = read_until(&mut a, &mut Vec::new(), "0\r\n\r\n");
        assert!(text.contains(r#""finish_reason":"stop""#) && text.contains("data: [DONE]"), "{text}");
        assert_eq!(mock.interrupted(), 0);
    }
}
