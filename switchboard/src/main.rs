//! `switchboard`: the gateway binary. Thin on purpose: parse arguments, load
//! the config (exit 78 on a bad one), start, and stop cleanly on a signal.

mod node;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use switchboard_dataplane::dns::DnsCache;
use switchboard_dataplane::reload::{refusal, Apply, Reloader};
use switchboard_dataplane::remote::RemoteAdmin;
use switchboard_dataplane::server::AddrSharing;
use switchboard_dataplane::snapshot::{compile, Prepare};
use switchboard_dataplane::snapshot::{Snapshot, SnapshotStore};
use switchboard_dataplane::usage::access::AccessLog;
use switchboard_dataplane::usage::pipeline::{UsagePipeline, UsageSink};
use switchboard_shared::{Config, ConfigError, KeyHasher, Secret};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits: cannot create (bind failed and the like).
const EX_CANTCREAT: u8 = 73;
/// sysexits: a service we depend on is unavailable.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: internal software error (a data-plane worker died).
const EX_SOFTWARE: u8 = 70;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A fast OpenAI-compatible LLM gateway.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a TOML config file. SIGHUP (or editing the file)
    /// reloads keys, upstreams and models; SIGTERM drains and exits.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Take over from a gateway running on the same addresses (a planned
        /// restart): share its listeners until it drains and exits. Without
        /// this, an address already served is an error (exit 73).
        #[arg(long)]
        handover: bool,
    },
    /// Run only the data plane, following a remote admin API for its routing
    /// (keys, providers, routes); `[server]` settings come from --config.
    Dataplane {
        /// Base URL of the admin API, e.g. http://10.0.0.5:8081
        #[arg(long)]
        admin: String,
        /// An admin token (not read-only).
        #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// A config file for the `[server]` settings (its routing tables are ignored).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Extra PEM CA certificates to trust for an https admin URL.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// How long to wait for the admin at start, in seconds.
        #[arg(long, default_value_t = 30)]
        startup_timeout: u64,
        /// Take over from a data plane running on the same address (see `serve --handover`).
        #[arg(long)]
        handover: bool,
    },
    /// Run a node agent (bring your own infrastructure): enroll this machine,
    /// advertise its local OpenAI-compatible server's models, and serve
    /// gateway requests with it. SIGTERM drains and exits.
    Node(Box<node::NodeArgs>),
    /// Check a config file and exit (0 = valid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the hash of an API key for the `[[keys]]` table: `hmac-sha256:…`
    /// with SWITCHBOARD_HASH_KEY (or _FILE) set, else `sha256:…`. Reads the key
    /// from standard input when not given (keeps it out of shell history).
    HashKey { key: Option<String> },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("switchboard: cannot read the key from stdin: {e}");
                        return ExitCode::from(EX_CONFIG);
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("switchboard: the key is empty");
                return ExitCode::from(EX_CONFIG);
            }
            match KeyHasher::from_env() {
                Ok(h) => {
                    println!("{}", h.hash_str(key.as_bytes()));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EX_CONFIG, e),
            }
        }
        Command::Node(args) => {
            init_logging();
            node::run(*args)
        }
        Command::Check { config } => {
            init_logging();
            match std::fs::read_to_string(&config).map_err(|e| e.to_string()).and_then(|t| {
                let cfg = Config::parse(&t).map_err(|e| e.to_string())?;
                // What a running gateway would refuse to reload to.
                if let Some(why) = refusal(&t, &cfg, None) {
                    return Err(format!("a running gateway would refuse this file: {why}"));
                }
                let hasher = KeyHasher::from_env()?;
                compile(&cfg.routing(), 1, &Prepare::new(DnsCache::new(), hasher)).map_err(|e| e.to_string())
            }) {
                Ok(s) => {
                    println!("{}: ok ({} keys, {} models)", config.display(), s.key_count(), s.routes.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Serve { config, handover } => {
            init_logging();
            serve(config, handover)
        }
        Command::Dataplane { admin, token, config, ca_file, startup_timeout, handover } => {
            init_logging();
            dataplane(&admin, token, config, ca_file, Duration::from_secs(startup_timeout), handover)
        }
    }
}

/// Exit 73 if one of `addrs` is already served by another process and no
/// hand-over was asked for. (The listeners' own binds refuse it too; this
/// says so before the process changes anything.)
fn refuse_served(addrs: &[Result<std::net::SocketAddr, ConfigError>], handover: bool) -> Result<(), ExitCode> {
    if handover {
        return Ok(());
    }
    for addr in addrs.iter().flatten() {
        if switchboard_dataplane::server::addr_in_use(*addr) {
            return Err(fail(EX_CANTCREAT, switchboard_dataplane::server::in_use_error(*addr, AddrSharing::Exclusive)));
        }
    }
    Ok(())
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchboard: {message}");
    ExitCode::from(code)
}

fn dataplane(
    admin: &str,
    token: String,
    config: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    startup_timeout: Duration,
    handover: bool,
) -> ExitCode {
    let cfg = match &config {
        None => Config::default(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Config::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => return fail(EX_CONFIG, format!("{}: {e}", path.display())),
        },
    };
    if let Err(e) = refuse_served(&[cfg.server.listen_addr()], handover) {
        return e;
    }
    if !cfg.keys.is_empty() || !cfg.upstreams.is_empty() || !cfg.models.is_empty() || cfg.admin.is_some() {
        tracing::warn!("this data plane follows the admin: the config file's routing tables and [admin] are ignored");
    }
    let remote = match RemoteAdmin::new(admin, Secret::new(token), ca_file.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(EX_CONFIG, format!("--admin: {e}")),
    };
    let dns = DnsCache::new();
    // The first snapshot, before serving: retry until the admin answers.
    let deadline = std::time::Instant::now() + startup_timeout;
    let (version, instance, snapshot, admin_cluster) = loop {
        let attempt = remote.poll(0, None).and_then(|r| match r {
            Some(f) => f.compile(&dns).map(|s| (f.version, f.instance, s, f.cluster)),
            None => Err("the admin has no snapshot yet".into()),
        });
        match attempt {
            Ok(x) => break x,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "waiting for the admin");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return fail(EX_UNAVAILABLE, format!("cannot get a snapshot from {admin}: {e}")),
        }
    };
    tracing::info!(version, admin, "following the admin");
    // issue 18: this file's [cluster], else the admin's (read once, at start).
    if let Some(c) = cfg.cluster.clone().or(admin_cluster) {
        if let Err(e) = switchboard_dataplane::cluster::install(&c) {
            return fail(EX_CONFIG, format!("[cluster]: {e}"));
        }
    }
    let store = SnapshotStore::new(snapshot);
    let spill = cfg.usage.spill_file.clone().unwrap_or_else(|| PathBuf::from("switchboard-usage.spill"));
    let usage = match start_usage(&cfg.usage, &spill, Some(Box::new(remote.usage_sink()))) {
        Ok(u) => u,
        Err(e) => return fail(EX_CANTCREAT, e),
    };
    if let Err(e) = remote.follow(version, instance, store.clone(), dns.clone()) {
        return fail(EX_CANTCREAT, format!("cannot start following the admin: {e}"));
    }
    let server_cfg = switchboard_shared::ServerConfig { handover, ..cfg.server.clone() };
    run(&server_cfg, store, dns, usage, || {
        tracing::info!("SIGHUP: routing follows the admin; [server] changes need a restart")
    })
}

/// Start the usage pipeline: records to `sink` (if any), the access log if
/// configured, and `spill` for what the sink cannot take yet.
fn start_usage(
    settings: &switchboard_shared::UsageSettings,
    spill: &std::path::Path,
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

/// How long a stopping gateway keeps trying to account usage before it
/// spills what is left to disk.
const USAGE_DRAIN: Duration = Duration::from_secs(10);

/// Start the data plane and serve until SIGTERM or SIGINT (drain, exit 0);
/// SIGHUP calls `on_hup`.
fn run(
    server_cfg: &switchboard_shared::ServerConfig,
    store: std::sync::Arc<SnapshotStore>,
    dns: std::sync::Arc<DnsCache>,
    usage: Option<Arc<UsagePipeline>>,
    mut on_hup: impl FnMut(),
) -> ExitCode {
    if let Err(e) = dns.spawn_refresher(Duration::from_millis(server_cfg.dns_refresh_ms)) {
        return fail(EX_CANTCREAT, format!("cannot start the DNS refresher: {e}"));
    }
    if let Err(e) = switchboard_dataplane::probe::spawn(store.clone(), dns.clone()) {
        return fail(EX_CANTCREAT, format!("cannot start the health prober: {e}"));
    }
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => return fail(EX_CANTCREAT, format!("cannot install signal handlers: {e}")),
    };
    // A worker that dies stops the process (drain, then exit 70).
    switchboard_dataplane::supervise::stop_process_on_worker_death();
    let server = match switchboard_dataplane::start_with(server_cfg.clone(), store, dns, usage.clone()) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return fail(EX_CONFIG, e),
        Err(e) => return fail(EX_CANTCREAT, format!("cannot start the data plane on {}: {e}", server_cfg.listen)),
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            on_hup();
            if let Some(tls) = &server.tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded on SIGHUP"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload on SIGHUP failed; keeping the running certificate")
                    }
                }
            }
            continue;
        }
        tracing::info!(grace_ms = server_cfg.shutdown_grace_ms, "shutting down: draining requests in flight");
        let metrics = server.metrics.clone();
        server.shutdown();
        tracing::info!("data plane stopped");
        if let Some(u) = &usage {
            u.shutdown(USAGE_DRAIN);
        }
        let down = metrics.workers_down();
        if down > 0 {
            tracing::error!(workers_down = down, "exiting 70: data-plane workers died");
            return ExitCode::from(EX_SOFTWARE);
        }
        return ExitCode::SUCCESS;
    }
    ExitCode::SUCCESS
}

fn serve(path: PathBuf, handover: bool) -> ExitCode {
    let dns = DnsCache::new();
    let hasher = match KeyHasher::from_env() {
        Ok(h) => h,
        Err(e) => return fail(EX_CONFIG, e),
    };
    let prep = Prepare::new(dns.clone(), hasher);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return fail(EX_CONFIG, format!("cannot read {}: {e}", path.display())),
    };
    let cfg = match Config::parse(&text) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, format!("{}: {e}", path.display())),
    };
    // Before anything is written (the database seeded from this file): a
    // gateway that will not get its addresses must change nothing.
    let mut addrs = vec![cfg.server.listen_addr()];
    addrs.extend(cfg.admin.as_ref().map(|a| a.listen_addr()));
    if let Err(e) = refuse_served(&addrs, handover) {
        return e;
    }
    // issue 18: limits and quotas shared through Redis.
    let cluster = match &cfg.cluster {
        Some(c) => match switchboard_dataplane::cluster::install(c) {
            Ok(c) => Some(c),
            Err(e) => return fail(EX_CONFIG, format!("[cluster]: {e}")),
        },
        None => None,
    };
    // Keep the admin service alive for the life of the process.
    let mut admin_handle = None;
    let config_dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let mut usage_sink: Option<(Box<dyn UsageSink>, PathBuf)> = None;
    let (reloader, store) = match &cfg.admin {
        None => match Reloader::load(path.clone(), prep.clone()).inspect(|_| {
            // No database: quota counters start from zero (the spec of the start).
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
        }) {
            Ok((r, _)) => match r.store() {
                Some(s) => {
                    let s = s.clone();
                    (r, s)
                }
                None => return fail(EX_CONFIG, "file mode has no snapshot store"),
            },
            Err(e) => return fail(EX_CONFIG, format!("{}: {e}", path.display())),
        },
        Some(admin) => {
            let store = SnapshotStore::new(Snapshot::empty());
            let database = match path.parent() {
                Some(dir) if admin.database.is_relative() => dir.join(&admin.database),
                _ => admin.database.clone(),
            };
            let state = match switchboard_adminapi::State::open(&database, prep.clone(), Some(store.clone())) {
                Ok(s) => s,
                Err(e) => return fail(EX_CANTCREAT, e),
            };
            match state.seed(&cfg.routing()) {
                Ok(0) => tracing::info!(database = %database.display(), "config file matches the database"),
                Ok(n) => tracing::info!(changes = n, database = %database.display(), "config file imported"),
                Err(e) => return fail(EX_CONFIG, format!("{}: {}", path.display(), e.message)),
            }
            let env_token = std::env::var("SWITCHBOARD_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
            match state.bootstrap_token(env_token.as_deref()) {
                Ok(Some(secret)) => eprintln!(
                    "switchboard: first start: admin token (shown once, store it now): {secret}\n\
                     switchboard: or set SWITCHBOARD_ADMIN_TOKEN to choose your own"
                ),
                Ok(None) => {}
                Err(e) => return fail(EX_CANTCREAT, format!("cannot create the admin token: {}", e.message)),
            }
            let listen = match admin.listen_addr() {
                Ok(a) => a,
                Err(e) => return fail(EX_CONFIG, e),
            };
            let tls = match (&admin.tls_cert_file, &admin.tls_key_file) {
                (Some(c), Some(k)) => match switchboard_dataplane::tls::ServerTls::load(c, k) {
                    Ok(t) => {
                        if let Err(e) = t.spawn_watcher(Duration::from_millis(cfg.server.reload_poll_ms.max(100))) {
                            return fail(EX_CANTCREAT, format!("cannot watch the admin certificate: {e}"));
                        }
                        Some(t)
                    }
                    Err(e) => return fail(EX_CONFIG, format!("admin TLS: {e}")),
                },
                _ => None,
            };
            let admin_cfg = switchboard_adminapi::AdminConfig {
                listen,
                database: database.clone(),
                max_body_bytes: admin.max_body_bytes,
                tls,
                node_heartbeat_ms: admin.node_heartbeat_ms,
                conns: switchboard_adminapi::ConnLimits::default(),
                sharing: if handover { AddrSharing::HandOver } else { AddrSharing::Exclusive },
            };
            let sink = switchboard_adminapi::usage::StateSink::new(state.clone(), cfg.usage.retention_days);
            let mut spill = database.clone().into_os_string();
            spill.push(".usage-spill");
            usage_sink = Some((Box::new(sink), PathBuf::from(spill)));
            match switchboard_adminapi::start(&admin_cfg, state.clone()) {
                Ok(h) => admin_handle = Some(h),
                Err(e) => return fail(EX_CANTCREAT, format!("cannot start the admin API on {listen}: {e}")),
            }
            if let Some(c) = &cluster {
                if let Err(e) = switchboard_adminapi::cluster::start_seeder(state.clone(), c.clone()) {
                    return fail(EX_CANTCREAT, format!("cannot start the quota seeder: {e}"));
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
            (Reloader::new(path.clone(), &cfg, text, apply, version, None), store)
        }
    };
    if cfg.server.reload_poll_ms > 0 {
        if let Err(e) = reloader.spawn_watcher(Duration::from_millis(cfg.server.reload_poll_ms)) {
            return fail(EX_CANTCREAT, format!("cannot start the config watcher: {e}"));
        }
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
        if p.is_relative() && p.as_path() != std::path::Path::new("-") {
            *p = config_dir.join(&*p);
        }
    }
    let usage = match start_usage(&usage_settings, &spill, sink) {
        Ok(u) => u,
        Err(e) => return fail(EX_CANTCREAT, e),
    };
    let server_cfg = switchboard_shared::ServerConfig { handover, ..cfg.server.clone() };
    let code = run(&server_cfg, store, dns, usage, || match reloader.reload_now() {
        Ok(v) => tracing::info!(version = v, "reloaded on SIGHUP"),
        Err(e) => tracing::error!(error = %e, "reload on SIGHUP failed; keeping what runs"),
    });
    if let Some(a) = admin_handle.take() {
        a.shutdown();
    }
    code
}
