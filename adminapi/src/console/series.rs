//! The overview page's data in one call: requests, errors, tokens, spend and
//! latency quantiles over a window, bucketed for a chart, split by one
//! dimension, and per target (the slowest and the most failing). Read from
//! the per-minute rollups and the latency histograms written beside them,
//! never from the raw request log, so it costs the same with a million
//! logged requests as with ten.

use crate::error::{ApiError, ApiResult};
use rusqlite::{params, Connection};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Histogram buckets per doubling of latency (2^(1/8): within 9 %).
const PER_DOUBLING: f64 = 8.0;
/// The last bucket: 2^(400/8) us is past any latency a record may hold.
const MAX_BUCKET: i64 = 400;

/// A latency's bucket.
pub fn bucket_of(latency_us: u64) -> i64 {
    if latency_us <= 1 {
        return 0;
    }
    ((latency_us as f64).log2() * PER_DOUBLING).floor().clamp(0.0, MAX_BUCKET as f64) as i64
}

/// A bucket's middle, in milliseconds (what a quantile falling in it reads as).
fn bucket_ms(b: i64) -> f64 {
    2f64.powf((b as f64 + 0.5) / PER_DOUBLING) / 1000.0
}

/// A batch's latency counts per (minute, target, bucket), written with its rollups.
#[derive(Default)]
pub struct LatencyBatch {
    counts: FxHashMap<(i64, String, i64), i64>,
}

impl LatencyBatch {
    pub fn add(&mut self, minute: i64, target: &str, latency_us: u64) {
        let e = self.counts.entry((minute, target.to_string(), bucket_of(latency_us))).or_default();
        *e = e.saturating_add(1);
    }

    pub fn write(self, c: &Connection) -> rusqlite::Result<()> {
        let mut up = c.prepare_cached(
            "INSERT INTO usage_latency (minute, target, bucket, count) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (minute, target, bucket) DO UPDATE SET count = \
             CASE WHEN count > 9223372036854775807 - excluded.count THEN 9223372036854775807 ELSE count + excluded.count END",
        )?;
        for ((minute, target, bucket), n) in self.counts {
            up.execute(params![minute, target, bucket, n])?;
        }
        Ok(())
    }
}

/// Quantiles of a histogram (bucket -> count), in milliseconds.
#[derive(Default)]
struct Hist {
    counts: Vec<(i64, i64)>,
}

impl Hist {
    fn add(&mut self, bucket: i64, n: i64) {
        self.counts.push((bucket, n));
    }

    fn quantiles(&mut self, qs: [f64; 2]) -> [Option<f64>; 2] {
        self.counts.sort_unstable();
        let total: i64 = self.counts.iter().fold(0i64, |a, (_, n)| a.saturating_add((*n).max(0)));
        let mut out = [None; 2];
        if total == 0 {
            return out;
        }
        for (slot, q) in out.iter_mut().zip(qs) {
            // The smallest bucket whose cumulative count reaches q of the total.
            let want = ((total as f64) * q).ceil().max(1.0) as i64;
            let mut seen = 0i64;
            for (b, n) in &self.counts {
                seen = seen.saturating_add((*n).max(0));
                if seen >= want {
                    *slot = Some(round3(bucket_ms(*b)));
                    break;
                }
            }
        }
        out
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// `hour` (default: the last 60 minutes, one point a minute), `day`
    /// (the last 24 hours, one point per 15 minutes) or `month` (the last
    /// 30 days, one point per 6 hours).
    pub window: Option<String>,
    /// Split the series by `model`, `route`, `target` or `org` (default `model`).
    pub split: Option<String>,
}

/// One point of the chart.
#[derive(Debug, Serialize, ToSchema, Default, Clone)]
pub struct OverviewPoint {
    /// Start of the bucket, Unix seconds.
    pub t: i64,
    pub requests: i64,
    pub errors: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    /// Median latency in the bucket, ms (null without requests).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One value of the split dimension, with its counts per bucket (the same
/// buckets as `series`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewSplit {
    pub name: String,
    pub requests: Vec<i64>,
    pub total_tokens: Vec<i64>,
    pub cost_usd: Vec<f64>,
    pub requests_total: i64,
}

/// A target over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewTarget {
    pub target: String,
    pub requests: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema, Default)]
pub struct OverviewTotals {
    pub requests: i64,
    pub errors: i64,
    pub error_rate: f64,
    /// Requests per minute over the window.
    pub requests_per_minute: f64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub object: &'static str,
    pub window: String,
    /// Unix seconds: the first bucket's start, and the window's end.
    pub from: i64,
    pub to: i64,
    pub bucket_seconds: i64,
    pub totals: OverviewTotals,
    pub series: Vec<OverviewPoint>,
    pub split: String,
    /// The 8 busiest values of the split dimension.
    pub splits: Vec<OverviewSplit>,
    /// Every target that served in the window (at most 100, busiest first).
    pub targets: Vec<OverviewTarget>,
}

/// How many split values the chart shows.
const MAX_SPLITS: usize = 8;
/// How many targets the table shows.
const MAX_TARGETS: usize = 100;

pub fn overview(c: &Connection, q: &OverviewQuery, now_s: i64) -> ApiResult<Overview> {
    let window = q.window.as_deref().unwrap_or("hour");
    let (span_min, bucket_min): (i64, i64) = match window {
        "hour" => (60, 1),
        "day" => (1_440, 15),
        "month" => (43_200, 360),
        _ => return Err(ApiError::invalid_field("window", "expected hour, day or month")),
    };
    let split = q.split.as_deref().unwrap_or("model");
    let split_col = match split {
        "model" => "model",
        "route" => "route",
        "target" => "target",
        "org" => "org",
        _ => return Err(ApiError::invalid_field("split", "expected model, route, target or org")),
    };
    let now_min = now_s.div_euclid(60);
    // Buckets aligned to their size, the last one holding this minute.
    let last = now_min.div_euclid(bucket_min) * bucket_min;
    let n = (span_min / bucket_min) as usize;
    let first = last - (n as i64 - 1) * bucket_min;
    let mut series: Vec<OverviewPoint> =
        (0..n).map(|i| OverviewPoint { t: (first + i as i64 * bucket_min) * 60, ..Default::default() }).collect();

    // Counts per bucket and split value.
    let sql = format!(
        "SELECT (minute - ?1) / ?3, {split_col}, CAST(TOTAL(MAX(requests, 0)) AS INTEGER), \
         CAST(TOTAL(MAX(errors, 0)) AS INTEGER), CAST(TOTAL(MAX(total_tokens, 0)) AS INTEGER), \
         CAST(TOTAL(MAX(cost_nanos, 0)) AS INTEGER) \
         FROM usage_minute WHERE minute >= ?1 AND minute < ?2 GROUP BY 1, 2"
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params![first, last + bucket_min, bucket_min], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut by_split: FxHashMap<String, OverviewSplit> = FxHashMap::default();
    let mut totals = OverviewTotals::default();
    let mut cost_nanos_total: i64 = 0;
    for row in rows {
        let (b, name, reqs, errs, toks, nanos) = row?;
        let Some(i) = usize::try_from(b).ok().filter(|i| *i < n) else { continue };
        let p = &mut series[i];
        p.requests = p.requests.saturating_add(reqs);
        p.errors = p.errors.saturating_add(errs);
        p.total_tokens = p.total_tokens.saturating_add(toks);
        p.cost_usd += nanos as f64 / 1e9;
        totals.requests = totals.requests.saturating_add(reqs);
        totals.errors = totals.errors.saturating_add(errs);
        totals.total_tokens = totals.total_tokens.saturating_add(toks);
        cost_nanos_total = cost_nanos_total.saturating_add(nanos);
        let s = by_split.entry(name.clone()).or_insert_with(|| OverviewSplit {
            name,
            requests: vec![0; n],
            total_tokens: vec![0; n],
            cost_usd: vec![0.0; n],
            requests_total: 0,
        });
        s.requests[i] = s.requests[i].saturating_add(reqs);
        s.total_tokens[i] = s.total_tokens[i].saturating_add(toks);
        s.cost_usd[i] += nanos as f64 / 1e9;
        s.requests_total = s.requests_total.saturating_add(reqs);
    }
    totals.cost_usd = cost_nanos_total as f64 / 1e9;
    totals.error_rate = if totals.requests > 0 { totals.errors as f64 / totals.requests as f64 } else { 0.0 };
    totals.requests_per_minute = round3(totals.requests as f64 / span_min as f64);
    let mut splits: Vec<OverviewSplit> = by_split.into_values().collect();
    splits.sort_by(|a, b| b.requests_total.cmp(&a.requests_total).then_with(|| a.name.cmp(&b.name)));
    splits.truncate(MAX_SPLITS);

    // Latency quantiles per bucket, overall and per target.
    let mut per_bucket: Vec<Hist> = (0..n).map(|_| Hist::default()).collect();
    let mut all = Hist::default();
    let mut per_target: FxHashMap<String, Hist> = FxHashMap::default();
    let mut st = c.prepare_cached(
        "SELECT (minute - ?1) / ?3, target, bucket, CAST(TOTAL(MAX(count, 0)) AS INTEGER) FROM usage_latency \
         WHERE minute >= ?1 AND minute < ?2 GROUP BY 1, 2, 3",
    )?;
    let rows = st.query_map(params![first, last + bucket_min, bucket_min], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (b, target, bucket, count) = row?;
        if let Some(i) = usize::try_from(b).ok().filter(|i| *i < n) {
            per_bucket[i].add(bucket, count);
        }
        all.add(bucket, count);
        per_target.entry(target).or_default().add(bucket, count);
    }
    for (p, h) in series.iter_mut().zip(per_bucket.iter_mut()) {
        [p.p50_ms, p.p99_ms] = h.quantiles([0.5, 0.99]);
        p.cost_usd = round9(p.cost_usd);
    }
    [totals.p50_ms, totals.p99_ms] = all.quantiles([0.5, 0.99]);
    for s in &mut splits {
        for v in &mut s.cost_usd {
            *v = round9(*v);
        }
    }

    // Per target: requests and errors from the rollups.
    let mut st = c.prepare_cached(
        "SELECT target, CAST(TOTAL(MAX(requests, 0)) AS INTEGER), CAST(TOTAL(MAX(errors, 0)) AS INTEGER) \
         FROM usage_minute WHERE minute >= ?1 AND minute < ?2 GROUP BY target",
    )?;
    let rows = st.query_map(params![first, last + bucket_min], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })?;
    let mut targets = Vec::new();
    for row in rows {
        let (target, requests, errors) = row?;
        let [p50_ms, p99_ms] = per_target.get_mut(&target).map_or([None, None], |h| h.quantiles([0.5, 0.99]));
        targets.push(OverviewTarget {
            error_rate: if requests > 0 { round3(errors as f64 / requests as f64) } else { 0.0 },
            target,
            requests,
            errors,
            p50_ms,
            p99_ms,
        });
    }
    targets.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.target.cmp(&b.target)));
    targets.truncate(MAX_TARGETS);

    Ok(Overview {
        object: "console_overview",
        window: window.to_string(),
        from: first * 60,
        to: (last + bucket_min) * 60,
        bucket_seconds: bucket_min * 60,
        totals,
        series,
        split: split.to_string(),
        splits,
        targets,
    })
}

fn round9(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), MAX_BUCKET.min(((u64::MAX as f64).log2() * 8.0) as i64));
        // A bucket's middle is within 9 % of any latency in it.
        for us in [150u64, 1_000, 12_345, 250_000, 9_000_000] {
            let mid = bucket_ms(bucket_of(us)) * 1000.0;
            assert!((mid / us as f64 - 1.0).abs() < 0.09, "{us} -> {mid}");
        }
        let mut h = Hist::default();
        for (us, n) in [(1_000u64, 98i64), (100_000, 2)] {
            h.add(bucket_of(us), n);
        }
        let [p50, p99] = h.quantiles([0.5, 0.99]);
        assert!((p50.unwrap() - 1.0).abs() < 0.09, "{p50:?}");
        assert!((p99.unwrap() - 100.0).abs() < 9.0, "{p99:?}");
        assert_eq!(Hist::default().quantiles([0.5, 0.99]), [None, None]);
    }
}
