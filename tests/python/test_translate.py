"""Translation between the two APIs, seen by the official SDKs against the
real binary: the `anthropic` SDK served by an OpenAI-kind provider and by an
enrolled BYOI node (Messages → chat and back), failing over from a down
Anthropic-kind target to the local pool mid-request without an error; the
`openai` SDK served by an Anthropic-kind provider (chat → Messages and back),
streaming and tools. For each, the usage the SDK reports equals the
gateway's usage record, prompt-cache tokens included."""

import json
import socket
import time

import anthropic
import openai
import pytest

from conftest import ADMIN_TOKEN, KEY, PROVIDER_KEY, admin_call, enrolled_node, serve_with_admin, stop_clean
from test_anthropic import expect_usage, last_record

AKEY = "sk-ant-provider-for-translation-tests"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a place",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
    {"name": "get_time", "description": "Time at a place", "input_schema": {"type": "object"}},
]


def dead_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture(scope="module")
def both_kinds(mock_upstream, tmp_path_factory):
    """`switchboard serve` with an OpenAI-kind provider (`local`), an
    Anthropic-kind one (`claude`), one Anthropic-kind provider that is down,
    and the admin API. Yields (gateway base URL without /v1, admin URL)."""
    p = serve_with_admin(
        tmp_path_factory,
        "translate",
        f"""
[[providers]]
name = "local"
base_url = "{mock_upstream}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{mock_upstream}"
api_key = "{AKEY}"

[[providers]]
name = "claude-down"
kind = "anthropic"
base_url = "{dead_url()}"
api_key = "{AKEY}"

[[routes]]
name = "local-llm"
targets = [{{ provider = "local", model = "qwen-local" }}]

[[routes]]
name = "claude-sonnet"
targets = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]

[[routes]]
name = "claude-or-local"
strategy = "priority"
targets = [{{ provider = "claude-down", model = "claude-sonnet-4-5" }}, {{ provider = "local", model = "qwen-local" }}]
""",
    )
    yield p.base, p.admin
    stop_clean(p, (KEY, PROVIDER_KEY, AKEY, ADMIN_TOKEN))


def claude(base):
    return anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0, timeout=20)


def gpt(base):
    return openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=20)


def tool_round_trip(c, model, steer):
    """tool_use (two calls in parallel, streamed) → tool_result → answer;
    returns (first message, answer, the answer's request id)."""
    messages = [{"role": "user", "content": "Weather and time in Paris?"}]
    with c.messages.stream(model=model, max_tokens=64, tools=TOOLS, messages=messages, extra_body=steer) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [b.name for b in calls] == ["get_weather", "get_time"], "parallel calls in order"
    assert all(b.input == {"location": "Paris", "unit": "celsius"} for b in calls), "fragments joined"
    assert len({b.id for b in calls}) == 2
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": b.id, "content": "18 C, sunny"} for b in calls],
        },
    ]
    with c.messages.stream(model=model, max_tokens=64, tools=TOOLS, messages=messages, extra_body=steer) as s:
        answer = s.get_final_message()
        request_id = s.response.headers["x-request-id"]
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text" and answer.content[0].text
    return first, answer, request_id


def test_a_message_served_by_an_openai_kind_provider(both_kinds):
    base, admin = both_kinds
    raw = claude(base).messages.with_raw_response.create(
        model="local-llm",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hello"}],
        extra_body={"mock": {"tokens": 3, "cache_read_tokens": 5}},
    )
    msg = raw.parse()
    assert raw.headers["x-switchboard-target"] == "local"
    assert msg.type == "message" and msg.role == "assistant" and msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text == "word word word "
    assert msg.usage.output_tokens == 3 and msg.usage.cache_read_input_tokens == 5
    expect_usage(admin, raw.headers["x-request-id"], msg.usage)


def test_a_streamed_message_and_a_tool_round_trip_served_by_an_openai_kind_provider(both_kinds):
    base, admin = both_kinds
    with claude(base).messages.stream(
        model="local-llm",
        max_tokens=64,
        messages=[{"role": "user", "content": "Count"}],
        extra_body={"mock": {"tokens": 6, "interval_ms": 2, "thinking": True, "cache_read_tokens": 4}},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text == "word " * 6 and final.content[-1].text == text
    assert final.content[0].type == "thinking" and final.content[0].thinking
    assert final.usage.output_tokens == 6 and final.usage.cache_read_input_tokens == 4
    assert final.usage.input_tokens > 0
    expect_usage(admin, request_id, final.usage)

    steer = {"mock": {"tokens": 2, "tool_use": True, "tool_calls": 2, "interval_ms": 1}}
    _, answer, request_id = tool_round_trip(claude(base), "local-llm", steer)
    expect_usage(admin, request_id, answer.usage)


def test_typed_errors_and_count_tokens_through_translation(both_kinds):
    base, _ = both_kinds
    ask = dict(max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=base, api_key="sk-nope", max_retries=0).messages.create(model="local-llm", **ask)
    with pytest.raises(anthropic.NotFoundError):
        claude(base).messages.create(model="no-such-model", **ask)
    with pytest.raises(anthropic.RateLimitError) as e:
        claude(base).messages.create(model="local-llm", extra_body={"mock": {"status": 429}}, **ask)
    assert e.value.body["error"]["type"] == "rate_limit_error", "the OpenAI-kind error in Anthropic's shape"
    with pytest.raises(anthropic.OverloadedError) as e:
        claude(base).messages.create(model="local-llm", extra_body={"mock": {"status": 529}}, **ask)
    assert e.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude(base).messages.create(
            model="local-llm",
            max_tokens=16,
            messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}],
        )
    assert "messages[0].content[0]" in e.value.message
    count = claude(base).messages.count_tokens(model="local-llm", messages=ask["messages"])
    assert count.input_tokens > 0, "the gateway's estimate when no Anthropic-kind provider can count"


def test_a_down_anthropic_target_fails_over_to_the_local_pool_streamed(both_kinds):
    base, admin = both_kinds
    with claude(base).messages.stream(
        model="claude-or-local",
        max_tokens=32,
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"mock": {"tokens": 4, "interval_ms": 1}},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert (headers["x-switchboard-target"], headers["x-switchboard-attempts"]) == ("local", "2")
    assert text == "word " * 4 and final.stop_reason == "end_turn"
    rec = expect_usage(admin, headers["x-request-id"], final.usage)
    assert rec["attempts"] == 2


def test_claude_code_style_requests_served_by_an_enrolled_node(both_kinds, tmp_path):
    base, admin = both_kinds
    model, name = "node-llm", "translate-node"
    targets = [{"nodes": model}, {"provider": "local", "model": "qwen-local"}]
    admin_call(admin, "POST", "/v1/admin/routes", {"name": model, "targets": targets})
    with enrolled_node(base + "/v1", admin, tmp_path / "node.json", name, model):
        c = claude(base)
        # Until the node's connections reach the worker this client talks to,
        # the route's provider serves.
        deadline = time.time() + 10
        while True:
            raw = c.messages.with_raw_response.create(
                model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
            if raw.headers["x-switchboard-target"] == f"node:{name}" or time.time() > deadline:
                break
            time.sleep(0.1)
        assert raw.headers["x-switchboard-target"] == f"node:{name}"
        steer = {"mock": {"tokens": 2, "tool_use": True, "tool_calls": 2}}
        first, answer, request_id = tool_round_trip(c, model, steer)
        assert answer.content[0].text == "node node "
        rec = expect_usage(admin, request_id, answer.usage)
        assert rec["target"] == f"node:{name}", rec


def test_the_openai_sdk_served_by_an_anthropic_kind_provider(both_kinds):
    base, admin = both_kinds
    c = gpt(base)
    raw = c.chat.completions.with_raw_response.create(
        model="claude-sonnet",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=40,
        extra_body={"mock": {"tokens": 3, "cache_read_tokens": 6, "cache_write_tokens": 2}},
    )
    reply = raw.parse()
    assert raw.headers["x-switchboard-target"] == "claude"
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    u = reply.usage
    assert u.completion_tokens == 3 and u.prompt_tokens_details.cached_tokens == 6
    rec = last_record(admin, raw.headers["x-request-id"])
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (u.prompt_tokens, u.completion_tokens)
    assert (rec["cache_read_tokens"], rec["cache_write_tokens"]) == (6, 2)
    assert rec["endpoint"] == "chat.completions"

    chunks = list(
        c.chat.completions.create(
            model="claude-sonnet",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": TOOLS[0]["input_schema"]}}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"mock": {"tokens": 2, "tool_use": True, "interval_ms": 1}},
        )
    )
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and calls[0].id
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"location": "Paris", "unit": "celsius"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert chunks[-1].usage.completion_tokens == 2

    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="claude-sonnet", n=2, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["param"] == "n"
