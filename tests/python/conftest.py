"""Start the real `mock-upstream` and `switchboard` binaries on ephemeral
loopback ports for the OpenAI SDK tests."""

import contextlib
import hashlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(
    os.environ.get("SWITCHBOARD_BIN_DIR")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"
)
KEY = "sk-sdk-test-key"
PROVIDER_KEY = "sk-provider-for-sdk-tests"


class Proc:
    """A child process whose output is read line by line until a pattern shows."""

    def __init__(self, args, stream, pattern, timeout=30, env=None):
        full_env = dict(os.environ, **(env or {}))
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        self.lines = []
        found = threading.Event()
        self.match = None
        src = self.p.stdout if stream == "stdout" else self.p.stderr
        other = self.p.stderr if stream == "stdout" else self.p.stdout

        def pump(f, watch):
            for line in f:
                self.lines.append(line)
                if watch and self.match is None:
                    m = re.search(pattern, line)
                    if m:
                        self.match = m
                        found.set()

        threading.Thread(target=pump, args=(src, True), daemon=True).start()
        threading.Thread(target=pump, args=(other, False), daemon=True).start()
        if not found.wait(timeout):
            self.p.kill()
            raise RuntimeError(f"{args[0]} did not start: {''.join(self.lines)}")

    def stop(self):
        self.p.terminate()
        try:
            return self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


@pytest.fixture(scope="session")
def mock_upstream():
    p = Proc([str(BIN / "mock-upstream"), "--listen", "127.0.0.1:0"], "stdout", r"listening on (\S+)")
    yield p.match.group(1)
    p.stop()


@pytest.fixture(scope="session")
def gateway(mock_upstream, tmp_path_factory):
    key_hash = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    cfg = tmp_path_factory.mktemp("gw") / "switchboard.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "mock"
base_url = "{mock_upstream}"
api_key = "{PROVIDER_KEY}"

[[models]]
name = "gpt-4o-mini"
targets = [{{ upstream = "mock" }}]

[[models]]
name = "fast"
targets = [{{ upstream = "mock", model = "gpt-4o-mini" }}]

[[models]]
name = "cached"
targets = [{{ upstream = "mock", model = "gpt-4o-mini" }}]
cache = {{ mode = "deterministic", ttl_ms = 60000 }}

[[models]]
name = "meta-llama/Llama-3.1-8B"
targets = [{{ upstream = "mock", model = "gpt-4o-mini" }}]

[[keys]]
id = "sdk"
hash = "{key_hash}"
"""
    )
    p = Proc(
        [str(BIN / "switchboard"), "serve", "--config", str(cfg)],
        "stderr",
        r"listening on (\S+)",
        env={"SWITCHBOARD_LOG": "debug"},
    )
    yield f"http://{p.match.group(1)}/v1"
    code = p.stop()
    log = "".join(p.lines)
    assert code == 0, f"switchboard exited {code} on SIGTERM:\n{log}"
    # Nothing the gateway logged, even at debug level, holds a key.
    for secret in (KEY, PROVIDER_KEY):
        assert secret not in log, "a secret reached the log"


ADMIN_TOKEN = "sba-sdk-test-admin-token"


def admin_address(proc):
    """The admin API's host:port, from a `switchboard serve` log."""
    return next(
        re.search(r"admin API listening on (\S+)", line).group(1)
        for line in proc.lines
        if "admin API listening on" in line
    )


def stop_clean(proc, secrets, *files):
    """Stop a gateway with SIGTERM: it must exit 0, and no secret may be in
    its log nor in any of `files` that exists."""
    code = proc.stop()
    log = "".join(proc.lines)
    assert code == 0, f"switchboard exited {code} on SIGTERM:\n{log}"
    texts = [log] + [Path(f).read_text() for f in files if Path(f).exists()]
    for secret in secrets:
        assert all(secret not in t for t in texts), "a secret reached a log"


def serve_with_admin(tmp_path_factory, name, sections):
    """`switchboard serve` from a fresh directory: one data plane of two
    workers, the admin API (SQLite in that directory, `ADMIN_TOKEN`), the SDK
    key (org `sdk-org`), and the config `sections` (providers, routes, …).
    Returns the process, with `base` (the data plane, no `/v1`), `admin` and
    `dir` set."""
    key_hash = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    d = tmp_path_factory.mktemp(name)
    cfg = d / "switchboard.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"
{sections}

[[keys]]
id = "sdk"
org = "sdk-org"
hash = "{key_hash}"
"""
    )
    p = Proc(
        [str(BIN / "switchboard"), "serve", "--config", str(cfg)],
        "stderr",
        r"data plane listening on (\S+)",
        env={"SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    p.base, p.admin, p.dir = f"http://{p.match.group(1)}", f"http://{admin_address(p)}", d
    return p


@pytest.fixture(scope="session")
def admin_gateway(mock_upstream, tmp_path_factory):
    """`switchboard serve` with the admin API and usage accounting in SQLite.
    Yields (data plane base URL, admin base URL)."""
    p = serve_with_admin(
        tmp_path_factory,
        "admin",
        f"""
[usage]
access_log = "access.log"

[[upstreams]]
name = "mock"
base_url = "{mock_upstream}"
api_key = "{PROVIDER_KEY}"
prices = [{{ model = "gpt-4o-mini", prompt_per_mtok = 0.15, completion_per_mtok = 0.6 }}]

[[models]]
name = "gpt-4o-mini"
targets = [{{ upstream = "mock" }}]
""",
    )
    yield p.base + "/v1", p.admin
    stop_clean(p, (KEY, PROVIDER_KEY, ADMIN_TOKEN), p.dir / "access.log")


def admin_call(admin, method, path, body=None):
    """One admin API call with the admin token; the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        admin + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def enrolled_node(base, admin, identity, name, model, mode="outbound", token_text="node "):
    """A real `switchboard node` agent in front of a mock local server
    (`mock-model` renamed `model`), enrolled for `sdk-org` and routable
    (`mode`: outbound, or direct over TLS). Yields the admin's view of it;
    the agent must exit 0 when stopped."""
    local = Proc(
        [str(BIN / "mock-upstream"), "--listen", "127.0.0.1:0", "--token-text", token_text],
        "stdout",
        r"listening on (\S+)",
    )
    agent = None
    try:
        token = admin_call(admin, "POST", "/v1/admin/enrollment-tokens", {"org": "sdk-org"})["secret"]
        local_url = local.match.group(1)
        if not local_url.startswith("http"):
            local_url = "http://" + local_url
        reach = ["--connect", base.removesuffix("/v1")] if mode == "outbound" else ["--listen", "127.0.0.1:0"]
        agent = Proc(
            [
                str(BIN / "switchboard"), "node", "--admin", admin, "--enroll", token,
                "--local", local_url, "--identity", str(identity),
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
        yield node
    finally:
        if agent is not None:
            assert agent.stop() == 0, "".join(agent.lines)
        local.stop()
