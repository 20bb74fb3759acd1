//! The smoke check and fault injection, against the real binary: `switchboard
//! serve` with its admin API, mock providers, a real node agent, and
//! `switchboard smoke` run as a process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use switchboard_loadtests::{MockConfig, MockHandle};

const TEST_KEY: &str = "sk-smoke-test-key-0001";
const BURST_KEY: &str = "sk-smoke-burst-key-0001";
const PROD_KEY: &str = "sk-smoke-production-key";
const WRONG_PROVIDER_KEY: &str = "sk-provider-key-that-was-revoked";

fn admin_call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n");
    if method == "POST" {
        s.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    s.push_str(&body);
    let mut c = Conn::open(addr);
    c.set_timeout(Duration::from_secs(60));
    c.send(s.as_bytes());
    c.response()
}

/// `switchboard serve` on `config` (written to `dir`): the process, the
/// admin's address and the data plane's.
fn serve(dir: &Path, config: &str) -> (Proc, SocketAddr, SocketAddr) {
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, config).unwrap();
    let mut p = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], &[]);
    let admin = p.address("admin API listening on ");
    let dp = p.address("data plane listening on ");
    (p, admin, dp)
}

/// Run `switchboard smoke`: exit code and standard output.
fn smoke(admin: SocketAddr, args: &[&str]) -> (i32, String) {
    let url = format!("http://{admin}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["smoke", "--admin", &url, "--key", TEST_KEY, "--usage-wait-ms", "10000", "--timeout-ms", "10000"])
        .args(args)
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("SWITCHBOARD_SMOKE_KEY")
        .env_remove("SWITCHBOARD_SMOKE_BURST_KEY")
        .output()
        .expect("switchboard smoke runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}{}", if stderr.is_empty() { String::new() } else { format!("\n[stderr] {stderr}") }),
    )
}

fn report(out: &str) -> Value {
    let json = out.split("\n[stderr]").next().unwrap();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("report is not JSON ({e}): {out}"))
}

fn checks<'a>(r: &'a Value, check: &str, route: Option<&str>) -> Vec<&'a Value> {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == check && route.is_none_or(|rt| c["route"] == rt))
        .collect()
}

fn chats(m: &MockHandle) -> usize {
    m.recorded().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
}

fn priced(name: &str, m: &MockHandle, api_key: &str, price: f64) -> String {
    format!(
        r#"
[[upstreams]]
name = "{name}"
base_url = "{}"
api_key = "{api_key}"
prices = [{{ model = "chat", prompt_per_mtok = {price}, completion_per_mtok = {c} }}, {{ model = "solo", prompt_per_mtok = {price}, completion_per_mtok = {c} }}, {{ model = "no-such-model", prompt_per_mtok = {price}, completion_per_mtok = {c} }}]
"#,
        m.base_url(),
        c = price * 4.0
    )
}

fn keys(burst_org: &str, burst_rpm: &str) -> String {
    format!(
        r#"
[[keys]]
id = "smoke-key"
hash = "{}"
org = "acme"
test = true

[[keys]]
id = "burst-key"
hash = "{}"
org = "{burst_org}"
test = true
{burst_rpm}

[[keys]]
id = "prod-key"
hash = "{}"
org = "acme"
"#,
        key_hash(TEST_KEY),
        key_hash(BURST_KEY),
        key_hash(PROD_KEY)
    )
}

const SERVER: &str = r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"
node_heartbeat_ms = 200
"#;

/// Enroll and start a real node agent (outbound to the data plane) serving
/// `llama` from `local`; wait until it is routable.
fn node_agent(admin: SocketAddr, dp: SocketAddr, local: &MockHandle, dir: &Path) -> Proc {
    let t = admin_call(admin, "POST", "/v1/admin/enrollment-tokens", Some(json!({"org": "acme"})));
    assert_eq!(t.status, 201, "{}", t.text());
    let token = t.json()["secret"].as_str().unwrap().to_string();
    let (admin_url, local_url, gw) =
        (format!("http://{admin}"), format!("http://{}", local.addr), format!("http://{dp}"));
    let identity = dir.join("node.json");
    let agent = Proc::spawn(
        &[
            "node",
            "--admin",
            &admin_url,
            "--enroll",
            &token,
            "--local",
            &local_url,
            "--identity",
            identity.to_str().unwrap(),
            "--name",
            "ws1",
            "--rename",
            "mock-model=llama",
            "--connect",
            &gw,
            "--connections",
            "2",
        ],
        &[],
    );
    let online = eventually(Duration::from_secs(15), || {
        let r = admin_call(admin, "GET", "/v1/admin/nodes/ws1", None);
        r.status == 200 && r.json()["routable"] == true
    });
    assert!(online, "the node never came online");
    // Its connections attached: production requests are answered by it
    // (the route's first target) on every worker: 8 fresh connections in a
    // row, spread over the workers by the kernel.
    let served = eventually(Duration::from_secs(10), || {
        (0..8).all(|_| {
            let mut c = Conn::open(dp);
            let body = r#"{"model":"chat","messages":[{"role":"user","content":"warm"}]}"#;
            c.send(&request("POST", "/v1/chat/completions", Some(PROD_KEY), body, &[]));
            let r = c.response();
            r.status == 200 && r.header("x-switchboard-target") == Some("node:ws1")
        })
    });
    assert!(served, "the node never served");
    agent
}

#[test]
fn a_healthy_deployment_passes_every_check_and_its_costs_match_the_usage_report() {
    let (a, b, local) = (mock(), mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{SERVER}
[[orgs]]
name = "acme"
rpm = 1000
quotas = [{{ period = "day", max_usd = 100.0 }}]
{}{}
[[models]]
name = "chat"
targets = [{{ nodes = "llama", prompt_per_mtok = 0.05, completion_per_mtok = 0.1 }}, {{ upstream = "a" }}, {{ upstream = "b" }}]
cache = {{ mode = "deterministic", ttl_ms = 60000 }}

[[models]]
name = "rr"
strategy = "round_robin"
targets = [{{ upstream = "a", model = "chat" }}, {{ upstream = "b", model = "chat" }}]
{}"#,
        priced("a", &a, PROVIDER_KEY, 1.0),
        priced("b", &b, PROVIDER_KEY, 3.0),
        keys("acme", "rpm = 3"),
    );
    let (gw, admin, dp) = serve(dir.path(), &config);
    let agent = node_agent(admin, dp, &local, dir.path());
    let before = (chats(&a), chats(&b), chats(&local));

    // A dry run lists the requests and sends none.
    let (code, out) = smoke(admin, &["--json", "--dry-run", "--burst", "--burst-key", BURST_KEY]);
    assert_eq!(code, 0, "{out}");
    let plan = report(&out);
    assert_eq!(plan["dry_run"], true);
    let planned = plan["requests"].as_array().unwrap();
    // chat: 3 targets x 2, failover x 2, cache x 3; rr: 2 targets x 2,
    // failover x 2; burst 3 + 2.
    assert_eq!(planned.len(), 6 + 2 + 3 + 4 + 2 + 5, "{out}");
    assert!(planned.iter().all(|q| q["worst_case_tokens"].as_u64().unwrap() > 1));
    assert_eq!((chats(&a), chats(&b), chats(&local)), before, "a dry run sent requests");

    let (code, out) = smoke(admin, &["--json", "--expect-cache", "chat", "--burst", "--burst-key", BURST_KEY, "--yes"]);
    let r = report(&out);
    assert_eq!(code, 0, "{out}");
    assert_eq!(r["passed"], true);
    for c in r["checks"].as_array().unwrap() {
        let skipped = c["check"] == "cache" && c["route"] == "rr";
        assert_eq!(c["verdict"], if skipped { "skipped" } else { "passed" }, "{c}");
    }
    // Check 1: every target forced, whole and streamed, with numbers.
    let t = checks(&r, "targets", Some("chat"));
    let names: Vec<&str> = t.iter().map(|c| c["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["node:ws1", "a", "b"]);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["served_by"], "node:ws1");
    let streamed = &results[1];
    assert_eq!(streamed["stream"], true);
    assert!(streamed["ttft_ms"].as_f64().unwrap() > 0.0, "{streamed}");
    // Check 2: the node failed by injection, answered by `a`, records marked.
    let f = checks(&r, "failover", Some("chat"));
    assert_eq!(f.len(), 1);
    assert!(f[0]["detail"].as_str().unwrap().contains("answered by `a` in 2 attempts"), "{}", f[0]);
    // Whatever the strategy: the failed target is tried first.
    let f = checks(&r, "failover", Some("rr"));
    assert!(f[0]["detail"].as_str().unwrap().contains("answered by `b` in 2 attempts"), "{}", f[0]);
    // Check 3: sorted by cost, node cheapest, b dearest.
    let costs: Vec<&str> = r["costs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["route"] == "chat")
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    assert_eq!(costs, ["node:ws1", "a", "b"]);
    let all: Vec<i64> = r["costs"].as_array().unwrap().iter().map(|c| c["cost_nanos"].as_i64().unwrap()).collect();
    assert!(all.windows(2).all(|w| w[0] <= w[1]) && all.len() == 5, "{all:?}");
    // Check 4 and 5.
    assert!(checks(&r, "cache", Some("chat"))[0]["detail"].as_str().unwrap().contains("miss, hit, bypass"));
    assert_eq!(r["burst"]["admitted"], 3);
    assert_eq!(r["burst"]["refused_429"], 2);
    assert_eq!(r["limits"]["configured_rpm"], json!([1000]));
    assert_eq!(r["limits"]["quotas"], json!(["org day max_usd 100"]));
    // The run is in the audit log (the key by id, never its secret).
    let audit = admin_call(admin, "GET", "/v1/admin/audit?resource=smoke", None);
    let entries = audit.json()["data"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{}", audit.text());
    assert_eq!(entries[0]["action"], "run");
    assert_eq!(entries[0]["change"]["key"], "smoke-key");
    assert_eq!(entries[0]["change"]["burst_key"], "burst-key");
    assert!(!audit.text().contains(TEST_KEY) && !audit.text().contains(BURST_KEY));

    // The report's costs are the usage records': the smoke run's two keys
    // sent nothing else.
    let usage = admin_call(admin, "GET", "/v1/admin/usage?granularity=total&group_by=key", None);
    assert_eq!(usage.status, 200, "{}", usage.text());
    let u = usage.json();
    let total: i64 = u["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["key"] == "smoke-key" || row["key"] == "burst-key")
        .map(|row| row["cost_nanos"].as_i64().unwrap())
        .sum();
    let per_request: i64 = results.iter().map(|s| s["cost_nanos"].as_i64().unwrap_or(0)).sum();
    assert!(r["total_cost_nanos"].as_i64().unwrap() > 0);
    assert_eq!(r["total_cost_nanos"].as_i64().unwrap(), total, "report {} usage {u}", r["total_cost_nanos"]);
    assert_eq!(per_request, total);

    // The table says the same.
    let (code, table) = smoke(admin, &["--route", "chat"]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("PASSED") && table.contains("cheapest first"), "{table}");
    assert_eq!(agent.stop(), 0);
    assert_eq!(gw.stop(), 0);
}

#[test]
fn misconfigured_deployments_fail_naming_what_is_wrong() {
    let (a, revoked, strict) = (
        mock(),
        mock_with(MockConfig { record: true, reject_keys: vec![WRONG_PROVIDER_KEY.into()], ..MockConfig::default() }),
        mock_with(MockConfig {
            record: true,
            strict_models: true,
            models: vec!["chat".into()],
            ..MockConfig::default()
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{SERVER}
[[orgs]]
name = "other"
rpm = 3
{}{}{}
[[models]]
name = "wrong-key"
targets = [{{ upstream = "a", model = "chat" }}, {{ upstream = "revoked", model = "chat" }}]

[[models]]
name = "wrong-model"
targets = [{{ upstream = "a", model = "chat" }}, {{ upstream = "strict", model = "no-such-model" }}]

[[models]]
name = "solo"
targets = [{{ upstream = "a" }}]
{}"#,
        priced("a", &a, PROVIDER_KEY, 1.0),
        priced("revoked", &revoked, WRONG_PROVIDER_KEY, 1.0),
        priced("strict", &strict, PROVIDER_KEY, 1.0),
        // The burst key's limit was set on the wrong org.
        keys("acme", ""),
    );
    let (gw, admin, _dp) = serve(dir.path(), &config);
    let (code, out) = smoke(admin, &["--json", "--expect-cache", "solo", "--burst", "--burst-key", BURST_KEY, "--yes"]);
    assert_eq!(code, 1, "{out}");
    let r = report(&out);
    assert_eq!(r["passed"], false);
    let verdict = |check: &str, route: Option<&str>, target: Option<&str>| -> (String, String) {
        let c = checks(&r, check, route)
            .into_iter()
            .find(|c| target.is_none_or(|t| c["target"] == t))
            .unwrap_or_else(|| panic!("no {check} {route:?} {target:?}: {out}"));
        (c["verdict"].as_str().unwrap().to_string(), c["detail"].as_str().unwrap().to_string())
    };
    // Check 1: the healthy first targets pass, the second ones fail by name.
    assert_eq!(verdict("targets", Some("wrong-key"), Some("a")).0, "passed");
    let (v, d) = verdict("targets", Some("wrong-key"), Some("revoked"));
    assert_eq!(v, "failed");
    assert!(d.contains("target `revoked` failed") && d.contains("401"), "{d}");
    let (v, d) = verdict("targets", Some("wrong-model"), Some("strict"));
    assert_eq!(v, "failed");
    assert!(d.contains("target `strict` failed") && d.contains("404") && d.contains("no-such-model"), "{d}");
    // Check 2: no fallback is not a pass.
    let (v, d) = verdict("failover", Some("solo"), None);
    assert_eq!(v, "not_possible");
    assert!(d.contains("no fallback"), "{d}");
    // Check 4: a cache expected but off.
    let (v, d) = verdict("cache", Some("solo"), None);
    assert_eq!(v, "failed");
    assert!(d.contains("cache is off"), "{d}");
    assert_eq!(verdict("cache", Some("wrong-key"), None).0, "skipped");
    // Check 5: the limit on another org does not hold this key back.
    let (v, d) = verdict("burst", None, None);
    assert_eq!(v, "failed");
    assert!(d.contains("no request limit applies to key `burst-key`"), "{d}");
    assert_eq!(r["burst"]["refused_429"], 0);
    // The table says FAIL and NOT POSSIBLE, and exits 1.
    let (code, table) = smoke(admin, &["--route", "solo"]);
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("NOT POSSIBLE") && table.contains("FAILED"), "{table}");
    assert_eq!(gw.stop(), 0);
}

#[test]
fn fault_injection_is_for_test_keys_only_and_leaves_health_alone() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{SERVER}
{}{}
[[models]]
name = "chat"
targets = [{{ upstream = "a" }}, {{ upstream = "b" }}]
{}"#,
        priced("a", &a, PROVIDER_KEY, 1.0),
        priced("b", &b, PROVIDER_KEY, 2.0),
        keys("acme", ""),
    );
    let (gw, admin, dp) = serve(dir.path(), &config);
    let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#;
    let stream = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"stream":true}"#;
    let send = |key: &str, body: &str, headers: &[(&str, &str)]| {
        let mut c = Conn::open(dp);
        c.send(&request("POST", "/v1/chat/completions", Some(key), body, headers));
        c.response()
    };
    // A production key is refused, never ignored.
    for h in ["x-switchboard-fault", "x-switchboard-target-only"] {
        let r = send(PROD_KEY, body, &[(h, if h.ends_with("fault") { "fail=a" } else { "a" })]);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.error()["code"], "fault_injection_not_allowed");
        assert_eq!(r.error()["param"], h);
    }
    assert_eq!(chats(&a) + chats(&b), 0);
    // On the model list too (where a test key's headers have nothing to do).
    for (key, status) in [(PROD_KEY, 400), (TEST_KEY, 200)] {
        let mut c = Conn::open(dp);
        c.send(&request("GET", "/v1/models", Some(key), "", &[("x-switchboard-fault", "fail=a")]));
        assert_eq!(c.response().status, status);
    }
    // Malformed values and unknown targets: 400 naming the header.
    for (h, v) in [
        ("x-switchboard-fault", "fail=a,status=200"),
        ("x-switchboard-fault", "a"),
        ("x-switchboard-fault", "fail=nope"),
        ("x-switchboard-target-only", "nope"),
    ] {
        let r = send(TEST_KEY, body, &[(h, v)]);
        assert_eq!(r.status, 400, "{h}: {v}: {}", r.text());
        assert_eq!(r.error()["code"], "invalid_fault_header");
    }
    // `a` failed by injection, far past its ejection threshold: every request
    // fails over to `b`, and `a` is never contacted nor marked unhealthy.
    for i in 0..8 {
        let r = send(TEST_KEY, if i % 2 == 0 { body } else { stream }, &[("x-switchboard-fault", "fail=a,status=503")]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-switchboard-target"), Some("b"));
        assert_eq!(r.header("x-switchboard-attempts"), Some("2"));
    }
    for kind in ["connect", "reset", "timeout"] {
        let r = send(TEST_KEY, body, &[("x-switchboard-fault", &format!("fail=a,status={kind}"))]);
        assert_eq!((r.status, r.header("x-switchboard-target")), (200, Some("b")), "{kind}: {}", r.text());
    }
    assert_eq!(chats(&a), 0);
    // Forced onto the failed target: the client sees the injected failure.
    let r = send(TEST_KEY, body, &[("x-switchboard-fault", "fail=a,status=503"), ("x-switchboard-target-only", "a")]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error()["message"].as_str().unwrap().contains("injected"), "{}", r.text());
    // Forced onto `b`: served there, the record not injected.
    let r = send(TEST_KEY, body, &[("x-switchboard-target-only", "b")]);
    assert_eq!((r.status, r.header("x-switchboard-target")), (200, Some("b")));
    let targets = admin_call(admin, "GET", "/v1/admin/targets", None).json();
    let a_health = targets["data"].as_array().unwrap().iter().find(|t| t["name"] == "a").cloned();
    // Never attempted: no health entry at all, or one untouched.
    if let Some(h) = a_health {
        assert_eq!(h["state"], "closed", "{h}");
        assert_eq!(h["failures"], 0, "{h}");
    }
    // A real request with no fault still goes to `a` first.
    let r = send(TEST_KEY, body, &[]);
    assert_eq!(
        (r.status, r.header("x-switchboard-target"), r.header("x-switchboard-attempts")),
        (200, Some("a"), Some("1"))
    );
    // The records of injected failures are marked; the others are not.
    let marked = eventually(Duration::from_secs(10), || {
        let r = admin_call(admin, "GET", "/v1/admin/requests?injected=true", None);
        r.status == 200 && r.json()["data"].as_array().map_or(0, |a| a.len()) == 12
    });
    let injected = admin_call(admin, "GET", "/v1/admin/requests?injected=true", None).json();
    assert!(marked, "{injected}");
    let rows = injected["data"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["injected"] == true && r["key"] == "smoke-key"));
    assert_eq!(rows.iter().filter(|r| r["status"] == 503 && r["target"] == "").count(), 1, "{injected}");
    assert_eq!(rows.iter().filter(|r| r["status"] == 200 && r["target"] == "b" && r["attempts"] == 2).count(), 11);
    let mut plain = json!(null);
    let both = eventually(Duration::from_secs(10), || {
        plain = admin_call(admin, "GET", "/v1/admin/requests?injected=false&key=smoke-key", None).json();
        plain["data"].as_array().map_or(0, |a| a.len()) == 2
    });
    assert!(both, "{plain}");
    assert_eq!(gw.stop(), 0);
}

#[test]
fn smoke_input_is_checked_before_anything_is_sent() {
    let a = mock();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{SERVER}
{}
[[models]]
name = "solo"
targets = [{{ upstream = "a" }}]
{}"#,
        priced("a", &a, PROVIDER_KEY, 1.0),
        keys("acme", ""),
    );
    let (gw, admin, _dp) = serve(dir.path(), &config);
    for (body, param) in [
        (json!({"key": PROD_KEY}), "key"),
        (json!({"key": "sk-nobody"}), "key"),
        (json!({"key": TEST_KEY, "max_tokens": 17}), "max_tokens"),
        (json!({"key": TEST_KEY, "routes": ["nope"]}), "routes"),
        (json!({"key": TEST_KEY, "burst": true}), "burst_key"),
        (json!({"key": TEST_KEY, "burst": true, "burst_key": TEST_KEY}), "burst_key"),
        (json!({"key": TEST_KEY, "dataplane_url": "ftp://x"}), "dataplane_url"),
    ] {
        let r = admin_call(admin, "POST", "/v1/admin/smoke", Some(body.clone()));
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert_eq!(r.error()["param"], param, "{body}: {}", r.text());
    }
    assert_eq!(chats(&a), 0);
    // The CLI says why, exit 64.
    let (code, out) = smoke(admin, &["--max-tokens", "99"]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("max_tokens"), "{out}");
    let (code, out) = smoke(admin, &["--burst", "--burst-key", BURST_KEY]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("--yes"), "{out}");
    assert_eq!(chats(&a), 0);
    assert_eq!(gw.stop(), 0);
}

#[test]
fn the_test_flag_is_set_through_the_admin_api_audited_and_takes_effect_at_once() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{SERVER}
{}{}
[[models]]
name = "chat"
targets = [{{ upstream = "a" }}, {{ upstream = "b" }}]
{}"#,
        priced("a", &a, PROVIDER_KEY, 1.0),
        priced("b", &b, PROVIDER_KEY, 2.0),
        keys("acme", ""),
    );
    let (gw, admin, dp) = serve(dir.path(), &config);
    let created = admin_call(admin, "POST", "/v1/admin/keys", Some(json!({"org": "acme", "name": "ci"})));
    assert_eq!(created.status, 201, "{}", created.text());
    let (id, secret) = (
        created.json()["id"].as_str().unwrap().to_string(),
        created.json()["key_secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(created.json()["test"], false);
    let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#;
    let faulted = || {
        let mut c = Conn::open(dp);
        c.send(&request("POST", "/v1/chat/completions", Some(&secret), body, &[("x-switchboard-fault", "fail=a")]));
        c.response()
    };
    assert_eq!(faulted().status, 400);
    let mut patch = format!(
        "PATCH /v1/admin/keys/{id} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
    );
    patch.push_str(r#"{"test":true}"#);
    let mut c = Conn::open(admin);
    c.send(patch.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["test"], true);
    let r = faulted();
    assert_eq!((r.status, r.header("x-switchboard-target")), (200, Some("b")), "{}", r.text());
    let audit = admin_call(admin, "GET", &format!("/v1/admin/audit?resource=key&resource_id={id}"), None).json();
    let changed =
        audit["data"].as_array().unwrap().iter().any(|e| e["action"] == "update" && e["change"]["test"]["to"] == true);
    assert!(changed, "{audit}");
    // The file's keys say it too.
    let listed = admin_call(admin, "GET", "/v1/admin/keys/smoke-key", None).json();
    assert_eq!(listed["test"], true, "{listed}");
    assert_eq!(gw.stop(), 0);
}
