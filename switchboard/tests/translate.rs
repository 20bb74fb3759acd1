//! Translation between the two APIs, end to end through the real request
//! path: `/v1/messages` served by OpenAI-kind providers (Messages → chat,
//! and the answer back as a message or Anthropic's event sequence), chat
//! completions served by Anthropic-kind providers (the other way), tool calls
//! streamed fragment by fragment, usage exact both ways (prompt-cache tokens
//! included), failover across kinds before the first byte, what a target
//! cannot honour answered 400 naming the field, upstream errors in the
//! client's shape, a stream cut mid-way ending with the client's error event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use switchboard_loadtests::MockHandle;

const AKEY: &str = "sk-ant-provider-key-0001";

fn config(claude: &str, local: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{claude}"
api_key = "{AKEY}"

[[providers]]
name = "local"
base_url = "{local}"
api_key = "{PROVIDER_KEY}"

[[routes]]
name = "local-llm"
targets = [{{ provider = "local", model = "qwen-local" }}]

[[routes]]
name = "claude-sonnet"
targets = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]

[[routes]]
name = "claude-then-local"
strategy = "priority"
targets = [{{ provider = "claude", model = "claude-sonnet-4-5" }}, {{ provider = "local", model = "qwen-local" }}]

[[routes]]
name = "local-then-claude"
strategy = "priority"
targets = [{{ provider = "local", model = "qwen-local" }}, {{ provider = "claude", model = "claude-sonnet-4-5" }}]

[[keys]]
id = "test"
hash = "{}"
"#,
        key_hash(KEY)
    )
}

fn gateway(claude: &MockHandle, local: &MockHandle) -> Gateway {
    Gateway::start(&config(&claude.base_url(), &local.base_url()))
}

fn messages(gw: &Gateway, body: &Value) -> Response {
    let mut c = Conn::open(gw.addr);
    let body = body.to_string();
    c.send(&request("POST", "/v1/messages", None, &body, &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")]));
    c.response()
}

fn chat(gw: &Gateway, body: &Value) -> Response {
    gw.chat(&body.to_string())
}

/// The (event name, data) pairs of an Anthropic event stream.
fn events(r: &Response) -> Vec<(String, Value)> {
    let text = r.text();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default().to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            let data: Value = serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data} in {text}"));
            assert_eq!(data["type"].as_str(), Some(name.as_str()), "event name = data type: {e}");
            (name, data)
        })
        .collect()
}

/// The chunks of an OpenAI chat stream (without `[DONE]`), and whether it ended with `[DONE]`.
fn chat_chunks(r: &Response) -> (Vec<Value>, bool) {
    let data = sse_data(&r.body);
    let done = data.last().is_some_and(|d| d == "[DONE]");
    let chunks = data.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    (chunks, done)
}

fn weather_tool_anthropic() -> Value {
    json!([{"name": "get_weather", "description": "Weather for a place",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
           {"name": "get_time", "input_schema": {"type": "object"}}])
}

fn weather_tool_openai() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a place",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}])
}

#[test]
fn a_message_to_an_openai_kind_provider_goes_as_a_chat_completion_and_comes_back_a_message() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief.",
                "cache_control": {"type": "ephemeral"}}], "stop_sequences": ["END"], "temperature": 0.5,
                "metadata": {"user_id": "u-42"},
                "messages": [{"role": "user", "content": "hi"}], "mock": {"tokens": 3}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"));
    assert_eq!(r.header("x-switchboard-target"), Some("local"));
    let sent = local.recorded().pop().expect("the local provider got the request");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert!(sent.header("x-api-key").is_none(), "the client's key never goes upstream");
    let up: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(up["model"], "qwen-local");
    assert_eq!(up["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(up["messages"][1]["role"], "user");
    assert_eq!((up["max_tokens"].as_u64(), up["temperature"].as_f64()), (Some(64), Some(0.5)));
    assert_eq!((up["stop"][0].as_str(), up["user"].as_str()), (Some("END"), Some("u-42")));
    assert!(!sent.body.windows(13).any(|w| w == b"cache_control"), "dropped for an OpenAI-kind target");

    let m = r.json();
    assert_eq!((m["type"].as_str(), m["role"].as_str()), (Some("message"), Some("assistant")));
    assert!(m["id"].as_str().is_some_and(|id| id.starts_with("msg_")), "{m}");
    assert_eq!(m["content"], json!([{"type": "text", "text": "word word word "}]));
    assert_eq!(m["stop_reason"], "end_turn");
    // The mock's prompt count is its body's bytes / 4: the exact number it reported.
    let prompt = sent.body.len().div_ceil(4) as u64;
    assert_eq!(m["usage"]["input_tokens"].as_u64(), Some(prompt), "{m}");
    assert_eq!(m["usage"]["output_tokens"], 3);
    assert_eq!(claude.requests(), 0);
}

#[test]
fn a_streamed_message_from_an_openai_kind_provider_is_anthropics_event_sequence_with_parallel_tool_calls() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 64, "stream": true, "tools": weather_tool_anthropic(),
                "messages": [{"role": "user", "content": "Weather and time in Paris?"}],
                "mock": {"tokens": 5, "tool_use": true, "tool_calls": 2, "thinking": true, "interval_ms": 1,
                         "cache_read_tokens": 4}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/event-stream"));
    let sent: Value = serde_json::from_slice(&local.recorded().pop().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "usage asked for: message_delta needs it");
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tools"][0]["function"]["parameters"]["type"], "object");

    let ev = events(&r);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], &["message_delta", "message_stop"]);
    assert!(!r.text().contains("[DONE]"));
    let start = &ev[0].1["message"];
    assert!(start["usage"]["input_tokens"].as_u64().is_some_and(|n| n > 0), "never 0 in message_start: {start}");
    // Blocks: thinking, then the two tool calls in order, each opened,
    // filled and closed before the next opens; indexes increase.
    let mut open: Option<u64> = None;
    let mut blocks: Vec<(String, Value, String)> = Vec::new();
    for (name, data) in &ev {
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "a block opens only after the last closed: {names:?}");
                let i = data["index"].as_u64().unwrap();
                assert_eq!(i as usize, blocks.len(), "indexes increase from 0");
                open = Some(i);
                let b = &data["content_block"];
                blocks.push((b["type"].as_str().unwrap().to_string(), b.clone(), String::new()));
            }
            "content_block_delta" => {
                assert_eq!(data["index"].as_u64(), open, "a delta of the open block");
                let d = &data["delta"];
                let text = d["thinking"].as_str().or(d["text"].as_str()).or(d["partial_json"].as_str()).unwrap();
                blocks.last_mut().unwrap().2.push_str(text);
            }
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            _ => {}
        }
    }
    let kinds: Vec<&str> = blocks.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(kinds, ["thinking", "tool_use", "tool_use"], "{names:?}");
    assert_eq!(blocks[0].2, "Let me think about it.");
    let (tool_a, tool_b) = (&blocks[1], &blocks[2]);
    assert_eq!((tool_a.1["name"].as_str(), tool_b.1["name"].as_str()), (Some("get_weather"), Some("get_time")));
    let id = |b: &(String, Value, String)| b.1["id"].as_str().unwrap().to_string();
    assert!(id(tool_a).ends_with("_0") && id(tool_b).ends_with("_1"), "ids kept, in order");
    for t in [tool_a, tool_b] {
        let input: Value = serde_json::from_str(&t.2).unwrap();
        assert_eq!(input, json!({"location": "Paris", "unit": "celsius"}), "fragments joined in order");
    }
    let fragments = ev.iter().filter(|(_, d)| d["delta"]["type"] == "input_json_delta").count();
    assert!(fragments >= 6, "arguments streamed as they came, not whole: {fragments}");
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    // OpenAI's prompt count includes the cached tokens; Anthropic's input excludes them.
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 4);
}

#[test]
fn a_chat_completion_to_an_anthropic_kind_provider_goes_as_a_message_and_comes_back_a_completion() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    let r = chat(
        &gw,
        &json!({"model": "claude-sonnet", "max_tokens": 50, "user": "u-7",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                "mock": {"tokens": 4, "cache_read_tokens": 6, "cache_write_tokens": 2}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = claude.recorded().pop().expect("the Anthropic provider got it");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(AKEY));
    assert!(sent.header("anthropic-version").is_some());
    let up: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(up["model"], "claude-sonnet-4-5");
    assert_eq!(up["system"], "Be brief.");
    assert_eq!((up["messages"].as_array().map(Vec::len), up["messages"][0]["role"].as_str()), (Some(1), Some("user")));
    let content = &up["messages"][0]["content"];
    assert!(content == "hi" || content[0]["text"] == "hi", "{content}");
    assert_eq!((up["max_tokens"].as_u64(), up["metadata"]["user_id"].as_str()), (Some(50), Some("u-7")));

    let c = r.json();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert!(c["choices"][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let u = &c["usage"];
    let input = sent.body.len().div_ceil(4) as u64 - 8;
    assert_eq!(u["prompt_tokens"].as_u64(), Some(input + 8), "prompt = input + cache reads + writes: {u}");
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 6);
    assert_eq!((u["completion_tokens"].as_u64(), u["total_tokens"].as_u64()), (Some(4), Some(input + 12)));
}

#[test]
fn a_streamed_chat_completion_from_an_anthropic_kind_provider_streams_tool_call_fragments() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    let r = chat(
        &gw,
        &json!({"model": "claude-sonnet", "stream": true, "stream_options": {"include_usage": true},
                "tools": weather_tool_openai(), "messages": [{"role": "user", "content": "Weather?"}],
                "mock": {"tokens": 3, "tool_use": true, "thinking": true, "interval_ms": 1}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (chunks, done) = chat_chunks(&r);
    assert!(done, "ends with [DONE]: {}", r.text());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let reasoning: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    assert!(!reasoning.is_empty(), "thinking as reasoning_content");
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert!(calls.len() >= 2, "the opening and its argument fragments: {calls:?}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls[0]["id"].as_str().is_some_and(|id| id.starts_with("toolu_")));
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"location": "Paris", "unit": "celsius"}));
    let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = chunks.iter().find(|c| c["usage"].is_object()).expect("the usage chunk asked for");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);

    // Without include_usage: no usage chunk reaches the client.
    let r = chat(
        &gw,
        &json!({"model": "claude-sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 3}}),
    );
    let (chunks, done) = chat_chunks(&r);
    assert!(done);
    assert!(chunks.iter().all(|c| c.get("usage").is_none_or(Value::is_null)), "{}", r.text());
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.is_empty());
}

#[test]
fn failover_goes_across_kinds_before_the_first_byte() {
    let local = mock();
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    let gw = Gateway::start(&config(&dead, &local.base_url()));
    // The Anthropic-kind target is down: the OpenAI-kind one serves the Messages stream.
    let r = messages(
        &gw,
        &json!({"model": "claude-then-local", "max_tokens": 32, "stream": true,
                "messages": [{"role": "user", "content": "hi"}], "mock": {"tokens": 3}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.header("x-switchboard-target"), r.header("x-switchboard-attempts")), (Some("local"), Some("2")));
    let ev = events(&r);
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("message_stop"));
    assert!(ev.iter().all(|(n, _)| n != "error"));

    // And the other way: the local target is down, the Anthropic-kind one serves the chat stream.
    let claude = mock();
    let dead_local = format!("http://127.0.0.1:{}/v1", dead_port());
    let gw = Gateway::start(&config(&claude.base_url(), &dead_local));
    let r = chat(
        &gw,
        &json!({"model": "local-then-claude", "stream": true, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 2}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-target"), Some("claude"));
    let (chunks, done) = chat_chunks(&r);
    assert!(done && !chunks.is_empty());
}

#[test]
fn what_the_target_cannot_honour_is_a_400_naming_the_field_in_the_clients_shape() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    let r = chat(&gw, &json!({"model": "claude-sonnet", "n": 2, "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error()["param"], "n");
    let r = chat(
        &gw,
        &json!({"model": "claude-sonnet", "temperature": 1.5, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("temperature")));
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")));
    assert!(v["error"]["message"].as_str().unwrap().contains("messages[0].content[0]"), "{v}");
    assert_eq!(claude.requests() + local.requests(), 0, "nothing went upstream");
}

#[test]
fn upstream_errors_come_back_in_the_clients_shape_and_a_cut_stream_ends_with_its_error_event() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    // OpenAI-kind 429 → an Anthropic client's rate_limit_error.
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"status": 429}}),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let v = r.json();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("rate_limit_error")));
    assert!(v["error"]["message"].as_str().unwrap().contains("injected status 429"), "the upstream's message: {v}");
    // Anthropic-kind 529 overloaded → an OpenAI client's error object.
    let r = chat(
        &gw,
        &json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "hi"}], "mock": {"status": 529}}),
    );
    assert_eq!(r.status, 529, "{}", r.text());
    let e = r.error();
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("server_error"), Some("overloaded_error")), "{e}");

    // A Messages stream from an OpenAI-kind target cut mid-way: Anthropic's error event, no message_stop.
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 8, "stream": true, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 6, "interval_ms": 2, "drop_after": 3}}),
    );
    let ev = events(&r);
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("error"), "{}", r.text());
    assert!(ev.iter().all(|(n, _)| n != "message_stop"));
    // The OpenAI-kind upstream's own error event, translated once.
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 8, "stream": true, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 6, "interval_ms": 2, "error_after": 3}}),
    );
    let ev = events(&r);
    assert_eq!(ev.iter().filter(|(n, _)| n == "error").count(), 1, "{}", r.text());
    // A chat stream from an Anthropic-kind target cut mid-way: an error chunk, no [DONE].
    let r = chat(
        &gw,
        &json!({"model": "claude-sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 6, "interval_ms": 2, "drop_after": 3}}),
    );
    let data = sse_data(&r.body);
    assert!(data.last().is_some_and(|d| d.contains("\"error\"")), "{}", r.text());
    assert!(!data.iter().any(|d| d == "[DONE]"));
}

#[test]
fn a_translated_stream_that_cannot_be_read_or_is_not_a_stream_fails_over_before_the_first_byte() {
    let claude = mock();
    let chat_json = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    let answers = [
        // The first event is not a chat chunk.
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {not json\n\n"
            .to_string(),
        // Only keep-alive comments, then the end.
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: ping\n\n: ping\n\n"
            .to_string(),
        // JSON to a stream request.
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{chat_json}",
            chat_json.len()
        ),
    ];
    for answer in answers {
        let (port, t) = raw_upstream(answer.clone().into_bytes());
        let gw = Gateway::start(&config(&claude.base_url(), &format!("http://127.0.0.1:{port}/v1")));
        let r = messages(
            &gw,
            &json!({"model": "local-then-claude", "max_tokens": 16, "stream": true,
                    "messages": [{"role": "user", "content": "hi"}], "mock": {"tokens": 2}}),
        );
        assert_eq!(r.status, 200, "{answer:?}: {}", r.text());
        assert_eq!(
            (r.header("x-switchboard-target"), r.header("x-switchboard-attempts")),
            (Some("claude"), Some("2")),
            "{answer:?}"
        );
        let ev = events(&r);
        assert_eq!(ev.iter().filter(|(n, _)| n == "error").count(), 0, "{answer:?}: {}", r.text());
        assert_eq!(ev.last().map(|e| e.0.as_str()), Some("message_stop"));
        t.join().unwrap();
    }
}

#[test]
fn a_generation_cut_short_is_never_passed_off_as_complete_after_translation() {
    let (claude, local) = (mock(), mock());
    let gw = gateway(&claude, &local);
    // `[DONE]` without any finish_reason (llama-cpp-python interrupted): the
    // tokens went out, so the stream ends with an error event, not message_stop.
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 3, "no_finish_reason": true, "interval_ms": 5}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r);
    assert!(ev.iter().all(|(n, _)| n != "message_stop" && n != "message_delta"), "{}", r.text());
    let (name, last) = ev.last().unwrap();
    assert_eq!(name, "error");
    assert!(last["error"]["message"].as_str().unwrap().contains("cut short"), "{last}");
    // A whole answer with `finish_reason: null`: nothing went out, a clean 502.
    let r = messages(
        &gw,
        &json!({"model": "local-llm", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"tokens": 3, "no_finish_reason": true}}),
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "api_error");
}

#[test]
fn a_target_tried_again_after_one_of_the_other_kind_still_gets_the_translated_request() {
    let (claude, local) = (mock(), mock());
    let cfg = config(&claude.base_url(), &local.base_url()).replace(
        "name = \"local-then-claude\"\nstrategy = \"priority\"",
        "name = \"local-then-claude\"\nstrategy = \"priority\"\nretry = { max_attempts = 3, backoff_ms = 1 }",
    );
    assert!(cfg.contains("max_attempts = 3"));
    let gw = Gateway::start(&cfg);
    // Every attempt fails (the steering travels in the body to both): local,
    // claude (passthrough), then local again — translated again, not sent as Messages.
    let r = messages(
        &gw,
        &json!({"model": "local-then-claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"status": 503}}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-switchboard-attempts"), Some("3"));
    let paths: Vec<String> = local.recorded().into_iter().map(|q| q.path).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/chat/completions"], "both of local's attempts as chat");
    assert_eq!(claude.recorded().into_iter().map(|q| q.path).collect::<Vec<_>>(), ["/v1/messages"]);
}
