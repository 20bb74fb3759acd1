"""Usage accounting and metrics, seen through the official OpenAI SDK, the
admin API and a Prometheus text parser."""

import json
import time
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

from conftest import ADMIN_TOKEN, KEY


def admin_get(admin, path):
    req = urllib.request.Request(admin + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def usage_total(admin):
    data = admin_get(admin, "/v1/admin/usage?granularity=total&group_by=model,route,target")["data"]
    return {(r["model"], r["route"], r["target"]): r for r in data}


def test_streams_without_include_usage_see_no_usage_chunk(admin_gateway):
    base, admin = admin_gateway
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
    before = sum(r["requests"] for r in usage_total(admin).values())
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"mock": {"tokens": 4}},
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "no empty-choices usage chunk"
    asked = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"mock": {"tokens": 4}},
        )
    )
    assert asked[-1].usage.completion_tokens == 4
    # Both were accounted with the upstream's counts (not estimated).
    deadline = time.time() + 10
    while time.time() < deadline:
        rows = usage_total(admin)
        if sum(r["requests"] for r in rows.values()) >= before + 2:
            break
        time.sleep(0.05)
    log = admin_get(admin, "/v1/admin/requests?limit=2")["data"]
    assert [r["completion_tokens"] for r in log] == [4, 4]
    assert not any(r["estimated"] for r in log)


def test_metrics_parse_and_match_the_database(admin_gateway):
    base, admin = admin_gateway
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
    for i in range(12):
        if i % 2:
            r = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "x" * i}],
                extra_body={"mock": {"tokens": i + 1}},
            )
            assert r.usage.completion_tokens == i + 1
        else:
            for _ in client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "y" * i}],
                stream=True,
                extra_body={"mock": {"tokens": i + 1}},
            ):
                pass

    def scrape():
        with urllib.request.urlopen(base.removesuffix("/v1") + "/metrics", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return {f.name: f for f in text_string_to_metric_families(r.read().decode())}

    # Wait until every record is in the database.
    deadline = time.time() + 10
    while True:
        families = scrape()
        queued = families["switchboard_usage_records_queued"].samples[0].value
        if queued == 0 or time.time() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    families = scrape()
    db = usage_total(admin)
    requests = {}
    for s in families["switchboard_requests"].samples:
        if s.name == "switchboard_requests_total":
            k = (s.labels["model"], s.labels["route"], s.labels["target"])
            requests[k] = requests.get(k, 0) + s.value
    assert requests, "no request counters"
    for k, n in requests.items():
        assert db[k]["requests"] == n, (k, db[k], n)
    tokens = {}
    for s in families["switchboard_tokens"].samples:
        k = (s.labels["model"], s.labels["route"], s.labels["target"], s.labels["kind"])
        tokens[k] = s.value
    for (model, route, target), row in db.items():
        assert tokens[(model, route, target, "prompt")] == row["prompt_tokens"]
        assert tokens[(model, route, target, "completion")] == row["completion_tokens"]
    cost = {
        (s.labels["model"], s.labels["route"], s.labels["target"]): s.value
        for s in families["switchboard_cost_usd"].samples
    }
    for k, row in db.items():
        assert abs(cost[k] - row["cost_usd"]) < 1e-9
    written = families["switchboard_usage_records_written"].samples[0].value
    assert written == sum(r["requests"] for r in db.values())
    assert families["switchboard_usage_records_lost"].samples[0].value == 0
    quantiles = {
        s.labels.get("quantile"): s.value
        for s in families["switchboard_request_duration_seconds"].samples
        if "quantile" in s.labels
    }
    assert set(quantiles) == {"0.5", "0.9", "0.99", "0.999"}
    assert 0 < quantiles["0.5"] <= quantiles["0.99"]
