//! The listen address, with real processes: a second gateway on an address
//! another one serves refuses to start (the kernel would otherwise split the
//! connections between the two without a word), unless a hand-over is asked
//! for; `check` and `serve` refuse the files a reload would refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// A gateway config: data plane on `listen`, model `m` routed to `upstream`,
/// and (with `admin`) the admin API on that address.
fn config(listen: &str, upstream: &str, admin: Option<&str>) -> String {
    let admin = admin.map_or(String::new(), |a| format!("[admin]\nlisten = \"{a}\"\ndatabase = \"sb.db\"\n"));
    format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 2\n\n{admin}\n[[upstreams]]\nname = \"up\"\nbase_url = \"{upstream}\"\n\n\
         [[models]]\nname = \"m\"\ntargets = [{{ upstream = \"up\" }}]\n\n[[keys]]\nid = \"k\"\nhash = \"{}\"\n",
        key_hash(KEY)
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `n` requests, each on a new connection; how many were answered 200.
fn chats(addr: std::net::SocketAddr, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            let mut c = Conn::open(addr);
            c.send(&request(
                "POST",
                "/v1/chat/completions",
                Some(KEY),
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                &[],
            ));
            c.response().status == 200
        })
        .count()
}

#[test]
fn a_second_gateway_on_a_served_address_refuses_to_start() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "first.toml", &config("127.0.0.1:0", &a.base_url(), Some("127.0.0.1:0")));
    let mut p1 = Proc::spawn(&["serve", "--config", &first], &[]);
    let addr = p1.address("data plane listening on ");
    let admin = p1.address("admin API listening on ");

    // The same data-plane address, exactly and through the wildcard address.
    let second = tempfile::tempdir().unwrap();
    for listen in [addr.to_string(), format!("0.0.0.0:{}", addr.port())] {
        let path = write(second.path(), "second.toml", &config(&listen, &b.base_url(), None));
        let mut p2 = Proc::spawn(&["serve", "--config", &path], &[]);
        assert_eq!(p2.wait_exit(Duration::from_secs(30)), 73, "a second gateway on {listen} must not start");
        let line = p2.wait_line("is in use");
        assert!(line.contains("--handover"), "{line}");
    }
    // The same admin address (its data plane elsewhere), and the same
    // database with a route of its own: refused before it writes anything.
    let db = dir.path().join("sb.db");
    let other = config("127.0.0.1:0", &b.base_url(), Some(&admin.to_string()))
        .replace("database = \"sb.db\"", &format!("database = \"{}\"", db.display()))
        .replace("name = \"m\"", "name = \"from-the-second\"");
    let path = write(second.path(), "admin.toml", &other);
    let mut p3 = Proc::spawn(&["serve", "--config", &path], &[]);
    assert_eq!(p3.wait_exit(Duration::from_secs(30)), 73);
    p3.wait_line("is in use");
    let mut c = Conn::open(admin);
    c.send(
        format!("GET /v1/admin/routes HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n").as_bytes(),
    );
    let routes = c.response().text();
    assert!(routes.contains("\"m\"") && !routes.contains("from-the-second"), "{routes}");
    // A remote data plane too.
    let dp = write(second.path(), "dp.toml", &format!("[server]\nlisten = \"{addr}\"\nworkers = 1\n"));
    let mut p4 = Proc::spawn(&["dataplane", "--admin", &format!("http://{admin}"), "--config", &dp], &[]);
    assert_eq!(p4.wait_exit(Duration::from_secs(30)), 73);

    // The first gateway still has every connection.
    assert_eq!(chats(addr, 20), 20);
    assert_eq!((a.requests(), b.requests()), (20, 0));
    assert_eq!(p1.stop(), 0);
}

#[test]
fn a_handover_shares_the_address_until_the_old_gateway_drains() {
    let (a, b) = (mock(), mock());
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", &config("127.0.0.1:0", &a.base_url(), Some("127.0.0.1:0")));
    let mut p1 = Proc::spawn(&["serve", "--config", &old], &[]);
    let addr = p1.address("data plane listening on ");
    let admin = p1.address("admin API listening on ");

    let next = tempfile::tempdir().unwrap();
    let new = write(next.path(), "new.toml", &config(&addr.to_string(), &b.base_url(), Some(&admin.to_string())));
    let mut p2 = Proc::spawn(&["serve", "--config", &new, "--handover"], &[]);
    let line = p2.wait_line("hand-over: sharing");
    assert!(line.contains(&addr.to_string()), "{line}");
    assert_eq!(p2.address("data plane listening on "), addr);

    // Both serve: the kernel spreads new connections over four listeners.
    assert_eq!(chats(addr, 60), 60);
    assert!(a.requests() > 0 && b.requests() > 0, "a: {}, b: {}", a.requests(), b.requests());

    // The old one drains and exits; the new one has every connection.
    assert_eq!(p1.stop(), 0);
    let served_by_old = a.requests();
    assert_eq!(chats(addr, 20), 20);
    assert_eq!(a.requests(), served_by_old);
    // The admin API moved over too.
    let mut c = Conn::open(admin);
    c.send(
        format!("GET /v1/admin/routes HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n").as_bytes(),
    );
    assert_eq!(c.response().status, 200);
    assert_eq!(p2.stop(), 0);
}

#[test]
fn a_handover_with_nothing_to_take_over_starts_alone() {
    let a = mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "sb.toml", &config("127.0.0.1:0", &a.base_url(), None));
    let mut p = Proc::spawn(&["serve", "--config", &path, "--handover"], &[]);
    p.wait_line("nothing serves");
    let addr = p.address("data plane listening on ");
    assert_eq!(chats(addr, 3), 3);
    assert_eq!(p.stop(), 0);
}

#[test]
fn check_and_serve_refuse_what_a_reload_would_refuse() {
    let a = mock();
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = write(dir.path(), "check.toml", text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let good = config("127.0.0.1:0", &a.base_url(), None);
    assert_eq!(check(&good).0, 0);
    let (code, err) = check("");
    assert_eq!(code, 78);
    assert!(err.contains("empty"), "{err}");
    let (code, err) = check("[server]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(code, 78);
    assert!(err.contains("no enabled [[keys]]") && err.contains("allow_empty_routing"), "{err}");
    let (code, err) = check(&good[..good.find("[[keys]]").unwrap()]);
    assert_eq!(code, 78);
    assert!(err.contains("no enabled [[keys]]"), "{err}");
    assert_eq!(check(&format!("allow_empty_routing = true\n{}", &good[..good.find("[[keys]]").unwrap()])).0, 0);
    // A file that seeds an admin database may leave routing to the database.
    assert_eq!(check("[admin]\nlisten = \"127.0.0.1:0\"\n").0, 0);

    let (code, err) = check("\u{feff}# a new file\n\n   # nothing yet\n");
    assert_eq!(code, 78);
    assert!(err.contains("only comments"), "{err}");
    let (code, err) = check(&good.replace("id = \"k\"", "id = \"k\"\nenabled = false"));
    assert_eq!(code, 78);
    assert!(err.contains("no enabled [[keys]]"), "{err}");

    // `serve` does not start on an empty file, or one with only comments.
    for (name, text) in [("empty.toml", ""), ("comments.toml", "# only a comment\n")] {
        let path = write(dir.path(), name, text);
        let mut p = Proc::spawn(&["serve", "--config", &path], &[]);
        assert_eq!(p.wait_exit(Duration::from_secs(30)), 78, "{name}");
        p.wait_line("empty");
    }
}

#[test]
fn switchboard_driver_overrides_the_configured_driver() {
    let a = mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "sb.toml",
        &config("127.0.0.1:0", &a.base_url(), None).replace("workers = 2", "workers = 1\ndriver = \"auto\""),
    );
    let mut p = Proc::spawn(&["serve", "--config", &path], &[("SWITCHBOARD_DRIVER", "legacy")]);
    let line = p.wait_line("data plane listening on ");
    assert!(line.contains("legacy (epoll)"), "{line}");
    assert_eq!(chats(p.address("data plane listening on "), 3), 3);
    assert_eq!(p.stop(), 0);
    let mut p = Proc::spawn(&["serve", "--config", &path], &[("SWITCHBOARD_DRIVER", "uring")]);
    assert_eq!(p.wait_exit(Duration::from_secs(30)), 78);
    p.wait_line("SWITCHBOARD_DRIVER=`uring`");
}

#[test]
fn switchboard_uring_setup_picks_the_ring_setup_and_refuses_a_bad_value() {
    let a = mock();
    let dir = tempfile::tempdir().unwrap();
    let path =
        write(dir.path(), "sb.toml", &config("127.0.0.1:0", &a.base_url(), None).replace("workers = 2", "workers = 1"));
    // A bad value stops the gateway at start, on either driver.
    for driver in ["legacy", "io_uring"] {
        let mut p = Proc::spawn(
            &["serve", "--config", &path],
            &[("SWITCHBOARD_DRIVER", driver), ("SWITCHBOARD_URING_SETUP", "fast")],
        );
        assert_eq!(p.wait_exit(Duration::from_secs(30)), 78, "{driver}");
        p.wait_line("SWITCHBOARD_URING_SETUP=`fast`");
    }
    // On epoll there is no ring.
    let mut p = Proc::spawn(
        &["serve", "--config", &path],
        &[("SWITCHBOARD_DRIVER", "legacy"), ("SWITCHBOARD_URING_SETUP", "")],
    );
    let line = p.wait_line("data plane listening on ");
    assert!(line.contains("ring=\"-\""), "{line}");
    assert_eq!(p.stop(), 0);
    if switchboard_dataplane::server::choose_driver(switchboard_shared::config::Driver::IoUring).is_err() {
        return;
    }
    // `auto` takes the best setup the kernel has; `plain` (any io_uring kernel) exactly that. Both serve.
    for (setup, expect) in [("auto", &["defer", "coop", "plain"][..]), ("plain", &["plain"][..])] {
        let mut p = Proc::spawn(
            &["serve", "--config", &path],
            &[("SWITCHBOARD_DRIVER", "io_uring"), ("SWITCHBOARD_URING_SETUP", setup)],
        );
        let line = p.wait_line("data plane listening on ");
        assert!(expect.iter().any(|r| line.contains(&format!("ring=\"{r}\""))), "{setup}: {line}");
        assert_eq!(chats(p.address("data plane listening on "), 3), 3, "{setup}");
        assert_eq!(p.stop(), 0);
    }
}

/// The file says `[[providers]]`, `[[routes]]` and `provider =`; the old
/// spellings (`[[upstreams]]`, `[[models]]`, `upstream =`) still work, with a
/// deprecation warning from `check` and in `serve`'s log.
#[test]
fn the_old_spelling_of_providers_and_routes_still_serves_with_a_warning() {
    let a = mock();
    let dir = tempfile::tempdir().unwrap();
    let old = config("127.0.0.1:0", &a.base_url(), None);
    let new = old
        .replace("[[upstreams]]", "[[providers]]")
        .replace("[[models]]", "[[routes]]")
        .replace("upstream =", "provider =");
    let check = |name: &str, text: &str| {
        let path = write(dir.path(), name, text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check("new.toml", &new);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("deprecated"), "{err}");
    let (code, err) = check("old.toml", &old);
    assert_eq!(code, 0, "{err}");
    for spelling in
        ["`[[upstreams]]` is deprecated", "`[[models]]` is deprecated", "`upstream = \"...\"` is deprecated"]
    {
        assert!(err.contains(spelling), "{spelling}: {err}");
    }
    // Both serve the same.
    for (name, text, warns) in [("serve-old.toml", &old, true), ("serve-new.toml", &new, false)] {
        let path = write(dir.path(), name, text);
        let mut p = Proc::spawn(&["serve", "--config", &path], &[]);
        let addr = p.address("data plane listening on ");
        if warns {
            p.wait_line("`[[upstreams]]` is deprecated: rename the tables to `[[providers]]`");
        }
        assert_eq!(chats(addr, 2), 2, "{name}");
        assert_eq!(p.stop(), 0);
    }
}
