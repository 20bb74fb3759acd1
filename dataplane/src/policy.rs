//! Phase "admit": rate limits and quotas, checked after the route is known
//! and before any upstream is tried.
//!
//! **Rate limits** (requests and tokens per minute, per key, per org and per
//! org and model) use GCRA: each limit is one `AtomicU64`, the theoretical
//! arrival time, moved forward by compare-and-swap — shared by every worker,
//! no lock. A limit of N per minute admits a burst of N and then one every
//! 60/N s: with requests hammering from every worker, exactly N pass in a
//! minute. Token limits reserve the prompt estimate plus `max_tokens` (or
//! `server.completion_reserve_tokens`) when a request starts, and reconcile
//! with the accounted usage when it ends.
//!
//! **Quotas** (spend and tokens per UTC day or calendar month) count accounted
//! usage plus what is held by requests in flight; the counters live in a
//! registry that outlives snapshots and is seeded from the database at start.

use crate::error::GatewayError;
use crate::fmt::push_dec;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use switchboard_shared::config::Period;

const WINDOW_NS: u64 = 60_000_000_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Monotonic nanoseconds since the process's policy epoch (plus a minute, so
/// an empty limit's arrival time of 0 is in the past).
fn mono_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + WINDOW_NS
}

static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Move the wall clock quotas and usage records read (tests: reach a period
/// boundary without waiting for it).
pub fn set_clock_offset_ms(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Unix milliseconds, as quotas and usage records see them.
pub fn now_unix_ms() -> u64 {
    let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    (real + CLOCK_OFFSET_MS.load(Ordering::Relaxed)).max(0) as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    fn short(self) -> &'static str {
        match self {
            Unit::Requests => "requests per minute (RPM)",
            Unit::Tokens => "tokens per minute (TPM)",
        }
    }
}

/// One rate limit: GCRA over a one-minute window.
pub struct Bucket {
    /// `key `k1``, `org `acme``, `org `acme` on model `m``.
    pub scope: Box<str>,
    pub unit: Unit,
    limit: AtomicU64,
    /// Theoretical arrival time, in [`mono_ns`] time.
    tat: AtomicU64,
}

impl Bucket {
    fn new(scope: String, unit: Unit, limit: u64) -> Bucket {
        Bucket { scope: scope.into(), unit, limit: AtomicU64::new(limit.max(1)), tat: AtomicU64::new(0) }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn interval(&self) -> u64 {
        WINDOW_NS / self.limit().max(1)
    }

    /// Take `cost` units now, or say how long until they would fit.
    fn take(&self, cost: u64, now: u64) -> Result<(), u64> {
        let add = cost.saturating_mul(self.interval());
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new = tat.max(now).saturating_add(add);
            if new - now > WINDOW_NS {
                return Err(new - now - WINDOW_NS);
            }
            match self.tat.compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(t) => tat = t,
            }
        }
    }

    /// Give back `cost` units taken (a request refused by another limit, or
    /// tokens reserved but not used).
    fn give_back(&self, cost: u64) {
        let sub = cost.saturating_mul(self.interval());
        let _ = self.tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_sub(sub)));
    }

    /// Take more after the fact (tokens used beyond the reservation); never refused.
    fn charge(&self, cost: u64, now: u64) {
        let add = cost.saturating_mul(self.interval());
        let _ = self.tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.max(now).saturating_add(add)));
    }

    /// Units that would pass now.
    pub fn remaining(&self) -> u64 {
        self.remaining_at(mono_ns())
    }

    fn remaining_at(&self, now: u64) -> u64 {
        let tat = self.tat.load(Ordering::Acquire).max(now);
        ((now + WINDOW_NS).saturating_sub(tat) / self.interval()).min(self.limit())
    }

    /// Nanoseconds until the limit is back to full.
    pub fn reset_ns(&self) -> u64 {
        self.tat.load(Ordering::Acquire).saturating_sub(mono_ns())
    }
}

/// One quota: spend and/or tokens per period.
pub struct QuotaState {
    pub scope: Box<str>,
    pub period: Period,
    /// Caps (u64::MAX: none), updatable in place when the config changes.
    max_nanos: AtomicU64,
    max_tokens: AtomicU64,
    /// Unix seconds the counted period started.
    start: AtomicU64,
    used_nanos: AtomicU64,
    used_tokens: AtomicU64,
    held_nanos: AtomicU64,
    held_tokens: AtomicU64,
    seeded: std::sync::atomic::AtomicBool,
}

fn period_bounds(period: Period, now_s: u64) -> (u64, u64) {
    let (a, b) = period.bounds(now_s as i64);
    (a.max(0) as u64, b.max(0) as u64)
}

impl QuotaState {
    fn new(scope: String, period: Period) -> QuotaState {
        QuotaState {
            scope: scope.into(),
            period,
            max_nanos: AtomicU64::new(u64::MAX),
            max_tokens: AtomicU64::new(u64::MAX),
            start: AtomicU64::new(0),
            used_nanos: AtomicU64::new(0),
            used_tokens: AtomicU64::new(0),
            held_nanos: AtomicU64::new(0),
            held_tokens: AtomicU64::new(0),
            seeded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn set_caps(&self, max_usd: Option<f64>, max_tokens: Option<u64>) {
        let nanos = max_usd.map_or(u64::MAX, |usd| (usd * 1e9).round().clamp(0.0, u64::MAX as f64) as u64);
        self.max_nanos.store(nanos, Ordering::Relaxed);
        self.max_tokens.store(max_tokens.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Start counting a new period if `now` left the counted one.
    fn roll(&self, now_s: u64) {
        let (start, _) = period_bounds(self.period, now_s);
        let seen = self.start.load(Ordering::Acquire);
        if seen != start
            && start > seen
            && self.start.compare_exchange(seen, start, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.used_nanos.store(0, Ordering::Release);
            self.used_tokens.store(0, Ordering::Release);
        }
    }

    /// Accounted totals for the period starting at `start` (from the database).
    pub fn seed(&self, start: u64, nanos: u64, tokens: u64) {
        self.start.store(start, Ordering::Release);
        self.used_nanos.store(nanos, Ordering::Release);
        self.used_tokens.store(tokens, Ordering::Release);
        self.seeded.store(true, Ordering::Release);
    }

    /// Whether the accounted totals were read back (or it has counted since).
    pub fn is_seeded(&self) -> bool {
        self.seeded.load(Ordering::Acquire)
    }

    /// (used + held, cap) in nano-USD and in tokens, for the current period.
    pub fn status(&self) -> QuotaStatus {
        self.roll(now_unix_ms() / 1000);
        let (start, end) = period_bounds(self.period, now_unix_ms() / 1000);
        let cap = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|v| *v != u64::MAX);
        QuotaStatus {
            period: self.period,
            period_start: start,
            resets_at: end,
            used_nanos: self.used_nanos.load(Ordering::Relaxed),
            held_nanos: self.held_nanos.load(Ordering::Relaxed),
            max_nanos: cap(&self.max_nanos),
            used_tokens: self.used_tokens.load(Ordering::Relaxed),
            held_tokens: self.held_tokens.load(Ordering::Relaxed),
            max_tokens: cap(&self.max_tokens),
        }
    }

    /// The caps: (spend in nano-USD, tokens); `None` where there is none.
    pub fn caps(&self) -> (Option<u64>, Option<u64>) {
        let cap = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|v| *v != u64::MAX);
        (cap(&self.max_nanos), cap(&self.max_tokens))
    }

    fn check(&self, now_s: u64) -> Result<(), GatewayError> {
        self.roll(now_s);
        let (_, end) = period_bounds(self.period, now_s);
        let resets = switchboard_shared::time::format_rfc3339(end as i64);
        let spent = self.used_nanos.load(Ordering::Acquire).saturating_add(self.held_nanos.load(Ordering::Acquire));
        let max_nanos = self.max_nanos.load(Ordering::Relaxed);
        if max_nanos != u64::MAX && spent >= max_nanos {
            return Err(GatewayError::quota_exceeded(format!(
                "The spend cap of ${:.2} per {} for {} is reached; it resets at {resets}.",
                max_nanos as f64 / 1e9,
                self.period.name(),
                self.scope
            )));
        }
        let used = self.used_tokens.load(Ordering::Acquire).saturating_add(self.held_tokens.load(Ordering::Acquire));
        let max_tokens = self.max_tokens.load(Ordering::Relaxed);
        if max_tokens != u64::MAX && used >= max_tokens {
            return Err(GatewayError::quota_exceeded(format!(
                "The cap of {max_tokens} tokens per {} for {} is reached; it resets at {resets}.",
                self.period.name(),
                self.scope
            )));
        }
        Ok(())
    }
}

/// A quota's state, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuotaStatus {
    pub period: Period,
    pub period_start: u64,
    pub resets_at: u64,
    pub used_nanos: u64,
    pub held_nanos: u64,
    pub max_nanos: Option<u64>,
    pub used_tokens: u64,
    pub held_tokens: u64,
    pub max_tokens: Option<u64>,
}

/// Limit and quota state by scope, kept across snapshots (a reload does not
/// reset anyone's limits), like upstream health.
#[derive(Default)]
pub struct PolicyRegistry {
    buckets: Mutex<FxHashMap<String, Arc<Bucket>>>,
    quotas: Mutex<FxHashMap<String, Arc<QuotaState>>>,
}

impl PolicyRegistry {
    /// The bucket of `scope` (created on first use), with its limit set.
    pub fn bucket(&self, scope: Scope<'_>, unit: Unit, limit: u64) -> Arc<Bucket> {
        let id = format!("{scope}/{unit:?}");
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = m.entry(id).or_insert_with(|| Arc::new(Bucket::new(scope.to_string(), unit, limit))).clone();
        b.limit.store(limit.max(1), Ordering::Relaxed);
        b
    }

    /// The quota of `scope` for `period` (created on first use), caps set.
    pub fn quota(
        &self,
        scope: Scope<'_>,
        period: Period,
        max_usd: Option<f64>,
        max_tokens: Option<u64>,
    ) -> Arc<QuotaState> {
        let q = self.quota_state(scope, period);
        q.set_caps(max_usd, max_tokens);
        q
    }

    /// The quota state of `scope` for `period`, caps untouched (seeding).
    pub fn quota_state(&self, scope: Scope<'_>, period: Period) -> Arc<QuotaState> {
        let id = format!("{scope}/{}", period.name());
        let mut m = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id).or_insert_with(|| Arc::new(QuotaState::new(scope.to_string(), period))).clone()
    }

    /// A bucket, if it exists.
    pub fn find_bucket(&self, scope: Scope<'_>, unit: Unit) -> Option<Arc<Bucket>> {
        let m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&format!("{scope}/{unit:?}")).cloned()
    }
}

/// Whose limit or quota: a key's, an org's, or an org's on one model. Its
/// text (`key `ID``, `org `NAME``, `org `NAME` on model `M``) names it in
/// messages and in the admin API's reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Key(&'a str),
    Org(&'a str),
    OrgModel(&'a str, &'a str),
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Key(id) => write!(f, "key `{id}`"),
            Scope::Org(org) => write!(f, "org `{org}`"),
            Scope::OrgModel(org, model) => write!(f, "org `{org}` on model `{model}`"),
        }
    }
}

/// An org's (requests, tokens) limits on one model.
pub type ModelBuckets = (Option<Arc<Bucket>>, Option<Arc<Bucket>>);

/// A key's limits and quotas, compiled into the snapshot.
#[derive(Default)]
pub struct KeyPolicy {
    /// Request limits: the key's, the org's.
    pub requests: Vec<Arc<Bucket>>,
    pub tokens: Vec<Arc<Bucket>>,
    pub quotas: Vec<Arc<QuotaState>>,
    /// The org's limits per route name.
    pub per_model: FxHashMap<Box<str>, ModelBuckets>,
}

impl KeyPolicy {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.tokens.is_empty() && self.quotas.is_empty() && self.per_model.is_empty()
    }
}

/// The limits of one kind that apply to a request: the key's, the org's,
/// the org's on this model (no allocation).
#[derive(Clone, Copy, Default)]
struct Applicable<'a> {
    list: [Option<&'a Bucket>; 3],
}

impl<'a> Applicable<'a> {
    fn new(own: &'a [Arc<Bucket>], model: Option<&'a Bucket>) -> Self {
        let mut list = [None; 3];
        for (slot, b) in list.iter_mut().zip(own.iter().map(|b| &**b).chain(model)) {
            *slot = Some(b);
        }
        Applicable { list }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Bucket> + '_ {
        self.list.iter().flatten().copied()
    }

    fn is_empty(&self) -> bool {
        self.list[0].is_none()
    }
}

/// What admitting a request took, to reconcile when it ends.
pub struct Admission<'a> {
    tokens: Applicable<'a>,
    quotas: &'a [Arc<QuotaState>],
    reserved_tokens: u64,
    held_nanos: u64,
    /// `x-ratelimit-*` header lines for the response.
    pub headers: Vec<u8>,
}

/// The request's reservation: prompt estimate + completion allowance.
pub struct Ask {
    pub prompt_estimate: u64,
    pub max_tokens: Option<u64>,
}

/// Check every limit and quota that applies; take what the request needs.
/// On refusal: 429 with the message naming the limit, and the headers
/// (`retry-after` and the `x-ratelimit-*` lines) to send with it — no
/// `retry-after` for a reservation over a whole limit, which never passes.
///
/// `route` is the route's name (for the org's per-model limits) and
/// `price` its dearest price in USD per million tokens (quota holds).
pub fn admit<'a>(
    policy: &'a KeyPolicy,
    route: &str,
    price: f64,
    ask: impl FnOnce() -> Ask,
    default_reserve: u64,
) -> Result<Admission<'a>, (GatewayError, Vec<u8>)> {
    let now = mono_ns();
    let now_s = now_unix_ms() / 1000;
    for q in &policy.quotas {
        q.check(now_s).map_err(|e| (e, Vec::new()))?;
    }
    let model = if policy.per_model.is_empty() { None } else { policy.per_model.get(route) };
    let requests = Applicable::new(&policy.requests, model.and_then(|m| m.0.as_deref()));
    let tokens = Applicable::new(&policy.tokens, model.and_then(|m| m.1.as_deref()));
    let refuse = |b: &Bucket, wait: u64, requests: &Applicable<'_>, tokens: &Applicable<'_>| {
        let secs = wait.div_ceil(1_000_000_000).max(1);
        let e = GatewayError::rate_limited(format!(
            "Rate limit reached for {} on {}: limit {}. Retry in {secs} s.",
            b.unit.short(),
            b.scope,
            b.limit()
        ));
        let mut h = headers(requests, tokens, mono_ns());
        h.extend_from_slice(b"retry-after: ");
        push_dec(&mut h, secs);
        h.extend_from_slice(b"\r\n");
        (e, h)
    };
    for (i, b) in requests.iter().enumerate() {
        if let Err(wait) = b.take(1, now) {
            for taken in requests.iter().take(i) {
                taken.give_back(1);
            }
            return Err(refuse(b, wait, &requests, &tokens));
        }
    }
    let mut reserved = 0;
    let mut held_nanos = 0;
    if !tokens.is_empty() || !policy.quotas.is_empty() {
        let a = ask();
        // Both come from outside (`max_tokens` may be 2^64 - 1): saturate.
        reserved = a.prompt_estimate.saturating_add(a.max_tokens.unwrap_or(default_reserve));
        if let Some(b) = tokens.iter().find(|b| reserved > b.limit()) {
            // More than the whole minute's budget: waiting cannot help, so no Retry-After.
            for taken in requests.iter() {
                taken.give_back(1);
            }
            let e = GatewayError::rate_limited(format!(
                "Request too large for {} on {}: it reserves {reserved} tokens (the prompt estimate plus \
                 `max_tokens`) and the limit is {}, so it can never pass. Lower `max_tokens` or shorten the prompt.",
                b.unit.short(),
                b.scope,
                b.limit()
            ));
            return Err((e, headers(&requests, &tokens, mono_ns())));
        }
        for (i, b) in tokens.iter().enumerate() {
            if let Err(wait) = b.take(reserved, now) {
                for taken in tokens.iter().take(i) {
                    taken.give_back(reserved);
                }
                for taken in requests.iter() {
                    taken.give_back(1);
                }
                return Err(refuse(b, wait, &requests, &tokens));
            }
        }
        // Hold the reservation against quotas, at the route's dearest price.
        held_nanos = switchboard_shared::usage::cost_nanos(reserved, 0, price, 0.0);
        for q in &policy.quotas {
            saturating_add(&q.held_tokens, reserved);
            saturating_add(&q.held_nanos, held_nanos);
        }
    }
    let headers = headers(&requests, &tokens, now);
    Ok(Admission { tokens, quotas: &policy.quotas, reserved_tokens: reserved, held_nanos, headers })
}

/// The request ended: charge what it really used.
pub fn settle(a: &Admission<'_>, tokens: u64, nanos: u64) {
    let now = mono_ns();
    for b in a.tokens.iter() {
        if tokens > a.reserved_tokens {
            b.charge(tokens - a.reserved_tokens, now);
        } else {
            b.give_back(a.reserved_tokens - tokens);
        }
    }
    let now_s = now_unix_ms() / 1000;
    for q in a.quotas {
        q.roll(now_s);
        let _ = q
            .held_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(a.reserved_tokens)));
        let _ =
            q.held_nanos.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(a.held_nanos)));
        saturating_add(&q.used_tokens, tokens);
        saturating_add(&q.used_nanos, nanos);
    }
}

/// Add to a counter, stopping at `u64::MAX` rather than wrapping.
fn saturating_add(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_add(n)));
}

/// OpenAI's rate-limit headers for the tightest request and token limits.
fn headers(requests: &Applicable<'_>, tokens: &Applicable<'_>, now: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(192);
    for (unit, list) in [("requests", requests), ("tokens", tokens)] {
        let Some((b, remaining)) = list.iter().map(|b| (b, b.remaining_at(now))).min_by_key(|x| x.1) else {
            continue;
        };
        h.extend_from_slice(b"x-ratelimit-limit-");
        h.extend_from_slice(unit.as_bytes());
        h.extend_from_slice(b": ");
        push_dec(&mut h, b.limit());
        h.extend_from_slice(b"\r\nx-ratelimit-remaining-");
        h.extend_from_slice(unit.as_bytes());
        h.extend_from_slice(b": ");
        push_dec(&mut h, remaining);
        h.extend_from_slice(b"\r\nx-ratelimit-reset-");
        h.extend_from_slice(unit.as_bytes());
        h.extend_from_slice(b": ");
        push_duration(&mut h, b.tat.load(Ordering::Acquire).saturating_sub(now));
        h.extend_from_slice(b"\r\n");
    }
    h
}

/// OpenAI's reset format: `1s`, `6m0s`, `120ms`.
pub(crate) fn push_duration(h: &mut Vec<u8>, ns: u64) {
    let ms = ns / 1_000_000;
    if ms < 1000 {
        push_dec(h, ms);
        h.extend_from_slice(b"ms");
        return;
    }
    let s = ms.div_ceil(1000);
    if s >= 60 {
        push_dec(h, s / 60);
        h.push(b'm');
    }
    push_dec(h, s % 60);
    h.push(b's');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_a_burst_of_n_then_one_per_interval() {
        let b = Bucket::new("key `k`".into(), Unit::Requests, 60);
        let now = mono_ns();
        for i in 0..60 {
            assert!(b.take(1, now).is_ok(), "request {i}");
        }
        let wait = b.take(1, now).unwrap_err();
        assert!(wait > 0 && wait <= 1_000_000_000, "{wait}");
        // One interval (1 s) later, one more.
        assert!(b.take(1, now + 1_000_000_000).is_ok());
        assert!(b.take(1, now + 1_000_000_000).is_err());
        b.give_back(1);
        assert!(b.take(1, now + 1_000_000_000).is_ok());
    }

    #[test]
    fn a_cost_past_the_limit_saturates_and_never_passes() {
        let b = Bucket::new("key `k`".into(), Unit::Tokens, 3000);
        let now = mono_ns();
        for cost in [u64::MAX, u64::MAX - 2, 100_000, 3001] {
            assert!(b.take(cost, now).is_err(), "{cost}");
        }
        assert_eq!(b.remaining_at(now), 3000, "nothing was taken");
        let q = QuotaState::new("key `k`".into(), Period::Day);
        saturating_add(&q.held_tokens, u64::MAX);
        saturating_add(&q.held_tokens, 5);
        assert_eq!(q.held_tokens.load(Ordering::Relaxed), u64::MAX);
    }

    #[test]
    fn token_costs_and_reconcile() {
        let b = Bucket::new("key `k`".into(), Unit::Tokens, 1000);
        let now = mono_ns();
        assert!(b.take(600, now).is_ok());
        assert!(b.take(600, now).is_err(), "1200 > 1000");
        b.give_back(500); // used 100 of the 600 reserved
        assert!(b.take(900, now).is_ok());
        assert!(b.remaining() <= 1);
    }

    #[test]
    fn quotas_roll_over_at_the_period_boundary() {
        let q = QuotaState::new("key `k`".into(), Period::Month);
        q.set_caps(None, Some(100));
        let nov = switchboard_shared::time::days_from_civil(2026, 11, 30) as u64 * 86_400;
        q.seed(period_bounds(Period::Month, nov).0, 0, 100);
        assert!(q.check(nov).is_err());
        let msg = q.check(nov).unwrap_err().message.to_string();
        assert!(msg.contains("100 tokens per month") && msg.contains("2026-12-01T00:00:00Z"), "{msg}");
        assert!(q.check(nov + 86_400).is_ok(), "December starts empty");
    }

    #[test]
    fn reset_durations_read_like_openai() {
        let d = |ns| {
            let mut v = Vec::new();
            push_duration(&mut v, ns);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(d(120_000_000), "120ms");
        assert_eq!(d(1_000_000_000), "1s");
        assert_eq!(d(59_000_000_001), "59s");
        assert_eq!(d(360_000_000_000), "6m0s");
    }
}
