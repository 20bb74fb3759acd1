//! Phases "select" (the plan, from [`crate::select`]) and "connect or fail
//! over"; the response is then relayed by [`crate::relay`].
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

use crate::error::{GatewayError, Source};
use crate::exchange::{Buffers, Exchange, CLIENT_CLOSED_STATUS};
use crate::fmt::push_dec;
use crate::health::{now_ms, InFlight, State as HealthState};
use crate::http::find_head_end;
use crate::http::head::{parse_response, Endpoint, RequestHead, ResponseHead};
use crate::http::io::{read_append, write_all, IoFail, PeerClosed};
use crate::relay::{relay, Relayed, Served};
use crate::request::{edited_len, write_edited};
use crate::select;
use crate::snapshot::{Route, Target, Upstream};
use crate::translate::{self, RequestFacts, Translation};
use crate::upstream::{connect, UpStream};
use crate::worker::WorkerCtx;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::{recent, Instant};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use switchboard_shared::anthropic::DEFAULT_VERSION;
use switchboard_shared::config::{ProviderKind, Trigger};
use switchboard_shared::usage::Outcome;

/// What forwarding a request came to.
pub(crate) enum Forwarded {
    /// The whole response reached the client.
    Done { keep_alive: bool },
    /// Nothing reached the client; answer with this error.
    Failed(GatewayError),
    /// The response was cut off after it started, or the client left; close
    /// the connection.
    Aborted,
}

pub(crate) async fn forward<S: AsyncReadRent + AsyncWriteRent + PeerClosed>(
    ctx: &WorkerCtx,
    client: &mut S,
    bufs: &mut Buffers,
    x: &mut Exchange<'_>,
) -> Forwarded {
    let route = x.route;
    let started = recent();
    let strategy = match x.head.strategy {
        Some(s) if route.allow_strategy_header => s,
        _ => route.strategy,
    };
    let mut plan = select::plan(route, strategy, now_ms(), &x.key.org);
    // ---- fault injection (test keys only): a forced target; the failed
    // target tried first, whatever the strategy, so the failure is met ----
    if let Some(f) = &x.fault {
        plan.retain(|i| f.allows(&route.targets[i].upstream.name));
        if let Some(failed) = f.failed_target() {
            plan.put_first(|i| *route.targets[i].upstream.name == *failed);
        }
    }
    // ----
    if plan.is_empty() {
        return Forwarded::Failed(GatewayError::no_target(&route.name));
    }
    let retry = &route.retry;
    let deadline = retry.deadline.map(|d| started + d);
    // Boxed, as the two below: taken on failures only, and otherwise 88
    // bytes each in the state every open stream's relay is awaited from.
    let mut last_err: Option<Box<GatewayError>> = None;
    let mut attempts = 0u32;
    let mut mismatched = false;
    // The request body in `bufs.translated` was translated this way for this
    // upstream model name, with these facts: translated once, not per attempt.
    let mut translated_for: Option<(Translation, *const str, RequestFacts)> = None;
    // Why a target of the other API could not take the request (a 400 when no target could).
    let mut untranslatable: Option<Box<GatewayError>> = None;
    for n in 0..retry.max_attempts {
        let target = &route.targets[plan.nth(n)];
        let up = &*target.upstream;
        // The API this target speaks: the same as the client's (passthrough),
        // the other one (translated, both ways), or none it can serve.
        let Some(way) = translation(x.endpoint(), up.kind) else {
            mismatched = true;
            continue;
        };
        x.translation = match way {
            None => None,
            Some(way) => {
                let model: *const str = &*target.upstream_model;
                match &translated_for {
                    Some((w, m, facts)) if *w == way && std::ptr::eq(*m, model) => Some((way, facts.clone())),
                    _ => {
                        translated_for = None;
                        match translate_request(way, x.body, &target.upstream_model, &mut bufs.translated) {
                            Ok(facts) => {
                                translated_for = Some((way, model, facts.clone()));
                                Some((way, facts))
                            }
                            Err(e) => {
                                // This target cannot honour the request; another may.
                                tracing::debug!(upstream = %up.name, param = ?e.param, "request not translatable for this target");
                                untranslatable.get_or_insert(Box::new(e));
                                continue;
                            }
                        }
                    }
                }
            }
        };
        if n >= plan.len() {
            // Round two and later: back off before trying a target again.
            let round = (n / plan.len()) as u32;
            let base = retry.backoff.saturating_mul(1 << round.min(10));
            let pause = base + retry.backoff.mul_f64(ctx.random_unit());
            let pause = deadline.map_or(pause, |d| pause.min(d.saturating_duration_since(recent())));
            monoio::time::sleep(pause).await;
        }
        if deadline.is_some_and(|d| recent() >= d) {
            break;
        }
        // ---- fault injection (test keys only): this attempt fails as the
        // named failure would, without contacting the target and without
        // touching its health; failover is the route's, as for a real one.
        if let Some(e) = x.fault.as_ref().and_then(|f| f.inject(&up.name)) {
            attempts += 1;
            x.tally.attempts = attempts;
            x.tally.injected = true;
            let trigger_on = e.cause.is_some_and(|c| route.triggers.has(c));
            if e.retryable && trigger_on && n + 1 < retry.max_attempts {
                tracing::debug!(upstream = %up.name, error = %e.message, "injected fault; trying again");
                last_err = Some(Box::new(e));
                continue;
            }
            return Forwarded::Failed(e);
        }
        // ----
        let now = now_ms();
        if up.health.state(now) == HealthState::HalfOpen && !up.health.admit(now) {
            // Another request is the half-open trial; don't pile on.
            last_err.get_or_insert_with(|| {
                Box::new(GatewayError::upstream(format!("Upstream `{}` is recovering.", up.name)))
            });
            continue;
        }
        let Ok(key) = up.pick_key(now) else {
            last_err = Some(Box::new(GatewayError::upstream(format!(
                "Every provider key of upstream `{}` is benched.",
                up.name
            ))));
            continue;
        };
        attempts += 1;
        x.tally.attempts = attempts;
        let last = n + 1 >= retry.max_attempts;
        let translated = x.translation.as_ref().map(|(way, _)| (*way, bufs.translated.as_slice()));
        if bufs.up_w.capacity() == 0 {
            bufs.up_w = ctx.lend_buffer();
        }
        build_request(&mut bufs.up_w, target, key, x, translated);
        let _busy = InFlight::new(&up.health);
        let mut wait = up.first_byte_timeout;
        if let Some(t) = retry.per_attempt_timeout {
            wait = wait.min(t);
        }
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(recent()));
        }
        let sent = Instant::now();
        // Everything from here to the relay's future is scoped in this block:
        // what an `async fn` keeps alive across an `.await` is sized into
        // its state, so the attempt's result, the verdict and the moved-from
        // connection and head would otherwise ride along for the whole
        // relay — every open stream's memory (docs/performance.md).
        let answered;
        let outcome = {
            let result = monoio::select! {
                r = attempt(ctx, up, bufs, wait) => Some(r),
                _ = client.peer_closed() => None,
            };
            // One read for the wait's length: the upstream time, the
            // target's latency (health) and the relay's start.
            answered = Instant::now();
            let waited = answered.saturating_duration_since(sent);
            x.tally.upstream += waited;
            // The request is rendered again for each attempt: its buffer goes
            // back to the worker rather than staying with a stream for hours.
            ctx.give_back(std::mem::take(&mut bufs.up_w));
            let Some(result) = result else {
                // Dropping the attempt closes the upstream connection: the
                // upstream stops generating for nobody.
                tracing::debug!(upstream = %up.name, "client left before the answer; upstream request cancelled");
                x.tally.status = CLIENT_CLOSED_STATUS;
                x.tally.outcome = Outcome::ClientClosed;
                return Forwarded::Aborted;
            };
            let (conn, head) = match result {
                Ok(answer) => answer,
                Err(e) => {
                    if e.source == Source::Upstream {
                        up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                    }
                    let trigger_on = e.cause.is_none_or(|c| route.triggers.has(c));
                    if e.retryable && trigger_on {
                        tracing::debug!(upstream = %up.name, error = %e.message, "attempt failed; trying again");
                        last_err = Some(Box::new(e));
                        continue;
                    }
                    return Forwarded::Failed(e);
                }
            };
            let now = now_ms();
            let out_of_time = deadline.is_some_and(|d| recent() >= d);
            if let Verdict::FailOver(e) = judge(route, up, key, &head, now) {
                if !last && !out_of_time {
                    tracing::debug!(upstream = %up.name, status = head.status, "failing over on status");
                    last_err = Some(Box::new(e));
                    continue;
                }
            }
            if (200..500).contains(&head.status) && head.status != 429 {
                up.health.success(waited);
            }
            let served = Served { route: &route.name, target: &up.name, attempts };
            x.tally.target = Some(plan.nth(n));
            x.tally.status = head.status;
            match conn {
                UpStream::Plain(tcp) => Relaying::Plain(relay(ctx, client, tcp, head, bufs, x, up, served)),
                // Boxed (once per response from a TLS upstream or a node):
                // their reads' state would size every plain stream's relay.
                other => Relaying::Other(Box::pin(relay(ctx, client, other, head, bufs, x, up, served))),
            }
        }
        .await;
        x.tally.upstream += answered.elapsed();
        match outcome {
            Relayed::Retry(e) if !last && route.triggers.has(Trigger::Reset) => {
                x.tally.reply = Default::default();
                up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                tracing::debug!(upstream = %up.name, error = %e.message, "stream failed before its first token; trying again");
                last_err = Some(Box::new(e));
            }
            Relayed::Retry(e) => return Forwarded::Failed(e),
            Relayed::Done { keep_alive } => return Forwarded::Done { keep_alive },
            Relayed::Aborted => return Forwarded::Aborted,
        }
    }
    let err = match (last_err, untranslatable) {
        (Some(e), _) if attempts > 0 => *e,
        // No target could take the request as it is: say which field.
        (_, Some(e)) => *e,
        (Some(e), None) => *e,
        (None, None) if mismatched && attempts == 0 => {
            let e = x.endpoint();
            let path = match e {
                Endpoint::CountTokens => "/v1/messages/count_tokens",
                Endpoint::Completions => "/v1/completions",
                Endpoint::Embeddings => "/v1/embeddings",
                _ => "/v1/chat/completions",
            };
            GatewayError::no_target_of_kind(&route.name, path, e.is_anthropic())
        }
        (None, None) => GatewayError::no_target(&route.name),
    };
    Forwarded::Failed(err)
}

/// One response's relay: inline from a plain TCP upstream, boxed from the
/// others (see [`crate::upstream::RelayConn`]).
enum Relaying<P, O> {
    Plain(P),
    Other(Pin<Box<O>>),
}

impl<P: Future, O: Future<Output = P::Output>> Future for Relaying<P, O> {
    type Output = P::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<P::Output> {
        // SAFETY: `Plain`'s future is structurally pinned: `Relaying` never
        // moves it out, has no `Drop` and no manual `Unpin`; `Other` is a
        // `Pin<Box<_>>`, pinned on its own.
        match unsafe { self.get_unchecked_mut() } {
            // SAFETY: as above; the future stays where it is until dropped.
            Relaying::Plain(f) => unsafe { Pin::new_unchecked(f) }.poll(cx),
            Relaying::Other(f) => f.as_mut().poll(cx),
        }
    }
}

/// How a provider of this kind serves requests of this endpoint: `Some(None)`
/// as sent (but the model: passthrough), `Some(Some(way))` translated to the
/// API it speaks (chat ↔ Messages), `None` not at all (completions and
/// embeddings have no Messages counterpart; a token count is Anthropic's).
fn translation(endpoint: &Endpoint, kind: ProviderKind) -> Option<Option<Translation>> {
    match (kind, endpoint) {
        (ProviderKind::Anthropic, Endpoint::Messages | Endpoint::CountTokens) => Some(None),
        (ProviderKind::Anthropic, Endpoint::ChatCompletions) => Some(Some(Translation::ChatToMessages)),
        (ProviderKind::Anthropic, _) => None,
        (ProviderKind::OpenAI, Endpoint::Messages) => Some(Some(Translation::MessagesToChat)),
        (ProviderKind::OpenAI, Endpoint::CountTokens) => None,
        (ProviderKind::OpenAI, _) => Some(None),
    }
}

/// Translate the client's body for a target of the other API, into `out`.
fn translate_request(
    way: Translation,
    body: &[u8],
    model: &str,
    out: &mut Vec<u8>,
) -> Result<RequestFacts, GatewayError> {
    out.clear();
    let r = match way {
        Translation::MessagesToChat => translate::request::messages_to_chat(body, Some(model), out),
        Translation::ChatToMessages => translate::request::chat_to_messages(body, Some(model), out),
    };
    // Anthropic's error shape has no `param`: the message names the field too.
    r.map_err(|u| {
        if u.param.is_empty() {
            // The body as a whole (a lone surrogate escape the gateway's own
            // scan does not decode): not JSON the target could be sent.
            return GatewayError::invalid_json(u.message.trim_end_matches('.'));
        }
        let message = format!("{} (`{}`)", u.message.trim_end_matches('.'), u.param);
        GatewayError::invalid_param(u.param, "unsupported_by_target", message)
    })
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
            if up.pick_key(now).is_ok() {
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

/// Render the upstream request: request line, the upstream's pre-rendered
/// headers and provider key, length, request id, then the body (model
/// spliced if aliased).
fn build_request(
    w: &mut Vec<u8>,
    target: &Target,
    key: Option<usize>,
    x: &Exchange<'_>,
    translated: Option<(Translation, &[u8])>,
) {
    if let Some((way, body)) = translated {
        let suffix = match way {
            Translation::MessagesToChat => "/chat/completions",
            Translation::ChatToMessages => "/messages",
        };
        request_head(w, target, key, x, suffix, body.len());
        w.extend_from_slice(body);
        return;
    }
    let span = x.fields.model_span;
    let mut edits: [(usize, usize, &[u8]); 2] = [(0, 0, &[]), (0, 0, &[])];
    let mut n = 0;
    if let Some(m) = &target.model_json {
        edits[n] = (span.0, span.1, m);
        n += 1;
    }
    if let Some((s, e, v)) = &x.usage_edit {
        edits[n] = (*s, *e, v);
        n += 1;
    }
    let edits = &mut edits[..n];
    let suffix = x.endpoint().upstream_suffix().unwrap_or("/chat/completions");
    request_head(w, target, key, x, suffix, edited_len(x.body.len(), edits));
    write_edited(x.body, edits, w);
}

/// The upstream request's head: request line, the upstream's pre-rendered
/// headers and provider key, Anthropic's headers for an Anthropic-kind
/// upstream, length and request id.
fn request_head(w: &mut Vec<u8>, target: &Target, key: Option<usize>, x: &Exchange<'_>, suffix: &str, len: usize) {
    let up = &target.upstream;
    w.clear();
    w.extend_from_slice(b"POST ");
    w.extend_from_slice(up.path_prefix.as_bytes());
    w.extend_from_slice(suffix.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    w.extend_from_slice(&up.header_block);
    if let Some(k) = key.and_then(|k| up.keys.get(k)) {
        w.extend_from_slice(&k.line);
    }
    if up.kind == ProviderKind::Anthropic {
        anthropic_headers(w, x.head, x.raw_head);
    }
    w.extend_from_slice(b"content-length: ");
    push_dec(w, len as u64);
    w.extend_from_slice(b"\r\nx-request-id: ");
    w.extend_from_slice(x.request_id());
    w.extend_from_slice(b"\r\n\r\n");
}

/// `anthropic-version` (the client's, else [`DEFAULT_VERSION`]) and the
/// client's `anthropic-beta`, as sent.
fn anthropic_headers(w: &mut Vec<u8>, head: &RequestHead, raw: &[u8]) {
    let value = |span: Option<(usize, usize)>| span.and_then(|(s, e)| raw.get(s..e)).filter(|v| !v.is_empty());
    w.extend_from_slice(b"anthropic-version: ");
    w.extend_from_slice(value(head.anthropic_version).unwrap_or(DEFAULT_VERSION.as_bytes()));
    w.extend_from_slice(b"\r\n");
    if let Some(beta) = value(head.anthropic_beta) {
        w.extend_from_slice(b"anthropic-beta: ");
        w.extend_from_slice(beta);
        w.extend_from_slice(b"\r\n");
    }
}

/// Why sending a request and reading its answer's head failed.
enum SendFail {
    /// The connection died before any response byte: safe to resend on a new one.
    Stale,
    Fail(GatewayError),
}

/// One try at one upstream: a pooled connection (once more on a fresh one if
/// the pooled one turns out closed), request out, response head in.
///
/// Opening a connection (TCP, and TLS's handshake: kilobytes of state) is
/// boxed, for the connections it opens only: inline, it would size this
/// future, and with it every connection's task for as long as it is open.
async fn attempt(
    ctx: &WorkerCtx,
    up: &Upstream,
    bufs: &mut Buffers,
    wait: Duration,
) -> Result<(UpStream, ResponseHead), GatewayError> {
    let pooled = ctx.pool.borrow_mut().take(&up.pool_key);
    let (mut conn, mut reused) = match pooled {
        Some(c) => (c, true),
        None => (Box::pin(connect(up, &ctx.dns)).await?, false),
    };
    loop {
        // A TLS connection's send is boxed (once per attempt on one): its
        // reads' and writes' state would size every plain stream's task.
        let sent = match &mut conn {
            UpStream::Plain(tcp) => send(ctx, tcp, up, bufs, wait).await,
            other => Box::pin(send(ctx, other, up, bufs, wait)).await,
        };
        match sent {
            Ok(head) => return Ok((conn, head)),
            Err(SendFail::Stale) if reused => {
                // A node's connections are all pooled: try its next one.
                let next = match up.addr {
                    crate::snapshot::UpstreamAddr::Reverse => ctx.pool.borrow_mut().take(&up.pool_key),
                    _ => None,
                };
                match next {
                    Some(c) => conn = c,
                    None => {
                        conn = Box::pin(connect(up, &ctx.dns)).await?;
                        reused = false;
                    }
                }
            }
            Err(SendFail::Stale) => {
                return Err(GatewayError::upstream(format!(
                    "Upstream `{}` closed the connection without answering.",
                    up.name
                )))
            }
            Err(SendFail::Fail(e)) => return Err(e),
        }
    }
}

/// Send the request on `conn` and read the response head (skipping interim
/// 1xx responses).
async fn send<U: AsyncReadRent + AsyncWriteRent>(
    ctx: &WorkerCtx,
    conn: &mut U,
    up: &Upstream,
    bufs: &mut Buffers,
    wait: Duration,
) -> Result<ResponseHead, SendFail> {
    let deadline = recent() + wait;
    let timed_out = || {
        SendFail::Fail(GatewayError::upstream_timeout(format!(
            "Upstream `{}` did not answer within {} ms.",
            up.name,
            wait.as_millis()
        )))
    };
    match write_all(conn, &mut bufs.up_w, deadline).await {
        Ok(()) => {}
        Err(IoFail::Timeout) => return Err(timed_out()),
        Err(IoFail::Io(_)) => return Err(SendFail::Stale),
    }
    let r = &mut bufs.up_r;
    r.clear();
    let limit = ctx.cfg.max_upstream_header_bytes;
    let mut scanned = 0;
    loop {
        if let Some(end) = find_head_end(r, scanned) {
            let head = parse_response(&r[..end], false).map_err(|_| {
                SendFail::Fail(GatewayError::upstream(format!("Upstream `{}` sent a malformed response.", up.name)))
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
            return Err(SendFail::Fail(GatewayError::upstream(format!(
                "Upstream `{}` sent a response head over {limit} bytes.",
                up.name
            ))));
        }
        scanned = r.len();
        match read_append(conn, r, 4096, deadline).await {
            Ok(0) | Err(IoFail::Io(_)) if r.is_empty() => return Err(SendFail::Stale),
            Ok(0) | Err(IoFail::Io(_)) => {
                return Err(SendFail::Fail(GatewayError::upstream(format!(
                    "Upstream `{}` closed the connection in the middle of its response head.",
                    up.name
                ))))
            }
            Ok(_) => {}
            Err(IoFail::Timeout) => return Err(timed_out()),
        }
    }
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
