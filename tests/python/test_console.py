"""The web console in a real browser: Playwright driving Debian's chromium
against the real `switchboard serve` (admin API + data plane) in front of the
bundled mock upstream, and a real `switchboard node` agent for enrollment.
Each test saves a screenshot (in $CONSOLE_SCREENSHOTS, or the test's tmp dir)."""

import http.server
import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from conftest import BIN, Proc, admin_address, stop_clean

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ADMIN = "sba-console-test-admin-token-0123456789"
PROVIDER_KEY = "sk-provider-console-tests-abcdef"
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")


def shot(page, name, tmp_path):
    out = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def call(base, method, path, body=None, token=ADMIN, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """mock upstream + `switchboard serve` with the admin API. Yields a dict."""
    d = tmp_path_factory.mktemp("console")
    mock = Proc(
        [str(BIN / "mock-upstream"), "--listen", "127.0.0.1:0", "--interval-ms", "60", "--token-text", "tok "],
        "stdout",
        r"listening on (\S+)",
    )
    mock_url = mock.match.group(1)
    if not mock_url.startswith("http"):
        mock_url = "http://" + mock_url
    cfg = d / "switchboard.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"
node_heartbeat_ms = 500

[usage]
access_log = "access.log"

[[upstreams]]
name = "mock"
base_url = "{mock_url}"
api_key = "{PROVIDER_KEY}"
prices = [{{ model = "gpt-4o-mini", prompt_per_mtok = 150.0, completion_per_mtok = 600.0 }}]

[[models]]
name = "gpt-4o-mini"
targets = [{{ upstream = "mock" }}]
"""
    )
    gw = Proc(
        [str(BIN / "switchboard"), "serve", "--config", str(cfg)],
        "stderr",
        r"data plane listening on (\S+)",
        env={"SWITCHBOARD_ADMIN_TOKEN": ADMIN, "SWITCHBOARD_LOG": "debug"},
    )
    admin = "http://" + admin_address(gw)
    status, _ = call(admin, "POST", "/v1/admin/orgs", {"name": "acme"})
    assert status == 201
    yield {"admin": admin, "gateway": f"http://{gw.match.group(1)}", "mock": mock_url, "dir": d, "proc": gw}
    # No admin token (nor provider key) in any log line, even at debug level.
    try:
        stop_clean(gw, (ADMIN, PROVIDER_KEY), d / "access.log")
    finally:
        mock.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def sign_in(browser, admin, token=ADMIN, width=1280):
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    page = ctx.new_page()
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(admin + "/")
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#top:not([hidden])")
    return ctx, page, urls, errors


def test_sign_in_and_wrong_token(stack, browser, tmp_path):
    admin = stack["admin"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(admin + "/")
    page.fill("#token", "sba-not-a-real-token")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:text('not valid')")
    assert page.is_hidden("#top")
    assert not [c for c in ctx.cookies() if c["name"] == "sb_console"]
    shot(page, "signin-refused", tmp_path)
    ctx.close()

    ctx, page, urls, errors = sign_in(browser, admin)
    page.wait_for_selector("[data-kpi=requests]")
    cookie = next(c for c in ctx.cookies() if c["name"] == "sb_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN not in cookie["value"]
    # The token is in no URL and nowhere in the page, and the page's script cannot read the cookie.
    assert all(ADMIN not in u for u in urls)
    assert ADMIN not in page.content()
    assert "sb_console" not in page.evaluate("document.cookie")
    assert page.text_content("#who").endswith("(admin)")
    shot(page, "overview-empty", tmp_path)
    # Sign out: the old cookie no longer works.
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    r = ctx.request.get(admin + "/v1/admin/keys", headers={"Cookie": f"sb_console={cookie['value']}"})
    assert r.status == 401
    assert not errors, errors
    ctx.close()


def test_create_key_shows_plaintext_once(stack, browser, tmp_path):
    ctx, page, urls, errors = sign_in(browser, stack["admin"])
    page.goto(stack["admin"] + "/#/keys")
    page.wait_for_selector("#key-create select[name=org] option[value=acme]", state="attached")
    page.select_option("#key-create select[name=org]", "acme")
    page.fill("#key-create input[name=name]", "browser-key")
    page.click("#key-create button[type=submit]")
    secret = page.text_content("#key-secret [data-secret]", timeout=TIMEOUT_MS)
    assert secret.startswith("sk-")
    page.wait_for_selector("table[data-table=keys] td:text('browser-key')")
    shot(page, "keys-created", tmp_path)
    # The key works, through the official SDK.
    client = openai.OpenAI(base_url=stack["gateway"] + "/v1", api_key=secret)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content.startswith("tok ")
    # Edit its allowed models and expiry; the API has them.
    page.click("button[data-details=browser-key]")
    page.fill("#key-edit input[name=models]", "gpt-4o-mini")
    page.fill("#key-edit input[name=expires]", "2099-01-31")
    page.click("#key-edit button[type=submit]")
    page.wait_for_selector("table[data-table=keys] td:text('2099-01-31 00:00:00Z')")
    _, keys = call(stack["admin"], "GET", "/v1/admin/keys?limit=1000")
    edited = next(k for k in keys["data"] if k["name"] == "browser-key")
    assert edited["models"] == ["gpt-4o-mini"] and edited["expires_at"] == 4073500800
    # Exactly once: after a reload the plaintext is nowhere, in the page or the API.
    page.reload()
    page.wait_for_selector("table[data-table=keys] td:text('browser-key')")
    assert secret not in page.content()
    _, keys = call(stack["admin"], "GET", "/v1/admin/keys?limit=1000")
    assert secret not in json.dumps(keys)
    assert not errors, errors
    ctx.close()


def test_playground_streams_and_is_accounted(stack, browser, tmp_path):
    ctx, page, urls, errors = sign_in(browser, stack["admin"])
    page.goto(stack["admin"] + "/#/playground")
    page.wait_for_selector("#pg-model option[value='gpt-4o-mini']", state="attached")
    page.wait_for_selector("#pg-org option[value=acme]", state="attached")
    page.select_option("#pg-org", "acme")
    page.fill("#pg-message", "Say something")
    page.click("#pg-send")
    # Tokens arrive while the stream is still open (the mock sends one per 60 ms).
    page.wait_for_function(
        "() => document.querySelector('#pg-state').textContent === 'Streaming…' && "
        "Number(document.querySelector('#pg-output').dataset.chunks || 0) >= 2"
    )
    partial = page.text_content("#pg-output")
    page.wait_for_selector("[data-stat=cost]")
    full = page.text_content("#pg-output")
    assert partial and full.startswith(partial) and len(full) > len(partial)
    assert full == "tok " * 16
    assert page.text_content("[data-stat=target]") == "mock"
    assert page.text_content("[data-stat=attempts]") == "1"
    cost = float(page.text_content("[data-stat=cost]").lstrip("$"))
    assert cost > 0
    request_id = page.text_content("[data-stat=request_id]")
    shot(page, "playground", tmp_path)

    # The request is in Usage (the request log) and in the overview.
    page.goto(stack["admin"] + "/#/usage")
    page.wait_for_selector(f"table[data-table=requests] td:text('{request_id}')")
    page.click(f"table[data-table=requests] td:text('{request_id}')")
    page.wait_for_selector("#request-details dl")
    shot(page, "usage", tmp_path)
    page.goto(stack["admin"] + "/#/overview")
    page.wait_for_function("() => Number(document.querySelector('[data-kpi=requests] .v')?.textContent.replace(/,/g, '')) >= 1")
    page.wait_for_selector("#chart-requests canvas")
    assert page.text_content("[data-kpi=spend] .v") != "$0.00"
    # The chart's data: the split by model has the request.
    page.wait_for_selector(".u-legend :text('gpt-4o-mini')")
    shot(page, "overview", tmp_path)

    # The playground's key belongs to the session: sign-out deletes it.
    _, keys = call(stack["admin"], "GET", "/v1/admin/keys?limit=1000")
    assert [k for k in keys["data"] if k["name"] == "console-playground"]
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    _, keys = call(stack["admin"], "GET", "/v1/admin/keys?limit=1000")
    assert not [k for k in keys["data"] if k["name"] == "console-playground"]
    assert not errors, errors
    ctx.close()


def test_enroll_a_node_disable_it_and_see_the_audit(stack, browser, tmp_path):
    admin = stack["admin"]
    call(admin, "POST", "/v1/admin/routes", {"name": "local-llm", "targets": [{"nodes": "local-llm"}]})
    local = Proc(
        [str(BIN / "mock-upstream"), "--listen", "127.0.0.1:0", "--token-text", "node "],
        "stdout",
        r"listening on (\S+)",
    )
    agent = None
    ctx, page, urls, errors = sign_in(browser, admin)
    try:
        page.goto(admin + "/#/nodes")
        page.wait_for_selector("#enroll-create select[name=org] option[value=acme]", state="attached")
        page.select_option("#enroll-create select[name=org]", "acme")
        page.click("#enroll-create button[type=submit]")
        secret = page.text_content("#enroll-secret [data-secret]")
        command = page.text_content("#enroll-command")
        assert f"--enroll {secret}" in command and f"--admin {admin}" in command
        assert f"--connect {stack['gateway']}" in command
        local_url = local.match.group(1)
        if not local_url.startswith("http"):
            local_url = "http://" + local_url
        agent = Proc(
            [
                str(BIN / "switchboard"), "node", "--admin", admin, "--enroll", secret,
                "--local", local_url, "--identity", str(tmp_path / "node.json"),
                "--name", "gpu-box", "--rename", "mock-model=local-llm", "--connect", stack["gateway"],
            ],
            "stderr",
            r"node identity loaded",
        )
        page.wait_for_selector("[data-node-status=gpu-box] .badge:text('online')", timeout=20_000)
        shot(page, "nodes-online", tmp_path)
        page.fill("input[data-reason=gpu-box]", "maintenance window")
        page.click("input[data-reason=gpu-box] ~ button[data-action=disable]")
        page.wait_for_selector("[data-node-status=gpu-box] .badge:text('disabled')")
        page.goto(admin + "/#/audit")
        page.select_option("#audit-filters select[name=resource]", "node")
        page.click("#audit-filters button[type=submit]")
        page.wait_for_selector("table[data-table=audit] td:text('update')")
        assert "maintenance window" in page.text_content("table[data-table=audit]")
        shot(page, "audit", tmp_path)
    finally:
        if agent:
            agent.stop()
        local.stop()
        ctx.close()
    assert not errors, errors


def test_read_token_sees_no_write_control(stack, browser, tmp_path):
    admin = stack["admin"]
    status, tok = call(admin, "POST", "/v1/admin/tokens", {"name": "dashboards", "role": "read"})
    assert status == 201
    assert call(admin, "POST", "/v1/admin/keys", {"org": "acme", "name": "for-readers"})[0] == 201
    ctx, page, urls, errors = sign_in(browser, admin, token=tok["token_secret"])
    assert page.text_content("#who").endswith("(read-only)")
    for name, ready in [
        ("keys", "table[data-table=keys]"),
        ("providers", "table[data-table=routes]"),
        ("nodes", "table[data-table=enrollment-tokens]"),
        ("audit", "table[data-table=audit]"),
        ("playground", "#pg-form"),
        ("overview", "[data-kpi=requests]"),
    ]:
        page.goto(f"{admin}/#/{name}")
        page.wait_for_selector(ready)
        if name == "keys":
            # A key's details (its limits) are readable; their forms are not there.
            page.click("button[data-details=for-readers]")
            page.wait_for_selector("#key-limits h2")
        for sel in ["#key-create", "#key-edit", "#org-create", "#provider-create", "#route-create", "#enroll-create", "#limits-form",
                    "#pg-org", "[data-action]", "button.danger", "button.primary:not(#pg-send):not([type=submit])"]:
            assert page.query_selector(sel) is None, f"{name}: {sel} shown to a read token"
        shot(page, f"read-only-{name}", tmp_path)
    # And the API refuses a write from this session even with the anti-forgery token.
    csrf = page.evaluate("fetch('/v1/admin/console/session').then(r => r.json()).then(j => j.csrf_token)")
    r = ctx.request.post(admin + "/v1/admin/orgs", data={"name": "nope"},
                         headers={"X-CSRF-Token": csrf, "Origin": admin})
    assert r.status == 403 and r.json()["error"]["code"] == "read_only_token"
    assert not errors, errors
    ctx.close()


def test_forgery_and_cross_origin_are_refused(stack, browser, tmp_path):
    admin = stack["admin"]
    # The page's policy: scripts from this origin only.
    ctx, page, urls, errors = sign_in(browser, admin)
    resp = ctx.request.get(admin + "/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert ADMIN not in resp.text()
    csrf = page.evaluate("fetch('/v1/admin/console/session').then(r => r.json()).then(j => j.csrf_token)")
    # Without the anti-forgery token: refused, nothing created.
    r = ctx.request.post(admin + "/v1/admin/orgs", data={"name": "forged-1"}, headers={"Origin": admin})
    assert r.status == 403 and r.json()["error"]["code"] == "csrf_token_invalid"
    # With a wrong one: refused.
    r = ctx.request.post(admin + "/v1/admin/orgs", data={"name": "forged-2"},
                         headers={"Origin": admin, "X-CSRF-Token": "0" * 64})
    assert r.status == 403
    # From another origin, even with the token: refused.
    r = ctx.request.post(admin + "/v1/admin/orgs", data={"name": "forged-3"},
                         headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf})
    assert r.status == 403 and r.json()["error"]["code"] == "cross_origin_refused"
    # Without an Origin at all: refused.
    r = ctx.request.post(admin + "/v1/admin/orgs", data={"name": "forged-4"}, headers={"X-CSRF-Token": csrf})
    assert r.status == 403
    # A real cross-origin page in the same browser (another loopback port, so
    # the same site: the SameSite cookie is sent) cannot change anything.
    evil_html = f"""<!doctype html><script>
      fetch('{admin}/v1/admin/orgs', {{method: 'POST', credentials: 'include', mode: 'no-cors',
        headers: {{'Content-Type': 'text/plain'}}, body: JSON.stringify({{name: 'forged-5'}})}})
        .finally(() => {{ document.title = 'sent'; }});
    </script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil_html.encode())

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        evil = ctx.new_page()
        evil.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
        evil.wait_for_function("() => document.title === 'sent'")
    finally:
        srv.shutdown()
    # With both proofs, from the console's origin: accepted.
    r = ctx.request.post(admin + "/v1/admin/orgs", data={"name": "allowed"},
                         headers={"Origin": admin, "X-CSRF-Token": csrf})
    assert r.status == 201
    _, orgs = call(admin, "GET", "/v1/admin/orgs?limit=1000")
    names = {o["name"] for o in orgs["data"]}
    assert "allowed" in names and not [n for n in names if n.startswith("forged")]
    # A 422 from the API is shown next to the field it names.
    page.goto(admin + "/#/providers")
    page.wait_for_selector("#route-create")
    page.fill("#route-create input[name=name]", "broken")
    page.fill("#route-create textarea[name=targets]", "no-such-provider")
    page.click("#route-create button[type=submit]")
    err = page.wait_for_selector("#route-create label .field-error")
    assert "no-such-provider" in err.text_content() or "provider" in err.text_content()
    shot(page, "route-422", tmp_path)
    assert not errors, errors
    ctx.close()


def test_narrow_screen_and_keyboard(stack, browser, tmp_path):
    ctx, page, urls, errors = sign_in(browser, stack["admin"], width=390)
    for name in ["overview", "usage", "keys", "nodes", "playground"]:
        page.goto(f"{stack['admin']}/#/{name}")
        page.wait_for_selector("#page h1")
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} scrolls sideways at 390 px by {overflow}px"
    shot(page, "narrow-playground", tmp_path)
    # Keyboard: Tab reaches the navigation, Enter follows it.
    page.goto(f"{stack['admin']}/#/overview")
    page.wait_for_selector("[data-kpi=requests]")
    page.focus("#nav a[href='#/keys']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#page[data-page=keys]")
    assert not errors, errors
    ctx.close()
