//! The routing snapshot reloads live: the next request sees the change and no
//! request in flight fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_reload_under_traffic_fails_no_request_and_moves_the_next_ones() {
    let a = mock();
    let b = mock();
    let gw = Arc::new(Gateway::start(&basic_config(&a.base_url(), "")));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (gw, stop, ok) = (gw.clone(), stop.clone(), ok.clone());
        clients.push(std::thread::spawn(move || {
            let mut c = gw.conn();
            let mut n = 0;
            // Bounded: at most 5,000 requests per client, and stopped by the test.
            while !stop.load(Ordering::SeqCst) && n < 5_000 {
                let stream = (n + i) % 3 == 0;
                let body = format!(r#"{{"model":"m","stream":{stream},"mock":{{"tokens":4}}}}"#);
                c.send(&request("POST", "/v1/chat/completions", Some(KEY), &body, &[]));
                let r = c.response();
                assert_eq!(r.status, 200, "request {n} failed: {}", r.text());
                if stream {
                    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
                }
                ok.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        }));
    }
    let cfg_a = basic_config(&a.base_url(), "");
    let cfg_b = basic_config(&b.base_url(), "");
    let mut version = 1;
    for round in 0..6 {
        let before = ok.load(Ordering::SeqCst);
        assert!(eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) > before + 20));
        version = gw.reconfigure(if round % 2 == 0 { &cfg_b } else { &cfg_a });
    }
    let before = ok.load(Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) > before + 20));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("no client saw a failure");
    }
    assert_eq!(version, 7);
    assert!(a.requests() > 0 && b.requests() > 0);
    // After the last swap (to A), the very next request goes to A.
    let (na, nb) = (a.requests(), b.requests());
    assert_eq!(gw.chat(r#"{"model":"m"}"#).status, 200);
    assert_eq!((a.requests(), b.requests()), (na + 1, nb));
}

#[test]
fn editing_the_file_is_picked_up_by_the_watcher() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    gw.reloader.spawn_watcher(Duration::from_millis(20)).unwrap();
    assert_eq!(gw.chat(r#"{"model":"new"}"#).status, 404);
    let cfg = basic_config(&up.base_url(), "").replace("name = \"alias\"", "name = \"new\"");
    std::fs::write(&gw.config_path, cfg).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || gw.reloader.version() == 2),
        "the watcher did not publish the edited file"
    );
    assert_eq!(gw.chat(r#"{"model":"new"}"#).status, 200);
    let mut c = gw.conn();
    c.send(&request("GET", "/healthz", None, "", &[]));
    assert_eq!(c.response().json()["snapshot_version"], 2);
}

#[test]
fn a_bad_file_keeps_the_running_snapshot() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    std::fs::write(&gw.config_path, "[[models]]\nname = \"x\"\ntargets = [{ upstream = \"missing\" }]\n").unwrap();
    let err = gw.reloader.reload_now().unwrap_err();
    assert_eq!(err.path, "models[0].targets[0].upstream");
    assert_eq!(gw.reloader.version(), 1);
    assert_eq!(gw.chat(r#"{"model":"m"}"#).status, 200);
}

#[test]
fn revoking_a_key_takes_effect_on_the_next_request() {
    let up = mock();
    let cfg = basic_config(&up.base_url(), "");
    let gw = Gateway::start(&cfg);
    let mut c = gw.conn();
    c.send(&request("POST", "/v1/chat/completions", Some(KEY), r#"{"model":"m"}"#, &[]));
    assert_eq!(c.response().status, 200);
    gw.reconfigure(&cfg.replace("id = \"test\"", "id = \"test\"\nenabled = false"));
    // Same keep-alive connection, next request: refused.
    c.send(&request("POST", "/v1/chat/completions", Some(KEY), r#"{"model":"m"}"#, &[]));
    assert_eq!(c.response().status, 401);
}
