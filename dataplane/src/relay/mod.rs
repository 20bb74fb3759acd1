//! Phase "relay": the response head, re-written for the client, then the
//! body as it arrives, through a chain of small body filters built once per
//! response from what the route and the request need ([`Chain`]). Nothing is
//! buffered whole (but a whole generation's answer, held up to
//! [`HOLD_MAX_BYTES`]).
//!
//! The chain, in order, over each read from the upstream:
//!
//! | filter | type | on when |
//! |---|---|---|
//! | deframe | [`deframe::Deframer`] | always |
//! | usage scan | [`crate::usage::scan::UsageScan`] (in the tally) | 2xx responses |
//! | cache capture | [`capture::Capture`] | a 200 non-stream the cache will store |
//! | stream gate | [`crate::sse::StreamGate`] | a 200 event stream: held until its first token |
//! | translate | `Translator` ([`crate::translate::stream`]) | a 2xx event stream from a target of the other API |
//! | stream filter (usage-chunk strip, end of stream) | [`crate::usage::scan::StreamFilter`] | a 2xx event stream the gateway re-frames |
//! | `[DONE]` check | [`crate::sse::StreamTail`] | a 200 event stream that is not a generation |
//! | hold | [`hold::Hold`] | a 200 whole chat or completion answer; any whole answer of the other API (translated when whole) |
//! | frame | [`frame::ClientBody`] | always |
//!
//! Filters before "translate" read the upstream's bytes (its API), those
//! after it the client's.
//!
//! Until the first byte goes out (the head is held until the first body
//! bytes, a stream's until its first token) a failure can still go to
//! another target ([`Relayed::Retry`]) or become a clean 502; after it, a
//! failure ends the response (an SSE error event for streams).

pub(crate) mod capture;
pub(crate) mod deframe;
pub(crate) mod frame;
pub(crate) mod hold;

pub use hold::HOLD_MAX_BYTES;

use crate::error::GatewayError;
use crate::exchange::{Buffers, Exchange, CLIENT_CLOSED_STATUS};
use crate::health::now_ms;
use crate::http::head::{BodyFraming, Endpoint, ResponseHead};
use crate::http::io::{write_all, IoFail, PeerClosed};
use crate::snapshot::Upstream;
use crate::sse::{Gate, StreamGate, StreamTail};
use crate::translate::{response, stream, RequestFacts, ResponseCtx, Translation};
use crate::upstream::RelayConn;
use crate::usage::scan::{token_counts, OwedUsage, StreamEnd, StreamFilter};
use crate::worker::WorkerCtx;
use capture::Capture;
use deframe::Deframer;
use frame::{render_head, ClientBody};
use hold::{with_owed_usage, Held, Hold};
use monoio::io::AsyncWriteRent;
use monoio::time::{recent, Instant};
use switchboard_shared::usage::Outcome;

/// What relaying a response came to.
pub(crate) enum Relayed {
    /// The whole response reached the client.
    Done { keep_alive: bool },
    /// The response was cut off after it started, or the client left.
    Aborted,
    /// Nothing reached the client (the stream failed, or ended, before its
    /// first token): another attempt may serve it.
    Retry(GatewayError),
}

/// Which route, target and attempt served a response (sent as headers).
pub(crate) struct Served<'a> {
    pub route: &'a str,
    pub target: &'a str,
    pub attempts: u32,
}

/// The body filters one response passes through (see the module's table).
/// Plain fields, `None` where a filter is off: a passthrough response pays
/// for nothing it does not use.
struct Chain {
    deframe: Deframer,
    scan: bool,
    capture: Option<Capture>,
    gate: Option<StreamGate>,
    filter: Option<StreamFilter>,
    tail: Option<StreamTail>,
    hold: Option<Hold>,
    frame: ClientBody,
    /// A chat or completion (its end is checked by the stream filter).
    generation: bool,
    /// A Messages response: errors the gateway writes take Anthropic's shape,
    /// a stream ends with `message_stop` rather than `[DONE]`.
    anthropic: bool,
    /// The upstream speaks the other API: its stream, event by event
    /// (boxed: a passthrough stream's relay does not carry its state)…
    translate: Option<Box<Translator>>,
    /// …or its whole answer (or error), held, at its end.
    whole: Option<Translation>,
}

/// A stream from a target of the other API, into the client's.
enum Translator {
    ToMessages(stream::ChatToMessages),
    ToChat(stream::MessagesToChat),
}

impl Translator {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Translator::ToMessages(t) => t.feed(input, out),
            Translator::ToChat(t) => t.feed(input, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> stream::StreamEnd {
        match self {
            Translator::ToMessages(t) => t.finish(out),
            Translator::ToChat(t) => t.finish(out),
        }
    }

    fn upstream_ended(&self) -> bool {
        match self {
            Translator::ToMessages(t) => t.upstream_ended(),
            Translator::ToChat(t) => t.upstream_ended(),
        }
    }
}

/// The most one read of a response body asks for (and its first read, but a stream's).
const BODY_READ: usize = 4096;
/// A stream's first read of its body after the head: events are small.
const STREAM_READ_START: usize = 512;

/// The most of a whole answer from a target of the other API held to
/// translate it (16 MiB); a larger one is the upstream's failure.
pub const TRANSLATE_MAX_BYTES: usize = 16 * 1024 * 1024;

impl Chain {
    fn new(ctx: &WorkerCtx, head: &ResponseHead, x: &Exchange<'_>) -> Chain {
        let framing = head.framing;
        let success = (200..300).contains(&head.status);
        // A token count's `input_tokens` is an answer, not tokens spent.
        let counted = success && *x.endpoint() != Endpoint::CountTokens;
        let generation = x.generation();
        let ok_stream = head.event_stream && head.status == 200;
        let translating = x.translation.as_ref();
        let translate_stream = head.event_stream && success;
        let translate = translating.filter(|_| translate_stream).map(|(way, facts)| {
            let rctx = response_ctx(x, facts);
            Box::new(match way {
                Translation::MessagesToChat => Translator::ToMessages(stream::ChatToMessages::new(&rctx)),
                Translation::ChatToMessages => Translator::ToChat(stream::MessagesToChat::new(&rctx)),
            })
        });
        let whole = translating.filter(|_| !translate_stream && framing != BodyFraming::None).map(|(way, _)| *way);
        // A translated stream's length is not the upstream's.
        let client_framing = if translate.is_some() { BodyFraming::Chunked } else { framing };
        Chain {
            deframe: Deframer::new(framing),
            scan: counted,
            capture: (x.capture.is_some() && head.status == 200 && !head.event_stream)
                .then(|| Capture::new(ctx.cache.max_entry())),
            // A stream is held back (head included) until its first content
            // token, so a stream that fails before it can still go to another target.
            gate: ok_stream.then(StreamGate::default),
            // Only where the body is re-framed anyway: a fixed length must pass as is.
            filter: (head.event_stream && success && !matches!(client_framing, BodyFraming::Length(_)))
                .then(|| StreamFilter::new(x.usage_edit.is_some(), generation)),
            tail: (ok_stream && !generation).then(StreamTail::default),
            hold: if whole.is_some() {
                Some(Hold::with_limit(TRANSLATE_MAX_BYTES))
            } else {
                (generation && !head.event_stream && head.status == 200 && framing != BodyFraming::None)
                    .then(Hold::default)
            },
            frame: ClientBody::for_upstream(client_framing, x.head.http10),
            generation,
            anthropic: x.endpoint().is_anthropic(),
            translate,
            whole,
        }
    }
}

/// Relay the response: head first, then the body as it arrives, through the
/// chain; a clean response returns the upstream connection to the pool.
#[allow(clippy::too_many_arguments)]
///
/// A plain function returning the relay's future: an `async fn` keeps each
/// by-value argument twice in its state (as passed, and moved into the
/// body), and this future is what every open stream holds.
// Not an `async fn` on purpose (see above): it would keep its arguments twice.
#[allow(clippy::manual_async_fn)]
pub(crate) fn relay<'a, 'x, S: AsyncWriteRent + PeerClosed, U: RelayConn>(
    ctx: &'a WorkerCtx,
    client: &'a mut S,
    mut conn: U,
    mut head: ResponseHead,
    bufs: &'a mut Buffers,
    x: &'a mut Exchange<'x>,
    up: &'a Upstream,
    served: Served<'a>,
) -> impl std::future::Future<Output = Relayed> + use<'a, 'x, S, U> {
    async move {
        let success = (200..300).contains(&head.status);
        if let Some((_, facts)) = x.translation.as_ref().filter(|_| success) {
            if facts.stream != head.event_stream {
                // The client's API says what its answer is; an upstream that
                // answers a stream request with JSON (or the reverse) cannot be translated.
                let (asked, got) = if facts.stream { ("a stream", "JSON") } else { ("JSON", "a stream") };
                return Relayed::Retry(GatewayError::upstream(format!(
                    "Upstream `{}` answered {got} to a request for {asked}.",
                    up.name
                )));
            }
        }
        let mut chain = Chain::new(ctx, &head, x);
        if let Some(Translator::ToMessages(t)) = chain.translate.as_deref_mut() {
            t.require_finish(up.require_finish_reason);
        }
        let framing = head.framing;
        let close_delimited = chain.frame == ClientBody::CloseDelimited;
        let keep_alive = x.keep_alive && !close_delimited;

        let out = &mut bufs.out;
        render_head(out, &head, x, &served, chain.frame, keep_alive);

        let r = &mut bufs.up_r;
        let mut pos = head.head_len;
        // Multishot receive for an event stream on io_uring (upstream/multishot.rs).
        let mut reader = crate::upstream::UpstreamReader::new(head.event_stream, &ctx.metrics);
        let mut filtered = Vec::new();
        let mut translated = Vec::new();
        // The upstream ended its (translated) stream with an error event of its own.
        let mut upstream_error = false;
        // The response went out whole with a length of its own (a held body).
        let mut sent_whole = false;
        // Whether any byte went to the client. Until then a failure can still go
        // to another target or become a clean 502.
        let mut sent = false;
        let before = if chain.gate.is_some() { "the first token" } else { "its response started" };
        let retry = |why: String| {
            Relayed::Retry(GatewayError::upstream(format!("Upstream `{}` failed before {before}: {why}.", up.name)))
        };
        let client_chunked = chain.frame == ClientBody::Chunked;
        // How much one read of the body asks for. A stream's events are small and
        // far apart: its reads start at `STREAM_READ_START` in a buffer of that
        // size, and double when a read fills them (up to `BODY_READ`), so an open
        // stream does not hold the response head's buffer.
        let mut read_size = BODY_READ;
        let mut small_reads = head.event_stream;
        loop {
            if out.capacity() == 0 {
                *out = ctx.lend_buffer();
            }
            let payload = match chain.deframe.payload(r, pos) {
                Ok(p) => p,
                Err(e) if !sent => return retry(format!("{e}")),
                Err(e) => {
                    return Box::pin(fail_mid_stream(ctx, client, out, &head, client_chunked, up, x, &e.to_string()))
                        .await;
                }
            };
            let done = chain.deframe.done;
            let bytes = &r[payload];
            if chain.scan {
                x.tally.reply.feed(bytes);
                if let Some(c) = chain.capture.as_mut() {
                    c.feed(bytes);
                }
            }
            // From here on, the client's API.
            let mut truncated = false;
            if let Some(t) = chain.translate.as_mut() {
                translated.clear();
                t.feed(bytes, &mut translated);
                match done.then(|| t.finish(&mut translated)) {
                    Some(stream::StreamEnd::Errored) => {
                        x.tally.outcome = Outcome::UpstreamCut;
                        // Its error event, translated, ends the stream: no second one.
                        upstream_error = true;
                    }
                    Some(stream::StreamEnd::Truncated) => truncated = true,
                    _ => {}
                }
            }
            let client_bytes: &[u8] = if chain.translate.is_some() { &translated } else { bytes };
            // The gate reads the client's side: an upstream event the translation
            // could not read is its error event, and fails over like any other.
            if let Some(g) = chain.gate.as_mut() {
                match g.feed(client_bytes) {
                    Gate::Hold if done => return retry("the stream ended before its first token".into()),
                    Gate::Hold => {}
                    Gate::Release => chain.gate = None,
                    Gate::Fail(why) => return retry(why),
                }
            }
            if truncated {
                // `[DONE]` without a finish reason: cut short, never passed off as complete.
                tracing::warn!(upstream = %up.name, "stream ended without a finish_reason: truncated");
                up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                if !sent {
                    return Relayed::Retry(GatewayError::upstream_truncated(&up.name));
                }
                x.tally.outcome = Outcome::UpstreamTruncated;
                upstream_error = true;
                translated.extend_from_slice(
                    &GatewayError::upstream_truncated(&up.name).dialect(chain.anthropic).to_sse_event(),
                );
            }
            let bytes: &[u8] = if chain.translate.is_some() { &translated } else { bytes };
            if let Some(t) = chain.tail.as_mut() {
                t.push(bytes);
            }
            // The error event that ends a stream which did not finish.
            let mut unfinished: Option<GatewayError> = None;
            let payload: &[u8] = match chain.filter.as_mut() {
                Some(f) => {
                    filtered.clear();
                    f.filter(bytes, &mut filtered);
                    if done {
                        f.finish(&mut filtered);
                        // A translated stream the upstream ended with an error has no more to say.
                        if chain.generation && !upstream_error {
                            match end_of_generation(f, &mut filtered, x, up) {
                                GenerationEnd::Complete => {}
                                GenerationEnd::RetryTruncated if !sent => {
                                    // Nothing reached the client: another target may serve it.
                                    return Relayed::Retry(GatewayError::upstream_truncated(&up.name));
                                }
                                GenerationEnd::RetryTruncated => {
                                    x.tally.outcome = Outcome::UpstreamTruncated;
                                    // One error event: the upstream's own, if it sent one.
                                    unfinished = (!f.error_seen).then(|| GatewayError::upstream_truncated(&up.name));
                                }
                                GenerationEnd::Unfinished => {
                                    x.tally.outcome = Outcome::UpstreamCut;
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
                None => bytes,
            };
            if done && chain.tail.as_ref().is_some_and(|t| !t.ends_with_done()) {
                if !chain.anthropic {
                    // A stream that stops without `[DONE]` is not a clean finish.
                    unfinished = Some(GatewayError::upstream(format!(
                        "Upstream `{}` ended the stream without [DONE].",
                        up.name
                    )));
                } else if chain.tail.as_ref().is_some_and(|t| !t.ends_with_message_stop()) {
                    // A Messages stream ends with `message_stop`; without it, an `event: error`.
                    x.tally.outcome = Outcome::UpstreamCut;
                    unfinished = (!chain.filter.as_ref().is_some_and(|f| f.error_seen)).then(|| {
                        GatewayError::upstream(format!("Upstream `{}` ended the stream without message_stop.", up.name))
                    });
                }
            }
            if upstream_error {
                unfinished = None;
            }
            // Held: keep the bytes back; past the bound, let them go as they came.
            let mut released: Option<Vec<u8>> = None;
            if let Some(h) = chain.hold.as_mut() {
                match h.feed(payload, done) {
                    Held::Holding => {}
                    Held::Whole(body) => {
                        let body = match chain.whole {
                            Some(way)
                                if way == Translation::MessagesToChat
                                    && success
                                    && up.require_finish_reason
                                    && !x.tally.reply.finish_seen =>
                            {
                                // `finish_reason: null`: cut short, never passed off as complete.
                                up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
                                return Relayed::Retry(GatewayError::upstream_truncated(&up.name));
                            }
                            Some(way) => match translate_whole(way, head.status, body, x) {
                                Ok(body) => {
                                    head.content_type = Some(b"application/json".to_vec());
                                    body
                                }
                                Err(why) => return retry(why),
                            },
                            None => with_owed_usage(body, &x.tally.reply, x.body),
                        };
                        out.clear();
                        render_head(out, &head, x, &served, ClientBody::Length(body.len() as u64), x.keep_alive);
                        out.extend_from_slice(&body);
                        if let Some(c) = chain.capture.as_mut() {
                            c.replace(&body);
                        }
                        chain.hold = None;
                        sent_whole = true;
                    }
                    Held::Overflow(_) if chain.whole.is_some() => {
                        return retry(format!("an answer over {TRANSLATE_MAX_BYTES} bytes is too large to translate"));
                    }
                    Held::Overflow(all) => {
                        released = Some(all);
                        chain.hold = None;
                    }
                }
            }
            let payload: &[u8] = match &released {
                Some(all) => all,
                None => payload,
            };
            if chain.hold.is_some() || sent_whole {
                // Nothing to frame now: the held body goes out whole, above.
            } else {
                chain.frame.push(out, payload);
                if done {
                    let event = unfinished.map(|e| e.dialect(chain.anthropic).to_sse_event());
                    chain.frame.end(out, event.as_deref());
                }
            }
            if done {
                if let (Some((key, ttl)), Some(body)) = (x.capture, chain.capture.as_mut().and_then(Capture::take)) {
                    ctx.cache.put(key, &body, ttl);
                    // The shared tier (Redis), on routes that ask for it.
                    if x.route.cache.shared {
                        crate::cluster::cache::put(&x.key.org, &key, &body, ttl);
                    }
                }
            }
            // Hold the head until there is body to send with it (or the body is whole).
            let something = sent || done || !payload.is_empty();
            if chain.gate.is_none() && chain.hold.is_none() && !out.is_empty() && something {
                if write_all(client, out, recent() + ctx.write_timeout).await.is_err() {
                    // The client went away: dropping `conn` closes the upstream side too.
                    x.tally.outcome = Outcome::ClientClosed;
                    return Relayed::Aborted;
                }
                x.tally.first_byte.get_or_insert_with(Instant::now);
                sent = true;
                out.clear();
            }
            if done {
                break;
            }
            r.clear();
            pos = 0;
            if small_reads {
                small_reads = false;
                read_size = STREAM_READ_START;
                ctx.give_back(std::mem::replace(r, Vec::with_capacity(STREAM_READ_START)));
            }
            if sent && out.is_empty() {
                // Nothing to write until the upstream sends more: the buffer goes
                // back to the worker while this response waits.
                ctx.give_back(std::mem::take(out));
            }
            let deadline = recent() + up.read_timeout;
            let read = if sent {
                reader.read_append(&mut conn, r, read_size, deadline).await
            } else {
                let watched = monoio::select! {
                    read = reader.read_append(&mut conn, r, read_size, deadline) => Some(read),
                    // Boxed (once per response that waits before its first
                    // byte): inline, the watch would size the relay's future for
                    // the whole of every stream.
                    _ = Box::pin(client.peer_closed()) => None,
                };
                let Some(read) = watched else {
                    tracing::debug!(upstream = %up.name, "client left before the first byte; upstream request cancelled");
                    x.tally.status = CLIENT_CLOSED_STATUS;
                    x.tally.outcome = Outcome::ClientClosed;
                    return Relayed::Aborted;
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
            if matches!(read, Ok(n) if n >= read_size) {
                read_size = read_size.saturating_mul(2).min(BODY_READ);
            }
            let after_done = chain.filter.as_ref().is_some_and(|f| f.done_seen)
                || chain.translate.as_deref().is_some_and(Translator::upstream_ended);
            let why = match read {
                Ok(0) if framing == BodyFraming::Close => {
                    chain.deframe.eof = true;
                    continue;
                }
                // `[DONE]` then a close (or a reset): a normal end, not a failure.
                Ok(0) | Err(IoFail::Io(_)) if after_done => {
                    chain.deframe.gone_after_done = true;
                    chain.deframe.surplus = true;
                    continue;
                }
                Ok(0) => "the upstream closed the connection".to_string(),
                Ok(_) => continue,
                Err(IoFail::Timeout) => format!("the upstream sent nothing for {} ms", up.read_timeout.as_millis()),
                Err(IoFail::Io(e)) => e.to_string(),
            };
            return Box::pin(fail_mid_stream(ctx, client, out, &head, client_chunked, up, x, &why)).await;
        }
        // A multishot receive still armed is stopped first: the pooled
        // connection's next response must not land in it.
        if head.keep_alive && !chain.deframe.surplus && framing != BodyFraming::Close && reader.finish().await {
            ctx.pool.borrow_mut().put(&up.pool_key, conn.into_upstream(), up.pool_max_idle, up.pool_idle_timeout);
        }
        if sent_whole {
            return Relayed::Done { keep_alive: x.keep_alive };
        }
        if close_delimited {
            return Relayed::Aborted;
        }
        Relayed::Done { keep_alive }
    }
}

/// What a response translation needs of its request.
fn response_ctx<'a>(x: &'a Exchange<'_>, facts: &'a RequestFacts) -> ResponseCtx<'a> {
    ResponseCtx {
        model: &x.fields.model,
        request_id: std::str::from_utf8(x.request_id()).unwrap_or("request"),
        created_s: x.started_unix_ms / 1000,
        facts,
    }
}

/// A whole answer (or error) from a target of the other API, in the
/// client's API; `Err` says why it could not be read.
fn translate_whole(way: Translation, status: u16, body: Vec<u8>, x: &Exchange<'_>) -> Result<Vec<u8>, String> {
    let Some((_, facts)) = &x.translation else { return Ok(body) };
    let rctx = response_ctx(x, facts);
    let mut out = Vec::with_capacity(body.len().saturating_add(256));
    let success = (200..300).contains(&status);
    match way {
        Translation::MessagesToChat if success => {
            // A node that reports no usage gets the gateway's estimate first.
            let body = with_owed_usage(body, &x.tally.reply, x.body);
            response::chat_to_messages(&body, &rctx, &mut out).map_err(|m| m.0)?;
        }
        Translation::ChatToMessages if success => {
            response::messages_to_chat(&body, &rctx, &mut out).map_err(|m| m.0)?;
        }
        Translation::MessagesToChat => response::error_to_messages(status, &body, &mut out),
        Translation::ChatToMessages => response::error_to_chat(status, &body, &mut out),
    }
    Ok(out)
}

/// How a generation's stream ended, for the relay.
enum GenerationEnd {
    Complete,
    /// No `finish_reason` (where the upstream must send one): truncated.
    RetryTruncated,
    /// No `[DONE]`.
    Unfinished,
}

/// The end of a chat or completion stream: the usage chunk the client asked
/// for if the upstream sent none (the gateway's estimate), then `[DONE]` for
/// a complete generation, written by the stream filter into `out`.
fn end_of_generation(f: &mut StreamFilter, out: &mut Vec<u8>, x: &Exchange<'_>, up: &Upstream) -> GenerationEnd {
    let owed = (x.fields.include_usage == Some(true) && !x.tally.reply.reported()).then(|| {
        let (prompt_tokens, completion_tokens, total_tokens, _) = token_counts(&x.tally.reply, x.body, true);
        OwedUsage {
            id: x.request_id(),
            object: if *x.endpoint() == Endpoint::Completions { "text_completion" } else { "chat.completion.chunk" },
            model: &x.fields.model,
            created_s: crate::policy::now_unix_ms() / 1000,
            prompt_tokens,
            completion_tokens,
            total_tokens,
        }
    });
    match f.end(out, x.tally.reply.finish_seen, up.require_finish_reason, owed) {
        StreamEnd::Complete => GenerationEnd::Complete,
        StreamEnd::Truncated => {
            tracing::warn!(upstream = %up.name, "stream ended without a finish_reason: truncated");
            up.health.failure(now_ms(), up.eject_after_failures, up.eject_for);
            GenerationEnd::RetryTruncated
        }
        StreamEnd::Unfinished => GenerationEnd::Unfinished,
    }
}

/// The upstream failed after the response started. A stream gets an SSE
/// `error` event (which OpenAI's SDKs raise) and a proper end; any other body
/// is cut off, so the client sees a truncated response, never a short one
/// passed off as whole.
///
/// Boxed where it is called (once per response that fails after it started):
/// inline, its write's state would size every open stream's relay.
#[allow(clippy::too_many_arguments)]
async fn fail_mid_stream<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    client: &mut S,
    out: &mut Vec<u8>,
    head: &ResponseHead,
    client_chunked: bool,
    up: &Upstream,
    x: &mut Exchange<'_>,
    why: &str,
) -> Relayed {
    tracing::warn!(upstream = %up.name, reason = %why, "upstream failed mid-response");
    x.tally.outcome = Outcome::UpstreamCut;
    if client_chunked && head.event_stream {
        let err = GatewayError::upstream(format!("Upstream `{}` failed mid-stream: {why}.", up.name))
            .dialect(x.endpoint().is_anthropic());
        out.clear();
        ClientBody::Chunked.end(out, Some(&err.to_sse_event()));
        let _ = write_all(client, out, recent() + ctx.write_timeout).await;
    }
    Relayed::Aborted
}
