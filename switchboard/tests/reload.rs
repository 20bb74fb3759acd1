//! The routing snapshot reloads live: the next request sees the change and no
//! request in flight fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_dataplane::reload::ReloadError;

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
                let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream},"mock":{{"tokens":4}}}}"#);
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
    assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    assert_eq!((a.requests(), b.requests()), (na + 1, nb));
}

#[test]
fn editing_the_file_is_picked_up_by_the_watcher() {
    let up = mock();
    let gw = Gateway::start(&basic_config(&up.base_url(), ""));
    gw.reloader.spawn_watcher(Duration::from_millis(20)).unwrap();
    assert_eq!(gw.chat(r#"{"model":"new","messages":[{"role":"user","content":"hi"}]}"#).status, 404);
    let cfg = basic_config(&up.base_url(), "").replace("name = \"alias\"", "name = \"new\"");
    std::fs::write(&gw.config_path, cfg).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || gw.reloader.version() == 2),
        "the watcher did not publish the edited file"
    );
    assert_eq!(gw.chat(r#"{"model":"new","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
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
    let ReloadError::Invalid(err) = err else { panic!("expected an invalid file, got {err}") };
    assert_eq!(err.path, "models[0].targets[0].upstream");
    assert_eq!(gw.reloader.version(), 1);
    assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}

#[test]
fn revoking_a_key_takes_effect_on_the_next_request() {
    let up = mock();
    // Another key stays, so the reload does not disable every key (refused).
    let cfg = format!(
        "{}\n[[keys]]\nid = \"other\"\nhash = \"{}\"\n",
        basic_config(&up.base_url(), ""),
        key_hash("sk-other")
    );
    let gw = Gateway::start(&cfg);
    let mut c = gw.conn();
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    assert_eq!(c.response().status, 200);
    gw.reconfigure(&cfg.replace("id = \"test\"", "id = \"test\"\nenabled = false"));
    // Same keep-alive connection, next request: refused.
    c.send(&request(
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    ));
    assert_eq!(c.response().status, 401);
}

/// `switchboard_config_reloads_total{result=...}` from the gateway's `/metrics`.
fn reloads(gw: &Gateway, result: &str) -> u64 {
    let mut c = gw.conn();
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = c.response().text();
    let line = format!("switchboard_config_reloads_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|n| n.parse().ok()).expect("reload counter")
}

#[test]
fn an_empty_or_server_only_file_is_refused_and_counted() {
    let up = mock();
    let cfg = basic_config(&up.base_url(), "");
    let gw = Gateway::start(&cfg);
    let refused = reloads(&gw, "refused");
    for (text, why) in [
        ("", "empty"),
        ("  \n# nothing yet\n", "empty"),
        ("\u{feff}# only a comment\n", "empty"),
        ("[server]\nlisten = \"127.0.0.1:0\"\n", "no enabled [[keys]]"),
        (&cfg[..cfg.find("[[keys]]").unwrap()], "no enabled [[keys]]"),
        (&cfg.replace("id = \"test\"", "id = \"test\"\nenabled = false"), "no enabled [[keys]]"),
    ] {
        std::fs::write(&gw.config_path, text).unwrap();
        match gw.reloader.reload_now() {
            Err(ReloadError::Refused(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("{text:?} was not refused: {other:?}"),
        }
        assert_eq!(gw.reloader.version(), 1);
        assert_eq!(
            gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status,
            200,
            "still served after {text:?}"
        );
    }
    // Counted (other tests in this process may refuse too).
    assert!(reloads(&gw, "refused") >= refused + 6);
    // Removing every model is refused the same way.
    let keys_only =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[[keys]]\nid = \"test\"\nhash = \"{}\"\n", key_hash(KEY));
    std::fs::write(&gw.config_path, &keys_only).unwrap();
    match gw.reloader.reload_now() {
        Err(ReloadError::Refused(msg)) => assert!(msg.contains("no [[models]]"), "{msg}"),
        other => panic!("a file without models was not refused: {other:?}"),
    }
    assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    // Meant: the file says so, and it is applied.
    std::fs::write(&gw.config_path, format!("allow_empty_routing = true\n{keys_only}")).unwrap();
    assert_eq!(gw.reloader.reload_now().unwrap(), 2);
    assert_eq!(gw.chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 404);
}

#[test]
fn truncation_and_a_half_written_file_under_load_fail_no_request() {
    let up = mock();
    // Keys first, so that a prefix of the file is valid TOML that still has
    // keys and the first model but not the second: applied, it would answer
    // 404 for `alias`; cut before the keys, 401.
    let full = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[[keys]]\nid = \"test\"\nhash = \"{}\"\n\n\
         [[upstreams]]\nname = \"up\"\nbase_url = \"{}\"\n\n[[models]]\nname = \"m\"\ntargets = [{{ upstream = \"up\" }}]\n\n\
         [[models]]\nname = \"alias\"\ntargets = [{{ upstream = \"up\" }}]\n",
        key_hash(KEY),
        up.base_url()
    );
    let cut = full.rfind("[[models]]").unwrap();
    let gw = Arc::new(Gateway::start(&full));
    gw.reloader.spawn_watcher(Duration::from_millis(10)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (gw, stop, ok) = (gw.clone(), stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut c = gw.conn();
                let model = if i % 2 == 0 { "m" } else { "alias" };
                // Bounded: at most 20,000 requests per client, and stopped by the test.
                for n in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    c.send(&request(
                        "POST",
                        "/v1/chat/completions",
                        Some(KEY),
                        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
                        &[],
                    ));
                    let r = c.response();
                    assert_eq!(r.status, 200, "request {n} for {model}: {}", r.text());
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let progress = |ok: &AtomicU64| {
        let before = ok.load(Ordering::SeqCst);
        assert!(eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) > before + 50));
    };
    for _ in 0..3 {
        // An editor: truncate, then write the whole file a moment later.
        std::fs::write(&gw.config_path, "").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&gw.config_path, &full).unwrap();
        progress(&ok);
        // A slow deploy tool: the first part now, the rest a moment later
        // (well inside reload_settle_ms, while the watcher polls every 10 ms).
        std::fs::write(&gw.config_path, &full[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&gw.config_path, &full).unwrap();
        progress(&ok);
        // Left truncated for longer than the settle time: refused.
        std::fs::write(&gw.config_path, "").unwrap();
        std::thread::sleep(Duration::from_millis(800));
        progress(&ok);
        std::fs::write(&gw.config_path, &full).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("no client saw a 401 or 404");
    }
    // The same text came back each time: nothing new was ever applied.
    assert_eq!(gw.reloader.version(), 1);
    assert!(reloads(&gw, "refused") >= 3, "the empty file left for 800 ms was refused each time");
}
