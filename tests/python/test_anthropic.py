"""The Anthropic Messages API through the gateway, seen by the official
`anthropic` SDK: `/v1/messages` passed through to an Anthropic-kind provider
(the mock upstream speaking Messages) — plain and streamed messages, a
streamed tool-use round trip, typed errors — and the usage the SDK reports
equal to the gateway's usage record (prompt-cache reads and writes
included)."""

import json
import time
import urllib.request

import anthropic
import pytest

from conftest import ADMIN_TOKEN, KEY, serve_with_admin, stop_clean

PROVIDER_KEY = "sk-ant-provider-for-sdk-tests"
MODEL = "claude-gateway-test"


@pytest.fixture(scope="module")
def claude_gateway(mock_upstream, tmp_path_factory):
    """`switchboard serve` with an Anthropic-kind provider and the admin API.
    Yields (gateway base URL without /v1, admin base URL)."""
    p = serve_with_admin(
        tmp_path_factory,
        "claude",
        f"""
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{mock_upstream}"
api_key = "{PROVIDER_KEY}"

[[routes]]
name = "{MODEL}"
targets = [{{ provider = "claude" }}]

[[routes]]
name = "sonnet"
targets = [{{ provider = "claude", model = "{MODEL}" }}]
""",
    )
    yield p.base, p.admin
    stop_clean(p, (KEY, PROVIDER_KEY, ADMIN_TOKEN))


def client(base, **kw):
    return anthropic.Anthropic(base_url=base, api_key=kw.pop("api_key", KEY), max_retries=0, timeout=20, **kw)


def last_record(admin, request_id, tries=200):
    """The gateway's usage record of one request, from the admin API's
    request log (written by the usage pipeline within a moment)."""
    url = f"{admin}/v1/admin/requests?request_id={request_id}"
    for _ in range(tries):
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            rows = json.loads(r.read())["data"]
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


def expect_usage(admin, request_id, usage):
    """The SDK's usage (Anthropic's: input excludes cache reads and writes)
    equals the gateway's record (OpenAI's: prompt includes them)."""
    rec = last_record(admin, request_id)
    cache = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    assert rec["prompt_tokens"] == usage.input_tokens + cache, rec
    assert rec["completion_tokens"] == usage.output_tokens, rec
    assert rec["cache_read_tokens"] == (usage.cache_read_input_tokens or 0), rec
    assert rec["cache_write_tokens"] == (usage.cache_creation_input_tokens or 0), rec
    assert rec["estimated"] is False
    assert rec["endpoint"] == "messages"
    return rec


def test_a_message_and_its_usage_with_prompt_cache_tokens(claude_gateway):
    base, admin = claude_gateway
    raw = client(base, default_headers={"X-Claude-Code-Session-Id": "sdk-session-1"}).messages.with_raw_response.create(
        model="sonnet",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hello"}],
        extra_body={"mock": {"tokens": 3, "cache_read_tokens": 5, "cache_write_tokens": 7}},
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == MODEL, "the route's upstream model"
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (5, 7)
    assert msg.usage.output_tokens == 3
    assert raw.headers["x-switchboard-target"] == "claude"
    rec = expect_usage(admin, raw.headers["x-request-id"], msg.usage)
    assert rec["session"] == "sdk-session-1"


def test_a_streamed_message(claude_gateway):
    base, admin = claude_gateway
    with client(base).messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Count"}],
        extra_body={"mock": {"tokens": 6, "interval_ms": 2, "thinking": True, "cache_read_tokens": 11}},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text and text == final.content[-1].text
    assert final.content[0].type == "thinking"
    assert final.usage.output_tokens == 6
    assert final.usage.input_tokens > 0, "message_start's input usage reached the client"
    assert final.usage.cache_read_input_tokens == 11
    expect_usage(admin, request_id, final.usage)


def test_a_streamed_tool_use_round_trip(claude_gateway):
    base, admin = claude_gateway
    c = client(base)
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a place",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    steer = {"mock": {"tokens": 2, "tool_use": True}}
    with c.messages.stream(model=MODEL, max_tokens=64, tools=tools, messages=messages, extra_body=steer) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input == {"location": "Paris", "unit": "celsius"}, "input_json_delta fragments joined"
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}]},
    ]
    with c.messages.stream(model=MODEL, max_tokens=64, tools=tools, messages=messages, extra_body=steer) as s:
        answer = s.get_final_message()
        request_id = s.response.headers["x-request-id"]
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text" and answer.content[0].text
    expect_usage(admin, request_id, answer.usage)


def test_typed_errors(claude_gateway):
    base, _ = claude_gateway
    ask = dict(max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(base, api_key="sk-not-a-key").messages.create(model=MODEL, **ask)
    assert e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        client(base).messages.create(model="claude-no-such-model", **ask)
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.RateLimitError):
        client(base).messages.create(model=MODEL, extra_body={"mock": {"status": 429}}, **ask)
    with pytest.raises(anthropic.OverloadedError) as e:
        client(base).messages.create(model=MODEL, extra_body={"mock": {"status": 529}}, **ask)
    assert e.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client(base).messages.create(model=MODEL, max_tokens=0, messages=ask["messages"])
    assert "max_tokens" in e.value.message
    # A stream cut mid-way raises; it never ends as if complete.
    with pytest.raises(anthropic.APIStatusError):
        with client(base).messages.stream(
            model=MODEL, extra_body={"mock": {"tokens": 6, "interval_ms": 2, "drop_after": 3}}, **ask
        ) as s:
            for _ in s:
                pass


def test_count_tokens_and_model_discovery(claude_gateway):
    base, _ = claude_gateway
    c = client(base)
    messages = [{"role": "user", "content": "How many tokens?"}]
    counted = c.messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens > 0, "the provider's count, relayed"
    listed = [m.id for m in c.models.list()]
    assert MODEL in listed and "sonnet" in listed
    assert c.models.retrieve("sonnet").id == "sonnet"
    with pytest.raises(anthropic.NotFoundError):
        c.models.retrieve("claude-no-such-model")
