//! `/v1/messages` (Anthropic's Messages API) in, Anthropic-kind providers
//! out, passthrough: `x-api-key` auth both ways, `anthropic-version` and
//! `anthropic-beta` forwarded, the body forwarded as sent (but the model),
//! Anthropic's error shape on this path (`event: error` in streams), kinds
//! that cannot serve a request skipped, failover on 529, usage from
//! Anthropic's counts with prompt-cache reads and writes.

mod common;

use common::*;
use switchboard_loadtests::MockHandle;

const AKEY: &str = "sk-ant-provider-key-0001";

fn config(a: &MockHandle, b: &MockHandle, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{a}"
api_key = "{AKEY}"
prices = [{{ model = "claude-sonnet-4-5", prompt_per_mtok = 3.0, completion_per_mtok = 15.0 }}]

[[providers]]
name = "claude-b"
kind = "anthropic"
base_url = "{b}"
api_key = "{AKEY}"

[[providers]]
name = "openai"
base_url = "{b}"
api_key = "{PROVIDER_KEY}"

[[routes]]
name = "claude-sonnet-4-5"
targets = [{{ provider = "claude" }}]

[[routes]]
name = "sonnet"
targets = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]

[[routes]]
name = "claude-pair"
strategy = "priority"
targets = [{{ provider = "claude" }}, {{ provider = "claude-b" }}]

[[routes]]
name = "gpt-only"
targets = [{{ provider = "openai" }}]

[[routes]]
name = "mixed"
strategy = "priority"
targets = [{{ provider = "openai" }}, {{ provider = "claude" }}]

[[keys]]
id = "test"
hash = "{}"
{extra}
"#,
        key_hash(KEY),
        a = a.base_url(),
        b = b.base_url(),
    )
}

fn messages(gw_addr: std::net::SocketAddr, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut c = Conn::open(gw_addr);
    let mut h = vec![("x-api-key", KEY)];
    h.extend_from_slice(headers);
    c.send(&request("POST", "/v1/messages", None, body, &h));
    c.response()
}

fn anthropic_error(r: &Response) -> (String, String) {
    let v = r.json();
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (e["type"].as_str().unwrap_or_default().to_string(), e["message"].as_str().unwrap_or_default().to_string())
}

const HELLO: &str = r#"{"model":"sonnet","max_tokens":64,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"mock":{"tokens":3}}"#;

#[test]
fn a_message_passes_through_with_the_providers_key_and_the_clients_anthropic_headers() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, ""));
    let r = messages(
        gw.addr,
        HELLO,
        &[("anthropic-version", "2023-06-01"), ("anthropic-beta", "prompt-caching-2024-07-31")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-sonnet-4-5", "the target's model name was spliced in");
    assert_eq!(v["stop_reason"], "end_turn");
    let sent = a.recorded().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(AKEY), "the provider's key, as x-api-key");
    assert_eq!(sent.header("authorization"), None, "no bearer to an Anthropic-kind provider");
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    assert_eq!(
        String::from_utf8(sent.body).unwrap(),
        HELLO.replace(r#""model":"sonnet""#, r#""model":"claude-sonnet-4-5""#),
        "bytes as sent (cache_control included), but the model"
    );
    // Without the client's version, the gateway sends the API's one version.
    let r = messages(gw.addr, HELLO, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = a.recorded().pop().unwrap();
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("anthropic-beta"), None);
    // `Authorization: Bearer` with a client key works on this path too.
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/messages", Some(KEY), HELLO, &[]));
    assert_eq!(c.response().status, 200);
}

#[test]
fn errors_on_the_messages_path_take_anthropics_shape() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, ""));
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/messages", None, HELLO, &[]));
    let r = c.response();
    assert_eq!(r.status, 401);
    assert_eq!(anthropic_error(&r).0, "authentication_error");
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/messages", None, HELLO, &[("x-api-key", "sk-wrong")]));
    let r = c.response();
    assert_eq!((r.status, anthropic_error(&r).0.as_str()), (401, "authentication_error"));

    let r = messages(gw.addr, &HELLO.replace("sonnet", "no-such-model"), &[]);
    assert_eq!((r.status, anthropic_error(&r).0.as_str()), (404, "not_found_error"));

    let r = messages(gw.addr, &HELLO.replace(r#""max_tokens":64,"#, ""), &[]);
    let (kind, message) = anthropic_error(&r);
    assert_eq!((r.status, kind.as_str()), (400, "invalid_request_error"));
    assert!(message.contains("max_tokens"), "{message}");

    // A route of OpenAI-kind targets serves Messages translated (tests/translate.rs).
    let r = messages(gw.addr, &HELLO.replace("sonnet", "gpt-only"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
    assert_eq!(b.requests(), 1, "the OpenAI-kind provider got it as a chat completion");

    // OpenAI's paths keep OpenAI's shape; a chat completion to an
    // Anthropic-kind target is translated, a text completion cannot be.
    let r = gw.chat(r#"{"model":"mixed","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.post("/v1/completions", r#"{"model":"claude-sonnet-4-5","prompt":"hi"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error()["code"], "unsupported_target_kind");
    assert!(r.error()["message"].as_str().unwrap_or_default().contains("/v1/completions"));
    assert_eq!(a.requests(), 0, "the Anthropic-kind provider never got a completion body");
    // The route with both kinds serves Messages in its own order: its first
    // target is OpenAI-kind (translated), passthrough is not preferred.
    let r = messages(gw.addr, &HELLO.replace("sonnet", "mixed"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-target"), Some("openai"));
    assert_eq!((a.requests(), b.requests()), (0, 3));
}

#[test]
fn an_upstream_error_is_relayed_as_sent() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, ""));
    let overloaded = HELLO.replace(r#""tokens":3"#, r#""tokens":3,"status":529"#);
    let r = messages(gw.addr, &overloaded, &[]);
    assert_eq!(r.status, 529, "one target: its answer relayed");
    assert_eq!(
        r.json(),
        serde_json::json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
    );
    let r = messages(gw.addr, &HELLO.replace(r#""tokens":3"#, r#""tokens":3,"status":400"#), &[]);
    assert_eq!((r.status, anthropic_error(&r).0.as_str()), (400, "invalid_request_error"));
}

#[test]
fn an_overloaded_anthropic_target_is_passed_over_before_the_first_byte() {
    use switchboard_loadtests::{Behaviour, MockConfig};
    let overloaded = |b: Behaviour| mock_with(MockConfig { record: true, behaviour: b, ..MockConfig::default() });
    let a = overloaded(Behaviour { status: Some(529), ..Behaviour::default() });
    let b = mock();
    let gw = Gateway::start(&config(&a, &b, ""));
    let pair = HELLO.replace("sonnet", "claude-pair");
    let r = messages(gw.addr, &pair, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-attempts"), Some("2"));
    assert_eq!(r.header("x-switchboard-target"), Some("claude-b"));
    // A stream whose first target fails before its first token: the next one serves it, no error shown.
    let a = overloaded(Behaviour { error_after: Some(0), interval_ms: Some(1), ..Behaviour::default() });
    let gw = Gateway::start(&config(&a, &b, ""));
    let stream = pair.replace(r#""mock":{"tokens":3}"#, r#""stream":true,"mock":{"tokens":3}"#);
    let r = messages(gw.addr, &stream, &[]);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains("event: error"), "{text}");
    assert!(text.trim_end().ends_with(r#"data: {"type":"message_stop"}"#), "{text}");
    assert_eq!(a.requests(), 1);
}

#[test]
fn streams_pass_through_and_a_cut_stream_ends_with_an_anthropic_error_event() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, ""));
    let body =
        HELLO.replace(r#""mock":{"tokens":3}"#, r#""stream":true,"mock":{"tokens":3,"tool_use":true,"thinking":true}"#);
    let body = body
        .replace(r#""messages""#, r#""tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"messages""#);
    let r = messages(gw.addr, &body, &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/event-stream"));
    let text = r.text();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(text.contains(r#""type":"thinking_delta""#) && text.contains(r#""type":"input_json_delta""#));
    assert!(text.contains(r#""stop_reason":"tool_use""#));
    assert!(!text.contains("[DONE]"), "nothing OpenAI-shaped is added: {text}");

    // Cut after two tokens: the client gets Anthropic's error event, not a silent end.
    let cut =
        HELLO.replace(r#""mock":{"tokens":3}"#, r#""stream":true,"mock":{"tokens":5,"interval_ms":5,"drop_after":2}"#);
    let r = messages(gw.addr, &cut, &[]);
    assert_eq!(r.status, 200);
    let text = r.text();
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(last.starts_with("event: error\ndata: "), "ends with an error event: {text}");
    let data: serde_json::Value = serde_json::from_str(last.split_once("data: ").unwrap().1).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");

    // The upstream's own error event is relayed once, as sent.
    let err =
        HELLO.replace(r#""mock":{"tokens":3}"#, r#""stream":true,"mock":{"tokens":5,"interval_ms":5,"error_after":2}"#);
    let text = messages(gw.addr, &err, &[]).text();
    assert_eq!(text.matches("event: error").count(), 1, "{text}");
    assert!(text.contains(r#""type":"overloaded_error""#));
}

#[test]
fn usage_counts_prompt_cache_tokens_at_their_prices_and_groups_by_session() {
    let (a, b) = (mock(), mock());
    let cfg = config(&a, &b, "").replace(
        "prompt_per_mtok = 3.0, completion_per_mtok = 15.0 }",
        "prompt_per_mtok = 3.0, completion_per_mtok = 15.0, cache_read_per_mtok = 0.3, cache_write_per_mtok = 3.75 }",
    );
    let gw = AdminGateway::start(&cfg);
    let body = HELLO.replace(r#""tokens":3"#, r#""tokens":42,"cache_read_tokens":20,"cache_write_tokens":10"#);
    let send = |body: &str, session: (&str, &str)| {
        let mut c = Conn::open(gw.addr);
        c.send(&request("POST", "/v1/messages", None, body, &[("x-api-key", KEY), session]));
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };
    let whole = send(&body, ("X-Claude-Code-Session-Id", "sess-a")).json();
    let stream = body.replace(r#""mock":"#, r#""stream":true,"mock":"#);
    send(&stream, ("X-Claude-Code-Session-Id", "sess-a"));
    send(&body, ("X-Session-Id", "sess-b"));
    gw.wait_usage_written(3);

    let usage = &whole["usage"];
    let input = usage["input_tokens"].as_u64().unwrap();
    let conn = rusqlite::Connection::open(&gw.db_path).unwrap();
    let rows: Vec<(i64, i64, i64, i64, i64, String, bool)> = conn
        .prepare(
            "SELECT prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, session, \
             stream FROM request_log ORDER BY ts_ms",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let prompt = (input + 30) as i64;
    for (i, row) in rows.iter().enumerate() {
        let (p, c, read, write, cost, _, stream) = row;
        // The stream's body is a few bytes longer: the mock's input count is the body's length / 4.
        let p_expected = if *stream { *p } else { prompt };
        assert_eq!(*p, p_expected, "row {i}: prompt = input + cache reads + cache writes");
        assert!(*p > 30, "the mock reports some input besides the cache");
        assert_eq!((*c, *read, *write), (42, 20, 10), "row {i}");
        let plain = p - 30;
        assert_eq!(*cost, plain * 3_000 + 42 * 15_000 + 20 * 300 + 10 * 3_750, "row {i}: cache at its own prices");
    }
    assert_eq!(rows[0].0, prompt);
    assert_eq!((rows[0].5.as_str(), rows[1].5.as_str(), rows[2].5.as_str()), ("sess-a", "sess-a", "sess-b"));

    let r = gw.call("GET", "/v1/admin/usage?granularity=total&group_by=session", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.json()["data"].as_array().unwrap().clone();
    let by = |s: &str| data.iter().find(|row| row["session"] == s).unwrap_or_else(|| panic!("{s}: {data:?}")).clone();
    assert_eq!(by("sess-a")["requests"], 2);
    assert_eq!(by("sess-a")["cache_read_tokens"], 40);
    assert_eq!(by("sess-b")["requests"], 1);
    assert_eq!(by("sess-b")["completion_tokens"], 42);
    let r = gw.call("GET", "/v1/admin/usage?granularity=total&session=sess-b&group_by=model", None);
    let data = r.json()["data"].clone();
    assert_eq!((data[0]["requests"].as_i64(), data[0]["model"].as_str()), (Some(1), Some("sonnet")));
    // The rollups keep cache tokens too.
    let r = gw.call("GET", "/v1/admin/usage?granularity=total", None);
    assert_eq!(r.json()["data"][0]["cache_write_tokens"], 30);
}

#[test]
fn count_tokens_goes_to_an_anthropic_provider_or_is_estimated_and_models_list_in_anthropics_shape() {
    let (a, b) = (mock(), mock());
    let gw = Gateway::start(&config(&a, &b, ""));
    let body = r#"{"model":"sonnet","messages":[{"role":"user","content":"How many tokens is this?"}]}"#;
    let post = |body: &str| {
        let mut c = gw.conn();
        c.send(&request("POST", "/v1/messages/count_tokens", None, body, &[("x-api-key", KEY)]));
        c.response()
    };
    let r = post(body);
    assert_eq!(r.status, 200, "{}", r.text());
    let spliced = body.replace("\"sonnet\"", "\"claude-sonnet-4-5\"");
    assert_eq!(r.json(), serde_json::json!({"input_tokens": spliced.len().div_ceil(4)}), "the provider's count");
    let sent = a.recorded().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.header("x-api-key"), Some(AKEY));
    // No Anthropic-kind target: the gateway's estimate, never an error.
    let r = post(&body.replace("sonnet", "gpt-only"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(b.requests(), 0);
    // Its errors are Anthropic's.
    let r = post(r#"{"model":"sonnet"}"#);
    assert_eq!((r.status, anthropic_error(&r).0.as_str()), (400, "invalid_request_error"));

    // The model list: Anthropic's shape for Anthropic clients, OpenAI's otherwise.
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/models", None, "", &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")]));
    let v = c.response().json();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][0]["type"], "model");
    assert!(v["data"].as_array().unwrap().iter().any(|m| m["id"] == "sonnet"));
    assert_eq!(v["first_id"], v["data"][0]["id"]);
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/models/nope", None, "", &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")]));
    let r = c.response();
    assert_eq!((r.status, anthropic_error(&r).0.as_str()), (404, "not_found_error"));
    let mut c = gw.conn();
    c.send(&request("GET", "/v1/models", Some(KEY), "", &[]));
    assert_eq!(c.response().json()["object"], "list");
}

#[test]
fn the_response_cache_answers_whole_messages_but_never_replays_a_messages_stream() {
    let (a, b) = (mock(), mock());
    let cfg = config(&a, &b, "").replace(
        "name = \"sonnet\"\ntargets = [{ provider = \"claude\", model = \"claude-sonnet-4-5\" }]",
        "name = \"sonnet\"\ntargets = [{ provider = \"claude\", model = \"claude-sonnet-4-5\" }]\ncache = { mode = \"always\", ttl_ms = 60000 }",
    );
    assert!(cfg.contains("mode = \"always\""));
    let gw = Gateway::start(&cfg);
    let first = messages(gw.addr, HELLO, &[]);
    assert_eq!(first.header("x-switchboard-cache"), Some("miss"));
    let again = messages(gw.addr, HELLO, &[]);
    assert_eq!(again.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(again.json(), first.json());
    assert_eq!(a.requests(), 1);
    let stream = HELLO.replace(r#""mock":"#, r#""stream":true,"mock":"#);
    let r = messages(gw.addr, &stream, &[]);
    assert_eq!(r.header("x-switchboard-cache"), Some("bypass"));
    let text = r.text();
    assert!(text.starts_with("event: message_start"), "an Anthropic stream, from the provider: {text}");
    assert_eq!(a.requests(), 2);
}

#[test]
fn an_anthropic_provider_made_through_the_admin_api_serves_messages() {
    use serde_json::json;
    let up = mock();
    let gw = AdminGateway::start("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n");
    let r = gw.call(
        "POST",
        "/v1/admin/providers",
        Some(&json!({"name": "claude", "kind": "anthropic", "base_url": up.base_url(), "api_keys": [AKEY],
                     "models": [{"name": "sonnet", "prompt_per_mtok": 3.0, "completion_per_mtok": 15.0,
                                 "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75}]})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["kind"], "anthropic");
    assert_eq!(r.json()["models"][0]["cache_read_per_mtok"], 0.3);
    let bad = gw.call(
        "POST",
        "/v1/admin/providers",
        Some(&json!({"name": "x", "kind": "anthropic", "base_url": up.base_url(),
                     "models": [{"name": "m", "cache_write_per_mtok": -1.0}]})),
    );
    assert_eq!(bad.status, 422, "a cache price out of range: {}", bad.text());
    assert_eq!(bad.error()["param"], "models[0].cache_write_per_mtok");
    assert_eq!(
        gw.call("POST", "/v1/admin/providers", Some(&json!({"name": "y", "kind": "grpc", "base_url": up.base_url()})))
            .status
            / 100,
        4
    );
    assert_eq!(
        gw.call("POST", "/v1/admin/routes", Some(&json!({"name": "sonnet", "targets": [{"provider": "claude"}]})))
            .status,
        201
    );
    assert_eq!(gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "acme"}))).status, 201);
    let r = gw.call("POST", "/v1/admin/keys", Some(&json!({"org": "acme", "name": "claude-code"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key_secret"].as_str().unwrap().to_string();
    let mut c = Conn::open(gw.addr);
    c.send(&request("POST", "/v1/messages", None, HELLO, &[("x-api-key", &secret)]));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.recorded()[0].header("x-api-key"), Some(AKEY));
    // Back to OpenAI: the route serves Messages translated, as chat completions.
    let r = gw.call("PATCH", "/v1/admin/providers/claude", Some(&json!({"kind": "openai"})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["kind"], "openai");
    let mut c = Conn::open(gw.addr);
    c.send(&request("POST", "/v1/messages", None, HELLO, &[("x-api-key", &secret)]));
    let r = c.response();
    assert_eq!((r.status, r.json()["type"].as_str()), (200, Some("message")), "{}", r.text());
    let last = up.recorded().pop().unwrap();
    assert_eq!((last.path.as_str(), last.header("x-api-key")), ("/v1/chat/completions", None));
}
