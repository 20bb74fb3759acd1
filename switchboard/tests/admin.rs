//! The admin API over real HTTP and a real SQLite file: resources, bad input,
//! secrets, restart, and changes that reach the data plane on the next request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PROVIDER_SECRET: &str = "sk-provider-secret-via-admin-9876";

fn empty_config() -> String {
    "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n".to_string()
}

/// Org, provider (the mock), route `m`, and a key; returns the key's secret.
fn setup(gw: &AdminGateway, base_url: &str) -> String {
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "acme"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = gw.call(
        "POST",
        "/v1/admin/providers",
        Some(&json!({"name": "mock", "base_url": base_url, "api_keys": [PROVIDER_SECRET],
                     "models": [{"name": "m", "prompt_per_mtok": 0.15, "completion_per_mtok": 0.6}]})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = gw.call("POST", "/v1/admin/routes", Some(&json!({"name": "m", "targets": [{"provider": "mock"}]})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = gw.call("POST", "/v1/admin/keys", Some(&json!({"org": "acme", "name": "backend"})));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key_secret"].as_str().unwrap().to_string()
}

#[test]
fn a_key_created_through_the_api_works_on_the_next_request() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    assert_eq!(
        gw.chat("sk-sb-nothing-yet", r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status,
        401
    );
    let secret = setup(&gw, &up.base_url());
    assert!(secret.starts_with("sk-sb-") && secret.len() == 70);
    let r = gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    // The provider key from the API is what the upstream sees.
    assert_eq!(up.recorded()[0].header("authorization"), Some(format!("Bearer {PROVIDER_SECRET}").as_str()));
}

#[test]
fn resources_list_get_update_and_delete() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    setup(&gw, &up.base_url());
    for i in 0..4 {
        assert_eq!(gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": format!("org-{i}")}))).status, 201);
    }
    // Pagination.
    let p1 = gw.call("GET", "/v1/admin/orgs?limit=2", None).json();
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1["next_offset"], 2);
    let p3 = gw.call("GET", "/v1/admin/orgs?limit=2&offset=4", None).json();
    assert_eq!(p3["data"].as_array().unwrap().len(), 1);
    assert_eq!(p3["next_offset"], Value::Null);
    // Get by name or id, update, delete.
    let org = gw.call("GET", "/v1/admin/orgs/org-1", None).json();
    let id = org["id"].as_str().unwrap();
    assert_eq!(gw.call("GET", &format!("/v1/admin/orgs/{id}"), None).json()["name"], "org-1");
    let r = gw.call("PATCH", &format!("/v1/admin/orgs/{id}"), Some(&json!({"name": "org-one"})));
    assert_eq!(r.json()["name"], "org-one");
    assert_eq!(gw.call("DELETE", &format!("/v1/admin/orgs/{id}"), None).status, 200);
    assert_eq!(gw.call("GET", &format!("/v1/admin/orgs/{id}"), None).status, 404);
    // Providers and routes.
    let p = gw.call("GET", "/v1/admin/providers/mock", None).json();
    assert_eq!(p["models"][0]["completion_per_mtok"], 0.6);
    let r = gw.call("PATCH", "/v1/admin/providers/mock", Some(&json!({"read_timeout_ms": 1000})));
    assert_eq!(r.json()["read_timeout_ms"], 1000);
    // A CA "file" that is a device or a FIFO is refused at once (never read:
    // /dev/zero would fill memory, a FIFO would block every admin call).
    let fifo = gw.dir.path().join("ca.fifo");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    for ca in ["/dev/zero".to_string(), fifo.display().to_string()] {
        let body = json!({"ca_file": ca, "base_url": "https://127.0.0.1:1/v1"});
        let r = gw.call("PATCH", "/v1/admin/providers/mock", Some(&body));
        assert_eq!(r.status, 422, "{ca}: {}", r.text());
        assert!(r.text().contains("not a regular file"), "{}", r.text());
    }
    assert_eq!(gw.call("GET", "/v1/admin/routes", None).status, 200, "the admin still answers");
    let routes = gw.call("GET", "/v1/admin/routes", None).json();
    assert_eq!(routes["data"][0]["name"], "m");
    assert_eq!(routes["data"][0]["strategy"], "priority");
    // A provider in use cannot go.
    let r = gw.call("DELETE", "/v1/admin/providers/mock", None);
    assert_eq!((r.status, r.error()["code"].as_str()), (409, Some("conflict")));
    assert_eq!(gw.call("DELETE", "/v1/admin/routes/m", None).status, 200);
    assert_eq!(gw.call("DELETE", "/v1/admin/providers/mock", None).status, 200);
}

#[test]
fn revoke_rotate_and_expiry_apply_to_the_next_request() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    let secret = setup(&gw, &up.base_url());
    let key = gw.call("GET", "/v1/admin/keys?org=acme", None).json()["data"][0].clone();
    let id = key["id"].as_str().unwrap().to_string();
    assert!(key["hint"].as_str().unwrap().ends_with(&secret[secret.len() - 4..]));
    assert!(key.get("key_secret").is_none());

    let r = gw.call("POST", &format!("/v1/admin/keys/{id}/rotate"), None);
    let rotated = r.json()["key_secret"].as_str().unwrap().to_string();
    assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 401);
    assert_eq!(gw.chat(&rotated, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);

    gw.call("PATCH", &format!("/v1/admin/keys/{id}"), Some(&json!({"expires_at": 1})));
    assert_eq!(gw.chat(&rotated, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 401);
    gw.call("PATCH", &format!("/v1/admin/keys/{id}"), Some(&json!({"expires_at": null})));
    assert_eq!(gw.chat(&rotated, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    // An expiry outside 0..=9999-12-31 is refused, as in the file.
    for bad in [json!(-1), json!(i64::MIN), json!(253_402_300_800i64)] {
        let r = gw.call("PATCH", &format!("/v1/admin/keys/{id}"), Some(&json!({"expires_at": bad})));
        assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("expires_at")), "{bad}");
    }
    let r = gw.call("POST", "/v1/admin/keys", Some(&json!({"org": "acme", "name": "neg", "expires_at": -1})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("expires_at")), "{}", r.text());
    assert_eq!(gw.chat(&rotated, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);

    // A key may only name models that exist; then it may use only those.
    let r = gw.call("PATCH", &format!("/v1/admin/keys/{id}"), Some(&json!({"models": ["other"]})));
    assert_eq!(r.status, 422, "{}", r.text());
    gw.call("POST", "/v1/admin/routes", Some(&json!({"name": "m2", "targets": [{"provider": "mock"}]})));
    let r = gw.call("PATCH", &format!("/v1/admin/keys/{id}"), Some(&json!({"models": ["m2"]})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.chat(&rotated, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 404);
    assert_eq!(gw.chat(&rotated, r#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    gw.call("PATCH", &format!("/v1/admin/keys/{id}"), Some(&json!({"models": ["*"]})));

    let r = gw.call("POST", &format!("/v1/admin/keys/{id}/revoke"), None);
    assert_eq!(r.json()["enabled"], false);
    assert_eq!(gw.chat(&rotated, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 401);
}

#[test]
fn bad_input_gets_the_right_status_and_changes_nothing() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    setup(&gw, &up.base_url());
    let audit_len = || gw.call("GET", "/v1/admin/audit?limit=1000", None).json()["data"].as_array().unwrap().len();
    let before = audit_len();

    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "x", "colour": "red"})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("colour")));
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": 5})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("name")), "the field, not the value");
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("name")));
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "acme"})));
    assert_eq!((r.status, r.error()["code"].as_str()), (409, Some("conflict")));
    let r = gw.call("GET", "/v1/admin/keys/key_nope", None);
    assert_eq!(r.status, 404);
    let r = gw.call("POST", "/v1/admin/providers", Some(&json!({"name": "p2", "base_url": "ftp://x"})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("base_url")));
    let r = gw.call("POST", "/v1/admin/routes", Some(&json!({"name": "r2", "targets": [{"provider": "ghost"}]})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("targets[0].provider")));
    let r = gw.call("POST", "/v1/admin/keys", Some(&json!({"org": "nobody", "name": "k"})));
    assert_eq!((r.status, r.error()["param"].as_str()), (422, Some("org")));
    // Not JSON.
    let mut c = Conn::open(gw.admin);
    c.send(format!("POST /v1/admin/orgs HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{{nop", gw.token).as_bytes());
    assert_eq!(c.response().status, 400);
    // Too large: refused from the declared length, before the body is sent.
    let mut c = Conn::open(gw.admin);
    c.send(format!("POST /v1/admin/orgs HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", gw.token).as_bytes());
    let r = c.response();
    assert_eq!((r.status, r.error()["code"].as_str()), (413, Some("request_too_large")));
    // Tokens.
    assert_eq!(gw.call_as("sba-wrong", "GET", "/v1/admin/orgs", None).status, 401);
    let r = gw.call("POST", "/v1/admin/tokens", Some(&json!({"name": "dash", "role": "read"})));
    assert_eq!(r.status, 201);
    let ro = r.json()["token_secret"].as_str().unwrap().to_string();
    assert_eq!(gw.call_as(&ro, "GET", "/v1/admin/orgs", None).status, 200);
    let r = gw.call_as(&ro, "POST", "/v1/admin/orgs", Some(&json!({"name": "nope"})));
    assert_eq!((r.status, r.error()["code"].as_str()), (403, Some("read_only_token")));
    // Only the token creation itself was recorded.
    assert_eq!(audit_len(), before + 1);
    assert_eq!(gw.call("GET", "/v1/admin/orgs/nope", None).status, 404);
}

#[test]
fn secrets_never_come_back_and_the_audit_log_names_the_actor() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    let secret = setup(&gw, &up.base_url());
    gw.call(
        "PATCH",
        "/v1/admin/providers/mock",
        Some(&json!({"api_keys": ["sk-second-secret-key-5555"], "headers": {"x-tenant": "tenant-secret-value"}})),
    );
    let mut all = String::new();
    for path in [
        "/v1/admin/providers",
        "/v1/admin/providers/mock",
        "/v1/admin/keys",
        "/v1/admin/audit?limit=1000",
        "/v1/admin/routes",
        "/v1/admin/tokens",
    ] {
        let r = gw.call("GET", path, None);
        assert_eq!(r.status, 200, "{path}");
        all.push_str(&r.text());
    }
    for s in [PROVIDER_SECRET, "sk-second-secret-key-5555", "tenant-secret-value", secret.as_str(), gw.token.as_str()] {
        assert!(!all.contains(s), "a secret leaked: {s}");
    }
    let p = gw.call("GET", "/v1/admin/providers/mock", None).json();
    assert_eq!(p["api_keys"][0], "...5555", "four characters at most");
    let audit = gw.call("GET", "/v1/admin/audit?resource=provider", None).json();
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["action"], "update");
    assert!(entries[1]["actor"].as_str().unwrap().starts_with("tok_"));
    assert!(entries[1]["change"]["api_keys"].is_object());
    // Filter by time: nothing in the future.
    let future = gw.call("GET", "/v1/admin/audit?since=99999999999999", None).json();
    assert!(future["data"].as_array().unwrap().is_empty());
}

#[test]
fn data_survives_a_restart() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    let secret = setup(&gw, &up.base_url());
    let dir = gw.stop();
    let gw = AdminGateway::start_in(dir, &empty_config());
    assert_eq!(gw.call("GET", "/v1/admin/orgs/acme", None).status, 200);
    assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}

#[test]
fn seeding_the_same_file_twice_changes_nothing() {
    let up = mock();
    let cfg = basic_config(&up.base_url(), "");
    let gw = AdminGateway::start(&cfg);
    assert_eq!(gw.chat(KEY, r#"{"model":"alias","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    let spec = switchboard_shared::Config::parse(&cfg).unwrap().routing();
    let v = gw.state.current().version;
    assert_eq!(gw.state.seed(&spec).unwrap(), 0);
    assert_eq!(gw.state.current().version, v, "no change, no new snapshot");
    let audit = gw.call("GET", "/v1/admin/audit?actor=seed", None).json();
    let kinds: Vec<&str> = audit["data"].as_array().unwrap().iter().map(|e| e["resource"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["provider", "route", "route", "org", "key"]);
    // A changed file is a change.
    let spec2 =
        switchboard_shared::Config::parse(&cfg.replace("name = \"alias\"", "name = \"alias2\"")).unwrap().routing();
    assert_eq!(gw.state.seed(&spec2).unwrap(), 1);
    assert_eq!(gw.chat(KEY, r#"{"model":"alias2","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
}

#[test]
fn a_route_change_moves_the_next_request_and_fails_none_under_load() {
    let a = mock();
    let b = mock();
    let gw = Arc::new(AdminGateway::start(&empty_config()));
    let secret = setup(&gw, &a.base_url());
    gw.call("POST", "/v1/admin/providers", Some(&json!({"name": "b", "base_url": b.base_url()})));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok, secret) = (gw.clone(), stop.clone(), ok.clone(), secret.clone());
        clients.push(std::thread::spawn(move || {
            let mut c = Conn::open(gw.addr);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 5_000 {
                c.send(&request(
                    "POST",
                    "/v1/chat/completions",
                    Some(&secret),
                    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"mock":{"tokens":2}}"#,
                    &[],
                ));
                let r = c.response();
                assert_eq!(r.status, 200, "{}", r.text());
                ok.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        }));
    }
    for round in 0..4 {
        let before = ok.load(Ordering::SeqCst);
        assert!(eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) > before + 20));
        let to = if round % 2 == 0 { "b" } else { "mock" };
        let r = gw.call("PATCH", "/v1/admin/routes/m", Some(&json!({"targets": [{"provider": to}]})));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("no request failed");
    }
    // The last change pointed at `mock` (A): the very next request goes there.
    let (na, nb) = (a.requests(), b.requests());
    assert!(nb > 0);
    assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    assert_eq!((a.requests(), b.requests()), (na + 1, nb));
}

#[test]
fn the_watch_endpoint_long_polls_for_the_next_version() {
    let up = mock();
    let gw = Arc::new(AdminGateway::start(&empty_config()));
    setup(&gw, &up.base_url());
    let v = gw.call("GET", "/v1/admin/snapshot", None).json()["version"].as_u64().unwrap();
    assert_eq!(gw.call("GET", &format!("/v1/admin/snapshot?after={v}&wait_ms=50"), None).status, 204);
    let waiter = {
        let gw = gw.clone();
        std::thread::spawn(move || gw.call("GET", &format!("/v1/admin/snapshot?after={v}&wait_ms=10000"), None))
    };
    std::thread::sleep(Duration::from_millis(100));
    gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "later"})));
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["version"].as_u64(), Some(v + 1));
    assert_eq!(body["spec"]["models"][0]["name"], "m");
    // Read-only tokens may not see provider secrets.
    let ro = gw.call("POST", "/v1/admin/tokens", Some(&json!({"name": "ro", "role": "read"}))).json();
    assert_eq!(
        gw.call_as(ro["token_secret"].as_str().unwrap(), "GET", "/v1/admin/snapshot?wait_ms=1", None).status,
        403
    );
}

#[test]
fn the_openapi_document_covers_every_endpoint_and_resolves() {
    let gw = AdminGateway::start(&empty_config());
    let mut c = Conn::open(gw.admin);
    c.send(b"GET /v1/admin/openapi.json HTTP/1.1\r\nHost: a\r\n\r\n");
    let doc = c.response().json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    // Every endpoint the router serves, and nothing else.
    let served = [
        ("get", "/v1/admin/orgs"),
        ("post", "/v1/admin/orgs"),
        ("get", "/v1/admin/orgs/{id}"),
        ("patch", "/v1/admin/orgs/{id}"),
        ("delete", "/v1/admin/orgs/{id}"),
        ("get", "/v1/admin/keys"),
        ("post", "/v1/admin/keys"),
        ("get", "/v1/admin/keys/{id}"),
        ("patch", "/v1/admin/keys/{id}"),
        ("delete", "/v1/admin/keys/{id}"),
        ("post", "/v1/admin/keys/{id}/rotate"),
        ("post", "/v1/admin/keys/{id}/revoke"),
        ("get", "/v1/admin/providers"),
        ("post", "/v1/admin/providers"),
        ("get", "/v1/admin/providers/{id}"),
        ("patch", "/v1/admin/providers/{id}"),
        ("delete", "/v1/admin/providers/{id}"),
        ("get", "/v1/admin/routes"),
        ("post", "/v1/admin/routes"),
        ("get", "/v1/admin/routes/{id}"),
        ("patch", "/v1/admin/routes/{id}"),
        ("delete", "/v1/admin/routes/{id}"),
        ("get", "/v1/admin/tokens"),
        ("post", "/v1/admin/tokens"),
        ("post", "/v1/admin/tokens/{id}/revoke"),
        ("get", "/v1/admin/audit"),
        ("get", "/v1/admin/snapshot"),
        ("get", "/v1/admin/cluster"),
        ("get", "/v1/admin/targets"),
        ("get", "/v1/admin/usage"),
        ("get", "/v1/admin/usage/top-keys"),
        ("get", "/v1/admin/requests"),
        ("post", "/v1/admin/usage/ingest"),
        ("get", "/v1/admin/keys/{id}/limits"),
        ("put", "/v1/admin/keys/{id}/limits"),
        ("get", "/v1/admin/orgs/{id}/limits"),
        ("put", "/v1/admin/orgs/{id}/limits"),
        ("get", "/v1/admin/enrollment-tokens"),
        ("post", "/v1/admin/enrollment-tokens"),
        ("post", "/v1/admin/enrollment-tokens/{id}/revoke"),
        ("get", "/v1/admin/nodes"),
        ("get", "/v1/admin/nodes/{id}"),
        ("patch", "/v1/admin/nodes/{id}"),
        ("delete", "/v1/admin/nodes/{id}"),
        ("post", "/v1/admin/smoke"),
        ("post", "/v1/admin/console/session"),
        ("get", "/v1/admin/console/session"),
        ("delete", "/v1/admin/console/session"),
        ("get", "/v1/admin/console/overview"),
        ("post", "/v1/admin/console/playground/chat"),
    ];
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), p.clone())))
        .filter(|(m, _)| m != "parameters")
        .collect();
    assert_eq!(documented.len(), served.len(), "{documented:?}");
    for (m, p) in served {
        assert!(paths[p].get(m).is_some(), "{m} {p} is not documented");
        // And the router really serves it (not the fallback, not 405).
        let path = p.replace("{id}", "nonexistent");
        let path = if p.ends_with("snapshot") { format!("{path}?wait_ms=1") } else { path };
        let body = if m == "post" || m == "patch" || m == "put" { Some(json!({})) } else { None };
        let r = gw.call(&m.to_uppercase(), &path, body.as_ref());
        assert_ne!(r.status, 405, "{m} {p}");
        if r.status == 404 {
            assert_ne!(r.error()["code"], "unknown_url", "{m} {p}");
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }
    // Provider secrets are documented as write-only strings, never as a Secret type.
    assert!(schemas.contains_key("ProviderCreate") && !schemas.contains_key("Secret"));
}

#[test]
fn a_locked_database_gives_503_changes_nothing_and_the_data_plane_keeps_serving() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    let secret = setup(&gw, &up.base_url());
    // Another writer holds the database.
    let other = rusqlite::Connection::open(&gw.db_path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "blocked"})));
    assert_eq!((r.status, r.error()["code"].as_str()), (503, Some("storage_unavailable")));
    assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(gw.call("GET", "/v1/admin/orgs/blocked", None).status, 404);
    assert_eq!(gw.call("POST", "/v1/admin/orgs", Some(&json!({"name": "blocked"}))).status, 201);
    // The file is sound.
    let ok: String = other.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn with_a_server_hash_key_keys_and_tokens_are_stored_as_hmacs() {
    let up = mock();
    let hasher = switchboard_shared::KeyHasher::keyed(b"a-server-side-hash-key-0123456789").unwrap();
    // The seed file's key must be hashed with the same key.
    let cfg = basic_config(&up.base_url(), "").replace(&key_hash(KEY), &hasher.hash_str(KEY.as_bytes()));
    let gw = AdminGateway::start_with(tempfile::tempdir().unwrap(), &cfg, hasher.clone());
    assert_eq!(gw.chat(KEY, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    let r = gw.call("POST", "/v1/admin/keys", Some(&json!({"org": "default", "name": "api-made"})));
    let secret = r.json()["key_secret"].as_str().unwrap().to_string();
    assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    let db = rusqlite::Connection::open(&gw.db_path).unwrap();
    let hashes: Vec<String> = db
        .prepare("SELECT hash FROM api_keys UNION ALL SELECT hash FROM admin_tokens")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|h| h.starts_with("hmac-sha256:")), "{hashes:?}");
    assert!(hashes.contains(&hasher.hash_str(secret.as_bytes())));
    // Without the key, the same hashes mean nothing: a plain SHA-256 of the key is not stored.
    assert!(!hashes.iter().any(|h| h.ends_with(&key_hash(KEY)["sha256:".len()..])));
    // A seed file hashed without the server key is refused, naming the field.
    let err = gw.state.seed(&switchboard_shared::Config::parse(&basic_config(&up.base_url(), "")).unwrap().routing());
    assert_eq!(err.unwrap_err().param.as_deref(), Some("hash"));
}

#[test]
fn target_health_is_visible_to_admins() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    let secret = setup(&gw, &up.base_url());
    gw.call("POST", "/v1/admin/providers", Some(&json!({"name": "down", "base_url": format!("http://127.0.0.1:{}/v1", dead_port()), "eject_after_failures": 1})));
    gw.call("PATCH", "/v1/admin/routes/m", Some(&json!({"targets": [{"provider": "down"}, {"provider": "mock"}]})));
    for _ in 0..3 {
        assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    }
    let list = gw.call("GET", "/v1/admin/targets", None).json();
    let by_name = |n: &str| list["data"].as_array().unwrap().iter().find(|t| t["name"] == n).cloned().unwrap();
    let down = by_name("down");
    assert_eq!(down["state"], "open");
    assert_eq!(down["failures"], 1, "ejected after one failure, then skipped");
    let ok = by_name("mock");
    assert_eq!((ok["state"].as_str(), ok["successes"].as_u64()), (Some("closed"), Some(3)));
    assert!(ok["ewma_ttfb_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(ok["error_rate"], 0.0);
}

#[test]
fn provider_secrets_are_encrypted_at_rest_with_a_key_outside_the_database() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    let secret = setup(&gw, &up.base_url());
    gw.call("PATCH", "/v1/admin/providers/mock", Some(&json!({"headers": {"x-tenant": "tenant-secret-value-42"}})));
    // The key still works end to end (decrypted for the data plane)...
    assert_eq!(gw.chat(&secret, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).status, 200);
    assert_eq!(up.recorded()[0].header("authorization"), Some(format!("Bearer {PROVIDER_SECRET}").as_str()));
    // ...but no byte of the database, its WAL included, holds it.
    let mut raw = Vec::new();
    for suffix in ["", "-wal"] {
        let p = format!("{}{suffix}", gw.db_path.display());
        if let Ok(b) = std::fs::read(&p) {
            raw.extend(b);
        }
    }
    assert!(!raw.is_empty());
    for s in [PROVIDER_SECRET, "tenant-secret-value-42"] {
        assert!(raw.windows(s.len()).all(|w| w != s.as_bytes()), "{s} is in the database in the clear");
    }
    let db = rusqlite::Connection::open(&gw.db_path).unwrap();
    let spec: String = db.query_row("SELECT spec FROM providers WHERE name = 'mock'", [], |r| r.get(0)).unwrap();
    assert!(spec.contains("enc:v1:"), "{spec}");
    // The key lives beside the database, private.
    use std::os::unix::fs::PermissionsExt;
    let key = gw.dir.path().join("switchboard.db.key");
    assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
}

/// The limits bodies are the config's one limits block (flattened into the
/// org's): unknown fields are refused and a bad value is named, as before.
#[test]
fn limits_bodies_refuse_unknown_fields_and_name_bad_values() {
    let up = mock();
    let gw = AdminGateway::start(&empty_config());
    setup(&gw, &up.base_url());
    let r = gw.call("POST", "/v1/admin/keys", Some(&json!({"org": "acme", "name": "limited"})));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let key = format!("/v1/admin/keys/{id}/limits");
    for (path, body, param) in [
        (key.as_str(), json!({"rpm": 5, "rpmm": 1}), "rpmm"),
        (key.as_str(), json!({"rpm": "five"}), "rpm"),
        (key.as_str(), json!({"models": []}), "models"),
        ("/v1/admin/orgs/acme/limits", json!({"tpm": 5, "burst": 1}), "burst"),
        ("/v1/admin/orgs/acme/limits", json!({"tpm": -1}), "tpm"),
    ] {
        let r = gw.call("PUT", path, Some(&body));
        assert_eq!((r.status, r.error()["param"].as_str()), (422, Some(param)), "{body}: {}", r.text());
    }
    let body =
        json!({"rpm": 5, "quotas": [{"period": "day", "max_tokens": 100}], "models": [{"model": "m", "tpm": 9}]});
    let r = gw.call("PUT", "/v1/admin/orgs/acme/limits", Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = gw.call("GET", "/v1/admin/orgs/acme/limits", None).json();
    assert_eq!(got["limits"], body, "{got}");
    let r = gw.call("PUT", &key, Some(&json!({"tpm": 7})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.call("GET", &key, None).json()["limits"], json!({"tpm": 7}));
}
