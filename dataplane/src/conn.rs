//! One client connection: HTTP/1.1 keep-alive with pipelining, each request
//! taken through the phases in order — parse (head, body), authenticate,
//! route, select / connect / relay (in `proxy`) — and answered before the next
//! request is read, so pipelined responses go out in order.
//!
//! Every wait has a deadline: idle between requests, the head from its first
//! byte, the body from the end of the head, and every write.

use crate::auth::authenticate;
use crate::error::{reason, GatewayError};
use crate::fmt::push_dec;
use crate::http::chunked::ChunkedDecoder;
use crate::http::find_head_end;
use crate::http::head::{parse_request, CacheControl, Endpoint, HeadError, Method, RequestHead};
use crate::http::io::{read_append, write_all, IoFail, PeerClosed};
use crate::policy::{self, Ask};
use crate::proxy::{proxy, ProxyOutcome, ProxyRequest};
use crate::request::{include_usage_edit, scan};
use crate::route;
use crate::usage::record::{account, unix_ms, unrouted, Subject, Tally};
use crate::usage::scan::estimate_prompt;
use crate::worker::{InFlightGuard, RequestId, WorkerCtx};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_shared::config::CacheMode;
use switchboard_shared::usage::Outcome as UsageOutcome;

/// Buffers a connection reuses from request to request.
#[derive(Default)]
pub struct Buffers {
    /// Bytes on their way to the client.
    pub out: Vec<u8>,
    /// The request on its way upstream.
    pub up_w: Vec<u8>,
    /// Bytes read from the upstream.
    pub up_r: Vec<u8>,
}

/// Buffers larger than this are shrunk after a request, so one large request
/// does not pin memory for the rest of a keep-alive connection.
const KEEP_CAPACITY: usize = 64 * 1024;

fn trim_capacity(v: &mut Vec<u8>) {
    if v.capacity() > KEEP_CAPACITY && v.len() <= KEEP_CAPACITY / 2 {
        v.shrink_to(KEEP_CAPACITY / 2);
    }
}

/// Serve a client connection until it closes, errs, idles out or the worker
/// drains — or a node agent attaches it, and it joins the upstream pool.
pub async fn serve<S: AsyncReadRent + AsyncWriteRent + PeerClosed + crate::upstream::IntoUpStream>(
    ctx: Rc<WorkerCtx>,
    mut io: S,
) {
    let mut rbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut bufs = Buffers::default();
    loop {
        let next = handle_one(&ctx, &mut io, &mut rbuf, &mut bufs).await;
        match next {
            Next::Close => return,
            Next::Attach(pool_key) => {
                // Kept until the node closes it (or the snapshot drops the node).
                let day = Duration::from_secs(86_400);
                ctx.pool.borrow_mut().put(&pool_key, io.into_upstream(), 1024, day);
                return;
            }
            Next::Linger => {
                lingering_close(&mut io, rbuf).await;
                return;
            }
            Next::Continue(_) if ctx.draining() => return,
            Next::Continue(start) => {
                if start >= rbuf.len() {
                    rbuf.clear();
                } else {
                    rbuf.drain(..start);
                }
                trim_capacity(&mut rbuf);
                trim_capacity(&mut bufs.out);
                trim_capacity(&mut bufs.up_w);
                trim_capacity(&mut bufs.up_r);
            }
        }
    }
}

/// After an error response on a connection whose input was not all read:
/// stop writing, then read and discard what the client still sends for a
/// moment. Closing at once with unread input makes the kernel send a reset,
/// which can destroy the error response before the client reads it.
async fn lingering_close<S: AsyncReadRent + AsyncWriteRent>(io: &mut S, mut buf: Vec<u8>) {
    const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
    const LINGER_BYTES: usize = 256 * 1024;
    let _ = io.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        buf.clear();
        match read_append(io, &mut buf, 16 * 1024, deadline).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// What to do with the connection after a request.
enum Next {
    /// Keep it; the next request starts at this offset of the read buffer.
    Continue(usize),
    Close,
    /// Close after an error response, draining input first.
    Linger,
    /// A node agent attached: pool the connection under this key.
    Attach(std::sync::Arc<str>),
}

enum HeadRead {
    Complete(usize),
    Closed,
    Fail(GatewayError),
}

async fn read_head<S: AsyncReadRent>(ctx: &WorkerCtx, io: &mut S, rbuf: &mut Vec<u8>) -> HeadRead {
    let limit = ctx.cfg.max_header_bytes;
    let mut scanned = 0;
    let mut header_deadline = (!rbuf.is_empty()).then(|| Instant::now() + ctx.header_timeout);
    loop {
        if let Some(end) = find_head_end(rbuf, scanned) {
            if end > limit {
                return HeadRead::Fail(GatewayError::headers_too_large(limit));
            }
            return HeadRead::Complete(end);
        }
        if rbuf.len() >= limit {
            return HeadRead::Fail(GatewayError::headers_too_large(limit));
        }
        scanned = rbuf.len();
        let deadline = header_deadline.unwrap_or_else(|| Instant::now() + ctx.idle_timeout);
        match read_append(io, rbuf, 4096, deadline).await {
            Ok(0) => return HeadRead::Closed,
            Ok(_) => {
                if header_deadline.is_none() {
                    header_deadline = Some(Instant::now() + ctx.header_timeout);
                }
            }
            Err(IoFail::Timeout) if header_deadline.is_some() => return HeadRead::Fail(GatewayError::request_timeout()),
            Err(_) => return HeadRead::Closed,
        }
    }
}

/// Read the request body into `rbuf`. Returns the body's range and where the
/// next request starts.
async fn read_body<S: AsyncReadRent + AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    rbuf: &mut Vec<u8>,
    head_end: usize,
    head: &RequestHead,
    out: &mut Vec<u8>,
) -> Result<(Range<usize>, usize), GatewayError> {
    let max = ctx.cfg.max_body_bytes;
    let deadline = Instant::now() + ctx.body_timeout;
    let lost = || GatewayError::malformed_http("the connection ended inside the request body");
    let fail = |e: IoFail| match e {
        IoFail::Timeout => GatewayError::request_timeout(),
        IoFail::Io(_) => lost(),
    };
    if let Some(n) = head.content_length {
        if n > max as u64 {
            return Err(GatewayError::body_too_large(max));
        }
        let need = head_end + n as usize;
        if head.expect_continue && rbuf.len() < need {
            send_continue(ctx, io, out).await?;
        }
        while rbuf.len() < need {
            match read_append(io, rbuf, need - rbuf.len(), deadline).await {
                Ok(0) => return Err(lost()),
                Ok(_) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        return Ok((head_end..need, need));
    }
    if head.chunked {
        if head.expect_continue && rbuf.len() == head_end {
            send_continue(ctx, io, out).await?;
        }
        let mut dec = ChunkedDecoder::new();
        let (mut r, mut w) = (head_end, head_end);
        loop {
            let end = rbuf.len();
            match dec.decode(rbuf, &mut r, end, &mut w) {
                Ok(true) => return Ok((head_end..w, r)),
                Ok(false) => {}
                Err(_) => return Err(GatewayError::malformed_http("invalid chunked request body")),
            }
            // Bound the decoded body, and the framing around it.
            if w - head_end > max || rbuf.len() - head_end > max + 64 * 1024 {
                return Err(GatewayError::body_too_large(max));
            }
            match read_append(io, rbuf, 16 * 1024, deadline).await {
                Ok(0) => return Err(lost()),
                Ok(_) => {}
                Err(e) => return Err(fail(e)),
            }
        }
    }
    Ok((head_end..head_end, head_end))
}

async fn send_continue<S: AsyncWriteRent>(ctx: &WorkerCtx, io: &mut S, out: &mut Vec<u8>) -> Result<(), GatewayError> {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    write_all(io, out, Instant::now() + ctx.write_timeout)
        .await
        .map_err(|_| GatewayError::malformed_http("the client went away"))?;
    out.clear();
    Ok(())
}

/// How a whole response goes out on this connection.
#[derive(Clone, Copy)]
struct Reply {
    keep_alive: bool,
    /// An HTTP/1.0 client: a kept connection is said so (`Connection: keep-alive`).
    http10: bool,
    /// A HEAD request: the head (with the body's length) and no body.
    head_only: bool,
}

/// Write a complete response with a known length.
async fn respond<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    rid: &RequestId,
    reply: Reply,
) -> bool {
    send_whole(ctx, io, out, status, "application/json", body, rid, reply, b"").await
}

/// Render a complete response and write it; false if the client is gone.
#[allow(clippy::too_many_arguments)]
async fn send_whole<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    rid: &RequestId,
    reply: Reply,
    extra: &[u8],
) -> bool {
    let connection = match (reply.keep_alive, reply.http10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    };
    render_with(out, status, content_type, body, rid, connection, extra);
    if reply.head_only {
        out.truncate(out.len() - body.len());
    }
    let ok = write_all(io, out, Instant::now() + ctx.write_timeout).await.is_ok();
    out.clear();
    ok
}

/// Render a complete JSON response (with its length) into `out`.
pub fn render_json(out: &mut Vec<u8>, status: u16, body: &[u8], rid: &RequestId, keep_alive: bool) {
    render(out, status, "application/json", body, rid, keep_alive, b"")
}

/// Render a complete response (with its length) into `out`.
/// `extra` is whole header lines (`name: value\r\n`).
pub fn render(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    rid: &RequestId,
    keep_alive: bool,
    extra: &[u8],
) {
    render_with(out, status, content_type, body, rid, (!keep_alive).then_some("close"), extra)
}

/// [`render`], with the `Connection` header's value, if any.
fn render_with(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    rid: &RequestId,
    connection: Option<&str>,
    extra: &[u8],
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    push_dec(out, body.len() as u64);
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(rid.as_bytes());
    if let Some(c) = connection {
        out.extend_from_slice(b"\r\nconnection: ");
        out.extend_from_slice(c.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

async fn respond_error<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    out: &mut Vec<u8>,
    err: &GatewayError,
    rid: &RequestId,
    reply: Reply,
    extra: &[u8],
) -> bool {
    let reply = Reply { keep_alive: reply.keep_alive && !err.close, ..reply };
    send_whole(ctx, io, out, err.status, "application/json", &err.to_json(), rid, reply, extra).await
}

/// A connection that closes after this response (no request head to go by).
const CLOSING: Reply = Reply { keep_alive: false, http10: false, head_only: false };

/// What a request came to.
enum Outcome {
    Json(u16, Vec<u8>),
    /// Plain text (the metrics exposition).
    Text(u16, Vec<u8>),
    Error(GatewayError),
    /// The proxy wrote the response.
    Proxied {
        keep_alive: bool,
    },
    /// The response was cut off; the connection must close.
    Aborted,
}

/// A routed request, parsed and authenticated.
struct Call<'a> {
    head: &'a RequestHead,
    key: &'a crate::snapshot::KeyEntry,
    route: &'a crate::snapshot::Route,
    fields: &'a crate::request::BodyFields<'a>,
    body: &'a [u8],
    rid: &'a RequestId,
    keep_alive: bool,
    started: Instant,
    started_unix_ms: u64,
}

/// Phases admit, select / connect / relay (in `proxy`) and account. Returns
/// the outcome, the status the client got, and header lines for an error
/// response.
async fn admit_proxy_account<S: AsyncReadRent + AsyncWriteRent + PeerClosed>(
    ctx: &WorkerCtx,
    io: &mut S,
    bufs: &mut Buffers,
    c: &Call<'_>,
) -> (Outcome, u16, Vec<u8>) {
    let subject = Subject {
        started: c.started,
        started_unix_ms: c.started_unix_ms,
        request_id: c.rid.as_bytes(),
        key: c.key,
        model: &c.fields.model,
        endpoint: &c.head.endpoint,
        stream: c.fields.stream,
        body: c.body,
    };
    let mut admission = if c.key.policy.is_empty() {
        None
    } else {
        let ask = || Ask { prompt_estimate: estimate_prompt(c.body), max_tokens: c.fields.max_tokens };
        // ---- issue 18: limits shared through Redis when `[cluster]` is on ----
        let decided = match crate::cluster::current() {
            None => crate::cluster::limits::Decision::Local,
            Some(_) => {
                let reserve = ctx.cfg.completion_reserve_tokens;
                crate::cluster::limits::admit(&c.key.org, &c.key.policy, c.route, ask, reserve).await
            }
        };
        let admitted = match decided {
            crate::cluster::limits::Decision::Done(r) => r,
            crate::cluster::limits::Decision::Local => {
                policy::admit(&c.key.policy, c.route, ask, ctx.cfg.completion_reserve_tokens)
            }
        };
        match admitted {
            Ok(a) => Some(a),
            Err((e, headers)) => {
                ctx.metrics.refused(e.kind);
                let tally = Tally { status: e.status, outcome: UsageOutcome::Error, ..Tally::default() };
                account(ctx, &subject, c.route, &tally);
                return (Outcome::Error(e), tally.status, headers);
            }
        }
    };
    let mut headers = admission.as_mut().map(|a| std::mem::take(&mut a.headers)).unwrap_or_default();
    // The response cache, on routes that have it.
    let mut store_key = None;
    if !c.route.cache.is_off() {
        let cache = &ctx.cache;
        let eligible = c.route.cache.mode == CacheMode::Always
            || c.fields.temperature_zero
            || matches!(c.head.endpoint, Endpoint::Embeddings);
        let key = (eligible && c.head.cache_control != CacheControl::NoStore)
            .then(|| crate::cache::key(&c.key.org, &c.route.name, c.head.endpoint.name(), c.body))
            .flatten();
        let state = match key {
            None => "bypass",
            Some(k) => {
                store_key = Some(k);
                match c.head.cache_control {
                    CacheControl::NoCache => "bypass",
                    _ => match match cache.get(&k) {
                        // issue 18: after a local miss, the shared tier (Redis).
                        None if c.route.cache.shared => crate::cluster::cache::get(&c.key.org, &k, cache).await,
                        local => local,
                    } {
                        Some(hit) => {
                            cache.hits.fetch_add(1, Ordering::Relaxed);
                            return serve_hit(ctx, io, bufs, c, &subject, &hit.body, headers, admission.as_ref()).await;
                        }
                        None => "miss",
                    },
                }
            }
        };
        let counter = if state == "miss" { &cache.misses } else { &cache.bypasses };
        counter.fetch_add(1, Ordering::Relaxed);
        headers.extend_from_slice(b"x-switchboard-cache: ");
        headers.extend_from_slice(state.as_bytes());
        headers.extend_from_slice(b"\r\n");
    }
    // Streams always ask the upstream for usage; the relay strips it if the
    // client did not ask.
    let asks_usage = matches!(c.head.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
        && c.fields.stream
        && c.fields.include_usage != Some(true);
    let req = ProxyRequest {
        endpoint: &c.head.endpoint,
        body: c.body,
        fields: c.fields,
        request_id: c.rid.as_bytes(),
        client_http10: c.head.http10,
        client_keep_alive: c.keep_alive,
        strategy: c.head.strategy,
        usage_edit: if asks_usage { include_usage_edit(c.body, c.fields) } else { None },
        extra_headers: &headers,
        // Streams are replayed from stored answers, not stored.
        capture: store_key.filter(|_| !c.fields.stream).map(|k| (k, Duration::from_millis(c.route.cache.ttl_ms))),
        shared_cache: c.route.cache.shared,
        org: &c.key.org,
    };
    let mut tally = Tally::default();
    let outcome = match proxy(ctx, io, bufs, &req, c.route, &mut tally).await {
        ProxyOutcome::Done { keep_alive } => Outcome::Proxied { keep_alive },
        ProxyOutcome::Failed(e) | ProxyOutcome::Retry(e) => {
            tally.status = e.status;
            tally.outcome = UsageOutcome::Error;
            tally.target = None;
            Outcome::Error(e)
        }
        ProxyOutcome::Aborted => Outcome::Aborted,
    };
    let (tokens, nanos) = account(ctx, &subject, c.route, &tally);
    if let Some(a) = &admission {
        policy::settle(a, tokens, nanos);
    }
    (outcome, tally.status, headers)
}

/// Answer from the response cache: the stored body, or for a stream its SSE
/// replay; accounted as a cache hit (tokens from the stored `usage`, no cost).
#[allow(clippy::too_many_arguments)]
async fn serve_hit<S: AsyncReadRent + AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    bufs: &mut Buffers,
    c: &Call<'_>,
    subject: &Subject<'_>,
    stored: &[u8],
    mut headers: Vec<u8>,
    admission: Option<&policy::Admission<'_>>,
) -> (Outcome, u16, Vec<u8>) {
    headers.extend_from_slice(b"x-switchboard-cache: hit\r\nx-switchboard-route: ");
    headers.extend_from_slice(c.route.name.as_bytes());
    headers.extend_from_slice(b"\r\n");
    let replay;
    let (content_type, body): (&str, &[u8]) = if c.fields.stream {
        match crate::cache::replay_as_sse(stored, c.fields.include_usage == Some(true)) {
            Some(sse) => {
                replay = sse;
                headers.extend_from_slice(b"cache-control: no-cache\r\n");
                ("text/event-stream", &replay)
            }
            None => ("application/json", stored),
        }
    } else {
        ("application/json", stored)
    };
    let reply = Reply { keep_alive: c.keep_alive, http10: c.head.http10, head_only: false };
    let written = send_whole(ctx, io, &mut bufs.out, 200, content_type, body, c.rid, reply, &headers).await;
    let mut tally = Tally { status: 200, cache_hit: true, first_byte: Some(Instant::now()), ..Tally::default() };
    tally.reply.feed(stored);
    if !written {
        tally.outcome = UsageOutcome::ClientClosed;
    }
    let (tokens, _) = account(ctx, subject, c.route, &tally);
    if let Some(a) = admission {
        policy::settle(a, tokens, 0);
    }
    let outcome = if written { Outcome::Proxied { keep_alive: c.keep_alive } } else { Outcome::Aborted };
    (outcome, 200, Vec::new())
}

/// Handle one request, and say what becomes of the connection.
async fn handle_one<S: AsyncReadRent + AsyncWriteRent + PeerClosed>(
    ctx: &WorkerCtx,
    io: &mut S,
    rbuf: &mut Vec<u8>,
    bufs: &mut Buffers,
) -> Next {
    let head_end = match read_head(ctx, io, rbuf).await {
        HeadRead::Complete(n) => n,
        HeadRead::Closed => return Next::Close,
        HeadRead::Fail(err) => {
            let rid = ctx.next_request_id();
            respond_error(ctx, io, &mut bufs.out, &err, &rid, CLOSING, b"").await;
            return Next::Linger;
        }
    };
    let _inflight = InFlightGuard::new(ctx);
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let head = match parse_request(&rbuf[..head_end], ctx.cfg.max_headers) {
        Ok(h) => h,
        Err(e) => {
            let err = match e {
                HeadError::TooManyHeaders => GatewayError::too_many_headers(ctx.cfg.max_headers),
                HeadError::Malformed(what) => GatewayError::malformed_http(what),
                HeadError::Expectation => GatewayError::expectation_failed(),
            };
            let rid = ctx.next_request_id();
            respond_error(ctx, io, &mut bufs.out, &err, &rid, CLOSING, b"").await;
            return Next::Linger;
        }
    };
    let rid = match &head.request_id {
        Some(s) => RequestId::Client(s.clone()),
        None => ctx.next_request_id(),
    };
    let body_pending = head.chunked || head.content_length.unwrap_or(0) > 0;
    let mut next_start = (!body_pending).then_some(head_end);
    let keep_alive = head.keep_alive && !ctx.draining();
    let snapshot = ctx.snapshot();
    // Set once the request reached a route (and was accounted).
    let mut routed = false;
    // The status of a proxied response.
    let mut proxied_status = 0;
    // Header lines for an error response (rate-limit headers).
    let mut error_headers: Vec<u8> = Vec::new();

    // HEAD is answered like GET, without the body (RFC 9110 §9.3.2).
    let gets = matches!(head.method, Method::Get | Method::Head);
    let outcome = match &head.endpoint {
        Endpoint::Healthz if gets => match ctx.registry.workers_down() {
            0 => {
                Outcome::Json(200, format!(r#"{{"status":"ok","snapshot_version":{}}}"#, snapshot.version).into_bytes())
            }
            // A worker died (see `supervise`): the process serves less than it should.
            down => Outcome::Json(
                503,
                format!(r#"{{"status":"degraded","workers_down":{down},"snapshot_version":{}}}"#, snapshot.version)
                    .into_bytes(),
            ),
        },
        Endpoint::Metrics if gets && ctx.cfg.metrics => {
            Outcome::Text(200, ctx.metrics_text(snapshot.version).into_bytes())
        }
        Endpoint::NodeAttach if head.method == Method::Post && !body_pending && !ctx.draining() => {
            match crate::node::authenticate(&snapshot, &head.credential, &rbuf[..head_end]) {
                Err(e) => Outcome::Error(e),
                Ok(node) => {
                    let key = node.pool_key.clone();
                    let workers = ctx.registry.slots.len();
                    crate::node::switching_response(&mut bufs.out, ctx.id, workers, ctx.instance);
                    let ok = write_all(io, &mut bufs.out, Instant::now() + ctx.write_timeout).await.is_ok();
                    bufs.out.clear();
                    tracing::debug!(node = %node.name, worker = ctx.id, "node connection attached");
                    return if ok { Next::Attach(key) } else { Next::Close };
                }
            }
        }
        Endpoint::NodeAttach if ctx.draining() => Outcome::Error(GatewayError::shutting_down()),
        Endpoint::Unknown => Outcome::Error(GatewayError::unknown_url(
            match head.method {
                Method::Get => "GET",
                Method::Head => "HEAD",
                Method::Post => "POST",
                Method::Other => "request",
            },
            request_path(&rbuf[..head_end]),
        )),
        Endpoint::Models | Endpoint::Model(_) if gets => {
            match authenticate(&snapshot, &head.credential, &rbuf[..head_end]) {
                Err(e) => Outcome::Error(e),
                Ok(key) => models_response(&snapshot, key, &head.endpoint),
            }
        }
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings if head.method == Method::Post => {
            match authenticate(&snapshot, &head.credential, &rbuf[..head_end]) {
                Err(e) => Outcome::Error(e),
                Ok(key) => match read_body(ctx, io, rbuf, head_end, &head, &mut bufs.out).await {
                    Err(e) => Outcome::Error(e),
                    Ok((range, next)) => {
                        next_start = Some(next);
                        let body = &rbuf[range];
                        match scan(body).and_then(|f| crate::validate::check(&head.endpoint, &f.checks).map(|()| f)) {
                            Err(e) => Outcome::Error(e),
                            Ok(fields) => match route::resolve(&snapshot, key, &fields.model) {
                                Err(e) => Outcome::Error(e),
                                Ok(route) => {
                                    let call = Call {
                                        head: &head,
                                        key,
                                        route,
                                        fields: &fields,
                                        body,
                                        rid: &rid,
                                        keep_alive,
                                        started,
                                        started_unix_ms,
                                    };
                                    let (outcome, status, headers) = admit_proxy_account(ctx, io, bufs, &call).await;
                                    routed = true;
                                    proxied_status = status;
                                    error_headers = headers;
                                    outcome
                                }
                            },
                        }
                    }
                },
            }
        }
        _ => {
            // RFC 9110 §15.5.6: a 405 says which methods the resource takes.
            error_headers.extend_from_slice(match head.endpoint {
                Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings | Endpoint::NodeAttach => {
                    b"allow: POST\r\n".as_slice()
                }
                _ => b"allow: GET, HEAD\r\n".as_slice(),
            });
            Outcome::Error(GatewayError::method_not_allowed())
        }
    };
    let keep_alive = keep_alive && next_start.is_some();
    let reply = Reply { keep_alive, http10: head.http10, head_only: head.method == Method::Head };
    let next = |kept: bool| match next_start {
        Some(start) if kept => Next::Continue(start),
        _ => Next::Close,
    };
    let status = match &outcome {
        Outcome::Json(s, _) | Outcome::Text(s, _) => *s,
        Outcome::Error(e) => e.status,
        Outcome::Proxied { .. } | Outcome::Aborted => proxied_status,
    };
    if !routed {
        ctx.metrics.response(status);
        unrouted(ctx, started, started_unix_ms, rid.as_bytes(), status);
    }
    match outcome {
        Outcome::Json(status, body) => {
            next(respond(ctx, io, &mut bufs.out, status, &body, &rid, reply).await && keep_alive)
        }
        Outcome::Text(status, body) => {
            let ct = "text/plain; version=0.0.4; charset=utf-8";
            next(send_whole(ctx, io, &mut bufs.out, status, ct, &body, &rid, reply, b"").await && keep_alive)
        }
        Outcome::Error(err) => {
            let written = respond_error(ctx, io, &mut bufs.out, &err, &rid, reply, &error_headers).await;
            match next(written && keep_alive && !err.close) {
                Next::Close if written => Next::Linger,
                n => n,
            }
        }
        Outcome::Proxied { keep_alive: k } => next(k && keep_alive),
        Outcome::Aborted => Next::Close,
    }
}

/// The request target from the request line, for error messages.
fn request_path(head: &[u8]) -> &str {
    let line = head.split(|&b| b == b'\r').next().unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    let _method = parts.next();
    std::str::from_utf8(parts.next().unwrap_or(b"/")).unwrap_or("/")
}

fn models_response(
    snapshot: &crate::snapshot::Snapshot,
    key: &crate::snapshot::KeyEntry,
    endpoint: &Endpoint,
) -> Outcome {
    #[derive(serde::Serialize)]
    struct Model<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'static str,
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Model<'a>>,
    }
    let entry = |id| Model { id, object: "model", created: snapshot.created_unix, owned_by: "switchboard" };
    let json = match endpoint {
        Endpoint::Model(id) => match route::resolve(snapshot, key, id) {
            Ok(r) => serde_json::to_vec(&entry(&r.name)),
            Err(e) => return Outcome::Error(e),
        },
        _ => serde_json::to_vec(&List {
            object: "list",
            data: route::visible(snapshot, key).map(|r| entry(&r.name)).collect(),
        }),
    };
    match json {
        Ok(body) => Outcome::Json(200, body),
        Err(_) => Outcome::Error(GatewayError::bad_request("could not render the model list")),
    }
}
