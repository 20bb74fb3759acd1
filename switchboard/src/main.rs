//! `switchboard`: the gateway binary. Thin on purpose: parse arguments, build
//! the gateway (`switchboard::app`; exit 78 on a bad config), wait for a
//! signal, drain.

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use switchboard::app::{self, exit, Background, DataplaneOptions, Failure, Options, Running};
use switchboard::{node, smoke};
use switchboard_dataplane::dns::DnsCache;
use switchboard_dataplane::reload::refusal;
use switchboard_dataplane::snapshot::{compile, Prepare};
use switchboard_shared::{Config, KeyHasher, Secret};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's `void mi_collect(bool force)` (mimalloc.h, its stable C
    /// API; in the library `mimalloc` links): the calling thread's empty
    /// pages go back to the allocator, and what has been free past its purge
    /// delay back to the OS.
    fn mi_collect(force: bool);
}

/// What each data-plane worker calls once a second on its own thread
/// (`switchboard_dataplane::memory`): without it, pages freed after a burst of
/// stream openings stay resident while the streams are open.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes a plain bool, touches only the allocator's
    // own state of the calling thread (and its arenas, under their own
    // atomics) and may be called at any time from any thread; the symbol is in
    // the mimalloc library the global allocator above links.
    unsafe { mi_collect(false) }
}

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
    /// Check a live deployment route by route (the admin's smoke check): every
    /// target, failover by fault injection, costs, cache, rate limits. Exit 0
    /// only when every check passed.
    Smoke(Box<smoke::SmokeArgs>),
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
    switchboard_dataplane::memory::set_release(release_freed_memory);
    let cli = Cli::parse();
    match cli.command {
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("switchboard: cannot read the key from stdin: {e}");
                        return ExitCode::from(exit::CONFIG);
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("switchboard: the key is empty");
                return ExitCode::from(exit::CONFIG);
            }
            match KeyHasher::from_env() {
                Ok(h) => {
                    println!("{}", h.hash_str(key.as_bytes()));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(exit::CONFIG, e),
            }
        }
        Command::Node(args) => {
            init_logging();
            node::run(*args)
        }
        Command::Smoke(args) => smoke::run(*args),
        Command::Check { config } => {
            init_logging();
            match std::fs::read_to_string(&config).map_err(|e| e.to_string()).and_then(|t| {
                let cfg = Config::parse(&t).map_err(|e| e.to_string())?;
                for d in &cfg.deprecations {
                    eprintln!("{}: warning: {d}", config.display());
                }
                // What a running gateway would refuse to reload to.
                if let Some(why) = refusal(&t, &cfg, None) {
                    return Err(format!("a running gateway would refuse this file: {why}"));
                }
                let hasher = KeyHasher::from_env()?;
                compile(&cfg.routing(), 1, &Prepare::new(DnsCache::new(), hasher)).map_err(|e| e.to_string())
            }) {
                Ok(s) => {
                    println!("{}: ok ({} keys, {} routes)", config.display(), s.key_count(), s.routes.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(exit::CONFIG)
                }
            }
        }
        Command::Serve { config, handover } => {
            init_logging();
            serve_until_signal(|_| app::build(Options::serve(config, handover)?))
        }
        Command::Dataplane { admin, token, config, ca_file, startup_timeout, handover } => {
            init_logging();
            serve_until_signal(|stop| {
                app::build_dataplane(DataplaneOptions {
                    admin,
                    token: Secret::new(token),
                    config,
                    ca_file,
                    startup_timeout: Duration::from_secs(startup_timeout),
                    handover,
                    background: Background::ALL,
                    stop: Some(stop),
                })
            })
        }
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchboard: {message}");
    ExitCode::from(code)
}

/// Install the signal handlers, build, serve until SIGTERM or SIGINT (then
/// drain; exit 70 if a worker had died, else 0); SIGHUP reloads. The handlers
/// go in first, so that a signal during start-up is not lost; `stop` is set
/// by SIGTERM/SIGINT meanwhile, for a build that waits (the remote admin).
fn serve_until_signal(build: impl FnOnce(Arc<AtomicBool>) -> Result<Running, Failure>) -> ExitCode {
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => return fail(exit::CANTCREAT, format!("cannot install signal handlers: {e}")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            return fail(exit::CANTCREAT, format!("cannot install signal handlers: {e}"));
        }
    }
    let running = match build(stop) {
        Ok(r) => r,
        Err(f) => return fail(f.code, f),
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            running.reload();
            continue;
        }
        break;
    }
    let stopped = running.drain();
    if stopped.workers_down > 0 {
        tracing::error!(workers_down = stopped.workers_down, "exiting 70: data-plane workers died");
        return ExitCode::from(exit::SOFTWARE);
    }
    ExitCode::SUCCESS
}
