"""OpenAI's contract through the gateway, whatever the upstream does: a real
`switchboard node` agent in front of a mock local server in its most
permissive mode (no usage, any model, any body: what llama-cpp-python does),
and the official OpenAI SDKs (Python here, Node in tests/node/contract.mjs)
seeing exactly what they would see against OpenAI."""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import BIN, KEY, ROOT, Proc
from test_nodes import admin_call

MODEL = "permissive-llm"
HI = [{"role": "user", "content": "count to five"}]


@pytest.fixture(scope="module")
def permissive_node(admin_gateway, tmp_path_factory):
    """A node (outbound mode) whose local server accepts anything and reports
    no usage; the route `permissive-llm` goes to it alone. Yields the gateway's
    /v1 base URL."""
    base, admin = admin_gateway
    local = Proc(
        [
            str(BIN / "mock-upstream"), "--listen", "127.0.0.1:0",
            "--behaviour", json.dumps({"no_usage": True, "permissive": True}),
        ],
        "stdout",
        r"listening on (\S+)",
    )
    admin_call(admin, "POST", "/v1/admin/routes", {"name": MODEL, "targets": [{"nodes": MODEL}]})
    token = admin_call(admin, "POST", "/v1/admin/enrollment-tokens", {"org": "sdk-org"})["secret"]
    agent = Proc(
        [
            str(BIN / "switchboard"), "node", "--admin", admin, "--enroll", token,
            "--local", local.match.group(1), "--identity", str(tmp_path_factory.mktemp("node") / "node.json"),
            "--name", "permissive", "--rename", f"mock-model={MODEL}", "--connect", base.removesuffix("/v1"),
        ],
        "stderr",
        r"node identity loaded",
    )
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
    deadline = time.time() + 15
    while True:
        try:
            raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HI)
            if raw.headers.get("x-switchboard-target") == "node:permissive":
                break
        except openai.APIError:
            pass
        assert time.time() < deadline, "the node never served"
        time.sleep(0.1)
    yield base
    assert agent.stop() == 0, "".join(agent.lines)
    local.stop()


@pytest.fixture
def client(permissive_node):
    return openai.OpenAI(base_url=permissive_node, api_key=KEY, max_retries=0, timeout=20)


def test_plain_answers_always_carry_usage(client):
    reply = client.chat.completions.create(model=MODEL, messages=HI, extra_body={"mock": {"tokens": 3}})
    assert reply.choices[0].message.content == "word word word "
    assert reply.usage is not None and reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_stream_that_asked_for_usage_gets_it(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True},
            extra_body={"mock": {"tokens": 4}},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "word word word word "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    # Without include_usage: no usage chunk, every chunk has a choice (the
    # everyday `chunk.choices[0]` loop works).
    for c in client.chat.completions.create(model=MODEL, messages=HI, stream=True):
        assert c.choices[0] is not None


def test_a_truncated_generation_raises_and_done_then_close_does_not(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=HI, stream=True,
        extra_body={"mock": {"tokens": 3, "interval_ms": 5, "no_finish_reason": True}},
    )
    with pytest.raises(openai.APIError) as e:
        for _ in stream:
            pass
    assert "finish_reason" in str(e.value)
    # `[DONE]`, then the connection closed without the chunked body's end:
    # through the node's agent, and straight from a provider.
    for model in (MODEL, "gpt-4o-mini"):
        chunks = list(
            client.chat.completions.create(
                model=model, messages=HI, stream=True,
                extra_body={"mock": {"tokens": 2, "done_then_close": True}},
            )
        )
        assert [c.choices[0].finish_reason for c in chunks][-1] == "stop", model


def test_errors_are_openais(client, permissive_node):
    bad = openai.OpenAI(base_url=permissive_node, api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=HI)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=HI)
    assert e.value.code == "model_not_found"
    # The local server would answer these with 200; OpenAI answers 400.
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/chat/completions", body={"model": MODEL}, cast_to=object)
    assert (e.value.param, e.value.code) == ("messages", "missing_required_parameter")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert e.value.code == "empty_array"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=HI, n=0)
    assert (e.value.param, e.value.code) == ("n", "integer_below_min_value")
    # A body that is not JSON.
    req = urllib.request.Request(
        permissive_node + "/chat/completions", data=b'{"model":', method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    assert json.loads(e.value.read())["error"]["code"] == "invalid_json"


def test_models_are_listed_and_retrievable(client):
    assert MODEL in [m.id for m in client.models.list()]
    assert client.models.retrieve(MODEL).id == MODEL


def test_the_node_sdk_sees_the_same_contract(permissive_node):
    node = shutil.which("node")
    assert node, "Node.js is needed for the Node SDK tests (scripts/test installs tests/node)"
    here = ROOT / "tests" / "node"
    assert (here / "node_modules" / "openai").is_dir(), "run `npm ci` in tests/node (scripts/test does)"
    out = subprocess.run(
        [node, str(here / "contract.mjs")],
        env=dict(os.environ, SB_BASE=permissive_node, SB_KEY=KEY, SB_MODEL=MODEL, SB_PROVIDER_MODEL="gpt-4o-mini"),
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "node sdk contract: ok" in out.stdout
