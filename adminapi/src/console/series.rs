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

/// Saturating `col = col + excluded.col`.
fn sat_add(col: &str) -> String {
    format!("{col} = CASE WHEN {col} > 9223372036854775807 - excluded.{col} THEN 9223372036854775807 ELSE {col} + excluded.{col} END")
}

type Latencies = FxHashMap<(i64, String, i64), i64>;
type Counts = FxHashMap<(i64, String, String, String, String), [i64; 11]>;

/// A batch's share of the console's tables: latency counts per (minute |
/// hour | day, target, bucket), and hourly and daily rollups per (hour | day,
/// org, model, route, target). Written with the per-minute rollups.
#[derive(Default)]
pub struct ConsoleRollup {
    minute_latency: Latencies,
    hour_latency: Latencies,
    day_latency: Latencies,
    hours: Counts,
    days: Counts,
}

impl ConsoleRollup {
    /// Count a fresh (sanitized) record.
    pub fn add(&mut self, r: &switchboard_shared::usage::UsageRecord) {
        let minute = (r.ts_ms / 60_000) as i64;
        let hour = minute.div_euclid(60);
        let day = hour.div_euclid(24);
        let b = bucket_of(r.latency_us);
        for (map, t) in
            [(&mut self.minute_latency, minute), (&mut self.hour_latency, hour), (&mut self.day_latency, day)]
        {
            let e = map.entry((t, r.target.clone(), b)).or_default();
            *e = e.saturating_add(1);
        }
        for (map, t) in [(&mut self.hours, hour), (&mut self.days, day)] {
            let e = map.entry((t, r.org.clone(), r.model.clone(), r.route.clone(), r.target.clone())).or_default();
            crate::usage::add_to_rollup(e, r);
        }
    }

    pub fn write(self, c: &Connection) -> rusqlite::Result<()> {
        for (table, col, map) in [
            ("usage_latency", "minute", self.minute_latency),
            ("usage_latency_hour", "hour", self.hour_latency),
            ("usage_latency_day", "day", self.day_latency),
        ] {
            let mut up = c.prepare_cached(&format!(
                "INSERT INTO {table} ({col}, target, bucket, count) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT ({col}, target, bucket) DO UPDATE SET {}",
                sat_add("count")
            ))?;
            for ((t, target, bucket), n) in map {
                up.execute(params![t, target, bucket, n])?;
            }
        }
        let sums = crate::usage::ROLLUP_SUMS.map(sat_add).join(", ");
        for (table, col, map) in [("usage_hour", "hour", self.hours), ("usage_day", "day", self.days)] {
            let mut up = c.prepare_cached(&format!(
                "INSERT INTO {table} ({col}, org, model, route, target, {}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT ({col}, org, model, route, target) DO UPDATE SET {sums}",
                crate::usage::ROLLUP_SUMS.join(", ")
            ))?;
            for ((t, org, model, route, target), v) in map {
                up.execute(params![
                    t, org, model, route, target, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
                ])?;
            }
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
    /// (the last 24 hours, one point an hour) or `month` (the last 30 days,
    /// one point a day).
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
    // (window in units, bucket in units, unit in seconds, tables, time column)
    let (span_min, bucket_min, unit_s, counts, latency, col) = match window {
        "hour" => (60i64, 1i64, 60i64, "usage_minute", "usage_latency", "minute"),
        "day" => (24, 1, 3_600, "usage_hour", "usage_latency_hour", "hour"),
        "month" => (30, 1, 86_400, "usage_day", "usage_latency_day", "day"),
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
    let now_min = now_s.div_euclid(unit_s);
    // Buckets aligned to their size, the last one holding this minute.
    let last = now_min.div_euclid(bucket_min) * bucket_min;
    let n = (span_min / bucket_min) as usize;
    let first = last - (n as i64 - 1) * bucket_min;
    let mut series: Vec<OverviewPoint> =
        (0..n).map(|i| OverviewPoint { t: (first + i as i64 * bucket_min) * unit_s, ..Default::default() }).collect();

    // Counts per bucket and split value.
    let sql = format!(
        "SELECT ({col} - ?1) / ?3, {split_col}, CAST(TOTAL(MAX(requests, 0)) AS INTEGER), \
         CAST(TOTAL(MAX(errors, 0)) AS INTEGER), CAST(TOTAL(MAX(total_tokens, 0)) AS INTEGER), \
         CAST(TOTAL(MAX(cost_nanos, 0)) AS INTEGER) \
         FROM {counts} WHERE {col} >= ?1 AND {col} < ?2 GROUP BY 1, 2"
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
    totals.requests_per_minute = round3(totals.requests as f64 / (span_min * unit_s / 60) as f64);
    let mut splits: Vec<OverviewSplit> = by_split.into_values().collect();
    splits.sort_by(|a, b| b.requests_total.cmp(&a.requests_total).then_with(|| a.name.cmp(&b.name)));
    splits.truncate(MAX_SPLITS);

    // Latency quantiles per bucket, overall and per target.
    let mut per_bucket: Vec<Hist> = (0..n).map(|_| Hist::default()).collect();
    let mut all = Hist::default();
    let mut per_target: FxHashMap<String, Hist> = FxHashMap::default();
    let mut st = c.prepare_cached(&format!(
        "SELECT ({col} - ?1) / ?3, target, bucket, CAST(TOTAL(MAX(count, 0)) AS INTEGER) FROM {latency} \
         WHERE {col} >= ?1 AND {col} < ?2 GROUP BY 1, 2, 3"
    ))?;
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
    let mut st = c.prepare_cached(&format!(
        "SELECT target, CAST(TOTAL(MAX(requests, 0)) AS INTEGER), CAST(TOTAL(MAX(errors, 0)) AS INTEGER) \
         FROM {counts} WHERE {col} >= ?1 AND {col} < ?2 GROUP BY target"
    ))?;
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
        from: first * unit_s,
        to: (last + bucket_min) * unit_s,
        bucket_seconds: bucket_min * unit_s,
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
    use switchboard_shared::usage::{Outcome, UsageRecord};

    fn record(i: u64, ts_ms: u64, model: &str, target: &str, latency_ms: u64, status: u16) -> UsageRecord {
        UsageRecord {
            uid: format!("u{i}"),
            ts_ms,
            request_id: format!("r{i}"),
            org: "acme".into(),
            key_id: format!("key_{}", i % 3),
            model: model.into(),
            route: model.into(),
            target: target.into(),
            upstream_model: model.into(),
            endpoint: "chat.completions".into(),
            status,
            outcome: if status < 400 { Outcome::Ok } else { Outcome::Error },
            attempts: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            cost_nanos: 1_000,
            latency_us: latency_ms * 1000,
            ..Default::default()
        }
    }

    #[test]
    fn the_overview_reads_what_was_accounted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::db::open(&dir.path().join("o.db")).unwrap();
        let now_s: i64 = 1_795_305_600 + 3_600 * 5 + 30; // 05:00:30 UTC
        let now_ms = now_s as u64 * 1000;
        let mut batch = Vec::new();
        // 99 fast requests to "a" this minute, 1 slow failing one to "b" 10 minutes ago,
        // 1 a week ago (outside hour and day, inside month).
        for i in 0..99 {
            batch.push(record(i, now_ms - 1_000, "m1", "a", 10, 200));
        }
        batch.push(record(99, now_ms - 600_000, "m2", "b", 2_000, 502));
        batch.push(record(100, now_ms - 7 * 86_400_000, "m1", "a", 10, 200));
        crate::usage::write_batch(&mut c, &batch).unwrap();
        // Accounting twice changes nothing.
        crate::usage::write_batch(&mut c, &batch).unwrap();

        let q = |w: &str, s: &str| OverviewQuery { window: Some(w.into()), split: Some(s.into()) };
        let o = overview(&c, &q("hour", "model"), now_s).unwrap();
        assert_eq!(o.series.len(), 60);
        assert_eq!((o.totals.requests, o.totals.errors, o.totals.total_tokens), (100, 1, 1_500));
        assert!((o.totals.cost_usd - 100.0 * 1e-6).abs() < 1e-12);
        let last = o.series.last().unwrap();
        assert_eq!(last.requests, 99);
        assert!((last.p50_ms.unwrap() - 10.0).abs() < 1.0, "{:?}", last.p50_ms);
        assert!((o.totals.p99_ms.unwrap() - 10.0).abs() < 1.0);
        assert_eq!(o.series[49].errors, 1);
        assert!((o.series[49].p99_ms.unwrap() - 2_000.0).abs() < 180.0);
        assert_eq!(o.splits[0].name, "m1");
        assert_eq!(o.splits[0].requests_total, 99);
        let b = o.targets.iter().find(|t| t.target == "b").unwrap();
        assert_eq!((b.requests, b.errors, b.error_rate), (1, 1, 1.0));

        let d = overview(&c, &q("day", "target"), now_s).unwrap();
        assert_eq!((d.series.len(), d.bucket_seconds), (24, 3_600));
        assert_eq!(d.totals.requests, 100);
        assert_eq!((d.series[23].requests, d.series[22].requests, d.series[22].errors), (99, 1, 1));
        assert!(d.totals.p50_ms.is_some());
        let m = overview(&c, &q("month", "org"), now_s).unwrap();
        assert_eq!((m.series.len(), m.bucket_seconds, m.totals.requests), (30, 86_400, 101));
        assert_eq!(m.splits[0].name, "acme");
        assert!(overview(&c, &q("year", "model"), now_s).is_err());
        assert!(overview(&c, &q("hour", "key"), now_s).is_err());
    }

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
