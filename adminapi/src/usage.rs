//! Usage accounting in SQLite: the sink the data plane's usage pipeline
//! writes to (one transaction per batch: raw request log + per-minute
//! rollups), and the reports the admin API serves from it.

use crate::error::{ApiError, ApiResult};
use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use switchboard_dataplane::usage::pipeline::UsageSink;
use switchboard_shared::usage::{nanos_to_usd, UsageRecord};
use utoipa::{IntoParams, ToSchema};

/// The summed columns of `usage_minute`, in the order rows and reports use.
pub(crate) const ROLLUP_SUMS: [&str; 11] = [
    "requests",
    "errors",
    "cache_hits",
    "estimated",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_nanos",
    "latency_us",
    "cache_read_tokens",
    "cache_write_tokens",
];

/// Add one (sanitized) record to a rollup row of [`ROLLUP_SUMS`], saturating.
pub(crate) fn add_to_rollup(row: &mut [i64; 11], r: &UsageRecord) {
    let failed = r.status >= 400 || r.outcome != switchboard_shared::usage::Outcome::Ok;
    let add = [
        1,
        failed as i64,
        r.cache_hit as i64,
        r.estimated as i64,
        r.prompt_tokens as i64,
        r.completion_tokens as i64,
        r.total_tokens as i64,
        r.cost_nanos as i64,
        r.latency_us as i64,
        r.cache_read_tokens as i64,
        r.cache_write_tokens as i64,
    ];
    for (a, v) in row.iter_mut().zip(add) {
        *a = a.saturating_add(v.max(0));
    }
}

/// The same sums over the request log (usage by session, which the rollups
/// do not keep), in the same order.
fn raw_sums() -> [String; 11] {
    [
        "COUNT(*)".to_string(),
        "CAST(TOTAL(status >= 400 OR outcome != 'ok') AS INTEGER)".to_string(),
        sat_sum("cache_hit"),
        sat_sum("estimated"),
        sat_sum("prompt_tokens"),
        sat_sum("completion_tokens"),
        sat_sum("total_tokens"),
        sat_sum("cost_nanos"),
        sat_sum("latency_us"),
        sat_sum("cache_read_tokens"),
        sat_sum("cache_write_tokens"),
    ]
}

/// A rollup row's key: minute, org, key, model, route, target.
type MinuteKey<'a> = (i64, &'a str, &'a str, &'a str, &'a str, &'a str);

/// What a batch did.
#[derive(Debug, Default)]
pub struct Written {
    /// Records accounted for the first time.
    pub fresh: usize,
    /// The target of each fresh record whose counts were clamped (the
    /// upstream or node that reported nonsense), once per record.
    pub clamped_targets: Vec<String>,
}

/// A column's sum over rows, saturating at `i64::MAX` instead of failing
/// (SQLite's `SUM` raises "integer overflow"), and never negative or a float
/// (rows written before values were clamped may hold either).
fn sat_sum(col: &str) -> String {
    format!("CAST(TOTAL(MAX({col}, 0)) AS INTEGER)")
}

/// A rollup column plus this batch's amount, saturating at `i64::MAX`
/// (SQLite would otherwise turn the sum into a float).
fn sat_add(col: &str) -> String {
    format!("{col} = CASE WHEN {col} > 9223372036854775807 - excluded.{col} THEN 9223372036854775807 ELSE {col} + excluded.{col} END")
}

/// Account a batch in one transaction. Records already accounted (same
/// `uid`) are skipped, so a replayed or re-sent batch counts once. Every
/// record is clamped to the documented maxima first (it may come from a
/// remote data plane), and sums saturate.
pub fn write_batch(conn: &mut Connection, batch: &[UsageRecord]) -> rusqlite::Result<Written> {
    let tx = conn.transaction()?;
    let mut out = Written::default();
    let batch: Vec<UsageRecord> = batch
        .iter()
        .filter(|r| !r.route.is_empty())
        .map(|r| {
            let mut r = r.clone();
            r.sanitize();
            r
        })
        .collect();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO request_log (uid, ts_ms, request_id, org, key_id, model, route, target, \
             upstream_model, endpoint, stream, status, outcome, attempts, cache_hit, prompt_tokens, \
             completion_tokens, total_tokens, estimated, cost_nanos, latency_us, ttft_us, upstream_us, clamped, injected, \
             cache_read_tokens, cache_write_tokens, session) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, \
             ?25, ?26, ?27, ?28)",
        )?;
        let mut rollup: FxHashMap<MinuteKey<'_>, [i64; 11]> = FxHashMap::default();
        let mut console = crate::console::series::ConsoleRollup::default();
        for r in &batch {
            let n = insert.execute(params![
                r.uid,
                r.ts_ms as i64,
                r.request_id,
                r.org,
                r.key_id,
                r.model,
                r.route,
                r.target,
                r.upstream_model,
                r.endpoint,
                r.stream,
                r.status,
                r.outcome.as_str(),
                r.attempts,
                r.cache_hit,
                r.prompt_tokens as i64,
                r.completion_tokens as i64,
                r.total_tokens as i64,
                r.estimated,
                r.cost_nanos as i64,
                r.latency_us as i64,
                r.ttft_us as i64,
                r.upstream_us as i64,
                r.clamped,
                r.injected,
                r.cache_read_tokens as i64,
                r.cache_write_tokens as i64,
                r.session,
            ])?;
            if n == 0 {
                continue;
            }
            out.fresh += 1;
            if r.clamped {
                out.clamped_targets.push(r.target.clone());
            }
            let minute = (r.ts_ms / 60_000) as i64;
            console.add(r);
            let e = rollup.entry((minute, &r.org, &r.key_id, &r.model, &r.route, &r.target)).or_default();
            add_to_rollup(e, r);
        }
        let sums: Vec<String> = ROLLUP_SUMS.iter().map(|c| sat_add(c)).collect();
        let mut upsert = tx.prepare_cached(&format!(
            "INSERT INTO usage_minute (minute, org, key_id, model, route, target, requests, errors, cache_hits, \
             estimated, prompt_tokens, completion_tokens, total_tokens, cost_nanos, latency_us, cache_read_tokens, \
             cache_write_tokens) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT (minute, org, key_id, model, route, target) DO UPDATE SET {}",
            sums.join(", ")
        ))?;
        for ((minute, org, key, model, route, target), v) in rollup {
            upsert.execute(params![
                minute, org, key, model, route, target, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
                v[10]
            ])?;
        }
        console.write(&tx)?;
    }
    tx.commit()?;
    Ok(out)
}

/// The embedded sink: writes through the admin service's own connection and
/// its mutex, so usage batches and admin changes take turns in order instead
/// of polling SQLite's lock (a busy usage writer would otherwise starve admin
/// writes into `503 storage_unavailable`).
pub struct StateSink {
    state: crate::SharedState,
    retention_days: u64,
}

impl StateSink {
    pub fn new(state: crate::SharedState, retention_days: u64) -> StateSink {
        StateSink { state, retention_days }
    }
}

impl UsageSink for StateSink {
    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), String> {
        self.state.ingest(batch).map(|_| ()).map_err(|e| e.message.to_string())
    }

    fn maintain(&mut self) {
        let state = &self.state;
        expire(self.retention_days, |cutoff| {
            state.read(|c| Ok(delete_expired(c, cutoff)?)).map_err(|e| e.message.to_string())
        });
    }
}

/// Delete up to 5,000 request-log rows older than `cutoff` (Unix ms).
fn delete_expired(c: &Connection, cutoff: i64) -> rusqlite::Result<usize> {
    c.execute(
        "DELETE FROM request_log WHERE uid IN (SELECT uid FROM request_log WHERE ts_ms < ?1 LIMIT 5000)",
        [cutoff],
    )
}

/// Raw-log retention: `delete` slice by slice (so the database is never held
/// long) until nothing older than `retention_days` is left. 0 keeps all.
fn expire(retention_days: u64, mut delete: impl FnMut(i64) -> Result<usize, String>) {
    if retention_days == 0 {
        return;
    }
    let cutoff = crate::db::now_millis() - (retention_days as i64) * 86_400_000;
    loop {
        match delete(cutoff) {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "request log retention"),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "request log retention failed; will retry");
                return;
            }
        }
    }
}

/// A sink with its own connection (a tool or a test writing beside a
/// running admin; `switchboard serve` uses [`StateSink`]).
pub struct SqliteSink {
    conn: Connection,
    retention_days: u64,
}

impl SqliteSink {
    /// A sink on a connection the caller opened (and migrated, `db::open`).
    pub fn from_connection(conn: Connection, retention_days: u64) -> SqliteSink {
        SqliteSink { conn, retention_days }
    }
}

impl UsageSink for SqliteSink {
    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), String> {
        write_batch(&mut self.conn, batch).map(|_| ()).map_err(|e| e.to_string())
    }

    fn maintain(&mut self) {
        let conn = &self.conn;
        expire(self.retention_days, |cutoff| delete_expired(conn, cutoff).map_err(|e| e.to_string()));
    }
}

// ---- reports ----

/// A time in a query: Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
/// Between 1970 and the end of year 9999 (so arithmetic on it cannot overflow).
pub fn parse_time(field: &str, v: &str) -> ApiResult<i64> {
    let t = parse_time_any(field, v)?;
    let range = switchboard_shared::limits::EXPIRES_AT_S;
    if t < 0 || t as u64 > range.max {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be between 0 and {} (Unix seconds)", range.max),
        ));
    }
    Ok(t)
}

fn parse_time_any(field: &str, v: &str) -> ApiResult<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    let bad = || ApiError::invalid_field(field, "expected Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
    let b = v.as_bytes();
    let num = |r: std::ops::Range<usize>| -> ApiResult<i64> {
        let s = v.get(r).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (mut hh, mut mm, mut ss) = (0, 0, 0);
    if b.len() > 10 {
        if b.len() != 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
            return Err(bad());
        }
        (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    // `2026-02-30` is an error, not March 2.
    if !(1..=12).contains(&m) || !(1..=days_in_month).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    Ok(switchboard_shared::time::days_from_civil(y, m, d) * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(secs: i64) -> String {
    switchboard_shared::time::format_rfc3339(secs)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (inclusive): Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`. Default: 24 hours ago.
    pub from: Option<String>,
    /// End (exclusive), same forms. Default: now.
    pub to: Option<String>,
    /// Comma-separated: any of `org`, `key`, `model`, `route`, `target`,
    /// `session` (the client's session id; read from the request log, so
    /// within its retention).
    pub group_by: Option<String>,
    /// `minute`, `hour` (default), `day` or `total`.
    pub granularity: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    pub org: Option<String>,
    pub key: Option<String>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub target: Option<String>,
    /// Only requests of this session (read from the request log).
    pub session: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, Default, Clone)]
pub struct UsageRow {
    /// Start of the period (UTC); absent for `granularity=total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub cache_hits: i64,
    pub estimated_requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Of the prompt tokens: read from the provider's prompt cache.
    pub cache_read_tokens: i64,
    /// Of the prompt tokens: written to the provider's prompt cache.
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    /// Cost in nano-USD (exact).
    pub cost_nanos: i64,
    pub avg_latency_ms: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub object: &'static str,
    pub from: String,
    pub to: String,
    pub granularity: String,
    pub group_by: Vec<String>,
    pub data: Vec<UsageRow>,
}

const DIMENSIONS: [(&str, &str); 6] = [
    ("org", "org"),
    ("key", "key_id"),
    ("model", "model"),
    ("route", "route"),
    ("target", "target"),
    ("session", "session"),
];

fn range(from: &Option<String>, to: &Option<String>) -> ApiResult<(i64, i64)> {
    let now = crate::db::now_secs();
    let to = match to {
        Some(t) => parse_time("to", t)?,
        None => now + 1,
    };
    let from = match from {
        Some(f) => parse_time("from", f)?,
        None => to - 86_400,
    };
    if from >= to {
        return Err(ApiError::invalid_field("from", "must be before `to`"));
    }
    Ok((from, to))
}

pub fn report(c: &Connection, q: &UsageQuery) -> ApiResult<UsageReport> {
    let (from, to) = range(&q.from, &q.to)?;
    let granularity = q.granularity.as_deref().unwrap_or("hour");
    let bucket_minutes: Option<i64> = match granularity {
        "minute" => Some(1),
        "hour" => Some(60),
        "day" => Some(1_440),
        "total" => None,
        _ => return Err(ApiError::invalid_field("granularity", "expected minute, hour, day or total")),
    };
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for g in q.group_by.as_deref().unwrap_or("").split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let dim = DIMENSIONS.iter().find(|(name, _)| *name == g).ok_or_else(|| {
            ApiError::invalid_field("group_by", format!("`{g}` is not one of org, key, model, route, target, session"))
        })?;
        if !groups.contains(dim) {
            groups.push(*dim);
        }
    }
    // Whole hours without the key: the hourly rollups (the same sums, far
    // fewer rows); otherwise the per-minute ones.
    // By session: from the request log (the rollups do not keep sessions).
    let raw = groups.iter().any(|(n, _)| *n == "session") || q.session.is_some();
    let hourly = !raw
        && bucket_minutes.is_none_or(|b| b % 60 == 0)
        && q.key.is_none()
        && !groups.iter().any(|(name, _)| *name == "key")
        && from % 3_600 == 0
        && to % 3_600 == 0;
    let (table, col, unit) = if hourly { ("usage_hour", "hour", 60) } else { ("usage_minute", "minute", 1) };
    let period = match bucket_minutes {
        Some(b) => format!("({col} / {}) * {}", b / unit, b / unit),
        None => "0".into(),
    };
    let period = if raw { period.replace("minute", "(ts_ms / 60000)") } else { period };
    let cols: String = groups.iter().map(|(_, c)| format!(", {c}")).collect();
    let unit_s = 60 * unit;
    let mut sql = if raw {
        format!(
            "SELECT {period} AS p{cols}, {} FROM request_log WHERE ts_ms >= ?1 * 60000 AND ts_ms < ?2 * 60000",
            raw_sums().join(", ")
        )
    } else {
        format!(
            "SELECT {period} AS p{cols}, {} FROM {table} WHERE {col} >= ?1 AND {col} < ?2",
            ROLLUP_SUMS.map(sat_sum).join(", ")
        )
    };
    // Minutes (hours) overlapping [from, to).
    let mut args: Vec<rusqlite::types::Value> =
        vec![from.div_euclid(unit_s).into(), (to + unit_s - 1).div_euclid(unit_s).into()];
    for (value, col) in [
        (&q.org, "org"),
        (&q.key, "key_id"),
        (&q.model, "model"),
        (&q.route, "route"),
        (&q.target, "target"),
        (&q.session, "session"),
    ] {
        if let Some(v) = value {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    }
    sql.push_str(&format!(" GROUP BY p{cols} ORDER BY p{cols}"));
    let mut st = c.prepare(&sql)?;
    let n = groups.len();
    let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
        let mut row = UsageRow::default();
        if bucket_minutes.is_some() {
            row.period = Some(format_time(r.get::<_, i64>(0)? * unit_s));
        }
        for (i, (name, _)) in groups.iter().enumerate() {
            let v: String = r.get(1 + i)?;
            match *name {
                "org" => row.org = Some(v),
                "key" => row.key = Some(v),
                "model" => row.model = Some(v),
                "route" => row.route = Some(v),
                "session" => row.session = Some(v),
                _ => row.target = Some(v),
            }
        }
        let g = |i: usize| r.get::<_, i64>(1 + n + i);
        row.requests = g(0)?;
        row.errors = g(1)?;
        row.cache_hits = g(2)?;
        row.estimated_requests = g(3)?;
        row.prompt_tokens = g(4)?;
        row.completion_tokens = g(5)?;
        row.total_tokens = g(6)?;
        row.cost_nanos = g(7)?;
        row.cost_usd = nanos_to_usd(row.cost_nanos);
        row.avg_latency_ms = if row.requests > 0 { g(8)? as f64 / row.requests as f64 / 1000.0 } else { 0.0 };
        row.cache_read_tokens = g(9)?;
        row.cache_write_tokens = g(10)?;
        Ok(row)
    })?;
    let data = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(UsageReport {
        object: "usage_report",
        from: format_time(from),
        to: format_time(to),
        granularity: granularity.to_string(),
        group_by: groups.iter().map(|(n, _)| n.to_string()).collect(),
        data,
    })
}

/// The report as CSV: a header, then a line per row.
pub fn report_csv(r: &UsageReport) -> String {
    let mut out = String::new();
    let mut head: Vec<&str> = Vec::new();
    if r.granularity != "total" {
        head.push("period");
    }
    head.extend(r.group_by.iter().map(String::as_str));
    head.extend([
        "requests",
        "errors",
        "cache_hits",
        "estimated_requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "avg_latency_ms",
        "cache_read_tokens",
        "cache_write_tokens",
    ]);
    out.push_str(&head.join(","));
    out.push('\n');
    for row in &r.data {
        let mut f: Vec<String> = Vec::new();
        if let Some(p) = &row.period {
            f.push(p.clone());
        }
        for g in &r.group_by {
            let v = match g.as_str() {
                "org" => &row.org,
                "key" => &row.key,
                "model" => &row.model,
                "route" => &row.route,
                "session" => &row.session,
                _ => &row.target,
            };
            f.push(csv_field(v.as_deref().unwrap_or("")));
        }
        f.extend([
            row.requests.to_string(),
            row.errors.to_string(),
            row.cache_hits.to_string(),
            row.estimated_requests.to_string(),
            row.prompt_tokens.to_string(),
            row.completion_tokens.to_string(),
            row.total_tokens.to_string(),
            format!("{:.9}", row.cost_usd),
            format!("{:.3}", row.avg_latency_ms),
            row.cache_read_tokens.to_string(),
            row.cache_write_tokens.to_string(),
        ]);
        out.push_str(&f.join(","));
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting, and a leading `'` on values a spreadsheet would run as a formula.
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) { format!("'{v}") } else { v.to_string() };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopKeysQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// `cost` (default), `tokens` or `requests`.
    pub by: Option<String>,
    /// At most this many keys (default 10, at most 1000).
    pub limit: Option<u32>,
    pub org: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopKey {
    pub key: String,
    pub org: String,
    pub requests: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    pub cost_nanos: i64,
}

pub fn top_keys(c: &Connection, q: &TopKeysQuery) -> ApiResult<Vec<TopKey>> {
    let (from, to) = range(&q.from, &q.to)?;
    let order = match q.by.as_deref().unwrap_or("cost") {
        "cost" => sat_sum("cost_nanos"),
        "tokens" => sat_sum("total_tokens"),
        "requests" => sat_sum("requests"),
        _ => return Err(ApiError::invalid_field("by", "expected cost, tokens or requests")),
    };
    let limit = q.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "`limit` must be 1 to 1000"));
    }
    let sql = format!(
        "SELECT key_id, org, {}, {}, {} FROM usage_minute \
         WHERE minute >= ?1 AND minute < ?2 AND (?3 IS NULL OR org = ?3) \
         GROUP BY key_id, org ORDER BY {order} DESC, key_id LIMIT ?4",
        sat_sum("requests"),
        sat_sum("total_tokens"),
        sat_sum("cost_nanos")
    );
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map(params![from.div_euclid(60), (to + 59).div_euclid(60), q.org, limit], |r| {
        let cost_nanos: i64 = r.get(4)?;
        Ok(TopKey {
            key: r.get(0)?,
            org: r.get(1)?,
            requests: r.get(2)?,
            total_tokens: r.get(3)?,
            cost_usd: nanos_to_usd(cost_nanos),
            cost_nanos,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestLogQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub org: Option<String>,
    pub key: Option<String>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub target: Option<String>,
    pub status: Option<u16>,
    /// `ok`, `error`, `client_closed` or `upstream_cut`.
    pub outcome: Option<String>,
    pub request_id: Option<String>,
    /// Only records with (`true`) or without (`false`) an injected failure.
    pub injected: Option<bool>,
    /// The client's session id (`X-Claude-Code-Session-Id`, `X-Session-Id`).
    pub session: Option<String>,
    /// Newest first; pass the last row's `ts_ms` as `before` and its `id` as
    /// `before_id` for the next page (rows sharing that millisecond are
    /// ordered by `id`, so none is skipped or repeated).
    pub before: Option<i64>,
    /// With `before`: the last row's `id`.
    pub before_id: Option<String>,
    /// Rows per page (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct LoggedRequest {
    /// The record's unique id (the page cursor, with `ts_ms`).
    #[serde(default)]
    pub id: String,
    pub ts_ms: i64,
    pub time: String,
    pub request_id: String,
    pub org: String,
    pub key: String,
    pub model: String,
    pub route: String,
    pub target: String,
    pub upstream_model: String,
    pub endpoint: String,
    pub stream: bool,
    pub status: u16,
    pub outcome: String,
    pub attempts: u32,
    pub cache_hit: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub estimated: bool,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub ttft_ms: f64,
    pub upstream_ms: f64,
    /// Counts or times were past the documented maxima and were clamped.
    #[serde(default)]
    pub clamped: bool,
    /// A failure was injected into this request (`x-switchboard-fault`, a
    /// test key): its failed attempts say nothing about the targets.
    #[serde(default)]
    pub injected: bool,
    /// Of the prompt tokens: read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: i64,
    /// Of the prompt tokens: written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: i64,
    /// The client's session id; empty when none was sent.
    #[serde(default)]
    pub session: String,
}

pub fn request_log(c: &Connection, q: &RequestLogQuery) -> ApiResult<Vec<LoggedRequest>> {
    let (from, to) = range(&q.from, &q.to)?;
    if let Some(o) = &q.outcome {
        if switchboard_shared::usage::Outcome::parse(o).is_none() {
            return Err(ApiError::invalid_field("outcome", "expected ok, error, client_closed or upstream_cut"));
        }
    }
    let mut sql = String::from(
        "SELECT ts_ms, request_id, org, key_id, model, route, target, upstream_model, endpoint, stream, status, \
         outcome, attempts, cache_hit, MAX(CAST(prompt_tokens AS INTEGER), 0), \
         MAX(CAST(completion_tokens AS INTEGER), 0), MAX(CAST(total_tokens AS INTEGER), 0), estimated, \
         MAX(CAST(cost_nanos AS INTEGER), 0), MAX(CAST(latency_us AS INTEGER), 0), MAX(CAST(ttft_us AS INTEGER), 0), \
         MAX(CAST(upstream_us AS INTEGER), 0), clamped, uid, injected, MAX(CAST(cache_read_tokens AS INTEGER), 0), \
         MAX(CAST(cache_write_tokens AS INTEGER), 0), session FROM request_log WHERE ts_ms >= ?1 AND ts_ms < ?2",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![(from * 1000).into(), (to * 1000).into()];
    let mut filter = |col: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&format!(" AND {col} = ?{}", args.len()));
    };
    for (col, v) in [
        ("org", &q.org),
        ("key_id", &q.key),
        ("model", &q.model),
        ("route", &q.route),
        ("target", &q.target),
        ("outcome", &q.outcome),
        ("request_id", &q.request_id),
        ("session", &q.session),
    ] {
        if let Some(v) = v {
            filter(col, v.clone().into());
        }
    }
    if let Some(s) = q.status {
        filter("status", (s as i64).into());
    }
    if let Some(i) = q.injected {
        filter("injected", (i as i64).into());
    }
    match (q.before, &q.before_id) {
        (Some(b), Some(id)) => {
            args.push(b.into());
            args.push(id.clone().into());
            let (t, i) = (args.len() - 1, args.len());
            sql.push_str(&format!(" AND (ts_ms < ?{t} OR (ts_ms = ?{t} AND uid > ?{i}))"));
        }
        (Some(b), None) => {
            args.push(b.into());
            sql.push_str(&format!(" AND ts_ms < ?{}", args.len()));
        }
        (None, Some(_)) => return Err(ApiError::invalid_field("before_id", "`before_id` needs `before`")),
        (None, None) => {}
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "`limit` must be 1 to 1000"));
    }
    sql.push_str(&format!(" ORDER BY ts_ms DESC, uid LIMIT {limit}"));
    let mut st = c.prepare(&sql)?;
    let ms = |us: i64| us as f64 / 1000.0;
    let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
        let ts_ms: i64 = r.get(0)?;
        Ok(LoggedRequest {
            id: r.get(23)?,
            ts_ms,
            time: format_time(ts_ms.div_euclid(1000)),
            request_id: r.get(1)?,
            org: r.get(2)?,
            key: r.get(3)?,
            model: r.get(4)?,
            route: r.get(5)?,
            target: r.get(6)?,
            upstream_model: r.get(7)?,
            endpoint: r.get(8)?,
            stream: r.get(9)?,
            status: r.get(10)?,
            outcome: r.get(11)?,
            attempts: r.get(12)?,
            cache_hit: r.get(13)?,
            prompt_tokens: r.get(14)?,
            completion_tokens: r.get(15)?,
            total_tokens: r.get(16)?,
            estimated: r.get(17)?,
            cost_usd: nanos_to_usd(r.get(18)?),
            latency_ms: ms(r.get(19)?),
            ttft_ms: ms(r.get(20)?),
            upstream_ms: ms(r.get(21)?),
            clamped: r.get(22)?,
            injected: r.get(24)?,
            cache_read_tokens: r.get(25)?,
            cache_write_tokens: r.get(26)?,
            session: r.get(27)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether a record with this uid was accounted (tests, diagnostics).
pub fn has_record(c: &Connection, uid: &str) -> ApiResult<bool> {
    Ok(c.query_row("SELECT 1 FROM request_log WHERE uid = ?1", [uid], |_| Ok(())).optional()?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format() {
        assert_eq!(parse_time("from", "0").unwrap(), 0);
        assert_eq!(parse_time("from", "2026-11-22").unwrap(), 1_795_305_600);
        assert_eq!(parse_time("from", "2026-11-22T03:04:05Z").unwrap(), 1_795_305_600 + 3 * 3600 + 4 * 60 + 5);
        assert_eq!(format_time(1_795_305_600 + 3 * 3600 + 4 * 60 + 5), "2026-11-22T03:04:05Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(parse_time("from", "2000-02-29").unwrap(), 951_782_400);
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-11-22 03:04:05",
            "2026-1-22",
            "2026-11-22T03:04:05+01:00",
            "2026-02-30",
            "2027-02-29",
            "2026-04-31",
            "-1",
            "9223372036854775807",
        ] {
            assert!(parse_time("from", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_quotes_and_defuses() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
    }
}
