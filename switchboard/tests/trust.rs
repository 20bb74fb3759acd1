//! Trust boundaries (issue 16), with the real binaries: one bad value from an
//! admin, a node or a restored database must not take the gateway down or
//! corrupt its books.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use switchboard_loadtests::{Behaviour, MockConfig};

/// An admin API call with `token`.
fn call(addr: SocketAddr, token: &str, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n");
    if !body.is_empty() || method == "POST" || method == "PATCH" || method == "PUT" {
        s.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    s.push_str(&body);
    let mut c = Conn::open(addr);
    c.set_timeout(Duration::from_secs(20));
    c.send(s.as_bytes());
    c.response()
}

fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Response {
    call(addr, ADMIN_TOKEN, method, path, body)
}

fn chat(addr: SocketAddr, key: &str, model: &str) -> Response {
    let mut c = Conn::open(addr);
    c.set_timeout(Duration::from_secs(20));
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(key),
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
        &[],
    ));
    c.response()
}

fn healthz(addr: SocketAddr) -> Response {
    let mut c = Conn::open(addr);
    c.send(&request("GET", "/healthz", None, "", &[]));
    c.response()
}

/// A `serve` config: admin API on `admin_listen`, database `database`, a
/// provider `p` at `provider`, a route `m` to it, and key KEY.
fn serve_config(dir: &Path, admin_listen: &str, database: &str, provider: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{database}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "{admin_listen}"
database = "{database}"
node_heartbeat_ms = 200

[[upstreams]]
name = "p"
base_url = "{provider}"

[[models]]
name = "m"
targets = [{{ upstream = "p" }}]

[[keys]]
id = "k"
hash = "{}"
org = "acme"
{extra}
"#,
            key_hash(KEY)
        ),
    )
    .unwrap();
    path
}

fn spawn_serve(config: &Path) -> (Proc, SocketAddr, SocketAddr) {
    let mut p = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], &[]);
    let admin = p.address("admin API listening on ");
    let dp = p.address("data plane listening on ");
    (p, admin, dp)
}

fn spawn_dataplane(admin: SocketAddr, dir: &Path) -> (Proc, SocketAddr) {
    let cfg = dir.join("dataplane.toml");
    let spill = dir.join("dp-usage.spill");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[usage]\nspill_file = \"{}\"\n", spill.display()),
    )
    .unwrap();
    let mut p =
        Proc::spawn(&["dataplane", "--admin", &format!("http://{admin}"), "--config", cfg.to_str().unwrap()], &[]);
    let addr = p.address("data plane listening on ");
    (p, addr)
}

/// Every worker of the data plane at `addr` serves `m` (several connections
/// each, so the kernel spreads them over both workers), and `/healthz` is 200.
fn every_worker_serves(addr: SocketAddr) {
    for _ in 0..8 {
        let r = chat(addr, KEY, "m");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let h = healthz(addr);
    assert_eq!(h.status, 200, "{}", h.text());
}

#[test]
fn a_huge_timeout_through_the_api_is_refused_and_no_data_plane_worker_is_lost() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "127.0.0.1:0", "a.db", &up.base_url(), "");
    let (serve, admin_addr, local_dp) = spawn_serve(&cfg);
    let (remote, remote_dp) = spawn_dataplane(admin_addr, dir.path());
    every_worker_serves(local_dp);
    every_worker_serves(remote_dp);

    let huge = u64::MAX;
    for field in ["connect_timeout_ms", "first_byte_timeout_ms", "read_timeout_ms", "eject_ms", "probe_interval_ms"] {
        let r = admin(
            admin_addr,
            "POST",
            "/v1/admin/providers",
            Some(json!({"name": format!("huge-{field}"), "base_url": up.base_url(), field: huge})),
        );
        assert_eq!(r.status, 422, "{field}: {}", r.text());
        assert_eq!(r.error()["param"], field, "{}", r.text());
        assert!(
            r.error()["message"].as_str().unwrap().contains("3600000")
                || field.starts_with("eject")
                || field.starts_with("probe"),
            "{}",
            r.text()
        );
        let r = admin(admin_addr, "PATCH", "/v1/admin/providers/p", Some(json!({field: huge})));
        assert_eq!(r.status, 422, "{field}: {}", r.text());
    }
    let r = admin(
        admin_addr,
        "POST",
        "/v1/admin/routes",
        Some(json!({"name": "slow", "targets": [{"provider": "p"}], "retry": {"deadline_ms": huge}})),
    );
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("retry.deadline_ms")), "{}", r.text());
    // In range: accepted, and every worker of both data planes still serves.
    let r = admin(admin_addr, "PATCH", "/v1/admin/providers/p", Some(json!({"connect_timeout_ms": 3_600_000})));
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));
    every_worker_serves(local_dp);
    every_worker_serves(remote_dp);
    assert_eq!(remote.stop(), 0);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn a_node_reporting_absurd_usage_is_clamped_flagged_and_the_books_and_restart_survive() {
    let provider = mock();
    // The node's local server reports absurd usage (2^64-1 tokens).
    let local = mock_with(MockConfig {
        behaviour: Behaviour {
            tokens: Some(4),
            usage_json: Some(
                r#"{"prompt_tokens":5000000000000000000,"completion_tokens":18446744073709551615,"total_tokens":18446744073709551615}"#
                    .into(),
            ),
            ..Behaviour::default()
        },
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nodes.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[admin]
listen = "127.0.0.1:0"
database = "n.db"
node_heartbeat_ms = 200

[[upstreams]]
name = "provider"
base_url = "{}"

[[models]]
name = "llama"
targets = [{{ nodes = "llama", prompt_per_mtok = 2.0 }}, {{ upstream = "provider" }}]

[[keys]]
id = "k"
hash = "{}"
org = "acme"
"#,
            provider.base_url(),
            key_hash(KEY)
        ),
    )
    .unwrap();
    let (serve, admin_addr, dp) = spawn_serve(&cfg);
    let r = admin(admin_addr, "POST", "/v1/admin/enrollment-tokens", Some(json!({"org": "acme"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["secret"].as_str().unwrap().to_string();
    let mut agent =
        spawn_direct_node(admin_addr, local.addr, dir.path(), "ws1", &token, &["--rename", "mock-model=llama"]);
    agent.address("node listening on ");
    let node = || admin(admin_addr, "GET", "/v1/admin/nodes/ws1", None);
    assert!(eventually(Duration::from_secs(15), || node().status == 200 && node().json()["status"] == "online"));

    // The node serves until its nonsense has been counted three times; then it
    // is out of routing and the provider serves.
    let mut by_node = 0;
    let flagged = eventually(Duration::from_secs(20), || {
        let r = chat(dp, KEY, "llama");
        assert_eq!(r.status, 200, "{}", r.text());
        if r.header("x-switchboard-target") == Some("node:ws1") {
            by_node += 1;
        }
        node().json()["status"] == "flagged"
    });
    let n = node().json();
    assert!(flagged, "the node was never flagged: {n}");
    assert_eq!(n["routable"], false, "{n}");
    assert!(n["usage_flags"].as_u64().unwrap() >= 3, "{n}");
    assert!(by_node >= 3);
    assert!(eventually(Duration::from_secs(5), || chat(dp, KEY, "llama").header("x-switchboard-target")
        == Some("provider")));

    // The books: clamped, marked, and every report answers.
    let reports = |addr| {
        for path in [
            "/v1/admin/usage?from=0&granularity=total",
            "/v1/admin/usage?from=0&group_by=org",
            "/v1/admin/usage?from=0&granularity=minute&group_by=key,target",
            "/v1/admin/usage/top-keys?from=0",
            "/v1/admin/usage/top-keys?from=0&by=tokens",
            "/v1/admin/requests?from=0",
            "/v1/admin/keys/k/limits",
        ] {
            let r = admin(addr, "GET", path, None);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
        let r = admin(
            addr,
            "PUT",
            "/v1/admin/orgs/acme/limits",
            Some(json!({"quotas": [{"period": "day", "max_tokens": 1000}]})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    reports(admin_addr);
    let total = admin(admin_addr, "GET", "/v1/admin/usage?from=0&granularity=total&group_by=target", None).json();
    let node_row = total["data"].as_array().unwrap().iter().find(|r| r["target"] == "node:ws1").cloned().unwrap();
    let max = switchboard_shared::limits::MAX_TOKENS_PER_REQUEST as i64;
    let requests = node_row["requests"].as_i64().unwrap();
    assert_eq!(node_row["prompt_tokens"].as_i64(), Some(requests * max), "{node_row}");
    assert!(node_row["cost_nanos"].as_i64().unwrap() > 0, "{node_row}");
    let log = admin(admin_addr, "GET", "/v1/admin/requests?from=0&target=node:ws1", None).json();
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["clamped"] == true && r["prompt_tokens"].as_i64() == Some(max)),
        "{log}"
    );

    // Re-enabling clears the flags.
    let r = admin(admin_addr, "PATCH", "/v1/admin/nodes/ws1", Some(json!({"enabled": true})));
    assert_eq!((r.status, r.json()["usage_flags"].as_u64()), (200, Some(0)), "{}", r.text());

    // A restart on the same database starts, and the reports still answer.
    drop(agent);
    assert_eq!(serve.stop(), 0);
    let (serve, admin_addr, _) = spawn_serve(&cfg);
    reports(admin_addr);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn absurd_prices_are_refused() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "127.0.0.1:0", "p.db", &up.base_url(), "");
    let (serve, admin_addr, _) = spawn_serve(&cfg);
    for price in [json!(1e13), json!(1e308), json!(-1.0), json!(100_000.5)] {
        let body =
            json!({"name": "pricey", "base_url": up.base_url(), "models": [{"name": "m", "prompt_per_mtok": price}]});
        let r = admin(admin_addr, "POST", "/v1/admin/providers", Some(body));
        assert_eq!(
            (r.status, r.error()["param"].as_str()),
            (422, Some("models[0].prompt_per_mtok")),
            "{price}: {}",
            r.text()
        );
        let r = admin(
            admin_addr,
            "POST",
            "/v1/admin/routes",
            Some(json!({"name": "pool", "targets": [{"nodes": "llama", "completion_per_mtok": price}]})),
        );
        assert_eq!(
            (r.status, r.error()["param"].as_str()),
            (422, Some("targets[0].completion_per_mtok")),
            "{price}: {}",
            r.text()
        );
    }
    let twice = json!({"name": "twice", "base_url": up.base_url(), "models": [{"name": "m"}, {"name": "m"}]});
    let r = admin(admin_addr, "POST", "/v1/admin/providers", Some(twice));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("models[1].name")), "{}", r.text());
    let fine =
        json!({"name": "fine", "base_url": up.base_url(), "models": [{"name": "m", "prompt_per_mtok": 100_000.0}]});
    assert_eq!(admin(admin_addr, "POST", "/v1/admin/providers", Some(fine)).status, 201);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn revoking_the_bootstrap_token_does_not_brick_the_next_start_and_the_last_admin_token_stays() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "127.0.0.1:0", "t.db", &up.base_url(), "");
    let (serve, admin_addr, _) = spawn_serve(&cfg);
    let tokens = admin(admin_addr, "GET", "/v1/admin/tokens", None).json();
    let env_id = tokens["data"][0]["id"].as_str().unwrap().to_string();
    // The only admin token cannot be revoked: nothing could write again.
    let r = admin(admin_addr, "POST", &format!("/v1/admin/tokens/{env_id}/revoke"), None);
    assert_eq!((r.status, r.error()["code"].as_str()), (409, Some("conflict")), "{}", r.text());
    let r = admin(admin_addr, "POST", "/v1/admin/tokens", Some(json!({"name": "second", "role": "admin"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let second = r.json()["token_secret"].as_str().unwrap().to_string();
    let second_id = r.json()["id"].as_str().unwrap().to_string();
    let r = call(admin_addr, &second, "POST", &format!("/v1/admin/tokens/{env_id}/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(admin_addr, &second, "POST", &format!("/v1/admin/tokens/{second_id}/revoke"), None);
    assert_eq!(r.status, 409, "now the second is the last admin token: {}", r.text());
    assert_eq!(serve.stop(), 0);

    // Same environment (SWITCHBOARD_ADMIN_TOKEN = the revoked token): starts,
    // says why the token is refused, and refuses it.
    let (mut serve, admin_addr, dp) = spawn_serve(&cfg);
    let line = serve.wait_line("SWITCHBOARD_ADMIN_TOKEN is an admin token that was revoked");
    assert!(line.contains(&env_id), "{line}");
    assert_eq!(admin(admin_addr, "GET", "/v1/admin/tokens", None).status, 401);
    assert_eq!(call(admin_addr, &second, "GET", "/v1/admin/tokens", None).status, 200);
    assert_eq!(chat(dp, KEY, "m").status, 200);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn a_remote_data_plane_follows_an_admin_restarted_on_an_older_database() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "127.0.0.1:0", "new.db", &up.base_url(), "");
    let (serve, admin_addr, _) = spawn_serve(&cfg);
    let (mut remote, remote_dp) = spawn_dataplane(admin_addr, dir.path());
    // Push the version well past where the other database will be.
    for i in 0..10 {
        let r = admin(admin_addr, "POST", "/v1/admin/orgs", Some(json!({"name": format!("org-{i}")})));
        assert_eq!(r.status, 201, "{}", r.text());
        let r = admin(admin_addr, "PATCH", "/v1/admin/routes/m", Some(json!({"allow_strategy_header": i % 2 == 0})));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(chat(remote_dp, KEY, "m").status, 200);
    serve.kill9();

    // The admin comes back on the same port with another (older) database.
    let old = serve_config(dir.path(), &admin_addr.to_string(), "old.db", &up.base_url(), "");
    let (serve, admin_addr, _) = spawn_serve(&old);
    let r = admin(admin_addr, "POST", "/v1/admin/keys/k/revoke", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(10), || chat(remote_dp, KEY, "m").status == 401),
        "the remote data plane still accepts a key revoked on the admin"
    );
    remote.wait_line("the admin restarted");
    assert_eq!(remote.stop(), 0);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn a_committed_limits_change_never_answers_5xx_even_over_rows_an_older_version_wrote_as_floats() {
    let up = mock();
    let gw = AdminGateway::start(&one_provider_config(&up.base_url()));
    // What an older version left behind: sums that overflowed into floats, and
    // a negative from 2^64-1 stored as an i64.
    let db = rusqlite::Connection::open(&gw.db_path).unwrap();
    let minute = switchboard_dataplane::limits::now_unix_ms() as i64 / 60_000;
    db.execute(
        "INSERT INTO usage_minute (minute, org, key_id, model, route, target, requests, errors, cache_hits, estimated, \
         prompt_tokens, completion_tokens, total_tokens, cost_nanos, latency_us) \
         VALUES (?1, 'acme', 'k', 'm', 'm', 'p', 1, 0, 0, 0, 1.0e19, -1, 1.8e19, 9.9e30, 5)",
        [minute],
    )
    .unwrap();
    let audit_before = gw.call("GET", "/v1/admin/audit?limit=1000", None).json()["data"].as_array().unwrap().len();
    let r = gw.call(
        "PUT",
        "/v1/admin/orgs/acme/limits",
        Some(&json!({"quotas": [{"period": "day", "max_usd": 5.0, "max_tokens": 1000}]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let audit_after = gw.call("GET", "/v1/admin/audit?limit=1000", None).json()["data"].as_array().unwrap().len();
    assert_eq!(audit_after, audit_before + 1, "committed once");
    for path in ["/v1/admin/orgs/acme/limits", "/v1/admin/keys/k/limits", "/v1/admin/usage?granularity=total"] {
        let r = gw.call("GET", path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let total = gw.call("GET", "/v1/admin/usage?granularity=total", None).json();
    assert_eq!(total["data"][0]["prompt_tokens"].as_i64(), Some(i64::MAX), "saturated, not wrapped: {total}");
    assert_eq!(total["data"][0]["completion_tokens"].as_i64(), Some(0), "never negative: {total}");
    // And the admin starts on it (quotas are seeded from these rows).
    let dir = gw.stop();
    let gw = AdminGateway::start_in(dir, &one_provider_config(&up.base_url()));
    assert_eq!(gw.call("GET", "/v1/admin/orgs/acme/limits", None).status, 200);
}

#[test]
fn request_log_pages_with_a_stable_cursor_through_rows_of_one_millisecond() {
    let up = mock();
    let gw = AdminGateway::start(&one_provider_config(&up.base_url()));
    let ts = switchboard_dataplane::limits::now_unix_ms();
    let records: Vec<Value> = (0..7)
        .map(|i| {
            json!({
                "uid": format!("same-ms-{i}"), "ts_ms": ts, "request_id": format!("r{i}"), "org": "acme", "key_id": "k",
                "model": "m", "route": "m", "target": "p", "upstream_model": "m", "endpoint": "chat.completions",
                "stream": false, "status": 200, "outcome": "ok", "attempts": 1, "cache_hit": false, "prompt_tokens": 1,
                "completion_tokens": 1, "total_tokens": 2, "estimated": false, "cost_nanos": 0, "latency_us": 1,
                "ttft_us": 1, "upstream_us": 1
            })
        })
        .collect();
    let r = gw.call("POST", "/v1/admin/usage/ingest", Some(&json!({"records": records})));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = gw.call("GET", &format!("/v1/admin/requests?from=0&limit=3{cursor}"), None);
        assert_eq!(page.status, 200, "{}", page.text());
        let rows = page.json()["data"].as_array().unwrap().clone();
        if rows.is_empty() {
            break;
        }
        let last = rows.last().unwrap();
        cursor = format!("&before={}&before_id={}", last["ts_ms"], last["id"].as_str().unwrap());
        seen.extend(rows.iter().map(|r| r["request_id"].as_str().unwrap().to_string()));
    }
    seen.sort();
    assert_eq!(seen, (0..7).map(|i| format!("r{i}")).collect::<Vec<_>>(), "every row exactly once");
    let r = gw.call("GET", "/v1/admin/requests?from=0&before_id=x", None);
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("before_id")));
}

/// Whether the peer closes the connection (after at most a short answer,
/// such as a 408) before the read timeout.
fn closes(c: &mut Conn) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match c.read_raw(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
    false
}

#[test]
fn the_admin_listener_closes_slow_heads_and_idle_connections_and_caps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let prep = switchboard_dataplane::snapshot::Prepare::new(
        switchboard_dataplane::dns::DnsCache::new(),
        switchboard_shared::KeyHasher::unkeyed(),
    );
    let state = switchboard_adminapi::State::open(&dir.path().join("a.db"), prep, None).unwrap();
    state.bootstrap_token(Some(ADMIN_TOKEN)).unwrap();
    let cfg = switchboard_adminapi::AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("a.db"),
        max_body_bytes: 4096,
        tls: None,
        node_heartbeat_ms: 1_000,
        conns: switchboard_adminapi::ConnLimits { head_timeout_ms: 400, max_connections: 3, shutdown_grace_ms: 500 },
        sharing: Default::default(),
    };
    let handle = switchboard_adminapi::start(&cfg, state).unwrap();
    let addr = handle.addr;
    let get = format!("GET /v1/admin/orgs HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");

    // Three connections hold the cap: one half-sent head, two idle after a request.
    let mut half = Conn::open(addr);
    half.send(b"GET /v1/admin/orgs HTTP/1.1\r\nHost: a\r\n");
    let mut idle: Vec<Conn> = (0..2)
        .map(|_| {
            let mut c = Conn::open(addr);
            c.send(get.as_bytes());
            assert_eq!(c.response().status, 200);
            c
        })
        .collect();
    // A fourth is closed at once, without an answer.
    let mut over = Conn::open(addr);
    over.set_timeout(Duration::from_secs(2));
    over.try_send(get.as_bytes());
    let mut buf = [0u8; 64];
    let first = over.read_raw(&mut buf);
    assert!(
        matches!(first, Ok(0)) || first.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the fourth connection was served past the cap: {first:?}"
    );

    // The slow head and the idle ones are closed by the head timeout.
    for c in idle.iter_mut().chain(std::iter::once(&mut half)) {
        c.set_timeout(Duration::from_secs(3));
        assert!(closes(c), "a connection outlived the head/idle timeout");
    }
    // Room again.
    let mut c = Conn::open(addr);
    c.send(get.as_bytes());
    assert_eq!(c.response().status, 200);
    drop(c);

    // A long poll in flight does not hold a stopping admin past its grace.
    let mut poll = Conn::open(addr);
    poll.send(format!("GET /v1/admin/snapshot?after=99&wait_ms=60000 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n").as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    handle.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
}

#[test]
fn patch_null_clears_or_is_refused_never_ignored_and_a_used_route_is_not_deleted() {
    let up = mock();
    let gw = AdminGateway::start(&one_provider_config(&up.base_url()));
    let r = gw.call(
        "PATCH",
        "/v1/admin/routes/m",
        Some(
            &json!({"cache": {"mode": "always", "ttl_ms": 1000}, "retry": {"max_attempts": 3}, "failover_on": ["5xx"]}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.call("PATCH", "/v1/admin/routes/m", Some(&json!({"cache": null, "retry": null, "failover_on": null})));
    assert_eq!(r.status, 200, "{}", r.text());
    let route = r.json();
    assert!(route.get("cache").is_none() || route["cache"]["mode"] == "off", "{route}");
    assert_eq!(route["retry"]["max_attempts"], Value::Null, "{route}");
    assert_eq!(route["failover_on"], Value::Null, "{route}");
    let r = gw.call("PATCH", "/v1/admin/providers/p", Some(&json!({"headers": {"X-Team": "a"}})));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.call("PATCH", "/v1/admin/providers/p", Some(&json!({"headers": null})));
    assert_eq!((r.status, r.json()["headers"].as_object().map(|h| h.len())), (200, Some(0)), "{}", r.text());
    for (path, field) in [
        ("/v1/admin/keys/k", "name"),
        ("/v1/admin/keys/k", "enabled"),
        ("/v1/admin/routes/m", "targets"),
        ("/v1/admin/providers/p", "base_url"),
    ] {
        let r = gw.call("PATCH", path, Some(&json!({field: null})));
        assert_eq!((r.status, r.error()["param"].as_str()), (422, Some(field)), "{path} {field}: {}", r.text());
    }
    // A route a key names by name: 409 naming the key, and nothing changes.
    let r = gw.call("PATCH", "/v1/admin/keys/k", Some(&json!({"models": ["m"]})));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.call("DELETE", "/v1/admin/routes/m", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.error()["message"].as_str().unwrap().contains("`k`") || r.error()["message"].as_str().unwrap().contains(" k"),
        "{}",
        r.text()
    );
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}

#[test]
fn lists_page_alike_and_names_are_checked_as_characters_without_hidden_ones() {
    let up = mock();
    let gw = AdminGateway::start(&one_provider_config(&up.base_url()));
    // Lists: every one takes limit/offset and says next_offset; out of range is 422.
    for name in ["e1", "e2"] {
        let r = gw.call("POST", "/v1/admin/enrollment-tokens", Some(&json!({"org": "acme", "name": name})));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = gw.call("POST", "/v1/admin/enrollment-tokens", Some(&json!({"org": "acme", "name": "e1"})));
    assert_eq!(r.status, 409, "enrollment-token names are unique: {}", r.text());
    let page = gw.call("GET", "/v1/admin/enrollment-tokens?limit=1", None).json();
    assert_eq!((page["data"].as_array().unwrap().len(), page["next_offset"].as_u64()), (1, Some(1)), "{page}");
    let page = gw.call("GET", "/v1/admin/nodes?limit=1", None).json();
    assert!(page.get("next_offset").is_some(), "{page}");
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    let page = gw.call("GET", "/v1/admin/targets?limit=1&offset=5", None).json();
    assert_eq!(page["data"].as_array().unwrap().len(), 0, "{page}");
    for q in ["/v1/admin/requests?limit=5000", "/v1/admin/targets?limit=0", "/v1/admin/orgs?offset=9223372036854775808"]
    {
        let r = gw.call("GET", q, None);
        assert_eq!(r.status, 422, "{q}: {}", r.text());
    }
    let r = gw.call("DELETE", "/v1/admin/usage", None);
    assert_eq!((r.status, r.error()["code"].as_str()), (405, Some("method_not_allowed")), "{}", r.text());
    // Revoke by name, as documented.
    let r = gw.call("POST", "/v1/admin/enrollment-tokens/e2/revoke", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.call("POST", "/v1/admin/tokens", Some(&json!({"name": "dash", "role": "read"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = gw.call("POST", "/v1/admin/tokens/dash/revoke", None);
    assert_eq!((r.status, r.json()["revoked_at"].is_i64()), (200, true), "{}", r.text());

    // Names: characters, not bytes; no hidden characters; an org's name is not another org's id.
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "é".repeat(256)})));
    assert_eq!(r.status, 201, "256 characters are allowed: {}", r.text());
    for bad in ["evil\u{202e}gnp.exe", "zero\u{200b}width", "é".repeat(257).as_str()] {
        let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": bad})));
        assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("name")), "{bad:?}: {}", r.text());
    }
    let acme_id = gw.call("GET", "/v1/admin/orgs/acme", None).json()["id"].as_str().unwrap().to_string();
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": acme_id})));
    assert_eq!(r.status, 409, "{}", r.text());
    let r = gw.call("GET", "/v1/admin/usage?from=2026-02-30", None);
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("from")), "{}", r.text());
}

#[test]
fn a_worker_that_dies_never_looks_healthy_and_the_process_exits_70_within_the_grace_period() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "127.0.0.1:0", "w.db", &up.base_url(), "");
    // Debug builds only: worker 1 panics outside any connection about a second in.
    let mut serve =
        Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], &[("SWITCHBOARD_DEBUG_PANIC_WORKER", "1")]);
    let dp = serve.address("data plane listening on ");
    assert_eq!(chat(dp, KEY, "m").status, 200, "requests in flight");
    serve.wait_line("a data-plane worker died");
    // It drains at once; whatever still answers never says "ok".
    // One connection (the listener may close at any moment: never a second connect).
    if let Ok(mut c) = std::net::TcpStream::connect(dp) {
        use std::io::{Read, Write};
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = c.write_all(&request("GET", "/healthz", None, "", &[]));
        let mut head = [0u8; 12];
        if let Ok(n) = c.read(&mut head) {
            assert!(!head[..n].starts_with(b"HTTP/1.1 200"), "a process with a dead worker looks healthy");
        }
    }
    let started = std::time::Instant::now();
    assert_eq!(serve.wait_exit(Duration::from_secs(40)), 70, "the process must exit non-zero");
    assert!(started.elapsed() < Duration::from_secs(40));
}

#[test]
fn healthz_answers_503_while_a_worker_is_down() {
    let up = mock();
    let gw = AdminGateway::start(&one_provider_config(&up.base_url()));
    assert_eq!(healthz(gw.addr).status, 200);
    gw.metrics().slots[0].down.store(true, std::sync::atomic::Ordering::SeqCst);
    let h = healthz(gw.addr);
    assert_eq!((h.status, h.json()["workers_down"].as_u64()), (503, Some(1)), "{}", h.text());
    assert!(gw.metrics().render().contains("switchboard_workers_down 1"));
}

#[test]
fn an_absurd_timeout_stored_by_an_older_version_does_not_stop_the_start_and_can_be_fixed() {
    let up = mock();
    let cfg = one_provider_config(&up.base_url());
    let gw = AdminGateway::start(&cfg);
    let r = gw.call("POST", "/v1/admin/providers", Some(&json!({"name": "legacy", "base_url": up.base_url()})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = gw.call("POST", "/v1/admin/routes", Some(&json!({"name": "old", "targets": [{"provider": "legacy"}]})));
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = gw.stop();
    // What the old admin API accepted (201) and stored.
    let db = rusqlite::Connection::open(dir.path().join("switchboard.db")).unwrap();
    let n = db
        .execute(
            "UPDATE providers SET spec = replace(spec, '\"connect_timeout_ms\":null', '\"connect_timeout_ms\":18446744073709551615') \
             WHERE name = 'legacy'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let gw = AdminGateway::start_in(dir, &cfg);
    assert_eq!(
        gw.chat(KEY, r#"{"model":"old","messages":[{"role":"user","content":"hi"}]}"#).status,
        200,
        "served, clamped"
    );
    // Until it is fixed, a routing change names the stored value (with its
    // provider) and changes nothing; fixing it works.
    let r = gw.call("PATCH", "/v1/admin/routes/m", Some(&json!({"allow_strategy_header": true})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("connect_timeout_ms")), "{}", r.text());
    assert!(r.error()["message"].as_str().unwrap().contains("legacy"), "{}", r.text());
    let r = gw.call("PATCH", "/v1/admin/providers/legacy", Some(&json!({"connect_timeout_ms": null})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.chat(KEY, r#"{"model":"old","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}

#[test]
fn a_node_whose_server_lists_too_many_models_advertises_the_first_256_and_says_why() {
    let provider = mock();
    let mut models: Vec<String> = (0..300).map(|i| format!("model-{i:03}")).collect();
    models.push("bad\u{202e}name".into());
    let local = mock_with(MockConfig { models, ..MockConfig::default() });
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path(), "127.0.0.1:0", "many.db", &provider.base_url(), "");
    let (serve, admin_addr, _) = spawn_serve(&cfg);
    let r = admin(admin_addr, "POST", "/v1/admin/enrollment-tokens", Some(json!({"org": "acme"})));
    let token = r.json()["secret"].as_str().unwrap().to_string();
    let _agent = spawn_direct_node(admin_addr, local.addr, dir.path(), "big", &token, &[]);
    let mut last = json!(null);
    let online = eventually(Duration::from_secs(15), || {
        let r = admin(admin_addr, "GET", "/v1/admin/nodes/big", None);
        last = if r.status == 200 { r.json() } else { json!({"http": r.status}) };
        last["status"] == "online"
    });
    assert!(online, "{last}");
    assert_eq!(last["models"].as_array().unwrap().len(), 256, "{}", last["models"]);
    assert!(last["message"].as_str().unwrap_or("").contains("advertising 256 of the 301"), "{last}");
    assert_eq!(serve.stop(), 0);
}

/// A node agent in direct mode (listening on a loopback port), enrolling
/// with `token` at the admin on `admin_addr`, in front of the local server at
/// `local`, its identity in `dir`.
fn spawn_direct_node(
    admin_addr: std::net::SocketAddr,
    local: std::net::SocketAddr,
    dir: &std::path::Path,
    name: &str,
    token: &str,
    extra: &[&str],
) -> Proc {
    let admin = format!("http://{admin_addr}");
    let local = format!("http://{local}");
    let identity = dir.join("node.json");
    let mut args = vec!["node", "--admin", &admin, "--local", &local, "--identity", identity.to_str().unwrap()];
    args.extend(["--name", name, "--listen", "127.0.0.1:0", "--enroll", token]);
    args.extend_from_slice(extra);
    Proc::spawn(&args, &[])
}
