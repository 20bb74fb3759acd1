//! Rate limits and quotas over real sockets: GCRA limits shared by every
//! worker, token reservations reconciled with the accounted usage, OpenAI's
//! rate-limit headers, quotas with period boundaries (an injected clock) that
//! survive a restart, and limits changed live through the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

fn config(base_url: &str, key_extra: &str, rest: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[[upstreams]]
name = "up"
base_url = "{base_url}"
prices = [{{ model = "m", prompt_per_mtok = 1000.0, completion_per_mtok = 1000.0 }}]

[[models]]
name = "m"
targets = [{{ upstream = "up" }}]

[[models]]
name = "other"
targets = [{{ upstream = "up" }}]

[[keys]]
id = "k1"
org = "acme"
hash = "{}"
{key_extra}

{rest}
"#,
        key_hash(KEY)
    )
}

fn header_u64(r: &Response, name: &str) -> u64 {
    r.header(name).unwrap_or_else(|| panic!("no {name} in {:?}", r.headers)).parse().unwrap()
}

#[test]
fn an_rpm_limit_admits_exactly_n_from_every_worker_at_once() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), "rpm = 30", ""));
    let ok = AtomicU64::new(0);
    let limited = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (gw, ok, limited) = (&gw, &ok, &limited);
            s.spawn(move || {
                // A connection each: the kernel spreads them over both workers.
                for _ in 0..15 {
                    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
                    match r.status {
                        200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(header_u64(&r, "x-ratelimit-limit-requests"), 30);
                            assert!(r.header("x-ratelimit-reset-requests").is_some());
                        }
                        429 => {
                            limited.fetch_add(1, Ordering::SeqCst);
                            let e = r.error();
                            assert_eq!(e["type"], "rate_limit_error");
                            assert_eq!(e["code"], "rate_limit_exceeded");
                            let msg = e["message"].as_str().unwrap();
                            assert!(msg.contains("requests per minute") && msg.contains("key `k1`"), "{msg}");
                            assert!(header_u64(&r, "retry-after") >= 1);
                            assert_eq!(header_u64(&r, "x-ratelimit-remaining-requests"), 0);
                        }
                        s => panic!("status {s}: {}", r.text()),
                    }
                }
            });
        }
    });
    // 30 per minute admits a burst of 30 and one every 2 s after: the 120
    // requests above take far less than 2 s.
    assert_eq!(ok.load(Ordering::SeqCst), 30);
    assert_eq!(limited.load(Ordering::SeqCst), 90);
    assert_eq!(up.requests(), 30, "refused requests never reach the upstream");
}

#[test]
fn token_limits_reserve_up_front_and_reconcile_with_usage() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), "tpm = 1000", ""));
    // Reserves prompt estimate + 100; uses (mock) about 10 prompt + 5 completion tokens.
    let small = r#"{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"mock":{"tokens":5}}"#;
    // One connection: its worker reconciles a request before it reads the next.
    let mut c = gw.conn();
    let mut send = |body: &str| {
        c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
        c.response()
    };
    let a = send(small);
    assert_eq!(a.status, 200);
    let after_a = header_u64(&a, "x-ratelimit-remaining-tokens");
    assert!((850..=900).contains(&after_a), "{after_a}: 1000 minus the ~101 reserved");
    assert_eq!(header_u64(&a, "x-ratelimit-limit-tokens"), 1000);
    let b = send(small);
    let after_b = header_u64(&b, "x-ratelimit-remaining-tokens");
    // A's unused reservation came back: B's header is ~A's minus A's real use, not minus 101.
    assert!(after_b + 40 > after_a, "reconciled: {after_a} then {after_b}");
    // A request whose reservation alone is over the limit is refused, naming the limit.
    let big = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}"#);
    assert_eq!(big.status, 429);
    assert!(big.error()["message"].as_str().unwrap().contains("tokens per minute"));
    // A burst of long streams cannot overshoot: each reserves 300 (+ prompt).
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..5 {
            let (gw, admitted) = (&gw, &admitted);
            s.spawn(move || {
                let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":300,"mock":{"tokens":3,"interval_ms":50}}"#);
                if r.status == 200 {
                    admitted.fetch_add(1, Ordering::SeqCst);
                } else {
                    assert_eq!(r.status, 429);
                }
            });
        }
    });
    assert!(
        admitted.load(Ordering::SeqCst) <= 3,
        "{} streams of 300 fit in what is left of 1000",
        admitted.load(Ordering::SeqCst)
    );
    assert!(admitted.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_reservation_over_the_whole_limit_saturates_and_is_refused_as_never_passing() {
    let up = mock();
    let gw = Gateway::start(&config(&up.base_url(), "tpm = 3000", ""));
    let mut c = gw.conn();
    for max_tokens in ["18446744073709551615", "18446744073709551613", "100000"] {
        // Concurrent ones too: none may slip through on a wrapped sum.
        let admitted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                let (gw, admitted) = (&gw, &admitted);
                s.spawn(move || {
                    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":true,"max_tokens":{max_tokens}}}"#);
                    let r = gw.chat(&body);
                    if r.status == 200 {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 0, "max_tokens {max_tokens}");
        c.send(&request(
            "POST",
            "/v1/chat/completions",
            Some(KEY),
            &format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#),
            &[],
        ));
        let r = c.response();
        assert_eq!(r.status, 429, "{max_tokens}: {}", r.text());
        let e = r.error();
        assert_eq!(e["code"], "rate_limit_exceeded");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("can never pass") && msg.contains("limit is 3000"), "{msg}");
        assert!(!msg.contains("Retry in"), "{msg}");
        assert_eq!(r.header("retry-after"), None, "waiting cannot help");
        assert_eq!(header_u64(&r, "x-ratelimit-remaining-tokens"), 3000, "nothing was reserved");
    }
    // The budget is whole: a request that fits passes.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2000}"#,
        &[],
    ));
    assert_eq!(c.response().status, 200);
}

#[test]
fn the_tightest_of_key_org_and_org_model_limits_answers() {
    let up = mock();
    let orgs = r#"
[[orgs]]
name = "acme"
rpm = 100
models = [{ model = "m", rpm = 3 }]
"#;
    let gw = Gateway::start(&config(&up.base_url(), "rpm = 50", orgs));
    for _ in 0..3 {
        let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.status, 200);
    }
    let r = gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 429);
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("org `acme` on model `m`"), "{msg}");
    // The key's and the org's budgets were not spent by the refused request;
    // another model still passes.
    let r = gw.chat(r#"{"model":"other","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200);
    assert_eq!(header_u64(&r, "x-ratelimit-limit-requests"), 50, "the key's limit is the tightest here");
    assert_eq!(header_u64(&r, "x-ratelimit-remaining-requests"), 46);
}

fn admin_config(base_url: &str, key_extra: &str) -> String {
    config(base_url, key_extra, "")
}

#[test]
fn a_token_quota_is_refused_with_insufficient_quota_and_resets_at_the_period_boundary() {
    let up = mock();
    let gw = AdminGateway::start(&admin_config(&up.base_url(), "quotas = [{ period = \"day\", max_tokens = 60 }]"));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":8}}"#; // 20 prompt + 8 completion tokens
                                                                                                   // One connection: its worker settles a request before it reads the next.
    let mut c = Conn::open(gw.addr);
    let mut send = |body: &str| {
        c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
        c.response()
    };
    let mut served = 0;
    let refused = loop {
        let r = send(body);
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 10, "the quota never refused");
    };
    assert_eq!(served, 3, "28 + 28 = 56 < 60 admits a third; 84 >= 60 stops the fourth");
    assert_eq!(refused.status, 429);
    let e = refused.error();
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("insufficient_quota"), Some("insufficient_quota")));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("60 tokens per day") && msg.contains("key `k1`") && msg.contains("T00:00:00Z"), "{msg}");
    // The limits endpoint shows it (the refused request is accounted too, with no tokens).
    gw.wait_usage_written(4);
    let lim = gw.call("GET", "/v1/admin/keys/k1/limits", None).json();
    assert_eq!(lim["quotas"][0]["max_tokens"], 60);
    assert_eq!(lim["quotas"][0]["remaining_tokens"], 0);
    // Tomorrow (UTC), the quota is fresh.
    let now_ms = switchboard_dataplane::limits::now_unix_ms() as i64;
    let next_day_ms = (now_ms / 86_400_000 + 1) * 86_400_000 + 1_000;
    switchboard_dataplane::limits::set_clock_offset_ms(next_day_ms - now_ms);
    let r = send(body);
    switchboard_dataplane::limits::set_clock_offset_ms(0);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_spend_cap_is_enforced_and_survives_a_restart() {
    let up = mock();
    // $1000 per million tokens: 28 tokens cost $0.028; cap $0.07 a month.
    let cfg = admin_config(&up.base_url(), "quotas = [{ period = \"month\", max_usd = 0.07 }]");
    let gw = AdminGateway::start(&cfg);
    // 20 prompt + 8 completion tokens.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":8}}"#;
    let send = |gw: &AdminGateway, c: &mut Option<Conn>| {
        let c = c.get_or_insert_with(|| Conn::open(gw.addr));
        c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
        c.response()
    };
    let mut c = None;
    assert_eq!(send(&gw, &mut c).status, 200);
    assert_eq!(send(&gw, &mut c).status, 200);
    gw.wait_usage_written(2);
    let before = gw.call("GET", "/v1/admin/keys/k1/limits", None).json();
    let used = before["quotas"][0]["used_usd"].as_f64().unwrap();
    assert!((0.05..0.07).contains(&used), "{before}");
    // Restart on the same database: the accounted spend is read back.
    let dir = gw.stop();
    let gw = AdminGateway::start_in(dir, &cfg);
    let after = gw.call("GET", "/v1/admin/keys/k1/limits", None).json();
    assert_eq!(after["quotas"][0]["used_usd"], before["quotas"][0]["used_usd"]);
    let mut c = None;
    assert_eq!(send(&gw, &mut c).status, 200, "0.056 < 0.07: one more");
    let r = send(&gw, &mut c);
    assert_eq!(r.status, 429, "0.084 >= 0.07 after the restart too");
    assert!(r.error()["message"].as_str().unwrap().contains("spend cap of $0.07 per month"));
    gw.wait_usage_written(2);
    let metrics = gw.metrics().render();
    assert!(metrics.contains("switchboard_quota_refused_total 1\n"), "{metrics}");
}

#[test]
fn a_quota_counts_what_requests_in_flight_hold() {
    let up = mock();
    let gw = AdminGateway::start(&admin_config(&up.base_url(), "quotas = [{ period = \"day\", max_tokens = 500 }]"));
    // Each stream holds its prompt estimate + 300 tokens while it runs (about 300 ms).
    let admitted = AtomicU64::new(0);
    // All four at once, so none starts after another has ended.
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (gw, admitted, start) = (&gw, &admitted, &start);
            s.spawn(move || {
                let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":300,"mock":{"tokens":3,"interval_ms":150}}"#;
                start.wait();
                let r = gw.chat(KEY, body);
                if r.status == 200 {
                    admitted.fetch_add(1, Ordering::SeqCst);
                } else {
                    assert_eq!(r.error()["code"], "insufficient_quota");
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::SeqCst), 2, "0 + 300 < 500 admits two; 600 >= 500 refuses the rest");
    // Once they ended (and were reconciled, just after their last byte), only
    // what they used counts: room again.
    assert!(eventually(std::time::Duration::from_secs(5), || gw
        .chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#)
        .status
        == 200));
}

#[test]
fn limits_changed_through_the_admin_api_apply_to_the_next_request() {
    let up = mock();
    let gw = AdminGateway::start(&admin_config(&up.base_url(), ""));
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    let r = gw.call("PUT", "/v1/admin/keys/k1/limits", Some(&json!({"rpm": 1})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["limits"]["rpm"], 1);
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 429);
    let lim = gw.call("GET", "/v1/admin/keys/k1/limits", None).json();
    assert_eq!((lim["requests"]["limit"].as_u64(), lim["requests"]["remaining"].as_u64()), (Some(1), Some(0)));
    // Org limits too, per model; a bad one is refused with the field named.
    let r = gw.call("PUT", "/v1/admin/orgs/acme/limits", Some(&json!({"models": [{"model": "nope", "rpm": 5}]})));
    assert_eq!(r.status, 422);
    let r = gw.call("PUT", "/v1/admin/orgs/acme/limits", Some(&json!({"rpm": 0})));
    assert_eq!(r.status, 422);
    let r = gw.call(
        "PUT",
        "/v1/admin/orgs/acme/limits",
        Some(&json!({"tpm": 100000, "models": [{"model": "m", "rpm": 7}]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["models"][0]["requests"]["limit"], 7);
    // Lifting the key's limit lets traffic through again; the change is audited.
    assert_eq!(gw.call("PUT", "/v1/admin/keys/k1/limits", Some(&json!({}))).status, 200);
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    let audit = gw.call("GET", "/v1/admin/audit?resource=key", None).json();
    assert!(audit["data"].as_array().unwrap().iter().any(|e| e["change"]["limits"]["to"]["rpm"] == 1));
}
