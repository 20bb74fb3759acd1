//! Every limit and every bad input gets its status and OpenAI error JSON, and
//! framing errors close the connection (no request smuggling).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

fn gateway(server: &str) -> (switchboard_loadtests::MockHandle, Gateway) {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), server));
    (up, gw)
}

fn chat_with(gw: &Gateway, key: Option<&str>, body: &str) -> Response {
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/chat/completions", key, body, &[]));
    c.response()
}

#[test]
fn authentication_errors() {
    let (up, gw) = gateway("");
    let r = chat_with(&gw, None, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 401);
    let e = r.error();
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("invalid_request_error"), Some("invalid_api_key")));
    let r = chat_with(&gw, Some("sk-wrong"), r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((r.status, r.error()["code"].as_str()), (401, Some("invalid_api_key")));
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/models", None, "", &[("Authorization", "Basic abc")]));
    assert_eq!(c.response().status, 401);
    assert_eq!(up.requests(), 0);
}

#[test]
fn body_errors_name_the_field() {
    let (up, gw) = gateway("");
    let cases = [
        ("not json", 400, "invalid_json", None),
        ("", 400, "invalid_json", None),
        (r#"[1,2]"#, 400, "invalid_json", None),
        (r#"{"messages":[]}"#, 400, "missing_required_parameter", Some("model")),
        (r#"{"model":42}"#, 400, "invalid_type", Some("model")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}"#,
            400,
            "invalid_type",
            Some("stream"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":[]}"#,
            400,
            "invalid_type",
            Some("stream_options"),
        ),
        (r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"model":"m"}"#, 400, "invalid_json", None),
        (r#"{"model":"gpt-nope","messages":[{"role":"user","content":"hi"}]}"#, 404, "model_not_found", Some("model")),
        (r#"{"model":"\ud800","messages":[{"role":"user","content":"hi"}]}"#, 400, "invalid_value", Some("model")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true,"include_usage":false}}"#,
            400,
            "invalid_json",
            Some("stream_options.include_usage"),
        ),
    ];
    for (body, status, code, param) in cases {
        let r = chat_with(&gw, Some(KEY), body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let e = r.error();
        assert_eq!(e["code"].as_str(), Some(code), "{body}");
        assert_eq!(e["param"].as_str(), param, "{body}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    assert_eq!(up.requests(), 0);
}

#[test]
fn error_texts_say_what_is_wrong_and_echo_little() {
    let (up, gw) = gateway("");
    let msg = |body: &str| chat_with(&gw, Some(KEY), body).error()["message"].as_str().unwrap().to_string();
    let m = msg(r#"{"model":"\ud800","messages":[{"role":"user","content":"hi"}]}"#);
    assert!(m.contains("not valid Unicode") && !m.contains("expected a string"), "{m}");
    let m = msg(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true,"include_usage":true}}"#,
    );
    assert!(m.contains("duplicate field `include_usage`") && !m.contains("boolean"), "{m}");
    // A 100,000-character model name is not echoed whole.
    let r = chat_with(
        &gw,
        Some(KEY),
        &format!(r#"{{"model":"{}","messages":[{{"role":"user","content":"hi"}}]}}"#, "x".repeat(100_000)),
    );
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 1024, "{} bytes", r.body.len());
    assert!(r.error()["message"].as_str().unwrap().contains("x…`"));
    assert_eq!(up.requests(), 0);
}

#[test]
fn unknown_paths_and_methods() {
    let (_up, gw) = gateway("");
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/nothing", Some(KEY), "", &[]));
    let r = c.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (404, Some("unknown_url")));
    assert!(r.error()["message"].as_str().unwrap().contains("/v1/nothing"));
    c.send(&request("GET", "/v1/chat/completions", Some(KEY), "", &[]));
    assert_eq!(c.response().status, 405);
    c.send(&request("DELETE", "/v1/models", Some(KEY), "", &[]));
    assert_eq!(c.response().status, 405);
    // Still one healthy connection.
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().status, 200);
}

#[test]
fn oversized_heads_get_431() {
    let (_up, gw) = gateway("max_header_bytes = 2048\nmax_headers = 16");
    let mut c = gw.conn();
    let big = "x".repeat(4096);
    c.send(&request("GET", "/healthz", None, "", &[("X-Big", &big)]));
    let r = c.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (431, Some("request_header_fields_too_large")));
    assert!(c.closed_by_peer());

    let mut c = gw.conn();
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("X-H{i}"), "v".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    c.send(&request("GET", "/healthz", None, "", &many));
    assert_eq!(c.response().status, 431);
}

#[test]
fn oversized_bodies_get_413_without_being_read() {
    let (up, gw) = gateway("max_body_bytes = 4096");
    let mut c = gw.conn();
    c.send(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100000\r\n\r\n").as_bytes());
    let r = c.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (413, Some("request_too_large")));
    assert_eq!(r.header("connection"), Some("close"));

    // A chunked body is counted as it is decoded.
    let mut c = gw.conn();
    c.send(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes());
    let chunk = format!("1000\r\n{}\r\n", "a".repeat(4096));
    for _ in 0..4 {
        if !c.try_send(chunk.as_bytes()) {
            break;
        }
    }
    assert_eq!(c.response().status, 413);
    // Exactly at the limit is fine.
    let body =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"pad":"{}"}}"#, "a".repeat(4096 - 66));
    assert_eq!(body.len(), 4096);
    assert_eq!(chat_with(&gw, Some(KEY), &body).status, 200);
    assert_eq!(up.requests(), 1);
}

#[test]
fn smuggling_shapes_get_400_and_a_closed_connection() {
    let (up, gw) = gateway("");
    let bad_heads = [
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 13\r\nContent-Length: 14\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: -1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
    ];
    for head in bad_heads {
        let mut c = gw.conn();
        c.send(head.as_bytes());
        c.send(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let r = c.response();
        assert_eq!(r.status, 400, "{head:?}");
        assert_eq!(r.error()["type"], "invalid_request_error");
        assert_eq!(r.header("connection"), Some("close"), "{head:?}");
        assert!(c.closed_by_peer(), "{head:?}");
    }
    // A bad chunked body too.
    let mut c = gw.conn();
    c.send(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").as_bytes());
    assert_eq!(c.response().status, 400);
    assert!(c.closed_by_peer());
    assert_eq!(up.requests(), 0);
}

#[test]
fn slow_heads_and_bodies_time_out_with_408() {
    let (_up, gw) = gateway("header_read_timeout_ms = 200\nbody_read_timeout_ms = 200");
    let mut c = gw.conn();
    c.send(b"GET /healthz HTTP/1.1\r\nHost: g\r\n");
    let r = c.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (408, Some("request_timeout")));
    assert!(c.closed_by_peer());

    let mut c = gw.conn();
    c.send(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 50\r\n\r\n{{\"mo").as_bytes());
    assert_eq!(c.response().status, 408);
    assert!(c.closed_by_peer());
}

/// Deadlines are taken from the clock read a worker shares for one round of
/// work (`monoio::time::recent`). A connection that idled longer than the
/// head and body timeouts is timed from its next request, not from a read
/// made before it idled.
#[test]
fn a_request_after_an_idle_spell_longer_than_its_timeouts_is_served() {
    let (up, gw) = gateway("header_read_timeout_ms = 150\nbody_read_timeout_ms = 150\nidle_timeout_ms = 20000");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let mut c = gw.conn();
    for round in 0..3 {
        // The head, then the body in a second write.
        let req = request("POST", "/v1/chat/completions", Some(KEY), body, &[]);
        let split = req.len() - body.len();
        c.send(&req[..split]);
        c.send(&req[split..]);
        let r = c.response();
        assert_eq!(r.status, 200, "round {round}: {}", String::from_utf8_lossy(&r.body));
        // Idle: longer than both timeouts (the scenario itself, not a wait for something).
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(up.requests(), 3);
}

#[test]
fn idle_connections_are_closed() {
    let (_up, gw) = gateway("idle_timeout_ms = 150");
    let mut c = gw.conn();
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().status, 200);
    c.set_timeout(Duration::from_secs(5));
    // Closed silently: no response to a request that never came.
    assert!(c.closed_by_peer());
}

#[test]
fn connections_past_the_limit_are_refused_with_503() {
    let (_up, gw) = gateway("workers = 1\nmax_connections_per_worker = 2");
    let mut a = gw.conn();
    let mut b = gw.conn();
    for c in [&mut a, &mut b] {
        c.send(&request("GET", "/healthz", None, "", &[]));
        assert_eq!(c.response().status, 200);
    }
    let mut third = gw.conn();
    let r = third.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (503, Some("overloaded")));
    // The connections it has keep working, and a slot frees when one closes.
    a.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(a.response().status, 200);
    drop(a);
    assert!(eventually(Duration::from_secs(5), || {
        let mut c = gw.conn();
        c.send(&request("GET", "/healthz", None, "", &[]));
        c.response().status == 200
    }));
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let (up, gw) = gateway("write_timeout_ms = 300");
    let mut c = gw.conn();
    // About 30 MB of stream, far more than the socket buffers hold.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":200000}}"#,
        &[],
    ));
    let (status, _) = c.head();
    assert_eq!(status, 200);
    // Never read again: the gateway's write stalls, times out, and it drops
    // both sides (the mock's own write then fails).
    assert!(eventually(Duration::from_secs(15), || up.aborted() == 1), "the stalled stream was not dropped");
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "the gateway keeps serving");
}

#[test]
fn deeply_nested_json_is_refused_with_400() {
    let (up, gw) = gateway("");
    let body = format!(r#"{{"model":"m","messages":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let r = chat_with(&gw, Some(KEY), &body);
    assert_eq!((r.status, r.error()["code"].as_str()), (400, Some("invalid_json")));
    assert_eq!(up.requests(), 0);
}
