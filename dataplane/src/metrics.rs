//! Prometheus metrics (`GET /metrics`).
//!
//! Each worker counts into its own slot: a mutex only that worker takes per
//! request (uncontended, so no cache line bounces between cores) and that a
//! scrape takes briefly, worker by worker. Latency goes into hdrhistograms
//! (2 significant digits, 1 µs to 1 hour) and is exported as summaries with
//! p50 / p90 / p99 / p99.9.

use crate::usage::pipeline::UsageStats;
use hdrhistogram::Histogram;
use rustc_hash::{FxHashMap, FxHasher};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use switchboard_shared::usage::UsageRecord;

/// Counters for one (model, route, target, status).
#[derive(Clone, Default)]
struct Series {
    model: Box<str>,
    route: Box<str>,
    target: Box<str>,
    status: u16,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_nanos: u64,
    estimated: u64,
}

/// The labels of a request series: model, route, target, status.
type SeriesKey = (Box<str>, Box<str>, Box<str>, u16);
/// Per (model, route, target): prompt tokens, completion tokens, cost, estimated requests.
type TargetTotals<'a> = FxHashMap<(&'a str, &'a str, &'a str), (u64, u64, u64, u64)>;

struct Latency {
    total: Histogram<u64>,
    ttft: Histogram<u64>,
    upstream: Histogram<u64>,
    overhead: Histogram<u64>,
}

const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 2 significant digits: about 12 KiB, fixed.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_US, 2).expect("constant histogram bounds are valid")
}

impl Default for Latency {
    fn default() -> Self {
        Latency { total: histogram(), ttft: histogram(), upstream: histogram(), overhead: histogram() }
    }
}

#[derive(Default)]
struct WorkerMetrics {
    /// By a hash of the labels; collisions share the bucket.
    series: FxHashMap<u64, Vec<Series>>,
    /// Every response the worker wrote, by status (routed or not).
    responses: FxHashMap<u16, u64>,
    latency: Latency,
    /// Idle upstream connections by pool, as of the last sweep.
    pools: Vec<(Box<str>, u64)>,
}

/// One worker's metrics.
#[derive(Default)]
pub struct WorkerSlot {
    m: Mutex<WorkerMetrics>,
    pub inflight: AtomicU64,
    pub connections: AtomicU64,
    /// Requests refused by a rate limit, and by a quota.
    pub rate_limited: AtomicU64,
    pub quota_refused: AtomicU64,
    /// Panics caught on this worker (each closed one connection).
    pub panics: AtomicU64,
    /// Event-stream bodies read with a multishot receive (io_uring), and
    /// those of them that went back to plain reads part-way (the worker's
    /// receive ring ran dry, or the kernel ended the receive).
    pub multishot_receives: AtomicU64,
    pub multishot_fallbacks: AtomicU64,
    /// The worker thread died (a panic outside any connection): it serves
    /// nothing any more, `/healthz` answers 503 and the process stops.
    pub down: std::sync::atomic::AtomicBool,
}

impl WorkerSlot {
    /// Count a request the policy refused (`kind`: the error's type).
    pub fn refused(&self, kind: &str) {
        let c = if kind == "insufficient_quota" { &self.quota_refused } else { &self.rate_limited };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count the response to a request that never reached a route.
    pub fn response(&self, status: u16) {
        if let Ok(mut m) = self.m.lock() {
            *m.responses.entry(status).or_default() += 1;
        }
    }

    /// Responses counted so far.
    pub fn answered(&self) -> u64 {
        self.m.lock().map_or(0, |m| m.responses.values().sum())
    }

    /// Count a routed request (and its response).
    pub fn request(&self, r: &UsageRecord) {
        let Ok(mut m) = self.m.lock() else { return };
        *m.responses.entry(r.status).or_default() += 1;
        let mut h = FxHasher::default();
        (r.model.as_str(), r.route.as_str(), r.target.as_str(), r.status).hash(&mut h);
        let bucket = m.series.entry(h.finish()).or_default();
        let i = match bucket.iter().position(|s| {
            s.status == r.status && *s.model == *r.model && *s.route == *r.route && *s.target == *r.target
        }) {
            Some(i) => i,
            None => {
                bucket.push(Series {
                    model: r.model.as_str().into(),
                    route: r.route.as_str().into(),
                    target: r.target.as_str().into(),
                    status: r.status,
                    ..Series::default()
                });
                bucket.len() - 1
            }
        };
        let s = &mut bucket[i];
        s.requests += 1;
        s.prompt_tokens = s.prompt_tokens.saturating_add(r.prompt_tokens);
        s.completion_tokens = s.completion_tokens.saturating_add(r.completion_tokens);
        s.cost_nanos = s.cost_nanos.saturating_add(r.cost_nanos);
        s.estimated += r.estimated as u64;
        let l = &mut m.latency;
        let clamp = |v: u64| v.clamp(1, MAX_US);
        let _ = l.total.record(clamp(r.latency_us));
        if r.ttft_us > 0 {
            let _ = l.ttft.record(clamp(r.ttft_us));
        }
        if r.attempts > 0 {
            let _ = l.upstream.record(clamp(r.upstream_us));
        }
        let _ = l.overhead.record(clamp(r.latency_us.saturating_sub(r.upstream_us)));
    }

    /// Idle upstream connections per pool (from the worker's pool sweep).
    pub fn set_pools(&self, pools: Vec<(Box<str>, u64)>) {
        if let Ok(mut m) = self.m.lock() {
            m.pools = pools;
        }
    }
}

/// Every worker's slot, and the usage pipeline's counters.
pub struct Metrics {
    pub slots: Vec<Arc<WorkerSlot>>,
    pub usage: Option<Arc<UsageStats>>,
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    pub snapshot_version: AtomicU64,
}

impl Metrics {
    pub fn new(workers: usize, usage: Option<Arc<UsageStats>>) -> Metrics {
        Metrics {
            slots: (0..workers).map(|_| Arc::new(WorkerSlot::default())).collect(),
            usage,
            cache: None,
            snapshot_version: AtomicU64::new(0),
        }
    }

    /// Workers that are not serving (their thread died).
    pub fn workers_down(&self) -> usize {
        self.slots.iter().filter(|s| s.down.load(Ordering::Relaxed)).count()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut series: FxHashMap<SeriesKey, Series> = FxHashMap::default();
        let mut responses: FxHashMap<u16, u64> = FxHashMap::default();
        let mut latency = Latency::default();
        let mut pools: FxHashMap<Box<str>, u64> = FxHashMap::default();
        let (mut inflight, mut connections, mut limited, mut quota) = (0, 0, 0, 0);
        for slot in &self.slots {
            inflight += slot.inflight.load(Ordering::Relaxed);
            connections += slot.connections.load(Ordering::Relaxed);
            limited += slot.rate_limited.load(Ordering::Relaxed);
            quota += slot.quota_refused.load(Ordering::Relaxed);
            let Ok(m) = slot.m.lock() else { continue };
            for s in m.series.values().flatten() {
                let e =
                    series.entry((s.model.clone(), s.route.clone(), s.target.clone(), s.status)).or_insert_with(|| {
                        Series {
                            model: s.model.clone(),
                            route: s.route.clone(),
                            target: s.target.clone(),
                            status: s.status,
                            ..Series::default()
                        }
                    });
                e.requests += s.requests;
                e.prompt_tokens = e.prompt_tokens.saturating_add(s.prompt_tokens);
                e.completion_tokens = e.completion_tokens.saturating_add(s.completion_tokens);
                e.cost_nanos = e.cost_nanos.saturating_add(s.cost_nanos);
                e.estimated += s.estimated;
            }
            for (status, n) in &m.responses {
                *responses.entry(*status).or_default() += n;
            }
            let _ = latency.total.add(&m.latency.total);
            let _ = latency.ttft.add(&m.latency.ttft);
            let _ = latency.upstream.add(&m.latency.upstream);
            let _ = latency.overhead.add(&m.latency.overhead);
            for (pool, n) in &m.pools {
                *pools.entry(pool.clone()).or_default() += n;
            }
        }
        let mut rows: Vec<&Series> = series.values().collect();
        rows.sort_by(|a, b| (&a.route, &a.target, &a.model, a.status).cmp(&(&b.route, &b.target, &b.model, b.status)));

        let mut o = String::with_capacity(4096);
        help(
            &mut o,
            "switchboard_requests_total",
            "counter",
            "Requests that reached a route, by model, route, target and status.",
        );
        for s in &rows {
            let l = target_labels(&s.model, &s.route, &s.target);
            let _ = writeln!(o, "switchboard_requests_total{{{l},status=\"{}\"}} {}", s.status, s.requests);
        }
        help(
            &mut o,
            "switchboard_tokens_total",
            "counter",
            "Tokens accounted, by model, route, target and kind (prompt, completion).",
        );
        // Tokens and cost summed over status.
        let mut by_target: TargetTotals<'_> = FxHashMap::default();
        for s in &rows {
            let e = by_target.entry((&s.model, &s.route, &s.target)).or_default();
            e.0 = e.0.saturating_add(s.prompt_tokens);
            e.1 = e.1.saturating_add(s.completion_tokens);
            e.2 = e.2.saturating_add(s.cost_nanos);
            e.3 += s.estimated;
        }
        let mut targets: Vec<_> = by_target.into_iter().collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        // Each target's label set, rendered once for the three families below.
        let targets: Vec<(String, (u64, u64, u64, u64))> =
            targets.into_iter().map(|((model, route, target), v)| (target_labels(model, route, target), v)).collect();
        for (l, (p, c, _, _)) in &targets {
            let _ = writeln!(o, "switchboard_tokens_total{{{l},kind=\"prompt\"}} {p}");
            let _ = writeln!(o, "switchboard_tokens_total{{{l},kind=\"completion\"}} {c}");
        }
        help(&mut o, "switchboard_cost_usd_total", "counter", "Cost from the targets' price tables, in USD.");
        for (l, (_, _, nanos, _)) in &targets {
            let _ = writeln!(o, "switchboard_cost_usd_total{{{l}}} {}", *nanos as f64 / 1e9);
        }
        help(
            &mut o,
            "switchboard_estimated_requests_total",
            "counter",
            "Requests whose token counts were estimated (the upstream gave no usage).",
        );
        for (l, (_, _, _, est)) in &targets {
            let _ = writeln!(o, "switchboard_estimated_requests_total{{{l}}} {est}");
        }
        help(&mut o, "switchboard_responses_total", "counter", "Every response written, routed or not, by status.");
        let mut statuses: Vec<_> = responses.into_iter().collect();
        statuses.sort();
        for (status, n) in statuses {
            let _ = writeln!(o, "switchboard_responses_total{{status=\"{status}\"}} {n}");
        }
        summary(
            &mut o,
            "switchboard_request_duration_seconds",
            "Request head to the end of the response.",
            &latency.total,
        );
        summary(
            &mut o,
            "switchboard_time_to_first_token_seconds",
            "Request head to the first token (streams) or response head.",
            &latency.ttft,
        );
        summary(
            &mut o,
            "switchboard_upstream_duration_seconds",
            "Time spent waiting on upstreams, all attempts.",
            &latency.upstream,
        );
        summary(
            &mut o,
            "switchboard_gateway_overhead_seconds",
            "Request time not spent waiting on an upstream.",
            &latency.overhead,
        );
        help(&mut o, "switchboard_rate_limited_total", "counter", "Requests refused by a rate limit (429).");
        let _ = writeln!(o, "switchboard_rate_limited_total {limited}");
        help(&mut o, "switchboard_quota_refused_total", "counter", "Requests refused by a spend or token cap (429).");
        let _ = writeln!(o, "switchboard_quota_refused_total {quota}");
        let panics: u64 = self.slots.iter().map(|s| s.panics.load(Ordering::Relaxed)).sum();
        help(&mut o, "switchboard_worker_panics_total", "counter", "Panics caught on data-plane workers.");
        let _ = writeln!(o, "switchboard_worker_panics_total {panics}");
        let armed: u64 = self.slots.iter().map(|s| s.multishot_receives.load(Ordering::Relaxed)).sum();
        let fell: u64 = self.slots.iter().map(|s| s.multishot_fallbacks.load(Ordering::Relaxed)).sum();
        help(
            &mut o,
            "switchboard_uring_multishot_receives_total",
            "counter",
            "Streamed upstream bodies read with one multishot receive (io_uring).",
        );
        let _ = writeln!(o, "switchboard_uring_multishot_receives_total {armed}");
        help(
            &mut o,
            "switchboard_uring_multishot_fallbacks_total",
            "counter",
            "Multishot receives that ended early (receive ring dry); the body went on with plain reads.",
        );
        let _ = writeln!(o, "switchboard_uring_multishot_fallbacks_total {fell}");
        help(&mut o, "switchboard_workers_down", "gauge", "Data-plane workers whose thread died (not serving).");
        let _ = writeln!(o, "switchboard_workers_down {}", self.workers_down());
        help(&mut o, "switchboard_requests_in_flight", "gauge", "Requests being handled.");
        let _ = writeln!(o, "switchboard_requests_in_flight {inflight}");
        help(&mut o, "switchboard_client_connections", "gauge", "Open client connections.");
        let _ = writeln!(o, "switchboard_client_connections {connections}");
        help(&mut o, "switchboard_upstream_idle_connections", "gauge", "Idle keep-alive connections by upstream pool.");
        let mut pools: Vec<_> = pools.into_iter().collect();
        pools.sort();
        for (pool, n) in pools {
            let _ = writeln!(o, "switchboard_upstream_idle_connections{{pool=\"{}\"}} {n}", esc(&pool));
        }
        help(&mut o, "switchboard_snapshot_version", "gauge", "Version of the routing snapshot in use.");
        let _ = writeln!(o, "switchboard_snapshot_version {}", self.snapshot_version.load(Ordering::Relaxed));
        help(
            &mut o,
            "switchboard_config_reloads_total",
            "counter",
            "Config file reloads: applied, refused (empty, or removing every key or model), failed (unreadable, invalid).",
        );
        for (result, n) in [
            ("applied", &crate::reload::RELOADS_APPLIED),
            ("refused", &crate::reload::RELOADS_REFUSED),
            ("failed", &crate::reload::RELOADS_FAILED),
        ] {
            let _ =
                writeln!(o, "switchboard_config_reloads_total{{result=\"{result}\"}} {}", n.load(Ordering::Relaxed));
        }
        if let Some(cache) = &self.cache {
            let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let (hits, misses) = (c(&cache.hits), c(&cache.misses));
            for (name, what, v) in [
                ("hits", "Requests answered from the response cache.", hits),
                ("misses", "Cacheable requests the cache could not answer.", misses),
                (
                    "bypasses",
                    "Requests on cache-enabled routes that skipped the cache (Cache-Control, or not cacheable).",
                    c(&cache.bypasses),
                ),
                ("evictions", "Entries evicted to stay within the byte bound.", c(&cache.evictions)),
            ] {
                let metric = format!("switchboard_cache_{name}_total");
                help(&mut o, &metric, "counter", what);
                let _ = writeln!(o, "{metric} {v}");
            }
            help(&mut o, "switchboard_cache_hit_ratio", "gauge", "Hits / (hits + misses) since start.");
            let ratio = if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 };
            let _ = writeln!(o, "switchboard_cache_hit_ratio {ratio}");
            let (entries, bytes) = cache.size();
            help(&mut o, "switchboard_cache_entries", "gauge", "Entries in the response cache.");
            let _ = writeln!(o, "switchboard_cache_entries {entries}");
            help(
                &mut o,
                "switchboard_cache_bytes",
                "gauge",
                "Bytes the response cache holds (counted against server.cache_max_bytes).",
            );
            let _ = writeln!(o, "switchboard_cache_bytes {bytes}");
        }
        if let Some(u) = &self.usage {
            let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
            help(&mut o, "switchboard_usage_records_queued", "gauge", "Usage records on their way to the database.");
            let _ = writeln!(o, "switchboard_usage_records_queued {}", u.queued());
            for (name, what, v) in [
                ("written", "Usage records accounted in the database.", c(&u.written)),
                ("spilled", "Usage records spilled to disk while the database was behind.", c(&u.spilled)),
                ("replayed", "Spilled usage records read back and accounted.", c(&u.replayed)),
                ("lost", "Usage records lost (every queue full, or the spill file unwritable).", c(&u.lost)),
            ] {
                let metric = format!("switchboard_usage_records_{name}_total");
                help(&mut o, &metric, "counter", what);
                let _ = writeln!(o, "{metric} {v}");
            }
            help(&mut o, "switchboard_usage_write_errors_total", "counter", "Failed usage writes (each retried).");
            let _ = writeln!(o, "switchboard_usage_write_errors_total {}", c(&u.write_errors));
        }
        // issue 18: Redis health and the cluster's admissions.
        crate::cluster::render_metrics(&mut o);
        o
    }
}

fn help(o: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(o, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// The `model`, `route` and `target` labels, escaped.
fn target_labels(model: &str, route: &str, target: &str) -> String {
    format!("model=\"{}\",route=\"{}\",target=\"{}\"", esc(model), esc(route), esc(target))
}

fn summary(o: &mut String, name: &str, text: &str, h: &Histogram<u64>) {
    help(o, name, "summary", text);
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e6 };
        let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {v}");
    }
    // The sum from the histogram's buckets (within its 1% precision).
    let sum: f64 =
        h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {}", h.len());
}

/// Escape a label value (backslash, quote, newline).
fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_shared::usage::Outcome;

    fn rec(status: u16, target: &str, latency_us: u64) -> UsageRecord {
        UsageRecord {
            uid: "u".into(),
            ts_ms: 0,
            request_id: "r".into(),
            org: "o".into(),
            key_id: "k".into(),
            model: "m".into(),
            route: "m".into(),
            target: target.into(),
            upstream_model: "m".into(),
            endpoint: "chat.completions".into(),
            stream: false,
            status,
            outcome: Outcome::Ok,
            attempts: 1,
            cache_hit: false,
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            estimated: false,
            cost_nanos: 1_500,
            latency_us,
            ttft_us: latency_us,
            upstream_us: latency_us / 2,
            clamped: false,
            injected: false,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            session: String::new(),
        }
    }

    #[test]
    fn merges_workers_and_renders() {
        let m = Metrics::new(2, Some(Arc::new(UsageStats::default())));
        m.slots[0].request(&rec(200, "a", 1_000));
        m.slots[1].request(&rec(200, "a", 3_000));
        m.slots[1].request(&rec(502, "q\"x", 10));
        m.slots[0].response(200);
        m.slots[1].response(401);
        let text = m.render();
        assert!(
            text.contains("switchboard_requests_total{model=\"m\",route=\"m\",target=\"a\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("target=\"q\\\"x\",status=\"502\"} 1\n"));
        assert!(text.contains("switchboard_tokens_total{model=\"m\",route=\"m\",target=\"a\",kind=\"prompt\"} 20\n"));
        assert!(text.contains("switchboard_cost_usd_total{model=\"m\",route=\"m\",target=\"a\"} 0.000003\n"));
        assert!(text.contains("switchboard_responses_total{status=\"401\"} 1\n"));
        assert!(text.contains("switchboard_request_duration_seconds_count 3\n"));
        assert!(text.contains("switchboard_usage_records_lost_total 0\n"));
    }
}
