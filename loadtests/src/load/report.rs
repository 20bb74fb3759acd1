//! Results as a human table, JSON, and SVG plots.

use super::stats::Stats;
use super::RunResult;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write;

pub const QUANTILES: [(&str, f64); 5] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)];

fn q(h: &Histogram<u64>, quantile: f64) -> Option<u64> {
    if h.is_empty() {
        None
    } else if quantile >= 1.0 {
        Some(h.max())
    } else {
        Some(h.value_at_quantile(quantile))
    }
}

fn fmt_us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us >= 10_000_000 => format!("{:.1}s", us as f64 / 1e6),
        Some(us) if us >= 10_000 => format!("{:.1}ms", us as f64 / 1e3),
        Some(us) => format!("{us}us"),
    }
}

fn pct_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (name, quant) in QUANTILES {
        m.insert(name.to_string(), json!(q(h, quant)));
    }
    m.insert("count".into(), json!(h.len()));
    m.insert("mean".into(), json!(if h.is_empty() { None } else { Some(h.mean()) }));
    Value::Object(m)
}

fn stats_json(s: &Stats, secs: f64) -> Value {
    json!({
        "ok": s.ok,
        "expected_failures": s.expected_failures,
        "errors": s.errors,
        "requests_per_sec": if secs > 0.0 { s.completed() as f64 / secs } else { 0.0 },
        "seconds": secs,
        "latency_us": pct_json(&s.total),
        "ttft_us": pct_json(&s.ttft),
        "token_gap_us": pct_json(&s.gap),
        "tokens_per_sec_per_stream": pct_json(&s.tps),
        "streams": s.streams,
        "tokens": s.tokens,
        "lost_tokens": s.lost_tokens,
        "batched_reads": s.batched_reads,
        "bytes_received": s.bytes_received,
    })
}

/// Gateway pX minus direct pX, in microseconds (may be negative: noise).
pub fn added(g: &Histogram<u64>, b: &Histogram<u64>) -> Vec<(&'static str, Option<i64>)> {
    QUANTILES[..4]
        .iter()
        .map(|(name, quant)| (*name, q(g, *quant).zip(q(b, *quant)).map(|(x, y)| x as i64 - y as i64)))
        .collect()
}

pub fn cpu_us_per_request(r: &RunResult) -> Option<f64> {
    let ns = r.gateway_cpu_ns?;
    let n = r.gateway.completed();
    (n > 0).then(|| ns as f64 / 1000.0 / n as f64)
}

pub fn upstream_cpu_us_per_request(r: &RunResult) -> Option<f64> {
    let ns = r.upstream_cpu_ns?;
    let n = r.gateway.completed() + r.baseline.as_ref().map_or(0, Stats::completed);
    (n > 0).then(|| ns as f64 / 1000.0 / n as f64)
}

pub fn to_json(r: &RunResult, settings: Value) -> Value {
    let mut out = json!({
        "settings": settings,
        "gateway": stats_json(&r.gateway, r.gateway_secs),
        "gateway_cpu_us_per_request": cpu_us_per_request(r),
        "upstream_cpu_us_per_request": upstream_cpu_us_per_request(r),
    });
    if let Some(b) = &r.baseline {
        out["baseline"] = stats_json(b, r.baseline_secs);
        let mut add = serde_json::Map::new();
        for (metric, g, bh) in [
            ("latency_us", &r.gateway.total, &b.total),
            ("ttft_us", &r.gateway.ttft, &b.ttft),
            ("token_gap_us", &r.gateway.gap, &b.gap),
        ] {
            let m: serde_json::Map<String, Value> =
                added(g, bh).into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            add.insert(metric.to_string(), Value::Object(m));
        }
        out["added"] = Value::Object(add);
    }
    out
}

fn row(out: &mut String, label: &str, h: &Histogram<u64>) {
    let _ = write!(out, "  {label:<22}");
    for (_, quant) in QUANTILES {
        let _ = write!(out, "{:>10}", fmt_us(q(h, quant)));
    }
    out.push('\n');
}

pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    let mut targets = vec![("gateway", &r.gateway, r.gateway_secs)];
    if let Some(b) = &r.baseline {
        targets.push(("direct", b, r.baseline_secs));
    }
    let _ = writeln!(
        out,
        "{:<10}{:>10}{:>10}{:>10}{:>10}{:>12}",
        "target", "requests", "ok", "expected", "errors", "req/s"
    );
    for (name, s, secs) in &targets {
        let rate = if *secs > 0.0 { s.completed() as f64 / secs } else { 0.0 };
        let _ = writeln!(
            out,
            "{name:<10}{:>10}{:>10}{:>10}{:>10}{:>12.0}",
            s.completed(),
            s.ok,
            s.expected_failures,
            s.error_count(),
            rate
        );
    }
    let _ = write!(out, "\n  {:<22}", "latency");
    for (name, _) in QUANTILES {
        let _ = write!(out, "{name:>10}");
    }
    out.push('\n');
    for (name, s, _) in &targets {
        row(&mut out, &format!("{name} total"), &s.total);
        if !s.ttft.is_empty() {
            row(&mut out, &format!("{name} first token"), &s.ttft);
            row(&mut out, &format!("{name} token gap"), &s.gap);
        }
    }
    if let Some(b) = &r.baseline {
        for (metric, g, bh) in [
            ("total", &r.gateway.total, &b.total),
            ("first token", &r.gateway.ttft, &b.ttft),
            ("token gap", &r.gateway.gap, &b.gap),
        ] {
            if g.is_empty() {
                continue;
            }
            let _ = write!(out, "  {:<22}", format!("added {metric}"));
            for (_, v) in added(g, bh) {
                let _ = write!(out, "{:>10}", v.map_or("-".into(), |v| format!("{v}us")));
            }
            out.push('\n');
        }
    }
    for (name, s, _) in &targets {
        if s.streams > 0 {
            let _ = writeln!(
                out,
                "\n  {name}: {} streams, {} tokens, {} lost, {} reads carried 2+ tokens, tokens/s per stream p50 {}",
                s.streams,
                s.tokens,
                s.lost_tokens,
                s.batched_reads,
                q(&s.tps, 0.5).map_or("-".into(), |v| v.to_string())
            );
        }
        if !s.errors.is_empty() {
            let list: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "  {name} errors: {}", list.join(", "));
        }
    }
    if let Some(cpu) = cpu_us_per_request(r) {
        let _ = writeln!(out, "\n  gateway CPU: {cpu:.1} us per request ({:.0} requests per CPU-second)", 1e6 / cpu);
    }
    if let Some(cpu) = upstream_cpu_us_per_request(r) {
        let _ = writeln!(out, "  upstream CPU: {cpu:.1} us per request");
    }
    out
}

/// A named, coloured line of (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// SVG: latency by percentile (x: 0, 90, 99, 99.9, 99.99 on a log scale of
/// 1/(1-p)), one line per target.
pub fn svg_percentiles(r: &RunResult) -> String {
    let mut series = vec![("gateway", "#d62728", &r.gateway.total)];
    if let Some(b) = &r.baseline {
        series.push(("direct", "#1f77b4", &b.total));
    }
    let points: Vec<Series> = series
        .iter()
        .map(|(name, color, h)| {
            let pts = (0..=40)
                .filter_map(|i| {
                    let x = i as f64 / 10.0; // 0..4 nines
                    let quant = 1.0 - 10f64.powf(-x);
                    q(h, quant.min(0.9999)).map(|v| (x, v as f64))
                })
                .collect();
            (*name, *color, pts)
        })
        .collect();
    let ymax = points.iter().flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y)).fold(1.0, f64::max);
    let labels = [(0.0, "p0"), (1.0, "p90"), (2.0, "p99"), (3.0, "p99.9"), (4.0, "p99.99")];
    plot("Latency by percentile (us)", &points, 4.0, ymax, &labels)
}

/// SVG: p99 latency by load level for a sweep.
pub fn svg_sweep(rows: &[(f64, Option<u64>)], unit: &str) -> String {
    let pts: Vec<(f64, f64)> =
        rows.iter().enumerate().filter_map(|(i, (_, p99))| p99.map(|v| (i as f64, v as f64))).collect();
    let ymax = pts.iter().map(|(_, y)| *y).fold(1.0, f64::max);
    let labels: Vec<(f64, String)> =
        rows.iter().enumerate().map(|(i, (lvl, _))| (i as f64, format!("{lvl}"))).collect();
    let label_refs: Vec<(f64, &str)> = labels.iter().map(|(x, s)| (*x, s.as_str())).collect();
    plot(
        &format!("p99 latency (us) by {unit}"),
        &[("p99", "#d62728", pts)],
        (rows.len().max(2) - 1) as f64,
        ymax,
        &label_refs,
    )
}

fn plot(title: &str, series: &[Series], xmax: f64, ymax: f64, xlabels: &[(f64, &str)]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 40.0, 40.0, 20.0);
    let sx = |x: f64| left + x / xmax.max(1e-9) * (w - left - right);
    let sy = |y: f64| h - bottom - y / ymax * (h - bottom - top);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="24" font-size="14">{title}</text>"#
    );
    let _ =
        writeln!(s, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, h - bottom, w - right, h - bottom);
    let _ = writeln!(s, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#, h - bottom);
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#, left - 6.0, sy(y) + 4.0, y);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/>"##, sy(y), w - right);
    }
    for (x, label) in xlabels {
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#, sx(*x), h - bottom + 16.0);
    }
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, path.join(" "));
        let _ =
            writeln!(s, r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#, w - right - 80.0, top + 16.0 * i as f64);
    }
    s.push_str("</svg>\n");
    s
}
