//! Extreme values into every admin body, every query a report takes, and
//! every usage field a remote data plane or node can send: 0, -1, 2^63-1,
//! 2^64-1, past 2^64, ±1e308, NaN (not JSON: a 400), huge and odd-Unicode
//! strings, null, wrong types. Nothing may panic or answer 5xx, the data plane
//! keeps serving, and the admin still starts on the database afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The extreme leaves, as raw JSON text (so NaN and 2^64 can be sent as is).
fn extremes() -> Vec<String> {
    let huge = "a".repeat(100_000);
    vec![
        "0".into(),
        "-1".into(),
        i64::MAX.to_string(),
        u64::MAX.to_string(),
        "18446744073709551616".into(),
        "1e308".into(),
        "-1e308".into(),
        "NaN".into(),
        "null".into(),
        "true".into(),
        "[]".into(),
        "{}".into(),
        json!(huge).to_string(),
        json!("\u{202e}evil\u{200b}").to_string(),
        json!("\u{0}\u{1b}[31m").to_string(),
        json!("😀".repeat(300)).to_string(),
        r#""\ud800""#.into(),
        json!("").to_string(),
    ]
}

/// Every leaf of `v`, as a path of object keys and array indexes.
fn leaves(v: &Value, path: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(json!(k));
                leaves(child, path, out);
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, child) in a.iter().enumerate() {
                path.push(json!(i));
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// `template` with the leaf at `path` replaced by `raw` JSON text.
fn with_leaf(template: &Value, path: &[Value], raw: &str) -> String {
    const MARK: &str = "\u{1}__EXTREME__\u{1}";
    let mut v = template.clone();
    let mut at = &mut v;
    for step in path {
        at = match step {
            Value::String(k) => &mut at[k.as_str()],
            Value::Number(n) => &mut at[n.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    *at = json!(MARK);
    v.to_string().replace(&json!(MARK).to_string(), raw)
}

fn send(gw: &AdminGateway, method: &str, path: &str, body: &str) -> Response {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n", gw.token);
    s.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    let mut c = Conn::open(gw.admin);
    c.set_timeout(Duration::from_secs(20));
    c.send(s.as_bytes());
    c.response()
}

#[test]
fn extreme_values_in_admin_bodies_queries_and_usage_never_panic_or_5xx_and_start_up_survives() {
    let up = mock();
    let cfg = one_provider_config(&up.base_url());
    let gw = AdminGateway::start(&cfg);
    let url = up.base_url();
    let record = json!({
        "uid": "u-1", "ts_ms": 1_795_305_600_000u64, "request_id": "r", "org": "acme", "key_id": "k", "model": "m",
        "route": "m", "target": "node:ws1", "upstream_model": "m", "endpoint": "chat.completions", "stream": false,
        "status": 200, "outcome": "ok", "attempts": 1, "cache_hit": false, "prompt_tokens": 1, "completion_tokens": 1,
        "total_tokens": 2, "estimated": false, "cost_nanos": 1, "latency_us": 1, "ttft_us": 1, "upstream_us": 1
    });
    let quota = json!([{"period": "day", "max_usd": 1.0, "max_tokens": 1}]);
    let provider = json!({
        "name": "p2", "base_url": url, "api_keys": ["sk-x"], "headers": {"X-A": "b"}, "ca_file": null,
        "connect_timeout_ms": 1000, "first_byte_timeout_ms": 1000, "read_timeout_ms": 1000,
        "models": [{"name": "m", "prompt_per_mtok": 1.0, "completion_per_mtok": 1.0}],
        "eject_after_failures": 5, "eject_ms": 1000, "probe_interval_ms": 0, "probe_path": "/models"
    });
    let route = json!({
        "name": "r2", "strategy": "weighted",
        "targets": [{"provider": "p", "model": "x", "weight": 1}, {"nodes": "llama", "prompt_per_mtok": 1.0, "completion_per_mtok": 1.0}],
        "retry": {"max_attempts": 2, "per_attempt_timeout_ms": 1000, "deadline_ms": 1000, "backoff_ms": 10},
        "allow_strategy_header": false, "failover_on": ["5xx"], "cache": {"mode": "always", "ttl_ms": 1000}
    });
    let bodies: Vec<(&str, &str, Value)> = vec![
        ("POST", "/v1/admin/orgs", json!({"name": "o"})),
        ("PATCH", "/v1/admin/orgs/acme", json!({"name": "acme"})),
        (
            "POST",
            "/v1/admin/keys",
            json!({"org": "acme", "name": "k2", "models": ["m"], "expires_at": 1, "enabled": true}),
        ),
        ("PATCH", "/v1/admin/keys/k", json!({"name": "k", "models": ["m"], "expires_at": 1, "enabled": true})),
        ("POST", "/v1/admin/providers", provider.clone()),
        ("PATCH", "/v1/admin/providers/p", provider),
        ("POST", "/v1/admin/routes", route.clone()),
        ("PATCH", "/v1/admin/routes/m", route),
        ("POST", "/v1/admin/tokens", json!({"name": "t", "role": "read"})),
        ("PUT", "/v1/admin/keys/k/limits", json!({"rpm": 1, "tpm": 1, "quotas": quota})),
        (
            "PUT",
            "/v1/admin/orgs/acme/limits",
            json!({"rpm": 1, "tpm": 1, "quotas": quota, "models": [{"model": "m", "rpm": 1, "tpm": 1}]}),
        ),
        ("POST", "/v1/admin/enrollment-tokens", json!({"org": "acme", "name": "e", "expires_in_s": 60, "max_uses": 1})),
        ("POST", "/v1/nodes/enroll", json!({"token": "sbe-x", "name": "ws", "version": "1"})),
        ("POST", "/v1/admin/usage/ingest", json!({"records": [record]})),
    ];
    let mut sent = 0;
    let mut uid = 0;
    for (method, path, template) in &bodies {
        let mut paths = Vec::new();
        leaves(template, &mut Vec::new(), &mut paths);
        for p in &paths {
            for raw in extremes() {
                let mut body = with_leaf(template, p, &raw);
                if path.ends_with("/ingest") {
                    // A fresh record each time (a repeated uid is a no-op).
                    uid += 1;
                    body = body.replacen("\"u-1\"", &format!("\"u-{uid}\""), 1);
                }
                let r = send(&gw, method, path, &body);
                sent += 1;
                assert!(r.status < 500, "{method} {path} with {p:?} = {:.80}: {} {}", raw, r.status, r.text());
                assert!(!r.text().contains(&"a".repeat(10_000)), "{method} {path} echoed a huge value back");
            }
        }
    }
    assert!(sent > 1000, "{sent}");

    // Reports over everything ingested, with extreme queries too.
    for q in [
        "/v1/admin/usage?from=0",
        "/v1/admin/usage?from=0&granularity=total&group_by=org,key,model,route,target",
        "/v1/admin/usage?from=-9223372036854775808&to=9223372036854775807",
        "/v1/admin/usage?from=2026-02-30",
        "/v1/admin/usage/top-keys?from=0&by=tokens&limit=4294967295",
        "/v1/admin/requests?from=0&limit=0",
        "/v1/admin/requests?from=0&before=-1&before_id=%E2%80%AE",
        "/v1/admin/orgs?offset=18446744073709551615",
        "/v1/admin/keys?limit=-1",
        "/v1/admin/audit?since=-9223372036854775808",
        "/v1/admin/snapshot?after=18446744073709551615&wait_ms=18446744073709551615&instance=x",
    ] {
        let mut c = Conn::open(gw.admin);
        c.set_timeout(Duration::from_secs(70));
        c.send(format!("GET {q} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\r\n", gw.token).as_bytes());
        let r = c.response();
        assert!(r.status < 500, "{q}: {} {}", r.status, r.text());
    }
    // The data plane kept serving throughout (once the key, route and
    // provider are set back: some extremes, like `expires_at: 0`, are valid).
    for (path, body) in [
        ("/v1/admin/keys/k", json!({"expires_at": null, "enabled": true, "models": ["*"]})),
        ("/v1/admin/providers/p", json!({"base_url": url, "api_keys": [], "headers": {}})),
        (
            "/v1/admin/routes/m",
            json!({"strategy": "priority", "targets": [{"provider": "p"}], "retry": {}, "cache": {"mode": "off"}}),
        ),
    ] {
        let r = gw.call("PATCH", path, Some(&body));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in ["/v1/admin/keys/k/limits", "/v1/admin/orgs/acme/limits"] {
        let r = gw.call("PUT", path, Some(&json!({})));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());

    // And the admin starts again on what is in the database.
    let dir = gw.stop();
    let gw = AdminGateway::start_in(dir, &cfg);
    let r = gw.call("GET", "/v1/admin/usage?from=0&granularity=total", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}
