"""The response cache, through the official OpenAI SDK: a cached answer
comes back whole, and replayed as a stream the SDK parses."""

import openai

from conftest import KEY


def test_cached_answer_and_its_streaming_replay(gateway):
    client = openai.OpenAI(base_url=gateway, api_key=KEY, max_retries=0, timeout=20)
    messages = [{"role": "user", "content": "cache me"}]
    first = client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0, extra_body={"mock": {"tokens": 6}}
    )
    assert first.headers["x-switchboard-cache"] == "miss"
    answer = first.parse()
    second = client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0, extra_body={"mock": {"tokens": 6}}
    )
    assert second.headers["x-switchboard-cache"] == "hit"
    assert second.parse().choices[0].message.content == answer.choices[0].message.content

    raw = client.chat.completions.with_raw_response.create(
        model="cached",
        messages=messages,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"tokens": 6}},
    )
    assert raw.headers["x-switchboard-cache"] == "hit"
    text, usage = "", None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == answer.choices[0].message.content
    assert usage.completion_tokens == answer.usage.completion_tokens == 6

    # Not deterministic: never cached.
    hot = client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0.9, extra_body={"mock": {"tokens": 6}}
    )
    assert hot.headers["x-switchboard-cache"] == "bypass"
