//! The one assembly of a running gateway. `switchboard serve` (and
//! `switchboard dataplane --admin`) and the integration tests' harness both
//! build through here, so what the tests run is what ships:
//!
//! * [`build`]: `serve`'s wiring — refuse addresses already served, the admin
//!   state (SQLite) seeded from the config file with its first admin token,
//!   the admin API with its TLS watcher, the config reloader and its watcher,
//!   the usage pipeline (database sink, spill file, access log), the DNS
//!   refresher and health prober, and the data plane.
//! * [`build_dataplane`]: a data plane following a remote admin API.
//! * [`Running`]: what was started — addresses, the admin state, the usage
//!   pipeline — with [`Running::reload`] (SIGHUP) and [`Running::drain`].
//!
//! Signals are the caller's: `main` installs its handlers before building,
//! so a signal that arrives during start-up is not lost.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_dataplane::dns::DnsCache;
use switchboard_dataplane::metrics::Metrics;
use switchboard_dataplane::reload::{Apply, Reloader};
use switchboard_dataplane::remote::RemoteAdmin;
use switchboard_dataplane::server::AddrSharing;
use switchboard_dataplane::snapshot::{Prepare, Snapshot, SnapshotStore};
use switchboard_dataplane::usage::access::AccessLog;
use switchboard_dataplane::usage::pipeline::{UsagePipeline, UsageSink};
use switchboard_dataplane::ServerHandle;
use switchboard_shared::{Config, ConfigError, KeyHasher, Secret, ServerConfig, UsageSettings};

/// Exit codes (sysexits) for each way start-up can fail.
pub mod exit {
    /// Configuration error.
    pub const CONFIG: u8 = 78;
    /// Cannot create (bind failed and the like).
    pub const CANTCREAT: u8 = 73;
    /// A service we depend on is unavailable.
    pub const UNAVAILABLE: u8 = 69;
    /// Internal software error (a data-plane worker died).
    pub const SOFTWARE: u8 = 70;
}

/// Why the gateway could not start, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl std::fmt::Display) -> Failure {
        Failure { code, message: message.to_string() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The services a gateway process runs beside the data plane. `serve` runs
/// them all; an embedding (the tests) may leave them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Background {
    /// Watch the config file and reload when it changes (`reload_poll_ms`).
    pub watch_config: bool,
    /// Probe unhealthy upstream targets.
    pub health_prober: bool,
    /// Re-resolve upstream hosts (`dns_refresh_ms`).
    pub dns_refresher: bool,
    /// A data-plane worker that dies stops the process (exit 70).
    pub exit_on_worker_death: bool,
}

impl Background {
    /// Everything, as `switchboard serve` runs.
    pub const ALL: Background =
        Background { watch_config: true, health_prober: true, dns_refresher: true, exit_on_worker_death: true };
    /// Nothing beyond the data plane, the admin API and the usage pipeline.
    pub const NONE: Background =
        Background { watch_config: false, health_prober: false, dns_refresher: false, exit_on_worker_death: false };
}

/// How long a stopping gateway keeps trying to account usage before it
/// spills what is left to disk.
pub const USAGE_DRAIN: Duration = Duration::from_secs(10);

/// What [`build`] starts from.
pub struct Options {
    /// The config file. Relative paths in it (database, spill file, access
    /// log) are taken from its folder; file mode reloads from it.
    pub path: PathBuf,
    /// The file's text and its parsed form, as read at start. An embedding
    /// may adjust `config` (e.g. force an `[admin]` section) before building.
    pub text: String,
    pub config: Config,
    /// Share the addresses of a gateway already serving them (`--handover`).
    pub handover: bool,
    /// How client keys and admin tokens are hashed.
    pub hasher: KeyHasher,
    /// The admin token to create on a first start; without one a random
    /// token is created and printed once.
    pub admin_token: Option<String>,
    /// How long an admin write waits on a locked database (the admin API's
    /// default when `None`).
    pub db_busy_timeout: Option<Duration>,
    pub background: Background,
    /// How long [`Running::drain`] lets the usage pipeline flush.
    pub usage_drain: Duration,
}

impl Options {
    /// What `switchboard serve --config PATH` runs with: the hash key and the
    /// first admin token from the environment, every background service.
    pub fn serve(path: PathBuf, handover: bool) -> Result<Options, Failure> {
        let hasher = KeyHasher::from_env().map_err(|e| Failure::new(exit::CONFIG, e))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::new(exit::CONFIG, format!("cannot read {}: {e}", path.display())))?;
        let mut options = Options::from_text(path, text)?;
        options.handover = handover;
        options.hasher = hasher;
        options.admin_token = std::env::var("SWITCHBOARD_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
        options.background = Background::ALL;
        Ok(options)
    }

    /// From config text already written at `path`; no hash key, no admin
    /// token, no background services.
    pub fn from_text(path: PathBuf, text: String) -> Result<Options, Failure> {
        let config =
            Config::parse(&text).map_err(|e| Failure::new(exit::CONFIG, format!("{}: {e}", path.display())))?;
        Ok(Options {
            path,
            text,
            config,
            handover: false,
            hasher: KeyHasher::unkeyed(),
            admin_token: None,
            db_busy_timeout: None,
            background: Background::NONE,
            usage_drain: USAGE_DRAIN,
        })
    }
}

/// How the routing of a running gateway changes.
enum Routing {
    /// The config file, through a reloader (file mode, or seeding the admin's database).
    File(Arc<Reloader>),
    /// A remote admin API, followed.
    Remote,
}

/// A started gateway. Dropping it stops everything (as [`Running::drain`]
/// without its log lines).
pub struct Running {
    server: Option<ServerHandle>,
    usage: Option<Arc<UsagePipeline>>,
    admin: Option<switchboard_adminapi::AdminHandle>,
    admin_addr: Option<SocketAddr>,
    state: Option<switchboard_adminapi::SharedState>,
    routing: Routing,
    store: Arc<SnapshotStore>,
    dns: Arc<DnsCache>,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    grace_ms: u64,
    usage_drain: Duration,
}

/// How a drained gateway ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Data-plane workers that had died (a non-zero count means exit 70).
    pub workers_down: usize,
}

impl Running {
    /// The data plane's address (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API's address, when this process serves it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The admin state (database, live views), when this process owns it.
    pub fn state(&self) -> Option<&switchboard_adminapi::SharedState> {
        self.state.as_ref()
    }

    /// The usage pipeline, when there is one (a database or remote sink, or an access log).
    pub fn usage(&self) -> Option<&Arc<UsagePipeline>> {
        self.usage.as_ref()
    }

    /// Every data-plane worker's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The config file's reloader (absent when following a remote admin).
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        match &self.routing {
            Routing::File(r) => Some(r),
            Routing::Remote => None,
        }
    }

    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    pub fn dns(&self) -> &Arc<DnsCache> {
        &self.dns
    }

    /// SIGHUP: re-read the config file now (or say that routing follows the
    /// admin), and reload the listener's TLS certificate.
    pub fn reload(&self) {
        match &self.routing {
            Routing::File(reloader) => match reloader.reload_now() {
                Ok(v) => tracing::info!(version = v, "reloaded on SIGHUP"),
                Err(e) => tracing::error!(error = %e, "reload on SIGHUP failed; keeping what runs"),
            },
            Routing::Remote => tracing::info!("SIGHUP: routing follows the admin; [server] changes need a restart"),
        }
        if let Some(tls) = self.server.as_ref().and_then(|s| s.tls.as_ref()) {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded on SIGHUP"),
                Err(e) => tracing::error!(error = %e, "TLS reload on SIGHUP failed; keeping the running certificate"),
            }
        }
    }

    /// Stop the data plane (drain requests in flight, up to the grace
    /// period), then the usage pipeline (flush, or spill). The admin API
    /// keeps serving.
    pub fn stop_dataplane(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        if let Some(usage) = self.usage.take() {
            usage.shutdown(self.usage_drain);
        }
    }

    /// Stop everything, in order: the data plane (draining), the usage
    /// pipeline, the admin API.
    pub fn drain(mut self) -> Stopped {
        tracing::info!(grace_ms = self.grace_ms, "shutting down: draining requests in flight");
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        tracing::info!("data plane stopped");
        self.stop_dataplane();
        if let Some(admin) = self.admin.take() {
            admin.shutdown();
        }
        Stopped { workers_down: self.metrics.workers_down() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_dataplane();
        if let Some(admin) = self.admin.take() {
            admin.shutdown();
        }
    }
}

/// Start a gateway from its config file: the admin API and its database when
/// the file has `[admin]`, else file mode; then the data plane.
pub fn build(options: Options) -> Result<Running, Failure> {
    let Options { path, text, config: cfg, handover, hasher, admin_token, db_busy_timeout, background, usage_drain } =
        options;
    for d in &cfg.deprecations {
        tracing::warn!(config = %path.display(), "{d}");
    }
    let dns = DnsCache::new();
    let prep = Prepare::new(dns.clone(), hasher);
    // Before anything is written (the database seeded from this file): a
    // gateway that will not get its addresses must change nothing.
    let mut addrs = vec![cfg.server.listen_addr()];
    addrs.extend(cfg.admin.as_ref().map(|a| a.listen_addr()));
    refuse_served(&addrs, handover)?;
    // Limits and quotas shared through Redis (`[cluster]`, docs/scale-out.md).
    let cluster = match &cfg.cluster {
        Some(c) => Some(
            switchboard_dataplane::cluster::install(c)
                .map_err(|e| Failure::new(exit::CONFIG, format!("[cluster]: {e}")))?,
        ),
        None => None,
    };
    let config_dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let mut admin = None;
    let mut usage_sink: Option<(Box<dyn UsageSink>, PathBuf)> = None;
    let (reloader, store) = match &cfg.admin {
        None => {
            let (r, _) = Reloader::load(path.clone(), prep.clone())
                .map_err(|e| Failure::new(exit::CONFIG, format!("{}: {e}", path.display())))?;
            // No database: the cluster's quota counters start from zero (the
            // file's quotas at start).
            if let Some(c) = &cluster {
                let spec = Arc::new(cfg.routing());
                let seeded = switchboard_dataplane::cluster::seed::spawn(
                    c.clone(),
                    Box::new(move || spec.clone()),
                    Box::new(|_: &str, _: &str, _: i64| Ok((0, 0))),
                );
                if let Err(e) = seeded {
                    tracing::error!(error = %e, "cannot start the quota seeder");
                }
            }
            let store =
                r.store().cloned().ok_or_else(|| Failure::new(exit::CONFIG, "file mode has no snapshot store"))?;
            (r, store)
        }
        Some(settings) => {
            let store = SnapshotStore::new(Snapshot::empty());
            let database = match path.parent() {
                Some(dir) if settings.database.is_relative() => dir.join(&settings.database),
                _ => settings.database.clone(),
            };
            let opened = match db_busy_timeout {
                Some(t) => switchboard_adminapi::State::open_with(&database, prep.clone(), Some(store.clone()), t),
                None => switchboard_adminapi::State::open(&database, prep.clone(), Some(store.clone())),
            };
            let state = opened.map_err(|e| Failure::new(exit::CANTCREAT, e))?;
            match state.seed(&cfg.routing()) {
                Ok(0) => tracing::info!(database = %database.display(), "config file matches the database"),
                Ok(n) => tracing::info!(changes = n, database = %database.display(), "config file imported"),
                Err(e) => return Err(Failure::new(exit::CONFIG, format!("{}: {}", path.display(), e.message))),
            }
            match state.bootstrap_token(admin_token.as_deref()) {
                Ok(Some(secret)) => eprintln!(
                    "switchboard: first start: admin token (shown once, store it now): {secret}\n\
                     switchboard: or set SWITCHBOARD_ADMIN_TOKEN to choose your own"
                ),
                Ok(None) => {}
                Err(e) => {
                    return Err(Failure::new(exit::CANTCREAT, format!("cannot create the admin token: {}", e.message)))
                }
            }
            let listen = settings.listen_addr().map_err(|e| Failure::new(exit::CONFIG, e))?;
            let tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
                (Some(c), Some(k)) => {
                    let t = switchboard_dataplane::tls::ServerTls::load(c, k)
                        .map_err(|e| Failure::new(exit::CONFIG, format!("admin TLS: {e}")))?;
                    t.spawn_watcher(Duration::from_millis(cfg.server.reload_poll_ms.max(100))).map_err(|e| {
                        Failure::new(exit::CANTCREAT, format!("cannot watch the admin certificate: {e}"))
                    })?;
                    Some(t)
                }
                _ => None,
            };
            let admin_cfg = switchboard_adminapi::AdminConfig {
                listen,
                database: database.clone(),
                max_body_bytes: settings.max_body_bytes,
                tls,
                node_heartbeat_ms: settings.node_heartbeat_ms,
                conns: switchboard_adminapi::ConnLimits::default(),
                sharing: if handover { AddrSharing::HandOver } else { AddrSharing::Exclusive },
            };
            let sink = switchboard_adminapi::usage::StateSink::new(state.clone(), cfg.usage.retention_days);
            let mut spill = database.clone().into_os_string();
            spill.push(".usage-spill");
            usage_sink = Some((Box::new(sink), PathBuf::from(spill)));
            state.console.configure(switchboard_adminapi::console::ConsoleSettings {
                enabled: settings.console,
                session_ttl_ms: settings.console_session_ttl_ms,
                max_sessions: settings.console_max_sessions,
            });
            let handle = switchboard_adminapi::start(&admin_cfg, state.clone())
                .map_err(|e| Failure::new(exit::CANTCREAT, format!("cannot start the admin API on {listen}: {e}")))?;
            // The cluster's quota counters, re-seeded from the database whenever Redis comes back empty.
            if let Some(c) = &cluster {
                if let Err(e) = switchboard_adminapi::cluster::start_seeder(state.clone(), c.clone()) {
                    handle.shutdown();
                    return Err(Failure::new(exit::CANTCREAT, format!("cannot start the quota seeder: {e}")));
                }
            }
            let seeder = state.clone();
            let apply: Apply = Box::new(move |cfg: &Config| {
                seeder
                    .seed(&cfg.routing())
                    .map(|_| seeder.current().version)
                    .map_err(|e| ConfigError { path: e.param.unwrap_or_default(), message: e.message })
            });
            let version = state.current().version;
            admin = Some((handle, state));
            (Reloader::new(path.clone(), &cfg, text, apply, version, None), store)
        }
    };
    // From here on a failure must stop the admin API it started.
    let (admin_handle, state) = match admin {
        Some((h, s)) => (Some(h), Some(s)),
        None => (None, None),
    };
    let mut guard = AdminGuard(admin_handle);
    if background.watch_config && cfg.server.reload_poll_ms > 0 {
        reloader
            .spawn_watcher(Duration::from_millis(cfg.server.reload_poll_ms))
            .map_err(|e| Failure::new(exit::CANTCREAT, format!("cannot start the config watcher: {e}")))?;
    }
    let (sink, default_spill) = match usage_sink {
        Some((s, p)) => (Some(s), p),
        None => (None, PathBuf::from("switchboard-usage.spill")),
    };
    let spill = match &cfg.usage.spill_file {
        Some(p) if p.is_relative() => config_dir.join(p),
        Some(p) => p.clone(),
        None => default_spill,
    };
    let mut usage_settings = cfg.usage.clone();
    if let Some(p) = usage_settings.access_log.as_mut() {
        if p.is_relative() && p.as_path() != Path::new("-") {
            *p = config_dir.join(&*p);
        }
    }
    let usage = start_usage(&usage_settings, &spill, sink).map_err(|e| Failure::new(exit::CANTCREAT, e))?;
    let server_cfg = ServerConfig { handover, ..cfg.server.clone() };
    let mut running = start(&server_cfg, store, dns, usage, Routing::File(reloader), background, usage_drain)?;
    // The smoke check (`POST /v1/admin/smoke`) and the console's playground
    // send through this process's own listener.
    if let (Some(state), Some(server)) = (&state, &running.server) {
        state.set_dataplane_url(local_url(running.addr, server.tls.is_some()));
        // The console's playground sends its chats to this data plane too.
        state.console.set_dataplane(running.addr, server.tls.is_some());
    }
    running.admin_addr = guard.0.as_ref().map(|h| h.addr);
    running.admin = guard.0.take();
    running.state = state;
    Ok(running)
}

/// The URL a process uses to reach its own listener (a wildcard address is
/// reached on loopback).
fn local_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Stops an admin API started by a [`build`] that then fails.
struct AdminGuard(Option<switchboard_adminapi::AdminHandle>);

impl Drop for AdminGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

/// What `switchboard dataplane --admin URL` starts from.
pub struct DataplaneOptions {
    /// Base URL of the admin API.
    pub admin: String,
    /// An admin token (not read-only).
    pub token: Secret,
    /// The config file for the `[server]` and `[usage]` settings (its
    /// routing tables and `[admin]` are ignored); defaults without one.
    pub config: Option<PathBuf>,
    /// Extra PEM CA certificates to trust for an https admin URL.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the admin's first snapshot.
    pub startup_timeout: Duration,
    pub handover: bool,
    pub background: Background,
    /// Set (by a signal handler) to give up waiting for the admin at start.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Start a data plane that follows a remote admin API: its first snapshot
/// (retried until `startup_timeout`), then long-polls for the next ones.
pub fn build_dataplane(options: DataplaneOptions) -> Result<Running, Failure> {
    let DataplaneOptions { admin, token, config, ca_file, startup_timeout, handover, background, stop } = options;
    let cfg = match &config {
        None => Config::default(),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Config::parse(&t).map_err(|e| e.to_string()))
            .map_err(|e| Failure::new(exit::CONFIG, format!("{}: {e}", path.display())))?,
    };
    if let Some(path) = &config {
        for d in &cfg.deprecations {
            tracing::warn!(config = %path.display(), "{d}");
        }
    }
    refuse_served(&[cfg.server.listen_addr()], handover)?;
    if !cfg.keys.is_empty() || !cfg.upstreams.is_empty() || !cfg.models.is_empty() || cfg.admin.is_some() {
        tracing::warn!("this data plane follows the admin: the config file's routing tables and [admin] are ignored");
    }
    let remote = RemoteAdmin::new(&admin, token, ca_file.as_deref())
        .map_err(|e| Failure::new(exit::CONFIG, format!("--admin: {e}")))?;
    let dns = DnsCache::new();
    // The first snapshot, before serving: retry until the admin answers.
    let deadline = std::time::Instant::now() + startup_timeout;
    let stopped = || stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    let (version, instance, snapshot, admin_cluster) = loop {
        let attempt = remote.poll(0, None).and_then(|r| match r {
            Some(f) => f.compile(&dns).map(|s| (f.version, f.instance, s, f.cluster)),
            None => Err("the admin has no snapshot yet".into()),
        });
        match attempt {
            Ok(x) => break x,
            Err(e) if stopped() => return Err(Failure::new(0, format!("stopped while waiting for the admin: {e}"))),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "waiting for the admin");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(Failure::new(exit::UNAVAILABLE, format!("cannot get a snapshot from {admin}: {e}"))),
        }
    };
    tracing::info!(version, admin, "following the admin");
    // This file's `[cluster]`, else the admin's (read once, at start).
    if let Some(c) = cfg.cluster.clone().or(admin_cluster) {
        switchboard_dataplane::cluster::install(&c)
            .map_err(|e| Failure::new(exit::CONFIG, format!("[cluster]: {e}")))?;
    }
    let store = SnapshotStore::new(snapshot);
    let spill = cfg.usage.spill_file.clone().unwrap_or_else(|| PathBuf::from("switchboard-usage.spill"));
    let usage = start_usage(&cfg.usage, &spill, Some(Box::new(remote.usage_sink())))
        .map_err(|e| Failure::new(exit::CANTCREAT, e))?;
    remote
        .follow(version, instance, store.clone(), dns.clone())
        .map_err(|e| Failure::new(exit::CANTCREAT, format!("cannot start following the admin: {e}")))?;
    let server_cfg = ServerConfig { handover, ..cfg.server.clone() };
    start(&server_cfg, store, dns, usage, Routing::Remote, background, USAGE_DRAIN)
}

/// Fail (exit 73) if one of `addrs` is already served by another process and
/// no hand-over was asked for. (The listeners' own binds refuse it too; this
/// says so before the process changes anything.)
fn refuse_served(addrs: &[Result<SocketAddr, ConfigError>], handover: bool) -> Result<(), Failure> {
    if handover {
        return Ok(());
    }
    for addr in addrs.iter().flatten() {
        if switchboard_dataplane::server::addr_in_use(*addr) {
            return Err(Failure::new(
                exit::CANTCREAT,
                switchboard_dataplane::server::in_use_error(*addr, AddrSharing::Exclusive),
            ));
        }
    }
    Ok(())
}

/// Start the usage pipeline: records to `sink` (if any), the access log if
/// configured, and `spill` for what the sink cannot take yet.
fn start_usage(
    settings: &UsageSettings,
    spill: &Path,
    sink: Option<Box<dyn UsageSink>>,
) -> Result<Option<Arc<UsagePipeline>>, String> {
    let access_log = match &settings.access_log {
        Some(p) => Some(AccessLog::open(p).map_err(|e| format!("cannot open the access log {}: {e}", p.display()))?),
        None => None,
    };
    if sink.is_none() && access_log.is_none() {
        return Ok(None);
    }
    UsagePipeline::start(settings, spill, sink, access_log)
        .map(Some)
        .map_err(|e| format!("cannot start the usage pipeline: {e}"))
}

/// Start the background services asked for, then the data plane.
fn start(
    server_cfg: &ServerConfig,
    store: Arc<SnapshotStore>,
    dns: Arc<DnsCache>,
    usage: Option<Arc<UsagePipeline>>,
    routing: Routing,
    background: Background,
    usage_drain: Duration,
) -> Result<Running, Failure> {
    // Stops the pipeline if the data plane does not start.
    struct UsageGuard(Option<Arc<UsagePipeline>>, Duration);
    impl Drop for UsageGuard {
        fn drop(&mut self) {
            if let Some(u) = self.0.take() {
                u.shutdown(self.1);
            }
        }
    }
    let mut usage = UsageGuard(usage, usage_drain);
    if background.dns_refresher {
        dns.spawn_refresher(Duration::from_millis(server_cfg.dns_refresh_ms))
            .map_err(|e| Failure::new(exit::CANTCREAT, format!("cannot start the DNS refresher: {e}")))?;
    }
    if background.health_prober {
        switchboard_dataplane::probe::spawn(store.clone(), dns.clone())
            .map_err(|e| Failure::new(exit::CANTCREAT, format!("cannot start the health prober: {e}")))?;
    }
    if background.exit_on_worker_death {
        // A worker that dies stops the process (drain, then exit 70).
        switchboard_dataplane::supervise::stop_process_on_worker_death();
    }
    let server = switchboard_dataplane::start_with(server_cfg.clone(), store.clone(), dns.clone(), usage.0.clone())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Failure::new(exit::CONFIG, e),
            _ => Failure::new(exit::CANTCREAT, format!("cannot start the data plane on {}: {e}", server_cfg.listen)),
        })?;
    Ok(Running {
        addr: server.local_addr,
        metrics: server.metrics.clone(),
        server: Some(server),
        usage: usage.0.take(),
        admin: None,
        admin_addr: None,
        state: None,
        routing,
        store,
        dns,
        grace_ms: server_cfg.shutdown_grace_ms,
        usage_drain,
    })
}
