//! BYOI nodes over real sockets: the admin API and data plane in this process,
//! the node agent as a real `switchboard node` process, and mock upstreams as
//! the node's local server and as the fallback provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_loadtests::MockConfig;

const HEARTBEAT_MS: u64 = 200;
const OTHER_KEY: &str = "sk-test-other-org-key";

/// A gateway whose route `llama` prefers the org's nodes and fails over to
/// the provider; keys of org `acme` (KEY) and `other` (OTHER_KEY).
fn gateway(provider: &str) -> AdminGateway {
    gateway_with(provider, "")
}

/// `gateway`, with more lines for its `[server]` section.
fn gateway_with(provider: &str, server: &str) -> AdminGateway {
    AdminGateway::start(&gateway_config(provider, server, HEARTBEAT_MS))
}

fn gateway_config(provider: &str, server: &str, heartbeat_ms: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
{server}

[admin]
node_heartbeat_ms = {heartbeat_ms}

[[upstreams]]
name = "provider"
base_url = "{provider}"
prices = [{{ model = "llama", prompt_per_mtok = 1.0, completion_per_mtok = 2.0 }}]

[[models]]
name = "llama"
targets = [{{ nodes = "llama", prompt_per_mtok = 0.0 }}, {{ upstream = "provider" }}]

[[keys]]
id = "acme-key"
hash = "{}"
org = "acme"

[[keys]]
id = "other-key"
hash = "{}"
org = "other"
"#,
        key_hash(KEY),
        key_hash(OTHER_KEY)
    )
}

fn local_server() -> switchboard_loadtests::MockHandle {
    mock_with(MockConfig {
        record: true,
        models: vec!["mock-model".into(), "embedder".into()],
        ..MockConfig::default()
    })
}

/// A provider, a local server, the gateway, a folder for the agent's
/// identity, and an enrollment token for org `acme`.
struct Setup {
    provider: switchboard_loadtests::MockHandle,
    local: switchboard_loadtests::MockHandle,
    gw: AdminGateway,
    dir: tempfile::TempDir,
    token: String,
}

fn setup() -> Setup {
    let provider = mock();
    let local = local_server();
    let gw = gateway(&provider.base_url());
    let token = enrollment_token(&gw, json!({"org": "acme", "expires_in_s": 600}));
    Setup { provider, local, gw, dir: tempfile::tempdir().unwrap(), token }
}

fn chats(m: &switchboard_loadtests::MockHandle) -> usize {
    m.recorded().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
}

fn enrollment_token(gw: &AdminGateway, body: serde_json::Value) -> String {
    let r = gw.call("POST", "/v1/admin/enrollment-tokens", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["secret"].as_str().unwrap().to_string()
}

fn node(gw: &AdminGateway, name: &str) -> serde_json::Value {
    let r = gw.call("GET", &format!("/v1/admin/nodes/{name}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_status(gw: &AdminGateway, name: &str, status: &str) -> serde_json::Value {
    let mut last = json!(null);
    let ok = eventually(Duration::from_secs(15), || {
        // 404 until the agent has enrolled.
        let r = gw.call("GET", &format!("/v1/admin/nodes/{name}"), None);
        last = if r.status == 200 { r.json() } else { json!({"http": r.status}) };
        last["status"] == status
    });
    assert!(ok, "node {name} never became {status}: {last}");
    last
}

enum Mode {
    Direct,
    Outbound,
    /// Outbound to the gateway's TLS listener, by name (`https://localhost:PORT`).
    OutboundTls,
}

fn spawn_agent(
    gw: &AdminGateway,
    dir: &std::path::Path,
    local: &switchboard_loadtests::MockHandle,
    mode: &Mode,
    token: Option<&str>,
    extra: &[&str],
) -> Proc {
    spawn_agent_at(gw, dir, local.addr, mode, token, extra)
}

/// `spawn_agent` for a local server at `local`.
fn spawn_agent_at(
    gw: &AdminGateway,
    dir: &std::path::Path,
    local: std::net::SocketAddr,
    mode: &Mode,
    token: Option<&str>,
    extra: &[&str],
) -> Proc {
    let admin = format!("http://{}", gw.admin);
    let local = format!("http://{local}");
    let identity = dir.join("node.json");
    let gateway = match mode {
        Mode::OutboundTls => format!("https://localhost:{}", gw.addr.port()),
        _ => format!("http://{}", gw.addr),
    };
    let mut args = vec![
        "node",
        "--admin",
        &admin,
        "--local",
        &local,
        "--identity",
        identity.to_str().unwrap(),
        "--name",
        "ws1",
        "--rename",
        "mock-model=llama",
        "--capacity",
        "8",
    ];
    if let Some(t) = token {
        args.extend(["--enroll", t]);
    }
    match mode {
        Mode::Direct => args.extend(["--listen", "127.0.0.1:0"]),
        Mode::Outbound | Mode::OutboundTls => {
            args.extend(["--connect", &gateway]);
            if !extra.contains(&"--connections") {
                args.extend(["--connections", "2"]);
            }
        }
    }
    args.extend(extra);
    Proc::spawn(&args, &[("SWITCHBOARD_LOG", "info")])
}

/// Wait until every gateway worker holds its attached connections (2 per
/// worker, 2 workers; the pools are counted once a second).
fn wait_attached(gw: &AdminGateway) {
    let m = gw.metrics();
    let idle = || {
        m.render()
            .lines()
            .find(|l| l.starts_with("switchboard_upstream_idle_connections{pool=\"node:"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(eventually(Duration::from_secs(10), || idle() >= 4), "attached connections: {}", idle());
}

fn target(r: &Response) -> String {
    r.header("x-switchboard-target").unwrap_or("").to_string()
}

fn stream_body() -> &'static str {
    r#"{"model":"llama","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
}

const PLAIN: &str = r#"{"model":"llama","messages":[{"role":"user","content":"hi"}]}"#;

/// Requests in a loop from two threads until stopped: (sent, failed, by node).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|i| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let body = if i == 0 { PLAIN } else { stream_body() };
                        let mut c = Conn::open(addr);
                        c.send(&request("POST", "/v1/chat/completions", Some(KEY), body, &[]));
                        let r = c.response();
                        let ok = r.status == 200
                            && (i == 0 || sse_data(&r.body).last().is_some_and(|d| d == "[DONE]"))
                            && !String::from_utf8_lossy(&r.body).contains("\"error\"");
                        sent.fetch_add(1, Ordering::SeqCst);
                        if !ok {
                            eprintln!("failed request: {} {}", r.status, r.text());
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load { stop, sent, failed, threads }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.sent.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

/// Enroll, advertise, serve plain and streaming requests of its own org only,
/// stop (SIGTERM under load: no failed request), restart, kill -9.
fn full_cycle(mode: Mode) {
    let Setup { provider, local, gw, dir, token } = setup();
    let mut agent = spawn_agent(&gw, dir.path(), &local, &mode, Some(&token), &[]);
    let agent_addr = match mode {
        Mode::Direct => Some(agent.address("node listening on ")),
        Mode::Outbound | Mode::OutboundTls => None,
    };
    let n = wait_status(&gw, "ws1", "online");
    assert_eq!(n["routable"], true, "{n}");
    assert_eq!(n["org"], "acme");
    assert_eq!(n["capacity"], 8);
    let models: Vec<(String, String)> = n["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["local"].as_str().unwrap().to_string()))
        .collect();
    assert!(models.contains(&("llama".into(), "mock-model".into())), "{models:?}");
    assert!(models.contains(&("embedder".into(), "embedder".into())), "{models:?}");

    // The identity: readable by its user only, no gateway token in the clear.
    let id_path = dir.path().join("node.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&id_path).unwrap().permissions().mode() & 0o777, 0o600);
    let id_text = std::fs::read_to_string(&id_path).unwrap();
    let secret =
        serde_json::from_str::<serde_json::Value>(&id_text).unwrap()["credential"].as_str().unwrap().to_string();
    // ...and the admin keeps only a hash of the node secret.
    let db = rusqlite::Connection::open(&gw.db_path).unwrap();
    let (hash, sealed): (String, String) =
        db.query_row("SELECT secret_hash, gateway_token FROM nodes", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let plain_secret = secret.split_once('.').unwrap().1;
    assert!(!hash.contains(plain_secret) && hash.starts_with("sha256:"), "{hash}");
    assert!(!sealed.starts_with("sbg-"), "the gateway token is sealed at rest");

    // Outbound mode: every gateway worker holds its connections.
    if let Mode::Outbound = mode {
        wait_attached(&gw);
    }

    // Plain and streaming requests reach the node; the local server gets its own model name, no gateway token.
    let before = chats(&local);
    let r = gw.chat(KEY, PLAIN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(target(&r), "node:ws1");
    let r = gw.chat(KEY, stream_body());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(target(&r), "node:ws1");
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(data.len() > 3, "streamed chunk by chunk: {data:?}");
    assert_eq!(chats(&local), before + 2);
    let seen = local.recorded();
    let last = seen.iter().rev().find(|r| r.path.ends_with("/chat/completions")).unwrap();
    assert!(String::from_utf8_lossy(&last.body).contains("\"mock-model\""), "renamed back for the local server");
    assert_eq!(last.header("authorization"), None, "the gateway token stops at the agent");

    // Another org's key never reaches this node: the provider serves it...
    let r = gw.chat(OTHER_KEY, PLAIN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(target(&r), "provider");
    // ...until an admin shares the node.
    assert_eq!(gw.call("PATCH", "/v1/admin/nodes/ws1", Some(&json!({"shared": true}))).status, 200);
    let r = gw.chat(OTHER_KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "node:ws1".to_string()));
    assert_eq!(gw.call("PATCH", "/v1/admin/nodes/ws1", Some(&json!({"shared": false}))).status, 200);
    let r = gw.chat(OTHER_KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));

    // Direct mode: TLS with the certificate kept in the identity file, pinned
    // by the gateway; the port answers only the gateway's token.
    if let Some(addr) = agent_addr {
        let cert_pem = serde_json::from_str::<serde_json::Value>(&id_text).unwrap()["tls"]["cert_pem"]
            .as_str()
            .expect("the identity keeps the self-signed certificate")
            .to_string();
        let pin = pin_of(&cert_pem);
        assert_eq!(n["reach"], format!("direct https://{addr} pinned {pin}"), "{n}");
        for token in [None, Some("sbg-not-the-gateway-token"), Some(KEY)] {
            let r = tls_call(addr, &pin, &request("POST", "/v1/chat/completions", token, PLAIN, &[])).unwrap();
            assert_eq!(r.status, 401, "{}", r.text());
            assert_eq!(r.error()["code"], "invalid_gateway_token");
        }
        // Plain HTTP gets no answer from a TLS port.
        let mut c = Conn::open(addr);
        c.send(&request("POST", "/v1/chat/completions", None, PLAIN, &[]));
        let mut buf = [0u8; 64];
        let got = c.read_raw(&mut buf).unwrap_or(0);
        assert!(!buf[..got].starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&buf[..got]));
        // Another certificate than the pinned one is refused.
        let other = rcgen::generate_simple_self_signed(vec!["x.invalid".to_string()]).unwrap();
        let e = tls_call(addr, &pin_of(&other.cert.pem()), &request("GET", "/v1/models", None, "", &[])).unwrap_err();
        assert!(e.contains("certificate"), "{e}");
    }

    // Node traffic is accounted like any target, at the pool's price (0).
    let node_row = || {
        let u = gw.call("GET", "/v1/admin/usage?group_by=target&granularity=total", None);
        assert_eq!(u.status, 200, "{}", u.text());
        let rows = u.json()["data"].as_array().unwrap().clone();
        rows.into_iter().find(|r| r["target"] == "node:ws1").unwrap_or_default()
    };
    // The usage pipeline writes in batches: wait for the node's requests.
    eventually(Duration::from_secs(10), || node_row()["requests"].as_u64().unwrap_or(0) >= 2);
    let node_row = node_row();
    assert!(node_row["requests"].as_u64().unwrap_or(0) >= 2, "{node_row}");
    assert_eq!(node_row["cost_usd"].as_f64().unwrap(), 0.0, "{node_row}");

    // SIGTERM under load: the node drains, traffic moves to the provider, nothing fails.
    let provider_before = chats(&provider);
    let load = Load::start(gw.addr);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.stop(), 0, "the agent drains and exits 0");
    std::thread::sleep(Duration::from_millis(500));
    let (sent, failed) = load.finish();
    assert!(sent > 20, "{sent} requests");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    assert!(chats(&provider) > provider_before, "the provider took over");
    let status = node(&gw, "ws1")["status"].clone();
    assert!(status == "draining" || status == "offline", "{status}");
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));

    // Restart with the stored identity (no token): traffic returns.
    let mut agent = spawn_agent(&gw, dir.path(), &local, &mode, None, &[]);
    if let Mode::Direct = mode {
        agent.address("node listening on ");
    }
    wait_status(&gw, "ws1", "online");
    assert!(
        eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"),
        "traffic returns to the node"
    );

    // kill -9: the node leaves the snapshot within three heartbeat intervals,
    // and requests meanwhile fail over.
    agent.kill9();
    let killed = Instant::now();
    for _ in 0..10 {
        let r = gw.chat(KEY, PLAIN);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_status(&gw, "ws1", "offline");
    assert!(killed.elapsed() < Duration::from_millis(3 * HEARTBEAT_MS + 1_500), "{:?}", killed.elapsed());
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
}

/// The pin of a PEM certificate: `sha256:<hex>` of its DER.
fn pin_of(cert_pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    switchboard_shared::KeyHash::of(der.as_ref()).to_string()
}

/// One request over TLS to a direct-mode agent, trusting only the certificate
/// `pin` names (as gateways do): the answer, or why the connection failed.
fn tls_call(addr: std::net::SocketAddr, pin: &str, req: &[u8]) -> Result<Response, String> {
    use std::io::Write;
    let pin = switchboard_shared::KeyHash::parse(pin).unwrap();
    let cfg = switchboard_dataplane::tls::pinned_client_config(pin).unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // The handshake runs on the first write: a refused certificate is an error here.
    s.write_all(req).map_err(|e| e.to_string())?;
    Ok(read_response(&mut std::io::BufReader::new(s)))
}

#[test]
fn direct_mode_enrolls_serves_fails_over_and_returns() {
    full_cycle(Mode::Direct);
}

/// `--plain-http`: direct mode without TLS, for a trusted network (the
/// default is TLS); the port still answers only the gateway's token. Then the
/// advertised scheme must match, and an operator's own certificate is pinned.
#[test]
fn direct_mode_serves_plain_http_or_an_operators_certificate_when_asked() {
    let Setup { provider: _provider, local, gw, dir, token } = setup();
    let mut agent = spawn_agent(&gw, dir.path(), &local, &Mode::Direct, Some(&token), &["--plain-http"]);
    let addr = agent.address("node listening on ");
    let n = wait_status(&gw, "ws1", "online");
    assert_eq!(n["reach"], format!("direct http://{addr}"), "{n}");
    let id: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("node.json")).unwrap()).unwrap();
    assert!(id.get("tls").is_none(), "no certificate made for plain HTTP: {id}");
    assert!(
        eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"),
        "the gateway reaches the node over plain HTTP"
    );
    let r = gw.chat(KEY, stream_body());
    assert_eq!((r.status, target(&r)), (200, "node:ws1".to_string()), "{}", r.text());
    for token in [None, Some("sbg-not-the-gateway-token"), Some(KEY)] {
        let mut c = Conn::open(addr);
        c.send(&request("POST", "/v1/chat/completions", token, PLAIN, &[]));
        let r = c.response();
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.error()["code"], "invalid_gateway_token");
    }
    // An advertised URL must say what the node serves: restarted with TLS (the default), http:// is refused.
    assert_eq!(agent.stop(), 0);
    let mut bad = spawn_agent(&gw, dir.path(), &local, &Mode::Direct, None, &["--advertise", "http://127.0.0.1:1"]);
    assert_eq!(bad.wait_exit(Duration::from_secs(20)), 78, "a TLS node advertising http:// is a configuration error");

    // A certificate of the operator's own (--tls-cert/--tls-key): pinned the same way.
    let own = rcgen::generate_simple_self_signed(vec!["gpu-box.lab.example".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("node.crt"), dir.path().join("node.key"));
    std::fs::write(&cert_file, own.cert.pem()).unwrap();
    std::fs::write(&key_file, own.key_pair.serialize_pem()).unwrap();
    let mut agent = spawn_agent(
        &gw,
        dir.path(),
        &local,
        &Mode::Direct,
        None,
        &["--tls-cert", cert_file.to_str().unwrap(), "--tls-key", key_file.to_str().unwrap()],
    );
    let addr = agent.address("node listening on ");
    let want = format!("direct https://{addr} pinned {}", pin_of(&own.cert.pem()));
    assert!(eventually(Duration::from_secs(10), || node(&gw, "ws1")["reach"] == want.as_str()), "{want}");
    let id: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("node.json")).unwrap()).unwrap();
    // (The start refused above made one, before its --advertise was checked: kept, not served.)
    let kept = pin_of(id["tls"]["cert_pem"].as_str().unwrap());
    assert!(!want.ends_with(&kept), "the operator's certificate is served, not the kept one");
    assert!(
        eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"),
        "the gateway reaches the node over TLS with the operator's certificate"
    );
}

/// Outbound mode to a gateway whose client port is TLS (how nodes reach a
/// gateway across the internet): the agent verifies the gateway by name
/// against `--ca-file`, and requests come down the TLS connections it opened.
#[test]
fn an_outbound_node_attaches_over_the_gateways_tls() {
    let provider = mock();
    let local = local_server();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki();
    let (cert, key, ca) = (dir.path().join("gw.crt"), dir.path().join("gw.key"), dir.path().join("ca.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let gw = gateway_with(&provider.base_url(), &format!("tls_cert_file = {cert:?}\ntls_key_file = {key:?}"));
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let agent =
        spawn_agent(&gw, dir.path(), &local, &Mode::OutboundTls, Some(&token), &["--ca-file", ca.to_str().unwrap()]);
    wait_status(&gw, "ws1", "online");
    wait_attached(&gw);
    // Clients speak TLS to this gateway too (trusting its certificate).
    let gw_pin = pin_of(&pki.cert_pem);
    let call = |body: &str| {
        let req = request("POST", "/v1/chat/completions", Some(KEY), body, &[("connection", "close")]);
        tls_call(gw.addr, &gw_pin, &req).unwrap()
    };
    assert!(eventually(Duration::from_secs(10), || target(&call(PLAIN)) == "node:ws1"), "requests reach the node");
    let before = chats(&local);
    let r = call(stream_body());
    assert_eq!((r.status, target(&r)), (200, "node:ws1".to_string()), "{}", r.text());
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    assert_eq!(chats(&local), before + 1, "the local server answered it");
    // The agent refuses a gateway it cannot verify: restarted without --ca-file, it never attaches.
    assert_eq!(agent.stop(), 0);
    let mut unverified = spawn_agent(&gw, dir.path(), &local, &Mode::OutboundTls, None, &[]);
    let line = unverified.wait_line("cannot attach to the gateway");
    assert!(line.contains("certificate") || line.contains("TLS"), "{line}");
}

/// An admin restart keeps the nodes it knew routable, as of their last
/// advertisement, until they miss their heartbeats — instead of dropping
/// every node out of routing until its next one.
#[test]
fn an_admin_restart_keeps_known_nodes_until_they_miss_heartbeats() {
    let provider = mock();
    let local = local_server();
    let config = gateway_config(&provider.base_url(), "", 1_000);
    let gw = AdminGateway::start(&config);
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = spawn_agent(&gw, agent_dir.path(), &local, &Mode::Direct, Some(&token), &[]);
    agent.address("node listening on ");
    wait_status(&gw, "ws1", "online");
    assert!(eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"));

    // Restart on the same database. The agent keeps heartbeating the old
    // admin port, so nothing it sends reaches the new one.
    let state = gw.stop();
    let restarted = Instant::now();
    let gw = AdminGateway::start_in(state, &config);
    let n = node(&gw, "ws1");
    assert_eq!((n["status"].as_str(), n["routable"].as_bool()), (Some("online"), Some(true)), "{n}");
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "node:ws1".to_string()), "routable from the first request");
    // Silent for 2.5 intervals: offline, and the provider serves.
    wait_status(&gw, "ws1", "offline");
    assert!(restarted.elapsed() >= Duration::from_millis(2_000), "{:?}", restarted.elapsed());
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
}

#[test]
fn outbound_mode_enrolls_serves_fails_over_and_returns() {
    full_cycle(Mode::Outbound);
}

/// Minutes since local midnight, as the agent sees it.
fn local_minute() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as libc::time_t;
    // SAFETY: localtime_r with valid pointers.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    (tm.tm_hour * 60 + tm.tm_min) as u32
}

fn hhmm(min: u32) -> String {
    let m = min % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[test]
fn idle_time_mode_takes_work_only_inside_its_window() {
    let Setup { provider: _provider, local, gw, dir, token } = setup();
    let now = local_minute();
    let closed = format!("{}-{}", hhmm(now + 120), hhmm(now + 180));
    let agent = spawn_agent(&gw, dir.path(), &local, &Mode::Outbound, Some(&token), &["--idle-hours", &closed]);
    let n = wait_status(&gw, "ws1", "unavailable");
    assert_eq!(n["routable"], false);
    assert!(n["mode"].as_str().unwrap().contains("idle-time"), "{n}");
    assert!(n["message"].as_str().unwrap().contains("idle-time hours"), "{n}");
    let before = chats(&local);
    for _ in 0..5 {
        let r = gw.chat(KEY, PLAIN);
        assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
    }
    assert_eq!(chats(&local), before, "outside its window the node takes no work");
    assert_eq!(agent.stop(), 0);

    let open = format!("{}-{}", hhmm(now + 1440 - 60), hhmm(now + 60));
    let _agent = spawn_agent(&gw, dir.path(), &local, &Mode::Outbound, None, &["--idle-hours", &open]);
    wait_status(&gw, "ws1", "online");
    assert!(eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"));
}

#[test]
fn a_revoked_node_is_cut_off_and_told_why() {
    let Setup { provider: _provider, local, gw, dir, token } = setup();
    let mut agent = spawn_agent(&gw, dir.path(), &local, &Mode::Outbound, Some(&token), &[]);
    wait_status(&gw, "ws1", "online");
    assert!(eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"));

    let r =
        gw.call("PATCH", "/v1/admin/nodes/ws1", Some(&json!({"enabled": false, "reason": "laptop reported stolen"})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "disabled");
    // At once: the next requests go to the provider.
    let before = chats(&local);
    for _ in 0..5 {
        let r = gw.chat(KEY, PLAIN);
        assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
    }
    assert_eq!(chats(&local), before);
    // The agent's next heartbeat is refused with the reason; it stops (77: do not restart).
    let line = agent.wait_line("the admin refused this node");
    assert!(line.contains("laptop reported stolen"), "{line}");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), 77);
    // Its credential no longer attaches to the gateway.
    let secret = std::fs::read_to_string(dir.path().join("node.json")).unwrap();
    let cred = serde_json::from_str::<serde_json::Value>(&secret).unwrap()["credential"].as_str().unwrap().to_string();
    let mut c = Conn::open(gw.addr);
    c.send(
        format!(
            "POST /v1/nodes/attach HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {cred}\r\ncontent-length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 401);
    assert_eq!(r.error()["code"], "invalid_node_credential");
    // The change is audited.
    let audit = gw.call("GET", "/v1/admin/audit?resource=node", None).text();
    assert!(audit.contains("laptop reported stolen"), "{audit}");
}

fn enroll_raw(gw: &AdminGateway, token: &str, name: &str) -> Response {
    let body = json!({"token": token, "name": name, "version": "test"}).to_string();
    let mut c = Conn::open(gw.admin);
    c.send(&request("POST", "/v1/nodes/enroll", None, &body, &[]));
    c.response()
}

#[test]
fn bad_enrollments_and_advertisements_are_refused_clearly() {
    let provider = mock();
    let gw = gateway(&provider.base_url());
    // Unknown token.
    let r = enroll_raw(&gw, "sbe-not-a-token", "n1");
    assert_eq!(r.status, 401);
    assert_eq!(r.error()["code"], "invalid_enrollment_token");
    assert!(r.error()["message"].as_str().unwrap().contains("Unknown"), "{}", r.text());
    // Single use: the second enrollment is refused.
    let once = enrollment_token(&gw, json!({"org": "acme"}));
    assert_eq!(enroll_raw(&gw, &once, "n1").status, 201);
    let r = enroll_raw(&gw, &once, "n2");
    assert_eq!(r.status, 401);
    assert!(r.error()["message"].as_str().unwrap().contains("already used"), "{}", r.text());
    // Multi-use works for several nodes; a taken name is a conflict.
    let multi = enrollment_token(&gw, json!({"org": "acme", "max_uses": 0}));
    assert_eq!(enroll_raw(&gw, &multi, "n3").status, 201);
    assert_eq!(enroll_raw(&gw, &multi, "n4").status, 201);
    assert_eq!(enroll_raw(&gw, &multi, "n3").status, 409);
    // Expired.
    let short = enrollment_token(&gw, json!({"org": "acme", "expires_in_s": 1}));
    std::thread::sleep(Duration::from_millis(2_100));
    let r = enroll_raw(&gw, &short, "n5");
    assert_eq!(r.status, 401);
    assert!(r.error()["message"].as_str().unwrap().contains("expired"), "{}", r.text());
    // Revoked.
    let rev = gw.call("POST", "/v1/admin/enrollment-tokens", Some(&json!({"org": "acme"})));
    let (rev_id, rev_secret) =
        (rev.json()["id"].as_str().unwrap().to_string(), rev.json()["secret"].as_str().unwrap().to_string());
    assert_eq!(gw.call("POST", &format!("/v1/admin/enrollment-tokens/{rev_id}/revoke"), None).status, 200);
    let r = enroll_raw(&gw, &rev_secret, "n6");
    assert_eq!(r.status, 401);
    assert!(r.error()["message"].as_str().unwrap().contains("revoked"), "{}", r.text());
    // An unknown org for a token.
    let r = gw.call("POST", "/v1/admin/enrollment-tokens", Some(&json!({"org": "nope"})));
    assert_eq!(r.status, 422, "{}", r.text());

    // A heartbeat whose renames make two models one name: rejected, naming it.
    let multi2 = enrollment_token(&gw, json!({"org": "acme"}));
    let e = enroll_raw(&gw, &multi2, "clash").json();
    let cred = e["credential"].as_str().unwrap();
    let beat = json!({
        "version": "test", "capacity": 2, "reach": "outbound", "mode": "always-on", "available": true,
        "healthy": true, "draining": false, "in_flight": 0, "load": 0.1,
        "models": [{"name": "llama", "local": "a"}, {"name": "llama", "local": "b"}]
    });
    let mut c = Conn::open(gw.admin);
    c.send(&request("POST", "/v1/nodes/heartbeat", Some(cred), &beat.to_string(), &[]));
    let r = c.response();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.error()["code"], "model_name_clash");
    assert_eq!(node(&gw, "clash")["status"], "offline");
    // A certificate pin that is not one, or one on a plain-http URL.
    for (reach, why) in [
        (json!({"direct": {"url": "https://10.0.0.7:7070", "tls_pin": "sha256:abc"}}), "not a certificate pin"),
        (json!({"direct": {"url": "http://10.0.0.7:7070", "tls_pin": format!("sha256:{}", "ab".repeat(32))}}), "https"),
    ] {
        let mut b = beat.clone();
        b["reach"] = reach;
        b["models"] = json!([{"name": "llama", "local": "a"}]);
        let mut c = Conn::open(gw.admin);
        c.send(&request("POST", "/v1/nodes/heartbeat", Some(cred), &b.to_string(), &[]));
        let r = c.response();
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.error()["param"], "reach.tls_pin");
        assert!(r.error()["message"].as_str().unwrap().contains(why), "{}", r.text());
    }
    // A wrong secret.
    let mut c = Conn::open(gw.admin);
    let wrong = format!("{}.sbn-wrong", cred.split_once('.').unwrap().0);
    c.send(&request("POST", "/v1/nodes/heartbeat", Some(&wrong), &beat.to_string(), &[]));
    assert_eq!(c.response().status, 401);
    // A good heartbeat, then the node is removed: its identity stops working.
    let good = json!({
        "version": "test", "capacity": 2, "reach": "outbound", "mode": "always-on", "available": true,
        "healthy": true, "draining": false, "in_flight": 0, "load": 0.1,
        "models": [{"name": "llama", "local": "a"}]
    });
    let beat_with = |c: &str| {
        let mut conn = Conn::open(gw.admin);
        conn.send(&request("POST", "/v1/nodes/heartbeat", Some(c), &good.to_string(), &[]));
        conn.response()
    };
    let r = beat_with(cred);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["status"].as_str(), r.json()["routable"].as_bool()), (Some("online"), Some(true)));
    assert_eq!(gw.call("DELETE", "/v1/admin/nodes/clash", None).status, 200);
    let r = beat_with(cred);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.error()["code"], "node_unknown");
    assert_eq!(gw.call("GET", "/v1/admin/nodes/clash", None).status, 404);
}

#[test]
fn a_node_whose_local_server_is_down_reports_unhealthy() {
    let provider = mock();
    let gw = gateway(&provider.base_url());
    let dir = tempfile::tempdir().unwrap();
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let admin = format!("http://{}", gw.admin);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let gateway = format!("http://{}", gw.addr);
    let identity = dir.path().join("node.json");
    let _agent = Proc::spawn(
        &[
            "node",
            "--admin",
            &admin,
            "--enroll",
            &token,
            "--local",
            &dead,
            "--identity",
            identity.to_str().unwrap(),
            "--name",
            "ws1",
            "--connect",
            &gateway,
        ],
        &[],
    );
    let n = wait_status(&gw, "ws1", "unhealthy");
    assert_eq!(n["routable"], false);
    assert!(n["message"].as_str().unwrap().contains("does not answer"), "{n}");
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
}

fn admin_call(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<serde_json::Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut c = Conn::open(addr);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.response()
}

/// Split mode with real processes: `serve` (admin + a data plane) and a
/// `dataplane` following it; one outbound agent attached to both, with a
/// server hash key (node secrets hashed with it, checked by the remote data
/// plane from the snapshot).
#[test]
fn an_outbound_node_serves_every_data_plane_process() {
    const HASH_KEY: &str = "nodes-test-server-hash-key-0123456789";
    let provider = mock();
    let local = local_server();
    let dir = tempfile::tempdir().unwrap();
    let admin_cfg = dir.path().join("admin.toml");
    let hasher = switchboard_shared::KeyHasher::keyed(HASH_KEY.as_bytes()).unwrap();
    std::fs::write(
        &admin_cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"
node_heartbeat_ms = {HEARTBEAT_MS}

[[upstreams]]
name = "provider"
base_url = "{}"

[[models]]
name = "llama"
targets = [{{ nodes = "llama" }}, {{ upstream = "provider" }}]

[[keys]]
id = "acme-key"
hash = "{}"
org = "acme"
"#,
            provider.base_url(),
            hasher.hash_str(KEY.as_bytes())
        ),
    )
    .unwrap();
    let dp_cfg = dir.path().join("dataplane.toml");
    std::fs::write(
        &dp_cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[usage]\nspill_file = \"{}\"\n",
            dir.path().join("dp.spill").display()
        ),
    )
    .unwrap();
    let mut admin =
        Proc::spawn(&["serve", "--config", admin_cfg.to_str().unwrap()], &[("SWITCHBOARD_HASH_KEY", HASH_KEY)]);
    let admin_addr = admin.address("admin API listening on ");
    let gw1 = admin.address("data plane listening on ");
    let mut dp = Proc::spawn(
        &["dataplane", "--admin", &format!("http://{admin_addr}"), "--config", dp_cfg.to_str().unwrap()],
        &[],
    );
    let gw2 = dp.address("data plane listening on ");

    let t = admin_call(admin_addr, "POST", "/v1/admin/enrollment-tokens", Some(json!({"org": "acme"})));
    assert_eq!(t.status, 201, "{}", t.text());
    let token = t.json()["secret"].as_str().unwrap().to_string();
    let (admin_url, local_url) = (format!("http://{admin_addr}"), format!("http://{}", local.addr));
    let (c1, c2) = (format!("http://{gw1}"), format!("http://{gw2}"));
    let identity = dir.path().join("node.json");
    let agent = Proc::spawn(
        &[
            "node",
            "--admin",
            &admin_url,
            "--enroll",
            &token,
            "--local",
            &local_url,
            "--identity",
            identity.to_str().unwrap(),
            "--name",
            "ws1",
            "--rename",
            "mock-model=llama",
            "--connect",
            &c1,
            "--connect",
            &c2,
            "--connections",
            "1",
        ],
        &[],
    );
    let online = eventually(Duration::from_secs(15), || {
        let r = admin_call(admin_addr, "GET", "/v1/admin/nodes/ws1", None);
        r.status == 200 && r.json()["routable"] == true
    });
    assert!(online, "the node never came online");
    for gw in [gw1, gw2] {
        let served = eventually(Duration::from_secs(10), || {
            let mut c = Conn::open(gw);
            c.send(&request("POST", "/v1/chat/completions", Some(KEY), PLAIN, &[]));
            let r = c.response();
            assert_eq!(r.status, 200, "{}", r.text());
            target(&r) == "node:ws1"
        });
        assert!(served, "data plane {gw} never reached the node");
    }
    assert_eq!(agent.stop(), 0);
    assert_eq!(dp.stop(), 0);
    assert_eq!(admin.stop(), 0);
}

/// More requests at once than a worker has attached connections: the extra
/// ones go to the next target, and the node is not ejected for it.
#[test]
fn a_busy_outbound_pool_overflows_to_the_next_target_without_ejecting_the_node() {
    let Setup { provider: _provider, local, gw, dir, token } = setup();
    let _agent = spawn_agent(&gw, dir.path(), &local, &Mode::Outbound, Some(&token), &["--connections", "1"]);
    wait_status(&gw, "ws1", "online");
    assert!(eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"));
    // 8 slow requests at once on 2 workers holding 1 connection each.
    let slow = r#"{"model":"llama","messages":[{"role":"user","content":"hi"}],"mock":{"delay_ms":400}}"#;
    let addr = gw.addr;
    let targets: Vec<String> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                c.send(&request("POST", "/v1/chat/completions", Some(KEY), slow, &[]));
                let r = c.response();
                assert_eq!(r.status, 200, "{}", r.text());
                target(&r)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let on_node = targets.iter().filter(|t| *t == "node:ws1").count();
    assert!((1..=2).contains(&on_node), "{targets:?}");
    assert_eq!(targets.iter().filter(|t| *t == "provider").count(), 8 - on_node, "{targets:?}");
    // The node is still healthy: the next request goes to it.
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "node:ws1".to_string()));
    let health = gw.call("GET", "/v1/admin/targets", None).json();
    let node = health["data"].as_array().unwrap().iter().find(|t| t["name"] == "node:ws1").cloned().unwrap();
    assert_eq!((node["state"].as_str(), node["failures"].as_u64()), (Some("closed"), Some(0)), "{node}");
}

/// Streamed runs per reachability mode in the interrupt tests.
const INTERRUPT_RUNS: usize = 10;

/// A generation of 40 tokens, 25 ms apart: a second, ten heartbeats of 100 ms.
const LONG_STREAM: &str = r#"{"model":"llama","stream":true,"messages":[{"role":"user","content":"hi"}],"mock":{"tokens":40,"interval_ms":25}}"#;

fn models_listed(local: &switchboard_loadtests::MockHandle) -> usize {
    local.recorded().iter().filter(|r| r.method == "GET" && r.path.ends_with("/models")).count()
}

/// llama-cpp-python's server (its default `interrupt_requests`) ends a
/// running generation with `[DONE]` and no `finish_reason` whenever another
/// request arrives. The agent must never be that request: with heartbeats
/// (100 ms) ten times faster than the generation, and a SIGHUP (rediscover)
/// sent in the middle of each stream, every stream is whole, and the local
/// server saw no interruption. The deferred discovery runs once the stream
/// is over.
fn streams_are_never_cut_short_by_the_agent(mode: Mode) {
    let provider = mock();
    let local = mock_with(MockConfig {
        record: true,
        interrupt_on_request: true,
        models: vec!["mock-model".into()],
        ..MockConfig::default()
    });
    let gw = AdminGateway::start(&gateway_config(&provider.base_url(), "", 100));
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = spawn_agent(&gw, dir.path(), &local, &mode, Some(&token), &[]);
    if let Mode::Direct = mode {
        agent.address("node listening on ");
    }
    wait_status(&gw, "ws1", "online");
    if let Mode::Outbound = mode {
        wait_attached(&gw);
    }
    assert!(eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"));
    let token_text = r#""content":"word ""#;
    for run in 0..INTERRUPT_RUNS {
        let started_ms = node(&gw, "ws1")["last_heartbeat_ms"].as_i64().unwrap();
        let listed = models_listed(&local);
        let mut c = Conn::open(gw.addr);
        c.send(&request("POST", "/v1/chat/completions", Some(KEY), LONG_STREAM, &[]));
        let (status, headers) = c.head();
        assert_eq!(status, 200, "run {run}");
        assert!(headers.iter().any(|(n, v)| n == "x-switchboard-target" && v == "node:ws1"), "run {run}: {headers:?}");
        let mut body = Vec::new();
        let mut next = |body: &mut Vec<u8>| match c.chunk() {
            Some(chunk) => {
                body.extend_from_slice(&chunk);
                true
            }
            None => false,
        };
        while String::from_utf8_lossy(&body).matches(token_text).count() < 2 {
            assert!(next(&mut body), "run {run}: the stream ended early: {}", String::from_utf8_lossy(&body));
        }
        // Mid-generation: the agent heartbeats with the request in flight, and is asked to rediscover.
        let beat_while_busy = eventually(Duration::from_secs(5), || {
            let n = node(&gw, "ws1");
            n["in_flight"] == 1 && n["last_heartbeat_ms"].as_i64().unwrap() > started_ms
        });
        assert!(beat_while_busy, "run {run}: no heartbeat during the generation: {}", node(&gw, "ws1"));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
        while next(&mut body) {}
        let data = sse_data(&body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "run {run}: {data:?}");
        assert!(data.iter().any(|d| d.contains(r#""finish_reason":"stop""#)), "run {run}: truncated: {data:?}");
        assert_eq!(String::from_utf8_lossy(&body).matches(token_text).count(), 40, "run {run}: {data:?}");
        assert_eq!(local.interrupted(), 0, "run {run}: the local server interrupted a generation");
        // The rediscovery waited for the stream, and runs now that the node is idle.
        assert!(
            eventually(Duration::from_secs(5), || models_listed(&local) > listed),
            "run {run}: the SIGHUP rediscovery never ran"
        );
    }
    assert_eq!(local.interrupted(), 0);
}

#[test]
fn streams_through_an_outbound_node_are_never_cut_short_by_the_agent() {
    streams_are_never_cut_short_by_the_agent(Mode::Outbound);
}

#[test]
fn streams_through_a_direct_node_are_never_cut_short_by_the_agent() {
    streams_are_never_cut_short_by_the_agent(Mode::Direct);
}

/// A local server that answers `GET /v1/models` with the models it is given
/// (and counts the times it was asked), one request per connection; other
/// connections (the agent's TCP probes) it just closes.
struct ModelList {
    addr: std::net::SocketAddr,
    models: Arc<std::sync::Mutex<Vec<String>>>,
    listed: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelList {
    fn start(models: &[&str]) -> ModelList {
        ModelList::start_at("127.0.0.1:0".parse().unwrap(), models)
    }

    fn start_at(addr: std::net::SocketAddr, models: &[&str]) -> ModelList {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let models = Arc::new(std::sync::Mutex::new(models.iter().map(|m| m.to_string()).collect::<Vec<_>>()));
        let (listed, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let connections = Arc::new(AtomicU64::new(0));
        let (m, l, c, st) = (models.clone(), listed.clone(), connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.starts_with(b"GET /v1/models ") {
                    continue;
                }
                l.fetch_add(1, Ordering::SeqCst);
                let data: Vec<_> = m.lock().unwrap().iter().map(|id| json!({"id": id, "object": "model"})).collect();
                let body = json!({"object": "list", "data": data}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        ModelList { addr, models, listed, connections, stop, thread: Some(thread) }
    }

    fn set(&self, models: &[&str]) {
        *self.models.lock().unwrap() = models.iter().map(|m| m.to_string()).collect();
    }

    fn listed(&self) -> u64 {
        self.listed.load(Ordering::SeqCst)
    }

    /// TCP connections accepted, model listings included.
    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ModelList {
    /// Stops listening: the port refuses connections once this returns.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn model_names(n: &serde_json::Value) -> Vec<String> {
    n["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect()
}

/// Models are listed at start, then only on SIGHUP or every
/// `--discover-interval` (60 s by default) — not at every heartbeat.
#[test]
fn models_are_listed_at_start_on_sighup_and_every_discover_interval_not_at_every_heartbeat() {
    let provider = mock();
    let local = ModelList::start(&["mock-model"]);
    let gw = AdminGateway::start(&gateway_config(&provider.base_url(), "", 100));
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let dir = tempfile::tempdir().unwrap();
    let agent = spawn_agent_at(&gw, dir.path(), local.addr, &Mode::Outbound, Some(&token), &[]);
    let n = wait_status(&gw, "ws1", "online");
    assert_eq!(model_names(&n), ["llama"]);
    // A second of heartbeats (ten at 100 ms), and the model list was asked for
    // once; the quiet server was probed by TCP connects meanwhile.
    let first = n["last_heartbeat_ms"].as_i64().unwrap();
    let connections = local.connections();
    assert!(
        eventually(Duration::from_secs(5), || node(&gw, "ws1")["last_heartbeat_ms"].as_i64().unwrap() >= first + 1_000)
    );
    assert_eq!(local.listed(), 1, "models are listed at start only");
    assert!(local.connections() >= connections + 5, "probes: {}", local.connections() - connections);
    // A new model: not seen until SIGHUP...
    local.set(&["mock-model", "qwen"]);
    assert_eq!(model_names(&node(&gw, "ws1")), ["llama"]);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let mut last = json!(null);
    let found = eventually(Duration::from_secs(10), || {
        last = node(&gw, "ws1");
        model_names(&last).contains(&"qwen".to_string())
    });
    assert!(found, "SIGHUP did not list the models again: {last}");
    assert_eq!(local.listed(), 2);
    assert_eq!(last["status"], "online", "{last}");
    assert_eq!(agent.stop(), 0);

    // --discover-interval: listed again on its own.
    let mut bad = spawn_agent_at(&gw, dir.path(), local.addr, &Mode::Outbound, None, &["--discover-interval", "0"]);
    assert_eq!(bad.wait_exit(Duration::from_secs(20)), 78, "--discover-interval 0 is a configuration error");
    let _agent = spawn_agent_at(&gw, dir.path(), local.addr, &Mode::Outbound, None, &["--discover-interval", "1"]);
    assert!(eventually(Duration::from_secs(10), || local.listed() >= 3), "listed at start");
    local.set(&["mock-model", "phi"]);
    let mut last = json!(null);
    let found = eventually(Duration::from_secs(10), || {
        last = node(&gw, "ws1");
        model_names(&last).contains(&"phi".to_string())
    });
    assert!(found, "the interval did not list the models again: {last}");
}

/// Between discoveries, requests tell the agent about the local server: one
/// that cannot connect marks the node unhealthy at once (a heartbeat now,
/// not at the next interval, and no discovery needed).
#[test]
fn a_request_that_finds_the_local_server_down_marks_the_node_unhealthy_at_once() {
    let provider = mock();
    let local = local_server();
    // Heartbeats every 30 s: none falls in this test after the first.
    let gw = AdminGateway::start(&gateway_config(&provider.base_url(), "", 30_000));
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let dir = tempfile::tempdir().unwrap();
    let _agent = spawn_agent(&gw, dir.path(), &local, &Mode::Outbound, Some(&token), &[]);
    let first = wait_status(&gw, "ws1", "online")["last_heartbeat_ms"].as_i64().unwrap();
    wait_attached(&gw);
    assert!(eventually(Duration::from_secs(10), || target(&gw.chat(KEY, PLAIN)) == "node:ws1"));
    // Its only heartbeat so far is the first (the next is due 30 s after it).
    assert_eq!(node(&gw, "ws1")["last_heartbeat_ms"].as_i64().unwrap(), first);

    drop(local);
    let asked = Instant::now();
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()), "{}", r.text());
    let n = wait_status(&gw, "ws1", "unhealthy");
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    assert_eq!(n["routable"], false, "{n}");
    let message = n["message"].as_str().unwrap();
    assert!(message.contains("a request could not connect to the local server"), "{n}");
    assert!(n["last_heartbeat_ms"].as_i64().unwrap() > first, "a heartbeat of its own: {n}");
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
}

/// A quiet local server that stops is found by the TCP probe (no request
/// sent); when it is back, a model listing brings the node online again.
#[test]
fn a_quiet_local_server_that_stops_is_found_by_a_probe_and_listed_again_when_back() {
    let provider = mock();
    let local = ModelList::start(&["mock-model"]);
    let addr = local.addr;
    let gw = AdminGateway::start(&gateway_config(&provider.base_url(), "", 100));
    let token = enrollment_token(&gw, json!({"org": "acme"}));
    let dir = tempfile::tempdir().unwrap();
    let _agent = spawn_agent_at(&gw, dir.path(), addr, &Mode::Outbound, Some(&token), &[]);
    wait_status(&gw, "ws1", "online");
    assert_eq!(local.listed(), 1);
    drop(local);
    let n = wait_status(&gw, "ws1", "unhealthy");
    assert!(n["message"].as_str().unwrap().contains("does not answer"), "{n}");
    assert_eq!(model_names(&n), ["llama"], "the last known models are kept: {n}");
    let r = gw.chat(KEY, PLAIN);
    assert_eq!((r.status, target(&r)), (200, "provider".to_string()));
    // Back on the same port, with another model.
    let local = ModelList::start_at(addr, &["mock-model", "qwen"]);
    let n = wait_status(&gw, "ws1", "online");
    assert!(local.listed() >= 1, "listed again when back");
    assert!(eventually(Duration::from_secs(5), || model_names(&node(&gw, "ws1")).contains(&"qwen".to_string())), "{n}");
}
