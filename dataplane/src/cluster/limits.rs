//! A request's admission through Redis: every limit (GCRA, as in
//! [`crate::policy`]) and quota that applies, checked and taken in one
//! script call (`admit.lua`), so a refusal takes nothing anywhere; and its
//! reconcile when it ends (`settle.lua`, sent without waiting, pipelined with
//! the worker's other commands on the same connection as the org's admissions,
//! so the next request on that worker sees it).

use super::client::{worker_client, Fail};
use super::sync::{encode_command, Frame};
use super::Cluster;
use crate::error::GatewayError;
use crate::fmt::push_dec;
use crate::policy::{self, now_unix_ms, Admission, Ask, Bucket, KeyPolicy, QuotaState, Unit};
use crate::snapshot::Route;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use switchboard_shared::cluster::OnRedisDown;
use switchboard_shared::limits::CLUSTER_MAX_COUNTER;

/// Microseconds per unit of a limit of `limit` per minute.
fn interval_us(limit: u64) -> f64 {
    60_000_000.0 / limit.max(1) as f64
}

/// The hash tag every key of an org's requests shares (braces would end it).
fn tag(org: &str) -> String {
    org.replace(['{', '}'], "_")
}

fn bucket_key(tag: &str, b: &Bucket) -> String {
    let unit = if b.unit == Unit::Requests { "r" } else { "t" };
    format!("sb:{{{tag}}}:rl:{}:{unit}", b.scope)
}

/// A quota's counter for the period containing `now_s`; its expiry (a day
/// after the period ends).
pub fn quota_key(tag_: &str, scope: &str, period: switchboard_shared::config::Period, now_s: u64) -> (String, u64) {
    let (start, end) = period.bounds(now_s as i64);
    (format!("sb:{{{}}}:q:{scope}:{}:{start}", tag(tag_), period.name()), end.max(0) as u64 + 86_400)
}

/// What the request holds in Redis, to reconcile when it ends.
pub struct Held {
    cluster: Arc<Cluster>,
    shard: usize,
    /// Token buckets: key and interval.
    tokens: Vec<(String, f64)>,
    /// Quota counters: key and expiry.
    quotas: Vec<(String, u64)>,
    reserved: u64,
    held_nanos: u64,
}

/// What admitting a request took, to settle when it ends: this process's
/// own limits, what it holds in Redis, or nothing (admitted without limits).
pub enum Taken<'a> {
    Local(Admission<'a>),
    Cluster(Box<Held>),
    Unlimited,
}

impl Taken<'_> {
    /// The request ended: charge what it really used (reconciled in Redis
    /// for a cluster admission).
    pub fn settle(&self, tokens: u64, nanos: u64) {
        match self {
            Taken::Local(a) => policy::settle(a, tokens, nanos),
            Taken::Cluster(h) => settle(h, tokens, nanos),
            Taken::Unlimited => {}
        }
    }
}

/// How the request is to be admitted.
pub enum Decision {
    /// No `[cluster]`, or Redis down with `on_redis_down = "local"`: this process's own limits.
    Local,
    /// Redis admitted it (what it holds there, and the `x-ratelimit-*` header
    /// lines), admitted it without limits, or refused it (the error and its
    /// header lines).
    Done(Result<(Taken<'static>, Vec<u8>), (GatewayError, Vec<u8>)>),
}

fn shard_of(tag: &str) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(tag.as_bytes());
    h.finish() as usize
}

/// What to do when Redis cannot decide.
fn fallback(c: &Cluster) -> Decision {
    c.stats.fallback.fetch_add(1, Ordering::Relaxed);
    match c.on_down() {
        OnRedisDown::Local => Decision::Local,
        OnRedisDown::Allow => Decision::Done(Ok((Taken::Unlimited, Vec::new()))),
        OnRedisDown::Deny => Decision::Done(Err((GatewayError::limits_unavailable(), b"retry-after: 1\r\n".to_vec()))),
    }
}

/// Admit a request of a key with limits or quotas.
pub async fn admit(
    org: &str,
    policy: &KeyPolicy,
    route: &Route,
    ask: impl FnOnce() -> Ask,
    default_reserve: u64,
) -> Decision {
    let Some(c) = super::current() else { return Decision::Local };
    if !c.is_up() {
        return fallback(&c);
    }
    let model = if policy.per_model.is_empty() { None } else { policy.per_model.get(&*route.name) };
    let requests: Vec<&Bucket> =
        policy.requests.iter().map(|b| &**b).chain(model.and_then(|m| m.0.as_deref())).collect();
    let tokens: Vec<&Bucket> = policy.tokens.iter().map(|b| &**b).chain(model.and_then(|m| m.1.as_deref())).collect();
    let quotas: &[Arc<QuotaState>] = &policy.quotas;
    let mut reserved = 0;
    let mut held_nanos = 0;
    if !tokens.is_empty() || !quotas.is_empty() {
        let a = ask();
        reserved = a.prompt_estimate.saturating_add(a.max_tokens.unwrap_or(default_reserve));
        if let Some(b) = tokens.iter().find(|b| reserved > b.limit()) {
            let e = GatewayError::rate_limited(format!(
                "Request too large for {} on {}: it reserves {reserved} tokens (the prompt estimate plus \
                 `max_tokens`) and the limit is {}, so it can never pass. Lower `max_tokens` or shorten the prompt.",
                unit_name(b.unit),
                b.scope,
                b.limit()
            ));
            return Decision::Done(Err((e, Vec::new())));
        }
        held_nanos = switchboard_shared::usage::cost_nanos(reserved, 0, route.dearest_price(), 0.0);
    }
    // Counters past what Lua's doubles hold exactly: not for Redis.
    let reserved_c = reserved.min(CLUSTER_MAX_COUNTER);
    let held_c = held_nanos.min(CLUSTER_MAX_COUNTER);
    let tag = tag(org);
    let now_s = now_unix_ms() / 1000;
    let qkeys: Vec<(String, u64)> = quotas.iter().map(|q| quota_key(&tag, &q.scope, q.period, now_s)).collect();
    let buckets: Vec<(&Bucket, u64)> =
        requests.iter().map(|b| (*b, 1)).chain(tokens.iter().map(|b| (*b, reserved_c))).collect();
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(4 + 3 * buckets.len() + 6 * qkeys.len());
    args.push(b"EVALSHA".to_vec());
    args.push(c.admit_script.sha.as_bytes().to_vec());
    args.push((buckets.len() + qkeys.len()).to_string().into_bytes());
    for (b, _) in &buckets {
        args.push(bucket_key(&tag, b).into_bytes());
    }
    for (k, _) in &qkeys {
        args.push(k.clone().into_bytes());
    }
    args.push(buckets.len().to_string().into_bytes());
    args.push(qkeys.len().to_string().into_bytes());
    for (b, cost) in &buckets {
        args.push(format!("{:.6}", interval_us(b.limit())).into_bytes());
        args.push(cost.to_string().into_bytes());
    }
    for (q, (_, exp)) in quotas.iter().zip(&qkeys) {
        let (max_n, max_t) = q.caps();
        let cap = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.min(CLUSTER_MAX_COUNTER).to_string());
        args.push(cap(max_n).into_bytes());
        args.push(cap(max_t).into_bytes());
        args.push(reserved_c.to_string().into_bytes());
        args.push(held_c.to_string().into_bytes());
        args.push(exp.to_string().into_bytes());
    }
    let client = worker_client(&c);
    let shard = shard_of(&tag);
    let reply = match eval(&c, &client, shard, &mut args, c.admit_script.body).await {
        Ok(r) => r,
        Err(_) => return fallback(&c),
    };
    let Some(v) = ints(&reply) else {
        c.failure(false, &format!("unexpected reply to the admission script: {reply:?}"));
        return fallback(&c);
    };
    let (code, index, wait_us) = (v[0], v[1].max(0) as usize, v[2].max(0) as u64);
    // Per bucket: (remaining, reset in us).
    let state: Vec<(u64, u64)> =
        v[3..].chunks(2).map(|p| (p[0].max(0) as u64, p.get(1).map_or(0, |r| (*r).max(0) as u64))).collect();
    if state.len() != buckets.len() {
        c.failure(false, "the admission script answered for a different number of limits");
        return fallback(&c);
    }
    let headers = headers(&buckets, &state, requests.len());
    match code {
        0 => {
            c.stats.admitted.fetch_add(1, Ordering::Relaxed);
            let held = Held {
                cluster: c.clone(),
                shard,
                tokens: tokens.iter().map(|b| (bucket_key(&tag, b), interval_us(b.limit()))).collect(),
                quotas: qkeys,
                reserved: reserved_c,
                held_nanos: held_c,
            };
            Decision::Done(Ok((Taken::Cluster(Box::new(held)), headers)))
        }
        1 if index >= 1 && index <= buckets.len() => {
            c.stats.refused.fetch_add(1, Ordering::Relaxed);
            let b = buckets[index - 1].0;
            let secs = wait_us.div_ceil(1_000_000).max(1);
            let e = GatewayError::rate_limited(format!(
                "Rate limit reached for {} on {}: limit {}. Retry in {secs} s.",
                unit_name(b.unit),
                b.scope,
                b.limit()
            ));
            let mut h = headers;
            h.extend_from_slice(b"retry-after: ");
            push_dec(&mut h, secs);
            h.extend_from_slice(b"\r\n");
            Decision::Done(Err((e, h)))
        }
        2 | 3 if index >= 1 && index <= quotas.len() => {
            c.stats.refused.fetch_add(1, Ordering::Relaxed);
            let q = &quotas[index - 1];
            let (max_n, max_t) = q.caps();
            let (_, end) = q.period.bounds(now_s as i64);
            let resets = switchboard_shared::time::format_rfc3339(end);
            let msg = if code == 2 {
                format!(
                    "The spend cap of ${:.2} per {} for {} is reached; it resets at {resets}.",
                    max_n.unwrap_or(0) as f64 / 1e9,
                    q.period.name(),
                    q.scope
                )
            } else {
                format!(
                    "The cap of {} tokens per {} for {} is reached; it resets at {resets}.",
                    max_t.unwrap_or(0),
                    q.period.name(),
                    q.scope
                )
            };
            Decision::Done(Err((GatewayError::quota_exceeded(msg), Vec::new())))
        }
        4 => {
            // The admin has not loaded this quota's usage into Redis yet (a
            // new period, or a Redis that came back empty).
            c.stats.unseeded.fetch_add(1, Ordering::Relaxed);
            fallback(&c)
        }
        _ => {
            c.failure(false, "unexpected answer from the admission script");
            fallback(&c)
        }
    }
}

fn unit_name(u: Unit) -> &'static str {
    match u {
        Unit::Requests => "requests per minute (RPM)",
        Unit::Tokens => "tokens per minute (TPM)",
    }
}

/// EVALSHA, and EVAL with the body when Redis does not have the script
/// (restarted, or flushed). Counts failures towards "down".
async fn eval(
    c: &Cluster,
    client: &super::client::Client,
    shard: usize,
    args: &mut [Vec<u8>],
    body: &'static str,
) -> Result<Frame, Fail> {
    let mut cmd = Vec::with_capacity(256);
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    encode_command(&mut cmd, &refs).map_err(Fail::Io)?;
    let mut reply = client.call(shard, &cmd).await;
    if let Ok(Frame::Error(e)) = &reply {
        if e.starts_with("NOSCRIPT") {
            // Redis lost its scripts (restarted or flushed): load the
            // reconcile script too, ahead of this worker's next reconciles.
            let mut load = Vec::new();
            if encode_command(&mut load, &[b"SCRIPT", b"LOAD", c.settle_script.body.as_bytes()]).is_ok() {
                client.send_now(shard, &load);
            }
            args[0] = b"EVAL".to_vec();
            args[1] = body.as_bytes().to_vec();
            cmd.clear();
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            encode_command(&mut cmd, &refs).map_err(Fail::Io)?;
            reply = client.call(shard, &cmd).await;
        }
    }
    match &reply {
        Ok(Frame::Error(e)) => {
            let e = format!("Redis: {e}");
            c.failure(false, &e);
            Err(Fail::Io(e))
        }
        Ok(_) => {
            c.success();
            reply
        }
        Err(f) => {
            c.failure(matches!(f, Fail::Timeout), &f.to_string());
            reply
        }
    }
}

fn ints(f: &Frame) -> Option<Vec<i64>> {
    let Frame::Array(items) = f else { return None };
    let v: Option<Vec<i64>> = items.iter().map(|i| if let Frame::Integer(n) = i { Some(*n) } else { None }).collect();
    v.filter(|v| v.len() >= 3 && (v.len() - 3) % 2 == 0)
}

/// OpenAI's headers for the tightest request and token limit, from Redis's numbers.
fn headers(buckets: &[(&Bucket, u64)], state: &[(u64, u64)], n_requests: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(192);
    for (unit, range) in [("requests", 0..n_requests), ("tokens", n_requests..buckets.len())] {
        let Some(i) = range.min_by_key(|i| state[*i].0) else { continue };
        let (b, (remaining, reset_us)) = (buckets[i].0, state[i]);
        h.extend_from_slice(b"x-ratelimit-limit-");
        h.extend_from_slice(unit.as_bytes());
        h.extend_from_slice(b": ");
        push_dec(&mut h, b.limit());
        h.extend_from_slice(b"\r\nx-ratelimit-remaining-");
        h.extend_from_slice(unit.as_bytes());
        h.extend_from_slice(b": ");
        push_dec(&mut h, remaining.min(b.limit()));
        h.extend_from_slice(b"\r\nx-ratelimit-reset-");
        h.extend_from_slice(unit.as_bytes());
        h.extend_from_slice(b": ");
        crate::policy::push_duration(&mut h, reset_us.saturating_mul(1000));
        h.extend_from_slice(b"\r\n");
    }
    h
}

/// The request ended: return unused tokens, turn quota holds into usage.
/// Sent without waiting for the reply (pipelined with the worker's next commands).
pub fn settle(h: &Held, used_tokens: u64, used_nanos: u64) {
    let c = &h.cluster;
    c.stats.reconciles.fetch_add(1, Ordering::Relaxed);
    let used_tokens = used_tokens.min(CLUSTER_MAX_COUNTER);
    let used_nanos = used_nanos.min(CLUSTER_MAX_COUNTER);
    let delta = used_tokens as i64 - h.reserved as i64;
    if (delta == 0 || h.tokens.is_empty()) && h.quotas.is_empty() {
        return;
    }
    let mut args: Vec<Vec<u8>> = vec![
        b"EVALSHA".to_vec(),
        c.settle_script.sha.as_bytes().to_vec(),
        (h.tokens.len() + h.quotas.len()).to_string().into_bytes(),
    ];
    for (k, _) in &h.tokens {
        args.push(k.clone().into_bytes());
    }
    for (k, _) in &h.quotas {
        args.push(k.clone().into_bytes());
    }
    args.push(h.tokens.len().to_string().into_bytes());
    args.push(h.quotas.len().to_string().into_bytes());
    for (_, interval) in &h.tokens {
        args.push(format!("{interval:.6}").into_bytes());
        args.push(delta.to_string().into_bytes());
    }
    for (_, exp) in &h.quotas {
        for v in [h.reserved, h.held_nanos, used_tokens, used_nanos, *exp] {
            args.push(v.to_string().into_bytes());
        }
    }
    // The prober loads the script when Redis comes (back) up, and an
    // admission that meets NOSCRIPT loads it ahead of this on the same connection.
    let mut cmd = Vec::with_capacity(256);
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    if encode_command(&mut cmd, &refs).is_ok() {
        worker_client(c).send(h.shard, &cmd);
    }
}
