//! One client connection: HTTP/1.1 keep-alive with pipelining, each request
//! taken through the phases in order — parse (head, body), authenticate,
//! route — then the rest in its [`Exchange`] (`pipeline::run`) — and answered before the next
//! request is read, so pipelined responses go out in order.
//!
//! Every wait has a deadline: idle between requests, the head from its first
//! byte, the body from the end of the head, and every write.

use crate::account::{unix_ms, unrouted};
use crate::auth::authenticate;
use crate::error::GatewayError;
use crate::exchange::{Arrival, Buffers, Exchange};
use crate::http::chunked::ChunkedDecoder;
use crate::http::find_head_end;
use crate::http::head::{parse_request, Endpoint, HeadError, Method, RequestHead};
use crate::http::io::{read_append, write_all, IoFail, PeerClosed};
use crate::pipeline::Ending;
use crate::request::scan;
use crate::respond::{respond, respond_error, send_whole, Reply, CLOSING};
use crate::route;
use crate::worker::{InFlightGuard, RequestId, WorkerCtx};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::{recent, Instant};
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

/// Buffers larger than this are shrunk after a request, so one large request
/// does not pin memory for the rest of a keep-alive connection.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What a request's first read asks room for (nginx's
/// `client_header_buffer_size` is 1 KiB too); a larger request grows the
/// buffer by `HEAD_READ` at a time (geometrically: `Vec`'s growth), and a
/// keep-alive connection keeps what it grew to (up to `KEEP_CAPACITY`).
const HEAD_READ_FIRST: usize = 1024;
const HEAD_READ: usize = 4096;

/// A stream's request stays in the read buffer while the stream is open; a
/// buffer with more room than this to spare is shrunk to the request first.
const STREAM_SPARE_MAX: usize = 1024;

fn trim_capacity(v: &mut Vec<u8>) {
    if v.capacity() > KEEP_CAPACITY && v.len() <= KEEP_CAPACITY / 2 {
        v.shrink_to(KEEP_CAPACITY / 2);
    }
}

/// Serve a client connection until it closes, errs, idles out or the worker
/// drains — or a node agent attaches it, and it joins the upstream pool.
///
/// A plain function returning the connection's future (as the functions
/// below it): an `async fn` keeps each by-value argument twice in its state,
/// as passed and as moved into its body, for as long as the connection is open.
// Not an `async fn` on purpose (see above): it would keep its arguments twice.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<S: AsyncReadRent + AsyncWriteRent + PeerClosed + crate::upstream::IntoUpStream>(
    ctx: Rc<WorkerCtx>,
    mut io: S,
) -> impl std::future::Future<Output = ()> {
    async move {
        let mut rbuf: Vec<u8> = Vec::with_capacity(HEAD_READ_FIRST);
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
}

/// After an error response on a connection whose input was not all read:
/// stop writing, then read and discard what the client still sends for a
/// moment. Closing at once with unread input makes the kernel send a reset,
/// which can destroy the error response before the client reads it.
async fn lingering_close<S: AsyncReadRent + AsyncWriteRent>(io: &mut S, mut buf: Vec<u8>) {
    const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
    const LINGER_BYTES: usize = 256 * 1024;
    let _ = io.shutdown().await;
    let deadline = recent() + LINGER;
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
    let mut header_deadline = (!rbuf.is_empty()).then(|| recent() + ctx.header_timeout);
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
        let deadline = header_deadline.unwrap_or_else(|| recent() + ctx.idle_timeout);
        // A request's first read needs room for `HEAD_READ_FIRST` (a small
        // request fits); a head that does not fit grows the buffer.
        let want = if rbuf.is_empty() { HEAD_READ_FIRST } else { HEAD_READ };
        match read_append(io, rbuf, want, deadline).await {
            Ok(0) => return HeadRead::Closed,
            Ok(_) => {
                if header_deadline.is_none() {
                    header_deadline = Some(recent() + ctx.header_timeout);
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
    let deadline = recent() + ctx.body_timeout;
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
    write_all(io, out, recent() + ctx.write_timeout)
        .await
        .map_err(|_| GatewayError::malformed_http("the client went away"))?;
    out.clear();
    Ok(())
}

/// What a request came to.
enum Answer {
    Json(u16, Vec<u8>),
    /// Plain text (the metrics exposition).
    Text(u16, Vec<u8>),
    Error(GatewayError),
    /// A routed request: its exchange ran (and was accounted); header lines
    /// for its error response, if it ends in one.
    Routed(Ending, Vec<u8>),
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
    let started = (Instant::now(), unix_ms());
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
    // Where the next request starts: known once this one's body is read.
    let mut next_start = (!body_pending).then_some(head_end);
    let keep_alive = head.keep_alive && !ctx.draining();
    // Header lines for an error response (rate-limit headers, `allow`).
    let mut error_headers: Vec<u8> = Vec::new();

    // HEAD is answered like GET, without the body (RFC 9110 §9.3.2).
    let gets = matches!(head.method, Method::Get | Method::Head);
    let answer = match &head.endpoint {
        Endpoint::Healthz if gets => healthz(ctx),
        Endpoint::Metrics if gets && ctx.cfg.metrics => {
            Answer::Text(200, ctx.metrics_text(ctx.snapshot().version).into_bytes())
        }
        Endpoint::NodeAttach if head.method == Method::Post && !body_pending && !ctx.draining() => {
            let snapshot = ctx.snapshot();
            match crate::node::authenticate(&snapshot, &head.credential, &rbuf[..head_end]) {
                Err(e) => Answer::Error(e),
                Ok(node) => {
                    let key = node.pool_key.clone();
                    let workers = ctx.registry.slots.len();
                    crate::node::switching_response(&mut bufs.out, ctx.id, workers, ctx.instance);
                    let ok = write_all(io, &mut bufs.out, recent() + ctx.write_timeout).await.is_ok();
                    bufs.out.clear();
                    tracing::debug!(node = %node.name, worker = ctx.id, "node connection attached");
                    return if ok { Next::Attach(key) } else { Next::Close };
                }
            }
        }
        Endpoint::NodeAttach if ctx.draining() => Answer::Error(GatewayError::shutting_down()),
        Endpoint::Unknown => Answer::Error(GatewayError::unknown_url(
            match head.method {
                Method::Get => "GET",
                Method::Head => "HEAD",
                Method::Post => "POST",
                Method::Other => "request",
            },
            request_path(&rbuf[..head_end]),
        )),
        Endpoint::Models | Endpoint::Model(_) if gets => {
            let snapshot = ctx.snapshot();
            match authenticate(&snapshot, &head.credential, &rbuf[..head_end]) {
                Err(e) => Answer::Error(e),
                // Fault-injection headers from a key that is not a test key: 400.
                Ok(key) => match crate::fault::allowed(&head.fault, key.test) {
                    Err(e) => Answer::Error(e),
                    Ok(()) if head.anthropic_dialect() => anthropic_models(&snapshot, key, &head.endpoint),
                    Ok(()) => models_response(&snapshot, key, &head.endpoint),
                },
            }
        }
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::Messages
        | Endpoint::CountTokens
            if head.method == Method::Post =>
        {
            let arrival = Arrival { head: &head, rid: &rid, keep_alive, started };
            routed(ctx, io, rbuf, bufs, arrival, head_end, &mut next_start).await
        }
        _ => {
            // RFC 9110 §15.5.6: a 405 says which methods the resource takes.
            error_headers.extend_from_slice(match head.endpoint {
                Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Embeddings
                | Endpoint::Messages
                | Endpoint::CountTokens
                | Endpoint::NodeAttach => b"allow: POST\r\n".as_slice(),
                _ => b"allow: GET, HEAD\r\n".as_slice(),
            });
            Answer::Error(GatewayError::method_not_allowed())
        }
    };
    let keep_alive = keep_alive && next_start.is_some();
    let reply = Reply { keep_alive, http10: head.http10, head_only: head.method == Method::Head };
    let next = |kept: bool| match next_start {
        Some(start) if kept => Next::Continue(start),
        _ => Next::Close,
    };
    let unrouted_status = match &answer {
        Answer::Json(s, _) | Answer::Text(s, _) => Some(*s),
        Answer::Error(e) => Some(e.status),
        Answer::Routed(..) => None,
    };
    if let Some(status) = unrouted_status {
        ctx.metrics.response(status);
        unrouted(ctx, started.0, started.1, rid.as_bytes(), status);
    }
    let error = match answer {
        Answer::Json(status, body) => {
            return next(respond(ctx, io, &mut bufs.out, status, &body, &rid, reply).await && keep_alive)
        }
        Answer::Text(status, body) => {
            let ct = "text/plain; version=0.0.4; charset=utf-8";
            return next(send_whole(ctx, io, &mut bufs.out, status, ct, &body, &rid, reply, b"").await && keep_alive);
        }
        Answer::Routed(Ending::Written { keep_alive: k }, _) => return next(k && keep_alive),
        Answer::Routed(Ending::Aborted, _) => return Next::Close,
        Answer::Routed(Ending::Error(err), headers) => {
            error_headers = headers;
            err
        }
        Answer::Error(err) => err,
    };
    // On Anthropic's paths, Anthropic's error shape (its SDKs read the type from it).
    let error = error.dialect(head.anthropic_dialect());
    let written = respond_error(ctx, io, &mut bufs.out, &error, &rid, reply, &error_headers).await;
    match next(written && keep_alive && !error.close) {
        Next::Close if written => Next::Linger,
        n => n,
    }
}

/// Phases authenticate, parse (body, fields, contract) and route; then the
/// exchange runs the rest (`exchange::run`). A request that reaches a route
/// is accounted there.
// Not an `async fn` on purpose (see `serve`): it would keep its arguments twice.
#[allow(clippy::manual_async_fn)]
fn routed<'a, S: AsyncReadRent + AsyncWriteRent + PeerClosed>(
    ctx: &'a WorkerCtx,
    io: &'a mut S,
    rbuf: &'a mut Vec<u8>,
    bufs: &'a mut Buffers,
    c: Arrival<'a>,
    head_end: usize,
    next_start: &'a mut Option<usize>,
) -> impl std::future::Future<Output = Answer> + use<'a, S> {
    async move {
        let snapshot = ctx.snapshot();
        let key = match authenticate(&snapshot, &c.head.credential, &rbuf[..head_end]) {
            Ok(key) => key,
            Err(e) => return Answer::Error(e),
        };
        let (range, next) = match read_body(ctx, io, rbuf, head_end, c.head, &mut bufs.out).await {
            Ok(r) => r,
            Err(e) => return Answer::Error(e),
        };
        *next_start = Some(next);
        let mut fields = match checked(&c.head.endpoint, &rbuf[range.clone()]) {
            Ok(f) => f,
            Err(e) => return Answer::Error(e),
        };
        if fields.stream && rbuf.capacity() - rbuf.len() > STREAM_SPARE_MAX {
            // A stream holds its request (the exchange reads it to the end) for
            // as long as it is open: not in a read buffer mostly empty. Read
            // again from the buffer of its own size (once per stream).
            drop(fields);
            rbuf.shrink_to_fit();
            fields = match checked(&c.head.endpoint, &rbuf[range.clone()]) {
                Ok(f) => f,
                Err(e) => return Answer::Error(e),
            };
        }
        let body = &rbuf[range];
        let route = match route::resolve(&snapshot, key, &fields.model) {
            Ok(r) => r,
            Err(e) => return Answer::Error(e),
        };
        // Fault injection: test keys only, else 400 (`crate::fault`).
        let fault = match crate::fault::from_request(&c.head.fault, key.test, route) {
            Ok(f) => f,
            Err(e) => return Answer::Error(e),
        };
        if c.head.endpoint == Endpoint::CountTokens && !route.targets.iter().any(|t| t.upstream.kind.is_anthropic()) {
            // No provider to ask: the gateway's own estimate.
            return estimated_token_count(body);
        }
        let mut x = Exchange::new(c, key, route, &fields, body, &rbuf[..head_end]);
        x.fault = fault;
        let ending = crate::pipeline::run(ctx, io, bufs, &mut x).await;
        if let Ending::Error(e) = &ending {
            if c.head.endpoint == Endpoint::CountTokens && e.status >= 500 {
                // Every Anthropic-kind provider failed: a token count is never a
                // 5xx, the gateway's own estimate answers (documented as one).
                tracing::debug!(error = %e.message, "count_tokens: no provider answered; estimated");
                return estimated_token_count(body);
            }
        }
        Answer::Routed(ending, std::mem::take(&mut x.headers))
    }
}

/// The body's fields, and OpenAI's checks on them.
fn checked<'a>(endpoint: &Endpoint, body: &'a [u8]) -> Result<crate::request::BodyFields<'a>, GatewayError> {
    scan(body).and_then(|f| crate::validate::check(endpoint, &f.checks).map(|()| f))
}

/// A token count answered by the gateway itself: the request's text at about
/// 4 bytes a token, documented as an estimate (docs/anthropic.md).
fn estimated_token_count(body: &[u8]) -> Answer {
    let n = crate::usage::scan::estimate_prompt(body);
    Answer::Json(200, format!(r#"{{"input_tokens":{n}}}"#).into_bytes())
}

fn healthz(ctx: &WorkerCtx) -> Answer {
    let version = ctx.snapshot().version;
    match ctx.registry.workers_down() {
        0 => Answer::Json(200, format!(r#"{{"status":"ok","snapshot_version":{version}}}"#).into_bytes()),
        // A worker died (see `supervise`): the process serves less than it should.
        down => Answer::Json(
            503,
            format!(r#"{{"status":"degraded","workers_down":{down},"snapshot_version":{version}}}"#).into_bytes(),
        ),
    }
}

/// The request target from the request line, for error messages.
fn request_path(head: &[u8]) -> &str {
    let line = head.split(|&b| b == b'\r').next().unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    let _method = parts.next();
    std::str::from_utf8(parts.next().unwrap_or(b"/")).unwrap_or("/")
}

/// The model list (or one model) in Anthropic's shape, for clients that
/// send `anthropic-version`: `{"data":[{"type":"model","id",…}],"has_more",
/// "first_id","last_id"}`.
fn anthropic_models(
    snapshot: &crate::snapshot::Snapshot,
    key: &crate::snapshot::KeyEntry,
    endpoint: &Endpoint,
) -> Answer {
    #[derive(serde::Serialize)]
    struct Model<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: &'a str,
        display_name: &'a str,
        created_at: &'a str,
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        data: Vec<Model<'a>>,
        has_more: bool,
        first_id: Option<&'a str>,
        last_id: Option<&'a str>,
    }
    let created = switchboard_shared::time::format_rfc3339(snapshot.created_unix.min(i64::MAX as u64) as i64);
    let entry = |id| Model { kind: "model", id, display_name: id, created_at: &created };
    let json = match endpoint {
        Endpoint::Model(id) => match route::resolve(snapshot, key, id) {
            Ok(r) => serde_json::to_vec(&entry(&r.name)),
            Err(e) => return Answer::Error(e),
        },
        _ => {
            let data: Vec<Model<'_>> = route::visible(snapshot, key).map(|r| entry(&r.name)).collect();
            let (first_id, last_id) = (data.first().map(|m| m.id), data.last().map(|m| m.id));
            serde_json::to_vec(&List { data, has_more: false, first_id, last_id })
        }
    };
    match json {
        Ok(body) => Answer::Json(200, body),
        Err(_) => Answer::Error(GatewayError::bad_request("could not render the model list")),
    }
}

fn models_response(
    snapshot: &crate::snapshot::Snapshot,
    key: &crate::snapshot::KeyEntry,
    endpoint: &Endpoint,
) -> Answer {
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
            Err(e) => return Answer::Error(e),
        },
        _ => serde_json::to_vec(&List {
            object: "list",
            data: route::visible(snapshot, key).map(|r| entry(&r.name)).collect(),
        }),
    };
    match json {
        Ok(body) => Answer::Json(200, body),
        Err(_) => Answer::Error(GatewayError::bad_request("could not render the model list")),
    }
}
