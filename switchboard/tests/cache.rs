//! The response cache over real sockets: hits, streaming replay, TTL, the
//! byte bound under a flood of distinct prompts, Cache-Control, deterministic
//! mode, errors never cached, and hits accounted at zero cost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

fn config(base_url: &str, cache: &str, server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
{server}

[[upstreams]]
name = "up"
base_url = "{base_url}"
prices = [{{ model = "m", prompt_per_mtok = 1.0, completion_per_mtok = 2.0 }}]

[[models]]
name = "m"
targets = [{{ upstream = "up" }}]
cache = {cache}

[[keys]]
id = "k"
org = "acme"
hash = "{}"
"#,
        key_hash(KEY)
    )
}

const ALWAYS: &str = r#"{ mode = "always", ttl_ms = 60000 }"#;

fn chat_with(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, headers));
    c.response()
}

#[test]
fn an_identical_request_is_answered_from_the_cache() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), ALWAYS, ""));
    let first = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"a","mock":{"tokens":4}}"#);
    assert_eq!((first.status, first.header("x-switchboard-cache")), (200, Some("miss")));
    // Same request: keys in another order, another `user`.
    let again = gw.chat(r#"{"mock":{"tokens":4},"user":"b","messages":[{"content":"hi","role":"user"}],"model":"m"}"#);
    assert_eq!((again.status, again.header("x-switchboard-cache")), (200, Some("hit")));
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(up.requests(), 1, "the upstream was asked once");
    // A different prompt is a different entry.
    let other = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"mock":{"tokens":4}}"#);
    assert_eq!(other.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(up.requests(), 2);
}

#[test]
fn a_streaming_request_gets_the_stored_answer_replayed_as_sse() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), ALWAYS, ""));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":3}}"#;
    let whole = gw.chat(body).json();
    let content = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let stream = gw.chat(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":3},"stream":true,"stream_options":{"include_usage":true}}"#,
    );
    assert_eq!(stream.header("x-switchboard-cache"), Some("hit"));
    assert!(stream.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = sse_data(&stream.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    assert_eq!(text, content);
    assert_eq!(usage.unwrap(), whole["usage"]);
    assert_eq!(up.requests(), 1);
}

#[test]
fn entries_expire_after_the_route_ttl() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), r#"{ mode = "always", ttl_ms = 150 }"#, ""));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(gw.chat(body).header("x-switchboard-cache"), Some("miss"));
    assert_eq!(gw.chat(body).header("x-switchboard-cache"), Some("hit"));
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(gw.chat(body).header("x-switchboard-cache"), Some("miss"), "expired");
    assert_eq!(up.requests(), 2);
}

#[test]
fn the_byte_bound_holds_under_a_flood_of_distinct_prompts() {
    let up = mock();
    // 64 KiB in all; each answer is about 600 bytes.
    let gw = Gateway::start(&config(&up.base_url(), ALWAYS, "cache_max_bytes = 65536"));
    for i in 0..600 {
        let r = gw.chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"prompt {i}"}}],"mock":{{"tokens":60}}}}"#
        ));
        assert_eq!(r.status, 200);
    }
    let mut c = gw.conn();
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = c.response().text();
    let value = |name: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap().parse().unwrap()
    };
    assert!(value("switchboard_cache_bytes") <= 65536.0, "{text}");
    assert!(value("switchboard_cache_entries") > 10.0);
    assert!(value("switchboard_cache_evictions_total") > 0.0);
    assert_eq!(value("switchboard_cache_misses_total"), 600.0);
    // The most recent prompt is still there; the first is long gone.
    let last = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"prompt 599"}],"mock":{"tokens":60}}"#);
    assert_eq!(last.header("x-switchboard-cache"), Some("hit"));
    let first = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"prompt 0"}],"mock":{"tokens":60}}"#);
    assert_eq!(first.header("x-switchboard-cache"), Some("miss"));
}

#[test]
fn cache_control_no_cache_bypasses_but_stores_and_no_store_does_neither() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), ALWAYS, ""));
    let a = r#"{"model":"m","messages":[{"role":"user","content":"a"}]}"#;
    let r = chat_with(&gw, a, &[("Cache-Control", "no-store")]);
    assert_eq!(r.header("x-switchboard-cache"), Some("bypass"));
    assert_eq!(gw.chat(a).header("x-switchboard-cache"), Some("miss"), "no-store stored nothing");
    let b = r#"{"model":"m","messages":[{"role":"user","content":"b"}]}"#;
    assert_eq!(chat_with(&gw, b, &[("Cache-Control", "no-cache")]).header("x-switchboard-cache"), Some("bypass"));
    assert_eq!(gw.chat(b).header("x-switchboard-cache"), Some("hit"), "no-cache stored its answer");
    assert_eq!(
        chat_with(&gw, b, &[("cache-control", "max-age=0, no-cache")]).header("x-switchboard-cache"),
        Some("bypass")
    );
    assert_eq!(up.requests(), 4);
}

#[test]
fn deterministic_mode_caches_temperature_zero_only_and_errors_never() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), r#"{ mode = "deterministic" }"#, ""));
    let cold = r#"{"model":"m","temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(gw.chat(cold).header("x-switchboard-cache"), Some("bypass"));
    assert_eq!(gw.chat(cold).header("x-switchboard-cache"), Some("bypass"));
    let zero = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(gw.chat(zero).header("x-switchboard-cache"), Some("miss"));
    assert_eq!(gw.chat(zero).header("x-switchboard-cache"), Some("hit"));
    let failing = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"mock":{"status":500}}"#;
    assert_eq!(gw.chat(failing).status, 500);
    let r = gw.chat(failing);
    assert_eq!((r.status, r.header("x-switchboard-cache")), (500, Some("miss")), "errors are never cached");
    assert_eq!(up.requests(), 5);
}

#[test]
fn hits_are_accounted_as_usage_at_no_cost() {
    let up = mock();
    let gw = AdminGateway::start(&config(&up.base_url(), ALWAYS, ""));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":5}}"#;
    let first = gw.chat(KEY, body);
    let usage = first.json()["usage"].clone();
    assert_eq!(gw.chat(KEY, body).header("x-switchboard-cache"), Some("hit"));
    gw.wait_usage_written(2);
    let conn = rusqlite::Connection::open(&gw.db_path).unwrap();
    let rows: Vec<(bool, i64, i64, i64, String)> = conn
        .prepare("SELECT cache_hit, prompt_tokens, completion_tokens, cost_nanos, target FROM request_log ORDER BY ts_ms, cache_hit")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (hit, miss) = if rows[0].0 { (&rows[0], &rows[1]) } else { (&rows[1], &rows[0]) };
    assert_eq!(
        (hit.1, hit.2),
        (usage["prompt_tokens"].as_i64().unwrap(), usage["completion_tokens"].as_i64().unwrap())
    );
    assert_eq!((hit.3, hit.4.as_str()), (0, ""), "no upstream, no cost");
    assert!(miss.3 > 0 && miss.4 == "up");
    let hits: i64 = conn.query_row("SELECT SUM(cache_hits) FROM usage_minute", [], |r| r.get(0)).unwrap();
    assert_eq!(hits, 1);
}
