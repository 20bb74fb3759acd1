//! Phase "account", on the worker: what the exchange learned while serving a
//! request (its `Tally`) becomes one [`UsageRecord`], counted in the
//! worker's metrics and queued for the database.

use crate::exchange::Exchange;
use crate::usage::scan::token_counts;
use crate::worker::WorkerCtx;
use monoio::time::Instant;
use std::time::Duration;
use switchboard_shared::usage::{cost_nanos_cached, Outcome, UsageRecord};

/// Unix milliseconds (the policy clock, so usage and quota periods agree).
pub(crate) fn unix_ms() -> u64 {
    crate::policy::now_unix_ms()
}

/// Build the record of a routed request, count it, and queue it. Returns
/// the tokens and cost (nano-USD) accounted.
pub(crate) fn account(ctx: &WorkerCtx, x: &Exchange<'_>) -> (u64, u64) {
    let (route, t) = (x.route, &x.tally);
    let target = t.target.and_then(|i| route.targets.get(i));
    let (prompt, completion, total, estimated) = if t.status / 100 == 2 && (target.is_some() || t.cache_hit) {
        token_counts(&t.reply, x.body, x.fields.stream)
    } else {
        (0, 0, 0, false)
    };
    let counted = t.status / 100 == 2 && (target.is_some() || t.cache_hit) && !estimated;
    let (cache_read, cache_write) = if counted {
        (t.reply.cache_read_tokens.unwrap_or(0), t.reply.cache_write_tokens.unwrap_or(0))
    } else {
        (0, 0)
    };
    let cost = target.map_or(0, |tg| {
        tg.prices
            .map_or(0, |(p, c)| cost_nanos_cached([prompt, completion, cache_read, cache_write], p, c, tg.cache_prices))
    });
    let session = x.head.session.and_then(|(s, e)| x.raw_head.get(s..e)).unwrap_or_default();
    let micros = |d: Duration| d.as_micros().min(u64::MAX as u128) as u64;
    let mut rec = UsageRecord {
        uid: String::from_utf8_lossy(ctx.next_request_id().as_bytes()).into_owned(),
        ts_ms: x.started_unix_ms,
        request_id: String::from_utf8_lossy(x.request_id()).into_owned(),
        org: x.key.org.to_string(),
        key_id: x.key.id.to_string(),
        model: x.fields.model.to_string(),
        route: route.name.to_string(),
        target: target.map(|tg| tg.upstream.name.to_string()).unwrap_or_default(),
        upstream_model: target.map(|tg| tg.upstream_model.to_string()).unwrap_or_default(),
        endpoint: x.head.endpoint.name().to_string(),
        stream: x.fields.stream,
        status: t.status,
        outcome: t.outcome,
        attempts: t.attempts,
        cache_hit: t.cache_hit,
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        // Checked printable ASCII where the head was parsed.
        session: String::from_utf8_lossy(session).into_owned(),
        estimated,
        cost_nanos: cost,
        latency_us: micros(x.started.elapsed()),
        ttft_us: t.first_byte.map_or(0, |f| micros(f.saturating_duration_since(x.started))),
        upstream_us: micros(t.upstream),
        clamped: false,
        injected: t.injected,
    };
    if rec.sanitize() {
        tracing::warn!(upstream = %rec.target, route = %rec.route, "the target reported usage past the documented maxima; clamped");
    }
    ctx.metrics.request(&rec);
    let spent = (rec.total_tokens, rec.cost_nanos);
    ctx.usage.borrow_mut().push(rec);
    spent
}

/// A request that never reached a route, for the access log only (when it is on).
pub(crate) fn unrouted(ctx: &WorkerCtx, started: Instant, started_unix_ms: u64, request_id: &[u8], status: u16) {
    if !ctx.access_log {
        return;
    }
    // Only what the access log shows; the rest stays empty.
    let rec = UsageRecord {
        ts_ms: started_unix_ms,
        request_id: String::from_utf8_lossy(request_id).into_owned(),
        status,
        outcome: if status < 400 { Outcome::Ok } else { Outcome::Error },
        latency_us: started.elapsed().as_micros() as u64,
        ..UsageRecord::default()
    };
    ctx.usage.borrow_mut().push(rec);
}
