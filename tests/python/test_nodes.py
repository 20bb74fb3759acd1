"""A BYOI node seen through the official OpenAI SDK: a real `switchboard node`
agent in front of a mock local server, in outbound mode and in direct mode
(TLS, the certificate pinned by the gateway), enrolled through the admin API,
serving plain and streaming completions the SDK parses."""

import time

import openai
import pytest

from conftest import KEY, admin_call, enrolled_node


@pytest.mark.parametrize("mode", ["outbound", "direct"])
def test_a_node_serves_sdk_requests_plain_and_streaming(admin_gateway, tmp_path, mode):
    base, admin = admin_gateway
    model, name = f"local-llm-{mode}", f"sdk-node-{mode}"
    admin_call(
        admin,
        "POST",
        "/v1/admin/routes",
        {"name": model, "targets": [{"nodes": model}, {"provider": "mock", "model": "gpt-4o-mini"}]},
    )
    with enrolled_node(base, admin, tmp_path / "node.json", name, model, mode) as node:
        if mode == "direct":
            assert node["reach"].startswith("direct https://127.0.0.1:") and " pinned sha256:" in node["reach"], node

        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
        deadline = time.time() + 10
        while True:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "hi"}], extra_body={"mock": {"tokens": 3}}
            )
            if raw.headers.get("x-switchboard-target") == f"node:{name}" or time.time() > deadline:
                break
            time.sleep(0.1)
        assert raw.headers["x-switchboard-target"] == f"node:{name}"
        reply = raw.parse()
        assert reply.choices[0].message.content == "node node node "
        assert reply.usage.completion_tokens == 3

        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"mock": {"tokens": 4}},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "node node node node "
        assert chunks[-1].usage.completion_tokens == 4
