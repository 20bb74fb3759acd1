//! Split mode, with real processes: `switchboard serve` runs the admin API
//! (and its own data plane); `switchboard dataplane --admin URL` runs a second
//! data plane in another process that follows the admin's changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// Only the admin process has the server hash key; the remote data plane gets
/// it with the snapshot.
const HASH_KEY: &str = "split-mode-server-hash-key-0123456789";

#[test]
fn a_data_plane_in_another_process_serves_and_follows_the_admin() {
    let a = mock();
    let b = mock();
    let dir = tempfile::tempdir().unwrap();
    let admin_cfg = dir.path().join("admin.toml");
    std::fs::write(
        &admin_cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"

[[upstreams]]
name = "a"
base_url = "{}"

[[upstreams]]
name = "b"
base_url = "{}"

[[models]]
name = "m"
targets = [{{ upstream = "a" }}]

[[keys]]
id = "split"
hash = "{}"
"#,
            a.base_url(),
            b.base_url(),
            switchboard_shared::KeyHasher::keyed(HASH_KEY.as_bytes()).unwrap().hash_str(KEY.as_bytes())
        ),
    )
    .unwrap();
    let dp_cfg = dir.path().join("dataplane.toml");
    let spill = dir.path().join("dp-usage.spill");
    std::fs::write(
        &dp_cfg,
        format!("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[usage]\nspill_file = \"{}\"\n", spill.display()),
    )
    .unwrap();

    let mut admin =
        Proc::spawn(&["serve", "--config", admin_cfg.to_str().unwrap()], &[("SWITCHBOARD_HASH_KEY", HASH_KEY)]);
    let admin_addr = admin.address("admin API listening on ");
    let mut dp = Proc::spawn(
        &["dataplane", "--admin", &format!("http://{admin_addr}"), "--config", dp_cfg.to_str().unwrap()],
        &[],
    );
    let dp_addr = dp.address("data plane listening on ");

    let served = std::cell::Cell::new(0u64);
    let chat = |addr| {
        if addr == dp_addr {
            served.set(served.get() + 1);
        }
        let mut c = Conn::open(addr);
        c.send(&request(
            "POST",
            "/v1/chat/completions",
            Some(KEY),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        ));
        c.response()
    };
    assert_eq!(chat(dp_addr).status, 200);
    assert_eq!((a.requests(), b.requests()), (1, 0));

    // Move the route through the admin API; the other process follows.
    let body = json!({"targets": [{"provider": "b"}]}).to_string();
    let mut c = Conn::open(admin_addr);
    c.send(
        format!(
            "PATCH /v1/admin/routes/m HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.response().status, 200);
    assert!(
        eventually(Duration::from_secs(10), || {
            assert_eq!(chat(dp_addr).status, 200);
            b.requests() > 0
        }),
        "the data plane did not follow the route change"
    );
    let served_by_a = a.requests();
    assert_eq!(chat(dp_addr).status, 200);
    assert_eq!(a.requests(), served_by_a, "after the switch, traffic goes to b only");

    assert_eq!(dp.stop(), 0, "the data plane exits 0 on SIGTERM");
    // Its usage reached the admin's database (shipped in batches, flushed on exit).
    let mut c = Conn::open(admin_addr);
    c.send(
        format!("GET /v1/admin/usage?granularity=total&group_by=key HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    let report = c.response().json();
    assert_eq!(report["data"][0]["key"], "split");
    assert_eq!(report["data"][0]["requests"].as_u64(), Some(served.get()), "{report}");
    assert!(!spill.exists(), "nothing left to spill");
    assert_eq!(admin.stop(), 0, "serve exits 0 on SIGTERM");
}
