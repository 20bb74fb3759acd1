//! Scale-out on Redis (`[cluster]`, docs/scale-out.md), with real processes:
//! one `switchboard serve` (admin API and a data plane) and two
//! `switchboard dataplane --admin URL`, one real `redis-server`, the mock
//! upstream. Limits and quotas hold across all three processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard_loadtests::MockHandle;

struct Planes {
    /// serve, then the remote data planes.
    addrs: Vec<SocketAddr>,
    admin: SocketAddr,
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

/// One `serve` with `[cluster]` and `routing` (keys, orgs), and `remotes`
/// data planes following it (they get `[cluster]` from the admin).
fn start(mock: &MockHandle, redis: &Redis, cluster: &str, routing: &str, remotes: usize) -> Planes {
    start_with_cluster(mock, &format!("redis_url = \"{}\"\n{cluster}", redis.url()), routing, remotes, &[])
}

/// As [`start`], with all of `[cluster]` but the test timings given.
fn start_with_cluster(mock: &MockHandle, cluster: &str, routing: &str, remotes: usize, env: &[(&str, &str)]) -> Planes {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("admin.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2
metrics = true

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"

[usage]
flush_interval_ms = 20

[cluster]
probe_interval_ms = 100
command_timeout_ms = 300
{cluster}

[[upstreams]]
name = "mock"
base_url = "{}"
prices = [{{ model = "m", prompt_per_mtok = 1000.0, completion_per_mtok = 1000.0 }}]

[[models]]
name = "m"
targets = [{{ upstream = "mock" }}]

{routing}
"#,
            mock.base_url(),
        ),
    )
    .unwrap();
    let mut admin = Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], env);
    let admin_addr = admin.address("admin API listening on ");
    let mut addrs = vec![admin.address("data plane listening on ")];
    let mut procs = vec![admin];
    for i in 0..remotes {
        let dp_cfg = dir.path().join(format!("dp{i}.toml"));
        let spill = dir.path().join(format!("dp{i}.spill"));
        std::fs::write(
            &dp_cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nmetrics = true\n\n[usage]\nflush_interval_ms = 20\nspill_file = \"{}\"\n",
                spill.display()
            ),
        )
        .unwrap();
        let mut dp = Proc::spawn(
            &["dataplane", "--admin", &format!("http://{admin_addr}"), "--config", dp_cfg.to_str().unwrap()],
            env,
        );
        addrs.push(dp.address("data plane listening on "));
        procs.push(dp);
    }
    Planes { addrs, admin: admin_addr, _procs: procs, _dir: dir }
}

fn chat_at(addr: SocketAddr, key: &str, body: &str) -> Response {
    let mut c = Conn::open(addr);
    c.set_timeout(Duration::from_secs(10));
    c.send(&request("POST", "/v1/chat/completions", Some(key), body, &[]));
    c.response()
}

const HI: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn admin_get(p: &Planes, path: &str) -> serde_json::Value {
    let mut c = Conn::open(p.admin);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n").as_bytes());
    c.response().json()
}

/// `n` requests through every data plane at once (`conns` connections each);
/// the responses.
fn hammer(p: &Planes, key: &str, body: &str, n: usize, conns: usize) -> Vec<Response> {
    std::thread::scope(|s| {
        let handles: Vec<_> = p
            .addrs
            .iter()
            .flat_map(|a| (0..conns).map(move |_| *a))
            .map(|addr| {
                s.spawn(move || {
                    let mut c = Conn::open(addr);
                    c.set_timeout(Duration::from_secs(10));
                    (0..n / conns)
                        .map(|_| {
                            c.send(&request("POST", "/v1/chat/completions", Some(key), body, &[]));
                            c.response()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn count(rs: &[Response], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

#[test]
fn a_key_limit_is_exact_across_three_data_planes() {
    let mock = mock();
    let redis = Redis::start();
    let routing = format!("[[keys]]\nid = \"k1\"\nhash = \"{}\"\nrpm = 60\n", key_hash(KEY));
    let p = start(&mock, &redis, "", &routing, 2);
    let t0 = Instant::now();
    let rs = hammer(&p, KEY, HI, 60, 4);
    let elapsed = t0.elapsed();
    assert_eq!(rs.len(), 180);
    let ok = count(&rs, 200);
    let limited = count(&rs, 429);
    // GCRA: a burst of 60, then one a second.
    assert!(ok >= 60 && ok as u64 <= 60 + elapsed.as_secs(), "{ok} admitted in {elapsed:?} (limit 60 per minute)");
    assert_eq!(ok + limited, 180, "every other request is a 429");
    for r in rs.iter().filter(|r| r.status == 429) {
        assert_eq!(r.error()["code"], "rate_limit_exceeded");
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("60"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
        assert!(r.header("x-ratelimit-reset-requests").is_some());
        assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    }
    for r in rs.iter().filter(|r| r.status == 200) {
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("60"));
    }
    let status = admin_get(&p, "/v1/admin/cluster");
    assert_eq!(status["state"], "up", "{status}");
    assert_eq!(status["enabled"], true);
}

#[test]
fn an_org_token_limit_reserves_and_reconciles_across_data_planes() {
    // Each request reserves its prompt estimate + max_tokens (1000) while
    // it runs, and uses far fewer (the mock answers 16 tokens).
    let mock = mock();
    let redis = Redis::start();
    let routing = format!(
        "[[orgs]]\nname = \"acme\"\ntpm = 3100\n\n[[keys]]\nid = \"k1\"\norg = \"acme\"\nhash = \"{}\"\n",
        key_hash(KEY)
    );
    let p = start(&mock, &redis, "", &routing, 2);
    let slow =
        r#"{"model":"m","max_tokens":1000,"mock":{"delay_ms":1500},"messages":[{"role":"user","content":"hi"}]}"#;
    // 9 at once, 3 per data plane, all in flight together: 3 reservations fit.
    let rs = hammer(&p, KEY, slow, 3, 3);
    assert_eq!(count(&rs, 200), 3, "3 x ~1000 of 3100 fit: {:?}", rs.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in rs.iter().filter(|r| r.status == 429) {
        assert!(r.error()["message"].as_str().unwrap().contains("tokens per minute (TPM) on org `acme`"));
        assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("3100"));
    }
    // They ended using ~30 tokens each: the rest came back, so three more
    // fit at once again (without reconcile, the limit would be spent).
    let fast = r#"{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    // Reconciles go out with the worker's next command or within a few ms
    // (a request on another process in that instant can still see a
    // reservation): soon every reservation is back but the running one's.
    let mut c = Conn::open(p.addrs[1]);
    let mut made = 3u64;
    let mut last = 0;
    let back = eventually(Duration::from_secs(3), || {
        c.send(&request("POST", "/v1/chat/completions", Some(KEY), fast, &[]));
        let r = c.response();
        made += 1;
        if r.status == 429 {
            return false; // the three reconciles are still on their way
        }
        assert_eq!(r.status, 200, "{}", r.text());
        last = r.header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap();
        // Used: ~35 tokens per finished request; held: this one's ~1005.
        assert!(last <= 3100 - 1000, "remaining {last}: this request's reservation is held");
        last >= 3100 - made * 40 - 1010
    });
    assert!(back, "reservations did not come back: remaining {last} after {made} requests");
}

#[test]
fn a_daily_spend_cap_reached_through_one_plane_refuses_in_the_others() {
    let mock = mock();
    let redis = Redis::start();
    // 1000 USD per million tokens: a request of ~30 tokens costs ~$0.03.
    let routing = format!(
        "[[keys]]\nid = \"k1\"\nhash = \"{}\"\nquotas = [{{ period = \"day\", max_usd = 0.1 }}]\n",
        key_hash(KEY)
    );
    let p = start(&mock, &redis, "", &routing, 2);
    let small = r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut admitted = 0;
    loop {
        let r = chat_at(p.addrs[0], KEY, small);
        if r.status != 200 {
            assert_eq!(r.status, 429);
            assert_eq!(r.error()["code"], "insufficient_quota", "{}", r.text());
            break;
        }
        admitted += 1;
        assert!(admitted < 20, "the cap never refused");
    }
    assert!(admitted >= 3, "{admitted}");
    for addr in &p.addrs[1..] {
        let r = chat_at(*addr, KEY, small);
        assert_eq!(r.status, 429, "{}", r.text());
        let e = r.error();
        assert_eq!(e["type"], "insufficient_quota");
        assert!(e["message"].as_str().unwrap().contains("spend cap of $0.10 per day for key `k1`"), "{e}");
    }
}

/// Redis killed mid-run, per `on_redis_down`: what limited requests get,
/// that none waits past the command timeout, and that limits are exact
/// again within a second of Redis coming back.
fn redis_down(mode: &str) {
    let mock = mock();
    let mut redis = Redis::start();
    let routing = format!("[[keys]]\nid = \"k1\"\nhash = \"{}\"\nrpm = 5\n", key_hash(KEY));
    let p = start(&mock, &redis, &format!("on_redis_down = \"{mode}\""), &routing, 1);
    assert_eq!(chat_at(p.addrs[0], KEY, HI).status, 200);
    redis.kill();
    let t0 = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let started = Instant::now();
        let r = chat_at(p.addrs[i % 2], KEY, HI);
        assert!(started.elapsed() < Duration::from_millis(1500), "a request waited {:?}", started.elapsed());
        if r.status == 503 {
            assert_eq!(r.error()["code"], "limits_unavailable", "{}", r.text());
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        if mode == "allow" {
            assert!(r.header("x-ratelimit-limit-requests").is_none(), "no limit was checked");
        }
        statuses.push(r.status);
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
    let ok = statuses.iter().filter(|s| **s == 200).count();
    match mode {
        // Each process's own limit of 5 (the serve process used 1 through Redis... or not at all).
        "local" => assert!((5..=10).contains(&ok), "{statuses:?}"),
        "deny" => assert_eq!(ok, 0, "{statuses:?}"),
        "allow" => assert_eq!(ok, 12, "{statuses:?}"),
        _ => unreachable!(),
    }
    redis.restart();
    let back = Instant::now();
    // Within a second, both planes admit through Redis again: exactly 5 of a fresh limit.
    assert!(eventually(Duration::from_secs(1), || {
        let mut c = Conn::open(p.addrs[1]);
        c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        c.response().text().contains("switchboard_cluster_redis_up 1")
    }));
    assert!(eventually(Duration::from_secs(1), || {
        let mut c = Conn::open(p.addrs[0]);
        c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        c.response().text().contains("switchboard_cluster_redis_up 1")
    }));
    assert!(back.elapsed() < Duration::from_millis(1500), "{:?}", back.elapsed());
    let rs = hammer(&p, KEY, HI, 8, 2);
    assert_eq!(count(&rs, 200), 5, "{:?}", rs.iter().map(|r| r.status).collect::<Vec<_>>());
    let m = {
        let mut c = Conn::open(p.addrs[0]);
        c.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        c.response().text()
    };
    assert!(m.contains("switchboard_cluster_transitions_total{to=\"down\"} 1"), "{m}");
    assert!(m.contains(&format!("switchboard_cluster_fallback_total{{mode=\"{mode}\"}}")), "{m}");
}

#[test]
fn redis_down_local_falls_back_to_per_process_limits() {
    redis_down("local");
}

#[test]
fn redis_down_deny_refuses_limited_requests_with_503() {
    redis_down("deny");
}

#[test]
fn redis_down_allow_admits_without_limits() {
    redis_down("allow");
}

#[test]
fn redis_restarted_empty_gets_quotas_reseeded_from_the_database() {
    let mock = mock();
    let mut redis = Redis::start();
    // A daily token cap of 200; a request uses ~30 and holds its reservation
    // (~21 with max_tokens 16) while it runs.
    let routing = format!(
        "[[keys]]\nid = \"k1\"\nhash = \"{}\"\nquotas = [{{ period = \"day\", max_tokens = 200 }}]\n",
        key_hash(KEY)
    );
    let p = start(&mock, &redis, "on_redis_down = \"deny\"", &routing, 1);
    let small = r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut admitted = 0;
    while chat_at(p.addrs[admitted % 2], KEY, small).status == 200 {
        admitted += 1;
        assert!(admitted < 50);
    }
    // Every admitted request is in the database before Redis loses its data.
    assert!(eventually(Duration::from_secs(5), || {
        let u = admin_get(&p, "/v1/admin/usage?granularity=total&group_by=key");
        u["data"].as_array().and_then(|d| d.first()).and_then(|r| r["requests"].as_u64()) >= Some(admitted as u64 + 1)
    }));
    let before = admin_get(&p, "/v1/admin/cluster")["quotas_reseeded"].as_u64().unwrap();
    redis.restart();
    // Until the admin has seeded the empty counter, deny answers 503; after,
    // the cap refuses as before. Never a 200: over-admission is 0 here.
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let r = chat_at(p.addrs[seen.len() % 2], KEY, small);
        assert_ne!(r.status, 200, "admitted past the cap after the restart: {}", r.text());
        seen.push(r.status);
        if r.status == 429 && chat_at(p.addrs[(seen.len() + 1) % 2], KEY, small).status == 429 {
            assert_eq!(r.error()["code"], "insufficient_quota");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "not re-seeded: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(redis.cmd(&["EXISTS", "nonexistent"]), ":0");
    let after = admin_get(&p, "/v1/admin/cluster")["quotas_reseeded"].as_u64().unwrap();
    assert!(after > before, "the admin re-seeded ({before} -> {after})");
}

#[test]
fn the_shared_cache_answers_across_data_planes_and_falls_back_to_local() {
    let mock = mock();
    let mut redis = Redis::start();
    let routing = format!("[[keys]]\nid = \"k1\"\nhash = \"{}\"\n", key_hash(KEY));
    let p = start(&mock, &redis, "", &routing, 2);
    // Route the model with the shared cache on (the admin API, as a user would).
    let body = serde_json::json!({"cache": {"mode": "always", "ttl_ms": 60000, "shared": true}}).to_string();
    let mut c = Conn::open(p.admin);
    c.send(
        format!(
            "PATCH /v1/admin/routes/m HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let prompt = r#"{"model":"m","messages":[{"role":"user","content":"shared across planes"}]}"#;
    assert!(eventually(Duration::from_secs(5), || chat_at(p.addrs[1], KEY, prompt)
        .header("x-switchboard-cache")
        .is_some()));
    let upstream_calls = mock.requests();
    // Answered through one plane (stored in Redis as its answer goes out):
    // a hit through the others, the same answer.
    let first = chat_at(p.addrs[1], KEY, prompt);
    assert!(eventually(Duration::from_secs(2), || redis.cmd(&["DBSIZE"]) == ":1"));
    for addr in [p.addrs[0], p.addrs[2]] {
        let r = chat_at(addr, KEY, prompt);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-switchboard-cache"), Some("hit"), "{}", r.text());
        assert_eq!(r.json()["choices"], first.json()["choices"]);
    }
    assert_eq!(mock.requests(), upstream_calls, "no upstream call for a shared hit");
    // A streamed replay of a prompt stored through another plane.
    let other = r#"{"model":"m","messages":[{"role":"user","content":"streamed from the shared tier"}]}"#;
    assert_eq!(chat_at(p.addrs[0], KEY, other).header("x-switchboard-cache"), Some("miss"));
    assert!(eventually(Duration::from_secs(2), || redis.cmd(&["DBSIZE"]) == ":2"));
    let streamed =
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"streamed from the shared tier"}]}"#;
    let r = chat_at(p.addrs[2], KEY, streamed);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchboard-cache"), Some("hit"));
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(events.iter().any(|e| e.contains("\"content\"")), "{events:?}");
    // Redis down: the local cache alone, and no errors.
    redis.kill();
    let fresh = r#"{"model":"m","messages":[{"role":"user","content":"while redis is down"}]}"#;
    for (i, addr) in p.addrs.iter().enumerate() {
        let started = Instant::now();
        let r = chat_at(*addr, KEY, fresh);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-switchboard-cache"), Some("miss"), "plane {i}");
        assert!(started.elapsed() < Duration::from_millis(1500));
        let again = chat_at(*addr, KEY, fresh);
        assert_eq!(again.status, 200);
        assert_eq!(again.header("x-switchboard-cache"), Some("hit"), "plane {i}: the local tier");
    }
    // What was copied locally before still answers.
    assert_eq!(chat_at(p.addrs[0], KEY, prompt).header("x-switchboard-cache"), Some("hit"));
}

#[test]
fn rediss_with_a_password_shares_limits_over_tls() {
    let mock = mock();
    let redis = Redis::start_tls("s3cret-redis-password");
    let (tls_port, ca) = redis.tls.clone().unwrap();
    let routing = format!("[[keys]]\nid = \"k1\"\nhash = \"{}\"\nrpm = 4\n", key_hash(KEY));
    // The admin's [cluster] names where the password is read: the remote
    // data plane reads the same variable from its own environment.
    let cluster = format!(
        "redis_url = \"rediss://127.0.0.1:{tls_port}\"\npassword_env = \"SB_TEST_REDIS_PASSWORD\"\nca_file = \"{}\"\non_redis_down = \"deny\"",
        ca.display()
    );
    let env = [("SB_TEST_REDIS_PASSWORD", "s3cret-redis-password")];
    let p = start_with_cluster(&mock, &cluster, &routing, 1, &env);
    let rs = hammer(&p, KEY, HI, 4, 2);
    assert_eq!(count(&rs, 200), 4, "{:?}", rs.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(count(&rs, 429), 4);
    assert_eq!(count(&rs, 503), 0, "deny would answer 503 if Redis could not be reached");
    let status = admin_get(&p, "/v1/admin/cluster");
    assert_eq!(status["state"], "up", "{status}");
    assert!(!status.to_string().contains("s3cret"), "the password never shows");
    // It went over TLS with the password: the limit's key is in Redis.
    assert_eq!(redis.cmd(&["EXISTS", "sb:{default}:rl:key `k1`:r"]), ":1");
}
