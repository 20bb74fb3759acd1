//! The data plane relays OpenAI requests: plain and streaming, keep-alive,
//! pipelined, chunked, under both io drivers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

#[test]
fn relays_a_chat_completion_with_the_provider_key() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert!(r.header("x-request-id").is_some_and(|id| id.len() == 32));

    let seen = up.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert_eq!(seen[0].header("x-request-id"), r.header("x-request-id"));
    assert_eq!(seen[0].header("accept-encoding"), Some("identity"));
    // The client's key never leaves the gateway.
    assert!(seen[0].headers.iter().all(|(_, v)| !v.contains(KEY)));
    // The body is forwarded byte for byte.
    assert_eq!(seen[0].body, br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#);
}

#[test]
fn an_alias_is_spliced_and_nothing_else_changes() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let body =
        r#"{ "messages" : [{"role":"user","content":"\"model\":\"alias\""}], "model" : "alias", "temperature":0 }"#;
    let r = gw.chat(body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "real-model");
    let sent = String::from_utf8(up.recorded()[0].body.clone()).unwrap();
    assert_eq!(sent, body.replace(r#""model" : "alias""#, r#""model" : "real-model""#));
}

#[test]
fn completions_and_embeddings_are_relayed_too() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let r = gw.post("/v1/completions", r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"prompt":"x"}"#);
    assert_eq!((r.status, r.json()["object"].as_str()), (200, Some("text_completion")));
    let r = gw.post("/v1/embeddings", r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"input":"x"}"#);
    assert_eq!((r.status, r.json()["object"].as_str()), (200, Some("list")));
    let paths: Vec<String> = up.recorded().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/completions", "/v1/embeddings"]);
}

#[test]
fn a_stream_reaches_the_client_before_the_upstream_finishes() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    // The mock sends the role chunk and two tokens, then holds until released.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"mock":{"tokens":4,"hold_after":2}}"#,
        &[],
    ));
    let (status, headers) = c.head();
    assert_eq!(status, 200);
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("content-type"), Some("text/event-stream"));
    assert_eq!(get("transfer-encoding"), Some("chunked"));
    let mut seen = String::new();
    while seen.matches("\"content\":\"word \"").count() < 2 {
        // Blocks (and fails on the 10 s timeout) if the gateway buffered the stream.
        seen.push_str(&String::from_utf8(c.chunk().expect("a chunk while the upstream holds")).unwrap());
    }
    assert!(!seen.contains("[DONE]"));
    up.release();
    while let Some(chunk) = c.chunk() {
        seen.push_str(&String::from_utf8(chunk).unwrap());
    }
    let events = sse_data(seen.as_bytes());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(seen.matches("\"content\":\"word \"").count(), 4);
    // The connection stays usable.
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().status, 200);
}

/// A stream's body is read into a small buffer that grows when a read fills
/// it (docs/architecture.md, "Buffers and memory"): events far larger than
/// the first read still arrive whole and in order, on a kept-alive
/// connection, and the request after it (on the same connection) too.
#[test]
fn a_stream_of_large_events_is_relayed_whole_through_growing_reads() {
    let token: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let up = mock_with(switchboard_loadtests::MockConfig {
        record: true,
        token_text: token.clone(),
        ..switchboard_loadtests::MockConfig::default()
    });
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    for round in 0..2 {
        c.send(&request(
            "POST",
            "/v1/chat/completions",
            Some(KEY),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":6}}"#,
            &[],
        ));
        let r = c.response();
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        let mut content = String::new();
        let mut done = false;
        for line in r.text().lines() {
            let Some(data) = line.strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                content.push_str(t);
            }
        }
        assert!(done, "round {round}: the stream ends with [DONE]");
        assert_eq!(content.len(), 6 * token.len(), "round {round}");
        assert_eq!(content, token.repeat(6), "round {round}: every byte of every event, in order");
    }
    // Both streams went over one client connection.
    assert_eq!(up.recorded().len(), 2);
}

#[test]
fn keep_alive_reuses_client_and_upstream_connections() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    for i in 0..5 {
        let stream = i % 2 == 1;
        c.send(&request(
            "POST",
            "/v1/chat/completions",
            Some(KEY),
            &format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#),
            &[],
        ));
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(up.connections(), 1, "the upstream connection is pooled and reused");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    let mut all = Vec::new();
    for i in 0..4 {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"mock":{{"tokens":{}}}}}"#, i + 1);
        all.extend(request("POST", "/v1/chat/completions", Some(KEY), &body, &[("X-Request-Id", &format!("req-{i}"))]));
    }
    all.extend(request("GET", "/healthz", None, "", &[("X-Request-Id", "req-4")]));
    c.send(&all);
    for i in 0..4 {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id"), Some(format!("req-{i}").as_str()));
        assert_eq!(r.json()["usage"]["completion_tokens"], i + 1);
    }
    assert_eq!(c.response().header("x-request-id"), Some("req-4"));
}

#[test]
fn a_request_pipelined_behind_a_slow_one_is_not_taken_for_a_client_that_left() {
    for driver in ["driver = \"legacy\"", ""] {
        pipelined_behind_a_slow_one(driver);
    }
}

fn pipelined_behind_a_slow_one(driver: &str) {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), driver));
    let mut c = gw.conn();
    // The second request waits in the socket while the first waits upstream.
    let mut both = request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"delay_ms":300}}"#,
        &[],
    );
    both.extend(request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"ttft_ms":300}}"#,
        &[],
    ));
    c.send(&both);
    assert_eq!(c.response().status, 200);
    let r = c.response();
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(up.aborted(), 0);
}

#[test]
fn chunked_request_bodies_are_decoded_and_forwarded_with_a_length() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    c.send(head.as_bytes());
    c.send(b"6\r\n{\"mode\r\n");
    c.send(b"9;ext=1\r\nl\":\"m\", \"\r\n");
    c.send(b"1e\r\nmessages\":[{\"role\":\"user\"}], \"\r\n");
    c.send(b"3\r\nx\":\r\n3\r\n1}\n\r\n0\r\nTrailer: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.recorded()[0];
    assert_eq!(seen.body, b"{\"model\":\"m\", \"messages\":[{\"role\":\"user\"}], \"x\":1}\n");
    assert_eq!(seen.header("content-length"), Some("51"));
    assert_eq!(seen.header("transfer-encoding"), None);
    // Then the connection carries on.
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().status, 200);
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    c.send(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {KEY}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let (status, _) = c.head();
    assert_eq!(status, 100);
    c.send(body.as_bytes());
    assert_eq!(c.response().status, 200);

    // A bad key is refused before the client uploads anything.
    let mut c = gw.conn();
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer wrong\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn models_lists_what_the_key_may_use() {
    let up = mock();
    let mut cfg = basic_config(&up.base_url(), "");
    cfg.push_str(&format!("\n[[keys]]\nid = \"narrow\"\nhash = \"{}\"\nmodels = [\"alias\"]\n", key_hash("sk-narrow")));
    let gw = Gateway::start(&cfg);
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/models", Some(KEY), "", &[]));
    let v = c.response().json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m", "alias"]);
    assert_eq!(v["data"][0]["object"], "model");

    c.send(&request("GET", "/v1/models", Some("sk-narrow"), "", &[]));
    let v = c.response().json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    c.send(&request("GET", "/v1/models/alias", Some("sk-narrow"), "", &[]));
    assert_eq!(c.response().json()["id"], "alias");
    c.send(&request("GET", "/v1/models/m", Some("sk-narrow"), "", &[]));
    let r = c.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (404, Some("model_not_found")));
    // And it may not call a model outside its list.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some("sk-narrow"),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    assert_eq!(c.response().status, 404);
    assert_eq!(up.requests(), 0);
}

#[test]
fn the_clients_request_id_is_echoed() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[("X-Request-Id", "abc-123")],
    ));
    assert_eq!(c.response().header("x-request-id"), Some("abc-123"));
    assert_eq!(up.recorded()[0].header("x-request-id"), Some("abc-123"));
    // Errors carry one too.
    c.send(&request("GET", "/nope", None, "", &[]));
    assert!(c.response().header("x-request-id").is_some());
}

#[test]
fn http10_clients_get_a_close_delimited_stream() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":2}}"#;
    c.send(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn a_client_that_leaves_mid_stream_drops_the_upstream_stream() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":200,"interval_ms":10}}"#,
        &[],
    ));
    let _ = c.head();
    let _ = c.chunk();
    drop(c);
    assert!(eventually(Duration::from_secs(10), || up.aborted() == 1), "the upstream stream was not cut");
}

fn core_flow_under(driver: &str) {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), &format!("driver = \"{driver}\"")));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200);
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
    let r = gw.chat(r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 404);
}

#[test]
fn works_on_the_legacy_epoll_driver() {
    core_flow_under("legacy");
}

#[test]
fn works_on_io_uring_when_the_kernel_has_it() {
    if !monoio_available() {
        eprintln!("io_uring unavailable here; covered by the legacy test");
        return;
    }
    core_flow_under("io_uring");
}

fn monoio_available() -> bool {
    switchboard_dataplane::server::choose_driver(switchboard_shared::config::Driver::IoUring).is_ok()
}

/// SSE `data:` payloads of a stream body with any line endings (LF, CRLF, CR).
fn sse_data_any(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n").replace('\r', "\n");
    sse_data(text.as_bytes())
}

#[test]
fn a_spaced_usage_chunk_the_client_did_not_ask_for_is_removed() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    // Python servers write `"choices": []` with spaces, `usage` first.
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3,"spaced_json":true}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for e in &events[..events.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        // The SDK loop `chunk.choices[0]` must never meet an empty list.
        assert!(!v["choices"].as_array().unwrap().is_empty(), "a usage-only chunk reached the client: {e}");
    }
    assert_eq!(events.iter().filter(|e| e.contains("\"content\": \"word \"")).count(), 3);
    // A client that asked for usage gets it, spaces and all.
    let r = gw.chat(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"mock":{"tokens":3,"spaced_json":true}}"#,
    );
    let events = sse_data(&r.body);
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!((usage["choices"].as_array().map(Vec::len), &usage["usage"]["completion_tokens"]), (Some(0), &3.into()));
}

#[test]
fn streams_with_crlf_or_cr_line_endings_are_relayed_whole() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    for ending in ["crlf", "cr"] {
        for spaced in [false, true] {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":true,"mock":{{"tokens":3,"line_ending":"{ending}","spaced_json":{spaced}}}}}"#
            );
            let r = gw.chat(&body);
            assert_eq!(r.status, 200, "{ending}: {}", r.text());
            let nl = if ending == "crlf" { "\r\n\r\n" } else { "\r\r" };
            assert!(r.text().ends_with(&format!("data: [DONE]{nl}")), "{ending}: relayed as sent: {:?}", r.text());
            let events = sse_data_any(&r.body);
            assert_eq!(events.iter().filter(|e| e.contains("word ")).count(), 3, "{ending}: {events:?}");
            assert!(!events.iter().any(|e| e.contains("\"usage\"")), "{ending}: usage chunk stripped: {events:?}");
        }
    }
}

#[test]
fn a_model_id_with_an_escaped_slash_is_found() {
    let up = mock();
    let mut cfg = basic_config(&up.base_url(), "");
    cfg.push_str("\n[[models]]\nname = \"meta-llama/Llama-3.1-8B\"\ntargets = [{ upstream = \"up\" }]\n");
    let gw = Gateway::start(&cfg);
    let mut c = gw.conn();
    // What the OpenAI SDK sends for `models.retrieve("meta-llama/Llama-3.1-8B")`.
    c.send(&request("GET", "/v1/models/meta-llama%2FLlama-3.1-8B", Some(KEY), "", &[]));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "meta-llama/Llama-3.1-8B");
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/models", Some(KEY), "", &[]));
    let get = c.response();
    c.send(&request("HEAD", "/v1/models", Some(KEY), "", &[]));
    let (status, headers) = c.head();
    assert_eq!(status, 200);
    let length = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.clone());
    assert_eq!(length, Some(get.body.len().to_string()), "the length the GET would have");
    // A HEAD on a POST-only resource: 405, no body, the connection kept.
    c.send(&request("HEAD", "/v1/chat/completions", Some(KEY), "", &[]));
    let (status, headers) = c.head();
    assert_eq!(status, 405);
    assert!(headers.iter().all(|(k, v)| k != "connection" || v != "close"), "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "POST"), "405 says what is allowed: {headers:?}");
    let r = gw.post("/v1/models", "{}");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // Had a body been sent after either head, this would read it as garbage.
    c.send(&request("GET", "/healthz", None, "", &[]));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
}

#[test]
fn http10_keep_alive_is_acknowledged() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("keep-alive")));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    c.send(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("keep-alive")), "{:?}", r.headers);
    // Without keep-alive, a 1.0 connection closes.
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_peer());
}

#[test]
fn absolute_form_request_targets_are_accepted() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    let mut c = gw.conn();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    c.send(&request("POST", &format!("http://{}/v1/chat/completions", gw.addr), Some(KEY), body, &[]));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    c.send(&request("GET", "HTTP://gateway/v1/models/m", Some(KEY), "", &[]));
    assert_eq!(c.response().json()["id"], "m");
}

// ---- the upstream side of a stream: multishot receive on io_uring ----
//
// On io_uring a streamed upstream body is read with one multishot receive
// into the worker's provided-buffer ring (`SWITCHBOARD_URING_RECV`); on
// epoll, and after the ring ran dry, with plain reads. These run under both
// drivers (the suite runs twice) and must give the same bytes either way.

/// A scripted keep-alive upstream: accepts ONE connection and answers each
/// request on it with the next of `answers`, each a list of writes made one
/// after another (`pause` between them, so that they arrive apart). After the
/// last answer it closes. Returns its base URL and the thread (which yields
/// the number of requests it read).
fn scripted_upstream(answers: Vec<Vec<Vec<u8>>>, pause: Duration) -> (String, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut served = 0;
        let mut buf = Vec::new();
        for answer in answers {
            // Read one request: head, then a Content-Length body.
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return served,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + len {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return served,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + len);
            served += 1;
            for (i, piece) in answer.iter().enumerate() {
                if i > 0 && !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                if s.write_all(piece).is_err() {
                    return served;
                }
            }
        }
        served
    });
    (url, t)
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n";

/// `n` chat chunks (`tok 0 `, `tok 1 `, ...), a finish chunk and `[DONE]`,
/// as SSE events; each one its own HTTP chunk.
fn sse_events(n: usize) -> Vec<Vec<u8>> {
    let mut events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"tok {i} "}},"finish_reason":null}}]}}"#
            )
        })
        .collect();
    events.push(
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
            .to_string(),
    );
    events.push("[DONE]".to_string());
    events
        .into_iter()
        .map(|e| {
            let data = format!("data: {e}\n\n");
            format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
        })
        .collect()
}

/// The content tokens a client got, joined, and whether it ended with `[DONE]`.
fn stream_text(body: &[u8]) -> (String, bool) {
    let events = sse_data(body);
    let done = events.last().map(String::as_str) == Some("[DONE]");
    let text = events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    (text, done)
}

fn expected_text(n: usize) -> String {
    (0..n).map(|i| format!("tok {i} ")).collect()
}

fn stream_request() -> Vec<u8> {
    request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        &[],
    )
}

/// Read a whole chunked streamed response off `c`.
fn read_stream(c: &mut Conn) -> Vec<u8> {
    let (status, _) = c.head();
    assert_eq!(status, 200);
    let mut body = Vec::new();
    while let Some(chunk) = c.chunk() {
        body.extend_from_slice(&chunk);
    }
    body
}

fn pieces_answers() -> (Vec<Vec<Vec<u8>>>, usize, usize) {
    let small = 12;
    let big = 400;
    // A few bytes per write: events split across reads at every place.
    let mut pieces = vec![SSE_HEAD.to_vec()];
    let stream: Vec<u8> = sse_events(small).concat();
    pieces.extend(stream.chunks(7).map(<[u8]>::to_vec));
    pieces.push(b"0\r\n\r\n".to_vec());
    // One write: the head and ~80 KB of events.
    let mut whole = SSE_HEAD.to_vec();
    whole.extend(sse_events(big).concat());
    whole.extend_from_slice(b"0\r\n\r\n");
    let json = br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"plain"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let mut plain =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", json.len())
            .into_bytes();
    plain.extend_from_slice(json);
    (vec![pieces, vec![whole], vec![plain]], small, big)
}

/// The three shapes over ONE upstream connection: a stream whose bytes come
/// a few at a time, a stream that comes in one write (many ring buffers'
/// worth), then a plain JSON answer on the same pooled connection (the
/// multishot receive was stopped before the connection went back to the
/// pool, so nothing of the next response is lost to it).
fn check_pieces_over_one_connection(addr: std::net::SocketAddr, small: usize, big: usize) {
    let mut c = Conn::open(addr);
    c.send(&stream_request());
    let (text, done) = stream_text(&read_stream(&mut c));
    assert_eq!(text, expected_text(small));
    assert!(done);
    c.send(&stream_request());
    let (text, done) = stream_text(&read_stream(&mut c));
    assert_eq!(text, expected_text(big));
    assert!(done);
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "plain");
}

#[test]
fn a_stream_in_many_small_pieces_and_in_one_big_piece_then_json_on_the_same_upstream_connection() {
    let (answers, small, big) = pieces_answers();
    let (url, up) = scripted_upstream(answers, Duration::from_millis(1));
    let gw = Gateway::start(&basic_config(&url, "workers = 1"));
    check_pieces_over_one_connection(gw.addr, small, big);
    // All three answers came over the one connection the upstream accepted.
    drop(gw);
    assert_eq!(up.join().unwrap(), 3);
}

#[test]
fn an_upstream_that_closes_mid_stream_gives_the_client_the_mid_stream_error() {
    let events = sse_events(5);
    // The head and three events, apart, then the connection closes: no
    // `[DONE]`, no last chunk.
    let mut pieces = vec![SSE_HEAD.to_vec()];
    pieces.extend(events[..3].iter().cloned());
    let (url, up) = scripted_upstream(vec![pieces], Duration::from_millis(5));
    let gw = Gateway::start(&basic_config(&url, "workers = 1"));
    let mut c = gw.conn();
    c.send(&stream_request());
    let body = read_stream(&mut c);
    let (text, done) = stream_text(&body);
    assert_eq!(text, expected_text(3));
    assert!(!done);
    let last = sse_data(&body).pop().unwrap();
    assert!(last.contains("failed mid-stream"), "{last}");
    assert_eq!(up.join().unwrap(), 1);
}

/// A ring of ONE 512-byte buffer per worker: a stream's arrival of more than
/// 512 bytes runs it dry (ENOBUFS) at once, and 24 streams at a time share
/// it. Every stream must still arrive whole (the relay falls back to plain
/// reads), and the pooled connections keep working. A separate process, as
/// the ring's size is process-wide.
#[test]
fn streams_arrive_whole_when_the_receive_ring_runs_out_of_buffers() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.toml");
    std::fs::write(&path, basic_config(&up.base_url(), "workers = 1")).unwrap();
    let path = path.to_str().unwrap();
    let log = "info,switchboard_dataplane::upstream::multishot=debug";
    let mut p =
        Proc::spawn(&["serve", "--config", path], &[("SWITCHBOARD_URING_RECV", "1x512"), ("SWITCHBOARD_LOG", log)]);
    let addr = p.address("data plane listening on ");
    let uring = p.wait_line("data plane listening on ").contains("driver=\"io_uring\"");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":40}}"#;
    let threads: Vec<_> = (0..24)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..2 {
                    c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
                    let got = read_stream(&mut c);
                    let events = sse_data(&got);
                    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                    assert_eq!(String::from_utf8_lossy(&got).matches("\"content\":\"word \"").count(), 40);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (armed, fell) = (multishot_metric(addr, "receives"), multishot_metric(addr, "fallbacks"));
    if uring {
        // The ring did run dry, and those streams went on with plain reads;
        // `/metrics` says how many.
        p.wait_line("multishot receive ended");
        assert!(armed >= 48 && fell >= 1 && fell <= armed, "armed {armed}, fell back {fell}");
    } else {
        assert_eq!((armed, fell), (0, 0), "no multishot on epoll");
    }
    // And the big-piece stream on one connection, through the tiny ring.
    let (answers, small, big) = pieces_answers();
    let (url, scripted) = scripted_upstream(answers, Duration::from_millis(1));
    assert_eq!(p.stop(), 0);
    std::fs::write(dir.path().join("sb2.toml"), basic_config(&url, "workers = 1")).unwrap();
    let path2 = dir.path().join("sb2.toml");
    let mut p = Proc::spawn(&["serve", "--config", path2.to_str().unwrap()], &[("SWITCHBOARD_URING_RECV", "1x512")]);
    check_pieces_over_one_connection(p.address("data plane listening on "), small, big);
    assert_eq!(p.stop(), 0);
    assert_eq!(scripted.join().unwrap(), 3);
}

/// `switchboard_uring_multishot_{receives,fallbacks}_total` from `/metrics`.
fn multishot_metric(addr: std::net::SocketAddr, which: &str) -> u64 {
    let mut c = Conn::open(addr);
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = c.response().text();
    let name = format!("switchboard_uring_multishot_{which}_total ");
    text.lines().find_map(|l| l.strip_prefix(&name)).unwrap_or_else(|| panic!("no {name}in {text}")).parse().unwrap()
}

#[test]
fn a_bad_receive_ring_size_stops_the_gateway_at_start() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.toml");
    std::fs::write(&path, basic_config(&up.base_url(), "workers = 1")).unwrap();
    for (v, says) in [
        ("3x4096", "power of two"),
        ("256x100", "BYTES must be between 512"),
        ("lots", "no `x`"),
        ("65536x4096", "COUNT must be between 0 and 32768"),
        ("32768x1048576", "the ring (COUNT × BYTES, per worker) must be between 0 and"),
    ] {
        let mut p = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], &[("SWITCHBOARD_URING_RECV", v)]);
        assert_eq!(p.wait_exit(Duration::from_secs(30)), 78, "{v}");
        p.wait_line(says);
    }
    // `off` serves (plain reads).
    let mut p = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], &[("SWITCHBOARD_URING_RECV", "off")]);
    let addr = p.address("data plane listening on ");
    let mut c = Conn::open(addr);
    c.send(&stream_request());
    let (text, done) = stream_text(&read_stream(&mut c));
    assert_eq!(text, "word ".repeat(16));
    assert!(done);
    assert_eq!(multishot_metric(addr, "receives"), 0, "off arms no multishot receive");
    assert_eq!(p.stop(), 0);
    // The default ring: one receive for the stream, no fallback (io_uring);
    // nothing on epoll.
    let mut p = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], &[]);
    let uring = p.wait_line("data plane listening on ").contains("driver=\"io_uring\"");
    let addr = p.address("data plane listening on ");
    let mut c = Conn::open(addr);
    // Events 5 ms apart, so the body does not all come with the head.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":4,"interval_ms":5}}"#;
    c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
    assert!(stream_text(&read_stream(&mut c)).1);
    let expect = if uring { (1, 0) } else { (0, 0) };
    assert_eq!((multishot_metric(addr, "receives"), multishot_metric(addr, "fallbacks")), expect);
    assert_eq!(p.stop(), 0);
}
