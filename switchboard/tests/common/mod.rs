//! Test harness: start a gateway and mock upstreams on ephemeral loopback
//! ports, and talk to them over plain blocking sockets, so each test reads as
//! "start mock, start gateway, send, assert".
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::app::{self, Options, Running};
use switchboard_dataplane::dns::DnsCache;
use switchboard_dataplane::reload::Reloader;
use switchboard_loadtests::{MockConfig, MockHandle, MockUpstream};
use switchboard_shared::KeyHash;

pub const KEY: &str = "sk-test-client-key";
pub const PROVIDER_KEY: &str = "sk-test-provider-key-0001";

pub fn mock() -> MockHandle {
    mock_with(MockConfig { record: true, ..MockConfig::default() })
}

pub fn mock_with(cfg: MockConfig) -> MockHandle {
    MockUpstream::start(cfg).expect("mock starts")
}

/// A one-shot raw upstream: accepts one connection, reads the request, answers
/// with `answer` byte for byte, and closes. Returns its port and thread.
pub fn raw_upstream(answer: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        let _ = s.write_all(&answer);
    });
    (port, t)
}

/// A port with nothing listening on it.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn key_hash(key: &str) -> String {
    KeyHash::of(key.as_bytes()).to_string()
}

/// Config text with one upstream `up` at `base_url`, model `m` routed there,
/// and the test key allowed everything. `server` lines go under `[server]`.
pub fn basic_config(base_url: &str, server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{workers}
{server}

[[upstreams]]
name = "up"
base_url = "{base_url}"
api_key = "{PROVIDER_KEY}"

[[models]]
name = "m"
targets = [{{ upstream = "up" }}]

[[models]]
name = "alias"
targets = [{{ upstream = "up", model = "real-model" }}]

[[keys]]
id = "test"
hash = "{}"
"#,
        key_hash(KEY),
        workers = if server.contains("workers") { "" } else { "workers = 2" },
    )
}

/// Config text with one worker, one upstream `p` at `provider`, model `m`
/// routed there, and key `k` of org `acme` (the test key).
pub fn one_provider_config(provider: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[[upstreams]]
name = "p"
base_url = "{provider}"

[[models]]
name = "m"
targets = [{{ upstream = "p" }}]

[[keys]]
id = "k"
hash = "{}"
org = "acme"
"#,
        key_hash(KEY)
    )
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub dns: Arc<DnsCache>,
    pub reloader: Arc<Reloader>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    running: Option<Running>,
}

impl Gateway {
    /// File mode, built by `switchboard::app::build` as `serve` builds it,
    /// without the background services (config watcher, prober, DNS refresher).
    pub fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, config).unwrap();
        let options = Options::from_text(path.clone(), config.to_string()).expect("config loads");
        let running = app::build(options).unwrap_or_else(|f| panic!("gateway starts: {f}"));
        Gateway {
            addr: running.addr(),
            dns: running.dns().clone(),
            reloader: running.reloader().expect("file mode has a reloader").clone(),
            config_path: path,
            _dir: dir,
            running: Some(running),
        }
    }

    /// Start the active health prober, as `switchboard serve` does.
    pub fn spawn_prober(&self) {
        let store = self.reloader.store().expect("file mode has a store").clone();
        switchboard_dataplane::probe::spawn(store, self.dns.clone()).unwrap();
    }

    /// Rewrite the config file and reload it now.
    pub fn reconfigure(&self, config: &str) -> u64 {
        std::fs::write(&self.config_path, config).unwrap();
        self.reloader.reload_now().expect("reload")
    }

    pub fn conn(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// POST a JSON body with the test key; a fresh connection.
    pub fn post(&self, path: &str, body: &str) -> Response {
        let mut c = self.conn();
        c.send(&request("POST", path, Some(KEY), body, &[]));
        c.response()
    }

    pub fn chat(&self, body: &str) -> Response {
        self.post("/v1/chat/completions", body)
    }

    pub fn shutdown(mut self) {
        if let Some(mut r) = self.running.take() {
            r.stop_dataplane();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Before the directory goes.
        drop(self.running.take());
    }
}

/// The gateway with the admin API owning its state (SQLite in a temp dir),
/// seeded from `config`: built by `switchboard::app::build` as `serve` builds
/// it, with the file's `[admin]` replaced by one on an ephemeral port and a
/// database in the directory.
pub struct AdminGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub token: String,
    pub state: switchboard_adminapi::SharedState,
    pub db_path: PathBuf,
    pub dir: tempfile::TempDir,
    running: Option<Running>,
    /// The usage pipeline (SQLite sink, spill file in `dir`).
    pub usage: Option<Arc<switchboard_dataplane::usage::pipeline::UsagePipeline>>,
}

impl AdminGateway {
    pub fn start(config: &str) -> AdminGateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    /// Start on an existing directory (and database), e.g. after a restart.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> AdminGateway {
        Self::start_with(dir, config, switchboard_shared::KeyHasher::unkeyed())
    }

    /// As `start_in`, with a key hasher (keyed = a server hash key is set).
    pub fn start_with(dir: tempfile::TempDir, config: &str, hasher: switchboard_shared::KeyHasher) -> AdminGateway {
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, config).unwrap();
        let mut options = Options::from_text(path, config.to_string()).expect("config parses");
        let db_path = dir.path().join("switchboard.db");
        let heartbeat = options.config.admin.as_ref().map(|a| a.node_heartbeat_ms);
        options.config.admin = Some(switchboard_shared::config::AdminSettings {
            listen: "127.0.0.1:0".into(),
            database: db_path.clone(),
            max_body_bytes: 64 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
            node_heartbeat_ms: heartbeat.unwrap_or(switchboard_shared::config::DEFAULT_NODE_HEARTBEAT_MS),
            ..Default::default()
        });
        let usage = &mut options.config.usage;
        usage.spill_file = Some(usage.spill_file.take().unwrap_or_else(|| dir.path().join("usage.spill")));
        options.hasher = hasher;
        let token = "sba-test-admin-token".to_string();
        options.admin_token = Some(token.clone());
        // A short busy timeout, so a test that holds the database lock sees 503 quickly.
        options.db_busy_timeout = Some(Duration::from_millis(300));
        options.usage_drain = Duration::from_secs(5);
        let running = app::build(options).unwrap_or_else(|f| panic!("gateway starts: {f}"));
        AdminGateway {
            addr: running.addr(),
            admin: running.admin_addr().expect("admin API"),
            token,
            state: running.state().expect("admin state").clone(),
            db_path,
            usage: running.usage().cloned(),
            dir,
            running: Some(running),
        }
    }

    /// The data plane's metrics registry.
    pub fn metrics(&self) -> Arc<switchboard_dataplane::metrics::Metrics> {
        self.running.as_ref().expect("running").metrics()
    }

    /// Wait until `n` usage records are in the database.
    pub fn wait_usage_written(&self, n: u64) {
        let stats = self.usage.as_ref().expect("usage pipeline").stats.clone();
        let written = || stats.written.load(std::sync::atomic::Ordering::Relaxed);
        assert!(eventually(Duration::from_secs(10), || written() >= n), "{} of {n} usage records written", written());
    }

    /// Stop the data plane (drain), then the usage pipeline (flush).
    pub fn stop_dataplane(&mut self) {
        if let Some(r) = self.running.as_mut() {
            r.stop_dataplane();
        }
        self.usage = None;
    }

    /// Stop both services and hand back the directory (for a restart).
    pub fn stop(mut self) -> tempfile::TempDir {
        self.stop_dataplane();
        drop(self.running.take());
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// An admin API call with the bootstrap token.
    pub fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Response {
        self.call_as(&self.token.clone(), method, path, body)
    }

    pub fn call_as(&self, token: &str, method: &str, path: &str, body: Option<&serde_json::Value>) -> Response {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n");
        if !body.is_empty() || method == "POST" || method == "PATCH" {
            s.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        s.push_str("\r\n");
        s.push_str(&body);
        let mut c = Conn::open(self.admin);
        c.send(s.as_bytes());
        c.response()
    }

    pub fn chat(&self, key: &str, body: &str) -> Response {
        let mut c = Conn::open(self.addr);
        c.send(&request("POST", "/v1/chat/completions", Some(key), body, &[]));
        c.response()
    }
}

impl Drop for AdminGateway {
    fn drop(&mut self) {
        // Before the directory goes.
        drop(self.running.take());
    }
}

/// A raw HTTP/1.1 request.
pub fn request(method: &str, path: &str, key: Option<&str>, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\n");
    if let Some(k) = key {
        s.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    for (n, v) in extra {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        s.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error object of an OpenAI error body, checked for shape.
    pub fn error(&self) -> serde_json::Value {
        let v = self.json();
        let e = v["error"].clone();
        for field in ["message", "type", "param", "code"] {
            assert!(e.get(field).is_some(), "error JSON lacks `{field}`: {v}");
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    }
}

/// One client connection, blocking, with a 10 s read timeout.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

pub enum Framing {
    Length(usize),
    Chunked,
    Close,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { r: BufReader::new(s.try_clone().unwrap()), w: s }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.w.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// Try to send; false when the peer is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.w.write_all(bytes).is_ok() && self.w.flush().is_ok()
    }

    /// Read a status line and headers, skipping interim (1xx) responses unless asked.
    pub fn head(&mut self) -> (u16, Vec<(String, String)>) {
        read_head(&mut self.r)
    }

    pub fn framing(headers: &[(String, String)], status: u16) -> Framing {
        let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        if status == 100 || status == 204 {
            return Framing::Length(0);
        }
        if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked
        } else if let Some(n) = get("content-length") {
            Framing::Length(n.parse().unwrap())
        } else {
            Framing::Close
        }
    }

    /// The next chunk of a chunked body; `None` after the last (0) chunk.
    pub fn chunk(&mut self) -> Option<Vec<u8>> {
        read_chunk(&mut self.r)
    }

    pub fn response(&mut self) -> Response {
        read_response(&mut self.r)
    }

    /// Raw bytes from the connection (after a head), for bodies cut short.
    pub fn read_raw(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.r.read(buf)
    }

    /// True when the server closed the connection (EOF or reset) within the
    /// read timeout; false on a timeout or on more data.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// Read a status line and headers from any buffered stream (plain or TLS).
pub fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1."), "not a status line: {line:?}");
    let status: u16 = line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("header line");
        let l = l.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header has a colon");
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// The next chunk of a chunked body; `None` after the last (0) chunk.
pub fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line).expect("chunk size line");
    let size = usize::from_str_radix(line.trim_end_matches(['\r', '\n']).split(';').next().unwrap(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    if size == 0 {
        let mut end = String::new();
        r.read_line(&mut end).expect("final CRLF");
        assert_eq!(end, "\r\n");
        return None;
    }
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data).expect("chunk data");
    assert_eq!(&data[size..], b"\r\n");
    data.truncate(size);
    Some(data)
}

/// A whole response (head and body, by its framing) from any buffered stream.
pub fn read_response(r: &mut impl BufRead) -> Response {
    let (status, headers) = read_head(r);
    let body = match Conn::framing(&headers, status) {
        Framing::Length(n) => {
            let mut b = vec![0; n];
            r.read_exact(&mut b).expect("body");
            b
        }
        Framing::Chunked => {
            let mut b = Vec::new();
            while let Some(c) = read_chunk(r) {
                b.extend_from_slice(&c);
            }
            b
        }
        Framing::Close => {
            let mut b = Vec::new();
            r.read_to_end(&mut b).expect("body to close");
            b
        }
    };
    Response { status, headers, body }
}

/// Poll `f` until it is true or `limit` passes; returns whether it became true.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// SSE `data:` payloads of a stream body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body).split("\n\n").filter_map(|ev| ev.strip_prefix("data: ").map(str::to_string)).collect()
}

/// A CA and a server certificate for `localhost` signed by it (PEM).
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// The admin token the process tests start `switchboard` with.
pub const ADMIN_TOKEN: &str = "sba-split-mode-test-token";

/// A `switchboard` process whose stderr is read line by line.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("SWITCHBOARD_HASH_KEY")
            .env_remove("SWITCHBOARD_HASH_KEY_FILE")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("switchboard starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc { child, lines: rx, seen: Vec::new() }
    }

    /// The address in the first log line matching `marker` (`... listening on ADDR`).
    pub fn address(&mut self, marker: &str) -> std::net::SocketAddr {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(marker)) {
                let addr = line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap();
                return addr.parse().unwrap();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no `{marker}` in the log:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The first log line containing `marker` (waits up to 30 s).
    pub fn wait_line(&mut self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(marker)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no `{marker}` in the log:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Wait for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(std::time::Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A real `redis-server` (Debian's package) on an ephemeral loopback port,
/// in a temporary folder, persistence off; killable and restartable (empty)
/// on the same port mid-test.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `requirepass`, and the TLS port (with its CA's PEM file) when on.
    password: Option<String>,
    pub tls: Option<(u16, PathBuf)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    pub fn start() -> Redis {
        let mut r =
            Redis { child: None, port: free_port(), dir: tempfile::tempdir().unwrap(), password: None, tls: None };
        r.spawn();
        r
    }

    /// With a password, and TLS on a second port (certificate for 127.0.0.1).
    pub fn start_tls(password: &str) -> Redis {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            password: Some(password.to_string()),
            tls: Some((free_port(), ca_file)),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        if let Some((port, _)) = &self.tls {
            let d = self.dir.path();
            cmd.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"]);
            cmd.arg("--tls-cert-file").arg(d.join("cert.pem")).arg("--tls-key-file").arg(d.join("key.pem"));
        }
        let child = cmd
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        self.child = Some(child);
        assert!(eventually(Duration::from_secs(10), || self.try_cmd(&["PING"]).is_some_and(|r| r == "+PONG")));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: Redis vanishes mid-run (its data with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// One command; the raw first line of the reply (`+OK`, `:1`, `$5` ...).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args).expect("redis answers")
    }

    fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if let Some(p) = &self.password {
            req = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n{req}", p.len());
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if self.password.is_some() {
            r.read_line(&mut line).ok()?;
            line.clear();
        }
        r.read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
