"""The official OpenAI Python SDK talks to Switchboard as to OpenAI."""

import openai
import pytest

from conftest import KEY


@pytest.fixture()
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key=KEY, max_retries=0, timeout=20)


def test_chat_completion(client):
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.startswith("word ")
    assert r.usage.completion_tokens == 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16


def test_alias_reaches_the_upstream_model(client):
    r = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert r.model == "gpt-4o-mini"


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"tokens": 5, "interval_ms": 2}},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "word " * 5
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 5


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-4o-mini", "fast", "cached", "meta-llama/Llama-3.1-8B"]
    assert client.models.retrieve("fast").id == "fast"
    # The SDK sends the `/` escaped (`meta-llama%2FLlama-3.1-8B`).
    assert client.models.retrieve("meta-llama/Llama-3.1-8B").id == "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize(
    "shape",
    [{"spaced_json": True}, {"line_ending": "crlf"}, {"line_ending": "cr", "spaced_json": True}],
    ids=["spaced-json", "crlf", "cr-spaced"],
)
def test_streams_from_other_servers_iterate_with_choices_0(client, shape):
    """Python servers (llama-cpp-python, vLLM) write `"choices": []` with
    spaces; some servers end SSE lines with CRLF or CR. The everyday loop
    `chunk.choices[0]` must never meet the usage chunk the gateway asked for."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        extra_body={"mock": {"tokens": 4, **shape}},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "word " * 4


def test_bad_key_raises_authentication_error(gateway):
    bad = openai.OpenAI(base_url=gateway, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    assert e.value.param == "model"


def test_bad_parameter_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_body={"stream": "yes"}
        )
    assert e.value.param == "stream"


def test_upstream_failure_before_the_response_is_a_502(client):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_body={"mock": {"fault": "reset"}}
        )
    assert e.value.status_code == 502


def test_a_stream_cut_mid_way_raises_api_error(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_body={"mock": {"tokens": 6, "drop_after": 2, "interval_ms": 1}},
    )
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            for choice in chunk.choices:
                got.append(choice.delta.content or "")
    assert "".join(got) == "word word "
    assert "mid-stream" in str(e.value)


def test_request_id_header(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Request-Id": "sdk-req-1"}
    )
    assert raw.headers["x-request-id"] == "sdk-req-1"
    assert raw.parse().usage.completion_tokens == 16


def test_responses_never_carry_the_provider_key(client):
    from conftest import PROVIDER_KEY

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    assert PROVIDER_KEY not in raw.http_response.text
    assert all(PROVIDER_KEY not in v for v in raw.headers.values())
