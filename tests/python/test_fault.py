"""Fault injection through the official OpenAI SDK: a production key sending
`x-switchboard-fault` gets the SDK's BadRequestError (never a silent pass);
a test key's injected failure fails over, whole and streamed, and the SDK
sees a normal answer."""

import hashlib

import openai
import pytest

from conftest import BIN, PROVIDER_KEY, Proc

PROD_KEY = "sk-sdk-fault-production-key"
TEST_KEY = "sk-sdk-fault-test-key"


def key_hash(k):
    return "sha256:" + hashlib.sha256(k.encode()).hexdigest()


@pytest.fixture(scope="module")
def pair_gateway(mock_upstream, tmp_path_factory):
    """A gateway whose route `pair` has two targets (`first`, `second`) on the mock."""
    cfg = tmp_path_factory.mktemp("fault") / "switchboard.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "first"
base_url = "{mock_upstream}"
api_key = "{PROVIDER_KEY}"

[[upstreams]]
name = "second"
base_url = "{mock_upstream}"
api_key = "{PROVIDER_KEY}"

[[models]]
name = "pair"
targets = [{{ upstream = "first", model = "gpt-4o-mini" }}, {{ upstream = "second", model = "gpt-4o-mini" }}]

[[keys]]
id = "prod"
hash = "{key_hash(PROD_KEY)}"

[[keys]]
id = "ci"
hash = "{key_hash(TEST_KEY)}"
test = true
"""
    )
    p = Proc([str(BIN / "switchboard"), "serve", "--config", str(cfg)], "stderr", r"listening on (\S+)")
    yield f"http://{p.match.group(1)}/v1"
    assert p.stop() == 0


MESSAGES = [{"role": "user", "content": "hi"}]


def test_a_production_key_sending_a_fault_gets_a_bad_request(pair_gateway):
    client = openai.OpenAI(base_url=pair_gateway, api_key=PROD_KEY, max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="pair", messages=MESSAGES, extra_headers={"x-switchboard-fault": "fail=first"}
        )
    assert e.value.code == "fault_injection_not_allowed"
    assert e.value.body["param"] == "x-switchboard-fault"
    # Without the header, the same key is served as usual.
    assert client.chat.completions.create(model="pair", messages=MESSAGES).choices[0].message.content


def test_an_injected_failure_fails_over_for_the_sdk(pair_gateway):
    client = openai.OpenAI(base_url=pair_gateway, api_key=TEST_KEY, max_retries=0, timeout=20)
    fault = {"x-switchboard-fault": "fail=first,status=503"}
    raw = client.chat.completions.with_raw_response.create(model="pair", messages=MESSAGES, extra_headers=fault)
    assert raw.headers["x-switchboard-target"] == "second"
    assert raw.headers["x-switchboard-attempts"] == "2"
    assert raw.parse().choices[0].message.content

    raw = client.chat.completions.with_raw_response.create(
        model="pair", messages=MESSAGES, stream=True, extra_headers={"x-switchboard-fault": "fail=first,status=reset"}
    )
    assert raw.headers["x-switchboard-target"] == "second"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text

    # Forced onto the failed target: the SDK raises the injected 503.
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="pair",
            messages=MESSAGES,
            extra_headers={**fault, "x-switchboard-target-only": "first"},
        )
    assert e.value.status_code == 503
    assert "injected" in e.value.message

    # A malformed fault is a 400 naming the header.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="pair", messages=MESSAGES, extra_headers={"x-switchboard-fault": "fail=first,status=200"}
        )
    assert e.value.code == "invalid_fault_header"
