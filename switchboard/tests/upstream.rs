//! Upstream failures map to 502 / 504 with OpenAI error JSON before the
//! response starts, and to an SSE error event after; TLS upstreams verify
//! against a CA made in the test; a route fails over to its next target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use switchboard_loadtests::{Behaviour, MockConfig};

#[test]
fn an_upstream_that_is_down_gives_502() {
    let gw = Gateway::start(&basic_config(&format!("http://127.0.0.1:{}/v1", dead_port()), ""));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 502);
    let e = r.error();
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("server_error"), Some("upstream_error")));
    assert!(e["message"].as_str().unwrap().contains("`up`"), "names the upstream: {e}");
}

#[test]
fn reset_close_and_garbage_give_502() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    for fault in ["reset", "close", "garbage"] {
        let r = gw.chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"mock":{{"fault":"{fault}"}}}}"#
        ));
        assert_eq!(r.status, 502, "{fault}: {}", r.text());
        assert_eq!(r.error()["code"], "upstream_error", "{fault}");
    }
    // The gateway is fine afterwards.
    assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}

#[test]
fn a_silent_upstream_gives_504_after_the_first_byte_timeout() {
    let up = mock();
    let cfg = basic_config(&up.base_url(), "").replace("api_key =", "first_byte_timeout_ms = 300\napi_key =");
    let gw = Gateway::start(&cfg);
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"fault":"hang"}}"#);
    assert_eq!(r.status, 504);
    assert_eq!(r.error()["code"], "upstream_timeout");
}

#[test]
fn upstream_error_statuses_pass_through_untouched() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"status":429}}"#);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.error()["message"].as_str().unwrap().contains("injected status 429"));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"status":400}}"#);
    assert_eq!(r.status, 400);
}

#[test]
fn a_stream_cut_mid_way_ends_with_an_sse_error_event() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":10,"drop_after":3,"interval_ms":1}}"#,
        &[],
    ));
    let r = c.response();
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert_eq!(events.iter().filter(|e| e.contains("word")).count(), 3);
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error");
    assert!(!events.iter().any(|e| e == "[DONE]"), "never passed off as a clean finish");
    assert!(c.closed_by_peer());
}

#[test]
fn a_non_streaming_body_cut_mid_way_is_not_passed_off_as_whole() {
    // An upstream that promises 1000 bytes and sends 10.
    let cut = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\"".to_vec();
    // A chat answer is held until it is whole: nothing went out, so the
    // client gets a clean 502 (a route with another target fails over).
    let (port, t) = raw_upstream(cut.clone());
    let gw = Gateway::start(&basic_config(&format!("http://127.0.0.1:{port}/v1"), ""));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((r.status, r.error()["code"].as_str()), (502, Some("upstream_error")), "{}", r.text());
    t.join().unwrap();
    // Other bodies go out as they come: the client sees fewer bytes than promised.
    let (port, t) = raw_upstream(cut);
    let gw = Gateway::start(&basic_config(&format!("http://127.0.0.1:{port}/v1"), ""));
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/embeddings", Some(KEY), r#"{"model":"m","input":"hi"}"#, &[]));
    let (status, headers) = c.head();
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-length" && v == "1000"));
    let mut got = Vec::new();
    let mut tmp = [0u8; 2048];
    // Read until the gateway closes: fewer than the promised bytes arrive.
    loop {
        match c.read_raw(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&tmp[..n]),
        }
    }
    assert_eq!(got, b"{\"partial\"");
    t.join().unwrap();
}

#[test]
fn a_route_fails_over_to_its_next_target() {
    let up = mock();
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "down"
base_url = "http://127.0.0.1:{}/v1"

[[upstreams]]
name = "up"
base_url = "{}"

[[models]]
name = "m"
targets = [{{ upstream = "down" }}, {{ upstream = "up" }}]

[[keys]]
id = "t"
hash = "{}"
"#,
        dead_port(),
        up.base_url(),
        key_hash(KEY)
    );
    let gw = Gateway::start(&cfg);
    for _ in 0..5 {
        assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    }
    assert_eq!(up.requests(), 5);
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_retried_on_a_fresh_one() {
    // Restarting the mock on the same port closes the gateway's pooled
    // connection from the far side while it sits idle.
    let up = mock();
    let addr = up.addr;
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    assert_eq!(c.response().status, 200);
    drop(up);
    let up2 = mock_with(MockConfig { listen: addr, record: true, ..MockConfig::default() });
    // Same client connection, so the same worker and its (now stale) pooled connection.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up2.requests(), 1);
}

#[test]
fn tls_upstreams_are_verified_against_the_configured_ca() {
    let pki = make_pki();
    let up = mock_with(MockConfig {
        tls: Some((pki.cert_pem.into_bytes(), pki.key_pem.into_bytes())),
        record: true,
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, pki.ca_pem).unwrap();
    let base = format!("https://localhost:{}/v1", up.addr.port());

    // Without the CA, the handshake fails: 502 naming TLS.
    let gw = Gateway::start(&basic_config(&base, ""));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 502);
    assert!(r.error()["message"].as_str().unwrap().contains("TLS"), "{}", r.text());
    drop(gw);

    let cfg = basic_config(&base, "").replace("api_key =", &format!("ca_file = {:?}\napi_key =", ca_path));
    let gw = Gateway::start(&cfg);
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(up.recorded()[0].header("host"), Some(format!("localhost:{}", up.addr.port()).as_str()));
}

#[test]
fn mock_behaviour_can_come_from_the_config() {
    // Sanity for the harness itself: defaults apply when the request says nothing.
    let up = mock_with(MockConfig {
        behaviour: Behaviour { tokens: Some(3), ..Behaviour::default() },
        ..MockConfig::default()
    });
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    assert_eq!(
        gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).json()["usage"]["completion_tokens"],
        3
    );
}

#[test]
fn an_oversized_upstream_head_gives_502_and_no_leak() {
    // An upstream whose response head never ends within the limit.
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..5000 {
        head.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(20)).as_bytes());
    }
    let (port, t) = raw_upstream(head);
    let gw = Gateway::start(&basic_config(&format!("http://127.0.0.1:{port}/v1"), "max_upstream_header_bytes = 8192"));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 502);
    assert!(r.error()["message"].as_str().unwrap().contains("over 8192 bytes"), "{}", r.text());
    t.join().unwrap();
}

fn two_target_config(first: &str, second: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "first"
base_url = "{first}"

[[upstreams]]
name = "second"
base_url = "{second}"

[[models]]
name = "m"
targets = [{{ upstream = "first" }}, {{ upstream = "second" }}]

[[models]]
name = "only-first"
targets = [{{ upstream = "first" }}]

[[keys]]
id = "t"
hash = "{}"
"#,
        key_hash(KEY)
    )
}

#[test]
fn a_broken_first_chunk_fails_over_or_gives_502_never_an_empty_200() {
    let broken = mock_with(MockConfig {
        record: true,
        behaviour: Behaviour { bad_first_chunk: Some(true), ..Behaviour::default() },
        ..MockConfig::default()
    });
    let good = mock();
    let gw = Gateway::start(&two_target_config(&broken.base_url(), &good.base_url()));
    let mut c = gw.conn();
    // Nothing reached the client: the next target answers.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-target"), Some("second"));
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!((broken.requests(), good.requests()), (1, 1));
    // With no other target: a clean 502, and the connection carries on.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"only-first","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    let r = c.response();
    assert_eq!(r.status, 502, "{}", r.text());
    let e = r.error();
    assert_eq!(e["code"], "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("before its response started"), "{e}");
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().status, 200);
}

#[test]
fn a_broken_chunk_line_from_a_scripted_upstream_gives_502() {
    let (port, t) = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nnot-hex\r\n{}\r\n0\r\n\r\n"
            .to_vec(),
    );
    let gw = Gateway::start(&basic_config(&format!("http://127.0.0.1:{port}/v1"), ""));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.error()["code"], "upstream_error");
    t.join().unwrap();
}
