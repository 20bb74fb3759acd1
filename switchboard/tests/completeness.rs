//! A stream is complete when a `finish_reason` went by and it ended (`[DONE]`,
//! or a clean end of the body): the gateway guarantees OpenAI's contract to
//! clients whatever the upstream does. A generation cut short upstream
//! (`[DONE]` without any `finish_reason`, as an interrupted llama-cpp-python
//! sends) ends with an `upstream_truncated` error event instead of `[DONE]`;
//! `[DONE]` then a close is a normal end; a client that asked for usage gets a
//! usage chunk even from an upstream that sends none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use switchboard_loadtests::MockHandle;

/// Upstreams `a` (with `a_extra` TOML lines) and `b`; route `m` tries a then
/// b, route `solo` only a.
fn config(a: &MockHandle, b: &MockHandle, a_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n\
         [[upstreams]]\nname = \"a\"\nbase_url = \"{}\"\n{a_extra}\n\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"{}\"\n\n\
         [[models]]\nname = \"m\"\ntargets = [{{ upstream = \"a\" }}, {{ upstream = \"b\" }}]\n\n\
         [[models]]\nname = \"solo\"\ntargets = [{{ upstream = \"a\" }}]\n\n\
         [[keys]]\nid = \"k1\"\norg = \"acme\"\nhash = \"{}\"\n",
        a.base_url(),
        b.base_url(),
        key_hash(KEY)
    )
}

fn json(event: &str) -> serde_json::Value {
    serde_json::from_str(event).unwrap_or_else(|e| panic!("{e}: {event}"))
}

/// The request log's (status, outcome, completion_tokens, estimated), newest first.
fn records(gw: &AdminGateway) -> Vec<(i64, String, i64, bool)> {
    let conn = rusqlite::Connection::open(&gw.db_path).unwrap();
    let mut st = conn
        .prepare("SELECT status, outcome, completion_tokens, estimated FROM request_log ORDER BY ts_ms DESC")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn done_without_a_finish_reason_is_a_truncated_generation_never_a_clean_end() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a, &b, ""));
    // Tokens reached the client, then `[DONE]` with no finish_reason.
    let r = gw.chat(
        KEY,
        r#"{"model":"solo","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":4,"interval_ms":2,"no_finish_reason":true}}"#,
    );
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert_eq!(events.iter().filter(|e| e.contains("word")).count(), 4, "what was generated is relayed");
    assert!(!events.iter().any(|e| e == "[DONE]"), "no clean end: {events:?}");
    let last = json(events.last().unwrap());
    assert_eq!(last["error"]["code"], "upstream_truncated", "{last}");
    assert_eq!(last["error"]["type"], "server_error");
    gw.wait_usage_written(1);
    let (status, outcome, completion, _) = records(&gw)[0].clone();
    assert_eq!((status, outcome.as_str()), (200, "upstream_truncated"));
    assert_eq!(completion, 4, "the delivered tokens are accounted");
}

#[test]
fn a_truncation_before_the_first_token_fails_over() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, r#"headers = { "x-mock" = '{"tokens":0,"no_finish_reason":true}' }"#));
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3}}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchboard-target"), Some("b"), "{}", r.text());
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!r.text().contains("error"));
    assert_eq!((a.requests(), b.requests()), (1, 1));
}

#[test]
fn done_then_a_close_is_a_normal_end() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a, &b, ""));
    for interval in [0, 2] {
        let body = format!(
            r#"{{"model":"solo","messages":[{{"role":"user","content":"hi"}}],"stream":true,"mock":{{"tokens":3,"interval_ms":{interval},"done_then_close":true}}}}"#
        );
        let r = gw.chat(KEY, &body);
        assert_eq!(r.status, 200);
        let events = sse_data(&r.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
        assert!(!r.text().contains("error"), "{}", r.text());
    }
    gw.wait_usage_written(2);
    assert!(records(&gw).iter().all(|r| r.0 == 200 && r.1 == "ok"), "{:?}", records(&gw));
}

#[test]
fn a_stream_without_done_that_finished_gets_done_from_the_gateway() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, ""));
    let r = gw.chat(r#"{"model":"solo","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3,"skip_done":true,"interval_ms":1}}"#);
    let events = sse_data(&r.body);
    assert!(events.iter().any(|e| e.contains("\"finish_reason\":\"stop\"")));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    // Neither `[DONE]` nor a finish_reason: an error, as before.
    let r = gw.chat(
        r#"{"model":"solo","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3,"skip_done":true,"no_finish_reason":true,"interval_ms":1}}"#,
    );
    let events = sse_data(&r.body);
    assert!(json(events.last().unwrap())["error"]["message"].as_str().unwrap().contains("without [DONE]"));
}

#[test]
fn an_upstream_known_to_omit_finish_reason_can_opt_out() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, "require_finish_reason = false"));
    let r = gw.chat(r#"{"model":"solo","messages":[{"role":"user","content":"hi"}],"stream":true,"mock":{"tokens":3,"interval_ms":1,"no_finish_reason":true}}"#);
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
}

#[test]
fn a_client_that_asked_for_usage_gets_it_even_when_the_upstream_sends_none() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a, &b, ""));
    for (model, interval) in [("solo", 0), ("solo", 2)] {
        let body = format!(
            r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"count to five"}}],"mock":{{"tokens":5,"interval_ms":{interval},"no_usage":true}}}}"#
        );
        let r = gw.chat(KEY, &body);
        let events = sse_data(&r.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let usage = json(&events[events.len() - 2]);
        assert_eq!(usage["choices"], serde_json::json!([]), "{usage}");
        assert_eq!(usage["object"], "chat.completion.chunk");
        assert_eq!(usage["model"], model);
        assert_eq!(usage["usage"]["completion_tokens"], 5, "{usage}");
        let prompt = usage["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(prompt > 0);
        assert_eq!(usage["usage"]["total_tokens"], prompt + 5);
        assert_eq!(usage["x_switchboard_estimated"], true);
    }
    // An upstream that sends usage: the client gets the upstream's, once.
    let r = gw.chat(KEY, r#"{"model":"solo","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"mock":{"tokens":5}}"#);
    let events = sse_data(&r.body);
    let usage: Vec<_> = events.iter().filter(|e| e.contains("\"usage\"")).collect();
    assert_eq!(usage.len(), 1);
    assert!(!usage[0].contains("x_switchboard_estimated"));
    gw.wait_usage_written(3);
    let recs = records(&gw);
    assert_eq!(recs.iter().filter(|r| r.3).count(), 2, "the two without upstream usage are marked estimated: {recs:?}");
}

#[test]
fn a_whole_answer_without_usage_gets_the_gateways_estimate() {
    let (a, b) = (mock(), mock());
    let gw = AdminGateway::start(&config(&a, &b, ""));
    let body = r#"{"model":"solo","messages":[{"role":"user","content":"count to five"}],"mock":{"tokens":5,"no_usage":true}}"#;
    let r = gw.chat(KEY, body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").map(|n| n.parse::<usize>().unwrap()), Some(r.body.len()));
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "word word word word word ");
    assert_eq!(v["object"], "chat.completion");
    let usage = &v["usage"];
    assert_eq!(usage["completion_tokens"], 7, "the reply text at 4 bytes a token: {v}");
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0);
    assert_eq!(usage["total_tokens"], prompt + 7);
    assert_eq!(v["x_switchboard_estimated"], true);
    // With the upstream's usage, the answer is relayed byte for byte.
    let r = gw.chat(KEY, &body.replace(r#","no_usage":true"#, ""));
    assert!(!r.text().contains("x_switchboard_estimated"));
    assert_eq!(r.json()["usage"]["completion_tokens"], 5);
    let recorded = String::from_utf8(a.recorded().last().unwrap().body.clone()).unwrap();
    assert!(recorded.contains("count to five"));
    gw.wait_usage_written(2);
    let recs = records(&gw);
    assert_eq!(recs.iter().filter(|r| r.3).count(), 1, "{recs:?}");
    // A text completion too; an answer past the hold bound goes as it came.
    let mut c = Conn::open(gw.addr);
    let body = r#"{"model":"solo","prompt":"x","mock":{"tokens":2,"no_usage":true}}"#;
    c.send(&request("POST", "/v1/completions", Some(KEY), body, &[]));
    let r = c.response();
    assert_eq!(r.json()["usage"]["completion_tokens"], 3, "{}", r.text());
    let big = gw.chat(
        KEY,
        r#"{"model":"solo","messages":[{"role":"user","content":"x"}],"mock":{"tokens":60000,"no_usage":true}}"#,
    );
    assert_eq!(big.status, 200);
    assert!(big.body.len() > switchboard_dataplane::HOLD_MAX_BYTES);
    assert_eq!(big.json()["usage"], serde_json::Value::Null, "relayed as the upstream wrote it");
}
