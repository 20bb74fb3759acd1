//! Usage accounting end to end: requests through the gateway over loopback,
//! records through the usage pipeline into a real SQLite file, read back with
//! SQL and through the admin API, and checked against what the mock upstreams
//! actually counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_loadtests::MockHandle;

const KEY2: &str = "sk-test-second-key";

/// Prices (USD per million tokens): upstream `a` serves `m1`, `b` serves `m2` as `m2-up`.
const A_PRICES: (f64, f64) = (2.5, 10.0);
const B_PRICES: (f64, f64) = (0.15, 0.6);

fn config(a: &str, b: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2

{extra}

[[upstreams]]
name = "a"
base_url = "{a}"
prices = [{{ model = "m1", prompt_per_mtok = {}, completion_per_mtok = {} }}]

[[upstreams]]
name = "b"
base_url = "{b}"
prices = [{{ model = "m2-up", prompt_per_mtok = {}, completion_per_mtok = {} }}]

[[models]]
name = "m1"
targets = [{{ upstream = "a" }}]

[[models]]
name = "m2"
targets = [{{ upstream = "b", model = "m2-up" }}]

[[keys]]
id = "k1"
org = "acme"
hash = "{}"

[[keys]]
id = "k2"
org = "beta"
hash = "{}"
"#,
        A_PRICES.0,
        A_PRICES.1,
        B_PRICES.0,
        B_PRICES.1,
        key_hash(KEY),
        key_hash(KEY2)
    )
}

/// Expected totals per (key, upstream model), from what the mocks received:
/// the mock reports ceil(body bytes / 4) prompt tokens and `mock.tokens`
/// completion tokens; the `user` field says which key sent it.
fn expected(mocks: &[&MockHandle]) -> BTreeMap<(String, String), (u64, u64, u64)> {
    let mut want: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for m in mocks {
        for r in m.recorded() {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let key = v["user"].as_str().unwrap().split('/').next().unwrap().to_string();
            let model = v["model"].as_str().unwrap().to_string();
            let e = want.entry((key, model)).or_default();
            e.0 += 1;
            e.1 += r.body.len().div_ceil(4) as u64;
            e.2 += v["mock"]["tokens"].as_u64().unwrap();
        }
    }
    want
}

fn db(gw: &AdminGateway) -> rusqlite::Connection {
    rusqlite::Connection::open(&gw.db_path).unwrap()
}

#[test]
fn mixed_load_totals_match_exactly_per_key_model_and_target() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a.base_url(), &b.base_url(), ""));
    let threads = 4;
    let per_thread = 30;
    std::thread::scope(|s| {
        for t in 0..threads {
            let gw = &gw;
            s.spawn(move || {
                let key = if t % 2 == 0 { KEY } else { KEY2 };
                let key_id = if t % 2 == 0 { "k1" } else { "k2" };
                let mut c = Conn::open(gw.addr);
                for i in 0..per_thread {
                    let model = if i % 2 == 0 { "m1" } else { "m2" };
                    let tokens = 1 + (i * 7 + t) % 9;
                    let stream = match i % 3 {
                        0 => "",
                        1 => r#","stream":true"#,
                        _ => r#","stream":true,"stream_options":{"include_usage":true}"#,
                    };
                    let body = format!(
                        r#"{{"model":"{model}","user":"{key_id}/{t}/{i}","messages":[{{"role":"user","content":"{}"}}],"mock":{{"tokens":{tokens}}}{stream}}}"#,
                        "x".repeat(i * 13)
                    );
                    c.send(&request("POST", "/v1/chat/completions", Some(key), &body, &[]));
                    let r = c.response();
                    assert_eq!(r.status, 200, "{}", r.text());
                    if i % 3 == 1 {
                        assert!(
                            !sse_data(&r.body).iter().any(|d| d.contains("\"usage\":{")),
                            "a usage chunk the client did not ask for"
                        );
                    }
                    if i % 3 == 2 {
                        let usage = sse_data(&r.body).iter().filter(|d| d.contains("\"usage\":{")).count();
                        assert_eq!(usage, 1, "the usage chunk the client asked for");
                    }
                }
            });
        }
    });
    let n = (threads * per_thread) as u64;
    gw.wait_usage_written(n);
    let want = expected(&[&a, &b]);
    assert_eq!(want.values().map(|v| v.0).sum::<u64>(), n);

    // The rollups, by key and upstream model (= target here), straight from SQLite.
    let conn = db(&gw);
    let mut st = conn
        .prepare(
            "SELECT key_id, target, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(total_tokens), \
             SUM(cost_nanos), SUM(estimated), SUM(errors) FROM usage_minute GROUP BY key_id, target ORDER BY key_id, target",
        )
        .unwrap();
    type Row = (String, String, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let mut total_cost = 0.0;
    for (key, target, requests, prompt, completion, total, cost_nanos, estimated, errors) in &rows {
        let model = if target == "a" { "m1" } else { "m2-up" };
        let (wn, wp, wc) = want[&(key.clone(), model.to_string())];
        assert_eq!((*requests as u64, *prompt as u64, *completion as u64), (wn, wp, wc), "{key}/{target}");
        assert_eq!(*total, prompt + completion);
        assert_eq!((*estimated, *errors), (0, 0));
        let (pp, cp) = if target == "a" { A_PRICES } else { B_PRICES };
        let cost = wp as f64 * pp / 1e6 + wc as f64 * cp / 1e6;
        // Exact to the nano-dollar per request (rounding), far inside a cent.
        assert!((*cost_nanos as f64 / 1e9 - cost).abs() < 1e-9 * wn as f64, "{key}/{target}: {cost_nanos} vs {cost}");
        total_cost += cost;
    }
    // The raw log agrees with the rollups.
    let (log_rows, log_tokens): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(total_tokens) FROM request_log", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(log_rows as u64, n);
    assert_eq!(log_tokens, rows.iter().map(|r| r.5).sum::<i64>());

    // The admin API reports the same, as JSON and as CSV.
    let report = gw.call("GET", "/v1/admin/usage?group_by=key,model,target&granularity=total", None).json();
    let data = report["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    for row in data {
        let model = row["model"].as_str().unwrap();
        let upstream_model = if model == "m1" { "m1" } else { "m2-up" };
        let (wn, wp, wc) = want[&(row["key"].as_str().unwrap().to_string(), upstream_model.to_string())];
        assert_eq!(row["requests"], wn);
        assert_eq!(row["prompt_tokens"], wp);
        assert_eq!(row["completion_tokens"], wc);
    }
    let api_cost: f64 = data.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
    assert!((api_cost - total_cost).abs() < 0.005, "{api_cost} vs {total_cost}");
    let csv = gw.call("GET", "/v1/admin/usage?group_by=org&granularity=day&format=csv", None);
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("period,org,requests,"), "{text}");
    let csv_requests: u64 = lines[1..].iter().map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(csv_requests, n);
    let top = gw.call("GET", "/v1/admin/usage/top-keys?by=cost", None).json();
    let top = top["data"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert!(top[0]["cost_usd"].as_f64().unwrap() >= top[1]["cost_usd"].as_f64().unwrap());
    let log = gw.call("GET", "/v1/admin/requests?key=k2&model=m2&limit=5", None).json();
    let log = log["data"].as_array().unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|r| r["key"] == "k2" && r["target"] == "b" && r["upstream_model"] == "m2-up"));
    assert!(log.windows(2).all(|w| w[0]["ts_ms"].as_i64() >= w[1]["ts_ms"].as_i64()), "newest first");
}

#[test]
fn the_gateway_asks_for_usage_and_strips_it_only_when_the_client_did_not() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a.base_url(), &b.base_url(), ""));
    let plain = gw.chat(KEY, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"x_other":1},"mock":{"tokens":3}}"#);
    let asked =
        gw.chat(KEY, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"mock":{"tokens":3}}"#);
    for r in [&plain, &asked] {
        assert_eq!(r.status, 200);
        assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    }
    assert!(!sse_data(&plain.body).iter().any(|d| d.contains("\"usage\"")), "{}", plain.text());
    assert_eq!(sse_data(&asked.body).iter().filter(|d| d.contains("\"usage\":{")).count(), 1);
    // Both reached the upstream asking for usage; other options kept.
    let rec = a.recorded();
    let sent: Vec<serde_json::Value> = rec.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    assert_eq!(sent[0]["stream_options"], serde_json::json!({"include_usage": true, "x_other": 1}));
    assert_eq!(sent[1]["stream_options"], serde_json::json!({"include_usage": true}));
    gw.wait_usage_written(2);
    let conn = db(&gw);
    let rows: Vec<(i64, i64, bool)> = conn
        .prepare("SELECT prompt_tokens, completion_tokens, estimated FROM request_log ORDER BY ts_ms")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    // Both requests can land in the same millisecond: compare as sets, not by time order.
    let mut prompts: Vec<usize> = rows.iter().map(|(p, _, _)| *p as usize).collect();
    let mut expected: Vec<usize> = rec.iter().map(|r| r.body.len().div_ceil(4)).collect();
    prompts.sort_unstable();
    expected.sort_unstable();
    assert_eq!(prompts, expected);
    assert!(rows.iter().all(|(_, c, est)| (*c, *est) == (3, false)), "{rows:?}");
}

#[test]
fn an_upstream_without_usage_is_estimated_and_flagged() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a.base_url(), &b.base_url(), ""));
    let words = "hello world ".repeat(20);
    for stream in [false, true] {
        let body = format!(
            r#"{{"model":"m1","stream":{stream},"messages":[{{"role":"user","content":"{words}"}}],"mock":{{"tokens":6,"no_usage":true}}}}"#
        );
        assert_eq!(gw.chat(KEY, &body).status, 200);
    }
    gw.wait_usage_written(2);
    let conn = db(&gw);
    let rows: Vec<(bool, i64, i64, bool)> = conn
        .prepare("SELECT stream, prompt_tokens, completion_tokens, estimated FROM request_log ORDER BY stream")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // The prompt estimate counts the text fields (here the 240 bytes of content).
    let prompt = words.len().div_ceil(4) as i64;
    // Non-stream: the reply text ("tok " x 6 by default token text) / 4; stream: one token per chunk.
    assert!(!rows[0].0);
    assert_eq!(rows[0].1, prompt);
    assert!(rows[0].2 > 0);
    assert!(rows[0].3, "flagged as estimated");
    assert_eq!(rows[1], (true, prompt, 6, true));
    let est: i64 = conn.query_row("SELECT SUM(estimated) FROM usage_minute", [], |r| r.get(0)).unwrap();
    assert_eq!(est, 2);
}

#[test]
fn failures_are_accounted_with_their_status_and_no_tokens() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a.base_url(), &b.base_url(), ""));
    assert_eq!(
        gw.chat(KEY, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"mock":{"status":400}}"#).status,
        400
    );
    assert_eq!(
        gw.chat(KEY, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"mock":{"status":503}}"#).status,
        503
    );
    // Not routed: no usage record (unknown model, bad key).
    assert_eq!(gw.chat(KEY, r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#).status, 404);
    assert_eq!(gw.chat("sk-wrong", r#"{"model":"m1","messages":[{"role":"user","content":"hi"}]}"#).status, 401);
    gw.wait_usage_written(2);
    std::thread::sleep(Duration::from_millis(300));
    let conn = db(&gw);
    let rows: Vec<(u16, String, i64, i64)> = conn
        .prepare("SELECT status, outcome, total_tokens, cost_nanos FROM request_log ORDER BY status")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec![(400, "ok".into(), 0, 0), (503, "ok".into(), 0, 0)]);
    let errors: i64 = conn.query_row("SELECT SUM(errors) FROM usage_minute", [], |r| r.get(0)).unwrap();
    assert_eq!(errors, 2);
}

#[test]
fn a_stalled_database_does_not_stop_the_data_path_and_loses_nothing() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    // A small in-memory bound, so the stall reaches the spill file.
    let extra = "[usage]\npending_records = 256\nflush_interval_ms = 20\nbatch_records = 64\n";
    let gw = AdminGateway::start_in(dir, &config(&a.base_url(), &b.base_url(), extra));
    assert_eq!(gw.chat(KEY, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    gw.wait_usage_written(1);

    // Another connection takes the database's write lock and keeps it.
    let locker = db(&gw);
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let n = 800;
    std::thread::scope(|s| {
        for t in 0..4 {
            let gw = &gw;
            s.spawn(move || {
                let mut c = Conn::open(gw.addr);
                for i in 0..n / 4 {
                    let body = format!(r#"{{"model":"m2","messages":[{{"role":"user","content":"hi"}}],"user":"{t}-{i}","mock":{{"tokens":2}}}}"#);
                    c.send(&request("POST", "/v1/chat/completions", Some(KEY), &body, &[]));
                    assert_eq!(c.response().status, 200);
                }
            });
        }
    });
    // Every request was served while the database was locked.
    let stats = gw.usage.as_ref().unwrap().stats.clone();
    assert!(
        eventually(Duration::from_secs(10), || stats.spilled.load(Ordering::Relaxed) > 0),
        "the stall did not reach the spill file"
    );
    assert_eq!(stats.written.load(Ordering::Relaxed), 1, "nothing written while locked");
    let metrics = gw.metrics().render();
    assert!(metrics.contains("switchboard_usage_records_lost_total 0\n"), "{metrics}");

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    gw.wait_usage_written(1 + n as u64);
    let conn = db(&gw);
    let (rows, requests): (i64, i64) = conn
        .query_row("SELECT (SELECT COUNT(*) FROM request_log), (SELECT SUM(requests) FROM usage_minute)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((rows, requests), (1 + n as i64, 1 + n as i64), "every record accounted exactly once");
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
    assert!(stats.replayed.load(Ordering::Relaxed) > 0);
}

/// Unix milliseconds now: records a test writes are stamped relative to the
/// clock, never at a fixed date that retention would one day expire.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A spilled record as a previous run would have left it.
fn spilled(uid: &str, ts_ms: u64) -> switchboard_shared::usage::UsageRecord {
    switchboard_shared::usage::UsageRecord {
        uid: uid.into(),
        ts_ms,
        request_id: format!("req-{uid}"),
        org: "acme".into(),
        key_id: "k1".into(),
        model: "m1".into(),
        route: "m1".into(),
        target: "a".into(),
        upstream_model: "m1".into(),
        endpoint: "chat.completions".into(),
        stream: false,
        status: 200,
        outcome: switchboard_shared::usage::Outcome::Ok,
        attempts: 1,
        cache_hit: false,
        prompt_tokens: 10,
        completion_tokens: 20,
        total_tokens: 30,
        estimated: false,
        cost_nanos: 225_000,
        latency_us: 1_000,
        ttft_us: 500,
        upstream_us: 800,
        clamped: false,
        injected: false,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        session: String::new(),
    }
}

#[test]
fn spilled_records_from_a_previous_run_are_replayed_once_at_start() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("usage.spill");
    let mut text = String::new();
    for uid in ["s1", "s2", "s1"] {
        text.push_str(&serde_json::to_string(&spilled(uid, now_ms())).unwrap());
        text.push('\n');
    }
    // A line cut short by a crash mid-write.
    text.push_str("{\"uid\":\"s3\",\"ts_");
    std::fs::write(&spill, text).unwrap();
    let gw = AdminGateway::start_in(dir, &config(&a.base_url(), &b.base_url(), ""));
    gw.wait_usage_written(3);
    let conn = db(&gw);
    let (rows, tokens): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(total_tokens) FROM request_log", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((rows, tokens), (2, 60), "the duplicate line counts once");
    let minute_tokens: i64 = conn.query_row("SELECT SUM(total_tokens) FROM usage_minute", [], |r| r.get(0)).unwrap();
    assert_eq!(minute_tokens, 60);
    assert!(!spill.exists() && !gw.dir.path().join("usage.spill.replay").exists(), "the spill file is gone");
}

#[test]
fn a_replayed_record_older_than_the_retention_window_counts_in_the_rollups_only() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("usage.spill");
    // Real usage that a previous run could not write for ten days (a data
    // plane cut off from its admin), with retention at seven days.
    let ten_days_ago = now_ms() - 10 * 86_400_000;
    let mut text = String::new();
    for (uid, ts) in [("old", ten_days_ago), ("new", now_ms())] {
        text.push_str(&serde_json::to_string(&spilled(uid, ts)).unwrap());
        text.push('\n');
    }
    std::fs::write(&spill, text).unwrap();
    let gw = AdminGateway::start_in(dir, &config(&a.base_url(), &b.base_url(), "[usage]\nretention_days = 7\n"));
    gw.wait_usage_written(2);
    let conn = db(&gw);
    let minute_tokens = |from_ms: u64, to_ms: u64| -> i64 {
        conn.query_row(
            "SELECT COALESCE(SUM(total_tokens), 0) FROM usage_minute WHERE minute >= ?1 AND minute < ?2",
            [(from_ms / 60_000) as i64, (to_ms / 60_000) as i64 + 1],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(minute_tokens(ten_days_ago, ten_days_ago), 30, "the old record is in its own minute's rollup");
    assert_eq!(minute_tokens(0, now_ms()), 60);
    // Retention runs right after the replay: the raw row of the old record goes.
    assert!(eventually(Duration::from_secs(5), || {
        conn.query_row("SELECT COUNT(*) FROM request_log WHERE uid = 'old'", [], |r| r.get::<_, i64>(0)).unwrap() == 0
    }));
    let uids: Vec<String> = conn
        .prepare("SELECT uid FROM request_log")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(uids, ["new"]);
    // Reports over the old day read the rollups, so the usage is there.
    let from = (ten_days_ago / 1000) - 3_600;
    let to = (ten_days_ago / 1000) + 3_600;
    let report =
        gw.call("GET", &format!("/v1/admin/usage?from={from}&to={to}&group_by=org&granularity=total"), None).json();
    assert_eq!(report["data"][0]["total_tokens"], 30, "{report}");
    assert_eq!(report["data"][0]["requests"], 1, "{report}");
}

#[test]
fn the_access_log_has_a_line_per_request_and_no_secret() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!("[usage]\naccess_log = \"{}\"\n", log.display());
    let gw = AdminGateway::start_in(dir, &config(&a.base_url(), &b.base_url(), &extra));
    let r = gw.chat(KEY, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    assert_eq!(r.status, 200);
    let rid = r.header("x-request-id").unwrap().to_string();
    assert_eq!(gw.chat("sk-not-a-key", r#"{"model":"m1","messages":[{"role":"user","content":"hi"}]}"#).status, 401);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    assert!(eventually(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.len() == 2
    }));
    let ok = lines.iter().find(|l| l["status"] == 200).unwrap();
    assert_eq!(ok["request_id"], rid.as_str());
    assert_eq!(
        (ok["key_id"].as_str(), ok["route"].as_str(), ok["target"].as_str()),
        (Some("k1"), Some("m1"), Some("a"))
    );
    assert!(ok["latency_ms"].as_f64().unwrap() >= ok["ttft_ms"].as_f64().unwrap());
    assert!(lines.iter().any(|l| l["status"] == 401));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(KEY) && !text.contains("sk-not-a-key") && !text.contains(PROVIDER_KEY));
}

#[test]
fn metrics_are_served_and_agree_with_the_database() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a.base_url(), &b.base_url(), ""));
    for i in 0..10 {
        let stream = if i % 2 == 0 { "true" } else { "false" };
        assert_eq!(gw.chat(KEY, &format!(r#"{{"model":"m1","messages":[{{"role":"user","content":"hi"}}],"stream":{stream},"mock":{{"tokens":4}}}}"#)).status, 200);
    }
    assert_eq!(
        gw.chat(KEY, r#"{"model":"m2","messages":[{"role":"user","content":"hi"}],"mock":{"status":500}}"#).status,
        500
    );
    gw.wait_usage_written(11);
    let mut c = Conn::open(gw.addr);
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value(r#"switchboard_requests_total{model="m1",route="m1",target="a",status="200"}"#), 10.0);
    assert_eq!(value(r#"switchboard_requests_total{model="m2",route="m2",target="b",status="500"}"#), 1.0);
    let conn = db(&gw);
    let (prompt, completion): (i64, i64) = conn
        .query_row("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM usage_minute WHERE target = 'a'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(value(r#"switchboard_tokens_total{model="m1",route="m1",target="a",kind="prompt"}"#), prompt as f64);
    assert_eq!(
        value(r#"switchboard_tokens_total{model="m1",route="m1",target="a",kind="completion"}"#),
        completion as f64
    );
    assert_eq!(value("switchboard_request_duration_seconds_count"), 11.0);
    assert_eq!(value("switchboard_time_to_first_token_seconds_count"), 11.0);
    assert_eq!(value("switchboard_usage_records_written_total"), 11.0);
    assert_eq!(value("switchboard_usage_records_lost_total"), 0.0);
    assert!(value(r#"switchboard_request_duration_seconds{quantile="0.99"}"#) > 0.0);
    assert_eq!(value(r#"switchboard_responses_total{status="200"}"#), 10.0);
}

/// Counts of a client loop: requests sent, and complete 200 responses.
#[derive(Default)]
struct Tally {
    started: std::sync::atomic::AtomicU64,
    served: std::sync::atomic::AtomicU64,
}

/// One client on a keep-alive connection, sending `body(i)` until the
/// gateway goes away (a send fails, or a response is cut or not 200).
fn client_until_gone(addr: std::net::SocketAddr, tally: &Tally, body: impl Fn(usize) -> &'static str) {
    let mut c = Conn::open(addr);
    c.set_timeout(Duration::from_secs(20));
    for i in 0..100_000 {
        let body = body(i);
        if !c.try_send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[])) {
            return;
        }
        tally.started.fetch_add(1, Ordering::SeqCst);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.response())) {
            Ok(r) if r.status == 200 => {
                if body.contains("stream") {
                    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
                }
                tally.served.fetch_add(1, Ordering::SeqCst);
            }
            _ => return,
        }
    }
}

#[test]
fn sigterm_under_load_accounts_every_served_request() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchboard.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_ms = 10000

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"

[[upstreams]]
name = "up"
base_url = "{}"

[[models]]
name = "m"
targets = [{{ upstream = "up" }}]

[[keys]]
id = "k"
hash = "{}"
"#,
            up.base_url(),
            key_hash(KEY)
        ),
    )
    .unwrap();
    let mut gw = Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    let addr = gw.address("data plane listening on ");
    let tally = Tally::default();
    let code = std::thread::scope(|s| {
        for t in 0..4 {
            let tally = &tally;
            // Streams still running when SIGTERM comes must finish.
            s.spawn(move || {
                client_until_gone(addr, tally, move |i| {
                    if (i + t) % 2 == 0 {
                        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":5,"interval_ms":4}}"#
                    } else {
                        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":3}}"#
                    }
                })
            });
        }
        assert!(eventually(Duration::from_secs(20), || tally.served.load(Ordering::SeqCst) >= 200));
        gw.stop()
    });
    assert_eq!(code, 0, "exit 0 after draining");
    let n = tally.served.load(Ordering::SeqCst);
    let started = &tally.started;
    assert!(n >= 200);
    let conn = rusqlite::Connection::open(dir.path().join("switchboard.db")).unwrap();
    let (rows, ok, requests): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM request_log), (SELECT COUNT(*) FROM request_log WHERE outcome = 'ok'), \
             (SELECT SUM(requests) FROM usage_minute)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(ok as u64, n, "every response the clients got is accounted ({rows} rows)");
    assert_eq!(rows, requests);
    assert!(rows as u64 <= started.load(Ordering::SeqCst));
    assert!(!dir.path().join("switchboard.db.usage-spill").exists());
}

#[test]
fn a_full_disk_is_counted_and_logged_and_the_data_path_keeps_serving() {
    use switchboard_dataplane::usage::pipeline::UsagePipeline;
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = switchboard_shared::Config::parse(&basic_config(&up.base_url(), "")).unwrap();
    let db_path = dir.path().join("usage.db");
    // The database is full: SQLite refuses to grow it (SQLITE_FULL), as on a full disk.
    let conn = switchboard_adminapi::db::open(&db_path).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get(0)).unwrap();
    let sink = switchboard_adminapi::usage::SqliteSink::from_connection(conn, 7);
    // And the spill file cannot be written either (its folder is gone).
    let settings = switchboard_shared::UsageSettings { pending_records: 256, ..Default::default() };
    let spill = dir.path().join("gone").join("usage.spill");
    let usage = UsagePipeline::start(&settings, &spill, Some(Box::new(sink)), None).unwrap();
    let dns = switchboard_dataplane::dns::DnsCache::new();
    let prep = switchboard_dataplane::snapshot::Prepare::new(dns.clone(), Default::default());
    let snapshot = switchboard_dataplane::snapshot::compile(&cfg.routing(), 1, &prep).unwrap();
    let store = switchboard_dataplane::snapshot::SnapshotStore::new(snapshot);
    let handle = switchboard_dataplane::start_with(cfg.server, store, dns, Some(usage.clone())).unwrap();
    let n = 600;
    let mut c = Conn::open(handle.local_addr);
    for _ in 0..n {
        c.send(&request(
            "POST",
            "/v1/chat/completions",
            Some(KEY),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        ));
        assert_eq!(c.response().status, 200, "the data path keeps serving");
    }
    let stats = usage.stats.clone();
    assert!(
        eventually(Duration::from_secs(10), || stats.lost.load(Ordering::Relaxed) > 0),
        "losses are counted: {stats:?}"
    );
    assert!(stats.write_errors.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    let text = handle.metrics.render();
    let lost: u64 =
        text.lines().find_map(|l| l.strip_prefix("switchboard_usage_records_lost_total ")).unwrap().parse().unwrap();
    assert!(lost > 0 && lost <= n);
    handle.shutdown();
    // Shutting down with the database still full: what is left is spilled (here: lost,
    // the spill file is unwritable too), counted, and the pipeline still stops.
    usage.shutdown(Duration::from_millis(500));
    let accounted = stats.written.load(Ordering::Relaxed)
        + stats.spilled.load(Ordering::Relaxed)
        + stats.lost.load(Ordering::Relaxed);
    assert_eq!(accounted, n, "every record is written, spilled or counted as lost");
}

#[test]
fn kill_9_under_load_then_restart_leaves_consistent_totals() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchboard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[admin]\nlisten = \"127.0.0.1:0\"\ndatabase = \"switchboard.db\"\n\n\
             [usage]\nflush_interval_ms = 20\n\n\
             [[upstreams]]\nname = \"up\"\nbase_url = \"{}\"\n\n[[models]]\nname = \"m\"\ntargets = [{{ upstream = \"up\" }}]\n\n\
             [[keys]]\nid = \"k\"\nhash = \"{}\"\n",
            up.base_url(),
            key_hash(KEY)
        ),
    )
    .unwrap();
    let mut gw = Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    let addr = gw.address("data plane listening on ");
    let tally = Tally::default();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let tally = &tally;
            s.spawn(move || {
                client_until_gone(
                    addr,
                    tally,
                    |_| r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":2}}"#,
                )
            });
        }
        assert!(eventually(Duration::from_secs(20), || tally.served.load(Ordering::SeqCst) >= 500));
        gw.kill9();
    });
    let served = tally.served.load(Ordering::SeqCst);
    // The database opens cleanly, and the raw log and the rollups agree (one transaction per batch).
    let db = dir.path().join("switchboard.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let (rows, requests, tokens, rolled_tokens): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM request_log), (SELECT COALESCE(SUM(requests), 0) FROM usage_minute), \
             (SELECT COALESCE(SUM(total_tokens), 0) FROM request_log), (SELECT COALESCE(SUM(total_tokens), 0) FROM usage_minute)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    drop(conn);
    assert_eq!((rows, tokens), (requests, rolled_tokens), "raw log and rollups agree");
    assert!(rows as u64 <= served + 4, "no record without a request ({rows} vs {served} served)");
    assert!(rows > 0, "records were written before the crash");
    eprintln!("kill -9 under load: {served} responses served, {rows} accounted");
    // Restart on the same files: serves, accounts, and exits cleanly.
    let mut gw = Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    let addr = gw.address("data plane listening on ");
    let mut c = Conn::open(addr);
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    assert_eq!(c.response().status, 200);
    drop(c);
    assert_eq!(gw.stop(), 0);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let after: i64 = conn.query_row("SELECT COUNT(*) FROM request_log", [], |r| r.get(0)).unwrap();
    assert_eq!(after, rows + 1);
}

#[test]
fn a_client_that_leaves_before_the_answer_cancels_the_upstream_and_is_recorded_client_closed() {
    leaving_client_under("driver = \"legacy\"");
    if switchboard_dataplane::server::choose_driver(switchboard_shared::config::Driver::IoUring).is_ok() {
        leaving_client_under("driver = \"io_uring\"");
    }
}

fn leaving_client_under(driver: &str) {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a.base_url(), &b.base_url(), driver));
    // Non-streaming: the upstream takes 8 s before its head. Streaming: the
    // head comes at once, the first token after 8 s (the gateway holds it).
    let bodies = [
        r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":3,"delay_ms":8000}}"#,
        r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3,"ttft_ms":8000}}"#,
    ];
    for (n, body) in bodies.iter().enumerate() {
        let mut c = Conn::open(gw.addr);
        c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
        assert!(eventually(Duration::from_secs(5), || a.requests() == n as u64 + 1), "the upstream got the request");
        drop(c);
        // The upstream sees its connection close long before it would answer.
        assert!(
            eventually(Duration::from_secs(4), || a.aborted() == n as u64 + 1),
            "{driver}, request {n}: the upstream request was not cancelled"
        );
    }
    gw.wait_usage_written(2);
    let rows: Vec<(bool, u16, String, i64)> = db(&gw)
        .prepare("SELECT stream, status, outcome, total_tokens FROM request_log ORDER BY stream")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec![(false, 499, "client_closed".into(), 0), (true, 499, "client_closed".into(), 0)], "{driver}");
}
