//! `switchboard node`: the agent that makes a machine running an
//! OpenAI-compatible server (llama.cpp, vLLM, Ollama) a gateway target.
//!
//! 1. Identity: the first start exchanges an enrollment token for a node id
//!    and secret (`--identity` file, mode 0600); later starts reuse it.
//! 2. Heartbeats: every interval the agent tells the admin API the local
//!    server's models (renamed with `--rename`) and health, and whether it is
//!    available (always, or inside `--idle-hours` / under `--max-load`); the
//!    admin publishes the node to gateways. Models are listed at start, on
//!    SIGHUP and every `--discover-interval`, never while a request is in
//!    flight (some servers end a running generation when any request
//!    arrives); see [`local`].
//! 3. Serving: requests from gateways (checked against the gateway token)
//!    are forwarded to the local server and the answers streamed back —
//!    through a port gateways dial (direct mode, `--listen`; TLS with a
//!    certificate gateways pin, unless `--plain-http`), or down
//!    connections the agent keeps open to a gateway (outbound mode,
//!    `--connect`), so no inbound port is needed.
//! 4. SIGTERM drains: the admin is told first (gateways stop sending), requests
//!    in flight finish, then the agent exits.

mod local;
pub(crate) mod net;
mod serve;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_shared::config::NodeReach;
use switchboard_shared::node::{EnrollRequest, EnrollResponse, Heartbeat, HeartbeatReply};
use switchboard_shared::url::BaseUrl;
use switchboard_shared::{KeyHash, Secret};

/// sysexits: permission denied (the identity was refused: do not restart).
pub const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;
const EX_UNAVAILABLE: u8 = 69;

#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Base URL of the admin API (enrollment and heartbeats), e.g. https://gw.example.com:8081
    #[arg(long)]
    pub admin: String,
    /// An enrollment token (first start only; the identity file is used after).
    #[arg(long, env = "SWITCHBOARD_ENROLL_TOKEN", hide_env_values = true)]
    pub enroll: Option<String>,
    /// The local OpenAI-compatible server, e.g. http://127.0.0.1:8080 (llama.cpp), :8000 (vLLM), :11434 (Ollama).
    #[arg(long)]
    pub local: String,
    /// A key the local server wants (vLLM --api-key), sent as Bearer.
    #[arg(long, env = "SWITCHBOARD_LOCAL_KEY", hide_env_values = true)]
    pub local_key: Option<String>,
    /// Where the node identity is kept (created with mode 0600).
    #[arg(long, default_value = "switchboard-node.json")]
    pub identity: PathBuf,
    /// The node's name at enrollment (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Direct mode: accept gateway connections on this address...
    #[arg(long)]
    pub listen: Option<String>,
    /// ...and advertise this URL for gateways to dial (default: https://<listen address>).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Direct mode: serve this PEM certificate chain (with --tls-key) instead
    /// of the self-signed one generated at first start. Gateways pin it either way.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Direct mode: the PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Direct mode: serve plain HTTP instead of TLS (a trusted network, or a
    /// TLS proxy in front). The gateway token then crosses the network in the clear.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub plain_http: bool,
    /// Outbound mode: keep connections open to this gateway (its client
    /// port), e.g. https://gw.example.com; repeat for each data-plane process.
    #[arg(long)]
    pub connect: Vec<String>,
    /// Outbound mode: connections kept per gateway worker (default: --capacity, at most 64).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Most requests at once.
    #[arg(long, default_value_t = 4)]
    pub capacity: u32,
    /// Advertise a local model under another name: LOCAL=PUBLIC (repeatable).
    #[arg(long = "rename", value_name = "LOCAL=PUBLIC")]
    pub renames: Vec<String>,
    /// Idle-time mode: serve only between these local hours, e.g. 19:00-07:00.
    #[arg(long)]
    pub idle_hours: Option<String>,
    /// Idle-time mode: serve only while the 1-minute load average per CPU is below this.
    #[arg(long)]
    pub max_load: Option<f64>,
    /// Extra PEM CA certificates to trust for https admin and gateway URLs.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// On SIGTERM, how long requests in flight may take to finish, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// How often to list the local server's models again, in seconds (1 to
    /// 86400); also on SIGHUP. Never while a request is in flight: a
    /// discovery that falls due then waits until the node is idle.
    #[arg(long, default_value_t = 60)]
    pub discover_interval: u64,
}

/// What the identity file holds.
#[derive(Serialize, Deserialize)]
struct Identity {
    node_id: String,
    name: String,
    org: String,
    admin: String,
    credential: Secret,
    /// SHA-256 of the gateway token (only checked, never sent).
    gateway_token_hash: String,
    /// Direct mode's self-signed certificate, made at its first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<SelfSigned>,
}

#[derive(Serialize, Deserialize)]
struct SelfSigned {
    cert_pem: String,
    key_pem: Secret,
}

/// Direct mode's TLS: what the listener serves, and its pin (`sha256:<hex>` of
/// the leaf certificate) for gateways. A certificate given by the user, or the
/// self-signed one kept in the identity file (made and saved on first use).
fn direct_tls(args: &NodeArgs, identity: &mut Identity) -> Result<(Arc<rustls::ServerConfig>, String), (u8, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (certs, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => switchboard_dataplane::tls::read_chain_and_key(cert, key)
            .map_err(|e| (EX_CONFIG, format!("--tls-cert/--tls-key: {e}")))?,
        _ => {
            if identity.tls.is_none() {
                let made = rcgen::generate_simple_self_signed(vec!["switchboard-node.invalid".to_string()])
                    .map_err(|e| (EX_CONFIG, format!("cannot make a TLS certificate: {e}")))?;
                identity.tls =
                    Some(SelfSigned { cert_pem: made.cert.pem(), key_pem: Secret::new(made.key_pair.serialize_pem()) });
                save_identity(&args.identity, identity)
                    .map_err(|e| (EX_CONFIG, format!("cannot write {}: {e}", args.identity.display())))?;
                tracing::info!("made a self-signed TLS certificate for direct mode");
            }
            let Some(tls) = &identity.tls else { return Err((EX_CONFIG, "no certificate".to_string())) };
            let bad = |e: rustls::pki_types::pem::Error| {
                (EX_CONFIG, format!("{}: bad TLS certificate: {e}", args.identity.display()))
            };
            let certs =
                CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(bad)?;
            let key = PrivateKeyDer::from_pem_slice(tls.key_pem.expose().as_bytes()).map_err(bad)?;
            (certs, key)
        }
    };
    // (A given chain has a certificate, checked as it is read; a stored one may not.)
    let Some(leaf) = certs.first() else {
        return Err((EX_CONFIG, format!("{}: the TLS certificate is missing", args.identity.display())));
    };
    let pin = KeyHash::of(leaf.as_ref()).to_string();
    let config = switchboard_dataplane::tls::server_config_from(certs, key).map_err(|e| (EX_CONFIG, e))?;
    Ok((config, pin))
}

/// An hours window in local time (may wrap midnight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    start_min: u32,
    end_min: u32,
}

impl Window {
    pub fn parse(s: &str) -> Result<Window, String> {
        let hm = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(|| format!("`{s}`: expected HH:MM-HH:MM"))?;
        match (hm(a), hm(b)) {
            (Some(start_min), Some(end_min)) if start_min != end_min => Ok(Window { start_min, end_min }),
            _ => Err(format!("`{s}`: expected HH:MM-HH:MM with two different times")),
        }
    }

    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_min || minute_of_day < self.end_min
        }
    }
}

/// Minutes since local midnight.
fn local_minute_of_day() -> u32 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r writes into the struct we pass; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if ok {
        (tm.tm_hour * 60 + tm.tm_min) as u32
    } else {
        ((now / 60) % 1440) as u32
    }
}

/// One-minute load average per CPU.
fn load_per_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: f64 = text.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    load / cpus
}

/// The agent's shared state.
pub struct Agent {
    args: NodeArgs,
    local: BaseUrl,
    admin: BaseUrl,
    tls: Arc<rustls::ClientConfig>,
    identity: Identity,
    gateway_hash: KeyHash,
    renames: Vec<(String, String)>,
    window: Option<Window>,
    in_flight: AtomicU32,
    /// The local server's models and health.
    local_server: local::LocalServer,
    /// Inside its availability window (as of the last heartbeat).
    available: AtomicBool,
    draining: AtomicBool,
    client:
        hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, hyper::body::Incoming>,
}

pub fn run(args: NodeArgs) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(EX_UNAVAILABLE, format!("cannot start the runtime: {e}")),
    };
    rt.block_on(main_loop(args))
}

fn fail(code: u8, message: impl std::fmt::Display) -> std::process::ExitCode {
    tracing::error!("{message}");
    eprintln!("switchboard node: {message}");
    std::process::ExitCode::from(code)
}

async fn main_loop(args: NodeArgs) -> std::process::ExitCode {
    // First, so a SIGHUP during the start (a service manager's reload) does not end the agent.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => return fail(EX_UNAVAILABLE, format!("cannot install signal handlers: {e}")),
    };
    let local = match BaseUrl::parse(args.local.trim_end_matches('/').trim_end_matches("/v1")) {
        Ok(u) if !u.tls => u,
        Ok(_) => return fail(EX_CONFIG, "--local: the local server is reached over plain http on this machine"),
        Err(e) => return fail(EX_CONFIG, format!("--local: {e}")),
    };
    let admin = match BaseUrl::parse(&args.admin) {
        Ok(u) => u,
        Err(e) => return fail(EX_CONFIG, format!("--admin: {e}")),
    };
    if args.listen.is_some() != args.connect.is_empty() {
        return fail(
            EX_CONFIG,
            "choose one way for gateways to reach this node: --listen (direct) or --connect (outbound)",
        );
    }
    if args.capacity == 0 || args.capacity > 4096 || args.connections.is_some_and(|n| n == 0 || n > 256) {
        return fail(EX_CONFIG, "--capacity must be 1 to 4096 and --connections 1 to 256");
    }
    let window = match args.idle_hours.as_deref().map(Window::parse).transpose() {
        Ok(w) => w,
        Err(e) => return fail(EX_CONFIG, format!("--idle-hours {e}")),
    };
    if args.max_load.is_some_and(|l| !l.is_finite() || l <= 0.0) {
        return fail(EX_CONFIG, "--max-load must be a positive number");
    }
    if !(local::DISCOVER_INTERVAL_S_MIN..=local::DISCOVER_INTERVAL_S_MAX).contains(&args.discover_interval) {
        return fail(
            EX_CONFIG,
            format!(
                "--discover-interval must be {} to {} seconds",
                local::DISCOVER_INTERVAL_S_MIN,
                local::DISCOVER_INTERVAL_S_MAX
            ),
        );
    }
    let mut renames = Vec::new();
    for r in &args.renames {
        match r.split_once('=') {
            Some((l, p)) if !l.is_empty() && !p.is_empty() => renames.push((l.to_string(), p.to_string())),
            _ => return fail(EX_CONFIG, format!("--rename `{r}`: expected LOCAL=PUBLIC")),
        }
    }
    let tls = match switchboard_dataplane::tls::client_config(args.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(EX_CONFIG, format!("--ca-file: {e}")),
    };
    let mut identity = match load_or_enroll(&args, &admin, &tls).await {
        Ok(i) => i,
        Err((code, e)) => return fail(code, e),
    };
    let serve_tls = match args.listen.is_some() && !args.plain_http {
        true => match direct_tls(&args, &mut identity) {
            Ok(t) => Some(t),
            Err((code, e)) => return fail(code, e),
        },
        false => None,
    };
    let gateway_hash = match KeyHash::parse(&identity.gateway_token_hash) {
        Ok(h) => h,
        Err(e) => return fail(EX_CONFIG, format!("{}: {e}", args.identity.display())),
    };
    tracing::info!(node = %identity.name, id = %identity.node_id, org = %identity.org, "node identity loaded");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let agent = Arc::new(Agent {
        local,
        admin,
        tls,
        identity,
        gateway_hash,
        renames,
        window,
        in_flight: AtomicU32::new(0),
        local_server: local::LocalServer::new(),
        available: AtomicBool::new(true),
        draining: AtomicBool::new(false),
        client,
        args,
    });
    // Serving first, so gateways find it ready once the admin publishes it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reach = match (&agent.args.listen, agent.args.connect.as_slice()) {
        (Some(listen), _) => {
            match serve::direct(agent.clone(), listen, serve_tls.as_ref().map(|t| t.0.clone()), stop_rx.clone()).await {
                Ok(addr) => {
                    if addr.ip().is_unspecified() && agent.args.advertise.is_none() {
                        return fail(EX_CONFIG, format!("--listen {addr} needs --advertise: the URL gateways dial"));
                    }
                    let scheme = if serve_tls.is_some() { "https" } else { "http" };
                    let url = agent.args.advertise.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
                    match BaseUrl::parse(&url) {
                        Ok(u) if u.tls == serve_tls.is_some() => {}
                        Ok(_) => {
                            return fail(
                                EX_CONFIG,
                                format!("--advertise {url}: this node serves {scheme} (TLS unless --plain-http)"),
                            )
                        }
                        Err(e) => return fail(EX_CONFIG, format!("--advertise: {e}")),
                    }
                    tracing::info!(scheme, "node listening on {addr}");
                    NodeReach::Direct { url, tls_pin: serve_tls.map(|t| t.1) }
                }
                Err(e) => return fail(EX_CONFIG, format!("--listen {listen}: {e}")),
            }
        }
        (None, gateways) => {
            for connect in gateways {
                match BaseUrl::parse(connect) {
                    Ok(gw) => {
                        tokio::spawn(serve::outbound(agent.clone(), gw, stop_rx.clone()));
                    }
                    Err(e) => return fail(EX_CONFIG, format!("--connect {connect}: {e}")),
                }
            }
            NodeReach::Outbound
        }
    };
    let mut every = Duration::from_millis(switchboard_shared::config::DEFAULT_NODE_HEARTBEAT_MS);
    let mut discovery = local::Schedule::new(Duration::from_secs(agent.args.discover_interval));
    loop {
        local::check(&agent, &mut discovery).await;
        let beat_at = tokio::time::Instant::now();
        match heartbeat(&agent, &reach).await {
            Beat::Ok(reply) => every = Duration::from_millis(reply.heartbeat_ms.clamp(100, 3_600_000)),
            Beat::Refused(message) => {
                let _ = stop_tx.send(true);
                return fail(EX_NOPERM, format!("the admin refused this node: {message}"));
            }
            Beat::Failed(e) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = agent.local_server.changed.notified() => {
                // A request found the local server down (or back): tell the
                // admin now, but no more often than its shortest interval.
                tokio::time::sleep_until(beat_at + Duration::from_millis(100)).await;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: listing the local server's models again (once no request is in flight)");
                discovery.ask();
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Drain: tell the admin first, so gateways stop sending new requests.
    tracing::info!("draining: no new requests; waiting for the ones in flight");
    agent.draining.store(true, Ordering::SeqCst);
    if let Beat::Failed(e) = heartbeat(&agent, &reach).await {
        tracing::warn!(error = %e, "could not tell the admin about the drain");
    }
    // Gateways following the admin remotely see the change within moments.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(agent.args.drain_timeout);
    while agent.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    tracing::info!(left = agent.in_flight.load(Ordering::SeqCst), "node stopped");
    std::process::ExitCode::SUCCESS
}

async fn load_or_enroll(
    args: &NodeArgs,
    admin: &BaseUrl,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Identity, (u8, String)> {
    let path = &args.identity;
    if let Ok(text) = std::fs::read_to_string(path) {
        let id: Identity = serde_json::from_str(&text)
            .map_err(|e| (EX_CONFIG, format!("{}: not a node identity: {e}", path.display())))?;
        if args.enroll.is_some() {
            tracing::info!(node = %id.name, "already enrolled; --enroll is ignored (remove the identity file to enroll again)");
        }
        return Ok(id);
    }
    let Some(token) = &args.enroll else {
        return Err((EX_CONFIG, format!("no identity at {} yet: pass --enroll TOKEN (from an admin)", path.display())));
    };
    let name = args.name.clone().unwrap_or_else(hostname);
    let req = EnrollRequest { token: Secret::new(token.clone()), name, version: env!("CARGO_PKG_VERSION").to_string() };
    let body = serde_json::to_vec(&req).map_err(|e| (EX_CONFIG, e.to_string()))?;
    let (status, answer) =
        net::call(admin, tls, hyper::Method::POST, "/v1/nodes/enroll", None, Some(body), Duration::from_secs(15))
            .await
            .map_err(|e| (EX_UNAVAILABLE, format!("cannot reach the admin API at {}: {e}", args.admin)))?;
    if status != 201 {
        let code = if status == 401 || status == 403 { EX_NOPERM } else { EX_CONFIG };
        return Err((code, format!("enrollment refused ({status}): {}", net::error_parts(&answer).1)));
    }
    let e: EnrollResponse =
        serde_json::from_slice(&answer).map_err(|e| (EX_UNAVAILABLE, format!("unexpected enrollment answer: {e}")))?;
    let id = Identity {
        node_id: e.node_id,
        name: e.name,
        org: e.org,
        admin: args.admin.clone(),
        credential: e.credential,
        gateway_token_hash: KeyHash::of(e.gateway_token.expose().as_bytes()).to_string(),
        tls: None,
    };
    save_identity(path, &id).map_err(|e| (EX_CONFIG, format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(node = %id.name, file = %path.display(), "enrolled");
    Ok(id)
}

/// Write the identity readable by this user only (written aside, then renamed).
fn save_identity(path: &Path, id: &Identity) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_vec_pretty(id).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    if name.is_empty() {
        "node".to_string()
    } else {
        name
    }
}

enum Beat {
    Ok(HeartbeatReply),
    /// The identity was refused (revoked, removed): stop.
    Refused(String),
    Failed(String),
}

/// Whether the node may take work now, and why not.
fn availability(agent: &Agent) -> (bool, String, String) {
    let hours = agent.window.map(|w| (w, agent.args.idle_hours.as_deref().unwrap_or("")));
    decide(hours, agent.args.max_load, local_minute_of_day(), load_per_cpu)
}

/// The availability rule: inside the `--idle-hours` window (if any) at
/// `minute` and under `--max-load` (if any) per CPU. (available, mode, why not)
fn decide(
    hours: Option<(Window, &str)>,
    max_load: Option<f64>,
    minute: u32,
    load: impl FnOnce() -> f64,
) -> (bool, String, String) {
    let mut mode = Vec::new();
    let mut why = String::new();
    let mut ok = true;
    if let Some((w, text)) = hours {
        mode.push(format!("hours {text}"));
        if !w.contains(minute) {
            ok = false;
            why = "outside its idle-time hours".to_string();
        }
    }
    if let Some(max) = max_load {
        mode.push(format!("load below {max}"));
        let load = load();
        if load >= max {
            ok = false;
            why = format!("machine load {load:.2} per CPU is over {max}");
        }
    }
    let mode = if mode.is_empty() { "always-on".to_string() } else { format!("idle-time ({})", mode.join(", ")) };
    (ok, mode, why)
}

async fn heartbeat(agent: &Agent, reach: &NodeReach) -> Beat {
    let (models, healthy, mut message) = agent.local_server.report();
    let (available, mode, why) = availability(agent);
    agent.available.store(available, Ordering::SeqCst);
    if message.is_empty() {
        message = why;
    } else if !why.is_empty() {
        message = format!("{why}; {message}");
    }
    let beat = Heartbeat {
        version: env!("CARGO_PKG_VERSION").to_string(),
        models,
        capacity: agent.args.capacity,
        reach: reach.clone(),
        mode,
        available,
        healthy,
        message,
        draining: agent.draining.load(Ordering::SeqCst),
        in_flight: agent.in_flight.load(Ordering::SeqCst),
        load: load_per_cpu(),
    };
    let body = match serde_json::to_vec(&beat) {
        Ok(b) => b,
        Err(e) => return Beat::Failed(e.to_string()),
    };
    let credential = agent.identity.credential.expose();
    let sent = net::call(
        &agent.admin,
        &agent.tls,
        hyper::Method::POST,
        "/v1/nodes/heartbeat",
        Some(credential),
        Some(body),
        Duration::from_secs(10),
    )
    .await;
    match sent {
        Err(e) => Beat::Failed(format!("cannot reach the admin API: {e}")),
        Ok((200, body)) => match serde_json::from_slice::<HeartbeatReply>(&body) {
            Ok(r) => {
                tracing::debug!(status = %r.status, routable = r.routable, "heartbeat");
                Beat::Ok(r)
            }
            Err(e) => Beat::Failed(format!("unexpected heartbeat answer: {e}")),
        },
        Ok((status @ (401 | 403), body)) => {
            let (code, message) = net::error_parts(&body);
            if matches!(code.as_str(), "node_revoked" | "node_unknown" | "invalid_node_credential") {
                Beat::Refused(message)
            } else {
                Beat::Failed(format!("{status}: {message}"))
            }
        }
        Ok((status, body)) => {
            let (_, message) = net::error_parts(&body);
            tracing::error!(status, error = %message, "the admin rejected the heartbeat");
            Beat::Failed(format!("{status}: {message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_follows_hours_and_load() {
        let never = || -> f64 { panic!("load is read only with --max-load") };
        assert_eq!(decide(None, None, 0, never), (true, "always-on".into(), String::new()));
        let night = Window::parse("19:00-07:00").unwrap();
        let (ok, mode, why) = decide(Some((night, "19:00-07:00")), None, 12 * 60, never);
        assert!(!ok && why.contains("hours"), "{why}");
        assert_eq!(mode, "idle-time (hours 19:00-07:00)");
        assert!(decide(Some((night, "19:00-07:00")), None, 23 * 60, never).0);
        // Load: under the threshold serves, at or over it does not.
        assert!(decide(None, Some(0.5), 0, || 0.2).0);
        let (ok, mode, why) = decide(None, Some(0.5), 0, || 0.5);
        assert!(!ok && why.contains("0.50 per CPU"), "{why}");
        assert_eq!(mode, "idle-time (load below 0.5)");
        // Both: each must hold.
        let both = |minute, load| decide(Some((night, "19:00-07:00")), Some(0.5), minute, move || load).0;
        assert!(both(23 * 60, 0.1));
        assert!(!both(23 * 60, 0.9));
        assert!(!both(12 * 60, 0.1));
    }

    #[test]
    fn windows_parse_and_wrap_midnight() {
        let w = Window::parse("19:00-07:30").unwrap();
        assert!(w.contains(23 * 60) && w.contains(0) && w.contains(7 * 60 + 29));
        assert!(!w.contains(7 * 60 + 30) && !w.contains(12 * 60));
        let d = Window::parse("09:00-17:00").unwrap();
        assert!(d.contains(9 * 60) && !d.contains(17 * 60) && !d.contains(8 * 60));
        for bad in ["9-17", "25:00-01:00", "10:00-10:00", "10:00", "aa:bb-cc:dd"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
