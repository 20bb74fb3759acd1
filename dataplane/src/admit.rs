//! Phase "admit": the key's, its org's and the org's per-model rate limits
//! and quotas ([`crate::policy`]), then the response cache on routes that
//! have one ([`crate::cache`]): a hit is answered here, a miss or bypass says
//! so in a header, and an eligible request is marked for capture.

use crate::cluster::limits::{Decision, Taken};
use crate::error::GatewayError;
use crate::exchange::{Buffers, Exchange, Tally};
use crate::http::head::{CacheControl, Endpoint};
use crate::policy::{self, Ask};
use crate::request::include_usage_edit;
use crate::respond::{send_whole, Reply};
use crate::usage::scan::estimate_prompt;
use crate::worker::WorkerCtx;
use monoio::io::AsyncWriteRent;
use monoio::time::Instant;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_shared::config::CacheMode;
use switchboard_shared::usage::Outcome as UsageOutcome;

/// What admission decided.
pub(crate) enum Admitted {
    /// Refused (a limit or quota): answer with this error and the exchange's headers.
    Refused(GatewayError),
    /// Answered from the cache; `written` is false if the client went away.
    Answered { written: bool },
    /// Go on to the upstreams.
    Forward,
}

pub(crate) async fn admit<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    bufs: &mut Buffers,
    x: &mut Exchange<'_>,
) -> Admitted {
    if !x.key.policy.is_empty() {
        let (body, max_tokens) = (x.body, x.fields.max_tokens);
        let ask = || Ask { prompt_estimate: estimate_prompt(body), max_tokens };
        let reserve = ctx.cfg.completion_reserve_tokens;
        // With `[cluster]`, Redis decides for every data plane at once
        // (`crate::cluster::limits`); else, or with Redis down and
        // `on_redis_down = "local"`, this process's own limits.
        let decided = match crate::cluster::current() {
            None => Decision::Local,
            Some(_) => crate::cluster::limits::admit(&x.key.org, &x.key.policy, x.route, ask, reserve).await,
        };
        let admitted = match decided {
            Decision::Done(r) => r,
            Decision::Local => {
                let price = x.route.dearest_price();
                policy::admit(&x.key.policy, &x.route.name, price, ask, reserve)
                    .map(|mut a| (std::mem::take(&mut a.headers), a))
                    .map(|(headers, a)| (Taken::Local(a), headers))
            }
        };
        match admitted {
            Ok((taken, headers)) => {
                x.headers = headers;
                x.admission = Some(taken);
            }
            Err((e, headers)) => {
                ctx.metrics.refused(e.kind);
                x.tally = Tally { status: e.status, outcome: UsageOutcome::Error, ..Tally::default() };
                x.headers = headers;
                return Admitted::Refused(e);
            }
        }
    }
    if !x.route.cache.is_off() {
        if let Some(stored) = cache_lookup(ctx, x).await {
            return serve_hit(ctx, io, bufs, x, &stored).await;
        }
    }
    // Streams always ask the upstream for usage; the relay strips it if the
    // client did not ask.
    let asks_usage = matches!(x.head.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
        && x.fields.stream
        && x.fields.include_usage != Some(true);
    if asks_usage {
        x.usage_edit = include_usage_edit(x.body, x.fields);
    }
    Admitted::Forward
}

/// The cache's verdict: a stored answer (a hit), or none — then the state
/// (`miss`, `bypass`) goes in a header and an eligible non-stream is marked
/// for capture.
async fn cache_lookup(ctx: &WorkerCtx, x: &mut Exchange<'_>) -> Option<std::sync::Arc<crate::cache::Entry>> {
    let cache = &ctx.cache;
    // A stored answer is replayed to a stream as OpenAI chunks: an Anthropic
    // stream is never answered from the cache (its whole answers are).
    let replayable = !(x.head.endpoint.is_anthropic() && x.fields.stream);
    let eligible = replayable
        && (x.route.cache.mode == CacheMode::Always
            || x.fields.temperature_zero
            || matches!(x.head.endpoint, Endpoint::Embeddings));
    let key = (eligible && x.head.cache_control != CacheControl::NoStore)
        .then(|| crate::cache::key(&x.key.org, &x.route.name, x.head.endpoint.name(), x.body))
        .flatten();
    let state = match key {
        None => "bypass",
        Some(k) => {
            // Streams are replayed from stored answers, not stored.
            if !x.fields.stream {
                x.capture = Some((k, Duration::from_millis(x.route.cache.ttl_ms)));
            }
            match x.head.cache_control {
                // A test request's fault must reach the attempt loop.
                _ if x.fault.is_some() => "bypass",
                CacheControl::NoCache => "bypass",
                _ => match match cache.get(&k) {
                    // After a local miss, the shared tier (Redis), on routes that ask for it.
                    None if x.route.cache.shared => crate::cluster::cache::get(&x.key.org, &k, cache).await,
                    local => local,
                } {
                    Some(hit) => {
                        cache.hits.fetch_add(1, Ordering::Relaxed);
                        return Some(hit);
                    }
                    None => "miss",
                },
            }
        }
    };
    let counter = if state == "miss" { &cache.misses } else { &cache.bypasses };
    counter.fetch_add(1, Ordering::Relaxed);
    x.headers.extend_from_slice(b"x-switchboard-cache: ");
    x.headers.extend_from_slice(state.as_bytes());
    x.headers.extend_from_slice(b"\r\n");
    None
}

/// Answer from the response cache: the stored body, or for a stream its SSE
/// replay; accounted as a cache hit (tokens from the stored `usage`, no cost).
async fn serve_hit<S: AsyncWriteRent>(
    ctx: &WorkerCtx,
    io: &mut S,
    bufs: &mut Buffers,
    x: &mut Exchange<'_>,
    hit: &crate::cache::Entry,
) -> Admitted {
    let stored = &hit.body[..];
    let mut headers = std::mem::take(&mut x.headers);
    headers.extend_from_slice(b"x-switchboard-cache: hit\r\nx-switchboard-route: ");
    headers.extend_from_slice(x.route.name.as_bytes());
    headers.extend_from_slice(b"\r\n");
    let replay;
    let (content_type, body): (&str, &[u8]) = if x.fields.stream {
        match crate::cache::replay_as_sse(stored, x.fields.include_usage == Some(true)) {
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
    let reply = Reply { keep_alive: x.keep_alive, http10: x.head.http10, head_only: false };
    let written = send_whole(ctx, io, &mut bufs.out, 200, content_type, body, x.rid, reply, &headers).await;
    x.tally = Tally { status: 200, cache_hit: true, first_byte: Some(Instant::now()), ..Tally::default() };
    x.tally.reply.feed(stored);
    if !written {
        x.tally.outcome = UsageOutcome::ClientClosed;
    }
    Admitted::Answered { written }
}
