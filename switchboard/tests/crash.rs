//! kill -9 under a load of admin writes: the database opens cleanly afterwards
//! and every change the API acknowledged is there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn create_org(addr: std::net::SocketAddr, name: &str) -> Option<u16> {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut w = s.try_clone().ok()?;
    use std::io::{Read, Write};
    w.write_all(
        format!(
            "POST /v1/admin/orgs HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .ok()?;
    let mut out = Vec::new();
    let mut r = s;
    r.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    text.get(9..12)?.parse().ok()
}

#[test]
fn kill_9_during_admin_writes_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchboard.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\ndatabase = \"switchboard.db\"\n",
    )
    .unwrap();
    let mut p = Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    let admin = p.address("admin API listening on ");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4 {
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            // Bounded: at most 2,000 writes per thread.
            for i in 0..2_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("crash-{t}-{i}");
                match create_org(admin, &name) {
                    Some(201) => acked.lock().unwrap().push(name),
                    Some(s) => panic!("unexpected status {s}"),
                    None => break, // the process is gone
                }
            }
        }));
    }
    assert!(eventually(Duration::from_secs(20), || acked.lock().unwrap().len() >= 100));
    p.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // The file opens cleanly, and holds every acknowledged change.
    let db = rusqlite::Connection::open(dir.path().join("switchboard.db")).unwrap();
    let ok: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let mut st = db.prepare("SELECT name FROM orgs").unwrap();
    let stored: std::collections::HashSet<String> =
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    for name in &acked {
        assert!(stored.contains(name), "{name} was acknowledged but is gone");
    }
    let audited: i64 = db
        .query_row("SELECT COUNT(*) FROM audit_log WHERE resource = 'org' AND action = 'create'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(audited as usize, stored.len(), "every stored change has its audit entry");
    drop(st);
    drop(db);

    // And the gateway starts again on it.
    let mut p = Proc::spawn(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    let admin = p.address("admin API listening on ");
    assert_eq!(create_org(admin, "after-the-crash"), Some(201));
    assert_eq!(p.stop(), 0);
}
