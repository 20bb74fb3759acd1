//! Routing across several upstreams: strategies, failover triggers, retries,
//! health (ejection and recovery), Retry-After, and provider key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_loadtests::{MockConfig, MockHandle};

/// Config with upstreams `(name, base_url, extra TOML lines)` and `route` (a [[models]] table).
fn config(upstreams: &[(&str, String, &str)], route: &str) -> String {
    let mut s = String::from("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n");
    for (name, url, extra) in upstreams {
        s.push_str(&format!("\n[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\n{extra}\n"));
    }
    s.push_str(route);
    s.push_str(&format!("\n[[keys]]\nid = \"t\"\nhash = \"{}\"\n", key_hash(KEY)));
    s
}

fn two(a: &MockHandle, b: &MockHandle, a_extra: &str, route: &str) -> Gateway {
    Gateway::start(&config(&[("a", a.base_url(), a_extra), ("b", b.base_url(), "")], route))
}

const PRIORITY: &str = "[[models]]\nname = \"m\"\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\n";

#[test]
fn each_failover_trigger_moves_to_the_next_target_and_400_does_not() {
    for (why, a_extra) in [
        ("5xx", r#"headers = { "x-mock" = '{"status":503}' }"#),
        ("429", r#"headers = { "x-mock" = '{"status":429}' }"#),
        ("reset", r#"headers = { "x-mock" = '{"fault":"reset"}' }"#),
        ("garbage", r#"headers = { "x-mock" = '{"fault":"garbage"}' }"#),
        ("timeout", "first_byte_timeout_ms = 200\nheaders = { \"x-mock\" = '{\"fault\":\"hang\"}' }"),
    ] {
        let (a, b) = (mock(), mock());
        let gw = two(&a, &b, a_extra, PRIORITY);
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.status, 200, "{why}: {}", r.text());
        assert_eq!(r.header("x-switchboard-target"), Some("b"), "{why}");
        assert_eq!(r.header("x-switchboard-attempts"), Some("2"), "{why}");
        assert_eq!(r.header("x-switchboard-route"), Some("m"), "{why}");
        assert_eq!((a.requests(), b.requests()), (1, 1), "{why}");
    }
    // A bad request is the client's problem: relayed, not retried elsewhere.
    let (a, b) = (mock(), mock());
    let gw = two(&a, &b, r#"headers = { "x-mock" = '{"status":400}' }"#, PRIORITY);
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((r.status, b.requests()), (400, 0));
    // A connection refused.
    let b = mock();
    let gw = Gateway::start(&config(
        &[("a", format!("http://127.0.0.1:{}/v1", dead_port()), ""), ("b", b.base_url(), "")],
        PRIORITY,
    ));
    assert_eq!(
        gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-target"),
        Some("b")
    );
}

#[test]
fn triggers_are_configurable_per_route() {
    let (a, b) = (mock(), mock());
    let route = format!("{PRIORITY}failover_on = [\"connect\", \"reset\"]\n");
    let gw = two(&a, &b, r#"headers = { "x-mock" = '{"status":503}' }"#, &route);
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((r.status, b.requests()), (503, 0), "5xx is not a trigger on this route");
}

#[test]
fn when_every_attempt_fails_the_last_answer_is_relayed() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(
        &[
            ("a", a.base_url(), r#"headers = { "x-mock" = '{"status":502}' }"#),
            ("b", b.base_url(), r#"headers = { "x-mock" = '{"status":503}' }"#),
        ],
        PRIORITY,
    ));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-switchboard-attempts"), Some("2"));
}

#[test]
fn retry_after_cools_a_target_for_that_long() {
    let (a, b) = (mock(), mock());
    let gw = two(&a, &b, r#"headers = { "x-mock" = '{"status":429}' }"#, PRIORITY);
    assert_eq!(
        gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-target"),
        Some("b")
    );
    let start = Instant::now();
    // While cooling (Retry-After: 1 s), `a` is not asked.
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(600) && n < 50 {
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!((r.status, r.header("x-switchboard-attempts")), (200, Some("1")));
        n += 1;
    }
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(a.requests(), 1, "a was asked while cooling");
    }
    // After it, `a` is first in line again.
    assert!(eventually(Duration::from_secs(5), || {
        gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        a.requests() > 1
    }));
}

#[test]
fn a_broken_target_is_ejected_and_comes_back_after_it_recovers() {
    let a = mock();
    let b = mock();
    let a_addr = a.addr;
    let gw = two(&a, &b, "eject_after_failures = 2\neject_ms = 300", PRIORITY);
    assert_eq!(
        gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-target"),
        Some("a")
    );
    drop(a); // `a` goes down: connections refused.
    for _ in 0..2 {
        assert_eq!(
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-attempts"),
            Some("2")
        );
    }
    // Ejected: requests go straight to `b`, without trying `a`.
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((r.header("x-switchboard-target"), r.header("x-switchboard-attempts")), (Some("b"), Some("1")));
    // `a` recovers; after the ejection period a trial request finds it and closes the circuit.
    let a2 =
        switchboard_loadtests::MockUpstream::start(MockConfig { listen: a_addr, ..MockConfig::default() }).unwrap();
    assert!(eventually(Duration::from_secs(5), || gw
        .chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        .header("x-switchboard-target")
        == Some("a")));
    assert!(a2.requests() >= 1);
    for _ in 0..5 {
        assert_eq!(
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-target"),
            Some("a")
        );
    }
}

#[test]
fn killing_an_upstream_under_load_fails_no_request() {
    let a = mock();
    let b = mock();
    let route = "[[models]]\nname = \"m\"\nstrategy = \"round_robin\"\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\n";
    let gw = Arc::new(two(&a, &b, "", route));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok) = (gw.clone(), stop.clone(), ok.clone());
        clients.push(std::thread::spawn(move || {
            let mut c = gw.conn();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 3_000 {
                c.send(&request(
                    "POST",
                    "/v1/chat/completions",
                    Some(KEY),
                    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"delay_ms":1}}"#,
                    &[],
                ));
                let r = c.response();
                assert_eq!(r.status, 200, "request {n} failed: {}", r.text());
                ok.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        }));
    }
    assert!(eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) > 100));
    drop(a); // Killed mid-load, with requests in flight on it.
    let after_kill = ok.load(Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) > after_kill + 200));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("no client saw a failure");
    }
    assert!(b.requests() > 200);
}

#[test]
fn weighted_split_is_within_three_points_over_ten_thousand_requests() {
    let (a, b) = (mock(), mock());
    let route = "[[models]]\nname = \"m\"\nstrategy = \"weighted\"\ntargets = [{ upstream = \"a\", weight = 3 }, { upstream = \"b\", weight = 1 }]\n";
    let gw = Arc::new(two(&a, &b, "", route));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let gw = gw.clone();
        clients.push(std::thread::spawn(move || {
            let mut c = gw.conn();
            for _ in 0..2_500 {
                c.send(&request(
                    "POST",
                    "/v1/chat/completions",
                    Some(KEY),
                    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":1}}"#,
                    &[],
                ));
                assert_eq!(c.response().status, 200);
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    let share = a.requests() as f64 / (a.requests() + b.requests()) as f64;
    assert_eq!(a.requests() + b.requests(), 10_000);
    assert!((share - 0.75).abs() < 0.03, "a got {:.1}%", share * 100.0);
}

#[test]
fn least_latency_moves_traffic_to_the_faster_upstream() {
    let (a, b) = (mock(), mock());
    let route = "[[models]]\nname = \"m\"\nstrategy = \"least_latency\"\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\n";
    let gw = two(&a, &b, r#"headers = { "x-mock" = '{"delay_ms":40}' }"#, route);
    for _ in 0..10 {
        assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    }
    let before = a.requests();
    for _ in 0..40 {
        assert_eq!(
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-target"),
            Some("b")
        );
    }
    assert_eq!(a.requests(), before);
}

#[test]
fn cheapest_picks_by_price_and_falls_back_when_the_cheap_one_fails() {
    let (a, b) = (mock(), mock());
    let route =
        "[[models]]\nname = \"m\"\nstrategy = \"cheapest\"\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\n";
    let gw = Gateway::start(&config(
        &[
            ("a", a.base_url(), "prices = [{ model = \"m\", prompt_per_mtok = 2.5, completion_per_mtok = 10.0 }]"),
            ("b", b.base_url(), "prices = [{ model = \"m\", prompt_per_mtok = 0.15, completion_per_mtok = 0.6 }]"),
        ],
        route,
    ));
    for _ in 0..10 {
        assert_eq!(
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).header("x-switchboard-target"),
            Some("b")
        );
    }
    assert_eq!(a.requests(), 0);
    drop(b);
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((r.status, r.header("x-switchboard-target")), (200, Some("a")));
}

#[test]
fn a_permitted_header_overrides_the_strategy() {
    let (a, b) = (mock(), mock());
    let route = "[[models]]\nname = \"m\"\nallow_strategy_header = true\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\n";
    let gw = Gateway::start(&config(
        &[
            ("a", a.base_url(), "prices = [{ model = \"m\", prompt_per_mtok = 5.0 }]"),
            ("b", b.base_url(), "prices = [{ model = \"m\", prompt_per_mtok = 1.0 }]"),
        ],
        route,
    ));
    let mut c = gw.conn();
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    assert_eq!(c.response().header("x-switchboard-target"), Some("a"));
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[("x-switchboard-strategy", "cheapest")],
    ));
    assert_eq!(c.response().header("x-switchboard-target"), Some("b"));
}

#[test]
fn provider_keys_rotate_evenly_and_a_refused_key_is_benched() {
    let up = switchboard_loadtests::MockUpstream::start(MockConfig {
        record: true,
        reject_keys: vec!["sk-key-two-refused".into()],
        ..MockConfig::default()
    })
    .unwrap();
    let extra = "api_key = \"sk-key-one-000000\"\napi_keys = [\"sk-key-two-refused\", \"sk-key-three-0000\"]";
    let route =
        "[[models]]\nname = \"m\"\ntargets = [{ upstream = \"a\" }]\nretry = { max_attempts = 2, backoff_ms = 1 }\n";
    let gw = Gateway::start(&config(&[("a", up.base_url(), extra)], route));
    for _ in 0..60 {
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = up.recorded();
    let count = |k: &str| seen.iter().filter(|r| r.header("authorization") == Some(&format!("Bearer {k}"))).count();
    // The refused key was tried once, then benched; the others share the load.
    assert_eq!(count("sk-key-two-refused"), 1);
    let (one, three) = (count("sk-key-one-000000"), count("sk-key-three-0000"));
    assert_eq!(one + three, 60);
    assert!(one.abs_diff(three) <= 2, "uneven: {one} vs {three}");
}

#[test]
fn the_retry_deadline_is_honoured() {
    let (a, b) = (mock(), mock());
    let hang = r#"headers = { "x-mock" = '{"fault":"hang"}' }"#;
    let route = "[[models]]\nname = \"m\"\ntargets = [{ upstream = \"a\" }, { upstream = \"b\" }]\nretry = { max_attempts = 6, deadline_ms = 400, per_attempt_timeout_ms = 150 }\n";
    let gw = Gateway::start(&config(&[("a", a.base_url(), hang), ("b", b.base_url(), hang)], route));
    let start = Instant::now();
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    let took = start.elapsed();
    assert_eq!((r.status, r.error()["code"].as_str()), (504, Some("upstream_timeout")));
    assert!(took >= Duration::from_millis(350), "gave up early: {took:?}");
    assert!(took < Duration::from_secs(3), "ran past the deadline: {took:?}");
    assert!(a.requests() + b.requests() <= 4);
}

#[test]
fn a_stream_that_fails_before_its_first_token_fails_over_invisibly() {
    for (why, fault) in
        [("drop", r#"{"drop_after":0,"interval_ms":1}"#), ("error event", r#"{"error_after":0,"interval_ms":1}"#)]
    {
        let (a, b) = (mock(), mock());
        let gw = two(&a, &b, &format!("headers = {{ \"x-mock\" = '{fault}' }}"), PRIORITY);
        let r =
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3}}"#);
        assert_eq!(r.status, 200, "{why}");
        assert_eq!(r.header("x-switchboard-target"), Some("b"), "{why}");
        let events = sse_data(&r.body);
        assert_eq!(events.iter().filter(|e| e.contains("\"role\"")).count(), 1, "{why}: one opening, from b");
        assert_eq!(events.iter().filter(|e| e.contains("word")).count(), 3, "{why}");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{why}");
        assert!(!r.text().contains("error"), "{why}: the failure was invisible");
    }
}

#[test]
fn a_stream_cut_after_tokens_ends_with_an_error_event_never_a_clean_finish() {
    for (why, fault) in
        [("drop", r#"{"drop_after":2,"interval_ms":1}"#), ("error event", r#"{"error_after":2,"interval_ms":1}"#)]
    {
        let (a, b) = (mock(), mock());
        let gw = two(&a, &b, &format!("headers = {{ \"x-mock\" = '{fault}' }}"), PRIORITY);
        let r =
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3}}"#);
        assert_eq!(r.status, 200, "{why}");
        assert_eq!(b.requests(), 0, "{why}: tokens had reached the client; no failover");
        let events = sse_data(&r.body);
        assert!(events.iter().any(|e| e.contains("word")), "{why}");
        assert!(events.last().unwrap().contains("\"error\""), "{why}: {events:?}");
        assert_eq!(events.iter().filter(|e| e.contains("\"error\"")).count(), 1, "{why}: one error event: {events:?}");
        assert!(!events.iter().any(|e| e == "[DONE]"), "{why}");
    }
}

#[test]
fn active_probes_eject_a_dead_upstream_before_any_request_and_bring_it_back() {
    let (a, b) = (mock(), mock());
    let a_addr = a.addr;
    let gw = two(&a, &b, "probe_interval_ms = 100\neject_after_failures = 2\neject_ms = 200", PRIORITY);
    gw.spawn_prober();
    assert!(eventually(Duration::from_secs(5), || a.requests() >= 2), "no probes reached a");
    assert_eq!(b.requests(), 0, "b has no probe configured");
    drop(a);
    // The probes find `a` dead and eject it: requests go straight to `b`.
    assert!(eventually(Duration::from_secs(5), || {
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        r.header("x-switchboard-attempts") == Some("1") && r.header("x-switchboard-target") == Some("b")
    }));
    // `a` comes back; a probe closes its circuit and traffic returns.
    let _a2 =
        switchboard_loadtests::MockUpstream::start(MockConfig { listen: a_addr, ..MockConfig::default() }).unwrap();
    assert!(eventually(Duration::from_secs(5), || gw
        .chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        .header("x-switchboard-target")
        == Some("a")));
}
