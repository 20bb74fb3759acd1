//! Phases "connect or fail over" and "relay".
//!
//! For each target in the order `select` gives: take a pooled connection or
//! open one, send the request, wait for the response head. A failure before
//! any byte reached the client (connect error, reset, timeout, garbage) moves
//! on to the next target — a broken first chunk of the body too, as the head
//! is held until the first body bytes (a stream's until its first token);
//! after that, a failure ends the response (an SSE `error` event for streams)
//! and closes the connection.
//!
//! Until the first byte reaches the client, the client's socket is watched:
//! a client that leaves cancels the upstream request at once (the upstream
//! connection is closed) and the request is recorded `client_closed`.

use crate::conn::Buffers;
use crate::error::{reason, GatewayError, Source};
use crate::fmt::{push_chunk, push_dec};
use crate::health::{now_ms, InFlight, State as HealthState};
use crate::http::chunked::ChunkedDecoder;
use crate::http::find_head_end;
use crate::http::head::{parse_response, BodyFraming, Endpoint, ResponseHead};
use crate::http::io::{read_append, write_all, IoFail, PeerClosed};
use crate::request::{edited_len, write_edited, BodyFields};
use crate::select;
use crate::snapshot::{Route, Target, Upstream};
use crate::sse::{Gate, StreamGate, StreamTail};
use crate::upstream::{connect, UpStream};
use crate::usage::record::Tally;
use crate::usage::scan::{token_counts, OwedUsage, StreamEnd, StreamFilter};
use crate::worker::WorkerCtx;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;
use std::time::Duration;
use switchboard_shared::config::Trigger;
use switchboard_shared::usage::Outcome;

pub struct ProxyRequest<'a> {
    pub endpoint: &'a Endpoint,
    /// The client's body, forwarded as is (but for a spliced model name).
    pub body: &'a [u8],
    pub fields: &'a BodyFields<'a>,
    pub request_id: &'a [u8],
    pub client_http10: bool,
    pub client_keep_alive: bool,
    /// The strategy the client asked for (`x-switchboard-strategy`).
    pub strategy: Option<switchboard_shared::config::Strategy>,
    /// A stream the client did not ask usage for: the gateway asks for it
    /// with this body edit, and takes the usage chunk out of the reply.
    pub usage_edit: Option<(usize, usize, Vec<u8>)>,
    /// Header lines for the client's response (`x-ratelimit-*`).
    pub extra_headers: &'a [u8],
    /// Store a 200 body in the response cache under this key, for this long
    /// (if it is not over the cache's entry size). Stored before the body's
    /// last bytes go out, so a client that has the answer finds it cached.
    pub capture: Option<(crate::cache::Key, Duration)>,
    /// issue 18: store captured answers in the shared tier (Redis) too.
    pub shared_cache: bool,
    /// The org of the request's key (nodes serve their own org only).
    pub org: &'a str,
}

pub enum ProxyOutcome {
    /// The whole response reached the client.
    Done { keep_alive: bool },
    /// Nothing reached the client; answer with this error.
    Failed(GatewayError),
    /// The response was cut off after it started; close the connection.
    Aborted,
    /// A stream failed before any byte reached the client (an error event, or
    /// an end, before the first content token): another attempt may serve it.
    Retry(GatewayError),
}

/// The status recorded for a request whose client left before any byte of
/// the answer reached it (nginx's "client closed request").
pub const CLIENT_CLOSED_STATUS: u16 = 499;

pub async fn proxy<S: AsyncReadRent + AsyncWriteRent + PeerClosed>(
    ctx: &WorkerCtx,
    client: &mut S,
    bufs: &mut Buffers,
    req: &ProxyRequest<'_>,
    route: &Route,
    tally: &mut Tally,
) -> ProxyOutcome {
    let started = Instant::now();
    let strategy = match req.strategy {
        Some(s) if route.allow_strategy_header => s,
        _ => route.strategy,
    };
    let plan = select::plan(route, strategy, now_ms(), req.org);
    if plan.is_empty() {
        return ProxyOutcome::Failed(GatewayError::no_target(&route.name));
    }
    let retry = route.retry;
    let deadline = retry.deadline.map(|d| started + d);
    let mut last_err = None;
    let mut attempts = 0u32;
    for n in 0..retry.max_attempts {
        let target = &route.targets[plan.nth(n)];
        let up = &*target.upstream;
        if n >= plan.len() {
            // Round two and later: back off before trying a target again.
            let round = (n / plan.len()) as u32;
            let base = retry.backoff.saturating_mul(1 << round.min(10));
            let pause = base + retry.backoff.mul_f64(ctx.random_unit());
            let pause = deadline.map_or(pause, |d| pause.min(d.saturating_duration_since(Instant::now())));
            monoio::time::sleep(pause).await;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let now = now_ms();
        if up.health.state(now) == HealthState::HalfOpen && !up.health.admit(now) {
            // Another request is the half-open trial; don't pile on.
            last_err.get_or_insert_with(|| GatewayError::upstream(format!("Upstream `{}` is recovering.", up.name)));
            continue;
        }
        let Some(key) = up.pick_key(now) else {
            last_err =
                Some(GatewayError::upstream(format!("Every provider key of upstream `{}` is benched.", up.name)));
            continue;
        };
        attempts += 1;
        tally.attempts = attempts;
        let last = n + 1 >= retry.max_attempts;
        build_request(&mut bufs.up_w, target, key, req);
        let _busy = InFlight::new(&up.health);
        let mut wait = up.first_byte_timeout;
        if let Some(t) = retry.per_attempt_timeout {
            wait = wait.min(t);
        }
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        let sent = Instant::now();
        let result = monoio::select! {
            r = attempt(ctx, up, bufs, wait) => Some(r),
            _ = client.peer_closed() => None,
        };
        tally.upstream += sent.elapsed();
        let Some(result) = result else {
            // Dropping the attempt closes the upstream connection: the
            // upstream stops generating for nobody.
            tracing::debug!(upstream = %up.name, "client left before the answer; upstream request cancelled");
            tally.status = CLIENT_CLOSED_STATUS;
            tally.outcome = Outcome::ClientClosed;
            return ProxyOutcome::Aborted;
        };
        match result {
            Ok((conn, head)) => {
                let now = now_ms();
                let verdict = judge(route, up, key, &head, now);
                let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
                match verdict {
                    Verdict::FailOver(e) if !last && !out_of_time => {
                        tracing::debug!(upstream = %up.name, status = head.status, "failing over on status");
                        last_err = Some(e);
                        continue;
                    }
                    Verdict::FailOver(_) | Verdict::Relay => {}
                }
                if (200..500).contains(&head.status) && head.status != 429 {
                    up.health.success(sent.elapsed());
                }
                let served = Served { route: &route.name, target: &up.name, attempts };
                tally.target = Some(plan.nth(n));
                tally.status = head.status;
                let relay_started = Instant::now();
                let outcome = relay(ctx, client, conn, head, bufs, req, up, &served, tally).await;
                tally.upstream += relay_started.elapsed();
                match outcome {
                    ProxyOutcome::Retry(e) if !last && route.triggers.has(Trigger::Reset) => {
                        tally.reply = Default::default();
                        up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                        tracing::debug!(upstream = %up.name, error = %e.message, "stream failed before its first token; trying again");
                        last_err = Some(e);
                    }
                    ProxyOutcome::Retry(e) => return ProxyOutcome::Failed(e),
                    outcome => return outcome,
                }
            }
            Err(e) => {
                if e.source == Source::Upstream {
                    up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                }
                let trigger_on = e.cause.is_none_or(|c| route.triggers.has(c));
                if e.retryable && trigger_on {
                    tracing::debug!(upstream = %up.name, error = %e.message, "attempt failed; trying again");
                    last_err = Some(e);
                } else {
                    return ProxyOutcome::Failed(e);
                }
            }
        }
    }
    ProxyOutcome::Failed(last_err.unwrap_or_else(|| GatewayError::no_target(&route.name)))
}

enum Verdict {
    Relay,
    /// Fail over, unless this is the last attempt (then relay the response as it is).
    FailOver(GatewayError),
}

/// What an upstream's status means for routing, and the health and key
/// bookkeeping it implies. 400/404 and other client errors are relayed: the
/// request, not the upstream, is wrong.
fn judge(route: &Route, up: &Upstream, key: Option<usize>, head: &ResponseHead, now: u64) -> Verdict {
    let t = &route.triggers;
    let status = head.status;
    let fail = |why: &str| GatewayError::upstream(format!("Upstream `{}` answered {status} ({why}).", up.name));
    match status {
        429 => {
            let until = now + retry_after_ms(head.retry_after.as_deref());
            match key {
                // The provider key is rate limited: bench that key, not the upstream.
                Some(k) if up.keys.len() > 1 => up.bench_key(k, until),
                _ => up.health.cool(until),
            }
            if t.has(Trigger::Status429) {
                return Verdict::FailOver(fail("rate limited").because(Trigger::Status429));
            }
        }
        401 | 403 if key.is_some() => {
            // The provider refused our key: bench it until the config changes.
            if let Some(k) = key {
                up.bench_key(k, u64::MAX);
                tracing::warn!(upstream = %up.name, key = k, status, "provider key refused; benched");
            }
            if up.pick_key(now).is_some() {
                return Verdict::FailOver(fail("provider key refused").because(Trigger::Reset));
            }
        }
        408 if t.has(Trigger::Status408) => return Verdict::FailOver(fail("timeout").because(Trigger::Status408)),
        409 if t.has(Trigger::Status409) => return Verdict::FailOver(fail("conflict").because(Trigger::Status409)),
        500..=599 => {
            up.health.failure(now, up.eject_after_failures, up.eject_for);
            if t.has(Trigger::Status5xx) {
                return Verdict::FailOver(fail("server error").because(Trigger::Status5xx));
            }
        }
        _ => {}
    }
    Verdict::Relay
}

/// `Retry-After` in milliseconds: seconds (at most 10 minutes), or 1 s when
/// absent or a date.
fn retry_after_ms(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(1_000, |secs| secs.min(600) * 1_000)
}

/// Which route, target and attempt served a response (sent as headers).
pub struct Served<'a> {
    pub route: &'a str,
    pub target: &'a str,
    pub attempts: u32,
}

/// Render the upstream request: request line, the upstream's pre-rendered
/// headers and provider key, length, request id, then the body (model
/// spliced if aliased).
fn build_request(w: &mut Vec<u8>, target: &Target, key: Option<usize>, req: &ProxyRequest<'_>) {
    let span = req.fields.model_span;
    let mut edits: [(usize, usize, &[u8]); 2] = [(0, 0, &[]), (0, 0, &[])];
    let mut n = 0;
    if let Some(m) = &target.model_json {
        edits[n] = (span.0, span.1, m);
        n += 1;
    }
    if let Some((s, e, v)) = &req.usage_edit {
        edits[n] = (*s, *e, v);
        n += 1;
    }
    let edits = &mut edits[..n];
    let up = &target.upstream;
    w.clear();
    w.extend_from_slice(b"POST ");
    w.extend_from_slice(up.path_prefix.as_bytes());
    w.extend_from_slice(req.endpoint.upstream_suffix().unwrap_or("/chat/completions").as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    w.extend_from_slice(&up.header_block);
    if let Some(k) = key.and_then(|k| up.keys.get(k)) {
        w.extend_from_slice(&k.line);
    }
    w.extend_from_slice(b"content-length: ");
    push_dec(w, edited_len(req.body.len(), edits) as u64);
    w.extend_from_slice(b"\r\nx-request-id: ");
    w.extend_from_slice(req.request_id);
    w.extend_from_slice(b"\r\n\r\n");
    write_edited(req.body, edits, w);
}

enum Exchange {
    /// The connection died before any response byte: safe to resend on a new one.
    Stale,
    Fail(GatewayError),
}

/// One try at one upstream: a pooled connection (once more on a fresh one if
/// the pooled one turns out closed), request out, response head in.
async fn attempt(
    ctx: &WorkerCtx,
    up: &Upstream,
    bufs: &mut Buffers,
    wait: Duration,
) -> Result<(UpStream, ResponseHead), GatewayError> {
    let pooled = ctx.pool.borrow_mut().take(&up.pool_key);
    let (mut conn, mut reused) = match pooled {
        Some(c) => (c, true),
        None => (connect(up, &ctx.dns).await?, false),
    };
    loop {
        match exchange(ctx, &mut conn, up, bufs, wait).await {
            Ok(head) => return Ok((conn, head)),
            Err(Exchange::Stale) if reused => {
                // A node's connections are all pooled: try its next one.
                let next = match up.addr {
                    crate::snapshot::UpstreamAddr::Reverse => ctx.pool.borrow_mut().take(&up.pool_key),
                    _ => None,
                };
                match next {
                    Some(c) => conn = c,
                    None => {
                        conn = connect(up, &ctx.dns).await?;
                        reused = false;
                    }
                }
            }
            Err(Exchange::Stale) => {
                return Err(GatewayError::upstream(format!(
                    "Upstream `{}` closed the connection without answering.",
                    up.name
                )))
            }
            Err(Exchange::Fail(e)) => return Err(e),
        }
    }
}

async fn exchange(
    ctx: &WorkerCtx,
    conn: &mut UpStream,
    up: &Upstream,
    bufs: &mut Buffers,
    wait: Duration,
) -> Result<ResponseHead, Exchange> {
    let deadline = Instant::now() + wait;
    let timed_out = || {
        Exchange::Fail(GatewayError::upstream_timeout(format!(
            "Upstream `{}` did not answer within {} ms.",
            up.name,
            wait.as_millis()
        )))
    };
    match write_all(conn, &mut bufs.up_w, deadline).await {
        Ok(()) => {}
        Err(IoFail::Timeout) => return Err(timed_out()),
        Err(IoFail::Io(_)) => return Err(Exchange::Stale),
    }
    let r = &mut bufs.up_r;
    r.clear();
    let limit = ctx.cfg.max_upstream_header_bytes;
    let mut scanned = 0;
    loop {
        if let Some(end) = find_head_end(r, scanned) {
            let head = parse_response(&r[..end], false).map_err(|_| {
                Exchange::Fail(GatewayError::upstream(format!("Upstream `{}` sent a malformed response.", up.name)))
            })?;
            if (100..200).contains(&head.status) {
                // Interim response (100 Continue, 103 Early Hints): skip it.
                r.drain(..end);
                scanned = 0;
                continue;
            }
            return Ok(head);
        }
        if r.len() >= limit {
            return Err(Exchange::Fail(GatewayError::upstream(format!(
                "Upstream `{}` sent a response head over {limit} bytes.",
                up.name
            ))));
        }
        scanned = r.len();
        match read_append(conn, r, 4096, deadline).await {
            Ok(0) | Err(IoFail::Io(_)) if r.is_empty() => return Err(Exchange::Stale),
            Ok(0) | Err(IoFail::Io(_)) => {
                return Err(Exchange::Fail(GatewayError::upstream(format!(
                    "Upstream `{}` closed the connection in the middle of its response head.",
                    up.name
                ))))
            }
            Ok(_) => {}
            Err(IoFail::Timeout) => return Err(timed_out()),
        }
    }
}

/// Relay the response: head first, then the body as it arrives, re-framed for
/// the client (Content-Length passes through; chunked or close-delimited
/// bodies go out chunked to HTTP/1.1 clients). Nothing is buffered whole.
#[allow(clippy::too_many_arguments)]
async fn relay<S: AsyncWriteRent + PeerClosed>(
    ctx: &WorkerCtx,
    client: &mut S,
    mut conn: UpStream,
    head: ResponseHead,
    bufs: &mut Buffers,
    req: &ProxyRequest<'_>,
    up: &Upstream,
    served: &Served<'_>,
    tally: &mut Tally,
) -> ProxyOutcome {
    let framing = head.framing;
    let client_chunked = matches!(framing, BodyFraming::Chunked | BodyFraming::Close) && !req.client_http10;
    let close_delimited = matches!(framing, BodyFraming::Chunked | BodyFraming::Close) && req.client_http10;
    let keep_alive = req.client_keep_alive && !close_delimited;

    let out = &mut bufs.out;
    let client_body = match framing {
        BodyFraming::None => ClientBody::Length(0),
        BodyFraming::Length(n) => ClientBody::Length(n),
        _ if client_chunked => ClientBody::Chunked,
        _ => ClientBody::CloseDelimited,
    };
    render_head(out, &head, req, served, client_body, keep_alive);

    let r = &mut bufs.up_r;
    let mut pos = head.head_len;
    let mut decoder = ChunkedDecoder::new();
    let mut remaining = match framing {
        BodyFraming::Length(n) => n,
        _ => 0,
    };
    let mut done = matches!(framing, BodyFraming::None | BodyFraming::Length(0));
    let mut eof = false;
    // Bytes past the end of the response: the upstream is confused; don't pool it.
    let mut surplus = false;
    // A stream is held back (head included) until its first content token, so
    // a stream that fails before it can still go to another target.
    let mut gate = if head.event_stream && head.status == 200 { Some(StreamGate::default()) } else { None };
    let mut stream_tail = StreamTail::default();
    let success = (200..300).contains(&head.status);
    // A chat or completion stream goes through the stream filter (only where
    // the body is re-framed anyway: a fixed length must pass as is): it takes
    // out the usage chunk the client did not ask for, and holds `[DONE]` so
    // that the stream's end is written by the gateway: the usage chunk the
    // client asked for, then `[DONE]` for a complete generation, or an error
    // event for one cut short.
    let generation = matches!(req.endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
    let mut filter = (head.event_stream && success && !matches!(framing, BodyFraming::Length(_)))
        .then(|| StreamFilter::new(req.usage_edit.is_some(), generation));
    // The upstream closed after `[DONE]`: the stream is over, the connection is not reused.
    let mut gone_after_done = false;
    let mut filtered = Vec::new();
    // A whole (non-streaming) generation is held until it is complete (up to
    // `HOLD_MAX_BYTES`), so that an answer without `usage` can be given the
    // gateway's estimate before it goes out, as OpenAI always reports usage.
    let mut held: Option<Vec<u8>> =
        (generation && !head.event_stream && head.status == 200 && framing != BodyFraming::None).then(Vec::new);
    // The response went out whole with a length of its own (a held body).
    let mut sent_whole = false;
    tally.captured = (req.capture.is_some() && head.status == 200 && !head.event_stream).then(Vec::new);
    // Whether any byte went to the client. Until then (the head is held
    // until the first body bytes, a stream's until its first token) a failure
    // can still go to another target or become a clean 502.
    let mut sent = false;
    let before = if gate.is_some() { "the first token" } else { "its response started" };
    let retry = |why: String| {
        ProxyOutcome::Retry(GatewayError::upstream(format!("Upstream `{}` failed before {before}: {why}.", up.name)))
    };
    loop {
        let end = r.len();
        let payload = match framing {
            _ if gone_after_done => {
                done = true;
                pos..pos
            }
            BodyFraming::Chunked => {
                let (mut rp, mut wp) = (pos, pos);
                match decoder.decode(r, &mut rp, end, &mut wp) {
                    Ok(d) => {
                        done = d;
                        surplus |= d && rp < end;
                        pos..wp
                    }
                    Err(e) if !sent => return retry(format!("{e}")),
                    Err(e) => {
                        return fail_mid_stream(ctx, client, out, &head, client_chunked, up, tally, &e.to_string())
                            .await
                    }
                }
            }
            BodyFraming::Length(_) => {
                let n = ((end - pos) as u64).min(remaining) as usize;
                remaining -= n as u64;
                if remaining == 0 {
                    done = true;
                    surplus |= end > pos + n;
                }
                pos..pos + n
            }
            BodyFraming::Close => {
                done = eof;
                pos..end
            }
            BodyFraming::None => {
                surplus |= end > pos;
                pos..pos
            }
        };
        if head.event_stream {
            stream_tail.push(&r[payload.clone()]);
        }
        if success {
            tally.reply.feed(&r[payload.clone()]);
            if let (Some(_), Some(kept)) = (req.capture, tally.captured.as_mut()) {
                if kept.len() + payload.len() <= ctx.cache.max_entry() {
                    kept.extend_from_slice(&r[payload.clone()]);
                } else {
                    tally.captured = None;
                }
            }
        }
        if let Some(g) = gate.as_mut() {
            match g.feed(&r[payload.clone()]) {
                Gate::Hold if done => return retry("the stream ended before its first token".into()),
                Gate::Hold => {}
                Gate::Release => gate = None,
                Gate::Fail(why) => return retry(why),
            }
        }
        // The error event that ends a stream which did not finish.
        let mut unfinished: Option<GatewayError> = None;
        let payload: &[u8] = match filter.as_mut() {
            Some(f) => {
                filtered.clear();
                f.filter(&r[payload], &mut filtered);
                if done {
                    f.finish(&mut filtered);
                    if generation {
                        let owed = (req.fields.include_usage == Some(true) && !tally.reply.reported()).then(|| {
                            let (prompt_tokens, completion_tokens, total_tokens, _) =
                                token_counts(&tally.reply, req.body, true);
                            OwedUsage {
                                id: req.request_id,
                                object: if *req.endpoint == Endpoint::Completions {
                                    "text_completion"
                                } else {
                                    "chat.completion.chunk"
                                },
                                model: &req.fields.model,
                                created_s: crate::policy::now_unix_ms() / 1000,
                                prompt_tokens,
                                completion_tokens,
                                total_tokens,
                            }
                        });
                        match f.end(&mut filtered, tally.reply.finish_seen, up.require_finish_reason, owed) {
                            StreamEnd::Complete => {}
                            StreamEnd::Truncated => {
                                tracing::warn!(upstream = %up.name, "stream ended without a finish_reason: truncated");
                                up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                                if !sent {
                                    // Nothing reached the client: another target may serve it.
                                    return ProxyOutcome::Retry(GatewayError::upstream_truncated(&up.name));
                                }
                                tally.outcome = Outcome::UpstreamTruncated;
                                // One error event: the upstream's own, if it sent one.
                                unfinished = (!f.error_seen).then(|| GatewayError::upstream_truncated(&up.name));
                            }
                            StreamEnd::Unfinished => {
                                tally.outcome = Outcome::UpstreamCut;
                                unfinished = (!f.error_seen).then(|| {
                                    GatewayError::upstream(format!(
                                        "Upstream `{}` ended the stream without [DONE].",
                                        up.name
                                    ))
                                });
                            }
                        }
                    }
                }
                &filtered
            }
            None => &r[payload],
        };
        if done && !generation && head.event_stream && head.status == 200 && !stream_tail.ends_with_done() {
            // A stream that stops without `[DONE]` is not a clean finish.
            unfinished =
                Some(GatewayError::upstream(format!("Upstream `{}` ended the stream without [DONE].", up.name)));
        }
        // Held: keep the bytes back; past the bound, let them go as they came.
        let mut released: Option<Vec<u8>> = None;
        if let Some(h) = held.as_mut() {
            h.extend_from_slice(payload);
            if done {
                let body = with_owed_usage(std::mem::take(h), &tally.reply, req);
                out.clear();
                render_head(out, &head, req, served, ClientBody::Length(body.len() as u64), req.client_keep_alive);
                out.extend_from_slice(&body);
                if let Some(kept) = tally.captured.as_mut() {
                    kept.clear();
                    kept.extend_from_slice(&body);
                }
                held = None;
                sent_whole = true;
            } else if h.len() > HOLD_MAX_BYTES {
                released = held.take();
            }
        }
        let payload: &[u8] = match &released {
            Some(all) => all,
            None => payload,
        };
        if held.is_some() || sent_whole {
            // Nothing to frame now: the held body goes out whole, above.
        } else if client_chunked {
            push_chunk(out, payload);
            if done {
                if let Some(err) = &unfinished {
                    push_chunk(out, &err.to_sse_event());
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            out.extend_from_slice(payload);
            if let Some(err) = &unfinished {
                out.extend_from_slice(&err.to_sse_event());
            }
        }
        if done {
            if let (Some((key, ttl)), Some(body)) = (req.capture, tally.captured.take()) {
                ctx.cache.put(key, &body, ttl);
                // issue 18: the shared tier.
                if req.shared_cache {
                    crate::cluster::cache::put(req.org, &key, &body, ttl);
                }
            }
        }
        // Hold the head until there is body to send with it (or the body is whole).
        let something = sent || done || !payload.is_empty();
        if gate.is_none() && held.is_none() && !out.is_empty() && something {
            if write_all(client, out, Instant::now() + ctx.write_timeout).await.is_err() {
                // The client went away: dropping `conn` closes the upstream side too.
                tally.outcome = Outcome::ClientClosed;
                return ProxyOutcome::Aborted;
            }
            tally.first_byte.get_or_insert_with(Instant::now);
            sent = true;
            out.clear();
        }
        if done {
            break;
        }
        r.clear();
        pos = 0;
        let deadline = Instant::now() + up.read_timeout;
        let read = if sent {
            read_append(&mut conn, r, 4096, deadline).await
        } else {
            let watched = monoio::select! {
                read = read_append(&mut conn, r, 4096, deadline) => Some(read),
                _ = client.peer_closed() => None,
            };
            let Some(read) = watched else {
                tracing::debug!(upstream = %up.name, "client left before the first byte; upstream request cancelled");
                tally.status = CLIENT_CLOSED_STATUS;
                tally.outcome = Outcome::ClientClosed;
                return ProxyOutcome::Aborted;
            };
            read
        };
        if !sent {
            match &read {
                Ok(0) if framing != BodyFraming::Close => return retry("the connection closed".into()),
                Err(IoFail::Timeout) => return retry(format!("nothing for {} ms", up.read_timeout.as_millis())),
                Err(IoFail::Io(e)) => return retry(e.to_string()),
                _ => {}
            }
        }
        let after_done = filter.as_ref().is_some_and(|f| f.done_seen);
        match read {
            Ok(0) if framing == BodyFraming::Close => eof = true,
            // `[DONE]` then a close (or a reset): a normal end, not a failure.
            Ok(0) | Err(IoFail::Io(_)) if after_done => {
                gone_after_done = true;
                surplus = true;
            }
            Ok(0) => {
                return fail_mid_stream(
                    ctx,
                    client,
                    out,
                    &head,
                    client_chunked,
                    up,
                    tally,
                    "the upstream closed the connection",
                )
                .await
            }
            Ok(_) => {}
            Err(IoFail::Timeout) => {
                let why = format!("the upstream sent nothing for {} ms", up.read_timeout.as_millis());
                return fail_mid_stream(ctx, client, out, &head, client_chunked, up, tally, &why).await;
            }
            Err(IoFail::Io(e)) => {
                return fail_mid_stream(ctx, client, out, &head, client_chunked, up, tally, &e.to_string()).await
            }
        }
    }
    if head.keep_alive && !surplus && framing != BodyFraming::Close {
        ctx.pool.borrow_mut().put(&up.pool_key, conn, up.pool_max_idle, up.pool_idle_timeout);
    }
    if sent_whole {
        return ProxyOutcome::Done { keep_alive: req.client_keep_alive };
    }
    if close_delimited {
        return ProxyOutcome::Aborted;
    }
    ProxyOutcome::Done { keep_alive }
}

/// The most of a whole generation held back to add the usage it lacks; a
/// larger answer goes out as it comes, as the upstream wrote it.
pub const HOLD_MAX_BYTES: usize = 256 * 1024;

/// How the client's response body is framed.
#[derive(Clone, Copy)]
enum ClientBody {
    Length(u64),
    Chunked,
    CloseDelimited,
}

/// The response head for the client: the upstream's status and content type,
/// what served it, and the body's framing.
fn render_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    req: &ProxyRequest<'_>,
    served: &Served<'_>,
    body: ClientBody,
    keep_alive: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_dec(out, head.status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(head.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = &head.content_type {
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(ct);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ra) = &head.retry_after {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(ra);
        out.extend_from_slice(b"\r\n");
    }
    if head.event_stream {
        out.extend_from_slice(b"cache-control: no-cache\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(req.request_id);
    out.extend_from_slice(b"\r\nx-switchboard-route: ");
    out.extend_from_slice(served.route.as_bytes());
    out.extend_from_slice(b"\r\nx-switchboard-target: ");
    out.extend_from_slice(served.target.as_bytes());
    out.extend_from_slice(b"\r\nx-switchboard-attempts: ");
    push_dec(out, served.attempts as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.extra_headers);
    match body {
        ClientBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ClientBody::CloseDelimited => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.client_http10 {
        // HTTP/1.0 closes unless told the connection stays.
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A whole generation's body, with the gateway's usage estimate added when
/// the upstream reported none (OpenAI always does): `usage` with prompt,
/// completion and total tokens, and `x_switchboard_estimated: true`. A body
/// that is not a JSON object goes as it is.
fn with_owed_usage(body: Vec<u8>, reply: &crate::usage::scan::UsageScan, req: &ProxyRequest<'_>) -> Vec<u8> {
    if reply.reported() {
        return body;
    }
    let mut v = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => v,
        _ => return body,
    };
    let (prompt, completion, total, _) = token_counts(reply, req.body, false);
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "usage".into(),
            serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}),
        );
        o.insert("x_switchboard_estimated".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_vec(&v).unwrap_or(body)
}

/// The upstream failed after the response started. A stream gets an SSE
/// `error` event (which OpenAI's SDKs raise) and a proper end; any other body
/// is cut off, so the client sees a truncated response, never a short one
/// passed off as whole.
#[allow(clippy::too_many_arguments)]
async fn fail_mid_stream<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    client: &mut S,
    out: &mut Vec<u8>,
    head: &ResponseHead,
    client_chunked: bool,
    up: &Upstream,
    tally: &mut Tally,
    why: &str,
) -> ProxyOutcome {
    tracing::warn!(upstream = %up.name, reason = %why, "upstream failed mid-response");
    tally.outcome = Outcome::UpstreamCut;
    if client_chunked && head.event_stream {
        let err = GatewayError::upstream(format!("Upstream `{}` failed mid-stream: {why}.", up.name));
        out.clear();
        push_chunk(out, &err.to_sse_event());
        out.extend_from_slice(b"0\r\n\r\n");
        let _ = write_all(client, out, Instant::now() + ctx.write_timeout).await;
    }
    ProxyOutcome::Aborted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded() {
        assert_eq!(retry_after_ms(Some(b"3")), 3_000);
        assert_eq!(retry_after_ms(Some(b"99999")), 600_000);
        assert_eq!(retry_after_ms(Some(b"Wed, 21 Oct 2015 07:28:00 GMT")), 1_000);
        assert_eq!(retry_after_ms(None), 1_000);
    }
}
