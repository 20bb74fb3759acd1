//! HTTPS on the data plane's listener, with the certificate reloaded from its
//! files while connections that started on the old one keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> Result<Tls, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now, so a bad certificate shows here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// One keep-alive request; returns status and body.
fn call(s: &mut Tls, body: &str) -> (u16, String) {
    s.write_all(&request("POST", "/v1/chat/completions", Some(KEY), body, &[])).unwrap();
    // A response is all the server sends before the next request, so the buffer ends with it.
    let r = read_response(&mut std::io::BufReader::new(s));
    (r.status, r.text())
}

#[test]
fn the_listener_serves_https_and_reloads_its_certificate() {
    let up = mock();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = make_pki();
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    let server = format!("tls_cert_file = {:?}\ntls_key_file = {:?}\nreload_poll_ms = 100", cert, key);
    let gw = Gateway::start(&basic_config(&up.base_url(), &server));

    let mut old = connect(gw.addr, &first.ca_pem).expect("handshake with the first certificate");
    assert_eq!(old.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = call(&mut old, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(status, 200, "{body}");

    // Plain HTTP on the TLS port gets no HTTP answer (a TLS alert, then close).
    let mut plain = Conn::open(gw.addr);
    plain.set_timeout(Duration::from_secs(5));
    plain.try_send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = plain.read_raw(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(!got.starts_with(b"HTTP/"), "plain HTTP was answered on the TLS port");

    // Rotate to a certificate from another CA.
    let second = make_pki();
    std::fs::write(&key, &second.key_pem).unwrap();
    std::fs::write(&cert, &second.cert_pem).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || connect(gw.addr, &second.ca_pem).is_ok()),
        "the new certificate was not picked up"
    );
    assert!(connect(gw.addr, &first.ca_pem).is_err(), "new handshakes use the new certificate");
    // The connection made before the rotation keeps working.
    assert_eq!(call(&mut old, r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).0, 200);
    let mut new = connect(gw.addr, &second.ca_pem).unwrap();
    assert_eq!(call(&mut new, r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#).0, 200);
}

#[test]
fn a_broken_certificate_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let cfg = switchboard_shared::Config::parse(&basic_config(
        "http://127.0.0.1:9/v1",
        &format!("tls_cert_file = {:?}\ntls_key_file = {:?}", cert, key),
    ))
    .unwrap();
    let store = switchboard_dataplane::snapshot::SnapshotStore::new(switchboard_dataplane::snapshot::Snapshot::empty());
    let err = switchboard_dataplane::start(cfg.server, store, switchboard_dataplane::dns::DnsCache::new())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("cert.pem"), "{err}");
}

#[test]
fn the_admin_api_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let tls = switchboard_dataplane::tls::ServerTls::load(&cert, &key).unwrap();
    let prep = switchboard_dataplane::snapshot::Prepare::default();
    let state = switchboard_adminapi::State::open(&dir.path().join("a.db"), prep, None).unwrap();
    state.bootstrap_token(Some("sba-tls-admin-token")).unwrap();
    let cfg = switchboard_adminapi::AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("a.db"),
        max_body_bytes: 4096,
        tls: Some(tls),
        node_heartbeat_ms: switchboard_shared::config::DEFAULT_NODE_HEARTBEAT_MS,
        conns: switchboard_adminapi::ConnLimits::default(),
        sharing: Default::default(),
    };
    let admin = switchboard_adminapi::start(&cfg, state).unwrap();
    let mut s = connect(admin.addr, &pki.ca_pem).expect("TLS handshake with the admin API");
    s.write_all(b"GET /v1/admin/orgs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sba-tls-admin-token\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"object\":\"list\""), "{text}");
    // Plain HTTP gets no answer.
    let mut plain = Conn::open(admin.addr);
    plain.set_timeout(Duration::from_secs(5));
    plain.try_send(b"GET /v1/admin/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = plain.read_raw(&mut buf).unwrap_or(0);
    assert!(!buf[..n].starts_with(b"HTTP/"));
}
