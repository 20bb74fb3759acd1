"""A BYOI node seen through the official OpenAI SDK: a real `switchboard node`
agent in front of a mock local server, in outbound mode and in direct mode
(TLS, the certificate pinned by the gateway), enrolled through the admin API,
serving plain and streaming completions the SDK parses."""

import json
import time
import urllib.request

import openai
import pytest

from conftest import ADMIN_TOKEN, BIN, KEY, Proc


def admin_call(admin, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        admin + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("mode", ["outbound", "direct"])
def test_a_node_serves_sdk_requests_plain_and_streaming(admin_gateway, tmp_path, mode):
    base, admin = admin_gateway
    model, name = f"local-llm-{mode}", f"sdk-node-{mode}"
    local = Proc(
        [str(BIN / "mock-upstream"), "--listen", "127.0.0.1:0", "--token-text", "node "],
        "stdout",
        r"listening on (\S+)",
    )
    agent = None
    try:
        admin_call(
            admin,
            "POST",
            "/v1/admin/routes",
            {"name": model, "targets": [{"nodes": model}, {"provider": "mock", "model": "gpt-4o-mini"}]},
        )
        token = admin_call(admin, "POST", "/v1/admin/enrollment-tokens", {"org": "sdk-org"})["secret"]
        local_url = local.match.group(1)
        if not local_url.startswith("http"):
            local_url = "http://" + local_url
        reach = ["--connect", base.removesuffix("/v1")] if mode == "outbound" else ["--listen", "127.0.0.1:0"]
        agent = Proc(
            [
                str(BIN / "switchboard"), "node", "--admin", admin, "--enroll", token,
                "--local", local_url, "--identity", str(tmp_path / "node.json"),
                "--name", name, "--rename", f"mock-model={model}", *reach,
            ],
            "stderr",
            r"node identity loaded",
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            node = admin_call(admin, "GET", f"/v1/admin/nodes/{name}")
            if node["routable"]:
                break
            time.sleep(0.1)
        assert node["status"] == "online" and node["routable"], node
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
    finally:
        if agent is not None:
            assert agent.stop() == 0, "".join(agent.lines)
        local.stop()
